"""Scapy layers for NORM (RFC 5740 §4): every message type and NORM_CMD flavour.

The wire format is the codec's (:mod:`norm.messages`, whose field names these layers
use); tests/test_scapy_layers.py proves the two agree byte for byte.  Only this module
(with :mod:`alc.scapy_lct` and :mod:`tesla.scapy_auth`) imports scapy.

``NORM(raw)`` dispatches on the message type (and the NORM_CMD flavour) to
:class:`NORMInfo`, :class:`NORMData`, :class:`NORMCmdFlush`, :class:`NORMCmdEot`,
:class:`NORMCmdSquelch`, :class:`NORMCmdCC`, :class:`NORMCmdRepairAdv`,
:class:`NORMCmdAckReq`, :class:`NORMCmdApplication`, :class:`NORMNack`, :class:`NORMAck`
or :class:`NORMReport`.  ``hdr_len`` left None is computed (base header + extensions).

* Header extensions (``ext``): :class:`NORMExtFTI0`/``2``/``5``/``129`` (chosen by the
  message's ``fec_id``), :class:`NORMExtCC`, :class:`NORMExtRate`, :class:`NORMExtAuth`
  (body = payload, dissected by :mod:`tesla.scapy_auth` when imported), and
  :class:`NORMExtGeneric` / :class:`NORMExtFixed` for any other HET.
* FEC payload id fields ``sbn``, ``sbl`` (fec_id 129 only), ``esi`` per RFC 5445/5510;
  for fec_id 2 the layout follows ``m`` of an EXT_FTI in the same message, else
  ``conf.contribs["NORM"]["fec2_m"]`` (default 8), as :func:`norm.messages.decode` does.
* NACK / REPAIR_ADV content: :class:`NORMRepairRequest` (form, flags, length, items) of
  :class:`NORMRepairItem`; ACK(FLUSH) watermark; CC node list of :class:`NORMCCNode`.

Use :func:`bind` to dissect a UDP port as NORM::

    from norm.scapy_norm import NORM, bind
    bind(6003)                      # bind_layers(UDP, NORM, dport=6003) (and sport)
"""

from __future__ import annotations

from typing import Any

from scapy.config import conf
from scapy.fields import (
    BitEnumField,
    BitField,
    ByteEnumField,
    ByteField,
    ConditionalField,
    FieldListField,
    FlagsField,
    IntField,
    MultipleTypeField,
    PacketField,
    PacketListField,
    ShortField,
    ThreeBytesField,
    XStrLenField,
)
from scapy.layers.inet import UDP
from scapy.packet import Packet, bind_layers, split_layers

from alc.scapy_lct import Pad4Field, VarHeaderExtension, ext_body_len
from norm import messages as M

__all__ = [
    "NORM",
    "NORMAck",
    "NORMCCNode",
    "NORMCmdAckReq",
    "NORMCmdApplication",
    "NORMCmdCC",
    "NORMCmdEot",
    "NORMCmdFlush",
    "NORMCmdRepairAdv",
    "NORMCmdSquelch",
    "NORMData",
    "NORMExtAuth",
    "NORMExtCC",
    "NORMExtFTI",
    "NORMExtFTI0",
    "NORMExtFTI2",
    "NORMExtFTI5",
    "NORMExtFTI129",
    "NORMExtFixed",
    "NORMExtGeneric",
    "NORMExtRate",
    "NORMInfo",
    "NORMNack",
    "NORMRepairItem",
    "NORMRepairRequest",
    "NORMReport",
    "bind",
    "unbind",
]

MSG_TYPES = {1: "INFO", 2: "DATA", 3: "CMD", 4: "NACK", 5: "ACK", 6: "REPORT"}
FLAVORS = {
    1: "FLUSH",
    2: "EOT",
    3: "SQUELCH",
    4: "CC",
    5: "REPAIR_ADV",
    6: "ACK_REQ",
    7: "APPLICATION",
}
OBJECT_FLAGS = ["REPAIR", "EXPLICIT", "INFO", "UNRELIABLE", "FILE", "STREAM"]
NACK_FORMS = {1: "ITEMS", 2: "RANGES", 3: "ERASURES"}
NACK_FLAGS = ["SEGMENT", "BLOCK", "INFO", "OBJECT"]
CC_FLAGS = ["CLR", "PLR", "RTT", "START", "LEAVE", "LIMIT"]
ACK_TYPES = {1: "CC", 2: "FLUSH"}

#: ``fec2_m``: m of FEC Encoding ID 2 payload ids when no EXT_FTI in the message says it.
conf.contribs.setdefault("NORM", {"fec2_m": 8})


# --------------------------------------------------------------------------- extensions


class NORMExtGeneric(VarHeaderExtension):
    """Any variable-size NORM header extension (HET 0..127) without a layout here."""

    name = "NORM header extension"
    fields_desc = [
        ByteField("het", 0),
        ByteField("hel", None),
        XStrLenField("body", b"\0\0", length_from=ext_body_len),
    ]

    @classmethod
    def dispatch_hook(cls, _pkt: bytes | None = None, *args: Any, **kargs: Any) -> Any:
        if cls is not NORMExtGeneric or not _pkt:
            return cls
        het = _pkt[0]
        if het == M.EXT_FTI:
            # the typed layout only when the extension has its exact size (as ExtFti.params)
            fec_id = getattr(kargs.get("_parent"), "fec_id", None)
            if not isinstance(fec_id, int) or fec_id not in NORM_FTI:
                return NORMExtFTI
            if len(_pkt) < 2 or _pkt[1] * 4 - 2 != NORM_FTI_BODY_LENGTH[fec_id]:
                return NORMExtFTI
            return NORM_FTI[fec_id]
        found = NORM_EXTENSIONS.get(het)
        if found is not None:
            return found
        return NORMExtFixed if het >= 128 else NORMExtGeneric


class NORMExtFixed(Packet):
    """Any fixed-size NORM header extension (HET 128..255, one word) without a layout here."""

    name = "NORM header extension (fixed)"
    fields_desc = [ByteField("het", 128), XStrLenField("body", b"\0\0\0", length_from=lambda p: 3)]

    def extract_padding(self, s: bytes) -> tuple[bytes, bytes]:
        return b"", s


class NORMExtAuth(VarHeaderExtension):
    """EXT_AUTH (HET 1, RFC 5740 §4.1): HET/HEL; the body is this layer's payload
    (:mod:`tesla.scapy_auth` binds the RFC 5776 layers on it)."""

    name = "NORM EXT_AUTH"
    fields_desc = [ByteField("het", M.EXT_AUTH), ByteField("hel", None)]

    def extract_padding(self, s: bytes) -> tuple[bytes, bytes]:
        n = ext_body_len(self)
        return s[:n], s[n:]


class NORMExtCC(NORMExtGeneric):
    """EXT_CC (HET 3, RFC 5740 §4.2.3.5): codes kept quantized (:mod:`norm.quantize`)."""

    name = "NORM EXT_CC"
    fields_desc = [
        ByteField("het", M.EXT_CC),
        ByteField("hel", None),
        ShortField("cc_sequence", 0),
        FlagsField("cc_flags", 0, 8, CC_FLAGS),
        ByteField("cc_rtt", 0),
        ShortField("cc_loss", 0),
        ShortField("cc_rate", 0),
        ShortField("cc_reserved", 0),
    ]


class NORMExtRate(NORMExtFixed):
    """EXT_RATE (HET 128, RFC 5740 §4.2.3.4): reserved octet, quantized send_rate."""

    name = "NORM EXT_RATE"
    fields_desc = [
        ByteField("het", M.EXT_RATE),
        ByteField("reserved", 0),
        ShortField("send_rate", 0),
    ]


class NORMExtFTI(NORMExtGeneric):
    """EXT_FTI (HET 64) of a message whose fec_id has no layout here."""

    name = "NORM EXT_FTI"
    fields_desc = [
        ByteField("het", M.EXT_FTI),
        ByteField("hel", None),
        XStrLenField("body", b"\0\0", length_from=ext_body_len),
    ]


def _pad(used: int) -> Pad4Field:
    return Pad4Field("padding", length_from=lambda p: ext_body_len(p, used))


class NORMExtFTI0(NORMExtGeneric):
    """EXT_FTI for fec_id 0 (RFC 5445 §3.1.1, RFC 5740 §4.2.1)."""

    name = "NORM EXT_FTI (fec_id 0)"
    fields_desc = [
        ByteField("het", M.EXT_FTI),
        ByteField("hel", None),
        BitField("object_size", 0, 48),
        ShortField("reserved", 0),
        ShortField("segment_size", 0),
        IntField("max_block_len", 0),
        _pad(14),
    ]


class NORMExtFTI2(NORMExtGeneric):
    """EXT_FTI for fec_id 2 (RFC 5510 §4.2.4.2); ``num_parity`` is the last field as sent
    (NRL: parity count; RFC 5510: max_n, see :meth:`norm.messages.ExtFti.params`)."""

    name = "NORM EXT_FTI (fec_id 2)"
    fields_desc = [
        ByteField("het", M.EXT_FTI),
        ByteField("hel", None),
        BitField("object_size", 0, 48),
        ByteField("m", 8),
        ByteField("g", 1),
        ShortField("segment_size", 0),
        ShortField("max_block_len", 0),
        ShortField("num_parity", 0),
        _pad(14),
    ]


class NORMExtFTI5(NORMExtGeneric):
    """EXT_FTI for fec_id 5 (RFC 5510 §5.2.4.2); ``num_parity`` as in :class:`NORMExtFTI2`."""

    name = "NORM EXT_FTI (fec_id 5)"
    fields_desc = [
        ByteField("het", M.EXT_FTI),
        ByteField("hel", None),
        BitField("object_size", 0, 48),
        ShortField("segment_size", 0),
        ByteField("max_block_len", 0),
        ByteField("num_parity", 0),
        _pad(10),
    ]


class NORMExtFTI129(NORMExtGeneric):
    """EXT_FTI for fec_id 129 (RFC 5740 §4.2.1 Figure 7)."""

    name = "NORM EXT_FTI (fec_id 129)"
    fields_desc = [
        ByteField("het", M.EXT_FTI),
        ByteField("hel", None),
        BitField("object_size", 0, 48),
        ShortField("instance_id", 0),
        ShortField("segment_size", 0),
        ShortField("max_block_len", 0),
        ShortField("num_parity", 0),
        _pad(14),
    ]


NORM_FTI: dict[int, Any] = {0: NORMExtFTI0, 2: NORMExtFTI2, 5: NORMExtFTI5, 129: NORMExtFTI129}
#: octets after HET/HEL of each fec_id's EXT_FTI (RFC 5740 §4.2.1: HEL 4, HEL 3 for fec_id 5)
NORM_FTI_BODY_LENGTH = {0: 14, 2: 14, 5: 10, 129: 14}
NORM_EXTENSIONS: dict[int, Any] = {
    M.EXT_AUTH: NORMExtAuth,
    M.EXT_CC: NORMExtCC,
    M.EXT_RATE: NORMExtRate,
}


# --------------------------------------------------------------------------- FEC payload id


def _m(p: Packet) -> int:
    """m of fec_id 2 for this message: a dissected EXT_FTI hint, a built EXT_FTI, the default."""
    hint = p.__dict__.get("_fec2_m")
    if hint is not None:
        return int(hint)
    for e in p.getfieldval("ext") or [] if "ext" in p.fieldtype else []:
        if isinstance(e, NORMExtFTI2):
            return int(e.m or 8)
    return int(conf.contribs["NORM"]["fec2_m"])


def _pid16(p: Packet) -> bool:
    return bool(p.fec_id == 0 or (p.fec_id == 2 and _m(p) == 16))


def _pid_fields() -> list[Any]:
    """sbn, sbl (fec_id 129), esi: RFC 5445 §3.2 / §5.2, RFC 5510 §4.1 / §5.1."""
    return [
        MultipleTypeField(
            [
                (IntField("sbn", 0), lambda p: p.fec_id == 129),
                (ShortField("sbn", 0), _pid16),
            ],
            ThreeBytesField("sbn", 0),
        ),
        ConditionalField(ShortField("sbl", 0), lambda p: p.fec_id == 129),
        MultipleTypeField(
            [(ShortField("esi", 0), lambda p: p.fec_id == 129 or _pid16(p))],
            ByteField("esi", 0),
        ),
    ]


class NORMRepairItem(Packet):
    """One repair item (RFC 5740 §4.3.1): fec_id, reserved, object_transport_id, FEC
    payload id.  fec_id 2 uses ``conf.contribs["NORM"]["fec2_m"]`` (no EXT_FTI in feedback)."""

    name = "NORM repair item"
    fields_desc = [
        ByteField("fec_id", 5),
        ByteField("reserved", 0),
        ShortField("object_id", 0),
        *_pid_fields(),
    ]

    def extract_padding(self, s: bytes) -> tuple[bytes, bytes]:
        return b"", s


class NORMRepairRequest(Packet):
    """One repair request: form (1 ITEMS, 2 RANGES, 3 ERASURES), flags (SEGMENT, BLOCK,
    INFO, OBJECT), length in octets of the items (None: computed), items."""

    name = "NORM repair request"
    fields_desc = [
        ByteEnumField("form", M.NACK_ITEMS, NACK_FORMS),
        FlagsField("flags", 0, 8, NACK_FLAGS),
        ShortField("length", None),
        PacketListField("items", [], NORMRepairItem, length_from=lambda p: p.length or 0),
    ]

    def extract_padding(self, s: bytes) -> tuple[bytes, bytes]:
        return b"", s

    def post_build(self, p: bytes, pay: bytes) -> bytes:
        if self.length is None:
            p = p[:2] + (len(p) - 4).to_bytes(2, "big") + p[4:]
        return p + pay


class NORMCCNode(Packet):
    """One cc_node_list item of NORM_CMD(CC) (RFC 5740 §4.2.3.4): codes quantized."""

    name = "NORM cc_node"
    fields_desc = [
        IntField("node_id", 0),
        FlagsField("flags", 0, 8, CC_FLAGS),
        ByteField("rtt", 0),
        ShortField("rate", 0),
    ]

    def extract_padding(self, s: bytes) -> tuple[bytes, bytes]:
        return b"", s


# --------------------------------------------------------------------------- messages


def _common(msg_type: int) -> list[Any]:
    return [
        BitField("version", M.NORM_VERSION, 4),
        BitEnumField("type", msg_type, 4, MSG_TYPES),
        ByteField("hdr_len", None),
        ShortField("sequence", 0),
        IntField("source_id", 0),
    ]


def _sender() -> list[Any]:
    return [
        ShortField("instance_id", 0),
        ByteField("grtt", 0),
        BitField("backoff", 0, 4),
        BitField("gsize", 0, 4),
    ]


def _exts() -> PacketListField:
    return PacketListField(
        "ext", [], NORMExtGeneric, length_from=lambda p: (p.hdr_len or 0) * 4 - p.base_length()
    )


def _flavor(flavor: int) -> ByteEnumField:
    return ByteEnumField("flavor", flavor, FLAVORS)


class NORM(Packet):
    """A NORM message; ``NORM(raw)`` dissects as the right message class."""

    name = "NORM"
    match_subclass = True  # pkt[NORM] finds any message type
    fields_desc = _common(0)
    BASE = 8

    @classmethod
    def dispatch_hook(cls, _pkt: bytes | None = None, *args: Any, **kargs: Any) -> Any:
        if cls is not NORM or not _pkt or len(_pkt) < 2:
            return cls
        t = _pkt[0] & 0xF
        if t == M.NORM_CMD:
            if len(_pkt) < 13:
                return cls
            return NORM_CMD_CLASSES.get(_pkt[12], cls)
        return NORM_CLASSES.get(t, cls)

    def base_length(self) -> int:
        """Octets of the message-specific base header (before the extensions)."""
        return self.BASE

    def pre_dissect(self, s: bytes) -> bytes:
        # fec_id 2: m comes from an EXT_FTI that follows the payload id (codec rule)
        if "fec_id" in self.fieldtype and len(s) > 13 and s[13] == 2 and s[0] & 0xF != M.NORM_INFO:
            base = 16 + M.payload_id_length(2)
            self._fec2_m = M._fti_m(
                s, base, min(len(s), s[1] << 2), conf.contribs["NORM"]["fec2_m"]
            )
        return s

    def post_build(self, p: bytes, pay: bytes) -> bytes:
        if self.hdr_len is None:
            ext = b"".join(bytes(e) for e in self.ext) if "ext" in self.fieldtype else b""
            p = p[:1] + bytes((((self.base_length() + len(ext)) >> 2) & 0xFF,)) + p[2:]
        return p + pay

    def mysummary(self) -> str:
        return f"{self.name} seq={self.sequence} source_id={self.source_id}"


class NORMInfo(NORM):
    """NORM_INFO (RFC 5740 §4.2.1); payload: the info content."""

    name = "NORM_INFO"
    BASE = 16
    fields_desc = [
        *_common(M.NORM_INFO),
        *_sender(),
        FlagsField("flags", 0, 8, OBJECT_FLAGS),
        ByteField("fec_id", 5),
        ShortField("object_id", 0),
        _exts(),
    ]


class NORMData(NORM):
    """NORM_DATA (RFC 5740 §4.2.1); payload: the segment (stream: with its stream header)."""

    name = "NORM_DATA"
    fields_desc = [
        *_common(M.NORM_DATA),
        *_sender(),
        FlagsField("flags", 0, 8, OBJECT_FLAGS),
        ByteField("fec_id", 5),
        ShortField("object_id", 0),
        *_pid_fields(),
        _exts(),
    ]

    def base_length(self) -> int:
        return 16 + M.payload_id_length(self.fec_id)


class _Cmd(NORM):
    BASE = 16


class NORMCmdFlush(_Cmd):
    """NORM_CMD(FLUSH) (RFC 5740 §4.2.3.1) with its acking_node_list."""

    name = "NORM_CMD(FLUSH)"
    fields_desc = [
        *_common(M.NORM_CMD),
        *_sender(),
        _flavor(M.CMD_FLUSH),
        ByteField("fec_id", 5),
        ShortField("object_id", 0),
        *_pid_fields(),
        _exts(),
        FieldListField("acking_nodes", [], IntField("node_id", 0)),
    ]

    def base_length(self) -> int:
        return 16 + M.payload_id_length(self.fec_id)


class NORMCmdSquelch(_Cmd):
    """NORM_CMD(SQUELCH) (RFC 5740 §4.2.3.3) with its invalid_object_list."""

    name = "NORM_CMD(SQUELCH)"
    fields_desc = [
        *_common(M.NORM_CMD),
        *_sender(),
        _flavor(M.CMD_SQUELCH),
        ByteField("fec_id", 5),
        ShortField("object_id", 0),
        *_pid_fields(),
        _exts(),
        FieldListField("invalid_objects", [], ShortField("object_id", 0)),
    ]

    def base_length(self) -> int:
        return 16 + M.payload_id_length(self.fec_id)


class NORMCmdEot(_Cmd):
    """NORM_CMD(EOT) (RFC 5740 §4.2.3.2)."""

    name = "NORM_CMD(EOT)"
    fields_desc = [
        *_common(M.NORM_CMD),
        *_sender(),
        _flavor(M.CMD_EOT),
        ThreeBytesField("reserved", 0),
        _exts(),
    ]


class NORMCmdCC(_Cmd):
    """NORM_CMD(CC) (RFC 5740 §4.2.3.4) with its cc_node_list."""

    name = "NORM_CMD(CC)"
    BASE = 24
    fields_desc = [
        *_common(M.NORM_CMD),
        *_sender(),
        _flavor(M.CMD_CC),
        ByteField("reserved", 0),
        ShortField("cc_sequence", 0),
        IntField("send_time_sec", 0),
        IntField("send_time_usec", 0),
        _exts(),
        PacketListField("nodes", [], NORMCCNode),
    ]


class NORMCmdRepairAdv(_Cmd):
    """NORM_CMD(REPAIR_ADV) (RFC 5740 §4.2.3.5) with its repair requests."""

    name = "NORM_CMD(REPAIR_ADV)"
    fields_desc = [
        *_common(M.NORM_CMD),
        *_sender(),
        _flavor(M.CMD_REPAIR_ADV),
        ByteField("flags", 0),
        ShortField("reserved", 0),
        _exts(),
        PacketListField("requests", [], NORMRepairRequest),
    ]


class NORMCmdAckReq(_Cmd):
    """NORM_CMD(ACK_REQ) (RFC 5740 §4.2.3.6) with its acking_node_list."""

    name = "NORM_CMD(ACK_REQ)"
    fields_desc = [
        *_common(M.NORM_CMD),
        *_sender(),
        _flavor(M.CMD_ACK_REQ),
        ByteField("reserved", 0),
        ByteEnumField("ack_type", 0, ACK_TYPES),
        ByteField("ack_id", 0),
        _exts(),
        FieldListField("acking_nodes", [], IntField("node_id", 0)),
    ]


class NORMCmdApplication(_Cmd):
    """NORM_CMD(APPLICATION) (RFC 5740 §4.2.3.7); payload: the application content."""

    name = "NORM_CMD(APPLICATION)"
    fields_desc = [
        *_common(M.NORM_CMD),
        *_sender(),
        _flavor(M.CMD_APPLICATION),
        ThreeBytesField("reserved", 0),
        _exts(),
    ]


class NORMNack(NORM):
    """NORM_NACK (RFC 5740 §4.3.1) with its repair requests."""

    name = "NORM_NACK"
    BASE = 24
    fields_desc = [
        *_common(M.NORM_NACK),
        IntField("server_id", 0),
        ShortField("instance_id", 0),
        ShortField("reserved", 0),
        IntField("grtt_response_sec", 0),
        IntField("grtt_response_usec", 0),
        _exts(),
        PacketListField("requests", [], NORMRepairRequest),
    ]


def _has_watermark(p: Packet) -> bool:
    return p.fields.get("watermark") is not None or bool(p.__dict__.get("_watermark", False))


class NORMAck(NORM):
    """NORM_ACK (RFC 5740 §4.3.2); for ack_type FLUSH the watermark repair item (decoded
    when the codec decodes it), then the rest as payload."""

    name = "NORM_ACK"
    BASE = 24
    fields_desc = [
        *_common(M.NORM_ACK),
        IntField("server_id", 0),
        ShortField("instance_id", 0),
        ByteEnumField("ack_type", 0, ACK_TYPES),
        ByteField("ack_id", 0),
        IntField("grtt_response_sec", 0),
        IntField("grtt_response_usec", 0),
        _exts(),
        ConditionalField(PacketField("watermark", None, NORMRepairItem), _has_watermark),
    ]

    def pre_dissect(self, s: bytes) -> bytes:
        hl = s[1] << 2 if len(s) > 1 else 0
        rest = len(s) - hl
        self._watermark = (
            len(s) >= 24
            and s[14] == M.ACK_FLUSH
            and rest >= 8
            and s[hl] in M.SUPPORTED_FEC_IDS
            and rest >= 4 + M.payload_id_length(s[hl])
        )
        return s


class NORMReport(NORM):
    """NORM_REPORT (RFC 5740 §4.4.1, format undefined): the common header, content as
    payload; ``hdr_len`` is kept as received (None: 2)."""

    name = "NORM_REPORT"
    fields_desc = _common(M.NORM_REPORT)

    def post_build(self, p: bytes, pay: bytes) -> bytes:
        if self.hdr_len is None:
            p = p[:1] + b"\x02" + p[2:]
        return p + pay


NORM_CLASSES: dict[int, Any] = {
    M.NORM_INFO: NORMInfo,
    M.NORM_DATA: NORMData,
    M.NORM_NACK: NORMNack,
    M.NORM_ACK: NORMAck,
    M.NORM_REPORT: NORMReport,
}
NORM_CMD_CLASSES: dict[int, Any] = {
    M.CMD_FLUSH: NORMCmdFlush,
    M.CMD_EOT: NORMCmdEot,
    M.CMD_SQUELCH: NORMCmdSquelch,
    M.CMD_CC: NORMCmdCC,
    M.CMD_REPAIR_ADV: NORMCmdRepairAdv,
    M.CMD_ACK_REQ: NORMCmdAckReq,
    M.CMD_APPLICATION: NORMCmdApplication,
}


# --------------------------------------------------------------------------- UDP binding


def bind(port: int) -> None:
    """Dissect UDP datagrams to (or from) ``port`` as NORM: ``bind_layers(UDP, NORM,
    dport=port)`` and ``sport=port`` (NORM feedback goes to the session port too).
    Undo with :func:`unbind`."""
    bind_layers(UDP, NORM, dport=port)
    bind_layers(UDP, NORM, sport=port)


def unbind(port: int) -> None:
    """Undo :func:`bind`."""
    split_layers(UDP, NORM, dport=port)
    split_layers(UDP, NORM, sport=port)
