"""Helpers shared by the CLI / loopback test modules (``import helpers``: pytest puts
``tests/`` on sys.path, as for ``nrl.py``)."""

from __future__ import annotations

import random
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path

from tesla.cli import main

#: ``tesla-mcast`` as a separate process
PY = [sys.executable, "-m", "tesla.cli"]


def rand_group() -> str:
    """A random ``ADDR:PORT`` in 239.255.0.0/16 (parallel runs do not share a group)."""
    rng = random.SystemRandom()
    return f"239.255.{rng.randint(1, 254)}.{rng.randint(1, 254)}:{rng.randint(20000, 60000)}"


def keygen(directory: Path, name: str = "SENDER") -> tuple[Path, Path]:
    """``tesla-mcast keygen --out DIR/NAME`` -> (private PEM, public key)."""
    assert main(["keygen", "--out", str(directory / name)]) == 0
    return directory / f"{name}.pem", directory / f"{name}.pub"


def write_random_files(
    directory: Path, seed: int, files: Iterable[tuple[str, int]]
) -> list[Path]:
    """``(name, size)`` files of seeded random bytes in ``directory``, in order."""
    rnd = random.Random(seed)
    out = []
    for name, size in files:
        p = directory / name
        p.write_bytes(rnd.randbytes(size))
        out.append(p)
    return out


def receive_while_sending(
    recv_args: list[str], send_args: list[str], timeout: float, join_delay: float = 1.0
) -> tuple[subprocess.CompletedProcess[str], int, str, str]:
    """Start ``tesla-mcast receive`` (``recv_args``), give it ``join_delay`` s to join
    the group, run ``tesla-mcast send`` (``send_args``) to completion, then wait for the
    receiver (each with ``timeout`` s; a receiver still running is killed).
    -> (sender result, receiver exit status, receiver stdout, receiver stderr)."""
    rx = subprocess.Popen(
        PY + recv_args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        time.sleep(join_delay)
        tx = subprocess.run(PY + send_args, capture_output=True, text=True, timeout=timeout)
        stdout, stderr = rx.communicate(timeout=timeout)
    finally:
        if rx.poll() is None:
            rx.kill()
            rx.wait()
    return tx, rx.returncode, stdout, stderr
