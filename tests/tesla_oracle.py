"""A plain scalar model of RFC 5776 §4.3: the oracle of the equivalence tests.

This is the former reference receiver (``tesla/verifier.py``) reduced to its per-datagram
rules: no batch path, no fast path, no arenas; each buffered datagram is kept as its own
``bytes`` object and an interval is verified with one ``cryptography`` HMAC per datagram.
``tests/test_fastpath.py`` feeds the same streams through this model and through
:class:`tesla.core.receiver.TeslaReceiver` and requires identical decisions, counters and
released datagrams.  Shipped code never imports this module.
"""

from __future__ import annotations

import math
import struct
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Sequence
from fractions import Fraction
from typing import Any

import numpy as np
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.hmac import HMAC
from numpy.lib.stride_tricks import as_strided

from alc.errors import DecodeError
from tesla.core import extauth as ea
from tesla.core.authenticator import (
    HDR_LEN_OFFSET,
    PROTO_ALC,
    PROTO_NORM,
    ControlTemplate,
    control_header,
    ext_area,
    insert_ext,
)
from tesla.core.bootstrap_sig import verify as sig_verify
from tesla.core.crypto import F_prime, MacContext, hash_algorithm
from tesla.core.floodguard import (
    DEFAULT_COPIES_PER_POSITION,
    ENTRY_COST,
    TABLE_BUDGET_FRACTION,
    PositionCap,
)
from tesla.core.keychain import KeyStatus, KeyVerifierSet
from tesla.core.ntp import NTP_ONE_SECOND, NTP_UNIX_EPOCH_OFFSET, ntp_from_wire, posix_to_ntp
from tesla.core.params import MAC_LEN, PRF_KEY_LEN, ParamError, TeslaParams
from tesla.core.ratelimit import SignatureGate, source_of
from tesla.core.timesync import DirectSyncClient, indirect_dt_from_ms

__all__ = ["DROP_REASONS", "HmacMacs", "OracleReceiver", "PER_PACKET_OVERHEAD"]

DROP_REASONS = (
    "unsafe",
    "bad_mac",
    "bad_key",
    "bad_group_mac",
    "replay",
    "evicted",
    "malformed",
    "no_bootstrap",
    "bad_signature",
    "flushed",
    "duplicate",
    "stale",
    "flood",
    "rate_limited",
)
#: accounted octets per packet beyond its length, buffered or released and not yet popped
#: (the receiver's constant: its arena index/metas, or the released ``bytes`` object)
PER_PACKET_OVERHEAD = 80
#: drop a tag whose interval the sender cannot have reached yet (digest §7 choice)
REJECT_FUTURE_INTERVAL = True
#: intervals whose accepted tags are remembered to classify late copies as replays
REPLAY_MEMORY_INTERVALS = 64
#: accounted octets per remembered interval beyond its tags (the receiver's constant)
REPLAY_ENTRY_OVERHEAD = 160
#: events kept when nobody drains :meth:`TeslaReceiver.next_event` (oldest dropped)
MAX_EVENTS = 1024
#: seconds after the end of an interval's safe window (when its key is due) after which
#: packets still waiting for that key are evicted as ``stale`` (the key can still be
#: derived from any later key of the chain, so this only bounds a long key outage)
DEFAULT_KEY_WAIT = 10.0
#: NORM sequence replay window (RFC 5776 §6.2.2), in messages
NORM_SEQ_WINDOW = 4096
#: seconds beyond the clock-error bound within which a first bootstrap's interval index
#: must match the receiver's clock (else ``unsafe``, no RSA): issue 15
BOOTSTRAP_TIME_SLACK = 60.0
#: signature hashes accepted in a bootstrap (TESLA-SIG-CRYPTO-FUNC; SHA-1 refused)
DEFAULT_ALLOWED_SIG_HASHES = frozenset({2, 3, 4, 5})

_I = struct.Struct("!I")
_POSIX_OFFSET_NTP = NTP_UNIX_EPOCH_OFFSET * NTP_ONE_SECOND


def _ceil_float(x: Fraction) -> float:
    """Smallest float >= x (exact)."""
    f = float(x)
    if Fraction(f) < x:
        f = math.nextafter(f, math.inf)
    return f


class HmacMacs:
    """How a verification batch's MACs are computed (injectable into
    :class:`TeslaReceiver`, ``macs=``): one HMAC per packet over its bytes with the MAC
    (and Group MAC) fields zeroed, keyed once per interval with ``K'_w = F'(K_w)``.
    ``pkts[k]`` is the datagram as received, ``buf[starts[k]:ends[k]]`` its zeroed copy;
    returns the full digests (the caller truncates and compares)."""

    def macs(
        self,
        key_w: bytes,
        prf_id: int,
        mac_id: int,
        pkts: Sequence[bytes],
        buf: memoryview,
        starts: list[int],
        ends: list[int],
    ) -> list[bytes]:
        copy = HMAC(F_prime(key_w, prf_id), hash_algorithm(mac_id)).copy
        digs: list[bytes] = []
        ap = digs.append
        for s, e in zip(starts, ends, strict=True):
            h = copy()
            h.update(buf[s:e])
            ap(h.finalize())
        return digs


class _Pending:
    __slots__ = (
        "pkts", "metas", "moffs", "goffs", "commits", "nbytes", "lo", "hi", "key1",
        "positions", "scanned",
    )

    def __init__(self, lo: float, hi: float) -> None:
        self.lo = lo  # safe-test thresholds of the interval (see _interval_bounds)
        self.hi = hi
        self.key1: bytes | None = None  # verified K_{i-d} (Type 1 fast path)
        self.pkts: list[bytes] = []
        self.metas: list[Any] = []  # caller's per-packet data (e.g. source address)
        self.moffs: list[int] = []  # offset of the MAC field in each packet
        self.goffs: list[int] = []  # offset of the Group MAC field, -1 if none
        # (packet index, Type 3 commitment); FastTeslaReceiver's lane also stores
        # (index array, one commitment shared by those packets)
        self.commits: list[tuple[Any, bytes]] = []
        self.nbytes = 0
        # per-position cap (tesla/core/floodguard.py): position hashes, datagrams scanned
        self.positions: dict[int, int] | None = None
        self.scanned = 0


class OracleReceiver:
    """The scalar model of one TESLA receiver (see module doc)."""

    def __init__(
        self,
        public_key: rsa.RSAPublicKey,
        *,
        protocol: str = PROTO_ALC,
        asid: int = 0,
        group_key: bytes | None = None,
        sync: str = "indirect",
        max_clock_error_ms: float = 100.0,
        d_err_ms: float = 0.0,
        s_sr: int = 0,
        max_buffered_bytes: int = 64 << 20,
        max_packets_per_interval: int = 1 << 16,
        allowed_sig_hashes: Iterable[int] = DEFAULT_ALLOWED_SIG_HASHES,
        pss_salt_length: int | str = "digest",
        accept_legacy_sync_types: bool = False,
        template: ControlTemplate | None = None,
        early_discard: Callable[[bytes], bool] | None = None,
        max_key_walk: int = 100_000,
        group_mac_id: int = 2,
        key_wait: float | None = DEFAULT_KEY_WAIT,
        macs: HmacMacs | None = None,
        copies_per_position: int = DEFAULT_COPIES_PER_POSITION,
    ) -> None:
        if protocol not in HDR_LEN_OFFSET:
            raise ValueError("protocol must be 'alc' or 'norm'")
        if sync not in ("indirect", "direct"):
            raise ValueError("sync must be 'indirect' or 'direct'")
        self.public_key = public_key
        self.protocol = protocol
        self.asid = asid
        self.group_key = group_key
        self.sync = sync
        self.max_clock_error_ms = max_clock_error_ms
        self.d_err_ms = d_err_ms
        self.max_buffered_bytes = max_buffered_bytes
        self.max_packets_per_interval = max_packets_per_interval
        self.allowed_sig_hashes = frozenset(allowed_sig_hashes)
        self.pss_salt_length = pss_salt_length
        self.accept_legacy_sync_types = accept_legacy_sync_types
        self.template = template or ControlTemplate()
        self.early_discard = early_discard
        self.max_key_walk = max_key_walk
        self.key_wait = key_wait
        self.macs = macs or HmacMacs()
        #: cache and rate limits of the RSA verifications (issue 15, tesla/core/ratelimit.py)
        self.sig_gate = SignatureGate()
        #: per-position cap applied when a buffer bound is reached (None: off)
        self.position_cap: PositionCap | None = PositionCap(
            HDR_LEN_OFFSET[protocol], 0, PER_PACKET_OVERHEAD, copies_per_position
        ) if copies_per_position else None
        #: RFC 5776 §4.3 step 5 hook ``(datagram, now)``: called for a packet that passed
        #: steps 1-4, before it is buffered (per-datagram path; :meth:`receive_batch` falls
        #: back to it when set, and so does ``FastTeslaReceiver.receive_batch``)
        self.cc_hint: Callable[[bytes, float], None] | None = None
        self._stats: dict[str, int] = {f"drop.{r}": 0 for r in DROP_REASONS}
        self._stats.update(
            {"buffered_bytes": 0, "buffered_packets": 0, "accepted": 0, "max_buffered_bytes": 0,
             "replay_bytes": 0}
        )
        # bounded: an undrained event queue must not grow under a flood
        self.events: deque[Any] = deque(maxlen=MAX_EVENTS)
        self.params: TeslaParams | None = None
        self.d_t: int | None = None  # 2^-32 s units
        self.keys: KeyVerifierSet | None = None
        self.sync_client = DirectSyncClient(s_sr)
        self._sig: tuple[int, int] | None = None  # (algo, hash) from the bootstrap
        self._d_o_t = 0
        self.group_mac_id = group_mac_id  # out of band, with K_g
        self._gctx = MacContext.group(group_key, group_mac_id) if group_key else None
        self._out_pk: list[bytes] = []  # released datagrams (parallel lists: no tuples
        self._out_meta: list[Any] = []  # on the hot path)
        self._pending: dict[int, _Pending] = {}
        self._bounds: dict[int, tuple[float, float]] = {}
        self._keycache: OrderedDict[int, bytes] = OrderedDict()
        self._recent: OrderedDict[int, bytes] = OrderedDict()  # interval -> accepted tags
        self._seq_hi: dict[int, int] = {}
        self._seq_seen: dict[int, set[int]] = {}
        self._hb = HDR_LEN_OFFSET[protocol]
        self._buffered = 0
        self._nbuf = 0
        self._released = 0
        self._replay_bytes = 0
        self._max_buffered = 0
        self._max_chain_seen = -1
        self._max_known = -1  # highest legitimate key index (any chain)
        self._t0_posix = 0.0  # float screens only; the safe test itself is exact
        self._tint_s = 1.0
        self._dt_s = 0.0
        self._ready = False
        self._tag_len: dict[int, int] = {}
        self._km = 0
        self._kp = 0
        self._g = 0

    # ------------------------------------------------------------------ helpers
    @property
    def stats(self) -> dict[str, int]:
        """Counters (``drop.<reason>``, ``accepted``, ...) and the buffer gauges
        ``buffered_bytes``, ``buffered_packets``, ``max_buffered_bytes``."""
        st = self._stats
        st["buffered_bytes"] = self._buffered
        st["buffered_packets"] = self._nbuf
        st["max_buffered_bytes"] = self._max_buffered
        st["replay_bytes"] = self._replay_bytes
        return st

    def _drop(self, reason: str, n: int = 1) -> None:
        k = "drop." + reason
        self._stats[k] = self._stats.get(k, 0) + n
        self.events.append(("drop", reason, n))

    @property
    def initialized(self) -> bool:
        return self._ready

    def next_event(self) -> Any | None:
        return self.events.popleft() if self.events else None

    def pop_authenticated(self) -> list[tuple[bytes, Any]]:
        """``(datagram, meta)`` of the authenticated datagrams, in release order, for
        the ALC/NORM engine (``meta`` as given to :meth:`receive`)."""
        pk, meta = self.pop_authenticated_lists()
        return list(zip(pk, meta, strict=True))

    def pop_authenticated_lists(self) -> tuple[list[bytes], list[Any]]:
        """Same as :meth:`pop_authenticated` as two parallel lists (datagrams, metas)."""
        pk, meta = self._out_pk, self._out_meta
        self._out_pk, self._out_meta = [], []
        self._buffered -= self._released  # released packets are charged until popped
        self._released = 0
        return pk, meta

    @property
    def has_authenticated(self) -> bool:
        return bool(self._out_pk)

    def _locate(self, data: bytes) -> int:
        """Offset of our EXT_AUTH (DecodeError if none/several/malformed header)."""
        if self.protocol == PROTO_ALC:
            n = len(data)
            if n < 4:
                raise DecodeError("LCT header", "too short")
            b1 = data[1]
            end = data[2] << 2
            start = (
                4
                + (((data[0] >> 2) & 3) + 1) * 4
                + ((b1 >> 5) & 4)
                + ((b1 >> 3) & 0xC)
                + ((b1 >> 3) & 2) * 2
            )
            if end > n or start > end:
                raise DecodeError("HDR_LEN", "inconsistent")
        else:
            start, end = ext_area(data, PROTO_NORM)
        asid = self.asid
        found = -1
        pos = start
        while pos < end:
            het = data[pos]
            if het >= 128:
                pos += 4
                continue
            if pos + 1 >= end:
                raise DecodeError("HEL", "no room")
            ln = data[pos + 1] << 2
            if ln == 0 or pos + ln > end:
                raise DecodeError("HEL", "bad extension length")
            if het == 1 and ln >= 4 and data[pos + 2] >> 4 == asid:
                if found >= 0:
                    raise DecodeError("EXT_AUTH", "more than one TESLA EXT_AUTH")
                found = pos
            pos += ln
        if found < 0:
            raise DecodeError("EXT_AUTH", "no TESLA EXT_AUTH")
        return found

    def _interval_bounds(self, i: int) -> tuple[float, float]:
        """(lo, hi): a tag of interval i arriving at ``now`` is safe iff now < hi
        (RFC 5776 §4.3), and not from the future iff now >= lo.  Exact thresholds."""
        p = self.params
        assert p is not None and self.d_t is not None
        tint = Fraction(p.tint_ms * NTP_ONE_SECOND, 1000)
        base = p.t0_ntp - self.d_t - _POSIX_OFFSET_NTP
        hi = _ceil_float((base + (i + p.d) * tint) / NTP_ONE_SECOND)
        lo = (
            _ceil_float((base + i * tint) / NTP_ONE_SECOND) if REJECT_FUTURE_INTERVAL else -math.inf
        )
        if len(self._bounds) > 4096:
            self._bounds.clear()
        self._bounds[i] = (lo, hi)
        return lo, hi

    # ------------------------------------------------------------------ main entry
    def receive_batch(
        self, packets: Sequence[bytes], now: Any, metas: Sequence[Any] | None = None
    ) -> None:
        """Each datagram in order (``now``: one time or one per datagram)."""
        n = len(packets)
        times = np.broadcast_to(np.asarray(now, dtype=np.float64), (n,)).tolist()
        for k in range(n):
            self.receive(packets[k], times[k], None if metas is None else metas[k])

    def receive(self, data: bytes | bytearray | memoryview, now: float, meta: Any = None) -> None:
        """Process one datagram that arrived at ``now`` (POSIX seconds)."""
        if type(data) is not bytes:
            data = bytes(data)
        try:
            off = self._locate(data)
        except DecodeError:
            self._drop("malformed")
            return
        self._receive_full(data, off, now, meta)

    def _receive_full(self, data: bytes, off: int, now: float, meta: Any) -> None:
        """RFC 5776 §4.3 steps 1-9 for one datagram whose EXT_AUTH is at ``off``."""
        typ = data[off + 2] & 15
        if typ == 0 or typ > 4:
            self._signalling(data, off, typ, now, meta)
            return
        if not self._ready:
            self._drop("no_bootstrap")
            return
        p = self.params
        assert p is not None
        ln = data[off + 1] << 2
        tl = self._tag_len[typ]
        goff = -1
        if ln != tl:
            if self._g == 0 and ln == tl + 4:
                goff = off + tl  # Group MAC in a G=0 session: ignored, zeroed for the MAC
            elif self._g and ln == tl - self._g:
                self._drop("bad_group_mac")  # G=1 session, tag without Group MAC (§4.3 3.)
                return
            else:
                self._drop("malformed")
                return
        elif self._g:
            goff = off + tl - self._g
        if (typ == 3 or typ == 4) and p.single_chain:
            self._drop("malformed")
            return
        (i,) = _I.unpack_from(data, off + 4)
        # NORM replay (RFC 5776 §6.2.2): only a datagram of an interval whose key is
        # legitimate can be a copy of an accepted one; only there is the 16-bit sequence
        # unambiguous (more than 2^15 messages may be in flight behind the TESLA delay)
        if self._hb == 1 and i <= self._max_known and self._norm_replayed(data):
            self._drop("replay")
            return
        # -- safe-packet test (step 2)
        b = self._bounds.get(i)
        if b is None:
            # cheap float screen first: an index more than one interval outside the
            # plausible window cannot pass the exact test (no Fraction work per forgery)
            approx = (now - self._t0_posix + self._dt_s) / self._tint_s
            if i > approx + 2 or i + p.d < approx - 2:
                self._drop("unsafe")
                return
            b = self._interval_bounds(i)
        if not (b[0] <= now < b[1]):
            if now >= b[1] and self._is_replay(i, data, off, typ):
                self._drop("replay")
            else:
                self._drop("unsafe")
            return
        # -- K_i already legitimate: it may be public, the packet is unsafe (RFC 5776
        # §6.2; only reachable if arrival times are not monotonic, e.g. a clock step)
        if i <= self._max_known:
            if self._is_replay(i, data, off, typ):
                self._drop("replay")
            else:
                self._stats["unsafe.key_known"] = self._stats.get("unsafe.key_known", 0) + 1
                self._drop("unsafe")
            return
        # -- Group MAC (step 3)
        if self._g:
            z = bytearray(data)
            z[goff : goff + 4] = b"\0\0\0\0"
            assert self._gctx is not None
            if not self._gctx.verify(z, data[goff : goff + 4]):
                self._drop("bad_group_mac")
                return
        # -- disclosed key (step 4)
        kp = self._kp
        new_keys: list[tuple[int, bytes]] | None = None
        key_ok = False  # the disclosed key is legitimate (known or newly verified)
        if typ == 1 or typ == 4:
            if typ == 1:
                x = i - p.d
                if x < 0:
                    self._drop("malformed")  # no Type 1 in intervals 0..d-1
                    return
            else:
                x = p.chain_of(i) * (p.n_chain + 1) - 1
                if x < 0:
                    self._drop("malformed")
                    return
            key = data[off + 8 : off + 8 + kp]
            known = self._keycache.get(x)
            if known is not None:
                if known != key:
                    self._drop("bad_key")
                    return
                key_ok = True
            else:
                assert self.keys is not None
                chk = self.keys.check(x, key, self._pending)
                st = chk.status
                if st is KeyStatus.MISMATCH or st is KeyStatus.BAD_LENGTH:
                    self._drop("bad_key")
                    return
                key_ok = st is KeyStatus.NEW or st is KeyStatus.KNOWN
                if st is KeyStatus.NEW:
                    new_keys = chk.new_keys
                    if x > self._max_known:
                        self._max_known = x
                    kc = self._keycache
                    for w, kw in new_keys[-256:]:
                        kc[w] = kw
                    while len(kc) > 1024:
                        kc.popitem(last=False)
                elif st is KeyStatus.KNOWN:
                    self._keycache[x] = key
                # UNVERIFIABLE / TOO_FAR / OUT_OF_CHAIN: ignore the key, keep the packet
        # -- chain bookkeeping / old-chain flush (RFC 5776 §4.4)
        c = i // (p.n_chain + 1)
        if c > self._max_chain_seen:
            self._max_chain_seen = c
            self._flush_before_chain(c - 1)
        # -- congestion control before authentication (step 5)
        if self.cc_hint is not None:
            self.cc_hint(data, now)
        # -- early discard (RFC 5776 §4.3.1): never signalling packets
        ed = self.early_discard
        if ed is not None and self._discardable(data) and ed(data):
            self._stats["discard.early"] = self._stats.get("discard.early", 0) + 1
        else:
            self._buffer(i, data, off + (8 if typ == 2 else 8 + kp), goff, typ, off, meta)
            if typ == 1 and key_ok:
                pend = self._pending.get(i)
                if pend is not None and pend.key1 is None:
                    pend.key1 = data[off + 8 : off + 8 + kp]
        if new_keys:
            for w, kw in new_keys:
                if w in self._pending:
                    self._authenticate(w, kw)

    # ------------------------------------------------------------------ buffering
    def _buffer(
        self, i: int, data: bytes, moff: int, goff: int, typ: int, off: int, meta: Any
    ) -> None:
        cost = len(data) + PER_PACKET_OVERHEAD
        pend = self._pending.get(i)
        if pend is not None and len(pend.pkts) >= self.max_packets_per_interval:
            self._cap_positions(i)
            if len(pend.pkts) >= self.max_packets_per_interval:
                self._drop("evicted")
                return
        if self._buffered + cost > self.max_buffered_bytes:
            self._shed_replay(cost)
        if self._buffered + cost > self.max_buffered_bytes:
            self._cap_positions(None)
            while self._buffered + cost > self.max_buffered_bytes and self._pending:
                oldest = min(self._pending)
                if oldest >= i:
                    break
                self._evict_interval(oldest, "evicted")
            if self._buffered + cost > self.max_buffered_bytes:
                self._drop("evicted")
                return
            pend = self._pending.get(i)
        if pend is None:
            lo, hi = self._bounds.get(i) or self._interval_bounds(i)
            pend = self._pending[i] = _Pending(lo, hi)
        pend.pkts.append(data)
        pend.metas.append(meta)
        pend.moffs.append(moff)
        pend.goffs.append(goff)
        if typ == 3:
            pend.commits.append((len(pend.pkts) - 1, data[off + 8 : off + 8 + self._kp]))
        pend.nbytes += cost
        self._buffered += cost
        self._nbuf += 1
        if self._buffered > self._max_buffered:
            self._max_buffered = self._buffered

    def _cap_positions(self, only: int | None) -> None:
        """A buffer bound is reached: drop the datagrams beyond the first few of their
        position in interval ``only`` (None: every pending interval), so that forged
        copies cannot displace the datagrams they copy (issue 15, tesla/core/floodguard.py)."""
        cap = self.position_cap
        if cap is None:
            return
        if cap.km != self._km:
            cap.km = self._km
        pending = self._pending
        used = sum(len(p.positions) for p in pending.values() if p.positions is not None)
        budget = int(self.max_buffered_bytes * TABLE_BUDGET_FRACTION) - used * ENTRY_COST
        for w in [only] if only is not None else list(pending):
            pend = pending[w]
            before = len(pend.positions) if pend.positions is not None else 0
            n, freed = cap.compact(pend, max(0, budget))
            budget -= (len(pend.positions or ()) - before) * ENTRY_COST
            self._buffered -= freed
            if n:
                self._nbuf -= n
                self._drop("flood", n)

    def _evict_interval(self, w: int, reason: str) -> None:
        pend = self._pending.pop(w)
        self._buffered -= pend.nbytes
        self._nbuf -= len(pend.pkts)
        self._drop(reason, len(pend.pkts))

    # ------------------------------------------------------------------ stale buffers
    def next_deadline(self) -> float | None:
        """Local time at which the oldest buffered interval becomes stale (its key was due
        ``key_wait`` s ago and never came), or None if nothing is buffered."""
        pend = self._pending
        if not pend or self.key_wait is None:
            return None
        return pend[min(pend)].hi + self.key_wait  # (hi grows with the interval index)

    def expire(self, now: float) -> int:
        """Evict (``drop.stale``) the intervals whose key is more than ``key_wait`` s
        overdue at ``now`` (RFC 5776 §4.3 step 6: a buffered packet may be discarded once
        its key cannot be obtained any more).  Returns the number of packets evicted."""
        if self.key_wait is None or not self._pending:
            return 0
        lim = now - self.key_wait
        n = 0
        for w in [w for w, p in self._pending.items() if p.hi <= lim]:
            n += len(self._pending[w].pkts)
            self._evict_interval(w, "stale")
        return n

    def close(self) -> int:
        """End of session: no key will come any more; evict every buffered packet
        (``drop.stale``).  Returns the number of packets evicted."""
        n = 0
        for w in list(self._pending):
            n += len(self._pending[w].pkts)
            self._evict_interval(w, "stale")
        return n

    def _flush_before_chain(self, c: int) -> None:
        """Drop pending packets of chains < c (RFC 5776 §4.4: chain j is hopeless once
        chain j+2 is reached or its commitment is verified)."""
        if c <= 0 or self.params is None:
            return
        first = c * (self.params.n_chain + 1)
        for w in [w for w in self._pending if w < first]:
            self._evict_interval(w, "flushed")
        # long sessions: the key state of those chains goes too (memory flat over chains)
        if self.keys is not None:
            self.keys.drop_chains_before(c)

    # ------------------------------------------------------------------ batch verify
    def _authenticate(self, w: int, key_w: bytes) -> None:
        """Verify every packet buffered for interval w with K_w as one batch; the packets
        released are charged (until popped) before the interval's charge ends."""
        pend = self._pending.pop(w, None)
        if pend is None:
            return
        n0 = len(self._out_pk)
        self._verify(pend, w, key_w)
        rel = self._out_pk[n0:]
        c = sum(map(len, rel)) + PER_PACKET_OVERHEAD * len(rel)
        self._shed_replay(c)
        self._released += c
        self._buffered += c
        if self._buffered > self._max_buffered:
            self._max_buffered = self._buffered
        self._buffered -= pend.nbytes
        self._nbuf -= len(pend.pkts)

    def _remember(self, w: int, tags: bytes) -> None:
        """Accepted tags for the replay test, charged to the buffer in the room nothing
        else needs (oldest intervals go first; not kept without room)."""
        old = self._recent.pop(w, None)
        if old is not None:
            self._replay_bytes -= len(old) + REPLAY_ENTRY_OVERHEAD
            self._buffered -= len(old) + REPLAY_ENTRY_OVERHEAD
        c = len(tags) + REPLAY_ENTRY_OVERHEAD
        while len(self._recent) >= REPLAY_MEMORY_INTERVALS:
            self._forget_oldest()
        self._shed_replay(c)
        if self._buffered + c <= self.max_buffered_bytes:
            self._recent[w] = tags
            self._replay_bytes += c
            self._buffered += c
            if self._buffered > self._max_buffered:
                self._max_buffered = self._buffered

    def _forget_oldest(self) -> None:
        _, tags = self._recent.popitem(last=False)
        self._replay_bytes -= len(tags) + REPLAY_ENTRY_OVERHEAD
        self._buffered -= len(tags) + REPLAY_ENTRY_OVERHEAD

    def _shed_replay(self, need: int) -> None:
        while self._recent and self._buffered + need > self.max_buffered_bytes:
            self._forget_oldest()

    def _verify(self, pend: _Pending, w: int, key_w: bytes) -> None:
        p = self.params
        assert p is not None
        pkts = pend.pkts
        n = len(pkts)
        km = self._km
        lens = np.fromiter(map(len, pkts), dtype=np.int64, count=n)
        ends = np.cumsum(lens)
        starts = ends - lens
        slab = bytearray().join(pkts)
        arr = np.frombuffer(slab, dtype=np.uint8)
        # rows of km octets starting at every offset of the slab (a strided view, no
        # copy): gather the received MACs and zero the MAC fields with one index each
        win = as_strided(arr, shape=(len(arr) - km + 1, km), strides=(1, 1))
        mpos = starts + np.asarray(pend.moffs, dtype=np.int64)
        tags = win[mpos]  # (n, km) copy of the received MACs
        win[mpos] = 0
        goffs = np.asarray(pend.goffs, dtype=np.int64)
        gmask = goffs >= 0
        if gmask.any():
            g4 = as_strided(arr, shape=(len(arr) - 3, 4), strides=(1, 1))
            g4[starts[gmask] + goffs[gmask]] = 0
            del g4
        del win
        mv = memoryview(slab)
        digs = self.macs.macs(
            key_w, p.prf_id, p.mac_id, pkts, mv, starts.tolist(), ends.tolist()
        )
        mv.release()
        del arr
        hl = len(digs[0])
        ok = (np.frombuffer(b"".join(digs), dtype=np.uint8).reshape(n, hl)[:, :km] == tags).all(
            axis=1
        )
        nbad = n - int(ok.sum())
        if nbad:
            self._drop("bad_mac", nbad)
        if not nbad and n == 1:
            keep = [0]
        else:
            good = np.flatnonzero(ok)
            if len(good) > 1:  # identical copies of one packet: release once
                good = self._dedupe(tags, good)
            keep = good.tolist()
        if not keep:
            return
        self._remember(w, tags[keep].tobytes())
        self._stats["accepted"] += len(keep)
        if pend.commits:
            okset = set(keep)
            for idx, commitment in pend.commits:
                if idx in okset:
                    self._new_chain_commitment(p.chain_of(w) + 1, commitment)
        out_pk = self._out_pk
        out_meta = self._out_meta
        hb = self._hb
        metas = pend.metas
        # header-only packets may be the wrapper's key-disclosure fillers (consumed)
        hdr_only = lens == np.frombuffer(slab, dtype=np.uint8)[starts + hb].astype(np.int64) << 2
        if hb == 2 and len(keep) == n and not hdr_only.any():
            out_pk.extend(pkts)  # common case: everything authentic
            out_meta.extend(metas)
            return
        for k in keep:
            pkt = pkts[k]
            if hb == 1:
                self._norm_accept(pkt)
            if hdr_only[k] and self._is_control(pkt):
                self._stats["tesla.control"] = self._stats.get("tesla.control", 0) + 1
                continue
            out_pk.append(pkt)
            out_meta.append(metas[k])

    def _dedupe(self, tags: np.ndarray, good: np.ndarray) -> np.ndarray:
        """Keep the first of authenticated packets with identical MACs (same interval,
        same MAC = same packet).  Sorting 8-octet prefixes as uint64 is cheap; equal
        prefixes are confirmed on the full tag."""
        u = np.ascontiguousarray(tags[good, :8]).view(np.uint64).ravel()
        order = np.argsort(u, kind="stable")
        su = u[order]
        eq = np.flatnonzero(su[1:] == su[:-1])
        if not len(eq):
            return good
        drop: set[int] = set()
        for k in eq.tolist():
            a, b = good[order[k]], good[order[k + 1]]
            if bytes(tags[a]) == bytes(tags[b]):
                drop.add(int(b))  # stable sort: b arrived after a
        self._drop("duplicate", len(drop))
        return np.array([g for g in good.tolist() if g not in drop], dtype=np.int64)

    def _new_chain_commitment(self, j: int, commitment: bytes) -> None:
        assert self.keys is not None
        if self.keys.add_commitment(j, commitment):
            self.events.append(("new_chain", j))
            self._flush_before_chain(j - 1)

    def _is_control(self, pkt: bytes) -> bool:
        """The wrapper's empty key-disclosure packets (not for the engine)."""
        if self._hb == 2:  # ALC: header only, no A/B flag
            return not pkt[1] & 3
        return pkt[0] & 15 == 3 and len(pkt) > 12 and pkt[12] == 7

    def _discardable(self, data: bytes) -> bool:
        if self._hb == 2:
            return not data[1] & 3  # never before auth: A (close session), B (close object)
        return data[0] & 15 == 2  # NORM: only NORM_DATA

    def _is_replay(self, i: int, data: bytes, off: int, typ: int) -> bool:
        tags = self._recent.get(i)
        if tags is None:
            return False
        km = self._km
        mo = off + (8 if typ == 2 else 8 + self._kp)
        tag = data[mo : mo + km]
        pos = tags.find(tag)
        while pos >= 0:
            if pos % km == 0:
                return True
            pos = tags.find(tag, pos + 1)
        return False

    # ------------------------------------------------------------------ NORM replay
    def _norm_key(self, data: bytes) -> tuple[int, int]:
        return int.from_bytes(data[4:8], "big"), (data[2] << 8) | data[3]

    def _norm_replayed(self, data: bytes) -> bool:
        src, seq = self._norm_key(data)
        hi = self._seq_hi.get(src)
        if hi is None:
            return False
        diff = (hi - seq) & 0xFFFF
        if diff >= 0x8000:  # newer than anything accepted
            return False
        return diff >= NORM_SEQ_WINDOW or seq in self._seq_seen[src]

    def _norm_accept(self, data: bytes) -> None:
        src, seq = self._norm_key(data)
        hi = self._seq_hi.get(src)
        seen = self._seq_seen.setdefault(src, set())
        seen.add(seq)
        if hi is None or ((seq - hi) & 0xFFFF) < 0x8000:
            self._seq_hi[src] = seq
            hi = seq
        if len(seen) > 2 * NORM_SEQ_WINDOW:
            self._seq_seen[src] = {s for s in seen if ((hi - s) & 0xFFFF) < NORM_SEQ_WINDOW}

    # ------------------------------------------------------------------ signalling
    def _signalling(self, data: bytes, off: int, typ: int, now: float, meta: Any = None) -> None:
        if typ == 0:
            self._bootstrap(data, off, now, meta)
        elif typ == 6 or (typ == 8 and self.accept_legacy_sync_types):
            self._sync_response(data, off, now, meta)
        else:
            self._drop("malformed")  # Type 5 is for the sender; 7..15 undefined

    def _check_group_mac(self, data: bytes, off: int, has_gm: bool) -> bool:
        """Group MAC of a signalling packet (last 4 octets of the EXT_AUTH)."""
        if self._gctx is None:
            return True
        if not has_gm:
            return False
        end = off + (data[off + 1] << 2)
        z = bytearray(data)
        z[end - 4 : end] = b"\0\0\0\0"
        return self._gctx.verify(z, data[end - 4 : end])

    def _signature_ok(
        self, data: bytes, message: bytes, signature: bytes, algo: int, h: int, meta: Any,
        now: float,
    ) -> bool:
        """RSA verification of a signalling datagram through :attr:`sig_gate`: an
        identical datagram takes its cached verdict, otherwise the source's and the
        global RSA budget must allow it (else ``drop.rate_limited``).  Counts
        ``drop.bad_signature`` when invalid."""
        gate = self.sig_gate
        dg = gate.digest(data)
        ok = gate.cached(dg)
        if ok is None:
            if not gate.admit(source_of(meta), now):
                self._drop("rate_limited")
                return False
            ok = sig_verify(self.public_key, message, signature, algo, h, self.pss_salt_length)
            gate.remember(dg, ok)
        if not ok:
            self._drop("bad_signature")
        return ok

    def _out_of_budget(self, data: bytes, meta: Any, now: float) -> bool:
        """No RSA budget left for this source and no cached verdict for this datagram:
        refused at once (``drop.rate_limited``), before any parsing (a refused forgery
        then costs a hash and a bucket look-up, not a decode)."""
        gate = self.sig_gate
        if gate.has_budget(source_of(meta), now) or gate.cached(gate.digest(data)) is not None:
            return False
        self._drop("rate_limited")
        return True

    def _bootstrap(self, data: bytes, off: int, now: float, meta: Any = None) -> None:
        if self._out_of_budget(data, meta, now):
            return
        try:
            msg = ea.decode(data, off)
        except DecodeError:
            self._drop("malformed")
            return
        assert isinstance(msg, ea.Bootstrap)
        now_ntp = posix_to_ntp(now)
        if self.params is not None:
            assert self.keys is not None
            if self.keys.has_chain(self.params.chain_of(msg.i)):
                self._stats["bootstrap.ignored"] = self._stats.get("bootstrap.ignored", 0) + 1
                return
        if not self._check_group_mac(data, off, msg.group_mac is not None):
            self._drop("bad_group_mac")
            return
        if msg.sig_hash not in self.allowed_sig_hashes:
            self._drop("bad_signature")
            return
        # every check that needs no RSA comes first (issue 15: RSA work per forgery)
        try:
            params = TeslaParams(
                t0_ntp=ntp_from_wire(msg.t0, now_ntp),
                tint_ms=msg.t_int_ms,
                n_chain=msg.n,
                d=msg.d,
                prf_id=msg.prf_id,
                mac_id=msg.mac_id,
                group_mac=msg.group_mac is not None,
                group_mac_id=msg.group_mac_id if msg.group_mac is not None else 2,
                asid=msg.asid,
                sig_algo_id=msg.sig_algo,
                sig_hash_id=msg.sig_hash,
                single_chain=msg.single_chain,
            )
        except ParamError:
            self._drop("malformed")
            return
        if self.params is not None:
            # a later bootstrap for a chain we missed: static parameters must not change,
            # and its interval must be one the sender can have reached (RFC 5776 §4.3)
            if params != self.params:
                self._drop("malformed")
                return
            if self.d_t is not None and msg.i > (
                (now - self._t0_posix + self._dt_s) / self._tint_s + 2
            ):
                self._drop("unsafe")
                return
        elif self.group_key is not None and (
            not params.group_mac or params.group_mac_id != self.group_mac_id
        ):
            self._drop("bad_group_mac")
            return
        elif not self._plausible_first(params, msg, now):
            self._drop("unsafe")
            return
        z = bytearray(data)
        so = off + ea.BOOTSTRAP_FIXED + ea.pad4(len(msg.commitment))
        z[so : so + ea.pad4(len(msg.signature))] = bytes(ea.pad4(len(msg.signature)))
        if msg.group_mac is not None:
            end = off + (data[off + 1] << 2)
            z[end - 4 : end] = b"\0\0\0\0"
        if not self._signature_ok(
            data, bytes(z), msg.signature, msg.sig_algo, msg.sig_hash, meta, now
        ):
            return
        if self.params is not None:
            assert self.keys is not None
            self.keys.add_commitment(params.chain_of(msg.i), msg.commitment)
            self.events.append(("new_chain", params.chain_of(msg.i)))
            return
        self.params = params
        self._t0_posix = (params.t0_ntp - _POSIX_OFFSET_NTP) / NTP_ONE_SECOND
        self._tint_s = params.tint_ms / 1000.0
        self._sig = (msg.sig_algo, msg.sig_hash)
        if msg.d_o_t is not None:
            self._d_o_t = msg.d_o_t if msg.d_o_t_positive else -msg.d_o_t
        self.keys = KeyVerifierSet(params, max_steps=self.max_key_walk)
        self.keys.add_commitment(params.chain_of(msg.i), msg.commitment)
        self._kp = PRF_KEY_LEN[params.prf_id]
        self._km = MAC_LEN[params.mac_id]
        self._g = params.group_mac_len
        lay = ea.TagLayout(self._kp, self._km, 0, params.group_mac)
        self._tag_len = {t: ea.tag_length(t, lay) for t in range(16)}
        for t in (0, *range(5, 16)):
            self._tag_len[t] = -1
        if self.sync == "indirect":
            self._set_dt(indirect_dt_from_ms(self.max_clock_error_ms, self._d_o_t, self.d_err_ms))
        elif self.sync_client.d_t is not None:
            self._set_dt(self.sync_client.d_t)
        self.events.append(("bootstrap", params))

    def _plausible_first(self, params: TeslaParams, msg: ea.Bootstrap, now: float) -> bool:
        """Indirect sync, before the first bootstrap: its interval index must be one the
        sender can be in now, given its own T0 and T_int, the clock-error bound and
        :data:`BOOTSTRAP_TIME_SLACK` (a receiver whose clock is wrong beyond its bound
        still gets the bootstrap, then counts its datagrams ``unsafe``); a forgery
        claiming another chain or another time costs no RSA.  (Direct sync: the offset
        is unknown before the first exchange, not checked.)"""
        if self.sync != "indirect":
            return True
        tint = params.tint_ms / 1000.0
        t0 = (params.t0_ntp - _POSIX_OFFSET_NTP) / NTP_ONE_SECOND
        slack = self.max_clock_error_ms / 1000.0 + self.d_err_ms / 1000.0 + BOOTSTRAP_TIME_SLACK
        if msg.d_o_t is not None:
            slack += msg.d_o_t / NTP_ONE_SECOND
        return (now - slack - t0) / tint - params.d - 2 <= msg.i <= (now + slack - t0) / tint + 1

    def _set_dt(self, d_t: int) -> None:
        self.d_t = d_t
        self._dt_s = d_t / NTP_ONE_SECOND
        self._bounds.clear()
        if self.params is not None:
            for w, pend in self._pending.items():
                pend.lo, pend.hi = self._interval_bounds(w)
        self._ready = self.params is not None
        self.events.append(("d_t", d_t))

    def _sync_response(self, data: bytes, off: int, now: float, meta: Any = None) -> None:
        if not self.sync_client.has_pending():
            self._drop("replay")  # RFC 5776 §6.2.1: no pending request -> drop at once
            return
        if self._out_of_budget(data, meta, now):
            return
        algo, h = self._sig or (1, 3)
        sl = (self.public_key.key_size + 7) // 8
        lay = ea.TagLayout(32, 16, sl, self.group_key is not None)
        try:
            msg = ea.decode(data, off, lay, accept_legacy_sync_types=self.accept_legacy_sync_types)
        except DecodeError:
            self._drop("malformed")
            return
        assert isinstance(msg, ea.SyncResponse)
        if not self._check_group_mac(data, off, msg.group_mac is not None):
            self._drop("bad_group_mac")
            return
        t_r = ntp_from_wire(msg.t_r, posix_to_ntp(now))
        if not self.sync_client.is_pending(t_r):
            self._drop("replay")
            return
        z = bytearray(data)
        z[off + 20 : off + 20 + ea.pad4(sl)] = bytes(ea.pad4(sl))
        if msg.group_mac is not None:
            end = off + (data[off + 1] << 2)
            z[end - 4 : end] = b"\0\0\0\0"
        if not self._signature_ok(data, bytes(z), msg.signature, algo, h, meta, now):
            return
        t_s = ntp_from_wire(msg.t_s, t_r)
        d_t = self.sync_client.on_response(t_s, t_r, True)
        if d_t is not None and self.sync == "direct":
            self._set_dt(d_t)

    def make_sync_request(self, now: float) -> bytes:
        """A Direct Time Synchronization Request packet (Type 5) to send to the sender
        (NORM: NORM_CMD(APPLICATION) from this receiver; ALC: an LCT control packet for
        the unicast side channel)."""
        t_r = self.sync_client.make_request(posix_to_ntp(now))
        g = self.group_key is not None
        msg = ea.SyncRequest(self.asid, t_r & ((1 << 64) - 1), bytes(4) if g else None)
        ctl = bytearray(control_header(self.protocol, self.template))
        off = ctl[self._hb] << 2
        ext = ea.encode(msg)
        pkt = insert_ext(ctl, ext, self.protocol)
        if g:
            assert self._gctx is not None
            end = off + len(ext)
            pkt[end - 4 : end] = self._gctx.compute(pkt)
        self._stats["tesla.sync_request"] = self._stats.get("tesla.sync_request", 0) + 1
        return bytes(pkt)

    # ------------------------------------------------------------------ introspection
    def pending_intervals(self) -> list[int]:
        return sorted(self._pending)

    @property
    def buffered_bytes(self) -> int:
        return self._buffered
