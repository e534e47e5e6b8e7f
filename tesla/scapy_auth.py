"""Scapy layers for the EXT_AUTH body of RFC 5776 (TESLA in ALC and NORM), Types 0-6.

The layers sit on the EXT_AUTH header extension of :mod:`alc.scapy_lct` (LCT/ALC) and
:mod:`norm.scapy_norm` (NORM): importing this module binds :class:`TeslaAuth` as the
payload of :class:`~alc.scapy_lct.LCTExtAuth` and :class:`~norm.scapy_norm.NORMExtAuth`
(their payload is the extension body after HET/HEL, from the ASID/Type octet on).
The wire format is the codec's (:mod:`tesla.core.extauth`, whose field names these layers
use); tests/test_scapy_layers.py proves the two agree byte for byte.

``TeslaAuth(body)`` dispatches on Type: :class:`TeslaBootstrap` (0), :class:`TeslaAuthTag`
(1-4; Type 2 has no ``key``), :class:`TeslaSyncRequest` (5), :class:`TeslaSyncResponse`
(6); legacy 7/8 (RFC 5776 §5.2.3/§5.2.4 text) as 5/6; other Types :class:`TeslaAuthUnknown`.

Tags and sync responses are not self-describing (RFC 5776 §3.4): key, MAC, signature and
Group MAC lengths come from the session layout ``conf.contribs["RFC5776"]["layout"]``, a
:class:`tesla.core.extauth.TagLayout` (default HMAC-SHA-256: 32-octet keys, 16-octet MACs,
128-octet signatures, no Group MAC; set it with :func:`set_layout`, e.g. from a bootstrap
with :func:`layout_from_bootstrap`).  When the extension length does not fit the layout the
lengths are inferred from it, with the rule of contrib/wireshark/rfc5776.lua: PRF and MAC
functions of the same hash first, SHA-256 first of all, without then with a Group MAC.
A length that fits the layout is read with it even when another set would fit too (a tag
with HMAC-SHA-1 and a Group MAC is as long as one with HMAC-SHA-256 and none): set the
layout of the session you look at.  Type 6 outside the layout: the whole rest is the signature.
Fields left None on build (``sig_len``, flags ``G``/``A``, paddings) are computed.
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
    IntField,
    LongField,
    ShortField,
    XStrField,
    XStrLenField,
)
from scapy.packet import Packet, bind_layers

from alc.scapy_lct import LCTExtAuth, Pad4Field
from norm.scapy_norm import NORMExtAuth
from tesla.core.extauth import (
    GROUP_MAC_LEN,
    KEY_LEN,
    LEGACY_SYNC_TYPES,
    MAC_LEN,
    TYPE_BOOTSTRAP,
    TYPE_SYNC_REQUEST,
    TYPE_SYNC_RESPONSE,
    TYPE_TAG,
    TYPE_TAG_NO_KEY,
    TagLayout,
    pad4,
)

__all__ = [
    "TeslaAuth",
    "TeslaAuthTag",
    "TeslaAuthUnknown",
    "TeslaBootstrap",
    "TeslaSyncRequest",
    "TeslaSyncResponse",
    "get_layout",
    "layout_from_bootstrap",
    "set_layout",
    "tag_sizes",
]

TYPES = {
    0: "Bootstrap",
    1: "Tag",
    2: "Tag without key",
    3: "Tag with new chain commitment",
    4: "Tag with last key of previous chain",
    5: "Sync Request",
    6: "Sync Response",
}
# RFC 5776 §7 registries
FUNCTIONS = {
    0: "HMAC-SHA-1",
    1: "HMAC-SHA-224",
    2: "HMAC-SHA-256",
    3: "HMAC-SHA-384",
    4: "HMAC-SHA-512",
}
SIG_ALGOS = {0: "INVALID", 1: "RSASSA-PKCS1-v1_5", 2: "RSASSA-PSS"}
SIG_HASHES = {0: "INVALID", 1: "SHA-1", 2: "SHA-224", 3: "SHA-256", 4: "SHA-384", 5: "SHA-512"}

conf.contribs.setdefault("RFC5776", {"layout": TagLayout()})

#: order in which functions are tried when the length does not fit the layout (Lua rule)
_INFER_ORDER = (2, 0, 1, 3, 4)


def set_layout(layout: TagLayout) -> None:
    """Session sizes used to dissect Types 1-6 (see module doc)."""
    conf.contribs["RFC5776"]["layout"] = layout


def get_layout() -> TagLayout:
    layout: TagLayout = conf.contribs["RFC5776"]["layout"]
    return layout


def layout_from_bootstrap(b: Packet, sig_len: int | None = None) -> TagLayout:
    """The session layout a dissected (or built) :class:`TeslaBootstrap` announces; the
    signature length of Type 6 responses defaults to the bootstrap's."""
    return TagLayout(
        key_len=KEY_LEN[b.prf_id],
        mac_len=MAC_LEN[b.mac_id],
        sig_len=len(b.signature) if sig_len is None else sig_len,
        group_mac=bool(_flag(b, "G", "group_mac")),
    )


def tag_sizes(
    tag_type: int, ext_len: int, layout: TagLayout | None = None
) -> tuple[int, int, int] | None:
    """(key, MAC, Group MAC) octets of a tag of ``tag_type`` whose EXT_AUTH (HET to the end)
    is ``ext_len`` octets: from ``layout`` when it fits (a G = 0 session also accepts one
    extra Group MAC word, RFC 5776 §4.3 step 3, as :func:`tesla.core.extauth.decode`), else
    inferred from the length; None when nothing fits."""
    lay = layout or get_layout()
    kp = 0 if tag_type == TYPE_TAG_NO_KEY else lay.key_len
    base = pad4(8 + kp + lay.mac_len)
    if ext_len == base + lay.g:
        return kp, lay.mac_len, lay.g
    if not lay.group_mac and ext_len == base + GROUP_MAC_LEN:
        return kp, lay.mac_len, GROUP_MAC_LEN
    for same in (True, False):
        for pi in _INFER_ORDER:
            for mi in _INFER_ORDER:
                if same and pi != mi:
                    continue
                kp = 0 if tag_type == TYPE_TAG_NO_KEY else KEY_LEN[pi]
                for g in (0, GROUP_MAC_LEN):
                    if pad4(8 + kp + MAC_LEN[mi]) + g == ext_len:
                        return kp, MAC_LEN[mi], g
    return None


def _flag(p: Packet, flag: str, value: str) -> bool:
    f = p.getfieldval(flag)
    return bool(f) if f is not None else p.getfieldval(value) is not None


def _sizes(p: Packet) -> Any:
    return p.__dict__.get("_sizes")


class TeslaAuth(Packet):
    """The EXT_AUTH body (after HET/HEL): ASID, Type; ``TeslaAuth(raw)`` dispatches on Type."""

    name = "RFC 5776 EXT_AUTH"
    match_subclass = True  # pkt[TeslaAuth] finds any Type
    fields_desc = [
        BitField("asid", 0, 4),
        BitEnumField("type", 0, 4, TYPES),
        XStrField("body", b""),
    ]

    @classmethod
    def dispatch_hook(cls, _pkt: bytes | None = None, *args: Any, **kargs: Any) -> Any:
        if cls is not TeslaAuth or not _pkt:
            return cls
        t = _pkt[0] & 0xF
        t = LEGACY_SYNC_TYPES.get(t, t)
        if t == TYPE_BOOTSTRAP:
            return TeslaBootstrap
        if TYPE_TAG <= t <= 4:
            return TeslaAuthTag
        if t == TYPE_SYNC_REQUEST:
            return TeslaSyncRequest
        if t == TYPE_SYNC_RESPONSE:
            return TeslaSyncResponse
        return TeslaAuthUnknown


class TeslaAuthUnknown(TeslaAuth):
    """A Type RFC 5776 does not define: ASID, Type, the rest as ``body``."""

    name = "RFC 5776 EXT_AUTH (unknown Type)"


def _pad(name: str, end: Any) -> Pad4Field:
    """Zero padding after a field that ends ``end(p)`` octets (modulo 4) into the extension."""
    return Pad4Field(name, length_from=lambda p: pad4(end(p)) - end(p), lead=2)


def _kp(p: Packet) -> int:
    return KEY_LEN.get(p.prf_id, 0)


class TeslaBootstrap(TeslaAuth):
    """Type 0, Bootstrap Information (RFC 5776 §3.4.1).  ``G`` / ``A`` None: set from the
    presence of ``group_mac`` / ``d_o_t``; ``sig_len`` None: ``len(signature)``; the
    commitment length follows ``prf_id``."""

    name = "RFC 5776 Bootstrap (Type 0)"
    fields_desc = [
        BitField("asid", 0, 4),
        BitEnumField("type", TYPE_BOOTSTRAP, 4, TYPES),
        BitField("version", 0, 2),
        BitField("reserved_flags", 0, 3),
        BitField("S", 0, 1),
        BitField("G", None, 1),
        BitField("A", None, 1),
        ByteField("d", 3),
        ByteEnumField("prf_id", 2, FUNCTIONS),
        ByteEnumField("mac_id", 2, FUNCTIONS),
        ByteEnumField("group_mac_id", 0, FUNCTIONS),
        ByteEnumField("sig_algo", 1, SIG_ALGOS),
        ByteEnumField("sig_hash", 3, SIG_HASHES),
        ShortField("sig_len", None),
        ShortField("reserved", 0),
        ShortField("t_int_ms", 100),
        LongField("t0", 0),
        IntField("n", 0),
        IntField("i", 0),
        XStrLenField("commitment", b"", length_from=_kp),
        _pad("commitment_padding", _kp),
        XStrLenField("signature", b"", length_from=lambda p: p.sig_len or 0),
        _pad("signature_padding", lambda p: p.sig_len or 0),
        ConditionalField(BitField("P", 1, 1), lambda p: _flag(p, "A", "d_o_t")),
        ConditionalField(BitField("d_o_t", None, 63), lambda p: _flag(p, "A", "d_o_t")),
        ConditionalField(
            XStrLenField("group_mac", None, length_from=lambda p: GROUP_MAC_LEN),  # type: ignore[arg-type]
            lambda p: _flag(p, "G", "group_mac"),
        ),
    ]

    def post_build(self, p: bytes, pay: bytes) -> bytes:
        flags = p[1]
        if self.G is None and self.group_mac is not None:
            flags |= 2
        if self.A is None and self.d_o_t is not None:
            flags |= 1
        sig_len = p[8:10] if self.sig_len is not None else len(self.signature).to_bytes(2, "big")
        return p[:1] + bytes((flags,)) + p[2:8] + sig_len + p[10:] + pay


class TeslaAuthTag(TeslaAuth):
    """Types 1-4, Authentication Tags (RFC 5776 §3.4.3-§3.4.6): interval ``i``, ``key``
    (disclosed key K_{i-d} (1), none (2), next chain's commitment (3), last key of the
    previous chain (4)), ``mac``, padding, ``group_mac`` (empty when absent)."""

    name = "RFC 5776 Authentication Tag"
    fields_desc = [
        BitField("asid", 0, 4),
        BitEnumField("type", TYPE_TAG, 4, TYPES),
        ByteField("reserved", 0),
        IntField("i", 0),
        ConditionalField(
            XStrLenField("key", b"", length_from=lambda p: _sizes(p)[0]),
            lambda p: p.type != TYPE_TAG_NO_KEY,
        ),
        XStrLenField("mac", b"", length_from=lambda p: _sizes(p)[1]),
        _pad("padding", lambda p: 8 + _sizes(p)[0] + _sizes(p)[1]),
        XStrLenField("group_mac", b"", length_from=lambda p: _sizes(p)[2]),
    ]

    def pre_dissect(self, s: bytes) -> bytes:
        sizes = tag_sizes(s[0] & 0xF, len(s) + 2) if s else None
        # nothing fits: no key, the whole rest as the MAC (shown, never silently cut)
        self._sizes = sizes or (0, max(0, len(s) - 6), 0)
        return s


class TeslaSyncRequest(TeslaAuth):
    """Type 5, Direct Time Synchronization Request (RFC 5776 §4.2.2.1; one reserved octet
    before t_r, see tesla/core/extauth.py), Group MAC (empty when absent)."""

    name = "RFC 5776 Sync Request (Type 5)"
    fields_desc = [
        BitField("asid", 0, 4),
        BitEnumField("type", TYPE_SYNC_REQUEST, 4, TYPES),
        ByteField("reserved", 0),
        LongField("t_r", 0),
        XStrField("group_mac", b""),
    ]


def _resp_sig_len(p: Packet) -> int:
    return int(_sizes(p)[0])


class TeslaSyncResponse(TeslaAuth):
    """Type 6, Direct Time Synchronization Response (RFC 5776 §3.4.2): t_s, t_r, signature
    (length from the layout, else the rest), padding, Group MAC (empty when absent)."""

    name = "RFC 5776 Sync Response (Type 6)"
    fields_desc = [
        BitField("asid", 0, 4),
        BitEnumField("type", TYPE_SYNC_RESPONSE, 4, TYPES),
        ByteField("reserved", 0),
        LongField("t_s", 0),
        LongField("t_r", 0),
        XStrLenField("signature", b"", length_from=_resp_sig_len),
        _pad("signature_padding", _resp_sig_len),
        XStrLenField("group_mac", b"", length_from=lambda p: _sizes(p)[1]),
    ]

    def pre_dissect(self, s: bytes) -> bytes:
        n = len(s) + 2
        lay = get_layout()
        base = 20 + pad4(lay.sig_len)
        if n == base + lay.g:
            self._sizes = (lay.sig_len, lay.g)
        elif not lay.group_mac and n == base + GROUP_MAC_LEN:
            self._sizes = (lay.sig_len, GROUP_MAC_LEN)
        else:  # Lua rule: the whole rest is the signature
            self._sizes = (max(0, n - 20), 0)
        return s


bind_layers(LCTExtAuth, TeslaAuth)
bind_layers(NORMExtAuth, TeslaAuth)
