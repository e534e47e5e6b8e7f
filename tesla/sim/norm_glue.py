"""NORM engines for the simulator (:mod:`norm.sender`, :mod:`norm.receiver`)."""

from __future__ import annotations

import math
import random
from typing import Any

from tesla.sim.core import derive_seed


class NormSenderDone:
    """A :class:`norm.sender.NormSender` that calls ``end()`` once its files are queued and
    exposes ``done`` (= idle after EOT) for the simulator's stop rule."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        engine.end()

    @property
    def stats(self) -> dict[str, int]:
        return self.engine.stats

    @property
    def done(self) -> bool:
        return bool(self.engine.idle)

    def receive_datagram(self, data: bytes, addr: Any, now: float) -> None:
        self.engine.receive_datagram(data, addr, now)

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Any]]:
        return self.engine.datagrams_to_send(now)

    def get_timer(self) -> float | None:
        return self.engine.get_timer()

    def handle_timer(self, now: float) -> None:
        self.engine.handle_timer(now)

    def next_event(self) -> Any | None:
        return self.engine.next_event()


def build_sender(ad: Any) -> Any:
    from norm.sender import NormSender, NormSenderConfig

    s = ad.scn.sender
    k = int(s.get("block_length", 64))
    ratio = float(s.get("repair_ratio", 0.0))
    cfg = NormSenderConfig(
        node_id=int(s.get("source_id", 1)), instance_id=int(s.get("instance_id", 1)),
        segment_size=int(s.get("symbol_size", 1400)), block_size=k,
        num_parity=int(s.get("num_parity", 16)),
        auto_parity=int(s.get("auto_parity", math.ceil(k * ratio))),
        rate=float(s.get("rate", 10_000_000)) / 8.0,
        grtt=float(s.get("grtt", 0.1)),
        seed=derive_seed(ad.seed, "norm-sender") & 0xFFFFFFFF)
    eng = NormSender(cfg)
    for name, data in ad.files:
        eng.enqueue_data(data, info=name.encode())
    return NormSenderDone(eng)


def build_receiver(ad: Any, idx: int) -> Any:
    from norm.receiver import NormReceiver, ReceiverConfig

    fb = ad.scn.feedback
    cfg = ReceiverConfig(node_id=idx + 2, silent=not bool(fb.get("enabled", False)))
    return NormReceiver(cfg, rng=random.Random(derive_seed(ad.seed, "norm-rx", idx)))
