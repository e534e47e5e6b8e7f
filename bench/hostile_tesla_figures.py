"""Figures of docs/security/tesla.md (issue 15, TESLA side).

    PYTHONPATH=. python3 bench/hostile_tesla_figures.py flood COPIES PER_INTERVAL [SIZE] [BOUND]
    PYTHONPATH=. python3 bench/hostile_tesla_figures.py rsa [N]

``flood``: a valid stream of 10 intervals, each data datagram followed by COPIES forged
copies (payload changed: the MAC fails, the position is the original's), fed to
``TeslaReceiver.receive_batch`` as it is generated: released vs legitimate, drop
counters, the buffer gauge against its bound, peak RSS (and RSS before the flood).

``rsa``: the cost of one RSA-2048 verification, of a forged bootstrap refused for lack of
budget, and the RSA verifications run for N distinct time-consistent forged bootstraps
spread over N x 100 us of arrival time from 200 source addresses.
"""

from __future__ import annotations

import dataclasses
import resource
import sys
import time
from typing import Any

from tesla.cli.bench import T0, _key, make_sender, make_stream


def _rss_mib() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024


def flood(copies: int, per: int, size: int = 1400, bound: int = 64 << 20) -> None:
    from tesla.core.receiver import TeslaReceiver

    snd = make_sender(2)
    st = sorted(make_stream(snd, 10, per, size, spread=0.9), key=lambda x: x[0])
    rx = TeslaReceiver(_key().public_key(), max_clock_error_ms=20, max_buffered_bytes=bound)
    rss0 = _rss_mib()
    t0 = time.time()
    forged = 0
    for t, b in st:
        batch = [b]
        if len(b) >= size - 8:
            bb = bytearray(b)
            for c in range(copies):
                bb[-1 - (c % 100)] ^= 1 + (c >> 7) % 255
                batch.append(bytes(bb))
        forged += len(batch) - 1
        for k in range(0, len(batch), 1024):
            rx.receive_batch(batch[k : k + 1024], t)
    got = rx.pop_authenticated()
    ref = TeslaReceiver(_key().public_key(), max_clock_error_ms=20)
    for t, b in st:
        ref.receive(b, t)
    s = rx.stats
    print(
        f"copies/datagram {copies}: released {len(got)} (without the flood: "
        f"{len(ref.pop_authenticated())}), forged {forged}, flood {s['drop.flood']}, bad_mac "
        f"{s['drop.bad_mac']}, evicted {s['drop.evicted']}, max buffered "
        f"{s['max_buffered_bytes']} (bound {bound}), {time.time() - t0:.1f} s, "
        f"RSS {rss0} MiB before, peak {_rss_mib()} MiB"
    )


def _bootstrap(snd: Any) -> tuple[bytes, int, Any]:
    from tesla.core import extauth as ea
    from tesla.core.authenticator import ext_area

    for pkt in snd.control_packets(T0 + 1e-4):
        start, end = ext_area(pkt, "alc")
        off = ea.find_ext_auth(pkt, start, end, 0)
        if pkt[off + 2] & 15 == 0:
            return pkt, off, ea.decode(pkt, off)
    raise RuntimeError("no bootstrap")


def rsa(n: int = 100_000) -> None:
    import tesla.core.receiver as v
    from tesla.core import extauth as ea
    from tesla.core.bootstrap_sig import generate_private_key, sign, verify

    k = generate_private_key(2048)
    msg = bytes(300)
    sig = sign(k, msg)
    t = time.perf_counter()
    for _ in range(2000):
        verify(k.public_key(), msg, sig)
    print(f"RSA-2048 verify: {(time.perf_counter() - t) / 2000 * 1e6:.1f} us")
    snd = make_sender(2)
    pkt, off, boot = _bootstrap(snd)

    def forge(j: int, i: int) -> bytes:
        s = bytearray(boot.signature)
        s[j % len(s)] ^= 1 + (j // len(s)) % 255
        ext = ea.encode(dataclasses.replace(boot, signature=bytes(s), i=i))
        return pkt[:off] + ext + pkt[off + len(ext) :]

    calls = [0]
    real = v.sig_verify

    def counted(*a: Any, **kw: Any) -> bool:
        calls[0] += 1
        return bool(real(*a, **kw))

    v.sig_verify = counted  # type: ignore[assignment]
    rx = v.TeslaReceiver(_key().public_key(), max_clock_error_ms=20)
    fs = [forge(j, 0) for j in range(20_000)]
    for j in range(100):
        rx.receive(fs[j], T0, ("10.0.0.9", 1))
    t = time.perf_counter()
    for j in range(100, len(fs)):
        rx.receive(fs[j], T0, ("10.0.0.9", 1))
    print(f"refused forged bootstrap: {(time.perf_counter() - t) / (len(fs) - 100) * 1e6:.1f} us")
    calls[0] = 0
    rx = v.TeslaReceiver(_key().public_key(), max_clock_error_ms=20)
    for j in range(n):
        # time-consistent: the interval index of its arrival time
        rx.receive(forge(j, j // 1000), T0 + j * 1e-4, (f"10.{j % 200}.0.1", 1))
    secs = n * 1e-4
    print(
        f"{n} forged bootstraps over {secs:.0f} s from 200 sources: {calls[0]} RSA "
        f"verifications (bound {50 + 200 * secs:.0f}), rate_limited "
        f"{rx.stats['drop.rate_limited']}, bad_signature {rx.stats['drop.bad_signature']}"
    )


if __name__ == "__main__":
    a = sys.argv[1:]
    if a[:1] == ["flood"]:
        flood(*map(int, a[1:]))
    elif a[:1] == ["rsa"]:
        rsa(*map(int, a[1:]))
    else:
        print(__doc__)
        sys.exit(2)
