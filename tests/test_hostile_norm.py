"""Issue 15, NORM part: hostile input must not cost more than a stated, charged bound.

Each test is a regression test of one finding (they failed before the fix):

1. NORM_INFO announcing a huge geometry (2^21 blocks) built per-block lists, uncharged.
2. Stream data was not held to ``max_bytes``.
3. Overheard (forged) NACKs expanded ranges into ESI sets without bound; the sender
   expanded NACK ranges and aggregated repair state without bound.
4. Forged overheard NACKs suppressed a receiver's real NACK for ever, also for
   objects/blocks the receiver did not know.
5. Forged NORM_CMD(CC) probes (stale send time) made the receiver echo them, and an echo
   that answers no probe we sent moved the sender's GRTT to its clamp.

Figures (tracemalloc) go in docs/security/norm.md.
"""

from __future__ import annotations

import random
import tracemalloc
from collections.abc import Callable
from typing import Any

import pytest

from alc.fec import partition
from norm import messages as M
from norm import receiver as R
from norm.receiver import NormReceiver, ObjectReceived, StreamData
from norm.receiver import ReceiverConfig as NRC
from norm.sender import MAX_NACK_EXPANSION, MAX_REPAIR_SYMBOLS, NormSender, NormSenderConfig

T0 = 1_700_000_000.0


def peak_of(fn: Callable[[], Any]) -> int:
    """Peak bytes traced (tracemalloc) while ``fn`` runs, above what was traced before."""
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        fn()
        return tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()


def hdr(src: int = 1, inst: int = 77, seq: int = 0) -> dict[str, int]:
    return {
        "sequence": seq,
        "source_id": src,
        "instance_id": inst,
        "grtt": 10,
        "backoff": 4,
        "gsize": 5,
    }


def info_msg(object_size: int, segment_size: int, block_len: int, oid: int = 0) -> bytes:
    fti = M.ExtFti.build(5, object_size, segment_size, block_len, 0)
    return M.NormInfo(
        **hdr(), flags=M.FLAG_INFO, fec_id=5, object_id=oid, extensions=[fti], payload=b"x"
    ).encode()


def drain(snd: NormSender, t0: float, t1: float, step: float = 0.001) -> list[bytes]:
    out = []
    t = t0
    while t < t1:
        out.extend(d for d, _ in snd.datagrams_to_send(t))
        t += step
    return out


# --------------------------------------------------------------------------- 1. geometry
def test_geometry_matches_rfc5052_partition() -> None:
    rng = random.Random(1)
    for _ in range(300):
        symbols, b = rng.randint(0, 5000), rng.randint(1, 300)
        lens = partition(symbols, 1, b)
        geo = R._Geometry(symbols, b)
        starts = R._Geometry(symbols, b, starts=True)
        assert list(geo) == lens
        assert [starts[i] for i in range(len(starts))] == [sum(lens[:i]) for i in range(len(lens))]


def test_info_announcing_2pow21_blocks_costs_what_it_is_charged() -> None:
    """One 32-byte NORM_INFO (segment 1, block length 1, 2^21 bytes) used to add 112 MB
    of per-block lists, counted as 0 bytes."""
    eng = NormReceiver(NRC(node_id=10, max_object_blocks=1 << 21))
    pkt = info_msg(1 << 21, 1, 1)
    peak = peak_of(lambda: eng.receive_datagram(pkt, None, T0))
    o = eng.senders[1].objects[0]
    assert len(o.block_lens) == 1 << 21  # the geometry is known...
    assert eng._bytes >= R.OBJECT_STATE_BYTES  # ...and the object's state is charged
    print("NORM_INFO 2^21 blocks: peak", peak, "charged", eng._bytes)
    assert peak < 64 * 1024, peak


def test_geometry_limit_is_a_counted_drop() -> None:
    eng = NormReceiver(NRC(node_id=10))  # max_object_blocks = 2^18
    eng.receive_datagram(info_msg(1 << 19, 1, 1), None, T0)
    assert eng.stats["drop.bad_geometry"] == 1
    assert eng._bytes == 0  # aborted: everything given back


def test_nonuniform_blocks_decode_with_parity() -> None:
    """Blocks of two lengths (RFC 5052 §9.1) decoded from parity with the one-block
    scheme the receiver now builds."""
    snd = NormSender(
        NormSenderConfig(
            node_id=1,
            instance_id=77,
            segment_size=100,
            block_size=8,
            num_parity=4,
            auto_parity=4,
            rate=1e9,
            seed=1,
        )
    )
    blob = random.Random(2).randbytes(100 * 45 - 17)  # 45 segments: blocks 8,8,8,7,7,7
    snd.enqueue_data(blob)
    pkts = drain(snd, T0, T0 + 0.05)
    eng = NormReceiver(NRC(node_id=10))
    for p in pkts:
        if p[0] & 15 == M.NORM_DATA:
            m = M.decode(p)
            assert isinstance(m, M.NormData)
            if m.esi in (0, 3) and m.sbn in (0, 4):
                continue  # two source symbols lost in a long and in a short block
        eng.receive_datagram(p, None, T0 + 0.05)
    got = [e for e in iter(eng.next_event, None) if isinstance(e, ObjectReceived)]
    assert [e.data for e in got] == [blob]
    assert eng.stats["rx.fec_blocks_decoded"] == 2
    assert eng._bytes == 0


def test_many_blocks_are_charged_per_block() -> None:
    """Blocks created by data packets (segment 1, block length 1) are charged."""
    eng = NormReceiver(NRC(node_id=10, max_bytes=1 << 20, max_object_blocks=1 << 21))
    eng.receive_datagram(info_msg(1 << 21, 1, 1), None, T0)  # 2 MiB > max_bytes: no buffer
    assert eng.stats.get("drop.object_too_large") == 1
    eng2 = NormReceiver(NRC(node_id=10, max_bytes=1 << 20, max_object_blocks=1 << 21))
    eng2.receive_datagram(info_msg(1 << 19, 1, 1), None, T0)
    fti = M.ExtFti.build(5, 1 << 19, 1, 1, 0)
    for sbn in range(4000):
        d = M.NormData(
            **hdr(seq=sbn + 1),
            flags=0,
            fec_id=5,
            object_id=0,
            sbn=sbn,
            esi=0,
            extensions=[fti],
            payload=b"z",
        )
        eng2.receive_datagram(d.encode(), None, T0)
    assert eng2._bytes <= 1 << 20
    assert eng2.stats.get("drop.buffer_full", 0) >= 1  # 4000 blocks of state did not fit


def test_first_data_allocates_one_block_not_the_object() -> None:
    """One 1.4 KB NORM_DATA announcing a 64 MiB object used to get a zeroed 64 MiB
    buffer; now only its block (64 x 1400 B) is allocated and charged."""
    eng = NormReceiver(NRC(node_id=10))
    fti = M.ExtFti.build(5, 64 << 20, 1400, 64, 0)
    pkt = M.NormData(
        **hdr(),
        flags=0,
        fec_id=5,
        object_id=0,
        sbn=0,
        esi=0,
        extensions=[fti],
        payload=bytes(1400),
    ).encode()
    peak = peak_of(lambda: eng.receive_datagram(pkt, None, T0))
    print("NORM_DATA announcing 64 MiB: peak", peak, "charged", eng._bytes)
    assert eng._bytes < 128 * 1024
    assert peak < 256 * 1024, peak


# --------------------------------------------------------------------------- 2. streams
def test_stream_held_to_max_bytes() -> None:
    """A stream whose blocks never complete (one source segment of each lost, no parity)
    used to be held beyond max_bytes (403 MB against 256 MiB)."""
    limit = 1 << 20
    snd = NormSender(
        NormSenderConfig(
            node_id=1,
            instance_id=77,
            segment_size=1000,
            block_size=16,
            num_parity=0,
            rate=1e9,
            seed=1,
            stream_buffer_blocks=4096,
        )
    )
    oid = snd.open_stream()
    blob = random.Random(5).randbytes(4_000_000)
    snd.stream_write(oid, blob)
    snd.stream_flush(oid)
    pkts = [
        p
        for p in drain(snd, T0, T0 + 0.1, 0.002)
        if p[0] & 15 == M.NORM_DATA and M.decode(p).esi != 1  # type: ignore[union-attr]
    ]
    assert len(pkts) > 3000
    eng = NormReceiver(NRC(node_id=10, max_bytes=limit, stream_max_blocks=4096))
    high = delivered = 0

    def feed() -> None:
        nonlocal high, delivered
        for p in pkts:
            eng.receive_datagram(p, None, T0 + 0.1)
            high = max(high, eng._bytes)
            for e in iter(eng.next_event, None):  # the application takes what is delivered
                delivered += len(e.data) if isinstance(e, StreamData) else 0

    peak = peak_of(feed)
    print("stream: charged high", high, "tracemalloc peak", peak, "delivered", delivered)
    assert high <= limit
    assert eng.stats.get("drop.stream_evicted", 0) + eng.stats.get("drop.buffer_full", 0) > 0
    assert peak < 3 * limit, peak  # the held bytes plus the packets' own objects
    assert delivered > len(blob) // 2  # holes are skipped when the buffer is full


# --------------------------------------------------------------------------- 3./4. NACKs
def lossy_receiver(
    drop: Callable[[M.NormData], bool], segment_size: int = 1000, block_size: int = 8
) -> tuple[NormReceiver, NormSender, int]:
    """A receiver that got an object of 64,000 bytes (default: 8 blocks) but the dropped
    segments; it is in NACK backoff for them."""
    snd = NormSender(
        NormSenderConfig(
            node_id=1,
            instance_id=77,
            segment_size=segment_size,
            block_size=block_size,
            num_parity=4,
            rate=1e9,
            seed=1,
        )
    )
    oid = snd.enqueue_data(random.Random(6).randbytes(64_000))
    eng = NormReceiver(NRC(node_id=10), rng=random.Random(1))
    for p in drain(snd, T0, T0 + 0.02):
        m = M.decode(p)
        if isinstance(m, M.NormData) and drop(m):
            continue
        eng.receive_datagram(p, None, T0 + 0.02)
    return eng, snd, oid


def forged_nack(
    oid: int, sbn: int, form: int, flags: int, lo: int, hi: int, fec: int = 2, node: int = 99
) -> bytes:
    a = M.RepairItem(fec, oid, sbn, lo, 8 if fec == 129 else 0, m=16 if fec == 2 else 8)
    b = M.RepairItem(fec, oid, sbn, hi, 8 if fec == 129 else 0, m=16 if fec == 2 else 8)
    items = [a, b] if form == M.NACK_RANGES else [a]
    return M.NormNack(0, node, 1, 77, requests=[M.RepairRequest(form, flags, items)]).encode()


def test_overheard_forged_nacks_are_bounded() -> None:
    """One 44-byte forged NACK (ESIs 0..65535 of a block) heard during our backoff used to
    add 4 MB; 16 of them (distinct blocks) 64 MB."""
    eng, _, oid = lossy_receiver(lambda m: m.sbn == 0 and m.esi == 2)
    s = eng.senders[1]
    assert s.nack_state == "backoff"
    nacks = [
        forged_nack(oid, sbn, M.NACK_RANGES, M.NACK_SEGMENT, 0, 65535, fec=2) for sbn in range(16)
    ]
    assert len(nacks[0]) == 44

    def feed() -> None:
        for n in nacks:
            eng.receive_datagram(n, None, T0 + 0.021)

    peak = peak_of(feed)
    print("16 forged NACKs overheard: peak", peak)
    assert eng.stats["rx.nack_overheard"] == 16
    assert peak < 256 * 1024, peak
    # blocks 0..7 are known: clipped to the code length, kept as ranges
    assert all(r == [(0, 254)] for r in s.heard_segs.values())
    assert sorted(s.heard_segs) == [(0, b) for b in range(8)]


def test_heard_ranges_capped_per_cycle() -> None:
    eng, _, oid = lossy_receiver(lambda m: m.sbn == 1, 4, 1)  # 16000 blocks of 1
    s = eng.senders[1]
    assert s.nack_state == "backoff"
    for i in range(R.MAX_HEARD_RANGES + 10):  # disjoint block ranges
        eng.receive_datagram(
            forged_nack(oid, 2 * i + 1, M.NACK_ITEMS, M.NACK_BLOCK, 0, 0, fec=5), None, T0
        )
    assert s.heard_ranges <= R.MAX_HEARD_RANGES
    assert eng.stats["drop.nack_heard_full"] >= 1


def run_pair(
    eng: NormReceiver,
    snd: NormSender,
    t0: float,
    t1: float,
    forge: Callable[[float], list[bytes]] | None = None,
) -> list[bytes]:
    """Sender <-> receiver, no loss, forged datagrams to the receiver only."""
    got = []
    t = t0
    while t < t1:
        for d, _ in snd.datagrams_to_send(t):
            eng.receive_datagram(d, None, t)
        if forge is not None:
            for d in forge(t):
                eng.receive_datagram(d, None, t)
        for d, _ in eng.datagrams_to_send(t):
            snd.receive_datagram(d, None, t)
        got.extend(e.data for e in iter(eng.next_event, None) if isinstance(e, ObjectReceived))
        t += 0.002
    return got


def test_forged_nacks_delay_our_nack_one_cycle_at_most() -> None:
    """A forged NACK for the whole object during every backoff used to suppress our NACK
    for ever (the object was never repaired).  Now a need suppressed once is NACKed in
    the next cycle."""
    eng, snd, oid = lossy_receiver(lambda m: m.sbn == 2 and m.esi == 5 and not m.flags & 1)
    blob_len = 64_000

    def forge(t: float) -> list[bytes]:
        return [forged_nack(oid, 0, M.NACK_ITEMS, M.NACK_OBJECT, 0, 0, fec=5)]

    got = run_pair(eng, snd, T0 + 0.02, T0 + 8.0, forge)
    st = eng.stats
    print("forged NACK suppression:", {k: v for k, v in st.items() if k.startswith("nack.")})
    assert st["nack.suppressed"] >= 1
    assert st["nack.suppression_overridden"] >= 1
    assert st["nack.sent"] >= 1
    assert [len(g) for g in got] == [blob_len]


def test_claims_about_unknown_content_never_suppress() -> None:
    eng, _, oid = lossy_receiver(lambda m: m.sbn == 0 and m.esi == 2)
    s = eng.senders[1]
    for n in (
        forged_nack(oid + 5, 0, M.NACK_ITEMS, M.NACK_OBJECT, 0, 0, fec=5),  # future object
        forged_nack(oid, 9, M.NACK_ITEMS, M.NACK_BLOCK, 0, 0, fec=5),  # no block 9
        forged_nack(oid, 100, M.NACK_ITEMS, M.NACK_SEGMENT, 2, 0, fec=5),
    ):
        eng.receive_datagram(n, None, T0 + 0.021)
    assert not s.heard_objects and not s.heard_blocks and not s.heard_segs
    eng.handle_timer(s.nack_deadline)
    assert eng.stats.get("nack.suppressed", 0) == 0
    assert eng.stats["nack.sent"] == 1


def big_sender() -> tuple[NormSender, int]:
    snd = NormSender(
        NormSenderConfig(
            node_id=1,
            instance_id=77,
            segment_size=100,
            block_size=1024,
            num_parity=1024,
            rate=1e9,
            seed=1,
        )
    )
    oid = snd.enqueue_data(random.Random(7).randbytes(5_000_000))  # 49 blocks of 1024
    return snd, oid


def sender_nack(snd: NormSender, oid: int, sbn0: int, sbn1: int, node: int = 99) -> bytes:
    fec, m = snd.fec_id, snd.fec_m
    a = M.RepairItem(fec, oid, sbn0, 0, m=m)
    b = M.RepairItem(fec, oid, sbn1, 2047, m=m)
    req = M.RepairRequest(M.NACK_RANGES, M.NACK_SEGMENT, [a, b])
    return M.NormNack(0, node, 1, snd.instance_id, requests=[req]).encode()


def test_sender_nack_expansion_bounded() -> None:
    """One NACK range over every symbol of a 49-block object (2048 ESIs per block) used to
    expand into 100,000 ESIs of repair state."""
    snd, oid = big_sender()
    pkt = sender_nack(snd, oid, 0, 48)
    peak = peak_of(lambda: snd.receive_datagram(pkt, None, T0))
    held = sum(len(b.esis) for n in snd._agg.values() for b in n.blocks.values())
    print("sender, one NACK over 100k symbols: peak", peak, "held ESIs", held)
    assert snd.stats["drop.nack_expansion"] >= 1
    assert held <= MAX_NACK_EXPANSION
    assert peak < 4 * 1024 * 1024, peak


def test_sender_repair_state_bounded() -> None:
    snd, oid = big_sender()

    def feed() -> None:
        for i in range(49):  # one block each, from many "receivers"
            snd.receive_datagram(sender_nack(snd, oid, i, i, node=100 + i), None, T0)

    peak = peak_of(feed)
    held = sum(len(b.esis) for n in snd._agg.values() for b in n.blocks.values())
    print("sender, 49 NACKs: peak", peak, "held ESIs", held)
    assert held <= MAX_REPAIR_SYMBOLS
    assert snd.stats["drop.repair_state_full"] >= 1
    assert peak < 12 * 1024 * 1024, peak


# --------------------------------------------------------------------------- 5. CC probes
def test_unmatched_echo_moves_neither_grtt_nor_cc() -> None:
    """An ACK(CC) echoing a 50-s-old send time (what a forged probe makes a receiver send)
    moved the sender's GRTT from 0.5 s to its 10 s clamp."""
    snd = NormSender(NormSenderConfig(node_id=1, instance_id=77, seed=1, cc=True))
    snd.enqueue_data(b"x" * 10_000)
    drain(snd, T0, T0 + 0.2)
    assert snd._probe_sent_time
    seq = max(snd._probe_sent_time)
    grtt0, rate0 = snd.grtt_est.grtt, snd.rate
    ext = M.ExtCC(seq, M.CC_CLR | M.CC_RTT, 0x40, 0, 0x1000)
    old = T0 - 50.0
    for i, (sec, usec, cc_seq) in enumerate(
        [(int(old), 0, seq), (int(T0) + 1, 0, (seq + 7) & 0xFFFF), (int(T0) - 1, 0, seq)]
    ):
        e = M.ExtCC(cc_seq, ext.cc_flags, ext.cc_rtt, ext.cc_loss, ext.cc_rate)
        ack = M.NormAck(i, 5, 1, 77, M.ACK_CC, 0, sec, usec, [e]).encode()
        snd.receive_datagram(ack, None, T0 + 0.25)
    assert snd.grtt_est.grtt == grtt0
    assert snd.rate == rate0
    assert snd.stats["drop.cc_echo_unmatched"] == 3
    assert not snd.cc.nodes  # type: ignore[union-attr]


@pytest.mark.parametrize("age", [50.0, 1000.0])
def test_forged_stale_probes_do_not_reach_the_echo(age: float) -> None:
    """51 forged NORM_CMD(CC) (a genuine probe with a send time ``age`` s old, another
    cc_sequence each) inside the TESLA safe window: they used to be answered with 50
    NORM_ACK(CC) echoing the old time, and the sender's GRTT went to its clamp."""
    from test_cc_preauth import T_START, make_session, run

    blob = random.Random(4).randbytes(1_000_000)
    snd, rx = make_session(blob)
    seen: list[bytes] = []
    forged: list[bytes] = []
    real_send = snd.datagrams_to_send

    def send(now: float) -> list[tuple[bytes, Any]]:
        out = real_send(now)
        for data, _ in out:
            if data[0] & 15 == M.NORM_CMD and data[12] == M.CMD_CC and now > T_START + 0.5:
                seen.append(data)
        return out

    snd.datagrams_to_send = send  # type: ignore[method-assign]

    def inject(now: float) -> list[bytes]:
        if seen and len(forged) < 51 and int((now - T_START) * 1000) % 10 == 0:
            data = bytearray(seen[0])
            seq = int.from_bytes(data[14:16], "big")
            data[14:16] = ((seq + 100 + len(forged)) & 0xFFFF).to_bytes(2, "big")
            sec = int.from_bytes(data[16:20], "big") - int(age)
            data[16:20] = sec.to_bytes(4, "big")
            forged.append(bytes(data))
            return [forged[-1]]
        return []

    _, got = run(snd, rx, t_end=4.0, inject=inject)
    st = rx.stats
    print(
        "forged stale probes:",
        {k: v for k, v in st.items() if k.startswith("cc_hint")},
        "sender GRTT",
        snd.engine.grtt,
    )
    assert len(forged) == 51
    assert got == [blob]
    assert st.get("cc_hint.stale", 0) + st.get("cc_hint.implausible", 0) == 51
    assert snd.engine.grtt < 0.05
    assert st["tesla.drop.bad_mac"] == 51


def test_authenticated_session_forged_feedback() -> None:
    """Through the TESLA session: receiver feedback carries no tag, so forged NACKs reach
    the NORM engine.  A forged NACK for the whole object heard every millisecond used to
    suppress our real NACK for ever (a lost segment was never repaired); a NORM_REPORT is
    dropped by the session, counted."""
    from test_cc_preauth import T_START, make_session, run

    blob = random.Random(8).randbytes(200_000)
    # the sender stays in the session (no NORM_CMD(EOT) after its flush): a repair that
    # a suppressed cycle delayed must still find it, whatever its flush duration
    snd, rx = make_session(blob, end=False)
    lost: list[bytes] = []
    real_send = snd.datagrams_to_send

    def send(now: float) -> list[tuple[bytes, Any]]:
        out = real_send(now)
        if not lost:
            for i, (data, _a) in enumerate(out):
                if data[0] & 15 == M.NORM_DATA and data[16:20] == bytes([0, 0, 1, 3]):
                    lost.append(data)  # sbn 1, esi 3: lost once
                    return out[:i] + out[i + 1 :]
        return out

    snd.datagrams_to_send = send  # type: ignore[method-assign]
    oid = 0
    report = bytes([0x10 | M.NORM_REPORT, 2]) + bytes(6)

    def inject(now: float) -> list[bytes]:
        if now < T_START + 0.05:
            return []
        return [forged_nack(oid, 0, M.NACK_ITEMS, M.NACK_OBJECT, 0, 0, fec=5), report]

    _, got = run(snd, rx, t_end=6.0, inject=inject)
    st = rx.stats
    print("session, forged feedback:", {k: v for k, v in st.items() if k.startswith("nack.")})
    assert lost
    assert got == [blob]
    assert st["nack.suppressed"] >= 1 and st["nack.sent"] >= 1
    assert st["tesla.drop.report"] > 1000


def test_feedback_replay_window_rules() -> None:
    """RFC 5776 §6.2.2 at the sender: per receiver, a sequence heard already or older than
    the window is a replay; reordering inside the window and the 16-bit wrap are not."""
    from norm.sender import FeedbackReplay

    stats: dict[str, int] = {}
    r = FeedbackReplay(stats, window=8, sources=2)
    assert not r.replayed(5, 0xFFFE)
    assert not r.replayed(5, 0x0001)  # ahead across the wrap
    assert not r.replayed(5, 0xFFFF)  # late, inside the window
    assert r.replayed(5, 0xFFFF) and r.replayed(5, 0x0001) and r.replayed(5, 0xFFFE)
    assert not r.replayed(5, 20)
    assert r.replayed(5, 0x0001)  # now older than the window
    assert not r.replayed(6, 20)  # another receiver has its own space
    assert not r.replayed(7, 1) and stats["drop.replay_state_evicted"] == 1  # 5 evicted
    assert not r.replayed(5, 20)  # a new window for the evicted receiver
    # a receiver that never sets its sequence (NRL NORM sends 0) is not checked
    stats.clear()
    assert not any(r.replayed(9, 0) for _ in range(5))
    assert stats["rx.feedback_unsequenced"] == 4
