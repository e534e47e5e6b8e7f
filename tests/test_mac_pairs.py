"""tesla.mac._mac hashes a call's rows two at a time (SHA-NI rounds of two messages
interleaved, each of two lanes taking the next row when its own is done) and, with
``nthreads``, in several threads: whatever the number of rows, their lengths (across the
55/56/63/64-octet padding boundaries) and where the MAC and Group MAC fields lie (RFC 5776
§3.3.1: read as zeros, nothing written), every digest must be ``cryptography``'s HMAC of
the zeroed datagram, for SHA-1 and SHA-256 on the SHA-NI path and on the EVP path.
SHA-256 also on the AVX-512 path (sixteen rows at a time, lanes taking the next row,
the last lanes finishing on SHA-NI), forced on from one row so that every row count
goes through it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.hmac import HMAC
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tesla.mac import kernel as mk

ALGS = {0: (hashes.SHA1, 20), 2: (hashes.SHA256, 32)}
#: lengths around the padding and block boundaries, and long rows
EDGES = [0, 1, 55, 56, 57, 63, 64, 65, 119, 120, 127, 128, 183, 184, 1400, 3000]


def _mod() -> Any:
    if not mk.available():
        pytest.skip(f"native kernel unavailable: {mk.why_unavailable()}")
    return mk._load()["mod"]


#: the extension's defaults: x16 from 10 rows of a call, the last 6 lanes on SHA-NI
X16_MIN_ROWS, X16_TAIL = 10, 6


@pytest.fixture(autouse=True)
def _restore() -> Any:
    mod = mk._load().get("mod") if mk.available() else None
    was = bool(mod is not None and hasattr(mod, "x16") and mod.x16())
    yield
    if mod is not None:
        mod.set_sha_ni(True)
        if hasattr(mod, "set_x16"):
            mod.set_x16(was, X16_MIN_ROWS, X16_TAIL)


def _path(mod: Any, path: str, tail: int = X16_TAIL) -> None:
    """SHA-1/-256 on SHA-NI, on EVP, or SHA-256 on the AVX-512 lanes from one row."""
    mod.set_sha_ni(True)
    if path == "evp" and not mod.sha_ni():
        pytest.skip("SHA-1/-256 are on the EVP path anyway (no SHA-NI)")
    x16 = hasattr(mod, "set_x16") and mod.set_x16(path == "x16", 1, tail)
    if path == "x16" and not x16:
        pytest.skip("no AVX-512 sixteen-lane path here (CPU, OS or no SHA-NI)")
    mod.set_sha_ni(path != "evp")


def _oracle(alg: int, key: bytes, p: bytes, fields: list[tuple[int, int]]) -> bytes:
    z = bytearray(p)
    for a, n in fields:
        if a >= 0:
            z[a : a + n] = bytes(n)
    h = HMAC(key, ALGS[alg][0]())
    h.update(bytes(z))
    return h.finalize()


@st.composite
def _calls(draw: Any) -> tuple[int, bytes, bytes, list[tuple[int, int, int, int]], int, int, int]:
    """An arena of rows of unequal lengths at gaps, each with a MAC field (always: the
    receiver's rows carry one) and maybe a Group MAC field anywhere in it."""
    alg = draw(st.sampled_from(sorted(ALGS)))
    key = draw(st.binary(min_size=0, max_size=100))
    n = draw(st.one_of(st.sampled_from([0, 1, 2, 3, 4, 5, 7, 8, 16, 17, 33, 65]),
                       st.integers(0, 40)))
    ml = draw(st.sampled_from([1, 10, 16, ALGS[alg][1]]))
    gl = draw(st.sampled_from([0, 4, 20, 64]))
    rows, parts, pos = [], [], 0
    for _ in range(n):
        gap = draw(st.integers(0, 70))
        ln = draw(st.one_of(st.sampled_from(EDGES), st.integers(0, 3000)))
        ln = max(ln, ml)
        # the MAC field at a random offset (also spanning a block boundary, far in)
        mo = draw(st.integers(0, ln - ml))
        go = -1
        if gl and ln >= gl and draw(st.booleans()):
            go = draw(st.integers(0, ln - gl))
        parts.append(bytes(gap))
        pos += gap
        parts.append(draw(st.binary(min_size=ln, max_size=ln)) if ln < 200 else
                     np.random.default_rng(pos).integers(0, 256, ln, dtype=np.uint8).tobytes())
        rows.append((pos, ln, mo, go))
        pos += ln
    threads = draw(st.sampled_from([1, 1, 2, 3]))
    return alg, key, b"".join(parts), rows, ml, gl, threads, draw(st.sampled_from([0, 3, 8, 16]))


def _arrays(rows: list[tuple[int, int, int, int]]) -> list[np.ndarray]:
    if not rows:
        return [np.zeros(0, dtype=np.int64) for _ in range(4)]
    return [np.array(c, dtype=np.int64) for c in zip(*rows, strict=True)]


@pytest.mark.parametrize("path", ["sha-ni", "x16", "evp"])
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.data_too_large])
@given(case=_calls())
def test_paired_rows_equal_hmac_of_the_zeroed_datagram(path: str, case: Any) -> None:
    mod = _mod()
    alg, key, arena_b, rows, ml, gl, threads, tail = case
    if path == "x16":  # SHA-256 only there (a SHA-1 MAC field of <= 20 octets fits)
        alg = 2
    _path(mod, path, tail)
    dl = ALGS[alg][1]
    arena = np.frombuffer(bytearray(arena_b), dtype=np.uint8)
    of, ln, mo, go = _arrays(rows)
    want = [_oracle(alg, key, arena_b[s : s + n], [(m, ml), (g, gl)]) for s, n, m, g in rows]
    # mac_arena: full digests; rows without a MAC field (-1) too
    nom = mo.copy()
    nom[::3] = -1
    out = np.zeros(len(rows) * dl, dtype=np.uint8)
    mod.mac_arena(alg, key, arena, of, ln, nom, ml, go, gl, out, threads)
    for k, (s, n, m, g) in enumerate(rows):
        w = want[k] if nom[k] >= 0 else _oracle(alg, key, arena_b[s : s + n], [(g, gl)])
        assert out[k * dl : (k + 1) * dl].tobytes() == w, (k, n, m, g)
    # verify_arena: half the rows carry their correct tag (set where the field is; the
    # digest is over the zeroed field, so it still holds unless the Group MAC overlaps)
    ba = bytearray(arena_b)
    for k, (s, _n, m, _g) in enumerate(rows):
        if k % 2 == 0:
            ba[s + m : s + m + ml] = want[k][:ml]
    arena2 = np.frombuffer(ba, dtype=np.uint8)
    before = arena2.tobytes()
    for cut in (True, False):
        tags = np.zeros(len(rows) * ml, dtype=np.uint8)
        ok = np.zeros(len(rows), dtype=np.uint8)
        got = mod.verify_arena(alg, key, arena2, of, ln, mo, ml, go, gl, tags, ok, cut, threads)
        want_ok = []
        for k, (s, n, m, g) in enumerate(rows):
            p = before[s : s + n]
            assert tags[k * ml : (k + 1) * ml].tobytes() == p[m : m + ml]
            want_ok.append(_oracle(alg, key, p, [(m, ml), (g, gl)])[:ml] == p[m : m + ml])
        assert ok.astype(bool).tolist() == want_ok
        assert got == ([before[s : s + n] for (s, n, _, _), o in zip(rows, want_ok, strict=True) if o]
                       if cut else [])
    assert arena2.tobytes() == before and arena.tobytes() == arena_b
    # hmac_rows: no fields
    out = np.zeros(len(rows) * dl, dtype=np.uint8)
    mod.hmac_rows(alg, key, arena_b, of, ln, out)
    for k, (s, n, _, _) in enumerate(rows):
        assert out[k * dl : (k + 1) * dl].tobytes() == _oracle(alg, key, arena_b[s : s + n], [])


@pytest.mark.parametrize("alg,path", [(0, "sha-ni"), (2, "sha-ni"), (2, "x16")])
def test_every_pair_of_edge_lengths_and_field_spans(alg: int, path: str) -> None:
    """Deterministic sweep: rows of every two edge lengths next to each other (so each
    length meets each in the two lanes, and in the sixteen), MAC field at the start,
    across each block boundary and at the end."""
    mod = _mod()
    _path(mod, path)
    rng = np.random.default_rng(alg)
    ml, gl, dl = 10, 4, ALGS[alg][1]
    rows, parts, pos = [], [], 0
    for a in EDGES:
        for b in EDGES:
            for ln in (a, b):
                ln = max(ln, ml + gl)
                spans = [0, ln - ml] + [x - 5 for x in (64, 128, 1024, 2048) if x + 5 <= ln - ml]
                mo = spans[(a + b + len(rows)) % len(spans)]
                go = (mo + 60) % (ln - gl) if (len(rows) % 3) else -1
                parts.append(rng.integers(0, 256, ln, dtype=np.uint8).tobytes())
                rows.append((pos, ln, mo, go))
                pos += ln
    arena_b = b"".join(parts)
    key = bytes(range(37))
    of, ln_, mo_, go_ = _arrays(rows)
    for threads in (1, 2):
        out = np.zeros(len(rows) * dl, dtype=np.uint8)
        mod.mac_arena(alg, key, arena_b, of, ln_, mo_, ml, go_, gl, out, threads)
        for k, (s, n, m, g) in enumerate(rows):
            want = _oracle(alg, key, arena_b[s : s + n], [(m, ml), (g, gl)])
            assert out[k * dl : (k + 1) * dl].tobytes() == want, (k, n, m, g, threads)


@pytest.mark.parametrize("path", ["sha-ni", "x16"])
def test_seal_of_many_unequal_datagrams_equals_one_at_a_time(path: str) -> None:
    """The sender's seal hashes its batch two (or sixteen) at a time too: the same
    datagrams as sealing each alone, and each tag the HMAC of the datagram with its MAC
    field zero."""
    mod = _mod()
    _path(mod, path)
    rng = np.random.default_rng(5)
    pkts = [bytes([16, 0, 2, 0, 1, 2, 3, 4]) + rng.integers(0, 256, n, dtype=np.uint8).tobytes()
            for n in [0, 47, 48, 55, 56, 100, 1400, 3000, 5, 1392, 120]]
    pre = bytes([1, 3, 0x02, 0, 0, 0, 0, 7])
    for alg in sorted(ALGS):
        km = 10
        key = bytes(range(alg, alg + 32))
        all_ = mod.seal(alg, key, pkts, 2, (pre,), bytes(len(pkts)), km, -1, None, None, None)
        for p, got in zip(pkts, all_, strict=True):
            (one,) = mod.seal(alg, key, [p], 2, (pre,), b"\0", km, -1, None, None, None)
            assert got == one
            z = bytearray(got)
            z[8 + len(pre) : 8 + len(pre) + km] = bytes(km)
            assert got[8 + len(pre) : 8 + len(pre) + km] == _oracle(alg, key, bytes(z), [])[:km]


def test_nthreads_out_of_range_is_refused() -> None:
    mod = _mod()
    z = np.zeros(1, dtype=np.int64)
    out = np.zeros(32, dtype=np.uint8)
    for bad in (0, -1, 17):
        with pytest.raises(ValueError):
            mod.mac_arena(2, b"k", b"abc", z, z + 3, z - 1, 0, z - 1, 0, out, bad)


def test_tesla_mac_x16_env_switches_the_sixteen_lane_path() -> None:
    """TESLA_MAC_X16=0 keeps HMAC-SHA-256 on SHA-NI (A/B measurements); =1 uses AVX-512
    where the CPU and OS allow it."""
    mod = _mod()
    if not hasattr(mod, "set_x16"):
        pytest.skip("extension built before the AVX-512 path")
    can = bool(mod.set_x16(True))
    code = "from tesla.mac import _mac; print(_mac.x16())"
    root = Path(__file__).resolve().parents[1]
    for val, want in (("0", False), ("off", False), ("1", can)):
        r = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True,
                           text=True, env={**os.environ, "TESLA_MAC_X16": val}, check=True)
        assert r.stdout.strip() == str(want), val


@pytest.mark.parametrize("path", ["x16", "sha-ni", "evp"])
def test_threads_give_the_same_verdicts_as_one(path: str) -> None:
    """verify_arena over 700 rows of random lengths (several 128-row hand-outs per
    thread): 1, 2 and 3 threads give the same tags, verdicts and cut, equal to the
    oracle's."""
    mod = _mod()
    _path(mod, path)
    rng = np.random.default_rng(9)
    n, ml, gl = 700, 16, 4
    ln = rng.integers(ml + gl, 1500, n).astype(np.int64)
    of = np.concatenate([[0], np.cumsum(ln)[:-1]]).astype(np.int64)
    mo = (rng.integers(0, 1 << 30, n) % (ln - ml + 1)).astype(np.int64)
    go = np.where(rng.random(n) < 0.5, -1, rng.integers(0, 1 << 30, n) % (ln - gl + 1)).astype(np.int64)
    ba = bytearray(rng.integers(0, 256, int(ln.sum()), dtype=np.uint8).tobytes())
    key = bytes(range(32))
    want_ok = []
    for k in range(n):
        s, m = int(of[k]), int(mo[k])
        d = _oracle(2, key, bytes(ba[s : s + int(ln[k])]), [(m, ml), (int(go[k]), gl)])
        if k % 3:
            ba[s + m : s + m + ml] = d[:ml]
    arena = bytes(ba)
    for k in range(n):
        s, m = int(of[k]), int(mo[k])
        p = arena[s : s + int(ln[k])]
        want_ok.append(_oracle(2, key, p, [(m, ml), (int(go[k]), gl)])[:ml] == p[m : m + ml])
    assert 0 < sum(want_ok) < n
    got = []
    for threads in (1, 2, 3):
        tags = np.zeros(n * ml, dtype=np.uint8)
        ok = np.zeros(n, dtype=np.uint8)
        cut = mod.verify_arena(2, key, arena, of, ln, mo, ml, go, gl, tags, ok, True, threads)
        assert ok.astype(bool).tolist() == want_ok
        got.append((tags.tobytes(), cut))
    assert got[0] == got[1] == got[2]
    assert got[0][1] == [arena[s : s + m] for s, m, o in zip(of, ln, want_ok, strict=True) if o]
