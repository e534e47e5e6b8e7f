"""Our NormSender against our NormReceiver in the shared simulated medium (virtual time),
configured as ``tesla-mcast send|receive --protocol norm`` configures them (issue 11).

* Three objects (1 KiB, 100 KiB, 5 MiB) at 50 Mbit/s, initial GRTT 0.5 s, robust factor
  20, 2-20 % receive loss: every object delivered bit-exact.  Before the fix the receiver
  timed its NACK holdoff with the GRTT advertised when the cycle began (0.5 s -> 3 s
  holdoff) while the sender's estimate fell to ~1 ms meanwhile: the sender's whole flush
  (20 x 2 ms) and its EOT went by during the holdoff and the objects were aborted
  (``nack.cycles 1``), exactly the live failure.
* The same behind a TESLA-like release delay (every sender message reaches the engine
  only when its interval's key is disclosed, d intervals later): the sender's flush spans
  the release delay and the receiver does not ask again for repairs still in flight.
"""

from __future__ import annotations

import random
from collections import deque
from typing import Any

import pytest
from medium import Medium

from norm import messages as M
from norm.receiver import (
    NormReceiver,
    ObjectAborted,
    ObjectReceived,
    ReceiverConfig,
    SenderEnded,
)
from norm.sender import NormSender, NormSenderConfig

SIZES = (1024, 100 * 1024, 5 * 1024 * 1024)
RATE = 50e6 / 8  # the CLI's --rate 50M


def _cli_sender(seed: int, **kw: Any) -> NormSender:
    """NormSenderConfig as tesla.cli.run_norm.run_send builds it (defaults of the CLI)."""
    return NormSender(
        NormSenderConfig(
            node_id=1, rate=RATE, grtt=0.5, robust_factor=20, eot_repeats=3, seed=seed, **kw
        )
    )


class Released:
    """A receiver engine behind a TESLA-like release: a sender message received in
    interval i (T_int long) reaches the engine at the start of interval i + d (when K_i is
    disclosed); receiver feedback (NACK/ACK) is not authenticated and passes at once; CC
    probes are echoed at arrival (``congestion_control_hint``, as tesla.core.session does), so
    the sender's GRTT is the path's, not the release delay's."""

    def __init__(self, engine: NormReceiver, t0: float, tint: float, d: int) -> None:
        self.engine, self.t0, self.tint, self.d = engine, t0, tint, d
        self.held: deque[tuple[float, bytes, Any]] = deque()  # release times ascending

    @property
    def stats(self) -> dict[str, int]:
        return self.engine.stats

    def receive_datagram(self, data: bytes, addr: Any, now: float) -> None:
        if data[0] & 15 in (4, 5, 6):
            self.engine.receive_datagram(data, addr, now)
            return
        self.engine.congestion_control_hint(data, now)  # CC at arrival (RFC 5776 §4.3 step 5)
        i = int((now - self.t0) // self.tint)
        self.held.append((self.t0 + (i + self.d) * self.tint, data, addr))

    def _release(self, now: float) -> None:
        held = self.held
        while held and held[0][0] <= now:
            _, data, addr = held.popleft()
            self.engine.receive_datagram(data, addr, now)

    def get_timer(self) -> float | None:
        t = self.engine.get_timer()
        if self.held and (t is None or self.held[0][0] < t):
            return self.held[0][0]
        return t

    def handle_timer(self, now: float) -> None:
        self._release(now)
        self.engine.handle_timer(now)

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Any]]:
        self._release(now)
        return self.engine.datagrams_to_send(now)

    def next_event(self) -> Any:
        return self.engine.next_event()


def _run(
    loss: float,
    seed: int,
    snd: NormSender,
    rx_cfg: ReceiverConfig,
    release: tuple[float, int] | None = None,
) -> tuple[dict[int, bytes], list[ObjectAborted], NormReceiver, list[bytes], float]:
    rnd = random.Random(seed)
    files = [rnd.randbytes(n) for n in SIZES]
    for i, f in enumerate(files):
        snd.enqueue_data(f, info=f"f{i}".encode())
    snd.end()
    rx = NormReceiver(rx_cfg, random.Random(seed))
    eng: Any = rx if release is None else Released(rx, 1_700_000_000.0, *release)
    got: dict[int, bytes] = {}
    aborted: list[ObjectAborted] = []
    ended: list[SenderEnded] = []

    def until() -> bool:
        while (ev := rx.next_event()) is not None:
            if isinstance(ev, ObjectReceived):
                got[ev.object_id] = ev.data
            elif isinstance(ev, ObjectAborted):
                aborted.append(ev)
            elif isinstance(ev, SenderEnded):
                ended.append(ev)
        return bool(ended)

    med = Medium({"s": snd, "r": eng}, {"r": loss}, delay=0.0002, seed=seed)
    assert med.run(until, 120.0), rx.stats
    return got, aborted, rx, files, med.now - med.start


@pytest.mark.parametrize(("loss", "seed"), [(0.02, 2), (0.1, 2), (0.1, 5), (0.2, 4)])
def test_cli_configured_pair_repairs_every_object(loss: float, seed: int) -> None:
    got, aborted, rx, files, _ = _run(loss, seed, _cli_sender(seed), ReceiverConfig(node_id=2))
    assert not aborted, (aborted, rx.stats)
    assert [got.get(i) == f for i, f in enumerate(files)] == [True] * 3
    assert rx.stats["nack.sent"] >= 1


def test_holdoff_follows_the_advertised_grtt() -> None:
    """A holdoff begun with a 0.5 s GRTT ends (K+2)*GRTT after it began with the GRTT the
    sender advertises now (RFC 5740 §5.3: rescale timers as the advertised GRTT changes)."""
    from norm.quantize import quantize_rtt, unquantize_rtt

    rx = NormReceiver(ReceiverConfig(node_id=2), random.Random(1))
    from norm.receiver import _Sender

    s = _Sender(1, 7, None)
    rx.senders[1] = s
    rx._heard(s, 0, quantize_rtt(0.5), 4, 0, 100, 10.0)
    s.nack_state = "backoff"
    s.nack_start, s.nack_frac = 10.0, 1.0
    s.cycle_pos = (0, 0, 0)
    rx._backoff_expired(s, 12.0)  # nothing needed: holdoff from 12.0
    assert s.nack_state == "holdoff"
    assert s.nack_deadline == pytest.approx(12.0 + 6 * s.grtt)
    rx._heard(s, 1, quantize_rtt(0.001), 4, 0, 100, 12.5)
    assert s.nack_deadline == pytest.approx(12.0 + 6 * unquantize_rtt(quantize_rtt(0.001)))
    rx.handle_timer(12.5)
    assert s.nack_state == "idle"


@pytest.mark.parametrize("seed", [2, 4])
def test_release_delay_flush_covers_authentication(seed: int) -> None:
    """Every sender message reaches the receiver engine up to (d+1)*T_int late (TESLA
    key disclosure, T_int 100 ms, d 3).  The sender's flush spans that delay
    (``flush_min_time``) so the NACK it elicits still finds the sender before the EOT."""
    tint, d = 0.1, 3
    snd = _cli_sender(seed, flush_min_time=1.0 + (d + 1) * tint)
    cfg = ReceiverConfig(node_id=2, release_delay=(d + 1) * tint)
    got, aborted, rx, files, _ = _run(0.1, seed, snd, cfg, release=(tint, d))
    assert not aborted, (aborted, rx.stats)
    assert [got.get(i) == f for i, f in enumerate(files)] == [True] * 3


class ColdStart:
    """The first ``n`` sender datagrams reach the receiver but are unusable (as TESLA's
    unsafe drops at a cold start): with ``presence`` they are shown to
    ``NormReceiver.presence_hint`` first (what tesla.core.session does before verifying)."""

    def __init__(self, engine: NormReceiver, n: int, presence: bool) -> None:
        self.engine, self.n, self.presence = engine, n, presence

    def __getattr__(self, name: str) -> Any:
        return getattr(self.engine, name)

    def receive_datagram(self, data: bytes, addr: Any, now: float) -> None:
        if self.n < 0 and data[0] & 15 == 3 and data[12] in self.until_cmd:
            self.n = 0  # the first usable message is this command
        if self.n != 0 and data[0] & 15 not in (4, 5, 6):
            self.n -= 1 if self.n > 0 else 0
            if self.presence and self.engine.presence_wanted:
                self.engine.presence_hint(data, now)
            return
        self.engine.receive_datagram(data, addr, now)

    #: with n = -1: every sender datagram is unusable until a NORM_CMD of these flavors
    until_cmd: tuple[int, ...] = ()


def _cold(
    n: int,
    presence: bool,
    policy: str = "current",
    sizes: tuple[int, ...] = (1 << 20,),
    until_cmd: tuple[int, ...] = (),
):
    rnd = random.Random(n)
    files = [rnd.randbytes(k) for k in sizes]
    snd = NormSender(NormSenderConfig(node_id=1, rate=RATE, grtt=0.01, seed=3, eot_repeats=3))
    for i, f in enumerate(files):
        snd.enqueue_data(f, info=f"f{i}".encode())
    snd.end()
    rx = NormReceiver(ReceiverConfig(node_id=2, join_policy=policy), random.Random(3))
    got: dict[int, bytes] = {}
    ended: list[Any] = []

    def until() -> bool:
        while (ev := rx.next_event()) is not None:
            if isinstance(ev, ObjectReceived):
                got[ev.object_id] = ev.data
            elif isinstance(ev, SenderEnded):
                ended.append(ev)
        return bool(ended)

    cold = ColdStart(rx, n, presence)
    cold.until_cmd = until_cmd
    med = Medium({"s": snd, "r": cold}, {"r": 0.05}, seed=3)
    assert med.run(until, 60.0), rx.stats
    return got, files, rx


def test_cold_start_receiver_present_from_the_start_repairs_the_lost_start() -> None:
    """The first 300 datagrams (INFO and blocks 0-3 of a 1 MiB object) reach the receiver
    unusable; it was present from the object's start, so it syncs to that object when
    the first usable message (block 4) arrives and NACKs the first blocks."""
    got, files, rx = _cold(300, presence=True)
    assert got.get(0) == files[0], rx.stats
    assert rx.stats["rx.sync_presence"] == 1


def test_present_but_nothing_usable_until_the_flush() -> None:
    """Issue 11 flake (one of three authenticated receivers at 20% loss ended with no
    object): the 3 bootstraps at start were all lost (0.8% per receiver), so every new
    datagram was dropped before verification and the first usable message was a FLUSH,
    which did not synchronize the receiver.  It was present from the first object's start
    (presence hints): it now syncs there on that message and NACKs everything."""
    sizes = (3000, 200_000)
    got, files, rx = _cold(-1, presence=True, sizes=sizes, until_cmd=(M.CMD_FLUSH,))
    assert got.get(0) == files[0] and got.get(1) == files[1], rx.stats
    assert rx.stats["rx.sync_presence"] == 1


def test_present_then_a_repair_first_syncs_at_the_hint() -> None:
    """The same with a repair as the first usable message (another receiver's NACK made
    the sender repair): a repair never syncs a receiver on its own (RFC 5740 §5.2), but
    one present from the object's start syncs at that start; without presence it does
    not sync."""
    snd = NormSender(NormSenderConfig(node_id=1, rate=RATE, grtt=0.01, seed=3))
    snd.enqueue_data(bytes(300_000), info=b"a")
    snd.end()
    pk = [p for _ in range(40) for p, _a in snd.datagrams_to_send(1000.0 + _ * 0.01)]
    data = [p for p in pk if p[0] & 15 == 2]
    rep = bytearray(data[130])  # block 2
    rep[12] |= M.FLAG_REPAIR  # flags octet
    for presence in (True, False):
        rx = NormReceiver(ReceiverConfig(node_id=2), random.Random(3))
        if presence:
            for p in pk[:50]:
                rx.presence_hint(p, 1000.0)
        rx.receive_datagram(bytes(rep), ("192.0.2.1", 1), 1001.0)
        s = rx.senders.get(1)
        assert s is not None
        assert s.synced is presence, rx.stats
        if presence:
            assert s.sync_ord == 0 and rx.stats["rx.sync_presence"] == 1
        else:
            assert rx.stats["drop.not_synced"] == 1


def test_late_join_current_skips_the_object_in_progress_all_repairs_it() -> None:
    """No presence (the receiver was not there): policy "current" skips the object in
    progress and takes the next one; policy "all" repairs the object in progress too."""
    sizes = (1 << 20, 5000)
    got, files, rx = _cold(300, presence=False, sizes=sizes)
    assert 0 not in got and got.get(1) == files[1], rx.stats
    got, files, rx = _cold(300, presence=False, policy="all", sizes=sizes)
    assert got.get(0) == files[0] and got.get(1) == files[1], rx.stats
    assert rx.stats["rx.sync_all"] == 1


def _late_stream(policy: str, buffer_blocks: int) -> tuple[bytes, bytes, NormReceiver]:
    """A stream of 40 messages (about 8 blocks of 8 segments); the receiver misses the
    first 25 sender datagrams (it was not there: no presence)."""
    from norm.receiver import StreamData, StreamEnd

    snd = NormSender(
        NormSenderConfig(
            node_id=1,
            rate=2e6,
            segment_size=500,
            block_size=8,
            num_parity=4,
            grtt=0.01,
            seed=1,
            stream_buffer_blocks=buffer_blocks,
        )
    )
    rx = NormReceiver(ReceiverConfig(node_id=2, join_policy=policy), random.Random(3))
    sid = snd.open_stream(info=b"stream")
    chunks = [random.Random(i).randbytes(700 + i) for i in range(40)]
    for c in chunks:
        snd.stream_write(sid, c, eom=True)
    snd.stream_close(sid)
    buf = bytearray()
    ended: list[Any] = []

    def until() -> bool:
        while (ev := rx.next_event()) is not None:
            if isinstance(ev, StreamData):
                buf.extend(ev.data)
            elif isinstance(ev, StreamEnd):
                ended.append(ev)
        return bool(ended)

    med = Medium({"s": snd, "r": ColdStart(rx, 25, False)}, {"r": 0.05}, seed=4)
    assert med.run(until, 30.0), rx.stats
    return bytes(buf), b"".join(chunks), rx


def test_late_join_stream_policy() -> None:
    """Policy "current" begins reliable reception at the current block (RFC 5740 §5.2 for
    streams): the stream's start is missing.  "stream" asks for the blocks the sender
    still buffers and delivers from the oldest: all of it when nothing was dropped, from
    the sender's oldest block (learnt from its SQUELCH) when its buffer moved on."""
    got, whole, _ = _late_stream("current", 64)
    assert whole.endswith(got) and len(got) < len(whole)
    got, whole, _ = _late_stream("stream", 64)
    assert got == whole
    got, whole, rx = _late_stream("stream", 5)
    assert whole.endswith(got) and 0 < len(got) < len(whole)
    assert rx.stats["rx.squelch"] >= 1


def test_presence_hint_bounds_and_filters() -> None:
    """Only the start of an object counts (NORM_INFO, block-0 NORM_DATA), never a repair,
    our own node id, a later block or garbage; at most ``max_presence`` senders."""
    snd = NormSender(NormSenderConfig(node_id=1, rate=1e9, grtt=0.01, block_size=4, seed=1))
    snd.enqueue_data(bytes(20_000), info=b"x")
    pkts = [p for k in range(50) for p, _ in snd.datagrams_to_send(1_700_000_000.0 + k * 0.01)]
    rx = NormReceiver(ReceiverConfig(node_id=2, max_presence=2))
    later = [p for p in pkts if p[0] & 15 == 2 and int.from_bytes(p[16:19], "big") > 0]
    assert later
    for p in later:  # blocks > 0 only
        rx.presence_hint(p, 0.0)
    rx.presence_hint(b"\xff" * 40, 0.0)  # garbage
    assert rx._presence == {}
    data0 = next(p for p in pkts if p[0] & 15 == 2)
    rep = bytearray(data0)
    rep[12] |= 0x01  # flags: NORM_FLAG_REPAIR
    rx.presence_hint(bytes(rep), 0.0)
    assert rx._presence == {}
    rx.presence_hint(data0, 0.0)
    assert rx._presence == {(1, snd.instance_id): 0}
    for src in (7, 8, 9):  # forged senders: bounded
        forged = bytearray(data0)
        forged[4:8] = src.to_bytes(4, "big")
        rx.presence_hint(bytes(forged), 0.0)
    assert len(rx._presence) == 2 and rx.stats["drop.presence_full"] == 2
