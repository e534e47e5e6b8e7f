"""ALC (RFC 5775) on LCT (RFC 5651), FLUTE (RFC 6726) and the FEC building block (RFC 5052).

This package never imports :mod:`tesla`; it works unauthenticated on its own.
"""

from alc.errors import DecodeError

__all__ = ["DecodeError"]
