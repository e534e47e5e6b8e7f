"""Topology and run loop: one sender, N receivers, attackers, feedback paths."""

from __future__ import annotations

from array import array
from typing import Any

from tesla.sim.attackers import KINDS, Attacker
from tesla.sim.core import EventQueue, LocalClock, make_rng
from tesla.sim.engines import Adapter, ToyAdapter
from tesla.sim.fluid import FluidGroup
from tesla.sim.links import Link, LinkConfig
from tesla.sim.scenario import ReceiverGroup, Scenario

SENDER, ATTACKER, PEER = 0, 1, 2


def make_adapter(scn: Scenario, seed: int) -> Adapter:
    """The scenario's protocol adapter: the toy engines, or the real ALC/NORM + TESLA ones
    (:mod:`tesla.sim.real`, which builds on :mod:`tesla.sim.engines`: chosen here, above
    both, so neither imports the other back)."""
    if scn.protocol == "toy":
        return ToyAdapter(scn, seed)
    from tesla.sim import real  # the real ALC/NORM + TESLA engines

    return real.make_adapter(scn, seed)


class ReceiverNode:
    """A receiver: its engine, local clock, downlink and the measurements about it."""

    def __init__(self, sim: Simulation, idx: int, group: ReceiverGroup, gidx: int) -> None:
        self.sim, self.idx, self.group = sim, idx, group
        self.name = f"{group.name or 'g' + str(gidx)}/{idx}"
        rng = make_rng(sim.seed, "clock", idx)
        c = group.clock
        off, drift = c.offset, c.drift
        if c.offset_uniform:
            off += rng.uniform(*c.offset_uniform)
        if c.drift_uniform:
            drift += rng.uniform(*c.drift_uniform)
        self.clock = LocalClock(sim.epoch, off, drift)
        self.link = Link(group.link, make_rng(sim.seed, "link", idx))
        self.uplink = Link(sim.feedback_link, make_rng(sim.seed, "uplink", idx))
        self.join = sim.epoch + group.join
        self.addr = (f"10.1.{idx >> 8 & 255}.{idx & 255}", 5000)  # unicast feedback address
        self.d_t = (
            group.max_clock_error
            if group.max_clock_error is not None
            else sim.adapter.default_bound
        )
        self.engine: Any = sim.adapter.build_receiver(idx, self.d_t)
        self.files_done: dict[str, float] = {}
        self.arrivals = 0
        self.bytes_rx = 0
        self.hwm = 0
        self.timer_gen = 0
        self.timer_at: float | None = None
        self.latency = array("d")
        self.pending: dict[bytes, float] = {}  # content -> first arrival (true time)
        self.interceptors: list[Attacker] = []
        self.attacked = False
        self.from_sender: dict[bytes, int] = {}
        self.from_attacker: set[bytes] = set()
        self.accepted_attacker = 0
        self.attacker_feedback = 0
        self.accepted_after_disclosure = 0
        self.accepted = 0
        self.nacks_sent = 0
        self.feedback_rx = 0
        self._tap()

    def _tap(self) -> None:
        inner = self.sim.adapter.inner(self.engine)
        if inner is None:
            return
        orig = inner.receive_datagram
        orig_many = inner.receive_datagrams
        in_batch = [False]  # the batch entry may call receive_datagram: count once

        def tapped(data: bytes, addr: Any, now: float) -> None:
            if not in_batch[0]:
                self._authenticated(data)
            orig(data, addr, now)

        def tapped_many(datagrams: Any, addrs: Any, times: Any) -> None:
            for d in datagrams:
                self._authenticated(d)
            in_batch[0] = True
            try:
                orig_many(datagrams, addrs, times)
            finally:
                in_batch[0] = False

        inner.receive_datagram = tapped
        inner.receive_datagrams = tapped_many

    def _authenticated(self, data: bytes) -> None:
        """The TESLA layer released ``data`` to the protocol engine."""
        t = self.sim.queue.now
        self.accepted += 1
        key = self.sim.content_key(data)
        arr = self.pending.pop(key, None)
        if arr is not None:
            self.latency.append(t - arr)
        if self.attacked:
            n = self.from_sender.get(key, 0)
            if n > 0:
                self.from_sender[key] = n - 1
            elif key in self.from_attacker and self.sim.adapter.bypasses_auth(data):
                # NORM receiver feedback (NACK/ACK/REPORT) carries no TESLA tag (RFC 5776
                # §5.2): it reaches the engine unauthenticated by design; counted apart
                self.attacker_feedback += 1
            elif key in self.from_attacker:
                self.accepted_attacker += 1
                info = self.sim.info_of(data)
                i = None if info is None else info.get("interval")
                if i is not None and t >= self.sim.adapter.key_public_time(i):
                    self.accepted_after_disclosure += 1

    def deliver(self, data: bytes, origin: int) -> None:
        sim = self.sim
        t = sim.queue.now
        self.arrivals += 1
        self.bytes_rx += len(data)
        local = self.clock.local(t)
        if sim.pcap_rx is self:
            sim.pcap_records.append((local, data, origin))
        key = sim.content_key(data)
        if key not in self.pending:
            self.pending[key] = t
        if self.attacked:
            if origin == ATTACKER:
                self.from_attacker.add(key)
            else:
                self.from_sender[key] = self.from_sender.get(key, 0) + 1
        if origin == PEER:
            self.feedback_rx += 1
        self.engine.receive_datagram(data, None, local)
        lvl = sim.adapter.buffer_level(self.engine)
        if lvl > self.hwm:
            self.hwm = lvl
        self.service(t, local)

    def service(self, t: float, local: float) -> None:
        eng = self.engine
        sim = self.sim
        while True:
            ev = eng.next_event()
            if ev is None:
                break
            if sim.adapter.is_file_event(ev):
                key = (
                    sim.adapter.event_key(ev)
                    if hasattr(sim.adapter, "event_key")
                    else str(ev.get("toi"))
                )
                if key not in self.files_done:
                    self.files_done[key] = t
                    if len(self.files_done) >= sim.files_expected:
                        sim.receiver_complete(self)
        out = eng.datagrams_to_send(local)
        for data, addr in out:
            self.nacks_sent += 1
            sim.feedback(self, data, addr, t)
        dl = eng.get_timer()
        if dl is None:
            if self.timer_at is not None:
                self.timer_gen += 1
                self.timer_at = None
            return
        tt = self.clock.true(dl)
        if tt <= t:
            tt = t + 1e-6
        if self.timer_at is None or abs(tt - self.timer_at) > 1e-9:
            self.timer_gen += 1
            self.timer_at = tt
            sim.queue.schedule(tt, self.on_timer, self.timer_gen)

    def on_timer(self, gen: int) -> None:
        if gen != self.timer_gen:
            return
        self.timer_at = None
        t = self.sim.queue.now
        local = self.clock.local(t)
        self.engine.handle_timer(local)
        self.service(t, local)


class Simulation:
    def __init__(
        self,
        scn: Scenario,
        seed: int | None = None,
        pcap_receiver: int | None = None,
        adapter: Adapter | None = None,
    ) -> None:
        self.scn = scn
        self.seed = scn.seed if seed is None else seed
        self.epoch = scn.epoch
        self.queue = EventQueue(self.epoch)
        self.adapter = adapter or make_adapter(scn, self.seed)
        self.files_expected = self.adapter.files_expected()
        fb = scn.feedback
        self.feedback_enabled = bool(fb.get("enabled", False))
        self.feedback_link = LinkConfig.from_dict(fb.get("link", {"delay": 0.02}))
        self.feedback_to_receivers = bool(fb.get("to_receivers", True))
        self.peer_delay = float(fb.get("peer_delay", 0.02))
        self.sender_clock = LocalClock(self.epoch, float(scn.sender.get("clock_offset", 0.0)))
        self.sender: Any = self.adapter.build_sender()
        self.receivers: list[ReceiverNode] = []
        self.fluid: list[FluidGroup] = []
        engine_set = self._engine_indices(pcap_receiver)
        idx = 0
        self.node_of: dict[int, ReceiverNode] = {}
        self.node_by_addr: dict[tuple[str, int], ReceiverNode] = {}
        for gidx, g in enumerate(scn.receivers):
            bulk = []
            for _ in range(g.count):
                if engine_set is None or idx in engine_set:
                    node = ReceiverNode(self, idx, g, gidx)
                    self.receivers.append(node)
                    self.node_of[idx] = node
                    self.node_by_addr[node.addr] = node
                else:
                    bulk.append(idx)
                idx += 1
            if bulk:
                self.fluid.append(FluidGroup(self, g, gidx, bulk))
        self.n_total = idx
        self.pcap_rx: ReceiverNode | None = None
        if pcap_receiver is not None:
            self.pcap_rx = self.node_of[pcap_receiver]
        self.pcap_records: list[tuple[float, bytes, int]] = []
        self.attackers: list[Attacker] = []
        for aidx, spec in enumerate(scn.attackers):
            cls = KINDS[spec.kind]
            a = cls(self, spec, aidx, make_rng(self.seed, "attacker", aidx))
            if spec.targets == "all":
                a.targets = list(self.receivers)
            else:
                a.targets = [self.node_of[int(i)] for i in spec.targets]
            for r in a.targets:
                r.attacked = True
                if a.on_path:
                    r.interceptors.append(a)
            self.attackers.append(a)
        self.attack_links: dict[tuple[int, int], Link] = {}
        self._info_cache: dict[int, tuple[bytes, dict[str, Any] | None]] = {}
        self.finished = False
        self.complete_count = 0
        self.all_complete_at: float | None = None
        self.linger = float(scn.output.get("linger", (self.adapter.d + 2) * self.adapter.tint))
        self.sender_timer_gen = 0
        self.sender_done_at: float | None = None
        self.drain = float(scn.output.get("drain", 2.0))
        self.sender_stats = {"datagrams": 0, "bytes": 0, "auth_overhead_bytes": 0}
        self.feedback_stats = {"to_sender": 0, "to_receivers": 0, "suppressed": 0}
        self.sample_interval = float(scn.output.get("sample_interval", self.adapter.tint / 2))
        ntrace = int(scn.output.get("trace_receivers", min(10, len(self.receivers))))
        self.trace_rx = self.receivers[:ntrace]
        self.samples_t: list[float] = []
        self.samples: dict[int, list[int]] = {r.idx: [] for r in self.trace_rx}
        self.samples_mean: list[float] = []
        self.samples_max: list[int] = []
        self.sender_timer_at: float | None = None
        self.sent_log_intervals: dict[int, int] = {}

    def _engine_indices(self, pcap_receiver: int | None) -> set[int] | None:
        """Receivers run with real engines; None = all of them (see :mod:`tesla.sim.fluid`)."""
        scn = self.scn
        k = scn.output.get("engine_receivers")
        n = scn.n_receivers
        if k is None or int(k) >= n:
            return None
        if scn.protocol != "alc" or self.feedback_enabled:
            raise ValueError("output.engine_receivers (bulk-modeled receivers) needs "
                             "protocol = alc without feedback")
        keep = set(range(int(k)))
        for a in scn.attackers:
            keep |= set(range(n)) if a.targets == "all" else {int(i) for i in a.targets}
        if pcap_receiver is not None:
            keep.add(pcap_receiver)
        return keep

    # packet knowledge, computed once per distinct datagram object
    def info_of(self, data: bytes) -> dict[str, Any] | None:
        c = self._info_cache.get(id(data))
        if c is not None and c[0] is data:
            return c[1]
        info = self.adapter.info(data)
        if len(self._info_cache) > 4096:
            self._info_cache.clear()
        self._info_cache[id(data)] = (data, info)
        return info

    @staticmethod
    def content_key(data: bytes) -> bytes:
        return data

    # sender side
    def start(self) -> None:
        for a in self.attackers:
            a.setup()
        self.queue.schedule(self.epoch, self.on_sender_timer, 0)
        self.queue.schedule(self.epoch, self.sample)

    def on_sender_timer(self, gen: int) -> None:
        if gen != self.sender_timer_gen:
            return
        self.sender_timer_at = None
        t = self.queue.now
        local = self.sender_clock.local(t)
        self.sender.handle_timer(local)
        self.sender_service(t, local)

    def sender_service(self, t: float, local: float) -> None:
        for data, addr in self.sender.datagrams_to_send(local):
            if addr is None:
                self.multicast(data, t)
            else:
                self.unicast(data, addr, t)
        dl = self.sender.get_timer()
        if dl is None:
            return
        tt = self.sender_clock.true(dl)
        if tt <= t:
            tt = t + 1e-6
        if self.sender_timer_at is None or abs(tt - self.sender_timer_at) > 1e-9:
            self.sender_timer_gen += 1
            self.sender_timer_at = tt
            self.queue.schedule(tt, self.on_sender_timer, self.sender_timer_gen)

    def multicast(self, data: bytes, t: float) -> None:
        size = len(data)
        st = self.sender_stats
        st["datagrams"] += 1
        st["bytes"] += size
        info = self.info_of(data) if (self.attackers or self.adapter.wants_info
                                      or self.fluid) else None
        if info is not None:
            st["auth_overhead_bytes"] += int(info.get("auth_overhead", 0))
        for a in self.attackers:
            a.observe(data, t, info)
        for fg in self.fluid:
            fg.on_multicast(data, t, info)
        # consecutive deliveries at the same arrival time are one event (same order as
        # one event each: nothing can be scheduled between consecutive sequence numbers)
        at: float | None = None
        group: list[ReceiverNode] = []
        for r in self.receivers:
            if t < r.join:
                continue
            if r.interceptors:
                if group:  # (an interceptor may schedule: keep the sequence order exact)
                    self._schedule_group(at, group, data)
                    at, group = None, []
                for a in r.interceptors:
                    a.intercept(r, data, t, info)
                continue
            for arr in r.link.transmit(t, size):
                if arr != at:
                    if group:
                        self._schedule_group(at, group, data)
                    at, group = arr, []
                group.append(r)
        if group:
            self._schedule_group(at, group, data)

    def _schedule_group(self, at: Any, group: list[ReceiverNode], data: bytes) -> None:
        if len(group) == 1:
            self.queue.schedule(at, group[0].deliver, data, SENDER)
        else:
            self.queue.schedule(at, self._deliver_group, group, data)

    def _deliver_group(self, group: list[ReceiverNode], data: bytes) -> None:
        for r in group:
            r.deliver(data, SENDER)
        self.queue.processed += len(group) - 1  # counted as one event each

    def unicast(self, data: bytes, addr: Any, t: float) -> None:
        """Sender -> one receiver (e.g. a direct time synchronization response)."""
        self.sender_stats["unicast"] = self.sender_stats.get("unicast", 0) + 1
        r = self.node_by_addr.get(tuple(addr)) if addr is not None else None
        if r is None or t < r.join:
            return
        for arr in r.link.transmit(t, len(data)):
            self.queue.schedule(arr, r.deliver, data, SENDER)

    def forward(self, r: ReceiverNode, data: bytes, t: float) -> None:
        """An on-path attacker lets the genuine packet through on the normal link."""
        for arr in r.link.transmit(t, len(data)):
            self.queue.schedule(arr, r.deliver, data, SENDER)

    def deliver_injected(self, a: Attacker, r: ReceiverNode, data: bytes, t: float) -> None:
        for arr in r.link.transmit(t, len(data)):
            self.queue.schedule(arr, r.deliver, data, ATTACKER)

    def inject(self, a: Attacker, data: bytes, t: float, targets: list[ReceiverNode]) -> None:
        for r in targets:
            if t < r.join:
                continue
            key = (a.idx, r.idx)
            link = self.attack_links.get(key)
            if link is None:
                link = Link(a.spec.link, make_rng(self.seed, "attack-link", a.idx, r.idx))
                self.attack_links[key] = link
            for arr in link.transmit(t, len(data)):
                self.queue.schedule(arr, r.deliver, data, ATTACKER)

    # feedback
    def feedback(self, src: ReceiverNode, data: bytes, addr: Any, t: float) -> None:
        if not self.feedback_enabled:
            self.feedback_stats["suppressed"] += 1
            return
        for arr in src.uplink.transmit(t, len(data)):
            self.feedback_stats["to_sender"] += 1
            self.queue.schedule(arr, self.sender_receive, data, src.addr)
            if addr is None and self.feedback_to_receivers:
                for r in self.receivers:
                    if r is not src and arr >= r.join:
                        self.feedback_stats["to_receivers"] += 1
                        self.queue.schedule(arr + self.peer_delay, r.deliver, data, PEER)

    def sender_receive(self, data: bytes, src_addr: Any = None) -> None:
        t = self.queue.now
        local = self.sender_clock.local(t)
        self.sender.receive_datagram(data, src_addr, local)
        self.sender_service(t, local)

    # bookkeeping
    def receiver_complete(self, r: ReceiverNode) -> None:
        self.complete_count += 1
        if self.complete_count >= len(self.receivers) and not self.fluid:
            self.all_complete_at = self.queue.now

    def sample(self) -> None:
        t = self.queue.now
        bl = self.adapter.buffer_level
        self.samples_t.append(t - self.epoch)
        for r in self.trace_rx:
            self.samples[r.idx].append(bl(r.engine))
        levels = [bl(r.engine) for r in self.receivers]
        self.samples_mean.append(sum(levels) / max(1, len(levels)))
        self.samples_max.append(max(levels, default=0))
        if not self.finished:
            self.queue.schedule(t + self.sample_interval, self.sample)

    def _stop(self) -> bool:
        now = self.queue.now
        if self.all_complete_at is not None and now >= self.all_complete_at + self.linger:
            return True
        if self.sender_done_at is None and self.adapter.sender_done(self.sender):
            self.sender_done_at = now
        # after the sender is done, wait for the in-flight packets and the receivers'
        # own timers (NACK rounds, object timeouts) up to ``drain`` seconds
        return self.sender_done_at is not None and now >= self.sender_done_at + self.drain

    def run(self) -> dict[str, Any]:
        from tesla.sim.report import build_report

        self.start()
        end = self.epoch + self.scn.duration
        q = self.queue
        while len(q):
            nt = q.peek_time()
            if nt is None or nt > end:
                break
            q.run(min(end, nt + 0.05))
            if self._stop():
                break
            if self.all_complete_at is None and self._idle():
                break
        self.finished = True
        return build_report(self)

    def _idle(self) -> bool:
        """Only the sampler (and flooders) left: nothing can change any more."""
        return (
            self.sender_timer_at is None
            and all(r.timer_at is None for r in self.receivers)
            and len(self.queue) <= 1 + sum(1 for a in self.attackers if hasattr(a, "_tick"))
        )
