"""LCT header codec (RFC 5651 §5.1) with the typed header extensions of LCT, ALC and FLUTE.

Wire layout of the first word (bit 0 = MSB)::

    | V(4) | C(2) | PSI(2) | S | O(2) | H | Res(2) | A | B | HDR_LEN(8) | CP(8) |

followed by CCI (4*(C+1) octets), TSI (32*S+16*H bits), TOI (32*O+16*H bits) and the
header extensions up to ``HDR_LEN*4``.

``LCTHeader.decode(buf)`` returns ``(header, HDR_LEN*4)``; ``header.encode()`` computes
HDR_LEN and reproduces a decoded header byte for byte (reserved bits, PSI bits, CCI,
TSI/TOI widths and every extension octet are kept).  The TSI-presence rule of ALC
(S=0 and H=0 is invalid, RFC 5775 §4.1) is checked by :func:`alc.packet.split`, not
here: plain LCT allows an absent TSI.

Byte-level helpers for the TESLA layer: :func:`header_length`, :func:`ext_region`,
:func:`insert_extension`.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from alc.errors import DecodeError
from alc.ext import HeaderExtension, walk_extensions

if TYPE_CHECKING:  # pragma: no cover
    from alc.fec import OTI

__all__ = [
    "CENC_DEFLATE",
    "CENC_GZIP",
    "CENC_NULL",
    "CENC_ZLIB",
    "EXT_AUTH",
    "EXT_CENC",
    "EXT_FDT",
    "EXT_FTI",
    "EXT_NOP",
    "EXT_TIME",
    "Extension",
    "ExtAuth",
    "ExtCENC",
    "ExtFDT",
    "ExtFTI",
    "ExtNop",
    "ExtTime",
    "LCTHeader",
    "LCT_VERSION",
    "MAX_HEADER_LENGTH",
    "decode_extension",
    "ext_region",
    "header_length",
    "insert_extension",
]

LCT_VERSION = 1
MAX_HEADER_LENGTH = 255 * 4

EXT_NOP = 0
EXT_AUTH = 1
EXT_TIME = 2
EXT_FTI = 64
EXT_FDT = 192
EXT_CENC = 193

CENC_NULL = 0
CENC_ZLIB = 1
CENC_DEFLATE = 2
CENC_GZIP = 3

_U32 = struct.Struct("!I")
_U16 = struct.Struct("!H")
_HDR = struct.Struct("!BBBB")  # HET, HEL, Use(2) for EXT_TIME is done with _TIME
_TIME = struct.Struct("!BBH")


def _check_var_body(het: int, body: bytes) -> None:
    if (len(body) + 2) % 4:
        raise ValueError(f"HET {het}: body length {len(body)} is not 2 mod 4")
    if len(body) + 2 > 255 * 4:
        raise ValueError(f"HET {het}: extension longer than 255 words")


# --------------------------------------------------------------------------- extensions


@dataclass(frozen=True, slots=True)
class ExtNop:
    """EXT_NOP (HET 0): content ignored; ``body`` kept for byte-exact re-encoding."""

    body: bytes = b"\x00\x00"
    het = EXT_NOP

    def encode(self) -> bytes:
        _check_var_body(EXT_NOP, self.body)
        return bytes((EXT_NOP, (len(self.body) + 2) >> 2)) + bytes(self.body)


@dataclass(frozen=True, slots=True)
class ExtAuth:
    """EXT_AUTH (HET 1): opaque ``body`` (everything after HET/HEL); the :mod:`tesla`
    package parses it (RFC 5776 §3)."""

    body: bytes
    het = EXT_AUTH

    def encode(self) -> bytes:
        _check_var_body(EXT_AUTH, self.body)
        return bytes((EXT_AUTH, (len(self.body) + 2) >> 2)) + bytes(self.body)


@dataclass(frozen=True, slots=True)
class ExtTime:
    """EXT_TIME (HET 2, RFC 5651 §5.2.2).

    Each of ``sct_high`` / ``sct_low`` / ``ert`` / ``slc`` is a 32-bit value or None
    (flag clear).  Values appear on the wire in that order.  ``reserved`` are the 4
    LCT-reserved Use bits, ``pi_specific`` the low 8 Use bits, ``extra`` any words
    after the flagged values (receivers ignore them; kept for round trips).
    SCT-Low without SCT-High is invalid (MUST in §5.2.2).
    """

    sct_high: int | None = None
    sct_low: int | None = None
    ert: int | None = None
    slc: int | None = None
    pi_specific: int = 0
    reserved: int = 0
    extra: bytes = b""
    het = EXT_TIME

    @property
    def use(self) -> int:
        return (
            (0x8000 if self.sct_high is not None else 0)
            | (0x4000 if self.sct_low is not None else 0)
            | (0x2000 if self.ert is not None else 0)
            | (0x1000 if self.slc is not None else 0)
            | ((self.reserved & 0xF) << 8)
            | (self.pi_specific & 0xFF)
        )

    @property
    def sct(self) -> float | None:
        """Sender current time as NTP seconds (float), or None."""
        if self.sct_high is None:
            return None
        return self.sct_high + (self.sct_low or 0) / 4294967296.0

    def encode(self) -> bytes:
        if self.sct_low is not None and self.sct_high is None:
            raise ValueError("EXT_TIME: SCT-Low requires SCT-High")
        if not 0 <= self.reserved <= 0xF or not 0 <= self.pi_specific <= 0xFF:
            raise ValueError("EXT_TIME: reserved is 4 bits, pi_specific 8 bits")
        if len(self.extra) % 4:
            raise ValueError("EXT_TIME: extra must be whole words")
        vals = [v for v in (self.sct_high, self.sct_low, self.ert, self.slc) if v is not None]
        hel = 1 + len(vals) + len(self.extra) // 4
        if hel > 255:
            raise ValueError("EXT_TIME: HEL > 255")
        try:
            words = struct.pack(f"!{len(vals)}I", *vals)
        except struct.error as e:
            raise ValueError(f"EXT_TIME: time value out of 32-bit range: {e}") from None
        return _TIME.pack(EXT_TIME, hel, self.use) + words + bytes(self.extra)

    @classmethod
    def from_body(cls, body: bytes) -> ExtTime:
        (use,) = _U16.unpack_from(body, 0)
        pos = 2
        vals: list[int | None] = []
        for mask in (0x8000, 0x4000, 0x2000, 0x1000):
            if use & mask:
                if pos + 4 > len(body):
                    raise DecodeError("EXT_TIME.HEL", "fewer time values than Use flags")
                vals.append(_U32.unpack_from(body, pos)[0])
                pos += 4
            else:
                vals.append(None)
        if vals[1] is not None and vals[0] is None:
            raise DecodeError("EXT_TIME.Use", "SCT-Low set without SCT-High")
        return cls(
            vals[0], vals[1], vals[2], vals[3], use & 0xFF, (use >> 8) & 0xF, bytes(body[pos:])
        )


@dataclass(frozen=True, slots=True)
class ExtFTI:
    """EXT_FTI (HET 64, RFC 5775 §4.2): encoded FEC OTI, layout defined by the FEC scheme.

    ``body`` is everything after HET/HEL (padding included).  The FEC Encoding ID is
    not on the wire: the caller knows it (FLUTE: the Codepoint) and interprets the body
    with :meth:`fti_oti`.
    """

    body: bytes
    het = EXT_FTI

    def encode(self) -> bytes:
        _check_var_body(EXT_FTI, self.body)
        return bytes((EXT_FTI, (len(self.body) + 2) >> 2)) + bytes(self.body)

    def fti_oti(self, encoding_id: int) -> OTI:
        """Interpret the body for FEC Encoding ID ``encoding_id`` (via :mod:`alc.fec`)."""
        from alc.fec import decode_fti

        return decode_fti(encoding_id, bytes(self.body))

    @classmethod
    def from_oti(cls, oti: OTI) -> ExtFTI:
        """Build EXT_FTI for ``oti`` (zero-padded at the end to a word boundary)."""
        from alc.fec import get_scheme

        body = bytes(get_scheme(oti).encode_fti(oti))
        pad = (-(len(body) + 2)) % 4
        return cls(body + b"\x00" * pad)


@dataclass(frozen=True, slots=True)
class ExtFDT:
    """EXT_FDT (HET 192, RFC 6726 §3.4.1): FLUTE version (4 bits) + FDT Instance ID (20 bits).

    Version 2 is RFC 6726, version 1 RFC 3926; other versions are rejected on decode.
    """

    instance_id: int
    version: int = 2
    het = EXT_FDT

    def encode(self) -> bytes:
        if not 0 <= self.version <= 0xF or not 0 <= self.instance_id <= 0xFFFFF:
            raise ValueError("EXT_FDT: version is 4 bits, FDT Instance ID 20 bits")
        return _U32.pack((EXT_FDT << 24) | (self.version << 20) | self.instance_id)


@dataclass(frozen=True, slots=True)
class ExtCENC:
    """EXT_CENC (HET 193, RFC 6726 §3.4.3): content encoding of the FDT Instance.

    ``cenc``: 0 null, 1 ZLIB, 2 DEFLATE, 3 GZIP (other values are kept, the FLUTE
    receiver decides); ``reserved``: the 16 reserved bits as received.
    """

    cenc: int
    reserved: int = 0
    het = EXT_CENC

    NAMES = {CENC_NULL: "null", CENC_ZLIB: "zlib", CENC_DEFLATE: "deflate", CENC_GZIP: "gzip"}

    @property
    def name(self) -> str | None:
        return self.NAMES.get(self.cenc)

    def encode(self) -> bytes:
        if not 0 <= self.cenc <= 0xFF or not 0 <= self.reserved <= 0xFFFF:
            raise ValueError("EXT_CENC: CENC is 8 bits, reserved 16 bits")
        return _U32.pack((EXT_CENC << 24) | (self.cenc << 16) | self.reserved)


Extension = ExtNop | ExtAuth | ExtTime | ExtFTI | ExtFDT | ExtCENC | HeaderExtension


def decode_extension(het: int, body: bytes) -> Extension:
    """Typed extension from HET and body (after HET/HEL; 3 octets for HET >= 128)."""
    if het == EXT_FTI:
        return ExtFTI(body)
    if het == EXT_FDT:
        v = body[0] >> 4
        if v not in (1, 2):
            raise DecodeError("EXT_FDT.V", f"unsupported FLUTE version {v}")
        return ExtFDT(((body[0] & 0xF) << 16) | (body[1] << 8) | body[2], v)
    if het == EXT_AUTH:
        return ExtAuth(body)
    if het == EXT_TIME:
        return ExtTime.from_body(body)
    if het == EXT_CENC:
        return ExtCENC(body[0], (body[1] << 8) | body[2])
    if het == EXT_NOP:
        return ExtNop(body)
    return HeaderExtension(het, body)


# --------------------------------------------------------------------------- header


_VALID_TOI_BITS = {0, 16, 32, 48, 64, 80, 96, 112}


@dataclass(slots=True)
class LCTHeader:
    """LCT default header (RFC 5651 §5.1).

    ``tsi_bits`` (0/16/32/48) and ``toi_bits`` (0..112, step 16) select S, O and H;
    both must agree on H (a 16-bit multiple that is not a 32-bit multiple).
    ``psi`` holds both PSI bits; in ALC bit X (``spi``) is the Source Packet
    Indicator and bit Y is reserved.  ``reserved`` holds the two Res bits.
    """

    tsi: int = 0
    toi: int = 0
    codepoint: int = 0
    tsi_bits: int = 32
    toi_bits: int = 32
    cci: bytes = b"\x00\x00\x00\x00"
    close_session: bool = False
    close_object: bool = False
    psi: int = 0
    reserved: int = 0
    extensions: list[Any] = field(default_factory=list)
    version: int = LCT_VERSION

    # -- derived flags ------------------------------------------------------
    @property
    def spi(self) -> bool:
        return bool(self.psi & 2)

    @spi.setter
    def spi(self, value: bool) -> None:
        self.psi = (self.psi & 1) | (2 if value else 0)

    @property
    def c(self) -> int:
        return (len(self.cci) >> 2) - 1

    @property
    def s(self) -> int:
        return self.tsi_bits >> 5

    @property
    def o(self) -> int:
        return self.toi_bits >> 5

    @property
    def h(self) -> int:
        return (self.tsi_bits >> 4) & 1

    # -- extension helpers ----------------------------------------------------
    def find(self, het: int) -> Any:
        """First extension with this HET, or None."""
        for e in self.extensions:
            if e.het == het:
                return e
        return None

    def find_all(self, het: int) -> list[Any]:
        return [e for e in self.extensions if e.het == het]

    # -- codec ---------------------------------------------------------------
    def encode(self) -> bytes:
        cci = bytes(self.cci)
        tsi_bits, toi_bits = self.tsi_bits, self.toi_bits
        if len(cci) not in (4, 8, 12, 16):
            raise ValueError(f"CCI must be 4, 8, 12 or 16 octets, got {len(cci)}")
        if tsi_bits not in (0, 16, 32, 48):
            raise ValueError(f"tsi_bits must be 0, 16, 32 or 48, got {tsi_bits}")
        if toi_bits not in _VALID_TOI_BITS:
            raise ValueError(f"toi_bits must be 0..112 in steps of 16, got {toi_bits}")
        h = (tsi_bits >> 4) & 1
        if (toi_bits >> 4) & 1 != h:
            raise ValueError(
                f"tsi_bits={tsi_bits} and toi_bits={toi_bits} disagree on the H bit"
            )
        if not 0 <= self.version <= 15 or not 0 <= self.psi <= 3 or not 0 <= self.reserved <= 3:
            raise ValueError("version is 4 bits, psi 2 bits, reserved 2 bits")
        if not 0 <= self.codepoint <= 255:
            raise ValueError(f"codepoint {self.codepoint} out of range 0..255")
        try:
            tsi = self.tsi.to_bytes(tsi_bits >> 3, "big")
            toi = self.toi.to_bytes(toi_bits >> 3, "big")
        except OverflowError:
            raise ValueError(
                f"TSI {self.tsi}/TOI {self.toi} does not fit {tsi_bits}/{toi_bits} bits"
            ) from None
        exts = b"".join([e.encode() for e in self.extensions])
        total = 4 + len(cci) + len(tsi) + len(toi) + len(exts)
        if total > MAX_HEADER_LENGTH:
            raise ValueError(f"LCT header of {total} octets exceeds 1020")
        w = (
            (self.version << 28)
            | (((len(cci) >> 2) - 1) << 26)
            | (self.psi << 24)
            | ((tsi_bits >> 5) << 23)
            | ((toi_bits >> 5) << 21)
            | (h << 20)
            | (self.reserved << 18)
            | (0x20000 if self.close_session else 0)
            | (0x10000 if self.close_object else 0)
            | ((total >> 2) << 8)
            | self.codepoint
        )
        return b"".join((_U32.pack(w), cci, tsi, toi, exts))

    @classmethod
    def decode(cls, buf: bytes | bytearray | memoryview) -> tuple[LCTHeader, int]:
        """Decode the LCT header at the start of ``buf``; returns ``(header, HDR_LEN*4)``."""
        n = len(buf)
        if n < 4:
            raise DecodeError("LCT header", f"datagram of {n} octets is shorter than 4")
        b0 = buf[0]
        if b0 >> 4 != LCT_VERSION:
            raise DecodeError("V", f"LCT version {b0 >> 4} is not 1")
        b1 = buf[1]
        hdr_len = buf[2] << 2
        if hdr_len > n:
            raise DecodeError("HDR_LEN", f"{hdr_len} octets exceed the datagram of {n}")
        ext_start, st, tsi_bits, toi_bits = _LAYOUT[((b0 & 0x0C) << 2) | (b1 >> 4)]
        if ext_start > hdr_len:
            raise DecodeError(
                "HDR_LEN", f"{hdr_len} octets too short for CCI/TSI/TOI ({ext_start})"
            )
        if st is not None:
            _, cci, tsi, toi = st.unpack_from(buf, 0)
        else:
            pos = ext_start - ((tsi_bits + toi_bits) >> 3)
            cci = bytes(buf[4:pos])
            mid = pos + (tsi_bits >> 3)
            tsi = int.from_bytes(buf[pos:mid], "big")
            toi = int.from_bytes(buf[mid:ext_start], "big")
        exts: list[Any] = []
        p = ext_start
        while p < hdr_len:  # same checks as alc.ext.walk_extensions, inlined
            het = buf[p]
            if het >= 128:
                q = p + 4
                if q > hdr_len:
                    raise DecodeError("HEL", f"HET {het} at offset {p} overruns HDR_LEN")
                exts.append(decode_extension(het, bytes(buf[p + 1 : q])))
            else:
                if p + 1 >= hdr_len:
                    raise DecodeError("HEL", f"HET {het} at offset {p}: no room for HEL")
                hel = buf[p + 1]
                if hel == 0:
                    raise DecodeError("HEL", f"HET {het} at offset {p}: HEL = 0")
                q = p + (hel << 2)
                if q > hdr_len:
                    raise DecodeError("HEL", f"HET {het} at offset {p} overruns HDR_LEN")
                exts.append(decode_extension(het, bytes(buf[p + 2 : q])))
            p = q
        hdr = _new(cls)
        hdr.tsi = tsi
        hdr.toi = toi
        hdr.codepoint = buf[3]
        hdr.tsi_bits = tsi_bits
        hdr.toi_bits = toi_bits
        hdr.cci = cci
        hdr.close_session = bool(b1 & 2)
        hdr.close_object = bool(b1 & 1)
        hdr.psi = b0 & 3
        hdr.reserved = (b1 >> 2) & 3
        hdr.extensions = exts
        hdr.version = LCT_VERSION
        return hdr, hdr_len


_new = object.__new__
_INT_FMT = {0: "0s", 2: "H", 4: "I", 8: "Q"}


def _layout(key: int) -> tuple[int, struct.Struct | None, int, int]:
    """Per (C, S, O, H): extension start, one Struct for word0+CCI+TSI+TOI (None when a
    width has no native struct code), TSI and TOI widths in bits."""
    c, s, o, h = key >> 4, (key >> 3) & 1, (key >> 1) & 3, key & 1
    cci_len = (c + 1) * 4
    tsi_len = s * 4 + h * 2
    toi_len = o * 4 + h * 2
    st = None
    if tsi_len in _INT_FMT and toi_len in _INT_FMT and tsi_len and toi_len:
        st = struct.Struct(f"!I{cci_len}s{_INT_FMT[tsi_len]}{_INT_FMT[toi_len]}")
    return 4 + cci_len + tsi_len + toi_len, st, tsi_len * 8, toi_len * 8


_LAYOUT = [_layout(k) for k in range(64)]


# --------------------------------------------------------------------------- byte level


def header_length(buf: bytes | bytearray | memoryview) -> int:
    """HDR_LEN*4 of the LCT header at the start of ``buf`` (checked against ``len(buf)``)."""
    if len(buf) < 4:
        raise DecodeError("LCT header", f"datagram of {len(buf)} octets is shorter than 4")
    n = buf[2] << 2
    if n > len(buf):
        raise DecodeError("HDR_LEN", f"{n} octets exceed the datagram of {len(buf)}")
    return n


def ext_region(buf: bytes | bytearray | memoryview) -> tuple[int, int]:
    """``(start, end)`` byte offsets of the header-extension area (``start == end`` if
    there are none), without decoding the header."""
    if len(buf) < 4:
        raise DecodeError("LCT header", f"datagram of {len(buf)} octets is shorter than 4")
    b0, b1, b2 = buf[0], buf[1], buf[2]
    end = b2 << 2
    if end > len(buf):
        raise DecodeError("HDR_LEN", f"{end} octets exceed the datagram of {len(buf)}")
    h16 = (b1 >> 3) & 2
    start = 4 + (((b0 >> 2) & 3) + 1) * 4 + ((b1 >> 5) & 4) + ((b1 >> 3) & 0xC) + 2 * h16
    if start > end:
        raise DecodeError("HDR_LEN", f"{end} octets too short for CCI/TSI/TOI ({start})")
    return start, end


def insert_extension(
    buf: bytes | bytearray | memoryview, ext: bytes, offset: int | None = None
) -> bytes:
    """Return a copy of the packet ``buf`` with the encoded extension ``ext`` inserted at
    ``offset`` (default: end of the extension area) and HDR_LEN increased accordingly.
    ``offset`` must be the start of an extension or the end of the area."""
    start, end = ext_region(buf)
    if len(ext) % 4 or not ext:
        raise ValueError("an encoded extension is a non-empty multiple of 4 octets")
    if offset is None:
        offset = end
    elif offset != end and offset not in {p for _, p, _ in walk_extensions(buf, start, end)}:
        raise ValueError(f"offset {offset} is not an extension boundary")
    words = buf[2] + len(ext) // 4
    if words > 255:
        raise ValueError("LCT header would exceed 255 words")
    mv = memoryview(buf)
    return b"".join((bytes(mv[:2]), bytes((words,)), bytes(mv[3:offset]), ext, bytes(mv[offset:])))
