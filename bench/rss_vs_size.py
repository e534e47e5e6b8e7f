"""Peak RSS of ``tesla-mcast send`` and ``tesla-mcast receive`` against the file size
(issue 14, files larger than memory).

Each size: a file of random octets under ``--dir`` (default /tmp), one authenticated
(TESLA) transfer over loopback multicast (a random group in 239.255.0.0/16, interface
127.0.0.1, TTL 1) between two real processes, each run under ``/usr/bin/time -v``; the
received file is compared with the sent one (SHA-256).  One line per size::

    size_MiB  send_rss_MiB  recv_rss_MiB  elapsed_s  Mbit/s  bit_exact

Run it in the background, niced (the 4 GiB transfer takes minutes)::

    nice python3 bench/rss_vs_size.py                       # ALC: 256 MiB, 1 GiB, 4 GiB
    nice python3 bench/rss_vs_size.py --protocol norm --sizes 256M,1G
    nice python3 bench/rss_vs_size.py --sizes 64M --rate 300M   # a quick check

Target (issue 14): each process under 400 MiB peak RSS at 4 GiB, bit-exact.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PY = [sys.executable, "-m", "tesla.cli"]
TIME = "/usr/bin/time"


def parse_size(text: str) -> int:
    m = re.fullmatch(r"(\d+)([KMG]?)", text.strip().upper())
    if not m:
        raise argparse.ArgumentTypeError(f"bad size {text!r} (e.g. 256M, 1G)")
    return int(m.group(1)) << {"": 0, "K": 10, "M": 20, "G": 30}[m.group(2)]


def make_file(path: Path, size: int, seed: int) -> str:
    """``size`` pseudo-random octets (SHAKE-256 stream of ``seed``), its SHA-256."""
    sha = hashlib.sha256()
    chunk = 8 << 20
    with open(path, "wb") as f:
        n = 0
        i = 0
        while n < size:
            block = hashlib.shake_256(f"{seed}:{i}".encode()).digest(min(chunk, size - n))
            f.write(block)
            sha.update(block)
            n += len(block)
            i += 1
    return sha.hexdigest()


def file_sha256(path: Path) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(8 << 20):
            sha.update(chunk)
    return sha.hexdigest()


def peak_rss_mib(time_stderr: str) -> float | None:
    m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", time_stderr)
    return int(m.group(1)) / 1024 if m else None


def wait_joined(addr: str, limit: float = 60.0) -> bool:
    want = socket.inet_aton(addr)[::-1].hex().upper()
    end = time.time() + limit
    while time.time() < end:
        with open("/proc/net/igmp") as f:
            if any(line.split()[:1] == [want] for line in f):
                time.sleep(0.2)
                return True
        time.sleep(0.05)
    return False


def run_one(args: argparse.Namespace, size: int, work: Path, keys: tuple[Path, Path]) -> dict[str, object]:
    src_dir = work / "src"
    out = work / "out"
    shutil.rmtree(out, ignore_errors=True)
    src_dir.mkdir(exist_ok=True)
    src = src_dir / f"file-{size >> 20}M.bin"
    t = time.time()
    sha = make_file(src, size, size)
    gen_s = time.time() - t
    rng = random.SystemRandom()
    gaddr = f"239.255.{rng.randint(1, 254)}.{rng.randint(1, 254)}"
    group = f"{gaddr}:{rng.randint(20000, 60000)}"
    priv, pub = keys
    proto = ["--protocol", args.protocol]
    recv = [TIME, "-v", *PY, "receive", *proto, "--group", group, "--iface", "127.0.0.1",
            "--out", str(out), "--sender-key", str(pub), "--timeout", str(args.timeout), "--json"]
    send = [TIME, "-v", *PY, "send", *proto, str(src), "--group", group, "--iface", "127.0.0.1",
            "--ttl", "1", "--key", str(priv), "--rate", args.rate]
    if args.protocol == "alc":
        send += ["--fec", args.fec, "--repair-ratio", str(args.repair_ratio)]
        recv += ["--idle-timeout", "60"]
    rx = subprocess.Popen(recv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        if not wait_joined(gaddr):
            time.sleep(2)
        t0 = time.time()
        tx = subprocess.run(send, cwd=ROOT, capture_output=True, text=True, timeout=args.timeout)
        rx_out, rx_err = rx.communicate(timeout=args.timeout)
        elapsed = time.time() - t0
    finally:
        if rx.poll() is None:
            rx.kill()
            rx.wait()
    got = out / src.name
    exact = got.is_file() and got.stat().st_size == size and file_sha256(got) == sha
    try:
        summary = json.loads(rx_out)
        stats = summary.get("stats", {})
        drops = {k: v for k, v in stats.items() if k.startswith(("drop.", "fail."))}
    except ValueError:
        drops = {"unparsed_summary": 1}
    row = {
        "protocol": args.protocol,
        "size_MiB": size >> 20,
        "send_rss_MiB": peak_rss_mib(tx.stderr),
        "recv_rss_MiB": peak_rss_mib(rx_err),
        "elapsed_s": round(elapsed, 1),
        "Mbit_s": round(size * 8 / elapsed / 1e6, 1),
        "bit_exact": exact,
        "send_rc": tx.returncode,
        "recv_rc": rx.returncode,
        "file_gen_s": round(gen_s, 1),
        "drops": drops,
    }
    if not exact:
        row["send_stderr"] = tx.stderr[-800:]
        row["recv_stderr"] = rx_err[-1500:]
    src.unlink()
    shutil.rmtree(out, ignore_errors=True)
    return row


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="256M,1G,4G", help="comma-separated sizes (default 256M,1G,4G)")
    ap.add_argument("--protocol", choices=("alc", "norm"), default="alc")
    ap.add_argument("--rate", default="200M", help="sender rate (default 200M bit/s)")
    ap.add_argument("--fec", default="rs", help="ALC FEC (default rs)")
    ap.add_argument("--repair-ratio", type=float, default=0.1, help="ALC repair ratio (default 0.1)")
    ap.add_argument("--timeout", type=float, default=3600.0)
    ap.add_argument("--dir", default=tempfile.gettempdir(), help="where the files are written")
    ap.add_argument("--json", action="store_true", help="one JSON object per size")
    args = ap.parse_args()
    if not Path(TIME).exists():
        print(f"error: {TIME} missing (apt-get install time)", file=sys.stderr)
        return 2
    sizes = [parse_size(s) for s in args.sizes.split(",")]
    work = Path(tempfile.mkdtemp(prefix="rss-vs-size-", dir=args.dir))
    try:
        keydir = work / "keys"
        keydir.mkdir()
        subprocess.run([*PY, "keygen", "--out", str(keydir / "S")], cwd=ROOT, check=True,
                       capture_output=True)
        keys = (keydir / "S.pem", keydir / "S.pub")
        print(f"# {args.protocol} rate {args.rate}, TESLA on, loopback 239.255.x.y iface 127.0.0.1; "
              f"peak RSS from {TIME} -v", flush=True)
        print(f"# {'size_MiB':>8} {'send_rss_MiB':>12} {'recv_rss_MiB':>12} {'elapsed_s':>9} "
              f"{'Mbit/s':>7} bit_exact", flush=True)
        ok = True
        for size in sizes:
            row = run_one(args, size, work, keys)
            ok = ok and bool(row["bit_exact"])
            if args.json:
                print(json.dumps(row), flush=True)
            else:
                print(f"  {row['size_MiB']:>8} {row['send_rss_MiB'] or 0:>12.1f} {row['recv_rss_MiB'] or 0:>12.1f} "
                      f"{row['elapsed_s']:>9} {row['Mbit_s']:>7} {row['bit_exact']}  "
                      f"rc {row['send_rc']}/{row['recv_rc']} drops {row['drops']}", flush=True)
                if not row["bit_exact"]:
                    print(f"    send: {row.get('send_stderr')!r}\n    recv: {row.get('recv_stderr')!r}", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
