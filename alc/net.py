"""UDP multicast sockets and a selector loop that drives sans-I/O engines.

Receive path: on each wakeup the non-blocking socket is drained with one ``recvmmsg``
(:func:`alc.mmsg.recv_batch`) into the endpoint's preallocated slab (up to ``batch``
datagrams per wakeup), and the whole batch goes to the engine's batch entry
``receive_datagrams`` with each datagram's own arrival time: the kernel's receive
timestamp (``SO_TIMESTAMPNS``), so a stall of this process between arrival and read never
makes a timely datagram late for the TESLA safe-packet test.  Datagrams the kernel
dropped for want of socket buffer (``SO_RXQ_OVFL``) are counted as
``drop.socket_overflow``.  No asyncio ``DatagramProtocol`` (it caps at ~60k packets/s
here).

Send path: ``engine.datagrams_to_send(now)`` is polled whenever the engine's timer is due;
datagrams the kernel refuses (``EAGAIN``) are kept and retried when the socket is writable.

Loss injection (:class:`LossInjector`) drops received datagrams at random with a seeded RNG,
before the engine sees them, counted as ``drop.injected_loss`` in the driver's stats.
"""

from __future__ import annotations

import fcntl
import ipaddress
import random
import selectors
import socket
import struct
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from alc.engine import Address, BatchEntry, Engine, count
from alc.mmsg import Slab, enable_rx_metadata, recv_batch, send_some

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


def iface_index(iface: str | None) -> int:
    """Interface index for IPv6 (name such as ``eth0``, or a number); 0 = the kernel's
    choice."""
    if iface is None or iface == "":
        return 0
    if iface.isdigit():
        return int(iface)
    try:
        return socket.if_nametoindex(iface)
    except OSError as e:
        raise ValueError(f"IPv6 multicast needs an interface name or index, not {iface!r}: {e}") from e


#: Linux socket options not exported by :mod:`socket` (linux/in.h, linux/in6.h)
IP_ADD_SOURCE_MEMBERSHIP = 39
MCAST_JOIN_SOURCE_GROUP = 46
IPV6_MULTICAST_LOOP = getattr(socket, "IPV6_MULTICAST_LOOP", 19)
IPV6_MULTICAST_IF = getattr(socket, "IPV6_MULTICAST_IF", 17)
#: struct group_source_req on LP64: u32 interface, 4 octets padding, two
#: sockaddr_storage (128 octets each)
_GSR = struct.Struct("=I4x128s128s")


def _sockaddr_in6(addr: str) -> bytes:
    raw = socket.inet_pton(socket.AF_INET6, addr)
    return struct.pack("=HHI16sI", socket.AF_INET6, 0, 0, raw, 0)


def join_group(
    s: socket.socket, group: str, iface: str | None, source: str | None = None
) -> None:
    """Join ``group`` on ``iface``: any-source (IP_ADD_MEMBERSHIP / IPV6_JOIN_GROUP, an
    IGMP or MLD join), or source-specific (S,G) when ``source`` is given, so the kernel
    delivers only that source's datagrams (IP_ADD_SOURCE_MEMBERSHIP for IPv4,
    MCAST_JOIN_SOURCE_GROUP for IPv6; RFC 4607)."""
    if ipaddress.ip_address(group).version == 4:
        ifaddr = iface_address(iface) or "0.0.0.0"
        if source is None:
            mreq = socket.inet_aton(group) + socket.inet_aton(ifaddr)
            s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
        else:
            # struct ip_mreq_source (Linux order): multiaddr, interface, sourceaddr
            mreq = socket.inet_aton(group) + socket.inet_aton(ifaddr) + socket.inet_aton(source)
            s.setsockopt(socket.IPPROTO_IP, IP_ADD_SOURCE_MEMBERSHIP, mreq)
        return
    idx = iface_index(iface)
    if source is None:
        mreq6 = socket.inet_pton(socket.AF_INET6, group) + struct.pack("=I", idx)
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP, mreq6)
    else:
        req = _GSR.pack(idx, _sockaddr_in6(group), _sockaddr_in6(source))
        s.setsockopt(socket.IPPROTO_IPV6, MCAST_JOIN_SOURCE_GROUP, req)


def open_socket(
    group: Address,
    iface: str | None = None,
    *,
    receive: bool = True,
    ttl: int = 1,
    loop: bool = True,
    rcvbuf: int = 32 * 1024 * 1024,
    sndbuf: int = 4 * 1024 * 1024,
    source: str | None = None,
) -> socket.socket:
    """A non-blocking UDP socket for ``group`` (multicast or unicast, IPv4 or IPv6).

    ``receive=True`` binds the group port with SO_REUSEADDR/SO_REUSEPORT and joins the
    group on ``iface`` (IPv4: name or address; IPv6: name or index), source-specific
    when ``source`` is given (:func:`join_group`); either way the multicast interface,
    TTL / hop limit and loopback are set for sending.  SO_RCVBUF is raised to ``rcvbuf``
    (the kernel caps it at rmem_max; the root-only SO_RCVBUFFORCE is tried first).
    """
    addr, port = group
    ip = ipaddress.ip_address(addr)
    v6 = ip.version == 6
    if source is not None and ipaddress.ip_address(source).version != ip.version:
        raise ValueError(f"source {source} and group {addr} are not of one address family")
    ifaddr = None if v6 else iface_address(iface)
    ifidx = iface_index(iface) if v6 else 0
    s = socket.socket(socket.AF_INET6 if v6 else socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
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
        is_mc = ip.is_multicast
        if v6:
            if is_mc:
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, ttl)
                s.setsockopt(socket.IPPROTO_IPV6, IPV6_MULTICAST_LOOP, 1 if loop else 0)
                if ifidx:
                    s.setsockopt(socket.IPPROTO_IPV6, IPV6_MULTICAST_IF, ifidx)
            else:
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, max(ttl, 1))
            if receive:
                s.bind((addr if is_mc else "::", port, 0, ifidx if ip.is_link_local else 0))
                if is_mc:
                    join_group(s, addr, iface, source)
            else:
                s.bind(("::", 0))
        else:
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
                    join_group(s, addr, iface, source)
            else:
                s.bind((ifaddr or "0.0.0.0", 0))
        if receive:
            enable_rx_metadata(s)
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
    slab: Slab | None = None
    kernel_drops: int = 0  # last SO_RXQ_OVFL value seen on ``sock``
    #: the newest arrival time read while the socket still held more (its last
    #: ``recvmmsg`` filled the slab), else None: see :meth:`Driver.run`
    behind: float | None = None
    #: the engine's slab entry when it declares one (``takes_slab``, alc.engine)
    slab_entry: Callable[[Slab, Sequence[Address | None]], None] | None = None

    def __post_init__(self) -> None:
        if isinstance(self.engine, BatchEntry) and self.engine.takes_slab:
            self.slab_entry = self.engine.receive_slab


class Driver:
    """Run engines on sockets until a predicate holds or a deadline passes.

    One selector for every endpoint; per wakeup: drain readable sockets (``batch`` max
    each, one ``recvmmsg``), fire due timers, send due datagrams.  ``stats`` counts
    ``rx``, ``tx``, ``drop.injected_loss``, ``drop.socket_overflow`` (the kernel's
    ``SO_RXQ_OVFL``), ``drop.truncated`` (longer than ``bufsize``) and ``tx.eagain``.

    Arrival times are the kernel's receive timestamps when ``clock`` is ``time.time``
    (the same clock); with another clock (tests) the clock read after each batch.
    """

    def __init__(
        self, batch: int = 1024, bufsize: int = 65536, clock: Callable[[], float] = time.time
    ) -> None:
        self.sel = selectors.DefaultSelector()
        self.endpoints: list[Endpoint] = []
        self.batch = batch
        self.bufsize = bufsize
        self.clock = clock
        self._kernel_clock = clock is time.time
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
            # rows are wide enough for any UDP payload; only the pages a datagram touches
            # become resident
            ep.slab = Slab(self.batch, self.bufsize)
            self.sel.register(sock, selectors.EVENT_READ, ep)
        return ep

    def close(self) -> None:
        self.sel.close()

    def _drain(self, ep: Endpoint) -> None:
        n = drain_endpoint(ep, self.stats, None if self._kernel_clock else self.clock)
        slab = ep.slab
        if self._kernel_clock and slab is not None and n >= slab.rows:
            ep.behind = float(slab.stamps[n - 1])  # a full batch: more is waiting
        else:
            ep.behind = None

    def _send(self, ep: Endpoint, now: float) -> bool:
        """Send due datagrams; False if the socket buffer is full (backlog kept)."""
        return send_due(ep, now, self.stats)

    def run(
        self,
        until: Callable[[], bool] | None = None,
        timeout: float | None = None,
        on_tick: Callable[[float], None] | None = None,
        tick: float = 0.1,
    ) -> bool:
        """Loop until ``until()`` is true (returns True) or ``timeout`` s elapse (False).

        An endpoint whose socket still holds datagrams (its last ``recvmmsg`` filled the
        slab: a receiver working through a backlog) gets its timers at the arrival time
        of the newest datagram it has read, not at the clock: the datagrams still queued
        arrived before now, so a timer must not decide as if they had not (a NORM
        receiver seconds behind a fast sender would take the sender for silent and NACK
        the rest of the object: a 65k-repair storm, issue 11); pcap replay does the
        same with capture times."""
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
                tnow = now if ep.behind is None else min(now, ep.behind)
                if t is not None and t <= tnow:
                    eng.handle_timer(tnow)
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
            ready = self.sel.select(wait)
            for ep in self.endpoints:
                ep.behind = None  # set again by a full batch below
            for key, _mask in ready:
                self._drain(key.data)


def drain_endpoint(
    ep: Endpoint, stats: dict[str, int], clock: Callable[[], float] | None = None
) -> int:
    """One wakeup of a readable endpoint: one ``recvmmsg`` into ``ep.slab``, the whole batch
    to ``ep.engine.receive_datagrams`` with the kernel's receive timestamps (``clock``:
    another clock, read once after the batch, for tests).  Counts ``rx``,
    ``drop.socket_overflow``, ``drop.truncated`` and ``drop.injected_loss`` in ``stats``.
    Shared by :class:`Driver` and the asyncio driver (:mod:`tesla.aio`); -> datagrams read."""
    slab = ep.slab
    assert slab is not None
    trunc = slab.truncated
    n = recv_batch(ep.sock, slab)
    if slab.kernel_drops != ep.kernel_drops:
        # SO_RXQ_OVFL is the socket's cumulative count (wraps at 2^32)
        count(stats, "drop.socket_overflow", (slab.kernel_drops - ep.kernel_drops) % (1 << 32))
        ep.kernel_drops = slab.kernel_drops
    if n == 0:
        return 0
    if slab.truncated != trunc:
        count(stats, "drop.truncated", slab.truncated - trunc)
    count(stats, "rx", n)
    addrs = slab.addrs()
    loss = ep.loss
    if ep.slab_entry is not None and clock is None and (loss is None or loss.rate <= 0):
        ep.slab_entry(slab, addrs)  # the rows and kernel stamps, no datagram objects
        return n
    datagrams = slab.datagrams()
    if clock is None:
        times: list[float] = slab.stamps[:n].tolist()
    else:
        times = [clock()] * n
    if loss is not None and loss.rate > 0:
        keep = [k for k in range(n) if not loss.drop()]
        if len(keep) != n:
            count(stats, "drop.injected_loss", n - len(keep))
            datagrams = [datagrams[k] for k in keep]
            addrs = [addrs[k] for k in keep]
            times = [times[k] for k in keep]
            if not keep:
                return n
    ep.engine.receive_datagrams(datagrams, addrs, times)
    return n


#: most datagrams handed to one ``sendmmsg`` by :func:`send_due`
_SEND_RUN = 1024


def send_due(ep: Endpoint, now: float, stats: dict[str, int]) -> bool:
    """Send the endpoint's due datagrams (``engine.datagrams_to_send(now)`` once its backlog
    is empty); False if the socket refused one (``EAGAIN``/``ENOBUFS``: counted
    ``tx.eagain``, the rest kept in ``ep.backlog`` for when the socket is writable).
    Runs of datagrams to one destination go out through ``sendmmsg``
    (:func:`alc.mmsg.send_some`, one system call for many), in order.
    Shared by :class:`Driver` and the asyncio driver (:mod:`tesla.aio`)."""
    backlog = ep.backlog
    if not backlog:
        for data, addr in ep.engine.datagrams_to_send(now):
            dst = addr or ep.dest
            if dst is not None:
                backlog.append((data, dst))
    sent = 0
    ok = True
    on_sent = ep.on_sent
    while backlog:
        dst = backlog[0][1]
        run: list[bytes] = []
        for data, d in backlog:  # the leading run to one destination
            if d != dst or len(run) >= _SEND_RUN:
                break
            run.append(data)
        n = send_some(ep.sock, run, dst)
        for _ in range(n):
            backlog.popleft()
        if on_sent is not None:
            for data in run[:n]:
                on_sent(now, data, dst)
        sent += n
        if n < len(run):
            count(stats, "tx.eagain")
            ok = False
            break
    if sent:
        count(stats, "tx", sent)
    return ok
