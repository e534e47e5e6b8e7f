"""Time synchronization and the safe-packet test (RFC 5776 §2.3, §2.4, §4.2.2, §4.3;
RFC 4082 §3.3.1).

All times are NTP times as unbounded integers in 2^-32 s units (:mod:`tesla.core.ntp`) and
all bounds (D_t, S_sr, D^O_t, D^R_t, D_err) are integer counts of 2^-32 s, so the
interval arithmetic is exact.  D_t is the upper bound such that at any moment
``T_sender < T_receiver + D_t`` (RFC 5776 §2.4.1).
"""

from __future__ import annotations

import enum
from collections import OrderedDict

from tesla.core.ntp import NTP_ONE_SECOND, seconds_to_ntp_delta
from tesla.core.params import TeslaParams

#: DIGEST CHOICE (RFC silent): also reject a tag whose interval index is above the
#: highest interval the sender can have reached (certainly forged; bounds key walks).
REJECT_FUTURE_INTERVAL = True
#: RFC 5776 §2.4.2.2 NTP example: D_t = security_factor * (1 ms + 1 ms)
NTP_EXAMPLE_BOUND_MS = 2
DEFAULT_NTP_SECURITY_FACTOR = 10
#: pending direct-sync requests a receiver remembers (oldest forgotten first)
DEFAULT_MAX_PENDING_REQUESTS = 8
#: D^O_t field: P (1 = positive) + 63-bit magnitude (31-bit seconds, 32-bit fraction)
DOT_SIGN_BIT = 1 << 63
DOT_MAGNITUDE_MASK = DOT_SIGN_BIT - 1


def ms_to_ntp_delta(ms: float | int) -> int:
    """Milliseconds -> 2^-32 s units, rounded UP (a bound must never shrink)."""
    if isinstance(ms, int):
        return -((-ms * NTP_ONE_SECOND) // 1000)
    num, den = ms.as_integer_ratio()
    return -((-num * NTP_ONE_SECOND) // (den * 1000))


# ---- safe-packet test ------------------------------------------------------------------


def highest_interval(arrival_ntp: int, d_t: int, params: TeslaParams) -> int:
    """highest_i = floor((T + D_t - T0) / T_int) (RFC 5776 §4.3 step 2)."""
    return params.interval_of(arrival_ntp + d_t)


def is_safe(arrival_ntp: int, d_t: int, i_packet: int, params: TeslaParams) -> bool:
    """RFC 5776 §4.3 step 2: safe iff floor((T + D_t - T0)/T_int) < i + d.

    ``arrival_ntp`` = local arrival time T, ``d_t`` in 2^-32 s units, ``i_packet`` = the
    tag's interval index.  Equivalent to T + D_t < T0 + (i + d) * T_int.
    """
    return params.interval_of(arrival_ntp + d_t) < i_packet + params.d


class Safety(enum.Enum):
    SAFE = "safe"
    UNSAFE = "unsafe"  # K_i may already be disclosed: MUST discard
    FUTURE = "future"  # i > highest_i: the sender cannot be in interval i yet


def classify(arrival_ntp: int, d_t: int, i_packet: int, params: TeslaParams) -> Safety:
    """The safe-packet test plus the future-interval check (:data:`REJECT_FUTURE_INTERVAL`)."""
    hi = params.interval_of(arrival_ntp + d_t)
    if hi >= i_packet + params.d:
        return Safety.UNSAFE
    if REJECT_FUTURE_INTERVAL and i_packet > hi:
        return Safety.FUTURE
    return Safety.SAFE


def safe_deadline(i_packet: int, d_t: int, params: TeslaParams) -> int:
    """Latest local arrival time (exclusive) at which a packet of interval i is safe:
    T < T0 + (i+d)*T_int - D_t, expressed as the first unsafe NTP time."""
    return params.interval_start(i_packet + params.d) - d_t


# ---- indirect synchronization (RFC 5776 §2.4.2) ---------------------------------------


def indirect_dt(d_o_t: int, d_r_t: int, d_err: int = 0) -> int:
    """D_t = D^O_t + D^R_t (+ D_err with several references), 2^-32 s units.

    Sign convention (docs/tesla-choices.md): D^O_t >= sender clock - reference,
    D^R_t >= reference - receiver clock, so the sum bounds sender - receiver.
    """
    return d_o_t + d_r_t + d_err


def indirect_dt_from_ms(max_clock_error_ms: float, d_o_t: int = 0, d_err_ms: float = 0) -> int:
    """D_t for a receiver configured with a bound on its own clock error (e.g. from
    NTP), plus the sender's advertised D^O_t (bootstrap A=1) and D_err."""
    if max_clock_error_ms < 0 or d_err_ms < 0:
        raise ValueError("clock error bounds must be >= 0")
    return indirect_dt(d_o_t, ms_to_ntp_delta(max_clock_error_ms), ms_to_ntp_delta(d_err_ms))


def ntp_example_dt(security_factor: float = DEFAULT_NTP_SECURITY_FACTOR) -> int:
    """RFC 5776 §2.4.2.2: D_t = security_factor * (1 ms + 1 ms)."""
    return ms_to_ntp_delta(security_factor * NTP_EXAMPLE_BOUND_MS)


def dot_to_field(d_o_t: int) -> int:
    """Signed D^O_t (2^-32 s units) -> 64-bit P|magnitude field (P = 1: positive)."""
    mag = abs(d_o_t)
    if mag > DOT_MAGNITUDE_MASK:
        raise ValueError("D^O_t magnitude exceeds 31-bit seconds")
    return (DOT_SIGN_BIT if d_o_t >= 0 else 0) | mag


def dot_from_field(value: int) -> int:
    """64-bit P|magnitude field -> signed D^O_t (2^-32 s units)."""
    mag = value & DOT_MAGNITUDE_MASK
    return mag if value & DOT_SIGN_BIT else -mag


# ---- direct synchronization (RFC 5776 §2.4.1, §3.4.2, §4.2.2.1; RFC 4082 §3.3.1) -------


def direct_dt(t_s: int, t_r: int, s_sr: int = 0) -> int:
    """D_t = t_s - t_r + S_sr (NTP times / bound in 2^-32 s units)."""
    return t_s - t_r + s_sr


class DirectSyncClient:
    """Receiver side: makes Type 5 request contents (t_r) and checks Type 6 responses.

    ``s_sr`` = configured bound on the sender/receiver clock drift over the session
    (RFC 5776 leaves its estimation open).  A response is accepted only if its t_r
    matches a pending request (each t_r usable once) and its signature verified.
    """

    def __init__(self, s_sr: int = 0, max_pending: int = DEFAULT_MAX_PENDING_REQUESTS) -> None:
        self.s_sr = s_sr
        self.max_pending = max(1, max_pending)
        self._pending: OrderedDict[int, None] = OrderedDict()
        self.d_t: int | None = None

    def make_request(self, now_ntp: int) -> int:
        """t_r for a new request (the receiver's local time when sending)."""
        t_r = now_ntp
        while t_r in self._pending:  # keep t_r unique
            t_r += 1
        self._pending[t_r] = None
        while len(self._pending) > self.max_pending:
            self._pending.popitem(last=False)
        return t_r

    def has_pending(self) -> bool:
        return bool(self._pending)

    def is_pending(self, t_r: int) -> bool:
        return t_r in self._pending

    def on_response(self, t_s: int, t_r: int, signature_ok: bool) -> int | None:
        """Process a response's (t_s, t_r); returns the new D_t or None (dropped).

        Call after the Group MAC check; ``signature_ok`` is the signature verdict.
        """
        if t_r not in self._pending or not signature_ok:
            return None
        del self._pending[t_r]
        d_t = direct_dt(t_s, t_r, self.s_sr)
        # several exchanges: any of them is a valid bound; keep the tightest
        self.d_t = d_t if self.d_t is None else min(self.d_t, d_t)
        return self.d_t


class DirectSyncServer:
    """Sender side: response contents (t_s, t_r) with the RFC 5776 §6.2.1 replay/DoS
    rules: with Group MAC, answer a receiver only if t_r is strictly greater than its
    last one; without, cap the number of answers per second (token bucket)."""

    def __init__(self, group_mac: bool, max_per_second: float = 50.0) -> None:
        self.group_mac = group_mac
        self.max_per_second = max_per_second
        self._last_tr: dict[object, int] = {}
        self._tokens = max_per_second
        self._last_ntp: int | None = None

    def respond(self, receiver_id: object, t_r: int, now_ntp: int) -> tuple[int, int] | None:
        """(t_s, t_r) to sign and send, or None when the request must be dropped."""
        if self.group_mac:
            last = self._last_tr.get(receiver_id)
            if last is not None and t_r <= last:
                return None
            self._last_tr[receiver_id] = t_r
        else:
            if self._last_ntp is not None:
                elapsed = max(0, now_ntp - self._last_ntp) / NTP_ONE_SECOND
                self._tokens = min(
                    self.max_per_second, self._tokens + elapsed * self.max_per_second
                )
            self._last_ntp = now_ntp
            if self._tokens < 1:
                return None
            self._tokens -= 1
        return now_ntp, t_r


__all__ = [
    "DirectSyncClient",
    "DirectSyncServer",
    "Safety",
    "classify",
    "direct_dt",
    "dot_from_field",
    "dot_to_field",
    "highest_interval",
    "indirect_dt",
    "indirect_dt_from_ms",
    "is_safe",
    "ms_to_ntp_delta",
    "ntp_example_dt",
    "safe_deadline",
    "seconds_to_ntp_delta",
]
