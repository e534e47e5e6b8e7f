"""NORM message codecs (RFC 5740 §4): vectors, exact round trip, property tests, fuzzing."""

from __future__ import annotations

import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from alc.errors import DecodeError
from alc.ext import HeaderExtension
from norm import messages as M
from norm import quantize as Q

# --------------------------------------------------------------------------- vectors (norm.md, captured NRL)

NRL_DATA = bytes.fromhex("120800020000000104d294421405000000000000400300000000138805784010")
NRL_INFO = (
    bytes.fromhex("110700010000000104d2944214050000400300000000138805784010") + b"payload.bin"
)
NRL_FLUSH = bytes.fromhex("130500060000000104d294420105000000000003")
NRL_CC = bytes.fromhex("130700000000000104d29442040000006b0c68700004a97a80002005")


def test_nrl_data_vector() -> None:
    m = M.decode(NRL_DATA + b"x" * 10)
    assert isinstance(m, M.NormData)
    assert (m.sequence, m.source_id, m.instance_id) == (2, 1, 0x04D2)
    assert (m.grtt, m.backoff, m.gsize) == (0x94, 4, 2)
    assert (m.flags, m.fec_id, m.object_id, m.sbn, m.esi) == (0x14, 5, 0, 0, 0)
    fti = m.fti()
    assert fti is not None
    p = fti.params(5)
    assert (p.object_size, p.segment_size, p.max_block_len, p.num_parity) == (5000, 1400, 64, 16)
    # RFC 5510 reading of the same byte (max_n): 16 - 64 -> no parity
    assert fti.params(5, last_is_max_n=True).num_parity == 0
    assert m.payload == b"x" * 10
    assert m.encode() == NRL_DATA + b"x" * 10
    assert Q.unquantize_rtt(m.grtt) == pytest.approx(0.2663, abs=1e-4)
    assert Q.unquantize_gsize(m.gsize) == 1000


def test_nrl_info_flush_cc_vectors() -> None:
    info = M.decode(NRL_INFO)
    assert isinstance(info, M.NormInfo) and info.payload == b"payload.bin"
    assert info.encode() == NRL_INFO
    fl = M.decode(NRL_FLUSH)
    assert isinstance(fl, M.NormCmdFlush)
    assert (fl.fec_id, fl.object_id, fl.sbn, fl.esi, fl.acking_nodes) == (5, 0, 0, 3, [])
    assert fl.encode() == NRL_FLUSH
    cc = M.decode(NRL_CC)
    assert isinstance(cc, M.NormCmdCC)
    assert (cc.cc_sequence, cc.send_time_sec, cc.send_time_usec) == (0, 0x6B0C6870, 0x0004A97A)
    assert cc.send_rate == 0x2005
    assert Q.unquantize_rate(0x2005) == pytest.approx(125000, rel=1e-3)
    assert cc.encode() == NRL_CC


def test_rfc5740_nack_example() -> None:
    """§4.3.1 examples: obj 12 blk 3 syms 2,5,8 (ITEMS) and a RANGES + INFO|SEGMENT pair."""
    items = [M.RepairItem(129, 12, 3, e, 32) for e in (2, 5, 8)]
    r1 = M.RepairRequest(M.NACK_ITEMS, M.NACK_SEGMENT, items)
    assert r1.encode()[:4] == bytes([1, 1, 0, 36])
    r2 = M.RepairRequest(
        M.NACK_RANGES,
        M.NACK_SEGMENT,
        [M.RepairItem(129, 18, 6, 5, 32), M.RepairItem(129, 18, 6, 10, 32)],
    )
    r3 = M.RepairRequest(
        M.NACK_ITEMS, M.NACK_SEGMENT | M.NACK_INFO, [M.RepairItem(129, 19, 1, 3, 32)]
    )
    assert r2.encode()[:4] == bytes([2, 1, 0, 24]) and r3.encode()[:4] == bytes([1, 5, 0, 12])
    nack = M.NormNack(7, 2, 1, 0x1234, 10, 20, [], [r1, r2, r3])
    raw = nack.encode()
    assert raw[1] == 6  # hdr_len without extensions
    back = M.decode(raw)
    assert back == nack and back.encode() == raw
    assert raw[24:28] == bytes([1, 1, 0, 36])
    assert raw[28:40] == bytes([129, 0, 0, 12]) + struct.pack(">IHH", 3, 32, 2)


def test_base_header_lengths() -> None:
    common = dict(sequence=1, source_id=2, instance_id=3, grtt=4, backoff=4, gsize=3)
    cases = [
        (M.NormInfo(**common, flags=0, fec_id=5, object_id=1), 4),
        (M.NormData(**common, flags=0, fec_id=5, object_id=1, sbn=1, esi=2), 5),
        (M.NormData(**common, flags=0, fec_id=129, object_id=1, sbn=1, esi=2, sbl=3), 6),
        (M.NormCmdFlush(**common, fec_id=0, object_id=1, sbn=0, esi=0), 5),
        (M.NormCmdSquelch(**common, fec_id=129, object_id=1, sbn=0, esi=0), 6),
        (M.NormCmdEot(**common), 4),
        (M.NormCmdCC(**common, cc_sequence=1, send_time_sec=2, send_time_usec=3), 6),
        (M.NormCmdRepairAdv(**common), 4),
        (M.NormCmdAckReq(**common, ack_type=16, ack_id=1), 4),
        (M.NormCmdApplication(**common, content=b"hi"), 4),
        (M.NormNack(1, 2, 3, 4), 6),
        (M.NormAck(1, 2, 3, 4, M.ACK_CC), 6),
    ]
    for msg, words in cases:
        raw = msg.encode()
        assert raw[1] == words, msg
        assert raw[0] >> 4 == 1
        assert M.header_regions(raw) == (words * 4, words * 4)
        assert M.decode(raw) == msg


def test_extensions_typed_and_unknown() -> None:
    exts: list[M.Extension] = [
        M.ExtFti.build(129, 123456789012, 1400, 64, 16, instance_id=0),
        M.ExtCC(5, M.CC_RTT | M.CC_START, 0x94, 123, 0x2005, 77),
        M.ExtRate(0x51F4),
        M.ExtAuth(bytes(range(10))),
        HeaderExtension(65, b"\x00\x01"),  # NRL private APP_ACK: kept
        HeaderExtension(200, b"\x01\x02\x03"),
    ]
    data = M.NormData(1, 2, 3, 0x94, 4, 2, M.FLAG_FILE, 129, 9, 7, 1, 32, exts, b"payload")
    raw = data.encode()
    back = M.decode(raw)
    assert back == data and back.encode() == raw
    assert isinstance(back, M.NormData)
    fti = back.fti()
    assert fti is not None and fti.object_size == 123456789012
    p = fti.params(129)
    assert (p.segment_size, p.max_block_len, p.num_parity) == (1400, 64, 16)
    start, end = M.header_regions(raw)
    assert start == 24 and end == raw[1] * 4 and raw[end:] == b"payload"


def test_fti_all_fec_ids_match_alc_fec() -> None:
    """EXT_FTI bodies agree with the shared FEC building block (alc.fec.decode_fti)."""
    for fec_id, m in ((0, 8), (2, 8), (2, 16), (5, 8), (129, 8)):
        fti = M.ExtFti.build(fec_id, 1048576, 1024, 32, 16, m=m)
        oti = fti.to_oti(fec_id)
        assert oti.transfer_length == 1048576 and oti.symbol_length == 1024
        assert oti.max_source_block_length == 32
        if fec_id:
            assert oti.max_encoding_symbols == 48  # NRL: last field = parity count
        if fec_id == 2:
            assert oti.m == m
        rfc = M.ExtFti.build(fec_id, 1048576, 1024, 32, 16, m=m, last_is_max_n=True)
        assert rfc.params(fec_id, last_is_max_n=True).num_parity == (16 if fec_id else 0)
        if fec_id:
            assert rfc.to_oti(fec_id, last_is_max_n=True).max_encoding_symbols == 48


def test_payload_ids_match_alc_fec() -> None:
    """FEC payload ID layouts agree with alc.fec scheme encode/decode_payload_id."""
    from alc.fec import OTI, get_scheme

    for fec_id, m, sbn, esi in (
        (0, 8, 0x1234, 0x5678),
        (5, 8, 0xABCDEF, 0x42),
        (2, 8, 0x123456, 0xFE),
        (2, 16, 0x1234, 0xFFEE),
    ):
        scheme = get_scheme(OTI(fec_id, 1 << 20, 1024, 32, 48 if fec_id else 0, m=m))
        raw = M.NormData(0, 1, 2, 3, 4, 5, 0, fec_id, 6, sbn, esi, m=m).encode()
        assert raw[16:20] == scheme.encode_payload_id(sbn, esi)
        back = M.decode(raw, fec2_m=m)
        assert isinstance(back, M.NormData)
        assert (back.sbn, back.esi) == scheme.decode_payload_id(raw, 16)
    scheme = get_scheme(OTI(129, 1 << 20, 1024, 32, 48))
    raw = M.NormData(0, 1, 2, 3, 4, 5, 0, 129, 6, 3, 40, sbl=32).encode()
    assert raw[16:24] == scheme.encode_payload_id(3, 40)


def test_fec2_m_from_fti_in_message() -> None:
    fti = M.ExtFti.build(2, 10_000_000, 1024, 400, 100, m=16)
    d = M.NormData(0, 1, 2, 3, 4, 5, 0, 2, 6, 0x1234, 300, extensions=[fti], m=16)
    raw = d.encode()
    back = M.decode(raw)  # default fec2_m=8, but the FTI says 16
    assert isinstance(back, M.NormData) and (back.sbn, back.esi, back.m) == (0x1234, 300, 16)
    assert back.encode() == raw


def test_stream_header() -> None:
    h = M.StreamHeader(5, 1, 0xFFFFFFF0)
    payload = h.encode() + b"hello" + b"\0" * 3
    back, data = M.StreamHeader.decode(payload)
    assert back == h and data == b"hello"
    end, data = M.StreamHeader.decode(M.StreamHeader(0, M.STREAM_END, 77).encode())
    assert end.payload_len == 0 and data == b""
    with pytest.raises(DecodeError):
        M.StreamHeader.decode(M.StreamHeader(9, 0, 0).encode() + b"abc")
    with pytest.raises(DecodeError):
        M.StreamHeader.decode(M.StreamHeader(3, 4, 0).encode() + b"abc")


def test_ack_flush_watermark_and_payload() -> None:
    wm = M.RepairItem(5, 0x10, 3, 31)
    ack = M.NormAck(1, 2, 1, 0x4D2, M.ACK_FLUSH, 0, 5, 6, [M.ExtCC(1, 0, 0x94, 0, 0x2005)], wm)
    raw = ack.encode()
    assert M.decode(raw) == ack
    app = M.NormAck(1, 2, 1, 0x4D2, 17, 9, payload=b"app data")
    assert M.decode(app.encode()) == app


def test_header_regions_allows_ext_auth_insertion() -> None:
    """TESLA inserts EXT_AUTH at byte level at ext_end and bumps hdr_len."""
    for msg in (
        M.decode(NRL_DATA + b"p" * 20),
        M.decode(NRL_INFO),
        M.decode(NRL_FLUSH),
        M.decode(NRL_CC),
        M.NormCmdEot(1, 2, 3, 4, 4, 3),
        M.NormCmdAckReq(1, 2, 3, 4, 4, 3, 16, 1, acking_nodes=[5, 6]),
    ):
        raw = msg.encode()
        start, end = M.header_regions(raw)
        auth = M.ExtAuth(b"\x10" + bytes(13)).encode()
        patched = bytearray(raw[:end] + auth + raw[end:])
        patched[1] += len(auth) // 4
        back = M.decode(bytes(patched))
        assert isinstance(back.extensions[-1], M.ExtAuth)  # type: ignore[union-attr]
        assert M.header_regions(patched) == (start, end + len(auth))
        assert bytes(patched) == back.encode()


@pytest.mark.parametrize(
    "raw,field",
    [
        (b"", "NORM header"),
        (b"\x12\x05\x00\x00\x00\x00\x00", "NORM header"),
        (bytes([0x22, 5]) + bytes(18), "version"),
        (bytes([0x17, 2]) + bytes(18), "type"),
        (bytes([0x12, 4]) + bytes(14) + bytes(4), "hdr_len"),  # fec 0 needs 5 words
        (bytes([0x12, 9]) + bytes(18), "hdr_len"),  # beyond the datagram
        (bytes([0x12, 5, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 7]) + bytes(6), "fec_id"),
        (bytes([0x13, 4, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 9, 0, 0, 0]), "NORM_CMD.sub-type"),
        (bytes([0x11, 5]) + bytes(14) + bytes([1, 0, 0, 0]), "HEL"),  # HEL = 0
    ],
)
def test_malformed(raw: bytes, field: str) -> None:
    with pytest.raises(DecodeError) as ei:
        M.decode(raw)
    assert ei.value.field == field


def test_malformed_lists() -> None:
    flush = M.NormCmdFlush(1, 2, 3, 4, 4, 3, 5, 1, 0, 0, acking_nodes=[1]).encode()
    with pytest.raises(DecodeError):
        M.decode(flush + b"\0")
    sq = M.NormCmdSquelch(1, 2, 3, 4, 4, 3, 5, 1, 0, 0, invalid_objects=[1]).encode()
    with pytest.raises(DecodeError):
        M.decode(sq + b"\0")
    cc = M.NormCmdCC(1, 2, 3, 4, 4, 3, 1, 2, 3, nodes=[M.CCNode(1, 2, 3, 4)]).encode()
    with pytest.raises(DecodeError):
        M.decode(cc[:-1])
    nack = M.NormNack(
        1, 2, 3, 4, requests=[M.RepairRequest(1, 1, [M.RepairItem(5, 1, 2, 3)])]
    ).encode()
    with pytest.raises(DecodeError):
        M.decode(nack[:-1])
    bad_len = bytearray(nack)
    bad_len[27] = 9
    with pytest.raises(DecodeError):
        M.decode(bytes(bad_len))
    odd_ranges = M.NormNack(
        1, 2, 3, 4, requests=[M.RepairRequest(2, 1, [M.RepairItem(5, 1, 2, 3)])]
    ).encode()
    with pytest.raises(DecodeError):
        M.decode(odd_ranges)
    bad_cc = M.NormNack(1, 2, 3, 4, extensions=[HeaderExtension(3, bytes(6))]).encode()
    with pytest.raises(DecodeError):
        M.decode(bad_cc)
    with pytest.raises(DecodeError):
        M.ExtFti(b"\0" * 4).params(5)
    with pytest.raises(DecodeError):
        M.ExtFti(b"\0" * 14).params(7)


# --------------------------------------------------------------------------- quantizers


def test_quantizer_round_trips() -> None:
    assert all(Q.quantize_rtt(Q.unquantize_rtt(q)) == q for q in range(256))
    assert Q.quantize_rtt(0.25) == 0x94 and Q.quantize_rtt(0.5) == 0x9D
    assert Q.unquantize_rtt(0x9D) == pytest.approx(0.532, abs=1e-3)
    assert Q.quantize_rtt(0.0) == 0 and Q.quantize_rtt(1e9) == 255
    assert Q.unquantize_rtt(31) == pytest.approx(3.2e-5)  # RFC (NRL's table: 3.287e-5)
    assert all(Q.quantize_gsize(Q.unquantize_gsize(q)) == q for q in range(16))
    assert (Q.quantize_gsize(10_000), Q.quantize_gsize(1000), Q.quantize_gsize(1001)) == (3, 2, 0xA)
    assert Q.unquantize_gsize(0xF) == 5 * 10**8 and Q.unquantize_gsize(0x8) == 50
    assert all(Q.quantize_backoff(Q.unquantize_backoff(q)) == q for q in range(16))
    canon = [q for q in range(65536) if Q.rate_code_is_canonical(q)]
    assert len(canon) > 50000
    assert all(Q.quantize_rate(Q.unquantize_rate(q)) == q for q in canon)
    assert Q.quantize_rate(32000) == 0x51F4 and Q.quantize_rate(125000) == 0x2005
    assert Q.quantize_rate(0) == 1
    assert all(Q.quantize_loss(Q.unquantize_loss(q)) == q for q in range(65536))
    assert Q.quantize_loss(0.5) == 32767 and Q.quantize_loss_nrl(0.5) == 32768
    hi, lo = Q.quantize_loss32(0.123456789)
    assert Q.unquantize_loss32(hi, lo) == pytest.approx(0.123456789, abs=1e-9)


@given(st.floats(1e-7, 2000.0))
def test_rtt_quantize_is_conservative(rtt: float) -> None:
    q = Q.quantize_rtt(rtt)
    if rtt >= 33e-6:
        assert Q.unquantize_rtt(q) >= rtt * (1 - 1e-9) or q == 255
        assert q == 32 or Q.unquantize_rtt(q - 1) < rtt * (1 + 1e-9)


@given(st.floats(1.0, 9e15))
def test_rate_quantize_close(rate: float) -> None:
    assert Q.unquantize_rate(Q.quantize_rate(rate)) == pytest.approx(rate, rel=2e-3)


def test_random_backoff_distribution() -> None:
    import random

    rng = random.Random(1)
    xs = [Q.random_backoff(2.0, 1000, rng) for _ in range(5000)]
    assert all(0.0 <= x <= 2.0 for x in xs)
    # truncated exponential skewed towards maxTime for large groups
    assert sum(xs) / len(xs) > 1.0
    assert Q.random_backoff(0.0, 1000, rng) == 0.0


# --------------------------------------------------------------------------- hypothesis strategies

u8 = st.integers(0, 0xFF)
u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)
nib = st.integers(0, 15)


@st.composite
def pid(draw: st.DrawFn) -> tuple[int, int, int, int, int]:
    fec_id = draw(st.sampled_from([0, 2, 5, 129]))
    m = draw(st.sampled_from([8, 16])) if fec_id == 2 else 8
    if fec_id == 5 or (fec_id == 2 and m == 8):
        return fec_id, m, draw(st.integers(0, (1 << 24) - 1)), draw(u8), 0
    if fec_id == 129:
        return fec_id, m, draw(u32), draw(u16), draw(u16)
    return fec_id, m, draw(u16), draw(u16), 0


def var_body(draw: st.DrawFn, max_words: int = 6) -> bytes:
    words = draw(st.integers(1, max_words))
    return draw(st.binary(min_size=4 * words - 2, max_size=4 * words - 2))


@st.composite
def extension(draw: st.DrawFn, fec_id: int | None = None) -> M.Extension:
    kind = draw(st.sampled_from(["fti", "cc", "rate", "auth", "var", "fixed"]))
    if kind == "fti":
        if fec_id in (0, 2, 129):
            body = draw(st.binary(min_size=14, max_size=14))
            if fec_id == 2:
                body = body[:6] + bytes([draw(st.sampled_from([8, 16]))]) + body[7:]
            return M.ExtFti(body)
        if fec_id == 5:
            return M.ExtFti(draw(st.binary(min_size=10, max_size=10)))
        return M.ExtFti(var_body(draw))
    if kind == "cc":
        return M.ExtCC(draw(u16), draw(u8), draw(u8), draw(u16), draw(u16), draw(u16))
    if kind == "rate":
        return M.ExtRate(draw(u16), draw(u8))
    if kind == "auth":
        return M.ExtAuth(var_body(draw, 12))
    if kind == "var":
        het = draw(st.integers(0, 127).filter(lambda h: h not in (1, 3, 64)))
        return HeaderExtension(het, var_body(draw))
    return HeaderExtension(draw(st.integers(129, 255)), draw(st.binary(min_size=3, max_size=3)))


def exts(fec_id: int | None = None) -> st.SearchStrategy[list[M.Extension]]:
    # at most one EXT_FTI: a fec_id 2 FTI decides the payload-id layout
    return st.lists(extension(fec_id), max_size=3).filter(
        lambda xs: sum(1 for x in xs if x.het == 64) <= 1
    )


@st.composite
def repair_item(draw: st.DrawFn, m2: int) -> M.RepairItem:
    fec_id, m, sbn, esi, sbl = draw(pid())
    if fec_id == 2:
        m = m2
        sbn, esi = (
            (draw(st.integers(0, (1 << 24) - 1)), draw(u8)) if m == 8 else (draw(u16), draw(u16))
        )
    return M.RepairItem(fec_id, draw(u16), sbn, esi, sbl, draw(u8), m)


@st.composite
def repair_request(draw: st.DrawFn, m2: int) -> M.RepairRequest:
    form = draw(st.sampled_from([1, 2, 3]))
    n = draw(st.integers(0, 3)) * (2 if form == 2 else 1)
    items = [draw(repair_item(m2)) for _ in range(n)]
    return M.RepairRequest(form, draw(u8), items)


@st.composite
def message(draw: st.DrawFn) -> tuple[M.NormMessage, int]:
    """-> (message, fec2_m needed to decode it)"""
    kind = draw(
        st.sampled_from(
            [
                "info",
                "data",
                "flush",
                "squelch",
                "eot",
                "cc",
                "radv",
                "ackreq",
                "app",
                "nack",
                "ack",
                "report",
            ]
        )
    )
    hdr = (draw(u16), draw(u32), draw(u16), draw(u8), draw(nib), draw(nib))
    m2 = draw(st.sampled_from([8, 16]))
    if kind == "info":
        return M.NormInfo(
            *hdr, draw(u8), draw(u8), draw(u16), draw(exts()), draw(st.binary(max_size=40))
        ), m2
    if kind in ("data", "flush", "squelch"):
        fec_id, m, sbn, esi, sbl = draw(pid())
        e = draw(exts(fec_id))
        fti_m = next((x.body[6] for x in e if x.het == 64 and fec_id == 2), None)
        if fec_id == 2:
            m = fti_m or m2
            sbn, esi = (
                (draw(st.integers(0, (1 << 24) - 1)), draw(u8))
                if m == 8
                else (draw(u16), draw(u16))
            )
        if kind == "data":
            return M.NormData(
                *hdr, draw(u8), fec_id, draw(u16), sbn, esi, sbl, e, draw(st.binary(max_size=40)), m
            ), m2
        if kind == "flush":
            nodes = draw(st.lists(u32, max_size=4))
            return M.NormCmdFlush(*hdr, fec_id, draw(u16), sbn, esi, sbl, e, nodes, m), m2
        return M.NormCmdSquelch(
            *hdr, fec_id, draw(u16), sbn, esi, sbl, e, draw(st.lists(u16, max_size=5)), m
        ), m2
    if kind == "eot":
        return M.NormCmdEot(
            *hdr, draw(st.integers(0, (1 << 24) - 1)), draw(exts()), draw(st.binary(max_size=8))
        ), m2
    if kind == "cc":
        nodes = [
            M.CCNode(draw(u32), draw(u8), draw(u8), draw(u16))
            for _ in range(draw(st.integers(0, 3)))
        ]
        return M.NormCmdCC(*hdr, draw(u16), draw(u32), draw(u32), draw(u8), draw(exts()), nodes), m2
    if kind == "radv":
        reqs = draw(st.lists(repair_request(m2), max_size=3))
        return M.NormCmdRepairAdv(*hdr, draw(u8), draw(u16), draw(exts()), reqs), m2
    if kind == "ackreq":
        return M.NormCmdAckReq(
            *hdr, draw(u8), draw(u8), draw(u8), draw(exts()), draw(st.lists(u32, max_size=4))
        ), m2
    if kind == "app":
        return M.NormCmdApplication(
            *hdr, draw(st.integers(0, (1 << 24) - 1)), draw(exts()), draw(st.binary(max_size=40))
        ), m2
    if kind == "nack":
        reqs = draw(st.lists(repair_request(m2), max_size=3))
        return M.NormNack(
            draw(u16),
            draw(u32),
            draw(u32),
            draw(u16),
            draw(u32),
            draw(u32),
            draw(exts()),
            reqs,
            draw(u16),
        ), m2
    if kind == "ack":
        ack_type = draw(st.sampled_from([1, 2, 3, 16, 255]))
        wm = draw(repair_item(m2)) if ack_type == 2 else None
        payload = draw(st.binary(max_size=20)) if ack_type != 2 or wm is not None else b""
        if ack_type != 2 and payload:
            pass
        return (
            M.NormAck(
                draw(u16),
                draw(u32),
                draw(u32),
                draw(u16),
                ack_type,
                draw(u8),
                draw(u32),
                draw(u32),
                draw(exts()),
                wm,
                payload,
            ),
            m2,
        )
    words = draw(st.integers(2, 6))
    content = draw(st.binary(min_size=4 * words - 8, max_size=4 * words - 8 + 20))
    return M.NormReport(draw(u16), draw(u32), words, content), m2


@settings(max_examples=600, suppress_health_check=[HealthCheck.too_slow])
@given(message())
def test_property_round_trip(mt: tuple[M.NormMessage, int]) -> None:
    msg, m2 = mt
    raw = msg.encode()
    back = M.decode(raw, fec2_m=m2)
    assert back == msg
    assert back.encode() == raw
    start, end = M.header_regions(raw)
    assert start <= end == raw[1] * 4 <= len(raw)


@settings(max_examples=1500)
@given(st.binary(max_size=120))
def test_property_random_bytes_only_decode_error(raw: bytes) -> None:
    try:
        msg = M.decode(raw)
    except DecodeError:
        return
    assert msg.encode() == raw


@settings(max_examples=1500)
@given(
    st.sampled_from([0x11, 0x12, 0x13, 0x14, 0x15, 0x16]),
    u8,
    st.binary(min_size=0, max_size=80),
    st.integers(0, 8),
)
def test_property_random_bodies_only_decode_error(
    vt: int, hl: int, rest: bytes, flavor: int
) -> None:
    raw = bytes([vt, hl % 32]) + rest
    if vt == 0x13 and len(raw) > 12:
        raw = raw[:12] + bytes([flavor]) + raw[13:]
    try:
        msg = M.decode(raw, fec2_m=16)
    except DecodeError:
        try:
            M.header_regions(raw)
        except DecodeError:
            pass
        return
    assert msg.encode() == raw


@settings(max_examples=800, suppress_health_check=[HealthCheck.too_slow])
@given(message(), st.data())
def test_property_mutated_valid_messages(
    mt: tuple[M.NormMessage, int], data: st.DataObject
) -> None:
    msg, m2 = mt
    raw = bytearray(msg.encode())
    for _ in range(data.draw(st.integers(1, 4))):
        if raw:
            i = data.draw(st.integers(0, len(raw) - 1))
            raw[i] = data.draw(u8)
    cut = data.draw(st.integers(0, len(raw)))
    for buf in (bytes(raw), bytes(raw[:cut])):
        try:
            back = M.decode(buf, fec2_m=m2)
        except DecodeError:
            continue
        assert back.encode() == buf
