"""Header-extension framing (RFC 5651 §5.2): both forms, walk errors, fuzz."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from alc.errors import DecodeError
from alc.ext import HeaderExtension, decode_extensions, encode_extensions, walk_extensions

# Hand-built from the RFC 5651 §5.2 figures: EXT_NOP HEL=1, a 2-word HET 5,
# a fixed HET 200 with 24-bit content 0x010203.
VECTOR = bytes.fromhex("00010000" "0502aabbccddeeff" "c8010203")


def test_vector_decode() -> None:
    exts = decode_extensions(VECTOR, 0, len(VECTOR))
    assert exts == [
        HeaderExtension(0, b"\x00\x00"),
        HeaderExtension(5, bytes.fromhex("aabbccddeeff")),
        HeaderExtension(200, b"\x01\x02\x03"),
    ]
    assert encode_extensions(exts) == VECTOR
    assert [e.length for e in exts] == [4, 8, 4]
    assert [e.is_fixed for e in exts] == [False, False, True]


def test_walk_offsets_absolute() -> None:
    buf = b"\xff" * 8 + VECTOR
    assert walk_extensions(buf, 8, len(buf)) == [(0, 8, 4), (5, 12, 8), (200, 20, 4)]
    assert walk_extensions(memoryview(buf), 8, len(buf))[2] == (200, 20, 4)


def test_default_end_and_empty() -> None:
    assert decode_extensions(VECTOR) == decode_extensions(VECTOR, 0, len(VECTOR))
    assert decode_extensions(VECTOR, 4, 4) == []
    assert encode_extensions([]) == b""


@pytest.mark.parametrize(
    "buf, start, end",
    [
        (bytes.fromhex("0000"), 0, 2),  # HEL = 0
        (bytes.fromhex("00000000"), 0, 4),  # HEL = 0
        (bytes.fromhex("0002000000"), 0, 5),  # HEL 2 = 8 octets, only 5
        (bytes.fromhex("00010000" "0003"), 0, 6),  # overrun at the second one
        (bytes.fromhex("c80102"), 0, 3),  # fixed form truncated
        (bytes.fromhex("05"), 0, 1),  # no room for HEL
        (bytes.fromhex("00010000"), 0, 8),  # end beyond buffer
        (bytes.fromhex("00010000"), 3, 2),  # end < start
        (bytes.fromhex("00020000" "00000000"), 0, 6),  # walk does not end at end
    ],
)
def test_malformed(buf: bytes, start: int, end: int) -> None:
    with pytest.raises(DecodeError):
        decode_extensions(buf, start, end)


def test_hel_field_in_error() -> None:
    with pytest.raises(DecodeError) as ei:
        decode_extensions(b"\x00\x00\x00\x00")
    assert ei.value.field == "HEL"


@pytest.mark.parametrize(
    "ext",
    [
        HeaderExtension(200, b"\x01\x02"),  # fixed needs 3
        HeaderExtension(200, b"\x01\x02\x03\x04"),
        HeaderExtension(5, b"\x01"),  # 1 + 2 not a multiple of 4
        HeaderExtension(5, b""),  # HEL would be... 2 octets: not a word
        HeaderExtension(5, b"\x00" * (255 * 4 - 2 + 4)),  # HEL 256
        HeaderExtension(256, b"\x00\x00\x00"),
        HeaderExtension(-1, b"\x00\x00"),
    ],
)
def test_encode_rejects(ext: HeaderExtension) -> None:
    with pytest.raises(ValueError):
        ext.encode()


def test_max_hel() -> None:
    e = HeaderExtension(7, b"\x00" * (255 * 4 - 2))
    wire = e.encode()
    assert wire[:2] == b"\x07\xff" and len(wire) == 1020
    assert decode_extensions(wire) == [e]


var_ext = st.builds(
    HeaderExtension,
    st.integers(0, 127),
    st.integers(0, 20).flatmap(lambda w: st.binary(min_size=4 * w + 2, max_size=4 * w + 2)),
)
fixed_ext = st.builds(HeaderExtension, st.integers(128, 255), st.binary(min_size=3, max_size=3))


@given(st.lists(st.one_of(var_ext, fixed_ext), max_size=12), st.binary(max_size=8))
def test_roundtrip(exts: list[HeaderExtension], prefix: bytes) -> None:
    wire = encode_extensions(exts)
    assert len(wire) % 4 == 0
    buf = prefix + wire
    assert decode_extensions(buf, len(prefix), len(buf)) == exts
    assert [h for h, _, _ in walk_extensions(buf, len(prefix), len(buf))] == [e.het for e in exts]


@given(st.binary(max_size=64), st.integers(-2, 70), st.integers(-2, 70))
def test_random_bytes_only_decode_error(buf: bytes, start: int, end: int) -> None:
    try:
        exts = decode_extensions(buf, start, end)
    except DecodeError:
        return
    assert encode_extensions(exts) == buf[start:end]


@given(st.binary(max_size=64))
def test_random_bytes_whole(buf: bytes) -> None:
    try:
        exts = decode_extensions(buf)
    except DecodeError:
        return
    assert encode_extensions(exts) == buf
