"""Sans-I/O NORM receiver (RFC 5740 §5.2, §5.3, §5.5; RFC 5401 §3.2), Engine contract.

Per remote sender (keyed by ``source_id``; a new ``instance_id`` restarts its state) the
receiver keeps the advertised GRTT/backoff/group size, its transport objects (DATA, FILE,
STREAM) and the NACK state machine:

* **Segmentation** (§5.1.1, RFC 5052 §9.1, :class:`_Geometry`: O(1) per object); source
  symbols go straight into the object buffer; when a block has ``k`` symbols but misses source
  symbols, it is decoded with :mod:`alc.fec` (``rs_matrix="nrl"`` by default: NRL NORM's
  Reed-Solomon generator; parity ESIs start at ``k``).  EXT_FTI's last field for fec_id 2/5
  is read as the number of parity symbols (NRL) unless ``fti_last_is_max_n``.
* **NACKing** (§5.3): initiated only at block/object boundaries, on NORM_CMD(FLUSH) or on
  the inactivity timeout; ``T_backoff = RandomBackoff(K*GRTT, gsize)`` (``rng`` passed in);
  overheard NACKs (from other receivers, for the same sender) and NORM_CMD(REPAIR_ADV)
  accumulate during the backoff and suppress the NACK when they cover our needs; holdoff
  ``(K+2)*GRTT`` afterwards.  Content: parity first (ESI = k ..) for partially received
  blocks, all parity + the highest missing source symbols when the erasures exceed the
  parity available, NORM_NACK_BLOCK / _OBJECT / _INFO for whole losses; RANGES for runs of
  3 or more; truncated to the sender's segment size (one NACK per cycle).
* **GRTT / CC feedback**: ``grtt_response`` in every NACK/ACK (send_time of the last
  NORM_CMD(CC) + hold time); NORM_CMD(CC) carrying EXT_RATE is answered by NORM_ACK(CC) with
  EXT_CC (at once when listed as CLR/PLR, else after a random backoff, cancelled by any
  other feedback we send; a newer probe only replaces the pending answer's echo, as in NRL).  Behind an authentication layer (TESLA, RFC 5776 §4.3 step 5)
  probes are taken at arrival through :meth:`NormReceiver.congestion_control_hint` (CC
  timing only) and their authenticated copies are not applied again.
* **Positive ACK**: NORM_CMD(FLUSH) with an acking node list naming us (or NORM_NODE_ANY) ->
  NORM_ACK(FLUSH) carrying the watermark once everything through it is received; ACK_REQ
  -> NORM_ACK(ack_type, ack_id); response time uniform over 1 GRTT.
* **Limits** (:class:`ReceiverConfig`): ``max_senders``, ``max_pending_objects`` per sender
  (older incomplete objects are aborted), ``max_bytes`` of buffered object data and
  per-object/per-block state over all senders (``*_STATE_BYTES``; what does not fit is
  aborted or dropped, streams evict their oldest blocks), ``max_object_size``,
  ``max_object_blocks``, ``stream_buffer_max`` per stream, overheard NACK content
  (``MAX_HEARD_RANGES``), ``object_timeout`` (no progress) and the sender
  inactivity timeout ``max(1 s, robust_factor*2*GRTT)`` repeated ``robust_factor`` times,
  after which the sender state is freed.

Files larger than memory (``stream_files``): a FILE object is not assembled; each source
block, once complete (received or FEC-decoded) and once the object's NORM_INFO (its name)
is known, is emitted as :class:`BlockReceived` (object, offset, octets) and forgotten;
:class:`FileCompleted` (object size, NORM_INFO) follows the last one.  The engine opens no
file: the caller writes the blocks at their offsets.  Only blocks in progress are held
(and the completed blocks of an object whose NORM_INFO is still missing, within
``max_bytes``), so ``max_bytes`` and ``max_object_segments`` do not bound the size of such
an object (``max_object_size`` and ``max_object_blocks`` still do).  DATA objects keep
the in-memory path.

Events (``next_event``): :class:`ObjectReceived`, :class:`ObjectAborted`,
:class:`BlockReceived`, :class:`FileCompleted`,
:class:`StreamData`, :class:`StreamEnd`, :class:`ApplicationCommand`, :class:`SenderEnded`.
Counters: ``rx.*``, ``nack.*``, ``ack.*`` and ``drop.<reason>``.
"""

from __future__ import annotations

import bisect
import math
import random
import struct
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from alc.engine import Address, BatchEntry, Times, count
from alc.errors import DecodeError
from alc.fec import OTI, get_scheme
from norm import messages as M
from norm.quantize import (
    quantize_loss,
    quantize_rate,
    quantize_rtt,
    random_backoff,
    sec_usec_to_time,
    time_to_sec_usec,
    unquantize_gsize,
    unquantize_rtt,
)

__all__ = [
    "ApplicationCommand",
    "BlockReceived",
    "FileCompleted",
    "NormReceiver",
    "ObjectAborted",
    "ObjectReceived",
    "ReceiverConfig",
    "SenderEnded",
    "StreamData",
    "StreamEnd",
]

MAX_OUT_QUEUE = 1024  # feedback datagrams held for datagrams_to_send
MAX_NEEDS = 2048  # repair needs evaluated per NACK decision (a NACK holds far fewer)
MAX_HEARD_RANGES = 4096  # overheard repair ranges kept per sender and NACK cycle
ENDED_KEPT = 4096  # ended sender instances remembered (late packets are not a new sender)
CC_ARRIVALS_KEPT = 256  # arrival times of not yet authenticated probes, per sender
# State an unauthenticated packet can make us hold is charged to ``max_bytes`` (measured
# with tracemalloc, rounded up; docs/security/norm.md): per object (record, FEC scheme,
# geometry), per source block of a DATA/FILE object (record, ESI set of up to k entries,
# the done-block entry), per held stream segment (its bytes).
OBJECT_STATE_BYTES = 2048
BLOCK_STATE_BYTES = 512
ESI_STATE_BYTES = 32
SEGMENT_STATE_BYTES = 160  # a held segment: bytes object header, dict slot, tuple
DONE_BLOCK_BYTES = 64  # a streamed block once emitted: its entry in the done-block set

# --------------------------------------------------------------------------- events


@dataclass
class ObjectReceived:
    source_id: int
    instance_id: int
    object_id: int
    kind: str  # "data" | "file"
    data: bytes
    info: bytes | None = None

    @property
    def name(self) -> str | None:
        """For FILE objects the NORM_INFO payload is the file name (NRL convention)."""
        if self.info is None:
            return None
        return self.info.split(b"\0", 1)[0].decode("utf-8", "replace")


@dataclass
class BlockReceived:
    """``stream_files``: source block of FILE object ``object_id`` complete; ``data`` goes
    at ``offset`` (handed over: the engine keeps no reference to it)."""

    source_id: int
    instance_id: int
    object_id: int
    offset: int
    data: bytes | bytearray
    info: bytes | None = None  # the object's NORM_INFO (its name), known before any block


@dataclass
class FileCompleted:
    """``stream_files``: every block of FILE object ``object_id`` was emitted as
    :class:`BlockReceived`; the file is ``size`` octets."""

    source_id: int
    instance_id: int
    object_id: int
    size: int
    info: bytes | None = None

    @property
    def name(self) -> str | None:
        if self.info is None:
            return None
        return self.info.split(b"\0", 1)[0].decode("utf-8", "replace")


@dataclass
class ObjectAborted:
    source_id: int
    object_id: int
    reason: str


@dataclass
class StreamData:
    source_id: int
    object_id: int
    offset: int
    data: bytes
    msg_start: int = 0  # payload_msg_start as sent (0 = no message starts here)


@dataclass
class StreamEnd:
    source_id: int
    object_id: int
    offset: int


@dataclass
class ApplicationCommand:
    source_id: int
    content: bytes


@dataclass
class SenderEnded:
    source_id: int
    instance_id: int
    reason: str  # "eot" | "inactive" | "restart"


# --------------------------------------------------------------------------- config


@dataclass
class ReceiverConfig:
    node_id: int = 2
    rs_matrix: str = "nrl"  # NRL NORM's RS generator (see alc.fec.gf)
    fti_last_is_max_n: bool = False  # False: NRL's "number of parity" reading of EXT_FTI
    fec2_m: int = 16  # m for fec_id 2 payload ids when no EXT_FTI is in the message (NRL: 16)
    robust_factor: int = 20
    max_senders: int = 64
    max_pending_objects: int = 256  # per sender (NRL rx cache)
    max_bytes: int = 256 * 1024 * 1024  # buffered object data, all senders together
    max_object_size: int = 1 << 32  # also bounded by max_bytes
    max_object_segments: int = 1 << 21  # segments per DATA/FILE object
    max_object_blocks: int = 1 << 18  # source blocks per DATA/FILE object (drop.bad_geometry)
    stream_buffer_max: int = 8 * 1024 * 1024  # out-of-order stream bytes held per stream
    stream_max_blocks: int = 1024  # stream blocks tracked per stream
    object_timeout: float | None = None  # abort an incomplete object without progress
    unicast_feedback: bool = False  # send NACK/ACK to the sender's address instead of the group
    ssm: bool = False  # RFC 5740 §5.3 SSM rule: suppress when T_backoff > (K-1)*GRTT
    nack_suppression: bool = True  # False: overheard NACKs/REPAIR_ADV never cancel our NACK
    silent: bool = False  # never NACK (EMCON)
    cc_feedback: bool = True  # answer NORM_CMD(CC)+EXT_RATE with NORM_ACK(CC)
    # unauthenticated NORM_CMD(CC) (congestion_control_hint): |(arrival - send_time) -
    # reference| above cc_hint_jitter s is implausible; at most one per cc_hint_min_gap s
    cc_hint_jitter: float = 0.05
    cc_hint_min_gap: float = 0.005
    default_segment_size: int = 1400  # NACK size bound before any FTI was seen
    # Extra delay before the sender's messages reach this engine, on top of the network
    # (behind TESLA: data of interval i is released when K_i is disclosed, up to
    # (d+1)*T_int later).  Added to the NACK holdoff, so a receiver does not ask again for
    # repairs that are sent but still waiting for their key (docs/tesla-choices.md).
    release_delay: float = 0.0
    # Join policy (RFC 5740 §5.2), the object a new sender's state starts at:
    # "current": objects that begin while we listen: sync on a non-repair NORM_INFO, a
    #   block-0 NORM_DATA or stream data (the RFC's recommended "blocks >= the first
    #   non-repair message received", at object granularity: a FILE/DATA object joined
    #   mid-way can never complete, so it is skipped); and an object we were present for
    #   from its start even if those first messages were lost to us (see presence_hint)
    # "stream": as current, and a stream joined mid-way is repaired from the oldest block
    #   the sender still buffers (NRL's NORM_SYNC_STREAM)
    # "all": every object the sender still holds: sync on any non-repair message and ask
    #   for the ``join_history`` objects before it (the sender squelches those it dropped)
    join_policy: str = "current"
    join_history: int = 128
    max_presence: int = 64  # presence hints kept (senders not yet synchronized)
    # FILE objects block by block (BlockReceived / FileCompleted, see the module docstring)
    stream_files: bool = False


# --------------------------------------------------------------------------- helpers

_OBJ = struct.Struct(">BBHIHBBBBH")  # NORM_DATA/INFO common header (norm.messages)
_U32 = struct.Struct(">I")


def _diff16(a: int, b: int) -> int:
    return ((a - b + 0x8000) & 0xFFFF) - 0x8000


def _add_range(ranges: list[tuple[int, int]], lo: int, hi: int) -> int:
    """Insert [lo, hi] into sorted disjoint ``ranges`` (merging adjacent/overlapping
    ones, O(log n) search); returns the change in the number of ranges."""
    before = len(ranges)
    i = bisect.bisect_left(ranges, (lo, lo))
    if i > 0 and ranges[i - 1][1] >= lo - 1:
        i -= 1
    j = i
    while j < len(ranges) and ranges[j][0] <= hi + 1:
        lo, hi = min(lo, ranges[j][0]), max(hi, ranges[j][1])
        j += 1
    ranges[i:j] = [(lo, hi)]
    return len(ranges) - before


def _in_ranges(ranges: list[tuple[int, int]], x: int) -> bool:
    i = bisect.bisect_right(ranges, (x, 1 << 62))
    return i > 0 and ranges[i - 1][1] >= x


class _Geometry:
    """RFC 5052 §9.1 block partitioning of one object, computed per block (O(1) state,
    whatever the number of blocks an EXT_FTI announces): ``lens[sbn]`` source symbols of
    block ``sbn``, ``len(lens)`` blocks; with ``starts=True`` item ``sbn`` is the index of
    its first source symbol instead."""

    __slots__ = ("n", "a_large", "a_small", "i_large", "starts")

    def __init__(self, symbols: int = 0, max_block_len: int = 1, starts: bool = False) -> None:
        n = -(-symbols // max_block_len) if symbols > 0 else 0
        self.n = n
        self.a_large = -(-symbols // n) if n else 0
        self.a_small = symbols // n if n else 0
        self.i_large = symbols - self.a_small * n if n else 0
        self.starts = starts

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, sbn: int) -> int:
        if not 0 <= sbn < self.n:
            raise IndexError(sbn)
        if self.starts:
            if sbn <= self.i_large:
                return sbn * self.a_large
            return self.i_large * self.a_large + (sbn - self.i_large) * self.a_small
        return self.a_large if sbn < self.i_large else self.a_small

    def __iter__(self) -> Any:
        return (self[i] for i in range(self.n))


class _ObjectBuffer:
    """The data of a DATA/FILE object, one buffer per source block allocated at the
    block's first segment: memory follows the blocks received, not the announced size."""

    __slots__ = ("size", "e", "lens", "starts", "blocks")

    def __init__(self, size: int, e: int, lens: _Geometry, starts: _Geometry) -> None:
        self.size, self.e, self.lens, self.starts = size, e, lens, starts
        self.blocks: dict[int, bytearray] = {}

    def block_size(self, sbn: int) -> int:
        return min(self.lens[sbn] * self.e, self.size - self.starts[sbn] * self.e)

    def __len__(self) -> int:
        return self.size

    def __bytes__(self) -> bytes:
        blocks = self.blocks
        return b"".join(
            blocks.get(sbn) or bytes(self.block_size(sbn)) for sbn in range(len(self.lens))
        )


@dataclass
class _Block:
    k: int
    recv: set[int] = field(default_factory=set)  # ESIs held (source and parity)
    parity: dict[int, bytes] = field(default_factory=dict)
    source: dict[int, bytes] = field(default_factory=dict)  # stream objects only
    done: bool = False
    first_req: list[int] | None = None  # first set of parity ESIs requested (§5.3)
    charged: int = 0  # stream blocks: state bytes charged, given back by _free_block

    @property
    def n_source(self) -> int:
        return sum(1 for e in self.recv if e < self.k)


@dataclass
class _Object:
    oid: int  # wire object_transport_id
    ordinal: int
    flags: int = 0
    fec_id: int = -1
    info: bytes | None = None
    info_expected: bool = False
    fti: M.FtiParams | None = None
    scheme: Any = None
    block_lens: _Geometry = field(default_factory=_Geometry)
    block_start: _Geometry = field(default_factory=_Geometry)
    buf: _ObjectBuffer | None = None
    blocks: dict[int, _Block] = field(default_factory=dict)
    blocks_done: int = 0
    first_incomplete: int = 0  # lowest block number not decoded yet
    done_blocks: set[int] = field(default_factory=set)
    m: int = 8
    last_progress: float = 0.0
    nbytes: int = 0  # accounted against max_bytes
    # stream state
    stream_low: int = -1  # lowest block still tracked
    stream_next: int | None = None  # next stream offset to deliver
    stream_pending: dict[int, tuple[bytes, int]] = field(default_factory=dict)
    stream_pending_bytes: int = 0
    stream_block_bytes: int = 0  # held for FEC in blocks (<= stream_buffer_max)
    stream_end: int | None = None
    # join policy "stream": delivery waits for the first segment of block stream_start
    # (the oldest the sender holds); stream_block_off: block -> offset of its segment 0
    stream_hold: bool = False
    stream_start: int = 0
    stream_block_off: dict[int, int] = field(default_factory=dict)
    finished: bool = False

    @property
    def is_stream(self) -> bool:
        return bool(self.flags & M.FLAG_STREAM)


@dataclass
class _Need:
    kind: str  # "object" | "info" | "block" | "segments"
    ordinal: int
    oid: int
    fec_id: int
    sbn: int = 0
    k: int = 0
    esis: list[int] = field(default_factory=list)
    erasures: int = 0


@dataclass
class _Sender:
    source_id: int
    instance_id: int
    addr: Address | None
    grtt: float = 0.5
    backoff: int = 4
    gsize: float = 10000.0
    grtt_q: int = -1  # wire values grtt/gsize were unquantized from
    gsize_q: int = -1
    fec_id: int = 5
    segment_size: int = 0
    synced: bool = False
    sync_ord: int = 0  # objects with ordinal < sync_ord are not of interest
    max_ord: int | None = None  # highest object ordinal seen
    objects: dict[int, _Object] = field(default_factory=dict)  # by ordinal
    done: set[int] = field(default_factory=set)  # finished/aborted ordinals >= sync_ord
    pos: tuple[int, int, int] = (-1, -1, -1)  # sender transmit position (ord, sbn, esi)
    pos_inclusive: bool = False  # pos came from a FLUSH: everything through it was sent
    # NACK state
    nack_state: str = "idle"  # idle | backoff | holdoff
    nack_deadline: float = 0.0
    nack_start: float = 0.0  # when the backoff / holdoff began
    nack_frac: float = 0.0  # backoff drawn as a fraction of K*GRTT (rescaled with GRTT)
    cycle_pos: tuple[int, int, int] = (-1, -1, -1)
    cycle_inclusive: bool = False
    heard_objects: set[int] = field(default_factory=set)
    heard_info: set[int] = field(default_factory=set)
    # overheard repair content, kept as ranges (ordinal -> SBN ranges, (ordinal, SBN) ->
    # ESI ranges) for known objects/blocks only, at most MAX_HEARD_RANGES per cycle
    heard_blocks: dict[int, list[tuple[int, int]]] = field(default_factory=dict)
    heard_segs: dict[tuple[int, int], list[tuple[int, int]]] = field(default_factory=dict)
    heard_erasures: dict[tuple[int, int], int] = field(default_factory=dict)
    heard_ranges: int = 0
    # (ordinal, SBN) of needs found covered by overheard feedback -> the cycle (its
    # holdoff deadline) in which they were (see _covered)
    nack_suppressed: dict[tuple[int, int], float] = field(default_factory=dict)
    # inactivity
    last_heard: float = 0.0
    inactivity_deadline: float = 0.0
    inactivity_count: int = 0
    # GRTT / CC
    cc_send_time: tuple[int, int] | None = None
    cc_recv_time: float = 0.0
    cc_sequence: int = 0
    cc_rtt: float | None = None  # RTT the sender measured for us (cc_node_list)
    cc_flags: int = 0
    cc_ack_deadline: float | None = None
    # CC probes already applied before authentication (congestion_control_hint): their
    # (cc_sequence, send_time) keys, so the authenticated copy is not applied again
    cc_hinted: deque[tuple[int, int, int]] = field(default_factory=lambda: deque(maxlen=64))
    # plausibility of unauthenticated probes (see _cc_plausible): arrival times of probe
    # candidates (at most CC_ARRIVALS_KEPT), arrival - send_time of the last authenticated
    # probes whose arrival we saw, newest authenticated send_time, last applied hint
    cc_arrivals: dict[tuple[int, int, int], float] = field(default_factory=dict)
    cc_offsets: deque[float] = field(default_factory=lambda: deque(maxlen=8))
    cc_auth_send: float | None = None
    cc_hint_last: float = -1e18
    seq_expected: int | None = None
    seq_received: int = 0
    seq_lost: int = 0
    loss_events: int = 0
    last_loss_time: float = -1e9
    rate_bytes: int = 0
    rate_start: float | None = None
    recv_rate: float = 0.0
    # positive ACK
    ack_pending: list[tuple[float, M.NormAck]] = field(default_factory=list)
    feedback_seq: dict[Any, int] = field(default_factory=dict)
    ended: bool = False


# --------------------------------------------------------------------------- receiver


class NormReceiver(BatchEntry):
    """Sans-I/O NORM receiver (see module docstring)."""

    def __init__(
        self, config: ReceiverConfig | None = None, rng: random.Random | None = None
    ) -> None:
        self.config = config or ReceiverConfig()
        self.rng = rng if rng is not None else random.Random(0)
        self.stats: dict[str, int] = {}
        self.senders: dict[int, _Sender] = {}
        # (source_id, instance_id) of ended senders, oldest forgotten beyond ENDED_KEPT
        self._ended: dict[tuple[int, int], None] = {}
        self._events: deque[Any] = deque()
        self._out: list[tuple[bytes, Address | None]] = []
        self._bytes = 0
        self._cc_preauth = False  # congestion_control_hint in use (see there)
        if self.config.join_policy not in ("current", "stream", "all"):
            raise ValueError(f"unknown join policy {self.config.join_policy!r}")
        # (source_id, instance_id) -> earliest object id whose start (non-repair NORM_INFO
        # or block-0 NORM_DATA) we received before we could use it (presence_hint)
        self._presence: dict[tuple[int, int], int] = {}
        # latest time our timers ran at (handle_timer): a message processed later than
        # it arrived (a backlog in the socket or behind TESLA, arrival times being the
        # kernel's stamps) restarts the inactivity timer from then, not from its arrival
        self._timer_now = -math.inf

    # ------------------------------------------------------------------ Engine API
    def receive_datagrams(
        self, datagrams: Sequence[bytes], addrs: Sequence[Address | None], times: Times
    ) -> None:
        """A batch in arrival order (an authentication layer releases a whole interval at
        once).  Each datagram is handled as by :meth:`receive_datagram`; after a NORM_DATA
        the fast path took, the datagrams that follow it in the same block go through
        :meth:`_data_run`, which makes the same state changes per datagram with the header
        checks done once for the run."""
        n = len(datagrams)
        k = 0
        fast = self._data_fast
        while k < n:
            data = datagrams[k]
            now = float(times[k])
            if data[:1] == b"\x12" and fast(data, addrs[k], now):
                k += 1
                if k < n:
                    k += self._data_run(datagrams, addrs, times, k, data)
                continue
            self._receive_general(data, addrs[k], now)
            k += 1

    def receive_datagram(self, data: bytes, addr: Address | None, now: float) -> None:
        if data[:1] == b"\x12" and self._data_fast(data, addr, now):
            return
        self._receive_general(data, addr, now)

    def _receive_general(self, data: bytes, addr: Address | None, now: float) -> None:
        count(self.stats, "rx.datagrams")
        try:
            msg = M.decode(data, self.config.fec2_m)
        except DecodeError as exc:
            count(self.stats, "drop.malformed")
            count(self.stats, "drop.malformed." + exc.field.replace(" ", "_"))
            return
        if isinstance(msg, (M.NormNack, M.NormAck)):
            if msg.source_id != self.config.node_id:
                self._on_feedback(msg, now)
            else:
                count(self.stats, "drop.own_feedback")
            return
        if isinstance(msg, M.NormReport):
            count(self.stats, "drop.report")
            return
        if msg.source_id == self.config.node_id:
            count(self.stats, "drop.own_message")
            return
        s = self._sender_for(msg, addr, now, create=not isinstance(msg, M.NormCmdEot))
        if s is None:
            return
        self._sender_heard(s, msg, data, now)
        if isinstance(msg, M.NormData):
            self._on_data(s, msg, now)
        elif isinstance(msg, M.NormInfo):
            self._on_info(s, msg, now)
        elif isinstance(msg, M.NormCmdFlush):
            self._on_flush(s, msg, now)
        elif isinstance(msg, M.NormCmdCC):
            self._on_cc(s, msg, now)
        elif isinstance(msg, M.NormCmdEot):
            self._end_sender(s, "eot")
        elif isinstance(msg, M.NormCmdSquelch):
            self._on_squelch(s, msg, now)
        elif isinstance(msg, M.NormCmdRepairAdv):
            count(self.stats, "rx.repair_adv")
            if s.nack_state == "backoff":
                self._accumulate(s, msg.requests)
        elif isinstance(msg, M.NormCmdAckReq):
            self._on_ack_req(s, msg, now)
        elif isinstance(msg, M.NormCmdApplication):
            count(self.stats, "rx.application")
            self._events.append(ApplicationCommand(s.source_id, msg.content))

    def _data_fast(self, data: bytes, addr: Address | None, now: float) -> bool:
        """The common NORM_DATA (FEC ID 5, at most an EXT_FTI, a known sender and an
        object whose FTI is known, not a stream) without building message objects: the
        same checks and state changes as the general path below, which handles
        everything else (returns False, having changed nothing)."""
        n = len(data)
        if n < 20 or data[13] != 5:
            return False
        hl = data[1] << 2
        if hl > n or hl < 20:
            return False
        if hl != 20 and (data[20] != M.EXT_FTI or data[21] << 2 != hl - 20):
            # more than the EXT_FTI (e.g. an EXT_AUTH behind TESLA): a structural walk that
            # fails where the decoder would; EXT_CC / EXT_RATE (checked bodies): general path
            pos = 20
            while pos < hl:
                het = data[pos]
                if het >= 128:
                    if het == M.EXT_RATE:
                        return False
                    pos += 4
                    continue
                if pos + 1 >= hl or het == M.EXT_CC or data[pos + 1] == 0:
                    return False
                pos += data[pos + 1] << 2
            if pos != hl:
                return False
        _, _, seq, src, inst, grtt, bg, flags, _, oid = _OBJ.unpack_from(data, 0)
        if flags & M.FLAG_STREAM or src == self.config.node_id:
            return False
        s = self.senders.get(src)
        if s is None or s.instance_id != inst or not s.synced:
            return False
        ordinal = self._ordinal(s, oid)
        o = s.objects.get(ordinal)
        if (
            o is None
            or o.fti is None
            or o.fec_id != 5
            or ordinal < s.sync_ord
            or ordinal in s.done
            or o.flags & M.FLAG_STREAM
        ):
            return False
        st = self.stats
        st["rx.datagrams"] = st.get("rx.datagrams", 0) + 1
        if addr is not None:
            s.addr = addr
        self._heard(s, seq, grtt, bg >> 4, bg & 0xF, n, now)
        st["rx.data"] = st.get("rx.data", 0) + 1
        if flags & M.FLAG_INFO:
            o.info_expected = True
        w = _U32.unpack_from(data, 16)[0]
        sbn, esi = w >> 8, w & 0xFF
        self._object_segment(s, o, sbn, esi, 0, memoryview(data)[hl:], now)
        self._advance_pos(s, (ordinal, sbn, esi), now)
        return True

    def _data_run(
        self,
        datagrams: Sequence[bytes],
        addrs: Sequence[Address | None],
        times: Times,
        k: int,
        first: bytes,
    ) -> int:
        """The NORM_DATA from ``datagrams[k]`` on that continue the block of ``first``
        (just taken by :meth:`_data_fast`): same version/type, header length, source,
        instance, GRTT/backoff/gsize, flags, FEC ID and object, same header-extension
        layout (HET/HEL octets at the same places, so the structural walk of
        :meth:`_data_fast` would end the same), a new source segment of the same, already
        allocated block.  Each one makes exactly the state changes of :meth:`_data_fast`
        (counters, sender liveness, sequence and rate accounting, the segment, the
        transmit position); the run stops before any other datagram (the caller handles it
        on the general path) and after one that completes the block.  -> datagrams taken."""
        hl = first[1] << 2
        lead = first[:2]
        head = first[4:16]  # source, instance, grtt, backoff/gsize, flags, FEC ID, object
        lay: list[tuple[int, int, int]] = []  # (position, HET, HEL or -1) of each extension
        pos = 20
        while pos < hl:
            het = first[pos]
            if het >= 128:
                lay.append((pos, het, -1))
                pos += 4
            else:
                lay.append((pos, het, first[pos + 1]))
                pos += first[pos + 1] << 2
        _, _, _, src, _, grtt, bg, _, _, oid = _OBJ.unpack_from(first, 0)
        s = self.senders.get(src)
        if s is None or s.grtt_q != grtt or s.seq_expected is None or s.rate_start is None:
            return 0
        ordinal = self._ordinal(s, oid)
        o = s.objects.get(ordinal)
        if o is None or o.finished or ordinal in s.done or o.buf is None or o.fti is None:
            return 0
        sbn0 = _U32.unpack_from(first, 16)[0] >> 8
        blk = o.blocks.get(sbn0)
        bb = o.buf.blocks.get(sbn0)
        if blk is None or blk.done or bb is None:
            return 0
        kk = blk.k
        e = o.fti.segment_size
        recv = blk.recv
        tin = self._t_inactivity(s)
        rate_win = max(s.grtt, 0.01)
        loss_win = s.cc_rtt or s.grtt
        u32 = _U32.unpack_from
        # the sender's liveness, sequence and rate state as locals, written back below
        seq_exp: int = s.seq_expected
        seq_lost, loss_events, last_loss = s.seq_lost, s.loss_events, s.last_loss_time
        seq_recv, rate_bytes, rate_start, recv_rate = (
            s.seq_received, s.rate_bytes, s.rate_start, s.recv_rate
        )
        addr_last: Address | None = None
        now = 0.0
        full = False
        pos_later: tuple[int, int, int] | None = None  # a position _advance_pos must see
        n_all = len(datagrams)
        taken = 0
        j = k
        while j < n_all:
            d = datagrams[j]
            n = len(d)
            if n < hl or d[:2] != lead or d[4:16] != head:
                break
            ok = True
            for p, het, hel in lay:
                if d[p] != het or (hel >= 0 and d[p + 1] != hel):
                    ok = False
                    break
            if not ok:
                break
            w = u32(d, 16)[0]
            sbn, esi = w >> 8, w & 0xFF
            if sbn != sbn0 or esi >= kk or esi in recv:
                break  # another block, parity, a duplicate: the general path
            off = esi * e
            want = min(e, len(bb) - off)
            if n - hl != want:
                break
            now = float(times[j])
            addr = addrs[j]
            if addr is not None:
                addr_last = addr
            # = _heard() with the header fields of ``first`` (already applied)
            seq = (d[2] << 8) | d[3]
            gap = (seq - seq_exp) & 0xFFFF
            if gap < 0x8000:
                if gap:
                    seq_lost += gap
                    if now - last_loss > loss_win:
                        loss_events += 1
                        last_loss = now
                seq_exp = (seq + 1) & 0xFFFF
            seq_recv += 1
            rate_bytes += n
            span = now - rate_start
            if span >= rate_win:
                recv_rate = rate_bytes / span
                rate_start, rate_bytes = now, 0
            # = _object_segment() for a new source segment of an allocated block
            bb[off : off + want] = memoryview(d)[hl:]
            recv.add(esi)
            taken += 1
            j += 1
            full = len(recv) >= kk
            # = _advance_pos(): within the block inline, else (or after the block's
            # completion, as _data_fast orders them) after the write-back
            pos3 = (ordinal, sbn, esi)
            old = s.pos
            if pos3 > old:
                if not full and old[0] == ordinal and old[1] == sbn:
                    s.pos, s.pos_inclusive = pos3, False
                else:
                    pos_later = pos3
            if full or pos_later is not None:
                break
        if not taken:
            return 0
        if addr_last is not None:
            s.addr = addr_last
        s.last_heard = now
        s.inactivity_count = 0
        s.inactivity_deadline = max(now, self._timer_now) + tin  # (as _heard)
        s.seq_expected = seq_exp
        s.seq_lost, s.loss_events, s.last_loss_time = seq_lost, loss_events, last_loss
        s.seq_received, s.rate_bytes, s.rate_start, s.recv_rate = (
            seq_recv, rate_bytes, rate_start, recv_rate
        )
        o.last_progress = now
        st = self.stats
        st["rx.datagrams"] = st.get("rx.datagrams", 0) + taken
        st["rx.data"] = st.get("rx.data", 0) + taken
        if full:
            self._complete_block(s, o, sbn0, blk)
            self._check_complete(s, o)
        if pos_later is not None:
            self._advance_pos(s, pos_later, now)
        return taken

    def congestion_control_hint(self, data: bytes, now: float) -> None:
        """RFC 5776 §4.3 step 5: the CC part of a sender message that is *not yet
        authenticated* (TESLA calls this once the packet passed the safe-packet test, the
        Group MAC and the disclosed-key checks, before buffering it).

        Only NORM_CMD(CC) of a sender already known from authenticated traffic (same
        ``source_id`` and ``instance_id``) is used, and only for CC timing: the probe's
        ``send_time`` / ``cc_sequence`` and arrival time (the ``grtt_response`` echo and the
        EXT_CC of our next feedback), our ``cc_node_list`` entry (CLR/PLR flags, the RTT
        the sender measured for us) and the NORM_ACK(CC) response deadline.  Nothing else:
        no sender is created, no data or object state, no sequence/loss accounting, no
        ``grtt``/``backoff``/``gsize`` (the NACK/ACK timers keep the values of
        authenticated messages).  Every other message type is ignored.  When the same
        probe is later released authenticated, :meth:`receive_datagram` does not apply its
        CC part again (keyed by ``cc_sequence`` and ``send_time``); once this method has
        been called, an authenticated probe that was not seen here (it arrived before its
        sender was known) is not applied either: only arrival-time CC is echoed.  A forged
        probe can therefore only shift CC timing until the next genuine probe.
        """
        self._cc_preauth = True
        if len(data) < 24 or data[0] != 0x10 | M.NORM_CMD or data[12] != M.CMD_CC:
            return
        try:
            msg = M.decode(data, self.config.fec2_m)
        except DecodeError:
            count(self.stats, "cc_hint.malformed")
            return
        if not isinstance(msg, M.NormCmdCC) or msg.source_id == self.config.node_id:
            return
        s = self.senders.get(msg.source_id)
        if s is None or s.instance_id != msg.instance_id or s.ended:
            count(self.stats, "cc_hint.unknown_sender")
            return
        self._on_cc(s, msg, now, hint=True)

    @property
    def presence_wanted(self) -> bool:
        """True while some sender is unknown or not synchronized: an authentication layer
        then passes every datagram to :meth:`presence_hint` before verifying it."""
        return not self.senders or not all(s.synced for s in self.senders.values())

    def presence_hint(self, data: bytes, now: float) -> None:
        """A datagram we received but may never get to use (before authentication: it
        can still be dropped as unsafe, e.g. at a cold start).  If it is the start of an
        object (non-repair NORM_INFO or block-0 NORM_DATA) of a sender we are not
        synchronized to, we were present from that object's start: the join policy syncs
        to it when the sender's first usable message arrives, and the lost start is
        NACKed (RFC 5740 §5.2: a receiver "joining" at the first message received).
        Nothing else is changed; a forged hint can only make us ask the sender for more
        of its own objects (a bounded NACK, squelched by the sender if unknown).  At most
        ``max_presence`` senders are tracked."""
        if (
            data[:1] == b"\x12"
            and len(data) >= 20
            and data[13] == 5
            and not data[12] & M.FLAG_STREAM
            and data[16:19] != b"\x00\x00\x00"
        ):
            return  # the common case, a later block of an object (FEC ID 5 SBN != 0)
        if len(data) < 20 or data[0] & 0x0F not in (M.NORM_INFO, M.NORM_DATA):
            return
        _, _, _, src, inst, _, _, flags, _, oid = _OBJ.unpack_from(data, 0)
        if flags & M.FLAG_REPAIR or src == self.config.node_id:
            return
        s = self.senders.get(src)
        if s is not None and s.instance_id == inst and s.synced:
            return
        if data[0] & 0x0F == M.NORM_DATA and not flags & M.FLAG_STREAM:
            fec_id = data[13]
            if fec_id in (5, 129) and len(data) >= 20:  # FEC Payload ID at 16 (RFC 5510/5740)
                w = _U32.unpack_from(data, 16)[0]
                if (w >> 8 if fec_id == 5 else w) != 0:
                    return
            else:
                try:
                    msg = M.decode(data, self.config.fec2_m)
                except DecodeError:
                    return
                if not isinstance(msg, M.NormData) or msg.sbn != 0:
                    return
        key = (src, inst)
        old = self._presence.get(key)
        if old is None:
            if len(self._presence) >= self.config.max_presence:
                count(self.stats, "drop.presence_full")
                return
            self._presence[key] = oid
            count(self.stats, "rx.presence_hint")
        elif _diff16(oid, old) < 0:
            self._presence[key] = oid

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address | None]]:
        self.handle_timer(now)
        out, self._out = self._out, []
        return out

    def get_timer(self) -> float | None:
        t: float | None = None
        for s in self.senders.values():
            for d in self._sender_deadlines(s):
                if t is None or d < t:
                    t = d
        return t

    def handle_timer(self, now: float) -> None:
        if now > self._timer_now:
            self._timer_now = now
        for s in list(self.senders.values()):
            self._sender_timers(s, now)

    def next_event(self) -> Any | None:
        return self._events.popleft() if self._events else None

    # ------------------------------------------------------------------ senders
    def _sender_for(
        self, msg: Any, addr: Address | None, now: float, create: bool
    ) -> _Sender | None:
        src = msg.source_id
        s = self.senders.get(src)
        if s is not None and s.instance_id != msg.instance_id:
            count(self.stats, "rx.sender_restart")
            self._end_sender(s, "restart")
            s = None
        if s is None:
            if (src, msg.instance_id) in self._ended:
                count(self.stats, "drop.sender_ended")
                return None
            if not create:
                count(self.stats, "drop.unknown_sender")
                return None
            if len(self.senders) >= self.config.max_senders:
                count(self.stats, "drop.too_many_senders")
                return None
            s = _Sender(src, msg.instance_id, addr)
            s.last_heard = now
            self.senders[src] = s
            count(self.stats, "rx.senders")
        if addr is not None:
            s.addr = addr
        return s

    def _sender_heard(self, s: _Sender, msg: Any, raw: bytes, now: float) -> None:
        self._heard(s, msg.sequence, msg.grtt, msg.backoff, msg.gsize, len(raw), now)

    def _heard(
        self, s: _Sender, seq: int, grtt: int, backoff: int, gsize: int, nbytes: int, now: float
    ) -> None:
        """A message of sender ``s`` (header fields as on the wire, ``nbytes`` long)."""
        if grtt != s.grtt_q:
            s.grtt = unquantize_rtt(grtt)
            s.grtt_q = grtt
            if s.nack_state != "idle":
                self._rescale_nack_timer(s, backoff)
        s.backoff = backoff
        if gsize != s.gsize_q:
            s.gsize = unquantize_gsize(gsize)
            s.gsize_q = gsize
        s.last_heard = now
        s.inactivity_count = 0
        # from when we process it (a receiver working through a backlog of datagrams
        # stamped more than T_inactivity ago must not take the sender for silent and
        # NACK the whole current object, issue 11: a 65k-repair storm at 100 MiB)
        t = self._timer_now
        s.inactivity_deadline = (now if now > t else t) + self._t_inactivity(s)
        # loss estimate from sender sequence gaps (feeds EXT_CC only, never reliability)
        if s.seq_expected is not None:
            gap = (seq - s.seq_expected) & 0xFFFF
            if 0 < gap < 0x8000:
                s.seq_lost += gap
                if now - s.last_loss_time > (s.cc_rtt or s.grtt):
                    s.loss_events += 1
                    s.last_loss_time = now
        if s.seq_expected is None or ((seq - s.seq_expected) & 0xFFFF) < 0x8000:
            s.seq_expected = (seq + 1) & 0xFFFF
        s.seq_received += 1
        if s.rate_start is None:
            s.rate_start = now
        s.rate_bytes += nbytes
        span = now - s.rate_start
        if span >= max(s.grtt, 0.01):
            s.recv_rate = s.rate_bytes / span
            s.rate_start, s.rate_bytes = now, 0

    def _t_inactivity(self, s: _Sender) -> float:
        return max(1.0, self.config.robust_factor * 2.0 * s.grtt)

    def _end_sender(self, s: _Sender, reason: str) -> None:
        for o in list(s.objects.values()):
            if not o.finished:
                self._abort(s, o, reason)
        self.senders.pop(s.source_id, None)
        if reason != "restart":
            self._ended[(s.source_id, s.instance_id)] = None
            if len(self._ended) > ENDED_KEPT:
                del self._ended[next(iter(self._ended))]
        count(self.stats, f"rx.sender_{reason}")
        self._events.append(SenderEnded(s.source_id, s.instance_id, reason))

    # ------------------------------------------------------------------ objects
    def _ordinal(self, s: _Sender, oid: int) -> int:
        if s.max_ord is None:
            return oid
        return s.max_ord + _diff16(oid, s.max_ord & 0xFFFF)

    def _object_for(
        self, s: _Sender, oid: int, flags: int, is_repairish: bool, now: float, sync_ok: bool
    ) -> _Object | None:
        ordinal = self._ordinal(s, oid)
        if not s.synced:
            # a repair syncs nobody (RFC 5740 §5.2), except a receiver present from the
            # start of an object it could not use (presence_hint): it syncs there
            start = self._sync_presence(s, ordinal) if is_repairish else self._sync_start(s, ordinal, sync_ok)
            if start is None:
                count(self.stats, "drop.not_synced")
                return None
            s.synced = True
            s.sync_ord, s.max_ord = start, ordinal
        if ordinal < s.sync_ord:
            count(self.stats, "drop.old_object")
            return None
        if ordinal in s.done:
            count(self.stats, "rx.duplicate")
            return None
        o = s.objects.get(ordinal)
        if o is None:
            assert s.max_ord is not None
            if ordinal - s.sync_ord >= 4 * self.config.max_pending_objects:
                # far out of range: resynchronise (RFC 5740 §4.2.1)
                count(self.stats, "rx.resync")
                for old in list(s.objects.values()):
                    self._abort(s, old, "resync")
                s.done.clear()
                s.sync_ord = ordinal
            o = _Object(oid, ordinal, flags, last_progress=now)
            s.objects[ordinal] = o
            if ordinal > s.max_ord:
                s.max_ord = ordinal
            self._enforce_pending(s)
            if o.finished or not self._charge(s, o, OBJECT_STATE_BYTES):
                return None
        if o.fti is None:
            o.flags = flags
        elif (flags ^ o.flags) & M.FLAG_STREAM:
            count(self.stats, "drop.object_type_mismatch")  # STREAM bit is fixed per object
            return None
        return o

    def _sync_start(self, s: _Sender, ordinal: int, sync_ok: bool) -> int | None:
        """First object ordinal of interest when a non-repair message of object
        ``ordinal`` arrives from a sender we are not synchronized to (join policy, see
        :class:`ReceiverConfig`); None: not yet."""
        cfg = self.config
        if cfg.join_policy == "all":
            count(self.stats, "rx.sync_all")
            return ordinal - max(0, min(cfg.join_history, cfg.max_pending_objects // 2))
        h = self._sync_presence(s, ordinal, count_same=not sync_ok)
        if h is not None:
            return h
        return ordinal if sync_ok else None

    def _sync_presence(self, s: _Sender, ordinal: int, count_same: bool = True) -> int | None:
        """The object whose start we received unusable (:meth:`presence_hint`) when a
        usable message of object ``ordinal`` (or, FLUSH, transmit position) of an
        unsynchronized sender arrives: the sync point, at most ``max_pending_objects/2``
        back (None: no hint, or out of range).  Counted ``rx.sync_presence`` unless it is
        ``ordinal`` itself and not ``count_same``."""
        hint = self._presence.pop((s.source_id, s.instance_id), None)
        if hint is None:
            return None
        h = ordinal + _diff16(hint, ordinal & 0xFFFF)
        if not ordinal - self.config.max_pending_objects // 2 < h <= ordinal:
            return None
        if h < ordinal or count_same:
            count(self.stats, "rx.sync_presence")  # the start we could not use
        return h

    def _enforce_pending(self, s: _Sender) -> None:
        assert s.max_ord is not None
        limit = self.config.max_pending_objects
        while s.max_ord - s.sync_ord >= limit:
            o = s.objects.get(s.sync_ord)
            if o is not None and not o.finished:
                count(self.stats, "drop.too_many_objects")
                self._abort(s, o, "too_many_objects")
            self._advance_sync(s, force=True)

    def _advance_sync(self, s: _Sender, force: bool = False) -> None:
        if force:
            s.done.discard(s.sync_ord)
            s.objects.pop(s.sync_ord, None)
            s.sync_ord += 1
        while s.sync_ord in s.done:
            s.done.discard(s.sync_ord)
            s.objects.pop(s.sync_ord, None)
            s.sync_ord += 1

    def _finish(self, s: _Sender, o: _Object) -> None:
        o.finished = True
        self._release(o)
        s.objects.pop(o.ordinal, None)
        s.done.add(o.ordinal)
        self._advance_sync(s)

    def _abort(self, s: _Sender, o: _Object, reason: str) -> None:
        if o.finished:
            return
        count(self.stats, "rx.objects_aborted")
        self._events.append(ObjectAborted(s.source_id, o.oid, reason))
        self._finish(s, o)

    def _release(self, o: _Object) -> None:
        self._bytes -= o.nbytes
        o.nbytes = 0
        o.buf = None
        o.blocks.clear()
        o.stream_pending.clear()

    def _set_fti(self, s: _Sender, o: _Object, msg: M.NormData | M.NormInfo, now: float) -> bool:
        """Take the object's FTI from the message; False if unusable (object aborted)."""
        if o.fti is not None:
            return True
        fti = None
        for x in msg.extensions:
            if isinstance(x, M.ExtFti):
                fti = x
                break
        if fti is None:
            return False
        try:
            p = fti.params(msg.fec_id, self.config.fti_last_is_max_n)
            if p.segment_size <= 0 or p.max_block_len <= 0:
                raise DecodeError("EXT_FTI", "segment size / block length 0")
            stream = bool(o.flags & M.FLAG_STREAM)
            e = p.segment_size + 8 if stream else p.segment_size
            if self._streamed(o):  # only its blocks in progress are held
                too_large = p.object_size > self.config.max_object_size
            else:
                too_large = not stream and (
                    p.object_size > min(self.config.max_object_size, self.config.max_bytes)
                    or -(-p.object_size // p.segment_size) > self.config.max_object_segments
                )
            if too_large:
                count(self.stats, "drop.object_too_large")
                self._abort(s, o, "object_too_large")
                return False
            geo = _Geometry(-(-p.object_size // p.segment_size), p.max_block_len)
            if not stream and len(geo) > self.config.max_object_blocks:
                count(self.stats, "drop.bad_geometry")
                self._abort(s, o, "bad_geometry")
                return False
            n_par = p.num_parity
            max_n = p.max_block_len + n_par
            if msg.fec_id == 5 or (msg.fec_id == 2 and p.m == 8):
                max_n = min(max_n, 255)
            # the scheme sees one block (the largest): its own RFC 5052 partition of the
            # whole object would be a list as long as the announced number of blocks
            tl = p.max_block_len * e if stream else min(p.object_size, geo.a_large * e)
            oti = OTI(msg.fec_id, tl, e, p.max_block_len, max_n, p.instance_id, p.m, p.g)
            scheme = (
                get_scheme(oti, rs_matrix=self.config.rs_matrix)
                if msg.fec_id != 0
                else get_scheme(oti)
            )
        except (DecodeError, ValueError) as exc:
            count(self.stats, "drop.bad_fti")
            self._abort(s, o, f"bad_fti: {exc}")
            return False
        o.fti = p
        o.fec_id = msg.fec_id
        o.m = p.m
        o.scheme = scheme
        s.fec_id = msg.fec_id
        s.segment_size = p.segment_size
        if not stream:
            o.block_lens = geo
            o.block_start = _Geometry(-(-p.object_size // p.segment_size), p.max_block_len, True)
        return True

    def _streamed(self, o: _Object) -> bool:
        return self.config.stream_files and bool(o.flags & M.FLAG_FILE) and not o.is_stream

    def _emit_blocks(self, s: _Sender, o: _Object) -> None:
        """``stream_files``: hand the completed blocks held to the caller (once the name is
        known) and forget them."""
        if o.info_expected and o.info is None:
            return
        buf = o.buf
        if buf is None or not buf.blocks:
            return
        e = buf.e
        for sbn in sorted(buf.blocks):
            if sbn not in o.done_blocks:
                continue
            bb = buf.blocks.pop(sbn)
            n = len(bb) + BLOCK_STATE_BYTES + ESI_STATE_BYTES * o.block_lens[sbn] - DONE_BLOCK_BYTES
            o.nbytes -= n
            self._bytes -= n
            self._events.append(
                BlockReceived(s.source_id, s.instance_id, o.oid, buf.starts[sbn] * e, bb, o.info)
            )

    def _charge(self, s: _Sender, o: _Object, n: int) -> bool:
        """Charge ``n`` bytes of state of object ``o`` to ``max_bytes`` (given back when
        the object ends); False (object aborted, ``drop.buffer_full``) if they do not fit."""
        if self._bytes + n > self.config.max_bytes:
            count(self.stats, "drop.buffer_full")
            self._abort(s, o, "buffer_full")
            return False
        o.nbytes += n
        self._bytes += n
        return True

    def _alloc(self, s: _Sender, o: _Object, sbn: int) -> bytearray | None:
        """The buffer of source block ``sbn``, allocated and charged at its first segment
        (None: it does not fit ``max_bytes``, object aborted, ``drop.buffer_full``)."""
        assert o.fti is not None
        buf = o.buf
        if buf is None:
            e = o.fti.segment_size
            buf = o.buf = _ObjectBuffer(o.fti.object_size, e, o.block_lens, o.block_start)
        bb = buf.blocks.get(sbn)
        if bb is None:
            size = buf.block_size(sbn)
            if not self._charge(s, o, size):
                return None
            bb = buf.blocks[sbn] = bytearray(size)
        return bb

    # ------------------------------------------------------------------ message handlers
    def _on_info(self, s: _Sender, msg: M.NormInfo, now: float) -> None:
        count(self.stats, "rx.info")
        o = self._object_for(
            s, msg.object_id, msg.flags, bool(msg.flags & M.FLAG_REPAIR), now, True
        )
        if o is None:
            return
        o.info_expected = True
        if o.info is None:
            if not self._charge(s, o, len(msg.payload)):
                return
            o.info = msg.payload
            if self._streamed(o):
                self._emit_blocks(s, o)  # blocks completed before the name was known
        self._set_fti(s, o, msg, now)
        if o.fec_id < 0:
            o.fec_id = msg.fec_id
        self._advance_pos(s, (o.ordinal, -1, 0), now)
        self._check_complete(s, o)

    def _on_data(self, s: _Sender, msg: M.NormData, now: float) -> None:
        count(self.stats, "rx.data")
        stream = bool(msg.flags & M.FLAG_STREAM)
        sync_ok = stream or msg.sbn == 0
        o = self._object_for(
            s, msg.object_id, msg.flags, bool(msg.flags & M.FLAG_REPAIR), now, sync_ok
        )
        if o is None:
            return
        if msg.flags & M.FLAG_INFO:
            o.info_expected = True
        if o.fti is None and not self._set_fti(s, o, msg, now):
            if not o.finished:
                count(self.stats, "drop.no_fti")
            return
        if msg.fec_id != o.fec_id:
            count(self.stats, "drop.fec_id_mismatch")
            return
        pos = (o.ordinal, msg.sbn, msg.esi)
        if stream:
            self._on_stream_data(s, o, msg, now)
        else:
            self._on_object_data(s, o, msg, now)
        self._advance_pos(s, pos, now)

    def _on_object_data(self, s: _Sender, o: _Object, msg: M.NormData, now: float) -> None:
        self._object_segment(s, o, msg.sbn, msg.esi, msg.sbl, msg.payload, now)

    def _object_segment(
        self,
        s: _Sender,
        o: _Object,
        sbn: int,
        esi: int,
        sbl: int,
        payload: bytes | memoryview,
        now: float,
    ) -> None:
        assert o.fti is not None
        nblocks = len(o.block_lens)
        if sbn >= nblocks:
            count(self.stats, "drop.bad_sbn")
            return
        k = o.block_lens[sbn]
        if o.fec_id == 129 and sbl and sbl != k:
            count(self.stats, "drop.bad_block_length")
            return
        blk = o.blocks.get(sbn)
        if blk is None:
            if sbn in o.done_blocks:
                count(self.stats, "rx.duplicate")
                return
            if not self._charge(s, o, BLOCK_STATE_BYTES + ESI_STATE_BYTES * k):
                return
            blk = o.blocks[sbn] = _Block(k)
        if blk.done or esi in blk.recv:
            count(self.stats, "rx.duplicate")
            return
        bb = self._alloc(s, o, sbn)
        if bb is None:
            return
        e = o.fti.segment_size
        if esi < k:
            off = esi * e
            want = min(e, len(bb) - off)
            if len(payload) != want:
                count(self.stats, "drop.bad_length")
                return
            bb[off : off + want] = payload
        else:
            n_limit = getattr(o.scheme, "n_limit", 0)
            if o.fec_id == 0 or esi >= n_limit or len(payload) > e:
                count(self.stats, "drop.bad_parity")
                return
            cost = len(payload) + SEGMENT_STATE_BYTES
            if self._bytes + cost > self.config.max_bytes:
                count(self.stats, "drop.buffer_full")  # the parity only: source still fits
                return
            blk.parity[esi] = bytes(payload)
            o.nbytes += cost
            self._bytes += cost
        blk.recv.add(esi)
        o.last_progress = now
        if len(blk.recv) >= k:
            self._complete_block(s, o, sbn, blk)
            self._check_complete(s, o)

    def _complete_block(self, s: _Sender, o: _Object, sbn: int, blk: _Block) -> None:
        assert o.fti is not None and o.buf is not None
        k = blk.k
        e = o.fti.segment_size
        missing = [i for i in range(k) if i not in blk.recv]
        if missing:
            bb = o.buf.blocks[sbn]
            try:
                # the scheme covers one block (see _set_fti): k given here
                dec = o.scheme.block_decoder(0, k=k)
                for i in range(k):
                    if i in blk.recv:
                        off = i * e
                        dec.add(i, bytes(bb[off : min(off + e, len(bb))]))
                for j, sym in sorted(blk.parity.items()):
                    if dec.add(j, sym):
                        break
                out = dec.decode()
            except (DecodeError, ValueError) as exc:
                count(self.stats, "drop.fec_decode")
                count(self.stats, f"drop.fec_decode.{type(exc).__name__}")
                blk.parity.clear()
                blk.recv = {i for i in blk.recv if i < k}
                return
            for i in missing:
                off = i * e
                end = min(off + e, len(bb))
                bb[off:end] = out[i][: end - off]
            count(self.stats, "rx.fec_blocks_decoded")
            count(self.stats, "rx.fec_symbols_recovered", len(missing))
        self._free_block(o, blk)
        blk.done = True
        o.blocks.pop(sbn, None)
        o.done_blocks.add(sbn)
        o.blocks_done += 1
        if self._streamed(o):
            self._emit_blocks(s, o)

    def _free_block(self, o: _Object, blk: _Block) -> None:
        n = sum(len(p) for p in blk.parity.values()) + sum(len(p) for p in blk.source.values())
        n += SEGMENT_STATE_BYTES * (len(blk.parity) + len(blk.source))
        if o.is_stream:
            o.stream_block_bytes -= n + blk.charged
        n += blk.charged
        blk.charged = 0
        o.nbytes -= n
        self._bytes -= n
        blk.parity.clear()
        blk.source.clear()

    def _check_complete(self, s: _Sender, o: _Object) -> None:
        if o.finished or o.is_stream or o.fti is None:
            return
        if o.blocks_done < len(o.block_lens):
            return
        if o.info_expected and o.info is None:
            return
        if self._streamed(o):
            self._emit_blocks(s, o)
            count(self.stats, "rx.objects_completed")
            self._events.append(FileCompleted(s.source_id, s.instance_id, o.oid, o.fti.object_size, o.info))
            self._finish(s, o)
            return
        data = bytes(o.buf) if o.buf is not None else b""
        kind = "file" if o.flags & M.FLAG_FILE else "data"
        count(self.stats, "rx.objects_completed")
        self._events.append(ObjectReceived(s.source_id, s.instance_id, o.oid, kind, data, o.info))
        self._finish(s, o)

    # ------------------------------------------------------------------ streams
    def _on_stream_data(self, s: _Sender, o: _Object, msg: M.NormData, now: float) -> None:
        assert o.fti is not None
        sbn, esi = msg.sbn, msg.esi
        k = msg.sbl if (o.fec_id == 129 and msg.sbl) else o.fti.max_block_len
        if k > o.fti.max_block_len:
            count(self.stats, "drop.bad_block_length")
            return
        if o.stream_low < 0:
            o.stream_low = sbn
            if self.config.join_policy == "stream" and sbn > 0:
                # joined mid-stream: repair from the beginning of what the sender still
                # buffers (it squelches blocks it dropped), deliver from there
                o.stream_low, o.stream_start, o.stream_hold = 0, 0, True
        if sbn < o.stream_low:
            count(self.stats, "rx.duplicate")
            return
        if sbn - o.stream_low >= self.config.stream_max_blocks:
            # fell too far behind: give up on the oldest blocks (bounded state)
            count(self.stats, "drop.stream_overrun")
            new_low = sbn - self.config.stream_max_blocks + 1
            for old_sbn in [b for b in o.blocks if b < new_low]:
                self._free_block(o, o.blocks.pop(old_sbn))
            o.stream_low = new_low
            o.stream_start = max(o.stream_start, new_low)
        blk = o.blocks.get(sbn)
        if blk is None:
            cost = BLOCK_STATE_BYTES + ESI_STATE_BYTES * o.fti.max_block_len
            if not self._stream_room(o, sbn, cost):
                return
            blk = o.blocks[sbn] = _Block(k, charged=cost)
            self._stream_hold(o, cost)
        elif (
            o.fec_id == 129
            and msg.sbl
            and msg.sbl != blk.k
            and (esi >= blk.k or esi >= max(blk.recv, default=-1))
        ):
            blk.k = msg.sbl  # a later / parity packet's source_block_len wins (RFC 5740 §4.2.1)
        if blk.done or esi in blk.recv:
            count(self.stats, "rx.duplicate")
            return
        e = o.fti.segment_size + 8
        if len(msg.payload) > e or len(msg.payload) < 8 and esi < blk.k:
            count(self.stats, "drop.bad_length")
            return
        if esi >= blk.k and (o.fec_id == 0 or esi >= getattr(o.scheme, "n_limit", 0)):
            count(self.stats, "drop.bad_parity")
            return
        if not self._stream_room(o, sbn, len(msg.payload) + SEGMENT_STATE_BYTES):
            return
        self._stream_hold(o, SEGMENT_STATE_BYTES)  # + the payload, charged below
        o.stream_block_bytes += len(msg.payload)
        blk.recv.add(esi)
        if esi < blk.k:
            blk.source[esi] = msg.payload
            o.nbytes += len(msg.payload)
            self._bytes += len(msg.payload)
            self._stream_segment(s, o, msg.payload, (sbn, esi))
        else:
            blk.parity[esi] = msg.payload
            o.nbytes += len(msg.payload)
            self._bytes += len(msg.payload)
        o.last_progress = now
        if blk.n_source >= blk.k or (len(blk.recv) >= blk.k and o.fec_id != 0):
            self._complete_stream_block(s, o, sbn, blk)
        self._stream_deliver(s, o)

    def _stream_room(self, o: _Object, sbn: int, n: int) -> bool:
        """Room for ``n`` more bytes held in the blocks of stream ``o`` for block ``sbn``.

        Bounds: the block buffers of one stream <= ``stream_buffer_max``; everything
        buffered <= ``max_bytes``.  Eviction rule: the stream's oldest tracked blocks
        before ``sbn`` are given up first (their source segments already went to the
        reassembly, only their FEC repair is lost; ``drop.stream_evicted``); if that is
        not enough the segment is dropped (``drop.buffer_full``)."""
        cap, limit = self.config.stream_buffer_max, self.config.max_bytes
        while o.stream_block_bytes + n > cap or self._bytes + n > limit:
            while o.stream_low < sbn and o.stream_low not in o.blocks:
                o.stream_low += 1
            if o.stream_low >= sbn:
                count(self.stats, "drop.buffer_full")
                return False
            self._free_block(o, o.blocks.pop(o.stream_low))
            o.stream_low += 1
            count(self.stats, "drop.stream_evicted")
        return True

    def _stream_hold(self, o: _Object, n: int) -> None:
        o.stream_block_bytes += n
        o.nbytes += n
        self._bytes += n

    def _complete_stream_block(self, s: _Sender, o: _Object, sbn: int, blk: _Block) -> None:
        missing = [i for i in range(blk.k) if i not in blk.recv]
        if missing:
            try:
                dec = o.scheme.block_decoder(0, k=blk.k)
                for i, sym in blk.source.items():
                    dec.add(i, sym)
                for j, sym in sorted(blk.parity.items()):
                    if dec.add(j, sym):
                        break
                out = dec.decode()
            except (DecodeError, ValueError, TypeError):
                count(self.stats, "drop.fec_decode")
                return
            for i in missing:
                self._stream_segment(s, o, out[i], (sbn, i))
            count(self.stats, "rx.fec_blocks_decoded")
        blk.done = True
        self._free_block(o, blk)
        while o.stream_low in o.blocks and o.blocks[o.stream_low].done:
            del o.blocks[o.stream_low]
            o.stream_low += 1

    def _stream_segment(
        self, s: _Sender, o: _Object, sym: bytes, pos: tuple[int, int] | None = None
    ) -> None:
        try:
            hdr, data = M.StreamHeader.decode(sym)
        except DecodeError:
            count(self.stats, "drop.bad_stream_header")
            return
        off = hdr.payload_offset
        if o.stream_hold:
            if pos is not None and pos[1] == 0 and pos[0] >= o.stream_start:
                if len(o.stream_block_off) < self.config.stream_max_blocks:
                    o.stream_block_off[pos[0]] = off
            self._stream_release(o)
        elif o.stream_next is None:
            o.stream_next = off
        if o.stream_next is not None and (off - o.stream_next) & 0xFFFFFFFF >= 0x80000000:
            return  # already delivered
        if hdr.payload_len == 0:
            if hdr.payload_msg_start == M.STREAM_END:
                o.stream_end = off
            return
        if off in o.stream_pending:
            return
        if o.stream_pending_bytes + len(data) > self.config.stream_buffer_max:
            count(self.stats, "drop.stream_buffer_full")
            return
        cost = len(data) + SEGMENT_STATE_BYTES
        if self._bytes + cost > self.config.max_bytes:
            count(self.stats, "drop.buffer_full")  # a hole, skipped by _stream_deliver
            return
        o.stream_pending[off] = (data, hdr.payload_msg_start)
        o.stream_pending_bytes += len(data)
        o.nbytes += cost
        self._bytes += cost

    def _stream_release(self, o: _Object) -> None:
        """Join policy "stream": start delivery once block ``stream_start``'s first
        segment is known."""
        off = o.stream_block_off.get(o.stream_start)
        if off is not None:
            o.stream_hold = False
            o.stream_next = off
            o.stream_block_off.clear()

    def _stream_deliver(self, s: _Sender, o: _Object) -> None:
        while o.stream_next is not None:
            nxt = o.stream_next
            if o.stream_end is not None and nxt == o.stream_end:
                self._events.append(StreamEnd(s.source_id, o.oid, nxt))
                count(self.stats, "rx.streams_ended")
                self._finish(s, o)
                return
            item = o.stream_pending.pop(nxt, None)
            if item is None:
                seg = o.fti.segment_size + 8 if o.fti is not None else 0
                if not o.stream_pending or (
                    o.stream_pending_bytes * 2 < self.config.stream_buffer_max
                    and self._bytes + seg <= self.config.max_bytes
                ):
                    return
                # the hole is not being repaired and the buffer is filling (this stream's
                # or max_bytes): skip it
                count(self.stats, "drop.stream_gap")
                o.stream_next = min(o.stream_pending, key=lambda off: (off - nxt) & 0xFFFFFFFF)
                continue
            data, ms = item
            o.stream_pending_bytes -= len(data)
            o.nbytes -= len(data) + SEGMENT_STATE_BYTES
            self._bytes -= len(data) + SEGMENT_STATE_BYTES
            self._events.append(StreamData(s.source_id, o.oid, nxt, data, ms))
            count(self.stats, "rx.stream_bytes", len(data))
            o.stream_next = (nxt + len(data)) & 0xFFFFFFFF

    # ------------------------------------------------------------------ commands
    def _on_flush(self, s: _Sender, msg: M.NormCmdFlush, now: float) -> None:
        count(self.stats, "rx.flush")
        me = self.config.node_id
        listed = me in msg.acking_nodes or M.NODE_ANY in msg.acking_nodes
        if not s.synced:
            # present from an object's start whose new data all came unusable (e.g. no
            # TESLA bootstrap until the flush): sync there and NACK it (presence_hint)
            h = self._sync_presence(s, self._ordinal(s, msg.object_id))
            if h is not None:
                s.synced = True
                s.sync_ord, s.max_ord = h, self._ordinal(s, msg.object_id)
            elif not listed:
                return
            else:
                s.synced = True  # a watermark naming us forces sync
                s.sync_ord = s.max_ord = msg.object_id
        ordinal = self._ordinal(s, msg.object_id)
        if s.max_ord is not None and ordinal > s.max_ord:
            s.max_ord = ordinal
            self._enforce_pending(s)
        pos = (ordinal, msg.sbn, msg.esi)
        if pos >= s.pos:
            s.pos, s.pos_inclusive = pos, True
        # positions before the sync point need nothing (delivered or given up)
        needs = self._needs(s, pos, inclusive=True) if ordinal >= s.sync_ord else []
        if needs:
            self._start_cycle(s, pos, True, now)
        elif listed:
            wm = M.RepairItem(msg.fec_id, msg.object_id, msg.sbn, msg.esi, msg.sbl, 0, msg.m)
            ack = M.NormAck(0, me, s.source_id, s.instance_id, M.ACK_FLUSH, 0, watermark=wm)
            self._schedule_ack(s, ack, now)

    def _on_ack_req(self, s: _Sender, msg: M.NormCmdAckReq, now: float) -> None:
        count(self.stats, "rx.ack_req")
        me = self.config.node_id
        if me in msg.acking_nodes or M.NODE_ANY in msg.acking_nodes:
            ack = M.NormAck(0, me, s.source_id, s.instance_id, msg.ack_type, msg.ack_id)
            self._schedule_ack(s, ack, now)

    def _schedule_ack(self, s: _Sender, ack: M.NormAck, now: float) -> None:
        for _, pending in s.ack_pending:
            if (
                pending.ack_type == ack.ack_type
                and pending.ack_id == ack.ack_id
                and pending.watermark == ack.watermark
            ):
                return
        s.ack_pending.append((now + self.rng.uniform(0.0, s.grtt), ack))

    def _on_cc(self, s: _Sender, msg: M.NormCmdCC, now: float, hint: bool = False) -> None:
        key = (msg.cc_sequence, msg.send_time_sec, msg.send_time_usec)
        if hint:
            if key in s.cc_hinted:
                count(self.stats, "cc_hint.duplicate")
                return
            if not self._cc_plausible(s, msg, key, now):
                return
            s.cc_hinted.append(key)
            count(self.stats, "cc_hint.applied")
        else:
            count(self.stats, "rx.cc")
            if self._cc_preauth:
                # an authentication layer hands us CC at arrival: this authenticated copy is
                # d intervals late.  Its CC part was applied at arrival, or (sender not yet
                # known then) its arrival time is lost: applying it now would echo a hold
                # time that includes the authentication delay.
                count(self.stats, "rx.cc_prehinted" if key in s.cc_hinted else "rx.cc_unhinted")
                t_send = sec_usec_to_time(msg.send_time_sec, msg.send_time_usec)
                if s.cc_auth_send is None or t_send > s.cc_auth_send:
                    s.cc_auth_send = t_send
                arrival = s.cc_arrivals.pop(key, None)
                if arrival is not None:  # authenticated: a reference for _cc_plausible
                    s.cc_offsets.append(arrival - t_send)
                return
        s.cc_send_time = (msg.send_time_sec, msg.send_time_usec)
        s.cc_recv_time = now
        s.cc_sequence = msg.cc_sequence
        s.cc_flags = 0
        immediate = False
        for n in msg.nodes:
            if n.node_id == self.config.node_id:
                if n.flags & M.CC_RTT:
                    s.cc_rtt = unquantize_rtt(n.rtt)
                s.cc_flags = n.flags & (M.CC_CLR | M.CC_PLR)
                immediate = bool(n.flags & (M.CC_CLR | M.CC_PLR))
        if msg.send_rate is None or not self.config.cc_feedback:
            s.cc_ack_deadline = None
            return
        if immediate:
            s.cc_ack_deadline = now
        elif s.cc_ack_deadline is None:
            # NRL: maxBackoff = GRTT * max(K, 4)
            s.cc_ack_deadline = now + random_backoff(s.grtt * max(s.backoff, 4), s.gsize, self.rng)
        # else: a response is pending.  A newer probe (§5.5.2.2 rule 2) cancels the answer to
        # the older round -- its send_time / cc_sequence are replaced above, so the
        # NORM_ACK(CC) that goes out is for the newest probe only -- but does not restart
        # the backoff (NRL keeps its cc_timer running likewise).  Restarting it would starve
        # GRTT feedback whenever probes come faster than the K*GRTT backoff window (probing
        # every ~2*GRTT while the answer waits up to 4*GRTT: most rounds went unanswered).

    def _cc_plausible(
        self, s: _Sender, msg: M.NormCmdCC, key: tuple[int, int, int], now: float
    ) -> bool:
        """May a NORM_CMD(CC) that is not authenticated yet set our CC echo?  (RFC 5776
        §6.1: forged CC information.)  Its send_time must be newer than the newest
        authenticated probe's; once authenticated probes gave a reference (their
        ``arrival - send_time``, the smallest of the last few), its own must be within
        ``cc_hint_jitter`` of it (a stale or replayed send_time would inflate the RTT the
        sender measures by the replay delay); and at most one per ``cc_hint_min_gap``
        (each may trigger one NORM_ACK(CC)).  Its arrival is kept (bounded) so that, once
        authenticated, it refreshes the reference even if it was refused here."""
        t_send = sec_usec_to_time(msg.send_time_sec, msg.send_time_usec)
        if s.cc_auth_send is not None and t_send <= s.cc_auth_send:
            count(self.stats, "cc_hint.stale")
            return False
        if key not in s.cc_arrivals:
            if len(s.cc_arrivals) >= CC_ARRIVALS_KEPT:
                del s.cc_arrivals[next(iter(s.cc_arrivals))]
            s.cc_arrivals[key] = now
        if s.cc_offsets and abs(now - t_send - min(s.cc_offsets)) > self.config.cc_hint_jitter:
            count(self.stats, "cc_hint.implausible")
            return False
        if now - s.cc_hint_last < self.config.cc_hint_min_gap:
            count(self.stats, "cc_hint.rate_limited")
            return False
        s.cc_hint_last = now
        return True

    def _on_squelch(self, s: _Sender, msg: M.NormCmdSquelch, now: float) -> None:
        count(self.stats, "rx.squelch")
        if not s.synced:
            return
        start = self._ordinal(s, msg.object_id)
        for ordinal in sorted(s.objects):
            if ordinal < start:
                self._abort(s, s.objects[ordinal], "squelched")
        while s.sync_ord < start:
            s.done.discard(s.sync_ord)
            s.sync_ord += 1
        o = s.objects.get(start)
        if o is not None and o.is_stream and o.stream_low < msg.sbn:
            for sbn in [b for b in o.blocks if b < msg.sbn]:
                self._free_block(o, o.blocks.pop(sbn))
            o.stream_low = msg.sbn
            if o.stream_hold and o.stream_start < msg.sbn:
                o.stream_start = msg.sbn  # the oldest block the sender still holds
                for b in [b for b in o.stream_block_off if b < msg.sbn]:
                    del o.stream_block_off[b]
                self._stream_release(o)
                self._stream_deliver(s, o)
        for oid in msg.invalid_objects:
            ordinal = self._ordinal(s, oid)
            o = s.objects.get(ordinal)
            if o is not None:
                self._abort(s, o, "squelched")
            elif ordinal >= s.sync_ord:
                s.done.add(ordinal)
        self._advance_sync(s)

    def _advance_pos(self, s: _Sender, pos: tuple[int, int, int], now: float) -> None:
        old = s.pos
        if pos <= old:
            return
        s.pos, s.pos_inclusive = pos, False
        if old[0] >= 0 and (pos[0] != old[0] or pos[1] != old[1]):
            # block or object boundary: an initiation point (§5.3)
            if s.nack_state == "idle" and self._needs(s, pos, inclusive=False):
                self._start_cycle(s, pos, False, now)

    # ------------------------------------------------------------------ feedback heard
    def _on_feedback(self, msg: M.NormNack | M.NormAck, now: float) -> None:
        s = self.senders.get(msg.server_id)
        if s is None or msg.instance_id != s.instance_id:
            count(self.stats, "rx.feedback_other")
            return
        if isinstance(msg, M.NormNack):
            count(self.stats, "rx.nack_overheard")
            if s.nack_state == "backoff":
                self._accumulate(s, msg.requests)
        else:
            count(self.stats, "rx.ack_overheard")

    def _accumulate(self, s: _Sender, reqs: list[M.RepairRequest]) -> None:
        """Overheard NACK / REPAIR_ADV content, for suppression (RFC 5740 §5.3).  Anyone can
        send it (receiver feedback carries no TESLA tag), so only claims about content we
        know are kept: objects between the sync point and the highest ordinal seen, blocks
        and ESIs of objects whose FTI we hold, clipped to their geometry; ranges stay
        ranges; at most MAX_HEARD_RANGES per cycle (beyond: ``drop.nack_heard_full``,
        which can only make us NACK, never suppress)."""
        if not s.synced or s.max_ord is None:
            return
        lo_ord, hi_ord = s.sync_ord, s.max_ord
        for r in reqs:
            items = r.items
            if r.form == M.NACK_RANGES:
                pairs = [(items[i], items[i + 1]) for i in range(0, len(items) - 1, 2)]
            else:
                pairs = [(it, it) for it in items]
            for a, b in pairs:
                if s.heard_ranges >= MAX_HEARD_RANGES:
                    count(self.stats, "drop.nack_heard_full")
                    return
                oa, ob = self._ordinal(s, a.object_id), self._ordinal(s, b.object_id)
                if r.flags & M.NACK_OBJECT:
                    for o_ord in range(max(oa, lo_ord), min(ob, hi_ord) + 1):
                        s.heard_objects.add(o_ord)
                    continue
                if not lo_ord <= oa <= hi_ord:
                    count(self.stats, "rx.nack_heard_unknown")
                    continue
                if r.flags & M.NACK_INFO:
                    s.heard_info.add(oa)
                o = s.objects.get(oa)
                if o is None or o.fti is None or not r.flags & (M.NACK_BLOCK | M.NACK_SEGMENT):
                    continue
                if o.is_stream:
                    nblocks = o.stream_low + self.config.stream_max_blocks
                else:
                    nblocks = len(o.block_lens)
                sa = a.sbn
                sb = b.sbn if ob == oa else nblocks - 1
                if r.form == M.NACK_ERASURES:
                    # the ESI field of each item is an erasure count for its block
                    if sa < nblocks:
                        key = (oa, sa)
                        if key not in s.heard_erasures:
                            s.heard_ranges += 1
                        s.heard_erasures[key] = max(s.heard_erasures.get(key, 0), a.esi)
                    continue
                if r.flags & M.NACK_BLOCK:
                    sb = min(sb, nblocks - 1)
                    if sa <= sb:
                        s.heard_ranges += _add_range(s.heard_blocks.setdefault(oa, []), sa, sb)
                    continue
                # NACK_SEGMENT: ESIs a.esi.. of block sa through ..b.esi of block sb
                n_limit = getattr(o.scheme, "n_limit", 0) or o.fti.max_block_len
                for sbn in (sa, sb) if sb > sa else (sa,):
                    if sbn >= nblocks:
                        continue
                    e0 = a.esi if sbn == sa else 0
                    e1 = b.esi if sbn == sb else n_limit - 1
                    e1 = min(e1, n_limit - 1)
                    if e0 <= e1:
                        lst = s.heard_segs.setdefault((oa, sbn), [])
                        s.heard_ranges += _add_range(lst, e0, e1)
                if sb > sa + 1:  # whole blocks in between
                    mid = min(sb - 1, nblocks - 1)
                    if sa + 1 <= mid:
                        s.heard_ranges += _add_range(s.heard_blocks.setdefault(oa, []), sa + 1, mid)

    # ------------------------------------------------------------------ NACK procedure
    def _needs(self, s: _Sender, pos: tuple[int, int, int], inclusive: bool) -> list[_Need]:
        """Repair needs from the sync point up to ``pos`` (§5.3); ordinal order."""
        if not s.synced or s.max_ord is None or self.config.silent:
            return []
        out: list[_Need] = []
        last = pos[0]
        for ordinal in range(s.sync_ord, last + 1):
            if len(out) >= MAX_NEEDS:
                break
            if ordinal in s.done:
                continue
            o = s.objects.get(ordinal)
            oid = ordinal & 0xFFFF
            if o is None or (o.fti is None and o.info is None):
                if ordinal < last or inclusive:
                    out.append(
                        _Need("object", ordinal, oid, o.fec_id if o and o.fec_id >= 0 else s.fec_id)
                    )
                continue
            if o.flags & M.FLAG_UNRELIABLE:
                continue
            if o.info_expected and o.info is None:
                out.append(_Need("info", ordinal, oid, o.fec_id))
            if o.fti is None:
                if ordinal < last or inclusive:
                    out.append(_Need("object", ordinal, oid, o.fec_id))
                continue
            if o.is_stream:
                self._stream_needs(o, pos, inclusive, ordinal == last, out)
                continue
            nblocks = len(o.block_lens)
            if ordinal < last:
                limit_sbn, partial_esi = nblocks, -1
            elif inclusive:
                limit_sbn, partial_esi = min(pos[1], nblocks), pos[2]
            else:
                limit_sbn, partial_esi = min(pos[1], nblocks), -1
            done_blocks = o.done_blocks
            while o.first_incomplete in done_blocks:
                o.first_incomplete += 1
            for sbn in range(o.first_incomplete, max(limit_sbn, 0)):
                if len(out) >= MAX_NEEDS:
                    return out
                if sbn in done_blocks:
                    continue
                self._block_need(o, ordinal, sbn, o.block_lens[sbn], out)
            if (
                inclusive
                and 0 <= pos[1] < nblocks
                and ordinal == last
                and pos[1] not in done_blocks
            ):
                k = o.block_lens[pos[1]]
                if partial_esi >= k - 1:
                    self._block_need(o, ordinal, pos[1], k, out)
                else:
                    blk = o.blocks.get(pos[1])
                    got = blk.recv if blk else set()
                    miss = [i for i in range(partial_esi + 1) if i not in got]
                    if miss:
                        out.append(
                            _Need("segments", ordinal, oid, o.fec_id, pos[1], k, miss, len(miss))
                        )
        return out

    def _block_need(self, o: _Object, ordinal: int, sbn: int, k: int, out: list[_Need]) -> None:
        assert o.fti is not None
        blk = o.blocks.get(sbn)
        oid = o.oid
        if blk is None or not blk.recv:
            out.append(_Need("block", ordinal, oid, o.fec_id, sbn, k))
            return
        if blk.done:
            return
        e = k - len(blk.recv)
        if e <= 0:
            return
        npar = o.fti.num_parity if o.fec_id != 0 else 0
        n_limit = getattr(o.scheme, "n_limit", k + npar)
        npar = max(0, min(npar, n_limit - k))
        par_missing = [j for j in range(k, k + npar) if j not in blk.recv]
        if npar and e <= len(par_missing):
            if blk.first_req is None:
                blk.first_req = par_missing[:e]
            want = [j for j in blk.first_req if j not in blk.recv]
            if len(want) < e:
                extra = [j for j in par_missing if j not in want]
                want = sorted(want + extra[: e - len(want)])
            esis = want[:e]
        else:
            src_missing = [i for i in range(k) if i not in blk.recv]
            more = e - len(par_missing)
            esis = sorted((src_missing[-more:] if more > 0 else []) + par_missing)
        out.append(_Need("segments", ordinal, oid, o.fec_id, sbn, k, esis, e))

    def _stream_needs(
        self,
        o: _Object,
        pos: tuple[int, int, int],
        inclusive: bool,
        current: bool,
        out: list[_Need],
    ) -> None:
        assert o.fti is not None
        if o.stream_low < 0:
            return
        hi = pos[1] if current else max(o.blocks, default=o.stream_low - 1) + 1
        hi = min(hi, o.stream_low + self.config.stream_max_blocks)
        kmax = o.fti.max_block_len
        for sbn in range(o.stream_low, max(hi, o.stream_low)):
            if len(out) >= MAX_NEEDS:
                return
            blk = o.blocks.get(sbn)
            if blk is not None and blk.done:
                continue
            if blk is None:
                out.append(_Need("block", o.ordinal, o.oid, o.fec_id, sbn, kmax))
            else:
                self._block_need(o, o.ordinal, sbn, blk.k, out)
        if inclusive and current and pos[1] >= o.stream_low:
            blk = o.blocks.get(pos[1])
            k = blk.k if blk else kmax
            if pos[2] >= k - 1:
                if blk is None:
                    out.append(_Need("block", o.ordinal, o.oid, o.fec_id, pos[1], k))
                else:
                    self._block_need(o, o.ordinal, pos[1], k, out)
            else:  # flushed mid-block: explicit (source) repair only (§4.2.3.1)
                got = blk.recv if blk else set()
                miss = [i for i in range(pos[2] + 1) if i not in got]
                if miss:
                    out.append(
                        _Need("segments", o.ordinal, o.oid, o.fec_id, pos[1], k, miss, len(miss))
                    )

    def _start_cycle(
        self, s: _Sender, pos: tuple[int, int, int], inclusive: bool, now: float
    ) -> None:
        if s.nack_state != "idle" or self.config.silent:
            return
        k, grtt = s.backoff, s.grtt
        t = random_backoff(k * grtt, s.gsize, self.rng)
        s.nack_start = now
        s.nack_frac = t / (k * grtt) if k * grtt > 0 else 0.0
        s.cycle_pos, s.cycle_inclusive = pos, inclusive
        s.heard_objects.clear()
        s.heard_info.clear()
        s.heard_blocks.clear()
        s.heard_segs.clear()
        s.heard_erasures.clear()
        s.heard_ranges = 0
        count(self.stats, "nack.cycles")
        if self.config.ssm and t > (k - 1) * grtt:
            count(self.stats, "nack.suppressed_ssm")
            s.nack_state, s.nack_deadline = "holdoff", now + self._holdoff(s)
            return
        s.nack_state, s.nack_deadline = "backoff", now + t

    def _holdoff(self, s: _Sender) -> float:
        """T_rcvrHoldoff = (K+2)*GRTT (RFC 5740 §5.3), plus the release delay of an
        authentication layer (the repairs reach us that much later)."""
        return (s.backoff + 2) * s.grtt + self.config.release_delay

    def _rescale_nack_timer(self, s: _Sender, k: int) -> None:
        """The advertised GRTT changed during a backoff or holdoff: rescale the timer
        (RFC 5740 §5.3 asks this for T_inactivity; the sender's repair aggregation and
        flush follow its current GRTT, so a holdoff timed with a stale, larger GRTT
        outlasts the whole flush and ends the session in holdoff)."""
        if s.nack_state == "backoff":
            s.nack_deadline = s.nack_start + s.nack_frac * k * s.grtt
        else:
            s.nack_deadline = s.nack_start + (k + 2) * s.grtt + self.config.release_delay

    def _covered(self, s: _Sender, n: _Need) -> bool:
        """May overheard feedback suppress need ``n`` this cycle?  Overheard NACKs may be
        forged (no TESLA tag on feedback): they delay a need by one cycle at most, a need
        found covered in the previous cycle is NACKed now anyway."""
        if not self._heard_covers(s, n):
            return False
        key = (n.ordinal, n.sbn)
        cycle = s.nack_deadline  # set when this cycle's holdoff began: one value per cycle
        prev = s.nack_suppressed.get(key)
        if prev is not None and prev != cycle:
            del s.nack_suppressed[key]
            count(self.stats, "nack.suppression_overridden")
            return False
        if len(s.nack_suppressed) >= 2 * MAX_NEEDS:
            s.nack_suppressed.clear()  # bounded (needs of past cycles)
        s.nack_suppressed[key] = cycle
        return True

    def _heard_covers(self, s: _Sender, n: _Need) -> bool:
        if n.ordinal in s.heard_objects:
            return True
        if n.kind == "object":
            return False
        if n.kind == "info":
            return n.ordinal in s.heard_info
        if _in_ranges(s.heard_blocks.get(n.ordinal, []), n.sbn):
            return True
        if n.kind == "block":
            return False
        if s.heard_erasures.get((n.ordinal, n.sbn), 0) >= n.erasures:
            return True
        heard = s.heard_segs.get((n.ordinal, n.sbn))
        if not heard:
            return False
        if all(_in_ranges(heard, e) for e in n.esis):
            return True
        # other receivers asked for at least as many symbols we do not hold yet (the
        # ranges are disjoint and clipped to the block's code length)
        o = s.objects.get(n.ordinal)
        blk = o.blocks.get(n.sbn) if o else None
        got = blk.recv if blk else set()
        wanted = sum(hi - lo + 1 for lo, hi in heard)
        wanted -= sum(1 for e in got if _in_ranges(heard, e))
        return wanted >= n.erasures

    def _backoff_expired(self, s: _Sender, now: float) -> None:
        needs = self._needs(s, s.cycle_pos, s.cycle_inclusive)
        s.nack_state, s.nack_start = "holdoff", now
        s.nack_deadline = now + self._holdoff(s)
        if not needs:
            count(self.stats, "nack.nothing_needed")
            return
        # suppression: our needs up to the position at initiation (condition 2)
        if self.config.nack_suppression and all(self._covered(s, n) for n in needs):
            count(self.stats, "nack.suppressed")
            return
        # content: "up through the coding block prior to the most recently heard ordinal
        # transmission position" (RFC 5740 §5.3), not only up to the initiation point: a
        # cycle started at the first block boundary would otherwise ask for that block
        # alone while the rest of the transfer went by during the backoff
        if s.pos > s.cycle_pos:
            needs = self._needs(s, s.pos, s.pos_inclusive) or needs
        self._send_nack(s, needs, now)

    def _send_nack(self, s: _Sender, needs: list[_Need], now: float) -> None:
        reqs = self._build_requests(s, needs)
        if not reqs:
            return
        gs, gu = self._grtt_response(s, now)
        nack = M.NormNack(
            self._next_seq(s),
            self.config.node_id,
            s.source_id,
            s.instance_id,
            gs,
            gu,
            self._cc_ext(s),
            reqs,
        )
        self._emit((nack.encode(), self._feedback_addr(s)))
        s.cc_ack_deadline = None  # the NACK carries EXT_CC
        count(self.stats, "nack.sent")

    def _build_requests(self, s: _Sender, needs: list[_Need]) -> list[M.RepairRequest]:
        limit = s.segment_size or self.config.default_segment_size
        reqs: list[M.RepairRequest] = []
        size = 0

        def item(n: _Need, sbn: int = 0, esi: int = 0, k: int = 0) -> M.RepairItem:
            fec_id = n.fec_id if n.fec_id in M.SUPPORTED_FEC_IDS else s.fec_id
            o = s.objects.get(n.ordinal)
            m = o.m if o is not None else self.config.fec2_m
            return M.RepairItem(fec_id, n.oid, sbn, esi, k if fec_id == 129 else 0, 0, m)

        def emit(flags: int, run: list[M.RepairItem]) -> bool:
            nonlocal size
            if len(run) >= 3:
                r = M.RepairRequest(M.NACK_RANGES, flags, [run[0], run[-1]])
            else:
                r = M.RepairRequest(M.NACK_ITEMS, flags, list(run))
            n = 4 + sum(i.size for i in r.items)
            if size + n > limit:
                return False
            if (
                reqs
                and r.form == M.NACK_ITEMS
                and reqs[-1].form == M.NACK_ITEMS
                and reqs[-1].flags == flags
            ):
                reqs[-1].items.extend(r.items)
                size += n - 4
            else:
                reqs.append(r)
                size += n
            return True

        i = 0
        while i < len(needs):
            n = needs[i]
            if n.kind == "object":
                run = [item(n)]
                j = i + 1
                while (
                    j < len(needs)
                    and needs[j].kind == "object"
                    and needs[j].ordinal == needs[j - 1].ordinal + 1
                ):
                    run.append(item(needs[j]))
                    j += 1
                if not emit(M.NACK_OBJECT, run):
                    break
                i = j
                continue
            if n.kind == "info":
                # combine with a following block/segment need of the same object (flags 0x05)
                if not emit(M.NACK_INFO, [item(n)]):
                    break
                i += 1
                continue
            if n.kind == "block":
                run = [item(n, n.sbn, 0, n.k)]
                j = i + 1
                while (
                    j < len(needs)
                    and needs[j].kind == "block"
                    and needs[j].ordinal == n.ordinal
                    and needs[j].sbn == needs[j - 1].sbn + 1
                ):
                    run.append(item(needs[j], needs[j].sbn, 0, needs[j].k))
                    j += 1
                if not emit(M.NACK_BLOCK, run):
                    break
                i = j
                continue
            # segments: consecutive ESI runs
            ok = True
            esis = n.esis
            a = 0
            while a < len(esis):
                b = a
                while b + 1 < len(esis) and esis[b + 1] == esis[b] + 1:
                    b += 1
                run = [item(n, n.sbn, e, n.k) for e in esis[a : b + 1]]
                if not emit(M.NACK_SEGMENT, run):
                    ok = False
                    break
                a = b + 1
            if not ok:
                break
            i += 1
        return reqs

    # ------------------------------------------------------------------ feedback helpers
    def _emit(self, item: tuple[bytes, Address | None]) -> None:
        if len(self._out) >= MAX_OUT_QUEUE:  # driver never drains: bounded
            count(self.stats, "drop.out_queue_full")
            return
        self._out.append(item)

    def _grtt_response(self, s: _Sender, now: float) -> tuple[int, int]:
        if s.cc_send_time is None:
            return 0, 0
        t = sec_usec_to_time(*s.cc_send_time) + (now - s.cc_recv_time)
        return time_to_sec_usec(t)

    def _next_seq(self, s: _Sender) -> int:
        key = s.addr if self.config.unicast_feedback else None
        seq = s.feedback_seq.get(key, 0)
        s.feedback_seq[key] = (seq + 1) & 0xFFFF
        return seq

    def _feedback_addr(self, s: _Sender) -> Address | None:
        return s.addr if self.config.unicast_feedback else None

    def _loss(self, s: _Sender) -> float:
        total = s.seq_received + s.seq_lost
        if s.loss_events == 0 or total == 0:
            return 0.0
        return min(1.0, s.loss_events / total)

    def _cc_ext(self, s: _Sender) -> list[M.Extension]:
        if s.cc_send_time is None:
            return []
        p = self._loss(s)
        rtt = s.cc_rtt if s.cc_rtt is not None else s.grtt
        flags = s.cc_flags
        if s.cc_rtt is not None:
            flags |= M.CC_RTT
        if p <= 0.0:
            flags |= M.CC_START
            rate = 2.0 * s.recv_rate
        else:
            from norm.cc import tcp_rate

            rate = tcp_rate(float(s.segment_size or self.config.default_segment_size), rtt, p)
        return [
            M.ExtCC(
                s.cc_sequence,
                flags,
                quantize_rtt(rtt),
                quantize_loss(p),
                quantize_rate(rate if math.isfinite(rate) else 1e15),
            )
        ]

    # ------------------------------------------------------------------ timers
    def _sender_deadlines(self, s: _Sender) -> list[float]:
        d = [s.inactivity_deadline]
        if s.nack_state != "idle":
            d.append(s.nack_deadline)
        if s.cc_ack_deadline is not None:
            d.append(s.cc_ack_deadline)
        d.extend(t for t, _ in s.ack_pending)
        if self.config.object_timeout is not None:
            d.extend(
                o.last_progress + self.config.object_timeout
                for o in s.objects.values()
                if not o.finished
            )
        return d

    def _sender_timers(self, s: _Sender, now: float) -> None:
        if s.nack_state == "backoff" and now >= s.nack_deadline:
            self._backoff_expired(s, now)
        elif s.nack_state == "holdoff" and now >= s.nack_deadline:
            s.nack_state = "idle"
        if s.cc_ack_deadline is not None and now >= s.cc_ack_deadline:
            s.cc_ack_deadline = None
            gs, gu = self._grtt_response(s, now)
            ack = M.NormAck(
                self._next_seq(s),
                self.config.node_id,
                s.source_id,
                s.instance_id,
                M.ACK_CC,
                0,
                gs,
                gu,
                self._cc_ext(s),
            )
            self._emit((ack.encode(), self._feedback_addr(s)))
            count(self.stats, "ack.cc_sent")
        if s.ack_pending:
            due = [a for t, a in s.ack_pending if t <= now]
            s.ack_pending = [(t, a) for t, a in s.ack_pending if t > now]
            for a in due:
                a.sequence = self._next_seq(s)
                a.grtt_response_sec, a.grtt_response_usec = self._grtt_response(s, now)
                a.extensions = self._cc_ext(s)
                self._emit((a.encode(), self._feedback_addr(s)))
                count(self.stats, "ack.sent")
        if self.config.object_timeout is not None:
            for o in list(s.objects.values()):
                if not o.finished and now - o.last_progress >= self.config.object_timeout:
                    count(self.stats, "drop.object_timeout")
                    self._abort(s, o, "timeout")
        if now >= s.inactivity_deadline:
            s.inactivity_count += 1
            s.inactivity_deadline = now + self._t_inactivity(s)
            if s.inactivity_count > self.config.robust_factor:
                self._end_sender(s, "inactive")
                return
            pos = s.pos
            cur = s.objects.get(pos[0])
            if cur is not None and not cur.is_stream and cur.fti is not None:
                pos = (pos[0], len(cur.block_lens), 0)  # the whole current object
            if s.nack_state == "idle" and self._needs(s, pos, inclusive=True):
                count(self.stats, "nack.inactivity")
                self._start_cycle(s, pos, True, now)
