"""FEC throughput (pytest-benchmark).

Run:  pytest bench/bench_fec.py --benchmark-enable -q -p no:cacheprovider
(the project's pytest addopts disable benchmarks by default; --benchmark-enable turns them on)

Reed-Solomon: one block of k source symbols of 1400 bytes and r repair symbols:
k = 64, r = 16 over GF(2^8) (ID 5) and GF(2^16) (ID 2), and the NORM large-block case
k = 400, r = 32 over GF(2^16) (NRL matrix, what NormSender uses for block 400 parity 32).
encode = all r repair symbols (steady state: encoder tables cached after the first block);
first_encode = the same from cold caches (GF tables, code, encoder tables: what the first
block of a new block size costs); decode = rebuild r erased source symbols from k - r
sources + r repairs.  RaptorQ (ID 6): k = 64.
Throughput in MB/s of source data = k * 1400 / mean seconds / 1e6.
"""

from __future__ import annotations

import os

import pytest

from alc.fec import OTI, get_scheme, gf

K, R, E = 64, 16, 1400

#: name -> (OTI, rs_matrix, k, r)
CASES = {
    "rs8-rfc5510": (OTI(5, K * E, E, K, K + R), "rfc5510", K, R),
    "rs8-nrl": (OTI(5, K * E, E, K, K + R), "nrl", K, R),
    "rs16-rfc5510": (OTI(2, K * E, E, K, K + R, m=16), "rfc5510", K, R),
    "rs16-nrl-k400-r32": (OTI(2, 400 * E, E, 400, 432, m=16), "nrl", 400, 32),
}


def _setup(name: str):  # type: ignore[no-untyped-def]
    oti, matrix, k, r = CASES[name]
    s = get_scheme(oti, rs_matrix=matrix)
    src = [os.urandom(E) for _ in range(k)]
    return s, src, k, r


def _cold() -> None:
    """Forget every cached RS structure (GF tables, codes, encoder tables)."""
    gf.field.cache_clear()
    gf.rs_code.cache_clear()
    gf._TABLES.clear()


@pytest.mark.parametrize("name", list(CASES))
def test_rs_encode(benchmark, name: str) -> None:  # type: ignore[no-untyped-def]
    s, src, k, r = _setup(name)
    rep = benchmark(s.repair_symbols, 0, src, r)
    assert len(rep) == r
    benchmark.extra_info["MB/s"] = k * E / benchmark.stats.stats.mean / 1e6


@pytest.mark.parametrize("name", list(CASES))
def test_rs_first_encode(benchmark, name: str) -> None:  # type: ignore[no-untyped-def]
    oti, matrix, k, r = CASES[name]
    src = [os.urandom(E) for _ in range(k)]

    def run() -> list[tuple[int, bytes]]:
        return get_scheme(oti, rs_matrix=matrix).repair_symbols(0, src, r)

    rep = benchmark.pedantic(run, setup=_cold, rounds=5, iterations=1)
    assert len(rep) == r
    benchmark.extra_info["MB/s"] = k * E / benchmark.stats.stats.mean / 1e6


@pytest.mark.parametrize("name", list(CASES))
def test_rs_decode(benchmark, name: str) -> None:  # type: ignore[no-untyped-def]
    s, src, k, r = _setup(name)
    rep = s.repair_symbols(0, src, r)

    def run() -> list[bytes]:
        d = s.block_decoder(0)
        for esi, sym in rep:
            d.add(esi, sym)
        for esi in range(r, k):
            d.add(esi, src[esi])
        return d.decode()

    assert benchmark(run) == src
    benchmark.extra_info["MB/s"] = k * E / benchmark.stats.stats.mean / 1e6


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
