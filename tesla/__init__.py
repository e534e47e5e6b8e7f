"""TESLA for ALC and NORM (RFC 5776, RFC 4082), plus the drivers and the CLI on top of alc and norm.

Folders by role (docs/ARCHITECTURE.md): ``tesla.core`` the sans-I/O protocol (parameters,
NTP time, PRF/MAC, key chains, bootstrap signatures, time sync, EXT_AUTH, sender, receiver),
``tesla.mac`` the native and parallel MAC under the receiver, ``tesla.cli`` the
``tesla-mcast`` command with its runners, ``tesla.sim`` the simulator.  The two modules at this
level are the library API that sits on top of them: :mod:`tesla.aio` (asyncio API) and
:mod:`tesla.scapy_auth` (scapy layers)."""

__all__ = ["aio"]


def __getattr__(name: str) -> object:
    # ``tesla.aio`` (the asyncio API) on first use: a plain ``import tesla`` stays light
    if name == "aio":
        import importlib

        return importlib.import_module("tesla.aio")
    raise AttributeError(f"module 'tesla' has no attribute {name!r}")
