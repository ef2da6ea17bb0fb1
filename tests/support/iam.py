"""What the deployed function may call: the execution role's grants, read from terraform/.

And what its DynamoDB calls touch: the records (``KEY#<key>``) and the run's own items
beside them in the namespace's partition (``kv_sync.ledger``): the lease (``#LEASE``),
pending deletions (``#RUN#<run id>#DELETE#<part>``) and sync states (``#SYNC#...``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

TERRAFORM = Path(__file__).resolve().parents[2] / "terraform"
# The DynamoDB operations that write an item (the function's conditional writes).
WRITE_OPERATIONS = ("PutItem", "UpdateItem")
# The kind of item a sort key names, by its start ("KEY$", just past every "KEY#...", is
# the upper bound of a query over all records).
ITEM_KINDS = (
    ("KEY#", "record"),
    ("KEY$", "record"),
    ("#LEASE", "lease"),
    ("#RUN#", "pending"),
    ("#SYNC#", "state"),
)
# (operation, kind) of the calls a multi-key run makes on its lease: take it (a
# conditional PutItem), read the holder's (Query, when it is taken, and a dry run's
# check), extend it when pausing with a cursor (UpdateItem), release it (DeleteItem).
LEASE_CALLS = frozenset(
    {("PutItem", "lease"), ("Query", "lease"), ("UpdateItem", "lease"), ("DeleteItem", "lease")}
)
# ... and on the records to delete that a paused run keeps for its end: save them,
# read them back in the last invocation, drop them.
PENDING_CALLS = frozenset({("PutItem", "pending"), ("Query", "pending"), ("DeleteItem", "pending")})


@cache
def granted_dynamodb_operations() -> frozenset[str]:
    """The DynamoDB operations the execution role may call (``local.dynamodb_operations``)."""
    sources = "\n".join(path.read_text() for path in sorted(TERRAFORM.glob("*.tf")))
    operations = re.search(r"dynamodb_operations\s*=\s*\[([^\]]*)\]", sources)
    assert operations is not None, "terraform/ no longer lists local.dynamodb_operations"
    return frozenset(re.findall(r'"(\w+)"', operations.group(1)))


def item_kind(sort_key: str) -> str:
    """``record``, ``lease``, ``pending`` or ``state``: what the item of ``sort_key`` is."""
    for start, kind in ITEM_KINDS:
        if sort_key.startswith(start):
            return kind
    raise AssertionError(f"the function touched an item of no known kind: sk={sort_key!r}")


def dynamodb_targets(operation: str, params: Mapping[str, Any]) -> set[tuple[str, str]]:
    """``(operation, kind)`` for each kind of item a DynamoDB call (botocore params) touches.

    A Query's kinds are those of the sort key values in its key condition.
    """
    if operation == "PutItem":
        sort_keys = [params["Item"]["sk"]["S"]]
    elif operation in {"GetItem", "UpdateItem", "DeleteItem"}:
        sort_keys = [params["Key"]["sk"]["S"]]
    elif operation == "BatchGetItem":
        sort_keys = [
            key["sk"]["S"] for request in params["RequestItems"].values() for key in request["Keys"]
        ]
    elif operation == "Query":
        condition = params["KeyConditionExpression"]
        values = params.get("ExpressionAttributeValues", {})
        sort_keys = [
            value["S"] for name, value in values.items() if name != ":pk" and name in condition
        ]
    else:
        raise AssertionError(f"unexpected DynamoDB operation {operation}")
    return {(operation, item_kind(sort_key)) for sort_key in sort_keys}
