"""Small ctypes harness for NRL NORM (Debian ``libnorm1``), used by the interop tests and the bench.

Only what the tests need: an instance, sessions on loopback multicast (or 127.0.0.1), a sender
that enqueues files/data with chosen FEC parameters, a receiver that collects completed
objects, loss injection, and an event pump with timeouts so that nothing can hang a test.

Network rule: callers pass a group in 239.255.0.0/16 (or 127.0.0.1); the multicast interface is
always 127.0.0.1 and the TTL 0 or 1.

The API is ``/usr/include/normApi.h`` (libnorm-dev); NRL runs its protocol in its own thread,
so ``NormGetDescriptor`` + ``select`` + ``NormGetNextEvent(wait=False)`` is all we poll.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import ipaddress
import os
import random
import select
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

LIBNORM_PATHS = ("libnorm.so.1", "/usr/lib/x86_64-linux-gnu/libnorm.so.1", "libnorm.so")

# NormEventType (normApi.h order)
EVENT_NAMES = [
    "NORM_EVENT_INVALID",
    "NORM_TX_QUEUE_VACANCY",
    "NORM_TX_QUEUE_EMPTY",
    "NORM_TX_FLUSH_COMPLETED",
    "NORM_TX_WATERMARK_COMPLETED",
    "NORM_TX_CMD_SENT",
    "NORM_TX_OBJECT_SENT",
    "NORM_TX_OBJECT_PURGED",
    "NORM_TX_RATE_CHANGED",
    "NORM_LOCAL_SENDER_CLOSED",
    "NORM_REMOTE_SENDER_NEW",
    "NORM_REMOTE_SENDER_RESET",
    "NORM_REMOTE_SENDER_ADDRESS",
    "NORM_REMOTE_SENDER_ACTIVE",
    "NORM_REMOTE_SENDER_INACTIVE",
    "NORM_REMOTE_SENDER_PURGED",
    "NORM_RX_CMD_NEW",
    "NORM_RX_OBJECT_NEW",
    "NORM_RX_OBJECT_INFO",
    "NORM_RX_OBJECT_UPDATED",
    "NORM_RX_OBJECT_COMPLETED",
    "NORM_RX_OBJECT_ABORTED",
    "NORM_RX_ACK_REQUEST",
    "NORM_GRTT_UPDATED",
    "NORM_CC_ACTIVE",
    "NORM_CC_INACTIVE",
    "NORM_ACKING_NODE_NEW",
    "NORM_SEND_ERROR",
    "NORM_USER_TIMEOUT",
]
EV = {name: i for i, name in enumerate(EVENT_NAMES)}

NORM_OBJECT_NONE, NORM_OBJECT_DATA, NORM_OBJECT_FILE, NORM_OBJECT_STREAM = 0, 1, 2, 3
NORM_ACK_INVALID, NORM_ACK_FAILURE, NORM_ACK_PENDING, NORM_ACK_SUCCESS = 0, 1, 2, 3
NORM_PROBE_NONE, NORM_PROBE_PASSIVE, NORM_PROBE_ACTIVE = 0, 1, 2
NORM_NODE_ANY = 0xFFFFFFFF


class NormEvent(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_int),
        ("session", ctypes.c_void_p),
        ("sender", ctypes.c_void_p),
        ("object", ctypes.c_void_p),
    ]


_lib: ctypes.CDLL | None = None


def _declare(lib: ctypes.CDLL) -> None:
    vp, b, i, u8, u16, u32, d = (
        ctypes.c_void_p,
        ctypes.c_bool,
        ctypes.c_int,
        ctypes.c_uint8,
        ctypes.c_uint16,
        ctypes.c_uint32,
        ctypes.c_double,
    )
    cp = ctypes.c_char_p
    size_t = ctypes.c_int64  # NormSize = off_t (64-bit on this platform)
    sig: dict[str, tuple[Any, list[Any]]] = {
        "NormGetVersion": (i, [ctypes.POINTER(i), ctypes.POINTER(i), ctypes.POINTER(i)]),
        "NormCreateInstance": (vp, [b]),
        "NormDestroyInstance": (None, [vp]),
        "NormStopInstance": (None, [vp]),
        "NormSetCacheDirectory": (b, [vp, cp]),
        "NormGetNextEvent": (b, [vp, ctypes.POINTER(NormEvent), b]),
        "NormGetDescriptor": (i, [vp]),
        "NormCreateSession": (vp, [vp, cp, u16, u32]),
        "NormDestroySession": (None, [vp]),
        "NormSetMulticastInterface": (b, [vp, cp]),
        "NormSetTTL": (b, [vp, ctypes.c_ubyte]),
        "NormSetLoopback": (b, [vp, b]),
        "NormSetMulticastLoopback": (b, [vp, b]),
        "NormSetRxPortReuse": (None, [vp, b, cp, cp, u16]),
        "NormSetTxPort": (b, [vp, u16, b, cp]),
        "NormSetTxLoss": (None, [vp, d]),
        "NormSetRxLoss": (None, [vp, d]),
        "NormSetMessageTrace": (None, [vp, b]),
        "NormSetDebugLevel": (None, [ctypes.c_uint]),
        "NormStartSender": (b, [vp, u16, u32, u16, u16, u16, u8]),
        "NormStopSender": (None, [vp]),
        "NormSetTxRate": (None, [vp, d]),
        "NormGetTxRate": (d, [vp]),
        "NormSetTxRateBounds": (None, [vp, d, d]),
        "NormSetCongestionControl": (None, [vp, b, b]),
        "NormSetAutoParity": (None, [vp, ctypes.c_ubyte]),
        "NormSetGrttEstimate": (None, [vp, d]),
        "NormGetGrttEstimate": (d, [vp]),
        "NormSetGrttMax": (None, [vp, d]),
        "NormSetGrttProbingMode": (None, [vp, i]),
        "NormSetBackoffFactor": (None, [vp, d]),
        "NormSetGroupSize": (None, [vp, ctypes.c_uint]),
        "NormSetTxRobustFactor": (None, [vp, i]),
        "NormSetTxCacheBounds": (None, [vp, size_t, u32, u32]),
        "NormSetTxSocketBuffer": (b, [vp, ctypes.c_uint]),
        "NormSetRxSocketBuffer": (b, [vp, ctypes.c_uint]),
        "NormFileEnqueue": (vp, [vp, cp, cp, ctypes.c_uint]),
        "NormDataEnqueue": (vp, [vp, cp, u32, cp, ctypes.c_uint]),
        "NormSetWatermark": (b, [vp, vp, b]),
        "NormAddAckingNode": (b, [vp, u32]),
        "NormGetAckingStatus": (i, [vp, u32]),
        "NormStartReceiver": (b, [vp, u32]),
        "NormStopReceiver": (None, [vp]),
        "NormSetDefaultUnicastNack": (None, [vp, b]),
        "NormSetSilentReceiver": (None, [vp, b, i]),
        "NormObjectGetType": (i, [vp]),
        "NormObjectHasInfo": (b, [vp]),
        "NormObjectGetInfoLength": (u16, [vp]),
        "NormObjectGetInfo": (u16, [vp, ctypes.c_char_p, u16]),
        "NormObjectGetSize": (size_t, [vp]),
        "NormObjectRetain": (None, [vp]),
        "NormObjectRelease": (None, [vp]),
        "NormFileGetName": (b, [vp, ctypes.c_char_p, ctypes.c_uint]),
        "NormDataAccessData": (ctypes.c_void_p, [vp]),
        "NormNodeGetId": (u32, [vp]),
        "NormNodeGetGrtt": (d, [vp]),
        "NormStreamOpen": (vp, [vp, u32, cp, ctypes.c_uint]),
        "NormStreamWrite": (ctypes.c_uint, [vp, cp, ctypes.c_uint]),
        "NormStreamFlush": (None, [vp, b, i]),
        "NormStreamClose": (None, [vp, b]),
        "NormStreamRead": (b, [vp, cp, ctypes.POINTER(ctypes.c_uint)]),
    }
    for name, (res, args) in sig.items():
        fn = getattr(lib, name)
        fn.restype = res
        fn.argtypes = args


def load() -> ctypes.CDLL:
    """Load libnorm once; raise OSError if it is not installed."""
    global _lib
    if _lib is None:
        last: OSError | None = None
        for path in LIBNORM_PATHS + ((ctypes.util.find_library("norm") or "libnorm.so.1"),):
            try:
                lib = ctypes.CDLL(path)
            except OSError as exc:
                last = exc
                continue
            _declare(lib)
            _lib = lib
            break
        else:
            raise OSError(f"libnorm not found: {last}")
    return _lib


def available() -> bool:
    try:
        load()
    except OSError:
        return False
    return True


def version() -> str:
    lib = load()
    a, b_, c = ctypes.c_int(), ctypes.c_int(), ctypes.c_int()
    lib.NormGetVersion(ctypes.byref(a), ctypes.byref(b_), ctypes.byref(c))
    return f"{a.value}.{b_.value}.{c.value}"


def random_group() -> str:
    """A random group in 239.255.0.0/16 (never 239.255.0.0 / .255.255)."""
    return f"239.255.{random.randint(1, 254)}.{random.randint(1, 254)}"


def random_port() -> int:
    return random.randint(20000, 60000)


def check_address(addr: str) -> None:
    """Enforce the project's network rule."""
    ip = ipaddress.ip_address(addr)
    if str(ip) == "127.0.0.1":
        return
    if ip not in ipaddress.ip_network("239.255.0.0/16"):
        raise ValueError(f"address {addr} violates the loopback/239.255/16 rule")


@dataclass
class Event:
    type: int
    name: str
    session: int | None
    sender: int | None
    object: int | None


@dataclass
class Received:
    """One completed NRL rx object."""

    info: bytes
    data: bytes
    object_type: int
    path: str | None = None
    sender_id: int = 0


class Instance:
    """A NormInstance with a non-blocking, timeout-bounded event pump."""

    def __init__(self, debug_level: int = 0) -> None:
        self.lib = load()
        if debug_level:
            self.lib.NormSetDebugLevel(debug_level)
        self.handle = self.lib.NormCreateInstance(False)
        if not self.handle:
            raise RuntimeError("NormCreateInstance failed")
        self.fd = self.lib.NormGetDescriptor(self.handle)
        self.sessions: list[Session] = []
        self._closed = False

    def set_cache_directory(self, path: str) -> None:
        path = os.path.join(path, "")  # NRL wants a trailing separator
        if not self.lib.NormSetCacheDirectory(self.handle, path.encode()):
            raise RuntimeError("NormSetCacheDirectory failed")

    def session(self, addr: str, port: int, node_id: int) -> Session:
        check_address(addr)
        h = self.lib.NormCreateSession(self.handle, addr.encode(), port, node_id)
        if not h:
            raise RuntimeError("NormCreateSession failed")
        s = Session(self, h, addr, port, node_id)
        self.sessions.append(s)
        return s

    def next_event(self, timeout: float) -> Event | None:
        """Next NRL event, waiting at most ``timeout`` seconds (None on timeout)."""
        ev = NormEvent()
        deadline = time.monotonic() + max(0.0, timeout)
        while True:
            if self.lib.NormGetNextEvent(self.handle, ctypes.byref(ev), False):
                t = ev.type
                name = EVENT_NAMES[t] if 0 <= t < len(EVENT_NAMES) else f"EVENT_{t}"
                return Event(t, name, ev.session, ev.sender, ev.object)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            select.select([self.fd], [], [], min(remaining, 0.05))

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for s in self.sessions:
            s.close()
        self.lib.NormStopInstance(self.handle)
        self.lib.NormDestroyInstance(self.handle)

    def __enter__(self) -> Instance:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- object helpers -------------------------------------------------------------------
    def object_info(self, obj: int) -> bytes:
        lib = self.lib
        if not lib.NormObjectHasInfo(obj):
            return b""
        n = lib.NormObjectGetInfoLength(obj)
        buf = ctypes.create_string_buffer(n + 1)
        got = lib.NormObjectGetInfo(obj, buf, n + 1)
        return buf.raw[:got]

    def stream_read(self, obj: int) -> bytes:
        """Everything NormStreamRead has for a receive stream now."""
        out = bytearray()
        buf = ctypes.create_string_buffer(65536)
        while True:
            n = ctypes.c_uint(65536)
            if not self.lib.NormStreamRead(obj, buf, ctypes.byref(n)) or n.value == 0:
                return bytes(out)
            out += buf.raw[: n.value]

    def object_payload(self, obj: int) -> tuple[int, bytes, str | None]:
        lib = self.lib
        otype = lib.NormObjectGetType(obj)
        size = lib.NormObjectGetSize(obj)
        if otype == NORM_OBJECT_FILE:
            name = ctypes.create_string_buffer(4096)
            lib.NormFileGetName(obj, name, 4096)
            path = name.value.decode()
            with open(path, "rb") as fh:
                return otype, fh.read(), path
        if otype == NORM_OBJECT_DATA:
            ptr = lib.NormDataAccessData(obj)
            return otype, (ctypes.string_at(ptr, size) if ptr and size else b""), None
        return otype, b"", None


class Session:
    def __init__(self, inst: Instance, handle: int, addr: str, port: int, node_id: int) -> None:
        self.inst = inst
        self.lib = inst.lib
        self.handle = handle
        self.addr, self.port, self.node_id = addr, port, node_id
        self._closed = False
        self.ack_nodes: list[int] = []

    # ---- network --------------------------------------------------------------------------
    def set_loopback_multicast(self, ttl: int = 1) -> None:
        """Interface 127.0.0.1, TTL 0/1, IP multicast loop on, port reuse (several peers)."""
        if ttl not in (0, 1):
            raise ValueError("TTL must be 0 or 1")
        lib = self.lib
        lib.NormSetRxPortReuse(self.handle, True, None, None, 0)
        if self.addr != "127.0.0.1":
            lib.NormSetMulticastInterface(self.handle, b"127.0.0.1")
            lib.NormSetTTL(self.handle, ttl)
            lib.NormSetMulticastLoopback(self.handle, True)

    def set_tx_loss(self, percent: float) -> None:
        self.lib.NormSetTxLoss(self.handle, float(percent))

    def set_rx_loss(self, percent: float) -> None:
        self.lib.NormSetRxLoss(self.handle, float(percent))

    def set_trace(self, on: bool = True) -> None:
        self.lib.NormSetMessageTrace(self.handle, on)

    # ---- sender ---------------------------------------------------------------------------
    def start_sender(
        self,
        *,
        segment: int = 1400,
        block: int = 64,
        parity: int = 16,
        auto_parity: int = 0,
        fec_id: int = 0,
        rate_bps: float = 10e6,
        cc: bool = False,
        buffer_space: int = 16 * 1024 * 1024,
        instance_id: int | None = None,
        grtt: float | None = None,
        probing: int | None = None,
        backoff: float | None = None,
        group_size: int | None = None,
        grtt_max: float | None = None,
    ) -> None:
        """``fec_id`` 0 lets NRL choose: 5 if block+parity <= 255 else 2 with m=16."""
        lib = self.lib
        if grtt is not None:
            lib.NormSetGrttEstimate(self.handle, grtt)
        if grtt_max is not None:
            lib.NormSetGrttMax(self.handle, grtt_max)
        if backoff is not None:
            lib.NormSetBackoffFactor(self.handle, backoff)
        if group_size is not None:
            lib.NormSetGroupSize(self.handle, group_size)
        lib.NormSetTxRate(self.handle, float(rate_bps))
        if instance_id is None:
            instance_id = random.randint(1, 0xFFFE)
        ok = lib.NormStartSender(
            self.handle, instance_id, buffer_space, segment, block, parity, fec_id
        )
        if not ok:
            raise RuntimeError("NormStartSender failed")
        lib.NormSetCongestionControl(self.handle, cc, True)
        if not cc:
            lib.NormSetTxRate(self.handle, float(rate_bps))
        if auto_parity:
            lib.NormSetAutoParity(self.handle, auto_parity)
        if probing is not None:
            lib.NormSetGrttProbingMode(self.handle, probing)

    def enqueue_file(self, path: str, info: bytes | None = None) -> int:
        if info is None:
            info = os.path.basename(path).encode()
        h = self.lib.NormFileEnqueue(self.handle, path.encode(), info, len(info))
        if not h:
            raise RuntimeError(f"NormFileEnqueue failed for {path}")
        return int(h)

    def enqueue_data(self, data: bytes, info: bytes = b"") -> int:
        # NRL does not copy: keep the buffer alive as long as the object
        buf = ctypes.create_string_buffer(data, len(data))
        self._keep = getattr(self, "_keep", [])
        self._keep.append(buf)
        h = self.lib.NormDataEnqueue(self.handle, buf, len(data), info or None, len(info))
        if not h:
            raise RuntimeError("NormDataEnqueue failed")
        return int(h)

    # ---- streams (NORM_OBJECT_STREAM) ---------------------------------------------------------
    def stream_open(self, buffer_size: int, info: bytes = b"") -> int:
        h = self.lib.NormStreamOpen(self.handle, buffer_size, info or None, len(info))
        if not h:
            raise RuntimeError("NormStreamOpen failed")
        return int(h)

    def stream_write(self, stream: int, data: bytes) -> int:
        """Bytes NRL accepted (fewer than ``len(data)`` when its stream buffer is full)."""
        return int(self.lib.NormStreamWrite(stream, data, len(data)))

    def stream_close(self, stream: int) -> None:
        """Flush (end of message, active flush) and close gracefully (NORM_STREAM_END)."""
        self.lib.NormStreamFlush(stream, True, 2)  # NORM_FLUSH_ACTIVE
        self.lib.NormStreamClose(stream, True)

    def add_acking_node(self, node_id: int) -> None:
        self.lib.NormAddAckingNode(self.handle, node_id)
        self.ack_nodes.append(node_id)

    def set_watermark(self, obj: int) -> None:
        self.lib.NormSetWatermark(self.handle, obj, True)

    def acking_status(self, node_id: int = NORM_NODE_ANY) -> int:
        return int(self.lib.NormGetAckingStatus(self.handle, node_id))

    # ---- receiver -------------------------------------------------------------------------
    def start_receiver(self, buffer_space: int = 64 * 1024 * 1024, silent: bool = False) -> None:
        lib = self.lib
        if silent:
            lib.NormSetSilentReceiver(self.handle, True, -1)
        lib.NormSetRxSocketBuffer(self.handle, 4 * 1024 * 1024)
        if not lib.NormStartReceiver(self.handle, buffer_space):
            raise RuntimeError("NormStartReceiver failed")

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.lib.NormStopSender(self.handle)
        self.lib.NormStopReceiver(self.handle)
        self.lib.NormDestroySession(self.handle)


# ---- high-level helpers used by tests and the bench ----------------------------------------


@dataclass
class SendResult:
    flushed: bool
    elapsed: float
    events: list[str] = field(default_factory=list)
    watermark: bool | None = None


def run_sender(
    inst: Instance,
    session: Session,
    files: list[str],
    timeout: float,
    *,
    wait_flush: bool = True,
    watermark: bool = False,
    linger: float = 0.0,
    until: Callable[[], bool] | None = None,
) -> SendResult:
    """Enqueue ``files`` and pump events until TX_FLUSH_COMPLETED (or watermark) or timeout."""
    t0 = time.monotonic()
    handles = [session.enqueue_file(p) for p in files]
    if watermark and handles:
        session.set_watermark(handles[-1])
    res = SendResult(False, 0.0)
    deadline = t0 + timeout
    while time.monotonic() < deadline:
        if until is not None and until():
            break
        ev = inst.next_event(min(0.05, deadline - time.monotonic()))
        if ev is None:
            continue
        res.events.append(ev.name)
        if ev.type == EV["NORM_TX_WATERMARK_COMPLETED"]:
            res.watermark = session.acking_status() == NORM_ACK_SUCCESS
            if not wait_flush and until is None:
                break
        if ev.type == EV["NORM_TX_FLUSH_COMPLETED"] and wait_flush:
            res.flushed = True
            break
    res.elapsed = time.monotonic() - t0
    end = time.monotonic() + linger
    while time.monotonic() < end:
        inst.next_event(end - time.monotonic())
    return res


class ReceiverThread(threading.Thread):
    """Pump one instance's events in a thread; collect completed objects."""

    def __init__(self, inst: Instance, expect: int = 1) -> None:
        super().__init__(daemon=True)
        self.inst = inst
        self.expect = expect
        self.received: list[Received] = []
        self.events: list[str] = []
        self.done = threading.Event()
        self._halt = threading.Event()
        self.first_data: float | None = None
        self.last_done: float | None = None

    def run(self) -> None:
        inst = self.inst
        while not self._halt.is_set():
            ev = inst.next_event(0.1)
            if ev is None:
                continue
            self.events.append(ev.name)
            if ev.type == EV["NORM_RX_OBJECT_NEW"] and self.first_data is None:
                self.first_data = time.monotonic()
            if ev.type == EV["NORM_RX_OBJECT_COMPLETED"] and ev.object:
                otype, data, path = inst.object_payload(ev.object)
                sender = inst.lib.NormNodeGetId(ev.sender) if ev.sender else 0
                self.received.append(
                    Received(inst.object_info(ev.object), data, otype, path, sender)
                )
                if path:
                    try:
                        os.unlink(path)
                    except OSError:
                        pass
                self.last_done = time.monotonic()
                if len(self.received) >= self.expect:
                    self.done.set()

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=5)

    def wait(self, timeout: float) -> bool:
        return self.done.wait(timeout)
