"""The Wireshark Lua dissector for EXT_AUTH (contrib/wireshark/rfc5776.lua), run by
tshark on captures written by ``tesla-mcast send --pcap``, reads back every EXT_AUTH
field as our codec decodes it: ALC and NORM, with and without a Group MAC, another
MAC function (HMAC-SHA-1), and Types 0-4 (the bootstrap, tags with and without key)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from alc.pcap import read_udp
from alc.receiver import parse_lct
from norm.messages import header_regions
from tesla.core import extauth as ea

pytestmark = [
    pytest.mark.interop,
    pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark not installed: .ci/run installs it"),
]

LUA = Path(__file__).resolve().parents[1] / "contrib" / "wireshark" / "rfc5776.lua"
PORT = 4000
FIELDS = [
    "rfc5776.type", "rfc5776.asid", "rfc5776.interval", "rfc5776.disclosed_key", "rfc5776.mac",
    "rfc5776.group_mac", "rfc5776.commitment", "rfc5776.signature", "rfc5776.d",
    "rfc5776.t_int", "rfc5776.n", "rfc5776.prf_type", "rfc5776.mac_type",
    "rfc5776.disclosed_key_interval",
]


def _capture(tmp_path: Path, protocol: str, extra: list[str]) -> Path:
    data = tmp_path / "a.bin"
    # long enough for several key chains where the chain is short
    data.write_bytes(bytes(range(256)) * (4000 if "--chain-length" in extra else 300))
    py = [sys.executable, "-m", "tesla.cli"]
    subprocess.run(py + ["keygen", "--out", str(tmp_path / "S")], check=True, capture_output=True)
    cap = tmp_path / f"{protocol}.pcap"
    subprocess.run(
        py + ["send", str(data), "--protocol", protocol, "--group", f"239.255.3.3:{PORT}",
              "--pcap", str(cap), "--dry-run", "--key", str(tmp_path / "S.pem"), *extra],
        check=True, capture_output=True, timeout=120,
    )
    return cap


def _ext_area(protocol: str, p: bytes) -> tuple[int, int]:
    if protocol == "alc":
        h = parse_lct(p)
        b0, b1 = p[0], p[1]
        hb = 4 * (((b0 >> 2) & 3) + 1) + 4 * ((b1 >> 7) & 1) + 4 * ((b1 >> 5) & 3) + 4 * ((b1 >> 4) & 1)
        return 4 + hb, h.hlen
    return header_regions(p)


def _hex(b: bytes | None) -> str:
    return b.hex() if b else ""


@pytest.mark.parametrize(
    ("protocol", "extra"),
    [
        ("alc", []),
        ("norm", []),
        ("alc", ["--group-mac", "GMAC", "--mac", "hmac-sha1"]),
        ("norm", ["--group-mac", "GMAC"]),
        ("alc", ["--chain-length", "8", "--tint", "10"]),
        ("norm", ["--chain-length", "8", "--tint", "10"]),
    ],
    ids=["alc", "norm", "alc-groupmac-sha1", "norm-groupmac", "alc-chains", "norm-chains"],
)
def test_lua_dissector_reads_every_ext_auth_field(tmp_path: Path, protocol: str, extra: list[str]) -> None:
    if "GMAC" in extra:
        (tmp_path / "gk").write_bytes(b"\x01" * 32)
        extra = [str(tmp_path / "gk") if x == "GMAC" else x for x in extra]
    cap = _capture(tmp_path, protocol, extra)
    cmd = ["tshark", "-X", f"lua_script:{LUA}", "-r", str(cap), "-d", f"udp.port=={PORT},{protocol}",
           "-T", "fields", "-E", "separator=;", "-E", "occurrence=f"]
    for f in FIELDS:
        cmd += ["-e", f]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=120)
    rows = [line.split(";") for line in out.stdout.splitlines()]
    pkts = [d.payload for d in read_udp(cap)]
    assert len(rows) == len(pkts) > 20
    layout: ea.TagLayout | None = None
    d = 0
    seen: set[int] = set()
    for p, row in zip(pkts, rows, strict=True):
        got = dict(zip(FIELDS, row, strict=True))
        start, end = _ext_area(protocol, p)
        off = ea.find_ext_auth(p, start, end, 0)
        msg = ea.decode(p, off, layout)
        assert int(got["rfc5776.type"]) == msg.type
        assert int(got["rfc5776.asid"]) == msg.asid
        seen.add(msg.type)
        if isinstance(msg, ea.Bootstrap):
            layout = ea.TagLayout(
                key_len=ea.KEY_LEN[msg.prf_id], mac_len=ea.MAC_LEN[msg.mac_id],
                sig_len=len(msg.signature), group_mac=msg.group_mac is not None,
            )
            d = msg.d
            assert got["rfc5776.commitment"] == msg.commitment.hex()
            assert got["rfc5776.signature"] == msg.signature.hex()
            assert int(got["rfc5776.interval"]) == msg.i
            assert (int(got["rfc5776.d"]), int(got["rfc5776.t_int"]), int(got["rfc5776.n"])) == (
                msg.d, msg.t_int_ms, msg.n)
            assert (int(got["rfc5776.prf_type"]), int(got["rfc5776.mac_type"])) == (msg.prf_id, msg.mac_id)
            assert got["rfc5776.group_mac"] == _hex(msg.group_mac)
        else:
            assert isinstance(msg, ea.AuthTag)
            assert int(got["rfc5776.interval"]) == msg.i
            assert got["rfc5776.disclosed_key"] == _hex(msg.key)
            assert got["rfc5776.mac"] == msg.mac.hex()
            assert got["rfc5776.group_mac"] == _hex(msg.group_mac)
            if msg.key and msg.i >= d:
                assert int(got["rfc5776.disclosed_key_interval"]) == msg.i - d
    assert {0, 1, 2} <= seen, seen
    if "--chain-length" in extra:  # chain switches: commitments and last keys
        assert {3, 4} <= seen, seen
    if "--group-mac" in extra:
        assert all(r[FIELDS.index("rfc5776.group_mac")] for r in rows)
