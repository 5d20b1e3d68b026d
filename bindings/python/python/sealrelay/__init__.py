"""sealrelay for Python: agents deliver data sealed to the person who asked; people read their
inbox, fetch and open it, and verify receipts. Every check (directory entries and their proofs,
signed statements, receipts, checkpoints, witnesses, key alerts) is the Rust core's, the same
code as the ``sealrelay`` CLI; errors are the CLI's, one line each, as exceptions of their kind.

Blocking clients: :class:`AgentClient`, :class:`UserClient`. asyncio: :class:`AsyncAgentClient`,
:class:`AsyncUserClient` (each call runs on a worker thread with the GIL released, so the event
loop keeps running). See docs/python.md.
"""

from __future__ import annotations

import asyncio
import json
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any, BinaryIO, Callable, Dict, Iterable, List, Optional, Sequence, Union

from . import _native
from ._native import (
    BadInputError,
    ConflictError,
    InternalError,
    KeyAlertError,
    NotFoundError,
    RefusedError,
    SealrelayError,
    StorageError,
    UnavailableError,
    VerificationError,
)

__version__: str = _native.__version__

__all__ = [
    "AgentClient",
    "UserClient",
    "AsyncAgentClient",
    "AsyncUserClient",
    "Inbox",
    "verify_receipt",
    "seal",
    "open_envelope",
    "verify_statement",
    "decode_frame",
    "verify_checkpoint",
    "SealrelayError",
    "VerificationError",
    "BadInputError",
    "ConflictError",
    "StorageError",
    "RefusedError",
    "UnavailableError",
    "NotFoundError",
    "KeyAlertError",
    "InternalError",
]

PathLike = Union[str, "os.PathLike[str]"]
#: What an agent can deliver: bytes, a path (``pathlib.Path``), a binary file object, or an
#: iterable of bytes (a generator streams in bounded memory).
Data = Union[bytes, bytearray, memoryview, "os.PathLike[str]", BinaryIO, Iterable[bytes]]

CHUNK = 256 * 1024


def _next_chunk(data: Any) -> Callable[[], bytes]:
    """A function returning the next piece of ``data``, and ``b""`` at the end."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        view = memoryview(data).cast("B")
        pos = [0]

        def from_buffer() -> bytes:
            piece = bytes(view[pos[0] : pos[0] + CHUNK])
            pos[0] += len(piece)
            return piece

        return from_buffer
    if isinstance(data, str):
        raise TypeError("pass the data as bytes, or a file's path as a pathlib.Path")
    read = getattr(data, "read", None)
    if callable(read):

        def from_file() -> bytes:
            piece = read(CHUNK)
            if isinstance(piece, str):
                raise TypeError("open the file in binary mode ('rb')")
            if piece is None:
                # A non-blocking file with nothing to read yet is not the end of the data.
                raise BlockingIOError("the file is non-blocking and had no data: pass a blocking file")
            return bytes(piece)

        return from_file
    it = iter(data)

    def from_iterator() -> bytes:
        for piece in it:
            if not isinstance(piece, (bytes, bytearray, memoryview)):
                raise TypeError("the iterable must yield bytes")
            if len(piece):
                return bytes(piece)
        return b""

    return from_iterator


class Inbox(List[Dict[str, Any]]):
    """The envelopes waiting (each a dict: ``envelope_id``, ``agent``, ``resource``, ``purpose``,
    ``approver``, ``verified``, …, as ``sealrelay inbox --json`` prints them), and the key alerts
    open for the user (statements under their name that their keys did not make)."""

    key_alerts: List[str]

    def __init__(self, envelopes: Iterable[Dict[str, Any]], key_alerts: Iterable[str]) -> None:
        super().__init__(envelopes)
        self.key_alerts = list(key_alerts)


class AgentClient:
    """An agent, from its identity file."""

    def __init__(self, identity: PathLike, relay: Optional[str] = None) -> None:
        self._n = _native.Agent(os.fspath(identity), relay)

    def grants(self) -> List[Dict[str, Any]]:
        """The open grants addressed to this agent, each verified (the user's signature and
        logged directory entry)."""
        return json.loads(self._n.grants())

    def deliver(self, grant: str, data: Data, retry_attempts: int = 3) -> Dict[str, Any]:
        """Seals ``data`` to the grant's user and submits it (streamed: a path or a generator is
        never held whole). Returns ``envelope_id``, ``length`` and ``ciphertext_root``."""
        if isinstance(data, os.PathLike):
            return json.loads(self._n.deliver_path(grant, os.fspath(data), retry_attempts))
        return json.loads(self._n.deliver_chunks(grant, _next_chunk(data), retry_attempts))

    def status(self, grant: str) -> Dict[str, Any]:
        """What became of what was submitted for ``grant``: ``state`` (open, submitted,
        delivered, undecryptable, …), ``envelope_id``, ``receipt_index``."""
        return json.loads(self._n.status(grant))


class UserClient:
    """A person, from their identity file."""

    def __init__(self, identity: PathLike, relay: Optional[str] = None) -> None:
        self._n = _native.User(os.fspath(identity), relay)

    def grant(
        self,
        agent: str,
        resource: str,
        purpose: str = "",
        ttl_secs: int = 3600,
        max_bytes: int = 1 << 30,
    ) -> str:
        """Asks ``agent`` for ``resource``; returns the grant's id."""
        return self._n.grant(agent, resource, purpose, ttl_secs, max_bytes)

    def inbox(self) -> Inbox:
        """The envelopes waiting, each with its verified who/what/why header."""
        doc = json.loads(self._n.inbox())
        return Inbox(doc["envelopes"], doc["key_alerts"])

    def fetch(self, envelope: str, out: PathLike) -> Dict[str, Any]:
        """Fetches, verifies and opens ``envelope`` into ``out`` (kept only if it opened) and
        files the receipt, saved beside it as ``OUT.receipt``. Returns ``status``
        (``delivered`` or ``undecryptable``), ``receipt_path``, ``header``, ``key_alerts``."""
        return json.loads(self._n.fetch(envelope, os.fspath(out)))

    def approvals(self) -> List[Dict[str, Any]]:
        """Grants waiting for this user's approval."""
        return json.loads(self._n.approvals())

    def approve(self, grant: str) -> Dict[str, Any]:
        return json.loads(self._n.approve(grant))

    def deny(self, grant: str, reason: str) -> Dict[str, Any]:
        return json.loads(self._n.deny(grant, reason))


def verify_receipt(
    receipt: PathLike,
    authority: PathLike,
    log_key: PathLike,
    witnesses: Sequence[PathLike] = (),
    quorum: Optional[int] = None,
) -> Dict[str, Any]:
    """Verifies a receipt file offline, as ``sealrelay receipt verify`` does: the user's
    signature, their directory entry under ``authority``, the log entry under a checkpoint
    signed by ``log_key`` and, with ``witnesses``, cosigned by ``quorum`` of them (default:
    all). Raises :class:`VerificationError` if any check fails."""
    return json.loads(
        _native.verify_receipt(
            os.fspath(receipt),
            os.fspath(authority),
            os.fspath(log_key),
            [os.fspath(w) for w in witnesses],
            quorum,
        )
    )


def seal(recipient: str, input: PathLike, out: PathLike) -> int:
    """Seals the file ``input`` to an age recipient (``age1…``, or ``age1pq1…`` hybrid
    post-quantum) into ``out``, as ``sealrelay seal -o`` does: streamed, written to a temporary
    file and renamed into place. Returns the ciphertext's length."""
    return _native.seal(recipient, os.fspath(input), os.fspath(out))


def open_envelope(identity: PathLike, input: PathLike, out: PathLike) -> int:
    """Opens the age envelope ``input`` with an identity file (a user's sealrelay identity or
    a plain age identity file) into ``out`` (mode 0600), as ``sealrelay open -o`` does: nothing
    is kept unless every piece authenticated. Returns the plaintext's length. (Named so as not
    to shadow the built-in ``open``.)"""
    return _native.open(os.fspath(identity), os.fspath(input), os.fspath(out))


def verify_statement(statement_type: str, statement: bytes, signature: bytes,
                     signer: bytes) -> List[Dict[str, Any]]:
    """Verifies a signed statement (docs/formats.md) under its signer's Ed25519 key (strict
    RFC 8032) and decodes it; returns its fields in order as ``docs/vectors/`` lists them
    (``{"str": …}``, ``{"u64": …}``, ``{"bytes": "<hex>"}``…)."""
    return json.loads(_native.verify_statement(statement_type, bytes(statement),
                                               bytes(signature), bytes(signer)))


def decode_frame(kind: str, frame: bytes) -> Dict[str, Any]:
    """Decodes a relay protocol frame (``"request"`` or ``"response"``, docs/protocol.md)
    strictly and returns the message as JSON data."""
    return json.loads(_native.decode_frame(kind, bytes(frame)))


def verify_checkpoint(note: str, log_key: str, witnesses: Sequence[str] = ()) -> Dict[str, Any]:
    """Verifies a checkpoint (a C2SP signed note) under the log's verifier key and each
    witness's cosigner key (note-format key strings); returns origin, size, base64 root and
    each witness's cosignature time."""
    return json.loads(_native.verify_checkpoint(note, log_key, list(witnesses)))


# One pool for the asyncio clients: each call blocks a worker thread (with the GIL released)
# while the event loop goes on.
_POOL: Optional[ThreadPoolExecutor] = None


def _pool() -> ThreadPoolExecutor:
    global _POOL
    if _POOL is None:
        _POOL = ThreadPoolExecutor(max_workers=32, thread_name_prefix="sealrelay")
    return _POOL


async def _off_loop(f: Callable[..., Any], *args: Any) -> Any:
    return await asyncio.get_running_loop().run_in_executor(_pool(), lambda: f(*args))


class AsyncAgentClient:
    """:class:`AgentClient` for asyncio: the same methods, awaitable."""

    def __init__(self, identity: PathLike, relay: Optional[str] = None) -> None:
        self._c = AgentClient(identity, relay)

    async def grants(self) -> List[Dict[str, Any]]:
        return await _off_loop(self._c.grants)

    async def deliver(self, grant: str, data: Data, retry_attempts: int = 3) -> Dict[str, Any]:
        """As :meth:`AgentClient.deliver`; a synchronous iterable is read on the worker thread."""
        return await _off_loop(self._c.deliver, grant, data, retry_attempts)

    async def status(self, grant: str) -> Dict[str, Any]:
        return await _off_loop(self._c.status, grant)


class AsyncUserClient:
    """:class:`UserClient` for asyncio: the same methods, awaitable."""

    def __init__(self, identity: PathLike, relay: Optional[str] = None) -> None:
        self._c = UserClient(identity, relay)

    async def grant(self, agent: str, resource: str, purpose: str = "", ttl_secs: int = 3600,
                    max_bytes: int = 1 << 30) -> str:
        return await _off_loop(self._c.grant, agent, resource, purpose, ttl_secs, max_bytes)

    async def inbox(self) -> Inbox:
        return await _off_loop(self._c.inbox)

    async def fetch(self, envelope: str, out: PathLike) -> Dict[str, Any]:
        return await _off_loop(self._c.fetch, envelope, out)

    async def approvals(self) -> List[Dict[str, Any]]:
        return await _off_loop(self._c.approvals)

    async def approve(self, grant: str) -> Dict[str, Any]:
        return await _off_loop(self._c.approve, grant)

    async def deny(self, grant: str, reason: str) -> Dict[str, Any]:
        return await _off_loop(self._c.deny, grant, reason)
