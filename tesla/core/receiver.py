"""The TESLA receiver: RFC 5776 §4.3 for ALC and NORM, one class, batches of datagrams.

:class:`TeslaReceiver` owns the whole receive-side state of one TESLA sender.  Its entry
is :meth:`TeslaReceiver.receive_batch` (datagrams with one arrival time each, e.g. one
``recvmmsg``); :meth:`~TeslaReceiver.receive` is that entry with one datagram.  Per
datagram, in the order of RFC 5776 §4.3:

1. locate the one TESLA EXT_AUTH of our ASID (the header-extension area from the codecs,
   ``alc.lct.ext_region`` / ``norm.messages.header_regions``, walked by
   ``alc.ext.walk_extensions``: :meth:`~TeslaReceiver._locate`), check its type/length
   against the session; Types 0 and 6 are signalling (:meth:`~TeslaReceiver._bootstrap`,
   :meth:`~TeslaReceiver._sync_response`); before a valid bootstrap (and in direct mode
   a D_t) every other packet is dropped (``no_bootstrap``);
2. NORM replay (§6.2.2): the 16-bit sequence of accepted messages per source
   (:meth:`~TeslaReceiver._norm_replayed`), for a datagram of an interval whose key is
   already legitimate: only such a datagram can be a copy of an accepted one (i is under
   the MAC), and only for it does the 16-bit sequence compare without ambiguity (the
   d+1 intervals in flight may hold more than 2^15 messages: 1.6 Gbit/s, T_int 100 ms);
3. safe-packet test on the arrival time: safe iff ``floor((T + D_t - T0)/T_int) < i + d``,
   and a tag of an interval the sender cannot have reached is refused too; both bounds are
   exact float thresholds per interval (:meth:`~TeslaReceiver._interval_bounds`); a tag of
   an interval whose key is already legitimate is unsafe (§6.2);
4. Group MAC (if the session uses it), disclosed key (new-index / key-verification test
   against the chain's commitment, :meth:`~TeslaReceiver._check_key`), chain switch flush
   (§4.4), congestion control hint (step 5, :attr:`~TeslaReceiver.cc_hint`);
5. buffered in its interval's arena (:class:`Arena`: the octets copied once, on arrival,
   into preallocated storage with an offset/length index; :meth:`~TeslaReceiver._buffer`,
   within the bounds below);
6. when K_w becomes legitimate the interval's MACs are computed over its arena in one call
   (:func:`mac_arena`, the MAC and Group MAC fields read as zeros, RFC 5776 §3.3.1), the tags
   compared as an array, duplicates released once, Type 3 commitments stored, and the
   accepted datagrams queued in arrival order for the ALC/NORM engine
   (:meth:`~TeslaReceiver._authenticate`, :meth:`~TeslaReceiver.pop_authenticated`).

Steps 1-5 are written once, for one datagram, in :meth:`~TeslaReceiver._receive_one`.  Its
one vectorized twin is the *lane*: runs of datagrams whose header layout equals that of a
representative (the octets the scalar walk read, compared) and whose interval is already
buffering, inside its safe window, with the interval's verified key (NORM: newer than the
source's highest accepted sequence), are appended to the arena in bulk.  With the native
kernel the lane is one C call per run (``lane`` in ``tesla/mac/_mac.c``,
:meth:`~TeslaReceiver._native_lane`: layout classes learned from datagrams by the codec
walk, :meth:`~TeslaReceiver._learn_class`; rows read from the datagram list or straight
from a ``recvmmsg`` slab, :meth:`~TeslaReceiver.receive_slab`); without it the same
conditions in numpy (:meth:`~TeslaReceiver._lane`).  Whatever the lane cannot decide goes
to ``_receive_one`` at its position, so the decisions are those of the scalar path
(``tests/tesla_oracle.py`` is an independent scalar model; ``tests/test_fastpath.py``
compares them on damaged, adversarial, reordered streams, kernel on and off).

Verification (step 6) with the native kernel is one call per interval
(``mackernel.verify_arena``): MACs, tag comparison and the cut of each accepted datagram
right after it is hashed; with ``release_rows`` (what the session sets before an ALC
engine) no cut: the accepted datagrams are released as rows of the arena
(:class:`alc.rows.Rows`, :meth:`~TeslaReceiver.pop_released`), which the engine copies
from, and the arena is given back by :meth:`~TeslaReceiver.released_done`.
With ``verify_threads`` > 1 an interval of at least
``BACKGROUND_MIN_OCTETS`` is hashed by native threads started for it (no Python thread)
while this thread goes on buffering, and finished (:meth:`~TeslaReceiver._join`: this
thread hashes the rows they have not reached) at fixed points: before anything that
depends on it, or by its timer ``BACKGROUND_JOIN_AFTER`` after the datagram that started
it; a smaller one is shared among the threads synchronously.

Memory bound (stated formula): ``B = max_buffered_bytes``, ``P = max_packets_per_interval``,
``O = PER_PACKET_OVERHEAD``.  The accounted buffer (``buffered_bytes``) charges
``len(datagram) + O`` for every datagram buffered in an arena *and* for every accepted
datagram released and not yet taken by :meth:`pop_authenticated` (the released copies
are resident as the arena was; ``O`` covers the larger per-datagram overhead of the two:
arena index row, metas slot and slab stride slack, or ``bytes`` header, malloc rounding
and two list slots).  An interval's copies are charged before its arena's charge ends
(:meth:`~TeslaReceiver._retire`: for the length of that one call both are resident).
With ``release_rows`` there are no copies: the arena stays charged as it was until
:meth:`~TeslaReceiver.released_done` (or the next pop) gives it back.
The replay memory (the accepted tags of the last ``REPLAY_MEMORY_INTERVALS`` intervals,
``len(tags) + REPLAY_ENTRY_OVERHEAD`` each, ``stats["replay_bytes"]``) is charged too,
and only ever takes room nothing else needs: it is shed oldest interval first before a
datagram or a release's copies would not fit, and an interval's tags are not kept
without room (a late copy is then counted ``unsafe``, not ``replay``: dropped all the
same).  Every arriving datagram is held to B (each interval to P datagrams).  Eviction
rule: when a datagram does not fit (the replay memory shed first), whole intervals are
evicted oldest first (the one whose
key is most overdue) while the oldest is older than the datagram's interval; otherwise
the datagram is dropped; both count ``drop.evicted``.  A caller that pops after each
batch thus needs (stated formula) ``((d + 1) x rate x T_int + 1) x (size + O)``: when K_i
arrives, intervals i .. i+d-1 are buffered, interval i's copies are charged at its
release, and the datagram carrying K_i is buffered (§4.3 step 5) before interval i is
verified (step 6); the charge of released copies is not evicted, so the peak may pass a
smaller B by one interval's copies.

Arena rule: an arena's storage is a private anonymous mapping of its own
(:func:`arena_storage`; huge pages asked for from ``HUGEPAGE_MIN`` octets), of
``ARENA_MIN`` octets or 1.125 x the octets of the interval before it, whichever is
larger; it doubles when full, in place (:meth:`Arena.remap`, ``mremap``: nothing copied,
never two copies resident; a copy only where that cannot be done).  A page becomes
resident only when written, so an arena's resident memory is its octets in use (<= its
charge) rounded up to the page.  When an interval is released its mapping is kept for
reuse (up to ``ARENA_SPARES``) as a *warm spare* if the bound has room for its resident
pages: they are charged to the buffer (``stats["warm_bytes"]``; in the arena that reuses
them, the datagrams written take over their charge), so the next interval writes
without page faults (the
receiver's CPU time per 1400-octet datagram: ~1300 ns warm, ~1450 ns when every interval
faults its pages in again); as soon as a datagram, a release's copies or the replay
memory would not fit, the warm pages are given back first (:func:`cold`,
``MADV_DONTNEED``: a spare's all, a buffering arena's beyond its octets in use) and their
charge with them.  Without room (a bound at the formula) every released or evicted
arena's pages are given back at once.  The capacity of all arenas and
spares (:attr:`TeslaReceiver.arena_bytes`) never exceeds B: an allocation that would
pass it first drops the spares, then returns the slack of every arena; the octets in
use being below the accounted buffer, the datagram always fits.  The arenas are the
only copy of the buffered datagrams (the objects handed in are not kept; accepted ones
are cut from the arena at release).  So resident memory for buffering is the accounted
buffer, plus what is not charged: at most ``MAX_EVENTS`` undrained events, per-interval
index copies and batch arrays (small against the datagrams), and popped copies the
allocator keeps for the next interval's (at most the charge they had).  Measured
(``tesla-mcast bench``'s memory part, 200,000 datagrams/s of 1400 B, T_int 100 ms, d 2,
B = the formula): 84.7 MiB accounted at most (the formula exactly), RSS growth 0.79x of
it at the end of the run, peak (``VmHWM``) 1.09x; before (warm spares, copies
uncharged): 55.8 MiB accounted, RSS growth 2.2-2.3x.  A longer run (70 intervals at
50,000/s, B 64 MiB: the replay memory fills up): 26.1 MiB accounted, RSS growth 0.92x
at the end, peak 1.15x (before: 3.02x; 1.13x / 1.39x while the replay memory was not
charged).
Nothing stays forever: an interval whose key is ``key_wait`` s overdue is evicted by
:meth:`~TeslaReceiver.expire` (``stale``), and :meth:`~TeslaReceiver.close` evicts all.

Every drop is counted in ``stats["drop.<reason>"]`` (:class:`DropReason`) and queued as a
:class:`Dropped` event.
"""

from __future__ import annotations

import math
import mmap
import struct
from array import array
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from operator import itemgetter
from typing import TYPE_CHECKING, Any

import numpy as np
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.hmac import HMAC

from alc.errors import DecodeError
from alc.ext import walk_extensions
from alc.lct import ext_region
from alc.rows import Rows
from norm.messages import CMD_FLUSH, CMD_SQUELCH, NORM_CMD, NORM_DATA, header_regions
from tesla.core import extauth as ea
from tesla.core.authenticator import (
    HDR_LEN_OFFSET,
    PROTO_ALC,
    ControlTemplate,
    control_header,
    insert_ext,
)
from tesla.core.bootstrap_sig import verify as sig_verify
from tesla.core.crypto import F_prime, MacContext, hash_algorithm
from tesla.core.floodguard import (
    DEFAULT_COPIES_PER_POSITION,
    ENTRY_COST,
    TABLE_BUDGET_FRACTION,
    PositionCap,
    remap_commits,
)
from tesla.core.keychain import KeyStatus, KeyVerifierSet
from tesla.core.ntp import NTP_ONE_SECOND, NTP_UNIX_EPOCH_OFFSET, ntp_from_wire, posix_to_ntp
from tesla.core.params import MAC_LEN, PRF_KEY_LEN, ParamError, TeslaParams
from tesla.core.ratelimit import SignatureGate, source_of
from tesla.core.timesync import DirectSyncClient, indirect_dt_from_ms

if TYPE_CHECKING:
    from alc.mmsg import Slab
    from tesla.mac.kernel import ArenaJob
    from tesla.mac.workers import WorkerPool

__all__ = [
    "DROP_REASONS",
    "PER_PACKET_OVERHEAD",
    "Arena",
    "Bootstrapped",
    "DropReason",
    "Dropped",
    "MacFunction",
    "MemoMacs",
    "NewChain",
    "TeslaReceiver",
    "TimeSynchronized",
    "mac_arena",
]


class DropReason(StrEnum):
    """Why a datagram never reaches the engine (counter ``drop.<value>``)."""

    UNSAFE = "unsafe"  # safe-packet test failed, or K_i already legitimate (§4.3 step 2)
    BAD_MAC = "bad_mac"  # TESLA MAC mismatch (step 6)
    BAD_KEY = "bad_key"  # disclosed key not on the chain (step 4)
    BAD_GROUP_MAC = "bad_group_mac"  # Group MAC mismatch or missing (step 3)
    REPLAY = "replay"  # copy of an accepted datagram, NORM sequence replay (§6.2)
    EVICTED = "evicted"  # buffer bound (module doc: eviction rule)
    MALFORMED = "malformed"  # no / several / inconsistent EXT_AUTH, bad header
    NO_BOOTSTRAP = "no_bootstrap"  # before the bootstrap (and D_t)
    BAD_SIGNATURE = "bad_signature"  # bootstrap / sync response signature
    FLUSHED = "flushed"  # chain hopeless (§4.4)
    DUPLICATE = "duplicate"  # second authenticated copy of a buffered datagram
    STALE = "stale"  # key never came (key_wait), or session closed
    FLOOD = "flood"  # beyond the per-position cap at a buffer bound (tesla/core/floodguard.py)
    RATE_LIMITED = "rate_limited"  # no RSA budget for a signalling datagram (tesla/core/ratelimit.py)


DROP_REASONS = tuple(r.value for r in DropReason)
_DROP_KEY = {r: "drop." + r.value for r in DropReason}


@dataclass(frozen=True)
class Bootstrapped:
    """A valid bootstrap: the session parameters are known (§4.2)."""

    params: TeslaParams


@dataclass(frozen=True)
class TimeSynchronized:
    """D_t (2^-32 s units) is known: safe-packet tests can run."""

    d_t: int


@dataclass(frozen=True)
class NewChain:
    """The commitment of chain ``chain`` is stored."""

    chain: int


@dataclass(frozen=True)
class Dropped:
    """``count`` datagrams dropped for ``reason``."""

    reason: DropReason
    count: int


#: accounted octets per datagram beyond its length, buffered or released and not yet
#: popped: the larger of the arena's (index row 32 (+1/8 ``array`` growth), metas slot 8,
#: slab stride slack <= 32: 76) and the released copy's (``bytes`` header 33, malloc
#: chunk rounding <= 23, two list slots 16: 72)
PER_PACKET_OVERHEAD = 80
#: drop a tag whose interval the sender cannot have reached yet (digest §7 choice)
REJECT_FUTURE_INTERVAL = True
#: intervals whose accepted tags are remembered to classify late copies as replays
REPLAY_MEMORY_INTERVALS = 64
#: accounted octets per remembered interval beyond its tags (bytes object, dict entry)
REPLAY_ENTRY_OVERHEAD = 160
#: events kept when nobody drains :meth:`TeslaReceiver.next_event` (oldest dropped)
MAX_EVENTS = 1024
#: seconds after an interval's key was due after which its datagrams are ``stale``
DEFAULT_KEY_WAIT = 10.0
#: NORM sequence replay window (RFC 5776 §6.2.2), in messages
NORM_SEQ_WINDOW = 4096
#: seconds beyond the clock-error bound within which a first bootstrap's interval index
#: must match the receiver's clock (else ``unsafe``, no RSA): issue 15
BOOTSTRAP_TIME_SLACK = 60.0
#: signature hashes accepted in a bootstrap (TESLA-SIG-CRYPTO-FUNC; SHA-1 refused)
DEFAULT_ALLOWED_SIG_HASHES = frozenset({2, 3, 4, 5})
#: smallest arena (octets) preallocated for an interval (pages untouched until used)
ARENA_MIN = 4 << 20
#: arena storage from this many octets asks for transparent huge pages (numpy's threshold)
HUGEPAGE_MIN = 4 << 20
#: finished arenas kept for reuse (one interval ends as the next begins)
ARENA_SPARES = 1
#: batches of fewer datagrams take the scalar path only (the lane's numpy setup costs more)
LANE_MIN = 8
#: octets of each datagram packed for the lane (header through the tag)
LANE_PREFIX = 128
#: header layouts and intervals per lane run
LANE_MAX_CLASSES = 4
#: layout octets of one class of the native lane (``LANE_COLS`` in tesla/mac/_mac.c)
LANE_COLS = 32
#: intervals the native lane adds to in one call (``tesla/mac/_mac.c``: at most 8)
LANE_SLOTS = 8
#: intervals of this many octets are verified in native threads of their own
#: (verify_threads > 1; smaller ones in shares among threads, synchronously: starting
#: threads costs tens of microseconds, the hashing of a small interval not much more)
BACKGROUND_MIN_OCTETS = 1 << 20
#: an interval verified in native threads of its own is finished at the latest this long
#: (receiver time: arrival times) after the datagram whose key started it, by the timer
#: (:meth:`TeslaReceiver.expire`), unless a decision needs it before (the scalar path,
#: the next verification, the stats, :meth:`TeslaReceiver.flush`): points of the
#: datagram and timer sequence, never "when its threads are done", so a replay releases
#: the same datagrams at the same points whatever the threads did
BACKGROUND_JOIN_AFTER = 0.001
#: intervals from this many datagrams may use the worker pool / several threads
POOL_MIN_PACKETS = 256

_I = struct.Struct("!I")
_POSIX_OFFSET_NTP = NTP_UNIX_EPOCH_OFFSET * NTP_ONE_SECOND
#: TESLA MAC function type -> hash name (RFC 5776 §7.4)
HASH_NAME = {0: "sha1", 1: "sha224", 2: "sha256", 3: "sha384", 4: "sha512"}
_MAC_ID = {v: k for k, v in HASH_NAME.items()}


def _ceil_float(num: int, den: int) -> float:
    """Smallest float >= num/den (den > 0), exactly, in integers (int true division
    rounds correctly; the check compares num/den with the float's own ratio)."""
    f = num / den
    a, b = f.as_integer_ratio()
    if a * den < num * b:
        f = math.nextafter(f, math.inf)
    return f


# ---------------------------------------------------------------------------- MACs
#: ``mac_arena``'s signature: every MAC backend of the receiver has it
MacFunction = Callable[..., np.ndarray]


class _Fields:
    """The ``w``-octet fields at ``at`` of ``arena``: one strided view with one ``w``-octet
    item per datagram when they are evenly spaced (one datagram length and layout: the
    common interval), else a fancy index."""

    __slots__ = ("arena", "view", "idx", "w")

    def __init__(self, arena: np.ndarray, at: np.ndarray, w: int) -> None:
        self.arena = arena
        self.w = w
        self.view: np.ndarray | None = None
        self.idx: np.ndarray | None = None
        n = len(at)
        step = int(at[1] - at[0]) if n > 1 else w
        if n and step >= w and bool((np.diff(at) == step).all()):
            self.view = np.ndarray(
                (n,), dtype=np.dtype((np.void, w)), buffer=arena, offset=int(at[0]),
                strides=(step,),
            )
        else:
            self.idx = at[:, None] + np.arange(w)

    def get(self) -> np.ndarray:
        """The fields as a ``(n, w)`` uint8 array (a copy)."""
        if self.view is not None:
            return self.view.copy().view(np.uint8).reshape(-1, self.w)
        return self.arena[self.idx]

    def set(self, value: np.ndarray | int) -> None:
        """Write ``value`` (0, or a ``(n, w)`` uint8 array) into the fields."""
        if self.view is not None:
            if isinstance(value, int):
                self.view[...] = bytes([value]) * self.w
            else:
                self.view[...] = np.ascontiguousarray(value).view(self.view.dtype).ravel()
        else:
            self.arena[self.idx] = value


def mac_arena(
    hash_name: str,
    key: bytes,
    arena: np.ndarray,
    offsets: np.ndarray,
    lengths: np.ndarray,
    mac_offsets: np.ndarray,
    mac_len: int,
    gmac_offsets: np.ndarray,
    gmac_len: int,
) -> np.ndarray:
    """``(n, mac_len)`` HMAC-``hash_name`` tags, keyed with ``key``, of the rows
    ``arena[offsets[k] : offsets[k] + lengths[k]]``, with the ``mac_len`` octets at
    ``offsets + mac_offsets`` and the ``gmac_len`` octets at ``offsets + gmac_offsets``
    (where >= 0) read as zeros (RFC 5776 §3.3.1).  The arena is left as it was.

    The receiver's one adapter to the MAC code: the native
    :func:`tesla.mac.kernel.mac_arena` (one C call, the GIL released, every row and field
    bounds-checked, the fields read as zeros without writing the arena) when the kernel
    is loaded; else, as ``mackernel`` falls back, the ``cryptography`` HMAC copy loop over
    the rows with the fields zeroed in place around it."""
    from tesla.mac import kernel as mackernel

    n = len(offsets)
    if n == 0:
        return np.zeros((0, mac_len), dtype=np.uint8)
    if mackernel.available():
        return mackernel.mac_arena(
            hash_name, key, arena, offsets, lengths, mac_offsets, mac_len, gmac_offsets,
            gmac_len,
        )[:, :mac_len]
    mac_id = _MAC_ID[hash_name]
    with _zeroed(arena, offsets, mac_offsets, mac_len, gmac_offsets, gmac_len):
        copy = HMAC(key, hash_algorithm(mac_id)).copy
        digs: list[bytes] = []
        ap = digs.append
        mv = arena.data
        for s, ln in zip(offsets.tolist(), lengths.tolist(), strict=True):
            h = copy()
            h.update(mv[s : s + ln])
            ap(h.finalize())
        mv.release()
        return np.frombuffer(b"".join(digs), dtype=np.uint8).reshape(n, -1)[:, :mac_len]


@contextmanager
def _zeroed(
    arena: np.ndarray, offsets: np.ndarray, mac_offsets: np.ndarray, mac_len: int,
    gmac_offsets: np.ndarray, gmac_len: int,
) -> Iterator[None]:
    """The MAC and Group MAC fields zeroed in place while the block runs (RFC 5776
    §3.3.1), restored afterwards."""
    mf = _Fields(arena, offsets + mac_offsets, mac_len)
    saved = mf.get()
    mf.set(0)
    gsel = np.flatnonzero(gmac_offsets >= 0)
    gf = None
    if len(gsel):
        gf = _Fields(arena, offsets[gsel] + gmac_offsets[gsel], gmac_len)
        gsaved = gf.get()
        gf.set(0)
    try:
        yield
    finally:
        mf.set(saved)
        if gf is not None:
            gf.set(gsaved)


class MemoMacs:
    """A :data:`MacFunction` memoized on (row octets, key), for a simulator where many
    receivers verify the very same datagrams with the same keys: each receiver runs the
    whole receiver, only identical HMAC computations are shared.  The memo key is the
    row's *content*, so a modified datagram is another key and really verified.  At most
    ``max_entries`` tags are kept (the oldest quarter dropped when full)."""

    def __init__(self, max_entries: int = 1 << 16, macs: MacFunction = mac_arena) -> None:
        self.max_entries = max_entries
        self.macs = macs
        self._memo: dict[tuple[bytes, bytes, str, int], bytes] = {}
        self.hits = 0
        self.misses = 0

    def __call__(
        self,
        hash_name: str,
        key: bytes,
        arena: np.ndarray,
        offsets: np.ndarray,
        lengths: np.ndarray,
        mac_offsets: np.ndarray,
        mac_len: int,
        gmac_offsets: np.ndarray,
        gmac_len: int,
    ) -> np.ndarray:
        memo = self._memo
        n = len(offsets)
        rows = [
            arena[s : s + ln].tobytes()
            for s, ln in zip(offsets.tolist(), lengths.tolist(), strict=True)
        ]
        out = np.empty((n, mac_len), dtype=np.uint8)
        miss = []
        for k, r in enumerate(rows):
            d = memo.get((r, key, hash_name, mac_len))
            if d is None:
                miss.append(k)
            else:
                out[k] = np.frombuffer(d, dtype=np.uint8)
        self.hits += n - len(miss)
        if miss:
            self.misses += len(miss)
            mi = np.asarray(miss, dtype=np.int64)
            got = self.macs(
                hash_name, key, arena, offsets[mi], lengths[mi], mac_offsets[mi], mac_len,
                gmac_offsets[mi], gmac_len,
            )
            out[mi] = got
            for k, row in zip(miss, got, strict=True):
                memo[(rows[k], key, hash_name, mac_len)] = row.tobytes()
            if len(memo) > self.max_entries:  # drop the oldest quarter (insertion order)
                for old in list(memo)[: len(memo) - self.max_entries * 3 // 4]:
                    del memo[old]
        return out


def pool_macs(pool: WorkerPool, fallback: MacFunction = mac_arena) -> MacFunction:
    """A :data:`MacFunction` computing large intervals in the worker processes of
    ``pool`` (fields zeroed in place around the call, as :func:`mac_arena` does)."""

    def macs(
        hash_name: str, key: bytes, arena: np.ndarray, offsets: np.ndarray,
        lengths: np.ndarray, mac_offsets: np.ndarray, mac_len: int,
        gmac_offsets: np.ndarray, gmac_len: int,
    ) -> np.ndarray:
        if len(offsets) < POOL_MIN_PACKETS:
            return fallback(hash_name, key, arena, offsets, lengths, mac_offsets, mac_len,
                            gmac_offsets, gmac_len)
        with _zeroed(arena, offsets, mac_offsets, mac_len, gmac_offsets, gmac_len):
            return pool.mac_packed(arena, offsets, lengths, key, _MAC_ID[hash_name], mac_len)

    return macs


def threaded_macs(threads: int, macs: MacFunction = mac_arena) -> MacFunction:
    """A :data:`MacFunction` sharing large intervals among ``threads`` threads (the MAC
    kernel's loop runs without the GIL; disjoint rows, so the in-place zeroing of each
    share does not touch the others)."""
    from concurrent.futures import ThreadPoolExecutor

    ex: list[ThreadPoolExecutor] = []

    def run(
        hash_name: str, key: bytes, arena: np.ndarray, offsets: np.ndarray,
        lengths: np.ndarray, mac_offsets: np.ndarray, mac_len: int,
        gmac_offsets: np.ndarray, gmac_len: int,
    ) -> np.ndarray:
        n = len(offsets)
        if n < POOL_MIN_PACKETS or threads < 2:
            return macs(hash_name, key, arena, offsets, lengths, mac_offsets, mac_len,
                        gmac_offsets, gmac_len)
        if not ex:
            ex.append(ThreadPoolExecutor(threads - 1, thread_name_prefix="tesla-mac"))
        cuts = [n * j // threads for j in range(threads + 1)]

        def part(a: int, b: int) -> np.ndarray:
            return macs(hash_name, key, arena, offsets[a:b], lengths[a:b], mac_offsets[a:b],
                        mac_len, gmac_offsets[a:b], gmac_len)

        futs = [ex[0].submit(part, a, b) for a, b in zip(cuts[1:-1], cuts[2:], strict=True)]
        first = part(cuts[0], cuts[1])
        return np.concatenate([first, *(f.result() for f in futs)])

    return run


# ---------------------------------------------------------------------------- arenas
_STRUCTS: dict[bytes, struct.Struct] = {}


def _pick(seq: Sequence[Any], idx: list[int]) -> list[Any]:
    """``[seq[i] for i in idx]`` in one C call (no Python step per item)."""
    if len(idx) > 1:
        return list(itemgetter(*idx)(seq))
    return [seq[i] for i in idx]


def _rows_struct(lens: np.ndarray) -> struct.Struct:
    """A ``struct.Struct`` packing rows of ``lens`` octets back to back in one C call
    (cached per layout)."""
    key = lens.tobytes()
    s = _STRUCTS.get(key)
    if s is None:
        if len(_STRUCTS) > 64:
            _STRUCTS.clear()
        if len(lens) and bool((lens == lens[0]).all()):
            s = struct.Struct(f"{int(lens[0])}s" * len(lens))
        else:
            s = struct.Struct("s".join(map(str, lens.tolist())) + "s")
        _STRUCTS[key] = s
    return s


def arena_storage(capacity: int) -> np.ndarray:
    """``capacity`` octets of arena storage: a private anonymous mapping of its own
    (page-aligned; a page is resident once written, and :func:`cold` gives the pages back
    while the mapping stays), never the malloc heap (whose freed memory stays resident)."""
    if not hasattr(mmap, "MAP_PRIVATE"):  # not POSIX: plain numpy storage
        return np.empty(capacity, dtype=np.uint8)
    mm = mmap.mmap(-1, max(1, capacity), flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    if capacity >= HUGEPAGE_MIN and hasattr(mmap, "MADV_HUGEPAGE"):
        mm.madvise(mmap.MADV_HUGEPAGE)  # as numpy does for large arrays: fewer faults
    return np.frombuffer(mm, dtype=np.uint8)[:capacity]


def _mapping(storage: np.ndarray) -> mmap.mmap | None:
    """The mapping under arena storage (:func:`arena_storage`), None for other arrays."""
    base = storage.base
    while isinstance(base, np.ndarray):
        base = base.base
    obj = base.obj if isinstance(base, memoryview) else None
    return obj if isinstance(obj, mmap.mmap) else None


def resident_estimate(storage: np.ndarray, used: int) -> int:
    """An upper bound on the resident octets of arena storage whose first ``used`` octets
    were written: whole pages, huge pages (2 MiB, aligned in the address space) from
    :data:`HUGEPAGE_MIN`, never beyond the storage's last page."""
    capacity = len(storage)
    cap = -(-capacity // mmap.PAGESIZE) * mmap.PAGESIZE
    if used <= 0:
        return 0
    if capacity >= HUGEPAGE_MIN:
        huge = 2 << 20
        addr = storage.ctypes.data
        end = -(-(addr + used) // huge) * huge
        return min(cap, end - addr)
    return min(cap, -(-used // mmap.PAGESIZE) * mmap.PAGESIZE)


def cold(storage: np.ndarray, keep: int = 0) -> None:
    """Give back the resident pages of arena storage (:func:`arena_storage`) from octet
    ``keep`` on (rounded up to a page): those octets read as zeros after; the mapping is
    kept for reuse (no page is resident until written again)."""
    mm = _mapping(storage)
    if mm is not None and hasattr(mmap, "MADV_DONTNEED"):
        start = -(-keep // mmap.PAGESIZE) * mmap.PAGESIZE
        if start == 0:
            mm.madvise(mmap.MADV_DONTNEED)
        elif start < len(mm):
            mm.madvise(mmap.MADV_DONTNEED, start, len(mm) - start)


class Arena:
    """The datagrams of one interval waiting for its key.  Their octets are copied once,
    on arrival, into ``data`` (preallocated uint8 storage; back to back, or at the stride
    of the longest when copied from a slab): what the MAC call reads, and what the
    accepted datagrams are cut from (:meth:`cut`).  ``index`` holds
    one row of four int64 per datagram: start, length, MAC field offset, Group MAC field
    offset (-1: none) (:meth:`rows` as an array); ``metas`` the caller's data,
    ``commits`` the Type 3 commitments ``(rows, commitment)`` (rows: one row or an array
    of rows carrying that commitment); ``nbytes`` is the accounted cost, ``lo``/``hi`` the
    interval's safe-test thresholds; ``positions``/``scanned`` the per-position cap's table
    and progress (tesla/core/floodguard.py)."""

    __slots__ = ("data", "_mv", "used", "index", "n", "metas", "commits", "nbytes",
                 "lo", "hi", "positions", "scanned", "warm", "touched")

    def __init__(self, lo: float, hi: float, data: np.ndarray) -> None:
        self.data = data
        self._mv = data.data
        self.used = 0
        self.index = array("q")
        self.n = 0
        self.metas: list[Any] = []
        self.commits: list[tuple[int | np.ndarray, bytes]] = []
        self.nbytes = 0
        self.lo = lo
        self.hi = hi
        self.positions: dict[int, int] | None = None
        self.scanned = 0
        # octets charged for the pages its storage had resident as a warm spare (they
        # stay charged until it is retired: TeslaReceiver._recycle)
        self.warm = 0
        self.touched = 0  # octets of its storage written before (as a spare's), warm

    def __len__(self) -> int:
        return self.n

    @property
    def capacity(self) -> int:
        return len(self.data)

    def remap(self, capacity: int) -> bool:
        """New capacity (>= ``used``) of the same mapping, without copying (``mremap``:
        the pages in use stay where they are, no second copy is ever resident); False
        when that cannot be done (storage not from :func:`arena_storage`, a view of it
        still held elsewhere, no ``mremap``): then :meth:`resize` copies."""
        mm = _mapping(self.data)
        if mm is None or capacity < self.used:
            return False
        old = len(self.data)
        self._mv.release()
        del self.data  # its buffer export must go before the mapping can move
        try:
            mm.resize(max(1, capacity))
            ok = True
        except (BufferError, OSError, SystemError, TypeError, ValueError):
            capacity, ok = old, False
        self.data = np.frombuffer(mm, dtype=np.uint8)[:capacity]
        self._mv = self.data.data
        return ok

    def resize(self, capacity: int, storage: np.ndarray | None = None) -> None:
        """New capacity (>= ``used``): new storage (or ``storage``, of any capacity >=
        ``used``) and one copy of the octets in use (``ndarray.resize`` would zero-fill,
        and so touch, every new page)."""
        new = arena_storage(capacity) if storage is None else storage
        new[: self.used] = self.data[: self.used]
        self._mv.release()
        self.data = new
        self._mv = new.data

    def rows(self, copy: bool = True) -> np.ndarray:
        """The index as an ``(n, 4)`` int64 array (a view with ``copy=False``: then no
        datagram may be added while it lives)."""
        v = np.frombuffer(self.index, dtype=np.int64).reshape(-1, 4)
        return v.copy() if copy else v

    def add(self, data: bytes, moff: int, goff: int, meta: Any) -> None:
        """One datagram (the caller made room: :meth:`TeslaReceiver._room`)."""
        ln = len(data)
        u = self.used
        self._mv[u : u + ln] = data  # raises rather than write past the capacity
        self.used = u + ln
        self.n += 1
        self.index.extend((u, ln, moff, goff))
        self.metas.append(meta)

    def add_many(
        self, pkts: Sequence[bytes], lens: np.ndarray, moffs: np.ndarray, metas: Sequence[Any]
    ) -> None:
        """Datagrams without Group MAC field, packed by one ``struct`` call (the caller
        made room)."""
        m = len(lens)
        ends = np.cumsum(lens)
        u = self.used
        if u + int(ends[-1]) > len(self.data):
            raise MemoryError("arena full: the receiver makes room first")
        _rows_struct(lens).pack_into(self._mv, u, *pkts)
        self.used = u + int(ends[-1])
        self.n += m
        rows = np.empty((m, 4), dtype=np.int64)
        rows[:, 0] = ends - lens + u
        rows[:, 1] = lens
        rows[:, 2] = moffs
        rows[:, 3] = -1
        self.index.frombytes(rows.tobytes())
        self.metas.extend(metas)

    def add_rows(
        self, block: np.ndarray, lens: np.ndarray, moffs: np.ndarray, metas: Sequence[Any]
    ) -> None:
        """Datagrams without Group MAC field from the ``(m, W)`` rows of ``block`` (e.g. a
        ``recvmmsg`` slab): one copy at stride W (the caller made room)."""
        m, w = block.shape
        u = self.used
        if u + m * w > len(self.data):
            raise MemoryError("arena full: the receiver makes room first")
        self.data[u : u + m * w].reshape(m, w)[:] = block
        self.used = u + m * w
        self.n += m
        rows = np.empty((m, 4), dtype=np.int64)
        rows[:, 0] = np.arange(u, u + m * w, w)
        rows[:, 1] = lens
        rows[:, 2] = moffs
        rows[:, 3] = -1
        self.index.frombytes(rows.tobytes())
        self.metas.extend(metas)

    def cut(self, keep: np.ndarray | None) -> list[bytes]:
        """The datagrams of rows ``keep`` (increasing; None: all) as ``bytes``, cut by one
        ``struct`` call."""
        idx = self.rows(copy=False)
        if keep is not None:
            idx = idx[keep]
        st, ln = idx[:, 0], np.ascontiguousarray(idx[:, 1])
        if not len(st):
            return []
        gaps = np.empty(len(st), dtype=np.int64)
        gaps[0] = 0
        gaps[1:] = st[1:] - (st[:-1] + ln[:-1])
        if gaps.any():
            fmt = "".join(
                f"{g}x{x}s" if g else f"{x}s" for g, x in zip(gaps.tolist(), ln.tolist(), strict=True)
            )
            return list(struct.unpack_from(fmt, self._mv, int(st[0])))
        return list(_rows_struct(ln).unpack_from(self._mv, int(st[0])))

    def datagram(self, k: int) -> bytes:
        """Row k's octets."""
        s, ln = self.index[4 * k], self.index[4 * k + 1]
        return bytes(self._mv[s : s + ln])

    def keep_tail(self, start: int, keep: list[int]) -> None:
        """Keep rows ``:start`` and ``keep`` (increasing, all >= ``start``): the kept
        rows' octets moved back to back from row ``start``'s place (storage in use shrinks
        by the dropped octets), index, metas and commitments renumbered."""
        n = self.n
        idx = self.rows()
        kk = np.asarray(keep, dtype=np.int64)
        u = int(idx[start, 0]) if start < n else self.used
        pk = self.cut(kk)  # copies: the moves below may overlap them
        tail = idx[kk]
        lens = tail[:, 1]
        if len(kk):
            _rows_struct(lens).pack_into(self._mv, u, *pk)
            tail[:, 0] = u + np.cumsum(lens) - lens
        self.used = u + int(lens.sum())
        self.index = array("q", idx[:start].tobytes() + tail.tobytes())
        self.n = start + len(kk)
        metas = self.metas
        self.metas = metas[:start] + [metas[j] for j in keep]
        self.commits = remap_commits(self.commits, start, keep, n)

    def release(self) -> np.ndarray:
        """Give up the storage (for reuse by the next interval)."""
        self._mv.release()
        return self.data


# ---------------------------------------------------------------------------- layouts
def _layout_octets(data: bytes, protocol: str, exts: list[tuple[int, int, int]]) -> list[int]:
    """The octet positions the EXT_AUTH location of ``data`` depends on: what
    ``ext_region`` (LCT flags and HDR_LEN) or ``header_regions`` (NORM version/type,
    hdr_len, NORM_CMD flavour, FEC Encoding ID) and the extension walk read.  A datagram
    with the same octets there, at least as long as the header, has the same layout."""
    if protocol == PROTO_ALC:
        cols = [0, 1, 2]
    else:
        cols = [0, 1]
        t = data[0] & 15
        if t == NORM_CMD:
            cols.append(12)
            if data[12] in (CMD_FLUSH, CMD_SQUELCH):
                cols.append(13)
        elif t == NORM_DATA:
            cols.append(13)
    for het, pos, ln in exts:
        cols.append(pos)
        if het < 128:
            cols.append(pos + 1)
            if het == 1 and ln >= 4:
                cols.append(pos + 2)
    return cols


class _SlabDatagrams(Sequence[bytes]):
    """The datagrams of a ``recvmmsg`` slab as a sequence of ``bytes``, made on demand:
    the lane copies its rows straight from the slab into the arenas, only datagrams the
    scalar path decides become objects."""

    __slots__ = ("slab", "n")

    def __init__(self, slab: Slab) -> None:
        self.slab = slab
        self.n = slab.count

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, k: Any) -> Any:
        if isinstance(k, slice):
            return [self[j] for j in range(*k.indices(self.n))]
        return self.slab.data[k, : int(self.slab.lengths[k])].tobytes()


class _LaneView:
    """State-independent facts of a batch for the lane."""

    __slots__ = ("params", "n", "lens", "elig", "off", "typ", "i", "moff", "keys")

    def __init__(self, params: Any, n: int) -> None:
        self.params = params
        self.n = n
        self.lens = np.zeros(n, dtype=np.int64)
        self.elig = np.zeros(n, dtype=bool)
        self.off = np.zeros(n, dtype=np.int64)
        self.typ = np.zeros(n, dtype=np.int64)
        self.i = self.off
        self.moff = self.off
        self.keys: np.ndarray | None = None


def _distinct(a: np.ndarray) -> np.ndarray:
    srt = np.sort(a)
    return srt[np.concatenate(([True], srt[1:] != srt[:-1]))]


def _same_key(
    keys: np.ndarray | None, k: int, e: int, rows: np.ndarray | None, key: bytes | None
) -> np.ndarray:
    """Whether the key field of datagrams k..e (or ``k + rows``) equals ``key``."""
    if key is None or keys is None:
        return np.zeros(e - k if rows is None else len(rows), dtype=bool)
    kk = keys[k:e] if rows is None else keys[k + rows]
    return np.asarray((kk == np.frombuffer(key, dtype=np.uint8)).all(axis=1))


# ---------------------------------------------------------------------------- receiver
class TeslaReceiver:
    """The RFC 5776 §4.3 state of one TESLA sender (see module doc).

    ``macs``: the MAC backend (:func:`mac_arena` signature); ``pool``: a
    :class:`tesla.mac.workers.WorkerPool` computing large intervals; ``verify_threads`` > 1:
    large intervals shared among that many threads."""

    def __init__(
        self,
        public_key: rsa.RSAPublicKey,
        *,
        protocol: str = PROTO_ALC,
        asid: int = 0,
        group_key: bytes | None = None,
        sync: str = "indirect",
        max_clock_error_ms: float = 100.0,
        d_err_ms: float = 0.0,
        s_sr: int = 0,
        max_buffered_bytes: int = 64 << 20,
        max_packets_per_interval: int = 1 << 16,
        allowed_sig_hashes: Iterable[int] = DEFAULT_ALLOWED_SIG_HASHES,
        pss_salt_length: int | str = "digest",
        accept_legacy_sync_types: bool = False,
        template: ControlTemplate | None = None,
        early_discard: Callable[[bytes], bool] | None = None,
        max_key_walk: int = 100_000,
        group_mac_id: int = 2,
        key_wait: float | None = DEFAULT_KEY_WAIT,
        macs: MacFunction | None = None,
        pool: WorkerPool | None = None,
        verify_threads: int = 1,
        copies_per_position: int = DEFAULT_COPIES_PER_POSITION,
    ) -> None:
        if protocol not in HDR_LEN_OFFSET:
            raise ValueError("protocol must be 'alc' or 'norm'")
        if sync not in ("indirect", "direct"):
            raise ValueError("sync must be 'indirect' or 'direct'")
        self.public_key = public_key
        self.protocol = protocol
        self.asid = asid
        self.group_key = group_key
        self.sync = sync
        self.max_clock_error_ms = max_clock_error_ms
        self.d_err_ms = d_err_ms
        self.max_buffered_bytes = max_buffered_bytes
        self.max_packets_per_interval = max_packets_per_interval
        self.allowed_sig_hashes = frozenset(allowed_sig_hashes)
        self.pss_salt_length = pss_salt_length
        self.accept_legacy_sync_types = accept_legacy_sync_types
        self.template = template or ControlTemplate()
        self.early_discard = early_discard
        self.max_key_walk = max_key_walk
        self.key_wait = key_wait
        mf: MacFunction = macs or mac_arena
        if pool is not None:
            mf = pool_macs(pool, mf)  # the pool's processes are the parallelism (one pipe
        elif verify_threads > 1:  # each: a call at a time)
            mf = threaded_macs(verify_threads, mf)
        self.macs = mf
        #: the default backend: the native kernel verifies and cuts in one call
        self._fused = macs is None and pool is None
        self.pool = pool
        self.verify_threads = max(1, verify_threads)
        #: cache and rate limits of the RSA verifications (issue 15, tesla/core/ratelimit.py)
        self.sig_gate = SignatureGate()
        #: per-position cap applied when a buffer bound is reached (None: off)
        self.position_cap: PositionCap | None = PositionCap(
            HDR_LEN_OFFSET[protocol], 0, PER_PACKET_OVERHEAD, copies_per_position
        ) if copies_per_position else None
        #: RFC 5776 §4.3 step 5 hook ``(datagram, now)``: called for a datagram that passed
        #: steps 1-4, before it is buffered
        self.cc_hint: Callable[[bytes, float], None] | None = None
        self._stats: dict[str, int] = {k: 0 for k in _DROP_KEY.values()}
        self._stats.update(
            {"buffered_bytes": 0, "buffered_packets": 0, "accepted": 0, "max_buffered_bytes": 0,
             "replay_bytes": 0, "warm_bytes": 0}
        )
        self.events: deque[Any] = deque(maxlen=MAX_EVENTS)
        self.params: TeslaParams | None = None
        self.d_t: int | None = None  # 2^-32 s units
        self.keys: KeyVerifierSet | None = None
        self.sync_client = DirectSyncClient(s_sr)
        self._sig: tuple[int, int] | None = None  # (algo, hash) from the bootstrap
        self._d_o_t = 0
        self.group_mac_id = group_mac_id  # out of band, with K_g
        self._gctx = MacContext.group(group_key, group_mac_id) if group_key else None
        self._out_pk: list[bytes] = []  # released datagrams and their metas
        self._out_meta: list[Any] = []
        #: release the accepted datagrams as rows of their arena (no copy): see
        #: :meth:`pop_released` (AuthenticatedReceiver sets it for an ALC engine)
        self.release_rows = False
        self._out_rows: list[tuple[Rows, list[Any], Arena]] = []  # released, not popped
        self._lent: list[tuple[Rows, Arena]] = []  # popped, until released_done()
        self._pending: dict[int, Arena] = {}
        self._bounds: dict[int, tuple[float, float]] = {}
        self._keycache: OrderedDict[int, bytes] = OrderedDict()
        self._recent: OrderedDict[int, bytes] = OrderedDict()  # interval -> accepted tags
        self._seq_hi: dict[int, int] = {}
        self._seq_seen: dict[int, set[int]] = {}
        self._hb = HDR_LEN_OFFSET[protocol]
        self._buffered = 0
        self._nbuf = 0
        self._released = 0  # charge of the released datagrams not yet popped (in _buffered)
        self._replay_bytes = 0  # charge of the replay memory (in _buffered)
        self._max_buffered = 0
        self._arena_hint = ARENA_MIN
        self._spare: list[np.ndarray] = []
        # id(spare storage) -> (charge of its resident pages, octets written in it)
        self._warm: dict[int, tuple[int, int]] = {}
        self._arena_cap = 0  # octets of all arenas and spares (<= max_buffered_bytes)
        self._newest: Arena | None = None  # the arena created last (size hint)
        self._prefix = bytearray()  # the lane's packed header prefixes (reused)
        self._max_chain_seen = -1
        self._max_known = -1  # highest legitimate key index (any chain)
        self._t0_posix = 0.0  # float screens only; the safe test itself is exact
        self._tint_s = 1.0
        self._dt_s = 0.0
        self._ready = False
        self._tag_len: dict[int, int] = {}
        self._km = 0
        self._kp = 0
        self._g = 0
        self._slab: Slab | None = None
        #: datagrams buffered by the lane (tests and benchmarks)
        self.lane_packets = 0
        # the native lane's layout classes (learned from datagrams by the codec walk)
        self._cls_params: TeslaParams | None = None
        self._cls: list[tuple[list[int], bytes]] = []
        self._cls_arr = np.zeros((0, 5 + LANE_COLS), dtype=np.int64)
        self._cls_val = np.zeros((0, LANE_COLS), dtype=np.uint8)
        self._cls_t3 = np.zeros(0, dtype=bool)  # class c carries Type 3 (commitments)
        self._lane_rows = np.empty((0, 4), dtype=np.int64)
        self._lane_rslot = np.empty(0, dtype=np.int64)
        # the interval verified in the background (verify_threads > 1): interval, arena,
        # its native hashing (mackernel.ArenaJob), ok, tags, control mask, NORM replay keys
        self._inflight: tuple[
            int, Arena, ArenaJob, np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None
        ] | None = None
        self._join_due = 0.0  # when it is to be finished at the latest (receiver time)
        self._arrival = 0.0  # arrival time of the datagram the scalar path decides

    # ------------------------------------------------------------------ observation
    @property
    def stats(self) -> dict[str, int]:
        """Counters (``drop.<reason>``, ``accepted``, ...) and the gauges
        ``buffered_bytes``, ``buffered_packets``, ``max_buffered_bytes``."""
        self._join()
        st = self._stats
        st["buffered_bytes"] = self._buffered
        st["buffered_packets"] = self._nbuf
        st["max_buffered_bytes"] = self._max_buffered
        st["replay_bytes"] = self._replay_bytes
        st["warm_bytes"] = sum(c for c, _ in self._warm.values()) + sum(
            a.warm for a in self._pending.values()
        )
        return st

    @property
    def max_known_key(self) -> int:
        """Highest interval index whose key is legitimate (any chain; -1: none yet)."""
        return self._max_known

    @property
    def arena_bytes(self) -> int:
        """Octets allocated by the arenas of the intervals buffering now."""
        return self._arena_cap

    def _drop(self, reason: DropReason, n: int = 1) -> None:
        k = _DROP_KEY[reason]
        self._stats[k] += n
        self.events.append(Dropped(reason, n))

    def _count(self, name: str, n: int = 1) -> None:
        self._stats[name] = self._stats.get(name, 0) + n

    @property
    def initialized(self) -> bool:
        return self._ready

    def next_event(self) -> Any | None:
        """The next event, in order.  An interval verified in the background
        (``verify_threads`` > 1) adds its events when it is finished (see
        :data:`BACKGROUND_JOIN_AFTER`): after every event queued before."""
        return self.events.popleft() if self.events else None

    def pop_authenticated(self) -> list[tuple[bytes, Any]]:
        """``(datagram, meta)`` of the authenticated datagrams, in release order."""
        pk, meta = self.pop_authenticated_lists()
        return list(zip(pk, meta, strict=True))

    def pop_authenticated_lists(self, wait: bool = True) -> tuple[list[bytes], list[Any]]:
        """Same as :meth:`pop_authenticated` as two parallel lists (datagrams, metas);
        ``wait=False``: without finishing an interval still verified in the background
        (``verify_threads`` > 1), its datagrams come with a later call (see
        :data:`BACKGROUND_JOIN_AFTER`)."""
        if wait:
            self._join()
        self.released_done()
        if self._out_rows:  # (release_rows) as bytes, arenas given back at once
            for rows, metas, ar in self._out_rows:
                self._out_pk.extend(rows[k] for k in range(len(rows)))
                self._out_meta.extend(metas)
                rows.invalidate()
                self._retire(ar)
            self._out_rows = []
        pk, meta = self._out_pk, self._out_meta
        self._out_pk, self._out_meta = [], []
        self._buffered -= self._released  # the caller holds them now
        self._released = 0
        return pk, meta

    def pop_released(self, wait: bool = True) -> list[tuple[Rows, list[Any]]]:
        """With ``release_rows``: the released datagrams as ``(rows, metas)`` per
        verified interval, in release order, each :class:`alc.rows.Rows` a view of its
        arena (RFC 5776 §4.3: copied once, on arrival; handed on without a second copy).
        They stay valid, and their arena charged to the buffer, until
        :meth:`released_done` (or the next pop), which gives the storage to the next
        interval and invalidates them.  ``wait`` as in :meth:`pop_authenticated_lists`."""
        if wait:
            self._join()
        self.released_done()
        out = self._out_rows
        self._out_rows = []
        self._lent = [(rows, ar) for rows, _m, ar in out]
        return [(rows, metas) for rows, metas, _a in out]

    def released_done(self) -> None:
        """The consumer is done with what :meth:`pop_released` gave: the arenas' storage
        goes back (to the next interval), their charge ends, the rows are invalid."""
        for rows, ar in self._lent:
            rows.invalidate()
            self._retire(ar)
        self._lent = []

    @property
    def has_authenticated(self) -> bool:
        """Whether datagrams are ready (an interval verified in the background counts
        once it is finished: :data:`BACKGROUND_JOIN_AFTER`; nothing waits)."""
        return bool(self._out_pk) or bool(self._out_rows)

    def pending_intervals(self) -> list[int]:
        return sorted(self._pending)

    @property
    def buffered_bytes(self) -> int:
        return self._buffered

    def flush(self) -> None:
        """Finish the interval verified in the background, if any (``verify_threads`` >
        1; otherwise nothing is in flight between calls)."""
        self._join()

    # ------------------------------------------------------------------ entries
    def receive(self, data: bytes | bytearray | memoryview, now: float, meta: Any = None) -> None:
        """One datagram that arrived at ``now`` (POSIX seconds): the batch entry with one."""
        self.receive_batch([data], now, (meta,))

    def receive_slab(self, slab: Slab, metas: Sequence[Any] | None = None) -> None:
        """The datagrams of a slab filled by :func:`alc.mmsg.recv_batch` (arrival times
        from its stamps; the lane reads the headers from the slab rows)."""
        n = slab.count
        if n:
            self._slab = slab
            try:
                self.receive_batch(_SlabDatagrams(slab), slab.stamps[:n], metas)
            finally:
                self._slab = None

    def receive_batch(
        self,
        packets: Sequence[bytes | bytearray | memoryview],
        now: float | Sequence[float] | np.ndarray,
        metas: Sequence[Any] | None = None,
    ) -> None:
        """Datagrams in arrival order, arrived at ``now`` (one POSIX time for all, or one
        each).  Runs the lane where it applies, :meth:`_receive_one` elsewhere."""
        n = len(packets)
        if n < LANE_MIN and isinstance(now, (int, float)):  # e.g. receive(): one datagram
            one = self._receive_one
            for k in range(n):
                d = packets[k]
                one(d if type(d) is bytes else bytes(d), now, None if metas is None else metas[k])
            return
        from tesla.mac import kernel as mackernel

        native = mackernel.lane()
        if type(packets) is _SlabDatagrams or (
            # the native lane reads any buffer; the scalar path converts what it takes
            type(packets) is list and (native is not None or set(map(type, packets)) == {bytes})
        ):
            pkts: list[bytes] = packets  # type: ignore[assignment]  # a list or the slab's
        else:
            pkts = [p if type(p) is bytes else bytes(p) for p in packets]
        if n == 0:
            return
        if type(now) is np.ndarray and now.dtype == np.float64 and now.shape == (n,):
            times = now  # (np.broadcast_to costs ~10 us a call)
        else:
            times = np.broadcast_to(np.asarray(now, dtype=np.float64), (n,))
        ms: Sequence[Any] = metas if metas is not None else [None] * n
        if n < LANE_MIN:
            one = self._receive_one
            for k in range(n):
                d = pkts[k]
                one(d if type(d) is bytes else bytes(d), float(times[k]), ms[k])
            return
        self._batch(pkts, times, ms, 0, native)

    def _batch(
        self, pkts: list[bytes], tarr: np.ndarray, ms: Sequence[Any], k: int, native: Any
    ) -> None:
        n = len(pkts)
        hint = self.cc_hint
        one = self._receive_one
        lane: _LaneView | None = None
        tc = np.ascontiguousarray(tarr, dtype=np.float64) if native is not None else tarr
        misses = 0
        skip = 0
        while k < n:
            if skip == 0 and self._lane_enabled():
                if native is not None:
                    m = self._native_lane(native, pkts, tc, ms, k)
                else:
                    if lane is None or lane.params is not self.params:
                        lane = self._lane_view(pkts)
                    m = self._lane(lane, pkts, tarr, ms, k)
                if m:
                    if hint is not None:
                        for j in range(k, k + m):
                            d = pkts[j]
                            hint(d if type(d) is bytes else bytes(d), float(tarr[j]))
                    k += m
                    misses = 0
                    continue
                # the lane cannot take datagram k (first of an interval, a new key,
                # signalling, damage): the scalar path decides it; after misses in a row
                # the lane rests for 2^misses datagrams (adversarial mixes)
                misses += 1
                if misses > 1:
                    skip = min(64, 1 << misses)
            elif skip:
                skip -= 1
            d = pkts[k]
            one(d if type(d) is bytes else bytes(d), float(tarr[k]), ms[k])
            k += 1

    # ------------------------------------------------------------------ step 1: locate
    def _ext_area(self, data: bytes) -> tuple[int, int]:
        return ext_region(data) if self._hb == 2 else header_regions(data)

    def _locate(self, data: bytes) -> int:
        """Offset of our EXT_AUTH (DecodeError if none/several/malformed header)."""
        start, end = self._ext_area(data)
        found = -1
        asid = self.asid
        for het, pos, ln in walk_extensions(data, start, end):
            if het == 1 and ln >= 4 and data[pos + 2] >> 4 == asid:
                if found >= 0:
                    raise DecodeError("EXT_AUTH", "more than one TESLA EXT_AUTH")
                found = pos
        if found < 0:
            raise DecodeError("EXT_AUTH", "no TESLA EXT_AUTH")
        return found

    def _locate_layout(self, data: bytes) -> tuple[int, int, list[int]] | None:
        """``(EXT_AUTH offset, header end, layout octets)`` or None where :meth:`_locate`
        raises: the scalar walk of one representative datagram for the lane."""
        try:
            start, end = self._ext_area(data)
            exts = walk_extensions(data, start, end)
        except DecodeError:
            return None
        found = [pos for het, pos, ln in exts
                 if het == 1 and ln >= 4 and data[pos + 2] >> 4 == self.asid]
        if len(found) != 1:
            return None
        return found[0], end, _layout_octets(data, self.protocol, exts)

    # ------------------------------------------------------------------ steps 1-5, scalar
    def _receive_one(self, data: bytes, now: float, meta: Any) -> None:
        """RFC 5776 §4.3 steps 1-5 for one datagram."""
        self._arrival = now  # (a verification started here is finished by now + ...)
        if self._inflight is not None:
            self._join()  # its replay memory, commitments, NORM state decide from here
        try:
            off = self._locate(data)
        except DecodeError:
            self._drop(DropReason.MALFORMED)
            return
        typ = data[off + 2] & 15
        if typ == 0 or typ > 4:
            self._signalling(data, off, typ, now, meta)
            return
        if not self._ready:
            self._drop(DropReason.NO_BOOTSTRAP)
            return
        p = self.params
        assert p is not None
        ln = data[off + 1] << 2
        tl = self._tag_len[typ]
        goff = -1
        if ln != tl:
            if self._g == 0 and ln == tl + 4:
                goff = off + tl  # Group MAC in a G=0 session: ignored, zeroed for the MAC
            elif self._g and ln == tl - self._g:
                self._drop(DropReason.BAD_GROUP_MAC)  # G=1, tag without Group MAC
                return
            else:
                self._drop(DropReason.MALFORMED)
                return
        elif self._g:
            goff = off + tl - self._g
        if (typ == 3 or typ == 4) and p.single_chain:
            self._drop(DropReason.MALFORMED)
            return
        (i,) = _I.unpack_from(data, off + 4)
        if self._hb == 1 and i <= self._max_known and self._norm_replayed(data):
            self._drop(DropReason.REPLAY)
            return
        if not self._safe(i, now, data, off, typ):
            return
        if self._g:
            z = bytearray(data)
            z[goff : goff + 4] = b"\0\0\0\0"
            assert self._gctx is not None
            if not self._gctx.verify(z, data[goff : goff + 4]):
                self._drop(DropReason.BAD_GROUP_MAC)
                return
        kp = self._kp
        new_keys: list[tuple[int, bytes]] | None = None
        if typ == 1 or typ == 4:
            x = i - p.d if typ == 1 else p.chain_of(i) * (p.n_chain + 1) - 1
            if x < 0:
                self._drop(DropReason.MALFORMED)  # no Type 1 in 0..d-1, no chain -1
                return
            got = self._check_key(x, data[off + 8 : off + 8 + kp])
            if got is None:
                return
            new_keys = got[1]
        # chain bookkeeping / old-chain flush (RFC 5776 §4.4)
        c = i // (p.n_chain + 1)
        if c > self._max_chain_seen:
            self._max_chain_seen = c
            self._flush_before_chain(c - 1)
        if self.cc_hint is not None:  # step 5, before buffering
            self.cc_hint(data, now)
        ed = self.early_discard
        if ed is not None and self._discardable(data) and ed(data):
            self._count("discard.early")
        else:
            self._buffer(i, data, off + (8 if typ == 2 else 8 + kp), goff, typ, off, meta)
        if new_keys:
            for w, kw in new_keys:
                if w in self._pending:
                    self._authenticate(w, kw)

    def _safe(self, i: int, now: float, data: bytes, off: int, typ: int) -> bool:
        """The safe-packet test (RFC 5776 §4.3 step 2) of a tag of interval i arriving at
        ``now``; counts the drop (``replay`` for a late copy of an accepted datagram)."""
        p = self.params
        assert p is not None
        b = self._bounds.get(i)
        if b is None:
            # cheap float screen first: an index more than one interval outside the
            # plausible window cannot pass the exact test (no Fraction work per forgery)
            approx = (now - self._t0_posix + self._dt_s) / self._tint_s
            if i > approx + 2 or i + p.d < approx - 2:
                self._drop(DropReason.UNSAFE)
                return False
            b = self._interval_bounds(i)
        if not (b[0] <= now < b[1]):
            if now >= b[1] and self._is_replay(i, data, off, typ):
                self._drop(DropReason.REPLAY)
            else:
                self._drop(DropReason.UNSAFE)
            return False
        # K_i already legitimate: it may be public (RFC 5776 §6.2; only reachable when
        # arrival times are not monotonic)
        if i <= self._max_known:
            if self._is_replay(i, data, off, typ):
                self._drop(DropReason.REPLAY)
            else:
                self._count("unsafe.key_known")
                self._drop(DropReason.UNSAFE)
            return False
        return True

    def _interval_bounds(self, i: int) -> tuple[float, float]:
        """(lo, hi): a tag of interval i arriving at ``now`` is safe iff now < hi (RFC 5776
        §4.3), and not from the future iff now >= lo.  Exact thresholds."""
        p = self.params
        assert p is not None and self.d_t is not None
        # (base + j * T_int) seconds, T_int = tint_ms / 1000 s, base in 2^-32 s units
        base = (p.t0_ntp - self.d_t - _POSIX_OFFSET_NTP) * 1000
        step = p.tint_ms * NTP_ONE_SECOND
        den = 1000 * NTP_ONE_SECOND
        hi = _ceil_float(base + (i + p.d) * step, den)
        lo = _ceil_float(base + i * step, den) if REJECT_FUTURE_INTERVAL else -math.inf
        if len(self._bounds) > 4096:
            self._bounds.clear()
        self._bounds[i] = (lo, hi)
        return lo, hi

    def _check_key(self, x: int, key: bytes) -> tuple[bool, list[tuple[int, bytes]] | None] | None:
        """Step 4 for a disclosed K_x: None (dropped ``bad_key``), else (legitimate, keys
        newly legitimate).  Keys of chains without a commitment, or too far, are ignored."""
        known = self._keycache.get(x)
        if known is not None:
            if known != key:
                self._drop(DropReason.BAD_KEY)
                return None
            return True, None
        assert self.keys is not None
        chk = self.keys.check(x, key, self._pending)
        st = chk.status
        if st is KeyStatus.MISMATCH or st is KeyStatus.BAD_LENGTH:
            self._drop(DropReason.BAD_KEY)
            return None
        if st is KeyStatus.NEW:
            if x > self._max_known:
                self._max_known = x
            kc = self._keycache
            for w, kw in chk.new_keys[-256:]:
                kc[w] = kw
            while len(kc) > 1024:
                kc.popitem(last=False)
            return True, chk.new_keys
        if st is KeyStatus.KNOWN:
            self._keycache[x] = key
            return True, None
        return False, None  # UNVERIFIABLE / TOO_FAR / OUT_OF_CHAIN

    # ------------------------------------------------------------------ buffering
    def _new_arena(self, i: int, need: int) -> Arena:
        """An arena for interval i with room for ``need`` octets: a spare one (warm memory)
        when one is large enough, else new storage of the size hint (1.125 x the octets of
        the interval before), within the capacity budget."""
        lo, hi = self._bounds.get(i) or self._interval_bounds(i)
        newest = self._newest
        if newest is not None:  # intervals of a session carry similar traffic
            self._arena_hint = max(ARENA_MIN, newest.used + (newest.used >> 3))
        spare = self._spare
        warm = touched = 0
        if spare and len(spare[-1]) >= need:
            buf = spare.pop()
            warm, touched = self._warm.pop(id(buf), (0, 0))  # charged now to the arena
        else:
            size = self._budget(need, self._arena_hint, 0)
            buf = arena_storage(size)
            self._arena_cap += size
        ar = self._pending[i] = self._newest = Arena(lo, hi, buf)
        ar.warm, ar.touched = warm, touched
        return ar

    def _room(self, ar: Arena, more: int) -> None:
        """Room for ``more`` octets in ``ar``: its capacity doubles, within the budget, in
        place (:meth:`Arena.remap`: no copy); where that cannot be done it moves into a
        spare arena large enough, else into new storage (one copy of the octets in
        use: old and new storage are both resident while it runs)."""
        need = ar.used + more
        cap = ar.capacity
        if need <= cap:
            return
        size = self._budget(need, 2 * cap, cap)
        if ar.remap(size):
            self._arena_cap += size - cap
            return
        spare = self._spare
        self._buffered -= ar.warm  # the old storage is freed (or moved from)
        ar.warm = ar.touched = 0
        if spare and len(spare[-1]) >= max(need, cap):
            buf = spare.pop()
            ar.warm, ar.touched = self._warm.pop(id(buf), (0, 0))
            ar.resize(0, buf)
            self._arena_cap -= cap  # the old storage is freed
        else:
            ar.resize(size)
            self._arena_cap += size - cap

    def _budget(self, need: int, want: int, have: int) -> int:
        """A capacity between ``need`` and ``want`` octets for storage that has ``have``
        now, keeping the capacity of all arenas and spares within max_buffered_bytes
        (arena rule, module doc): spares go first, then the arenas are compacted (their
        slack returned); the accounted bound keeps the octets in use below it."""
        limit = self.max_buffered_bytes
        avail = limit - self._arena_cap + have
        if avail < want and self._spare:
            self._arena_cap -= sum(map(len, self._spare))
            self._buffered -= sum(c for c, _ in self._warm.values())
            self._warm.clear()
            self._spare.clear()
            avail = limit - self._arena_cap + have
        if avail < need:
            for ar in self._pending.values():
                if ar.capacity > ar.used:
                    self._arena_cap -= ar.capacity - ar.used
                    if not ar.remap(ar.used):
                        ar.resize(ar.used)
            avail = limit - self._arena_cap + have
        return max(need, min(want, avail))

    def _recycle(self, ar: Arena) -> None:
        """Keep the storage of a finished arena for the next interval (at most
        :data:`ARENA_SPARES`, the largest ones).  Its resident pages stay (a warm spare:
        the next interval writes without page faults) only while the buffer bound has
        room for them, charged to the buffer like datagrams (``warm_bytes``), and are
        given back (:func:`cold`) as soon as datagrams need that room
        (:meth:`_shed_warm`); without room they are given back at once."""
        spare = self._spare
        touched = max(ar.used, ar.touched)
        buf = ar.release()
        self._buffered -= ar.warm
        c = resident_estimate(buf, touched)
        if c and self._buffered + c <= self.max_buffered_bytes:
            self._warm[id(buf)] = (c, touched)
            self._account(c, 0)
        else:
            cold(buf)
        spare.append(buf)
        if len(spare) > ARENA_SPARES:
            spare.sort(key=len)
            self._arena_cap -= len(spare[0])
            self._buffered -= self._warm.pop(id(spare[0]), (0, 0))[0]
            del spare[0]

    def _shed_warm(self) -> None:
        """Give back the warm pages and their charge (room for datagrams): the spares'
        all, a buffering arena's beyond its octets in use."""
        for buf in self._spare:
            c, _ = self._warm.pop(id(buf), (0, 0))
            if c:
                cold(buf)
                self._buffered -= c
        for ar in self._pending.values():
            if ar.warm:
                cold(ar.data, ar.used)
                self._buffered -= ar.warm
                ar.warm, ar.touched = 0, ar.used

    def _retire(self, ar: Arena) -> None:
        """A verified arena's charge ends when its storage is given back (after its
        accepted datagrams were cut and charged as released: both are resident then)."""
        self._buffered -= ar.nbytes
        self._nbuf -= len(ar)
        self._recycle(ar)

    def _buffer(
        self, i: int, data: bytes, moff: int, goff: int, typ: int, off: int, meta: Any
    ) -> None:
        """Copy one datagram into interval i's arena, within the bounds (eviction rule)."""
        cost = len(data) + PER_PACKET_OVERHEAD
        ar = self._pending.get(i)
        if ar is not None and len(ar) >= self.max_packets_per_interval:
            self._cap_positions(i)
            if len(ar) >= self.max_packets_per_interval:
                self._drop(DropReason.EVICTED)
                return
        if self._buffered + cost > self.max_buffered_bytes:
            self._shed_replay(cost)
        if self._buffered + cost > self.max_buffered_bytes:
            self._cap_positions(None)
            while self._buffered + cost > self.max_buffered_bytes and self._pending:
                oldest = min(self._pending)
                if oldest >= i:
                    break
                self._evict_interval(oldest, DropReason.EVICTED)
            if self._buffered + cost > self.max_buffered_bytes:
                self._drop(DropReason.EVICTED)
                return
            ar = self._pending.get(i)
        if ar is None:
            ar = self._new_arena(i, len(data))
        elif ar.used + len(data) > len(ar.data):
            self._room(ar, len(data))
        ar.add(data, moff, goff, meta)
        if typ == 3:
            ar.commits.append((len(ar) - 1, data[off + 8 : off + 8 + self._kp]))
        ar.nbytes += cost
        if ar.warm:
            self._absorb_warm(ar, cost)
        self._account(cost, 1)

    def _absorb_warm(self, ar: Arena, nbytes: int) -> None:
        """Datagrams written into an arena's warm pages: their charge takes over that much
        of the pages' charge (the pages are counted once)."""
        d = min(ar.warm, nbytes)
        ar.warm -= d
        self._buffered -= d

    def _cap_positions(self, only: int | None) -> None:
        """A buffer bound is reached: drop the datagrams beyond the first few of their
        position in interval ``only`` (None: every pending interval), so that forged
        copies cannot displace the datagrams they copy (issue 15, tesla/core/floodguard.py).
        The tables have their own budget (a fraction of the buffer bound)."""
        cap = self.position_cap
        if cap is None:
            return
        cap.km = self._km
        pending = self._pending
        used = sum(len(a.positions) for a in pending.values() if a.positions is not None)
        budget = int(self.max_buffered_bytes * TABLE_BUDGET_FRACTION) - used * ENTRY_COST
        for w in [only] if only is not None else list(pending):
            ar = pending[w]
            start = ar.scanned
            if start >= len(ar):
                continue
            if ar.positions is None:
                ar.positions = {}
            before = len(ar.positions)
            idx = ar.rows()[:, 2:].tolist()
            rows = ((ar.datagram(j), idx[j][0], idx[j][1]) for j in range(start, len(ar)))
            kept, scanned, freed = cap.scan(ar.positions, rows, max(0, budget))
            budget -= (len(ar.positions) - before) * ENTRY_COST
            ar.scanned = start + len(kept)
            n = scanned - len(kept)
            if n:
                ar.keep_tail(start, [start + j for j in kept] + list(range(start + scanned, len(ar))))
                ar.nbytes -= freed
                self._buffered -= freed
                self._nbuf -= n
                self._drop(DropReason.FLOOD, n)

    def _account(self, nbytes: int, npk: int) -> None:
        self._buffered += nbytes
        self._nbuf += npk
        if self._buffered > self._max_buffered:
            self._max_buffered = self._buffered

    def _evict_interval(self, w: int, reason: DropReason) -> None:
        ar = self._pending.pop(w)
        self._buffered -= ar.nbytes  # (its warm charge: _recycle)
        self._nbuf -= len(ar)
        self._drop(reason, len(ar))
        self._recycle(ar)

    def next_deadline(self) -> float | None:
        """Local time at which the interval verified in the background is to be finished
        (:data:`BACKGROUND_JOIN_AFTER`) or the oldest buffered interval becomes stale
        (its key was due ``key_wait`` s ago and never came), or None if neither."""
        due = self._join_due if self._inflight is not None else None
        pend = self._pending
        if not pend or self.key_wait is None:
            return due
        stale = pend[min(pend)].hi + self.key_wait
        return stale if due is None else min(due, stale)

    def expire(self, now: float) -> int:
        """Evict (``stale``) the intervals whose key is more than ``key_wait`` s overdue
        (RFC 5776 §4.3 step 6), after finishing the interval verified in the background
        when it is due (:data:`BACKGROUND_JOIN_AFTER`).  Returns the number of datagrams
        evicted."""
        if self._inflight is not None and now >= self._join_due:
            self._join()
        if self.key_wait is None or not self._pending:
            return 0
        lim = now - self.key_wait
        n = 0
        if any(a.hi <= lim for a in self._pending.values()):
            self._join()  # drops counted in order
        for w in [w for w, a in self._pending.items() if a.hi <= lim]:
            n += len(self._pending[w])
            self._evict_interval(w, DropReason.STALE)
        return n

    def close(self) -> int:
        """End of session: evict every buffered datagram (``stale``); returns how many."""
        self._join()
        n = 0
        for w in list(self._pending):
            n += len(self._pending[w])
            self._evict_interval(w, DropReason.STALE)
        return n

    def _flush_before_chain(self, c: int) -> None:
        """Drop pending datagrams of chains < c (RFC 5776 §4.4)."""
        if c <= 0 or self.params is None:
            return
        first = c * (self.params.n_chain + 1)
        for w in [w for w in self._pending if w < first]:
            self._evict_interval(w, DropReason.FLUSHED)
        # long sessions: the key state of those chains goes too (memory flat over chains)
        if self.keys is not None:
            self.keys.drop_chains_before(c)

    # ------------------------------------------------------------------ step 6: verify
    def _authenticate(self, w: int, key_w: bytes) -> None:
        """Verify interval w's arena with K_w: one MAC call, tags compared as an array.
        With the native kernel and ``verify_threads`` > 1 a large interval is hashed by
        native threads started for it while this one goes on buffering (the lane decides
        nothing from what the verification changes); it is finished (:meth:`_join`)
        before any decision that depends on it (the scalar path, another interval's
        verification, the stats, ``flush``) or by its timer (:data:`BACKGROUND_JOIN_AFTER`,
        :meth:`expire`), never when its threads happen to be done."""
        ar = self._pending.pop(w, None)
        if ar is None:
            return
        self._join()  # one interval at a time: release order
        p = self.params
        assert p is not None
        n = len(ar)
        km = self._km
        arr = ar.data
        # the index's columns as contiguous arrays (one transposing copy; the native
        # call takes contiguous int64 columns)
        st, ln, mo, go = np.ascontiguousarray(ar.rows(copy=False).T)
        # the wrapper's key-disclosure-only packets (header octets), NORM replay keys
        ctl = self._control_mask(arr, st, ln)
        nk = None
        if self._hb == 1:
            nk = (
                (arr[st + 4].astype(np.int64) << 40) | (arr[st + 5].astype(np.int64) << 32)
                | (arr[st + 6].astype(np.int64) << 24) | (arr[st + 7].astype(np.int64) << 16)
                | (arr[st + 2].astype(np.int64) << 8) | arr[st + 3]
            )
        if self._fused:  # the native kernel: MACs, tags, cut in one call
            from tesla.mac import kernel as mackernel

            if mackernel.fused():
                args = (HASH_NAME[p.mac_id], F_prime(key_w, p.prf_id), arr, st, ln, mo, km,
                        go, 4)
                if self.verify_threads > 1 and ar.used >= BACKGROUND_MIN_OCTETS:
                    # hashed by verify_threads - 1 native threads started for it (no
                    # Python thread: no wait for the GIL to start or end), no cut there;
                    # this thread takes the rows they have not taken when it needs the
                    # result (_join) instead of waiting, and cuts the accepted datagrams
                    bg = mackernel.verify_arena_task(*args, self.verify_threads - 1)
                    if bg is not None:
                        job, ok, tags = bg
                        self._inflight = (w, ar, job, ok, tags, ctl, nk)
                        self._join_due = self._arrival + BACKGROUND_JOIN_AFTER
                        return
                got = mackernel.verify_arena(
                    *args, self.verify_threads if n >= POOL_MIN_PACKETS else 1,
                    cut=not self.release_rows,
                )
                assert got is not None
                ok, tags, cut = got
                if not self._finish(w, ar, ok, tags, ctl, nk, cut):
                    self._retire(ar)
                return
        tags = _Fields(arr, st + mo, km).get()  # as received
        macs = self.macs(
            HASH_NAME[p.mac_id], F_prime(key_w, p.prf_id), arr, st, ln, mo, km, go, 4
        )
        ok = (macs == tags).all(axis=1)
        if not self._finish(w, ar, ok, tags, ctl, nk):
            self._retire(ar)

    def _join(self) -> None:
        """Finish the interval verified in the background, if any (see
        :meth:`_authenticate`)."""
        inf = self._inflight
        if inf is None:
            return
        self._inflight = None
        w, ar, job, ok, tags, ctl, nk = inf
        job.result()  # the rows its threads have not taken hashed here; raises what it raised
        if not self._finish(w, ar, ok, tags, ctl, nk):
            self._retire(ar)

    def _control_mask(
        self, arr: np.ndarray, st: np.ndarray, lens: np.ndarray
    ) -> np.ndarray | None:
        """The wrapper's empty key-disclosure packets (header only; not for the engine);
        None when none can be: every datagram longer than the longest header (HDR_LEN /
        hdr_len count 32-bit words in one octet), without reading the arena."""
        if not len(lens) or int(lens.min()) > 255 << 2:
            return None
        hb = self._hb
        ctl = lens == arr[st + hb].astype(np.int64) << 2  # header only
        c = np.flatnonzero(ctl)
        if not len(c):
            return None
        sc = st[c]
        if hb == 2:  # ALC: no A/B flag
            ctl[c] = (arr[sc + 1] & 3) == 0
        else:  # NORM: NORM_CMD(APPLICATION), flavour 7 (the wrapper's key disclosure)
            at12 = np.minimum(sc + 12, len(arr) - 1)
            ctl[c] = ((arr[sc] & 15) == 3) & (lens[c] > 12) & (arr[at12] == 7)
        return ctl

    def _finish(
        self, w: int, ar: Arena, ok: np.ndarray, tags: np.ndarray, ctl: np.ndarray | None,
        nk: np.ndarray | None, cut: list[bytes] | None = None,
    ) -> bool:
        """Counters, duplicates, replay memory, commitments and release of interval w
        (``cut``: the ok datagrams already cut from the arena, in order).  True when the
        arena is lent with its released rows (``release_rows``): it is retired by
        :meth:`released_done`, not by the caller."""
        p = self.params
        assert p is not None
        n = len(ar)
        km = self._km
        good = np.flatnonzero(ok)
        nbad = n - len(good)
        if nbad:
            self._drop(DropReason.BAD_MAC, nbad)
        if len(good) > 1:  # identical copies of one datagram (same MAC): release once
            if not nbad and km % 8 == 0 and tags.flags.c_contiguous:
                t8 = tags.view(np.uint64)[:, 0].copy()  # a column: no gather
            else:
                t8 = np.ascontiguousarray(tags[good, :8]).view(np.uint64).ravel()
            srt = np.sort(t8)  # cheap pre-check on 8 tag octets, exact check on a collision
            if bool((srt[1:] == srt[:-1]).any()):
                v = np.ascontiguousarray(tags[good]).view(np.dtype((np.void, km))).ravel()
                _, first = np.unique(v, return_index=True)
                if len(first) != len(good):
                    self._drop(DropReason.DUPLICATE, len(good) - len(first))
                    good = np.sort(good[first])
        if not len(good):
            return False
        full = len(good) == n
        self._remember(w, (tags if full else tags[good]).tobytes())
        self._stats["accepted"] += len(good)
        if ar.commits:
            okm = ok if full else np.zeros(n, dtype=bool)
            if not full:
                okm[good] = True
            # storing a commitment is idempotent: each distinct one once, first-seen order
            for commitment in dict.fromkeys(
                c for k, c in ar.commits if (okm[k] if type(k) is int else okm[k].any())
            ):
                self._new_chain_commitment(p.chain_of(w) + 1, commitment)
        if self._hb == 1:
            self._norm_accept_many(good, nk)
        keep = good
        rows_out = self.release_rows
        if not rows_out:
            self._charge_released(ar, good, ctl, full)
        if ctl is not None and ctl.any():
            kc = ctl[good]
            nctl = int(kc.sum())
            if nctl:
                self._count("tesla.control", nctl)
                keep = good[~kc]
                full = False
        if rows_out:  # lent as rows of the arena, which stays charged until given back
            if not len(keep):
                return False
            idx = ar.rows(copy=False)
            st, ln = (idx[:, 0], idx[:, 1]) if full else (idx[keep, 0], idx[keep, 1])
            metas = ar.metas if full else _pick(ar.metas, keep.tolist())
            self._out_rows.append((Rows(ar.data, st.copy(), ln.copy()), metas, ar))
            return True
        if full:
            self._out_pk.extend(ar.cut(None) if cut is None else cut)
            self._out_meta.extend(ar.metas)
        else:
            if cut is None:
                self._out_pk.extend(ar.cut(keep))
            else:  # position of row r among the ok rows: ok rows before it
                pos = np.cumsum(ok)[keep] - 1
                self._out_pk.extend(_pick(cut, pos.tolist()))
            metas = ar.metas
            self._out_meta.extend(_pick(metas, keep.tolist()))
        return False

    def _charge_released(
        self, ar: Arena, good: np.ndarray, ctl: np.ndarray | None, full: bool
    ) -> None:
        """Charge the copies about to be released (rows ``good`` less the control packets)
        to the buffer until :meth:`pop_authenticated` hands them over: they are resident
        as long as the arena was (module doc, memory bound)."""
        ln = ar.rows(copy=False)[:, 1]
        if full and (ctl is None or not ctl.any()):
            nb, m = int(ln.sum()), len(ln)
        else:
            rel = good if ctl is None else good[~ctl[good]]
            nb, m = int(ln[rel].sum()), len(rel)
        c = nb + PER_PACKET_OVERHEAD * m
        if ar.warm and self._buffered + c > self.max_buffered_bytes:
            cold(ar.data, ar.used)  # this arena's warm pages beyond its datagrams
            self._buffered -= ar.warm
            ar.warm, ar.touched = 0, ar.used
        self._shed_replay(c)
        self._released += c
        self._account(c, 0)

    def _remember(self, w: int, tags: bytes) -> None:
        """Keep interval w's accepted tags for the replay test (:meth:`_is_replay`), the
        last ``REPLAY_MEMORY_INTERVALS`` intervals, charged to the buffer: they take only
        room nothing else needs (older ones go first; none kept if no room)."""
        rec = self._recent
        old = rec.pop(w, None)
        if old is not None:
            self._replay_bytes -= len(old) + REPLAY_ENTRY_OVERHEAD
            self._buffered -= len(old) + REPLAY_ENTRY_OVERHEAD
        c = len(tags) + REPLAY_ENTRY_OVERHEAD
        while len(rec) >= REPLAY_MEMORY_INTERVALS:
            self._forget_oldest()
        self._shed_replay(c)
        if self._buffered + c <= self.max_buffered_bytes:
            rec[w] = tags
            self._replay_bytes += c
            self._account(c, 0)

    def _forget_oldest(self) -> None:
        _, tags = self._recent.popitem(last=False)
        c = len(tags) + REPLAY_ENTRY_OVERHEAD
        self._replay_bytes -= c
        self._buffered -= c

    def _shed_replay(self, need: int) -> None:
        """Drop replay memory, oldest interval first, until ``need`` more octets fit in
        the buffer bound (a late copy of those intervals is then counted ``unsafe``
        instead of ``replay``: dropped all the same)."""
        if self._buffered + need > self.max_buffered_bytes:
            self._shed_warm()
        while self._recent and self._buffered + need > self.max_buffered_bytes:
            self._forget_oldest()

    def _new_chain_commitment(self, j: int, commitment: bytes) -> None:
        assert self.keys is not None
        if self.keys.add_commitment(j, commitment):
            self.events.append(NewChain(j))
            self._flush_before_chain(j - 1)

    def _discardable(self, data: bytes) -> bool:
        if self._hb == 2:
            return not data[1] & 3  # never before auth: A (close session), B (close object)
        return data[0] & 15 == 2  # NORM: only NORM_DATA

    def _is_replay(self, i: int, data: bytes, off: int, typ: int) -> bool:
        """Whether the tag of this datagram was accepted before in interval i."""
        tags = self._recent.get(i)
        if tags is None:
            return False
        km = self._km
        mo = off + (8 if typ == 2 else 8 + self._kp)
        tag = data[mo : mo + km]
        pos = tags.find(tag)
        while pos >= 0:
            if pos % km == 0:
                return True
            pos = tags.find(tag, pos + 1)
        return False

    # ------------------------------------------------------------------ NORM replay
    def _norm_replayed(self, data: bytes) -> bool:
        """RFC 5776 §6.2.2: a sequence number already accepted from this source, or older
        than the window below the highest accepted."""
        src, seq = int.from_bytes(data[4:8], "big"), (data[2] << 8) | data[3]
        hi = self._seq_hi.get(src)
        if hi is None:
            return False
        diff = (hi - seq) & 0xFFFF
        if diff >= 0x8000:  # newer than anything accepted
            return False
        return diff >= NORM_SEQ_WINDOW or seq in self._seq_seen[src]

    def _norm_accept(self, src: int, seq: int) -> None:
        hi = self._seq_hi.get(src)
        seen = self._seq_seen.setdefault(src, set())
        seen.add(seq)
        if hi is None or ((seq - hi) & 0xFFFF) < 0x8000:
            self._seq_hi[src] = seq
            hi = seq
        if len(seen) > 2 * NORM_SEQ_WINDOW:
            self._seq_seen[src] = {s for s in seen if ((hi - s) & 0xFFFF) < NORM_SEQ_WINDOW}

    def _norm_accept_many(self, keep: np.ndarray, nk: np.ndarray | None) -> None:
        """``_norm_accept`` of the kept datagrams in order, in bulk per source where their
        sequence numbers and the highest accepted one span less than half the sequence
        space (then serial order is linear order, the highest is the running maximum and
        the seen set is trimmed exactly where the one-by-one loop trims it)."""
        assert nk is not None
        v = nk[keep]
        src = v >> 16
        seq = v & 0xFFFF
        if len(keep) < 8:
            for s, q in zip(src.tolist(), seq.tolist(), strict=True):
                self._norm_accept(s, q)
            return
        us = _distinct(src).tolist()
        if len(us) > LANE_MAX_CLASSES:
            for s, q in zip(src.tolist(), seq.tolist(), strict=True):
                self._norm_accept(s, q)
            return
        his = self._seq_hi
        win = NORM_SEQ_WINDOW
        bound = 2 * win
        for u in us:
            sq = seq if len(us) == 1 else seq[src == u]
            hi = his.get(u)
            base = int(sq[0]) if hi is None else hi
            rel = ((sq - base + 0x8000) & 0xFFFF) - 0x8000  # offsets in [-0x8000, 0x8000)
            top = max(int(rel.max()), 0)
            if top - min(int(rel.min()), 0) >= 0x8000:
                for q in sq.tolist():
                    self._norm_accept(u, q)
                continue
            seen = self._seq_seen.setdefault(u, set())
            ql = sq.tolist()
            run: list[int] | None = None
            pos = 0
            m = len(ql)
            while pos < m:
                room = bound - len(seen)
                if room > 0:
                    seen.update(ql[pos : pos + room])
                    pos += room
                    continue
                if run is None:  # the highest after each datagram
                    run = np.maximum.accumulate(np.maximum(rel, 0)).tolist()
                seen.add(ql[pos])  # at the bound: the one-by-one step for one datagram
                if len(seen) > bound:
                    h = (base + run[pos]) & 0xFFFF
                    seen = {x for x in seen if ((h - x) & 0xFFFF) < win}
                    self._seq_seen[u] = seen
                pos += 1
            his[u] = (base + top) & 0xFFFF

    # ------------------------------------------------------------------ the lane
    def _lane_enabled(self) -> bool:
        return self._ready and self._g == 0 and self.early_discard is None

    def _lane_view(self, pkts: list[bytes]) -> _LaneView:
        """What the lane needs of each datagram, independent of receiver state: the first
        :data:`LANE_PREFIX` octets in fixed-stride rows; :meth:`_locate_layout` on one
        representative per header layout, a datagram having that layout iff its octets at
        the layout positions are the representative's and it covers the header."""
        p = self.params
        n = len(pkts)
        lv = _LaneView(p, n)
        slab = self._slab
        if slab is not None and slab.count == n and slab.width >= LANE_PREFIX:
            a2 = slab.data[:n]
            P = slab.width
            lens = slab.lengths[:n]
        else:
            lens = np.fromiter(map(len, pkts), dtype=np.int64, count=n)
            P = min(LANE_PREFIX, (int(lens.max()) + 7) & ~7)
            if len(self._prefix) < n * P:  # a new object: views of the old may be alive
                self._prefix = bytearray(max(n * P, 2 * len(self._prefix)))
            _rows_struct(np.full(n, P, dtype=np.int64)).pack_into(self._prefix, 0, *pkts)
            a2 = np.frombuffer(self._prefix, dtype=np.uint8, count=n * P).reshape(n, P)
        lv.lens = lens
        elig, off, typ = lv.elig, lv.off, lv.typ
        kp = self._kp
        tag_len = self._tag_len
        # Types 3/4 (multi-chain sessions, RFC 5776 §3.4.5-§3.4.6) too
        lane_types = (1, 2) if p is None or p.single_chain else (1, 2, 3, 4)
        left = np.ones(n, dtype=bool)
        r = 0
        for _ in range(LANE_MAX_CLASSES):
            walk = self._locate_layout(pkts[r])
            left[r] = False
            if walk is not None:
                found, end, cols = walk
                if end <= P:  # the layout octets lie in the packed prefix
                    ca = np.asarray(cols, dtype=np.intp)
                    same = left & (lens >= end) & (a2[:, ca] == a2[r, ca]).all(axis=1)
                    same[r] = True
                    left &= ~same
                    t = pkts[r][found + 2] & 15
                    if t in lane_types and pkts[r][found + 1] << 2 == tag_len[t]:
                        elig |= same
                        off[same] = found
                        typ[same] = t
            nxt = np.flatnonzero(left[r:])
            if not len(nxt):
                break
            r += int(nxt[0])
        if not elig.any():
            return lv
        o = int(off[int(np.argmax(elig))])
        if bool((off[elig] == o).all()):
            # one EXT_AUTH offset (the usual case): column slices, no gathers
            lv.i = a2[:, o + 4 : o + 8].copy().view(">u4").ravel().astype(np.int64)
            lv.moff = np.where(typ == 2, o + 8, o + 8 + kp)
            lv.keys = a2[:, o + 8 : o + 8 + kp]  # the key (Types 1, 4) or commitment (3)
            return lv
        flat = np.ascontiguousarray(a2).reshape(-1)
        at = np.arange(0, n * P, P, dtype=np.int64) + off
        iv = flat[at + 4].astype(np.int64)
        for j in (5, 6, 7):
            iv = (iv << 8) | flat[at + j]
        lv.i = iv
        lv.moff = off + np.where(typ == 2, 8, 8 + kp)
        k1 = np.flatnonzero(elig & (typ != 2))
        if len(k1):  # the key (Types 1, 4) or commitment (3)
            lv.keys = np.zeros((n, kp), dtype=np.uint8)
            lv.keys[k1] = flat[(at[k1] + 8)[:, None] + np.arange(kp)]
        return lv

    def _lane(
        self, lv: _LaneView, pkts: list[bytes], times: np.ndarray, ms: Sequence[Any], k: int
    ) -> int:
        """Buffer the longest run of datagrams from ``k`` on which :meth:`_receive_one`
        would decide "buffer" and change nothing else: eligible layout, an interval already
        buffering, inside its safe window, above the last legitimate key (so no NORM
        replay test applies, see :meth:`_receive_one`),
        the disclosed key equal to the cached one, no new chain, room in the interval and
        in the buffer.  Returns how many (0: datagram k needs the scalar path)."""
        elig = lv.elig
        if not elig[k]:
            return 0
        bad = np.flatnonzero(~elig[k:])
        m = int(bad[0]) if len(bad) else lv.n - k
        e = k + m
        i, t, typ = lv.i[k:e], times[k:e], lv.typ[k:e]
        i0 = int(i[0])
        chg = np.flatnonzero(i[1:] != i[:-1])
        single = not len(chg)
        if single:
            ws = [i0]
        elif len(chg) < LANE_MAX_CLASSES and bool((i[chg + 1] > i[chg]).all()):
            ws = [i0, *i[chg + 1].tolist()]  # in order: a few intervals one after another
        else:
            ws = _distinct(i).tolist()
        if len(ws) > LANE_MAX_CLASSES:
            ws = ws[:LANE_MAX_CLASSES]
            m = int(np.argmax(i > ws[-1]))
            if m == 0:
                return 0
            e = k + m
            i, t, typ = i[:m], t[:m], typ[:m]
        p = self.params
        assert p is not None
        ok = np.ones(m, dtype=bool)
        mk = self._max_known
        lim = self.max_packets_per_interval
        n1 = p.n_chain + 1
        kc = self._keycache
        pends: list[tuple[Arena, np.ndarray | None]] = []
        for w in ws:
            rows = None if single else np.flatnonzero(i == w)
            ar = self._pending.get(w)
            b = self._bounds.get(w)
            if ar is None or w <= mk or b is None or w // n1 > self._max_chain_seen:
                if rows is None:
                    return 0
                ok[rows] = False
                continue
            pends.append((ar, rows))
            tt = t if rows is None else t[rows]
            ty = typ if rows is None else typ[rows]
            good = (b[0] <= tt) & (tt < b[1])
            for kt, x in ((1, w - p.d), (4, (w // n1) * n1 - 1)):
                sel = ty == kt
                if not sel.any():
                    continue
                known = kc.get(x) if x >= 0 else None
                good &= ~sel | _same_key(lv.keys, k, e, rows, known)
            room = max(0, lim - len(ar))
            if rows is None:
                ok &= good
                ok[room:] = False
            else:
                ok[rows] &= good
                ok[rows[room:]] = False
        badr = np.flatnonzero(~ok)
        if len(badr):
            m = int(badr[0])
        if m == 0:
            return 0
        return self._lane_store(lv, pkts, ms, k, m, single, pends)

    def _learn_class(self, data: bytes) -> bool:
        """Add the layout class of ``data`` (the codec walk, :meth:`_locate_layout`) to
        the native lane's classes if the lane may take its tags; whether it did."""
        p = self.params
        assert p is not None
        if self._cls_params is not p:
            self._reset_classes(p)
        walk = self._locate_layout(data)
        if walk is None:
            return False
        found, end, cols = walk
        t = data[found + 2] & 15
        lane_types = (1, 2) if p.single_chain else (1, 2, 3, 4)
        if t not in lane_types or data[found + 1] << 2 != self._tag_len[t] or len(cols) > LANE_COLS:
            return False
        moff = found + (8 if t == 2 else 8 + self._kp)
        self._cls.append(([end, found, t, moff, len(cols), *cols], bytes(data[c] for c in cols)))
        del self._cls[:-LANE_MAX_CLASSES]
        arr = np.full((len(self._cls), 5 + LANE_COLS), -1, dtype=np.int64)
        val = np.zeros((len(self._cls), LANE_COLS), dtype=np.uint8)
        for c, (row, vv) in enumerate(self._cls):
            arr[c, : len(row)] = row
            val[c, : len(vv)] = np.frombuffer(vv, dtype=np.uint8)
        self._cls_arr, self._cls_val = arr, val
        self._cls_t3 = arr[:, 2] == 3
        return True

    def _reset_classes(self, p: TeslaParams) -> None:
        """New parameters: the native lane's layout classes are learned again (their tag
        lengths and MAC offsets follow from the parameters)."""
        self._cls_params = p
        self._cls = []
        self._cls_arr = np.zeros((0, 5 + LANE_COLS), dtype=np.int64)
        self._cls_val = np.zeros((0, LANE_COLS), dtype=np.uint8)
        self._cls_t3 = np.zeros(0, dtype=bool)

    def _native_lane(
        self, native: Any, pkts: Sequence[bytes], times: np.ndarray, ms: Sequence[Any], k: int
    ) -> int:
        """The lane in one C call (``tesla/mac/_mac.c`` ``lane``, the same conditions as
        :meth:`_lane`): datagrams from ``k`` with a known layout class, for an interval
        already buffering (above the last legitimate key, no new chain, in its safe
        window, the disclosed key the cached one, room in the interval and the buffer)
        are copied into their arenas.
        Unknown layouts are learned by the codec walk of the datagram.  Returns how many
        it took (0: datagram k needs the scalar path)."""
        p = self.params
        assert p is not None
        if self._cls_params is not p:
            self._reset_classes(p)
        pend = self._pending
        mk = self._max_known
        n1 = p.n_chain + 1
        mcs = self._max_chain_seen
        ws = sorted(w for w in pend if w > mk and w // n1 <= mcs)[-LANE_SLOTS:]
        if not ws:
            return 0
        slab = self._slab if type(pkts) is _SlabDatagrams else None
        n = len(pkts)
        kp, d, lim = self._kp, p.d, self.max_packets_per_interval
        kc = self._keycache
        ars = [pend[w] for w in ws]
        srow: list[tuple[int, ...]] = []
        brow: list[tuple[float, float]] = []
        krow: list[bytes] = []
        none = bytes(kp)
        for w, ar in zip(ws, ars, strict=True):
            key1 = kc.get(w - d) if w >= d else None
            x4 = (w // n1) * n1 - 1
            key4 = kc.get(x4) if x4 >= 0 and not p.single_chain else None
            srow.append((w, lim - ar.n, ar.capacity, ar.used, key1 is not None, key4 is not None))
            brow.append((ar.lo, ar.hi))
            krow += (key1 or none, key4 or none)
        slots = np.array(srow, dtype=np.int64)
        bounds = np.array(brow, dtype=np.float64)
        keys = np.frombuffer(b"".join(krow), dtype=np.uint8)
        if len(self._lane_rslot) < n - k:  # the lane's output rows (reused: read at once)
            self._lane_rows = np.empty((n - k, 4), dtype=np.int64)
            self._lane_rslot = np.empty(n - k, dtype=np.int64)
        rows, rslot = self._lane_rows, self._lane_rslot
        taken = 0
        learned = -1
        first = True
        while True:
            if not first:  # the arenas may have grown (new storage)
                for j, ar in enumerate(ars):
                    slots[j, 2] = ar.capacity
                    slots[j, 3] = ar.used
            buf: Any = pkts
            width, lens = -1, None
            if slab is not None:
                buf, width, lens = slab.data, slab.width, slab.lengths
            first = False
            k0 = k + taken
            m, reason, which = native(
                buf, width, lens, k0, n, times, self._cls_arr, self._cls_val, slots, bounds,
                keys, tuple(ar.data for ar in ars),
                self.max_buffered_bytes - self._buffered, PER_PACKET_OVERHEAD,
                rows[taken:], rslot[taken:],
            )
            if m:
                self._lane_commit(ars, rows[taken : taken + m], rslot[taken : taken + m],
                                  slots, ms, k0, m)
                taken += m
            k1 = k + taken
            if reason == 2:  # the arena is full: it grows (within the budget), again
                self._room(ars[which], len(pkts[k1]))
            elif reason == 3 and learned != k1 and self._learn_class(bytes(pkts[k1])):
                learned = k1
            else:
                return taken

    def _lane_commit(
        self, ars: list[Arena], rows: np.ndarray, rslot: np.ndarray, slots: np.ndarray,
        ms: Sequence[Any], k: int, m: int,
    ) -> None:
        """Index, metas, commitments and accounting of the ``m`` datagrams from ``k`` the
        native lane copied into the arenas ``ars`` (row, slot of each).  What each arena
        took follows from the slot table the lane updated (packets left, octets used: it
        copies back to back), so no per-row pass is needed for it."""
        kp = self._kp
        lim = self.max_packets_per_interval
        left = slots[:, 1].tolist()
        used = slots[:, 3].tolist()
        took = [lim - ar.n - left[j] for j, ar in enumerate(ars)]
        one = took.count(0) == len(ars) - 1
        t3 = self._cls_t3
        added = 0
        for j, ar in enumerate(ars):
            c = took[j]
            if not c:
                continue
            if one:
                rr, rc = rows, rslot
                mt = ms[k : k + m]
            else:
                sel = np.flatnonzero((rslot & 0xFF) == j)
                a, b = int(sel[0]), int(sel[-1]) + 1
                if b - a == c:  # one run (intervals one after another): slices
                    rr, rc = rows[a:b], rslot[a:b]
                    mt = ms[k + a : k + b]
                else:
                    rr, rc = rows[sel], rslot[sel]
                    mt = list(map(ms.__getitem__, (sel + k).tolist()))
            base = ar.n
            if t3.any():  # Type 3: the next chain's commitment, after the interval index
                js = np.flatnonzero(t3[(rc >> 8) & 0xFF])
                if len(js):
                    a0 = int(rr[js[0], 0] + rr[js[0], 2]) - kp
                    if bool((rc[js[1:]] >> 16).all()):  # the lane: each equal to the first
                        ar.commits.append((base + js, ar.data[a0 : a0 + kp].tobytes()))
                    else:
                        at = rr[js, 0] + rr[js, 2] - kp
                        cm = ar.data[at[:, None] + np.arange(kp)]
                        ar.commits.extend(
                            zip((base + js).tolist(), [r.tobytes() for r in cm], strict=True)
                        )
            ar.index.frombytes(rr.data.cast("B"))
            ar.n = base + c
            nb = used[j] - ar.used + PER_PACKET_OVERHEAD * c  # octets copied back to back
            ar.used = used[j]
            ar.metas.extend(mt)
            ar.nbytes += nb
            if ar.warm:
                self._absorb_warm(ar, nb)
            added += nb
        self._account(added, m)
        self.lane_packets += m

    def _lane_store(
        self, lv: _LaneView, pkts: list[bytes], ms: Sequence[Any], k: int, m: int,
        single: bool, pends: list[tuple[Arena, np.ndarray | None]],
    ) -> int:
        """Copy ``pkts[k:k+m]`` into their arenas as far as the byte bound lets the scalar
        path buffer them; returns how many."""
        p = self.params
        assert p is not None
        e = k + m
        cost = lv.lens[k:e] + PER_PACKET_OVERHEAD
        cum = np.cumsum(cost)
        fit = int(np.searchsorted(cum, self.max_buffered_bytes - self._buffered, side="right"))
        if fit < m:
            m = fit
            e = k + m
            if m == 0:
                return 0
        added = 0
        slab = self._slab if type(pkts) is _SlabDatagrams else None
        for ar, rows in pends:
            if single:
                sel = np.arange(k, e)
            else:
                assert rows is not None
                sel = rows[rows < m] + k
                if not len(sel):
                    continue
            a, b = int(sel[0]), int(sel[-1]) + 1
            contiguous = b - a == len(sel)
            mt = ms[a:b] if contiguous else [ms[j] for j in sel.tolist()]
            base = len(ar)
            ty = lv.typ[sel]
            js = np.flatnonzero(ty == 3)
            if len(js):
                assert lv.keys is not None
                cm = lv.keys[sel[js]]
                if bool((cm == cm[0]).all()):  # one next-chain commitment: one entry
                    ar.commits.append((base + js, cm[0].tobytes()))
                else:
                    ar.commits.extend(
                        zip((base + js).tolist(), [row.tobytes() for row in cm], strict=True)
                    )
            lens = lv.lens[sel]
            total = int(lens.sum())
            w = int(lens.max())
            if slab is not None and contiguous and w * len(sel) - total <= 32 * len(sel):
                # rows straight from the recvmmsg slab at a fixed stride (the longest
                # datagram): the slack (<= 32 octets each) stays within PER_PACKET_OVERHEAD
                self._room(ar, w * len(sel))
                ar.add_rows(slab.data[a:b, :w], lens, lv.moff[sel], mt)
            else:
                pk = pkts[a:b] if contiguous else [pkts[j] for j in sel.tolist()]
                self._room(ar, total)
                ar.add_many(pk, lens, lv.moff[sel], mt)
            c = total + PER_PACKET_OVERHEAD * len(sel)
            ar.nbytes += c
            if ar.warm:
                self._absorb_warm(ar, c)
            added += c
        self._account(added, m)
        self.lane_packets += m
        return m

    # ------------------------------------------------------------------ signalling
    def _signalling(self, data: bytes, off: int, typ: int, now: float, meta: Any) -> None:
        if typ == 0:
            self._bootstrap(data, off, now, meta)
        elif typ == 6 or (typ == 8 and self.accept_legacy_sync_types):
            self._sync_response(data, off, now, meta)
        else:
            self._drop(DropReason.MALFORMED)  # Type 5 is for the sender; 7..15 undefined

    def _check_group_mac(self, data: bytes, off: int, has_gm: bool) -> bool:
        """Group MAC of a signalling packet (last 4 octets of the EXT_AUTH)."""
        if self._gctx is None:
            return True
        if not has_gm:
            return False
        end = off + (data[off + 1] << 2)
        z = bytearray(data)
        z[end - 4 : end] = b"\0\0\0\0"
        return self._gctx.verify(z, data[end - 4 : end])

    def _signature_ok(
        self, data: bytes, message: bytes, signature: bytes, algo: int, h: int, meta: Any,
        now: float,
    ) -> bool:
        """RSA verification of a signalling datagram through :attr:`sig_gate`: an
        identical datagram takes its cached verdict, otherwise the source's and the
        global RSA budget must allow it (else ``drop.rate_limited``).  Counts
        ``drop.bad_signature`` when invalid."""
        gate = self.sig_gate
        dg = gate.digest(data)
        ok = gate.cached(dg)
        if ok is None:
            if not gate.admit(source_of(meta), now):
                self._drop(DropReason.RATE_LIMITED)
                return False
            ok = sig_verify(self.public_key, message, signature, algo, h, self.pss_salt_length)
            gate.remember(dg, ok)
        if not ok:
            self._drop(DropReason.BAD_SIGNATURE)
        return ok

    def _out_of_budget(self, data: bytes, meta: Any, now: float) -> bool:
        """No RSA budget left for this source and no cached verdict for this datagram:
        refused at once (``drop.rate_limited``), before any parsing (a refused forgery
        then costs a hash and a bucket look-up, not a decode)."""
        gate = self.sig_gate
        if gate.has_budget(source_of(meta), now) or gate.cached(gate.digest(data)) is not None:
            return False
        self._drop(DropReason.RATE_LIMITED)
        return True

    def _bootstrap(self, data: bytes, off: int, now: float, meta: Any) -> None:
        """A Type 0 bootstrap (RFC 5776 §4.2): every check that needs no RSA first (issue
        15: RSA work per forgery), then the signature, then the session parameters."""
        if self._out_of_budget(data, meta, now):
            return
        try:
            msg = ea.decode(data, off)
        except DecodeError:
            self._drop(DropReason.MALFORMED)
            return
        assert isinstance(msg, ea.Bootstrap)
        now_ntp = posix_to_ntp(now)
        if self.params is not None:
            assert self.keys is not None
            if self.keys.has_chain(self.params.chain_of(msg.i)):
                self._count("bootstrap.ignored")
                return
        if not self._check_group_mac(data, off, msg.group_mac is not None):
            self._drop(DropReason.BAD_GROUP_MAC)
            return
        if msg.sig_hash not in self.allowed_sig_hashes:
            self._drop(DropReason.BAD_SIGNATURE)
            return
        try:
            params = TeslaParams(
                t0_ntp=ntp_from_wire(msg.t0, now_ntp),
                tint_ms=msg.t_int_ms,
                n_chain=msg.n,
                d=msg.d,
                prf_id=msg.prf_id,
                mac_id=msg.mac_id,
                group_mac=msg.group_mac is not None,
                group_mac_id=msg.group_mac_id if msg.group_mac is not None else 2,
                asid=msg.asid,
                sig_algo_id=msg.sig_algo,
                sig_hash_id=msg.sig_hash,
                single_chain=msg.single_chain,
            )
        except ParamError:
            self._drop(DropReason.MALFORMED)
            return
        if self.params is not None:
            # a later bootstrap for a chain we missed: static parameters must not change,
            # and its interval must be one the sender can have reached (RFC 5776 §4.3)
            if params != self.params:
                self._drop(DropReason.MALFORMED)
                return
            if self.d_t is not None and msg.i > (
                (now - self._t0_posix + self._dt_s) / self._tint_s + 2
            ):
                self._drop(DropReason.UNSAFE)
                return
        elif self.group_key is not None and (
            not params.group_mac or params.group_mac_id != self.group_mac_id
        ):
            self._drop(DropReason.BAD_GROUP_MAC)
            return
        elif not self._plausible_first(params, msg, now):
            self._drop(DropReason.UNSAFE)
            return
        z = bytearray(data)
        so = off + ea.BOOTSTRAP_FIXED + ea.pad4(len(msg.commitment))
        z[so : so + ea.pad4(len(msg.signature))] = bytes(ea.pad4(len(msg.signature)))
        if msg.group_mac is not None:
            end = off + (data[off + 1] << 2)
            z[end - 4 : end] = b"\0\0\0\0"
        if not self._signature_ok(
            data, bytes(z), msg.signature, msg.sig_algo, msg.sig_hash, meta, now
        ):
            return
        if self.params is not None:
            assert self.keys is not None
            self.keys.add_commitment(params.chain_of(msg.i), msg.commitment)
            self.events.append(NewChain(params.chain_of(msg.i)))
            return
        self.params = params
        self._t0_posix = (params.t0_ntp - _POSIX_OFFSET_NTP) / NTP_ONE_SECOND
        self._tint_s = params.tint_ms / 1000.0
        self._sig = (msg.sig_algo, msg.sig_hash)
        if msg.d_o_t is not None:
            self._d_o_t = msg.d_o_t if msg.d_o_t_positive else -msg.d_o_t
        self.keys = KeyVerifierSet(params, max_steps=self.max_key_walk)
        self.keys.add_commitment(params.chain_of(msg.i), msg.commitment)
        self._kp = PRF_KEY_LEN[params.prf_id]
        self._km = MAC_LEN[params.mac_id]
        self._g = params.group_mac_len
        lay = ea.TagLayout(self._kp, self._km, 0, params.group_mac)
        self._tag_len = {t: ea.tag_length(t, lay) for t in range(16)}
        for t in (0, *range(5, 16)):
            self._tag_len[t] = -1
        if self.sync == "indirect":
            self._set_dt(indirect_dt_from_ms(self.max_clock_error_ms, self._d_o_t, self.d_err_ms))
        elif self.sync_client.d_t is not None:
            self._set_dt(self.sync_client.d_t)
        self.events.append(Bootstrapped(params))

    def _plausible_first(self, params: TeslaParams, msg: ea.Bootstrap, now: float) -> bool:
        """Indirect sync, before the first bootstrap: its interval index must be one the
        sender can be in now, given its own T0 and T_int, the clock-error bound and
        :data:`BOOTSTRAP_TIME_SLACK` (a receiver whose clock is wrong beyond its bound
        still gets the bootstrap, then counts its datagrams ``unsafe``); a forgery
        claiming another chain or another time costs no RSA.  (Direct sync: the offset
        is unknown before the first exchange, not checked.)"""
        if self.sync != "indirect":
            return True
        tint = params.tint_ms / 1000.0
        t0 = (params.t0_ntp - _POSIX_OFFSET_NTP) / NTP_ONE_SECOND
        slack = self.max_clock_error_ms / 1000.0 + self.d_err_ms / 1000.0 + BOOTSTRAP_TIME_SLACK
        if msg.d_o_t is not None:
            slack += msg.d_o_t / NTP_ONE_SECOND
        return (now - slack - t0) / tint - params.d - 2 <= msg.i <= (now + slack - t0) / tint + 1

    def _set_dt(self, d_t: int) -> None:
        self.d_t = d_t
        self._dt_s = d_t / NTP_ONE_SECOND
        self._bounds.clear()
        if self.params is not None:
            for w, ar in self._pending.items():
                ar.lo, ar.hi = self._interval_bounds(w)
        self._ready = self.params is not None
        self.events.append(TimeSynchronized(d_t))

    def _sync_response(self, data: bytes, off: int, now: float, meta: Any) -> None:
        if not self.sync_client.has_pending():
            self._drop(DropReason.REPLAY)  # RFC 5776 §6.2.1: no pending request
            return
        if self._out_of_budget(data, meta, now):
            return
        algo, h = self._sig or (1, 3)
        sl = (self.public_key.key_size + 7) // 8
        lay = ea.TagLayout(32, 16, sl, self.group_key is not None)
        try:
            msg = ea.decode(data, off, lay, accept_legacy_sync_types=self.accept_legacy_sync_types)
        except DecodeError:
            self._drop(DropReason.MALFORMED)
            return
        assert isinstance(msg, ea.SyncResponse)
        if not self._check_group_mac(data, off, msg.group_mac is not None):
            self._drop(DropReason.BAD_GROUP_MAC)
            return
        t_r = ntp_from_wire(msg.t_r, posix_to_ntp(now))
        if not self.sync_client.is_pending(t_r):
            self._drop(DropReason.REPLAY)
            return
        z = bytearray(data)
        z[off + 20 : off + 20 + ea.pad4(sl)] = bytes(ea.pad4(sl))
        if msg.group_mac is not None:
            end = off + (data[off + 1] << 2)
            z[end - 4 : end] = b"\0\0\0\0"
        if not self._signature_ok(data, bytes(z), msg.signature, algo, h, meta, now):
            return
        t_s = ntp_from_wire(msg.t_s, t_r)
        d_t = self.sync_client.on_response(t_s, t_r, True)
        if d_t is not None and self.sync == "direct":
            self._set_dt(d_t)

    def make_sync_request(self, now: float) -> bytes:
        """A Direct Time Synchronization Request packet (Type 5) to send to the sender."""
        t_r = self.sync_client.make_request(posix_to_ntp(now))
        g = self.group_key is not None
        msg = ea.SyncRequest(self.asid, t_r & ((1 << 64) - 1), bytes(4) if g else None)
        ctl = bytearray(control_header(self.protocol, self.template))
        off = ctl[self._hb] << 2
        ext = ea.encode(msg)
        pkt = insert_ext(ctl, ext, self.protocol)
        if g:
            assert self._gctx is not None
            end = off + len(ext)
            pkt[end - 4 : end] = self._gctx.compute(pkt)
        self._count("tesla.sync_request")
        return bytes(pkt)

