"""The one exception type every decoder in this project raises for malformed input."""

from __future__ import annotations


class DecodeError(ValueError):
    """Malformed or unsupported bytes on the wire.

    ``field`` names the wire field (in the RFC's terms, e.g. ``"HDR_LEN"``,
    ``"EXT_FTI.symbol_length"``) that was found invalid.  Every ``decode``
    function in :mod:`alc`, :mod:`norm` and :mod:`tesla` raises only this type
    for bad input: no other exception may escape a decoder.
    """

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message
