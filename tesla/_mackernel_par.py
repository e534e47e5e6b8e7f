"""The multi-threaded form of :func:`tesla._mackernel_jit.verify_objects` (numba
``prange`` over row ranges, native threads, no GIL).  A module of its own: a parallel
function takes seconds to compile the first time, so only receivers asking for threads
pay it (then it is loaded from numba's on-disk cache)."""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from tesla._mackernel_jit import verify_objects


@njit(cache=True, nogil=True, parallel=True)
def verify_objects_parallel(
    objs, n, type_bytes, data_off, moffs, goffs, km, ictx, octx, alg, csize, dlen, block,
    tags, ok, heads, lens, nchunks,
):
    """:func:`verify_objects` over ``nchunks`` row ranges in parallel; same outputs,
    same return value (the first row that is not ``bytes``, or -1)."""
    bad = np.full(nchunks, -1, np.int64)
    for c in prange(nchunks):
        a = n * c // nchunks
        b = n * (c + 1) // nchunks
        r = verify_objects(
            objs + 8 * a, b - a, type_bytes, data_off, moffs[a:b], goffs[a:b], km, ictx, octx,
            alg, csize, dlen, block, tags[a:b], ok[a:b], heads[a:b], lens[a:b],
        )
        if r >= 0:
            bad[c] = a + r
    for c in range(nchunks):
        if bad[c] >= 0:
            return bad[c]
    return -1
