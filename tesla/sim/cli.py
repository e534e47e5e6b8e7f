"""``tesla-mcast simulate SCENARIO.toml [--seed S] [--json OUT] [--plot DIR] [--pcap OUT]``.

SCENARIO is a TOML file or a preset name (``quick``, ``big``, ``attacks``, ``norm-bursts``;
``--list-presets``).  ``--set path=value`` overrides one scenario value (TOML syntax for the
value, dotted path, list indices as numbers: ``receivers.0.link.loss.p=0.05``).
``--sweep path=v1,v2,...`` runs once per value and plots the chosen ``--metric``s against it.
The JSON report depends only on the scenario and the seed (no wall clock).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

from tesla.sim.network import Simulation
from tesla.sim.report import dumps
from tesla.sim.scenario import PRESETS, Scenario, load_dict, set_path

DEFAULT_METRICS = ["file_delivery_ratio", "packet_delivery_ratio"]
GROUP = ("239.255.77.1", 4000)
SRC = ("10.0.0.1", 4000)


def _value(text: str) -> Any:
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def metric(report: dict[str, Any], name: str) -> Any:
    """``aggregate`` key, or a dotted path into the report, or ``drops:<reason>``."""
    agg = report["aggregate"]
    if name.startswith("drops:"):
        reason = name[6:]
        return sum(v for k, v in agg["drops"].items() if k.endswith("drop." + reason))
    cur: Any = agg if name in agg else report
    for part in name.split("."):
        cur = cur.get(part) if isinstance(cur, dict) else None
    return cur


def run_scenario(d: dict[str, Any], seed: int | None = None,
                 pcap_receiver: int | None = None) -> tuple[dict[str, Any], Simulation]:
    scn = Scenario.from_dict(d)
    sim = Simulation(scn, seed=seed, pcap_receiver=pcap_receiver)
    return sim.run(), sim


def write_pcap(sim: Simulation, path: str) -> int:
    from alc.pcap import PcapWriter

    with PcapWriter(path) as w:
        for ts, data, _origin in sim.pcap_records:
            w.write(ts, SRC, GROUP, data)
    return len(sim.pcap_records)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tesla-mcast simulate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("scenario", nargs="?", help="scenario TOML file or preset name")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--json", metavar="OUT", help="write the JSON report ('-' = stdout)")
    p.add_argument("--plot", metavar="DIR", help="write PNG plots into DIR")
    p.add_argument("--pcap", metavar="OUT", help="capture of what --pcap-receiver saw")
    p.add_argument("--pcap-receiver", type=int, default=None,
                   help="receiver index for --pcap (default: output.pcap_receiver or 0)")
    p.add_argument("--sender-pub", metavar="OUT",
                   help="write the simulated sender's public key (PEM) for receive --sender-key")
    p.add_argument("--set", action="append", default=[], metavar="PATH=VALUE")
    p.add_argument("--sweep", metavar="PATH=V1,V2,...")
    p.add_argument("--metric", action="append", default=None,
                   help="sweep metric (aggregate key, dotted report path or drops:REASON)")
    p.add_argument("--list-presets", action="store_true")
    p.add_argument("-q", "--quiet", action="store_true")
    return p


def summary_line(rep: dict[str, Any]) -> str:
    a = rep["aggregate"]
    lat = a["auth_latency"]
    drops = ", ".join(f"{k}={v}" for k, v in a["drops"].items() if v) or "none"
    return (f"{rep['scenario']}: {a['receivers_complete']}/{a['receivers']} receivers complete, "
            f"file delivery {a['file_delivery_ratio']}, auth latency p50 "
            f"{lat.get('p50', 0) * 1000:.1f} ms p99 {lat.get('p99', 0) * 1000:.1f} ms, "
            f"buffer hwm max {a['buffer_hwm'].get('max')}, NACKs {a['nacks_sent']}, "
            f"attacker accepted {a['attacker_accepted']}/{a['attacker_injected']}, "
            f"drops {drops}")


def plots_available() -> bool:
    """True when the plotting module (the ``sim`` extra: matplotlib) imports; checked
    before the simulation runs, so a missing extra costs one line, not a traceback."""
    try:
        import tesla.sim.plots  # noqa: F401
    except ModuleNotFoundError as e:
        if (e.name or "").split(".")[0] != "matplotlib":
            raise
        return False
    return True


def simulate_main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.list_presets:
        for name, d in PRESETS.items():
            print(f"{name}: {d.get('protocol')} {Scenario.from_dict(d).n_receivers} receivers")
        return 0
    if not args.scenario:
        print("error: a scenario file or preset name is required", file=sys.stderr)
        return 2
    try:
        d = load_dict(args.scenario)
        for item in args.set:
            path, _, val = item.partition("=")
            d = set_path(d, path, _value(val))
        Scenario.from_dict(d)  # validate early
    except (OSError, ValueError, KeyError, TypeError, tomllib.TOMLDecodeError) as e:
        print(f"error: scenario {args.scenario}: {e}", file=sys.stderr)
        return 2
    if args.sender_pub:
        from tesla.sim.real import write_public_key

        write_public_key(args.sender_pub)
    out_dir = Path(args.plot) if args.plot else None
    if out_dir is not None and not plots_available():
        print("error: --plot needs matplotlib: pip install 'tesla-alc-norm[sim]'", file=sys.stderr)
        return 2
    sweep = args.sweep or (d.get("sweep", {}).get("param") and
                           f"{d['sweep']['param']}=" + ",".join(map(str, d["sweep"]["values"])))
    wall0 = time.perf_counter()  # wall time only for the console, never in the report
    if sweep:
        path, _, vals = sweep.partition("=")
        metrics = args.metric or d.get("sweep", {}).get("metrics") or DEFAULT_METRICS
        rows = []
        for v in [_value(x) for x in vals.split(",")]:
            rep, _ = run_scenario(set_path(d, path, v), args.seed)
            agg = {k: x for k, x in rep["aggregate"].items() if k != "auth_latency_cdf"}
            rows.append({"value": v, "metrics": {m: metric(rep, m) for m in metrics},
                         "aggregate": agg})
            if not args.quiet:
                print(f"{path}={v}: " + ", ".join(f"{m}={metric(rep, m)}" for m in metrics),
                      file=sys.stderr)
        result: dict[str, Any] = {"sweep": path, "metrics": metrics, "rows": rows,
                                  "scenario": d.get("name", "scenario")}
        text = json.dumps(result, indent=1, sort_keys=True, default=str)
        if out_dir is not None:
            from tesla.sim.plots import sweep_plot

            out_dir.mkdir(parents=True, exist_ok=True)
            safe = path.replace(".", "_")
            sweep_plot(path, rows, metrics, out_dir / f"sweep_{safe}.png")
    else:
        prx = args.pcap_receiver
        if args.pcap and prx is None:
            prx = int(d.get("output", {}).get("pcap_receiver", 0))
        rep, sim = run_scenario(d, args.seed, prx if args.pcap else None)
        text = dumps(rep)
        if args.pcap:
            n = write_pcap(sim, args.pcap)
            if not args.quiet:
                print(f"pcap: {n} datagrams seen by receiver {prx} -> {args.pcap}",
                      file=sys.stderr)
        if out_dir is not None:
            from tesla.sim.plots import plot_report

            plot_report(rep, out_dir)
        if not args.quiet:
            print(summary_line(rep), file=sys.stderr)
    if args.json == "-":
        print(text)
    elif args.json:
        Path(args.json).write_text(text + "\n")
    if not args.quiet:
        print(f"(wall time {time.perf_counter() - wall0:.2f} s)", file=sys.stderr)
    return 0


def main() -> None:
    sys.exit(simulate_main(sys.argv[1:]))


if __name__ == "__main__":
    main()
