"""FEC Encoding ID 6: RaptorQ (RFC 6330) through the ``raptorq`` package (Rust crate binding).

The PyPI ``raptorq`` 2.x binding only exposes ``Encoder.with_defaults(data, mtu)`` and
``Decoder.with_defaults(transfer_length, mtu)``, whose OTI is derived by the crate
(``ObjectTransmissionInformation::generate_encoding_parameters``: Al = 8, 10 MiB decoder
memory).  We code each source block on its own as a one-block object of K*T bytes: RaptorQ
encodes a source block from K, T, N and Al only, so the symbols are those of RFC 6330 for the
real object whenever the crate picks the same N (always N = 1 for T >= 64 and blocks below
~7000 symbols).  Encoding symbols carry RFC 6330 ESIs (0..K-1 source, K.. repair), so any
RFC 6330 receiver decodes them.  Unsupported: T not a multiple of 8, T < 64, and OTIs whose
N differs from what the crate would choose (DecodeError at get_scheme).
"""

from __future__ import annotations

import dataclasses
import math
import struct

import raptorq

from alc.errors import DecodeError
from alc.fec.oti import OTI, RAPTORQ_MAX_K, Blocks, validate
from alc.fec.schemes import BlockDecoder, FecScheme

#: K' column of RFC 6330 Table 2 (§5.6).
K_PRIME = (
    10,
    12,
    18,
    20,
    26,
    30,
    32,
    36,
    42,
    46,
    48,
    49,
    55,
    60,
    62,
    69,
    75,
    84,
    88,
    91,
    95,
    97,
    101,
    114,
    119,
    125,
    127,
    138,
    140,
    149,
    153,
    160,
    166,
    168,
    179,
    181,
    185,
    187,
    200,
    213,
    217,
    225,
    236,
    242,
    248,
    257,
    263,
    269,
    280,
    295,
    301,
    305,
    324,
    337,
    341,
    347,
    355,
    362,
    368,
    372,
    380,
    385,
    393,
    405,
    418,
    428,
    434,
    447,
    453,
    466,
    478,
    486,
    491,
    497,
    511,
    526,
    532,
    542,
    549,
    557,
    563,
    573,
    580,
    588,
    594,
    600,
    606,
    619,
    633,
    640,
    648,
    666,
    675,
    685,
    693,
    703,
    718,
    728,
    736,
    747,
    759,
    778,
    792,
    802,
    811,
    821,
    835,
    845,
    860,
    870,
    891,
    903,
    913,
    926,
    938,
    950,
    963,
    977,
    989,
    1002,
    1020,
    1032,
    1050,
    1074,
    1085,
    1099,
    1111,
    1136,
    1152,
    1169,
    1183,
    1205,
    1220,
    1236,
    1255,
    1269,
    1285,
    1306,
    1347,
    1361,
    1389,
    1404,
    1420,
    1436,
    1461,
    1477,
    1502,
    1522,
    1539,
    1561,
    1579,
    1600,
    1616,
    1649,
    1673,
    1698,
    1716,
    1734,
    1759,
    1777,
    1800,
    1824,
    1844,
    1863,
    1887,
    1906,
    1926,
    1954,
    1979,
    2005,
    2040,
    2070,
    2103,
    2125,
    2152,
    2195,
    2217,
    2247,
    2278,
    2315,
    2339,
    2367,
    2392,
    2416,
    2447,
    2473,
    2502,
    2528,
    2565,
    2601,
    2640,
    2668,
    2701,
    2737,
    2772,
    2802,
    2831,
    2875,
    2906,
    2938,
    2979,
    3015,
    3056,
    3101,
    3151,
    3186,
    3224,
    3265,
    3299,
    3344,
    3387,
    3423,
    3466,
    3502,
    3539,
    3579,
    3616,
    3658,
    3697,
    3751,
    3792,
    3840,
    3883,
    3924,
    3970,
    4015,
    4069,
    4112,
    4165,
    4207,
    4252,
    4318,
    4365,
    4418,
    4468,
    4513,
    4567,
    4626,
    4681,
    4731,
    4780,
    4838,
    4901,
    4954,
    5008,
    5063,
    5116,
    5172,
    5225,
    5279,
    5334,
    5391,
    5449,
    5506,
    5566,
    5637,
    5694,
    5763,
    5823,
    5896,
    5975,
    6039,
    6102,
    6169,
    6233,
    6296,
    6363,
    6427,
    6518,
    6589,
    6655,
    6730,
    6799,
    6878,
    6956,
    7033,
    7108,
    7185,
    7281,
    7360,
    7445,
    7520,
    7596,
    7675,
    7770,
    7855,
    7935,
    8030,
    8111,
    8194,
    8290,
    8377,
    8474,
    8559,
    8654,
    8744,
    8837,
    8928,
    9019,
    9111,
    9206,
    9303,
    9400,
    9497,
    9601,
    9708,
    9813,
    9916,
    10017,
    10120,
    10241,
    10351,
    10458,
    10567,
    10676,
    10787,
    10899,
    11015,
    11130,
    11245,
    11358,
    11475,
    11590,
    11711,
    11829,
    11956,
    12087,
    12208,
    12333,
    12460,
    12593,
    12726,
    12857,
    13002,
    13143,
    13284,
    13417,
    13558,
    13695,
    13833,
    13974,
    14115,
    14272,
    14415,
    14560,
    14713,
    14862,
    15011,
    15170,
    15325,
    15496,
    15651,
    15808,
    15977,
    16161,
    16336,
    16505,
    16674,
    16851,
    17024,
    17195,
    17376,
    17559,
    17742,
    17929,
    18116,
    18309,
    18503,
    18694,
    18909,
    19126,
    19325,
    19539,
    19740,
    19939,
    20152,
    20355,
    20564,
    20778,
    20988,
    21199,
    21412,
    21629,
    21852,
    22073,
    22301,
    22536,
    22779,
    23010,
    23252,
    23491,
    23730,
    23971,
    24215,
    24476,
    24721,
    24976,
    25230,
    25493,
    25756,
    26022,
    26291,
    26566,
    26838,
    27111,
    27392,
    27682,
    27959,
    28248,
    28548,
    28845,
    29138,
    29434,
    29731,
    30037,
    30346,
    30654,
    30974,
    31285,
    31605,
    31948,
    32272,
    32601,
    32932,
    33282,
    33623,
    33961,
    34302,
    34654,
    35031,
    35395,
    35750,
    36112,
    36479,
    36849,
    37227,
    37606,
    37992,
    38385,
    38787,
    39176,
    39576,
    39980,
    40398,
    40816,
    41226,
    41641,
    42067,
    42490,
    42916,
    43388,
    43840,
    44279,
    44729,
    45183,
    45638,
    46104,
    46574,
    47047,
    47523,
    48007,
    48489,
    48976,
    49470,
    49978,
    50511,
    51017,
    51530,
    52062,
    52586,
    53114,
    53650,
    54188,
    54735,
    55289,
    55843,
    56403,
)

_MEMORY = 10 * 1024 * 1024  # decoder memory the crate's with_defaults() assumes
_AL = 8  # alignment the crate's with_defaults() uses
MAX_K = RAPTORQ_MAX_K


def _kl(t: int, n: int) -> int:
    x = math.ceil(t / (_AL * n))
    lim = int(_MEMORY / (_AL * x))
    for kp in reversed(K_PRIME):
        if kp <= lim:
            return kp
    raise DecodeError("EXT_FTI.T", f"symbol size {t} unsupported")


def default_parameters(transfer_length: int, symbol_length: int) -> tuple[int, int, int]:
    """(Z, N, Al) the raptorq crate derives for (F, T); T must be a multiple of 8, >= 64."""
    t = symbol_length
    kt = math.ceil(transfer_length / t)
    if kt == 0:  # an empty object: no source block (RFC 6330 §4.3, Z = ceil(Kt/KL) = 0)
        return 0, 1, _AL
    n_max = t // (8 * _AL)
    z = math.ceil(kt / _kl(t, n_max))
    n = 1
    for i in range(1, n_max + 1):
        n = i
        if math.ceil(kt / z) <= _kl(t, i):
            break
    return z, n, _AL


class _RQDecoder(BlockDecoder):
    def __init__(self, k: int, symbol_length: int, last_length: int) -> None:
        super().__init__(k, symbol_length, last_length)
        self._dec = raptorq.Decoder.with_defaults(k * symbol_length, symbol_length)
        self._result: bytes | None = None

    def is_complete(self) -> bool:
        return self._result is not None

    def add(self, esi: int, symbol: bytes) -> bool:
        symbol = self._check_symbol(esi, symbol)
        if esi >= 1 << 24:
            raise DecodeError("ESI", "above 24 bits")
        if self._result is not None or esi in self.symbols:
            return self._result is not None
        self.symbols[esi] = b""  # remember the ESI only; the crate keeps the data
        pkt = struct.pack("!I", esi) + symbol.ljust(self.symbol_length, b"\0")
        res = self._dec.decode(pkt)
        if res is not None:
            self._result = bytes(res)
        return self._result is not None

    def decode(self) -> list[bytes]:
        if self._result is None:
            raise ValueError("block not complete")
        t = self.symbol_length
        out = [self._result[i * t : (i + 1) * t] for i in range(self.k)]
        return self._trim(out)


class RaptorQ(FecScheme):
    """RFC 6330 RaptorQ: FEC Payload ID = SBN (8) | ESI (24)."""

    encoding_id = 6
    payload_id_length = 4

    def __init__(self, oti: OTI) -> None:
        validate(oti)
        t = oti.symbol_length
        if t < 64 or t % 8:
            raise DecodeError(
                "EXT_FTI.T", f"symbol size {t}: raptorq binding needs T % 8 == 0, T >= 64"
            )
        if oti.num_source_blocks == 0:  # sender: let the crate's defaults decide
            z, n, al = default_parameters(oti.transfer_length, t)
            oti = dataclasses.replace(oti, num_source_blocks=z, num_sub_blocks=n, alignment=al)
            validate(oti)
        kt = math.ceil(oti.transfer_length / t)
        z = oti.num_source_blocks
        if z <= 0 and kt:
            raise DecodeError("EXT_FTI.Z", f"Z={z} source blocks")
        # an empty object (F = 0) has no source block (Z = 0)
        oti = dataclasses.replace(oti, max_source_block_length=math.ceil(kt / z) if z else 0)
        self.oti = oti
        self._blocks = self._compute_block_lengths()
        for k in self._blocks.distinct():
            _zz, nn, _ = default_parameters(k * t, t)
            if nn != oti.num_sub_blocks or (nn > 1 and oti.alignment != _AL):
                raise DecodeError(
                    "EXT_FTI.N",
                    f"N={oti.num_sub_blocks}, Al={oti.alignment} unsupported by the raptorq binding",
                )

    def _compute_block_lengths(self) -> Blocks:
        o = self.oti
        if o.transfer_length == 0:
            return Blocks(0, 0)
        # RFC 6330 §4.4.1.2: Partition[Kt, Z]
        return Blocks(math.ceil(o.transfer_length / o.symbol_length), o.num_source_blocks)

    def encode_payload_id(self, sbn: int, esi: int) -> bytes:
        if not (0 <= sbn < 256 and 0 <= esi < 1 << 24):
            raise ValueError("SBN/ESI out of range")
        return struct.pack("!I", (sbn << 24) | esi)

    def decode_payload_id(self, buf: bytes, offset: int = 0) -> tuple[int, int]:
        self._need(buf, offset)
        (w,) = struct.unpack_from("!I", buf, offset)
        return w >> 24, w & 0xFFFFFF

    def max_encoding_symbols(self, sbn: int) -> int:
        return 1 << 24

    def repair_symbols(
        self, sbn: int, source_symbols: list[bytes], count: int, first_esi: int | None = None
    ) -> list[tuple[int, bytes]]:
        k = len(source_symbols)
        if k == 0 or count <= 0:
            return []
        t = self.oti.symbol_length
        if any(len(s) > t for s in source_symbols):
            raise ValueError("source symbol longer than T")
        start = k if first_esi is None else first_esi
        if start < k or start + count > 1 << 24:
            raise ValueError("repair ESIs out of range")
        data = b"".join(s.ljust(t, b"\0") for s in source_symbols)
        enc = raptorq.Encoder.with_defaults(data, t)
        out = []
        for pkt in enc.get_encoded_packets(start - k + count):
            pkt = bytes(pkt)
            esi = int.from_bytes(pkt[1:4], "big")
            if esi >= start:
                out.append((esi, pkt[4:]))
        return out

    def block_decoder(self, sbn: int) -> BlockDecoder:
        return _RQDecoder(
            self.block_length(sbn), self.oti.symbol_length, self.last_symbol_length(sbn)
        )
