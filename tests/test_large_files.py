"""Files larger than memory (issue 14): the ALC and NORM senders read source blocks from disk
as they go, the receivers hand each decoded block to the caller (BlockReceived) and keep
only blocks in progress, the writer puts blocks at their offsets into the temporary file
and checks length and MD5 before the final name.  RSS against file size over real
processes: bench/rss_vs_size.py."""

from __future__ import annotations

import base64
import hashlib
import os
import random
import tracemalloc
from pathlib import Path
from typing import Any

import pytest

from alc.output import TEMP_NAME_RE, OutputDir, ReceivedFiles
from alc.receiver import (
    AlcReceiver,
    BlockReceived,
    FileCompleted,
    FileReceived,
    ObjectFailed,
    ReceiverConfig,
)
from alc.sender import AlcSender, SenderConfig
from tesla.cli.run_alc import FileSink
from tesla.cli.run_norm import NormFileSink
from tesla.core.authenticator import PROTO_ALC, PROTO_NORM, ControlTemplate, TeslaSender
from tesla.core.bootstrap_sig import generate_private_key
from tesla.core.ntp import posix_to_ntp
from tesla.core.params import TeslaParams
from tesla.core.receiver import TeslaReceiver
from tesla.core.session import AuthenticatedReceiver, AuthenticatedSender, alc_early_discard

T0 = 1_800_000_000.0
MiB = 1 << 20


def _file(path: Path, size: int, seed: int | None = None) -> Path:
    """``size`` octets: sparse zeros (seed None) or seeded random data."""
    with open(path, "wb") as f:
        if seed is None:
            f.truncate(size)
        else:
            rnd = random.Random(seed)
            left = size
            while left:
                n = min(left, 4 * MiB)
                f.write(rnd.randbytes(n))
                left -= n
    return path


def _listing(d: Path) -> list[str]:
    return sorted(p.relative_to(d).as_posix() for p in d.rglob("*"))


# ----------------------------------------------------------------------------- senders


def _alc_send_peak(path: Path) -> tuple[int, int]:
    """tracemalloc peak of an AlcSender adding and sending the whole file; (peak, packets)."""
    tracemalloc.start()
    try:
        s = AlcSender(SenderConfig(rate_bps=None, symbol_length=8000, max_datagrams_per_call=256))
        s.add_file(path)
        n = 0
        while not s.done:
            n += len(s.datagrams_to_send(T0))
        return tracemalloc.get_traced_memory()[1], n
    finally:
        tracemalloc.stop()


def test_alc_sender_memory_does_not_grow_with_file_size(tmp_path: Path) -> None:
    """Before: add_file read the whole file (peak >= the file size)."""
    small, n_small = _alc_send_peak(_file(tmp_path / "32.bin", 32 * MiB))
    big, n_big = _alc_send_peak(_file(tmp_path / "128.bin", 128 * MiB))
    assert n_big > 3.9 * n_small
    assert big < 8 * MiB, big
    assert big < small + MiB, (small, big)


def _rss() -> int:
    """Resident octets of this process, anonymous and file-backed (/proc/self/status)."""
    kb = 0
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(("RssAnon:", "RssFile:", "RssShmem:")):
                kb += int(line.split()[1])
    return kb * 1024


def test_norm_sender_reads_blocks_from_disk(tmp_path: Path) -> None:
    """Before: the file was memory-mapped whole, its pages resident once sent (RSS grew by the
    file size).  Now at most ``file_cache_blocks`` chunks are held."""
    from norm.sender import FileData, NormSender, NormSenderConfig

    path = _file(tmp_path / "n.bin", 192 * MiB, seed=None)
    with open(path, "r+b") as f:  # real (non-sparse) pages
        for off in range(0, 192 * MiB, 8 * MiB):
            f.seek(off)
            f.write(b"\1" * (8 * MiB))
    cfg = NormSenderConfig(node_id=1, segment_size=8000, block_size=64, num_parity=0, rate=1e9, seed=1)
    s = NormSender(cfg)
    oid = s.enqueue_file(str(path))
    obj = s.objects[oid]
    assert isinstance(obj.data, FileData)
    segments = -(-192 * MiB // 8000)
    before = _rss()
    peak = 0
    now = T0
    while s.stats.get("tx.data", 0) < segments and now < T0 + 60:
        s.datagrams_to_send(now)  # about 4 MB per call (the 4 ms token bucket)
        now += 0.004
        peak = max(peak, _rss() - before)
    assert s.stats.get("tx.data", 0) >= segments
    assert len(obj.data.cache) <= cfg.file_cache_blocks
    assert peak < 48 * MiB, peak
    # a repair reads its block back from disk
    assert obj.segment(0, 3) == b"\1" * 8000


# ----------------------------------------------------------------------------- ALC receiver


def _alc_packets(path: Path, fec: str = "rs", **kw: Any) -> tuple[AlcSender, list[bytes]]:
    s = AlcSender(SenderConfig(rate_bps=None, fec=fec, repair_ratio=0.2 if fec != "nocode" else 0.0, **kw))
    s.add_file(path, "dir/f.bin")
    return s, s.all_packets(T0)


def test_alc_receiver_emits_blocks_and_holds_only_blocks_in_progress(tmp_path: Path) -> None:
    """Blocks reach the caller at their offsets as they complete (out of order here: the
    packets are shuffled, 4% lost, RS repairs), nothing is assembled, the engine's buffer
    stays at a few blocks; the file's MD5 and length come with FileCompleted."""
    data_path = _file(tmp_path / "f.bin", 8 * MiB + 1234, seed=3)
    data = data_path.read_bytes()
    _, pkts = _alc_packets(data_path)
    # (TOI: octets 12-15 of the LCT header with a 32-bit CCI and TSI)
    fdt, rest = [p for p in pkts if p[12:16] == bytes(4)], [p for p in pkts if p[12:16] != bytes(4)]
    rng = random.Random(1)
    # blocks interleaved: shuffle within windows of 8 blocks' worth of packets
    win = 8 * 80
    mixed: list[bytes] = []
    for i in range(0, len(rest), win):
        part = [p for p in rest[i : i + win] if rng.random() > 0.04]
        rng.shuffle(part)
        mixed += part
    r = AlcReceiver(ReceiverConfig(stream_files=True))
    got = bytearray(len(data))
    offsets: list[int] = []
    done: list[FileCompleted] = []
    peak = 0
    for p in fdt[:1] + mixed:
        r.receive_datagram(p, ("10.0.0.1", 4000), T0)
        peak = max(peak, r.buffered_bytes)
        while (ev := r.next_event()) is not None:
            assert not isinstance(ev, (FileReceived, ObjectFailed)), ev
            if isinstance(ev, BlockReceived):
                got[ev.offset : ev.offset + len(ev.data)] = ev.data
                offsets.append(ev.offset)
            elif isinstance(ev, FileCompleted):
                done.append(ev)
    assert bytes(got) == data
    assert len(offsets) == len(set(offsets)) == -(-len(data) // (64 * 1400))
    assert offsets != sorted(offsets)  # out of order: the writer must read back for MD5
    assert len(done) == 1 and done[0].length == len(data) and done[0].name == "dir/f.bin"
    assert done[0].md5 == hashlib.md5(data).digest()
    assert r.all_announced_complete() and r.buffered_bytes < 64 * 1024
    # at most the 8-block window (64 symbols of 1400 octets each) plus repair and decoders
    assert peak < 4 * MiB, peak


def test_alc_file_written_at_offsets_md5_checked(tmp_path: Path) -> None:
    """Through the runner's writer (FileSink): blocks written into the temporary file, the
    file under its final name only after the MD5 check; a wrong Content-MD5 leaves nothing
    (temporary file removed, ``fail.md5``, the engine told to forget the file)."""
    data_path = _file(tmp_path / "f.bin", 6 * MiB + 77, seed=4)
    for bad in (False, True):
        s = AlcSender(SenderConfig(rate_bps=None, fec="nocode"))
        s.add_file(data_path, "sub/f.bin")
        if bad:
            s.objects[0].md5 = base64.b64encode(hashlib.md5(b"other").digest()).decode()
        out = tmp_path / f"out{int(bad)}"
        sink = FileSink(OutputDir(out))
        r = AlcReceiver(ReceiverConfig(stream_files=True))
        pkts = s.all_packets(T0)
        seen_temp = False
        for i, p in enumerate(pkts):
            r.receive_datagram(p, ("10.0.0.1", 4000), T0)
            if i % 500 == 0:
                sink.pump(r, r)
                names = _listing(out)
                assert "sub/f.bin" not in names or i == len(pkts) - 1
                seen_temp |= any(TEMP_NAME_RE.match(Path(n).name) for n in names)
        sink.pump(r, r)
        assert seen_temp  # blocks went to the temporary file while the object was incomplete
        if not bad:
            assert (out / "sub" / "f.bin").read_bytes() == data_path.read_bytes()
            assert sink.files[0]["sha256"] == hashlib.sha256(data_path.read_bytes()).hexdigest()
            assert _listing(out) == ["sub", "sub/f.bin"]
        else:
            assert _listing(out) == ["sub"] and sink.stats == {"fail.md5": 1}
            assert 1 not in r.received and r.failed[1] == "md5"


def test_alc_failed_object_removes_its_temporary_file(tmp_path: Path) -> None:
    """An object that fails in the engine (here: the session times out half-way) after some
    blocks were written: its temporary file is removed, no final name."""
    data_path = _file(tmp_path / "f.bin", 4 * MiB, seed=5)
    s = AlcSender(SenderConfig(rate_bps=None, fec="nocode"))
    s.add_file(data_path, "f.bin")
    pkts = s.all_packets(T0)
    out = tmp_path / "out"
    sink = FileSink(OutputDir(out))
    r = AlcReceiver(ReceiverConfig(stream_files=True, session_timeout=5.0))
    for p in pkts[: len(pkts) // 2]:
        r.receive_datagram(p, ("10.0.0.1", 4000), T0)
    sink.pump(r, r)
    assert len(_listing(out)) == 1 and TEMP_NAME_RE.match(_listing(out)[0])
    r.handle_timer(T0 + 10)
    sink.pump(r, r)
    assert _listing(out) == [] and "f.bin" not in str(sink.files)
    assert [f["reason"] for f in sink.failures] == ["session_timeout"]


def test_content_encoded_files_keep_the_bounded_in_memory_path(tmp_path: Path) -> None:
    """gzip files are encoded and decoded in memory: FileReceived as before, and the sender
    refuses a file over ``max_encoded_file_bytes``."""
    data_path = _file(tmp_path / "g.bin", 300_000, seed=6)
    s = AlcSender(SenderConfig(rate_bps=None, content_encoding="gzip"))
    s.add_file(data_path)
    r = AlcReceiver(ReceiverConfig(stream_files=True))
    for p in s.all_packets(T0):
        r.receive_datagram(p, ("10.0.0.1", 4000), T0)
    evs = []
    while (ev := r.next_event()) is not None:
        evs.append(ev)
    assert [type(e).__name__ for e in evs if not type(e).__name__.startswith("Fdt")] == ["FileReceived"]
    assert evs[-1].data == data_path.read_bytes()
    small = AlcSender(SenderConfig(content_encoding="gzip", max_encoded_file_bytes=100_000))
    with pytest.raises(ValueError, match="in memory"):
        small.add_file(data_path)


def test_writer_checks_md5_after_out_of_order_blocks(tmp_path: Path) -> None:
    """ReceivedFiles: blocks out of order -> MD5 computed by reading the file back; a wrong
    octet fails ``md5`` and removes the temporary file; a wrong length fails ``length``."""
    data = random.Random(7).randbytes(300_000)
    md5 = hashlib.md5(data).digest()
    blocks = [(off, data[off : off + 65536]) for off in range(0, len(data), 65536)]
    for case in ("ok", "md5", "length"):
        out = tmp_path / case
        sink = ReceivedFiles(OutputDir(out))
        for off, blk in reversed(blocks):
            if case == "md5" and off == 0:
                blk = b"X" + blk[1:]
            sink.block("k", "k", lambda: "a/b.bin", off, blk, {})
        n = len(data) + (1 if case == "length" else 0)
        path = sink.block_commit("k", "k", lambda: "a/b.bin", {}, length=n, md5=md5)
        if case == "ok":
            assert path is not None and path.read_bytes() == data
            assert sink.files[0]["sha256"] == hashlib.sha256(data).hexdigest()
        else:
            assert path is None and _listing(out) == ["a"] and sink.stats == {f"fail.{case}": 1}


# ----------------------------------------------------------------------------- authenticated

KEY = generate_private_key(1024)


def _params() -> TeslaParams:
    return TeslaParams(t0_ntp=posix_to_ntp(T0), tint_ms=50, n_chain=4000, d=2)


def _loop(snd: Any, rx: Any, on_event: Any, until: Any, t_end: float = 120.0, step: float = 0.002) -> None:
    """Sender -> receiver (and feedback back) on a virtual clock, 1 ms transit, no loss."""
    now = T0
    while now < T0 + t_end:
        for d, _ in snd.datagrams_to_send(now):
            rx.receive_datagram(d, ("10.0.0.1", 4000), now + 0.001)
        for d, _ in rx.datagrams_to_send(now):
            snd.receive_datagram(d, ("10.0.1.1", 4001), now + 0.001)
        snd.handle_timer(now)
        rx.handle_timer(now)
        on_event()
        if until():
            return
        now += step
    raise AssertionError("transfer did not finish")


def test_alc_authenticated_large_file_streamed(tmp_path: Path) -> None:
    """AlcSender (file read block by block) -> TESLA -> AlcReceiver(stream_files) -> the
    runner's writer, 24 MiB: bit-exact, the engine never held more than a few blocks."""
    src = _file(tmp_path / "big.bin", 24 * MiB + 5, seed=8)
    eng = AlcSender(SenderConfig(tsi=7, rate_bps=400e6, fec="rs", repair_ratio=0.1))
    eng.add_file(src)
    snd = AuthenticatedSender(eng, TeslaSender(_params(), KEY, protocol=PROTO_ALC, template=ControlTemplate(tsi=7)))
    alc = AlcReceiver(ReceiverConfig(stream_files=True))
    tr = TeslaReceiver(KEY.public_key(), protocol=PROTO_ALC, max_clock_error_ms=20)
    tr.early_discard = alc_early_discard(alc)
    rx = AuthenticatedReceiver(tr, alc)
    out = tmp_path / "out"
    sink = FileSink(OutputDir(out))
    peak = [0]

    def events() -> None:
        peak[0] = max(peak[0], alc.buffered_bytes)
        sink.pump(alc, alc)

    _loop(snd, rx, events, lambda: bool(sink.files) or bool(sink.failures))
    assert sink.failures == [] and (out / "big.bin").read_bytes() == src.read_bytes()
    assert tr.stats["accepted"] > 17_000 and tr.stats["drop.bad_mac"] == 0
    assert peak[0] < 2 * MiB, peak


def test_norm_authenticated_large_file_streamed(tmp_path: Path) -> None:
    """NormSender (FILE object read from disk) -> TESLA -> NormReceiver(stream_files) ->
    blocks written at their offsets, 20 MiB: bit-exact, the engine's buffer stays at a few
    blocks (before: the whole object was held, max_bytes charged with its size)."""
    from norm.receiver import BlockReceived as NBlock
    from norm.receiver import NormReceiver, ObjectAborted, ObjectReceived
    from norm.receiver import ReceiverConfig as NRC
    from norm.sender import NormSender, NormSenderConfig

    src = _file(tmp_path / "n.bin", 20 * MiB + 3, seed=9)
    eng = NormSender(NormSenderConfig(node_id=1, instance_id=77, segment_size=1400, rate=40e6, seed=1, grtt=0.05))
    eng.enqueue_file(str(src), b"sub/n.bin")
    eng.end()
    tpl = ControlTemplate(source_id=1, instance_id=77)
    snd = AuthenticatedSender(eng, TeslaSender(_params(), KEY, protocol=PROTO_NORM, template=tpl))
    norm = NormReceiver(NRC(node_id=10, stream_files=True))
    tr = TeslaReceiver(KEY.public_key(), protocol=PROTO_NORM, max_clock_error_ms=20, template=ControlTemplate(source_id=10))
    rx = AuthenticatedReceiver(tr, norm)
    out = tmp_path / "out"
    sink = NormFileSink(OutputDir(out))  # the runner's writer
    peak = [0]
    nblocks = [0]

    def events() -> None:
        peak[0] = max(peak[0], norm._bytes)
        while (ev := norm.next_event()) is not None:
            assert not isinstance(ev, (ObjectReceived, ObjectAborted)), ev
            if isinstance(ev, NBlock):
                nblocks[0] += 1
            sink.write(ev)
            if isinstance(ev, NBlock):
                assert _listing(out)[-1].startswith("sub/.n.bin.")

    _loop(snd, rx, events, lambda: bool(sink.files) or bool(sink.failures), step=0.004)
    assert sink.failures == [] and (out / "sub" / "n.bin").read_bytes() == src.read_bytes()
    assert nblocks[0] == -(-(20 * MiB + 3) // (1400 * 64))
    # every data segment authenticated (and the commands; no filler while data flows)
    assert tr.stats["accepted"] >= -(-(20 * MiB + 3) // 1400) and tr.stats["drop.bad_mac"] == 0
    assert peak[0] < 2 * MiB, peak


def test_norm_aborted_file_removes_its_temporary_file(tmp_path: Path) -> None:
    """NORM FILE object written block by block, then aborted in the engine (no progress for
    ``object_timeout``): the runner's writer removes its temporary file, no final name; the
    blocks arrived in order, each written once."""
    from norm.receiver import BlockReceived as NBlock
    from norm.receiver import NormReceiver, ObjectAborted
    from norm.receiver import ReceiverConfig as NRC
    from norm.sender import NormSender, NormSenderConfig

    src = _file(tmp_path / "a.bin", 3 * MiB, seed=10)
    s = NormSender(NormSenderConfig(node_id=1, instance_id=5, segment_size=1400, rate=1e9, seed=1))
    s.enqueue_file(str(src), b"a.bin")
    pkts: list[bytes] = []
    now = T0
    while len(pkts) < 1200:
        pkts += [d for d, _ in s.datagrams_to_send(now)]
        now += 0.004
    r = NormReceiver(NRC(node_id=10, stream_files=True, object_timeout=2.0, silent=True))
    out = tmp_path / "out"
    sink = NormFileSink(OutputDir(out))
    offsets = []
    for p in pkts[:1200]:
        r.receive_datagram(p, ("10.0.0.1", 4000), T0)
    while (ev := r.next_event()) is not None:
        if isinstance(ev, NBlock):
            offsets.append(ev.offset)
        sink.write(ev)
    assert offsets == sorted(offsets) and len(offsets) >= 10 and r._bytes < MiB
    names = _listing(out)
    assert len(names) == 1 and TEMP_NAME_RE.match(names[0])
    assert offsets[-1] < os.path.getsize(out / names[0]) <= offsets[-1] + 64 * 1400
    r.handle_timer(T0 + 5)
    evs = []
    while (ev := r.next_event()) is not None:
        evs.append(ev)
        sink.write(ev)
    assert any(isinstance(e, ObjectAborted) for e in evs), evs
    assert _listing(out) == [] and sink.files == [] and sink.failures
