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
cached, bounded).  Source symbols are written straight into their source block's buffer; repair
symbols are kept per block until the block can be decoded with the FEC building block.
Duplicates and reordering are tolerated (``duplicates`` counter).  On completion the
Content-MD5 (of the transported or the decoded body), the content decoding and the
Content-Length are checked before :class:`FileReceived` is emitted.

Hostile input (issue 15; figures in docs/security/alc.md).  Every OTI is validated by the
FEC building block (DecodeError naming the field -> ``drop.bad_fti`` /
``drop.fec_unsupported``).  Announced geometry must be sane or the object is refused
(``drop.geometry_<rule>``, ``ObjectFailed("bad_geometry")``, later packets of the TOI
``drop.geometry``): at most ``max_source_blocks`` source blocks, ``max_block_bytes``
octets per source block (k*E), ``max_rs_block_length`` symbols per Reed-Solomon block,
``max_fdt_bytes`` for an FDT Instance (its transfer length and decoded size).

Memory bound.  Everything an object holds is charged to ``max_buffered_bytes`` as it is
allocated, never what its OTI announces: ``OBJ_OVERHEAD`` when the object is created,
then per source block on its first symbol ``BLOCK_OVERHEAD + k + min(k*E, L - offset)``
(zero copy: ``BLOCK_OVERHEAD + 13k`` and ``len(datagram) + SYMBOL_OVERHEAD`` per datagram
held), ``E + SYMBOL_OVERHEAD`` per repair symbol and ``k*(E + SYMBOL_OVERHEAD)`` per
running block decoder (both released when the block is decoded), and
``len + ENTRY_OVERHEAD`` per completed object no FDT describes yet.  An object is refused
(``ObjectFailed("too_large")``, ``drop.too_large``) when its full source data and
bookkeeping would exceed ``max_buffered_bytes`` on their own.  Eviction rule, applied
whenever a charge would exceed ``max_buffered_bytes``, and before creating an object
beyond ``max_objects``: first the oldest completed object no FDT describes
(``drop.undescribed_evicted``; received again if the carousel repeats it), then the
incomplete object with the oldest last activity (``ObjectFailed("evicted")``,
``drop.evicted``; it starts from scratch if it comes back); a charge that still does not
fit drops its packet (``drop.buffer_full``).  Packets of TOIs whose OTI is not known yet
are cached within ``max_pending_bytes`` (``len + ENTRY_OVERHEAD`` each; beyond:
``drop.pending_overflow``).  The content decoding of a file stops at min(Content-Length,
``max_decoded_bytes``) octets (``ObjectFailed("decoded_too_large")``).  Tables, oldest
entry evicted first and counted: FDT File entries ``max_announced``
(``drop.announced_evicted``), failures ``max_failed`` (``drop.failed_evicted``),
completed TOIs and FDT Instance IDs ``max_done`` each (``drop.done_evicted``), header
caches 4096 + 1024 entries.  So the receiver holds at most ``max_buffered_bytes +
max_pending_bytes`` + the tables, plus, while an object completes, its joined body
(<= ``max_buffered_bytes``) and its decoded body (<= 2 x ``max_decoded_bytes`` while
zlib joins it).

Files larger than memory (``stream_files``).  A file object the FDT describes before its
first packet, without content encoding, is not assembled: each source block, once
complete (received or FEC-decoded), is emitted as :class:`BlockReceived` (TOI, offset,
octets) and forgotten (one bit per block remains, for duplicates); :class:`FileCompleted`
follows the last block.  The engine opens no file: the caller writes the blocks at their
offsets and checks length and Content-MD5 of what it wrote (the engine checks the
transfer length against Content-Length when the object starts); :meth:`reject` undoes
"received" when that check fails.  Such an object holds only its blocks in progress, so
the ``too_large`` rule does not apply to it; packets of a TOI no FDT describes yet are
cached (``max_pending_bytes``) until one does.  Content-encoded files keep the in-memory
path (bounded by ``max_buffered_bytes`` / ``max_decoded_bytes`` as above).

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
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from alc.engine import Address, BatchEntry, Times, count
from alc.errors import DecodeError
from alc.ext import walk_extensions
from alc.rows import Rows

NTP_OFFSET = 2208988800
PAYLOAD_ID_LEN = {0: 4, 1: 4, 2: 4, 5: 4, 6: 4, 128: 8, 129: 8, 130: 4}
_U32 = struct.Struct("!I")
_U16x2 = struct.Struct("!HH")
#: rows of a batch taken as arrays at least / at most (AlcReceiver._bulk_run)
BULK_MIN = 8
BULK_MAX = 4096


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
class BlockReceived:
    """``stream_files``: source block of file ``toi`` complete; ``data`` goes at ``offset``
    (handed over: the engine keeps no reference to it)."""

    toi: int
    offset: int
    data: bytes | bytearray


@dataclass
class FileCompleted:
    """``stream_files``: every block of file ``toi`` was emitted as :class:`BlockReceived`;
    the caller checks ``length`` and ``md5`` (Content-MD5 digest, when announced) on what it
    wrote (:meth:`AlcReceiver.reject` if they differ)."""

    toi: int
    name: str
    length: int
    md5: bytes | None = None
    content_type: str | None = None
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
    # announced geometry (drop.geometry_<rule>, ObjectFailed "bad_geometry"): source
    # blocks per object, octets per source block (k*E), RS block length (decoding is
    # O(k^2) per block), transfer length of an FDT Instance (and its decoded size)
    max_source_blocks: int = 1 << 20
    max_block_bytes: int = 16 << 20
    max_rs_block_length: int = 255  # GF(2^8)'s own limit; GF(2^16) blocks alike
    max_fdt_bytes: int = 4 << 20
    # content decoding cap: min(Content-Length, this); None = max_buffered_bytes
    max_decoded_bytes: int | None = None
    # table bounds, oldest entry evicted first (drop.<table>_evicted)
    max_announced: int = 16384  # FDT File entries (announced, with received/instance-of)
    max_failed: int = 4096  # TOI -> failure reason
    max_done: int = 65536  # completed TOIs and FDT Instance IDs (duplicate detection)
    check_expires: bool = True
    fti_last_field: str = "max_n"
    rs_matrix: str = "rfc5510"  # "flute" for ypo/flute (flute-alc) parity, "nrl", ...
    # keep received source symbols as references into the (immutable) datagrams instead of
    # copying them into a per-object buffer; the object is assembled once, on completion.
    # Memory: the same payload octets plus each held datagram's header (accounted), and
    # none at all when the datagram objects are shared (simulator: one object, N receivers)
    zero_copy: bool = False
    # files larger than memory: BlockReceived per completed block, FileCompleted at the end
    # (see the module docstring); only blocks in progress are held
    stream_files: bool = False


# ---------------------------------------------------------------------- state
#: bytes charged per object, per source block, per held symbol on top of the payload
#: octets (Python object headers, dict/list slots; measured with tracemalloc, see
#: docs/security/alc.md), and per cached packet / table entry
OBJ_OVERHEAD = 2048
BLOCK_OVERHEAD = 512
SYMBOL_OVERHEAD = 128
ENTRY_OVERHEAD = 256


class _Block:
    """State of one source block, created when its first symbol arrives.

    ``buf`` holds the block's octets of the object (``size`` = min(k*E, L - off)),
    ``have`` one octet per source symbol (released when the block is done), ``repair``
    the repair symbols held until the block can be decoded, ``dec`` a running decoder.
    Zero copy: ``refs``/``roffs`` instead of ``buf``.
    """

    __slots__ = ("sbn", "k", "off", "size", "buf", "have", "nsrc", "repair", "dec", "refs",
                 "roffs", "held")

    def __init__(self, sbn: int, k: int, off: int, size: int, zero_copy: bool) -> None:
        self.sbn = sbn
        self.k = k
        self.off = off
        self.size = size
        self.have = bytearray(k)
        self.nsrc = 0  # source symbols held; -1 once the block is done
        self.repair: dict[int, bytes] | None = None
        self.dec: Any = None
        self.held = k  # charged, released when the block is done
        if zero_copy:
            self.buf = bytearray(0)
            self.refs: list[bytes | None] | None = [None] * k
            self.roffs: array[int] | None = array("I", bytes(4 * k))
        else:
            self.buf = bytearray(size)
            self.refs = None
            self.roffs = None

    def cost(self) -> int:
        """Octets charged when the block is created."""
        if self.refs is not None:
            return BLOCK_OVERHEAD + self.held + 12 * self.k
        return BLOCK_OVERHEAD + self.held + self.size


class _Obj:
    __slots__ = (
        "key", "toi", "oti", "scheme", "E", "L", "blocks", "nb", "blk", "left", "last",
        "closed_at", "cenc", "fdt_version", "bytes", "pid", "eid", "zero_copy", "esi_limit",
        "done_sbn",
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
        self.blocks = scheme.blocks  # RFC 5052 §9.1 partition, O(1) memory
        self.nb: int = len(self.blocks)
        # SBN -> _Block, created on the block's first symbol: the object's memory grows
        # with the symbols received, never with the length announced
        self.blk: dict[int, _Block] = {}
        self.zero_copy = zero_copy
        self.left = self.nb  # blocks not done yet (RFC 5052 §9.1: none is empty)
        self.last = now
        self.closed_at: float | None = None
        self.cenc = 0
        self.fdt_version = 0
        self.bytes = OBJ_OVERHEAD  # octets charged to max_buffered_bytes
        self.pid = None
        self.esi_limit = 1 << 24  # repair ESIs at or above it: drop.bad_esi
        # stream_files: one octet per source block, set once the block was emitted
        self.done_sbn: bytearray | None = None

    def new_block(self, sbn: int) -> _Block:
        k = self.blocks[sbn]
        off = self.blocks.start(sbn) * self.E
        return _Block(sbn, k, off, min(k * self.E, self.L - off), self.zero_copy)

    def max_cost(self) -> int:
        """Octets charged once every source block is held (repair symbols aside)."""
        nsym = self.blocks.total
        per = 12 * nsym if self.zero_copy else self.L
        return OBJ_OVERHEAD + self.nb * BLOCK_OVERHEAD + nsym + per


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


class DecodedTooLarge(DecodeError):
    """The content-decoded body would exceed its cap (a compression bomb)."""


def content_decode(data: bytes, encoding: str | None, max_size: int = 1 << 29) -> bytes:
    """Undo Content-Encoding (RFC 6726 §3.4.2); DecodedTooLarge once the output exceeds
    ``max_size`` octets (no more than max_size + 1 octets are ever produced; zlib joins
    its output blocks at the end, so the peak is about twice that)."""
    if encoding in (None, "", "null"):
        return data
    wbits = {"gzip": 31, "x-gzip": 31, "zlib": 15, "deflate": -15}.get(encoding.lower())
    if wbits is None:
        raise DecodeError("Content-Encoding", f"unsupported {encoding!r}")
    try:
        d = zlib.decompressobj(wbits)
        out = d.decompress(data, max_size + 1)
    except zlib.error as e:
        raise DecodeError("Content-Encoding", str(e)) from None
    if len(out) > max_size:
        raise DecodedTooLarge("Content-Encoding", f"decoded body exceeds {max_size} octets")
    if not d.eof:
        raise DecodeError("Content-Encoding", "truncated stream")
    return out


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
        # ordered sets (dicts), oldest first, at most max_done entries each
        self._done_tois: dict[int, None] = {}
        self._done_fdt: dict[int, None] = {}
        self._undescribed: dict[int, bytes] = {}
        self.announced: dict[int, Any] = {}  # TOI -> effective FDTFile
        self.fdt_instance_of: dict[int, int] = {}
        # TOI -> NTP Expires (32 bits) of the latest instance describing it (RFC 6726 §3.3)
        self._desc_expires: dict[int, int] = {}
        self.received: dict[int, str] = {}  # TOI -> name, bit-exact files
        self.failed: dict[int, str] = {}  # TOI -> reason
        self.fdt_complete = False
        self.first_packet: float | None = None
        self.last_packet: float | None = None
        self.closed_at: float | None = None
        self.finished: str | None = None  # "closed" | "timeout"

    # ------------------------------------------------------------------ Engine API
    #: a socket driver hands over its ``recvmmsg`` slabs (:meth:`receive_slab`)
    takes_slab = True

    def next_event(self) -> Any | None:
        return self._events.popleft() if self._events else None

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address | None]]:
        return []

    def receive_slab(self, slab: Any, addrs: Sequence[Address | None]) -> None:
        """:meth:`receive_datagrams` on the slab's rows where they lie
        (:class:`alc.rows.Rows`): a bulk run of source symbols is copied from the slab
        into the block buffers, no datagram object made for it."""
        n = slab.count
        if not n:
            return
        rows = Rows.of_slab(slab)
        try:
            self.receive_datagrams(rows, addrs, slab.stamps[:n])
        finally:
            rows.invalidate()

    def receive_datagrams(
        self, datagrams: Sequence[bytes], addrs: Sequence[Address | None], times: Times
    ) -> None:
        """The batch entry: each datagram exactly as :meth:`receive_datagram` would take
        it, with the common case inline (no call per datagram): a full-length source
        symbol (FEC Encoding ID 0, 5 or 6) of a block already started, of an object whose
        header (or, when extensions such as a TESLA EXT_AUTH change per packet, its fixed
        part, the extension area still walked) is known, while no decoder runs on the
        block.  Everything else goes through :meth:`receive_datagram`."""
        if self.finished is not None or len(datagrams) < 4:
            rx = self.receive_datagram
            for k, data in enumerate(datagrams):
                rx(data, addrs[k], float(times[k]))
            return
        hcache = self._hcache
        fcache = self._fcache
        objs = self._objs
        slow = self.receive_datagram
        symbol = self._symbol
        u16x2 = _U16x2.unpack_from
        u32 = _U32.unpack_from
        npk = nby = 0
        n = len(datagrams)
        bulk_from = 0  # no run is tried before this row (after a failed try)
        k = -1
        while k + 1 < n:
            k += 1
            data = datagrams[k]
            addr = addrs[k]
            ln = len(data)
            if ln <= 3 or (addr is not None and addr[0] != self.sender):
                slow(data, addr, float(times[k]))
                continue
            hl = data[2] << 2
            key = hcache.get(data[:hl])
            fixed = 0
            if key is None and fcache:
                b1 = data[1]
                fixed = 8 + 4 * ((data[0] >> 2) & 3) + 4 * ((b1 >> 7) + ((b1 >> 5) & 3)
                                                          + ((b1 >> 4) & 1))
                key = fcache.get(data[:fixed])
                if key is not None and (ln < hl or not _exts_ok(data, fixed, hl)):
                    key = None
            ob = objs.get(key) if key is not None else None
            if ob is None:
                slow(data, addr, float(times[k]))
                continue
            npk += 1
            nby += ln
            now = float(times[k])
            self.last_packet = now
            eid = ob.eid
            b = None
            if ob.left and ln >= hl + 4 and (eid == 0 or eid == 5 or eid == 6):
                if eid == 0:
                    sbn, esi = u16x2(data, hl)
                else:
                    v = u32(data, hl)[0]
                    sbn, esi = (v >> 8, v & 0xFF) if eid == 5 else (v >> 24, v & 0xFFFFFF)
                b = ob.blk.get(sbn)
            if b is None or b.nsrc < 0 or b.dec is not None or b.refs is not None:
                symbol(ob, data, hl, False, now)
                continue
            E = ob.E
            off = esi * E
            have = b.have
            if esi >= b.k or ln - hl - 4 != E or have[esi] or off + E > b.size:
                symbol(ob, data, hl, False, now)
                continue
            if k >= bulk_from and n - k >= BULK_MIN:
                m = self._bulk_run(ob, datagrams, addrs, times, k, hl, fixed)
                if m:  # (its stats count this row too)
                    npk -= 1
                    nby -= ln
                    k += m - 1
                    continue
                bulk_from = k + BULK_MIN
            ob.last = now
            b.buf[off : off + E] = memoryview(data)[hl + 4 :]
            have[esi] = 1
            nsrc = b.nsrc + 1
            b.nsrc = nsrc
            if nsrc == b.k:
                self._block_done(ob, b)
            elif b.repair and nsrc + len(b.repair) >= b.k:
                self._try_decode(ob, b)
            if ob.left == 0:
                self._complete(ob, now)
        stats = self.stats
        stats["packets"] += npk
        stats["bytes"] += nby

    def _bulk_run(
        self,
        ob: _Obj,
        datagrams: Sequence[bytes],
        addrs: Sequence[Address | None],
        times: Times,
        k0: int,
        hl: int,
        fixed: int,
    ) -> int:
        """Rows ``k0, k0+1, ...`` of a batch that the inline case of
        :meth:`receive_datagrams` would take one by one, taken as arrays: the longest run
        of full-length source symbols of ``ob`` from our sender, each for a block already
        started and eligible (no decoder, no repair symbol held, copy mode), none held yet
        nor repeated within the run, with the header of row ``k0`` (``fixed`` 0) or its
        fixed part and one extension over the rest of the header (``fixed`` > 0).  The run
        stops before the first row that is not so (the caller takes it one by one) and
        after the row that completes the object.  Their payloads are copied into the
        block buffers with one assignment per block, the blocks completed in the order
        of their last symbol.  Returns the rows taken (0: fewer than BULK_MIN)."""
        E = ob.E
        if ob.zero_copy or ob.eid not in (0, 5, 6):
            return 0
        L0 = hl + 4 + E
        # rows of one buffer (alc.rows): their lengths, no datagram objects
        held = datagrams if isinstance(datagrams, Rows) else None
        rows: Sequence[bytes] | None = None
        if held is not None:
            lens = held.lens[k0 : k0 + BULK_MAX]
        else:
            rows = datagrams[k0 : k0 + BULK_MAX]
            lens = np.fromiter(map(len, rows), dtype=np.int64, count=len(rows))
        bad = np.flatnonzero(lens != L0)
        m = int(bad[0]) if len(bad) else len(lens)
        sender = self.sender
        a0 = addrs[k0]
        if a0 is not None and a0[0] != sender:
            return 0
        seg = addrs[k0 : k0 + m]
        if seg.count(a0) != m:  # (a recvmmsg batch from one source: one tuple, C speed)
            for j in range(m):
                a = seg[j]
                if a is not None and a[0] != sender:
                    m = j
                    break
        if m < BULK_MIN:
            return 0
        # the run as one (m, L0) array: a view of the rows where they lie (a slab, an
        # arena), else one join of the datagrams
        arr = held.block(k0, m, L0) if held is not None else None
        if arr is None:
            src = rows[:m] if rows is not None else datagrams[k0 : k0 + m]
            arr = np.frombuffer(b"".join(src), dtype=np.uint8).reshape(m, L0)
        if fixed == 0:  # the whole header repeats (row k0's is a known one)
            ok = (arr[:, :hl] == arr[0, :hl]).all(axis=1)
        else:
            ok = (arr[:, :fixed] == arr[0, :fixed]).all(axis=1)
            # the extension walk of row k0 (which passed _exts_ok): rows whose HET/HEL
            # octets at its steps are the same walk the same way
            pos = fixed
            h0 = datagrams[k0]
            while pos < hl:
                ok &= arr[:, pos] == h0[pos]
                if h0[pos] >= 128:
                    pos += 4
                else:
                    ok &= arr[:, pos + 1] == h0[pos + 1]
                    pos += h0[pos + 1] << 2
        bad = np.flatnonzero(~ok)
        if len(bad):  # the run ends before the first row of another header
            m = int(bad[0])
            if m < BULK_MIN:
                return 0
            arr = arr[:m]
            ok = ok[:m]
        pid = arr[:, hl : hl + 4].astype(np.int64)
        v = (pid[:, 0] << 24) | (pid[:, 1] << 16) | (pid[:, 2] << 8) | pid[:, 3]
        if ob.eid == 0:
            sbn, esi = v >> 16, v & 0xFFFF
        elif ob.eid == 5:
            sbn, esi = v >> 8, v & 0xFF
        else:
            sbn, esi = v >> 24, v & 0xFFFFFF
        # the sender's order (the usual run, with or without losses): (SBN, ESI) strictly
        # increasing.  Then no row repeats another and each block's rows are one slice
        # of the run (:meth:`_bulk_segments`); any other order by index arrays
        # (:meth:`_bulk_any`)
        code = (sbn << 24) | esi
        if m < 2 or bool((code[1:] > code[:-1]).all()):
            m, done = self._bulk_segments(ob, arr, hl, sbn, esi, ok, m)
        else:
            m, done = self._bulk_any(ob, arr, hl, sbn, esi, ok, m)
        if m == 0:
            return 0
        t_last = float(times[k0 + m - 1])
        ob.last = t_last
        self.last_packet = t_last
        for r, b in done:  # in the order of their last symbol
            self._block_done(ob, b)
            if ob.left == 0:
                self._complete(ob, float(times[k0 + r]))
        stats = self.stats
        stats["packets"] += m
        stats["bytes"] += m * L0
        return m

    def _bulk_any(
        self, ob: _Obj, arr: np.ndarray, hl: int, sbn: np.ndarray, esi: np.ndarray,
        ok: np.ndarray, m: int,
    ) -> tuple[int, list[tuple[int, _Block]]]:
        """:meth:`_bulk_run` for rows in any order (index arrays): the rows taken (0:
        none) with their symbols copied, and the blocks they complete with the row of
        their last symbol, in that order."""
        E = ob.E
        blocks: dict[int, _Block | None] = {}  # None: to be created at its first symbol
        for s in np.unique(sbn).tolist():
            sel = sbn == s
            b = ob.blk.get(s)
            e = esi[sel]
            if b is None:
                if s >= ob.nb or (ob.done_sbn is not None and ob.done_sbn[s]):
                    ok &= ~sel
                    continue
                kb = ob.blocks[s]
                size = min(kb * E, ob.L - ob.blocks.start(s) * E)
                ok[sel] &= (e < kb) & (e * E + E <= size)
                blocks[s] = None
                continue
            if b.nsrc < 0 or b.dec is not None or b.refs is not None or b.repair:
                ok &= ~sel
                continue
            good = (e < b.k) & (e * E + E <= b.size)
            good &= np.frombuffer(b.have, dtype=np.uint8)[np.minimum(e, b.k - 1)] == 0
            ok[sel] &= good
            blocks[s] = b
        code = (sbn << 24) | esi
        _, first = np.unique(code, return_index=True)
        repeat = np.ones(m, dtype=bool)
        repeat[first] = False
        ok &= ~repeat
        bad = np.flatnonzero(~ok)
        if len(bad):
            m = int(bad[0])
        if m < BULK_MIN:
            return 0, []
        sbn = sbn[:m]
        esi = esi[:m]
        # new blocks are created in the order of their first symbol, as one by one; the
        # run stops before a block that finds no room (drop.buffer_full there)
        f_sbn, f_row = np.unique(sbn, return_index=True)
        for row, sb in sorted(zip(f_row.tolist(), f_sbn.tolist(), strict=True)):
            if blocks[sb] is None:
                created = self._new_block(ob, sb)
                if created is None:
                    m = row
                    break
                blocks[sb] = created
        if m < BULK_MIN:
            return 0, []
        sbn = sbn[:m]
        esi = esi[:m]
        live: dict[int, _Block] = {}
        groups = []
        for sb in np.unique(sbn).tolist():
            b = blocks[sb]
            assert b is not None
            live[sb] = b
            groups.append((sb, np.flatnonzero(sbn == sb)))
        done = [(int(idx[-1]), sb) for sb, idx in groups if live[sb].nsrc + len(idx) == live[sb].k]
        if len(done) >= ob.left:  # the object completes at its last block: stop there
            done.sort()
            m = done[ob.left - 1][0] + 1
            done = done[: ob.left]
            sbn = sbn[:m]
            esi = esi[:m]
            groups = [(sb, np.flatnonzero(sbn == sb)) for sb in np.unique(sbn).tolist()]
        for sb, idx in groups:
            b = live[sb]
            view = np.frombuffer(b.buf, dtype=np.uint8)[: b.size // E * E].reshape(-1, E)
            r0, e0, c = int(idx[0]), int(esi[idx[0]]), len(idx)
            if int(idx[-1]) - r0 == c - 1 and int(esi[idx[-1]]) - e0 == c - 1 and (
                c < 3 or bool((np.diff(esi[idx]) == 1).all())
            ):  # in order (the usual case): slices, no index arrays
                view[e0 : e0 + c] = arr[r0 : r0 + c, hl + 4 :]
                np.frombuffer(b.have, dtype=np.uint8)[e0 : e0 + c] = 1
            else:
                view[esi[idx]] = arr[idx, hl + 4 :]
                np.frombuffer(b.have, dtype=np.uint8)[esi[idx]] = 1
            b.nsrc += len(idx)
            del view  # no export of the block's buffer outlives this
        return m, [(r, live[sb]) for r, sb in sorted(done)]

    def _bulk_segments(
        self, ob: _Obj, arr: np.ndarray, hl: int, sbn: np.ndarray, esi: np.ndarray,
        ok: np.ndarray, m: int,
    ) -> tuple[int, list[tuple[int, _Block]]]:
        """:meth:`_bulk_any` for rows in the sender's order, (SBN, ESI) strictly
        increasing: each block's rows are the slice ``a:z`` of the run, its symbols
        increasing (consecutive without loss: then copied as one slice), no row repeats
        one."""
        E = ob.E
        cuts = (np.flatnonzero(sbn[1:] != sbn[:-1]) + 1).tolist()
        starts = [0, *cuts]
        ends = [*cuts, m]
        sbs = sbn[starts].tolist()
        # a block's state, None: to be created at its first row (or refused: then its
        # rows are marked bad and the run ends before them)
        blocks: list[_Block | None] = []
        for s, a, z in zip(sbs, starts, ends, strict=True):
            e = esi[a:z]
            b = ob.blk.get(s)
            if b is None:
                if s >= ob.nb or (ob.done_sbn is not None and ob.done_sbn[s]):
                    ok[a:z] = False
                    blocks.append(None)
                    continue
                kb = ob.blocks[s]
                lim = min(kb, min(kb * E, ob.L - ob.blocks.start(s) * E) // E)
            else:
                if b.nsrc < 0 or b.dec is not None or b.refs is not None or b.repair:
                    ok[a:z] = False
                    blocks.append(None)
                    continue
                lim = min(b.k, b.size // E)
                have = np.frombuffer(b.have, dtype=np.uint8)
                e0 = int(e[0])
                if int(e[-1]) - e0 == z - a - 1:  # consecutive: the held ones by a slice
                    hv = have[e0 : min(e0 + z - a, b.k)]
                    ok[a : a + len(hv)] &= hv == 0
                else:
                    ok[a:z] &= have[np.minimum(e, b.k - 1)] == 0
            if int(e[-1]) >= lim:  # symbols past the block (e < k and e * E + E <= size)
                ok[a + int(np.searchsorted(e, lim)) : z] = False
            blocks.append(b)
        bad = np.flatnonzero(~ok[:m])
        if len(bad):
            m = int(bad[0])
        if m < BULK_MIN:
            return 0, []
        # new blocks in the order of their first symbol; the run stops before a block
        # that finds no room (drop.buffer_full there)
        segs: list[tuple[_Block, int, int]] = []
        for j, (s, a, z) in enumerate(zip(sbs, starts, ends, strict=True)):
            if a >= m:
                break
            b = blocks[j]
            if b is None:
                b = self._new_block(ob, s)
                if b is None:
                    m = a
                    break
            segs.append((b, a, min(z, m)))
        if m < BULK_MIN:
            return 0, []
        done = [(z - 1, b) for b, a, z in segs if b.nsrc + (z - a) == b.k]
        if len(done) >= ob.left:  # the object completes at its last block: stop there
            m = done[ob.left - 1][0] + 1
            done = done[: ob.left]
            segs = [(b, a, min(z, m)) for b, a, z in segs if a < m]
        for b, a, z in segs:
            c = z - a
            view = np.frombuffer(b.buf, dtype=np.uint8)[: b.size // E * E].reshape(-1, E)
            have = np.frombuffer(b.have, dtype=np.uint8)
            e0 = int(esi[a])
            if int(esi[z - 1]) - e0 == c - 1:  # consecutive (no loss): slices
                view[e0 : e0 + c] = arr[a:z, hl + 4 :]
                have[e0 : e0 + c] = 1
            else:
                view[esi[a:z]] = arr[a:z, hl + 4 :]
                have[esi[a:z]] = 1
            b.nsrc += c
            del view, have  # no export of the block's buffers outlives this
        return m, done

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
            if toi in self._done_tois or toi in self.received:
                stats["duplicates"] = stats.get("duplicates", 0) + 1
                return
            reason = self.failed.get(toi)
            if reason == "too_large" or reason == "bad_geometry":
                count(stats, "drop." + ("too_large" if reason == "too_large" else "geometry"))
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
                entry = self._description(toi, now)
                if entry is not None:
                    oti = self._oti_from_entry(toi, entry)
            if oti is None:
                if key < 0:
                    count(stats, "drop.fdt_without_fti")
                else:
                    self._stash(key, data, now)
                return
            stream = False
            if key > 0 and self.config.stream_files:
                entry = self._description(toi, now)
                if entry is None:  # streamed or not is decided by the FDT entry
                    self._stash(key, data, now)
                    return
                stream = entry.content_encoding in (None, "", "null")
            ob = self._new_object(key, toi, oti, now, stream)
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
        cost = len(data) + ENTRY_OVERHEAD
        if self._pending_bytes + cost > self.config.max_pending_bytes:
            count(self.stats, "drop.pending_overflow")
            return
        if type(data) is not bytes:  # a caller's reusable buffer: keep an immutable copy
            data = bytes(data)
        lst = self._pending.get(key)
        if lst is None:
            lst = self._pending[key] = []
        lst.append((data, now))
        self._pending_bytes += cost
        count(self.stats, "pending")

    def _geometry(self, key: int, ob: _Obj) -> str | None:
        """The announced-geometry rule ``ob`` breaks (counted ``drop.geometry_<rule>``)."""
        c = self.config
        if key < 0 and ob.L > c.max_fdt_bytes:
            return "fdt_length"
        if ob.nb > c.max_source_blocks:
            return "blocks"
        kmax = ob.blocks.max()
        if kmax * ob.E > c.max_block_bytes:
            return "block_bytes"
        if ob.eid in (2, 5, 129) and kmax > c.max_rs_block_length:
            return "rs_block_length"
        return None

    def _new_object(self, key: int, toi: int, oti: Any, now: float, stream: bool = False) -> _Obj | None:
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
        ob = _Obj(key, toi, scheme.oti, scheme, now, c.zero_copy and not stream)
        rule = self._geometry(key, ob)
        if rule is not None:
            count(self.stats, "drop.geometry_" + rule)
            if key > 0:
                self._fail(toi, "bad_geometry")
            return None
        if stream:
            entry = self.announced[toi]
            if entry.content_length is not None and entry.content_length != ob.L:
                self._fail(toi, "content_length")
                return None
            ob.done_sbn = bytearray(ob.nb)
            ob.bytes += ob.nb
        elif ob.max_cost() > c.max_buffered_bytes:
            count(self.stats, "drop.too_large")
            if key > 0:
                self._fail(toi, "too_large")
            return None
        while self._objs and len(self._objs) >= c.max_objects:
            self._evict(min(self._objs.values(), key=lambda o: o.last))
        if not self._make_room(ob.bytes, None):
            count(self.stats, "drop.buffer_full")
            return None
        ob.esi_limit = getattr(scheme, "n_limit", 1 << 24)
        self._objs[key] = ob
        self._buffered += ob.bytes
        return ob

    def _make_room(self, cost: int, keep: _Obj | None) -> bool:
        """Eviction rule of ``max_buffered_bytes``: while ``cost`` more octets would not
        fit, evict the oldest completed undescribed object, else the incomplete object
        (other than ``keep``) with the oldest last activity.  False if nothing is left."""
        lim = self.config.max_buffered_bytes
        while self._buffered + cost > lim:
            if self._undescribed:
                self._evict_undescribed(next(iter(self._undescribed)))
                continue
            victim = None
            for o in self._objs.values():
                if o is not keep and (victim is None or o.last < victim.last):
                    victim = o
            if victim is None:
                return False
            self._evict(victim)
        return True

    def _evict(self, victim: _Obj) -> None:
        self._drop_obj(victim)
        victim.blk = {}
        count(self.stats, "drop.evicted")
        if victim.key > 0:
            self._events.append(ObjectFailed(victim.toi, self._name(victim.toi), "evicted"))

    def _evict_undescribed(self, toi: int) -> None:
        d = self._undescribed.pop(toi)
        self._buffered -= len(d) + ENTRY_OVERHEAD
        self._done_tois.pop(toi, None)  # received again if the carousel repeats it
        count(self.stats, "drop.undescribed_evicted")

    def _drop_obj(self, ob: _Obj) -> None:
        self._objs.pop(ob.key, None)
        self._buffered -= ob.bytes
        ob.bytes = 0

    def _charge(self, ob: _Obj, b: _Block, cost: int) -> bool:
        """Charge ``cost`` octets held for block ``b`` (released when it is done)."""
        if self._buffered + cost > self.config.max_buffered_bytes and not self._make_room(
            cost, ob
        ):
            count(self.stats, "drop.buffer_full")
            return False
        b.held += cost
        ob.bytes += cost
        self._buffered += cost
        return True

    def _new_block(self, ob: _Obj, sbn: int) -> _Block | None:
        b = ob.new_block(sbn)
        cost = b.cost()
        if not self._make_room(cost, ob):
            count(self.stats, "drop.buffer_full")
            return None
        ob.blk[sbn] = b
        ob.bytes += cost
        self._buffered += cost
        return b

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
        b = ob.blk.get(sbn)
        if b is None:
            if sbn >= ob.nb:
                count(stats, "drop.bad_sbn")
                return
            if ob.done_sbn is not None and ob.done_sbn[sbn]:  # block already emitted
                stats["redundant"] = stats.get("redundant", 0) + 1
                return
            b = self._new_block(ob, sbn)
            if b is None:
                return
        if b.nsrc < 0:  # block already decoded: surplus symbol
            stats["redundant"] = stats.get("redundant", 0) + 1
            return
        k = b.k
        have = b.have
        start = hlen + pl
        plen = len(data) - start
        E = ob.E
        if esi < k and plen == E and not have[esi] and b.dec is None:
            # common case: one full-length source symbol, no decoder running
            off = esi * E
            if off + E <= b.size:
                refs = b.refs
                if refs is None:
                    b.buf[off : off + E] = memoryview(data)[start:]
                elif type(data) is bytes and (
                    self._buffered + (cost := len(data) + SYMBOL_OVERHEAD)
                    <= self.config.max_buffered_bytes
                ):  # zero copy (inline _hold)
                    refs[esi] = data
                    b.roffs[esi] = start  # type: ignore[index]
                    ob.bytes += cost
                    self._buffered += cost
                elif not self._hold(ob, b, esi, data, start):
                    return
                have[esi] = 1
                n = b.nsrc + 1
                b.nsrc = n
                if n == k:
                    self._block_done(ob, b)
                elif b.repair and n + len(b.repair) >= k:
                    # repair symbols came first: this source symbol may be the k-th
                    self._try_decode(ob, b)
                if ob.left == 0:
                    self._complete(ob, now)
                return
        if esi < k:
            # source symbol(s) -- Compact No-Code senders may pack g consecutive symbols
            while plen > 0 and esi < k:
                off = esi * E
                want = min(E, b.size - off)
                n = min(want, plen)
                if n != want or (eid != 0 and plen != want and plen != E):
                    # (a last source symbol padded to E, as ypo/flute sends it, is accepted)
                    count(stats, "drop.symbol_length")
                    return
                if have[esi]:
                    stats["duplicates"] = stats.get("duplicates", 0) + 1
                else:
                    if b.refs is None:
                        b.buf[off : off + n] = data[start : start + n]
                    elif not self._hold(ob, b, esi, data, start):
                        return
                    have[esi] = 1
                    b.nsrc += 1
                    dec = b.dec
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
                            self._decode_block(ob, b)
                            break
                    if b.nsrc == k:
                        self._block_done(ob, b)
                        break
                    rep = b.repair
                    if dec is None and rep and b.nsrc + len(rep) >= k:
                        # repair symbols came first: this source symbol may be the k-th
                        self._try_decode(ob, b)
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
        if eid == 0 or esi >= ob.esi_limit:
            count(stats, "drop.bad_esi")
            return
        if plen != E:
            count(stats, "drop.symbol_length")
            return
        rep = b.repair
        if rep is None:
            rep = b.repair = {}
        elif esi in rep:
            stats["duplicates"] = stats.get("duplicates", 0) + 1
            return
        if not self._charge(ob, b, E + SYMBOL_OVERHEAD):
            return
        sym = rep[esi] = data[start:]
        dec = b.dec
        if dec is not None:
            try:
                ready = dec.add(esi, sym)
            except DecodeError:
                count(stats, "drop.fec_decode")
                return
            if ready:
                self._decode_block(ob, b)
        elif b.nsrc + len(rep) >= k:
            self._try_decode(ob, b)
        if ob.left == 0:
            self._complete(ob, now)

    def _hold(self, ob: _Obj, b: _Block, esi: int, data: bytes, start: int) -> bool:
        """Zero copy: keep source symbol ``esi`` of ``b`` as a reference into ``data``
        (the whole datagram is held: charged with its length)."""
        assert b.refs is not None and b.roffs is not None
        if type(data) is not bytes:  # a caller's reusable buffer: keep an immutable copy
            data = bytes(data)
        cost = len(data) + SYMBOL_OVERHEAD
        if self._buffered + cost > self.config.max_buffered_bytes and not self._make_room(
            cost, ob
        ):
            count(self.stats, "drop.buffer_full")
            return False
        b.refs[esi] = data
        b.roffs[esi] = start
        ob.bytes += cost  # (held until the object completes)
        self._buffered += cost
        return True

    def _sym(self, ob: _Obj, b: _Block, esi: int) -> bytes | memoryview:
        """Source symbol ``esi`` of ``b`` as held (its length: min(E, size - offset))."""
        off = esi * ob.E
        n = min(ob.E, b.size - off)
        if b.refs is None:
            return memoryview(b.buf)[off : off + n]
        assert b.roffs is not None
        ref = b.refs[esi]
        assert ref is not None
        st = b.roffs[esi]
        return memoryview(ref)[st : st + n]

    def _source_symbols(self, ob: _Obj, b: _Block) -> list[tuple[int, bytes]]:
        E = ob.E
        out = []
        for esi, h in enumerate(b.have):
            if h:
                sym = bytes(self._sym(ob, b, esi))
                if len(sym) < E:
                    sym += bytes(E - len(sym))
                out.append((esi, sym))
        return out

    def _try_decode(self, ob: _Obj, b: _Block) -> None:
        # the decoder keeps its own copy of up to k symbols: charged until the block is done
        if not self._charge(ob, b, b.k * (ob.E + SYMBOL_OVERHEAD)):
            return
        try:
            dec = ob.scheme.block_decoder(b.sbn)
            ready = False
            for esi, sym in self._source_symbols(ob, b):
                ready = dec.add(esi, sym) or ready
        except DecodeError:
            count(self.stats, "drop.fec_decode")
            return
        rep = b.repair or {}
        for esi in list(rep):
            try:
                ready = dec.add(esi, rep[esi]) or ready
            except DecodeError:
                # a symbol the code cannot hold: forget it (not retried on every packet)
                del rep[esi]
                count(self.stats, "drop.fec_decode")
        b.dec = dec
        if ready:
            self._decode_block(ob, b)

    def _decode_block(self, ob: _Obj, b: _Block) -> None:
        dec = b.dec
        b.dec = None
        try:
            syms = dec.decode()
        except DecodeError:
            count(self.stats, "drop.fec_decode")
            return
        E = ob.E
        have = b.have
        refs = b.refs
        for esi in range(b.k):
            if not have[esi]:
                if refs is not None:
                    refs[esi] = bytes(syms[esi])  # roffs stays 0
                    cost = E + SYMBOL_OVERHEAD
                    ob.bytes += cost
                    self._buffered += cost
                    continue
                off = esi * E
                n = min(E, b.size - off)
                b.buf[off : off + n] = syms[esi][:n]
        count(self.stats, "fec.blocks_decoded")
        self._block_done(ob, b)

    def _block_done(self, ob: _Obj, b: _Block) -> None:
        b.nsrc = -1
        ob.left -= 1
        freed = b.held
        b.held = 0
        ob.bytes -= freed
        self._buffered -= freed
        b.repair = None
        b.dec = None
        b.have = bytearray(0)
        if ob.done_sbn is not None:
            # stream_files: hand the block to the caller and forget it
            data = b.buf
            b.buf = bytearray(0)
            freed = BLOCK_OVERHEAD + b.size
            ob.bytes -= freed
            self._buffered -= freed
            del ob.blk[b.sbn]
            ob.done_sbn[b.sbn] = 1
            self._events.append(BlockReceived(ob.toi, b.off, data))

    # ------------------------------------------------------------------ completion
    def _mark_done(self, done: dict[int, None], key: int) -> None:
        """Completed TOIs / FDT Instance IDs, the oldest forgotten beyond ``max_done``."""
        done[key] = None
        if len(done) > self.config.max_done:
            old = next(iter(done))
            del done[old]
            count(self.stats, "drop.done_evicted")
            if done is self._done_tois and old in self._undescribed:
                self._evict_undescribed(old)

    def _complete(self, ob: _Obj, now: float) -> None:
        self._drop_obj(ob)
        if ob.done_sbn is not None:
            self._complete_streamed(ob)
            return
        blk = ob.blk
        ob.blk = {}
        if not ob.zero_copy:
            if ob.nb == 1:
                data = bytes(blk[0].buf)
            else:
                data = b"".join([blk[i].buf for i in range(ob.nb)])
        else:
            # every symbol is E octets; only the object's last one may be shorter
            E = ob.E
            parts = []
            for i in range(ob.nb):
                b = blk[i]
                assert b.refs is not None and b.roffs is not None
                for r, o in zip(b.refs, b.roffs, strict=True):
                    parts.append(memoryview(r)[o : o + E])  # type: ignore[arg-type]
            if parts:
                parts[-1] = parts[-1][: ob.L - (len(parts) - 1) * E]
            data = b"".join(parts)
            del parts
        del blk
        if ob.key < 0:
            self._mark_done(self._done_fdt, -1 - ob.key)
            self._pending.pop(ob.key, None)
            self._fdt_complete(-1 - ob.key, ob, data, now)
            return
        self._mark_done(self._done_tois, ob.toi)
        count(self.stats, "objects_completed")
        entry = self._description(ob.toi, now)
        if entry is None:
            if not self.config.flute:
                self._events.append(ObjectReceived(ob.toi, data))
            else:
                # kept for an FDT that may describe it later, within max_buffered_bytes
                self._undescribed[ob.toi] = data
                self._buffered += len(data) + ENTRY_OVERHEAD
                self._make_room(0, None)
            return
        self._deliver(ob.toi, entry, data)

    def _complete_streamed(self, ob: _Obj) -> None:
        toi = ob.toi
        ob.blk = {}
        self._mark_done(self._done_tois, toi)
        count(self.stats, "objects_completed")
        entry = self.announced.get(toi)
        if entry is None:  # its FDT entry was evicted meanwhile
            self._fail(toi, "never_announced")
            return
        try:
            md5 = entry.md5_digest
        except DecodeError:
            md5 = None
        self.received[toi] = entry.content_location
        self.failed.pop(toi, None)
        count(self.stats, "files_completed")
        self._events.append(
            FileCompleted(
                toi, entry.content_location, ob.L, md5, entry.content_type, self.fdt_instance_of.get(toi)
            )
        )

    def reject(self, toi: int, reason: str) -> None:
        """The caller found a streamed file wrong on disk (``md5``, ``length``): it is no
        longer received (a later carousel round may deliver it again)."""
        if self.received.pop(toi, None) is None:
            return
        self._done_tois.pop(toi, None)
        count(self.stats, "files_completed", -1)
        self.failed[toi] = reason  # (counted by the caller, e.g. the writer's fail.<reason>)

    def _deliver(self, toi: int, entry: Any, data: bytes) -> None:
        name = entry.content_location
        try:
            md5 = entry.md5_digest
        except DecodeError:
            md5 = None
        # decompression cap: the announced Content-Length, and max_decoded_bytes
        c = self.config
        cap = c.max_buffered_bytes if c.max_decoded_bytes is None else c.max_decoded_bytes
        if entry.content_length is not None:
            cap = min(cap, entry.content_length)
        body = data
        if md5 is not None and hashlib.md5(data).digest() != md5:
            try:
                body = content_decode(data, entry.content_encoding, cap)
            except DecodedTooLarge:
                self._fail(toi, "decoded_too_large")
                return
            except DecodeError:
                self._fail(toi, "md5")
                return
            if hashlib.md5(body).digest() != md5:
                self._fail(toi, "md5")
                return
        else:
            try:
                body = content_decode(data, entry.content_encoding, cap)
            except DecodedTooLarge:
                self._fail(toi, "decoded_too_large")
                return
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
        if len(self.failed) > self.config.max_failed:  # oldest entry first
            del self.failed[next(iter(self.failed))]
            count(self.stats, "drop.failed_evicted")
        self._events.append(ObjectFailed(toi, self._name(toi), reason))

    def _name(self, toi: int) -> str | None:
        e = self.announced.get(toi)
        return e.content_location if e is not None else None

    def _fdt_complete(self, iid: int, ob: _Obj, data: bytes, now: float) -> None:
        from alc.fdt import decode_fdt, decompress_fdt

        try:
            xml = decompress_fdt(data, ob.cenc, self.config.max_fdt_bytes)
            inst = decode_fdt(xml)
        except DecodeError:
            count(self.stats, "drop.bad_fdt")
            self._done_fdt.pop(iid, None)
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
                # a later instance must not change a TOI's parameters; it may renew it
                if self._later(inst.expires, self._desc_expires.get(f.toi, inst.expires)):
                    self._desc_expires[f.toi] = inst.expires
                continue
            self.announced[f.toi] = eff
            self.fdt_instance_of[f.toi] = iid
            self._desc_expires[f.toi] = inst.expires
            new.append(eff)
            if len(self.announced) > self.config.max_announced:  # oldest entry first
                old_toi = next(iter(self.announced))
                del self.announced[old_toi]
                self.fdt_instance_of.pop(old_toi, None)
                self._desc_expires.pop(old_toi, None)
                self.received.pop(old_toi, None)
                count(self.stats, "drop.announced_evicted")
        self._events.append(FdtReceived(iid, ob.fdt_version, new))
        for eff in new:
            toi = eff.toi
            if toi in self._undescribed:
                d = self._undescribed.pop(toi)
                self._buffered -= len(d) + ENTRY_OVERHEAD
                self._deliver(toi, eff, d)
            pend = self._pending.pop(toi, None)
            if pend:
                for pkt, t in pend:
                    self._pending_bytes -= len(pkt) + ENTRY_OVERHEAD
                    try:
                        hd = parse_lct(pkt)
                    except DecodeError:
                        continue
                    self._packet(hd, pkt, t)

    def _description(self, toi: int, now: float) -> Any:
        """The FDT entry describing ``toi``, unless every instance that described it has
        expired: RFC 6726 §3.3, a receiver MUST NOT use an FDT Instance beyond its
        expiration time.  The expired description is forgotten (``fdt.description_expired``)
        and the object waits, like any undescribed one, for a live instance."""
        entry = self.announced.get(toi)
        if entry is None or not self.config.check_expires:
            return entry
        exp = self._desc_expires.get(toi)
        if exp is None or not self._expired(exp, now):
            return entry
        del self.announced[toi]
        self.fdt_instance_of.pop(toi, None)
        del self._desc_expires[toi]
        count(self.stats, "fdt.description_expired")
        return None

    @staticmethod
    def _later(a: int, b: int) -> bool:
        """a is later than b in 32-bit serial-number arithmetic (NTP seconds)."""
        return a != b and ((a - b) & 0xFFFFFFFF) < 0x80000000

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
            self._buffered -= len(d) + ENTRY_OVERHEAD
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
            if ob.done_sbn is not None:  # streamed: emitted blocks are forgotten (about B*E each)
                have += ob.done_sbn.count(1) * ob.blocks.max() * ob.E
            for b in ob.blk.values():
                if b.nsrc < 0:
                    have += b.size
                else:
                    have += (b.nsrc + len(b.repair or ())) * ob.E
        return min(have, total), total

    @property
    def buffered_bytes(self) -> int:
        return self._buffered + self._pending_bytes


def md5_b64(data: bytes) -> str:
    return base64.b64encode(hashlib.md5(data).digest()).decode()
