"""Adapter for the project's real engines: ALC/FLUTE (:mod:`alc`) or NORM (:mod:`norm`),
wrapped with TESLA (:mod:`tesla.core.session`) when the scenario says ``auth = true``."""

from __future__ import annotations

import struct
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from alc.errors import DecodeError
from tesla.sim.core import derive_seed, make_np_rng
from tesla.sim.engines import Adapter
from tesla.sim.scenario import Scenario

KEY_PEM = Path(__file__).with_name("sim_sender_key.pem")
SENDER_UNICAST = ("10.0.0.1", 4001)  # where direct time sync requests are addressed

_MAC_IDS = {"hmac-sha1": 0, "hmac-sha224": 1, "hmac-sha256": 2, "hmac-sha384": 3,
            "hmac-sha512": 4}


@cache
def _sender_key() -> Any:
    from tesla.core.bootstrap_sig import load_private_key

    data = b"\n".join(ln for ln in KEY_PEM.read_bytes().splitlines() if not ln.startswith(b"#"))
    return load_private_key(data)


def write_public_key(path: str | Path) -> None:
    """The simulated sender's public key (PEM), for ``receive --from-pcap --sender-key``."""
    from cryptography.hazmat.primitives import serialization

    pub = _sender_key().public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    Path(path).write_bytes(pub)


class DelayedStart:
    """An engine that stays silent (no datagrams, no timer before ``start``)."""

    def __init__(self, engine: Any, start: float) -> None:
        self.engine = engine
        self.start = start

    @property
    def stats(self) -> dict[str, int]:
        return self.engine.stats

    @property
    def done(self) -> bool:
        return bool(getattr(self.engine, "done", False))

    def receive_datagram(self, data: bytes, addr: Any, now: float) -> None:
        self.engine.receive_datagram(data, addr, now)

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Any]]:
        if now < self.start:
            return []
        return self.engine.datagrams_to_send(now)

    def get_timer(self) -> float | None:
        t = self.engine.get_timer()
        if t is None or t < self.start:
            return self.start if t is not None or not getattr(self.engine, "_started", True) \
                else t
        return t

    def handle_timer(self, now: float) -> None:
        if now >= self.start:
            self.engine.handle_timer(now)

    def next_event(self) -> Any | None:
        return self.engine.next_event()


class RealAdapter(Adapter):
    def __init__(self, scn: Scenario, seed: int) -> None:
        super().__init__(scn, seed)
        from tesla.core.ntp import posix_to_ntp
        from tesla.core.params import TeslaParams

        s = scn.sender
        self.name = scn.protocol + ("+tesla" if scn.auth else "")
        self.protocol = scn.protocol
        rng = make_np_rng(seed, "files")
        sizes = [int(x) for x in s.get("files", [100_000])]
        # one immutable bytes object per file, shared by every receiver's check
        self.files = [(f"file{k}.bin", rng.integers(0, 256, n, dtype=np.uint8).tobytes())
                      for k, n in enumerate(sizes)]
        self.tsi = int(s.get("tsi", derive_seed(seed, "tsi") % 0xFFFF + 1))
        t = scn.tesla
        mac = t.get("mac", "hmac-sha256")
        mac_id = _MAC_IDS[mac]
        self.group_key: bytes | None = None
        if t.get("group_mac", False):
            self.group_key = derive_seed(seed, "group-key").to_bytes(8, "big") * 4
        duration = scn.duration + 10.0
        n_chain = int(t.get("chain_length", int(duration / self.tint) + 64))
        if scn.auth:
            self.params = TeslaParams(
                t0_ntp=posix_to_ntp(self.t0), tint_ms=int(round(self.tint * 1000)),
                n_chain=n_chain, d=self.d, prf_id=mac_id, mac_id=mac_id,
                group_mac=self.group_key is not None, single_chain=True)
            self.key_len = self.params.key_len
            self.mac_len = self.params.mac_len
        self.wants_info = scn.auth
        # one MAC memo for all receivers: identical (datagram, key) HMACs computed once
        # (each receiver still runs the whole verifier; a modified datagram is another key)
        self.macs: Any = None
        if scn.auth and bool(scn.output.get("shared_mac_cache", True)):
            from tesla.core.receiver import MemoMacs

            self.macs = MemoMacs()

    # ----------------------------------------------------------------- sender
    def build_sender(self) -> Any:
        s = self.scn.sender
        if self.protocol == "alc":
            from alc.sender import AlcSender, SenderConfig

            cfg = SenderConfig(
                tsi=self.tsi, rate_bps=float(s.get("rate", 10_000_000)),
                burst_bytes=int(s.get("burst_bytes", 64 * 1024)),
                fec=str(s.get("fec", "nocode")), repair_ratio=float(s.get("repair_ratio", 0.0)),
                symbol_length=int(s.get("symbol_size", 1400)),
                max_source_block_length=int(s.get("block_length", 64)),
                carousel_rounds=int(s.get("carousel", 1)),
                fdt_interval=float(s.get("fdt_interval", 1.0)),
                seed=derive_seed(self.seed, "alc-sender") & 0xFFFFFFFF)
            eng: Any = AlcSender(cfg)
            for name, data in self.files:
                eng.add_bytes(data, name)
        else:
            eng = self._norm_sender()
        # data starts after the first bootstraps are out (late data would be dropped as
        # no_bootstrap by every receiver whose first bootstrap was lost or reordered)
        start = float(s.get("start", 3 * self.tint + 0.05 if self.scn.auth else 0.0))
        if start > 0:
            eng = DelayedStart(eng, self.scn.epoch + start)
        if not self.scn.auth:
            return eng
        from tesla.core.authenticator import ControlTemplate, TeslaSender
        from tesla.core.keychain import KeyChainSet
        from tesla.core.session import AuthenticatedSender

        t = self.scn.tesla
        tpl = ControlTemplate(tsi=self.tsi) if self.protocol == "alc" else \
            ControlTemplate(source_id=int(s.get("source_id", 1)),
                            instance_id=int(s.get("instance_id", 1)))
        primary = derive_seed(self.seed, "chain").to_bytes(8, "big") * (self.key_len // 8 + 1)
        tx = TeslaSender(
            self.params, _sender_key(), protocol=self.protocol, template=tpl,
            group_key=self.group_key,
            chains=KeyChainSet(self.params, "full", [primary[: self.key_len]]),
            bootstrap_period=float(t.get("bootstrap_period", 2.0)))
        return AuthenticatedSender(eng, tx)

    def _norm_sender(self) -> Any:
        from tesla.sim import norm_glue

        return norm_glue.build_sender(self)

    # ---------------------------------------------------------------- receiver
    def build_receiver(self, idx: int, d_t: float) -> Any:
        if self.protocol == "alc":
            from alc.receiver import AlcReceiver, ReceiverConfig

            r = self.scn.output
            # zero copy: every receiver gets the same immutable datagram objects, so
            # symbols kept by reference cost no per-receiver copy of the file
            eng: Any = AlcReceiver(ReceiverConfig(
                tsi=self.tsi, object_timeout=float(r.get("object_timeout", 30.0)),
                session_timeout=float(r.get("session_timeout", 60.0)),
                zero_copy=bool(r.get("zero_copy", True))))
        else:
            from tesla.sim import norm_glue

            eng = norm_glue.build_receiver(self, idx)
        if not self.scn.auth:
            return eng
        from tesla.core.receiver import TeslaReceiver
        from tesla.core.session import AuthenticatedReceiver

        t = self.scn.tesla
        sync = str(t.get("sync", "indirect"))
        if sync == "direct" and not self.scn.feedback.get("enabled", False):
            raise ValueError("tesla.sync = 'direct' needs [feedback] enabled = true "
                             "(requests go to the sender over the feedback path)")
        tr = TeslaReceiver(
            _sender_key().public_key(), protocol=self.protocol, group_key=self.group_key,
            sync=sync, max_clock_error_ms=d_t * 1000.0,
            s_sr=int(float(t.get("drift_bound", 0.0)) * (1 << 32)),
            max_buffered_bytes=int(t.get("max_buffered_bytes", 64 << 20)),
            macs=self.macs)
        return AuthenticatedReceiver(tr, eng, sync_addr=SENDER_UNICAST,
                                     sync_retry=float(t.get("sync_retry", 0.5)))

    def inner(self, engine: Any) -> Any | None:
        # plain mode: every datagram reaches the protocol engine at once
        return getattr(engine, "engine", None) if self.scn.auth else engine

    def buffer_level(self, engine: Any) -> int:
        """Packets held by the TESLA verifier waiting for their key."""
        t = getattr(engine, "tesla", None)
        if t is None:
            return 0
        return int(t._nbuf)  # the verifier's count of buffered packets

    def bypasses_auth(self, data: bytes) -> bool:
        # NORM_NACK / NORM_ACK / NORM_REPORT: receiver feedback, untagged (RFC 5776 §5.2)
        return self.protocol == "norm" and len(data) > 1 and data[0] & 15 in (4, 5, 6)

    def sender_done(self, engine: Any) -> bool:
        return bool(getattr(engine, "done", False))

    def is_file_event(self, ev: Any) -> bool:
        return type(ev).__name__ in ("FileReceived", "ObjectReceived") or (
            isinstance(ev, dict) and ev.get("type") == "file")

    def event_key(self, ev: Any) -> str:
        return str(getattr(ev, "toi", None) or getattr(ev, "name", None) or ev)

    # ---------------------------------------------------------- packet knowledge
    def info(self, data: bytes) -> dict[str, Any] | None:
        if not self.scn.auth:
            return None
        from tesla.core.authenticator import ext_area
        from tesla.core.extauth import find_ext_auth

        try:
            start, end = ext_area(data, self.protocol)
            off = find_ext_auth(data, start, end, self.params.asid)
        except (DecodeError, IndexError, ValueError):
            return None
        n = data[off + 1] << 2
        typ = data[off + 2] & 15
        out: dict[str, Any] = {"auth_overhead": n, "ext_auth": (off, n), "type": typ}
        if typ == 0:
            out["kind"] = "bootstrap"
            out["auth_overhead"] = len(data)
            # signature sits after the fixed part and the commitment
            s_off = off + 32 + ((self.key_len + 3) & ~3)
            out["sig_span"] = (s_off, 16)
            return out
        if typ in (1, 2, 3, 4):
            (i,) = struct.unpack_from("!I", data, off + 4)
            out["interval"] = i
            kl = 0 if typ == 2 else self.key_len
            if typ == 1:
                out["key_index"] = i - self.d
                out["key_span"] = (off + 8, kl)
            out["mac_span"] = (off + 8 + kl, self.mac_len)
            payload = len(data) - end
            out["kind"] = "data" if payload > 0 else "key"
            if payload <= 8 and typ == 1:
                out["auth_overhead"] = len(data)  # a key-only filler packet
            return out
        out["kind"] = "sync"
        return out


def make_adapter(scn: Scenario, seed: int) -> Adapter:
    return RealAdapter(scn, seed)
