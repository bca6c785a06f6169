"""Everything a service prints is JSON: its events, the standard library's records
(uvicorn's error and access logs), and tracebacks, before and after logging is configured."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest


def _lines(code: str, **env: str) -> tuple[int, list[dict[str, object]]]:
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=60, env={**os.environ, **env})
    lines = (done.stdout + done.stderr).splitlines()
    parsed = []
    for line in lines:
        try:
            parsed.append(json.loads(line))
        except ValueError:
            pytest.fail(f"not JSON: {line!r}\n{done.stdout}{done.stderr}")
    return done.returncode, parsed


def test_stdlib_uvicorn_and_tracebacks_are_json_lines() -> None:
    code, records = _lines("""
        import logging, logging.config, threading
        from quantum.observability import logging as qlog
        log = qlog.configure("probe")
        log.info("hello", api_key="k-123")
        logging.getLogger("some.library").warning("careful %s", "now")
        logging.config.dictConfig(qlog.uvicorn_log_config("info"))
        logging.getLogger("uvicorn.error").info("Uvicorn running on %s", "http://x")
        logging.getLogger("uvicorn.access").info('%s - "%s %s HTTP/%s" %d',
                                                 "127.0.0.1:1", "GET", "/", "1.1", 200)
        worker = threading.Thread(target=lambda: 1 / 0, name="worker")
        worker.start(); worker.join()
        raise RuntimeError("the end")
    """)
    assert code == 1
    events = {r["event"]: r for r in records if r["event"] != "uncaught_exception"}
    assert events["hello"]["api_key"] == "***"
    assert events["careful now"]["logger"] == "some.library"
    assert events["Uvicorn running on http://x"]["logger"] == "uvicorn.error"
    assert any(r.get("logger") == "uvicorn.access" for r in records)
    crashes = [r for r in records if r["event"] == "uncaught_exception"]
    assert len(crashes) == 2
    assert "ZeroDivisionError" in str(crashes[0]["exception"])
    assert crashes[0]["thread"] == "worker"
    assert "RuntimeError: the end" in str(crashes[1]["exception"])
    assert all(r.get("service") == "probe" for r in records)


def test_under_systemd_an_import_error_before_logging_is_json_too() -> None:
    code, records = _lines("import quantum\nimport a_module_that_is_not_installed\n",
                           INVOCATION_ID="0123")
    assert code == 1
    assert records[-1]["event"] == "uncaught_exception"
    assert "ModuleNotFoundError" in str(records[-1]["exception"])


def test_under_systemd_a_configuration_error_is_one_json_line_naming_the_key() -> None:
    code, records = _lines("import runpy; runpy.run_module('services.market_publisher',"
                           " run_name='__main__')", INVOCATION_ID="0123", QT_SYMBOLS=",")
    assert code == 78
    assert len(records) == 1 and "QT_SYMBOLS" in str(records[0]["error"])
