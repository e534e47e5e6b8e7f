"""TESLA for ALC and NORM (RFC 5776, RFC 4082), plus the drivers and the CLI on top of alc and norm."""

__all__ = ["aio"]


def __getattr__(name: str) -> object:
    # ``tesla.aio`` (the asyncio API) on first use: a plain ``import tesla`` stays light
    if name == "aio":
        import importlib

        return importlib.import_module("tesla.aio")
    raise AttributeError(f"module 'tesla' has no attribute {name!r}")
