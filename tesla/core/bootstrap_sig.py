"""Signatures of the bootstrap (Type 0) and direct time-sync response (Type 6) messages
(RFC 5776 §3.3.2, §4.1.2, §7): RSASSA-PKCS1-v1_5 (default) and RSASSA-PSS (RFC 8017)
through ``cryptography``, plus PEM load/save.

The caller passes the "authenticated portion" (the whole ALC/NORM packet with the
Signature field and the Group MAC field zeroed); this module only signs/verifies bytes.
Signature length = modulus length in bytes, ceil(modBits/8) (RFC 4359).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from tesla.core.params import (
    DEFAULT_SIG_ALGO,
    DEFAULT_SIG_HASH,
    SIG_ALGO_RSASSA_PKCS1_V1_5,
    SIG_ALGO_RSASSA_PSS,
)

_SIG_HASHES: dict[int, type[hashes.HashAlgorithm]] = {
    1: hashes.SHA1,
    2: hashes.SHA224,
    3: hashes.SHA256,
    4: hashes.SHA384,
    5: hashes.SHA512,
}

#: RSASSA-PSS parameters RFC 5776 leaves open: MGF1 with the signature hash, and the
#: salt length.  "digest" = salt length equal to the hash output length (RFC 8017 §9.1
#: recommendation); an int forces that many bytes.
PSS_SALT_LENGTH_DEFAULT: int | str = "digest"
DEFAULT_RSA_BITS = 2048
#: public exponent used by keygen
RSA_PUBLIC_EXPONENT = 65537


def sig_hash(sig_hash_id: int) -> hashes.HashAlgorithm:
    try:
        return _SIG_HASHES[sig_hash_id]()
    except KeyError:
        raise ValueError(f"unsupported Signature Cryptographic Function {sig_hash_id}") from None


def _padding(
    sig_algo_id: int, h: hashes.HashAlgorithm, salt_length: int | str
) -> padding.AsymmetricPadding:
    if sig_algo_id == SIG_ALGO_RSASSA_PKCS1_V1_5:
        return padding.PKCS1v15()
    if sig_algo_id == SIG_ALGO_RSASSA_PSS:
        salt = h.digest_size if salt_length == "digest" else int(salt_length)
        return padding.PSS(mgf=padding.MGF1(h), salt_length=salt)
    raise ValueError(f"unsupported Signature Encoding Algorithm {sig_algo_id}")


def signature_length(key: rsa.RSAPrivateKey | rsa.RSAPublicKey) -> int:
    """Bytes of a signature = ceil(modulus bits / 8) (the Signature Length field)."""
    return (key.key_size + 7) // 8


def sign(
    private_key: rsa.RSAPrivateKey,
    message: bytes,
    sig_algo_id: int = DEFAULT_SIG_ALGO,
    sig_hash_id: int = DEFAULT_SIG_HASH,
    pss_salt_length: int | str = PSS_SALT_LENGTH_DEFAULT,
) -> bytes:
    """Signature over ``message`` (exactly signature_length(key) bytes)."""
    h = sig_hash(sig_hash_id)
    return private_key.sign(message, _padding(sig_algo_id, h, pss_salt_length), h)


def verify(
    public_key: rsa.RSAPublicKey,
    message: bytes,
    signature: bytes,
    sig_algo_id: int = DEFAULT_SIG_ALGO,
    sig_hash_id: int = DEFAULT_SIG_HASH,
    pss_salt_length: int | str = PSS_SALT_LENGTH_DEFAULT,
) -> bool:
    """True iff ``signature`` is valid; never raises on bad input (unknown IDs -> False)."""
    if sig_algo_id not in (SIG_ALGO_RSASSA_PKCS1_V1_5, SIG_ALGO_RSASSA_PSS):
        return False
    if sig_hash_id not in _SIG_HASHES:
        return False
    if len(signature) != signature_length(public_key):
        return False
    h = sig_hash(sig_hash_id)
    try:
        public_key.verify(
            bytes(signature), bytes(message), _padding(sig_algo_id, h, pss_salt_length), h
        )
    except (InvalidSignature, ValueError):
        return False
    return True


class Signer:
    """Private key + algorithm choice, for the sender."""

    def __init__(
        self,
        private_key: rsa.RSAPrivateKey,
        sig_algo_id: int = DEFAULT_SIG_ALGO,
        sig_hash_id: int = DEFAULT_SIG_HASH,
        pss_salt_length: int | str = PSS_SALT_LENGTH_DEFAULT,
    ) -> None:
        _padding(sig_algo_id, sig_hash(sig_hash_id), pss_salt_length)  # validate
        self.private_key = private_key
        self.sig_algo_id = sig_algo_id
        self.sig_hash_id = sig_hash_id
        self.pss_salt_length = pss_salt_length
        self.signature_length = signature_length(private_key)

    def sign(self, message: bytes) -> bytes:
        return sign(
            self.private_key, message, self.sig_algo_id, self.sig_hash_id, self.pss_salt_length
        )

    @property
    def public_key(self) -> rsa.RSAPublicKey:
        return self.private_key.public_key()


class SignatureVerifier:
    """Sender's public key + algorithm choice (from the bootstrap), for receivers."""

    def __init__(
        self,
        public_key: rsa.RSAPublicKey,
        sig_algo_id: int = DEFAULT_SIG_ALGO,
        sig_hash_id: int = DEFAULT_SIG_HASH,
        pss_salt_length: int | str = PSS_SALT_LENGTH_DEFAULT,
    ) -> None:
        self.public_key = public_key
        self.sig_algo_id = sig_algo_id
        self.sig_hash_id = sig_hash_id
        self.pss_salt_length = pss_salt_length
        self.signature_length = signature_length(public_key)

    def verify(self, message: bytes, signature: bytes) -> bool:
        return verify(
            self.public_key,
            message,
            signature,
            self.sig_algo_id,
            self.sig_hash_id,
            self.pss_salt_length,
        )


# ---- PEM ---------------------------------------------------------------------------------


#: largest key file read (PEM RSA keys up to 7168 bits are a few KiB)
MAX_KEY_FILE = 1 << 20


def read_key_file(path: str | os.PathLike[str]) -> bytes:
    """The octets of a key file: a regular file of at most :data:`MAX_KEY_FILE` octets
    (ValueError for a FIFO, device or directory: /dev/zero must not be read to the end,
    a FIFO without writer must not block; OSError if it cannot be opened)."""
    fd = os.open(os.fspath(path), os.O_RDONLY | os.O_NONBLOCK)
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise ValueError("not a regular file")
        data = f.read(MAX_KEY_FILE + 1)
    if len(data) > MAX_KEY_FILE:
        raise ValueError(f"larger than {MAX_KEY_FILE} octets: not a key file")
    return data


def _read(src: str | os.PathLike[str] | bytes) -> bytes:
    return src if isinstance(src, bytes) else read_key_file(src)


def _parsed(load: Callable[[], Any]) -> Any:
    """``load()`` with every parse failure as ValueError: ``cryptography`` raises
    ``UnsupportedAlgorithm`` for an unknown key type (e.g. one corrupted OID octet)
    besides ValueError/TypeError (issue 15: a corrupt key file ended the CLI with a
    traceback)."""
    try:
        return load()
    except UnsupportedAlgorithm as e:
        raise ValueError(f"not a usable key ({e})") from None


def load_private_key(
    src: str | os.PathLike[str] | bytes, password: bytes | None = None
) -> rsa.RSAPrivateKey:
    """RSA private key from a PEM file path or PEM bytes (ValueError if unusable)."""
    data = _read(src)
    key = _parsed(lambda: serialization.load_pem_private_key(data, password=password))
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError("not an RSA private key")
    return key


def load_public_key(src: str | os.PathLike[str] | bytes) -> rsa.RSAPublicKey:
    """RSA public key from a PEM public key, a PEM certificate, or a PEM private key
    (ValueError if unusable)."""
    data = _read(src)
    key: object
    if b"BEGIN CERTIFICATE" in data:
        key = _parsed(lambda: x509.load_pem_x509_certificate(data).public_key())
    elif b"PRIVATE KEY" in data:
        key = _parsed(lambda: serialization.load_pem_private_key(data, None).public_key())
    else:
        key = _parsed(lambda: serialization.load_pem_public_key(data))
    if not isinstance(key, rsa.RSAPublicKey):
        raise ValueError("not an RSA public key")
    return key


def private_key_pem(key: rsa.RSAPrivateKey, password: bytes | None = None) -> bytes:
    enc: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(password)
        if password
        else serialization.NoEncryption()
    )
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, enc)


def public_key_pem(key: rsa.RSAPublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def save_private_key(
    key: rsa.RSAPrivateKey, path: str | os.PathLike[str], password: bytes | None = None
) -> None:
    """Write PKCS#8 PEM with file mode 0600."""
    data = private_key_pem(key, password)
    fd = os.open(os.fspath(path), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(path, 0o600)


def save_public_key(key: rsa.RSAPublicKey, path: str | os.PathLike[str]) -> None:
    Path(path).write_bytes(public_key_pem(key))


def generate_private_key(bits: int = DEFAULT_RSA_BITS) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=RSA_PUBLIC_EXPONENT, key_size=bits)
