"""A real relay for the binding's tests: `sealrelay serve` (the binary of this checkout, or
$SEALRELAY_BIN) on a free loopback port, with an admin's directory of alice, bob (an approver)
and research-bot, made by the CLI."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Iterator, List

import pytest

ROOT = Path(__file__).resolve().parents[3]


def binary() -> str:
    return os.environ.get("SEALRELAY_BIN", str(ROOT / "target" / "debug" / "sealrelay"))


class World:
    def __init__(self, dir: Path) -> None:
        self.dir = dir
        self.relay = ""
        self.proc: "subprocess.Popen[bytes] | None" = None

    def cli(self, *args: str, check: bool = True) -> "subprocess.CompletedProcess[str]":
        """Runs the CLI in the world's directory (the relay's address given where it takes one)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("SEALRELAY_")}
        if self.relay:
            env["SEALRELAY_RELAY"] = self.relay
        out = subprocess.run([binary(), *args], cwd=self.dir, env=env, capture_output=True, text=True)
        if check and out.returncode != 0:
            raise AssertionError(f"sealrelay {' '.join(args)} failed ({out.returncode}): {out.stderr}")
        return out

    def path(self, name: str) -> Path:
        return self.dir / name

    def data_files(self) -> List[Path]:
        return [p for p in (self.dir / "data").rglob("*") if p.is_file()]


@pytest.fixture()
def world(tmp_path: Path) -> Iterator[World]:
    w = World(tmp_path)
    w.cli("keys", "init", "--dir", "keys")
    w.cli("user", "add", "alice", "--dir", "keys", "--clearance", "3", "--out", "alice.id")
    w.cli("user", "add", "bob", "--dir", "keys", "--role", "approver", "--out", "bob.id")
    w.cli("agent", "add", "research-bot", "--dir", "keys", "--scope", "tickets/*", "--out", "bot.id")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEALRELAY_")}
    env["SEALRELAY_METRICS_LISTEN"] = "off"
    proc = subprocess.Popen(
        [binary(), "serve", "--dir", "keys", "--data", "data", "--listen", "127.0.0.1:0"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().decode()
    assert line.startswith("sealrelay relay listening on"), line
    w.relay = line.split()[-1]
    w.proc = proc
    try:
        yield w
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        # pytest keeps the last runs' directories: not a gibibyte of ciphertext each.
        shutil.rmtree(tmp_path / "data", ignore_errors=True)
