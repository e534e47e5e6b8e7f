"""Batched UDP I/O into preallocated numpy slabs: ``recvmmsg``/``sendmmsg`` through ctypes.

A :class:`Slab` is ``rows`` datagram buffers of ``width`` octets (one 2-D ``uint8``
array), a ``lengths`` array and an ``stamps`` array (arrival time, POSIX seconds).
:func:`recv_batch` fills it with one ``recvmmsg(2)`` system call (Linux); where that is
not available (or ``use_mmsg=False``) it falls back to a non-blocking ``recv_into``
loop on ``memoryview`` rows.  No per-datagram Python object is created on the receive
path: headers are then parsed as numpy views of the slab (see :mod:`tesla.mac.batch`).

Arrival time: on a socket prepared with :func:`enable_rx_metadata` (``SO_TIMESTAMPNS``)
each datagram's ``stamps[k]`` is the kernel's receive timestamp, taken when the datagram
entered the socket, so a process stall between arrival and ``recvmmsg`` never makes a
timely datagram look late (RFC 4082 §5 asks for the arrival time "as early as possible").
Without it (or when a message carries no timestamp) one ``time.time()`` taken right after
the system call is used: never earlier than the true arrival, so the TESLA safe-packet
test run on it can only be stricter.  ``SO_RXQ_OVFL`` gives the kernel's count of
datagrams this socket dropped for want of buffer space: ``Slab.kernel_drops`` is its
latest value (cumulative, per socket).

Send side: :func:`send_batch` hands a list of datagrams (or slab rows) to one
``sendmmsg(2)``; :func:`send_gso` sends one buffer of equal-size segments with
``UDP_SEGMENT`` (Linux GSO) when the kernel supports it.

This module only moves octets; it does not know ALC, NORM or TESLA.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import mmap
import os
import socket
import struct
import sys
import time
from collections.abc import Sequence

import numpy as np

__all__ = [
    "MAX_DATAGRAM",
    "HAVE_MMSG",
    "Slab",
    "recv_batch",
    "send_batch",
    "send_packed",
    "send_some",
    "send_gso",
    "gso_supported",
    "enable_rx_metadata",
]

#: row width of a default slab: largest UDP payload over IPv4
MAX_DATAGRAM = 65507
MSG_DONTWAIT = 0x40
MSG_WAITFORONE = 0x10000
SOL_UDP = 17
UDP_SEGMENT = 103
#: Linux socket options (asm-generic/socket.h): the 64-bit-time_t timespec form of
#: SO_TIMESTAMPNS (SO_TIMESTAMPNS_OLD on LP64) and the socket drop counter
SO_TIMESTAMPNS = 35
SO_RXQ_OVFL = 40
#: control buffer per message: cmsghdr (16) + timespec (16), cmsghdr (16) + u32 (8, aligned)
_CTRL_LEN = 64
_CMSG_HDR = 16
_SOCKADDR_LEN = 28  # sockaddr_in6 is the largest we need


class _Iovec(ctypes.Structure):
    _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]


class _Msghdr(ctypes.Structure):
    _fields_ = [
        ("msg_name", ctypes.c_void_p),
        ("msg_namelen", ctypes.c_uint32),
        ("msg_iov", ctypes.POINTER(_Iovec)),
        ("msg_iovlen", ctypes.c_size_t),
        ("msg_control", ctypes.c_void_p),
        ("msg_controllen", ctypes.c_size_t),
        ("msg_flags", ctypes.c_int),
    ]


class _Mmsghdr(ctypes.Structure):
    _fields_ = [("msg_hdr", _Msghdr), ("msg_len", ctypes.c_uint)]


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


# byte offsets in one mmsghdr, for numpy views of a whole array of them (no per-message
# ctypes attribute access on the batch paths)
_MM_SIZE = ctypes.sizeof(_Mmsghdr)
_MM_NAME = _Msghdr.msg_name.offset
_MM_NAMELEN = _Msghdr.msg_namelen.offset
_MM_IOV = _Msghdr.msg_iov.offset
_MM_IOVLEN = _Msghdr.msg_iovlen.offset
_MM_FLAGS = _Msghdr.msg_flags.offset
_MM_CTRLLEN = _Msghdr.msg_controllen.offset
_MM_LEN = _Mmsghdr.msg_len.offset
_IOV_SIZE = ctypes.sizeof(_Iovec)
#: the numpy layout below assumes LP64 (8-octet pointers and size_t, 4-octet ints)
_VECTOR_OK = (
    ctypes.sizeof(ctypes.c_void_p) == 8
    and ctypes.sizeof(ctypes.c_size_t) == 8
    and _MM_SIZE % 8 == 0
    and _IOV_SIZE == 16
    and all(o % 8 == 0 for o in (_MM_NAME, _MM_IOV, _MM_IOVLEN))
    and _MM_NAMELEN % 4 == 0
    and _MM_FLAGS % 4 == 0
    and _MM_LEN % 4 == 0
    and _MM_CTRLLEN % 8 == 0
    and sys.byteorder == "little"
)


def _load_libc() -> tuple[object | None, object | None]:
    if not sys.platform.startswith("linux"):
        return None, None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        rx = libc.recvmmsg
        tx = libc.sendmmsg
    except (OSError, AttributeError):
        return None, None
    rx.argtypes = [
        ctypes.c_int,
        ctypes.POINTER(_Mmsghdr),
        ctypes.c_uint,
        ctypes.c_int,
        ctypes.POINTER(_Timespec),
    ]
    rx.restype = ctypes.c_int
    tx.argtypes = [ctypes.c_int, ctypes.POINTER(_Mmsghdr), ctypes.c_uint, ctypes.c_int]
    tx.restype = ctypes.c_int
    return rx, tx


_recvmmsg, _sendmmsg = _load_libc()
HAVE_MMSG = _recvmmsg is not None


def enable_rx_metadata(sock: socket.socket) -> tuple[bool, bool]:
    """Ask the kernel for a receive timestamp (``SO_TIMESTAMPNS``) and the socket's drop
    counter (``SO_RXQ_OVFL``) with every datagram; returns which of the two are on."""
    got = []
    for opt in (SO_TIMESTAMPNS, SO_RXQ_OVFL):
        try:
            sock.setsockopt(socket.SOL_SOCKET, opt, 1)
            got.append(True)
        except OSError:
            got.append(False)
    return got[0], got[1]


def _rows_buffer(rows: int, width: int) -> np.ndarray:
    """Zeroed ``(rows, width)`` uint8 storage in anonymous memory without transparent
    huge pages: a datagram faults one 4 KiB page of its row, and only touched pages become
    resident.  (numpy asks for huge pages on large arrays: with THP the first full
    ``recvmmsg`` into a fresh 64 MiB batch faulted and zeroed it 2 MiB at a time inside
    the transfer, 90-130 ms, issue 11's two-process NORM bench.)"""
    n = rows * width
    try:
        mm = mmap.mmap(-1, n)
    except (OSError, ValueError):
        return np.zeros((rows, width), dtype=np.uint8)
    advice = getattr(mmap, "MADV_NOHUGEPAGE", None)  # Linux only
    if advice is not None:
        try:
            mm.madvise(advice)
        except OSError:
            pass
    return np.frombuffer(mm, dtype=np.uint8).reshape(rows, width)


class Slab:
    """Preallocated receive buffers: ``data[k, :lengths[k]]`` is datagram k of the last
    batch (k < ``count``), ``stamps[k]`` its arrival time, ``addr(k)`` its source."""

    def __init__(self, rows: int = 1024, width: int = 2048) -> None:
        if rows < 1 or width < 1:
            raise ValueError("rows and width must be >= 1")
        self.rows = rows
        self.width = width
        self.data = _rows_buffer(rows, width)
        self.lengths = np.zeros(rows, dtype=np.int64)
        self.stamps = np.zeros(rows, dtype=np.float64)
        self.count = 0
        self.truncated = 0  # datagrams longer than width seen (cut, flagged in stats)
        #: latest SO_RXQ_OVFL value seen (datagrams the kernel dropped on this socket)
        self.kernel_drops = 0
        #: datagrams of the last batch whose arrival time is the kernel's timestamp
        self.kernel_stamped = 0
        self._names = ctypes.create_string_buffer(rows * _SOCKADDR_LEN)
        self._ctrl = np.zeros((rows, _CTRL_LEN // 8), dtype=np.uint64)
        self._iov = (_Iovec * rows)()
        self._msgs = (_Mmsghdr * rows)()
        base = self.data.ctypes.data
        names = ctypes.addressof(self._names)
        for k in range(rows):
            self._iov[k].iov_base = base + k * width
            self._iov[k].iov_len = width
            h = self._msgs[k].msg_hdr
            h.msg_name = names + k * _SOCKADDR_LEN
            h.msg_namelen = _SOCKADDR_LEN
            h.msg_iov = ctypes.pointer(self._iov[k])
            h.msg_iovlen = 1
            h.msg_control = self._ctrl.ctypes.data + k * _CTRL_LEN
            h.msg_controllen = _CTRL_LEN
        self._rows_mv = [memoryview(self.data[k]) for k in range(rows)]
        self._addrs: list[tuple[str, int] | None] = [None] * rows
        # 32-bit view of the mmsghdr array: msg_len, msg_flags and msg_namelen of every
        # message read / reset as numpy columns
        self._mm32 = np.frombuffer(memoryview(self._msgs).cast("B"), dtype=np.uint32).reshape(
            rows, _MM_SIZE // 4
        )
        self._mm64 = self._mm32.view(np.uint64)

    def datagram(self, k: int) -> bytes:
        """Copy of datagram k of the last batch."""
        return self.data[k, : self.lengths[k]].tobytes()

    def datagrams(self) -> list[bytes]:
        """Copies of every datagram of the last batch, in arrival order."""
        n = self.count
        if n == 0:
            return []
        lens = self.lengths[:n].tolist()
        w = self.width
        if w <= 4096:  # narrow rows: one copy of the block, then slices
            flat = self.data[:n].tobytes()
            return [flat[k * w : k * w + ln] for k, ln in enumerate(lens)]
        rows = self._rows_mv  # wide rows (65 536 for any UDP payload): only what arrived
        return [bytes(rows[k][:ln]) for k, ln in enumerate(lens)]

    def addrs(self) -> list[tuple[str, int] | None]:
        """Source addresses of the last batch; one tuple object per distinct source."""
        n = self.count
        if n == 0:
            return []
        raw = ctypes.string_at(self._names, n * _SOCKADDR_LEN)
        L = _SOCKADDR_LEN
        if raw[L:] == raw[:-L]:  # every name equals the one before it: one source (memcmp)
            a = self.addr(0)
            return [a] * n
        seen: dict[bytes, tuple[str, int] | None] = {}
        out: list[tuple[str, int] | None] = []
        for k in range(n):
            key = raw[k * L : (k + 1) * L]
            if key not in seen:
                seen[key] = self.addr(k)
            out.append(seen[key])
        return out

    def addr(self, k: int) -> tuple[str, int] | None:
        """Source address of datagram k (decoded lazily from the sockaddr buffer)."""
        a = self._addrs[k]
        if a is not None:
            return a
        raw = self._names.raw[k * _SOCKADDR_LEN : (k + 1) * _SOCKADDR_LEN]
        fam = struct.unpack_from("=H", raw)[0]
        if fam == socket.AF_INET:
            port = struct.unpack_from("!H", raw, 2)[0]
            return socket.inet_ntop(socket.AF_INET, raw[4:8]), port
        if fam == socket.AF_INET6:
            port = struct.unpack_from("!H", raw, 2)[0]
            return socket.inet_ntop(socket.AF_INET6, raw[8:24]), port
        return None


def recv_batch(
    sock: socket.socket, slab: Slab, *, block: bool = False, use_mmsg: bool | None = None
) -> int:
    """Receive up to ``slab.rows`` datagrams into ``slab``; returns ``slab.count``.

    ``block=True`` waits for the first datagram (honouring the socket timeout in the
    fallback; ``recvmmsg`` with ``MSG_WAITFORONE``), then takes what is queued without
    waiting.  ``block=False`` never waits (0 when nothing is queued).
    """
    mm = HAVE_MMSG if use_mmsg is None else (use_mmsg and HAVE_MMSG)
    if mm:
        return _recv_mmsg(sock, slab, block)
    return _recv_loop(sock, slab, block)


def _recv_mmsg(sock: socket.socket, slab: Slab, block: bool) -> int:
    assert _recvmmsg is not None
    fd = sock.fileno()
    flags = MSG_WAITFORONE if block else MSG_DONTWAIT
    msgs = slab._msgs
    vec = _VECTOR_OK
    if vec:  # reset what the last call changed
        slab._mm32[: slab.count, _MM_NAMELEN // 4] = _SOCKADDR_LEN
        slab._mm64[: slab.count, _MM_CTRLLEN // 8] = _CTRL_LEN
    else:
        for k in range(slab.count):
            msgs[k].msg_hdr.msg_namelen = _SOCKADDR_LEN
            msgs[k].msg_hdr.msg_controllen = _CTRL_LEN
    if block and sock.gettimeout() is not None:
        import select

        r, _, _ = select.select([sock], [], [], sock.gettimeout())
        if not r:
            slab.count = 0
            return 0
    n = _recvmmsg(fd, msgs, slab.rows, flags, None)  # type: ignore[operator]
    now = time.time()
    if n < 0:
        e = ctypes.get_errno()
        slab.count = 0
        if e in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EINTR):
            return 0
        raise OSError(e, os.strerror(e))
    lens = slab.lengths
    if vec:
        mm = slab._mm32[:n]
        lens[:n] = mm[:, _MM_LEN // 4]
        trunc = int(np.count_nonzero(mm[:, _MM_FLAGS // 4] & 0x20))  # MSG_TRUNC
    else:
        trunc = 0
        for k in range(n):
            m = msgs[k]
            lens[k] = m.msg_len
            if m.msg_hdr.msg_flags & 0x20:
                trunc += 1
    slab.truncated += trunc
    slab.stamps[:n] = now
    slab.count = n
    slab._addrs[:n] = [None] * n
    _read_control(slab, n, now)
    return n


def _read_control(slab: Slab, n: int, now: float) -> None:
    """Kernel timestamps and drop counter from the control messages of the last batch.

    The kernel writes SCM_TIMESTAMPNS before SO_RXQ_OVFL (net/socket.c
    ``sock_recv_cmsgs``); the common layouts are read as numpy columns, anything else
    by walking the cmsghdr chain of the message."""
    slab.kernel_stamped = 0
    if not _VECTOR_OK:
        return
    clen = slab._mm64[:n, _MM_CTRLLEN // 8]
    if not clen.any():
        return
    c = slab._ctrl[:n]
    lv = c[:, 1]  # cmsg_level | cmsg_type << 32 of the first cmsghdr
    ts_first = (clen >= 32) & (c[:, 0] == 32) & (lv == (socket.SOL_SOCKET | SO_TIMESTAMPNS << 32))
    if ts_first.all():
        sec = c[:, 2].astype(np.float64)
        nsec = c[:, 3].astype(np.float64)
        stamps = sec + nsec * 1e-9
        # a stamp after ``now`` is impossible (clock stepped between the two reads):
        # keep the later bound only where it is earlier, never accept a future arrival
        np.minimum(stamps, now, out=stamps)
        slab.stamps[:n] = stamps
        slab.kernel_stamped = n
        ov = (clen >= 56) & (c[:, 4] == 20) & (c[:, 5] == (socket.SOL_SOCKET | SO_RXQ_OVFL << 32))
        if ov[-1]:
            slab.kernel_drops = int(c[-1, 6] & 0xFFFFFFFF)
        elif ov.any():
            slab.kernel_drops = int(c[np.flatnonzero(ov)[-1], 6] & 0xFFFFFFFF)
        return
    for k in range(n):
        _walk_control(slab, k, int(clen[k]), now)


def _walk_control(slab: Slab, k: int, clen: int, now: float) -> None:
    raw = slab._ctrl[k].tobytes()[: min(clen, _CTRL_LEN)]
    pos = 0
    while pos + _CMSG_HDR <= len(raw):
        ln, level, typ = struct.unpack_from("=QiI", raw, pos)
        if ln < _CMSG_HDR or pos + ln > len(raw):
            break
        if level == socket.SOL_SOCKET and typ == SO_TIMESTAMPNS and ln >= 32:
            sec, nsec = struct.unpack_from("=qq", raw, pos + _CMSG_HDR)
            slab.stamps[k] = min(sec + nsec * 1e-9, now)
            slab.kernel_stamped += 1
        elif level == socket.SOL_SOCKET and typ == SO_RXQ_OVFL and ln >= 20:
            slab.kernel_drops = struct.unpack_from("=I", raw, pos + _CMSG_HDR)[0]
        pos += (ln + 7) & ~7


def _recv_loop(sock: socket.socket, slab: Slab, block: bool) -> int:
    rows = slab._rows_mv
    lens = slab.lengths
    addrs = slab._addrs
    n = 0
    rf = sock.recvfrom_into
    if block:
        try:
            ln, a = rf(rows[0])
        except (BlockingIOError, TimeoutError, InterruptedError):
            slab.count = 0
            return 0
        lens[0] = ln
        addrs[0] = a
        n = 1
    try:
        while n < slab.rows:
            ln, a = rf(rows[n], 0, MSG_DONTWAIT)
            lens[n] = ln
            addrs[n] = a
            n += 1
    except (BlockingIOError, InterruptedError):
        pass
    slab.stamps[:n] = time.time()
    slab.count = n
    return n


def _sockaddr(addr: tuple[str, int] | None) -> bytes | None:
    if addr is None:
        return None
    host, port = addr[0], addr[1]
    try:
        return struct.pack("=HH4s8x", socket.AF_INET, socket.htons(port), socket.inet_aton(host))
    except OSError:
        raw = socket.inet_pton(socket.AF_INET6, host)
        return struct.pack("=HHI16sI", socket.AF_INET6, socket.htons(port), 0, raw, 0)


def send_batch(
    sock: socket.socket,
    datagrams: Sequence[bytes | bytearray | memoryview],
    addr: tuple[str, int] | None = None,
    *,
    use_mmsg: bool | None = None,
) -> int:
    """Send every datagram (to ``addr``, or the connected peer when None) with as few
    ``sendmmsg`` calls as possible; returns the number sent.  Blocks as ``sendto`` would
    when the socket is blocking.  Falls back to a ``sendto`` loop."""
    n = len(datagrams)
    if n == 0:
        return 0
    mm = HAVE_MMSG if use_mmsg is None else (use_mmsg and HAVE_MMSG)
    if not mm:
        if addr is None:
            for d in datagrams:
                sock.send(d)
        else:
            for d in datagrams:
                sock.sendto(d, addr)
        return n
    assert _sendmmsg is not None
    name = _sockaddr(addr)
    name_buf = ctypes.create_string_buffer(name) if name is not None else None
    iov = (_Iovec * n)()
    msgs = (_Mmsghdr * n)()
    keep: list[object] = []
    for k, d in enumerate(datagrams):
        if isinstance(d, bytes):
            ptr = ctypes.cast(ctypes.c_char_p(d), ctypes.c_void_p).value
            keep.append(d)
        else:  # any buffer (bytearray, memoryview, numpy row), read-only ones included
            a = np.frombuffer(d, dtype=np.uint8)
            keep.append(a)
            ptr = a.ctypes.data
        iov[k].iov_base = ptr
        iov[k].iov_len = len(d)
        h = msgs[k].msg_hdr
        if name_buf is not None:
            h.msg_name = ctypes.addressof(name_buf)
            h.msg_namelen = len(name_buf.raw) - 1
        h.msg_iov = ctypes.pointer(iov[k])
        h.msg_iovlen = 1
    sent = _sendmmsg_all(sock.fileno(), ctypes.addressof(msgs), n)
    del keep
    return sent


def _sendmmsg_all(fd: int, base: int, n: int) -> int:
    """``sendmmsg`` of the ``n`` mmsghdr at address ``base`` until all are sent (EINTR
    retried; EAGAIN/ENOBUFS after a partial send: yield and go on); returns n."""
    assert _sendmmsg is not None
    ptr = ctypes.POINTER(_Mmsghdr)
    sent = 0
    while sent < n:
        r = _sendmmsg(fd, ctypes.cast(base + sent * _MM_SIZE, ptr), n - sent, 0)  # type: ignore[operator]
        if r < 0:
            e = ctypes.get_errno()
            if e == errno.EINTR:
                continue
            if e in (errno.EAGAIN, errno.ENOBUFS) and sent:
                time.sleep(0)
                continue
            raise OSError(e, os.strerror(e))
        sent += r
    return sent


def send_packed(
    sock: socket.socket,
    buf: bytes | bytearray | memoryview | np.ndarray,
    starts: np.ndarray | Sequence[int],
    lens: np.ndarray | Sequence[int],
    addr: tuple[str, int] | None = None,
) -> int:
    """Send datagram k = ``buf[starts[k] : starts[k] + lens[k]]`` for every k, in order,
    with as few ``sendmmsg`` calls as possible; returns the number sent.

    For a packed batch (e.g. :func:`tesla.mac.batch.sign_batch` output, or datagrams
    joined into one buffer): the iovec and mmsghdr arrays are filled as numpy columns,
    with no per-datagram Python object (``send_batch`` costs a few microseconds of
    Python per datagram).  Same blocking and fallback behaviour as :func:`send_batch`."""
    st = np.asarray(starts, dtype=np.int64)
    ln = np.asarray(lens, dtype=np.int64)
    n = len(st)
    if n == 0:
        return 0
    if len(ln) != n:
        raise ValueError("starts and lens differ in length")
    a = np.frombuffer(buf, dtype=np.uint8)
    if bool((st < 0).any() or (ln < 0).any() or (st + ln > len(a)).any()):
        raise ValueError("a datagram lies outside the buffer")
    if not (HAVE_MMSG and _VECTOR_OK):
        mv = a.data
        return send_batch(
            sock, [mv[x : x + y] for x, y in zip(st.tolist(), ln.tolist(), strict=True)], addr
        )
    assert _sendmmsg is not None
    iov = np.empty((n, 2), dtype=np.uint64)
    iov[:, 0] = a.ctypes.data + st
    iov[:, 1] = ln
    msgs = np.zeros((n, _MM_SIZE // 8), dtype=np.uint64)
    name = _sockaddr(addr)
    name_buf = ctypes.create_string_buffer(name) if name is not None else None
    if name_buf is not None and name is not None:
        msgs[:, _MM_NAME // 8] = ctypes.addressof(name_buf)
        msgs.view(np.uint32)[:, _MM_NAMELEN // 4] = len(name)
    msgs[:, _MM_IOV // 8] = iov.ctypes.data + _IOV_SIZE * np.arange(n, dtype=np.uint64)
    msgs[:, _MM_IOVLEN // 8] = 1
    sent = _sendmmsg_all(sock.fileno(), msgs.ctypes.data, n)
    del a, iov, msgs, name_buf  # alive until here: the kernel read them
    return sent


def send_some(
    sock: socket.socket,
    datagrams: Sequence[bytes],
    addr: tuple[str, int] | None = None,
) -> int:
    """Send ``datagrams`` in order with as few ``sendmmsg`` calls as possible on a
    non-blocking socket, stopping at the first one the socket refuses for want of buffer
    space (``EAGAIN``/``ENOBUFS``): returns how many were sent (0..n), the caller keeps
    the rest.  Another error is raised if nothing was sent, else left for the next call
    (which meets it at its first datagram, as a ``sendto`` loop would).  The datagrams are
    joined into one buffer and the iovec/mmsghdr arrays filled as numpy columns, so the
    per-datagram cost is the copy (a ``sendto`` loop costs microseconds of Python and one
    system call per datagram).  Without ``sendmmsg``: a ``sendto`` loop with the same
    semantics."""
    n = len(datagrams)
    if n == 0:
        return 0
    name: bytes | None = None
    if addr is not None and (len(addr) <= 2 or not any(addr[2:])):  # no IPv6 scope id
        try:
            name = _sockaddr(addr)
        except (OSError, ValueError):  # a host name: sendto resolves it
            name = None
    if not (HAVE_MMSG and _VECTOR_OK) or (addr is not None and name is None):
        return _sendto_some(sock, datagrams, addr)
    assert _sendmmsg is not None
    buf = b"".join(datagrams)
    ln = np.fromiter(map(len, datagrams), dtype=np.uint64, count=n)
    a = np.frombuffer(buf, dtype=np.uint8)
    iov = np.empty((n, 2), dtype=np.uint64)
    iov[:, 1] = ln
    iov[:, 0] = np.cumsum(ln) - ln
    iov[:, 0] += np.uint64(a.ctypes.data)
    msgs = np.zeros((n, _MM_SIZE // 8), dtype=np.uint64)
    name_buf = ctypes.create_string_buffer(name) if name is not None else None
    if name_buf is not None and name is not None:
        msgs[:, _MM_NAME // 8] = ctypes.addressof(name_buf)
        msgs.view(np.uint32)[:, _MM_NAMELEN // 4] = len(name)
    msgs[:, _MM_IOV // 8] = iov.ctypes.data + _IOV_SIZE * np.arange(n, dtype=np.uint64)
    msgs[:, _MM_IOVLEN // 8] = 1
    fd = sock.fileno()
    base = msgs.ctypes.data
    ptr = ctypes.POINTER(_Mmsghdr)
    sent = 0
    while sent < n:
        r = _sendmmsg(fd, ctypes.cast(base + sent * _MM_SIZE, ptr), n - sent, MSG_DONTWAIT)  # type: ignore[operator]
        if r < 0:
            e = ctypes.get_errno()
            if e == errno.EINTR:
                continue
            if e in (errno.EAGAIN, errno.ENOBUFS) or sent:
                break
            raise OSError(e, os.strerror(e))
        if r == 0:
            break
        sent += r
    del a, buf, iov, msgs, name_buf  # alive until here: the kernel read them
    return sent


def _sendto_some(
    sock: socket.socket, datagrams: Sequence[bytes], addr: tuple[str, int] | None
) -> int:
    """:func:`send_some` as a ``send``/``sendto`` loop."""
    done = 0
    for d in datagrams:
        try:
            if addr is None:
                sock.send(d)
            else:
                sock.sendto(d, addr)
        except (BlockingIOError, InterruptedError):
            return done
        except OSError as e:
            if e.errno in (errno.ENOBUFS, errno.EAGAIN) or done:
                return done
            raise
        done += 1
    return done


def send_slab(
    sock: socket.socket, slab: Slab, count: int, addr: tuple[str, int] | None = None
) -> int:
    """Send rows ``0..count-1`` of ``slab`` (``lengths`` octets each), zero-copy."""
    rows = [slab._rows_mv[k][: int(slab.lengths[k])] for k in range(count)]
    return send_batch(sock, rows, addr)


def gso_supported(sock: socket.socket) -> bool:
    """True if the kernel accepts ``UDP_SEGMENT`` on this socket."""
    try:
        sock.setsockopt(SOL_UDP, UDP_SEGMENT, 0)
        return True
    except OSError:
        return False


def send_gso(
    sock: socket.socket, buf: bytes | bytearray | memoryview, seg: int, addr: tuple[str, int]
) -> int:
    """Send ``buf`` as datagrams of ``seg`` octets (the last may be shorter) with one
    ``sendmsg`` carrying ``UDP_SEGMENT`` (GSO, at most 64 segments / 64 KiB per call).
    Returns the number of datagrams sent."""
    mv = memoryview(buf)
    total = len(mv)
    step = seg * min(64, max(1, 65000 // seg))
    count_ = 0
    cmsg = [(SOL_UDP, UDP_SEGMENT, struct.pack("=H", seg))]
    for s in range(0, total, step):
        part = mv[s : s + step]
        sock.sendmsg([part], cmsg, 0, addr)
        count_ += -(-len(part) // seg)
    return count_
