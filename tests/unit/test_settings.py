"""Reading the function's environment (``kv_sync.settings``).

The autouse fixture in ``tests/unit/conftest.py`` sets the required variables and
clears the optional ones; each test changes only what it is about.
"""

from __future__ import annotations

import pytest

from kv_sync.errors import ConfigurationError
from kv_sync.settings import ENV_VARS, Settings, load_settings
from tests.support.cloudflare import CF_BASE, SECRET, TABLE

OPTIONAL = (
    "SECRET_CACHE_SECONDS",
    "CLOUDFLARE_API_BASE_URL",
    "DEFAULT_KEY_NAME",
    "RETRY_MAX_ATTEMPTS",
    "API_TIMEOUT_SECONDS",
    "RECORD_TTL_DAYS",
    "DELETE_MISSING",
    "CLOUDFLARE_REQUESTS_PER_5_MINUTES",
    "MAX_DELETE_PERCENT",
)


@pytest.fixture
def only_required(monkeypatch: pytest.MonkeyPatch) -> None:
    """Just the two variables without a default, as a minimal deployment sets them."""
    for name in OPTIONAL:
        monkeypatch.delenv(name, raising=False)


def settings_error(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> str:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigurationError) as info:
        load_settings()
    # A bad deployment: the operator must fix it, retrying cannot help.
    assert info.value.type == "CONFIGURATION_ERROR"
    assert info.value.is_retryable is False
    assert str(info.value) == info.value.message
    return str(info.value)


def test_defaults_apply_when_only_required_variables_are_set(only_required):
    # GIVEN a deployment that sets only the table and the secret name
    # WHEN the settings are loaded
    settings = load_settings()

    # THEN every optional setting has its documented default
    assert settings == Settings(
        table_name=TABLE,
        secret_name=SECRET,
        secret_cache_seconds=300,
        api_base_url="https://api.cloudflare.com/client/v4",
        default_key_name="redirect-all-users-to-essentials",
        retry_max_attempts=3,
        api_timeout_seconds=30.0,
        record_ttl_days=30,
    )


@pytest.mark.parametrize("blank", ["", "   ", "\t\n"])
def test_blank_optional_variables_fall_back_to_defaults(only_required, monkeypatch, blank):
    # GIVEN optional variables present but blank (as Terraform may render an unset value)
    for name in OPTIONAL:
        monkeypatch.setenv(name, blank)

    # WHEN the settings are loaded
    settings = load_settings()

    # THEN the defaults are used rather than an error or an empty URL
    assert settings.secret_cache_seconds == 300
    assert settings.api_base_url == "https://api.cloudflare.com/client/v4"
    assert settings.default_key_name == "redirect-all-users-to-essentials"
    assert settings.retry_max_attempts == 3
    assert settings.api_timeout_seconds == 30.0
    assert settings.record_ttl_days == 30


def test_every_variable_is_read(monkeypatch):
    # GIVEN every variable set to a non-default value, with stray whitespace
    values = {
        "DYNAMODB_TABLE_NAME": " my-table ",
        "SECRETS_MANAGER_SECRET_NAME": " my-secret\n",
        "SECRET_CACHE_SECONDS": " 60 ",
        "CLOUDFLARE_API_BASE_URL": " http://127.0.0.1:8787/client/v4 ",
        "DEFAULT_KEY_NAME": " other-flag ",
        "RETRY_MAX_ATTEMPTS": "5",
        "API_TIMEOUT_SECONDS": "12.5",
        "RECORD_TTL_DAYS": "7",
        "DELETE_MISSING": " true ",
        "CLOUDFLARE_REQUESTS_PER_5_MINUTES": "600",
        "MAX_DELETE_PERCENT": " 40 ",
    }
    assert set(values) == set(ENV_VARS)
    for name, value in values.items():
        monkeypatch.setenv(name, value)

    # WHEN the settings are loaded
    settings = load_settings()

    # THEN each is used, trimmed
    assert settings == Settings(
        table_name="my-table",
        secret_name="my-secret",
        secret_cache_seconds=60,
        api_base_url="http://127.0.0.1:8787/client/v4",
        default_key_name="other-flag",
        retry_max_attempts=5,
        api_timeout_seconds=12.5,
        record_ttl_days=7,
        delete_missing=True,
        cloudflare_requests_per_5_minutes=600,
        max_delete_percent=40,
    )


@pytest.mark.parametrize(
    "url", [f"{CF_BASE}/", f"{CF_BASE}//", f" {CF_BASE}/ "], ids=["one", "two", "spaced"]
)
def test_trailing_slash_is_stripped_from_api_base_url(monkeypatch, url):
    # GIVEN a base URL written with a trailing slash
    monkeypatch.setenv("CLOUDFLARE_API_BASE_URL", url)

    # WHEN the settings are loaded
    settings = load_settings()

    # THEN paths appended to it do not get a double slash
    assert settings.api_base_url == CF_BASE
    assert not settings.api_base_url.endswith("/")


@pytest.mark.parametrize("name", ["DYNAMODB_TABLE_NAME", "SECRETS_MANAGER_SECRET_NAME"])
@pytest.mark.parametrize("state", ["unset", "blank"])
def test_missing_required_variable_is_named(monkeypatch, name, state):
    # GIVEN a required variable that is unset or blank
    if state == "unset":
        monkeypatch.delenv(name)
    else:
        monkeypatch.setenv(name, "  ")

    # WHEN the settings are loaded
    with pytest.raises(ConfigurationError) as info:
        load_settings()

    # THEN the message names exactly that variable
    message = str(info.value)
    assert name in message
    other = ({"DYNAMODB_TABLE_NAME", "SECRETS_MANAGER_SECRET_NAME"} - {name}).pop()
    assert other not in message


def test_both_missing_required_variables_are_named_together(monkeypatch):
    # GIVEN neither required variable is set
    monkeypatch.delenv("DYNAMODB_TABLE_NAME")
    monkeypatch.delenv("SECRETS_MANAGER_SECRET_NAME")

    # WHEN the settings are loaded
    with pytest.raises(ConfigurationError) as info:
        load_settings()

    # THEN the operator learns both at once
    assert "DYNAMODB_TABLE_NAME" in str(info.value)
    assert "SECRETS_MANAGER_SECRET_NAME" in str(info.value)


@pytest.mark.parametrize(
    ("name", "low", "high", "below", "above"),
    [
        ("SECRET_CACHE_SECONDS", "0", "86400", "-1", "86401"),
        ("RETRY_MAX_ATTEMPTS", "1", "10", "0", "11"),
        ("RECORD_TTL_DAYS", "0", "36500", "-1", "36501"),
        ("API_TIMEOUT_SECONDS", "1", "900", "0.5", "900.5"),
    ],
)
def test_bounds_are_inclusive_and_errors_name_the_variable(
    monkeypatch, name, low, high, below, above
):
    # GIVEN a numeric setting at, and just beyond, each end of its range
    for accepted in (low, high):
        monkeypatch.setenv(name, accepted)
        # WHEN the settings are loaded at the bounds
        # THEN they load
        load_settings()

    for rejected in (below, above):
        # WHEN the settings are loaded beyond the bounds
        message = settings_error(monkeypatch, name, rejected)

        # THEN the error names the variable, the allowed range and the bad value
        assert name in message
        assert "between" in message
        assert f"got {rejected}" in message


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("SECRET_CACHE_SECONDS", "five minutes"),
        ("SECRET_CACHE_SECONDS", "300s"),
        ("RETRY_MAX_ATTEMPTS", "3.5"),
        ("RECORD_TTL_DAYS", "30d"),
        ("API_TIMEOUT_SECONDS", "thirty"),
    ],
)
def test_non_numbers_are_rejected_naming_the_variable_and_value(monkeypatch, name, value):
    # GIVEN a numeric setting holding text
    # WHEN the settings are loaded
    message = settings_error(monkeypatch, name, value)

    # THEN the error names the variable and shows what it got
    assert name in message
    assert repr(value) in message


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_non_finite_timeout_is_rejected(monkeypatch, value):
    # GIVEN an API timeout that is not a finite number
    # WHEN the settings are loaded
    message = settings_error(monkeypatch, "API_TIMEOUT_SECONDS", value)

    # THEN it is refused instead of producing an endless or invalid timeout
    assert "API_TIMEOUT_SECONDS" in message


def test_fractional_timeout_is_kept(monkeypatch):
    # GIVEN a fractional API timeout
    monkeypatch.setenv("API_TIMEOUT_SECONDS", "2.75")

    # WHEN the settings are loaded
    # THEN the fraction is kept
    assert load_settings().api_timeout_seconds == 2.75


def test_zero_secret_cache_and_zero_ttl_days_are_allowed(monkeypatch):
    # GIVEN caching and record expiry both switched off
    monkeypatch.setenv("SECRET_CACHE_SECONDS", "0")
    monkeypatch.setenv("RECORD_TTL_DAYS", "0")

    # WHEN the settings are loaded
    settings = load_settings()

    # THEN the zeroes are kept (they mean "no cache" and "no ttl", not "use the default")
    assert settings.secret_cache_seconds == 0
    assert settings.record_ttl_days == 0


def test_settings_are_read_at_call_time(monkeypatch):
    # GIVEN settings loaded once
    first = load_settings()

    # WHEN the environment changes and they are loaded again
    monkeypatch.setenv("DEFAULT_KEY_NAME", "changed-flag")
    second = load_settings()

    # THEN the new value is seen
    assert first.default_key_name == "redirect-all-users-to-essentials"
    assert second.default_key_name == "changed-flag"


# ------------------------------------------------------------ multi-key sync settings


def test_multi_key_settings_default_when_unset(only_required):
    # GIVEN a deployment that sets none of the multi-key variables
    # WHEN the settings are loaded
    settings = load_settings()

    # THEN nothing is deleted and Cloudflare's own limit applies; with delete_missing,
    # a run may delete at most a quarter of its records
    assert settings.delete_missing is False
    assert settings.cloudflare_requests_per_5_minutes == 1200
    assert settings.max_delete_percent == 25


@pytest.mark.parametrize("blank", ["", "  "])
def test_blank_multi_key_settings_fall_back_to_defaults(only_required, monkeypatch, blank):
    # GIVEN the multi-key variables present but blank (an unset Terraform value)
    for name in ("DELETE_MISSING", "CLOUDFLARE_REQUESTS_PER_5_MINUTES", "MAX_DELETE_PERCENT"):
        monkeypatch.setenv(name, blank)

    # WHEN the settings are loaded
    settings = load_settings()

    # THEN the defaults are used rather than an error
    assert settings.delete_missing is False
    assert settings.cloudflare_requests_per_5_minutes == 1200
    assert settings.max_delete_percent == 25


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("true", True),
        ("TRUE", True),
        (" True ", True),
        ("1", True),
        ("yes", True),
        ("on", True),
        ("false", False),
        ("False", False),
        ("0", False),
        ("no", False),
        ("OFF", False),
    ],
)
def test_boolean_switches_accept_common_spellings(monkeypatch, value, expected):
    # GIVEN a switch written the way Terraform or a person might write it
    monkeypatch.setenv("DELETE_MISSING", value)

    # WHEN the settings are loaded
    settings = load_settings()

    # THEN it reads as the intended boolean
    assert settings.delete_missing is expected


@pytest.mark.parametrize("value", ["maybe", "2", "tru", "y", "enabled"])
def test_boolean_switch_with_another_word_is_rejected(monkeypatch, value):
    # GIVEN a switch holding a word that is neither true nor false
    # WHEN the settings are loaded
    message = settings_error(monkeypatch, "DELETE_MISSING", value)

    # THEN it is refused (not silently off), naming the variable and the value
    assert "DELETE_MISSING" in message
    assert "true or false" in message
    assert repr(value) in message


@pytest.mark.parametrize(
    ("name", "low", "high", "below", "above"),
    [
        ("CLOUDFLARE_REQUESTS_PER_5_MINUTES", "1", "100000", "0", "100001"),
        ("MAX_DELETE_PERCENT", "0", "100", "-1", "101"),
    ],
)
def test_multi_key_limits_are_bounded(monkeypatch, name, low, high, below, above):
    # GIVEN a multi-key limit at, and just beyond, each end of its range
    field = {
        "CLOUDFLARE_REQUESTS_PER_5_MINUTES": "cloudflare_requests_per_5_minutes",
        "MAX_DELETE_PERCENT": "max_delete_percent",
    }[name]
    for accepted in (low, high):
        monkeypatch.setenv(name, accepted)
        # WHEN the settings are loaded at the bounds
        # THEN the value is used
        assert getattr(load_settings(), field) == int(accepted)

    for rejected in (below, above):
        # WHEN the settings are loaded beyond the bounds
        message = settings_error(monkeypatch, name, rejected)

        # THEN the error names the variable, the range and the bad value
        assert name in message
        assert "between" in message
        assert f"got {rejected}" in message


@pytest.mark.parametrize("name", ["CLOUDFLARE_REQUESTS_PER_5_MINUTES", "MAX_DELETE_PERCENT"])
@pytest.mark.parametrize("value", ["many", "1200/5min", "2.5", "1e3", "25%"])
def test_multi_key_limits_must_be_integers(monkeypatch, name, value):
    # GIVEN a limit that is not a whole number
    # WHEN the settings are loaded
    message = settings_error(monkeypatch, name, value)

    # THEN it is refused, naming the variable and the value
    assert name in message
    assert repr(value) in message


def test_the_removed_self_invocation_variables_are_not_read(only_required, monkeypatch):
    # GIVEN a function still deployed with the variables of the old self-invocation
    # chain, holding values the settings would refuse if they read them
    monkeypatch.setenv("SELF_INVOKE_CONTINUATION", "maybe")
    monkeypatch.setenv("MAX_CONTINUATIONS", "-1")

    # WHEN the settings are loaded
    settings = load_settings()

    # THEN they load as without them: the variables are ignored, not an error
    assert settings == Settings(table_name=TABLE, secret_name=SECRET)


def test_a_changed_max_delete_percent_is_seen_by_the_next_load(monkeypatch):
    # GIVEN settings loaded once with the default deletion guard
    first = load_settings()

    # WHEN MAX_DELETE_PERCENT changes and they are loaded again (a new configuration)
    monkeypatch.setenv("MAX_DELETE_PERCENT", "100")
    second = load_settings()
    monkeypatch.setenv("MAX_DELETE_PERCENT", "0")
    third = load_settings()

    # THEN each load has the value of its environment, not a cached one
    assert [first.max_delete_percent, second.max_delete_percent] == [25, 100]
    assert third.max_delete_percent == 0
