"""Long-run fuzz of the authenticated batch receive path (issue 15).

Random header mutations of a valid TESLA stream (any octet of the first 64 or of the
whole datagram, inserted header extensions of 1..63 words with HDR_LEN adjusted,
truncations) fed to the scalar model ``tests/tesla_oracle.py`` per datagram and to
``tesla.core.receiver.TeslaReceiver`` in batches of 1..1024 (``receive_batch`` and ``receive_slab``),
compiled MAC kernel on or off at random, 1 or 2 verify threads.  Reports rounds,
datagrams, and crashes or decision mismatches (any is a bug).

    PYTHONPATH=. python3 bench/fuzz_hostile_tesla.py [SEED] [SECONDS]
"""

from __future__ import annotations

import random
import sys
import time
import traceback
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from tesla_oracle import OracleReceiver  # noqa: E402

from alc.mmsg import Slab  # noqa: E402
from tesla.cli.bench import _key, make_sender, make_stream  # noqa: E402
from tesla.core.receiver import TeslaReceiver  # noqa: E402
from tesla.mac import kernel as mackernel  # noqa: E402


def mutate(b: bytes, proto: str, rng: random.Random) -> bytes:
    bb = bytearray(b)
    for _ in range(rng.randrange(1, 6)):
        pos = rng.randrange(min(len(bb), 64)) if rng.random() < 0.5 else rng.randrange(len(bb))
        bb[pos] = rng.randrange(256)
    if rng.random() < 0.2:  # an extension inserted near the front, header length adjusted
        s = rng.randrange(4, min(len(bb), 40))
        w = rng.randrange(1, 64)
        bb = bb[:s] + bytes([rng.randrange(128), w]) + bytes(4 * w - 2) + bb[s:]
        hb = 2 if proto == "alc" else 1
        bb[hb] = (bb[hb] + w) & 255
    if rng.random() < 0.1:
        bb = bb[: rng.randrange(len(bb))]
    return bytes(bb)


def one_round(seed: int, streams: dict[str, list[tuple[float, bytes]]], pub: object) -> tuple[int, bool]:
    rng = random.Random(seed)
    proto = rng.choice(["alc", "norm"])
    mackernel.set_enabled(rng.random() < 0.5)
    pk: list[tuple[float, bytes]] = []
    for t, b in streams[proto]:
        pk.append((t, b))
        for _ in range(rng.choice([0, 0, 1, 2])):
            pk.append((t + rng.random() * 0.01, mutate(b, proto, rng)))
    pk.sort(key=lambda x: x[0])
    ref = OracleReceiver(pub, max_clock_error_ms=20, protocol=proto)  # type: ignore[arg-type]
    for a, b in pk:
        ref.receive(b, a)
    fast = TeslaReceiver(
        pub, max_clock_error_ms=20, protocol=proto, verify_threads=rng.choice([1, 1, 2])
    )
    slab = Slab(rows=1024, width=2048) if rng.random() < 0.3 else None
    k = 0
    while k < len(pk):
        ch = pk[k : k + rng.choice([1, 3, 8, 64, 1024])]
        if slab is not None:
            for j, (a, b) in enumerate(ch):
                slab.data[j, : len(b)] = np.frombuffer(b, np.uint8)
                slab.lengths[j] = len(b)
                slab.stamps[j] = a
            slab.count = len(ch)
            fast.receive_slab(slab)
        else:
            fast.receive_batch([b for _, b in ch], np.array([a for a, _ in ch]))
        k += len(ch)
    same = [d for d, _ in ref.pop_authenticated()] == [d for d, _ in fast.pop_authenticated()]
    return len(pk), same


def main() -> int:
    seed = int(sys.argv[1]) if len(sys.argv) > 1 else 1
    seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 60.0
    pub = _key().public_key()
    streams = {}
    for proto in ("alc", "norm"):
        snd = make_sender(2, protocol=proto, n_chain=9)  # chain switches: Types 3 and 4
        streams[proto] = sorted(make_stream(snd, 6, 30, 300), key=lambda x: x[0])
    end = time.time() + seconds
    rounds = inputs = bad = 0
    while time.time() < end:
        try:
            n, same = one_round(seed, streams, pub)
            inputs += n
            if not same:
                bad += 1
                print(f"MISMATCH seed {seed}")
        except Exception:  # noqa: BLE001 - every crash is reported
            bad += 1
            print(f"CRASH seed {seed}")
            traceback.print_exc()
        seed += 1
        rounds += 1
    print(f"fuzz: {rounds} rounds, {inputs} datagrams, {bad} crashes/mismatches")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
