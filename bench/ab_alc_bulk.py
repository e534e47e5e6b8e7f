"""A/B of the ALC engines' bulk paths on a large file: this tree's ``alc/sender.py`` and
``alc/receiver.py`` against those of a git revision, in one process, alternated round by
round (best of N).  One 20 MiB file (1400 B symbols, no FEC), as the CLI runs it: the
sender unpaced at 256 datagrams per call (``datagrams_to_send``), the receiver writing
blocks as they complete (``stream_files``) and fed each call's datagrams as rows of one
buffer (``receive_datagrams`` on ``alc.rows.Rows``, as a ``recvmmsg`` slab or a TESLA
arena hands them over).  Pure engine time: no socket, no disk.

    python bench/ab_alc_bulk.py e8768e0 [rounds] [MiB]
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import tempfile
import time
from types import ModuleType
from typing import Any

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import alc.receiver as new_rx  # noqa: E402
import alc.sender as new_tx  # noqa: E402
from alc.rows import Rows  # noqa: E402

PER_CALL = 256


def load_old(rev: str, path: str, name: str) -> ModuleType:
    src = subprocess.check_output(["git", "show", f"{rev}:{path}"], cwd=ROOT)
    with tempfile.NamedTemporaryFile("wb", suffix=".py", delete=False) as f:
        f.write(src)
    spec = importlib.util.spec_from_file_location(name, f.name)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    os.unlink(f.name)
    return mod


def send(mod: ModuleType, data: bytes) -> tuple[float, list[list[bytes]]]:
    s = mod.AlcSender(mod.SenderConfig(tsi=1, rate_bps=None, max_datagrams_per_call=PER_CALL))
    s.add_bytes(data, "f.bin")
    calls: list[list[bytes]] = []
    t = time.perf_counter()
    while not s.done:
        calls.append([p for p, _ in s.datagrams_to_send(1.0)])
    return time.perf_counter() - t, calls


def receive(mod: ModuleType, calls: list[tuple[Any, Any, Any]], size: int) -> float:
    r = mod.AlcReceiver(mod.ReceiverConfig(tsi=1, stream_files=True))
    src = ("127.0.0.1", 1)
    got = 0
    t = time.perf_counter()
    for buf, starts, lens in calls:
        n = len(lens)
        r.receive_datagrams(Rows(buf, starts, lens), [src] * n, np.full(n, 1.0))
        while (e := r.next_event()) is not None:
            got += len(getattr(e, "data", b"") or b"") if type(e).__name__ == "BlockReceived" else 0
    dt = time.perf_counter() - t
    assert got == size, (got, size)
    return dt


def main() -> None:
    rev = sys.argv[1] if len(sys.argv) > 1 else "HEAD"
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 9
    size = int(sys.argv[3] if len(sys.argv) > 3 else 20) << 20
    old_tx = load_old(rev, "alc/sender.py", "old_sender")
    old_rx = load_old(rev, "alc/receiver.py", "old_receiver")
    data = os.urandom(size)
    calls = []
    for part in send(new_tx, data)[1]:
        lens = np.array([len(p) for p in part], dtype=np.int64)
        calls.append((np.frombuffer(b"".join(part), dtype=np.uint8), np.cumsum(lens) - lens, lens))
    res: dict[str, list[float]] = {k: [] for k in ("send old", "send new", "receive old", "receive new")}
    for r in range(rounds):
        pairs = (("old", old_tx, old_rx), ("new", new_tx, new_rx))
        for name, tx, rx in pairs if r % 2 else pairs[::-1]:
            res["send " + name].append(send(tx, data)[0])
            res["receive " + name].append(receive(rx, calls, size))
    for what in ("send", "receive"):
        o, n = min(res[what + " old"]), min(res[what + " new"])
        print(f"{what:8} {size >> 20} MiB: old ({rev}) {o * 1e3:7.2f} ms  new {n * 1e3:7.2f} ms  "
              f"new/old {n / o:.3f}", flush=True)


if __name__ == "__main__":
    main()
