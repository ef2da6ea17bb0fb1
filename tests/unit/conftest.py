"""Unit-test fixtures: moto's in-process AWS and ``responses`` for Cloudflare.

The fake account's constants and reply builders live in ``tests/support/cloudflare.py``.
"""

from __future__ import annotations

import io
import sys
from collections.abc import Iterator
from typing import Any

import pytest
import responses

from local.lambda_context import LambdaContext
from tests.support.cloudflare import CF_BASE, SECRET, TABLE, FakeNamespace
from tests.support.mocked_aws import function_aws


@pytest.fixture
def lambda_context() -> LambdaContext:
    """A Lambda context with the deployed function's 300 s timeout."""
    return LambdaContext()


def _fresh_function_state() -> None:
    """A warm container's state, minus what one test could leak into the next.

    The cached AWS clients are kept (creating them costs far more than a test;
    moto intercepts them all the same); the cached secret is dropped.
    """
    from kv_sync import credentials, ratelimit, runtime

    credentials.use_provider(None)
    # No deadline until a handler activates one (a test may have left a short one).
    runtime.activate(runtime.Deadline(None))
    # A changed limit starts a fresh window, so the next run's limiter is empty.
    ratelimit.shared_limiter(1)


@pytest.fixture(autouse=True)
def _function_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The environment Terraform gives the function, pointed at test doubles."""
    from kv_sync.observability import logger

    # The log handler keeps the stream it was created with; give it this test's.
    logger.registered_handler.stream = sys.stdout  # type: ignore[attr-defined]

    monkeypatch.setenv("DYNAMODB_TABLE_NAME", TABLE)
    monkeypatch.setenv("SECRETS_MANAGER_SECRET_NAME", SECRET)
    monkeypatch.setenv("CLOUDFLARE_API_BASE_URL", CF_BASE)
    monkeypatch.setenv("RETRY_MAX_ATTEMPTS", "3")
    for name in (
        "DEFAULT_KEY_NAME",
        "RECORD_TTL_DAYS",
        "SECRET_CACHE_SECONDS",
        "API_TIMEOUT_SECONDS",
        "DELETE_MISSING",
        "CLOUDFLARE_REQUESTS_PER_5_MINUTES",
        "MAX_DELETE_PERCENT",
    ):
        monkeypatch.delenv(name, raising=False)
    _fresh_function_state()
    yield
    _fresh_function_state()


@pytest.fixture
def no_sleep(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Record the sleeps of DynamoDB retries and rate limiting instead of sleeping.

    Not Cloudflare retries: ``KVClient`` binds ``time.sleep`` when it is defined;
    tests of those build their own ``KVClient`` with a recording ``sleep``.
    """
    slept: list[float] = []
    monkeypatch.setattr("time.sleep", slept.append)
    return slept


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """moto with the table and the secret Terraform creates; yields the tests' DynamoDB client."""
    with function_aws(monkeypatch) as dynamodb:
        yield dynamodb


@pytest.fixture
def cf() -> Iterator[responses.RequestsMock]:
    """Cloudflare API double; a request nothing is registered for is refused as a
    connection error, so no test can reach the real API."""
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


@pytest.fixture
def kv(cf: responses.RequestsMock) -> FakeNamespace:
    """The test namespace, served by ``cf``: put keys in it, then invoke the function."""
    namespace = FakeNamespace()
    namespace.install(cf)
    return namespace


@pytest.fixture
def dynamodb_calls(aws: Any) -> Iterator[list[str]]:
    """The name of every DynamoDB operation the function calls, in order."""
    from kv_sync import runtime

    calls: list[str] = []

    def record(model: Any, **_: Any) -> None:
        calls.append(model.name)

    events = runtime.client("dynamodb").meta.events
    events.register("before-call.dynamodb", record)
    yield calls
    events.unregister("before-call.dynamodb", record)


def _item_of(params: dict[str, Any]) -> str:
    """What a DynamoDB call is about: ``record`` (``KEY#...``), ``lease``, ``pending``
    (a run's pending deletions), or the sort key of another bookkeeping item."""
    sk = ((params.get("Item") or params.get("Key") or {}).get("sk") or {}).get("S")
    if sk is None:
        sk = (params.get("ExpressionAttributeValues") or {}).get(":sk", {}).get("S")
    if sk is None or sk.startswith("KEY#"):  # batch reads and range queries read records
        return "record"
    if sk == "#LEASE":
        return "lease"
    return "pending" if sk.startswith("#RUN#") else sk


@pytest.fixture
def dynamodb_items(aws: Any) -> Iterator[list[tuple[str, str]]]:
    """Every DynamoDB call the function makes, in order, as (operation, what it is about):
    ``("PutItem", "record")``, ``("DeleteItem", "lease")``, ``("PutItem", "pending")``..."""
    from kv_sync import runtime

    calls: list[tuple[str, str]] = []

    def record(params: dict[str, Any], model: Any, **_: Any) -> None:
        calls.append((model.name, _item_of(params)))

    events = runtime.client("dynamodb").meta.events
    events.register("provide-client-params.dynamodb", record, unique_id="tests-dynamodb-items")
    yield calls
    events.unregister("provide-client-params.dynamodb", unique_id="tests-dynamodb-items")


@pytest.fixture
def small_pages(monkeypatch: pytest.MonkeyPatch) -> int:
    """Listing pages of 2 keys, so that a handful of keys spans pages."""
    from kv_sync import pages

    monkeypatch.setattr(pages, "LIST_PAGE_SIZE", 2)
    return 2


@pytest.fixture
def one_page_per_invocation(monkeypatch: pytest.MonkeyPatch) -> None:
    """No page after the first fits: every invocation stops after one page."""
    from kv_sync import engine

    monkeypatch.setattr(engine, "MIN_PAGE_SECONDS", 1e9)


@pytest.fixture
def log_stream() -> Iterator[io.StringIO]:
    """Everything the function's logger writes during the test.

    The log handler keeps the stream it was created with, so point it at a
    buffer of our own for the test and put it back afterwards.
    """
    from kv_sync.observability import logger

    handler: Any = logger.registered_handler
    buffer = io.StringIO()
    previous, handler.stream = handler.stream, buffer
    yield buffer
    handler.stream = previous
