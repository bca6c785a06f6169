"""The four ensemble members, each mapping its model's output to P(SHORT, FLAT, LONG).

* **xgboost** and **lightgbm** classify the 49 features of a bar into the three labels
  directly (multi-class soft-max).
* **nhits** and **patchtst** (neuralforecast) forecast the next ``horizon`` one-bar log
  returns from the last 64. Their summed forecast ``mu`` is the expected 12-bar return;
  with ``s``, the standard deviation of the forecast error on training windows, a normal
  distribution turns it into direction probabilities:
  ``P(LONG) = 1 - Phi((dead_zone - mu) / s)``, ``P(SHORT) = Phi((-dead_zone - mu) / s)``.

Serving never imports neuralforecast (it loads ray, 10-18 s and about 0.5 GB): the trained
network's forward pass is traced with TorchScript into files that need only torch. A trace
fixes the batch size (the networks read ``len()`` of their input), so one trace is kept per
size in :data:`TRACE_BATCHES` and a batch is cut into those sizes (padded at the end).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from pydantic import BaseModel, ConfigDict

from quantum.ml.dataset import WINDOW, Dataset
from quantum.ml.labels import FLAT, LONG, SHORT, LabelSpec

MEMBER_NAMES = ("xgboost", "lightgbm", "nhits", "patchtst")
TRACE_BATCHES = (1, 32)
THREADS = 2  # the production machine has 2 cores


class MemberConfig(BaseModel):
    """Sizes of every member, chosen for 2 CPU cores (see docs/MODELS.md).

    Attributes:
        tree_rounds: boosting rounds of xgboost and lightgbm.
        tree_depth: xgboost max depth; lightgbm uses ``2 ** depth - 1`` leaves.
        learning_rate: boosting learning rate.
        neural_steps: optimiser steps of each network.
        neural_series_bars: most recent training bars per symbol the networks see.
        nhits_units: width of each N-HiTS MLP layer (3 stacks of 2 layers).
        patchtst_hidden: PatchTST model width (4 heads, 2 encoder layers, patches of 16).
        seed: every random generator.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    tree_rounds: int = 300
    tree_depth: int = 5
    learning_rate: float = 0.05
    neural_steps: int = 300
    neural_series_bars: int = 30_000
    nhits_units: int = 128
    patchtst_hidden: int = 64
    seed: int = 7


class Member(Protocol):
    """What the ensemble needs from a member."""

    name: str

    def predict_proba(self, features: np.ndarray, windows: np.ndarray) -> np.ndarray:
        """(rows x 3) probabilities of SHORT, FLAT, LONG."""

    def save(self, directory: Path) -> list[str]:
        """Write the artifacts; return their file names."""


def _normal_cdf(x: np.ndarray) -> np.ndarray:
    from scipy.special import ndtr

    return np.asarray(ndtr(x))


def direction_probabilities(mu: np.ndarray, error_std: float, dead_zone: float) -> np.ndarray:
    """P(SHORT, FLAT, LONG) of a normal forecast ``N(mu, error_std²)`` of the 12-bar return."""
    p_long = 1.0 - _normal_cdf((dead_zone - mu) / error_std)
    p_short = _normal_cdf((-dead_zone - mu) / error_std)
    p_flat = np.clip(1.0 - p_long - p_short, 0.0, 1.0)
    out = np.stack([p_short, p_flat, p_long], axis=1)
    out = np.clip(out, 1e-6, 1.0)
    return out / out.sum(axis=1, keepdims=True)


# --- tree members -------------------------------------------------------------------------


@dataclass
class XGBoostMember:
    booster: Any
    name: str = "xgboost"
    FILE = "xgboost.ubj"

    @classmethod
    def fit(cls, data: Dataset, config: MemberConfig) -> XGBoostMember:
        import xgboost as xgb

        train = xgb.DMatrix(data.features, label=data.labels, nthread=THREADS)
        params = {"objective": "multi:softprob", "num_class": 3, "max_depth": config.tree_depth,
                  "eta": config.learning_rate, "subsample": 0.8, "colsample_bytree": 0.8,
                  "min_child_weight": 20, "tree_method": "hist", "nthread": THREADS,
                  "seed": config.seed, "eval_metric": "mlogloss"}
        return cls(xgb.train(params, train, num_boost_round=config.tree_rounds))

    def predict_proba(self, features: np.ndarray, windows: np.ndarray) -> np.ndarray:
        return np.asarray(self.booster.inplace_predict(features), dtype=np.float64)

    def save(self, directory: Path) -> list[str]:
        self.booster.save_model(directory / self.FILE)
        return [self.FILE]

    @classmethod
    def load(cls, directory: Path, meta: dict[str, Any]) -> XGBoostMember:
        import xgboost as xgb

        booster = xgb.Booster(params={"nthread": 1})
        booster.load_model(directory / cls.FILE)
        return cls(booster)


@dataclass
class LightGBMMember:
    booster: Any
    name: str = "lightgbm"
    FILE = "lightgbm.txt"

    @classmethod
    def fit(cls, data: Dataset, config: MemberConfig) -> LightGBMMember:
        import lightgbm as lgb

        params = {"objective": "multiclass", "num_class": 3, "learning_rate": config.learning_rate,
                  "num_leaves": 2 ** config.tree_depth - 1, "min_data_in_leaf": 50,
                  "feature_fraction": 0.8, "bagging_fraction": 0.8, "bagging_freq": 1,
                  "num_threads": THREADS, "seed": config.seed, "verbose": -1,
                  "deterministic": True}
        train = lgb.Dataset(data.features, label=data.labels)
        return cls(lgb.train(params, train, num_boost_round=config.tree_rounds))

    def predict_proba(self, features: np.ndarray, windows: np.ndarray) -> np.ndarray:
        return np.asarray(self.booster.predict(features, num_threads=1), dtype=np.float64)

    def save(self, directory: Path) -> list[str]:
        self.booster.save_model(str(directory / self.FILE))
        return [self.FILE]

    @classmethod
    def load(cls, directory: Path, meta: dict[str, Any]) -> LightGBMMember:
        import lightgbm as lgb

        return cls(lgb.Booster(model_file=str(directory / cls.FILE)))


# --- forecasting members ------------------------------------------------------------------


class ForecastMeta(BaseModel):
    """What a forecasting member needs besides its network: scales and the error model."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    return_scale: float  # one-bar log returns are divided by this before the network
    error_std: float  # std of (realised - forecast) 12-bar log return on training windows
    horizon: int
    dead_zone: float
    window: int = WINDOW


@dataclass
class ForecastMember:
    """N-HiTS or PatchTST served through traced forward passes (torch only)."""

    name: str
    traces: dict[int, Any]
    meta: ForecastMeta
    trained: Any = field(default=None, repr=False)  # the NeuralForecast object, training only

    def forecast(self, windows: np.ndarray) -> np.ndarray:
        """The network's ``horizon`` one-bar log return forecasts per window."""
        import torch

        scaled = np.ascontiguousarray(windows / self.meta.return_scale, dtype=np.float32)
        rows = scaled.shape[0]
        out = np.empty((rows, self.meta.horizon), dtype=np.float64)
        big = max(TRACE_BATCHES)
        start = 0
        with torch.inference_mode():
            while start < rows:
                size = min(big, rows - start)
                batch = next(b for b in TRACE_BATCHES if b >= size)
                chunk = scaled[start:start + size]
                if batch > size:
                    chunk = np.concatenate([chunk, np.zeros((batch - size, chunk.shape[1]),
                                                            dtype=np.float32)])
                result = self.traces[batch](torch.from_numpy(chunk)).numpy()
                out[start:start + size] = result.reshape(batch, -1)[:size, :self.meta.horizon]
                start += size
        return out * self.meta.return_scale

    def predict_proba(self, features: np.ndarray, windows: np.ndarray) -> np.ndarray:
        mu = self.forecast(windows).sum(axis=1)
        return direction_probabilities(mu, self.meta.error_std, self.meta.dead_zone)

    def save(self, directory: Path) -> list[str]:
        import torch

        files = []
        for batch, module in sorted(self.traces.items()):
            name = f"{self.name}-b{batch}.pt"
            torch.jit.save(module, str(directory / name))
            files.append(name)
        meta_name = f"{self.name}.json"
        (directory / meta_name).write_text(self.meta.model_dump_json(indent=1))
        return [*files, meta_name]

    @classmethod
    def load(cls, directory: Path, name: str) -> ForecastMember:
        import torch

        torch.set_num_threads(1)
        meta = ForecastMeta.model_validate_json((directory / f"{name}.json").read_text())
        traces = {b: torch.jit.load(str(directory / f"{name}-b{b}.pt")) for b in TRACE_BATCHES}
        for module in traces.values():
            module.eval()
        return cls(name, traces, meta)


def _series_frame(data: Dataset, train_end_ms: int, scale: float, bars: int) -> Any:
    import pandas as pd

    frames = []
    for symbol in data.symbols:
        times = data.return_times[symbol]
        keep = np.flatnonzero(times < train_end_ms)[1:]  # the first return is a 0 placeholder
        keep = keep[-bars:]
        frames.append(pd.DataFrame({"unique_id": symbol, "ds": keep.astype(np.int64),
                                    "y": data.returns[symbol][keep] / scale}))
    return pd.concat(frames, ignore_index=True)


def _network(name: str, spec: LabelSpec, config: MemberConfig) -> Any:
    """The neuralforecast model with this project's CPU sizes."""
    common = {"h": spec.horizon, "input_size": WINDOW, "max_steps": config.neural_steps,
              "scaler_type": "identity", "random_seed": config.seed, "batch_size": 16,
              "windows_batch_size": 256, "learning_rate": 1e-3, "val_check_steps": 10_000,
              "enable_progress_bar": False, "enable_model_summary": False, "logger": False,
              "enable_checkpointing": False, "accelerator": "cpu", "devices": 1}
    if name == "nhits":
        from neuralforecast.models import NHITS

        units = config.nhits_units
        return NHITS(mlp_units=[[units, units]] * 3, **common)
    from neuralforecast.models import PatchTST

    return PatchTST(patch_len=16, stride=8, hidden_size=config.patchtst_hidden, n_heads=4,
                    encoder_layers=2, linear_hidden_size=config.patchtst_hidden * 2,
                    **common)


class _Forward:
    """Builds the traced module: raw forward of the trained network on scaled windows."""

    @staticmethod
    def trace(network: Any, batch: int) -> Any:
        import torch

        class Forward(torch.nn.Module):
            def __init__(self, inner: Any) -> None:
                super().__init__()
                self.inner = inner

            def forward(self, windows: torch.Tensor) -> torch.Tensor:
                series = windows.unsqueeze(-1)
                output = self.inner({"insample_y": series, "insample_mask": torch.ones_like(series),
                                     "futr_exog": None, "hist_exog": None, "stat_exog": None})
                return self.inner.loss.domain_map(output)

        wrapper = Forward(network).eval()
        example = torch.zeros((batch, WINDOW), dtype=torch.float32)
        with torch.inference_mode(False), torch.no_grad():
            return torch.jit.trace(wrapper, example, check_trace=False)


def fit_forecaster(name: str, data: Dataset, train_rows: np.ndarray,
                   config: MemberConfig) -> ForecastMember:
    """Train ``name`` (nhits | patchtst) on the returns before the end of ``train_rows``."""
    import logging

    import torch

    logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    from neuralforecast import NeuralForecast

    torch.set_num_threads(THREADS)
    spec = data.spec
    # a training row's label ends `horizon` bars after it; the series may reach that far
    train_end = int(data.open_time[train_rows].max()) + (spec.horizon + 1) * 300_000
    all_returns = np.concatenate([data.returns[s][data.return_times[s] < train_end]
                                  for s in data.symbols])
    scale = float(np.std(all_returns)) or 1e-3
    frame = _series_frame(data, train_end, scale, config.neural_series_bars)
    forecaster = NeuralForecast(models=[_network(name, spec, config)], freq=1)
    forecaster.fit(frame)
    network = forecaster.models[0].eval()
    traces = {b: _Forward.trace(network, b) for b in TRACE_BATCHES}
    member = ForecastMember(name, traces, ForecastMeta(return_scale=scale, error_std=1.0,
                                                       horizon=spec.horizon,
                                                       dead_zone=spec.dead_zone),
                            trained=forecaster)
    sample = train_rows[-min(train_rows.size, 5000):]
    errors = data.future_return[sample] - member.forecast(data.windows(sample)).sum(axis=1)
    meta = member.meta.model_copy(update={"error_std": float(np.std(errors)) or 1e-3})
    return ForecastMember(name, traces, meta, trained=forecaster)


def fit_member(name: str, data: Dataset, train_rows: np.ndarray,
               config: MemberConfig) -> tuple[Member, float]:
    """Train one member on ``train_rows``; returns it and its training seconds."""
    started = time.perf_counter()
    member: Member
    if name == "xgboost":
        member = XGBoostMember.fit(data.subset(train_rows), config)
    elif name == "lightgbm":
        member = LightGBMMember.fit(data.subset(train_rows), config)
    elif name in ("nhits", "patchtst"):
        member = fit_forecaster(name, data, train_rows, config)
    else:
        raise ValueError(f"unknown member {name!r}; members are {', '.join(MEMBER_NAMES)}")
    return member, time.perf_counter() - started


def load_member(name: str, directory: Path, meta: dict[str, Any]) -> Member:
    """Load a member's artifacts (already hash-checked by the registry)."""
    if name == "xgboost":
        return XGBoostMember.load(directory, meta)
    if name == "lightgbm":
        return LightGBMMember.load(directory, meta)
    if name in ("nhits", "patchtst"):
        return ForecastMember.load(directory, name)
    raise ValueError(f"unknown member {name!r}")


def class_probabilities_from_labels(labels: np.ndarray) -> np.ndarray:
    """Class frequencies (SHORT, FLAT, LONG), with one pseudo-count each."""
    counts = np.array([np.sum(labels == k) for k in (SHORT, FLAT, LONG)], dtype=np.float64) + 1
    return counts / counts.sum()
