"""Long fuzz run (issue 15): the CI fuzzer of ``tests/fuzzing.py`` until N inputs per
target (default 10^6), with the known-issue filters of ``tests/test_fuzz.py``.

    nice python bench/fuzz_long.py                      # every target, 10^6 inputs each
    nice python bench/fuzz_long.py --targets lct norm_messages --inputs 200000 --seed 7
    nice python bench/fuzz_long.py --memory             # + traced heap peak per episode
    nice python bench/fuzz_long.py --jobs 2             # targets in 2 processes

Prints one line per target (inputs, cases, CPU seconds, crashes, known-issue skips) and
every crash with its seed/case (``fuzzing.replay_case`` reproduces it); ``--json FILE``
writes the figures.  Exit status 1 if any crash was found.

``--atheris``: coverage-guided instead (decoder targets only, one per process, needs
``pip install atheris``): libFuzzer drives the same target functions, our mutator is its
custom mutator, seeded with the same corpus.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import fuzzing as F  # noqa: E402
from test_fuzz import KNOWN_ISSUES  # noqa: E402


def _one(args: tuple[str, int, int, float | None, bool]) -> dict[str, object]:
    name, seed, inputs, seconds, memory = args
    t = F.targets_by_name([name], memory=memory)[0]
    res = F.fuzz(t, seed, inputs=inputs, seconds=seconds, known=KNOWN_ISSUES,
                 stop_on_crash=False, memory=memory, log=lambda s: print(s, flush=True))
    print(res.line(), flush=True)
    uniq: dict[str, str] = {}
    for c in res.crashes:
        key = c.tb.strip().splitlines()[-1][:200]
        uniq.setdefault(key, f"seed={c.seed} case={c.case} input={c.data[:256].hex()}")
    return {
        "target": name, "inputs": res.inputs, "cases": res.cases,
        "cpu_seconds": round(res.seconds, 1), "crashes": len(res.crashes),
        "unique_crashes": uniq, "known_skips": res.known,
        "traced_peak_mib": round(res.peak_bytes / 2**20, 1),
    }


def _atheris(name: str, seed: int, extra: list[str]) -> None:  # pragma: no cover - optional
    import random

    import atheris

    t = F.targets_by_name([name])[0]
    if not isinstance(t, F.DecoderTarget):
        raise SystemExit("--atheris drives decoder targets only")
    seeds = t.seeds()
    mut = F.Mutator(random.Random(seed), seeds, t.fmt)

    def one(data: bytes) -> None:
        try:
            t.fn(data)
        except F.DecodeError:
            pass

    def custom(data: bytes, max_size: int, s: int) -> bytes:
        mut.rng.seed(s)
        return mut.mutate(data or mut.pick())[:max_size]

    corpus = Path(os.environ.get("TMPDIR", "/tmp")) / f"fuzz-corpus-{name}"
    corpus.mkdir(exist_ok=True)
    for k, s in enumerate(seeds):
        (corpus / f"seed{k}").write_bytes(s)
    atheris.instrument_all()
    atheris.Setup([sys.argv[0], str(corpus), f"-seed={seed}", *extra], one,
                  custom_mutator=custom)
    atheris.Fuzz()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--targets", nargs="*", help="target names (default: all)")
    ap.add_argument("--inputs", type=int, default=1_000_000, help="inputs per target")
    ap.add_argument("--seconds", type=float, default=None, help="CPU seconds cap per target")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--memory", action="store_true", help="trace the heap (slower)")
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--atheris", metavar="TARGET")
    ap.add_argument("--list", action="store_true")
    argv = sys.argv[1:]
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []
    a = ap.parse_args(argv[: argv.index("--")] if "--" in argv else argv)
    a.libfuzzer_args = extra
    if a.list:
        print(" ".join(t.name for t in F.all_targets()))
        return 0
    if a.atheris:
        _atheris(a.atheris, a.seed, a.libfuzzer_args)
        return 0
    names = a.targets or [t.name for t in F.all_targets()]
    jobs = [(n, a.seed, a.inputs, a.seconds, a.memory) for n in names]
    t0 = time.time()
    if a.jobs > 1:
        with mp.get_context("fork").Pool(a.jobs) as pool:
            out = pool.map(_one, jobs, chunksize=1)
    else:
        out = [_one(j) for j in jobs]
    print(f"\n[fuzz-long] seed {a.seed}, {time.time() - t0:.0f} s wall")
    print("| target | inputs | cases | CPU s | crashes | known-issue skips |")
    print("|---|---|---|---|---|---|")
    for r in out:
        print(f"| {r['target']} | {r['inputs']} | {r['cases']} | {r['cpu_seconds']} | "
              f"{r['crashes']} | {r['known_skips'] or ''} |")
        for k, v in dict(r["unique_crashes"]).items():  # type: ignore[call-overload]
            print(f"    {k}\n      {v}")
    if a.json:
        a.json.write_text(json.dumps(out, indent=1))
    return 1 if any(r["crashes"] for r in out) else 0


if __name__ == "__main__":
    sys.exit(main())
