"""Unit tests' multi-key runs through the handler, and readers of what they left behind.

The namespace is a ``FakeNamespace`` (``tests/support/cloudflare.py``) and the table
moto's, as the ``kv`` and ``aws`` fixtures of ``tests/unit/conftest.py`` set them up.
Besides records, a run keeps bookkeeping items in the namespace's partition (the
lease ``#LEASE``, pending deletions ``#RUN#<run id>#DELETE#<part>``): ``state_items``
reads those.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from kv_sync.handler import lambda_handler
from local.lambda_context import LambdaContext
from tests.support.cloudflare import PK, TABLE, stored_items

if TYPE_CHECKING:
    from tests.support.cloudflare import FakeNamespace

LEASE_SK = "#LEASE"
PENDING_PREFIX = "#RUN#"
OLD_READ = "2020-01-01T00:00:00.000000Z"


def invoke(event: Any, context: LambdaContext | None = None) -> dict[str, Any]:
    """The handler's reply to ``event`` (a fresh 300 s context unless given one)."""
    reply: dict[str, Any] = lambda_handler(event, context or LambdaContext())
    return reply


def follow(event: dict[str, Any], first: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Every reply of a run, passing each ``next_cursor`` back until the run is complete
    or fails (``first``: a reply already had)."""
    replies = [first if first is not None else invoke(event)]
    while "data" in replies[-1] and not replies[-1]["data"]["complete"]:
        assert len(replies) < 20, "the run never completed"
        replies.append(invoke({**event, "cursor": replies[-1]["data"]["next_cursor"]}))
    return replies


def seed(kv: FakeNamespace, names: list[str]) -> None:
    """Put ``names`` in KV, alternating text and JSON values."""
    for index, name in enumerate(names):
        kv.put(name, json.dumps({"n": index}) if index % 2 else f"text {index}")


def values(aws: Any) -> dict[str, Any]:
    """Each stored key's value."""
    return {key: item["value"] for key, item in stored_items(aws).items()}


def kv_values(kv: FakeNamespace) -> dict[str, Any]:
    """Each KV key's value, as text."""
    return {key: entry.value.decode("utf-8") for key, entry in kv.entries.items()}


def store_records(aws: Any, names: list[str]) -> None:
    """Records, from an old read, for keys that are no longer (or never were) in KV."""
    for name in names:
        aws.put_item(
            TableName=TABLE,
            Item={
                "pk": {"S": PK},
                "sk": {"S": f"KEY#{name}"},
                "key": {"S": name},
                "value": {"S": "stale"},
                "content_sha256": {"S": "stale"},
                "synced_at": {"S": OLD_READ},
            },
        )


def state_items(aws: Any) -> dict[str, dict[str, Any]]:
    """The namespace's bookkeeping items (lease, pending deletions), by sort key."""
    items = aws.query(
        TableName=TABLE,
        KeyConditionExpression="pk = :pk AND begins_with(sk, :hash)",
        ExpressionAttributeValues={":pk": {"S": PK}, ":hash": {"S": "#"}},
        ConsistentRead=True,
    )["Items"]
    return {item["sk"]["S"]: item for item in items}


def pending_items(aws: Any) -> dict[str, dict[str, Any]]:
    """The pending-deletion items kept by unfinished runs, by sort key."""
    return {sk: item for sk, item in state_items(aws).items() if sk.startswith(PENDING_PREFIX)}


def lease(aws: Any) -> dict[str, Any] | None:
    """The namespace's lease item as stored (``None``: no run holds it)."""
    return state_items(aws).get(LEASE_SK)


def hold_lease(aws: Any, *, run_id: str, started_at: str, expires_at: float) -> None:
    """Make another run hold the namespace's lease until ``expires_at`` (epoch seconds)."""
    aws.put_item(
        TableName=TABLE,
        Item={
            "pk": {"S": PK},
            "sk": {"S": LEASE_SK},
            "run_id": {"S": run_id},
            "started_at": {"S": started_at},
            "selector": {"S": '{"all": true}'},
            "expires_at": {"N": str(int(expires_at))},
        },
    )


def emf_documents(output: str) -> list[dict[str, Any]]:
    """The CloudWatch embedded-metric documents printed in ``output``."""
    return [
        json.loads(line)
        for line in output.splitlines()
        if line.startswith("{") and '"_aws"' in line
    ]


def metric_value(docs: list[dict[str, Any]], name: str) -> float | None:
    """The value of metric ``name`` in the first document that has it."""
    for doc in docs:
        if name in doc:
            return float(sum(doc[name])) if isinstance(doc[name], list) else float(doc[name])
    return None


def failed_metrics(docs: list[dict[str, Any]]) -> list[str]:
    """The ErrorType of every SyncFailed metric emitted."""
    return [doc["ErrorType"] for doc in docs if "SyncFailed" in doc]
