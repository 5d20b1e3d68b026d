"""sealrelay as LangChain tools for an agent (written against langchain-core's public API).

The model sees what was asked (the grant's resource and purpose) and what became of a delivery,
never the data: `deliver_request` reads the data through a connector of yours, seals it to the
person who asked and hands it to the relay; the model gets the envelope's id back. So a prompt
injection in the data cannot reach the model, and the model cannot leak what it never saw.

    from sealrelay import AgentClient
    from langchain_tools import sealrelay_tools
    tools = sealrelay_tools(AgentClient("bot.id"), read=lambda resource: open(...).read())
    model = ChatOpenAI(...).bind_tools(tools)       # any tool-calling chat model
"""

from __future__ import annotations

import json
from typing import Callable, Iterable, List, Union

from langchain_core.tools import BaseTool, tool

from sealrelay import AgentClient, SealrelayError

#: Reads a resource: bytes, or an iterable of bytes (streamed).
Reader = Callable[[str], Union[bytes, Iterable[bytes]]]


def sealrelay_tools(agent: AgentClient, read: Reader) -> List[BaseTool]:
    """Two tools: `list_requests` and `deliver_request`."""

    @tool
    def list_requests() -> str:
        """List the open data requests addressed to this agent: grant id, resource, purpose,
        who asked. Deliver one with deliver_request."""
        return json.dumps(
            [
                {k: g[k] for k in ("grant_id", "resource", "purpose", "user")}
                for g in agent.grants()
            ]
        )

    @tool
    def deliver_request(grant_id: str) -> str:
        """Read the requested resource and deliver it, sealed to the person who asked. Returns
        only the delivery's id: the data itself is never shown to you."""
        try:
            grant = next((g for g in agent.grants() if g["grant_id"] == grant_id), None)
            if grant is None:
                return f"no open request {grant_id!r}: call list_requests"
            sent = agent.deliver(grant_id, read(grant["resource"]))
        except SealrelayError as e:
            # The relay's one-line message names no data (a connector's text is not passed).
            return f"not delivered: {type(e).__name__}"
        return f"delivered as envelope {sent['envelope_id']} ({sent['length']} bytes sealed to the requester)"

    return [list_requests, deliver_request]
