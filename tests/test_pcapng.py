"""pcapng input (the default format of Wireshark and tshark) wherever a capture is read:
the reader gives the same datagrams and timestamps as the classic pcap of the same
capture, IPv6 frames included, and ``receive --from-pcap`` rebuilds files from a pcapng
written by tshark."""

from __future__ import annotations

import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from alc.errors import DecodeError
from alc.pcap import PcapReader, read_udp

NEED_EDITCAP = pytest.mark.skipif(
    shutil.which("editcap") is None, reason="editcap (Wireshark) not installed: .ci/run installs tshark"
)


@NEED_EDITCAP
@pytest.mark.parametrize("name", ["flute-plain.pcap", "nrl-norm-rxloss10.pcap"])
def test_pcapng_equals_pcap(shared_dir: Path, tmp_path: Path, name: str) -> None:
    src = shared_dir / "interop" / name
    ng = tmp_path / (name + "ng")
    subprocess.run(["editcap", "-F", "pcapng", str(src), str(ng)], check=True)
    assert ng.read_bytes()[:4] == b"\x0a\x0d\x0d\x0a"
    a = list(read_udp(src))
    b = list(read_udp(ng))
    assert len(a) == len(b) > 100
    for x, y in zip(a, b, strict=True):
        assert (x.src, x.dst, x.payload) == (y.src, y.dst, y.payload)
        assert abs(x.ts - y.ts) < 1e-6


def _block(btype: int, body: bytes) -> bytes:
    body += b"\0" * (-len(body) % 4)
    n = len(body) + 12
    return struct.pack("<II", btype, n) + body + struct.pack("<I", n)


def _ipv6_udp(src: bytes, dst: bytes, sport: int, dport: int, payload: bytes) -> bytes:
    udp = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    ip6 = struct.pack("!IHBB", 6 << 28, len(udp), 17, 1) + src + dst
    eth = b"\0" * 12 + b"\x86\xdd"
    return eth + ip6 + udp


@pytest.mark.parametrize(("tsresol", "tick"), [(3, 1e-3), (9, 1e-9), (0x80 | 10, 2.0**-10)])
def test_pcapng_ipv6_handbuilt_with_tsresol_and_offset(
    tmp_path: Path, tsresol: int, tick: float
) -> None:
    shb = _block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1))
    # if_tsresol, if_tsoffset = 1000 s
    opts = struct.pack("<HHB3x", 9, 1, tsresol) + struct.pack("<HHq", 14, 8, 1000) + b"\0\0\0\0"
    idb = _block(1, struct.pack("<HHI", 1, 0, 65535) + opts)
    src = bytes.fromhex("fe800000000000000000000000000001")
    dst = bytes.fromhex("ff150000000000000000000000000001")
    frame = _ipv6_udp(src, dst, 5000, 4000, b"hello")
    ts = round(1_700_000_000.125 / tick)
    epb = _block(6, struct.pack("<IIIII", 0, ts >> 32, ts & 0xFFFFFFFF, len(frame), len(frame)) + frame)
    nrb = _block(4, b"\0\0\0\0")  # a name resolution block: skipped
    p = tmp_path / "v6.pcapng"
    p.write_bytes(shb + idb + nrb + epb)
    got = list(read_udp(p, dst_port=4000))
    assert len(got) == 1
    d = got[0]
    assert d.payload == b"hello"
    assert d.src == ("fe80::1", 5000) and d.dst == ("ff15::1", 4000)
    assert d.ts == pytest.approx(1_700_000_000.125 + 1000, abs=1e-6)


@pytest.mark.parametrize(
    "damage",
    [
        lambda b: b[:-3],  # truncated last block
        lambda b: b[:28] + b"\xff\xff\xff\x7f" + b[32:],  # huge block length
        lambda b: b[:8] + b"\0\0\0\0" + b[12:],  # bad byte-order magic
    ],
)
def test_pcapng_damaged_is_a_decode_error_or_counted(tmp_path: Path, damage: object) -> None:
    shb = _block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1))
    idb = _block(1, struct.pack("<HHI", 1, 0, 65535))
    frame = _ipv6_udp(b"\0" * 16, b"\0" * 16, 1, 2, b"x")
    epb = _block(6, struct.pack("<IIIII", 0, 0, 0, len(frame), len(frame)) + frame)
    p = tmp_path / "bad.pcapng"
    p.write_bytes(damage(shb + idb + epb))  # type: ignore[operator]
    r = PcapReader(p)
    try:
        list(r)
    except DecodeError:
        return
    assert r.stats.get("drop.truncated_record", 0) == 1


@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark not installed: .ci/run installs it")
def test_receive_from_tshark_pcapng_rebuilds_files(tmp_path: Path) -> None:
    """``tesla-mcast send --pcap`` (classic pcap), rewritten by tshark in its default
    format (pcapng), replayed by ``receive --from-pcap``: the files come back."""
    files = []
    for k, size in enumerate((1000, 70_000)):
        f = tmp_path / f"f{k}.bin"
        f.write_bytes(bytes((k * 7 + i) % 251 for i in range(size)))
        files.append(f)
    cap = tmp_path / "tx.pcap"
    py = [sys.executable, "-m", "tesla.cli"]
    key = tmp_path / "S"
    subprocess.run(py + ["keygen", "--out", str(key)], check=True, capture_output=True)
    subprocess.run(
        py + ["send", *map(str, files), "--protocol", "alc", "--group", "239.255.41.7:4999",
              "--pcap", str(cap), "--key", f"{key}.pem", "--dry-run"],
        check=True, capture_output=True, timeout=120,
    )
    ng = tmp_path / "tx.pcapng"
    subprocess.run(["tshark", "-r", str(cap), "-w", str(ng)], check=True, capture_output=True)
    assert ng.read_bytes()[:4] == b"\x0a\x0d\x0d\x0a"
    out = tmp_path / "out"
    r = subprocess.run(
        py + ["receive", "--protocol", "alc", "--group", "239.255.41.7:4999", "--from-pcap",
              str(ng), "--out", str(out), "--sender-key", f"{key}.pub"],
        capture_output=True, text=True, timeout=120,
    )
    assert r.returncode == 0, r.stderr
    for f in files:
        assert (out / f.name).read_bytes() == f.read_bytes()
