"""``quantumctl train``, ``quantumctl evaluate`` and ``quantumctl models …``.

Training libraries are imported inside the commands; neuralforecast (which loads ray) is
imported only when a forecasting member is actually trained, so ``models list`` and
``evaluate`` stay quick.
"""

from __future__ import annotations

import json as jsonlib
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from quantum.ctl.cli import Json, app, help_without_command
from quantum.ctl.errors import ArgumentError, CtlError

models_app = typer.Typer(help="The model registry: list, show, promote, roll back.")
app.add_typer(models_app, name="models")
models_app.callback(invoke_without_command=True)(help_without_command)

ModelsDir = Annotated[Path, typer.Option("--models", help="The registry directory.")]
DEFAULT_MODELS = Path("models")


def _time(text: str | None, flag: str) -> datetime | None:
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ArgumentError(f"{flag} {text!r} is not an ISO date or time") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _symbols(text: str | None) -> tuple[str, ...] | None:
    return tuple(s.strip().upper() for s in text.split(",") if s.strip()) if text else None


def _dataset(data: Path, symbols: str | None, start: str | None, end: str | None) -> Any:
    from quantum.ml.dataset import load_dataset

    if not data.is_dir():
        raise ArgumentError(f"--data {data} is not a directory")
    try:
        return load_dataset(data, _symbols(symbols), start=_time(start, "--start"),
                            end=_time(end, "--end"))
    except ValueError as e:
        raise CtlError(f"cannot build the dataset: {e}") from None


@app.command("train")
def train_command(
    data: Annotated[Path, typer.Option("--data", help="Directory of <SYMBOL>-5m.csv.gz files.")],
    out: Annotated[Path, typer.Option("--out", help="The registry directory.")] = DEFAULT_MODELS,
    symbols: Annotated[str | None, typer.Option("--symbols", help="Comma list.")] = None,
    start: Annotated[str | None, typer.Option("--start", help="First bar (ISO).")] = None,
    end: Annotated[str | None, typer.Option("--end", help="End, exclusive (ISO).")] = None,
    members: Annotated[str, typer.Option("--members", help="Members to train.")] =
        "xgboost,lightgbm,nhits,patchtst",
    folds: Annotated[int, typer.Option("--folds", help="Walk-forward folds (0: none).")] = 3,
    neural_steps: Annotated[int, typer.Option("--neural-steps", help="Steps per network.")] = 300,
    tree_rounds: Annotated[int, typer.Option("--tree-rounds", help="Boosting rounds.")] = 300,
    promote: Annotated[bool, typer.Option("--promote", help="Make the new version active.")] =
        False,
) -> None:
    """Walk-forward evaluation, production fit, new registry version."""
    from quantum.ml.members import MEMBER_NAMES, MemberConfig
    from quantum.ml.registry import ModelRegistry
    from quantum.ml.train import TrainConfig, train

    chosen = tuple(m.strip() for m in members.split(",") if m.strip())
    unknown = [m for m in chosen if m not in MEMBER_NAMES]
    if unknown or not chosen:
        raise ArgumentError(f"--members: unknown {unknown}; choose from {', '.join(MEMBER_NAMES)}")
    config = TrainConfig(members=chosen, folds=folds, quorum=min(3, len(chosen)),
                         member=MemberConfig(neural_steps=neural_steps, tree_rounds=tree_rounds))
    dataset = _dataset(data, symbols, start, end)
    registry = ModelRegistry(out)
    try:
        version, manifest = train(dataset, registry, config,
                                  progress=lambda line: typer.echo(line, err=True),
                                  source=str(data))
    except ValueError as e:
        raise CtlError(f"training failed: {e}") from None
    if promote:
        registry.promote(version)
    typer.echo(f"version: {version}")
    typer.echo(f"verdict: {manifest['walk_forward']['verdict']['summary']}")
    for line in manifest["walk_forward"]["verdict"].get("details", []):
        typer.echo(f"  {line}")
    timing = manifest["timing"]
    typer.echo(f"production fit: {timing['production_fit_seconds']:.1f}s, walk-forward: "
               f"{timing['walk_forward_seconds']:.1f}s")


@app.command("evaluate")
def evaluate_command(
    models: Annotated[Path, typer.Option("--models", help="Registry dir or a version dir.")],
    data: Annotated[Path, typer.Option("--data", help="Directory of kline files.")],
    json_path: Annotated[Path, typer.Option("--json", help="Where to write the report.")],
    version: Annotated[str | None, typer.Option("--version", help="Default: active.")] = None,
    symbols: Annotated[str | None, typer.Option("--symbols", help="Comma list.")] = None,
    start: Annotated[str | None, typer.Option("--start", help="First bar (ISO).")] = None,
    end: Annotated[str | None, typer.Option("--end", help="End, exclusive (ISO).")] = None,
) -> None:
    """Score a model version on any data: members, ensemble, baselines, verdict."""
    from quantum.ml.registry import ENSEMBLE, MANIFEST, ModelRefused, ModelRegistry
    from quantum.ml.train import evaluate

    if (models / MANIFEST).is_file():  # a version directory was given
        registry, version = ModelRegistry(models.parent), models.name
    else:
        registry = ModelRegistry(models)
    try:
        ensemble = registry.load(version)
        manifest = registry.manifest(ensemble.version)
    except ModelRefused as e:
        raise CtlError(str(e)) from None
    settings = jsonlib.loads((registry.root / ensemble.version / ENSEMBLE).read_text())
    result = evaluate(ensemble, manifest, settings, _dataset(data, symbols, start, end))
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(jsonlib.dumps(result, indent=1, sort_keys=True) + "\n")
    typer.echo(f"version {ensemble.version} on {result['rows']} rows "
               f"(out of sample: {result['out_of_sample']}): {result['verdict']['summary']}")
    typer.echo(f"report written to {json_path}")


@models_app.command("list")
def models_list(models: ModelsDir = DEFAULT_MODELS, json: Json = False) -> None:
    """Every version with its data, members and walk-forward verdict."""
    from quantum.ml.registry import ModelRefused, ModelRegistry

    registry = ModelRegistry(models)
    pointer = registry.pointer()
    rows: list[dict[str, Any]] = []
    for version in registry.versions():
        try:
            manifest = registry.manifest(version)
        except ModelRefused as e:
            rows.append({"version": version, "error": str(e)})
            continue
        verdict = manifest.get("walk_forward", {}).get("verdict", {})
        rows.append({"version": version, "active": version == pointer["active"],
                     "candidate": version == pointer["candidate"],
                     "members": manifest.get("members"),
                     "symbols": manifest.get("data", {}).get("symbols"),
                     "range": manifest.get("data", {}).get("range"),
                     "beats_all_baselines": verdict.get("beats_all_baselines")})
    if json:
        typer.echo(jsonlib.dumps(rows, indent=1))
        return
    if not rows:
        typer.echo(f"no model versions in {models}")
    for row in rows:
        mark = "*" if row.get("active") else " "
        typer.echo(f"{mark} {row['version']}  {','.join(row.get('members') or [])}  "
                   f"beats baselines: {row.get('beats_all_baselines')}  {row.get('error', '')}")


@models_app.command("show")
def models_show(version: Annotated[str, typer.Argument(help="Version (or 'active').")],
                models: ModelsDir = DEFAULT_MODELS) -> None:
    """The manifest of a version, and whether it loads."""
    from quantum.ml.registry import ModelRefused, ModelRegistry

    registry = ModelRegistry(models)
    chosen = registry.active() if version == "active" else version
    if chosen is None:
        raise CtlError(f"no active model in {models}")
    try:
        manifest = registry.manifest(chosen)
        problems = registry.verify(chosen)
        status: Any = {"loads": True, "file_problems": problems}
    except ModelRefused as e:
        if "manifest" in str(e):
            raise CtlError(str(e)) from None
        status = {"loads": False, "refused": str(e)}
    manifest.pop("walk_forward", None)
    typer.echo(jsonlib.dumps({"manifest": manifest, "status": status}, indent=1))


@models_app.command("promote")
def models_promote(version: Annotated[str, typer.Argument(help="Version to activate.")],
                   models: ModelsDir = DEFAULT_MODELS) -> None:
    """Make a version active (the CLM announces it to the ai-engine)."""
    from quantum.ml.registry import ModelRefused, ModelRegistry

    try:
        pointer = ModelRegistry(models).promote(version)
    except ModelRefused as e:
        raise CtlError(f"not promoted: {e}") from None
    typer.echo(f"active: {pointer['active']}")


@models_app.command("rollback")
def models_rollback(models: ModelsDir = DEFAULT_MODELS) -> None:
    """Re-activate the previously active version."""
    from quantum.ml.registry import ModelRefused, ModelRegistry

    try:
        pointer = ModelRegistry(models).rollback()
    except ModelRefused as e:
        raise CtlError(f"not rolled back: {e}") from None
    typer.echo(f"active: {pointer['active']}")
