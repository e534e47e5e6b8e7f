"""Late joiners in ALC/FLUTE (issue 14): the object carousel and the FDT repetition give
a receiver that joins during a transfer the files on the next round; FDT ``Expires``
(RFC 6726 §3.3): receivers ignore expired FDT Instances, an endless carousel renews its
FDT Instance (next ID, later Expires) before it expires."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
from helpers import PY, keygen, rand_group, wait_joined, write_random_files

from alc.errors import DecodeError
from alc.lct import header_length
from alc.pcap import PcapReader
from alc.receiver import AlcReceiver, FdtReceived, FileReceived, ReceiverConfig, parse_lct
from alc.sender import AlcSender, SenderConfig

T0 = 1_800_000_000.0
SRC = ("127.0.0.1", 4000)


def _events(rx: AlcReceiver) -> list[object]:
    out = []
    while (e := rx.next_event()) is not None:
        out.append(e)
    return out


def test_receiver_ignores_an_expired_fdt_instance() -> None:
    tx = AlcSender(SenderConfig(tsi=3, rate_bps=None, fdt_expires=-5.0))  # expired at once
    tx.add_bytes(b"x" * 3000, "a.bin")
    rx = AlcReceiver(ReceiverConfig(tsi=3))
    for p in tx.all_packets(T0):
        rx.receive_datagram(p, SRC, T0 + 1.0)
    evs = _events(rx)
    assert rx.stats.get("drop.fdt_expired", 0) >= 1
    assert not [e for e in evs if isinstance(e, (FileReceived, FdtReceived))]


def _run_carousel(join_at: float, until: float, fdt_expires: float) -> tuple[AlcSender, AlcReceiver, list[object]]:
    """Endless carousel of one file, 20 datagrams per simulated second; a receiver that
    only gets what is sent from ``join_at`` on."""
    tx = AlcSender(SenderConfig(tsi=5, rate_bps=None, carousel_rounds=0, symbol_length=500,
                                max_datagrams_per_call=1, fdt_interval=1.0,
                                fdt_expires=fdt_expires))
    tx.add_bytes(bytes(range(256)) * 40, "f.bin")  # 10240 octets = 21 symbols
    rx = AlcReceiver(ReceiverConfig(tsi=5, session_timeout=3600.0, object_timeout=3600.0))
    evs: list[object] = []
    now = T0
    while now < T0 + until:
        for p, _ in tx.datagrams_to_send(now):
            if now >= T0 + join_at:
                rx.receive_datagram(p, SRC, now)
        evs += _events(rx)
        now += 0.05
    return tx, rx, evs


def test_endless_carousel_renews_the_fdt_before_it_expires() -> None:
    # FDT valid 20 s; the receiver joins at 45 s, long after the first instance expired
    tx, rx, evs = _run_carousel(join_at=45.0, until=60.0, fdt_expires=20.0)
    assert not tx.done
    assert tx.stats.get("fdt_renewed", 0) >= 5  # every 10 s (half the validity)
    assert rx.stats.get("drop.fdt_expired", 0) == 0
    fdts = [e for e in evs if isinstance(e, FdtReceived)]
    assert fdts and fdts[0].instance_id >= 4  # a renewed instance, not the first one
    files = [e for e in evs if isinstance(e, FileReceived)]
    assert len(files) == 1 and files[0].data == bytes(range(256)) * 40


def test_renewed_fdt_ids_increase_and_expires_moves_forward() -> None:
    tx = AlcSender(SenderConfig(tsi=5, rate_bps=None, carousel_rounds=0, fdt_expires=100.0,
                                max_datagrams_per_call=1))
    tx.add_bytes(b"y" * 100, "g.bin")
    seen: dict[int, int] = {}
    from alc.fdt import decode_fdt

    for k in range(400):  # 200 s
        now = T0 + 0.5 * k
        for p, _ in tx.datagrams_to_send(now):
            h = parse_lct(p)
            if h.toi == 0:
                iid = h.fdt & 0xFFFFF
                inst = decode_fdt(tx.fdt_bytes) if iid == tx.fdt_instance_id else None
                if inst is not None:
                    seen.setdefault(iid, inst.expires)
                    # RFC 6726 §3.3: Expires always in the future when sent
                    assert inst.expires - 2208988800 > now
    ids = sorted(seen)
    assert ids == list(range(len(ids))) and len(ids) >= 4
    exp = [seen[i] for i in ids]
    assert exp == sorted(exp) and len(set(exp)) == len(exp)


def test_endless_carousel_has_no_all_packets() -> None:
    tx = AlcSender(SenderConfig(carousel_rounds=0))
    tx.add_bytes(b"z", "z")
    with pytest.raises(ValueError):
        tx.all_packets(T0)


# ----------------------------------------------------------------------------- live


@pytest.mark.slow
def test_live_receiver_joining_mid_round_one_gets_every_file(tmp_path: Path) -> None:
    """``tesla-mcast send --carousel 3`` (authenticated), a receiver started in the middle
    of round 1: every file bit-exact on the next round, authenticated."""
    priv, pub = keygen(tmp_path)
    files = write_random_files(tmp_path, 14, (("a.bin", 500_000), ("b.bin", 700_000),
                                              ("c.txt", 300_000)))
    group = rand_group()
    out = tmp_path / "out"
    pcap = tmp_path / "tx.pcap"
    # 1.5 MB at 2 Mbit/s: a round lasts ~6 s
    tx = subprocess.Popen(
        PY + ["send", *map(str, files), "--group", group, "--iface", "127.0.0.1", "--ttl", "1",
              "--key", str(priv), "--rate", "2M", "--carousel", "3", "--tsi", "77",
              "--pcap", str(pcap)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    rx = None
    try:
        assert tx.stderr is not None
        line = tx.stderr.readline()  # "TESLA: ..." is printed just before sending starts
        assert line.startswith("TESLA"), line
        time.sleep(1.0)
        rx = subprocess.Popen(
            PY + ["receive", "--group", group, "--iface", "127.0.0.1", "--out", str(out),
                  "--sender-key", str(pub), "--tsi", "77", "--timeout", "60", "--json"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert wait_joined(group.rpartition(":")[0])
        joined = time.time()
        stdout, stderr = rx.communicate(timeout=90)
        tx.communicate(timeout=90)
    finally:
        for p in (tx, rx):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()
    assert tx.returncode == 0
    assert rx.returncode == 0, stderr + stdout[-2000:]
    # the join fell inside round 1: after the first file packet, before the first
    # packet of round 2 (TOI 1, SBN 0, ESI 0 again)
    first = None
    round2 = None
    for rec in PcapReader(pcap):
        try:
            h = parse_lct(rec.payload)
            hl = header_length(rec.payload)
        except DecodeError:
            continue
        if h.toi == 1 and rec.payload[hl:hl + 4] == bytes(4):  # FEC payload ID 0/0
            if first is None:
                first = rec.ts
            elif round2 is None and rec.ts > first + 0.5:
                round2 = rec.ts
    assert first is not None and round2 is not None
    if not first < joined < round2:
        pytest.skip(f"receiver joined at {joined - first:+.2f} s, round 2 at "
                    f"{round2 - first:.2f} s: not mid round 1 (machine too slow)")
    summary = json.loads(stdout)
    t = summary["tesla"]
    assert t["bootstrapped"] and t["accepted"] > 0
    for reason in ("bad_mac", "bad_key", "malformed"):
        assert t["drops"][reason] == 0
    assert {Path(x["path"]).name for x in summary["files"]} == {f.name for f in files}
    for f in files:
        assert (out / f.name).read_bytes() == f.read_bytes(), f.name
    print(f"joined {joined - first:.2f} s into round 1 (round 2 at {round2 - first:.2f} s)")


def _timed_carousel(until: float, fdt_expires: float) -> list[tuple[float, bytes, bool]]:
    """(time, datagram, is_fdt) of an endless carousel of one file, 20 datagrams/s."""
    tx = AlcSender(SenderConfig(tsi=6, rate_bps=None, carousel_rounds=0, symbol_length=500,
                                max_datagrams_per_call=1, fdt_interval=1.0,
                                fdt_expires=fdt_expires))
    tx.add_bytes(bytes(range(256)) * 40, "f.bin")
    out = []
    now = T0
    while now < T0 + until:
        for p, _ in tx.datagrams_to_send(now):
            out.append((now, p, parse_lct(p).toi == 0))
        now += 0.05
    return out


def test_a_description_is_not_used_after_its_fdt_instance_expired() -> None:
    # RFC 6726 §3.3: the receiver MUST NOT use an FDT Instance beyond its expiration time.
    # It heard only the first instance (valid 20 s); the data comes 25 s later.
    pkts = _timed_carousel(until=30.0, fdt_expires=20.0)
    rx = AlcReceiver(ReceiverConfig(tsi=6, session_timeout=3600.0, object_timeout=3600.0))
    first_fdt = next(p for t, p, fdt in pkts if fdt)
    rx.receive_datagram(first_fdt, SRC, T0)
    for t, p, fdt in pkts:
        if not fdt and t >= T0 + 25.0:
            rx.receive_datagram(p, SRC, t)
    evs = _events(rx)
    assert rx.stats.get("fdt.description_expired", 0) == 1
    assert not [e for e in evs if isinstance(e, FileReceived)]
    # a live instance (the sender's renewal) describes it again: delivered then
    for t, p, fdt in pkts:
        if fdt and t >= T0 + 25.0:
            rx.receive_datagram(p, SRC, t)
            break
    files = [e for e in _events(rx) if isinstance(e, FileReceived)]
    assert len(files) == 1 and files[0].data == bytes(range(256)) * 40


def test_a_renewed_instance_keeps_the_description_alive() -> None:
    # the first instance expires at 20 s, the renewal heard at ~10-20 s extends it
    pkts = _timed_carousel(until=30.0, fdt_expires=20.0)
    rx = AlcReceiver(ReceiverConfig(tsi=6, session_timeout=3600.0, object_timeout=3600.0))
    for t, p, fdt in pkts:
        if fdt and t < T0 + 19.0:
            rx.receive_datagram(p, SRC, t)
    for t, p, fdt in pkts:
        if not fdt and t >= T0 + 25.0:
            rx.receive_datagram(p, SRC, t)
    files = [e for e in _events(rx) if isinstance(e, FileReceived)]
    assert rx.stats.get("fdt.description_expired", 0) == 0
    assert len(files) == 1 and files[0].data == bytes(range(256)) * 40
