"""Live interop with ypo/flute (PyPI ``flute-alc``, import ``flute``), both directions.

Its sender's datagrams are fed to our AlcReceiver; our AlcSender's datagrams to its
Receiver (which writes files into a directory).  Compact No-Code and Reed-Solomon
(FEC Encoding ID 5), files bit-exact.
"""

from __future__ import annotations

import hashlib
import os
import random
import time
from pathlib import Path

import pytest

from alc.output import flute_relpath
from alc.receiver import AlcReceiver, FileReceived, ReceiverConfig
from alc.sender import AlcSender, SenderConfig

flute = pytest.importorskip("flute")
from flute import receiver as fl_receiver  # noqa: E402
from flute import sender as fl_sender  # noqa: E402

pytestmark = pytest.mark.interop

FILES = {"one.bin": 1, "small.bin": 3000, "mid.bin": 100_000, "big.bin": 700_001}


def _payloads() -> dict[str, bytes]:
    return {n: hashlib.sha256(n.encode()).digest() * (s // 32) + os.urandom(s % 32) for n, s in FILES.items()}


def _flute_packets(oti: object, files: dict[str, bytes], tsi: int) -> list[bytes]:
    s = fl_sender.Sender(tsi, oti, fl_sender.Config())
    for name, data in files.items():
        s.add_object_from_buffer(data, "application/octet-stream", f"file:///{name}", None)
    s.publish()
    out = []
    while (p := s.read()) is not None:
        out.append(bytes(p))
    return out


def _our_receive(pkts: list[bytes], tsi: int, loss: float = 0.0, **cfg: object) -> dict[str, bytes]:
    rx = AlcReceiver(ReceiverConfig(tsi=tsi, **cfg))  # type: ignore[arg-type]
    rng = random.Random(11)
    now = time.time()
    for p in pkts:
        if loss and rng.random() < loss:
            continue
        rx.receive_datagram(p, ("127.0.0.1", 5000), now)
    got = {}
    while (e := rx.next_event()) is not None:
        if isinstance(e, FileReceived):
            got[flute_relpath(e.name)] = e.data
    assert rx.all_announced_complete(), rx.stats
    return got


@pytest.mark.parametrize(
    "make_oti",
    [
        pytest.param(lambda: fl_sender.Oti.new_no_code(1400, 64), id="nocode"),
        pytest.param(lambda: fl_sender.Oti.new_reed_solomon_rs28(1024, 32, 8), id="rs28"),
    ],
)
def test_flute_sender_to_our_receiver(make_oti: object) -> None:
    files = _payloads()
    pkts = _flute_packets(make_oti(), files, tsi=42)  # type: ignore[operator]
    assert _our_receive(pkts, 42) == files


@pytest.mark.parametrize("fec,ratio", [("nocode", 0.0), ("rs", 0.25)])
def test_our_sender_to_flute_receiver(tmp_path: Path, fec: str, ratio: float) -> None:
    files = _payloads()
    s = AlcSender(SenderConfig(tsi=77, fec=fec, repair_ratio=ratio, rate_bps=None, rs_matrix="flute"))
    for name, data in files.items():
        s.add_bytes(data, name)
    pkts = s.all_packets(time.time())
    r = fl_receiver.Receiver(
        fl_receiver.UDPEndpoint("239.255.1.1", 3000), 77, fl_receiver.ObjectWriterBuilder(str(tmp_path)),
        fl_receiver.Config(),
    )
    for p in pkts:
        r.push(p)
    got = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert got == files


def test_flute_rs_parity_repairs_loss() -> None:
    """10% loss: flute-alc's parity (rs_matrix="flute") repairs the blocks in our receiver."""
    files = _payloads()
    pkts = _flute_packets(fl_sender.Oti.new_reed_solomon_rs28(1024, 32, 8), files, tsi=43)
    assert _our_receive(pkts, 43, loss=0.1, rs_matrix="flute") == files


def test_our_rs_parity_repairs_loss_in_flute(tmp_path: Path) -> None:
    """10% loss: our parity (rs_matrix="flute") repairs the blocks in flute-alc's receiver."""
    files = _payloads()
    s = AlcSender(SenderConfig(tsi=78, fec="rs", repair_ratio=0.3, rate_bps=None, rs_matrix="flute"))
    for name, data in files.items():
        s.add_bytes(data, name)
    pkts = s.all_packets(time.time())
    rng = random.Random(21)
    r = fl_receiver.Receiver(
        fl_receiver.UDPEndpoint("239.255.1.1", 3000), 78, fl_receiver.ObjectWriterBuilder(str(tmp_path)),
        fl_receiver.Config(),
    )
    dropped = 0
    for p in pkts:
        if rng.random() < 0.1:
            dropped += 1
            continue
        r.push(p)
    assert dropped > 10
    got = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert got == files
