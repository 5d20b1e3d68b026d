"""An independent MCP client for tests/mcp.rs: the official MCP Python SDK (`mcp` on PyPI).

Usage: client.py PLAN.json. The plan names the transport (stdio: a command; http: a URL and a
token), the grants to retrieve, and a command to run between the two delivery_status calls
(the requester's fetch). Prints one JSON object with what each step returned.
"""

import asyncio
import json
import subprocess
import sys

from mcp.client.session import ClientSession


def result_of(r):
    texts = [c.text for c in r.content if getattr(c, "type", "") == "text"]
    return {"is_error": bool(r.is_error), "structured": r.structured_content, "text": texts}


async def drive(session, plan):
    out = {}
    init = await session.initialize()
    out["protocol_version"] = init.protocol_version
    out["server"] = init.server_info.name
    tools = await session.list_tools()
    out["tools"] = [t.model_dump(by_alias=True, exclude_none=True, mode="json") for t in tools.tools]
    if plan.get("only_retrieve"):
        out["retrieve"] = result_of(
            await session.call_tool("retrieve", {"grant_id": plan["grant"]}, read_timeout_seconds=1200)
        )
        return out
    out["list_requests"] = result_of(await session.call_tool("list_requests", {}))
    out["refusals"] = {}
    for name, grant in plan.get("refusals", {}).items():
        out["refusals"][name] = result_of(await session.call_tool("retrieve", {"grant_id": grant}))
    out["bad_arguments"] = result_of(await session.call_tool("retrieve", {}))
    if plan.get("only_refusals"):
        return out
    main = plan["grant"]
    got = result_of(await session.call_tool("retrieve", {"grant_id": main}))
    out["retrieve"] = got
    handle = (got["structured"] or {}).get("handle", "")
    out["status_before"] = result_of(await session.call_tool("delivery_status", {"handle": handle}))
    if plan.get("between"):
        done = subprocess.run(plan["between"], cwd=plan.get("cwd"), capture_output=True)
        out["between_rc"] = done.returncode
        # The requester's plaintext stays on disk for the test to read, never in this output.
    out["status_after"] = result_of(await session.call_tool("delivery_status", {"handle": handle}))
    out["again"] = result_of(await session.call_tool("retrieve", {"grant_id": main}))
    return out


async def main():
    with open(sys.argv[1]) as f:
        plan = json.load(f)
    if plan["transport"] == "stdio":
        from mcp.client.stdio import StdioServerParameters, stdio_client

        params = StdioServerParameters(
            command=plan["command"][0], args=plan["command"][1:], env=plan.get("env"), cwd=plan.get("cwd")
        )
        async with stdio_client(params) as (read, write):
            async with ClientSession(read, write) as session:
                out = await drive(session, plan)
    else:
        import httpx2
        from mcp.client.streamable_http import streamable_http_client

        headers = {"Authorization": "Bearer " + plan["token"]}
        async with httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(300.0)) as http:
            async with streamable_http_client(plan["url"], http_client=http) as (read, write):
                async with ClientSession(read, write) as session:
                    out = await drive(session, plan)
    print(json.dumps(out))


asyncio.run(main())
