"""One NormSender, three NormReceivers on loopback multicast, 20 % independent loss each.

All receivers must get the file bit-exact.  The run is repeated with NACK suppression
disabled on the receivers (``ReceiverConfig(nack_suppression=False)``) and the NACK counts of
both runs are reported (``-s`` shows them).  On real sockets how many NACKs get suppressed
depends on scheduling (which receiver's backoff fires first, how late a busy process reads
its socket), so the loopback tests only assert correctness; that suppression reduces the
NACK count by a clear margin is asserted by :func:`test_suppression_simulated_medium`, a
sans-I/O run of one sender and eight receivers over a seeded lossy medium in virtual time.

The sender runs in the test process, the receivers in a forked child (both cores).
The 20 MB run of the issue is ``@pytest.mark.slow``; a 2 MB run of the same setup is part of
the default suite.  Group random in 239.255.0.0/16, random port, interface 127.0.0.1, TTL 1.
"""

from __future__ import annotations

import hashlib
import multiprocessing as mp
import os
import random
import time
from typing import Any

import pytest
from medium import Medium

from alc.net import Driver, LossInjector, open_socket
from norm.receiver import NormReceiver, ObjectReceived, ReceiverConfig
from norm.sender import NormSender, NormSenderConfig

LOSS = 0.20


def _receivers(
    group: tuple[str, int], size: int, suppress: bool, seed: int, timeout: float, q: Any, ready: Any
) -> None:
    """Child process: three NormReceivers (independent 20 % loss) on one driver."""
    rxs = [
        NormReceiver(
            ReceiverConfig(node_id=10 + i, nack_suppression=suppress), random.Random(seed + i)
        )
        for i in range(3)
    ]
    drv = Driver()
    socks = []
    for i, r in enumerate(rxs):
        s = open_socket(group, "127.0.0.1", receive=True, ttl=1)
        socks.append(s)
        drv.add(r, s, group, loss=LossInjector(LOSS, seed=seed * 100 + i))
    got: dict[int, bytes] = {}

    def done() -> bool:
        for i, r in enumerate(rxs):
            while (ev := r.next_event()) is not None:
                if isinstance(ev, ObjectReceived):
                    got[i] = ev.data
        return len(got) == len(rxs)

    ready.set()
    try:
        ok = drv.run(until=done, timeout=timeout)
    finally:
        for s in socks:
            s.close()
    q.put(
        {
            "ok": ok,
            "digests": [hashlib.sha256(got[i]).hexdigest() if i in got else None for i in range(3)],
            "nacks_sent": sum(r.stats.get("nack.sent", 0) for r in rxs),
            "nacks_suppressed": sum(r.stats.get("nack.suppressed", 0) for r in rxs),
            "injected_loss": drv.stats.get("drop.injected_loss", 0),
        }
    )


def run_multi(
    size: int,
    suppress: bool,
    rate: float = 12e6,
    seed: int = 11,
    timeout: float = 300.0,
    auto_parity: int = 12,
) -> dict[str, Any]:
    """Sender in this process, the three receivers in a child (one core each)."""
    rng = random.Random(seed)
    data = rng.randbytes(size)
    group = (f"239.255.{rng.randint(1, 254)}.{rng.randint(1, 254)}", random.randint(20000, 60000))
    ctx = mp.get_context("fork")
    q: Any = ctx.Queue()
    ready = ctx.Event()
    child = ctx.Process(target=_receivers, args=(group, size, suppress, seed, timeout, q, ready))
    child.start()
    try:
        assert ready.wait(20)
        time.sleep(0.2)
        snd = NormSender(
            NormSenderConfig(
                node_id=1,
                segment_size=1400,
                block_size=64,
                num_parity=32,
                # proactive parity: most blocks complete without a NACK round (each repair
                # round costs several GRTT of backoff, aggregation and holdoff)
                auto_parity=auto_parity,
                rate=rate,  # bytes/s
                grtt=0.01,
                backoff=4,
                seed=seed,
            )
        )
        snd.enqueue_data(data, info=b"multi.bin")
        sock = open_socket(group, "127.0.0.1", receive=True, ttl=1)
        drv = Driver()
        drv.add(snd, sock, group)
        t0 = time.monotonic()
        try:
            drv.run(until=lambda: not q.empty() or not child.is_alive(), timeout=timeout)
        finally:
            sock.close()
        res = q.get(timeout=10)
    finally:
        child.join(10)
        if child.is_alive():
            child.kill()
    digest = hashlib.sha256(data).hexdigest()
    res["elapsed"] = round(time.monotonic() - t0, 2)
    res["bitexact"] = [d == digest for d in res.pop("digests")]
    res["nacks_heard_by_sender"] = snd.stats.get("rx.nack", 0)
    res["repairs"] = snd.stats.get("tx.repair.parity", 0) + snd.stats.get("tx.repair.explicit", 0)
    return res


def _check(size: int, rate: float) -> None:
    """Correctness only (bit-exact everywhere); NACK counts are printed (issue 4 report)."""
    with_sup = run_multi(size, True, rate)
    without = run_multi(size, False, rate)
    print(
        f"\nNORM 1 sender -> 3 receivers, {size / 1e6:.0f} MB at {rate * 8 / 1e6:.0f} Mbit/s, "
        f"{LOSS:.0%} loss each:\n  suppression on : {with_sup}\n  suppression off: {without}"
        f"\n  NACKs sent: {with_sup['nacks_sent']} with suppression "
        f"({with_sup['nacks_suppressed']} suppressed), {without['nacks_sent']} without"
    )
    for r in (with_sup, without):
        assert r["ok"] and all(r["bitexact"]), r
    assert without["nacks_suppressed"] == 0  # the option really turns suppression off


@pytest.mark.interop
def test_three_receivers_2mb_loopback() -> None:
    _check(2_000_000, 4e6)


@pytest.mark.slow
@pytest.mark.interop
def test_three_receivers_20mb_loopback() -> None:
    # 6 MB/s: about what three Python receivers sharing one core keep up with; faster, the
    # socket queues grow, probes are answered late and the GRTT (repair timers) inflates
    _check(int(os.environ.get("NORM_MULTI_SIZE", 20_000_000)), 6e6)


# --------------------------------------------------------------------------- simulated medium


def _simulated(suppress: bool, seed: int, n_rx: int = 8) -> tuple[int, int]:
    data = random.Random(seed).randbytes(64_000)
    snd = NormSender(
        NormSenderConfig(
            node_id=1, instance_id=0x1234, segment_size=1000, block_size=16, num_parity=16,
            rate=1e6, grtt=0.05, group_size=100, seed=seed,
        )
    )  # fmt: skip
    snd.enqueue_data(data, info=b"sim")
    rxs = {
        f"r{i}": NormReceiver(
            ReceiverConfig(node_id=10 + i, nack_suppression=suppress), random.Random(seed * 100 + i)
        )
        for i in range(n_rx)
    }
    got: dict[str, bytes] = {}

    def until() -> bool:
        for n, r in rxs.items():
            while (ev := r.next_event()) is not None:
                if isinstance(ev, ObjectReceived):
                    got[n] = ev.data
        return len(got) == n_rx

    assert Medium({"s": snd, **rxs}, {n: LOSS for n in rxs}, seed=seed).run(until, 120.0)
    assert all(g == data for g in got.values())
    sent = sum(r.stats.get("nack.sent", 0) for r in rxs.values())
    return sent, sum(r.stats.get("nack.suppressed", 0) for r in rxs.values())


def test_suppression_simulated_medium() -> None:
    """Eight receivers, 20 % independent seeded loss, virtual time: deterministic, so the
    reduction by suppression can be asserted with a margin (measured: 62 vs 106 NACKs)."""
    on = off = 0
    for seed in range(1, 6):
        sent, suppressed = _simulated(True, seed)
        sent_off, suppressed_off = _simulated(False, seed)
        assert suppressed > 0 and suppressed_off == 0
        assert sent <= sent_off, (seed, sent, sent_off)
        on, off = on + sent, off + sent_off
    print(f"\nsimulated NACKs, 5 runs x 8 receivers: {on} with suppression, {off} without")
    assert on <= 0.75 * off, (on, off)
