"""Scapy layers for LCT/ALC (RFC 5651 §5.1, RFC 5775 §4) and FLUTE's extensions (RFC 6726).

Only this module (with :mod:`norm.scapy_norm` and :mod:`tesla.scapy_auth`) imports scapy;
nothing else in the package does.  The wire format is the codecs' (:mod:`alc.lct`,
:mod:`alc.fec`); tests/test_scapy_layers.py proves the two agree byte for byte.

Layers::

    UDP / LCT / ALCPayloadID<fec> / Raw(encoding symbol)

* :class:`LCT`: every header field under its RFC name (V, C, PSI, S, O, H, Res, A, B,
  HDR_LEN, codepoint, CCI, TSI, TOI) and the header extensions in ``ext``.  ``C`` and
  ``HDR_LEN`` left None are computed on build; ``S``/``O``/``H`` set the TSI/TOI widths.
* Header extensions (``ext``): :class:`LCTExtNop`, :class:`LCTExtAuth` (body = payload,
  dissected by :mod:`tesla.scapy_auth` when imported), :class:`LCTExtTime`, the EXT_FTI of
  each FEC Encoding ID (:class:`LCTExtFTI0`, ``2``, ``5``, ``6``, ``129``; field names those
  of :class:`alc.fec.OTI`), :class:`LCTExtFDT`, :class:`LCTExtCENC`, and
  :class:`LCTExtGeneric` / :class:`LCTExtFixed` for any other HET.  ``hel`` left None is
  computed.
* FEC Payload ID per FEC Encoding ID (RFC 5445, RFC 5510, RFC 6330), chosen by
  ``guess_payload_class`` from the codepoint (FLUTE: codepoint = FEC Encoding ID;
  another mapping can be set in ``conf.contribs["LCT"]["codepoint_fec"]``).  For ID 2 the
  SBN/ESI split follows ``m`` from an EXT_FTI in the same header, else
  ``conf.contribs["LCT"]["fec2_m"]`` (default 8).

Use :func:`bind` to dissect a UDP port as LCT::

    from alc.scapy_lct import LCT, bind
    bind(4000)                      # bind_layers(UDP, LCT, dport=4000)
"""

from __future__ import annotations

from typing import Any

from scapy.config import conf
from scapy.fields import (
    BitField,
    ByteEnumField,
    ByteField,
    ConditionalField,
    Field,
    IntField,
    PacketListField,
    ShortField,
    XStrLenField,
)
from scapy.layers.inet import UDP
from scapy.packet import Packet, Raw, bind_layers, split_layers

from alc.lct import EXT_AUTH, EXT_CENC, EXT_FDT, EXT_FTI, EXT_NOP, EXT_TIME

__all__ = [
    "ALCPayloadID0",
    "ALCPayloadID2",
    "ALCPayloadID2m16",
    "ALCPayloadID5",
    "ALCPayloadID6",
    "ALCPayloadID129",
    "LCT",
    "LCTExtAuth",
    "LCTExtCENC",
    "LCTExtFDT",
    "LCTExtFTI",
    "LCTExtFTI0",
    "LCTExtFTI2",
    "LCTExtFTI5",
    "LCTExtFTI6",
    "LCTExtFTI129",
    "LCTExtFixed",
    "LCTExtGeneric",
    "LCTExtNop",
    "LCTExtTime",
    "Pad4Field",
    "UIntLenField",
    "VarHeaderExtension",
    "bind",
    "ext_body_len",
    "fec_encoding_id",
    "unbind",
]

#: ``codepoint_fec``: codepoint -> FEC Encoding ID (missing: the codepoint itself, as FLUTE
#: senders write it); ``fec2_m``: m of FEC Encoding ID 2 when no EXT_FTI says it.
conf.contribs.setdefault("LCT", {"codepoint_fec": {}, "fec2_m": 8})


# --------------------------------------------------------------------------- shared fields


class UIntLenField(Field[int, bytes]):
    """Unsigned big-endian integer whose width in octets is ``length_from(pkt)`` (TSI, TOI)."""

    __slots__ = ["length_from"]

    def __init__(self, name: str, default: int | None, length_from: Any) -> None:
        self.length_from = length_from
        Field.__init__(self, name, default)

    def addfield(self, pkt: Packet, s: bytes, val: int | None) -> bytes:
        return s + int(val or 0).to_bytes(self.length_from(pkt), "big")

    def getfield(self, pkt: Packet, s: bytes) -> tuple[bytes, int]:
        n = self.length_from(pkt)
        if len(s) < n:
            raise ValueError(f"{self.name}: {len(s)} octets left, need {n}")
        return s[n:], int.from_bytes(s[:n], "big")

    def i2len(self, pkt: Packet, x: Any) -> int:
        return int(self.length_from(pkt))

    def randval(self) -> Any:
        from scapy.volatile import RandNum

        return RandNum(0, 2**48 - 1)


class Pad4Field(XStrLenField):
    """Zero padding to the next 32-bit boundary of the header extension.  ``None`` on build:
    as many zero octets as needed given the ``lead`` octets of the extension before this
    layer (2 for a layer carried as the payload of HET/HEL)."""

    __slots__ = ["lead"]

    def __init__(self, name: str, length_from: Any, lead: int = 0) -> None:
        self.lead = lead
        XStrLenField.__init__(self, name, None, length_from=length_from)  # type: ignore[arg-type]

    def addfield(self, pkt: Packet, s: bytes, val: bytes | None) -> bytes:
        if val is None:
            val = b"\0" * (-(self.lead + len(s)) % 4)
        return s + bytes(val)


def _ext_base_dispatch(table: dict[int, Any], fixed: Any, generic: Any, _pkt: bytes | None) -> Any:
    if not _pkt:
        return generic
    het = _pkt[0]
    cls = table.get(het)
    if cls is not None:
        return cls
    return fixed if het >= 128 else generic


class VarHeaderExtension(Packet):
    """A variable-size header extension: HET, HEL (None: computed), then the fields."""

    def extract_padding(self, s: bytes) -> tuple[bytes, bytes]:
        return b"", s

    def post_build(self, p: bytes, pay: bytes) -> bytes:
        if self.hel is None:
            p = p[:1] + bytes((((len(p) + len(pay)) >> 2) & 0xFF,)) + p[2:]
        return p + pay


def ext_body_len(pkt: Packet, used: int = 0) -> int:
    """Octets of the extension after HET/HEL and ``used`` octets of typed fields."""
    return max(0, (pkt.hel or 0) * 4 - 2 - used)


# --------------------------------------------------------------------------- extensions


class LCTExtGeneric(VarHeaderExtension):
    """Any variable-size extension (HET 0..127) this module has no layout for."""

    name = "LCT header extension"
    fields_desc = [
        ByteField("het", 0),
        ByteField("hel", None),
        XStrLenField("body", b"\0\0", length_from=ext_body_len),
    ]

    @classmethod
    def dispatch_hook(cls, _pkt: bytes | None = None, *args: Any, **kargs: Any) -> Any:
        if cls is not LCTExtGeneric:
            return cls
        if _pkt and _pkt[0] == EXT_FTI:
            return _fti_class(kargs.get("_parent"), _pkt)
        return _ext_base_dispatch(LCT_EXTENSIONS, LCTExtFixed, LCTExtGeneric, _pkt)


class LCTExtFixed(Packet):
    """Any fixed-size extension (HET 128..255, one word) this module has no layout for."""

    name = "LCT header extension (fixed)"
    fields_desc = [ByteField("het", 128), XStrLenField("body", b"\0\0\0", length_from=lambda p: 3)]

    def extract_padding(self, s: bytes) -> tuple[bytes, bytes]:
        return b"", s


class LCTExtNop(LCTExtGeneric):
    """EXT_NOP (HET 0, RFC 5651 §5.2.1)."""

    name = "LCT EXT_NOP"
    fields_desc = [
        ByteField("het", EXT_NOP),
        ByteField("hel", None),
        XStrLenField("body", b"\0\0", length_from=ext_body_len),
    ]


class LCTExtAuth(VarHeaderExtension):
    """EXT_AUTH (HET 1, RFC 5651 §5.2.1): HET/HEL; the body is this layer's payload
    (:mod:`tesla.scapy_auth` binds the RFC 5776 layers on it)."""

    name = "LCT EXT_AUTH"
    fields_desc = [ByteField("het", EXT_AUTH), ByteField("hel", None)]

    def extract_padding(self, s: bytes) -> tuple[bytes, bytes]:
        n = ext_body_len(self)
        return s[:n], s[n:]


def _time_flag(name: str, value: str) -> Any:
    def cond(p: Packet) -> bool:
        f = p.getfieldval(name)
        return bool(f) if f is not None else p.getfieldval(value) is not None

    return cond


_TIME_FLAGS = (
    ("use_sct_high", "sct_high", 0x8000),
    ("use_sct_low", "sct_low", 0x4000),
    ("use_ert", "ert", 0x2000),
    ("use_slc", "slc", 0x1000),
)


class LCTExtTime(LCTExtGeneric):
    """EXT_TIME (HET 2, RFC 5651 §5.2.2).  The Use flags left None follow the presence of
    their value (``sct_high``, ``sct_low``, ``ert``, ``slc``); ``extra``: words after them."""

    name = "LCT EXT_TIME"
    fields_desc = [
        ByteField("het", EXT_TIME),
        ByteField("hel", None),
        BitField("use_sct_high", None, 1),
        BitField("use_sct_low", None, 1),
        BitField("use_ert", None, 1),
        BitField("use_slc", None, 1),
        BitField("reserved", 0, 4),
        ByteField("pi_specific", 0),
        ConditionalField(IntField("sct_high", None), _time_flag("use_sct_high", "sct_high")),
        ConditionalField(IntField("sct_low", None), _time_flag("use_sct_low", "sct_low")),
        ConditionalField(IntField("ert", None), _time_flag("use_ert", "ert")),
        ConditionalField(IntField("slc", None), _time_flag("use_slc", "slc")),
        XStrLenField(
            "extra",
            b"",
            length_from=lambda p: ext_body_len(
                p, 2 + 4 * sum(_time_flag(f, v)(p) for f, v, _ in _TIME_FLAGS)
            ),
        ),
    ]

    def post_build(self, p: bytes, pay: bytes) -> bytes:
        use = int.from_bytes(p[2:4], "big")
        for flag, value, mask in _TIME_FLAGS:
            if self.getfieldval(flag) is None and self.getfieldval(value) is not None:
                use |= mask
        p = p[:2] + use.to_bytes(2, "big") + p[4:]
        return super().post_build(p, pay)


class LCTExtFTI(LCTExtGeneric):
    """EXT_FTI (HET 64, RFC 5775 §4.2) of a FEC Encoding ID this module has no layout for."""

    name = "LCT EXT_FTI"
    fields_desc = [
        ByteField("het", EXT_FTI),
        ByteField("hel", None),
        XStrLenField("body", b"\0\0", length_from=ext_body_len),
    ]


def _fti_pad(used: int) -> Pad4Field:
    return Pad4Field("padding", length_from=lambda p: ext_body_len(p, used))


class LCTExtFTI0(LCTExtGeneric):
    """EXT_FTI for FEC Encoding ID 0 (Compact No-Code, RFC 5445 §3.1.1)."""

    name = "LCT EXT_FTI (FEC Encoding ID 0)"
    fields_desc = [
        ByteField("het", EXT_FTI),
        ByteField("hel", None),
        BitField("transfer_length", 0, 48),
        ShortField("reserved", 0),
        ShortField("symbol_length", 0),
        IntField("max_source_block_length", 0),
        _fti_pad(14),
    ]


class LCTExtFTI2(LCTExtGeneric):
    """EXT_FTI for FEC Encoding ID 2 (Reed-Solomon GF(2^m), RFC 5510 §4.2.4.2)."""

    name = "LCT EXT_FTI (FEC Encoding ID 2)"
    fields_desc = [
        ByteField("het", EXT_FTI),
        ByteField("hel", None),
        BitField("transfer_length", 0, 48),
        ByteField("m", 8),
        ByteField("symbols_per_packet", 1),
        ShortField("symbol_length", 0),
        ShortField("max_source_block_length", 0),
        ShortField("max_encoding_symbols", 0),
        _fti_pad(14),
    ]


class LCTExtFTI5(LCTExtGeneric):
    """EXT_FTI for FEC Encoding ID 5 (Reed-Solomon GF(2^8), RFC 5510 §5.2.4.2)."""

    name = "LCT EXT_FTI (FEC Encoding ID 5)"
    fields_desc = [
        ByteField("het", EXT_FTI),
        ByteField("hel", None),
        BitField("transfer_length", 0, 48),
        ShortField("symbol_length", 0),
        ByteField("max_source_block_length", 0),
        ByteField("max_encoding_symbols", 0),
        _fti_pad(10),
    ]


class LCTExtFTI6(LCTExtGeneric):
    """EXT_FTI for FEC Encoding ID 6 (RaptorQ, RFC 6330 §3.3.2-§3.3.3: F, T, Z, N, Al)."""

    name = "LCT EXT_FTI (FEC Encoding ID 6)"
    fields_desc = [
        ByteField("het", EXT_FTI),
        ByteField("hel", None),
        BitField("transfer_length", 0, 40),
        ByteField("reserved", 0),
        ShortField("symbol_length", 0),
        ByteField("num_source_blocks", 0),
        ShortField("num_sub_blocks", 1),
        ByteField("alignment", 4),
        _fti_pad(12),
    ]


class LCTExtFTI129(LCTExtGeneric):
    """EXT_FTI for FEC Encoding ID 129 (Small Block Systematic, RFC 5445 §5.1.1)."""

    name = "LCT EXT_FTI (FEC Encoding ID 129)"
    fields_desc = [
        ByteField("het", EXT_FTI),
        ByteField("hel", None),
        BitField("transfer_length", 0, 48),
        ShortField("instance_id", 0),
        ShortField("symbol_length", 0),
        ShortField("max_source_block_length", 0),
        ShortField("max_encoding_symbols", 0),
        _fti_pad(14),
    ]


LCT_FTI = {0: LCTExtFTI0, 2: LCTExtFTI2, 5: LCTExtFTI5, 6: LCTExtFTI6, 129: LCTExtFTI129}


class LCTExtFDT(LCTExtFixed):
    """EXT_FDT (HET 192, RFC 6726 §3.4.1): FLUTE version V and FDT Instance ID."""

    name = "LCT EXT_FDT"
    fields_desc = [
        ByteField("het", EXT_FDT),
        BitField("V", 2, 4),
        BitField("fdt_instance_id", 0, 20),
    ]


class LCTExtCENC(LCTExtFixed):
    """EXT_CENC (HET 193, RFC 6726 §3.4.3): content encoding of the FDT Instance."""

    name = "LCT EXT_CENC"
    fields_desc = [
        ByteField("het", EXT_CENC),
        ByteEnumField("CENC", 0, {0: "null", 1: "zlib", 2: "deflate", 3: "gzip"}),
        ShortField("reserved", 0),
    ]


#: HET -> layer (EXT_FTI is chosen per FEC Encoding ID, see :func:`fec_encoding_id`).
LCT_EXTENSIONS: dict[int, Any] = {
    EXT_NOP: LCTExtNop,
    EXT_AUTH: LCTExtAuth,
    EXT_TIME: LCTExtTime,
    EXT_FDT: LCTExtFDT,
    EXT_CENC: LCTExtCENC,
}


def fec_encoding_id(codepoint: int) -> int:
    """FEC Encoding ID of a codepoint (FLUTE, RFC 6726 §5: the codepoint itself unless
    ``conf.contribs["LCT"]["codepoint_fec"]`` maps it)."""
    return int(conf.contribs["LCT"]["codepoint_fec"].get(codepoint, codepoint))


#: octets of each EXT_FTI layout after HET/HEL (before padding), as :func:`alc.fec.decode_fti`
FTI_BODY_LENGTH = {0: 14, 2: 14, 5: 10, 6: 12, 129: 14}


def _fti_class(parent: Any, pkt: bytes) -> Any:
    """The EXT_FTI layer of the FEC Encoding ID of the parent header's codepoint; the
    untyped one when the extension is too short for that layout (as the codec rejects it)."""
    if parent is None or getattr(parent, "codepoint", None) is None:
        return LCTExtFTI
    eid = fec_encoding_id(parent.codepoint)
    if eid not in LCT_FTI or len(pkt) < 2 or pkt[1] * 4 - 2 < FTI_BODY_LENGTH[eid]:
        return LCTExtFTI
    return LCT_FTI[eid]


# --------------------------------------------------------------------------- LCT header


def _fixed_len(p: Packet) -> int:
    c = p.C if p.C is not None else (len(p.CCI or b"") >> 2) - 1
    return 4 + 4 * (c + 1) + 4 * p.S + 4 * p.O + 4 * p.H


class LCT(Packet):
    """LCT default header (RFC 5651 §5.1) as ALC uses it (RFC 5775 §4.1).

    ``C`` and ``HDR_LEN`` None: computed from the CCI length and the header built.
    ``S``, ``O``, ``H`` give the TSI and TOI widths (TSI 32*S+16*H bits, TOI 32*O+16*H).
    ``PSI``: both PSI bits (ALC: X = Source Packet Indicator, Y reserved); ``Res``: the two
    reserved bits; ``A``/``B``: close session / close object.
    """

    name = "LCT"
    fields_desc = [
        BitField("V", 1, 4),
        BitField("C", None, 2),
        BitField("PSI", 0, 2),
        BitField("S", 1, 1),
        BitField("O", 1, 2),
        BitField("H", 0, 1),
        BitField("Res", 0, 2),
        BitField("A", 0, 1),
        BitField("B", 0, 1),
        ByteField("HDR_LEN", None),
        ByteField("codepoint", 0),
        XStrLenField("CCI", b"\0\0\0\0", length_from=lambda p: 4 * ((p.C or 0) + 1)),
        UIntLenField("TSI", 0, length_from=lambda p: 4 * p.S + 2 * p.H),
        UIntLenField("TOI", 0, length_from=lambda p: 4 * p.O + 2 * p.H),
        PacketListField(
            "ext", [], LCTExtGeneric, length_from=lambda p: (p.HDR_LEN or 0) * 4 - _fixed_len(p)
        ),
    ]

    def post_build(self, p: bytes, pay: bytes) -> bytes:
        if self.C is None:
            c = ((len(self.CCI) >> 2) - 1) & 3
            p = bytes((p[0] & 0xF3 | (c << 2),)) + p[1:]
        if self.HDR_LEN is None:
            p = p[:2] + bytes(((len(p) >> 2) & 0xFF,)) + p[3:]
        return p + pay

    def fec_encoding_id(self) -> int:
        return fec_encoding_id(self.codepoint)

    def guess_payload_class(self, payload: bytes) -> Any:
        eid = self.fec_encoding_id()
        if eid == 2:
            m = conf.contribs["LCT"]["fec2_m"]
            for e in self.ext:
                if isinstance(e, LCTExtFTI2):
                    m = e.m or 8
            return ALCPayloadID2m16 if m == 16 else ALCPayloadID2
        return ALC_PAYLOAD_ID.get(eid, Raw)

    def mysummary(self) -> str:
        return self.sprintf("LCT TSI=%LCT.TSI% TOI=%LCT.TOI% cp=%LCT.codepoint%")


# --------------------------------------------------------------------------- FEC Payload ID


class ALCPayloadID0(Packet):
    """FEC Payload ID of FEC Encoding ID 0 (RFC 5445 §3.2): SBN 16, ESI 16; then the symbol."""

    name = "FEC Payload ID (0)"
    fields_desc = [ShortField("SBN", 0), ShortField("ESI", 0)]


class ALCPayloadID2(Packet):
    """FEC Encoding ID 2 with m = 8 (RFC 5510 §4.1): SBN 32-m bits, ESI m bits."""

    name = "FEC Payload ID (2, m=8)"
    fields_desc = [BitField("SBN", 0, 24), BitField("ESI", 0, 8)]


class ALCPayloadID2m16(Packet):
    """FEC Encoding ID 2 with m = 16 (RFC 5510 §4.1): SBN 16 bits, ESI 16 bits."""

    name = "FEC Payload ID (2, m=16)"
    fields_desc = [BitField("SBN", 0, 16), BitField("ESI", 0, 16)]


class ALCPayloadID5(Packet):
    """FEC Encoding ID 5 (RFC 5510 §5.1): SBN 24 bits, ESI 8 bits."""

    name = "FEC Payload ID (5)"
    fields_desc = [BitField("SBN", 0, 24), BitField("ESI", 0, 8)]


class ALCPayloadID6(Packet):
    """FEC Encoding ID 6 (RaptorQ, RFC 6330 §3.2): SBN 8 bits, ESI 24 bits."""

    name = "FEC Payload ID (6)"
    fields_desc = [BitField("SBN", 0, 8), BitField("ESI", 0, 24)]


class ALCPayloadID129(Packet):
    """FEC Encoding ID 129 (RFC 5445 §5.2): SBN 32, Source Block Length 16, ESI 16."""

    name = "FEC Payload ID (129)"
    fields_desc = [IntField("SBN", 0), ShortField("source_block_length", 0), ShortField("ESI", 0)]


ALC_PAYLOAD_ID: dict[int, Any] = {
    0: ALCPayloadID0,
    5: ALCPayloadID5,
    6: ALCPayloadID6,
    129: ALCPayloadID129,
}


# --------------------------------------------------------------------------- UDP binding


def bind(port: int) -> None:
    """Dissect UDP datagrams to (or from) ``port`` as LCT: ``bind_layers(UDP, LCT, dport=port)``
    and ``sport=port``.  Undo with :func:`unbind`."""
    bind_layers(UDP, LCT, dport=port)
    bind_layers(UDP, LCT, sport=port)


def unbind(port: int) -> None:
    """Undo :func:`bind`."""
    split_layers(UDP, LCT, dport=port)
    split_layers(UDP, LCT, sport=port)
