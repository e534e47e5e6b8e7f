"""TESLA session parameters and every numeric choice of RFC 5776 as a named constant.

Registries: RFC 5776 §7 (values) and §2.5 (lengths).  Interval math: RFC 5776 §3.1.1,
§4.3 step 2, done with exact integers (NTP times in 2^-32 s units, see :mod:`tesla.core.ntp`).
See docs/tesla-choices.md for every point the RFC leaves open.
"""

from __future__ import annotations

from dataclasses import dataclass

from tesla.core.ntp import NTP_ONE_SECOND

# --- TESLA-PRF registry (RFC 5776 §7) -------------------------------------------------
PRF_HMAC_SHA1 = 0
PRF_HMAC_SHA224 = 1
PRF_HMAC_SHA256 = 2  # default, MUST implement
PRF_HMAC_SHA384 = 3
PRF_HMAC_SHA512 = 4
DEFAULT_PRF = PRF_HMAC_SHA256

# --- TESLA-MAC registry (RFC 5776 §7), used for the TESLA MAC and the Group MAC --------
MAC_HMAC_SHA1 = 0
MAC_HMAC_SHA224 = 1
MAC_HMAC_SHA256 = 2  # default, MUST implement
MAC_HMAC_SHA384 = 3
MAC_HMAC_SHA512 = 4
DEFAULT_MAC = MAC_HMAC_SHA256

#: hashlib / OpenSSL name of the hash behind each PRF/MAC registry value
HMAC_HASH_NAME: dict[int, str] = {
    0: "sha1",
    1: "sha224",
    2: "sha256",
    3: "sha384",
    4: "sha512",
}
#: n_p/8 = n_f/8: chain key and MAC-key length in bytes per PRF type (RFC 5776 §2.5)
PRF_KEY_LEN: dict[int, int] = {0: 20, 1: 28, 2: 32, 3: 48, 4: 64}
#: n_m/8: truncated TESLA MAC length in bytes per MAC function type (RFC 5776 §2.5)
MAC_LEN: dict[int, int] = {0: 10, 1: 14, 2: 16, 3: 24, 4: 32}
#: n_w/8: truncated Group MAC length in bytes per MAC function type (RFC 5776 §2.5)
GROUP_MAC_LEN: dict[int, int] = {0: 4, 1: 4, 2: 4, 3: 4, 4: 4}
WEAK_GROUP_MAC_LEN = 4

# --- TESLA-SIG-ALGO and TESLA-SIG-CRYPTO-FUNC (RFC 5776 §7) ----------------------------
SIG_ALGO_INVALID = 0
SIG_ALGO_RSASSA_PKCS1_V1_5 = 1  # default, MUST implement
SIG_ALGO_RSASSA_PSS = 2
DEFAULT_SIG_ALGO = SIG_ALGO_RSASSA_PKCS1_V1_5

SIG_HASH_INVALID = 0
SIG_HASH_SHA1 = 1
SIG_HASH_SHA224 = 2
SIG_HASH_SHA256 = 3  # default, MUST implement (NB: 3 here, 2 in the PRF/MAC registries)
SIG_HASH_SHA384 = 4
SIG_HASH_SHA512 = 5
DEFAULT_SIG_HASH = SIG_HASH_SHA256
SIG_HASH_NAME: dict[int, str] = {1: "sha1", 2: "sha224", 3: "sha256", 4: "sha384", 5: "sha512"}

#: registry values 241..255 are private use (RFC 5776 §7); we implement none of them
REGISTRY_PRIVATE_USE = range(241, 256)

# --- field ranges (RFC 5776 §3.4.1, §5.1) ---------------------------------------------
D_MIN = 2  # "d MUST be >= 2" (RFC 5776 §3.4.1)
D_MAX = 255  # 8-bit field
TINT_MIN_MS = 1  # DIGEST CHOICE: 0 is meaningless, rejected
TINT_MAX_MS = 0xFFFF  # 16-bit field, milliseconds
N_MAX = 0xFFFF_FFFF  # 32-bit field
ASID_MAX = 15  # 4-bit field
INTERVAL_INDEX_BITS = 32
INTERVAL_INDEX_MODULUS = 1 << INTERVAL_INDEX_BITS  # RFC 5776 §3.1.1: uint32, wraps
TESLA_VERSION = 0  # bootstrap V field

#: Interval-index wrap policy (RFC 5776 §3.1.1 mentions the wrap but never says how to
#: handle it).  We REFUSE: no interval index >= 2^32 is ever put on the wire
#: (:meth:`TeslaParams.wire_index` raises), a sender session that would reach it is
#: rejected by :meth:`TeslaParams.check_session_duration`, and a receiver needs no
#: special case: once the sender time bound passes interval 2^32 - 1 + d, every
#: 32-bit tag index fails the safe-packet test, so the session simply ends.
INTERVAL_WRAP_POLICY = "refuse"


class ParamError(ValueError):
    """Invalid TESLA session parameters (configuration error, not a wire decode error)."""


@dataclass(frozen=True)
class TeslaParams:
    """Static TESLA session parameters (RFC 5776 §3.1.3, §3.4.1).

    ``t0_ntp`` is the NTP time (unbounded int, 2^-32 s units) of the start of interval 0;
    ``n_chain`` is N: each chain holds N+1 keys K_0..K_N (RFC 5776 §1.3.1).
    """

    t0_ntp: int
    tint_ms: int = 500
    n_chain: int = 10_000
    d: int = D_MIN
    prf_id: int = DEFAULT_PRF
    mac_id: int = DEFAULT_MAC
    group_mac: bool = False
    group_mac_id: int = DEFAULT_MAC  # only meaningful when group_mac (sent as 0 when G=0)
    asid: int = 0
    sig_algo_id: int = DEFAULT_SIG_ALGO
    sig_hash_id: int = DEFAULT_SIG_HASH
    single_chain: bool = False  # bootstrap S flag

    def __post_init__(self) -> None:
        if not isinstance(self.t0_ntp, int) or self.t0_ntp < 0:
            raise ParamError("t0_ntp must be a non-negative integer NTP time")
        if not TINT_MIN_MS <= self.tint_ms <= TINT_MAX_MS:
            raise ParamError(f"tint_ms must be in {TINT_MIN_MS}..{TINT_MAX_MS}")
        if not D_MIN <= self.d <= D_MAX:
            raise ParamError(f"d must be in {D_MIN}..{D_MAX} (RFC 5776 §3.4.1: d >= 2)")
        if not 1 <= self.n_chain <= N_MAX:
            raise ParamError(f"n_chain (N) must be in 1..{N_MAX}")
        if self.prf_id not in PRF_KEY_LEN:
            raise ParamError(f"unsupported PRF type {self.prf_id}")
        if self.mac_id not in MAC_LEN:
            raise ParamError(f"unsupported MAC function type {self.mac_id}")
        if self.group_mac_id not in GROUP_MAC_LEN:
            raise ParamError(f"unsupported Group MAC function type {self.group_mac_id}")
        if not 0 <= self.asid <= ASID_MAX:
            raise ParamError(f"asid must be in 0..{ASID_MAX}")
        if self.sig_algo_id not in (SIG_ALGO_RSASSA_PKCS1_V1_5, SIG_ALGO_RSASSA_PSS):
            raise ParamError(f"unsupported signature algorithm {self.sig_algo_id}")
        if self.sig_hash_id not in SIG_HASH_NAME:
            raise ParamError(f"unsupported signature hash {self.sig_hash_id}")

    # ---- lengths -------------------------------------------------------------------
    @property
    def key_len(self) -> int:
        """n_p/8 (= n_f/8): bytes of a chain key, a MAC key and a commitment."""
        return PRF_KEY_LEN[self.prf_id]

    @property
    def mac_len(self) -> int:
        """n_m/8: bytes of the truncated TESLA MAC."""
        return MAC_LEN[self.mac_id]

    @property
    def group_mac_len(self) -> int:
        """n_w/8 when the session uses the Group MAC, else 0."""
        return GROUP_MAC_LEN[self.group_mac_id] if self.group_mac else 0

    @property
    def wire_group_mac_id(self) -> int:
        """Group MAC Function Type as sent in the bootstrap: MUST be 0 when G = 0."""
        return self.group_mac_id if self.group_mac else 0

    @property
    def prf_hash(self) -> str:
        return HMAC_HASH_NAME[self.prf_id]

    @property
    def mac_hash(self) -> str:
        return HMAC_HASH_NAME[self.mac_id]

    # ---- time / intervals ----------------------------------------------------------
    @property
    def tint_ntp_num(self) -> int:
        """T_int in 2^-32 s units times 1000 (exact integer: T_int = this / 1000)."""
        return self.tint_ms * NTP_ONE_SECOND

    def interval_of(self, ntp_time: int) -> int:
        """i = floor((T - T0) / T_int), exact; negative before T0, unbounded above.

        The result is an absolute index (not reduced mod 2^32): the safe-packet test
        needs the exact floor.  Use :meth:`wire_index` to put it in a tag.
        """
        return ((ntp_time - self.t0_ntp) * 1000) // (self.tint_ms * NTP_ONE_SECOND)

    def interval_start(self, i: int) -> int:
        """Smallest NTP time (2^-32 s units) that belongs to interval i.

        Exact: ``interval_of(interval_start(i)) == i`` and
        ``interval_of(interval_start(i) - 1) == i - 1``.
        """
        return self.t0_ntp - ((-i * self.tint_ms * NTP_ONE_SECOND) // 1000)

    def wire_index(self, i: int) -> int:
        """The 32-bit interval index field value; refuses indices that would wrap."""
        if not 0 <= i < INTERVAL_INDEX_MODULUS:
            raise ParamError(
                f"interval index {i} outside 0..2^32-1: the session would wrap "
                f"(policy {INTERVAL_WRAP_POLICY!r})"
            )
        return i

    @property
    def max_session_seconds(self) -> float:
        """Duration from T0 after which the 32-bit interval index would wrap."""
        return INTERVAL_INDEX_MODULUS * self.tint_ms / 1000

    def check_session_duration(self, seconds: float) -> None:
        """Refuse (ParamError) a planned session that would wrap the interval index."""
        if seconds > self.max_session_seconds:
            raise ParamError(
                f"session of {seconds} s exceeds 2^32 intervals of {self.tint_ms} ms "
                f"({self.max_session_seconds} s): refused, index would wrap"
            )

    # ---- chains (RFC 5776 §3.1.2.2): chain j covers indices j(N+1) .. j(N+1)+N ------
    @property
    def keys_per_chain(self) -> int:
        """n_c = N + 1."""
        return self.n_chain + 1

    def chain_of(self, i: int) -> int:
        return i // (self.n_chain + 1)

    def chain_first(self, j: int) -> int:
        return j * (self.n_chain + 1)

    def chain_last(self, j: int) -> int:
        return j * (self.n_chain + 1) + self.n_chain

    def commitment_index(self, j: int) -> int:
        """Virtual verified-key index of chain j's commitment F(K_{j(N+1)})."""
        return j * (self.n_chain + 1) - 1

    def old_chain_last_key_index(self, i: int) -> int:
        """Index of the key a Type 4 tag carries: K_{j(N+1)-1}, j = floor(i/(N+1))."""
        return self.chain_of(i) * (self.n_chain + 1) - 1
