"""ALC/FLUTE runners behind ``tesla-mcast send|receive --protocol alc`` (see :mod:`tesla.cli`).

Each runner takes the parsed argparse namespace and returns the process exit status.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import re
import signal
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from alc.net import Driver, LossInjector, open_socket, parse_group
from alc.output import OutputDir, OutputError, ReceivedFiles, flute_relpath
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
            try:  # an endless carousel (--carousel 0) ends with Ctrl-C / SIGTERM
                with terminate_as_interrupt():
                    drv.run(until=lambda: eng.done)
            except KeyboardInterrupt:
                print("send interrupted", file=sys.stderr)
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


class FileSink(ReceivedFiles):
    """Writes FileReceived events under ``out`` (safe names, atomic, never replacing an
    existing file unless ``overwrite``: :mod:`alc.output`) and keeps a JSON-able record.
    Raises :class:`alc.output.OutputError` (``config``) when ``out`` is unusable."""

    def __init__(self, out: Path | OutputDir, overwrite: bool = False) -> None:
        super().__init__(out if isinstance(out, OutputDir) else OutputDir(out, overwrite=overwrite))

    def pump(self, rx: AlcReceiver) -> None:
        announced = getattr(rx, "announced", {})
        while (ev := rx.next_event()) is not None:
            if isinstance(ev, FileReceived):
                entry = announced.get(ev.toi)
                # the engine checked Content-Length and Content-MD5 on this very buffer; the
                # writer checks the length on disk (hashing it again would cost ~2 s/GiB here)
                length = entry.content_length if entry is not None else None
                name = ev.name
                self.deliver(
                    ev.toi,
                    f"TOI {ev.toi} {name!r}"[:120],
                    functools.partial(flute_relpath, name),
                    ev.data,
                    {"toi": ev.toi, "name": name},
                    length=length,
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


def merged_stats(engine_stats: dict[str, int], sink: ReceivedFiles) -> dict[str, int]:
    """The engine's counters plus the output's ``fail.<reason>`` counters."""
    st = dict(engine_stats)
    for k, v in sink.stats.items():
        st[k] = st.get(k, 0) + v
    return dict(sorted(st.items()))


def summarize(rx: AlcReceiver, sink: FileSink, elapsed: float, stop: str | None = None) -> dict[str, Any]:
    """A file counts as received only when it is on disk under its final name."""
    missing = [
        {
            "toi": t,
            "name": e.content_location,
            "reason": sink.failed.get(t) or rx.failed.get(t, "not received"),
        }
        for t, e in sorted(rx.announced.items())
        if t not in sink.delivered
    ]
    out: dict[str, Any] = {
        "complete": bool(rx.announced) and not missing,
        "announced": len(rx.announced),
        "received": sum(1 for t in rx.announced if t in sink.delivered),
        "files": sink.files,
        "missing": missing,
        # an object failed in one carousel round may arrive in the next
        "failures": [f for f in sink.failures if f.get("toi") not in sink.delivered],
        "stats": merged_stats(rx.stats, sink),
        "tesla": tesla_summary(rx),
        "elapsed_s": round(elapsed, 3),
    }
    if stop is not None:
        out["stopped"] = stop
    return out


def finish_receive(
    rx: AlcReceiver, sink: FileSink, args: argparse.Namespace, t0: float, stop: str | None = None
) -> int:
    # files the engine completed (and checked) before the session stopped are written,
    # also after an internal error: the events were queued before it
    pumped = guarded(lambda: sink.pump(rx))
    stop = stop or pumped
    sink.out.close()  # no temporary file outlives the session
    summary = summarize(rx, sink, time.time() - t0, stop)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        for f in sink.files:
            print(f"{f['path']}  {f['bytes']} bytes  sha256 {f['sha256']}")
        if (line := tesla_line(rx)) is not None:
            print(line, file=sys.stderr)
    report_stop(stop)
    if summary["complete"] and not is_internal_error(stop):
        if not args.json:
            print(f"all {summary['announced']} announced file(s) received bit-exact", file=sys.stderr)
        return 0
    if not rx.announced:
        print("error: no FDT received: no file was announced (wrong --group/--tsi?)", file=sys.stderr)
    elif summary["missing"]:
        names = ", ".join(f"{m['name']} ({m['reason']})" for m in summary["missing"])
        print(
            f"error: {len(summary['missing'])} of {summary['announced']} announced file(s) "
            f"not received bit-exact: {names}",
            file=sys.stderr,
        )
    return 1


def open_output(args: argparse.Namespace) -> FileSink | None:
    """The output directory, checked before the first datagram (configuration error:
    message, None)."""
    try:
        out = OutputDir(
            Path(args.out),
            overwrite=bool(getattr(args, "overwrite", False)),
            fsync=bool(getattr(args, "fsync", False)),
        )
    except OutputError as e:
        print(f"error: {e.message}", file=sys.stderr)
        return None
    return FileSink(out)


def receive_group(args: argparse.Namespace) -> tuple[str, int] | None:
    """``--group`` parsed, and ``--from-pcap`` present (configuration errors: message, None)."""
    try:
        group = parse_group(args.group)
    except ValueError as e:
        print(f"error: --group {args.group}: {e}", file=sys.stderr)
        return None
    if args.from_pcap and not Path(args.from_pcap).is_file():
        print(f"error: {args.from_pcap}: no such file", file=sys.stderr)
        return None
    return group


def open_receive_socket(
    group: tuple[str, int], iface: str | None, source: str | None = None
) -> socket.socket | None:
    """The receive socket (joined; source-specific with ``source``), or None after a
    one-line configuration error."""
    try:
        return open_socket(group, iface, receive=True, source=source)
    except (OSError, ValueError) as e:
        print(f"error: cannot receive on {group[0]}:{group[1]}: {e}", file=sys.stderr)
        return None


def run_receive(args: argparse.Namespace) -> int:
    group = receive_group(args)
    if group is None:
        return 2
    sink = open_output(args)
    if sink is None:
        return 2
    rx = wrap_receiver(AlcReceiver(receiver_config(args)), args, "alc")  # TESLA unless --no-auth
    sock = None if args.from_pcap else open_receive_socket(group, args.iface, args.source)
    if sock is None and not args.from_pcap:
        return 2
    t0 = time.time()

    def done() -> bool:
        sink.pump(rx)
        return rx.finished is not None or (rx.fdt_complete and rx.all_announced_complete())

    with terminate_as_interrupt():
        try:
            if args.from_pcap:
                stop = guarded(lambda: replay(rx, args.from_pcap, dst_addr=group[0], dst_port=group[1], until=done))
            else:
                assert sock is not None
                drv = Driver()
                loss = LossInjector(args.loss, args.loss_seed) if args.loss else None
                add_endpoints(drv, rx, sock, None, loss=loss, iface=args.iface)
                stop = run_receiver(drv, sock, done, args.timeout, rx.stats)
            return finish_receive(rx, sink, args, t0, stop)
        finally:
            sink.out.close()


# ----------------------------------------------------------------------------- error policy


class Terminated(KeyboardInterrupt):
    """Raised by the SIGTERM handler: the session ends like Ctrl-C (summary written)."""


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM ends a receive session the way SIGINT does (KeyboardInterrupt), so the
    summary is still written and temporary files removed; a second SIGTERM is ignored
    while the summary is written.  Main thread only."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    fired: list[int] = []

    def handler(signum: int, frame: Any) -> None:
        if not fired:  # the first one ends the loop; later ones must not cut the summary
            fired.append(signum)
            raise Terminated()

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def guarded(fn: Callable[[], Any]) -> str | None:
    """Run one part of a receive session.  -> None, ``"interrupted"`` (SIGINT/SIGTERM) or
    ``"internal error: ..."`` (an exception that escaped the engines: a bug; the session
    stops but its summary is still written)."""
    try:
        fn()
    except KeyboardInterrupt:
        return "interrupted"
    except Exception as e:  # noqa: BLE001 - the error policy: report, never a traceback
        where = ""
        tb = traceback.extract_tb(e.__traceback__)
        if tb:
            where = f" at {Path(tb[-1].filename).name}:{tb[-1].lineno}"
        return f"internal error: {type(e).__name__}: {e}"[:300] + where
    return None


def is_internal_error(stop: str | None) -> bool:
    return stop is not None and stop.startswith("internal error")


def report_stop(stop: str | None) -> None:
    """One stderr line for a session that did not end normally."""
    if stop == "interrupted":
        print("receive interrupted: summary of what was written so far", file=sys.stderr)
    elif stop is not None:
        print(f"error: receive stopped: {stop}", file=sys.stderr)


def run_receiver(
    drv: Driver, sock: Any, done: Callable[[], bool], timeout: float | None, stats: dict[str, int]
) -> str | None:
    """Run the receive loop until ``done`` (Ctrl-C/SIGTERM end it too: ``"interrupted"``; an
    escaped exception: ``"internal error: ..."``, see :func:`guarded`), close the socket and
    add the driver's drop counters (e.g. injected loss) to the receiver's ``stats``."""
    try:
        stop = guarded(lambda: drv.run(until=done, timeout=timeout))
    finally:
        sock.close()
    for k, v in drv.stats.items():
        if k.startswith("drop."):
            stats[k] = stats.get(k, 0) + v
    return stop
