"""Long TESLA sessions in simulated time (issue 14): one sender for hours, several key
chains, receivers joining every ``join_every`` seconds.

The traffic is sparse so that a 24-hour session at T_int = 10 ms (8.64 million
intervals) runs in minutes: an endless ALC/FLUTE carousel of one small file sends one
datagram every ``data_period`` seconds (the FDT is repeated and renewed by the ALC
sender like any datagram), wrapped by the real :class:`tesla.core.authenticator.TeslaSender`,
which adds what TESLA needs on top: the signed bootstrap every ``bootstrap_period``
seconds and, after each data datagram, the silent-period fillers of the next d intervals
(the last one discloses the key of the data interval; the others carry the Type 3
commitment of the next chain in the chain's last ``n_tx_newkcc`` intervals).  Between
two data datagrams 1/T_int - d intervals pass without a packet: the receiver derives
those keys with the chain function (``F``) when the next key arrives.

Receivers are the real :class:`tesla.core.receiver.TeslaReceiver` in front of the real
:class:`alc.receiver.AlcReceiver` (:func:`make_receiver`, the one place they are built);
receiver k joins at ``first_join + k*join_every`` and gets every datagram sent after
that, ``delay`` seconds later, with a clock bound of ``max_clock_error_ms``.  A receiver
that joins in the middle of a chain walks once from the chain's commitment to the
current key (up to N calls of F): ``max_key_walk`` is N + 1.

Figures (:func:`run`): chains used, receivers joined, per receiver the tagged datagrams
that arrived after its join and after its first bootstrap, accepted, drops by reason,
files completed, chain switches followed; every ``sample_every`` seconds the state size
(a deep ``sys.getsizeof`` of the sender and of each receiver) and, with
``trace_memory``, the tracemalloc current/peak of the process.
"""

from __future__ import annotations

import gc
import math
import sys
import time
import tracemalloc
import types
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["LongSessionConfig", "deep_size", "make_receiver", "run"]

EPOCH = 1_767_225_600.0  # 2026-01-01T00:00:00Z, T0 of the session (as the simulator)


@dataclass
class LongSessionConfig:
    hours: float = 24.0
    tint_ms: int = 10
    d: int = 3
    #: N: chain j covers intervals j(N+1) .. j(N+1)+N (2^19 intervals = 87.4 min at 10 ms)
    chain_length: int = (1 << 19) - 1
    strategy: str = "checkpoint"  # sender chain storage (O(sqrt N) keys per chain)
    data_period: float = 1.0  # one ALC datagram every data_period seconds
    bootstrap_period: float = 10.0
    silent_fill: int = 1  # fillers per silent interval after each data datagram
    last_key_intervals: int = 4  # TeslaSender: intervals disclosing the last data key
    first_join: float = 0.0
    join_every: float = 3600.0
    join_offset: float = 0.0  # added to every join after the first (not on a chain start)
    stay: float | None = None  # seconds a receiver stays; None = to the end
    delay: float = 0.002  # one-way delay sender -> receivers (s)
    max_clock_error_ms: float = 5.0
    file_size: int = 300  # the carousel's one file (octets)
    fdt_interval: float = 30.0
    fdt_expires: float = 3600.0
    sample_every: float = 3600.0
    trace_memory: bool = False
    seed: int = 1
    progress: bool = False


def deep_size(obj: Any, exclude: set[int] | None = None) -> int:
    """Octets reachable from ``obj`` (``sys.getsizeof`` over ``gc.get_referents``),
    skipping modules, classes, functions and the ids in ``exclude`` (shared objects)."""
    seen: set[int] = set(exclude or ())
    todo = [obj]
    total = 0
    skip = (type, types.ModuleType, types.FunctionType, types.BuiltinFunctionType,
            types.MethodType, types.CodeType)
    while todo:
        o = todo.pop()
        i = id(o)
        if i in seen or isinstance(o, skip):
            continue
        seen.add(i)
        total += sys.getsizeof(o)
        todo.extend(gc.get_referents(o))
    return total


def _sender_key() -> Any:
    from tesla.sim.real import _sender_key as key

    return key()


def make_receiver(tsi: int, cfg: LongSessionConfig) -> Any:
    """A TESLA-authenticated ALC/FLUTE receiver (the one place the sim builds one)."""
    from alc.receiver import AlcReceiver, ReceiverConfig
    from tesla.core.receiver import TeslaReceiver
    from tesla.core.session import AuthenticatedReceiver

    eng = AlcReceiver(ReceiverConfig(tsi=tsi, object_timeout=30.0,
                                     session_timeout=max(60.0, 10 * cfg.data_period)))
    tr = TeslaReceiver(_sender_key().public_key(), max_clock_error_ms=cfg.max_clock_error_ms,
                       max_key_walk=cfg.chain_length + 1)
    return AuthenticatedReceiver(tr, eng)


@dataclass
class _Rx:
    idx: int
    join: float
    leave: float
    engine: Any
    after_join: int = 0  # tagged datagrams that arrived after the join
    after_boot: int = 0  # ... after the first bootstrap was verified
    tail: int = 0  # ... of those, the fillers after the session's last data datagram
    boot_at: float | None = None
    chains: set[int] = field(default_factory=set)
    files: int = 0
    sizes: list[int] = field(default_factory=list)
    left: bool = False
    joined: bool = False
    stats: dict[str, int] = field(default_factory=dict)  # final figures once it left


def _state(rx: Any) -> dict[str, int]:
    """Bounded-state figures of one receiver (the sizes a long session could grow)."""
    t = rx.tesla
    keys = t.keys
    e = rx.engine
    return {
        "chain_verifiers": len(keys.chains) if keys is not None else 0,
        "verified_keys": sum(len(v._known) for v in keys.chains.values()) if keys else 0,
        "keycache": len(t._keycache),
        "pending_intervals": len(t._pending),
        "replay_memory": len(t._recent),
        "interval_bounds": len(t._bounds),
        "alc_done": len(e._done_tois) + len(e._done_fdt),
        "alc_announced": len(e.announced),
    }


def run(cfg: LongSessionConfig) -> dict[str, Any]:
    from alc.sender import AlcSender, SenderConfig
    from tesla.core.authenticator import ControlTemplate, TeslaSender
    from tesla.core.keychain import KeyChainSet
    from tesla.core.ntp import posix_to_ntp
    from tesla.core.params import TeslaParams

    wall0 = time.perf_counter()
    if cfg.trace_memory:
        tracemalloc.start()
    tsi = 77
    params = TeslaParams(t0_ntp=posix_to_ntp(EPOCH), tint_ms=cfg.tint_ms,
                         n_chain=cfg.chain_length, d=cfg.d, single_chain=False)
    params.check_session_duration(cfg.hours * 3600.0 + 60.0)
    seeds = iter(range(1, 1 << 30))

    def rng(n: int) -> bytes:  # deterministic primary keys (simulation only)
        import hashlib

        return hashlib.sha256(b"long-session %d %d" % (cfg.seed, next(seeds))).digest()[:n]

    chains = KeyChainSet(params, cfg.strategy, rng=rng)
    tx = TeslaSender(params, _sender_key(), template=ControlTemplate(tsi=tsi), chains=chains,
                     bootstrap_period=cfg.bootstrap_period, silent_fill=cfg.silent_fill,
                     last_key_intervals=cfg.last_key_intervals)
    alc = AlcSender(SenderConfig(tsi=tsi, rate_bps=None, carousel_rounds=0,
                                 max_datagrams_per_call=1, symbol_length=1000,
                                 fdt_interval=cfg.fdt_interval, fdt_expires=cfg.fdt_expires))
    payload = bytes((cfg.seed * 7 + k) & 0xFF for k in range(cfg.file_size))
    alc.add_bytes(payload, "beacon.bin")

    end = EPOCH + cfg.hours * 3600.0
    rxs: list[_Rx] = []
    t = EPOCH + cfg.first_join
    k = 0
    while t < end:
        leave = end + 1e9 if cfg.stay is None else t + cfg.stay
        rxs.append(_Rx(k, t, leave, None))
        k += 1
        t = EPOCH + cfg.first_join + k * cfg.join_every + cfg.join_offset
    samples: list[dict[str, Any]] = []
    next_sample = EPOCH + cfg.sample_every
    next_data = EPOCH + 0.5 * cfg.tint_ms / 1000.0 + 3 * cfg.tint_ms / 1000.0
    sent = {"datagrams": 0, "tagged": 0, "bootstraps": 0, "data": 0}
    sender_chains: set[int] = set()
    exclude = {id(_sender_key()), id(_sender_key().public_key())}

    tail = False  # the fillers after the last data datagram: their own keys never come

    def deliver(pkts: list[bytes], now: float, tagged: list[bool]) -> None:
        arr = now + cfg.delay
        for r in rxs:
            if r.left or arr < r.join:
                continue
            if arr >= r.leave:
                # gone: keep its figures, free its engines (what it still holds stays
                # counted as still_buffered)
                r.left = True
                r.stats = dict(r.engine.stats) if r.engine is not None else {}
                r.engine = None
                continue
            if r.engine is None:
                r.engine = make_receiver(tsi, cfg)
                r.joined = True
            eng = r.engine
            tm = eng.get_timer()
            if tm is not None and tm <= arr:
                eng.handle_timer(arr)
            for p, tg in zip(pkts, tagged, strict=True):
                if tg:
                    r.after_join += 1
                    if r.boot_at is not None:
                        r.after_boot += 1
                        if tail:
                            r.tail += 1
                eng.receive_datagram(p, None, arr)
                if r.boot_at is None and eng.tesla.initialized:
                    r.boot_at = arr
            while (ev := eng.next_event()) is not None:
                if type(ev).__name__ == "FileReceived":
                    r.files += 1
                elif type(ev).__name__ == "NewChain":  # tesla.core.receiver.NewChain
                    r.chains.add(int(ev.chain))

    def sample(now: float) -> None:
        gc.collect()
        row: dict[str, Any] = {"hour": round((now - EPOCH) / 3600.0, 3),
                               "sender_bytes": deep_size(tx, exclude) + deep_size(alc, exclude),
                               "sender_chains_held": len(chains._chains)}
        live = [r for r in rxs if r.engine is not None and not r.left]
        row["receivers"] = {r.idx: deep_size(r.engine, exclude) for r in live}
        for r in live:
            r.sizes.append(row["receivers"][r.idx])
        row["receiver_state"] = {r.idx: _state(r.engine) for r in live}
        if cfg.trace_memory:
            cur, peak = tracemalloc.get_traced_memory()
            row["tracemalloc_current"] = cur
            row["tracemalloc_peak"] = peak
            tracemalloc.reset_peak()
        samples.append(row)
        if cfg.progress:
            print(f"  h {row['hour']:6.2f}  sender {row['sender_bytes']/1e3:8.1f} kB  "
                  f"receivers {len(live)}  wall {time.perf_counter() - wall0:7.1f} s",
                  file=sys.stderr, flush=True)

    def emit(now: float, pkts: list[bytes], tagged: list[bool]) -> None:
        sent["datagrams"] += len(pkts)
        sent["tagged"] += sum(tagged)
        sent["bootstraps"] += len(pkts) - sum(tagged)
        deliver(pkts, now, tagged)

    def control(now: float) -> None:
        ctl = tx.control_packets(now)
        if ctl:
            emit(now, ctl, [_tagged(p) for p in ctl])

    def _tagged(p: bytes) -> bool:
        from tesla.core import extauth as ea
        from tesla.core.authenticator import ext_area

        s, e = ext_area(p, "alc")
        off = ea.find_ext_auth(p, s, e, 0)
        return (p[off + 2] & 15) != ea.TYPE_BOOTSTRAP

    now = EPOCH
    control(now)  # first bootstraps
    while True:
        nd = tx.next_deadline()
        nxt = min(next_data, next_sample, nd if nd is not None else math.inf)
        if nxt >= end and not tx.disclosure_pending():
            break
        now = max(now, nxt)
        if now >= next_sample:
            sample(now)
            next_sample += cfg.sample_every
        if nd is not None and now >= nd:
            control(now)
        if now >= next_data and now < end:
            next_data += cfg.data_period
            sender_chains.add(params.chain_of(tx.interval_at(now)))
            dg = alc.datagrams_to_send(now)
            if dg:
                sent["data"] += len(dg)
                emit(now, [tx.wrap(p, now) for p, _ in dg], [True] * len(dg))
            control(now)
            tail = next_data >= end
        elif now >= next_data:
            next_data = math.inf
    # end of session: everything still buffered must be authenticated by now
    sample(now)
    out_rx = []
    for r in rxs:
        e = r.engine
        st = e.stats if e is not None else r.stats
        drops = {k[len("tesla.drop."):]: v for k, v in st.items()
                 if k.startswith("tesla.drop.") and v}
        sz = r.sizes
        out_rx.append({
            "receiver": r.idx, "join_h": round((r.join - EPOCH) / 3600.0, 3),
            "first_bootstrap_after_s": None if r.boot_at is None else round(r.boot_at - r.join, 3),
            "tagged_after_join": r.after_join, "tagged_after_bootstrap": r.after_boot,
            "tail_fillers": r.tail, "left_h": None if not r.left else round(
                (r.leave - EPOCH) / 3600.0, 3),
            "accepted": st.get("tesla.accepted", 0), "drops": drops,
            "still_buffered": st.get("tesla.buffered_packets", 0),
            "chains_learned": sorted(r.chains), "files": r.files,
            "state_bytes_first_last_max": [sz[0], sz[-1], max(sz)] if sz else None,
        })
    res = {
        "config": asdict(cfg),
        "intervals": int(cfg.hours * 3600.0 * 1000 / cfg.tint_ms),
        "chains_used": sorted(sender_chains),
        "sender": dict(sent, **{k: v for k, v in tx.stats.items() if k.startswith("tesla.")},
                       fdt_renewed=alc.stats.get("fdt_renewed", 0)),
        "receivers_joined": sum(1 for r in rxs if r.joined),
        "receivers": out_rx,
        "samples": samples,
        "wall_s": round(time.perf_counter() - wall0, 1),
    }
    if cfg.trace_memory:
        tracemalloc.stop()
    return res


def check(res: dict[str, Any]) -> list[str]:
    """What must hold; the list of violations (empty = pass)."""
    bad = []
    for r in res["receivers"]:
        n = r["receiver"]
        # every tagged datagram after the first bootstrap is authenticated, except
        # those whose key was still to come when the receiver left / the session ended
        # (the fillers of the last d intervals: at most d*silent_fill of them; the tail
        # fillers before them are authenticated by these, last_key_intervals > 1)
        want = r["tagged_after_bootstrap"] - r["still_buffered"]
        if r["accepted"] != want:
            bad.append(f"receiver {n}: accepted {r['accepted']} of {want}")
        c = res["config"]
        lim = c["d"] * c["silent_fill"]
        tail = min(r["tail_fillers"], lim)
        if r["still_buffered"] > lim + 1 or (r["left_h"] is None and r["still_buffered"] != tail):
            bad.append(f"receiver {n}: {r['still_buffered']} still buffered")
        other = {k: v for k, v in r["drops"].items() if k != "no_bootstrap"}
        if other:
            bad.append(f"receiver {n}: drops {other}")
        nb = r["drops"].get("no_bootstrap", 0)
        if nb != r["tagged_after_join"] - r["tagged_after_bootstrap"]:
            bad.append(f"receiver {n}: no_bootstrap {nb}")
    return bad
