"""The RL sizer in the fleet: the intent-bridge's agent and rl-feedback, on a real Redis.

Shadow mode must never change a size (property test over intents, equity and policies);
active mode is clipped to the bounds; a missing or corrupt policy leaves sizing at 1.0× with
the reason in the bridge's state and metrics; a closed trade becomes an ``rl_rewards`` event
with the observation recorded at entry and the counterfactual PnL.
"""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytest.importorskip("stable_baselines3")

from quantum.app import subscription
from quantum.bus.envelope import encode, new_envelope
from quantum.bus.redisports import redis_ports
from quantum.bus.runner import Outbox, Runner, ServiceBase
from quantum.contracts.events import EVENT_TYPES, FeatureVector, TradeClosed, TradeIntent
from quantum.contracts.streams import FEATURES, RL_REWARDS
from quantum.features import SCHEMA_HASH, compute_batch
from quantum.registry.fleet import PORTFOLIO_KEY, service
from quantum.replay.data import load_symbol
from quantum.risk import policy as policy_store
from quantum.rl.agent import RECORD_PREFIX, STATUS_KEY, SizingAgent
from quantum.rl.environment import EnvironmentConfig
from quantum.rl.opportunities import from_data
from quantum.rl.policy import WEIGHTS, PolicyRegistry
from quantum.rl.training import TrainingConfig, train_and_register
from services.intent_bridge.service import IntentBridge
from services.rl_feedback.service import RlFeedback

SAMPLE = Path(__file__).resolve().parents[3] / "data" / "sample"
SYMBOL = "ETHUSDT"
START = int(datetime(2025, 9, 1, tzinfo=UTC).timestamp() * 1000)
END = int(datetime(2025, 9, 8, tzinfo=UTC).timestamp() * 1000)
BAR_MS = 300_000

def ports(client: redis.Redis) -> Any:
    """A service's Redis ports on the wall clock, as its factory is handed them."""
    return redis_ports(client, EVENT_TYPES, event_clock=False)



@pytest.fixture(scope="module")
def policy_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A promoted policy, trained briefly on a week of real ETH bars."""
    root = tmp_path_factory.mktemp("models") / "rl"
    registry = PolicyRegistry(root)
    table = from_data(SAMPLE, (SYMBOL,), start_ms=START, end_ms=END)
    config = TrainingConfig(timesteps=256, n_steps=128, batch_size=64, epochs=2, folds=0,
                            environment=EnvironmentConfig(episode_length=64))
    version, _ = train_and_register(table, registry, config, sources={"test": True},
                                    version="v1")
    registry.promote(version)
    return root


@pytest.fixture(scope="module")
def bar() -> dict[str, Any]:
    """A real bar's features (the newest of the week)."""
    data = load_symbol(SAMPLE, SYMBOL, start_ms=START, end_ms=END)
    import pandas as pd

    frame = pd.DataFrame(data.ohlcv, columns=["open", "high", "low", "close", "volume"],
                         index=data.open_time)
    values = compute_batch(frame).iloc[-1].to_dict()
    open_time = int(data.open_time[-1])
    return {"values": {k: float(v) for k, v in values.items()}, "open_time": open_time,
            "close_time": open_time + BAR_MS, "close": float(data.ohlcv[-1, 3])}


def prepare(r: redis.Redis, bar: dict[str, Any], mode: str, equity: float = 10_000.0) -> None:
    r.flushdb()
    r.set(PORTFOLIO_KEY, orjson.dumps({"equity": equity, "positions": [],
                                       "gross_exposure": 0.0}))
    vector = FeatureVector(symbol=SYMBOL, interval="5m", open_time=bar["open_time"],
                           close_time=bar["close_time"], close=bar["close"],
                           schema_hash=SCHEMA_HASH, values=bar["values"])
    r.xadd(FEATURES.key, encode(new_envelope(vector, ts=bar["close_time"],
                                             source="feature-publisher", key="t")))
    if mode != "shadow":
        policy_store.write(r, {"sizing.rl_sizing": mode}, by="test", reason="rl test")


def intent_event(bar: dict[str, Any], side: str = "LONG", confidence: float = 0.8,
                 atr_fraction: float = 0.004) -> Any:
    intent = TradeIntent(intent_id=f"i-{side}-{confidence}-{atr_fraction}", symbol=SYMBOL,
                         side=side, confidence=confidence, price=bar["close"],
                         atr=bar["close"] * atr_fraction, bar_time=bar["close_time"],
                         model_version="baseline")
    return new_envelope(intent, ts=bar["close_time"], source="ai-engine", key=intent.intent_id)


def size_with(r: redis.Redis, bridge: IntentBridge, event: Any) -> tuple[Any, Outbox]:
    out = Outbox(frozenset(s.name for s in service("intent-bridge").produces))
    bridge.handle(event, out)
    assert len(out.events) == 1
    return out.events[0][1].payload, out


def commit(r: redis.Redis, out: Outbox) -> None:
    """The intent-bridge's outbox committed by the runner's own commit (no acks)."""
    bridge = Runner(r, ServiceBase(), subscription(service("intent-bridge")), EVENT_TYPES)
    bridge.commit(out, {}, [])


@settings(max_examples=15, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(side=st.sampled_from(["LONG", "SHORT"]),
       confidence=st.floats(0.65, 1.0),
       atr_fraction=st.floats(0.0005, 0.05),
       equity=st.floats(100.0, 1_000_000.0),
       weight_scale=st.floats(-50.0, 50.0))
def test_shadow_mode_never_changes_a_size(r: redis.Redis, policy_dir: Path, bar: dict[str, Any],
                                          side: str, confidence: float, atr_fraction: float,
                                          equity: float, weight_scale: float) -> None:
    prepare(r, bar, "off", equity)
    event = intent_event(bar, side, confidence, atr_fraction)
    plain, _ = size_with(r, IntentBridge(ports(r)), event)
    prepare(r, bar, "shadow", equity)
    agent = SizingAgent(ports(r), policy_dir)
    with __import__("torch").no_grad():  # any policy at all, pushed to extremes
        for parameter in agent.policy.network.parameters():
            parameter.mul_(weight_scale)
    shadowed, out = size_with(r, IntentBridge(ports(r), sizing_agent=agent), event)
    assert shadowed == plain
    commit(r, out)
    entry = orjson.loads(r.get(RECORD_PREFIX + shadowed.plan_id))
    assert entry["applied_multiplier"] == 1.0 and entry["mode"] == "shadow"
    assert 0.5 <= entry["suggested_multiplier"] <= 1.5
    assert len(entry["observation"]) == 13


def test_active_mode_applies_the_suggestion_within_bounds(
        r: redis.Redis, policy_dir: Path, bar: dict[str, Any]) -> None:
    prepare(r, bar, "off", 2_000.0)
    event = intent_event(bar, atr_fraction=0.02)  # small positions: no notional clipping
    plain, _ = size_with(r, IntentBridge(ports(r)), event)
    prepare(r, bar, "active", 2_000.0)
    agent = SizingAgent(ports(r), policy_dir)
    sized, out = size_with(r, IntentBridge(ports(r), sizing_agent=agent), event)
    commit(r, out)
    entry = orjson.loads(r.get(RECORD_PREFIX + sized.plan_id))
    suggested = entry["suggested_multiplier"]
    assert 0.5 <= suggested <= 1.5 and entry["applied_multiplier"] == suggested
    assert sized.quantity == pytest.approx(plain.quantity * suggested, rel=1e-9)


@pytest.mark.parametrize("damage", ["missing", "corrupt"])
def test_missing_or_corrupt_policy_sizes_at_one_and_says_why(
        r: redis.Redis, policy_dir: Path, bar: dict[str, Any], tmp_path: Path,
        damage: str) -> None:
    from quantum.rl.agent import POLICY_LOADED

    root = tmp_path / "rl"
    if damage == "corrupt":
        shutil.copytree(policy_dir, root)
        (root / "v1" / WEIGHTS).write_bytes(b"\x00garbage")
    prepare(r, bar, "off")
    event = intent_event(bar, atr_fraction=0.02)
    plain, _ = size_with(r, IntentBridge(ports(r)), event)
    prepare(r, bar, "active")
    agent = SizingAgent(ports(r), root)
    sized, out = size_with(r, IntentBridge(ports(r), sizing_agent=agent), event)
    commit(r, out)
    assert sized == plain  # 1.0x
    status = orjson.loads(r.get(STATUS_KEY))
    assert status["policy_loaded"] is False
    assert ("no promoted sizing policy" if damage == "missing" else "sha256") in status["reason"]
    assert POLICY_LOADED._value.get() == 0
    entry = orjson.loads(r.get(RECORD_PREFIX + sized.plan_id))
    assert entry["applied_multiplier"] == 1.0 and entry["suggested_multiplier"] is None
    assert entry["observation"] is not None  # still learnable from, once the trade closes


def test_closed_trade_becomes_a_reward_with_the_entry_observation(
        r: redis.Redis, policy_dir: Path, bar: dict[str, Any]) -> None:
    prepare(r, bar, "shadow")
    agent = SizingAgent(ports(r), policy_dir)
    sized, out = size_with(r, IntentBridge(ports(r), sizing_agent=agent), intent_event(bar))
    commit(r, out)
    entry = orjson.loads(r.get(RECORD_PREFIX + sized.plan_id))
    closed = TradeClosed(
        trade_id=sized.plan_id, symbol=SYMBOL, side="LONG", quantity=sized.quantity,
        entry_price=sized.reference_price, exit_price=sized.reference_price * 1.01,
        entry_ts=bar["close_time"] + 1, exit_ts=bar["close_time"] + 3_600_000,
        gross_pnl=sized.notional * 0.01, fees=1.0, funding=0.0,
        net_pnl=sized.notional * 0.01 - 1.0, r_multiple=1.0, exit_reason="take_profit_1",
        holding_seconds=3600.0, leverage=5)
    feedback = RlFeedback(ports(r))
    feedback.restore()
    out = Outbox(frozenset({RL_REWARDS.name}))
    feedback.handle(new_envelope(closed, ts=closed.exit_ts, source="execution", key="c"), out)
    reward = out.events[0][1].payload
    assert reward.observation == tuple(entry["observation"])
    assert reward.net_pnl == closed.net_pnl and reward.mode == "shadow"
    ratio = entry["quantity_suggested"] / entry["quantity_used"]
    assert reward.counterfactual_pnl == pytest.approx(closed.net_pnl * ratio)
    assert np.isfinite(reward.reward) and reward.reward > 0


def test_bridge_reports_a_missing_policy_before_any_plan(r: redis.Redis, tmp_path: Path) -> None:
    r.flushdb()
    bridge = IntentBridge(ports(r), sizing_agent=SizingAgent(ports(r), tmp_path / "nothing"))
    out = Outbox(frozenset(s.name for s in service("intent-bridge").produces))
    bridge.on_idle(out, 1_000.0)
    commit(r, out)
    status = orjson.loads(r.get(STATUS_KEY))
    assert status["policy_loaded"] is False and "no promoted sizing policy" in status["reason"]
    assert status["sizing_effect"] == "none: sizing at 1.0x"
    again = Outbox(frozenset(s.name for s in service("intent-bridge").produces))
    bridge.on_idle(again, 1_001.0)
    assert again.empty  # written once per change, not every turn
