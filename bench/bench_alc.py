"""pytest-benchmark: ALC/FLUTE packet encode and decode rates.

    python -m pytest bench/bench_alc.py --benchmark-enable

Each benchmark handles one 2 MB object (1429 packets of 1400-octet symbols), so
packets/s = 1429 / mean time.  ``bench/compare_flute.py`` puts the same figures beside
flute-alc's.
"""

from __future__ import annotations

import os
import time

import pytest

from alc.receiver import AlcReceiver, FileReceived, ReceiverConfig, parse_lct
from alc.sender import AlcSender, SenderConfig

DATA = os.urandom(2_000_000)
NOW = time.time()


def encode(fec: str = "nocode", ratio: float = 0.0) -> list[bytes]:
    s = AlcSender(SenderConfig(tsi=1, rate_bps=None, fec=fec, repair_ratio=ratio))
    s.add_bytes(DATA, "bench.bin")
    return s.all_packets(NOW)


def decode(pkts: list[bytes], loss_every: int = 0) -> bytes:
    rx = AlcReceiver(ReceiverConfig(tsi=1))
    src = ("127.0.0.1", 1)
    for i, p in enumerate(pkts):
        if loss_every and i % loss_every == loss_every - 1 and parse_lct(p).toi:
            continue
        rx.receive_datagram(p, src, NOW)
    while (e := rx.next_event()) is not None:
        if isinstance(e, FileReceived):
            return e.data
    raise AssertionError(rx.stats)


@pytest.mark.parametrize("fec,ratio", [("nocode", 0.0), ("rs", 0.2), ("raptorq", 0.2)])
def test_encode(benchmark, fec: str, ratio: float) -> None:  # type: ignore[no-untyped-def]
    pkts = benchmark(encode, fec, ratio)
    benchmark.extra_info["packets"] = len(pkts)


@pytest.mark.parametrize("fec,ratio,loss_every", [("nocode", 0.0, 0), ("rs", 0.2, 0), ("rs", 0.2, 10),
                                                  ("raptorq", 0.2, 10)])
def test_decode(benchmark, fec: str, ratio: float, loss_every: int) -> None:  # type: ignore[no-untyped-def]
    pkts = encode(fec, ratio)
    out = benchmark(decode, pkts, loss_every)
    assert out == DATA
    benchmark.extra_info["packets"] = len(pkts)


def test_parse_lct_header(benchmark) -> None:  # type: ignore[no-untyped-def]
    pkt = encode()[5]
    h = benchmark(parse_lct, pkt)
    assert h.tsi == 1
