"""The drivers' batch buffers without transparent huge pages
(``alc.mmsg.Slab``, every receiver: CLI, asyncio API, benchmarks): a fresh 64 MiB batch (1024 rows of 64 KiB) whose every
row gets one datagram stays a few MiB resident, instead of being faulted in (and zeroed)
2 MiB at a time inside the transfer (90-130 ms, issue 11's two-process NORM bench)."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import pytest

from alc.net import Driver

THP = Path("/sys/kernel/mm/transparent_hugepage/enabled")


def _mapping_kib(addr: int, field: str) -> int:
    """``field`` (kB) of the /proc/self/smaps mapping that holds ``addr``."""
    inside = False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        head = line.split()[0]
        if "-" in head and ":" not in head:
            lo, hi = (int(x, 16) for x in head.split("-"))
            inside = lo <= addr < hi
        elif inside and line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no mapping holds {addr:#x}")


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or not THP.exists() or "[never]" in THP.read_text(),
    reason="needs Linux with transparent huge pages (numpy asks for them on large arrays)",
)
def test_batch_rows_touched_once_stay_small() -> None:
    drv = Driver()
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        ep = drv.add(None, s)  # type: ignore[arg-type]  # (the engine is not used here)
        assert ep.slab is not None
        data = ep.slab.data
        data[:, :1500] = 1  # one 1500 B datagram in every row, as a full first batch
        addr = data.ctypes.data + data.nbytes // 2
        assert _mapping_kib(addr, "AnonHugePages") == 0
        assert _mapping_kib(addr, "Rss") < 16 << 10  # 1024 rows x 4 KiB, not 64 MiB
    finally:
        drv.close()
        s.close()
