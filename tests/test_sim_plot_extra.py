"""``tesla-mcast simulate ... --plot`` without the ``sim`` extra (matplotlib): one line naming
the extra, exit status 2, no traceback, and the simulation is not run first (issue 13)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tesla.cli.main import main

ROOT = Path(__file__).resolve().parent.parent


def test_plot_without_matplotlib_in_process(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ModuleNotFoundError
    monkeypatch.delitem(sys.modules, "matplotlib.pyplot", raising=False)
    monkeypatch.delitem(sys.modules, "tesla.sim.plots", raising=False)
    rc = main(["simulate", str(ROOT / "scenarios/quick.toml"), "--plot", str(tmp_path / "p"), "-q"])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.strip().splitlines() == [
        "error: --plot needs matplotlib: pip install 'tesla-alc-norm[sim]'"
    ]
    assert not (tmp_path / "p").exists()


def test_plot_without_matplotlib_cli(tmp_path: Path) -> None:
    code = (
        "import sys; sys.modules['matplotlib'] = None\n"
        "from tesla.cli.main import main\n"
        f"sys.exit(main(['simulate', {str(ROOT / 'scenarios/quick.toml')!r}, '--plot', "
        f"{str(tmp_path / 'p')!r}]))\n"
    )
    p = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert p.returncode == 2, p.stderr
    assert "Traceback" not in p.stderr
    assert p.stderr.strip() == "error: --plot needs matplotlib: pip install 'tesla-alc-norm[sim]'"
