"""NORM runners (CLI layer, on top of norm and tesla) behind ``tesla-mcast send|receive --protocol norm`` (see :mod:`tesla.cli.main`).

Options on top of the ALC ones (added through ``tesla.cli.parser.OPTION_HOOKS`` by
:func:`add_options`): ``--node-id``, ``--segment``, ``--block``, ``--parity``,
``--auto-parity``, ``--ack NODE,...``, ``--cc on|off``, ``--fec-id``, ``--grtt``,
``--no-suppress`` (receiver testing aid), ``--join-policy current|stream|all`` and
``--drop-first N`` (receiver, cold-start testing aid).  The ALC ``--rate`` (bits/s), ``--group``, ``--iface``,
``--ttl``, ``--pcap``, ``--out``, ``--from-pcap``, ``--loss``, ``--timeout``,
``--idle-timeout``, ``--json`` keep their meaning.  ``--fec`` / ``--symbol-length`` /
``--block-length`` are ALC options; NORM uses ``--fec-id`` / ``--segment`` / ``--block``.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from alc.engine import Forwarding, Times
from alc.net import Driver, LossInjector, open_socket, parse_group
from alc.output import OutputError, ReceivedFiles, plain_relpath
from tesla.cli.run_alc import (
    ConfigError,
    ReceiveSession,
    SendSession,
    guarded,
    is_internal_error,
    merged_stats,
    open_receive_socket,
    output_dir,
    parse_receive_group,
    report_stop,
    run_receiver,
    start_send,
    terminate_as_interrupt,
)


def _node_list(text: str) -> list[int]:
    out = []
    for part in text.split(","):
        part = part.strip()
        if part:
            out.append(_node_id(part))
    if not out:
        raise argparse.ArgumentTypeError("empty node list")
    return out


def _node_id(text: str) -> int:
    try:
        v = int(text, 0)
    except ValueError:
        import ipaddress

        try:
            v = int(ipaddress.IPv4Address(text))
        except ValueError as e:
            raise argparse.ArgumentTypeError(f"bad node id {text!r}") from e
    if not 0 < v < 0xFFFFFFFF:
        raise argparse.ArgumentTypeError("node id must be 1..0xFFFFFFFE")
    return v


def _onoff(text: str) -> bool:
    if text.lower() in ("on", "1", "yes", "true"):
        return True
    if text.lower() in ("off", "0", "no", "false"):
        return False
    raise argparse.ArgumentTypeError("expected on|off")


def add_options(sub: str, p: argparse.ArgumentParser) -> None:
    """OPTION_HOOKS entry: NORM options for ``send`` and ``receive``."""
    if sub not in ("send", "receive"):
        return
    g = p.add_argument_group("NORM (--protocol norm)")
    g.add_argument(
        "--node-id",
        type=_node_id,
        default=None,
        metavar="ID",
        help="NormNodeId (default: send 1, receive 2)",
    )
    g.add_argument(
        "--grtt",
        type=float,
        default=0.5,
        metavar="S",
        help="initial GRTT estimate (RFC default 0.5 s)",
    )
    if sub == "send":
        g.add_argument("--segment", type=int, default=1400, metavar="BYTES", help="segment size")
        g.add_argument(
            "--block", type=int, default=64, metavar="N", help="source symbols per block"
        )
        g.add_argument(
            "--parity", type=int, default=16, metavar="N", help="parity symbols available per block"
        )
        g.add_argument(
            "--auto-parity", type=int, default=0, metavar="N", help="proactive parity per block"
        )
        g.add_argument(
            "--ack",
            type=_node_list,
            default=None,
            metavar="NODE,...",
            help="positive acknowledgement from these node ids (watermark)",
        )
        g.add_argument(
            "--cc", type=_onoff, default=False, metavar="on|off", help="NORM-CC congestion control"
        )
        g.add_argument(
            "--fec-id",
            type=int,
            choices=[0, 2, 5, 129],
            default=None,
            help="FEC Encoding ID (default: 5, or 2 with m=16 when block+parity > 255)",
        )
        g.add_argument("--robust-factor", type=int, default=20, metavar="N")
    else:
        g.add_argument(
            "--no-suppress",
            action="store_true",
            help="never suppress NACKs on overheard feedback (testing)",
        )
        g.add_argument("--silent", action="store_true", help="never NACK (EMCON)")
        g.add_argument(
            "--join-policy",
            choices=["current", "stream", "all"],
            default="current",
            help="objects a receiver joining a running session asks for (RFC 5740 §5.2): "
            "current (default, the RFC's recommendation: objects that start while we "
            "listen, including one whose first datagrams we received unusable), stream "
            "(as current, a stream from the oldest block the sender holds), all (every "
            "object the sender still holds)",
        )
        g.add_argument(
            "--drop-first",
            type=int,
            default=0,
            metavar="N",
            help="testing: the first N sender datagrams arrive unusable (a cold start): "
            "authenticated, past their safe window (TESLA drops them as unsafe); plain, "
            "discarded once seen",
        )


#: minimum duration of the sender's flush (the NORM_CMD(FLUSH) repetitions before EOT): a
#: receiver process reading its socket late must still be able to NACK before the EOT
#: (RFC 5740 §5.3 likewise bounds T_inactivity below by 1 s); behind TESLA the release
#: delay (d+1)*T_int is added (docs/tesla-choices.md)
FLUSH_MIN_TIME = 1.0


def release_delay(d: int, tint_ms: int) -> float:
    """Longest wait of an authenticated NORM message for its key: sent in interval i,
    it is released when K_i is disclosed in interval i + d, at most (d+1)*T_int later."""
    return (d + 1) * tint_ms / 1000.0


def _rate_bytes(args: argparse.Namespace) -> float:
    r = float(getattr(args, "rate", 10e6) or 0.0)
    return r / 8.0 if r > 0 else 1e12  # 0 = unlimited


# ----------------------------------------------------------------------------- send

#: classic BPF (``struct sock_filter``: code, jt, jf, k) of :func:`feedback_filter`; on
#: a UDP socket offset 0 is the UDP header, so the NORM message starts at 8
_BPF_LD_B_ABS, _BPF_LD_W_ABS, _BPF_AND_K, _BPF_JEQ_K, _BPF_RET_K = 0x30, 0x20, 0x54, 0x15, 0x06
_SO_ATTACH_FILTER = 26


def _feedback_program(node_id: int) -> bytes:
    """Accept NORM_NACK/ACK/REPORT (types 4-6) and NORM_CMD of other nodes (a TESLA
    direct time-sync request is a receiver's NORM_CMD(APPLICATION)); drop the rest."""
    import struct

    ins = [
        (_BPF_LD_B_ABS, 0, 0, 8),  # version << 4 | type
        (_BPF_AND_K, 0, 0, 0x0F),
        (_BPF_JEQ_K, 5, 0, 4),  # NACK -> accept
        (_BPF_JEQ_K, 4, 0, 5),  # ACK -> accept
        (_BPF_JEQ_K, 3, 0, 6),  # REPORT -> accept
        (_BPF_JEQ_K, 0, 3, 3),  # CMD -> its source_id, else drop (INFO, DATA)
        (_BPF_LD_W_ABS, 0, 0, 8 + 4),  # source_id (network order, loaded as a number)
        (_BPF_JEQ_K, 1, 0, node_id & 0xFFFFFFFF),  # our own CMD, looped back -> drop
        (_BPF_RET_K, 0, 0, 0xFFFFFFFF),  # accept
        (_BPF_RET_K, 0, 0, 0),  # drop
    ]
    return b"".join(struct.pack("HBBI", *i) for i in ins)


def feedback_filter(sock: Any, node_id: int) -> bool:
    """Let the sender's socket queue only what a NORM sender acts on (receiver feedback,
    other nodes' NORM_CMD): its own NORM_DATA/INFO/CMD, looped back by the multicast
    loop every local receiver needs, are dropped in the kernel instead of being read and
    discarded one by one (at 800 Mbit/s that reading took a third of the sender's time
    and cut its rate in bursts, issue 11).  The engines still discard anything else they
    get, so this is only a cost saving: False (nothing attached) off Linux or when the
    kernel refuses.  The kernel counts filtered datagrams as socket drops, so a sender
    socket's ``drop.socket_overflow`` (``SO_RXQ_OVFL``) is not a loss count."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes
    import socket
    import struct

    prog = _feedback_program(node_id)
    buf = ctypes.create_string_buffer(prog, len(prog))
    fprog = struct.pack("@HP", len(prog) // 8, ctypes.addressof(buf))  # struct sock_fprog
    try:
        sock.setsockopt(socket.SOL_SOCKET, _SO_ATTACH_FILTER, fprog)  # copied by the kernel
    except OSError:
        return False
    return True



def build_sender(args: argparse.Namespace) -> SendSession:
    """The NORM sender of ``tesla-mcast send --protocol norm`` (no object yet: enqueue
    them on ``.engine``, then ``.engine.end()``), wrapped in TESLA unless ``--no-auth``.
    :class:`tesla.cli.run_alc.ConfigError` on a bad option."""
    from norm.sender import NormSender, NormSenderConfig

    try:
        group = parse_group(args.group)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    cfg = NormSenderConfig(
        node_id=args.node_id or 1,
        segment_size=args.segment,
        block_size=args.block,
        num_parity=args.parity,
        auto_parity=args.auto_parity,
        fec_id=args.fec_id,
        rate=_rate_bytes(args),
        rate_max=_rate_bytes(args) if args.cc else None,
        cc=args.cc,
        grtt=args.grtt,
        robust_factor=args.robust_factor,
        eot_repeats=3,
        flush_min_time=FLUSH_MIN_TIME
        + (
            0.0
            if getattr(args, "no_auth", False)
            else release_delay(getattr(args, "disclosure_delay", 3), getattr(args, "tint", 100))
        ),
    )
    try:
        sender = NormSender(cfg)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    from tesla.cli.wiring import wrap_sender

    return SendSession("norm", group, sender, wrap_sender(sender, args, "norm"))


def run_send(args: argparse.Namespace) -> int:
    from norm.sender import TxEotSent, TxFlushCompleted, TxWatermarkCompleted

    started = start_send(args, build_sender)  # TESLA unless --no-auth
    if isinstance(started, int):
        return started
    files, ss = started
    group, sender, eng = ss.group, ss.engine, ss.wrapped
    oids = [sender.enqueue_file(str(f), f.name.encode()) for f in files]
    if args.ack and oids:
        sender.set_watermark(oids[-1], args.ack)
    sender.end()
    from tesla.cli.wiring import add_endpoints, sender_finished

    writer = None
    if args.pcap:
        from alc.pcap import PcapWriter

        writer = PcapWriter(args.pcap)
    state: dict[str, Any] = {"eot": False, "flushed": False, "watermark": None}

    def pump() -> bool:
        while (ev := sender.next_event()) is not None:
            if isinstance(ev, TxEotSent):
                state["eot"] = True
            elif isinstance(ev, TxFlushCompleted):
                state["flushed"] = True
            elif isinstance(ev, TxWatermarkCompleted):
                state["watermark"] = ev
        return bool(state["eot"])

    sock = open_socket(group, args.iface, receive=True, ttl=args.ttl)
    feedback_filter(sock, sender.node_id)
    src = sock.getsockname()
    drv = Driver()

    def record(now: float, data: bytes, dst: tuple[str, int]) -> None:
        if writer is not None:
            writer.write(max(now, time.time()), src, dst, data)  # actual send time

    add_endpoints(drv, eng, sock, group, on_sent=record if writer is not None else None, iface=args.iface)
    t0 = time.time()
    try:
        drv.run(until=lambda: pump() and sender_finished(eng))
    except KeyboardInterrupt:
        pass
    finally:
        sock.close()
        if writer is not None:
            writer.close()
    elapsed = time.time() - t0
    st = sender.stats
    wm = state["watermark"]
    if not args.quiet:
        print(
            f"sent {len(oids)} file(s) as NORM objects, {st.get('tx', 0)} messages "
            f"({st.get('tx.data', 0)} data, {st.get('tx.repair.parity', 0) + st.get('tx.repair.explicit', 0)} "
            f"repairs, {st.get('rx.nack', 0)} NACKs heard) to {group[0]}:{group[1]} in {elapsed:.2f} s, "
            f"FEC ID {sender.fec_id}, GRTT {sender.grtt:.3f} s",
            file=sys.stderr,
        )
        if wm is not None:
            print(f"acknowledged by {wm.acked}; failed: {wm.failed}", file=sys.stderr)
    if wm is not None and wm.failed:
        return 1
    return 0


# ----------------------------------------------------------------------------- receive


def object_relpath(info: bytes | None, source_id: int, instance_id: int, object_id: int) -> str:
    """Relative output path of a received NORM object: the NORM_INFO content up to the first
    NUL (NRL convention: the file name), UTF-8, under the :func:`alc.output.plain_relpath`
    rules; without NORM_INFO (or an empty one) ``norm-object-SOURCE-INSTANCE-OBJECT``
    (NormNodeId, instance and object ids in decimal)."""
    name = (info or b"").split(b"\0", 1)[0]
    if not name:
        return f"norm-object-{source_id}-{instance_id}-{object_id}"
    try:
        text = name.decode("utf-8")
    except UnicodeDecodeError:
        raise OutputError("bad_name", f"NORM_INFO name is not UTF-8: {name[:60]!r}") from None
    return plain_relpath(text)


class ColdStart(Forwarding):
    """``receive --drop-first N`` (testing aid): the first ``n`` sender datagrams arrive
    unusable, as at a cold start.  Authenticated: they reach the TESLA layer with an
    arrival time 10 s late, so the verifier drops them as unsafe (its own path, counted
    ``tesla.drop.unsafe``).  Plain: the NORM receiver sees them as presence only
    (:meth:`norm.receiver.NormReceiver.presence_hint`) and they are dropped
    (``drop.cold_start``).  Receiver feedback (NACK/ACK) is never held back."""

    LATE = 10.0

    def __init__(self, engine: Any, norm_rx: Any, n: int, authenticated: bool) -> None:
        super().__init__(engine)
        self.norm_rx, self.n, self.auth = norm_rx, n, authenticated

    def receive_datagram(self, data: bytes, addr: Any, now: float) -> None:
        self.receive_datagrams([data], [addr], [now])

    def receive_datagrams(self, datagrams: Sequence[bytes], addrs: Sequence[Any], times: Times) -> None:
        keep: list[int] = []
        for k, data in enumerate(datagrams):
            if self.n > 0 and len(data) > 1 and data[0] & 15 not in (4, 5, 6):
                self.n -= 1
                now = float(times[k])
                if self.auth:
                    self.engine.receive_datagrams([data], [addrs[k]], [now + self.LATE])
                else:
                    if self.norm_rx.presence_wanted:
                        self.norm_rx.presence_hint(data, now)
                    st = self.norm_rx.stats
                    st["drop.cold_start"] = st.get("drop.cold_start", 0) + 1
                continue
            keep.append(k)
        if len(keep) == len(datagrams):
            self.engine.receive_datagrams(datagrams, addrs, times)
        elif keep:
            self.engine.receive_datagrams(
                [datagrams[k] for k in keep], [addrs[k] for k in keep], [times[k] for k in keep]
            )


class NormFileSink(ReceivedFiles):
    """Writes the NORM receiver's objects under the output directory (:mod:`alc.output`):
    DATA objects (and FILE objects of an engine without ``stream_files``) whole, FILE
    objects block by block at their offsets into the temporary file, renamed once complete
    with the announced size; an aborted object's temporary file is removed.  No MD5 is
    computed (NORM carries none; 90 ms of a 20 MiB receive, issue 11): only the SHA-256
    of the summary."""

    stream_md5 = False

    def write(self, ev: Any) -> bool:
        """Handle one receiver event; False if it is not about an object's data."""
        from norm.receiver import BlockReceived, FileCompleted, ObjectAborted, ObjectReceived

        if isinstance(ev, ObjectReceived):
            key = (ev.source_id, ev.instance_id, ev.object_id)
            self.deliver(
                key,
                f"NORM object {ev.object_id} {ev.name!r}"[:120],
                functools.partial(object_relpath, ev.info, *key),
                ev.data,
                {"object_id": ev.object_id, "name": ev.name},
            )
        elif isinstance(ev, BlockReceived):
            # FILE objects: each decoded block at its offset in the temporary file
            key = (ev.source_id, ev.instance_id, ev.object_id)
            name = ev.info.split(b"\0", 1)[0].decode("utf-8", "replace") if ev.info else None
            self.block(
                key,
                f"NORM object {ev.object_id} {name!r}"[:120],
                functools.partial(object_relpath, ev.info, *key),
                ev.offset,
                ev.data,
                {"object_id": ev.object_id, "name": name},
                owned=True,  # the engine forgot it
            )
        elif isinstance(ev, FileCompleted):
            key = (ev.source_id, ev.instance_id, ev.object_id)
            self.block_commit(
                key,
                f"NORM object {ev.object_id} {ev.name!r}"[:120],
                functools.partial(object_relpath, ev.info, *key),
                {"object_id": ev.object_id, "name": ev.name},
                length=ev.size,
            )
        elif isinstance(ev, ObjectAborted):
            for k in self.open_keys():  # (ObjectAborted names no instance id)
                if isinstance(k, tuple) and k[0] == ev.source_id and k[2] == ev.object_id:
                    self.block_abort(k)
            self.failures.append({"object_id": ev.object_id, "reason": ev.reason})
        else:
            return False
        return True


def build_receiver(args: argparse.Namespace) -> ReceiveSession:
    """The receiver of ``tesla-mcast receive --protocol norm``: group, output directory,
    NORM engine wrapped in TESLA unless ``--no-auth`` (and the ``--drop-first`` testing
    aid); :class:`tesla.cli.run_alc.ConfigError`.  No socket."""
    from norm.receiver import (
        NormReceiver,
        ObjectReceived,
        ReceiverConfig,
        SenderEnded,
    )
    from tesla.cli.wiring import tesla_of, tesla_summary, wrap_receiver

    group = parse_receive_group(args)
    out = output_dir(args)  # configuration errors: before the first datagram
    cfg = ReceiverConfig(
        node_id=args.node_id or 2,
        silent=getattr(args, "silent", False),
        nack_suppression=not getattr(args, "no_suppress", False),
        join_policy=getattr(args, "join_policy", "current"),
        stream_files=True,  # files larger than memory: decoded blocks written as they complete
    )
    rx: Any = NormReceiver(cfg)
    norm_rx = rx
    try:
        rx = wrap_receiver(rx, args, "norm")  # TESLA unless --no-auth
    except BaseException:
        out.close()
        raise
    auth_entry = rx  # TESLA in front of the NORM receiver, or the receiver itself
    if getattr(args, "drop_first", 0) > 0:
        rx = ColdStart(rx, norm_rx, args.drop_first, authenticated=rx is not norm_rx)
    sink = NormFileSink(out)  # files on disk under their final name, write failures
    files = sink.files
    failures = sink.failures
    state: dict[str, Any] = {"ended": False, "last": time.time(), "n": -1}

    def pump(other: Callable[[Any], None] | None = None) -> bool:
        while (ev := rx.next_event()) is not None:
            if not sink.write(ev) and isinstance(ev, SenderEnded):
                state["ended"] = True
            if other is not None and not isinstance(ev, ObjectReceived):
                other(ev)
        return bool(state["ended"])

    def done() -> bool:
        """The sender ended, or files came and the session went idle (``--idle-timeout``)."""
        if pump():
            return True
        n = rx.stats.get("rx.datagrams", 0)
        now = time.time()
        if n != state["n"]:
            state["n"], state["last"] = n, now
        return bool(sink.files or sink.failed) and now - state["last"] > args.idle_timeout

    def summary(elapsed: float, stop: str | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {
            "complete": bool(files) and not failures and not is_internal_error(stop),
            "received": len(files),
            "files": files,
            "failures": failures,
            "stats": merged_stats(rx.stats, sink),
            "tesla": tesla_summary(auth_entry),
            "elapsed_s": round(elapsed, 3),
        }
        if stop is not None:
            out["stopped"] = stop
        return out

    loss = LossInjector(args.loss, args.loss_seed) if getattr(args, "loss", 0) else None
    return ReceiveSession(
        "norm", group, rx, norm_rx, tesla_of(auth_entry), sink, loss, pump, done, summary
    )


def run_receive(args: argparse.Namespace) -> int:
    from tesla.cli.wiring import tesla_line

    try:
        rs = build_receiver(args)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    group, sink = rs.group, rs.sink
    files, failures = sink.files, sink.failures
    sock = None if args.from_pcap else open_receive_socket(group, args.iface, args.source)
    if sock is None and not args.from_pcap:
        sink.out.close()
        return 2
    t0 = time.time()
    with terminate_as_interrupt():  # SIGTERM like Ctrl-C: the summary is still written
        try:
            stop = _receive_loop(args, rs, sock)
            if stop is None or stop == "interrupted":
                stop = guarded(lambda: rs.pump(None)) or stop
        finally:
            sink.out.close()  # no temporary file outlives the session
        summary = rs.summary(time.time() - t0, stop)
        if args.json:
            print(json.dumps(summary, indent=2))
        else:
            for f in files:
                print(f"{f['path']}  {f['bytes']} bytes  sha256 {f['sha256']}")
            if (line := tesla_line(rs.tesla)) is not None:
                print(line, file=sys.stderr)
        report_stop(stop)
        if not files and not failures:
            print("error: no NORM object received", file=sys.stderr)
            return 1
        if failures:
            print(f"error: {len(failures)} object(s) aborted or not written", file=sys.stderr)
            return 1
        return 1 if is_internal_error(stop) else 0


def _receive_loop(args: argparse.Namespace, rs: ReceiveSession, sock: Any) -> str | None:
    """Replay or live receive until the sender ends (or idle/timeout); -> the stop reason of
    :func:`tesla.cli.run_alc.guarded`."""
    rx, group = rs.engine, rs.group
    if args.from_pcap:
        from alc.pcap import replay

        return guarded(lambda: replay(rx, args.from_pcap, dst_addr=group[0], dst_port=group[1], until=lambda: rs.pump(None)))
    from tesla.cli.wiring import add_endpoints

    drv = Driver()
    add_endpoints(drv, rx, sock, group, loss=rs.loss, iface=args.iface)
    return run_receiver(drv, sock, rs.done, args.timeout, rx.stats)
