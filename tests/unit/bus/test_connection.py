"""The bus URL: the Sentinel form read, refused with the key named, never leaking a secret."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from quantum.bus import connection
from quantum.bus.runner import bus_unavailable
from quantum.config import ConfigError, FleetSettings, load

pytestmark = pytest.mark.usefixtures("only_this_services_keys")


ROOT = Path(__file__).resolve().parents[3]


def test_a_sentinel_url_names_the_sentinels_the_master_and_the_options() -> None:
    target = connection.parse_sentinel(
        "redis+sentinel://:s3cret@10.0.0.1:26379,10.0.0.2,[::1]:26380/quantum/2"
        "?socket_timeout=4&socket_connect_timeout=1.5&sentinel_password=other"
        "&min_other_sentinels=1")
    assert target.sentinels == (("10.0.0.1", 26379), ("10.0.0.2", 26379), ("::1", 26380))
    assert (target.master, target.db, target.password) == ("quantum", 2, "s3cret")
    assert (target.socket_timeout, target.socket_connect_timeout) == (4.0, 1.5)
    assert (target.sentinel_password, target.min_other_sentinels) == ("other", 1)
    assert connection.parse_sentinel("redis+sentinel://h:26379/m").db == 0


@pytest.mark.parametrize(("url", "problem"), [
    ("redis+sentinel:///quantum/0", "no Sentinel host"),
    ("redis+sentinel://h1:26379,,h2/quantum", "empty Sentinel host"),
    ("redis+sentinel://h1:port/quantum", "bad port"),
    ("redis+sentinel://h1:26379", "no master name"),
    ("redis+sentinel://h1:26379/quantum/zero", "not a number"),
    ("redis+sentinel://h1:26379/quantum/0/x", "too many path segments"),
    ("redis+sentinel://h1:26379/quantum/0?socket_timout=1", "unknown option"),
    ("redis+sentinel://h1:26379/quantum/0?socket_timeout=-1", "must be positive"),
])
def test_a_bad_sentinel_url_is_refused_saying_why(url: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        connection.check_url(url)


def test_settings_refuse_a_bad_url_with_the_key_named_and_no_password(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QT_REDIS_URL", "redis+sentinel://:hunter2@h1:99999/quantum/0")
    with pytest.raises(ConfigError, match="QT_REDIS_URL") as refused:
        load(FleetSettings)
    assert refused.value.code == 78
    assert "hunter2" not in str(refused.value) and "***@h1" in str(refused.value)


def test_replicas_are_expected_behind_sentinel_unless_told_otherwise() -> None:
    sentinel = "redis+sentinel://h1:26379,h2:26379,h3:26379/quantum/0"
    assert FleetSettings(redis_url=sentinel).replicas_required == 1
    assert FleetSettings(redis_url="redis://127.0.0.1:6379/0").replicas_required == 0
    assert FleetSettings(redis_url=sentinel, replicas_expected=0).replicas_required == 0
    assert FleetSettings(replicas_expected=2).replicas_required == 2


def test_a_service_started_with_a_bad_sentinel_url_exits_78_naming_the_key() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QT_")}
    env.update(QT_REDIS_URL="redis+sentinel://:hunter2@h1:26379/", QT_METRICS_PORT="0",
               PYTHONPATH=f"{ROOT}:{ROOT / 'libs'}")
    done = subprocess.run([sys.executable, "-m", "services.execution"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 78, done.stderr
    assert "bad setting QT_REDIS_URL" in done.stderr and "no master name" in done.stderr
    assert "hunter2" not in done.stderr + done.stdout


def test_redaction_hides_every_password() -> None:
    url = "redis+sentinel://u:pw@h1:26379,h2:26379/quantum/0?sentinel_password=spw&x=1"
    assert connection.redact(url) == (
        "redis+sentinel://***@h1:26379,h2:26379/quantum/0?sentinel_password=***&x=1")
    assert connection.redact("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"


def test_failover_replies_are_outages_never_data() -> None:
    for error in (redis.exceptions.ReadOnlyError("You can't write against a read only replica."),
                  redis.exceptions.MasterDownError("Link with MASTER is down"),
                  redis.ResponseError("NOREPLICAS Not enough good replicas to write."),
                  redis.sentinel.MasterNotFoundError("No master found for 'quantum'")):
        assert bus_unavailable(error), error
    assert not bus_unavailable(redis.ResponseError("WRONGTYPE Operation against a key"))
