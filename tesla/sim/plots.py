"""Matplotlib plots (Agg backend, files only) from reports and sweeps."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    # no timestamp metadata: the same run gives the same file
    fig.savefig(path, dpi=100, metadata={"Software": None})
    plt.close(fig)
    return path


def auth_latency_cdf(report: dict[str, Any], path: Path) -> Path:
    cdf = report["aggregate"]["auth_latency_cdf"]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot([x * 1000 for x in cdf["x"]], cdf["q"], lw=2)
    t = report["tesla"]
    for k in (1, 2, 3):
        if k <= t["d"] + 1:
            ax.axvline(k * t["tint"] * 1000, color="grey", ls=":", lw=1)
    ax.set_xlabel("authentication latency, arrival to release (ms)")
    ax.set_ylabel("CDF")
    ax.set_title(f"{report['scenario']}: auth latency, Tint={t['tint'] * 1000:g} ms, d={t['d']}"
                 f" ({report['aggregate']['auth_latency'].get('n', 0)} packets)")
    ax.grid(alpha=0.3)
    return _save(fig, path)


def buffer_occupancy(report: dict[str, Any], path: Path) -> Path:
    s = report["series"]
    fig, ax = plt.subplots(figsize=(6, 4))
    for k, v in list(s["buffer"].items())[:5]:
        ax.plot(s["t"], v, lw=1, label=f"receiver {k}")
    ax.plot(s["t"], s["buffer_mean"], lw=2, color="k", label="mean (all)")
    ax.plot(s["t"], s["buffer_max"], lw=1, color="r", ls="--", label="max (all)")
    busy = [t for t, m in zip(s["t"], s["buffer_max"], strict=True) if m]
    if busy:
        ax.set_xlim(0, busy[-1] * 1.1 + 0.1)
    ax.set_xlabel("time since epoch (s)")
    ax.set_ylabel("packets buffered awaiting their key")
    ax.set_title(f"{report['scenario']}: TESLA receiver buffer occupancy")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def unsafe_vs_clock(report: dict[str, Any], path: Path) -> Path:
    rx = report["receivers"]
    x = [r["clock_offset"] * 1000 for r in rx]
    y = [sum(v for k, v in r["drops"].items() if k.endswith("drop.unsafe")) for r in rx]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.scatter(x, y, s=12)
    ax.set_xlabel("receiver clock offset (ms, + = ahead of the sender)")
    ax.set_ylabel("packets dropped as unsafe")
    ax.set_title(f"{report['scenario']}: unsafe drops vs clock error")
    ax.grid(alpha=0.3)
    return _save(fig, path)


def sweep_plot(param: str, rows: list[dict[str, Any]], metrics: list[str], path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(6, 4))
    xs = [r["value"] for r in rows]
    for m in metrics:
        ax.plot(xs, [r["metrics"].get(m) for r in rows], marker="o", label=m)
    ax.set_xlabel(param)
    ax.set_title(f"sweep of {param}")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def plot_report(report: dict[str, Any], outdir: Path) -> list[Path]:
    outdir.mkdir(parents=True, exist_ok=True)
    out = [auth_latency_cdf(report, outdir / "auth_latency_cdf.png"),
           buffer_occupancy(report, outdir / "buffer_occupancy.png")]
    offs = {r["clock_offset"] for r in report["receivers"]}
    if len(offs) > 1:
        out.append(unsafe_vs_clock(report, outdir / "unsafe_vs_clock_error.png"))
    return out
