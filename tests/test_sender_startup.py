"""A CLI sender does its O(N) key-chain work before its first datagram (RFC 5776
§3.1.2.3): with the RECOMMENDED ``n_tx_newkcc`` every interval of chain 0 from the
first one on carries Type 3 tags with chain 1's commitment, so chain 1 is needed at
the first send.  Built there, it stalled the first send by the time of N PRF calls
(16 ms at N 6000, more than a 10 ms T_int), and the first intervals' datagrams left
late for the safe-packet test."""

from __future__ import annotations

from pathlib import Path
from typing import Any, NoReturn

import pytest
from helpers import keygen

from alc.sender import AlcSender, SenderConfig
from tesla.cli.main import build_parser
from tesla.cli.wiring import wrap_sender

T_START = 1_800_000_000.0


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return keygen(tmp_path_factory.mktemp("keys"))


@pytest.mark.parametrize("chain_length", ["600", "6000"])
def test_first_sends_build_no_key_chain(keys: tuple[Path, Path], chain_length: str) -> None:
    priv, _pub = keys
    args = build_parser().parse_args(
        ["send", "x", "--group", "239.255.1.1:5000", "--key", str(priv), "--tint", "10",
         "--chain-length", chain_length, "--dry-run", "-q"]
    )
    eng = AlcSender(SenderConfig(tsi=1, rate_bps=0))
    eng.add_bytes(bytes(200_000), "f.bin")
    tx: Any = wrap_sender(eng, args, "alc", now=T_START)

    def no_chain_builds(*_a: Any) -> NoReturn:
        raise AssertionError("a key chain was built inside a send")

    tx.tesla.chains._cls = no_chain_builds
    tagged = 0
    for k in range(20):  # 20 intervals of 10 ms, every tag type of chain 0's start
        out = tx.datagrams_to_send(T_START + 0.001 + 0.010 * k)
        tagged += len(out)
    assert tagged > 100
    assert tx.tesla.stats.get("tesla.tagged", 0) > 100
