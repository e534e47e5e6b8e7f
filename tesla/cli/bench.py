"""``tesla-mcast bench``: the hashing limit and our pipelines, measured in one run.

For each profile (HMAC-SHA-256 and HMAC-SHA-1 as PRF and MAC) and packet size (64 B,
1400 B: the whole datagram including the EXT_AUTH, i.e. what the MAC covers) it prints
ns/packet, packets/s and the ratio to the OpenSSL rate for:

* ``openssl``   -- OpenSSL's own HMAC loop: ``openssl speed -hmac <hash> -bytes <size>``
  (precomputed pads, C loop).  Without the binary: an in-process estimate, labelled so.
* ``py-copy``   -- the best pure-Python MAC loop: one ``cryptography`` HMAC keyed once,
  ``copy()``/``update()``/``finalize()`` per packet (no parsing): the Python ceiling.
* ``hmac.digest`` -- the bare standard-library one-shot loop over the same packets.
* ``sender wrap``  -- :meth:`TeslaSender.wrap` per packet (reference sender).
* ``sender batch`` -- :func:`tesla.mac.batch.sign_batch`, 1024 packets per call, into one
  packed buffer ready for ``sendmmsg`` (without a Group MAC: one call of the MAC kernel's
  ``seal``, which inserts the EXT_AUTH, rewrites the header length and MACs every row).
* ``receiver ref`` -- :meth:`TeslaReceiver.receive` per packet (the per-datagram entry).
* ``receiver fast`` -- :meth:`TeslaReceiver.receive_batch` (1024-packet batches)
  on one core, ``receiver fast 4096/b`` the same in 4096-packet batches (a socket driver
  can coalesce four 1024-datagram ``recvmmsg`` calls), and ``receiver fast+2w`` with a
  2-process :class:`WorkerPool`.

Receiver figures are per *authenticated* packet, from an in-memory list of datagrams of
a valid stream (T_int 100 ms, d = 2, arrival = send time + 1 ms): parse, safe-packet
test, key processing, buffering and the batch MAC verification are all inside the
timed region; generating the stream is not.  Every ratio is ``openssl_ns / our_ns``
(1.0 = as fast as OpenSSL's HMAC on one core).

On a shared machine one ``openssl speed`` run moves by 15-20% from run to run, and with
it every ratio of its block; so every figure is a best (lowest) of several: each of our
lines the best of 5 runs (3 with ``--quick``), and the two reference lines are sampled
*between* our lines (:class:`Reference`: a py-copy repetition before each line, a 1 s
``openssl speed`` run before every other line and at the end, at least 5 runs; every 5th
line and at least 3 runs with ``--quick``), their best taken and their number and spread
printed.  The load average is printed at the start and at the end.

Then the receiver buffer bound at the highest rate this machine sends on loopback
(``sendmmsg``, 1400 B), in a fresh interpreter: the stated formula vs the accounted peak
(``max_buffered_bytes``) vs RSS growth over the run, with the line ``RSS growth /
max_buffered_bytes = X (target <= 1.2)`` (issue 12), and the end-to-end loopback
transfers when their pieces exist (else a printed reason).

``--json`` (issue 12) prints one JSON object on stdout, the human lines on stderr
(:func:`json_report`; HMAC-SHA-256 only, no NORM end to end).  Its keys in
:data:`TARGETS`, each a ratio, higher is better:

* ``rx_1core_1400`` / ``rx_1core_64``: ``receiver fast 1 core`` (CPU time) at 1400 / 64 B,
  ``openssl_ns / our_ns``;
* ``rx_2cores_1400``: the better of ``receiver fast+2 thr`` and ``receiver fast+2w`` (wall
  clock) at 1400 B over the same one-core OpenSSL figure;
* ``tx_1400``: ``sender batch`` at 1400 B;
* ``alc_e2e_vs_flute_20MiB`` / ``_100MiB``: *not* OpenSSL ratios: goodput of our
  authenticated ALC end to end over flute-alc's unauthenticated one, same file
  (:func:`_alc_end_to_end`; raw seconds and goodputs under ``lines``);
* ``live_alc_auth_vs_plain``: *not* an OpenSSL ratio: ``tesla-mcast send`` ->
  ``tesla-mcast receive`` processes, 100 MB, authenticated goodput over plain at the
  highest rate of a short ladder the plain transfer completes without socket drops
  (:mod:`tesla.cli.bench_live`), with the TESLA parameters a user sets for two processes
  on one host (T_int 10 ms, d 3, 2 ms clock error: ``bench_live.AUTH_CONFIGS``); the same
  ratio at the CLI defaults (T_int 100 ms, d 3), whose 200-300 ms wait for the last key
  is most of a 0.5 s transfer, is ``live_alc_auth_vs_plain_cli_defaults`` (no target).

with ``openssl_ns_per_packet`` (by size), ``targets`` (:data:`TARGETS`), ``met``,
``all_met``, ``live_unsafe_drops``, ``lines`` (what each key was computed from),
``ns_per_packet`` (every line), ``mac_kernel``, ``cpu_count``, load averages and the run
time, and ``memory_rss_vs_accounted`` (*lower* is better, target <= 1.2: the memory part's
RSS growth over ``max_buffered_bytes``; its figures under ``memory``; null with
``--no-memory``).  ``--quick`` shrinks the streams and files (bench/README.md gives the sizes).
"""

from __future__ import annotations

import argparse
import gc
import hmac
import os
import random
import re
import resource
import selectors
import shutil
import socket
import subprocess
import time
import tracemalloc
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from tesla.core.params import HMAC_HASH_NAME

__all__ = ["bench_main", "make_stream", "openssl_hmac_ns"]

T0 = 1_800_000_000.0
PROFILES = {"sha256": 2, "sha1": 0}  # hash name -> TESLA PRF/MAC type
_SIGNING_KEYS: dict[int, Any] = {}


def _key(bits: int = 1024) -> Any:
    """The benchmark's RSA signing key (``bits`` 0: the size ``tesla-mcast keygen`` makes)."""
    from tesla.core.bootstrap_sig import DEFAULT_RSA_BITS, generate_private_key

    bits = bits or DEFAULT_RSA_BITS
    if bits not in _SIGNING_KEYS:
        _SIGNING_KEYS[bits] = generate_private_key(bits)
    return _SIGNING_KEYS[bits]


# ----------------------------------------------------------------------------- stream
def make_sender(
    alg: int = 2,
    *,
    protocol: str = "alc",
    tint_ms: int = 100,
    n_chain: int = 100_000,
    t0: int | None = None,
    **kw: Any,
) -> Any:
    from tesla.core.authenticator import ControlTemplate, TeslaSender
    from tesla.core.ntp import posix_to_ntp
    from tesla.core.params import TeslaParams

    gk = kw.pop("group_key", None)
    p = TeslaParams(
        t0_ntp=posix_to_ntp(T0) if t0 is None else t0,
        tint_ms=tint_ms,
        n_chain=n_chain,
        d=2,
        prf_id=alg,
        mac_id=alg,
        group_mac=gk is not None,
    )
    tpl = ControlTemplate(tsi=1, source_id=1, instance_id=77)
    return TeslaSender(p, _key(), protocol=protocol, template=tpl, group_key=gk, **kw)


def tag_overhead(sender: Any) -> int:
    """Octets the wrapper adds to most datagrams: a Type 1 tag, or a Type 2 tag (no
    key) when the sender discloses the key in only some packets."""
    from tesla.core import extauth as ea

    typ = ea.TYPE_TAG if sender.disclose_every == 1 else ea.TYPE_TAG_NO_KEY
    return ea.tag_length(typ, sender.layout)


def disclose_every_for(size: int) -> int:
    """Small packets cannot carry a key in every tag (a 64 B ALC datagram with a Type 1
    HMAC-SHA-256 tag is 76 B at least): they disclose it in 1 packet of 64 (Type 1) and
    carry a Type 2 tag otherwise (RFC 5776 §3.4.4 allows this)."""
    return 1 if size >= 200 else 64


def raw_packet(protocol: str, size: int, k: int, rng: random.Random) -> bytes:
    """An engine datagram of ``size`` octets (ALC: LCT + 4-octet FEC payload ID)."""
    if protocol == "alc":
        from alc.lct import LCTHeader

        h = LCTHeader(tsi=1, toi=1, codepoint=0).encode() + (k & 0xFFFFFFFF).to_bytes(4, "big")
    else:
        from norm.messages import NormData

        h = NormData(0, 1, 77, 0, 0, 0, 0, 5, 1, 0, k & 0xFF).encode()
    return h + rng.randbytes(max(0, size - len(h)))


def make_stream(
    sender: Any,
    n_intervals: int,
    per_interval: int,
    size: int,
    *,
    seed: int = 1,
    delay: float = 0.001,
    spread: float = 0.05,
) -> list[tuple[float, bytes]]:
    """``(arrival time, datagram)`` of a valid stream: bootstraps, ``per_interval``
    authenticated datagrams of ``size`` octets (tag included) in each of
    ``n_intervals`` intervals, then one key-disclosure packet in each of the d
    following intervals so every data interval's key reaches the receiver.  Each
    interval's datagrams are sent evenly over its first ``spread`` fraction (a burst
    at a realistic rate: 2500 datagrams in 5 ms is 500k/s), so that a batch of 1024
    arrivals spans a few milliseconds, as one ``recvmmsg`` batch would."""
    rng = random.Random(seed)
    tint = sender.params.tint_ms / 1000.0
    body = max(24, size - tag_overhead(sender))
    out: list[tuple[float, bytes]] = []
    for b in sender.control_packets(T0 + 1e-4):
        out.append((T0 + 1e-4 + delay, b))
    k = 0
    for j in range(n_intervals):
        for q in range(per_interval):
            t = T0 + j * tint + (q + 0.5) * tint * spread / (per_interval + 1)
            out.append((t + delay, sender.wrap(raw_packet(sender.protocol, body, k, rng), t)))
            k += 1
    for j in range(n_intervals, n_intervals + sender.params.d + 1):
        t = T0 + (j + 0.5) * tint
        out.append((t + delay, sender.key_disclosure_packet(t)))
    return out


def make_receiver(fast: bool = True, pool: Any = None, **kw: Any) -> Any:
    kw.setdefault("max_clock_error_ms", 20)
    from tesla.core.receiver import TeslaReceiver

    if not fast:
        kw.pop("verify_threads", None)
    return TeslaReceiver(_key().public_key(), pool=pool if fast else None, **kw)


# ----------------------------------------------------------------------------- timing
#: single-process figures are CPU time of this process (``time.process_time``), as
#: ``openssl speed`` divides by user CPU time unless given ``-elapsed``: both are then
#: robust to other jobs on a shared machine.  Worker-pool figures are wall clock.
clock = time.process_time


def _best(fn: Callable[[], Any], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        gc.collect()
        t = clock()
        fn()
        best = min(best, clock() - t)
    return best


def openssl_hmac_ns(hash_name: str, size: int, seconds: int = 1) -> tuple[float, str] | None:
    """ns per ``size``-octet HMAC from ``openssl speed -hmac`` (None if unavailable)."""
    exe = shutil.which("openssl")
    if exe is None:
        return None
    cmd = [exe, "speed", "-seconds", str(seconds), "-bytes", str(size), "-hmac", hash_name]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=60 + 4 * seconds)
    except (OSError, subprocess.TimeoutExpired):
        return None
    m = re.search(rf"^hmac\({hash_name}\)\s+([\d.]+)k", r.stdout, re.M)
    if not m:
        return None
    bps = float(m.group(1)) * 1000.0
    return size / bps * 1e9, " ".join(cmd[1:])


def _copy_loop(pkts: Sequence[bytes], alg: int) -> Callable[[], None]:
    """The py-copy ceiling loop: one HMAC keyed once, copy/update/finalize per packet."""
    from cryptography.hazmat.primitives.hmac import HMAC

    from tesla.core.crypto import hash_algorithm

    copy = HMAC(os.urandom(32), hash_algorithm(alg)).copy

    def run() -> None:
        for p in pkts:
            h = copy()
            h.update(p)
            h.finalize()

    return run


class Reference:
    """The reference lines of one block (``openssl`` and ``py-copy``), sampled between
    our lines rather than once at the start: :meth:`probe` before each of our lines runs
    one repetition of the py-copy loop and, every ``openssl_every`` probes, one
    ``openssl speed -seconds N`` run; :meth:`finish` probes once more (with openssl) and
    tops openssl up to ``min_runs`` runs.  Each reference is the best (lowest ns/pkt) of
    its samples, like our lines, so that a burst of load on the shared machine during
    one sample moves neither the reference nor every ratio of the block."""

    def __init__(
        self,
        hname: str,
        alg: int,
        size: int,
        pkts: Sequence[bytes],
        *,
        seconds: int = 1,
        openssl_every: int = 2,
        min_runs: int = 5,
    ) -> None:
        self.hname, self.size, self.seconds = hname, size, seconds
        self.every, self.min_runs = max(1, openssl_every), min_runs
        self.ossl: list[float] = []
        self.py: list[float] = []
        self.cmd = ""
        self._n_pkts = len(pkts)
        self._run_py = _copy_loop(pkts, alg)
        self._probes = 0
        self._no_openssl = False

    def _openssl(self) -> None:
        if self._no_openssl:
            return
        r = openssl_hmac_ns(self.hname, self.size, self.seconds)
        if r is None:
            self._no_openssl = not self.ossl  # no binary (or it never parses): stop trying
            return
        self.ossl.append(r[0])
        self.cmd = r[1]

    def _py(self) -> None:
        gc.collect()
        t = clock()
        self._run_py()
        self.py.append((clock() - t) / self._n_pkts * 1e9)

    def probe(self) -> None:
        if self._probes % self.every == 0:
            self._openssl()
        self._probes += 1
        self._py()

    def finish(self) -> None:
        self._openssl()
        self._py()
        while not self._no_openssl and 0 < len(self.ossl) < self.min_runs:
            self._openssl()

    @staticmethod
    def spread(xs: Sequence[float], what: str) -> str:
        return f"(best of {len(xs)} {what}, {min(xs):.0f}..{max(xs):.0f} ns/pkt)"


def hmac_digest_ns(pkts: Sequence[bytes], alg: int, repeat: int) -> float:
    key = os.urandom(32)
    name = HMAC_HASH_NAME[alg]
    dg = hmac.digest

    def run() -> None:
        for p in pkts:
            dg(key, p, name)

    return _best(run, repeat) / len(pkts) * 1e9


def warmed_sender(
    alg: int, size: int, n: int, rng: random.Random
) -> tuple[Any, list[bytes], float]:
    """A sender with ``n`` raw packets of ``size`` octets once wrapped, and the time to wrap
    them at: the key chain and interval state are built outside the timing."""
    s = make_sender(alg, disclose_every=disclose_every_for(size))
    body = size - tag_overhead(s)
    raws = [raw_packet("alc", body, k, rng) for k in range(n)]
    now = T0 + 5.05
    s.wrap(raws[0], now)
    return s, raws, now


def _one_run(fn: Callable[[], float]) -> Callable[[], tuple[float, str]]:
    return lambda: (fn(), "")


def _sender_sampler(
    alg: int, size: int, n: int, batch: int
) -> Callable[[], tuple[float, str]]:
    """One timed run of ``wrap()`` per datagram (``batch`` 0) or of ``sign_batch`` in
    ``batch``-datagram calls, on one warmed sender built once (its key chain takes
    ~0.4 s; a sender already wrapping in this interval is the steady state)."""
    from tesla.mac.batch import Scratch, sign_batch

    s, raws, now = warmed_sender(alg, size, n, random.Random(2))
    scratch = Scratch()  # a send loop reuses its output buffer (sign, send, sign...)
    w = s.wrap

    def one() -> tuple[float, str]:
        gc.collect()
        t = clock()
        if batch:
            for k in range(0, n, batch):
                sign_batch(s, raws[k : k + batch], now, scratch)
        else:
            for p in raws:
                w(p, now)
        return (clock() - t) / n * 1e9, ""

    return one


def receiver_ns(
    stream: list[tuple[float, bytes]],
    mode: str,
    repeat: int,
    pool: Any = None,
    batch: int = 1024,
    wall: bool = False,
    **rx_kw: Any,
) -> tuple[float, int]:
    """ns per authenticated packet, and the number authenticated.  ``mode``: "ref"
    (reference ``receive`` per packet), "refbatch" (reference ``receive_batch`` with
    one arrival time per batch), "fast" (:meth:`TeslaReceiver.receive_batch`).  The
    authenticated datagrams are taken after every batch, inside the timed span, as
    :class:`tesla.core.session.AuthenticatedReceiver` takes them to hand them on (and
    dropped, as the engine does once it has copied their symbols): for ALC, "fast", as
    rows of their arenas (``release_rows``, :meth:`TeslaReceiver.pop_released`), as the
    session hands them to an ALC engine."""
    times = np.array([a for a, _ in stream])
    pkts = [b for _, b in stream]
    best = float("inf")
    acc = 0
    clk = time.perf_counter if (pool is not None or wall) else clock
    cuts: list[tuple[int, int]] = []
    a = 0
    while a < len(pkts):
        b = min(len(pkts), a + batch, int(np.searchsorted(times, times[a] + 0.002)))
        b = max(b, a + 1)
        cuts.append((a, b))
        a = b
    from tesla.mac import kernel as mackernel

    kernel = rx_kw.pop("mac_kernel", True)
    for _ in range(repeat):
        rx = make_receiver(fast=mode == "fast", pool=pool, **rx_kw)
        mackernel.set_enabled(kernel)
        gc.collect()
        t = clk()
        if mode == "ref":
            r = rx.receive
            for arr_t, dg in stream:
                r(dg, arr_t)
        elif mode == "refbatch":  # one arrival time per batch: cut batches at 2 ms spans
            rb = rx.receive_batch
            for c0, c1 in cuts:
                rb(pkts[c0:c1], float(times[c1 - 1]))
        else:
            rb = rx.receive_batch
            acc = 0
            if rx.protocol == "alc":  # as AuthenticatedReceiver before an ALC engine
                rx.release_rows = True
                popr = rx.pop_released
                done = rx.released_done
                for k in range(0, len(pkts), batch):
                    rb(pkts[k : k + batch], times[k : k + batch])
                    for rows, _metas in popr(wait=False):
                        acc += len(rows)
                    done()
            else:
                pop = rx.pop_authenticated_lists
                for k in range(0, len(pkts), batch):
                    rb(pkts[k : k + batch], times[k : k + batch])
                    acc += len(pop(wait=False)[0])
        flush = getattr(rx, "flush", None)
        if flush is not None:  # intervals still in flight in workers or threads count
            flush()
        if mode == "fast":
            if rx.release_rows:
                acc += sum(len(rows) for rows, _m in rx.pop_released())
                rx.released_done()
            else:
                acc += len(rx.pop_authenticated_lists()[0])
        dt = clk() - t
        mackernel.set_enabled(True)
        if mode != "fast":
            acc = len(rx.pop_authenticated())
        best = min(best, dt)
    return best / max(1, acc) * 1e9, acc


def pool_speedup(
    stream: list[tuple[float, bytes]], alg: int, pool: Any, repeat: int
) -> tuple[float, float]:
    """Wall-clock ns/packet of the MAC kernel in this process and with the worker pool,
    best of ``repeat`` interleaved runs over the stream's datagrams."""
    from tesla.mac.batch import PackedBatch, mac_rows

    pb = PackedBatch([b for _, b in stream])
    key = os.urandom(32)
    km = 16
    one = two = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        mac_rows(pb.buf, pb.starts, pb.lens, key, alg)
        one = min(one, time.perf_counter() - t)
        t = time.perf_counter()
        pool.mac_packed(pb.arr, pb.starts, pb.lens, key, alg, km)
        two = min(two, time.perf_counter() - t)
    return one / pb.n * 1e9, two / pb.n * 1e9


# ----------------------------------------------------------------------------- memory
def loopback_send_rate(size: int = 1400, seconds: float = 0.5) -> float:
    """Datagrams/s this process sends on loopback with ``sendmmsg`` (127.0.0.1)."""
    from alc.mmsg import send_batch

    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    dst = rx.getsockname()
    pk = [os.urandom(size)] * 256
    sent = 0
    t0 = time.perf_counter()
    try:  # blocking sender; nobody reads: the kernel drops at the receiver's full queue
        while time.perf_counter() - t0 < seconds:
            sent += send_batch(tx, pk, dst)
    finally:
        el = time.perf_counter() - t0
        tx.close()
        rx.close()
    return sent / el


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def _vm_hwm() -> int | None:
    """Peak resident octets of this process since :func:`_reset_hwm` (``VmHWM``)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _reset_hwm() -> bool:
    """Reset ``VmHWM`` to the resident size now (Linux ``clear_refs`` 5)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def memory_bound(
    rate: float, size: int, quick: bool, out: Callable[[str], None]
) -> dict[str, Any]:
    """Receiver buffer at ``rate`` datagrams/s: the stated formula vs the accounted peak
    (``max_buffered_bytes``) vs the growth of resident memory (RSS) over the run."""
    from tesla.core.receiver import PER_PACKET_OVERHEAD

    s = make_sender(2, tint_ms=100)
    d = s.params.d
    tint = s.params.tint_ms / 1000
    per = max(1, int(rate * tint))
    n_int = 4 if quick else 8
    if per * n_int > 400_000:
        per = 400_000 // n_int
    stream = make_stream(s, n_int, per, size)
    pkts = [b for _, b in stream]
    times = np.array([a for a, _ in stream])
    # formula (tesla/core/receiver.py): a datagram waits until K_i is disclosed in
    # interval i+d, so d intervals are buffered when one is released, and its accepted
    # copies are charged until popped: (d + 1) intervals, plus the datagram disclosing
    # K_i (buffered, RFC 5776 §4.3 step 5, before interval i is verified, step 6)
    bound_pk = (d + 1) * per + 1
    bound_b = bound_pk * (size + PER_PACKET_OVERHEAD)
    from alc.mmsg import Slab

    # datagrams go through a recvmmsg-style slab, so the receiver's datagram objects are
    # allocated inside the measured region as on a socket (the stream list is not); the
    # buffer bound is the formula, as the README says it must be (no eviction)
    slab = Slab(1024, 1500)
    rx = make_receiver(max_buffered_bytes=bound_b)
    from tesla.mac import kernel as mackernel

    mackernel.warm_up()  # the native kernel: loaded and checked before, not measured
    gc.collect()
    rss0 = _rss()
    hwm_ok = _reset_hwm()
    tracemalloc.start()
    for k in range(0, len(pkts), 1024):
        ch = pkts[k : k + 1024]
        for j, b in enumerate(ch):
            slab.data[j, : len(b)] = np.frombuffer(b, np.uint8)
            slab.lengths[j] = len(b)
        slab.stamps[: len(ch)] = times[k : k + len(ch)]
        slab.count = len(ch)
        rx.receive_slab(slab)
        rx.pop_authenticated()  # handed over and dropped, as an engine would
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rss1 = _rss()
    hwm = _vm_hwm() if hwm_ok else None
    mb = rx.stats["max_buffered_bytes"]
    ev = rx.stats["drop.evicted"]
    growth = rss1 - rss0
    out(
        f"  rate {rate:,.0f} pkt/s x {size} B, T_int {tint * 1000:.0f} ms, d {d}: "
        f"{per} pkt/interval"
    )
    out(
        f"  formula ((d+1) x rate x T_int + 1) x (size + {PER_PACKET_OVERHEAD}) = "
        f"{bound_b / 2**20:.1f} MiB ({bound_pk} packets; the receiver's bound here)"
    )
    out(
        f"  measured max_buffered_bytes {mb / 2**20:.1f} MiB ({mb / bound_b:.2f} of formula, "
        f"{ev} evicted); RSS growth {growth / 2**20:.1f} MiB"
        + (f", peak RSS growth {(hwm - rss0) / 2**20:.1f} MiB" if hwm is not None else "")
        + f" (the stream list itself, {sum(map(len, pkts)) / 2**20:.1f} MiB, is outside)"
    )
    out(f"  RSS growth / max_buffered_bytes = {growth / mb:.2f} (target <= 1.2)")
    if hwm is not None:
        out(f"  peak RSS growth / max_buffered_bytes = {(hwm - rss0) / mb:.2f}")
    out(
        f"  tracemalloc peak {peak / 2**20:.1f} MiB = {peak / mb:.2f} of max_buffered_bytes "
        "(the malloc heap: released copies, index and batch arrays; arenas are mappings "
        "of their own, outside tracemalloc)"
    )
    return {
        "rate": rate,
        "formula_bytes": bound_b,
        "max_buffered_bytes": mb,
        "evicted": ev,
        "rss_growth_bytes": growth,
        "peak_rss_growth_bytes": None if hwm is None else hwm - rss0,
        "rss_vs_accounted": growth / mb,
    }


def memory_child(rate: float, quick: bool, out: Callable[[str], None]) -> dict[str, Any] | None:
    """:func:`memory_bound` in a fresh interpreter (so RSS growth is not hidden by memory
    freed earlier); its lines go to ``out``, its figures are returned (None: failed)."""
    import json
    import sys

    r = subprocess.run(
        [sys.executable, "-m", "tesla.cli.bench", "--memory-child", str(rate)]
        + (["--quick"] if quick else []),
        capture_output=True,
        text=True,
        timeout=600,
    )
    got = None
    for line in r.stdout.splitlines():
        if line.startswith(_MEMORY_JSON):
            got = json.loads(line[len(_MEMORY_JSON) :])
        else:
            out(line)
    if r.returncode:
        out(f"  memory child failed: {r.stderr.strip()[-300:]}")
        return None
    return got


_MEMORY_JSON = "memory-json "


# ----------------------------------------------------------------------------- e2e
def _udp_pair() -> tuple[socket.socket, socket.socket, tuple[str, int]]:
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 << 20)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    return rx, tx, rx.getsockname()


def _send_list(tx: socket.socket, pkts: Sequence[bytes], dst: tuple[str, int]) -> None:
    """Send datagrams with one ``sendmmsg`` and no per-datagram ctypes objects (joined,
    then :func:`alc.mmsg.send_packed`): the same socket path for every mode."""
    from alc.mmsg import send_packed

    lens = np.fromiter(map(len, pkts), dtype=np.int64, count=len(pkts))
    send_packed(tx, b"".join(pkts), np.cumsum(lens) - lens, lens, dst)


def _drain(rx: Any, slab: Any, want: int, consume: Callable[[Any], None]) -> None:
    from alc.mmsg import recv_batch

    got = 0
    while got < want:
        n = recv_batch(rx, slab, block=True)
        if n == 0:
            raise RuntimeError("loopback datagrams lost")
        consume(slab)
        got += n


def e2e_alc(
    data: bytes, mode: str, chunk: int = 256, tint_ms: int = 100, d: int = 2
) -> float:
    """Seconds to move ``data`` over 127.0.0.1 UDP, sender and receiver interleaved in
    this process in chunks of ``chunk`` datagrams (lossless, no pacing), until the
    receiver holds the file (on disk, for every mode).  ``mode``: "auth" and "plain" run
    what ``tesla-mcast send`` / ``receive --protocol alc`` run (:func:`_e2e_ours`), with
    and without TESLA (T_int ``tint_ms``, disclosure delay ``d``); "flute" runs
    flute-alc's sender and receiver (PyPI flute-alc)."""
    if mode != "flute":
        return _e2e_ours(data, mode == "auth", chunk, tint_ms, d)
    import tempfile

    from flute import receiver as fl_receiver
    from flute import sender as fl_sender

    from alc.mmsg import Slab

    rx, tx, dst = _udp_pair()
    rx.settimeout(2.0)
    slab = Slab(chunk, 1600)
    out_dir = tempfile.mkdtemp(prefix="bench-flute-")
    t_start = time.perf_counter()
    try:
        fs = fl_sender.Sender(1, fl_sender.Oti.new_no_code(1400, 64), fl_sender.Config())
        fs.add_object_from_buffer(data, "application/octet-stream", "file:///f.bin", None)
        fs.publish()
        fr = fl_receiver.Receiver(
            fl_receiver.UDPEndpoint("127.0.0.1", dst[1]),
            1,
            fl_receiver.ObjectWriterBuilder(out_dir),
            fl_receiver.Config(),
        )

        # flute-alc's receiver prints a line on stdout per completed file: silence fd 1
        saved_fd = os.dup(1)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)

        def consume_fl(sl: Any) -> None:
            for p in sl.datagrams():
                fr.push(p)

        try:
            while True:
                batch: list[bytes] = []
                while len(batch) < chunk and (p := fs.read()) is not None:
                    batch.append(bytes(p))
                if not batch:
                    break
                _send_list(tx, batch, dst)
                _drain(rx, slab, len(batch), consume_fl)
            el = time.perf_counter() - t_start
        finally:
            os.dup2(saved_fd, 1)
            os.close(saved_fd)
            os.close(devnull)
        got = os.path.join(out_dir, "f.bin")
        ok = os.path.exists(got) and os.path.getsize(got) == len(data)
        if not ok:
            raise RuntimeError("flute-alc receiver did not rebuild the file")
        return el
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)
        rx.close()
        tx.close()


def _e2e_ours(data: bytes, auth: bool, chunk: int, tint_ms: int, d: int) -> float:
    """Our ALC end to end through the CLI's own objects: the sender and receiver sessions
    of ``tesla-mcast send`` / ``receive --protocol alc`` (:func:`tesla.cli.run_alc.build_sender`,
    :func:`tesla.cli.run_alc.build_receiver`, from CLI arguments parsed by the CLI's parser:
    ``--rate 0``, ``--tint``/``--disclosure-delay`` as given, every other option at its
    default), the receive side fed by :func:`alc.net.drain_endpoint` (recvmmsg, kernel
    timestamps), completed files written to disk by the CLI's sink.  Timed: from adding
    the file to the sender until the receiver's file is on disk; the session setup (RSA
    key files, key chain, sockets) is not.  The sends go through the same packed
    ``sendmmsg`` as flute-alc's (``chunk`` datagrams, then the receiver drains them)."""
    import contextlib
    import io
    import tempfile

    from alc.mmsg import Slab, enable_rx_metadata
    from alc.net import Endpoint, drain_endpoint
    from tesla.cli.parser import build_parser
    from tesla.cli.run_alc import build_receiver, build_sender
    from tesla.core.bootstrap_sig import save_private_key, save_public_key

    rx, tx, dst = _udp_pair()
    rx.setblocking(False)
    enable_rx_metadata(rx)
    tmp = tempfile.mkdtemp(prefix="bench-alc-")
    out_dir = os.path.join(tmp, "out")
    try:
        group = f"127.0.0.1:{dst[1]}"
        sa = ["send", "f.bin", "--group", group, "--rate", "0", "-q"]
        ra = ["receive", "--group", group, "--out", out_dir]
        if auth:
            pem, pub = os.path.join(tmp, "S.pem"), os.path.join(tmp, "S.pub")
            save_private_key(_key(0), pem)  # the key size keygen makes
            save_public_key(_key(0).public_key(), pub)
            sa += ["--key", pem, "--tint", str(tint_ms), "--disclosure-delay", str(d)]
            # the receiver's clock error bound D^R_t: sender and receiver share one clock
            ra += ["--sender-key", pub, "--max-clock-error", str(E2E_CLOCK_ERROR_MS)]
        else:
            sa.append("--no-auth")
            ra.append("--no-auth")
        p = build_parser()
        with contextlib.redirect_stderr(io.StringIO()):  # the "TESLA: ..." banner
            ss = build_sender(p.parse_args(sa))
            rs = build_receiver(p.parse_args(ra))
        snd, rcv = ss.wrapped, rs.engine
        # in one process the receiver reads a chunk only after it processed the previous
        # ones: a sender running 4096 datagrams ahead (its default per call) would see its
        # last ones arrive late for the safe-packet test, which two processes would not
        ss.engine.config.max_datagrams_per_call = chunk
        ep = Endpoint(rcv, rx, slab=Slab(chunk, 65536))
        stats: dict[str, int] = {}
        sel_wait = selectors.DefaultSelector()
        sel_wait.register(rx, selectors.EVENT_READ)
        t_start = time.perf_counter()
        ss.engine.add_bytes(data, "f.bin")
        done = rs.done
        while True:
            now = time.time()
            for eng in (snd, rcv):
                t = eng.get_timer()
                if t is not None and t <= now:
                    eng.handle_timer(now)
            # one call's datagrams (at most ``chunk`` from the engine, plus TESLA's control
            # packets) go out together, as a driver sends them, before the receiver reads
            out = [dg for dg, _a in snd.datagrams_to_send(now)]
            if out:
                _send_list(tx, out, dst)
            got = 0
            while got < len(out):
                n = drain_endpoint(ep, stats)
                if n == 0 and not sel_wait.select(2.0):
                    raise RuntimeError("loopback datagrams lost")
                got += n
            while drain_endpoint(ep, stats):  # anything else queued
                pass
            if done():
                break
            if not out:
                t = snd.get_timer()
                rt = rcv.get_timer()
                wait = 0.001 if t is None else max(0.0, min(0.01, t - time.time()))
                if rt is not None:
                    wait = min(wait, max(0.0, rt - time.time()))
                if t is None and snd.done and time.perf_counter() - t_start > 60:
                    break
                time.sleep(wait)
        el = time.perf_counter() - t_start
        sel_wait.close()
        rs.sink.out.close()
        if stats.get("drop.socket_overflow"):
            raise RuntimeError(f"socket overflow: {stats}")
        got_path = os.path.join(out_dir, "f.bin")
        ok = os.path.exists(got_path) and os.path.getsize(got_path) == len(data)
        if ok:
            with open(got_path, "rb") as f:
                ok = f.read() == data
        if not ok:
            drops = ""
            if auth:
                drops = " (" + ", ".join(
                    f"{k}={v}" for k, v in rcv.stats.items() if ("drop." in k or "unsafe" in k) and v
                ) + ")"
            raise RuntimeError("file not received bit-exact" + drops)
        return el
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        rx.close()
        tx.close()


#: TESLA parameters of the end-to-end ALC transfer: those a user sets for a sender and
#: a receiver on one host, the same as the live bench's "same_host"
#: (:data:`tesla.cli.bench_live.AUTH_CONFIGS`).  The last data interval's key is
#: disclosed d intervals after it, so the transfer time includes a wait of (d-1..d) T_int
#: = 20-30 ms (RFC 4082 §3.6); a datagram tagged late in its interval has
#: (d - 1) T_int - D^R_t = 18 ms to arrive before it is unsafe
E2E_TINT_MS = 10
#: disclosure delay d of the end-to-end ALC transfer (CLI default: 3)
E2E_D = 3
#: the receiver's ``--max-clock-error`` (CLI default 20 ms, for hosts with separate
#: clocks): one process, one clock
E2E_CLOCK_ERROR_MS = 2


def end_to_end(
    out: Callable[[str], None],
    quick: bool,
    *,
    norm: bool = True,
    plan: Sequence[tuple[int, int]] | None = None,
) -> list[dict[str, Any]]:
    """Authenticated ALC loopback transfer beside ours plain and flute-alc, best of a few
    rounds taken round-robin; then NORM (:func:`tesla.cli.bench_norm.norm_end_to_end`):
    authenticated and plain ours beside NRL NORM, unless not ``norm``.  ``plan``: (file
    size in MiB, rounds) of each ALC file.  Returns each ALC file's figures
    (:func:`_alc_end_to_end`)."""
    # 20 MiB rounds are short (~0.4 s, a tenth of it the last keys' wait): a burst of
    # load on the shared machine moves one of them by 20%, so take the best of more
    if plan is None:
        plan = ((4, 2),) if quick else ((20, 5), (100, 3))
    res = [_alc_end_to_end(out, mib << 20, rounds) for mib, rounds in plan]
    if not norm:
        return res
    try:
        from tesla.cli.bench_norm import norm_end_to_end
    except ImportError as e:  # pragma: no cover - part of the package
        out(f"  NORM end to end: skipped ({e})")
        return res
    norm_end_to_end(out, quick)
    return res


def _alc_end_to_end(out: Callable[[str], None], size: int, rounds: int) -> dict[str, Any]:
    """One file size: TESLA's last-key wait (up to d T_int) weighs less on a larger file.
    Returns ``file_bytes``, ``rounds``, ``seconds`` (best time by mode: "auth", "plain",
    "flute"; absent when it failed or was skipped) and ``failed`` (mode -> message)."""
    data = os.urandom(size)
    out(
        f"end-to-end loopback, {size >> 20} MiB file, 1400 B symbols, no FEC, no loss "
        "(sender and receiver interleaved in one process over 127.0.0.1 UDP, file written "
        f"to disk; best of {rounds} rounds):"
    )
    modes = [
        (
            "auth",
            f"ALC ours + TESLA (tesla-mcast send/receive objects; T_int {E2E_TINT_MS} ms, "
            f"d {E2E_D}, receiver clock error {E2E_CLOCK_ERROR_MS} ms -- CLI defaults "
            "100 ms, 3, 20 ms; includes the wait for the last keys)",
        ),
        ("plain", "ALC ours, no auth (tesla-mcast send/receive objects, --no-auth)"),
        ("flute", "flute-alc, no auth"),
    ]
    try:
        import flute  # noqa: F401
    except ImportError:
        out("  flute-alc, no auth      skipped: module 'flute' (PyPI flute-alc) not installed")
        modes.pop()
    res: dict[str, float] = {}
    failed: dict[str, list[str]] = {}
    for _ in range(rounds):
        for mode, _label in modes:
            try:
                el = e2e_alc(data, mode, tint_ms=E2E_TINT_MS, d=E2E_D)
            except Exception as e:  # noqa: BLE001 - report and go on
                failed.setdefault(mode, []).append(str(e))
                continue
            res[mode] = min(res.get(mode, float("inf")), el)
    for mode, label in modes:
        if mode in res:
            el = res[mode]
            out(f"  {el:8.3f} s {size * 8 / el / 1e6:9.1f} Mbit/s  {label}")
        if mode in failed:  # every failed round is shown: a failure is not noise
            out(
                f"  {label}: {len(failed[mode])} of {rounds} rounds failed: "
                + "; ".join(sorted(set(failed[mode])))
            )
    if "auth" in res and "flute" in res:
        out(
            f"  ratio authenticated ALC / flute-alc unauthenticated: {res['flute'] / res['auth']:.2f}x"
        )
    if "auth" in res and "plain" in res:
        out(f"  ratio authenticated / our plain ALC: {res['plain'] / res['auth']:.2f}x")
    return {"file_bytes": size, "rounds": rounds, "seconds": res, "failed": failed}


# ----------------------------------------------------------------------------- json
#: issue 12's targets: the key's value must be >= its target (``live_alc_auth_vs_plain``:
#: and the authenticated run has 0 unsafe drops)
TARGETS: dict[str, float] = {
    "rx_1core_1400": 0.9,
    "rx_1core_64": 0.6,
    "rx_2cores_1400": 1.6,
    "tx_1400": 0.9,
    "alc_e2e_vs_flute_20MiB": 1.0,
    "alc_e2e_vs_flute_100MiB": 1.0,
    "live_alc_auth_vs_plain": 0.9,
}

#: the 2-core receiver configurations (both are CLI options: ``--verify-threads 2``,
#: ``--verify-workers 2``); ``rx_2cores_1400`` is the better of the two
TWO_CORE_LINES = ("receiver fast+2 thr", "receiver fast+2w")


#: ``memory_rss_vs_accounted``: RSS growth / max_buffered_bytes, lower is better
MEMORY_TARGET = 1.2


def json_report(
    blocks: Sequence[dict[str, Any]],
    e2e: Sequence[dict[str, Any]],
    live: dict[str, Any] | None,
    meta: dict[str, Any],
    memory: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The object ``bench --json`` prints, from the measurements: ``blocks`` as returned
    by :func:`_profile` (HMAC-SHA-256 at 64 and 1400 B), ``e2e`` by
    :func:`_alc_end_to_end` (the 20 MiB file first, then the 100 MiB one; smaller with
    ``--quick``), ``live`` by :func:`tesla.cli.bench_live.live_auth_vs_plain` (None: not
    run), ``memory`` by :func:`memory_bound` (None: not run), ``meta`` copied in
    (kernel, CPUs, load averages...).  A key that could not be
    measured is ``null`` and its ``met`` false; ``why`` says why (the meaning of every
    key: the module docstring of :mod:`tesla.cli.bench` and bench/README.md)."""
    by_size = {b["size"]: b for b in blocks if b.get("hash") == "sha256"}
    rep: dict[str, Any] = {}
    why: dict[str, str] = {}
    warn: dict[str, str] = {}
    what: dict[str, dict[str, Any]] = {}
    extra: dict[str, Any] = {"live_alc_auth_vs_plain_cli_defaults": None}

    def ratio_line(key: str, size: int, names: Sequence[str]) -> None:
        b = by_size.get(size)
        have = [(b["ns"][n], n) for n in names if b is not None and n in b["ns"]]
        if b is None or not have:
            rep[key] = None
            why[key] = f"not measured ({' / '.join(names)} at {size} B)"
            return
        ns, name = min(have)
        rep[key] = b["ref_ns"] / ns
        what[key] = {"line": name, "ns_per_packet": ns, "openssl_ns_per_packet": b["ref_ns"]}

    ratio_line("rx_1core_1400", 1400, ["receiver fast 1 core"])
    ratio_line("rx_1core_64", 64, ["receiver fast 1 core"])
    ratio_line("rx_2cores_1400", 1400, TWO_CORE_LINES)
    ratio_line("tx_1400", 1400, ["sender batch"])
    for key, k in (("alc_e2e_vs_flute_20MiB", 0), ("alc_e2e_vs_flute_100MiB", 1)):
        f = e2e[k] if k < len(e2e) else None
        sec = f["seconds"] if f else {}
        if f is None or "auth" not in sec or "flute" not in sec:
            rep[key] = None
            why[key] = "not run" if f is None else f"failed or skipped: {f.get('failed') or 'flute-alc'}"
        else:
            rep[key] = sec["flute"] / sec["auth"]  # goodput auth / goodput flute, same file
        if f is not None and f.get("failed") and rep[key] is not None:
            warn[key] = f"a round failed (later rounds of that mode skipped): {f['failed']}"
        if f is not None:
            what[key] = {
                "file_bytes": f["file_bytes"],
                "rounds": f["rounds"],
                "seconds": dict(sec),
                "goodput_bps": {m: f["file_bytes"] * 8 / t for m, t in sec.items()},
                "failed": dict(f.get("failed", {})),
            }
    key = "live_alc_auth_vs_plain"
    unsafe = None
    if live is None:
        rep[key] = None
        why[key] = "not run (--no-live)"
    else:
        rep[key] = live.get("ratio")
        unsafe = live.get("unsafe")
        if rep[key] is None:
            why[key] = live.get("error") or "authenticated transfer failed"
        elif live.get("error"):
            warn[key] = live["error"]
        dflt = live.get("by_config", {}).get("cli_defaults")
        extra["live_alc_auth_vs_plain_cli_defaults"] = None if dflt is None else dflt["ratio"]
        bad = [r for r in live.get("auth_runs", []) if not r.get("ok")]
        if bad and rep[key]:
            warn[key] = f"{len(bad)} of {len(live['auth_runs'])} authenticated transfers failed"
        what[key] = live
    met = {
        k: rep.get(k) is not None and rep[k] >= t and (k != key or unsafe == 0)
        for k, t in TARGETS.items()
    }
    return {
        **{k: rep.get(k) for k in TARGETS},
        **extra,
        "openssl_ns_per_packet": {str(s): by_size[s]["openssl_ns"] for s in sorted(by_size)},
        "reference": {str(s): by_size[s]["reference"] for s in sorted(by_size)},
        "live_unsafe_drops": unsafe,
        "targets": dict(TARGETS),
        "met": met,
        "all_met": all(met.values()),
        "lines": what,
        "ns_per_packet": {str(s): dict(by_size[s]["ns"]) for s in sorted(by_size)},
        "why_null": why,
        "warnings": warn,
        "memory_rss_vs_accounted": None if memory is None else memory["rss_vs_accounted"],
        "memory": None if memory is None else {
            **memory,
            "target": MEMORY_TARGET,
            "met": memory["rss_vs_accounted"] <= MEMORY_TARGET and memory["evicted"] == 0,
        },
        **meta,
    }


# ----------------------------------------------------------------------------- main
def bench_main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="tesla-mcast bench", description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="short runs (noisier)")
    ap.add_argument("--sizes", default="64,1400", help="packet sizes, comma separated")
    ap.add_argument(
        "--hashes", default=None, help="sha256 and/or sha1 (default both; --json: sha256)"
    )
    ap.add_argument("--workers", type=int, default=2, help="worker processes (0: skip)")
    ap.add_argument("--no-memory", action="store_true", help="skip the buffer-bound part")
    ap.add_argument("--no-e2e", action="store_true", help="skip end-to-end transfers")
    ap.add_argument(
        "--json",
        action="store_true",
        help="print one JSON object on stdout (issue 12's ratios, targets, raw figures; "
        "the human lines go to stderr); skips NORM end to end",
    )
    ap.add_argument(
        "--no-live",
        action="store_true",
        help="--json: skip live_alc_auth_vs_plain (tesla-mcast send -> receive processes)",
    )
    ap.add_argument(
        "--live-size",
        type=int,
        default=None,
        metavar="BYTES",
        help="file of the live transfers (default 100,000,000; --quick 10,000,000)",
    )
    ap.add_argument(
        "--e2e-only", action="store_true", help="only the end-to-end transfers (ALC, then NORM)"
    )
    ap.add_argument("--memory-child", type=float, default=None, help=argparse.SUPPRESS)
    a = ap.parse_args(list(argv) if argv is not None else None)
    if a.hashes is None:
        a.hashes = "sha256" if a.json else "sha256,sha1"
    if a.memory_child is not None:
        import json

        got = memory_bound(a.memory_child, 1400, a.quick, lambda t: print(t, flush=True))
        print(_MEMORY_JSON + json.dumps(got), flush=True)
        return 0
    quick = a.quick
    repeat = 3 if quick else 7  # every line is the best of `repeat` runs (7: bursts of
    # load on the shared host last seconds and can cover 5 consecutive rounds of a line)
    n_pkts = 4000 if quick else 20000
    per_int = 1000 if quick else 2500
    n_int = max(2, n_pkts // per_int)
    sizes = [int(x) for x in a.sizes.split(",") if x]
    lines: list[str] = []

    import sys

    def out(s: str) -> None:
        print(s, flush=True, file=sys.stderr if a.json else sys.stdout)
        lines.append(s)

    from tesla.mac import kernel as mackernel

    mackernel.warm_up(a.workers)  # loaded and checked outside every timing
    t_run = time.perf_counter()
    load0 = os.getloadavg()
    out(
        f"tesla-mcast bench{' --quick' if quick else ''}: {os.cpu_count()} CPUs, "
        f"load avg {_loadavg()} (figures are noisy on a shared machine)"
    )
    out(f"MAC kernel: {mackernel.describe()}")
    if a.e2e_only:
        end_to_end(out, quick)
        out(f"load avg at the end {_loadavg()} ({time.perf_counter() - t_run:.0f} s run)")
        return 0
    pool = None
    if a.workers > 0:
        from tesla.mac.workers import WorkerPool

        pool = WorkerPool(a.workers)
    blocks: list[dict[str, Any]] = []
    try:
        for hname in a.hashes.split(","):
            alg = PROFILES[hname]
            for size in sizes:
                blocks.append(
                    _profile(out, hname, alg, size, n_pkts, n_int, per_int, repeat, pool, quick)
                )
    finally:
        if pool is not None:
            pool.close()
    if a.json:
        return _json_tail(a, out, blocks, load0, t_run)
    if not a.no_memory:
        out("receiver memory at the highest loopback send rate:")
        rate = loopback_send_rate(1400, 0.3 if quick else 1.0)
        out(f"  loopback sendmmsg rate: {rate:,.0f} datagrams/s of 1400 B (one core)")
        memory_child(rate, quick, out)
    if not a.no_e2e:
        end_to_end(out, quick)
    out(f"load avg at the end {_loadavg()} ({time.perf_counter() - t_run:.0f} s run)")
    return 0


def _json_tail(
    a: argparse.Namespace,
    out: Callable[[str], None],
    blocks: list[dict[str, Any]],
    load0: tuple[float, float, float],
    t_run: float,
) -> int:
    """``--json``: the ALC end-to-end files and the live transfers after the blocks, then
    the JSON object (:func:`json_report`) on stdout."""
    import json

    from tesla.mac import kernel as mackernel

    plan = ((4, 2), (8, 1)) if a.quick else ((20, 5), (100, 3))
    e2e = [] if a.no_e2e else end_to_end(out, a.quick, norm=False, plan=plan)
    live = None
    if not a.no_live:
        from tesla.cli.bench_live import LADDER, live_auth_vs_plain

        size = a.live_size or (10_000_000 if a.quick else 100_000_000)
        out(f"live: tesla-mcast send -> tesla-mcast receive, {size:,} B file, loopback multicast")
        live = live_auth_vs_plain(
            size, out, ladder=LADDER[:3] if a.quick else LADDER, rounds=1 if a.quick else 3
        )
    memory = None
    if not a.no_memory:
        out("receiver memory at the highest loopback send rate:")
        rate = loopback_send_rate(1400, 0.3 if a.quick else 1.0)
        out(f"  loopback sendmmsg rate: {rate:,.0f} datagrams/s of 1400 B (one core)")
        memory = memory_child(rate, a.quick, out)
    elapsed = time.perf_counter() - t_run
    out(f"load avg at the end {_loadavg()} ({elapsed:.0f} s run)")
    meta = {
        "quick": bool(a.quick),
        "mac_kernel": mackernel.describe(),
        "cpu_count": os.cpu_count(),
        "load_avg_start": [round(x, 2) for x in load0],
        "load_avg_end": [round(x, 2) for x in os.getloadavg()],
        "run_seconds": round(elapsed, 1),
    }
    rep = json_report(blocks, e2e, live, meta, memory)
    print(json.dumps(rep, indent=1, default=float), flush=True)
    return 0


def _loadavg() -> str:
    """``1-min 5-min 15-min`` load averages."""
    return "{:.2f} {:.2f} {:.2f} (1/5/15 min)".format(*os.getloadavg())


def _profile(
    out: Callable[[str], None],
    hname: str,
    alg: int,
    size: int,
    n_pkts: int,
    n_int: int,
    per_int: int,
    repeat: int,
    pool: Any,
    quick: bool,
) -> dict[str, Any]:
    """One block.  Every line is the best of ``repeat`` runs (receiver_ns, _best); the
    two reference lines are sampled between our lines (:class:`Reference`), so the block
    is printed once all of it is measured.  Returns ``openssl_ns`` (None without the
    binary), ``reference`` (what the ratios divide), ``ref_ns`` and ``ns``: ns/packet by
    line name, the wall-clock twin of ``receiver fast 1 core`` named ``receiver fast 1
    core (wall)``, the kernel-alone lines ``MAC kernel alone 1 process (wall)`` / ``MAC
    kernel alone N workers (wall)``."""
    rng = random.Random(size)
    pkts = [rng.randbytes(size) for _ in range(n_pkts)]
    ref = Reference(
        hname, alg, size, pkts, seconds=1, openssl_every=5 if quick else 2, min_runs=repeat
    )
    rows: list[tuple[str, float, str]] = []
    kernel = ""
    nw = min(n_pkts, 5000 if quick else 20000)
    s = make_sender(alg, disclose_every=disclose_every_for(size))
    stream = make_stream(s, n_int, per_int, size)
    data_size = len(stream[len(stream) // 2][1])

    def rx(mode: str, fmt: str, **kw: Any) -> Callable[[], tuple[float, str]]:
        def m() -> tuple[float, str]:
            ns, acc = receiver_ns(stream, mode, 1, **kw)
            return ns, fmt.format(acc=acc)

        return m

    # every line is a sampler of one run; the block runs ``repeat`` rounds over all of
    # them (round-robin), so a burst of load on the shared machine costs each line at
    # most one of its samples instead of all of them
    lines: list[tuple[str, Callable[[], tuple[float, str]]]] = [
        ("hmac.digest loop", _one_run(lambda: hmac_digest_ns(pkts, alg, 1))),
        ("sender wrap", _sender_sampler(alg, size, nw, batch=0)),
        ("sender batch", _sender_sampler(alg, size, nw, batch=1024)),
        ("receiver ref", rx("ref", f"({{acc}} auth, {data_size} B)")),
    ]
    if hasattr(s, "protocol") and hasattr(make_receiver(fast=False), "receive_batch"):
        lines.append(("receiver ref batch", rx("refbatch", "({acc} auth)")))
    lines.append(("receiver fast 1 core", rx("fast", "({acc} auth)")))
    lines.append(
        ("receiver fast 4096/b", rx("fast", "({acc} auth, 4096-datagram batches)", batch=4096))
    )
    lines.append(
        ("receiver fast py-copy", rx("fast", "({acc} auth, MAC kernel off)", mac_kernel=False))
    )
    if pool is not None:
        lines.append(("receiver fast 1 core", rx("fast", "({acc} auth, wall clock)", wall=True)))
        lines.append(
            (
                f"receiver fast+{pool.n} thr",
                rx("fast", "({acc} auth, wall clock)", wall=True, verify_threads=pool.n),
            )
        )
        lines.append((f"receiver fast+{pool.n}w", rx("fast", "({acc} auth, wall clock)", pool=pool)))
    ref.every = max(1, len(lines))  # one openssl run per round
    samples: list[list[float]] = [[] for _ in lines]
    extras = [""] * len(lines)
    for _ in range(repeat):
        for k, (_name, fn) in enumerate(lines):
            ref.probe()
            ns, extra = fn()
            samples[k].append(ns)
            extras[k] = extra
    ns1 = 0.0
    by_name: dict[str, float] = {}
    for (name, _fn), xs, extra in zip(lines, samples, extras, strict=True):
        ns = min(xs)
        key = name
        if pool is not None and "wall clock)" in extra:
            if name == "receiver fast 1 core":  # the 1-core wall-clock line comes first
                ns1 = ns
                key = name + " (wall)"
            else:
                extra = extra[:-1] + f"; {ns1 / ns:.2f}x 1 core)"
        rows.append((name, ns, extra))
        by_name[key] = ns
    if pool is not None:
        ref.probe()
        a, b = pool_speedup(stream, alg, pool, repeat + 2)
        by_name["MAC kernel alone 1 process (wall)"] = a
        by_name[f"MAC kernel alone {pool.n} workers (wall)"] = b
        kernel = (
            f"  MAC kernel alone, wall clock: 1 process {a:.0f} ns/pkt, {pool.n} workers "
            f"{b:.0f} ns/pkt: speed-up {a / b:.2f}x"
        )
    ref.finish()

    py = min(ref.py)
    py_note = Reference.spread(ref.py, "interleaved runs")
    if ref.ossl:
        ref_ns = min(ref.ossl)
        src = "openssl " + ref.cmd
        ossl_note = Reference.spread(ref.ossl, f"{ref.seconds} s runs interleaved")
    else:
        ref_ns, src = py, "in-process cryptography HMAC copy loop (no openssl binary)"
        ossl_note = "(= py-copy)"
    out(
        f"HMAC-{hname.upper()} {size} B  (reference: {src}; our lines: best of {repeat} "
        "runs, taken round-robin over the block)"
    )

    def row(name: str, ns: float, extra: str = "") -> None:
        out(f"  {name:<22}{ns:9.0f} ns/pkt {1e9 / ns:12,.0f} pkt/s   {ref_ns / ns:5.2f}x {extra}")

    row("openssl", ref_ns, ossl_note)
    row("py-copy (ceiling)", py, py_note)
    for name, ns, extra in rows:
        row(name, ns, extra)
    if kernel:
        out(kernel)
    return {
        "hash": hname,
        "size": size,
        "openssl_ns": min(ref.ossl) if ref.ossl else None,
        "openssl_runs": len(ref.ossl),
        "reference": src,
        "ref_ns": ref_ns,
        "ns": {"openssl": ref_ns, "py-copy (ceiling)": py, **by_name},
    }


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(bench_main())
