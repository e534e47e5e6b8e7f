"""UDP multicast driver on loopback: 239.255.x.y groups, interface 127.0.0.1, TTL 1, loop on.

Random group and port per test (other test runs share this machine).
"""

from __future__ import annotations

import hashlib
import os
import random
import socket
import time
from typing import Any

import pytest

from alc.engine import BatchEntry
from alc.mmsg import Slab, enable_rx_metadata
from alc.net import (
    Driver,
    Endpoint,
    LossInjector,
    drain_endpoint,
    iface_address,
    open_socket,
    parse_group,
)
from alc.receiver import AlcReceiver, FileReceived, ReceiverConfig
from alc.sender import AlcSender, SenderConfig


def rand_group() -> tuple[str, int]:
    r = random.SystemRandom()
    return f"239.255.{r.randint(1, 254)}.{r.randint(1, 254)}", r.randint(20000, 60000)


def test_parse_group_and_iface() -> None:
    assert parse_group("239.255.1.2:4000") == ("239.255.1.2", 4000)
    for bad in ("239.255.1.2", "x:1", "239.255.1.2:0", "1.2.3.4:99999"):
        with pytest.raises(ValueError):
            parse_group(bad)
    assert iface_address("lo") == "127.0.0.1"
    assert iface_address("127.0.0.1") == "127.0.0.1"
    assert iface_address(None) is None
    with pytest.raises(ValueError):
        iface_address("no-such-if0")


def test_loss_injector_is_seeded() -> None:
    a = [LossInjector(0.1, seed=3).drop() for _ in range(1)]
    l1 = LossInjector(0.1, seed=3)
    l2 = LossInjector(0.1, seed=3)
    s1 = [l1.drop() for _ in range(10000)]
    assert s1 == [l2.drop() for _ in range(10000)]
    assert 800 < sum(s1) < 1200 and a == s1[:1]
    assert not any(LossInjector(0.0).drop() for _ in range(100))


def transfer(files: dict[str, bytes], *, fec: str, ratio: float, loss: float, rate: float,
             timeout: float) -> tuple[dict[str, bytes], AlcReceiver, Driver, float]:
    group = rand_group()
    tsi = random.randint(1, 1 << 30)
    sender = AlcSender(SenderConfig(tsi=tsi, rate_bps=rate, fec=fec, repair_ratio=ratio, burst_bytes=256 * 1024))
    for n, d in files.items():
        sender.add_bytes(d, n)
    rx = AlcReceiver(ReceiverConfig(tsi=tsi, session_timeout=5, object_timeout=5))
    rsock = open_socket(group, "127.0.0.1", receive=True, ttl=1, loop=True)
    ssock = open_socket(group, "127.0.0.1", receive=False, ttl=1, loop=True)
    drv = Driver()
    drv.add(rx, rsock, loss=LossInjector(loss, seed=42) if loss else None)
    drv.add(sender, ssock, group, receive=False)
    got: dict[str, bytes] = {}

    def done() -> bool:
        while (e := rx.next_event()) is not None:
            if isinstance(e, FileReceived):
                got[e.name] = e.data
        return rx.finished is not None or (rx.fdt_complete and rx.all_announced_complete())

    t0 = time.time()
    try:
        drv.run(until=done, timeout=timeout)
    finally:
        rsock.close()
        ssock.close()
        drv.close()
    return got, rx, drv, time.time() - t0


def test_loopback_small_files_nocode() -> None:
    files = {"a.txt": b"multicast!" * 1000, "b.bin": os.urandom(70_000), "empty": b""}
    got, rx, drv, _ = transfer(files, fec="nocode", ratio=0.0, loss=0.0, rate=50e6, timeout=30)
    assert got == files
    assert drv.stats["tx"] == rx.stats["packets"] or rx.all_announced_complete()


@pytest.mark.slow
def test_loopback_20mb_raptorq_10pct_loss() -> None:
    data = os.urandom(20_000_000)
    got, rx, drv, elapsed = transfer({"big.bin": data}, fec="raptorq", ratio=0.35, loss=0.10,
                                     rate=400e6, timeout=120)
    assert hashlib.sha256(got["big.bin"]).digest() == hashlib.sha256(data).digest()
    lost = drv.stats["drop.injected_loss"]
    assert 0.08 < lost / drv.stats["rx"] < 0.12
    assert rx.stats["fec.blocks_decoded"] > 100
    print(f"20 MB RaptorQ over loopback with 10% loss: {elapsed:.2f} s")


@pytest.mark.slow
def test_loopback_20mb_reed_solomon_10pct_loss() -> None:
    data = os.urandom(20_000_000)
    got, rx, drv, elapsed = transfer({"big.bin": data}, fec="rs", ratio=0.35, loss=0.10,
                                     rate=400e6, timeout=180)
    assert got.get("big.bin") == data
    assert drv.stats["drop.injected_loss"] > 1000
    assert rx.stats["fec.blocks_decoded"] > 100
    print(f"20 MB Reed-Solomon over loopback with 10% loss: {elapsed:.2f} s")


class _Recorder(BatchEntry):
    """An engine recording which batch entry the driver used."""

    def __init__(self, takes_slab: bool) -> None:
        self.takes_slab = takes_slab
        self.stats: dict[str, int] = {}
        self.got: list[tuple[str, list[bytes], list[float]]] = []

    def receive_slab(self, slab: Slab, addrs: Any) -> None:
        n = slab.count
        rows = [slab.data[k, : int(slab.lengths[k])].tobytes() for k in range(n)]
        assert len(addrs) == n
        self.got.append(("slab", rows, slab.stamps[:n].tolist()))

    def receive_datagrams(self, datagrams: Any, addrs: Any, times: Any) -> None:
        self.got.append(("list", list(datagrams), [float(t) for t in times]))


@pytest.mark.parametrize("takes_slab", [True, False])
def test_drain_hands_slabs_to_engines_that_declare_the_slab_entry(takes_slab: bool) -> None:
    """drain_endpoint: an engine declaring ``takes_slab`` gets the recvmmsg slab (the rows
    and kernel stamps), any other the datagram list; with injected loss every engine
    gets the (thinned) list."""
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        rx.bind(("127.0.0.1", 0))
        rx.setblocking(False)
        enable_rx_metadata(rx)
        eng = _Recorder(takes_slab)
        ep = Endpoint(eng, rx, slab=Slab(16, 256))
        assert (ep.slab_entry is not None) == takes_slab
        sent = [bytes([k]) * (10 + k) for k in range(5)]
        for d in sent:
            tx.sendto(d, rx.getsockname())
        time.sleep(0.05)
        before = time.time()
        stats: dict[str, int] = {}
        assert drain_endpoint(ep, stats) == 5
        kind, rows, stamps = eng.got[-1]
        assert kind == ("slab" if takes_slab else "list") and rows == sent
        assert all(before - 5 < t <= before + 1 for t in stamps)
        ep.loss = LossInjector(0.5, seed=1)
        for d in sent:
            tx.sendto(d, rx.getsockname())
        time.sleep(0.05)
        drain_endpoint(ep, stats)
        assert eng.got[-1][0] == "list"
    finally:
        rx.close()
        tx.close()


class _Silence(BatchEntry):
    """A receiver whose timer is an inactivity deadline: ``T`` after the newest arrival
    it processed.  It records every timer call made while the datagrams it had not read
    yet had all arrived before that deadline (a false silence)."""

    T = 0.05

    def __init__(self, total: int) -> None:
        self.stats: dict[str, int] = {}
        self.total = total
        self.seen = 0
        self.last: float | None = None
        self.false_silence: list[tuple[float, float, int]] = []

    def receive_datagrams(self, datagrams: Any, addrs: Any, times: Any) -> None:
        self.seen += len(datagrams)
        self.last = max(float(t) for t in times)

    def get_timer(self) -> float | None:
        return None if self.last is None else self.last + self.T

    def handle_timer(self, now: float) -> None:
        if self.seen < self.total:  # datagrams still queued in the socket
            self.false_silence.append((now, self.last or 0.0, self.seen))
        self.last = now  # one timeout per silence

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Any]]:
        return []

    def next_event(self) -> Any:
        return None


def test_timers_wait_for_the_datagrams_still_queued() -> None:
    """A receiver 0.3 s behind (a backlog of 3000 datagrams, all sent at once, read 64 at a
    time): its timers run at the arrival time of the newest datagram read while the socket
    still holds more, so an inactivity deadline never fires while the sender's datagrams
    are merely queued; once they are all read, time is the clock again.  (Fails with the
    clock as timer time: the deadline passes at the first timer check.)"""
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        rx.bind(("127.0.0.1", 0))
        rx.setblocking(False)
        enable_rx_metadata(rx)
        n = 3000
        for k in range(n):
            tx.sendto(k.to_bytes(4, "big") * 50, rx.getsockname())
        time.sleep(0.3)  # the receiver starts late: everything is queued
        eng = _Silence(n)
        drv = Driver(batch=64)
        drv.add(eng, rx, None)
        drv.run(until=lambda: eng.seen >= n, timeout=10)
        assert eng.seen == n and drv.stats.get("drop.socket_overflow", 0) == 0
        assert eng.false_silence == []
    finally:
        rx.close()
        tx.close()
