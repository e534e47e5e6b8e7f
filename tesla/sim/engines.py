"""Protocol adapters: build the sender and receiver engines for a scenario and give the
simulator the little packet knowledge it needs (``info``), the authenticated layer to
tap (``inner``) and the receiver's buffer level.
"""

from __future__ import annotations

import math
from typing import Any

from tesla.sim import toy
from tesla.sim.scenario import Scenario


class Adapter:
    """Base adapter.  Interval numbering follows RFC 5776: interval i covers
    ``[T0 + i*Tint, T0 + (i+1)*Tint)`` and K_i is disclosed from interval ``i + d``."""

    name = "base"
    wants_info = True  # parse every sender datagram once (auth overhead accounting)

    def __init__(self, scn: Scenario, seed: int) -> None:
        self.scn = scn
        self.seed = seed
        t = scn.tesla
        self.tint = float(t.get("tint", 0.1))
        self.d = int(t.get("d", 2))
        self.t0 = scn.epoch + float(t.get("t0_offset", 0.0))
        self.default_bound = float(t.get("max_clock_error", 0.005))

    # to override
    def build_sender(self) -> Any:
        raise NotImplementedError

    def build_receiver(self, idx: int, d_t: float) -> Any:
        raise NotImplementedError

    def info(self, data: bytes) -> dict[str, Any] | None:
        return None

    def inner(self, engine: Any) -> Any | None:
        return getattr(engine, "inner", None)

    def buffer_level(self, engine: Any) -> int:
        v = getattr(engine, "buffered", None)
        return int(v) if v is not None else 0

    def bypasses_auth(self, data: bytes) -> bool:
        """Datagrams the authenticated receiver passes on without TESLA (by design)."""
        return False

    def sender_done(self, engine: Any) -> bool:
        """The sender has nothing more to send (beyond periodic control messages)."""
        return engine.get_timer() is None

    def files_expected(self) -> int:
        return len(self.scn.sender.get("files", []))

    def is_file_event(self, ev: Any) -> bool:
        return isinstance(ev, dict) and ev.get("type") == "file"

    # RFC predictions, in true/local seconds
    def key_public_time(self, i: int) -> float:
        """True time at which the sender starts disclosing K_i."""
        return self.t0 + (i + self.d) * self.tint

    def from_future(self, i: int, local_arrival: float, d_t: float) -> bool:
        """The tag's interval cannot have started yet by the receiver's own bound
        (``floor((T + D_t - T0)/Tint) < i``): the verifier drops it (REJECT_FUTURE_INTERVAL);
        only a receiver whose clock lags by more than D_t + the one-way delay sees this."""
        return math.floor((local_arrival + d_t - self.t0) / self.tint) < i

    def rfc_safe(self, i: int, local_arrival: float, d_t: float) -> bool:
        """RFC 5776 safe-packet test ``floor((T + D_t - T0)/Tint) < i + d``."""
        return math.floor((local_arrival + d_t - self.t0) / self.tint) < i + self.d


class ToyAdapter(Adapter):
    """:mod:`tesla.sim.toy`; its intervals are numbered from 1 (interval i starts at
    ``T0 + (i-1)*Tint``), hence the shifted predictions."""

    name = "toy"

    def __init__(self, scn: Scenario, seed: int) -> None:
        super().__init__(scn, seed)
        s = scn.sender
        self.files = [int(x) for x in s.get("files", [100_000])]
        self.symbol_size = int(s.get("symbol_size", 1000))
        self.k = int(s.get("block_length", 16))
        ratio = float(s.get("repair_ratio", 0.0)) if s.get("fec", "nocode") != "nocode" else 0.0
        self.repair = int(math.ceil(self.k * ratio))
        rate = float(s.get("rate", 8_000_000))
        self.rate_pps = float(s.get("rate_pps", rate / 8.0 / (self.symbol_size + 54)))
        self.nack = bool(scn.feedback.get("enabled", False))

    def build_sender(self) -> Any:
        return toy.ToySender(
            files=self.files,
            t0=self.t0,
            tint=self.tint,
            d=self.d,
            rate_pps=self.rate_pps,
            symbol_size=self.symbol_size,
            k=self.k,
            repair=self.repair,
            seed=self.seed,
            chain_length=int(self.scn.tesla.get("chain_length", 20000)),
            bootstrap_period=float(self.scn.tesla.get("bootstrap_period", 1.0)),
            nack_rounds=3 if self.nack else 0,
            startup=float(self.scn.sender.get("start", 3 * self.tint + 0.05)),
        )

    def build_receiver(self, idx: int, d_t: float) -> Any:
        return toy.ToyReceiver(
            d_t=d_t,
            files=self.files,
            k=self.k,
            repair=self.repair,
            symbol_size=self.symbol_size,
            nack=self.nack,
        )

    def info(self, data: bytes) -> dict[str, Any] | None:
        return toy.toy_info(data)

    def key_public_time(self, i: int) -> float:
        return self.t0 + (i + self.d - 1) * self.tint

    def rfc_safe(self, i: int, local_arrival: float, d_t: float) -> bool:
        return math.floor((local_arrival + d_t - self.t0) / self.tint) + 1 < i + self.d

