"""Packet encode/decode rates of our ALC/FLUTE engines beside ypo/flute (PyPI flute-alc),
measured in the same run on the same payload, with the ratio.

    python bench/compare_flute.py [--size BYTES] [--repeat N] [--fec nocode|rs]

encode: file bytes -> all datagrams of the session (FDT + file packets), in memory.
decode: the same datagrams (each implementation's own) -> the rebuilt file, in memory.
Rates are packets per second of CPU time (best of --repeat runs); ratio = ours / flute-alc.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

from alc.receiver import AlcReceiver, FileReceived, ReceiverConfig
from alc.sender import AlcSender, SenderConfig

E = 1400
B = 64


def best(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    """Best CPU time (process_time: both implementations run in this thread, and the
    machine may be shared, so wall time would mostly measure other processes)."""
    t_best = float("inf")
    result = None
    for _ in range(repeat):
        t0 = time.process_time()
        result = fn()
        t_best = min(t_best, time.process_time() - t0)
    return t_best, result


class _Quiet:
    """Silence fd 1 (flute-alc's Rust side prints 'File ... is completed !')."""

    def __enter__(self) -> None:
        sys.stdout.flush()
        self.saved = os.dup(1)
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, 1)
        os.close(null)

    def __exit__(self, *exc: object) -> None:
        os.dup2(self.saved, 1)
        os.close(self.saved)


RATIO = 0.0


def ours_encode(data: bytes, fec: str) -> list[bytes]:
    s = AlcSender(SenderConfig(tsi=1, rate_bps=None, fec=fec, repair_ratio=RATIO, rs_matrix="flute",
                               symbol_length=E, max_source_block_length=B))
    s.add_bytes(data, "bench.bin")
    return s.all_packets(time.time())


def ours_decode(pkts: list[bytes], fec: str) -> bytes:
    rx = AlcReceiver(ReceiverConfig(tsi=1, rs_matrix="flute"))
    now = time.time()
    recv = rx.receive_datagram
    src = ("127.0.0.1", 1)
    for p in pkts:
        recv(p, src, now)
    while (e := rx.next_event()) is not None:
        if isinstance(e, FileReceived):
            return e.data
    raise RuntimeError(f"our receiver did not complete: {rx.stats}")


def flute_encode(data: bytes, fec: str) -> list[bytes]:
    from flute import sender

    if fec == "rs":
        oti = sender.Oti.new_reed_solomon_rs28(E, B, math.ceil(B * RATIO))
    else:
        oti = sender.Oti.new_no_code(E, B)
    s = sender.Sender(1, oti, sender.Config())
    s.add_object_from_buffer(data, "application/octet-stream", "file:///bench.bin", None)
    s.publish()
    out = []
    read = s.read
    while (p := read()) is not None:
        out.append(p)
    return out


def flute_decode(pkts: list[bytes], fec: str) -> int:
    from flute import receiver

    d = tempfile.mkdtemp()
    try:
        r = receiver.Receiver(receiver.UDPEndpoint("239.255.1.1", 3000), 1,
                              receiver.ObjectWriterBuilder(d), receiver.Config())
        push = r.push
        for p in pkts:
            push(p)
        return os.path.getsize(os.path.join(d, "bench.bin"))
    finally:
        shutil.rmtree(d, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=20_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--fec", choices=["nocode", "rs"], default="nocode")
    ap.add_argument("--repair-ratio", type=float, default=0.0, help="RS only: repair symbols per source symbol")
    a = ap.parse_args()
    global RATIO
    RATIO = a.repair_ratio if a.fec == "rs" else 0.0
    data = os.urandom(a.size)

    t_oe, our_pkts = best(lambda: ours_encode(data, a.fec), a.repeat)
    t_fe, fl_pkts = best(lambda: flute_encode(data, a.fec), a.repeat)
    t_od, got = best(lambda: ours_decode(our_pkts, a.fec), a.repeat)
    assert got == data
    with _Quiet():
        t_fd, size = best(lambda: flute_decode([bytes(p) for p in fl_pkts], a.fec), a.repeat)
    assert size == len(data)

    rows = [
        ("encode", len(our_pkts) / t_oe, len(fl_pkts) / t_fe),
        ("decode", len(our_pkts) / t_od, len(fl_pkts) / t_fd),
    ]
    print(f"payload {a.size} bytes, FEC {a.fec} repair ratio {RATIO}, E={E}, B={B}; ours {len(our_pkts)} packets, "
          f"flute-alc {len(fl_pkts)} packets; best of {a.repeat}")
    print(f"{'':8}{'ours pkt/s':>14}{'flute-alc pkt/s':>18}{'ratio':>8}{'ours MB/s':>11}")
    for name, ours, theirs in rows:
        print(f"{name:8}{ours:14,.0f}{theirs:18,.0f}{ours / theirs:8.2f}{ours * E / 1e6:11.1f}")


if __name__ == "__main__":
    main()
