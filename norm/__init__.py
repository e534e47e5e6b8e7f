"""NORM (RFC 5740). May import alc (FEC building block, header-extension framing); never tesla."""
