"""NORM quantized header fields and the RFC 5401 random back-off.

* GRTT / RTT (8 bits): RFC 5401 §3.7.4 (used by RFC 5740 §4.2.1 ``grtt``, ``cc_rtt``).
* backoff factor (4 bits) and group size (4 bits): RFC 5740 §4.2.1.
* rate (16 bits, bytes/s): RFC 5740 §4.2.3.4 (EXT_RATE ``send_rate``, ``cc_rate``).
* loss (16 bits): RFC 5740 §4.2.3.5 (EXT_CC ``cc_loss``); NRL's 32-bit extension uses
  ``cc_reserved`` for the low 16 bits.

Every ``quantize_*`` function is the exact inverse of its ``unquantize_*`` on the codes a
conforming encoder produces: ``quantize_x(unquantize_x(q)) == q`` (for the rate, on the
canonical codes, i.e. mantissa >= 1.0 or exponent 0; see :func:`rate_code_is_canonical`).
"""

from __future__ import annotations

import math
import random

RTT_MIN = 1.0e-6
RTT_MAX = 1000.0

# --------------------------------------------------------------------------- GRTT / RTT


def unquantize_rtt(q: int) -> float:
    """RFC 5401 §3.7.4 UnquantizeRtt (q <= 31 linear; NRL's table uses q < 31)."""
    if not 0 <= q <= 255:
        raise ValueError(f"rtt code out of range: {q}")
    if q <= 31:
        return (q + 1) * RTT_MIN
    return RTT_MAX / math.exp((255 - q) / 13.0)


_RTT_TABLE = [unquantize_rtt(q) for q in range(256)]


def quantize_rtt(rtt: float) -> int:
    """RFC 5401 §3.7.4 QuantizeGrtt: rounds down below 33 µs, up (conservatively) above."""
    if rtt != rtt:  # NaN
        rtt = RTT_MAX
    rtt = min(max(rtt, RTT_MIN), RTT_MAX)
    if rtt < 33 * RTT_MIN:
        # int() truncation of the RFC, made robust against (q+1)*1e-6/1e-6 = q+0.999..
        return min(31, max(0, int(rtt / RTT_MIN + 1e-9) - 1))
    q = math.ceil(255.0 - 13.0 * math.log(RTT_MAX / rtt) - 1e-9)
    q = min(255, max(32, q))
    # guard the float ceil: smallest q >= 32 whose value is >= rtt (within 1 ulp-ish)
    while q < 255 and _RTT_TABLE[q] < rtt * (1 - 1e-12):
        q += 1
    while q > 32 and _RTT_TABLE[q - 1] >= rtt * (1 - 1e-12):
        q -= 1
    return q


# --------------------------------------------------------------------------- backoff / gsize


def quantize_backoff(k: float) -> int:
    """Back-off factor K (RFC 5740 §4.2.1): an integer 0..15 (rounded up, clamped)."""
    return min(15, max(0, math.ceil(k)))


def unquantize_backoff(q: int) -> int:
    if not 0 <= q <= 15:
        raise ValueError(f"backoff code out of range: {q}")
    return q


def unquantize_gsize(q: int) -> int:
    """RFC 5740 §4.2.1: bit 3 mantissa (0 -> 1, 1 -> 5), bits 0-2 exponent - 1."""
    if not 0 <= q <= 15:
        raise ValueError(f"gsize code out of range: {q}")
    return (5 if q & 0x8 else 1) * 10 ** ((q & 0x7) + 1)


_GSIZE_SORTED = sorted((unquantize_gsize(q), q) for q in range(16))


def quantize_gsize(n: float) -> int:
    """Smallest advertised group size >= n (overestimating is allowed; NRL rounds up too)."""
    for value, q in _GSIZE_SORTED:
        if value >= n:
            return q
    return 0xF


# --------------------------------------------------------------------------- rate


def unquantize_rate(q: int) -> float:
    """RFC 5740 §4.2.3.4: 12-bit mantissa (x 10/4096), 4-bit base-10 exponent; bytes/s."""
    if not 0 <= q <= 0xFFFF:
        raise ValueError(f"rate code out of range: {q}")
    return (q >> 4) * (10.0 / 4096.0) * (10.0 ** (q & 0xF))


def quantize_rate(rate: float) -> int:
    """RFC 5740 §4.2.3.4 quantization (NRL NormQuantizeRate); rate <= 0 -> 0x0001 (NRL)."""
    if not rate > 0.0:
        return 0x0001
    e = int(math.log10(rate))
    e = min(15, max(0, e))
    m = int((4096.0 / 10.0) * rate / 10.0**e + 0.5)
    if m > 4095:
        if e < 15:
            e += 1
            m = int((4096.0 / 10.0) * rate / 10.0**e + 0.5)
        m = min(m, 4095)
    return (m << 4) | e


def rate_code_is_canonical(q: int) -> bool:
    """True for codes :func:`quantize_rate` can produce (mantissa >= 1.0 unless E = 0)."""
    m, e = q >> 4, q & 0xF
    if m == 0:
        return q == 0x0001  # every zero rate quantizes to NRL's 0x0001
    return e == 0 or m >= 410


# --------------------------------------------------------------------------- loss


def quantize_loss(p: float) -> int:
    """RFC 5740 §4.2.3.5: floor(p * 65535) (clamped to 0..1)."""
    p = min(1.0, max(0.0, p)) if p == p else 0.0
    return min(0xFFFF, int(math.floor(p * 65535.0 + 1e-7)))


def quantize_loss_nrl(p: float) -> int:
    """NRL deviation: rounds (p * 65535 + 0.5)."""
    p = min(1.0, max(0.0, p)) if p == p else 0.0
    return min(0xFFFF, int(p * 65535.0 + 0.5))


def unquantize_loss(q: int) -> float:
    if not 0 <= q <= 0xFFFF:
        raise ValueError(f"loss code out of range: {q}")
    return q / 65535.0


def quantize_loss32(p: float) -> tuple[int, int]:
    """NRL extended precision: (cc_loss, cc_reserved) = high and low 16 bits of p*2^32-1."""
    p = min(1.0, max(0.0, p)) if p == p else 0.0
    v = min(0xFFFFFFFF, int(p * 4294967295.0 + 0.5))
    return v >> 16, v & 0xFFFF


def unquantize_loss32(cc_loss: int, cc_reserved: int) -> float:
    return ((cc_loss << 16) | cc_reserved) / 4294967295.0


# --------------------------------------------------------------------------- timers


def random_backoff(max_time: float, group_size: float, rng: random.Random) -> float:
    """RFC 5401 §3.2.2 / RFC 5740 §5.3 truncated exponential back-off on [0, max_time].

    ``rng`` is passed in (seeded by the caller) so engines stay deterministic.
    """
    if max_time <= 0.0:
        return 0.0
    lam = math.log(max(group_size, 1.0)) + 1.0
    e_lam = math.expm1(lam)  # exp(lam) - 1
    x = rng.uniform(0.0, lam / max_time) + lam / (max_time * e_lam)
    t = (max_time / lam) * math.log(x * e_lam * (max_time / lam))
    return min(max_time, max(0.0, t))


def time_to_sec_usec(t: float) -> tuple[int, int]:
    """Split POSIX seconds into the (sec, usec) pair NORM carries (send_time, grtt_response)."""
    sec = int(t)
    usec = int(round((t - sec) * 1e6))
    if usec >= 1_000_000:
        sec += 1
        usec -= 1_000_000
    return sec & 0xFFFFFFFF, usec


def sec_usec_to_time(sec: int, usec: int) -> float:
    return sec + usec * 1e-6
