"""pcap reader/writer/replayer and the rt-libflute capture replayed through the CLI."""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path

import pytest

from alc.errors import DecodeError
from alc.pcap import PcapWriter, read_udp, replay
from alc.receiver import AlcReceiver, FileReceived
from alc.sender import AlcSender, SenderConfig
from tesla.cli.main import main

FLUTE_SHA256 = {
    "f1k.bin": "1e61cf1292e1119d184f6e3a8e8ed3d107d64e74a528c1e618cdfbadf02b6760",
    "f100k.bin": "da43bd078ff4fa3cda83a69d694e0c459dfea2fa459b3cf06790871c6a03b219",
    "f1m.bin": "ca5f7320cb2e647a8db67adef7e0ec97733a47a9c6dafbc650dfd928bc879f9e",
}


def test_writer_reader_roundtrip(tmp_path: Path) -> None:
    p = tmp_path / "x.pcap"
    with PcapWriter(p) as w:
        for i in range(5):
            w.write(1000.0 + i * 0.25, ("127.0.0.1", 5000 + i), ("239.255.1.2", 4000 + (i % 2)), bytes([i]) * (i + 1))
    got = list(read_udp(p))
    assert [d.payload for d in got] == [bytes([i]) * (i + 1) for i in range(5)]
    assert got[2].ts == pytest.approx(1000.5)
    assert got[3].src == ("127.0.0.1", 5003)
    assert [d.dst for d in read_udp(p, dst_port=4001)] == [("239.255.1.2", 4001)] * 2
    assert list(read_udp(p, dst_addr="239.255.9.9")) == []


def test_reader_rejects_garbage(tmp_path: Path) -> None:
    p = tmp_path / "bad.pcap"
    p.write_bytes(b"not a pcap file at all, clearly")
    with pytest.raises(DecodeError):
        list(read_udp(p))
    p.write_bytes(b"\x0a\x0d\x0d\x0a" + bytes(40))
    with pytest.raises(DecodeError):
        list(read_udp(p))


def test_reader_linux_sll_and_raw(tmp_path: Path) -> None:
    ip = bytes.fromhex("4500002000004000011100007f000001efff0102")
    udp = struct.pack("!HHHH", 1111, 2222, 12, 0) + b"abcd"
    for linktype, prefix in ((113, bytes(14) + b"\x08\x00"), (101, b""), (228, b"")):
        p = tmp_path / f"l{linktype}.pcap"
        frame = prefix + ip + udp
        p.write_bytes(
            struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, linktype)
            + struct.pack("<IIII", 7, 500000, len(frame), len(frame))
            + frame
        )
        (d,) = list(read_udp(p))
        assert d.payload == b"abcd" and d.dst == ("239.255.1.2", 2222) and d.ts == 7.5


def test_replay_uses_capture_time(tmp_path: Path) -> None:
    s = AlcSender(SenderConfig(tsi=9, rate_bps=None))
    s.add_bytes(b"hello world" * 100, "h.txt")
    p = tmp_path / "s.pcap"
    with PcapWriter(p) as w:
        for i, pkt in enumerate(s.all_packets(2000.0)):
            w.write(2000.0 + i, ("127.0.0.1", 1), ("239.255.3.4", 4444), pkt)
    rx = AlcReceiver()
    last = replay(rx, p, dst_port=4444)
    assert rx.first_packet == 2000.0
    assert last is not None and last >= 2000.0
    evs = []
    while (e := rx.next_event()) is not None:
        evs.append(e)
    files = [e for e in evs if isinstance(e, FileReceived)]
    assert [f.data for f in files] == [b"hello world" * 100]


def test_receive_from_pcap_flute_plain(shared_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cap = shared_dir / "interop" / "flute-plain.pcap"
    out = tmp_path / "out"
    rc = main(["receive", "--no-auth", "--protocol", "alc", "--group", "239.255.77.78:40085", "--out", str(out),
               "--from-pcap", str(cap), "--json"])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["complete"] and summary["announced"] == 3
    for name, digest in FLUTE_SHA256.items():
        assert hashlib.sha256((out / name).read_bytes()).hexdigest() == digest


def test_receive_from_pcap_wrong_group_fails(shared_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cap = shared_dir / "interop" / "flute-plain.pcap"
    rc = main(["receive", "--no-auth", "--protocol", "alc", "--group", "239.255.77.78:40086", "--out", str(tmp_path),
               "--from-pcap", str(cap)])
    assert rc == 1
    assert "no FDT received" in capsys.readouterr().err


def test_reader_never_raises_other_than_decodeerror(tmp_path: Path) -> None:
    from hypothesis import given, settings
    from hypothesis import strategies as st

    @settings(max_examples=200, deadline=None)
    @given(st.binary(max_size=400), st.sampled_from([0, 1, 101, 113, 228, 276, 999]))
    def run(body: bytes, linktype: int) -> None:
        p = tmp_path / "fuzz.pcap"
        p.write_bytes(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, linktype) + body)
        try:
            list(read_udp(p))
        except DecodeError:
            pass

    run()
