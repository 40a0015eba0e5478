"""``python -m benchmarks [NAME ...]``: run the ``benchmarks/bench_NAME.py`` modules, print tables.

Each module exposes ``run(args) -> list[Table]``; ``args`` is this runner's namespace
(``repeat``, ``quick``, ``data_dir``), and a module reads any option of its own with
``getattr(args, name, default)``. Tables print as markdown, ready for the README.

``bench_ledger`` builds ledgers of 100k, 1M and 10M jobs on SQLite and PostgreSQL (the
10M PostgreSQL one takes hours to write); ``CONVEYOR_BENCH_LEDGER_SIZES=10k,100k`` and
``CONVEYOR_BENCH_LEDGER_BACKENDS=sqlite`` make a quicker run. ``bench_submit`` submits
20,000 jobs from Python beside huey (``CONVEYOR_BENCH_SUBMIT_JOBS`` changes the count).
``bench_tail`` times ``worker --until-empty`` from its last job to its exit, on SQLite and
on moto SQS at the default 20 s wait (about 3 minutes; ``--quick``: 2 s waits, 25 s).
``bench_split`` submits a 20-million-row CSV with ``--split-rows`` and drains it with 1, then
2 ``conveyor worker --until-empty`` processes, beside ``conveyor run`` and polars (about
3 minutes; ``CONVEYOR_BENCH_SPLIT_ROWS=5000000`` for a quicker run).
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def available() -> list[str]:
    """Names of the benchmark modules, without importing them (one broken bench must not
    stop the others)."""
    return sorted(p.stem.removeprefix("bench_") for p in HERE.glob("bench_*.py"))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    names = available()
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument(
        "names", nargs="*", metavar="NAME", help=f"benchmarks to run (default: all of {names})"
    )
    parser.add_argument(
        "--repeat", type=int, default=3, help="runs per measurement; the best is reported"
    )
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke test")
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=Path("bench-data"),
        help="where generated inputs are kept between runs (default: ./bench-data)",
    )
    parser.add_argument("--markdown", type=Path, help="also write the tables to this file")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.names) - set(names))
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(names)}")
    args.names = args.names or names
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if str(HERE.parent) not in sys.path:
        sys.path.insert(0, str(HERE.parent))  # `benchmarks._table` from any working directory
    sections: list[str] = []
    for name in args.names:
        print(f"# running bench_{name} ...", file=sys.stderr, flush=True)
        started = time.perf_counter()
        module = importlib.import_module(f"benchmarks.bench_{name}")
        for table in module.run(args):
            text = table.markdown()
            print(text + "\n", flush=True)
            sections.append(text)
        print(f"# bench_{name}: {time.perf_counter() - started:.0f} s", file=sys.stderr)
    if args.markdown is not None:
        args.markdown.write_text("\n\n".join(sections) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
