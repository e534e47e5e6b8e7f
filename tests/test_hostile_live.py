"""Issue 15, live: an authenticated session between real ``tesla-mcast send`` and
``tesla-mcast receive`` processes on loopback multicast, with forged datagrams of every
kind of the issue injected from a third socket by this test while the session runs:

* copies of the sender's datagrams with a 128-octet EXT_NOP inserted before their other
  header extensions (the datagram that crashed the batch receiver), copies with another
  payload (bad MAC), floods of 300 such copies of one datagram;
* RaptorQ and Reed-Solomon geometry bombs (an EXT_FTI with more source blocks than
  symbols, a 16 MiB object of 1-octet symbols), with and without a copied TESLA tag;
  NORM: NORM_INFO bombs, forged NORM_CMD(CC) probes, forged NACKs;
* forged bootstraps (signed with another key) and forged sync responses.

The files must arrive bit-exact and every forged datagram that goes through TESLA must
be counted under a drop reason in the receiver's ``--json`` summary: untagged ones
``malformed``, tagged copies ``bad_mac`` / ``flood`` (or ``unsafe`` when late),
bootstraps ``bad_signature`` / ``rate_limited``, sync responses without a request
``replay``.  Forged NACKs are receiver feedback (no TESLA tag, handled by the NORM
engine); they are injected to show the session survives them.

Network: groups in 239.255.0.0/16, interface 127.0.0.1, TTL 1, random ports.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from helpers import PY, keygen, rand_group, write_random_files

from alc.net import open_socket, parse_group

#: copies of one datagram in a flood (the attack strength that made delivery fail)
FLOOD_COPIES = 300
#: one flood per this many sender datagrams
FLOOD_EVERY = 16
#: sender datagrams copied: the receiver cannot complete before it has read them and
#: their forgeries (sent right after each), so every forgery is read and counted
FORGE_FIRST = 100
#: receiver buffer bound: a flood reaches it (the per-position cap must keep the
#: legitimate datagrams; 4 copies of the ~40 datagrams of d + 1 intervals fit)
MAX_BUFFER = 1_000_000


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return keygen(tmp_path_factory.mktemp("keys"))


def _ext_start(data: bytes, protocol: str) -> int:
    from tesla.core.authenticator import ext_area

    return ext_area(data, protocol)[0]


def _insert_front(data: bytes, protocol: str, ext: bytes) -> bytes:
    """``data`` with ``ext`` inserted before its other header extensions."""
    s = _ext_start(data, protocol)
    out = bytearray(data[:s] + ext + data[s:])
    hb = 2 if protocol == "alc" else 1
    out[hb] += len(ext) >> 2
    return bytes(out)


def _nop(words: int) -> bytes:
    return bytes([0, words]) + bytes(4 * words - 2)


#: EXT_FTI of RaptorQ (RFC 6330 §3.3): F = 1000, T = 1400, Z = 128 (more blocks than symbols)
FTI_RAPTORQ = bytes([64, 4]) + (1000).to_bytes(5, "big") + b"\0" + (1400).to_bytes(2, "big") \
    + bytes([128]) + (1).to_bytes(2, "big") + bytes([4]) + b"\0\0"
#: EXT_FTI of Reed-Solomon (RFC 5510): L = 16 MiB, E = 1, B = 1
FTI_RS = bytes([64, 4]) + (16 << 20).to_bytes(6, "big") + (1).to_bytes(2, "big") \
    + (1).to_bytes(2, "big") + (255).to_bytes(2, "big") + b"\0\0"


def members(group: str) -> int | None:
    """Sockets of this host joined to ``group`` on lo (``/proc/net/igmp``), None if
    unknown."""
    try:
        text = Path("/proc/net/igmp").read_text()
    except OSError:
        return None
    want = "".join(f"{int(x):02X}" for x in reversed(group.split(".")))
    dev = ""
    for line in text.splitlines()[1:]:
        if not line.startswith("\t"):
            dev = line.split()[1]
            continue
        f = line.split()
        if dev == "lo" and f[0] == want:
            return int(f[1])
    return 0


def wait_joined(group: str, users: int, timeout: float = 20.0) -> None:
    """Until ``users`` sockets joined ``group`` (the receiver process is listening)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        n = members(group)
        if n is None:
            time.sleep(3.0)
            return
        if n >= users:
            return
        time.sleep(0.05)
    raise AssertionError(f"the receiver did not join {group}")


class Injector(threading.Thread):
    """Sniffs the session group, injects forgeries from its own socket, counts them by
    the drop reasons they must end under."""

    def __init__(self, protocol: str, group: tuple[str, int], tsi: int, attacker_key: Any) -> None:
        super().__init__(daemon=True)
        self.protocol = protocol
        self.group = group
        self.tsi = tsi
        self.attacker_key = attacker_key
        self.stop = threading.Event()
        self.opened = threading.Event()
        self.sniff = open_socket(group, "127.0.0.1", receive=True)
        self.out = open_socket(group, "127.0.0.1", receive=False, ttl=1)
        self.me: Any = None  # our own address (after the first send)
        self.sent: Counter[str] = Counter()
        self.log: list[tuple[float, str]] = []  # (monotonic time, kind) of each forgery
        self.seen = 0
        self.copied = 0
        self.error: BaseException | None = None

    def send(self, kind: str, data: bytes) -> None:
        try:
            self.out.sendto(data, self.group)
        except BlockingIOError:
            time.sleep(0.001)
            self.out.sendto(data, self.group)
        self.sent[kind] += 1
        self.log.append((time.monotonic(), kind))
        if self.me is None:
            self.me = self.out.getsockname()

    # -- forgeries without a datagram to copy -------------------------------------------
    def opening(self) -> None:
        """Before the sender starts: forged bootstraps and sync responses signed with
        the attacker's key, untagged geometry / NORM_INFO / CC bombs."""
        from tesla.core.authenticator import ControlTemplate, TeslaSender
        from tesla.core.ntp import posix_to_ntp
        from tesla.core.params import TeslaParams
        from tesla.core.receiver import TeslaReceiver

        now = time.time()
        p = TeslaParams(t0_ntp=posix_to_ntp(now), tint_ms=100, n_chain=6000, d=3)
        tpl = ControlTemplate(tsi=self.tsi, source_id=7, instance_id=1)
        att = TeslaSender(p, self.attacker_key, protocol=self.protocol, template=tpl)
        boots = [b for b in att.control_packets(now) if len(b) > 100]
        for k in range(40):  # the burst refills: every one bad_signature or rate_limited
            b = bytearray(boots[0])
            b[-1 - (k % 8)] ^= k + 1  # distinct (no cached verdict)
            self.send("bootstrap", bytes(b))
        req = TeslaReceiver(self.attacker_key.public_key(), protocol=self.protocol,
                            template=tpl).make_sync_request(now)
        for k in range(20):
            resp = att.handle_sync_request(req, ("127.0.0.1", 9000 + k), now + k * 1e-3)
            if resp is not None:
                self.send("sync_response", resp)
        self.untagged()

    def untagged(self) -> None:
        if self.protocol == "alc":
            from alc.lct import LCTHeader

            for fti, cp in ((FTI_RAPTORQ, 6), (FTI_RS, 5)):
                h = LCTHeader(tsi=self.tsi, toi=9, codepoint=cp).encode()
                pkt = _insert_front(h + bytes(4) + bytes(100), "alc", fti)
                for _ in range(5):
                    self.send("untagged", pkt)
        else:
            from norm.messages import NormCmdCC, NormInfo

            info = NormInfo(1, 1, 1, 0, 0, 0, 0, 5, 3, payload=bytes(16)).encode()
            info = _insert_front(info, "norm", FTI_RS)
            cc = NormCmdCC(2, 1, 1, 0, 0, 0, 9, int(time.time()) - 50, 0).encode()
            for _ in range(5):
                self.send("untagged", info)
                self.send("untagged", cc)

    # -- forgeries from the sender's datagrams --------------------------------------------
    def from_datagram(self, data: bytes) -> None:
        proto = self.protocol
        self.seen += 1
        if proto == "norm":
            t = data[0] & 15
            if t not in (1, 2, 3):
                return  # receiver feedback
            if self.seen % 50 == 1:  # forged NACK naming the sender (feedback path)
                from norm.messages import NormNack

                src = int.from_bytes(data[4:8], "big")
                inst = int.from_bytes(data[8:10], "big")
                self.send("nack", NormNack(self.seen & 0xFFFF, 0x5EED, src, inst).encode())
        if len(data) < 40 or (data[2 if proto == "alc" else 1] << 2) + 4 > len(data):
            return  # header only: a key-disclosure packet or a bootstrap
        self.copied += 1
        if self.copied > FORGE_FIRST:
            return
        self.send("tagged", _insert_front(data, proto, _nop(32)))
        b = bytearray(data)
        b[-1] ^= 0x5A
        self.send("tagged", bytes(b))
        if self.seen % 10 == 3:
            fti = FTI_RAPTORQ if self.seen % 20 == 3 else FTI_RS
            self.send("tagged", _insert_front(data, proto, fti))
        if self.seen % FLOOD_EVERY == 5:
            for c in range(FLOOD_COPIES):
                b[-2 - (c % 32)] ^= 1 + (c >> 5)
                self.send("tagged", bytes(b))

    def run(self) -> None:
        try:
            wait_joined(self.group[0], 2)  # our sniffer and the receiver
            self.opening()
            self.opened.set()
            while not self.stop.is_set():
                r, _, _ = select.select([self.sniff], [], [], 0.05)
                if not r:
                    continue
                while True:
                    try:
                        data, addr = self.sniff.recvfrom(65535)
                    except BlockingIOError:
                        break
                    if addr != self.me:
                        self.from_datagram(data)
        except BaseException as e:  # noqa: BLE001 - reported by the test
            self.error = e
        finally:
            self.sniff.close()
            self.out.close()


def run_session(tmp: Path, keys: tuple[Path, Path], protocol: str, kernel: bool) -> None:
    from tesla.core.bootstrap_sig import generate_private_key

    files = write_random_files(tmp, 15, (("one.bin", 250_000), ("two.txt", 3_000)))
    group = rand_group()
    out = tmp / "out"
    priv, pub = keys
    tsi = 1515
    common = ["--protocol", protocol, "--group", group, "--iface", "127.0.0.1"]
    recv = ["receive", *common, "--out", str(out), "--sender-key", str(pub), "--timeout",
            "40", "--json", "--max-buffer", str(MAX_BUFFER)]
    send = ["send", *map(str, files), *common, "--ttl", "1", "--key", str(priv),
            "--rate", "1M"]
    if protocol == "alc":
        recv += ["--tsi", str(tsi)]
        send += ["--tsi", str(tsi), "--fec", "rs", "--repair-ratio", "0.3", "--carousel", "2"]
    else:
        recv += ["--idle-timeout", "4"]
        send += ["--grtt", "0.3"]
    env = dict(os.environ, TESLA_MAC_KERNEL="1" if kernel else "0")
    inj = Injector(protocol, parse_group(group), tsi, generate_private_key(1024))
    rx = subprocess.Popen(PY + recv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, env=env)
    try:
        inj.start()
        assert inj.opened.wait(30), inj.error
        time.sleep(0.5)  # (the RSA budget of 127.0.0.1 refills for the genuine bootstrap)
        txp = subprocess.Popen(PY + send, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env=env)
        end = time.monotonic() + 60
        while rx.poll() is None and time.monotonic() < end:
            time.sleep(0.02)
        stdout, stderr = rx.communicate(timeout=10)
        tx_out, tx_err = txp.communicate(timeout=60)
    finally:
        inj.stop.set()
        inj.join(5)
        if rx.poll() is None:
            rx.kill()
            rx.wait()
    assert inj.error is None, inj.error
    assert txp.returncode == 0, tx_err
    assert rx.returncode == 0, stderr[-3000:] + stdout[-1500:]
    summary = json.loads(stdout)
    t = summary["tesla"]
    d = dict(t["drops"])
    # buffered when the receiver stopped, their key never came (not in the summary's
    # "drops": a legitimate datagram can end so too)
    d["stale"] = summary["stats"].get("tesla.drop.stale", 0)
    print(f"{protocol} kernel={kernel}: injected {dict(inj.sent)}; receiver drops {d}; "
          f"accepted {t['accepted']}, max buffered {t['max_buffered_bytes']} B, "
          f"bootstrap.ignored {summary['stats'].get('tesla.bootstrap.ignored', 0)}")
    for f in files:
        assert (out / f.name).read_bytes() == f.read_bytes(), f.name
    sent = inj.sent
    assert inj.copied > FORGE_FIRST  # the session went on after the last forgery
    assert sent["tagged"] > 2 * FLOOD_COPIES and sent["bootstrap"] == 40
    assert sent["untagged"] == inj.sent["untagged"]
    # each forged datagram under its reason
    assert d["malformed"] >= sent["untagged"]
    assert d["bad_signature"] + d["rate_limited"] >= sent["bootstrap"]
    assert d["rate_limited"] > 0
    assert d["replay"] >= sent["sync_response"]
    copies = (
        d["bad_mac"] + d["flood"] + d["unsafe"] + d["duplicate"] + d["no_bootstrap"] + d["stale"]
    )
    assert copies >= sent["tagged"], (copies, sent)
    assert d["bad_mac"] > 0 and d["flood"] > 0 and d["evicted"] == 0
    assert t["max_buffered_bytes"] <= MAX_BUFFER
    total = sum(d.values())
    assert total >= sent["tagged"] + sent["untagged"] + sent["bootstrap"] + sent["sync_response"]


@pytest.mark.parametrize("kernel", [True, False], ids=["kernel", "py-copy"])
def test_alc_session_survives_every_forgery(
    tmp_path: Path, keys: tuple[Path, Path], kernel: bool
) -> None:
    run_session(tmp_path, keys, "alc", kernel)


@pytest.mark.parametrize("kernel", [True, False], ids=["kernel", "py-copy"])
def test_norm_session_survives_every_forgery(
    tmp_path: Path, keys: tuple[Path, Path], kernel: bool
) -> None:
    run_session(tmp_path, keys, "norm", kernel)
