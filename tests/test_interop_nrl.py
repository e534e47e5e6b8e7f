"""Live interoperability with NRL NORM (Debian libnorm1) on loopback multicast.

Both directions, files and NORM_OBJECT_STREAM bit-exact, loss injected on both sides:

* NRL sender -> our NormReceiver (NRL NormSetTxLoss + our LossInjector on receive);
* our NormSender -> NRL receiver (NRL NormSetRxLoss + NormSetTxLoss on its NACKs).

FEC Encoding ID 5 (NRL default, block 64 + 16 parity) with parity repairs, and Encoding ID 2
with m = 16 (block 400 + 32 parity, chosen by NRL because block + parity > 255).

Groups are random in 239.255.0.0/16, ports random, interface 127.0.0.1, TTL 1, loop on.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from alc.net import Driver, LossInjector, open_socket
from norm.receiver import NormReceiver, ObjectReceived, ReceiverConfig
from norm.sender import NormSender, NormSenderConfig
from tesla.cli import nrl  # the NRL NORM ctypes harness (libnorm1)

pytestmark = [
    pytest.mark.interop,
    pytest.mark.skipif(not nrl.available(), reason="libnorm (NRL NORM) not installed"),
]


def _payload(tmp: Path, size: int, name: str = "payload.bin") -> tuple[Path, bytes]:
    data = os.urandom(size)
    p = tmp / name
    p.write_bytes(data)
    return p, data


def nrl_to_ours(
    tmp: Path,
    size: int,
    block: int,
    parity: int,
    *,
    nrl_tx_loss: float = 0.0,
    our_rx_loss: float = 0.0,
    auto_parity: int = 0,
    cc: bool = False,
    fec_id: int = 0,
    timeout: float = 60.0,
) -> tuple[ObjectReceived | None, bytes, NormReceiver]:
    group, port = nrl.random_group(), nrl.random_port()
    src, data = _payload(tmp, size)
    rx = NormReceiver(ReceiverConfig(node_id=2))
    sock = open_socket((group, port), "127.0.0.1", receive=True, ttl=1)
    drv = Driver()
    drv.add(
        rx, sock, (group, port), loss=LossInjector(our_rx_loss, seed=7) if our_rx_loss else None
    )
    inst = nrl.Instance()
    got: list[ObjectReceived] = []
    try:
        ss = inst.session(group, port, 1)
        ss.set_loopback_multicast(ttl=1)
        if nrl_tx_loss:
            ss.set_tx_loss(nrl_tx_loss)
        ss.start_sender(
            segment=1400,
            block=block,
            parity=parity,
            auto_parity=auto_parity,
            rate_bps=40e6,
            grtt=0.01,
            cc=cc,
            fec_id=fec_id,
        )
        ss.enqueue_file(str(src))

        def done() -> bool:
            while (ev := rx.next_event()) is not None:
                if isinstance(ev, ObjectReceived):
                    got.append(ev)
            while inst.next_event(0) is not None:
                pass
            return bool(got)

        drv.run(until=done, timeout=timeout)
    finally:
        sock.close()
        inst.close()
    return (got[0] if got else None), data, rx


def ours_to_nrl(
    tmp: Path,
    size: int,
    block: int,
    parity: int,
    *,
    nrl_rx_loss: float = 0.0,
    nrl_tx_loss: float = 0.0,
    auto_parity: int = 0,
    fec_id: int | None = None,
    cc: bool = False,
    timeout: float = 60.0,
    rates: list[float] | None = None,
) -> tuple[list[nrl.Received], bytes, NormSender]:
    """``rates``: if given, the sender's rate is appended every 50 ms."""
    group, port = nrl.random_group(), nrl.random_port()
    src, data = _payload(tmp, size)
    cache = tmp / "nrlcache"
    cache.mkdir()
    inst = nrl.Instance()
    inst.set_cache_directory(str(cache))
    snd = NormSender(
        NormSenderConfig(
            node_id=1,
            block_size=block,
            num_parity=parity,
            auto_parity=auto_parity,
            fec_id=fec_id,
            rate=5e6,
            grtt=0.01,
            seed=3,
            cc=cc,
            rate_max=5e6 if cc else None,
        )
    )
    snd.enqueue_file(str(src))
    sock = open_socket((group, port), "127.0.0.1", receive=True, ttl=1)
    drv = Driver()
    drv.add(snd, sock, (group, port))
    th = nrl.ReceiverThread(inst)
    try:
        rs = inst.session(group, port, 2)
        rs.set_loopback_multicast(ttl=1)
        if nrl_rx_loss:
            rs.set_rx_loss(nrl_rx_loss)
        if nrl_tx_loss:
            rs.set_tx_loss(nrl_tx_loss)
        rs.start_receiver()
        th.start()
        drv.run(
            until=th.done.is_set,
            timeout=timeout,
            on_tick=None if rates is None else (lambda now: rates.append(snd.rate)),
            tick=0.05,
        )
    finally:
        th.stop()
        sock.close()
        inst.close()
    return th.received, data, snd


# ---------------------------------------------------------------------------- NRL -> ours


def test_nrl_sender_to_our_receiver_fec5_with_loss(tmp_path: Path) -> None:
    ev, data, rx = nrl_to_ours(tmp_path, 700_000, 64, 16, nrl_tx_loss=10, our_rx_loss=0.05)
    assert ev is not None, rx.stats
    assert ev.data == data
    assert ev.name == "payload.bin"
    assert rx.stats.get("nack.sent", 0) >= 1
    assert rx.stats.get("rx.fec_symbols_recovered", 0) > 0  # NRL answered with parity


def test_nrl_sender_to_our_receiver_fec5_auto_parity(tmp_path: Path) -> None:
    ev, data, rx = nrl_to_ours(tmp_path, 300_000, 64, 16, our_rx_loss=0.05, auto_parity=4)
    assert ev is not None, rx.stats
    assert ev.data == data


def test_nrl_sender_to_our_receiver_fec2_m16(tmp_path: Path) -> None:
    # 300 segments in one block of B=400 (+32 parity > 255 -> NRL picks FEC ID 2, m = 16)
    ev, data, rx = nrl_to_ours(tmp_path, 420_000, 400, 32, nrl_tx_loss=5, our_rx_loss=0.05)
    assert ev is not None, rx.stats
    assert ev.data == data
    assert rx.stats.get("rx.fec_symbols_recovered", 0) > 0


def test_nrl_sender_to_our_receiver_fec129(tmp_path: Path) -> None:
    ev, data, rx = nrl_to_ours(
        tmp_path, 150_000, 32, 8, nrl_tx_loss=10, our_rx_loss=0.05, fec_id=129
    )
    assert ev is not None, rx.stats
    assert ev.data == data


# ---------------------------------------------------------------------------- ours -> NRL


def test_our_sender_to_nrl_receiver_fec5_with_loss(tmp_path: Path) -> None:
    got, data, snd = ours_to_nrl(tmp_path, 700_000, 64, 16, nrl_rx_loss=10, nrl_tx_loss=5)
    assert got, snd.stats
    assert got[0].data == data
    assert got[0].info == b"payload.bin"
    assert snd.fec_id == 5
    assert snd.stats.get("rx.nack", 0) >= 1
    assert snd.stats.get("tx.repair.parity", 0) > 0  # on-demand parity served the NACKs


def test_our_sender_to_nrl_receiver_auto_parity(tmp_path: Path) -> None:
    got, data, snd = ours_to_nrl(tmp_path, 200_000, 32, 8, nrl_rx_loss=3, auto_parity=4)
    assert got, snd.stats
    assert got[0].data == data
    assert snd.stats.get("tx.parity", 0) > 0


def test_our_sender_to_nrl_receiver_fec2_m16(tmp_path: Path) -> None:
    got, data, snd = ours_to_nrl(tmp_path, 420_000, 400, 32, nrl_rx_loss=10)
    assert got, snd.stats
    assert got[0].data == data
    assert (snd.fec_id, snd.fec_m) == (2, 16)


def test_our_sender_to_nrl_receiver_fec129(tmp_path: Path) -> None:
    got, data, snd = ours_to_nrl(tmp_path, 150_000, 32, 8, nrl_rx_loss=10, fec_id=129)
    assert got, snd.stats
    assert got[0].data == data


def test_our_sender_with_cc_adapts_to_nrl_feedback(tmp_path: Path) -> None:
    """NORM-CC: NRL answers our CMD(CC)+EXT_RATE with ACK(CC)/EXT_CC; it becomes the CLR
    and slow start takes the rate from Rinit (1 segment/s) to the configured maximum."""
    rates: list[float] = []
    got, data, snd = ours_to_nrl(tmp_path, 400_000, 64, 16, nrl_rx_loss=2, cc=True, rates=rates)
    assert got and got[0].data == data
    assert snd.cc is not None and snd.cc.clr == 2
    assert snd.stats.get("rx.cc_feedback", 0) > 0
    # The rate left Rinit (1 segment/s).  Generous on purpose: the rate at the end depends on
    # the measured RTT, which a loaded CI machine inflates (late answers), and on when the
    # 2 % loss events fall; the peak during the transfer shows slow start worked.
    print(f"\nCC rates: peak {max(rates, default=0):.0f} B/s, final {snd.rate:.0f} B/s")
    assert max(rates, default=snd.rate) > 50 * 1400


def test_nrl_sender_with_cc_to_our_receiver(tmp_path: Path) -> None:
    ev, data, rx = nrl_to_ours(tmp_path, 300_000, 64, 16, our_rx_loss=0.02, cc=True)
    assert ev is not None, rx.stats
    assert ev.data == data
    assert rx.stats.get("ack.cc_sent", 0) > 0


def test_nrl_acks_our_watermark(tmp_path: Path) -> None:
    """Positive ACK: our FLUSH with acking node list, NRL answers NORM_ACK(FLUSH)."""
    from norm.sender import TxWatermarkCompleted

    group, port = nrl.random_group(), nrl.random_port()
    src, data = _payload(tmp_path, 50_000)
    cache = tmp_path / "c"
    cache.mkdir()
    inst = nrl.Instance()
    inst.set_cache_directory(str(cache))
    snd = NormSender(NormSenderConfig(node_id=1, rate=5e6, grtt=0.01, seed=1))
    oid = snd.enqueue_file(str(src))
    snd.set_watermark(oid, [2])
    sock = open_socket((group, port), "127.0.0.1", receive=True, ttl=1)
    drv = Driver()
    drv.add(snd, sock, (group, port))
    th = nrl.ReceiverThread(inst)
    done: list[TxWatermarkCompleted] = []

    def until() -> bool:
        while (ev := snd.next_event()) is not None:
            if isinstance(ev, TxWatermarkCompleted):
                done.append(ev)
        return bool(done)

    try:
        rs = inst.session(group, port, 2)
        rs.set_loopback_multicast(ttl=1)
        rs.start_receiver()
        th.start()
        t0 = time.monotonic()
        drv.run(until=until, timeout=30)
        th.wait(10)
    finally:
        th.stop()
        sock.close()
        inst.close()
    assert done and done[0].acked == [2] and not done[0].failed, (done, time.monotonic() - t0)
    assert th.received and th.received[0].data == data


# ---------------------------------------------------------------------------- streams


def test_nrl_stream_to_our_receiver_with_loss() -> None:
    """NRL NormStreamOpen/Write/Close -> our receiver (10 % receive loss): the bytes in
    order, bit-exact, and the graceful close seen as NORM_STREAM_END."""
    from norm.receiver import StreamData, StreamEnd

    group, port = nrl.random_group(), nrl.random_port()
    data = os.urandom(2_000_000)
    rx = NormReceiver(ReceiverConfig(node_id=2))
    sock = open_socket((group, port), "127.0.0.1", receive=True, ttl=1)
    drv = Driver()
    drv.add(rx, sock, (group, port), loss=LossInjector(0.1, seed=3))
    inst = nrl.Instance()
    buf = bytearray()
    ended: list[StreamEnd] = []
    try:
        ss = inst.session(group, port, 1)
        ss.set_loopback_multicast(ttl=1)
        ss.start_sender(segment=1400, block=64, parity=16, rate_bps=20e6, grtt=0.01)
        st = ss.stream_open(4 << 20, b"nrl-stream")
        pos = 0

        def done() -> bool:
            nonlocal pos
            while pos < len(data) and (n := ss.stream_write(st, data[pos : pos + 65536])):
                pos += n
                if pos >= len(data):
                    ss.stream_close(st)
            while inst.next_event(0) is not None:
                pass
            while (ev := rx.next_event()) is not None:
                if isinstance(ev, StreamData):
                    buf.extend(ev.data)
                elif isinstance(ev, StreamEnd):
                    ended.append(ev)
            return bool(ended)

        assert drv.run(until=done, timeout=60.0), rx.stats
    finally:
        sock.close()
        inst.close()
    assert bytes(buf) == data
    assert rx.stats["nack.sent"] >= 1 and rx.stats["rx.streams_ended"] == 1


# live two-stack timing over loopback: reruns allowed (pytest-rerunfailures), a third
# failure is a failure; failed once in CI (issue 11), passed 33 of 33 local runs since
# (alone, two at a time, pinned to a busy core), cause not found
@pytest.mark.flaky(reruns=2)
def test_our_stream_to_nrl_receiver_with_loss() -> None:
    """Our open_stream/stream_write/stream_close -> NRL's receiver (10 % receive loss at
    NRL): NormStreamRead returns the bytes in order, bit-exact."""
    import threading

    group, port = nrl.random_group(), nrl.random_port()
    data = os.urandom(2_000_000)
    inst = nrl.Instance()
    got = bytearray()
    done = threading.Event()

    def pump() -> None:
        while not done.is_set():
            ev = inst.next_event(0.05)
            updated = ("NORM_RX_OBJECT_UPDATED", "NORM_RX_OBJECT_COMPLETED")
            if ev is not None and ev.object and ev.name in updated:
                got.extend(inst.stream_read(ev.object))
                if len(got) >= len(data):
                    done.set()

    snd = NormSender(NormSenderConfig(node_id=1, rate=2.5e6, grtt=0.01, seed=2))
    sid = snd.open_stream(info=b"our-stream")
    sent = 0

    def feed(now: float) -> None:
        nonlocal sent
        obj = snd.objects[sid]
        # stay within the sender's stream buffer (64 blocks) ahead of its transmit position
        if sent < len(data) and obj.stream_next[0] - obj.sbn < 32:
            chunk = data[sent : sent + 100_000]
            snd.stream_write(sid, chunk, eom=True)
            sent += len(chunk)
            if sent >= len(data):
                snd.stream_close(sid)

    th = threading.Thread(target=pump, daemon=True)
    sock = open_socket((group, port), "127.0.0.1", receive=True, ttl=1)
    try:
        rs = inst.session(group, port, 2)
        rs.set_loopback_multicast(ttl=1)
        rs.set_rx_loss(10)
        rs.start_receiver()
        th.start()
        drv = Driver()
        drv.add(snd, sock, (group, port))
        ok = drv.run(until=done.is_set, timeout=60.0, on_tick=feed, tick=0.01)
        # diagnostics for the rare CI failure (issue 11, not reproduced in 33 local runs):
        # how far NRL's reader got, and whether our sender squelched (stream buffer)
        assert ok, (len(got), sent, snd.stats)
    finally:
        done.set()
        th.join(5)
        sock.close()
        inst.close()
    if bytes(got) != data:
        n = min(len(got), len(data))
        first = next((k for k in range(n) if got[k] != data[k]), n)
        raise AssertionError(f"NRL read {len(got)} of {len(data)} bytes, first difference at {first}")
    assert snd.stats["rx.nack"] >= 1
