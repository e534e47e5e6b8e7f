"""pytest-benchmark: the high-rate TESLA pipeline pieces (issue 6).

    python -m pytest bench/bench_pipeline.py --benchmark-enable
    python -m pytest bench/bench_pipeline.py --benchmark-enable -k "1400 and sha256"

Each benchmark processes one prepared in-memory workload per round (generation is in
the setup, not timed); ``extra_info["packets"]`` gives the count so ns/packet =
mean / packets.  The figures with ratios to OpenSSL are printed by
``tesla-mcast bench`` (see bench/README.md); these are for tracking regressions.
"""

from __future__ import annotations

import os
import random
import socket
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from alc.mmsg import Slab, recv_batch, send_batch  # noqa: E402
from tesla.cli.bench import (  # noqa: E402
    PROFILES,
    disclose_every_for,
    make_receiver,
    make_sender,
    make_stream,
    warmed_sender,
)
from tesla.mac.batch import PackedBatch, mac_rows, sign_batch  # noqa: E402

SIZES = [64, 1400]
N = 5000


@pytest.fixture(scope="module", params=[(h, s) for h in PROFILES for s in SIZES], ids=str)
def stream(request: Any) -> tuple[str, int, list[tuple[float, bytes]]]:
    hname, size = request.param
    s = make_sender(PROFILES[hname], disclose_every=disclose_every_for(size))
    return hname, size, make_stream(s, 2, N // 2, size)


@pytest.mark.parametrize("kernel", ["compiled", "py-copy"])
def test_mac_kernel(benchmark: Any, stream: Any, kernel: str) -> None:
    """``mac_rows`` over a packed buffer: the compiled loop (tesla.mac.kernel) or the
    keyed-once ``cryptography`` copy loop (the pure-Python per-packet floor)."""
    from tesla.mac import kernel as mackernel

    hname, size, st = stream
    pb = PackedBatch([b for _, b in st])
    key = os.urandom(32)
    mackernel.set_enabled(kernel == "compiled")
    try:
        benchmark(mac_rows, pb.buf, pb.starts, pb.lens, key, PROFILES[hname])
    finally:
        mackernel.set_enabled(True)
    benchmark.extra_info["packets"] = pb.n


def test_mac_arena(benchmark: Any, stream: Any) -> None:
    """The receiver's MAC call over one interval's arena (MAC field read as zeros), as
    ``TeslaReceiver._authenticate`` makes it."""
    from tesla.core.receiver import HASH_NAME, mac_arena

    hname, size, st = stream
    pb = PackedBatch([b for _, b in st])
    n = pb.n
    moffs = np.full(n, 24, dtype=np.int64)
    goffs = np.full(n, -1, dtype=np.int64)
    km = 10 if hname == "sha1" else 16
    key = os.urandom(32)
    benchmark(mac_arena, HASH_NAME[PROFILES[hname]], key, pb.arr, pb.starts, pb.lens, moffs, km,
              goffs, 4)
    benchmark.extra_info["packets"] = n


def test_receiver_fast(benchmark: Any, stream: Any) -> None:
    """TeslaReceiver.receive_batch over the stream in 1024-packet batches, all authenticated."""
    _, _, st = stream
    pkts = [b for _, b in st]
    times = np.array([a for a, _ in st])

    def run() -> int:
        rx = make_receiver()
        for k in range(0, len(pkts), 1024):
            rx.receive_batch(pkts[k : k + 1024], times[k : k + 1024])
        return len(rx.pop_authenticated())

    acc = benchmark(run)
    assert acc >= N
    benchmark.extra_info["packets"] = acc


def test_receiver_reference(benchmark: Any, stream: Any) -> None:
    """TeslaReceiver.receive (the per-datagram entry) per packet, for comparison."""
    _, _, st = stream

    def run() -> int:
        rx = make_receiver(fast=False)
        r = rx.receive
        for a, b in st:
            r(b, a)
        return len(rx.pop_authenticated())

    acc = benchmark(run)
    assert acc >= N
    benchmark.extra_info["packets"] = acc


@pytest.mark.parametrize("size", SIZES)
def test_sender_sign_batch(benchmark: Any, size: int) -> None:
    """sign_batch of 1024 datagrams into one packed buffer."""
    s, raws, now = warmed_sender(2, size, 1024, random.Random(1))  # key chain built outside
    benchmark(sign_batch, s, raws, now)
    benchmark.extra_info["packets"] = len(raws)


@pytest.mark.parametrize("size", SIZES)
def test_sender_wrap(benchmark: Any, size: int) -> None:
    """Reference TeslaSender.wrap per datagram, for comparison."""
    s, raws, now = warmed_sender(2, size, 1024, random.Random(1))  # key chain built outside

    def run() -> None:
        w = s.wrap
        for p in raws:
            w(p, now)

    benchmark(run)
    benchmark.extra_info["packets"] = len(raws)


def test_loopback_mmsg_round_trip(benchmark: Any) -> None:
    """sendmmsg + recvmmsg of 256 datagrams of 1400 B over 127.0.0.1."""
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    dst = rx.getsockname()
    data = [os.urandom(1400)] * 256
    slab = Slab(256, 1500)

    def run() -> int:
        send_batch(tx, data, dst)
        got = 0
        while got < 256:
            n = recv_batch(rx, slab, block=True)
            if n == 0:
                break
            got += n
        return got

    try:
        assert benchmark(run) == 256
        benchmark.extra_info["packets"] = 256
    finally:
        rx.close()
        tx.close()
