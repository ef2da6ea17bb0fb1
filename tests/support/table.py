"""Reading the function's table as a whole: exact snapshots, and what unfinished runs hold.

Beside the records (sort keys ``KEY#<key name>``) a namespace's partition holds the
function's own items, whose sort keys start with ``#`` (``kv_sync.ledger``): among them
the lease of the multi-key run in progress (``#LEASE``) and the deletions a paused run
keeps for its end (``#RUN#<run id>#DELETE#<part>``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tests.support.stack import Stack

# Sort keys of what a multi-key run holds until it ends: its lease, its pending deletions.
RUN_HOLDS = ("#LEASE", "#RUN#")


def snapshot(stack: Stack) -> dict[tuple[str, str], dict[str, Any]]:
    """Every item of the stack's table, exactly as stored, by ``(pk, sk)`` (a consistent scan)."""
    found: dict[tuple[str, str], dict[str, Any]] = {}
    kwargs: dict[str, Any] = {"TableName": stack.table, "ConsistentRead": True}
    while True:
        page = stack.dynamodb.scan(**kwargs)
        for raw in page["Items"]:
            found[(raw["pk"]["S"], raw["sk"]["S"])] = raw
        if "LastEvaluatedKey" not in page:
            return found
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def held(stack: Stack) -> list[str]:
    """Sort keys of the lease and pending-deletion items in the namespace's partition."""
    return sorted(sk for sk in stack.run_items() if sk.startswith(RUN_HOLDS))
