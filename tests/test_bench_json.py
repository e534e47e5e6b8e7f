"""``tesla-mcast bench --json``: the object's keys and their meaning (issue 12).

The assembly (:func:`tesla.cli.bench.json_report`) is tested on injected measurements
(fast, no timing); one slow test runs the command itself in its quick form and checks
that stdout is one JSON object with every key numeric.  No figure is checked against a
target here: speed targets live in bench/, not in tests.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tesla.cli.bench import TARGETS, json_report

KEYS = (
    "rx_1core_1400",
    "rx_1core_64",
    "rx_2cores_1400",
    "tx_1400",
    "alc_e2e_vs_flute_20MiB",
    "alc_e2e_vs_flute_100MiB",
    "live_alc_auth_vs_plain",
)


def block(size: int, ossl: float, **ns: float) -> dict:
    names = {
        "rx1": "receiver fast 1 core",
        "thr": "receiver fast+2 thr",
        "w": "receiver fast+2w",
        "tx": "sender batch",
    }
    return {
        "hash": "sha256",
        "size": size,
        "openssl_ns": ossl,
        "openssl_runs": 5,
        "reference": "openssl speed ...",
        "ref_ns": ossl,
        "ns": {"openssl": ossl, **{names[k]: v for k, v in ns.items()}},
    }


def e2e(size: int, auth: float, plain: float, flute: float) -> dict:
    return {
        "file_bytes": size,
        "rounds": 1,
        "seconds": {"auth": auth, "plain": plain, "flute": flute},
        "failed": {},
    }


def live(ratio: float | None, unsafe: int) -> dict:
    return {"ratio": ratio, "rate_bps": 4e8, "unsafe": unsafe, "auth": {"ok": True}, "plain": {}}


def report(**kw: object) -> dict:
    args = {
        "blocks": [
            block(64, 300.0, rx1=600.0, thr=500.0, w=700.0, tx=400.0),
            block(1400, 1200.0, rx1=1000.0, thr=1500.0, w=600.0, tx=1300.0),
        ],
        "e2e": [e2e(20 << 20, 0.5, 0.2, 0.4), e2e(100 << 20, 1.0, 1.0, 2.0)],
        "live": live(0.95, 0),
        "meta": {"mac_kernel": "k", "cpu_count": 2},
    }
    args.update(kw)
    return json_report(**args)  # type: ignore[arg-type]


def test_every_key_is_the_stated_ratio() -> None:
    r = report()
    json.loads(json.dumps(r))  # JSON-able as is
    assert r["rx_1core_1400"] == pytest.approx(1200 / 1000)
    assert r["rx_1core_64"] == pytest.approx(300 / 600)
    # the better of the two 2-core configurations (threads 1500 ns, workers 600 ns)
    assert r["rx_2cores_1400"] == pytest.approx(1200 / 600)
    assert r["lines"]["rx_2cores_1400"]["line"] == "receiver fast+2w"
    assert r["tx_1400"] == pytest.approx(1200 / 1300)
    # end to end: goodput authenticated / goodput flute-alc = flute's time / ours
    assert r["alc_e2e_vs_flute_20MiB"] == pytest.approx(0.4 / 0.5)
    assert r["alc_e2e_vs_flute_100MiB"] == pytest.approx(2.0)
    assert r["lines"]["alc_e2e_vs_flute_100MiB"]["goodput_bps"]["flute"] == pytest.approx(
        (100 << 20) * 8 / 2.0
    )
    assert r["live_alc_auth_vs_plain"] == 0.95
    assert r["openssl_ns_per_packet"] == {"64": 300.0, "1400": 1200.0}
    assert r["ns_per_packet"]["1400"]["sender batch"] == 1300.0
    assert r["mac_kernel"] == "k" and r["cpu_count"] == 2
    assert set(r["targets"]) == set(KEYS) == set(TARGETS)
    assert r["met"] == {
        "rx_1core_1400": True,
        "rx_1core_64": False,
        "rx_2cores_1400": True,
        "tx_1400": True,
        "alc_e2e_vs_flute_20MiB": False,
        "alc_e2e_vs_flute_100MiB": True,
        "live_alc_auth_vs_plain": True,
    }
    assert r["all_met"] is False


def test_live_target_needs_zero_unsafe_drops() -> None:
    r = report(live=live(1.2, 3))
    assert r["live_unsafe_drops"] == 3
    assert r["met"]["live_alc_auth_vs_plain"] is False


def test_unmeasured_keys_are_null_with_a_reason() -> None:
    r = report(blocks=[], e2e=[], live=None)
    for k in KEYS:
        assert r[k] is None and r["met"][k] is False and k in r["why_null"]
    failed = e2e(20 << 20, 1.0, 1.0, 1.0)
    del failed["seconds"]["flute"]
    failed["failed"] = {"flute": "boom"}
    r = report(e2e=[failed])
    assert r["alc_e2e_vs_flute_20MiB"] is None and "boom" in r["why_null"]["alc_e2e_vs_flute_20MiB"]


def test_a_failed_round_behind_a_figure_is_a_warning() -> None:
    one_failed = e2e(20 << 20, 0.5, 0.2, 0.4)
    one_failed["failed"] = {"auth": "file not received bit-exact"}
    r = report(e2e=[one_failed, e2e(100 << 20, 1.0, 1.0, 2.0)])
    assert r["alc_e2e_vs_flute_20MiB"] == pytest.approx(0.8)
    assert "bit-exact" in r["warnings"]["alc_e2e_vs_flute_20MiB"]
    assert "alc_e2e_vs_flute_100MiB" not in r["warnings"]


def test_memory_ratio_is_reported_with_its_target() -> None:
    r = report()
    assert r["memory_rss_vs_accounted"] is None and r["memory"] is None
    mem = {"rss_vs_accounted": 0.9, "evicted": 0, "max_buffered_bytes": 100}
    r = json_report([], [], None, {}, mem)
    assert r["memory_rss_vs_accounted"] == 0.9
    assert r["memory"]["target"] == 1.2 and r["memory"]["met"] is True
    r = json_report([], [], None, {}, {**mem, "rss_vs_accounted": 1.3})
    assert r["memory"]["met"] is False
    assert "memory_rss_vs_accounted" not in r["met"]  # not one of the ratio keys


@pytest.mark.slow
def test_bench_json_quick_prints_one_object_with_every_key() -> None:
    p = subprocess.run(
        [sys.executable, "-m", "tesla.cli", "bench", "--json", "--quick", "--live-size", "2000000"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert p.returncode == 0, p.stderr[-2000:]
    r = json.loads(p.stdout)  # stdout is the object and nothing else
    for k in KEYS:  # a failed authenticated live transfer is 0.0 (no goodput): a figure
        assert isinstance(r[k], float) and r[k] >= 0, (k, r[k], r["why_null"])
    assert set(r["met"]) == set(KEYS)
    for s in ("64", "1400"):
        assert r["openssl_ns_per_packet"][s] > 0
        assert all(v > 0 for v in r["ns_per_packet"][s].values())
    assert isinstance(r["live_unsafe_drops"], int)
    # the headline live ratio is the same-host TESLA configuration; the CLI defaults beside it
    live = r["lines"]["live_alc_auth_vs_plain"]
    assert live["config"]["name"] == "same_host" and "--tint" in live["config"]["send"]
    assert set(live["by_config"]) == {"same_host", "cli_defaults"}
    assert r["live_alc_auth_vs_plain_cli_defaults"] == live["by_config"]["cli_defaults"]["ratio"]
    assert isinstance(r["memory_rss_vs_accounted"], float) and r["memory"]["evicted"] == 0
    assert r["cpu_count"] >= 1 and len(r["load_avg_start"]) == 3 and r["mac_kernel"]
    assert "openssl" in p.stderr  # the human lines went to stderr
