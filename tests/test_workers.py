"""tesla.mac.workers: MACs computed by worker processes from shared memory equal the in-process
kernel, chunking over the shared blocks works, and a receiver using the pool decides
exactly as the reference."""

from __future__ import annotations

import os
import random
from collections.abc import Iterator

import numpy as np
import pytest
from tesla_oracle import OracleReceiver

import tesla.core.receiver as tr
from tesla.cli.bench import make_sender, make_stream
from tesla.core.receiver import TeslaReceiver
from tesla.mac.batch import PackedBatch, mac_rows
from tesla.mac.workers import WorkerPool


@pytest.fixture(scope="module")
def pool() -> Iterator[WorkerPool]:
    with WorkerPool(2, capacity=1 << 16, max_rows=64) as p:
        yield p


@pytest.mark.parametrize("mac_id,km", [(2, 16), (0, 10), (4, 32)])
def test_pool_macs_equal_in_process(pool: WorkerPool, mac_id: int, km: int) -> None:
    rng = random.Random(mac_id)
    pkts = [rng.randbytes(rng.randrange(1, 1500)) for _ in range(300)]  # > capacity: chunks
    pb = PackedBatch(pkts)
    key = os.urandom(32)
    got = pool.mac_packed(pb.arr, pb.starts, pb.lens, key, mac_id, km)
    raw = mac_rows(pb.buf, pb.starts, pb.lens, key, mac_id)
    hl = len(raw) // len(pkts)
    want = np.frombuffer(raw, np.uint8).reshape(len(pkts), hl)[:, :km]
    assert np.array_equal(got, want)


def test_pool_rejects_datagram_larger_than_capacity(pool: WorkerPool) -> None:
    pb = PackedBatch([bytes(70_000)])
    with pytest.raises(ValueError):
        pool.mac_packed(pb.arr, pb.starts, pb.lens, b"k" * 32, 2, 16)


def test_receiver_with_pool_same_decisions(
    pool: WorkerPool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tr, "POOL_MIN_PACKETS", 1)
    from tesla.cli import bench as benchcmd

    pub = benchcmd._key().public_key()
    snd = make_sender(2)
    stream = make_stream(snd, 10, 80, 700)
    rng = random.Random(4)
    mixed = []
    for a, b in stream:
        if rng.random() < 0.05 and len(b) > 100:
            bb = bytearray(b)
            bb[rng.randrange(len(bb))] ^= 0x80
            b = bytes(bb)
        mixed.append((a, b))
    ref = OracleReceiver(pub, max_clock_error_ms=20)
    fast = TeslaReceiver(pub, max_clock_error_ms=20, pool=pool)
    for a, b in mixed:
        ref.receive(b, a)
    for k in range(0, len(mixed), 128):
        ch = mixed[k : k + 128]
        fast.receive_batch([b for _, b in ch], np.array([a for a, _ in ch]))
    assert ref.pop_authenticated() == fast.pop_authenticated()
    for key in ("accepted", "drop.bad_mac", "drop.malformed", "drop.bad_key"):
        assert ref.stats[key] == fast.stats[key]
    assert ref.stats["drop.bad_mac"] > 0
    assert pool.batches > 0


def test_close_is_idempotent() -> None:
    p = WorkerPool(1, capacity=4096, max_rows=8)
    p.close()
    p.close()


@pytest.mark.parametrize("seed", [1, 2])
def test_pool_same_decisions_on_random_mixes(
    pool: WorkerPool, monkeypatch: pytest.MonkeyPatch, seed: int
) -> None:
    """Intervals whose MACs the worker processes compute over the arena decide and release
    exactly as the oracle, with forged, unsafe, replayed, truncated datagrams and chain
    switches."""
    from test_fastpath import _compare, _mutate, _pub

    monkeypatch.setattr(tr, "POOL_MIN_PACKETS", 1)
    rng = random.Random(seed)
    snd = make_sender(2, n_chain=9 if seed == 1 else 100, disclose_every=rng.choice([1, 3]))
    stream = make_stream(snd, 25, 40, rng.choice([120, 700]), seed=seed)
    pk = _mutate(stream, rng, snd.params.key_len)
    ref = OracleReceiver(_pub(), max_clock_error_ms=20)
    fast = TeslaReceiver(_pub(), max_clock_error_ms=20, pool=pool)
    for k, (a, b) in enumerate(pk):
        ref.receive(b, a, k)
    before = pool.batches
    k = 0
    while k < len(pk):
        m = rng.choice([1, 7, 64, 300])
        ch = pk[k : k + m]
        fast.receive_batch([b for _, b in ch], np.array([a for a, _ in ch]), list(range(k, k + m)))
        k += m
    assert ref.stats["accepted"] > 300
    _compare(ref, fast)
    assert pool.batches > before + 3


def test_ring_jobs_in_flight_wrap_and_fifo() -> None:
    """Several jobs in flight in a small ring: pack refuses when the ring is full,
    collecting the oldest frees room (the ring wraps), and every job's MAC fields and
    digests equal the in-process computation over the zeroed datagrams."""
    rng = random.Random(9)
    key = os.urandom(32)
    km = 16
    with WorkerPool(2, capacity=20_000, max_rows=40) as p:
        want: list[tuple[np.ndarray, np.ndarray]] = []
        jobs = []
        done = 0
        for _ in range(30):
            n = rng.randrange(1, 12)
            pkts = [rng.randbytes(rng.randrange(60, 1500)) for _ in range(n)]
            moffs = np.array([rng.randrange(0, 40) for _ in pkts], dtype=np.int64)
            goffs = np.array(
                [rng.choice([-1, 44]) if len(b) > 48 else -1 for b in pkts], dtype=np.int64
            )
            slot = p.pack(pkts, moffs, goffs)
            while slot is None:
                assert jobs, "an empty ring must take a batch that fits"
                tags, digs = jobs.pop(0).result()
                assert np.array_equal(tags, want[done][0])
                assert np.array_equal(digs, want[done][1])
                done += 1
                slot = p.pack(pkts, moffs, goffs)
            jobs.append(p.submit(slot, key, 2, km, main_share=rng.choice([0.0, 0.5])))
            zs = []
            for b, mo, go in zip(pkts, moffs.tolist(), goffs.tolist(), strict=True):
                z = bytearray(b)
                z[mo : mo + km] = bytes(km)
                if go >= 0:
                    z[go : go + 4] = bytes(4)
                zs.append(bytes(z))
            tg = np.array(
                [list(b[mo : mo + km]) for b, mo in zip(pkts, moffs.tolist(), strict=True)],
                np.uint8,
            )
            pz = PackedBatch(zs)
            raw = mac_rows(pz.buf, pz.starts, pz.lens, key, 2)
            dg = np.frombuffer(raw, np.uint8).reshape(n, 32)[:, :km]
            want.append((tg, dg))
        assert p.in_flight == len(jobs) >= 2
        with pytest.raises(RuntimeError):  # not the oldest
            jobs[-1].result()
        for j in jobs:
            tags, digs = j.result()
            assert np.array_equal(tags, want[done][0])
            assert np.array_equal(digs, want[done][1])
            done += 1
        assert done == 30 and p.in_flight == 0
