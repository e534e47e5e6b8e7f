"""Direct time synchronization (RFC 5776 §2.3.1, Types 5/6) on real sockets.

* ALC has no back channel: the sender listens on a unicast side channel
  (``--sync-addr 127.0.0.1:PORT``), the receiver sends its Type 5 request there from an
  ephemeral unicast socket and gets the signed Type 6 answer on it (one process with one
  driver, then two ``tesla-mcast`` processes).
* NORM: the request is a NORM_CMD(APPLICATION) on the normal feedback path (the group).

Network: 127.0.0.1 and groups in 239.255.0.0/16, TTL 1, random ports.
"""

from __future__ import annotations

import json
import random
import socket
from pathlib import Path
from typing import Any

import pytest
from helpers import keygen, rand_group, receive_while_sending, write_random_files

from alc.net import Driver, open_socket, parse_group
from alc.receiver import AlcReceiver, ReceiverConfig
from alc.sender import AlcSender, SenderConfig
from tesla.cli.main import build_parser, main
from tesla.cli.wiring import add_endpoints, tesla_summary, wrap_receiver, wrap_sender


def free_udp_port() -> int:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port
    finally:
        s.close()


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return keygen(tmp_path_factory.mktemp("keys"))


def test_alc_side_channel_in_one_driver(keys: tuple[Path, Path]) -> None:
    priv, pub = keys
    group_s = rand_group()
    group = parse_group(group_s)
    sync = f"127.0.0.1:{free_udp_port()}"
    p = build_parser()
    sargs = p.parse_args(["send", "x", "--group", group_s, "--key", str(priv), "--sync",
                          "direct", "--sync-addr", sync, "--tsi", "5", "-q"])
    rargs = p.parse_args(["receive", "--group", group_s, "--out", "unused", "--sender-key",
                          str(pub), "--sync", "direct", "--sync-addr", sync, "--tsi", "5"])
    blob = random.Random(1).randbytes(30_000)
    eng = AlcSender(SenderConfig(tsi=5, rate_bps=4e6, carousel_rounds=4))
    eng.add_bytes(blob, "f.bin")
    tx = wrap_sender(eng, sargs, "alc")
    inner = AlcReceiver(ReceiverConfig(tsi=5))
    rx = wrap_receiver(inner, rargs, "alc")
    assert rx.side_channel == ("connect", parse_group(sync))
    rsock = open_socket(group, "127.0.0.1", receive=True, ttl=1)
    ssock = open_socket(group, "127.0.0.1", receive=False, ttl=1)
    drv = Driver()
    try:
        add_endpoints(drv, rx, rsock, None, iface="127.0.0.1")
        add_endpoints(drv, tx, ssock, group, receive=False, iface="127.0.0.1")
        assert len(drv.endpoints) == 4  # group + side channel on each side
        got: dict[str, bytes] = {}

        def done() -> bool:
            while (ev := inner.next_event()) is not None:
                if getattr(ev, "data", None) is not None:
                    got[ev.name] = ev.data
            return bool(got)

        assert drv.run(until=done, timeout=30)
    finally:
        rsock.close()
        ssock.close()
        drv.close()
    assert got == {"f.bin": blob}
    s = tesla_summary(rx)
    assert s is not None
    print("ALC direct sync (one driver):", s)
    assert s["sync"] == "direct" and s["d_t_ms"] is not None and 0 <= s["d_t_ms"] < 1000
    assert s["sync_requests"] >= 1
    assert tx.tesla.stats["tesla.sync_response"] >= 1
    assert s["drops"]["bad_signature"] == 0 and s["drops"]["bad_mac"] == 0


def run_pair(
    tmp: Path, keys: tuple[Path, Path], proto: str, sync_extra: list[str], send_extra: list[str]
) -> dict[str, Any]:
    priv, pub = keys
    # D_t is only known once a request reached the (just started) sender: everything
    # received before is dropped (no_bootstrap), so the session must outlast that
    files = write_random_files(tmp, 8, (("one.bin", 400_000), ("two.txt", 3_000)))
    group = rand_group()
    out = tmp / "out"
    tx, rx_rc, stdout, stderr = receive_while_sending(
        ["receive", "--protocol", proto, "--group", group, "--iface", "127.0.0.1", "--out",
         str(out), "--sender-key", str(pub), "--sync", "direct", *sync_extra,
         "--timeout", "60", "--json"]
        + (["--idle-timeout", "3"] if proto == "norm" else []),
        ["send", *map(str, files), "--protocol", proto, "--group", group, "--iface",
         "127.0.0.1", "--key", str(priv), "--sync", "direct", *sync_extra, *send_extra],
        timeout=90,
    )
    assert tx.returncode == 0, tx.stderr
    assert rx_rc == 0, stderr + stdout[-1500:]
    summary: dict[str, Any] = json.loads(stdout)
    t = summary["tesla"]
    print(f"{proto} direct sync: D_t {t['d_t_ms']} ms after {t['sync_requests']} request(s); "
          f"drops {t['drops']}")
    for f in files:
        assert (out / f.name).read_bytes() == f.read_bytes()
    assert t["sync"] == "direct" and t["d_t_ms"] is not None and 0 <= t["d_t_ms"] < 1000
    assert t["sync_requests"] >= 1
    for reason in ("bad_signature", "bad_mac", "bad_key", "malformed"):
        assert t["drops"][reason] == 0, reason
    return summary


def test_alc_side_channel_two_processes(tmp_path: Path, keys: tuple[Path, Path]) -> None:
    sync = f"127.0.0.1:{free_udp_port()}"
    run_pair(tmp_path, keys, "alc", ["--sync-addr", sync],
             ["--rate", "4M", "--carousel", "4", "--fec", "rs", "--repair-ratio", "0.3"])


def test_norm_feedback_path(tmp_path: Path, keys: tuple[Path, Path]) -> None:
    s = run_pair(tmp_path, keys, "norm", [], ["--rate", "2M", "--grtt", "0.3"])
    # our own request comes back over multicast loopback: not fed to the verifier
    assert s["stats"].get("tesla.sync_request_overheard", 0) >= 1


def test_direct_sync_option_errors(keys: tuple[Path, Path], tmp_path: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    priv, pub = keys
    f = tmp_path / "f"
    f.write_bytes(b"x")
    with pytest.raises(SystemExit) as e:
        main(["send", str(f), "--group", rand_group(), "--key", str(priv), "--sync", "direct",
              "--dry-run"])
    assert e.value.code == 2 and "--sync-addr" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["receive", "--group", rand_group(), "--out", str(tmp_path), "--sender-key",
              str(pub), "--sync", "direct", "--sync-addr", "127.0.0.1:9", "--from-pcap",
              str(f)])
    assert e.value.code == 2 and "live session" in capsys.readouterr().err
