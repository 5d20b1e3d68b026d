"""An independent verifier of a directory entry logged in a sealrelay relay's directory log,
written from the specs: C2SP signed-note and tlog-checkpoint (the checkpoint), C2SP tlog-tiles
(tile paths, entry bundles), RFC 9162 section 2.1 (leaf and node hashes, inclusion proofs) and
the directory leaf and directory-entry byte formats. Standard library plus Ed25519 from the
`cryptography` package; it shares no code with sealrelay.

  verify_entry.py fetch --url BASE --party SPIFFE_ID   > bundle.json
  verify_entry.py verify --log VKEY --authority VKEY   < bundle.json
  verify_entry.py selftest

fetch prints {"checkpoint", "index", "leaf", "proof"} for the party's last entry in the log;
verify prints "ok index=I serial=S size=N party=ID" (exit 0); both print "bad <reason>" and
exit 1 on any failure. selftest builds a synthetic log and checks accept/reject cases.
"""

import base64
import hashlib
import json
import struct
import sys
import urllib.request

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

DASH = "\u2014 "
L = 2**252 + 27742317777372353535851937790883648493  # order of the Ed25519 base point
LEAF_PREFIX = b"sealrelay directory leaf v1\x00"
STMT_PREFIX = b"sealrelay-statement-v1\x00"
MAX_STMT, MAX_STR, TILE = 64 * 1024, 4096, 256


class Bad(Exception):
    pass


def b64(s):
    try:
        return base64.b64decode(s, validate=True)
    except Exception as e:
        raise Bad("bad base64") from e


def parse_vkey(text):
    """`name+hexkeyid+base64(0x01 || pubkey)`; key id = SHA-256(name "\\n" 0x01 pubkey)[:4]."""
    parts = text.strip().split("+", 2)
    if len(parts) != 3 or not parts[0] or any(c.isspace() for c in parts[0]):
        raise Bad("malformed vkey")
    name, raw = parts[0], b64(parts[2])
    if len(raw) != 33 or raw[0] != 0x01:
        raise Bad("vkey is not an Ed25519 key")
    key_id = hashlib.sha256(name.encode() + b"\n" + raw).digest()[:4]
    if key_id.hex() != parts[1]:
        raise Bad("vkey key id mismatch")
    return name, key_id, raw[1:]


def ed25519_verify(pub, sig, msg):
    """Strict: a 64-byte signature whose S is canonical (S < L), then the library's check."""
    if len(sig) != 64 or int.from_bytes(sig[32:], "little") >= L:
        return False
    try:
        Ed25519PublicKey.from_public_bytes(pub).verify(sig, msg)
        return True
    except (InvalidSignature, ValueError):
        return False


# --- checkpoint (C2SP signed-note, tlog-checkpoint) ------------------------------------------

def verify_checkpoint(note, log):
    """Returns (size, root) if `note` is a well-formed checkpoint signed by the `log` key."""
    if not isinstance(note, str) or not note.endswith("\n"):
        raise Bad("note does not end with a newline")
    if any(ord(c) < 0x20 and c != "\n" for c in note):
        raise Bad("control character in note")
    cut = note.find("\n\n")
    if cut < 0:
        raise Bad("note has no blank line")
    text, sigs = note[: cut + 1], note[cut + 2 :]
    lines = text.split("\n")
    if len(lines) != 4:  # origin, size, root: this log uses no extension lines
        raise Bad("checkpoint must have exactly three body lines")
    origin, size, root = lines[0], lines[1], b64(lines[2])
    if not size.isascii() or not size.isdigit() or (len(size) > 1 and size[0] == "0"):
        raise Bad("checkpoint size is not canonical decimal")
    if len(root) != 32:
        raise Bad("checkpoint root is not 32 bytes")
    name, key_id, pub = log
    if origin != name or not origin.endswith("/directory"):
        raise Bad("checkpoint origin %r is not the directory log key's name %r" % (origin, name))
    signed = False
    for line in sigs[:-1].split("\n"):
        if not line.startswith(DASH) or " " not in line[len(DASH) :]:
            raise Bad("malformed signature line")
        signer, sig = line[len(DASH) :].split(" ", 1)
        sig = b64(sig)
        if len(sig) < 5:
            raise Bad("signature too short")
        if signer == name and sig[:4] == key_id:
            if not ed25519_verify(pub, sig[4:], text.encode()):
                raise Bad("checkpoint signature does not verify")
            signed = True
    if not signed:
        raise Bad("no signature by the log key")
    return int(size), root


# --- Merkle tree (RFC 9162 section 2.1) ------------------------------------------------------

def leaf_hash(leaf):
    return hashlib.sha256(b"\x00" + leaf).digest()


def node_hash(left, right):
    return hashlib.sha256(b"\x01" + left + right).digest()


def verify_inclusion(index, size, lh, proof, root):
    """RFC 9162 section 2.1.3.2, step by step."""
    if index >= size:
        return False
    fn, sn, r = index, size - 1, lh
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not (fn & 1 or fn == 0):
                fn, sn = fn >> 1, sn >> 1
        else:
            r = node_hash(r, p)
        fn, sn = fn >> 1, sn >> 1
    return sn == 0 and r == root


# --- directory leaf and directory-entry statement ----------------------------------------------

class Reader:
    """Big-endian canonical decoding; each length is checked against its cap and the input."""

    def __init__(self, b, i=0):
        self.b, self.i = b, i

    def take(self, n, what):
        if n > len(self.b) - self.i:
            raise Bad("short input in " + what)
        self.i += n
        return self.b[self.i - n : self.i]

    def uint(self, size, what):
        return int.from_bytes(self.take(size, what), "big")

    def bytes(self, what, cap=MAX_STR, exact=None):
        n = self.uint(4, what)
        if n > cap or exact not in (None, n):
            raise Bad("%s has bad length %d" % (what, n))
        return self.take(n, what)

    def str(self, what):
        try:
            return self.bytes(what).decode("utf-8")
        except UnicodeDecodeError as e:
            raise Bad(what + " is not UTF-8") from e

    def flag(self, what):
        f = self.uint(1, what)
        if f > 1:
            raise Bad("bad %s flag" % what)
        return f

    def str_list(self, what):
        n = self.uint(4, what)
        if n > (len(self.b) - self.i) // 4:
            raise Bad(what + " count exceeds the input")
        return [self.str(what) for _ in range(n)]

    def end(self, what):
        if self.i != len(self.b):
            raise Bad("trailing bytes after " + what)


def parse_leaf(leaf):
    """Returns (logged_at, statement, signature)."""
    r = Reader(leaf)
    if r.take(len(LEAF_PREFIX), "leaf prefix") != LEAF_PREFIX:
        raise Bad("not a sealrelay directory leaf")
    out = r.uint(8, "leaf time"), r.bytes("statement", MAX_STMT), r.bytes("signature", exact=64)
    r.end("leaf")
    return out


def statement_tag(stmt):
    """Returns (type tag, offset of the first field)."""
    end = stmt.find(b"\x00", len(STMT_PREFIX), len(STMT_PREFIX) + 65)
    tag = stmt[len(STMT_PREFIX) : end]
    if not stmt.startswith(STMT_PREFIX) or end < 0 or not tag or not all(0x21 <= c < 0x7F for c in tag):
        raise Bad("not a sealrelay statement")
    return tag.decode(), end + 1


def parse_entry(stmt):
    tag, start = statement_tag(stmt)
    if tag != "directory-entry":
        raise Bad("statement is a %s, not a directory-entry" % tag)
    r = Reader(stmt, start)
    e = {"id": r.str("id"), "age_recipient": r.str("age recipient") if r.flag("age recipient") else None,
         "signing_key": r.bytes("signing key", exact=32), "tls_spki_sha256": r.bytes("TLS digest", exact=32),
         "clearance": r.uint(1, "clearance"), "roles": r.str_list("roles"), "scopes": r.str_list("scopes"),
         "serial": r.uint(8, "serial"), "not_before": r.uint(8, "not before"),
         "not_after": r.uint(8, "not after"), "enrolled_by": ""}
    if r.i < len(stmt):  # entries signed before enrolled_by and rotation existed end here
        e["enrolled_by"] = r.str("enrolled by")
        if r.flag("rotation"):
            e["rotation"] = r.bytes("rotation statement", MAX_STMT), r.bytes("rotation signature", exact=64)
    r.end("directory entry")
    if not e["id"].startswith("spiffe://") or e["serial"] < 1 or e["clearance"] > 9:
        raise Bad("entry id, serial or clearance out of range")
    if e["not_after"] <= e["not_before"]:
        raise Bad("entry validity ends before it starts")
    return e


def verify(bundle, log, authority):
    """All the checks on a fetched bundle; returns the "ok ..." line or raises Bad."""
    index, proof = bundle.get("index"), bundle.get("proof")
    if type(index) is not int or index < 0 or not isinstance(proof, list) or len(proof) > 64:
        raise Bad("bundle index or proof malformed")
    if not isinstance(bundle.get("leaf"), str) or not all(isinstance(p, str) for p in proof):
        raise Bad("bundle leaf or proof malformed")
    size, root = verify_checkpoint(bundle.get("checkpoint"), log)
    leaf, proof = b64(bundle["leaf"]), [b64(p) for p in proof]
    if any(len(p) != 32 for p in proof):
        raise Bad("proof hash is not 32 bytes")
    if not verify_inclusion(index, size, leaf_hash(leaf), proof, root):
        raise Bad("inclusion proof does not verify")
    _, stmt, sig = parse_leaf(leaf)
    entry = parse_entry(stmt)
    if not ed25519_verify(authority[2], sig, stmt):
        raise Bad("entry signature by the authority does not verify")
    return "ok index=%d serial=%d size=%d party=%s" % (index, entry["serial"], size, entry["id"])


# --- fetch (C2SP tlog-tiles) -----------------------------------------------------------------

def tile_path(n):
    """1234067 -> x001/x234/067; 5 -> 005."""
    s = str(n).zfill(-(-len(str(n)) // 3) * 3)
    groups = [s[i : i + 3] for i in range(0, len(s), 3)]
    return "/".join(["x" + g for g in groups[:-1]] + groups[-1:])


def get(url, limit=16 << 20):
    try:
        with urllib.request.urlopen(url, timeout=30) as resp:
            body = resp.read(limit + 1)
    except Exception as e:
        raise Bad("GET %s failed: %s" % (url, e)) from e
    if len(body) > limit:
        raise Bad("GET %s: response too large" % url)
    return body


def split_bundle(data, want):
    """An entry bundle: big-endian uint16 length, then the entry, repeated."""
    out, r = [], Reader(data)
    while r.i < len(data):
        out.append(r.take(r.uint(2, "entry bundle"), "entry bundle"))
    if len(out) != want:
        raise Bad("entry bundle has %d entries, expected %d" % (len(out), want))
    return out


def fetch(base, party, get=get):
    base = base.rstrip("/")
    note = get(base + "/directory/checkpoint", 1 << 16).decode("utf-8", "replace")
    lines = note.split("\n")
    if len(lines) < 3 or not lines[1].isascii() or not lines[1].isdigit():
        raise Bad("malformed checkpoint")
    size, found = int(lines[1]), None
    for n in range(-(-size // TILE)):
        w = min(TILE, size - n * TILE)
        path = tile_path(n) + ("" if w == TILE else ".p/%d" % w)
        for j, leaf in enumerate(split_bundle(get(base + "/directory/tile/entries/" + path), w)):
            try:
                stmt = parse_leaf(leaf)[1]
                if statement_tag(stmt)[0] == "directory-entry" and parse_entry(stmt)["id"] == party:
                    found = (n * TILE + j, leaf)
            except Bad as e:
                raise Bad("leaf %d: %s" % (n * TILE + j, e)) from e
    if found is None:
        raise Bad("no directory entry for %s in a tree of size %d" % (party, size))
    try:
        p = json.loads(get("%s/directory/proof/%d?size=%d" % (base, found[0], size), 1 << 20))
    except ValueError as e:
        raise Bad("proof response is not JSON") from e
    if not isinstance(p, dict) or (p.get("index"), p.get("tree_size")) != (found[0], size):
        raise Bad("proof response is for another index or tree size")
    if not isinstance(p.get("leaf"), str) or b64(p["leaf"]) != found[1]:
        raise Bad("proof response's leaf differs from the tile's")
    return {"checkpoint": note, "index": found[0], "leaf": p["leaf"], "proof": p.get("proof")}


# --- selftest: a synthetic log, verified intact and altered ----------------------------------

ORIGIN = "example.test/log/directory"


def _enc(x):
    return struct.pack(">I", len(x)) + x


def _b64(x):
    return base64.b64encode(x).decode()


def _vkey(name, sk):
    raw = b"\x01" + sk.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return "%s+%s+%s" % (name, hashlib.sha256(name.encode() + b"\n" + raw).digest()[:4].hex(), _b64(raw))


def _sign_note(text, sk):
    kid = bytes.fromhex(_vkey(ORIGIN, sk).split("+")[1])
    return text + "\n" + DASH + ORIGIN + " " + _b64(kid + sk.sign(text.encode())) + "\n"


def _entry(name, serial, rotation=False):
    st = STMT_PREFIX + b"directory-entry\x00" + _enc(b"spiffe://example.test/user/" + name) + b"\x01"
    st += _enc(b"age1example") + _enc(b"\x11" * 32) + _enc(b"\x22" * 32) + b"\x03" + struct.pack(">I", 2)
    st += _enc(b"staff") + _enc(b"hr") + struct.pack(">IQQQ", 0, serial, 1700000000, 1800000000)
    st += _enc(b"spiffe://example.test/admin/root")
    return st + (b"\x01" + _enc(b"rotation") + _enc(b"\x33" * 64) if rotation else b"\x00")


def _leaf(st, sig, extra=b""):
    return LEAF_PREFIX + struct.pack(">Q", 1700000001) + _enc(st) + _enc(sig) + extra


def _tree(ls, m):
    """(root, inclusion path of leaf m): RFC 9162 MTH and PATH, recursively."""
    if len(ls) == 1:
        return leaf_hash(ls[0]), []
    k = 1 << ((len(ls) - 1).bit_length() - 1)
    (left, lp), (right, rp) = _tree(ls[:k], m), _tree(ls[k:], m - k)
    return node_hash(left, right), (lp + [right] if m < k else rp + [left])


def _bundle(ls, i, logk, size=None, root=None):
    tree_root, path = _tree(ls, i)
    text = "%s\n%s\n%s\n" % (ORIGIN, size or len(ls), root or _b64(tree_root))
    return {"checkpoint": _sign_note(text, logk), "index": i, "leaf": _b64(ls[i]), "proof": [_b64(p) for p in path]}


def _flip(s, pos):
    raw = bytearray(b64(s))
    raw[pos] ^= 1
    return _b64(bytes(raw))


def selftest():
    logk, auth, other = (Ed25519PrivateKey.generate() for _ in range(3))
    LOGV, AUTHV = _vkey(ORIGIN, logk), _vkey("example.test/authority", auth)
    revocation = STMT_PREFIX + b"revocation\x00" + _enc(b"spiffe://example.test/user/bob") + struct.pack(">Q", 1)
    stmts = [_entry(b"alice", 1), _entry(b"bob", 1), revocation, _entry(b"alice", 2, True), _entry(b"carol", 1)]
    ls = [_leaf(st, auth.sign(st)) for st in stmts]
    sig, legacy = auth.sign(stmts[1]), stmts[4][: -len(_enc(b"spiffe://example.test/admin/root")) - 1]
    bad_ls = ls + [_leaf(stmts[0] + b"\x00", auth.sign(stmts[0] + b"\x00")),  # 5: trailing byte in the entry
                   _leaf(stmts[0], auth.sign(stmts[0]), b"\x00"),  # 6: trailing byte after the leaf
                   _leaf(stmts[1], sig[:32] + (int.from_bytes(sig[32:], "little") + L).to_bytes(32, "little")),
                   _leaf(stmts[0][:-3], auth.sign(stmts[0][:-3])),  # 7: S + L; 8: truncated entry
                   _leaf(legacy, auth.sign(legacy))]  # 9: ends after not_after, as older entries do
    good = _bundle(ls, 3, logk)
    note = good["checkpoint"]
    text, root, sig_b64 = note.split("\n\n")[0] + "\n", note.split("\n")[2], note.split(" ")[-1][:-1]
    flipped = [dict(good, leaf=_flip(good["leaf"], p)) for p in (0, len(LEAF_PREFIX) + 30, len(ls[3]) - 1)]
    with_checkpoint = lambda c: dict(good, checkpoint=c)  # noqa: E731
    cases = [  # (label, should verify, bundle or result string, log vkey, authority vkey)
        ("good", True, good), ("good, index 0", True, _bundle(ls, 0, logk)),
        ("good, last index", True, _bundle(ls, 4, logk)), ("good, in a 10-leaf log", True, _bundle(bad_ls, 3, logk)),
        ("good, cosigned note", True, with_checkpoint(note + DASH + "witness " + _b64(b"\0" * 76) + "\n")),
        ("leaf: first byte flipped", False, flipped[0]), ("leaf: entry byte flipped", False, flipped[1]),
        ("leaf: signature byte flipped", False, flipped[2]),
        ("proof hash altered", False, dict(good, proof=[_flip(good["proof"][0], 5)] + good["proof"][1:])),
        ("proof hash dropped", False, dict(good, proof=good["proof"][:-1])),
        ("proof hash added", False, dict(good, proof=good["proof"] + good["proof"][:1])),
        ("index changed", False, dict(good, index=2)), ("index = size", False, dict(good, index=5)),
        ("size altered", False, with_checkpoint(note.replace("\n5\n", "\n6\n"))),
        ("size altered, re-signed", False, with_checkpoint(_bundle(ls, 3, logk, size=4)["checkpoint"])),
        ("root altered", False, with_checkpoint(note.replace(root, _b64(b"\x07" * 32)))),
        ("root altered, re-signed", False, with_checkpoint(_bundle(ls, 3, logk, root=_b64(b"\7" * 32))["checkpoint"])),
        ("checkpoint signature altered", False, with_checkpoint(note.replace(sig_b64, _flip(sig_b64, 40)))),
        ("checkpoint signed by another", False, with_checkpoint(_sign_note(text, other))),
        ("size with a leading zero", False, with_checkpoint(_bundle(ls, 3, logk, size="05")["checkpoint"])),
        ("note without final newline", False, with_checkpoint(note[:-1])),
        ("control character in note", False, with_checkpoint(_sign_note(text[:-1] + "\t\n", logk))),
        ("wrong log key", False, good, _vkey(ORIGIN, other)),
        ("log key of another name", False, good, _vkey("example.test/log/other", logk)),
        ("wrong authority key", False, good, LOGV, _vkey("example.test/authority", other)),
        ("authority key id wrong", False, good, LOGV, AUTHV.replace(AUTHV.split("+")[1], "00000000")),
        ("statement is a revocation", False, _bundle(ls, 2, logk)),
        ("trailing bytes after entry", False, _bundle(bad_ls, 5, logk)),
        ("trailing bytes after leaf", False, _bundle(bad_ls, 6, logk)),
        ("non-canonical S (S + L)", False, _bundle(bad_ls, 7, logk)),
        ("truncated entry", False, _bundle(bad_ls, 8, logk)),
        ("legacy entry (no enrolled_by)", True, _bundle(bad_ls, 9, logk)),
        ("fetch from a 305-leaf relay", True, _fetched(ls + ls[:1] * 300, logk))]
    for n, want in ((5, "005"), (0, "000"), (1000, "x001/000"), (1234067, "x001/x234/067")):
        cases.append(("tile path %d" % n, True, ("ok " if tile_path(n) == want else "bad ") + tile_path(n)))
    failures = 0
    for label, should, b, *keys in cases:
        lk, ak = (keys + [LOGV, AUTHV][len(keys) :])[:2]
        try:
            got = verify(b, parse_vkey(lk), parse_vkey(ak)) if isinstance(b, dict) else b
        except Bad as e:
            got = "bad %s" % e
        failures += got.startswith("ok ") != should
        print("%-4s %-30s %s" % ("pass" if got.startswith("ok ") == should else "FAIL", label, got))
    print("selftest: %d of %d cases failed" % (failures, len(cases)))
    return failures == 0


def _fetched(ls, logk):
    """Runs fetch on `ls` (a full tile and a partial one) served from a dict by a stand-in for
    the HTTP GET: for alice, whose last entry is the last leaf, and for an absent party."""
    files = {"/directory/checkpoint": _bundle(ls, 0, logk)["checkpoint"].encode()}
    for n in range(0, len(ls), TILE):
        part = ls[n : n + TILE]
        path = tile_path(n // TILE) + ("" if len(part) == TILE else ".p/%d" % len(part))
        files["/directory/tile/entries/" + path] = b"".join(struct.pack(">H", len(x)) + x for x in part)
    b = dict(_bundle(ls, len(ls) - 1, logk), tree_size=len(ls))
    files["/directory/proof/%d?size=%d" % (len(ls) - 1, len(ls))] = json.dumps(b).encode()

    def serve(url, limit=0):
        if url[len("http://relay") :] not in files:
            raise Bad("GET %s: 404" % url)
        return files[url[len("http://relay") :]]

    try:
        try:
            return "bad fetch found an absent party: %s" % fetch("http://relay/", "spiffe://example.test/user/nobody", serve)
        except Bad:
            pass
        got = fetch("http://relay/", "spiffe://example.test/user/alice", serve)
        return got if got["index"] == len(ls) - 1 else "bad fetch chose index %d" % got["index"]
    except Bad as e:
        return "bad %s" % e


def main(argv):
    need = {"fetch": ("--url", "--party"), "verify": ("--log", "--authority"), "selftest": ()}
    cmd, opts = (argv or [""])[0], dict(zip(argv[1::2], argv[2::2]))
    if cmd not in need or len(argv) != 1 + 2 * len(need[cmd]) or set(opts) != set(need[cmd]):
        print(__doc__.strip(), file=sys.stderr)
        return 2
    if cmd == "selftest":
        return 0 if selftest() else 1
    try:
        if cmd == "fetch":
            print(json.dumps(fetch(opts["--url"], opts["--party"])))
        else:
            bundle = json.loads(sys.stdin.read(1 << 22))
            if not isinstance(bundle, dict):
                raise Bad("bundle is not a JSON object")
            print(verify(bundle, parse_vkey(opts["--log"]), parse_vkey(opts["--authority"])))
        return 0
    except Bad as e:
        print("bad %s" % e)
    except Exception as e:  # input too mangled to parse at all
        print("bad unparseable (%s: %s)" % (type(e).__name__, e))
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
