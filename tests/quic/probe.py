"""An independent QUIC client (aioquic) for the relay's handshake-level checks.

Usage: probe.py HOST PORT ALPN FRAME_HEX [--cert PEM --key PEM] [--zero-rtt]

Connects without checking the relay's certificate (the relay's checks of the client are what
is tested), presents the given client certificate or none, sends one request frame on a
bidirectional stream and prints one JSON line: what happened. With --zero-rtt it first makes a
full connection to collect session tickets, then reconnects with one (if any) and sends the
frame as 0-RTT early data.
"""

import argparse
import asyncio
import json
import ssl

from aioquic.asyncio import connect
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import ConnectionTerminated


class Recorder(QuicConnectionProtocol):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.terminated = None

    def quic_event_received(self, event):
        if isinstance(event, ConnectionTerminated) and self.terminated is None:
            self.terminated = {
                "error_code": event.error_code,
                "reason": event.reason_phrase,
            }
        super().quic_event_received(event)


def config(args, ticket=None):
    c = QuicConfiguration(is_client=True, alpn_protocols=[args.alpn])
    c.verify_mode = ssl.CERT_NONE
    c.server_name = "localhost"
    if args.cert:
        c.load_cert_chain(args.cert, args.key)
    if ticket is not None:
        c.session_ticket = ticket
    return c


async def request(args, frame, tickets, ticket=None):
    result = {}
    made = []

    def factory(*a, **k):
        made.append(Recorder(*a, **k))
        return made[-1]

    try:
        async with connect(
            args.host,
            args.port,
            configuration=config(args, ticket),
            create_protocol=factory,
            session_ticket_handler=tickets.append,
            wait_connected=ticket is None,
        ) as client:
            reader, writer = await client.create_stream()
            writer.write(frame)
            writer.write_eof()
            try:
                data = await asyncio.wait_for(reader.read(), 10)
            except Exception as e:  # the connection was closed under the stream
                data = b""
                result["read_error"] = type(e).__name__
            if data:
                result["outcome"] = "answered"
                result["reply_hex"] = data.hex()
            else:
                await asyncio.sleep(0.2)
            if client.terminated is not None:
                result.setdefault("outcome", "closed")
                result.update(client.terminated)
            result["early_data_accepted"] = bool(
                getattr(client._quic.tls, "early_data_accepted", False)
            )
    except ConnectionError as e:
        result["outcome"] = "handshake_failed"
        result["reason"] = str(e)
        if made and made[-1].terminated is not None:
            result.update(made[-1].terminated)
    except Exception as e:
        result["outcome"] = "error"
        result["reason"] = f"{type(e).__name__}: {e}"
    result.setdefault("outcome", "no_answer")
    return result


async def main():
    p = argparse.ArgumentParser()
    p.add_argument("host")
    p.add_argument("port", type=int)
    p.add_argument("alpn")
    p.add_argument("frame_hex")
    p.add_argument("--cert")
    p.add_argument("--key")
    p.add_argument("--zero-rtt", action="store_true")
    args = p.parse_args()
    frame = bytes.fromhex(args.frame_hex)
    tickets = []
    first = await request(args, frame, tickets)
    if not args.zero_rtt:
        print(json.dumps(first))
        return
    out = {"first": first, "tickets": len(tickets)}
    if tickets:
        out["second"] = await request(args, frame, [], ticket=tickets[-1])
    print(json.dumps(out))


asyncio.run(main())
