"""PRF, F, F', TESLA MAC and Group MAC (RFC 5776 §2.5, §3.1.2.1, §3.3.1, §3.3.3).

* ``F(k)  = f_k(0)`` and ``F'(k) = f_k(1)`` where f is HMAC over the PRF type's hash,
  k the HMAC key and the "message" 0 / 1.  The RFC does not say how 0 and 1 are
  encoded; we use one octet (:data:`F_MESSAGE` = ``b"\\x00"``,
  :data:`F_PRIME_MESSAGE` = ``b"\\x01"``), see docs/tesla-choices.md.  The output is
  the full HMAC output (n_p = n_f = hash length), not truncated.
* ``mac(K'_i, M)`` = HMAC over the MAC function type's hash truncated to its n_m most
  significant bits (first n_m/8 bytes); the Group MAC keeps n_w = 32 bits.

Performance: ``cryptography``'s HMAC object (OpenSSL) beats ``hmac.digest`` here, both
for a fresh key per call (chain building) and, with one keyed object ``.copy()``-ed per
packet, for per-packet MACs (:class:`MacContext`).
"""

from __future__ import annotations

import hmac as _hmac
from collections.abc import Iterable

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.hmac import HMAC

from tesla.core.params import (
    DEFAULT_MAC,
    DEFAULT_PRF,
    GROUP_MAC_LEN,
    MAC_LEN,
    PRF_KEY_LEN,
)

#: Encoding of the PRF input "0" of F(k) = f_k(0) (RFC 5776 §3.1.2.1, unspecified):
#: a single octet.  Alternative seen elsewhere: 4-byte big-endian integer.
PRF_INPUT_ENCODING = "octet"
F_MESSAGE = b"\x00"
#: Encoding of the PRF input "1" of F'(k) = f_k(1).
F_PRIME_MESSAGE = b"\x01"

_HASH_CLASSES: dict[int, type[hashes.HashAlgorithm]] = {
    0: hashes.SHA1,
    1: hashes.SHA224,
    2: hashes.SHA256,
    3: hashes.SHA384,
    4: hashes.SHA512,
}


def hash_algorithm(alg_id: int) -> hashes.HashAlgorithm:
    """``cryptography`` hash object for a TESLA-PRF / TESLA-MAC registry value."""
    try:
        return _HASH_CLASSES[alg_id]()
    except KeyError:
        raise ValueError(f"unsupported PRF/MAC function type {alg_id}") from None


def prf(key: bytes, message: bytes, prf_id: int = DEFAULT_PRF) -> bytes:
    """f_k(message): full-length HMAC (RFC 5776 §3.1.2.1)."""
    h = HMAC(key, hash_algorithm(prf_id))
    h.update(message)
    return h.finalize()


def F(key: bytes, prf_id: int = DEFAULT_PRF) -> bytes:  # noqa: N802 (RFC name)
    """F(k) = f_k(0): one step down the key chain, K_{i-1} = F(K_i)."""
    h = HMAC(key, _HASH_CLASSES[prf_id]())
    h.update(F_MESSAGE)
    return h.finalize()


def F_prime(key: bytes, prf_id: int = DEFAULT_PRF) -> bytes:  # noqa: N802 (RFC name)
    """F'(k) = f_k(1): the MAC key K'_i = F'(K_i)."""
    h = HMAC(key, _HASH_CLASSES[prf_id]())
    h.update(F_PRIME_MESSAGE)
    return h.finalize()


def F_iter(key: bytes, steps: int, prf_id: int = DEFAULT_PRF) -> bytes:  # noqa: N802
    """F^steps(key) in a tight loop."""
    alg = _HASH_CLASSES[prf_id]()
    msg = F_MESSAGE
    k = key
    for _ in range(steps):
        h = HMAC(k, alg)
        h.update(msg)
        k = h.finalize()
    return k


def _truncated_hmac(
    key: bytes, data: bytes, mac_id: int, lengths: dict[int, int], what: str
) -> bytes:
    try:
        n = lengths[mac_id]
    except KeyError:
        raise ValueError(f"unsupported {what} function type {mac_id}") from None
    h = HMAC(key, _HASH_CLASSES[mac_id]())
    h.update(data)
    return h.finalize()[:n]


def mac(key: bytes, data: bytes, mac_id: int = DEFAULT_MAC) -> bytes:
    """TESLA MAC: HMAC truncated to n_m/8 bytes (RFC 5776 §2.5, §3.3.1)."""
    return _truncated_hmac(key, data, mac_id, MAC_LEN, "MAC")


def group_mac(key: bytes, data: bytes, mac_id: int = DEFAULT_MAC) -> bytes:
    """Group MAC: HMAC truncated to n_w/8 = 4 bytes (RFC 5776 §2.5, §3.3.3)."""
    return _truncated_hmac(key, data, mac_id, GROUP_MAC_LEN, "Group MAC")


def weak_group_mac(key: bytes, data: bytes, mac_id: int = DEFAULT_MAC) -> bytes:
    """The 4-byte "weak group MAC" of RFC 5776 §3.3.3 (alias of :func:`group_mac`)."""
    return group_mac(key, data, mac_id)


def constant_time_equal(a: bytes, b: bytes) -> bool:
    return _hmac.compare_digest(a, b)


class MacContext:
    """HMAC keyed once, ``.copy()``-ed per message: the fastest per-packet MAC here.

    ``MacContext(K'_i, mac_id).compute(packet)`` -> truncated MAC (n_m/8 bytes, or
    ``length`` bytes if given, e.g. 4 for a Group MAC context).
    """

    __slots__ = ("_base", "length", "mac_id")

    def __init__(self, key: bytes, mac_id: int = DEFAULT_MAC, length: int | None = None) -> None:
        if mac_id not in MAC_LEN:
            raise ValueError(f"unsupported MAC function type {mac_id}")
        self.mac_id = mac_id
        self.length = MAC_LEN[mac_id] if length is None else length
        self._base = HMAC(key, _HASH_CLASSES[mac_id]())

    @classmethod
    def group(cls, key: bytes, mac_id: int = DEFAULT_MAC) -> MacContext:
        """Context producing the 4-byte Group MAC."""
        return cls(key, mac_id, GROUP_MAC_LEN[mac_id])

    def compute(self, data: bytes | bytearray | memoryview) -> bytes:
        h = self._base.copy()
        h.update(data)
        return h.finalize()[: self.length]

    def compute_parts(self, parts: Iterable[bytes | bytearray | memoryview]) -> bytes:
        """MAC over the concatenation of ``parts`` without joining them."""
        h = self._base.copy()
        for p in parts:
            h.update(p)
        return h.finalize()[: self.length]

    def verify(self, data: bytes | bytearray | memoryview, tag: bytes) -> bool:
        return _hmac.compare_digest(self.compute(data), tag)

    def compute_many(self, items: Iterable[bytes | bytearray | memoryview]) -> list[bytes]:
        """Batch form: one MAC per item (tight loop, no per-call attribute lookups)."""
        base_copy = self._base.copy
        n = self.length
        out: list[bytes] = []
        append = out.append
        for data in items:
            h = base_copy()
            h.update(data)
            append(h.finalize()[:n])
        return out


def mac_key_length(prf_id: int) -> int:
    return PRF_KEY_LEN[prf_id]
