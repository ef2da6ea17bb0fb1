"""Reader-test fixtures: records written by the real sync engine, read back by ``KVMirror``.

The function runs in-process (``kv_sync.handler.lambda_handler``) against moto's
``mock_aws`` and a ``FakeNamespace`` served by ``responses``, as in the unit
tests; the reader then reads the table it wrote. Clocks are fake, so that cache
expiry and KV expirations need no sleeping.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import responses

from kv_sync.handler import lambda_handler
from local.lambda_context import LambdaContext
from tests.support.cloudflare import (
    CF_BASE,
    NAMESPACE_ID,
    PK,
    SECRET,
    TABLE,
    FakeNamespace,
)
from tests.support.mocked_aws import function_aws


class FakeClock:
    """A clock that moves only when told to."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class DynamoDBCalls:
    """The operations the tests' DynamoDB client makes, and a switch that makes them fail.

    ``before`` hooks run inside each call (after it is recorded), to hold a call
    while other threads run.
    """

    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    failing: bool = False
    before: list[Callable[[str], None]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def names(self, operation: str | None = None) -> list[str]:
        with self._lock:
            return [name for name, _ in self.calls if operation in {None, name}]

    def params(self, operation: str) -> list[dict[str, Any]]:
        with self._lock:
            return [params for name, params in self.calls if name == operation]

    def hook(self, model: Any, params: dict[str, Any], **_: Any) -> None:
        with self._lock:
            self.calls.append((model.name, params))
        for before in self.before:
            before(model.name)
        if self.failing:
            from botocore.exceptions import EndpointConnectionError

            raise EndpointConnectionError(endpoint_url="https://dynamodb.us-east-1.amazonaws.com")


@pytest.fixture(autouse=True)
def _function_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The environment Terraform gives the function, pointed at the test doubles."""
    from kv_sync import credentials, ratelimit, runtime
    from kv_sync.observability import logger

    logger.registered_handler.stream = sys.stdout  # type: ignore[attr-defined]
    monkeypatch.setenv("DYNAMODB_TABLE_NAME", TABLE)
    monkeypatch.setenv("SECRETS_MANAGER_SECRET_NAME", SECRET)
    monkeypatch.setenv("CLOUDFLARE_API_BASE_URL", CF_BASE)
    for name in ("DEFAULT_KEY_NAME", "RECORD_TTL_DAYS", "DELETE_MISSING", "MAX_DELETE_PERCENT"):
        monkeypatch.delenv(name, raising=False)
    credentials.use_provider(None)
    runtime.activate(runtime.Deadline(None))
    ratelimit.shared_limiter(1)
    yield
    credentials.use_provider(None)


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """moto with the table and the secret Terraform creates; yields the tests' DynamoDB client."""
    with function_aws(monkeypatch) as dynamodb:
        yield dynamodb


@pytest.fixture
def kv(aws: Any) -> Iterator[FakeNamespace]:
    """The test namespace on a Cloudflare double: put keys in it, then ``sync``.

    Started after moto (``aws``), which patches the same HTTP layer.
    """
    namespace = FakeNamespace()
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        namespace.install(mock)
        yield namespace


@pytest.fixture
def sync(aws: Any, kv: FakeNamespace) -> Callable[..., dict[str, Any]]:
    """Run the real function on a selector (default: the whole namespace); returns its reply."""

    def run(**event: Any) -> dict[str, Any]:
        reply: dict[str, Any] = lambda_handler(event or {"all": True}, LambdaContext())
        assert reply["success"] is True, reply
        return reply

    return run


@pytest.fixture
def dynamodb_calls(aws: Any) -> Iterator[DynamoDBCalls]:
    """Every call the tests' DynamoDB client (the reader's) makes from now on."""
    recorder = DynamoDBCalls()
    events = aws.meta.events
    events.register("before-parameter-build.dynamodb", recorder.hook, unique_id="reader-tests")
    yield recorder
    events.unregister("before-parameter-build.dynamodb", unique_id="reader-tests")


@pytest.fixture
def clock() -> FakeClock:
    """The cache's monotonic clock."""
    return FakeClock(1_000.0)


@pytest.fixture
def wall_clock() -> FakeClock:
    """The reader's epoch clock, starting at the real time (the sync stamps real times)."""
    return FakeClock(time.time())


@pytest.fixture
def mirror_factory(
    aws: Any, dynamodb_calls: DynamoDBCalls, clock: FakeClock, wall_clock: FakeClock
) -> Callable[..., Any]:
    """``KVMirror`` of the test namespace on the tests' client and the fake clocks."""
    from kv_sync_reader import KVMirror

    def make(**options: Any) -> KVMirror:
        return KVMirror(
            TABLE, NAMESPACE_ID, client=aws, clock=clock, wall_clock=wall_clock, **options
        )

    return make


@pytest.fixture
def sync_state(aws: Any) -> Callable[..., None]:
    """Store a selector's sync-state item as issue 12 specifies it (all keys, or ``prefix``).

    ``last_complete`` ``None`` leaves it out (no run has completed). Until the
    engine writes the item, this is the one place that does.
    """

    def put(
        last_run: dict[str, Any], last_complete: dict[str, Any] | None, prefix: str | None = None
    ) -> None:
        selector = {"all": True} if prefix is None else {"prefix": prefix}
        item: dict[str, Any] = {
            "pk": {"S": PK},
            "sk": {"S": "#SYNC#all" if prefix is None else f"#SYNC#prefix#{prefix}"},
            "selector": {"S": json.dumps(selector)},
            "last_run": {"M": _run_map(last_run)},
            "updated_at": {"S": last_run["finished_at"]},
        }
        if last_complete is not None:
            item["last_complete"] = {"M": _run_map(last_complete)}
        aws.put_item(TableName=TABLE, Item=item)

    return put


def _run_map(run: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in run.items():
        if isinstance(value, bool):
            out[name] = {"BOOL": value}
        elif isinstance(value, int):
            out[name] = {"N": str(value)}
        else:
            out[name] = {"S": value}
    return out
