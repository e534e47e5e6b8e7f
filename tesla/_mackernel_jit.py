"""The numba-compiled loop of :mod:`tesla.mackernel` (imported by it once libcrypto's
symbols are loaded into the process; not to be imported directly).

The ``SHA*_Update``/``SHA*_Final`` functions are declared by symbol name
(``numba.types.ExternalFunction``), so the compiled code holds no process-specific
address and is cached on disk.  Pointers are passed as ``uintp`` (the same register
class as a pointer on every ABI numba targets)."""

from __future__ import annotations

import numpy as np
from numba import carray, njit, types
from numba.extending import intrinsic

_P = types.uintp
#: MAC and Group MAC fields end within this many octets of a datagram (any UDP datagram)
_SCRATCH = 65536
_UPD = types.intc(_P, _P, _P)
_FIN = types.intc(_P, _P)

SHA1_Update = types.ExternalFunction("SHA1_Update", _UPD)
SHA1_Final = types.ExternalFunction("SHA1_Final", _FIN)
SHA224_Update = types.ExternalFunction("SHA224_Update", _UPD)
SHA224_Final = types.ExternalFunction("SHA224_Final", _FIN)
SHA256_Update = types.ExternalFunction("SHA256_Update", _UPD)
SHA256_Final = types.ExternalFunction("SHA256_Final", _FIN)
SHA384_Update = types.ExternalFunction("SHA384_Update", _UPD)
SHA384_Final = types.ExternalFunction("SHA384_Final", _FIN)
SHA512_Update = types.ExternalFunction("SHA512_Update", _UPD)
SHA512_Final = types.ExternalFunction("SHA512_Final", _FIN)
# libc's, by symbol too: a byte loop or a numba slice copy is 3x slower for short rows
memcpy = types.ExternalFunction("memcpy", _P(_P, _P, _P))
memset = types.ExternalFunction("memset", _P(_P, types.intc, _P))


@njit(cache=True, nogil=True, inline="always")
def _update(alg: int, ctx: int, data: int, n: int) -> None:
    if alg == 2:
        SHA256_Update(ctx, data, n)
    elif alg == 0:
        SHA1_Update(ctx, data, n)
    elif alg == 1:
        SHA224_Update(ctx, data, n)
    elif alg == 3:
        SHA384_Update(ctx, data, n)
    else:
        SHA512_Update(ctx, data, n)


@njit(cache=True, nogil=True, inline="always")
def _final(alg: int, md: int, ctx: int) -> None:
    if alg == 2:
        SHA256_Final(md, ctx)
    elif alg == 0:
        SHA1_Final(md, ctx)
    elif alg == 1:
        SHA224_Final(md, ctx)
    elif alg == 3:
        SHA384_Final(md, ctx)
    else:
        SHA512_Final(md, ctx)


@njit(cache=True, nogil=True, inline="always")
def _outer(alg: int, ctx: int, md: int, octx: int, csize: int, dlen: int, dst: int) -> None:
    """Finish the inner hash in ``ctx`` into ``md``, then the outer one (state ``octx``)
    over it into ``dst`` (``dst`` may be ``md``)."""
    _final(alg, md, ctx)
    memcpy(ctx, octx, csize)
    _update(alg, ctx, md, dlen)
    _final(alg, dst, ctx)


@njit(cache=True, nogil=True)
def hmac_loop(
    buf: np.ndarray,
    starts: np.ndarray,
    lens: np.ndarray,
    ictx: np.ndarray,
    octx: np.ndarray,
    out: np.ndarray,
    alg: int,
    csize: int,
    dlen: int,
) -> None:
    """``out[k] = HMAC(buf[starts[k]:starts[k] + lens[k]])`` from the inner and outer
    states (RFC 2104 §4: the key pads absorbed once); rows already bounds-checked."""
    work = np.empty(ictx.shape[0], np.uint8)
    md = np.empty(64, np.uint8)
    wa = work.ctypes.data
    ma = md.ctypes.data
    ia = ictx.ctypes.data
    oc = octx.ctypes.data
    ba = buf.ctypes.data
    oa = out.ctypes.data
    stride = out.shape[1]
    for k in range(starts.shape[0]):
        memcpy(wa, ia, csize)
        _update(alg, wa, ba + starts[k], lens[k])
        _outer(alg, wa, ma, oc, csize, dlen, oa + k * stride)


# ------------------------------------------------------------ reading ``bytes`` objects
# The receive paths hold their datagrams as ``bytes`` objects.  Rather than packing
# them into one buffer first (a copy of every octet), these loops read them in place
# through the CPython object layout, which :mod:`tesla.mackernel` verifies at load time
# (``ob_type`` and ``ob_size`` words, data at ``bytes.__basicsize__ - 1``) and passes in.


@intrinsic
def _u64_ptr(typingctx, addr):  # type: ignore[no-untyped-def]
    """An integer address as a ``uint64*``."""
    sig = types.CPointer(types.uint64)(addr)

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        return builder.inttoptr(args[0], context.get_value_type(signature.return_type))

    return sig, codegen


@njit(cache=True, nogil=True)
def object_heads(
    objs: int, n: int, type_bytes: int, data_off: int, rows: np.ndarray, lens: np.ndarray
) -> int:
    """For the n objects whose pointers are at address ``objs``: ``lens[k]`` = length,
    ``rows[k]`` = the first ``rows.shape[1]`` octets (zero-filled past the end).  Returns
    the index of the first object that is not exactly ``bytes`` (then stops), or -1."""
    ptrs = carray(_u64_ptr(objs), (n,))
    P = rows.shape[1]
    ra = rows.ctypes.data
    for k in range(n):
        hdr = carray(_u64_ptr(ptrs[k]), (3,))  # ob_refcnt, ob_type, ob_size
        if hdr[1] != type_bytes:
            return k
        ln = np.int64(hdr[2])
        lens[k] = ln
        m = min(ln, P)
        memcpy(ra + k * P, ptrs[k] + data_off, m)
        if m < P:
            memset(ra + k * P + m, 0, P - m)
    return -1


@njit(cache=True, nogil=True)
def verify_objects(
    objs: int,
    n: int,
    type_bytes: int,
    data_off: int,
    moffs: np.ndarray,
    goffs: np.ndarray,
    km: int,
    ictx: np.ndarray,
    octx: np.ndarray,
    alg: int,
    csize: int,
    dlen: int,
    block: int,
    tags: np.ndarray,
    ok: np.ndarray,
    heads: np.ndarray,
    lens: np.ndarray,
) -> int:
    """Verify the TESLA MAC of n ``bytes`` datagrams in place (RFC 5776 §3.3.1): the
    HMAC goes over the datagram with its ``km``-octet MAC field at ``moffs[k]`` and its
    4-octet Group MAC field at ``goffs[k]`` (-1: none) read as zeros (nothing is
    written into the datagram).  Out: ``tags[k]`` = MAC
    field as received, ``ok[k]`` = it equals the HMAC truncated to ``km``, ``heads[k]``
    = first octets (zero-filled), ``lens[k]``.  A field outside its datagram is not read
    (``ok[k]`` False).  Returns the index of the first object that is not exactly
    ``bytes`` (then stops), or -1."""
    ptrs = carray(_u64_ptr(objs), (n,))
    H = heads.shape[1]
    work = np.empty(ictx.shape[0], np.uint8)
    md = np.empty(64, np.uint8)
    scratch = np.empty(_SCRATCH + 128, np.uint8)  # the field blocks (fields end by _SCRATCH)
    wa = work.ctypes.data
    ma = md.ctypes.data
    ia = ictx.ctypes.data
    oc = octx.ctypes.data
    sa = scratch.ctypes.data
    ha = heads.ctypes.data
    ta = tags.ctypes.data
    for k in range(n):
        hdr = carray(_u64_ptr(ptrs[k]), (3,))
        if hdr[1] != type_bytes:
            return k
        ln = np.int64(hdr[2])
        lens[k] = ln
        base = ptrs[k] + data_off
        m = min(ln, H)
        memcpy(ha + k * H, base, m)
        if m < H:
            memset(ha + k * H + m, 0, H - m)
        mo = moffs[k]
        go = goffs[k]
        if mo < 0 or mo + km > ln or km > 64 or (go >= 0 and go + 4 > ln) or max(mo + km, go + 4) > _SCRATCH:
            ok[k] = False
            memset(ta + k * km, 0, km)
            continue
        memcpy(ta + k * km, base + mo, km)
        if go >= 0 and go < mo + km and mo < go + 4:  # overlapping fields: not a layout
            ok[k] = False  # the receiver produces
            continue
        # the whole blocks holding the fields are copied with the fields zeroed, the
        # rest is absorbed in place: one extra hash call, block-aligned input
        fe = max(mo + km, go + 4)
        cut = min(ln, (fe + block - 1) // block * block)
        memcpy(sa, base, cut)
        memset(sa + mo, 0, km)
        if go >= 0:
            memset(sa + go, 0, 4)
        memcpy(wa, ia, csize)
        _update(alg, wa, sa, cut)
        if cut < ln:
            _update(alg, wa, base + cut, ln - cut)
        _outer(alg, wa, ma, oc, csize, dlen, ma)
        same = True
        for j in range(km):
            if md[j] != tags[k, j]:
                same = False
                break
        ok[k] = same
    return -1


# ------------------------------------------------------------ row compares of the lane
@njit(cache=True, nogil=True)
def match_columns(
    rows: np.ndarray, cols: np.ndarray, r: int, lens: np.ndarray, end: int, left: np.ndarray
) -> np.ndarray:
    """``left & (lens >= end) & (rows[:, cols] == rows[r, cols]).all(axis=1)``."""
    n = rows.shape[0]
    out = np.zeros(n, np.bool_)
    ref = rows[r]
    for k in range(n):
        if not left[k] or lens[k] < end:
            continue
        row = rows[k]
        same = True
        for c in cols:
            if row[c] != ref[c]:
                same = False
                break
        out[k] = same
    return out


@njit(cache=True, nogil=True)
def rows_equal(rows: np.ndarray, value: np.ndarray) -> np.ndarray:
    """``(rows == value).all(axis=1)`` for a 2-D uint8 ``rows`` (any strides)."""
    n, w = rows.shape
    out = np.empty(n, np.bool_)
    for k in range(n):
        same = True
        for j in range(w):
            if rows[k, j] != value[j]:
                same = False
                break
        out[k] = same
    return out


@njit(cache=True, nogil=True)
def object_lengths(objs: int, n: int, type_bytes: int, lens: np.ndarray) -> int:
    """``lens[k]`` = length of object k; the index of the first that is not exactly
    ``bytes`` (then stops), or -1."""
    ptrs = carray(_u64_ptr(objs), (n,))
    for k in range(n):
        hdr = carray(_u64_ptr(ptrs[k]), (3,))
        if hdr[1] != type_bytes:
            return k
        lens[k] = np.int64(hdr[2])
    return -1


@njit(cache=True, nogil=True)
def pack_objects(objs: int, n: int, data_off: int, dst: int, starts: np.ndarray, lens: np.ndarray) -> None:
    """Copy object k's ``lens[k]`` octets to ``dst + starts[k]`` (lengths and types from
    :func:`object_lengths`, destination checked by the caller)."""
    ptrs = carray(_u64_ptr(objs), (n,))
    for k in range(n):
        memcpy(dst + starts[k], ptrs[k] + data_off, lens[k])
