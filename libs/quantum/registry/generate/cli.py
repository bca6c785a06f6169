"""The command line of ``python -m quantum.registry.generate``: write, or ``--check``.

Without options it writes the files that differ, deletes stale ones and prints ``wrote:``
per path (exit 0). ``--check`` writes nothing, prints ``differs:`` per path and exits 1
when any differs. ``--root`` points at another tree. A registry that cannot be rendered
exits 2 with one ``error:`` line. Kept apart from ``__main__`` so that the package can
export :func:`main` without importing the module ``-m`` runs.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from quantum.registry.generate.common import ROOT, GenerationError
from quantum.registry.generate.files import check, write


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m quantum.registry.generate",
        description="Write units, env file examples, the launcher table and docs from the "
        "fleet registry.",
    )
    parser.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 listing the files that differ"
    )
    parser.add_argument("--root", type=Path, default=ROOT, help="repository root")
    args = parser.parse_args(argv)
    try:
        paths = check(args.root) if args.check else write(args.root)
    except GenerationError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.check:
        for path in paths:
            print(f"differs: {path}")
        if paths:
            print("run `python -m quantum.registry.generate` to regenerate", file=sys.stderr)
        return 1 if paths else 0
    for path in paths:
        print(f"wrote: {path}")
    return 0
