"""A compiled HMAC loop over packed rows: the MAC kernel of the batch paths (issue 6).

Why: the best per-packet MAC Python itself can do is one ``cryptography`` HMAC keyed
once and ``copy()``/``update()``/``finalize()``-ed per packet (the py-copy loop).  Those
three calls cost more than the hashing below ~1 KiB (they allocate and free three
OpenSSL digest contexts and a Python object per packet), which caps a receiver at
about 0.4x the OpenSSL HMAC rate for 64-octet packets whatever the rest of it does.

What: a loop compiled by numba (``njit``, cached on disk, GIL released) that, for every
row ``buf[start:start + len]``, copies a precomputed inner hash state (the key XOR ipad
block already absorbed, RFC 2104 §4 "precomputation"), absorbs the row, finishes, and
does the same with the outer state over the inner digest.  The hashing is the system
libcrypto's one-shot-free ``SHA*_Update``/``SHA*_Final`` (the same assembly, SHA-NI
where the CPU has it, that ``openssl speed`` measures), called by symbol from the
compiled loop: no allocation and no Python object per packet.  The states are plain
``SHA*_CTX`` structs, copied by value.

Fallback: without numba or without a libcrypto that exports those functions (or with
``TESLA_MAC_KERNEL=0`` in the environment), :func:`hmac_rows` returns None and callers
use the py-copy loop; both give identical octets (``tests/test_mackernel.py``).

Safety: rows are bounds-checked against the buffer before the compiled loop runs (it
reads raw memory), so no row table can make it read outside the buffer.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import threading
from typing import Any

import numpy as np

__all__ = [
    "available",
    "hmac_rows",
    "object_heads",
    "set_enabled",
    "verify_objects",
    "prepare_verify",
    "VerifyCall",
    "MIN_ROWS",
    "why_unavailable",
]

#: rows from which the kernel is used (below: the py-copy loop, and numba is not loaded)
MIN_ROWS = 8

# TESLA PRF/MAC registry value -> (OpenSSL function prefix, SHA*_CTX size, block, digest)
_ALGS: dict[int, tuple[str, int, int, int]] = {
    0: ("SHA1", 96, 64, 20),
    1: ("SHA224", 112, 64, 28),
    2: ("SHA256", 112, 64, 32),
    3: ("SHA384", 216, 128, 48),
    4: ("SHA512", 216, 128, 64),
}
_CTX = 256  # octets reserved per hash state (>= every SHA*_CTX above)

_lock = threading.Lock()
_par_lock = threading.Lock()
_state: dict[str, Any] = {}
_enabled = os.environ.get("TESLA_MAC_KERNEL", "1") not in ("0", "no", "off", "")


def set_enabled(on: bool) -> None:
    """Use the kernel (True, if available) or always the py-copy loop (False)."""
    global _enabled
    _enabled = on


def _load() -> dict[str, Any]:
    """Load libcrypto and numba and build the kernel once (``{"error": ...}`` if not)."""
    with _lock:
        if _state:
            return _state
        try:
            _state.update(_build())
        except Exception as e:  # noqa: BLE001 - any failure means: use the fallback
            _state["error"] = f"{type(e).__name__}: {e}"
        return _state


def _build() -> dict[str, Any]:
    path = ctypes.util.find_library("crypto")
    if path is None:
        raise OSError("no libcrypto found")
    lib = ctypes.CDLL(path)
    for prefix, *_ in _ALGS.values():
        for fn in ("Init", "Update", "Final"):
            if not hasattr(lib, f"{prefix}_{fn}"):
                raise OSError(f"{path} does not export {prefix}_{fn}")
    from llvmlite import binding as llb  # numba's own dependency

    llb.load_library_permanently(path)  # resolve the SHA*_ symbols of the compiled loop
    from tesla import _mackernel_jit as jit

    return {"lib": lib, "jit": jit, "path": path, "keys": {}, "layout": _object_layout()}


def _object_layout() -> tuple[int, int] | None:
    """``(address of the bytes type, offset of a bytes object's data)`` when this
    interpreter lays ``bytes`` out as CPython does (``ob_refcnt``, ``ob_type``,
    ``ob_size`` words, then the octets), checked on probe objects; else None (the
    object loops are then not used)."""
    import sys

    if sys.implementation.name != "cpython" or ctypes.sizeof(ctypes.c_void_p) != 8:
        return None
    off = bytes.__basicsize__ - 1
    for b in (b"", b"\x01", bytes(range(256)) * 3, b"tesla-" + bytes(8)):
        if ctypes.c_void_p.from_address(id(b) + 8).value != id(bytes):
            return None
        if ctypes.c_ssize_t.from_address(id(b) + 16).value != len(b):
            return None
        if ctypes.string_at(id(b) + off, len(b)) != b:
            return None
    return id(bytes), off


def available() -> bool:
    """Whether :func:`hmac_rows` uses the compiled kernel (loads it on first call)."""
    return _enabled and "error" not in _load()


def why_unavailable() -> str | None:
    """Why the kernel is not used (None when it is)."""
    if not _enabled:
        return "disabled (TESLA_MAC_KERNEL=0 or set_enabled(False))"
    return _load().get("error")


def _states(st: dict[str, Any], key: bytes, mac_id: int) -> tuple[np.ndarray, np.ndarray]:
    """The inner and outer hash states of HMAC keyed with ``key`` (RFC 2104 §2), cached
    for the last few keys (one per interval in use)."""
    cache: dict[tuple[bytes, int], tuple[np.ndarray, np.ndarray]] = st["keys"]
    got = cache.get((key, mac_id))
    if got is not None:
        return got
    prefix, _csize, block, _dlen = _ALGS[mac_id]
    lib = st["lib"]
    if len(key) > block:
        h = ctypes.create_string_buffer(_CTX)
        md = ctypes.create_string_buffer(64)
        getattr(lib, f"{prefix}_Init")(h)
        getattr(lib, f"{prefix}_Update")(h, key, ctypes.c_size_t(len(key)))
        getattr(lib, f"{prefix}_Final")(md, h)
        key = md.raw[: _ALGS[mac_id][3]]
    k = key.ljust(block, b"\0")
    out = []
    for pad in (0x36, 0x5C):
        h = ctypes.create_string_buffer(_CTX)
        getattr(lib, f"{prefix}_Init")(h)
        getattr(lib, f"{prefix}_Update")(h, bytes(b ^ pad for b in k), ctypes.c_size_t(block))
        out.append(np.frombuffer(h.raw, dtype=np.uint8).copy())
    if len(cache) >= 8:
        cache.pop(next(iter(cache)))
    cache[(key, mac_id)] = got = (out[0], out[1])
    return got


def hmac_rows(
    buf: Any, starts: np.ndarray, lens: np.ndarray, key: bytes, mac_id: int
) -> np.ndarray | None:
    """Full HMAC digests ``(n, digest length)`` of ``buf[s:s+l]`` for every row, or None
    when the kernel is not to be used (disabled, unavailable, fewer than
    :data:`MIN_ROWS` rows, an unknown hash): then the caller runs the py-copy loop."""
    n = len(starts)
    if n < MIN_ROWS or not _enabled or mac_id not in _ALGS:
        return None
    st = _load()
    if "error" in st:
        return None
    arr = buf if isinstance(buf, np.ndarray) else np.frombuffer(buf, dtype=np.uint8)
    s = np.ascontiguousarray(starts, dtype=np.int64)
    ln = np.ascontiguousarray(lens, dtype=np.int64)
    if int(s.min()) < 0 or int(ln.min()) < 0 or int((s + ln).max()) > arr.size:
        raise ValueError("row outside the buffer")
    ictx, octx = _states(st, key, mac_id)
    _prefix, csize, _block, dlen = _ALGS[mac_id]
    out = np.empty((n, dlen), dtype=np.uint8)
    st["jit"].hmac_loop(arr, s, ln, ictx, octx, out, mac_id, csize, dlen)
    return out


def _objects(pkts: Any) -> tuple[dict[str, Any], np.ndarray] | None:
    """The loaded kernel and an object array of ``pkts`` (its buffer holds the object
    pointers the loops read), or None when the object loops are not to be used."""
    n = len(pkts)
    if n < MIN_ROWS or not _enabled:
        return None
    st = _load()
    if "error" in st or st["layout"] is None:
        return None
    objs = np.empty(n, dtype=object)
    try:
        objs[:] = pkts  # pointers (with references) to the items, whatever they are
    except (ValueError, TypeError):  # items numpy takes for sequences of equal shape
        return None
    return st, objs


def object_heads(
    pkts: Any, width: int, out: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray] | None:
    """``(rows (n, width) uint8, lens int64)``: the first ``width`` octets of every
    datagram of ``pkts`` (zero-filled) and its length, read in place; None when the
    kernel is not to be used or an item is not exactly ``bytes``.  ``out``: a C-contiguous
    uint8 array of at least ``n * width`` octets to hold the rows (reused warm memory)."""
    got = _objects(pkts)
    if got is None:
        return None
    st, objs = got
    n = len(objs)
    if out is not None and out.size >= n * width and out.flags.c_contiguous:
        rows = out.reshape(-1)[: n * width].reshape(n, width)
    else:
        rows = np.empty((n, width), dtype=np.uint8)
    lens = np.empty(n, dtype=np.int64)
    tb, off = st["layout"]
    if st["jit"].object_heads(objs.ctypes.data, n, tb, off, rows, lens) >= 0:
        return None
    return rows, lens


class VerifyCall:
    """A prepared :func:`verify_objects` call: everything that needs the GIL is done
    by :func:`prepare_verify` (in the caller's thread); :meth:`run` is the compiled
    loop alone, so a background thread holds the GIL only to enter and leave it."""

    __slots__ = ("args", "outs", "_jit", "_objs")

    def __init__(self, jit: Any, objs: np.ndarray, args: tuple[Any, ...], outs: tuple[np.ndarray, ...]) -> None:
        # _objs: the object array whose buffer the loop reads (and its references)
        self._jit, self._objs, self.args, self.outs = jit, objs, args, outs

    def run(self, threads: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
        """``(ok, tags, heads, lens)``, or None if an item is not exactly ``bytes``."""
        tags, ok, heads, lens = self.outs
        n = len(ok)
        if threads > 1 and n >= 2 * MIN_ROWS:
            # one parallel region at a time: numba's fallback threading layer (workqueue,
            # without libgomp or tbb) aborts the process on concurrent launches
            with _par_lock:
                par = _parallel(_state, threads)
                bad = par.verify_objects_parallel(*self.args, *self.outs, min(threads, n // MIN_ROWS))
        else:
            bad = self._jit.verify_objects(*self.args, *self.outs)
        if bad >= 0:
            return None
        return ok, tags, heads, lens


def prepare_verify(
    pkts: Any,
    moffs: np.ndarray,
    goffs: np.ndarray,
    key: bytes,
    mac_id: int,
    km: int,
    head: int = 16,
) -> VerifyCall | None:
    """The call :func:`verify_objects` makes, prepared (None: kernel not to be used)."""
    if mac_id not in _ALGS or km > _ALGS[mac_id][3]:
        return None
    got = _objects(pkts)
    if got is None:
        return None
    st, objs = got
    n = len(objs)
    mo = np.ascontiguousarray(moffs, dtype=np.int64)
    go = np.ascontiguousarray(goffs, dtype=np.int64)
    if len(mo) != n or len(go) != n:
        raise ValueError("one MAC and one Group MAC offset per datagram")
    ictx, octx = _states(st, key, mac_id)
    _prefix, csize, block, dlen = _ALGS[mac_id]
    outs = (
        np.empty((n, km), dtype=np.uint8),
        np.empty(n, dtype=np.bool_),
        np.empty((n, head), dtype=np.uint8),
        np.empty(n, dtype=np.int64),
    )
    tb, off = st["layout"]
    args = (objs.ctypes.data, n, tb, off, mo, go, km, ictx, octx, mac_id, csize, dlen, block)
    return VerifyCall(st["jit"], objs, args, outs)


def verify_objects(
    pkts: Any,
    moffs: np.ndarray,
    goffs: np.ndarray,
    key: bytes,
    mac_id: int,
    km: int,
    head: int = 16,
    threads: int = 1,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
    """Verify the TESLA MAC of every datagram of ``pkts`` in place (MAC field of ``km``
    octets at ``moffs``, Group MAC field at ``goffs`` or -1, both read as zeros: RFC
    5776 §3.3.1) with HMAC keyed with ``key``.  Returns ``(ok, tags (n, km), heads (n,
    head), lens)``, or None when the kernel is not to be used (then nothing was done).
    ``threads`` > 1: the rows are shared among that many native threads (numba
    ``prange``; compiled on first use)."""
    call = prepare_verify(pkts, moffs, goffs, key, mac_id, km, head)
    return None if call is None else call.run(threads)


def match_columns(
    rows: np.ndarray, cols: np.ndarray, r: int, lens: np.ndarray, end: int, left: np.ndarray
) -> np.ndarray:
    """``left & (lens >= end) & (rows[:, cols] == rows[r, cols]).all(axis=1)``: the
    datagrams whose header octets at ``cols`` equal datagram r's (compiled when the
    kernel is loaded, numpy otherwise).  Columns outside the rows raise ValueError: the
    compiled loop does not check its indices (issue 15)."""
    if len(cols) and (int(cols.min()) < 0 or int(cols.max()) >= rows.shape[1]):
        raise ValueError("column outside the rows")
    if not 0 <= r < len(rows) or len(lens) != len(rows) or len(left) != len(rows):
        raise ValueError("row outside the rows")
    if _enabled and len(rows) >= MIN_ROWS:
        st = _load()
        if "error" not in st:
            return st["jit"].match_columns(rows, cols, r, lens, end, left)
    return np.asarray((rows[:, cols] == rows[r, cols]).all(axis=1) & (lens >= end) & left)


def rows_equal(rows: np.ndarray, value: np.ndarray) -> np.ndarray:
    """``(rows == value).all(axis=1)`` for ``(n, w)`` uint8 rows and a ``w``-octet value."""
    if _enabled and len(rows) >= MIN_ROWS:
        st = _load()
        if "error" not in st:
            return st["jit"].rows_equal(rows, value)
    return np.asarray((rows == value).all(axis=1))


def _parallel(st: dict[str, Any], threads: int) -> Any:
    """The ``prange`` module (imported, and so compiled or loaded from the cache, on
    first use), with numba's thread count for the calling thread set to ``threads``."""
    par = st.get("par")
    if par is None:
        # idle OpenMP threads sleep instead of spinning (GNU libgomp's default spins for a
        # while after each region, taking a core from the thread that parses on); read by
        # libgomp when numba loads it, at the first parallel launch; a user's setting wins
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        from tesla import _mackernel_par

        par = st["par"] = _mackernel_par
    import numba

    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))  # type: ignore[attr-defined]
    return par


def warm_up(threads: int = 1) -> bool:
    """Load every loop now (from numba's disk cache, or compile it: seconds the first
    time) with the argument types the receive and send paths use, so that a live
    receiver does not stall on its first interval, a stall that would make the datagrams
    read after it arrive late for the safe-packet test.  Returns whether the kernel is
    in use."""
    if not available():
        return False
    n = MIN_ROWS * 2
    pkts = [bytes(range(k, k + 64)) for k in range(n)]
    key = bytes(32)
    for buf in (b"".join(pkts), bytearray(b"".join(pkts))):  # read-only and writable
        hmac_rows(buf, np.arange(0, 64 * n, 64), np.full(n, 64), key, 2)
    mo, go = np.full(n, 8, dtype=np.int64), np.full(n, -1, dtype=np.int64)
    verify_objects(pkts, mo, go, key, 2, 16)
    if threads > 1:
        verify_objects(pkts, mo, go, key, 2, 16, threads=threads)
    got = object_heads(pkts, 128, np.empty(n * 128, dtype=np.uint8))
    assert got is not None
    rows, lens = got
    match_columns(rows, np.arange(4, dtype=np.intp), 0, lens, 4, np.ones(n, dtype=bool))
    value = np.frombuffer(key[:16], dtype=np.uint8)
    rows_equal(rows[:, 8:24], value)  # a strided column range, and a contiguous copy
    rows_equal(np.ascontiguousarray(rows[:, 8:24]), value)
    return True


class Objects:
    """A list of ``bytes`` datagrams held for the kernel: their lengths, read in place
    (:func:`lengths_of`), and :meth:`copy_into` to pack them into a buffer."""

    __slots__ = ("objs", "lens", "_st")

    def __init__(self, objs: np.ndarray, lens: np.ndarray, st: dict[str, Any]) -> None:
        self.objs, self.lens, self._st = objs, lens, st

    def copy_into(self, dst: np.ndarray, starts: np.ndarray) -> None:
        """Datagram k to ``dst[starts[k] : starts[k] + lens[k]]`` (one memcpy each)."""
        s = np.ascontiguousarray(starts, dtype=np.int64)
        if len(s) != len(self.lens) or not dst.flags.writeable:
            raise ValueError("one start per datagram, in a writable buffer")
        if len(s) and (int(s.min()) < 0 or int((s + self.lens).max()) > dst.size):
            raise ValueError("row outside the buffer")
        _off = self._st["layout"][1]
        self._st["jit"].pack_objects(
            self.objs.ctypes.data, len(s), _off, dst.ctypes.data, s, self.lens
        )


def lengths_of(pkts: Any) -> Objects | None:
    """The lengths of ``pkts`` read in place (and a handle to copy them), or None when
    the kernel is not to be used or an item is not exactly ``bytes``."""
    got = _objects(pkts)
    if got is None:
        return None
    st, objs = got
    lens = np.empty(len(objs), dtype=np.int64)
    if st["jit"].object_lengths(objs.ctypes.data, len(objs), st["layout"][0], lens) >= 0:
        return None
    return Objects(objs, lens, st)
