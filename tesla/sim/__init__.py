"""Deterministic discrete-event simulator driving the real sans-I/O engines (ALC/FLUTE,
NORM, TESLA) in virtual time: links with loss/delay/jitter/reordering/duplication/bandwidth,
receiver clocks with offset and drift, late joiners, attackers, reports and plots.

Entry point: :func:`tesla.sim.cli.simulate_main` (``tesla-mcast simulate``).
See ``docs/sim/README.md``.
"""

from tesla.sim.core import EventQueue, LocalClock, derive_seed, make_rng
from tesla.sim.links import Link, LinkConfig, LossConfig
from tesla.sim.network import Simulation
from tesla.sim.scenario import PRESETS, Scenario

__all__ = ["EventQueue", "Link", "LinkConfig", "LocalClock", "LossConfig", "PRESETS",
           "Scenario", "Simulation", "derive_seed", "make_rng"]


def simulate_main(argv: list[str] | None = None) -> int:
    from tesla.sim.cli import simulate_main as _main

    return _main(argv)
