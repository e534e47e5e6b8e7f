"""Helpers shared by the CLI / loopback test modules (``import helpers``: pytest puts
``tests/`` on sys.path)."""

from __future__ import annotations

import random
import socket
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path

from tesla.cli.main import main

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


def wait_joined(addr: str, limit: float = 30.0) -> bool:
    """Wait until some process on this host has joined the IPv4 group ``addr`` (read from
    ``/proc/net/igmp``): a receiver process takes a variable time to start (interpreter,
    imports, key loading), a fixed delay is too short on a loaded machine."""
    want = socket.inet_aton(addr)[::-1].hex().upper()
    end = time.time() + limit
    while time.time() < end:
        try:
            with open("/proc/net/igmp") as f:
                if any(line.split()[:1] == [want] for line in f):
                    time.sleep(0.1)  # the join is in; the socket is bound before it
                    return True
        except OSError:
            return False
        time.sleep(0.05)
    return False


def _group_of(args: list[str]) -> str | None:
    if "--group" in args:
        host = args[args.index("--group") + 1].rpartition(":")[0]
        try:
            socket.inet_aton(host)
            return host
        except OSError:
            return None
    return None


def receive_while_sending(
    recv_args: list[str], send_args: list[str], timeout: float, join_delay: float = 1.0
) -> tuple[subprocess.CompletedProcess[str], int, str, str]:
    """Start ``tesla-mcast receive`` (``recv_args``), wait until it has joined the group
    (IPv4 multicast: :func:`wait_joined`; otherwise ``join_delay`` s), run ``tesla-mcast
    send`` (``send_args``) to completion, then wait for the receiver (each with
    ``timeout`` s; a receiver still running is killed).
    -> (sender result, receiver exit status, receiver stdout, receiver stderr)."""
    rx = subprocess.Popen(
        PY + recv_args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        group = _group_of(recv_args)
        if group is None or not socket.inet_aton(group)[0] >= 224 or not wait_joined(group):
            time.sleep(join_delay)
        tx = subprocess.run(PY + send_args, capture_output=True, text=True, timeout=timeout)
        stdout, stderr = rx.communicate(timeout=timeout)
    finally:
        if rx.poll() is None:
            rx.kill()
            rx.wait()
    return tx, rx.returncode, stdout, stderr
