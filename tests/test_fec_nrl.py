"""Interop: NRL NORM 1.5.9 Reed-Solomon parity (FEC Encoding ID 5) from a capture.

/work/shared/interop/nrl-norm-rxloss10.pcap holds all source segments plus 130 parity
repairs.  For every block with parity we erase as many source segments as we have parity,
decode with alc.fec and compare with the regenerated file.  This establishes that NRL uses
Rizzo's Vandermonde matrix (rs_matrix="nrl": evaluation points 0, 1, a, a^2 ...) and codes a
block shorter than B as a shortened B-block (rs_short_blocks="shortened"), and that its
EXT_FTI last byte is the number of parity symbols (last_field="num_parity").
"""

from __future__ import annotations

import hashlib
import struct
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest

from alc.fec import decode_fti, get_scheme

PCAP = Path("/work/shared/interop/nrl-norm-rxloss10.pcap")
pytestmark = [
    pytest.mark.interop,
    pytest.mark.skipif(not PCAP.exists(), reason=f"{PCAP} not available"),
]


def _gen(name: str, n: int) -> bytes:
    out = bytearray()
    i = 0
    while len(out) < n:
        out += hashlib.sha256(f"{name}:{i}".encode()).digest()
        i += 1
    return bytes(out[:n])


FILES = {
    1000: _gen("f1k.bin", 1000),
    100000: _gen("f100k.bin", 100000),
    1048576: _gen("f1m.bin", 1048576),
}


def _udp_payloads(path: Path, port: int) -> Iterator[bytes]:
    d = path.read_bytes()
    assert struct.unpack_from("<I", d, 0)[0] == 0xA1B2C3D4
    off = 24
    while off + 16 <= len(d):
        _s, _us, incl, _orig = struct.unpack_from("<IIII", d, off)
        off += 16
        ip = d[off + 14 : off + incl]  # Ethernet link type
        off += incl
        ihl = (ip[0] & 15) * 4
        if ip[9] != 17:
            continue
        _sp, dport, ulen = struct.unpack_from("!HHH", ip, ihl)
        if dport == port:
            yield ip[ihl + 8 : ihl + ulen]


def _norm_data() -> tuple[dict[int, dict[tuple[int, int], bytes]], dict[int, bytes]]:
    """Minimal NORM_DATA parse: {object: {(sbn, esi): payload}}, {object: EXT_FTI body}."""
    data: dict[int, dict[tuple[int, int], bytes]] = defaultdict(dict)
    fti: dict[int, bytes] = {}
    for p in _udp_payloads(PCAP, 6003):
        if p[0] & 0x0F != 2:  # NORM_DATA
            continue
        hdr_len = p[1] * 4
        fec_id, obj = p[13], struct.unpack_from("!H", p, 14)[0]
        assert fec_id == 5
        (w,) = struct.unpack_from("!I", p, 16)
        o = 20
        while o < hdr_len:  # header extensions
            het = p[o]
            hel = p[o + 1] if het < 128 else 1
            if het == 64:
                fti[obj] = p[o + 2 : o + hel * 4]
            o += hel * 4
        data[obj].setdefault((w >> 8, w & 0xFF), p[hdr_len:])
    return data, fti


def test_nrl_rs8_parity_decodes() -> None:
    data, fti = _norm_data()
    blocks_with_parity = 0
    parity_used = 0
    for obj, syms in data.items():
        oti = decode_fti(5, fti[obj], last_field="num_parity")
        assert (oti.symbol_length, oti.max_source_block_length, oti.max_encoding_symbols) == (
            1024,
            32,
            48,
        )
        content = FILES[oti.transfer_length]
        scheme = get_scheme(oti, rs_matrix="nrl")
        for sbn, k in enumerate(scheme.block_lengths()):
            parity = [(e, v) for (s, e), v in syms.items() if s == sbn and e >= k]
            if not parity:
                continue
            blocks_with_parity += 1
            parity_used += min(len(parity), k)
            dec = scheme.block_decoder(sbn)
            for esi, sym in parity[:k]:
                dec.add(esi, sym)
            for esi in range(min(len(parity), k), k):  # erase the first len(parity) sources
                dec.add(esi, syms[(sbn, esi)])
            got = b"".join(dec.decode())
            off = scheme.source_symbol_offset(sbn, 0)
            assert got == content[off : off + len(got)], (obj, sbn, k)
    assert blocks_with_parity >= 30
    assert parity_used >= 100


def test_nrl_parity_differs_from_rfc5510_matrix() -> None:
    """Documented deviations: the RFC 5510 §8 matrix does not reproduce NRL's parity, and
    for a block shorter than B neither does Rizzo's matrix built for the block's own k."""
    data, fti = _norm_data()
    cases = [(1048576, 0, "nrl", True), (1048576, 0, "rfc5510", False)]
    cases += [(100000, 1, "nrl", True), (100000, 1, "flute", False), (100000, 1, "rfc5510", False)]
    for size, sbn, matrix, expect in cases:
        obj = next(
            o
            for o in data
            if decode_fti(5, fti[o], last_field="num_parity").transfer_length == size
        )
        oti = decode_fti(5, fti[obj], last_field="num_parity")
        syms = data[obj]
        scheme = get_scheme(oti, rs_matrix=matrix)
        k = scheme.block_lengths()[sbn]
        src = [syms[(sbn, e)] for e in range(k)]
        mine = dict(scheme.repair_symbols(sbn, src, 16))
        theirs = {e: v for (s, e), v in syms.items() if s == sbn and e >= k}
        assert theirs
        assert all((mine[e] == v) is expect for e, v in theirs.items()), (matrix, sbn)
