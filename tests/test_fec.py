"""alc.fec: partitioning, payload IDs, OTI codecs, Reed-Solomon over GF(2^8)/GF(2^16)."""

from __future__ import annotations

import math
import os
import random

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from alc.errors import DecodeError
from alc.fec import (
    OTI,
    decode_fti,
    get_scheme,
    oti_from_fdt_attributes,
    oti_to_fdt_attributes,
    partition,
)
from alc.fec.gf import RSCode, field


# --------------------------------------------------------------------------- partition
def _rfc5052(L: int, E: int, B: int) -> list[int]:
    T = math.ceil(L / E)
    N = math.ceil(T / B)
    if N == 0:
        return []
    a_large, a_small = math.ceil(T / N), math.floor(T / N)
    i = T - a_small * N
    return [a_large if j < i else a_small for j in range(N)]


@given(st.integers(0, 10**12), st.integers(1, 65535), st.integers(1, 70000))
@settings(max_examples=500)
def test_partition_matches_rfc5052_formula(L: int, E: int, B: int) -> None:
    assume(math.ceil(L / E) / B < 20000)
    blocks = partition(L, E, B)
    assert blocks == _rfc5052(L, E, B)
    assert sum(blocks) == math.ceil(L / E)
    assert all(0 < b <= B for b in blocks)
    if blocks:
        assert max(blocks) - min(blocks) <= 1


def test_partition_known_cases() -> None:
    assert partition(100000, 1024, 32) == [25, 25, 24, 24]  # NRL capture, f100k.bin
    assert partition(0, 1024, 32) == []
    assert partition(1, 1024, 32) == [1]
    assert partition(1024 * 32, 1024, 32) == [32]
    assert partition(1024 * 32 + 1, 1024, 32) == [17, 16]


@pytest.mark.parametrize("args", [(10, 0, 5), (10, 5, 0), (-1, 5, 5)])
def test_partition_bad(args: tuple[int, int, int]) -> None:
    with pytest.raises(DecodeError):
        partition(*args)


# --------------------------------------------------------------------------- payload IDs
OTIS = [
    OTI(0, 100000, 1400, 64),
    OTI(5, 100000, 1024, 32, 48),
    OTI(2, 100000, 1024, 32, 48, m=8),
    OTI(2, 10**7, 1024, 1000, 1200, m=16),
    OTI(129, 100000, 1024, 32, 48),
]
PID_RANGES = {0: (16, 16), 5: (24, 8), 2: (24, 8), 129: (32, 16)}


@pytest.mark.parametrize("oti", OTIS, ids=lambda o: f"id{o.encoding_id}m{o.m}")
def test_payload_id_roundtrip_and_layout(oti: OTI) -> None:
    s = get_scheme(oti)
    sbits, ebits = PID_RANGES[oti.encoding_id]
    if oti.encoding_id == 2 and oti.m == 16:
        sbits, ebits = 16, 16
    rnd = random.Random(1)
    for _ in range(200):
        sbn, esi = rnd.randrange(1 << sbits), rnd.randrange(1 << ebits)
        b = s.encode_payload_id(sbn, esi)
        assert len(b) == s.payload_id_length
        assert s.decode_payload_id(b"xx" + b, 2) == (sbn, esi)
    if oti.encoding_id != 129:
        assert s.encode_payload_id(0x12, 0x34) == ((0x12 << ebits) | 0x34).to_bytes(4, "big")
    else:
        assert s.encode_payload_id(1, 3) == bytes.fromhex("00000001 0019 0003")
    for bad in (b"", b"\x00" * (s.payload_id_length - 1)):
        with pytest.raises(DecodeError):
            s.decode_payload_id(bad)
    with pytest.raises(DecodeError):
        s.decode_payload_id(b"\x00" * 8, 8 - s.payload_id_length + 1)


@pytest.mark.parametrize("oti", OTIS, ids=lambda o: f"id{o.encoding_id}m{o.m}")
@given(data=st.binary(max_size=12), off=st.integers(0, 12))
def test_payload_id_fuzz_only_decodeerror(oti: OTI, data: bytes, off: int) -> None:
    s = get_scheme(oti)
    try:
        sbn, esi = s.decode_payload_id(data, off)
    except DecodeError:
        return
    assert sbn >= 0 and esi >= 0


# --------------------------------------------------------------------------- OTI / FTI
FTI_OTIS = [
    *OTIS,
    OTI(0, (1 << 48) - 1, 65535, (1 << 32) - 1),
    OTI(5, 5000, 1400, 64, 80),
    OTI(6, 1048576, 1024, 1024, num_source_blocks=1, num_sub_blocks=1, alignment=8),
]


@pytest.mark.parametrize("oti", FTI_OTIS, ids=lambda o: f"id{o.encoding_id}")
def test_fti_roundtrip(oti: OTI) -> None:
    body = get_scheme(oti).encode_fti(oti) if oti.transfer_length < 10**12 else None
    if body is None:
        from alc.fec import encode_fti

        body = encode_fti(oti)
    assert (len(body) + 2) % 4 == 0
    assert decode_fti(oti.encoding_id, body) == oti
    assert decode_fti(oti.encoding_id, body + b"\0\0\0\0") == oti
    with pytest.raises(DecodeError):
        decode_fti(oti.encoding_id, body[: len(body) - 3])


def test_fti_wire_examples() -> None:
    # NRL NORM capture (norm.md §1.2): 40 03 0000 00001388 0578 40 10, last byte = nparity
    body = bytes.fromhex("00000000138805784010")
    o = decode_fti(5, body, last_field="num_parity")
    assert o == OTI(5, 5000, 1400, 64, 80)
    from alc.fec import encode_fti

    assert encode_fti(o, last_field="num_parity") == body
    # ID 0 RFC 5445 layout
    assert encode_fti(OTI(0, 20400, 1000, 20)) == bytes.fromhex("000000004fb0 0000 03e8 00000014")
    # ID 2 m/G defaults when 0 (RFC 5510 §4.2.4.2)
    o2 = decode_fti(2, bytes.fromhex("000000001388 0000 0578 0040 0050"))
    assert (o2.m, o2.symbols_per_packet) == (8, 1)
    # RaptorQ: F(40) res(8) T(16) Z(8) N(16) Al(8) + 2 pad
    assert encode_fti(OTI(6, 1000, 64, 16, num_source_blocks=1, num_sub_blocks=1, alignment=8)) == (
        bytes.fromhex("00000003e8 00 0040 01 0001 08 0000")
    )


def test_rfc5510_id5_fti_rejects_max_n_below_b() -> None:
    with pytest.raises(DecodeError):
        decode_fti(5, bytes.fromhex("00000000138805784010"))  # RFC reading: max_n 16 < B 64


@pytest.mark.parametrize(
    "eid,body",
    [
        (7, b"\0" * 14),
        (2, bytes.fromhex("000000001388 0c01 0578 0040 0050")),  # m = 12
        (2, bytes.fromhex("000000001388 1001 0577 0040 0050")),  # m = 16, odd E
        (0, bytes.fromhex("000000001388 0000 0000 00000040")),  # E = 0
        (0, bytes.fromhex("000000001388 0000 0100 00000000")),  # B = 0
        (129, bytes.fromhex("000000001388 0007 0578 0040 0050")),  # instance 7
        (6, bytes.fromhex("00000003e8 00 0041 01 0001 08")),  # T % Al != 0
        (6, bytes.fromhex("00000003e8 00 0040 00 0001 08")),  # Z = 0
    ],
)
def test_fti_bad(eid: int, body: bytes) -> None:
    with pytest.raises(DecodeError):
        decode_fti(eid, body)


@pytest.mark.parametrize("eid", [0, 2, 5, 6, 129])
@given(body=st.binary(max_size=20))
def test_fti_fuzz_only_decodeerror(eid: int, body: bytes) -> None:
    try:
        decode_fti(eid, body)
    except DecodeError:
        pass


@pytest.mark.parametrize("oti", FTI_OTIS[:-3] + FTI_OTIS[-2:], ids=lambda o: f"id{o.encoding_id}")
def test_fdt_attributes_roundtrip(oti: OTI) -> None:
    attrs = oti_to_fdt_attributes(oti)
    assert all(isinstance(v, str) for v in attrs.values())
    assert oti_from_fdt_attributes(attrs) == oti


def test_fdt_attributes_missing_and_bad() -> None:
    assert oti_from_fdt_attributes({}) is None
    assert oti_from_fdt_attributes(
        {
            "Content-Length": "5",
            "FEC-OTI-Encoding-Symbol-Length": "4",
            "FEC-OTI-Maximum-Source-Block-Length": "2",
        }
    ) == OTI(0, 5, 4, 2)
    for bad in (
        {"FEC-OTI-FEC-Encoding-ID": "x"},
        {"FEC-OTI-FEC-Encoding-ID": "9"},
        {"Transfer-Length": "-1"},
        {
            "FEC-OTI-FEC-Encoding-ID": "2",
            "Transfer-Length": "9",
            "FEC-OTI-Encoding-Symbol-Length": "4",
            "FEC-OTI-Maximum-Source-Block-Length": "2",
            "FEC-OTI-Scheme-Specific-Info": "!!",
        },
    ):
        with pytest.raises(DecodeError):
            oti_from_fdt_attributes(bad)


@given(
    st.dictionaries(
        st.sampled_from(
            [
                "Transfer-Length",
                "Content-Length",
                "FEC-OTI-FEC-Encoding-ID",
                "FEC-OTI-Encoding-Symbol-Length",
                "FEC-OTI-Maximum-Source-Block-Length",
                "FEC-OTI-Max-Number-of-Encoding-Symbols",
                "FEC-OTI-FEC-Instance-ID",
                "FEC-OTI-Scheme-Specific-Info",
            ]
        ),
        st.text(max_size=8),
    )
)
def test_fdt_fuzz_only_decodeerror(attrs: dict[str, str]) -> None:
    try:
        oti_from_fdt_attributes(attrs)
    except DecodeError:
        pass


def test_get_scheme_unsupported() -> None:
    with pytest.raises(DecodeError) as ei:
        get_scheme(OTI(3, 100, 10, 10))
    assert ei.value.field == "FEC Encoding ID"


# --------------------------------------------------------------------------- GF / RS math
@pytest.mark.parametrize("m", [8, 16])
def test_field_axioms(m: int) -> None:
    gf = field(m)
    rnd = np.random.default_rng(m)
    a = rnd.integers(1, 1 << m, 1000)
    b = rnd.integers(0, 1 << m, 1000)
    assert np.all(gf.mul(a, gf.inv(a)) == 1)
    assert np.all(gf.mul(a, b) == gf.mul(b, a))
    assert np.all(gf.mul(a, 0) == 0)
    # alpha = x = 2 generates the multiplicative group (polynomial is primitive)
    assert len(set(gf.exp[: gf.order].tolist())) == gf.order


def _slow_mul(a: int, b: int, m: int, poly: int) -> int:
    r = 0
    while b:
        if b & 1:
            r ^= a
        b >>= 1
        a <<= 1
        if a >> m:
            a ^= poly
    return r


def test_gf256_matches_polynomial_0x11d() -> None:
    gf = field(8)
    for a in range(0, 256, 7):
        for b in range(0, 256, 5):
            assert gf.mul(a, b) == _slow_mul(a, b, 8, 0x11D)
    gf16 = field(16)
    for a, b in [(0x1234, 0xABCD), (0xFFFF, 0xFFFF), (0x8000, 2)]:
        assert gf16.mul(a, b) == _slow_mul(a, b, 16, 0x1100B)


def test_rfc5510_generator_matrix_by_hand() -> None:
    """k = 2, n = 3 over GF(2^8): V = [[1,1,1],[1,a,a^2]], GM = V22^-1 V."""
    gf = field(8)
    a, a2 = 2, 4
    # V22 = [[1,1],[1,a]]; det = a + 1 = 3; inverse = (1/3) [[a,1],[1,1]]
    inv3 = int(gf.inv(3))
    # column 2 = V22^-1 [1, a^2]^T = (1/3) [a + a^2, 1 + a^2]
    expect = [_slow_mul(inv3, a ^ a2, 8, 0x11D), _slow_mul(inv3, 1 ^ a2, 8, 0x11D)]
    col = RSCode(8, 2, "rfc5510").columns([2])[:, 0].tolist()
    assert col == expect
    s = [0x11, 0x22]
    rep = RSCode(8, 2, "rfc5510").encode(np.array([[0x11], [0x22]], dtype=np.uint8), [2])
    assert int(rep[0, 0]) == _slow_mul(s[0], expect[0], 8, 0x11D) ^ _slow_mul(
        s[1], expect[1], 8, 0x11D
    )


def test_nrl_matrix_points() -> None:
    """NRL/Rizzo: points 0, 1, a, a^2...; k=1 code repeats the symbol; k=2 parity ESI 2 = point 1."""
    code = RSCode(8, 2, "rizzo")
    # points x0=0, x1=1 for source; ESI 2 -> point alpha^1 = 2: p(x) = s0 + (s0+s1) x
    col = code.columns([2])[:, 0].tolist()
    assert col == [1 ^ 2, 2]  # s0*(1+x) + s1*x at x=2 -> coefficients 3, 2
    # ESI 3 -> point alpha^2 = 4
    assert code.columns([3])[:, 0].tolist() == [1 ^ 4, 4]


def _rs_roundtrip(
    oti: OTI, matrix: str, erase_seed: int, last_len: int | None = None, **kw: str
) -> None:
    s = get_scheme(oti, rs_matrix=matrix, **kw)
    rnd = random.Random(erase_seed)
    E = oti.symbol_length
    for sbn, k in enumerate(s.block_lengths()):
        last = s.last_symbol_length(sbn)
        src = [os.urandom(E) for _ in range(k - 1)] + [os.urandom(last)]
        n = s.max_encoding_symbols(sbn)
        rep = s.repair_symbols(sbn, src, n - k)
        assert [e for e, _ in rep] == list(range(k, n))
        assert all(len(r) == E for _, r in rep)
        pool = list(enumerate(src)) + rep
        rnd.shuffle(pool)
        dec = s.block_decoder(sbn)
        done = False
        for i, (esi, sym) in enumerate(pool[:k]):
            done = dec.add(esi, sym)
            assert done == (i == k - 1)
        assert dec.decode() == src


@pytest.mark.parametrize("matrix", ["rfc5510", "nrl", "flute"])
@given(
    k=st.integers(1, 40),
    extra=st.integers(0, 20),
    E=st.integers(1, 64),
    L_short=st.integers(0, 63),
    seed=st.integers(0, 2**16),
)
@settings(max_examples=40, deadline=None)
def test_rs8_encode_erase_decode(
    matrix: str, k: int, extra: int, E: int, L_short: int, seed: int
) -> None:
    L = k * E - (L_short % E)
    _rs_roundtrip(OTI(5, L, E, k, k + extra), matrix, seed)


@pytest.mark.parametrize("matrix", ["rfc5510", "nrl"])
@given(
    k=st.integers(1, 300),
    extra=st.integers(0, 20),
    E=st.integers(1, 9),
    seed=st.integers(0, 2**16),
)
@settings(max_examples=25, deadline=None)
def test_rs16_encode_erase_decode(matrix: str, k: int, extra: int, E: int, seed: int) -> None:
    _rs_roundtrip(OTI(2, k * E * 2 - 1, E * 2, k, k + extra, m=16), matrix, seed)


@pytest.mark.parametrize(
    "eid,m,k,n,matrix",
    [
        (5, 8, 1, 1, "rfc5510"),
        (5, 8, 1, 255, "rfc5510"),
        (5, 8, 7, 7, "rfc5510"),
        (5, 8, 255, 255, "rfc5510"),
        (5, 8, 200, 255, "rfc5510"),
        (5, 8, 1, 256, "nrl"),
        (5, 8, 128, 256, "nrl"),
        (5, 8, 250, 256, "flute"),
        (129, 8, 100, 255, "rfc5510"),
        (2, 8, 254, 255, "rfc5510"),
        (2, 16, 1, 3, "rfc5510"),
        (2, 16, 1000, 1010, "rfc5510"),
    ],
)
def test_rs_edges(eid: int, m: int, k: int, n: int, matrix: str) -> None:
    oti = OTI(eid, k * 16 * 3, 16, k, n, m=m)  # three blocks
    _rs_roundtrip(oti, matrix, k + n)


def test_rs_max_block_all_parity_decode() -> None:
    """k = 128 from only the 127 parity symbols of n=255 plus one source."""
    oti = OTI(5, 128 * 8, 8, 128, 255)
    s = get_scheme(oti)
    src = [os.urandom(8) for _ in range(128)]
    rep = s.repair_symbols(0, src, 127)
    d = s.block_decoder(0)
    d.add(5, src[5])
    for esi, sym in rep:
        d.add(esi, sym)
    assert d.decode() == src


def test_rs_decoder_bad_input() -> None:
    s = get_scheme(OTI(5, 1000, 100, 10, 12))
    d = s.block_decoder(0)
    with pytest.raises(DecodeError):
        d.add(0, b"x" * 101)  # longer than E
    with pytest.raises(DecodeError):
        d.add(255, b"x")  # beyond GF(2^8) rfc5510 code length
    with pytest.raises(DecodeError):
        s.block_decoder(1)  # only one block
    d.add(1, b"y" * 100)
    d.add(1, b"z" * 100)  # duplicate tolerated
    assert d.received == 1


def test_shortened_blocks_differ_from_exact() -> None:
    oti = OTI(5, 100000, 1024, 32, 48)
    src = [os.urandom(1024) for _ in range(25)]
    a = get_scheme(oti, rs_matrix="nrl").repair_symbols(1, src, 2)
    b = get_scheme(oti, rs_matrix="nrl", rs_short_blocks="exact").repair_symbols(1, src, 2)
    assert a != b and [e for e, _ in a] == [25, 26]
    _rs_roundtrip(oti, "nrl", 3)
    _rs_roundtrip(oti, "rfc5510", 3, rs_short_blocks="shortened")


def test_no_code_decoder() -> None:
    s = get_scheme(OTI(0, 2500, 1000, 2))
    assert s.block_lengths() == [2, 1]
    d = s.block_decoder(1)
    with pytest.raises(DecodeError):
        d.add(1, b"x")
    assert d.add(0, b"a" * 500)
    assert d.decode() == [b"a" * 500]
    with pytest.raises(ValueError):
        s.repair_symbols(0, [b"a", b"b"], 1)


def test_rs16_byteorder_changes_parity() -> None:
    oti = OTI(2, 40, 4, 10, 12, m=16)
    src = [os.urandom(4) for _ in range(10)]
    big = get_scheme(oti, rs16_byteorder="big").repair_symbols(0, src, 2)
    little = get_scheme(oti, rs16_byteorder="little").repair_symbols(0, src, 2)
    assert big != little


def test_id129_payload_id_carries_block_length() -> None:
    s = get_scheme(OTI(129, 100000, 1024, 32, 48))
    assert s.encode_payload_id(2, 30, k=7) == bytes.fromhex("00000002 0007 001e")
    assert s.decode_payload_id_129(bytes.fromhex("00000002 0007 001e")) == (2, 7, 30)
    d = s.block_decoder(0, k=7)  # NORM: k from the packet overrides the partition
    src = [os.urandom(1024) for _ in range(7)]
    for esi, sym in s.repair_symbols(0, src, 3):
        d.add(esi, sym)
    for esi in range(3, 7):
        d.add(esi, src[esi])
    assert d.decode() == src


def test_shortened_m16_roundtrip() -> None:
    # blocks of 300, 300 and 299 symbols in a code for B = 400 (NRL-style m = 16)
    oti = OTI(2, 899 * 4, 4, 300, 332, m=16)
    _rs_roundtrip(oti, "nrl", 5)
    _rs_roundtrip(OTI(2, 899 * 4, 4, 400, 432, m=16), "nrl", 6)


@pytest.mark.parametrize(
    "oti,matrix",
    [
        (OTI(0, 5000, 100, 20), "rfc5510"),
        (OTI(5, 5000, 100, 20, 30), "rfc5510"),
        (OTI(5, 5000, 100, 20, 30), "nrl"),
        (OTI(2, 5000, 100, 20, 30, m=16), "nrl"),
        (OTI(129, 5000, 100, 20, 30), "flute"),
    ],
    ids=["id0", "id5", "id5-nrl", "id2m16", "id129"],
)
@given(
    items=st.lists(st.tuples(st.integers(-3, 70000), st.binary(max_size=120)), max_size=40),
    sbn=st.integers(-2, 5),
)
@settings(max_examples=60, deadline=None)
def test_block_decoder_fuzz_only_decodeerror(
    oti: OTI, matrix: str, items: list[tuple[int, bytes]], sbn: int
) -> None:
    s = get_scheme(oti, rs_matrix=matrix)
    try:
        d = s.block_decoder(sbn)
    except DecodeError:
        return
    done = False
    for esi, sym in items:
        try:
            done = d.add(esi, sym)
        except DecodeError:
            continue
    if done:
        out = d.decode()
        assert len(out) == d.k
