"""Venues are resolved by name from the registry of venues, never by type checks."""

from __future__ import annotations

import typing

import pytest

from quantum.config import ConfigError
from quantum.exchange.venues import VENUES, venue_for
from services.execution.config import Settings


def test_every_name_the_setting_allows_has_a_venue_and_no_other() -> None:
    allowed = set(typing.get_args(Settings.model_fields["exchange"].annotation))
    assert allowed == set(VENUES)
    for name in allowed:
        assert venue_for(name).name == name


def test_an_unknown_venue_is_a_configuration_error_naming_the_setting() -> None:
    with pytest.raises(ConfigError) as refused:
        venue_for("kraken")
    assert "QT_EXCHANGE" in str(refused.value) and "paper" in str(refused.value)
