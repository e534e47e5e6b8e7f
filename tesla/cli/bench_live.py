"""Live loopback-multicast transfers for ``tesla-mcast bench --json``: the real CLI
``tesla-mcast send`` to ``tesla-mcast receive`` as two processes.

:func:`live_transfer` runs one transfer of a file and measures its goodput: file octets
over the time from the *first datagram on the group* to the *file's completion* at the
receiver (complete, checked, under its final name).  The first datagram is seen
by a probe socket of this process joined to the same group (multicast is delivered to
every socket bound to the port; the probe is closed after that datagram, so it costs
the transfer nothing); the file is complete when its final name appears in the
receiver's ``--out`` directory (polled every ms: the receiver renames a complete,
checked file atomically), else at the receiver's exit (``timed_to`` says which).  Key
loading, the sender's key chain, the interpreter start and exit are outside the timed
span.

:func:`live_auth_vs_plain` is ``live_alc_auth_vs_plain``: the highest ``--rate`` of a
short ladder (200M, 400M, 800M, 1600M) at which the *plain* (``--no-auth``) transfer
completes bit-exact with no datagram lost in the socket (``drop.socket_overflow`` 0 in
the receiver's ``--json`` stats), then authenticated transfers at that rate
interleaved with more plain ones; the ratio is the best authenticated goodput over the
best plain goodput.

Network: loopback only, group 239.255.x.y, ``--iface 127.0.0.1``, TTL 0.
"""

from __future__ import annotations

import json
import os
import random
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

__all__ = ["LADDER", "live_auth_vs_plain", "live_transfer", "make_file", "make_keys"]

#: rates (bit/s) tried for the plain transfer, lowest first
LADDER = (200e6, 400e6, 800e6, 1600e6)

#: the authenticated configurations, (send options, receive options) by name; the first
#: is the one ``ratio`` reports.  After the last data packet a receiver waits
#: (d-1..d) x T_int for its interval's key (RFC 4082 §3.6, RFC 5776 §4.3): a fixed tail
#: of 200-300 ms at the CLI defaults (T_int 100 ms, d 3, for 300 ms of network delay
#: plus clock error), 40-60% of a 100 MB transfer at 1.6 Gbit/s.  "same_host" is what a
#: user sets for two processes on one host: one clock (``--max-clock-error 2`` ms) and
#: loopback delay, so T_int 10 ms with d 3 (20 ms of tolerance, a 20-30 ms tail).
#: "cli_defaults" is measured beside it.
AUTH_CONFIGS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "same_host": (("--tint", "10", "--disclosure-delay", "3"), ("--max-clock-error", "2")),
    "cli_defaults": ((), ()),
}


def _cli() -> list[str]:
    return [sys.executable, "-m", "tesla.cli"]


def make_keys(workdir: str) -> tuple[str, str]:
    """``tesla-mcast keygen`` into ``workdir``: (private PEM, public PEM)."""
    base = os.path.join(workdir, "sender")
    subprocess.run(_cli() + ["keygen", "--out", base], check=True, capture_output=True, timeout=120)
    return base + ".pem", base + ".pub"


def make_file(path: str, size: int, seed: int = 1) -> str:
    """A file of ``size`` pseudo-random octets (incompressible), written in 1 MiB pieces."""
    rng = random.Random(seed)
    with open(path, "wb") as f:
        left = size
        while left > 0:
            n = min(left, 1 << 20)
            f.write(rng.randbytes(n))
            left -= n
    return path


def _group(rng: random.Random) -> tuple[str, int]:
    return f"239.255.{rng.randrange(1, 255)}.{rng.randrange(1, 255)}", rng.randrange(20000, 60000)


def _wait_joined(group: str, timeout: float) -> bool:
    """Wait until some socket of this host has joined ``group`` (``/proc/net/igmp``, the
    group as a little-endian hex word): the receiver listens once it has.  False on
    timeout or without that file (the caller then waits a fixed second)."""
    word = socket.inet_aton(group)[::-1].hex().upper()
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            with open("/proc/net/igmp") as f:
                if any(line.split()[:1] == [word] for line in f):
                    return True
        except OSError:
            return False
        time.sleep(0.01)
    return False


class _Appears:
    """Notes the time (``time.time()``) at which ``path`` first exists, polled every
    millisecond: the receiver gives a complete, checked file its final name by one atomic
    rename (:mod:`alc.output`)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.t: float | None = None
        self._stop = False
        self._th = threading.Thread(target=self._run, daemon=True)
        self._th.start()

    def _run(self) -> None:
        exists = os.path.exists
        while not self._stop:
            if exists(self.path):
                self.t = time.time()
                return
            time.sleep(0.001)

    def close(self) -> None:
        self._stop = True
        self._th.join(2)


class _FirstDatagram:
    """A socket joined to ``group`` on 127.0.0.1 that notes the arrival time
    (``time.time()``) of the first datagram and then closes."""

    def __init__(self, group: tuple[str, int]) -> None:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        s.bind(("", group[1]))
        mreq = struct.pack("4s4s", socket.inet_aton(group[0]), socket.inet_aton("127.0.0.1"))
        s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
        s.settimeout(0.2)
        self.sock = s
        self.t: float | None = None
        self._stop = False
        self._th = threading.Thread(target=self._run, daemon=True)
        self._th.start()

    def _run(self) -> None:
        try:
            while not self._stop:
                try:
                    self.sock.recv(65536)
                except TimeoutError:
                    continue
                self.t = time.time()
                return
        finally:
            self.sock.close()

    def close(self) -> None:
        self._stop = True
        self._th.join(2)


def live_transfer(
    path: str,
    rate: float,
    *,
    auth: bool,
    keys: tuple[str, str] | None,
    workdir: str,
    extra_send: Sequence[str] = (),
    extra_receive: Sequence[str] = (),
    timeout: float = 120.0,
    seed: int | None = None,
    protocol: str = "alc",
) -> dict[str, Any]:
    """One ``send --protocol P`` -> ``receive --protocol P`` transfer of ``path`` at
    ``rate`` bit/s (``protocol``: ``alc`` or ``norm``; NORM options such as ``--grtt`` go
    in ``extra_send`` / ``extra_receive``).  Returns
    ``ok`` (exit 0, complete, the output equal to the input), ``goodput_bps``,
    ``seconds``, the receiver's drop counters (``drops``: every ``drop.*`` of its
    stats), ``unsafe`` and ``socket_overflow``, its CPU time and peak RSS, and
    ``stopped`` / ``error`` when it did not end normally."""
    rng = random.Random(seed)
    group = _group(rng)
    gs = f"{group[0]}:{group[1]}"
    out = tempfile.mkdtemp(prefix="rx-", dir=workdir)
    size = os.path.getsize(path)
    auth_send = ["--key", keys[0]] if auth and keys else ["--no-auth"]
    auth_recv = ["--sender-key", keys[1]] if auth and keys else ["--no-auth"]
    recv_cmd = _cli() + [
        "receive", "--protocol", protocol, "--group", gs, "--iface", "127.0.0.1",
        "--out", out, "--json", "--timeout", str(timeout), "--idle-timeout", "5",
        *auth_recv, *extra_receive,
    ]  # fmt: skip
    send_cmd = _cli() + [
        "send", path, "--protocol", protocol, "--group", gs, "--iface", "127.0.0.1",
        "--ttl", "0", "--rate", f"{rate:.0f}", "-q", *auth_send, *extra_send,
    ]  # fmt: skip
    res: dict[str, Any] = {
        "rate_bps": rate, "auth": auth, "protocol": protocol, "file_bytes": size, "ok": False,
    }  # fmt: skip
    rx = subprocess.Popen(
        ["/usr/bin/time", "-f", "%e %U %S %M"] + recv_cmd if os.path.exists("/usr/bin/time") else recv_cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    # the receiver's interpreter starts and joins the group (seconds on a loaded host):
    # a datagram sent before would be lost to it; then the probe joins
    if not _wait_joined(group[0], 30.0):
        time.sleep(1.0)
    probe = _FirstDatagram(group)
    done = _Appears(os.path.join(out, os.path.basename(path)))
    time.sleep(0.05)
    tx = subprocess.Popen(send_cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        rx_out, rx_err = rx.communicate(timeout=timeout + 30)
        t_end = time.time()
    except subprocess.TimeoutExpired:
        rx.kill()
        rx_out, rx_err = rx.communicate()
        t_end = time.time()
        res["error"] = "receiver did not exit"
    try:
        tx_err = tx.communicate(timeout=timeout)[1]
    except subprocess.TimeoutExpired:
        tx.kill()
        tx_err = tx.communicate()[1]
    probe.close()
    done.close()
    try:
        summary = json.loads(rx_out)
    except ValueError:
        res["error"] = f"receiver printed no JSON (exit {rx.returncode}): {rx_err.strip()[-300:]}"
        _cleanup(out)
        return res
    st = summary.get("stats", {})
    res["drops"] = {k: v for k, v in st.items() if k.startswith("drop.") and v}
    res["unsafe"] = int(st.get("drop.unsafe", 0))
    res["socket_overflow"] = int(st.get("drop.socket_overflow", 0))
    res["receiver_elapsed_s"] = summary.get("elapsed_s")
    if summary.get("stopped"):
        res["stopped"] = summary["stopped"]
    if summary.get("missing"):
        res["missing"] = summary["missing"]
    res["tesla"] = summary.get("tesla")
    times = rx_err.strip().splitlines()[-1:] if rx_err else []
    if times:
        try:
            el, us, sy, rss_kb = times[0].split()
            res["receiver_cpu_s"] = round(float(us) + float(sy), 2)
            res["receiver_max_rss_mib"] = round(int(rss_kb) / 1024, 1)
        except ValueError:
            pass
    got = [Path(f["path"]) for f in summary.get("files", []) if "path" in f]
    same = bool(got) and got[0].is_file() and _same(path, str(got[0]))
    res["bit_exact"] = same
    res["ok"] = rx.returncode == 0 and bool(summary.get("complete")) and same
    if tx.returncode:
        res["sender_error"] = (tx_err or "").strip()[-300:]
    if probe.t is not None:
        # the file's final name, else (not seen) the receiver's exit
        res["timed_to"] = "file complete" if done.t is not None else "receiver exit"
        dt = (done.t if done.t is not None else t_end) - probe.t
        res["seconds"] = round(dt, 3)
        res["goodput_bps"] = size * 8 / dt
    _cleanup(out)
    return res


def _reason(r: dict[str, Any]) -> str:
    """Why a transfer failed, from the receiver's summary."""
    parts = [str(r[k]) for k in ("error", "stopped") if r.get(k)]
    if r.get("drops"):
        parts.append("drops " + ", ".join(f"{k}={v}" for k, v in r["drops"].items()))
    if r.get("missing"):
        parts.append("missing " + ", ".join(str(m.get("reason")) for m in r["missing"]))
    if r.get("sender_error"):
        parts.append("sender: " + r["sender_error"])
    return "; ".join(parts) or "not bit-exact"


def _same(a: str, b: str) -> bool:
    if os.path.getsize(a) != os.path.getsize(b):
        return False
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            x, y = fa.read(1 << 20), fb.read(1 << 20)
            if x != y:
                return False
            if not x:
                return True


def _cleanup(d: str) -> None:
    import shutil

    shutil.rmtree(d, ignore_errors=True)


def _line(kind: str, r: dict[str, Any]) -> str:
    return (
        f"  live {kind:<6}{r['rate_bps'] / 1e6:6.0f} Mbit/s: "
        + (f"{r['goodput_bps'] / 1e6:7.1f} Mbit/s goodput" if r.get("goodput_bps") else "no timing")
        + f", ok {r['ok']}, unsafe {r.get('unsafe')}, socket overflow {r.get('socket_overflow')}"
        + (f", {r['error']}" if r.get("error") else "")
    )


def _clean(r: dict[str, Any]) -> bool:
    """Bit-exact, and no datagram lost in the receiver's socket."""
    return bool(r["ok"]) and r.get("socket_overflow", 1) == 0


def live_auth_vs_plain(
    size: int,
    out: Callable[[str], None],
    *,
    ladder: Sequence[float] = LADDER,
    rounds: int = 2,
    workdir: str | None = None,
    configs: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] | None = None,
) -> dict[str, Any]:
    """``live_alc_auth_vs_plain`` (module docstring).  The ladder's plain transfer at the
    rate chosen is the first plain round; then ``rounds`` authenticated transfers of each
    of ``configs`` (:data:`AUTH_CONFIGS`) at that rate, interleaved with ``rounds - 1``
    more plain ones, and the best goodput of each kind is taken (one transfer moves by
    30% on a shared machine).  Only a plain round without socket drops counts.  Returns
    ``ratio`` (the first configuration's best authenticated goodput over the best plain;
    0.0 when none of its transfers arrived bit-exact; None when no rate of the ladder
    completes plain), ``config`` (its name and options), ``rate_bps``, the best
    ``plain`` and ``auth`` transfers (:func:`live_transfer`), ``unsafe`` (the most
    ``drop.unsafe`` of any authenticated round, every configuration), ``auth_runs`` /
    ``plain_runs`` (every round's goodput, ok, unsafe and socket drops), ``by_config``
    (each configuration's ratio, options and runs) and ``ladder`` (every plain try)."""
    cfgs = dict(AUTH_CONFIGS if configs is None else configs)
    own = workdir is None
    wd = tempfile.mkdtemp(prefix="tesla-live-") if workdir is None else workdir

    def brief(r: dict[str, Any]) -> dict[str, Any]:
        return {k: r.get(k) for k in ("rate_bps", "ok", "goodput_bps", "unsafe", "socket_overflow")}

    try:
        keys = make_keys(wd)
        path = make_file(os.path.join(wd, "file.bin"), size)
        tries: list[dict[str, Any]] = []
        best: dict[str, Any] | None = None
        out(f"  live ladder (plain, highest rate without loss first): {[f'{r / 1e6:g}M' for r in ladder]}")
        for rate in ladder:
            r = live_transfer(path, rate, auth=False, keys=None, workdir=wd)
            tries.append(brief(r))
            out(_line("plain", r))
            if not _clean(r):
                break
            best = r
        res: dict[str, Any] = {"file_bytes": size, "ladder": tries, "ratio": None}
        if best is None:
            res["error"] = "no rate of the ladder completes plain without socket drops"
            return res
        rate = best["rate_bps"]
        plains = [best]
        auths: dict[str, list[dict[str, Any]]] = {name: [] for name in cfgs}
        for k in range(max(1, rounds)):
            if k:
                r = live_transfer(path, rate, auth=False, keys=None, workdir=wd)
                out(_line("plain", r))
                plains.append(r)
            for name, (snd, rcv) in cfgs.items():
                au = live_transfer(
                    path, rate, auth=True, keys=keys, workdir=wd, extra_send=snd, extra_receive=rcv
                )
                out(_line(f"auth {name}", au))
                auths[name].append(au)
        ok_p = [r for r in plains if _clean(r) and r.get("goodput_bps")]
        bp = max(ok_p, key=lambda r: r["goodput_bps"])  # the ladder's run at least
        by_config: dict[str, Any] = {}
        for name, runs in auths.items():
            ok_a = [r for r in runs if r["ok"] and r.get("goodput_bps")]
            ba = max(ok_a, key=lambda r: r["goodput_bps"]) if ok_a else runs[-1]
            by_config[name] = {
                "send_options": list(cfgs[name][0]),
                "receive_options": list(cfgs[name][1]),
                "ratio": ba["goodput_bps"] / bp["goodput_bps"] if ok_a else 0.0,
                "best": ba,
                "unsafe": max(int(r.get("unsafe") or 0) for r in runs),
                "runs": [brief(r) for r in runs],
            }
            if not ok_a:  # no authenticated transfer arrived bit-exact: no goodput
                by_config[name]["error"] = "authenticated transfer failed: " + _reason(runs[-1])
        first = next(iter(cfgs))
        main = by_config[first]
        res.update(
            rate_bps=rate,
            config={"name": first, "send": main["send_options"], "receive": main["receive_options"]},
            ratio=main["ratio"],
            plain=bp,
            auth=main["best"],
            unsafe=max(c["unsafe"] for c in by_config.values()),
            plain_runs=[brief(r) for r in plains],
            auth_runs=main["runs"],
            by_config=by_config,
        )
        if "error" in main:
            res["error"] = main["error"]
        return res
    finally:
        if own:
            _cleanup(wd)
