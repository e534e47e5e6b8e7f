"""Sans-I/O ALC/FLUTE receiver (RFC 5775 §4.4, RFC 6726) implementing :class:`alc.engine.Engine`.

Feed it datagrams with their arrival time; pop events::

    r = AlcReceiver(ReceiverConfig(tsi=1))
    r.receive_datagram(data, ("127.0.0.1", 4000), now)
    while (ev := r.next_event()) is not None: ...      # FileReceived / ObjectFailed / ...
    r.get_timer(); r.handle_timer(now)                    # object / session timeouts

Processing per packet: LCT header parsed and validated (invalid -> ``drop.malformed``),
TSI (and optional sender address) filtered (``drop.tsi`` / ``drop.sender``), the FEC Encoding
ID taken from the codepoint (FLUTE, RFC 6726 §5), TOI 0 reassembled per FDT Instance ID
(EXT_FDT V=1 RFC 3926 or V=2 RFC 6726, EXT_CENC), other TOIs reassembled with the OTI from
EXT_FTI or, failing that, from the FDT (packets of a TOI whose OTI is not known yet are
cached, bounded).  Source symbols are written straight into the object's buffer; repair
symbols are kept per block until the block can be decoded with the FEC building block.
Duplicates and reordering are tolerated (``duplicates`` counter).  On completion the
Content-MD5 (of the transported or the decoded body), the content decoding and the
Content-Length are checked before :class:`FileReceived` is emitted.

Memory bound (``max_objects``, ``max_buffered_bytes``): before a new object is allocated,
the incomplete object with the oldest last activity is evicted while either bound would be
exceeded; it is reported as ``ObjectFailed(reason="evicted")`` and counted in
``drop.evicted``.  If it comes back (carousel) it starts from scratch.  An object larger
than ``max_buffered_bytes`` on its own is refused: ``ObjectFailed("too_large")``, its
packets counted in ``drop.too_large``.  Cached packets of undescribed TOIs count towards
the byte bound and are dropped (``drop.pending_overflow``) beyond ``max_pending_bytes``.

Timeouts: an incomplete object without a packet for ``object_timeout`` s fails with
``"timeout"``; one whose close-object (B) flag was seen fails ``"closed_incomplete"``
``close_grace`` s later; A (close session) ends the session ``close_grace`` s later
(``SessionClosed("closed")``), and ``session_timeout`` s of silence end it too
(``SessionClosed("timeout")``), failing every incomplete object.
"""

from __future__ import annotations

import base64
import hashlib
import struct
import zlib
from array import array
from collections import deque
from dataclasses import dataclass
from typing import Any

from alc.engine import Address, BatchEntry, count
from alc.errors import DecodeError
from alc.ext import walk_extensions

NTP_OFFSET = 2208988800
PAYLOAD_ID_LEN = {0: 4, 1: 4, 2: 4, 5: 4, 6: 4, 128: 8, 129: 8, 130: 4}
_U32 = struct.Struct("!I")
_U16x2 = struct.Struct("!HH")


# ---------------------------------------------------------------------- events
@dataclass
class FileReceived:
    toi: int
    name: str
    data: bytes
    content_type: str | None = None
    content_encoding: str | None = None
    transfer_length: int = 0
    fdt_instance_id: int | None = None


@dataclass
class ObjectReceived:
    """An object completed that no FDT describes (``flute=False``, or at session end)."""

    toi: int
    data: bytes


@dataclass
class ObjectFailed:
    toi: int
    name: str | None
    reason: str


@dataclass
class FdtReceived:
    instance_id: int
    version: int
    files: list[Any]


@dataclass
class SessionClosed:
    reason: str


@dataclass
class ReceiverConfig:
    tsi: int | None = None  # None: lock on the first TSI seen
    sender_address: str | None = None  # None: lock on the first sender seen
    flute: bool = True  # False: plain ALC, objects delivered as ObjectReceived
    object_timeout: float = 30.0
    session_timeout: float = 60.0
    close_grace: float = 1.0
    max_objects: int = 64
    max_buffered_bytes: int = 512 * 1024 * 1024
    max_pending_bytes: int = 16 * 1024 * 1024
    check_expires: bool = True
    fti_last_field: str = "max_n"
    rs_matrix: str = "rfc5510"  # "flute" for ypo/flute (flute-alc) parity, "nrl", ...
    # keep received source symbols as references into the (immutable) datagrams instead of
    # copying them into a per-object buffer; the object is assembled once, on completion.
    # Memory: the same payload octets plus each held datagram's header (accounted), and
    # none at all when the datagram objects are shared (simulator: one object, N receivers)
    zero_copy: bool = False


# ---------------------------------------------------------------------- state
class _Obj:
    __slots__ = (
        "key", "toi", "oti", "scheme", "E", "L", "ks", "offs", "buf", "have", "nsrc",
        "repair", "decoders", "left", "last", "closed_at", "cenc", "fdt_version",
        "bytes", "pid", "eid", "refs", "roffs", "sbase",
    )

    def __init__(
        self, key: int, toi: int, oti: Any, scheme: Any, now: float, zero_copy: bool = False
    ) -> None:
        self.key = key
        self.toi = toi
        self.oti = oti
        self.eid: int = oti.encoding_id
        self.scheme = scheme
        self.E: int = oti.symbol_length
        self.L: int = oti.transfer_length
        self.ks: list[int] = list(scheme.block_lengths())
        offs = []
        pos = 0
        for k in self.ks:
            offs.append(pos)
            pos += k * self.E
        self.offs = offs
        # zero copy: source symbol j (= sbase[sbn] + esi) is refs[j][roffs[j]:...]
        self.refs: list[bytes | None] | None = None
        self.roffs: array[int] | None = None
        self.sbase: list[int] = []
        if zero_copy:
            self.buf = bytearray(0)
            n = sum(self.ks)
            self.refs = [None] * n
            self.roffs = array("I", bytes(4 * n))
            b = 0
            for k in self.ks:
                self.sbase.append(b)
                b += k
        else:
            self.buf = bytearray(self.L)
        self.have = [bytearray(k) for k in self.ks]
        self.nsrc = [0] * len(self.ks)
        self.repair: dict[int, dict[int, bytes]] = {}
        self.decoders: dict[int, Any] = {}
        self.left = sum(1 for k in self.ks if k > 0)
        self.last = now
        self.closed_at: float | None = None
        self.cenc = 0
        self.fdt_version = 0
        self.bytes = self.L
        self.pid = None


@dataclass
class _Header:
    tsi: int | None
    toi: int | None
    cp: int
    a: bool
    b: bool
    hlen: int
    fti: bytes | None
    fdt: int | None
    cenc: int | None


def parse_lct(buf: bytes) -> _Header:
    """Fast LCT header parse (RFC 5651 §5.1); only DecodeError on bad input."""
    n = len(buf)
    if n < 4:
        raise DecodeError("LCT", f"datagram of {n} octets")
    w = _U32.unpack_from(buf, 0)[0]
    if w >> 28 != 1:
        raise DecodeError("V", f"LCT version {w >> 28}")
    c = (w >> 26) & 3
    s = (w >> 23) & 1
    o = (w >> 21) & 3
    h = (w >> 20) & 1
    hlen = ((w >> 8) & 0xFF) * 4
    tsi_len = 4 * s + 2 * h
    toi_len = 4 * o + 2 * h
    pos = 4 + 4 * (c + 1)
    fixed = pos + tsi_len + toi_len
    if hlen < fixed:
        raise DecodeError("HDR_LEN", f"{hlen} octets < fixed part {fixed}")
    if hlen > n:
        raise DecodeError("HDR_LEN", f"{hlen} octets > datagram {n}")
    tsi = int.from_bytes(buf[pos : pos + tsi_len], "big") if tsi_len else None
    pos += tsi_len
    toi = int.from_bytes(buf[pos : pos + toi_len], "big") if toi_len else None
    pos += toi_len
    fti = fdt = cenc = None
    if hlen > pos:
        for het, off, ln in walk_extensions(buf, pos, hlen):
            if het == 64:
                fti = bytes(buf[off + 2 : off + ln])
            elif het == 192:
                fdt = _U32.unpack_from(buf, off)[0] & 0xFFFFFF
            elif het == 193:
                cenc = buf[off + 1]
    return _Header(tsi, toi, w & 0xFF, bool(w & 0x20000), bool(w & 0x10000), hlen, fti, fdt, cenc)


def _exts_ok(buf: bytes, pos: int, end: int) -> bool:
    """The structural checks of :func:`alc.ext.walk_extensions` on ``buf[pos:end]``."""
    while pos < end:
        if buf[pos] >= 128:
            pos += 4
        else:
            if pos + 1 >= end or buf[pos + 1] == 0:
                return False
            pos += buf[pos + 1] << 2
        if pos > end:
            return False
    return True


def content_decode(data: bytes, encoding: str | None, max_size: int = 1 << 34) -> bytes:
    if encoding in (None, "", "null"):
        return data
    wbits = {"gzip": 31, "x-gzip": 31, "zlib": 15, "deflate": -15}.get(encoding.lower())
    if wbits is None:
        raise DecodeError("Content-Encoding", f"unsupported {encoding!r}")
    try:
        d = zlib.decompressobj(wbits)
        out = d.decompress(data, max_size)
        if not d.eof:
            raise DecodeError("Content-Encoding", "truncated stream")
        return out
    except zlib.error as e:
        raise DecodeError("Content-Encoding", str(e)) from None


class AlcReceiver(BatchEntry):
    """FLUTE/ALC receiver engine.  See module docstring."""

    def __init__(self, config: ReceiverConfig | None = None) -> None:
        self.config = config or ReceiverConfig()
        self.stats: dict[str, int] = {"packets": 0, "bytes": 0}
        self._hcache: dict[bytes, int] = {}
        self._fcache: dict[bytes, int] = {}  # fixed LCT header part -> file object key
        self.tsi = self.config.tsi
        self.sender = self.config.sender_address
        self._events: deque[Any] = deque()
        self._objs: dict[int, _Obj] = {}
        self._buffered = 0
        self._pending: dict[int, list[tuple[bytes, float]]] = {}
        self._pending_bytes = 0
        self._done_tois: set[int] = set()
        self._done_fdt: set[int] = set()
        self._undescribed: dict[int, bytes] = {}
        self.announced: dict[int, Any] = {}  # TOI -> effective FDTFile
        self.fdt_instance_of: dict[int, int] = {}
        self.received: dict[int, str] = {}  # TOI -> name, bit-exact files
        self.failed: dict[int, str] = {}  # TOI -> reason
        self.fdt_complete = False
        self.first_packet: float | None = None
        self.last_packet: float | None = None
        self.closed_at: float | None = None
        self.finished: str | None = None  # "closed" | "timeout"

    # ------------------------------------------------------------------ Engine API
    def next_event(self) -> Any | None:
        return self._events.popleft() if self._events else None

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address | None]]:
        return []

    def receive_datagram(self, data: bytes, addr: Address | None, now: float) -> None:
        stats = self.stats
        stats["packets"] += 1
        stats["bytes"] += len(data)
        # Fast path: the LCT header bytes of an object's packets repeat verbatim, so a
        # header already validated and routed maps straight to its object.
        if len(data) > 3:
            hl = data[2] << 2
            hb = data[:hl]
            key = self._hcache.get(hb)
            if key is None and self._fcache:
                # headers whose extensions change per packet (e.g. a TESLA EXT_AUTH): the
                # fixed part (word 0 with flags/HDR_LEN/codepoint, CCI, TSI, TOI) of a file
                # object's packets repeats; the extension area is still walked
                b1 = data[1]
                fixed = 8 + 4 * ((data[0] >> 2) & 3) + 4 * ((b1 >> 7) + ((b1 >> 5) & 3)
                                                          + ((b1 >> 4) & 1))
                key = self._fcache.get(data[:fixed])
                if key is not None and (len(data) < hl or not _exts_ok(data, fixed, hl)):
                    key = None  # the full parse below counts it
            if key is not None and (addr is None or addr[0] == self.sender):
                ob = self._objs.get(key)
                if ob is not None:
                    self.last_packet = now
                    self._symbol(ob, data, len(hb), False, now)
                    return
        if self.finished is not None:
            count(stats, "drop.session_finished")
            return
        try:
            hd = parse_lct(data)
        except DecodeError:
            count(stats, "drop.malformed")
            return
        if self.sender is not None and addr is not None and addr[0] != self.sender:
            count(stats, "drop.sender")
            return
        if self.tsi is None:
            if hd.tsi is None:
                count(stats, "drop.no_tsi")
                return
            self.tsi = hd.tsi
        if hd.tsi != self.tsi:
            count(stats, "drop.tsi")
            return
        if self.sender is None and addr is not None:
            self.sender = addr[0]
        if self.first_packet is None:
            self.first_packet = now
        self.last_packet = now
        if hd.a and self.closed_at is None:
            self.closed_at = now
            count(stats, "close_session")
        if len(data) == hd.hlen:
            if hd.b and hd.toi is not None:
                ob = self._objs.get(hd.toi)
                if ob is not None and ob.closed_at is None:
                    ob.closed_at = now
            return  # payload-less (close / CC only)
        if hd.toi is None:
            count(stats, "drop.no_toi")
            return
        self._packet(hd, data, now)

    def _packet(self, hd: _Header, data: bytes, now: float) -> None:
        stats = self.stats
        toi = hd.toi
        assert toi is not None
        cp = hd.cp
        if toi == 0 and self.config.flute:
            if hd.fdt is None:
                count(stats, "drop.fdt_without_ext_fdt")
                return
            version = hd.fdt >> 20
            if version not in (1, 2):
                count(stats, "drop.fdt_version")
                return
            iid = hd.fdt & 0xFFFFF
            if iid in self._done_fdt:
                stats["duplicates"] = stats.get("duplicates", 0) + 1
                return
            key = -1 - iid
        else:
            if toi in self._done_tois:
                stats["duplicates"] = stats.get("duplicates", 0) + 1
                return
            if toi in self.failed and self.failed[toi] == "too_large":
                count(stats, "drop.too_large")
                return
            key = toi
        ob = self._objs.get(key)
        if ob is None:
            oti = None
            if hd.fti is not None:
                try:
                    from alc.fec import decode_fti

                    oti = decode_fti(cp, hd.fti, last_field=self.config.fti_last_field)
                except DecodeError:
                    count(stats, "drop.bad_fti")
                    return
            elif key > 0:
                entry = self.announced.get(toi)
                if entry is not None:
                    oti = self._oti_from_entry(toi, entry)
            if oti is None:
                if key < 0:
                    count(stats, "drop.fdt_without_fti")
                else:
                    self._stash(key, data, now)
                return
            ob = self._new_object(key, toi, oti, now)
            if ob is None:
                return
            if key < 0:
                ob.fdt_version = hd.fdt >> 20 if hd.fdt is not None else 0
                ob.cenc = hd.cenc or 0
        if cp != ob.oti.encoding_id and not (key < 0 and cp == 0):
            # FLUTE: the codepoint carries the FEC Encoding ID of the object
            count(stats, "drop.codepoint_mismatch")
            return
        if not hd.b and not hd.a:
            if len(self._hcache) >= 4096:
                self._hcache.clear()
            self._hcache[data[: hd.hlen]] = key
            if key > 0:  # (not the FDT: its instance ID is in EXT_FDT)
                b1 = data[1]
                fixed = 8 + 4 * ((data[0] >> 2) & 3) + 4 * ((b1 >> 7) + ((b1 >> 5) & 3)
                                                          + ((b1 >> 4) & 1))
                if fixed < hd.hlen:
                    if len(self._fcache) >= 1024:
                        self._fcache.clear()
                    self._fcache[data[:fixed]] = key
        self._symbol(ob, data, hd.hlen, hd.b, now)

    def _oti_from_entry(self, toi: int, entry: Any) -> Any:
        from alc.fec import oti_from_fdt_attributes

        attrs = entry.attributes()
        if "Transfer-Length" not in attrs and entry.content_encoding in (None, "", "null"):
            if entry.content_length is not None:
                attrs["Transfer-Length"] = str(entry.content_length)
        try:
            return oti_from_fdt_attributes(attrs)
        except DecodeError:
            count(self.stats, "drop.bad_fdt_oti")
            return None

    def _stash(self, key: int, data: bytes, now: float) -> None:
        if self._pending_bytes + len(data) > self.config.max_pending_bytes:
            count(self.stats, "drop.pending_overflow")
            return
        self._pending.setdefault(key, []).append((data, now))
        self._pending_bytes += len(data)
        count(self.stats, "pending")

    def _new_object(self, key: int, toi: int, oti: Any, now: float) -> _Obj | None:
        from alc.fec import get_scheme

        c = self.config
        try:
            if oti.encoding_id in (2, 5, 129):
                scheme = get_scheme(oti, rs_matrix=c.rs_matrix)
            else:
                scheme = get_scheme(oti)
        except DecodeError:
            count(self.stats, "drop.fec_unsupported")
            return None
        L = oti.transfer_length
        if L > c.max_buffered_bytes:
            count(self.stats, "drop.too_large")
            if key > 0:
                self._fail(toi, "too_large")
            return None
        while self._objs and (
            len(self._objs) >= c.max_objects or self._buffered + L > c.max_buffered_bytes
        ):
            victim = min(self._objs.values(), key=lambda o: o.last)
            self._drop_obj(victim)
            count(self.stats, "drop.evicted")
            if victim.key > 0:
                self._events.append(ObjectFailed(victim.toi, self._name(victim.toi), "evicted"))
        try:
            ob = _Obj(key, toi, oti, scheme, now, c.zero_copy)
        except (DecodeError, ValueError, OverflowError, MemoryError):
            count(self.stats, "drop.bad_oti")
            return None
        self._objs[key] = ob
        self._buffered += ob.bytes
        return ob

    def _drop_obj(self, ob: _Obj) -> None:
        self._objs.pop(ob.key, None)
        self._buffered -= ob.bytes

    # ------------------------------------------------------------------ symbols
    def _symbol(self, ob: _Obj, data: bytes, hlen: int, close: bool, now: float) -> None:
        stats = self.stats
        if ob.left == 0:  # empty object: complete on its first packet
            self._complete(ob, now)
            return
        eid = ob.eid
        ob.last = now
        if close and ob.closed_at is None:
            ob.closed_at = now
        pl = PAYLOAD_ID_LEN.get(eid, 4)
        if len(data) < hlen + pl:
            count(stats, "drop.malformed")
            return
        if eid == 0:
            sbn, esi = _U16x2.unpack_from(data, hlen)
        elif eid == 5:
            v = _U32.unpack_from(data, hlen)[0]
            sbn, esi = v >> 8, v & 0xFF
        elif eid == 6:
            v = _U32.unpack_from(data, hlen)[0]
            sbn, esi = v >> 24, v & 0xFFFFFF
        else:
            try:
                sbn, esi = ob.scheme.decode_payload_id(data, hlen)
            except DecodeError:
                count(stats, "drop.malformed")
                return
        ks = ob.ks
        if sbn >= len(ks):
            count(stats, "drop.bad_sbn")
            return
        k = ks[sbn]
        nsrc = ob.nsrc
        if nsrc[sbn] < 0:  # block already decoded: surplus symbol
            stats["redundant"] = stats.get("redundant", 0) + 1
            return
        have = ob.have[sbn]
        start = hlen + pl
        plen = len(data) - start
        E = ob.E
        if esi < k and plen == E and not have[esi] and sbn not in ob.decoders:
            # common case: one full-length source symbol, no decoder running
            off = ob.offs[sbn] + esi * E
            if off + E <= ob.L:
                refs = ob.refs
                if refs is None:
                    ob.buf[off : off + E] = memoryview(data)[start:]
                elif type(data) is bytes:  # zero copy (inline _hold)
                    j = ob.sbase[sbn] + esi
                    refs[j] = data
                    ob.roffs[j] = start  # type: ignore[index]
                    ob.bytes += start
                    self._buffered += start
                else:
                    self._hold(ob, ob.sbase[sbn] + esi, data, start)
                have[esi] = 1
                n = nsrc[sbn] + 1
                nsrc[sbn] = n
                if n == k:
                    self._block_done(ob, sbn)
                elif sbn in ob.repair and n + len(ob.repair[sbn]) >= k:
                    # repair symbols came first: this source symbol may be the k-th
                    self._try_decode(ob, sbn)
                if ob.left == 0:
                    self._complete(ob, now)
                return
        if esi < k:
            # source symbol(s) -- Compact No-Code senders may pack g consecutive symbols
            while plen > 0 and esi < k:
                off = ob.offs[sbn] + esi * E
                want = min(E, ob.L - off)
                n = min(want, plen)
                if n != want or (eid != 0 and plen != want and plen != E):
                    # (a last source symbol padded to E, as ypo/flute sends it, is accepted)
                    count(stats, "drop.symbol_length")
                    return
                if have[esi]:
                    stats["duplicates"] = stats.get("duplicates", 0) + 1
                else:
                    if ob.refs is None:
                        ob.buf[off : off + n] = data[start : start + n]
                    else:
                        self._hold(ob, ob.sbase[sbn] + esi, data, start)
                    have[esi] = 1
                    ob.nsrc[sbn] += 1
                    dec = ob.decoders.get(sbn)
                    if dec is not None:
                        sym = data[start : start + n]
                        if n < E:
                            sym = sym + bytes(E - n)
                        try:
                            ready = dec.add(esi, sym)
                        except DecodeError:
                            count(stats, "drop.fec_decode")
                            return
                        if ready:
                            self._decode_block(ob, sbn)
                            break
                    if ob.nsrc[sbn] == k:
                        self._block_done(ob, sbn)
                        break
                    rep = ob.repair.get(sbn)
                    if dec is None and rep and ob.nsrc[sbn] + len(rep) >= k:
                        # repair symbols came first: this source symbol may be the k-th
                        self._try_decode(ob, sbn)
                        break
                start += n
                plen -= n
                esi += 1
                if eid != 0:
                    break
            if ob.left == 0:
                self._complete(ob, now)
            return
        # repair symbol
        if eid == 0:
            count(stats, "drop.bad_esi")
            return
        if plen != E:
            count(stats, "drop.symbol_length")
            return
        rep = ob.repair.setdefault(sbn, {})
        if esi in rep:
            stats["duplicates"] = stats.get("duplicates", 0) + 1
            return
        rep[esi] = data[start:]
        ob.bytes += E
        self._buffered += E
        dec = ob.decoders.get(sbn)
        if dec is not None:
            try:
                ready = dec.add(esi, rep[esi])
            except DecodeError:
                count(stats, "drop.fec_decode")
                return
            if ready:
                self._decode_block(ob, sbn)
        elif ob.nsrc[sbn] + len(rep) >= k:
            self._try_decode(ob, sbn)
        if ob.left == 0:
            self._complete(ob, now)

    def _hold(self, ob: _Obj, j: int, data: bytes, start: int) -> None:
        """Zero copy: keep source symbol j as a reference into ``data`` (its header
        octets are accounted on top of the object's payload reservation)."""
        assert ob.refs is not None and ob.roffs is not None
        if type(data) is not bytes:  # a caller's reusable buffer: keep an immutable copy
            data = bytes(data)
        ob.refs[j] = data
        ob.roffs[j] = start
        ob.bytes += start
        self._buffered += start

    def _sym(self, ob: _Obj, sbn: int, esi: int) -> bytes | memoryview:
        """Source symbol (sbn, esi) as held (its length: min(E, L - offset))."""
        off = ob.offs[sbn] + esi * ob.E
        n = min(ob.E, ob.L - off)
        if ob.refs is None:
            return memoryview(ob.buf)[off : off + n]
        assert ob.roffs is not None
        j = ob.sbase[sbn] + esi
        ref = ob.refs[j]
        assert ref is not None
        st = ob.roffs[j]
        return memoryview(ref)[st : st + n]

    def _source_symbols(self, ob: _Obj, sbn: int) -> list[tuple[int, bytes]]:
        E = ob.E
        out = []
        for esi, h in enumerate(ob.have[sbn]):
            if h:
                sym = bytes(self._sym(ob, sbn, esi))
                if len(sym) < E:
                    sym += bytes(E - len(sym))
                out.append((esi, sym))
        return out

    def _try_decode(self, ob: _Obj, sbn: int) -> None:
        try:
            dec = ob.scheme.block_decoder(sbn)
            ready = False
            for esi, sym in self._source_symbols(ob, sbn):
                ready = dec.add(esi, sym) or ready
            for esi, sym in ob.repair.get(sbn, {}).items():
                ready = dec.add(esi, sym) or ready
        except DecodeError:
            count(self.stats, "drop.fec_decode")
            return
        ob.decoders[sbn] = dec
        if ready:
            self._decode_block(ob, sbn)

    def _decode_block(self, ob: _Obj, sbn: int) -> None:
        dec = ob.decoders.pop(sbn)
        try:
            syms = dec.decode()
        except DecodeError:
            count(self.stats, "drop.fec_decode")
            return
        E = ob.E
        base = ob.offs[sbn]
        have = ob.have[sbn]
        refs = ob.refs
        for esi in range(ob.ks[sbn]):
            if not have[esi]:
                if refs is not None:
                    refs[ob.sbase[sbn] + esi] = bytes(syms[esi])  # roffs stays 0
                    continue
                off = base + esi * E
                n = min(E, ob.L - off)
                ob.buf[off : off + n] = syms[esi][:n]
        count(self.stats, "fec.blocks_decoded")
        self._block_done(ob, sbn)

    def _block_done(self, ob: _Obj, sbn: int) -> None:
        ob.nsrc[sbn] = -1
        ob.left -= 1
        rep = ob.repair.pop(sbn, None)
        if rep:
            freed = len(rep) * ob.E
            ob.bytes -= freed
            self._buffered -= freed
        ob.decoders.pop(sbn, None)
        ob.have[sbn] = bytearray(0)

    # ------------------------------------------------------------------ completion
    def _complete(self, ob: _Obj, now: float) -> None:
        self._drop_obj(ob)
        refs = ob.refs
        if refs is None:
            data = bytes(ob.buf)
        else:
            # symbol j sits at offset j*E of the object (blocks are contiguous); only
            # the object's last symbol may be shorter than E
            E = ob.E
            assert ob.roffs is not None
            parts = [memoryview(r)[o : o + E] for r, o in zip(refs, ob.roffs, strict=True)]  # type: ignore[arg-type]
            if parts:
                parts[-1] = parts[-1][: ob.L - (len(parts) - 1) * E]
            data = b"".join(parts)
            del parts
            ob.refs = None  # release the datagrams now
        if ob.key < 0:
            self._done_fdt.add(-1 - ob.key)
            self._pending.pop(ob.key, None)
            self._fdt_complete(-1 - ob.key, ob, data, now)
            return
        self._done_tois.add(ob.toi)
        count(self.stats, "objects_completed")
        entry = self.announced.get(ob.toi)
        if entry is None:
            if not self.config.flute:
                self._events.append(ObjectReceived(ob.toi, data))
            else:
                self._undescribed[ob.toi] = data
                self._buffered += len(data)
            return
        self._deliver(ob.toi, entry, data)

    def _deliver(self, toi: int, entry: Any, data: bytes) -> None:
        name = entry.content_location
        try:
            md5 = entry.md5_digest
        except DecodeError:
            md5 = None
        body = data
        if md5 is not None and hashlib.md5(data).digest() != md5:
            try:
                body = content_decode(data, entry.content_encoding)
            except DecodeError:
                self._fail(toi, "md5")
                return
            if hashlib.md5(body).digest() != md5:
                self._fail(toi, "md5")
                return
        else:
            try:
                body = content_decode(data, entry.content_encoding)
            except DecodeError:
                self._fail(toi, "content_encoding")
                return
        if entry.content_length is not None and len(body) != entry.content_length:
            self._fail(toi, "content_length")
            return
        self.received[toi] = name
        self.failed.pop(toi, None)
        count(self.stats, "files_completed")
        self._events.append(
            FileReceived(
                toi,
                name,
                body,
                entry.content_type,
                entry.content_encoding,
                len(data),
                self.fdt_instance_of.get(toi),
            )
        )

    def _fail(self, toi: int, reason: str) -> None:
        if toi in self.failed:
            return
        self.failed[toi] = reason
        count(self.stats, f"fail.{reason}")
        self._events.append(ObjectFailed(toi, self._name(toi), reason))

    def _name(self, toi: int) -> str | None:
        e = self.announced.get(toi)
        return e.content_location if e is not None else None

    def _fdt_complete(self, iid: int, ob: _Obj, data: bytes, now: float) -> None:
        from alc.fdt import decode_fdt, decompress_fdt

        try:
            xml = decompress_fdt(data, ob.cenc)
            inst = decode_fdt(xml)
        except DecodeError:
            count(self.stats, "drop.bad_fdt")
            self._done_fdt.discard(iid)
            return
        if self.config.check_expires and self._expired(inst.expires, now):
            count(self.stats, "drop.fdt_expired")
            return
        count(self.stats, "fdt_instances")
        if inst.complete:
            self.fdt_complete = True
        new: list[Any] = []
        for f in inst.files:
            eff = inst.effective(f)
            old = self.announced.get(f.toi)
            if old is not None:
                continue  # a later instance must not change a TOI's parameters
            self.announced[f.toi] = eff
            self.fdt_instance_of[f.toi] = iid
            new.append(eff)
        self._events.append(FdtReceived(iid, ob.fdt_version, new))
        for eff in new:
            toi = eff.toi
            if toi in self._undescribed:
                d = self._undescribed.pop(toi)
                self._buffered -= len(d)
                self._deliver(toi, eff, d)
            pend = self._pending.pop(toi, None)
            if pend:
                for pkt, t in pend:
                    self._pending_bytes -= len(pkt)
                    try:
                        hd = parse_lct(pkt)
                    except DecodeError:
                        continue
                    self._packet(hd, pkt, t)

    @staticmethod
    def _expired(expires: int, now: float) -> bool:
        ntp_now = int(now + NTP_OFFSET) & 0xFFFFFFFF
        # serial-number comparison handles the 2036 wrap (RFC 6726 §3.3)
        return ((expires - ntp_now) & 0xFFFFFFFF) >= 0x80000000

    # ------------------------------------------------------------------ timers
    def get_timer(self) -> float | None:
        if self.finished is not None or self.last_packet is None:
            return None
        c = self.config
        t = self.last_packet + c.session_timeout
        if self.closed_at is not None:
            t = min(t, self.closed_at + c.close_grace)
        for ob in self._objs.values():
            d = ob.last + c.object_timeout
            if ob.closed_at is not None:
                d = min(d, ob.closed_at + c.close_grace)
            if d < t:
                t = d
        return t

    def handle_timer(self, now: float) -> None:
        if self.finished is not None or self.last_packet is None:
            return
        c = self.config
        for ob in list(self._objs.values()):
            if ob.closed_at is not None and now >= ob.closed_at + c.close_grace:
                self._drop_obj(ob)
                if ob.key > 0:
                    self._fail(ob.toi, "closed_incomplete")
            elif now >= ob.last + c.object_timeout:
                self._drop_obj(ob)
                count(self.stats, "drop.object_timeout")
                if ob.key > 0:
                    self._fail(ob.toi, "timeout")
        if self.closed_at is not None and now >= self.closed_at + c.close_grace:
            self._finish("closed")
        elif now >= self.last_packet + c.session_timeout:
            self._finish("timeout")

    def _finish(self, reason: str) -> None:
        self._hcache.clear()
        self._fcache.clear()
        for ob in list(self._objs.values()):
            self._drop_obj(ob)
            if ob.key > 0:
                self._fail(ob.toi, "session_" + reason)
        for toi, d in self._undescribed.items():
            self._events.append(ObjectReceived(toi, d))
        self._undescribed.clear()
        for toi in self.announced:
            if toi not in self.received and toi not in self.failed:
                self._fail(toi, "never_received")
        self.finished = reason
        self._events.append(SessionClosed(reason))

    # ------------------------------------------------------------------ status
    def all_announced_complete(self) -> bool:
        """True when at least one FDT was received and every file it announced arrived
        bit-exact (checked against Content-MD5 / Content-Length when given)."""
        return bool(self.announced) and all(t in self.received for t in self.announced)

    def in_progress(self) -> int:
        return len(self._objs)

    def progress(self) -> tuple[int, int]:
        """(bytes held of incomplete objects, their total), for progress bars."""
        have = 0
        total = 0
        for ob in self._objs.values():
            total += ob.L
            for sbn, k in enumerate(ob.ks):
                if ob.nsrc[sbn] < 0:
                    have += k * ob.E
                else:
                    have += (ob.nsrc[sbn] + len(ob.repair.get(sbn, ()))) * ob.E
        return min(have, total), total

    @property
    def buffered_bytes(self) -> int:
        return self._buffered + self._pending_bytes


def md5_b64(data: bytes) -> str:
    return base64.b64encode(hashlib.md5(data).digest()).decode()
