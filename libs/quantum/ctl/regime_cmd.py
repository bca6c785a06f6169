"""``quantumctl regime``: the meta-regime's current calls and how well its calls held.

Reads the meta-regime's state key (:mod:`quantum.regime.view`): each symbol's and the
market's trend and volatility regime with the rules' inputs, then, per scope, every
label's calls, hit rate, base rate (how often the predicted outcome happened over all
scored calls) and lift (hit − base): a label is worth acting on where the lift is positive.
"""

from __future__ import annotations

from typing import Any

from quantum.ctl.cli import Json, RedisUrl, app, connect, make_console, ms_to_iso, print_json
from quantum.ctl.errors import CtlError


def _rate(value: Any) -> str:
    return "-" if value is None else f"{value:.2f}"


@app.command("regime")
def regime(redis_url: RedisUrl = "redis://127.0.0.1:6379/0", json: Json = False) -> None:
    """Current regimes per symbol and market, and the scorecard of the calls."""
    from rich.table import Table

    from quantum.regime.scoring import Scorecard
    from quantum.registry.fleet import META_REGIME_KEY

    client = connect(redis_url)
    raw = client.get(META_REGIME_KEY)
    if raw is None:
        raise CtlError(f"no regime yet ({META_REGIME_KEY} is missing: is meta-regime running?)")
    import orjson

    document = orjson.loads(raw)
    cards = {scope: Scorecard.from_dict(card) for scope, card in document["scores"].items()}
    if json:
        print_json({**document, "summary": {s: c.summary() for s, c in cards.items()}})
        return
    console = make_console()
    current = Table(title="Regimes (the newest bar classified)")
    for column in ("scope", "bar close", "trend", "volatility", "trend score", "vol ratio"):
        current.add_column(column)
    rows = list(document["symbols"].values())
    if document.get("market"):
        rows.append(document["market"])
    for row in rows:
        current.add_row(row["scope"], ms_to_iso(row["bar_time"]), row["trend"],
                        row["volatility"], f"{row['trend_score']:+.2f}",
                        f"{row['vol_ratio']:.2f}")
    console.print(current)
    scores = Table(title="Calls scored against the next 4 hours")
    for column in ("scope", "label", "calls", "hit rate", "base rate", "lift"):
        scores.add_column(column)
    for scope, card in cards.items():
        for label, row in card.summary().items():
            if row["calls"]:
                scores.add_row(scope, label, str(row["calls"]), _rate(row["hit_rate"]),
                               _rate(row["base_rate"]), _rate(row["lift"]))
    console.print(scores)
