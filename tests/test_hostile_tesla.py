"""Issue 15, TESLA side: hostile input against the authenticated receivers.

Each test here failed before its fix (see docs/security/tesla.md): a long header
extension that crashed the batch receiver, corrupt key files that ended the CLI with a
traceback, RSA work per forged bootstrap / sync response without a cache or a rate
limit, and a flood of forged copies that displaced the legitimate datagrams."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import pytest
from tesla_oracle import OracleReceiver

from alc.mmsg import Slab
from norm.messages import header_regions
from tesla.cli.bench import make_sender, make_stream
from tesla.core.receiver import TeslaReceiver
from tesla.mac import kernel as mackernel


@pytest.fixture(params=["kernel", "py-copy"])
def mac_kernel(request: pytest.FixtureRequest) -> Any:
    """The native MAC kernel and the pure-Python fallback (``TESLA_MAC_KERNEL=0``)."""
    if request.param == "kernel":
        assert mackernel.available(), mackernel.why_unavailable()
    mackernel.set_enabled(request.param == "kernel")
    yield request.param
    mackernel.set_enabled(True)


def _pub() -> Any:
    from tesla.cli import bench as benchcmd

    return benchcmd._key().public_key()


def ext_start(data: bytes, protocol: str) -> int:
    """Offset of the first header extension (LCT flags, or NORM base header)."""
    if protocol == "alc":
        b1 = data[1]
        return (
            4 + (((data[0] >> 2) & 3) + 1) * 4 + ((b1 >> 5) & 4) + ((b1 >> 3) & 0xC)
            + ((b1 >> 3) & 2) * 2
        )
    return header_regions(data)[0]


def insert_nop(data: bytes, protocol: str, words: int = 32, het: int = 0) -> bytes:
    """``data`` with a ``4 * words``-octet variable-length extension (EXT_NOP: HET 0)
    inserted before its other header extensions, HDR_LEN / hdr_len adjusted."""
    s = ext_start(data, protocol)
    ext = bytes([het, words]) + bytes(4 * words - 2)
    out = bytearray(data[:s] + ext + data[s:])
    hb = 2 if protocol == "alc" else 1
    assert out[hb] + words <= 255
    out[hb] += words
    return bytes(out)


def _run_batches(
    rx: TeslaReceiver, pk: list[tuple[float, bytes]], sizes: list[int], slab: bool
) -> None:
    rng = random.Random(5)
    k = 0
    sl = Slab(rows=1024, width=2048) if slab else None
    while k < len(pk):
        m = rng.choice(sizes)
        ch = pk[k : k + m]
        if sl is not None:
            for j, (a, b) in enumerate(ch):
                sl.data[j, : len(b)] = np.frombuffer(b, np.uint8)
                sl.lengths[j] = len(b)
                sl.stamps[j] = a
            sl.count = len(ch)
            rx.receive_slab(sl)
        else:
            rx.receive_batch([b for _, b in ch], np.array([a for a, _ in ch]))
        k += m


# ---------------------------------------------------------------- finding 1: long header
@pytest.mark.parametrize("protocol", ["alc", "norm"])
@pytest.mark.parametrize("path", ["batch", "slab"])
def test_long_ext_nop_copy_is_a_counted_drop(protocol: str, path: str, mac_kernel: str) -> None:
    """A copy of a real datagram with a 128-octet EXT_NOP before its other extensions
    (its header then ends past the 128 octets the lane packs) used to raise IndexError
    in ``mackernel.match_columns``; now it is one ``bad_mac`` drop and every legitimate
    datagram is delivered, in batches of 1 to 1024 (numpy and compiled compares)."""
    snd = make_sender(2, protocol=protocol)
    stream = make_stream(snd, 6, 40, 300)
    pk = list(stream)
    forged = 0
    for pos in (10, 60, 61, 140, 200):
        t, b = stream[pos]
        for words in (32, 40):
            pk.insert(pos + 1 + forged, (t, insert_nop(b, protocol, words)))
            forged += 1
    ref = OracleReceiver(_pub(), max_clock_error_ms=20, protocol=protocol)
    for a, b in stream:
        ref.receive(b, a)
    good = ref.pop_authenticated()
    for sizes in ([1, 2, 7], [64, 300, 1024]):
        rx = TeslaReceiver(_pub(), max_clock_error_ms=20, protocol=protocol)
        _run_batches(rx, pk, sizes, path == "slab")
        assert [d for d, _ in rx.pop_authenticated()] == [d for d, _ in good]
        st = rx.stats
        assert st["drop.bad_mac"] + st["drop.malformed"] == forged, st


@pytest.mark.parametrize("protocol", ["alc", "norm"])
def test_extension_fuzz_never_raises(protocol: str, mac_kernel: str) -> None:
    """Extensions of every length (1..200 words) and kind inserted at the front of real
    datagrams, HDR_LEN both right and wrong: only counted drops, the stream delivered."""
    rng = random.Random(15)
    snd = make_sender(2, protocol=protocol)
    stream = sorted(make_stream(snd, 5, 40, 300), key=lambda x: x[0])
    pk = list(stream)
    nf = 0
    for k in range(3, len(stream), 3):
        t, b = stream[k]
        bb = bytearray(insert_nop(b, protocol, rng.randrange(1, 200), rng.choice([0, 1, 2, 64])))
        if rng.random() < 0.3:  # a header length that does not match
            hb = 2 if protocol == "alc" else 1
            bb[hb] = rng.randrange(256)
        pk.append((t + 0.0005, bytes(bb)))
        nf += 1
    pk.sort(key=lambda x: x[0])
    ref = OracleReceiver(_pub(), max_clock_error_ms=20, protocol=protocol)
    for a, b in stream:
        ref.receive(b, a)
    good = [d for d, _ in ref.pop_authenticated()]
    rx = TeslaReceiver(_pub(), max_clock_error_ms=20, protocol=protocol)
    _run_batches(rx, pk, [1, 8, 64, 1024], False)
    assert [d for d, _ in rx.pop_authenticated()] == good
    st = rx.stats
    drops = sum(v for k, v in st.items() if k.startswith("drop."))
    assert drops == nf + sum(v for k, v in ref.stats.items() if k.startswith("drop.")), st


# ---------------------------------------------------------------- finding 2: key files
def _corrupt_pem(pem: bytes) -> bytes:
    """A PEM key whose algorithm OID is damaged: ``cryptography`` raises
    ``UnsupportedAlgorithm`` (not ValueError) for it."""
    import base64

    lines = pem.strip().split(b"\n")
    body = bytearray(base64.b64decode(b"".join(lines[1:-1])))
    oid = bytes.fromhex("2a864886f70d010101")  # rsaEncryption
    at = body.find(oid)
    assert at >= 0
    body[at + 5] ^= 0x40
    return lines[0] + b"\n" + base64.encodebytes(bytes(body)) + lines[-1] + b"\n"


@pytest.fixture(scope="module")
def key_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from tesla.core.bootstrap_sig import generate_private_key, private_key_pem, public_key_pem

    d = tmp_path_factory.mktemp("keys")
    k = generate_private_key(1024)
    out: dict[str, Any] = {"dir": d}
    for name, pem in (("pub", public_key_pem(k.public_key())), ("pem", private_key_pem(k))):
        (d / f"good.{name}").write_bytes(pem)
        (d / f"bad.{name}").write_bytes(_corrupt_pem(pem))
        (d / f"garbage.{name}").write_bytes(b"-----BEGIN PUBLIC KEY-----\nzzzz\n")
    os_fifo = d / "fifo"
    import os

    os.mkfifo(os_fifo)
    return out


def test_loaders_raise_only_value_error(key_files: dict[str, Any]) -> None:
    from cryptography.exceptions import UnsupportedAlgorithm

    from tesla.core.bootstrap_sig import load_private_key, load_public_key

    d = key_files["dir"]
    with pytest.raises(UnsupportedAlgorithm):  # what the library itself raises
        from cryptography.hazmat.primitives import serialization

        serialization.load_pem_public_key((d / "bad.pub").read_bytes())
    for fn, name in ((load_public_key, "bad.pub"), (load_private_key, "bad.pem"),
                     (load_public_key, "bad.pem"), (load_public_key, "garbage.pub"),
                     (load_public_key, "fifo"), (load_private_key, "/dev/zero")):
        with pytest.raises(ValueError):
            fn(name if name.startswith("/") else d / name)


@pytest.mark.parametrize("protocol", ["alc", "norm"])
@pytest.mark.parametrize(
    "cmd,option,name",
    [("receive", "--sender-key", "bad.pub"), ("receive", "--sender-key", "bad.pem"),
     ("receive", "--sender-key", "fifo"), ("receive", "--sender-key", "/dev/zero"),
     ("receive", "--sender-key", "missing"), ("receive", "--group-mac", "/dev/zero"),
     ("send", "--key", "bad.pem"), ("send", "--key", "garbage.pem"),
     ("send", "--key", "/dev/zero"), ("send", "--key", "fifo")],
)
def test_corrupt_key_file_is_a_one_line_error_before_any_socket(
    key_files: dict[str, Any], protocol: str, cmd: str, option: str, name: str,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    """A corrupt, special or missing key file: exit status 2, one line on stderr, no
    traceback, and no socket opened (the CLI runs in this process, ``open_socket`` of
    both runners replaced by a trap)."""
    import tesla.cli.run_alc
    import tesla.cli.run_norm
    from tesla.cli.main import main

    def trap(*a: Any, **k: Any) -> Any:
        raise AssertionError("a socket was opened before the key was checked")

    monkeypatch.setattr(tesla.cli.run_alc, "open_socket", trap)
    monkeypatch.setattr(tesla.cli.run_norm, "open_socket", trap)
    d = key_files["dir"]
    path = name if name.startswith("/") else str(d / name)
    group = "239.255.15.15:45015"
    if cmd == "receive":
        argv = ["receive", "--protocol", protocol, "--group", group, "--out", str(d / "out"),
                "--sender-key", str(d / "good.pub")]
    else:
        (d / "f.bin").write_bytes(b"x" * 100)
        argv = ["send", "--protocol", protocol, str(d / "f.bin"), "--group", group,
                "--key", str(d / "good.pem")]
    argv += [option, path]
    with pytest.raises(SystemExit) as ei:
        main(argv)
    assert ei.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    err = [line for line in err if not line.startswith("TESLA:")]
    assert len(err) == 1 and err[0].startswith("tesla-mcast: error:"), err
    assert "Traceback" not in err[0]


# ---------------------------------------------------------------- finding 4: copy flood
def _copy_flood(
    protocol: str, copies: int, per: int = 20, size: int = 300, n_chain: int = 100_000
) -> tuple[list[tuple[float, bytes]], list[tuple[float, bytes]]]:
    """A valid stream where every data datagram is followed by ``copies`` forged copies
    (payload octets changed, so the MAC fails; headers and tag unchanged)."""
    snd = make_sender(2, protocol=protocol, n_chain=n_chain)
    stream = sorted(make_stream(snd, 8, per, size, spread=0.9), key=lambda x: x[0])
    out = []
    for t, b in stream:
        out.append((t, b))
        if len(b) >= size - 8:
            bb = bytearray(b)
            for c in range(copies):
                bb[-1 - (c % 64)] ^= 1 + (c >> 6) % 255
                out.append((t, bytes(bb)))
    return out, stream


@pytest.mark.parametrize("protocol", ["alc", "norm"])
@pytest.mark.parametrize("fast", [False, True], ids=["receive", "batch"])
@pytest.mark.parametrize(
    "bound,cap", [(400_000, 1 << 16), (64 << 20, 200)], ids=["byte-bound", "interval-cap"]
)
def test_copy_flood_cannot_displace_the_real_datagrams(
    protocol: str, fast: bool, bound: int, cap: int, mac_kernel: str
) -> None:
    """300 forged copies per legitimate datagram (the attack that made delivery fail):
    every legitimate datagram is still released, the copies beyond the per-position cap
    are counted ``drop.flood``, the buffer never exceeds its bound.  Per-datagram entry
    (``receive``: the scalar path only) and batches (the lane where it applies); both
    verify the intervals with ``mac_arena``, natively or in Python."""
    pk, legit = _copy_flood(protocol, 300)
    ref = OracleReceiver(_pub(), max_clock_error_ms=20, protocol=protocol)
    for a, b in legit:
        ref.receive(b, a)
    good = [d for d, _ in ref.pop_authenticated()]
    rx = TeslaReceiver(
        _pub(), max_clock_error_ms=20, protocol=protocol, max_buffered_bytes=bound,
        max_packets_per_interval=cap,
    )
    peak = 0
    if fast:
        for k in range(0, len(pk), 512):
            ch = pk[k : k + 512]
            rx.receive_batch([b for _, b in ch], np.array([a for a, _ in ch]))
            peak = max(peak, rx.stats["buffered_bytes"])
    else:
        for a, b in pk:
            rx.receive(b, a)
            peak = max(peak, rx.stats["buffered_bytes"])
    got = [d for d, _ in rx.pop_authenticated()]
    assert got == good
    st = rx.stats
    assert st["drop.flood"] > 0 and st["drop.evicted"] == 0, st
    assert st["max_buffered_bytes"] <= bound and peak <= bound
    forged = len(pk) - len(legit)
    drops = sum(v for k, v in st.items() if k.startswith("drop."))
    assert drops == forged + sum(v for k, v in ref.stats.items() if k.startswith("drop."))


@pytest.mark.parametrize("protocol", ["alc", "norm"])
@pytest.mark.parametrize("entry", ["receive", "batch", "slab"])
def test_copy_flood_decisions_equal_the_oracle(protocol: str, entry: str, mac_kernel: str) -> None:
    """The per-position cap over the interval arenas (``Arena.keep_tail``) decides as the
    scalar model's cap over its lists: the same datagrams released and the same drop
    counters (``flood``, ``bad_mac``, ...) under a copy flood at the byte bound, per
    datagram, in batches and from ``recvmmsg`` slabs (rows copied at a stride)."""
    pk, _ = _copy_flood(protocol, 60)
    kw: dict[str, Any] = dict(max_clock_error_ms=20, protocol=protocol, max_buffered_bytes=150_000)
    ref = OracleReceiver(_pub(), **kw)
    for a, b in pk:
        ref.receive(b, a)
    rx = TeslaReceiver(_pub(), **kw)
    if entry == "receive":
        for a, b in pk:
            rx.receive(b, a)
    else:
        _run_batches(rx, pk, [256, 512], entry == "slab")
    assert [d for d, _ in rx.pop_authenticated()] == [d for d, _ in ref.pop_authenticated()]
    drops = {k: v for k, v in rx.stats.items() if k.startswith("drop.") and v}
    assert drops == {k: v for k, v in ref.stats.items() if k.startswith("drop.") and v}
    assert drops["drop.flood"] > 0


# ---------------------------------------------------------------- finding 3: RSA work
SENDER = ("10.0.0.1", 4001)
ATTACKER = ("10.6.6.6", 6666)


def _count_rsa(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the RSA verifications the receiver runs."""
    import tesla.core.receiver as v

    calls = [0]
    real = v.sig_verify

    def counted(*a: Any, **k: Any) -> bool:
        calls[0] += 1
        return bool(real(*a, **k))

    monkeypatch.setattr(v, "sig_verify", counted)
    return calls


def _bootstrap_of(snd: Any, now: float) -> bytes:
    from tesla.core.authenticator import ext_area
    from tesla.core.extauth import find_ext_auth

    for pkt in snd.control_packets(now):
        start, end = ext_area(pkt, snd.protocol)
        off = find_ext_auth(pkt, start, end, snd.params.asid)
        if pkt[off + 2] & 15 == 0:
            return pkt
    raise AssertionError("no bootstrap")


def _forge(pkt: bytes, protocol: str, k: int, **changes: Any) -> bytes:
    """``pkt`` (a signalling datagram) with EXT_AUTH fields changed; the k-th forgery
    also has its signature changed, so every forgery is distinct."""
    import dataclasses

    from tesla.core import extauth as ea
    from tesla.core.authenticator import ext_area

    start, end = ext_area(pkt, protocol)
    off = ea.find_ext_auth(pkt, start, end, 0)
    sl = 128  # the benchmark key: 1024 bits
    lay = ea.TagLayout(32, 16, sl, False)
    msg = ea.decode(pkt, off, lay)
    sig = bytearray(msg.signature)
    sig[k % len(sig)] ^= 1 + (k // len(sig)) % 255
    msg = dataclasses.replace(msg, signature=bytes(sig), **changes)
    ext = ea.encode(msg)
    assert len(ext) == pkt[off + 1] << 2
    return pkt[:off] + ext + pkt[off + len(ext) :]


@pytest.mark.parametrize("protocol", ["alc", "norm"])
def test_forged_bootstraps_cost_bounded_rsa_work(
    protocol: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before the first bootstrap: 2000 forged bootstraps claiming other chains cost no
    RSA (``unsafe``: not an interval the sender can be in); 2000 distinct time-consistent
    ones (bad signatures) at one instant from an attacker's address cost at most the
    source's burst of RSA verifications, the rest ``drop.rate_limited``; the genuine
    bootstrap from the sender's address right after them still initializes the
    receiver; an identical bootstrap is never verified twice; after the bootstrap,
    forged ones with other parameters or from the future cost no RSA at all."""
    from tesla.cli.bench import T0
    from tesla.core.ratelimit import SOURCE_BURST

    calls = _count_rsa(monkeypatch)
    snd = make_sender(2, protocol=protocol, n_chain=9)
    boot = _bootstrap_of(snd, T0 + 1e-4)
    rx = TeslaReceiver(_pub(), max_clock_error_ms=20, protocol=protocol)
    now = T0 + 0.001
    n = 2000
    for k in range(n):
        rx.receive(_forge(boot, protocol, k, i=10**6 + k * 7919), now, ATTACKER)
    assert calls[0] == 0 and rx.stats["drop.unsafe"] == n
    rx = TeslaReceiver(_pub(), max_clock_error_ms=20, protocol=protocol)
    for k in range(n):
        rx.receive(_forge(boot, protocol, k), now, ATTACKER)
    assert calls[0] <= SOURCE_BURST
    st = rx.stats
    assert st["drop.rate_limited"] + st["drop.bad_signature"] == n
    assert st["drop.rate_limited"] >= n - SOURCE_BURST
    assert not rx.initialized
    rx.receive(boot, now, SENDER)
    assert rx.initialized
    before = calls[0]
    for _ in range(50):  # the identical bootstrap again: chain known, ignored
        rx.receive(boot, now, SENDER)
    assert calls[0] == before
    fresh = TeslaReceiver(_pub(), max_clock_error_ms=20, protocol=protocol)
    fresh.sig_gate = rx.sig_gate  # shared verdict cache: no second RSA for the same octets
    fresh.receive(boot, now, SENDER)
    assert fresh.initialized and calls[0] == before
    # after the bootstrap: other parameters, or a chain from the future: no RSA
    c0 = calls[0]
    for k in range(200):  # at interval 9: chain 1 (intervals 10..19) may begin soon
        rx.receive(_forge(boot, protocol, k, t_int_ms=1000 + k, i=10), T0 + 0.95, ATTACKER)
        rx.receive(_forge(boot, protocol, k, i=1000 + k), T0 + 0.95, ATTACKER)
    assert calls[0] == c0
    assert rx.stats["drop.malformed"] >= 200 and rx.stats["drop.unsafe"] >= 200


def test_rsa_rate_is_bounded_over_time_and_across_sources(monkeypatch: pytest.MonkeyPatch) -> None:
    """A sustained flood (10 s, 1000 distinct forgeries per second, each from another
    spoofed address): RSA verifications <= global burst + global rate x time."""
    from tesla.cli.bench import T0
    from tesla.core.ratelimit import GLOBAL_BURST, GLOBAL_RATE

    calls = _count_rsa(monkeypatch)
    snd = make_sender(2)
    boot = _bootstrap_of(snd, T0 + 1e-4)
    rx = TeslaReceiver(_pub(), max_clock_error_ms=20)
    for k in range(10_000):
        now = T0 + k * 1e-3
        # time-consistent (the interval of its arrival): passes every check but RSA
        forged = _forge(boot, "alc", k, i=k // 100)
        rx.receive(forged, now, (f"10.1.{k // 250}.{k % 250}", 1))
    assert calls[0] <= GLOBAL_BURST + GLOBAL_RATE * 10.0
    assert rx.stats["drop.rate_limited"] == 10_000 - calls[0]


@pytest.mark.parametrize("protocol", ["alc", "norm"])
def test_forged_sync_responses_cost_bounded_rsa_work(
    protocol: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Forged direct-sync responses matching the pending request (the attacker saw it:
    NORM requests go to the group): at most the burst is verified, the rest
    ``drop.rate_limited``; the genuine response from the sender's address is taken."""
    from tesla.cli.bench import T0, _key
    from tesla.core.authenticator import ControlTemplate, TeslaSender

    calls = _count_rsa(monkeypatch)
    snd = make_sender(2, protocol=protocol)
    tpl = ControlTemplate(tsi=1, source_id=1, instance_id=77)
    rx = TeslaReceiver(_pub(), protocol=protocol, sync="direct", template=tpl)
    rx.receive(_bootstrap_of(snd, T0 + 1e-4), T0 + 0.001, SENDER)
    req = rx.make_sync_request(T0 + 0.002)
    tx = TeslaSender(snd.params, _key(), protocol=protocol, template=tpl)
    resp = tx.handle_sync_request(req, ("10.0.0.9", 1), T0 + 0.003)
    assert resp is not None
    c0 = calls[0]
    n = 1000
    for k in range(n):
        rx.receive(_forge(resp, protocol, k), T0 + 0.004, ATTACKER)
    assert calls[0] - c0 <= 10
    assert rx.stats["drop.rate_limited"] >= n - 10
    assert rx.d_t is None
    rx.receive(resp, T0 + 0.004, SENDER)
    assert rx.d_t is not None


@pytest.mark.parametrize("protocol", ["alc", "norm"])
def test_copy_flood_across_chain_switches(protocol: str, mac_kernel: str) -> None:
    """Chains of 10 intervals (Type 3 commitments, Type 4 keys): the copies dropped by
    the cap take their commitments with them, the kept ones keep theirs; every
    legitimate datagram is released across the chain switches."""
    pk, legit = _copy_flood(protocol, 100, n_chain=9)
    ref = OracleReceiver(_pub(), max_clock_error_ms=20, protocol=protocol)
    for a, b in legit:
        ref.receive(b, a)
    good = [d for d, _ in ref.pop_authenticated()]
    rx = TeslaReceiver(
        _pub(), max_clock_error_ms=20, protocol=protocol, max_buffered_bytes=200_000
    )
    for k in range(0, len(pk), 256):
        ch = pk[k : k + 256]
        rx.receive_batch([b for _, b in ch], np.array([a for a, _ in ch]))
    assert [d for d, _ in rx.pop_authenticated()] == good
    assert rx.stats["drop.flood"] > 0 and rx.stats["drop.evicted"] == 0


def test_distinct_position_flood_keeps_tables_in_budget() -> None:
    """Forgeries at invented positions (another TOI in each): the cap cannot tell them
    from new data; the buffer stays within its bound (older intervals and newcomers
    evicted, as before), the position tables within their budget."""
    from tesla.core.floodguard import ENTRY_COST, TABLE_BUDGET_FRACTION

    snd = make_sender(2)
    stream = sorted(make_stream(snd, 6, 20, 300, spread=0.9), key=lambda x: x[0])
    pk = []
    for t, b in stream:
        pk.append((t, b))
        if len(b) >= 292:
            for c in range(200):
                bb = bytearray(b)
                bb[12:16] = (c + 1000).to_bytes(4, "big")  # the TOI of a 32-bit-TSI header
                pk.append((t, bytes(bb)))
    bound = 300_000
    rx = TeslaReceiver(_pub(), max_clock_error_ms=20, max_buffered_bytes=bound)
    worst = 0
    for a, b in pk:
        rx.receive(b, a)
        used = sum(len(p.positions or ()) for p in rx._pending.values()) * ENTRY_COST
        worst = max(worst, used)
        assert rx.stats["buffered_bytes"] <= bound
    assert worst <= bound * TABLE_BUDGET_FRACTION
    assert rx.stats["drop.evicted"] > 0
