"""Shared pytest fixtures.

``shared_dir``: the ``shared/`` tree (interop captures, RFCs) that CI clones next to the
repository, i.e. ``<repo>/../shared``.  Tests that need it are skipped only when it is
absent (never in CI).
"""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.skip(f"{SHARED} not found (CI clones shared/ next to the repository)")
    return SHARED
