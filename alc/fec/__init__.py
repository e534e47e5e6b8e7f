"""FEC building block (RFC 5052) shared by ALC/FLUTE and NORM.

Schemes: 0 Compact No-Code (RFC 5445 §3), 2 and 5 Reed-Solomon (RFC 5510), 6 RaptorQ
(RFC 6330, through the ``raptorq`` package), 129 Small Block Systematic instance 0
(RFC 5445 §5 + RFC 5510 §7).  See docs/ARCHITECTURE.md for the contract.

Reed-Solomon generator matrices (``get_scheme(oti, rs_matrix=...)``):

* ``"rfc5510"`` -- RFC 5510 §8 text (evaluation points alpha^0..alpha^(n-1)); default.
* ``"rizzo"``   -- Luigi Rizzo's fec.c: points 0, alpha^0, alpha^1, ...
* ``"nrl"``     -- NRL NORM preset (protolib/norm normEncoderRS8, Rizzo's matrix): blocks
  shorter than B are coded as shortened B-blocks (``rs_short_blocks="shortened"``);
  GF(2^16) elements little-endian uint16.  Verified on nrl-norm-rxloss10.pcap (m = 8).
* ``"flute"``   -- ypo/flute (PyPI flute-alc) preset: Rizzo's matrix, code built for each
  block's own k.  Verified live both ways (tests/test_fec_flute.py).
"""

from __future__ import annotations

from alc.errors import DecodeError
from alc.fec.oti import (
    OTI,
    Blocks,
    blocks,
    decode_fti,
    encode_fti,
    oti_from_fdt_attributes,
    oti_to_fdt_attributes,
    partition,
    validate,
)
from alc.fec.schemes import RS_MATRICES, BlockDecoder, CompactNoCode, FecScheme, ReedSolomon

__all__ = [
    "OTI",
    "RS_MATRICES",
    "Blocks",
    "BlockDecoder",
    "CompactNoCode",
    "DecodeError",
    "blocks",
    "FecScheme",
    "ReedSolomon",
    "decode_fti",
    "encode_fti",
    "get_scheme",
    "oti_from_fdt_attributes",
    "oti_to_fdt_attributes",
    "partition",
    "validate",
]


def get_scheme(
    oti: OTI,
    *,
    rs_matrix: str = "rfc5510",
    rs16_byteorder: str | None = None,
    rs_short_blocks: str | None = None,
) -> FecScheme:
    """The FEC scheme for ``oti``; DecodeError('FEC Encoding ID', ...) if unsupported.

    ``rs_matrix``/``rs16_byteorder`` only matter for Reed-Solomon (IDs 2, 5, 129).
    """
    eid = oti.encoding_id
    if eid == 0:
        return CompactNoCode(oti)
    if eid in (2, 5, 129):
        return ReedSolomon(
            oti,
            rs_matrix=rs_matrix,
            rs16_byteorder=rs16_byteorder,
            rs_short_blocks=rs_short_blocks,
        )
    if eid == 6:
        from alc.fec.raptorq_scheme import RaptorQ

        return RaptorQ(oti)
    raise DecodeError("FEC Encoding ID", f"unsupported FEC Encoding ID {eid}")
