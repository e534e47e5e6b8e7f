"""Key chains: storage strategies equal FullChain, fractal bounds, receiver key
verification (wrong key, walk bound, chain boundary), several chains, parameters."""

from __future__ import annotations

import hashlib
import hmac
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tesla.core.keychain import (
    CheckpointChain,
    FractalChain,
    FullChain,
    KeyChainSet,
    KeyStatus,
    KeyVerifier,
    KeyVerifierSet,
    generate_chain,
)
from tesla.core.params import (
    INTERVAL_INDEX_MODULUS,
    PRF_KEY_LEN,
    ParamError,
    TeslaParams,
)


def ind_F(k: bytes) -> bytes:  # noqa: N802 - independent SHA-256 F
    return hmac.new(k, b"\x00", hashlib.sha256).digest()


# ------------------------------------------------------------------ storage strategies


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 700),
    prf_id=st.sampled_from([0, 2, 4]),
    d=st.integers(2, 9),
    seed=st.binary(min_size=8, max_size=8),
)
def test_strategies_equal_full_chain_sender_pattern(
    n: int, prf_id: int, d: int, seed: bytes
) -> None:
    pk = hashlib.sha512(seed).digest()[: PRF_KEY_LEN[prf_id]]
    full = FullChain(pk, n, prf_id)
    stores = [CheckpointChain(pk, n, prf_id), FractalChain(pk, n, prf_id)]
    for s in stores:
        assert s.commitment == full.commitment
    # the sender's access pattern: K_i then K_{i-d}, i increasing, plus K_N (Type 4)
    for i in range(n + 1):
        for s in stores:
            assert s.key(i) == full.keys[i]
            if i >= d:
                assert s.key(i - d) == full.keys[i - d]
            assert s.key(n) == full.keys[n]


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 400), data=st.data())
def test_strategies_equal_full_chain_skipping(n: int, data: st.DataObject) -> None:
    pk = os.urandom(32)
    full = FullChain(pk, n)
    frac = FractalChain(pk, n)
    cp = CheckpointChain(pk, n, spacing=data.draw(st.integers(1, 40)))
    idx = sorted(data.draw(st.lists(st.integers(0, n), max_size=30)))
    for i in idx:
        assert frac.key(i) == full.keys[i]
        assert cp.key(i) == full.keys[i]
    # checkpoint chains allow any order
    for i in data.draw(st.lists(st.integers(0, n), max_size=10)):
        assert cp.key(i) == full.keys[i]


def test_generate_chain_matches_independent() -> None:
    pk = bytes(range(32))
    keys = generate_chain(pk, 50)
    assert keys[-1] == pk
    for t in range(50, 0, -1):
        assert ind_F(keys[t]) == keys[t - 1]


@pytest.mark.parametrize("prf_id", [0, 1, 2, 3, 4])
@pytest.mark.parametrize("n", [1, 2, 7, 101])
def test_native_chain_walk_equals_the_python_walk(prf_id: int, n: int) -> None:
    """The native kernel's chain walk (generate_chain, CheckpointChain) gives the keys
    and commitment of the Python loop, for every PRF hash and chain length; with the
    kernel off (TESLA_MAC_KERNEL=0, or none built) the Python loop runs."""
    from tesla.mac import kernel as mk

    size = {0: 20, 1: 28, 2: 32, 3: 48, 4: 64}[prf_id]
    pk = os.urandom(size)
    mk.set_enabled(False)
    try:
        want = generate_chain(pk, n, prf_id)
        want_cp = CheckpointChain(pk, n, prf_id, spacing=3)
    finally:
        mk.set_enabled(True)
    assert mk.chain_walk(prf_id, pk, n, b"\x00") is not None or mk._load().get("error")
    got = generate_chain(pk, n, prf_id)
    got_cp = CheckpointChain(pk, n, prf_id, spacing=3)
    assert got == want and len(got) == n + 1 and got[-1] == pk
    assert got_cp.checkpoints == want_cp.checkpoints and got_cp.commitment == want_cp.commitment
    assert [got_cp.key(t) for t in range(n + 1)] == want


@pytest.mark.parametrize("n", [1, 2, 3, 1023, 1024, 5000])
def test_fractal_worst_case_and_storage(n: int) -> None:
    fr = FractalChain(os.urandom(32), n, lookback=0)
    levels = max(1, n.bit_length())
    worst = 0
    for t in range(n + 1):
        c0 = fr.calls
        fr.key(t)
        worst = max(worst, fr.calls - c0)
        assert fr.pebbles <= 3 * levels
    assert worst <= 2 * levels + 1
    assert fr.calls <= (levels / 2 + 1.5) * (n + 1)  # amortized ~ log2(N)/2


def test_fractal_lookback_window() -> None:
    pk = os.urandom(32)
    full = FullChain(pk, 100)
    fr = FractalChain(pk, 100, lookback=5)
    fr.key(50)
    assert fr.key(46) == full.keys[46]
    with pytest.raises(ValueError):
        fr.key(40)
    with pytest.raises(IndexError):
        fr.key(101)


# ------------------------------------------------------------------ receiver verification


def _chain(n: int = 40) -> tuple[list[bytes], bytes]:
    keys = generate_chain(os.urandom(32), n)
    return keys, ind_F(keys[0])


def test_verifier_accepts_chain_and_returns_new_keys() -> None:
    keys, c = _chain()
    v = KeyVerifier(c, -1, n_chain=40)
    r = v.check(3, keys[3])
    assert r.status is KeyStatus.NEW
    assert r.new_keys == [(0, keys[0]), (1, keys[1]), (2, keys[2]), (3, keys[3])]
    assert v.check(2, keys[2]).status is KeyStatus.KNOWN
    assert v.check(3, keys[3]).status is KeyStatus.KNOWN
    assert v.check(10, keys[10]).new_keys[0] == (4, keys[4])
    assert v.legitimate_key(7) == keys[7]


def test_late_joiner_walk_keeps_only_recent_and_wanted_keys() -> None:
    """A first key far from the commitment (a late joiner) is verified by walking the
    whole distance, but only the ``keep`` most recent keys and the wanted (pending)
    intervals come back and stay: memory O(keep), not O(steps) (~190 B per key before)."""
    import tracemalloc

    n = 20_000
    keys = generate_chain(os.urandom(32), n)
    v = KeyVerifier(ind_F(keys[0]), -1, n_chain=n, keep=8)
    tracemalloc.start()
    r = v.check(n - 1, keys[n - 1], wanted={5, 12_345})
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert r.status is KeyStatus.NEW
    got = dict(r.new_keys)
    assert sorted(got) == [5, 12_345] + list(range(n - 8, n))
    assert all(got[w] == keys[w] for w in got)
    assert peak < 200_000, peak  # the whole walk materialised was ~3.8 MB
    assert v.legitimate_key(n - 100) == keys[n - 100]  # re-derived on demand
    assert v.check(3, keys[3]).status is KeyStatus.KNOWN  # old keys re-derived, not kept


def test_verifier_rejects_wrong_key() -> None:
    keys, c = _chain()
    v = KeyVerifier(c, -1, n_chain=40)
    bad = bytearray(keys[5])
    bad[0] ^= 1
    assert v.check(5, bytes(bad)).status is KeyStatus.MISMATCH
    assert not v.verify(5, keys[6])  # right chain, wrong index
    assert v.verify(5, keys[5])
    assert v.check(4, bytes(bad)).status is KeyStatus.MISMATCH  # known index, other value
    assert v.check(6, keys[6][:-1]).status is KeyStatus.BAD_LENGTH
    assert v.highest == 5


def test_verifier_walk_bound() -> None:
    keys, c = _chain()
    v = KeyVerifier(c, -1, n_chain=40, max_steps=5)
    assert v.check(5, keys[5]).status is KeyStatus.TOO_FAR  # 6 steps from the anchor
    assert v.check(4, keys[4]).status is KeyStatus.NEW
    assert v.check(9, keys[9]).status is KeyStatus.NEW
    assert v.check(20, keys[20]).status is KeyStatus.TOO_FAR


def test_verifier_never_crosses_chain_boundary() -> None:
    n = 10
    p = TeslaParams(t0_ntp=0, tint_ms=100, n_chain=n)
    pk0, pk1 = os.urandom(32), os.urandom(32)
    ks = KeyChainSet(p, "full", primary_keys=[pk0, pk1])
    rv = KeyVerifierSet(p)
    rv.add_commitment(0, ks.commitment(0))
    # a key of chain 1 is routed to chain 1: unverifiable without its commitment
    assert rv.check(n + 1, ks.key(n + 1)).status is KeyStatus.UNVERIFIABLE
    # the per-chain verifier refuses indices beyond its chain even if asked directly
    v0 = rv.chains[0]
    assert v0.check(n + 1, ks.key(n + 1)).status is KeyStatus.OUT_OF_CHAIN
    assert v0.check(n, ks.key(n)).status is KeyStatus.NEW
    # chain 1's commitment index N == chain 0's last key index: kept apart
    assert rv.add_commitment(1, ks.commitment(1))
    assert not rv.add_commitment(1, os.urandom(32))
    assert rv.chains[1].anchor_index == n
    assert rv.verify(n, ks.key(n))  # still chain 0's K_N
    assert rv.verify(n + 3, ks.key(n + 3))
    # F(first key of chain 1) is the commitment, not chain 0's K_N
    assert ind_F(ks.key(n + 1)) != ks.key(n)
    assert not rv.verify(n + 1, ks.key(n))
    rv.drop_chains_before(1)
    assert rv.check(3, ks.key(3)).status is KeyStatus.UNVERIFIABLE


def test_verifier_eviction_rederives() -> None:
    keys, c = _chain(200)
    v = KeyVerifier(c, -1, n_chain=200, keep=8)
    assert v.verify(150, keys[150])
    assert len(v._known) <= 8
    assert v.check(10, keys[10]).status is KeyStatus.KNOWN
    assert v.check(10, keys[11]).status is KeyStatus.MISMATCH


# ------------------------------------------------------------------ sender chain set


def test_keychainset_chain_switch_values() -> None:
    n, d = 6, 2
    p = TeslaParams(t0_ntp=0, tint_ms=100, n_chain=n, d=d)
    pks = [os.urandom(32) for _ in range(4)]
    ks = KeyChainSet(p, "fractal", primary_keys=pks)
    full = [generate_chain(pk, n) for pk in pks]
    for i in range(4 * (n + 1)):
        j, t = divmod(i, n + 1)
        assert ks.key(i) == full[j][t]
        if i >= d:
            jj, tt = divmod(i - d, n + 1)
            assert ks.disclosed_key(i) == full[jj][tt]
        if j >= 1:
            assert ks.old_chain_last_key(i) == full[j - 1][n]
        if j < 3:
            assert ks.next_chain_commitment(i) == ind_F(full[j + 1][0])
    with pytest.raises(IndexError):
        ks.disclosed_key(1)
    with pytest.raises(IndexError):
        KeyChainSet(p).old_chain_last_key(0)


def test_keychainset_random_primary_and_single_chain() -> None:
    p = TeslaParams(t0_ntp=0, tint_ms=100, n_chain=5, single_chain=True)
    ks = KeyChainSet(p)
    assert len(ks.key(5)) == 32
    with pytest.raises(IndexError):
        ks.key(6)
    assert KeyChainSet(p).commitment(0) != ks.commitment(0)


# ------------------------------------------------------------------ parameters


def test_params_validation() -> None:
    with pytest.raises(ParamError):
        TeslaParams(t0_ntp=0, d=1)
    with pytest.raises(ParamError):
        TeslaParams(t0_ntp=0, tint_ms=0)
    with pytest.raises(ParamError):
        TeslaParams(t0_ntp=0, prf_id=5)
    with pytest.raises(ParamError):
        TeslaParams(t0_ntp=0, asid=16)
    p = TeslaParams(t0_ntp=0, prf_id=0, mac_id=4, group_mac=True)
    assert (p.key_len, p.mac_len, p.group_mac_len) == (20, 32, 4)
    assert TeslaParams(t0_ntp=0).group_mac_len == 0
    assert TeslaParams(t0_ntp=0).wire_group_mac_id == 0


@given(
    t0=st.integers(0, 2**64),
    tint=st.integers(1, 65535),
    i=st.integers(-10, 2**33),
)
def test_interval_start_is_exact_inverse(t0: int, tint: int, i: int) -> None:
    p = TeslaParams(t0_ntp=t0, tint_ms=tint)
    s = p.interval_start(i)
    assert p.interval_of(s) == i
    assert p.interval_of(s - 1) == i - 1


def test_interval_wrap_refused() -> None:
    p = TeslaParams(t0_ntp=0, tint_ms=1, n_chain=10)
    assert p.wire_index(INTERVAL_INDEX_MODULUS - 1) == INTERVAL_INDEX_MODULUS - 1
    with pytest.raises(ParamError):
        p.wire_index(INTERVAL_INDEX_MODULUS)
    with pytest.raises(ParamError):
        p.wire_index(-1)
    assert abs(p.max_session_seconds - 4294967.296) < 1e-6  # ~49.7 days at 1 ms
    p.check_session_duration(49 * 86400)
    with pytest.raises(ParamError):
        p.check_session_duration(50 * 86400)
    # 500 ms: ~68 years (RFC 5776 §3.1.1 example)
    assert 67 < TeslaParams(t0_ntp=0, tint_ms=500).max_session_seconds / (365.25 * 86400) < 69


def test_chain_index_math() -> None:
    p = TeslaParams(t0_ntp=0, n_chain=9)
    assert p.keys_per_chain == 10
    assert (p.chain_of(9), p.chain_of(10)) == (0, 1)
    assert (p.chain_first(2), p.chain_last(2)) == (20, 29)
    assert p.commitment_index(0) == -1 and p.commitment_index(1) == 9
    assert p.old_chain_last_key_index(15) == 9


def test_keychainset_background_build_same_keys() -> None:
    n = 300
    p = TeslaParams(t0_ntp=0, tint_ms=100, n_chain=n)
    pks = [os.urandom(32) for _ in range(3)]
    bg = KeyChainSet(p, "fractal", primary_keys=pks, background=True)
    fg = KeyChainSet(p, "full", primary_keys=pks)
    for i in range(0, 3 * (n + 1), 7):
        assert bg.key(i) == fg.key(i)
        if i >= 2:
            assert bg.disclosed_key(i) == fg.disclosed_key(i)
    assert bg.commitment(2) == fg.commitment(2)
