"""NormReceiver (sans-I/O) against a scripted sender built from norm.messages + alc.fec."""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field

import pytest

from alc.fec import OTI, get_scheme, partition
from norm import messages as M
from norm.quantize import quantize_gsize, quantize_rate, quantize_rtt, unquantize_rtt
from norm.receiver import (
    ApplicationCommand,
    NormReceiver,
    ObjectAborted,
    ObjectReceived,
    ReceiverConfig,
    SenderEnded,
    StreamData,
    StreamEnd,
)

SRC = 1
INST = 0x4D2
GRTT_Q = quantize_rtt(0.1)
GRTT = unquantize_rtt(GRTT_Q)
K = 4
CYCLE = K * GRTT + 0.05  # longest NACK backoff, well below the 4 s inactivity timeout


def payload(name: str, n: int) -> bytes:
    out = bytearray()
    i = 0
    while len(out) < n:
        out += hashlib.sha256(f"{name}:{i}".encode()).digest()
        i += 1
    return bytes(out[:n])


@dataclass
class Sender:
    """Scripted NORM sender: builds INFO/DATA/CMD datagrams for the receiver under test."""

    fec_id: int = 5
    seg: int = 100
    blk: int = 8
    npar: int = 4
    m: int = 8
    gsize: int = 10
    inst: int = INST
    src: int = SRC
    last_is_max_n: bool = False
    seq: int = 0
    objects: dict[int, dict] = field(default_factory=dict)

    def hdr(self) -> tuple[int, int, int, int, int, int]:
        self.seq = (self.seq + 1) & 0xFFFF
        return (self.seq, self.src, self.inst, GRTT_Q, K, quantize_gsize(self.gsize))

    def fti(self, size: int) -> M.ExtFti:
        return M.ExtFti.build(
            self.fec_id,
            size,
            self.seg,
            self.blk,
            self.npar,
            m=self.m,
            last_is_max_n=self.last_is_max_n,
        )

    def add(
        self,
        oid: int,
        data: bytes,
        flags: int = M.FLAG_FILE | M.FLAG_INFO,
        info: bytes | None = b"file.bin",
    ) -> None:
        max_n = self.blk + self.npar
        oti = OTI(self.fec_id, len(data), self.seg, self.blk, max_n if self.fec_id else 0, m=self.m)
        scheme = get_scheme(oti, rs_matrix="nrl") if self.fec_id else get_scheme(oti)
        blocks = partition(len(data), self.seg, self.blk)
        self.objects[oid] = dict(data=data, flags=flags, info=info, blocks=blocks, scheme=scheme)

    def info(self, oid: int) -> bytes:
        o = self.objects[oid]
        return M.NormInfo(
            *self.hdr(), o["flags"], self.fec_id, oid, [self.fti(len(o["data"]))], o["info"]
        ).encode()

    def source(self, oid: int, sbn: int) -> list[bytes]:
        o = self.objects[oid]
        first = sum(o["blocks"][:sbn])
        return [
            o["data"][(first + i) * self.seg : (first + i + 1) * self.seg]
            for i in range(o["blocks"][sbn])
        ]

    def data(self, oid: int, sbn: int, esi: int) -> bytes:
        o = self.objects[oid]
        k = o["blocks"][sbn]
        src = self.source(oid, sbn)
        if esi < k:
            sym = src[esi]
        else:
            sym = dict(o["scheme"].repair_symbols(sbn, src, esi - k + 1))[esi]
        return M.NormData(
            *self.hdr(),
            o["flags"],
            self.fec_id,
            oid,
            sbn,
            esi,
            k if self.fec_id == 129 else 0,
            [self.fti(len(o["data"]))],
            sym,
            self.m,
        ).encode()

    def all_source(self, oid: int, skip: set[tuple[int, int]] = frozenset()) -> list[bytes]:  # type: ignore[assignment]
        o = self.objects[oid]
        out = []
        if o["info"] is not None:
            out.append(self.info(oid))
        for sbn, k in enumerate(o["blocks"]):
            out += [self.data(oid, sbn, e) for e in range(k) if (sbn, e) not in skip]
        return out

    def flush(self, oid: int, sbn: int, esi: int, acking: list[int] | None = None) -> bytes:
        return M.NormCmdFlush(
            *self.hdr(), self.fec_id, oid, sbn, esi, 0, [], acking or [], self.m
        ).encode()

    def cc(
        self, cc_seq: int, t: float, rate: bool = True, nodes: list[M.CCNode] | None = None
    ) -> bytes:
        sec, usec = int(t), int((t - int(t)) * 1e6)
        exts: list[M.Extension] = [M.ExtRate(quantize_rate(125000))] if rate else []
        return M.NormCmdCC(*self.hdr(), cc_seq, sec, usec, 0, exts, nodes or []).encode()


def feed(
    rx: NormReceiver, pkts: list[bytes], t: float, dt: float = 0.001
) -> tuple[float, list[bytes]]:
    """Deliver packets one by one, firing timers; returns (time, datagrams sent)."""
    out: list[bytes] = []
    for p in pkts:
        out += run_until(rx, t)
        rx.receive_datagram(p, ("127.0.0.1", 6003), t)
        out += [b for b, _ in rx.datagrams_to_send(t)]
        t += dt
    return t, out


def run_until(rx: NormReceiver, t_end: float) -> list[bytes]:
    out: list[bytes] = []
    for _ in range(100000):
        t = rx.get_timer()
        if t is None or t > t_end:
            break
        rx.handle_timer(t)
        out += [b for b, _ in rx.datagrams_to_send(t)]
    return out


def events(rx: NormReceiver) -> list[object]:
    out = []
    while (e := rx.next_event()) is not None:
        out.append(e)
    return out


def nacks(raw: list[bytes]) -> list[M.NormNack]:
    return [m for m in map(M.decode, raw) if isinstance(m, M.NormNack)]


def req_summary(n: M.NormNack) -> list[tuple[int, int, list[tuple[int, int, int]]]]:
    return [(r.form, r.flags, [(i.object_id, i.sbn, i.esi) for i in r.items]) for r in n.requests]


# --------------------------------------------------------------------------- delivery / FEC


def test_segmentation_rfc5052_blocks_and_delivery() -> None:
    """98 segments with B = 32 -> blocks 25, 25, 24, 24 (norm.md §3.1, as NRL sends f100k.bin)."""
    s = Sender(seg=1024, blk=32, npar=16)
    data = payload("f100k.bin", 100000)
    s.add(10, data)
    assert s.objects[10]["blocks"] == [25, 25, 24, 24]
    rx = NormReceiver(ReceiverConfig(node_id=2))
    feed(rx, s.all_source(10), 100.0)
    ev = events(rx)
    assert len(ev) == 1 and isinstance(ev[0], ObjectReceived)
    assert ev[0].data == data and ev[0].name == "file.bin" and ev[0].kind == "file"
    assert ev[0].object_id == 10 and ev[0].source_id == SRC


@pytest.mark.parametrize(
    "fec_id,m,blk,npar",
    [(5, 8, 8, 4), (2, 8, 8, 4), (2, 16, 300, 20), (129, 8, 8, 4)],
)
def test_parity_repairs_decode(fec_id: int, m: int, blk: int, npar: int) -> None:
    s = Sender(fec_id=fec_id, m=m, seg=64, blk=blk, npar=npar)
    data = payload("obj", 64 * blk * 2 + 17)
    s.add(1, data)
    rx = NormReceiver(ReceiverConfig(node_id=2))
    k0, k1, k2 = s.objects[1]["blocks"]
    lost = {(0, 1), (0, 3), (1, 0), (1, k1 - 1), (2, 0)}
    t, _ = feed(rx, s.all_source(1, skip=lost), 10.0)
    assert not [e for e in events(rx) if isinstance(e, ObjectReceived)]
    reps = [
        s.data(1, 0, k0),
        s.data(1, 0, k0 + 1),
        s.data(1, 1, k1 + 2),
        s.data(1, 1, k1 + 3),
        s.data(1, 2, k2),
    ]
    feed(rx, reps, t)
    ev = [e for e in events(rx) if isinstance(e, ObjectReceived)]
    assert len(ev) == 1 and ev[0].data == data
    assert rx.stats["rx.fec_symbols_recovered"] == 5


def test_fec0_no_code_and_rfc_max_n_reading() -> None:
    s = Sender(fec_id=0, seg=50, blk=4, npar=0)
    data = payload("nc", 777)
    s.add(3, data, flags=0, info=None)
    rx = NormReceiver(ReceiverConfig(node_id=2))
    feed(rx, s.all_source(3), 1.0)
    ev = events(rx)
    assert isinstance(ev[0], ObjectReceived) and ev[0].data == data and ev[0].kind == "data"
    # RFC 5510 max_n semantics in EXT_FTI, receiver configured for it
    s2 = Sender(fec_id=5, seg=50, blk=4, npar=2, last_is_max_n=True)
    s2.add(4, data)
    rx2 = NormReceiver(ReceiverConfig(node_id=2, fti_last_is_max_n=True))
    t, _ = feed(rx2, s2.all_source(4, skip={(0, 0)}), 1.0)
    feed(rx2, [s2.data(4, 0, 4)], t)
    assert [e.data for e in events(rx2) if isinstance(e, ObjectReceived)] == [data]


def test_nrl_short_parity_and_redundant_parity_tolerated() -> None:
    """NRL sends parity as long as the longest source segment in the block (not segment_size),
    and extra parity beyond what was needed must be ignored."""
    s = Sender(seg=1024, blk=32, npar=16)
    data = payload("small", 300)  # one block, one short segment
    s.add(1, data)
    src = s.source(1, 0)
    par = dict(s.objects[1]["scheme"].repair_symbols(0, src, 2))
    rx = NormReceiver(ReceiverConfig(node_id=2))
    short = M.NormData(
        *s.hdr(), M.FLAG_FILE | M.FLAG_INFO, 5, 1, 0, 1, 0, [s.fti(300)], par[1][:300]
    ).encode()
    feed(rx, [s.info(1), short, s.data(1, 0, 2)], 1.0)
    ev = [e for e in events(rx) if isinstance(e, ObjectReceived)]
    assert ev and ev[0].data == data
    assert rx.stats["rx.fec_symbols_recovered"] == 1


def test_sync_policy_and_duplicates() -> None:
    s = Sender()
    for oid in (1, 2):
        s.add(oid, payload(str(oid), 1500))
    rx = NormReceiver(ReceiverConfig(node_id=2))
    # join in the middle of object 1 (block 1): not a sync point
    t, out = feed(rx, [s.data(1, 1, 0), s.data(1, 1, 1)], 1.0)
    assert rx.stats["drop.not_synced"] == 2
    t, out2 = feed(rx, s.all_source(2) + s.all_source(2)[1:3], t)
    ev = events(rx)
    assert [e.object_id for e in ev if isinstance(e, ObjectReceived)] == [2]
    assert rx.stats["drop.old_object"] >= 2  # completed objects are behind the sync point
    # object 1 precedes the sync point: never NACKed
    t, out3 = feed(rx, [s.flush(2, 1, 7)], t)
    out3 += run_until(rx, t + 5)
    assert not nacks(out + out2 + out3)


# --------------------------------------------------------------------------- NACK content and timing


def lose_then_boundary(
    s: Sender, rx: NormReceiver, lost: set[tuple[int, int]], t: float = 50.0
) -> tuple[float, list[bytes]]:
    pkts = s.all_source(1, skip=lost)
    return feed(rx, pkts, t)


def test_nack_parity_first_at_block_boundary() -> None:
    s = Sender(seg=100, blk=8, npar=4)
    s.add(1, payload("a", 100 * 24))
    rx = NormReceiver(ReceiverConfig(node_id=2), rng=random.Random(5))
    # INFO + block 0 (lose 2 and 5) + first symbol of block 1 -> boundary -> backoff
    pkts = s.all_source(1, skip={(0, 2), (0, 5)})
    t, out = feed(rx, pkts[:8], 50.0)
    st = rx.senders[SRC]
    assert st.nack_state == "backoff"
    assert st.nack_deadline - (50.0 + 0.007) <= K * GRTT + 1e-9
    out += run_until(rx, t + CYCLE)
    ns = nacks(out)
    assert len(ns) == 1
    n = ns[0]
    assert (n.source_id, n.server_id, n.instance_id) == (2, SRC, INST)
    assert req_summary(n) == [(M.NACK_ITEMS, M.NACK_SEGMENT, [(1, 0, 8), (1, 0, 9)])]
    assert n.grtt_response_sec == 0  # no CMD(CC) heard yet
    assert rx.stats["nack.sent"] == 1
    # holdoff: another boundary inside (K+2)*GRTT starts no cycle
    assert st.nack_state == "holdoff"
    t, out = feed(rx, pkts[8:], t + 0.01)
    assert not nacks(out)
    # repairs: parity 8 and 9 complete the object
    t, _ = feed(rx, [s.data(1, 0, 8), s.data(1, 0, 9)], t)
    assert [type(e) for e in events(rx)] == [ObjectReceived]


def test_nack_second_cycle_requests_rest_of_first_set() -> None:
    s = Sender(seg=100, blk=8, npar=4)
    s.add(1, payload("a", 100 * 24))
    rx = NormReceiver(ReceiverConfig(node_id=2), rng=random.Random(1))
    pkts = s.all_source(1, skip={(0, 2), (0, 5), (0, 6)})
    t, out = feed(rx, pkts[:7], 50.0)
    out += run_until(rx, t + CYCLE)
    assert req_summary(nacks(out)[0]) == [(M.NACK_RANGES, M.NACK_SEGMENT, [(1, 0, 8), (1, 0, 10)])]
    # parity 9 arrives; the next cycle (FLUSH) asks for 8 and 10 only
    t, out = feed(rx, [s.data(1, 0, 9), s.flush(1, 2, 7)], t + 1)
    out += run_until(rx, t + CYCLE)
    assert req_summary(nacks(out)[0])[0] == (M.NACK_ITEMS, M.NACK_SEGMENT, [(1, 0, 8), (1, 0, 10)])


def test_nack_erasures_beyond_parity_ask_highest_source() -> None:
    s = Sender(seg=100, blk=8, npar=2)
    s.add(1, payload("a", 100 * 16))
    rx = NormReceiver(ReceiverConfig(node_id=2), rng=random.Random(2))
    t, out = feed(
        rx, s.all_source(1, skip={(0, 1), (0, 3), (0, 4), (0, 6)}) + [s.flush(1, 1, 7)], 50.0
    )
    out += run_until(rx, t + CYCLE)
    n = nacks(out)[0]
    # 4 erasures, 2 parity: all parity (8, 9) plus the highest missing sources (4, 6)
    esis = sorted(i.esi for r in n.requests for i in r.items)
    assert esis == [4, 6, 8, 9]


def test_nack_whole_block_object_and_info() -> None:
    s = Sender(seg=100, blk=4, npar=2)
    for oid in (1, 2, 3, 4):
        s.add(oid, payload(str(oid), 100 * 12))
    rx = NormReceiver(ReceiverConfig(node_id=2), rng=random.Random(3))
    pkts = s.all_source(1, skip={(1, e) for e in range(4)})  # object 1 loses block 1
    pkts += s.all_source(3)[1:]  # object 2 entirely lost, object 3 loses its NORM_INFO
    t, out = feed(rx, pkts, 50.0)
    out += run_until(rx, t + CYCLE)
    # the first cycle started at the block boundary inside object 1; its NACK goes up
    # through the most recently heard position (RFC 5740 §5.3), not only to that boundary
    assert req_summary(nacks(out)[0]) == [
        (M.NACK_ITEMS, M.NACK_BLOCK, [(1, 1, 0)]),
        (M.NACK_ITEMS, M.NACK_OBJECT, [(2, 0, 0)]),
        (M.NACK_ITEMS, M.NACK_INFO, [(3, 0, 0)]),
    ]
    t, out = feed(rx, [s.flush(3, 2, 3)], t + 1)
    out += run_until(rx, t + CYCLE)
    n = nacks(out)[0]
    assert req_summary(n) == [
        (M.NACK_ITEMS, M.NACK_BLOCK, [(1, 1, 0)]),
        (M.NACK_ITEMS, M.NACK_OBJECT, [(2, 0, 0)]),
        (M.NACK_ITEMS, M.NACK_INFO, [(3, 0, 0)]),
    ]
    assert M.decode(n.encode()) == n


def test_nack_ranges_and_truncation_to_segment_size() -> None:
    s = Sender(seg=40, blk=2, npar=0)
    s.add(1, payload("big", 40 * 200))
    rx = NormReceiver(ReceiverConfig(node_id=2), rng=random.Random(4))
    lost = {(b, 1) for b in range(100)}  # every block loses one symbol, no parity
    t, out = feed(rx, s.all_source(1, skip=lost) + [s.flush(1, 99, 1)], 50.0)
    out += run_until(rx, t + CYCLE)
    n = nacks(out)[0]
    payload_len = len(n.encode()) - 24
    assert payload_len <= 40  # truncated to the sender's segment size, lowest needs first
    assert n.requests[0].items[0].sbn == 0
    # runs of >= 3 consecutive symbols use the RANGES form
    s2 = Sender(seg=40, blk=8, npar=0)
    s2.add(1, payload("r", 40 * 16))
    rx2 = NormReceiver(ReceiverConfig(node_id=2), rng=random.Random(4))
    t, out = feed(
        rx2, s2.all_source(1, skip={(0, 2), (0, 3), (0, 4), (0, 6)}) + [s2.flush(1, 1, 7)], 50.0
    )
    out += run_until(rx2, t + CYCLE)
    assert req_summary(nacks(out)[0]) == [
        (M.NACK_RANGES, M.NACK_SEGMENT, [(1, 0, 2), (1, 0, 4)]),
        (M.NACK_ITEMS, M.NACK_SEGMENT, [(1, 0, 6)]),
    ]


def test_suppression_by_overheard_nack_and_repair_adv() -> None:
    s = Sender(seg=100, blk=8, npar=4)
    s.add(1, payload("a", 100 * 16))
    for kind in ("nack", "adv"):
        rx = NormReceiver(ReceiverConfig(node_id=2), rng=random.Random(7))
        t, out = feed(rx, s.all_source(1, skip={(0, 2), (0, 5)})[:8], 50.0, dt=0.0)
        assert rx.senders[SRC].nack_state == "backoff"
        req = M.RepairRequest(
            M.NACK_RANGES, M.NACK_SEGMENT, [M.RepairItem(5, 1, 0, 8), M.RepairItem(5, 1, 0, 10)]
        )
        if kind == "nack":
            other = M.NormNack(1, 3, SRC, INST, 0, 0, [], [req]).encode()
        else:
            other = M.NormCmdRepairAdv(*s.hdr(), 0, 0, [], [req]).encode()
        t, out2 = feed(rx, [other], t)
        out3 = run_until(rx, t + CYCLE)
        assert not nacks(out + out2 + out3), kind
        assert rx.stats["nack.suppressed"] == 1


def test_nack_suppression_option_off() -> None:
    """ReceiverConfig(nack_suppression=False): an overheard NACK covering us does not cancel."""
    s = Sender(seg=100, blk=8, npar=4)
    s.add(1, payload("a", 100 * 16))
    rx = NormReceiver(ReceiverConfig(node_id=2, nack_suppression=False), rng=random.Random(7))
    t, out = feed(rx, s.all_source(1, skip={(0, 2), (0, 5)})[:8], 50.0, dt=0.0)
    req = M.RepairRequest(
        M.NACK_RANGES, M.NACK_SEGMENT, [M.RepairItem(5, 1, 0, 8), M.RepairItem(5, 1, 0, 10)]
    )
    t, out2 = feed(rx, [M.NormNack(1, 3, SRC, INST, 0, 0, [], [req]).encode()], t)
    assert len(nacks(out + out2 + run_until(rx, t + CYCLE))) == 1
    assert rx.stats.get("nack.suppressed", 0) == 0


def test_not_suppressed_by_insufficient_overheard_nack() -> None:
    s = Sender(seg=100, blk=8, npar=4)
    s.add(1, payload("a", 100 * 16))
    rx = NormReceiver(ReceiverConfig(node_id=2), rng=random.Random(7))
    t, out = feed(rx, s.all_source(1, skip={(0, 2), (0, 5)})[:8], 50.0, dt=0.0)
    other = M.NormNack(
        1, 3, SRC, INST, 0, 0, [], [M.RepairRequest(1, 1, [M.RepairItem(5, 1, 0, 8)])]
    ).encode()
    t, _ = feed(rx, [other], t)
    assert len(nacks(run_until(rx, t + CYCLE))) == 1


def test_ssm_rule_suppresses_late_backoff() -> None:
    s = Sender(seg=100, blk=8, npar=4, gsize=10**6)
    s.add(1, payload("a", 100 * 16))
    sent = 0
    for seed in range(20):
        rx = NormReceiver(ReceiverConfig(node_id=2, ssm=True), rng=random.Random(seed))
        t, out = feed(rx, s.all_source(1, skip={(0, 2)})[:9], 50.0)
        sent += len(nacks(out + run_until(rx, t + CYCLE)))
        assert rx.stats.get("nack.suppressed_ssm", 0) + rx.stats.get("nack.sent", 0) == 1
    assert sent < 20  # large groups: most backoffs exceed (K-1)*GRTT


class Lan:
    """One sender, several receivers, independent or shared loss; receiver feedback is
    multicast to the other receivers when ``share_feedback``."""

    def __init__(self, n: int, share_feedback: bool, seed: int) -> None:
        self.rxs = [
            NormReceiver(ReceiverConfig(node_id=10 + i), rng=random.Random(seed * 100 + i))
            for i in range(n)
        ]
        self.share = share_feedback
        self.nacks_sent = 0
        self.t = 100.0
        self.requested: list[M.NormNack] = []

    def step(self, pkt: bytes | None, drop: set[int] = frozenset()) -> None:  # type: ignore[assignment]
        if pkt is not None:
            for i, rx in enumerate(self.rxs):
                if i not in drop:
                    rx.receive_datagram(pkt, ("127.0.0.1", 6003), self.t)
        for i, rx in enumerate(self.rxs):
            for b, _ in rx.datagrams_to_send(self.t):
                self.nacks_sent += 1
                self.requested.append(M.decode(b))  # type: ignore[arg-type]
                if self.share:
                    for j, other in enumerate(self.rxs):
                        if j != i:
                            other.receive_datagram(b, ("127.0.0.1", 6003), self.t + 0.0005)
        self.t += 0.002


def test_three_receivers_nack_suppression_reduces_feedback() -> None:
    """Common loss upstream of three receivers: with overheard NACKs fewer NACKs are sent."""
    s = Sender(seg=100, blk=8, npar=4, gsize=100)
    s.add(1, payload("x", 100 * 64))
    pkts = s.all_source(1, skip={(b, 3) for b in range(8)})
    counts = {}
    for share in (False, True):
        total = 0
        for seed in range(5):
            lan = Lan(3, share, seed)
            for p in pkts:
                lan.step(p)
            for _ in range(int(3 * K * GRTT / 0.002)):
                lan.step(None)
            total += lan.nacks_sent
        counts[share] = total
    assert counts[False] >= 3 * 5
    assert counts[True] < counts[False]


# --------------------------------------------------------------------------- FLUSH / ACK / CC


def test_flush_watermark_ack_and_nack() -> None:
    s = Sender(seg=100, blk=4, npar=2)
    s.add(1, payload("w", 100 * 8))
    rx = NormReceiver(ReceiverConfig(node_id=2), rng=random.Random(9))
    t, out = feed(rx, s.all_source(1, skip={(1, 2)}) + [s.flush(1, 1, 3, acking=[5, 2])], 50.0)
    out += run_until(rx, t + CYCLE)
    msgs = [M.decode(b) for b in out]
    assert [type(m) for m in msgs] == [M.NormNack]  # incomplete: NACK, no ACK
    t, out = feed(rx, [s.data(1, 1, 4), s.flush(1, 1, 3, acking=[2])], t + 1)
    out += run_until(rx, t + GRTT + 0.01)
    acks = [m for m in map(M.decode, out) if isinstance(m, M.NormAck)]
    assert len(acks) == 1
    a = acks[0]
    assert (a.ack_type, a.source_id, a.server_id, a.instance_id) == (M.ACK_FLUSH, 2, SRC, INST)
    assert a.watermark == M.RepairItem(5, 1, 1, 3)
    # a FLUSH not naming us gives no ACK; NORM_NODE_ANY does
    t, out = feed(rx, [s.flush(1, 1, 3, acking=[7])], t + 1)
    assert not run_until(rx, t + 1) and not out
    t, out = feed(rx, [s.flush(1, 1, 3, acking=[M.NODE_ANY])], t + 1)
    assert len(out + run_until(rx, t + 1)) == 1


def test_ack_req_and_application_command() -> None:
    s = Sender()
    rx = NormReceiver(ReceiverConfig(node_id=2), rng=random.Random(9))
    req = M.NormCmdAckReq(*s.hdr(), 16, 42, 0, [], [2]).encode()
    app = M.NormCmdApplication(*s.hdr(), 0, [], b"hello").encode()
    t, out = feed(rx, [req, app], 1.0)
    out += run_until(rx, t + 1)
    (a,) = [M.decode(b) for b in out]
    assert isinstance(a, M.NormAck) and (a.ack_type, a.ack_id, a.watermark) == (16, 42, None)
    assert any(isinstance(e, ApplicationCommand) and e.content == b"hello" for e in events(rx))


def test_cc_probe_answered_with_ack_cc_and_grtt_response() -> None:
    s = Sender()
    s.add(1, payload("c", 1000))
    rx = NormReceiver(ReceiverConfig(node_id=2), rng=random.Random(11))
    t0 = 1_800_000_000.25
    t, out = feed(rx, [s.cc(7, t0 - 0.05)], t0)
    out += run_until(rx, t0 + CYCLE)
    (a,) = [M.decode(b) for b in out]
    assert isinstance(a, M.NormAck) and a.ack_type == M.ACK_CC
    cc = a.cc()
    assert cc is not None and cc.cc_sequence == 7 and cc.cc_flags & M.CC_START
    held = a.grtt_response_sec + a.grtt_response_usec * 1e-6 - (t0 - 0.05)
    assert 0 <= held <= max(K, 4) * GRTT + 0.01
    # listed as CLR: immediate answer with the RTT the sender measured for us
    t, out = feed(
        rx,
        [s.cc(8, t0 + 20, nodes=[M.CCNode(2, M.CC_CLR | M.CC_RTT, quantize_rtt(0.01), 0)])],
        t0 + 20,
    )
    (a,) = [M.decode(b) for b in out]
    assert isinstance(a, M.NormAck) and a.cc() is not None
    cc = a.cc()
    assert (
        cc is not None
        and cc.cc_flags & M.CC_CLR
        and cc.cc_flags & M.CC_RTT
        and cc.cc_rtt == quantize_rtt(0.01)
    )
    # probing without EXT_RATE: no ACK(CC); NACKs still echo grtt_response
    rx2 = NormReceiver(ReceiverConfig(node_id=2), rng=random.Random(11))
    s.add(2, payload("d", 100 * 16))
    t, out = feed(rx2, [s.cc(9, t0, rate=False)] + s.all_source(2, skip={(0, 1)})[:9], t0)
    out += run_until(rx2, t + CYCLE)
    (n,) = [M.decode(b) for b in out]
    assert isinstance(n, M.NormNack) and n.grtt_response_sec == int(t0)


def test_newer_cc_probe_refreshes_pending_answer_without_restarting_backoff() -> None:
    """RFC 5740 §5.5.2.2 rule 2 / NRL: a newer NORM_CMD(CC) replaces the pending answer's
    echo (send_time, cc_sequence) but keeps its backoff running; restarting it on every probe
    left the sender without GRTT feedback when probes come faster than K*GRTT."""
    s = Sender()
    rx = NormReceiver(ReceiverConfig(node_id=2), rng=random.Random(3))
    t0 = 1_800_000_000.0
    feed(rx, [s.cc(1, t0)], t0)
    first = rx.get_timer()
    assert first is not None and first > t0
    out: list[bytes] = []
    t = t0
    probes = 0
    while probes < 50:  # a probe every 0.1 s (< the backoff window K*GRTT)
        t += 0.1
        out += run_until(rx, t)
        if out:
            break
        probes += 1
        feed(rx, [s.cc(1 + probes, t)], t)
        assert rx.get_timer() == first  # pending answer not pushed out
    assert probes >= 2  # several newer probes arrived while the answer was pending
    (a,) = [M.decode(b) for b in out]
    assert isinstance(a, M.NormAck) and a.ack_type == M.ACK_CC
    cc = a.cc()
    assert cc is not None and cc.cc_sequence == 1 + probes  # answers the newest probe
    held = first - (t0 + 0.1 * probes)
    echo = a.grtt_response_sec + a.grtt_response_usec * 1e-6
    assert echo == pytest.approx(t0 + 0.1 * probes + held, abs=2e-6)  # send_time + hold time


def test_cc_hint_echoes_arrival_time_and_authenticated_copy_is_not_reapplied() -> None:
    """RFC 5776 §4.3 step 5: ``congestion_control_hint`` (the probe at arrival, before
    authentication) sets the echo; the same probe released authenticated 0.3 s later is
    not applied again (idempotent by cc_sequence/send_time), nor is an authenticated
    probe whose arrival was not seen."""
    s = Sender()
    s.add(1, payload("c", 1000))
    rx = NormReceiver(ReceiverConfig(node_id=2), rng=random.Random(11))
    t0 = 1_800_000_000.25
    t, _ = feed(rx, s.all_source(1)[:2], t0)  # an authenticated sender
    probe = s.cc(7, t0 - 0.005, nodes=[M.CCNode(2, M.CC_CLR, 0xFF, 0)])
    state = {o: (x.finished, x.blocks_done) for o, x in rx.senders[SRC].objects.items()}
    rx.congestion_control_hint(probe, t0)
    rx.congestion_control_hint(probe, t0 + 0.1)  # a duplicate: harmless
    assert rx.stats["cc_hint.applied"] == 1 and rx.stats["cc_hint.duplicate"] == 1
    assert {o: (x.finished, x.blocks_done) for o, x in rx.senders[SRC].objects.items()} == state
    assert "rx.cc" not in rx.stats  # the hint is not a message reception
    out = [M.decode(b) for b, _ in rx.datagrams_to_send(t0)]  # CLR: at once
    (a,) = out
    assert isinstance(a, M.NormAck) and a.ack_type == M.ACK_CC
    assert a.grtt_response_sec + a.grtt_response_usec * 1e-6 == pytest.approx(t0 - 0.005)
    # the authenticated copy, d intervals later: counted, not re-applied, no new ACK
    feed(rx, [probe], t0 + 0.3)
    assert rx.stats["rx.cc"] == 1 and rx.stats["rx.cc_prehinted"] == 1
    assert rx.senders[SRC].cc_recv_time == t0
    assert rx.datagrams_to_send(t0 + 0.31) == []
    # a probe never hinted (arrived before the sender was known) is not echoed late
    feed(rx, [s.cc(8, t0 + 0.1)], t0 + 0.4)
    assert rx.stats["rx.cc_unhinted"] == 1 and rx.senders[SRC].cc_sequence == 7
    # hint for an unknown sender / instance: nothing is created
    rx.congestion_control_hint(Sender(src=9).cc(1, t0), t0)
    assert 9 not in rx.senders and rx.stats["cc_hint.unknown_sender"] == 1


# --------------------------------------------------------------------------- streams


def stream_pkts(
    s: Sender, oid: int, chunks: list[bytes], end: bool = True
) -> tuple[list[list[bytes]], list[bytes]]:
    """Stream segments grouped per block, plus parity packets (first 2 per block)."""
    scheme = get_scheme(
        OTI(s.fec_id, s.blk * (s.seg + 8), s.seg + 8, s.blk, s.blk + s.npar), rs_matrix="nrl"
    )
    syms = []
    off = 0
    for c in chunks:
        syms.append(M.StreamHeader(len(c), 1, off).encode() + c)
        off += len(c)
    if end:
        syms.append(M.StreamHeader(0, M.STREAM_END, off).encode())
    blocks, parity = [], []
    fti = M.ExtFti.build(s.fec_id, 1 << 20, s.seg, s.blk, s.npar)
    for b in range(0, len(syms), s.blk):
        sbn = b // s.blk
        blk = syms[b : b + s.blk]
        flags = M.FLAG_STREAM
        blocks.append(
            [
                M.NormData(*s.hdr(), flags, s.fec_id, oid, sbn, i, 0, [fti], sym).encode()
                for i, sym in enumerate(blk)
            ]
        )
        if len(blk) == s.blk:
            for esi, sym in scheme.repair_symbols(0, blk, 2):
                parity.append(
                    M.NormData(*s.hdr(), flags, s.fec_id, oid, sbn, esi, 0, [fti], sym).encode()
                )
    return blocks, parity


def test_stream_in_order_with_fec_and_end() -> None:
    s = Sender(seg=20, blk=4, npar=2)
    chunks = [payload(f"s{i}", 5 + i % 15) for i in range(14)]
    blocks, parity = stream_pkts(s, 9, chunks)
    rx = NormReceiver(ReceiverConfig(node_id=2))
    order = blocks[0][:1] + blocks[0][2:] + [parity[0]]  # seg 1 lost, parity recovers it
    order += [blocks[1][1], blocks[1][0]] + blocks[1][2:]  # reordered
    order += [p for b in blocks[2:] for p in b]
    feed(rx, order, 5.0)
    ev = events(rx)
    data = [e for e in ev if isinstance(e, StreamData)]
    assert b"".join(e.data for e in data) == b"".join(chunks)
    assert [e.offset for e in data] == sorted(e.offset for e in data)
    assert isinstance(ev[-1], StreamEnd) and ev[-1].offset == sum(map(len, chunks))


# --------------------------------------------------------------------------- session life cycle and limits


def test_eot_restart_and_malformed() -> None:
    s = Sender()
    s.add(1, payload("e", 1500))
    rx = NormReceiver(ReceiverConfig(node_id=2))
    t, _ = feed(
        rx, s.all_source(1)[:3] + [b"\x12\x00garbage", M.NormCmdEot(*s.hdr()).encode()], 1.0
    )
    ev = events(rx)
    assert [type(e) for e in ev] == [ObjectAborted, SenderEnded]
    assert isinstance(ev[1], SenderEnded) and ev[1].reason == "eot"
    assert rx.stats["drop.malformed"] == 1
    t, _ = feed(rx, s.all_source(1)[3:4], t)
    assert rx.stats["drop.sender_ended"] == 1
    # the same node restarting with a new instance id is a new sender
    s2 = Sender(inst=INST + 1)
    s2.add(1, payload("e2", 1500))
    feed(rx, s2.all_source(1), t)
    ev = events(rx)
    assert isinstance(ev[-1], ObjectReceived) and ev[-1].instance_id == INST + 1
    # instance change while active: old state dropped
    s3 = Sender(inst=INST + 2)
    s3.add(5, payload("e3", 300))
    feed(rx, s2.all_source(1)[:1] + s3.all_source(5), t + 1)
    reasons = [e.reason for e in events(rx) if isinstance(e, SenderEnded)]
    assert reasons == ["restart"]


def test_inactivity_nack_then_sender_timeout() -> None:
    s = Sender(seg=100, blk=4, npar=2)
    s.add(1, payload("i", 800))
    rx = NormReceiver(ReceiverConfig(node_id=2, robust_factor=3), rng=random.Random(1))
    t, out = feed(rx, s.all_source(1, skip={(1, 3)}), 1.0)  # tail loss: no boundary after it
    assert not nacks(out)
    out = run_until(rx, t + 3 * max(1.0, 3 * 2 * GRTT) + 2)
    assert nacks(out) and rx.stats["nack.inactivity"] >= 1
    out = run_until(rx, t + 100)
    ev = events(rx)
    assert any(isinstance(e, ObjectAborted) for e in ev)
    assert any(isinstance(e, SenderEnded) and e.reason == "inactive" for e in ev)
    assert not rx.senders and rx.get_timer() is None


def test_limits_pending_objects_bytes_and_timeout() -> None:
    s = Sender(seg=100, blk=4, npar=0)
    for oid in range(1, 11):
        s.add(oid, payload(str(oid), 500))
    rx = NormReceiver(ReceiverConfig(node_id=2, max_pending_objects=4), rng=random.Random(1))
    pkts = [p for oid in range(1, 11) for p in s.all_source(oid)[:2]]  # all incomplete
    feed(rx, pkts, 1.0)
    ab = [e for e in events(rx) if isinstance(e, ObjectAborted)]
    assert ab and all(e.reason == "too_many_objects" for e in ab)
    st = rx.senders[SRC]
    assert st.max_ord is not None and st.max_ord - st.sync_ord < 4
    # max_bytes: a second large object does not fit while the first is buffered
    s2 = Sender(seg=1000, blk=8, npar=0)
    s2.add(1, payload("b1", 6000))
    s2.add(2, payload("b2", 6000))
    rx2 = NormReceiver(ReceiverConfig(node_id=2, max_bytes=10000))
    feed(rx2, s2.all_source(1)[:2] + s2.all_source(2)[:2], 1.0)
    ab = [e for e in events(rx2) if isinstance(e, ObjectAborted)]
    assert [e.reason for e in ab] == ["buffer_full"] and rx2.stats["drop.buffer_full"] == 1
    # object timeout
    rx3 = NormReceiver(ReceiverConfig(node_id=2, object_timeout=2.0))
    t, _ = feed(rx3, s2.all_source(1)[:2], 1.0)
    run_until(rx3, t + 2.5)
    assert [e.reason for e in events(rx3) if isinstance(e, ObjectAborted)] == ["timeout"]


def test_squelch_abandons_objects() -> None:
    s = Sender(seg=100, blk=4, npar=0)
    for oid in (1, 2, 3):
        s.add(oid, payload(str(oid), 800))
    rx = NormReceiver(ReceiverConfig(node_id=2))
    t, _ = feed(rx, s.all_source(1)[:2] + s.all_source(3)[:2], 1.0)
    sq = M.NormCmdSquelch(*s.hdr(), 5, 3, 0, 0, 0, [], [3]).encode()
    t, _ = feed(rx, [sq], t)
    ev = events(rx)
    assert sorted(e.object_id for e in ev if isinstance(e, ObjectAborted)) == [1, 3]
    out = run_until(rx, t + 60)
    assert not nacks(out)


def test_stream_nack_parity_and_explicit_after_mid_block_flush() -> None:
    """fec_id 129 stream: a lost symbol in a finished block asks for parity (ESI = k); after a
    FLUSH in the middle of the next block only explicit source repairs are requested."""
    s = Sender(fec_id=129, seg=64, blk=4, npar=2)  # NACK content is bounded by seg
    chunks = [payload(f"t{i}", 64) for i in range(10)]
    blocks, parity = stream_pkts(s, 3, chunks, end=False)
    rx = NormReceiver(ReceiverConfig(node_id=2), rng=random.Random(3))
    pkts = blocks[0] + [blocks[1][0]] + blocks[1][2:] + blocks[2][1:2]  # lose (1,1) and (2,0)
    flush = M.NormCmdFlush(*s.hdr(), 129, 3, 2, 1, 4, [], []).encode()
    t, out = feed(rx, pkts, 5.0)
    out += run_until(rx, t + 1)  # block-boundary cycle: block 1 only
    assert req_summary(nacks(out)[0]) == [(M.NACK_ITEMS, M.NACK_SEGMENT, [(3, 1, 4)])]
    t, out = feed(rx, [flush], t + 1)
    out += run_until(rx, t + CYCLE)
    assert req_summary(nacks(out)[0]) == [(M.NACK_ITEMS, M.NACK_SEGMENT, [(3, 1, 4), (3, 2, 0)])]
    assert all(i.sbl == 4 for r in nacks(out)[0].requests for i in r.items)
    # repairs: parity for block 1 and the explicit source symbol of block 2
    feed(rx, [parity[2], blocks[2][0]], t + 1)  # parity: 2 per full block
    data = b"".join(e.data for e in events(rx) if isinstance(e, StreamData))
    assert data == b"".join(chunks[:10])


def test_suppression_by_overheard_erasure_counts() -> None:
    s = Sender(seg=100, blk=8, npar=4)
    s.add(1, payload("a", 100 * 16))
    rx = NormReceiver(ReceiverConfig(node_id=2), rng=random.Random(7))
    t, out = feed(rx, s.all_source(1, skip={(0, 2), (0, 5)})[:8], 50.0, dt=0.0)
    other = M.NormNack(
        1,
        3,
        SRC,
        INST,
        0,
        0,
        [],
        [M.RepairRequest(M.NACK_ERASURES, M.NACK_SEGMENT, [M.RepairItem(5, 1, 0, 3)])],
    )
    t, out2 = feed(rx, [other.encode()], t)
    assert not nacks(out + out2 + run_until(rx, t + CYCLE))
    assert rx.stats["nack.suppressed"] == 1


def test_two_senders_interleaved() -> None:
    a, b = Sender(src=1), Sender(src=5, inst=99)
    a.add(1, payload("A", 1234))
    b.add(1, payload("B", 4321))
    pa, pb = a.all_source(1), b.all_source(1)
    mixed = [p for pair in zip(pa, pb, strict=False) for p in pair] + pb[len(pa) :]
    rx = NormReceiver(ReceiverConfig(node_id=2))
    feed(rx, mixed, 1.0)
    got = {(e.source_id, e.object_id): e.data for e in events(rx) if isinstance(e, ObjectReceived)}
    assert got == {(1, 1): payload("A", 1234), (5, 1): payload("B", 4321)}
    assert set(rx.senders) == {1, 5}


def test_receiver_survives_mutated_traffic() -> None:
    """Hostile or corrupted datagrams never raise out of the engine (only drop.* counters)."""
    rng = random.Random(1234)
    s = Sender(fec_id=5, seg=64, blk=4, npar=2)
    s.add(1, payload("fz", 64 * 9 + 3))
    s2 = Sender(fec_id=129, seg=64, blk=4, npar=2, src=3)
    s2.add(7, payload("fz2", 500))
    base = s.all_source(1) + [s.data(1, 0, 4), s.flush(1, 2, 0, acking=[2]), s.cc(1, 5.0)]
    base += s2.all_source(7) + stream_pkts(s2, 8, [b"abc", b"defg"])[0][0]
    base += [
        M.NormNack(
            1,
            9,
            1,
            INST,
            0,
            0,
            [],
            [M.RepairRequest(2, 2, [M.RepairItem(5, 1, 0, 0), M.RepairItem(5, 1, 9, 0)])],
        ).encode(),
        M.NormCmdSquelch(*s.hdr(), 5, 1, 0, 0, 0, [], [2, 3]).encode(),
    ]
    for trial in range(120):
        rx = NormReceiver(
            ReceiverConfig(node_id=2, max_bytes=1 << 16, object_timeout=5.0),
            rng=random.Random(trial),
        )
        t = 10.0
        for p in base:
            b = bytearray(p)
            for _ in range(rng.randint(0, 3)):
                b[rng.randrange(len(b))] = rng.randrange(256)
            if rng.random() < 0.1:
                b = b[: rng.randrange(len(b) + 1)]
            rx.receive_datagram(bytes(b), ("127.0.0.1", 6003), t)
            rx.datagrams_to_send(t)
            t += 0.01
        run_until(rx, t + 300)
        events(rx)


def test_backlog_of_old_datagrams_is_not_inactivity() -> None:
    """A receiver working through a backlog (datagrams stamped with their arrival, more
    than T_inactivity before the timers ran) must not take the sender for silent: the
    inactivity timer restarts from when a message is processed.  Before (issue 11), a
    TESLA receiver lagging 1 s behind on a 100 MiB file NACKed the whole rest of the
    object at its inactivity timeout: 65,441 repairs."""
    import random as _r

    from norm.receiver import NormReceiver, ReceiverConfig
    from norm.sender import NormSender, NormSenderConfig

    snd = NormSender(NormSenderConfig(node_id=1, segment_size=700, grtt=0.001, seed=1, rate=1e6))
    snd.enqueue_data(bytes(700 * 64 * 8))
    snd.end()
    sent: list[tuple[float, bytes]] = []
    now = 1000.0
    for _ in range(400):
        now += 0.005
        sent += [(now, p) for p, _a in snd.datagrams_to_send(now)]
    assert len(sent) > 300
    rx = NormReceiver(ReceiverConfig(node_id=2), _r.Random(1))
    # the receiver takes each batch later than it arrived, the lag growing to 2 s (it
    # reads slower than the sender sends); its timers run on its own clock in between
    n = len(sent)
    clock = sent[0][0]
    for k in range(0, n, 10):
        chunk = sent[k : k + 10]
        clock = max(clock, chunk[-1][0] + 2.0 * k / n)
        rx.handle_timer(clock)
        rx.receive_datagrams([p for _, p in chunk], [None] * len(chunk), [t for t, _ in chunk])
        clock += 0.001
    rx.handle_timer(clock + 0.01)
    assert rx.stats.get("nack.inactivity", 0) == 0, rx.stats
    nacks = [p for p, _a in rx.datagrams_to_send(clock + 0.01) if p[0] & 15 == 4]
    assert not nacks and rx.stats.get("nack.sent", 0) == 0, rx.stats  # nothing is missing
