"""``make demo``: a real end-to-end sync on local emulators, offline.

It starts moto server and the Cloudflare KV emulator on free loopback ports,
creates the table and the secret the way Terraform does (``local.aws_setup``),
seeds a few keys, invokes the real ``kv_sync.handler.lambda_handler`` in-process
with a Lambda-like context, and prints the response documents and the stored items.
The Function URL request re-syncs a key the direct invocation before it stored: its
content is unchanged, so it reports ``"changed": false`` and writes nothing.

Run it from the repository root::

    python -m local.demo            # documents and items only
    python -m local.demo --verbose  # plus the function's log lines and EMF metrics (stderr)

Exit status: 0 when every invocation gave the expected outcome, 1 otherwise.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import io
import json
import logging
import os
import sys
import time
from dataclasses import dataclass
from decimal import Decimal
from typing import IO, TYPE_CHECKING, Any

from local.aws_setup import (
    SECRET_NAME,
    TABLE_NAME,
    TIMEOUT_SECONDS,
    create_secret,
    create_table,
    put_credentials,
)
from local.harness import cli_exit, load_handler, patched_environ, powertools_output, print_json
from local.kv_emulator import KVEmulator
from local.lambda_context import LambdaContext
from local.runner import RunConfig, function_environment

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

# Accepted by the emulator only; it is never printed (the test checks that).
DEMO_TOKEN = "demo-token-1f3c9a7e5b2d"
NAMESPACE_TITLE = "kv-sync-demo"
DEFAULT_KEY = "redirect-all-users-to-essentials"
BINARY_KEY = "assets/logo.png"
METADATA_KEY = "maintenance-window"
MISSING_KEY = "no-such-key"
# The first bytes of a PNG file: not valid UTF-8, so the record stores Binary.
PNG_BYTES = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010806000000") + bytes(
    range(256)
)
PREVIEW_CHARS = 72
# The record schema's order (README), for display.
ITEM_ORDER = (
    "pk", "sk", "key", "value", "value_type", "value_encoding", "namespace_id",
    "namespace_name", "metadata", "expiration", "value_sha256", "size_bytes",
    "content_sha256", "created_at", "updated_at", "synced_at", "ttl",
)  # fmt: skip


@dataclass(frozen=True)
class Case:
    """One demo invocation and the outcome it must have."""

    title: str
    event: dict[str, Any]
    expect_success: bool = True
    expect_error: str | None = None
    expect_changed: bool = True  # a success wrote the record (False: already stored)


def seed(kv: KVEmulator, namespace_id: str, now: float) -> None:
    """Put the sample keys: JSON, plain text, binary, metadata with an expiration."""
    kv.put(
        namespace_id,
        DEFAULT_KEY,
        json.dumps({"enabled": True, "target": "https://essentials.example.com", "percent": 100}),
    )
    kv.put(namespace_id, "classic-domain", "classic.example.com")
    kv.put(namespace_id, BINARY_KEY, PNG_BYTES)
    kv.put(
        namespace_id,
        METADATA_KEY,
        "Scheduled maintenance on Saturday 02:00-04:00 UTC. " * 4,
        metadata={"owner": "platform-team", "priority": 2, "notify": ["ops", "support"]},
        expiration=int(now) + 7 * 86_400,
    )


def function_url_event(key_name: str) -> dict[str, Any]:
    """A minimal Function URL (payload format 2.0) POST carrying ``{"key_name": ...}``."""
    now = time.time()
    return {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": "/",
        "rawQueryString": "",
        "headers": {"content-type": "application/json", "host": "demo.lambda-url.local"},
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "demo",
            "domainName": "demo.lambda-url.local",
            "http": {
                "method": "POST",
                "path": "/",
                "protocol": "HTTP/1.1",
                "sourceIp": "127.0.0.1",
                "userAgent": "kv-sync-demo",
            },
            "requestId": "demo-request",
            "routeKey": "$default",
            "stage": "$default",
            "time": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(now)),
            "timeEpoch": int(now * 1000),
        },
        "body": json.dumps({"key_name": key_name}),
        "isBase64Encoded": False,
    }


def cases() -> list[Case]:
    """What the demo invokes, in order."""
    custom = {"key_name": "classic-domain"}
    return [
        Case("Direct invocation, default key: {}", {}),
        Case(f"Direct invocation, custom key: {json.dumps(custom)}", custom),
        Case(f"Binary value: {BINARY_KEY}", {"key_name": BINARY_KEY}),
        Case(f"Metadata and expiration: {METADATA_KEY}", {"key_name": METADATA_KEY}),
        Case(
            f"Function URL POST (payload format 2.0), body {json.dumps(custom)}: "
            "stored already, unchanged, so nothing is written",
            function_url_event("classic-domain"),
            expect_changed=False,
        ),
        Case(
            f"Missing key: {MISSING_KEY}",
            {"key_name": MISSING_KEY},
            expect_success=False,
            expect_error="NOT_FOUND",
        ),
    ]


def document_of(response: Any) -> dict[str, Any]:
    """The response document, also from a Function URL's HTTP response."""
    if isinstance(response, dict) and "statusCode" in response:
        body: dict[str, Any] = json.loads(response.get("body") or "{}")
        return body
    return response if isinstance(response, dict) else {}


def display_response(response: Any) -> Any:
    """The response as shown: a Function URL body is parsed, for readability."""
    if isinstance(response, dict) and "statusCode" in response:
        return {**response, "body": document_of(response)}
    return response


def check(case: Case, response: Any) -> str | None:
    """Why ``response`` is not what ``case`` expects, or ``None`` when it is."""
    document = document_of(response)
    if case.expect_success:
        if document.get("success") is not True:
            return f"expected success, got {document.get('error', {}).get('type', document)}"
        changed = document["data"]["record"]["changed"]
        writes = document["statistics"]["dynamodb_writes"]
        if changed is not case.expect_changed or writes != int(case.expect_changed):
            return f"expected changed={case.expect_changed}, got {changed} with {writes} write(s)"
        return None
    error_type = document.get("error", {}).get("type")
    if document.get("success") is not False or error_type != case.expect_error:
        return f"expected {case.expect_error}, got {error_type or 'success'}"
    return None


def preview(value: Any) -> Any:
    """A DynamoDB attribute made printable: binary as base64, long text truncated."""
    from boto3.dynamodb.types import Binary

    if isinstance(value, Binary | bytes | bytearray):
        raw = bytes(value.value if isinstance(value, Binary) else value)
        encoded = base64.b64encode(raw).decode("ascii")
        shown = encoded if len(encoded) <= PREVIEW_CHARS else encoded[:PREVIEW_CHARS] + "..."
        return f"<binary {len(raw)} bytes, hex {raw[:8].hex()}..., base64 {shown}>"
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, str) and len(value) > PREVIEW_CHARS:
        return f"{value[:PREVIEW_CHARS]}... ({len(value)} chars)"
    if isinstance(value, dict):
        return {key: preview(item) for key, item in value.items()}
    if isinstance(value, list | set | frozenset):
        return [preview(item) for item in value]
    return value


def ordered(item: dict[str, Any]) -> dict[str, Any]:
    """An item with its attributes in the record schema's order, the rest after."""
    first = [name for name in ITEM_ORDER if name in item]
    return {name: item[name] for name in [*first, *sorted(set(item) - set(first))]}


def stored_items(dynamodb: Any, table: str) -> list[dict[str, Any]]:
    """Every item of the table, deserialized and sorted by key."""
    from boto3.dynamodb.types import TypeDeserializer

    deserializer = TypeDeserializer()
    items: list[dict[str, Any]] = []
    for page in dynamodb.get_paginator("scan").paginate(TableName=table):
        for item in page["Items"]:
            items.append({name: deserializer.deserialize(v) for name, v in item.items()})
    return sorted(items, key=lambda item: (item["pk"], item["sk"]))


@contextlib.contextmanager
def moto_server() -> Iterator[str]:
    """moto server on a free loopback port; yields its URL."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    # Werkzeug logs every request to stderr whatever ``verbose`` says.
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server.start()
    try:
        host, port = server.get_host_and_port()
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def offline_aws_environment(endpoint_url: str) -> dict[str, str | None]:
    """AWS settings that can only reach moto: fake keys, no profile or config files."""
    return {
        "AWS_ENDPOINT_URL": endpoint_url,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": None,
        "AWS_SECURITY_TOKEN": None,
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
        "AWS_PROFILE": None,
        # A developer's ~/.aws may hold SSO or credential_process settings; ignore them.
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        "AWS_EC2_METADATA_DISABLED": "true",
    }


def demo_environment(endpoint_url: str, kv_base_url: str, verbose: bool) -> dict[str, str | None]:
    """The environment Terraform gives the function (its defaults), pointed at the emulators."""
    from kv_sync.settings import ENV_VARS

    config = RunConfig(
        table=TABLE_NAME,
        secret_name=SECRET_NAME,
        api_base_url=kv_base_url,
        endpoint_url=endpoint_url,
        verbose=verbose,
    )
    return {
        **dict.fromkeys(ENV_VARS),  # whatever the shell holds: the function's defaults
        **function_environment(config),
        "DEFAULT_KEY_NAME": DEFAULT_KEY,
        "POWERTOOLS_LOG_LEVEL": "INFO",
        "POWERTOOLS_DEV": None,
    }


def run_demo(verbose: bool = False, out: IO[str] | None = None) -> int:
    """Run the whole demo and print it to ``out``.

    Returns
    -------
    int
        0 when every invocation had its expected outcome, otherwise 1.
    """
    import boto3

    out = sys.stdout if out is None else out
    started = time.perf_counter()
    # Function log lines: on stderr with --verbose; otherwise kept, and shown only
    # when something goes wrong.
    logs: IO[str] = sys.stderr if verbose else io.StringIO()
    with contextlib.ExitStack() as stack:
        endpoint = stack.enter_context(moto_server())
        kv = stack.enter_context(KVEmulator(tokens=[DEMO_TOKEN]))
        namespace_id = kv.create_namespace(NAMESPACE_TITLE)
        stack.enter_context(patched_environ(offline_aws_environment(endpoint)))
        stack.enter_context(patched_environ(demo_environment(endpoint, kv.base_url, verbose)))

        dynamodb = boto3.client("dynamodb", endpoint_url=endpoint, region_name="us-east-1")
        secrets = boto3.client("secretsmanager", endpoint_url=endpoint, region_name="us-east-1")
        create_table(dynamodb, TABLE_NAME)
        create_secret(secrets, SECRET_NAME)
        put_credentials(
            secrets,
            {
                "api_token": DEMO_TOKEN,
                "account_id": kv.account_id,
                "kv_namespace_id": namespace_id,
                "kv_namespace": NAMESPACE_TITLE,
            },
            SECRET_NAME,
        )
        seed(kv, namespace_id, time.time())
        print(
            f"moto server {endpoint}, KV emulator {kv.base_url}\n"
            f"table {TABLE_NAME}, secret {SECRET_NAME}, namespace {NAMESPACE_TITLE} "
            f"({namespace_id}), {len(kv.keys(namespace_id))} keys seeded",
            file=out,
        )

        handler = load_handler()
        problems: list[str] = []
        written = unchanged = errors = 0
        demo_cases = cases()
        for number, case in enumerate(demo_cases, start=1):
            with powertools_output(logs):
                response = handler(case.event, LambdaContext(timeout_ms=TIMEOUT_SECONDS * 1000))
            print(f"\n=== [{number}/{len(demo_cases)}] {case.title}", file=out)
            print_json(display_response(response), out)
            document = document_of(response)
            if document.get("success") is not True:
                errors += 1
            elif document["data"]["record"]["changed"]:
                written += 1
            else:
                unchanged += 1
            problem = check(case, response)
            if problem:
                problems.append(f"{case.title}: {problem}")

        items = stored_items(dynamodb, TABLE_NAME)
        print(f"\n=== Stored DynamoDB items ({len(items)}) in {TABLE_NAME}", file=out)
        for item in items:
            print_json(preview(ordered(item)), out)

    print(
        f"\nSummary: {len(demo_cases)} invocations, {written + unchanged} synced ({written} "
        f"written, {unchanged} unchanged), {errors} failed ({len(problems)} unexpectedly), "
        f"{len(items)} items stored, "
        f"{time.perf_counter() - started:.1f} s",
        file=out,
    )
    if not problems:
        return 0
    for problem in problems:
        print(f"FAILED: {problem}", file=sys.stderr)
    if isinstance(logs, io.StringIO):
        print("Function log lines:\n" + logs.getvalue(), file=sys.stderr)
    return 1


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m local.demo``; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m local.demo",
        description="Sync sample KV keys into DynamoDB on local emulators (moto, KV emulator).",
    )
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="also show the function's log lines and EMF metrics (on stderr)",
    )
    args = parser.parse_args(argv)
    return run_demo(verbose=args.verbose)


if __name__ == "__main__":
    cli_exit(main)
