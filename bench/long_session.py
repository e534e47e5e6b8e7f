"""A long TESLA session in simulated time (issue 14): 24 h at T_int = 10 ms (8.64 million
intervals, several key chains), receivers joining every hour; figures: chains used,
receivers joined, accepted/dropped per receiver, state size and tracemalloc memory every
simulated hour.  Code: ``tesla/sim/longrun.py``; rules: docs/tesla-choices.md "Long
sessions".

    python bench/long_session.py                      # the full 24 h (minutes)
    python bench/long_session.py --hours 2 --chain-length 59999 --join-every 1200
    python bench/long_session.py --json long.json --no-tracemalloc

Exit status 1 if a receiver missed anything after its first bootstrap (``check``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tesla.sim.longrun import LongSessionConfig, check, run  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    d = LongSessionConfig()
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--hours", type=float, default=d.hours)
    ap.add_argument("--tint", type=int, default=d.tint_ms, metavar="MS")
    ap.add_argument("-d", type=int, default=d.d)
    ap.add_argument("--chain-length", type=int, default=d.chain_length, metavar="N")
    ap.add_argument("--strategy", default=d.strategy, choices=["full", "checkpoint", "fractal"])
    ap.add_argument("--data-period", type=float, default=d.data_period, metavar="S")
    ap.add_argument("--bootstrap-period", type=float, default=d.bootstrap_period, metavar="S")
    ap.add_argument("--join-every", type=float, default=d.join_every, metavar="S")
    ap.add_argument("--join-offset", type=float, default=d.join_offset, metavar="S")
    ap.add_argument("--stay", type=float, default=None, metavar="S",
                    help="seconds each receiver after the first stays (default: to the end)")
    ap.add_argument("--sample-every", type=float, default=d.sample_every, metavar="S")
    ap.add_argument("--no-tracemalloc", action="store_true")
    ap.add_argument("--json", metavar="OUT")
    a = ap.parse_args(argv)
    cfg = LongSessionConfig(
        hours=a.hours, tint_ms=a.tint, d=a.d, chain_length=a.chain_length,
        strategy=a.strategy, data_period=a.data_period, bootstrap_period=a.bootstrap_period,
        join_every=a.join_every, join_offset=a.join_offset, stay=a.stay,
        sample_every=a.sample_every, trace_memory=not a.no_tracemalloc, progress=True)
    res = run(cfg)
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=1))
    print(f"{res['intervals']} intervals of {cfg.tint_ms} ms, N = {cfg.chain_length}, "
          f"d = {cfg.d}, data every {cfg.data_period} s, bootstrap every "
          f"{cfg.bootstrap_period} s; wall {res['wall_s']} s")
    s = res["sender"]
    print(f"chains used: {len(res['chains_used'])} ({res['chains_used'][0]}.."
          f"{res['chains_used'][-1]}); sender datagrams {s['datagrams']} (data {s['data']}, "
          f"fillers {s.get('tesla.key_fill', 0)}, bootstraps {s['bootstraps']}), "
          f"FDT renewed {s['fdt_renewed']}x")
    print(f"receivers joined: {res['receivers_joined']}")
    print("rx  join_h  boot_s  tagged  accepted  buffered_at_end  drops  files  "
          "chains_learned  state_kB first/last/max")
    for r in res["receivers"]:
        sz = r["state_bytes_first_last_max"] or [0, 0, 0]
        ch = r["chains_learned"]
        print(f"{r['receiver']:2d}  {r['join_h']:6.2f}  {r['first_bootstrap_after_s']!s:>6}  "
              f"{r['tagged_after_join']:6d}  {r['accepted']:8d}  {r['still_buffered']:15d}  "
              f"{r['drops'] or '-'!s:5}  {r['files']:5d}  "
              f"{(str(ch[0]) + '..' + str(ch[-1])) if ch else '-':>14}  "
              f"{sz[0] / 1e3:.0f}/{sz[1] / 1e3:.0f}/{sz[2] / 1e3:.0f}")
    print("hour  sender_state_kB  sender_chains_held  receivers  rx_state_kB_max"
          + ("  tracemalloc_MB cur/peak" if cfg.trace_memory else ""))
    for row in res["samples"]:
        rx = row["receivers"]
        line = (f"{row['hour']:5.1f}  {row['sender_bytes'] / 1e3:15.1f}  "
                f"{row['sender_chains_held']:18d}  {len(rx):9d}  "
                f"{max(rx.values(), default=0) / 1e3:15.1f}")
        if cfg.trace_memory:
            line += (f"  {row['tracemalloc_current'] / 1e6:.1f}/"
                     f"{row['tracemalloc_peak'] / 1e6:.1f}")
        print(line)
    bad = check(res)
    for b in bad:
        print("FAIL:", b)
    print("every receiver authenticated everything after its first bootstrap" if not bad
          else f"{len(bad)} failures")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
