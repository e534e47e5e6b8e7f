"""The TESLA protocol core (RFC 5776), sans-I/O: parameters, NTP time, PRF/MAC, key chains,
bootstrap signatures, time synchronization, the EXT_AUTH codec, the sender
(:mod:`tesla.core.authenticator`) and the receiver (:mod:`tesla.core.receiver`), with the
session glue and the flood guards.  It imports ``alc``/``norm`` below it and the MAC kernel of
:mod:`tesla.mac`; never the CLI, the simulator or the asyncio API."""
