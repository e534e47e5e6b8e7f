"""``tesla-mcast demo``: an ALC/FLUTE sender and receiver on loopback multicast, one process.

Generates a few files, sends them to a random 239.255.x.y group (interface 127.0.0.1,
TTL 1, loopback on) with Reed-Solomon repair, receives them with injected random loss,
checks every file bit-exact, shows a progress bar on stderr and prints a summary.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from alc.net import Driver, LossInjector, open_socket, parse_group
from alc.output import OutputDir, OutputError
from alc.receiver import AlcReceiver, ReceiverConfig
from alc.sender import AlcSender, SenderConfig
from tesla.run_alc import FileSink
from tesla.wiring import demo_auth, tesla_line, tesla_summary


def random_group() -> tuple[str, int]:
    rng = random.SystemRandom()
    return f"239.255.{rng.randint(1, 254)}.{rng.randint(1, 254)}", rng.randint(20000, 60000)


def gen_files(n: int, largest: int) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for i in range(n):
        size = max(1, largest // (10 ** (n - 1 - i))) if i < n - 1 else largest
        out[f"demo-{i + 1}.bin"] = os.urandom(size)
    return out


def _bar(frac: float, width: int = 30) -> str:
    full = int(frac * width)
    return "#" * full + "-" * (width - full)


def run_demo(args: argparse.Namespace) -> int:
    group = parse_group(args.group) if args.group else random_group()
    files = gen_files(args.files, args.size)
    total = sum(len(d) for d in files.values())
    tsi = random.SystemRandom().randint(1, 0xFFFF)
    sender = AlcSender(
        SenderConfig(tsi=tsi, rate_bps=args.rate, fec=args.fec, repair_ratio=args.repair_ratio,
                     burst_bytes=256 * 1024)
    )
    for name, data in files.items():
        sender.add_bytes(data, name)
    rx = AlcReceiver(ReceiverConfig(tsi=tsi, session_timeout=5.0, object_timeout=5.0))
    outdir = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="tesla-mcast-demo-"))
    try:  # configuration error before any socket (docs/security/output.md)
        sink = FileSink(OutputDir(outdir, overwrite=bool(getattr(args, "overwrite", False))))
    except OutputError as e:
        print(f"error: {e.message}", file=sys.stderr)
        return 2
    rsock = open_socket(group, "127.0.0.1", receive=True, ttl=1, loop=True)
    ssock = open_socket(group, "127.0.0.1", receive=False, ttl=1, loop=True)
    rx_eng, tx_eng, auth_info = demo_auth(rx, sender, args, tsi)  # TESLA unless --no-auth
    drv = Driver()
    drv.add(rx_eng, rsock, None, loss=LossInjector(args.loss, seed=7) if args.loss else None)
    drv.add(tx_eng, ssock, group, receive=False)
    print(
        f"demo: {len(files)} files, {total} bytes -> {group[0]}:{group[1]} (iface 127.0.0.1, TTL 1), "
        f"TSI {tsi}, FEC {args.fec} ratio {args.repair_ratio}, rate {args.rate / 1e6:g} Mbit/s, "
        f"injected loss {args.loss:.0%}, {auth_info}",
        file=sys.stderr,
    )
    tty = sys.stderr.isatty()
    t0 = time.time()
    last_line = [0.0]

    def progress(now: float, force: bool = False) -> None:
        done_bytes = sum(f["bytes"] for f in sink.files)
        have, _tot = rx.progress()
        frac = min(1.0, (done_bytes + have) / total) if total else 1.0
        line = (
            f"\r[{_bar(frac)}] {frac:6.1%}  files {len(sink.files)}/{len(files)}  "
            f"pkts {rx.stats.get('packets', 0)}  lost {drv.stats.get('drop.injected_loss', 0)}"
        )
        if tty or force or now - last_line[0] >= 1.0:
            sys.stderr.write(line if tty else line.lstrip("\r") + "\n")
            sys.stderr.flush()
            last_line[0] = now

    def done() -> bool:
        sink.pump(rx)
        return rx.finished is not None or (rx.fdt_complete and rx.all_announced_complete())

    try:
        drv.run(until=done, timeout=args.timeout, on_tick=progress, tick=0.1)
    finally:
        rsock.close()
        ssock.close()
        drv.close()
        sink.out.close()  # no temporary file left behind
    elapsed = time.time() - t0
    sink.pump(rx)
    progress(time.time(), force=True)
    if tty:
        sys.stderr.write("\n")
    ok_files = 0
    bad: list[str] = []
    got = {Path(f["path"]).name: f for f in sink.files}
    for name, data in files.items():
        f = got.get(name)
        if f is not None and f["sha256"] == hashlib.sha256(data).hexdigest():
            ok_files += 1
        else:
            bad.append(name)
    drops: dict[str, int] = {}
    for st in (rx.stats, drv.stats):
        for k, v in st.items():
            if k.startswith("drop."):
                drops[k[5:]] = drops.get(k[5:], 0) + v
    summary: dict[str, Any] = {
        "files_ok": ok_files,
        "files": len(files),
        "bytes": total,
        "packets_sent": sender.stats.get("packets", 0),
        "packets_received": rx.stats.get("packets", 0),
        "fec_blocks_decoded": rx.stats.get("fec.blocks_decoded", 0),
        "drops": drops,
        "tesla": tesla_summary(rx_eng),
        "elapsed_s": round(elapsed, 3),
        "throughput_mbit_s": round(total * 8 / elapsed / 1e6, 2) if elapsed > 0 else None,
        "out": str(outdir),
    }
    if args.json:
        print(json.dumps(summary, indent=2))
    print(
        f"summary: files {ok_files}/{len(files)} bit-exact, {total} bytes, "
        f"packets sent {summary['packets_sent']} received {summary['packets_received']}, "
        f"FEC blocks repaired {summary['fec_blocks_decoded']}, "
        f"drops {', '.join(f'{k}={v}' for k, v in sorted(drops.items())) or 'none'}, "
        f"{elapsed:.2f} s, {summary['throughput_mbit_s']} Mbit/s goodput; files in {outdir}",
        file=sys.stderr,
    )
    if (line := tesla_line(rx_eng)) is not None:
        print(line, file=sys.stderr)
    if bad:
        print(f"error: not received bit-exact: {', '.join(bad)}", file=sys.stderr)
        return 1
    return 0
