"""Long TESLA sessions (issue 14): several key chains, late joiners, memory flat.

A scaled-down version of ``bench/long_session.py`` (24 h): 2 simulated hours at
T_int = 10 ms (720 000 intervals) with chains of 57 344 intervals (9.6 min: 12 switches,
not aligned with the data period, so a switch falls in a silent stretch),
receivers joining every 20 minutes, one ALC datagram every 10 s plus TESLA's fillers.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from helpers import PY, keygen, rand_group, write_random_files

from tesla.core import extauth as ea
from tesla.core.authenticator import TeslaSender, ext_area
from tesla.core.keychain import KeyChainSet, KeyVerifierSet
from tesla.core.ntp import posix_to_ntp
from tesla.core.params import TeslaParams
from tesla.sim.longrun import LongSessionConfig, check, run


@pytest.fixture(scope="module")
def two_hours() -> dict[str, Any]:
    cfg = LongSessionConfig(hours=2.0, tint_ms=10, d=3, chain_length=57_343, data_period=10.0,
                            bootstrap_period=10.0, join_every=1200.0, join_offset=77.0,
                            sample_every=1200.0)
    return run(cfg)


def test_every_receiver_authenticates_everything_after_its_join(two_hours: dict) -> None:
    res = two_hours
    assert res["intervals"] == 720_000
    assert res["receivers_joined"] == 6
    assert check(res) == []
    for r in res["receivers"]:
        # nothing lost but what came before the first bootstrap (<= one bootstrap period)
        assert r["first_bootstrap_after_s"] is not None
        assert r["first_bootstrap_after_s"] <= 10.0 + 0.01
        assert r["accepted"] >= r["tagged_after_join"] - 4 - 4  # <= 1 data period lost
        assert r["files"] == 1  # the carousel's file, authenticated, after the join


def test_chain_switches_followed(two_hours: dict) -> None:
    res = two_hours
    assert len(res["chains_used"]) == 13  # 720 000 / 57 344
    assert res["sender"]["fdt_renewed"] >= 3  # FDT Expires 1 h, renewed every 30 min
    for r in res["receivers"]:
        first = int(r["join_h"] * 3600 / 573.44)  # chain of the join
        # the bootstrap's chain, then every next chain's commitment by Type 3 (13 = the
        # chain after the end, announced during chain 12)
        assert set(range(first + 1, 14)) <= set(r["chains_learned"])


def test_memory_flat(two_hours: dict) -> None:
    res = two_hours
    samples = res["samples"]
    sender = [s["sender_bytes"] for s in samples]
    assert max(sender) < 1.2 * min(sender)
    assert all(s["sender_chains_held"] <= 3 for s in samples)
    for s in samples:
        for st in s["receiver_state"].values():
            assert st["chain_verifiers"] <= 2  # old chains dropped (RFC 5776 §4.4)
            assert st["verified_keys"] <= 2 * 1024
            assert st["keycache"] <= 1024
            assert st["pending_intervals"] <= 8
            assert st["alc_done"] <= 16 and st["alc_announced"] == 1
            # the verifier's cache of per-interval safe-test thresholds: cleared when it
            # exceeds 4096 entries (a bounded sawtooth, ~0.6 MB at its top)
            assert st["interval_bounds"] <= 4097
    # the receiver there from the start: its whole state (deep size) stays within the
    # bounds above (~0.5 MB of key state + the sawtooth), not growing with the chains
    r0 = [s["receivers"][0] for s in samples if 0 in s["receivers"]]
    assert len(r0) == 6
    # the one receiver preallocates its interval arenas (ARENA_MIN each, untouched pages
    # not resident), which the deep size counts at capacity: what must stay flat is the
    # growth over the session, not the capacity
    assert max(r0) - min(r0) < 1.0e6


def _tag_types(pkts: list[bytes]) -> list[int]:
    out = []
    for p in pkts:
        s, e = ext_area(p, "alc")
        off = ea.find_ext_auth(p, s, e, 0)
        out.append(p[off + 2] & 15)
    return out


def test_sparse_sender_sends_next_chain_commitment() -> None:
    """One data packet per interval never reaches wrap()'s odd count: the fillers must
    carry the Type 3 tag (RFC 5776 §3.1.2.3), else a receiver learns each new chain
    only from the next bootstrap."""
    from tesla.sim.real import _sender_key

    t0 = 1_767_225_600.0
    p = TeslaParams(t0_ntp=posix_to_ntp(t0), tint_ms=10, n_chain=99, d=3, single_chain=False)
    tx = TeslaSender(p, _sender_key(), chains=KeyChainSet(p, "full", rng=lambda n: b"k" * n),
                     bootstrap_period=0, silent_fill=1)
    tx.control_packets(t0)
    types: list[int] = []
    for k in range(20):  # a data packet every 100 ms (10 intervals), chain 0 and 1
        now = t0 + 0.005 + 0.1 * k
        types += _tag_types([tx.wrap(b"\x10\x00\x02\x00" + bytes(4), now)])
        for j in range(1, 4):
            types += _tag_types(tx.control_packets(now + 0.01 * j))
    assert types.count(ea.TYPE_TAG_NEW_CHAIN) >= 10
    assert ea.TYPE_TAG in types


def test_receiver_key_state_drops_old_chains() -> None:
    """KeyVerifierSet.drop_chains_before is what keeps a receiver flat over chains."""
    p = TeslaParams(t0_ntp=posix_to_ntp(0.0), tint_ms=10, n_chain=9, d=2, single_chain=False)
    ks = KeyVerifierSet(p)
    for j in range(5):
        ks.add_commitment(j, bytes(32))
        ks.drop_chains_before(j - 1)
    assert sorted(ks.chains) == [3, 4]


def test_live_endless_sender_late_receiver_follows_chain_switches(tmp_path: Path) -> None:
    """``send --carousel 0`` with 0.5-s key chains (N = 24 at T_int 20 ms); a receiver
    started seconds later bootstraps from the periodic bootstrap, follows the switches
    (its run spans several chains) and gets the file bit-exact, authenticated."""
    priv, pub = keygen(tmp_path)
    (f,) = write_random_files(tmp_path, 3, (("f.bin", 150_000),))
    group = rand_group()
    out = tmp_path / "out"
    tx = subprocess.Popen(
        PY + ["send", str(f), "--group", group, "--iface", "127.0.0.1", "--ttl", "1",
              "--key", str(priv), "--rate", "1M", "--carousel", "0", "--chain-length", "24",
              "--tint", "20"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert tx.stderr is not None
        assert tx.stderr.readline().startswith("TESLA")
        time.sleep(2.5)  # ~5 chains in
        start = time.time()
        rx = subprocess.run(
            PY + ["receive", "--group", group, "--iface", "127.0.0.1", "--out", str(out),
                  "--sender-key", str(pub), "--timeout", "60", "--json"],
            capture_output=True, text=True, timeout=90)
        took = time.time() - start
        assert tx.poll() is None  # still sending: an endless carousel
    finally:
        tx.send_signal(signal.SIGTERM)  # ends it cleanly (summary line, status 0)
        _, tx_err = tx.communicate(timeout=30)
    assert tx.returncode == 0, tx_err
    assert "send interrupted" in tx_err
    assert rx.returncode == 0, rx.stderr + rx.stdout[-2000:]
    s = json.loads(rx.stdout)
    t = s["tesla"]
    assert t["bootstrapped"] and t["accepted"] > 50
    for reason in ("bad_mac", "bad_key", "malformed", "stale", "flushed"):
        assert t["drops"].get(reason, 0) == 0, t["drops"]
        assert s["stats"].get(f"tesla.drop.{reason}", 0) == 0
    assert (out / "f.bin").read_bytes() == f.read_bytes()
    assert took > 1.5  # process start + bootstrap + a round at 1 Mbit/s: >= 3 chains
