"""Sizing policies in the model registry, and the plain torch network that serves them.

A policy version lives in its own registry (``models/rl/`` by default; the same
:class:`quantum.ml.registry.ModelRegistry` layout, pointer, promotion and rollback as the
ensemble's, with its own checks)::

    models/rl/
      registry.json            active version, history, candidate
      <version>/
        manifest.json          metadata (data range, evaluation, bounds, observation schema,
                               training settings) and a sha256 per file
        policy.pt              the actor's weights (a torch state dict)
        policy.json            the actor's shape, activation and the multiplier bounds
        ppo.zip                the whole stable-baselines3 model (to continue training)

Serving uses only ``policy.pt`` and ``policy.json``: the actor is rebuilt as a plain
``torch.nn.Sequential`` and its deterministic action is the mean of SB3's Gaussian, clipped
to [−1, 1] — exactly what ``PPO.predict(deterministic=True)`` returns, without its
per-call overhead (tested to agree). Loading refuses (:class:`PolicyRefused`, with the
reason) a version whose manifest, files, hashes or observation schema are wrong.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from quantum.features import SCHEMA_HASH
from quantum.ml.registry import ModelRefused, ModelRegistry
from quantum.rl.observation import (
    HARD_MAX_MULTIPLIER,
    HARD_MIN_MULTIPLIER,
    OBSERVATION_SCHEMA,
    OBSERVATION_SIZE,
    action_to_multiplier,
    clip_multiplier,
)

WEIGHTS = "policy.pt"
SHAPE = "policy.json"
SB3_MODEL = "ppo.zip"
REQUIRED_FILES = (WEIGHTS, SHAPE)
DEFAULT_ROOT = Path("models") / "rl"


class PolicyRefused(ModelRefused):
    """A sizing policy that must not be served; the message says why."""


@dataclass(frozen=True)
class ServedPolicy:
    """A loaded policy: the actor network and the bounds its action maps onto."""

    version: str
    network: Any  # torch.nn.Sequential
    min_multiplier: float
    max_multiplier: float

    def action(self, observation: np.ndarray) -> float:
        """The deterministic action in [−1, 1] for one observation."""
        import torch

        with torch.inference_mode():
            tensor = torch.from_numpy(np.ascontiguousarray(observation, dtype=np.float32))
            value = self.network(tensor.reshape(1, -1))
        return float(value.clamp(-1.0, 1.0).item())

    def actions(self, observations: np.ndarray) -> np.ndarray:
        """Deterministic actions for a batch (evaluation)."""
        import torch

        with torch.inference_mode():
            tensor = torch.from_numpy(np.ascontiguousarray(observations, dtype=np.float32))
            values = self.network(tensor).clamp(-1.0, 1.0)
        return values.numpy().reshape(-1)

    def multiplier(self, observation: np.ndarray) -> float:
        """The suggested size multiplier, within the policy's and the hard bounds."""
        raw = action_to_multiplier(self.action(observation), self.min_multiplier,
                                   self.max_multiplier)
        return clip_multiplier(raw, self.min_multiplier, self.max_multiplier)


def build_network(layers: list[int], activation: str) -> Any:
    """``Linear``/activation layers of the given widths; the last layer has no activation."""
    import torch

    activations = {"tanh": torch.nn.Tanh, "relu": torch.nn.ReLU}
    if activation not in activations:
        raise PolicyRefused(f"unknown activation {activation!r}")
    modules: list[Any] = []
    for index, (width_in, width_out) in enumerate(itertools.pairwise(layers)):
        modules.append(torch.nn.Linear(width_in, width_out))
        if index < len(layers) - 2:
            modules.append(activations[activation]())
    return torch.nn.Sequential(*modules)


def export_actor(model: Any) -> tuple[Any, dict[str, Any]]:
    """The deterministic actor of an SB3 PPO model as a plain network, and its shape."""
    import torch

    policy = model.policy
    linears = [m for m in policy.mlp_extractor.policy_net if isinstance(m, torch.nn.Linear)]
    linears.append(policy.action_net)
    activation_type = next((type(m) for m in policy.mlp_extractor.policy_net
                            if not isinstance(m, torch.nn.Linear)), torch.nn.Tanh)
    activation = {torch.nn.Tanh: "tanh", torch.nn.ReLU: "relu"}[activation_type]
    layers = [linears[0].in_features] + [m.out_features for m in linears]
    network = build_network(layers, activation)
    targets = [m for m in network if isinstance(m, torch.nn.Linear)]
    with torch.no_grad():
        for target, source in zip(targets, linears, strict=True):
            target.weight.copy_(source.weight)
            target.bias.copy_(source.bias)
    network.eval()
    return network, {"layers": layers, "activation": activation}


class PolicyRegistry(ModelRegistry):
    """The model registry's layout and pointer, with the checks a sizing policy needs."""

    def verify(self, version: str) -> dict[str, Any]:
        try:
            manifest = self.manifest(version)
        except ModelRefused as e:
            raise PolicyRefused(str(e)) from None
        if manifest.get("kind") != "rl-sizing-policy":
            raise PolicyRefused(f"policy {version}: not a sizing policy (kind "
                                f"{manifest.get('kind')!r})")
        if manifest.get("observation_schema") != OBSERVATION_SCHEMA:
            raise PolicyRefused(
                f"policy {version}: trained on observation schema "
                f"{manifest.get('observation_schema')} but the running code has "
                f"{OBSERVATION_SCHEMA}; retrain it")
        if manifest.get("feature_schema_hash") != SCHEMA_HASH:
            raise PolicyRefused(f"policy {version}: trained on feature schema "
                                f"{manifest.get('feature_schema_hash')}, running {SCHEMA_HASH}")
        problems = self._file_problems_of(version, manifest)
        if problems:
            name, reason = next(iter(sorted(problems.items())))
            raise PolicyRefused(f"policy {version}: {name} {reason}")
        return problems

    def _file_problems_of(self, version: str, manifest: dict[str, Any]) -> dict[str, str]:
        from quantum.ml.registry import sha256_of

        problems: dict[str, str] = {}
        files = manifest.get("files", {})
        for name in REQUIRED_FILES:
            if name not in files:
                problems[name] = "is not listed in the manifest"
        for name, expected in files.items():
            path = self.root / version / name
            if not path.is_file():
                problems[name] = "is missing"
            elif sha256_of(path) != expected:
                problems[name] = "fails its sha256 check (corrupt or altered)"
        return problems

    def load_policy(self, version: str | None = None) -> ServedPolicy:
        """The served actor of ``version`` (default: the active one)."""
        try:
            chosen = version or self.active()
        except ModelRefused as e:
            raise PolicyRefused(str(e)) from None
        if chosen is None:
            raise PolicyRefused(f"no promoted sizing policy in {self.root} (run `quantumctl rl "
                                "train --promote`, or let the rl-trainer promote one)")
        self.verify(chosen)
        import torch  # only once there is a policy to load: a bridge without one stays light

        directory = self.root / chosen
        try:
            shape = json.loads((directory / SHAPE).read_text())
            network = build_network(list(shape["layers"]), shape["activation"])
            state = torch.load(directory / WEIGHTS, map_location="cpu", weights_only=True)
            network.load_state_dict(state)
        except (OSError, ValueError, KeyError, RuntimeError, TypeError) as e:
            raise PolicyRefused(f"policy {chosen}: cannot load ({type(e).__name__}: {e})") from None
        if shape["layers"][0] != OBSERVATION_SIZE or shape["layers"][-1] != 1:
            raise PolicyRefused(f"policy {chosen}: network shape {shape['layers']} does not fit "
                                f"{OBSERVATION_SIZE} observations → 1 action")
        low = max(HARD_MIN_MULTIPLIER, float(shape.get("min_multiplier", HARD_MIN_MULTIPLIER)))
        high = min(HARD_MAX_MULTIPLIER, float(shape.get("max_multiplier", HARD_MAX_MULTIPLIER)))
        if not low <= high:
            raise PolicyRefused(f"policy {chosen}: multiplier bounds {low}–{high} are empty")
        network.eval()
        return ServedPolicy(version=chosen, network=network, min_multiplier=low,
                            max_multiplier=high)
