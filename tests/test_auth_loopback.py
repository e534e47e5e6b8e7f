"""Authenticated file transfer over loopback multicast, ALC/FLUTE and NORM, through the
``tesla-mcast`` CLI in two processes: 10% receiver-side loss and random receive jitter
(``--jitter``: each datagram held 0..30 ms, which also reorders), files bit-exact, the
receiver's TESLA drop counters printed (``pytest -rA`` shows them) and checked.

Network: groups in 239.255.0.0/16, interface 127.0.0.1, TTL 1, random ports.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from helpers import keygen, rand_group, receive_while_sending, write_random_files


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return keygen(tmp_path_factory.mktemp("keys"))


def make_inputs(tmp: Path) -> list[Path]:
    # not a one-packet object first: with jitter a later object's first packet can overtake
    # it and a NORM receiver syncs on the first object it sees (RFC 5740 §5.1)
    return write_random_files(
        tmp, 3, (("mid.bin", 40_000), ("small.txt", 1_000), ("big.bin", 400_000))
    )


def transfer(
    tmp: Path, keys: tuple[Path, Path], send_extra: list[str], recv_extra: list[str]
) -> dict[str, Any]:
    files = make_inputs(tmp)
    group = rand_group()
    out = tmp / "out"
    priv, pub = keys
    tx, rx_rc, stdout, stderr = receive_while_sending(
        ["receive", "--group", group, "--iface", "127.0.0.1", "--out", str(out),
         "--sender-key", str(pub), "--loss", "0.1", "--loss-seed", "4", "--jitter", "30",
         "--timeout", "90", "--json", *recv_extra],
        ["send", *map(str, files), "--group", group, "--iface", "127.0.0.1", "--ttl", "1",
         "--key", str(priv), *send_extra],
        timeout=120,
    )
    assert tx.returncode == 0, tx.stderr
    assert rx_rc == 0, stderr + stdout[-2000:]
    summary: dict[str, Any] = json.loads(stdout)
    t = summary["tesla"]
    print(f"sender: {tx.stderr.strip()}")
    print(f"receiver TESLA drops: {t['drops']}")
    print(f"receiver TESLA accepted {t['accepted']}, D_t {t['d_t_ms']} ms, "
          f"max buffered {t['max_buffered_bytes']} B, injected loss "
          f"{summary['stats'].get('drop.injected_loss', 0)}")
    got = {Path(x["path"]).name for x in summary["files"]}
    assert got == {f.name for f in files}, (got, summary.get("failures"))
    for f in files:
        assert (out / f.name).read_bytes() == f.read_bytes(), f.name
    assert t["bootstrapped"] and t["accepted"] > 300
    for reason in ("bad_mac", "bad_key", "bad_group_mac", "malformed", "evicted"):
        assert t["drops"][reason] == 0, (reason, t["drops"])
    assert summary["stats"].get("drop.injected_loss", 0) > 0
    # late (unsafe) datagrams only come from scheduling stalls of a loaded machine
    assert t["drops"]["unsafe"] < t["accepted"]
    return summary


def test_alc_authenticated_loopback_loss_jitter(tmp_path: Path, keys: tuple[Path, Path]) -> None:
    transfer(
        tmp_path,
        keys,
        ["--protocol", "alc", "--rate", "20M", "--fec", "rs", "--repair-ratio", "0.5",
         "--carousel", "3", "--tsi", "4242"],
        ["--protocol", "alc", "--tsi", "4242"],
    )


def test_norm_authenticated_loopback_loss_jitter(tmp_path: Path, keys: tuple[Path, Path]) -> None:
    s = transfer(
        tmp_path,
        keys,
        # GRTT starts at the TESLA authentication delay (d * T_int = 300 ms): the receivers
        # only see (and answer) sender messages once they are authenticated
        ["--protocol", "norm", "--rate", "20M", "--grtt", "0.3"],
        ["--protocol", "norm", "--idle-timeout", "4"],
    )
    assert s["complete"] and s["received"] == 3
