"""docs/vectors/ through the Python binding: every valid vector verifies to exactly what it
says, every invalid one raises, and one flipped byte in any vector raises (or, for a frame,
decodes to something else)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict

import pytest

import sealrelay

VECTORS = Path(__file__).resolve().parents[3] / "docs" / "vectors"


def load(name: str) -> Dict[str, Any]:
    return json.loads((VECTORS / name).read_text())


def flip_hex(s: str, at: int) -> bytes:
    b = bytearray(bytes.fromhex(s))
    b[at % len(b)] ^= 0x01
    return bytes(b)


def flip_text(s: str, at: int) -> str:
    """Changes the first letter or digit at or after `at`."""
    i = at % len(s)
    while not s[i].isalnum():
        i = (i + 1) % len(s)
    return s[:i] + ("B" if s[i] == "A" else "A") + s[i + 1:]


def statement(v: Dict[str, Any], **over: bytes) -> Any:
    args = {k: bytes.fromhex(v[k]) for k in ("statement", "signature", "signer")}
    args.update(over)
    return sealrelay.verify_statement(v["type"], args["statement"], args["signature"], args["signer"])


def test_statements() -> None:
    vectors = load("statements.json")["vectors"]
    assert len(vectors) == 14
    for v in vectors:
        if not v["valid"]:
            with pytest.raises(sealrelay.SealrelayError):
                statement(v)
            continue
        assert statement(v) == v["fields"], v["name"]
        for field in ("statement", "signature", "signer"):
            for at in range(0, len(v[field]) // 2, 7):
                with pytest.raises(sealrelay.SealrelayError):
                    statement(v, **{field: flip_hex(v[field], at)})


def test_wire() -> None:
    vectors = load("wire.json")["vectors"]
    assert len(vectors) == 16
    for v in vectors:
        if v.get("valid") is False:
            with pytest.raises(sealrelay.BadInputError):
                sealrelay.decode_frame(v["kind"], bytes.fromhex(v["frame"]))
            continue
        assert sealrelay.decode_frame(v["kind"], bytes.fromhex(v["frame"])) == v["message"], v["name"]
        for at in range(len(v["frame"]) // 2):
            try:
                got = sealrelay.decode_frame(v["kind"], flip_hex(v["frame"], at))
            except sealrelay.BadInputError:
                continue
            assert got != v["message"], f"{v['name']}: a flip at {at} decodes to the same message"


def test_checkpoints() -> None:
    for v in load("checkpoints.json")["vectors"]:
        keys = [w["key"] for w in v.get("witnesses", [])]
        if not v["valid"]:
            with pytest.raises(sealrelay.SealrelayError):
                sealrelay.verify_checkpoint(v["note"], v["log_key"], keys)
            continue
        got = sealrelay.verify_checkpoint(v["note"], v["log_key"], keys)
        assert {k: got[k] for k in ("origin", "size", "root", "witnesses")} == {
            k: v[k] for k in ("origin", "size", "root", "witnesses")
        }
        for at in range(0, len(v["note"]) - 1, 3):
            with pytest.raises(sealrelay.SealrelayError):
                sealrelay.verify_checkpoint(flip_text(v["note"], at), v["log_key"], keys)


def verify(tmp: Path, v: Dict[str, Any], receipt_text: str) -> Dict[str, Any]:
    def put(name: str, text: str) -> Path:
        p = tmp / name
        p.write_text(text.rstrip("\n") + "\n")
        return p

    witnesses = [put(f"w{i}.pub", w) for i, w in enumerate(v["witnesses"])]
    return sealrelay.verify_receipt(
        put("r.receipt", receipt_text),
        put("authority.pub", v["authority"]),
        put("log.pub", v["log_key"]),
        witnesses=witnesses,
        quorum=v.get("quorum"),
    )


def test_receipts(tmp_path: Path) -> None:
    vectors = load("receipts.json")["vectors"]
    assert len(vectors) == 4
    for v in vectors:
        if v.get("valid") is False:
            with pytest.raises(sealrelay.VerificationError):
                verify(tmp_path, v, v["receipt_file"])
            continue
        assert verify(tmp_path, v, v["receipt_file"]) == v["expected"], v["name"]
        file = json.loads(v["receipt_file"])
        for field in ("receipt", "user_entry", "leaf", "checkpoint"):
            for at in range(0, len(file[field]) - 1, 5):
                bad = dict(file, **{field: flip_text(file[field], at)})
                with pytest.raises(sealrelay.SealrelayError):
                    verify(tmp_path, v, json.dumps(bad))
        for field in ("leaf_index", "tree_size"):
            with pytest.raises(sealrelay.SealrelayError):
                verify(tmp_path, v, json.dumps(dict(file, **{field: file[field] ^ 1})))
