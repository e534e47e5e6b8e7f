"""TESLA-authenticated engines: the :class:`alc.engine.Engine` contract around an ALC or
NORM engine, so drivers and the simulator use them unchanged.

``AuthenticatedSender(engine, tesla_sender)``: every datagram of the engine is wrapped
(EXT_AUTH inserted, MAC, Group MAC); TESLA's own control packets (bootstraps, silent-
period key disclosures) go out through the same ``datagrams_to_send`` path.  Incoming
datagrams: a Direct Time Synchronization Request (EXT_AUTH Type 5) is answered with a
signed response addressed to the requester (``addr``; over NORM this is the normal
feedback path, over ALC the driver's unicast side channel); everything else (NORM
NACK/ACK feedback) goes to the engine.

``AuthenticatedReceiver(tesla_receiver, engine)``: datagrams go through the verifier;
only authenticated ones reach the engine (with the address they arrived from).  NORM
receiver feedback carries no TESLA tag (RFC 5776 authenticates sender messages only), so
what a receiver acts on before (without) authentication is limited, and each bounded
(``docs/tesla-choices.md`` "Before authentication", ``docs/security/norm.md``): an
overheard NORM_NACK only feeds NACK suppression, for content we know, kept as ranges, at most
``norm.receiver.MAX_HEARD_RANGES`` per cycle, and delays a need of ours by one NACK cycle
at most; an overheard NORM_ACK is only counted; NORM_REPORT is dropped here
(``tesla.drop.report``).  At the sender (``AuthenticatedSender``) NACK/ACK go to the
engine, whose repair state per NACK and in total is capped and whose GRTT/CC only move
on an echo of a probe it sent.  Congestion control
before authentication (RFC 5776 §4.3 step 5, ``cc_preauth=True``, NORM only): the
verifier hands every packet that passed the safe-packet test (and Group MAC / key checks)
to the engine's ``congestion_control_hint(data, now)`` before buffering it, so the NORM
receiver echoes NORM_CMD(CC) probes at arrival, not d intervals later (see
``docs/tesla-choices.md`` row 34).  ALC has no CC building block here: nothing to do.
With ``sync="direct"``
the receiver sends a Type 5 request to ``sync_addr`` (None = the session group) at
start and every ``sync_retry`` seconds until D_t is known.

``stats`` merges the engine's counters with the TESLA ones prefixed ``tesla.`` (so
``tesla.drop.bad_mac`` etc.).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from alc.engine import Address, BatchEntry, Engine, Times, innermost
from alc.errors import DecodeError
from alc.receiver import AlcReceiver
from alc.sender import AlcSender
from norm import messages as M
from norm.receiver import NormReceiver
from tesla.core.authenticator import PROTO_NORM, TeslaSender, ext_area
from tesla.core.receiver import TeslaReceiver

if TYPE_CHECKING:
    from alc.mmsg import Slab

__all__ = ["AuthenticatedReceiver", "AuthenticatedSender", "alc_early_discard"]

_NORM_FEEDBACK_TYPES = (4, 5, 6)  # NORM_NACK, NORM_ACK, NORM_REPORT


def _merged(engine_stats: dict[str, int], tesla_stats: dict[str, int]) -> dict[str, int]:
    out = dict(engine_stats)
    for k, v in tesla_stats.items():
        out["tesla." + k if not k.startswith("tesla.") else k] = v
    return out


def _is_sync_request(data: bytes, asid: int, protocol: str) -> bool:
    """Cheap scan for an EXT_AUTH Type 5 of our ASID (the full parse follows)."""
    try:
        start, end = ext_area(data, protocol)
    except DecodeError:
        return False
    pos = start
    while pos + 3 <= end:
        het = data[pos]
        if het >= 128:
            pos += 4
            continue
        ln = data[pos + 1] << 2
        if ln == 0:
            return False
        if het == 1 and data[pos + 2] == (asid << 4) | 5:
            return True
        pos += ln
    return False


class AuthenticatedSender(BatchEntry):
    """Engine = ALC/NORM sender engine + :class:`TeslaSender` (see module doc)."""

    def __init__(self, engine: Engine, tesla_sender: TeslaSender) -> None:
        self.engine = engine
        self.tesla = tesla_sender
        self._responses: list[tuple[bytes, Address | None]] = []

    @property
    def stats(self) -> dict[str, int]:
        return _merged(self.engine.stats, self.tesla.stats)

    def receive_datagram(self, data: bytes, addr: Address | None, now: float) -> None:
        t = self.tesla
        is_norm = t.protocol == PROTO_NORM
        if is_norm and len(data) > 1 and data[0] & 15 in _NORM_FEEDBACK_TYPES:
            self.engine.receive_datagram(data, addr, now)
            return
        if _is_sync_request(data, t.params.asid, t.protocol):
            rid: Any = addr
            if is_norm and len(data) >= 8:
                rid = int.from_bytes(data[4:8], "big")  # NORM source_id of the receiver
            resp = t.handle_sync_request(data, rid, now)
            if resp is not None:
                self._responses.append((resp, addr))
            return
        self.engine.receive_datagram(data, addr, now)

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address | None]]:
        t = self.tesla
        dg = self.engine.datagrams_to_send(now)
        out: list[tuple[bytes, Address | None]] = [
            (p, None) for p in t.control_packets(now, data_follows=bool(dg))
        ]
        if self._responses:
            out.extend(self._responses)
            self._responses = []
        if dg:
            wrapped = t.wrap_many([p for p, _ in dg], now)
            out.extend(zip(wrapped, [a for _, a in dg], strict=True))
        return out

    def get_timer(self) -> float | None:
        a = self.engine.get_timer()
        b = self.tesla.next_deadline()
        if a is None:
            return b
        return a if b is None else min(a, b)

    def handle_timer(self, now: float) -> None:
        self.engine.handle_timer(now)

    def next_event(self) -> Any | None:
        return self.engine.next_event()

    @property
    def done(self) -> bool:
        """Engine finished and TESLA has disclosed the last data interval's key."""
        eng = self.engine
        # the ALC sender says when all its data is out; a NORM sender's session ends
        # with its EOT (the CLI watches for it), any other engine is never done
        eng_done = isinstance(eng, AlcSender) and eng.done
        return eng_done and not self.tesla.disclosure_pending()


class AuthenticatedReceiver(BatchEntry):
    """Engine = :class:`TeslaReceiver` in front of an ALC/NORM receiver engine."""

    def __init__(
        self,
        tesla_receiver: TeslaReceiver,
        engine: Engine,
        *,
        sync_addr: Address | None = None,
        sync_retry: float = 1.0,
        cc_preauth: bool = True,
    ) -> None:
        self.tesla = tesla_receiver
        self.engine = engine
        self._own: dict[str, int] = {}  # counters of this wrapper
        self.sync_addr = sync_addr
        self.sync_retry = sync_retry
        self._next_sync: float | None = None
        self._norm = tesla_receiver.protocol == PROTO_NORM
        self.takes_slab = not self._norm
        self._release_delay_set = False
        # the hooks of the concrete engine behind any Forwarding ones (a test double has
        # none)
        base = innermost(engine)
        self._alc_rx = base if isinstance(base, AlcReceiver) else None
        self._norm_rx = base if self._norm and isinstance(base, NormReceiver) else None
        if cc_preauth and self._norm_rx is not None:
            tesla_receiver.cc_hint = self._norm_rx.congestion_control_hint
        # an ALC engine directly behind: the accepted datagrams go to it as rows of
        # their interval's arena (alc.rows.Rows; its bulk path copies the symbols from
        # there into its blocks), no bytes object per datagram (a Forwarding engine in
        # between may keep what it is given: it gets bytes)
        tesla_receiver.release_rows = type(engine) is AlcReceiver

    @property
    def stats(self) -> dict[str, int]:
        out = _merged(self.engine.stats, self.tesla.stats)
        out.update(self._own)
        return out

    def _feedback(self, data: bytes, addr: Address | None, now: float) -> None:
        """Receiver feedback (no TESLA tag): NACK/ACK to the engine, whose use of it is
        bounded (see module doc); NORM_REPORT is never acted on."""
        if data[0] & 15 == M.NORM_REPORT:
            self._own["tesla.drop.report"] = self._own.get("tesla.drop.report", 0) + 1
            return
        self.engine.receive_datagram(data, addr, now)

    def receive_datagram(self, data: bytes, addr: Address | None, now: float) -> None:
        self.receive_datagrams([data], [addr], [now])

    def receive_slab(self, slab: Slab, addrs: Sequence[Address | None]) -> None:
        """ALC: the datagrams of a ``recvmmsg`` slab (arrival times: its stamps) verified
        as one batch, the TESLA receiver reading the rows (``takes_slab``; NORM, whose
        receiver feedback goes to the engine first, takes ``receive_datagrams``)."""
        n = slab.count
        if not n:
            return
        self.tesla.receive_slab(slab, addrs)
        if self.tesla.has_authenticated:
            self._release(float(slab.stamps[n - 1]))

    def receive_datagrams(
        self, datagrams: Sequence[bytes], addrs: Sequence[Address | None], times: Times
    ) -> None:
        """A batch in arrival order, each datagram with its own arrival time (one
        ``recvmmsg``, a stretch of a capture): verified as one batch."""
        if not datagrams:
            return
        if self._norm:
            # receiver feedback carries no TESLA tag: to the engine at once, the rest
            # through the verifier as one batch
            fb = _NORM_FEEDBACK_TYPES
            keep = [k for k, d in enumerate(datagrams) if not (len(d) > 1 and d[0] & 15 in fb)]
            if len(keep) != len(datagrams):
                kept = set(keep)
                for k, d in enumerate(datagrams):
                    if k not in kept:
                        self._feedback(d, addrs[k], float(times[k]))
                if not keep:
                    return
                datagrams = [datagrams[k] for k in keep]
                addrs = [addrs[k] for k in keep]
                times = [times[k] for k in keep]
            nrx = self._norm_rx
            if nrx is not None and nrx.presence_wanted:
                # NORM join policy: what we received before authenticating it counts as
                # presence (a cold start's unsafe drops), see NormReceiver.presence_hint
                for k, d in enumerate(datagrams):
                    nrx.presence_hint(d, float(times[k]))
        self.tesla.receive_batch(datagrams, times, addrs)
        if self.tesla.has_authenticated:
            self._release(float(times[-1]))

    def _release(self, now: float) -> None:
        nrx = self._norm_rx
        if nrx is not None and not self._release_delay_set and self.tesla.params is not None:
            # NORM: the engine sees sender messages up to (d+1)*T_int late (its NACK
            # holdoff covers that, docs/tesla-choices.md "TESLA-aware NORM timing")
            self._release_delay_set = True
            p = self.tesla.params
            nrx.config.release_delay = (p.d + 1) * p.tint_ms / 1000.0
        t = self.tesla
        if t.release_rows:  # one call per verified interval, its rows valid during it
            try:
                for rows, metas in t.pop_released(wait=False):
                    self.engine.receive_datagrams(rows, metas, [now] * len(rows))
            finally:
                t.released_done()
            return
        pk, meta = t.pop_authenticated_lists(wait=False)
        if pk:  # the engine's batch entry: one call for the datagrams released together
            self.engine.receive_datagrams(pk, meta, [now] * len(pk))

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address | None]]:
        out: list[tuple[bytes, Address | None]] = []
        t = self.tesla
        if t.sync == "direct" and t.d_t is None:
            if self._next_sync is None or now >= self._next_sync:
                out.append((t.make_sync_request(now), self.sync_addr))
                self._next_sync = now + self.sync_retry
        out.extend(self.engine.datagrams_to_send(now))
        return out

    def get_timer(self) -> float | None:
        a = self.engine.get_timer()
        b: float | None = None
        if self.tesla.sync == "direct" and self.tesla.d_t is None:
            b = self._next_sync if self._next_sync is not None else 0.0
        c = self.tesla.next_deadline()
        if c is not None and (b is None or c < b):
            b = c
        if a is None:
            return b
        return a if b is None else min(a, b)

    def handle_timer(self, now: float) -> None:
        self.engine.handle_timer(now)
        t = self.tesla
        if self._alc_rx is not None and self._alc_rx.finished is not None:
            # ALC session over ("closed" | "timeout"): nothing buffered can be
            # authenticated any more
            t.close()
        else:
            t.expire(now)  # (finishes an interval verified in the background when due)
        if t.has_authenticated:
            self._release(now)

    def next_event(self) -> Any | None:
        ev = self.engine.next_event()
        if ev is None:
            ev = self.tesla.next_event()
        return ev


def alc_early_discard(receiver: Any) -> Any:
    """RFC 5776 §4.3.1 hook for :class:`alc.receiver.AlcReceiver`: a packet for an object
    the receiver has already delivered is useless (the verifier never applies it to
    packets with the A or B flag)."""
    done: dict[int, str] = receiver.received

    def useless(data: bytes) -> bool:
        b0, b1 = data[0], data[1]
        h = (b1 >> 4) & 1
        tsi_len = ((b1 >> 7) & 1) * 4 + h * 2
        toi_len = ((b1 >> 5) & 3) * 4 + h * 2
        if toi_len == 0:
            return False
        pos = 4 + (((b0 >> 2) & 3) + 1) * 4 + tsi_len
        toi = int.from_bytes(data[pos : pos + toi_len], "big")
        return toi != 0 and toi in done

    return useless
