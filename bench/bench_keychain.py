"""Key-chain benchmarks (issue 3): chain generation vs bare PRF calls, and time and peak
memory of each sender storage strategy.

    python bench/bench_keychain.py                 # N = 10^6, prints a table
    python bench/bench_keychain.py --n 100000 --repeat 1
    pytest bench/bench_keychain.py --benchmark-enable   # pytest-benchmark, N = 10^4
"""

from __future__ import annotations

import argparse
import gc
import hmac
import os
import sys
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cryptography.hazmat.primitives import hashes  # noqa: E402
from cryptography.hazmat.primitives.hmac import HMAC  # noqa: E402

from tesla.core.keychain import STRATEGIES, ChainStore, generate_chain  # noqa: E402


def bare_prf_loop(n: int, key: bytes) -> bytes:
    """n bare PRF calls F(k) = HMAC-SHA-256(k, 0x00), chained, nothing stored."""
    alg = hashes.SHA256()
    k = key
    for _ in range(n):
        h = HMAC(k, alg)
        h.update(b"\x00")
        k = h.finalize()
    return k


def bare_hmac_digest_loop(n: int, key: bytes) -> bytes:
    k = key
    digest = hmac.digest
    for _ in range(n):
        k = digest(k, b"\x00", "sha256")
    return k


def traverse(
    strategy: str,
    pk: bytes,
    n: int,
    d: int = 2,
    limit: int | None = None,
    store: ChainStore | None = None,
) -> int:
    """Build the store and fetch K_i then K_{i-d} for every i (the sender's pattern)."""
    s = store if store is not None else STRATEGIES[strategy](pk, n)
    last = n if limit is None else min(n, limit)
    for i in range(last + 1):
        s.key(i)
        if i >= d:
            s.key(i - d)
    return len(s.commitment)


def _best(fn, repeat: int) -> float:  # type: ignore[no-untyped-def]
    """Best-of-R CPU time of this process (time.process_time: other processes' load on a
    shared machine does not count, unlike wall time)."""
    best = float("inf")
    for _ in range(repeat):
        gc.collect()
        t = time.process_time()
        fn()
        best = min(best, time.process_time() - t)
    return best


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=1_000_000, help="chain length N")
    ap.add_argument("--repeat", type=int, default=3, help="best of R for the ratio")
    ap.add_argument(
        "--mem-keys",
        type=int,
        default=200_000,
        help="keys traversed under tracemalloc (peak is reached at setup / early)",
    )
    ap.add_argument(
        "--strategies",
        default="full,checkpoint,fractal",
        help="comma list of storage strategies to measure ('' = ratio only)",
    )
    a = ap.parse_args(argv)
    n = a.n
    pk = os.urandom(32)
    print(f"# key chain benchmark, HMAC-SHA-256, N = {n:,}, python {sys.version.split()[0]}")
    # interleave the two measurements so machine load hits both alike
    t_gen = t_bare = float("inf")
    for _ in range(a.repeat):
        t_bare = min(t_bare, _best(lambda: bare_prf_loop(n, pk), 1))
        t_gen = min(t_gen, _best(lambda: generate_chain(pk, n), 1))
    t_dig = _best(lambda: bare_hmac_digest_loop(n, pk), 1)
    print(f"bare PRF calls (cryptography HMAC): {t_bare:8.3f} s  ({t_bare / n * 1e6:.2f} us/call)")
    print(f"bare PRF calls (hmac.digest)     : {t_dig:8.3f} s  (for reference)")
    print(
        f"generate_chain (N keys, stored)  : {t_gen:8.3f} s  ratio {t_gen / t_bare:.3f} (target <= 1.2)"
    )
    print()
    print(
        f"{'strategy':<11} {'setup s':>8} {'traverse s':>10} {'us/key':>7} {'peak MiB':>9}"
        f"   (CPU s; K_i and K_(i-2) per i; peak = tracemalloc over setup + "
        f"{min(n, a.mem_keys):,} keys)"
    )
    for name in [x for x in a.strategies.split(",") if x]:
        gc.collect()
        t = time.process_time()
        store = STRATEGIES[name](pk, n)
        t_setup = time.process_time() - t
        t = time.process_time()
        traverse(name, pk, n, store=store)
        t_trav = time.process_time() - t
        del store
        gc.collect()
        tracemalloc.start()
        traverse(name, pk, n, limit=a.mem_keys)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        print(
            f"{name:<11} {t_setup:8.3f} {t_trav:10.3f} {t_trav / (n + 1) * 1e6:7.2f}"
            f" {peak / 2**20:9.2f}"
        )
    return 0


# ------------------------------------------------------------------ pytest-benchmark

BENCH_N = 10_000


def test_bench_bare_prf(benchmark) -> None:  # type: ignore[no-untyped-def]
    benchmark(bare_prf_loop, BENCH_N, b"k" * 32)


def test_bench_generate_chain(benchmark) -> None:  # type: ignore[no-untyped-def]
    keys = benchmark(generate_chain, b"k" * 32, BENCH_N)
    assert len(keys) == BENCH_N + 1


def test_bench_strategy_full(benchmark) -> None:  # type: ignore[no-untyped-def]
    benchmark(traverse, "full", b"k" * 32, BENCH_N)


def test_bench_strategy_checkpoint(benchmark) -> None:  # type: ignore[no-untyped-def]
    benchmark(traverse, "checkpoint", b"k" * 32, BENCH_N)


def test_bench_strategy_fractal(benchmark) -> None:  # type: ignore[no-untyped-def]
    benchmark(traverse, "fractal", b"k" * 32, BENCH_N)


if __name__ == "__main__":
    raise SystemExit(main())
