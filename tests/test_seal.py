"""The native sender path (``seal`` in tesla/mac/_mac.c, via :meth:`TeslaSender.wrap_many` and
:func:`tesla.mac.batch.sign_batch`) gives the same octets and sender state as the scalar
:meth:`TeslaSender.wrap` (EXT_AUTH inserted after the header, header length rewritten,
MAC over the datagram with the MAC field zero, RFC 5776 §3.3.1): ALC and NORM, every tag
kind (Type 1/2, Type 3/4 at chain switches, a key in only some packets), fuzzed header
lengths and payloads, bytes and memoryview inputs; bad headers are refused before any
state moves; the SHA-NI and OpenSSL EVP paths agree."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import pytest

from tesla.cli.bench import T0, make_sender, raw_packet
from tesla.mac import kernel as mk
from tesla.mac.batch import Scratch, sign_batch, split_packed

pytestmark = pytest.mark.skipif(
    mk.sealer(2) is None, reason=f"native kernel without seal: {mk.why_unavailable()}"
)


@pytest.fixture(autouse=True, params=["sha-ni", "evp"])
def _hash_path(request: pytest.FixtureRequest) -> Any:
    mod = mk._load()["mod"]
    if request.param == "evp":
        mod.set_sha_ni(False)
    elif not mod.set_sha_ni(True):
        pytest.skip("no SHA instructions on this CPU")
    yield
    mod.set_sha_ni(True)
    mk.set_enabled(True)


def _pair(protocol: str, disclose_every: int, mac: int = 2) -> tuple[Any, Any]:
    a = make_sender(mac, protocol=protocol, n_chain=20, disclose_every=disclose_every)
    b = make_sender(mac, protocol=protocol, n_chain=20, disclose_every=disclose_every)
    b.chains = a.chains  # same keys
    return a, b


def _fuzzed(protocol: str, rng: random.Random, k: int) -> bytes:
    """A datagram with a random header length (extra header words of random octets:
    the sender copies the header as it is) and a random payload length."""
    p = bytearray(raw_packet(protocol, rng.randrange(0, 1500), k, rng))
    hb = 2 if protocol == "alc" else 1
    extra = rng.choice([0, 0, 1, 5, 40])
    e = p[hb] * 4
    p[e:e] = rng.randbytes(4 * extra)
    p[hb] += extra
    return bytes(p)


@pytest.mark.parametrize("protocol", ["alc", "norm"])
@pytest.mark.parametrize("disclose_every", [1, 3])
@pytest.mark.parametrize("mac", [2, 0])
def test_wrap_many_equals_wrap(protocol: str, disclose_every: int, mac: int) -> None:
    rng = random.Random(disclose_every * 7 + mac)
    a, b = _pair(protocol, disclose_every, mac)
    for j in range(25):  # across a chain switch: Type 3 / Type 4 tags on odd counts
        now = T0 + j * 0.1 + 0.05
        for _ in range(2):  # two batches per interval: the counts carry over
            raws = [_fuzzed(protocol, rng, k) for k in range(rng.randrange(1, 12))]
            want = [a.wrap(r, now) for r in raws]
            got = b.wrap_many([memoryview(r) if k % 3 == 0 else r for k, r in enumerate(raws)], now)
            assert got == want
            assert all(type(x) is bytes for x in got)
    assert a.stats["tesla.tagged"] == b.stats["tesla.tagged"]
    assert a._seq == b._seq
    assert a._last_data_interval == b._last_data_interval


@pytest.mark.parametrize("protocol", ["alc", "norm"])
def test_sign_batch_equals_wrap_fuzzed(protocol: str) -> None:
    rng = random.Random(5)
    a, b = _pair(protocol, 1)
    scratch = Scratch()
    for j in range(25):
        now = T0 + j * 0.1 + 0.05
        raws = [_fuzzed(protocol, rng, k) for k in range(rng.randrange(1, 40))]
        want = [a.wrap(r, now) for r in raws]
        buf, st, ln = sign_batch(b, raws, now, scratch if j % 2 else None)
        assert split_packed(buf, st, ln) == want
        assert (st == np.cumsum(ln) - ln).all()


@pytest.mark.parametrize("protocol", ["alc", "norm"])
def test_bad_headers_refused_before_any_state_moves(protocol: str) -> None:
    hb = 2 if protocol == "alc" else 1
    _a, b = _pair(protocol, 1)
    now = T0 + 5.05
    good = raw_packet(protocol, 200, 0, random.Random(1))
    b.wrap_many([good], now)
    before = (b._cur.count, b._seq, dict(b.stats))
    too_long = bytearray(good)
    too_long[hb] = 200  # header longer than the datagram
    zero = bytearray(good)
    zero[hb] = 0
    full = bytearray(good) + bytes(1100)
    full[hb] = 250  # 250 words: the EXT_AUTH would push it past 255
    for bad in (bytes(too_long), bytes(zero), bytes(full), good[:hb]):
        with pytest.raises(ValueError):
            b.wrap_many([good, bad], now)
        with pytest.raises(ValueError):
            sign_batch(b, [good, bad], now)
        assert (b._cur.count, b._seq, dict(b.stats)) == before


def test_kernel_rows_and_short_output() -> None:
    """Packed mode: rows back to back from 0, their offsets and lengths returned; a short
    output buffer gets the size needed and is left untouched."""
    seal = mk.sealer(2)
    pkts = [bytes([16, 0, 2, 0]) + bytes(range(4, 8)) + bytes([k]) * (k + 3) for k in range(5)]
    pre = (bytes([1, 5, 2, 0, 0, 0, 0, 9]) + bytes(12),)
    st = np.empty(5, dtype=np.int64)
    ln = np.empty(5, dtype=np.int64)
    short = bytearray(b"\xaa" * 10)
    need = seal(2, b"k" * 16, pkts, 2, pre, bytes(5), 16, -1, short, st, ln)
    assert need == -sum(len(p) + 36 for p in pkts) and short == b"\xaa" * 10
    out = bytearray(-need + 7)
    assert seal(2, b"k" * 16, pkts, 2, pre, bytes(5), 16, -1, out, st, ln) == -need
    lst = seal(2, b"k" * 16, pkts, 2, pre, bytes(5), 16, -1, None, None, None)
    assert split_packed(out, st, ln) == lst
    assert (st == np.cumsum(ln) - ln).all() and out[-7:] == bytes(7)
