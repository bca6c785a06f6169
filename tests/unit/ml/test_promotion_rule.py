"""The promotion rule on two backtests' figures: net return must beat the active model's,
drawdown must stay below the policy's brake; the reason says which held."""

from __future__ import annotations

from quantum.ml.shadow import backtest_figures, backtest_verdict


def figures(net: float, drawdown: float) -> dict[str, float]:
    return {"net_return": net, "max_drawdown": drawdown, "trades": 10.0, "fees": 1.0,
            "funding": 0.0, "sharpe": 0.0}


def test_a_better_net_return_within_the_brake_is_promoted() -> None:
    promote, reason = backtest_verdict(figures(0.02, 0.05), figures(0.01, 0.02), brake=0.2)
    assert promote and "beats" in reason and "within the brake 20%" in reason


def test_equal_or_worse_net_return_is_refused_and_the_margin_counts() -> None:
    assert not backtest_verdict(figures(0.01, 0.01), figures(0.01, 0.01), brake=0.2)[0]
    assert not backtest_verdict(figures(-0.01, 0.01), figures(0.0, 0.0), brake=0.2)[0]
    promote, reason = backtest_verdict(figures(0.015, 0.01), figures(0.01, 0.01), brake=0.2,
                                       margin=0.01)
    assert not promote and "by 1.000%" in reason


def test_a_drawdown_at_the_brake_is_refused_whatever_it_earned() -> None:
    promote, reason = backtest_verdict(figures(0.5, 0.2), figures(0.0, 0.0), brake=0.2)
    assert not promote and "reaches the brake" in reason


def test_figures_come_from_the_backtest_report() -> None:
    report = {"initial_balance": 10_000.0, "net_pnl": -250.0, "max_drawdown": 0.04,
              "trades": 7, "fees": 30.0, "funding": -1.5, "sharpe": -2.0}
    assert backtest_figures(report) == {"net_return": -0.025, "max_drawdown": 0.04,
                                        "trades": 7.0, "fees": 30.0, "funding": -1.5,
                                        "sharpe": -2.0}
