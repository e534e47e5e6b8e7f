"""FEC throughput (pytest-benchmark).

Run:  pytest bench/bench_fec.py --benchmark-enable -q -p no:cacheprovider
(the project's pytest addopts disable benchmarks by default; --benchmark-enable turns them on)

Reed-Solomon: k = 64 source + 16 repair symbols of 1400 bytes (one block, 89.6 KB of source)
over GF(2^8) (ID 5) and GF(2^16) (ID 2); encode = all 16 repair symbols, decode = rebuild
16 erased source symbols from 48 sources + 16 repairs.  RaptorQ (ID 6): same block size.
Throughput in MB/s of source data = 89600 / mean seconds / 1e6.
"""

from __future__ import annotations

import os

import pytest

from alc.fec import OTI, get_scheme

K, R, E = 64, 16, 1400

CASES = {
    "rs8-rfc5510": (OTI(5, K * E, E, K, K + R), "rfc5510"),
    "rs8-nrl": (OTI(5, K * E, E, K, K + R), "nrl"),
    "rs16-rfc5510": (OTI(2, K * E, E, K, K + R, m=16), "rfc5510"),
}


def _setup(name: str):  # type: ignore[no-untyped-def]
    oti, matrix = CASES[name]
    s = get_scheme(oti, rs_matrix=matrix)
    src = [os.urandom(E) for _ in range(K)]
    return s, src


@pytest.mark.parametrize("name", list(CASES))
def test_rs_encode(benchmark, name: str) -> None:  # type: ignore[no-untyped-def]
    s, src = _setup(name)
    rep = benchmark(s.repair_symbols, 0, src, R)
    assert len(rep) == R
    benchmark.extra_info["MB/s"] = K * E / benchmark.stats.stats.mean / 1e6


@pytest.mark.parametrize("name", list(CASES))
def test_rs_decode(benchmark, name: str) -> None:  # type: ignore[no-untyped-def]
    s, src = _setup(name)
    rep = s.repair_symbols(0, src, R)

    def run() -> list[bytes]:
        d = s.block_decoder(0)
        for esi, sym in rep:
            d.add(esi, sym)
        for esi in range(R, K):
            d.add(esi, src[esi])
        return d.decode()

    assert benchmark(run) == src
    benchmark.extra_info["MB/s"] = K * E / benchmark.stats.stats.mean / 1e6


def test_raptorq_encode(benchmark) -> None:  # type: ignore[no-untyped-def]
    s = get_scheme(OTI(6, K * E, E, 0))
    src = [os.urandom(E) for _ in range(K)]
    rep = benchmark(s.repair_symbols, 0, src, R)
    assert len(rep) == R
    benchmark.extra_info["MB/s"] = K * E / benchmark.stats.stats.mean / 1e6


def test_raptorq_decode(benchmark) -> None:  # type: ignore[no-untyped-def]
    s = get_scheme(OTI(6, K * E, E, 0))
    src = [os.urandom(E) for _ in range(K)]
    rep = s.repair_symbols(0, src, R + 4)  # RaptorQ: K received symbols fail ~1%; add overhead

    def run() -> list[bytes]:
        d = s.block_decoder(0)
        for esi, sym in rep:
            d.add(esi, sym)
        for esi in range(R, K):
            if d.add(esi, src[esi]):
                break
        return d.decode()

    assert benchmark(run) == src
    benchmark.extra_info["MB/s"] = K * E / benchmark.stats.stats.mean / 1e6
