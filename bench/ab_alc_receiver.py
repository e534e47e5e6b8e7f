"""A/B of the ALC receiver's hot path: this tree's ``alc/receiver.py`` against the one of a
git revision, in one process, alternated round by round (best of N), on the packets of
``bench/bench_alc.py`` (one 2 MB object).  Ratios from one run are what to compare on a
loaded host (see README.md).

    python bench/ab_alc_receiver.py de74168 [rounds]

Each case runs twice: datagram by datagram (``receive_datagram``) and through the batch
entry as a driver feeds it (``receive_datagrams`` on 256-datagram rows of one buffer, as
a ``recvmmsg`` slab or a TESLA arena hands them over: ``alc.rows.Rows``).
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import tempfile
import time
from types import ModuleType

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "bench"))

import numpy as np  # noqa: E402
from bench_alc import DATA, NOW, encode  # noqa: E402

import alc.receiver as new  # noqa: E402
from alc.receiver import parse_lct  # noqa: E402
from alc.rows import Rows  # noqa: E402

BATCH = 256


def load_old(rev: str) -> ModuleType:
    src = subprocess.check_output(["git", "show", f"{rev}:alc/receiver.py"], cwd=ROOT)
    with tempfile.NamedTemporaryFile("wb", suffix=".py", delete=False) as f:
        f.write(src)
    spec = importlib.util.spec_from_file_location("old_receiver", f.name)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["old_receiver"] = mod
    spec.loader.exec_module(mod)
    os.unlink(f.name)
    return mod


def run(mod: ModuleType, pkts: list[bytes], loss_every: int, zero_copy: bool, batch: bool) -> float:
    rx = mod.AlcReceiver(mod.ReceiverConfig(tsi=1, zero_copy=zero_copy))
    src = ("127.0.0.1", 1)
    kept = [
        p for i, p in enumerate(pkts)
        if not (loss_every and i % loss_every == loss_every - 1 and parse_lct(p).toi)
    ]
    if batch:  # rows of one buffer per batch, made before the clock starts
        parts = []
        for k in range(0, len(kept), BATCH):
            part = kept[k : k + BATCH]
            lens = np.array([len(p) for p in part], dtype=np.int64)
            buf = np.frombuffer(b"".join(part), dtype=np.uint8)
            parts.append((buf, np.cumsum(lens) - lens, lens))
        t = time.perf_counter()
        for buf, starts, lens in parts:
            n = len(lens)
            rx.receive_datagrams(Rows(buf, starts, lens), [src] * n, np.full(n, NOW))
    else:
        t = time.perf_counter()
        for p in kept:
            rx.receive_datagram(p, src, NOW)
    dt = time.perf_counter() - t
    assert any(getattr(e, "data", None) == DATA for e in iter(rx.next_event, None))
    return dt


def main() -> None:
    old = load_old(sys.argv[1] if len(sys.argv) > 1 else "HEAD")
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 31
    for fec, ratio, loss, zc in [("nocode", 0.0, 0, False), ("nocode", 0.0, 0, True),
                                 ("rs", 0.2, 0, False), ("rs", 0.2, 10, False),
                                 ("raptorq", 0.2, 10, False)]:
        pkts = encode(fec, ratio)
        for batch in (False, True):
            res: dict[str, list[float]] = {"old": [], "new": []}
            for r in range(rounds):
                order = (("old", old), ("new", new)) if r % 2 else (("new", new), ("old", old))
                for name, mod in order:
                    res[name].append(run(mod, pkts, loss, zc, batch))
            o, n = min(res["old"]), min(res["new"])
            entry = "batch" if batch else "1 by 1"
            print(f"{fec:8} repair {ratio} loss 1/{loss or '-'} zero_copy={zc!s:5} {entry:6}: "
                  f"old {o * 1e3:6.2f} ms  new {n * 1e3:6.2f} ms  new/old {n / o:.3f}", flush=True)


if __name__ == "__main__":
    main()
