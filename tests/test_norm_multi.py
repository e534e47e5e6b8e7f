"""One NormSender, three NormReceivers on loopback multicast, 20 % independent loss each.

All receivers must get the file bit-exact.  The run is repeated with NACK suppression
disabled on the receivers (they never treat overheard NACKs as covering their needs) and the
NACK counts of both runs are reported (``-s`` shows them) and compared.

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

from alc.net import Driver, LossInjector, open_socket
from norm.receiver import NormReceiver, ObjectReceived, ReceiverConfig
from norm.sender import NormSender, NormSenderConfig

LOSS = 0.20


def _receivers(
    group: tuple[str, int], size: int, suppress: bool, seed: int, timeout: float, q: Any, ready: Any
) -> None:
    """Child process: three NormReceivers (independent 20 % loss) on one driver."""
    rxs = [NormReceiver(ReceiverConfig(node_id=10 + i), random.Random(seed + i)) for i in range(3)]
    if not suppress:
        for r in rxs:
            r._covered = lambda *a, **k: False  # type: ignore[method-assign]
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
    size: int, suppress: bool, rate: float = 12e6, seed: int = 11, timeout: float = 300.0
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


def _check(size: int, rate: float, require_suppression: bool) -> None:
    with_sup = run_multi(size, True, rate)
    without = run_multi(size, False, rate)
    print(
        f"\nNORM 1 sender -> 3 receivers, {size / 1e6:.0f} MB at {rate * 8 / 1e6:.0f} Mbit/s, "
        f"{LOSS:.0%} loss each:\n  suppression on : {with_sup}\n  suppression off: {without}"
    )
    for r in (with_sup, without):
        assert r["ok"] and all(r["bitexact"]), r
    assert without["nacks_suppressed"] == 0
    if require_suppression:
        # with independent loss a NACK only suppresses another receiver's NACK when it covers
        # every block need of that receiver, so this is observed at moderate rates (few
        # blocks per NACK cycle); the in-memory test in test_norm_sender.py is deterministic
        assert with_sup["nacks_suppressed"] > 0


@pytest.mark.interop
def test_three_receivers_2mb_loopback() -> None:
    _check(2_000_000, 1e6, True)


@pytest.mark.slow
@pytest.mark.interop
def test_three_receivers_20mb_loopback() -> None:
    _check(int(os.environ.get("NORM_MULTI_SIZE", 20_000_000)), 12e6, False)
