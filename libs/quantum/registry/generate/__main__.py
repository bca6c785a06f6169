"""``python -m quantum.registry.generate [--check] [--root PATH]``: see :mod:`.cli`."""

from quantum.registry.generate.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
