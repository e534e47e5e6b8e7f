"""Regenerate the example plots and figures of docs/sim/README.md.

    python docs/sim/make_plots.py            # writes docs/sim/*.png and docs/sim/results.json
    python docs/sim/make_plots.py --big-report big.json --big-wall 290
        # reuse the report of a timed `tesla-mcast simulate scenarios/big-1000.toml --json
        # big.json` run (the all-engine 1000-receiver run takes minutes)

Everything but the wall-clock timings is deterministic (seeded scenarios).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from tesla.sim.cli import metric, run_scenario  # noqa: E402
from tesla.sim.plots import auth_latency_cdf, buffer_occupancy, unsafe_vs_clock  # noqa: E402
from tesla.sim.scenario import load_dict, set_path  # noqa: E402

HERE = Path(__file__).resolve().parent
SCN = HERE.parents[1] / "scenarios"


def save(fig: plt.Figure, name: str) -> None:
    fig.tight_layout()
    fig.savefig(HERE / name, dpi=100, metadata={"Software": None})
    plt.close(fig)


def main() -> int:
    results: dict[str, object] = {}
    # 1. the 1000-receiver run
    args = sys.argv[1:]
    if "--big-report" in args:
        rep = json.loads(Path(args[args.index("--big-report") + 1]).read_text())
        wall = float(args[args.index("--big-wall") + 1]) if "--big-wall" in args else 0.0
    else:
        t = time.perf_counter()
        rep, _ = run_scenario(load_dict(SCN / "big-1000.toml"))
        wall = time.perf_counter() - t
    agg = rep["aggregate"]
    results["big-1000"] = {"wall_s": round(wall, 1), "aggregate": {
        k: agg[k] for k in ("receivers", "engine_receivers", "receivers_complete",
                            "file_delivery_ratio", "auth_latency", "time_to_complete",
                            "buffer_hwm", "drops", "bytes_on_wire")},
        "sender": rep["sender"], "events": rep["events"]}
    auth_latency_cdf(rep, HERE / "auth_latency_cdf.png")
    buffer_occupancy(rep, HERE / "buffer_occupancy.png")
    print(f"big-1000: {wall:.1f} s", file=sys.stderr)

    # 2. unsafe drops versus clock error
    rep, _ = run_scenario(load_dict(SCN / "clock-error.toml"))
    unsafe_vs_clock(rep, HERE / "unsafe_vs_clock_error.png")
    results["clock-error"] = {"receivers_complete": rep["aggregate"]["receivers_complete"],
                              "drops": rep["aggregate"]["drops"]}

    # 3. delivery ratio versus loss, without and with FEC
    base = load_dict(SCN / "loss-sweep.toml")
    values = base.pop("sweep")["values"]
    fig, ax = plt.subplots(figsize=(6, 4))
    rows: dict[str, list[float]] = {}
    for fec in ("nocode", "rs"):
        ys = []
        for v in values:
            d = set_path(set_path(base, "sender.fec", fec), "receivers.0.link.loss", v)
            ys.append(metric(run_scenario(d)[0], "file_delivery_ratio"))
        rows[fec] = ys
        label = "no FEC (Compact No-Code)" if fec == "nocode" else "Reed-Solomon, 30% repair"
        ax.plot([100 * v for v in values], ys, marker="o", label=label)
    ax.set_xlabel("Bernoulli loss rate (%)")
    ax.set_ylabel("file delivery ratio (50 receivers)")
    ax.set_title("delivery ratio vs loss: ALC+TESLA, 200 kB file")
    ax.grid(alpha=0.3)
    ax.legend()
    save(fig, "delivery_vs_loss.png")
    results["delivery_vs_loss"] = {"loss": values, **rows}

    # 4. the delay attack versus the receiver's real clock lag (bound 10 ms)
    base = load_dict(SCN / "delay-attack.toml")
    sweep = base.pop("sweep")
    lags, acc, unsafe, inj = [], [], [], []
    for v in sweep["values"]:
        rep, _ = run_scenario(set_path(base, sweep["param"], v))
        lags.append(-v * 1000)
        acc.append(metric(rep, "attacker_accepted_after_disclosure"))
        unsafe.append(metric(rep, "drops:unsafe"))
        inj.append(metric(rep, "attacker_injected"))
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(lags, [a / i for a, i in zip(acc, inj, strict=True)], marker="o",
            label="delayed packets accepted after their key was public")
    ax.plot(lags, [min(1.0, u / i) for u, i in zip(unsafe, inj, strict=True)], marker="x",
            label="dropped as unsafe (fraction of delayed)")
    ax.axvline(10, color="r", ls="--", lw=1, label="configured bound D_t = 10 ms")
    ax.set_xscale("symlog", linthresh=10)
    ax.set_xlabel("receiver clock lag behind the sender (ms)")
    ax.set_ylabel("fraction of delayed packets")
    ax.set_title("TESLA delay attack vs real clock error")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    save(fig, "delay_attack_vs_clock_lag.png")
    results["delay_attack"] = {"lag_ms": lags, "accepted_after_disclosure": acc,
                               "unsafe": unsafe, "injected": inj}
    (HERE / "results.json").write_text(json.dumps(results, indent=1, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
