"""TESLA sender side (RFC 5776 §3): wraps the datagrams of an ALC or NORM sender engine.

For every outgoing packet :meth:`TeslaSender.wrap` inserts one EXT_AUTH tag at the end
of the header-extension area (offset ``hdr_len*4``; LCT HDR_LEN is octet 2, NORM
hdr_len octet 1, both counted in 32-bit words and both ending the header extensions),
adds HEL to the header length, then computes:

1. the TESLA MAC with ``K'_i = F'(K_i)`` over the whole packet (LCT/NORM header with all
   extensions, FEC payload ID, payload) with the MAC field **and** the Group MAC field
   zero (RFC 5776 §3.3.1; the Group MAC is computed after the MAC, §3.3, so it is zero
   at that point -- ``ZERO_GROUP_MAC_IN_TESLA_MAC``); the MAC padding octets keep their
   (zero) value and are covered;
2. the Group MAC (if the session uses it) with only the Group MAC field zero (§3.3.3).

Tag choice (RFC 5776 §3.4.3-§3.4.6, §3.1.2.3): Type 2 in intervals 0..d-1, otherwise
Type 1 disclosing ``K_{i-d}`` (every ``disclose_every``-th packet of an interval, the
first one always; others Type 2).  Multi-chain sessions (S = 0): during the last
``n_tx_newkcc`` intervals of chain j, every second packet of an interval carries a
Type 3 (commitment of chain j+1); during chain-relative intervals ``d ..
d+n_tx_lastkey-1`` of chain j >= 1, every second packet a Type 4 (last key of chain
j-1).  With the RFC's MUST ``d + n_tx_lastkey + n_tx_newkcc <= N+1`` the two never
overlap.

Signalling (:meth:`control_packets`): the signed bootstrap (Type 0) in a stand-alone
control packet (ALC: LCT header only, no encoding symbol; NORM: NORM_CMD(APPLICATION)),
``bootstrap_at_start`` times one interval apart at start and then every
``bootstrap_period`` seconds; and, after the last data packet (end of session or silent
period), ``silent_fill`` empty Type 1 packets in each of the following d +
``last_key_intervals`` - 1 intervals that had no traffic, so the key of the last data
interval reaches receivers (RFC 5776 §3.1.2.5: first in interval last + d, then in
``last_key_intervals`` - 1 more intervals by a later key it derives from, so that one
loss burst or a few random losses do not leave the end of a session unverified); in intervals before the last of these d the last filler carries the
interval's Type 3/4 tag instead (so sparse traffic, one packet per interval, still
sends the next chain's commitment).  Direct time sync: :meth:`handle_sync_request` answers a Type 5 with a signed
Type 6 (RFC 5776 §3.4.2, replay/DoS rules of §6.2.1 via ``DirectSyncServer``).

NORM: the wrapper renumbers the 16-bit ``sequence`` of every sender message it emits
(data and its own control messages) so that the sequence stays monotonic
(RFC 5740 §4.1, RFC 5776 §6.2.2 replay check at receivers).
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.hmac import HMAC

from alc.engine import count
from alc.errors import DecodeError
from tesla.core import extauth as ea
from tesla.core.bootstrap_sig import Signer
from tesla.core.crypto import F_prime, MacContext, hash_algorithm
from tesla.core.keychain import KeyChainSet
from tesla.core.ntp import ntp_to_posix, ntp_to_wire, posix_to_ntp
from tesla.core.params import TeslaParams
from tesla.core.timesync import DirectSyncServer, dot_to_field
from tesla.mac import kernel as mackernel

__all__ = [
    "PROTO_ALC",
    "PROTO_NORM",
    "HDR_LEN_OFFSET",
    "ControlTemplate",
    "TeslaSender",
    "insert_ext",
    "ext_area",
]

PROTO_ALC = "alc"
PROTO_NORM = "norm"
#: octet holding the header length (32-bit words, header extensions included)
HDR_LEN_OFFSET = {PROTO_ALC: 2, PROTO_NORM: 1}
#: see module doc (RFC 5776 §3.3.1 only names the MAC field; the mandated order
#: MAC-then-Group-MAC means the Group MAC field is still zero when the MAC is computed)
ZERO_GROUP_MAC_IN_TESLA_MAC = True

NORM_CMD = 3
NORM_CMD_APPLICATION = 7
_NORM_CMD_APP_HEAD = struct.Struct("!BBHIHBBBBH")  # common + instance/grtt/bg/flavor/reserved


def ext_area(buf: bytes | bytearray | memoryview, protocol: str) -> tuple[int, int]:
    """``(start, end)`` of the header-extension area of an LCT or NORM packet."""
    if protocol == PROTO_ALC:
        from alc.lct import ext_region

        return ext_region(buf)
    from norm.messages import header_regions

    return header_regions(buf)


def insert_ext(pkt: bytes | bytearray, ext: bytes, protocol: str) -> bytearray:
    """Copy of ``pkt`` with ``ext`` appended to the header-extension area (at
    ``hdr_len*4``) and the header length increased by ``len(ext)/4``."""
    hb = HDR_LEN_OFFSET[protocol]
    if len(pkt) <= hb:
        raise DecodeError("hdr_len", "packet too short")
    end = pkt[hb] << 2
    words = pkt[hb] + (len(ext) >> 2)
    if end > len(pkt):
        raise DecodeError("hdr_len", f"{end} octets exceed the packet of {len(pkt)}")
    if words > 255:
        raise ValueError("header would exceed 255 words with the EXT_AUTH")
    out = bytearray(pkt[:end])
    out[hb] = words
    out += ext
    out += pkt[end:]
    return out


@dataclass(frozen=True)
class ControlTemplate:
    """Header fields for the stand-alone control packets the wrapper emits itself
    (bootstrap, key-disclosure fillers, sync response).  ALC: the session's TSI
    (``tsi_bits`` 16/32/48).  NORM: the sender's source_id, instance_id, grtt, backoff,
    gsize (as the NORM sender engine uses them)."""

    tsi: int = 0
    tsi_bits: int = 32
    source_id: int = 0
    instance_id: int = 0
    grtt: int = 0
    backoff: int = 0
    gsize: int = 0


def control_header(protocol: str, tpl: ControlTemplate, seq: int = 0) -> bytes:
    """An empty control packet: ALC = LCT header without TOI/extensions/payload (RFC
    5776 §5.2.1: "control packet, i.e., containing no encoding symbol"); NORM =
    NORM_CMD(APPLICATION) with no content."""
    if protocol == PROTO_ALC:
        from alc.lct import LCTHeader

        toi_bits = 16 if tpl.tsi_bits in (16, 48) else 0
        return LCTHeader(tsi=tpl.tsi, toi=0, tsi_bits=tpl.tsi_bits, toi_bits=toi_bits).encode()
    return _NORM_CMD_APP_HEAD.pack(
        0x10 | NORM_CMD,
        4,
        seq & 0xFFFF,
        tpl.source_id,
        tpl.instance_id,
        tpl.grtt,
        (tpl.backoff << 4) | tpl.gsize,
        NORM_CMD_APPLICATION,
        0,
        0,
    )


class _Interval:
    """Per-interval sender state: keyed-once MAC context and tag prefixes."""

    __slots__ = ("i", "ctx_copy", "kprime", "plain", "nokey", "special", "count", "lo", "hi")

    ctx_copy: Any
    kprime: bytes
    plain: bytes
    nokey: bytes

    def __init__(self, i: int) -> None:
        self.i = i
        self.count = 0
        self.special: bytes | None = None
        self.lo = 0.0
        self.hi = 0.0


class TeslaSender:
    """Authenticator for one TESLA session over ALC or NORM (see module doc).

    ``signer`` is a :class:`tesla.core.bootstrap_sig.Signer` or an RSA private key.
    ``chains`` defaults to a :class:`KeyChainSet` with random primary keys.
    ``d_o_t`` (2^-32 s units, signed) is advertised in the bootstrap (A = 1) for
    indirect time synchronization.
    """

    def __init__(
        self,
        params: TeslaParams,
        signer: Signer | rsa.RSAPrivateKey,
        *,
        protocol: str = PROTO_ALC,
        template: ControlTemplate | None = None,
        chains: KeyChainSet | None = None,
        group_key: bytes | None = None,
        disclose_every: int = 1,
        bootstrap_period: float = 2.0,
        bootstrap_at_start: int = 3,
        silent_fill: int = 2,
        last_key_intervals: int = 4,
        n_tx_lastkey: int | None = None,
        n_tx_newkcc: int | None = None,
        d_o_t: int | None = None,
        sync_server: DirectSyncServer | None = None,
        accept_legacy_sync_types: bool = False,
    ) -> None:
        if protocol not in HDR_LEN_OFFSET:
            raise ValueError(f"protocol must be {PROTO_ALC!r} or {PROTO_NORM!r}")
        if params.group_mac != (group_key is not None):
            raise ValueError("params.group_mac and group_key must agree")
        if disclose_every < 1:
            raise ValueError("disclose_every >= 1")
        self.params = p = params
        self.protocol = protocol
        self.signer = (
            signer if isinstance(signer, Signer) else Signer(signer, p.sig_algo_id, p.sig_hash_id)
        )
        self.template = template or ControlTemplate()
        self.chains = chains or KeyChainSet(p)
        self.group_key = group_key
        self.disclose_every = disclose_every
        self.bootstrap_period = bootstrap_period
        self.bootstrap_at_start = max(1, bootstrap_at_start)
        self.silent_fill = silent_fill
        if last_key_intervals < 1:
            raise ValueError("last_key_intervals >= 1")
        self.last_key_intervals = last_key_intervals
        self.d_o_t = d_o_t
        self.accept_legacy_sync_types = accept_legacy_sync_types
        self.layout = ea.TagLayout(
            p.key_len, p.mac_len, self.signer.signature_length, p.group_mac, ea.GROUP_MAC_LEN
        )
        n1 = p.n_chain + 1
        if p.single_chain:
            self.n_tx_lastkey = self.n_tx_newkcc = 0
        else:
            lk = min(3, max(0, n1 - p.d - 1)) if n_tx_lastkey is None else n_tx_lastkey
            nk = n1 - lk - p.d if n_tx_newkcc is None else n_tx_newkcc  # RFC RECOMMENDED
            if p.d + lk + nk > n1 or nk < 1:
                raise ValueError(
                    "multi-chain session needs d + n_tx_lastkey + n_tx_newkcc <= N+1 "
                    "(RFC 5776 §3.1.2.3) with n_tx_newkcc >= 1"
                )
            self.n_tx_lastkey, self.n_tx_newkcc = lk, nk
        self.sync_server = sync_server or DirectSyncServer(p.group_mac)
        self.stats: dict[str, int] = {}
        self._gctx = MacContext.group(group_key, p.group_mac_id) if group_key else None
        self._g = p.group_mac_len
        self._hb = HDR_LEN_OFFSET[protocol]
        self._km = p.mac_len
        self._cur: _Interval | None = None
        self._bounds_cache: dict[int, tuple[float, float]] = {}
        self._seq = 0
        self._boot_times: list[float] = []
        self._next_boot: float | None = None
        self._last_data_interval: int | None = None
        self._traffic_intervals: set[int] = set()
        self._filled_through: int | None = None
        self._tail_done = -1  # highest chain whose last keys a tail filler disclosed
        self._started = False

    # ------------------------------------------------------------------ time
    def interval_at(self, now: float) -> int:
        """Sender interval index at POSIX time ``now`` (exact NTP arithmetic; inside the
        current interval, away from its float bounds, without it: every send call asks)."""
        cur = self._cur
        if cur is not None and cur.lo + 1e-6 <= now < cur.hi - 1e-6:
            return cur.i
        return self.params.interval_of(posix_to_ntp(now))

    def interval_bounds(self, i: int) -> tuple[float, float]:
        """POSIX start and end of interval i (exact NTP arithmetic; a few recent ones
        cached: :meth:`next_deadline` asks on every send call, ~7% of a 1.6 Gbit/s
        sender's time in Fraction arithmetic otherwise)."""
        cache = self._bounds_cache
        b = cache.get(i)
        if b is None:
            if len(cache) >= 16:
                cache.clear()
            p = self.params
            b = cache[i] = (ntp_to_posix(p.interval_start(i)), ntp_to_posix(p.interval_start(i + 1)))
        return b

    def _interval(self, now: float) -> _Interval:
        cur = self._cur
        # fast path inside the cached interval, with a margin around the float boundaries
        if cur is not None and cur.lo + 1e-6 <= now < cur.hi - 1e-6:
            return cur
        i = self.interval_at(now)
        if cur is not None and cur.i == i:
            return cur
        if i < 0:
            raise ValueError("sending before T0")
        self.params.wire_index(i)
        return self._enter(i)

    def _enter(self, i: int) -> _Interval:
        p = self.params
        st = _Interval(i)
        st.lo, st.hi = self.interval_bounds(i)
        # keyed once per interval (K'_i = F'(K_i)), copied per packet
        st.kprime = F_prime(self.chains.key(i), p.prf_id)
        st.ctx_copy = HMAC(st.kprime, hash_algorithm(p.mac_id)).copy
        lay = self.layout
        st.nokey = self._tag_prefix(ea.TYPE_TAG_NO_KEY, i, b"", lay)
        if i >= p.d:  # RFC 5776 §3.4.3: no Type 1 in intervals 0..d-1
            st.plain = self._tag_prefix(ea.TYPE_TAG, i, self.chains.disclosed_key(i), lay)
        else:
            st.plain = st.nokey
        if not p.single_chain:
            n1 = p.n_chain + 1
            j, r = divmod(i, n1)
            if r >= n1 - self.n_tx_newkcc:
                st.special = self._tag_prefix(
                    ea.TYPE_TAG_NEW_CHAIN, i, self.chains.next_chain_commitment(i), lay
                )
            elif j >= 1 and p.d <= r < p.d + self.n_tx_lastkey:
                st.special = self._tag_prefix(
                    ea.TYPE_TAG_LAST_KEY, i, self.chains.old_chain_last_key(i), lay
                )
        self._cur = st
        return st

    def _tag_prefix(self, typ: int, i: int, key: bytes, lay: ea.TagLayout) -> bytes:
        """EXT_AUTH octets up to (excluding) the MAC field."""
        n = ea.tag_length(typ, lay)
        return struct.pack("!BBBBI", ea.EXT_AUTH, n >> 2, (self.params.asid << 4) | typ, 0, i) + key

    # ------------------------------------------------------------------ data path
    def wrap(self, pkt: bytes | bytearray | memoryview, now: float) -> bytes:
        """Authenticate one ALC/NORM packet produced by the engine (sent at ``now``)."""
        st = self._interval(now)
        k = st.count
        st.count = k + 1
        self._last_data_interval = st.i
        self._traffic_intervals.add(st.i)
        if len(self._traffic_intervals) > 64:
            self._traffic_intervals = {x for x in self._traffic_intervals if x >= st.i - 8}
        if st.special is not None and k & 1:
            prefix = st.special
        elif k % self.disclose_every == 0:
            prefix = st.plain
        else:
            prefix = st.nokey
        return self._seal(pkt, st, prefix)

    def batch_tags(self, st: _Interval, n: int) -> tuple[tuple[bytes, ...], bytes | np.ndarray]:
        """:meth:`wrap`'s tag choice for the next ``n`` datagrams of interval ``st``: the
        tag prefixes ``(Type 1 or 2 with key, Type 2, [Type 3/4])`` and, per datagram, the
        index of its prefix (one octet each, possibly more than ``n``): the special tag on odd counts, else the key-disclosing
        one every ``disclose_every``-th datagram, else Type 2 (RFC 5776 §3.4)."""
        pf: tuple[bytes, ...] = (st.plain, st.nokey)
        if self.disclose_every == 1:  # the common cases without arrays
            if st.special is None:
                return pf, bytes(n)
            pat = b"\x02\x00" if st.count & 1 else b"\x00\x02"
            return pf + (st.special,), pat * ((n + 1) >> 1)
        c = st.count + np.arange(n)
        kinds = np.where(c % self.disclose_every == 0, 0, 1).astype(np.uint8)
        if st.special is not None:
            kinds[(c & 1) == 1] = 2
            pf += (st.special,)
        return pf, kinds

    def batch_sent(self, st: _Interval, n: int) -> None:
        """Sender state after ``n`` datagrams tagged in interval ``st`` as one batch: the
        same as ``n`` calls of :meth:`wrap` (counts, traffic intervals, NORM sequence)."""
        st.count += n
        self._last_data_interval = st.i
        self._traffic_intervals.add(st.i)
        if len(self._traffic_intervals) > 64:
            self._traffic_intervals = {x for x in self._traffic_intervals if x >= st.i - 8}
        if self._hb == 1:
            self._seq = (self._seq + n) & 0xFFFF
        count(self.stats, "tesla.tagged", n)

    def wrap_many(
        self, pkts: list[bytes] | list[bytes | bytearray | memoryview], now: float
    ) -> list[bytes]:
        """:meth:`wrap` for datagrams the engine hands over together at ``now``.

        Same output as calling :meth:`wrap` on each in order.  Without a Group MAC the
        native kernel tags the whole batch in one call (``seal``: EXT_AUTH inserted, MAC
        over the datagram with the MAC field zero); else, for ALC with one tag prefix for
        the whole interval, a tight loop with the interval's keyed-once HMAC."""
        if not pkts:
            return []
        st = self._interval(now)
        seal = None if self._g else mackernel.sealer(self.params.mac_id)
        if seal is not None:
            pf, kinds = self.batch_tags(st, len(pkts))
            seq0 = self._seq if self._hb == 1 else -1
            out: list[bytes] = seal(
                self.params.mac_id, st.kprime, pkts, self._hb, pf, kinds[: len(pkts)], self._km,
                seq0, None, None, None,
            )
            self.batch_sent(st, len(pkts))
            return out
        if (
            self._hb != 2
            or self._g
            or self.disclose_every != 1
            or (st.special is not None and len(pkts) + st.count > 1)
            or not pkts
        ):
            return [self.wrap(p, now) for p in pkts]
        st.count += len(pkts)
        self._last_data_interval = st.i
        self._traffic_intervals.add(st.i)
        if len(self._traffic_intervals) > 64:
            self._traffic_intervals = {x for x in self._traffic_intervals if x >= st.i - 8}
        prefix = st.plain
        km = self._km
        body = len(prefix) + km
        pad = bytes((-body) & 3)
        zeros = bytes(km) + pad
        add = (body + len(pad)) >> 2
        copy = st.ctx_copy
        out = []
        ap = out.append
        join = b"".join
        for pkt in pkts:
            e = pkt[2] << 2
            if e > len(pkt) or e < 4:
                raise ValueError(f"header length {e} does not fit the packet of {len(pkt)}")
            head = bytearray(pkt[:e])
            head[2] += add  # ValueError past 255 words
            tail = pkt[e:]
            h = copy()
            h.update(head)
            h.update(prefix)
            h.update(zeros)
            h.update(tail)
            ap(join((head, prefix, h.finalize()[:km], pad, tail)))
        count(self.stats, "tesla.tagged", len(pkts))
        return out

    def _seal(self, pkt: bytes | bytearray | memoryview, st: _Interval, prefix: bytes) -> bytes:
        km = self._km
        g = self._g
        body = len(prefix) + km
        pad = (-body) & 3
        L = body + pad + g
        hb = self._hb
        end = pkt[hb] << 2
        words = pkt[hb] + (L >> 2)
        if end > len(pkt) or end <= hb:
            raise ValueError(f"header length {end} does not fit the packet of {len(pkt)}")
        if words > 255:
            raise ValueError("header would exceed 255 words with the EXT_AUTH")
        head = bytearray(pkt[:end])
        head[hb] = words
        if hb == 1:  # NORM: monotonic sequence over everything the wrapper emits
            head[2] = (self._seq >> 8) & 0xFF
            head[3] = self._seq & 0xFF
            self._seq = (self._seq + 1) & 0xFFFF
        tail = pkt[end:]
        zeros = bytes(km + pad + g)
        h = st.ctx_copy()
        h.update(head)
        h.update(prefix)
        h.update(zeros)
        h.update(tail)
        mac = h.finalize()[:km]
        if g:
            assert self._gctx is not None
            mid = prefix + mac + bytes(pad)
            gm = self._gctx.compute_parts((head, mid, bytes(g), tail))
            out = b"".join((head, mid, gm, tail))
        else:
            out = b"".join((head, prefix, mac, bytes(pad), tail))
        count(self.stats, "tesla.tagged")
        return out

    # ------------------------------------------------------------------ signalling
    def _signed(
        self, pkt_with_zero_sig: bytearray, sig_off: int, ext_off: int, ext_len: int
    ) -> bytes:
        """Fill Signature at ``sig_off`` (field zero during signing), then the Group MAC."""
        sig = self.signer.sign(bytes(pkt_with_zero_sig))
        pkt_with_zero_sig[sig_off : sig_off + len(sig)] = sig
        if self._gctx is not None:
            gpos = ext_off + ext_len - self._g
            pkt_with_zero_sig[gpos : gpos + self._g] = self._gctx.compute(pkt_with_zero_sig)
        return bytes(pkt_with_zero_sig)

    def _control(self) -> bytearray:
        hdr = control_header(self.protocol, self.template, self._seq)
        if self.protocol == PROTO_NORM:
            self._seq = (self._seq + 1) & 0xFFFF
        return bytearray(hdr)

    def bootstrap_packet(self, now: float) -> bytes:
        """A signed Bootstrap Information control packet (RFC 5776 §3.4.1, §5.2.1)."""
        p = self.params
        i = max(0, self.interval_at(now))
        j = p.chain_of(i)
        dot = None
        positive = True
        if self.d_o_t is not None:
            f = dot_to_field(self.d_o_t)
            positive = bool(f >> 63)
            dot = f & ((1 << 63) - 1)
        msg = ea.Bootstrap(
            asid=p.asid,
            d=p.d,
            prf_id=p.prf_id,
            mac_id=p.mac_id,
            group_mac_id=p.wire_group_mac_id,
            sig_algo=self.signer.sig_algo_id,
            sig_hash=self.signer.sig_hash_id,
            t_int_ms=p.tint_ms,
            t0=ntp_to_wire(p.t0_ntp),
            n=p.n_chain,
            i=p.wire_index(i),
            commitment=self.chains.commitment(j),
            signature=bytes(self.signer.signature_length),
            single_chain=p.single_chain,
            d_o_t=dot,
            d_o_t_positive=positive,
            group_mac=bytes(self._g) if self._g else None,
        )
        ext = ea.encode(msg)
        ctl = self._control()
        off = ctl[self._hb] << 2
        pkt = insert_ext(ctl, ext, self.protocol)
        sig_off = off + ea.BOOTSTRAP_FIXED + ea.pad4(p.key_len)
        count(self.stats, "tesla.bootstrap")
        return self._signed(pkt, sig_off, off, len(ext))

    def key_disclosure_packet(self, now: float, special: bool = False) -> bytes:
        """An empty control packet with a tag of the current interval (Type 1 when a key
        can be disclosed): the silent-period filler of RFC 5776 §3.1.2.5.  ``special``:
        the interval's Type 3/4 tag instead, when it has one (see :meth:`control_packets`)."""
        st = self._interval(now)
        st.count += 1
        count(self.stats, "tesla.key_fill")
        prefix = st.special if special and st.special is not None else st.plain
        return self._seal(bytes(self._control()), st, prefix)

    def control_packets(self, now: float, data_follows: bool = False) -> list[bytes]:
        """Bootstraps and silent-period key disclosures due at ``now``.  ``data_follows``:
        the caller tags data packets at ``now`` right after these, so the current
        interval is not silent: no filler for it (its first data packet discloses the
        key, §3.4.3), which would only be one more packet for receivers to decide alone."""
        out: list[bytes] = []
        p = self.params
        tint = p.tint_ms / 1000.0
        if not self._started:
            self._started = True
            self._boot_times = [now + k * tint for k in range(self.bootstrap_at_start)]
            self._next_boot = now + max(self.bootstrap_period, self.bootstrap_at_start * tint)
        while self._boot_times and self._boot_times[0] <= now:
            self._boot_times.pop(0)
            out.append(self.bootstrap_packet(now))
        if self._next_boot is not None and self.bootstrap_period > 0 and now >= self._next_boot:
            self._next_boot = now + self.bootstrap_period
            out.append(self.bootstrap_packet(now))
        last = self._last_data_interval
        if last is not None and self.silent_fill > 0:
            i = self.interval_at(now)
            end = self._fill_end(last)
            done = self._filled_through if self._filled_through is not None else last
            if (
                last < i and done < min(i, end) and i not in self._traffic_intervals
                and not data_follows
            ):
                # i > end: a sender that stalled through the whole window (a loaded host)
                # still discloses once, K_{i-d}, from which K_last derives, and is done
                self._filled_through = min(i, end)
                if not (p.single_chain and i > p.n_chain):  # a single chain ends at K_N
                    # sparse traffic (an interval with one packet never reaches the
                    # odd count of wrap()): the last filler of the intervals before
                    # last + d carries the Type 3 commitment / Type 4 last key when the
                    # interval has one (RFC 5776 §3.1.2.3 "alternates"); the fillers of
                    # last + d and later disclose K_last or a key it derives from
                    for k in range(self.silent_fill):
                        sp = i < last + p.d and k == self.silent_fill - 1
                        out.append(self.key_disclosure_packet(now, special=sp))
                    self._traffic_intervals.add(i)
        t = self._chain_tail_interval()
        if t is not None:
            # the keys of chain j's last intervals are disclosed only in the first d
            # intervals of chain j+1 (Type 1) or by its Type 4 tags (RFC 5776 §3.1.2.2);
            # sparse traffic may have no packet there: one filler at chain-relative
            # interval d-1 (Type 1, discloses K_{(j+1)(N+1)-1}) or, if that was missed,
            # in d..d+n_tx_lastkey-1 (Type 4)
            i = self.interval_at(now)
            if t <= i <= t + self.n_tx_lastkey:
                self._tail_done = t // (p.n_chain + 1) - 1
                if i not in self._traffic_intervals and not data_follows:
                    for _ in range(max(1, self.silent_fill)):
                        out.append(self.key_disclosure_packet(now, special=i > t))
                    self._traffic_intervals.add(i)
            elif i > t + self.n_tx_lastkey:
                self._tail_done = t // (p.n_chain + 1) - 1  # too late: nothing to do
        return out

    def _chain_tail_interval(self) -> int | None:
        """Interval (j+1)(N+1)+d-1 when chain j had tagged packets whose keys may still
        need a disclosure from chain j+1 (None: nothing due)."""
        p = self.params
        last = self._last_data_interval
        if p.single_chain or last is None:
            return None
        if self._filled_through is not None and self._filled_through > last:
            last = self._filled_through
        n1 = p.n_chain + 1
        j = last // n1
        if j <= self._tail_done:
            return None
        return (j + 1) * n1 + p.d - 1

    def next_deadline(self) -> float | None:
        """When :meth:`control_packets` has something to send next (None: nothing)."""
        cands: list[float] = []
        if not self._started:
            return None
        if self._boot_times:
            cands.append(self._boot_times[0])
        if self._next_boot is not None and self.bootstrap_period > 0:
            cands.append(self._next_boot)
        last = self._last_data_interval
        if last is not None and self.silent_fill > 0:
            nxt = max(last + 1, (self._filled_through or last) + 1)
            if nxt <= self._fill_end(last):
                lo, _ = self.interval_bounds(nxt)
                cands.append(math.nextafter(lo, math.inf) + 1e-6)
        t = self._chain_tail_interval()
        if t is not None:
            lo, _ = self.interval_bounds(t)
            cands.append(math.nextafter(lo, math.inf) + 1e-6)
        return min(cands) if cands else None

    def disclosure_pending(self) -> bool:
        """True while silent-period key disclosures for the last data interval are due."""
        last = self._last_data_interval
        if last is None or self.silent_fill <= 0:
            return False
        done = self._filled_through if self._filled_through is not None else last
        return done < self._fill_end(last)

    def _fill_end(self, last: int) -> int:
        """Last interval of the silent-period fillers after data interval ``last``:
        K_last is first disclosed in interval last + d, then (it derives from any later
        key, RFC 4082 §3.2) again in each of the ``last_key_intervals`` - 1 following
        intervals, so that with a high probability every receiver gets one (RFC 5776
        §3.1.2.5); a single chain ends with its key N."""
        end = last + self.params.d + self.last_key_intervals - 1
        if self.params.single_chain:
            end = min(end, max(last + self.params.d, self.params.n_chain))
        return end

    # ------------------------------------------------------------------ direct sync
    def handle_sync_request(self, data: bytes, receiver_id: Any, now: float) -> bytes | None:
        """Answer a Direct Time Synchronization Request (Type 5) with a signed Type 6
        response packet, or None (dropped: malformed, bad Group MAC, replay/rate limit).
        ``receiver_id`` identifies the requester (address or NORM node id)."""
        try:
            start, end = ext_area(data, self.protocol)
            off = ea.find_ext_auth(data, start, end, self.params.asid)
            msg = ea.decode(
                data, off, self.layout, accept_legacy_sync_types=self.accept_legacy_sync_types
            )
        except DecodeError:
            count(self.stats, "drop.malformed")
            return None
        if not isinstance(msg, ea.SyncRequest):
            count(self.stats, "drop.malformed")
            return None
        if self._gctx is not None:
            if msg.group_mac is None:
                count(self.stats, "drop.bad_group_mac")
                return None
            z = bytearray(data)
            gpos = off + (data[off + 1] << 2) - self._g
            z[gpos : gpos + self._g] = bytes(self._g)
            if not self._gctx.verify(z, msg.group_mac):
                count(self.stats, "drop.bad_group_mac")
                return None
        now_ntp = posix_to_ntp(now)
        ans = self.sync_server.respond(receiver_id, msg.t_r, now_ntp)
        if ans is None:
            count(self.stats, "drop.replay")
            return None
        t_s, t_r = ans
        resp = ea.SyncResponse(
            self.params.asid,
            ntp_to_wire(t_s),
            t_r,
            bytes(self.signer.signature_length),
            bytes(self._g) if self._g else None,
        )
        ext = ea.encode(resp)
        ctl = self._control()
        eoff = ctl[self._hb] << 2
        pkt = insert_ext(ctl, ext, self.protocol)
        count(self.stats, "tesla.sync_response")
        return self._signed(pkt, eoff + 20, eoff, len(ext))
