"""Hostile input against the ALC/FLUTE receiver (issue 15): forged OTIs, announced geometry
out of proportion to the packet, orphan objects, compression bombs, unbounded tables.

Every test here failed before the fix except the fuzz guard
``test_any_fti_bytes_give_a_scheme_or_a_decode_error``.  The figures of docs/security/alc.md
come from ``bench/hostile_alc_memory.py``, which runs the same scenarios in subprocesses."""

from __future__ import annotations

import gc
import struct
import tracemalloc
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from alc.errors import DecodeError
from alc.fec import OTI, decode_fti, encode_fti, get_scheme, oti_from_fdt_attributes
from alc.lct import ExtFTI, LCTHeader
from alc.receiver import AlcReceiver, FileReceived, ObjectFailed, ReceiverConfig, parse_lct
from alc.sender import AlcSender, SenderConfig

SRC = ("127.0.0.1", 4000)
T0 = 1_800_000_000.0


def fti_packet(toi: int, cp: int, fti: bytes, payload_id: bytes, payload: bytes = b"") -> bytes:
    """A hand-built ALC packet: LCT header with EXT_FTI ``fti`` (the scheme-specific body),
    then the FEC Payload ID and the payload."""
    body = fti + bytes(-(len(fti) + 2) % 4)
    hdr = LCTHeader(tsi=1, toi=toi, codepoint=cp, extensions=[ExtFTI(body)])
    return hdr.encode() + payload_id + payload


def raptorq_fti(f: int, t: int, z: int, n: int = 1, al: int = 4) -> bytes:
    return f.to_bytes(5, "big") + struct.pack("!BHBHB", 0, t, z, n, al)


def peak_of(fn: Callable[[], Any]) -> tuple[Any, int]:
    """(result, tracemalloc peak in octets above the level at the call)."""
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        out = fn()
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    return out, peak


def events(rx: AlcReceiver) -> list[Any]:
    return list(iter(rx.next_event, None))


def feed(rx: AlcReceiver, pkts: list[bytes]) -> None:
    for p in pkts:
        rx.receive_datagram(p, SRC, T0)


def send(files: dict[str, bytes], **cfg: Any) -> tuple[AlcSender, list[bytes]]:
    cfg.setdefault("rate_bps", None)
    cfg.setdefault("tsi", 1)
    s = AlcSender(SenderConfig(**cfg))
    for name, data in files.items():
        s.add_bytes(data, name)
    return s, s.all_packets(T0)


# ------------------------------------------------------------------ 1. forged OTI
def test_raptorq_fti_more_blocks_than_symbols_is_a_counted_drop() -> None:
    """F = 1000, T = 1400, Z = 128: 127 empty source blocks (RFC 6330 §4.4.1.2 needs
    Z <= Kt).  Before: ZeroDivisionError out of receive_datagram (session over)."""
    fti = raptorq_fti(1000, 1400, 128)
    with pytest.raises(DecodeError) as ei:
        decode_fti(6, fti)
    assert ei.value.field == "EXT_FTI.Z"
    rx = AlcReceiver(ReceiverConfig(tsi=1))
    rx.receive_datagram(fti_packet(5, 6, fti, struct.pack("!I", 0), bytes(1000)), SRC, T0)
    assert rx.stats["drop.bad_fti"] == 1
    assert rx.in_progress() == 0
    # the same OTI through the FDT attributes path
    with pytest.raises(DecodeError):
        oti_from_fdt_attributes({
            "Transfer-Length": "1000",
            "FEC-OTI-FEC-Encoding-ID": "6",
            "FEC-OTI-Encoding-Symbol-Length": "1400",
            "FEC-OTI-Scheme-Specific-Info": "gAABBA==",  # Z=128, N=1, Al=4
        })


_L = st.one_of(st.sampled_from([0, 1, 2, 999, 1000, 1400, 1401, 1 << 20, (1 << 40) - 1,
                                946270874880, 946270874881, (1 << 48) - 1, 1 << 48]),
               st.integers(0, 1 << 24))
_E = st.sampled_from([0, 1, 2, 3, 4, 8, 63, 64, 100, 1400, 1401, 65528, 65535, 65536])
_B = st.sampled_from([0, 1, 2, 3, 64, 255, 256, 1024, 65535, 65536, (1 << 32) - 1])
_Z = st.sampled_from([0, 1, 2, 3, 100, 128, 255, 256, 257])
_N = st.sampled_from([0, 1, 2, 3, 17, 65535, 65536])
_AL = st.sampled_from([0, 1, 2, 3, 4, 8, 255, 256])


@settings(max_examples=400, deadline=None)
@given(eid=st.sampled_from([0, 2, 5, 6, 129, 3, 128]), f=_L, e=_E, b=_B,
       max_n=st.sampled_from([0, 1, 2, 64, 255, 256, 65535, 65536]),
       m=st.sampled_from([0, 8, 9, 16]), g=st.sampled_from([0, 1, 2]), z=_Z, n=_N, al=_AL,
       inst=st.sampled_from([0, 1]))
@example(eid=6, f=1000, e=1400, b=0, max_n=0, m=8, g=1, z=128, n=1, al=4, inst=0)
@example(eid=6, f=1 << 20, e=1024, b=0, max_n=0, m=8, g=1, z=1, n=512, al=4, inst=0)
@example(eid=2, f=1000, e=3, b=10, max_n=0, m=16, g=1, z=0, n=1, al=4, inst=0)
def test_any_oti_gives_a_scheme_or_a_decode_error(
    eid: int, f: int, e: int, b: int, max_n: int, m: int, g: int, z: int, n: int, al: int,
    inst: int,
) -> None:
    """Every OTI (all FEC Encoding IDs, Z = 0, N = 0, Al = 0, E % Al != 0, B = 0,
    max_n < B, ...) gives a usable scheme or DecodeError naming the field; a scheme's
    blocks are never empty and cover the object; its memory does not grow with them."""
    oti = OTI(eid, f, e, b, max_n, inst, m, g, z, n, al)
    try:
        scheme = get_scheme(oti)
    except DecodeError as err:
        assert err.field
        return
    blocks = scheme.blocks
    assert all(k >= 1 for k in blocks.distinct())
    assert blocks.total == -(-scheme.oti.transfer_length // scheme.oti.symbol_length)
    if len(blocks):
        assert blocks.start(len(blocks) - 1) + blocks[len(blocks) - 1] == blocks.total


@settings(max_examples=300, deadline=None)
@given(eid=st.sampled_from([0, 2, 5, 6, 129]), body=st.binary(min_size=0, max_size=16),
       last=st.sampled_from(["max_n", "num_parity"]))
def test_any_fti_bytes_give_a_scheme_or_a_decode_error(eid: int, body: bytes, last: str) -> None:
    try:
        oti = decode_fti(eid, body, last_field=last)
        get_scheme(oti)
    except DecodeError:
        pass


# ------------------------------------------------------------------ 2. announced geometry
@pytest.mark.parametrize("length,dropped", [(1 << 18, False), (4 << 20, True)])
@pytest.mark.parametrize("zero_copy", [False, True])
def test_one_tiny_packet_announcing_many_blocks_costs_little(
    length: int, dropped: bool, zero_copy: bool
) -> None:
    """Reed-Solomon (ID 5), E = 1, B = 1: one block per octet of the object.  Before: all
    per-block state at once (16 MiB object: 2.5 GB RSS, 8.6 s).  Now the object's state
    is created with the blocks that receive symbols (or the geometry is refused)."""
    fti = encode_fti(OTI(5, length, 1, 1, 1))
    pkts = [fti_packet(toi, 5, fti, struct.pack("!I", 0), b"x") for toi in (1, 2, 3)]
    rx = AlcReceiver(ReceiverConfig(tsi=1, zero_copy=zero_copy))
    _, peak = peak_of(lambda: feed(rx, pkts))
    assert peak < 64 << 10, peak
    if dropped:
        assert rx.stats["drop.geometry_blocks"] == 3
    else:
        assert rx.in_progress() == 3 and rx.buffered_bytes < 16 << 10


@pytest.mark.parametrize("zero_copy", [False, True])
def test_large_announcement_allocates_nothing_upfront(zero_copy: bool) -> None:
    """One 1.4 KB packet announcing 400 MiB (ID 0).  Before: a zeroed 400 MiB buffer
    (zero copy: per-symbol tables of the whole object) on the first packet."""
    fti = encode_fti(OTI(0, 400 << 20, 1400, 64))
    pkt = fti_packet(9, 0, fti, struct.pack("!HH", 3, 5), bytes(1400))
    rx = AlcReceiver(ReceiverConfig(tsi=1, zero_copy=zero_copy))
    _, peak = peak_of(lambda: rx.receive_datagram(pkt, SRC, T0))
    assert rx.in_progress() == 1
    assert peak < 256 << 10, peak
    assert rx.buffered_bytes < 128 << 10  # one source block (64 x 1400) + bookkeeping


@pytest.mark.parametrize("zero_copy", [False, True])
def test_object_memory_grows_with_received_symbols(zero_copy: bool) -> None:
    data = bytes(range(256)) * 4000  # 1 MB, 12 blocks of 64 x 1400
    _, pkts = send({"a.bin": data})
    fdt = [p for p in pkts if parse_lct(p).toi == 0]
    obj = [p for p in pkts if parse_lct(p).toi == 1]
    rx = AlcReceiver(ReceiverConfig(tsi=1, zero_copy=zero_copy))
    feed(rx, fdt[:1] + obj[:70])  # 70 of 715 packets: two blocks touched
    assert rx.buffered_bytes < 3 * 64 * 1400 + 16 * 1024 + (70 * 1500 if zero_copy else 0)
    feed(rx, obj[70:])
    got = [e for e in events(rx) if isinstance(e, FileReceived)]
    assert [e.data for e in got] == [data]
    assert rx.buffered_bytes == 0


def test_rs16_long_blocks_are_refused() -> None:
    """ID 2, m = 16, B = 65535: decoding such a block is O(k^2) memory and O(k^3) time."""
    fti = encode_fti(OTI(2, 10 << 20, 2, 65535, 65535, m=16))
    rx = AlcReceiver(ReceiverConfig(tsi=1))
    rx.receive_datagram(fti_packet(4, 2, fti, struct.pack("!I", 0), b"ab"), SRC, T0)
    assert rx.stats["drop.geometry_rs_block_length"] == 1
    assert [e.reason for e in events(rx) if isinstance(e, ObjectFailed)] == ["bad_geometry"]
    rx.receive_datagram(fti_packet(4, 2, fti, struct.pack("!I", 1), b"ab"), SRC, T0)
    assert rx.stats["drop.geometry"] == 1  # later packets of that TOI: one dict lookup


def test_repair_symbols_are_charged_and_bounded() -> None:
    """Forged repair symbols (RS, ID 5), fewer than k per block so that none decodes:
    held within max_buffered_bytes with their Python overhead (before: charged E octets
    each, peak 313 kB against a 200 kB bound)."""
    fti = encode_fti(OTI(5, 100 * 1000, 1000, 100, 255))  # one block of k = 100
    rx = AlcReceiver(ReceiverConfig(tsi=1, max_buffered_bytes=200_000))
    pkts = [fti_packet(toi, 5, fti, struct.pack("!I", esi), bytes(1000))
            for toi in (1, 2, 3) for esi in range(100, 199)]
    _, peak = peak_of(lambda: feed(rx, pkts))
    assert rx.buffered_bytes <= 200_000
    assert rx.stats["drop.evicted"] + rx.stats.get("drop.buffer_full", 0) > 0
    assert peak < 200_000 + (64 << 10), peak
    assert "fec.blocks_decoded" not in rx.stats


# ------------------------------------------------------------------ 3. orphan objects
def test_completed_undescribed_objects_are_evicted() -> None:
    """Objects completed before (or without) an FDT are kept within max_buffered_bytes,
    oldest evicted first.  Before: kept forever (12,000 x 60 KB passed 512 MiB)."""
    files = {f"f{i}.bin": bytes([i]) * 60_000 for i in range(40)}
    _, pkts = send(files)
    fdt = [p for p in pkts if parse_lct(p).toi == 0]
    data = [p for p in pkts if parse_lct(p).toi != 0]
    rx = AlcReceiver(ReceiverConfig(tsi=1, max_buffered_bytes=1 << 20))
    feed(rx, data)
    assert rx.buffered_bytes <= 1 << 20
    assert rx.stats["objects_completed"] == 40
    assert rx.stats["drop.undescribed_evicted"] >= 40 - (1 << 20) // 60_000
    # the newest ones are still there when the FDT arrives; the evicted ones come back
    # with the carousel
    feed(rx, fdt)
    got = {e.name for e in events(rx) if isinstance(e, FileReceived)}
    assert "f39.bin" in got and "f0.bin" not in got
    feed(rx, data)
    got |= {e.name for e in events(rx) if isinstance(e, FileReceived)}
    assert got == set(files)
    assert rx.all_announced_complete()


def test_pending_packets_are_charged_with_their_overhead() -> None:
    """Packets of TOIs no FTI/FDT describes are cached within max_pending_bytes, counting
    the Python objects that hold them (before: 30-octet packets cost ~5x their size)."""
    hdr = [LCTHeader(tsi=1, toi=t).encode() + b"\0\0\0\0x" for t in range(1, 40_001)]
    rx = AlcReceiver(ReceiverConfig(tsi=1, max_pending_bytes=1 << 20))
    _, peak = peak_of(lambda: feed(rx, hdr))
    assert rx.stats["drop.pending_overflow"] > 0
    assert peak < (1 << 20) * 1.25, peak


# ------------------------------------------------------------------ 4. compression bomb
@pytest.mark.parametrize("case", ["content_length_lie", "absolute_cap"])
def test_gzip_bomb_is_capped(case: str) -> None:
    """A 64 MiB file of zeros, gzip on the wire (65 KB).  Decompression stops at
    min(Content-Length, max_decoded_bytes).  Before: 2 MB of gzip became a 2 GiB file
    (cap 16 GiB)."""
    s = AlcSender(SenderConfig(tsi=1, rate_bps=None, content_encoding="gzip"))
    s.add_bytes(bytes(64 << 20), "bomb.bin")
    cfg = ReceiverConfig(tsi=1)
    if case == "content_length_lie":
        s.objects[0].content_length = 100_000  # the FDT announces 100 kB
    else:
        cfg = ReceiverConfig(tsi=1, max_decoded_bytes=1 << 20)
    pkts = s.all_packets(T0)
    assert sum(len(p) for p in pkts) < 200_000
    rx = AlcReceiver(cfg)
    _, peak = peak_of(lambda: feed(rx, pkts))
    evs = events(rx)
    assert [e.reason for e in evs if isinstance(e, ObjectFailed)] == ["decoded_too_large"]
    assert rx.stats["fail.decoded_too_large"] == 1
    assert peak < 4 << 20, peak  # before: 64 MiB


# ------------------------------------------------------------------ 5. tables
def test_failed_table_is_bounded() -> None:
    fti = encode_fti(OTI(0, 1 << 30, 1400, 64))  # above max_buffered_bytes: too_large
    rx = AlcReceiver(ReceiverConfig(tsi=1, max_failed=100))
    feed(rx, [fti_packet(t, 0, fti, b"\0\0\0\0", b"x") for t in range(1, 501)])
    assert rx.stats["fail.too_large"] == 500
    assert len(rx.failed) == 100 and rx.stats["drop.failed_evicted"] == 400
    assert min(rx.failed) == 401  # oldest first


def test_announced_table_is_bounded() -> None:
    files = {f"f{i}": b"" for i in range(500)}
    _, pkts = send(files)
    fdt = [p for p in pkts if parse_lct(p).toi == 0]
    rx = AlcReceiver(ReceiverConfig(tsi=1, max_announced=100))
    feed(rx, fdt)
    assert len(rx.announced) == 100 and rx.stats["drop.announced_evicted"] == 400
    assert min(rx.announced) == 401
    assert len(rx.fdt_instance_of) == 100


def test_done_tables_are_bounded() -> None:
    """Completed TOIs (duplicate detection) are remembered up to max_done, oldest
    forgotten first (before: a set growing with every TOI ever completed)."""
    fti = encode_fti(OTI(0, 1, 8, 1))
    rx = AlcReceiver(ReceiverConfig(tsi=1, flute=False, max_done=1000))
    feed(rx, [fti_packet(t, 0, fti, b"\0\0\0\0", b"x") for t in range(1, 5001)])
    assert rx.stats["objects_completed"] == 5000
    assert rx.stats["drop.done_evicted"] == 4000
    assert len(rx._done_tois) == 1000 and min(rx._done_tois) == 4001
