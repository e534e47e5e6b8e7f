"""``tesla-mcast``: command-line entry point (the console script).

``bench``, ``keygen``, ``inspect`` and ``simulate`` own their options; ``send``,
``receive`` and ``demo`` are parsed by :func:`tesla.cli.parser.build_parser` and dispatched
through :data:`tesla.cli.parser.RUNNERS`.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from tesla.cli.parser import OPTION_HOOKS, RUNNERS, build_parser

__all__ = ["OPTION_HOOKS", "RUNNERS", "build_parser", "main"]


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench"]:  # the benchmark owns its options (tesla/cli/bench.py)
        from tesla.cli.bench import bench_main

        return bench_main(argv[1:])
    if argv[:1] == ["keygen"]:  # keygen owns its options (tesla/cli/keygen.py)
        from tesla.cli.keygen import keygen_main

        return keygen_main(argv[1:])
    if argv[:1] == ["inspect"]:  # inspect owns its options (tesla/cli/inspect.py)
        from tesla.cli.inspect import inspect_main

        return inspect_main(argv[1:], build_parser)
    if argv[:1] == ["simulate"]:  # the simulator owns its options (tesla/sim/cli.py)
        from tesla.sim.cli import simulate_main

        return simulate_main(argv[1:])
    args = build_parser().parse_args(argv)
    if args.command == "demo":
        from tesla.cli.demo import run_demo

        return run_demo(args)
    runners = RUNNERS[args.protocol]()
    return runners[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
