"""RSA work of the TESLA receiver under forged signalling (issue 15).

Why: a bootstrap (Type 0, RFC 5776 §3.3.2) or a direct time-sync response (Type 6,
§3.3.4) is authenticated by an RSA signature, verified at arrival.  Each forged one
that passes the cheap checks cost one RSA verification (24 us with a 2048-bit key),
without a cache or a limit: an attacker could make the receiver spend its CPU there.

:class:`SignatureGate`, consulted by the verifier just before each RSA verification:

* **cache**: the verdicts of the last :data:`CACHE_ENTRIES` verified messages, keyed by
  the SHA-256 of the whole datagram: an identical message (a repeated genuine
  bootstrap, a replayed forgery) is never verified twice;
* **rate limit**: a token bucket per source address (:data:`SOURCE_RATE` verifications
  per second, burst :data:`SOURCE_BURST`; at most :data:`MAX_SOURCES` sources tracked,
  least recently used forgotten) and one for all sources together
  (:data:`GLOBAL_RATE`, burst :data:`GLOBAL_BURST`).  A refused message is counted
  ``drop.rate_limited`` and not verified.  Forgeries from other addresses cannot use
  up the genuine sender's own budget; the global bucket bounds the RSA work whatever
  the number of (spoofed) sources: at most ``GLOBAL_BURST + GLOBAL_RATE * t``
  verifications in t seconds (200/s x 24 us = 0.5% of a core).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Hashable

__all__ = ["TokenBucket", "SignatureGate"]

#: RSA verifications per second and burst allowed per source address
SOURCE_RATE = 10.0
SOURCE_BURST = 10.0
#: RSA verifications per second and burst allowed for all sources together
GLOBAL_RATE = 200.0
GLOBAL_BURST = 50.0
#: sources with a bucket (least recently used forgotten first)
MAX_SOURCES = 1024
#: verdicts remembered (SHA-256 of the datagram -> valid)
CACHE_ENTRIES = 256


class TokenBucket:
    """``rate`` tokens per second, at most ``burst``; starts full."""

    __slots__ = ("rate", "burst", "tokens", "t")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.t = now

    def refill(self, now: float) -> None:
        if now > self.t:
            self.tokens = min(self.burst, self.tokens + (now - self.t) * self.rate)
            self.t = now

    def take(self, now: float) -> bool:
        self.refill(now)
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


class SignatureGate:
    """Cache of signature verdicts and per-source / global RSA rate limits."""

    def __init__(
        self,
        source_rate: float = SOURCE_RATE,
        source_burst: float = SOURCE_BURST,
        global_rate: float = GLOBAL_RATE,
        global_burst: float = GLOBAL_BURST,
        max_sources: int = MAX_SOURCES,
        cache_entries: int = CACHE_ENTRIES,
    ) -> None:
        self.source_rate = source_rate
        self.source_burst = source_burst
        self.max_sources = max_sources
        self.cache_entries = cache_entries
        self._global: TokenBucket | None = None
        self.global_rate = global_rate
        self.global_burst = global_burst
        self._sources: OrderedDict[Hashable, TokenBucket] = OrderedDict()
        self._verdicts: OrderedDict[bytes, bool] = OrderedDict()
        #: RSA verifications admitted so far (for tests and stats)
        self.admitted = 0

    @staticmethod
    def digest(data: bytes) -> bytes:
        return hashlib.sha256(data).digest()

    def cached(self, digest: bytes) -> bool | None:
        """The verdict of an identical message verified before, else None."""
        v = self._verdicts.get(digest)
        if v is not None:
            self._verdicts.move_to_end(digest)
        return v

    def remember(self, digest: bytes, valid: bool) -> None:
        self._verdicts[digest] = valid
        self._verdicts.move_to_end(digest)
        while len(self._verdicts) > self.cache_entries:
            self._verdicts.popitem(last=False)

    def has_budget(self, source: Hashable, now: float) -> bool:
        """Whether :meth:`admit` would allow a verification now (takes nothing)."""
        g = self._global
        if g is not None:
            g.refill(now)
            if g.tokens < 1.0:
                return False
        b = self._sources.get(source)
        if b is None:
            return True
        b.refill(now)
        return b.tokens >= 1.0

    def admit(self, source: Hashable, now: float) -> bool:
        """Whether one RSA verification for a message from ``source`` may run at
        ``now`` (takes a token from its bucket and from the global one)."""
        g = self._global
        if g is None:
            g = self._global = TokenBucket(self.global_rate, self.global_burst, now)
        b = self._sources.get(source)
        if b is None:
            b = TokenBucket(self.source_rate, self.source_burst, now)
            self._sources[source] = b
            while len(self._sources) > self.max_sources:
                self._sources.popitem(last=False)
        else:
            self._sources.move_to_end(source)
        b.refill(now)
        g.refill(now)
        if b.tokens < 1.0 or g.tokens < 1.0:
            return False
        b.tokens -= 1.0
        g.tokens -= 1.0
        self.admitted += 1
        return True


def source_of(meta: object) -> Hashable:
    """The rate-limit key of a datagram's ``meta``: the host of an ``(host, port)``
    source address (the CLI passes it), else one shared key."""
    if isinstance(meta, tuple) and meta and isinstance(meta[0], str):
        return meta[0]
    return None
