"""TESLA for ALC and NORM (RFC 5776, RFC 4082), plus the drivers and the CLI on top of alc and norm."""
