"""Sizing with the meta-regime on a real Redis: the meta-regime's own calls of the crash of
2025-10-10 (data/sample, BTC/ETH/SOL to 21:30 UTC: BTC in high volatility) scale a BTC plan
by ``regime.high_vol_size_factor``; the default (1.0) and a missing regime change nothing."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

from quantum.bus.envelope import new_envelope
from quantum.contracts.events import Plan, PortfolioState, TradeIntent
from quantum.registry.fleet import META_REGIME_KEY, PORTFOLIO_KEY
from quantum.risk import policy

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "meta_regime"))
from test_meta_regime import bars


def sized(bridge: Any, intent: TradeIntent) -> Plan:
    out = bridge.deliver(new_envelope(intent, ts=intent.bar_time, source="ai-engine",
                                      key=intent.intent_id))
    return next(e.payload for _, e in out.events if isinstance(e.payload, Plan))


def test_high_volatility_scales_the_size(r: redis.Redis, on_bus: Callable[..., Any],
                                         sample_dir: Path) -> None:
    klines = bars(sample_dir, "2025-10-09T00:00:00", "2025-10-10T21:30:00")
    regimes = on_bus("meta-regime", clock="event")
    regimes.commit(regimes.deliver(*klines))
    last = next(e.payload for e in reversed(klines) if e.payload.symbol == "BTCUSDT")
    r.set(PORTFOLIO_KEY, PortfolioState(
        ts=last.close_time, balance=10_000.0, equity=10_000.0, unrealised_pnl=0.0,
        realised_pnl=0.0, fees_paid=0.0, funding_paid=0.0, gross_exposure=0.0,
        net_exposure=0.0, positions=(), pending_orders=0).model_dump_json())
    intent = TradeIntent(intent_id="i-crash", symbol="BTCUSDT", side="SHORT", confidence=0.7,
                         price=last.close, atr=last.close * 0.01, bar_time=last.close_time,
                         model_version="baseline")
    policy.write(r, {"sizing.rl_sizing": "off"}, by="test", reason="fixed sizing")
    plain = sized(on_bus("intent-bridge", clock="event"), intent)
    policy.write(r, {"regime.high_vol_size_factor": 0.5}, by="test", reason="half in high vol")
    halved = sized(on_bus("intent-bridge", clock="event"), intent)
    assert abs(halved.notional - plain.notional * 0.5) < 1e-6
    assert abs(halved.size_multiplier - plain.size_multiplier * 0.5) < 1e-9
    r.delete(META_REGIME_KEY)
    unknown = sized(on_bus("intent-bridge", clock="event"), intent)
    assert unknown.notional == plain.notional  # no regime: no factor (the governor decides)
