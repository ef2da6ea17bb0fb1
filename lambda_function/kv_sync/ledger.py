"""The sink's bookkeeping items, beside the records in the namespace's partition.

Their sort keys start with ``#``, which sorts before ``KEY#``, so that nothing
reading records (a ``begins_with(sk, "KEY#")`` query) ever meets them:

- ``#LEASE``: the one multi-key run allowed on the namespace, until ``expires_at``;
- ``#RUN#<run id>#DELETE#<part>``: records of keys gone from KV, kept by an
  unfinished run for its end (with a ``ttl``, so that abandoned ones go by themselves);
- ``#SYNC#all`` and ``#SYNC#prefix#<prefix>``: the sync state of a selector, for
  readers: its last run (finished, stopped or failed) and its last complete run.
"""

from __future__ import annotations

from typing import Any

from kv_sync.store import call, conditional, deserialize, query, serialize

LEASE = "#LEASE"
PENDING_PER_ITEM = 500  # keys of up to 512 bytes: well inside DynamoDB's 400 KB items
PENDING_TTL_S = 2 * 86_400


def acquire_lease(
    table: str, pk: str, run: dict[str, Any], now: float, expires_at: float
) -> dict[str, Any] | None:
    """Hold the namespace's lease for ``run`` (``run_id``, ``started_at``, ``selector``).

    Returns ``None`` when it is held now: it was free, had expired, or is this
    run's already (its next invocation, resumed with the run's cursor). Otherwise
    returns the holder's lease.
    """
    item = {"pk": pk, "sk": LEASE, **run, "expires_at": int(expires_at)}
    taken = conditional(
        "put_item",
        TableName=table,
        Item={name: serialize(value) for name, value in item.items()},
        ConditionExpression="attribute_not_exists(pk) OR expires_at < :now OR run_id = :run",
        ExpressionAttributeValues={":now": {"N": str(int(now))}, ":run": {"S": run["run_id"]}},
    )
    return None if taken else (lease_holder(table, pk) or {})


def lease_holder(table: str, pk: str) -> dict[str, Any] | None:
    """The lease as stored (``None`` when there is none); its values as plain Python
    (``expires_at`` a ``Decimal``)."""
    items = _query(table, pk, "sk = :sk", LEASE)
    return {name: deserialize(value) for name, value in items[0].items()} if items else None


def extend_lease(table: str, pk: str, run_id: str, expires_at: float) -> bool:
    """Move the lease's expiry (a run pausing with a cursor keeps it for its next invocation)."""
    return conditional(
        "update_item",
        TableName=table,
        Key={"pk": {"S": pk}, "sk": {"S": LEASE}},
        UpdateExpression="SET expires_at = :expires",
        ConditionExpression="run_id = :run",
        ExpressionAttributeValues={":expires": {"N": str(int(expires_at))}, ":run": {"S": run_id}},
    )


def release_lease(table: str, pk: str, run_id: str) -> None:
    """Give the lease up, if this run still holds it."""
    conditional(
        "delete_item",
        TableName=table,
        Key={"pk": {"S": pk}, "sk": {"S": LEASE}},
        ConditionExpression="run_id = :run",
        ExpressionAttributeValues={":run": {"S": run_id}},
    )


def save_pending(
    table: str, pk: str, run_id: str, gone: dict[str, str], *, first_part: int, now: float
) -> int:
    """Keep ``gone`` (sort key -> when it was seen missing) for the run's end; items written."""
    entries = sorted(gone.items())
    parts = [entries[i : i + PENDING_PER_ITEM] for i in range(0, len(entries), PENDING_PER_ITEM)]
    for number, part in enumerate(parts, start=first_part):
        item: dict[str, Any] = {"pk": pk, "sk": _pending_sk(run_id, number), "gone": dict(part)}
        item["ttl"] = int(now) + PENDING_TTL_S
        call("put_item", table, TableName=table, Item={k: serialize(v) for k, v in item.items()})
    return len(parts)


def load_pending(table: str, pk: str, run_id: str) -> dict[str, str]:
    """What ``save_pending`` kept for the run."""
    gone: dict[str, str] = {}
    for item in _query(table, pk, "begins_with(sk, :sk)", _pending_sk(run_id, None)):
        gone |= deserialize(item["gone"])
    return gone


def drop_pending(table: str, pk: str, run_id: str, parts: int) -> None:
    """Delete the run's pending-deletion items."""
    for number in range(parts):
        key = {"pk": {"S": pk}, "sk": {"S": _pending_sk(run_id, number)}}
        call("delete_item", table, TableName=table, Key=key)


def _pending_sk(run_id: str, number: int | None) -> str:
    """A pending-deletion item's sort key; without ``number``, the prefix of them all."""
    return f"#RUN#{run_id}#DELETE#" + ("" if number is None else f"{number:06d}")


def _query(table: str, pk: str, condition: str, sk: str) -> list[dict[str, Any]]:
    items, _ = query(
        table,
        KeyConditionExpression=f"pk = :pk AND {condition}",
        ExpressionAttributeValues={":pk": {"S": pk}, ":sk": {"S": sk}},
    )
    return items


def sync_state_key(selector: dict[str, Any]) -> str | None:
    """The sort key of a selector's sync-state item (``None``: named keys keep none)."""
    if selector.get("all") is True:
        return "#SYNC#all"
    if "prefix" in selector:
        return f"#SYNC#prefix#{selector['prefix']}"
    return None


def save_run(
    table: str, pk: str, sk: str, selector: str, run: dict[str, Any], *, updated_at: str
) -> bool:
    """Record ``run`` as the selector's last run, and as its last complete one if it is.

    A run that started before the one recorded (a late invocation resuming an older run)
    changes nothing; returns whether the item was written.
    """
    update = "SET last_run = :run, selector = :selector, updated_at = :now"
    if run["complete"]:
        update += ", last_complete = :run"
    values = {":run": run, ":selector": selector, ":now": updated_at, ":started": run["started_at"]}
    return conditional(
        "update_item",
        TableName=table,
        Key={"pk": {"S": pk}, "sk": {"S": sk}},
        UpdateExpression=update,
        ConditionExpression="attribute_not_exists(last_run) OR last_run.started_at <= :started",
        ExpressionAttributeValues={name: serialize(value) for name, value in values.items()},
    )
