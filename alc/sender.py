"""Sans-I/O ALC/FLUTE sender (RFC 5775, RFC 6726) implementing :class:`alc.engine.Engine`.

Usage::

    s = AlcSender(SenderConfig(tsi=1, rate_bps=50e6, fec="rs", repair_ratio=0.25))
    s.add_file("a.bin")                 # or s.add_bytes(data, "name")
    while not s.done:
        for data, addr in s.datagrams_to_send(now): ...   # addr None = the session group
        deadline = s.get_timer()                           # when to call again

What goes on the wire:

* LCT header with V=1, C=0 (32-bit CCI, zero: no congestion control, RFC 6726 §4 (c)),
  TSI/TOI 32 bits each (48 if the TSI needs it), codepoint = FEC Encoding ID.
* TOI 0: one FDT Instance (ID ``fdt_instance_id``) listing every file, with EXT_FDT
  (V = ``flute_version``), EXT_FTI (Compact No-Code) and EXT_CENC when the FDT is
  compressed.  It is sent first, then again every ``fdt_interval`` seconds interleaved with
  file packets (the first repetitions sooner: after 50, 150, 350 ms..., the gap doubling
  up to ``fdt_interval``, so that losing the first copy costs a receiver a few hundred
  packets in its cache of undescribed objects, not ``fdt_interval`` seconds of data),
  at the start of every carousel round and once more at the end.
* TOI 1..: the files, in order, block by block: source symbols then ``repair_ratio``
  repair symbols per block (RS ID 5 uses the RFC 5510 n-algorithm).  A file added with
  :meth:`AlcSender.add_file` (no content encoding) is read from disk one source block at a
  time as it is sent (``os.pread``; its MD5 is computed streaming when it is added), so
  the sender holds one block and its repair symbols, whatever the file size; a
  content-encoded file is encoded in memory and limited to ``max_encoded_file_bytes``.  EXT_FTI in every
  packet when ``inband_fti``.  Optional content encoding (gzip/deflate/zlib) is announced
  by Content-Encoding/Transfer-Length in the FDT; Content-MD5 (RFC 2616: digest of the
  transported, i.e. encoded, body) is always given.
* The last packet of each object in the last round carries B (close object); then
  ``close_packets`` payload-less packets with A (close session) and no TOI.
  ``carousel_rounds = 0``: the carousel runs for ever (no B, no A).
* Late joiners (RFC 6726 §3.3): the FDT goes out at the start of every round and every
  ``fdt_interval`` s, so a receiver joining mid-transfer gets the files on the next round.
  ``Expires`` = the time the FDT Instance is built + ``fdt_expires``; once half of that
  validity has passed, a new FDT Instance (next FDT Instance ID, same file descriptions,
  later ``Expires``) replaces it, so a carousel longer than ``fdt_expires`` never
  announces an expired instance (receivers ignore expired ones).

Rate: a token bucket on bits per second (UDP payload bits), depth the larger of
``burst_bytes`` and ``burst_seconds`` of rate, driven only by the ``now`` values the
caller passes; sending resumes once ``wake_seconds`` of rate (at most a quarter of
``burst_bytes``) have accrued, so a paced sender wakes about once a millisecond, not per datagram.

Speed: the LCT header of each object is precomputed once (two variants: with and without
B), so a packet is ``prefix + struct.pack(payload id) + symbol``.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import math
import os
import struct
import zlib
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import chain, islice, repeat
from pathlib import Path
from typing import Any

from alc.engine import Address, BatchEntry, count

NTP_OFFSET = 2208988800
FEC_IDS = {"nocode": 0, "rs": 5, "raptorq": 6}
CENC = {None: 0, "": 0, "null": 0, "zlib": 1, "deflate": 2, "gzip": 3}
HET_FTI = 64
#: seconds from the first FDT copy to the first repetition (then doubling up to
#: ``fdt_interval``)
FDT_FIRST_GAP = 0.05
HET_FDT = 192
HET_CENC = 193


def content_encode(data: bytes, encoding: str | None) -> bytes:
    """Apply a FLUTE content encoding (RFC 6726 §3.4.3 names)."""
    if encoding in (None, "", "null"):
        return data
    if encoding == "gzip":
        return gzip.compress(data, mtime=0)
    if encoding == "zlib":
        return zlib.compress(data)
    if encoding == "deflate":
        c = zlib.compressobj(wbits=-15)
        return c.compress(data) + c.flush()
    raise ValueError(f"unknown content encoding {encoding!r}")


@dataclass
class SenderConfig:
    tsi: int = 1
    rate_bps: float | None = 10_000_000.0  # None or <= 0: unlimited
    burst_bytes: int = 64 * 1024  # token bucket depth, at least (and the first burst)
    # ... and at least this many seconds of rate (as NORM's ``burst``): the loop that
    # calls the sender sleeps and builds a burst between two calls; a depth shorter than
    # that (64 KiB is 0.33 ms at 1.6 Gbit/s) loses the tokens of the excess, and a
    # sender asked for 1.6 Gbit/s delivered 1.07 with idle CPU
    burst_seconds: float = 0.004
    # a paced sender sends once this much of the rate has accrued (at most burst_bytes/4),
    # then until its tokens run out: one wake-up per millisecond, not one per datagram
    # (at 200 Mbit/s a datagram every 56 us cost each side ~65% of a core)
    wake_seconds: float = 0.001
    fec: str = "nocode"  # nocode | rs | raptorq
    repair_ratio: float = 0.0  # repair symbols per source symbol
    symbol_length: int = 1400  # E (octets); multiple of 4 for RaptorQ
    max_source_block_length: int = 64  # B
    fdt_interval: float = 1.0  # seconds between FDT repetitions
    fdt_expires: float = 3600.0  # seconds
    fdt_instance_id: int = 0
    fdt_encoding: str | None = None  # content encoding of the FDT itself (EXT_CENC)
    flute_version: int = 2  # EXT_FDT V: 2 = RFC 6726, 1 = RFC 3926
    content_encoding: str | None = None  # for files: None | gzip | deflate | zlib
    carousel_rounds: int = 1  # 0 = for ever
    inband_fti: bool = True
    close_packets: int = 3
    max_datagrams_per_call: int = 4096
    seed: int = 0
    rs_matrix: str = "rfc5510"  # "flute": parity as ypo/flute (flute-alc) computes it
    # content-encoded files are encoded in memory: larger ones are refused (ValueError)
    max_encoded_file_bytes: int = 256 * 1024 * 1024


@dataclass
class _Object:
    toi: int
    name: str
    data: bytes  # transport object (after content encoding); b"" when read from ``path``
    content_length: int
    content_type: str
    encoding: str | None
    md5: str
    oti: Any = None
    scheme: Any = None
    prefix: bytes = b""
    prefix_close: bytes = b""
    path: str | None = None  # file read block by block as it is sent (no content encoding)
    length: int = -1  # transfer length (len(data) unless read from path)

    def __post_init__(self) -> None:
        if self.length < 0:
            self.length = len(self.data)


def _pid_packer(encoding_id: int) -> Any:
    """Fast FEC Payload ID packer for the schemes we send."""
    if encoding_id == 0:
        s = struct.Struct("!HH")
        return s.pack
    if encoding_id == 5:
        s5 = struct.Struct("!I")
        return lambda sbn, esi: s5.pack((sbn << 8) | esi)
    if encoding_id == 6:
        s6 = struct.Struct("!I")
        return lambda sbn, esi: s6.pack((sbn << 24) | esi)
    return None


class AlcSender(BatchEntry):
    """FLUTE sender engine.  See module docstring."""

    def __init__(self, config: SenderConfig | None = None) -> None:
        self.config = c = config or SenderConfig()
        if c.fec not in FEC_IDS:
            raise ValueError(f"unknown FEC {c.fec!r}; choose from {sorted(FEC_IDS)}")
        if c.fdt_encoding not in CENC or c.content_encoding not in CENC:
            raise ValueError("content encoding must be one of null, zlib, deflate, gzip")
        if not 0 <= c.tsi < 1 << 48:
            raise ValueError("TSI must fit in 48 bits")
        self.encoding_id = FEC_IDS[c.fec]
        self.stats: dict[str, int] = {}
        self.objects: list[_Object] = []
        self._queue: deque[bytes] = deque()
        self._gen: Iterator[bytes] | None = None
        self._fdt_packets: list[bytes] = []
        self.fdt_instance_id = c.fdt_instance_id & 0xFFFFF  # of the FDT Instance being sent
        self._fdt_refresh: float | None = None  # when the FDT Instance is renewed
        self._tokens = float(c.burst_bytes)
        self._paused = False  # tokens ran out: nothing sent until a quantum accrued
        self._last: float | None = None
        self._next_fdt: float | None = None
        self._fdt_gap = FDT_FIRST_GAP
        self._started = False
        self.done = False
        self._events: deque[Any] = deque()
        # TSI/TOI field widths: 32/32, or 48/48 when the TSI needs 48 bits.
        self._wide = c.tsi >= 1 << 32

    # ------------------------------------------------------------------ objects
    def add_bytes(self, data: bytes, name: str, content_type: str = "application/octet-stream") -> int:
        """Queue an object; returns its TOI.  Must be called before the first send."""
        if self._started:
            raise RuntimeError("objects must be added before sending starts")
        toi = len(self.objects) + 1
        enc = self.config.content_encoding
        body = content_encode(bytes(data), enc)
        md5 = base64.b64encode(hashlib.md5(body).digest()).decode()
        self.objects.append(_Object(toi, name, body, len(data), content_type, enc, md5))
        return toi

    def add_file(self, path: str | Path, name: str | None = None, content_type: str = "application/octet-stream") -> int:
        """Queue a file.  Without content encoding it is not loaded: its MD5 is computed
        reading it once now, its blocks are read from disk as they are sent (the file must
        not change meanwhile: a short read raises).  With content encoding it is encoded in
        memory, at most ``max_encoded_file_bytes`` octets (else ValueError)."""
        if self._started:
            raise RuntimeError("objects must be added before sending starts")
        p = Path(path)
        enc = self.config.content_encoding
        if enc not in (None, "", "null"):
            size = p.stat().st_size
            if size > self.config.max_encoded_file_bytes:
                raise ValueError(
                    f"{p}: {size} bytes: content encoding is done in memory, limit "
                    f"{self.config.max_encoded_file_bytes} bytes"
                )
            return self.add_bytes(p.read_bytes(), name or p.name, content_type)
        h = hashlib.md5()
        size = 0
        with open(p, "rb") as fh:
            while chunk := fh.read(1 << 20):
                h.update(chunk)
                size += len(chunk)
        toi = len(self.objects) + 1
        md5 = base64.b64encode(h.digest()).decode()
        self.objects.append(
            _Object(toi, name or p.name, b"", size, content_type, None, md5, path=str(p), length=size)
        )
        return toi

    # ------------------------------------------------------------------ headers
    def _lct_prefix(self, toi: int | None, cp: int, ext: bytes, close_obj: bool, close_sess: bool = False) -> bytes:
        tsi = self.config.tsi
        if toi is None:
            # payload-less close-session packet: TSI only, no TOI (RFC 6726 §3.1)
            if tsi < 1 << 32:
                s, o, h, ids = 1, 0, 0, struct.pack("!I", tsi)
            else:
                # 48-bit TSI needs H=1, which also forces a (zero) 48-bit TOI
                s, o, h, ids = 1, 1, 1, tsi.to_bytes(6, "big") + bytes(6)
        elif self._wide:
            s, o, h, ids = 1, 1, 1, tsi.to_bytes(6, "big") + toi.to_bytes(6, "big")
        else:
            s, o, h, ids = 1, 1, 0, struct.pack("!II", tsi, toi)
        hdr_len = 4 + 4 + len(ids) + len(ext)
        assert hdr_len % 4 == 0
        w = (
            (1 << 28)
            | (s << 23)
            | (o << 21)
            | (h << 20)
            | (int(close_sess) << 17)
            | (int(close_obj) << 16)
            | ((hdr_len >> 2) << 8)
            | cp
        )
        return struct.pack("!II", w, 0) + ids + ext

    def _fti_ext(self, scheme: Any, oti: Any) -> bytes:
        body = scheme.encode_fti(oti)
        pad = (-(len(body) + 2)) % 4
        body = bytes(body) + b"\0" * pad
        return bytes((HET_FTI, (len(body) + 2) >> 2)) + body

    def _make_oti(self, encoding_id: int, length: int) -> Any:
        from alc.fec import OTI

        c = self.config
        E = c.symbol_length
        B = c.max_source_block_length
        if encoding_id == 0:
            return OTI(0, length, E, B)
        if encoding_id == 5:
            B = min(B, 255)
            max_n = min(255, math.ceil(B * (1.0 + max(c.repair_ratio, 0.0))))
            if max_n < B:
                max_n = B
            return OTI(5, length, E, B, max_encoding_symbols=max_n)
        if encoding_id == 6:
            # RaptorQ: T a multiple of Al = 8; Z blocks of about B symbols (at most 256 blocks)
            T = max(64, E - E % 8)
            kt = -(-length // T)
            z = min(256, max(1 if kt else 0, -(-kt // max(B, 1))))  # empty object: Z = 0
            return OTI(6, length, T, B, num_source_blocks=z, num_sub_blocks=1, alignment=8)
        raise ValueError(f"FEC Encoding ID {encoding_id} not supported by the sender")

    def _prepare(self, now: float) -> None:
        from alc.fec import get_scheme

        c = self.config
        for ob in self.objects:
            ob.oti = self._make_oti(self.encoding_id, ob.length)
            if ob.oti.encoding_id in (2, 5, 129):
                ob.scheme = get_scheme(ob.oti, rs_matrix=c.rs_matrix)
            else:
                ob.scheme = get_scheme(ob.oti)
            ob.oti = getattr(ob.scheme, "oti", ob.oti)
            ext = self._fti_ext(ob.scheme, ob.oti) if c.inband_fti else b""
            ob.prefix = self._lct_prefix(ob.toi, self.encoding_id, ext, False)
            ob.prefix_close = self._lct_prefix(ob.toi, self.encoding_id, ext, True)
        self._fdt_packets = self._build_fdt(now)
        self._started = True

    def _renew_fdt(self, now: float) -> None:
        """Next FDT Instance ID, fresh ``Expires`` (RFC 6726 §3.3: the old instance stays
        valid until it expires, its ID is not reused before that; file entries unchanged)."""
        self.fdt_instance_id = (self.fdt_instance_id + 1) & 0xFFFFF
        self._fdt_packets = self._build_fdt(now)
        count(self.stats, "fdt_renewed")

    # ------------------------------------------------------------------ FDT
    def fdt_xml(self, now: float) -> bytes:
        """The FDT Instance XML listing every object (alc.fdt codec)."""
        from alc.fdt import FDTFile, FDTInstance, encode_fdt
        from alc.fec import oti_to_fdt_attributes

        c = self.config
        expires = int(now + NTP_OFFSET + c.fdt_expires) & 0xFFFFFFFF
        files = []
        for ob in self.objects:
            fec = {k: v for k, v in oti_to_fdt_attributes(ob.oti).items() if k.startswith("FEC-OTI-")}
            files.append(
                FDTFile(
                    toi=ob.toi,
                    content_location=ob.name,
                    content_length=ob.content_length,
                    transfer_length=ob.length,
                    content_type=ob.content_type,
                    content_encoding=ob.encoding if ob.encoding not in (None, "", "null") else None,
                    content_md5=ob.md5,
                    fec=fec,
                )
            )
        return encode_fdt(FDTInstance(expires=expires, complete=True, files=files))

    def _build_fdt(self, now: float) -> list[bytes]:
        from alc.fec import OTI, get_scheme

        c = self.config
        xml = self.fdt_xml(now)
        self.fdt_bytes = xml
        self._fdt_refresh = now + c.fdt_expires / 2.0
        body = content_encode(xml, c.fdt_encoding)
        oti = OTI(0, len(body), c.symbol_length, c.max_source_block_length)
        scheme = get_scheme(oti)
        ext = struct.pack("!I", (HET_FDT << 24) | ((c.flute_version & 0xF) << 20) | self.fdt_instance_id)
        if c.fdt_encoding not in (None, "", "null"):
            ext += struct.pack("!I", (HET_CENC << 24) | (CENC[c.fdt_encoding] << 16))
        ext += self._fti_ext(scheme, oti)
        prefix = self._lct_prefix(0, 0, ext, False)
        pid = _pid_packer(0)
        E = c.symbol_length
        out = []
        pos = 0
        for sbn, k in enumerate(scheme.block_lengths()):
            for esi in range(k):
                out.append(prefix + pid(sbn, esi) + body[pos : pos + E])
                pos += E
        return out

    # ------------------------------------------------------------------ schedule
    def _object_packets(self, ob: _Object, last_round: bool) -> Iterator[list[bytes]]:
        c = self.config
        E = ob.oti.symbol_length
        L = ob.length
        fd = os.open(ob.path, os.O_RDONLY | os.O_CLOEXEC) if ob.path is not None else -1
        try:
            yield from self._block_packets(ob, last_round, fd, E, L, c)
        finally:
            if fd >= 0:
                os.close(fd)

    def _read_block(self, ob: _Object, fd: int, start: int, n: int) -> memoryview:
        """Octets ``start .. start+n`` of the transport object (from disk for a file)."""
        if fd < 0:
            return memoryview(ob.data)[start : start + n]
        buf = bytearray(n)
        mv = memoryview(buf)
        got = 0
        while got < n:
            r = os.preadv(fd, [mv[got:]], start + got)
            if r <= 0:
                raise RuntimeError(f"{ob.path}: file shrank while sending (offset {start + got})")
            got += r
        return mv

    def _block_packets(
        self, ob: _Object, last_round: bool, fd: int, E: int, L: int, c: SenderConfig
    ) -> Iterator[list[bytes]]:
        """The object's packets, one source block's (and its repair packets) per list."""
        pid = _pid_packer(self.encoding_id) or ob.scheme.encode_payload_id
        prefix = ob.prefix
        blocks = ob.scheme.block_lengths()
        ratio = max(c.repair_ratio, 0.0)
        max_n = getattr(ob.oti, "max_encoding_symbols", 0)
        B = ob.oti.max_source_block_length
        pos = 0
        last = len(blocks) - 1
        for sbn, k in enumerate(blocks):
            # one source block in memory at a time (RFC 5052 §9.1 partition), its packets
            # built in one comprehension
            n = min(k * E, L - pos)
            mv = self._read_block(ob, fd, pos, n)
            pos += n
            pkts = [prefix + pid(sbn, esi) + mv[esi * E : esi * E + E] for esi in range(k)]
            if self.encoding_id != 0 and ratio > 0:
                if self.encoding_id == 5 and max_n and B:
                    nrep = (k * max_n) // B - k
                else:
                    nrep = math.ceil(k * ratio)
                if nrep > 0:
                    syms = [bytes(mv[i * E : (i + 1) * E]) for i in range(k)]
                    if len(syms[-1]) < E:
                        syms[-1] = syms[-1] + b"\0" * (E - len(syms[-1]))
                    pkts += [prefix + pid(sbn, esi) + sym for esi, sym in ob.scheme.repair_symbols(sbn, syms, nrep)]
            if sbn == last and last_round and pkts:
                # last packet of the object: same packet, B flag set
                pkts[-1] = ob.prefix_close + pkts[-1][len(prefix) :]
                count(self.stats, "close_object")
            yield pkts
        if L == 0:
            pkt = prefix + pid(0, 0)  # empty object: one packet, payload ID, no symbol
            if last_round:
                pkt = ob.prefix_close + pkt[len(prefix) :]
                count(self.stats, "close_object")
            yield [pkt]

    def _schedule(self) -> Iterator[list[bytes]]:
        """The session's packets in sending order, a list at a time (an FDT Instance, a
        source block with its repair packets, the close packets): the sender reads them
        through one ``chain.from_iterable`` (a C-level step per packet, not a resumption
        of three generators)."""
        c = self.config
        rounds = max(0, c.carousel_rounds)
        r = 0
        while rounds == 0 or r < rounds:
            r += 1
            last = r == rounds
            yield self._fdt_packets
            for ob in self.objects:
                yield from self._object_packets(ob, last)
        yield self._fdt_packets
        close = self._lct_prefix(None, 0, b"", False, close_sess=True)
        yield [close] * c.close_packets

    # ------------------------------------------------------------------ Engine
    def _quantum(self) -> float:
        """Tokens (octets) a paced send waits for before it resumes."""
        c = self.config
        assert c.rate_bps is not None
        return max(1.0, min(c.burst_bytes / 4.0, c.rate_bps / 8.0 * c.wake_seconds))

    def _refill(self, now: float) -> None:
        c = self.config
        if self._last is None:
            self._last = now
        elif now > self._last:
            if c.rate_bps and c.rate_bps > 0:
                depth = max(float(c.burst_bytes), c.rate_bps / 8.0 * c.burst_seconds)
                self._tokens = min(depth, self._tokens + (now - self._last) * c.rate_bps / 8.0)
            self._last = now

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address | None]]:
        if self.done:
            return []
        if not self._started:
            self._prepare(now)
            self._gen = chain.from_iterable(self._schedule())
            self._fdt_gap = min(FDT_FIRST_GAP, self.config.fdt_interval)
            self._next_fdt = now + self._fdt_gap
        c = self.config
        self._refill(now)
        limited = bool(c.rate_bps and c.rate_bps > 0)
        if limited and self._paused:  # the tokens ran out: resume with a quantum
            if self._tokens < self._quantum():
                return []
            self._paused = False
        out: list[tuple[bytes, Address | None]] = []
        queue = self._queue
        gen = self._gen
        assert gen is not None
        if self._fdt_refresh is not None and now >= self._fdt_refresh:
            self._renew_fdt(now)
        if self._next_fdt is not None and now >= self._next_fdt and c.fdt_interval > 0:
            queue.extend(self._fdt_packets)
            count(self.stats, "fdt_repeats")
            self._fdt_gap = min(2 * self._fdt_gap, c.fdt_interval)
            self._next_fdt = now + self._fdt_gap
        nbytes = 0
        npk = 0
        tokens = self._tokens
        maxn = c.max_datagrams_per_call
        while npk < maxn:
            if limited and tokens <= 0:
                break
            if queue:
                pkt = queue.popleft()
            elif not limited:  # no rate: the schedule's next packets in one C-level pull
                got = list(islice(gen, maxn - npk))
                if not got:
                    self.done = True
                    break
                out.extend(zip(got, repeat(None)))
                npk += len(got)
                nbytes += sum(map(len, got))
                continue
            else:
                nxt = next(gen, None)
                if nxt is None:
                    self.done = True
                    break
                pkt = nxt
            out.append((pkt, None))
            npk += 1
            nbytes += len(pkt)
            if limited:
                tokens -= len(pkt)
        self._tokens = tokens
        if limited and tokens <= 0:
            self._paused = True
        if npk:
            count(self.stats, "packets", npk)
            count(self.stats, "bytes", nbytes)
        return out

    def get_timer(self) -> float | None:
        if self.done:
            return None
        if self._last is None:
            return 0.0
        c = self.config
        if not (c.rate_bps and c.rate_bps > 0):
            return self._last
        if self._paused:
            return self._last + max(0.0, self._quantum() - self._tokens) * 8.0 / c.rate_bps
        if self._tokens > 0:
            return self._last
        return self._last + (-self._tokens + 1) * 8.0 / c.rate_bps

    def handle_timer(self, now: float) -> None:
        self._refill(now)

    def receive_datagram(self, data: bytes, addr: Address | None, now: float) -> None:
        count(self.stats, "drop.sender_ignores_input")

    def next_event(self) -> Any | None:
        return self._events.popleft() if self._events else None

    # ------------------------------------------------------------------ helpers
    def all_packets(self, now: float = 0.0) -> list[bytes]:
        """The whole schedule at once, ignoring the rate (tests, pcap generation)."""
        if self.config.carousel_rounds <= 0:
            raise ValueError("an endless carousel (carousel_rounds = 0) has no 'all packets'")
        saved = self.config.rate_bps
        self.config.rate_bps = None
        out: list[bytes] = []
        try:
            while not self.done:
                out.extend(p for p, _ in self.datagrams_to_send(now))
        finally:
            self.config.rate_bps = saved
        return out
