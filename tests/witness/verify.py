"""An independent verifier of cosigned checkpoints, written from the C2SP specs
(signed-note, tlog-checkpoint, tlog-cosignature), with Ed25519 from the `cryptography`
package. It shares no code with sealrelay.

Input (stdin, JSON): {"log": "<vkey>", "witnesses": ["<vkey>", ...], "quorum": K,
                      "notes": ["<signed note>", ...]}
Output: one line per note, "ok <size> <cosigners>" or "bad <reason>".
"""

import base64
import hashlib
import json
import struct
import sys

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

DASH = "\u2014 "


class Bad(Exception):
    pass


def b64(s):
    try:
        return base64.b64decode(s, validate=True)
    except Exception as e:
        raise Bad("bad base64") from e


def parse_vkey(text, alg):
    name, keyhash, blob = text.strip().split("+", 2)
    raw = b64(blob)
    if len(raw) != 33 or raw[0] != alg:
        raise Bad("wrong key type")
    key = raw[1:]
    key_id = hashlib.sha256(name.encode() + b"\n" + bytes([alg]) + key).digest()[:4]
    if key_id.hex() != keyhash:
        raise Bad("key hash mismatch")
    return name, key_id, Ed25519PublicKey.from_public_bytes(key)


def split_note(note):
    if any(ord(c) < 0x20 and c != "\n" for c in note):
        raise Bad("control character")
    cut = note.rfind("\n\n")
    if cut < 0:
        raise Bad("no blank line")
    text, sigs = note[: cut + 1], note[cut + 2 :]
    if not sigs.endswith("\n"):
        raise Bad("signatures must end with a newline")
    lines = []
    for line in sigs[:-1].split("\n"):
        if not line.startswith(DASH):
            raise Bad("malformed signature line")
        name, sig = line[len(DASH) :].split(" ", 1)
        lines.append((name, b64(sig)))
    return text, lines


def parse_checkpoint(text):
    lines = text.split("\n")
    if len(lines) != 4 or lines[3] != "":
        raise Bad("a checkpoint has exactly three lines here")
    origin, size, root = lines[0], lines[1], lines[2]
    if not size.isdigit() or (len(size) > 1 and size[0] == "0"):
        raise Bad("size is not canonical decimal")
    if len(b64(root)) != 32:
        raise Bad("root is not 32 bytes")
    return origin, int(size)


def check(note, log, witnesses, quorum):
    text, sigs = split_note(note)
    origin, size = parse_checkpoint(text)
    log_name, log_id, log_key = log
    if origin != log_name:
        raise Bad("origin is not the log's name")
    log_ok = False
    cosigners = []
    for name, sig in sigs:
        if name == log_name and sig[:4] == log_id:
            try:
                log_key.verify(sig[4:], text.encode())
            except InvalidSignature as e:
                raise Bad("log signature does not verify") from e
            log_ok = True
            continue
        for w_name, w_id, w_key in witnesses:
            if name == w_name and sig[:4] == w_id:
                if len(sig) != 4 + 8 + 64:
                    raise Bad("cosignature has the wrong length")
                (ts,) = struct.unpack(">Q", sig[4:12])
                msg = b"cosignature/v1\ntime %d\n" % ts + text.encode()
                try:
                    w_key.verify(sig[12:], msg)
                except InvalidSignature as e:
                    raise Bad("cosignature by %s does not verify" % name) from e
                if name not in cosigners:
                    cosigners.append(name)
    if not log_ok:
        raise Bad("no log signature")
    if len(cosigners) < quorum:
        raise Bad("%d of %d cosignatures" % (len(cosigners), quorum))
    return size, cosigners


def spec_example():
    # c2sp.org/tlog-cosignature, "Ed25519 signed message": the message for the example
    # checkpoint at time 1679315147, and the timestamp inside the example cosignature.
    text = "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
    msg = b"cosignature/v1\ntime %d\n" % 1679315147 + text.encode()
    assert msg.decode() == (
        "cosignature/v1\ntime 1679315147\nexample.com/behind-the-sofa\n20852163\n"
        "CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
    )
    sig = b64("jWbPPwAAAABkGFDLEZMHwSRaJNiIDoe9DYn/zXcrtPHeolMI5OWXEhZCB9dlrDJsX3b2oyin1nPZqhf5nNo0xUe+mbIUBkBIfZ+qnA==")
    assert len(sig) == 76 and struct.unpack(">Q", sig[4:12])[0] == 1679315147
    assert parse_checkpoint(text) == ("example.com/behind-the-sofa", 20852163)


def main():
    spec_example()
    req = json.load(sys.stdin)
    log = parse_vkey(req["log"], 0x01)
    witnesses = [parse_vkey(w, 0x04) for w in req["witnesses"]]
    for note in req["notes"]:
        try:
            size, cosigners = check(note, log, witnesses, req["quorum"])
            print("ok %d %s" % (size, ",".join(cosigners)))
        except Bad as e:
            print("bad %s" % e)
        except Exception as e:  # a note too mangled to parse at all
            print("bad unparseable (%s)" % type(e).__name__)


if __name__ == "__main__":
    main()
