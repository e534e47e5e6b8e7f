"""Our NORM sender and receiver as separate ``tesla-mcast send|receive --protocol norm``
processes on loopback multicast (issue 11): three files (1 KiB, 100 KiB, 5 MiB) under
injected receive loss, authenticated and plain, one sender to three receivers, a cold
start (the first datagrams unusable) and late joins under each ``--join-policy``.

Every receiver runs with ``--json``; the files must be bit-exact.  A receiver is started
first and the sender only once the receiver has joined the group (``/proc/net/igmp``):
an authenticated receiver loads the MAC kernel before it opens its socket, which can take
longer than any fixed delay on a loaded host.  Group random in 239.255.0.0/16, interface
127.0.0.1, TTL 1.
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from helpers import PY, keygen, rand_group, write_random_files

FILES = (("small.bin", 1024), ("medium.bin", 100 * 1024), ("large.bin", 5 * 1024 * 1024))
TIMEOUT = 120.0


def _joined(group: str, n: int = 1) -> bool:
    """True once ``n`` sockets of this host have joined ``group`` on lo."""
    addr = group.split(":")[0]
    key = socket.inet_aton(addr)[::-1].hex().upper()
    users = 0
    lo = False
    for line in Path("/proc/net/igmp").read_text().splitlines():
        if not line.startswith("\t"):
            lo = " lo " in f" {line.split(':')[0]} ".replace("\t", " ")
            continue
        parts = line.split()
        if lo and parts and parts[0] == key:
            users = int(parts[1])
    return users >= n


def _wait_joined(group: str, n: int, procs: list[subprocess.Popen[str]]) -> None:
    deadline = time.monotonic() + 30.0
    while not _joined(group, n):
        assert all(p.poll() is None for p in procs), [p.communicate() for p in procs]
        assert time.monotonic() < deadline, "receiver never joined the group"
        time.sleep(0.05)
    time.sleep(0.2)


def _session(
    tmp: Path,
    files: list[Path],
    *,
    auth: bool,
    loss: float,
    receivers: int = 1,
    recv_extra: list[str] | None = None,
    send_extra: list[str] | None = None,
    start_after_sender: float | None = None,
    rate: str = "50M",
) -> tuple[subprocess.CompletedProcess[str], list[tuple[int, dict[str, Any], str]]]:
    """Run ``receivers`` receivers (independent loss seeds) and one sender; ->
    (sender result, [(exit status, JSON summary, stderr)] per receiver).  With
    ``start_after_sender`` the receivers start that many seconds after the sender."""
    group = rand_group()
    if auth:
        priv, pub = keygen(tmp)
        rauth, sauth = ["--sender-key", str(pub)], ["--key", str(priv)]
    else:
        rauth = sauth = ["--no-auth"]
    send = [
        "send", *map(str, files), "--protocol", "norm", "--group", group, "--iface", "127.0.0.1",
        "--rate", rate, *sauth, *(send_extra or []),
    ]  # fmt: skip

    def rx_cmd(i: int) -> list[str]:
        return [
            "receive", "--protocol", "norm", "--group", group, "--iface", "127.0.0.1",
            "--out", str(tmp / f"out{i}"), "--node-id", str(10 + i), "--json",
            "--timeout", str(TIMEOUT), *rauth, *(recv_extra or []),
        ] + (["--loss", str(loss), "--loss-seed", str(100 + i)] if loss else [])  # fmt: skip

    rxs: list[subprocess.Popen[str]] = []
    tx: subprocess.Popen[str] | None = None
    try:
        if start_after_sender is None:
            for i in range(receivers):
                rxs.append(_popen(rx_cmd(i)))
            _wait_joined(group, receivers, rxs)
        tx = _popen(send)
        if start_after_sender is not None:
            time.sleep(start_after_sender)
            for i in range(receivers):
                rxs.append(_popen(rx_cmd(i)))
        out, err = tx.communicate(timeout=TIMEOUT)
        txr = subprocess.CompletedProcess(send, tx.returncode, out, err)
        res = []
        for p in rxs:
            o, e = p.communicate(timeout=TIMEOUT)
            res.append((p.returncode, json.loads(o) if o.strip() else {}, e))
        return txr, res
    finally:
        for p in [*rxs, *([tx] if tx else [])]:
            if p.poll() is None:
                p.kill()
                p.wait()


def _popen(args: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen(PY + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _check(files: list[Path], tmp: Path, res: list[tuple[int, dict[str, Any], str]]) -> None:
    for i, (rc, summ, err) in enumerate(res):
        if rc != 0:  # the whole summary, untruncated, in the captured output of the test
            print(f"receiver {i}: rc {rc}, stderr {err!r}")
            print(json.dumps(summ, sort_keys=True, default=str))
        assert rc == 0, (err, summ.get("failures"), summ.get("stats"))
        for f in files:
            got = tmp / f"out{i}" / f.name
            assert got.read_bytes() == f.read_bytes(), f"{got} differs"


def _three(tmp: Path) -> list[Path]:
    src = tmp / "src"
    src.mkdir()
    return write_random_files(src, 11, FILES)


@pytest.mark.parametrize(
    ("loss", "auth"),
    [
        (0.1, False),
        (0.1, True),
        pytest.param(0.02, False, marks=pytest.mark.slow),
        pytest.param(0.2, False, marks=pytest.mark.slow),
        pytest.param(0.02, True, marks=pytest.mark.slow),
        pytest.param(0.2, True, marks=pytest.mark.slow),
    ],
)
def test_three_files_under_receive_loss(tmp_path: Path, loss: float, auth: bool) -> None:
    """Failure 1 of issue 11: before the fix every one of these ended with objects
    aborted at the EOT (``nack.cycles 1``)."""
    files = _three(tmp_path)
    tx, res = _session(tmp_path, files, auth=auth, loss=loss)
    assert tx.returncode == 0, tx.stderr
    _check(files, tmp_path, res)
    st = res[0][1]["stats"]
    assert st["nack.sent"] >= 1  # repaired by NACKs, not by luck
    # the EOT reached the engine: authenticated, its key was disclosed after the last data
    # (silent-period disclosures in last_key_intervals = 4 intervals: with one interval's
    # two fillers, both lost to the injected loss now and then, this failed about one CI
    # run in three; tests/test_norm_tesla_tail.py), within the sender's lifetime
    assert st["rx.sender_eot"] == 1


@pytest.mark.slow
# One CI run (2026-12-07 21:13, loaded host) had one of the three receivers end with no
# object at all: its 3 TESLA bootstraps at start were lost and a FLUSH did not sync it
# (fixed, test_nothing_usable_before_the_flush); the rerun marker stays for load alone
@pytest.mark.flaky(reruns=2)
def test_one_sender_three_receivers_independent_loss(tmp_path: Path) -> None:
    files = _three(tmp_path)
    tx, res = _session(tmp_path, files, auth=True, loss=0.2, receivers=3)
    assert tx.returncode == 0, tx.stderr
    _check(files, tmp_path, res)


@pytest.mark.parametrize("auth", [True, False])
def test_cold_start_first_datagrams_unusable(tmp_path: Path, auth: bool) -> None:
    """The first 400 sender datagrams (the NORM_INFO and blocks 0-5 of the first object)
    arrive unusable: authenticated, past their safe window (dropped as unsafe by TESLA);
    plain, seen and discarded.  The receiver was present from the start: it syncs to the
    first object anyway and NACKs the lost start."""
    src = tmp_path / "src"
    src.mkdir()
    files = write_random_files(src, 5, [("first.bin", 1 << 20), ("second.bin", 3000)])
    tx, res = _session(tmp_path, files, auth=auth, loss=0.02, recv_extra=["--drop-first", "400"])
    assert tx.returncode == 0, tx.stderr
    _check(files, tmp_path, res)
    st = res[0][1]["stats"]
    assert st["rx.sync_presence"] == 1
    if auth:
        assert st["tesla.drop.unsafe"] >= 390
    else:
        assert st["drop.cold_start"] == 400


def test_nothing_usable_before_the_flush(tmp_path: Path) -> None:
    """The cause of the three-receiver flake (one receiver with no object at all): its
    3 TESLA bootstraps at start were lost (20% loss: 0.8% per receiver), so every new
    datagram was dropped before verification, the next bootstrap (1 s) came during the
    flush, and a FLUSH did not synchronize it.  Here the first 3900 sender datagrams
    (all new data of the three files and the bootstraps among them) arrive unusable:
    the receiver, present from the start, syncs on the flush and NACKs everything."""
    files = _three(tmp_path)
    tx, res = _session(tmp_path, files, auth=True, loss=0.0, recv_extra=["--drop-first", "3900"])
    assert tx.returncode == 0, tx.stderr
    _check(files, tmp_path, res)
    st = res[0][1]["stats"]
    assert st["rx.sync_presence"] == 1 and st["tesla.drop.unsafe"] >= 3800


@pytest.mark.parametrize("policy", ["current", "stream", "all"])
def test_late_join(tmp_path: Path, policy: str) -> None:
    """A receiver started 1 s after the sender of a 5 MiB object (at 20 Mbit/s, about 2 s
    of data) and a 3 KB object after it: "current" (RFC 5740 §5.2 default) skips the
    object in progress and receives the next; "stream" does the same for file objects
    (it differs for streams only: tests/test_norm_repair_cycle.py); "all" asks for the
    object in progress too and receives both."""
    src = tmp_path / "src"
    src.mkdir()
    files = write_random_files(src, 6, [("big.bin", 5 << 20), ("next.bin", 3000)])
    tx, res = _session(
        tmp_path,
        files,
        auth=False,
        loss=0.0,
        recv_extra=["--join-policy", policy, "--idle-timeout", "3"],
        start_after_sender=1.0,
        rate="20M",
    )
    assert tx.returncode == 0, tx.stderr
    rc, summ, err = res[0]
    names = {Path(f["path"]).name for f in summ["files"]}
    assert (tmp_path / "out0" / "next.bin").read_bytes() == files[1].read_bytes(), err
    if policy in ("current", "stream"):
        assert names == {"next.bin"}, summ
        assert summ["stats"]["drop.not_synced"] > 0
    else:
        assert names == {"big.bin", "next.bin"}, summ
        assert (tmp_path / "out0" / "big.bin").read_bytes() == files[0].read_bytes()
        assert summ["stats"]["rx.sync_all"] == 1
        assert rc == 0, err


def test_demo_norm_repairs_injected_loss_with_nacks(capsys: pytest.CaptureFixture[str]) -> None:
    """``tesla-mcast demo --protocol norm`` (authenticated by default): injected loss is
    repaired by NACKs, the summary counts them."""
    from tesla.cli.main import main

    rc = main(
        ["demo", "--protocol", "norm", "--files", "2", "--size", "300000", "--loss", "0.1",
         "--json"]
    )  # fmt: skip
    out = capsys.readouterr()
    assert rc == 0, out.err
    summ = json.loads(out.out)
    assert summ["files_ok"] == summ["files"] == 2
    assert summ["nacks_sent"] >= 1 and summ["repairs_sent"] >= 1
    assert summ["tesla"]["accepted"] > 0
    assert "NACKs sent" in out.err and "repairs sent" in out.err
