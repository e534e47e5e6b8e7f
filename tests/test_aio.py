"""The asyncio API (``tesla.aio``, issue 13): a sender and a receiver in one event loop on
loopback multicast (239.255.0.0/16, interface 127.0.0.1, TTL 1), ALC and NORM,
authenticated and not; typed events in order; cancel mid-transfer; the same files and
counters as ``tesla-mcast receive`` for the same datagrams."""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
from pathlib import Path
from typing import Any

import pytest
from helpers import keygen, rand_group, write_random_files

import tesla
from tesla.aio import (
    BootstrapAccepted,
    DatagramDropped,
    FileReceived,
    IntervalVerified,
    KeyVerified,
    ObjectReceived,
    SessionEnded,
    TimeSynchronized,
    cli_namespace,
    open_receiver,
    open_sender,
)
from tesla.cli.main import main
from tesla.cli.run_alc import ConfigError

IFACE = "127.0.0.1"


def _auth(tmp: Path, auth: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    if not auth:
        return {"no_auth": True}, {"no_auth": True}
    pem, pub = keygen(tmp)
    return {"sender_key": pub}, {"key": pem}


async def _transfer(
    protocol: str, tmp: Path, files: list[Path], auth: bool, tx_extra: dict[str, Any] | None = None
) -> tuple[list[Any], Any, int]:
    """Receiver and sender in one loop; -> (events, receiver, threads seen while running)."""
    rxo, txo = _auth(tmp, auth)
    group = rand_group()
    events: list[Any] = []
    threads = _threads()
    async with open_receiver(protocol, group=group, out=tmp / "out", iface=IFACE, timeout=40, **rxo) as rx:

        async def send() -> None:
            async with open_sender(
                protocol, group=group, iface=IFACE, rate="50M", **txo, **(tx_extra or {})
            ) as tx:
                if protocol == "alc":  # one FLUTE session carries both
                    await asyncio.gather(*(tx.send_file(f) for f in files))
                else:
                    for f in files:
                        await tx.send_file(f)

        task = asyncio.create_task(send())
        async for ev in rx:
            events.append(ev)
            threads = max(threads, _threads())
        await task
    return events, rx, threads


def _threads() -> int:
    """Threads alive, less the output's file-digest thread (README: it hashes the blocks
    of received files as they are written, and exits when idle)."""
    return sum(1 for t in threading.enumerate() if t.name != "output-digests")


def _index(events: list[Any], cls: type) -> int:
    return next(k for k, e in enumerate(events) if isinstance(e, cls))


@pytest.mark.parametrize("protocol", ["alc", "norm"])
@pytest.mark.parametrize("auth", [True, False], ids=["auth", "plain"])
def test_send_receive_one_loop(protocol: str, auth: bool, tmp_path: Path) -> None:
    files = write_random_files(tmp_path, 7, [("a.bin", 150_000), ("b.txt", 3_000)])
    before = _threads()
    events, rx, threads = asyncio.run(_transfer(protocol, tmp_path, files, auth))
    assert threads == before  # no hidden thread (verify_threads is 1 by default)
    assert isinstance(events[-1], SessionEnded)
    assert sum(isinstance(e, SessionEnded) for e in events) == 1
    summary = events[-1].summary
    assert summary is rx.summary
    assert summary["complete"], summary
    kind = ObjectReceived if protocol == "norm" else FileReceived
    got = {Path(e.path).name: e for e in events if isinstance(e, kind)}
    assert sorted(got) == ["a.bin", "b.txt"]
    for f in files:
        ev = got[f.name]
        data = f.read_bytes()
        assert ev.size == len(data) and ev.name == f.name
        assert ev.sha256 == hashlib.sha256(data).hexdigest()
        assert Path(ev.path).read_bytes() == data
    if auth:
        order = [BootstrapAccepted, TimeSynchronized, KeyVerified, IntervalVerified, kind]
        idx = [_index(events, c) for c in order]
        assert idx == sorted(idx), [type(e).__name__ for e in events]
        verified = [e for e in events if isinstance(e, IntervalVerified)]
        assert verified[-1].total == summary["tesla"]["accepted"] > 0
        assert sum(e.datagrams for e in verified) == verified[-1].total
        boot = events[idx[0]]
        assert (boot.tint_ms, boot.disclosure_delay) == (100, 3)  # the CLI defaults
        tesla_drops = {}
        for e in events:
            if isinstance(e, DatagramDropped) and e.layer == "tesla":
                tesla_drops[e.reason] = tesla_drops.get(e.reason, 0) + e.count
        assert tesla_drops == {r: n for r, n in summary["tesla"]["drops"].items() if n}
    else:
        assert not any(isinstance(e, (BootstrapAccepted, KeyVerified, IntervalVerified)) for e in events)
        assert summary["tesla"] is None


def test_cancel_mid_transfer(tmp_path: Path) -> None:
    """Cancel the receiving task after the first authenticated interval of a 3 s transfer:
    CancelledError, sockets closed, no reader left on the loop, no temporary file, and
    the summary says so."""
    (src,) = write_random_files(tmp_path, 3, [("big.bin", 1_500_000)])
    rxo, txo = _auth(tmp_path, True)
    group = rand_group()
    seen: dict[str, Any] = {}

    async def run() -> None:
        loop = asyncio.get_running_loop()

        async def receive() -> None:
            async with open_receiver("alc", group=group, out=tmp_path / "out", iface=IFACE, **rxo) as rx:
                seen["rx"] = rx
                seen["socks"] = [ep.sock for ep in rx._driver.drv.endpoints]
                async for ev in rx:
                    if isinstance(ev, IntervalVerified):
                        seen["verified"] = ev
                        seen["task"].cancel()

        async with open_sender("alc", group=group, iface=IFACE, rate="4M", **txo) as tx:
            seen["tx"] = tx
            seen["task"] = asyncio.create_task(receive())
            send = asyncio.create_task(tx.send_file(src))
            with pytest.raises(asyncio.CancelledError):
                await seen["task"]
            fds = [s.fileno() for s in seen["socks"]]
            assert fds and all(fd == -1 for fd in fds)
            readers = loop._selector.get_map()  # type: ignore[attr-defined]
            assert not any(k.fileobj in seen["socks"] for k in readers.values())
            send.cancel()
            with pytest.raises(asyncio.CancelledError):
                await send
            raise asyncio.CancelledError  # leave the sender at once (no clean end)

    with pytest.raises(asyncio.CancelledError):
        asyncio.run(run())
    rx = seen["rx"]
    assert "verified" in seen
    assert rx.summary["stopped"] == "cancelled"
    assert not rx.summary["complete"] and rx.summary["tesla"]["accepted"] > 0
    assert rx.session.sink.out._open == {}
    assert [p.name for p in (tmp_path / "out").rglob("*")] == []  # nothing half-written
    tx_socks = [ep.sock for ep in seen["tx"]._drv.endpoints]
    assert tx_socks and all(s.fileno() == -1 for s in tx_socks)  # the sender's too


def test_same_result_as_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The datagrams the aio sender sent (its ``pcap=`` capture, as ``send --pcap``)
    replayed by ``tesla-mcast receive --from-pcap``: the same files and the same TESLA
    and engine counters as the aio receiver that got them live."""
    files = write_random_files(tmp_path, 11, [("x.bin", 80_000)])
    cap = tmp_path / "tx.pcap"
    events, rx, _ = asyncio.run(_transfer("alc", tmp_path, files, True, {"pcap": cap}))
    live = rx.summary
    assert live["complete"]
    group = rx.session.group
    capsys.readouterr()
    rc = main(
        [
            "receive", "--group", f"{group[0]}:{group[1]}", "--out", str(tmp_path / "cli"),
            "--sender-key", str(tmp_path / "SENDER.pub"), "--from-pcap", str(cap), "--json",
        ]
    )
    cli = json.loads(capsys.readouterr().out)
    assert rc == 0 and cli["complete"]
    assert [(Path(f["path"]).name, f["bytes"], f["sha256"]) for f in cli["files"]] == [
        (Path(f["path"]).name, f["bytes"], f["sha256"]) for f in live["files"]
    ]
    assert cli["tesla"]["accepted"] == live["tesla"]["accepted"]
    assert cli["tesla"]["drops"] == live["tesla"]["drops"]
    # every counter but the buffer gauges (they depend on how datagrams were batched)
    def counters(st: dict[str, int]) -> dict[str, int]:
        return {k: v for k, v in st.items() if "buffered" not in k}

    assert counters(cli["stats"]) == counters(live["stats"])
    assert live["stats"]["files_completed"] == 1 and live["stats"]["tesla.accepted"] > 0


def test_options_are_the_cli_options(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ns = cli_namespace("receive", "norm", {"group": "239.255.1.2:4000", "out": tmp_path, "no_auth": True})
    assert ns.idle_timeout == 10.0 and ns.join_policy == "current" and ns.no_auth
    with pytest.raises(ValueError, match="join-policy"):
        cli_namespace("receive", "norm", {"group": "239.255.1.2:4000", "out": tmp_path, "join_policy": "x"})
    with pytest.raises(TypeError, match="colour"):
        cli_namespace("send", "alc", {"group": "239.255.1.2:4000", "colour": 1})

    async def no_key() -> None:
        async with open_receiver("alc", group="239.255.1.2:4000", out=tmp_path / "o"):
            pass

    capsys.readouterr()
    with pytest.raises(ConfigError, match="--sender-key"):
        asyncio.run(no_key())
    assert capsys.readouterr().err == ""  # raised, not printed
    assert list((tmp_path / "o").iterdir()) == []
    assert tesla.aio.open_receiver is open_receiver  # exported from the package
