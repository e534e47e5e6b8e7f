"""The receiver's memory accounting (issue 12: RSS growth <= 1.2 x the accounted buffer).

Deterministic properties only; the RSS figures themselves are measured by ``tesla-mcast
bench`` (memory part, ``RSS growth / max_buffered_bytes``), not here:

* released datagrams are charged to the buffer until popped, charged before the arena
  they were cut from stops being charged (both are resident then), so the accounted peak
  is (d + 1) intervals plus the datagram disclosing the key (the stated formula);
* the storage of a released arena is given back (no resident page), and a pending
  arena's resident pages do not exceed its octets in use (+ one huge page);
* an arena grows in place (no copy, so never two copies resident), and falls back to a
  copy when a view of its storage is still held.
"""

from __future__ import annotations

import ctypes
import mmap
import sys
from typing import Any

import numpy as np
import pytest
from test_receiver import _pub

from tesla.cli.bench import make_sender, make_stream
from tesla.core.receiver import (
    PER_PACKET_OVERHEAD,
    REPLAY_ENTRY_OVERHEAD,
    Arena,
    TeslaReceiver,
    arena_storage,
    cold,
)
from tesla.core.receiver import _mapping as mapping_of

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="mincore, mremap")

HUGE = 2 << 20


def resident(storage: np.ndarray) -> int:
    """Resident octets of the pages under ``storage`` (``mincore``: adjacent mappings
    may share one entry of /proc/self/smaps)."""
    page = mmap.PAGESIZE
    addr = storage.ctypes.data
    lo = addr - addr % page
    n = -(-(addr + max(1, len(storage)) - lo) // page)
    vec = (ctypes.c_ubyte * n)()
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
    assert libc.mincore(lo, n * page, vec) == 0, ctypes.get_errno()
    return sum(v & 1 for v in vec) * page


def run(
    per: int, n_int: int, batch: int, check: Any = None, bound: int = 64 << 20
) -> TeslaReceiver:
    snd = make_sender(2)
    stream = make_stream(snd, n_int, per, 1400)
    rx = TeslaReceiver(_pub(), max_clock_error_ms=20, max_buffered_bytes=bound)
    for k in range(0, len(stream), batch):
        ch = stream[k : k + batch]
        rx.receive_batch([d for _, d in ch], [t for t, _ in ch])
        if check is not None:
            check(rx)
        before = rx.buffered_bytes
        pk = rx.pop_authenticated()
        # popping hands the copies over: exactly their charge leaves the buffer
        assert rx.buffered_bytes == before - sum(len(b) + PER_PACKET_OVERHEAD for b, _ in pk)
    return rx


def test_released_datagrams_are_charged_until_popped_and_peak_is_the_formula() -> None:
    per, d = 400, 2
    one = 1400 + PER_PACKET_OVERHEAD
    # d intervals buffered and the copies of the one released with them, plus the
    # datagram disclosing its key (buffered before the release): the stated formula
    formula = ((d + 1) * per + 1) * one
    rx = run(per, 5, 64)
    st = rx.stats
    assert st["accepted"] == 5 * per + 1 and st["drop.evicted"] == 0
    # with room to spare the replay memory (accepted tags) is charged on top
    replay = st["replay_bytes"]
    assert replay == 5 * (per * 16 + REPLAY_ENTRY_OVERHEAD) + 16 + REPLAY_ENTRY_OVERHEAD
    # and so are the warm pages kept for the next interval (within the bound)
    assert st["warm_bytes"] > 0
    assert formula < st["max_buffered_bytes"] <= 64 << 20
    # a bound of the formula itself: no datagram evicted, the replay memory yields
    rx = run(per, 5, 64, bound=formula)
    st = rx.stats
    assert st["accepted"] == 5 * per + 1 and st["drop.evicted"] == 0
    assert st["max_buffered_bytes"] == formula


@pytest.mark.parametrize("warm", [True, False])
def test_released_arena_storage_is_resident_only_when_charged(warm: bool) -> None:
    """A released arena's pages stay resident (a warm spare, and then in the arena that
    reuses it) only while charged to the buffer; when the bound has no room for them they
    are given back: a spare has no more resident pages than its charge, an arena no more
    than its octets in use (+ one huge page) or its charge."""
    seen = {"spares": 0, "arenas": 0, "warm": 0}

    def check(rx: TeslaReceiver) -> None:
        for buf in rx._spare:
            w = rx._warm.get(id(buf), (0, 0))[0]
            assert resident(buf) <= w, (resident(buf), w)
            seen["spares"] += 1
            seen["warm"] += w
        for ar in rx._pending.values():
            # octets in use rounded up to the page (a huge page for large storage)
            # (warm pages reused: charged as its datagrams + what is left of their charge)
            assert resident(ar.data) <= max(ar.used + HUGE, ar.nbytes + ar.warm), (ar.used, resident(ar.data))
            assert ar.used <= ar.nbytes
            seen["arenas"] += 1
            seen["warm"] += ar.warm
        total = sum(c for c, _ in rx._warm.values()) + sum(a.warm for a in rx._pending.values())
        assert rx.stats["warm_bytes"] == total

    one = 1400 + PER_PACKET_OVERHEAD
    bound = 64 << 20 if warm else ((2 + 1) * 3000 + 1) * one  # the formula, d = 2
    rx = run(3000, 5, 512, check, bound=bound)  # ~4 MiB per interval: huge pages
    assert seen["spares"] and seen["arenas"]
    # with room the pages stay warm; at the formula they yield to datagrams: none lost
    assert rx.stats["drop.evicted"] == 0 and rx.stats["max_buffered_bytes"] <= bound
    if warm:
        assert seen["warm"]


def test_warm_pages_are_given_back_before_a_datagram_is_evicted() -> None:
    """With warm spares charged, a tighter bound later (a burst) sheds them first: no
    datagram is evicted that would have fitted without them."""
    per, d = 3000, 2
    one = 1400 + PER_PACKET_OVERHEAD
    formula = ((d + 1) * per + 1) * one
    seen = {"shed": 0}

    def check(rx: TeslaReceiver) -> None:
        if rx.stats["warm_bytes"]:
            rx.max_buffered_bytes = formula  # the room the warm pages took is needed now
            seen["shed"] += 1

    rx = run(per, 5, 512, check, bound=64 << 20)
    assert seen["shed"] and rx.stats["drop.evicted"] == 0


def test_cold_gives_pages_back() -> None:
    buf = arena_storage(8 << 20)
    buf[:] = 7
    assert resident(buf) >= 8 << 20
    cold(buf)
    assert resident(buf) == 0 and not buf.any()


def test_arena_grows_in_place_without_a_copy(monkeypatch: pytest.MonkeyPatch) -> None:
    ar = Arena(0.0, 1.0, arena_storage(1 << 16))
    data = bytes(range(256)) * 200
    ar.add(data[:60000], 8, -1, None)
    mm = mapping_of(ar.data)

    def no_copy(*_: Any) -> None:
        raise AssertionError("copied")

    monkeypatch.setattr(Arena, "resize", no_copy)
    assert ar.remap(1 << 20)
    assert ar.capacity == 1 << 20 and mapping_of(ar.data) is mm
    ar.add(data[:51200], 8, -1, None)
    assert ar.cut(None) == [data[:60000], data[:51200]]
    # a view of the storage held elsewhere: no remap, the caller copies instead
    view = ar.data[:10]
    assert not ar.remap(4 << 20)
    assert ar.capacity == 1 << 20 and ar.cut(None) == [data[:60000], data[:51200]]
    del view


def _held(rx: TeslaReceiver) -> int:
    """What the receiver holds, charge by charge: buffering arenas (datagrams and warm
    pages), warm spares, replay memory, released copies, arenas lent as rows or
    released but not popped, the interval verified in the background."""
    a = sum(ar.nbytes + ar.warm for ar in rx._pending.values())
    a += sum(c for c, _ in rx._warm.values())
    a += rx._replay_bytes + rx._released
    a += sum(ar.nbytes + ar.warm for _, ar in rx._lent)
    a += sum(ar.nbytes + ar.warm for _, _, ar in rx._out_rows)
    if rx._inflight is not None:
        a += rx._inflight[1].nbytes + rx._inflight[1].warm
    return a


@pytest.mark.parametrize("rows", [False, True])
@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
def test_the_charge_is_what_is_held(rows: bool, seed: int) -> None:
    """buffered_bytes equals the sum of what is held after every batch and after
    close(), under tight and ample bounds, with damaged, late and replayed datagrams,
    released as bytes or as arena rows.  (An evicted arena's warm pages were subtracted
    twice: after close() the charge went negative.)"""
    import random

    from test_fastpath import _mutate

    rng = random.Random(seed)
    snd = make_sender(2, n_chain=9)
    stream = _mutate(make_stream(snd, 12, 300, 700, spread=1.0), rng, snd.params.key_len)
    rx = TeslaReceiver(
        _pub(), max_clock_error_ms=20, max_buffered_bytes=rng.choice([60_000, 200_000, 10**8])
    )
    rx.release_rows = rows
    k = 0
    while k < len(stream):
        m = rng.choice([1, 7, 64, 300])
        ch = stream[k : k + m]
        rx.receive_batch([b for _, b in ch], np.array([a for a, _ in ch]), list(range(k, k + m)))
        if rng.random() < 0.5:
            if rows:
                rx.pop_released()
            else:
                rx.pop_authenticated_lists()
        assert rx.buffered_bytes == _held(rx), k
        assert rx.buffered_bytes <= rx.max_buffered_bytes
        k += m
    rx.close()
    assert rx.buffered_bytes == _held(rx) >= 0
