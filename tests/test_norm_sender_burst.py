"""NormSender's burst path (``_data_burst``: a block's source segments from one header
template) sends exactly what the one-message-at-a-time path sends.

The same lossy sessions (DATA and FILE objects, a stream, auto and on-demand parity, FEC
IDs 5/2/129/0, NACK repair, probes, application commands) run twice, the burst path on
and forced off: every datagram the sender emits (octets and order), its events and its
counters must be identical.
"""

from __future__ import annotations

import random
from pathlib import Path
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
    {"rate": 5e7, "burst": 0.004},  # several blocks per call
]


def _session(cfg: dict[str, Any], burst: bool, seed: int, path: Path) -> tuple[list[bytes], list[Any], dict]:
    base: dict[str, Any] = {"node_id": 1, "segment_size": 700, "grtt": 0.01, "seed": 1, "rate": 2e6}
    base.update(cfg)
    snd = NormSender(NormSenderConfig(**base))
    if not burst:
        snd._data_burst = lambda: []  # type: ignore[method-assign]
    rx = NormReceiver(ReceiverConfig(node_id=2), random.Random(1))
    rng = random.Random(seed)
    data = rng.randbytes(150_000)
    path.write_bytes(data[:70_001])
    snd.enqueue_data(data, info=b"a")
    snd.enqueue_file(str(path), b"f")
    sid = snd.open_stream(b"s")
    snd.stream_write(sid, data[:20_000], eom=True)
    snd.stream_flush(sid)
    snd.stream_close(sid)
    snd.enqueue_data(data[:3000])
    snd.send_command(b"app", robust=True)
    snd.end()
    sent: list[bytes] = []
    events: list[Any] = []
    now = 1000.0
    for _ in range(3000):
        now += 0.002
        for p, _a in snd.datagrams_to_send(now):
            sent.append(p)
            if rng.random() < 0.15:
                continue  # lost
            rx.receive_datagram(p, ("192.0.2.1", 5000), now + 0.001)
        t = rx.get_timer()
        if t is not None and t <= now + 0.001:
            rx.handle_timer(now + 0.001)
        for p, _a in rx.datagrams_to_send(now + 0.001):
            snd.receive_datagram(p, ("192.0.2.2", 5000), now + 0.002)
        t = snd.get_timer()
        if t is not None and t <= now + 0.002:
            snd.handle_timer(now + 0.002)
        while (e := snd.next_event()) is not None:
            events.append(e)
    return sent, events, dict(snd.stats)


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()) or "default")
@pytest.mark.parametrize("seed", [1, 2])
def test_burst_path_sends_the_same(cfg: dict[str, Any], seed: int, tmp_path: Path) -> None:
    fast = _session(cfg, True, seed, tmp_path / "f.bin")
    slow = _session(cfg, False, seed, tmp_path / "f.bin")
    assert fast[2] == slow[2]
    assert fast[1] == slow[1]
    assert len(fast[0]) == len(slow[0])
    assert fast[0] == slow[0]
    assert fast[2].get("tx.data", 0) > 100 and fast[2].get("rx.nack", 0) > 0


def test_burst_path_is_taken() -> None:
    snd = NormSender(NormSenderConfig(node_id=1, segment_size=700, grtt=0.01, seed=1, rate=1e9))
    calls: list[int] = []
    real = snd._data_burst

    def spy() -> Any:
        out = real()
        calls.append(len(out))
        return out

    snd._data_burst = spy  # type: ignore[method-assign]
    snd.enqueue_data(bytes(200_000))
    snd.end()
    now = 1000.0
    for _ in range(50):
        now += 0.01
        snd.datagrams_to_send(now)
    assert sum(calls) == snd.stats["tx.data"] > 200
