"""NORM message codecs (RFC 5740 §4), exact byte round trip.

``decode(buf)`` returns one of :class:`NormInfo`, :class:`NormData`, :class:`NormCmdFlush`,
:class:`NormCmdEot`, :class:`NormCmdSquelch`, :class:`NormCmdCC`, :class:`NormCmdRepairAdv`,
:class:`NormCmdAckReq`, :class:`NormCmdApplication`, :class:`NormNack`, :class:`NormAck`,
:class:`NormReport`; every one has ``encode() -> bytes`` with
``decode(b).encode() == b`` for every ``b`` that decodes.  Malformed input raises only
:class:`alc.errors.DecodeError`.

Quantized header fields (``grtt``, ``backoff``, ``gsize``, rates, ``cc_rtt`` ...) are kept as
their wire codes so the round trip is exact; :mod:`norm.quantize` converts them.

Header extensions are framed by :mod:`alc.ext`; NORM-typed ones are :class:`ExtFti`
(HET 64, body kept raw, interpreted with :meth:`ExtFti.params` for the message's
``fec_id``), :class:`ExtCC` (HET 3), :class:`ExtRate` (HET 128) and :class:`ExtAuth`
(HET 1, opaque, parsed by :mod:`tesla`); anything else stays a
:class:`alc.ext.HeaderExtension`.

FEC Payload IDs (RFC 5445 / RFC 5510 layouts) are carried as ``(sbn, esi, sbl)``; ``sbl``
(``source_block_length``) only exists for fec_id 129.  The layout for fec_id 2 depends on
``m`` which is not in the message itself: it is taken from an EXT_FTI in the same message,
else from the ``fec2_m`` argument of :func:`decode` (default 8, RFC 5510 default); each
decoded object remembers it in its ``m`` field.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any, TypeVar

from alc.errors import DecodeError
from alc.ext import HeaderExtension, decode_extensions

__all__ = [
    "NORM_VERSION",
    "DecodeError",
    "ExtAuth",
    "ExtCC",
    "ExtFti",
    "ExtRate",
    "FtiParams",
    "HeaderExtension",
    "NormAck",
    "NormCmdAckReq",
    "NormCmdApplication",
    "NormCmdCC",
    "NormCmdEot",
    "NormCmdFlush",
    "NormCmdRepairAdv",
    "NormCmdSquelch",
    "NormData",
    "NormInfo",
    "NormMessage",
    "NormNack",
    "NormReport",
    "CCNode",
    "RepairItem",
    "RepairRequest",
    "StreamHeader",
    "decode",
    "decode_repair_requests",
    "encode_repair_requests",
    "header_regions",
    "payload_id_length",
]

NORM_VERSION = 1

# message types
NORM_INFO = 1
NORM_DATA = 2
NORM_CMD = 3
NORM_NACK = 4
NORM_ACK = 5
NORM_REPORT = 6

# NORM_CMD flavors (sub-types)
CMD_FLUSH = 1
CMD_EOT = 2
CMD_SQUELCH = 3
CMD_CC = 4
CMD_REPAIR_ADV = 5
CMD_ACK_REQ = 6
CMD_APPLICATION = 7

# object flags (NORM_DATA / NORM_INFO)
FLAG_REPAIR = 0x01
FLAG_EXPLICIT = 0x02
FLAG_INFO = 0x04
FLAG_UNRELIABLE = 0x08
FLAG_FILE = 0x10
FLAG_STREAM = 0x20

# NACK repair request forms and flags
NACK_ITEMS = 1
NACK_RANGES = 2
NACK_ERASURES = 3
NACK_SEGMENT = 0x01
NACK_BLOCK = 0x02
NACK_INFO = 0x04
NACK_OBJECT = 0x08

# CC flags (cc_node_list items and EXT_CC)
CC_CLR = 0x01
CC_PLR = 0x02
CC_RTT = 0x04
CC_START = 0x08
CC_LEAVE = 0x10
CC_LIMIT = 0x20  # NRL only

# ACK types
ACK_CC = 1
ACK_FLUSH = 2

REPAIR_ADV_FLAG_LIMIT = 0x01
STREAM_END = 0  # stream control code (payload_len == 0)

# header extension types
EXT_AUTH = 1
EXT_CC = 3
EXT_FTI = 64
EXT_RATE = 128

NODE_NONE = 0x00000000
NODE_ANY = 0xFFFFFFFF

SUPPORTED_FEC_IDS = (0, 2, 5, 129)

_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_COMMON = struct.Struct(">BBHI")  # ver|type, hdr_len, sequence, source_id
_SENDER = struct.Struct(">BBHIHBB")  # + instance_id, grtt, backoff|gsize  (12 bytes)
_OBJ = struct.Struct(">BBHIHBBBBH")  # + flags, fec_id, object_transport_id (16 bytes)
_CMD_HEAD = struct.Struct(">BBHIHBBB")  # + flavor (13 bytes)
_CC = struct.Struct(">BBHIHBBBBHII")  # CMD(CC): flavor, reserved, cc_seq, send_time (24)
_FB = struct.Struct(">BBHIIHHII")  # NACK/ACK common (24 bytes)
_ITEM_HEAD = struct.Struct(">BBH")
_REQ_HEAD = struct.Struct(">BBH")
_CCNODE = struct.Struct(">IBBH")
_EXTCC = struct.Struct(">BBHBBHHH")
_STREAM = struct.Struct(">HHI")


# --------------------------------------------------------------------------- FEC payload id


def payload_id_length(fec_id: int) -> int:
    """Octets of the FEC Payload ID for ``fec_id`` (RFC 5445 §3.2.1/§5.2.1, RFC 5510)."""
    if fec_id == 129:
        return 8
    if fec_id in (0, 2, 5):
        return 4
    raise DecodeError("fec_id", f"unsupported FEC Encoding ID {fec_id}")


def _decode_pid(buf: bytes, off: int, fec_id: int, m: int) -> tuple[int, int, int]:
    """-> (sbn, esi, sbl); sbl is 0 except for fec_id 129."""
    if fec_id == 5 or (fec_id == 2 and m == 8):
        w = _U32.unpack_from(buf, off)[0]
        return w >> 8, w & 0xFF, 0
    if fec_id == 0 or (fec_id == 2 and m == 16):
        sbn, esi = struct.unpack_from(">HH", buf, off)
        return sbn, esi, 0
    if fec_id == 129:
        sbn, sbl, esi = struct.unpack_from(">IHH", buf, off)
        return sbn, esi, sbl
    if fec_id == 2:
        raise DecodeError("fec_id", f"FEC Encoding ID 2 with m={m} is not supported")
    raise DecodeError("fec_id", f"unsupported FEC Encoding ID {fec_id}")


def _encode_pid(fec_id: int, m: int, sbn: int, esi: int, sbl: int) -> bytes:
    if fec_id == 5 or (fec_id == 2 and m == 8):
        if not (0 <= sbn < 1 << 24 and 0 <= esi < 256):
            raise ValueError(f"fec_id {fec_id}: sbn {sbn} / esi {esi} out of range")
        return _U32.pack((sbn << 8) | esi)
    if fec_id == 0 or (fec_id == 2 and m == 16):
        return struct.pack(">HH", sbn, esi)
    if fec_id == 129:
        return struct.pack(">IHH", sbn, sbl, esi)
    raise ValueError(f"unsupported FEC Encoding ID {fec_id} (m={m})")


# --------------------------------------------------------------------------- extensions


@dataclass(frozen=True, slots=True)
class FtiParams:
    """EXT_FTI interpreted for one fec_id (RFC 5740 §4.2.1, RFC 5445, RFC 5510).

    ``last_field`` is the final FTI field as sent: RFC 5510 ``max_n`` for fec_id 2/5, but NRL
    writes the number of parity symbols there (NRL deviation); RFC 5740 Fig. 7 calls it
    ``fec_num_parity`` for 129.  ``num_parity`` interprets it NRL-style (see
    :meth:`ExtFti.params`).
    """

    object_size: int
    segment_size: int
    max_block_len: int
    last_field: int
    num_parity: int
    m: int = 8
    g: int = 1
    instance_id: int = 0
    reserved: int = 0


@dataclass(frozen=True, slots=True)
class ExtFti:
    """EXT_FTI (HET 64); ``body`` is kept raw (after HET/HEL) for exact round trip."""

    body: bytes
    het: int = EXT_FTI

    def encode(self) -> bytes:
        return HeaderExtension(EXT_FTI, self.body).encode()

    @property
    def object_size(self) -> int:
        if len(self.body) < 6:
            raise DecodeError("EXT_FTI", "too short for object_size")
        hi, lo = struct.unpack_from(">HI", self.body, 0)
        return (hi << 32) | lo

    def params(self, fec_id: int, last_is_max_n: bool = False) -> FtiParams:
        """Interpret the body for ``fec_id``.

        ``last_is_max_n``: read the last field of fec_id 2/5 the RFC 5510 way (max_n, so
        ``num_parity = max_n - max_block_len``).  Default False = NRL semantics (the value is
        the parity count), which is what every NRL sender writes.
        """
        b = self.body
        if fec_id == 0:
            if len(b) != 14:
                raise DecodeError("EXT_FTI", f"fec_id 0 needs HEL 4, body {len(b)}")
            hi, lo, res, e, msbl = struct.unpack_from(">HIHHI", b, 0)
            return FtiParams((hi << 32) | lo, e, msbl, 0, 0, reserved=res)
        if fec_id == 2:
            if len(b) != 14:
                raise DecodeError("EXT_FTI", f"fec_id 2 needs HEL 4, body {len(b)}")
            hi, lo, m, g, e, blen, last = struct.unpack_from(">HIBBHHH", b, 0)
            m = m or 8  # RFC 5510 §4.2.4.2: 0 = not signalled -> default 8
            if m not in (8, 16):
                raise DecodeError("EXT_FTI.m", f"m = {m}, only 8 and 16 supported")
            npar = max(0, last - blen) if last_is_max_n else last
            return FtiParams((hi << 32) | lo, e, blen, last, npar, m=m, g=g or 1)
        if fec_id == 5:
            if len(b) != 10:
                raise DecodeError("EXT_FTI", f"fec_id 5 needs HEL 3, body {len(b)}")
            hi, lo, e, blen, last = struct.unpack_from(">HIHBB", b, 0)
            npar = max(0, last - blen) if last_is_max_n else last
            return FtiParams((hi << 32) | lo, e, blen, last, npar)
        if fec_id == 129:
            if len(b) != 14:
                raise DecodeError("EXT_FTI", f"fec_id 129 needs HEL 4, body {len(b)}")
            hi, lo, inst, e, blen, npar = struct.unpack_from(">HIHHHH", b, 0)
            return FtiParams((hi << 32) | lo, e, blen, npar, npar, instance_id=inst)
        raise DecodeError("fec_id", f"unsupported FEC Encoding ID {fec_id}")

    @classmethod
    def build(
        cls,
        fec_id: int,
        object_size: int,
        segment_size: int,
        max_block_len: int,
        num_parity: int,
        *,
        m: int = 8,
        g: int = 1,
        instance_id: int = 0,
        last_is_max_n: bool = False,
    ) -> ExtFti:
        """Build the FTI body; for fec_id 2/5 the last field is ``num_parity`` (NRL) unless
        ``last_is_max_n`` (RFC 5510: ``max_block_len + num_parity``)."""
        hi, lo = object_size >> 32, object_size & 0xFFFFFFFF
        last = max_block_len + num_parity if last_is_max_n else num_parity
        if fec_id == 0:
            body = struct.pack(">HIHHI", hi, lo, 0, segment_size, max_block_len)
        elif fec_id == 2:
            body = struct.pack(">HIBBHHH", hi, lo, m, g, segment_size, max_block_len, last)
        elif fec_id == 5:
            body = struct.pack(">HIHBB", hi, lo, segment_size, max_block_len, last)
        elif fec_id == 129:
            body = struct.pack(
                ">HIHHHH", hi, lo, instance_id, segment_size, max_block_len, num_parity
            )
        else:
            raise ValueError(f"unsupported FEC Encoding ID {fec_id}")
        return cls(body)

    def to_oti(self, fec_id: int, last_is_max_n: bool = False) -> Any:
        """The :class:`alc.fec.OTI` for this FTI (``alc.fec.decode_fti``); with the NRL
        reading (default) ``max_encoding_symbols`` = max_block_len + num_parity."""
        from alc.fec import decode_fti

        # fec_id 129: RFC 5740 Fig. 7 itself defines the field as fec_num_parity
        rfc_max_n = last_is_max_n and fec_id != 129
        return decode_fti(fec_id, self.body, last_field="max_n" if rfc_max_n else "num_parity")


@dataclass(frozen=True, slots=True)
class ExtCC:
    """EXT_CC (HET 3, HEL 3), RFC 5740 §4.2.3.5; codes kept quantized."""

    cc_sequence: int
    cc_flags: int
    cc_rtt: int
    cc_loss: int
    cc_rate: int
    cc_reserved: int = 0  # NRL: low 16 bits of a 32-bit loss
    het: int = EXT_CC

    def encode(self) -> bytes:
        return _EXTCC.pack(
            EXT_CC,
            3,
            self.cc_sequence,
            self.cc_flags,
            self.cc_rtt,
            self.cc_loss,
            self.cc_rate,
            self.cc_reserved,
        )


@dataclass(frozen=True, slots=True)
class ExtRate:
    """EXT_RATE (HET 128, fixed form): reserved byte + 16-bit quantized send_rate."""

    send_rate: int
    reserved: int = 0
    het: int = EXT_RATE

    def encode(self) -> bytes:
        return struct.pack(">BBH", EXT_RATE, self.reserved, self.send_rate)


@dataclass(frozen=True, slots=True)
class ExtAuth:
    """EXT_AUTH (HET 1): opaque body (after HET/HEL), parsed by :mod:`tesla`."""

    body: bytes
    het: int = EXT_AUTH

    def encode(self) -> bytes:
        return HeaderExtension(EXT_AUTH, self.body).encode()


Extension = ExtFti | ExtCC | ExtRate | ExtAuth | HeaderExtension


def _typed_ext(e: HeaderExtension) -> Extension:
    het = e.het
    if het == EXT_FTI:
        return ExtFti(e.body)
    if het == EXT_CC:
        if len(e.body) != 10:
            raise DecodeError("EXT_CC", f"HEL must be 3, body {len(e.body)} octets")
        _, _, seq, flags, rtt, loss, rate, res = _EXTCC.unpack(bytes((3, 3)) + e.body)
        return ExtCC(seq, flags, rtt, loss, rate, res)
    if het == EXT_RATE:
        res, rate = struct.unpack(">BH", e.body)
        return ExtRate(rate, res)
    if het == EXT_AUTH:
        return ExtAuth(e.body)
    return e


def _decode_exts(buf: bytes, start: int, end: int) -> list[Extension]:
    if start == end:
        return []
    # fast path: the area is exactly one EXT_FTI (what NRL puts on every DATA/INFO)
    if buf[start] == EXT_FTI and buf[start + 1] << 2 == end - start:
        return [ExtFti(buf[start + 2 : end])]
    return [_typed_ext(e) for e in decode_extensions(buf, start, end)]


def _encode_exts(exts: list[Extension]) -> bytes:
    if not exts:
        return b""
    return b"".join([e.encode() for e in exts])


def find_ext(exts: list[Extension], het: int) -> Extension | None:
    for e in exts:
        if e.het == het:
            return e
    return None


_E = TypeVar("_E", ExtCC, ExtRate)


def _first_of(exts: list[Extension], cls: type[_E]) -> _E | None:
    """The first extension of typed class ``cls`` (a raw HeaderExtension does not count)."""
    for e in exts:
        if isinstance(e, cls):
            return e
    return None


def _fti_m(buf: bytes, start: int, end: int, default: int) -> int:
    """m of a fec_id 2 EXT_FTI in buf[start:end], else ``default`` (tolerant scan)."""
    pos = start
    while pos + 4 <= end:
        het = buf[pos]
        if het >= 128:
            pos += 4
            continue
        hel = buf[pos + 1]
        if hel == 0:
            break
        if het == EXT_FTI and hel == 4:
            m = buf[pos + 8] or 8
            return m if m in (8, 16) else default
        pos += hel * 4
    return default


# --------------------------------------------------------------------------- common checks


def _hdr_len(buf: bytes | bytearray | memoryview, base: int) -> int:
    """hdr_len in octets, checked to lie between the ``base`` header and the message end.
    The callers (:func:`decode`, :func:`header_regions`) have already checked that the
    message has 8 octets and version 1."""
    n = len(buf)
    hl = buf[1] << 2
    if hl > n:
        raise DecodeError("hdr_len", f"hdr_len {hl} octets > message length {n}")
    if hl < base:
        raise DecodeError("hdr_len", f"hdr_len {hl} octets < base header {base}")
    return hl


# --------------------------------------------------------------------------- sender messages


@dataclass(slots=True)
class StreamHeader:
    """Stream payload header (RFC 5740 §4.2.1): part of the payload, FEC-protected."""

    payload_len: int
    payload_msg_start: int
    payload_offset: int

    def encode(self) -> bytes:
        return _STREAM.pack(self.payload_len, self.payload_msg_start, self.payload_offset)

    @classmethod
    def decode(cls, payload: bytes) -> tuple[StreamHeader, bytes]:
        """-> (header, payload_data[:payload_len]); control code when payload_len == 0."""
        if len(payload) < 8:
            raise DecodeError("stream header", f"payload {len(payload)} octets < 8")
        plen, mstart, off = _STREAM.unpack_from(payload, 0)
        if 8 + plen > len(payload):
            raise DecodeError("payload_len", f"{plen} > {len(payload) - 8} octets present")
        if plen and mstart > plen:
            raise DecodeError("payload_msg_start", f"{mstart} > payload_len {plen}")
        return cls(plen, mstart, off), payload[8 : 8 + plen]


@dataclass(slots=True)
class NormInfo:
    sequence: int
    source_id: int
    instance_id: int
    grtt: int
    backoff: int
    gsize: int
    flags: int
    fec_id: int
    object_id: int
    extensions: list[Extension] = field(default_factory=list)
    payload: bytes = b""
    msg_type = NORM_INFO

    def encode(self) -> bytes:
        ext = _encode_exts(self.extensions)
        return (
            _OBJ.pack(
                0x10 | NORM_INFO,
                (16 + len(ext)) >> 2,
                self.sequence,
                self.source_id,
                self.instance_id,
                self.grtt,
                (self.backoff << 4) | self.gsize,
                self.flags,
                self.fec_id,
                self.object_id,
            )
            + ext
            + self.payload
        )


@dataclass(slots=True)
class NormData:
    sequence: int
    source_id: int
    instance_id: int
    grtt: int
    backoff: int
    gsize: int
    flags: int
    fec_id: int
    object_id: int
    sbn: int
    esi: int
    sbl: int = 0  # source_block_length, fec_id 129 only
    extensions: list[Extension] = field(default_factory=list)
    payload: bytes = b""  # for STREAM objects begins with the 8-octet stream header
    m: int = 8  # fec_id 2 only: payload id layout
    msg_type = NORM_DATA

    def encode(self) -> bytes:
        return encode_data(
            (self.sequence, self.source_id, self.instance_id, self.grtt, self.backoff, self.gsize),
            self.flags,
            self.fec_id,
            self.object_id,
            _encode_pid(self.fec_id, self.m, self.sbn, self.esi, self.sbl),
            _encode_exts(self.extensions),
            self.payload,
        )

    @property
    def is_stream(self) -> bool:
        return bool(self.flags & FLAG_STREAM)

    def fti(self) -> ExtFti | None:
        return find_ext(self.extensions, EXT_FTI)  # type: ignore[return-value]


def encode_data(
    hdr: tuple[int, int, int, int, int, int],
    flags: int,
    fec_id: int,
    object_id: int,
    pid: bytes,
    ext: bytes,
    payload: bytes | bytearray | memoryview,
) -> bytes:
    """NORM_DATA octets from already encoded parts: ``hdr`` = (sequence, source_id,
    instance_id, grtt, backoff, gsize) (quantized), ``pid`` = FEC payload id
    (:func:`encode_payload_id`), ``ext`` = encoded header extensions.  What
    :meth:`NormData.encode` produces, for a sender that keeps the parts that do not change
    per message (the EXT_FTI of an object) encoded."""
    seq, src, inst, grtt, backoff, gsize = hdr
    head = _OBJ.pack(
        0x10 | NORM_DATA,
        (16 + len(pid) + len(ext)) >> 2,
        seq,
        src,
        inst,
        grtt,
        (backoff << 4) | gsize,
        flags,
        fec_id,
        object_id,
    )
    return b"".join((head, pid, ext, payload))


def encode_payload_id(fec_id: int, m: int, sbn: int, esi: int, sbl: int = 0) -> bytes:
    """The FEC payload id of a NORM_DATA (or FLUSH/SQUELCH) message."""
    return _encode_pid(fec_id, m, sbn, esi, sbl)


def _sender_fields(buf: bytes) -> tuple[int, int, int, int, int, int]:
    _, _, seq, src, inst, grtt, bg = _SENDER.unpack_from(buf, 0)
    return seq, src, inst, grtt, bg >> 4, bg & 0xF


def _decode_info(buf: bytes) -> NormInfo:
    hl = _hdr_len(buf, 16)
    _, _, seq, src, inst, grtt, bg, flags, fec_id, obj = _OBJ.unpack_from(buf, 0)
    exts = _decode_exts(buf, 16, hl)
    return NormInfo(seq, src, inst, grtt, bg >> 4, bg & 0xF, flags, fec_id, obj, exts, buf[hl:])


def _decode_obj_pid(buf: bytes, fec_id: int, fec2_m: int) -> tuple[int, int, int, int, int, int]:
    """The FEC payload id at octet 16 (NORM_DATA, CMD(FLUSH/SQUELCH)) and the header checks:
    -> (base header length, hdr_len octets, m, sbn, esi, sbl)."""
    base = 16 + payload_id_length(fec_id)
    hl = _hdr_len(buf, base)
    m = _fti_m(buf, base, hl, fec2_m) if fec_id == 2 else 8
    sbn, esi, sbl = _decode_pid(buf, 16, fec_id, m)
    return base, hl, m, sbn, esi, sbl


def _decode_data(buf: bytes, fec2_m: int) -> NormData:
    if len(buf) < 16:
        raise DecodeError("NORM_DATA", f"{len(buf)} octets < 16")
    _, _, seq, src, inst, grtt, bg, flags, fec_id, obj = _OBJ.unpack_from(buf, 0)
    if fec_id == 5:  # fast path for the NRL default
        base = 20
        w = _U32.unpack_from(buf, 16)[0] if len(buf) >= 20 else 0
        sbn, esi, sbl, m = w >> 8, w & 0xFF, 0, 8
        hl = _hdr_len(buf, base)
    else:
        base, hl, m, sbn, esi, sbl = _decode_obj_pid(buf, fec_id, fec2_m)
    exts = _decode_exts(buf, base, hl)
    return NormData(
        seq,
        src,
        inst,
        grtt,
        bg >> 4,
        bg & 0xF,
        flags,
        fec_id,
        obj,
        sbn,
        esi,
        sbl,
        exts,
        buf[hl:],
        m,
    )


@dataclass(slots=True)
class _CmdBase:
    """The sender fields that every NORM_CMD flavor starts with (subclass fields follow
    them, so positional construction is ``(sequence, ..., gsize, <flavor fields>)``)."""

    sequence: int
    source_id: int
    instance_id: int
    grtt: int
    backoff: int
    gsize: int
    msg_type = NORM_CMD


def _cmd_prefix(c: Any, flavor: int, hdr_octets: int) -> bytes:
    return _CMD_HEAD.pack(
        0x10 | NORM_CMD,
        hdr_octets >> 2,
        c.sequence,
        c.source_id,
        c.instance_id,
        c.grtt,
        (c.backoff << 4) | c.gsize,
        flavor,
    )


def _encode_obj_cmd(c: Any, flavor: int, tail: bytes) -> bytes:
    """FLUSH and SQUELCH: prefix, fec_id, object id, FEC payload id, extensions, ``tail``."""
    pid = _encode_pid(c.fec_id, c.m, c.sbn, c.esi, c.sbl)
    ext = _encode_exts(c.extensions)
    return (
        _cmd_prefix(c, flavor, 16 + len(pid) + len(ext))
        + struct.pack(">BH", c.fec_id, c.object_id)
        + pid
        + ext
        + tail
    )


def _pack_u24(v: int) -> bytes:
    return struct.pack(">BH", v >> 16, v & 0xFFFF)


def _unpack_u24(buf: bytes, off: int) -> int:
    return (buf[off] << 16) | (buf[off + 1] << 8) | buf[off + 2]


@dataclass(slots=True)
class NormCmdFlush(_CmdBase):
    fec_id: int
    object_id: int
    sbn: int
    esi: int
    sbl: int = 0
    extensions: list[Extension] = field(default_factory=list)
    acking_nodes: list[int] = field(default_factory=list)
    m: int = 8
    flavor = CMD_FLUSH

    def encode(self) -> bytes:
        return _encode_obj_cmd(self, CMD_FLUSH, _pack_nodes(self.acking_nodes))


@dataclass(slots=True)
class NormCmdSquelch(_CmdBase):
    fec_id: int
    object_id: int
    sbn: int
    esi: int
    sbl: int = 0
    extensions: list[Extension] = field(default_factory=list)
    invalid_objects: list[int] = field(default_factory=list)
    m: int = 8
    flavor = CMD_SQUELCH

    def encode(self) -> bytes:
        objs = self.invalid_objects
        return _encode_obj_cmd(self, CMD_SQUELCH, struct.pack(f">{len(objs)}H", *objs))


@dataclass(slots=True)
class NormCmdEot(_CmdBase):
    reserved: int = 0  # 24 bits, MUST be 0, ignored on receipt (kept for round trip)
    extensions: list[Extension] = field(default_factory=list)
    payload: bytes = b""  # nothing defined; kept
    flavor = CMD_EOT

    def encode(self) -> bytes:
        ext = _encode_exts(self.extensions)
        return (
            _cmd_prefix(self, CMD_EOT, 16 + len(ext))
            + _pack_u24(self.reserved)
            + ext
            + self.payload
        )


@dataclass(slots=True)
class CCNode:
    """One cc_node_list item of NORM_CMD(CC) (codes quantized)."""

    node_id: int
    flags: int
    rtt: int
    rate: int


@dataclass(slots=True)
class NormCmdCC(_CmdBase):
    cc_sequence: int
    send_time_sec: int
    send_time_usec: int
    reserved: int = 0  # NRL uses 0x01 as a (non-RFC) SYN flag
    extensions: list[Extension] = field(default_factory=list)
    nodes: list[CCNode] = field(default_factory=list)
    flavor = CMD_CC

    def encode(self) -> bytes:
        ext = _encode_exts(self.extensions)
        head = _CC.pack(
            0x10 | NORM_CMD,
            (24 + len(ext)) >> 2,
            self.sequence,
            self.source_id,
            self.instance_id,
            self.grtt,
            (self.backoff << 4) | self.gsize,
            CMD_CC,
            self.reserved,
            self.cc_sequence,
            self.send_time_sec,
            self.send_time_usec,
        )
        nodes = b"".join([_CCNODE.pack(n.node_id, n.flags, n.rtt, n.rate) for n in self.nodes])
        return head + ext + nodes

    @property
    def send_rate(self) -> int | None:
        rate = _first_of(self.extensions, ExtRate)
        return rate.send_rate if rate is not None else None


@dataclass(slots=True)
class NormCmdRepairAdv(_CmdBase):
    flags: int = 0
    reserved: int = 0
    extensions: list[Extension] = field(default_factory=list)
    requests: list[RepairRequest] = field(default_factory=list)
    flavor = CMD_REPAIR_ADV

    def encode(self) -> bytes:
        ext = _encode_exts(self.extensions)
        return (
            _cmd_prefix(self, CMD_REPAIR_ADV, 16 + len(ext))
            + struct.pack(">BH", self.flags, self.reserved)
            + ext
            + encode_repair_requests(self.requests)
        )


@dataclass(slots=True)
class NormCmdAckReq(_CmdBase):
    ack_type: int
    ack_id: int
    reserved: int = 0
    extensions: list[Extension] = field(default_factory=list)
    acking_nodes: list[int] = field(default_factory=list)
    flavor = CMD_ACK_REQ

    def encode(self) -> bytes:
        ext = _encode_exts(self.extensions)
        return (
            _cmd_prefix(self, CMD_ACK_REQ, 16 + len(ext))
            + struct.pack(">BBB", self.reserved, self.ack_type, self.ack_id)
            + ext
            + _pack_nodes(self.acking_nodes)
        )


@dataclass(slots=True)
class NormCmdApplication(_CmdBase):
    reserved: int = 0
    extensions: list[Extension] = field(default_factory=list)
    content: bytes = b""
    flavor = CMD_APPLICATION

    def encode(self) -> bytes:
        ext = _encode_exts(self.extensions)
        return (
            _cmd_prefix(self, CMD_APPLICATION, 16 + len(ext))
            + _pack_u24(self.reserved)
            + ext
            + self.content
        )


def _pack_nodes(nodes: list[int]) -> bytes:
    return struct.pack(f">{len(nodes)}I", *nodes)


def _unpack_nodes(buf: bytes, off: int, what: str) -> list[int]:
    n = len(buf) - off
    if n % 4:
        raise DecodeError(what, f"{n} octets is not a whole number of 32-bit node ids")
    return list(struct.unpack_from(f">{n // 4}I", buf, off))


def _decode_cmd(buf: bytes, fec2_m: int) -> Any:
    if len(buf) < 16:
        raise DecodeError("NORM_CMD", f"{len(buf)} octets < 16")
    seq, src, inst, grtt, bo, gs = _sender_fields(buf)
    flavor = buf[12]
    if flavor in (CMD_FLUSH, CMD_SQUELCH):
        fec_id = buf[13]
        obj = _U16.unpack_from(buf, 14)[0]
        base, hl, m, sbn, esi, sbl = _decode_obj_pid(buf, fec_id, fec2_m)
        exts = _decode_exts(buf, base, hl)
        if flavor == CMD_FLUSH:
            nodes = _unpack_nodes(buf, hl, "acking_node_list")
            return NormCmdFlush(
                seq, src, inst, grtt, bo, gs, fec_id, obj, sbn, esi, sbl, exts, nodes, m
            )
        n = len(buf) - hl
        if n % 2:
            raise DecodeError("invalid_object_list", f"{n} octets is odd")
        objs = list(struct.unpack_from(f">{n // 2}H", buf, hl))
        return NormCmdSquelch(
            seq, src, inst, grtt, bo, gs, fec_id, obj, sbn, esi, sbl, exts, objs, m
        )
    if flavor == CMD_CC:
        hl = _hdr_len(buf, 24)
        _, _, _, _, _, _, _, _, res, ccseq, tsec, tusec = _CC.unpack_from(buf, 0)
        exts = _decode_exts(buf, 24, hl)
        n = len(buf) - hl
        if n % 8:
            raise DecodeError("cc_node_list", f"{n} octets is not a multiple of 8")
        ccnodes = [CCNode(*_CCNODE.unpack_from(buf, o)) for o in range(hl, len(buf), 8)]
        return NormCmdCC(seq, src, inst, grtt, bo, gs, ccseq, tsec, tusec, res, exts, ccnodes)
    hl = _hdr_len(buf, 16)
    exts = _decode_exts(buf, 16, hl)
    if flavor == CMD_EOT:
        res = _unpack_u24(buf, 13)
        return NormCmdEot(seq, src, inst, grtt, bo, gs, res, exts, buf[hl:])
    if flavor == CMD_REPAIR_ADV:
        flags, res = struct.unpack_from(">BH", buf, 13)
        reqs = decode_repair_requests(buf, hl, len(buf), fec2_m)
        return NormCmdRepairAdv(seq, src, inst, grtt, bo, gs, flags, res, exts, reqs)
    if flavor == CMD_ACK_REQ:
        res, at, aid = buf[13], buf[14], buf[15]
        nodes = _unpack_nodes(buf, hl, "acking_node_list")
        return NormCmdAckReq(seq, src, inst, grtt, bo, gs, at, aid, res, exts, nodes)
    if flavor == CMD_APPLICATION:
        res = _unpack_u24(buf, 13)
        return NormCmdApplication(seq, src, inst, grtt, bo, gs, res, exts, buf[hl:])
    raise DecodeError("NORM_CMD.sub-type", f"unknown flavor {flavor}")


# --------------------------------------------------------------------------- repair requests


@dataclass(slots=True)
class RepairItem:
    """One repair item: fec_id, reserved, object_transport_id, FEC payload id."""

    fec_id: int
    object_id: int
    sbn: int = 0
    esi: int = 0
    sbl: int = 0  # fec_id 129 only
    reserved: int = 0
    m: int = 8  # fec_id 2 only

    def encode(self) -> bytes:
        return _ITEM_HEAD.pack(self.fec_id, self.reserved, self.object_id) + _encode_pid(
            self.fec_id, self.m, self.sbn, self.esi, self.sbl
        )

    @property
    def size(self) -> int:
        return 4 + payload_id_length(self.fec_id)

    def key(self) -> tuple[int, int, int]:
        return (self.object_id, self.sbn, self.esi)


def _decode_item(buf: bytes, off: int, fec2_m: int) -> tuple[RepairItem, int]:
    fec_id, res, obj = _ITEM_HEAD.unpack_from(buf, off)
    n = payload_id_length(fec_id)
    if off + 4 + n > len(buf):
        raise DecodeError("repair item", "truncated FEC payload id")
    sbn, esi, sbl = _decode_pid(buf, off + 4, fec_id, fec2_m)
    return RepairItem(fec_id, obj, sbn, esi, sbl, res, fec2_m if fec_id == 2 else 8), off + 4 + n


@dataclass(slots=True)
class RepairRequest:
    """One NACK repair request: form (ITEMS/RANGES/ERASURES), flags, items.

    With form RANGES items come in (start, end) pairs (inclusive).
    """

    form: int
    flags: int
    items: list[RepairItem] = field(default_factory=list)

    def encode(self) -> bytes:
        body = b"".join([i.encode() for i in self.items])
        return _REQ_HEAD.pack(self.form, self.flags, len(body)) + body


def decode_repair_requests(
    buf: bytes, start: int, end: int, fec2_m: int = 8
) -> list[RepairRequest]:
    out: list[RepairRequest] = []
    pos = start
    while pos < end:
        if pos + 4 > end:
            raise DecodeError("repair request", f"{end - pos} trailing octets")
        form, flags, length = _REQ_HEAD.unpack_from(buf, pos)
        pos += 4
        stop = pos + length
        if stop > end:
            raise DecodeError("repair request.length", f"{length} octets overrun the message")
        items: list[RepairItem] = []
        while pos < stop:
            if pos + 4 > stop:
                raise DecodeError("repair item", "truncated item header")
            item, npos = _decode_item(buf, pos, fec2_m)
            if npos > stop:
                raise DecodeError("repair item", "item runs past the request length")
            items.append(item)
            pos = npos
        if form == NACK_RANGES and len(items) % 2:
            raise DecodeError("repair request", "RANGES form with an odd number of items")
        out.append(RepairRequest(form, flags, items))
    return out


def encode_repair_requests(reqs: list[RepairRequest]) -> bytes:
    return b"".join([r.encode() for r in reqs])


# --------------------------------------------------------------------------- receiver messages


@dataclass(slots=True)
class NormNack:
    sequence: int
    source_id: int
    server_id: int
    instance_id: int
    grtt_response_sec: int = 0
    grtt_response_usec: int = 0
    extensions: list[Extension] = field(default_factory=list)
    requests: list[RepairRequest] = field(default_factory=list)
    reserved: int = 0
    msg_type = NORM_NACK

    def encode(self) -> bytes:
        ext = _encode_exts(self.extensions)
        return (
            _FB.pack(
                0x10 | NORM_NACK,
                (24 + len(ext)) >> 2,
                self.sequence,
                self.source_id,
                self.server_id,
                self.instance_id,
                self.reserved,
                self.grtt_response_sec,
                self.grtt_response_usec,
            )
            + ext
            + encode_repair_requests(self.requests)
        )

    def cc(self) -> ExtCC | None:
        return _first_of(self.extensions, ExtCC)


@dataclass(slots=True)
class NormAck:
    """NORM_ACK; for ack_type FLUSH the payload's leading repair-item-shaped watermark is
    decoded into ``watermark`` and any remaining octets stay in ``payload``."""

    sequence: int
    source_id: int
    server_id: int
    instance_id: int
    ack_type: int
    ack_id: int = 0
    grtt_response_sec: int = 0
    grtt_response_usec: int = 0
    extensions: list[Extension] = field(default_factory=list)
    watermark: RepairItem | None = None
    payload: bytes = b""
    msg_type = NORM_ACK

    def encode(self) -> bytes:
        ext = _encode_exts(self.extensions)
        wm = self.watermark.encode() if self.watermark is not None else b""
        return (
            struct.pack(
                ">BBHIIHBBII",
                0x10 | NORM_ACK,
                (24 + len(ext)) >> 2,
                self.sequence,
                self.source_id,
                self.server_id,
                self.instance_id,
                self.ack_type,
                self.ack_id,
                self.grtt_response_sec,
                self.grtt_response_usec,
            )
            + ext
            + wm
            + self.payload
        )

    def cc(self) -> ExtCC | None:
        return _first_of(self.extensions, ExtCC)


@dataclass(slots=True)
class NormReport:
    """NORM_REPORT: format undefined (RFC 5740 §4.4.1); common header kept, rest opaque."""

    sequence: int
    source_id: int
    hdr_len: int = 2  # in 32-bit words, as received
    content: bytes = b""
    msg_type = NORM_REPORT

    def encode(self) -> bytes:
        return (
            _COMMON.pack(0x10 | NORM_REPORT, self.hdr_len, self.sequence, self.source_id)
            + self.content
        )


def _decode_nack(buf: bytes, fec2_m: int) -> NormNack:
    hl = _hdr_len(buf, 24)
    _, _, seq, src, srv, inst, res, gs, gu = _FB.unpack_from(buf, 0)
    exts = _decode_exts(buf, 24, hl)
    reqs = decode_repair_requests(buf, hl, len(buf), fec2_m)
    return NormNack(seq, src, srv, inst, gs, gu, exts, reqs, res)


def _decode_ack(buf: bytes, fec2_m: int) -> NormAck:
    hl = _hdr_len(buf, 24)
    _, _, seq, src, srv, inst, at, aid, gs, gu = struct.unpack_from(">BBHIIHBBII", buf, 0)
    exts = _decode_exts(buf, 24, hl)
    wm: RepairItem | None = None
    pos = hl
    if at == ACK_FLUSH and len(buf) - hl >= 8:
        fec_id = buf[hl]
        if fec_id in SUPPORTED_FEC_IDS and len(buf) - hl >= 4 + payload_id_length(fec_id):
            wm, pos = _decode_item(buf, hl, fec2_m)
    return NormAck(seq, src, srv, inst, at, aid, gs, gu, exts, wm, buf[pos:])


def _decode_report(buf: bytes) -> NormReport:
    _hdr_len(buf, 8)  # checked only: the content starts at octet 8 (hdr_len is kept)
    _, hlw, seq, src = _COMMON.unpack_from(buf, 0)
    return NormReport(seq, src, hlw, buf[8:])


NormMessage = (
    NormInfo
    | NormData
    | NormCmdFlush
    | NormCmdEot
    | NormCmdSquelch
    | NormCmdCC
    | NormCmdRepairAdv
    | NormCmdAckReq
    | NormCmdApplication
    | NormNack
    | NormAck
    | NormReport
)


def decode(buf: bytes | bytearray | memoryview, fec2_m: int = 8) -> NormMessage:
    """Decode one NORM message (one UDP payload).  Raises only :class:`DecodeError`.

    ``fec2_m``: m (8 or 16) for FEC Encoding ID 2 payload ids when no EXT_FTI in the same
    message says otherwise.
    """
    if not isinstance(buf, bytes):
        buf = bytes(buf)
    try:
        if len(buf) < 8:
            raise DecodeError("NORM header", f"{len(buf)} octets, need at least 8")
        t = buf[0] & 0xF
        if buf[0] >> 4 != NORM_VERSION:
            raise DecodeError("version", f"version {buf[0] >> 4}, expected 1")
        if t == NORM_DATA:
            return _decode_data(buf, fec2_m)
        if t == NORM_INFO:
            return _decode_info(buf)
        if t == NORM_CMD:
            return _decode_cmd(buf, fec2_m)
        if t == NORM_NACK:
            return _decode_nack(buf, fec2_m)
        if t == NORM_ACK:
            return _decode_ack(buf, fec2_m)
        if t == NORM_REPORT:
            return _decode_report(buf)
        raise DecodeError("type", f"unknown NORM message type {t}")
    except DecodeError:
        raise
    except (struct.error, IndexError, ValueError) as exc:  # pragma: no cover - safety net
        raise DecodeError("NORM", f"malformed message: {exc}") from None


# --------------------------------------------------------------------------- byte-level helpers


def header_regions(buf: bytes | bytearray | memoryview) -> tuple[int, int]:
    """``(ext_start, ext_end)``: the header-extension area of a NORM message.

    ``ext_start`` = end of the message-specific base header (after the FEC payload id where
    there is one), ``ext_end`` = ``hdr_len * 4`` = start of the payload.  An extension
    inserted at ``ext_end`` must be followed by adding its length/4 to ``buf[1]``
    (``hdr_len``).  Raises :class:`DecodeError` on a malformed header.
    """
    n = len(buf)
    if n < 8:
        raise DecodeError("NORM header", f"{n} octets, need at least 8")
    if buf[0] >> 4 != NORM_VERSION:
        raise DecodeError("version", f"version {buf[0] >> 4}, expected 1")
    t = buf[0] & 0xF
    if t in (NORM_INFO, NORM_REPORT):
        base = 16 if t == NORM_INFO else 8
    elif t == NORM_DATA:
        if n < 16:
            raise DecodeError("NORM_DATA", f"{n} octets < 16")
        base = 16 + payload_id_length(buf[13])
    elif t == NORM_CMD:
        if n < 16:
            raise DecodeError("NORM_CMD", f"{n} octets < 16")
        flavor = buf[12]
        if flavor in (CMD_FLUSH, CMD_SQUELCH):
            base = 16 + payload_id_length(buf[13])
        elif flavor == CMD_CC:
            base = 24
        elif flavor in (CMD_EOT, CMD_REPAIR_ADV, CMD_ACK_REQ, CMD_APPLICATION):
            base = 16
        else:
            raise DecodeError("NORM_CMD.sub-type", f"unknown flavor {flavor}")
    elif t in (NORM_NACK, NORM_ACK):
        base = 24
    else:
        raise DecodeError("type", f"unknown NORM message type {t}")
    return base, _hdr_len(buf, base)


def message_type(buf: bytes) -> int:
    """Fast peek at the NORM message type (0 if too short)."""
    return buf[0] & 0xF if buf else 0
