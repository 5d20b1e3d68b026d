#!/usr/bin/env python3
"""Runs the walkthroughs of README.md and docs/*.md against the real binary (issue #33).

Why a runner of our own, not trycmd/snapbox: those run one command per case, and our
walkthroughs are several processes at once (a relay and a witness in the background, an MCP
server, several "machines" as directories, values carried from one command to the next), told
as prose with a few commands between paragraphs. This keeps the doc the only copy of them.

How a doc marks what runs
-------------------------
A fenced block whose info string carries ``doctest=NAME`` is a command block::

    ```sh doctest=rotate
    sealrelay keys init --dir keys
    ```

Every block of one NAME in one file runs, in document order, as one bash script
(``set -Eeuo pipefail``) in a fresh scratch directory: variables, ``cd`` and background
processes carry from one block to the next. Blocks without ``doctest=`` are illustrations and
are never run. Names are unique across all the docs (each is one test in tests/docs.rs). A
block may belong to several walkthroughs (``doctest=rotate,revoke``: a setup both share).
``sealrelay`` on PATH is the binary under test ($SEALRELAY_BIN); HOME and TMPDIR point into
the scratch directory, and the caller's SEALRELAY_* variables are not passed on.

Options on a block (any block of the walkthrough; they apply to the whole walkthrough):

- ``needs=TOOL[,TOOL]``: programs that must be installed (``age``, ``curl``, ...). Missing
  ones skip the walkthrough with a message, or fail it when $SEALRELAY_REQUIRE_TOOLS is set.
  ``needs=postgres`` asks for an empty PostgreSQL database, given to the script as
  $DATABASE_URL: the runner takes it from $SEALRELAY_DOCTEST_DATABASE_URL (tests/docs.rs makes
  one when $SEALRELAY_TEST_POSTGRES is set) and skips with a message when there is none.
- ``timeout=SECS``: the whole walkthrough's limit (default 90).

Expected output: a ```` ```text expect ```` block after a command block (prose may come
between, no other fenced block) is that block's standard output. Lines are compared with
trailing spaces and surrounding blank lines ignored; ``[..]`` (or ``…``) in a line matches
any text on that line, and a line holding only ``...`` or ``…`` matches any number of lines.
Standard error is not compared: a doc that shows an error writes ``cmd 2>&1 || echo "exit $?"``.

Background processes: a doc starts them with ``&`` and reads the address they print
(``--listen 127.0.0.1:0``: the runner never uses a fixed port, and neither may a walkthrough).
The script runs in a session of its own; when it ends, fails or times out, every process of
that session is stopped (SIGTERM, then SIGKILL), whatever process group it made for itself.

A failure names the doc, the line, the command, and prints the block's stdout and stderr and
the tails of the logs (``*.out``, ``*.err``, ``*.log``) the walkthrough wrote.

Usage: run.py [--list] [--keep] [NAME ...]   (no NAME: every walkthrough)
Environment: SEALRELAY_BIN (default target/debug/sealrelay), SEALRELAY_REQUIRE_TOOLS,
SEALRELAY_DOCTEST_DATABASE_URL, SEALRELAY_DOCTEST_KEEP_FAILED (keep a failed walkthrough's
scratch directory), SEALRELAY_DOCTEST_DOCS (read README.md and docs/ from another directory).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_TIMEOUT = 90
FENCE = re.compile(r"^(\s*)(`{3,}|~{3,})(.*)$")
KNOWN_KEYS = {"doctest", "needs", "timeout", "expect"}


@dataclass
class Block:
    path: Path
    line: int  # 1-based line of the block's first content line
    text: str
    expect: str | None = None
    expect_line: int = 0


@dataclass
class Walkthrough:
    name: str
    path: Path
    blocks: list[Block] = field(default_factory=list)
    needs: list[str] = field(default_factory=list)
    timeout: int = DEFAULT_TIMEOUT


class DocError(Exception):
    pass


def rel(p: Path) -> str:
    try:
        return str(p.relative_to(ROOT))
    except ValueError:
        return str(p)


def doc_files() -> list[Path]:
    # SEALRELAY_DOCTEST_DOCS: another tree holding README.md and docs/ (to try the runner).
    top = Path(os.environ.get("SEALRELAY_DOCTEST_DOCS", ROOT))
    files = [top / "README.md"]
    files += sorted((top / "docs").rglob("*.md"))
    return [f for f in files if f.is_file()]


def parse_info(info: str, where: str) -> tuple[str, dict[str, str]]:
    words = info.split()
    lang = words[0] if words else ""
    opts: dict[str, str] = {}
    for w in words[1:]:
        key, _, value = w.partition("=")
        if key in KNOWN_KEYS:
            opts[key] = value
    if ("doctest" in opts or "expect" in opts) and any(
        w.partition("=")[0] not in KNOWN_KEYS for w in words[1:]
    ):
        raise DocError(f"{where}: unknown option in the info string {info!r}")
    return lang, opts


def parse(path: Path) -> dict[str, Walkthrough]:
    lines = path.read_text(encoding="utf-8").split("\n")
    found: dict[str, Walkthrough] = {}
    last_block: Block | None = None  # the previous fenced block, if it was a command block
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, fence, info = m.group(1), m.group(2), m.group(3).strip()
        where = f"{rel(path)}:{i + 1}"
        start = i + 1
        j = start
        while j < len(lines):
            close = lines[j].strip()
            if close.startswith(fence[0] * len(fence)) and close.strip(fence[0]) == "":
                break
            j += 1
        if j == len(lines):
            raise DocError(f"{where}: a fenced block is never closed")
        body = "\n".join(
            ln[len(indent):] if ln.startswith(indent) else ln for ln in lines[start:j]
        )
        lang, opts = parse_info(info, where)
        i = j + 1
        if "expect" in opts:
            if last_block is None:
                raise DocError(f"{where}: an expect block must follow a doctest block")
            if last_block.expect is not None:
                raise DocError(f"{where}: a second expect block for one command block")
            last_block.expect = body
            last_block.expect_line = start + 1
            last_block = None
            continue
        if "doctest" not in opts:
            last_block = None
            continue
        if lang not in ("sh", "bash", "shell", "console"):
            raise DocError(f"{where}: a doctest block must be ```sh")
        block = Block(path, start + 1, body)
        for name in opts["doctest"].split(","):
            if not re.fullmatch(r"[a-z0-9][a-z0-9-]*", name):
                raise DocError(f"{where}: doctest name {name!r}: use lowercase letters, digits, '-'")
            w = found.setdefault(name, Walkthrough(name, path))
            if opts.get("needs"):
                w.needs += [n for n in opts["needs"].split(",") if n]
            if opts.get("timeout"):
                w.timeout = int(opts["timeout"])
            w.blocks.append(block)
        last_block = block
    return found


def collect() -> dict[str, Walkthrough]:
    out: dict[str, Walkthrough] = {}
    for f in doc_files():
        for name, w in parse(f).items():
            if name in out:
                raise DocError(
                    f"doctest {name!r} is in {rel(out[name].path)} and {rel(f)}: names are unique"
                )
            out[name] = w
    return out


# ---------------------------------------------------------------- expected output


def line_pattern(line: str) -> re.Pattern[str]:
    parts = re.split(r"\[\.\.\]|\[…\]|…", line)
    return re.compile(".*?".join(re.escape(p) for p in parts) + r"\Z", re.S)


def normalize(text: str) -> list[str]:
    lines = [ln.rstrip() for ln in text.replace("\r\n", "\n").split("\n")]
    while lines and not lines[0]:
        lines.pop(0)
    while lines and not lines[-1]:
        lines.pop()
    return lines


def matches(expected: str, actual: str) -> bool:
    want = normalize(expected)
    got = normalize(actual)
    memo: dict[tuple[int, int], bool] = {}

    def go(i: int, j: int) -> bool:
        key = (i, j)
        if key in memo:
            return memo[key]
        if i == len(want):
            r = j == len(got)
        elif want[i].strip() in ("...", "…"):
            r = any(go(i + 1, k) for k in range(j, len(got) + 1))
        else:
            r = j < len(got) and bool(line_pattern(want[i]).match(got[j])) and go(i + 1, j + 1)
        memo[key] = r
        return r

    return go(0, 0)


# ---------------------------------------------------------------- running


def session_pids(sid: int) -> list[int]:
    pids = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            stat = Path(f"/proc/{d}/stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid pgrp session ...: comm may hold spaces and parentheses.
        fields = stat[stat.rfind(")") + 2 :].split()
        # A zombie is gone already (pid 1 reaps it in its own time).
        if len(fields) > 3 and fields[0] != "Z" and int(fields[3]) == sid and int(d) != os.getpid():
            pids.append(int(d))
    return pids


def stop_session(sid: int) -> None:
    """Stops every process of the walkthrough's session: SIGTERM, then SIGKILL after 3 s."""
    for sig, wait in ((signal.SIGTERM, 3.0), (signal.SIGKILL, 2.0)):
        pids = session_pids(sid)
        if not pids:
            return
        for p in pids:
            try:
                os.kill(p, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and session_pids(sid):
            time.sleep(0.05)


def build_script(w: Walkthrough, meta: Path) -> tuple[str, list[tuple[int, int, Block]]]:
    """The bash script, and (first script line, last script line, block) for each block."""
    head = [
        "set -Eeuo pipefail",
        f"__dt={sh_quote(str(meta))}",
        "trap 'printf \"%s\\t%s\\n\" \"$LINENO\" \"$BASH_COMMAND\" >> \"$__dt/failed\"' ERR",
    ]
    lines = list(head)
    spans = []
    for n, b in enumerate(w.blocks):
        lines.append(f"printf '%s\\n' {n} > \"$__dt/block\"")
        lines.append("{")
        first = len(lines) + 1
        body = b.text.split("\n")
        lines += body
        last = len(lines)
        lines.append(f'}} > "$__dt/{n}.out" 2> "$__dt/{n}.err" < /dev/null')
        spans.append((first, last, b))
    lines.append(f"printf '%s\\n' done > \"$__dt/block\"")
    return "\n".join(lines) + "\n", spans


def sh_quote(s: str) -> str:
    return "'" + s.replace("'", "'\\''") + "'"


def tail(path: Path, n: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        text = ""
    if not text.strip():
        return "  (nothing)"
    lines = text.rstrip("\n").split("\n")
    cut = lines[-n:]
    return ("  [...]\n" if len(lines) > n else "") + "\n".join("  " + ln for ln in cut)


def missing_tools(w: Walkthrough) -> list[str]:
    missing = []
    for tool in w.needs:
        if tool == "postgres":
            if not os.environ.get("SEALRELAY_DOCTEST_DATABASE_URL"):
                missing.append(tool)
        elif shutil.which(tool) is None:
            missing.append(tool)
    return missing


def run(w: Walkthrough, binary: Path, keep: bool) -> bool:
    missing = missing_tools(w)
    if missing:
        if "postgres" in missing:
            print(
                f"SKIPPED: {w.name} ({rel(w.path)}): needs an empty PostgreSQL database: set "
                "SEALRELAY_TEST_POSTGRES for tests/docs.rs (it makes one), or "
                "SEALRELAY_DOCTEST_DATABASE_URL for this runner"
            )
            return True
        msg = f"{w.name} ({rel(w.path)}): needs {', '.join(missing)}, which is not installed"
        if os.environ.get("SEALRELAY_REQUIRE_TOOLS"):
            print(f"FAILED: {msg} and SEALRELAY_REQUIRE_TOOLS is set")
            return False
        print(f"SKIPPED: {msg}")
        return True

    root = Path(tempfile.mkdtemp(prefix=f"sealrelay-doctest-{w.name}-"))
    work, meta, home, tmp, bindir = (root / d for d in ("work", "meta", "home", "tmp", "bin"))
    for d in (work, meta, home, tmp, bindir):
        d.mkdir()
    (bindir / "sealrelay").symlink_to(binary)
    script, spans = build_script(w, meta)
    (meta / "script.sh").write_text(script)

    env = {k: v for k, v in os.environ.items() if not k.startswith("SEALRELAY_")}
    for k in ("RUST_LOG", "RUST_BACKTRACE", "TICKETS_TOKEN", "DATABASE_URL"):
        env.pop(k, None)
    env.update(
        PATH=f"{bindir}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        HOME=str(home),
        TMPDIR=str(tmp),
        LANG="C.UTF-8",
        LC_ALL="C.UTF-8",
    )
    if "postgres" in w.needs:
        env["DATABASE_URL"] = os.environ["SEALRELAY_DOCTEST_DATABASE_URL"]

    started = time.monotonic()
    timed_out = False
    with open(meta / "script.log", "wb") as log:
        proc = subprocess.Popen(
            ["bash", str(meta / "script.sh")],
            cwd=work,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            code = proc.wait(timeout=w.timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            code = -1
        finally:
            stop_session(proc.pid)
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    elapsed = time.monotonic() - started

    reached = (meta / "block").read_text().strip() if (meta / "block").exists() else "0"
    done = reached == "done" and code == 0
    last = len(w.blocks) if done else int(reached) if reached.isdigit() else 0

    problems: list[str] = []
    # Expected output of every block that completed, in order.
    for n, (_, _, b) in enumerate(spans[:last]):
        if b.expect is None:
            continue
        out = (meta / f"{n}.out").read_text(errors="replace")
        if not matches(b.expect, out):
            problems.append(
                f"{rel(b.path)}:{b.expect_line}: the output differs from the doc's expect block\n"
                f"--- commands ({rel(b.path)}:{b.line}):\n{indent(b.text)}\n"
                f"--- expected:\n{indent(b.expect)}\n"
                f"--- got (stdout):\n{indent(out)}\n"
                f"--- stderr:\n{tail(meta / f'{n}.err')}"
            )
    if not done:
        b = w.blocks[last] if last < len(w.blocks) else w.blocks[-1]
        first_line = spans[min(last, len(spans) - 1)][0]
        what = f"timed out after {w.timeout} s" if timed_out else f"failed (exit {code})"
        where = f"{rel(b.path)}:{b.line}"
        failed = []
        if (meta / "failed").exists():
            for entry in (meta / "failed").read_text().splitlines():
                lineno, _, cmd = entry.partition("\t")
                if lineno.isdigit() and first_line <= int(lineno):
                    doc_line = b.line + int(lineno) - first_line
                    failed.append(f"{rel(b.path)}:{doc_line}: {cmd}")
        if failed:
            where = failed[-1]
        problems.append(
            f"{where}: {what}\n"
            + (("--- failing commands:\n" + indent("\n".join(dict.fromkeys(failed))) + "\n") if failed else "")
            + f"--- block ({rel(b.path)}:{b.line}):\n{indent(b.text)}\n"
            f"--- stdout:\n{tail(meta / f'{last}.out')}\n"
            f"--- stderr:\n{tail(meta / f'{last}.err')}"
            + ("" if tail(meta / "script.log") == "  (nothing)" else
               f"\n--- bash:\n{tail(meta / 'script.log', 20)}")
            + logs(work)
        )

    if problems:
        print(f"FAILED: {w.name} ({rel(w.path)}, {elapsed:.1f} s)")
        for p in problems:
            print(p)
        if not keep and not os.environ.get("SEALRELAY_DOCTEST_KEEP_FAILED"):
            print("(SEALRELAY_DOCTEST_KEEP_FAILED=1 keeps the scratch directory)")
    else:
        print(f"ok: {w.name} ({rel(w.path)}, {len(w.blocks)} blocks, {elapsed:.1f} s)")
    if keep or problems and os.environ.get("SEALRELAY_DOCTEST_KEEP_FAILED"):
        print(f"kept: {root}")
    else:
        shutil.rmtree(root, ignore_errors=True)
    return not problems


def indent(text: str) -> str:
    return "\n".join("  " + ln for ln in text.rstrip("\n").split("\n"))


def logs(work: Path) -> str:
    out = []
    for p in sorted(work.rglob("*")):
        if p.is_file() and p.suffix in (".out", ".err", ".log") and p.stat().st_size:
            out.append(f"\n--- {p.relative_to(work)} (tail):\n{tail(p, 15)}")
    return "".join(out)


def main(argv: list[str]) -> int:
    keep = "--keep" in argv
    listing = "--list" in argv
    names = [a for a in argv if not a.startswith("--")]
    unknown = [a for a in argv if a.startswith("--") and a not in ("--keep", "--list")]
    if unknown:
        print(f"usage: run.py [--list] [--keep] [NAME ...] (unknown {unknown})", file=sys.stderr)
        return 2
    try:
        walks = collect()
    except DocError as e:
        print(f"FAILED: {e}")
        return 1
    if listing:
        for w in walks.values():
            print(f"{w.name}\t{rel(w.path)}:{w.blocks[0].line}")
        return 0
    binary = Path(os.environ.get("SEALRELAY_BIN", ROOT / "target/debug/sealrelay")).resolve()
    if not os.access(binary, os.X_OK):
        print(f"FAILED: no sealrelay binary at {binary} (set SEALRELAY_BIN)")
        return 1
    unknown_names = [n for n in names if n not in walks]
    if unknown_names:
        print(f"FAILED: no walkthrough named {', '.join(unknown_names)} (run.py --list)")
        return 1
    selected = [walks[n] for n in names] if names else list(walks.values())
    ok = True
    for w in selected:
        ok = run(w, binary, keep) and ok
        sys.stdout.flush()
    return 0 if ok else 1


if __name__ == "__main__":
    # Stop the walkthrough's processes if this runner is itself stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    sys.exit(main(sys.argv[1:]))
