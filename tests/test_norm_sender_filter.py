"""The NORM sender socket's kernel filter (``tesla.cli.run_norm.feedback_filter``): the
sender queues receiver feedback (NACK, ACK, REPORT) and other nodes' NORM_CMD (a TESLA
direct time-sync request is one) but not its own looped-back NORM_DATA/INFO/CMD.
Loopback multicast 239.255.x.y, interface 127.0.0.1, TTL 0."""

from __future__ import annotations

import random
import sys
import time

import pytest

from alc.net import open_socket
from tesla.cli.run_norm import feedback_filter

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux socket filter")


def _msg(mtype: int, source_id: int) -> bytes:
    return bytes([0x10 | mtype, 5, 0, 1]) + source_id.to_bytes(4, "big") + bytes(24)


def test_sender_socket_keeps_only_feedback_and_other_nodes_commands() -> None:
    rng = random.Random()
    group = (
        f"239.255.{rng.randrange(1, 255)}.{rng.randrange(1, 255)}",
        rng.randrange(20000, 60000),
    )
    me, other = 0x01020304, 9
    rx = open_socket(group, "127.0.0.1", receive=True, ttl=0)
    tx = open_socket(group, "127.0.0.1", receive=False, ttl=0)
    try:
        assert feedback_filter(rx, me)
        sent = [
            (2, me),
            (1, me),
            (3, me),
            (2, other),
            (3, other),
            (4, other),
            (5, other),
            (6, other),
            (4, me),
        ]
        for mtype, src in sent:
            tx.sendto(_msg(mtype, src), group)
        got: list[tuple[int, int]] = []
        rx.setblocking(False)
        end = time.monotonic() + 2.0
        while time.monotonic() < end and len(got) < 5:
            try:
                d = rx.recv(2048)
            except BlockingIOError:
                time.sleep(0.01)
                continue
            got.append((d[0] & 15, int.from_bytes(d[4:8], "big")))
        time.sleep(0.05)
        try:
            got.append((rx.recv(2048)[0] & 15, -1))  # nothing else may be queued
        except BlockingIOError:
            pass
        # own NACK (type 4 from our id) passes: the engine drops it as before
        assert got == [(3, other), (4, other), (5, other), (6, other), (4, me)]
    finally:
        rx.close()
        tx.close()
