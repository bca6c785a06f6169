"""``python -m bench [NAME ...] [--quick]``: run benchmarks, print and keep one JSON document.

Progress goes to stderr so stdout carries nothing but the document (pipe it to ``jq``).
The exit status is 0 when every benchmark ran, 1 when one reported an error (its entry is
still in the document) and 2 for an unknown benchmark name.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import bench
from quantum.observability import logging as quantum_logging


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Run the Quantum Trader benchmarks and print one JSON document.",
    )
    parser.add_argument("names", nargs="*", metavar="NAME",
                        help=f"benchmarks to run (default: all of {', '.join(bench.available())})")
    parser.add_argument("--quick", action="store_true",
                        help="smaller workloads: the whole run in under a minute")
    parser.add_argument("--output", type=Path, default=bench.RESULTS_DIR,
                        help="directory for the result file (default: bench/results)")
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    known = bench.available()
    if arguments.list:
        print("\n".join(known))
        return 0
    unknown = [name for name in arguments.names if name not in known]
    if unknown:
        print(f"unknown benchmark(s): {', '.join(unknown)}; known: {', '.join(known)}",
              file=sys.stderr)
        return 2
    names = arguments.names or known
    # Services' runners log through structlog: to stderr, warnings only, so stdout stays JSON.
    quantum_logging.configure("bench", "warning")
    started = time.perf_counter()

    def progress(name: str) -> None:
        print(f"[bench] {name} … ({time.perf_counter() - started:.0f} s elapsed)", file=sys.stderr,
              flush=True)

    command = " ".join(["python -m bench", *(argv if argv is not None else sys.argv[1:])])
    document = bench.run_all(names, arguments.quick, progress=progress, command=command)
    path = bench.write(document, arguments.output)
    sys.stdout.buffer.write(bench.dumps(document) + b"\n")
    sys.stdout.flush()
    failed = [n for n, entry in document["benchmarks"].items() if entry["status"] != "ok"]
    print(f"[bench] wrote {path} in {document['total_seconds']:.0f} s"
          + (f"; errors in: {', '.join(failed)}" if failed else ""), file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
