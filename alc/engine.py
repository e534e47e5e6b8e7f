"""The sans-I/O engine contract shared by every protocol engine (ALC, NORM, TESLA wrappers).

Engines never read a clock and never touch a socket.  A driver (socket loop, pcap
replayer, simulator) owns time and I/O and calls, in any order:

* ``receive_datagrams(datagrams, addrs, times)``: the batch entry, the one drivers use:
  UDP payloads in arrival order, each with its source address and its own arrival time
  (a socket driver gives the kernel's receive timestamp, a pcap replayer the capture
  time, the simulator its virtual time).  :class:`BatchEntry` gives an engine this entry
  as a loop over ``receive_datagram``; an engine that works on whole batches (the TESLA
  receiver) overrides it.
* ``receive_datagram(data, addr, now)``: one UDP payload that arrived at ``now`` (the
  batch entry with one datagram).
* ``receive_slab(slab, addrs)``: the batch entry on an :class:`alc.mmsg.Slab` (the
  datagrams of one ``recvmmsg``, arrival times in ``slab.stamps``), for an engine that
  reads the rows itself (the ALC TESLA receiver: no datagram object for what it
  buffers).  An engine declares it with ``takes_slab = True`` (:class:`BatchEntry`:
  False); a socket driver then uses it instead of ``receive_datagrams``.
* ``handle_timer(now)``: called at (or after) the deadline ``get_timer()`` returned.
* ``datagrams_to_send(now)``: UDP payloads due by ``now``; ``addr`` None means the
  session's group address/port.
* ``get_timer()``: the next absolute deadline (seconds) at which the engine wants
  ``handle_timer``/``datagrams_to_send`` called again, or None when idle.
* ``next_event()``: pop application-level events (objects/files received, ...).

``now`` is float seconds on the POSIX epoch scale (a driver passes ``time.time()``,
the simulator a virtual clock on the same scale), so that TESLA can map it to NTP
time.  ``stats`` is a flat ``dict[str, int]`` of counters: every drop is counted
under ``"drop.<reason>"``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

Address = tuple[str, int]
#: per-datagram arrival times of a batch: a list of floats or a 1-D float64 numpy array
Times = Sequence[float]


class Engine(Protocol):
    stats: dict[str, int]

    def receive_datagrams(
        self, datagrams: Sequence[bytes], addrs: Sequence[Address | None], times: Times
    ) -> None: ...

    def receive_datagram(self, data: bytes, addr: Address | None, now: float) -> None: ...

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address | None]]: ...

    def get_timer(self) -> float | None: ...

    def handle_timer(self, now: float) -> None: ...

    def next_event(self) -> Any | None: ...


def count(stats: dict[str, int], key: str, n: int = 1) -> None:
    """Increment a counter in a stats dict."""
    stats[key] = stats.get(key, 0) + n


class BatchEntry:
    """The batch entry for an engine that handles one datagram at a time."""

    #: whether :meth:`receive_slab` is this engine's entry for ``recvmmsg`` slabs
    takes_slab: bool = False

    def receive_slab(self, slab: Any, addrs: Sequence[Address | None]) -> None:
        """The datagrams of a :class:`alc.mmsg.Slab` (``takes_slab`` engines only)."""
        raise NotImplementedError

    def receive_datagram(self, data: bytes, addr: Address | None, now: float) -> None:
        raise NotImplementedError

    def receive_datagrams(
        self, datagrams: Sequence[bytes], addrs: Sequence[Address | None], times: Times
    ) -> None:
        rx = self.receive_datagram
        for k, data in enumerate(datagrams):
            rx(data, addrs[k], float(times[k]))


class Forwarding(BatchEntry):
    """An engine placed in front of another, ``engine`` (a jitter buffer, a loss or
    cold-start injector, a recorder): every entry of the contract passes through
    unchanged, each written out (no attribute forwarding); a subclass overrides what it
    changes.  :func:`innermost` finds the engine at the end of a chain of them."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine

    @property
    def stats(self) -> dict[str, int]:
        st: dict[str, int] = self.engine.stats
        return st

    def receive_datagram(self, data: bytes, addr: Address | None, now: float) -> None:
        self.engine.receive_datagram(data, addr, now)

    def receive_datagrams(
        self, datagrams: Sequence[bytes], addrs: Sequence[Address | None], times: Times
    ) -> None:
        self.engine.receive_datagrams(datagrams, addrs, times)

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address | None]]:
        out: list[tuple[bytes, Address | None]] = self.engine.datagrams_to_send(now)
        return out

    def get_timer(self) -> float | None:
        t: float | None = self.engine.get_timer()
        return t

    def handle_timer(self, now: float) -> None:
        self.engine.handle_timer(now)

    def next_event(self) -> Any | None:
        return self.engine.next_event()


def innermost(engine: Any) -> Any:
    """The engine behind a chain of :class:`Forwarding` engines (``engine`` itself if none)."""
    while isinstance(engine, Forwarding):
        engine = engine.engine
    return engine
