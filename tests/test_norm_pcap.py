"""Replay the NRL NORM 1.5.9 captures through NormReceiver: files rebuilt bit-exact.

Captures (../shared/interop/README.md): group 239.255.77.77, UDP 6003, sender NormNodeId 1,
receiver NormNodeId 2 (its NACKs/ACKs are in the capture too), FEC Encoding ID 5 with NRL's
"number of parity" in the last EXT_FTI byte, parity ESIs from k, no NORM_FLAG_REPAIR.
"""

from __future__ import annotations

import collections
import hashlib
from pathlib import Path

import pytest

from alc.pcap import read_udp, replay
from norm import messages as M
from norm.receiver import NormReceiver, ObjectReceived, ReceiverConfig, SenderEnded

GROUP, PORT = "239.255.77.77", 6003
FILES = {
    "f1k.bin": (1000, "1e61cf1292e1119d184f6e3a8e8ed3d107d64e74a528c1e618cdfbadf02b6760"),
    "f100k.bin": (100000, "da43bd078ff4fa3cda83a69d694e0c459dfea2fa459b3cf06790871c6a03b219"),
    "f1m.bin": (1048576, "ca5f7320cb2e647a8db67adef7e0ec97733a47a9c6dafbc650dfd928bc879f9e"),
}
CAPTURES = ["nrl-norm-plain.pcap", "nrl-norm-rxloss10.pcap"]


def _events(rx: NormReceiver) -> list[object]:
    out = []
    while (ev := rx.next_event()) is not None:
        out.append(ev)
    return out


def _check_files(events: list[object]) -> None:
    got = [e for e in events if isinstance(e, ObjectReceived)]
    assert [e.name for e in got] == list(FILES)
    for e in got:
        assert e.name is not None and e.kind == "file" and e.source_id == 1
        size, digest = FILES[e.name]
        assert len(e.data) == size
        assert hashlib.sha256(e.data).hexdigest() == digest


@pytest.mark.parametrize("capture", CAPTURES)
def test_replay_rebuilds_files(shared_dir: Path, capture: str) -> None:
    rx = NormReceiver(ReceiverConfig(node_id=99))
    replay(rx, shared_dir / "interop" / capture, dst_addr=GROUP, dst_port=PORT)
    events = _events(rx)
    _check_files(events)
    # with timers drained the silent sender is eventually declared inactive
    assert any(isinstance(e, SenderEnded) and e.reason == "inactive" for e in events)
    assert rx.stats.get("drop.malformed", 0) == 0
    assert rx.stats["rx.objects_completed"] == 3


@pytest.mark.parametrize("capture", CAPTURES)
def test_replay_sender_messages_only(shared_dir: Path, capture: str) -> None:
    """Filter the receiver's feedback out by source node id (the sender is node 1)."""
    rx = NormReceiver(ReceiverConfig(node_id=2))
    kinds: collections.Counter[str] = collections.Counter()
    for d in read_udp(shared_dir / "interop" / capture, GROUP, PORT):
        msg = M.decode(d.payload)
        assert msg.encode() == d.payload  # exact round trip on every captured message
        kinds[type(msg).__name__] += 1
        if msg.source_id != 1:
            continue
        rx.receive_datagram(d.payload, d.src, d.ts)
        rx.datagrams_to_send(d.ts)
    _check_files(_events(rx))
    if capture == "nrl-norm-plain.pcap":
        assert kinds["NormInfo"] == 3 and kinds["NormData"] == 1123 and kinds["NormAck"] == 4
        cmds = sum(v for k, v in kinds.items() if k.startswith("NormCmd"))
        assert cmds == 25


def _parity_per_block(path: Path) -> dict[tuple[int, int], int]:
    """Parity symbols (ESI >= k) present per (object, block) in a capture."""
    from alc.fec import partition

    sizes: dict[int, list[int]] = {}
    par: collections.Counter[tuple[int, int]] = collections.Counter()
    for d in read_udp(path, GROUP, PORT):
        msg = M.decode(d.payload)
        if not isinstance(msg, M.NormData):
            continue
        if msg.object_id not in sizes:
            fti = msg.fti()
            assert fti is not None
            p = fti.params(msg.fec_id)
            sizes[msg.object_id] = partition(p.object_size, p.segment_size, p.max_block_len)
        if msg.esi >= sizes[msg.object_id][msg.sbn]:
            par[(msg.object_id, msg.sbn)] += 1
    return par


def test_rxloss10_nrl_parity_decodes(shared_dir: Path) -> None:
    """Withhold as many source symbols per block as NRL sent parity for it: the receiver must
    rebuild the files from NRL's Reed-Solomon parity (generator "nrl", parity ESIs from k)."""
    path = shared_dir / "interop" / "nrl-norm-rxloss10.pcap"
    par = _parity_per_block(path)
    assert sum(par.values()) >= 120
    rx = NormReceiver(ReceiverConfig(node_id=99))
    withheld = 0
    for d in read_udp(path, GROUP, PORT):
        msg = M.decode(d.payload)
        # drop the *highest* source ESIs so decoding needs parity for those positions
        if isinstance(msg, M.NormData) and msg.source_id == 1:
            k_left = par.get((msg.object_id, msg.sbn), 0)
            if k_left and msg.esi < 24 and msg.esi % 3 == 0 and msg.esi // 3 < k_left:
                withheld += 1
                continue
        rx.receive_datagram(d.payload, d.src, d.ts)
        rx.datagrams_to_send(d.ts)
    assert withheld >= 60
    _check_files(_events(rx))
    assert rx.stats["rx.fec_symbols_recovered"] == withheld
    assert rx.stats.get("drop.fec_decode", 0) == 0


def test_receiver_nacks_like_nrl_on_loss(shared_dir: Path) -> None:
    """Losing source symbols of a block makes our receiver NACK parity ESIs k..k+e-1 after the
    RFC backoff; the NACK names the NRL sender and echoes a grtt_response."""
    path = shared_dir / "interop" / "nrl-norm-plain.pcap"
    rx = NormReceiver(ReceiverConfig(node_id=7))
    sent: list[bytes] = []
    for d in read_udp(path, GROUP, PORT):
        msg = M.decode(d.payload)
        if (
            isinstance(msg, M.NormData)
            and msg.sbn == 1
            and msg.esi in (3, 4)
            and msg.object_id == msg.instance_id + 2
        ):
            continue  # f1m.bin block 1 loses two source symbols
        t = rx.get_timer()
        while t is not None and t <= d.ts:
            rx.handle_timer(t)
            sent += [b for b, _ in rx.datagrams_to_send(t)]
            t = rx.get_timer()
        rx.receive_datagram(d.payload, d.src, d.ts)
        sent += [b for b, _ in rx.datagrams_to_send(d.ts)]
    nacks = [m for m in map(M.decode, sent) if isinstance(m, M.NormNack)]
    assert nacks, rx.stats
    n = nacks[0]
    assert n.server_id == 1 and n.source_id == 7 and n.grtt_response_sec != 0
    items = [(r.form, r.flags, [(i.sbn, i.esi) for i in r.items]) for r in n.requests]
    assert items[0] == (M.NACK_ITEMS, M.NACK_SEGMENT, [(1, 32), (1, 33)])
    # the capture has no repairs for it, so f1m.bin is not completed; the others are
    got = [e.name for e in _events(rx) if isinstance(e, ObjectReceived)]
    assert got == ["f1k.bin", "f100k.bin"]
