"""Peak memory of the ALC receiver under the amplifications of issue 15, against the bounds
documented in docs/security/alc.md.  Each scenario runs in its own subprocess (twice:
once for the RSS high-water mark, once under tracemalloc), packets are made on the fly.

    python bench/hostile_alc_memory.py              # every scenario, a table
    python bench/hostile_alc_memory.py NAME [--tracemalloc]   # one, JSON

The RSS figure is ``ru_maxrss`` after the run minus the RSS just before the first packet;
the tracemalloc figure is the peak of Python allocations during the run.  A scenario is
"ok" when the tracemalloc peak is within its documented bound and the RSS delta within
5% + 1 MiB of it (allocator and interpreter slack).
"""

from __future__ import annotations

import gc
import json
import os
import resource
import struct
import subprocess
import sys
import time
import tracemalloc
import zlib
from collections.abc import Callable, Iterator
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from alc.fdt import FDTFile, FDTInstance, encode_fdt  # noqa: E402
from alc.fec import OTI, blocks, encode_fti  # noqa: E402
from alc.lct import ExtFDT, ExtFTI, LCTHeader  # noqa: E402
from alc.receiver import (  # noqa: E402
    BLOCK_OVERHEAD,
    OBJ_OVERHEAD,
    AlcReceiver,
    ReceiverConfig,
)

SRC = ("127.0.0.1", 4000)
T0 = 1_800_000_000.0
MiB = 1 << 20


def fti_ext(oti: OTI) -> ExtFTI:
    body = encode_fti(oti)
    return ExtFTI(body + bytes(-(len(body) + 2) % 4))


def object_packets(toi: int, data: bytes, e: int = 1400, b: int = 64,
                   extra: list[Any] | None = None) -> Iterator[bytes]:
    """ID 0 packets of ``data`` (EXT_FTI in each)."""
    oti = OTI(0, len(data), e, b)
    hdr = LCTHeader(tsi=1, toi=toi, extensions=[*(extra or []), fti_ext(oti)]).encode()
    bl = blocks(len(data), e, b)
    j = 0
    for sbn in range(len(bl)):
        for esi in range(bl[sbn]):
            yield hdr + struct.pack("!HH", sbn, esi) + data[j * e : (j + 1) * e]
            j += 1


def fdt_packets(iid: int, files: list[FDTFile]) -> Iterator[bytes]:
    xml = encode_fdt(FDTInstance(expires=0xFFFFFFFF, complete=False, files=files))
    yield from object_packets(0, xml, extra=[ExtFDT(iid)])


# ------------------------------------------------------------------ scenarios
# each returns (packets fed, octets on the wire, documented bound in octets, config)
def raptorq_fti(rx: AlcReceiver) -> Iterator[bytes]:
    """Forged RaptorQ EXT_FTI, F = 1000, T = 1400, Z = 128 (before: ZeroDivisionError)."""
    body = (1000).to_bytes(5, "big") + struct.pack("!BHBHB", 0, 1400, 128, 1, 4) + b"\0\0"
    for toi in range(1, 1001):
        yield (LCTHeader(tsi=1, toi=toi, codepoint=6, extensions=[ExtFTI(body)]).encode()
               + struct.pack("!I", 0) + bytes(1000))


def rs_tiny_16m(rx: AlcReceiver) -> Iterator[bytes]:
    """3 x 33-octet packets: RS (ID 5), E = 1, B = 1, 16 MiB (before: 7.4 GB RSS)."""
    fti = fti_ext(OTI(5, 16 * MiB, 1, 1, 1))
    for toi in (1, 2, 3):
        yield LCTHeader(tsi=1, toi=toi, codepoint=5, extensions=[fti]).encode() + b"\0\0\0\0x"


def rs_tiny_blocks(rx: AlcReceiver) -> Iterator[bytes]:
    """RS (ID 5), E = 1, B = 1, 64 KiB objects (2^16 blocks, accepted): one packet per
    block, 300,000 packets over 64 objects: memory grows per block touched."""
    fti = fti_ext(OTI(5, 64 * 1024, 1, 1, 1))
    hdrs = [LCTHeader(tsi=1, toi=t, codepoint=5, extensions=[fti]).encode() for t in range(1, 65)]
    for i in range(300_000):
        yield hdrs[i % 64] + struct.pack("!I", (i // 64) << 8) + b"x"


def announce_400m(rx: AlcReceiver) -> Iterator[bytes]:
    """One 1.4 KB packet announcing a 400 MiB object, 64 TOIs (before: 64 x 400 MiB
    zeroed buffers, within the old reservation only one)."""
    fti = fti_ext(OTI(0, 400 * MiB, 1400, 64))
    for toi in range(1, 65):
        yield (LCTHeader(tsi=1, toi=toi, extensions=[fti]).encode() + struct.pack("!HH", 7, 3)
               + bytes(1400))


def undescribed(rx: AlcReceiver) -> Iterator[bytes]:
    """2,000 complete 60 KB objects that no FDT announces (before: all kept)."""
    for toi in range(1, 2001):
        yield from object_packets(toi, toi.to_bytes(4, "big") * 15000)


def gzip_bomb(rx: AlcReceiver) -> Iterator[bytes]:
    """2 MB of gzip on the wire inflating to 2 GiB; the FDT announces Content-Length
    1 MB (before: a 2 GiB body)."""
    co = zlib.compressobj(9, zlib.DEFLATED, 31)
    zero = bytes(MiB)
    parts = [co.compress(zero) for _ in range(2048)]
    parts.append(co.flush())
    gz = b"".join(parts)
    del parts, zero
    f = FDTFile(1, "bomb.bin", content_length=MiB, transfer_length=len(gz),
                content_encoding="gzip",
                fec={"FEC-OTI-FEC-Encoding-ID": "0", "FEC-OTI-Encoding-Symbol-Length": "1400",
                     "FEC-OTI-Maximum-Source-Block-Length": "64"})
    yield from fdt_packets(1, [f])
    yield from object_packets(1, gz)


def gzip_bomb_no_length(rx: AlcReceiver) -> Iterator[bytes]:
    """The same bomb, no Content-Length: capped at max_decoded_bytes (64 MiB here)."""
    co = zlib.compressobj(9, zlib.DEFLATED, 31)
    zero = bytes(MiB)
    gz = b"".join([co.compress(zero) for _ in range(2048)] + [co.flush()])
    del zero
    f = FDTFile(1, "bomb.bin", transfer_length=len(gz), content_encoding="gzip",
                fec={"FEC-OTI-FEC-Encoding-ID": "0", "FEC-OTI-Encoding-Symbol-Length": "1400",
                     "FEC-OTI-Maximum-Source-Block-Length": "64"})
    yield from fdt_packets(1, [f])
    yield from object_packets(1, gz)


def fdt_flood(rx: AlcReceiver) -> Iterator[bytes]:
    """100 FDT Instances announcing 1,000 files each (100,000 entries) and 20,000 failing
    TOIs (before: every entry kept)."""
    for iid in range(100):
        files = [FDTFile(1 + iid * 1000 + i, f"http://x/{iid}/{i}.bin", content_length=10,
                         fec={"FEC-OTI-FEC-Encoding-ID": "0",
                              "FEC-OTI-Encoding-Symbol-Length": "1400",
                              "FEC-OTI-Maximum-Source-Block-Length": "64"})
                 for i in range(1000)]
        yield from fdt_packets(iid, files)
    fti = fti_ext(OTI(0, 1 << 30, 1400, 64))  # too_large
    for toi in range(1 << 24, (1 << 24) + 20_000):
        yield LCTHeader(tsi=1, toi=toi, extensions=[fti]).encode() + b"\0\0\0\0x"


def fdt_big(rx: AlcReceiver) -> Iterator[bytes]:
    """One FDT Instance of 4 MiB (the max_fdt_bytes default) announcing 14,000 files."""
    files = [FDTFile(1 + i, f"http://x/{i:0100d}.bin", content_length=10,
                     fec={"FEC-OTI-FEC-Encoding-ID": "0",
                          "FEC-OTI-Encoding-Symbol-Length": "1400",
                          "FEC-OTI-Maximum-Source-Block-Length": "64"})
             for i in range(14_000)]
    yield from fdt_packets(1, files)


def pending_flood(rx: AlcReceiver) -> Iterator[bytes]:
    """300,000 21-octet packets of undescribed TOIs, no FTI (cached for an FDT)."""
    for toi in range(1, 300_001):
        yield LCTHeader(tsi=1, toi=toi).encode() + b"\0\0\0\0x"


GZ_CFG = {"max_decoded_bytes": 64 * MiB}
SCENARIOS: dict[str, tuple[Callable[[AlcReceiver], Iterator[bytes]], dict[str, Any]]] = {
    "raptorq_fti": (raptorq_fti, {}),
    "rs_tiny_16m": (rs_tiny_16m, {}),
    "rs_tiny_blocks": (rs_tiny_blocks, {"max_buffered_bytes": 64 * MiB}),
    "announce_400m": (announce_400m, {}),
    "undescribed": (undescribed, {"max_buffered_bytes": 64 * MiB}),
    "gzip_bomb": (gzip_bomb, {}),
    "gzip_bomb_no_length": (gzip_bomb_no_length, GZ_CFG),
    "fdt_flood": (fdt_flood, {}),
    "fdt_big": (fdt_big, {}),
    "pending_flood": (pending_flood, {}),
}


def bound(name: str, cfg: ReceiverConfig) -> int:
    """The documented bound of the scenario (docs/security/alc.md)."""
    # tables (per-entry costs measured with tracemalloc, rounded up): FDT File entries,
    # failures, completed TOIs + FDT Instance IDs, header caches (header <= 1020 octets)
    tables = (cfg.max_announced * 1024 + cfg.max_failed * 128 + 2 * cfg.max_done * 96
              + 4096 * (1020 + 104) + 1024 * (44 + 104))
    if name in ("raptorq_fti", "rs_tiny_16m"):  # dropped: no state (1 MiB: RSS granularity,
        return MiB  # code paths run for the first time)
    if name == "announce_400m":  # per object: OBJ_OVERHEAD + one block
        return cfg.max_objects * (OBJ_OVERHEAD + BLOCK_OVERHEAD + 64 + 64 * 1400)
    if name in ("rs_tiny_blocks", "undescribed"):
        return cfg.max_buffered_bytes + tables
    # content decoding: the transfer object twice (blocks + joined), the decoded body twice
    # (zlib's output blocks + the joined bytes), 4 MiB for the FDT and the rest
    if name == "gzip_bomb":  # cap = Content-Length = 1 MiB
        return 2 * 2 * MiB + 2 * MiB + 4 * MiB
    if name == "gzip_bomb_no_length":
        assert cfg.max_decoded_bytes is not None
        return 2 * 2 * MiB + 2 * cfg.max_decoded_bytes + 4 * MiB
    if name in ("fdt_flood", "fdt_big"):  # + parsing one FDT Instance: ~10x its size
        return tables + 10 * cfg.max_fdt_bytes
    if name == "pending_flood":
        return cfg.max_pending_bytes
    raise KeyError(name)


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def run(name: str, trace: bool) -> dict[str, Any]:
    fn, kw = SCENARIOS[name]
    cfg = ReceiverConfig(tsi=1, **kw)
    rx = AlcReceiver(cfg)
    gc.collect()
    base = rss()
    if trace:
        tracemalloc.start()
    t0 = time.process_time()
    n = octets = 0
    for p in fn(rx):
        rx.receive_datagram(p, SRC, T0)
        n += 1
        octets += len(p)
        while rx.next_event() is not None:
            pass
    cpu = time.process_time() - t0
    out: dict[str, Any] = {
        "scenario": name, "packets": n, "wire_octets": octets, "cpu_s": round(cpu, 2),
        "bound": bound(name, cfg), "buffered_bytes": rx.buffered_bytes,
        "stats": {k: v for k, v in rx.stats.items() if k.startswith(("drop.", "fail."))},
    }
    if trace:
        out["tracemalloc_peak"] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    else:
        out["rss_delta"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
    return out


def main() -> None:
    if len(sys.argv) > 1:
        print(json.dumps(run(sys.argv[1], "--tracemalloc" in sys.argv)))
        return
    names = list(SCENARIOS)
    print(f"{'scenario':22} {'packets':>9} {'wire':>9} {'RSS delta':>10} {'tracemalloc':>12} "
          f"{'bound':>10}  drops")
    for name in names:
        r = json.loads(subprocess.check_output([sys.executable, __file__, name]))
        t = json.loads(subprocess.check_output([sys.executable, __file__, name, "--tracemalloc"]))
        # the bound is on allocations (tracemalloc); RSS gets the allocator's slack
        ok = t["tracemalloc_peak"] <= r["bound"] and r["rss_delta"] <= 1.05 * r["bound"] + MiB
        ok = "ok" if ok else "OVER"
        print(f"{name:22} {r['packets']:>9} {r['wire_octets'] / MiB:>8.1f}M "
              f"{r['rss_delta'] / MiB:>9.1f}M {t['tracemalloc_peak'] / MiB:>11.2f}M "
              f"{r['bound'] / MiB:>9.1f}M {ok} {r['stats']}", flush=True)


if __name__ == "__main__":
    main()
