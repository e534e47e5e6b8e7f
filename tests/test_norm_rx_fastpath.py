"""NormReceiver's NORM_DATA fast path (``_data_fast``) decides exactly as the general path.

The same lossy, duplicating, reordering sessions (several objects, a stream, auto and
on-demand parity, FEC IDs 5/2/129/0) run twice, with the fast path on and forced off:
the receiver's feedback octets, events and counters must be identical.  Variants add a
header extension behind the sender's (as TESLA's EXT_AUTH is), or a mix of extensions
the decoder rejects or checks (HEL 0, overruns, EXT_CC / EXT_RATE).
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


def _add_ext(p: bytes, ext: bytes) -> bytes:
    """``p`` with ``ext`` appended to its header-extension area (hdr_len adjusted)."""
    hl = p[1] << 2
    if (p[0] & 15) not in (1, 2) or (hl + len(ext)) >> 2 > 255:
        return p
    return bytes((p[0], (hl + len(ext)) >> 2)) + p[2:hl] + ext + p[hl:]


def _mangle(p: bytes, mode: str, rng: random.Random) -> bytes:
    if mode == "auth":  # what TESLA adds: an EXT_AUTH after the EXT_FTI
        return _add_ext(p, bytes((1, 5)) + rng.randbytes(18))
    if mode == "odd" and rng.random() < 0.3:
        ext = rng.choice(
            [
                bytes((1, 0, 0, 0)),  # HEL 0
                bytes((1, 3)) + bytes(2),  # overruns the header end
                bytes((200, 1, 2, 3)),  # fixed-size, unknown: fine
                bytes((128, 0, 0, 1)),  # EXT_RATE
                bytes((3, 3)) + bytes(10),  # EXT_CC
                bytes((3, 2)) + bytes(6),  # EXT_CC of a bad length
                bytes((7, 2)) + bytes(6),  # unknown, variable: fine
            ]
        )
        return _add_ext(p, ext)
    return p


def _session(
    cfg: dict[str, Any], fast: bool, seed: int, mode: str = "none", batch: bool = False
) -> tuple[list[Any], list[bytes], dict]:
    """``batch``: each step's datagrams in one ``receive_datagrams`` call (arrival times
    a microsecond apart), as an authentication layer releases them; else one by one."""
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
    mrng = random.Random(seed + 100)
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
        got: list[bytes] = []
        for p0, _a in snd.datagrams_to_send(now):
            p = _mangle(p0, mode, mrng)
            r = rng.random()
            if r < 0.1:
                continue  # lost
            if r < 0.15:
                held.append(p)  # reordered: arrives later
                continue
            got.append(p)
            if r > 0.95:
                got.append(p)  # duplicate
            if held and r < 0.5:
                got.append(held.pop(0))
        times = [now + 0.001 + 1e-6 * k for k in range(len(got))]
        if batch:
            rx.receive_datagrams(got, [("192.0.2.1", 5000)] * len(got), times)
        else:
            for p, t in zip(got, times, strict=True):
                rx.receive_datagram(p, ("192.0.2.1", 5000), t)
        for p, _a in rx.datagrams_to_send(now + 0.001):
            feedback.append(p)
            snd.receive_datagram(p, ("192.0.2.2", 5000), now + 0.002)
        while (e := rx.next_event()) is not None:
            events.append(e)
    return events, feedback, dict(rx.stats)


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()))
@pytest.mark.parametrize("seed", [1, 2])
@pytest.mark.parametrize("mode", ["none", "auth", "odd"])
def test_fast_path_same_decisions(cfg: dict[str, Any], seed: int, mode: str) -> None:
    fast = _session(cfg, True, seed, mode)
    slow = _session(cfg, False, seed, mode)
    assert fast[2] == slow[2]
    assert fast[1] == slow[1]
    assert fast[0] == slow[0]
    assert fast[2].get("rx.objects_completed", 0) >= 1 or mode == "odd"


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()))
@pytest.mark.parametrize("seed", [1, 2])
@pytest.mark.parametrize("mode", ["none", "auth", "odd"])
def test_batch_entry_same_decisions(cfg: dict[str, Any], seed: int, mode: str) -> None:
    """``receive_datagrams`` (runs of one block through ``_data_run``) decides exactly
    as the general path taking the same datagrams one by one."""
    batch = _session(cfg, True, seed, mode, batch=True)
    slow = _session(cfg, False, seed, mode)
    assert batch[2] == slow[2]
    assert batch[1] == slow[1]
    assert batch[0] == slow[0]
    assert batch[2].get("rx.objects_completed", 0) >= 1 or mode == "odd"


def test_batch_runs_are_taken() -> None:
    """The batch entry does take runs (else the test above compares the general path
    with itself): a lossless block released at once goes through ``_data_run``."""
    snd = NormSender(NormSenderConfig(node_id=1, segment_size=700, grtt=0.01, seed=1, rate=1e9))
    rx = NormReceiver(ReceiverConfig(node_id=2), random.Random(1))
    taken: list[int] = []
    real = rx._data_run

    def spy(*a: Any) -> int:
        n = real(*a)
        taken.append(n)
        return n

    rx._data_run = spy  # type: ignore[method-assign]
    snd.enqueue_data(bytes(range(256)) * 400)
    snd.end()
    pk: list[bytes] = []
    now = 1000.0
    for _ in range(100):
        now += 0.01
        pk += [p for p, _ in snd.datagrams_to_send(now)]
    rx.receive_datagrams(pk, [None] * len(pk), [1000.001] * len(pk))
    assert sum(taken) > len(pk) // 2
    assert rx.stats["rx.data"] == sum(1 for p in pk if p[0] & 15 == 2)
