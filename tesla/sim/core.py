"""Deterministic discrete-event core: seeds, clocks and the event queue.

Nothing in :mod:`tesla.sim` reads the wall clock.  Time is a float on the POSIX-epoch
scale (seconds) that starts at the scenario's ``epoch``; every random stream is a
``random.Random`` (or numpy ``Generator``) derived from the scenario seed and the
component's name, so adding a component never perturbs the streams of the others.
"""

from __future__ import annotations

import hashlib
import heapq
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

#: Default scenario epoch: 2026-01-01T00:00:00Z (fixed, never "now").
DEFAULT_EPOCH = 1767225600.0


def derive_seed(seed: int, *names: object) -> int:
    """A 64-bit seed for the component called ``names`` under the scenario ``seed``."""
    h = hashlib.sha256(repr((int(seed),) + tuple(str(n) for n in names)).encode())
    return int.from_bytes(h.digest()[:8], "big")


def make_rng(seed: int, *names: object) -> random.Random:
    return random.Random(derive_seed(seed, *names))


def make_np_rng(seed: int, *names: object) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(derive_seed(seed, *names)))


@dataclass(frozen=True)
class LocalClock:
    """A node's clock: ``local = epoch + (t - epoch) * (1 + drift) + offset``.

    Drift is counted from the scenario epoch (not from 1970: a drift of 1e-5 applied to
    POSIX seconds would be an offset of hours).  ``offset`` > 0 means the node's clock is
    ahead of true (= sender) time.
    """

    epoch: float
    offset: float = 0.0
    drift: float = 0.0

    def local(self, t: float) -> float:
        return self.epoch + (t - self.epoch) * (1.0 + self.drift) + self.offset

    def true(self, local: float) -> float:
        return self.epoch + (local - self.offset - self.epoch) / (1.0 + self.drift)

    def error(self, t: float) -> float:
        """local - true at true time ``t``."""
        return self.local(t) - t


class EventQueue:
    """A heap of ``(time, seq, callback, args)``; ties run in insertion order."""

    __slots__ = ("_heap", "_seq", "now", "processed")

    def __init__(self, start: float) -> None:
        self._heap: list[tuple[float, int, Callable[..., Any], tuple[Any, ...]]] = []
        self._seq = 0
        self.now = start
        self.processed = 0

    def __len__(self) -> int:
        return len(self._heap)

    def schedule(self, t: float, callback: Callable[..., Any], *args: Any) -> None:
        if t < self.now:
            t = self.now  # never go back in time
        self._seq += 1
        heapq.heappush(self._heap, (t, self._seq, callback, args))

    def peek_time(self) -> float | None:
        return self._heap[0][0] if self._heap else None

    def run(self, until: float, stop: Callable[[], bool] | None = None) -> None:
        """Process events with time <= ``until`` (or until ``stop()`` turns true)."""
        heap = self._heap
        pop = heapq.heappop
        n = 0
        while heap and heap[0][0] <= until:
            t, _seq, cb, args = pop(heap)
            self.now = t
            cb(*args)
            n += 1
            if stop is not None and (n & 0xFF) == 0 and stop():
                break
        self.processed += n
