"""``tesla-mcast inspect CAPTURE``: a line per datagram of a capture (pcap or pcapng) and a
summary; with the sender's public key, the capture is verified offline.

Each line: capture time, kind (ALC data / FDT / TESLA signalling, NORM message type and
command flavour), TSI/TOI or NORM source/instance/object ids, SBN/ESI, the TESLA interval
of the tag and the interval of the key it discloses (i - d), and the verdict.

Verification (``--sender-key``) drives the receiver the CLI's ``receive`` builds
(:func:`tesla.cli.wiring.wrap_receiver`, the same batch entry ``receive_datagrams``), one
datagram at a time with its capture timestamp as arrival time, so the safe-packet test
applies to the capture's timing.  A datagram's verdict comes from what the receiver did
with it, read from its public counters after each call:

* ``accepted``: released to the ALC/NORM engine after its MAC verified, or a TESLA
  signalling datagram (bootstrap, sync) the receiver took;
* ``dropped`` with the reason counted for it (``unsafe``, ``bad_mac``, ``malformed`` ...):
  at once, or when its interval's key arrived (a buffered datagram that leaves the buffer
  without being released);
* ``pending``: still waiting for a key disclosed after the end of the capture (reported
  as dropped ``stale`` in the summary, as the receiver would).

``--json`` prints one JSON object per datagram (``index``: 0-based position among the
capture's UDP datagrams of the session's port, ``verdict``, ``reason``, and the fields
above) and a final summary object (``"summary": true``).
"""

from __future__ import annotations

import argparse
import json
import struct
import sys
import tempfile
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from alc.engine import Address, Forwarding, Times
from alc.errors import DecodeError
from alc.pcap import read_udp
from tesla.core import extauth as ea

_VERIFY_LATE = ("bad_mac", "bad_group_mac", "duplicate", "evicted", "stale", "flushed")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="tesla-mcast inspect",
        description="explain a capture datagram by datagram; verify it with --sender-key",
    )
    p.add_argument("capture", metavar="CAPTURE", help="pcap or pcapng file")
    p.add_argument("--protocol", choices=["alc", "norm"], default=None, help="default: guessed")
    p.add_argument("--port", type=int, default=None, help="UDP destination port (default: busiest)")
    p.add_argument("--sender-key", metavar="PUB", default=None, help="verify with this public key")
    p.add_argument(
        "--max-clock-error",
        type=float,
        default=None,
        metavar="MS",
        help="receiver clock bound for the safe-packet test (default: receive's default)",
    )
    p.add_argument("--asid", type=int, default=0)
    p.add_argument("--json", action="store_true", help="one JSON object per datagram + summary")
    return p


# ----------------------------------------------------------------------------- describe

_NORM_TYPES = {1: "NORM_INFO", 2: "NORM_DATA", 3: "NORM_CMD", 4: "NORM_NACK", 5: "NORM_ACK", 6: "NORM_REPORT"}
_NORM_CMDS = {1: "FLUSH", 2: "EOT", 3: "SQUELCH", 4: "CC", 5: "REPAIR_ADV", 6: "ACK_REQ", 7: "APPLICATION"}
_TESLA_KINDS = {0: "bootstrap", 5: "sync-request", 6: "sync-response"}


def _alc_payload_id(fec_id: int, buf: bytes, off: int) -> tuple[int, int] | None:
    """(SBN, ESI) of an ALC FEC Payload ID for ``fec_id`` (the FLUTE codepoint)."""
    try:
        if fec_id == 0:
            sbn, esi = struct.unpack_from("!HH", buf, off)
        elif fec_id in (2, 5):
            w = struct.unpack_from("!I", buf, off)[0]
            sbn, esi = w >> 8, w & 0xFF
        elif fec_id == 6:
            w = struct.unpack_from("!I", buf, off)[0]
            sbn, esi = w >> 24, w & 0xFFFFFF
        elif fec_id == 129:
            sbn, _sbl, esi = struct.unpack_from("!IHH", buf, off)
        else:
            return None
    except struct.error:
        return None
    return sbn, esi


class _Describer:
    """Per-datagram fields from the codecs, and the TESLA layout from the last bootstrap."""

    def __init__(self, protocol: str, asid: int) -> None:
        self.protocol = protocol
        self.asid = asid
        self.layout: ea.TagLayout | None = None
        self.d: int | None = None

    def ext_area(self, p: bytes) -> tuple[int, int]:
        if self.protocol == "alc":
            from alc.receiver import parse_lct

            h = parse_lct(p)
            b0, b1 = p[0], p[1]
            s, o, hh = (b1 >> 7) & 1, (b1 >> 5) & 3, (b1 >> 4) & 1
            return 4 + 4 * (((b0 >> 2) & 3) + 1) + 4 * s + 2 * hh + 4 * o + 2 * hh, h.hlen
        from norm.messages import header_regions

        return header_regions(p)

    def describe(self, p: bytes) -> dict[str, Any]:
        row: dict[str, Any] = {"length": len(p)}
        try:
            if self.protocol == "alc":
                self._alc(p, row)
            else:
                self._norm(p, row)
        except DecodeError as e:
            row["kind"] = "malformed"
            row["error"] = f"{e.field}: {e}"
            return row
        try:
            start, end = self.ext_area(p)
            off = ea.find_ext_auth(p, start, end, self.asid)
            msg = ea.decode(p, off, self.layout)
        except DecodeError:
            return row
        row["tesla_type"] = msg.type
        if isinstance(msg, ea.Bootstrap):
            self.layout = ea.TagLayout(
                key_len=ea.KEY_LEN[msg.prf_id],
                mac_len=ea.MAC_LEN[msg.mac_id],
                sig_len=len(msg.signature),
                group_mac=msg.group_mac is not None,
            )
            self.d = msg.d
            row["kind"] = "bootstrap"
            row["interval"] = msg.i
        elif isinstance(msg, ea.AuthTag):
            row["interval"] = msg.i
            if msg.key and self.d is not None and msg.i >= self.d:
                row["disclosed_key_interval"] = msg.i - self.d
        elif msg.type in _TESLA_KINDS:
            row["kind"] = _TESLA_KINDS[msg.type]
        return row

    def _alc(self, p: bytes, row: dict[str, Any]) -> None:
        from alc.receiver import parse_lct

        h = parse_lct(p)
        row["tsi"] = h.tsi
        row["toi"] = h.toi
        row["payload"] = len(p) - h.hlen
        if h.toi is None:
            row["kind"] = "ALC control"
            return
        row["kind"] = "FDT" if h.toi == 0 else "ALC data"
        if len(p) > h.hlen:
            pid = _alc_payload_id(h.cp, p, h.hlen)
            if pid is not None:
                row["sbn"], row["esi"] = pid
        if h.a or h.b:
            row["flags"] = ("A" if h.a else "") + ("B" if h.b else "")

    def _norm(self, p: bytes, row: dict[str, Any]) -> None:
        from norm.messages import decode

        m = decode(p)
        t = p[0] & 15
        kind = _NORM_TYPES.get(t, f"NORM type {t}")
        if t == 3:
            kind += f"({_NORM_CMDS.get(p[12], p[12])})"
        row["kind"] = kind
        row["source_id"] = m.source_id
        row["payload"] = len(getattr(m, "payload", b"") or b"")
        for name in ("instance_id", "object_id", "sbn", "esi"):
            v = getattr(m, name, None)
            if v is not None:
                row[name] = v


def guess_protocol(payloads: Sequence[bytes]) -> str:
    """The protocol whose codec decodes more of the first datagrams (ALC on a tie)."""
    from alc.receiver import parse_lct
    from norm.messages import decode

    score = Counter[str]()
    for p in payloads[:32]:
        for name, fn in (("alc", parse_lct), ("norm", decode)):
            try:
                fn(p)
                score[name] += 1
            except DecodeError:
                pass
    return "norm" if score["norm"] > score["alc"] else "alc"


# ----------------------------------------------------------------------------- verify


class _Released(Forwarding):
    """Between the verifier and the ALC/NORM engine: records what the receiver released."""

    def __init__(self, engine: Any) -> None:
        super().__init__(engine)
        self.released: list[bytes] = []

    def receive_datagram(self, data: bytes, addr: Address | None, now: float) -> None:
        self.released.append(data)
        self.engine.receive_datagram(data, addr, now)

    def receive_datagrams(
        self, datagrams: Sequence[bytes], addrs: Sequence[Address | None], times: Times
    ) -> None:
        self.released.extend(datagrams)
        self.engine.receive_datagrams(datagrams, addrs, times)


def _receiver(protocol: str, port: int, key: str, max_clock_error: float | None, out: str,
              cli_parser: Callable[[], argparse.ArgumentParser]) -> tuple[Any, _Released]:
    """``cli_parser`` is the CLI's :func:`tesla.cli.parser.build_parser`, passed in by the CLI
    (this module never imports it back: no import cycle)."""
    argv = ["receive", "--protocol", protocol, "--group", f"0.0.0.0:{port}", "--out", out,
            "--sender-key", key, "--from-pcap", "-"]
    if max_clock_error is not None:
        argv += ["--max-clock-error", str(max_clock_error)]
    args = cli_parser().parse_args(argv)
    if protocol == "alc":
        from alc.receiver import AlcReceiver
        from tesla.cli.run_alc import receiver_config

        inner: Any = AlcReceiver(receiver_config(args))
    else:
        from norm.receiver import NormReceiver, ReceiverConfig

        inner = NormReceiver(ReceiverConfig())
    from tesla.cli.wiring import wrap_receiver

    rec = _Released(inner)
    return wrap_receiver(rec, args, protocol), rec


def _drops(st: dict[str, int]) -> Counter[str]:
    return Counter({k[len("tesla.drop.") :]: v for k, v in st.items() if k.startswith("tesla.drop.") and v})


class _Verdicts:
    """Per-datagram verdicts from the receiver's counters (see module doc)."""

    def __init__(self, rx: Any, rec: _Released, rows: list[dict[str, Any]]) -> None:
        self.rx = rx
        self.rec = rec
        self.rows = rows
        self.pending: dict[int, bytes] = {}  # index -> datagram, buffered in the receiver

    def _snapshot(self) -> tuple[int, int, Counter[str]]:
        st = self.rx.stats
        return st.get("tesla.buffered_packets", 0), st.get("tesla.control", 0), _drops(st)

    def feed(self, k: int, p: bytes, src: Address, ts: float) -> None:
        before = self._snapshot()
        self.rec.released.clear()
        self.rx.receive_datagrams([p], [src], [ts])
        self._settle(k, p, before)

    def timers(self, now: float) -> None:
        rx = self.rx
        t = rx.get_timer()
        while t is not None and t <= now:
            before = self._snapshot()
            self.rec.released.clear()
            rx.handle_timer(t)
            self._settle(None, None, before)
            nt = rx.get_timer()
            if nt is not None and nt <= t:
                break
            t = nt

    def close(self) -> None:
        before = self._snapshot()
        self.rec.released.clear()
        self.rx.tesla.close()
        self._settle(None, None, before)

    def _settle(self, k: int | None, p: bytes | None, before: tuple[int, int, Counter[str]]) -> None:
        b0, c0, d0 = before
        b1, c1, d1 = self._snapshot()
        inc = d1 - d0
        consumed = c1 - c0  # the sender's own control packets, verified and taken by TESLA
        # released datagrams: pending ones (by content, oldest first), or k itself
        self_released = False
        r = 0
        for data in self.rec.released:
            for j, q in self.pending.items():
                if q == data:
                    self._verdict(j, "accepted", None)
                    del self.pending[j]
                    r += 1
                    break
            else:
                if p is not None and data == p and not self_released:
                    self_released = True
        total = sum(inc.values())
        if k is not None:
            assert p is not None
            fits = b0 + 1 - r - total - consumed == b1  # k buffered, or k dropped at once
            own = self._own_reason(k, p, inc) if fits and total else None
            if self_released:
                self._verdict(k, "accepted", None)
            elif own is not None:
                inc[own] -= 1
                self._verdict(k, "dropped", own)
            elif fits:
                self.pending[k] = p
            else:  # taken by TESLA at once: bootstrap, sync message
                self._verdict(k, "accepted", None)
        for _ in range(consumed):
            c = self._pick("control")
            if c is not None:
                self._verdict(c, "accepted", None)
                del self.pending[c]
        # buffered datagrams that left the buffer without being released
        for reason in list(inc.elements()):
            d = self._pick(reason)
            if d is not None:
                self._verdict(d, "dropped", reason)
                del self.pending[d]

    def _own_reason(self, k: int, p: bytes, inc: Counter[str]) -> str | None:
        """The reason k itself was dropped at once, or None when it was buffered (the
        counters then belong to datagrams buffered before)."""
        late_only = ("bad_mac", "bad_group_mac", "stale", "flushed")
        for r in inc:
            if inc[r] <= 0 or r in late_only:
                continue
            if r == "duplicate" and p not in self.pending.values():
                continue  # an earlier buffered copy was the duplicate
            if r == "evicted":
                ivs = [self.rows[j].get("interval", 0) for j in self.pending]
                if ivs and min(ivs) < self.rows[k].get("interval", 0):
                    continue  # older intervals were evicted to make room for k
            return r
        return None

    def _pick(self, reason: str) -> int | None:
        if not self.pending:
            return None
        ivs = {j: self.rows[j].get("interval", 0) for j in self.pending}
        if reason == "control":  # a control packet of the oldest interval
            ctl = [j for j in ivs if self.rows[j].get("payload", 1) == 0]
            if ctl:
                return min(ctl, key=lambda j: (ivs[j], j))
        if reason in ("bad_mac", "bad_group_mac", "control"):
            # the interval whose key was just disclosed: the oldest pending interval
            return min(ivs, key=lambda j: (ivs[j], j))
        return min(self.pending)

    def _verdict(self, j: int, verdict: str, reason: str | None) -> None:
        self.rows[j]["verdict"] = verdict
        self.rows[j]["reason"] = reason


# ----------------------------------------------------------------------------- main


def inspect_main(argv: Sequence[str], cli_parser: Callable[[], argparse.ArgumentParser]) -> int:
    """``tesla-mcast inspect``; ``cli_parser`` builds the CLI's parser (its ``receive``
    options configure the verifying receiver)."""
    args = build_parser().parse_args(list(argv))
    path = Path(args.capture)
    if not path.is_file():
        print(f"error: {path}: no such file", file=sys.stderr)
        return 2
    try:
        grams = list(read_udp(path))
    except DecodeError as e:
        print(f"error: {path}: {e}", file=sys.stderr)
        return 2
    if not grams:
        print(f"error: {path}: no UDP datagrams", file=sys.stderr)
        return 1
    port = args.port
    if port is None:
        port = Counter(d.dst[1] for d in grams).most_common(1)[0][0]
    grams = [d for d in grams if d.dst[1] == port]
    protocol = args.protocol or guess_protocol([d.payload for d in grams])
    desc = _Describer(protocol, args.asid)
    rows: list[dict[str, Any]] = []
    for k, d in enumerate(grams):
        row = {"index": k, "time": d.ts, "src": f"{d.src[0]}:{d.src[1]}", **desc.describe(d.payload)}
        row["verdict"] = "unverified" if args.sender_key is None else None
        row["reason"] = None
        rows.append(row)
    if args.sender_key is not None:
        if not Path(args.sender_key).is_file():
            print(f"error: {args.sender_key}: no such file", file=sys.stderr)
            return 2
        with tempfile.TemporaryDirectory(prefix="tesla-mcast-inspect-") as tmp:
            rx, rec = _receiver(protocol, port, args.sender_key, args.max_clock_error, tmp,
                                cli_parser)
            v = _Verdicts(rx, rec, rows)
            for k, d in enumerate(grams):
                v.timers(d.ts)
                v.feed(k, d.payload, d.src, d.ts)
            v.close()
            for j in v.pending:
                rows[j]["verdict"] = "pending"
                rows[j]["reason"] = "stale"
    summary = _summary(rows, protocol, port, args.sender_key is not None)
    out = sys.stdout
    if args.json:
        for row in rows:
            out.write(json.dumps(row) + "\n")
        out.write(json.dumps(summary) + "\n")
    else:
        for row in rows:
            out.write(_line(row) + "\n")
        out.write(_summary_text(summary) + "\n")
    return 0


def _summary(rows: list[dict[str, Any]], protocol: str, port: int, verified: bool) -> dict[str, Any]:
    verdicts = Counter(r["verdict"] for r in rows)
    reasons = Counter(r["reason"] for r in rows if r["verdict"] in ("dropped", "pending"))
    kinds = Counter(r.get("kind", "?") for r in rows)
    return {
        "summary": True,
        "protocol": protocol,
        "port": port,
        "datagrams": len(rows),
        "verified": verified,
        "verdicts": dict(verdicts),
        "drops": dict(reasons),
        "kinds": dict(kinds),
    }


def _line(r: dict[str, Any]) -> str:
    ids = []
    for name in ("tsi", "toi", "source_id", "instance_id", "object_id", "sbn", "esi"):
        if r.get(name) is not None:
            ids.append(f"{name}={r[name]}")
    tes = ""
    if "interval" in r:
        tes = f" i={r['interval']}"
        if "disclosed_key_interval" in r:
            tes += f" key=K{r['disclosed_key_interval']}"
    verdict = r["verdict"] or "?"
    if r.get("reason"):
        verdict += f" ({r['reason']})"
    return f"{r['index']:6d} {r['time']:.6f} {r.get('kind', '?'):<18} {' '.join(ids)}{tes}  {verdict}"


def _summary_text(s: dict[str, Any]) -> str:
    v = ", ".join(f"{k} {n}" for k, n in sorted(s["verdicts"].items()))
    d = ", ".join(f"{k} {n}" for k, n in sorted(s["drops"].items())) or "none"
    return f"{s['datagrams']} {s['protocol'].upper()} datagrams on port {s['port']}: {v}; drops: {d}"
