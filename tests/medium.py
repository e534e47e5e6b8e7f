"""A sans-I/O multicast medium in virtual time, shared by the NORM tests (``import medium``:
pytest puts tests/ on sys.path).  Every datagram reaches every other engine after ``delay``
unless that node loses it (independent, seeded loss per node); a datagram addressed to one
node (``dst`` not None) reaches only that node."""

from __future__ import annotations

import heapq
import random
from typing import Any

T0 = 1_700_000_000.0


class Medium:
    def __init__(
        self,
        engines: dict[str, Any],
        loss: dict[str, float],
        delay: float = 0.002,
        seed: int = 1,
        start: float = T0,
    ) -> None:
        self.engines = engines
        self.loss = loss
        self.delay = delay
        self.rng = random.Random(seed)
        self.q: list[tuple[float, int, str, bytes, str]] = []
        self.n = 0
        self.start = self.now = start

    def addr(self, name: str) -> tuple[str, int]:
        return ("127.0.0.1", 1000 + list(self.engines).index(name))

    def run(self, until: Any, limit: float) -> bool:
        """Advance virtual time until ``until()`` is true (True) or ``limit`` seconds after
        the start have passed (False)."""
        while self.now < self.start + limit:
            for name, e in self.engines.items():
                t = e.get_timer()
                if t is not None and t <= self.now:
                    e.handle_timer(self.now)
                for d, dst in e.datagrams_to_send(self.now):
                    for other in self.engines:
                        if other == name or (dst is not None and dst != self.addr(other)):
                            continue  # unicast goes to its destination only
                        if self.rng.random() >= self.loss.get(other, 0.0):
                            self.n += 1
                            heapq.heappush(self.q, (self.now + self.delay, self.n, other, d, name))
            if until():
                return True
            ts = [t for e in self.engines.values() if (t := e.get_timer()) is not None]
            if self.q:
                ts.append(self.q[0][0])
            nxt = min(ts) if ts else self.now + 0.01
            self.now = max(nxt, self.now + 1e-5)
            while self.q and self.q[0][0] <= self.now:
                _, _, dst, d, src = heapq.heappop(self.q)
                self.engines[dst].receive_datagram(d, self.addr(src), self.now)
        return False
