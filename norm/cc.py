"""NORM sender-side timing: GRTT estimation (RFC 5401 §3.7.1) and NORM-CC (RFC 5740 §5.5.2).

Pure arithmetic, no I/O and no clock: callers pass ``now``.

* :class:`GrttEstimator` -- the RFC 5401 §3.7.1 estimator: jump to any larger sample at once,
  track the peak of each probe interval and decay ``max(0.9 * GRTT, peak)`` at its end.
* :func:`tcp_rate` -- the TCP-friendly rate equation of RFC 5740 §5.5.2.
* :class:`NormCC` -- TFMCC-like congestion control at the sender (RFC 5740 §5.5.2.1,
  §5.5.2.3): per-receiver RTT from ``grtt_response``, CLR (and one PLR) selection from EXT_CC
  feedback, slow start (``Rnew = Rrecv_min``), steady-state tracking of the CLR rate with an
  increase of at most one packet per RTT and immediate decrease, CLR feedback aging
  (``Age > 4`` halves the rate once per RTT_clr), CLR time-out back to slow start, and the
  ``cc_node_list`` for NORM_CMD(CC).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# cc_flags (RFC 5740 §4.2.3.4 / §4.2.3.5)
CC_CLR = 0x01
CC_PLR = 0x02
CC_RTT = 0x04
CC_START = 0x08
CC_LEAVE = 0x10

NORM_GRTT_MIN = 0.001
NORM_GRTT_MAX = 15.0
MAX_CC_NODES = 1024  # receivers tracked (feedback is unauthenticated: any node_id)


def tcp_rate(size: float, rtt: float, loss: float) -> float:
    """RFC 5740 §5.5.2: ``S / (R * (sqrt(2p/3) + 12 sqrt(3p/8) p (1 + 32 p^2)))`` bytes/s."""
    if loss <= 0.0:
        return math.inf
    rtt = max(rtt, 1e-6)
    p = min(loss, 1.0)
    denom = rtt * (
        math.sqrt(2.0 * p / 3.0) + 12.0 * math.sqrt(3.0 * p / 8.0) * p * (1.0 + 32.0 * p * p)
    )
    return size / denom


class GrttEstimator:
    """RFC 5401 §3.7.1 group RTT estimator (sender side).

    ``sample(rtt)`` for each receiver response; ``end_interval()`` once per probe interval.
    The estimate is clamped to ``[minimum, maximum]``.
    """

    def __init__(
        self, initial: float = 0.5, minimum: float = NORM_GRTT_MIN, maximum: float = 10.0
    ) -> None:
        self.minimum = minimum
        self.maximum = min(maximum, NORM_GRTT_MAX)
        self.grtt = self._clamp(initial)
        self.peak = 0.0
        self.samples = 0

    def _clamp(self, v: float) -> float:
        return min(self.maximum, max(self.minimum, v))

    def sample(self, rtt: float) -> bool:
        """Feed one RTT sample; True when the estimate grew (jumped to the sample)."""
        if not rtt > 0.0 or rtt != rtt:
            return False
        self.samples += 1
        rtt = self._clamp(rtt)
        if rtt > self.peak:
            self.peak = rtt
        if rtt > self.grtt:
            self.grtt = rtt
            return True
        return False

    def end_interval(self) -> None:
        """End of a probe interval: decay toward the interval's peak (unchanged if no sample)."""
        if self.peak > 0.0 and self.peak < self.grtt:
            self.grtt = self._clamp(max(0.9 * self.grtt, self.peak))
        self.peak = 0.0


@dataclass
class CcNode:
    """What the sender knows about one receiver's CC state."""

    node_id: int
    rtt: float = 0.0  # sender-measured RTT (smoothed)
    rtt_valid: bool = False
    rate: float = 0.0  # receiver-reported cc_rate (bytes/s)
    loss: float = 0.0
    flags: int = 0  # last reported cc_flags
    cc_sequence: int = 0  # last cc_sequence echoed
    last_heard: float = 0.0

    @property
    def slow_start(self) -> bool:
        return bool(self.flags & CC_START)

    @property
    def leaving(self) -> bool:
        return bool(self.flags & CC_LEAVE)

    def calc_rate(self, size: float) -> float:
        """The rate this receiver supports: the equation with the sender's RTT, or its cc_rate."""
        if self.slow_start or self.loss <= 0.0:
            return self.rate if self.rate > 0 else math.inf
        r = tcp_rate(size, self.rtt if self.rtt_valid else max(self.rtt, 1e-3), self.loss)
        return min(r, self.rate) if self.rate > 0 else r


class NormCC:
    """Sender NORM-CC state machine (RFC 5740 §5.5.2), at least the CLR-based adaptation.

    The sender calls :meth:`probe_sent` for every NORM_CMD(CC), :meth:`feedback` for every
    EXT_CC it receives (NACK/ACK), and reads :attr:`rate` (bytes/s) to pace transmission.
    """

    def __init__(
        self,
        segment_size: int,
        *,
        grtt: float = 0.5,
        rate_min: float | None = None,
        rate_max: float | None = None,
        initial_rate: float | None = None,
        robust_factor: int = 20,
    ) -> None:
        self.segment_size = segment_size
        self.packet_size = float(segment_size + 44)  # nominal NORM_DATA size (NRL's S)
        self.rate_min = rate_min
        self.rate_max = rate_max
        # RFC 5740 §5.5.2.1: Rinit = MIN(NormSegmentSize / GRTT, NormSegmentSize) bytes/s
        rinit = min(segment_size / max(grtt, 1e-6), float(segment_size))
        self.rate = self._bound(initial_rate if initial_rate is not None else rinit)
        self.nodes: dict[int, CcNode] = {}
        self.clr: int | None = None
        self.plr: int | None = None
        self.cc_sequence = 0
        self.slow_start = True
        self.robust_factor = robust_factor
        self._last_adjust = -math.inf
        self._last_aging = -math.inf
        self._rounds_without_clr = 0
        self.clr_heard_this_round = False
        self.rate_changes = 0

    # ---- helpers ---------------------------------------------------------------------------
    def floor_rate(self, grtt: float) -> float:
        """NRL minimum: one segment per max(GRTT, 1 s)."""
        lo = self.segment_size / max(grtt, 1.0)
        if self.rate_min is not None:
            lo = max(lo, self.rate_min)
        return lo

    def _bound(self, r: float) -> float:
        if self.rate_max is not None:
            r = min(r, self.rate_max)
        if self.rate_min is not None:
            r = max(r, self.rate_min)
        return max(r, 1.0)

    def _set_rate(self, r: float, grtt: float) -> None:
        r = self._bound(max(r, self.floor_rate(grtt)))
        if r != self.rate:
            self.rate_changes += 1
        self.rate = r

    @property
    def rtt_clr(self) -> float:
        if self.clr is not None and self.clr in self.nodes:
            n = self.nodes[self.clr]
            if n.rtt > 0:
                return n.rtt
        return 0.0

    # ---- probing ---------------------------------------------------------------------------
    def probe_sent(self, now: float, grtt: float) -> int:
        """A NORM_CMD(CC) goes out: bump cc_sequence, age the CLR; returns the new sequence."""
        self.cc_sequence = (self.cc_sequence + 1) & 0xFFFF
        if self.clr is not None and self.clr in self.nodes:
            clr = self.nodes[self.clr]
            age = (self.cc_sequence - clr.cc_sequence) & 0xFFFF
            rtt = max(clr.rtt, grtt, 1e-3)
            if age > 4 and now - self._last_aging >= rtt:
                # RFC 5740 §5.5.2.3: stale CLR feedback -> halve, once per RTT_clr
                self._last_aging = now
                self._set_rate(self.rate * 0.5, grtt)
            if not self.clr_heard_this_round:
                self._rounds_without_clr += 1
            else:
                self._rounds_without_clr = 0
            if self._rounds_without_clr >= self.robust_factor:
                # CLR silent for robust_factor rounds: drop it, pick the next one / slow start
                self.nodes.pop(self.clr, None)
                self.clr = None
                self._rounds_without_clr = 0
                self._select_clr()
                if self.clr is None:
                    self.slow_start = True
        self.clr_heard_this_round = False
        return self.cc_sequence

    def node_list(self, max_items: int) -> list[tuple[int, int, float, float]]:
        """``cc_node_list`` items ``(node_id, flags, rtt, rate)``: CLR first, then PLR, then
        receivers without an RTT yet, then the lowest-rate ones (RFC 5740 §5.5.2.1)."""
        out: list[tuple[int, int, float, float]] = []
        order: list[int] = []
        if self.clr is not None:
            order.append(self.clr)
        if self.plr is not None and self.plr != self.clr:
            order.append(self.plr)
        rest = [n for n in self.nodes.values() if n.node_id not in order]
        rest.sort(key=lambda n: (n.rtt_valid, -n.loss, n.calc_rate(self.packet_size)))
        order.extend(n.node_id for n in rest)
        for nid in order[:max_items]:
            n = self.nodes[nid]
            flags = n.flags & (CC_START | CC_LEAVE)
            if nid == self.clr:
                flags |= CC_CLR
            elif nid == self.plr:
                flags |= CC_PLR
            if n.rtt > 0:
                flags |= CC_RTT
            out.append((nid, flags, n.rtt, n.rate))
        return out

    # ---- feedback --------------------------------------------------------------------------
    def rtt_sample(self, node_id: int, rtt: float, cc_rtt: float | None = None) -> None:
        """Per-receiver RTT from ``grtt_response`` (RFC 5740 §5.5.2.1 smoothing)."""
        if not rtt > 0.0:
            return
        n = self._node(node_id, 0.0)
        if node_id in (self.clr, self.plr) and n.rtt > 0:
            n.rtt = 0.9 * n.rtt + 0.1 * rtt
        elif cc_rtt is not None and cc_rtt > 0 and n.rtt_valid:
            n.rtt = 0.5 * cc_rtt + 0.5 * rtt
        else:
            n.rtt = rtt
        n.rtt_valid = True

    def feedback(
        self,
        now: float,
        grtt: float,
        node_id: int,
        *,
        flags: int,
        rate: float,
        loss: float,
        cc_sequence: int,
        rtt_sample: float | None = None,
        cc_rtt: float | None = None,
    ) -> None:
        """One EXT_CC report from ``node_id`` (NACK or ACK), RFC 5740 §5.5.2.3."""
        if rtt_sample is not None:
            self.rtt_sample(node_id, rtt_sample, cc_rtt)
        n = self._node(node_id, now)
        n.flags, n.rate, n.loss, n.last_heard = flags, rate, loss, now
        if ((cc_sequence - n.cc_sequence) & 0xFFFF) < 0x8000:
            n.cc_sequence = cc_sequence
        if node_id == self.clr:
            self.clr_heard_this_round = True
        if not n.slow_start and n.loss > 0:
            self.slow_start = False
        self._select_clr()
        self._adjust(now, grtt)

    def _node(self, node_id: int, now: float) -> CcNode:
        """The state of ``node_id``; a new one replaces the least recently heard receiver
        other than the CLR/PLR once MAX_CC_NODES are tracked."""
        n = self.nodes.get(node_id)
        if n is None:
            if len(self.nodes) >= MAX_CC_NODES:
                old = min(
                    (x for x in self.nodes.values() if x.node_id not in (self.clr, self.plr)),
                    key=lambda x: x.last_heard,
                    default=None,
                )
                if old is not None:
                    del self.nodes[old.node_id]
            n = self.nodes[node_id] = CcNode(node_id, last_heard=now)
        return n

    def _select_clr(self) -> None:
        """Lowest-rate receiver is the CLR; within 10 % the larger RTT wins; not LEAVE ones."""
        cands = [n for n in self.nodes.values() if not n.leaving and n.rate > 0]
        if not cands:
            return
        S = self.packet_size

        def key(n: CcNode) -> float:
            return n.calc_rate(S)

        cands.sort(key=key)
        best = cands[0]
        best_rate = key(best)
        for n in cands[1:]:
            if key(n) <= 1.1 * best_rate and n.rtt > best.rtt:
                best = n
        self.clr = best.node_id
        others = [n for n in cands if n.node_id != self.clr]
        self.plr = others[0].node_id if others else None

    def _adjust(self, now: float, grtt: float) -> None:
        if self.clr is None:
            return
        clr = self.nodes[self.clr]
        rtt = max(clr.rtt if clr.rtt > 0 else grtt, 1e-4)
        target = clr.calc_rate(self.packet_size)
        if target == math.inf:
            return
        if self.slow_start:
            # Rnew = Rrecv_min (lowest reported cc_rate, 2 x measured), at most once per RTT
            if now - self._last_adjust >= rtt:
                rmin = min(
                    (n.rate for n in self.nodes.values() if n.rate > 0 and not n.leaving),
                    default=target,
                )
                self._last_adjust = now
                self._set_rate(rmin, grtt)
            return
        if target < self.rate:
            self._last_adjust = now
            self._set_rate(target, grtt)
            return
        # increase at most one packet per RTT (scaled by the time since the last increase)
        elapsed = min(now - self._last_adjust, 4 * rtt) if self._last_adjust > -math.inf else rtt
        step = self.packet_size / rtt * (elapsed / rtt)
        if elapsed > 0:
            self._last_adjust = now
            self._set_rate(min(target, self.rate + step), grtt)
