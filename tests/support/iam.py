"""What the deployed function may call: the execution role's grants, read from terraform/."""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

TERRAFORM = Path(__file__).resolve().parents[2] / "terraform"
# The DynamoDB operations that write an item (the function's conditional writes).
WRITE_OPERATIONS = ("PutItem", "UpdateItem")


@cache
def granted_dynamodb_operations() -> frozenset[str]:
    """The DynamoDB operations the execution role may call (``local.dynamodb_operations``)."""
    sources = "\n".join(path.read_text() for path in sorted(TERRAFORM.glob("*.tf")))
    operations = re.search(r"dynamodb_operations\s*=\s*\[([^\]]*)\]", sources)
    assert operations is not None, "terraform/ no longer lists local.dynamodb_operations"
    return frozenset(re.findall(r'"(\w+)"', operations.group(1)))
