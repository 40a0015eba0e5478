"""The settings table (``OPTIONS``) and the frozen ``Settings`` built from it."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from conveyor.errors import ConfigError
from conveyor.option import Option, env_value
from conveyor.settings import Settings, env_for, settings_from_env
from conveyor.settings_table import OPTIONS


def test_every_field_but_the_region_is_a_setting_of_the_table() -> None:
    fields = {spec.name for spec in dataclasses.fields(Settings)}

    assert set(OPTIONS) == fields - {"region"}
    assert all(option.field == name for name, option in OPTIONS.items())


def test_settings_take_their_defaults_from_the_table() -> None:
    defaults = Settings()

    for option in OPTIONS.values():
        assert getattr(defaults, option.field) == option.default, option.field
    assert defaults.storage == Path("conveyor-data")
    assert defaults.visibility_timeout_s == 60
    assert defaults.imports == ()


def test_every_option_has_help_and_a_conveyor_env_var() -> None:
    for option in OPTIONS.values():
        assert option.help.strip(), option.field
        assert option.env[0].startswith("CONVEYOR_"), option.field
        assert "``" not in option.help, option.field


def test_env_for_gives_back_the_settings_it_was_made_from(tmp_path: Path) -> None:
    settings = settings_from_env(
        {},
        storage=tmp_path,
        queue="sqlite:///q.db",
        visibility_timeout_s=90,
        until_empty=True,
        imports=["a", "b.py"],
        log_level="debug",
    )

    assert settings_from_env(env_for(settings)) == settings


@pytest.mark.parametrize(
    ("field", "text", "value"),
    [
        ("batch_size", " 3 ", 3),
        ("until_empty", "Off", False),
        ("log_level", "warning", "WARNING"),
        ("imports", "a  b", ("a", "b")),
        ("health_file", "alive", Path("alive")),
    ],
)
def test_an_option_reads_its_text(field: str, text: str, value: object) -> None:
    assert OPTIONS[field].parse(text, "X") == value


@pytest.mark.parametrize(
    ("field", "text", "expected"),
    [
        ("batch_size", "0", "an integer from 1 to 10"),
        ("grace_s", "nan", "a number >= 0"),
        ("log_format", "yaml", "one of auto, json, text"),
    ],
)
def test_a_bad_text_names_where_it_came_from(field: str, text: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=f"bad value .* for SOURCE: {expected}"):
        OPTIONS[field].parse(text, "SOURCE")


def test_the_first_env_var_set_and_not_empty_wins() -> None:
    option: Option = OPTIONS["queue_url"]

    assert env_value(option, {"SQS_QUEUE_URL": "b"}) == ("SQS_QUEUE_URL", "b")
    assert env_value(option, {"CONVEYOR_QUEUE_URL": "", "SQS_QUEUE_URL": "b"}) == (
        "SQS_QUEUE_URL",
        "b",
    )
    assert env_value(option, {"CONVEYOR_QUEUE_URL": "a", "SQS_QUEUE_URL": "b"}) == (
        "CONVEYOR_QUEUE_URL",
        "a",
    )
    assert env_value(option, {}) is None
