"""tesla-mcast send / receive / demo (ALC): exit status and messages."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import rand_group

from alc.output import OutputError, flute_relpath
from alc.pcap import PcapWriter, read_udp
from tesla.cli.main import RUNNERS, build_parser, main
from tesla.cli.run_alc import parse_rate

PY = [sys.executable, "-m", "tesla.cli"]


def make_inputs(tmp_path: Path) -> list[Path]:
    d = tmp_path / "in"
    d.mkdir()
    paths = []
    for name, n in (("a.txt", 10), ("b.bin", 150_000), ("c.bin", 1_000_001)):
        p = d / name
        p.write_bytes(os.urandom(n))
        paths.append(p)
    return paths


def test_parse_helpers() -> None:
    assert parse_rate("20M") == 20e6 and parse_rate("800k") == 800e3 and parse_rate("1e6") == 1e6
    assert parse_rate("1.5G") == 1.5e9
    # FLUTE paths are kept below --out (docs/security/output.md); escapes are refused
    assert flute_relpath("file:///tmp/x/y.bin") == "tmp/x/y.bin"
    assert flute_relpath("http://example.com/a/b.html") == "a/b.html"
    for bad in ("../../etc/passwd", "..", "", "http://host/"):
        with pytest.raises(OutputError):
            flute_relpath(bad)


def test_protocol_dispatch_point() -> None:
    assert "alc" in RUNNERS and set(RUNNERS["alc"]()) == {"send", "receive"}
    args = build_parser().parse_args(["receive", "--protocol", "alc", "--group", "239.255.1.1:5000", "--out", "x"])
    assert args.command == "receive" and args.protocol == "alc"


def test_usage_errors() -> None:
    with pytest.raises(SystemExit) as e:
        main(["send", "--no-auth", "x", "--protocol", "alc"])  # no --group
    assert e.value.code == 2
    with pytest.raises(SystemExit):
        main(["send", "--no-auth", "x", "--group", "239.255.1.1:5000", "--fec", "ldpc"])


def test_send_pcap_then_receive_from_pcap(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    files = make_inputs(tmp_path)
    pcap = tmp_path / "s.pcap"
    group = rand_group()
    assert main(["send", "--no-auth", *map(str, files), "--protocol", "alc", "--group", group, "--fec", "rs",
                 "--repair-ratio", "0.2", "--tsi", "99", "--pcap", str(pcap), "--dry-run", "-q"]) == 0
    out = tmp_path / "out"
    assert main(["receive", "--no-auth", "--protocol", "alc", "--group", group, "--out", str(out),
                 "--from-pcap", str(pcap), "--tsi", "99", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["complete"] and summary["received"] == 3
    for f in files:
        assert (out / f.name).read_bytes() == f.read_bytes()
    # wrong TSI: nothing announced -> exit 1, clear message
    assert main(["receive", "--no-auth", "--protocol", "alc", "--group", group, "--out", str(out),
                 "--from-pcap", str(pcap), "--tsi", "98"]) == 1
    assert "no FDT received" in capsys.readouterr().err


def test_receive_from_pcap_with_missing_packets_fails(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    files = make_inputs(tmp_path)
    full = tmp_path / "full.pcap"
    group = rand_group()
    main(["send", "--no-auth", *map(str, files), "--group", group, "--pcap", str(full), "--dry-run", "-q"])
    cut = tmp_path / "cut.pcap"
    with PcapWriter(cut) as w:
        for i, d in enumerate(read_udp(full)):
            if i % 50 != 7:
                w.write(d.ts, d.src, d.dst, d.payload)
    rc = main(["receive", "--no-auth", "--group", group, "--out", str(tmp_path / "o"), "--from-pcap", str(cut)])
    err = capsys.readouterr().err
    assert rc == 1
    assert "not received bit-exact" in err and "c.bin" in err


@pytest.mark.slow
def test_send_and_receive_two_processes_loopback(tmp_path: Path) -> None:
    files = make_inputs(tmp_path)
    group = rand_group()
    out = tmp_path / "out"
    rx = subprocess.Popen(
        PY + ["receive", "--no-auth", "--protocol", "alc", "--group", group, "--iface", "127.0.0.1", "--out", str(out),
              "--tsi", "1234", "--timeout", "60", "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    time.sleep(1.0)  # let it join the group
    tx = subprocess.run(
        PY + ["send", "--no-auth", *map(str, files), "--protocol", "alc", "--group", group, "--iface", "lo",
              "--rate", "100M", "--fec", "rs", "--repair-ratio", "0.2", "--tsi", "1234"],
        capture_output=True, text=True, timeout=120,
    )
    assert tx.returncode == 0, tx.stderr
    stdout, stderr = rx.communicate(timeout=90)
    assert rx.returncode == 0, stderr
    summary = json.loads(stdout)
    assert summary["complete"]
    for f in files:
        assert hashlib.sha256((out / f.name).read_bytes()).digest() == hashlib.sha256(f.read_bytes()).digest()


def test_receive_times_out_without_sender(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["receive", "--no-auth", "--group", rand_group(), "--iface", "127.0.0.1", "--out", str(tmp_path), "--timeout", "0.5"])
    assert rc == 1
    assert "no FDT received" in capsys.readouterr().err


def test_demo_runs(capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["demo", "--files", "2", "--size", "300000", "--rate", "100M", "--json"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    s = json.loads(captured.out)
    assert s["files_ok"] == 2 and s["bytes"] > 300000 and s["packets_sent"] > 0
    assert "summary: files 2/2 bit-exact" in captured.err
