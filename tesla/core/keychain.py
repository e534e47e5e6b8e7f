"""One-way key chains (RFC 5776 §3.1.2, RFC 4082 §3.2): generation, sender storage
strategies, receiver verification, several chains per session.

Indices: inside one chain keys are K_0..K_N (local index t), K_{t-1} = F(K_t), K_N is
the random primary key, the commitment is F(K_0).  In a session, chain j covers the
global indices j(N+1) .. j(N+1)+N (:class:`KeyChainSet`, :class:`KeyVerifierSet`), and
there is no F relation across chains.

Sender storage strategies share one interface (:class:`ChainStore`):
``key(t)`` for non-decreasing t (plus a look-back window so that K_{i-d} stays
reachable while K_i is being used), ``mac_key(t)``, ``commitment``:

* :class:`FullChain` - all N+1 keys (O(N) memory, O(1) per key);
* :class:`CheckpointChain` - a key every ceil(sqrt(N+1)) positions, one segment of
  keys recomputed at a time (O(sqrt N) memory, 1 PRF call per key amortized,
  random access in O(sqrt N));
* :class:`FractalChain` - binary "fractal" pebbling after Jakobsson (FC 2002) /
  Coppersmith-Jakobsson: one pebble per level plus the pebble that moves at speed 2
  towards its next position, so O(log N) memory and at most 2 PRF calls per level per
  key (worst case O(log N), amortized about log2(N)/2).
"""

from __future__ import annotations

import enum
import os
import threading
from collections.abc import Callable, Container, Sequence
from dataclasses import dataclass, field
from math import isqrt

from cryptography.hazmat.primitives.hmac import HMAC

from tesla.core.crypto import _HASH_CLASSES, F_MESSAGE, F, F_iter, F_prime, constant_time_equal
from tesla.core.params import D_MAX, DEFAULT_PRF, PRF_KEY_LEN, TeslaParams

#: default number of already-output keys a sequential store keeps reachable
#: (>= the largest d, so K_{i-d} can always be fetched after K_i)
DEFAULT_LOOKBACK = D_MAX + 1
#: default bound on the number of F steps a receiver walks to verify one key
#: (RFC 5776 sets none; RFC 4082 §3.7 suggests bounding it; see docs/tesla-choices.md)
DEFAULT_MAX_KEY_WALK = 100_000
#: default number of verified keys a receiver keeps per chain (older ones re-derived)
DEFAULT_VERIFIED_KEYS_KEPT = 1024


def _walk(primary_key: bytes, n_chain: int, prf_id: int, every: int) -> list[bytes] | None:
    """K_t for t = 0, ``every``, ... below ``n_chain`` from the native kernel's chain walk
    (a step ~0.3 us instead of ~1 us: a chain of 6000 keys is 2 ms, not a 16 ms stall of
    the sender where a chain switch needs the next one), None without the kernel."""
    from tesla.mac import kernel

    got = kernel.chain_walk(prf_id, primary_key, n_chain, F_MESSAGE, every)
    if got is None:
        return None
    size = len(got) // ((n_chain - 1) // every + 1) if n_chain else 0
    return [got[a : a + size] for a in range(0, len(got), size)] if size else []


def generate_chain(primary_key: bytes, n_chain: int, prf_id: int = DEFAULT_PRF) -> list[bytes]:
    """[K_0, ..., K_N] from K_N = ``primary_key`` with K_{t-1} = F(K_t).

    The native kernel's walk, else a tight loop over ``cryptography``'s HMAC (faster
    than ``hmac.digest`` here).
    """
    walked = _walk(primary_key, n_chain, prf_id, 1)
    if walked is not None:
        walked.append(primary_key)
        return walked
    alg = _HASH_CLASSES[prf_id]()
    msg = F_MESSAGE
    out = [primary_key]
    append = out.append
    k = primary_key
    for _ in range(n_chain):
        h = HMAC(k, alg)
        h.update(msg)
        k = h.finalize()
        append(k)
    out.reverse()
    return out


def commitment_of(k0: bytes, prf_id: int = DEFAULT_PRF) -> bytes:
    """Chain commitment F(K_0) (RFC 5776 §3.4.1; per chain F(K_{j(N+1)}))."""
    return F(k0, prf_id)


def mac_key_of(k: bytes, prf_id: int = DEFAULT_PRF) -> bytes:
    """K'_i = F'(K_i)."""
    return F_prime(k, prf_id)


def new_primary_key(prf_id: int = DEFAULT_PRF, rng: Callable[[int], bytes] = os.urandom) -> bytes:
    """Random K_N of n_p/8 bytes from a CSPRNG."""
    return rng(PRF_KEY_LEN[prf_id])


# --------------------------------------------------------------------------------------
# sender storage strategies
# --------------------------------------------------------------------------------------


class ChainStore:
    """Common interface of the sender storage strategies (one chain, local indices)."""

    name = "abstract"

    def __init__(self, primary_key: bytes, n_chain: int, prf_id: int = DEFAULT_PRF) -> None:
        if n_chain < 1:
            raise ValueError("n_chain must be >= 1")
        if prf_id not in PRF_KEY_LEN:
            raise ValueError(f"unsupported PRF type {prf_id}")
        self.primary_key = primary_key
        self.n_chain = n_chain
        self.prf_id = prf_id
        self.commitment = b""

    def key(self, t: int) -> bytes:  # pragma: no cover - interface
        raise NotImplementedError

    def mac_key(self, t: int) -> bytes:
        return F_prime(self.key(t), self.prf_id)

    def _check(self, t: int) -> None:
        if not 0 <= t <= self.n_chain:
            raise IndexError(f"key index {t} outside chain 0..{self.n_chain}")


class FullChain(ChainStore):
    """Every key in memory: O(N) memory, any access order."""

    name = "full"

    def __init__(self, primary_key: bytes, n_chain: int, prf_id: int = DEFAULT_PRF) -> None:
        super().__init__(primary_key, n_chain, prf_id)
        self.keys = generate_chain(primary_key, n_chain, prf_id)
        self.commitment = F(self.keys[0], prf_id)

    def key(self, t: int) -> bytes:
        self._check(t)
        return self.keys[t]


class CheckpointChain(ChainStore):
    """A stored key every ``spacing`` (default ceil(sqrt(N+1))) indices; the segment in
    use is recomputed from the checkpoint above it.  Two segments are cached so that
    alternating K_i / K_{i-d} across a segment boundary does not thrash.  Any access
    order works (cost <= one segment)."""

    name = "checkpoint"

    def __init__(
        self,
        primary_key: bytes,
        n_chain: int,
        prf_id: int = DEFAULT_PRF,
        spacing: int | None = None,
    ) -> None:
        super().__init__(primary_key, n_chain, prf_id)
        n = n_chain + 1
        s = spacing if spacing is not None else max(1, isqrt(n - 1) + 1)
        if s < 1:
            raise ValueError("spacing must be >= 1")
        self.spacing = s
        cps: dict[int, bytes] = {n_chain: primary_key}
        walked = _walk(primary_key, n_chain, prf_id, s)
        if walked is not None:
            cps.update(zip(range(0, n_chain, s), walked, strict=True))
            k = walked[0] if walked else primary_key
        else:
            alg = _HASH_CLASSES[prf_id]()
            msg = F_MESSAGE
            k = primary_key
            for t in range(n_chain - 1, -1, -1):
                h = HMAC(k, alg)
                h.update(msg)
                k = h.finalize()
                if t % s == 0:
                    cps[t] = k
        self.checkpoints = cps
        self.commitment = F(k, prf_id)
        self._segs: dict[int, list[bytes]] = {}
        self._lru: list[int] = []

    def _segment(self, seg: int) -> list[bytes]:
        keys = self._segs.get(seg)
        if keys is not None:
            return keys
        s = self.spacing
        lo = seg * s
        top = min(lo + s, self.n_chain)
        # generate_chain(...)[x] = K_{lo + x}
        keys = generate_chain(self.checkpoints[top], top - lo, self.prf_id)[:s]
        self._segs[seg] = keys
        self._lru.append(seg)
        if len(self._lru) > 2:
            del self._segs[self._lru.pop(0)]
        return keys

    def key(self, t: int) -> bytes:
        self._check(t)
        seg, off = divmod(t, self.spacing)
        return self._segment(seg)[off]


class FractalChain(ChainStore):
    """Binary fractal traversal, O(log N) pebbles, <= 2 PRF calls per level per key.

    Virtual positions v = t + (2^k - (N+1)), 2^k >= N+1, so that the seed K_N sits at
    v = 2^k - 1.  For each level j (1 <= j < k) the pebble of the current period of
    length 2^j sits at P_j(v) = v | (2^j - 1); the pebble for the next period is either
    a copy of level j+1's current pebble (no work) or is walked down 2^j steps from
    level j+1's next pebble, two F calls per output, during the first half of the
    period, which is exactly when it is needed by level j-1.  K_t itself is the level-1
    pebble or one F call below it.  Keys already output stay reachable for
    ``lookback`` positions; an older request raises ValueError.
    """

    name = "fractal"

    def __init__(
        self,
        primary_key: bytes,
        n_chain: int,
        prf_id: int = DEFAULT_PRF,
        lookback: int = DEFAULT_LOOKBACK,
    ) -> None:
        super().__init__(primary_key, n_chain, prf_id)
        n = n_chain + 1
        k = max(1, (n - 1).bit_length())
        top = (1 << k) - 1
        self._k = k
        self._top = top
        self._off = (1 << k) - n
        self._alg = _HASH_CLASSES[prf_id]()
        self.lookback = max(0, lookback)
        v0 = self._off
        # level arrays, index 1..k (level k = the seed)
        self._cur_pos = [0] * (k + 1)
        self._cur_val: list[bytes] = [b""] * (k + 1)
        self._next_pos: list[int | None] = [None] * (k + 1)
        self._next_val: list[bytes] = [b""] * (k + 1)
        self._job_pos = [0] * (k + 1)  # position of job_val; job active iff > next_pos
        self._job_val: list[bytes] = [b""] * (k + 1)
        self._cur_pos[k] = top
        self._cur_val[k] = primary_key
        want: dict[int, bytes] = {}
        for j in range(1, k):
            cp = v0 | ((1 << j) - 1)
            self._cur_pos[j] = cp
            want[cp] = b""
            np_ = cp + (1 << j)
            if np_ <= top:
                self._next_pos[j] = np_
                self._job_pos[j] = np_
                want[np_] = b""
        # one pass from the seed down to v0 (N calls, needed anyway for the commitment)
        kv = primary_key
        msg = F_MESSAGE
        alg = self._alg
        if top in want:
            want[top] = kv
        for v in range(top - 1, v0 - 1, -1):
            h = HMAC(kv, alg)
            h.update(msg)
            kv = h.finalize()
            if v in want:
                want[v] = kv
        self.commitment = F(kv, prf_id)
        for j in range(1, k):
            self._cur_val[j] = want[self._cur_pos[j]]
            np2 = self._next_pos[j]
            if np2 is not None:
                self._next_val[j] = want[np2]
                self._job_val[j] = want[np2]
        self._v = v0  # virtual position of the next key to output
        self._t_last = -1  # last local index output
        self._recent: dict[int, bytes] = {}
        self._active: list[int] = []  # levels whose next pebble is being walked
        self.calls = 0  # PRF calls after construction (for tests / benchmarks)

    @property
    def pebbles(self) -> int:
        """Number of chain keys currently stored (excluding the look-back window)."""
        n = 1  # seed
        for j in range(1, self._k):
            n += 1 + (self._next_pos[j] is not None) + (self._job_pos[j] != self._next_pos[j])
        return n

    def _advance(self) -> bytes:
        """Output the key at virtual position self._v, then move to v + 1."""
        v = self._v
        k = self._k
        alg = self._alg
        msg = F_MESSAGE
        if v != self._off:
            cur_pos, cur_val = self._cur_pos, self._cur_val
            next_pos, next_val = self._next_pos, self._next_val
            job_pos, job_val = self._job_pos, self._job_val
            # rollovers of the levels whose period starts at v, highest level first
            # (level j+1 must roll before level j copies from it)
            tz = (v & -v).bit_length() - 1
            for j in range(min(tz, k - 1), 0, -1):
                size = 1 << j
                np_ = next_pos[j]
                assert np_ is not None and job_pos[j] == np_, "pebble schedule broken"
                cur_pos[j] = np_
                cur_val[j] = next_val[j]
                tgt = v + 2 * size - 1
                if tgt > self._top:
                    next_pos[j] = None
                elif (v >> j) & 1 == 0:
                    # next period starts on an odd multiple of 2^j: copy level j+1's pebble
                    next_pos[j] = tgt
                    next_val[j] = cur_val[j + 1]
                    job_pos[j] = tgt
                else:
                    # walk 2^j steps down from level j+1's next pebble, 2 per output
                    src = next_pos[j + 1]
                    assert src is not None and job_pos[j + 1] == src == tgt + size
                    next_pos[j] = tgt
                    job_pos[j] = src
                    job_val[j] = next_val[j + 1]
                    self._active.append(j)
            # work: every active job moves two steps
            if self._active:
                still = []
                for j in self._active:
                    jp = job_pos[j]
                    np2 = next_pos[j]
                    assert np2 is not None
                    hm = HMAC(job_val[j], alg)
                    hm.update(msg)
                    jv = hm.finalize()
                    jp -= 1
                    if jp > np2:
                        hm = HMAC(jv, alg)
                        hm.update(msg)
                        jv = hm.finalize()
                        jp -= 1
                        self.calls += 2
                    else:
                        self.calls += 1
                    job_pos[j] = jp
                    job_val[j] = jv
                    if jp == np2:
                        next_val[j] = jv
                    else:
                        still.append(j)
                self._active = still
        # output K at v from the level-1 pebble (or the seed when k == 1)
        self._v = v + 1
        if self._cur_pos[1] == v:
            return self._cur_val[1]
        hm = HMAC(self._cur_val[1], alg)
        hm.update(msg)
        self.calls += 1
        return hm.finalize()

    def key(self, t: int) -> bytes:
        self._check(t)
        if t == self.n_chain:
            return self.primary_key
        if t <= self._t_last:
            try:
                return self._recent[t]
            except KeyError:
                raise ValueError(
                    f"FractalChain: key {t} is older than the look-back window "
                    f"({self.lookback}) behind {self._t_last}"
                ) from None
        recent = self._recent
        lb = self.lookback
        kv = b""
        while self._t_last < t:
            kv = self._advance()
            self._t_last += 1
            tl = self._t_last
            if lb:
                recent[tl] = kv
                recent.pop(tl - lb, None)
        return kv


STRATEGIES: dict[str, type[ChainStore]] = {
    "full": FullChain,
    "checkpoint": CheckpointChain,
    "fractal": FractalChain,
}
DEFAULT_STRATEGY = "checkpoint"


# --------------------------------------------------------------------------------------
# sender: several chains in one session
# --------------------------------------------------------------------------------------


#: chains of at most this many keys are built synchronously when first needed (about
#: 40 ms of PRF calls, under one default T_int); longer ones in a background thread
#: (:class:`KeyChainSet` ``background``), so no thread exists in ordinary sessions
SYNC_BUILD_MAX_KEYS = 16384


class KeyChainSet:
    """The sender's chains of one session, global key/interval indices.

    Chain j (covering j(N+1)..j(N+1)+N) is created on first use from a fresh random
    primary key (or ``primary_keys[j]`` when given, for tests/vectors).  Chains older
    than j-1 are dropped when chain j is created.  Provides the values of the four tag
    types: K_i / K'_i (MAC), K_{i-d} (Type 1), the next chain's commitment (Type 3) and
    the old chain's last key K_{j(N+1)-1} (Type 4).
    """

    def __init__(
        self,
        params: TeslaParams,
        strategy: str | type[ChainStore] = DEFAULT_STRATEGY,
        primary_keys: Sequence[bytes] | None = None,
        rng: Callable[[int], bytes] = os.urandom,
        background: bool = False,
    ) -> None:
        self.params = params
        self._cls = STRATEGIES[strategy] if isinstance(strategy, str) else strategy
        self._primary = list(primary_keys) if primary_keys is not None else None
        self._rng = rng
        self._chains: dict[int, ChainStore] = {}
        #: build chain j+1 in a daemon thread as soon as chain j is created, so the
        #: O(N) construction does not stall the sender when the Type 3 commitment of
        #: the next chain is first needed (the GIL is shared, so the sender keeps
        #: running, just slower, during the build)
        self.background = background
        self._building: dict[int, tuple[threading.Thread, list[ChainStore]]] = {}

    def _primary_key(self, j: int) -> bytes:
        if self._primary is not None:
            if j >= len(self._primary):
                raise IndexError(f"no primary key given for chain {j}")
            return self._primary[j]
        return new_primary_key(self.params.prf_id, self._rng)

    def _check_chain_index(self, j: int) -> None:
        if j < 0:
            raise IndexError("negative chain index")
        if self.params.single_chain and j > 0:
            raise IndexError("single-chain session (S=1): the key chain is exhausted")

    def prebuild(self, j: int) -> None:
        """Start building chain j in a background thread (no-op if known/building)."""
        if j in self._chains or j in self._building:
            return
        self._check_chain_index(j)
        pk = self._primary_key(j)
        box: list[ChainStore] = []
        p = self.params

        def run() -> None:
            box.append(self._cls(pk, p.n_chain, p.prf_id))

        th = threading.Thread(target=run, name=f"tesla-chain-{j}", daemon=True)
        self._building[j] = (th, box)
        th.start()

    def chain(self, j: int) -> ChainStore:
        """The store of chain j (created if needed: O(N) PRF calls)."""
        c = self._chains.get(j)
        if c is not None:
            return c
        self._check_chain_index(j)
        pending = self._building.pop(j, None)
        if pending is not None:
            pending[0].join()
            if not pending[1]:
                raise RuntimeError(f"background build of chain {j} failed")
            c = pending[1][0]
        else:
            c = self._cls(self._primary_key(j), self.params.n_chain, self.params.prf_id)
        self._chains[j] = c
        for old in [x for x in self._chains if x < j - 1]:
            del self._chains[old]
        if self.background and not self.params.single_chain:
            try:
                self.prebuild(j + 1)
            except IndexError:
                pass  # no more primary keys given
        return c

    def key(self, i: int) -> bytes:
        """K_i (global index)."""
        j, t = divmod(i, self.params.n_chain + 1)
        return self.chain(j).key(t)

    def mac_key(self, i: int) -> bytes:
        """K'_i = F'(K_i)."""
        return F_prime(self.key(i), self.params.prf_id)

    def commitment(self, j: int) -> bytes:
        """C_j = F(K_{j(N+1)}) (bootstrap: chain of the current interval)."""
        return self.chain(j).commitment

    def disclosed_key(self, i: int) -> bytes:
        """K_{i-d}, the key a Type 1 tag of interval i discloses (i >= d)."""
        x = i - self.params.d
        if x < 0:
            raise IndexError("no key is disclosed in intervals 0..d-1 (use Type 2)")
        return self.key(x)

    def next_chain_commitment(self, i: int) -> bytes:
        """Type 3 content: F(K_{(j+1)(N+1)}), j = floor(i/(N+1))."""
        return self.commitment(self.params.chain_of(i) + 1)

    def old_chain_last_key(self, i: int) -> bytes:
        """Type 4 content: K_{j(N+1)-1}, the primary key of chain j-1 (j >= 1)."""
        j = self.params.chain_of(i)
        if j < 1:
            raise IndexError("no old chain during chain 0")
        return self.chain(j - 1).primary_key


# --------------------------------------------------------------------------------------
# receiver
# --------------------------------------------------------------------------------------


class KeyStatus(enum.Enum):
    NEW = "new"  # verified now (F^{x-v}(K_x) == K_v)
    KNOWN = "known"  # index already legitimate and the value matches
    MISMATCH = "mismatch"  # wrong key: MUST discard the packet
    OUT_OF_CHAIN = "out_of_chain"  # index not in this chain (never walk across)
    TOO_FAR = "too_far"  # walk would exceed max_steps: not verified
    UNVERIFIABLE = "unverifiable"  # no commitment known for that chain (RFC 5776 §4.3)
    BAD_LENGTH = "bad_length"


@dataclass
class KeyCheck:
    status: KeyStatus
    #: keys that became legitimate, increasing index: (index, K_index), v < w <= x;
    #: only the verifier's ``keep`` most recent and the ``wanted`` ones (KeyVerifier.check)
    new_keys: list[tuple[int, bytes]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status in (KeyStatus.NEW, KeyStatus.KNOWN)


class KeyVerifier:
    """Verifies disclosed keys of ONE chain against its commitment (RFC 5776 §4.3 step 4).

    ``commitment`` is the virtual verified key at ``last_verified_index`` (j(N+1)-1 for
    chain j; -1 for chain 0).  Keys are accepted only for indices in
    ``last_verified_index+1 .. chain_last`` (``chain_last`` defaults to
    ``last_verified_index + n_chain + 1`` when n_chain is given, else unbounded), a walk
    is at most ``max_steps`` F calls, and the ``keep`` most recent verified keys are kept
    (older legitimate ones are re-derived for the "new key index" comparison).
    """

    def __init__(
        self,
        commitment: bytes,
        last_verified_index: int,
        *,
        prf_id: int = DEFAULT_PRF,
        n_chain: int | None = None,
        chain_last: int | None = None,
        max_steps: int = DEFAULT_MAX_KEY_WALK,
        keep: int = DEFAULT_VERIFIED_KEYS_KEPT,
    ) -> None:
        self.prf_id = prf_id
        self.key_len = PRF_KEY_LEN[prf_id]
        if len(commitment) != self.key_len:
            raise ValueError("commitment length does not match the PRF output length")
        self.anchor_index = last_verified_index
        self.chain_first = last_verified_index + 1
        if chain_last is None and n_chain is not None:
            chain_last = last_verified_index + n_chain + 1
        self.chain_last = chain_last
        self.max_steps = max_steps
        self.keep = max(1, keep)
        self._known: dict[int, bytes] = {last_verified_index: commitment}
        self.highest = last_verified_index
        self._floor = last_verified_index  # lowest index still in _known

    def legitimate_key(self, x: int) -> bytes | None:
        """K_x if it is legitimate (known or derivable within max_steps), else None."""
        if x > self.highest or x < self.chain_first:
            return None
        k = self._known.get(x)
        if k is not None:
            return k
        # derive from the nearest kept key above x
        above = min((y for y in self._known if y > x), default=None)
        if above is None or above - x > self.max_steps:
            return None
        return F_iter(self._known[above], above - x, self.prf_id)

    def check(self, x: int, key: bytes, wanted: Container[int] | None = None) -> KeyCheck:
        """Process a disclosed key K_x: new-index test then key-verification test.

        A NEW key returns the keys it made legitimate that the caller can use: the
        ``keep`` most recent ones and those whose index is in ``wanted`` (the receiver's
        pending intervals); the others are re-derived on demand (:meth:`legitimate_key`)."""
        if len(key) != self.key_len:
            return KeyCheck(KeyStatus.BAD_LENGTH)
        if x < self.chain_first or (self.chain_last is not None and x > self.chain_last):
            return KeyCheck(KeyStatus.OUT_OF_CHAIN)
        if x <= self.highest:
            known = self.legitimate_key(x)
            if known is None:
                return KeyCheck(KeyStatus.TOO_FAR)
            if constant_time_equal(known, key):
                return KeyCheck(KeyStatus.KNOWN)
            return KeyCheck(KeyStatus.MISMATCH)
        steps = x - self.highest
        if steps > self.max_steps:
            return KeyCheck(KeyStatus.TOO_FAR)
        # Walk K_x down to K_{highest+1} keeping only the ``keep`` most recent keys and
        # the ``wanted`` ones: a late joiner's first walk (up to max_steps) is never
        # materialised (memory O(keep), not O(steps)).
        base = self.highest + 1
        keep_from = x - self.keep + 1
        alg = _HASH_CLASSES[self.prf_id]()
        msg = F_MESSAGE
        kept = [(x, key)]
        k = key
        for idx in range(x - 1, base - 1, -1):
            h = HMAC(k, alg)
            h.update(msg)
            k = h.finalize()
            if idx >= keep_from or (wanted is not None and idx in wanted):
                kept.append((idx, k))
        if not constant_time_equal(F(k, self.prf_id), self._known[self.highest]):
            return KeyCheck(KeyStatus.MISMATCH)
        kept.reverse()
        for idx, kk in kept:
            if idx >= keep_from:
                self._known[idx] = kk
        self.highest = x
        self._evict()
        return KeyCheck(KeyStatus.NEW, kept)

    def verify(self, x: int, key: bytes) -> bool:
        """True iff K_x is legitimate (newly verified or equal to the known K_x)."""
        return self.check(x, key).ok

    def _evict(self) -> None:
        if len(self._known) <= self.keep:
            return
        for idx in sorted(self._known)[: len(self._known) - self.keep]:
            del self._known[idx]


class KeyVerifierSet:
    """Receiver key state for all chains of a session, one :class:`KeyVerifier` per
    chain (anchors kept per chain: chain j's commitment has the virtual index
    j(N+1)-1, the same number as the real last key of chain j-1)."""

    def __init__(
        self,
        params: TeslaParams,
        *,
        max_steps: int = DEFAULT_MAX_KEY_WALK,
        keep: int = DEFAULT_VERIFIED_KEYS_KEPT,
    ) -> None:
        self.params = params
        self.max_steps = max_steps
        self.keep = keep
        self.chains: dict[int, KeyVerifier] = {}

    def add_commitment(self, j: int, commitment: bytes) -> bool:
        """Store chain j's verified commitment (bootstrap or authenticated Type 3).

        Returns False (and changes nothing) if one is already stored."""
        if j in self.chains:
            return False
        p = self.params
        self.chains[j] = KeyVerifier(
            commitment,
            p.commitment_index(j),
            prf_id=p.prf_id,
            chain_last=p.chain_last(j),
            max_steps=self.max_steps,
            keep=self.keep,
        )
        return True

    def has_chain(self, j: int) -> bool:
        return j in self.chains

    def check(self, x: int, key: bytes, wanted: Container[int] | None = None) -> KeyCheck:
        """Disclosed key K_x (global index): routed to chain floor(x/(N+1)) only."""
        if x < 0:
            return KeyCheck(KeyStatus.OUT_OF_CHAIN)
        v = self.chains.get(self.params.chain_of(x))
        if v is None:
            return KeyCheck(KeyStatus.UNVERIFIABLE)
        return v.check(x, key, wanted)

    def verify(self, x: int, key: bytes) -> bool:
        return self.check(x, key).ok

    def legitimate_key(self, x: int) -> bytes | None:
        v = self.chains.get(self.params.chain_of(x)) if x >= 0 else None
        return None if v is None else v.legitimate_key(x)

    def drop_chains_before(self, j: int) -> None:
        """Forget chains < j (old-chain flush, RFC 5776 §4.4)."""
        for old in [c for c in self.chains if c < j]:
            del self.chains[old]
