"""ALC/FLUTE runners behind ``tesla-mcast send|receive --protocol alc`` (see :mod:`tesla.cli`).

Each runner takes the parsed argparse namespace and returns the process exit status.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from alc.net import Driver, LossInjector, open_socket, parse_group
from alc.pcap import PcapWriter, replay
from alc.receiver import AlcReceiver, FileReceived, ObjectFailed, ReceiverConfig
from alc.sender import AlcSender, SenderConfig
from tesla.wiring import (
    add_endpoints,
    dry_run_packets,
    tesla_line,
    tesla_summary,
    wrap_receiver,
    wrap_sender,
)

_UNITS = {"": 1, "k": 1e3, "m": 1e6, "g": 1e9}


def parse_rate(text: str) -> float:
    """``"50M"``, ``"1.5g"``, ``"800k"``, ``"1e6"`` -> bits per second."""
    m = re.fullmatch(r"\s*([0-9.eE+-]+)\s*([kKmMgG]?)(?:bit/s|bps|b/s)?\s*", text)
    if not m:
        raise argparse.ArgumentTypeError(f"bad rate {text!r} (e.g. 20M, 800k, 1e6)")
    v = float(m.group(1)) * _UNITS[m.group(2).lower()]
    if v < 0:
        raise argparse.ArgumentTypeError("rate must be >= 0")
    return v


def safe_name(location: str) -> str:
    """File name to write for a Content-Location: the last path segment of the URI,
    without anything that could escape the output directory."""
    loc = re.sub(r"^[a-zA-Z][a-zA-Z0-9+.-]*://[^/]*", "", location)
    name = loc.replace("\\", "/").rstrip("/").split("/")[-1]
    name = re.sub(r"[\x00-\x1f]", "_", name)
    if name in ("", ".", ".."):
        name = "unnamed"
    return name


def sender_config(args: argparse.Namespace) -> SenderConfig:
    return SenderConfig(
        tsi=args.tsi,
        rate_bps=args.rate,
        fec=args.fec,
        repair_ratio=args.repair_ratio,
        symbol_length=args.symbol_length,
        max_source_block_length=args.block_length,
        carousel_rounds=args.carousel,
        content_encoding=args.content_encoding,
        fdt_interval=args.fdt_interval,
    )


def run_send(args: argparse.Namespace) -> int:
    group = parse_group(args.group)
    sender = AlcSender(sender_config(args))
    for f in args.files:
        p = Path(f)
        if not p.is_file():
            print(f"error: {f}: no such file", file=sys.stderr)
            return 2
        sender.add_file(p)
    eng = wrap_sender(sender, args, "alc")  # TESLA unless --no-auth
    writer = PcapWriter(args.pcap) if args.pcap else None
    src = ("127.0.0.1", 0)
    try:
        if args.dry_run and eng is not sender:
            for now, pkt in dry_run_packets(eng, time.time()):
                if writer is not None:
                    writer.write(now, src, group, pkt)
        elif args.dry_run:
            now = time.time()
            for pkt in sender.all_packets(now):
                if writer is not None:
                    writer.write(now, src, group, pkt)
                now += len(pkt) * 8 / args.rate if args.rate else 0.0
        else:
            sock = open_socket(group, args.iface, receive=False, ttl=args.ttl)
            src = sock.getsockname()
            drv = Driver()

            def record(now: float, data: bytes, dst: tuple[str, int]) -> None:
                if writer is not None:
                    writer.write(max(now, time.time()), src, dst, data)  # actual send time

            add_endpoints(drv, eng, sock, group, receive=False, on_sent=record, iface=args.iface)
            drv.run(until=lambda: eng.done)
            sock.close()
    finally:
        if writer is not None:
            writer.close()
    st = sender.stats
    if not args.quiet:
        print(
            f"sent {len(sender.objects)} file(s), {st.get('packets', 0)} packets, "
            f"{st.get('bytes', 0)} bytes to {group[0]}:{group[1]} TSI {args.tsi}",
            file=sys.stderr,
        )
    return 0


class FileSink:
    """Writes FileReceived events into a directory and keeps a JSON-able record."""

    def __init__(self, out: Path) -> None:
        self.out = out
        out.mkdir(parents=True, exist_ok=True)
        self.files: list[dict[str, Any]] = []
        self.failures: list[dict[str, Any]] = []

    def pump(self, rx: AlcReceiver) -> None:
        while (ev := rx.next_event()) is not None:
            if isinstance(ev, FileReceived):
                path = self.out / safe_name(ev.name)
                tmp = path.with_name(path.name + ".part")
                tmp.write_bytes(ev.data)
                os.replace(tmp, path)
                self.files.append(
                    {
                        "toi": ev.toi,
                        "name": ev.name,
                        "path": str(path),
                        "bytes": len(ev.data),
                        "sha256": hashlib.sha256(ev.data).hexdigest(),
                    }
                )
            elif isinstance(ev, ObjectFailed):
                self.failures.append({"toi": ev.toi, "name": ev.name, "reason": ev.reason})


def receiver_config(args: argparse.Namespace) -> ReceiverConfig:
    return ReceiverConfig(
        tsi=args.tsi,
        sender_address=args.sender,
        session_timeout=args.idle_timeout,
        object_timeout=args.idle_timeout,
        rs_matrix=args.rs_matrix,
    )


def summarize(rx: AlcReceiver, sink: FileSink, elapsed: float) -> dict[str, Any]:
    missing = [
        {"toi": t, "name": e.content_location, "reason": rx.failed.get(t, "not received")}
        for t, e in sorted(rx.announced.items())
        if t not in rx.received
    ]
    return {
        "complete": rx.all_announced_complete(),
        "announced": len(rx.announced),
        "received": len(rx.received),
        "files": sink.files,
        "missing": missing,
        "stats": dict(sorted(rx.stats.items())),
        "tesla": tesla_summary(rx),
        "elapsed_s": round(elapsed, 3),
    }


def finish_receive(rx: AlcReceiver, sink: FileSink, args: argparse.Namespace, t0: float) -> int:
    sink.pump(rx)
    summary = summarize(rx, sink, time.time() - t0)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        for f in sink.files:
            print(f"{f['path']}  {f['bytes']} bytes  sha256 {f['sha256']}")
        if (line := tesla_line(rx)) is not None:
            print(line, file=sys.stderr)
    if summary["complete"]:
        if not args.json:
            print(f"all {summary['announced']} announced file(s) received bit-exact", file=sys.stderr)
        return 0
    if not rx.announced:
        print("error: no FDT received: no file was announced (wrong --group/--tsi?)", file=sys.stderr)
    else:
        names = ", ".join(f"{m['name']} ({m['reason']})" for m in summary["missing"])
        print(
            f"error: {len(summary['missing'])} of {summary['announced']} announced file(s) "
            f"not received bit-exact: {names}",
            file=sys.stderr,
        )
    return 1


def run_receive(args: argparse.Namespace) -> int:
    group = parse_group(args.group)
    rx = wrap_receiver(AlcReceiver(receiver_config(args)), args, "alc")  # TESLA unless --no-auth
    sink = FileSink(Path(args.out))
    t0 = time.time()

    def done() -> bool:
        sink.pump(rx)
        return rx.finished is not None or (rx.fdt_complete and rx.all_announced_complete())

    if args.from_pcap:
        if not Path(args.from_pcap).is_file():
            print(f"error: {args.from_pcap}: no such file", file=sys.stderr)
            return 2
        replay(rx, args.from_pcap, dst_addr=group[0], dst_port=group[1], until=done)
        return finish_receive(rx, sink, args, t0)
    sock = open_socket(group, args.iface, receive=True, source=getattr(args, "source", None))
    drv = Driver()
    loss = LossInjector(args.loss, args.loss_seed) if args.loss else None
    add_endpoints(drv, rx, sock, None, loss=loss, iface=args.iface)
    run_receiver(drv, sock, done, args.timeout, rx.stats)
    return finish_receive(rx, sink, args, t0)


def run_receiver(
    drv: Driver, sock: Any, done: Callable[[], bool], timeout: float | None, stats: dict[str, int]
) -> None:
    """Run the receive loop until ``done`` (Ctrl-C ends it too), close the socket and add
    the driver's drop counters (e.g. injected loss) to the receiver's ``stats``."""
    try:
        drv.run(until=done, timeout=timeout)
    except KeyboardInterrupt:
        pass
    finally:
        sock.close()
    for k, v in drv.stats.items():
        if k.startswith("drop."):
            stats[k] = stats.get(k, 0) + v
