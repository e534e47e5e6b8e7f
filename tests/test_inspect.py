"""``tesla-mcast inspect``: a line (or JSON object) per datagram of a capture, and offline
verification with the sender's key: datagrams altered in a capture are reported as
dropped, with their reasons, and only those."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from alc.pcap import PcapWriter, read_udp

PY = [sys.executable, "-m", "tesla.cli"]
PORT = 4000


def _capture(tmp_path: Path, protocol: str) -> tuple[Path, Path]:
    data = tmp_path / "a.bin"
    data.write_bytes(bytes(range(256)) * 400)
    subprocess.run(PY + ["keygen", "--out", str(tmp_path / "S")], check=True, capture_output=True)
    cap = tmp_path / f"{protocol}.pcap"
    subprocess.run(
        PY + ["send", str(data), "--protocol", protocol, "--group", f"239.255.3.3:{PORT}",
              "--pcap", str(cap), "--dry-run", "--key", str(tmp_path / "S.pem")],
        check=True, capture_output=True, timeout=120,
    )
    return cap, tmp_path / "S.pub"


def _inspect(cap: Path, key: Path | None, *extra: str) -> list[dict]:
    cmd = PY + ["inspect", str(cap), "--json", *extra]
    if key is not None:
        cmd += ["--sender-key", str(key)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return [json.loads(line) for line in r.stdout.splitlines()]


@pytest.mark.parametrize("protocol", ["alc", "norm"])
def test_inspect_reports_exactly_the_altered_datagrams(tmp_path: Path, protocol: str) -> None:
    cap, pub = _capture(tmp_path, protocol)
    clean = _inspect(cap, pub)
    summary = clean[-1]
    rows = clean[:-1]
    assert summary["summary"] and summary["protocol"] == protocol and summary["verified"]
    assert [r["index"] for r in rows] == list(range(len(rows)))
    clean_drops = {r["index"] for r in rows if r["verdict"] != "accepted"}
    # not accepted: byte-identical repeats (empty key-disclosure fillers, the FDT sent
    # twice) and the key-disclosure tail after the last data (intervals whose own key is
    # disclosed after the capture ends); every datagram carrying data is accepted
    last_data = max(r["interval"] for r in rows if r.get("payload", 0) > 100)
    for r in rows:
        if r["verdict"] != "accepted":
            assert r["reason"] == "duplicate" or (
                r["interval"] > last_data and r["payload"] == 0
            ), r
    assert len(clean_drops) < 20
    # alter datagrams carrying data in the middle of the capture
    grams = list(read_udp(cap))
    data_rows = [r for r in rows if r.get("payload", 0) > 100 and r["verdict"] == "accepted"]
    picks = [data_rows[k]["index"] for k in (5, 12, 20, 33)]
    trunc = data_rows[40]["index"]
    altered = tmp_path / "altered.pcap"
    with PcapWriter(altered) as w:
        for k, d in enumerate(grams):
            p = d.payload
            if k in picks:
                p = p[:-10] + bytes([p[-10] ^ 0x5A]) + p[-9:]  # one payload octet flipped
            elif k == trunc:
                p = p[:6]  # cut inside the header
            w.write(d.ts, d.src, d.dst, p)
    got = _inspect(altered, pub)[:-1]
    assert len(got) == len(rows)
    drops = {r["index"]: r["reason"] for r in got if r["verdict"] != "accepted"}
    assert set(drops) - clean_drops == {*picks, trunc}
    for k in picks:
        assert drops[k] == "bad_mac", got[k]
    assert drops[trunc] == "malformed", got[trunc]
    # every other datagram keeps its clean verdict
    for a, b in zip(rows, got, strict=True):
        if a["index"] not in {*picks, trunc}:
            assert (a["verdict"], a["reason"]) == (b["verdict"], b["reason"])


def test_inspect_lines_without_key(tmp_path: Path) -> None:
    cap, _ = _capture(tmp_path, "alc")
    r = subprocess.run(PY + ["inspect", str(cap)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert "FDT" in r.stdout and "bootstrap" in r.stdout and "ALC data" in r.stdout
    assert "sbn=" in r.stdout and "esi=" in r.stdout and "key=K" in r.stdout
    assert lines[-1].endswith("drops: none") and "unverified" in lines[-1]
    rows = _inspect(cap, None)
    assert rows[-1]["verdicts"] == {"unverified": len(rows) - 1}
    assert rows[-1]["protocol"] == "alc"  # guessed


def test_inspect_pcapng_and_port_filter(tmp_path: Path) -> None:
    import shutil

    if shutil.which("editcap") is None:
        pytest.skip("editcap (Wireshark) not installed: .ci/run installs tshark")
    cap, pub = _capture(tmp_path, "norm")
    ng = tmp_path / "n.pcapng"
    subprocess.run(["editcap", "-F", "pcapng", str(cap), str(ng)], check=True)
    a = _inspect(cap, pub)
    b = _inspect(ng, pub, "--port", str(PORT), "--protocol", "norm")
    assert [(r.get("verdict"), r.get("reason")) for r in a[:-1]] == [
        (r.get("verdict"), r.get("reason")) for r in b[:-1]
    ]


def test_inspect_missing_file(tmp_path: Path) -> None:
    r = subprocess.run(PY + ["inspect", str(tmp_path / "nope.pcap")], capture_output=True, text=True)
    assert r.returncode == 2 and "no such file" in r.stderr
