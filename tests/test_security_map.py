"""RFC 5776 §6 and RFC 4082 §5: the tests of the security map (``docs/security/README.md``)
that no other test file covered, and the check that the map names only tests that exist."""

from __future__ import annotations

import dataclasses
import os
import re
import struct
from pathlib import Path
from typing import Any

import pytest
import test_adversarial as adv

from alc.receiver import AlcReceiver, FileReceived, ObjectFailed
from alc.sender import AlcSender, SenderConfig
from tesla.core.authenticator import PROTO_ALC, PROTO_NORM, ControlTemplate, TeslaSender
from tesla.core.keychain import KeyChainSet
from tesla.core.ntp import posix_to_ntp
from tesla.core.params import TeslaParams
from tesla.core.receiver import NewChain, TeslaReceiver
from tesla.core.session import AuthenticatedReceiver

ROOT = Path(__file__).resolve().parents[1]
MAP = ROOT / "docs" / "security" / "README.md"
T0 = adv.T0


# ---------------------------------------------------------------- the map cannot rot


def _map_tests() -> list[str]:
    """Every ``tests/FILE.py::NAME`` named in the table of the security map."""
    text = MAP.read_text()
    return sorted(set(re.findall(r"(tests/[\w/]+\.py::\w+)", text)))


def test_security_map_names_existing_tests() -> None:
    refs = _map_tests()
    assert len(refs) >= 20
    missing = []
    for ref in refs:
        path, name = ref.split("::")
        src = (ROOT / path).read_text() if (ROOT / path).exists() else ""
        if not re.search(rf"^(async )?def {name}\(", src, re.M):
            missing.append(ref)
    assert not missing, f"tests named in {MAP.relative_to(ROOT)} that do not exist: {missing}"


def test_security_map_has_every_row() -> None:
    """One table row per consideration of RFC 5776 §6 (incl. 6.1-6.3) and RFC 4082 §5,
    each with a module and at least one test."""
    rows = [ln for ln in MAP.read_text().splitlines() if ln.startswith("| ") and "::" in ln]
    secs = [ln.split("|")[1].strip() for ln in rows]
    for want in ("5776 §6", "5776 §6.1", "5776 §6.2.1", "5776 §6.2.2", "5776 §6.2.3",
                 "5776 §6.3", "4082 §5"):
        assert any(s == want for s in secs), want
    assert len(rows) >= 25
    for ln in rows:
        cells = [c.strip() for c in ln.split("|")[1:-1]]
        assert len(cells) == 4 and all(cells), ln


# ---------------------------------------------------------------- helpers


class Recorder:
    """An engine that records what the verifier releases to it."""

    def __init__(self) -> None:
        self.got: list[bytes] = []
        self.stats: dict[str, int] = {}

    def receive_datagram(self, data: bytes, addr: Any, now: float) -> None:
        self.got.append(data)

    def receive_datagrams(self, datagrams: Any, addrs: Any, times: Any) -> None:
        self.got.extend(datagrams)

    def datagrams_to_send(self, now: float) -> list[Any]:
        return []

    def get_timer(self) -> None:
        return None

    def handle_timer(self, now: float) -> None:
        pass

    def next_event(self) -> None:
        return None


def _count_sig_verify(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    import tesla.core.receiver as V

    calls = [0]
    real = V.sig_verify

    def counting(*a: Any, **k: Any) -> bool:
        calls[0] += 1
        return bool(real(*a, **k))

    monkeypatch.setattr(V, "sig_verify", counting)
    return calls


# ---------------------------------------------------------------- RFC 5776 §6 / RFC 4082 §5


@pytest.mark.parametrize("protocol", [PROTO_ALC, PROTO_NORM])
def test_bootstrap_after_initialization_ignored_without_signature_work(
    protocol: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """§6.2.1: an initialized receiver ignores further bootstraps of its chain (replays
    void), at no RSA cost (§6.1 signature DoS); 4082 §5 / 5776 §6: a changed disclosure
    schedule announced inside the stream, even correctly signed, is not adopted."""
    rig = adv.Rig(protocol)
    rx = rig.rx
    before = rx.params
    calls = _count_sig_verify(monkeypatch)
    for k in range(20):  # replays of the genuine bootstrap
        rx.receive(rig.tx.bootstrap_packet(T0 + 0.001), T0 + 0.05 + k * 0.001)
    # a correctly signed bootstrap announcing another schedule (T_int 200 ms, d 3)
    p2 = dataclasses.replace(rig.params, tint_ms=200, d=3)
    tx2 = TeslaSender(p2, adv.KEY, protocol=protocol,
                      template=ControlTemplate(tsi=5, source_id=1, instance_id=77),
                      chains=KeyChainSet(p2, "full", [rig.primary]))
    rx.receive(tx2.bootstrap_packet(T0 + 0.05), T0 + 0.06)
    assert calls[0] == 0
    assert rx.params == before and rx.params.tint_ms == 100
    assert rx.stats["bootstrap.ignored"] == 21


def test_bootstrap_for_other_chain_with_changed_schedule_refused() -> None:
    """§6.2.1 exception (§4.2.1, a bootstrap for a chain the receiver has no commitment
    for): accepted only with unchanged static parameters (4082 §5)."""
    p = TeslaParams(t0_ntp=posix_to_ntp(T0), tint_ms=100, n_chain=20, d=2)
    tx = TeslaSender(p, adv.KEY, protocol=PROTO_ALC, template=ControlTemplate(tsi=5))
    rx = TeslaReceiver(adv.KEY.public_key(), protocol=PROTO_ALC, max_clock_error_ms=10)
    rx.receive(tx.bootstrap_packet(T0 + 0.001), T0 + 0.002)
    assert rx.initialized
    t1 = T0 + 2.35  # interval 23: chain 1
    p2 = dataclasses.replace(p, tint_ms=50)
    tx2 = TeslaSender(p2, adv.KEY, protocol=PROTO_ALC, template=ControlTemplate(tsi=5))
    bad = rx.stats.get("drop.malformed", 0)
    rx.receive(tx2.bootstrap_packet(T0 + 1.2), T0 + 1.21)  # T_int 50: interval 24, chain 1
    assert rx.params == p and rx.stats["drop.malformed"] == bad + 1
    rx.receive(tx.bootstrap_packet(t1), t1 + 0.001)  # same schedule, chain 1: accepted
    assert rx.params == p and NewChain(chain=1) in list(rx.events)


def test_sender_schedule_is_fixed_for_the_session() -> None:
    """5776 §6 (§3.1.3): the disclosure schedule is fixed during the session; changing it
    means a new session (new TeslaSender, new chains)."""
    rig = adv.Rig(PROTO_ALC)
    with pytest.raises(dataclasses.FrozenInstanceError):
        rig.tx.params.tint_ms = 200  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        rig.tx.params.d = 5  # type: ignore[misc]


@pytest.mark.parametrize("protocol", [PROTO_ALC, PROTO_NORM])
def test_replay_from_another_session_rejected(protocol: str) -> None:
    """§6.2.2 / §6.2.3: each session has its own key chain, so a packet of an earlier
    session (same parameters, same signing key, same interval) is never authentic."""
    a = adv.Rig(protocol)
    b_params = a.params
    b = TeslaSender(b_params, adv.KEY, protocol=protocol,
                    template=ControlTemplate(tsi=5, source_id=1, instance_id=77),
                    chains=KeyChainSet(b_params, "full", [os.urandom(b_params.key_len)]))
    rx = TeslaReceiver(adv.KEY.public_key(), protocol=protocol, max_clock_error_ms=10)
    rx.receive(b.bootstrap_packet(T0 + 0.001), T0 + 0.002)
    assert rx.initialized
    old = [a.wrap(os.urandom(100), T0 + 0.25 + k * 0.01) for k in range(20)]
    for k, p in enumerate(old):
        rx.receive(p, T0 + 0.252 + k * 0.01)
    for w in range(2, 8):
        t = T0 + (w + 2) * 0.1 + 0.05
        rx.receive(a.tx.key_disclosure_packet(t), t + 0.001)  # the old session's keys too
    assert adv.released(rx) == []
    assert rx.stats["drop.bad_key"] >= 20


def test_norm_sequence_replay_dropped_before_tesla() -> None:
    """§6.2.2 RECOMMENDED: the receiver checks the NORM sequence before TESLA processing;
    a replay with a corrupted sequence fails the TESLA MAC instead."""
    rig = adv.Rig(PROTO_NORM)
    rx = rig.rx
    t = T0 + 0.35
    g = rig.wrap(os.urandom(200), t)
    rx.receive(g, t + 0.002)
    rig.disclose_through(rx, 3)
    assert adv.released(rx) == [g]
    buffered = rx.stats.get("buffered_packets", 0)
    rx.receive(g, t + 0.003)  # inside the safe window, so only the sequence check stops it
    assert rx.stats["drop.replay"] == 1
    assert rx.stats.get("buffered_packets", 0) == buffered  # never buffered for the MAC
    t2 = T0 + 0.45
    m = bytearray(rig.wrap(os.urandom(200), t2))
    m[2:4] = struct.pack("!H", (struct.unpack("!H", m[2:4])[0] + 9) & 0xFFFF)
    rx.receive(bytes(m), t2 + 0.002)
    rig.disclose_through(rx, 4)
    assert adv.released(rx) == [] and rx.stats["drop.bad_mac"] >= 1


def test_norm_sender_drops_replayed_feedback_sequence() -> None:
    from norm import messages as M
    from norm.sender import NormSender, NormSenderConfig

    s = NormSender(NormSenderConfig(node_id=1, instance_id=7, rate=1e6, grtt=0.01, seed=1))
    s.enqueue_data(b"x" * 3000, info=b"a")
    s.handle_timer(T0)
    s.datagrams_to_send(T0)
    item = M.RepairItem(s.fec_id, 0, 0, 1, m=s.fec_m)

    def nack(seq: int) -> bytes:
        req = M.RepairRequest(M.NACK_ITEMS, M.NACK_SEGMENT, [item])
        return M.NormNack(seq, 9, 1, 7, 0, 0, requests=[req]).encode()

    s.receive_datagram(nack(77), ("127.0.0.1", 9), T0 + 0.01)
    s.receive_datagram(nack(78), ("127.0.0.1", 9), T0 + 0.02)  # the receiver's next NACK
    s.receive_datagram(nack(77), ("127.0.0.1", 9), T0 + 0.03)  # replayed
    s.receive_datagram(nack(78), ("127.0.0.1", 9), T0 + 0.04)  # replayed
    assert s.stats.get("drop.replay", 0) == 2 and s.stats["rx.nack"] == 2


def test_alc_replayed_close_packets_have_no_effect() -> None:
    """§6.2.3: a replayed Close Object (B) or Close Session (A) packet changes nothing
    once the object is complete / the session closed."""
    s = AlcSender(SenderConfig(tsi=3, rate_bps=None, close_packets=2))
    s.add_bytes(os.urandom(5000), "f.bin")
    pkts = s.all_packets(T0)
    rx = AlcReceiver()
    for p in pkts:
        rx.receive_datagram(p, adv_src(), T0)
    evs = _events(rx)
    assert [e.name for e in evs if isinstance(e, FileReceived)] == ["f.bin"]
    closers = [p for p in pkts if p[1] & 0x03]  # A (bit 1) or B (bit 0) flag set
    assert closers
    for p in closers * 3:
        rx.receive_datagram(p, adv_src(), T0 + 0.5)
    evs = _events(rx)
    assert not [e for e in evs if isinstance(e, FileReceived | ObjectFailed)]
    assert rx.received and "f.bin" in rx.received.values()


def adv_src() -> tuple[str, int]:
    return ("127.0.0.1", 4000)


def _events(rx: Any) -> list[Any]:
    out = []
    while (e := rx.next_event()) is not None:
        out.append(e)
    return out


@pytest.mark.parametrize("protocol", [PROTO_ALC, PROTO_NORM])
def test_only_verified_datagrams_reach_the_engine(protocol: str) -> None:
    """5776 §6 / 4082 §5: nothing bypasses the verifier on its way to the ALC/NORM engine
    (the engine has no other entry point through the authenticated receiver)."""
    rig = adv.Rig(protocol)
    eng = Recorder()
    ar = AuthenticatedReceiver(rig.new_receiver(), eng)  # type: ignore[arg-type]
    genuine = []
    for k in range(30):
        t = T0 + 0.25 + k * 0.005
        g = rig.wrap(os.urandom(120), t)
        genuine.append(g)
        ar.receive_datagram(g, None, t + 0.001)
        f = bytearray(g)
        f[-1] ^= 1
        ar.receive_datagram(bytes(f), None, t + 0.001)  # forged payload
        ar.receive_datagram(rig.data(b"no tag at all"), None, t + 0.001)
    for w in range(2, 6):
        t = T0 + (w + 2) * 0.1 + 0.05
        ar.receive_datagram(rig.tx.key_disclosure_packet(t), None, t + 0.001)
    assert sorted(eng.got) == sorted(genuine)
    from tesla.cli.wiring import _AuthRx

    wrapped = _AuthRx(rig.new_receiver(), eng, 0.0, False)
    with pytest.raises(AttributeError):
        wrapped.receive_unverified  # noqa: B018 - engine receive paths are not exposed
    with pytest.raises(AttributeError):
        wrapped._packet  # noqa: B018


def test_verifier_reads_no_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """5776 §6 (timing information injected between components) / 4082 §5: the verifier
    takes the arrival time only from its caller; it never reads a clock itself."""
    import time

    def boom(*_a: Any) -> float:
        raise AssertionError("the verifier read a clock")

    rig = adv.Rig(PROTO_ALC)
    from tesla.core.receiver import TeslaReceiver as FastTeslaReceiver

    fast = FastTeslaReceiver(adv.KEY.public_key(), protocol=PROTO_ALC, max_clock_error_ms=10)
    pk = [rig.tx.bootstrap_packet(T0 + 0.001)] + [
        rig.wrap(os.urandom(80), T0 + 0.25 + k * 0.001) for k in range(40)]
    warm = FastTeslaReceiver(adv.KEY.public_key(), protocol=PROTO_ALC, max_clock_error_ms=10)
    warm.receive_batch(pk, T0 + 0.26)  # lazy imports (numba, numpy submodules) done first
    rig.disclose_through(warm, 3)
    assert len(adv.released(warm)) == 40
    for name in ("time", "monotonic", "perf_counter", "time_ns"):
        monkeypatch.setattr(time, name, boom)
    rx = rig.new_receiver()
    for p in pk:
        rx.receive(p, T0 + 0.26)
    fast.receive_batch(pk, T0 + 0.26)
    rig.disclose_through(rx, 3)
    rig.disclose_through(fast, 3)
    monkeypatch.undo()
    assert len(adv.released(rx)) == 40 and len(adv.released(fast)) == 40


def test_live_arrival_time_read_at_handoff() -> None:
    """4082 §5 (b): each datagram of a receive batch is judged at its own arrival time
    (the socket driver gives the kernel's receive timestamp per datagram,
    tests/test_rx_metadata.py), never at a time shared by the batch: a datagram that
    arrived after its key could be disclosed is unsafe even when the batch holds earlier,
    safe ones."""
    import tesla.cli.wiring as W

    rig = adv.Rig(PROTO_ALC)
    eng = Recorder()
    rx = W._AuthRx(rig.new_receiver(), eng, 0.0, True)
    t = T0 + 0.25  # interval 2: safe until T0 + 0.4 - D_t
    early = rig.wrap(os.urandom(64), t)
    late = rig.wrap(os.urandom(64), t + 0.001)
    rx.receive_datagrams([early, late], [None, None], [t + 0.001, T0 + 0.45])
    assert rx.tesla.stats["drop.unsafe"] == 1
    assert rx.tesla.stats["buffered_packets"] == 1


@pytest.mark.parametrize("protocol", [PROTO_ALC, PROTO_NORM])
def test_group_mac_drops_outsider_forgeries_first(protocol: str) -> None:
    """§6.1: with the Group MAC scheme a non-member's forgery is dropped by the cheap
    Group MAC check before any key-chain work or buffering (CPU and memory DoS)."""
    rig = adv.Rig(protocol, group=True)
    rx = rig.rx
    n = 0
    for k in range(50):
        t = T0 + 0.25 + k * 0.002
        f = bytearray(rig.wrap(os.urandom(100), t))
        f[-1] ^= 0x40  # payload changed, Group MAC not recomputable without K_g
        rx.receive(bytes(f), t + 0.001)
        n += 1
    assert rx.stats["drop.bad_group_mac"] == n
    assert rx.buffered_bytes == 0


def test_norm_feedback_bypass_cannot_deliver_data() -> None:
    """§6.3: receiver feedback carries no TESLA tag (back channel out of scope) and goes
    to the engine unverified; it can never make the engine deliver data."""
    from norm import messages as M
    from norm.receiver import NormReceiver, ReceiverConfig

    rig = adv.Rig(PROTO_NORM)
    eng = NormReceiver(ReceiverConfig(node_id=2))
    ar = AuthenticatedReceiver(rig.new_receiver(), eng)
    item = M.RepairItem(5, 3, 0, 0)
    forged = [
        M.NormNack(1, 66, 1, 77, 0, 0, requests=[M.RepairRequest(M.NACK_ITEMS, M.NACK_OBJECT, [item])]).encode(),
        M.NormAck(2, 66, 1, 77, 1, 0).encode(),
    ]
    for k, f in enumerate(forged):
        ar.receive_datagram(f, ("127.0.0.1", 9), T0 + 0.3 + k * 0.01)
    assert eng.next_event() is None
    assert not eng.stats.get("rx.data", 0)
