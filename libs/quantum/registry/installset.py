"""The base install set: what a unit's venv holds when installed without extras.

Every service of the registry must start on it (``tests/integration/registry/
test_install_set.py``); the ``ml`` and ``rl`` extras are for training and the models that
need them. Also the wheelhouse ``scripts/install.sh`` installs from offline (the systemd
test's container has no network): the base requirements as wheels, plus the build
backend that builds the project itself, cached under a key of the requirement list and the
Python that made it.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
PROJECT_FILES = ("pyproject.toml", "README.md", "libs", "services")


def base_requirements(root: Path = ROOT) -> list[str]:
    """``[project].dependencies`` plus the ``[build-system].requires`` of ``pyproject.toml``."""
    data = tomllib.loads((root / "pyproject.toml").read_text())
    return [*data["project"]["dependencies"], *data["build-system"]["requires"]]


def cache_dir() -> Path:
    """``$QT_INSTALL_CACHE``, else ``$XDG_CACHE_HOME/quantum-trader`` (``~/.cache``)."""
    configured = os.environ.get("QT_INSTALL_CACHE")
    if configured:
        return Path(configured)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "quantum-trader"


def key(requirements: list[str], python: str = sys.executable) -> str:
    version = subprocess.run([python, "-c", "import sys; print(sys.version)"],
                             capture_output=True, text=True, check=True).stdout.strip()
    text = "\n".join([version, *sorted(requirements)])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def wheelhouse(root: Path = ROOT, python: str = sys.executable) -> Path:
    """A folder of wheels for the base requirements (made once per key, then reused)."""
    requirements = base_requirements(root)
    target = cache_dir() / f"wheels-{key(requirements, python)}"
    if (target / ".complete").exists():
        return target
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    subprocess.run([python, "-m", "pip", "wheel", "-q", "-w", str(partial), *requirements],
                   check=True)
    (partial / ".complete").write_text("\n".join(requirements) + "\n")
    shutil.rmtree(target, ignore_errors=True)
    partial.rename(target)
    return target


def project_copy(destination: Path, root: Path = ROOT) -> Path:
    """The files a build of the project reads, copied (a build never writes into the tree)."""
    destination.mkdir(parents=True, exist_ok=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for name in PROJECT_FILES:
        source = root / name
        if source.is_dir():
            shutil.copytree(source, destination / name, ignore=ignore, dirs_exist_ok=True)
        else:
            shutil.copy2(source, destination / name)
    return destination


def base_venv(workdir: Path, root: Path = ROOT, python: str = sys.executable) -> Path:
    """A fresh venv in ``workdir/venv`` with the project and only its base dependencies,
    installed offline from :func:`wheelhouse`. Returns the venv's python."""
    wheels = wheelhouse(root, python)
    venv = workdir / "venv"
    subprocess.run([python, "-m", "venv", str(venv)], check=True)
    venv_python = venv / "bin" / "python"
    source = project_copy(workdir / "src", root)
    subprocess.run([str(venv_python), "-m", "pip", "install", "-q", "--no-index",
                    "--find-links", str(wheels), str(source)], check=True)
    return venv_python
