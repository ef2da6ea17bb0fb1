"""The emulators a benchmark runs against: moto server and the KV emulator.

Both run in the benchmark's own process, on loopback ports; the function under
test runs in child interpreters (see ``package``), as it would in Lambda.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterator

    from local.kv_emulator import KVEmulator

TOKEN = "bench-token-7f2k9x"
KEY = "redirect-all-users-to-essentials"
# A realistic value: a small JSON feature flag with metadata.
VALUE = json.dumps({"enabled": True, "percentage": 25, "allow": ["eu-west-1", "us-east-1"]})
METADATA = {"owner": "growth", "version": 3}
NAMESPACE_TITLE = "bench-flags"
FLOOR_PK, FLOOR_SK = "FLOOR", "KEY#floor"  # the floor's item, beside the function's record

_FAKE_AWS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
    # Lambda has no ~/.aws; neither do the children.
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    "AWS_EC2_METADATA_DISABLED": "true",
}


@dataclass
class Stack:
    """A table and a secret in moto server, a namespace and a key in the emulator."""

    emulator: KVEmulator
    moto_url: str
    namespace_id: str
    table: str
    secret: str
    home: Path

    def aws_env(self) -> dict[str, str]:
        """Environment for a child that talks to the emulators (no Lambda variables)."""
        return {
            **_FAKE_AWS,
            "HOME": str(self.home),
            "AWS_ENDPOINT_URL": self.moto_url,
            "DYNAMODB_TABLE_NAME": self.table,
            "SECRETS_MANAGER_SECRET_NAME": self.secret,
            "CLOUDFLARE_API_BASE_URL": self.emulator.base_url,
            "DEFAULT_KEY_NAME": KEY,
            "BENCH_KV_NAMESPACE_ID": self.namespace_id,
            "BENCH_KV_ACCOUNT_ID": self.emulator.account_id,
            "BENCH_KV_TOKEN": TOKEN,
        }

    def connections(self) -> int:
        return self.emulator.connections_opened

    def copy_record_for_floor(self) -> None:
        """Copy the function's record of the key to the floor's own item.

        The floor then makes the same consistent read of an item of the same
        size, so the server does the same work for both.
        """
        dynamodb = _client("dynamodb", self.moto_url)
        item = dynamodb.get_item(
            TableName=self.table,
            Key={"pk": {"S": f"NAMESPACE#{self.namespace_id}"}, "sk": {"S": f"KEY#{KEY}"}},
            ConsistentRead=True,
        ).get("Item")
        if item is None:
            raise RuntimeError("the function stored no record; run it before the floor")
        dynamodb.put_item(
            TableName=self.table, Item={**item, "pk": {"S": FLOOR_PK}, "sk": {"S": FLOOR_SK}}
        )


def _client(service: str, url: str) -> Any:
    import boto3

    return boto3.client(
        service,
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


@contextmanager
def start_stack() -> Iterator[Stack]:
    """Start both emulators, create the resources, seed the key; stop on exit."""
    from moto.server import ThreadedMotoServer

    # moto server logs every request through werkzeug; the tables are what matter.
    logging.getLogger("werkzeug").setLevel(logging.ERROR)

    from local.kv_emulator import KVEmulator

    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    moto.start()
    emulator = KVEmulator(tokens=[TOKEN])
    emulator.start()
    try:
        host, port = moto.get_host_and_port()
        moto_url = f"http://{host}:{port}"
        suffix = uuid.uuid4().hex[:8]
        table, secret = f"bench-kv-{suffix}", f"bench-cf-{suffix}"
        namespace_id = emulator.create_namespace(NAMESPACE_TITLE)
        emulator.put(namespace_id, KEY, VALUE, metadata=METADATA)

        dynamodb = _client("dynamodb", moto_url)
        dynamodb.create_table(
            TableName=table,
            BillingMode="PAY_PER_REQUEST",
            KeySchema=[
                {"AttributeName": "pk", "KeyType": "HASH"},
                {"AttributeName": "sk", "KeyType": "RANGE"},
            ],
            AttributeDefinitions=[
                {"AttributeName": "pk", "AttributeType": "S"},
                {"AttributeName": "sk", "AttributeType": "S"},
            ],
        )
        _client("secretsmanager", moto_url).create_secret(
            Name=secret,
            SecretString=json.dumps(
                {
                    "api_token": TOKEN,
                    "account_id": emulator.account_id,
                    "kv_namespace_id": namespace_id,
                    "kv_namespace": NAMESPACE_TITLE,
                }
            ),
        )
        with tempfile.TemporaryDirectory(prefix="kv-sync-bench-home-") as home:
            yield Stack(emulator, moto_url, namespace_id, table, secret, Path(home))
    finally:
        emulator.stop()
        moto.stop()
