"""The Python binding against a real relay: a delivery end to end with nothing in the clear at
the relay, refusals as typed exceptions with the CLI's message, bounded memory for a 1 GiB
generator, and an asyncio loop that keeps running under 100 concurrent deliveries."""

from __future__ import annotations

import asyncio
import base64
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator, List

import pytest

import sealrelay
from sealrelay import AgentClient, AsyncAgentClient, UserClient, verify_receipt


def clear_forms(canary: bytes) -> List[bytes]:
    """The canary raw, in hex, and in base64 at each of the three alignments (trimmed to the
    characters that do not depend on its neighbours)."""
    forms = [canary, canary.hex().encode(), canary.hex().upper().encode()]
    for pad in range(3):
        enc = base64.b64encode(b"\0" * pad + canary)
        forms.append(enc[4:-4])
    return forms


def assert_nowhere(files: List[Path], canary: bytes) -> None:
    forms = clear_forms(canary)
    for p in files:
        body = p.read_bytes()
        for f in forms:
            assert f not in body, f"{p} holds the plaintext ({f[:16]!r}…)"


def cli_error(world, *args: str) -> str:
    out = world.cli(*args, check=False)
    assert out.returncode != 0, out.stdout
    line = out.stderr.strip().splitlines()[-1]
    assert line.startswith("error: "), out.stderr
    return line[len("error: ") :]


def test_deliver_inbox_fetch_and_verify_with_nothing_in_the_clear_at_the_relay(world) -> None:
    alice = UserClient(world.path("alice.id"), world.relay)
    bot = AgentClient(world.path("bot.id"), world.relay)
    gid = alice.grant("research-bot", "tickets/4711", purpose="triage the outage")
    assert [g["grant_id"] for g in bot.grants()] == [gid]
    # A listed grant names who gets the data, when it was asked and what an approval signs.
    (listed,) = bot.grants()
    assert listed["agent"].endswith("/agent/research-bot"), listed
    assert listed["created"] < listed["expires"] and len(listed["sha256"]) == 64, listed
    canary = b"CANARY-PY-" + os.urandom(8).hex().encode()
    data = canary * 1000 + b"the end"
    sent = bot.deliver(gid, data)
    assert sent["length"] > len(data)

    inbox = alice.inbox()
    assert inbox.key_alerts == []
    [h] = inbox
    assert h["envelope_id"] == sent["envelope_id"]
    assert h["agent"].endswith("/agent/research-bot") and h["resource"] == "tickets/4711"
    assert h["purpose"] == "triage the outage" and h["verified"] is True

    out = world.path("got.txt")
    got = alice.fetch(sent["envelope_id"], out)
    assert got["status"] == "delivered"
    assert out.read_bytes() == data
    assert Path(got["receipt_path"]) == world.path("got.txt.receipt")

    v = verify_receipt(got["receipt_path"], world.path("keys/authority.pub"), world.path("keys/log.pub"))
    assert (v["status"], v["envelope_id"]) == ("delivered", sent["envelope_id"])
    # The CLI verifies the same receipt.
    world.cli("receipt", "verify", got["receipt_path"])
    assert bot.status(gid)["state"] == "delivered"
    # A receipt with one byte changed does not verify.
    tampered = world.path("tampered.receipt")
    body = bytearray(Path(got["receipt_path"]).read_bytes())
    i = body.index(b'signature') + 20
    body[i] = ord("A") if body[i] != ord("A") else ord("B")
    tampered.write_bytes(bytes(body))
    with pytest.raises(sealrelay.SealrelayError):
        verify_receipt(tampered, world.path("keys/authority.pub"), world.path("keys/log.pub"))

    assert_nowhere(world.data_files(), canary)


def test_refusals_raise_the_error_of_their_kind_with_the_clis_message(world) -> None:
    alice = UserClient(world.path("alice.id"), world.relay)
    bob = UserClient(world.path("bob.id"), world.relay)
    bot = AgentClient(world.path("bot.id"), world.relay)
    gid = alice.grant("research-bot", "tickets/1")
    sent = bot.deliver(gid, b"for alice only")

    # Another user's envelope.
    with pytest.raises(sealrelay.NotFoundError) as e:
        bob.fetch(sent["envelope_id"], world.path("stolen"))
    assert str(e.value) == cli_error(
        world, "fetch", "--identity", "bob.id", sent["envelope_id"], "-o", "stolen2"
    )
    assert not world.path("stolen").exists()

    # A used grant.
    with pytest.raises(sealrelay.SealrelayError) as e:
        bot.deliver(gid, b"again")
    world.path("again.txt").write_bytes(b"again")
    assert str(e.value) == cli_error(world, "send", "--identity", "bot.id", "--grant", gid, "again.txt")
    assert type(e.value) is not sealrelay.SealrelayError  # a subclass: its kind

    # A source that fails mid-way: its own exception, and nothing submitted.
    gid2 = alice.grant("research-bot", "tickets/2")

    def failing() -> Iterator[bytes]:
        yield b"half of it"
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        bot.deliver(gid2, failing())
    assert bot.status(gid2)["state"] == "open"

    # A revoked identity.
    world.cli("agent", "revoke", "research-bot", "--dir", "keys", "--relay", world.relay)
    with pytest.raises(sealrelay.SealrelayError) as e:
        bot.grants()
    assert str(e.value) == cli_error(world, "grants", "--identity", "bot.id")

    # Bad input never reaches the relay.
    with pytest.raises(sealrelay.BadInputError):
        bot.status("not-hex")
    with pytest.raises(TypeError):
        bot.deliver(gid, "a str is neither bytes nor a path")  # type: ignore[arg-type]
    with pytest.raises(sealrelay.NotFoundError):
        AgentClient(world.path("nobody.id"), world.relay)


# The peak is VmHWM, the high-water mark of this process's own memory: getrusage's ru_maxrss
# would carry over the parent's (Linux keeps it across fork and exec).
RSS_SCRIPT = r"""
import sys
import sealrelay
bot = sealrelay.AgentClient(sys.argv[1], sys.argv[2])
piece = bytes(range(256)) * 4096   # 1 MiB
def gen():
    for _ in range(1024):
        yield piece
sent = bot.deliver(sys.argv[3], gen())
hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM:")][0].split()[1]
print(sent["length"], hwm)
"""


def test_a_gibibyte_from_a_generator_stays_in_bounded_memory(world) -> None:
    alice = UserClient(world.path("alice.id"), world.relay)
    gid = alice.grant("research-bot", "tickets/big", max_bytes=2 << 30)
    out = subprocess.run(
        [sys.executable, "-c", RSS_SCRIPT, str(world.path("bot.id")), world.relay, gid],
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert out.returncode == 0, out.stderr
    length, maxrss_kib = (int(x) for x in out.stdout.split())
    assert length > 1 << 30
    print(f"\n1 GiB delivered from a generator: peak RSS {maxrss_kib / 1024:.1f} MiB")
    assert maxrss_kib < 64 * 1024, f"peak RSS {maxrss_kib} KiB"


def test_an_event_loop_keeps_its_timer_under_100_concurrent_deliveries(world) -> None:
    alice = UserClient(world.path("alice.id"), world.relay)
    grants = [alice.grant("research-bot", f"tickets/{i}") for i in range(100)]

    async def main() -> List[float]:
        bot = AsyncAgentClient(world.path("bot.id"), world.relay)
        ticks: List[float] = []
        done = asyncio.Event()

        async def timer() -> None:
            while not done.is_set():
                ticks.append(time.monotonic())
                await asyncio.sleep(0.01)

        t = asyncio.create_task(timer())
        start = time.monotonic()
        sent = await asyncio.gather(*(bot.deliver(g, b"x" * 4096) for g in grants))
        took = time.monotonic() - start
        done.set()
        await t
        assert len({s["envelope_id"] for s in sent}) == 100
        return [took] + ticks

    took, *ticks = asyncio.run(main())
    gaps = [b - a for a, b in zip(ticks, ticks[1:])]
    print(f"\n100 deliveries in {took:.2f} s; {len(ticks)} ticks, longest gap {max(gaps) * 1000:.0f} ms")
    # A blocked loop would tick about once in all that time.
    assert len(ticks) >= took / 0.01 / 4
    assert max(gaps) < 0.5
    assert len(alice.inbox()) == 100
