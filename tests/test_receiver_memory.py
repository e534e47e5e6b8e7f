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
    assert formula < st["max_buffered_bytes"] <= formula + replay
    # a bound of the formula itself: no datagram evicted, the replay memory yields
    rx = run(per, 5, 64, bound=formula)
    st = rx.stats
    assert st["accepted"] == 5 * per + 1 and st["drop.evicted"] == 0
    assert st["max_buffered_bytes"] == formula


def test_released_arena_storage_is_not_resident() -> None:
    seen = {"spares": 0, "arenas": 0}

    def check(rx: TeslaReceiver) -> None:
        for buf in rx._spare:
            assert resident(buf) == 0
            seen["spares"] += 1
        for ar in rx._pending.values():
            # octets in use rounded up to the page (a huge page for large storage)
            assert resident(ar.data) <= ar.used + HUGE, (ar.used, resident(ar.data))
            assert ar.used <= ar.nbytes
            seen["arenas"] += 1

    run(3000, 5, 512, check)  # ~4 MiB per interval: huge pages
    assert seen["spares"] and seen["arenas"]


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
