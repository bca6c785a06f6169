"""The texts a person receives: alerts (from Alertmanager's webhook), the emergency stop
trip, the daily profit summary. Plain text, short lines, the action first."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import Engine

from quantum.journal import books

ESS_ALERT = "QuantumEssTripped"
MARKS = {"critical": "[CRITICAL]", "warning": "[WARNING]", "info": "[INFO]"}


def _iso(ms_or_text: Any) -> str:
    if isinstance(ms_or_text, int | float):
        return datetime.fromtimestamp(ms_or_text / 1000, UTC).strftime("%Y-%m-%d %H:%M UTC")
    text = str(ms_or_text or "")
    return text[:16].replace("T", " ") + " UTC" if text else "?"


def alert_text(alert: dict[str, Any]) -> str:
    labels = alert.get("labels") or {}
    annotations = alert.get("annotations") or {}
    status = str(alert.get("status", "firing")).upper()
    severity = str(labels.get("severity", "info"))
    head = f"{MARKS.get(severity, '[' + severity.upper() + ']')} {status} {labels.get('alertname')}"
    lines = [head, str(annotations.get("summary") or "")]
    where = {k: v for k, v in labels.items() if k not in ("alertname", "severity", "job",
                                                          "instance")}
    if where:
        lines.append(", ".join(f"{k}={v}" for k, v in sorted(where.items())))
    lines.append(f"since {_iso(alert.get('startsAt'))}")
    if annotations.get("runbook"):
        lines.append(f"runbook: {annotations['runbook']}")
    return "\n".join(line for line in lines if line)


def ess_text(ess: dict[str, Any]) -> str:
    """The emergency stop as :func:`quantum.risk.ess.status` reads it."""
    if not ess.get("tripped"):
        return "Emergency stop CLEAR: entries allowed again."
    lines = ["EMERGENCY STOP TRIPPED: no new entries; exits continue.",
             f"reason: {ess.get('reason') or 'unknown'}"]
    if ess.get("evaluator"):
        lines.append(f"evaluator: {ess['evaluator']}")
    if ess.get("by"):
        lines.append(f"by: {ess['by']}")
    if ess.get("tripped_at"):
        lines.append(f"at: {_iso(ess['tripped_at'])}")
    lines.append("reset after review: quantumctl ess reset --reason '...'")
    return "\n".join(lines)


def alertmanager_text(document: dict[str, Any], ess: dict[str, Any] | None = None) -> str:
    """One message for one Alertmanager notification (a group of alerts); an ESS trip
    among them is told first, with the reason from the ESS state itself."""
    alerts = [a for a in document.get("alerts") or [] if isinstance(a, dict)]
    parts = []
    tripped = any((a.get("labels") or {}).get("alertname") == ESS_ALERT
                  and a.get("status") == "firing" for a in alerts)
    if tripped and ess is not None:
        parts.append(ess_text(ess))
    parts.extend(alert_text(a) for a in alerts)
    return "\n\n".join(parts) if parts else "(an empty notification)"


def daily_summary(engine: Engine, day: date) -> str:
    """Trades closed on ``day`` (UTC), per symbol, and the balance now."""
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    since = int(start.timestamp() * 1000)
    until = int((start + timedelta(days=1)).timestamp() * 1000)
    trades = books.closed_trades(engine, since_ms=since, until_ms=until)
    total = books.summarise(trades)
    lines = [f"Daily summary {day.isoformat()} (UTC)",
             f"trades closed: {total['trades']} (wins {total['wins']}, "
             f"win rate {total['win_rate']:.0%})",
             f"net PnL: {total['net_pnl']:+,.2f} USDT (fees {total['fees']:,.2f}, "
             f"funding {total['funding']:,.2f})"]
    groups: dict[str, list[dict[str, Any]]] = {}
    for trade in trades:
        groups.setdefault(trade["symbol"], []).append(trade)
    for symbol, members in sorted(groups.items(), key=lambda kv: -books.summarise(kv[1])[
            "net_pnl"]):
        summary = books.summarise(members)
        lines.append(f"  {symbol}: {summary['trades']} trades, {summary['net_pnl']:+,.2f}")
    snapshot = books.balance(engine)
    if snapshot is None:
        lines.append("balance: no portfolio snapshot in the journal")
    else:
        lines.append(f"equity {snapshot['equity']:,.2f}, balance {snapshot['balance']:,.2f}, "
                     f"drawdown {snapshot['drawdown']:.2%}, open positions "
                     f"{snapshot['open_positions']}")
    return "\n".join(lines)
