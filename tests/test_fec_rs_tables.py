"""alc.fec.gf fast paths against slow, obviously-correct references.

The table-gather combine, nibble-built GF(2^16) product tables, doubling-built log/exp
tables, cached encoder tables and the one-pass decode must give exactly what the
textbook constructions give (RFC 5510 §8: GM = V_kk^-1 V, e_j = sum_i s_i GM[i][j]).
No timing here: speed is measured in bench/bench_fec.py.
"""

from __future__ import annotations

import numpy as np
import pytest

from alc.fec import OTI, get_scheme
from alc.fec.gf import GF, POLYNOMIALS, RSCode, evaluation_point, field, rs_code


def _loop_tables(m: int) -> tuple[list[int], dict[int, int]]:
    """log/exp by the q-step LFSR loop (the previous implementation)."""
    q, poly = 1 << m, POLYNOMIALS[m]
    exp, log, x = [], {}, 1
    for i in range(q - 1):
        exp.append(x)
        log[x] = i
        x <<= 1
        if x & q:
            x ^= poly
    return exp, log


def _ref_combine(gf: GF, coeffs: np.ndarray, data: np.ndarray) -> np.ndarray:
    """out[r] = XOR_i coeffs[r, i] * data[i], one log/exp product per element."""
    out = np.zeros((coeffs.shape[0], data.shape[1]), dtype=np.int64)
    for r in range(coeffs.shape[0]):
        for i in range(coeffs.shape[1]):
            out[r] ^= gf.mul(int(coeffs[r, i]), data[i].astype(np.int64))
    return out


def _ref_generator(m: int, k: int, n: int, matrix: str) -> np.ndarray:
    """Textbook systematic GM = V[:, :k]^-1 V (k x n), V[i][j] = x_j^i."""
    gf = field(m)
    pts = [evaluation_point(gf, matrix, j) for j in range(n)]
    v = np.array([[gf.pow(x, i) for x in pts] for i in range(k)], dtype=np.int64)
    return gf.matmul(gf.mat_inv(v[:, :k]), v)


@pytest.mark.parametrize("m", sorted(POLYNOMIALS))
def test_log_exp_tables_equal_lfsr_loop(m: int) -> None:
    gf = field(m)
    exp, log = _loop_tables(m)
    assert gf.exp[: gf.order].tolist() == exp
    assert all(int(gf.log[x]) == i for x, i in log.items())


@pytest.mark.parametrize("m", [4, 8, 11, 16])
@pytest.mark.parametrize(
    "r,k,s", [(1, 1, 5), (3, 7, 33), (16, 20, 64), (5, 3, 1), (4, 20, 300), (17, 9, 129)]
)  # s >= 128: product-table gather path; below: direct log/exp
def test_combine_equals_reference(m: int, r: int, k: int, s: int) -> None:
    gf = field(m)
    rng = np.random.default_rng(m * 1000 + r * 100 + k)
    coeffs = rng.integers(0, gf.q, (r, k))
    coeffs[0, 0] = 0  # zero coefficients take the zero region of exp
    data = rng.integers(0, gf.q, (k, s)).astype(gf.dtype)
    got = gf.combine(coeffs, data)
    assert got.dtype == gf.dtype
    assert (got.astype(np.int64) == _ref_combine(gf, coeffs, data)).all()


@pytest.mark.parametrize("m", [8, 16])
@pytest.mark.parametrize("matrix", ["rfc5510", "rizzo"])
def test_generator_columns_equal_textbook_inverse(m: int, matrix: str) -> None:
    k, n = 12, 20
    gm = _ref_generator(m, k, n, matrix)
    code = RSCode(m, k, matrix)
    assert (code.columns(list(range(n))) == gm).all()


@pytest.mark.parametrize("matrix", ["rfc5510", "rizzo"])
def test_m16_k400_n432_generator_satisfies_vandermonde(matrix: str) -> None:
    """The big NORM case (block 400, parity 32): V_kk . GM_rep == V_rep, checked without
    inverting the 400 x 400 matrix, and the encoder output equals the reference combine."""
    m, k, n = 16, 400, 432
    gf = field(m)
    code = rs_code(m, k, matrix)
    rep = list(range(k, n))
    cols = code.columns(rep)
    pts = np.array([evaluation_point(gf, matrix, j) for j in range(n)], dtype=np.int64)
    logp = gf.log[pts]
    i = np.arange(k, dtype=np.int64)[:, None]
    v = np.where(
        pts[None, :] == 0, (i == 0).astype(np.int64), gf.exp[(logp[None, :] * i) % gf.order]
    )
    assert (gf.matmul(v[:, :k], cols) == v[:, k:]).all()
    rng = np.random.default_rng(7)
    data = rng.integers(0, gf.q, (k, 9)).astype(gf.dtype)
    enc = code.encode(data, rep)
    assert (enc.astype(np.int64) == _ref_combine(gf, cols.T, data)).all()
    assert (code.encode(data, rep) == enc).all()  # cached tables: same result


def test_cached_encoder_tables_keyed_by_esis() -> None:
    gf8 = rs_code(8, 10, "rfc5510")
    rng = np.random.default_rng(3)
    data = rng.integers(0, 256, (10, 50)).astype(np.uint8)
    a = gf8.encode(data, [10, 11, 12])
    b = gf8.encode(data, [13, 14])
    c = gf8.encode(data, [10, 11, 12, 13, 14])
    assert (np.concatenate([a, b]) == c).all()
    cols = gf8.columns([10, 11, 12, 13, 14])
    assert (c.astype(np.int64) == _ref_combine(field(8), cols.T, data)).all()


@pytest.mark.parametrize(
    "eid,m,k,r,matrix",
    [
        (5, 8, 64, 16, "rfc5510"),
        (5, 8, 64, 16, "nrl"),
        (2, 16, 400, 32, "nrl"),
        (2, 16, 50, 20, "rizzo"),
    ],
)
def test_decode_every_erasure_count(eid: int, m: int, k: int, r: int, matrix: str) -> None:
    e_len = 30
    s = get_scheme(OTI(eid, k * e_len, e_len, k, k + r, m=m), rs_matrix=matrix)
    rng = np.random.default_rng(k + r)
    src = [rng.bytes(e_len) for _ in range(k)]
    rep = dict(s.repair_symbols(0, src, r))
    for lost in sorted({1, 2, r // 2, r}):
        gone = set(rng.choice(k, lost, replace=False).tolist())
        use = rng.choice(sorted(rep), lost, replace=False).tolist()
        d = s.block_decoder(0)
        for j in use:
            d.add(j, rep[j])
        for j in range(k):
            if j not in gone:
                d.add(j, src[j])
        assert d.decode() == src
