"""Source-specific multicast (IPv4 and IPv6) and IPv6 transfers.

SSM on IPv4 loopback: group 232.x.y.z on 127.0.0.1; a receiver that joins (127.0.0.1, G)
gets the datagrams, one that names another source gets none, while an any-source
receiver beside it does (so the traffic really was there).

IPv6 runs in a network namespace the test creates itself (``unshare -n``: a veth pair
with link-local addresses only, nothing leaves the namespace); skipped with the reason
printed where namespaces are not permitted.  CI runs as root, where they are.
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from helpers import wait_joined

from alc.net import open_socket

PY = [sys.executable, "-m", "tesla.cli"]


def _recv_all(s: socket.socket, wait: float = 0.5) -> list[bytes]:
    out = []
    end = time.time() + wait
    while time.time() < end:
        try:
            out.append(s.recv(65536))
        except BlockingIOError:
            time.sleep(0.01)
    return out


def test_ssm_ipv4_loopback_accepts_named_source_only() -> None:
    group = (f"232.{random.randint(1, 254)}.{random.randint(0, 254)}.{random.randint(1, 254)}",
             random.randint(20000, 40000))
    good = open_socket(group, "127.0.0.1", receive=True, source="127.0.0.1")
    other = open_socket(group, "127.0.0.1", receive=True, source="127.0.0.2")
    asm = open_socket(group, "127.0.0.1", receive=True)
    tx = open_socket(group, "127.0.0.1", receive=False, ttl=1)
    try:
        assert tx.getsockname()[0] == "127.0.0.1"
        for k in range(10):
            tx.sendto(b"ssm-%d" % k, group)
        got = _recv_all(good)
        assert got == [b"ssm-%d" % k for k in range(10)]
        assert len(_recv_all(asm, 0.1)) == 10
        assert _recv_all(other, 0.1) == []
    finally:
        for s in (good, other, asm, tx):
            s.close()


def test_ssm_source_family_must_match_group() -> None:
    with pytest.raises(ValueError, match="address family"):
        open_socket(("232.1.1.1", 4000), "127.0.0.1", receive=True, source="::1")


def _cli_transfer(tmp_path: Path, group: str, extra_rx: list[str], auth: bool = True,
                  protocol: str = "alc", iface: str = "127.0.0.1", timeout: float = 60) -> tuple[int, str, Path]:
    f = tmp_path / "data.bin"
    f.write_bytes(os.urandom(300_000))
    key = tmp_path / "S"
    subprocess.run(PY + ["keygen", "--out", str(key)], check=True, capture_output=True)
    out = tmp_path / "out"
    auth_rx = ["--sender-key", f"{key}.pub"] if auth else ["--no-auth"]
    auth_tx = ["--key", f"{key}.pem"] if auth else ["--no-auth"]
    rx = subprocess.Popen(
        PY + ["receive", "--protocol", protocol, "--group", group, "--iface", iface, "--out",
              str(out), "--timeout", str(timeout), "--idle-timeout", "3", *auth_rx, *extra_rx],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    wait_joined(group.rpartition(":")[0])
    carousel = ["--carousel", "4"] if protocol == "alc" else []  # a slow receiver start
    tx = subprocess.run(
        PY + ["send", str(f), "--protocol", protocol, "--group", group, "--iface", iface,
              "--rate", "20M", *carousel, *auth_tx],
        capture_output=True, text=True, timeout=timeout,
    )
    assert tx.returncode == 0, tx.stderr
    try:
        _, err = rx.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        rx.kill()
        _, err = rx.communicate()
    return rx.returncode, err, out


def test_ssm_cli_receive_source(tmp_path: Path) -> None:
    g = f"232.{random.randint(1, 254)}.{random.randint(0, 254)}.{random.randint(1, 254)}:{random.randint(20000, 40000)}"
    rc, err, out = _cli_transfer(tmp_path, g, ["--source", "127.0.0.1"])
    assert rc == 0, err
    assert (out / "data.bin").read_bytes() == (tmp_path / "data.bin").read_bytes()


def test_ssm_cli_receive_other_source_gets_nothing(tmp_path: Path) -> None:
    g = f"232.{random.randint(1, 254)}.{random.randint(0, 254)}.{random.randint(1, 254)}:{random.randint(20000, 40000)}"
    rc, _err, out = _cli_transfer(tmp_path, g, ["--source", "127.0.0.2", "--json"], timeout=15)
    assert rc != 0
    assert not (out / "data.bin").exists()


# ------------------------------------------------------------------------------ IPv6


def _netns_ok() -> str | None:
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return "unshare/ip (util-linux, iproute2) not installed"
    r = subprocess.run(["unshare", "-n", "ip", "link", "add", "v0", "type", "veth", "peer", "name", "v1"],
                       capture_output=True, text=True)
    if r.returncode != 0:
        return f"network namespaces not permitted here: {r.stderr.strip()}"
    return None


NETNS = _netns_ok()

# inside the namespace: a veth pair (MTU 9000), no DAD so link-local addresses are usable
# at once; the sender sends on v0, the receiver joins on v1
_SETUP = textwrap.dedent("""
    set -e
    ip link set lo up
    sysctl -qw net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0
    ip link add v0 type veth peer name v1
    ip link set v0 mtu 9000 up
    ip link set v1 mtu 9000 up
    for i in $(seq 50); do
      ip -6 addr show dev v0 | grep -q 'scope link' && ip -6 addr show dev v1 | grep -q 'scope link' && break
      sleep 0.1
    done
    ip -6 addr show dev v0 | grep -v tentative | grep -q 'scope link'
""")


@pytest.mark.skipif(NETNS is not None, reason=str(NETNS))
@pytest.mark.parametrize(("protocol", "ssm"), [("alc", False), ("norm", False), ("alc", True)])
def test_ipv6_authenticated_transfer_in_netns(tmp_path: Path, protocol: str, ssm: bool) -> None:
    data = tmp_path / "data.bin"
    data.write_bytes(os.urandom(400_000))
    key = tmp_path / "S"
    subprocess.run(PY + ["keygen", "--out", str(key)], check=True, capture_output=True)
    port = random.randint(20000, 40000)
    gaddr = f"ff15::{random.randint(1, 0xFFFF):x}" if not ssm else f"ff35::8000:{random.randint(1, 0xFFFF):x}"
    group = f"[{gaddr}]:{port}"
    py = " ".join(PY)
    src_opt = ""
    if ssm:
        src_opt = "--source $(ip -6 addr show dev v0 | awk '/scope link/ {print $2}' | cut -d/ -f1)"
    script = _SETUP + textwrap.dedent(f"""
        cd {tmp_path}
        {py} receive --protocol {protocol} --group '{group}' --iface v1 --out out \\
            --sender-key {key}.pub --timeout 60 --idle-timeout 3 {src_opt} > rx.out 2> rx.err &
        RX=$!
        for i in $(seq 200); do ip -6 maddr show dev v1 | grep -q ' {gaddr}$' && break; sleep 0.1; done
        sleep 0.2
        {py} send data.bin --protocol {protocol} --group '{group}' --iface v0 --rate 20M {"--carousel 4" if protocol == "alc" else ""} \\
            --key {key}.pem > tx.out 2> tx.err
        wait $RX
    """)
    r = subprocess.run(["unshare", "-n", "bash", "-c", script], capture_output=True, text=True,
                       timeout=120, cwd=tmp_path, env={**os.environ, "PYTHONPATH": os.getcwd()})
    err = (tmp_path / "rx.err").read_text() if (tmp_path / "rx.err").exists() else ""
    txerr = (tmp_path / "tx.err").read_text() if (tmp_path / "tx.err").exists() else ""
    assert r.returncode == 0, f"{r.stderr}\nrx: {err}\ntx: {txerr}"
    got = (tmp_path / "out" / "data.bin").read_bytes()
    assert hashlib.sha256(got).digest() == hashlib.sha256(data.read_bytes()).digest()
