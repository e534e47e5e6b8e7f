"""Worker processes that compute the per-packet HMACs of verification batches.

The MAC loop is the only per-packet work of an interval's verification (the receiver's
:func:`tesla.core.receiver.mac_arena` call) and, in Python, it holds the GIL (threads give
nothing for packets below ~2 KiB), so the parallel form is processes.  A :class:`WorkerPool` owns
three ``multiprocessing.shared_memory`` blocks used as rings -- packed datagrams, a row
table (start, length, MAC field offset, Group MAC field offset) and the output (the
received MAC fields and the computed digests, truncated) -- and ``n`` worker processes.

What the receiver uses (:func:`tesla.core.receiver.pool_macs`, ``--verify-workers``) is the
synchronous :meth:`WorkerPool.mac_packed` over an interval's arena, fields zeroed.

Pipelined form (not used by the receiver since its arenas; kept with its tests):
:meth:`WorkerPool.pack` packs an interval's datagrams at the head of the ring (one ``struct`` call, no
intermediate buffer), :meth:`WorkerPool.submit` sends each worker a row range over a pipe
(a few octets: range, key, MAC type) and returns a :class:`MacJob` at once.  The workers
read out and zero the MAC (and Group MAC) fields themselves (RFC 5776 §3.3.1), hash, and
write the fields and digests into the output ring, so the caller touches none of the
datagram octets again.  Several jobs can be in flight; they are collected oldest first
(:meth:`MacJob.result`), and :meth:`pack` returns None when the ring has no room until the
oldest is collected.  Only the key of an interval already disclosed and verified (so no
longer secret) crosses the pipe.  ``main_share``: the caller hashes the last rows of a
job itself when it collects it (main process + 1 worker on a 2-CPU machine).

:meth:`mac_packed` is the synchronous form over already zeroed datagrams (chunks when the
batch exceeds the blocks).  Use as a context manager or call :meth:`close`; worker start
uses ``fork`` on Linux (the shared blocks are inherited), ``spawn`` elsewhere.
"""

from __future__ import annotations

import multiprocessing as mp
import struct
import sys
from collections import deque
from collections.abc import Sequence
from multiprocessing.connection import Connection
from multiprocessing.shared_memory import SharedMemory
from typing import Any

import numpy as np

__all__ = ["WorkerPool", "MacJob", "PackedSlot", "DEFAULT_WORKERS", "zero_and_hash"]

DEFAULT_WORKERS = 2
_ROW = 32  # int64 start, length, MAC field offset (-1: none), Group MAC offset (-1)
_DIG = 64  # max digest octets (SHA-512)
_OUT = 2 * _DIG  # per row: MAC field as received, then the computed digest


def zero_and_hash(
    data: Any,
    arr: np.ndarray,
    rows: np.ndarray,
    out: np.ndarray,
    key: bytes,
    mac_id: int,
    km: int,
) -> None:
    """For the rows ``rows`` (n, 4) of ``arr``/``data`` (the same block as numpy and as a
    buffer): copy each MAC field to ``out[:, :km]``, zero it and the Group MAC field,
    and write the HMAC digests, truncated to ``km``, to ``out[:, _DIG:_DIG + km]``."""
    from tesla.mac.batch import _zero_fields, mac_rows

    n = len(rows)
    if n == 0:
        return
    st = rows[:, 0]
    ln = rows[:, 1]
    if bool(rows[0, 2] >= 0):  # -1: fields already zeroed by the caller (mac_packed)
        out[:, :km] = _zero_fields(arr, st, rows[:, 2], rows[:, 3], km)
    raw = mac_rows(data, st, ln, key, mac_id)
    hl = len(raw) // n
    out[:, _DIG : _DIG + km] = np.frombuffer(raw, dtype=np.uint8).reshape(n, hl)[:, :km]


def _worker(conn: Connection, names: tuple[str, str, str] | None, blocks: Any) -> None:
    if blocks is None:
        assert names is not None
        blocks = tuple(SharedMemory(name=nm) for nm in names)
    shm_in, shm_rows, shm_out = blocks
    rows = np.ndarray((shm_rows.size // _ROW, 4), dtype=np.int64, buffer=shm_rows.buf)
    out = np.ndarray((shm_out.size // _OUT, _OUT), dtype=np.uint8, buffer=shm_out.buf)
    data = shm_in.buf
    arr = np.ndarray((shm_in.size,), dtype=np.uint8, buffer=data)
    try:
        while True:
            msg = conn.recv()
            if msg is None:
                break
            lo, hi, key, mac_id, km = msg
            zero_and_hash(data, arr, rows[lo:hi], out[lo:hi], key, mac_id, km)
            conn.send(hi - lo)
    except (EOFError, KeyboardInterrupt):
        pass
    finally:
        del rows, out, data, arr


def _fit(head: int, size: int, tail: int | None, cap: int) -> int | None:
    """Start of a free region of ``size`` in a ring whose used part is [tail, head)
    (wrapping; ``tail`` None: empty), or None."""
    if tail is None:
        return 0 if size <= cap else None
    if head == tail:
        return None  # full (jobs in flight and no gap)
    if head > tail:
        if head + size <= cap:
            return head
        return 0 if size <= tail else None
    return head if head + size <= tail else None


class PackedSlot:
    """An interval packed into the ring, not yet submitted (see :meth:`WorkerPool.pack`)."""

    __slots__ = ("d0", "d1", "r0", "n", "data", "starts", "lens")

    def __init__(
        self, d0: int, d1: int, r0: int, n: int, data: np.ndarray, starts: np.ndarray, lens: np.ndarray
    ) -> None:
        self.d0 = d0
        self.d1 = d1
        self.r0 = r0
        self.n = n
        self.data = data  # uint8 view of the whole input block
        self.starts = starts  # absolute offsets in ``data``
        self.lens = lens


class WorkerPool:
    """``n`` MAC worker processes over shared memory (see module doc)."""

    def __init__(
        self, n: int = DEFAULT_WORKERS, capacity: int = 64 << 20, max_rows: int = 1 << 17
    ) -> None:
        if n < 1:
            raise ValueError("n >= 1")
        self.n = n
        self.capacity = capacity
        self.max_rows = max_rows
        self._in = SharedMemory(create=True, size=capacity)
        self._rows = SharedMemory(create=True, size=max_rows * _ROW)
        self._out = SharedMemory(create=True, size=max_rows * _OUT)
        self.rows = np.ndarray((max_rows, 4), dtype=np.int64, buffer=self._rows.buf)
        self.out = np.ndarray((max_rows, _OUT), dtype=np.uint8, buffer=self._out.buf)
        self.data = np.ndarray((capacity,), dtype=np.uint8, buffer=self._in.buf)
        fork = sys.platform.startswith("linux")
        ctx: Any = mp.get_context("fork" if fork else "spawn")
        self._conns: list[Connection] = []
        self._procs: list[Any] = []
        blocks = (self._in, self._rows, self._out) if fork else None
        names = (self._in.name, self._rows.name, self._out.name)
        for _ in range(n):
            a, b = ctx.Pipe()
            pr = ctx.Process(target=_worker, args=(b, names, blocks), daemon=True)
            pr.start()
            b.close()
            self._conns.append(a)
            self._procs.append(pr)
        self.batches = 0
        self._closed = False
        self._inflight: deque[MacJob] = deque()
        self._dh = 0  # data ring head
        self._rh = 0  # row ring head
        self.jobs = 0  # batches started with submit()
        self._structs: dict[tuple[int, int], struct.Struct] = {}

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def in_flight(self) -> int:
        """Jobs submitted and not yet collected."""
        return len(self._inflight)

    def oldest(self) -> MacJob | None:
        return self._inflight[0] if self._inflight else None

    # -- synchronous form -----------------------------------------------------------
    def mac_packed(
        self,
        arr: np.ndarray,
        starts: np.ndarray,
        lens: np.ndarray,
        key: bytes,
        mac_id: int,
        km: int,
    ) -> np.ndarray:
        """Truncated HMACs (``km`` octets) of ``arr[starts[k]:starts[k]+lens[k]]`` (MAC
        fields already zeroed) for every k, computed by the workers; returns an
        ``(n, km)`` uint8 array.  Needs no job in flight."""
        if self._inflight:
            raise RuntimeError("jobs in flight: collect them first")
        n = len(starts)
        res = np.empty((n, km), dtype=np.uint8)
        k = 0
        ends = starts + lens
        while k < n:
            m = min(n, k + self.max_rows)
            base = int(starts[k])
            lim = base + self.capacity
            m = k + int(np.searchsorted(ends[k:m], lim, side="right"))
            if m == k:
                raise ValueError("datagram larger than the worker pool capacity")
            top = int(ends[m - 1])
            self.data[: top - base] = arr[base:top]
            cnt = m - k
            self.rows[:cnt, 0] = starts[k:m] - base
            self.rows[:cnt, 1] = lens[k:m]
            self.rows[:cnt, 2:] = -1
            busy = self._send_split(0, cnt, key, mac_id, km, self.n)
            for w in busy:
                self._conns[w].recv()
            res[k:m] = self.out[:cnt, _DIG : _DIG + km]
            k = m
        self.batches += 1
        return res

    def _send_split(self, lo: int, hi: int, key: bytes, mac_id: int, km: int, nw: int) -> list[int]:
        """Send rows [lo, hi) to ``nw`` workers, split so each hashes about the same
        number of octets; returns the workers that got rows."""
        busy: list[int] = []
        if hi <= lo:
            return busy
        cum = np.cumsum(self.rows[lo:hi, 1])
        cuts = [lo]
        for w in range(1, nw):
            cuts.append(lo + int(np.searchsorted(cum, cum[-1] * w / nw)))
        cuts.append(hi)
        for w in range(nw):
            a, b = cuts[w], cuts[w + 1]
            if b > a:
                self._conns[w].send((a, b, key, mac_id, km))
                busy.append(w)
        return busy

    # -- pipelined form ---------------------------------------------------------------
    def pack(
        self, pkts: Sequence[bytes], moffs: np.ndarray, goffs: np.ndarray
    ) -> PackedSlot | None:
        """Pack ``pkts`` back to back at the head of the ring with their MAC and Group MAC
        field offsets (``goffs`` -1: none).  None if they do not fit now (collect the
        oldest job and retry) or never (larger than the blocks: ``in_flight`` is 0)."""
        n = len(pkts)
        if n == 0 or n > self.max_rows:
            return None
        from tesla.mac import kernel as mackernel

        held = mackernel.lengths_of(pkts)  # read in place, copied by the kernel below
        lens = held.lens if held is not None else np.fromiter(map(len, pkts), np.int64, n)
        total = int(lens.sum())
        tail_d = self._inflight[0].d0 if self._inflight else None
        tail_r = self._inflight[0].r0 if self._inflight else None
        if not self._inflight:
            self._dh = self._rh = 0
        d0 = _fit(self._dh, total, tail_d, self.capacity)
        r0 = _fit(self._rh, n, tail_r, self.max_rows)
        if d0 is None or r0 is None:
            return None
        starts = np.cumsum(lens) - lens + d0
        from tesla.mac.batch import _splitter

        buf = self._in.buf
        assert buf is not None
        if held is not None:
            held.copy_into(self.data, starts)
        else:
            _splitter(lens, None).pack_into(buf, d0, *pkts)
        rows = self.rows[r0 : r0 + n]
        rows[:, 0] = starts
        rows[:, 1] = lens
        rows[:, 2] = moffs
        rows[:, 3] = goffs
        self._dh = d0 + total
        self._rh = r0 + n
        return PackedSlot(d0, d0 + total, r0, n, self.data, starts, lens)

    def submit(
        self,
        slot: PackedSlot,
        key: bytes,
        mac_id: int,
        km: int,
        main_share: float = 0.0,
        use: int = 0,
    ) -> MacJob:
        """Start the workers on ``slot``: ``use`` workers (0 = all) take the first rows,
        split by octets, and the last ``main_share`` of the rows are left to the caller,
        which hashes them when it collects the job.  Returns at once."""
        n = slot.n
        nw = self.n if use <= 0 else min(use, self.n)
        m = min(n, int(round(n * main_share)))
        cut = n - m
        busy = self._send_split(slot.r0, slot.r0 + cut, key, mac_id, km, nw)
        job = MacJob(self, slot, cut, busy, key, mac_id, km)
        self._inflight.append(job)
        self.jobs += 1
        return job

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for c in self._conns:
            try:
                c.send(None)
            except (OSError, BrokenPipeError):
                pass
        for pr in self._procs:
            pr.join(timeout=2)
            if pr.is_alive():
                pr.terminate()
        for c in self._conns:
            c.close()
        self._conns = []
        self._procs = []
        self._inflight.clear()
        del self.rows, self.out, self.data
        for s in (self._in, self._rows, self._out):
            s.close()
            try:
                s.unlink()
            except FileNotFoundError:
                pass


class MacJob:
    """One packed interval in flight in a :class:`WorkerPool` (see :meth:`WorkerPool.submit`)."""

    __slots__ = ("pool", "slot", "cut", "busy", "key", "mac_id", "km", "d0", "r0")

    def __init__(
        self,
        pool: WorkerPool,
        slot: PackedSlot,
        cut: int,
        busy: list[int],
        key: bytes,
        mac_id: int,
        km: int,
    ) -> None:
        self.pool = pool
        self.slot = slot
        self.cut = cut
        self.busy = busy
        self.key = key
        self.mac_id = mac_id
        self.km = km
        self.d0 = slot.d0
        self.r0 = slot.r0

    def ready(self) -> bool:
        """Whether :meth:`result` would return without waiting (no caller share left,
        every worker of the job has answered)."""
        if self.cut < self.slot.n:
            return False
        return all(self.pool._conns[w].poll() for w in self.busy)

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        """``(MAC fields as received, computed digests)``, each ``(n, km)``: hashes the
        caller's share of the rows here, then waits for the workers'.  Jobs are
        collected oldest first."""
        pool = self.pool
        if not pool._inflight or pool._inflight[0] is not self:
            raise RuntimeError("collect the oldest MacJob first")
        n, cut, km, r0 = self.slot.n, self.cut, self.km, self.r0
        try:
            if cut < n:
                buf = pool._in.buf
                assert buf is not None
                zero_and_hash(
                    buf,
                    pool.data,
                    pool.rows[r0 + cut : r0 + n],
                    pool.out[r0 + cut : r0 + n],
                    self.key,
                    self.mac_id,
                    km,
                )
            for w in self.busy:
                pool._conns[w].recv()
            o = pool.out[r0 : r0 + n]
            tags = o[:, :km].copy()
            digs = o[:, _DIG : _DIG + km].copy()
        finally:
            pool._inflight.popleft()
        pool.batches += 1
        return tags, digs
