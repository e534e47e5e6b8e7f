"""tesla.mac.kernel: the native HMAC loops (tesla/mac/_mac.c) give standard HMAC (RFC 2104) for
every TESLA MAC type, compute MACs exactly as the zero-the-fields definition of RFC 5776
§3.3.1 says without writing into the datagrams, refuse rows outside their buffers, and
give way to the pure-Python path (with the same results) where they must.  Where a C
compiler is present the extension must have been built and loaded: CI cannot pass on the
fallback silently."""

from __future__ import annotations

import hmac
import os
import random
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tesla.mac import kernel as mk
from tesla.mac.batch import PackedBatch, mac_rows

NAMES = {0: "sha1", 1: "sha224", 2: "sha256", 3: "sha384", 4: "sha512"}
ROOT = Path(__file__).resolve().parent.parent


def _compiler() -> str | None:
    cc = (sysconfig.get_config_var("CC") or "cc").split()[0]
    return shutil.which(cc) or shutil.which("cc")


@pytest.fixture(autouse=True)
def _kernel_on() -> Any:
    yield
    mk.set_enabled(True)
    if mk.available():
        mk._load()["mod"].set_sha_ni(True)


#: every hash, and SHA-1/-256 also on the OpenSSL EVP path where the SHA-NI path is used
HASHES = [pytest.param((a, False), id=NAMES[a]) for a in sorted(NAMES)] + [
    pytest.param((a, True), id=f"{NAMES[a]}-evp") for a in (0, 2)
]


def _path(evp: bool) -> None:
    """The kernel, on the EVP path for SHA-1/-256 if ``evp`` (skip if that is no change)."""
    _kernel()
    mod = mk._load()["mod"]
    if evp and not mod.sha_ni():
        pytest.skip("SHA-1/-256 are on the EVP path anyway (no SHA-NI)")
    mod.set_sha_ni(not evp)


def test_sha_ni_path_is_used_where_the_cpu_has_it() -> None:
    _kernel()
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    has = any(" sha_ni" in ln for ln in flags.splitlines() if ln.startswith("flags"))
    mod = mk._load()["mod"]
    assert mod.sha_ni() == has
    assert ("SHA-NI" in mk.describe()) == has


def test_extension_built_and_loaded_when_a_compiler_is_present() -> None:
    if _compiler() is None:
        pytest.skip("no C compiler: the install uses the pure-Python MAC loop")
    assert mk.available(), (
        f"MAC kernel unavailable although a C compiler is present: {mk.why_unavailable()} "
        "(pip install -e . builds tesla/mac/_mac.c; it needs libssl-dev)"
    )
    mod = mk._load()["mod"]
    assert mod.__file__.endswith(".abi3.so"), mod.__file__  # the limited-API build
    assert Path(mod.__file__).parent == ROOT / "tesla" / "mac"
    assert "native C" in mk.describe() and "OpenSSL" in mk.describe()


def _kernel() -> None:
    if not mk.available():
        pytest.skip(f"no native kernel: {mk.why_unavailable()}")


@pytest.mark.parametrize("hash_path", HASHES)
@pytest.mark.parametrize("key_len", [0, 16, 32, 64, 65, 129, 200])  # 200: longer than every block
def test_hmac_rows_is_standard_hmac(hash_path: tuple[int, bool], key_len: int) -> None:
    mac_id, evp = hash_path
    _path(evp)
    rng = random.Random(mac_id * 1000 + key_len)
    key = rng.randbytes(key_len)
    lens = [*range(0, 260), 1400, 3000]  # every padding case of both block sizes
    pkts = [rng.randbytes(n) for n in lens]
    buf = b"".join(pkts)
    ln = np.array([len(p) for p in pkts], dtype=np.int64)
    st = np.cumsum(ln) - ln
    out = mk.hmac_rows(buf, st, ln, key, mac_id)
    assert out is not None
    for k, p in enumerate(pkts):
        assert out[k].tobytes() == hmac.digest(key, p, NAMES[mac_id])


def test_hmac_rows_rejects_rows_outside_the_buffer() -> None:
    _kernel()
    buf = bytes(100)
    n = mk.MIN_ROWS
    st = np.zeros(n, dtype=np.int64)
    for bad_st, bad_ln in [(90, 11), (-1, 5), (0, -1), (101, 0), (2**62, 2**62), (1, 2**63 - 1)]:
        s = st.copy()
        ln = np.full(n, 10, dtype=np.int64)
        s[3], ln[3] = bad_st, bad_ln
        with pytest.raises(ValueError):
            mk.hmac_rows(buf, s, ln, b"k" * 16, 2)
    with pytest.raises(ValueError):  # one length per start
        mk.hmac_rows(buf, st, np.full(n + 1, 1), b"k" * 16, 2)


def test_mac_rows_uses_the_kernel_and_the_fallback_alike() -> None:
    _kernel()
    rng = random.Random(5)
    pkts = [rng.randbytes(rng.randrange(20, 1500)) for _ in range(100)]
    pb = PackedBatch(pkts)
    key = rng.randbytes(32)
    with_kernel = mac_rows(pb.buf, pb.starts, pb.lens, key, 2)
    mk.set_enabled(False)
    assert mk.hmac_rows(pb.buf, pb.starts, pb.lens, key, 2) is None
    without = mac_rows(pb.buf, pb.starts, pb.lens, key, 2)
    assert with_kernel == without


# ----------------------------------------------------------------------- mac_arena
def _zeroed_hmac(p: bytes, mo: int, ml: int, go: int, gl: int, key: bytes, name: str) -> bytes:
    """RFC 5776 §3.3.1 literally: a copy with the fields zeroed, then HMAC."""
    z = bytearray(p)
    if mo >= 0:
        z[mo : mo + ml] = bytes(ml)
    if go >= 0:
        z[go : go + gl] = bytes(gl)
    return hmac.digest(key, bytes(z), name)


def _arena_case(seed: int, n: int = 300) -> tuple[bytes, list[tuple[int, int, int, int]], int, int]:
    """An arena of n datagrams at gaps, with MAC and Group MAC fields absent, apart,
    adjacent, overlapping, at the very start and the very end, and far in (past the
    kernel's stack copy of the first 2 KiB)."""
    rng = random.Random(seed)
    ml, gl = 16, 4
    parts: list[bytes] = []
    rows = []
    pos = 0
    for _ in range(n):
        gap = rng.randrange(0, 5)
        parts.append(rng.randbytes(gap))
        pos += gap
        ln = rng.choice([0, 3, 20, 64, 100, 200, 1400, 5000])
        mo = -1 if ln < ml or rng.random() < 0.1 else rng.randrange(0, ln - ml + 1)
        if ln < gl or rng.random() < 0.4:
            go = -1
        elif mo >= 0 and rng.random() < 0.3:  # overlapping or touching the MAC field
            go = max(0, min(ln - gl, mo + rng.randrange(-gl, ml + 1)))
        else:
            go = rng.randrange(0, ln - gl + 1)
        if ln >= ml and rng.random() < 0.05:
            mo = ln - ml  # the field ends the datagram
        parts.append(rng.randbytes(ln))
        rows.append((pos, ln, mo, go))
        pos += ln
    return b"".join(parts), rows, ml, gl


@pytest.mark.parametrize(
    "hash_path, kernel",
    [pytest.param(h.values[0], True, id=f"{h.id}-native") for h in HASHES]
    + [pytest.param((a, False), False, id=f"{NAMES[a]}-python") for a in sorted(NAMES)],
)
def test_mac_arena_equals_zeroed_field_definition(hash_path: tuple[int, bool], kernel: bool) -> None:
    mac_id, evp = hash_path
    if kernel:
        _path(evp)
    mk.set_enabled(kernel)
    arena_b, rows, ml, gl = _arena_case(100 + mac_id, 120 if kernel else 40)
    arena = np.frombuffer(bytearray(arena_b), dtype=np.uint8)  # writable: must stay as is
    of, ln, mo, go = (np.array(c, dtype=np.int64) for c in zip(*rows, strict=True))
    key = random.Random(mac_id).randbytes(200 if mac_id == 4 else 32)
    tags = mk.mac_arena(NAMES[mac_id], key, arena, of, ln, mo, ml, go, gl)
    assert tags.shape == (len(rows), len(hmac.digest(b"", b"", NAMES[mac_id])))
    assert arena.tobytes() == arena_b
    assert any(g >= 0 and m >= 0 and g < m + ml and m < g + gl for _, _, m, g in rows)
    for k, (s, n, m, g) in enumerate(rows):
        want = _zeroed_hmac(arena_b[s : s + n], m, ml, g, gl, key, NAMES[mac_id])
        assert tags[k].tobytes() == want, (k, n, m, g)
    # the registry value names the hash too
    assert (mk.mac_arena(mac_id, key, arena, of[:5], ln[:5], mo[:5], ml, go[:5], gl) == tags[:5]).all()


def test_mac_arena_native_and_python_agree() -> None:
    _kernel()
    arena, rows, ml, gl = _arena_case(7, 60)
    args = [np.array(c, dtype=np.int64) for c in zip(*rows, strict=True)]
    of, ln, mo, go = args
    native = mk.mac_arena("sha256", b"k" * 32, arena, of, ln, mo, ml, go, gl)
    mk.set_enabled(False)
    python = mk.mac_arena("SHA-256", b"k" * 32, arena, of, ln, mo, ml, go, gl)
    assert (native == python).all()


@pytest.mark.parametrize("kernel", [True, False], ids=["native", "python"])
def test_mac_arena_refuses_anything_outside(kernel: bool) -> None:
    if kernel:
        _kernel()
    mk.set_enabled(kernel)
    arena = np.zeros(1000, dtype=np.uint8)
    good = dict(of=[0, 100, 500], ln=[100, 400, 500], mo=[8, 8, -1], go=[-1, 40, 496])
    ml, gl = 16, 4

    def call(**kw: list[int]) -> np.ndarray:
        a = {**good, **kw}
        return mk.mac_arena(
            "sha256", b"k", arena, a["of"], a["ln"], a["mo"], ml, a["go"], gl
        )

    assert call().shape == (3, 32)
    bad = [
        dict(of=[0, 100, 501]),  # past the arena's end
        dict(of=[-1, 100, 500]),
        dict(ln=[100, 400, 501]),
        dict(ln=[-5, 400, 500]),
        dict(of=[0, 2**62, 500]),
        dict(ln=[2**63 - 1, 400, 500]),
        dict(mo=[85, 8, -1]),  # MAC field past its datagram's end
        dict(mo=[-2, 8, -1]),
        dict(go=[-1, 397, 496]),  # Group MAC field past its datagram's end
        dict(go=[-1, 40, 497]),
        dict(go=[-1, 2**62, 496]),
        dict(mo=[8, 8]),  # not one per datagram
    ]
    for kw in bad:
        with pytest.raises(ValueError):
            call(**kw)
    with pytest.raises(ValueError):
        mk.mac_arena("md5", b"k", arena, [0], [10], [-1], 0, [-1], 0)


@pytest.mark.parametrize("hash_path", [h.values[0] for h in HASHES], ids=[h.id for h in HASHES])
def test_verify_arena_equals_mac_compare_and_cut(hash_path: tuple[int, bool]) -> None:
    """The receiver's fused call: ok = truncated zeroed-field HMAC equals the MAC field,
    tags = the fields as received, and the ok datagrams' octets in order; half the rows
    carry their correct tag (so both verdicts occur), the arena is left as it was."""
    mac_id, evp = hash_path
    _path(evp)
    arena_b, rows, ml, gl = _arena_case(300 + mac_id, 150)
    rows = [r for r in rows if r[2] >= 0 and not (r[3] >= 0 and r[3] < r[2] + ml and r[2] < r[3] + gl)]
    key = random.Random(mac_id).randbytes(32)
    ba = bytearray(arena_b)
    rng = random.Random(mac_id)
    for s, n, m, g in rows:
        if rng.random() < 0.5:  # a correct tag (Group MAC field zeroed too, so it holds)
            d = _zeroed_hmac(bytes(ba[s : s + n]), m, ml, g, gl, key, NAMES[mac_id])
            ba[s + m : s + m + ml] = d[:ml]
    arena = np.frombuffer(ba, dtype=np.uint8)
    before = arena.tobytes()
    of, ln, mo, go = (np.array(c, dtype=np.int64) for c in zip(*rows, strict=True))
    got = mk.verify_arena(NAMES[mac_id], key, arena, of, ln, mo, ml, go, gl)
    assert got is not None
    ok, tags, cut = got
    want_ok, want_cut = [], []
    for k, (s, n, m, g) in enumerate(rows):
        p = before[s : s + n]
        assert tags[k].tobytes() == p[m : m + ml]
        good = _zeroed_hmac(p, m, ml, g, gl, key, NAMES[mac_id])[:ml] == p[m : m + ml]
        want_ok.append(good)
        if good:
            want_cut.append(p)
    assert ok.tolist() == want_ok and 0 < sum(want_ok) < len(rows)
    assert cut == want_cut
    assert arena.tobytes() == before
    got2 = mk.verify_arena(NAMES[mac_id], key, arena, of, ln, mo, ml, go, gl, threads=3)
    assert got2 is not None and got2[0].tolist() == want_ok and got2[2] == want_cut
    assert (got2[1] == tags).all()
    got3 = mk.verify_arena(NAMES[mac_id], key, arena, of, ln, mo, ml, go, gl, cut=False)
    assert got3 is not None and got3[0].tolist() == want_ok and got3[2] is None
    for bad in (dict(mo=-1), dict(of=len(before)), dict(ln=10**9)):
        a = dict(of=of[:1].copy(), ln=ln[:1].copy(), mo=mo[:1].copy())
        a[next(iter(bad))][0] = next(iter(bad.values()))
        with pytest.raises(ValueError):
            mk.verify_arena(NAMES[mac_id], key, arena, a["of"], a["ln"], a["mo"], ml, go[:1], gl)
    mk.set_enabled(False)
    assert mk.verify_arena(NAMES[mac_id], key, arena, of, ln, mo, ml, go, gl) is None


@pytest.mark.parametrize("threads", [0, 1, 3])
def test_arena_job_equals_verify_arena(threads: int) -> None:
    """An interval verified by native threads started for it (verify_arena_task) and
    finished by the caller taking the rows they left: the same ok and tags as
    verify_arena, whatever the number of threads (0: the caller hashes every row)."""
    if not mk.fused() or not mk._state.get("jobs"):
        pytest.skip("native kernel without jobs: " + str(mk._load().get("error")))
    arena_b, rows, ml, gl = _arena_case(77, 400)
    rows = [r for r in rows if r[2] >= 0 and not (r[3] >= 0 and r[3] < r[2] + ml and r[2] < r[3] + gl)]
    key = random.Random(77).randbytes(32)
    ba = bytearray(arena_b)
    rng = random.Random(78)
    for s, n, m, g in rows:
        if rng.random() < 0.5:
            d = _zeroed_hmac(bytes(ba[s : s + n]), m, ml, g, gl, key, NAMES[2])
            ba[s + m : s + m + ml] = d[:ml]
    arena = np.frombuffer(ba, dtype=np.uint8)
    of, ln, mo, go = (np.array(c, dtype=np.int64) for c in zip(*rows, strict=True))
    want = mk.verify_arena(NAMES[2], key, arena, of, ln, mo, ml, go, gl)
    assert want is not None
    got = mk.verify_arena_task(NAMES[2], key, arena, of, ln, mo, ml, go, gl, threads)
    assert got is not None
    job, ok, tags = got
    job.result()
    assert job.done()
    job.result()  # again: nothing left, returns at once
    assert np.array_equal(ok, want[0]) and np.array_equal(tags, want[1])
    assert 0 < int(ok.sum()) < len(rows)


def test_arena_job_checks_first_and_outlives_its_caller() -> None:
    """start_job refuses a row outside the arena before starting anything; a job dropped
    unfinished waits for its threads (they read the arena) before letting it go."""
    mod = mk._mod()
    if mod is None or not hasattr(mod, "start_job"):
        pytest.skip("native kernel without jobs: " + str(mk._load().get("error")))
    n = 5000
    arena = np.frombuffer(os.urandom(n * 100), dtype=np.uint8)
    of = np.arange(n, dtype=np.int64) * 100
    ln = np.full(n, 100, dtype=np.int64)
    mo = np.full(n, 8, dtype=np.int64)
    go = np.full(n, -1, dtype=np.int64)
    tags = np.empty((n, 16), dtype=np.uint8)
    ok = np.empty(n, dtype=np.uint8)
    bad = ln.copy()
    bad[-1] = 101
    with pytest.raises(ValueError, match="outside the arena"):
        mod.start_job(2, b"k", arena, of, bad, mo, 16, go, 0, tags, ok, 2)
    with pytest.raises(ValueError, match="nthreads"):
        mod.start_job(2, b"k", arena, of, ln, mo, 16, go, 0, tags, ok, 99)
    job = mod.start_job(2, b"k", arena, of, ln, mo, 16, go, 0, tags, ok, 2)
    del job, arena  # the capsule joins its threads, then releases the buffers
    job = mod.start_job(2, b"k", np.zeros(100, dtype=np.uint8), of[:1], ln[:1], mo[:1], 16,
                        go[:1], 0, tags[:1], ok[:1], 1)
    mod.finish_job(job)
    assert mod.job_done(job) and ok[0] == 0


def test_native_lane_copies_matching_rows_and_refuses_inconsistent_tables() -> None:
    """_mac.lane (the receiver's lane): rows of a known class for a slot's interval in its
    window are copied into the slot's arena; a class reading past its header end, an
    arena use past its buffer, a slab row longer than its width are ValueErrors before
    anything is read."""
    mod = mk._mod()
    assert mod is not None
    cols = 32

    def pkt(i: int, fill: int) -> bytes:  # class: octet 0 = 0x10, EXT_AUTH (Type 2) at 4
        return bytes([0x10, 0, 0, 0, 1, 6, 2, 0]) + i.to_bytes(4, "big") + bytes([fill]) * 28

    cls = np.full((1, 5 + cols), -1, dtype=np.int64)
    cls[0, :6] = (24, 4, 2, 12, 1, 0)
    clsv = np.zeros((1, cols), dtype=np.uint8)
    clsv[0, 0] = 0x10
    pkts = [pkt(7, 1), pkt(7, 2), pkt(8, 3), b"\x11" + pkt(7, 4)[1:], pkt(7, 5)]
    times = np.array([1.0, 1.0, 1.0, 1.0, 1.0])
    arena = np.zeros(1000, dtype=np.uint8)
    slots = np.array([(7, 100, 1000, 0, 0, 0)], dtype=np.int64)
    bounds = np.array([(0.5, 2.0)])
    keys = np.zeros((1, 2, 16), dtype=np.uint8)
    rows = np.empty((5, 4), dtype=np.int64)
    rslot = np.empty(5, dtype=np.int64)

    def call(**kw: Any) -> Any:
        a = dict(pkts=pkts, width=-1, lens=None, cls=cls, slots=slots.copy(), arenas=(arena,))
        a.update(kw)
        return mod.lane(a["pkts"], a["width"], a["lens"], 0, len(a["pkts"]), times, a["cls"],
                        clsv, a["slots"], bounds, keys, a["arenas"], 10**9, 64, rows, rslot)

    assert call() == (2, 1, -1)  # interval 8 has no slot: the scalar path decides it
    assert arena[: 2 * 40].tobytes() == pkts[0] + pkts[1]
    assert rows[:2].tolist() == [[0, 40, 12, -1], [40, 40, 12, -1]]
    assert call(pkts=[pkts[3]]) == (0, 3, -1)  # unknown layout
    assert call(pkts=pkts[:2], slots=np.array([(7, 100, 60, 0, 0, 0)])) == (1, 2, 0)  # full
    bad_cls = cls.copy()
    bad_cls[0, 5] = 24  # a layout octet at the header end
    for kw in (dict(cls=bad_cls), dict(slots=np.array([(7, 1, 2000, 0, 0, 0)])),
               dict(pkts=np.zeros((5, 8), np.uint8), width=8, lens=np.full(5, 9))):
        with pytest.raises(ValueError):
            call(**kw)


# ------------------------------------------------------------------- object loops
def test_object_loops_give_way_on_anything_but_buffers() -> None:
    _kernel()
    pkts: list[object] = [bytes(40) for _ in range(mk.MIN_ROWS)]
    pkts[5] = "forty octets? no, a str"
    assert mk.lengths_of(pkts) is None
    pkts[5] = bytes(40)
    assert mk.lengths_of(pkts[:5]) is None  # < MIN_ROWS
    assert mk.lengths_of(pkts) is not None


def test_hmac_kernel_digest_of_random_keys_and_lengths_matches_hashlib_loop() -> None:
    _kernel()
    # one larger run, as the receiver feeds it (thousands of rows, one key)
    key = os.urandom(32)
    pkts = [os.urandom(random.Random(k).randrange(1, 1500)) for k in range(3000)]
    pb = PackedBatch(pkts)
    out = mk.hmac_rows(pb.buf, pb.starts, pb.lens, key, 2)
    assert out is not None
    ref = np.frombuffer(b"".join(hmac.digest(key, p, "sha256") for p in pkts), np.uint8)
    assert (out.reshape(-1) == ref).all()


def test_lengths_and_copy_into_pack_like_bytes_join() -> None:
    _kernel()
    rng = random.Random(12)
    pkts = [rng.randbytes(rng.randrange(0, 2000)) for _ in range(50)]
    held = mk.lengths_of(pkts)
    assert held is not None
    assert held.lens.tolist() == [len(p) for p in pkts]
    dst = np.zeros(sum(map(len, pkts)) + 30, dtype=np.uint8)
    starts = np.cumsum(held.lens) - held.lens + 7
    held.copy_into(dst, starts)
    assert dst[7 : 7 + sum(map(len, pkts))].tobytes() == b"".join(pkts)
    assert not dst[:7].any() and not dst[7 + sum(map(len, pkts)) :].any()
    for last in (dst.size - held.lens[-1] + 1, -1, 2**62):  # past either end: refused
        bad = starts.copy()
        bad[-1] = last
        fresh = np.zeros_like(dst)
        with pytest.raises(ValueError):
            held.copy_into(fresh, bad)
        assert not fresh.any()  # nothing written
    with pytest.raises(ValueError):
        held.copy_into(np.frombuffer(bytes(dst.size), dtype=np.uint8), starts)  # read-only


def test_warm_up_loads_the_kernel() -> None:
    _kernel()
    assert mk.warm_up(2)
    assert mk._pool is not None


def test_the_loops_release_the_gil() -> None:
    """While a kernel call hashes in one thread, Python code runs in another (what
    ``--verify-threads`` relies on): the main thread keeps taking time samples inside the
    middle third of the call's span (with the GIL held through the call it could take
    none there)."""
    _kernel()
    import threading
    import time

    n = 30000
    one = os.urandom(1400)
    zeros = np.zeros(n, dtype=np.int64)
    lens = np.full(n, 1400, dtype=np.int64)
    calls = {
        "hmac_rows": lambda: mk.hmac_rows(one, zeros, lens, b"k", 2),
        "mac_arena": lambda: mk.mac_arena("sha256", b"k", one, zeros, lens, zeros + 8, 16, zeros - 1, 0),
    }
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-4)  # GIL hand-overs at the call's edges stay short
    try:
        for name, call in calls.items():
            span: list[float] = []

            def work(call: Any = call, span: list[float] = span) -> None:
                t0 = time.perf_counter()
                call()
                span += [t0, time.perf_counter()]

            t = threading.Thread(target=work)
            samples: list[float] = []
            t.start()
            while t.is_alive():
                samples.append(time.perf_counter())
            t.join()
            t0, t1 = span
            third = (t1 - t0) / 3  # hand-overs at the call's edges can take milliseconds
            inside = [x for x in samples if t0 + third < x < t1 - third]
            assert t1 - t0 > 0.01, (name, t1 - t0)  # long enough to tell
            assert len(inside) > 100, (name, len(inside), t1 - t0)
    finally:
        sys.setswitchinterval(old)


# ------------------------------------------------------------- load, fallback, env
def _python(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    e = {k: v for k, v in os.environ.items() if k != "TESLA_MAC_KERNEL"}
    e.update(env)
    return subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=e, capture_output=True, text=True, timeout=60
    )


def test_env_zero_forces_the_fallback_silently() -> None:
    r = _python(
        "from tesla.mac import kernel as m, batch as f\n"
        "print(m.available(), m.hmac_rows(bytes(80), [0]*8, [10]*8, b'k', 2))\n"
        "print(f.mac_rows(b'abc', [0], [3], b'k', 2).hex())",
        TESLA_MAC_KERNEL="0",
    )
    assert r.returncode == 0, r.stderr
    lines = r.stdout.split()
    assert lines[:2] == ["False", "None"]
    assert lines[2] == hmac.digest(b"k", b"abc", "sha256").hex()
    assert r.stderr == ""


def test_missing_extension_falls_back_with_one_line() -> None:
    r = _python(
        "import sys; sys.modules['tesla.mac._mac'] = None  # as if never built\n"
        "from tesla.mac import kernel as m, batch as f\n"
        "print(m.available(), m.hmac_rows(bytes(80), [0]*8, [10]*8, b'k', 2))\n"
        "print(f.mac_rows(b'abc', [0], [3], b'k', 2).hex())\n"
        "print(m.mac_arena('sha1', b'k', b'abcdef', [0], [6], [1], 2, [-1], 0)[0].tobytes().hex())"
    )
    assert r.returncode == 0, r.stderr
    out = r.stdout.split()
    assert out[:2] == ["False", "None"]
    assert out[2] == hmac.digest(b"k", b"abc", "sha256").hex()
    assert out[3] == hmac.digest(b"k", b"a\0\0def", "sha1").hex()
    assert len(r.stderr.splitlines()) == 1
    assert "native MAC kernel unavailable" in r.stderr and "pure-Python" in r.stderr


def test_extension_without_the_receiver_entries_keeps_the_macs_and_says_so() -> None:
    """An extension built from an older _mac.c (no ``lane``, ``verify_arena``): the MACs
    stay native, the receiver takes its numpy lane and MAC call, one line says why."""
    r = _python(
        "import importlib, sys, types\n"
        "real = importlib.import_module('tesla.mac._mac')\n"
        "old = types.ModuleType('tesla.mac._mac')\n"
        "for k in dir(real):\n"
        "    if k not in ('lane', 'verify_arena'):\n"
        "        setattr(old, k, getattr(real, k))\n"
        "sys.modules['tesla.mac._mac'] = old\n"
        "import numpy as np\n"
        "from tesla.mac import kernel as m\n"
        "from tesla.cli import bench as bc\n"
        "s = bc.make_sender(2, disclose_every=4)\n"
        "st = bc.make_stream(s, 4, 100, 300)\n"
        "rx = bc.make_receiver()\n"
        "rx.receive_batch([b for _, b in st], np.array([a for a, _ in st]))\n"
        "print(m.available(), m.fused(), m.lane(), rx.stats['accepted'], rx.lane_packets > 300)"
    )
    assert r.returncode == 0, r.stderr
    out = r.stdout.split()
    assert out[:3] == ["True", "False", "None"] and int(out[3]) >= 400 and out[4] == "True"
    assert len(r.stderr.splitlines()) == 1 and "rebuild tesla/mac/_mac.c" in r.stderr


class _Wrong:
    """An extension whose HMAC is off by one bit."""

    def __init__(self, real: Any) -> None:
        self.real = real

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)

    def hmac_rows(self, alg: int, key: bytes, buf: Any, st: Any, ln: Any, out: np.ndarray) -> None:
        self.real.hmac_rows(alg, key, buf, st, ln, out)
        if alg == 3:
            out[-1, 0] ^= 1


def test_known_answer_failure_means_fallback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _kernel()
    import tesla.mac

    monkeypatch.setattr(tesla.mac, "_mac", _Wrong(mk._load()["mod"]), raising=False)
    monkeypatch.setitem(sys.modules, "tesla.mac._mac", tesla.mac._mac)
    saved = dict(mk._state)
    mk._state.clear()
    try:
        assert not mk.available()
        assert "known-answer check failed for sha384" in (mk.why_unavailable() or "")
        assert mk.hmac_rows(bytes(80), np.zeros(8), np.full(8, 10), b"k", 2) is None
        err = capsys.readouterr().err
        assert len(err.splitlines()) == 1 and "sha384" in err
    finally:
        mk._state.clear()
        mk._state.update(saved)
    assert mk.available()


class _WrongPairs(_Wrong):
    """An extension right for one row per call, wrong when rows are paired: the second
    row of a call of SHA-384 gets the first one's digest."""

    def hmac_rows(self, alg: int, key: bytes, buf: Any, st: Any, ln: Any, out: np.ndarray) -> None:
        self.real.hmac_rows(alg, key, buf, st, ln, out)

    def mac_arena(self, alg: int, *args: Any) -> None:
        self.real.mac_arena(alg, *args)
        out = args[8]
        if alg == 3 and len(out) >= 2:
            out[1] = out[0]


def test_known_answer_check_covers_rows_in_pairs(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A kernel that is right row by row but wrong on the second row of a call (a wrong
    pairing) is refused at load, with its one line."""
    _kernel()
    import tesla.mac

    monkeypatch.setattr(tesla.mac, "_mac", _WrongPairs(mk._load()["mod"]), raising=False)
    monkeypatch.setitem(sys.modules, "tesla.mac._mac", tesla.mac._mac)
    saved = dict(mk._state)
    mk._state.clear()
    try:
        assert not mk.available()
        assert "(rows in pairs) failed for sha384" in (mk.why_unavailable() or "")
        err = capsys.readouterr().err
        assert len(err.splitlines()) == 1 and "sha384" in err
    finally:
        mk._state.clear()
        mk._state.update(saved)
    assert mk.available()


class _WrongShaNi(_Wrong):
    """An extension whose SHA-NI path of SHA-1 is off by one bit (EVP is right)."""

    def hmac_rows(self, alg: int, key: bytes, buf: Any, st: Any, ln: Any, out: np.ndarray) -> None:
        self.real.hmac_rows(alg, key, buf, st, ln, out)
        if alg == 0 and self.real.sha_ni():
            out[0, 0] ^= 1


def test_sha_ni_failure_means_evp(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _path(evp=True)  # skips without SHA-NI
    real = mk._load()["mod"]
    real.set_sha_ni(True)
    import tesla.mac

    monkeypatch.setattr(tesla.mac, "_mac", _WrongShaNi(real), raising=False)
    monkeypatch.setitem(sys.modules, "tesla.mac._mac", tesla.mac._mac)
    saved = dict(mk._state)
    mk._state.clear()
    try:
        assert mk.available()
        assert not real.sha_ni()
        err = capsys.readouterr().err
        assert len(err.splitlines()) == 1 and "SHA-NI" in err and "EVP" in err
    finally:
        mk._state.clear()
        mk._state.update(saved)


def test_import_and_load_change_nothing_global() -> None:
    r = _python(
        "import os, sys, threading\n"
        "env = dict(os.environ); th = threading.active_count()\n"
        "from tesla.mac import kernel as m\n"
        "ok = m.available()\n"
        "print(dict(os.environ) == env, threading.active_count() == th,\n"
        "      'numba' in sys.modules, 'llvmlite' in sys.modules)"
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["True", "True", "False", "False"]
