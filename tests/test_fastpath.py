"""tesla.core.receiver: the one receiver decides exactly as the scalar model of RFC 5776 §4.3
(tests/tesla_oracle.py) -- same random mixes of valid, forged, unsafe, replayed, malformed,
duplicated, reordered datagrams, ALC and NORM, batches of 1 to 1024, with the MAC kernel
and without -- the lane's layout classes locate EXT_AUTH as the codec walk does, and
tesla.mac.batch.sign_batch equals wrap()."""

from __future__ import annotations

import os
import random
import struct
from typing import Any

import numpy as np
import pytest
from tesla_oracle import OracleReceiver

from alc.mmsg import Slab
from tesla.cli.bench import T0, make_sender, make_stream, raw_packet, tag_overhead
from tesla.core.receiver import TeslaReceiver
from tesla.mac.batch import PackedBatch, Scratch, sign_batch, split_packed

KEY_HOLDER: dict[str, Any] = {}


@pytest.fixture(autouse=True, params=["kernel", "py-copy"])
def mac_kernel(request: pytest.FixtureRequest) -> Any:
    """Every test runs with the compiled MAC kernel and with the py-copy fallback."""
    from tesla.mac import kernel as mackernel

    if request.param == "kernel":
        assert mackernel.available(), mackernel.why_unavailable()
    mackernel.set_enabled(request.param == "kernel")
    yield request.param
    mackernel.set_enabled(True)


def _pub() -> Any:
    from tesla.cli import bench as benchcmd

    return benchcmd._key().public_key()


def _compare(ref: OracleReceiver, fast: TeslaReceiver) -> None:
    r1, r2 = ref.pop_authenticated(), fast.pop_authenticated()
    assert r1 == r2
    s1, s2 = dict(ref.stats), dict(fast.stats)
    # the warm arena pages the receiver keeps charged (a memory detail of its storage,
    # shed before any decision needs their room) are not the model's
    s2["buffered_bytes"] -= s2.get("warm_bytes", 0)
    for k in sorted(set(s1) | set(s2)):
        if k.startswith(("drop.", "discard.", "tesla.")) or k in ("accepted", "buffered_bytes"):
            assert s1.get(k, 0) == s2.get(k, 0), k
    assert ref.pending_intervals() == fast.pending_intervals()


def _mutate(
    stream: list[tuple[float, bytes]], rng: random.Random, kp: int
) -> list[tuple[float, bytes]]:
    """Random mix: bit flips anywhere, late (unsafe) arrivals, truncations, replays of
    earlier packets (some after their key is out), forged disclosed keys, extra
    extensions before the EXT_AUTH, future-interval tags, other-ASID EXT_AUTHs."""
    out: list[tuple[float, bytes]] = [(t + 0.001, b) for t, b in stream[:3]]  # bootstraps
    for t, b in stream[3:]:
        r = rng.random()
        a = t + rng.uniform(0.0005, 0.004)
        if r < 0.04:
            bb = bytearray(b)
            bb[rng.randrange(len(bb))] ^= 1 << rng.randrange(8)
            b = bytes(bb)
        elif r < 0.07:
            a = t + rng.uniform(0.1, 0.5)
        elif r < 0.09:
            b = b[: rng.randrange(len(b))]
        elif r < 0.12 and out:
            out.append((a + rng.uniform(0, 0.4), out[rng.randrange(len(out))][1]))
        elif r < 0.14 and b[0] >> 4 == 1 and len(b) > 60:
            # forge the disclosed key of an ALC Type 1 tag (EXT_AUTH right after 16 octets)
            off = 16
            if b[off] == 1 and b[off + 2] & 15 == 1:
                bb = bytearray(b)
                bb[off + 8 + rng.randrange(kp)] ^= 0x55
                b = bytes(bb)
        elif r < 0.15:
            a = t - 0.35  # tag from an interval the sender cannot have reached
        out.append((a, b))
    out.sort(key=lambda x: x[0])
    return out


def _feed(
    pk: list[tuple[float, bytes]], rng: random.Random, verify_threads: int = 1, **kw: Any
) -> tuple[OracleReceiver, TeslaReceiver]:
    ref = OracleReceiver(_pub(), max_clock_error_ms=20, **kw)
    fast = TeslaReceiver(
        _pub(), max_clock_error_ms=20, verify_threads=verify_threads, **kw
    )
    for k, (a, b) in enumerate(pk):
        ref.receive(b, a, k)
    k = 0
    while k < len(pk):
        m = rng.choice([1, 2, 7, 64, 300, 1024])
        ch = pk[k : k + m]
        fast.receive_batch([b for _, b in ch], np.array([a for a, _ in ch]), list(range(k, k + m)))
        k += m
    return ref, fast


@pytest.mark.parametrize("protocol", ["alc", "norm"])
@pytest.mark.parametrize("group", [False, True])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_same_decisions_as_reference(protocol: str, group: bool, seed: int) -> None:
    rng = random.Random(seed)
    gk = os.urandom(16) if group else None
    snd = make_sender(
        2 if seed != 3 else 0,
        protocol=protocol,
        n_chain=9,  # chain switches: Type 3 and Type 4 tags, commitments, flushes
        group_key=gk,
        disclose_every=rng.choice([1, 3]),
    )
    size = rng.choice([120, 400, 1400])
    stream = make_stream(snd, 30, 30, size, seed=seed)
    pk = _mutate(stream, rng, snd.params.key_len)
    ref, fast = _feed(pk, rng, protocol=protocol, group_key=gk)
    assert ref.stats["accepted"] > 300
    _compare(ref, fast)


def _count_jobs(mk: Any, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """A list that gets one item per interval verified in native threads of its own
    (:func:`tesla.mac.kernel.verify_arena_task`), with their number."""
    jobs: list[int] = []
    real = mk.verify_arena_task

    def counted(*a: Any) -> Any:
        got = real(*a)
        if got is not None:
            jobs.append(a[-1])
        return got

    monkeypatch.setattr(mk, "verify_arena_task", counted)
    return jobs


@pytest.mark.parametrize("protocol", ["alc", "norm"])
def test_same_decisions_with_verify_threads(
    protocol: str, mac_kernel: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Intervals shared among 3 threads (uneven row ranges) decide as the oracle."""
    import tesla.core.receiver as tr
    import tesla.mac.kernel as mk

    monkeypatch.setattr(tr, "POOL_MIN_PACKETS", 16)
    jobs = _count_jobs(mk, monkeypatch)
    rng = random.Random(11)
    snd = make_sender(2, protocol=protocol, n_chain=9, disclose_every=3)
    pk = _mutate(make_stream(snd, 20, 80, 400, seed=11), rng, snd.params.key_len)
    ref, fast = _feed(pk, rng, verify_threads=3, protocol=protocol)
    assert ref.stats["accepted"] > 800
    assert not jobs  # small intervals: shared among threads, synchronously
    _compare(ref, fast)


@pytest.mark.parametrize("protocol", ["alc", "norm"])
def test_background_verification_releases_in_order_without_waiting(
    protocol: str, mac_kernel: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """verify_threads 2 with the kernel: intervals verified in a background thread while
    batches go on; a driver taking what is ready after each batch (has_authenticated,
    pop_authenticated_lists(wait=False), as AuthenticatedReceiver does) gets, in all,
    exactly the oracle's datagrams in its order, and the same counters."""
    import tesla.core.receiver as tr
    import tesla.mac.kernel as mk

    monkeypatch.setattr(tr, "POOL_MIN_PACKETS", 8)
    monkeypatch.setattr(tr, "BACKGROUND_MIN_OCTETS", 1)
    jobs = _count_jobs(mk, monkeypatch)
    rng = random.Random(12)
    snd = make_sender(2, protocol=protocol, n_chain=9, disclose_every=5)
    pk = _mutate(make_stream(snd, 16, 90, 300, seed=12), rng, snd.params.key_len)
    ref = OracleReceiver(_pub(), max_clock_error_ms=20, protocol=protocol)
    fast = TeslaReceiver(_pub(), max_clock_error_ms=20, protocol=protocol, verify_threads=2)
    for k, (a, b) in enumerate(pk):
        ref.receive(b, a, k)
    got: list[tuple[bytes, Any]] = []
    k = 0
    while k < len(pk):
        m = rng.choice([7, 64, 300])
        ch = pk[k : k + m]
        fast.receive_batch([b for _, b in ch], np.array([a for a, _ in ch]), list(range(k, k + m)))
        if fast.has_authenticated:
            d, meta = fast.pop_authenticated_lists(wait=False)
            got += zip(d, meta, strict=True)
        k += m
    fast.flush()
    got += fast.pop_authenticated()
    want = ref.pop_authenticated()
    assert len(want) > 500 and got == want
    assert bool(jobs) == (mac_kernel == "kernel")  # native threads started per interval
    _compare(ref, fast)


@pytest.mark.parametrize("protocol", ["alc", "norm"])
@pytest.mark.parametrize("how", ["clean", "mutated", "lossy"])
@pytest.mark.parametrize("threads", [1, 2])
def test_released_as_arena_rows_decides_as_reference(
    protocol: str, how: str, threads: int, mac_kernel: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """release_rows (what AuthenticatedReceiver sets before an ALC engine): the rows of
    each verified interval's arena, read before released_done(), are exactly the
    oracle's datagrams and metas in its order; same counters; after released_done()
    the rows refuse to be read, and their arenas' storage is reused."""
    import tesla.core.receiver as tr

    if threads > 1:
        monkeypatch.setattr(tr, "POOL_MIN_PACKETS", 8)
        monkeypatch.setattr(tr, "BACKGROUND_MIN_OCTETS", 1)
    rng = random.Random(len(how) * 7 + threads)
    snd = make_sender(2, protocol=protocol, n_chain=9, disclose_every=rng.choice([1, 3]))
    stream = make_stream(snd, 20, 60, rng.choice([120, 700, 1400]), seed=3)
    if how == "mutated":
        stream = _mutate(stream, rng, snd.params.key_len)
    elif how == "lossy":
        stream = stream[:3] + [x for x in stream[3:] if rng.random() >= 0.2]
    ref = OracleReceiver(_pub(), max_clock_error_ms=20, protocol=protocol)
    fast = TeslaReceiver(
        _pub(), max_clock_error_ms=20, protocol=protocol, verify_threads=threads
    )
    fast.release_rows = True
    for k, (a, b) in enumerate(stream):
        ref.receive(b, a, k)
    got: list[tuple[bytes, Any]] = []
    lent: list[Any] = []
    k = 0
    while k < len(stream):
        m = rng.choice([1, 7, 64, 300, 1024])
        ch = stream[k : k + m]
        fast.receive_batch([b for _, b in ch], np.array([a for a, _ in ch]), list(range(k, k + m)))
        if fast.has_authenticated:
            for rows, metas in fast.pop_released(wait=False):
                got += zip(list(rows), metas, strict=True)
                lent.append(rows)
            fast.released_done()
        k += m
    fast.flush()
    for rows, metas in fast.pop_released():
        got += zip(list(rows), metas, strict=True)
        lent.append(rows)
    fast.released_done()
    want = ref.pop_authenticated()
    assert len(want) > 300 and got == want
    assert lent and all(r.buf is None for r in lent)
    with pytest.raises(ValueError):
        lent[0][0]
    _compare(ref, fast)


@pytest.mark.parametrize("protocol", ["alc", "norm"])
@pytest.mark.parametrize("loss", [0.05, 0.3])
def test_same_decisions_on_lossy_reordered_streams(protocol: str, loss: float) -> None:
    """Datagrams lost (key disclosures too: keys derived later from a newer one, or never
    when a whole tail is lost) and locally reordered, in batches of 1 to 1024."""
    rng = random.Random(int(loss * 100) + len(protocol))
    snd = make_sender(2, protocol=protocol, n_chain=9, disclose_every=rng.choice([1, 3]))
    stream = make_stream(snd, 25, 40, 300, seed=7)
    kept = stream[:3] + [x for x in stream[3:] if rng.random() >= loss]
    pk = [(t + rng.uniform(0.0, 0.003), d) for t, d in kept]  # jitter reorders neighbours
    pk.sort(key=lambda x: x[0])
    ref, fast = _feed(pk, rng, protocol=protocol)
    assert ref.stats["accepted"] > 300
    _compare(ref, fast)


@pytest.mark.parametrize("protocol", ["alc", "norm"])
def test_headers_longer_than_the_lane_prefix(protocol: str) -> None:
    """Datagrams whose header extensions run past the lane's packed prefix (HDR_LEN up to
    ~250 octets: EXT_NOPs appended to the extension area, so their MAC fails), mixed
    with genuine ones: the lane never compares columns outside its rows, and every
    decision equals the oracle's."""
    from tesla.core.authenticator import HDR_LEN_OFFSET
    from tesla.core.receiver import LANE_PREFIX

    rng = random.Random(17)
    snd = make_sender(2, protocol=protocol, n_chain=9, disclose_every=3)
    stream = make_stream(snd, 10, 60, 400, seed=17)
    hb = HDR_LEN_OFFSET[protocol]
    out = list(stream[:3])
    for t, b in stream[3:]:
        if rng.random() < 0.5:
            h = b[hb] * 4
            pad = bytes([0, 1, 0, 0]) * rng.choice([8, 20, 40])  # EXT_NOP, HEL 1
            nb = bytearray(b[:h]) + pad + b[h:]  # after the EXT_AUTH: MAC now fails
            nb[hb] = min(255, nb[hb] + len(pad) // 4)
            b = bytes(nb)
        out.append((t + 0.001, b))
    assert any(x[1][hb] * 4 > LANE_PREFIX for x in out)
    ref, fast = _feed(out, rng, protocol=protocol)
    _compare(ref, fast)
    assert ref.stats["drop.bad_mac"] > 100 and ref.stats["accepted"] > 100


def test_same_decisions_under_tight_memory_bound() -> None:
    rng = random.Random(7)
    snd = make_sender(2)
    stream = make_stream(snd, 12, 60, 600)
    pk = _mutate(stream, rng, 32)
    ref, fast = _feed(pk, rng, max_buffered_bytes=40_000, max_packets_per_interval=45)
    assert ref.stats["drop.evicted"] > 0
    _compare(ref, fast)


def test_same_decisions_with_early_discard_and_no_bootstrap_prefix() -> None:
    rng = random.Random(8)
    snd = make_sender(2)
    stream = make_stream(snd, 8, 40, 300)
    # untagged datagrams are malformed; a tagged one before the bootstrap: no_bootstrap
    pre = [(T0 - 0.001, raw_packet("alc", 100, k, rng)) for k in range(3)]
    boots = stream[:3]
    data = stream[3:]
    pk = pre + [data[0]] + boots + data[1:]
    ed = lambda d: d[-1] & 1 == 1  # noqa: E731  (drop about half the data packets)
    ref, fast = _feed(pk, rng, early_discard=ed)
    assert ref.stats["drop.no_bootstrap"] == 1
    assert ref.stats["drop.malformed"] >= 3
    assert ref.stats.get("discard.early", 0) > 0
    _compare(ref, fast)


@pytest.mark.parametrize("size,every", [(1400, 1), (64, 64), (400, 3)])
@pytest.mark.parametrize("mutate", [False, True])
def test_uniform_lane_takes_clean_streams_and_decides_as_reference(
    size: int, every: int, mutate: bool, mac_kernel: str
) -> None:
    """The lane buffers almost every datagram of a clean stream -- Type 1, 2 and 3 tags
    (n_chain 9: commitments of the next chain, chain switches) -- and with damaged,
    late and replayed datagrams mixed in, it still decides exactly as the reference:
    the native lane (tesla/mac/_mac.c ``lane``, layout classes learned by the codec walk)
    with the kernel, the numpy lane (TeslaReceiver._lane) without."""
    rng = random.Random(size + mutate)
    snd = make_sender(2, n_chain=9, disclose_every=every)
    stream = make_stream(snd, 25, 120, size, seed=size)
    pk = _mutate(stream, rng, snd.params.key_len) if mutate else stream
    ref, fast = _feed(pk, rng)
    _compare(ref, fast)
    acc = ref.stats["accepted"]
    assert acc > 2000
    # with damage mixed in, misses in a row rest the lane for a few datagrams
    assert fast.lane_packets > (0.05 if mutate else 0.9) * acc, (fast.lane_packets, acc)
    assert bool(fast._cls) == (mac_kernel == "kernel")  # which lane took them


@pytest.mark.parametrize("protocol", ["norm", "alc"])
def test_cc_hint_sees_what_the_reference_shows_it(protocol: str) -> None:
    """RFC 5776 §4.3 step 5: with a congestion-control hint set, the batch receiver calls
    it for exactly the datagrams, times and order of the reference."""
    rng = random.Random(21)
    snd = make_sender(2, protocol=protocol)
    stream = make_stream(snd, 6, 40, 300)
    pk = _mutate(stream, rng, snd.params.key_len)
    seen: dict[str, list[tuple[bytes, float]]] = {"ref": [], "fast": []}
    ref = OracleReceiver(_pub(), max_clock_error_ms=20, protocol=protocol)
    fast = TeslaReceiver(_pub(), max_clock_error_ms=20, protocol=protocol)
    ref.cc_hint = lambda d, t: seen["ref"].append((d, t))
    fast.cc_hint = lambda d, t: seen["fast"].append((d, t))
    for a, b in pk:
        ref.receive(b, a)
    for k in range(0, len(pk), 64):
        ch = pk[k : k + 64]
        fast.receive_batch([b for _, b in ch], np.array([a for a, _ in ch]))
    assert len(seen["ref"]) > 100
    assert seen["fast"] == seen["ref"]
    assert fast.lane_packets > 50  # the lane calls the hint itself
    _compare(ref, fast)


def test_lane_multi_interval_batches_and_tight_bounds() -> None:
    """Batches spanning interval boundaries with a small per-interval limit and buffer
    bound: the lane stops where the reference would evict."""
    rng = random.Random(11)
    snd = make_sender(2, n_chain=9)
    stream = make_stream(snd, 12, 80, 300, spread=1.0)
    ref, fast = _feed(stream, rng, max_buffered_bytes=60_000, max_packets_per_interval=70)
    assert ref.stats["drop.evicted"] > 0
    assert fast.lane_packets > 0
    _compare(ref, fast)


@pytest.mark.parametrize("seed", [1, 2])
def test_lane_type3_forged_commitments_decide_as_reference(seed: int) -> None:
    """Type 3 datagrams (next chain's commitment) in lane runs, some with a forged
    commitment (their MAC then fails), the first of a run among them: only the genuine
    commitment is taken (the native lane tells the Python side which rows carry the
    first row's commitment; a wrong "all equal" would take the forged one), decisions
    and releases as the reference's across the chain switches."""
    rng = random.Random(seed)
    snd = make_sender(2, n_chain=9)
    kp = snd.params.key_len
    stream = make_stream(snd, 40, 60, 200, seed=seed, spread=1.0)
    out, forged = [], 0
    for t, b in stream:
        off = 16  # ALC: EXT_AUTH right after 16 octets
        if len(b) > 60 and b[0] >> 4 == 1 and b[off] == 1 and b[off + 2] & 15 == 3:
            if rng.random() < 0.3:
                bb = bytearray(b)
                bb[off + 8 + rng.randrange(kp)] ^= 0x20
                b = bytes(bb)
                forged += 1
        out.append((t, b))
    assert forged > 20
    ref, fast = _feed(out, random.Random(seed + 10))
    assert fast.lane_packets > 0 and ref.stats["drop.bad_mac"] >= forged
    _compare(ref, fast)


@pytest.mark.parametrize("protocol", ["alc", "norm"])
def test_receive_slab_matches_reference(protocol: str, mac_kernel: str) -> None:
    snd = make_sender(2, protocol=protocol)
    stream = make_stream(snd, 5, 50, 500)
    ref = OracleReceiver(_pub(), max_clock_error_ms=20, protocol=protocol)
    fast = TeslaReceiver(_pub(), max_clock_error_ms=20, protocol=protocol)
    slab = Slab(rows=64, width=1500)
    for k in range(0, len(stream), 64):
        ch = stream[k : k + 64]
        for j, (a, b) in enumerate(ch):
            slab.data[j, : len(b)] = np.frombuffer(b, np.uint8)
            slab.lengths[j] = len(b)
            slab.stamps[j] = a
            ref.receive(b, a)
        slab.count = len(ch)
        fast.receive_slab(slab)
    assert ref.stats["accepted"] >= 250
    assert fast.lane_packets > 0.8 * ref.stats["accepted"]
    assert bool(fast._cls) == (mac_kernel == "kernel")  # the native lane reads the slab rows
    _compare(ref, fast)


def _oracle_locate(data: bytes, asid: int, protocol: str = "alc") -> int:
    from alc.errors import DecodeError

    rx = OracleReceiver(_pub(), asid=asid, protocol=protocol)
    try:
        return rx._locate(data)
    except DecodeError:
        return -1


def _fuzzed_headers(protocol: str, rng: random.Random) -> list[bytes]:
    """Valid datagrams, copies with header octets changed (flags, HDR_LEN, type, flavour,
    FEC ID, HET/HEL, ASID/Type) and truncated, extra extensions before the EXT_AUTH,
    other ASIDs, two of ours."""
    snd = make_sender(2, protocol=protocol, n_chain=9, disclose_every=3)
    base = [b for _, b in make_stream(snd, 6, 12, 200)]
    pkts: list[bytes] = []
    for b in base:
        pkts.append(b)
        for _ in range(4):
            bb = bytearray(b)
            for _ in range(rng.randrange(1, 4)):
                pos = rng.choice([0, 1, 2, 12, 13, rng.randrange(min(len(bb), 90))])
                bb[pos] = rng.choice([rng.randrange(256), 0x13, 0x12, 1, 3, 5, 129, 2])
            pkts.append(bytes(bb[: rng.choice([len(bb), rng.randrange(len(bb) + 1)])]))
    if protocol == "alc":
        nop = bytes([0, 1, 0, 0])
        fixed = bytes([200, 1, 2, 3])
        other = bytes([1, 2, 0x50 | 1, 0, 0, 0, 0, 0])
        for b in base[:10]:
            h = b[2] * 4
            for ext in (nop, fixed, other, nop + fixed, b[16:h]):
                nb = bytearray(b[:16]) + ext + b[16:]
                nb[2] += len(ext) // 4
                pkts.append(bytes(nb))
    return pkts


@pytest.mark.parametrize("protocol", ["alc", "norm"])
@pytest.mark.parametrize("asid", [0, 5])
def test_layout_classes_locate_as_the_codec_walk(protocol: str, asid: int) -> None:
    """The receiver's EXT_AUTH locator (codec extension area + walk) equals the oracle's
    own walk on fuzzed headers; and the lane's layout classes hold: a datagram agreeing
    with a walked one on the layout octets and covering its header end is located at the
    same offset (the vectorized twin is exact)."""
    rng = random.Random(5 + asid)
    rx = TeslaReceiver(_pub(), asid=asid, protocol=protocol)
    checked = 0
    for p in _fuzzed_headers(protocol, rng):
        want = _oracle_locate(p, asid, protocol)
        walk = rx._locate_layout(p)
        if walk is None:
            assert want == -1
            continue
        found, end, cols = walk
        assert found == want
        for _ in range(4):  # change only octets the layout does not depend on
            q = bytearray(p)
            free = [j for j in range(len(q)) if j not in cols]
            for j in rng.sample(free, min(4, len(free))):
                q[j] = rng.randrange(256)
            q = q[: rng.choice([len(q), end, max(end, len(q) - 1)])]
            assert _oracle_locate(bytes(q), asid, protocol) == found
            checked += 1
    assert checked > (100 if asid == 0 else -1)


@pytest.mark.parametrize("protocol", ["alc", "norm"])
@pytest.mark.parametrize("group", [False, True])
def test_sign_batch_equals_wrap(protocol: str, group: bool) -> None:
    rng = random.Random(3)
    gk = os.urandom(16) if group else None
    a = make_sender(2, protocol=protocol, n_chain=20, group_key=gk, disclose_every=3)
    b = make_sender(2, protocol=protocol, n_chain=20, group_key=gk, disclose_every=3)
    b.chains = a.chains  # same keys
    body = 300 - tag_overhead(a)
    scratch = Scratch()
    for j in range(25):  # intervals across a chain switch (Type 3 / Type 4 tags)
        now = T0 + j * 0.1 + 0.05
        raws = [raw_packet(protocol, body + rng.choice([0, 0, 4, 100]), k, rng) for k in range(9)]
        if j % 5 == 4:  # one layout: the 2-D path
            raws = [raw_packet(protocol, body, k, rng) for k in range(9)]
        want = [a.wrap(r, now) for r in raws]
        # odd intervals into a reused (dirty, longer) scratch buffer
        buf, st, ln = sign_batch(b, raws, now, scratch if j % 2 else None)
        assert split_packed(buf, st, ln) == want
    assert a.stats["tesla.tagged"] == b.stats["tesla.tagged"]


def test_sign_batch_output_verifies() -> None:
    snd = make_sender(2)
    ref = TeslaReceiver(_pub(), max_clock_error_ms=20)
    for b in snd.control_packets(T0 + 1e-4):
        ref.receive(b, T0 + 0.001)
    rng = random.Random(1)
    n = 0
    for j in range(6):
        now = T0 + j * 0.1 + 0.05
        buf, st, ln = sign_batch(snd, [raw_packet("alc", 500, k, rng) for k in range(50)], now)
        for p in split_packed(buf, st, ln):
            ref.receive(p, now + 0.001)
            n += 1
    assert ref.stats["accepted"] == n - 100  # the last d intervals await their key
    assert ref.stats["drop.bad_mac"] == 0


def test_packed_batch_layout() -> None:
    pkts = [b"abc", b"", b"defgh"]
    pb = PackedBatch(pkts)
    assert pb.starts.tolist() == [0, 3, 3] and pb.lens.tolist() == [3, 0, 5]
    assert bytes(pb.buf[:8]) == b"abcdefgh"
    assert struct.unpack("!Q", bytes(pb.buf[8:16]))[0] == 0


@pytest.mark.parametrize("layout", ["uniform", "mixed", "gapped", "overlapping"])
@pytest.mark.parametrize("mac_id,name", [(2, "sha256"), (0, "sha1")])
def test_mac_rows_is_standard_hmac(layout: str, mac_id: int, name: str) -> None:
    """The batch MAC kernel computes plain HMAC (hmac.digest) of each row, for every
    row layout it cuts differently (pieces of SPLIT_BYTES, tails, gaps, memoryview path)."""
    import hmac

    from tesla.mac.batch import SPLIT_BYTES, mac_rows

    rng = random.Random(layout)
    n = 3 * SPLIT_BYTES // 600 + 7  # several pieces in every layout
    key = rng.randbytes(32)
    if layout == "uniform":
        lens = [1400] * n
    else:
        lens = [rng.choice([64, 76, 1400, 1400, 1400, 0, 1]) for _ in range(n)]
    gaps = [rng.randrange(0, 9) if layout == "gapped" else 0 for _ in range(n)]
    starts, pos = [], 3
    for g, ln in zip(gaps, lens, strict=True):
        pos += g
        starts.append(pos)
        pos += ln
    if layout == "overlapping":  # rows out of order: the memoryview path
        starts[5], starts[6] = starts[6], starts[5]
        lens[5], lens[6] = lens[6], lens[5]
    buf = bytearray(rng.randbytes(pos + 5))
    got = mac_rows(buf, starts, lens, key, mac_id)
    want = b"".join(
        hmac.digest(key, bytes(buf[s : s + ln]), name) for s, ln in zip(starts, lens, strict=True)
    )
    assert got == want


# ---------------------------------------------------------------------------- NORM lane
def _norm_stream(
    snd: Any, n_intervals: int, per_interval: int, size: int, sources: int, seed: int
) -> list[tuple[float, bytes]]:
    """Like ``make_stream`` for NORM, the datagrams spread over ``sources`` NORM
    source_ids (the wrapper's sequence numbers are one counter over all of them)."""
    rng = random.Random(seed)
    tint = snd.params.tint_ms / 1000.0
    body = max(24, size - tag_overhead(snd))
    out: list[tuple[float, bytes]] = [
        (T0 + 1e-4 + 0.001, b) for b in snd.control_packets(T0 + 1e-4)
    ]
    k = 0
    for j in range(n_intervals):
        for q in range(per_interval):
            t = T0 + j * tint + (q + 0.5) * tint * 0.05 / (per_interval + 1)
            raw = raw_packet("norm", body, k, rng)
            src = 1 + rng.randrange(sources)
            raw = raw[:4] + src.to_bytes(4, "big") + raw[8:]
            out.append((t + 0.001, snd.wrap(raw, t)))
            k += 1
    for j in range(n_intervals, n_intervals + snd.params.d + 1):
        t = T0 + (j + 0.5) * tint
        out.append((t + 0.001, snd.key_disclosure_packet(t)))
    return out


def _with_replays(
    stream: list[tuple[float, bytes]], rng: random.Random, rate: float
) -> list[tuple[float, bytes]]:
    """Copies of earlier datagrams: right after the original (same interval: a
    duplicate at verification) or up to a few intervals later (a NORM replay once the
    original's interval is verified)."""
    out = list(stream)
    for t, b in stream[3:]:
        if rng.random() < rate:
            out.append((t + rng.choice([1e-5, rng.uniform(0.0, 0.4)]), b))
        if rng.random() < rate:
            # a safe copy with an older NORM sequence number (within the replay window
            # or beyond it, seen or not): replay-tested before the MAC, which then fails
            q = (int.from_bytes(b[2:4], "big") - rng.choice([1, 2, 50, 300, 5000])) & 0xFFFF
            out.append((t + 1e-5, b[:2] + q.to_bytes(2, "big") + b[4:]))
    out.sort(key=lambda x: x[0])
    return out


@pytest.mark.parametrize("size,every,sources", [(1400, 1, 1), (64, 64, 1), (400, 3, 3)])
@pytest.mark.parametrize("mutate", [False, True])
def test_norm_lane_takes_clean_streams_and_decides_as_reference(
    size: int, every: int, sources: int, mutate: bool
) -> None:
    """The NORM lane (TeslaReceiver._lane) buffers almost every datagram of a
    clean NORM stream -- Type 1, 2 and 3/4 tags over chain switches, one or several NORM
    sources -- and with damaged, late and replayed datagrams mixed in it decides exactly
    as the reference (whose NORM path is the full one, replay test included)."""
    rng = random.Random(size + mutate + 100)
    snd = make_sender(2, protocol="norm", n_chain=9, disclose_every=every)
    stream = _norm_stream(snd, 25, 120, size, sources, seed=size)
    pk = _mutate(stream, rng, snd.params.key_len) if mutate else stream
    ref, fast = _feed(pk, rng, protocol="norm")
    _compare(ref, fast)
    acc = ref.stats["accepted"]
    assert acc > 2000
    assert fast.lane_packets > (0.05 if mutate else 0.9) * acc, (fast.lane_packets, acc)
    assert ref._seq_hi == fast._seq_hi and ref._seq_seen == fast._seq_seen


@pytest.mark.parametrize("sources", [1, 4])
@pytest.mark.parametrize("seed", [1, 2])
def test_norm_lane_replays_and_duplicates(sources: int, seed: int) -> None:
    """Copies of earlier datagrams (same interval: duplicates; later: NORM replays and
    unsafe late copies) in batches of 1 to 1024: same decisions and replay state."""
    rng = random.Random(seed)
    snd = make_sender(2, protocol="norm", n_chain=9, disclose_every=rng.choice([1, 3]))
    stream = _norm_stream(snd, 20, 150, 300, sources, seed=seed)
    pk = _with_replays(stream, rng, 0.05)
    ref, fast = _feed(pk, rng, protocol="norm")
    _compare(ref, fast)
    st = ref.stats
    assert st["drop.replay"] > 10 and st["drop.duplicate"] > 10, st
    assert st["drop.bad_mac"] > 10, st
    # a replay next to the first datagram of an interval (misses in a row) rests the lane
    assert fast.lane_packets > 0.1 * st["accepted"], (fast.lane_packets, st["accepted"])
    assert ref._seq_hi == fast._seq_hi and ref._seq_seen == fast._seq_seen


def test_norm_lane_tight_bounds_and_multi_interval_batches() -> None:
    rng = random.Random(12)
    snd = make_sender(2, protocol="norm", n_chain=9)
    stream = make_stream(snd, 12, 80, 300, spread=1.0)
    ref, fast = _feed(
        stream, rng, protocol="norm", max_buffered_bytes=60_000, max_packets_per_interval=70
    )
    assert ref.stats["drop.evicted"] > 0
    assert fast.lane_packets > 0
    _compare(ref, fast)


def test_norm_accept_many_equals_reference_loop() -> None:
    """_finish's bulk NORM replay-state update equals _norm_accept per datagram: rising
    runs across the seen-set bound (trims) and the 16-bit wrap, several sources,
    repeated and reordered sequence numbers, far-off ones (the loop), fewer than 8
    datagrams."""
    from tesla.core.receiver import NORM_SEQ_WINDOW

    rng = random.Random(4)
    a = TeslaReceiver(_pub(), protocol="norm")
    b = TeslaReceiver(_pub(), protocol="norm")
    seqs = {1: 65000, 2: 10, 3: 30000}
    for _ in range(60):
        n = rng.choice([3, 50, 700, 2 * NORM_SEQ_WINDOW + 5, 3000])
        srcs = rng.choice([[1], [1, 2], [1, 2, 3]])
        pkts = []
        for _ in range(n):
            src = rng.choice(srcs)
            r = rng.random()
            if r < 0.97:
                seqs[src] = (seqs[src] + rng.choice([1, 1, 1, 2, 5])) & 0xFFFF
                q = seqs[src]
            elif r < 0.985:
                q = seqs[src]  # repeated
            elif r < 0.998:
                q = (seqs[src] - rng.randrange(1, 9000)) & 0xFFFF  # older (reordered)
            else:
                q = (seqs[src] + rng.randrange(0x7000, 0x10000)) & 0xFFFF  # far off
            pkts.append(bytes([0x12, 5]) + q.to_bytes(2, "big") + src.to_bytes(4, "big"))
        keep = sorted(rng.sample(range(n), rng.randrange(1, n + 1)))
        nk = np.array(
            [(int.from_bytes(p[4:8], "big") << 16) | int.from_bytes(p[2:4], "big") for p in pkts],
            dtype=np.int64,
        )
        a._norm_accept_many(np.array(keep, dtype=np.int64), nk)
        for k in keep:
            b._norm_accept(int.from_bytes(pkts[k][4:8], "big"), int.from_bytes(pkts[k][2:4], "big"))
        assert a._seq_hi == b._seq_hi
        assert a._seq_seen == b._seq_seen


def _header_fuzz(
    stream: list[tuple[float, bytes]], rng: random.Random, rate: float
) -> list[tuple[float, bytes]]:
    """Damage aimed at what the lane reads: octets of the LCT/NORM header and EXT_AUTH
    (flags, HDR_LEN, HET/HEL, ASID/Type, interval index, key), truncations inside the
    header, and copies of whole datagrams with one header octet changed."""
    out = list(stream[:3])
    for t, b in stream[3:]:
        if rng.random() < rate:
            bb = bytearray(b)
            r = rng.random()
            if r < 0.6:
                for _ in range(rng.randint(1, 3)):
                    bb[rng.randrange(min(len(bb), 96))] = rng.randrange(256)
            elif r < 0.8:
                bb = bb[: rng.randrange(1, min(len(bb), 100))]
            else:
                out.append((t, b))
                bb[rng.randrange(min(len(bb), 96))] ^= 1 << rng.randrange(8)
            b = bytes(bb)
        out.append((t + 0.001, b))
    return out


@pytest.mark.parametrize("protocol", ["alc", "norm"])
@pytest.mark.parametrize("seed", [31, 32, 33, 34])
def test_header_fuzz_same_decisions_lists_and_stale_slabs(protocol: str, seed: int) -> None:
    """Header-targeted damage through the list path and through recvmmsg slabs whose
    rows hold stale octets of earlier, longer datagrams beyond each length: the batch
    receiver (lane and scalar path) decides exactly as the oracle."""
    rng = random.Random(seed)
    snd = make_sender(2, protocol=protocol, n_chain=9, disclose_every=rng.choice([1, 4]))
    stream = make_stream(snd, 20, 60, rng.choice([64, 300, 1400]), seed=seed)
    pk = _header_fuzz(stream, rng, 0.15)
    ref, fast = _feed(pk, rng, protocol=protocol)
    _compare(ref, fast)
    assert fast.lane_packets > 0
    # the same through slabs pre-filled with garbage
    slab_fast = TeslaReceiver(_pub(), max_clock_error_ms=20, protocol=protocol)
    slab = Slab(rows=128, width=1600)
    slab.data[:] = np.frombuffer(rng.randbytes(slab.data.size), np.uint8).reshape(
        slab.data.shape
    )
    k = 0
    while k < len(pk):
        ch = pk[k : k + rng.choice([1, 5, 64, 128])]
        for j, (a, b) in enumerate(ch):
            slab.data[j, : len(b)] = np.frombuffer(b, np.uint8)
            slab.lengths[j] = len(b)
            slab.stamps[j] = a
        slab.count = len(ch)
        slab_fast.receive_slab(slab)
        k += len(ch)
    ref2 = OracleReceiver(_pub(), max_clock_error_ms=20, protocol=protocol)
    for a, b in pk:
        ref2.receive(b, a)
    _compare(ref2, slab_fast)
    assert ref2.stats["accepted"] > 200


def test_authenticated_receiver_slab_entry_equals_list_entry() -> None:
    """tesla.core.session.AuthenticatedReceiver (ALC) declares the slab entry; fed a damaged
    stream through recvmmsg-style slabs it releases the same datagrams to the engine,
    with the same counters, as through the datagram-list entry."""
    from alc.engine import BatchEntry
    from tesla.core.session import AuthenticatedReceiver

    class Sink(BatchEntry):
        def __init__(self) -> None:
            self.stats: dict[str, int] = {}
            self.got: list[tuple[bytes, Any]] = []

        def receive_datagram(self, data: bytes, addr: Any, now: float) -> None:
            self.got.append((data, addr))

    rng = random.Random(8)
    snd = make_sender(2)
    pk = _mutate(make_stream(snd, 8, 90, 600), rng, snd.params.key_len)
    runs = []
    for use_slab in (True, False):
        sink = Sink()
        ar = AuthenticatedReceiver(TeslaReceiver(_pub(), max_clock_error_ms=20), sink)
        assert ar.takes_slab
        slab = Slab(rows=64, width=1600)
        for k in range(0, len(pk), 64):
            ch = pk[k : k + 64]
            addrs = [("127.0.0.1", 5000 + j) for j in range(len(ch))]
            if use_slab:
                for j, (a, b) in enumerate(ch):
                    slab.data[j, : len(b)] = np.frombuffer(b, np.uint8)
                    slab.lengths[j] = len(b)
                    slab.stamps[j] = a
                slab.count = len(ch)
                ar.receive_slab(slab, addrs)
            else:
                ar.receive_datagrams([b for _, b in ch], addrs, [a for a, _ in ch])
        runs.append((sink.got, {k: v for k, v in ar.stats.items() if k.startswith("drop.")}))
    assert len(runs[0][0]) > 300
    assert runs[0] == runs[1]


@pytest.mark.parametrize("protocol", ["alc", "norm"])
def test_batches_of_bytearrays_and_memoryviews_decide_as_bytes(protocol: str) -> None:
    """receive_batch takes any buffers (the native lane reads them, the scalar path
    converts what it takes): mixed bytes, bytearray and memoryview batches decide and
    release exactly as the oracle."""
    rng = random.Random(41)
    snd = make_sender(2, protocol=protocol, n_chain=9, disclose_every=4)
    pk = _mutate(make_stream(snd, 10, 70, 300, seed=41), rng, snd.params.key_len)
    ref = OracleReceiver(_pub(), max_clock_error_ms=20, protocol=protocol)
    fast = TeslaReceiver(_pub(), max_clock_error_ms=20, protocol=protocol)
    for k, (a, b) in enumerate(pk):
        ref.receive(b, a, k)
    kinds = [bytes, bytearray, lambda b: memoryview(bytearray(b))]
    for k in range(0, len(pk), 100):
        ch = pk[k : k + 100]
        batch = [rng.choice(kinds)(b) for _, b in ch]
        fast.receive_batch(batch, np.array([a for a, _ in ch]), list(range(k, k + len(ch))))
    assert ref.stats["accepted"] > 400
    assert fast.lane_packets > 0
    _compare(ref, fast)


def test_norm_more_than_half_the_sequence_space_in_flight() -> None:
    """At 1.6 Gbit/s with T_int 100 ms the d+1 intervals a receiver holds before their
    keys span more than 2^15 NORM messages: a new message's 16-bit sequence then reads
    as older than the highest accepted one.  It is not a replay (its interval is above
    every legitimate key, and i is under the MAC): every datagram is accepted, by the
    lane, and the reference decides the same (issue 11: 65k replay drops, then a
    repair storm, in a 100 MiB live transfer)."""
    rng = random.Random(5)
    snd = make_sender(2, protocol="norm", n_chain=50)
    per = 18_000  # two intervals in flight: 36k messages > 2^15
    stream = make_stream(snd, 5, per, 64, spread=0.9)
    ref, fast = _feed(stream, rng, protocol="norm")
    _compare(ref, fast)
    st = fast.stats
    assert st["accepted"] >= 5 * per, st
    assert st.get("drop.replay", 0) == 0, st
    assert fast.lane_packets > 0.9 * 5 * per, fast.lane_packets
