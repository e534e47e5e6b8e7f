"""UDP multicast sockets and a selector loop that drives sans-I/O engines.

Receive path: on each wakeup the non-blocking socket is drained with ``recvfrom_into`` into
one preallocated buffer (up to ``batch`` datagrams per wakeup) and each datagram handed to
the engine; no asyncio ``DatagramProtocol`` (it caps at ~60k packets/s here).

Send path: ``engine.datagrams_to_send(now)`` is polled whenever the engine's timer is due;
datagrams the kernel refuses (``EAGAIN``) are kept and retried when the socket is writable.

Loss injection (:class:`LossInjector`) drops received datagrams at random with a seeded RNG,
before the engine sees them, counted as ``drop.injected_loss`` in the driver's stats.
"""

from __future__ import annotations

import errno
import fcntl
import ipaddress
import random
import selectors
import socket
import struct
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from alc.engine import Address, Engine, count

SIOCGIFADDR = 0x8915


def parse_group(text: str) -> Address:
    """``"239.255.1.2:4000"`` -> ``("239.255.1.2", 4000)`` (``[v6]:port`` accepted)."""
    if text.startswith("["):
        host, _, port = text[1:].partition("]:")
    else:
        host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"expected ADDR:PORT, got {text!r}")
    ipaddress.ip_address(host)
    return host, int(port)


def iface_address(iface: str | None) -> str | None:
    """IPv4 address of an interface given by name (``lo``) or address (``127.0.0.1``)."""
    if iface is None or iface == "":
        return None
    try:
        ipaddress.IPv4Address(iface)
        return iface
    except ValueError:
        pass
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        res = fcntl.ioctl(s.fileno(), SIOCGIFADDR, struct.pack("256s", iface.encode()[:15]))
        return socket.inet_ntoa(res[20:24])
    except OSError as e:
        raise ValueError(f"interface {iface!r} has no IPv4 address: {e}") from e
    finally:
        s.close()


def open_socket(
    group: Address,
    iface: str | None = None,
    *,
    receive: bool = True,
    ttl: int = 1,
    loop: bool = True,
    rcvbuf: int = 32 * 1024 * 1024,
    sndbuf: int = 4 * 1024 * 1024,
) -> socket.socket:
    """A non-blocking UDP socket for ``group`` (multicast or unicast IPv4).

    ``receive=True`` binds the group port with SO_REUSEADDR/SO_REUSEPORT and joins the
    group on ``iface`` (name or address); either way IP_MULTICAST_IF, TTL and LOOP are set
    for sending.  SO_RCVBUF is raised to ``rcvbuf`` (the kernel caps it at rmem_max; the
    root-only SO_RCVBUFFORCE is tried first).
    """
    addr, port = group
    ifaddr = iface_address(iface)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if hasattr(socket, "SO_REUSEPORT"):
            try:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            except OSError:
                pass
        if receive:
            force = getattr(socket, "SO_RCVBUFFORCE", 33)
            try:
                s.setsockopt(socket.SOL_SOCKET, force, rcvbuf)
            except OSError:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        try:
            s.setsockopt(socket.SOL_SOCKET, getattr(socket, "SO_SNDBUFFORCE", 32), sndbuf)
        except OSError:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
        is_mc = ipaddress.IPv4Address(addr).is_multicast
        if is_mc:
            s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, ttl)
            s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1 if loop else 0)
            if ifaddr:
                s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(ifaddr))
        else:
            s.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, max(ttl, 1))
        if receive:
            s.bind((addr if is_mc else (ifaddr or addr), port))
            if is_mc:
                mreq = socket.inet_aton(addr) + socket.inet_aton(ifaddr or "0.0.0.0")
                s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
        else:
            s.bind((ifaddr or "0.0.0.0", 0))
        s.setblocking(False)
    except BaseException:
        s.close()
        raise
    return s


@dataclass
class LossInjector:
    """Drop received datagrams independently with probability ``rate`` (seeded, reproducible)."""

    rate: float
    seed: int = 0
    _rng: random.Random = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    def drop(self) -> bool:
        return self.rate > 0 and self._rng.random() < self.rate


@dataclass
class Endpoint:
    engine: Engine
    sock: socket.socket
    dest: Address | None = None
    loss: LossInjector | None = None
    on_sent: Callable[[float, bytes, Address], None] | None = None
    backlog: deque[tuple[bytes, Address]] = field(default_factory=deque)


class Driver:
    """Run engines on sockets until a predicate holds or a deadline passes.

    One selector for every endpoint; per wakeup: drain readable sockets (``batch`` max
    each), fire due timers, send due datagrams.  ``stats`` counts ``rx``, ``tx``,
    ``drop.injected_loss`` and ``tx.eagain``.
    """

    def __init__(self, batch: int = 1024, bufsize: int = 65536, clock: Callable[[], float] = time.time) -> None:
        self.sel = selectors.DefaultSelector()
        self.endpoints: list[Endpoint] = []
        self.batch = batch
        self.buf = bytearray(bufsize)
        self.view = memoryview(self.buf)
        self.clock = clock
        self.stats: dict[str, int] = {}

    def add(
        self,
        engine: Engine,
        sock: socket.socket,
        dest: Address | None = None,
        *,
        receive: bool = True,
        loss: LossInjector | None = None,
        on_sent: Callable[[float, bytes, Address], None] | None = None,
    ) -> Endpoint:
        ep = Endpoint(engine, sock, dest, loss, on_sent)
        self.endpoints.append(ep)
        if receive:
            self.sel.register(sock, selectors.EVENT_READ, ep)
        return ep

    def close(self) -> None:
        self.sel.close()

    def _drain(self, ep: Endpoint) -> None:
        sock, buf, view, eng, loss = ep.sock, self.buf, self.view, ep.engine, ep.loss
        recv = sock.recvfrom_into
        now = self.clock()
        n_rx = 0
        n_lost = 0
        # an engine that takes whole batches (e.g. the TESLA verifier, which parses and
        # buffers a batch as arrays) gets the drained datagrams in one call
        batch_rx = getattr(eng, "receive_datagrams", None)
        got: list[tuple[bytes, Address | None]] = []
        put = got.append if batch_rx is not None else None
        for _ in range(self.batch):
            try:
                n, addr = recv(buf)
            except (BlockingIOError, InterruptedError):
                break
            n_rx += 1
            if loss is not None and loss.drop():
                n_lost += 1
                continue
            if put is not None:
                put((bytes(view[:n]), addr))
            else:
                eng.receive_datagram(bytes(view[:n]), addr, now)
        if got:
            assert batch_rx is not None
            batch_rx(got, now)
        if n_rx:
            count(self.stats, "rx", n_rx)
        if n_lost:
            count(self.stats, "drop.injected_loss", n_lost)

    def _send(self, ep: Endpoint, now: float) -> bool:
        """Send due datagrams; False if the socket buffer is full (backlog kept)."""
        backlog = ep.backlog
        if not backlog:
            for data, addr in ep.engine.datagrams_to_send(now):
                dst = addr or ep.dest
                if dst is not None:
                    backlog.append((data, dst))
        sendto = ep.sock.sendto
        sent = 0
        ok = True
        while backlog:
            data, dst = backlog[0]
            try:
                sendto(data, dst)
            except (BlockingIOError, InterruptedError):
                count(self.stats, "tx.eagain")
                ok = False
                break
            except OSError as e:
                if e.errno in (errno.ENOBUFS, errno.EAGAIN):
                    count(self.stats, "tx.eagain")
                    ok = False
                    break
                raise
            backlog.popleft()
            sent += 1
            if ep.on_sent is not None:
                ep.on_sent(now, data, dst)
        if sent:
            count(self.stats, "tx", sent)
        return ok

    def run(
        self,
        until: Callable[[], bool] | None = None,
        timeout: float | None = None,
        on_tick: Callable[[float], None] | None = None,
        tick: float = 0.1,
    ) -> bool:
        """Loop until ``until()`` is true (returns True) or ``timeout`` s elapse (False)."""
        start = self.clock()
        deadline = start + timeout if timeout is not None else None
        next_tick = start
        while True:
            now = self.clock()
            wait = tick
            blocked = False
            for ep in self.endpoints:
                eng = ep.engine
                t = eng.get_timer()
                if t is not None and t <= now:
                    eng.handle_timer(now)
                if not self._send(ep, now):
                    blocked = True
                t = eng.get_timer()
                if ep.backlog:
                    wait = min(wait, 0.0005)
                elif t is not None:
                    wait = min(wait, max(0.0, t - now))
            if until is not None and until():
                return True
            if deadline is not None and now >= deadline:
                return False
            if on_tick is not None and now >= next_tick:
                on_tick(now)
                next_tick = now + tick
            if deadline is not None:
                wait = min(wait, max(0.0, deadline - now))
            if blocked:
                wait = min(wait, 0.0005)
            if not self.sel.get_map():
                time.sleep(wait)
                continue
            for key, _mask in self.sel.select(wait):
                self._drain(key.data)
