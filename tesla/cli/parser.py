"""The ``tesla-mcast`` argument parser (:func:`build_parser`) and its extension points.

Subcommands: ``send``, ``receive``, ``demo`` (``bench``, ``keygen``, ``inspect`` and
``simulate`` own their options; :mod:`tesla.cli.main` dispatches).  ``send``/``receive`` dispatch on
``--protocol`` through :data:`RUNNERS` (protocol -> {"send": fn, "receive": fn}); each runner
takes the argparse namespace and returns the exit status.  The NORM work adds
``RUNNERS["norm"]``; TESLA options are added by functions appended to :data:`OPTION_HOOKS`
(called with ``(subcommand_name, parser)``).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

Runner = Callable[[argparse.Namespace], int]


def _alc_runners() -> dict[str, Runner]:
    from tesla.cli import run_alc

    return {"send": run_alc.run_send, "receive": run_alc.run_receive}


def _norm_runners() -> dict[str, Runner]:
    from tesla.cli import run_norm as app

    return {"send": app.run_send, "receive": app.run_receive}


#: protocol name -> factory returning {"send": runner, "receive": runner}
RUNNERS: dict[str, Callable[[], dict[str, Runner]]] = {"alc": _alc_runners, "norm": _norm_runners}


def _norm_options(sub: str, parser: argparse.ArgumentParser) -> None:
    from tesla.cli.run_norm import add_options

    add_options(sub, parser)


def _auth_options(sub: str, parser: argparse.ArgumentParser) -> None:
    from tesla.cli.wiring import add_options

    add_options(sub, parser)


#: extra option adders: fn(subcommand, parser)
OPTION_HOOKS: list[Callable[[str, argparse.ArgumentParser], None]] = [
    _norm_options,
    _auth_options,
]


def _rate(text: str) -> float:
    from tesla.cli.run_alc import parse_rate

    return parse_rate(text)


def _ratio(text: str) -> float:
    v = float(text)
    if not 0 <= v <= 10:
        raise argparse.ArgumentTypeError("repair ratio must be within 0..10")
    return v


def _tsi(text: str) -> int:
    v = int(text, 0)
    if not 0 <= v < 1 << 48:
        raise argparse.ArgumentTypeError("TSI must fit in 48 bits")
    return v


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="tesla-mcast",
        description="Multicast file delivery with ALC/FLUTE and NORM, authenticated by TESLA.",
    )
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("send", help="send files to a multicast group")
    s.add_argument("files", nargs="+", metavar="FILE")
    s.add_argument("--protocol", choices=sorted(RUNNERS), default="alc")
    s.add_argument("--group", required=True, metavar="ADDR:PORT")
    s.add_argument("--iface", metavar="NAME", help="interface name or address for multicast")
    s.add_argument(
        "--rate",
        type=_rate,
        default=10e6,
        metavar="BITS/S",
        help="e.g. 20M (default 10M); 0 = unlimited",
    )
    s.add_argument("--fec", choices=["nocode", "rs", "raptorq"], default="nocode")
    s.add_argument(
        "--repair-ratio",
        type=_ratio,
        default=0.0,
        metavar="R",
        help="repair symbols per source symbol",
    )
    s.add_argument("--tsi", type=_tsi, default=1, metavar="N")
    s.add_argument("--pcap", metavar="OUT.pcap", help="also record every datagram sent")
    s.add_argument("--ttl", type=int, default=1)
    s.add_argument("--symbol-length", type=int, default=1400, metavar="E")
    s.add_argument(
        "--block-length", type=int, default=64, metavar="B", help="max source block length"
    )
    s.add_argument(
        "--carousel", type=int, default=1, metavar="ROUNDS",
        help="rounds of the object carousel; 0 = send for ever (stop with Ctrl-C/SIGTERM)",
    )
    s.add_argument("--content-encoding", choices=["gzip", "deflate", "zlib"], default=None)
    s.add_argument("--fdt-interval", type=float, default=1.0, metavar="S")
    s.add_argument("--dry-run", action="store_true", help="open no socket (use with --pcap)")
    s.add_argument("-q", "--quiet", action="store_true")

    r = sub.add_parser("receive", help="receive files from a multicast group or a capture")
    r.add_argument("--protocol", choices=sorted(RUNNERS), default="alc")
    r.add_argument("--group", required=True, metavar="ADDR:PORT")
    r.add_argument(
        "--out",
        required=True,
        metavar="DIR",
        help="output directory (created; must be writable): FLUTE paths are kept below it, "
        "see docs/security/output.md",
    )
    r.add_argument(
        "--overwrite",
        action="store_true",
        help="replace files that already exist in --out (default: never; the file fails 'exists')",
    )
    r.add_argument(
        "--fsync", action="store_true", help="fsync each file before it gets its final name"
    )
    r.add_argument(
        "--from-pcap", metavar="FILE", help="replay a capture (pcap or pcapng) instead of opening a socket"
    )
    r.add_argument("--tsi", type=_tsi, default=None, metavar="N", help="default: first TSI seen")
    r.add_argument("--sender", metavar="ADDR", help="accept packets from this source address only")
    r.add_argument(
        "--source",
        metavar="ADDR",
        help="source-specific multicast: join (ADDR, group) so the kernel delivers only "
        "this source's datagrams (IPv4 or IPv6, RFC 4607)",
    )
    r.add_argument("--iface", metavar="NAME", help="interface (IPv4: name or address; IPv6: name)")
    r.add_argument("--json", action="store_true", help="print a JSON summary on stdout")
    r.add_argument(
        "--timeout", type=float, default=None, metavar="S", help="give up after S seconds"
    )
    r.add_argument(
        "--idle-timeout",
        type=float,
        default=10.0,
        metavar="S",
        help="session/object inactivity timeout",
    )
    r.add_argument(
        "--loss", type=float, default=0.0, metavar="P", help="inject random receive loss (testing)"
    )
    r.add_argument("--loss-seed", type=int, default=1)
    r.add_argument(
        "--rs-matrix",
        default="rfc5510",
        metavar="NAME",
        help="Reed-Solomon generator matrix of the sender: rfc5510 (default), "
        "flute (ypo/flute, flute-alc), nrl, rizzo",
    )

    d = sub.add_parser(
        "demo", help="loopback multicast sender + receiver transferring generated files"
    )
    d.add_argument(
        "--protocol",
        choices=sorted(RUNNERS),
        default="alc",
        help="alc (FLUTE, repair symbols sent ahead) or norm (NACK-based repair)",
    )
    d.add_argument("--files", type=int, default=3)
    d.add_argument(
        "--size", type=int, default=2_000_000, metavar="BYTES", help="size of the largest file"
    )
    d.add_argument("--rate", type=_rate, default=200e6, metavar="BITS/S")
    d.add_argument("--fec", choices=["nocode", "rs", "raptorq"], default="rs")
    d.add_argument("--repair-ratio", type=_ratio, default=0.25)
    d.add_argument(
        "--loss", type=float, default=0.05, metavar="P", help="receiver-side injected loss"
    )
    d.add_argument("--group", default=None, metavar="ADDR:PORT", help="default: random 239.255.x.y")
    d.add_argument("--out", default=None, metavar="DIR")
    d.add_argument("--overwrite", action="store_true", help="replace files existing in --out")
    d.add_argument("--timeout", type=float, default=60.0)
    d.add_argument("--json", action="store_true")

    # listed for --help only: main() hands "bench ..." to tesla.cli.bench before parsing
    sub.add_parser("bench", help="hashing limit vs our sender/receiver pipelines (--quick)")
    sub.add_parser("keygen", help="write the sender's RSA key pair: --out SENDER -> SENDER.pem/.pub")
    sub.add_parser("simulate", help="discrete-event simulation: SCENARIO.toml [--json] [--plot]")
    sub.add_parser(
        "inspect",
        help="explain a capture datagram by datagram: CAPTURE [--protocol alc|norm] [--port P] "
        "[--sender-key PUB] [--json]",
    )

    for name, sp in (("send", s), ("receive", r), ("demo", d)):
        for hook in OPTION_HOOKS:
            hook(name, sp)
    return p
