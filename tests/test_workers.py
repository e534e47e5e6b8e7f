"""tesla.workers: MACs computed by worker processes from shared memory equal the in-process
kernel, chunking over the shared blocks works, and a receiver using the pool decides
exactly as the reference."""

from __future__ import annotations

import os
import random

import numpy as np
import pytest

import tesla.fastpath as fp
from tesla.benchcmd import make_sender, make_stream
from tesla.fastpath import FastTeslaReceiver, PackedBatch, mac_rows
from tesla.verifier import TeslaReceiver
from tesla.workers import WorkerPool


@pytest.fixture(scope="module")
def pool() -> WorkerPool:
    with WorkerPool(2, capacity=1 << 16, max_rows=64) as p:
        yield p  # type: ignore[misc]


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
    monkeypatch.setattr(fp, "POOL_MIN_PACKETS", 1)
    from tesla import benchcmd

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
    ref = TeslaReceiver(pub, max_clock_error_ms=20)
    fast = FastTeslaReceiver(pub, max_clock_error_ms=20, pool=pool)
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
