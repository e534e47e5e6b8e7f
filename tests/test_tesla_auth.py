"""Authenticated transfers in memory through the real engines:
AlcSender -> TeslaSender -> (loss, jitter) -> TeslaReceiver -> AlcReceiver, and the same
with NormSender/NormReceiver; plus unit checks of the wrapper and verifier."""

from __future__ import annotations

import heapq
import hmac
import os
import random
import struct
from typing import Any

import pytest

from alc.receiver import AlcReceiver, FileReceived, ReceiverConfig
from alc.sender import AlcSender, SenderConfig
from tesla.core import extauth as ea
from tesla.core.authenticator import PROTO_ALC, PROTO_NORM, ControlTemplate, TeslaSender
from tesla.core.bootstrap_sig import generate_private_key
from tesla.core.keychain import KeyChainSet
from tesla.core.ntp import posix_to_ntp
from tesla.core.params import TeslaParams
from tesla.core.receiver import DROP_REASONS, TeslaReceiver
from tesla.core.session import AuthenticatedReceiver, AuthenticatedSender, alc_early_discard

T_START = 1_800_000_000.0
KEY = generate_private_key(1024)
OTHER_KEY = generate_private_key(1024)


def make_params(**kw: Any) -> TeslaParams:
    base: dict[str, Any] = dict(t0_ntp=posix_to_ntp(T_START), tint_ms=100, n_chain=2000, d=2)
    base.update(kw)
    return TeslaParams(**base)


def run(
    sender: Any,
    receivers: list[Any],
    *,
    loss: float = 0.0,
    delay: float = 0.005,
    jitter: float = 0.02,
    seed: int = 1,
    t_end: float = 60.0,
    step: float = 0.002,
    until: Any = None,
) -> float:
    """Discrete-time loop: sender -> lossy/jittery links -> receivers (and back)."""
    rng = random.Random(seed)
    now = T_START
    q: list[tuple[float, int, int, bytes, Any]] = []  # (arrival, seq, dst, data, addr)
    n = 0
    while now < T_START + t_end:
        for data, _addr in sender.datagrams_to_send(now):
            for r in range(len(receivers)):
                if rng.random() >= loss:
                    n += 1
                    heapq.heappush(
                        q, (now + delay + rng.random() * jitter, n, r, data, ("10.0.0.1", 4000))
                    )
        for r, rx in enumerate(receivers):
            for data, _addr in rx.datagrams_to_send(now):
                if rng.random() >= loss:
                    n += 1
                    heapq.heappush(
                        q,
                        (
                            now + delay + rng.random() * jitter,
                            n,
                            -1 - r,
                            data,
                            (f"10.0.1.{r}", 4001),
                        ),
                    )
        while q and q[0][0] <= now:
            t, _, dst, data, addr = heapq.heappop(q)
            if dst >= 0:
                receivers[dst].receive_datagram(data, addr, t)
            else:
                sender.receive_datagram(data, addr, t)
        if until is not None and until():
            return now
        sender.handle_timer(now)
        for rx in receivers:
            rx.handle_timer(now)
        now += step
    return now


def alc_pair(
    data: dict[str, bytes],
    *,
    group_key: bytes | None = None,
    rate: float = 4e6,
    bootstrap_period: float = 2.0,
    **kw: Any,
):
    params = make_params(group_mac=group_key is not None, **kw)
    eng = AlcSender(
        SenderConfig(
            tsi=7, rate_bps=rate, fec="rs", repair_ratio=0.5, symbol_length=1000, carousel_rounds=2
        )
    )
    for name, blob in data.items():
        eng.add_bytes(blob, name)
    ts = TeslaSender(
        params,
        KEY,
        protocol=PROTO_ALC,
        template=ControlTemplate(tsi=7),
        group_key=group_key,
        bootstrap_period=bootstrap_period,
    )
    return AuthenticatedSender(eng, ts), params


def alc_receiver(group_key: bytes | None = None, **kw: Any) -> AuthenticatedReceiver:
    eng = AlcReceiver(ReceiverConfig())
    tr = TeslaReceiver(
        KEY.public_key(), protocol=PROTO_ALC, group_key=group_key, max_clock_error_ms=20, **kw
    )
    tr.early_discard = alc_early_discard(eng)
    return AuthenticatedReceiver(tr, eng)


def files_of(rx: AuthenticatedReceiver) -> dict[str, bytes]:
    out = {}
    while (ev := rx.engine.next_event()) is not None:
        if isinstance(ev, FileReceived):
            out[ev.name] = ev.data
    return out


@pytest.mark.parametrize("group_key", [None, b"g" * 32])
def test_alc_authenticated_transfer_loss_jitter(group_key: bytes | None) -> None:
    rnd = random.Random(5)
    files = {"a.bin": rnd.randbytes(60_000), "b.txt": b"hello TESLA\n" * 300}
    snd, _ = alc_pair(files, group_key=group_key)
    rxs = [alc_receiver(group_key) for _ in range(2)]
    got: list[dict[str, bytes]] = [{} for _ in rxs]

    def done() -> bool:
        for k, r in enumerate(rxs):
            got[k].update(files_of(r))
        return all(len(g) == len(files) for g in got)

    run(snd, rxs, loss=0.10, jitter=0.03, until=done, t_end=30)
    for k, r in enumerate(rxs):
        assert got[k] == files, (k, r.stats)
        st = r.tesla.stats
        print(
            "ALC receiver",
            k,
            {x: st[f"drop.{x}"] for x in DROP_REASONS},
            "accepted",
            st["accepted"],
        )
        for reason in (
            "bad_mac",
            "bad_key",
            "bad_group_mac",
            "unsafe",
            "malformed",
            "bad_signature",
        ):
            assert st[f"drop.{reason}"] == 0, (reason, st)
        assert st["accepted"] > 0


def test_alc_every_tag_type_and_chain_switch() -> None:
    """Tiny chains (N=9): types 1-4 all on the wire, receiver follows three chains."""
    files = {"x.bin": random.Random(2).randbytes(150_000)}
    snd, params = alc_pair(files, n_chain=9, rate=3e5)
    seen: set[int] = set()
    rx = alc_receiver()
    orig = rx.receive_datagram

    def spy(data: bytes, addr: Any, now: float) -> None:
        off = rx.tesla._locate(data)
        seen.add(data[off + 2] & 15)
        orig(data, addr, now)

    rx.receive_datagram = spy  # type: ignore[method-assign]
    got: dict[str, bytes] = {}

    def done() -> bool:
        got.update(files_of(rx))
        return bool(got)

    t = run(snd, [rx], loss=0.05, until=done, t_end=60)
    assert got == files, rx.stats
    assert seen >= {0, 1, 2, 3, 4}, seen
    assert t - T_START > 3 * 10 * 0.1  # crossed at least 3 chains of 10 intervals
    assert rx.tesla._max_chain_seen >= 3
    assert rx.tesla.stats["drop.bad_mac"] == 0 and rx.tesla.stats["drop.bad_key"] == 0


def test_receiver_late_joiner_and_no_bootstrap() -> None:
    files = {"late.bin": random.Random(3).randbytes(80_000)}
    snd, _ = alc_pair(files, rate=4e5, bootstrap_period=0.5)
    rx = alc_receiver()
    got: dict[str, bytes] = {}
    # the first 0.52 s never reach the receiver: it misses the start bootstraps and the
    # periodic one at 0.5 s, so data comes before the next one (at 1.0 s)
    real = rx.receive_datagram
    rx.receive_datagram = lambda d, a, t: None if t < T_START + 0.52 else real(d, a, t)  # type: ignore[method-assign]

    def done() -> bool:
        got.update(files_of(rx))
        return bool(got)

    run(snd, [rx], until=done, t_end=30)
    assert got == files
    assert rx.tesla.stats["drop.no_bootstrap"] > 0  # data before the periodic bootstrap


def test_silent_period_key_disclosure() -> None:
    """The last data interval's key arrives only through the wrapper's empty
    key-disclosure packets (RFC 5776 §3.1.2.5)."""
    params = make_params()
    ts = TeslaSender(
        params, KEY, protocol=PROTO_ALC, template=ControlTemplate(tsi=1), silent_fill=1
    )
    tr = TeslaReceiver(KEY.public_key(), protocol=PROTO_ALC, max_clock_error_ms=10)
    now = T_START + 0.01
    for p in ts.control_packets(now):
        tr.receive(p, now)
    assert tr.initialized
    pkt = _lct_data_packet(b"payload")
    tr.receive(ts.wrap(pkt, now + 0.3), now + 0.31)
    assert tr.pop_authenticated() == []
    t = now + 0.3
    while t < now + 1.0:
        for p in ts.control_packets(t):
            tr.receive(p, t + 0.001)
        t += 0.01
    out = tr.pop_authenticated()
    assert [p for p, _ in out] and ts.stats["tesla.key_fill"] >= 2
    assert len(out) == 1 and out[0][0].endswith(b"payload")  # fillers are never released


@pytest.mark.parametrize("single_chain", [True, False])
def test_no_filler_while_data_flows(single_chain: bool) -> None:
    """A sender whose every call has data (AuthenticatedSender: the engine's packets
    tagged right after the control packets) sends key-disclosure fillers only after the
    data ends: none in an interval its data fills.  Before, each call that opened an
    interval sent one first (the interval had no traffic *yet*), one more datagram per
    interval that receivers decide alone, and it joined a background verification."""
    params = make_params(single_chain=single_chain, n_chain=40 if single_chain else 9)
    ts = TeslaSender(params, KEY, protocol=PROTO_ALC, template=ControlTemplate(tsi=1), silent_fill=2)
    eng = AlcSender(SenderConfig(tsi=1, rate_bps=None, max_datagrams_per_call=20))
    eng.add_bytes(os.urandom(280_000), "f.bin")  # 200 datagrams: 10 calls
    tx = AuthenticatedSender(eng, ts)
    tint = params.tint_ms / 1000.0
    fills = []
    now = T_START + 0.001
    while not eng.done:  # one call per interval, each with data
        before = ts.stats.get("tesla.key_fill", 0)
        out = tx.datagrams_to_send(now)
        assert out
        fills.append(ts.stats.get("tesla.key_fill", 0) - before)
        now += tint
    assert fills == [0] * len(fills) and len(fills) >= 10
    t = now
    while t < now + (params.d + 3) * tint:  # then silence: the fillers of K_last
        tx.datagrams_to_send(t)
        t += tint / 4
    assert ts.stats.get("tesla.key_fill", 0) >= 2


def _lct_data_packet(payload: bytes, toi: int = 1, tsi: int = 1) -> bytes:
    from alc.lct import LCTHeader

    return LCTHeader(tsi=tsi, toi=toi).encode() + struct.pack("!I", 0) + payload


def test_mac_covers_whole_packet_with_fields_zeroed_independently() -> None:
    """Recompute the TESLA MAC and the Group MAC of a wrapped packet with plain
    hmac/hashlib (RFC 5776 §3.3.1/§3.3.3; digest §4.7: MAC and Group MAC zeroed)."""
    gk = b"k" * 16
    primaries = [bytes(range(32))]
    params = make_params(group_mac=True, n_chain=50, single_chain=True)
    ts = TeslaSender(
        params, KEY, protocol=PROTO_ALC, chains=KeyChainSet(params, "full", primaries), group_key=gk
    )
    now = T_START + 0.35  # interval 3 -> Type 1 disclosing K_1
    raw = _lct_data_packet(b"abc" * 50)
    out = ts.wrap(raw, now)
    hl = out[2] * 4
    assert hl == raw[2] * 4 + 60 and out[hl:] == raw[raw[2] * 4 :]
    off = raw[2] * 4
    assert out[off] == 1 and out[off + 1] == 15 and out[off + 2] == 1
    i = struct.unpack_from("!I", out, off + 4)[0]
    assert i == 3
    # chain from the primary key with plain hmac: K_{m-1} = HMAC(K_m, 0x00)
    keys = [primaries[0]]
    for _ in range(50):
        keys.append(hmac.digest(keys[-1], b"\x00", "sha256"))
    keys.reverse()  # keys[m] = K_m
    assert out[off + 8 : off + 40] == keys[1]
    mac_key = hmac.digest(keys[3], b"\x01", "sha256")
    z = bytearray(out)
    z[off + 40 : off + 56] = bytes(16)
    z[off + 56 : off + 60] = bytes(4)
    assert hmac.digest(mac_key, bytes(z), "sha256")[:16] == out[off + 40 : off + 56]
    z2 = bytearray(out)
    z2[off + 56 : off + 60] = bytes(4)
    assert hmac.digest(gk, bytes(z2), "sha256")[:4] == out[off + 56 : off + 60]


def test_bootstrap_signature_and_layout_independent() -> None:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    params = make_params()
    ts = TeslaSender(
        params, KEY, protocol=PROTO_NORM, template=ControlTemplate(source_id=9, instance_id=3)
    )
    pkt = ts.bootstrap_packet(T_START + 0.05)
    assert pkt[0] == 0x13 and pkt[12] == 7  # NORM_CMD(APPLICATION)
    off = 16
    msg = ea.decode(pkt, off)
    assert isinstance(msg, ea.Bootstrap) and msg.d == 2 and msg.t_int_ms == 100 and msg.n == 2000
    z = bytearray(pkt)
    so = off + 32 + 32
    z[so : so + 128] = bytes(128)
    KEY.public_key().verify(msg.signature, bytes(z), padding.PKCS1v15(), hashes.SHA256())
    assert pkt[1] * 4 == len(pkt) == 16 + 192


def test_safe_packet_boundary_exact() -> None:
    """T_int=1000 ms, d=2, i=5: safe for x = T + D_t - T0 = 6.999..., unsafe at 7.0."""
    params = make_params(tint_ms=1000)
    ts = TeslaSender(params, KEY, protocol=PROTO_ALC, template=ControlTemplate(tsi=1))
    tr = TeslaReceiver(KEY.public_key(), protocol=PROTO_ALC, max_clock_error_ms=0)
    for p in ts.control_packets(T_START):
        tr.receive(p, T_START)
    pkt = ts.wrap(_lct_data_packet(b"x"), T_START + 5.5)
    tr.receive(pkt, T_START + 6.999)
    assert tr.stats["drop.unsafe"] == 0
    tr.receive(pkt, T_START + 7.0)
    assert tr.stats["drop.unsafe"] == 1
    tr.receive(pkt, T_START + 4.99)  # from the future: i=5 > highest_i=4
    assert tr.stats["drop.unsafe"] == 2


def test_direct_time_sync_alc_side_channel() -> None:
    params = make_params()
    eng = AlcSender(
        SenderConfig(tsi=3, rate_bps=2e5, burst_bytes=1500, symbol_length=500, carousel_rounds=2)
    )
    blob = os.urandom(20_000)
    eng.add_bytes(blob, "f")
    snd = AuthenticatedSender(
        eng, TeslaSender(params, KEY, protocol=PROTO_ALC, template=ControlTemplate(tsi=3))
    )
    tr = TeslaReceiver(
        KEY.public_key(), protocol=PROTO_ALC, sync="direct", template=ControlTemplate(tsi=3)
    )
    rx = AuthenticatedReceiver(tr, AlcReceiver(ReceiverConfig()), sync_addr=("10.0.0.1", 4000))
    got: dict[str, bytes] = {}

    def done() -> bool:
        got.update(files_of(rx))
        return bool(got)

    run(snd, [rx], until=done, t_end=20, jitter=0.01)
    assert got == {"f": blob}
    assert tr.d_t is not None and snd.tesla.stats["tesla.sync_response"] >= 1


def test_engine_contract_and_stats_merge() -> None:
    snd, _ = alc_pair({"f": b"x" * 3000})
    rx = alc_receiver()
    assert snd.get_timer() is not None  # the engine wants its first call
    out = snd.datagrams_to_send(T_START)
    assert out and all(isinstance(d, bytes) for d, _ in out)
    for d, a in out:
        rx.receive_datagram(d, a, T_START + 0.001)
    st = rx.stats
    assert "tesla.drop.bad_mac" in st and "tesla.accepted" in st


# ------------------------------------------------------------------------------- NORM


def norm_pair(blob: bytes, group_key: bytes | None = None, sync: str = "indirect"):
    from norm.receiver import NormReceiver
    from norm.receiver import ReceiverConfig as NRC
    from norm.sender import NormSender, NormSenderConfig

    params = make_params(group_mac=group_key is not None)
    cfg = NormSenderConfig(
        node_id=1, instance_id=77, segment_size=1000, rate=400_000.0, seed=1, grtt=0.05
    )
    eng = NormSender(cfg)
    eng.enqueue_data(blob)
    eng.end()
    tpl = ControlTemplate(source_id=1, instance_id=77)
    snd = AuthenticatedSender(
        eng, TeslaSender(params, KEY, protocol=PROTO_NORM, template=tpl, group_key=group_key)
    )
    rxs = []
    for k in range(2):
        tr = TeslaReceiver(
            KEY.public_key(),
            protocol=PROTO_NORM,
            group_key=group_key,
            max_clock_error_ms=20,
            sync=sync,
            template=ControlTemplate(source_id=10 + k),
        )
        rxs.append(AuthenticatedReceiver(tr, NormReceiver(NRC(node_id=10 + k))))
    return snd, rxs


def norm_objects(rx: AuthenticatedReceiver) -> list[bytes]:
    from norm.receiver import ObjectReceived

    out = []
    while (ev := rx.engine.next_event()) is not None:
        if isinstance(ev, ObjectReceived):
            out.append(ev.data)
    return out


@pytest.mark.parametrize(
    "group_key,sync", [(None, "indirect"), (b"G" * 20, "indirect"), (None, "direct")]
)
def test_norm_authenticated_transfer_loss_jitter(group_key: bytes | None, sync: str) -> None:
    blob = random.Random(9).randbytes(50_000)
    snd, rxs = norm_pair(blob, group_key, sync)
    got: list[list[bytes]] = [[] for _ in rxs]

    def done() -> bool:
        for k, r in enumerate(rxs):
            got[k].extend(norm_objects(r))
        return all(got)

    run(snd, rxs, loss=0.10, jitter=0.02, until=done, t_end=40)
    for k, r in enumerate(rxs):
        st = r.tesla.stats
        print(
            "NORM receiver",
            k,
            {x: st[f"drop.{x}"] for x in DROP_REASONS},
            "accepted",
            st["accepted"],
        )
        assert got[k] == [blob], r.stats
        for reason in ("bad_mac", "bad_key", "bad_group_mac", "malformed", "bad_signature"):
            assert st[f"drop.{reason}"] == 0, (reason, st)


def test_cc_hint_only_for_packets_passing_the_safe_test() -> None:
    """RFC 5776 §4.3 step 5: the verifier hands a packet to the engine's CC hook only
    after steps 1-4 passed (never before the bootstrap, never unsafe, malformed or with a
    bad key); a forged packet inside the safe window reaches the hook (CC timing only, see
    tests/test_cc_preauth.py) but is still dropped as bad_mac and never released.  ALC
    sessions get no hook (no CC building block)."""
    from norm.receiver import NormReceiver
    from norm.receiver import ReceiverConfig as NRC

    snd, _ = norm_pair(random.Random(5).randbytes(20_000))
    stream: list[tuple[bytes, float]] = []
    t = T_START
    while t < T_START + 1.0:
        stream += [(d, t) for d, _ in snd.datagrams_to_send(t)]
        t += 0.002
    tr = TeslaReceiver(
        KEY.public_key(),
        protocol=PROTO_NORM,
        max_clock_error_ms=20,
        template=ControlTemplate(source_id=10),
    )
    eng = NormReceiver(NRC(node_id=10))
    rx = AuthenticatedReceiver(tr, eng)
    assert tr.cc_hint == eng.congestion_control_hint
    hinted: list[bytes] = []
    released: list[bytes] = []
    tr.cc_hint = lambda d, now: hinted.append(d)
    real = eng.receive_datagrams  # the batch entry the wrapper releases through

    def spy(ds: Any, addrs: Any, times: Any) -> None:
        released.extend(ds)
        real(ds, addrs, times)

    eng.receive_datagrams = spy  # type: ignore[method-assign]
    first_data = next(d for d, _ in stream if d[0] & 15 == 2)
    rx.receive_datagram(first_data, None, T_START)  # before any bootstrap
    assert hinted == [] and tr.stats["drop.no_bootstrap"] == 1
    boot = [(d, at) for d, at in stream if d[0] & 15 == 3 and d[12] == 7]  # control pkts
    for d, at in stream[:5] + boot[:1]:
        rx.receive_datagram(d, None, at + 0.005)
    n0 = len(hinted)
    late, at = stream[10]
    rx.receive_datagram(late, None, at + 0.5)  # d*T_int = 0.2 s: unsafe
    rx.receive_datagram(late[:20], None, at + 0.005)  # malformed
    assert len(hinted) == n0 and tr.stats["drop.unsafe"] == 1
    assert tr.stats["drop.malformed"] == 1
    forged = bytearray(stream[11][0])
    forged[-1] ^= 1
    rx.receive_datagram(bytes(forged), None, stream[11][1] + 0.005)
    assert hinted[-1] == bytes(forged)  # passed steps 1-4: CC may use it
    for d, at in stream[11:]:
        rx.receive_datagram(d, None, at + 0.005)
    t = stream[-1][1]
    while t < stream[-1][1] + 1.0:
        rx.handle_timer(t)
        for d, _ in snd.datagrams_to_send(t):
            rx.receive_datagram(d, None, t + 0.005)
        t += 0.01
    assert tr.stats["drop.bad_mac"] == 1
    assert bytes(forged) not in released and stream[11][0] in released
    assert (
        AuthenticatedReceiver(alc_receiver().tesla, AlcReceiver(ReceiverConfig())).tesla.cc_hint
        is None
    )


# ----------------------------------------------------------------------- batch receive


@pytest.mark.parametrize("seed", range(6))
def test_receive_batch_equals_per_packet(seed: int) -> None:
    """receive_batch must give exactly the per-packet results (released packets in the
    same order, same counters) on a mix of genuine, modified, forged, late, malformed
    and duplicated packets, several intervals and key disclosures per batch."""
    rnd = random.Random(seed)
    params = make_params(single_chain=True, n_chain=200)
    ts = TeslaSender(params, KEY, protocol=PROTO_ALC, template=ControlTemplate(tsi=1))
    boot = ts.bootstrap_packet(T_START + 0.01)
    events: list[tuple[bytes, float]] = []
    t = T_START + 0.05
    for _ in range(600):
        t += rnd.random() * 0.004
        p = ts.wrap(_lct_data_packet(rnd.randbytes(rnd.randint(1, 300))), t)
        r = rnd.random()
        if r < 0.08:
            m = bytearray(p)
            m[rnd.randrange(len(m))] ^= 1 << rnd.randrange(8)
            p = bytes(m)
        elif r < 0.10:
            p = p[: rnd.randrange(len(p))]
        elif r < 0.13 and events:
            p = events[rnd.randrange(len(events))][0]  # duplicate / replay
        arrival = t + (0.3 if rnd.random() < 0.03 else 0.002)
        events.append((p, arrival))
    events.sort(key=lambda e: e[1])
    maxb = rnd.choice([1 << 30, 40_000])
    a = TeslaReceiver(
        KEY.public_key(), protocol=PROTO_ALC, max_clock_error_ms=5, max_buffered_bytes=maxb
    )
    b = TeslaReceiver(
        KEY.public_key(), protocol=PROTO_ALC, max_clock_error_ms=5, max_buffered_bytes=maxb
    )
    a.receive(boot, T_START + 0.02)
    b.receive(boot, T_START + 0.02)
    k = 0
    out_a: list[tuple[bytes, object]] = []
    out_b: list[tuple[bytes, object]] = []
    while k < len(events):
        n = rnd.randint(1, 64)
        chunk = events[k : k + n]
        now = chunk[-1][1]
        for p, _ in chunk:
            a.receive(p, now, len(p))
        b.receive_batch([p for p, _ in chunk], now, [len(p) for p, _ in chunk])
        k += n
        # popped as an engine would: released datagrams are charged until popped
        out_a += a.pop_authenticated()
        out_b += b.pop_authenticated()
    assert out_a == out_b
    assert a.stats == b.stats
    assert a.stats["accepted"] > 100
    for rx in (a, b):
        pend = rx._pending.values()
        assert rx.stats["buffered_packets"] == sum(len(x) for x in pend)
        st = rx.stats
        assert st["buffered_bytes"] <= maxb  # warm arena pages (charged) included
        assert (
            st["buffered_bytes"] - st["warm_bytes"]
            == sum(x.nbytes for x in pend) + st["replay_bytes"]
        )


@pytest.mark.parametrize(
    "protocol,group", [(PROTO_ALC, False), (PROTO_ALC, True), (PROTO_NORM, False)]
)
@pytest.mark.parametrize("t", [0.05, 0.35, 5.55])
def test_wrap_many_equals_wrap(protocol: str, group: bool, t: float) -> None:
    params = make_params(n_chain=9, group_mac=group)
    prim = [bytes([k]) * 32 for k in range(8)]
    gk = b"g" * 16 if group else None
    a = TeslaSender(
        params, KEY, protocol=protocol, chains=KeyChainSet(params, "full", prim), group_key=gk
    )
    b = TeslaSender(
        params, KEY, protocol=protocol, chains=KeyChainSet(params, "full", prim), group_key=gk
    )
    from norm.messages import NormCmdApplication

    def pkt(k: int) -> bytes:
        if protocol == PROTO_ALC:
            return _lct_data_packet(bytes([k]) * (k + 1))
        return NormCmdApplication(0, 1, 2, 0, 0, 0, content=bytes([k]) * 8).encode()

    pk = [pkt(k) for k in range(7)]
    assert b.wrap_many(pk, T_START + t) == [a.wrap(p, T_START + t) for p in pk]
    # a second batch continues the state (tag counts, NORM sequence numbers) alike
    assert b.wrap_many(pk[:3], T_START + t) == [a.wrap(p, T_START + t) for p in pk[:3]]
    assert (b._seq, b.stats) == (a._seq, a.stats)


def test_safe_thresholds_agree_with_timesync_classify() -> None:
    """The per-interval float thresholds of the verifier give exactly the decisions of
    tesla.core.timesync.classify (exact NTP arithmetic) at and around every boundary."""
    import math

    from tesla.core.timesync import Safety, classify

    rnd = random.Random(11)
    for tint, dt_ms in [(100, 20), (1000, 0), (7, 3), (250, 123.456)]:
        params = make_params(tint_ms=tint)
        ts = TeslaSender(params, KEY, protocol=PROTO_ALC, template=ControlTemplate(tsi=1))
        tr = TeslaReceiver(KEY.public_key(), protocol=PROTO_ALC, max_clock_error_ms=dt_ms)
        tr.receive(ts.bootstrap_packet(T_START), T_START)
        assert tr.d_t is not None
        for _ in range(200):
            i = rnd.randrange(0, 50)
            lo, hi = tr._interval_bounds(i)
            for edge in (lo, hi):
                for t in (math.nextafter(edge, 0), edge, math.nextafter(edge, math.inf)):
                    mine = lo <= t < hi
                    ref = classify(posix_to_ntp(t), tr.d_t, i, params) is Safety.SAFE
                    assert mine == ref, (tint, dt_ms, i, t)
