"""``tesla-mcast demo``: an ALC/FLUTE (default) or NORM (``--protocol norm``) sender and
receiver on loopback multicast, one process.

Generates a few files, sends them to a random 239.255.x.y group (interface 127.0.0.1,
TTL 1, loopback on), receives them with injected random loss, checks every file
bit-exact, shows a progress bar on stderr and prints a summary.  ALC/FLUTE repairs with
Reed-Solomon repair symbols sent ahead; NORM with NACKs answered by fresh parity (the
summary shows NACKs and repairs).  Both TESLA-authenticated unless ``--no-auth``.
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
from tesla.cli.run_alc import FileSink
from tesla.cli.wiring import demo_auth, tesla_line, tesla_summary


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
    if getattr(args, "protocol", "alc") == "norm":
        return run_demo_norm(args)
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
    rx_eng, tx_eng, auth_info = demo_auth(rx, sender, args, "alc", tsi=tsi)  # TESLA unless --no-auth
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
        sink.pump(rx, rx)
        return rx.finished is not None or (rx.fdt_complete and rx.all_announced_complete())

    try:
        drv.run(until=done, timeout=args.timeout, on_tick=progress, tick=0.1)
    finally:
        rsock.close()
        ssock.close()
        drv.close()
        sink.out.close()  # no temporary file left behind
    elapsed = time.time() - t0
    sink.pump(rx, rx)
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
    }
    counts = (
        f"packets sent {summary['packets_sent']} received {summary['packets_received']}, "
        f"FEC blocks repaired {summary['fec_blocks_decoded']}"
    )
    return _report(args, summary, counts, drops, total, elapsed, outdir, rx_eng, bad)


# ----------------------------------------------------------------------------- NORM


def run_demo_norm(args: argparse.Namespace) -> int:
    """``tesla-mcast demo --protocol norm``: NORM sender and receiver (module doc)."""
    from norm.receiver import NormReceiver, ObjectAborted, ObjectReceived
    from norm.receiver import ReceiverConfig as NormReceiverConfig
    from norm.sender import NormSender, NormSenderConfig
    from tesla.cli.run_norm import FLUSH_MIN_TIME, release_delay
    from tesla.cli.wiring import DEFAULT_DISCLOSURE_DELAY

    group = parse_group(args.group) if args.group else random_group()
    files = gen_files(args.files, args.size)
    total = sum(len(d) for d in files.values())
    auth = not getattr(args, "no_auth", False)
    sender = NormSender(
        NormSenderConfig(
            node_id=1,
            rate=args.rate / 8.0,
            grtt=0.05,  # one host: the estimate falls to the loopback RTT within a few probes
            eot_repeats=3,
            flush_min_time=FLUSH_MIN_TIME
            + (release_delay(DEFAULT_DISCLOSURE_DELAY, args.tint) if auth else 0.0),
        )
    )
    for name, data in files.items():
        sender.enqueue_data(data, info=name.encode())
    sender.end()
    rx = NormReceiver(NormReceiverConfig(node_id=2))
    outdir = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="tesla-mcast-demo-"))
    outdir.mkdir(parents=True, exist_ok=True)
    rsock = open_socket(group, "127.0.0.1", receive=True, ttl=1, loop=True)
    ssock = open_socket(group, "127.0.0.1", receive=True, ttl=1, loop=True)  # NACKs in
    rx_eng, tx_eng, auth_info = demo_auth(rx, sender, args, "norm", node_id=2)
    drv = Driver()
    drv.add(rx_eng, rsock, group, loss=LossInjector(args.loss, seed=7) if args.loss else None)
    drv.add(tx_eng, ssock, group)
    print(
        f"demo: NORM, {len(files)} files, {total} bytes -> {group[0]}:{group[1]} "
        f"(iface 127.0.0.1, TTL 1), FEC ID {sender.fec_id} (RS, parity on NACK), "
        f"rate {args.rate / 1e6:g} Mbit/s, injected loss {args.loss:.0%}, {auth_info}",
        file=sys.stderr,
    )
    tty = sys.stderr.isatty()
    t0 = time.time()
    last_line = [0.0]
    got: dict[str, bytes] = {}
    aborted: list[Any] = []

    def pump() -> None:
        while (ev := rx_eng.next_event()) is not None:
            if isinstance(ev, ObjectReceived):
                name = Path(ev.name or f"norm-object-{ev.object_id}").name
                got[name] = ev.data
                (outdir / name).write_bytes(ev.data)
            elif isinstance(ev, ObjectAborted):
                aborted.append(ev)

    def progress(now: float, force: bool = False) -> None:
        frac = min(1.0, sum(len(d) for d in got.values()) / total) if total else 1.0
        line = (
            f"\r[{_bar(frac)}] {frac:6.1%}  files {len(got)}/{len(files)}  "
            f"NACKs {rx.stats.get('nack.sent', 0)}  "
            f"repairs {_repairs(sender.stats)}  lost {drv.stats.get('drop.injected_loss', 0)}"
        )
        if tty or force or now - last_line[0] >= 1.0:
            sys.stderr.write(line if tty else line.lstrip("\r") + "\n")
            sys.stderr.flush()
            last_line[0] = now

    def done() -> bool:
        pump()
        return len(got) == len(files) or bool(aborted)

    try:
        drv.run(until=done, timeout=args.timeout, on_tick=progress, tick=0.1)
    finally:
        rsock.close()
        ssock.close()
        drv.close()
    elapsed = time.time() - t0
    pump()
    progress(time.time(), force=True)
    if tty:
        sys.stderr.write("\n")
    bad = [n for n, d in files.items() if got.get(n) != d]
    drops: dict[str, int] = {}
    for st in (rx.stats, drv.stats):
        for k, v in st.items():
            if k.startswith("drop.") and k != "drop.own_feedback":
                drops[k[5:]] = drops.get(k[5:], 0) + v
    summary: dict[str, Any] = {
        "protocol": "norm",
        "files_ok": len(files) - len(bad),
        "files": len(files),
        "bytes": total,
        "messages_sent": sender.stats.get("tx", 0),
        "data_sent": sender.stats.get("tx.data", 0),
        "nacks_sent": rx.stats.get("nack.sent", 0),
        "nacks_heard": sender.stats.get("rx.nack", 0),
        "repairs_sent": _repairs(sender.stats),
        "fec_blocks_decoded": rx.stats.get("rx.fec_blocks_decoded", 0),
    }
    counts = (
        f"messages sent {summary['messages_sent']} ({summary['data_sent']} data), "
        f"NACKs sent {summary['nacks_sent']} (heard {summary['nacks_heard']}), "
        f"repairs sent {summary['repairs_sent']}, "
        f"FEC blocks repaired {summary['fec_blocks_decoded']}"
    )
    return _report(args, summary, counts, drops, total, elapsed, outdir, rx_eng, bad)


def _repairs(st: dict[str, int]) -> int:
    return (
        st.get("tx.repair.parity", 0)
        + st.get("tx.repair.explicit", 0)
        + st.get("tx.repair.info", 0)
    )


def _report(
    args: Any,
    summary: dict[str, Any],
    counts: str,
    drops: dict[str, int],
    total: int,
    elapsed: float,
    outdir: Any,
    rx_eng: Any,
    bad: list[str],
) -> int:
    """The demo's end, ALC or NORM: JSON (``--json``), the summary line with the
    protocol's ``counts``, the TESLA line; exit status 1 unless every file is bit-exact."""
    summary.update(
        drops=drops,
        tesla=tesla_summary(rx_eng),
        elapsed_s=round(elapsed, 3),
        throughput_mbit_s=round(total * 8 / elapsed / 1e6, 2) if elapsed > 0 else None,
        out=str(outdir),
    )
    if args.json:
        print(json.dumps(summary, indent=2))
    print(
        f"summary: files {summary['files_ok']}/{summary['files']} bit-exact, {total} bytes, "
        f"{counts}, drops {', '.join(f'{k}={v}' for k, v in sorted(drops.items())) or 'none'}, "
        f"{elapsed:.2f} s, {summary['throughput_mbit_s']} Mbit/s goodput; files in {outdir}",
        file=sys.stderr,
    )
    if (line := tesla_line(rx_eng)) is not None:
        print(line, file=sys.stderr)
    if bad:
        print(f"error: not received bit-exact: {', '.join(bad)}", file=sys.stderr)
        return 1
    return 0
