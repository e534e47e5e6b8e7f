"""Build of the optional native MAC kernel (``tesla.mac._mac``, limited API / abi3).

Everything else is declared in pyproject.toml.  The extension links OpenSSL's libcrypto
(headers: Debian's ``libssl-dev``); when it cannot be built (no C compiler, no headers)
the install still succeeds and ``tesla.mac.kernel`` uses the pure-Python MAC loop, saying
so in one line on stderr when it is first used."""

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext


class OptionalBuildExt(build_ext):
    """build_ext that never fails the install: one line, then the pure-Python path."""

    failed = False

    def _notice(self, e: Exception) -> None:
        if not self.failed:  # one line, even when a later step trips over the missing file
            print(f"tesla: native MAC kernel not built ({e}); the pure-Python MAC loop is used")
        self.failed = True

    def run(self) -> None:
        try:
            super().run()
        except Exception as e:  # noqa: BLE001 - e.g. no compiler found at all
            self._notice(e)

    def build_extension(self, ext: Extension) -> None:
        try:
            super().build_extension(ext)
        except Exception as e:  # noqa: BLE001 - compile or link error
            self._notice(e)


setup(
    ext_modules=[
        Extension(
            "tesla.mac._mac",
            ["tesla/mac/_mac.c"],
            depends=["tesla/mac/sha256_x16.h"],  # included by _mac.c (AVX-512 SHA-256)
            libraries=["crypto"],
            define_macros=[("Py_LIMITED_API", "0x030B0000")],
            py_limited_api=True,
            extra_compile_args=["-O2"],
        )
    ],
    cmdclass={"build_ext": OptionalBuildExt},
    options={"bdist_wheel": {"py_limited_api": "cp311"}},
)
