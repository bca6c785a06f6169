"""``python -m quantum.journal upgrade|current|head [--url URL]``: the journal's schema.

The journal service migrates on start; this is for an operator (before a restore, or to
check which revision a backup holds). The URL defaults to ``QT_DATABASE_URL``, else the
default SQLite file.
"""

from __future__ import annotations

import argparse
import os
import sys

from quantum.journal.database import (
    current_revision,
    head_revision,
    make_engine,
    redact,
    resolve_url,
    upgrade,
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m quantum.journal")
    parser.add_argument("action", choices=("upgrade", "current", "head"))
    parser.add_argument("--url", default=os.environ.get("QT_DATABASE_URL", ""))
    arguments = parser.parse_args(argv)
    if arguments.action == "head":
        print(head_revision())
        return 0
    url = resolve_url(arguments.url)
    engine = make_engine(url)
    try:
        if arguments.action == "upgrade":
            upgrade(engine)
        print(f"{redact(url)} at revision {current_revision(engine)}")
    finally:
        engine.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
