"""The native MAC kernel: HMAC (RFC 2104) over many rows in one call (issues 6, 12).

Why: the best per-packet MAC Python itself can do is one ``cryptography`` HMAC keyed
once and ``copy()``/``update()``/``finalize()``-ed per packet (the py-copy loop).  Those
three calls cost more than the hashing below ~1 KiB, which caps a receiver at about 0.4x
the OpenSSL HMAC rate for 64-octet packets whatever the rest of it does.

What: ``tesla.mac._mac``, a small C extension (Python limited API, abi3; source
``tesla/mac/_mac.c``) built at install time by setuptools (``setup.py``).  It keys two
OpenSSL EVP digest states once per call (RFC 2104 §4 "precomputation") and, per row,
copies the inner state, absorbs the row, finishes, and does the same with the outer
state, all through libcrypto's public EVP API, without the GIL.  On x86-64 CPUs with the
SHA extensions, SHA-256 (TESLA's default) and SHA-1 run on the extension's own SHA-256 /
SHA-1 over those instructions instead (the EVP copy allocates per packet, which costs
~60 ns of a 64-octet packet's ~250); where the CPU and OS also have AVX-512, calls of
10 rows or more hash SHA-256 sixteen rows at a time on it (``sha256_x16.h``; SHA-NI
is throughput-bound, so two interleaved rows gain little; ``TESLA_MAC_X16=0`` or the
extension's ``set_x16(False)`` keeps them on SHA-NI).  Datagrams are read
through ``PyBytes_AsStringAndSize`` or the buffer protocol (held for the loop); rows
and fields are checked against their buffers in C before any hashing, so no argument
can make it read outside a buffer.

Fallback: when the extension is missing (no compiler at install), fails its
known-answer check against ``cryptography``'s HMAC at load, or ``TESLA_MAC_KERNEL=0`` is
in the environment (or :func:`set_enabled` (False)), :func:`hmac_rows` and the object
loops return None and callers use the py-copy loop; :func:`mac_arena` computes the same
tags in Python.  A missing or failing extension is said in one line on stderr, once.
Importing this module changes nothing in the process; the extension is loaded on
first use.
"""

from __future__ import annotations

import importlib
import os
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

__all__ = [
    "available",
    "describe",
    "hmac_rows",
    "mac_arena",
    "set_enabled",
    "sealer",
    "MIN_ROWS",
    "why_unavailable",
]

#: rows from which the kernel is used (below: the py-copy loop)
MIN_ROWS = 8

#: TESLA PRF/MAC registry value (RFC 5776 §5) -> hashlib / cryptography name
HASH_NAMES = {0: "sha1", 1: "sha224", 2: "sha256", 3: "sha384", 4: "sha512"}
_HASH_IDS = {v: k for k, v in HASH_NAMES.items()}
_DIGEST = {0: 20, 1: 28, 2: 32, 3: 48, 4: 64}

_lock = threading.Lock()
_state: dict[str, Any] = {}
_enabled = os.environ.get("TESLA_MAC_KERNEL", "1").strip().lower() not in ("0", "no", "off", "")
_pool: ThreadPoolExecutor | None = None
_pool_size = 0


def set_enabled(on: bool) -> None:
    """Use the kernel (True, if available) or always the pure-Python paths (False)."""
    global _enabled
    _enabled = on


def _load() -> dict[str, Any]:
    """Import the extension and check it once (``{"error": ...}`` if it cannot be used:
    then one line on stderr says so)."""
    with _lock:
        if _state:
            return _state
        try:
            # by name: whether the extension was built must not change what mypy sees
            _mac: Any = importlib.import_module("tesla.mac._mac")

            try:
                _known_answers(_mac)
            except RuntimeError as e:
                if not _mac.sha_ni() or not ("sha256" in str(e) or "sha1" in str(e)):
                    raise
                # the SHA-instruction path of SHA-1/-256 failed: the OpenSSL EVP path alone
                _mac.set_sha_ni(False)
                _known_answers(_mac)
                print(f"tesla: {e} on the SHA-NI path; using OpenSSL EVP", file=sys.stderr)
            if getattr(_mac, "x16", None) and _mac.x16():
                try:
                    _known_x16(_mac)
                except RuntimeError as e:  # the sixteen-lane path alone is refused
                    _mac.set_x16(False)
                    print(f"tesla: {e} on the AVX-512 path; using SHA-NI", file=sys.stderr)
            _state["mod"] = _mac
            _state["path"] = getattr(_mac, "__file__", "tesla.mac._mac")
            if not _state.get("fused"):
                print(
                    "tesla: the native MAC kernel predates the receiver's lane and "
                    "verify_arena (rebuild tesla/mac/_mac.c); the receiver uses its numpy lane",
                    file=sys.stderr,
                )
        except Exception as e:  # noqa: BLE001 - any failure means: use the fallback
            _state["error"] = f"{type(e).__name__}: {e}"
            print(
                f"tesla: native MAC kernel unavailable ({_state['error']}); "
                "using the pure-Python MAC loop",
                file=sys.stderr,
            )
        return _state


def _known_answers(mod: Any) -> None:
    """Every hash, short and long keys (longer than the block), odd lengths, and a
    datagram with its fields read as zeros, against ``cryptography``'s HMAC."""
    msgs = [b"", b"abc", bytes(range(64)), bytes(range(256)) * 3 + b"\x01"]
    buf = b"".join(msgs)
    ln = np.array([len(m) for m in msgs], dtype=np.int64)
    st = np.cumsum(ln) - ln
    for alg in HASH_NAMES:
        for key in (b"key", bytes(range(32)), bytes(range(200))):
            out = np.empty((len(msgs), mod.digest_size(alg)), dtype=np.uint8)
            mod.hmac_rows(alg, key, buf, st, ln, out)
            for k, m in enumerate(msgs):
                if out[k].tobytes() != _py_hmac(key, m, alg):
                    raise RuntimeError(f"known-answer check failed for {HASH_NAMES[alg]}")
        key = bytes(range(40))
        m = msgs[3]
        zeroed = m[:8] + bytes(16) + m[24:100] + bytes(4) + m[104:]
        one = np.zeros(1, dtype=np.int64)
        out = np.empty((1, mod.digest_size(alg)), dtype=np.uint8)
        mod.mac_arena(
            alg, key, m, one, np.array([len(m)]), one + 8, 16, one + 100, 4, out
        )
        if out[0].tobytes() != _py_hmac(key, zeroed, alg):
            raise RuntimeError(f"known-answer check (zeroed fields) failed for {HASH_NAMES[alg]}")
        _known_pairs(mod, alg, key, m)
        if hasattr(mod, "seal"):  # the sender's tag: header of 2 words, EXT_AUTH after it
            pkt = bytes([16, 0, 2, 0, 1, 2, 3, 4]) + m
            pre = bytes([1, 3, 0x02, 0, 0, 0, 0, 7])
            km = min(10, mod.digest_size(alg))
            (got,) = mod.seal(alg, key, [pkt], 2, (pre,), b"\0", km, -1, None, None, None)
            L = (len(pre) + km + 3) // 4 * 4
            want = bytearray(pkt[:2] + bytes([2 + L // 4]) + pkt[3:8] + pre + bytes(L - len(pre)) + pkt[8:])
            want[8 + len(pre) : 8 + len(pre) + km] = _py_hmac(key, bytes(want), alg)[:km]
            if got != bytes(want):
                raise RuntimeError(f"known-answer check (sender tag) failed for {HASH_NAMES[alg]}")
        if not (hasattr(mod, "verify_arena") and hasattr(mod, "lane")):
            continue  # an extension built before them: the receiver does without
        _state["fused"] = True
        # the receiver's fused call: the datagram carrying its own tag verifies and is cut
        tagged = m[:8] + _py_hmac(key, zeroed, alg)[:16] + m[24:]
        tags = np.empty((1, 16), dtype=np.uint8)
        ok = np.zeros(1, dtype=np.uint8)
        cut = mod.verify_arena(
            alg, key, tagged, one, np.array([len(m)]), one + 8, 16, one + 100, 4, tags, ok
        )
        if not ok[0] or cut != [tagged] or tags[0].tobytes() != tagged[8:24]:
            raise RuntimeError(f"known-answer check (verify_arena) failed for {HASH_NAMES[alg]}")
        if hasattr(mod, "chain_walk"):
            _known_chain(mod, alg)
        if hasattr(mod, "start_job"):  # the same in native threads started for it
            _known_job(mod, alg, key, tagged, m)


def _known_chain(mod: Any, alg: int) -> None:
    """chain_walk: 9 steps below a key of the digest size and below a longer one, every
    key and every third one, against ``cryptography``'s HMAC step by step."""
    size = mod.digest_size(alg)
    for key in (bytes(range(size)), bytes(range(200))):
        want, k = [], key
        for _ in range(9):
            k = _py_hmac(k, b"\x00", alg)
            want.append(k)
        want.reverse()  # K_0 .. K_8
        for every in (1, 3):
            got = mod.chain_walk(alg, key, 9, b"\x00", every)
            if got != b"".join(want[::every]):
                raise RuntimeError(f"known-answer check (chain_walk) failed for {HASH_NAMES[alg]}")
    _state["chains"] = True


def _known_job(mod: Any, alg: int, key: bytes, tagged: bytes, m: bytes) -> None:
    """start_job / finish_job: 70 rows (the tagged datagram, every 7th one damaged),
    started in two threads and finished by the caller; and with no thread (the caller
    hashes all)."""
    rows = 70
    st = np.arange(rows, dtype=np.int64) * len(tagged)
    buf = bytearray(tagged * rows)
    for k in range(0, rows, 7):
        buf[int(st[k]) + 40] ^= 1  # outside both fields: that MAC no longer matches
    want = np.array([k % 7 != 0 for k in range(rows)], dtype=np.uint8)
    ln = np.full(rows, len(m), dtype=np.int64)
    for nt in (2, 0):
        tags = np.empty((rows, 16), dtype=np.uint8)
        ok = np.zeros(rows, dtype=np.uint8)
        job = mod.start_job(
            alg, key, bytes(buf), st, ln, np.full(rows, 8), 16, np.full(rows, 100), 4, tags, ok, nt
        )
        mod.finish_job(job)
        if not mod.job_done(job) or not np.array_equal(ok, want) or bytes(tags[3]) != tagged[8:24]:
            raise RuntimeError(f"known-answer check (start_job) failed for {HASH_NAMES[alg]}")
    _state["jobs"] = True


def _known_pairs(mod: Any, alg: int, key: bytes, m: bytes) -> None:
    """Several rows of different lengths in one call (the kernel hashes rows two at a
    time, each lane taking the next row when its own is done) with their fields at
    different offsets, in one thread and in two: each the HMAC of its zeroed row."""
    rows = [(0, 0, -1, -1), (5, 64, 40, -1), (0, 769, 60, 3), (100, 56, -1, 50), (30, 200, 190, 0)]
    of, ln, mo, go = (np.array(c, dtype=np.int64) for c in zip(*rows, strict=True))
    want = []
    for s, n, a, b in rows:
        z = bytearray(m[s : s + n])
        if a >= 0:
            z[a : a + 10] = bytes(10)
        if b >= 0:
            z[b : b + 4] = bytes(4)
        want.append(_py_hmac(key, bytes(z), alg))
    args = (alg, key, m, of, ln, mo, 10, go, 4)
    for threads in (1, 2):
        out = np.empty((len(rows), mod.digest_size(alg)), dtype=np.uint8)
        try:
            mod.mac_arena(*args, out, threads)
            _state["nthreads"] = True
        except TypeError:  # an extension built before nthreads: rows in Python threads
            mod.mac_arena(*args, out)
            _state["nthreads"] = False
        if [r.tobytes() for r in out] != want:
            raise RuntimeError(f"known-answer check (rows in pairs) failed for {HASH_NAMES[alg]}")


def _known_x16(mod: Any) -> None:
    """21 rows of different lengths (across the padding and block boundaries, one
    empty) in one call, with the MAC and Group MAC fields at different offsets (read as
    zeros, RFC 5776 §3.3.1): enough rows for the AVX-512 path, lanes that take a second
    row, and lanes left to SHA-NI at the end; each digest the HMAC of its zeroed row."""
    m = bytes((7 * i + 3) & 0xFF for i in range(2200))
    lens = [0, 1, 55, 56, 57, 63, 64, 65, 119, 120, 128, 200, 700, 769, 1400, 2100, 10, 183,
            184, 1024, 333]
    rows = []
    for k, n in enumerate(lens):
        mo = (k * 37) % (n - 9) if n > 10 else -1
        go = (k * 61 + 5) % (n - 3) if n > 4 and k % 3 else -1
        rows.append((k * 3, n, mo, go))
    key = bytes(range(32))
    want = []
    for s, n, a, b in rows:
        z = bytearray(m[s : s + n])
        if a >= 0:
            z[a : a + 10] = bytes(10)
        if b >= 0:
            z[b : b + 4] = bytes(4)
        want.append(_py_hmac(key, bytes(z), 2))
    of, ln, mo_, go_ = (np.array(c, dtype=np.int64) for c in zip(*rows, strict=True))
    out = np.empty((len(rows), 32), dtype=np.uint8)
    mod.mac_arena(2, key, m, of, ln, mo_, 10, go_, 4, out, 1)
    if [r.tobytes() for r in out] != want:
        raise RuntimeError("known-answer check (16 lanes) failed for sha256")


def _py_hmac(key: bytes, data: bytes, alg: int) -> bytes:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.hmac import HMAC

    h = HMAC(key, getattr(hashes, HASH_NAMES[alg].upper())())
    h.update(data)
    return h.finalize()


def available() -> bool:
    """Whether the native kernel is used (loads it on first call)."""
    return _enabled and "error" not in _load()


def why_unavailable() -> str | None:
    """Why the kernel is not used (None when it is)."""
    if not _enabled:
        return "disabled (TESLA_MAC_KERNEL=0 or set_enabled(False))"
    return _load().get("error")


def describe() -> str:
    """One line for reports: what computes the MACs."""
    if not available():
        return f"off ({why_unavailable()}): py-copy loop"
    mod = _state["mod"]
    sha = "SHA-1/-256 on SHA-NI, other hashes " if mod.sha_ni() else ""
    if getattr(mod, "x16", None) and mod.x16():
        sha = "SHA-256 on AVX-512 x16 (>= 10 rows), " + sha
    return f"native C, {sha}over {mod.openssl_version()} EVP ({os.path.basename(_state['path'])})"


def _mod() -> Any:
    """The extension when it is to be used, else None."""
    if not _enabled:
        return None
    return _load().get("mod")


def chain_walk(prf_id: int, key: bytes, n: int, msg: bytes, every: int = 1) -> bytes | None:
    """The key chain below ``key`` = K_n in one native call (``_mac.chain_walk``: K_{t-1}
    = HMAC(K_t, ``msg``), t = n..1, about 0.3 us a step with SHA-NI, ~1 us in Python):
    K_t for t = 0, ``every``, 2 ``every``, ... below n, back to back.  None when the
    kernel is not to be used (the caller walks in Python)."""
    mod = _mod()
    if mod is None or not _state.get("chains"):
        return None
    out: bytes = mod.chain_walk(_hash_id(prf_id), key, n, msg, every)
    return out


def lane() -> Any:
    """The native lane of :class:`tesla.core.receiver.TeslaReceiver` (``_mac.lane``: layout
    classes, safe window, disclosed key, NORM sequence and bounds checked per datagram,
    copied into the interval arenas, in one call per batch), or None when the kernel is
    not to be used (the receiver's numpy lane then)."""
    mod = _mod_fused()
    return None if mod is None else mod.lane


def fused() -> bool:
    """Whether the kernel is used and has the receiver's entries (``lane``,
    ``verify_arena``: an extension built from an older ``_mac.c`` has not)."""
    return _mod_fused() is not None


def _mod_fused() -> Any:
    """The extension when it is to be used and has the receiver's entries (``lane``,
    ``verify_arena``), else None."""
    mod = _mod()
    return mod if mod is not None and _state.get("fused") else None


def _i64(a: Any) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.int64)


def hmac_rows(
    buf: Any, starts: np.ndarray, lens: np.ndarray, key: bytes, mac_id: int
) -> np.ndarray | None:
    """Full HMAC digests ``(n, digest length)`` of ``buf[s:s+l]`` for every row, or None
    when the kernel is not to be used (disabled, unavailable, fewer than
    :data:`MIN_ROWS` rows, an unknown hash): then the caller runs the py-copy loop.
    ValueError if a row is outside ``buf``."""
    n = len(starts)
    if n < MIN_ROWS or mac_id not in HASH_NAMES:
        return None
    mod = _mod()
    if mod is None:
        return None
    out = np.empty((n, _DIGEST[mac_id]), dtype=np.uint8)
    mod.hmac_rows(mac_id, key, buf, _i64(starts), _i64(lens), out)
    return out


def sealer(mac_id: int) -> Any:
    """The kernel's sender function ``seal`` (EXT_AUTH insertion and MAC of whole batches,
    see ``tesla/mac/_mac.c``) for MAC hash ``mac_id``, or None when the kernel is not to be
    used (disabled, unavailable, an unknown hash, an extension built before ``seal``):
    then the caller runs its Python path."""
    if mac_id not in HASH_NAMES:
        return None
    mod = _mod()
    return getattr(mod, "seal", None) if mod is not None else None


def _hash_id(hash_name: str | int) -> int:
    if isinstance(hash_name, int):
        if hash_name not in HASH_NAMES:
            raise ValueError(f"unknown TESLA MAC/PRF hash {hash_name}")
        return hash_name
    alg = _HASH_IDS.get(hash_name.lower().replace("-", "").replace("_", ""))
    if alg is None:
        raise ValueError(f"unknown hash {hash_name!r}")
    return alg


def mac_arena(
    hash_name: str | int,
    key: bytes,
    arena: Any,
    offsets: Any,
    lengths: Any,
    mac_offsets: Any,
    mac_len: int,
    gmac_offsets: Any,
    gmac_len: int,
    threads: int = 1,
) -> np.ndarray:
    """HMAC of every datagram of an interval arena: ``tags[k]`` (full digest, shape
    ``(n, digest length)``) of ``arena[offsets[k] : offsets[k] + lengths[k]]`` with its
    ``mac_len`` octets at ``mac_offsets[k]`` and ``gmac_len`` octets at
    ``gmac_offsets[k]`` (offsets within the datagram, -1: no field) read as zeros, RFC
    5776 §3.3.1 (fields may overlap; the union is zero).  Nothing is written into the
    arena.  ``hash_name``: "sha1" .. "sha512" or the TESLA registry value.  ValueError
    (nothing computed) if a datagram is outside the arena or a field outside its
    datagram.  Native without the GIL when the kernel is loaded (the datagrams shared
    among ``threads`` native threads), else in Python."""
    alg = _hash_id(hash_name)
    of, ln, mo, go = _i64(offsets), _i64(lengths), _i64(mac_offsets), _i64(gmac_offsets)
    n = len(of)
    if not (len(ln) == len(mo) == len(go) == n):
        raise ValueError("one length, MAC offset and Group MAC offset per datagram")
    out = np.empty((n, _DIGEST[alg]), dtype=np.uint8)
    mod = _mod()
    if mod is not None:
        nt = _native_threads(threads, n)
        if nt > 1:
            mod.mac_arena(alg, key, arena, of, ln, mo, int(mac_len), go, int(gmac_len), out, nt)
        else:
            mod.mac_arena(alg, key, arena, of, ln, mo, int(mac_len), go, int(gmac_len), out)
        return out
    # the pure-Python path: the same checks, then zeroed copies through the py-copy loop
    mv = memoryview(arena).cast("B")
    size = mv.nbytes
    if mac_len < 0 or gmac_len < 0:
        raise ValueError("negative field length")
    for k in range(n):
        s, m, a, b = int(of[k]), int(ln[k]), int(mo[k]), int(go[k])
        if s < 0 or m < 0 or s + m > size:
            raise ValueError(f"datagram {k} outside the arena")
        if (a != -1 and (a < 0 or a + mac_len > m)) or (b != -1 and (b < 0 or b + gmac_len > m)):
            raise ValueError(f"datagram {k}: a field outside the datagram")
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.hmac import HMAC

    copy = HMAC(key, getattr(hashes, HASH_NAMES[alg].upper())()).copy
    for k in range(n):
        s, m, a, b = int(of[k]), int(ln[k]), int(mo[k]), int(go[k])
        z = bytearray(mv[s : s + m])
        if a >= 0:
            z[a : a + mac_len] = bytes(mac_len)
        if b >= 0:
            z[b : b + gmac_len] = bytes(gmac_len)
        h = copy()
        h.update(bytes(z))
        out[k] = np.frombuffer(h.finalize(), dtype=np.uint8)
    return out


def verify_arena(
    hash_name: str | int,
    key: bytes,
    arena: Any,
    offsets: Any,
    lengths: Any,
    mac_offsets: Any,
    mac_len: int,
    gmac_offsets: Any,
    gmac_len: int,
    threads: int = 1,
    cut: bool = True,
) -> tuple[np.ndarray, np.ndarray, list[bytes] | None] | None:
    """:func:`mac_arena` and the tag comparison in one native call: ``(ok, tags,
    datagrams)``, ``ok[k]`` whether datagram k's ``mac_len``-octet MAC field (``tags[k]``,
    as received) equals its HMAC truncated to ``mac_len``, and the octets of the ok
    datagrams as ``bytes`` in order (each cut right after it was hashed, while in cache),
    shared among ``threads`` threads; ``cut=False``: no datagrams (None), the hashing in
    one stretch without the GIL.  None when the kernel is not to be used."""
    mod = _mod_fused()
    if mod is None:
        return None
    of, ln, mo, go = _i64(offsets), _i64(lengths), _i64(mac_offsets), _i64(gmac_offsets)
    n = len(of)
    tags = np.empty((n, mac_len), dtype=np.uint8)
    ok = np.empty(n, dtype=np.bool_)
    alg = _hash_id(hash_name)
    ok8 = ok.view(np.uint8)

    def part(a: int, b: int) -> list[bytes]:
        return mod.verify_arena(
            alg, key, arena, of[a:b], ln[a:b], mo[a:b], int(mac_len), go[a:b],
            int(gmac_len), tags[a:b], ok8[a:b], cut,
        )

    nt = _native_threads(threads, n)
    if nt > 1:  # the kernel's own threads: all hashed without the GIL, then the cut
        got1 = mod.verify_arena(
            alg, key, arena, of, ln, mo, int(mac_len), go, int(gmac_len), tags, ok8, cut, nt
        )
        return ok, tags, got1 if cut else None
    if threads < 2 or n < MIN_ROWS * threads:
        got1 = part(0, n)
        return ok, tags, got1 if cut else None
    # shares of the rows in the kernel's threads, the first in this one (hashing runs
    # without the GIL; the cut of each 64 rows takes it briefly)
    cuts = [n * j // threads for j in range(threads + 1)]
    ex = _executor(threads - 1)
    futs = [ex.submit(part, a, b) for a, b in zip(cuts[1:-1], cuts[2:], strict=True)]
    got = part(cuts[0], cuts[1])
    for f in futs:
        got.extend(f.result())
    return ok, tags, got if cut else None


class ArenaJob:
    """An interval's MACs being computed by native threads (:func:`verify_arena_task`):
    ``done()`` whether :meth:`result` would not wait; ``result()`` hashes the rows no
    thread has taken yet in the calling thread (instead of waiting for them), waits for
    the threads and raises what the native call raised; ``ok`` and ``tags`` are complete
    after it."""

    __slots__ = ("_mod", "_job")

    def __init__(self, mod: Any, job: Any) -> None:
        self._mod = mod
        self._job = job

    def done(self) -> bool:
        return bool(self._mod.job_done(self._job))

    def result(self) -> None:
        self._mod.finish_job(self._job)


def verify_arena_task(
    hash_name: str | int,
    key: bytes,
    arena: Any,
    offsets: Any,
    lengths: Any,
    mac_offsets: Any,
    mac_len: int,
    gmac_offsets: Any,
    gmac_len: int,
    threads: int = 1,
) -> tuple[ArenaJob, np.ndarray, np.ndarray] | None:
    """:func:`verify_arena` without the cut, started in ``threads`` native threads while
    the caller goes on: ``(job, ok, tags)``, ``ok`` and ``tags`` filled once
    ``job.result()`` returned (:class:`ArenaJob`).  No Python thread runs it, so it
    starts without waiting for the GIL.  None when the kernel is not to be used or was
    built before these jobs (then the caller verifies with :func:`verify_arena`)."""
    mod = _mod_fused()
    if mod is None or not _state.get("jobs"):
        return None
    of, ln, mo, go = _i64(offsets), _i64(lengths), _i64(mac_offsets), _i64(gmac_offsets)
    n = len(of)
    tags = np.empty((n, mac_len), dtype=np.uint8)
    ok = np.empty(n, dtype=np.bool_)
    job = mod.start_job(
        _hash_id(hash_name), key, arena, of, ln, mo, int(mac_len), go, int(gmac_len), tags,
        ok.view(np.uint8), max(0, min(threads, MAX_THREADS)),
    )
    return ArenaJob(mod, job), ok, tags


#: at most this many native threads per call (``MAX_THREADS`` in tesla/mac/_mac.c)
MAX_THREADS = 16


def _native_threads(threads: int, n: int) -> int:
    """Native threads for a call of n rows: 1 for few rows (under :data:`MIN_ROWS` per
    thread) or an extension built before ``nthreads``."""
    if threads < 2 or n < MIN_ROWS * threads or not _state.get("nthreads"):
        return 1
    return min(threads, MAX_THREADS)


def _executor(threads: int) -> ThreadPoolExecutor:
    """The kernel's thread pool (created on first use, grown when more threads are
    asked for)."""
    global _pool, _pool_size
    with _lock:
        if _pool is None or _pool_size < threads:
            old = _pool
            _pool = ThreadPoolExecutor(threads, thread_name_prefix="tesla-mac")
            _pool_size = threads
            if old is not None:
                old.shutdown(wait=False)
        return _pool


def warm_up(threads: int = 1) -> bool:
    """Load the kernel now (import and known-answer check), so that a live receiver does
    not pay it on its first interval; with ``threads`` > 1 start the thread pool too.
    Returns whether the kernel is in use."""
    if not available():
        return False
    if threads > 1:
        _executor(threads - 1)
    return True


class Objects:
    """A sequence of datagrams held for the kernel: their lengths
    (:func:`lengths_of`), and :meth:`copy_into` to pack them into a buffer."""

    __slots__ = ("pkts", "lens", "_mod")

    def __init__(self, pkts: Any, lens: np.ndarray, mod: Any) -> None:
        self.pkts, self.lens, self._mod = pkts, lens, mod

    def copy_into(self, dst: np.ndarray, starts: np.ndarray) -> None:
        """Datagram k to ``dst[starts[k] : starts[k] + lens[k]]`` (one memcpy each);
        ValueError (nothing written) if one does not fit or ``dst`` is read-only."""
        s = _i64(starts)
        if len(s) != len(self.lens) or not dst.flags.writeable:
            raise ValueError("one start per datagram, in a writable buffer")
        if self._mod.pack(self.pkts, dst, s) >= 0:
            raise ValueError("an item is no longer a buffer")


def lengths_of(pkts: Any) -> Objects | None:
    """The lengths of ``pkts`` (and a handle to copy them), or None when the kernel is
    not to be used or an item is not a buffer."""
    n = len(pkts)
    if n < MIN_ROWS:
        return None
    mod = _mod()
    if mod is None:
        return None
    lens = np.empty(n, dtype=np.int64)
    if mod.heads(pkts, np.empty(0, dtype=np.uint8), lens) >= 0:
        return None
    return Objects(pkts, lens, mod)
