"""The README's asyncio example (the fenced ``python`` block of its "Python API (asyncio)"
section) runs as written: a sender and a receiver on loopback multicast, authenticated
with a throw-away key pair, printing the events and the received file's SHA-256
(issue 13)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def readme_example() -> str:
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## Python API (asyncio)\n", 1)[1].split("\n## ", 1)[0]
    m = re.search(r"^```python\n(.*?)^```$", section, re.S | re.M)
    assert m is not None, "no ```python block in the README's asyncio section"
    return m.group(1)


def test_readme_asyncio_example_runs() -> None:
    code = readme_example()
    # stdin as the script: sys.path[0] is the cwd, so this worktree's packages are used
    p = subprocess.run(
        [sys.executable, "-"], input=code, cwd=ROOT, capture_output=True, text=True, timeout=90
    )
    assert p.returncode == 0, p.stderr[-3000:]
    out = p.stdout
    for name in ("BootstrapAccepted", "TimeSynchronized", "KeyVerified", "IntervalVerified", "FileReceived"):
        assert name + "(" in out, out
    m = re.search(r"^received hello\.bin: sha256 ([0-9a-f]{64}) \(intact\)$", out, re.M)
    assert m is not None, out
    assert re.search(rf"FileReceived\(.*sha256='{m.group(1)}'\)", out)
    assert out.rstrip().endswith("SessionEnded complete: True"), out
