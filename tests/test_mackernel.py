"""tesla.mackernel: the compiled HMAC loops give standard HMAC (RFC 2104) for every TESLA
MAC type, verify datagrams in place exactly as the zero-the-fields definition of RFC 5776
§3.3.1 says, never read outside a datagram or a buffer, and give way (None) to the py-copy
loop where they must.  The kernel is a dependency: if it cannot load, these tests fail
with the reason instead of passing on the fallback."""

from __future__ import annotations

import hmac
import os
import random

import numpy as np
import pytest

from tesla import mackernel as mk
from tesla.fastpath import PackedBatch, mac_rows

NAMES = {0: "sha1", 1: "sha224", 2: "sha256", 3: "sha384", 4: "sha512"}


def test_kernel_loads() -> None:
    assert mk.available(), f"MAC kernel unavailable: {mk.why_unavailable()}"


@pytest.mark.parametrize("mac_id", sorted(NAMES))
@pytest.mark.parametrize("key_len", [16, 32, 64, 200])  # 200: longer than every block
def test_hmac_rows_is_standard_hmac(mac_id: int, key_len: int) -> None:
    rng = random.Random(mac_id * 1000 + key_len)
    key = rng.randbytes(key_len)
    pkts = [rng.randbytes(rng.choice([0, 1, 55, 56, 63, 64, 65, 127, 128, 129, 1400, 3000])) for _ in range(40)]
    buf = b"".join(pkts)
    ln = np.array([len(p) for p in pkts], dtype=np.int64)
    st = np.cumsum(ln) - ln
    out = mk.hmac_rows(buf, st, ln, key, mac_id)
    assert out is not None
    for k, p in enumerate(pkts):
        assert out[k].tobytes() == hmac.digest(key, p, NAMES[mac_id])


def test_hmac_rows_rejects_rows_outside_the_buffer() -> None:
    buf = bytes(100)
    n = mk.MIN_ROWS
    st = np.zeros(n, dtype=np.int64)
    for bad_st, bad_ln in [(90, 11), (-1, 5), (0, -1)]:
        s = st.copy()
        ln = np.full(n, 10, dtype=np.int64)
        s[3], ln[3] = bad_st, bad_ln
        with pytest.raises(ValueError):
            mk.hmac_rows(buf, s, ln, b"k" * 16, 2)


def test_mac_rows_uses_the_kernel_and_the_fallback_alike() -> None:
    rng = random.Random(5)
    pkts = [rng.randbytes(rng.randrange(20, 1500)) for _ in range(100)]
    pb = PackedBatch(pkts)
    key = rng.randbytes(32)
    with_kernel = mac_rows(pb.buf, pb.starts, pb.lens, key, 2)
    mk.set_enabled(False)
    try:
        assert mk.hmac_rows(pb.buf, pb.starts, pb.lens, key, 2) is None
        without = mac_rows(pb.buf, pb.starts, pb.lens, key, 2)
    finally:
        mk.set_enabled(True)
    assert with_kernel == without


def _reference_verdict(p: bytes, mo: int, go: int, km: int, key: bytes, name: str) -> bool:
    """RFC 5776 §3.3.1 literally: zero the MAC (and Group MAC) field, HMAC, compare."""
    if mo < 0 or mo + km > len(p) or (go >= 0 and go + 4 > len(p)):
        return False
    if go >= 0 and go < mo + km and mo < go + 4:
        return False  # overlapping fields: no datagram the receiver buffers has them
    z = bytearray(p)
    z[mo : mo + km] = bytes(km)
    if go >= 0:
        z[go : go + 4] = bytes(4)
    return hmac.digest(key, bytes(z), name)[:km] == p[mo : mo + km]


@pytest.mark.parametrize("mac_id", sorted(NAMES))
def test_verify_objects_equals_zeroed_field_definition(mac_id: int) -> None:
    rng = random.Random(77 + mac_id)
    key = rng.randbytes(32)
    km = 10 if mac_id == 0 else 16
    pkts: list[bytes] = []
    mos: list[int] = []
    gos: list[int] = []
    for _ in range(400):
        ln = rng.choice([0, 3, 30, 64, 100, 200, 1400, 9000])
        p = bytearray(rng.randbytes(ln))
        r = rng.random()
        mo = rng.randrange(-3, ln + 5) if r < 0.15 else rng.randrange(0, max(1, ln - km + 1))
        go = -1 if rng.random() < 0.5 else rng.randrange(-1, ln + 3)
        # most datagrams carry a correct tag, the others a random one or a flipped bit
        if rng.random() < 0.7 and _layout_ok(ln, mo, go, km):
            z = bytearray(p)
            z[mo : mo + km] = bytes(km)
            if go >= 0:
                z[go : go + 4] = bytes(4)
            p[mo : mo + km] = hmac.digest(key, bytes(z), NAMES[mac_id])[:km]
            if go >= 0 and rng.random() < 0.5:  # the Group MAC field's octets don't count
                p[go : go + 4] = rng.randbytes(4)
            if rng.random() < 0.1:
                p[rng.randrange(ln)] ^= 1
        pkts.append(bytes(p))
        mos.append(mo)
        gos.append(go)
    got = mk.verify_objects(pkts, np.array(mos), np.array(gos), key, mac_id, km, head=16)
    assert got is not None
    ok, tags, heads, lens = got
    want = [_reference_verdict(p, m, g, km, key, NAMES[mac_id]) for p, m, g in zip(pkts, mos, gos, strict=True)]
    assert ok.tolist() == want
    assert sum(want) > 100
    for k, p in enumerate(pkts):
        assert lens[k] == len(p)
        assert heads[k].tobytes() == p[:16].ljust(16, b"\0")
        if mos[k] >= 0 and mos[k] + km <= len(p) and (gos[k] < 0 or gos[k] + 4 <= len(p)):
            assert tags[k].tobytes() == p[mos[k] : mos[k] + km]


def _layout_ok(ln: int, mo: int, go: int, km: int) -> bool:
    if mo < 0 or mo + km > ln or (go >= 0 and go + 4 > ln):
        return False
    return not (go >= 0 and go < mo + km and mo < go + 4)


def test_object_loops_give_way_on_anything_but_bytes() -> None:
    pkts: list[object] = [bytes(40) for _ in range(mk.MIN_ROWS)]
    pkts[5] = bytearray(40)
    mo = np.full(len(pkts), 4)
    go = np.full(len(pkts), -1)
    assert mk.verify_objects(pkts, mo, go, b"k" * 16, 2, 16) is None
    assert mk.object_heads(pkts, 32) is None
    assert mk.verify_objects(pkts[:5], mo[:5], go[:5], b"k" * 16, 2, 16) is None  # < MIN_ROWS


def test_object_heads_and_row_compares_equal_numpy() -> None:
    rng = random.Random(9)
    pkts = [rng.randbytes(rng.randrange(0, 300)) for _ in range(300)]
    got = mk.object_heads(pkts, 128)
    assert got is not None
    rows, lens = got
    for k, p in enumerate(pkts):
        assert lens[k] == len(p) and rows[k].tobytes() == p[:128].ljust(128, b"\0")
    rows[::3, :8] = rows[0, :8]  # some rows equal in the compared columns
    cols = np.array([0, 1, 2, 5, 7], dtype=np.intp)
    left = np.array([rng.random() < 0.9 for _ in pkts])
    want = (rows[:, cols] == rows[0, cols]).all(axis=1) & (lens >= 20) & left
    assert (mk.match_columns(rows, cols, 0, lens, 20, left) == want).all()
    value = rows[3, 2:10].copy()
    assert (mk.rows_equal(rows[:, 2:10], value) == (rows[:, 2:10] == value).all(axis=1)).all()
    assert want.sum() > 50


def test_hmac_kernel_digest_of_random_keys_and_lengths_matches_hashlib_loop() -> None:
    # one larger run, as the receiver feeds it (thousands of rows, one key)
    key = os.urandom(32)
    pkts = [os.urandom(random.Random(k).randrange(1, 1500)) for k in range(3000)]
    pb = PackedBatch(pkts)
    out = mk.hmac_rows(pb.buf, pb.starts, pb.lens, key, 2)
    assert out is not None
    ref = np.frombuffer(b"".join(hmac.digest(key, p, "sha256") for p in pkts), np.uint8)
    assert (out.reshape(-1) == ref).all()


def test_lengths_and_copy_into_pack_like_bytes_join() -> None:
    rng = random.Random(12)
    pkts = [rng.randbytes(rng.randrange(0, 2000)) for _ in range(50)]
    held = mk.lengths_of(pkts)
    assert held is not None
    assert held.lens.tolist() == [len(p) for p in pkts]
    dst = np.zeros(sum(map(len, pkts)) + 30, dtype=np.uint8)
    starts = np.cumsum(held.lens) - held.lens + 7
    held.copy_into(dst, starts)
    assert dst[7 : 7 + sum(map(len, pkts))].tobytes() == b"".join(pkts)
    assert not dst[:7].any() and not dst[7 + sum(map(len, pkts)) :].any()
    bad = starts.copy()
    bad[-1] = dst.size - held.lens[-1] + 1  # one octet past the end: refused, nothing written
    with pytest.raises(ValueError):
        held.copy_into(np.zeros_like(dst), bad)
    with pytest.raises(ValueError):
        held.copy_into(np.frombuffer(bytes(dst.size), dtype=np.uint8), starts)  # read-only
    assert mk.lengths_of([*pkts[:10], memoryview(b"x")]) is None


def test_warm_up_loads_every_loop() -> None:
    assert mk.warm_up(2)
    assert "par" in mk._load()
