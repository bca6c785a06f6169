"""The model registry: versioned artifacts with metadata, checked before they are served.

Layout under the registry root (``models/`` by default)::

    models/
      registry.json          {"active": "<version>", "history": [...], "candidate": ...}
      <version>/
        manifest.json        metadata: data range, symbols, feature schema hash, metrics,
                             code version, members, weights, sha256 of every other file
        ensemble.json        weights, temperature, quorum, label spec
        reference.json       training feature distribution (drift)
        xgboost.ubj, lightgbm.txt, nhits-b1.pt, ... member artifacts

Loading refuses a version (:class:`ModelRefused`, with the reason) whose manifest is
missing or unreadable, whose feature schema differs from the running code's, or whose
shared files (ensemble, reference) fail their hash. A member whose file is missing or
fails its hash is left out and named in ``Ensemble.missing``; the engine's quorum decides
whether the rest may trade. ``registry.json`` is replaced atomically (write, then rename).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from quantum.features import SCHEMA_HASH
from quantum.ml.ensemble import Ensemble

MANIFEST = "manifest.json"
ENSEMBLE = "ensemble.json"
REFERENCE = "reference.json"
POINTER = "registry.json"
DECISIONS = "decisions.json"
SHARED_FILES = (ENSEMBLE, REFERENCE)
EDGE_SHARED_FILES = ("edge.json", "edge-lightgbm.txt", REFERENCE)


def shared_files(manifest: dict[str, Any]) -> tuple[str, ...]:
    """The files a version cannot be served without: an edge model has no optional member."""
    return EDGE_SHARED_FILES if manifest.get("kind") == "edge" else SHARED_FILES


class ModelRefused(RuntimeError):
    """A model version that must not be served; the message says why."""


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def code_version() -> str:
    """sha256 (first 16 hex) of the sources that define features, labels and models."""
    root = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for folder in ("features", "ml", "models"):
        for path in sorted((root / folder).glob("*.py")):
            digest.update(path.name.encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def new_version(now: datetime | None = None) -> str:
    moment = now or datetime.now(tz=UTC)
    return moment.strftime("%Y%m%dT%H%M%S%fZ")


class ModelRegistry:
    """Versions in a directory, and which one is active."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    # --- pointer ------------------------------------------------------------------------

    def pointer(self) -> dict[str, Any]:
        path = self.root / POINTER
        if not path.exists():
            return {"active": None, "history": [], "candidate": None}
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise ModelRefused(f"{path} is unreadable: {e}") from None
        return {"active": data.get("active"), "history": list(data.get("history", [])),
                "candidate": data.get("candidate")}

    def _write_pointer(self, data: dict[str, Any]) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        temporary = self.root / f".{POINTER}.{os.getpid()}"
        temporary.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
        temporary.replace(self.root / POINTER)

    def active(self) -> str | None:
        return self.pointer()["active"]

    def promote(self, version: str) -> dict[str, Any]:
        """Make ``version`` active (after checking it loads); the old one goes to history."""
        self.verify(version)
        data = self.pointer()
        if data["active"] == version:
            return data
        if data["active"] is not None:
            data["history"].append(data["active"])
        data["active"] = version
        if data["candidate"] == version:
            data["candidate"] = None
        self._write_pointer(data)
        return data

    def rollback(self) -> dict[str, Any]:
        """Re-activate the previously active version."""
        data = self.pointer()
        if not data["history"]:
            raise ModelRefused("nothing to roll back to: no previously active version")
        previous = data["history"].pop()
        self.verify(previous)
        data["active"] = previous
        self._write_pointer(data)
        return data

    def set_candidate(self, version: str | None) -> None:
        data = self.pointer()
        data["candidate"] = version
        self._write_pointer(data)

    # --- versions -----------------------------------------------------------------------

    def versions(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if (p / MANIFEST).is_file())

    def manifest(self, version: str) -> dict[str, Any]:
        path = self.root / version / MANIFEST
        if not path.is_file():
            raise ModelRefused(f"model {version}: no {MANIFEST} in {path.parent}")
        try:
            manifest: dict[str, Any] = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise ModelRefused(f"model {version}: {MANIFEST} is unreadable ({e})") from None
        return manifest

    def save(self, version: str, write: Any, metadata: dict[str, Any]) -> Path:
        """Create ``version``: ``write(directory)`` puts the artifacts there; the manifest
        records metadata and a sha256 per file. Written to a temporary directory first."""
        final = self.root / version
        if final.exists():
            raise FileExistsError(f"model version {version} already exists")
        staging = self.root / f".staging-{version}"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        write(staging)
        files = {p.name: sha256_of(p) for p in sorted(staging.iterdir()) if p.is_file()}
        manifest = {**metadata, "version": version, "files": files,
                    "feature_schema_hash": metadata.get("feature_schema_hash", SCHEMA_HASH),
                    "code_version": metadata.get("code_version", code_version())}
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
        staging.rename(final)
        return final

    def verify(self, version: str) -> dict[str, Any]:
        """Check everything but the members' loadability; returns per-file problems."""
        manifest = self.manifest(version)
        if manifest.get("feature_schema_hash") != SCHEMA_HASH:
            raise ModelRefused(
                f"model {version}: trained on feature schema {manifest.get('feature_schema_hash')}"
                f" but the running feature code has schema {SCHEMA_HASH}; retrain it")
        problems = self._file_problems(version, manifest)
        shared = {f: problems[f] for f in shared_files(manifest) if f in problems}
        if shared:
            name, reason = next(iter(shared.items()))
            raise ModelRefused(f"model {version}: {name} {reason}")
        return problems

    def _file_problems(self, version: str, manifest: dict[str, Any]) -> dict[str, str]:
        problems: dict[str, str] = {}
        for name, expected in manifest.get("files", {}).items():
            path = self.root / version / name
            if not path.is_file():
                problems[name] = "is missing"
            elif sha256_of(path) != expected:
                problems[name] = "fails its sha256 check (corrupt or altered)"
        for name in shared_files(manifest):
            if name not in manifest.get("files", {}):
                problems[name] = "is not listed in the manifest"
        return problems

    def load(self, version: str | None = None) -> Ensemble:
        """The ensemble of ``version`` (default: the active one) with every sound member."""
        from quantum.ml.members import load_member

        chosen = version or self.active()
        if chosen is None:
            raise ModelRefused(f"no active model in {self.root} (run `quantumctl train` and "
                               "`quantumctl models promote`)")
        problems = self.verify(chosen)
        manifest = self.manifest(chosen)
        if manifest.get("kind") == "edge":
            raise ModelRefused(f"model {chosen} is an edge model: serve it with QT_MODEL=edge")
        directory = self.root / chosen
        settings = json.loads((directory / ENSEMBLE).read_text())
        members = {}
        missing: dict[str, str] = {}
        for name in manifest["members"]:
            files = manifest["member_files"].get(name, [])
            bad = [f"{f} {problems[f]}" for f in files if f in problems]
            if not files:
                bad = ["has no files in the manifest"]
            if bad:
                missing[name] = "; ".join(bad)
                continue
            try:
                members[name] = load_member(name, directory, settings)
            except Exception as e:  # noqa: BLE001 - any loader failure leaves the member out
                missing[name] = f"failed to load: {type(e).__name__}: {e}"
        return Ensemble(version=chosen, members=members, weights=settings["weights"],
                        temperature=float(settings["temperature"]),
                        quorum=int(settings.get("quorum", 3)), missing=missing,
                        expected=tuple(manifest["members"]))

    def load_edge(self, version: str | None = None) -> tuple[str, Any, dict[str, Any]]:
        """(version, :class:`quantum.ml.edge.EdgeModel`, manifest) of an edge version."""
        from quantum.ml.edge import EdgeModel

        chosen = version or self.active()
        if chosen is None:
            raise ModelRefused(f"no active model in {self.root} (train an edge model with "
                               "`quantumctl walkforward --save` or name a version)")
        self.verify(chosen)
        manifest = self.manifest(chosen)
        if manifest.get("kind") != "edge":
            raise ModelRefused(f"model {chosen} is a {manifest.get('kind')} model, not an "
                               "edge model")
        try:
            model = EdgeModel.load(self.root / chosen)
        except (OSError, ValueError, KeyError) as e:
            raise ModelRefused(f"model {chosen}: the edge model does not load ({e})") from None
        return chosen, model, manifest

    def reference(self, version: str) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((self.root / version / REFERENCE).read_text())
        return data

    # --- promotion decisions ------------------------------------------------------------

    def decisions(self, version: str) -> list[dict[str, Any]]:
        """Every promotion decision taken on ``version`` (``<version>/decisions.json``,
        outside the manifest's hashed files: the evidence is added after training)."""
        path = self.root / version / DECISIONS
        if not path.is_file():
            return []
        data: list[dict[str, Any]] = json.loads(path.read_text())
        return data

    def record_decision(self, version: str, decision: dict[str, Any]) -> None:
        """Append a promotion decision and its evidence (written atomically)."""
        path = self.root / version / DECISIONS
        entries = [*self.decisions(version),
                   {**decision, "at": datetime.now(tz=UTC).isoformat()}]
        temporary = path.with_name(f".{DECISIONS}.{os.getpid()}")
        temporary.write_text(json.dumps(entries, indent=1, sort_keys=True) + "\n")
        temporary.replace(path)
