"""Exit profiles: how a plan's stop, take-profit ladder, trailing and time stop are set.

Levels are in R, the stop distance: a LONG entered at P with stop distance d has its stop
at P − d and a take-profit at k·R at P + k·d.

* ``DEFAULT``: stop 1R; ladder 40 % at 1R, 40 % at 1.5R, the last 20 % rides a 2×ATR
  trailing stop (armed after the first take-profit), with the stop moved to break-even
  after the first take-profit.
* ``CHALLENGE_100``: stop 1.5R at most; 30 % at 1R, 70 % at 2R; break-even after TP1;
  time stop 2 h; emergency close within 1 % of the liquidation price.
* ``HORIZON``: for a model that predicts the move over a horizon (the edge model): stop 1R,
  one take-profit of the whole position at ``take_profit_r`` R (the policy's
  ``sizing.take_profit_r``), no break-even move or trailing, and a time stop at the model's
  horizon (the intent's ``horizon_seconds``): the trade is held as long as its label was.

A trailing stop is an ATR multiple or, for a profile without ATR, a callback percentage
from the best price (Binance's ``TRAILING_STOP_MARKET`` semantics).
"""

from __future__ import annotations

from dataclasses import dataclass

from quantum.contracts.events import Direction, ExitPlan, TakeProfit


@dataclass(frozen=True)
class Profile:
    name: str
    ladder: tuple[tuple[float, float], ...]  # (R multiple, share of the original quantity)
    stop_r: float = 1.0
    trailing_atr_multiple: float | None = None
    trailing_callback_pct: float | None = None  # used when there is no ATR multiple
    time_stop_seconds: int | None = None
    liquidation_buffer_pct: float = 0.01


PROFILES: dict[str, Profile] = {
    "DEFAULT": Profile("DEFAULT", ladder=((1.0, 0.4), (1.5, 0.4)), trailing_atr_multiple=2.0),
    "CHALLENGE_100": Profile("CHALLENGE_100", ladder=((1.0, 0.3), (2.0, 0.7)), stop_r=1.5,
                             time_stop_seconds=7200),
    "HORIZON": Profile("HORIZON", ladder=((3.0, 1.0),)),
}


def exit_plan(profile_name: str, side: Direction, entry: float, stop_distance: float,
              atr: float, *, take_profit_r: float | None = None,
              horizon_seconds: int | None = None) -> ExitPlan:
    """Levels for a position entered near ``entry`` with 1R = ``stop_distance``. The
    HORIZON profile takes its take-profit multiple and time stop from the arguments."""
    profile = PROFILES[profile_name]
    if profile.name == "HORIZON":
        profile = Profile("HORIZON", ladder=((take_profit_r or profile.ladder[0][0], 1.0),),
                          time_stop_seconds=horizon_seconds)
    sign = 1.0 if side == "LONG" else -1.0
    stop = entry - sign * profile.stop_r * stop_distance
    take_profits = tuple(
        TakeProfit(price=entry + sign * r * stop_distance, fraction=share)
        for r, share in profile.ladder
    )
    return ExitPlan(
        profile=profile.name,
        stop_loss=stop,
        take_profits=take_profits,
        break_even_after_first_tp=profile.name != "HORIZON",
        trailing_atr_multiple=profile.trailing_atr_multiple,
        trailing_callback_pct=profile.trailing_callback_pct,
        time_stop_seconds=profile.time_stop_seconds,
        liquidation_buffer_pct=profile.liquidation_buffer_pct,
        atr=atr,
    )
