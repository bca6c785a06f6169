"""The generated systemd units: what they declare, that systemd accepts them, how exposed
they are, and that their sandbox does not break the libraries the services load."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from quantum.registry import generate
from quantum.registry.fleet import SERVICES, TIMERS, ServiceSpec

ROOT = generate.ROOT
UNIT_DIR = ROOT / generate.UNIT_DIR
ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(
    ANALYZE is None, reason="systemd-analyze is not installed on this machine"
)
MAX_EXPOSURE = 2.0
EXPOSURE = re.compile(r"Overall exposure level for (?P<unit>\S+): (?P<level>\d+(?:\.\d+)?)")


def directives(text: str) -> dict[str, list[str]]:
    """``Key`` → its values in order (repeated keys such as ``EnvironmentFile`` accumulate)."""
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        if not line or line.startswith(("#", ";", "[")):
            continue
        key, _, value = line.partition("=")
        out.setdefault(key, []).append(value)
    return out


def unit_path(spec: ServiceSpec) -> Path:
    return UNIT_DIR / spec.unit


# --- content ----------------------------------------------------------------------------


@pytest.mark.parametrize("spec", SERVICES, ids=lambda spec: spec.name)
def test_unit_declares_lifecycle_and_environment(spec: ServiceSpec) -> None:
    unit = directives(unit_path(spec).read_text())
    expected = {
        "Type": ["notify"],
        "NotifyAccess": ["main"],
        "WatchdogSec": ["30"],
        "Restart": ["on-failure"],
        "RestartSec": ["2"],
        "RestartPreventExitStatus": ["78"],
        "User": ["quantum"],
        "Group": ["quantum"],
        "WorkingDirectory": ["/opt/quantum-trader"],
        "ExecStart": [f"/opt/quantum-trader/.venv/bin/python -m {spec.module}"],
        "EnvironmentFile": ["/etc/quantum/common.env", f"/etc/quantum/{spec.name}.env"],
        "PartOf": ["quantum-trader.target"],
        "WantedBy": ["quantum-trader.target"],
        "MemoryMax": [spec.memory_max],
    }
    for key, values in expected.items():
        assert unit.get(key) == values, key
    assert int(unit["StartLimitBurst"][0]) >= 1 and int(unit["StartLimitIntervalSec"][0]) > 0
    after = unit["After"][0].split()
    assert "network-online.target" in after and "redis-server.service" in after
    # No QT_ setting in the unit itself: env files are the one place (the loader refuses
    # unknown QT_ keys, so a stray one would stop the service).
    assert not any("QT_" in value for value in unit.get("Environment", []))


@pytest.mark.parametrize("spec", SERVICES, ids=lambda spec: spec.name)
def test_unit_sandbox_follows_the_network_needs(spec: ServiceSpec) -> None:
    unit = directives(unit_path(spec).read_text())
    for key in ("NoNewPrivileges", "MemoryDenyWriteExecute", "PrivateUsers", "LockPersonality"):
        assert unit.get(key) == ["yes"], key
    assert unit["CapabilityBoundingSet"] == [""] and unit["AmbientCapabilities"] == [""]
    assert unit["RestrictAddressFamilies"] == ["AF_INET AF_INET6 AF_UNIX"]
    assert unit["ReadWritePaths"] == [generate.STATE_DIR]
    if spec.loopback_only:
        assert unit["IPAddressDeny"] == ["any"] and unit["IPAddressAllow"] == ["localhost"]
    else:
        assert "IPAddressDeny" not in unit and "IPAddressAllow" not in unit


def test_target_wants_every_unit() -> None:
    target = directives((UNIT_DIR / generate.TARGET).read_text())
    assert target["Wants"][1:] == [spec.unit for spec in SERVICES]
    jobs = {timer.unit for timer in TIMERS}  # the timers' oneshot services
    assert sorted(p.name for p in UNIT_DIR.glob("quantum-*.service")
                  if p.name not in jobs) == sorted(spec.unit for spec in SERVICES)


# --- systemd-analyze ----------------------------------------------------------------------


def _runnable_copies(directory: Path) -> list[Path]:
    """Copies of the units whose ExecStart and WorkingDirectory exist on this machine.

    ``systemd-analyze verify`` (252) fails a unit whose ExecStart binary does not exist, and
    ``/opt/quantum-trader`` exists only on a deployed host, so the copies run this checkout's
    interpreter from this checkout. Nothing else is changed. ``User=quantum`` stays as
    written: verify in 252 does not resolve users (they are looked up when the unit starts;
    the host creates the account, see docs/services.md), so the account's absence here
    neither fails nor is hidden by the check.
    """
    python = ROOT / ".venv" / "bin" / "python"
    interpreter = str(python if python.exists() else Path(sys.executable))
    copies = []
    for source in sorted(UNIT_DIR.iterdir()):
        text = source.read_text()
        text = text.replace(generate.PYTHON, interpreter)
        text = text.replace(
            f"WorkingDirectory={generate.INSTALL_ROOT}", f"WorkingDirectory={ROOT}"
        )
        copy = directory / source.name
        copy.write_text(text)
        copies.append(copy)
    return copies


def _verify(paths: list[Path]) -> subprocess.CompletedProcess[str]:
    # --man=no: Documentation= points at a file, and man pages are not installed in CI.
    return subprocess.run(
        [str(ANALYZE), "verify", "--man=no", *map(str, paths)],
        capture_output=True, text=True, check=False, timeout=120,
    )


def _complaints(result: subprocess.CompletedProcess[str], directory: Path) -> list[str]:
    """Lines about our units. verify exits 0 on unknown keys and bad values (it only warns),
    so the check is: exit status 0 and not one warning naming our files."""
    names = {path.name for path in directory.iterdir()}
    text = result.stdout + result.stderr
    return [line for line in text.splitlines() if str(directory) in line
            or any(name in line for name in names)]


@needs_analyze
def test_systemd_analyze_verify_accepts_every_unit(tmp_path: Path) -> None:
    copies = _runnable_copies(tmp_path)
    result = _verify(copies)
    assert result.returncode == 0, result.stderr
    assert _complaints(result, tmp_path) == []


@needs_analyze
def test_verify_check_catches_a_bad_unit(tmp_path: Path) -> None:
    """The check above is not vacuous: a misspelt key and a bad value are reported."""
    copies = _runnable_copies(tmp_path)
    unit = copies[0]
    unit.write_text(
        unit.read_text().replace("Type=notify", "Type=notfy\nWatchdgSec=30")
    )
    complaints = _complaints(_verify([unit]), tmp_path)
    assert any("notfy" in line for line in complaints)
    assert any("WatchdgSec" in line for line in complaints)


@needs_analyze
@pytest.mark.parametrize("spec", SERVICES, ids=lambda spec: spec.name)
def test_security_exposure_is_at_most_two(spec: ServiceSpec) -> None:
    result = subprocess.run(
        [str(ANALYZE), "security", "--offline=true", str(unit_path(spec))],
        capture_output=True, text=True, check=False, timeout=120,
    )
    match = EXPOSURE.search(result.stdout + result.stderr)
    assert match, f"no exposure line in:\n{result.stdout}\n{result.stderr}"
    assert match["unit"] == spec.unit
    assert float(match["level"]) <= MAX_EXPOSURE, result.stdout


# --- MemoryDenyWriteExecute against the libraries -------------------------------------------

MDWE_PROBE = textwrap.dedent(
    """
    import ctypes, importlib, mmap, sys
    PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN = 65, 1
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0) != 0:
        print("unsupported"); sys.exit(0)
    try:
        mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
        print("not enforced"); sys.exit(3)
    except OSError:
        pass
    for module in sys.argv[1:]:
        importlib.import_module(module)
    import numpy as np
    rng = np.random.default_rng(7)
    a = rng.standard_normal((256, 256))
    assert np.allclose(np.linalg.inv(a) @ a, np.eye(256), atol=1e-8)
    np.fft.rfft(a[0]); np.sort(a, axis=0); np.linalg.svd(a[:64, :64])
    exercised = ["numpy"]
    try:
        import xgboost
    except ImportError:
        pass
    else:
        x = rng.standard_normal((200, 4)); y = (x[:, 0] > 0).astype(int)
        xgboost.XGBClassifier(n_estimators=5, max_depth=2).fit(x, y).predict(x)
        exercised.append("xgboost")
    try:
        import lightgbm
    except ImportError:
        pass
    else:
        x = rng.standard_normal((200, 4)); y = (x[:, 0] > 0).astype(int)
        lightgbm.LGBMClassifier(n_estimators=5, verbose=-1).fit(x, y).predict(x)
        exercised.append("lightgbm")
    print("ok", *exercised)
    """
)


def test_service_libraries_run_under_memory_deny_write_execute() -> None:
    """Every unit sets ``MemoryDenyWriteExecute=yes``. systemd 252 enforces it with seccomp;
    the kernel's ``PR_SET_MDWE`` (Linux 6.3+) refuses the same mappings, so a subprocess
    that sets it, proves W+X mappings are refused, then imports every service's settings,
    the service shell and its libraries and runs numpy (and XGBoost or LightGBM when
    installed) shows the services can live with it."""
    modules = ["quantum.app", "quantum.contracts.events", "orjson", "pydantic_core", "redis"]
    modules += [spec.settings.partition(":")[0] for spec in SERVICES]
    result = subprocess.run(
        [sys.executable, "-c", MDWE_PROBE, *modules],
        capture_output=True, text=True, check=False, timeout=300, cwd=ROOT,
    )
    if result.stdout.strip() == "unsupported":
        pytest.skip("this kernel has no PR_SET_MDWE (Linux < 6.3)")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("ok numpy"), result.stdout
