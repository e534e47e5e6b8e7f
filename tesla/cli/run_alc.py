"""ALC/FLUTE runners behind ``tesla-mcast send|receive --protocol alc`` (see :mod:`tesla.cli.main`).

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alc.engine import Address, Engine
from alc.net import Driver, LossInjector, open_socket, parse_group
from alc.output import OutputDir, OutputError, ReceivedFiles, flute_relpath
from alc.pcap import PcapWriter, replay
from alc.receiver import (
    AlcReceiver,
    BlockReceived,
    FileCompleted,
    FileReceived,
    ObjectFailed,
    ReceiverConfig,
)
from alc.sender import AlcSender, SenderConfig
from tesla.cli.wiring import (
    add_endpoints,
    dry_run_packets,
    tesla_line,
    tesla_of,
    tesla_summary,
    wrap_receiver,
    wrap_sender,
)
from tesla.core.receiver import TeslaReceiver

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


class ConfigError(ValueError):
    """A configuration error found before the first datagram (the CLI prints it as one
    ``error:`` line and exits 2; :mod:`tesla.aio` raises it)."""


@dataclass
class SendSession:
    """A sender built from the CLI options (:func:`build_sender`): ``engine`` is the
    ALC/NORM engine (files are added to it), ``wrapped`` what the driver runs (TESLA
    unless ``--no-auth``).  Shared by ``tesla-mcast send`` and :mod:`tesla.aio`."""

    protocol: str
    group: Address
    engine: Any
    wrapped: Any


@dataclass
class ReceiveSession:
    """A receiver built from the CLI options (:func:`build_receiver`,
    :func:`tesla.cli.run_norm.build_receiver`), shared by ``tesla-mcast receive`` and
    :mod:`tesla.aio`.  ``engine`` is what the driver feeds (TESLA unless ``--no-auth``),
    ``app`` the ALC or NORM receiver engine behind it (files, announcements, its own
    counters), ``tesla`` the TESLA receiver (None with ``--no-auth``);
    ``pump(other)`` hands completed objects to ``sink`` (the output directory) and every
    other engine event to ``other``; ``done()`` pumps and says whether the session is
    over; ``summary(elapsed, stop)`` is the JSON summary of ``receive --json``."""

    protocol: str
    group: Address
    engine: Any
    app: Any
    tesla: TeslaReceiver | None
    sink: ReceivedFiles
    loss: LossInjector | None
    pump: Callable[[Callable[[Any], None] | None], bool]
    done: Callable[[], bool]
    summary: Callable[[float, str | None], dict[str, Any]]


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


def build_sender(args: argparse.Namespace) -> SendSession:
    """The ALC/FLUTE sender of ``tesla-mcast send --protocol alc`` (no file yet; add them
    to ``.engine`` before the first send), wrapped in TESLA unless ``--no-auth``.
    :class:`ConfigError` on a bad option (SystemExit(2) from :mod:`tesla.cli.wiring` for a
    bad key or TESLA parameter)."""
    try:
        group = parse_group(args.group)
        sender = AlcSender(sender_config(args))
    except ValueError as e:
        raise ConfigError(str(e)) from None
    return SendSession("alc", group, sender, wrap_sender(sender, args, "alc"))


def start_send(
    args: argparse.Namespace, build: Callable[[argparse.Namespace], SendSession]
) -> tuple[list[Path], SendSession] | int:
    """The files to send and the sender session ``build`` makes (ALC or NORM, TESLA
    unless ``--no-auth``), or exit status 2 after one error line (a missing file, a bad
    option)."""
    files = [Path(f) for f in args.files]
    for p in files:
        if not p.is_file():
            print(f"error: {p}: no such file", file=sys.stderr)
            return 2
    try:
        return files, build(args)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def run_send(args: argparse.Namespace) -> int:
    started = start_send(args, build_sender)
    if isinstance(started, int):
        return started
    files, ss = started
    group, sender, eng = ss.group, ss.engine, ss.wrapped
    for p in files:
        try:
            sender.add_file(p)  # read block by block as it is sent (not loaded)
        except (OSError, ValueError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
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

    def pump(
        self, rx: Engine, app: AlcReceiver, other: Callable[[Any], None] | None = None
    ) -> None:
        """Drain the events of ``rx`` (the receive entry: ``app`` itself, or TESLA in
        front of it): files are written under the names ``app``'s FDT gives them,
        failures recorded, every other event (TESLA's, for :mod:`tesla.aio`) goes to
        ``other``."""
        announced = app.announced
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
            elif isinstance(ev, BlockReceived):
                # files larger than memory: each decoded block at its offset (temporary file)
                self.block(
                    ev.toi, *self._file_of(announced, ev.toi), ev.offset, ev.data,
                    self._record(announced, ev.toi), owned=True,  # the engine forgot it
                )
            elif isinstance(ev, FileCompleted):
                # every block is on disk: length and Content-MD5 checked on the written file
                label, rel = self._file_of(announced, ev.toi)
                path = self.block_commit(
                    ev.toi, label, rel, {"toi": ev.toi, "name": ev.name}, length=ev.length, md5=ev.md5
                )
                reason = self.failed.get(ev.toi)
                if path is None and reason in ("md5", "length"):
                    app.reject(ev.toi, reason)  # bad data: a later carousel round may fix it
            elif isinstance(ev, ObjectFailed):
                self.block_abort(ev.toi)
                self.failures.append({"toi": ev.toi, "name": ev.name, "reason": ev.reason})
            elif other is not None:
                other(ev)


    @staticmethod
    def _file_of(announced: dict[int, Any], toi: int) -> tuple[str, Callable[[], str]]:
        e = announced.get(toi)
        name = e.content_location if e is not None else ""
        return f"TOI {toi} {name!r}"[:120], functools.partial(flute_relpath, name)

    @staticmethod
    def _record(announced: dict[int, Any], toi: int) -> dict[str, Any]:
        e = announced.get(toi)
        return {"toi": toi, "name": e.content_location if e is not None else None}


def receiver_config(args: argparse.Namespace) -> ReceiverConfig:
    return ReceiverConfig(
        tsi=args.tsi,
        sender_address=args.sender,
        session_timeout=args.idle_timeout,
        object_timeout=args.idle_timeout,
        rs_matrix=args.rs_matrix,
        stream_files=True,  # files larger than memory: decoded blocks written as they complete
    )


def merged_stats(engine_stats: dict[str, int], sink: ReceivedFiles) -> dict[str, int]:
    """The engine's counters plus the output's ``fail.<reason>`` counters."""
    st = dict(engine_stats)
    for k, v in sink.stats.items():
        st[k] = st.get(k, 0) + v
    return dict(sorted(st.items()))


def summarize(
    rx: Engine, app: AlcReceiver, sink: FileSink, elapsed: float, stop: str | None = None
) -> dict[str, Any]:
    """A file counts as received only when it is on disk under its final name (``rx``:
    the receive entry, whose stats include TESLA's; ``app``: the ALC receiver)."""
    missing = [
        {
            "toi": t,
            "name": e.content_location,
            "reason": sink.failed.get(t) or app.failed.get(t, "not received"),
        }
        for t, e in sorted(app.announced.items())
        if t not in sink.delivered
    ]
    out: dict[str, Any] = {
        "complete": bool(app.announced) and not missing,
        "announced": len(app.announced),
        "received": sum(1 for t in app.announced if t in sink.delivered),
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
    rx: Engine,
    app: AlcReceiver,
    sink: FileSink,
    args: argparse.Namespace,
    t0: float,
    stop: str | None = None,
) -> int:
    # files the engine completed (and checked) before the session stopped are written,
    # also after an internal error: the events were queued before it
    pumped = guarded(lambda: sink.pump(rx, app))
    stop = stop or pumped
    sink.out.close()  # no temporary file outlives the session
    summary = summarize(rx, app, sink, time.time() - t0, stop)
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
    if not app.announced:
        print("error: no FDT received: no file was announced (wrong --group/--tsi?)", file=sys.stderr)
    elif summary["missing"]:
        names = ", ".join(f"{m['name']} ({m['reason']})" for m in summary["missing"])
        print(
            f"error: {len(summary['missing'])} of {summary['announced']} announced file(s) "
            f"not received bit-exact: {names}",
            file=sys.stderr,
        )
    return 1


def output_dir(args: argparse.Namespace) -> OutputDir:
    """The ``--out`` directory, checked before the first datagram (:class:`ConfigError`)."""
    try:
        return OutputDir(
            Path(args.out),
            overwrite=bool(getattr(args, "overwrite", False)),
            fsync=bool(getattr(args, "fsync", False)),
        )
    except OutputError as e:
        raise ConfigError(e.message) from None


def parse_receive_group(args: argparse.Namespace) -> tuple[str, int]:
    """``--group`` parsed, and ``--from-pcap`` present (:class:`ConfigError`)."""
    try:
        group = parse_group(args.group)
    except ValueError as e:
        raise ConfigError(f"--group {args.group}: {e}") from None
    if getattr(args, "from_pcap", None) and not Path(args.from_pcap).is_file():
        raise ConfigError(f"{args.from_pcap}: no such file")
    return group


def open_output(args: argparse.Namespace) -> FileSink | None:
    """:func:`output_dir` as a :class:`FileSink` (configuration error: message, None)."""
    try:
        return FileSink(output_dir(args))
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return None


def receive_group(args: argparse.Namespace) -> tuple[str, int] | None:
    """:func:`parse_receive_group` (configuration errors: message, None)."""
    try:
        return parse_receive_group(args)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return None


def build_receiver(args: argparse.Namespace) -> ReceiveSession:
    """The receiver of ``tesla-mcast receive --protocol alc``: group, output directory,
    ALC/FLUTE engine wrapped in TESLA unless ``--no-auth`` (:class:`ConfigError`;
    SystemExit(2) from :mod:`tesla.cli.wiring` for a bad key or TESLA option).  No socket."""
    group = parse_receive_group(args)
    sink = FileSink(output_dir(args))
    try:
        app = AlcReceiver(receiver_config(args))
        rx = wrap_receiver(app, args, "alc")  # TESLA unless --no-auth
    except BaseException:
        sink.out.close()
        raise

    def pump(other: Callable[[Any], None] | None = None) -> bool:
        sink.pump(rx, app, other)
        return app.finished is not None or (app.fdt_complete and app.all_announced_complete())

    def summary(elapsed: float, stop: str | None = None) -> dict[str, Any]:
        return summarize(rx, app, sink, elapsed, stop)

    loss = LossInjector(args.loss, args.loss_seed) if getattr(args, "loss", 0) else None
    return ReceiveSession("alc", group, rx, app, tesla_of(rx), sink, loss, pump, pump, summary)


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
    try:
        rs = build_receiver(args)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    group, sink, rx, app = rs.group, rs.sink, rs.engine, rs.app
    assert isinstance(sink, FileSink)
    sock = None if args.from_pcap else open_receive_socket(group, args.iface, args.source)
    if sock is None and not args.from_pcap:
        sink.out.close()
        return 2
    t0 = time.time()

    with terminate_as_interrupt():
        try:
            if args.from_pcap:
                stop = guarded(lambda: replay(rx, args.from_pcap, dst_addr=group[0], dst_port=group[1], until=rs.done))
            else:
                assert sock is not None
                drv = Driver()
                add_endpoints(drv, rx, sock, None, loss=rs.loss, iface=args.iface)
                stop = run_receiver(drv, sock, rs.done, args.timeout, rx.stats)
            return finish_receive(rx, app, sink, args, t0, stop)
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
