"""alc.mmsg.send_packed and the numpy bookkeeping of recvmmsg (127.0.0.1 only)."""

from __future__ import annotations

import random
import socket
import time

import numpy as np
import pytest

from alc import mmsg
from alc.mmsg import Slab, recv_batch, send_packed


def _pair() -> tuple[socket.socket, socket.socket, tuple[str, int]]:
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    return rx, tx, rx.getsockname()


def _recv_all(rx: socket.socket, slab: Slab, want: int) -> list[bytes]:
    got: list[bytes] = []
    deadline = time.monotonic() + 5
    while len(got) < want and time.monotonic() < deadline:
        if recv_batch(rx, slab):
            got += slab.datagrams()
        else:
            time.sleep(0.001)
    return got


def _packed(rng: random.Random, n: int) -> tuple[bytearray, np.ndarray, np.ndarray, list[bytes]]:
    """n datagrams at random offsets of one buffer, with gaps between them."""
    buf = bytearray()
    starts, lens, want = [], [], []
    for _ in range(n):
        buf += rng.randbytes(rng.randrange(0, 9))  # gap
        d = rng.randbytes(rng.randrange(1, 1500))
        starts.append(len(buf))
        lens.append(len(d))
        want.append(d)
        buf += d
    return buf, np.array(starts), np.array(lens), want


@pytest.mark.parametrize("vector", [True, False])
def test_send_packed_round_trip(vector: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    if not vector:
        monkeypatch.setattr(mmsg, "_VECTOR_OK", False)
    rx, tx, dst = _pair()
    try:
        buf, st, ln, want = _packed(random.Random(4), 300)
        assert send_packed(tx, buf, st, ln, dst) == 300
        got = _recv_all(rx, Slab(rows=64, width=1600), 300)
        assert got == want
    finally:
        rx.close()
        tx.close()


def test_send_packed_connected_bytes_and_empty() -> None:
    rx, tx, dst = _pair()
    try:
        tx.connect(dst)
        buf, st, ln, want = _packed(random.Random(5), 20)
        assert send_packed(tx, bytes(buf), st.tolist(), ln.tolist()) == 20
        assert send_packed(tx, buf, [], []) == 0
        assert _recv_all(rx, Slab(rows=8, width=1600), 20) == want
    finally:
        rx.close()
        tx.close()


def test_send_packed_rejects_rows_outside_the_buffer() -> None:
    rx, tx, dst = _pair()
    try:
        with pytest.raises(ValueError):
            send_packed(tx, bytes(10), [5], [6], dst)
        with pytest.raises(ValueError):
            send_packed(tx, bytes(10), [0, 1], [1], dst)
    finally:
        rx.close()
        tx.close()


@pytest.mark.skipif(not mmsg.HAVE_MMSG, reason="no recvmmsg on this platform")
def test_recvmmsg_lengths_truncation_and_addresses_across_batches() -> None:
    """Lengths, MSG_TRUNC count and source addresses come from the mmsghdr array as
    numpy columns; msg_namelen is reset for the rows the previous batch used."""
    rx, tx, dst = _pair()
    try:
        slab = Slab(rows=4, width=100)
        sizes = [10, 150, 99, 100, 101, 1, 7, 300, 50]
        for k, s in enumerate(sizes):
            tx.sendto(bytes([k]) * s, dst)
        got: list[tuple[int, int]] = []
        deadline = time.monotonic() + 5
        while len(got) < len(sizes) and time.monotonic() < deadline:
            n = recv_batch(rx, slab)
            for k in range(n):
                assert slab.addr(k) == ("127.0.0.1", tx.getsockname()[1])
                got.append((int(slab.data[k, 0]), int(slab.lengths[k])))
        assert got == [(k, min(s, 100)) for k, s in enumerate(sizes)]
        assert slab.truncated == sum(s > 100 for s in sizes)
    finally:
        rx.close()
        tx.close()


@pytest.mark.parametrize("vector", [True, False])
def test_send_some_in_order_and_partial_on_eagain(vector: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """send_some sends a list in order (one sendmmsg), returns how many went out, and
    stops (without raising) where the socket refuses for want of buffer space."""
    if not vector:
        monkeypatch.setattr(mmsg, "_VECTOR_OK", False)
    rx, tx, dst = _pair()
    try:
        tx.setblocking(False)
        _, _, _, want = _packed(random.Random(6), 200)
        assert mmsg.send_some(tx, want, dst) == 200
        assert mmsg.send_some(tx, [], dst) == 0
        assert _recv_all(rx, Slab(rows=64, width=1600), 200) == want
    finally:
        rx.close()
        tx.close()


def test_send_some_error_before_any_datagram_raises() -> None:
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        tx.setblocking(False)
        with pytest.raises(OSError):
            mmsg.send_some(tx, [b"x"], ("127.0.0.1", 0))  # port 0: EINVAL
    finally:
        tx.close()


@pytest.mark.parametrize("vector", [True, False])
def test_send_some_stops_at_eagain_and_keeps_order(vector: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """A full peer queue (a non-blocking AF_UNIX datagram pair, nobody reading): send_some
    returns how many went out, no exception, and the rest can follow in order."""
    if not vector:
        monkeypatch.setattr(mmsg, "_VECTOR_OK", False)
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        a.setblocking(False)
        b.setblocking(False)
        dgs = [k.to_bytes(2, "big") * 50 for k in range(2000)]
        n = mmsg.send_some(a, dgs)
        assert 0 < n < len(dgs)
        got = []
        while True:
            try:
                got.append(b.recv(2048))
            except BlockingIOError:
                break
        assert got == dgs[:n]
        assert mmsg.send_some(a, dgs[n : n + 3]) == 3
        assert [b.recv(2048) for _ in range(3)] == dgs[n : n + 3]
    finally:
        a.close()
        b.close()
