"""EXT_AUTH (HET = 1) codec for the TESLA messages of RFC 5776 §3.4 and §5.

One container for LCT/ALC and NORM (RFC 5776 §5.1 Figure 9)::

    | HET=1 | HEL | ASID(4) Type(4) | content ... (Type-specific) | [Group MAC] |

HEL counts the whole extension in 32-bit words.  Lengths in octets, with
``kp = n_p/8`` (chain key), ``km = n_m/8`` (TESLA MAC), ``s`` = signature length,
``g = 4`` when the Group MAC is present (checked against RFC 5776 §3.4.1-§3.4.6)::

    Type 0 bootstrap          32 + pad4(kp) + pad4(s) + (A ? 8 : 0) + g
    Type 1/3/4 tag            pad4(8 + kp + km) + g
    Type 2 tag (no key)       pad4(8 + km) + g
    Type 5 sync request       12 + g          (one reserved octet before t_r, see below)
    Type 6 sync response      20 + pad4(s) + g

Choices the RFC leaves open (also listed in docs/TESLA.md):

* ``SYNC_REQUEST_RESERVED_OCTET``: Figure 8 draws the request without the reserved
  octet every other format has, which would leave the extension 11 octets long; we
  put one zero octet after ASID/Type, so ``t_r`` is word aligned.
* ``LEGACY_SYNC_TYPES``: §5.2.3/§5.2.4 say Type 7/8 where §5.1 says 5/6.  We emit 5/6;
  decoding 7/8 only with ``accept_legacy_sync_types=True``.
* Reserved fields and padding octets MUST be zero on the wire; the decoder rejects
  non-zero values so that decode/encode is an exact round trip (and so that no
  octet of an authenticated packet is "don't care").
* When the session has no Group MAC (G = 0) and a tag is exactly 4 octets longer than
  expected, the extra word is parsed as a Group MAC that the receiver ignores
  (RFC 5776 §4.3 step 3: "this tag MUST be ignored").

Decoders raise only :class:`alc.errors.DecodeError`.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from alc.errors import DecodeError

__all__ = [
    "EXT_AUTH",
    "GROUP_MAC_LEN",
    "KEY_LEN",
    "MAC_LEN",
    "TYPE_BOOTSTRAP",
    "TYPE_TAG",
    "TYPE_TAG_NO_KEY",
    "TYPE_TAG_NEW_CHAIN",
    "TYPE_TAG_LAST_KEY",
    "TYPE_SYNC_REQUEST",
    "TYPE_SYNC_RESPONSE",
    "AuthTag",
    "Bootstrap",
    "SyncRequest",
    "SyncResponse",
    "TagLayout",
    "ExtAuthMessage",
    "decode",
    "encode",
    "tag_length",
    "bootstrap_length",
    "sync_request_length",
    "sync_response_length",
    "find_ext_auth",
    "pad4",
]

EXT_AUTH = 1  # HET of EXT_AUTH in LCT (RFC 5651 §5.2.1) and NORM (RFC 5740 §4.1)

TYPE_BOOTSTRAP = 0
TYPE_TAG = 1
TYPE_TAG_NO_KEY = 2
TYPE_TAG_NEW_CHAIN = 3
TYPE_TAG_LAST_KEY = 4
TYPE_SYNC_REQUEST = 5
TYPE_SYNC_RESPONSE = 6
LEGACY_SYNC_TYPES = {7: TYPE_SYNC_REQUEST, 8: TYPE_SYNC_RESPONSE}  # RFC 5776 §5.2.3/§5.2.4 text
SYNC_REQUEST_RESERVED_OCTET = True  # see module doc

# RFC 5776 §2.5 / §7: PRF / MAC function type -> n_p/8 (= n_f/8) and n_m/8.
KEY_LEN = {0: 20, 1: 28, 2: 32, 3: 48, 4: 64}
MAC_LEN = {0: 10, 1: 14, 2: 16, 3: 24, 4: 32}
GROUP_MAC_LEN = 4  # n_w/8 for every registered function

BOOTSTRAP_FIXED = 32
MAX_EXT_LEN = 255 * 4

_HDR = struct.Struct("!BBB")
_NTP = struct.Struct("!Q")


def pad4(n: int) -> int:
    return (n + 3) & ~3


@dataclass(frozen=True, slots=True)
class TagLayout:
    """Session-dependent sizes needed to parse Types 1-6 (they are not self-describing)."""

    key_len: int = 32  # n_p/8
    mac_len: int = 16  # n_m/8
    sig_len: int = 128  # signature length in octets (Type 6)
    group_mac: bool = False  # G flag of the session
    group_mac_len: int = GROUP_MAC_LEN

    @property
    def g(self) -> int:
        return self.group_mac_len if self.group_mac else 0


@dataclass(frozen=True, slots=True)
class Bootstrap:
    """Type 0, Bootstrap Information (RFC 5776 §3.4.1)."""

    asid: int
    d: int
    prf_id: int
    mac_id: int
    group_mac_id: int
    sig_algo: int
    sig_hash: int
    t_int_ms: int
    t0: int  # 64-bit NTP timestamp
    n: int
    i: int
    commitment: bytes
    signature: bytes
    single_chain: bool = False  # S
    d_o_t: int | None = None  # magnitude of D^O_t, 63 bits (A = 1 when not None)
    d_o_t_positive: bool = True  # P
    group_mac: bytes | None = None  # present iff G = 1
    version: int = 0

    @property
    def type(self) -> int:
        return TYPE_BOOTSTRAP

    @property
    def g_flag(self) -> bool:
        return self.group_mac is not None

    @property
    def signature_length(self) -> int:
        return len(self.signature)


@dataclass(frozen=True, slots=True)
class AuthTag:
    """Types 1-4 (RFC 5776 §3.4.3-§3.4.6).  ``key`` is the disclosed key (1), empty (2),
    the next chain's commitment (3) or the last key of the previous chain (4)."""

    type: int
    asid: int
    i: int
    key: bytes
    mac: bytes
    group_mac: bytes | None = None


@dataclass(frozen=True, slots=True)
class SyncRequest:
    """Type 5, Direct Time Synchronization Request (RFC 5776 §4.2.2.1)."""

    asid: int
    t_r: int
    group_mac: bytes | None = None

    @property
    def type(self) -> int:
        return TYPE_SYNC_REQUEST


@dataclass(frozen=True, slots=True)
class SyncResponse:
    """Type 6, Direct Time Synchronization Response (RFC 5776 §3.4.2)."""

    asid: int
    t_s: int
    t_r: int
    signature: bytes
    group_mac: bytes | None = None

    @property
    def type(self) -> int:
        return TYPE_SYNC_RESPONSE


ExtAuthMessage = Bootstrap | AuthTag | SyncRequest | SyncResponse


# ----------------------------------------------------------------------------- lengths


def tag_length(tag_type: int, layout: TagLayout) -> int:
    """EXT_AUTH length in octets of an authentication tag of ``tag_type`` (1-4)."""
    if tag_type == TYPE_TAG_NO_KEY:
        return pad4(8 + layout.mac_len) + layout.g
    return pad4(8 + layout.key_len + layout.mac_len) + layout.g


def bootstrap_length(key_len: int, sig_len: int, a_flag: bool, g: int) -> int:
    return BOOTSTRAP_FIXED + pad4(key_len) + pad4(sig_len) + (8 if a_flag else 0) + g


def sync_request_length(g: int) -> int:
    return 12 + g


def sync_response_length(sig_len: int, g: int) -> int:
    return 20 + pad4(sig_len) + g


def mac_offset(tag_type: int, layout: TagLayout) -> int:
    """Offset of the MAC field from the start of the EXT_AUTH (Types 1-4)."""
    return 8 if tag_type == TYPE_TAG_NO_KEY else 8 + layout.key_len


# ----------------------------------------------------------------------------- encode


def _head(asid: int, typ: int, length: int) -> bytes:
    if not 0 <= asid <= 15:
        raise ValueError(f"ASID {asid} out of range 0..15")
    if length % 4 or length > MAX_EXT_LEN:
        raise ValueError(f"EXT_AUTH length {length} is not a multiple of 4 <= 1020")
    return _HDR.pack(EXT_AUTH, length >> 2, (asid << 4) | typ)


def _padded(b: bytes) -> bytes:
    return bytes(b) + b"\0" * (pad4(len(b)) - len(b))


def _gm(gm: bytes | None, group_mac_len: int = GROUP_MAC_LEN) -> bytes:
    if gm is None:
        return b""
    if len(gm) != group_mac_len:
        raise ValueError(f"Group MAC must be {group_mac_len} octets")
    return bytes(gm)


def encode(msg: ExtAuthMessage) -> bytes:
    """The whole EXT_AUTH extension (HET, HEL, ASID/Type, content, Group MAC)."""
    if isinstance(msg, AuthTag):
        return _encode_tag(msg)
    if isinstance(msg, Bootstrap):
        return _encode_bootstrap(msg)
    if isinstance(msg, SyncRequest):
        gm = _gm(msg.group_mac)
        return _head(msg.asid, TYPE_SYNC_REQUEST, 12 + len(gm)) + b"\0" + _NTP.pack(msg.t_r) + gm
    if isinstance(msg, SyncResponse):
        gm = _gm(msg.group_mac)
        sig = _padded(msg.signature)
        n = 20 + len(sig) + len(gm)
        return (
            _head(msg.asid, TYPE_SYNC_RESPONSE, n)
            + b"\0"
            + struct.pack("!QQ", msg.t_s, msg.t_r)
            + sig
            + gm
        )
    raise TypeError(f"not an EXT_AUTH message: {type(msg).__name__}")


def _encode_tag(t: AuthTag) -> bytes:
    if t.type not in (1, 2, 3, 4):
        raise ValueError(f"tag type {t.type} not in 1..4")
    if t.type == TYPE_TAG_NO_KEY and t.key:
        raise ValueError("Type 2 carries no key")
    gm = _gm(t.group_mac)
    body_len = 8 + len(t.key) + len(t.mac)
    n = pad4(body_len) + len(gm)
    if not 0 <= t.i <= 0xFFFFFFFF:
        raise ValueError("i is a 32-bit unsigned integer")
    return b"".join(
        (
            _head(t.asid, t.type, n),
            b"\0",
            struct.pack("!I", t.i),
            t.key,
            t.mac,
            b"\0" * (pad4(body_len) - body_len),
            gm,
        )
    )


def _encode_bootstrap(b: Bootstrap) -> bytes:
    gm = _gm(b.group_mac)
    a = b.d_o_t is not None
    if b.version > 3:
        raise ValueError("V is 2 bits")
    flags = (b.version << 6) | (4 if b.single_chain else 0) | (2 if gm else 0) | (1 if a else 0)
    n = (
        BOOTSTRAP_FIXED
        + pad4(len(b.commitment))
        + pad4(len(b.signature))
        + (8 if a else 0)
        + len(gm)
    )
    out = [
        _head(b.asid, TYPE_BOOTSTRAP, n),
        struct.pack(
            "!BBBBBBBHHHQII",
            flags,
            b.d,
            b.prf_id,
            b.mac_id,
            b.group_mac_id,
            b.sig_algo,
            b.sig_hash,
            b.signature_length,
            0,
            b.t_int_ms,
            b.t0,
            b.n,
            b.i,
        ),
        _padded(b.commitment),
        _padded(b.signature),
    ]
    if a:
        assert b.d_o_t is not None
        if not 0 <= b.d_o_t < 1 << 63:
            raise ValueError("D^O_t magnitude is 63 bits")
        out.append(_NTP.pack(b.d_o_t | ((1 << 63) if b.d_o_t_positive else 0)))
    out.append(gm)
    return b"".join(out)


# ----------------------------------------------------------------------------- decode


def _zero(buf: memoryview, start: int, end: int, field: str) -> None:
    if any(buf[start:end]):
        raise DecodeError(field, "non-zero padding/reserved octets")


def decode(
    buf: bytes | bytearray | memoryview,
    offset: int = 0,
    layout: TagLayout | None = None,
    *,
    accept_legacy_sync_types: bool = False,
) -> ExtAuthMessage:
    """Decode one EXT_AUTH extension starting at ``buf[offset]`` (its HET octet).

    ``layout`` gives the session sizes needed for Types 1-6 (a bootstrap is
    self-describing).  The extension occupies exactly ``HEL*4`` octets.
    """
    mv = memoryview(buf)
    if offset < 0 or offset + 4 > len(mv):
        raise DecodeError("EXT_AUTH", "truncated header")
    if mv[offset] != EXT_AUTH:
        raise DecodeError("EXT_AUTH.HET", f"HET {mv[offset]} is not EXT_AUTH (1)")
    hel = mv[offset + 1]
    n = hel << 2
    if hel == 0:
        raise DecodeError("EXT_AUTH.HEL", "HEL = 0")
    if offset + n > len(mv):
        raise DecodeError("EXT_AUTH.HEL", f"{n} octets overrun the buffer")
    ext = mv[offset : offset + n]
    asid = ext[2] >> 4
    typ = ext[2] & 15
    if typ in LEGACY_SYNC_TYPES and accept_legacy_sync_types:
        typ = LEGACY_SYNC_TYPES[typ]
    if typ == TYPE_BOOTSTRAP:
        return _decode_bootstrap(ext, asid)
    if layout is None:
        layout = TagLayout()
    if typ in (1, 2, 3, 4):
        return _decode_tag(ext, asid, typ, layout)
    if typ == TYPE_SYNC_REQUEST:
        g = _group_len(n, 12, layout)
        _zero(ext, 3, 4, "EXT_AUTH.Reserved")
        (t_r,) = _NTP.unpack_from(ext, 4)
        return SyncRequest(asid, t_r, bytes(ext[12:]) if g else None)
    if typ == TYPE_SYNC_RESPONSE:
        s = layout.sig_len
        base = 20 + pad4(s)
        g = _group_len(n, base, layout)
        _zero(ext, 3, 4, "EXT_AUTH.Reserved")
        t_s, t_r = struct.unpack_from("!QQ", ext, 4)
        _zero(ext, 20 + s, base, "EXT_AUTH.Signature padding")
        return SyncResponse(
            asid, t_s, t_r, bytes(ext[20 : 20 + s]), bytes(ext[base:]) if g else None
        )
    raise DecodeError("EXT_AUTH.Type", f"unknown TESLA message type {typ}")


def _group_len(n: int, base: int, layout: TagLayout) -> int:
    """Length of the trailing Group MAC given the extension length ``n``."""
    if layout.group_mac:
        if n != base + layout.group_mac_len:
            raise DecodeError(
                "EXT_AUTH.HEL",
                f"length {n} != {base + layout.group_mac_len} expected (Group MAC session)",
            )
        return layout.group_mac_len
    if n == base:
        return 0
    if n == base + GROUP_MAC_LEN:
        return GROUP_MAC_LEN  # Group MAC present in a G=0 session: ignored by the receiver
    raise DecodeError("EXT_AUTH.HEL", f"length {n} != {base} expected")


def _decode_tag(ext: memoryview, asid: int, typ: int, layout: TagLayout) -> AuthTag:
    kp = 0 if typ == TYPE_TAG_NO_KEY else layout.key_len
    km = layout.mac_len
    body = 8 + kp + km
    base = pad4(body)
    g = _group_len(len(ext), base, layout)
    if ext[3]:
        raise DecodeError("EXT_AUTH.Reserved", "non-zero")
    _zero(ext, body, base, "EXT_AUTH.MAC padding")
    (i,) = struct.unpack_from("!I", ext, 4)
    return AuthTag(
        typ,
        asid,
        i,
        bytes(ext[8 : 8 + kp]),
        bytes(ext[8 + kp : body]),
        bytes(ext[base:]) if g else None,
    )


def _decode_bootstrap(ext: memoryview, asid: int) -> Bootstrap:
    n = len(ext)
    if n < BOOTSTRAP_FIXED:
        raise DecodeError("EXT_AUTH.HEL", f"bootstrap of {n} octets < 32")
    (
        flags,
        d,
        prf_id,
        mac_id,
        gmac_id,
        sig_algo,
        sig_hash,
        sig_len,
        reserved,
        t_int,
        t0,
        nn,
        i,
    ) = struct.unpack_from("!BBBBBBBHHHQII", ext, 3)
    version = flags >> 6
    if version != 0:
        raise DecodeError("EXT_AUTH.V", f"version {version} != 0")
    if flags & 0x38:
        raise DecodeError("EXT_AUTH.Reserved", "reserved flag bits set")
    if reserved:
        raise DecodeError("EXT_AUTH.Reserved", "reserved field non-zero")
    s_flag = bool(flags & 4)
    g_flag = bool(flags & 2)
    a_flag = bool(flags & 1)
    if not g_flag and gmac_id:
        raise DecodeError("EXT_AUTH.Group MAC Function Type", "must be 0 when G = 0")
    if g_flag and gmac_id not in MAC_LEN:
        raise DecodeError("EXT_AUTH.Group MAC Function Type", f"unknown type {gmac_id}")
    kp = KEY_LEN.get(prf_id)
    if kp is None:
        raise DecodeError("EXT_AUTH.PRF Type", f"unknown PRF type {prf_id}")
    if mac_id not in MAC_LEN:
        raise DecodeError("EXT_AUTH.MAC Function Type", f"unknown MAC type {mac_id}")
    if d < 2:
        raise DecodeError("EXT_AUTH.d", f"d = {d} < 2")
    if t_int == 0:
        raise DecodeError("EXT_AUTH.T_int", "T_int = 0")
    if sig_len == 0:
        raise DecodeError("EXT_AUTH.Signature Length", "the signature is mandatory")
    g = GROUP_MAC_LEN if g_flag else 0
    expect = bootstrap_length(kp, sig_len, a_flag, g)
    if n != expect:
        raise DecodeError("EXT_AUTH.HEL", f"bootstrap length {n} != {expect} from its fields")
    pos = BOOTSTRAP_FIXED
    commitment = bytes(ext[pos : pos + kp])
    _zero(ext, pos + kp, pos + pad4(kp), "EXT_AUTH.Commitment padding")
    pos += pad4(kp)
    signature = bytes(ext[pos : pos + sig_len])
    _zero(ext, pos + sig_len, pos + pad4(sig_len), "EXT_AUTH.Signature padding")
    pos += pad4(sig_len)
    d_o_t = None
    positive = True
    if a_flag:
        (v,) = _NTP.unpack_from(ext, pos)
        positive = bool(v >> 63)
        d_o_t = v & ((1 << 63) - 1)
        pos += 8
    return Bootstrap(
        asid=asid,
        d=d,
        prf_id=prf_id,
        mac_id=mac_id,
        group_mac_id=gmac_id,
        sig_algo=sig_algo,
        sig_hash=sig_hash,
        t_int_ms=t_int,
        t0=t0,
        n=nn,
        i=i,
        commitment=commitment,
        signature=signature,
        single_chain=s_flag,
        d_o_t=d_o_t,
        d_o_t_positive=positive,
        group_mac=bytes(ext[pos:]) if g_flag else None,
        version=version,
    )


# ----------------------------------------------------------------------------- zeroing


def zeroed_fields(msg: ExtAuthMessage, layout: TagLayout | None = None) -> list[tuple[int, int]]:
    """(offset, length) inside the EXT_AUTH of the fields that are zero during the TESLA
    MAC / signature computation: the MAC (Types 1-4) or the Signature with its padding
    (Types 0, 6), and the Group MAC when present (RFC 5776 §3.3.1, §3.3.2, digest §4.7).
    The Group MAC computation itself zeroes only the last ``GROUP_MAC_LEN`` octets."""
    enc_len = len(encode(msg))
    out: list[tuple[int, int]] = []
    if isinstance(msg, AuthTag):
        off = 8 + len(msg.key)
        out.append((off, len(msg.mac)))
    elif isinstance(msg, Bootstrap):
        off = BOOTSTRAP_FIXED + pad4(len(msg.commitment))
        out.append((off, pad4(len(msg.signature))))
    elif isinstance(msg, SyncResponse):
        out.append((20, pad4(len(msg.signature))))
    if msg.group_mac is not None:
        out.append((enc_len - len(msg.group_mac), len(msg.group_mac)))
    return out


# ----------------------------------------------------------------------------- locate


def find_ext_auth(buf: bytes | bytearray | memoryview, start: int, end: int, asid: int) -> int:
    """Offset of the one TESLA EXT_AUTH with ``asid`` in the header-extension area
    ``buf[start:end]``.  RFC 5776 §5.2: exactly one per packet; EXT_AUTH of other
    ASIDs (other schemes) are skipped.  Raises DecodeError if none or several."""
    from alc.ext import walk_extensions

    found = -1
    for het, pos, n in walk_extensions(buf, start, end):
        if het == EXT_AUTH and n >= 4 and (buf[pos + 2] >> 4) == asid:
            if found >= 0:
                raise DecodeError("EXT_AUTH", "more than one TESLA EXT_AUTH")
            found = pos
    if found < 0:
        raise DecodeError("EXT_AUTH", "no TESLA EXT_AUTH")
    return found
