"""LCT header / ALC packet codec: RFC-figure vectors, every extension field, property
tests and the rt-libflute interop capture."""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alc.errors import DecodeError
from alc.ext import HeaderExtension
from alc.lct import (
    EXT_AUTH,
    EXT_FDT,
    EXT_FTI,
    ExtAuth,
    ExtCENC,
    ExtFDT,
    ExtFTI,
    ExtNop,
    ExtTime,
    LCTHeader,
    ext_region,
    header_length,
    insert_extension,
)
from alc.packet import ALCPacket, encode_alc, split

PCAP = Path("/work/shared/interop/flute-plain.pcap")
if not PCAP.exists():  # pragma: no cover - repo-relative fallback
    PCAP = Path(__file__).resolve().parents[2] / "shared/interop/flute-plain.pcap"


def udp_payloads(path: Path, port: int) -> Iterator[bytes]:
    """Tiny pcap reader: Ethernet/IPv4/UDP, yields UDP payloads to ``port``."""
    data = path.read_bytes()
    magic = data[:4]
    endian = "<" if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
    (linktype,) = struct.unpack_from(endian + "I", data, 20)
    assert linktype == 1
    off = 24
    while off + 16 <= len(data):
        _, _, incl, _ = struct.unpack_from(endian + "IIII", data, off)
        off += 16
        frame = data[off : off + incl]
        off += incl
        if struct.unpack_from("!H", frame, 12)[0] != 0x0800:
            continue
        ip = frame[14:]
        if ip[9] != 17:
            continue
        udp = ip[(ip[0] & 0xF) * 4 :]
        _, dport, ulen, _ = struct.unpack_from("!HHHH", udp)
        if dport == port:
            yield bytes(udp[8:ulen])


# ------------------------------------------------------------------ hand vectors
# Built from the RFC 5651 §5.1 figure; EXT_FTI layout of RFC 5445 §3.2.2.

FILE_PKT_HDR = bytes.fromhex(
    "10a00800" "00000000" "00000001" "00000002" "40040000" "00002715" "000003e8" "00000003"
)
FDT_PKT_HDR = bytes.fromhex(
    "10100800" "00000000" "12340000" "c0200005" "40040000" "00000141" "00000578" "00000040"
)


def test_file_packet_vector() -> None:
    pkt = FILE_PKT_HDR + b"\x00\x00\x00\x00" + b"\xab" * 1000
    h, n = split(pkt)
    assert n == 32
    assert (h.version, h.c, h.psi, h.s, h.o, h.h) == (1, 0, 0, 1, 1, 0)
    assert (h.tsi, h.toi, h.tsi_bits, h.toi_bits, h.codepoint) == (1, 2, 32, 32, 0)
    assert not h.close_session and not h.close_object and h.reserved == 0
    assert h.cci == b"\x00" * 4
    assert h.extensions == [ExtFTI(bytes.fromhex("000000002715000003e800000003"))]
    assert h.encode() == FILE_PKT_HDR
    p = ALCPacket.decode(pkt, 4)
    assert p.payload_id == b"\x00" * 4 and p.payload == b"\xab" * 1000
    assert p.encode() == pkt
    assert encode_alc(h, p.payload_id, p.payload) == pkt


def test_fdt_packet_vector() -> None:
    h, n = LCTHeader.decode(FDT_PKT_HDR)
    assert n == 32
    assert (h.s, h.o, h.h, h.tsi_bits, h.toi_bits) == (0, 0, 1, 16, 16)
    assert (h.tsi, h.toi) == (0x1234, 0)
    assert h.extensions[0] == ExtFDT(instance_id=5, version=2)
    assert h.find(EXT_FDT) == ExtFDT(5, 2)
    assert h.find(EXT_FTI).body == bytes.fromhex("000000000141000005780000" "0040")
    assert h.find(EXT_AUTH) is None
    assert h.encode() == FDT_PKT_HDR


def test_build_from_fields_matches_vector() -> None:
    h = LCTHeader(
        tsi=0x1234,
        toi=0,
        tsi_bits=16,
        toi_bits=16,
        extensions=[ExtFDT(5), ExtFTI(bytes.fromhex("0000000001410000057800000040"))],
    )
    assert h.encode() == FDT_PKT_HDR


def test_first_word_bits() -> None:
    # V=1 C=3 PSI=3 S=1 O=3 H=1 Res=3 A=1 B=1 HDR_LEN CP=0xEE
    h = LCTHeader(
        tsi=0xFFFFFFFFFFFF,
        toi=(1 << 112) - 1,
        tsi_bits=48,
        toi_bits=112,
        cci=bytes(range(16)),
        close_session=True,
        close_object=True,
        psi=3,
        reserved=3,
        codepoint=0xEE,
    )
    wire = h.encode()
    assert len(wire) == 4 + 16 + 6 + 14
    assert wire[:4] == bytes((0x1F, 0xFF, len(wire) // 4, 0xEE))
    assert LCTHeader.decode(wire) == (h, len(wire))
    assert h.spi and h.c == 3 and (h.s, h.o, h.h) == (1, 3, 1)


def test_spi_bit() -> None:
    h = LCTHeader(tsi=1)
    h.spi = True
    assert h.psi == 2 and h.encode()[0] == 0x12
    h.psi = 1
    assert not h.spi
    h.spi = True
    assert h.psi == 3


@pytest.mark.parametrize("c,n", [(0, 4), (1, 8), (2, 12), (3, 16)])
def test_cci_lengths(c: int, n: int) -> None:
    h = LCTHeader(tsi=7, toi=9, cci=bytes(range(n)))
    wire = h.encode()
    assert (wire[0] >> 2) & 3 == c
    assert LCTHeader.decode(wire)[0].cci == bytes(range(n))


@pytest.mark.parametrize(
    "tsi_bits,toi_bits,flags",
    [
        (0, 0, (0, 0, 0)),
        (32, 0, (1, 0, 0)),
        (0, 32, (0, 1, 0)),
        (32, 64, (1, 2, 0)),
        (32, 96, (1, 3, 0)),
        (16, 16, (0, 0, 1)),
        (16, 48, (0, 1, 1)),
        (48, 80, (1, 2, 1)),
        (48, 112, (1, 3, 1)),
    ],
)
def test_tsi_toi_widths(tsi_bits: int, toi_bits: int, flags: tuple[int, int, int]) -> None:
    h = LCTHeader(tsi=(1 << tsi_bits) - 1, toi=(1 << toi_bits) - 1, tsi_bits=tsi_bits, toi_bits=toi_bits)
    wire = h.encode()
    assert ((wire[1] >> 7) & 1, (wire[1] >> 5) & 3, (wire[1] >> 4) & 1) == flags
    assert len(wire) == 8 + (tsi_bits + toi_bits) // 8
    assert LCTHeader.decode(wire)[0] == h


# ------------------------------------------------------------------ extensions


def test_ext_time_vector_all_fields() -> None:
    # Use = SCT-High|SCT-Low|ERT|SLC, LCT-reserved 0x5, PI 0x7A; HEL = 5
    body = bytes.fromhex("f57a" "e8000001" "80000000" "0000003c" "e7ffffff")
    wire = bytes.fromhex("0205") + body
    h = LCTHeader(tsi=1, toi=1, extensions=[ExtTime.from_body(body)])
    e = h.extensions[0]
    assert (e.sct_high, e.sct_low, e.ert, e.slc) == (0xE8000001, 0x80000000, 60, 0xE7FFFFFF)
    assert (e.reserved, e.pi_specific, e.extra, e.use) == (5, 0x7A, b"", 0xF57A)
    assert e.sct == 0xE8000001 + 0.5
    assert e.encode() == wire


def test_ext_time_digest_example() -> None:
    e = ExtTime(sct_high=0xE1234567, sct_low=0x01020304)
    assert e.encode() == bytes.fromhex("0203c000" "e1234567" "01020304")


@pytest.mark.parametrize(
    "kw,use",
    [
        ({"sct_high": 1}, 0x8000),
        ({"ert": 2}, 0x2000),
        ({"slc": 3}, 0x1000),
        ({"ert": 2, "slc": 3}, 0x3000),
    ],
)
def test_ext_time_single_flags(kw: dict[str, Any], use: int) -> None:
    e = ExtTime(**kw)
    wire = e.encode()
    assert wire[1] == 1 + len(kw) and struct.unpack_from("!H", wire, 2)[0] == use
    h = LCTHeader(tsi=1, extensions=[e])
    assert LCTHeader.decode(h.encode())[0].extensions == [e]


def test_ext_time_extra_words_kept() -> None:
    wire = bytes.fromhex("0203" "2000" "0000000a" "deadbeef")
    hdr = LCTHeader(tsi=1).encode()
    buf = bytearray(hdr + wire)
    buf[2] += 3
    h, _ = LCTHeader.decode(bytes(buf))
    assert h.extensions == [ExtTime(ert=10, extra=bytes.fromhex("deadbeef"))]
    assert h.encode() == bytes(buf)
    assert h.extensions[0].sct is None


@pytest.mark.parametrize(
    "ext",
    [
        "0202c000" "00000001",  # two flags, one value
        "02014000",  # SCT-Low without SCT-High
    ],
)
def test_ext_time_malformed(ext: str) -> None:
    buf = bytearray(LCTHeader(tsi=1).encode() + bytes.fromhex(ext))
    buf[2] += len(bytes.fromhex(ext)) // 4
    with pytest.raises(DecodeError):
        LCTHeader.decode(bytes(buf))


def test_ext_time_encode_rejects() -> None:
    for e in (ExtTime(sct_low=1), ExtTime(ert=1 << 32), ExtTime(reserved=16), ExtTime(extra=b"x")):
        with pytest.raises(ValueError):
            e.encode()


def test_ext_fdt_all_fields() -> None:
    assert ExtFDT(0xFFFFF, 2).encode() == bytes.fromhex("c02fffff")
    assert ExtFDT(0x12345, 1).encode() == bytes.fromhex("c0112345")
    for v in (1, 2):
        h = LCTHeader(tsi=1, toi=0, extensions=[ExtFDT(0xABCDE, v)])
        assert LCTHeader.decode(h.encode())[0].extensions == [ExtFDT(0xABCDE, v)]
    for bad in (ExtFDT(1 << 20), ExtFDT(0, 16)):
        with pytest.raises(ValueError):
            bad.encode()


@pytest.mark.parametrize("v", [0, 3, 15])
def test_ext_fdt_unknown_version_rejected(v: int) -> None:
    h = LCTHeader(tsi=1, toi=0, extensions=[HeaderExtension(192, bytes((v << 4, 0, 1)))])
    with pytest.raises(DecodeError) as ei:
        LCTHeader.decode(h.encode())
    assert ei.value.field == "EXT_FDT.V"


def test_ext_cenc_all_fields() -> None:
    names = {0: "null", 1: "zlib", 2: "deflate", 3: "gzip", 9: None}
    for cenc, name in names.items():
        e = ExtCENC(cenc, 0xBEEF)
        assert e.encode() == bytes((193, cenc, 0xBE, 0xEF))
        assert e.name == name
        h = LCTHeader(tsi=1, toi=0, extensions=[e])
        assert LCTHeader.decode(h.encode())[0].extensions == [e]
    with pytest.raises(ValueError):
        ExtCENC(256).encode()


def test_ext_nop_auth_fti_unknown() -> None:
    exts = [
        ExtNop(),
        ExtNop(b"\x01\x02\x03\x04\x05\x06"),
        ExtAuth(bytes(range(34))),
        ExtFTI(bytes(14)),
        HeaderExtension(99, b"\x09\x08"),
        HeaderExtension(250, b"\x01\x02\x03"),
    ]
    h = LCTHeader(tsi=5, toi=6, extensions=exts)
    wire = h.encode()
    d, n = LCTHeader.decode(wire)
    assert n == len(wire) and d.extensions == exts
    assert [e.het for e in d.extensions] == [0, 0, 1, 64, 99, 250]
    assert d.find_all(0) == exts[:2]
    assert wire[16:20] == bytes.fromhex("00010000")
    for bad in (ExtNop(b""), ExtAuth(b"\x00"), ExtFTI(b"\x00" * 3)):
        with pytest.raises(ValueError):
            bad.encode()


def test_fti_oti_lazy_fec() -> None:
    fec = pytest.importorskip("alc.fec")
    if not hasattr(fec, "decode_fti"):
        pytest.skip("alc.fec not ready")
    oti = ExtFTI(bytes.fromhex("000000002715000003e800000003")).fti_oti(0)
    assert (oti.transfer_length, oti.symbol_length, oti.max_source_block_length) == (10005, 1000, 3)
    assert ExtFTI.from_oti(oti).encode() == FILE_PKT_HDR[16:32]


# ------------------------------------------------------------------ validation


@pytest.mark.parametrize(
    "hexbuf,field",
    [
        ("", "LCT header"),
        ("100008", "LCT header"),
        ("20a00800" + "00" * 28, "V"),
        ("00a00800" + "00" * 28, "V"),
        ("10a00900" + "00" * 28, "HDR_LEN"),  # 36 octets claimed, 32 present
        ("10a00300" + "00" * 8, "HDR_LEN"),  # 12 < 16 fixed part
        ("1ca00400" + "00" * 12, "HDR_LEN"),  # C=3: 4+16+8 > 16
        ("10a00500" + "00" * 12 + "00000000", "HEL"),  # HEL = 0
        ("10a00500" + "00" * 12 + "00020000", "HEL"),  # overrun
    ],
)
def test_reject(hexbuf: str, field: str) -> None:
    buf = bytes.fromhex(hexbuf)
    with pytest.raises(DecodeError) as ei:
        LCTHeader.decode(buf)
    assert ei.value.field == field


def test_alc_requires_tsi() -> None:
    wire = LCTHeader(tsi_bits=0, toi_bits=32, toi=3).encode()
    assert LCTHeader.decode(wire)[0].tsi_bits == 0  # legal LCT
    with pytest.raises(DecodeError) as ei:
        split(wire)
    assert ei.value.field == "S"
    with pytest.raises(ValueError):
        encode_alc(LCTHeader(tsi_bits=0), b"", b"")


def test_encode_rejects() -> None:
    bad = [
        LCTHeader(cci=b"\x00" * 5),
        LCTHeader(tsi_bits=24),
        LCTHeader(toi_bits=8),
        LCTHeader(tsi_bits=16, toi_bits=32),  # H disagreement
        LCTHeader(tsi_bits=32, toi_bits=48),
        LCTHeader(tsi=1 << 32),
        LCTHeader(toi=-1),
        LCTHeader(codepoint=256),
        LCTHeader(psi=4),
        LCTHeader(reserved=4),
        LCTHeader(version=16),
        LCTHeader(extensions=[ExtAuth(b"\x00" * (255 * 4 - 2))]),  # > 1020 total
    ]
    for h in bad:
        with pytest.raises(ValueError):
            h.encode()


def test_close_session_packet_no_payload() -> None:
    h = LCTHeader(tsi=9, toi_bits=0, tsi_bits=32, close_session=True)
    wire = encode_alc(h)
    assert wire == bytes.fromhex("10820300" "00000000" "00000009")
    p = ALCPacket.decode(wire, 4)
    assert p.header.close_session and p.payload_id == b"" and p.payload == b""
    assert p.encode() == wire
    with pytest.raises(DecodeError):
        ALCPacket.decode(wire + b"\x00\x01", 4)  # payload shorter than the FEC Payload ID
    with pytest.raises(ValueError):
        encode_alc(h, b"", b"x")


def test_memoryview_and_bytearray_input() -> None:
    for buf in (bytearray(FDT_PKT_HDR), memoryview(FDT_PKT_HDR)):
        h, n = LCTHeader.decode(buf)
        assert h.encode() == FDT_PKT_HDR
        assert header_length(buf) == 32 and ext_region(buf) == (12, 32)


# ------------------------------------------------------------------ byte-level helpers


def test_header_length_and_ext_region() -> None:
    assert header_length(FILE_PKT_HDR + b"\x00" * 8) == 32
    assert ext_region(FILE_PKT_HDR) == (16, 32)
    assert ext_region(FDT_PKT_HDR) == (12, 32)
    plain = LCTHeader(tsi=1, toi=2, cci=bytes(16), tsi_bits=48, toi_bits=80).encode()
    assert ext_region(plain) == (len(plain), len(plain))
    for bad in (b"", b"\x10\xa0", bytes.fromhex("10a00900") + bytes(28), bytes.fromhex("10a00300") + bytes(8)):
        with pytest.raises(DecodeError):
            ext_region(bad)
    with pytest.raises(DecodeError):
        header_length(bytes.fromhex("10a00900") + bytes(28))


def test_insert_extension() -> None:
    pkt = FILE_PKT_HDR + b"\x00\x00\x00\x00" + b"payload!"
    auth = ExtAuth(bytes(range(10))).encode()
    out = insert_extension(pkt, auth)
    h, n = split(out)
    assert n == 32 + 12 and h.extensions[-1] == ExtAuth(bytes(range(10)))
    assert out[n:] == pkt[32:]
    out2 = insert_extension(pkt, auth, offset=16)
    h2, _ = split(out2)
    assert h2.extensions[0] == ExtAuth(bytes(range(10))) and h2.extensions[1].het == EXT_FTI
    with pytest.raises(ValueError):
        insert_extension(pkt, auth, offset=18)
    with pytest.raises(ValueError):
        insert_extension(pkt, b"\x00\x01\x00")


# ------------------------------------------------------------------ properties

_WIDTHS = [(t, o) for t in (0, 16, 32, 48) for o in range(0, 113, 16) if (t >> 4) & 1 == (o >> 4) & 1]


def _var(n_max: int = 8) -> st.SearchStrategy[bytes]:
    return st.integers(0, n_max).flatmap(lambda w: st.binary(min_size=4 * w + 2, max_size=4 * w + 2))


u32 = st.integers(0, 0xFFFFFFFF)
opt32 = st.none() | u32
ext_time = st.builds(
    ExtTime,
    opt32,
    opt32,
    opt32,
    opt32,
    st.integers(0, 255),
    st.integers(0, 15),
    st.integers(0, 2).map(lambda w: b"\x5a" * (4 * w)),
).filter(lambda e: not (e.sct_low is not None and e.sct_high is None))
extension = st.one_of(
    st.builds(ExtNop, _var()),
    st.builds(ExtAuth, _var(12)),
    ext_time,
    st.builds(ExtFTI, _var(6)),
    st.builds(ExtFDT, st.integers(0, 0xFFFFF), st.sampled_from([1, 2])),
    st.builds(ExtCENC, st.integers(0, 255), st.integers(0, 0xFFFF)),
    st.builds(
        HeaderExtension,
        st.integers(3, 127).filter(lambda x: x != 64),
        _var(),
    ),
    st.builds(
        HeaderExtension,
        st.integers(128, 255).filter(lambda x: x not in (192, 193)),
        st.binary(min_size=3, max_size=3),
    ),
)


@st.composite
def headers(draw: st.DrawFn) -> LCTHeader:
    tsi_bits, toi_bits = draw(st.sampled_from(_WIDTHS))
    return LCTHeader(
        tsi=draw(st.integers(0, (1 << tsi_bits) - 1)),
        toi=draw(st.integers(0, (1 << toi_bits) - 1)),
        codepoint=draw(st.integers(0, 255)),
        tsi_bits=tsi_bits,
        toi_bits=toi_bits,
        cci=draw(st.sampled_from([4, 8, 12, 16]).flatmap(lambda n: st.binary(min_size=n, max_size=n))),
        close_session=draw(st.booleans()),
        close_object=draw(st.booleans()),
        psi=draw(st.integers(0, 3)),
        reserved=draw(st.integers(0, 3)),
        extensions=draw(st.lists(extension, max_size=6)),
    )


@settings(max_examples=300)
@given(headers(), st.binary(max_size=16))
def test_roundtrip_random_headers(h: LCTHeader, tail: bytes) -> None:
    wire = h.encode()
    assert len(wire) % 4 == 0 and wire[2] * 4 == len(wire)
    d, n = LCTHeader.decode(wire + tail)
    assert n == len(wire)
    assert d == h
    assert d.encode() == wire
    s, e = ext_region(wire + tail)
    assert e == n and wire[s:e] == b"".join(x.encode() for x in h.extensions)
    if h.tsi_bits:
        assert split(wire + tail)[1] == n


@settings(max_examples=500)
@given(st.binary(max_size=80))
def test_random_bytes_only_decode_error(buf: bytes) -> None:
    for fn in (header_length, ext_region):
        try:
            fn(buf)
        except DecodeError:
            pass
    try:
        h, n = LCTHeader.decode(buf)
    except DecodeError:
        return
    assert h.encode() == buf[:n]


@settings(max_examples=500)
@given(
    st.integers(0, 0xFFFFFF),
    st.integers(0, 255),
    st.binary(max_size=100),
)
def test_plausible_bytes_roundtrip_or_decode_error(w: int, hdr_words: int, rest: bytes) -> None:
    # V=1 forced and HDR_LEN near the length, to reach the extension walk often
    buf = bytes((0x10 | (w >> 20 & 0xF), w >> 12 & 0xFF, hdr_words % 32, w & 0xFF)) + rest
    try:
        h, n = LCTHeader.decode(buf)
    except DecodeError:
        return
    assert h.encode() == buf[:n]
    try:
        p = ALCPacket.decode(buf, 4)
    except DecodeError:
        return
    assert p.encode() == buf


# ------------------------------------------------------------------ interop capture


@pytest.mark.skipif(not PCAP.exists(), reason="interop capture not available")
def test_flute_plain_pcap_roundtrip() -> None:
    pkts = list(udp_payloads(PCAP, 40085))
    assert len(pkts) == 805
    tois: dict[int, int] = {}
    fdt_ids = set()
    for pkt in pkts:
        h, n = split(pkt)
        assert h.encode() == pkt[:n]
        assert (h.tsi, h.tsi_bits, h.toi_bits, h.codepoint) == (16, 16, 16, 0)
        p = ALCPacket.decode(pkt, 4)
        assert p.encode() == pkt
        assert header_length(pkt) == n
        start, end = ext_region(pkt)
        assert (start, end) == (12, n)
        tois[h.toi] = tois.get(h.toi, 0) + 1
        if h.toi == 0:
            fdt = h.find(EXT_FDT)
            assert fdt is not None and fdt.version == 1
            fdt_ids.add(fdt.instance_id)
            fti = h.find(EXT_FTI)
            assert fti is not None and len(fti.body) == 14
            assert fti.body[8:10] == (1436).to_bytes(2, "big")
        else:
            assert h.extensions == []
    assert set(tois) == {0, 1, 2, 3}
    assert tois[1] == 1 and tois[2] == 70 and tois[3] == 731
    assert fdt_ids
