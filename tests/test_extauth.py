"""EXT_AUTH codec (RFC 5776 §3.4, §5): vectors, independent struct encoder, round trips,
and the no-other-exception property of the decoder."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alc.errors import DecodeError
from tesla.core import extauth as ea

VECTORS = Path(__file__).parent / "vectors" / "extauth.json"
KEY_LEN = {0: 20, 1: 28, 2: 32, 3: 48, 4: 64}  # RFC 5776 §2.5, restated here independently
MAC_LEN = {0: 10, 1: 14, 2: 16, 3: 24, 4: 32}


def p4(n: int) -> int:
    return -(-n // 4) * 4


def padz(b: bytes) -> bytes:
    return b + bytes(p4(len(b)) - len(b))


def independent_encode(v: dict) -> bytes:
    """Build the EXT_AUTH with struct only, from the RFC figures (not from the library)."""
    t = v["type"]
    gm = bytes.fromhex(v["group_mac"]) if v.get("group_mac") else b""
    if t == 0:
        commit = bytes.fromhex(v["commitment"])
        sig = bytes.fromhex(v["signature"])
        a = v.get("d_o_t") is not None
        flags = (4 if v["single_chain"] else 0) | (2 if gm else 0) | (1 if a else 0)
        body = (
            struct.pack(
                ">B4B2BH2HQ2I",
                flags,
                v["d"],
                v["prf_id"],
                v["mac_id"],
                v["group_mac_id"],
                v["sig_algo"],
                v["sig_hash"],
                len(sig),
                0,
                v["t_int_ms"],
                v["t0"],
                v["n"],
                v["i"],
            )
            + padz(commit)
            + padz(sig)
        )
        if a:
            body += struct.pack(">Q", (v["d_o_t_positive"] << 63) | v["d_o_t"])
    elif t in (1, 2, 3, 4):
        key = bytes.fromhex(v["key"])
        mac = bytes.fromhex(v["mac"])
        body = b"\0" + struct.pack(">I", v["i"]) + key + mac
        body += bytes(p4(3 + len(body)) - 3 - len(body))
    elif t == 5:
        body = b"\0" + struct.pack(">Q", v["t_r"])
    elif t == 6:
        body = b"\0" + struct.pack(">QQ", v["t_s"], v["t_r"]) + padz(bytes.fromhex(v["signature"]))
    else:
        raise AssertionError(t)
    total = 3 + len(body) + len(gm)
    assert total % 4 == 0
    return bytes([1, total // 4, (v["asid"] << 4) | t]) + body + gm


def layout_of(v: dict) -> ea.TagLayout:
    return ea.TagLayout(
        key_len=KEY_LEN[v["prf_id"]],
        mac_len=MAC_LEN[v["mac_id"]],
        sig_len=v.get("sig_len", 128),
        group_mac=bool(v.get("group_mac")),
    )


def message_of(v: dict) -> ea.ExtAuthMessage:
    gm = bytes.fromhex(v["group_mac"]) if v.get("group_mac") else None
    t = v["type"]
    if t == 0:
        return ea.Bootstrap(
            asid=v["asid"],
            d=v["d"],
            prf_id=v["prf_id"],
            mac_id=v["mac_id"],
            group_mac_id=v["group_mac_id"],
            sig_algo=v["sig_algo"],
            sig_hash=v["sig_hash"],
            t_int_ms=v["t_int_ms"],
            t0=v["t0"],
            n=v["n"],
            i=v["i"],
            commitment=bytes.fromhex(v["commitment"]),
            signature=bytes.fromhex(v["signature"]),
            single_chain=v["single_chain"],
            d_o_t=v.get("d_o_t"),
            d_o_t_positive=v.get("d_o_t_positive", True),
            group_mac=gm,
        )
    if t in (1, 2, 3, 4):
        return ea.AuthTag(
            t, v["asid"], v["i"], bytes.fromhex(v["key"]), bytes.fromhex(v["mac"]), gm
        )
    if t == 5:
        return ea.SyncRequest(v["asid"], v["t_r"], gm)
    return ea.SyncResponse(v["asid"], v["t_s"], v["t_r"], bytes.fromhex(v["signature"]), gm)


def load() -> list[dict]:
    return json.loads(VECTORS.read_text())["vectors"]


def test_vector_file_covers_every_type_with_and_without_group_mac() -> None:
    seen = {(v["type"], bool(v.get("group_mac"))) for v in load()}
    assert seen == {(t, g) for t in range(7) for g in (False, True)}


@pytest.mark.parametrize("v", load(), ids=lambda v: v["name"])
def test_vector(v: dict) -> None:
    wire = bytes.fromhex(v["hex"])
    assert independent_encode(v) == wire
    assert len(wire) == v["length"] and wire[1] == v["hel"] == len(wire) // 4
    msg = message_of(v)
    assert ea.encode(msg) == wire
    assert ea.decode(wire, 0, layout_of(v)) == msg
    # embedded at an offset inside a larger buffer
    assert ea.decode(b"\xaa" * 12 + wire + b"\xbb" * 5, 12, layout_of(v)) == msg


def test_hel_table_digest_4_8() -> None:
    """The worked values of the digest §4.8 table, from the formulas of RFC 5776 §3.4."""
    L256 = ea.TagLayout(32, 16, 128, False)
    L256g = ea.TagLayout(32, 16, 128, True)
    L1 = ea.TagLayout(20, 10, 128, False)
    L1g = ea.TagLayout(20, 10, 128, True)
    assert [ea.tag_length(1, x) for x in (L256, L256g, L1, L1g)] == [56, 60, 40, 44]
    assert [ea.tag_length(2, x) for x in (L256, L256g, L1, L1g)] == [24, 28, 20, 24]
    assert ea.bootstrap_length(32, 128, False, 0) == 192
    assert ea.bootstrap_length(32, 128, False, 4) == 196
    assert ea.bootstrap_length(20, 128, False, 4) == 184  # RFC Figure 10 text: 184 bytes, HEL 46
    assert ea.sync_response_length(128, 0) == 148
    assert ea.sync_request_length(4) == 16


def test_legacy_sync_type_numbers_only_on_request() -> None:
    wire = bytearray(ea.encode(ea.SyncRequest(3, 12345)))
    wire[2] = (3 << 4) | 7
    with pytest.raises(DecodeError):
        ea.decode(bytes(wire))
    assert ea.decode(bytes(wire), accept_legacy_sync_types=True) == ea.SyncRequest(3, 12345)


@pytest.mark.parametrize(
    "mutate,field",
    [
        (lambda b: b.__setitem__(3, 1), "EXT_AUTH.Reserved"),
        (lambda b: b.__setitem__(1, 0), "EXT_AUTH.HEL"),
        (lambda b: b.__setitem__(1, b[1] + 2), "EXT_AUTH.HEL"),
        (lambda b: b.__setitem__(0, 2), "EXT_AUTH.HET"),
        (lambda b: b.__setitem__(2, 0x1F), "EXT_AUTH.Type"),
    ],
)
def test_bad_tags(mutate, field) -> None:
    wire = bytearray(ea.encode(ea.AuthTag(1, 1, 7, bytes(range(32)), bytes(16))) + bytes(8))
    mutate(wire)
    with pytest.raises(DecodeError) as e:
        ea.decode(bytes(wire), 0, ea.TagLayout())
    assert e.value.field == field


def test_mac_padding_must_be_zero() -> None:
    lay = ea.TagLayout(20, 10, 128, False)  # 8+20+10 = 38 -> 2 pad octets
    wire = bytearray(ea.encode(ea.AuthTag(1, 0, 9, bytes(20), bytes(10))))
    assert len(wire) == 40
    wire[39] = 1
    with pytest.raises(DecodeError):
        ea.decode(bytes(wire), 0, lay)


def test_group_mac_in_g0_session_is_parsed_and_flagged() -> None:
    t = ea.AuthTag(1, 0, 9, bytes(32), bytes(16), b"abcd")
    assert ea.decode(ea.encode(t), 0, ea.TagLayout(group_mac=False)) == t
    with pytest.raises(DecodeError):  # G=1 session, tag without the Group MAC
        ea.decode(
            ea.encode(ea.AuthTag(1, 0, 9, bytes(32), bytes(16))), 0, ea.TagLayout(group_mac=True)
        )


def test_find_ext_auth() -> None:
    tag = ea.encode(ea.AuthTag(2, 5, 1, b"", bytes(16)))
    other = bytes([1, 2, (4 << 4) | 2, 0, 0, 0, 0, 0])  # EXT_AUTH of another ASID
    nop = bytes([0, 1, 0, 0])
    fixed = bytes([192, 1, 2, 3])
    area = nop + other + fixed + tag
    assert ea.find_ext_auth(area, 0, len(area), 5) == len(nop + other + fixed)
    with pytest.raises(DecodeError):
        ea.find_ext_auth(area, 0, len(area), 6)
    with pytest.raises(DecodeError):
        ea.find_ext_auth(area + tag, 0, len(area) + len(tag), 5)


# ----------------------------------------------------------------------------- properties

prf = st.sampled_from(sorted(KEY_LEN))
u32 = st.integers(0, 2**32 - 1)
u64 = st.integers(0, 2**64 - 1)
gmac = st.one_of(st.none(), st.binary(min_size=4, max_size=4))


@st.composite
def messages(draw):
    t = draw(st.integers(0, 6))
    asid = draw(st.integers(0, 15))
    p = draw(prf)
    m = draw(prf)
    sig = draw(st.binary(min_size=1, max_size=300))
    gm = draw(gmac)
    lay = ea.TagLayout(KEY_LEN[p], MAC_LEN[m], len(sig), gm is not None)
    if t == 0:
        g = gm is not None
        dot = draw(st.one_of(st.none(), st.integers(0, 2**63 - 1)))
        msg = ea.Bootstrap(
            asid=asid,
            d=draw(st.integers(2, 255)),
            prf_id=p,
            mac_id=m,
            group_mac_id=draw(st.sampled_from(sorted(MAC_LEN))) if g else 0,
            sig_algo=draw(st.integers(0, 255)),
            sig_hash=draw(st.integers(0, 255)),
            t_int_ms=draw(st.integers(1, 65535)),
            t0=draw(u64),
            n=draw(u32),
            i=draw(u32),
            commitment=draw(st.binary(min_size=KEY_LEN[p], max_size=KEY_LEN[p])),
            signature=sig,
            single_chain=draw(st.booleans()),
            d_o_t=dot,
            d_o_t_positive=draw(st.booleans()) if dot is not None else True,
            group_mac=gm,
        )
    elif t in (1, 2, 3, 4):
        key = b"" if t == 2 else draw(st.binary(min_size=KEY_LEN[p], max_size=KEY_LEN[p]))
        msg = ea.AuthTag(
            t, asid, draw(u32), key, draw(st.binary(min_size=MAC_LEN[m], max_size=MAC_LEN[m])), gm
        )
    elif t == 5:
        msg = ea.SyncRequest(asid, draw(u64), gm)
    else:
        msg = ea.SyncResponse(asid, draw(u64), draw(u64), sig, gm)
    return msg, lay


@settings(max_examples=400, deadline=None)
@given(messages())
def test_round_trip(ml) -> None:
    msg, lay = ml
    wire = ea.encode(msg)
    assert len(wire) % 4 == 0 and wire[1] * 4 == len(wire) and wire[0] == 1
    assert ea.decode(wire, 0, lay) == msg
    assert ea.encode(ea.decode(wire, 0, lay)) == wire


@settings(max_examples=1500, deadline=None)
@given(st.binary(max_size=400), st.integers(0, 8), st.booleans(), prf, prf)
def test_decoder_raises_only_decode_error(data, off, g, p, m) -> None:
    lay = ea.TagLayout(KEY_LEN[p], MAC_LEN[m], 128, g)
    try:
        msg = ea.decode(data, off, lay)
    except DecodeError:
        return
    assert ea.encode(msg) == bytes(data[off : off + data[off + 1] * 4])


@settings(max_examples=600, deadline=None)
@given(messages(), st.data())
def test_mutated_valid_messages_raise_only_decode_error(ml, data) -> None:
    msg, lay = ml
    wire = bytearray(ea.encode(msg))
    pos = data.draw(st.integers(0, len(wire) - 1))
    wire[pos] ^= data.draw(st.integers(1, 255))
    try:
        out = ea.decode(bytes(wire), 0, lay)
    except DecodeError:
        return
    assert ea.encode(out) == bytes(wire[: wire[1] * 4])
