"""Attacker nodes: they see the multicast traffic and inject (or, on path, replace) it.

They know packet structure only lightly: the protocol adapter's ``info(data)`` may tell
the kind of a packet (``data``/``key``/``bootstrap``), its TESLA interval, the index of
a disclosed key and byte spans of the key, MAC and signature; without it they fall back
to blind byte mutation and fixed hold times.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable
from typing import Any

from tesla.sim.scenario import AttackerSpec

# tesla.sim.network.Simulation / ReceiverNode: the network drives the attackers and is
# passed in; not imported (network imports this module: no import cycle, not even for types)
Simulation = Any
ReceiverNode = Any

Info = Callable[[bytes], "dict[str, Any] | None"]


def mutate_span(data: bytes, span: tuple[int, int] | None, rng: random.Random) -> bytes:
    """Copy ``data`` with the bytes of ``span`` (offset, length) replaced by random bytes
    (or one random byte anywhere if ``span`` is None); never returns the input unchanged."""
    b = bytearray(data)
    if span is None or span[1] <= 0 or span[0] + span[1] > len(b):
        pos = rng.randrange(len(b))
        b[pos] ^= rng.randrange(1, 256)
        return bytes(b)
    off, n = span
    new = rng.randbytes(n)
    if new == data[off : off + n]:
        new = bytes([new[0] ^ 1]) + new[1:]
    b[off : off + n] = new
    return bytes(b)


class Attacker:
    on_path = False

    def __init__(self, sim: Simulation, spec: AttackerSpec, idx: int, rng: random.Random) -> None:
        self.sim, self.spec, self.idx, self.rng = sim, spec, idx, rng
        self.name = spec.name or f"{spec.kind}#{idx}"
        self.injected = 0
        self.observed = 0
        self.start = sim.epoch + spec.start
        self.stop = sim.epoch + spec.stop
        self.targets: list[ReceiverNode] = []

    def active(self, t: float) -> bool:
        return self.start <= t < self.stop

    def setup(self) -> None:
        pass

    def observe(self, data: bytes, t: float, info: dict[str, Any] | None) -> None:
        """A copy of each multicast datagram the sender emits (perfect tap)."""

    def intercept(
        self, rx: ReceiverNode, data: bytes, t: float, info: dict[str, Any] | None
    ) -> None:
        """On-path attackers get the target's traffic instead of the target."""

    def inject(self, data: bytes, t: float, targets: list[ReceiverNode] | None = None) -> None:
        self.injected += 1
        self.sim.inject(self, data, t, targets if targets is not None else self.targets)

    def report(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.spec.kind,
            "observed": self.observed,
            "injected": self.injected,
            "targets": [r.idx for r in self.targets],
        }


class FloodAttacker(Attacker):
    """Forged packets at ``rate``/s: copies of a recent data packet with a random MAC
    (or a random byte changed), plus some with a random interval field."""

    def setup(self) -> None:
        self.template: bytes | None = None
        self.tinfo: dict[str, Any] | None = None
        self.sim.queue.schedule(self.start, self._tick)

    def observe(self, data: bytes, t: float, info: dict[str, Any] | None) -> None:
        self.observed += 1
        if info is None or info.get("kind") == "data":
            self.template, self.tinfo = data, info

    def _tick(self) -> None:
        t = self.sim.queue.now
        if t >= self.stop or self.sim.finished:
            return
        if self.template is not None:
            span = (self.tinfo or {}).get("mac_span")
            pkt = mutate_span(self.template, span, self.rng)
            if self.rng.random() < 0.3:
                pkt = mutate_span(pkt, None, self.rng)
            self.inject(pkt, t)
        self.sim.queue.schedule(t + 1.0 / self.spec.rate, self._tick)


class ReplayAttacker(Attacker):
    """Replays each captured data packet once its key has been disclosed (seen in a later
    packet), or ``hold`` seconds after capture."""

    def setup(self) -> None:
        self.held: deque[tuple[int | None, float, bytes]] = deque()
        self.max_key = -1

    def observe(self, data: bytes, t: float, info: dict[str, Any] | None) -> None:
        self.observed += 1
        if not self.active(t):
            return
        kind = (info or {}).get("kind", "data")
        ki = (info or {}).get("key_index")
        if ki is not None and ki > self.max_key:
            self.max_key = ki
        if kind == "data":
            self.held.append(((info or {}).get("interval"), t, data))
        hold = self.spec.hold
        while self.held:
            i, tc, pkt = self.held[0]
            if hold is not None or i is None:
                if t - tc < (hold if hold is not None else 1.0):
                    break
            elif i > self.max_key:
                break
            self.held.popleft()
            self.inject(bytes(pkt), t)


class DelayAttacker(Attacker):
    """On path: holds every packet for the targets and releases it ``extra`` seconds
    after the key of its interval became public (first seen disclosed), or after
    ``hold`` seconds.  Packets without an interval are forwarded at once."""

    on_path = True

    def setup(self) -> None:
        self.pending: dict[int, list[tuple[ReceiverNode, bytes]]] = {}
        self.max_key = -1
        self.released: list[dict[str, Any]] = []

    def observe(self, data: bytes, t: float, info: dict[str, Any] | None) -> None:
        self.observed += 1
        ki = (info or {}).get("key_index")
        if ki is not None and ki > self.max_key:
            for i in sorted(j for j in self.pending if j <= ki):
                for rx, pkt in self.pending.pop(i):
                    self._release(rx, pkt, t + self.spec.extra, i)
            self.max_key = ki

    def _release(self, rx: ReceiverNode, pkt: bytes, at: float, interval: int | None) -> None:
        self.released.append({"rx": rx.idx, "interval": interval, "release": at})
        self.sim.queue.schedule(at, self.inject, pkt, at, [rx])

    def intercept(
        self, rx: ReceiverNode, data: bytes, t: float, info: dict[str, Any] | None
    ) -> None:
        i = (info or {}).get("interval")
        kind = (info or {}).get("kind", "data")
        if not self.active(t) or kind != "data":
            self.sim.forward(rx, data, t)
            return
        if self.spec.hold is not None or i is None:
            self._release(rx, data, t + (self.spec.hold or 1.0), i)
        elif i <= self.max_key:
            self._release(rx, data, t + self.spec.extra, i)
        else:
            self.pending.setdefault(i, []).append((rx, data))


class KeySpoofAttacker(Attacker):
    """For each key-carrying packet seen, injects a copy whose disclosed key is random."""

    def observe(self, data: bytes, t: float, info: dict[str, Any] | None) -> None:
        self.observed += 1
        if not self.active(t):
            return
        if info is None:
            if self.rng.random() < 0.1:
                self.inject(mutate_span(data, (0, min(64, len(data))), self.rng), t)
            return
        span = info.get("key_span")
        if span is not None:
            self.inject(mutate_span(data, span, self.rng), t)


class BootstrapSpoofAttacker(Attacker):
    """Injects forged bootstrap messages (signature or body altered) at ``rate``/s, so a
    late joiner meets them before the genuine one; plus a forged copy of each genuine."""

    def setup(self) -> None:
        self.template: bytes | None = None
        self.tinfo: dict[str, Any] | None = None
        self.sim.queue.schedule(self.start, self._tick)

    def _forge(self) -> bytes:
        assert self.template is not None
        span = (self.tinfo or {}).get("sig_span")
        if self.rng.random() < 0.5 or span is None:
            return mutate_span(self.template, None, self.rng)
        return mutate_span(self.template, span, self.rng)

    def observe(self, data: bytes, t: float, info: dict[str, Any] | None) -> None:
        self.observed += 1
        if info is not None and info.get("kind") == "bootstrap":
            self.template, self.tinfo = data, info
            if self.active(t):
                self.inject(self._forge(), t)

    def _tick(self) -> None:
        t = self.sim.queue.now
        if t >= self.stop or self.sim.finished:
            return
        if self.template is not None:
            self.inject(self._forge(), t)
        self.sim.queue.schedule(t + 1.0 / self.spec.rate, self._tick)


class ModifyAttacker(Attacker):
    """On path: alters one random byte of a ``probability`` fraction of the packets."""

    on_path = True

    def intercept(
        self, rx: ReceiverNode, data: bytes, t: float, info: dict[str, Any] | None
    ) -> None:
        if self.active(t) and self.rng.random() < self.spec.probability:
            self.injected += 1
            self.sim.deliver_injected(self, rx, mutate_span(data, None, self.rng), t)
        else:
            self.sim.forward(rx, data, t)


KINDS: dict[str, type[Attacker]] = {
    "flood": FloodAttacker,
    "replay": ReplayAttacker,
    "delay": DelayAttacker,
    "key_spoof": KeySpoofAttacker,
    "bootstrap_spoof": BootstrapSpoofAttacker,
    "modify": ModifyAttacker,
}
