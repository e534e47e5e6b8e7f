"""Our NORM transfer rate on loopback beside NRL NORM's, in the same run.

    python3 bench/compare_nrl.py [--size MB] [--rate MBIT] [--loss P] [--repeat N]

* ours: NormSender (this process) -> NormReceiver (a child process, so both get a core),
  both driven by :class:`alc.net.Driver` on a random 239.255.x.y group, interface 127.0.0.1.
* NRL: NRL sender -> NRL receiver (libnorm1 via tesla/cli/nrl.py), two NormInstances in this
  process (NRL runs its protocol in its own threads).

Same file, same segment/block/parity, same configured transmit rate (CC off), optional
receiver loss (ours: LossInjector, NRL: NormSetRxLoss).  Goodput = file size / (time from
enqueue to the receiver's completion).  The ratio ours / NRL is printed at the end.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tesla.cli import nrl  # noqa: E402


def _our_receiver(group: tuple[str, int], loss: float, q: Any, ready: Any) -> None:
    from alc.net import Driver, LossInjector, open_socket
    from norm.receiver import NormReceiver, ObjectReceived, ReceiverConfig

    rx = NormReceiver(ReceiverConfig(node_id=2), random.Random(1))
    sock = open_socket(group, "127.0.0.1", receive=True, ttl=1)
    drv = Driver()
    drv.add(rx, sock, group, loss=LossInjector(loss, 5) if loss else None)
    got: list[bytes] = []

    def done() -> bool:
        while (ev := rx.next_event()) is not None:
            if isinstance(ev, ObjectReceived):
                got.append(ev.data)
        return bool(got)

    ready.set()
    drv.run(until=done, timeout=300)
    t = time.time()
    sock.close()
    q.put((t, len(got[0]) if got else -1, hash(got[0]) if got else 0, dict(rx.stats)))


def run_ours(data: bytes, args: argparse.Namespace) -> float:
    from alc.net import Driver, open_socket
    from norm.sender import NormSender, NormSenderConfig

    group = (nrl.random_group(), nrl.random_port())
    ctx = mp.get_context("fork")
    q: Any = ctx.Queue()
    ready = ctx.Event()
    p = ctx.Process(target=_our_receiver, args=(group, args.loss, q, ready))
    p.start()
    ready.wait(10)
    time.sleep(0.2)
    snd = NormSender(
        NormSenderConfig(
            node_id=1,
            segment_size=args.segment,
            block_size=args.block,
            num_parity=args.parity,
            rate=args.rate * 1e6 / 8,
            grtt=0.01,
            grtt_max=args.grtt_max if args.grtt_max else 10.0,
            seed=1,
        )
    )
    sock = open_socket(group, "127.0.0.1", receive=True, ttl=1)
    drv = Driver()
    drv.add(snd, sock, group)
    t0 = time.time()
    snd.enqueue_data(data, info=b"bench.bin")
    drv.run(until=lambda: not q.empty() or not p.is_alive(), timeout=300)
    sock.close()
    t_done, n, h, stats = q.get(timeout=10)
    p.join(5)
    if n != len(data) or h != hash(data):
        raise SystemExit(f"ours: transfer failed ({n} bytes) {stats}")
    return t_done - t0


def run_nrl(path: str, size: int, args: argparse.Namespace) -> float:
    group, port = nrl.random_group(), nrl.random_port()
    rx = nrl.Instance()
    cache = tempfile.mkdtemp(prefix="nrlbench")
    rx.set_cache_directory(cache)
    rs = rx.session(group, port, 2)
    rs.set_loopback_multicast()
    if args.loss:
        rs.set_rx_loss(args.loss * 100)
    rs.start_receiver()
    th = nrl.ReceiverThread(rx)
    th.start()
    tx = nrl.Instance()
    ss = tx.session(group, port, 1)
    ss.set_loopback_multicast()
    ss.start_sender(
        segment=args.segment,
        block=args.block,
        parity=args.parity,
        rate_bps=args.rate * 1e6,
        grtt=0.01,
        buffer_space=64 * 1024 * 1024,
        grtt_max=args.grtt_max,
    )
    time.sleep(0.2)
    t0 = time.monotonic()
    ss.enqueue_file(path)
    try:
        if not th.wait(300):
            raise SystemExit("NRL: transfer did not complete")
        assert th.last_done is not None
        ok = th.received[0].data == Path(path).read_bytes()
        if not ok or len(th.received[0].data) != size:
            raise SystemExit("NRL: received file differs")
        return th.last_done - t0
    finally:
        th.stop()
        tx.close()
        rx.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--size", type=float, default=20.0, help="file size in MB (default 20)")
    ap.add_argument(
        "--rate", type=float, default=400.0, help="configured tx rate, Mbit/s (default 400)"
    )
    ap.add_argument("--loss", type=float, default=0.0, help="receiver loss fraction (e.g. 0.05)")
    ap.add_argument("--segment", type=int, default=1400)
    ap.add_argument("--block", type=int, default=64)
    ap.add_argument("--parity", type=int, default=16)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument(
        "--grtt-max",
        type=float,
        default=None,
        help="cap the GRTT estimate of both senders (s); a CPU-bound Python receiver "
        "answers probes late and inflates our GRTT, hence the repair timers",
    )
    args = ap.parse_args(argv)
    if not nrl.available():
        print("libnorm (NRL NORM) is not installed", file=sys.stderr)
        return 2
    size = int(args.size * 1e6)
    data = os.urandom(size)
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "bench.bin")
        Path(path).write_bytes(data)
        ours, theirs = [], []
        for _ in range(args.repeat):
            theirs.append(run_nrl(path, size, args))
            ours.append(run_ours(data, args))
    t_o, t_n = statistics.median(ours), statistics.median(theirs)
    g_o, g_n = size * 8 / t_o / 1e6, size * 8 / t_n / 1e6
    print(
        f"NORM loopback, {args.size:g} MB, segment {args.segment}, block {args.block}, "
        f"parity {args.parity}, configured {args.rate:g} Mbit/s, loss {args.loss:g}"
        + (f", GRTT max {args.grtt_max:g} s" if args.grtt_max else "")
    )
    print(f"  ours (Python NormSender -> NormReceiver): {t_o:7.3f} s  {g_o:8.1f} Mbit/s")
    print(f"  NRL  (libnorm {nrl.version()} sender -> receiver):   {t_n:7.3f} s  {g_n:8.1f} Mbit/s")
    print(f"  ratio ours/NRL = {g_o / g_n:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
