"""Scenario description: TOML files (``tomllib``) and named presets.

A scenario is a plain dict tree validated into :class:`Scenario`.  Layout::

    name = "lossy"            seed = 1            epoch = 1767225600.0
    duration = 30.0           # virtual seconds before the run is cut
    protocol = "alc"          # "alc" | "norm" | "toy"
    auth = true
    [sender]                  # files = [sizes in bytes], rate (bit/s), symbol_size, ...
    [tesla]                   # tint (s), d, chain_length, mac, max_clock_error (s), ...
    [[receivers]]             # a group: count, link = {...}, clock = {...}, join, ...
    [feedback]                # enabled, link = {...}, to_receivers
    [[attackers]]             # kind, targets, start, stop, rate, ...
    [output]                  # pcap_receiver, sample_interval, trace_receivers
"""

from __future__ import annotations

import copy
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tesla.sim.core import DEFAULT_EPOCH
from tesla.sim.links import LinkConfig

ATTACK_KINDS = ("flood", "replay", "delay", "key_spoof", "bootstrap_spoof", "modify")


@dataclass
class ClockSpec:
    offset: float = 0.0
    drift: float = 0.0
    offset_uniform: tuple[float, float] | None = None  # per-receiver U[lo, hi] added
    drift_uniform: tuple[float, float] | None = None

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> ClockSpec:
        d = dict(d or {})
        for k in ("offset_uniform", "drift_uniform"):
            if d.get(k) is not None:
                d[k] = tuple(float(x) for x in d[k])
        return cls(**d)


@dataclass
class ReceiverGroup:
    count: int = 1
    link: LinkConfig = field(default_factory=LinkConfig)
    clock: ClockSpec = field(default_factory=ClockSpec)
    join: float = 0.0  # seconds after the epoch
    max_clock_error: float | None = None  # D_t bound configured at the receiver
    name: str = ""

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ReceiverGroup:
        d = dict(d)
        link = LinkConfig.from_dict(d.pop("link", None))
        clock = ClockSpec.from_dict(d.pop("clock", None))
        return cls(link=link, clock=clock, **d)


@dataclass
class AttackerSpec:
    kind: str
    targets: list[int] | str = "all"
    start: float = 0.0
    stop: float = 1e9
    rate: float = 100.0  # flood / spoof packets per second
    probability: float = 1.0  # modify: fraction of packets altered
    hold: float | None = None  # delay/replay: fixed hold (s); None = until key disclosed
    extra: float = 0.0  # delay: release this long after the key became public
    link: LinkConfig = field(default_factory=lambda: LinkConfig(delay=0.001))
    name: str = ""

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AttackerSpec:
        d = dict(d)
        if d.get("kind") not in ATTACK_KINDS:
            raise ValueError(f"attacker kind must be one of {ATTACK_KINDS}, got {d.get('kind')!r}")
        link = LinkConfig.from_dict(d.pop("link", None) or {"delay": 0.001})
        return cls(link=link, **d)


@dataclass
class Scenario:
    name: str = "scenario"
    seed: int = 1
    epoch: float = DEFAULT_EPOCH
    duration: float = 60.0
    protocol: str = "alc"
    auth: bool = True
    sender: dict[str, Any] = field(default_factory=dict)
    tesla: dict[str, Any] = field(default_factory=dict)
    receivers: list[ReceiverGroup] = field(default_factory=lambda: [ReceiverGroup()])
    feedback: dict[str, Any] = field(default_factory=dict)
    attackers: list[AttackerSpec] = field(default_factory=list)
    output: dict[str, Any] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Scenario:
        raw = copy.deepcopy(d)
        d = dict(d)
        groups = d.pop("receivers", None) or [{}]
        if isinstance(groups, dict):
            groups = [groups]
        attackers = d.pop("attackers", None) or []
        known = set(cls.__dataclass_fields__) - {"receivers", "attackers", "raw"}
        unknown = set(d) - known - {"sweep", "description"}
        if unknown:
            raise ValueError(f"unknown scenario keys: {sorted(unknown)}")
        d.pop("sweep", None)
        d.pop("description", None)
        scn = cls(
            receivers=[ReceiverGroup.from_dict(g) for g in groups],
            attackers=[AttackerSpec.from_dict(a) for a in attackers],
            raw=raw,
            **d,
        )
        if scn.protocol not in ("alc", "norm", "toy"):
            raise ValueError(f"protocol must be alc, norm or toy, got {scn.protocol!r}")
        return scn

    @property
    def n_receivers(self) -> int:
        return sum(g.count for g in self.receivers)

    def tesla_param(self, key: str, default: Any) -> Any:
        return self.tesla.get(key, default)


def deep_update(base: dict[str, Any], upd: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in upd.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_update(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def set_path(d: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """Return a copy of ``d`` with the dotted ``path`` set (``receivers.0.link.loss.p``)."""
    out = copy.deepcopy(d)
    cur: Any = out
    parts = path.split(".")
    for p in parts[:-1]:
        if isinstance(cur, list):
            cur = cur[int(p)]
        else:
            if p not in cur or cur[p] is None:
                cur[p] = {}
            cur = cur[p]
    last = parts[-1]
    if isinstance(cur, list):
        cur[int(last)] = value
    else:
        cur[last] = value
    return out


PRESETS: dict[str, dict[str, Any]] = {
    # small, quick, every feature off: a smoke test of the whole stack
    "quick": {
        "name": "quick",
        "protocol": "alc",
        "duration": 20.0,
        "sender": {"files": [200_000], "rate": 8_000_000, "symbol_size": 1000,
                   "fec": "rs", "repair_ratio": 0.25},
        "tesla": {"tint": 0.1, "d": 2, "max_clock_error": 0.005},
        "receivers": [
            {
                "count": 5,
                "link": {"delay": 0.02, "loss": 0.01, "jitter": "uniform", "jitter_s": 0.005},
            }
        ],
    },
    # 1000 receivers, 10 MB, 1% Bernoulli loss with FEC repair: the scale benchmark.
    # 10 receivers run the real engines, 990 the bulk model (tesla.sim.fluid).
    "big": {
        "name": "big", "protocol": "alc", "duration": 120.0,
        "sender": {"files": [10_000_000], "rate": 80_000_000, "symbol_size": 1400,
                   "fec": "rs", "block_length": 64, "repair_ratio": 0.1},
        "tesla": {"tint": 0.1, "d": 2, "max_clock_error": 0.005},
        "receivers": [{"count": 1000, "link": {"delay": 0.03, "loss": 0.01},
                       "clock": {"offset_uniform": [-0.004, 0.004]}}],
        "output": {"engine_receivers": 10, "trace_receivers": 10},
    },
    # every attacker at once against correctly configured receivers
    "attacks": {
        "name": "attacks",
        "protocol": "alc",
        "duration": 20.0,
        "sender": {"files": [100_000], "rate": 4_000_000, "symbol_size": 1000,
                   "carousel": 8},
        "tesla": {"tint": 0.1, "d": 2, "max_clock_error": 0.005, "bootstrap_period": 0.3},
        "receivers": [
            {"count": 3, "link": {"delay": 0.02}},
            {"count": 1, "join": 0.6, "name": "late", "link": {"delay": 0.02}},
        ],
        "attackers": [{"kind": k} for k in ATTACK_KINDS if k not in ("delay", "modify")]
        + [
            {"kind": "delay", "targets": [0]},
            {"kind": "modify", "targets": [1], "probability": 0.2},
        ],
    },
    # burst loss with NORM NACK repair over the feedback path
    "norm-bursts": {
        "name": "norm-bursts",
        "protocol": "norm",
        "duration": 30.0,
        "sender": {"files": [500_000], "rate": 8_000_000, "symbol_size": 1000},
        "tesla": {"tint": 0.1, "d": 2, "max_clock_error": 0.005},
        "receivers": [
            {
                "count": 20,
                "link": {
                    "delay": 0.02,
                    "loss": {"kind": "gilbert", "p_gb": 0.01, "p_bg": 0.3, "loss_bad": 0.8},
                },
            }
        ],
        "feedback": {"enabled": True, "link": {"delay": 0.02}},
    },
}


def load(source: str | Path) -> Scenario:
    """A preset name (``preset:NAME`` or a bare preset name) or a TOML file path."""
    return Scenario.from_dict(load_dict(source))


def _resolve_traces(d: dict[str, Any], base: Path) -> None:
    """Loss trace paths in a scenario file are relative to that file."""
    for g in d.get("receivers", []) or []:
        loss = (g.get("link") or {}).get("loss")
        if isinstance(loss, dict) and loss.get("trace") and not Path(loss["trace"]).is_absolute():
            loss["trace"] = str(base / loss["trace"])


def load_dict(source: str | Path) -> dict[str, Any]:
    """The scenario as a plain dict: a preset, or a TOML file (``preset = NAME`` inside it
    starts from that preset and overrides it)."""
    s = str(source)
    name = s[len("preset:") :] if s.startswith("preset:") else s
    if name in PRESETS and not Path(s).exists():
        return copy.deepcopy(PRESETS[name])
    with open(s, "rb") as f:
        d = tomllib.load(f)
    base = d.pop("preset", None)
    if base is not None:
        d = deep_update(PRESETS[base], d)
    _resolve_traces(d, Path(s).resolve().parent)
    return d
