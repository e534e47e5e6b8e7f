"""Per-receiver link models: loss, delay + jitter, reordering, duplication, bandwidth.

A :class:`Link` turns one transmission at true time ``t`` into zero, one or more
arrival times.  Each link owns its own seeded ``random.Random``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class LossConfig:
    """``kind``: ``none`` | ``bernoulli`` (rate ``p``) | ``gilbert`` (Gilbert-Elliott) | ``trace``.

    Gilbert-Elliott: two states; per packet, from Good go Bad with ``p_gb``, from Bad go
    Good with ``p_bg``; a packet is lost with ``loss_good`` / ``loss_bad`` in each state.
    Mean loss = (p_gb*loss_bad + p_bg*loss_good)/(p_gb+p_bg), mean burst = 1/p_bg.
    ``trace``: a file of 0/1 characters (1 = lost, whitespace ignored) or an inline
    ``pattern`` string, applied cyclically per packet.
    """

    kind: str = "none"
    p: float = 0.0
    p_gb: float = 0.0
    p_bg: float = 1.0
    loss_good: float = 0.0
    loss_bad: float = 1.0
    trace: str | None = None
    pattern: str | None = None

    @classmethod
    def from_dict(cls, d: Any) -> LossConfig:
        if d is None:
            return cls()
        if isinstance(d, int | float):
            return cls(kind="bernoulli" if d > 0 else "none", p=float(d))
        return cls(**d)

    def mean_loss(self) -> float:
        if self.kind == "bernoulli":
            return self.p
        if self.kind == "gilbert":
            tot = self.p_gb + self.p_bg
            return (self.p_gb * self.loss_bad + self.p_bg * self.loss_good) / tot if tot else 0.0
        return 0.0


@dataclass
class LinkConfig:
    """Delays in seconds, bandwidth in bit/s (0 = unlimited), probabilities in [0, 1].

    ``jitter``: ``none`` | ``uniform`` (U[0, jitter_s]) | ``normal`` (|N(0, jitter_s)|) |
    ``exponential`` (mean jitter_s).  ``reorder``: probability that a packet is held an
    extra ``reorder_delay`` (so later ones overtake it).  ``duplicate``: probability of a
    second copy ``duplicate_delay`` later.  ``queue_bytes``: drop-tail limit of the
    bandwidth queue.
    """

    loss: LossConfig = field(default_factory=LossConfig)
    delay: float = 0.01
    jitter: str = "none"
    jitter_s: float = 0.0
    reorder: float = 0.0
    reorder_delay: float = 0.02
    duplicate: float = 0.0
    duplicate_delay: float = 0.001
    bandwidth: float = 0.0
    queue_bytes: int = 1 << 20

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> LinkConfig:
        d = dict(d or {})
        loss = LossConfig.from_dict(d.pop("loss", None))
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown link keys: {sorted(unknown)}")
        return cls(loss=loss, **d)

    def is_trivial(self) -> bool:
        return (
            self.loss.kind == "none"
            and self.jitter == "none"
            and not self.reorder
            and not self.duplicate
            and not self.bandwidth
        )


_TRACE_CACHE: dict[str, tuple[bool, ...]] = {}


def _load_trace(cfg: LossConfig) -> tuple[bool, ...]:
    key = cfg.trace or ("inline:" + (cfg.pattern or ""))
    if key not in _TRACE_CACHE:
        text = Path(cfg.trace).read_text() if cfg.trace else (cfg.pattern or "")
        bits = tuple(c == "1" for c in text if c in "01")
        if not bits:
            raise ValueError(f"empty loss trace {key!r}")
        _TRACE_CACHE[key] = bits
    return _TRACE_CACHE[key]


class Link:
    """One directed link.  ``transmit(t, size)`` returns the list of arrival times."""

    __slots__ = (
        "cfg",
        "rng",
        "_bad",
        "_trace",
        "_trace_pos",
        "_free_at",
        "stats",
        "_loss_kind",
        "_p",
        "_fast",
    )

    def __init__(self, cfg: LinkConfig, rng: random.Random) -> None:
        self.cfg = cfg
        self.rng = rng
        self._bad = False
        self._trace = _load_trace(cfg.loss) if cfg.loss.kind == "trace" else ()
        self._trace_pos = 0
        self._free_at = 0.0
        self._loss_kind = cfg.loss.kind
        self._p = cfg.loss.p
        self._fast = (
            cfg.jitter == "none" and not cfg.reorder and not cfg.duplicate and not cfg.bandwidth
        )
        self.stats = {
            "sent": 0,
            "lost": 0,
            "queue_drop": 0,
            "duplicated": 0,
            "reordered": 0,
            "delivered": 0,
            "bytes": 0,
        }

    def _lost(self) -> bool:
        kind = self._loss_kind
        if kind == "none":
            return False
        if kind == "bernoulli":
            return self.rng.random() < self._p
        if kind == "gilbert":
            lc = self.cfg.loss
            r = self.rng.random()
            if self._bad:
                if r < lc.p_bg:
                    self._bad = False
            elif r < lc.p_gb:
                self._bad = True
            p = lc.loss_bad if self._bad else lc.loss_good
            return p > 0 and self.rng.random() < p
        if kind == "trace":
            bit = self._trace[self._trace_pos % len(self._trace)]
            self._trace_pos += 1
            return bit
        raise ValueError(f"unknown loss kind {kind!r}")

    def _jitter(self) -> float:
        c = self.cfg
        if c.jitter == "none" or c.jitter_s <= 0:
            return 0.0
        if c.jitter == "uniform":
            return self.rng.uniform(0.0, c.jitter_s)
        if c.jitter == "normal":
            return abs(self.rng.gauss(0.0, c.jitter_s))
        if c.jitter == "exponential":
            return self.rng.expovariate(1.0 / c.jitter_s)
        raise ValueError(f"unknown jitter kind {c.jitter!r}")

    def transmit(self, t: float, size: int) -> list[float]:
        st = self.stats
        st["sent"] += 1
        if self._lost():
            st["lost"] += 1
            return []
        c = self.cfg
        if self._fast:
            st["delivered"] += 1
            st["bytes"] += size
            return [t + c.delay]
        start = t
        if c.bandwidth > 0:
            start = max(t, self._free_at)
            backlog = (start - t) * c.bandwidth / 8.0
            if backlog + size > c.queue_bytes:
                st["queue_drop"] += 1
                return []
            self._free_at = start + size * 8.0 / c.bandwidth
            start = self._free_at
        arr = start + c.delay + self._jitter()
        if c.reorder and self.rng.random() < c.reorder:
            arr += c.reorder_delay
            st["reordered"] += 1
        out = [arr]
        if c.duplicate and self.rng.random() < c.duplicate:
            out.append(arr + c.duplicate_delay)
            st["duplicated"] += 1
        st["delivered"] += len(out)
        st["bytes"] += size * len(out)
        return out
