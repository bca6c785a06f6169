"""The benchmark framework behind ``make bench`` (``python -m bench [NAME ...] [--quick]``).

A benchmark is a module ``bench/<name>.py`` with a function ``run(quick: bool) -> dict``
returning its figures (JSON-serialisable). Modules whose names start with ``_`` are helpers
and are not benchmarks. The framework discovers the modules, runs all or the named ones one
after the other, and gathers their figures with a description of the machine into ONE JSON
document, printed to stdout and written to ``bench/results/<UTC timestamp>.json``.

Benchmarks measure and never assert: a target missed is a figure to report, not a failure.
A module that raises (or cannot even be imported) becomes an ``error`` entry with its
traceback, and the others still run, so one broken benchmark never hides the rest.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
import platform
import shutil
import subprocess
import time
import traceback
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

RESULTS_DIR = Path(__file__).resolve().parent / "results"
BenchFunction = Callable[[bool], dict[str, Any]]


def available() -> list[str]:
    """Names of the benchmark modules in this package, sorted (helpers ``_*`` excluded)."""
    return sorted(
        info.name for info in pkgutil.iter_modules(__path__)
        if not info.name.startswith("_") and not info.ispkg
    )


def load(name: str) -> BenchFunction:
    """Import ``bench.<name>`` and return its ``run``; a module without one is an error."""
    module = importlib.import_module(f"{__name__}.{name}")
    function = getattr(module, "run", None)
    if not callable(function):
        raise TypeError(f"bench/{name}.py has no callable run(quick: bool) -> dict")
    return function


def redis_server_version() -> str | None:
    """The version of the ``redis-server`` the benchmarks start, or None when absent.

    Asked of the binary (``--version``) rather than of a running server because every
    benchmark starts its own private server from this same binary.
    """
    from quantum import localredis

    binary = localredis.server_binary() or shutil.which("redis-server")
    if binary is None:
        return None
    try:
        text = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10,
                              check=False).stdout
    except OSError:
        return None
    for word in text.split():
        if word.startswith("v="):
            return word[2:]
    return text.strip() or None


def machine_info() -> dict[str, Any]:
    """Where the figures were measured: they mean little without the cores and versions."""
    import redis

    try:
        import hiredis  # noqa: F401  (its presence changes redis-py's reply parsing speed)

        has_hiredis = True
    except ImportError:
        has_hiredis = False
    try:
        load_average: list[float] | None = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load_average = None
    return {
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "redis_server": redis_server_version(),
        "redis_py": redis.__version__,
        "hiredis": has_hiredis,
        "load_average_at_start": load_average,
    }


def run_one(name: str, function: BenchFunction | None, quick: bool) -> dict[str, Any]:
    """Run one benchmark; its figures, or an ``error`` entry when it (or its import) fails."""
    started = time.perf_counter()
    try:
        figures = (function or load(name))(quick)
        if not isinstance(figures, dict):
            raise TypeError(f"run() returned {type(figures).__name__}, not a dict")
        # Fail here, inside the error boundary, rather than when the whole document is dumped.
        orjson.dumps(figures, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS)
    except Exception as e:  # noqa: BLE001  (any failure of one benchmark is reported, not raised)
        return {
            "status": "error",
            "seconds": round(time.perf_counter() - started, 3),
            "error": f"{type(e).__name__}: {e}",
            "traceback": traceback.format_exc(),
        }
    return {"status": "ok", "seconds": round(time.perf_counter() - started, 3), "figures": figures}


def run_all(
    names: Iterable[str],
    quick: bool,
    functions: Mapping[str, BenchFunction] | None = None,
    progress: Callable[[str], None] | None = None,
    command: str | None = None,
) -> dict[str, Any]:
    """The whole document: machine, mode, and one entry per benchmark, in the given order.

    ``functions`` supplies benchmarks directly (by name) instead of importing ``bench.<name>``.
    """
    started_at = datetime.now(UTC)
    document: dict[str, Any] = {
        "started_at": started_at.isoformat(timespec="seconds"),
        "quick": quick,
        "command": command,
        "machine": machine_info(),
        "benchmarks": {},
    }
    for name in names:
        if progress is not None:
            progress(name)
        function = (functions or {}).get(name)
        document["benchmarks"][name] = run_one(name, function, quick)
    document["total_seconds"] = round((datetime.now(UTC) - started_at).total_seconds(), 3)
    return document


def dumps(document: Mapping[str, Any]) -> bytes:
    """The document as indented JSON (numpy scalars allowed in figures)."""
    return orjson.dumps(
        document,
        option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS,
    )


def write(document: Mapping[str, Any], directory: Path = RESULTS_DIR) -> Path:
    """Write ``<directory>/<UTC timestamp>.json``; a suffix keeps two runs in one second apart."""
    directory.mkdir(parents=True, exist_ok=True)
    stamp = datetime.fromisoformat(str(document["started_at"])).strftime("%Y%m%dT%H%M%SZ")
    path = directory / f"{stamp}.json"
    counter = 1
    while path.exists():
        path = directory / f"{stamp}-{counter}.json"
        counter += 1
    path.write_bytes(dumps(document) + b"\n")
    return path
