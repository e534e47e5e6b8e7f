"""Simulator core without the protocol engines: queue, seeds, clocks, links, and the toy
TESLA-like protocol end to end (determinism, attackers, feedback)."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

import pytest

from tesla.sim.core import EventQueue, LocalClock, derive_seed, make_rng
from tesla.sim.links import Link, LinkConfig, LossConfig
from tesla.sim.network import Simulation
from tesla.sim.report import dumps
from tesla.sim.scenario import ATTACK_KINDS, Scenario, set_path

EPOCH = 1767225600.0


def test_event_queue_orders_by_time_then_insertion() -> None:
    q = EventQueue(EPOCH)
    out: list[str] = []
    for name, t in [("c", 2.0), ("a", 1.0), ("b", 1.0), ("d", 1.0), ("e", 0.5)]:
        q.schedule(EPOCH + t, out.append, name)
    q.run(EPOCH + 1.5)
    assert out == ["e", "a", "b", "d"]
    assert q.now == EPOCH + 1.0
    q.run(EPOCH + 10)
    assert out[-1] == "c"


def test_event_queue_never_goes_back() -> None:
    q = EventQueue(EPOCH)
    seen: list[float] = []

    def cb() -> None:
        seen.append(q.now)
        if len(seen) < 3:
            q.schedule(q.now - 5.0, cb)  # in the past: runs now

    q.schedule(EPOCH + 1, cb)
    q.run(EPOCH + 2)
    assert seen == [EPOCH + 1] * 3


def test_seeds_are_stable_and_independent() -> None:
    assert derive_seed(1, "link", 3) == derive_seed(1, "link", 3)
    assert derive_seed(1, "link", 3) != derive_seed(1, "link", 4)
    assert derive_seed(1, "link", 3) != derive_seed(2, "link", 3)
    assert make_rng(7, "x").random() == make_rng(7, "x").random()


def test_local_clock_offset_and_drift() -> None:
    c = LocalClock(EPOCH, offset=-0.25, drift=1e-4)
    t = EPOCH + 100.0
    assert c.local(t) == pytest.approx(EPOCH + 100.0 * (1 + 1e-4) - 0.25)
    assert c.true(c.local(t)) == pytest.approx(t, abs=1e-9)
    assert c.error(EPOCH) == pytest.approx(-0.25)


def _arrivals(cfg: LinkConfig, n: int = 20000, seed: int = 1) -> tuple[Link, list[list[float]]]:
    link = Link(cfg, make_rng(seed, "t"))
    return link, [link.transmit(EPOCH + k * 1e-3, 1000) for k in range(n)]


def test_bernoulli_loss_rate() -> None:
    link, arr = _arrivals(LinkConfig(loss=LossConfig(kind="bernoulli", p=0.1)))
    lost = sum(1 for a in arr if not a)
    assert abs(lost / len(arr) - 0.1) < 0.01
    assert link.stats["lost"] == lost


def test_gilbert_elliott_bursts() -> None:
    lc = LossConfig(kind="gilbert", p_gb=0.02, p_bg=0.25, loss_good=0.0, loss_bad=1.0)
    _, arr = _arrivals(LinkConfig(loss=lc), n=100000)
    lost = [not a for a in arr]
    assert abs(sum(lost) / len(lost) - lc.mean_loss()) < 0.01
    bursts, run = [], 0
    for x in lost:
        if x:
            run += 1
        elif run:
            bursts.append(run)
            run = 0
    assert abs(statistics.mean(bursts) - 1 / lc.p_bg) < 0.3  # mean burst 1/p_bg = 4


def test_trace_loss_is_exact_and_cyclic() -> None:
    _, arr = _arrivals(LinkConfig(loss=LossConfig(kind="trace", pattern="0010 1")), n=10)
    assert [not a for a in arr] == [False, False, True, False, True] * 2


@pytest.mark.parametrize("kind,mean", [("uniform", 0.005), ("exponential", 0.01),
                                       ("normal", 0.01 * math.sqrt(2 / math.pi))])
def test_jitter_distributions(kind: str, mean: float) -> None:
    _, arr = _arrivals(LinkConfig(delay=0.02, jitter=kind, jitter_s=0.01), n=20000)
    extra = [a[0] - (EPOCH + k * 1e-3) - 0.02 for k, a in enumerate(arr)]
    assert min(extra) >= -1e-6  # float resolution at POSIX-epoch scale is ~2e-7 s
    assert statistics.mean(extra) == pytest.approx(mean, rel=0.05)


def test_reordering_and_duplication() -> None:
    link, arr = _arrivals(LinkConfig(delay=0.01, reorder=0.1, reorder_delay=0.005,
                                     duplicate=0.05))
    flat = [t for a in arr for t in a]
    inversions = sum(1 for x, y in zip(flat, flat[1:], strict=False) if y < x)
    assert inversions > 1000
    assert abs(sum(len(a) == 2 for a in arr) / len(arr) - 0.05) < 0.01
    assert link.stats["delivered"] == len(flat)


def test_bandwidth_queue_spacing_and_drop_tail() -> None:
    cfg = LinkConfig(delay=0.0, bandwidth=8e6, queue_bytes=10_000)  # 1 ms per 1000 B
    link = Link(cfg, make_rng(1, "bw"))
    out = [link.transmit(EPOCH, 1000) for _ in range(20)]  # a burst of 20 at once
    got = [a[0] - EPOCH for a in out if a]
    assert got[:3] == pytest.approx([0.001, 0.002, 0.003], abs=1e-6)
    assert len(got) == 10 and link.stats["queue_drop"] == 10


# ------------------------------------------------------------------ toy protocol end to end
def toy(**over: object) -> dict:
    d: dict = {"name": "toy", "protocol": "toy", "duration": 20.0,
               "sender": {"files": [60_000], "rate_pps": 2000, "symbol_size": 1000,
                          "block_length": 16},
               "tesla": {"tint": 0.1, "d": 2, "max_clock_error": 0.005,
                         "bootstrap_period": 0.3},
               "receivers": [{"count": 4, "link": {"delay": 0.02, "jitter": "uniform",
                                                    "jitter_s": 0.004}}]}
    for k, v in over.items():
        d = set_path(d, k, v)
    return d


def run(d: dict, seed: int | None = None) -> dict:
    return Simulation(Scenario.from_dict(d), seed=seed).run()


def test_toy_determinism_same_seed_same_bytes() -> None:
    d = toy(**{"receivers.0.link.loss": 0.05})
    a, b = dumps(run(d, 3)), dumps(run(d, 3))
    assert a == b
    assert dumps(run(d, 4)) != a
    json.loads(a)


def test_toy_delivery_falls_with_loss_and_fec_recovers() -> None:
    def ratio(loss: float, fec: str) -> float:
        d = toy(**{"receivers.0.count": 10, "receivers.0.link.loss": loss,
                   "sender.fec": fec, "sender.repair_ratio": 0.5})
        return run(d)["aggregate"]["file_delivery_ratio"]

    assert ratio(0.0, "nocode") == 1.0
    assert ratio(0.05, "nocode") < 0.3
    assert ratio(0.05, "rs") == 1.0


@pytest.mark.parametrize("kind", ATTACK_KINDS)
def test_toy_attackers_accept_nothing(kind: str) -> None:
    d = toy(**{"attackers": [{"kind": kind, "rate": 200.0}],
               "receivers": [{"count": 2, "link": {"delay": 0.02}},
                             {"count": 1, "join": 0.4, "link": {"delay": 0.02}}]})
    rep = run(d)
    agg = rep["aggregate"]
    assert agg["attacker_injected"] > 0
    assert agg["attacker_accepted"] == 0


def test_toy_nack_feedback_repairs() -> None:
    d = toy(**{"receivers.0.link.loss": 0.05, "feedback": {"enabled": True}})
    rep = run(d)
    agg = rep["aggregate"]
    assert agg["nacks_sent"] > 0 and agg["nacks_received_by_sender"] > 0
    assert agg["file_delivery_ratio"] == 1.0
    no_fb = run(toy(**{"receivers.0.link.loss": 0.05}))["aggregate"]
    assert no_fb["file_delivery_ratio"] < 1.0


TOY_TOML = """
name = "toy-cli"
protocol = "toy"
duration = 10.0
[sender]
files = [30000]
rate_pps = 2000
[tesla]
tint = 0.1
d = 2
max_clock_error = 0.005
[[receivers]]
count = 3
link = { delay = 0.02, loss = 0.0 }
"""


def test_cli_sweep_plots_and_errors(tmp_path: Path) -> None:
    from tesla.sim.cli import simulate_main

    f = tmp_path / "toy.toml"
    f.write_text(TOY_TOML)
    out = tmp_path / "sweep.json"
    rc = simulate_main([str(f), "--sweep", "receivers.0.link.loss=0,0.2", "--metric",
                        "file_delivery_ratio", "--plot", str(tmp_path / "p"), "--json",
                        str(out), "-q"])
    assert rc == 0
    res = json.loads(out.read_text())
    ys = [r["metrics"]["file_delivery_ratio"] for r in res["rows"]]
    assert ys[0] == 1.0 and ys[1] < 1.0
    assert (tmp_path / "p" / "sweep_receivers_0_link_loss.png").stat().st_size > 1000
    rc = simulate_main([str(f), "--plot", str(tmp_path / "q"), "--set",
                        "receivers.0.clock.offset_uniform=[-0.01, 0.01]", "-q"])
    assert rc == 0
    names = sorted(p.name for p in (tmp_path / "q").iterdir())
    assert names == ["auth_latency_cdf.png", "buffer_occupancy.png",
                     "unsafe_vs_clock_error.png"]
    bad = tmp_path / "bad.toml"
    bad.write_text(TOY_TOML + "\nbogus = 1\n")
    assert simulate_main([str(bad), "-q"]) == 2
    assert simulate_main(["--list-presets"]) == 0


def test_scenario_file_with_preset_and_relative_trace(tmp_path: Path) -> None:
    from tesla.sim.scenario import load

    (tmp_path / "loss.trace").write_text("0000000001\n")
    f = tmp_path / "s.toml"
    f.write_text('preset = "quick"\nname = "mine"\n[[receivers]]\ncount = 2\n'
                 'link = { delay = 0.01, loss = { kind = "trace", trace = "loss.trace" } }\n')
    scn = load(f)
    assert scn.name == "mine" and scn.protocol == "alc" and scn.n_receivers == 2
    assert scn.receivers[0].link.loss.trace == str(tmp_path / "loss.trace")
    link = Link(scn.receivers[0].link, make_rng(1, "x"))
    assert [bool(link.transmit(EPOCH, 10)) for _ in range(10)] == [True] * 9 + [False]
