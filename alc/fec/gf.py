"""Arithmetic over GF(2^m) and systematic Reed-Solomon erasure codes (RFC 5510 §8).

All bulk arithmetic is vectorized with numpy: multiplication uses log/antilog
tables (and, for m = 8, a full 256 x 256 product table), linear algebra is a
numpy Gauss-Jordan elimination.  Symbol combinations (encode, decode) gather, per
source byte, one row of r precomputed products (``GF.byte_tables``) and XOR-reduce;
encoder tables are cached per (code, ESIs) since every block of an object reuses them.

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

from collections import OrderedDict
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


def _mulx(v: int, q: int, poly: int) -> int:
    v <<= 1
    return v ^ poly if v & q else v


def _alpha_powers(m: int, poly: int) -> Arr:
    """alpha^0 .. alpha^(2^m - 2), built by doubling: alpha^(L+i) = alpha^L * alpha^i, and
    multiplication by the constant alpha^L is GF(2)-linear (XOR of its images of the m bits).
    O(m log q) numpy passes instead of a q-step Python loop (GF(2^16): ~1 ms, was ~40 ms)."""
    q = 1 << m
    order = q - 1
    vals = np.ones(1, dtype=np.int64)
    while vals.size < order:
        c = _mulx(int(vals[-1]), q, poly)  # alpha^L, L = vals.size
        nxt = np.zeros(vals.size, dtype=np.int64)
        for b in range(m):
            nxt ^= ((vals >> b) & 1) * c
            c = _mulx(c, q, poly)
        vals = np.concatenate([vals, nxt])
    return vals[:order]


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
        powers = _alpha_powers(m, POLYNOMIALS[m])
        exp[: self.order] = powers
        log[powers] = np.arange(self.order, dtype=np.int64)
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
        """Gauss-Jordan inverse of a square matrix; ValueError if singular.

        Products go straight through the log/exp tables (log 0 lands in exp's zero region).
        """
        k = a.shape[0]
        exp, log, order = self.exp, self.log, self.order
        aug = np.concatenate([a.astype(np.int64), np.eye(k, dtype=np.int64)], axis=1)
        for col in range(k):
            nz = np.flatnonzero(aug[col:, col])
            if nz.size == 0:
                raise ValueError("singular matrix")
            piv = col + int(nz[0])
            if piv != col:
                aug[[col, piv]] = aug[[piv, col]]
            log_row = log[aug[col]] + (order - int(log[aug[col, col]]))
            row = exp[log_row]
            aug[col] = row
            factors = aug[:, col].copy()
            factors[col] = 0
            rows = np.flatnonzero(factors)
            if rows.size:
                aug[rows] ^= exp[log[factors[rows]][:, None] + log[row][None, :]]
        return aug[:, k:]

    # -- bulk symbol arithmetic ----------------------------------------------
    def byte_tables(self, coeffs: Arr) -> npt.NDArray[np.uint64]:
        """Product tables for :meth:`combine_tables`: ``coeffs`` (r, k) -> (k*P*256, W) uint64.

        P = 1 byte plane for m <= 8, 2 for m > 8.  Row ``(i*P + p)*256 + v`` holds the r
        products ``coeffs[j, i] * (v << 8p)`` (element dtype, padded to W*8 bytes), so one
        row gather per source byte yields its contribution to all r outputs at once.
        m <= 8: rows of the full product table.  m > 8: multiplication by a constant is
        GF(2)-linear, so each plane's 256 rows are XORs of two 16-row nibble tables built
        from the images ``c * x^b`` -- no per-entry log/exp lookup.
        """
        r, k = coeffs.shape
        planes = 1 if self.m <= 8 else 2
        isz = np.dtype(self.dtype).itemsize
        rp = -(-r * isz // 8) * 8 // isz
        if self.mul_table is not None:  # m <= 8: gather the 256-entry rows of the product table
            tab8 = np.zeros((k, 256, rp), dtype=np.uint8)
            tab8[:, : self.q, :r] = self.mul_table[coeffs.T].transpose(0, 2, 1)
            return tab8.reshape(k * 256, rp).view(np.uint64)
        # c * x^b = exp[log c + b] (alpha = x); log 0 = zero_log maps into the zero region
        bits = np.arange(8 * planes, dtype=np.int64)
        basis = np.zeros((k, 8 * planes, rp), dtype=self.dtype)
        basis[:, :, :r] = self.exp_small[self.log[coeffs.T][:, None, :] + bits[None, :, None]]
        # nibble tables: nib[:, n, v] = c * (v << 4n), XOR of the images of v's bits
        nib = np.zeros((k, 2 * planes, 16, rp), dtype=self.dtype)
        b4 = basis.reshape(k, 2 * planes, 4, rp)
        for bit in range(4):
            lo = 1 << bit
            np.bitwise_xor(nib[:, :, :lo], b4[:, :, bit, None, :], out=nib[:, :, lo : 2 * lo])
        # byte v = (hi << 4) | lo  ->  c * v = nib[hi nibble] ^ nib[lo nibble]
        tab = np.empty((k, planes, 16, 16, rp), dtype=self.dtype)
        np.bitwise_xor(nib[:, 1::2, :, None, :], nib[:, 0::2, None, :, :], out=tab)
        return tab.reshape(k * planes * 256, rp).view(np.uint64)

    def combine_tables(
        self, tables: npt.NDArray[np.uint64], r: int, data: npt.NDArray[np.integer]
    ) -> npt.NDArray[np.integer]:
        """``combine`` with tables from :meth:`byte_tables` (reusable across blocks)."""
        k, s = data.shape
        if r == 0 or k == 0 or s == 0:
            return np.zeros((r, s), dtype=self.dtype)
        planes = 1 if self.m <= 8 else 2
        w = tables.shape[1]
        idx: npt.NDArray[np.intp]
        if planes == 1:
            idx = data.astype(np.intp)
        else:
            d16 = data.astype(np.intp)
            idx = np.empty((k, 2, s), dtype=np.intp)
            np.bitwise_and(d16, 0xFF, out=idx[:, 0])
            np.right_shift(d16, 8, out=idx[:, 1])
            idx = idx.reshape(2 * k, s)
        idx += (np.arange(k * planes, dtype=np.intp) * 256)[:, None]
        out = np.empty((s, w), dtype=np.uint64)
        # bound the gathered temporary (rows * cols * W words) to ~2 MB so it stays in cache
        cols = max(1, (256 << 10) // (k * planes * w))
        for c0 in range(0, s, cols):
            g = np.take(tables, idx[:, c0 : c0 + cols], axis=0)
            np.bitwise_xor.reduce(g, axis=0, out=out[c0 : c0 + cols])
        return np.ascontiguousarray(out.view(self.dtype)[:, :r].T)

    def combine(self, coeffs: Arr, data: npt.NDArray[np.integer]) -> npt.NDArray[np.integer]:
        """``out[r] = sum_i coeffs[r, i] * data[i]`` for r rows (vectorized over elements).

        ``coeffs`` is (r, k), ``data`` is (k, S) of field elements; returns (r, S).
        """
        r, k = coeffs.shape
        s = data.shape[1]
        if r == 0 or k == 0 or s == 0:
            return np.zeros((r, s), dtype=self.dtype)
        if s < 128 and r * k * s <= 1 << 20:
            # narrow data (decoder's small matrix products): building 256-row tables per
            # source would cost more than r*k*s direct log/exp products
            prod = self.exp_small[self.log[coeffs][:, :, None] + self.log[data][None, :, :]]
            return np.bitwise_xor.reduce(prod, axis=1)
        return self.combine_tables(self.byte_tables(coeffs), r, data)


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


def evaluation_points(gf: GF, matrix: str, js: Arr) -> Arr:
    """Vectorized :func:`evaluation_point` for an array of code positions."""
    if matrix == "rfc5510":
        return gf.exp[js % gf.order]
    if matrix == "rizzo":
        return np.where(js == 0, 0, gf.exp[(js - 1) % gf.order])
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
        pts = evaluation_points(gf, matrix, np.arange(self.base_k, dtype=np.int64))
        self._pts = pts
        # log of prod_{l != i} (x_i - x_l): denominators of the Lagrange basis polynomials,
        # in row chunks (a base_k x base_k matrix is 34 GB for GF(2^16), base_k = 65535)
        log_den = np.empty(self.base_k, dtype=np.int64)
        step = max(1, (1 << 20) // self.base_k)
        for r0 in range(0, self.base_k, step):
            diff = pts[r0 : r0 + step, None] ^ pts[None, :]
            diff[np.arange(diff.shape[0]), np.arange(r0, r0 + diff.shape[0])] = 1
            log_den[r0 : r0 + step] = gf.log[diff].sum(axis=1) % gf.order
        self._log_den = log_den

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
            xs = evaluation_points(
                gf, self.matrix, np.array([esis[c] for c in rep_idx], dtype=np.int64) + shift
            )
            d = xs[None, :] ^ self._pts[:, None]  # (base_k, r), never 0: distinct points
            logd = gf.log[d]
            log_p = logd.sum(axis=0) % gf.order  # log prod_l (x_j - x_l)
            lg = (log_p[None, :] - logd - self._log_den[:, None]) % gf.order
            cols[:, rep_idx] = gf.exp[lg[: self.k]]
        return cols

    def encode(self, source: npt.NDArray[np.integer], esis: list[int]) -> npt.NDArray[np.integer]:
        """Encoding symbols ``esis`` from source elements (k, S) -> (len(esis), S).

        The product tables of GM's columns depend only on (code, ESIs), identical for every
        block of an object, so they are built once and kept in a byte-bounded LRU.
        """
        key = (self.m, self.k, self.base_k, self.matrix, tuple(esis))
        tables = _TABLES.get(key)
        if tables is None:
            tables = self.gf.byte_tables(self.columns(esis).T.copy())
            _TABLES.put(key, tables)
        return self.gf.combine_tables(tables, len(esis), source)

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
        gf = self.gf
        # y_rep = s_M . A + s_K . C_K  with A = cols[M], C_K = cols[K], so
        # s_M = y_rep . A^-1 + s_K . (C_K . A^-1): one pass over the k received rows
        a_inv = gf.mat_inv(cols[missing])  # (e, e)
        coeffs = np.zeros((len(missing), self.k), dtype=np.int64)
        coeffs[:, [have[j] for j in rep]] = a_inv.T
        if known:
            # (C_K . A^-1)^T = A^-T . C_K^T: a small combine over the field
            coeffs[:, [have[i] for i in known]] = gf.combine(a_inv.T.copy(), cols[known].T.copy())
        out[missing] = gf.combine(coeffs, received)
        return out


class _TableCache:
    """LRU of encoder product tables, bounded by total bytes (not entries)."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self._d: OrderedDict[tuple[object, ...], npt.NDArray[np.uint64]] = OrderedDict()

    def get(self, key: tuple[object, ...]) -> npt.NDArray[np.uint64] | None:
        t = self._d.get(key)
        if t is not None:
            self._d.move_to_end(key)
        return t

    def put(self, key: tuple[object, ...], tables: npt.NDArray[np.uint64]) -> None:
        if tables.nbytes > self.max_bytes:
            return
        self._d[key] = tables
        self.bytes += tables.nbytes
        while self.bytes > self.max_bytes:
            _, old = self._d.popitem(last=False)
            self.bytes -= old.nbytes

    def clear(self) -> None:
        self._d.clear()
        self.bytes = 0


#: encoder tables: k=400, 32 repair, GF(2^16) = 13 MB; k=64, 16 repair, GF(2^8) = 256 KB
_TABLES = _TableCache(96 << 20)


@lru_cache(maxsize=256)
def rs_code(m: int, k: int, matrix: str, base_k: int | None = None) -> RSCode:
    return RSCode(m, k, matrix, base_k)
