"""alc.mmsg: batched loopback round trips (127.0.0.1 and 239.255/16 with TTL 0/1 only)."""

from __future__ import annotations

import os
import random
import socket
import struct
import time

import numpy as np
import pytest

from alc import mmsg
from alc.mmsg import Slab, gso_supported, recv_batch, send_batch, send_gso, send_slab


def _pair() -> tuple[socket.socket, socket.socket, tuple[str, int]]:
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    return rx, tx, rx.getsockname()


def _recv_all(rx: socket.socket, slab: Slab, want: int, **kw: object) -> list[bytes]:
    got: list[bytes] = []
    deadline = time.monotonic() + 5
    while len(got) < want and time.monotonic() < deadline:
        if recv_batch(rx, slab, **kw):  # type: ignore[arg-type]
            got += slab.datagrams()
        else:
            time.sleep(0.001)
    return got


@pytest.mark.parametrize("use_mmsg", [True, False])
def test_batch_round_trip(use_mmsg: bool) -> None:
    if use_mmsg and not mmsg.HAVE_MMSG:
        pytest.skip("no recvmmsg/sendmmsg on this platform")
    rx, tx, dst = _pair()
    try:
        rng = random.Random(1)
        data = [rng.randbytes(rng.randrange(1, 1500)) for _ in range(200)]
        before = time.time()
        assert send_batch(tx, data, dst, use_mmsg=use_mmsg) == 200
        slab = Slab(rows=64, width=1600)
        got = _recv_all(rx, slab, 200, use_mmsg=use_mmsg)
        assert got == data
        assert slab.addr(0) == ("127.0.0.1", tx.getsockname()[1])
        n = slab.count
        assert np.all(slab.stamps[:n] >= before)
        assert np.all(slab.lengths[:n] == [len(d) for d in data[200 - n :]])
    finally:
        rx.close()
        tx.close()


def test_slab_rows_are_views_and_send_slab() -> None:
    rx, tx, dst = _pair()
    try:
        slab = Slab(rows=8, width=256)
        for k in range(8):
            slab.data[k, :100] = k
            slab.lengths[k] = 50 + k
        assert send_slab(tx, slab, 8, dst) == 8
        out = Slab(rows=8, width=256)
        got = _recv_all(rx, out, 8)
        assert got == [bytes([k]) * (50 + k) for k in range(8)]
    finally:
        rx.close()
        tx.close()


def test_nonblocking_empty_and_blocking_timeout() -> None:
    rx, tx, _ = _pair()
    try:
        slab = Slab(rows=4, width=64)
        assert recv_batch(rx, slab) == 0
        rx.settimeout(0.05)
        t = time.monotonic()
        assert recv_batch(rx, slab, block=True) == 0
        assert time.monotonic() - t >= 0.04
    finally:
        rx.close()
        tx.close()


def test_connected_socket_and_memoryview_datagrams() -> None:
    rx, tx, dst = _pair()
    try:
        tx.connect(dst)
        buf = bytes(range(256)) * 4
        views = [memoryview(buf)[k : k + 100] for k in range(0, 1000, 100)]
        assert send_batch(tx, views) == 10
        got = _recv_all(rx, Slab(16, 512), 10)
        assert got == [bytes(v) for v in views]
    finally:
        rx.close()
        tx.close()


def test_gso_segments() -> None:
    rx, tx, dst = _pair()
    try:
        if not gso_supported(tx):
            pytest.skip("kernel without UDP_SEGMENT")
        payload = os.urandom(1000 * 7 + 300)
        try:
            n = send_gso(tx, payload, 1000, dst)
        except OSError as e:
            pytest.skip(f"GSO send refused on loopback: {e}")
        assert n == 8
        got = _recv_all(rx, Slab(16, 2048), 8)
        assert b"".join(got) == payload
        assert [len(g) for g in got] == [1000] * 7 + [300]
    finally:
        rx.close()
        tx.close()


def test_multicast_loopback_ttl0() -> None:
    group = f"239.255.{random.randrange(1, 255)}.{random.randrange(1, 255)}"
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    rx.bind(("", 0))
    port = rx.getsockname()[1]
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        mreq = struct.pack("4s4s", socket.inet_aton(group), socket.inet_aton("127.0.0.1"))
        try:
            rx.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
        except OSError as e:
            pytest.skip(f"no multicast on loopback: {e}")
        tx.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 0)
        tx.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)
        tx.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton("127.0.0.1"))
        data = [bytes([k]) * 300 for k in range(20)]
        send_batch(tx, data, (group, port))
        got = _recv_all(rx, Slab(32, 512), 20)
        if not got:
            pytest.skip("multicast loopback delivered nothing here")
        assert got == data
    finally:
        rx.close()
        tx.close()


def test_slab_validation() -> None:
    with pytest.raises(ValueError):
        Slab(rows=0)
