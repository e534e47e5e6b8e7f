"""Bulk ("fluid") receivers: many ALC(+TESLA) receivers modeled with numpy, no engines.

Running a real engine per receiver costs ~0.2 ms per delivered datagram and holds the
object being decoded (10 MB for a 10 MB file) per receiver, so 1000 receivers of a 10 MB
file would take half an hour and 10 GB.  A scenario can therefore run the first
``output.engine_receivers`` receivers (plus every attacked receiver and the ``--pcap``
one) with the real engines and model the others here, per receiver group:

* links are drawn for the whole group at once per datagram (same models and parameters
  as :class:`tesla.sim.links.Link`: Bernoulli, Gilbert-Elliott, trace; jitter, reordering,
  duplication (a copy never changes the outcome: counted only), bandwidth queue);
* a datagram the sender sent twice byte for byte (the TESLA silent-period fillers of one
  interval) counts once: the verifier drops the later copy as ``duplicate``;
* TESLA, from RFC 5776 as the verifier applies it: a tagged packet arriving before the
  receiver's first bootstrap is dropped (``no_bootstrap``); otherwise it is dropped as
  ``unsafe`` unless ``floor((T_local + D_t - T0)/Tint) < i + d``; K_i is known from the
  first safe arrival of a Type 1 tag disclosing K_j with j >= i (chain walk); a safe data
  packet is released at ``max(arrival, key known)``;
* ALC/FLUTE: a source block is decoded when ``k`` distinct symbols are released (any k
  for Reed-Solomon/RaptorQ, the k source symbols for Compact No-Code); a file is complete
  when all its blocks and the FDT are.

Not modeled (use engine receivers for them): receiver buffer limits and eviction,
object/session timeouts, attackers, feedback (NORM), direct time sync.  A test runs the
same scenario with both tiers and compares them.
"""

from __future__ import annotations

import hashlib
import math
import struct
from typing import Any

import numpy as np

from tesla.sim.core import make_np_rng, make_rng
from tesla.sim.scenario import ReceiverGroup

# tesla.sim.network.Simulation, passed in; not imported (network imports this module)
Simulation = Any

_U32 = struct.Struct("!I")
_HH = struct.Struct("!HH")
INF = math.inf


def alc_symbol(data: bytes, info: dict[str, Any] | None) -> tuple[int, int, int, int] | None:
    """(toi, sbn, esi, fec encoding id) of an ALC data packet, None for anything else."""
    from alc.errors import DecodeError
    from alc.receiver import parse_lct

    try:
        h = parse_lct(data)
    except DecodeError:
        return None
    if h.toi is None or h.hlen + 4 > len(data):
        return None
    cp = h.cp
    if cp == 0:
        sbn, esi = _HH.unpack_from(data, h.hlen)
    elif cp == 5:
        x = _U32.unpack_from(data, h.hlen)[0]
        sbn, esi = x >> 8, x & 0xFF
    elif cp == 6:
        x = _U32.unpack_from(data, h.hlen)[0]
        sbn, esi = x >> 24, x & 0xFFFFFF
    else:
        return None
    return h.toi, sbn, esi, cp


class FluidGroup:
    """The modeled receivers of one receiver group (indices ``idxs``)."""

    def __init__(self, sim: Simulation, group: ReceiverGroup, gidx: int, idxs: list[int]) -> None:
        self.sim, self.group, self.idxs = sim, group, idxs
        m = self.m = len(idxs)
        self.rng = make_np_rng(sim.seed, "fluid", gidx)
        c = group.clock
        self.offset = np.full(m, c.offset)
        self.drift = np.full(m, c.drift)
        # the same per-receiver clock draws as an engine receiver of that index
        for k, idx in enumerate(idxs):
            crng = make_rng(sim.seed, "clock", idx)
            if c.offset_uniform:
                self.offset[k] += crng.uniform(*c.offset_uniform)
            if c.drift_uniform:
                self.drift[k] += crng.uniform(*c.drift_uniform)
        self.join = sim.epoch + group.join
        ad = sim.adapter
        self.d_t = group.max_clock_error if group.max_clock_error is not None \
            else ad.default_bound
        lk = self.link = group.link
        self.bad = np.zeros(m, dtype=bool)
        self.free_at = np.zeros(m)
        self.trace_pos = 0
        self.stats = {"sent": 0, "lost": 0, "queue_drop": 0, "duplicated": 0, "reordered": 0}
        self.lost = np.zeros(m, dtype=np.int64)
        if lk.loss.kind == "trace":
            from tesla.sim.links import _load_trace

            self.trace = np.array(_load_trace(lk.loss), dtype=bool)
        # per datagram: arrival true times (NaN = not received) and what it is
        self.rows: list[np.ndarray] = []
        self.meta: list[tuple[str, int | None, int | None, tuple[int, int, int, int] | None]] = []
        self.sizes: list[int] = []
        self.copy_of: list[int] = []  # row of an earlier byte-identical datagram, or -1
        self._first_row: dict[bytes, int] = {}

    # ------------------------------------------------------------------ per datagram
    def on_multicast(self, data: bytes, t: float, info: dict[str, Any] | None) -> None:
        m, lk, rng = self.m, self.link, self.rng
        st = self.stats
        if t < self.join:
            return
        st["sent"] += m
        kind = lk.loss.kind
        if kind == "bernoulli":
            lost = rng.random(m) < lk.loss.p
        elif kind == "gilbert":
            r = rng.random(m)
            self.bad = np.where(self.bad, r >= lk.loss.p_bg, r < lk.loss.p_gb)
            p = np.where(self.bad, lk.loss.loss_bad, lk.loss.loss_good)
            lost = rng.random(m) < p
        elif kind == "trace":
            lost = np.full(m, self.trace[self.trace_pos % len(self.trace)])
            self.trace_pos += 1
        else:
            lost = np.zeros(m, dtype=bool)
        start = np.full(m, t)
        if lk.bandwidth > 0:
            start = np.maximum(t, self.free_at)
            backlog = (start - t) * lk.bandwidth / 8.0
            qdrop = (backlog + len(data) > lk.queue_bytes) & ~lost
            st["queue_drop"] += int(qdrop.sum())
            ok = ~lost & ~qdrop
            self.free_at = np.where(ok, start + len(data) * 8.0 / lk.bandwidth, self.free_at)
            start = self.free_at
            lost = lost | qdrop
        arr = start + lk.delay
        if lk.jitter != "none" and lk.jitter_s > 0:
            if lk.jitter == "uniform":
                arr = arr + rng.uniform(0.0, lk.jitter_s, m)
            elif lk.jitter == "normal":
                arr = arr + np.abs(rng.normal(0.0, lk.jitter_s, m))
            elif lk.jitter == "exponential":
                arr = arr + rng.exponential(lk.jitter_s, m)
        if lk.reorder:
            ro = rng.random(m) < lk.reorder
            st["reordered"] += int(ro.sum())
            arr = arr + ro * lk.reorder_delay
        if lk.duplicate:
            st["duplicated"] += int((rng.random(m) < lk.duplicate).sum())
        st["lost"] += int(lost.sum())
        self.lost += lost
        arr[lost] = np.nan
        info = info or {}
        sym = alc_symbol(data, info) if info.get("kind", "data") == "data" else None
        digest = hashlib.blake2b(data, digest_size=16).digest()
        self.copy_of.append(self._first_row.setdefault(digest, len(self.rows)))
        if self.copy_of[-1] == len(self.rows):
            self.copy_of[-1] = -1
        self.rows.append(arr)
        self.meta.append((info.get("kind", "data" if sym else "other"), info.get("interval"),
                          info.get("key_index"), sym))
        self.sizes.append(len(data))

    # ------------------------------------------------------------------ at the end
    def finalize(self) -> list[dict[str, Any]]:
        sim, ad, m = self.sim, self.sim.adapter, self.m
        ep = sim.epoch
        auth = sim.scn.auth
        n = len(self.rows)
        if n == 0:
            return [self._empty(k) for k in range(m)]
        A = np.vstack(self.rows)  # (n, m) true arrival times, NaN = lost
        del self.rows
        kinds = [x[0] for x in self.meta]
        local = ep + (A - ep) * (1.0 + self.drift) + self.offset
        got = ~np.isnan(A)
        bytes_rx = (got * np.asarray(self.sizes)[:, None]).sum(axis=0)
        arrivals = got.sum(axis=0)
        boot = np.full(m, INF)
        unsafe = np.zeros((n, m), dtype=bool)
        nob = np.zeros((n, m), dtype=bool)
        dup = np.zeros((n, m), dtype=bool)
        ok = got.copy()
        if auth:
            is_boot = np.array([k == "bootstrap" for k in kinds])
            if is_boot.any():
                boot = np.nanmin(np.where(got[is_boot], A[is_boot], INF), axis=0)
            tagged = np.array([x[1] is not None for x in self.meta])
            ivals = np.array([x[1] if x[1] is not None else 0 for x in self.meta], dtype=float)
            nob = got & tagged[:, None] & (A < boot[None, :])
            cur = np.floor((local + self.d_t - ad.t0) / ad.tint)
            # unsafe (RFC 5776 §4.3), or from an interval that cannot have started by the
            # receiver's bound (the verifier's REJECT_FUTURE_INTERVAL): both drop.unsafe
            safe = (cur < ivals[:, None] + ad.d) & (cur >= ivals[:, None])
            unsafe = got & tagged[:, None] & ~nob & ~safe
            ok = got & tagged[:, None] & ~nob & safe
            for r, f in enumerate(self.copy_of):
                if f >= 0:  # a byte-identical copy after an accepted one: ``duplicate``
                    dup[r] = ok[r] & ok[f]
            ok &= ~dup
            # K_i known at the first safe arrival of a tag disclosing K_j, j >= i
            kidx = np.array([x[2] if x[2] is not None else -1 for x in self.meta])
            maxk = int(kidx.max()) if kidx.size else -1
            maxi = int(ivals[tagged].max()) if tagged.any() else 0
            top = max(maxk, maxi) + 1
            key_at = np.full((top + 1, m), INF)
            for j in np.unique(kidx[kidx >= 0]):
                rows = kidx == j
                key_at[j] = np.min(np.where(ok[rows], A[rows], INF), axis=0)
            key_known = np.minimum.accumulate(key_at[::-1], axis=0)[::-1]
            itag = ivals.astype(np.int64)
            R = np.where(ok, np.maximum(A, key_known[np.clip(itag, 0, top)]), INF)
        else:
            R = np.where(got, A, INF)
        released = np.isfinite(R) & ok
        lat = np.where(released, R - A, np.nan)
        # blocks and files
        fdt_done = np.full(m, -INF)  # no FDT requirement unless FDT packets were sent
        sender = sim.sender
        objs = _alc_objects(sender)
        by_block: dict[tuple[int, int], dict[int, list[int]]] = {}
        for r, x in enumerate(self.meta):
            if x[3] is not None:
                toi, sbn, esi, _cp = x[3]
                by_block.setdefault((toi, sbn), {}).setdefault(esi, []).append(r)
        per_obj: dict[int, np.ndarray] = {}
        for (toi, sbn), esis in sorted(by_block.items()):
            per_esi = np.vstack([np.min(R[rows], axis=0) for _e, rows in sorted(esis.items())])
            ids = sorted(esis)
            if toi == 0:  # FDT instance: every source symbol (Compact No-Code)
                fdt_done = np.maximum(fdt_done, per_esi.max(axis=0))
                continue
            o = objs.get(toi)
            if o is None:
                continue
            k = o[0][sbn] if sbn < len(o[0]) else len(ids)
            if o[1] == 0:  # Compact No-Code: all source symbols
                src = [q for q, e in enumerate(ids) if e < k]
                done = per_esi[src].max(axis=0) if len(src) == k else np.full(m, INF)
            elif len(ids) >= k:
                done = np.sort(per_esi, axis=0)[k - 1]
            else:
                done = np.full(m, INF)
            prev = per_obj.get(toi)
            per_obj[toi] = done if prev is None else np.maximum(prev, done)
        complete_files = np.zeros(m, dtype=np.int64)
        last_done = np.full(m, -INF)
        for toi, (ks, _eid) in objs.items():
            done = per_obj.get(toi, np.full(m, INF))
            if len({sbn for (t, sbn) in by_block if t == toi}) < len(ks):
                done = np.full(m, INF)
            done = np.maximum(done, fdt_done)
            fin = np.isfinite(done)
            complete_files += fin
            last_done = np.where(fin, np.maximum(last_done, done), last_done)
        files_done = np.where(complete_files == len(objs), last_done, INF)
        # buffer occupancy: +1 at a safe arrival, -1 at its release
        hwm = _high_water(A, R, ok)
        self.series = _occupancy_series(A, R, ok, sim)
        out = []
        for k in range(m):
            lk = lat[:, k]
            lk = lk[~np.isnan(lk)]
            out.append({
                "idx": self.idxs[k],
                "clock_offset": float(self.offset[k]), "clock_drift": float(self.drift[k]),
                "clock_bound": self.d_t, "join": self.join - ep,
                "files_completed": int(complete_files[k]),
                "complete": bool(np.isfinite(files_done[k])),
                "time_to_complete": float(files_done[k] - max(self.join, ep))
                if np.isfinite(files_done[k]) else None,
                "arrivals": int(arrivals[k]), "bytes_received": int(bytes_rx[k]),
                "authenticated": int(released[:, k].sum()),
                "latency": lk, "buffer_hwm": int(hwm[k]),
                "link": {"lost": int(self.lost[k])},
                "drops": {k2: v for k2, v in (("tesla.drop.unsafe", int(unsafe[:, k].sum())),
                                               ("tesla.drop.no_bootstrap",
                                                int(nob[:, k].sum())),
                                               ("tesla.drop.duplicate",
                                                int(dup[:, k].sum()))) if v},
            })
        return out

    def _empty(self, k: int) -> dict[str, Any]:
        return {"idx": self.idxs[k], "clock_offset": float(self.offset[k]),
                "clock_drift": float(self.drift[k]), "clock_bound": self.d_t,
                "join": self.join - self.sim.epoch, "files_completed": 0, "complete": False,
                "time_to_complete": None, "arrivals": 0, "bytes_received": 0,
                "authenticated": 0, "latency": np.zeros(0), "buffer_hwm": 0,
                "link": {"lost": 0}, "drops": {}}


def _alc_objects(sender: Any) -> dict[int, tuple[list[int], int]]:
    """TOI -> (source symbols per block, FEC encoding id) from the ALC sender engine."""
    eng = sender
    for _ in range(4):
        if hasattr(eng, "objects"):
            break
        eng = getattr(eng, "engine", None)
    out: dict[int, tuple[list[int], int]] = {}
    for o in getattr(eng, "objects", []) or []:
        if o.scheme is not None:
            out[o.toi] = (list(o.scheme.block_lengths()), o.oti.encoding_id)
    return out


def _high_water(A: np.ndarray, R: np.ndarray, held: np.ndarray) -> np.ndarray:
    """Per column: max over time of #(arrived) - #(released) among ``held`` packets."""
    a = np.where(held, A, INF)
    r = np.where(held & np.isfinite(R), R, INF)
    t = np.concatenate([a, r], axis=0)
    step = np.concatenate([np.where(held, 1, 0), np.where(held & np.isfinite(R), -1, 0)],
                          axis=0)
    # releases sort before arrivals at equal times (a packet released on arrival)
    tie = np.concatenate([np.ones_like(a), np.zeros_like(r)], axis=0)
    order = np.lexsort((tie, t), axis=0)
    s = np.take_along_axis(step, order, axis=0)
    return np.maximum(np.cumsum(s, axis=0).max(axis=0), 0)


def _occupancy_series(A: np.ndarray, R: np.ndarray, held: np.ndarray,
                      sim: Simulation) -> dict[str, np.ndarray]:
    ts = np.asarray(sim.samples_t) + sim.epoch
    a = np.sort(np.where(held, A, INF), axis=0)
    r = np.sort(np.where(held & np.isfinite(R), R, INF), axis=0)
    occ = np.empty((len(ts), A.shape[1]))
    for k in range(A.shape[1]):
        occ[:, k] = np.searchsorted(a[:, k], ts, "right") - np.searchsorted(r[:, k], ts, "right")
    return {"sum": occ.sum(axis=1), "max": occ.max(axis=1) if occ.size else occ}
