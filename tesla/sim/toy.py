"""A tiny TESLA-like protocol used to test the simulator without the real engines.

It follows the sans-I/O Engine contract and the TESLA rules that matter to the
simulator (key chain, disclosure delay ``d``, safe-packet test with a clock bound
``D_t``, per-interval buffering, key and MAC verification, replay drop, bootstrap for
late joiners, a NACK round over the feedback path) with a trivial wire format.  It is
*not* the project's TESLA; :mod:`tesla.sim.engines` builds the real ones.

Wire format (big endian)::

    'TY' type(1) interval(4) key_index(4) key(16) toi(2) sbn(4) esi(4) payload MAC(16)
    type 0 = bootstrap: payload = T0(8, double) tint(8, double) d(1) K_0(16) sig(16)
    type 1 = data, type 2 = key only (empty payload), type 3 = NACK (receiver -> sender,
    payload = toi(2) + sbn(4)*, no MAC)
"""

from __future__ import annotations

import hashlib
import hmac
import math
import random
import struct
from collections import deque
from typing import Any

from alc.engine import Address, BatchEntry, count

HDR = struct.Struct("!2sBIIx16sHII")  # x: pad so the key sits at offset 12
HDR_LEN = HDR.size
MAC_LEN = 16
NO_KEY = 0xFFFFFFFF
SIGNER_SECRET = b"toy-signer-secret"  # stands for the sender's key pair


def _h(b: bytes) -> bytes:
    return hashlib.sha256(b).digest()[:16]


def _mac(key: bytes, msg: bytes) -> bytes:
    return hmac.digest(_h(b"mac" + key), msg, "sha256")[:MAC_LEN]


class ToySender:
    """Sends ``files`` (sizes in bytes) as blocks of ``k`` symbols + ``repair`` repair."""

    def __init__(
        self,
        *,
        files: list[int],
        t0: float,
        tint: float = 0.1,
        d: int = 2,
        rate_pps: float = 1000.0,
        symbol_size: int = 1000,
        k: int = 16,
        repair: int = 0,
        chain_length: int = 100000,
        bootstrap_period: float = 1.0,
        seed: int = 0,
        nack_rounds: int = 2,
        startup: float = 0.05,
    ) -> None:
        self.stats: dict[str, int] = {}
        self.t0, self.tint, self.d = t0, tint, d
        self.gap = 1.0 / rate_pps
        self.symbol_size, self.k, self.repair = symbol_size, k, repair
        rng = random.Random(seed)
        self.chain_length = chain_length
        self._tip = rng.randbytes(16)
        self._keys: dict[int, bytes] = {}
        self._make_chain()
        self.bootstrap_period = bootstrap_period
        self._next_boot = t0
        self._boots = 0
        self._next_send = t0 + startup  # let the first bootstrap arrive first
        self.queue: deque[tuple[int, int, int]] = deque()
        self.blocks: dict[int, int] = {}
        for toi, size in enumerate(files, start=1):
            nsym = max(1, math.ceil(size / symbol_size))
            nblk = math.ceil(nsym / k)
            self.blocks[toi] = nblk
            for sbn in range(nblk):
                kk = min(k, nsym - sbn * k)
                for esi in range(kk + repair):
                    self.queue.append((toi, sbn, esi))
        self.nack_rounds = nack_rounds
        self._done_at: float | None = None
        self._out: list[tuple[bytes, Address | None]] = []
        self._payload = bytes(symbol_size)

    def _make_chain(self) -> None:
        k = self._tip
        keys = [k]
        for _ in range(self.chain_length):
            k = _h(k)
            keys.append(k)
        keys.reverse()  # keys[0] = K_0 (commitment)
        self._chain = keys

    def key(self, i: int) -> bytes:
        return self._chain[i]

    def interval(self, now: float) -> int:
        return int((now - self.t0) // self.tint) + 1  # interval 1 starts at t0

    def _packet(self, typ: int, i: int, toi: int, sbn: int, esi: int, payload: bytes) -> bytes:
        j = i - self.d
        kidx, key = (j, self._chain[j]) if j >= 1 else (NO_KEY, bytes(16))
        body = HDR.pack(b"TY", typ, i, kidx, key, toi, sbn, esi) + payload
        return body + _mac(self._chain[i], body)

    def bootstrap(self, i: int) -> bytes:
        body = struct.pack("!ddB", self.t0, self.tint, self.d) + self._chain[0]
        body += hmac.digest(SIGNER_SECRET, body, "sha256")[:16]
        return HDR.pack(b"TY", 0, i, NO_KEY, bytes(16), 0, 0, 0) + body

    # Engine API
    def receive_datagram(self, data: bytes, addr: Address | None, now: float) -> None:
        if len(data) >= HDR_LEN and data[2] == 3:
            count(self.stats, "nack.received")
            (toi,) = struct.unpack_from("!H", data, HDR_LEN)
            if self.nack_rounds <= 0:
                return
            for off in range(HDR_LEN + 2, len(data) - 3, 4):
                (sbn,) = struct.unpack_from("!I", data, off)
                if (toi, sbn, 0) not in self.queue:
                    for esi in range(self.k):
                        self.queue.append((toi, sbn, esi))
            self._done_at = None

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address | None]]:
        out: list[tuple[bytes, Address | None]] = []
        i = self.interval(now)
        if now >= self._next_boot:
            out.append((self.bootstrap(i), None))
            # three at start, one tint apart (like the real sender), then periodic
            self._boots += 1
            self._next_boot += self.tint if self._boots < 3 else self.bootstrap_period
        while now >= self._next_send:
            self._next_send += self.gap
            if self.queue:
                toi, sbn, esi = self.queue.popleft()
                out.append((self._packet(1, i, toi, sbn, esi, self._payload), None))
                count(self.stats, "sent.data")
            else:
                if self._done_at is None:
                    self._done_at = now
                if now < self._done_at + (self.d + 2) * self.tint:
                    # one key-only packet per interval after the data, to disclose keys
                    if self.interval(now - self.gap) != i or now == self._done_at:
                        out.append((self._packet(2, i, 0, 0, 0, b""), None))
                    self._next_send = max(self._next_send, now + self.gap)
                else:
                    self._next_send = math.inf
                    if self.nack_rounds > 0:
                        self.nack_rounds -= 1
        count(self.stats, "sent", len(out))
        return out

    def get_timer(self) -> float | None:
        t = min(self._next_send, self._next_boot)
        if self._next_send == math.inf and self._done_at is not None:
            return None
        return t

    def handle_timer(self, now: float) -> None:
        pass

    def next_event(self) -> Any | None:
        return None


class ToyFileReceiver(BatchEntry):
    """The unauthenticated layer: counts distinct symbols per block, emits completions."""

    def __init__(self, k: int, repair: int, symbol_size: int) -> None:
        self.k, self.repair, self.symbol_size = k, repair, symbol_size
        self.stats: dict[str, int] = {}
        self.have: dict[tuple[int, int], set[int]] = {}
        self.done_blocks: set[tuple[int, int]] = set()
        self.events: deque[Any] = deque()
        self.nblocks: dict[int, int] = {}
        self.nsym: dict[int, int] = {}
        self.completed: set[int] = set()

    def receive_datagram(self, data: bytes, addr: Address | None, now: float) -> None:
        _m, typ, _i, _ki, _key, toi, sbn, esi = HDR.unpack_from(data)
        if typ != 1:
            return
        count(self.stats, "symbols")
        key = (toi, sbn)
        if key in self.done_blocks:
            return
        s = self.have.setdefault(key, set())
        s.add(esi)
        nsym = self.nsym.get(toi, 0)
        need = min(self.k, nsym - sbn * self.k) if nsym else self.k
        if len(s) >= need:
            self.done_blocks.add(key)
            del self.have[key]

    def announce(self, toi: int, nsym: int) -> None:
        self.nsym[toi] = nsym
        self.nblocks[toi] = math.ceil(nsym / self.k)

    def check_complete(self, toi: int, now: float) -> None:
        n = self.nblocks.get(toi)
        if n is None or toi in self.completed:
            return
        if all((toi, b) in self.done_blocks for b in range(n)):
            self.completed.add(toi)
            self.events.append({"type": "file", "toi": toi, "time": now})

    def missing(self, toi: int) -> list[int]:
        n = self.nblocks.get(toi, 0)
        return [b for b in range(n) if (toi, b) not in self.done_blocks]


class ToyReceiver(BatchEntry):
    """TESLA-like verifier around :class:`ToyFileReceiver` (attribute ``inner``)."""

    def __init__(
        self,
        *,
        d_t: float,
        files: list[int],
        k: int = 16,
        repair: int = 0,
        symbol_size: int = 1000,
        max_buffer: int = 100000,
        nack: bool = False,
    ) -> None:
        self.stats: dict[str, int] = {}
        self.d_t = d_t
        self.inner = ToyFileReceiver(k, repair, symbol_size)
        for toi, size in enumerate(files, start=1):
            nsym = max(1, math.ceil(size / symbol_size))
            self.inner.announce(toi, nsym)
        self.files = len(files)
        self.t0 = self.tint = 0.0
        self.d = 0
        self.booted = False
        self.verified_index = 0
        self.verified_key = b""
        self.keys: dict[int, bytes] = {}
        self.buffer: dict[int, list[bytes]] = {}
        self.buffered = 0
        self.max_buffer = max_buffer
        self.seen: set[bytes] = set()
        self.nack = nack
        self._out: list[tuple[bytes, Address | None]] = []

    def _verify_key(self, j: int, key: bytes) -> bool:
        if j in self.keys:
            return self.keys[j] == key
        if j <= self.verified_index:
            return False
        k = key
        for _ in range(j - self.verified_index):
            k = _h(k)
        if k != self.verified_key:
            return False
        # fill derived keys
        k = key
        for idx in range(j, self.verified_index, -1):
            self.keys[idx] = k
            k = _h(k)
        self.verified_index, self.verified_key = j, key
        return True

    def receive_datagram(self, data: bytes, addr: Address | None, now: float) -> None:
        if len(data) < HDR_LEN or data[:2] != b"TY":
            count(self.stats, "drop.malformed")
            return
        magic, typ, i, kidx, key, toi, sbn, esi = HDR.unpack_from(data)
        if typ == 0:
            body = data[HDR_LEN:]
            if len(body) != 8 + 8 + 1 + 16 + 16:
                count(self.stats, "drop.malformed")
                return
            if hmac.digest(SIGNER_SECRET, body[:-16], "sha256")[:16] != body[-16:]:
                count(self.stats, "drop.bad_signature")
                return
            if not self.booted:
                self.t0, self.tint, self.d = struct.unpack_from("!ddB", body)
                self.verified_key = body[17:33]
                self.verified_index = 0
                self.booted = True
                count(self.stats, "bootstrap")
            return
        if typ == 3:
            return
        if not self.booted:
            count(self.stats, "drop.no_bootstrap")
            return
        # safe-packet test on the local arrival time
        if math.floor((now + self.d_t - self.t0) / self.tint) + 1 >= i + self.d:
            count(self.stats, "drop.unsafe")
            return
        if kidx != NO_KEY:
            if kidx > i - self.d or not self._verify_key(kidx, key):
                count(self.stats, "drop.bad_key")
                return
            self._release(kidx, now)
        if self.buffered >= self.max_buffer:
            count(self.stats, "drop.evicted")
            return
        self.buffer.setdefault(i, []).append(data)
        self.buffered += 1
        if i in self.keys:
            self._release(i, now)
        if typ == 2 and self.nack and kidx != NO_KEY:
            self._maybe_nack(now)

    def _release(self, upto: int, now: float) -> None:
        for i in sorted(j for j in self.buffer if j <= upto and j in self.keys):
            pkts = self.buffer.pop(i)
            self.buffered -= len(pkts)
            key = self.keys[i]
            for p in pkts:
                if not hmac.compare_digest(_mac(key, p[:-MAC_LEN]), p[-MAC_LEN:]):
                    count(self.stats, "drop.bad_mac")
                    continue
                tag = p[-MAC_LEN:]
                if tag in self.seen:
                    count(self.stats, "drop.replay")
                    continue
                self.seen.add(tag)
                count(self.stats, "authenticated")
                self.inner.receive_datagram(p, None, now)
                toi = struct.unpack_from("!H", p, 28)[0]
                self.inner.check_complete(toi, now)

    def _maybe_nack(self, now: float) -> None:
        for toi in range(1, self.files + 1):
            miss = self.inner.missing(toi)
            if miss and toi not in self.inner.completed:
                body = HDR.pack(b"TY", 3, 0, NO_KEY, bytes(16), 0, 0, 0)
                body += struct.pack("!H", toi) + b"".join(struct.pack("!I", b) for b in miss[:64])
                self._out.append((body, None))
                count(self.stats, "nack.sent")

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address | None]]:
        out, self._out = self._out, []
        return out

    def get_timer(self) -> float | None:
        return None

    def handle_timer(self, now: float) -> None:
        pass

    def next_event(self) -> Any | None:
        return self.inner.events.popleft() if self.inner.events else None


def toy_info(data: bytes) -> dict[str, Any] | None:
    """Light packet knowledge for attackers: kind, interval, spans of key and MAC."""
    if len(data) < HDR_LEN or data[:2] != b"TY":
        return None
    typ = data[2]
    (i,) = struct.unpack_from("!I", data, 3)
    kind = {0: "bootstrap", 1: "data", 2: "key", 3: "nack"}.get(typ, "other")
    info: dict[str, Any] = {"kind": kind, "interval": i}
    if typ in (1, 2):
        (kidx,) = struct.unpack_from("!I", data, 7)
        info["key_index"] = None if kidx == NO_KEY else kidx
        info["key_span"] = (12, 16) if kidx != NO_KEY else None
        info["mac_span"] = (len(data) - MAC_LEN, MAC_LEN)
        info["auth_overhead"] = 4 + 4 + 16 + MAC_LEN
    elif typ == 0:
        info["sig_span"] = (len(data) - 16, 16)
        info["auth_overhead"] = len(data)
    return info
