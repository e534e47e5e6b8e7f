"""Correctness (not timing) of the NORM end-to-end bench (tesla/cli/bench_norm.py, issue 6).

A 256 KiB file through the lines of ``norm_end_to_end``: ours with TESLA, ours plain,
NRL NORM in one process, then the real ``tesla-mcast send`` / ``receive --protocol norm``
as two processes (authenticated at the CLI defaults and at 25/3, ``--no-auth``; one rate).
A line is in the returned dict only when its receiver delivered the file bit-exact
(``strict=True`` raises otherwise); the ratio lines must be printed.
Network: random groups in 239.255.0.0/16, interface 127.0.0.1, TTL 1.
"""

from __future__ import annotations

import os

import pytest

from tesla.cli import bench_norm
from tesla.cli.bench_norm import TransferError, norm_end_to_end, run_ours

SIZE = 256 << 10


def test_norm_end_to_end_three_lines_bit_exact() -> None:
    lines: list[str] = []
    res = norm_end_to_end(lines.append, True, SIZE, strict=True, live_ladder=(600e6,))
    text = "\n".join(lines)
    # the two-process lines: the real CLI send/receive, every transfer bit-exact and clean
    assert {"live_auth", "live_auth_fast", "live_plain"} <= set(res), text
    assert any("2 processes + TESLA 100/3 (CLI)" in ln and "ok True" in ln for ln in lines), text
    assert not any(ln.lstrip().startswith("2 processes") and "ok False" in ln for ln in lines), text
    assert any("unsafe drops in an authenticated run 0," in ln for ln in lines), text
    assert "auth" in res and "plain" in res, text
    assert any(ln.lstrip().startswith("NORM ours + TESLA") and "Mbit/s" in ln for ln in lines)
    assert any(ln.lstrip().startswith("NORM ours, no auth") and "Mbit/s" in ln for ln in lines)
    assert any("ratio authenticated / our plain NORM:" in ln for ln in lines), text
    assert all(v > 0 for v in res.values())
    nrl, why = bench_norm.load_nrl()
    if nrl is None:
        assert any("skipped: " + why in ln for ln in lines), text
        pytest.skip(f"NRL line skipped: {why}")
    assert "nrl" in res, text
    assert any(ln.lstrip().startswith("NRL NORM") and "Mbit/s" in ln for ln in lines), text
    assert any("ratio authenticated NORM / NRL NORM" in ln for ln in lines), text
    assert any("ratio two processes authenticated (CLI TESLA defaults" in ln for ln in lines), text


@pytest.mark.parametrize("auth", [True, False])
def test_run_ours_detects_a_corrupted_file(auth: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """The bit-exact check is real: flip one octet of what the receiver delivers."""
    import norm.receiver as nr

    real = nr.ObjectReceived.__init__

    def corrupt(self: nr.ObjectReceived, *a: object, **kw: object) -> None:
        real(self, *a, **kw)  # type: ignore[arg-type]
        self.data = b"\x00" + self.data[1:] if self.data[:1] != b"\x00" else b"\x01" + self.data[1:]

    monkeypatch.setattr(nr.ObjectReceived, "__init__", corrupt)
    with pytest.raises(TransferError, match="differs"):
        run_ours(os.urandom(64 << 10), auth)


def test_nrl_missing_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without libnorm the NRL line says why it was skipped; the others still run."""
    monkeypatch.setattr(bench_norm, "load_nrl", lambda: (None, "libnorm not installed (test)"))
    lines: list[str] = []
    res = norm_end_to_end(lines.append, True, 64 << 10, strict=True, live=False)
    assert "nrl" not in res and "auth" in res and "plain" in res
    assert any("skipped: libnorm not installed (test)" in ln for ln in lines)


def test_norm_big_line_bit_exact_and_ratio() -> None:
    """The CLI-default line on a larger file (100 MiB in the full run; 1 MiB here):
    the real send/receive at the CLI's TESLA defaults, NRL on the same file, the ratio."""
    nrl, why = bench_norm.load_nrl()
    lines: list[str] = []
    res = bench_norm.norm_big(lines.append, 1 << 20, rates=[600e6], repeat=1, nrl=nrl, nrl_rates_mbps=(400,), why=why)
    text = "\n".join(lines)
    assert "big_auth" in res and res["big_auth"] > 0, text
    assert any("TESLA 100/3 (CLI), 1 MiB" in ln and "ok True" in ln for ln in lines), text
    assert "tolerance to network delay + clock error 200-300 ms" in lines[0], text
    if nrl is None:
        assert any("skipped: " + why in ln for ln in lines), text
        return
    assert "big_nrl" in res, text
    assert any("ratio two processes authenticated, CLI defaults, 1 MiB / NRL NORM" in ln for ln in lines), text
