"""Sans-I/O NORM sender (RFC 5740 §5.1, §5.4, §5.5), following the :mod:`alc.engine` contract.

What it does:

* DATA, FILE (same wire format + NORM_FLAG_FILE, NORM_INFO = file name) and STREAM objects;
  objects are segmented and blocked exactly per RFC 5740 §5.1.1 / RFC 5052 §9.1
  (:func:`alc.fec.partition`); EXT_FTI is attached to every NORM_DATA and NORM_INFO (as NRL
  does).  NORM_INFO is the first message sent for an object that has one.
* FEC from :mod:`alc.fec`: Encoding ID 5 (RS GF(2^8)) by default like NRL, ID 2 with m = 16
  when ``block + parity > 255``, ID 129 on request (ID 0 for RFC-only peers).  The RS
  generator matrix defaults to NRL's (``rs_matrix="nrl"``) so NRL receivers can decode our
  parity.  Proactive (``auto_parity``) and on-demand parity: a NACKed block's erasure count is
  answered with *fresh* parity while unsent parity remains, explicit retransmission after.
* NACK aggregation over ``(K+1)*GRTT`` (RFC 5740 §5.4.1), then the repair cycle in ordinal
  order, then a ``1*GRTT`` holdoff during which only content beyond the repair position is
  merged.
* GRTT probing with NORM_CMD(CC) (send_time, cc_sequence, EXT_RATE when probing is active or
  CC is on, cc_node_list with CC or active probing), responses from NACK/ACK
  ``grtt_response`` feed the RFC 5401 estimator (:class:`norm.cc.GrttEstimator`); the
  advertised ``grtt`` is ``max(GRTT, segment_size / rate)``.  Active probing without CC runs
  the CLR selection of NORM-CC without applying its rate, so the listed CLR answers each probe
  at once and the estimate follows the path RTT within a few probe intervals.
* NORM_CMD(FLUSH) repeated ``robust_factor`` times once per 2*GRTT when idle; NORM_CMD(EOT)
  after :meth:`NormSender.end`.
* Positive acknowledgement: :meth:`NormSender.set_watermark` polls an acking node list with
  FLUSH + acking_node_list (each node at most ``robust_factor`` times), collects NORM_ACK(FLUSH);
  :meth:`NormSender.request_ack` does the same with NORM_CMD(ACK_REQ) for application ack
  types.  Events report success / failure per node.
* NORM_CMD(SQUELCH) (at most once per 2*GRTT) for requests it cannot serve (purged, cancelled,
  unreliable objects, stream blocks outside the buffer).
* Fixed-rate token bucket on every message, or NORM-CC (:class:`norm.cc.NormCC`) with CLR
  selection and rate adaptation from EXT_CC feedback.

Time is always the caller's ``now``; randomness comes from a seeded :class:`random.Random`.
"""

from __future__ import annotations

import math
import os
import random
import struct
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from alc.engine import Address, BatchEntry, count
from alc.errors import DecodeError
from alc.fec import OTI, FecScheme, get_scheme, partition
from norm import messages as M
from norm.cc import NormCC
from norm.quantize import (
    quantize_backoff,
    quantize_gsize,
    quantize_rate,
    quantize_rtt,
    sec_usec_to_time,
    time_to_sec_usec,
    unquantize_loss32,
    unquantize_rate,
    unquantize_rtt,
)

KIND_DATA = "data"
KIND_FILE = "file"
KIND_STREAM = "stream"
# Receiver feedback carries no authentication (RFC 5740 §7, RFC 5776 §5.2): bounds on
# what one NACK/ACK can make us hold (docs/security/norm.md).
PROBES_REMEMBERED = 64  # send times of our last NORM_CMD(CC), to check feedback echoes
MAX_NACK_EXPANSION = 8192  # objects + blocks + symbols one NACK may add to repair state
MAX_REPAIR_SYMBOLS = 1 << 16  # explicit symbols in the aggregated repair state
MAX_SQUELCH_IDS = 1024  # invalid object ids held for the next NORM_CMD(SQUELCH)
FEEDBACK_REPLAY_WINDOW = 1024  # sequence numbers remembered below a receiver's highest
FEEDBACK_REPLAY_SOURCES = 4096  # receivers with replay state (least recently heard evicted)

# ---------------------------------------------------------------------------- events


@dataclass
class TxObjectSent:
    """All source segments (and auto parity) of an object went out once."""

    object_id: int


@dataclass
class TxQueueEmpty:
    """Nothing new to send (repairs and flushing may still follow)."""


@dataclass
class TxFlushCompleted:
    """The last of ``robust_factor`` NORM_CMD(FLUSH) went out with no repair pending."""


@dataclass
class TxWatermarkCompleted:
    """Positive-ACK round over: ``acked`` nodes answered, ``failed`` did not."""

    object_id: int
    acked: list[int]
    failed: list[int]

    @property
    def success(self) -> bool:
        return not self.failed


@dataclass
class TxAckCompleted:
    """NORM_CMD(ACK_REQ) round over."""

    ack_type: int
    ack_id: int
    acked: list[int]
    failed: list[int]
    payloads: dict[int, bytes] = field(default_factory=dict)


@dataclass
class TxRateChanged:
    rate: float  # bytes/s


@dataclass
class TxEotSent:
    """The last NORM_CMD(EOT) repetition went out: the session is over."""


@dataclass
class TxObjectPurged:
    object_id: int


# ---------------------------------------------------------------------------- config


@dataclass
class NormSenderConfig:
    node_id: int
    instance_id: int | None = None  # None: random
    segment_size: int = 1400
    block_size: int = 64  # B (ndata)
    num_parity: int = 16  # parity symbols the sender can provide per block
    auto_parity: int = 0  # proactive parity per block
    fec_id: int | None = None  # None: 5 if B+P <= 255 else 2 (m = 16), like NRL
    rate: float = 1_000_000.0  # bytes/s when CC is off (and the CC upper bound if set)
    cc: bool = False
    rate_min: float | None = None
    rate_max: float | None = None
    grtt: float = 0.5  # initial GRTT estimate (RFC 0.5 s; NRL 0.25 s)
    grtt_max: float = 10.0
    grtt_min: float = 0.001
    backoff: int = 4  # K
    group_size: int = 10_000
    robust_factor: int = 20
    probe: str = "active"  # "none" | "passive" (no EXT_RATE) | "active" (EXT_RATE)
    probe_interval_min: float = 1.0
    probe_interval_max: float = 30.0
    probe_interval_fast: float = 0.05  # floor of the interval while the GRTT estimate moves
    fti_last_is_max_n: bool = False  # False: NRL semantics (num_parity) for IDs 2/5
    rs_matrix: str = "nrl"
    tx_cache_max: int = 256  # objects kept for repair
    # FILE objects are read from disk as needed (os.pread), never loaded or memory-mapped:
    # at most this many aligned chunks of block_size*segment_size octets are cached per
    # file (the block being sent and those recently repaired); the repair window itself
    # (tx_cache_max objects) costs no memory beyond them
    file_cache_blocks: int = 4
    parity_cache_blocks: int = 8  # blocks whose parity is kept computed, per object
    stream_buffer_blocks: int = 64
    burst: float = 0.004  # token bucket depth in seconds of rate
    set_repair_flags: bool = True  # NORM_FLAG_REPAIR/EXPLICIT on repairs (RFC; NRL never)
    repair_adv: bool = False  # multicast NORM_CMD(REPAIR_ADV) per repair cycle (unicast NACKs)
    eot_repeats: int | None = None  # default robust_factor
    # The robust_factor NORM_CMD(FLUSH) before EOT span at least this long (spacing
    # max(2*GRTT, flush_min_time/robust_factor)).  With a GRTT of 1 ms the RFC flush is over
    # in 40 ms: a receiver process that reads its socket a little late, or that sees our
    # messages only when their TESLA key is disclosed ((d+1)*T_int later), would get the
    # EOT before it could NACK.  0 = RFC 5740 timing only.
    flush_min_time: float = 0.0
    seed: int | None = None


# ---------------------------------------------------------------------------- objects


def _serial_lt(a: int, b: int) -> bool:
    d = (a - b) & 0xFFFF
    return d > 0x8000 or (d == 0x8000 and a > b)


class FileData:
    """The octets of a file, read with ``os.pread`` in aligned chunks of ``chunk`` octets
    (a multiple of the segment size, so no segment straddles two), the ``max_chunks`` most
    recently used kept: what a NORM sender holds of a FILE object is bounded whatever the
    file size.  ``data[a:b]`` like bytes; the file must not shrink meanwhile (a short read
    raises ``OSError``)."""

    def __init__(self, path: str, size: int, chunk: int, max_chunks: int) -> None:
        self.path = path
        self.size = size
        self.chunk = max(1, chunk)
        self.max_chunks = max(1, max_chunks)
        self.fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        self.cache: OrderedDict[int, bytes] = OrderedDict()
        self.reads = 0

    def __len__(self) -> int:
        return self.size

    def _chunk(self, i: int) -> bytes:
        c = self.cache.get(i)
        if c is not None:
            self.cache.move_to_end(i)
            return c
        off = i * self.chunk
        n = min(self.chunk, self.size - off)
        c = os.pread(self.fd, n, off)
        while len(c) < n:  # (regular files: short only at EOF, i.e. the file shrank)
            more = os.pread(self.fd, n - len(c), off + len(c))
            if not more:
                raise OSError(f"{self.path}: file shrank while sending (offset {off + len(c)})")
            c += more
        self.reads += 1
        self.cache[i] = c
        while len(self.cache) > self.max_chunks:
            self.cache.popitem(last=False)
        return c

    def __getitem__(self, sl: slice) -> bytes:
        start, stop, _ = sl.indices(self.size)
        if stop <= start:
            return b""
        i, j = divmod(start, self.chunk)
        if stop <= (i + 1) * self.chunk:
            return self._chunk(i)[j : j + stop - start]
        parts = []
        pos = start
        while pos < stop:
            i, j = divmod(pos, self.chunk)
            c = self._chunk(i)[j : j + stop - pos]
            parts.append(c)
            pos += len(c)
        return b"".join(parts)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        self.cache.clear()

    def __del__(self) -> None:
        self.close()


#: NORM_DATA common header + FEC ID 5 payload id (RFC 5740 §4.2.1, RFC 5510): what
#: ``M.encode_data`` writes before the extensions, for the sender's burst path
_DATA_HEAD = struct.Struct(">BBHIHBBBBHI")


class _TxObject:
    def __init__(
        self,
        oid: int,
        kind: str,
        data: Any,
        size: int,
        info: bytes | None,
        sender: NormSender,
        unreliable: bool = False,
    ) -> None:
        cfg = sender.cfg
        self.id = oid
        self.kind = kind
        self.data = data
        self.size = size
        self.info = info
        self.unreliable = unreliable
        self.fec_id = sender.fec_id
        self.m = sender.fec_m
        S, B, P = cfg.segment_size, cfg.block_size, sender.num_parity
        self.S, self.B, self.P = S, B, P
        self.blocks = partition(size, S, B) if kind != KIND_STREAM else []
        starts = []
        acc = 0
        for k in self.blocks:
            starts.append(acc)
            acc += k
        self.block_start = starts
        self.flags = 0
        if info is not None:
            self.flags |= M.FLAG_INFO
        if unreliable:
            self.flags |= M.FLAG_UNRELIABLE
        if kind == KIND_FILE:
            self.flags |= M.FLAG_FILE
        if kind == KIND_STREAM:
            self.flags |= M.FLAG_STREAM
        self.fti = M.ExtFti.build(
            self.fec_id,
            size,
            S,
            B,
            P,
            m=self.m,
            last_is_max_n=cfg.fti_last_is_max_n,
        )
        self.fti_wire = self.fti.encode()
        sym_len = S + 8 if kind == KIND_STREAM else S
        self.scheme: FecScheme | None = None
        if self.fec_id != 0 and P > 0:
            oti = OTI(
                encoding_id=self.fec_id,
                transfer_length=max(size, 1) if kind != KIND_STREAM else B * sym_len,
                symbol_length=sym_len,
                max_source_block_length=B,
                max_encoding_symbols=min(B + P, 255) if self.m == 8 else B + P,
                m=self.m,
            )
            self.scheme = get_scheme(oti, rs_matrix=cfg.rs_matrix)
        self.parity_cache_max = max(1, cfg.parity_cache_blocks)
        self.parity_next: dict[int, int] = {}  # sbn -> parity symbols already sent
        self.parity_cache: OrderedDict[int, list[bytes]] = OrderedDict()
        # transmit progress of new data
        self.info_sent = info is None
        self.sbn = 0
        self.esi = 0
        self.done = False  # all new data out
        # streams
        self.stream_segments: dict[tuple[int, int], bytes] = {}
        self.stream_pending = bytearray()
        self.stream_offset = 0  # offset of the first pending byte
        self.stream_msg_start: int | None = None  # index in pending of the next msg start
        self.stream_next: tuple[int, int] = (0, 0)  # (sbn, esi) of the next segment formed
        self.stream_closed = False
        self.stream_end_queued = False
        self.stream_oldest = 0  # oldest block kept

    # -- sizes ---------------------------------------------------------------------------
    def block_len(self, sbn: int) -> int:
        if self.kind == KIND_STREAM:
            return self.B
        return self.blocks[sbn]

    def has_block(self, sbn: int) -> bool:
        if self.kind == KIND_STREAM:
            nsbn, nesi = self.stream_next
            return self.stream_oldest <= sbn < nsbn or (sbn == nsbn and nesi > 0)
        return 0 <= sbn < len(self.blocks)

    def block_complete(self, sbn: int) -> bool:
        if self.kind == KIND_STREAM:
            return sbn < self.stream_next[0]
        return True

    def segment(self, sbn: int, esi: int) -> bytes:
        if self.kind == KIND_STREAM:
            return self.stream_segments[(sbn, esi)]
        off = (self.block_start[sbn] + esi) * self.S
        return bytes(self.data[off : min(off + self.S, self.size)])

    def parity(self, sbn: int, j: int) -> bytes:
        """Parity symbol number j (ESI k + j) of block sbn (cached per block)."""
        blk = self.parity_cache.get(sbn)
        if blk is None:
            assert self.scheme is not None
            k = self.block_len(sbn)
            src = [self.segment(sbn, i) for i in range(k)]
            limit = min(self.P, self._esi_limit(k) - k)
            blk = [
                s
                for _, s in self.scheme.repair_symbols(
                    sbn if self.kind != KIND_STREAM else 0, src, limit
                )
            ]
            self.parity_cache[sbn] = blk
            while len(self.parity_cache) > self.parity_cache_max:
                self.parity_cache.popitem(last=False)
        else:
            self.parity_cache.move_to_end(sbn)
        return blk[j]

    def _esi_limit(self, k: int) -> int:
        if self.fec_id == 129 or self.m == 16:
            return k + self.P
        return min(255, k + self.P) if self.fec_id != 129 else k + self.P

    def fresh_parity(self, sbn: int) -> int:
        if self.scheme is None or not self.block_complete(sbn):
            return 0
        k = self.block_len(sbn)
        return max(0, min(self.P, self._esi_limit(k) - k) - self.parity_next.get(sbn, 0))


@dataclass
class _BlkNeed:
    count: int = 0
    esis: set[int] = field(default_factory=set)
    whole: bool = False


@dataclass
class _ObjNeed:
    info: bool = False
    whole: bool = False
    blocks: dict[int, _BlkNeed] = field(default_factory=dict)


@dataclass
class _AckRound:
    kind: str  # "flush" or "req"
    object_id: int
    pos: tuple[int, int, int] | None  # watermark (obj, sbn, esi)
    pending: dict[int, int]  # node -> polls so far
    acked: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)
    next_time: float = 0.0
    ack_type: int = M.ACK_FLUSH
    ack_id: int = 0
    payloads: dict[int, bytes] = field(default_factory=dict)


class FeedbackReplay:
    """Replay check of receiver feedback (RFC 5776 §6.2.2: a sender SHOULD check the NORM
    ``sequence`` of each known receiver and drop replayed messages; RFC 5740 §4.1: a
    receiver's feedback carries a monotonically increasing sequence).

    Per receiver NormNodeId: the highest sequence heard (16-bit serial arithmetic) and a
    bitmap of the ``window`` sequences below it.  A message is a replay when its sequence
    was heard already or is older than the window.  The check applies to a receiver once
    its sequence has advanced: RFC 5740 only says receivers SHOULD set it, and NRL NORM's
    receivers send 0 in every NACK and ACK; until then a repeated sequence is accepted and
    counted (``rx.feedback_unsequenced``), as such a receiver gives nothing to check.
    State is bounded: at most ``sources`` receivers, the least recently heard evicted
    (``drop.replay_state_evicted``); an evicted receiver's next message starts a new
    window."""

    def __init__(self, stats: dict[str, int], window: int = FEEDBACK_REPLAY_WINDOW,
                 sources: int = FEEDBACK_REPLAY_SOURCES) -> None:
        self.stats = stats
        self.window = window
        self.sources = sources
        self._mask = (1 << window) - 1
        self._state: OrderedDict[int, list[int]] = OrderedDict()  # id -> [highest, bits]

    def replayed(self, source_id: int, seq: int) -> bool:
        st = self._state.get(source_id)
        if st is None:  # [highest, bitmap, sequence has advanced]
            self._state[source_id] = [seq, 1, 0]
            if len(self._state) > self.sources:
                self._state.popitem(last=False)
                count(self.stats, "drop.replay_state_evicted")
            return False
        self._state.move_to_end(source_id)
        ahead = (seq - st[0]) & 0xFFFF
        if not st[2]:
            if ahead == 0:
                count(self.stats, "rx.feedback_unsequenced")
                return False
            st[2] = 1
        if ahead == 0:
            return True
        if ahead < 0x8000:
            st[0] = seq
            st[1] = ((st[1] << ahead) | 1) & self._mask
            return False
        back = 0x10000 - ahead
        if back >= self.window or (st[1] >> back) & 1:
            return True
        st[1] |= 1 << back
        return False


class NormSender(BatchEntry):
    """Sans-I/O NORM sender (see module docstring)."""

    def __init__(self, cfg: NormSenderConfig) -> None:
        self.cfg = cfg
        self.stats: dict[str, int] = {}
        self._replay = FeedbackReplay(self.stats)
        self.rng = random.Random(cfg.seed)
        self.node_id = cfg.node_id
        self.instance_id = (
            cfg.instance_id if cfg.instance_id is not None else self.rng.randint(1, 0xFFFE)
        )
        B, P = cfg.block_size, cfg.num_parity
        if cfg.fec_id is None:
            self.fec_id = 5 if B + P <= 255 else 2
        else:
            self.fec_id = cfg.fec_id
        self.fec_m = 16 if (self.fec_id == 2 and B + P > 255) else 8
        if self.fec_id == 5 and B + P > 255:
            raise ValueError("FEC Encoding ID 5 needs block + parity <= 255")
        if self.fec_id == 0:
            P = 0
        self.num_parity = P
        self.auto_parity = min(cfg.auto_parity, P)
        self.eot_repeats = cfg.robust_factor if cfg.eot_repeats is None else cfg.eot_repeats
        from norm.cc import GrttEstimator

        self.grtt_est = GrttEstimator(cfg.grtt, cfg.grtt_min, cfg.grtt_max)
        self.cc: NormCC | None = (
            NormCC(
                cfg.segment_size,
                grtt=cfg.grtt,
                rate_min=cfg.rate_min,
                rate_max=cfg.rate_max if cfg.rate_max is not None else None,
                robust_factor=cfg.robust_factor,
            )
            if cfg.cc
            else None
        )
        # Active GRTT probing without CC (RFC 5740 §5.5.1: EXT_RATE "MAY also be used to
        # proactively solicit RTT feedback from the receiver group per congestion control
        # operation even when the sender is not conducting congestion control rate
        # adjustment"): the CC feedback bookkeeping runs (CLR/PLR selection, cc_node_list)
        # but its rate is never applied.  The listed CLR/PLR answer each probe at once
        # (§5.5.2.2) instead of after RandomBackoff(K*GRTT) -- up to 2 s with the initial
        # 0.5 s GRTT -- so the estimate can follow the real RTT within a few probe rounds.
        self._rtt_cc: NormCC | None = (
            NormCC(cfg.segment_size, grtt=cfg.grtt, robust_factor=cfg.robust_factor)
            if self.cc is None and cfg.probe == "active"
            else None
        )
        self._events: list[Any] = []
        self._seq = 0
        self._next_oid = 0
        self.objects: OrderedDict[int, _TxObject] = OrderedDict()
        self._cursor: int | None = None  # object id being transmitted (new data)
        self._last_pos: tuple[int, int, int] | None = None  # last new source symbol sent
        self._queue_empty_reported = True
        # repair state
        self._agg: dict[int, _ObjNeed] = {}
        self._agg_symbols = 0  # sum of the explicit ESI sets in _agg (<= MAX_REPAIR_SYMBOLS)
        self._nack_budget = MAX_NACK_EXPANSION  # left for the NACK being merged
        self._agg_deadline: float | None = None
        self._holdoff_until = -math.inf
        self._repairs: list[tuple[tuple[int, int, int, int], int, int, int, int]] = []
        self._repair_keys: set[tuple[int, int, int]] = set()
        self._repair_pos: tuple[int, int, int, int] | None = None
        # flush / eot / acks / squelch
        self._flush_remaining = 0
        self._flush_next = 0.0
        self._ending = False
        self._eot_remaining = 0
        self._eot_next = 0.0
        self._ack_rounds: list[_AckRound] = []
        self._squelch_invalid: set[int] = set()
        self._squelch_wanted = False
        self._squelch_next = -math.inf
        self._app_cmds: list[tuple[bytes, int, float]] = []  # content, remaining, next
        self._repair_adv: bytes | None = None
        # probing
        self._probe_next: float | None = None
        self._probe_interval = 0.5
        self._grtt_after_probe = self.grtt_est.grtt
        self._grtt_peak_last = 0.0  # peak of the last probe interval that had answers
        self._grtt_quiet = 0  # probe intervals without answers since then
        self._probe_sent_time: dict[int, float] = {}
        # pacing
        self._credit = 0.0
        self._credit_time: float | None = None
        self._ready_at: float | None = None
        self._started = False
        self._grtt_memo: tuple[tuple[float, float, int, float], float] | None = None
        self._hdr_memo: tuple[tuple[float, int, int], tuple[int, int, int]] | None = None
        self._last_rate = self.rate

    # ------------------------------------------------------------------------ public API
    @property
    def rate(self) -> float:
        """Current transmit rate in bytes/s."""
        if self.cc is not None:
            r = self.cc.rate
            return min(r, self.cfg.rate_max) if self.cfg.rate_max else r
        return self.cfg.rate

    @property
    def grtt(self) -> float:
        """Advertised GRTT (unquantized) = max(estimate, segment/rate), RFC 5740 §5.5.1."""
        cfg = self.cfg
        key = (self.grtt_est.grtt, self.rate, cfg.segment_size, cfg.grtt_max)
        memo = self._grtt_memo  # every message header reads it: quantize once per change
        if memo is not None and memo[0] == key:
            return memo[1]
        g = max(key[0], cfg.segment_size / max(key[1], 1.0))
        v = unquantize_rtt(quantize_rtt(min(g, cfg.grtt_max)))
        self._grtt_memo = (key, v)
        return v

    def enqueue_data(self, data: bytes, info: bytes | None = None, unreliable: bool = False) -> int:
        return self._enqueue(KIND_DATA, data, len(data), info, unreliable)

    def enqueue_file(self, path: str, info: bytes | None = None) -> int:
        """Enqueue a file, read from disk as it is sent and repaired (:class:`FileData`:
        ``file_cache_blocks`` blocks cached, never loaded whole); NORM_INFO defaults to its
        base name."""
        size = os.path.getsize(path)
        data: Any
        if size:
            c = self.cfg
            data = FileData(path, size, c.segment_size * c.block_size, c.file_cache_blocks)
        else:
            data = b""
        if info is None:
            info = os.path.basename(path).encode()
        return self._enqueue(KIND_FILE, data, size, info, False)

    def open_stream(self, info: bytes | None = None) -> int:
        """Open a STREAM object; FTI object_size = stream buffer size."""
        size = self.cfg.stream_buffer_blocks * self.cfg.block_size * self.cfg.segment_size
        return self._enqueue(KIND_STREAM, None, size, info, False)

    def stream_write(self, oid: int, data: bytes, eom: bool = False) -> None:
        """Append bytes to a stream; ``eom`` marks the end of an application message (the
        next write starts a new message)."""
        obj = self.objects[oid]
        if obj.kind != KIND_STREAM or obj.stream_closed:
            raise ValueError("not an open stream")
        if obj.stream_msg_start is None and (not obj.stream_pending or getattr(obj, "_eom", True)):
            obj.stream_msg_start = len(obj.stream_pending)
        obj.stream_pending += data
        obj.__dict__["_eom"] = eom
        S = obj.S
        while len(obj.stream_pending) >= S:
            self._stream_cut(obj, S)
        self._wake()

    def stream_flush(self, oid: int) -> None:
        """Send what is buffered now (a short segment) and flush (FLUSH commands)."""
        obj = self.objects[oid]
        if obj.stream_pending:
            self._stream_cut(obj, len(obj.stream_pending))
        self._flush_remaining = self.cfg.robust_factor
        self._wake()

    def stream_close(self, oid: int) -> None:
        """Flush and end the stream with the NORM_STREAM_END control code."""
        obj = self.objects[oid]
        if obj.stream_pending:
            self._stream_cut(obj, len(obj.stream_pending))
        if not obj.stream_closed:
            self._stream_cut(obj, 0, end=True)
            obj.stream_closed = True
        self._flush_remaining = self.cfg.robust_factor
        self._wake()

    def cancel(self, oid: int) -> None:
        """Dequeue an object: later NACKs for it are squelched."""
        if self.objects.pop(oid, None) is not None:
            self._agg.pop(oid, None)
            self._repairs = [r for r in self._repairs if r[1] != oid]
            if self._cursor == oid:
                self._advance_cursor()

    def set_watermark(self, oid: int, nodes: list[int]) -> None:
        """Positive ACK (RFC 5740 §5.5.3): poll ``nodes`` with FLUSH + acking list at the end
        of object ``oid``; ``TxWatermarkCompleted`` reports the outcome."""
        obj = self.objects[oid]
        if obj.kind == KIND_STREAM:
            sbn, esi = obj.stream_next
            pos = (oid, sbn if esi else max(sbn - 1, 0), (esi - 1) if esi else obj.B - 1)
        elif obj.blocks:
            pos = (oid, len(obj.blocks) - 1, obj.blocks[-1] - 1)
        else:
            pos = (oid, 0, 0)
        self._ack_rounds = [r for r in self._ack_rounds if r.kind != "flush"]
        self._ack_rounds.append(_AckRound("flush", oid, pos, dict.fromkeys(nodes, 0)))
        self._wake()

    def request_ack(self, ack_type: int, ack_id: int, nodes: list[int]) -> None:
        """NORM_CMD(ACK_REQ) for an application ack type (16..255)."""
        if ack_type in (M.ACK_CC, M.ACK_FLUSH):
            raise ValueError("ACK_REQ must not use ack_type CC or FLUSH (RFC 5740 §4.2.3.6)")
        self._ack_rounds.append(
            _AckRound("req", -1, None, dict.fromkeys(nodes, 0), ack_type=ack_type, ack_id=ack_id)
        )
        self._wake()

    def send_command(self, content: bytes, robust: bool = True) -> None:
        """NORM_CMD(APPLICATION), repeated robust_factor times once per 2*GRTT if robust."""
        if len(content) > self.cfg.segment_size:
            raise ValueError("application command larger than the segment size")
        self._app_cmds.append((content, self.cfg.robust_factor if robust else 1, 0.0))
        self._wake()

    def end(self) -> None:
        """Finish: once everything is sent and flushed, send NORM_CMD(EOT) robustly."""
        self._ending = True
        self._wake()

    @property
    def idle(self) -> bool:
        """True when no data, repair, flush, ack round or EOT remains to be sent."""
        return (
            self._cursor is None
            and not self._repairs
            and self._agg_deadline is None
            and self._flush_remaining == 0
            and not self._ack_rounds
            and not self._app_cmds
            and (not self._ending or self._eot_remaining == 0 and self._eot_done)
        )

    _eot_done = False

    # ------------------------------------------------------------------------ Engine API
    def next_event(self) -> Any | None:
        return self._events.pop(0) if self._events else None

    def get_timer(self) -> float | None:
        ts: list[float] = []
        if self._probe_next is not None:
            ts.append(self._probe_next)
        if self._agg_deadline is not None:
            ts.append(self._agg_deadline)
        if self._has_traffic():
            ts.append(self._ready_at if self._ready_at is not None else -math.inf)
        if self._flush_remaining and not self._busy():
            ts.append(self._flush_next)
        if self._eot_remaining or (
            self._ending
            and not self._eot_done
            and not self._flush_remaining
            and not self._ack_rounds
            and not self._busy()
        ):
            ts.append(self._eot_next)
        for r in self._ack_rounds:
            ts.append(r.next_time)
        for _, _, nxt in self._app_cmds:
            ts.append(nxt)
        if self._squelch_wanted:
            ts.append(self._squelch_next)
        return min(ts) if ts else None

    def handle_timer(self, now: float) -> None:
        self._service(now)

    def receive_datagram(self, data: bytes, addr: Address | None, now: float) -> None:
        if len(data) < 8:
            count(self.stats, "drop.short")
            return
        t = data[0] & 0x0F
        if t not in (M.NORM_NACK, M.NORM_ACK):
            count(self.stats, "rx.ignored")  # sender messages (ours looped back, others)
            return
        try:
            msg = M.decode(data, fec2_m=self.fec_m)
        except DecodeError:
            count(self.stats, "drop.malformed")
            return
        assert isinstance(msg, M.NormNack | M.NormAck)
        if msg.server_id != self.node_id:
            count(self.stats, "rx.other_sender")
            return
        if msg.instance_id != self.instance_id:
            count(self.stats, "drop.wrong_instance")
            return
        if self._replay.replayed(msg.source_id, msg.sequence):  # RFC 5776 §6.2.2
            count(self.stats, "drop.replay")
            return
        self._feedback_timing(msg, now)
        if isinstance(msg, M.NormNack):
            count(self.stats, "rx.nack")
            self._on_nack(msg, now)
        else:
            count(self.stats, "rx.ack")
            self._on_ack(msg, now)

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address | None]]:
        self._service(now)
        out: list[tuple[bytes, Address | None]] = []
        rate = self.rate
        if self._credit_time is None:
            self._credit_time = now
            self._credit = 0.0
        depth = max(rate * self.cfg.burst, 2.0 * (self.cfg.segment_size + 64))
        self._credit = min(depth, self._credit + (now - self._credit_time) * rate)
        self._credit_time = now
        while self._credit > 0:
            if self._burst_ready(now):
                burst = self._data_burst()
                if burst:
                    out.extend(burst)
                    continue
            pkt = self._next_packet(now)
            if pkt is None:
                break
            out.append((pkt, None))
            self._credit -= len(pkt)
        if self._credit <= 0:
            self._ready_at = now + (-self._credit) / max(rate, 1.0)
        else:
            self._ready_at = now
        if out:
            count(self.stats, "tx", len(out))
        return out

    # ------------------------------------------------------------------------ internals
    def _wake(self) -> None:
        self._ready_at = None  # re-evaluate at once

    def _enqueue(self, kind: str, data: Any, size: int, info: bytes | None, unrel: bool) -> int:
        if info is not None and len(info) > self.cfg.segment_size:
            raise ValueError("NORM_INFO larger than the segment size")
        oid = self._next_oid
        self._next_oid = (self._next_oid + 1) & 0xFFFF
        obj = _TxObject(oid, kind, data, size, info, self, unrel)
        if kind != KIND_STREAM and size == 0:
            obj.blocks = []
        self.objects[oid] = obj
        self._purge()
        if self._cursor is None:
            self._cursor = oid
        self._queue_empty_reported = False
        self._flush_remaining = 0
        self._wake()
        return oid

    def _purge(self) -> None:
        while len(self.objects) > self.cfg.tx_cache_max:
            oid = next(iter(self.objects))
            if oid == self._cursor:
                break
            del self.objects[oid]
            self._events.append(TxObjectPurged(oid))

    def _stream_cut(self, obj: _TxObject, n: int, end: bool = False) -> None:
        sbn, esi = obj.stream_next
        chunk = bytes(obj.stream_pending[:n])
        del obj.stream_pending[:n]
        if end:
            msg_start = M.STREAM_END
        else:
            ms = obj.stream_msg_start
            msg_start = ms + 1 if ms is not None and ms < n else 0
            if ms is not None:
                obj.stream_msg_start = None if ms < n else ms - n
        hdr = M.StreamHeader(len(chunk), msg_start, obj.stream_offset & 0xFFFFFFFF).encode()
        obj.stream_offset += len(chunk)
        obj.stream_segments[(sbn, esi)] = hdr + chunk
        esi += 1
        if esi >= obj.B:
            sbn, esi = sbn + 1, 0
        obj.stream_next = (sbn, esi)
        # keep the stream buffer bounded: drop blocks older than the window
        while sbn - obj.stream_oldest > self.cfg.stream_buffer_blocks:
            old = obj.stream_oldest
            for i in range(obj.B):
                obj.stream_segments.pop((old, i), None)
            obj.parity_cache.pop(old, None)
            obj.parity_next.pop(old, None)
            obj.stream_oldest += 1
        obj.done = False
        if self._cursor is None:
            self._cursor = obj.id

    def _busy(self) -> bool:
        return self._cursor is not None or bool(self._repairs) or self._agg_deadline is not None

    def _has_traffic(self) -> bool:
        if self._probe_due_now:
            return True
        if self._repairs or self._squelch_ready or self._repair_adv is not None:
            return True
        if self._cursor is not None:
            obj = self.objects.get(self._cursor)
            if obj is not None and obj.kind == KIND_STREAM:
                return self._stream_has_new(obj)
            return True
        return False

    _probe_due_now = False
    _squelch_ready = False

    def _stream_has_new(self, obj: _TxObject) -> bool:
        return (obj.sbn, obj.esi) < obj.stream_next or self._stream_parity_due(obj)

    def _stream_parity_due(self, obj: _TxObject) -> bool:
        return (
            self.auto_parity > 0
            and obj.esi >= obj.B
            and obj.sbn < obj.stream_next[0]
            and obj.esi - obj.B < self.auto_parity
        )

    def _service(self, now: float) -> None:
        if not self._started:
            self._started = True
            self._probe_next = now if self.cfg.probe != "none" or self.cc else None
        if self._probe_next is not None and now >= self._probe_next:
            self._probe_due_now = True
        if self._agg_deadline is not None and now >= self._agg_deadline:
            self._start_repair(now)
        if self._squelch_wanted and now >= self._squelch_next:
            self._squelch_ready = True
        # rate change events
        r = self.rate
        if abs(r - self._last_rate) > 1e-9 * max(r, 1.0):
            self._last_rate = r
            self._events.append(TxRateChanged(r))

    # ---- header fields ---------------------------------------------------------------
    def _hdr(self) -> tuple[int, int, int, int, int, int]:
        seq = self._seq
        self._seq = (seq + 1) & 0xFFFF
        cfg = self.cfg
        key = (self.grtt, cfg.backoff, cfg.group_size)
        memo = self._hdr_memo
        if memo is None or memo[0] != key:
            memo = self._hdr_memo = (
                key,
                (quantize_rtt(key[0]), quantize_backoff(key[1]), quantize_gsize(key[2])),
            )
        return (seq, self.node_id, self.instance_id, *memo[1])

    # ---- packet selection ----------------------------------------------------------------
    def _next_packet(self, now: float) -> bytes | None:
        if self._probe_due_now:
            self._probe_due_now = False
            return self._probe(now)
        if self._repair_adv is not None:
            adv, self._repair_adv = self._repair_adv, None
            count(self.stats, "tx.cmd.repair_adv")
            return adv
        if self._squelch_ready:
            self._squelch_ready = False
            pkt = self._squelch(now)
            if pkt is not None:
                return pkt
        for i, (content, remaining, nxt) in enumerate(self._app_cmds):
            if now >= nxt:
                remaining -= 1
                if remaining <= 0:
                    del self._app_cmds[i]
                else:
                    self._app_cmds[i] = (content, remaining, now + 2 * self.grtt)
                count(self.stats, "tx.cmd.application")
                return M.NormCmdApplication(*self._hdr(), content=content).encode()
        if self._repairs:
            return self._repair_packet()
        if self._cursor is not None:
            pkt = self._new_data_packet()
            if pkt is not None:
                return pkt
        # idle: acknowledgement rounds, flush, eot
        for rnd in self._ack_rounds:
            if now >= rnd.next_time and (rnd.kind == "req" or not self._busy()):
                pkt = self._ack_round_packet(rnd, now)
                if pkt is not None:
                    return pkt
        if self._busy():
            return None
        if self._flush_remaining and now >= self._flush_next:
            return self._flush_packet(now)
        if (
            self._ending
            and not self._flush_remaining
            and not self._ack_rounds
            and not self._eot_done
            and now >= self._eot_next
        ):
            if self._eot_remaining == 0:
                self._eot_remaining = max(1, self.eot_repeats)
            self._eot_remaining -= 1
            self._eot_next = now + 2 * self.grtt
            count(self.stats, "tx.cmd.eot")
            if self._eot_remaining == 0:
                self._eot_done = True
                self._probe_next = None  # session over: no more probing
                self._events.append(TxEotSent())
            return M.NormCmdEot(*self._hdr()).encode()
        return None

    def _data_msg(
        self, obj: _TxObject, sbn: int, esi: int, payload: bytes, flags: int = 0
    ) -> bytes:
        # = M.NormData(..., extensions=[obj.fti], ...).encode(), with the object's EXT_FTI
        # encoded once (every NORM_DATA carries it)
        return M.encode_data(
            self._hdr(),
            obj.flags | flags,
            obj.fec_id,
            obj.id,
            M.encode_payload_id(
                obj.fec_id, obj.m, sbn, esi, obj.block_len(sbn) if obj.fec_id == 129 else 0
            ),
            obj.fti_wire,
            payload,
        )

    def _info_msg(self, obj: _TxObject, flags: int = 0) -> bytes:
        return M.NormInfo(
            *self._hdr(),
            flags=obj.flags | flags,
            fec_id=obj.fec_id,
            object_id=obj.id,
            extensions=[obj.fti],
            payload=obj.info or b"",
        ).encode()

    def _new_data_packet(self) -> bytes | None:
        while self._cursor is not None:
            obj = self.objects.get(self._cursor)
            if obj is None:
                self._advance_cursor()
                continue
            if not obj.info_sent:
                obj.info_sent = True
                count(self.stats, "tx.info")
                return self._info_msg(obj)
            if obj.kind == KIND_STREAM:
                return self._stream_packet(obj)
            if obj.sbn >= len(obj.blocks):
                self._object_done(obj)
                continue
            k = obj.blocks[obj.sbn]
            sbn, esi = obj.sbn, obj.esi
            if esi < k:
                obj.esi += 1
                if obj.esi >= k and not self.auto_parity:
                    obj.sbn, obj.esi = sbn + 1, 0
                self._last_pos = (obj.id, sbn, esi)
                count(self.stats, "tx.data")
                return self._data_msg(obj, sbn, esi, obj.segment(sbn, esi))
            j = esi - k
            if j < self.auto_parity and obj.fresh_parity(sbn) > 0:
                obj.esi += 1
                pj = obj.parity_next.get(sbn, 0)
                obj.parity_next[sbn] = pj + 1
                count(self.stats, "tx.parity")
                return self._data_msg(obj, sbn, k + pj, obj.parity(sbn, pj))
            obj.sbn, obj.esi = sbn + 1, 0
        return None

    def _burst_ready(self, now: float) -> bool:
        """:meth:`_next_packet` would go straight to new data: nothing of higher priority
        (probe, repair advertisement, squelch, application command, repairs) is due."""
        if (
            self._cursor is None
            or self._probe_due_now
            or self._repair_adv is not None
            or self._squelch_ready
            or self._repairs
        ):
            return False
        return not any(now >= nxt for _c, _r, nxt in self._app_cmds)

    def _data_burst(self) -> list[tuple[bytes, Address | None]]:
        """The next source segments of the cursor object's current block while the token
        bucket has credit: the NORM_DATA :meth:`_new_data_packet` would return one call at
        a time (same octets, sequence numbers, counters and position), built from one
        header template (FILE/DATA objects, FEC ID 5); [] when that path has something
        else to do first (NORM_INFO, another object, parity, end of object)."""
        obj = self.objects.get(self._cursor)  # type: ignore[arg-type]
        if obj is None or not obj.info_sent or obj.kind == KIND_STREAM or obj.fec_id != 5:
            return []
        sbn, esi0 = obj.sbn, obj.esi
        if sbn >= len(obj.blocks):
            return []
        k = obj.blocks[sbn]
        if esi0 >= k:
            return []
        S, size = obj.S, obj.size
        start = (obj.block_start[sbn] + esi0) * S
        end = min((obj.block_start[sbn] + k) * S, size)
        block = memoryview(bytes(obj.data[start:end]))  # the rest of the block, one read
        seq, src, inst, g, b, gs = self._hdr()
        self._seq = seq  # (taken again below, one per message)
        fti = obj.fti_wire
        head = _DATA_HEAD
        hl = (16 + 4 + len(fti)) >> 2
        bg = (b << 4) | gs
        flags, oid = obj.flags, obj.id
        join = b"".join
        out: list[tuple[bytes, Address | None]] = []
        credit = self._credit
        esi = esi0
        while credit > 0 and esi < k:
            off = (esi - esi0) * S
            seq = self._seq
            self._seq = (seq + 1) & 0xFFFF
            pkt = join(
                (
                    head.pack(0x10 | M.NORM_DATA, hl, seq, src, inst, g, bg, flags, 5, oid, (sbn << 8) | esi),
                    fti,
                    block[off : off + S],
                )
            )
            out.append((pkt, None))
            credit -= len(pkt)
            esi += 1
        self._credit = credit
        n = esi - esi0
        obj.esi = esi
        if esi >= k and not self.auto_parity:
            obj.sbn, obj.esi = sbn + 1, 0
        self._last_pos = (obj.id, sbn, esi - 1)
        count(self.stats, "tx.data", n)
        return out

    def _stream_packet(self, obj: _TxObject) -> bytes | None:
        B = obj.B
        if obj.esi >= B:
            # auto parity for the completed block
            if self._stream_parity_due(obj) and obj.fresh_parity(obj.sbn) > 0:
                pj = obj.parity_next.get(obj.sbn, 0)
                obj.parity_next[obj.sbn] = pj + 1
                obj.esi += 1
                count(self.stats, "tx.parity")
                return self._data_msg(obj, obj.sbn, B + pj, obj.parity(obj.sbn, pj))
            obj.sbn, obj.esi = obj.sbn + 1, 0
        if (obj.sbn, obj.esi) >= obj.stream_next:
            if obj.stream_closed:
                self._object_done(obj)
            return None
        sbn, esi = obj.sbn, obj.esi
        if sbn < obj.stream_oldest:
            obj.sbn, obj.esi = obj.stream_oldest, 0
            return self._stream_packet(obj)
        obj.esi += 1
        if obj.esi >= B and not self.auto_parity:
            obj.sbn, obj.esi = sbn + 1, 0
        self._last_pos = (obj.id, sbn, esi)
        count(self.stats, "tx.data")
        return self._data_msg(obj, sbn, esi, obj.segment(sbn, esi))

    def _object_done(self, obj: _TxObject) -> None:
        obj.done = True
        self._events.append(TxObjectSent(obj.id))
        self._advance_cursor()

    def _advance_cursor(self) -> None:
        cur = self._cursor
        self._cursor = None
        found = cur is None
        for oid, obj in self.objects.items():
            if found and not obj.done:
                self._cursor = oid
                break
            if oid == cur:
                found = True
        if self._cursor is None:
            if not self._queue_empty_reported:
                self._queue_empty_reported = True
                self._events.append(TxQueueEmpty())
            self._flush_remaining = self.cfg.robust_factor

    # ---- commands ------------------------------------------------------------------------
    def _probe(self, now: float) -> bytes:
        grtt = self.grtt
        est = self.grtt_est
        # RFC 5401 §3.7.1: the estimate jumps up at once but only decays (0.9 per interval,
        # rule 2) at the end of a probe interval.  With the interval backing off to 30 s a
        # single late answer (a receiver busy with CPU work) would inflate every repair
        # timer for minutes, so while the estimate moves (it grew during the interval or
        # decays now) we probe again after a few GRTT ("adjust the GRTT collection period
        # dynamically in response to ... variations in it"), and back off once it is steady.
        # (changes within 5 % count as steady, else RTT jitter at the estimate's floor kept
        # the fast probing going forever)
        grew = est.grtt > 1.05 * self._grtt_after_probe
        if est.peak > 0.0:
            self._grtt_peak_last, self._grtt_quiet = est.peak, 0
        else:
            self._grtt_quiet += 1  # no answer in this interval (rule 3: unchanged)
        est.end_interval()
        unsettled = (
            grew
            or est.grtt < 0.95 * self._grtt_after_probe
            or (0.0 < self._grtt_peak_last < 0.95 * est.grtt and self._grtt_quiet <= 3)
        )
        self._grtt_after_probe = est.grtt
        exts: list[M.Extension] = []
        nodes: list[M.CCNode] = []
        ccm = self.cc if self.cc is not None else self._rtt_cc
        if ccm is not None:
            ccseq = ccm.probe_sent(now, grtt)
            max_items = max(1, (self.cfg.segment_size // 8))
            for nid, flags, rtt, rate in ccm.node_list(min(max_items, 16)):
                nodes.append(
                    M.CCNode(
                        nid,
                        flags,
                        quantize_rtt(rtt) if rtt > 0 else 0xFF,
                        quantize_rate(rate) if rate > 0 else 0,
                    )
                )
        else:
            self._ccseq = (getattr(self, "_ccseq", 0) + 1) & 0xFFFF
            ccseq = self._ccseq
        if self.cc is not None or self.cfg.probe == "active":
            exts.append(M.ExtRate(quantize_rate(self.rate)))
        sec, usec = time_to_sec_usec(now)
        sent = self._probe_sent_time  # feedback echo check (_echo_matches)
        sent.pop(ccseq, None)
        sent[ccseq] = sec_usec_to_time(sec, usec)
        if len(sent) > PROBES_REMEMBERED:
            del sent[next(iter(sent))]
        # schedule the next probe
        if self.cc is not None and self.cc.clr is not None:
            interval = max(self.cc.rtt_clr, grtt, 0.01)
        else:
            interval = self._probe_interval
            self._probe_interval = min(
                self.cfg.probe_interval_max, max(self.cfg.probe_interval_min, interval * 1.5)
            )
            if unsettled:
                self._probe_interval = self.cfg.probe_interval_min
                fast = max(self.cfg.probe_interval_fast, 2 * est.grtt)
                if ccm is not None and ccm.clr is not None and ccm.rtt_clr > 0:
                    # the CLR answers at once: collect over 2*RTT_clr (RFC 5740 §5.5.2.1
                    # rule 3 probes once per RTT_clr), not below 10 ms nor two packet
                    # intervals (rule 4: at most one NORM_CMD(CC) per NORM_DATA)
                    pkt = (self.cfg.segment_size + 44) / max(self.rate, 1.0)
                    fast = min(fast, max(2 * ccm.rtt_clr, 0.01, 2 * pkt))
                interval = min(interval, fast)
            if self.cc is not None:
                interval = min(interval, max(grtt, 0.05))
        self._probe_next = now + interval
        count(self.stats, "tx.cmd.cc")
        return M.NormCmdCC(
            *self._hdr(),
            cc_sequence=ccseq,
            send_time_sec=sec,
            send_time_usec=usec,
            extensions=exts,
            nodes=nodes,
        ).encode()

    def _flush_packet(self, now: float) -> bytes | None:
        self._flush_remaining -= 1
        spacing = self.cfg.flush_min_time / max(1, self.cfg.robust_factor)
        self._flush_next = now + max(2 * self.grtt, spacing)
        if self._flush_remaining == 0:
            self._events.append(TxFlushCompleted())
            # the last FLUSH gets its interval too: a NACK it elicits must still find us
            # before the EOT
            self._eot_next = max(self._eot_next, self._flush_next)
        pos = self._last_pos
        if pos is None:
            return None
        obj = self.objects.get(pos[0])
        fec_id = obj.fec_id if obj else self.fec_id
        count(self.stats, "tx.cmd.flush")
        return M.NormCmdFlush(
            *self._hdr(),
            fec_id=fec_id,
            object_id=pos[0],
            sbn=pos[1],
            esi=pos[2],
            sbl=obj.block_len(pos[1]) if obj is not None and fec_id == 129 else 0,
            m=self.fec_m,
        ).encode()

    def _ack_round_packet(self, rnd: _AckRound, now: float) -> bytes | None:
        # drop nodes polled robust_factor times
        for nid, polls in list(rnd.pending.items()):
            if polls >= self.cfg.robust_factor:
                del rnd.pending[nid]
                rnd.failed.append(nid)
        if not rnd.pending:
            self._finish_round(rnd)
            return None
        max_nodes = max(1, self.cfg.segment_size // 4)
        nodes = list(rnd.pending)[:max_nodes]
        for nid in nodes:
            rnd.pending[nid] += 1
        rnd.next_time = now + 2 * self.grtt
        if rnd.kind == "flush":
            assert rnd.pos is not None
            oid, sbn, esi = rnd.pos
            obj = self.objects.get(oid)
            fec_id = obj.fec_id if obj else self.fec_id
            count(self.stats, "tx.cmd.flush")
            return M.NormCmdFlush(
                *self._hdr(),
                fec_id=fec_id,
                object_id=oid,
                sbn=sbn,
                esi=esi,
                sbl=obj.block_len(sbn) if obj is not None and fec_id == 129 else 0,
                acking_nodes=nodes,
                m=self.fec_m,
            ).encode()
        count(self.stats, "tx.cmd.ack_req")
        return M.NormCmdAckReq(
            *self._hdr(), ack_type=rnd.ack_type, ack_id=rnd.ack_id, acking_nodes=nodes
        ).encode()

    def _finish_round(self, rnd: _AckRound) -> None:
        if rnd in self._ack_rounds:
            self._ack_rounds.remove(rnd)
        if rnd.kind == "flush":
            self._events.append(TxWatermarkCompleted(rnd.object_id, rnd.acked, rnd.failed))
            if (
                not rnd.failed
                and rnd.pos == self._last_pos
                and not self._busy()
                and self._flush_remaining
            ):
                # every acking node holds everything through our last position: more
                # FLUSH rounds cannot elicit anything from them
                self._flush_remaining = 0
                self._events.append(TxFlushCompleted())
        else:
            self._events.append(
                TxAckCompleted(rnd.ack_type, rnd.ack_id, rnd.acked, rnd.failed, rnd.payloads)
            )

    def _squelch(self, now: float) -> bytes | None:
        self._squelch_wanted = False
        self._squelch_next = now + 2 * self.grtt
        invalid = sorted(self._squelch_invalid, key=lambda o: (o - self._window_base()) & 0xFFFF)
        self._squelch_invalid.clear()
        if self.objects:
            first = next(iter(self.objects.values()))
            oid, fec_id = first.id, first.fec_id
            sbn = first.stream_oldest if first.kind == KIND_STREAM else 0
            sbl = first.block_len(sbn) if fec_id == 129 and first.has_block(sbn) else 0
        else:
            oid, fec_id, sbn, sbl = self._next_oid, self.fec_id, 0, 0
        base = oid
        invalid = [o for o in invalid if _serial_lt(base, o)]
        invalid = invalid[: self.cfg.segment_size // 2]
        count(self.stats, "tx.cmd.squelch")
        return M.NormCmdSquelch(
            *self._hdr(),
            fec_id=fec_id,
            object_id=oid,
            sbn=sbn,
            esi=0,
            sbl=sbl,
            invalid_objects=invalid,
            m=self.fec_m,
        ).encode()

    def _window_base(self) -> int:
        return next(iter(self.objects)) if self.objects else self._next_oid

    # ---- feedback ------------------------------------------------------------------------
    def _echo_matches(self, echo: float, cc_sequence: int | None, now: float) -> bool:
        """Does a feedback's ``grtt_response`` (probe send_time + the receiver's hold time)
        answer a NORM_CMD(CC) we sent?  It must not precede the send time of the probe
        named by its EXT_CC ``cc_sequence`` (without EXT_CC: of some remembered probe), one
        of our last PROBES_REMEMBERED probes, sent at most ``probe_interval_max +
        grtt_max`` ago.  A forged or stale echo would otherwise set the GRTT (up to its
        clamp) and the CC rate."""
        horizon = now - self.cfg.probe_interval_max - self.cfg.grtt_max
        sent = self._probe_sent_time
        if cc_sequence is not None:
            t = sent.get(cc_sequence)
            return t is not None and t >= horizon and echo >= t - 1e-6
        return any(horizon <= t <= echo + 1e-6 for t in sent.values())

    def _feedback_timing(self, msg: M.NormNack | M.NormAck, now: float) -> None:
        rtt: float | None = None
        ext = msg.cc()
        if msg.grtt_response_sec or msg.grtt_response_usec:
            echo = sec_usec_to_time(msg.grtt_response_sec, msg.grtt_response_usec)
            if not self._echo_matches(echo, ext.cc_sequence if ext is not None else None, now):
                count(self.stats, "drop.cc_echo_unmatched")  # neither GRTT nor CC moves
                return
            rtt = now - echo
            if rtt <= 0:
                rtt = 1e-6
            if rtt < 60.0:
                self.grtt_est.sample(rtt)
            else:
                rtt = None
        elif ext is not None:
            count(self.stats, "drop.cc_echo_unmatched")  # EXT_CC without any echo
            return
        ccm = self.cc if self.cc is not None else self._rtt_cc
        if ccm is not None and ext is not None:
            if (
                ccm is self._rtt_cc
                and ccm.clr is None
                and rtt is not None
                and self._probe_next is not None
            ):
                # first responder: it becomes the CLR; end this collection period soon so
                # the next probe lists it (RFC 5401 §3.7.1: "more rapid probing ... at
                # protocol startup")
                self._probe_next = min(self._probe_next, now + max(2 * rtt, 0.01))
            cc_rtt = unquantize_rtt(ext.cc_rtt) if ext.cc_flags & M.CC_RTT else None
            ccm.feedback(
                now,
                self.grtt,
                msg.source_id,
                flags=ext.cc_flags,
                rate=unquantize_rate(ext.cc_rate),
                loss=unquantize_loss32(ext.cc_loss, ext.cc_reserved),
                cc_sequence=ext.cc_sequence,
                rtt_sample=rtt,
                cc_rtt=cc_rtt,
            )
            count(self.stats, "rx.cc_feedback")

    def _on_ack(self, ack: M.NormAck, now: float) -> None:
        if ack.ack_type == M.ACK_CC:
            return
        for rnd in list(self._ack_rounds):
            if ack.source_id not in rnd.pending:
                continue
            if rnd.kind == "flush" and ack.ack_type == M.ACK_FLUSH:
                wm = ack.watermark
                if wm is None or rnd.pos is None or (wm.object_id, wm.sbn, wm.esi) != rnd.pos:
                    count(self.stats, "drop.ack_wrong_watermark")
                    continue
            elif rnd.kind == "req" and (ack.ack_type, ack.ack_id) == (rnd.ack_type, rnd.ack_id):
                rnd.payloads[ack.source_id] = ack.payload
            else:
                continue
            del rnd.pending[ack.source_id]
            rnd.acked.append(ack.source_id)
            if not rnd.pending:
                self._finish_round(rnd)

    def _on_nack(self, nack: M.NormNack, now: float) -> None:
        in_holdoff = now < self._holdoff_until and self._agg_deadline is None
        target: dict[int, _ObjNeed] = {}  # this NACK's needs (erasure counts add up)
        self._nack_budget = MAX_NACK_EXPANSION
        n_items = 0
        for req in nack.requests:
            items = req.items
            if req.form == M.NACK_RANGES:
                pairs = [(items[i], items[i + 1]) for i in range(0, len(items) - 1, 2)]
            else:
                pairs = [(it, it) for it in items]
            for a, b in pairs:
                n_items += 1
                self._merge_request(target, req.form, req.flags, a, b)
        count(self.stats, "rx.nack_items", n_items)
        if not in_holdoff:
            # aggregate over NACKs: per block the largest erasure count, union of symbols
            for oid, need in target.items():
                agg = self._agg.setdefault(oid, _ObjNeed())
                agg.info |= need.info
                agg.whole |= need.whole
                for sbn, bn in need.blocks.items():
                    ab = agg.blocks.setdefault(sbn, _BlkNeed())
                    ab.count = max(ab.count, bn.count)
                    new = bn.esis - ab.esis
                    if self._agg_symbols + len(new) > MAX_REPAIR_SYMBOLS:
                        count(self.stats, "drop.repair_state_full")
                        new = set()
                    self._agg_symbols += len(new)
                    ab.esis |= new
                    ab.whole |= bn.whole
        if in_holdoff:
            # RFC 5740 §5.4.1: during holdoff only content beyond the current (repair)
            # transmit position is merged, the rest was probably sent meanwhile
            self._merge_holdoff(target)
            return
        if self._agg and self._agg_deadline is None:
            self._agg_deadline = now + (self.cfg.backoff + 1) * self.grtt
        if self._squelch_invalid:
            self._squelch_wanted = True

    def _merge_request(
        self, target: dict[int, _ObjNeed], form: int, flags: int, a: M.RepairItem, b: M.RepairItem
    ) -> None:
        oid = a.object_id
        if b.object_id != oid:
            # object range: every object between a and b inclusive (OBJECT requests)
            o = oid
            for _ in range(256):
                self._merge_object(target, o, flags | M.NACK_OBJECT, None, None, form)
                if o == b.object_id:
                    break
                o = (o + 1) & 0xFFFF
            return
        self._merge_object(target, oid, flags, a, b, form)

    def _merge_object(
        self,
        target: dict[int, _ObjNeed],
        oid: int,
        flags: int,
        a: M.RepairItem | None,
        b: M.RepairItem | None,
        form: int,
    ) -> None:
        if not self._spend(1):
            return
        obj = self.objects.get(oid)
        if obj is None or obj.unreliable:
            if len(self._squelch_invalid) < MAX_SQUELCH_IDS:
                self._squelch_invalid.add(oid)
            count(self.stats, "nack.invalid_object")
            return
        need = target.setdefault(oid, _ObjNeed())
        if flags & M.NACK_OBJECT:
            need.whole = True
            need.info = obj.info is not None
            return
        if flags & M.NACK_INFO and obj.info is not None:
            need.info = True
        if a is None or b is None or not flags & (M.NACK_BLOCK | M.NACK_SEGMENT):
            return
        if flags & M.NACK_BLOCK:
            s = a.sbn
            for _ in range(1 << 16):
                if not self._spend(1):
                    return
                if obj.has_block(s):
                    need.blocks.setdefault(s, _BlkNeed()).whole = True
                elif obj.kind == KIND_STREAM:
                    self._squelch_wanted = True  # block left the stream buffer
                if s == b.sbn:
                    break
                s += 1
            return
        # SEGMENT
        if a.sbn != b.sbn:
            # range spanning blocks: first block from a.esi, whole middle blocks, last to b.esi
            for s in range(a.sbn, b.sbn + 1):
                if not self._spend(1):
                    return
                if not obj.has_block(s):
                    continue
                k = obj.block_len(s)
                lo = a.esi if s == a.sbn else 0
                hi = b.esi if s == b.sbn else k - 1
                self._merge_segments(obj, need, s, lo, hi, form)
            return
        self._merge_segments(obj, need, a.sbn, a.esi, b.esi, form)

    def _merge_segments(
        self, obj: _TxObject, need: _ObjNeed, sbn: int, lo: int, hi: int, form: int
    ) -> None:
        if not obj.has_block(sbn):
            if obj.kind == KIND_STREAM and sbn < obj.stream_oldest:
                self._squelch_wanted = True  # block left the stream buffer
            return
        bn = need.blocks.setdefault(sbn, _BlkNeed())
        if form == M.NACK_ERASURES:
            bn.count = max(bn.count, lo)
            return
        k = obj.block_len(sbn)
        limit = k + obj.P
        hi = min(hi, limit - 1)
        if hi >= lo and not self._spend(hi - lo + 1):
            hi = lo + self._nack_budget - 1  # what is left of this NACK's budget
            self._nack_budget = 0
        esis = [e for e in range(lo, hi + 1)]
        bn.count += len(set(esis) - bn.esis)
        bn.esis.update(esis)
        if not obj.block_complete(sbn):
            bn.count = 0  # explicit only for an unfinished stream block
        _ = k

    def _spend(self, n: int) -> bool:
        """Take ``n`` units of the current NACK's expansion budget (MAX_NACK_EXPANSION);
        False, counted ``drop.nack_expansion``, when it is exhausted."""
        if n > self._nack_budget:
            count(self.stats, "drop.nack_expansion")
            return False
        self._nack_budget -= n
        return True

    def _merge_holdoff(self, late: dict[int, _ObjNeed]) -> None:
        pos = self._repair_pos
        if pos is None:
            return
        base = self._window_base()
        for oid, need in late.items():
            okey = (oid - base) & 0xFFFF
            if okey < pos[0]:
                continue
            for sbn in list(need.blocks):
                if okey == pos[0] and sbn <= pos[1]:
                    del need.blocks[sbn]
            if okey == pos[0]:
                need.info = False
                need.whole = False
            if need.blocks or need.info or need.whole:
                self._compile({oid: need})
                count(self.stats, "nack.merged_in_holdoff")

    def _start_repair(self, now: float) -> None:
        agg, self._agg = self._agg, {}
        self._agg_symbols = 0
        self._agg_deadline = None
        self._holdoff_until = now + self.grtt
        if self.cfg.repair_adv and agg:
            self._repair_adv = self._build_repair_adv(agg)
        self._compile(agg)
        # RFC 5740 §5.5.3: NACKs interrupt the watermark flush, which restarts after the
        # repairs (every acking node gets its robust_factor polls again)
        for rnd in self._ack_rounds:
            if rnd.kind == "flush":
                for nid in rnd.pending:
                    rnd.pending[nid] = 0
        if self._squelch_invalid:
            self._squelch_wanted = True
        count(self.stats, "repair.cycles")

    def _build_repair_adv(self, agg: dict[int, _ObjNeed]) -> bytes:
        """NORM_CMD(REPAIR_ADV) (RFC 5740 §4.2.3.5, §5.4.4): the aggregated repair state in
        nack_payload form, ordinal order, limited to segment_size (LIMIT flag if cut)."""
        base = self._window_base()
        reqs: list[M.RepairRequest] = []
        room = self.cfg.segment_size
        limited = False

        def push(flags: int, items: list[M.RepairItem]) -> bool:
            nonlocal room
            size = 4 + sum(i.size for i in items)
            if size > room:
                return False
            room -= size
            reqs.append(M.RepairRequest(M.NACK_ITEMS, flags, items))
            return True

        for oid in sorted(agg, key=lambda o: (o - base) & 0xFFFF):
            need = agg[oid]
            obj = self.objects.get(oid)
            if obj is None:
                continue

            def it(sbn: int, esi: int, obj: _TxObject = obj, oid: int = oid) -> M.RepairItem:
                sbl = obj.block_len(sbn) if obj.fec_id == 129 and obj.has_block(sbn) else 0
                return M.RepairItem(obj.fec_id, oid, sbn, esi, sbl, m=obj.m)

            ok = True
            if need.whole:
                ok = push(M.NACK_OBJECT, [it(0, 0)])
            else:
                if need.info:
                    ok = push(M.NACK_INFO, [it(0, 0)])
                whole = [sbn for sbn, bn in sorted(need.blocks.items()) if bn.whole]
                if ok and whole:
                    ok = push(M.NACK_BLOCK, [it(sbn, 0) for sbn in whole])
                for sbn, bn in sorted(need.blocks.items()):
                    if ok and not bn.whole and bn.esis:
                        ok = push(M.NACK_SEGMENT, [it(sbn, e) for e in sorted(bn.esis)])
            if not ok:
                limited = True
                break
        return M.NormCmdRepairAdv(
            *self._hdr(), flags=M.REPAIR_ADV_FLAG_LIMIT if limited else 0, requests=reqs
        ).encode()

    def _compile(self, agg: dict[int, _ObjNeed]) -> None:
        """Turn aggregated needs into ordered repair transmissions (RFC 5740 §5.4.2)."""
        base = self._window_base()
        new: list[tuple[tuple[int, int, int, int], int, int, int, int]] = []
        last = self._last_pos
        for oid, need in agg.items():
            obj = self.objects.get(oid)
            if obj is None:
                continue
            okey = (oid - base) & 0xFFFF

            def add(
                sbn: int,
                esi: int,
                kind: int,
                okey: int = okey,
                oid: int = oid,
                obj: _TxObject = obj,
            ) -> None:
                # kind 0 info, 1 source/explicit, 2 fresh parity (esi = parity index)
                key = (oid, sbn, esi if kind != 2 else -1 - esi)
                if kind != 2 and key in self._repair_keys:
                    return
                self._repair_keys.add(key)
                new.append(
                    (
                        (
                            okey,
                            sbn if kind else -1,
                            esi if kind != 2 else obj.block_len(sbn) + esi,
                            kind,
                        ),
                        oid,
                        sbn,
                        esi,
                        kind,
                    )
                )

            if need.info or need.whole:
                add(0, 0, 0)
            if need.whole:
                nb = len(obj.blocks) if obj.kind != KIND_STREAM else 0
                for sbn in range(nb):
                    if not self._sent_yet(obj, sbn, 0, last):
                        break
                    for esi in range(obj.blocks[sbn]):
                        add(sbn, esi, 1)
                continue
            for sbn, bn in need.blocks.items():
                if not self._sent_yet(obj, sbn, 0, last):
                    continue  # not transmitted yet: the new data will carry it
                k = obj.block_len(sbn)
                if bn.whole:
                    for esi in range(k):
                        if obj.kind == KIND_STREAM and (sbn, esi) not in obj.stream_segments:
                            continue
                        add(sbn, esi, 1)
                    continue
                fresh = obj.fresh_parity(sbn)
                if bn.count and fresh >= bn.count:
                    start = obj.parity_next.get(sbn, 0)
                    obj.parity_next[sbn] = start + bn.count
                    for j in range(start, start + bn.count):
                        add(sbn, j, 2)
                else:
                    for esi in sorted(bn.esis):
                        if esi < k:
                            if obj.kind == KIND_STREAM and (sbn, esi) not in obj.stream_segments:
                                continue
                            add(sbn, esi, 1)
                        elif obj.scheme is not None and esi - k < obj.parity_next.get(sbn, 0):
                            add(sbn, esi, 3)  # explicit resend of an already-sent parity
                        elif obj.scheme is not None and fresh > 0:
                            j = obj.parity_next.get(sbn, 0)
                            obj.parity_next[sbn] = j + 1
                            fresh -= 1
                            add(sbn, j, 2)
        if not new:
            return
        self._repairs.extend(new)
        self._repairs.sort(key=lambda r: r[0], reverse=True)  # pop() from the end = earliest
        self._flush_remaining = 0

    def _sent_yet(
        self, obj: _TxObject, sbn: int, esi: int, last: tuple[int, int, int] | None
    ) -> bool:
        if obj.done:
            return True
        if obj.id != self._cursor:
            return True
        return (sbn, esi) < (obj.sbn, obj.esi)

    def _repair_packet(self) -> bytes | None:
        while self._repairs:
            sortkey, oid, sbn, esi, kind = self._repairs.pop()
            self._repair_pos = sortkey
            self._repair_keys.discard((oid, sbn, esi if kind != 2 else -1 - esi))
            obj = self.objects.get(oid)
            if obj is None:
                continue
            rflag = M.FLAG_REPAIR if self.cfg.set_repair_flags else 0
            if not self._repairs:
                self._flush_remaining = self.cfg.robust_factor if self._cursor is None else 0
            if kind == 0:
                count(self.stats, "tx.repair.info")
                return self._info_msg(obj, rflag)
            k = obj.block_len(sbn)
            if kind == 2:
                count(self.stats, "tx.repair.parity")
                return self._data_msg(obj, sbn, k + esi, obj.parity(sbn, esi), rflag)
            xflag = (M.FLAG_EXPLICIT if self.cfg.set_repair_flags else 0) | rflag
            if kind == 3:
                count(self.stats, "tx.repair.explicit")
                return self._data_msg(obj, sbn, esi, obj.parity(sbn, esi - k), xflag)
            try:
                seg = obj.segment(sbn, esi)
            except (KeyError, IndexError):
                continue
            count(self.stats, "tx.repair.explicit")
            return self._data_msg(obj, sbn, esi, seg, xflag)
        return None


__all__ = [
    "KIND_DATA",
    "KIND_FILE",
    "KIND_STREAM",
    "NormSender",
    "NormSenderConfig",
    "TxAckCompleted",
    "TxEotSent",
    "TxFlushCompleted",
    "TxObjectPurged",
    "TxObjectSent",
    "TxQueueEmpty",
    "TxRateChanged",
    "TxWatermarkCompleted",
]
