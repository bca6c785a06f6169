"""The benchmark framework: discovery, error isolation, the document and its file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import bench
from bench.__main__ import main


def test_discovers_benchmark_modules_but_not_helpers() -> None:
    names = bench.available()
    assert {"bus", "fleet"} <= set(names)
    assert not [name for name in names if name.startswith("_")]
    assert callable(bench.load("bus"))


def test_a_failing_benchmark_is_an_error_entry_and_the_others_still_run() -> None:
    def broken(quick: bool) -> dict[str, Any]:
        raise RuntimeError("no redis for you")

    def fine(quick: bool) -> dict[str, Any]:
        return {"quick_seen": quick, "rate": 1.5}

    def not_a_dict(quick: bool) -> dict[str, Any]:
        return [1, 2]  # type: ignore[return-value]

    functions = {"broken": broken, "fine": fine, "not_a_dict": not_a_dict}
    document = bench.run_all(["broken", "fine", "not_a_dict", "missing_module"], quick=True,
                             functions=functions, command="python -m bench --quick")
    entries = document["benchmarks"]
    assert list(entries) == ["broken", "fine", "not_a_dict", "missing_module"]
    assert entries["broken"]["status"] == "error"
    assert "RuntimeError: no redis for you" in entries["broken"]["error"]
    assert "Traceback" in entries["broken"]["traceback"]
    assert entries["fine"] == {"status": "ok", "seconds": entries["fine"]["seconds"],
                               "figures": {"quick_seen": True, "rate": 1.5}}
    assert entries["not_a_dict"]["status"] == "error"
    assert entries["missing_module"]["status"] == "error"
    assert "ModuleNotFoundError" in entries["missing_module"]["error"]
    machine = document["machine"]
    assert machine["cores"] >= 1 and machine["python"] and "redis_server" in machine
    assert document["quick"] is True and document["command"] == "python -m bench --quick"


def test_the_document_is_written_under_a_utc_timestamp(tmp_path: Path) -> None:
    document = bench.run_all(["fine"], quick=False,
                             functions={"fine": lambda quick: {"value": 1}})
    first = bench.write(document, tmp_path)
    second = bench.write(document, tmp_path)
    assert first != second and first.parent == second.parent == tmp_path
    assert first.name.endswith("Z.json") and second.name.endswith("Z-1.json")
    assert json.loads(first.read_text())["benchmarks"]["fine"]["figures"] == {"value": 1}


def test_cli_refuses_unknown_names_and_lists_known_ones(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["no-such-bench"]) == 2
    assert "unknown benchmark" in capsys.readouterr().err
    assert main(["--list"]) == 0
    assert set(capsys.readouterr().out.split()) == set(bench.available())
