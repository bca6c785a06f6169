"""The notifier against a local stand-in that speaks Telegram's Bot API over real HTTP, and a
plain chat webhook (the same stand-in's server answering a JSON ``text`` body): delivery,
refusals without secrets in the message, and the daily summary over a real journal."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from quantum.journal.database import make_engine, upgrade
from quantum.journal.synthetic import round_trips
from quantum.journal.writer import Journal
from quantum.notify import messages
from quantum.notify.channels import DeliveryError, Notifier, Telegram
from quantum.standin.telegram import TelegramStandIn

TOKEN = "987654:secret-bot-token"
CHAT = "4242"


@pytest.fixture
def telegram() -> TelegramStandIn:
    with TelegramStandIn(TOKEN, CHAT) as standin:
        yield standin  # type: ignore[misc]


def test_telegram_delivers_plain_text(telegram: TelegramStandIn) -> None:
    notifier = Notifier.from_settings(telegram_token=TOKEN, telegram_chat_id=CHAT,
                                      telegram_api=telegram.url)
    assert notifier.send("a <b>plain</b> message & more") == 1
    assert telegram.texts() == ["a <b>plain</b> message & more"]
    notifier.send("x" * 5000)  # cut to Telegram's limit instead of refused
    assert len(telegram.texts()[-1]) == 4096


def test_refusals_name_the_channel_never_the_token(telegram: TelegramStandIn) -> None:
    wrong = Telegram("000:wrong-token", CHAT, telegram.url)
    with pytest.raises(DeliveryError) as refused:
        wrong.send("hello")
    assert str(refused.value) == "telegram answered 401: Unauthorized"
    assert "wrong-token" not in repr(wrong) and TOKEN not in repr(
        Telegram(TOKEN, CHAT, telegram.url))
    telegram.fail_next(1)
    with pytest.raises(DeliveryError, match="telegram answered 500"):
        Telegram(TOKEN, CHAT, telegram.url).send("hello")
    other_chat = Telegram(TOKEN, "1", telegram.url)
    with pytest.raises(DeliveryError, match="chat not found"):
        other_chat.send("hello")
    unreachable = Telegram(TOKEN, CHAT, "http://127.0.0.1:9")
    with pytest.raises(DeliveryError) as down:
        unreachable.send("hello")
    assert TOKEN not in str(down.value) and str(down.value).startswith("telegram: ")


def test_an_alertmanager_notification_reads_as_one_message() -> None:
    document = {"version": "4", "status": "firing", "alerts": [
        {"status": "firing", "labels": {"alertname": "QuantumEssTripped",
                                        "severity": "critical"},
         "annotations": {"summary": "The emergency stop is tripped; no new risk is taken",
                         "runbook": "docs/RUNBOOK.md#ess-tripped"},
         "startsAt": "2026-12-02T05:00:00.000Z"}]}
    ess = {"tripped": True, "reason": "daily drawdown 15.2 % > 15 %", "evaluator": "drawdown",
           "by": "risk-governor", "tripped_at": 1_764_651_600_000}
    text = messages.alertmanager_text(document, ess)
    assert text.splitlines()[:5] == [
        "EMERGENCY STOP TRIPPED: no new entries; exits continue.",
        "reason: daily drawdown 15.2 % > 15 %", "evaluator: drawdown", "by: risk-governor",
        "at: 2025-12-02 05:00 UTC"]
    assert "[CRITICAL] FIRING QuantumEssTripped" in text
    assert "since 2026-12-02 05:00 UTC" in text


def test_the_daily_summary_is_sent_by_quantumctl(telegram: TelegramStandIn,
                                                  tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'journal.sqlite'}"
    engine = make_engine(url)
    upgrade(engine)
    Journal(engine).write(round_trips(30))
    day = datetime.fromtimestamp(1_756_684_800, UTC).date()
    expected = messages.daily_summary(engine, day)
    engine.dispose()
    assert expected.startswith(f"Daily summary {day.isoformat()} (UTC)")
    assert "trades closed: " in expected and "net PnL: " in expected

    env = {k: v for k, v in os.environ.items() if not k.startswith("QT_")}
    env.update({"QT_DATABASE_URL": url, "QT_NOTIFY_TELEGRAM_TOKEN": TOKEN,
                "QT_NOTIFY_TELEGRAM_CHAT_ID": CHAT, "QT_NOTIFY_TELEGRAM_API": telegram.url})
    done = subprocess.run([sys.executable, "-m", "quantum.ctl", "notify", "summary", "--day",
                           day.isoformat()], env=env, capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "delivered to 1 channel"
    assert telegram.texts() == [expected]
    assert TOKEN not in done.stdout + done.stderr

    bad = subprocess.run([sys.executable, "-m", "quantum.ctl", "notify", "summary", "--day",
                          "yesterday"], env=env, capture_output=True, text=True, timeout=120,
                         check=False)
    assert bad.returncode == 2
    assert bad.stderr.strip() == ("quantumctl: error: --day 'yesterday' is not an ISO date "
                                  "(e.g. 2025-09-01)")
    env.pop("QT_NOTIFY_TELEGRAM_TOKEN")
    unset = subprocess.run([sys.executable, "-m", "quantum.ctl", "notify", "test"], env=env,
                           capture_output=True, text=True, timeout=120, check=False)
    assert unset.returncode == 1 and "no notification channel configured" in unset.stderr
