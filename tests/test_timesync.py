"""Time math: NTP conversions, safe-packet test boundaries, D_t (direct and indirect),
the 32-bit wrap at the receiver, and the D^O_t field."""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tesla.core.ntp import (
    NTP_ERA,
    NTP_ONE_SECOND,
    ntp_from_bytes,
    ntp_from_wire,
    ntp_to_bytes,
    ntp_to_posix,
    ntp_to_wire,
    posix_to_ntp,
)
from tesla.core.params import INTERVAL_INDEX_MODULUS, TeslaParams
from tesla.core.timesync import (
    DirectSyncClient,
    DirectSyncServer,
    Safety,
    classify,
    direct_dt,
    dot_from_field,
    dot_to_field,
    highest_interval,
    indirect_dt,
    indirect_dt_from_ms,
    is_safe,
    ms_to_ntp_delta,
    ntp_example_dt,
    safe_deadline,
)

S = NTP_ONE_SECOND


@given(st.floats(min_value=0, max_value=4e9, allow_nan=False))
def test_posix_ntp_round_trip(x: float) -> None:
    n = posix_to_ntp(x)
    assert abs(Fraction(n, S) - (Fraction(x) + 2208988800)) <= Fraction(1, 2 * S)
    if x >= 2**20:  # float ulp >= 2^-32 s from 2^20 s on (all real times): exact round trip
        assert ntp_to_posix(n) == x


def test_ntp_known_points_and_era() -> None:
    assert posix_to_ntp(0) == 2208988800 * S
    assert posix_to_ntp(0.5) == 2208988800 * S + S // 2
    era1 = posix_to_ntp(2_085_978_496)  # 2036-02-07 06:28:16 UTC = NTP era 1 start
    assert era1 == NTP_ERA
    assert ntp_to_wire(era1 + 5) == 5
    ref = posix_to_ntp(2_085_978_490)
    assert ntp_from_wire(5, ref) == NTP_ERA + 5
    assert ntp_from_wire(NTP_ERA - 5, ref) == NTP_ERA - 5
    assert ntp_from_bytes(ntp_to_bytes(era1 + 7), ref) == era1 + 7


def test_safe_test_digest_example() -> None:
    # T_int = 1000 ms, d = 2, i = 5: safe for x = 6.999 s, unsafe for x = 7.000 s
    t0 = posix_to_ntp(1_800_000_000)
    p = TeslaParams(t0_ntp=t0, tint_ms=1000, n_chain=100, d=2)
    assert is_safe(t0 + 6999 * S // 1000, 0, 5, p)
    assert not is_safe(t0 + 7 * S, 0, 5, p)
    assert not is_safe(t0 + 7 * S - 1, 1, 5, p)  # D_t pushes it over
    assert is_safe(t0 + 7 * S - 2, 1, 5, p)
    assert highest_interval(t0 + 7 * S, 0, p) == 7
    # i + d, not i + d - 1 (RFC 5776 §4.3 step 2: highest_i < i + d)
    assert is_safe(t0 + 6 * S, 0, 5, p)


@given(
    tint=st.integers(1, 65535),
    d=st.integers(2, 255),
    i=st.integers(0, 2**32 - 1),
    d_t=st.integers(0, 10 * S),
    delta=st.integers(-3, 3),
)
def test_safe_deadline_is_the_boundary(tint: int, d: int, i: int, d_t: int, delta: int) -> None:
    p = TeslaParams(t0_ntp=10 * S, tint_ms=tint, n_chain=10, d=d)
    edge = safe_deadline(i, d_t, p)
    arr = edge + delta
    assert is_safe(arr, d_t, i, p) == (arr < edge)
    # the RFC inequality, recomputed with fractions
    x = Fraction(arr + d_t - p.t0_ntp, S)
    assert is_safe(arr, d_t, i, p) == (x < Fraction((i + d) * tint, 1000))


def test_classify_future_interval() -> None:
    p = TeslaParams(t0_ntp=0, tint_ms=100, n_chain=100, d=3)
    now = 50 * S // 10  # interval 50
    assert classify(now, 0, 50, p) is Safety.SAFE
    assert classify(now, 0, 48, p) is Safety.SAFE
    assert classify(now, 0, 47, p) is Safety.UNSAFE
    assert classify(now, 0, 51, p) is Safety.FUTURE


def test_wrap_receiver_side_everything_unsafe() -> None:
    p = TeslaParams(t0_ntp=0, tint_ms=1, n_chain=100, d=2)
    late = p.interval_start(INTERVAL_INDEX_MODULUS + 2)
    for i in (0, 1, INTERVAL_INDEX_MODULUS - 1):
        assert not is_safe(late, 0, i, p)


def test_direct_sync_dt_and_checks() -> None:
    c = DirectSyncClient(s_sr=S // 100, max_pending=2)
    assert not c.has_pending()
    t_r = c.make_request(1000 * S)
    t_s = 1000 * S + S // 2  # sender clock 0.5 s ahead (incl. one-way delay)
    assert c.on_response(t_s, t_r + 1, True) is None  # no such request
    assert c.on_response(t_s, t_r, False) is None  # bad signature
    assert c.on_response(t_s, t_r, True) == t_s - t_r + S // 100
    assert c.on_response(t_s, t_r, True) is None  # replay: t_r consumed
    assert direct_dt(t_s, t_r, 0) == S // 2
    a, b, e = c.make_request(1), c.make_request(1), c.make_request(1)
    assert len({a, b, e}) == 3 and not c.is_pending(a) and c.is_pending(e)  # bounded


def test_direct_sync_server_rules() -> None:
    g = DirectSyncServer(group_mac=True)
    assert g.respond("r1", 100, 5) == (5, 100)
    assert g.respond("r1", 100, 6) is None  # not strictly greater
    assert g.respond("r1", 99, 6) is None
    assert g.respond("r2", 100, 6) == (6, 100)
    r = DirectSyncServer(group_mac=False, max_per_second=2)
    assert [r.respond(None, k, 0) is not None for k in range(3)] == [True, True, False]
    assert r.respond(None, 9, S) is not None  # tokens refill


def test_indirect_dt() -> None:
    assert indirect_dt(3, 4, 5) == 12
    assert ms_to_ntp_delta(1000) == S
    assert ms_to_ntp_delta(1) == -(-S // 1000)  # rounded up
    assert ms_to_ntp_delta(0.5) * 2000 >= S
    assert indirect_dt_from_ms(250, d_o_t=S) == S + S // 4
    assert ntp_example_dt(10) == ms_to_ntp_delta(20)
    with pytest.raises(ValueError):
        indirect_dt_from_ms(-1)


@given(st.integers(-(2**63) + 1, 2**63 - 1))
def test_dot_field_round_trip(v: int) -> None:
    f = dot_to_field(v)
    assert 0 <= f < 2**64
    assert dot_from_field(f) == v
    assert bool(f >> 63) == (v >= 0)


@given(st.binary(max_size=12), st.integers(0, 2**70))
def test_ntp_from_bytes_raises_only_decode_error(buf: bytes, ref: int) -> None:
    from alc.errors import DecodeError

    try:
        v = ntp_from_bytes(buf, ref)
    except DecodeError:
        assert len(buf) != 8
    else:
        assert len(buf) == 8 and ntp_to_wire(v) == int.from_bytes(buf, "big")
