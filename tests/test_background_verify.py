"""Intervals verified in native threads of their own (``verify_threads`` > 1, the native
kernel's ``start_job`` / ``finish_job``): released at fixed points of the datagram and
timer sequence, whatever the threads did, and by the session's timer when nothing else
comes.  These paths exist only with the native kernel: the tests need it (built by
``pip install``; ``.ci/run`` installs the compiler and headers) and fail without it."""

from __future__ import annotations

import random
import time
from typing import Any

import numpy as np
import pytest

from tesla.cli.bench import make_sender, make_stream
from tesla.core.receiver import TeslaReceiver


def _pub() -> Any:
    from tesla.cli import bench as benchcmd

    return benchcmd._key().public_key()


def _need_jobs(mk: Any) -> None:
    mk.set_enabled(True)
    assert mk.available(), mk.why_unavailable()
    assert mk.fused() and mk._state.get("jobs"), "native kernel built before start_job"


@pytest.mark.parametrize("protocol", ["alc", "norm"])
def test_background_verification_releases_whatever_the_threads_did(
    protocol: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The points where datagrams verified in the background are released depend on the
    datagram and timer sequence only: a run whose native threads hash nothing (the
    receiver does all of it when it finishes the interval) releases exactly what a run
    with a hashing thread releases after each batch and each timer, and the events."""
    import tesla.core.receiver as tr
    import tesla.mac.kernel as mk

    _need_jobs(mk)
    monkeypatch.setattr(tr, "BACKGROUND_MIN_OCTETS", 1)
    snd = make_sender(2, protocol=protocol, n_chain=9, disclose_every=5)
    pk = make_stream(snd, 16, 90, 300, seed=13)
    real = mk.verify_arena_task

    def run(threads: int | None) -> list[Any]:
        def task(*a: Any) -> Any:
            return real(*a[:-1], a[-1] if threads is None else threads)

        monkeypatch.setattr(mk, "verify_arena_task", task)
        rx = TeslaReceiver(_pub(), max_clock_error_ms=20, protocol=protocol, verify_threads=2)
        rng = random.Random(5)
        seen: list[Any] = []
        k = 0
        while k < len(pk):
            m = rng.choice([7, 64, 300])
            ch = pk[k : k + m]
            rx.receive_batch([b for _, b in ch], np.array([a for a, _ in ch]), list(range(k, k + m)))
            k += m
            if rng.random() < 0.3:  # a timer between batches, as a driver runs them
                t = rx.next_deadline()
                if t is not None and t <= ch[-1][0] + 0.002:
                    rx.expire(ch[-1][0] + 0.002)
            time.sleep(0.0005 if threads is None else 0)  # threads that are done, or not
            d, meta = rx.pop_authenticated_lists(wait=False)
            seen.append((meta, [type(e).__name__ for e in iter(rx.next_event, None)]))
        return seen

    first = run(None)
    assert sum(len(m) for m, _ in first) > 500
    assert first == run(0)


def test_session_releases_what_its_timer_finished(monkeypatch: pytest.MonkeyPatch) -> None:
    """AuthenticatedReceiver: the last interval, verified in the background after its
    key came, reaches the engine at the session's timer with no further datagram (its
    deadline is the receiver's; before, it waited for the next datagram)."""
    import tesla.core.receiver as tr
    import tesla.mac.kernel as mk
    from tesla.core.session import AuthenticatedReceiver

    _need_jobs(mk)
    monkeypatch.setattr(tr, "BACKGROUND_MIN_OCTETS", 1)
    snd = make_sender(2, protocol="alc", n_chain=50, disclose_every=1)
    pk = make_stream(snd, 6, 40, 300, seed=14)

    class Engine:
        def __init__(self) -> None:
            self.got: list[bytes] = []

        def receive_datagrams(self, d: Any, addrs: Any, times: Any) -> None:
            self.got.extend(bytes(x) for x in d)

        def next_event(self) -> None:
            return None

        def get_timer(self) -> None:
            return None

        def handle_timer(self, now: float) -> None:
            pass

        def datagrams_to_send(self, now: float) -> list[Any]:
            return []

    eng = Engine()
    t = TeslaReceiver(_pub(), max_clock_error_ms=20, protocol="alc", verify_threads=2)
    rx = AuthenticatedReceiver(t, eng)  # type: ignore[arg-type]
    for a, b in pk[:-1]:  # the last key-only datagram left out: nothing joins after it
        rx.receive_datagrams([b], [None], [a])
    last = pk[-2][0]
    assert len(eng.got) < 6 * 40
    due = rx.get_timer()
    assert due is not None and last < due <= last + 0.01
    rx.handle_timer(due)
    assert len(eng.got) == 6 * 40
