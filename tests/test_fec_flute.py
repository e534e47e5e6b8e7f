"""Interop: Reed-Solomon with ypo/flute (PyPI flute-alc), FEC Encoding IDs 5 and 129.

Both directions, no sockets: flute's sender is driven in-process (``Sender.read()`` returns
ALC packets) and its receiver is fed with ``Receiver.push()``.

* flute -> us: decode flute's repair symbols with some source symbols erased.
* us -> flute: replace flute's repair payloads with ours, erase source packets, and check
  flute's receiver rebuilds the file bit-exact.

Finding: flute-alc uses Luigi Rizzo's Vandermonde matrix (points 0, 1, a, a^2, ...) built for
each block's own k -- rs_matrix="flute" -- not the RFC 5510 §8 matrix.
"""

from __future__ import annotations

import os
import random
import struct
from collections.abc import Callable
from pathlib import Path

import pytest

from alc.fec import OTI, decode_fti, get_scheme
from alc.fec.schemes import FecScheme

flute = pytest.importorskip("flute", reason="flute-alc not installed")
from flute import receiver, sender  # noqa: E402

pytestmark = pytest.mark.interop


def _parse_alc(pkt: bytes) -> tuple[int, bytes | None, int, bytes]:
    """(toi, EXT_FTI body or None, offset of FEC payload ID, packet)."""
    (w,) = struct.unpack_from("!I", pkt, 0)
    c, s, o, h = (w >> 26) & 3, (w >> 23) & 1, (w >> 21) & 3, (w >> 20) & 1
    hdr_len = ((w >> 8) & 0xFF) * 4
    off = 4 + 4 * (c + 1)
    tsi_len, toi_len = 4 * s + 2 * h, 4 * o + 2 * h
    toi = int.from_bytes(pkt[off + tsi_len : off + tsi_len + toi_len], "big")
    e = off + tsi_len + toi_len
    fti = None
    while e < hdr_len:
        het = pkt[e]
        hel = pkt[e + 1] if het < 128 else 1
        if het == 64:
            fti = pkt[e + 2 : e + hel * 4]
        e += hel * 4
    return toi, fti, hdr_len, pkt


def _flute_packets(make_oti: Callable[[], object], data: bytes) -> list[bytes]:
    s = sender.Sender(1, make_oti(), sender.Config())
    s.add_object_from_buffer(data, "application/octet-stream", "file:///x.bin", None)
    s.publish()
    out = []
    while (p := s.read()) is not None:
        out.append(bytes(p))
    return out


def _object(pkts: list[bytes], eid: int) -> tuple[OTI, FecScheme, int, dict[tuple[int, int], int]]:
    """OTI, scheme, TOI of the file, {(sbn, esi): packet index}."""
    toi_fti: dict[int, bytes] = {}
    for p in pkts:
        toi, fti, _, _ = _parse_alc(p)
        if fti is not None:
            toi_fti[toi] = fti
    toi = max(t for t in toi_fti if t != 0)
    oti = decode_fti(eid, toi_fti[toi])
    scheme = get_scheme(oti, rs_matrix="flute")
    index = {}
    for i, p in enumerate(pkts):
        t, _, hl, _ = _parse_alc(p)
        if t == toi:
            index[scheme.decode_payload_id(p, hl)] = i
    return oti, scheme, toi, index


CASES = [
    ("id5", 5, lambda: sender.Oti.new_reed_solomon_rs28(1400, 40, 10), 99_000),  # [36, 35]
    ("id5-small", 5, lambda: sender.Oti.new_reed_solomon_rs28(512, 16, 4), 7_777),  # [16]
    ("id129", 129, lambda: sender.Oti.new_reed_solomon_rs28_under_specified(1400, 40, 10), 100_000),
]


@pytest.mark.parametrize("name,eid,make_oti,size", CASES, ids=[c[0] for c in CASES])
def test_flute_parity_decodes(
    name: str, eid: int, make_oti: Callable[[], object], size: int
) -> None:
    data = random.Random(size).randbytes(size)
    pkts = _flute_packets(make_oti, data)
    oti, scheme, _toi, index = _object(pkts, eid)
    assert oti.encoding_id == eid
    pid = scheme.payload_id_length
    n_repair = 0
    for sbn, k in enumerate(scheme.block_lengths()):
        repair = sorted(e for (s, e) in index if s == sbn and e >= k)
        assert repair, f"flute sent no parity for block {sbn}"
        n_repair += len(repair)
        dec = scheme.block_decoder(sbn)
        for esi in repair[:k]:
            p = pkts[index[(sbn, esi)]]
            dec.add(esi, p[_parse_alc(p)[2] + pid :])
        for esi in range(min(len(repair), k), k):  # erase the first len(repair) sources
            p = pkts[index[(sbn, esi)]]
            dec.add(esi, p[_parse_alc(p)[2] + pid :])
        got = b"".join(dec.decode())
        off = scheme.source_symbol_offset(sbn, 0)
        assert got == data[off : off + len(got)], (name, sbn)
    assert n_repair > 0
    # and RFC 5510's matrix would not reproduce flute's repair symbols
    rfc = get_scheme(oti, rs_matrix="rfc5510")
    k0 = scheme.block_lengths()[0]
    src = []
    for esi in range(k0):
        p = pkts[index[(0, esi)]]
        src.append(p[_parse_alc(p)[2] + pid :])
    p = pkts[index[(0, k0)]]
    assert rfc.repair_symbols(0, src, 1)[0][1] != p[_parse_alc(p)[2] + pid :]
    assert scheme.repair_symbols(0, src, 1)[0][1] == p[_parse_alc(p)[2] + pid :]


def _feed_flute(pkts: list[bytes], tmp: Path) -> bytes | None:
    w = receiver.ObjectWriterBuilder(str(tmp))
    rc = receiver.Receiver(receiver.UDPEndpoint("239.255.0.1", 3400), 1, w, receiver.Config())
    for p in pkts:
        rc.push(p)
    f = tmp / "x.bin"
    return f.read_bytes() if f.exists() else None


@pytest.mark.parametrize("matrix,ok", [("flute", True), ("rfc5510", False)])
@pytest.mark.parametrize("name,eid,make_oti,size", CASES, ids=[c[0] for c in CASES])
def test_our_parity_decodes_in_flute(
    tmp_path: Path,
    name: str,
    eid: int,
    make_oti: Callable[[], object],
    size: int,
    matrix: str,
    ok: bool,
) -> None:
    data = os.urandom(size)
    pkts = _flute_packets(make_oti, data)
    oti, _flute_scheme, _toi, index = _object(pkts, eid)
    ours = get_scheme(oti, rs_matrix=matrix)
    pid = ours.payload_id_length
    drop: set[int] = set()
    for sbn, k in enumerate(ours.block_lengths()):
        src = []
        for esi in range(k):
            p = pkts[index[(sbn, esi)]]
            src.append(p[_parse_alc(p)[2] + pid :])
        repair = sorted(e for (s, e) in index if s == sbn and e >= k)
        mine = dict(ours.repair_symbols(sbn, src, max(repair) - k + 1))
        for esi in repair:  # substitute our repair symbols, same header and payload ID
            i = index[(sbn, esi)]
            hl = _parse_alc(pkts[i])[2]
            pkts[i] = pkts[i][: hl + pid] + mine[esi]
        drop |= {index[(sbn, esi)] for esi in range(min(len(repair), k))}
    got = _feed_flute([p for i, p in enumerate(pkts) if i not in drop], tmp_path)
    if ok:
        assert got == data
    else:
        assert got != data
