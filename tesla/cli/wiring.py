"""TESLA wiring for the ``tesla-mcast`` runners (ALC and NORM) and the demo.

The runners build their plain engines and hand them to :func:`wrap_sender` /
:func:`wrap_receiver`, which return either the same engine (``--no-auth``) or the
TESLA-authenticated engine of :mod:`tesla.core.session`; drivers then use
:func:`add_endpoints` instead of ``Driver.add`` so that the ALC direct time-sync side
channel gets its own unicast socket.

Options (added through ``tesla.cli.parser.OPTION_HOOKS`` by :func:`add_options`):

* send: ``--key SENDER.pem`` (required unless ``--no-auth``), ``--tint MS``,
  ``--disclosure-delay D``, ``--chain-length N``, ``--mac hmac-sha256|...``,
  ``--group-mac KEYFILE``, ``--sync indirect|direct``, ``--sync-addr ADDR:PORT``,
  ``--max-clock-error MS`` (sender: D^O_t advertised in the bootstrap, indirect mode),
  ``--bootstrap-period S``, ``--asid N``;
* receive: ``--sender-key SENDER.pub`` (required unless ``--no-auth``),
  ``--max-clock-error MS`` (D^R_t), ``--group-mac``, ``--sync``, ``--sync-addr``,
  ``--clock-offset MS`` (added to every arrival time: with ``--from-pcap`` the capture
  timestamps are the arrival times of the safe-packet test), ``--max-buffer BYTES``,
  ``--jitter MS`` (testing aid: random extra delay per received datagram), ``--asid``;
* demo: ``--no-auth``, ``--tint MS``.

Direct time synchronization (RFC 5776 §2.3.1): over NORM the Type 5 request is a
NORM_CMD(APPLICATION) sent to the session group (the normal feedback path) and the
sender answers to the group as well (a receiver socket bound to the group address
cannot receive a unicast reply; receivers without that pending request drop it).  Over
ALC there is no back channel: the sender listens on ``--sync-addr`` (a unicast UDP
socket) and the receiver sends its request there from an ephemeral unicast socket that
also receives the signed Type 6 answer.  Datagrams an engine returns with an explicit
address go out through that side-channel socket (:class:`_Split`).
"""

from __future__ import annotations

import argparse
import contextvars
import heapq
import ipaddress
import os
import random
import socket
import sys
import time
import weakref
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from cryptography.exceptions import UnsupportedAlgorithm

from alc.engine import Address, BatchEntry, Forwarding, Times, count
from alc.net import Driver, LossInjector, iface_address, parse_group
from tesla.core.authenticator import PROTO_ALC, PROTO_NORM, ControlTemplate, TeslaSender
from tesla.core.bootstrap_sig import load_private_key, load_public_key, read_key_file
from tesla.core.keychain import SYNC_BUILD_MAX_KEYS, KeyChainSet
from tesla.core.ntp import posix_to_ntp
from tesla.core.params import D_MIN, DEFAULT_PRF, TeslaParams
from tesla.core.receiver import DROP_REASONS, TeslaReceiver
from tesla.core.session import AuthenticatedReceiver, AuthenticatedSender, _is_sync_request
from tesla.core.timesync import ms_to_ntp_delta

__all__ = [
    "AUTH_DROP_REASONS",
    "MAC_NAMES",
    "add_endpoints",
    "add_options",
    "dry_run_packets",
    "sender_finished",
    "tesla_of",
    "tesla_summary",
    "wrap_receiver",
    "wrap_sender",
]

#: drop reasons shown in the receiver summaries: the verifier's, in its order, without
#: ``stale`` (evictions of packets whose key never came are not shown there)
AUTH_DROP_REASONS = tuple(r for r in DROP_REASONS if r != "stale")
#: ``--mac`` names -> TESLA-MAC registry values (RFC 5776 §7)
MAC_NAMES = {"hmac-sha1": 0, "hmac-sha224": 1, "hmac-sha256": 2, "hmac-sha384": 3, "hmac-sha512": 4}
#: CLI defaults: T_int 100 ms, d = 3 (one interval more than the RFC minimum so that
#: loopback/LAN delay and jitter stay well inside the safe window d*T_int - D_t),
#: N = 6000 keys per chain (10 minutes per chain; further chains are created on the
#: fly, RFC 5776 §3.1.2.3, each in ~70 ms: a short stall of the sender), receiver
#: clock error bound = the RFC's NTP example (security factor 10 x (1 ms + 1 ms) =
#: 20 ms, RFC 5776 §2.3.2)
DEFAULT_TINT_MS = 100
DEFAULT_DISCLOSURE_DELAY = 3
DEFAULT_CHAIN_LENGTH = 6000
DEFAULT_RECEIVER_CLOCK_ERROR_MS = 20.0
DEFAULT_BOOTSTRAP_PERIOD = 1.0
#: direct sync: seconds between Type 5 requests until D_t is known (every datagram
#: before that is dropped as no_bootstrap, so retry fast; the sender's §6.2.1 rate
#: limit bounds the answers)
DEFAULT_SYNC_RETRY = 0.25
#: Group MAC function used with ``--group-mac`` (TESLA-MAC value, out of band with K_g)
GROUP_MAC_ID = 2

_clock = time.time


# ----------------------------------------------------------------------------- options


def _ms(text: str) -> float:
    try:
        v = float(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"expected milliseconds, got {text!r}") from e
    return v


def _pos_int(lo: int, hi: int) -> Callable[[str], int]:
    def conv(text: str) -> int:
        try:
            v = int(text, 0)
        except ValueError as e:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from e
        if not lo <= v <= hi:
            raise argparse.ArgumentTypeError(f"must be within {lo}..{hi}")
        return v

    return conv


def _addr(text: str) -> Address:
    try:
        return parse_group(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from e


def add_options(sub: str, p: argparse.ArgumentParser) -> None:
    """OPTION_HOOKS entry: TESLA options for ``send``, ``receive`` and ``demo``."""
    if sub not in ("send", "receive", "demo"):
        return
    g = p.add_argument_group("TESLA authentication (RFC 5776)")
    g.add_argument(
        "--no-auth", action="store_true", help="plain mode: no TESLA (default: authenticated)"
    )
    if sub != "receive":  # a receiver learns T_int and the rest from the bootstrap
        g.add_argument(
            "--tint",
            type=_pos_int(1, 0xFFFF),
            default=DEFAULT_TINT_MS,
            metavar="MS",
            help=f"TESLA interval duration T_int (default {DEFAULT_TINT_MS} ms)",
        )
    if sub == "demo":
        return
    g.add_argument(
        "--group-mac", metavar="KEYFILE", help="Group MAC key K_g (raw bytes or hex text)"
    )
    g.add_argument(
        "--sync",
        choices=["indirect", "direct"],
        default="indirect",
        help="time synchronization (default indirect: a configured clock error bound)",
    )
    g.add_argument(
        "--sync-addr",
        type=_addr,
        default=None,
        metavar="ADDR:PORT",
        help="ALC direct sync side channel: the sender's unicast address (sender listens, "
        "receiver sends its requests there)",
    )
    g.add_argument("--asid", type=_pos_int(0, 15), default=0, help="TESLA ASID (default 0)")
    if sub == "send":
        g.add_argument("--key", metavar="SENDER.pem", help="sender's RSA private key (PEM)")
        g.add_argument(
            "--disclosure-delay",
            type=_pos_int(D_MIN, 255),
            default=DEFAULT_DISCLOSURE_DELAY,
            metavar="D",
            help=f"d in intervals (>= {D_MIN}, default {DEFAULT_DISCLOSURE_DELAY})",
        )
        g.add_argument(
            "--chain-length",
            type=_pos_int(2, 0xFFFFFFFF),
            default=DEFAULT_CHAIN_LENGTH,
            metavar="N",
            help=f"keys per chain minus one (default {DEFAULT_CHAIN_LENGTH})",
        )
        g.add_argument("--mac", choices=sorted(MAC_NAMES), default="hmac-sha256")
        g.add_argument(
            "--max-clock-error",
            type=_ms,
            default=0.0,
            metavar="MS",
            help="sender clock error bound D^O_t advertised in the bootstrap (indirect sync)",
        )
        g.add_argument(
            "--bootstrap-period",
            type=float,
            default=DEFAULT_BOOTSTRAP_PERIOD,
            metavar="S",
            help="signed bootstrap repetition period",
        )
    else:
        g.add_argument("--sender-key", metavar="SENDER.pub", help="sender's RSA public key (PEM)")
        g.add_argument(
            "--max-clock-error",
            type=_ms,
            default=DEFAULT_RECEIVER_CLOCK_ERROR_MS,
            metavar="MS",
            help="bound on this receiver's clock error D^R_t, indirect sync "
            f"(default {DEFAULT_RECEIVER_CLOCK_ERROR_MS:g})",
        )
        g.add_argument(
            "--clock-offset",
            type=_ms,
            default=0.0,
            metavar="MS",
            help="added to every arrival time (with --from-pcap: to the capture timestamps)",
        )
        g.add_argument(
            "--max-buffer",
            type=int,
            default=64 << 20,
            metavar="BYTES",
            help="TESLA buffer bound (packets waiting for their key)",
        )
        g.add_argument(
            "--verify-workers",
            type=_pos_int(0, 64),
            default=0,
            metavar="N",
            help="ALC: N worker processes compute the MACs of each interval from shared "
            "memory while this one parses on (default 0: in this process)",
        )
        g.add_argument(
            "--verify-threads",
            type=_pos_int(1, 64),
            default=None,
            metavar="N",
            help="N native threads of the compiled MAC kernel verify the MACs: large "
            "intervals in N-1 threads of their own while this one parses on, smaller "
            "ones shared by N threads (default: 2 where this process may run on two "
            "CPUs or more, else 1)",
        )
        g.add_argument(
            "--jitter",
            type=_ms,
            default=0.0,
            metavar="MS",
            help="testing: delay each received datagram by a random 0..MS (reorders)",
        )


# ----------------------------------------------------------------------------- helpers


class ConfigExit(SystemExit):
    """Exit status 2 after a one-line configuration error (bad key, TESLA option);
    ``message`` is that line's text (:mod:`tesla.aio` raises it as a ValueError)."""

    def __init__(self, message: str) -> None:
        super().__init__(2)
        self.message = message


#: False while a library caller (:mod:`tesla.aio`) builds engines: configuration errors
#: are raised (ConfigExit) without the CLI's stderr line
PRINT_ERRORS: contextvars.ContextVar[bool] = contextvars.ContextVar("PRINT_ERRORS", default=True)


def _fail(msg: str) -> NoReturn:
    if PRINT_ERRORS.get():
        print(f"tesla-mcast: error: {msg}", file=sys.stderr)
    raise ConfigExit(msg)


def _load_key(path: str | None, option: str, loader: Callable[[str], Any], missing: str) -> Any:
    """``loader(path)``; exits with status 2 (``missing`` when no path was given)."""
    if not path:
        _fail(missing)
    try:
        return loader(path)
    except OSError as e:
        _fail(f"{option} {path}: {e.strerror or e}")
    except (ValueError, TypeError, UnsupportedAlgorithm) as e:
        # one line whatever the parser says (issue 15: UnsupportedAlgorithm escaped)
        _fail(f"{option} {path}: " + " ".join(str(e).split()))


def _group_key(args: argparse.Namespace) -> bytes | None:
    path = getattr(args, "group_mac", None)
    if not path:
        return None
    try:
        raw = read_key_file(path)
    except OSError as e:
        _fail(f"--group-mac {path}: {e.strerror or e}")
    except ValueError as e:
        _fail(f"--group-mac {path}: {e}")
    text = raw.strip()
    try:
        if text and len(text) % 2 == 0:
            return bytes.fromhex(text.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        pass
    if not raw:
        _fail(f"--group-mac {path}: empty key file")
    return raw


def verify_threads(args: argparse.Namespace) -> int:
    """``--verify-threads``, by default 2 where the process may run on two CPUs or more:
    the MACs of an interval then run beside the parsing of the next (issue 12's
    two-core receiver), else 1."""
    n = getattr(args, "verify_threads", None)
    if n:
        return int(n)
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    return 2 if cpus >= 2 else 1


def _authenticated(args: argparse.Namespace) -> bool:
    return not getattr(args, "no_auth", False)


# ----------------------------------------------------------------------------- sender


class _Sender(AuthenticatedSender):
    """:class:`AuthenticatedSender` for the runners.  ``live``: packets are tagged with
    the clock read *after* the engine produced them and the control packets were signed
    (the first call of an ALC sender FEC-encodes every file, which can take longer than
    T_int, and a bootstrap's RSA signature takes milliseconds: tagging with the stale
    ``now`` would make them unsafe at every receiver).  ``group_replies`` (NORM): sync
    responses go to the group (see module doc)."""

    live = False
    group_replies = False
    side_channel: tuple[str, Address] | None = None

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address | None]]:
        pkts = self.engine.datagrams_to_send(now)
        if self.live:
            now = max(now, _clock())
        t = self.tesla
        out: list[tuple[bytes, Address | None]] = [
            (p, None) for p in t.control_packets(now, data_follows=bool(pkts))
        ]
        if self._responses:
            out.extend(self._responses)
            self._responses = []
        if pkts:  # one batch: the native kernel tags it in one call (wrap_many)
            if self.live:  # after the control packets' RSA signatures (ms each, more
                now = max(now, _clock())  # on a loaded host): their time, not the stale one
            wrapped = t.wrap_many([p for p, _ in pkts], now)
            out.extend(zip(wrapped, [a for _, a in pkts], strict=True))
        if self.group_replies:
            return [(d, None) for d, _ in out]
        return out


def _norm_template(engine: Any) -> ControlTemplate:
    from norm.quantize import quantize_backoff, quantize_gsize, quantize_rtt

    cfg = getattr(engine, "cfg", None)
    return ControlTemplate(
        source_id=int(getattr(engine, "node_id", 0)),
        instance_id=int(getattr(engine, "instance_id", 0)),
        grtt=quantize_rtt(float(getattr(engine, "grtt", 0.5))),
        backoff=quantize_backoff(getattr(cfg, "backoff", 4)),
        gsize=quantize_gsize(getattr(cfg, "group_size", 10_000)),
    )


def wrap_sender(
    engine: Any, args: argparse.Namespace, protocol: str, now: float | None = None
) -> Any:
    """``engine`` itself with ``--no-auth``, else an :class:`AuthenticatedSender` whose
    T0 is ``now`` (default: the current time).  Exits with status 2 on a bad config.
    Without ``args.dry_run`` the sender is live (see :class:`_Sender`)."""
    if not _authenticated(args):
        return engine
    priv = _load_key(
        getattr(args, "key", None),
        "--key",
        load_private_key,
        "authenticated mode needs --key SENDER.pem (create one with "
        "'tesla-mcast keygen --out SENDER'), or --no-auth for the plain mode",
    )
    gk = _group_key(args)
    now = time.time() if now is None else now
    try:
        params = TeslaParams(
            t0_ntp=posix_to_ntp(now),
            tint_ms=args.tint,
            n_chain=args.chain_length,
            d=args.disclosure_delay,
            prf_id=DEFAULT_PRF,
            mac_id=MAC_NAMES[args.mac],
            group_mac=gk is not None,
            group_mac_id=GROUP_MAC_ID,
            asid=args.asid,
        )
    except ValueError as e:
        _fail(str(e))
    if protocol == PROTO_ALC:
        tsi = int(getattr(args, "tsi", 0) or 0)
        tpl = ControlTemplate(tsi=tsi, tsi_bits=32 if tsi < 1 << 32 else 48)
    else:
        tpl = _norm_template(engine)
    direct = args.sync == "direct"
    if direct and protocol == PROTO_ALC and args.sync_addr is None:
        _fail("--sync direct over ALC needs --sync-addr ADDR:PORT (the side channel to listen on)")
    ts = TeslaSender(
        params,
        priv,
        protocol=protocol,
        template=tpl,
        group_key=gk,
        bootstrap_period=args.bootstrap_period,
        d_o_t=None if direct else ms_to_ntp_delta(args.max_clock_error),
        # long sessions: a long chain j+1 is built in a thread as soon as chain j starts,
        # N intervals before its Type 3 commitment is due (no stall at the switch); a
        # short one synchronously when needed (no thread at all)
        chains=KeyChainSet(
            params,
            background=not params.single_chain and params.n_chain > SYNC_BUILD_MAX_KEYS,
        ),
    )
    ts.chains.chain(0)  # O(N) now, not inside the first send (its tags would be stale)
    if not params.single_chain and not ts.chains.background:
        # Type 3 tags carry C_1 from interval 0 on (n_tx_newkcc as RECOMMENDED, RFC 5776
        # §3.1.2.3): chain 1 now too, not in the first send (16 ms at N 6000)
        ts.chains.chain(1)
    _preload_kernel(1)  # the sealing kernel too, not at the first datagram (a start-up stall)
    eng = _Sender(engine, ts)
    eng.live = not getattr(args, "dry_run", False)
    eng.group_replies = protocol == PROTO_NORM
    side = args.sync_addr if protocol == PROTO_ALC and args.sync_addr is not None else None
    if side is not None:
        eng.side_channel = ("listen", side)
    if not getattr(args, "quiet", False):
        print(
            f"TESLA: T_int {params.tint_ms} ms, d {params.d}, N {params.n_chain}, "
            f"MAC {args.mac}, group MAC {'on' if gk else 'off'}, sync {args.sync}"
            + (f" (side channel {side[0]}:{side[1]})" if side else ""),
            file=sys.stderr,
        )
    return eng


def sender_finished(eng: Any) -> bool:
    """True once an authenticated sender has disclosed the last data interval's key
    (always True for a plain engine)."""
    return not isinstance(eng, AuthenticatedSender) or not eng.tesla.disclosure_pending()


def dry_run_packets(eng: Any, start: float, limit: float = 3600.0) -> list[tuple[float, bytes]]:
    """Run a sender engine on a virtual clock from ``start`` until it is done (an
    authenticated one: until its last key is disclosed); ``(time, datagram)`` pairs."""
    out: list[tuple[float, bytes]] = []
    now = start
    while not getattr(eng, "done", False) and now - start < limit:
        t = eng.get_timer()
        if t is not None and t > now:
            now = t
        eng.handle_timer(now)
        got = eng.datagrams_to_send(now)
        out.extend((now, d) for d, _ in got)
        if not got:
            nt = eng.get_timer()
            if nt is None or nt <= now:
                now += 0.001  # nothing due: let virtual time pass
    return out


# ----------------------------------------------------------------------------- receiver


class _Stats(dict[str, int]):
    """Merged stats; writes of engine counters (e.g. the driver's drops) reach the engine."""

    def __init__(self, data: dict[str, int], target: dict[str, int]) -> None:
        super().__init__(data)
        self._target = target

    def __setitem__(self, key: str, value: int) -> None:
        super().__setitem__(key, value)
        if not key.startswith("tesla."):
            self._target[key] = value


class _AuthRx(AuthenticatedReceiver):
    """:class:`AuthenticatedReceiver` for the runners: arrival times are shifted by
    the configured clock offset, and overheard sync requests (NORM: our own and other
    receivers', multicast) are not fed to the verifier."""

    def __init__(
        self, tr: TeslaReceiver, engine: Any, offset: float, live: bool, **kw: Any
    ) -> None:
        super().__init__(tr, engine, **kw)
        self.offset = offset
        self.live = live
        self.side_channel: tuple[str, Address] | None = None

    @property
    def stats(self) -> dict[str, int]:
        return _Stats(super().stats, self.engine.stats)

    def _time(self, now: float) -> float:
        # the driver gives each datagram its own arrival time (the kernel's receive
        # timestamp, or a clock read after the datagram was received: never earlier)
        return now + self.offset

    def _overheard(self, data: bytes) -> bool:
        t = self.tesla
        if (
            self._norm
            and len(data) > 12
            and data[0] & 15 == 3
            and _is_sync_request(data, t.asid, t.protocol)
        ):
            count(t._stats, "sync_request_overheard")
            return True
        return False

    def receive_datagram(self, data: bytes, addr: Address | None, now: float) -> None:
        self.receive_datagrams([data], [addr], [now])

    def receive_datagrams(
        self, datagrams: Sequence[bytes], addrs: Sequence[Address | None], times: Times
    ) -> None:
        off = self.offset
        ts: Times = [t + off for t in times] if off else times
        if self._norm and any(len(d) > 12 and d[0] & 15 == 3 for d in datagrams):
            # a NORM_CMD among them (else no sync request to look for): one call each
            keep = [k for k, d in enumerate(datagrams) if not self._overheard(d)]
            if len(keep) != len(datagrams):
                datagrams = [datagrams[k] for k in keep]
                addrs = [addrs[k] for k in keep]
                ts = [ts[k] for k in keep]
        super().receive_datagrams(datagrams, addrs, ts)

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address | None]]:
        return super().datagrams_to_send(now + self.offset)

    def get_timer(self) -> float | None:
        t = super().get_timer()
        return None if t is None else t - self.offset

    def handle_timer(self, now: float) -> None:
        super().handle_timer(now + self.offset)


class _Jitter(Forwarding):
    """Testing aid: holds each received datagram for a random 0..``jitter`` s."""

    def __init__(self, engine: Any, jitter: float, seed: int = 1) -> None:
        super().__init__(engine)
        self.jitter = jitter
        self._rng = random.Random(seed)
        self._q: list[tuple[float, int, bytes, Address | None]] = []
        self._n = 0

    def _release(self, now: float) -> None:
        q = self._q
        out: list[bytes] = []
        addrs: list[Address | None] = []
        times: list[float] = []
        while q and q[0][0] <= now:
            t, _, data, addr = heapq.heappop(q)
            out.append(data)
            addrs.append(addr)
            times.append(t)  # held until t: that is its arrival time for the receiver
        if out:
            self.engine.receive_datagrams(out, addrs, times)

    def receive_datagrams(
        self, datagrams: Sequence[bytes], addrs: Sequence[Address | None], times: Times
    ) -> None:
        rng, jitter, q = self._rng, self.jitter, self._q
        for k, data in enumerate(datagrams):
            self._n += 1
            t = float(times[k])
            heapq.heappush(q, (t + rng.random() * jitter, self._n, data, addrs[k]))
        if len(times):
            self._release(float(times[-1]))

    def receive_datagram(self, data: bytes, addr: Address | None, now: float) -> None:
        self.receive_datagrams([data], [addr], [now])

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address | None]]:
        self._release(now)
        return super().datagrams_to_send(now)

    def get_timer(self) -> float | None:
        a = self.engine.get_timer()
        b = self._q[0][0] if self._q else None
        if a is None:
            return b
        return a if b is None else min(a, b)

    def handle_timer(self, now: float) -> None:
        self._release(now)
        self.engine.handle_timer(now)


def _preload(protocol: str) -> None:
    """Import now what the engines import lazily on their first FDT/FEC packet: those
    imports (xml, urllib, ...) take a few hundred ms, a stall during which every
    datagram read afterwards gets a late arrival time and may fail the safe-packet test."""
    import importlib

    for mod in ("alc.fec", "alc.fdt") if protocol == PROTO_ALC else ("alc.fec",):
        importlib.import_module(mod)


def _preload_kernel(threads: int) -> None:
    """The MAC kernel too (extension import and its known-answer check)."""
    from tesla.mac import kernel as mackernel

    mackernel.warm_up(threads)


def wrap_receiver(engine: Any, args: argparse.Namespace, protocol: str) -> Any:
    """The receive entry a driver feeds: ``engine`` itself with ``--no-auth``, else a
    TESLA-verifying receiver in front of it (``--jitter``: behind a jitter buffer).  The
    caller keeps ``engine`` for the application's state (files, announcements);
    :func:`tesla_of` gives the TESLA receiver.  Exits with status 2 on a bad config."""
    jitter = float(getattr(args, "jitter", 0.0) or 0.0) / 1000.0
    if not _authenticated(args):
        return _Jitter(engine, jitter) if jitter > 0 else engine
    pub = _load_key(
        getattr(args, "sender_key", None),
        "--sender-key",
        load_public_key,
        "authenticated mode needs --sender-key SENDER.pub (the sender's public key), "
        "or --no-auth for the plain mode",
    )
    gk = _group_key(args)
    direct = args.sync == "direct"
    if protocol == PROTO_ALC:
        tsi = int(getattr(args, "tsi", 0) or 0)
        tpl = ControlTemplate(tsi=tsi, tsi_bits=32 if tsi < 1 << 32 else 48)
        if direct and args.sync_addr is None:
            _fail("--sync direct over ALC needs --sync-addr ADDR:PORT (the sender's side channel)")
        if direct and getattr(args, "from_pcap", None):
            _fail("--sync direct needs a live session (no requests can be answered from a pcap)")
    else:
        tpl = ControlTemplate(source_id=int(getattr(args, "node_id", None) or 2))
    # the one receiver: recvmmsg batches are parsed and buffered as whole arrays
    tr = TeslaReceiver(
        pub,
        protocol=protocol,
        asid=args.asid,
        group_key=gk,
        group_mac_id=GROUP_MAC_ID,
        sync=args.sync,
        max_clock_error_ms=args.max_clock_error,
        max_buffered_bytes=args.max_buffer,
        template=tpl,
        pool=_worker_pool(int(getattr(args, "verify_workers", 0) or 0), protocol),
        verify_threads=verify_threads(args),
    )
    sync_addr = args.sync_addr if protocol == PROTO_ALC and direct else None
    live = not getattr(args, "from_pcap", None)
    if live:
        _preload(protocol)
        _preload_kernel(verify_threads(args))
    rx = _AuthRx(
        tr,
        engine,
        args.clock_offset / 1000.0,
        live,
        sync_addr=sync_addr,
        sync_retry=DEFAULT_SYNC_RETRY,
    )
    if sync_addr is not None:
        rx.side_channel = ("connect", sync_addr)
    return _Jitter(rx, jitter) if jitter > 0 else rx


def _worker_pool(n: int, protocol: str) -> Any:
    """A :class:`tesla.mac.workers.WorkerPool` of ``n`` processes (ALC), closed at exit."""
    if n <= 0 or protocol != PROTO_ALC:
        return None
    import atexit

    from tesla.mac.workers import WorkerPool

    pool = WorkerPool(n)
    atexit.register(pool.close)
    return pool


def tesla_of(entry: Any) -> TeslaReceiver | None:
    """The TESLA receiver of a receive entry built by :func:`wrap_receiver` (None with
    ``--no-auth``); a TESLA receiver is its own."""
    if isinstance(entry, TeslaReceiver):
        return entry
    while isinstance(entry, _Jitter):
        entry = entry.engine
    return entry.tesla if isinstance(entry, AuthenticatedReceiver) else None


def tesla_summary(eng: Any) -> dict[str, Any] | None:
    """TESLA counters of a receive entry (None when not authenticated):
    ``{"accepted": n, "drops": {reason: n}, "synchronized": bool, ...}``."""
    t = tesla_of(eng)
    if t is None:
        return None
    st = t.stats
    return {
        "accepted": st.get("accepted", 0),
        "drops": {r: st.get(f"drop.{r}", 0) for r in AUTH_DROP_REASONS},
        "bootstrapped": t.params is not None,
        "d_t_ms": None if t.d_t is None else round(t.d_t * 1000 / (1 << 32), 3),
        "sync": t.sync,
        "max_buffered_bytes": st.get("max_buffered_bytes", 0),
        "sync_requests": st.get("tesla.sync_request", 0),
    }


def tesla_line(eng: Any) -> str | None:
    """One human-readable line of :func:`tesla_summary`."""
    s = tesla_summary(eng)
    if s is None:
        return None
    drops = ", ".join(f"{k}={v}" for k, v in s["drops"].items())
    return (
        f"TESLA: {s['accepted']} packets authenticated, D_t {s['d_t_ms']} ms ({s['sync']}); "
        f"drops {drops}"
    )


# ----------------------------------------------------------------------------- driver


class _Split:
    """Two engine views sharing one engine: datagrams without an address go out of the
    main (group) socket, those with an explicit address out of the side-channel socket."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.unicast: list[tuple[bytes, Address | None]] = []
        self.main = _MainView(self)
        self.side = _SideView(self)


class _MainView(Forwarding):
    """The group socket's view: the engine's own receive path (its ``recvmmsg`` slab
    entry too), datagrams with an explicit address left for the side channel."""

    def __init__(self, split: _Split) -> None:
        super().__init__(split.engine)
        self.s = split
        self.takes_slab = bool(isinstance(split.engine, BatchEntry) and split.engine.takes_slab)

    def receive_slab(self, slab: Any, addrs: Sequence[Address | None]) -> None:
        self.engine.receive_slab(slab, addrs)

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address | None]]:
        out: list[tuple[bytes, Address | None]] = []
        for d, a in self.engine.datagrams_to_send(now):
            (self.s.unicast if a is not None else out).append((d, a))
        return out


class _SideView(_MainView):
    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address | None]]:
        out = self.s.unicast
        self.s.unicast = []
        return out

    def get_timer(self) -> float | None:
        return None

    def handle_timer(self, now: float) -> None:
        pass


def _side_socket(mode: str, addr: Address, iface: str | None) -> socket.socket:
    v6 = ipaddress.ip_address(addr[0]).version == 6
    s = socket.socket(socket.AF_INET6 if v6 else socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
    try:
        if mode == "listen":
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(addr)
        elif v6:
            s.bind(("::1" if ipaddress.ip_address(addr[0]).is_loopback else "::", 0))
        else:
            host = iface_address(iface)
            if host is None:
                host = "127.0.0.1" if ipaddress.ip_address(addr[0]).is_loopback else "0.0.0.0"
            s.bind((host, 0))
        s.setblocking(False)
    except BaseException:
        s.close()
        raise
    return s


def add_endpoints(
    drv: Driver,
    eng: Any,
    sock: socket.socket,
    dest: Address | None,
    *,
    receive: bool = True,
    loss: LossInjector | None = None,
    on_sent: Callable[[float, bytes, Address], None] | None = None,
    iface: str | None = None,
) -> None:
    """``drv.add(eng, sock, dest, ...)``, plus the ALC sync side-channel socket when the
    (authenticated) engine has one; that socket is closed with the driver."""
    inner = eng.engine if isinstance(eng, _Jitter) else eng
    side = inner.side_channel if isinstance(inner, (_AuthRx, _Sender)) else None
    if side is None:
        drv.add(eng, sock, dest, receive=receive, loss=loss, on_sent=on_sent)
        return
    mode, addr = side
    try:
        usock = _side_socket(mode, addr, iface)
    except OSError as e:
        _fail(f"sync side channel {addr[0]}:{addr[1]}: {e.strerror or e}")
    split = _Split(eng)
    main: Any = split.main  # Engine (stats is a read-only view)
    side_view: Any = split.side
    drv.add(main, sock, dest, receive=receive, loss=loss, on_sent=on_sent)
    drv.add(side_view, usock, None, receive=True)
    weakref.finalize(drv, usock.close)


def demo_auth(
    rx: Any, sender: Any, args: argparse.Namespace, protocol: str, **ids: int
) -> tuple[Any, Any, str]:
    """``tesla-mcast demo`` (ALC or NORM ``protocol``): (receiver engine, sender engine,
    description).  Unless ``--no-auth``: a throwaway RSA key pair in a temporary
    directory, the sender wrapped with TESLA and the receiver verifying with the public
    key (indirect sync).  ``ids``: the session's identifiers (``tsi``, NORM ``node_id``)."""
    if getattr(args, "no_auth", False):
        return rx, sender, "no authentication (--no-auth)"
    import tempfile

    from tesla.cli.keygen import generate_keypair

    with tempfile.TemporaryDirectory(prefix="tesla-mcast-demo-key-") as tmp:
        priv, pub = generate_keypair(tmp)
        ns = argparse.Namespace(
            no_auth=False,
            key=str(priv),
            sender_key=str(pub),
            tint=args.tint,
            disclosure_delay=DEFAULT_DISCLOSURE_DELAY,
            chain_length=DEFAULT_CHAIN_LENGTH,
            mac="hmac-sha256",
            group_mac=None,
            sync="indirect",
            sync_addr=None,
            asid=0,
            max_clock_error=0.0,  # the sender's D^O_t (same clock: 0)
            bootstrap_period=DEFAULT_BOOTSTRAP_PERIOD,
            clock_offset=0.0,
            max_buffer=64 << 20,
            jitter=0.0,
            quiet=True,
            **ids,
        )
        tx = wrap_sender(sender, ns, protocol)
        ns.max_clock_error = DEFAULT_RECEIVER_CLOCK_ERROR_MS
        arx = wrap_receiver(rx, ns, protocol)
    return (
        arx,
        tx,
        (
            f"TESLA T_int {args.tint} ms d {DEFAULT_DISCLOSURE_DELAY} HMAC-SHA-256 "
            "(throwaway RSA-2048 key pair)"
        ),
    )
