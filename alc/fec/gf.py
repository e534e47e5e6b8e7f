"""Arithmetic over GF(2^m) and systematic Reed-Solomon erasure codes (RFC 5510 §8).

All bulk arithmetic is vectorized with numpy: multiplication uses log/antilog
tables (and, for m = 8, a full 256 x 256 product table), linear algebra is a
numpy Gauss-Jordan elimination.

Generator matrices
------------------
Every code here is "systematic Vandermonde": pick ``n`` distinct evaluation
points ``x_0 .. x_{n-1}``, let ``V[i][j] = x_j ** i`` (k x n) and use
``GM = V[:, :k]^-1 * V`` (RFC 5510 §8.2.1).  Encoding symbol ``j`` is
``e_j = sum_i s_i * GM[i][j]``.  Implementations differ only in the points:

``"rfc5510"``  ``x_j = alpha^j`` (RFC 5510 §8.2.1 text).
``"rizzo"``    ``x_0 = 0, x_j = alpha^(j-1)`` -- Luigi Rizzo's ``fec.c`` (1997) as used by
               NRL NORM (``normEncoderRS8.cpp``: first row ``[1, 0, ..., 0]``, row
               ``r+1`` = powers of ``alpha^r``) and, as measured, by ypo/flute (flute-alc).

Source symbols are identical for all of them; only repair symbols differ.
"""

from __future__ import annotations

from functools import cache, lru_cache

import numpy as np
import numpy.typing as npt

#: RFC 5510 §8.1 primitive polynomials (bit i = coefficient of x^i).
POLYNOMIALS: dict[int, int] = {
    2: 0x7,
    3: 0xB,
    4: 0x13,
    5: 0x25,
    6: 0x43,
    7: 0x89,
    8: 0x11D,
    9: 0x211,
    10: 0x409,
    11: 0x805,
    12: 0x1053,
    13: 0x201B,
    14: 0x4443,
    15: 0x8003,
    16: 0x1100B,
}

RS_MATRICES = ("rfc5510", "rizzo")

Arr = npt.NDArray[np.int64]


class GF:
    """GF(2^m) with log/antilog tables (m in 2..16)."""

    def __init__(self, m: int) -> None:
        if m not in POLYNOMIALS:
            raise ValueError(f"unsupported field size m={m}")
        self.m = m
        self.q = 1 << m
        self.order = self.q - 1
        exp = np.zeros(2 * self.order + 1, dtype=np.int64)
        log = np.zeros(self.q, dtype=np.int64)
        x = 1
        poly = POLYNOMIALS[m]
        for i in range(self.order):
            exp[i] = x
            log[x] = i
            x <<= 1
            if x & self.q:
                x ^= poly
        exp[self.order : 2 * self.order] = exp[: self.order]
        # log(0) is undefined; point it at an index whose exp is 0 so that
        # exp[log[a] + log[b]] == 0 whenever a or b is 0 (for sums of two logs).
        self.zero_log = 2 * self.order
        exp = np.concatenate([exp, np.zeros(2 * self.order + 1, dtype=np.int64)])
        log[0] = self.zero_log
        self.exp = exp
        self.log = log
        self.dtype = np.uint8 if m <= 8 else np.uint16
        self.exp_small = exp.astype(self.dtype)
        self.mul_table: npt.NDArray[np.uint8] | None = None
        if m <= 8:
            a = np.arange(self.q)
            self.mul_table = self.exp_small[log[a][:, None] + log[a][None, :]]

    # -- scalar / elementwise ------------------------------------------------
    def mul(self, a: Arr | int, b: Arr | int) -> Arr:
        """Elementwise product (broadcasting)."""
        return self.exp[self.log[a] + self.log[b]]

    def inv(self, a: Arr | int) -> Arr:
        a_arr = np.asarray(a)
        if np.any(a_arr == 0):
            raise ZeroDivisionError("inverse of 0 in GF(2^m)")
        return self.exp[(self.order - self.log[a_arr]) % self.order]

    def pow(self, a: int, e: int) -> int:
        if e == 0:
            return 1
        if a == 0:
            return 0
        return int(self.exp[(int(self.log[a]) * e) % self.order])

    # -- matrices -------------------------------------------------------------
    def matmul(self, a: Arr, b: Arr) -> Arr:
        """Matrix product of small matrices over the field."""
        prod = self.mul(a[:, :, None], b[None, :, :])
        return np.bitwise_xor.reduce(prod, axis=1)

    def mat_inv(self, a: Arr) -> Arr:
        """Gauss-Jordan inverse of a square matrix; ValueError if singular."""
        k = a.shape[0]
        aug = np.concatenate([a.astype(np.int64), np.eye(k, dtype=np.int64)], axis=1)
        for col in range(k):
            nz = np.nonzero(aug[col:, col])[0]
            if nz.size == 0:
                raise ValueError("singular matrix")
            piv = col + int(nz[0])
            if piv != col:
                aug[[col, piv]] = aug[[piv, col]]
            aug[col] = self.mul(aug[col], self.inv(int(aug[col, col])))
            factors = aug[:, col].copy()
            factors[col] = 0
            rows = np.nonzero(factors)[0]
            if rows.size:
                aug[rows] ^= self.mul(factors[rows, None], aug[col][None, :])
        return aug[:, k:]

    # -- bulk symbol arithmetic ----------------------------------------------
    def combine(self, coeffs: Arr, data: npt.NDArray[np.integer]) -> npt.NDArray[np.integer]:
        """``out[r] = sum_i coeffs[r, i] * data[i]`` for r rows (vectorized over elements).

        ``coeffs`` is (r, k), ``data`` is (k, S) of field elements; returns (r, S).
        """
        r, k = coeffs.shape
        s = data.shape[1]
        out = np.zeros((r, s), dtype=self.dtype)
        if r == 0 or k == 0 or s == 0:
            return out
        # bound the temporary (rows * k * S elements) to ~8M
        step = max(1, (8 << 20) // max(1, k * s))
        if self.mul_table is not None:
            # per repair row: gather the k x S products from that row's k 256-entry tables
            # (flat index 256*i + byte) and XOR-reduce; columns chunked to bound memory
            q = self.q
            cols = max(1, (4 << 20) // k)
            base = (np.arange(k, dtype=np.intp) * q)[:, None]
            for c0 in range(0, s, cols):
                off = base + data[:, c0 : c0 + cols]
                for j in range(r):
                    tab = self.mul_table[coeffs[j]].reshape(-1)
                    out[j, c0 : c0 + cols] = np.bitwise_xor.reduce(tab[off], axis=0)
        else:
            logd = self.log[data.astype(np.intp)]
            logc = self.log[coeffs]
            for r0 in range(0, r, step):
                lc = logc[r0 : r0 + step]
                prod = self.exp_small[lc[:, :, None] + logd[None, :, :]]
                out[r0 : r0 + step] = np.bitwise_xor.reduce(prod, axis=1)
        return out


@cache
def field(m: int) -> GF:
    return GF(m)


def evaluation_point(gf: GF, matrix: str, j: int) -> int:
    """The evaluation point of encoding symbol j for the named generator matrix."""
    if matrix == "rfc5510":
        return int(gf.exp[j % gf.order])
    if matrix == "rizzo":
        return 0 if j == 0 else int(gf.exp[(j - 1) % gf.order])
    raise ValueError(f"unknown rs_matrix {matrix!r}")


def max_symbols(m: int, matrix: str) -> int:
    """Largest n (number of distinct evaluation points) for the matrix."""
    q = 1 << m
    return q if matrix == "rizzo" else q - 1


class RSCode:
    """Systematic [n, k] Reed-Solomon code over GF(2^m) for a fixed k."""

    def __init__(self, m: int, k: int, matrix: str = "rfc5510", base_k: int | None = None) -> None:
        """``base_k`` > k: shortened code -- the block is coded as a ``base_k`` block whose
        source symbols k..base_k-1 are virtual zeros; repair ESI ``k + i`` is code position
        ``base_k + i`` (what NRL NORM does for blocks shorter than its max block length)."""
        if matrix not in RS_MATRICES:
            raise ValueError(f"unknown rs_matrix {matrix!r}")
        self.gf = field(m)
        self.m = m
        self.k = k
        self.base_k = k if base_k is None else base_k
        self.matrix = matrix
        self.n_max = max_symbols(m, matrix)
        if not 0 < k <= self.base_k <= self.n_max:
            raise ValueError(f"k={k} (base {self.base_k}) out of range for GF(2^{m})")
        #: ESIs must be below this
        self.esi_limit = self.n_max - (self.base_k - k)
        gf = self.gf
        pts = np.array(
            [evaluation_point(gf, matrix, i) for i in range(self.base_k)], dtype=np.int64
        )
        self._pts = pts
        # log of prod_{l != i} (x_i - x_l): denominators of the Lagrange basis polynomials
        diff = pts[:, None] ^ pts[None, :]
        np.fill_diagonal(diff, 1)
        self._log_den = gf.log[diff].sum(axis=1) % gf.order

    def columns(self, esis: list[int]) -> Arr:
        """Columns of GM for the given ESIs, shape (k, len(esis)).

        ``GM = V_kk^-1 V`` means encoding symbol j is p(x_j) for the polynomial p of degree
        < base_k with p(x_i) = s_i, so ``GM[i][j] = L_i(x_j)`` (Lagrange basis) -- O(k) per
        column instead of a matrix inversion.
        """
        gf = self.gf
        for j in esis:
            if not 0 <= j < self.esi_limit:
                raise ValueError(f"ESI {j} out of range")
        shift = self.base_k - self.k
        cols = np.zeros((self.k, len(esis)), dtype=np.int64)
        rep_idx = [c for c, j in enumerate(esis) if j >= self.k]
        for c, j in enumerate(esis):
            if j < self.k:
                cols[j, c] = 1
        if rep_idx:
            xs = np.array(
                [evaluation_point(gf, self.matrix, esis[c] + shift) for c in rep_idx],
                dtype=np.int64,
            )
            d = xs[None, :] ^ self._pts[:, None]  # (base_k, r), never 0: distinct points
            logd = gf.log[d]
            log_p = logd.sum(axis=0) % gf.order  # log prod_l (x_j - x_l)
            lg = (log_p[None, :] - logd - self._log_den[:, None]) % gf.order
            cols[:, rep_idx] = gf.exp[lg[: self.k]]
        return cols

    def encode(self, source: npt.NDArray[np.integer], esis: list[int]) -> npt.NDArray[np.integer]:
        """Encoding symbols ``esis`` from source elements (k, S) -> (len(esis), S)."""
        cols = self.columns(esis)
        return self.gf.combine(cols.T.copy(), source)

    def decode(self, esis: list[int], received: npt.NDArray[np.integer]) -> npt.NDArray[np.integer]:
        """Source elements (k, S) from exactly k received symbols (k, S) with ESIs ``esis``.

        Only the e erased source symbols are solved for: with the received source rows
        known, e repair symbols give an e x e system (Gauss-Jordan over GF(2^m)).
        """
        if len(esis) != self.k or len(set(esis)) != self.k:
            raise ValueError("need k distinct symbols")
        out = np.zeros((self.k, received.shape[1]), dtype=self.gf.dtype)
        have = {j: row for row, j in enumerate(esis)}
        for j, row in have.items():
            if j < self.k:
                out[j] = received[row]
        missing = [i for i in range(self.k) if i not in have]
        if not missing:
            return out
        known = [i for i in range(self.k) if i in have]
        rep = [j for j in esis if j >= self.k]  # exactly len(missing) of them
        cols = self.columns(rep)  # (k, e)
        y = received[[have[j] for j in rep]]
        if known:
            y = y ^ self.gf.combine(cols[known].T.copy(), out[known])
        a_inv = self.gf.mat_inv(cols[missing])  # y = s_M . A  ->  s_M = y . A^-1
        out[missing] = self.gf.combine(a_inv.T.copy(), y)
        return out


@lru_cache(maxsize=256)
def rs_code(m: int, k: int, matrix: str, base_k: int | None = None) -> RSCode:
    return RSCode(m, k, matrix, base_k)
