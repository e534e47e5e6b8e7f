"""POSIX seconds <-> 64-bit NTP timestamps (RFC 5905 §6), exact integer arithmetic.

Internally the library represents an NTP time as an *unbounded* non-negative integer
in units of 2^-32 s since 1900-01-01 00:00:00 UTC (era 0 starts there), i.e.
``era * 2**64 + wire_value``.  Only the wire codec reduces it to 64 bits
(:func:`ntp_to_wire`); :func:`ntp_from_wire` picks the era that puts a 64-bit wire
value closest to a reference time (RFC 5905 era convention; RFC 5776 is silent on
the 2036 wrap, see docs/tesla-choices.md).

Conversions are exact: a float is a dyadic rational, so ``posix_to_ntp`` rounds the
exact value to the nearest 2^-32 s (ties to even), and ``ntp_to_posix`` returns the
float nearest to the exact NTP value.  For POSIX times of this century the float
resolution (~2^-22 s) is coarser than NTP's, so ``ntp_to_posix(posix_to_ntp(x)) == x``.
"""

from __future__ import annotations

from fractions import Fraction

from alc.errors import DecodeError

NTP_UNIX_EPOCH_OFFSET = 2_208_988_800
"""Seconds from 1900-01-01 (NTP era 0) to 1970-01-01 (POSIX epoch)."""

NTP_FRACTION_BITS = 32
NTP_ONE_SECOND = 1 << NTP_FRACTION_BITS
NTP_ERA = 1 << 64
NTP_WIRE_MASK = NTP_ERA - 1


def posix_to_ntp(t: float | int | Fraction) -> int:
    """POSIX seconds -> NTP time (unbounded int, units of 2^-32 s), rounded to nearest."""
    if isinstance(t, int):
        return (t + NTP_UNIX_EPOCH_OFFSET) << NTP_FRACTION_BITS
    num, den = t.as_integer_ratio()
    num += NTP_UNIX_EPOCH_OFFSET * den
    # round(num * 2^32 / den), ties to even
    q, r = divmod(num << NTP_FRACTION_BITS, den)
    twice = 2 * r
    if twice > den or (twice == den and q & 1):
        q += 1
    if q < 0:
        raise ValueError("time before the NTP prime epoch (1900)")
    return q


def ntp_to_posix(ntp: int) -> float:
    """NTP time (unbounded int) -> POSIX seconds, correctly rounded float."""
    return float(Fraction(ntp - (NTP_UNIX_EPOCH_OFFSET << NTP_FRACTION_BITS), NTP_ONE_SECOND))


def ntp_to_posix_exact(ntp: int) -> Fraction:
    return Fraction(ntp - (NTP_UNIX_EPOCH_OFFSET << NTP_FRACTION_BITS), NTP_ONE_SECOND)


def ms_to_ntp_units(ms: int) -> Fraction:
    """Milliseconds as an exact count of 2^-32 s units."""
    return Fraction(ms * NTP_ONE_SECOND, 1000)


def seconds_to_ntp_delta(seconds: float | int) -> int:
    """A signed duration in seconds -> signed count of 2^-32 s units (nearest)."""
    num, den = seconds.as_integer_ratio()
    q, r = divmod(num << NTP_FRACTION_BITS, den)
    twice = 2 * r
    if twice > den or (twice == den and q & 1):
        q += 1
    return q


def ntp_delta_to_seconds(delta: int) -> float:
    return float(Fraction(delta, NTP_ONE_SECOND))


def ntp_to_wire(ntp: int) -> int:
    """Reduce to the 64-bit on-the-wire NTP timestamp (era dropped)."""
    return ntp & NTP_WIRE_MASK


def ntp_from_wire(wire: int, reference: int) -> int:
    """Expand a 64-bit wire timestamp to the era closest to ``reference`` (RFC 5905)."""
    if not 0 <= wire <= NTP_WIRE_MASK:
        raise DecodeError("NTP timestamp", "must be a 64-bit unsigned integer")
    base = reference - (reference & NTP_WIRE_MASK)
    best = base + wire
    for cand in (best - NTP_ERA, best + NTP_ERA):
        if cand >= 0 and abs(cand - reference) < abs(best - reference):
            best = cand
    return best


def ntp_to_bytes(ntp: int) -> bytes:
    return ntp_to_wire(ntp).to_bytes(8, "big")


def ntp_from_bytes(buf: bytes, reference: int | None = None) -> int:
    """8 bytes (big-endian) -> NTP time; with ``reference`` the era is resolved."""
    if len(buf) != 8:
        raise DecodeError("NTP timestamp", f"must be 8 bytes, got {len(buf)}")
    wire = int.from_bytes(buf, "big")
    return wire if reference is None else ntp_from_wire(wire, reference)
