"""FEC Object Transmission Information (RFC 5052 §6.2), blocking (§9.1), EXT_FTI and FDT codecs."""

from __future__ import annotations

import base64
import binascii
import struct
from collections.abc import Iterator
from dataclasses import dataclass

from alc.errors import DecodeError

SUPPORTED_IDS = (0, 2, 5, 6, 129)

#: RFC 6330 §4.4.1.2: largest transfer length F, and K'max (§5.1.2, Table 2)
RAPTORQ_MAX_F = 946270874880
RAPTORQ_MAX_K = 56403

#: Meaning of the last EXT_FTI field of IDs 2, 5 and 129.
#: ``"max_n"``: RFC 5510 / RFC 5445 "maximum number of encoding symbols" (k + parity).
#: ``"num_parity"``: number of parity symbols -- what NRL NORM writes (and RFC 5740 §4.2.1
#: says for fec_id 129, "fec_num_parity").
LAST_FIELD_MODES = ("max_n", "num_parity")


@dataclass(frozen=True)
class OTI:
    """FEC Object Transmission Information, RFC 5052 §6.2."""

    encoding_id: int  # 0, 2, 5, 6, 129
    transfer_length: int  # bytes (L)
    symbol_length: int  # E, bytes
    max_source_block_length: int  # B, source symbols per block
    max_encoding_symbols: int = 0  # max_n (IDs 2/5/129); 0 = scheme default
    instance_id: int = 0  # FEC Instance ID for IDs 128..255
    m: int = 8  # ID 2: GF(2^m), m = 8 or 16
    symbols_per_packet: int = 1  # G (ID 2)
    # RaptorQ (ID 6): num_source_blocks Z, num_sub_blocks N, alignment Al
    num_source_blocks: int = 0
    num_sub_blocks: int = 1
    alignment: int = 4


class Blocks:
    """Source block lengths of an object without a list: ``t`` source symbols split into
    ``n`` blocks, the first ``t mod n`` of ``ceil(t/n)`` symbols, the others of
    ``floor(t/n)`` (RFC 5052 §9.1, and RFC 6330 §4.4.1.2 Partition[Kt, Z]).

    O(1) memory whatever the announced geometry (a forged OTI may announce 2^24 blocks).
    Indexing, ``len``, iteration and ``==`` with a list behave like the list of lengths.
    """

    __slots__ = ("n", "large", "small", "i_large")

    def __init__(self, t: int, n: int) -> None:
        if t < 0 or n < 0 or (t and not n):
            raise DecodeError("source blocks", f"{t} source symbols in {n} blocks")
        self.n = n if t else 0
        self.large = -(-t // n) if t else 0
        self.small = t // n if t else 0
        self.i_large = t - self.small * n if t else 0

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, sbn: int) -> int:
        if sbn < 0:
            sbn += self.n
        if not 0 <= sbn < self.n:
            raise IndexError(sbn)
        return self.large if sbn < self.i_large else self.small

    def __iter__(self) -> Iterator[int]:
        for sbn in range(self.n):
            yield self.large if sbn < self.i_large else self.small

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Blocks):
            return (self.n, self.large, self.small, self.i_large) == (
                other.n, other.large, other.small, other.i_large)
        if isinstance(other, list):
            return len(other) == self.n and list(self) == other
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def start(self, sbn: int) -> int:
        """Source symbols before block ``sbn`` (its first symbol's index in the object)."""
        if sbn <= self.i_large:
            return sbn * self.large
        return self.i_large * self.large + (sbn - self.i_large) * self.small

    @property
    def total(self) -> int:
        return self.i_large * self.large + (self.n - self.i_large) * self.small

    def max(self) -> int:
        return self.large if self.n else 0

    def distinct(self) -> list[int]:
        """The distinct non-zero block lengths (one or two)."""
        out = [self.large] if self.i_large else []
        if self.small and self.n > self.i_large:
            out.append(self.small)
        return out

    def __repr__(self) -> str:
        return f"Blocks(n={self.n}, {self.i_large}x{self.large} + {self.n - self.i_large}x{self.small})"


def blocks(transfer_length: int, symbol_length: int, max_source_block_length: int) -> Blocks:
    """RFC 5052 §9.1 block partitioning as a :class:`Blocks` (O(1) memory).

    ``transfer_length`` L = 0 gives no block.  Raises DecodeError for E = 0 or B = 0 when
    L > 0 (such values can only come from a malformed OTI).
    """
    if transfer_length < 0:
        raise DecodeError("Transfer-Length", "negative")
    if transfer_length == 0:
        return Blocks(0, 0)
    if symbol_length <= 0:
        raise DecodeError("Encoding-Symbol-Length", "must be > 0")
    if max_source_block_length <= 0:
        raise DecodeError("Maximum-Source-Block-Length", "must be > 0")
    t = -(-transfer_length // symbol_length)
    return Blocks(t, -(-t // max_source_block_length))


def partition(transfer_length: int, symbol_length: int, max_source_block_length: int) -> list[int]:
    """RFC 5052 §9.1 block partitioning: source symbols of each source block (index = SBN).

    ``transfer_length`` L = 0 gives no block.  Raises DecodeError for E = 0 or B = 0 when
    L > 0 (such values can only come from a malformed OTI).  The list has one entry per
    block: for geometry from the wire use :func:`blocks` (O(1) memory).
    """
    return list(blocks(transfer_length, symbol_length, max_source_block_length))


# --------------------------------------------------------------------------- EXT_FTI
def _u48(v: int) -> bytes:
    return v.to_bytes(6, "big")


def _check(field: str, value: int, bits: int) -> None:
    if not 0 <= value < (1 << bits):
        raise ValueError(f"{field}={value} does not fit in {bits} bits")


def encode_fti(oti: OTI, *, last_field: str = "max_n") -> bytes:
    """EXT_FTI body after HET/HEL (padded so that 2 + len is a multiple of 4).

    ``last_field="num_parity"`` writes ``max_n - B`` into the last field of IDs 2, 5, 129
    (NRL NORM / RFC 5740 convention) instead of max_n.
    """
    eid = oti.encoding_id
    last = oti.max_encoding_symbols
    if last_field == "num_parity" and eid in (2, 5, 129):
        last = max(0, last - oti.max_source_block_length)
    elif last_field not in LAST_FIELD_MODES:
        raise ValueError(f"unknown last_field {last_field!r}")
    if eid in (0, 2, 5, 129):
        _check("transfer_length", oti.transfer_length, 48)
    if eid == 0:
        _check("symbol_length", oti.symbol_length, 16)
        _check("max_source_block_length", oti.max_source_block_length, 32)
        return _u48(oti.transfer_length) + struct.pack(
            "!HHI", 0, oti.symbol_length, oti.max_source_block_length
        )
    if eid == 5:
        _check("symbol_length", oti.symbol_length, 16)
        _check("max_source_block_length", oti.max_source_block_length, 8)
        _check("max_encoding_symbols", last, 8)
        return _u48(oti.transfer_length) + struct.pack(
            "!HBB", oti.symbol_length, oti.max_source_block_length, last
        )
    if eid == 2:
        _check("symbol_length", oti.symbol_length, 16)
        _check("max_source_block_length", oti.max_source_block_length, 16)
        _check("max_encoding_symbols", last, 16)
        return _u48(oti.transfer_length) + struct.pack(
            "!BBHHH",
            oti.m,
            oti.symbols_per_packet,
            oti.symbol_length,
            oti.max_source_block_length,
            last,
        )
    if eid == 129:
        _check("instance_id", oti.instance_id, 16)
        _check("symbol_length", oti.symbol_length, 16)
        _check("max_source_block_length", oti.max_source_block_length, 16)
        _check("max_encoding_symbols", last, 16)
        return _u48(oti.transfer_length) + struct.pack(
            "!HHHH", oti.instance_id, oti.symbol_length, oti.max_source_block_length, last
        )
    if eid == 6:
        _check("transfer_length", oti.transfer_length, 40)
        _check("symbol_length", oti.symbol_length, 16)
        _check("num_source_blocks", oti.num_source_blocks, 8)
        _check("num_sub_blocks", oti.num_sub_blocks, 16)
        _check("alignment", oti.alignment, 8)
        return (
            oti.transfer_length.to_bytes(5, "big")
            + struct.pack(
                "!BHBHB",
                0,
                oti.symbol_length,
                oti.num_source_blocks,
                oti.num_sub_blocks,
                oti.alignment,
            )
            + b"\x00\x00"
        )
    raise DecodeError("FEC Encoding ID", f"unsupported FEC Encoding ID {eid}")


_FTI_LEN = {0: 14, 2: 14, 5: 10, 6: 12, 129: 14}


def decode_fti(encoding_id: int, body: bytes, *, last_field: str = "max_n") -> OTI:
    """Decode an EXT_FTI body (the bytes after HET/HEL, padding allowed) into an OTI.

    ``last_field="num_parity"``: the last field of IDs 2, 5, 129 holds the number of parity
    symbols (NRL NORM); the returned OTI then has ``max_encoding_symbols = B + that``.
    """
    if last_field not in LAST_FIELD_MODES:
        raise ValueError(f"unknown last_field {last_field!r}")
    need = _FTI_LEN.get(encoding_id)
    if need is None:
        raise DecodeError("FEC Encoding ID", f"unsupported FEC Encoding ID {encoding_id}")
    body = bytes(body)
    if len(body) < need:
        raise DecodeError(
            "EXT_FTI", f"{len(body)} bytes, FEC Encoding ID {encoding_id} needs {need}"
        )
    if encoding_id == 6:
        f = int.from_bytes(body[0:5], "big")
        _res, t, z, n, al = struct.unpack_from("!BHBHB", body, 5)
        if t == 0:
            raise DecodeError("EXT_FTI.T", "symbol size 0")
        if z == 0 and f:
            raise DecodeError("EXT_FTI.Z", "0 source blocks")
        kt = -(-f // t)
        oti = OTI(
            6,
            f,
            t,
            -(-kt // z) if z else 0,
            num_source_blocks=z,
            num_sub_blocks=n,
            alignment=al,
        )
        validate(oti)
        return oti
    tl = int.from_bytes(body[0:6], "big")
    inst = 0
    m = 8
    g = 1
    if encoding_id == 0:
        _res, e, b = struct.unpack_from("!HHI", body, 6)
        last = 0
    elif encoding_id == 5:
        e, b, last = struct.unpack_from("!HBB", body, 6)
    elif encoding_id == 2:
        m, g, e, b, last = struct.unpack_from("!BBHHH", body, 6)
        m = m or 8  # RFC 5510 §4.2.4.2: 0 = not carried, use the default
        g = g or 1
        if m not in (8, 16):
            raise DecodeError("EXT_FTI.m", f"GF(2^{m}) not supported (8 or 16)")
    else:  # 129
        inst, e, b, last = struct.unpack_from("!HHHH", body, 6)
    if last_field == "num_parity" and encoding_id != 0:
        last = b + last
    oti = OTI(encoding_id, tl, e, b, last, inst, m, g)
    validate(oti)
    return oti


def _num_blocks(oti: OTI) -> int:
    t = -(-oti.transfer_length // oti.symbol_length)
    return -(-t // oti.max_source_block_length)


def _validate_raptorq(oti: OTI) -> None:
    """RFC 6330 §4.3/§4.4.1.2 constraints on (F, T, Z, N, Al).  A receiver takes Z from
    the wire (only a sender may leave it 0 for the defaults); every block holds at least
    one symbol (Z <= Kt) and at most K'max; every sub-symbol at least Al octets."""
    f, t, z = oti.transfer_length, oti.symbol_length, oti.num_source_blocks
    n, al = oti.num_sub_blocks, oti.alignment
    if f > RAPTORQ_MAX_F:
        raise DecodeError("EXT_FTI.F", f"transfer length {f} above the RFC 6330 limit")
    if not 0 < al < 256 or t % al:
        raise DecodeError("EXT_FTI.Al", f"alignment {al} does not divide T={t}")
    if not 0 < n < (1 << 16) or n > t // al:
        raise DecodeError("EXT_FTI.N", f"N={n} sub-blocks outside 1..T/Al={t // al}")
    if not 0 <= z <= 256:
        raise DecodeError("EXT_FTI.Z", f"Z={z} source blocks outside 1..256")
    kt = -(-f // t)
    if z > kt:  # (Z = 0: sender side, "let the scheme choose")
        raise DecodeError("EXT_FTI.Z", f"Z={z} source blocks for Kt={kt} source symbols")
    if z and -(-kt // z) > RAPTORQ_MAX_K:
        raise DecodeError("EXT_FTI.Z", f"source blocks of {-(-kt // z)} symbols exceed K'max")


def validate(oti: OTI) -> None:
    """Raise DecodeError (naming the field) if the OTI values are unusable for its scheme:
    every division and table size of the scheme is safe after this check."""
    if oti.encoding_id not in SUPPORTED_IDS:
        raise DecodeError("FEC Encoding ID", f"unsupported FEC Encoding ID {oti.encoding_id}")
    if not 0 <= oti.transfer_length < (1 << 48):
        raise DecodeError("Transfer-Length", f"{oti.transfer_length} outside 0..2^48-1")
    if not 0 < oti.symbol_length < (1 << 16):
        # 16 bits in every scheme's EXT_FTI (RFC 5445 §3.2, RFC 5510 §4.2.4, RFC 6330 §3.3.3)
        raise DecodeError("Encoding-Symbol-Length", f"{oti.symbol_length} outside 1..65535")
    if oti.encoding_id == 6:
        _validate_raptorq(oti)
        return
    if oti.max_source_block_length <= 0:
        raise DecodeError("Maximum-Source-Block-Length", "must be > 0")
    if oti.encoding_id in (2, 5, 129):
        m = oti.m if oti.encoding_id == 2 else 8
        if oti.encoding_id == 2 and m not in (8, 16):
            raise DecodeError("FEC-OTI.m", f"GF(2^{m}) not supported (8 or 16)")
        if m == 16 and oti.symbol_length % 2:
            raise DecodeError("Encoding-Symbol-Length", "must be a multiple of 2 octets for m=16")
        if oti.encoding_id == 2 and oti.symbols_per_packet < 1:
            raise DecodeError("FEC-OTI.G", "must be >= 1")
        limit = 1 << m  # loose: "nrl"/"rse" matrices allow 2^m points
        if oti.max_source_block_length > limit - 1 and oti.encoding_id != 129:
            raise DecodeError(
                "Maximum-Source-Block-Length", f"B={oti.max_source_block_length} > 2^{m}-1"
            )
        if oti.max_encoding_symbols and oti.max_encoding_symbols < oti.max_source_block_length:
            raise DecodeError("Max-Number-of-Encoding-Symbols", "max_n < B")
        if oti.max_encoding_symbols > limit:
            raise DecodeError("Max-Number-of-Encoding-Symbols", f"max_n > 2^{m}")
        if oti.encoding_id == 129 and oti.instance_id != 0:
            raise DecodeError("FEC Instance ID", f"FEC Instance ID {oti.instance_id} unsupported")
        if oti.encoding_id == 129 and oti.max_source_block_length > 255:
            raise DecodeError("Maximum-Source-Block-Length", "B > 255 for RS GF(2^8)")
        blocks = _num_blocks(oti)
        if blocks > (1 << (32 - m)):
            raise DecodeError("Transfer-Length", "object needs more source blocks than SBN allows")
    if oti.encoding_id == 0:
        blocks = _num_blocks(oti)
        if blocks > (1 << 16):
            raise DecodeError("Transfer-Length", "object needs more than 2^16 source blocks")


# --------------------------------------------------------------------------- FDT
def oti_to_fdt_attributes(oti: OTI) -> dict[str, str]:
    """FLUTE FDT File/FDT-Instance attributes (RFC 6726 §3.4.2, RFC 5510 §4.2.4.2/§5.2.4.2)."""
    a = {
        "Transfer-Length": str(oti.transfer_length),
        "FEC-OTI-FEC-Encoding-ID": str(oti.encoding_id),
        "FEC-OTI-Encoding-Symbol-Length": str(oti.symbol_length),
    }
    eid = oti.encoding_id
    if eid != 6:
        a["FEC-OTI-Maximum-Source-Block-Length"] = str(oti.max_source_block_length)
    if eid in (2, 5, 129) and oti.max_encoding_symbols:
        a["FEC-OTI-Max-Number-of-Encoding-Symbols"] = str(oti.max_encoding_symbols)
    if eid >= 128:
        a["FEC-OTI-FEC-Instance-ID"] = str(oti.instance_id)
    if eid == 2:
        a["FEC-OTI-Scheme-Specific-Info"] = base64.b64encode(
            bytes([oti.m, oti.symbols_per_packet])
        ).decode()
    if eid == 6:
        a["FEC-OTI-Scheme-Specific-Info"] = base64.b64encode(
            struct.pack("!BHB", oti.num_source_blocks, oti.num_sub_blocks, oti.alignment)
        ).decode()
    return a


def _int_attr(attrs: dict[str, str], name: str) -> int | None:
    v = attrs.get(name)
    if v is None:
        return None
    try:
        r = int(v.strip(), 10)
    except (ValueError, AttributeError):
        raise DecodeError(name, f"not an integer: {v!r}") from None
    if r < 0:
        raise DecodeError(name, "negative")
    return r


def oti_from_fdt_attributes(attrs: dict[str, str]) -> OTI | None:
    """OTI from FDT attributes (File attributes already merged over FDT-Instance ones).

    Returns None when the attributes do not carry enough to build an OTI (no transfer
    length, symbol length or block length).  FEC-OTI-FEC-Encoding-ID defaults to 0.
    """
    eid = _int_attr(attrs, "FEC-OTI-FEC-Encoding-ID")
    eid = 0 if eid is None else eid
    if eid not in SUPPORTED_IDS:
        raise DecodeError("FEC-OTI-FEC-Encoding-ID", f"unsupported FEC Encoding ID {eid}")
    tl = _int_attr(attrs, "Transfer-Length")
    if tl is None:
        tl = _int_attr(attrs, "Content-Length")
    e = _int_attr(attrs, "FEC-OTI-Encoding-Symbol-Length")
    b = _int_attr(attrs, "FEC-OTI-Maximum-Source-Block-Length")
    max_n = _int_attr(attrs, "FEC-OTI-Max-Number-of-Encoding-Symbols") or 0
    inst = _int_attr(attrs, "FEC-OTI-FEC-Instance-ID") or 0
    ssi_txt = attrs.get("FEC-OTI-Scheme-Specific-Info")
    ssi = b""
    if ssi_txt is not None:
        try:
            ssi = base64.b64decode(ssi_txt.strip(), validate=True)
        except (binascii.Error, ValueError):
            raise DecodeError("FEC-OTI-Scheme-Specific-Info", "bad base64") from None
    if tl is None or e is None:
        return None
    if eid == 6:
        if len(ssi) < 4:
            raise DecodeError("FEC-OTI-Scheme-Specific-Info", "RaptorQ needs 4 bytes (Z, N, Al)")
        z, n, al = struct.unpack_from("!BHB", ssi, 0)
        body = tl.to_bytes(5, "big") if tl < (1 << 40) else b""
        if not body:
            raise DecodeError("Transfer-Length", "too large for RaptorQ")
        if e >= (1 << 16):
            raise DecodeError("FEC-OTI-Encoding-Symbol-Length", "too large")
        return decode_fti(6, body + struct.pack("!BHBHB", 0, e, z, n, al))
    if b is None:
        return None
    m, g = 8, 1
    if eid == 2 and ssi:
        if len(ssi) < 2:
            raise DecodeError("FEC-OTI-Scheme-Specific-Info", "RS needs 2 bytes (m, G)")
        m = ssi[0] or 8
        g = ssi[1] or 1
    oti = OTI(eid, tl, e, b, max_n, inst, m, g)
    validate(oti)
    return oti
