"""Per-position cap of the TESLA receive buffer (issue 15: a flood of forged copies).

Why: until its key is disclosed (d intervals later) a datagram cannot be told from a
forgery, so everything that passes the safe-packet test is buffered, bounded by the
buffer's byte limit and per-interval packet cap.  A flood of forged copies of the real
datagrams (same headers, another payload or MAC) filled those bounds: with 300 copies
per legitimate datagram the real datagrams arriving next were refused (``evicted``)
and delivery failed.

Rule: a datagram's *position* is what identifies it to the ALC/NORM engine, i.e. its
header without the MAC (and Group MAC) field: ALC the LCT header with its extensions
and the 8 octets after it (the FEC Payload ID, RFC 5775 §4.2; 4 or 8 octets by
scheme); NORM the message header (RFC 5740 §4) without the sequence number (octets
2-3), which a sender increments per message (a retransmission keeps its position).
Within one interval, only the first :data:`DEFAULT_COPIES_PER_POSITION` datagrams of a
position are kept; later ones are dropped (``drop.flood``).  A forged copy sent after
the real datagram it copies can therefore never displace it, whatever the number of
copies.  Forgeries at other positions (invented TOIs/ESIs) are not distinguishable
before the key and stay under the byte bound and the older-interval eviction rule.

Cost: the cap is applied lazily, only when a buffer bound is reached (so the normal
receive path and the batch lanes are unchanged), and incrementally: each interval
remembers how far it was scanned and a table of position hashes (SipHash of the key
octets, Python's per-process randomized ``hash``), so every buffered datagram is
hashed at most once.  The tables have their own budget, a fraction
(:data:`TABLE_BUDGET_FRACTION`) of the buffer bound, each entry costing
:data:`ENTRY_COST` octets (memory an unauthenticated datagram made us allocate): the
scan stops when the budget is used (a flood of distinct positions, where the cap
cannot help anyway), and the budget returns when the interval is verified or evicted.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

__all__ = [
    "DEFAULT_COPIES_PER_POSITION", "ENTRY_COST", "TABLE_BUDGET_FRACTION", "PositionCap",
    "remap_commits",
]

#: datagrams kept per position and interval (a sender may repeat a position inside one
#: interval: NORM repairs, a short FLUTE carousel; identical copies are ``duplicate``)
DEFAULT_COPIES_PER_POSITION = 4
#: octets counted per position-table entry (dict slot + int object)
ENTRY_COST = 96
#: position tables of all pending intervals together: at most this fraction of the
#: buffer bound (counted at ENTRY_COST per entry)
TABLE_BUDGET_FRACTION = 1 / 16


class PositionCap:
    """Applies the per-position cap to pending intervals (see module doc).

    ``hb``: octet of the header-length field (2: LCT, 1: NORM); ``km``: MAC length;
    ``overhead``: octets accounted per buffered datagram beyond its length."""

    def __init__(
        self, hb: int, km: int, overhead: int, copies: int = DEFAULT_COPIES_PER_POSITION
    ) -> None:
        self.hb = hb
        self.km = km
        self.overhead = overhead
        self.copies = copies

    def _key(self, d: bytes, mo: int, go: int) -> int:
        """Hash of the position of datagram ``d`` (MAC field at ``mo``, Group MAC at
        ``go`` or -1)."""
        end = d[self.hb] << 2
        if self.hb == 2:
            end += 8  # the FEC Payload ID follows the LCT header
            head = d[:mo]
        else:
            head = d[:2] + d[4:mo]  # NORM: not the sequence number
        tail = d[mo + self.km : end]
        if go > mo:
            g = go - mo - self.km
            tail = tail[:g] + tail[g + 4 :]
        return hash((head, tail))

    def scan(
        self, table: dict[int, int], rows: Iterable[tuple[bytes, int, int]], room: int
    ) -> tuple[list[int], int, int]:
        """The cap over ``rows`` (``(datagram, MAC offset, Group MAC offset or -1)``, in
        arrival order) with position table ``table`` (updated): ``(rows kept, rows
        scanned, octets of the rows dropped)``, row numbers from 0.  New table entries
        cost :data:`ENTRY_COST` each out of ``room`` (octets left in the table budget):
        the scan stops where the next entry would not fit."""
        cap = self.copies
        key = self._key
        keep: list[int] = []
        freed = 0
        charge = 0
        j = -1
        for j, (d, mo, go) in enumerate(rows):
            h = key(d, mo, go)
            c = table.get(h, 0)
            if c >= cap:
                freed += len(d) + self.overhead
                continue
            if not c:
                if charge + ENTRY_COST > room:
                    return keep, j, freed  # no room for the entry: scanned up to here
                charge += ENTRY_COST
            table[h] = c + 1
            keep.append(j)
        return keep, j + 1, freed

    def compact(self, pend: Any, room: int) -> tuple[int, int]:
        """Scan the datagrams buffered in ``pend`` (lists ``pkts``, ``metas``, ``moffs``,
        ``goffs``, ``commits``) since the last call and drop those beyond the first
        ``copies`` of their position (:meth:`scan`; the rest is scanned at a later call).
        Returns ``(datagrams dropped, octets they freed)``."""
        pkts = pend.pkts
        n = len(pkts)
        start = pend.scanned
        if start >= n:
            return 0, 0
        if pend.positions is None:
            pend.positions = {}
        rows = zip(pkts[start:], pend.moffs[start:], pend.goffs[start:], strict=True)
        kept, scanned, freed = self.scan(pend.positions, rows, room)
        keep = [start + j for j in kept]
        dropped = scanned - len(keep)
        if dropped:
            keep.extend(range(start + scanned, n))
            self._cut(pend, start, keep, n)
        pend.scanned = start + len(kept)
        pend.nbytes -= freed
        return dropped, freed

    @staticmethod
    def _cut(pend: Any, start: int, keep: list[int], n: int) -> None:
        """Keep only rows ``keep`` (all >= ``start``) of the tail of every list of
        ``pend``; Type 3 commitments follow their datagrams."""
        for name in ("pkts", "metas", "moffs", "goffs"):
            lst = getattr(pend, name)
            tail = [lst[j] for j in keep]
            del lst[start:]
            lst.extend(tail)
        pend.commits[:] = remap_commits(pend.commits, start, keep, n)


def remap_commits(
    commits: list[tuple[Any, bytes]], start: int, keep: list[int], n: int
) -> list[tuple[Any, bytes]]:
    """Type 3 commitments ``(row or rows, commitment)`` of ``n`` rows after only rows
    ``:start`` and ``keep`` (all >= ``start``, increasing) are kept: row numbers renumbered,
    those of dropped rows gone."""
    if not commits:
        return commits
    remap = np.full(n, -1, dtype=np.int64)
    remap[:start] = np.arange(start)
    remap[np.asarray(keep, dtype=np.int64)] = np.arange(start, start + len(keep))
    out: list[tuple[Any, bytes]] = []
    for idx, c in commits:
        if type(idx) is int:
            r = int(remap[idx])
            if r >= 0:
                out.append((r, c))
        else:
            r_a = remap[np.asarray(idx, dtype=np.int64)]
            r_a = r_a[r_a >= 0]
            if len(r_a):
                out.append((r_a, c))
    return out

