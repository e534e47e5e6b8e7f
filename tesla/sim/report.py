"""The JSON report: per receiver and aggregate, only from virtual time and counters."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np

# tesla.sim.network.Simulation, passed in; not imported (network imports this module)
Simulation = Any

PCTS = (50, 90, 99)


def _r(x: float) -> float:
    """Round for a stable, readable JSON (9 significant digits)."""
    if x is None or not math.isfinite(x):
        return x
    return float(f"{x:.9g}")


def dist(values: Any) -> dict[str, Any]:
    a = np.asarray(values, dtype=float)
    if a.size == 0:
        return {"n": 0}
    out: dict[str, Any] = {
        "n": int(a.size),
        "mean": _r(float(a.mean())),
        "min": _r(float(a.min())),
        "max": _r(float(a.max())),
    }
    for p, v in zip(PCTS, np.percentile(a, PCTS), strict=True):
        out[f"p{p}"] = _r(float(v))
    return out


def cdf_points(values: Any, n: int = 101) -> dict[str, list[float]]:
    a = np.asarray(values, dtype=float)
    if a.size == 0:
        return {"q": [], "x": []}
    qs = np.linspace(0, 100, n)
    return {
        "q": [_r(float(q) / 100) for q in qs],
        "x": [_r(float(v)) for v in np.percentile(a, qs)],
    }


def build_report(sim: Simulation) -> dict[str, Any]:
    ep = sim.epoch
    scn = sim.scn
    rx_reports: list[dict[str, Any]] = []
    drops: dict[str, int] = {}
    all_lat: list[np.ndarray] = []
    ttc: list[float] = []
    nacks = 0
    bytes_wire = sim.sender_stats["bytes"]
    for r in sim.receivers:
        st = dict(sorted(r.engine.stats.items()))
        n_files = len(r.files_done)
        done = n_files >= sim.files_expected > 0
        t_done = max(r.files_done.values()) - max(r.join, ep) if done else None
        all_lat.append(np.frombuffer(r.latency, dtype=float) if len(r.latency) else np.zeros(0))
        nacks += st.get("nack.sent", 0)
        rep: dict[str, Any] = {
            "idx": r.idx, "name": r.name, "model": "engine",
            "clock_offset": _r(r.clock.offset), "clock_drift": _r(r.clock.drift),
            "clock_bound": _r(r.d_t), "join": _r(r.join - ep),
            "files_completed": n_files, "complete": done,
            "time_to_complete": _r(t_done) if t_done is not None else None,
            "arrivals": r.arrivals, "bytes_received": r.bytes_rx,
            "authenticated": r.accepted,
            "auth_latency": dist(r.latency),
            "buffer_hwm": r.hwm,
            "nacks_sent": st.get("nack.sent", 0), "feedback_sent": r.nacks_sent,
            "feedback_received": r.feedback_rx,
            "link": dict(r.link.stats),
            "drops": {k: v for k, v in st.items() if "drop." in k and v},
            "stats": st,
        }
        if r.attacked:
            rep["attacker_accepted"] = r.accepted_attacker
            rep["attacker_accepted_after_disclosure"] = r.accepted_after_disclosure
            rep["attacker_unauthenticated_feedback"] = r.attacker_feedback
        rx_reports.append(rep)
    fluid_sum = None
    fluid_max = None
    for fg in sim.fluid:
        for fr in fg.finalize():
            lat = fr.pop("latency")
            all_lat.append(lat)
            fr["auth_latency"] = dist(lat)
            fr["model"] = "fluid"
            for k in ("clock_offset", "clock_drift", "clock_bound", "join", "time_to_complete"):
                if fr[k] is not None:
                    fr[k] = _r(fr[k])
            rx_reports.append(fr)
        ser = fg.series
        fluid_sum = ser["sum"] if fluid_sum is None else fluid_sum + ser["sum"]
        fluid_max = ser["max"] if fluid_max is None else np.maximum(fluid_max, ser["max"])
    rx_reports.sort(key=lambda x: x["idx"])
    for rep in rx_reports:
        for k, v in rep["drops"].items():
            drops[k] = drops.get(k, 0) + v
        bytes_wire += rep["bytes_received"]
        if rep["time_to_complete"] is not None:
            ttc.append(rep["time_to_complete"])
    lat_all = np.concatenate(all_lat) if all_lat else np.zeros(0)
    n = len(rx_reports)
    files_total = sum(x["files_completed"] for x in rx_reports)
    sent = sim.sender_stats["datagrams"]
    n_eng = len(sim.receivers)
    mean = [x * n_eng for x in sim.samples_mean]
    mx = list(sim.samples_max)
    if fluid_sum is not None and fluid_max is not None:
        mean = [a + float(b) for a, b in zip(mean, fluid_sum, strict=True)]
        mx = [max(a, int(b)) for a, b in zip(mx, fluid_max, strict=True)]
    mean = [x / max(1, n) for x in mean]
    agg = {
        "receivers": n,
        "engine_receivers": n_eng,
        "receivers_complete": sum(1 for x in rx_reports if x["complete"]),
        "files_completed": files_total,
        "file_delivery_ratio": _r(files_total / (n * sim.files_expected))
        if n and sim.files_expected else None,
        "packet_delivery_ratio": _r(sum(x["authenticated"] for x in rx_reports) / (n * sent))
        if n and sent else None,
        "time_to_complete": dist(ttc),
        "auth_latency": dist(lat_all),
        "auth_latency_cdf": cdf_points(lat_all),
        "buffer_hwm": dist([x["buffer_hwm"] for x in rx_reports]),
        "drops": dict(sorted(drops.items())),
        "nacks_sent": nacks,
        "nacks_received_by_sender": int(sim.sender.stats.get(
            "rx.nack", sim.sender.stats.get("nack.received", 0))),
        "feedback": dict(sim.feedback_stats),
        "bytes_on_wire": bytes_wire,
        "attacker_injected": sum(a.injected for a in sim.attackers),
        "attacker_accepted": sum(r.accepted_attacker for r in sim.receivers),
        "attacker_accepted_after_disclosure": sum(
            r.accepted_after_disclosure for r in sim.receivers),
        "attacker_unauthenticated_feedback": sum(r.attacker_feedback for r in sim.receivers),
    }
    sender = {
        "datagrams": sent, "bytes": sim.sender_stats["bytes"],
        "auth_overhead_bytes": sim.sender_stats["auth_overhead_bytes"],
        "stats": dict(sorted(sim.sender.stats.items())),
    }
    return {
        "scenario": scn.name, "seed": sim.seed, "protocol": scn.protocol, "auth": scn.auth,
        "adapter": sim.adapter.name,
        "tesla": {"tint": sim.adapter.tint, "d": sim.adapter.d,
                  "max_clock_error": sim.adapter.default_bound},
        "end_time": _r(sim.queue.now - ep), "events": sim.queue.processed,
        "all_complete_at": _r(sim.all_complete_at - ep) if sim.all_complete_at else None,
        "sender": sender,
        "aggregate": agg,
        "attackers": [a.report() for a in sim.attackers],
        "receivers": rx_reports,
        "series": {
            "t": [_r(x) for x in sim.samples_t],
            "buffer_mean": [_r(x) for x in mean],
            "buffer_max": mx,
            "buffer": {str(k): v for k, v in sim.samples.items()},
        },
    }


def dumps(report: dict[str, Any]) -> str:
    return json.dumps(report, indent=1, sort_keys=True, allow_nan=False, default=str)
