"""AlcReceiver.receive_datagrams (the batch entry, common case inline) decides exactly as
receive_datagram called per datagram: same events (files, blocks, failures), same counters,
on clean, lossy, duplicated, reordered and damaged streams, from other senders, with FEC
repair, zero copy and streamed files, and with TESLA-tagged headers (extensions that change
per packet)."""

from __future__ import annotations

import random
import zlib
from typing import Any

import numpy as np
import pytest

from alc.receiver import AlcReceiver, ReceiverConfig
from alc.sender import AlcSender, SenderConfig

SRC = ("127.0.0.1", 4000)
OTHER = ("127.0.0.2", 4000)


def _packets(fec: str, ratio: float, sizes: list[int], seed: int) -> list[bytes]:
    rng = random.Random(seed)
    s = AlcSender(SenderConfig(tsi=7, fec=fec, repair_ratio=ratio, rate_bps=None, symbol_length=500))
    for k, n in enumerate(sizes):
        s.add_bytes(rng.randbytes(n), f"f{k}.bin")
    return s.all_packets(0.0)


def _tesla_tagged(pkts: list[bytes]) -> list[bytes]:
    from tesla.cli.bench import T0, make_sender

    ts = make_sender(2, n_chain=50)
    return ts.wrap_many(pkts, T0 + 0.35)


def _perturb(pkts: list[bytes], rng: random.Random, how: str) -> list[tuple[bytes, Any]]:
    out = [(p, SRC) for p in pkts]
    if how in ("lossy", "all"):
        out = [x for x in out if rng.random() > 0.1]
    if how in ("dup", "all"):
        out += [rng.choice(out) for _ in range(len(out) // 5)]
    if how in ("reorder", "all", "dup"):
        rng.shuffle(out)
    if how in ("damaged", "all"):
        for _ in range(len(out) // 10):
            k = rng.randrange(len(out))
            p = bytearray(out[k][0])
            j = rng.randrange(len(p))
            p[j] ^= 1 << rng.randrange(8)
            if rng.random() < 0.3:
                p = p[: rng.randrange(len(p))]
            out[k] = (bytes(p), out[k][1])
        out += [(rng.choice(out)[0], OTHER) for _ in range(5)]
    return out


def _held(
    r: AlcReceiver, part: list[tuple[bytes, Any]], times: list[float], how: str
) -> None:
    """The batch as rows of one buffer (alc.rows.Rows): back to back as in a TESLA
    arena ("packed"), or a recvmmsg slab ("slab"); the buffer is overwritten after the
    call, so an engine that kept a view of it would decide differently later."""
    from alc.mmsg import Slab
    from alc.rows import Rows

    lens = np.array([len(p) for p, _ in part], dtype=np.int64)
    addrs = [a for _, a in part]
    if how == "packed":
        buf = np.frombuffer(bytearray(b"".join(p for p, _ in part)), dtype=np.uint8)
        rows = Rows(buf, np.cumsum(lens) - lens, lens)
        r.receive_datagrams(rows, addrs, np.array(times))
        rows.invalidate()
        buf[:] = 0xA5
    else:
        slab = Slab(len(part), 2048)
        for j, (p, _) in enumerate(part):
            slab.data[j, : len(p)] = np.frombuffer(p, dtype=np.uint8)
        slab.lengths[: len(part)] = lens
        slab.stamps[: len(part)] = times
        slab.count = len(part)
        r.receive_slab(slab, addrs)
        slab.data[:] = 0x5A


def _run(stream: list[tuple[bytes, Any]], batch: bool | str, rng: random.Random, **cfg: Any) -> Any:
    r = AlcReceiver(ReceiverConfig(tsi=7, **cfg))
    events: list[Any] = []
    t = 100.0
    k = 0
    while k < len(stream):
        n = rng.choice([1, 3, 4, 17, 64, 256])
        part = stream[k : k + n]
        times = [t + 1e-4 * j for j in range(len(part))]
        if batch in ("packed", "slab"):
            _held(r, part, times, str(batch))
        elif batch:
            r.receive_datagrams([p for p, _ in part], [a for _, a in part], times)
        else:
            for (p, a), tm in zip(part, times, strict=True):
                r.receive_datagram(p, a, tm)
        while (e := r.next_event()) is not None:
            events.append(e)
        t += 0.01
        k += n
    r.handle_timer(t + 1000)
    while (e := r.next_event()) is not None:
        events.append(e)
    return events, dict(r.stats), dict(r.received), dict(r.failed)


@pytest.mark.parametrize("fec,ratio", [("nocode", 0.0), ("rs", 0.3)])
@pytest.mark.parametrize("how", ["clean", "lossy", "dup", "reorder", "damaged", "all"])
@pytest.mark.parametrize("tagged", [False, True])
@pytest.mark.parametrize("cfg", [{}, {"stream_files": True}, {"zero_copy": True}])
def test_batch_entry_decides_as_per_datagram(
    fec: str, ratio: float, how: str, tagged: bool, cfg: dict[str, Any]
) -> None:
    seed = zlib.crc32(repr((fec, how, tagged, cfg)).encode()) & 0xFFFF
    pkts = _packets(fec, ratio, [0, 1, 499, 500, 40_000, 70_001], seed)
    if tagged:
        pkts = _tesla_tagged(pkts)
    stream = _perturb(pkts, random.Random(seed), how)
    a = _run(stream, False, random.Random(seed + 1), **cfg)
    b = _run(stream, True, random.Random(seed + 1), **cfg)
    assert a == b
    # the rows of one buffer (a TESLA arena, a recvmmsg slab): the same decisions
    assert _run(stream, "packed", random.Random(seed + 1), **cfg) == a
    assert _run(stream, "slab", random.Random(seed + 1), **cfg) == a
    if how == "clean":
        assert len(a[2]) == 6  # every file received


@pytest.mark.parametrize("fec,ratio", [("nocode", 0.0), ("rs", 0.3)])
@pytest.mark.parametrize("rounds", [1, 2])
def test_sender_bulk_pull_sends_what_the_paced_path_sends(fec: str, ratio: float, rounds: int) -> None:
    """AlcSender without a rate pulls the schedule in bulk (block lists, islice): the same
    datagrams, in the same order, with the same counters as the paced per-datagram path;
    one close flag (B) per object, in the last round."""
    rng = random.Random(rounds)
    files = [rng.randbytes(n) for n in (0, 1, 500 * 64, 500 * 64 + 1, 70_001)]
    runs = []
    for rate in (None, 1e9):
        s = AlcSender(SenderConfig(tsi=3, fec=fec, repair_ratio=ratio, rate_bps=rate,
                                   symbol_length=500, carousel_rounds=rounds,
                                   max_datagrams_per_call=37))
        for k, f in enumerate(files):
            s.add_bytes(f, f"f{k}")
        got: list[bytes] = []
        now = 10.0
        while not s.done:
            got += [p for p, _ in s.datagrams_to_send(now)]
            now += 0.01
        runs.append((got, dict(s.stats)))
    assert runs[0] == runs[1]
    got = runs[0][0]
    assert runs[0][1]["close_object"] == len(files)  # in the last round only
    # the receiver rebuilds every file from the bulk-pulled stream
    r = AlcReceiver(ReceiverConfig(tsi=3))
    r.receive_datagrams(got, [SRC] * len(got), [1.0] * len(got))
    assert len(r.received) == len(files)


@pytest.mark.parametrize("how", ["packed", "slab", True])
@pytest.mark.parametrize("tagged", [False, True])
@pytest.mark.parametrize("loss", ["clean", "lossy"])
def test_runs_in_the_sender_order_are_copied_by_slices(
    monkeypatch: pytest.MonkeyPatch, how: bool | str, tagged: bool, loss: str
) -> None:
    """A stream in the sender's order, with or without losses, goes through the bulk
    path's slice variant (``_bulk_segments``): the index-array variant, for other
    orders, is never called, and the decisions are those of one by one (the test above
    checks every order)."""
    pkts = _packets("nocode", 0.0, [0, 500, 400_000, 1_000_003], 5)
    if tagged:
        pkts = _tesla_tagged(pkts)
    stream = _perturb(pkts, random.Random(5), loss)
    want = _run(stream, False, random.Random(6))
    taken: list[int] = []
    real = AlcReceiver._bulk_segments

    def segments(self: AlcReceiver, *a: Any) -> tuple[int, Any]:
        m, done = real(self, *a)
        taken.append(m)
        return m, done

    def any_order(self: AlcReceiver, *a: Any) -> tuple[int, Any]:
        raise AssertionError("index-array path on a stream in the sender's order")

    monkeypatch.setattr(AlcReceiver, "_bulk_segments", segments)
    monkeypatch.setattr(AlcReceiver, "_bulk_any", any_order)
    assert _run(stream, how, random.Random(6)) == want
    assert sum(taken) > 600  # most of the ~1,000 symbols in bulk
    if loss == "clean":
        assert len(want[2]) == 4
