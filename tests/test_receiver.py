"""tesla.core.receiver: the MAC adapter over interval arenas, the arena rule, the drop-reason
enum and the event dataclasses."""

from __future__ import annotations

import hashlib
import hmac
import random
from typing import Any

import numpy as np
import pytest

from tesla.cli.bench import make_sender, make_stream
from tesla.core.receiver import (
    DROP_REASONS,
    Arena,
    Bootstrapped,
    Dropped,
    DropReason,
    TeslaReceiver,
    TimeSynchronized,
    mac_arena,
)
from tesla.mac import kernel as mackernel


def _pub() -> Any:
    from tesla.cli import bench as benchcmd

    return benchcmd._key().public_key()


@pytest.mark.parametrize("kernel", [True, False])
@pytest.mark.parametrize("hash_name,mac_len", [("sha256", 16), ("sha1", 10), ("sha512", 32)])
def test_mac_arena_is_hmac_with_fields_read_as_zeros(
    kernel: bool, hash_name: str, mac_len: int
) -> None:
    """Rows anywhere in the arena (gaps, any order), MAC and Group MAC fields at random
    offsets, some rows without Group MAC: the tags are HMAC over the row with those
    fields zero (RFC 5776 §3.3.1), truncated; the arena is left unchanged."""
    rng = random.Random(hash_name)
    n = 40
    lens = [rng.randrange(40, 300) for _ in range(n)]
    starts, pos = [], 7
    for size in lens:
        starts.append(pos)
        pos += size + rng.choice([0, 0, 3, 17])
    order = list(range(n))
    rng.shuffle(order)
    arena = np.frombuffer(bytearray(rng.randbytes(pos + 5)), dtype=np.uint8)
    before = arena.copy()
    st = np.array([starts[k] for k in order], dtype=np.int64)
    ln = np.array([lens[k] for k in order], dtype=np.int64)
    mo = np.array([rng.randrange(0, x - mac_len - 4) for x in ln.tolist()], dtype=np.int64)
    go = np.array(
        [-1 if rng.random() < 0.3 else m + mac_len for m in mo.tolist()], dtype=np.int64
    )
    key = rng.randbytes(32)
    mackernel.set_enabled(kernel)
    try:
        got = mac_arena(hash_name, key, arena, st, ln, mo, mac_len, go, 4)
    finally:
        mackernel.set_enabled(True)
    assert np.array_equal(arena, before)
    for k in range(n):
        row = bytearray(before[st[k] : st[k] + ln[k]].tobytes())
        row[mo[k] : mo[k] + mac_len] = bytes(mac_len)
        if go[k] >= 0:
            row[go[k] : go[k] + 4] = bytes(4)
        want = hmac.new(key, bytes(row), getattr(hashlib, hash_name)).digest()[:mac_len]
        assert got[k].tobytes() == want


def test_mac_arena_evenly_spaced_rows() -> None:
    """One datagram length and layout (the strided-field case) gives the same tags as
    the general case."""
    rng = random.Random(2)
    n, L = 50, 120
    arena = np.frombuffer(bytearray(rng.randbytes(n * L)), dtype=np.uint8)
    st = np.arange(0, n * L, L, dtype=np.int64)
    ln = np.full(n, L, dtype=np.int64)
    mo = np.full(n, 24, dtype=np.int64)
    go = np.full(n, 60, dtype=np.int64)
    key = bytes(32)
    even = mac_arena("sha256", key, arena, st, ln, mo, 16, go, 4)
    perm = np.arange(n)[::-1].copy()  # not evenly spaced in this order: fancy indexing
    odd = mac_arena("sha256", key, arena, st[perm], ln[perm], mo[perm], 16, go[perm], 4)
    assert np.array_equal(even, odd[perm])


def test_per_datagram_entry_is_the_batch_entry() -> None:
    """receive(d, t, m) for each datagram and receive_batch of the whole stream with one
    time per datagram: the same releases and counters."""
    snd = make_sender(2, protocol="norm", n_chain=9, disclose_every=3)
    stream = make_stream(snd, 10, 60, 300)
    a = TeslaReceiver(_pub(), protocol="norm", max_clock_error_ms=20)
    b = TeslaReceiver(_pub(), protocol="norm", max_clock_error_ms=20)
    for k, (t, d) in enumerate(stream):
        a.receive(d, t, k)
    b.receive_batch([d for _, d in stream], [t for t, _ in stream], list(range(len(stream))))
    assert a.pop_authenticated() == b.pop_authenticated()
    assert a.stats == b.stats
    assert a.stats["accepted"] > 500
    assert a.lane_packets == 0 and b.lane_packets > 500


@pytest.mark.parametrize("bound", [40_000, 300_000, 3_000_000])
def test_arena_capacity_within_the_buffer_bound(bound: int) -> None:
    """Arena rule: the capacity of all arenas and spares never exceeds
    max_buffered_bytes (a tight bound with evictions, a middle one, a loose one), and the
    arenas hold datagrams as they were sent (cut back by their index)."""
    rng = random.Random(bound)
    snd = make_sender(2, n_chain=9)
    rx = TeslaReceiver(_pub(), max_clock_error_ms=20, max_buffered_bytes=bound)
    stream = make_stream(snd, 12, 40, 1400, spread=1.0)
    sent = {d for _, d in stream}
    top = 0
    k = 0
    while k < len(stream):
        m = rng.choice([1, 7, 300])
        ch = stream[k : k + m]
        rx.receive_batch([d for _, d in ch], [t for t, _ in ch])
        top = max(top, rx.arena_bytes)
        assert rx.arena_bytes <= bound
        for ar in rx._pending.values():
            assert set(ar.cut(None)) <= sent
        k += m
    assert top > 0
    if bound == 40_000:  # newer intervals evict older ones before their keys come
        assert rx.stats["drop.evicted"] > 100
    else:
        assert rx.stats["accepted"] > 100


def test_drop_reasons_are_one_enum_and_events_dataclasses() -> None:
    assert DROP_REASONS == tuple(r.value for r in DropReason)
    assert "bad_mac" in DROP_REASONS and DropReason.BAD_MAC == "bad_mac"
    snd = make_sender(2)
    stream = make_stream(snd, 4, 10, 200)
    rx = TeslaReceiver(_pub(), max_clock_error_ms=20)
    bad = bytearray(stream[5][1])
    bad[-1] ^= 1
    rx.receive(stream[5][1], stream[5][0])  # before the bootstrap
    for t, d in stream:
        rx.receive(d, t)
    rx.receive(bytes(bad), stream[5][0])
    evs = []
    while (e := rx.next_event()) is not None:
        evs.append(e)
    kinds = {type(e) for e in evs}
    assert {Bootstrapped, TimeSynchronized, Dropped} <= kinds
    drops = [e for e in evs if isinstance(e, Dropped)]
    assert all(isinstance(e.reason, DropReason) for e in drops)
    assert sum(e.count for e in drops if e.reason is DropReason.NO_BOOTSTRAP) == 1
    assert rx.stats["drop.no_bootstrap"] == 1


def test_arena_keep_tail_moves_kept_rows_back_to_back() -> None:
    """The per-position cap's compaction of an arena (tesla/core/floodguard.py): rows copied
    at a stride (a recvmmsg slab: gaps between them) and one by one, Type 3 commitments
    on some; keeping a subset of the tail leaves the head untouched, the kept rows'
    octets, fields, metas and commitments in order, and the storage in use shrunk."""
    rng = random.Random(12)
    ar = Arena(0.0, 1.0, np.empty(1 << 16, np.uint8))
    pk = [rng.randbytes(rng.randrange(30, 90)) for _ in range(12)]
    for k in range(4):
        ar.add(pk[k], 8 + k, -1 if k % 2 else 20, ("m", k))
    w = 96
    block = np.zeros((8, w), np.uint8)
    for j, d in enumerate(pk[4:]):
        block[j, : len(d)] = np.frombuffer(d, np.uint8)
    lens = np.array([len(d) for d in pk[4:]], dtype=np.int64)
    ar.add_rows(block, lens, np.arange(4, 12, dtype=np.int64) + 8, [("m", k) for k in range(4, 12)])
    ar.commits.extend([(1, b"c1"), (np.array([5, 6, 9]), b"c2"), (7, b"c3")])
    used = ar.used
    keep = [2, 3, 6, 8, 9, 11]
    ar.keep_tail(2, keep)
    kept = [0, 1, *keep]
    assert len(ar) == 8
    assert ar.cut(None) == [pk[k] for k in kept]
    rows = ar.rows()
    assert rows[:, 2].tolist() == [8 + k for k in kept]
    assert rows[:, 3].tolist() == [20, -1, 20, -1, -1, -1, -1, -1]
    assert ar.metas == [("m", k) for k in kept]
    assert ar.used == sum(len(pk[k]) for k in kept) < used
    assert rows[:, 0].tolist() == np.cumsum([0] + [len(pk[k]) for k in kept[:-1]]).tolist()
    c = [(r if isinstance(r, int) else r.tolist(), v) for r, v in ar.commits]
    assert c == [(1, b"c1"), ([4, 6], b"c2")]  # row 5 and row 7 (c3) dropped


def test_growing_arena_moves_into_the_released_spare(monkeypatch: pytest.MonkeyPatch) -> None:
    """Intervals near a third of the buffer bound: the next interval's arena begins small
    (the bound is nearly taken by the two before it) and grows in place (``mremap``) or,
    where that cannot be done, moves into the released storage instead of doubling by
    copies (the octets copied by arena growth stay a small fraction of those
    buffered); decisions as before."""
    import tesla.core.receiver as tr

    monkeypatch.setattr(tr, "ARENA_MIN", 64 << 10)
    copied = [0]
    real = tr.Arena.resize

    def counted(self: Any, capacity: int, *storage: Any) -> None:
        copied[0] += self.used
        real(self, capacity, *storage)

    monkeypatch.setattr(tr.Arena, "resize", counted)
    snd = make_sender(2, n_chain=9)
    stream = make_stream(snd, 12, 300, 1400, spread=0.9)
    rx = TeslaReceiver(_pub(), max_clock_error_ms=20, max_buffered_bytes=1_200_000)
    # released datagrams are charged until popped: popped after every batch of 64 (an
    # interval's copies, its successor and a few of the next fit under the bound)
    for k in range(0, len(stream), 64):
        ch = stream[k : k + 64]
        rx.receive_batch([d for _, d in ch], [t for t, _ in ch])
        rx.pop_authenticated()
    acc = rx.stats["accepted"]
    assert acc > 3000 and rx.stats["drop.evicted"] == 0
    # before: each interval doubled twice and was compacted (~1.5 x its octets copied)
    assert copied[0] < 0.7 * acc * 1400, (copied[0], acc * 1400)
