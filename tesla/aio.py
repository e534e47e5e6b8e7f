"""asyncio API: ALC/FLUTE or NORM senders and receivers, TESLA-authenticated or not, on
the event loop of the caller.

    async with tesla.aio.open_receiver(protocol="alc", group="239.255.1.2:4000", out="DIR",
                                       sender_key="S.pub", iface="127.0.0.1") as rx:
        async for event in rx:          # typed events (dataclasses below)
            print(event)
    print(rx.summary)                    # the JSON summary of ``tesla-mcast receive --json``

    async with tesla.aio.open_sender(protocol="alc", group="239.255.1.2:4000", key="S.pem",
                                     iface="127.0.0.1") as tx:
        await tx.send_file("a.bin")

Same engines and same receive path as the CLI, no second implementation: the receiver and
the sender are built by the CLI's own builders (:func:`tesla.cli.run_alc.build_receiver`,
:func:`tesla.cli.run_norm.build_receiver`, ``build_sender``) from the CLI's own parser
(keyword ``foo_bar=V`` is ``--foo-bar V``, ``True`` a flag: defaults and validation are the
CLI's), and driven as :class:`alc.net.Driver` drives them: ``loop.add_reader`` on the
non-blocking socket, each wakeup drained by one ``recvmmsg`` into the endpoint's slab with
the kernel's receive timestamps (:func:`alc.net.drain_endpoint`), due datagrams sent by
:func:`alc.net.send_due` (``loop.add_writer`` while the kernel says ``EAGAIN``), and the
engine's POSIX-time timer (``engine.get_timer()``) scheduled with ``loop.call_later``.
Everything runs in the loop's thread; the only other threads are the documented MAC
verification threads of ``verify_threads=N`` (``--verify-threads``), the processes of
``verify_workers=N``, and, with key chains longer than
:data:`tesla.core.keychain.SYNC_BUILD_MAX_KEYS`, the one thread that builds a sender's next
chain ahead of its switch.  Writing a received file (``--out``) is done in the loop's thread, as
the CLI does.

Events: :class:`BootstrapAccepted`, :class:`TimeSynchronized`, :class:`KeyVerified`,
:class:`IntervalVerified`, :class:`DatagramDropped`, :class:`FileReceived` (ALC) or
:class:`ObjectReceived` (NORM), :class:`TransferFailed`, and last :class:`SessionEnded`.
They are made in one function, :func:`translate`; see its docstring for which come from
the receiver's events and which are derived from its counters.

Cancelling the task that iterates (or leaving the ``async with`` early) ends the session
as SIGINT ends ``tesla-mcast receive``: every socket closed, temporary files removed, and
:attr:`Receiver.summary` set (``"stopped": "cancelled"``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import os
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alc.net import Driver, Endpoint, drain_endpoint, open_socket, send_due
from tesla.cli.run_alc import ConfigError, ReceiveSession, SendSession, guarded
from tesla.cli.wiring import PRINT_ERRORS, ConfigExit, add_endpoints, sender_finished
from tesla.core import receiver as tesla_rx
from tesla.core.ntp import ntp_to_posix

__all__ = [
    "BootstrapAccepted",
    "DatagramDropped",
    "Event",
    "FileReceived",
    "IntervalVerified",
    "KeyVerified",
    "ObjectReceived",
    "Receiver",
    "Sender",
    "SessionEnded",
    "TimeSynchronized",
    "TransferFailed",
    "open_receiver",
    "open_sender",
    "translate",
]

#: longest sleep between two services of the engines, as :meth:`alc.net.Driver.run`'s tick
TICK = 0.1

# ----------------------------------------------------------------------------- events


@dataclass(frozen=True)
class Event:
    """Base class of the receiver's events."""


@dataclass(frozen=True)
class BootstrapAccepted(Event):
    """A signed bootstrap (RFC 5776 §3.3.1, EXT_AUTH Type 1) verified with the sender's
    public key: the TESLA parameters are known."""

    tint_ms: int
    disclosure_delay: int
    chain_length: int
    t0: float  # POSIX seconds of the start of interval 0


@dataclass(frozen=True)
class TimeSynchronized(Event):
    """D_t, the bound on the sender's clock ahead of ours (RFC 5776 §3.3), is known."""

    d_t_ms: float


@dataclass(frozen=True)
class KeyVerified(Event):
    """A disclosed key K_index was verified against the chain (RFC 4082 §3.5): derived,
    see :func:`translate`."""

    index: int


@dataclass(frozen=True)
class IntervalVerified(Event):
    """``datagrams`` more datagrams were authenticated (MACs checked with keys up to
    ``up_to``, RFC 5776 §4.3 step 6) and handed to the ALC/NORM engine; ``total`` so far.
    Derived, see :func:`translate`."""

    up_to: int
    datagrams: int
    total: int


@dataclass(frozen=True)
class DatagramDropped(Event):
    """``count`` datagrams dropped for ``reason`` (``layer``: ``"tesla"`` for the TESLA
    verifier's reasons, ``"engine"`` for the ALC/NORM engine's ``drop.<reason>``,
    ``"driver"`` for the socket: ``socket_overflow``, ``truncated``, ``injected_loss``)."""

    reason: str
    count: int
    layer: str = "tesla"


@dataclass(frozen=True)
class FileReceived(Event):
    """An ALC/FLUTE file, complete and checked, on disk under its final name."""

    path: str
    name: str
    size: int
    sha256: str


@dataclass(frozen=True)
class ObjectReceived(FileReceived):
    """A NORM object, complete, on disk under its final name."""

    object_id: int = 0


@dataclass(frozen=True)
class TransferFailed(Event):
    """A file or object that failed (engine: aborted, checksum; output: not written)."""

    name: str | None
    reason: str


@dataclass(frozen=True)
class SessionEnded(Event):
    """Last event: ``summary`` is the JSON summary of ``tesla-mcast receive --json``."""

    summary: dict[str, Any]


@dataclass
class _Seen:
    """What :func:`translate` has reported so far (to derive events from counters)."""

    key_index: int = -1
    accepted: int = 0
    drops: dict[str, int] = field(default_factory=dict)
    files: int = 0
    failures: int = 0


def translate(raw: Iterable[Any], rs: ReceiveSession, driver_stats: dict[str, int], seen: _Seen) -> list[Event]:
    """The receiver's raw events and counters -> typed events (the one place to adapt
    when the receiver's events change).

    From the events of :class:`tesla.core.receiver.TeslaReceiver` (dataclasses):
    ``Bootstrapped`` -> :class:`BootstrapAccepted`, ``TimeSynchronized`` ->
    :class:`TimeSynchronized` (``NewChain`` is not an API event).  The receiver has no event
    for a verified key or interval, so those are derived from its public state:
    :class:`KeyVerified` when :attr:`~tesla.core.receiver.TeslaReceiver.max_known_key` rises,
    :class:`IntervalVerified` when ``stats["accepted"]`` rises.  Drops come from the
    counters of each layer, so they add up to the summary exactly (the receiver's
    ``Dropped`` events live in a bounded queue that a flood can overrun):
    :class:`DatagramDropped` with layer ``tesla`` (its ``drop.<reason>``, one of
    :class:`tesla.core.receiver.DropReason`), ``engine`` and ``driver`` when a counter rises.
    Files: from the output's record (``rs.sink``), so an event means the file is on disk
    under its final name."""
    out: list[Event] = []
    # the receiver queues D_t before the bootstrap it comes from: bootstrap first
    for ev in sorted(raw, key=lambda e: 0 if isinstance(e, tesla_rx.Bootstrapped) else 1):
        if isinstance(ev, tesla_rx.Bootstrapped):
            p = ev.params
            out.append(BootstrapAccepted(p.tint_ms, p.d, p.n_chain, ntp_to_posix(p.t0_ntp)))
        elif isinstance(ev, tesla_rx.TimeSynchronized):
            out.append(TimeSynchronized(round(ev.d_t * 1000 / (1 << 32), 3)))
    layers: list[tuple[str, dict[str, int]]] = []
    t = rs.tesla
    if t is not None:
        k = t.max_known_key
        if k > seen.key_index:
            seen.key_index = k
            out.append(KeyVerified(k))
        tst = t.stats
        acc = tst["accepted"]
        if acc > seen.accepted:
            out.append(IntervalVerified(seen.key_index, acc - seen.accepted, acc))
            seen.accepted = acc
        layers.append(("tesla", tst))
    layers += [("engine", rs.engine.stats), ("driver", driver_stats)]
    for layer, counters in layers:
        for key, v in counters.items():
            if key.startswith("drop.") and v > seen.drops.get(layer + key, 0):
                out.append(DatagramDropped(key[5:], v - seen.drops.get(layer + key, 0), layer))
                seen.drops[layer + key] = v
    files = rs.sink.files
    for f in files[seen.files :]:
        if rs.protocol == "norm":
            out.append(ObjectReceived(f["path"], f.get("name") or "", f["bytes"], f["sha256"], f.get("object_id", 0)))
        else:
            out.append(FileReceived(f["path"], f.get("name") or "", f["bytes"], f["sha256"]))
    seen.files = len(files)
    fails = rs.sink.failures
    for f in fails[seen.failures :]:
        out.append(TransferFailed(f.get("name"), str(f.get("reason"))))
    seen.failures = len(fails)
    return out


# ----------------------------------------------------------------------------- options


def cli_namespace(command: str, protocol: str, options: dict[str, Any], positional: Iterable[str] = ()) -> argparse.Namespace:
    """``options`` (``foo_bar=V`` -> ``--foo-bar V``; True -> the flag; None/False -> left
    out; a list -> ``a,b``) parsed by ``tesla-mcast COMMAND``'s own parser, so defaults
    and validation are the CLI's.  ValueError with the parser's message on a bad option."""
    from tesla.cli.parser import build_parser

    if protocol not in ("alc", "norm"):
        raise ValueError(f"protocol must be 'alc' or 'norm', not {protocol!r}")
    parser = build_parser()
    sub: argparse.ArgumentParser | None = None
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            sub = action.choices[command]
    assert sub is not None
    actions = {a.dest: a for a in sub._actions if a.option_strings}
    argv = [command, *positional, "--protocol", protocol]
    for k, v in options.items():
        a = actions.get(k)
        if a is None or k in ("help", "protocol"):
            raise TypeError(f"unknown option {k!r} for tesla-mcast {command}")
        opt = max(a.option_strings, key=len)
        if a.nargs == 0:  # a flag
            if v:
                argv.append(opt)
            continue
        if v is None or v is False:
            continue
        if isinstance(v, (list, tuple)):
            v = ",".join(str(x) for x in v)
        argv += [opt, os.fspath(v) if isinstance(v, os.PathLike) else str(v)]
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            return parser.parse_args(argv)
    except SystemExit:
        lines = err.getvalue().strip().splitlines()
        raise ValueError(lines[-1] if lines else "bad options") from None


def _built(build: Callable[[argparse.Namespace], Any], args: argparse.Namespace) -> Any:
    """A CLI builder's result; its configuration errors as :class:`ConfigError`."""
    token = PRINT_ERRORS.set(False)  # raised here, not printed as the CLI's error line
    try:
        return build(args)
    except ConfigExit as e:
        raise ConfigError(e.message) from None
    finally:
        PRINT_ERRORS.reset(token)


# ----------------------------------------------------------------------------- driver


class _LoopDriver:
    """:class:`alc.net.Driver`'s loop body on an asyncio loop (endpoints made by
    :func:`tesla.cli.wiring.add_endpoints`, so the ALC direct-sync side channel is included)."""

    def __init__(self, drv: Driver, on_progress: Callable[[], None]) -> None:
        self.drv = drv
        self.loop = asyncio.get_running_loop()
        self.on_progress = on_progress
        self.error: str | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._writing: set[int] = set()
        self._closed = False
        for ep in drv.endpoints:
            if ep.slab is not None:
                self.loop.add_reader(ep.sock.fileno(), self._readable, ep)
        self.loop.call_soon(self.service)

    def _guard(self, fn: Callable[[], Any]) -> None:
        if self._closed:
            return
        stop = guarded(fn)  # the CLI's error policy: an escaped exception ends the session
        if stop is not None and self.error is None:
            self.error = stop
            self.on_progress()

    def _readable(self, ep: Endpoint) -> None:
        self._guard(lambda: drain_endpoint(ep, self.drv.stats))
        self.service()

    def _writable(self, ep: Endpoint) -> None:
        self.loop.remove_writer(ep.sock.fileno())
        self._writing.discard(ep.sock.fileno())
        self.service()

    def service(self) -> None:
        """Fire due timers and send due datagrams of every endpoint, then sleep until the
        earliest engine timer (at most :data:`TICK`)."""
        if self._closed:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        wait = [TICK]

        def step() -> None:
            now = time.time()  # engines use POSIX time
            for ep in self.drv.endpoints:
                eng = ep.engine
                t = eng.get_timer()
                if t is not None and t <= now:
                    eng.handle_timer(now)
                if not send_due(ep, now, self.drv.stats):
                    fd = ep.sock.fileno()
                    if fd not in self._writing:
                        self._writing.add(fd)
                        self.loop.add_writer(fd, self._writable, ep)
                t = eng.get_timer()
                if t is not None and not ep.backlog:
                    wait[0] = min(wait[0], max(0.0, t - now))

        self._guard(step)
        if self._closed:
            return
        self.on_progress()
        if not self._closed:
            self._timer = self.loop.call_later(wait[0], self.service)

    def close(self) -> None:
        """Stop: no reader, writer or timer left; every socket closed."""
        if self._closed:
            return
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
        for ep in self.drv.endpoints:
            fd = ep.sock.fileno()
            if fd >= 0:
                self.loop.remove_reader(fd)
                self.loop.remove_writer(fd)
            ep.sock.close()
        self.drv.close()


# ----------------------------------------------------------------------------- receiver


class Receiver:
    """An open receive session (:func:`open_receiver`); ``async for event in rx``."""

    def __init__(self, rs: ReceiveSession, args: argparse.Namespace) -> None:
        self.session = rs
        self.args = args
        self.summary: dict[str, Any] | None = None
        self._events: deque[Event] = deque()
        self._wake = asyncio.Event()
        self._seen = _Seen()
        self._raw: list[Any] = []
        self._t0 = time.time()
        self._ended = False
        self._timeout: asyncio.TimerHandle | None = None
        sock = open_socket(rs.group, args.iface, receive=True, source=args.source)
        drv = Driver()
        try:
            add_endpoints(drv, rs.engine, sock, rs.group if rs.protocol == "norm" else None, loss=rs.loss, iface=args.iface)
        except BaseException:
            sock.close()
            raise
        self._driver = _LoopDriver(drv, self._progress)
        if args.timeout is not None:
            self._timeout = asyncio.get_running_loop().call_later(args.timeout, self._finish, None)

    @property
    def stats(self) -> dict[str, int]:
        """The engine's counters (merged with TESLA's, ``tesla.`` prefix) so far."""
        return dict(self.session.engine.stats)

    def _collect(self) -> bool:
        raw = self._raw
        done = self.session.pump(raw.append) or self.session.done()
        self._events.extend(translate(raw, self.session, self._driver.drv.stats, self._seen))
        raw.clear()
        return done

    def _progress(self) -> None:
        if self._ended:
            return
        stop = self._driver.error
        done = False
        if stop is None:
            r: list[bool] = []
            stop = guarded(lambda: r.append(self._collect()))
            done = bool(r and r[0])
        if done or stop is not None:
            self._finish(stop)
        elif self._events:
            self._wake.set()

    def _finish(self, stop: str | None) -> None:
        """End the session as ``tesla-mcast receive`` does (run_alc.finish_receive /
        run_receiver): last pump, temporary files removed, sockets closed, driver drops
        added to the engine's counters, summary."""
        if self._ended:
            return
        self._ended = True
        if self._timeout is not None:
            self._timeout.cancel()
        rs = self.session
        self._driver.close()
        stop = guarded(self._collect) or stop
        rs.sink.out.close()  # no temporary file outlives the session
        st = rs.engine.stats
        for k, v in self._driver.drv.stats.items():
            if k.startswith("drop."):
                st[k] = st.get(k, 0) + v
        self.summary = rs.summary(time.time() - self._t0, stop)
        self._events.append(SessionEnded(self.summary))
        self._wake.set()

    def close(self, stop: str | None = "closed") -> None:
        """End the session now (idempotent)."""
        self._finish(stop)

    def __aiter__(self) -> Receiver:
        return self

    async def __anext__(self) -> Event:
        while not self._events:
            if self._ended:
                raise StopAsyncIteration
            self._wake.clear()
            await self._wake.wait()
        return self._events.popleft()


@contextlib.asynccontextmanager
async def open_receiver(
    protocol: str = "alc",
    *,
    group: str,
    out: str | os.PathLike[str],
    **options: Any,
) -> AsyncIterator[Receiver]:
    """Open a receiver as ``tesla-mcast receive --protocol P --group G --out DIR
    [--sender-key PUB | --no-auth] ...`` (every other receive option as a keyword:
    ``sender_key=``, ``no_auth=True``, ``iface=``, ``tsi=``, ``max_clock_error=``,
    ``timeout=``, ``verify_threads=``, ...).  ``--from-pcap`` is not offered (use the
    CLI).  Raises :class:`tesla.cli.run_alc.ConfigError` (a ValueError) for a bad option, an
    unusable ``out``, a bad key; OSError when the group cannot be joined."""
    if options.get("from_pcap"):
        raise ValueError("from_pcap: replay a capture with 'tesla-mcast receive --from-pcap'")
    args = cli_namespace("receive", protocol, {"group": group, "out": out, **options})
    if protocol == "alc":
        from tesla.cli.run_alc import build_receiver
    else:
        from tesla.cli.run_norm import build_receiver
    rs: ReceiveSession = _built(build_receiver, args)
    try:
        rx = Receiver(rs, args)
    except BaseException:
        rs.sink.out.close()
        raise
    try:
        yield rx
    except asyncio.CancelledError:
        rx.close("cancelled")
        raise
    finally:
        rx.close("closed")


# ----------------------------------------------------------------------------- sender


class Sender:
    """An open send session (:func:`open_sender`).

    ALC/FLUTE: one FLUTE session per sender: the files given to :meth:`send_file` /
    :meth:`send_bytes` before transmission starts (the first send's first loop turn: e.g.
    ``await asyncio.gather(tx.send_file(a), tx.send_file(b))``) are sent together; each
    call returns once the session is sent (and, authenticated, its last key disclosed).
    A later call raises RuntimeError (open another sender, with another ``tsi``).
    NORM: each call enqueues one object and returns once it was sent once; repairs go on
    until the sender is closed, which ends the session (FLUSH, EOT, last key disclosed)."""

    def __init__(self, ss: SendSession, args: argparse.Namespace) -> None:
        self.session = ss
        self.args = args
        self._sent: set[int] = set()
        self._eot = False
        self._ended = False
        self._started = False
        self._wake = asyncio.Event()
        self._writer: Any = None
        if args.pcap:
            from alc.pcap import PcapWriter

            self._writer = PcapWriter(args.pcap)
        sock = open_socket(ss.group, args.iface, receive=ss.protocol == "norm", ttl=args.ttl)
        self._src = sock.getsockname()
        self._drv = Driver()
        try:
            add_endpoints(
                self._drv,
                ss.wrapped,
                sock,
                ss.group,
                receive=ss.protocol == "norm",
                on_sent=self._record,
                iface=args.iface,
            )
        except BaseException:
            sock.close()
            raise
        self._driver: _LoopDriver | None = None

    @property
    def stats(self) -> dict[str, int]:
        return dict(self.session.wrapped.stats)

    def _record(self, now: float, data: bytes, dst: Any) -> None:
        if self._writer is not None:
            self._writer.write(max(now, time.time()), self._src, dst, data)  # actual send time

    def _start(self) -> None:
        if self._driver is None:
            self._driver = _LoopDriver(self._drv, self._progress)

    def _progress(self) -> None:
        from norm.sender import TxEotSent, TxObjectSent

        eng = self.session.engine
        if self.session.protocol == "norm":
            while (ev := eng.next_event()) is not None:
                if isinstance(ev, TxObjectSent):
                    self._sent.add(ev.object_id)
                elif isinstance(ev, TxEotSent):
                    self._eot = True
        self._wake.set()

    def _finished(self) -> bool:
        w = self.session.wrapped
        if self.session.protocol == "alc":
            return bool(getattr(w, "done", False))
        return self._eot and sender_finished(w)

    async def _wait(self, cond: Callable[[], bool]) -> None:
        while not cond():
            if self._driver is not None and self._driver.error is not None:
                raise RuntimeError(f"send stopped: {self._driver.error}")
            if self._ended:
                raise RuntimeError("sender closed")
            self._wake.clear()
            await self._wake.wait()

    async def send_file(self, path: str | os.PathLike[str], name: str | None = None) -> None:
        """Send a file (ALC: FLUTE Content-Location ``name``, default the file's name;
        NORM: a NORM_OBJECT_FILE with NORM_INFO ``name``, as ``tesla-mcast send``)."""
        p = Path(path)
        if self.session.protocol == "alc":
            await self.send_bytes(p.read_bytes(), name=name or p.name)
            return
        self._check()
        oid = self.session.engine.enqueue_file(str(p), (name or p.name).encode())
        self._start()
        await self._wait(lambda: oid in self._sent)

    def _check(self) -> None:
        if self._ended:
            raise RuntimeError("sender closed")

    async def send_bytes(self, data: bytes, name: str) -> None:
        """Send ``data`` as a file called ``name`` (NORM: a NORM_OBJECT_DATA)."""
        eng = self.session.engine
        self._check()
        if self.session.protocol == "alc":
            if self._started:
                raise RuntimeError(
                    "ALC: the FLUTE session has started; open another sender (another tsi) "
                    "for more files, or send them together with asyncio.gather"
                )
            eng.add_bytes(data, name)
            if self._driver is None:
                asyncio.get_running_loop().call_soon(self._go)
            await self._wait(self._finished)
            return
        oid = eng.enqueue_data(bytes(data), name.encode())
        self._start()
        await self._wait(lambda: oid in self._sent)

    def _go(self) -> None:
        self._started = True
        self._start()

    async def aclose(self) -> None:
        """End the session: NORM sends FLUSH/EOT and discloses the last key; ALC waits for
        the session's last key.  Then the socket is closed."""
        if self._ended:
            return
        try:
            if self.session.protocol == "norm":
                self.session.engine.end()
                self._start()
                await self._wait(self._finished)
            elif self._driver is not None:
                await self._wait(self._finished)
        finally:
            self.close()

    def close(self) -> None:
        """Stop now (idempotent): socket closed, capture written."""
        if self._ended:
            return
        self._ended = True
        if self._driver is not None:
            self._driver.close()
        else:
            for ep in self._drv.endpoints:
                ep.sock.close()
            self._drv.close()
        if self._writer is not None:
            self._writer.close()
        self._wake.set()


@contextlib.asynccontextmanager
async def open_sender(protocol: str = "alc", *, group: str, **options: Any) -> AsyncIterator[Sender]:
    """Open a sender as ``tesla-mcast send --protocol P --group G [--key PEM | --no-auth]
    ...`` (every other send option as a keyword: ``key=``, ``no_auth=True``, ``iface=``,
    ``rate=``, ``fec=``, ``tint=``, ``disclosure_delay=``, ``pcap=``, ...; ``quiet`` is
    on unless given).  Leaving the block normally ends the session cleanly
    (:meth:`Sender.aclose`); an exception or a cancel stops it at once."""
    options.setdefault("quiet", True)
    args = cli_namespace("send", protocol, {"group": group, **options}, positional=["-"])
    if protocol == "alc":
        from tesla.cli.run_alc import build_sender
    else:
        from tesla.cli.run_norm import build_sender
    ss: SendSession = _built(build_sender, args)
    tx = Sender(ss, args)
    try:
        yield tx
        await tx.aclose()
    finally:
        tx.close()
