"""Across languages, every direction: each of Python, Node.js and the CLI delivers, each of the
other two fetches, and the third verifies the receipt (6 ways). The Node addon is
$SEALRELAY_NODE_ADDON (built by .ci/run); without it the test skips, unless
$SEALRELAY_REQUIRE_TOOLS is set."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from sealrelay import AgentClient, UserClient, verify_receipt

TOOL = Path(__file__).resolve().parents[2] / "node" / "support" / "tool.mjs"


def node_ready() -> bool:
    ok = bool(os.environ.get("SEALRELAY_NODE_ADDON")) and shutil.which("node") is not None
    if not ok and os.environ.get("SEALRELAY_REQUIRE_TOOLS"):
        pytest.fail("SEALRELAY_NODE_ADDON (the built Node addon) and node are required")
    return ok


def node(*args: str) -> dict:
    out = subprocess.run(["node", str(TOOL), *args], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


@pytest.mark.skipif(not node_ready(), reason="the Node addon is not built (SEALRELAY_NODE_ADDON)")
def test_every_direction_between_python_node_and_the_cli(world) -> None:
    alice = UserClient(world.path("alice.id"), world.relay)
    bot = AgentClient(world.path("bot.id"), world.relay)
    auth, log = str(world.path("keys/authority.pub")), str(world.path("keys/log.pub"))
    ways = list(itertools.permutations(["python", "node", "cli"]))
    assert len(ways) == 6
    for n, (sender, fetcher, verifier) in enumerate(ways):
        gid = alice.grant("research-bot", f"tickets/{n}")
        data = os.urandom(200_000) + f"{sender}->{fetcher}->{verifier}".encode()
        src = world.path(f"in{n}")
        src.write_bytes(data)
        if sender == "python":
            env_id = bot.deliver(gid, src)["envelope_id"]
        elif sender == "node":
            env_id = node("deliver", str(world.path("bot.id")), world.relay, gid, str(src))["envelope_id"]
        else:
            env_id = world.cli("send", "--identity", "bot.id", "--grant", gid, str(src)).stdout.strip()
        out = world.path(f"out{n}")
        if fetcher == "python":
            receipt = alice.fetch(env_id, out)["receipt_path"]
        elif fetcher == "node":
            receipt = node("fetch", str(world.path("alice.id")), world.relay, env_id, str(out))["receipt_path"]
        else:
            world.cli("fetch", "--identity", "alice.id", env_id, "-o", str(out))
            receipt = str(out) + ".receipt"
        assert out.read_bytes() == data, (sender, fetcher)
        if verifier == "python":
            v = verify_receipt(receipt, auth, log)
        elif verifier == "node":
            v = node("verify", receipt, auth, log)
        else:
            world.cli("receipt", "verify", receipt, "--authority", auth, "--log-key", log)
            v = {"envelope_id": env_id, "status": "delivered"}
        assert (v["envelope_id"], v["status"]) == (env_id, "delivered"), (sender, fetcher, verifier)
