"""seal and open_envelope, checked against Go age (the independent implementation): what
Python seals, age decrypts; what age encrypts, Python opens; a tampered envelope leaves
nothing behind."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

import sealrelay

needs_age = pytest.mark.skipif(
    shutil.which("age") is None or shutil.which("age-keygen") is None,
    reason="Go age (age, age-keygen) is not installed: apt-get install age",
)


def keypair(tmp: Path) -> str:
    key = tmp / "key.txt"
    subprocess.run(["age-keygen", "-o", str(key)], check=True, capture_output=True)
    return subprocess.run(["age-keygen", "-y", str(key)], check=True, capture_output=True,
                          text=True).stdout.strip()


@needs_age
def test_python_seals_age_opens_and_back(tmp_path: Path) -> None:
    recipient = keypair(tmp_path)
    plain = tmp_path / "plain.bin"
    plain.write_bytes(os.urandom(3 * 1024 * 1024 + 17))
    sealed = tmp_path / "sealed.age"
    n = sealrelay.seal(recipient, plain, sealed)
    assert n == sealed.stat().st_size
    out = subprocess.run(["age", "-d", "-i", str(tmp_path / "key.txt"), str(sealed)],
                         check=True, capture_output=True).stdout
    assert out == plain.read_bytes()

    by_age = tmp_path / "by-age.age"
    subprocess.run(["age", "-r", recipient, "-o", str(by_age), str(plain)], check=True)
    opened = tmp_path / "opened.bin"
    assert sealrelay.open_envelope(tmp_path / "key.txt", by_age, opened) == plain.stat().st_size
    assert opened.read_bytes() == plain.read_bytes()
    assert opened.stat().st_mode & 0o777 == 0o600


@needs_age
def test_a_tampered_envelope_opens_to_nothing(tmp_path: Path) -> None:
    recipient = keypair(tmp_path)
    plain = tmp_path / "plain.bin"
    plain.write_bytes(os.urandom(200_000))
    sealed = tmp_path / "sealed.age"
    sealrelay.seal(recipient, plain, sealed)
    data = bytearray(sealed.read_bytes())
    data[-5] ^= 0x01
    sealed.write_bytes(bytes(data))
    out = tmp_path / "out.bin"
    with pytest.raises(sealrelay.SealrelayError) as e:
        sealrelay.open_envelope(tmp_path / "key.txt", sealed, out)
    assert "\n" not in str(e.value)
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_bad_input_is_a_typed_error(tmp_path: Path) -> None:
    with pytest.raises(sealrelay.BadInputError):
        sealrelay.seal("age1notarecipient", tmp_path / "x", tmp_path / "y")
    with pytest.raises(sealrelay.NotFoundError):
        sealrelay.seal("age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p",
                       tmp_path / "missing", tmp_path / "y")
    assert not (tmp_path / "y").exists()
