"""NormReceiver's NORM_DATA fast path (``_data_fast``) decides exactly as the general path.

The same lossy, duplicating, reordering sessions (several objects, a stream, auto and
on-demand parity, FEC IDs 5/2/129/0) run twice, with the fast path on and forced off:
the receiver's feedback octets, events and counters must be identical.
"""

from __future__ import annotations

import random
from typing import Any

import pytest

from norm.receiver import NormReceiver, ReceiverConfig
from norm.sender import NormSender, NormSenderConfig

CONFIGS: list[dict[str, Any]] = [
    {},
    {"auto_parity": 4},
    {"fec_id": 129},
    {"fec_id": 2, "block_size": 200, "num_parity": 100},
    {"fec_id": 0},
]


def _session(cfg: dict[str, Any], fast: bool, seed: int) -> tuple[list[Any], list[bytes], dict]:
    base: dict[str, Any] = {
        "node_id": 1,
        "segment_size": 700,
        "grtt": 0.01,
        "seed": 1,
        "rate": 2e6,
    }
    base.update(cfg)
    snd = NormSender(NormSenderConfig(**base))
    rx = NormReceiver(ReceiverConfig(node_id=2), random.Random(1))
    if not fast:
        rx._data_fast = lambda *a: False  # type: ignore[method-assign]
    rng = random.Random(seed)
    data = rng.randbytes(200_000)
    snd.enqueue_data(data, info=b"a")
    snd.enqueue_data(data[:3000])
    sid = snd.open_stream(b"s")
    snd.stream_write(sid, data[:20_000], eom=True)
    snd.stream_flush(sid)
    snd.stream_close(sid)
    snd.enqueue_data(data[:50_000], info=b"c")
    snd.end()
    events: list[Any] = []
    feedback: list[bytes] = []
    held: list[bytes] = []
    now = 1000.0
    for _ in range(4000):
        now += 0.002
        for p, _a in snd.datagrams_to_send(now):
            r = rng.random()
            if r < 0.1:
                continue  # lost
            if r < 0.15:
                held.append(p)  # reordered: arrives later
                continue
            rx.receive_datagram(p, ("192.0.2.1", 5000), now + 0.001)
            if r > 0.95:
                rx.receive_datagram(p, ("192.0.2.1", 5000), now + 0.001)  # duplicate
            if held and r < 0.5:
                rx.receive_datagram(held.pop(0), ("192.0.2.1", 5000), now + 0.001)
        for p, _a in rx.datagrams_to_send(now + 0.001):
            feedback.append(p)
            snd.receive_datagram(p, ("192.0.2.2", 5000), now + 0.002)
        while (e := rx.next_event()) is not None:
            events.append(e)
    return events, feedback, dict(rx.stats)


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()))
@pytest.mark.parametrize("seed", [1, 2])
def test_fast_path_same_decisions(cfg: dict[str, Any], seed: int) -> None:
    fast = _session(cfg, True, seed)
    slow = _session(cfg, False, seed)
    assert fast[2] == slow[2]
    assert fast[1] == slow[1]
    assert fast[0] == slow[0]
    assert fast[2].get("rx.objects_completed", 0) >= 1
