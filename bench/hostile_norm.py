"""Memory of the NORM engines under the hostile inputs of issue 15, at the sizes of the
findings (docs/security/norm.md).

    python bench/hostile_norm.py            # every scenario, each in a fresh process
    python bench/hostile_norm.py SCENARIO   # one: info | stream | overheard | sender

Per scenario: the charged high-water mark against its bound, the tracemalloc peak (Python
allocations while the scenario runs) and the peak RSS growth (VmHWM reset through
/proc/self/clear_refs before the scenario, minus VmRSS then), measured in two runs so
tracemalloc's own overhead is not in the RSS figure.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import tracemalloc
from collections.abc import Callable
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from norm import messages as M  # noqa: E402
from norm import receiver as R  # noqa: E402
from norm import sender as S  # noqa: E402
from norm.receiver import NormReceiver  # noqa: E402
from norm.receiver import ReceiverConfig as NRC  # noqa: E402
from norm.sender import NormSender, NormSenderConfig  # noqa: E402

T0 = 1_700_000_000.0
MiB = 1 << 20


def _status(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    return 0


def hdr(seq: int = 0) -> dict[str, int]:
    return dict(sequence=seq, source_id=1, instance_id=77, grtt=10, backoff=4, gsize=5)


def drain(snd: NormSender, t0: float, t1: float, step: float = 0.002) -> list[bytes]:
    out = []
    t = t0
    while t < t1:
        out.extend(d for d, _ in snd.datagrams_to_send(t))
        t += step
    return out


# ----------------------------------------------------------------------------- scenarios
def scen_info() -> tuple[Callable[[], None], Callable[[], dict[str, Any]]]:
    """256 NORM_INFO (one sender's max_pending_objects), each announcing 2^18 blocks of
    one 1-byte segment (the default max_object_blocks; the finding's 2^21 is now a
    counted drop by default).  Before: one such INFO built 112 MB of block lists (2^21)."""
    eng = NormReceiver(NRC(node_id=10))
    fti = M.ExtFti.build(5, 1 << 18, 1, 1, 0)
    pkts = [
        M.NormInfo(
            **hdr(i), flags=M.FLAG_INFO, fec_id=5, object_id=i, extensions=[fti], payload=b"name"
        ).encode()
        for i in range(256)
    ]
    big = M.NormInfo(
        **hdr(300),
        flags=M.FLAG_INFO,
        fec_id=5,
        object_id=256,
        extensions=[M.ExtFti.build(5, 1 << 21, 1, 1, 0)],
        payload=b"",
    ).encode()

    def run() -> None:
        for p in pkts:
            eng.receive_datagram(p, None, T0)
        eng.receive_datagram(big, None, T0)

    def figures() -> dict[str, Any]:
        return {
            "packets": len(pkts) + 1,
            "packet_bytes": len(pkts[0]),
            "charged": eng._bytes,
            "bound": 256 * (R.OBJECT_STATE_BYTES + 4),
            "drop.bad_geometry": eng.stats.get("drop.bad_geometry", 0),
        }

    return run, figures


def scen_stream() -> tuple[Callable[[], None], Callable[[], dict[str, Any]]]:
    """6 streams x 8 MB whose blocks never complete (one source segment lost per block,
    no parity), max_bytes 32 MiB.  Before: streams were held beyond max_bytes (403 MB
    against 256 MiB)."""
    limit = 32 * MiB
    snd = NormSender(
        NormSenderConfig(
            node_id=1,
            instance_id=77,
            segment_size=1400,
            block_size=64,
            num_parity=0,
            rate=1e10,
            seed=1,
            stream_buffer_blocks=1 << 14,
        )
    )
    oid = snd.open_stream()
    snd.stream_write(oid, random.Random(5).randbytes(8_000_000))
    snd.stream_flush(oid)
    one = [
        p for p in drain(snd, T0, T0 + 0.2) if p[0] & 15 == M.NORM_DATA and p[19] != 1
    ]  # FEC ID 5: esi = octet 19
    pkts = []
    for p in one:
        for k in range(6):
            q = bytearray(p)
            q[14:16] = k.to_bytes(2, "big")
            pkts.append(bytes(q))
    eng = NormReceiver(NRC(node_id=10, max_bytes=limit))
    high = 0

    def run() -> None:
        nonlocal high
        for p in pkts:
            eng.receive_datagram(p, None, T0 + 0.2)
            high = max(high, eng._bytes)
            while eng.next_event() is not None:  # the application takes delivered data
                pass

    def figures() -> dict[str, Any]:
        return {
            "packets": len(pkts),
            "stream_bytes": 6 * 8_000_000,
            "charged_high": high,
            "bound": limit,
            "drop.stream_evicted": eng.stats.get("drop.stream_evicted", 0),
            "drop.buffer_full": eng.stats.get("drop.buffer_full", 0),
        }

    return run, figures


def _lossy_receiver() -> tuple[NormReceiver, int]:
    snd = NormSender(
        NormSenderConfig(
            node_id=1,
            instance_id=77,
            segment_size=1000,
            block_size=8,
            num_parity=4,
            rate=1e9,
            seed=1,
        )
    )
    oid = snd.enqueue_data(random.Random(6).randbytes(64_000))
    eng = NormReceiver(NRC(node_id=10), rng=random.Random(1))
    for p in drain(snd, T0, T0 + 0.02, 0.001):
        if p[0] & 15 == M.NORM_DATA and p[16:20] == bytes([0, 0, 0, 2]):
            continue
        eng.receive_datagram(p, None, T0 + 0.02)
    assert eng.senders[1].nack_state == "backoff"
    return eng, oid


def scen_overheard() -> tuple[Callable[[], None], Callable[[], dict[str, Any]]]:
    """1000 forged 44-byte NACKs (ESIs 0..65535 of block i, i < 1000) heard during our
    backoff.  Before: 4 MB each, 4 GB for 1000."""
    eng, oid = _lossy_receiver()
    pkts = []
    for sbn in range(1000):
        a = M.RepairItem(2, oid, sbn, 0, m=16)
        b = M.RepairItem(2, oid, sbn, 65535, m=16)
        req = M.RepairRequest(M.NACK_RANGES, M.NACK_SEGMENT, [a, b])
        pkts.append(M.NormNack(0, 99, 1, 77, requests=[req]).encode())

    def run() -> None:
        for p in pkts:
            eng.receive_datagram(p, None, T0 + 0.021)

    def figures() -> dict[str, Any]:
        s = eng.senders[1]
        return {
            "packets": len(pkts),
            "packet_bytes": len(pkts[0]),
            "ranges_held": s.heard_ranges,
            "bound_ranges": R.MAX_HEARD_RANGES,
        }

    return run, figures


def scen_sender() -> tuple[Callable[[], None], Callable[[], dict[str, Any]]]:
    """1000 forged NACKs at the sender, each a range over every symbol (2048 ESIs per
    block) of a 49-block object.  Before: 100,000 ESIs of repair state per NACK."""
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
    oid = snd.enqueue_data(random.Random(7).randbytes(5_000_000))
    fec, m = snd.fec_id, snd.fec_m
    pkts = []
    for i in range(1000):
        a = M.RepairItem(fec, oid, 0, 0, m=m)
        b = M.RepairItem(fec, oid, 48, 2047, m=m)
        req = M.RepairRequest(M.NACK_RANGES, M.NACK_SEGMENT, [a, b])
        pkts.append(M.NormNack(0, 100 + i, 1, snd.instance_id, requests=[req]).encode())
    base = len(snd.objects)

    def run() -> None:
        for p in pkts:
            snd.receive_datagram(p, None, T0)

    def figures() -> dict[str, Any]:
        held = sum(len(b.esis) for n in snd._agg.values() for b in n.blocks.values())
        return {
            "packets": len(pkts),
            "esis_held": held,
            "bound_esis": S.MAX_REPAIR_SYMBOLS,
            "per_nack_bound": S.MAX_NACK_EXPANSION,
            "objects": base,
            "drop.nack_expansion": snd.stats.get("drop.nack_expansion", 0),
        }

    return run, figures


def scen_overheard_cap() -> tuple[Callable[[], None], Callable[[], dict[str, Any]]]:
    """Worst case of the overheard bound: 1000 forged NACKs of 100 disjoint NACK_BLOCK
    items each, for an object of 16,000 known blocks (4-byte segments, B = 1)."""
    snd = NormSender(
        NormSenderConfig(
            node_id=1,
            instance_id=77,
            segment_size=4,
            block_size=1,
            num_parity=4,
            rate=1e9,
            seed=1,
        )
    )
    oid = snd.enqueue_data(random.Random(6).randbytes(64_000))
    eng = NormReceiver(NRC(node_id=10), rng=random.Random(1))
    for p in drain(snd, T0, T0 + 0.02, 0.001):
        if p[0] & 15 == M.NORM_DATA and p[16:20] == bytes([0, 0, 1, 0]):
            continue
        eng.receive_datagram(p, None, T0 + 0.02)
    assert eng.senders[1].nack_state == "backoff"
    pkts = []
    for n in range(1000):
        items = [M.RepairItem(5, oid, (2 * (100 * n + j) + 1) % 16000) for j in range(100)]
        req = M.RepairRequest(M.NACK_ITEMS, M.NACK_BLOCK, items)
        pkts.append(M.NormNack(0, 99, 1, 77, requests=[req]).encode())

    def run() -> None:
        for p in pkts:
            eng.receive_datagram(p, None, T0 + 0.021)

    def figures() -> dict[str, Any]:
        s = eng.senders[1]
        return {
            "packets": len(pkts),
            "packet_bytes": len(pkts[0]),
            "ranges_held": s.heard_ranges,
            "bound_ranges": R.MAX_HEARD_RANGES,
            "drop.nack_heard_full": eng.stats.get("drop.nack_heard_full", 0),
        }

    return run, figures


def scen_sender_total() -> tuple[Callable[[], None], Callable[[], dict[str, Any]]]:
    """The sender's total bound: 49 NACKs from 49 receivers, each over every symbol of
    a different block (2048 each, 100,352 in all)."""
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
    oid = snd.enqueue_data(random.Random(7).randbytes(5_000_000))
    fec, m = snd.fec_id, snd.fec_m
    pkts = []
    for i in range(49):
        a = M.RepairItem(fec, oid, i, 0, m=m)
        b = M.RepairItem(fec, oid, i, 2047, m=m)
        req = M.RepairRequest(M.NACK_RANGES, M.NACK_SEGMENT, [a, b])
        pkts.append(M.NormNack(0, 100 + i, 1, snd.instance_id, requests=[req]).encode())

    def run() -> None:
        for p in pkts:
            snd.receive_datagram(p, None, T0)

    def figures() -> dict[str, Any]:
        held = sum(len(b.esis) for n in snd._agg.values() for b in n.blocks.values())
        return {
            "packets": len(pkts),
            "esis_held": held,
            "bound_esis": S.MAX_REPAIR_SYMBOLS,
            "drop.repair_state_full": snd.stats.get("drop.repair_state_full", 0),
        }

    return run, figures


SCENARIOS = {
    "info": scen_info,
    "stream": scen_stream,
    "overheard": scen_overheard,
    "sender": scen_sender,
    "overheard_cap": scen_overheard_cap,
    "sender_total": scen_sender_total,
}


def measure(name: str, mode: str) -> dict[str, Any]:
    run, figures = SCENARIOS[name]()
    if mode == "tracemalloc":
        tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        run()
        peak = tracemalloc.get_traced_memory()[1] - base
        tracemalloc.stop()
        return {"tracemalloc_peak": peak, **figures()}
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM
    rss0 = _status("VmRSS")
    run()
    return {"rss_peak_growth": _status("VmHWM") - rss0}


def main() -> None:
    if sys.argv[1:2] == ["--child"]:
        print(json.dumps(measure(sys.argv[2], sys.argv[3])))
        return
    names = sys.argv[1:] or list(SCENARIOS)
    for name in names:
        out: dict[str, Any] = {"scenario": name}
        for mode in ("tracemalloc", "rss"):
            r = subprocess.run(
                [sys.executable, __file__, "--child", name, mode],
                capture_output=True,
                text=True,
                check=True,
            )
            out.update(json.loads(r.stdout))
        print(json.dumps(out))


if __name__ == "__main__":
    main()
