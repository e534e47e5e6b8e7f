"""RFC 5776 §4.3 step 5 for NORM: congestion-control information of a packet that passed
the safe-packet test is used *before* authentication (``NormReceiver.
congestion_control_hint``), so the sender's GRTT measures the path, not the TESLA
disclosure delay d*T_int; and a forged probe can only move CC timing.

NormSender -> AuthenticatedSender -> fixed-delay path -> AuthenticatedReceiver ->
NormReceiver, in virtual time (deterministic)."""

from __future__ import annotations

import heapq
import random
from typing import Any

import pytest

from norm import messages as M
from norm.receiver import NormReceiver, ObjectReceived
from norm.receiver import ReceiverConfig as NRC
from norm.sender import NormSender, NormSenderConfig
from tesla.core.authenticator import PROTO_NORM, ControlTemplate, TeslaSender
from tesla.core.bootstrap_sig import generate_private_key
from tesla.core.ntp import posix_to_ntp
from tesla.core.params import TeslaParams
from tesla.core.receiver import TeslaReceiver
from tesla.core.session import AuthenticatedReceiver, AuthenticatedSender

T_START = 1_800_000_000.0
KEY = generate_private_key(1024)
ONE_WAY = 0.0025  # s: a 5 ms round trip
TINT_MS, D = 100, 3


def make_session(
    blob: bytes, *, cc_preauth: bool = True, grtt0: float = 0.02, end: bool = True
) -> tuple[AuthenticatedSender, AuthenticatedReceiver]:
    params = TeslaParams(t0_ntp=posix_to_ntp(T_START), tint_ms=TINT_MS, n_chain=2000, d=D)
    eng = NormSender(
        NormSenderConfig(
            node_id=1, instance_id=77, segment_size=1000, rate=2_000_000.0, seed=1, grtt=grtt0
        )
    )
    eng.enqueue_data(blob)
    if end:
        eng.end()
    tpl = ControlTemplate(source_id=1, instance_id=77)
    snd = AuthenticatedSender(eng, TeslaSender(params, KEY, protocol=PROTO_NORM, template=tpl))
    tr = TeslaReceiver(
        KEY.public_key(),
        protocol=PROTO_NORM,
        max_clock_error_ms=20,
        template=ControlTemplate(source_id=10),
    )
    rx = AuthenticatedReceiver(tr, NormReceiver(NRC(node_id=10)), cc_preauth=cc_preauth)
    return snd, rx


def run(
    snd: Any, rx: Any, t_end: float, step: float = 0.0005, inject: Any = None
) -> tuple[float, list[bytes]]:
    """Fixed one-way delay both ways, virtual time; returns (finish time, objects)."""
    now = T_START
    q: list[tuple[float, int, int, bytes]] = []
    n = 0
    got: list[bytes] = []
    done_at = -1.0
    while now < T_START + t_end:
        for data, _ in snd.datagrams_to_send(now):
            if done_at < 0 and data[0] & 15 == M.NORM_CMD and data[12] == M.CMD_EOT:
                done_at = now - T_START  # the flush rounds are over
            n += 1
            heapq.heappush(q, (now + ONE_WAY, n, 0, data))
        if inject is not None:
            for data in inject(now):
                n += 1
                heapq.heappush(q, (now + ONE_WAY, n, 0, data))
        for data, _ in rx.datagrams_to_send(now):
            n += 1
            heapq.heappush(q, (now + ONE_WAY, n, 1, data))
        while q and q[0][0] <= now:
            t, _, dst, data = heapq.heappop(q)
            if dst == 0:
                rx.receive_datagram(data, ("10.0.0.1", 4000), t)
            else:
                snd.receive_datagram(data, ("10.0.0.10", 4001), t)
        snd.handle_timer(now)
        rx.handle_timer(now)
        while (ev := rx.engine.next_event()) is not None:
            if isinstance(ev, ObjectReceived):
                got.append(ev.data)
        now += step
    return done_at, got


def test_grtt_tracks_path_rtt_not_disclosure_delay() -> None:
    """Initial GRTT 20 ms (``--grtt 0.02``), 5 ms path, d*T_int = 0.3 s."""
    blob = random.Random(3).randbytes(200_000)
    snd, rx = make_session(blob)
    done_at, got = run(snd, rx, t_end=4.0)
    grtt = snd.engine.grtt
    st = rx.stats
    print("pre-auth CC: sender GRTT", grtt, "EOT at", done_at)
    assert got == [blob]
    assert st["cc_hint.applied"] > 0
    assert st.get("rx.cc_prehinted", 0) > 0  # the authenticated copies: not applied again
    assert grtt < 0.05, grtt
    assert 0 < done_at < 2.0

    # reference, without step 5: the echo includes the authentication delay, the GRTT
    # jumps to ~d*T_int and every flush/repair timer follows (RFC 5401: up at once, down
    # by 0.9 per probe interval)
    snd2, rx2 = make_session(blob, cc_preauth=False)
    done2, got2 = run(snd2, rx2, t_end=12.0)
    print("post-auth CC: sender GRTT", snd2.engine.grtt, "EOT at", done2)
    assert got2 == [blob]
    assert snd2.engine.grtt > 0.2
    assert done2 > 3 * done_at
    assert "cc_hint.applied" not in rx2.stats


def _state(eng: NormReceiver) -> Any:
    """Everything of the receiver except CC timing (objects, data, NACK/ACK state)."""
    out: dict[Any, Any] = {"senders": sorted(eng.senders), "events": len(eng._events)}
    out["stats"] = {k: v for k, v in eng.stats.items() if not k.startswith("cc_hint.")}
    for sid, snd in eng.senders.items():
        objs = {
            o.ordinal: (
                o.oid,
                o.finished,
                o.blocks_done,
                o.nbytes,
                None if o.buf is None else bytes(o.buf),
                {b: sorted(blk.recv) for b, blk in o.blocks.items()},
            )
            for o in snd.objects.values()
        }
        out[sid] = (
            objs,
            sorted(snd.done),
            snd.grtt,
            snd.backoff,
            snd.gsize,
            snd.pos,
            snd.sync_ord,
            snd.max_ord,
            snd.nack_state,
            snd.nack_deadline,
            snd.seq_expected,
            snd.seq_received,
            snd.seq_lost,
            snd.last_heard,
            snd.inactivity_deadline,
            list(snd.ack_pending),
            snd.ended,
        )
    return out


def test_forged_cc_probe_only_moves_cc_timing() -> None:
    """A forged NORM_CMD(CC) (a genuine probe with another cc_sequence and a send_time
    10 ms later, sent 10 ms later: plausible, see tests/test_hostile_norm.py for the
    refused ones; a bad MAC) inside the safe window: pre-auth it can set what the next
    feedback echoes
    (grtt_response, EXT_CC cc_sequence/flags/rtt) and when the NORM_ACK(CC) goes out --
    CC timing only, until the next genuine probe.  No object, data, NACK/ACK or
    sender-liveness state changes, and TESLA still drops it as bad_mac, never released."""
    blob = random.Random(4).randbytes(1_000_000)  # ~0.5 s of data
    snd, rx = make_session(blob)
    eng = rx.engine
    forged: list[bytes] = []
    seen: list[tuple[bytes, float]] = []
    released: list[bytes] = []
    checked: list[bool] = []

    real_send = snd.datagrams_to_send

    def send(now: float) -> list[tuple[bytes, Any]]:
        out = real_send(now)
        for data, _ in out:
            if data[0] & 15 == M.NORM_CMD and data[12] == M.CMD_CC and now > T_START + 0.5:
                seen.append((data, now))
        return out

    snd.datagrams_to_send = send  # type: ignore[method-assign]

    def inject(now: float) -> list[bytes]:
        if seen and not forged and now >= seen[0][1] + 0.01:
            data = bytearray(seen[0][0])
            seq = int.from_bytes(data[14:16], "big")
            data[14:16] = ((seq + 100) & 0xFFFF).to_bytes(2, "big")
            t = int.from_bytes(data[16:20], "big") * 1_000_000
            t += int.from_bytes(data[20:24], "big") + 10_000
            data[16:20] = (t // 1_000_000).to_bytes(4, "big")
            data[20:24] = (t % 1_000_000).to_bytes(4, "big")
            forged.append(bytes(data))
            return [forged[0]]
        return []

    real_rx = rx.receive_datagram

    def receive(data: bytes, addr: Any, now: float) -> None:
        if forged and data == forged[0]:
            s = eng.senders[1]
            before = _state(eng)
            applied = eng.stats.get("cc_hint.applied", 0)
            real_rx(data, addr, now)
            assert eng.stats["cc_hint.applied"] == applied + 1  # it did reach CC...
            assert s.cc_sequence == int.from_bytes(data[14:16], "big")
            assert s.cc_send_time == (
                int.from_bytes(data[16:20], "big"),
                int.from_bytes(data[20:24], "big"),
            )
            assert _state(eng) == before  # ...and nothing else
            checked.append(True)
            return
        real_rx(data, addr, now)

    rx.receive_datagram = receive  # type: ignore[method-assign]
    real_eng_rx = eng.receive_datagrams  # the batch entry the wrapper releases through

    def eng_rx(datagrams: Any, addrs: Any, times: Any) -> None:
        released.extend(datagrams)
        real_eng_rx(datagrams, addrs, times)

    eng.receive_datagrams = eng_rx  # type: ignore[method-assign]
    done_at, got = run(snd, rx, t_end=4.0, inject=inject)
    assert checked == [True]
    assert got == [blob]
    st = rx.stats
    assert st["tesla.drop.bad_mac"] == 1
    assert forged[0] not in released
    assert seen[0][0] in released  # the genuine probe it was made from
    # the genuine probes that followed took the CC timing back
    s = eng.senders.get(1)
    if s is not None and s.cc_send_time is not None:
        assert s.cc_send_time != (
            int.from_bytes(forged[0][16:20], "big"),
            int.from_bytes(forged[0][20:24], "big"),
        )
    assert snd.engine.grtt < 0.05


@pytest.mark.parametrize("kind", ["data", "unknown_sender", "malformed"])
def test_hint_ignores_everything_but_known_cc(kind: str) -> None:
    """The engine method alone: non-CC messages, probes of unknown senders and garbage
    change nothing (no sender is created)."""
    eng = NormReceiver(NRC(node_id=10))
    cc = M.NormCmdCC(
        sequence=1,
        source_id=1,
        instance_id=77,
        grtt=10,
        backoff=4,
        gsize=5,
        cc_sequence=3,
        send_time_sec=1000,
        send_time_usec=0,
    ).encode()
    if kind == "data":
        msg = bytes([0x10 | M.NORM_DATA]) + cc[1:]
    elif kind == "unknown_sender":
        msg = cc
    else:
        msg = cc[:1] + b"\xff" + cc[2:]  # hdr_len beyond the message
    eng.congestion_control_hint(msg, 1.0)
    assert eng.senders == {}
    if kind == "malformed":
        assert eng.stats == {"cc_hint.malformed": 1}
    elif kind == "unknown_sender":
        assert eng.stats == {"cc_hint.unknown_sender": 1}
    else:
        assert eng.stats == {}
    assert not eng.datagrams_to_send(2.0)
