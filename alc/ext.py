"""Generic header-extension framing (RFC 5651 §5.2), shared by LCT and NORM (RFC 5740 §4.1).

Two forms, both a whole number of 32-bit words::

    HET 0..127   : | HET | HEL | body (HEL*4 - 2 octets) |   HEL = words incl. HET/HEL
    HET 128..255 : | HET | body (3 octets)               |   always one word

:class:`HeaderExtension` is the untyped form.  ``body`` is everything after the HET
(and HEL) octets, padding included, so ``encode`` reproduces the received bytes.
Decoders raise only :class:`alc.errors.DecodeError`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from alc.errors import DecodeError

__all__ = [
    "EncodableExtension",
    "HeaderExtension",
    "decode_extensions",
    "encode_extensions",
    "walk_extensions",
]

MAX_HEL = 255


class EncodableExtension(Protocol):
    """Anything that can put itself on the wire as one header extension."""

    def encode(self) -> bytes: ...


@dataclass(frozen=True, slots=True)
class HeaderExtension:
    """One header extension, untyped.

    For ``het <= 127`` ``body`` is what follows HET and HEL (``HEL*4 - 2`` octets, so
    ``len(body) % 4 == 2``); for ``het >= 128`` ``body`` is exactly 3 octets.
    """

    het: int
    body: bytes

    @property
    def is_fixed(self) -> bool:
        return self.het >= 128

    @property
    def length(self) -> int:
        """Length on the wire in octets."""
        return 1 + len(self.body) if self.het >= 128 else 2 + len(self.body)

    def encode(self) -> bytes:
        het = self.het
        body = bytes(self.body)
        if not 0 <= het <= 255:
            raise ValueError(f"HET {het} out of range 0..255")
        if het >= 128:
            if len(body) != 3:
                raise ValueError(f"HET {het} (fixed form) needs a 3-octet body, got {len(body)}")
            return bytes((het,)) + body
        n = len(body) + 2
        if n % 4:
            raise ValueError(f"HET {het}: body length {len(body)} is not 2 mod 4")
        hel = n >> 2
        if hel > MAX_HEL:
            raise ValueError(f"HET {het}: HEL {hel} > 255")
        return bytes((het, hel)) + body


def encode_extensions(extensions: Iterable[EncodableExtension]) -> bytes:
    """Concatenate the wire form of every extension (typed or :class:`HeaderExtension`)."""
    return b"".join([e.encode() for e in extensions])


def walk_extensions(buf: bytes | bytearray | memoryview, start: int, end: int) -> list[tuple[int, int, int]]:
    """Structural walk: ``[(het, offset, length_in_octets), ...]`` of the extensions in
    ``buf[start:end]``.  Offsets are absolute in ``buf``.

    Rejects HEL = 0, an extension running past ``end``, ``end`` beyond the buffer and a
    walk that does not finish exactly at ``end``.  No copies are made.
    """
    if start < 0 or end < start or end > len(buf):
        raise DecodeError("HDR_LEN", f"extension area {start}..{end} outside buffer of {len(buf)}")
    out: list[tuple[int, int, int]] = []
    pos = start
    while pos < end:
        het = buf[pos]
        if het >= 128:
            n = 4
        else:
            if pos + 1 >= end:
                raise DecodeError("HEL", f"HET {het} at offset {pos}: no room for HEL")
            hel = buf[pos + 1]
            if hel == 0:
                raise DecodeError("HEL", f"HET {het} at offset {pos}: HEL = 0")
            n = hel << 2
        if pos + n > end:
            raise DecodeError(
                "HEL", f"HET {het} at offset {pos}: {n} octets overrun the header end {end}"
            )
        out.append((het, pos, n))
        pos += n
    return out


def decode_extensions(
    buf: bytes | bytearray | memoryview, start: int = 0, end: int | None = None
) -> list[HeaderExtension]:
    """Decode the header extensions in ``buf[start:end]`` as :class:`HeaderExtension`."""
    if end is None:
        end = len(buf)
    mv = memoryview(buf)
    out: list[HeaderExtension] = []
    for het, pos, n in walk_extensions(mv, start, end):
        if het >= 128:
            out.append(HeaderExtension(het, bytes(mv[pos + 1 : pos + 4])))
        else:
            out.append(HeaderExtension(het, bytes(mv[pos + 2 : pos + n])))
    return out
