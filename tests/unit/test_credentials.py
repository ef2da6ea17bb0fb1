"""Reading the Cloudflare credentials secret (``kv_sync.credentials``).

Runs against moto's in-process Secrets Manager. The secret's values must never
appear in an error message: operators see these messages in responses and logs.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import boto3
import pytest
from aws_lambda_powertools.utilities.parameters.base import BaseProvider
from moto import mock_aws

from kv_sync import credentials
from kv_sync.credentials import CloudflareCredentials, load_credentials, parse_credentials
from kv_sync.errors import ConfigurationError
from kv_sync.settings import load_settings
from tests.support.cloudflare import ACCOUNT_ID, NAMESPACE_ID, SECRET, SECRET_VALUE, TOKEN

ROTATED_TOKEN = "cf-token-Rotated-7Hq2Wm"
FIELDS = ("api_token", "account_id", "kv_namespace_id", "kv_namespace")


def put_secret(value: dict[str, Any] | str) -> None:
    """Store a new version of the credentials secret (like a rotation)."""
    text = value if isinstance(value, str) else json.dumps(value)
    boto3.client("secretsmanager").put_secret_value(SecretId=SECRET, SecretString=text)


def load(*, force_fetch: bool = False) -> CloudflareCredentials:
    return load_credentials(load_settings(), force_fetch=force_fetch)


def config_error(**kwargs: Any) -> ConfigurationError:
    with pytest.raises(ConfigurationError) as info:
        load(**kwargs)
    assert info.value.type == "CONFIGURATION_ERROR"
    return info.value


def assert_no_values(message: str, secret: dict[str, Any] | str) -> None:
    """None of the secret's non-trivial values appear in the message."""
    values = [secret] if isinstance(secret, str) else [v for v in secret.values() if v]
    for value in values:
        text = str(value).strip()
        if len(text) >= 4:
            assert text not in message, f"secret value {text!r} leaked into {message!r}"
    assert TOKEN not in message


def named_fields(message: str) -> list[str]:
    """The field names listed after the last colon of an error message."""
    return [name.strip() for name in message.rsplit(":", 1)[-1].split(",")]


class Clock:
    """Moves Powertools' cache clock without sleeping."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.offset = timedelta(0)
        clock = self

        class _Shifted(datetime):
            @classmethod
            def now(cls, tz: Any = None) -> Any:
                return datetime.now(tz) + clock.offset

        monkeypatch.setattr("aws_lambda_powertools.utilities.parameters.base.datetime", _Shifted)

    def advance(self, seconds: float) -> None:
        self.offset += timedelta(seconds=seconds)


MISSING_SECRET = "kv-sync-missing-secret"
NO_VALUE_SECRET = "kv-sync-secret-without-value"
BINARY_SECRET = "kv-sync-binary-secret"
OTHER_SECRET = "kv-sync-other-credentials"


@pytest.fixture(scope="module")
def _moto() -> Iterator[None]:
    """One moto Secrets Manager for the module (a fresh one per test costs ~0.3 s).

    Holds the credentials secret plus a few fixed secrets for the unusual cases.
    """
    with mock_aws():
        client = boto3.client("secretsmanager")
        client.create_secret(Name=SECRET, SecretString=json.dumps(SECRET_VALUE))
        client.create_secret(Name=NO_VALUE_SECRET)
        client.create_secret(Name=BINARY_SECRET, SecretBinary=json.dumps(SECRET_VALUE).encode())
        client.create_secret(
            Name=OTHER_SECRET, SecretString=json.dumps({**SECRET_VALUE, "kv_namespace": "b"})
        )
        yield


@pytest.fixture
def secret(_moto: None) -> None:
    """The credentials secret holds the valid value again at the start of each test."""
    put_secret(SECRET_VALUE)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    return Clock(monkeypatch)


# --------------------------------------------------------------------- happy path


def test_valid_secret_is_parsed(secret):
    # GIVEN the secret Terraform creates, filled in by the operator
    # WHEN the credentials are loaded
    creds = load()

    # THEN every field is mapped to what the Cloudflare client needs
    assert creds == CloudflareCredentials(
        api_token=TOKEN,
        account_id=ACCOUNT_ID,
        namespace_id=NAMESPACE_ID,
        namespace_name="flags",
    )


def test_surrounding_whitespace_in_values_is_stripped(secret):
    # GIVEN a secret pasted with stray spaces and a trailing newline
    put_secret({name: f"  {value}\n" for name, value in SECRET_VALUE.items()})

    # WHEN the credentials are loaded
    creds = load()

    # THEN the token sent to Cloudflare has no whitespace (else every call is a 401)
    assert creds.api_token == TOKEN
    assert creds.account_id == ACCOUNT_ID
    assert creds.namespace_id == NAMESPACE_ID
    assert creds.namespace_name == "flags"


def test_extra_fields_in_the_secret_are_ignored(secret):
    # GIVEN a secret with additional fields (e.g. notes from the operator)
    put_secret({**SECRET_VALUE, "rotated_by": "ops", "zone_id": "z1"})

    # WHEN the credentials are loaded
    # THEN they load normally
    assert load().api_token == TOKEN


def test_secret_stored_as_binary_json_is_parsed(secret, monkeypatch):
    # GIVEN a secret created with SecretBinary holding the same JSON
    monkeypatch.setenv("SECRETS_MANAGER_SECRET_NAME", BINARY_SECRET)

    # WHEN the credentials are loaded
    # THEN they are read the same way
    assert load().api_token == TOKEN


def test_repr_hides_the_token(secret):
    # GIVEN loaded credentials
    creds = load()

    # WHEN they end up in a log line via repr() or an f-string
    shown = [repr(creds), f"{creds!r}", str(creds), f"{[creds]}"]

    # THEN the token is masked while the identifying ids stay readable
    for text in shown:
        assert TOKEN not in text
        assert "***" in text
        assert ACCOUNT_ID in text


# ---------------------------------------------------------------------- caching


def test_secret_is_cached_across_calls(secret):
    # GIVEN credentials loaded once (a warm container)
    first = load()

    # WHEN the secret is rotated and the credentials are loaded again within the cache age
    put_secret({**SECRET_VALUE, "api_token": ROTATED_TOKEN})
    second = load()

    # THEN the cached token is still used (no Secrets Manager call per invocation)
    assert first.api_token == TOKEN
    assert second.api_token == TOKEN


def test_cache_survives_new_settings_objects(secret):
    # GIVEN credentials loaded once, then the settings re-read as each invocation does
    load()
    put_secret({**SECRET_VALUE, "api_token": ROTATED_TOKEN})

    # WHEN a fresh Settings is built and the credentials loaded with it
    creds = load_credentials(load_settings())

    # THEN the cache is per container, not per Settings object
    assert creds.api_token == TOKEN


def test_force_fetch_returns_the_rotated_secret(secret):
    # GIVEN cached credentials and a rotated secret
    load()
    put_secret({**SECRET_VALUE, "api_token": ROTATED_TOKEN})

    # WHEN they are loaded with force_fetch (after Cloudflare answered 401)
    forced = load(force_fetch=True)

    # THEN the new token is returned, and it replaces the cached one
    assert forced.api_token == ROTATED_TOKEN
    assert load().api_token == ROTATED_TOKEN


def test_cache_expires_after_secret_cache_seconds(secret, clock, monkeypatch):
    # GIVEN SECRET_CACHE_SECONDS=300 and credentials loaded once
    monkeypatch.setenv("SECRET_CACHE_SECONDS", "300")
    load()
    put_secret({**SECRET_VALUE, "api_token": ROTATED_TOKEN})

    # WHEN 299 seconds pass, then two more
    clock.advance(299)
    before = load()
    clock.advance(2)
    after = load()

    # THEN the old token is served until the cache age runs out, the new one after
    assert before.api_token == TOKEN
    assert after.api_token == ROTATED_TOKEN


def test_default_cache_age_is_300_seconds(secret, clock):
    # GIVEN no SECRET_CACHE_SECONDS in the environment, and credentials loaded once
    load()
    put_secret({**SECRET_VALUE, "api_token": ROTATED_TOKEN})

    # WHEN just under and just over five minutes pass
    clock.advance(290)
    before = load()
    clock.advance(20)
    after = load()

    # THEN the cache lasted the documented 300 s
    assert before.api_token == TOKEN
    assert after.api_token == ROTATED_TOKEN


def test_secret_cache_seconds_zero_disables_caching(secret, monkeypatch):
    # GIVEN SECRET_CACHE_SECONDS=0
    monkeypatch.setenv("SECRET_CACHE_SECONDS", "0")
    load()

    # WHEN the secret is rotated and the credentials are loaded again at once
    put_secret({**SECRET_VALUE, "api_token": ROTATED_TOKEN})
    creds = load()

    # THEN every invocation reads the current secret
    assert creds.api_token == ROTATED_TOKEN


def test_a_bad_secret_is_not_cached_as_good(secret):
    # GIVEN a secret that is still a placeholder when first read
    put_secret({**SECRET_VALUE, "api_token": "REPLACE_ME"})
    config_error()

    # WHEN the operator fills it in and the next invocation forces a re-read
    put_secret(SECRET_VALUE)

    # THEN the credentials load (the earlier failure did not stick)
    assert load(force_fetch=True).api_token == TOKEN


def test_back_to_secrets_manager_forgets_the_cached_secret(secret):
    # GIVEN cached credentials and a rotated secret
    load()
    put_secret({**SECRET_VALUE, "api_token": ROTATED_TOKEN})

    # WHEN the provider is reset to Secrets Manager (a new container, in effect)
    credentials.use_provider(None)

    # THEN the rotated secret is read
    assert load().api_token == ROTATED_TOKEN


# --------------------------------------------------------------- missing secret


def test_missing_secret_is_configuration_error_naming_the_secret(secret, monkeypatch):
    # GIVEN the function is pointed at a secret that does not exist
    monkeypatch.setenv("SECRETS_MANAGER_SECRET_NAME", MISSING_SECRET)

    # WHEN the credentials are loaded
    error = config_error()

    # THEN the error names the secret and the AWS error, and is not retryable
    assert f"'{MISSING_SECRET}'" in error.message
    assert "ResourceNotFoundException" in error.message
    assert "put-secret-value" in error.message
    assert error.is_retryable is False


def test_secret_without_a_value_is_configuration_error(secret, monkeypatch):
    # GIVEN the secret exists (as Terraform creates it) but has no value yet
    monkeypatch.setenv("SECRETS_MANAGER_SECRET_NAME", NO_VALUE_SECRET)

    # WHEN the credentials are loaded
    error = config_error()

    # THEN the error says to put a value
    assert f"'{NO_VALUE_SECRET}'" in error.message
    assert "no value" in error.message
    assert error.is_retryable is False


def test_secret_name_comes_from_the_environment(secret, monkeypatch):
    # GIVEN SECRETS_MANAGER_SECRET_NAME points at another secret
    monkeypatch.setenv("SECRETS_MANAGER_SECRET_NAME", OTHER_SECRET)

    # WHEN the credentials are loaded
    # THEN that secret is read
    assert load().namespace_name == "b"


# ---------------------------------------------------------------- bad contents


@pytest.mark.parametrize("text", [" ", "\n\t  \n"], ids=["space", "whitespace"])
def test_blank_secret_is_configuration_error(secret, text):
    # GIVEN a secret whose value is only whitespace
    put_secret(text)

    # WHEN the credentials are loaded
    error = config_error()

    # THEN it is reported as empty
    assert "empty" in error.message


@pytest.mark.parametrize("raw", ["", None, b"", b"   "])
def test_empty_raw_secret_is_configuration_error(raw):
    # GIVEN a secret value that is the empty string (the API refuses it, a console paste may not)
    # WHEN it is parsed
    with pytest.raises(ConfigurationError) as info:
        parse_credentials(raw, SECRET)

    # THEN it is reported as empty
    assert "empty" in info.value.message


@pytest.mark.parametrize(
    "text",
    [
        f"api_token={TOKEN}\naccount_id={ACCOUNT_ID}",
        f"{{'api_token': '{TOKEN}'}}",
        f'{{"api_token": "{TOKEN}",}}',
        TOKEN,
    ],
    ids=["dotenv", "python-dict", "trailing-comma", "bare-token"],
)
def test_non_json_secret_is_configuration_error_without_its_contents(secret, text):
    # GIVEN a secret that is not JSON but does contain the real token
    put_secret(text)

    # WHEN the credentials are loaded
    error = config_error()

    # THEN it says JSON is expected, lists the fields, and never echoes the value
    assert "not valid JSON" in error.message
    for field in FIELDS:
        assert field in error.message
    assert_no_values(error.message, text)


@pytest.mark.parametrize(
    "value",
    [[TOKEN, ACCOUNT_ID], [SECRET_VALUE], f'"{TOKEN}"', "12345", "null", "true"],
    ids=["list", "list-of-object", "string", "number", "null", "bool"],
)
def test_json_that_is_not_an_object_is_configuration_error(secret, value):
    # GIVEN a secret that is JSON but not an object
    text = value if isinstance(value, str) else json.dumps(value)
    put_secret(text)

    # WHEN the credentials are loaded
    error = config_error()

    # THEN it asks for an object with the fields, without echoing the value
    assert "JSON object" in error.message
    assert "api_token" in error.message
    assert_no_values(error.message, text)


@pytest.mark.parametrize("field", FIELDS)
def test_each_missing_field_is_named(secret, field):
    # GIVEN a secret lacking one field
    secret = {k: v for k, v in SECRET_VALUE.items() if k != field}
    put_secret(secret)

    # WHEN the credentials are loaded
    error = config_error()

    # THEN exactly that field is named, and none of the other values leak
    assert named_fields(error.message) == [field]
    assert_no_values(error.message, secret)


def test_all_missing_fields_are_named_at_once(secret):
    # GIVEN a secret holding only the token
    put_secret({"api_token": TOKEN})

    # WHEN the credentials are loaded
    error = config_error()

    # THEN the operator learns every missing field in one go
    for field in ("account_id", "kv_namespace_id", "kv_namespace"):
        assert field in error.message
    assert_no_values(error.message, {"api_token": TOKEN})


def test_empty_json_object_names_every_field(secret):
    # GIVEN a secret of `{}`
    put_secret("{}")

    # WHEN the credentials are loaded
    error = config_error()

    # THEN all four fields are named
    for field in FIELDS:
        assert field in error.message


@pytest.mark.parametrize("empty", ["", "   ", None, 123, ["x"], {"v": 1}, True])
def test_empty_or_non_string_field_is_named(secret, empty):
    # GIVEN a secret whose account_id is empty, blank or not a string
    secret = {**SECRET_VALUE, "account_id": empty}
    put_secret(secret)

    # WHEN the credentials are loaded
    error = config_error()

    # THEN account_id alone is named and the token does not leak
    assert named_fields(error.message) == ["account_id"]
    assert_no_values(error.message, SECRET_VALUE)


@pytest.mark.parametrize(
    "placeholder",
    [
        "REPLACE_ME",
        "replace-me",
        "ReplaceMe",
        "<your-token>",
        "<API_TOKEN>",
        "changeme",
        "CHANGE_ME",
        "${TOKEN}",
        "${CLOUDFLARE_API_TOKEN}",
        "xxxxxxxx",
        "your-api-token",
        "TODO",
        "PLACEHOLDER",
    ],
)
def test_placeholder_token_is_configuration_error_naming_the_field(secret, placeholder):
    # GIVEN a secret whose token was never filled in
    secret = {**SECRET_VALUE, "api_token": placeholder}
    put_secret(secret)

    # WHEN the credentials are loaded
    error = config_error()

    # THEN api_token is named as a placeholder, and neither it nor other values are echoed
    assert "placeholder" in error.message
    assert "api_token" in error.message
    assert placeholder not in error.message
    assert_no_values(error.message, secret)


def test_all_placeholder_fields_are_named(secret):
    # GIVEN the secret exactly as a template leaves it
    template = {
        "api_token": "<your-token>",
        "account_id": "REPLACE_ME",
        "kv_namespace_id": "${NAMESPACE_ID}",
        "kv_namespace": "changeme",
    }
    put_secret(template)

    # WHEN the credentials are loaded
    error = config_error()

    # THEN every placeholder field is named, and no value is
    assert named_fields(error.message) == list(FIELDS)
    for value in template.values():
        assert value not in error.message


@pytest.mark.parametrize("placeholder", ["REPLACE_ME", "<your-namespace>", "${KV_NAMESPACE}"])
def test_unmistakable_placeholder_namespace_title_is_named(secret, placeholder):
    # GIVEN real ids and token, but a namespace title left as a template placeholder
    put_secret({**SECRET_VALUE, "kv_namespace": placeholder})

    # WHEN the credentials are loaded
    error = config_error()

    # THEN kv_namespace is named (records would otherwise be labelled "REPLACE_ME")
    assert named_fields(error.message) == ["kv_namespace"]
    assert placeholder not in error.message


def test_placeholder_in_other_field_does_not_leak_the_real_token(secret):
    # GIVEN a real token but a placeholder namespace id
    secret = {**SECRET_VALUE, "kv_namespace_id": "<namespace-id>"}
    put_secret(secret)

    # WHEN the credentials are loaded
    error = config_error()

    # THEN only kv_namespace_id is named and the real token is not in the message
    assert named_fields(error.message) == ["kv_namespace_id"]
    assert TOKEN not in error.message


@pytest.mark.parametrize(
    "token", ["xoxo-real-token-value", "replace0me", "change.me.token", "todo-app-token-123"]
)
def test_real_values_resembling_placeholders_are_accepted(secret, token):
    # GIVEN a genuine token that merely contains placeholder-like words
    put_secret({**SECRET_VALUE, "api_token": token})

    # WHEN the credentials are loaded
    # THEN it is used as is
    assert load().api_token == token


@pytest.mark.parametrize("title", ["todo", "dummy", "none", "placeholder-cache"])
def test_real_namespace_titles_that_look_like_placeholders_are_accepted(secret, title):
    # GIVEN a real KV namespace whose human-readable title is an ordinary word
    put_secret({**SECRET_VALUE, "kv_namespace": title})

    # WHEN the credentials are loaded
    creds = load()

    # THEN the namespace is synced under its title
    assert creds.namespace_name == title


def test_error_messages_never_contain_the_token_in_any_failure(secret):
    # GIVEN a series of broken secrets that all hold the real token somewhere
    broken: list[dict[str, Any] | str] = [
        {"api_token": TOKEN},
        {**SECRET_VALUE, "account_id": ""},
        {**SECRET_VALUE, "kv_namespace_id": "REPLACE_ME"},
        json.dumps([SECRET_VALUE]),
        json.dumps(SECRET_VALUE)[:-1],
    ]
    messages = []
    for secret in broken:
        put_secret(secret)
        # WHEN each is loaded, bypassing the cache
        messages.append(config_error(force_fetch=True).message)

    # THEN none of the messages (nor their str()) reveals the token
    assert len(messages) == len(broken)
    for message in messages:
        assert TOKEN not in message


@pytest.mark.parametrize(
    "token", ["pasted-token\nsecond-line", "tab\tinside-token", "space inside"]
)
def test_token_with_whitespace_inside_is_a_configuration_error(secret, token):
    # GIVEN a token pasted with a line break or other whitespace inside it
    put_secret({**SECRET_VALUE, "api_token": token})

    # WHEN the credentials are loaded
    error = config_error()

    # THEN the field is named and its value is not shown
    assert "api_token" in error.message
    assert token not in error.message


# ------------------------------------------------------------- another provider


class DictProvider(BaseProvider):
    """A Powertools parameters provider serving secrets from a dict (Powertools'
    documented way to write one: implement ``_get`` and ``_get_multiple``)."""

    def __init__(self, secrets: dict[str, str]) -> None:
        super().__init__()  # type: ignore[no-untyped-call]  # Powertools leaves it untyped
        self.secrets = secrets
        self.reads: list[str] = []

    def _get(self, name: str, **sdk_options: Any) -> str:
        self.reads.append(name)
        try:
            return self.secrets[name]
        except KeyError:
            raise LookupError(f"no secret {name}") from None

    def _get_multiple(self, path: str, **sdk_options: Any) -> dict[str, str]:
        raise NotImplementedError


def test_credentials_can_come_from_another_provider():
    # GIVEN a provider that is not Secrets Manager (the local runner reads the
    # environment through one), holding other credentials; no AWS at all
    other = {**SECRET_VALUE, "api_token": ROTATED_TOKEN, "kv_namespace": "env-ns"}
    provider = DictProvider({SECRET: json.dumps(other)})

    # WHEN the function reads its credentials through it
    credentials.use_provider(provider)
    creds = load()

    # THEN they are that provider's, read under the configured secret name
    assert creds.api_token == ROTATED_TOKEN
    assert creds.namespace_name == "env-ns"
    assert provider.reads == [SECRET]


def test_another_provider_is_cached_like_secrets_manager():
    # GIVEN credentials read once through a provider
    provider = DictProvider({SECRET: json.dumps(SECRET_VALUE)})
    credentials.use_provider(provider)
    load()

    # WHEN they are read again, and then again forcing a fetch (after a 401)
    load()
    load(force_fetch=True)

    # THEN the cache served the second read; the forced one went to the provider
    assert provider.reads == [SECRET, SECRET]


def test_another_providers_contents_are_validated_the_same_way():
    # GIVEN a provider whose secret still holds a placeholder token
    credentials.use_provider(
        DictProvider({SECRET: json.dumps({**SECRET_VALUE, "api_token": "TODO"})})
    )

    # WHEN the credentials are loaded
    error = config_error()

    # THEN the operator gets the same message as for Secrets Manager
    assert named_fields(error.message) == ["api_token"]


def test_a_failing_provider_is_a_configuration_error_naming_the_secret():
    # GIVEN a provider that cannot find the secret
    credentials.use_provider(DictProvider({}))

    # WHEN the credentials are loaded
    error = config_error()

    # THEN the error names the secret the function was configured with
    assert f"'{SECRET}'" in error.message


def test_no_provider_means_secrets_manager_again(secret):
    # GIVEN credentials read through another provider
    credentials.use_provider(
        DictProvider({SECRET: json.dumps({**SECRET_VALUE, "kv_namespace": "x"})})
    )
    assert load().namespace_name == "x"

    # WHEN the provider is set back to None
    credentials.use_provider(None)

    # THEN the next read fetches the secret from Secrets Manager, not from a cache
    assert load().namespace_name == SECRET_VALUE["kv_namespace"]
