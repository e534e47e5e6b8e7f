"""Datagrams that stay where they were received: rows of one buffer.

A :class:`Rows` is the batch entry's ``datagrams`` sequence (``Sequence[bytes]``,
:mod:`alc.engine`) for datagrams already held in one buffer: the rows of a ``recvmmsg``
slab (:meth:`Rows.of_slab`), or the accepted datagrams of a TESLA interval arena
(``tesla.core.receiver``).  Indexing makes a ``bytes`` copy of one datagram, as any
engine expects; a consumer that works on many rows at once asks :meth:`Rows.block` for
a run of equal-length rows as one 2-D view, without copying them (the ALC receiver's
bulk path copies the payloads from there straight into its block buffers).

The buffer is the caller's: a Rows is valid only during the call it is passed to (the
slab is read again by the next ``recvmmsg``, an arena's storage goes to the next
interval).  An engine keeps ``bytes`` items, never the sequence or a view of it;
:meth:`Rows.invalidate` makes any later use raise instead of reading reused storage.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, overload

import numpy as np


class Rows(Sequence[bytes]):
    """Datagram k is ``buf[starts[k] : starts[k] + lens[k]]`` (``buf`` 1-D uint8)."""

    __slots__ = ("buf", "starts", "lens", "_n", "_stride")

    def __init__(
        self, buf: np.ndarray | None, starts: np.ndarray, lens: np.ndarray, stride: int = 0
    ) -> None:
        self.buf = buf
        self.starts = starts
        self.lens = lens
        self._n = len(lens)
        self._stride = stride  # > 0: starts[k] = starts[0] + k * stride (a slab)

    @classmethod
    def of_slab(cls, slab: Any) -> Rows:
        """The datagrams of a :class:`alc.mmsg.Slab`'s last batch (row k at k * width)."""
        n = slab.count
        return cls(
            slab.data.reshape(-1),
            np.arange(0, n * slab.width, slab.width, dtype=np.int64),
            slab.lengths[:n],
            slab.width,
        )

    def __len__(self) -> int:
        return self._n

    @overload
    def __getitem__(self, k: int) -> bytes: ...

    @overload
    def __getitem__(self, k: slice) -> list[bytes]: ...

    def __getitem__(self, k: int | slice) -> bytes | list[bytes]:
        if isinstance(k, slice):
            return [self[j] for j in range(*k.indices(self._n))]
        buf = self.buf
        if buf is None:
            raise ValueError("rows used after the call they were passed to")
        if k < 0:
            k += self._n
        if not 0 <= k < self._n:
            raise IndexError("row index out of range")
        s = int(self.starts[k])
        return buf[s : s + int(self.lens[k])].tobytes()

    def block(self, k0: int, m: int, width: int) -> np.ndarray | None:
        """Rows ``k0 .. k0+m-1`` as a read-only ``(m, width)`` view when they lie at one
        stride of at least ``width`` octets and each is at least ``width`` long (the
        caller checks equal lengths); None otherwise (the caller copies)."""
        buf = self.buf
        if buf is None or m < 1 or k0 < 0 or k0 + m > self._n:
            return None
        if int(self.lens[k0 : k0 + m].min()) < width:
            return None
        s0 = int(self.starts[k0])
        if self._stride:  # a slab's rows: one stride by construction
            stride = self._stride
        else:
            st = self.starts[k0 : k0 + m]
            stride = int(st[1] - st[0]) if m > 1 else width
            if m > 2 and not bool((np.diff(st) == stride).all()):
                return None
        if stride < width:
            return None
        end = s0 + (m - 1) * stride + width
        if s0 < 0 or end > len(buf):
            return None
        view = np.ndarray((m, width), np.uint8, buf, s0, (stride, 1))
        view.flags.writeable = False
        return view

    def invalidate(self) -> None:
        """The buffer goes back to its owner: any later use raises."""
        self.buf = None
