"""Worker processes that compute the per-packet HMACs of a verification batch.

The MAC loop is the only per-packet work of the batch verifier
(:func:`tesla.fastpath.verify_packed`) and it holds the GIL (threads give nothing for
packets below ~2 KiB), so the parallel form is processes.  A :class:`WorkerPool` owns
three ``multiprocessing.shared_memory`` blocks -- packed datagrams (with MAC/Group MAC
fields already zeroed by the caller), a row table (start, length) and the digest output
-- and ``n`` worker processes.  :meth:`WorkerPool.mac_packed` copies one batch into
shared memory, sends each worker a row range over a pipe (a few octets: range, key,
MAC type), and the workers write the truncated digests straight into the output block;
the caller compares tags as one numpy operation.  Only the key of one interval (already
disclosed and verified, so no longer secret) crosses the pipe.

Pipelined form (what :class:`tesla.fastpath.FastTeslaReceiver` uses): :meth:`WorkerPool.pack`
packs the datagrams straight into the shared input block (no intermediate buffer), the
caller zeroes the fields there, :meth:`WorkerPool.submit` starts the workers and returns
a :class:`MacJob` at once, and :meth:`MacJob.result` later hashes the caller's own share
of the rows (``main_share``: main process + 1 worker uses both cores of a 2-CPU
machine) and collects the workers'.  One job in flight at a time.

Batches larger than the shared blocks are processed in chunks (:meth:`mac_packed`).  Use as a context manager
or call :meth:`close`; worker start uses ``fork`` on Linux (the shared blocks are
inherited, nothing is re-attached), ``spawn`` elsewhere.
"""

from __future__ import annotations

import multiprocessing as mp
import sys
from collections.abc import Sequence
from multiprocessing.connection import Connection
from multiprocessing.shared_memory import SharedMemory
from typing import Any

import numpy as np

__all__ = ["WorkerPool", "MacJob", "DEFAULT_WORKERS"]

DEFAULT_WORKERS = 2
_ROW = 16  # int64 start + int64 length
_DIG = 64  # max digest octets (SHA-512)


def _worker(conn: Connection, names: tuple[str, str, str] | None, blocks: Any) -> None:
    from tesla.fastpath import mac_rows

    if blocks is None:
        assert names is not None
        blocks = tuple(SharedMemory(name=nm) for nm in names)
    shm_in, shm_rows, shm_out = blocks
    rows = np.ndarray((shm_rows.size // _ROW, 2), dtype=np.int64, buffer=shm_rows.buf)
    out = np.ndarray((shm_out.size // _DIG, _DIG), dtype=np.uint8, buffer=shm_out.buf)
    data = shm_in.buf
    try:
        while True:
            msg = conn.recv()
            if msg is None:
                break
            lo, hi, key, mac_id, km = msg
            r = rows[lo:hi]
            raw = mac_rows(data, r[:, 0], r[:, 1], key, mac_id)
            n = hi - lo
            hl = len(raw) // n if n else 0
            if n:
                out[lo:hi, :km] = np.frombuffer(raw, dtype=np.uint8).reshape(n, hl)[:, :km]
            conn.send(n)
    except (EOFError, KeyboardInterrupt):
        pass
    finally:
        del rows, out, data


class WorkerPool:
    """``n`` MAC worker processes over shared memory (see module doc)."""

    def __init__(
        self, n: int = DEFAULT_WORKERS, capacity: int = 32 << 20, max_rows: int = 1 << 16
    ) -> None:
        if n < 1:
            raise ValueError("n >= 1")
        self.n = n
        self.capacity = capacity
        self.max_rows = max_rows
        self._in = SharedMemory(create=True, size=capacity)
        self._rows = SharedMemory(create=True, size=max_rows * _ROW)
        self._out = SharedMemory(create=True, size=max_rows * _DIG)
        self.rows = np.ndarray((max_rows, 2), dtype=np.int64, buffer=self._rows.buf)
        self.out = np.ndarray((max_rows, _DIG), dtype=np.uint8, buffer=self._out.buf)
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
        self._job: MacJob | None = None
        self.jobs = 0  # batches started with submit()

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def mac_packed(
        self,
        arr: np.ndarray,
        starts: np.ndarray,
        lens: np.ndarray,
        key: bytes,
        mac_id: int,
        km: int,
    ) -> np.ndarray:
        """Truncated HMACs (``km`` octets) of ``arr[starts[k]:starts[k]+lens[k]]`` for
        every k, computed by the workers; returns an ``(n, km)`` uint8 array."""
        n = len(starts)
        res = np.empty((n, km), dtype=np.uint8)
        k = 0
        ends = starts + lens
        while k < n:
            # largest chunk [k, m) that fits the shared blocks
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
            # split rows so each worker hashes about the same number of octets
            cum = np.cumsum(lens[k:m])
            cuts = [0]
            for w in range(1, self.n):
                cuts.append(int(np.searchsorted(cum, cum[-1] * w / self.n)))
            cuts.append(cnt)
            busy = []
            for w in range(self.n):
                lo, hi = cuts[w], cuts[w + 1]
                if hi > lo:
                    self._conns[w].send((lo, hi, key, mac_id, km))
                    busy.append(w)
            for w in busy:
                self._conns[w].recv()
            res[k:m] = self.out[:cnt, :km]
            k = m
        self.batches += 1
        return res

    # -- asynchronous form: pack once into shared memory, hash while the caller goes on --
    def pack(self, pkts: Sequence[bytes]) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """Pack ``pkts`` back to back into the shared input block (one ``struct`` call, no
        intermediate buffer) and fill the row table: returns ``(data, starts, lens)``
        (``data`` is the writable uint8 view of the whole block), or None if they do not
        fit.  The caller zeroes the MAC fields in ``data`` and then calls :meth:`submit`.
        Only one batch can be in flight: its :class:`MacJob` must be collected first."""
        from tesla.fastpath import _splitter

        if self._job is not None:
            raise RuntimeError("a MacJob is in flight: collect its result() first")
        n = len(pkts)
        if n == 0 or n > self.max_rows:
            return None
        lens = np.fromiter(map(len, pkts), dtype=np.int64, count=n)
        starts = np.cumsum(lens) - lens
        if int(starts[-1] + lens[-1]) > self.capacity:
            return None
        buf = self._in.buf
        assert buf is not None
        _splitter(lens, None).pack_into(buf, 0, *pkts)
        self.rows[:n, 0] = starts
        self.rows[:n, 1] = lens
        return self.data, starts, lens

    def submit(
        self, n: int, key: bytes, mac_id: int, km: int, main_share: float = 0.0, use: int = 0
    ) -> MacJob:
        """Start hashing the ``n`` packed rows: ``use`` workers (0 = all) take the first
        rows, split by octets, and the last ``main_share`` of the rows are left to the
        caller's process, which hashes them in :meth:`MacJob.result` (so both cores of a
        2-CPU machine work: main + 1 worker).  Returns at once."""
        nw = self.n if use <= 0 else min(use, self.n)
        m = min(n, int(round(n * main_share))) if nw else n
        cut = n - m
        busy: list[int] = []
        if cut:
            ln = self.rows[:cut, 1]
            cum = np.cumsum(ln)
            cuts = [0]
            for w in range(1, nw):
                cuts.append(int(np.searchsorted(cum, cum[-1] * w / nw)))
            cuts.append(cut)
            for w in range(nw):
                lo, hi = cuts[w], cuts[w + 1]
                if hi > lo:
                    self._conns[w].send((lo, hi, key, mac_id, km))
                    busy.append(w)
        job = MacJob(self, n, cut, busy, key, mac_id, km)
        self._job = job
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
        del self.rows, self.out, self.data
        for s in (self._in, self._rows, self._out):
            s.close()
            try:
                s.unlink()
            except FileNotFoundError:
                pass


class MacJob:
    """One batch in flight in a :class:`WorkerPool` (see :meth:`WorkerPool.submit`)."""

    __slots__ = ("pool", "n", "cut", "busy", "key", "mac_id", "km")

    def __init__(
        self, pool: WorkerPool, n: int, cut: int, busy: list[int], key: bytes, mac_id: int, km: int
    ) -> None:
        self.pool = pool
        self.n = n
        self.cut = cut
        self.busy = busy
        self.key = key
        self.mac_id = mac_id
        self.km = km

    def result(self) -> np.ndarray:
        """The ``(n, km)`` truncated digests: hashes the caller's share of the rows here,
        then waits for the workers'."""
        from tesla.fastpath import mac_rows

        pool = self.pool
        n, cut, km = self.n, self.cut, self.km
        res = np.empty((n, km), dtype=np.uint8)
        try:
            if cut < n:
                r = pool.rows[cut:n]
                buf = pool._in.buf
                assert buf is not None
                raw = mac_rows(buf, r[:, 0], r[:, 1], self.key, self.mac_id)
                hl = len(raw) // (n - cut)
                res[cut:] = np.frombuffer(raw, dtype=np.uint8).reshape(n - cut, hl)[:, :km]
            for w in self.busy:
                pool._conns[w].recv()
        finally:
            pool._job = None
        if cut:
            res[:cut] = pool.out[:cut, :km]
        pool.batches += 1
        return res
