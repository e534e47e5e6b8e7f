"""ALC packet (RFC 5775 §4.1): LCT header | FEC Payload ID | encoding symbol(s).

The FEC Payload ID length depends on the FEC scheme, which the LCT header does not
name by itself (FLUTE: Codepoint; otherwise EXT_FTI/FDT/session description).  So a
receiver calls :func:`split` to get the header and its length, picks the scheme with
:mod:`alc.fec`, and then reads the payload ID with ``scheme.decode_payload_id(buf,
header_len)``.  A datagram that ends right after the LCT header (e.g. close-session)
is legal and has neither FEC Payload ID nor payload.
"""

from __future__ import annotations

from dataclasses import dataclass

from alc.errors import DecodeError
from alc.lct import LCTHeader

__all__ = ["ALCPacket", "encode_alc", "split"]


def split(buf: bytes | bytearray | memoryview) -> tuple[LCTHeader, int]:
    """Decode and validate the LCT header of an ALC packet: ``(header, HDR_LEN*4)``.

    Adds the ALC rule of RFC 5775 §4.1 to the LCT checks: the TSI must be present
    (S=0 and H=0 is invalid).  The FEC Payload ID and payload start at the returned
    offset; ``len(buf) == header_len`` means a packet without payload.
    """
    hdr, n = LCTHeader.decode(buf)
    if hdr.tsi_bits == 0:
        raise DecodeError("S", "ALC requires a TSI (S=0 and H=0)")
    return hdr, n


def encode_alc(header: LCTHeader, payload_id: bytes = b"", payload: bytes = b"") -> bytes:
    """Wire form of an ALC packet."""
    if header.tsi_bits == 0:
        raise ValueError("ALC requires a TSI (tsi_bits 16, 32 or 48)")
    if payload and not payload_id:
        raise ValueError("a packet carrying encoding symbols needs a FEC Payload ID")
    return b"".join((header.encode(), payload_id, payload))


@dataclass(slots=True)
class ALCPacket:
    """An ALC packet split into its three parts."""

    header: LCTHeader
    payload_id: bytes = b""
    payload: bytes = b""

    def encode(self) -> bytes:
        return encode_alc(self.header, self.payload_id, self.payload)

    @classmethod
    def decode(cls, buf: bytes | bytearray | memoryview, payload_id_length: int) -> ALCPacket:
        """Split ``buf`` given the FEC Payload ID length of the scheme in use.

        Nothing after the header gives empty ``payload_id`` and ``payload``.
        """
        hdr, n = split(buf)
        rest = len(buf) - n
        if rest == 0:
            return cls(hdr)
        if rest < payload_id_length:
            raise DecodeError(
                "FEC Payload ID", f"{rest} octets after the header, need {payload_id_length}"
            )
        m = n + payload_id_length
        return cls(hdr, bytes(buf[n:m]), bytes(buf[m:]))
