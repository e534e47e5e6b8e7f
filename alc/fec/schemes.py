"""FEC schemes 0 (Compact No-Code), 2 and 5 (Reed-Solomon, RFC 5510), 129 (Small Block
Systematic, RFC 5445 §5, instance 0 = RS GF(2^8) per RFC 5510 §7)."""

from __future__ import annotations

import struct

import numpy as np
import numpy.typing as npt

from alc.errors import DecodeError
from alc.fec.gf import max_symbols, rs_code
from alc.fec.oti import OTI, Blocks, blocks, encode_fti, validate


class BlockDecoder:
    """Collects encoding symbols of one source block; decode() returns the k source symbols.

    Every returned symbol is ``symbol_length`` bytes except the very last source symbol of
    the object, which is trimmed to its real length (RFC 5052 §9.1).
    """

    def __init__(self, k: int, symbol_length: int, last_length: int) -> None:
        self.k = k
        self.symbol_length = symbol_length
        self.last_length = last_length  # length of the block's last source symbol
        self.symbols: dict[int, bytes] = {}

    def _check_symbol(self, esi: int, symbol: bytes) -> bytes:
        if esi < 0:
            raise DecodeError("ESI", "negative")
        if len(symbol) > self.symbol_length:
            raise DecodeError(
                "encoding symbol", f"{len(symbol)} bytes > symbol length {self.symbol_length}"
            )
        return bytes(symbol)

    @property
    def received(self) -> int:
        return len(self.symbols)

    def is_complete(self) -> bool:
        return len(self.symbols) >= self.k

    def add(self, esi: int, symbol: bytes) -> bool:
        raise NotImplementedError

    def decode(self) -> list[bytes]:
        raise NotImplementedError

    def _trim(self, out: list[bytes]) -> list[bytes]:
        if out:
            out[-1] = out[-1][: self.last_length]
        return out


class FecScheme:
    """Common part of every FEC scheme (see docs/ARCHITECTURE.md)."""

    encoding_id = -1
    payload_id_length = 4

    def __init__(self, oti: OTI) -> None:
        validate(oti)
        self.oti = oti
        self._blocks = self._compute_block_lengths()

    def _compute_block_lengths(self) -> Blocks:
        o = self.oti
        return blocks(o.transfer_length, o.symbol_length, o.max_source_block_length)

    # -- payload ID ---------------------------------------------------------
    def encode_payload_id(self, sbn: int, esi: int) -> bytes:
        raise NotImplementedError

    def decode_payload_id(self, buf: bytes, offset: int = 0) -> tuple[int, int]:
        raise NotImplementedError

    def _need(self, buf: bytes, offset: int) -> None:
        if offset < 0 or len(buf) - offset < self.payload_id_length:
            raise DecodeError(
                "FEC Payload ID", f"need {self.payload_id_length} bytes at offset {offset}"
            )

    # -- blocks ---------------------------------------------------------------
    def block_lengths(self) -> list[int]:
        """One entry per source block: a sender's view (its object exists).  A receiver
        uses :attr:`blocks` (O(1) memory whatever the announced number of blocks)."""
        return list(self._blocks)

    @property
    def blocks(self) -> Blocks:
        return self._blocks

    def block_length(self, sbn: int) -> int:
        if not 0 <= sbn < len(self._blocks):
            raise DecodeError(
                "SBN", f"source block {sbn} outside object ({len(self._blocks)} blocks)"
            )
        return self._blocks[sbn]

    def last_symbol_length(self, sbn: int) -> int:
        """Length of the last source symbol of block ``sbn`` (E except for the final block)."""
        e = self.oti.symbol_length
        if sbn == len(self._blocks) - 1:
            return self.oti.transfer_length - (self.oti.transfer_length - 1) // e * e
        return e

    def source_symbol_offset(self, sbn: int, esi: int) -> int:
        """Byte offset in the object of source symbol (sbn, esi)."""
        return (self._blocks.start(sbn) + esi) * self.oti.symbol_length

    def max_encoding_symbols(self, sbn: int) -> int:
        """Max number of encoding symbols (source + repair) of a block."""
        return self.block_length(sbn)

    def repair_symbols(
        self, sbn: int, source_symbols: list[bytes], count: int, first_esi: int | None = None
    ) -> list[tuple[int, bytes]]:
        raise ValueError(f"FEC Encoding ID {self.encoding_id} has no repair symbols")

    def block_decoder(self, sbn: int) -> BlockDecoder:
        raise NotImplementedError

    def encode_fti(self, oti: OTI | None = None, *, last_field: str = "max_n") -> bytes:
        """EXT_FTI body after HET/HEL for ``oti`` (default: this scheme's OTI)."""
        return encode_fti(self.oti if oti is None else oti, last_field=last_field)


# --------------------------------------------------------------------------- ID 0
class _NoCodeDecoder(BlockDecoder):
    def add(self, esi: int, symbol: bytes) -> bool:
        symbol = self._check_symbol(esi, symbol)
        if esi >= self.k:
            raise DecodeError("ESI", f"ESI {esi} >= source block length {self.k}")
        self.symbols.setdefault(esi, symbol)
        return self.is_complete()

    def decode(self) -> list[bytes]:
        if not self.is_complete():
            raise ValueError("block not complete")
        e = self.symbol_length
        out = [self.symbols[i].ljust(e, b"\0") for i in range(self.k)]
        return self._trim(out)


class CompactNoCode(FecScheme):
    """FEC Encoding ID 0, RFC 5445 §3: 16-bit SBN, 16-bit ESI."""

    encoding_id = 0

    def encode_payload_id(self, sbn: int, esi: int) -> bytes:
        if not (0 <= sbn < 1 << 16 and 0 <= esi < 1 << 16):
            raise ValueError("SBN/ESI out of 16-bit range")
        return struct.pack("!HH", sbn, esi)

    def decode_payload_id(self, buf: bytes, offset: int = 0) -> tuple[int, int]:
        self._need(buf, offset)
        sbn, esi = struct.unpack_from("!HH", buf, offset)
        return sbn, esi

    def block_decoder(self, sbn: int) -> BlockDecoder:
        return _NoCodeDecoder(
            self.block_length(sbn), self.oti.symbol_length, self.last_symbol_length(sbn)
        )


# --------------------------------------------------------------------------- RS
class _RSDecoder(BlockDecoder):
    def __init__(
        self,
        k: int,
        symbol_length: int,
        last_length: int,
        m: int,
        matrix: str,
        byteorder: str,
        n_limit: int,
        base_k: int,
    ) -> None:
        super().__init__(k, symbol_length, last_length)
        self.m = m
        self.matrix = matrix
        self.byteorder = byteorder
        self.base_k = base_k
        self.n_limit = min(n_limit, rs_code(m, k, matrix, base_k).esi_limit)

    def add(self, esi: int, symbol: bytes) -> bool:
        symbol = self._check_symbol(esi, symbol)
        if esi >= self.n_limit:
            raise DecodeError("ESI", f"ESI {esi} beyond the code length {self.n_limit}")
        if len(self.symbols) < self.k or esi < self.k:
            self.symbols.setdefault(esi, symbol)
        return self.is_complete()

    def decode(self) -> list[bytes]:
        if not self.is_complete():
            raise ValueError("block not complete")
        e = self.symbol_length
        k = self.k
        if all(i in self.symbols for i in range(k)):
            out = [self.symbols[i].ljust(e, b"\0") for i in range(k)]
            return self._trim(out)
        # prefer source symbols, then the lowest repair ESIs
        esis = sorted(self.symbols, key=lambda j: (j >= k, j))[:k]
        data = _to_elements([self.symbols[j] for j in esis], e, self.m, self.byteorder)
        code = rs_code(self.m, k, self.matrix, self.base_k)
        src = code.decode(esis, data)
        out = _from_elements(src, e, self.byteorder)
        return self._trim(out)


def _to_elements(symbols: list[bytes], e: int, m: int, byteorder: str) -> npt.NDArray[np.integer]:
    width = e + (e & 1) if m == 16 else e
    buf = b"".join(s.ljust(width, b"\0") for s in symbols)
    if m == 8:
        return np.frombuffer(buf, dtype=np.uint8).reshape(len(symbols), width)
    dt = ">u2" if byteorder == "big" else "<u2"
    return np.frombuffer(buf, dtype=dt).astype(np.uint16).reshape(len(symbols), width // 2)


def _from_elements(arr: npt.NDArray[np.integer], e: int, byteorder: str) -> list[bytes]:
    if arr.dtype == np.uint8:
        return [bytes(row[:e]) for row in arr]
    dt = ">u2" if byteorder == "big" else "<u2"
    a = arr.astype(dt)
    return [a[i].tobytes()[:e] for i in range(a.shape[0])]


#: rs_matrix values: generator matrix, and the peer presets (matrix + short-block rule)
RS_MATRICES = ("rfc5510", "rizzo", "nrl", "flute")
_MATRIX_KIND = {"rfc5510": "rfc5510", "rizzo": "rizzo", "nrl": "rizzo", "flute": "rizzo"}


class ReedSolomon(FecScheme):
    """RS over GF(2^m): FEC Encoding ID 5 (m = 8), ID 2 (m = 8 or 16), ID 129 instance 0.

    ``rs_matrix`` selects the generator matrix (see :mod:`alc.fec.gf`):

    * ``"rfc5510"`` (default): RFC 5510 §8.2.1 text, evaluation points alpha^0, alpha^1, ...
    * ``"rizzo"``: Luigi Rizzo's fec.c, points 0, alpha^0, alpha^1, ...
    * ``"nrl"``: preset for NRL NORM = rizzo + ``rs_short_blocks="shortened"`` +
      little-endian GF(2^16) elements (verified on nrl-norm-rxloss10.pcap for m = 8).
    * ``"flute"``: preset for ypo/flute (PyPI flute-alc) = rizzo + ``"exact"`` (verified
      live against flute-alc 1.11 for IDs 5 and 129).

    ``rs16_byteorder`` maps two bytes to one GF(2^16) element: ``"big"`` (network order;
    default) or ``"little"`` (NRL's in-memory uint16 on x86; default for "nrl").

    ``rs_short_blocks`` says how a block with k < B source symbols is coded:
    ``"exact"`` (RFC 5510: a code built for k) or ``"shortened"`` (NRL NORM: the code for
    B with virtual zero source symbols k..B-1; repair ESI k+i is code position B+i).
    Default: "shortened" for rs_matrix="nrl", else "exact".
    """

    def __init__(
        self,
        oti: OTI,
        *,
        rs_matrix: str = "rfc5510",
        rs16_byteorder: str | None = None,
        rs_short_blocks: str | None = None,
    ) -> None:
        if rs_matrix not in RS_MATRICES:
            raise ValueError(f"unknown rs_matrix {rs_matrix!r}; one of {RS_MATRICES}")
        if rs_short_blocks is None:
            rs_short_blocks = "shortened" if rs_matrix == "nrl" else "exact"
        if rs_short_blocks not in ("exact", "shortened"):
            raise ValueError("rs_short_blocks must be 'exact' or 'shortened'")
        self.rs_short_blocks = rs_short_blocks
        self.encoding_id = oti.encoding_id
        self.m = oti.m if oti.encoding_id == 2 else 8
        if rs16_byteorder is None:
            rs16_byteorder = "little" if rs_matrix == "nrl" else "big"
        if rs16_byteorder not in ("big", "little"):
            raise ValueError("rs16_byteorder must be 'big' or 'little'")
        self.rs_matrix = rs_matrix
        self.matrix_kind = _MATRIX_KIND[rs_matrix]
        self.rs16_byteorder = rs16_byteorder
        self.payload_id_length = 8 if oti.encoding_id == 129 else 4
        self.n_limit = min(
            max_symbols(self.m, rs_matrix), 1 << (16 if oti.encoding_id == 129 else self.m)
        )
        super().__init__(oti)
        if self._blocks.max() > self.n_limit:
            raise DecodeError("Maximum-Source-Block-Length", "block longer than the code allows")

    # payload IDs ------------------------------------------------------------
    def encode_payload_id(self, sbn: int, esi: int, k: int | None = None) -> bytes:
        """FEC Payload ID; for ID 129 the source block length is ``k`` or, by default, the
        RFC 5052 §9.1 length of block ``sbn`` (ignored for IDs 2 and 5)."""
        if self.encoding_id == 129:
            if k is None:
                k = self._blocks[sbn] if 0 <= sbn < len(self._blocks) else 0
            if not (0 <= sbn < 1 << 32 and 0 <= esi < 1 << 16 and 0 <= k < 1 << 16):
                raise ValueError("SBN/ESI/k out of range")
            return struct.pack("!IHH", sbn, k, esi)
        m = self.m
        if not (0 <= sbn < 1 << (32 - m) and 0 <= esi < 1 << m):
            raise ValueError("SBN/ESI out of range")
        return struct.pack("!I", (sbn << m) | esi)

    def decode_payload_id(self, buf: bytes, offset: int = 0) -> tuple[int, int]:
        self._need(buf, offset)
        if self.encoding_id == 129:
            sbn, _k, esi = struct.unpack_from("!IHH", buf, offset)
            return sbn, esi
        (w,) = struct.unpack_from("!I", buf, offset)
        return w >> self.m, w & ((1 << self.m) - 1)

    def decode_payload_id_129(self, buf: bytes, offset: int = 0) -> tuple[int, int, int]:
        """ID 129 only: (sbn, source_block_length, esi)."""
        self._need(buf, offset)
        sbn, k, esi = struct.unpack_from("!IHH", buf, offset)
        return sbn, k, esi

    def max_encoding_symbols(self, sbn: int) -> int:
        """RFC 5510 §6.2 receiver n-algorithm: n = floor(k * max_n / B)."""
        k = self.block_length(sbn)
        o = self.oti
        if not o.max_encoding_symbols:
            return self.n_limit
        return min(self.n_limit, k * o.max_encoding_symbols // o.max_source_block_length)

    # coding ---------------------------------------------------------------
    def repair_symbols(
        self, sbn: int, source_symbols: list[bytes], count: int, first_esi: int | None = None
    ) -> list[tuple[int, bytes]]:
        k = len(source_symbols)
        if sbn < len(self._blocks) and k != self._blocks[sbn] and self.encoding_id != 129:
            raise ValueError(f"block {sbn} has {self._blocks[sbn]} source symbols, got {k}")
        if k == 0 or count <= 0:
            return []
        start = k if first_esi is None else first_esi
        esis = list(range(start, start + count))
        limit = min(self.n_limit, rs_code(self.m, k, self.matrix_kind, self._base_k(k)).esi_limit)
        if start < k or esis[-1] >= limit:
            raise ValueError(f"repair ESIs {start}..{esis[-1]} outside {k}..{limit - 1}")
        e = self.oti.symbol_length
        if any(len(s) > e for s in source_symbols):
            raise ValueError("source symbol longer than the symbol length")
        data = _to_elements(source_symbols, e, self.m, self.rs16_byteorder)
        code = rs_code(self.m, k, self.matrix_kind, self._base_k(k))
        par = code.encode(data, esis)
        return list(zip(esis, _from_elements(par, e, self.rs16_byteorder), strict=True))

    def block_decoder(self, sbn: int, k: int | None = None) -> BlockDecoder:
        """Decoder for block ``sbn``; ``k`` overrides the block length (ID 129 / NORM)."""
        if k is None:
            k = self.block_length(sbn)
            last = self.last_symbol_length(sbn)
        else:
            if not 0 < k <= self.n_limit:
                raise DecodeError("source block length", f"k={k} out of range")
            last = self.oti.symbol_length
            if sbn == len(self._blocks) - 1 and k == self._blocks[sbn]:
                last = self.last_symbol_length(sbn)
        return _RSDecoder(
            k,
            self.oti.symbol_length,
            last,
            self.m,
            self.matrix_kind,
            self.rs16_byteorder,
            self.n_limit,
            self._base_k(k),
        )

    def _base_k(self, k: int) -> int:
        if self.rs_short_blocks == "shortened":
            return max(k, self.oti.max_source_block_length)
        return k
