"""tesla-mcast with TESLA from the command line: keygen, send --pcap --dry-run then
receive --from-pcap (capture timestamps as arrival times), wrong keys, clock offsets,
option errors, and the authenticated demo."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import keygen, rand_group, write_random_files

from alc.pcap import read_udp
from tesla.cli.main import build_parser, main


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("keys")
    priv, pub = keygen(d)
    _, other_pub = keygen(d, "OTHER")
    return {"priv": priv, "pub": pub, "other_pub": other_pub}


def make_inputs(tmp: Path) -> list[Path]:
    return write_random_files(tmp, 11, (("a.bin", 1), ("b.txt", 5_000), ("c.bin", 250_000)))


_LOG: list[str] = []


@pytest.fixture(autouse=True)
def _print_tesla_counters() -> Iterator[None]:
    """Receiver TESLA counters of each run, printed at teardown (shown by ``-rA``)."""
    _LOG.clear()
    yield
    for line in _LOG:
        print(line)


def tesla_of(capsys: pytest.CaptureFixture[str]) -> tuple[dict, str]:
    cap = capsys.readouterr()
    summary = json.loads(cap.out)
    _LOG.append(f"TESLA receiver: {summary['tesla']}")
    return summary, cap.err


@pytest.fixture(scope="module")
def capture(keys: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict:
    tmp = tmp_path_factory.mktemp("cap")
    files = make_inputs(tmp)
    group = rand_group()
    pcap = tmp / "s.pcap"
    rc = main(
        ["send", *map(str, files), "--group", group, "--fec", "rs", "--repair-ratio", "0.2",
         "--tsi", "77", "--pcap", str(pcap), "--dry-run", "-q", "--key", str(keys["priv"]),
         "--rate", "20M"]
    )
    assert rc == 0
    return {"files": files, "group": group, "pcap": pcap}


def receive_capture(capture: dict, out: Path, sender_key: Path, *extra: str) -> int:
    """``tesla-mcast receive --from-pcap`` of the module's capture (JSON summary)."""
    return main(
        ["receive", "--group", capture["group"], "--out", str(out), "--from-pcap",
         str(capture["pcap"]), "--sender-key", str(sender_key), *extra, "--json"]
    )


def test_keygen_writes_pem_and_pub(keys: dict[str, Path]) -> None:
    assert keys["priv"].read_bytes().startswith(b"-----BEGIN")
    assert b"PUBLIC KEY" in keys["pub"].read_bytes()
    assert keys["priv"].stat().st_mode & 0o077 == 0


def test_pcap_round_trip_authenticated(
    capture: dict, keys: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    rc = receive_capture(capture, out, keys["pub"])
    summary, err = tesla_of(capsys)
    assert rc == 0, err
    assert summary["complete"] and summary["received"] == 3
    for f in capture["files"]:
        assert (out / f.name).read_bytes() == f.read_bytes()
    t = summary["tesla"]
    assert t["bootstrapped"] and t["accepted"] > 200
    for reason in ("unsafe", "bad_mac", "bad_key", "bad_group_mac", "replay", "evicted",
                   "malformed", "no_bootstrap"):
        assert t["drops"][reason] == 0, reason
    assert summary["stats"]["tesla.accepted"] == t["accepted"]
    # every datagram of the capture carries an EXT_AUTH (HET 1): nothing unauthenticated
    n = sum(1 for _ in read_udp(capture["pcap"]))
    assert n > t["accepted"] > 0


def test_verify_workers_same_result(
    capture: dict,
    keys: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``--verify-workers 2``: the intervals' MACs are computed by worker processes (every
    interval, whatever its size, here) with the same files and counters as in-process."""
    import tesla.core.receiver as tr
    import tesla.mac.workers as tw

    monkeypatch.setattr(tr, "POOL_MIN_PACKETS", 1)
    pools: list[tw.WorkerPool] = []

    class Recorded(tw.WorkerPool):
        def __init__(self, *a: object, **kw: object) -> None:
            super().__init__(*a, **kw)  # type: ignore[arg-type]
            pools.append(self)

    monkeypatch.setattr(tw, "WorkerPool", Recorded)
    rc = receive_capture(capture, tmp_path / "w", keys["pub"], "--verify-workers", "2")
    with_pool, err = tesla_of(capsys)
    assert rc == 0, err
    rc = receive_capture(capture, tmp_path / "p", keys["pub"])
    plain, err = tesla_of(capsys)
    assert rc == 0, err
    assert len(pools) == 1 and pools[0].n == 2 and pools[0].batches >= 1
    pools[0].close()
    assert with_pool["tesla"] == plain["tesla"]
    for f in capture["files"]:
        assert (tmp_path / "w" / f.name).read_bytes() == f.read_bytes()


def test_verify_threads_same_result(
    capture: dict,
    keys: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``--verify-threads 2``: the intervals' MACs are shared by two threads (every
    interval, whatever its size, here), with the same files and counters as with one
    (the native kernel's fused verify-and-cut call in a background thread, or the MAC
    call shared with the main thread without it)."""
    import threading

    import tesla.core.receiver as tr
    import tesla.mac.kernel as mk

    monkeypatch.setattr(tr, "POOL_MIN_PACKETS", 1)
    monkeypatch.setattr(tr, "BACKGROUND_MIN_OCTETS", 1)
    monkeypatch.setattr(mk, "MIN_ROWS", 1)
    calls: list[str] = []
    real = tr.mac_arena

    def recorded(*a: object) -> object:
        calls.append(threading.current_thread().name.split("_")[0])
        return real(*a)  # type: ignore[arg-type]

    monkeypatch.setattr(tr, "mac_arena", recorded)
    mod = mk._mod()
    if mod is not None:

        class Recording:
            def __getattr__(self, name: str) -> object:
                return getattr(mod, name)

            def verify_arena(self, *a: object) -> object:
                calls.append(threading.current_thread().name.split("_")[0])
                return mod.verify_arena(*a)

            def start_job(self, *a: object) -> object:  # native threads: how many
                calls.append(f"start_job {a[-1]}")
                return mod.start_job(*a)

        monkeypatch.setattr(mk, "_mod", Recording)
    rc = receive_capture(capture, tmp_path / "t", keys["pub"], "--verify-threads", "2")
    threaded, err = tesla_of(capsys)
    assert rc == 0, err
    # the MACs ran off the main thread: shared with it (threaded_macs), or the whole
    # interval in a native thread started for it while the main thread buffers (the
    # native kernel: no verify_arena call, every interval a job of one thread)
    if mod is not None:
        assert calls and set(calls) == {"start_job 1"}, calls
    else:
        assert "tesla-mac" in calls and "MainThread" in calls
    rc = receive_capture(capture, tmp_path / "p", keys["pub"], "--verify-threads", "1")
    plain, err = tesla_of(capsys)
    assert rc == 0, err
    assert threaded["tesla"] == plain["tesla"]
    for f in capture["files"]:
        assert (tmp_path / "t" / f.name).read_bytes() == f.read_bytes()


def test_verify_threads_default_uses_a_second_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """``--verify-threads`` unset: 2 where the process may run on two CPUs or more (the
    MACs beside the parsing), 1 on one; set: as given."""
    import os

    from tesla.cli import wiring

    p = build_parser()
    base = ["receive", "--group", "239.255.1.1:5000", "--out", "x", "--sender-key", "k"]
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: {0, 1, 2, 3})
    assert wiring.verify_threads(p.parse_args(base)) == 2
    assert wiring.verify_threads(p.parse_args([*base, "--verify-threads", "1"])) == 1
    assert wiring.verify_threads(p.parse_args([*base, "--verify-threads", "3"])) == 3
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: {0})
    assert wiring.verify_threads(p.parse_args(base)) == 1


def test_wrong_public_key_fails(
    capture: dict, keys: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc = receive_capture(capture, tmp_path / "o", keys["other_pub"])
    summary, err = tesla_of(capsys)
    assert rc == 1
    assert "no FDT received" in err
    t = summary["tesla"]
    assert not t["bootstrapped"] and t["accepted"] == 0
    assert t["drops"]["bad_signature"] >= 1 and t["drops"]["no_bootstrap"] > 100
    assert summary["files"] == []


def test_large_clock_offset_makes_packets_unsafe(
    capture: dict, keys: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # receiver clock 2 s ahead: every tag's key may already be disclosed
    rc = receive_capture(capture, tmp_path / "o", keys["pub"], "--clock-offset", "2000")
    summary, _ = tesla_of(capsys)
    assert rc == 1
    t = summary["tesla"]
    assert t["accepted"] == 0 and t["drops"]["unsafe"] > 200
    # a small offset inside the bound (d*T_int - D_t = 280 ms minus the in-interval time)
    out = tmp_path / "ok"
    rc = receive_capture(capture, out, keys["pub"], "--clock-offset", "50")
    summary, _ = tesla_of(capsys)
    assert rc == 0 and summary["tesla"]["drops"]["unsafe"] == 0


def test_negative_clock_offset_rejects_future_tags(
    capture: dict, keys: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # receiver clock 1 s behind: tags from intervals the sender cannot have reached yet
    rc = receive_capture(capture, tmp_path / "o", keys["pub"], "--clock-offset", "-1000")
    summary, _ = tesla_of(capsys)
    assert rc == 1 and summary["tesla"]["drops"]["unsafe"] > 0


def test_group_mac_and_options_round_trip(
    keys: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = make_inputs(tmp_path)
    kg = tmp_path / "group.key"
    kg.write_text("00112233445566778899aabbccddeeff\n")
    wrong = tmp_path / "wrong.key"
    wrong.write_bytes(b"another group key, raw bytes")
    group = rand_group()
    pcap = tmp_path / "g.pcap"
    assert main(
        ["send", *map(str, files), "--group", group, "--pcap", str(pcap), "--dry-run", "-q",
         "--key", str(keys["priv"]), "--group-mac", str(kg), "--mac", "hmac-sha1", "--tint",
         "250", "--disclosure-delay", "2", "--chain-length", "40", "--rate", "5M"]
    ) == 0
    rc = main(
        ["receive", "--group", group, "--out", str(tmp_path / "o"), "--from-pcap", str(pcap),
         "--sender-key", str(keys["pub"]), "--group-mac", str(kg), "--json"]
    )
    summary, err = tesla_of(capsys)
    assert rc == 0, err
    for f in files:
        assert (tmp_path / "o" / f.name).read_bytes() == f.read_bytes()
    rc = main(
        ["receive", "--group", group, "--out", str(tmp_path / "w"), "--from-pcap", str(pcap),
         "--sender-key", str(keys["pub"]), "--group-mac", str(wrong), "--json"]
    )
    summary, _ = tesla_of(capsys)
    assert rc == 1 and summary["tesla"]["accepted"] == 0
    assert summary["tesla"]["drops"]["bad_group_mac"] > 0


def test_plain_receiver_of_plain_capture_and_missing_keys(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = make_inputs(tmp_path)
    group = rand_group()
    for proto in ("alc", "norm"):
        with pytest.raises(SystemExit) as e:
            main(["send", *map(str, files), "--protocol", proto, "--group", group, "--dry-run"])
        assert e.value.code == 2
        assert "--key" in capsys.readouterr().err
        with pytest.raises(SystemExit) as e:
            main(["receive", "--protocol", proto, "--group", group, "--out", str(tmp_path)])
        assert e.value.code == 2
        assert "--sender-key" in capsys.readouterr().err
    pcap = tmp_path / "p.pcap"
    assert main(["send", *map(str, files), "--group", group, "--pcap", str(pcap), "--dry-run",
                 "-q", "--no-auth"]) == 0
    rc = main(["receive", "--group", group, "--out", str(tmp_path / "o"), "--from-pcap",
               str(pcap), "--no-auth", "--json"])
    summary = json.loads(capsys.readouterr().out)
    assert rc == 0 and summary["tesla"] is None


def test_plain_capture_is_refused_by_an_authenticating_receiver(
    keys: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = make_inputs(tmp_path)
    group = rand_group()
    pcap = tmp_path / "p.pcap"
    assert main(["send", *map(str, files), "--group", group, "--pcap", str(pcap), "--dry-run",
                 "-q", "--no-auth"]) == 0
    rc = main(["receive", "--group", group, "--out", str(tmp_path / "o"), "--from-pcap",
               str(pcap), "--sender-key", str(keys["pub"]), "--json"])
    summary, _ = tesla_of(capsys)
    assert rc == 1 and summary["tesla"]["accepted"] == 0
    assert summary["tesla"]["drops"]["no_bootstrap"] + summary["tesla"]["drops"]["malformed"] > 0


def test_demo_authenticates_by_default(capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["demo", "--files", "2", "--size", "300000", "--rate", "100M", "--json"])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    s = json.loads(cap.out)
    _LOG.append(f"demo TESLA receiver: {s['tesla']}")
    assert s["files_ok"] == 2
    assert s["tesla"]["accepted"] > 0 and s["tesla"]["drops"]["bad_mac"] == 0
    assert "TESLA:" in cap.err and "drops unsafe=" in cap.err
    rc = main(["demo", "--files", "2", "--size", "100000", "--rate", "100M", "--json",
               "--no-auth"])
    s = json.loads(capsys.readouterr().out)
    assert rc == 0 and s["tesla"] is None and s["files_ok"] == 2


def test_norm_live_send_pcap_then_receive_from_pcap(
    keys: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """NORM has no --dry-run: a live authenticated send (loopback, TTL 1, nobody
    listening) records its datagrams with their send times; the capture replays bit-exact
    with the public key, and not at all with another sender's key."""
    files = make_inputs(tmp_path)
    group = rand_group()
    pcap = tmp_path / "n.pcap"
    assert main(
        ["send", *map(str, files), "--protocol", "norm", "--group", group, "--iface",
         "127.0.0.1", "--ttl", "1", "--rate", "20M", "--grtt", "0.05", "--pcap", str(pcap),
         "-q", "--key", str(keys["priv"])]
    ) == 0
    out = tmp_path / "o"
    rc = main(
        ["receive", "--protocol", "norm", "--group", group, "--out", str(out), "--from-pcap",
         str(pcap), "--sender-key", str(keys["pub"]), "--json"]
    )
    summary, err = tesla_of(capsys)
    assert rc == 0, err
    for f in files:
        assert (out / f.name).read_bytes() == f.read_bytes()
    assert summary["tesla"]["drops"]["unsafe"] == 0 and summary["tesla"]["accepted"] > 100
    rc = main(
        ["receive", "--protocol", "norm", "--group", group, "--out", str(tmp_path / "w"),
         "--from-pcap", str(pcap), "--sender-key", str(keys["other_pub"]), "--json"]
    )
    summary, _ = tesla_of(capsys)
    assert rc == 1 and summary["tesla"]["accepted"] == 0
    assert summary["tesla"]["drops"]["no_bootstrap"] > 100
