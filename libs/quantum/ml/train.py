"""Training and evaluation pipelines behind ``quantumctl train`` and ``quantumctl evaluate``.

``train``: (1) walk-forward evaluation — per fold, every member is fitted on the train
block, the ensemble's weights and temperature on the validation block, and members,
ensemble and baselines are scored on the test block; (2) the production fit — members on
everything but the newest block, weights and temperature on that block; (3) a new registry
version with the artifacts, the walk-forward report and its verdict. The verdict compares
the ensemble with the baselines on test blocks only; nothing is chosen on a test block.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from quantum.features import FEATURE_NAMES, SCHEMA_HASH
from quantum.ml import baselines, drift
from quantum.ml.dataset import Dataset, to_ms
from quantum.ml.ensemble import DEFAULT_QUORUM, Ensemble, fit_ensemble, mix
from quantum.ml.evaluation import score
from quantum.ml.labels import LabelSpec
from quantum.ml.members import MEMBER_NAMES, Member, MemberConfig, fit_member
from quantum.ml.registry import ENSEMBLE, REFERENCE, ModelRegistry, code_version, new_version
from quantum.ml.walkforward import final_split, walk_forward

Progress = Callable[[str], None]


class TrainConfig(BaseModel):
    """Attributes:
    members: which members to train (default all four).
    folds: walk-forward folds (0 skips the evaluation; the model then has no verdict).
    threshold: confidence the trading rule needs (the ai-engine's ``min_confidence``).
    quorum: members an ensemble needs to predict.
    member: member sizes.
    label: label definition.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    members: tuple[str, ...] = MEMBER_NAMES
    folds: int = Field(default=3, ge=0)
    threshold: float = 0.65
    quorum: int = DEFAULT_QUORUM
    member: MemberConfig = MemberConfig()
    label: LabelSpec = LabelSpec()


def _fit_all(data: Dataset, train: np.ndarray, config: TrainConfig,
             progress: Progress) -> tuple[dict[str, Member], dict[str, float]]:
    members: dict[str, Member] = {}
    seconds: dict[str, float] = {}
    for name in config.members:
        members[name], seconds[name] = fit_member(name, data, train, config.member)
        progress(f"  {name}: trained in {seconds[name]:.1f}s on {train.size} rows")
    return members, seconds


def _predict_all(members: dict[str, Member], data: Dataset, rows: np.ndarray,
                 ) -> dict[str, np.ndarray]:
    features = data.features[rows]
    windows = data.windows(rows)
    return {name: m.predict_proba(features, windows) for name, m in members.items()}


def score_block(data: Dataset, rows: np.ndarray, member_probabilities: dict[str, np.ndarray],
                ensemble_probabilities: np.ndarray | None, table: dict[str, list[float]],
                threshold: float) -> dict[str, Any]:
    """Scores of members, ensemble and baselines on ``rows``."""
    spec = data.spec
    common: dict[str, Any] = {"threshold": threshold, "horizon": spec.horizon,
              "round_trip_fee": spec.round_trip_fee}
    block = (data.labels[rows], data.future_return[rows], data.open_time[rows],
             data.symbol_index[rows])
    result: dict[str, Any] = {
        "members": {n: score(p, *block, **common) for n, p in member_probabilities.items()},
        "ensemble": (score(ensemble_probabilities, *block, **common)
                     if ensemble_probabilities is not None else None),
        "baselines": {},
    }
    for name, (probabilities, calls) in baselines.all_baselines(
            table, data.features[rows], threshold).items():
        result["baselines"][name] = score(probabilities, *block, calls=calls, **common)
    return result


def walk_forward_report(data: Dataset, config: TrainConfig,
                        progress: Progress) -> dict[str, Any]:
    """Per-fold scores and the verdict over all test blocks."""
    folds = walk_forward(data.open_time, folds=config.folds, horizon=config.label.horizon)
    started = time.perf_counter()
    reports = []
    for fold in folds:
        progress(f"fold {fold.number}: train {fold.train.size}, validation "
                 f"{fold.validation.size}, test {fold.test.size} rows")
        members, seconds = _fit_all(data, fold.train, config, progress)
        validation = _predict_all(members, data, fold.validation)
        weights, temperature = fit_ensemble(validation, data.labels[fold.validation])
        test = _predict_all(members, data, fold.test)
        table = baselines.tables(data.features[fold.train], data.labels[fold.train])
        scores = score_block(data, fold.test, test, mix(test, weights, temperature), table,
                             config.threshold)
        reports.append({"fold": fold.number, "train_rows": int(fold.train.size),
                        "validation_rows": int(fold.validation.size),
                        "test_rows": int(fold.test.size),
                        "test_range": [_iso(fold.bounds[1]), _iso(fold.bounds[2])],
                        "weights": weights, "temperature": temperature,
                        "train_seconds": seconds, **scores})
    return {"folds": reports, "verdict": verdict(reports),
            "seconds": time.perf_counter() - started,
            "embargo_bars": config.label.horizon}


def _iso(ms: int) -> str:
    from quantum.ml.dataset import _iso as iso

    return iso(ms)


def verdict(folds: list[dict[str, Any]], scope: str = "test fold") -> dict[str, Any]:
    """Does the ensemble beat each baseline out of sample? Per metric, over test blocks."""
    if not folds:
        return {"beats_all_baselines": None, "summary": "no walk-forward folds were run"}
    out: dict[str, Any] = {}
    metrics = (("log_loss", -1), ("brier", -1), ("balanced_accuracy", 1))
    beats_all = True
    lines = []
    for baseline in folds[0]["baselines"]:
        entry: dict[str, Any] = {}
        for metric, sign in metrics:
            ours = [f["ensemble"][metric] for f in folds]
            theirs = [f["baselines"][baseline][metric] for f in folds]
            wins = sum(sign * (a - b) > 0 for a, b in zip(ours, theirs, strict=True))
            entry[metric] = {"ensemble_mean": float(np.mean(ours)),
                             "baseline_mean": float(np.mean(theirs)),
                             "folds_won": int(wins), "folds": len(folds)}
        ours_net = [f["ensemble"]["net_of_fees"]["total_log_return"] for f in folds]
        theirs_net = [f["baselines"][baseline]["net_of_fees"]["total_log_return"] for f in folds]
        entry["net_of_fees_total"] = {"ensemble": float(np.sum(ours_net)),
                                      "baseline": float(np.sum(theirs_net))}
        better = (entry["log_loss"]["ensemble_mean"] < entry["log_loss"]["baseline_mean"]
                  and entry["log_loss"]["folds_won"] == len(folds))
        entry["beats_on_log_loss_every_fold"] = bool(better)
        beats_all &= better
        loss = entry["log_loss"]
        lines.append(f"{baseline}: log loss {loss['ensemble_mean']:.4f} vs "
                     f"{loss['baseline_mean']:.4f} (won {loss['folds_won']}/{len(folds)}), "
                     f"net {entry['net_of_fees_total']['ensemble']:+.4f} vs "
                     f"{entry['net_of_fees_total']['baseline']:+.4f}")
        out[baseline] = entry
    out["beats_all_baselines"] = bool(beats_all)
    out["summary"] = (f"the ensemble beats every baseline on log loss in every {scope}"
                      if beats_all else
                      f"the ensemble does NOT beat every baseline on log loss in every {scope}")
    out["details"] = lines
    return out


def train(data: Dataset, registry: ModelRegistry, config: TrainConfig,
          progress: Progress = lambda _: None, source: str = "") -> tuple[str, dict[str, Any]]:
    """Walk-forward report, production fit, new registry version. Returns (version, manifest)."""
    total_started = time.perf_counter()
    report = walk_forward_report(data, config, progress) if config.folds else {
        "folds": [], "verdict": verdict([]), "seconds": 0.0}
    progress("production fit")
    fit_started = time.perf_counter()
    train_rows, validation_rows = final_split(data.open_time, horizon=config.label.horizon)
    members, seconds = _fit_all(data, train_rows, config, progress)
    validation = _predict_all(members, data, validation_rows)
    weights, temperature = fit_ensemble(validation, data.labels[validation_rows])
    fit_seconds = time.perf_counter() - fit_started
    table = baselines.tables(data.features[train_rows], data.labels[train_rows])
    member_files: dict[str, list[str]] = {}

    def write(directory: Path) -> None:
        for name, member in members.items():
            member_files[name] = member.save(directory)
        (directory / ENSEMBLE).write_text(_json({
            "weights": weights, "temperature": temperature, "quorum": config.quorum,
            "label": config.label.model_dump(), "threshold": config.threshold,
            "baseline_tables": table}))
        (directory / REFERENCE).write_text(_json(
            drift.reference(data.features[train_rows], FEATURE_NAMES)))

    version = new_version()
    metadata = {
        "kind": "ensemble", "members": list(members), "member_files": member_files,
        "weights": weights, "temperature": temperature, "quorum": config.quorum,
        "label": config.label.model_dump(), "member_config": config.member.model_dump(),
        "threshold": config.threshold, "feature_schema_hash": SCHEMA_HASH,
        "feature_names": list(FEATURE_NAMES), "code_version": code_version(),
        "data": {"source": source, "symbols": list(data.symbols), "rows": len(data),
                 "range": list(data.time_range),
                 "train_range": [_iso(int(data.open_time[train_rows].min())),
                                 _iso(int(data.open_time[train_rows].max()))],
                 "validation_range": [_iso(int(data.open_time[validation_rows].min())),
                                      _iso(int(data.open_time[validation_rows].max()))]},
        "walk_forward": report,
        "timing": {"production_fit_seconds": fit_seconds, "member_seconds": seconds,
                   "walk_forward_seconds": report["seconds"],
                   "total_seconds": time.perf_counter() - total_started},
    }
    registry.save(version, write, metadata)
    return version, registry.manifest(version)


def _json(value: Any) -> str:
    import json

    return json.dumps(value, indent=1, sort_keys=True) + "\n"


def evaluate(ensemble: Ensemble, manifest: dict[str, Any], settings: dict[str, Any],
             data: Dataset, threshold: float | None = None) -> dict[str, Any]:
    """Score a stored version on any data: members, ensemble and baselines, plus honesty
    about overlap with the version's own training range."""
    rows = np.arange(len(data))
    chosen = float(settings.get("threshold", 0.65) if threshold is None else threshold)
    member_probabilities = ensemble.member_probabilities(data.features, data.windows(rows))
    combined = ensemble.combine(member_probabilities)
    train_end = manifest["data"]["validation_range"][1]


    end_ms = to_ms(datetime.fromisoformat(train_end))
    overlap = int(np.sum(data.open_time <= (end_ms or 0)))
    same_symbols = set(data.symbols) & set(manifest["data"]["symbols"])
    result: dict[str, Any] = {
        "version": ensemble.version, "rows": len(data), "symbols": list(data.symbols),
        "range": list(data.time_range), "threshold": chosen,
        "members_loaded": list(ensemble.loaded), "members_missing": ensemble.missing,
        "rows_inside_training_range": overlap if same_symbols else 0,
        "out_of_sample": overlap == 0 or not same_symbols,
    }
    if combined is None:
        result["ensemble_unavailable"] = (f"only {len(member_probabilities)} of "
                                          f"{ensemble.quorum} required members loaded")
    scores = score_block(data, rows, member_probabilities, combined,
                         settings["baseline_tables"], chosen)
    result.update(scores)
    scope = "evaluated block" + ("" if result["out_of_sample"] else
                                 " (IN SAMPLE: overlaps the training range, not evidence)")
    result["verdict"] = (verdict([{**scores}], scope) if combined is not None else
                         {"beats_all_baselines": None, "summary": "no quorum: not scored"})
    result["walk_forward_verdict"] = manifest.get("walk_forward", {}).get("verdict")
    return result
