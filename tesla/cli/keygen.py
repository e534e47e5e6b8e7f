"""``tesla-mcast keygen``: the sender's RSA key pair, SENDER.pem (private, mode 0600)
and SENDER.pub (public, SubjectPublicKeyInfo PEM) for the receivers."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from tesla.core.bootstrap_sig import (
    DEFAULT_RSA_BITS,
    generate_private_key,
    save_private_key,
    save_public_key,
)

PRIVATE_KEY_NAME = "SENDER.pem"
PUBLIC_KEY_NAME = "SENDER.pub"
#: smallest modulus accepted (RFC 4359 guidance; 1024 is only for tests/examples)
MIN_RSA_BITS = 1024
#: largest modulus whose signature still fits one EXT_AUTH bootstrap (HEL <= 255 words)
MAX_RSA_BITS = 7168


def keypair_paths(path: str | os.PathLike[str]) -> tuple[Path, Path]:
    """``path`` is a directory (-> dir/SENDER.pem, dir/SENDER.pub), a stem without suffix
    (``SENDER`` -> SENDER.pem, SENDER.pub) or the private key file (the public one gets
    the suffix ``.pub``)."""
    p = Path(path)
    if p.is_dir() or str(path).endswith(os.sep):
        return p / PRIVATE_KEY_NAME, p / PUBLIC_KEY_NAME
    if not p.suffix:
        p = p.with_suffix(".pem")
    return p, p.with_suffix(".pub")


def generate_keypair(
    path: str | os.PathLike[str] = ".",
    bits: int = DEFAULT_RSA_BITS,
    *,
    overwrite: bool = False,
    password: bytes | None = None,
) -> tuple[Path, Path]:
    """Write a new RSA key pair; returns (private_path, public_path)."""
    if not MIN_RSA_BITS <= bits <= MAX_RSA_BITS:
        raise ValueError(f"bits must be in {MIN_RSA_BITS}..{MAX_RSA_BITS}")
    priv, pub = keypair_paths(path)
    if not overwrite:
        for f in (priv, pub):
            if f.exists():
                raise FileExistsError(f"{f} exists (use overwrite / --force)")
    priv.parent.mkdir(parents=True, exist_ok=True)
    key = generate_private_key(bits)
    save_private_key(key, priv, password)
    save_public_key(key.public_key(), pub)
    return priv, pub


def keygen_main(argv: Sequence[str] | None = None) -> int:
    """Entry point for ``tesla-mcast keygen [--out PATH] [--bits N] [--force]``."""
    ap = argparse.ArgumentParser(
        prog="tesla-mcast keygen", description="Generate the TESLA sender's RSA key pair."
    )
    ap.add_argument(
        "--out",
        default=".",
        help="directory (writes SENDER.pem and SENDER.pub) or private key file path",
    )
    ap.add_argument("--bits", type=int, default=DEFAULT_RSA_BITS, help="RSA modulus size")
    ap.add_argument("--force", action="store_true", help="overwrite existing files")
    args = ap.parse_args(argv)
    try:
        priv, pub = generate_keypair(args.out, args.bits, overwrite=args.force)
    except (ValueError, OSError) as e:
        print(f"keygen: {e}", file=sys.stderr)
        return 2
    print(f"private key: {priv}\npublic key:  {pub}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(keygen_main())
