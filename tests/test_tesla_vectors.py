"""Self-published TESLA test vectors (tests/vectors/tesla_*.json), each value re-derived
here with plain ``hmac`` / ``hashlib`` / ``pow`` (never through the library), and the
library checked against the same files.

The vectors are NOT from the RFC (RFC 5776 and RFC 4082 publish none).  Choices they
depend on: F(k) = HMAC(k, 0x00), F'(k) = HMAC(k, 0x01) (one octet, docs/tesla-choices.md),
full-length F/F' output, TESLA MAC = first n_m/8 bytes, Group MAC = first 4 bytes.

Regenerate with ``python tests/test_tesla_vectors.py`` (only when a choice changes).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import struct
from fractions import Fraction
from pathlib import Path

import pytest

VDIR = Path(__file__).parent / "vectors"
CHAINS = VDIR / "tesla_chains.json"
MACS = VDIR / "tesla_macs.json"
MULTI = VDIR / "tesla_multichain.json"
SIG = VDIR / "tesla_bootstrap_sig.json"
TIME = VDIR / "tesla_time.json"

# Restated independently from RFC 5776 §2.5 / §7 (not imported from tesla.core.params)
HASH = {0: "sha1", 1: "sha224", 2: "sha256", 3: "sha384", 4: "sha512"}
KEY_LEN = {0: 20, 1: 28, 2: 32, 3: 48, 4: 64}
MAC_LEN = {0: 10, 1: 14, 2: 16, 3: 24, 4: 32}
SIG_HASH = {1: "sha1", 2: "sha224", 3: "sha256", 4: "sha384", 5: "sha512"}
NTP_OFFSET = 2208988800


def h(b: bytes) -> str:
    return b.hex()


def ub(s: str) -> bytes:
    return bytes.fromhex(s)


def ind_F(k: bytes, alg: int) -> bytes:  # noqa: N802
    return hmac.new(k, b"\x00", getattr(hashlib, HASH[alg])).digest()


def ind_Fp(k: bytes, alg: int) -> bytes:  # noqa: N802
    return hmac.new(k, b"\x01", getattr(hashlib, HASH[alg])).digest()


def load(p: Path) -> dict:
    return json.loads(p.read_text())


# --------------------------------------------------------------------- chains ----------


def test_chain_vectors_independent() -> None:
    v = load(CHAINS)
    assert v["f_message"] == "00" and v["f_prime_message"] == "01"
    for c in v["chains"]:
        alg, n = c["prf_id"], c["n"]
        keys = [ub(x) for x in c["keys"]]
        assert len(keys) == n + 1
        assert keys[n] == ub(c["primary_key"])
        assert all(len(k) == KEY_LEN[alg] for k in keys)
        for t in range(n, 0, -1):
            assert ind_F(keys[t], alg) == keys[t - 1]
        assert ind_F(keys[0], alg) == ub(c["commitment"])
        assert [ind_Fp(k, alg) for k in keys] == [ub(x) for x in c["mac_keys"]]


def test_chain_vectors_library() -> None:
    from tesla.core.crypto import F, F_prime
    from tesla.core.keychain import CheckpointChain, FractalChain, FullChain, generate_chain

    for c in load(CHAINS)["chains"]:
        alg, n, pk = c["prf_id"], c["n"], ub(c["primary_key"])
        keys = generate_chain(pk, n, alg)
        assert [h(k) for k in keys] == c["keys"]
        assert h(F(keys[0], alg)) == c["commitment"]
        assert [h(F_prime(k, alg)) for k in keys] == c["mac_keys"]
        for cls in (FullChain, CheckpointChain, FractalChain):
            s = cls(pk, n, alg)
            assert h(s.commitment) == c["commitment"]
            assert [h(s.key(t)) for t in range(n + 1)] == c["keys"]


# --------------------------------------------------------------------- MACs ------------


def test_mac_vectors_independent() -> None:
    for m in load(MACS)["macs"]:
        alg = m["mac_id"]
        full = hmac.new(ub(m["key"]), ub(m["data"]), getattr(hashlib, HASH[alg])).digest()
        assert ub(m["mac"]) == full[: MAC_LEN[alg]]
        assert ub(m["group_mac"]) == full[:4]
        assert len(ub(m["mac"])) * 8 == m["n_m_bits"]


def test_mac_vectors_library() -> None:
    from tesla.core.crypto import MacContext, group_mac, mac, weak_group_mac

    for m in load(MACS)["macs"]:
        alg, key, data = m["mac_id"], ub(m["key"]), ub(m["data"])
        assert h(mac(key, data, alg)) == m["mac"]
        assert h(MacContext(key, alg).compute(data)) == m["mac"]
        assert MacContext(key, alg).verify(data, ub(m["mac"]))
        assert h(group_mac(key, data, alg)) == m["group_mac"]
        assert h(weak_group_mac(key, data, alg)) == m["group_mac"]
        assert h(MacContext.group(key, alg).compute(data)) == m["group_mac"]


# --------------------------------------------------------------------- chains x3 -------


def test_multichain_vectors_independent() -> None:
    v = load(MULTI)
    n, alg = v["n"], v["prf_id"]
    for j, ch in enumerate(v["chains"]):
        k = ub(ch["primary_key"])
        keys = [k]
        for _ in range(n):
            keys.append(ind_F(keys[-1], alg))
        keys.reverse()
        assert ch["first_index"] == j * (n + 1)
        assert [h(x) for x in keys] == [v["keys"][str(j * (n + 1) + t)] for t in range(n + 1)]
        assert h(ind_F(keys[0], alg)) == ch["commitment"]
    # no F relation across chains
    assert h(ind_F(ub(v["keys"][str(n + 1)]), alg)) != v["keys"][str(n)]
    for row in v["tags"]:
        i, j = row["i"], row["i"] // (n + 1)
        if "type3_commitment" in row:
            assert row["type3_commitment"] == v["chains"][j + 1]["commitment"]
        if "type4_key" in row:
            assert row["type4_key_index"] == j * (n + 1) - 1
            assert row["type4_key"] == v["keys"][str(j * (n + 1) - 1)]
        if "type1_key" in row:
            assert row["type1_key"] == v["keys"][str(i - v["d"])]


def test_multichain_vectors_library() -> None:
    from tesla.core.keychain import KeyChainSet, KeyVerifierSet
    from tesla.core.params import TeslaParams

    v = load(MULTI)
    p = TeslaParams(t0_ntp=0, tint_ms=100, n_chain=v["n"], d=v["d"], prf_id=v["prf_id"])
    for strategy in ("full", "checkpoint", "fractal"):
        ks = KeyChainSet(p, strategy, primary_keys=[ub(c["primary_key"]) for c in v["chains"]])
        for j, c in enumerate(v["chains"]):
            assert h(ks.commitment(j)) == c["commitment"]
        for row in v["tags"]:
            i = row["i"]
            assert h(ks.key(i)) == v["keys"][str(i)]
            if "type1_key" in row:
                assert h(ks.disclosed_key(i)) == row["type1_key"]
            if "type3_commitment" in row:
                assert h(ks.next_chain_commitment(i)) == row["type3_commitment"]
            if "type4_key" in row:
                assert h(ks.old_chain_last_key(i)) == row["type4_key"]
    rv = KeyVerifierSet(p)
    rv.add_commitment(0, ub(v["chains"][0]["commitment"]))
    rv.add_commitment(1, ub(v["chains"][1]["commitment"]))
    for x in range(2 * (v["n"] + 1)):
        assert rv.verify(x, ub(v["keys"][str(x)]))


# --------------------------------------------------------------------- signatures ------

_DIGEST_INFO = {  # RFC 8017 §9.2 note 1, restated
    "sha1": bytes.fromhex("3021300906052b0e03021a05000414"),
    "sha224": bytes.fromhex("302d300d06096086480165030402040500041c"),
    "sha256": bytes.fromhex("3031300d060960864801650304020105000420"),
    "sha384": bytes.fromhex("3041300d060960864801650304020205000430"),
    "sha512": bytes.fromhex("3051300d060960864801650304020305000440"),
}


def ind_pkcs1v15_verify(n: int, e: int, msg: bytes, sig: bytes, hname: str) -> bool:
    k = (n.bit_length() + 7) // 8
    if len(sig) != k:
        return False
    s = int.from_bytes(sig, "big")
    if s >= n:
        return False
    em = pow(s, e, n).to_bytes(k, "big")
    t = _DIGEST_INFO[hname] + hashlib.new(hname, msg).digest()
    return em == b"\x00\x01" + b"\xff" * (k - len(t) - 3) + b"\x00" + t


def ind_pss_verify(n: int, e: int, msg: bytes, sig: bytes, hname: str, slen: int) -> bool:
    """EMSA-PSS-VERIFY (RFC 8017 §9.1.2) with MGF1(same hash), in plain Python."""
    mod_bits = n.bit_length()
    k = (mod_bits + 7) // 8
    if len(sig) != k:
        return False
    em_bits = mod_bits - 1
    em_len = (em_bits + 7) // 8
    em = pow(int.from_bytes(sig, "big"), e, n).to_bytes(em_len, "big")
    hl = hashlib.new(hname).digest_size
    mhash = hashlib.new(hname, msg).digest()
    if em[-1] != 0xBC:
        return False
    masked, hh = em[: em_len - hl - 1], em[em_len - hl - 1 : -1]

    def mgf1(seed: bytes, length: int) -> bytes:
        out = b""
        c = 0
        while len(out) < length:
            out += hashlib.new(hname, seed + c.to_bytes(4, "big")).digest()
            c += 1
        return out[:length]

    db = bytes(a ^ b for a, b in zip(masked, mgf1(hh, len(masked)), strict=True))
    zero_bits = 8 * em_len - em_bits
    db = bytes([db[0] & (0xFF >> zero_bits)]) + db[1:]
    ps_len = em_len - hl - slen - 2
    if db[:ps_len] != bytes(ps_len) or db[ps_len] != 1:
        return False
    salt = db[ps_len + 1 :]
    return hashlib.new(hname, bytes(8) + mhash + salt).digest() == hh


def test_signature_vectors_independent() -> None:
    v = load(SIG)
    n, e = int(v["public_n"], 16), v["public_e"]
    msg = ub(v["message"])
    for s in v["signatures"]:
        hname = SIG_HASH[s["sig_hash_id"]]
        sig = ub(s["signature"])
        assert len(sig) == v["signature_length"] == (n.bit_length() + 7) // 8
        if s["sig_algo_id"] == 1:
            assert ind_pkcs1v15_verify(n, e, msg, sig, hname)
            assert not ind_pkcs1v15_verify(n, e, msg + b"\x00", sig, hname)
        else:
            assert s["sig_algo_id"] == 2
            assert s["salt_length"] == hashlib.new(hname).digest_size
            assert ind_pss_verify(n, e, msg, sig, hname, s["salt_length"])
            assert not ind_pss_verify(n, e, msg[:-1], sig, hname, s["salt_length"])


def test_signature_vectors_library() -> None:
    from tesla.core.bootstrap_sig import load_private_key, load_public_key, sign, verify

    v = load(SIG)
    pub = load_public_key(v["public_key_pem"].encode())
    priv = load_private_key(v["private_key_pem"].encode())
    assert pub.public_numbers().n == int(v["public_n"], 16)
    msg = ub(v["message"])
    for s in v["signatures"]:
        a, hid, sig = s["sig_algo_id"], s["sig_hash_id"], ub(s["signature"])
        assert verify(pub, msg, sig, a, hid)
        if a == 1:  # PKCS#1 v1.5 is deterministic
            assert sign(priv, msg, a, hid) == sig


# --------------------------------------------------------------------- time ------------


def test_time_vectors_independent() -> None:
    v = load(TIME)
    for c in v["ntp"]:
        exact = Fraction(c["posix"]) + NTP_OFFSET
        ntp = c["ntp"]
        # nearest 2^-32 s
        assert abs(Fraction(ntp, 2**32) - exact) <= Fraction(1, 2**33)
    for c in v["intervals"]:
        t0, tint = c["t0_ntp"], c["tint_ms"]
        num = Fraction(c["t_ntp"] - t0, 2**32) / Fraction(tint, 1000)
        assert c["interval"] == num.__floor__()
    for c in v["safe"]:
        x = Fraction(c["arrival_ntp"] + c["d_t"] - c["t0_ntp"], 2**32)
        safe = x < Fraction((c["i"] + c["d"]) * c["tint_ms"], 1000)
        assert c["safe"] == safe


def test_time_vectors_library() -> None:
    from tesla.core.ntp import posix_to_ntp
    from tesla.core.params import TeslaParams
    from tesla.core.timesync import is_safe

    v = load(TIME)
    for c in v["ntp"]:
        assert posix_to_ntp(c["posix"]) == c["ntp"]
    for c in v["intervals"]:
        p = TeslaParams(t0_ntp=c["t0_ntp"], tint_ms=c["tint_ms"], n_chain=10)
        assert p.interval_of(c["t_ntp"]) == c["interval"]
    for c in v["safe"]:
        p = TeslaParams(t0_ntp=c["t0_ntp"], tint_ms=c["tint_ms"], n_chain=10, d=c["d"])
        assert is_safe(c["arrival_ntp"], c["d_t"], c["i"], p) == c["safe"]


# --------------------------------------------------------------------- generator -------


def _seed_bytes(label: str, n: int) -> bytes:
    out = b""
    c = 0
    while len(out) < n:
        out += hashlib.sha512(f"{label}/{c}".encode()).digest()
        c += 1
    return out[:n]


def _generate() -> None:  # pragma: no cover - run by hand
    from cryptography.hazmat.primitives.asymmetric import rsa

    from tesla.core.bootstrap_sig import private_key_pem, public_key_pem, sign
    from tesla.core.crypto import F, F_prime, group_mac, mac
    from tesla.core.keychain import KeyChainSet, generate_chain
    from tesla.core.ntp import posix_to_ntp
    from tesla.core.params import TeslaParams

    note = "self-generated, not from any RFC; F(k)=HMAC(k,0x00), F'(k)=HMAC(k,0x01)"
    chains = []
    for alg in range(5):
        pk = _seed_bytes(f"tesla-chain-prf{alg}", KEY_LEN[alg])
        keys = generate_chain(pk, 8, alg)
        chains.append(
            {
                "prf_id": alg,
                "n": 8,
                "primary_key": h(pk),
                "keys": [h(k) for k in keys],
                "commitment": h(F(keys[0], alg)),
                "mac_keys": [h(F_prime(k, alg)) for k in keys],
            }
        )
    CHAINS.write_text(
        json.dumps(
            {"note": note, "f_message": "00", "f_prime_message": "01", "chains": chains},
            indent=1,
        )
        + "\n"
    )

    macs = []
    for alg in range(5):
        key = _seed_bytes(f"tesla-mackey{alg}", 32)
        for size in (0, 64, 1400):
            data = _seed_bytes(f"tesla-data{size}", size)
            macs.append(
                {
                    "mac_id": alg,
                    "n_m_bits": MAC_LEN[alg] * 8,
                    "key": h(key),
                    "data": h(data),
                    "mac": h(mac(key, data, alg)),
                    "group_mac": h(group_mac(key, data, alg)),
                }
            )
    MACS.write_text(json.dumps({"note": note, "macs": macs}, indent=1) + "\n")

    n, d = 4, 2
    p = TeslaParams(t0_ntp=0, tint_ms=100, n_chain=n, d=d)
    pks = [_seed_bytes(f"tesla-multichain{j}", 32) for j in range(3)]
    ks = KeyChainSet(p, "full", primary_keys=pks)
    keys = {str(i): h(ks.key(i)) for i in range(3 * (n + 1))}
    tags = []
    for i in range(3 * (n + 1)):
        row: dict = {"i": i}
        if i >= d:
            row["type1_key"] = h(ks.disclosed_key(i))
        if p.chain_of(i) < 2:
            row["type3_commitment"] = h(ks.next_chain_commitment(i))
        if p.chain_of(i) >= 1:
            row["type4_key_index"] = p.old_chain_last_key_index(i)
            row["type4_key"] = h(ks.old_chain_last_key(i))
        tags.append(row)
    MULTI.write_text(
        json.dumps(
            {
                "note": note + "; chain j covers indices j(N+1)..j(N+1)+N",
                "prf_id": 2,
                "n": n,
                "d": d,
                "chains": [
                    {
                        "first_index": j * (n + 1),
                        "primary_key": h(pk),
                        "commitment": h(ks.commitment(j)),
                    }
                    for j, pk in enumerate(pks)
                ],
                "keys": keys,
                "tags": tags,
            },
            indent=1,
        )
        + "\n"
    )

    priv = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    pubn = priv.public_key().public_numbers()
    # a bootstrap-like authenticated portion: EXT_AUTH Type 0 fixed part + commitment,
    # signature field zeroed (the bytes the RFC signs, minus the LCT/NORM header)
    commit = ub(chains[2]["commitment"])
    fixed = struct.pack(
        ">BBBBBBBBBBHHHQII",
        1,
        48,
        0x00,
        0x00,
        2,
        2,
        2,
        0,
        1,
        3,
        128,
        0,
        500,
        posix_to_ntp(1_800_000_000),
        1000,
        0,
    )
    message = fixed + commit + bytes(128)
    sigs = [
        {"sig_algo_id": 1, "sig_hash_id": hid, "signature": h(sign(priv, message, 1, hid))}
        for hid in range(1, 6)
    ]
    sigs += [
        {
            "sig_algo_id": 2,
            "sig_hash_id": hid,
            "salt_length": hashlib.new(SIG_HASH[hid]).digest_size,
            "signature": h(sign(priv, message, 2, hid)),
        }
        for hid in range(1, 5)
    ]
    SIG.write_text(
        json.dumps(
            {
                "note": "throw-away RSA-1024 test key; message = EXT_AUTH Type 0 with zeroed signature",
                "public_key_pem": public_key_pem(priv.public_key()).decode(),
                "private_key_pem": private_key_pem(priv).decode(),
                "public_n": format(pubn.n, "x"),
                "public_e": pubn.e,
                "signature_length": 128,
                "message": h(message),
                "signatures": sigs,
            },
            indent=1,
        )
        + "\n"
    )

    t0 = posix_to_ntp(1_800_000_000.25)
    ntp_cases = [
        {"posix": x, "ntp": posix_to_ntp(x)}
        for x in (0.0, 1.5, 1_800_000_000.123456, 2_085_978_496.0, 2_085_978_495.999999)
    ]
    iv = []
    for tint in (1, 100, 333, 1000, 65535):
        for dt in (
            -1,
            0,
            1,
            (tint * 2**32) // 1000,
            (tint * 2**32 + 999) // 1000,
            7 * tint * 2**32 // 1000 + 5,
        ):
            iv.append(
                {
                    "t0_ntp": t0,
                    "tint_ms": tint,
                    "t_ntp": t0 + dt,
                    "interval": TeslaParams(t0_ntp=t0, tint_ms=tint, n_chain=10).interval_of(
                        t0 + dt
                    ),
                }
            )
    safe = []
    for tint, d, i in ((1000, 2, 5), (100, 3, 0), (333, 2, 17)):
        p2 = TeslaParams(t0_ntp=t0, tint_ms=tint, n_chain=10, d=d)
        edge = p2.interval_start(i + d)
        for d_t in (0, 2**32 // 100):
            for arr in (edge - d_t - 1, edge - d_t, edge - d_t + 1, t0):
                from tesla.core.timesync import is_safe

                safe.append(
                    {
                        "t0_ntp": t0,
                        "tint_ms": tint,
                        "d": d,
                        "i": i,
                        "d_t": d_t,
                        "arrival_ntp": arr,
                        "safe": is_safe(arr, d_t, i, p2),
                    }
                )
    TIME.write_text(
        json.dumps(
            {"note": "exact NTP/interval math", "ntp": ntp_cases, "intervals": iv, "safe": safe},
            indent=1,
        )
        + "\n"
    )


if __name__ == "__main__":  # pragma: no cover
    _generate()
    print("vectors written to", VDIR)


@pytest.mark.parametrize("p", [CHAINS, MACS, MULTI, SIG, TIME])
def test_vector_files_present(p: Path) -> None:
    assert p.exists() and load(p)


# --------------------------------------------------------------------- signature negatives


def test_signature_bit_flips_and_other_key_fail() -> None:
    from tesla.core.bootstrap_sig import (
        SignatureVerifier,
        Signer,
        generate_private_key,
        load_public_key,
    )

    v = load(SIG)
    pub = load_public_key(v["public_key_pem"].encode())
    other = generate_private_key(1024)
    msg = ub(v["message"])
    for s in v["signatures"]:
        ver = SignatureVerifier(pub, s["sig_algo_id"], s["sig_hash_id"])
        sig = ub(s["signature"])
        assert ver.verify(msg, sig)
        for pos in (0, len(sig) // 2, len(sig) - 1):
            for bit in (0, 7):
                bad = bytearray(sig)
                bad[pos] ^= 1 << bit
                assert not ver.verify(msg, bytes(bad))
        for pos in (0, 33, len(msg) - 1):
            m2 = bytearray(msg)
            m2[pos] ^= 0x10
            assert not ver.verify(bytes(m2), sig)
        assert not ver.verify(msg, sig[:-1])
        # right algorithm, another sender's key
        sig_other = Signer(other, s["sig_algo_id"], s["sig_hash_id"]).sign(msg)
        assert not ver.verify(msg, sig_other)
        # algorithm confusion
        assert not SignatureVerifier(pub, 3 - s["sig_algo_id"], s["sig_hash_id"]).verify(msg, sig)
    assert not SignatureVerifier(pub, 0, 3).verify(msg, bytes(128))


def test_keygen_writes_pem_pair(tmp_path: Path) -> None:
    import stat

    from tesla.cli.keygen import generate_keypair, keygen_main
    from tesla.core.bootstrap_sig import (
        SignatureVerifier,
        Signer,
        load_private_key,
        load_public_key,
    )

    priv, pub = generate_keypair(tmp_path, bits=1024)
    assert (priv.name, pub.name) == ("SENDER.pem", "SENDER.pub")
    assert stat.S_IMODE(priv.stat().st_mode) == 0o600
    k = load_private_key(priv)
    sig = Signer(k).sign(b"bootstrap")
    assert SignatureVerifier(load_public_key(pub)).verify(b"bootstrap", sig)
    with pytest.raises(FileExistsError):
        generate_keypair(tmp_path, bits=1024)
    assert keygen_main(["--out", str(tmp_path), "--bits", "1024"]) == 2
    assert keygen_main(["--out", str(tmp_path / "x.pem"), "--bits", "1024"]) == 0
    assert (tmp_path / "x.pub").exists()


def test_keygen_creates_missing_directories(tmp_path: Path) -> None:
    from tesla.cli.keygen import keygen_main

    target = tmp_path / "not" / "yet" / "SENDER"
    assert keygen_main(["--out", str(target), "--bits", "1024"]) == 0
    assert (target.parent / "SENDER.pem").exists() and (target.parent / "SENDER.pub").exists()
