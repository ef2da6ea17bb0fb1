"""X-Ray traces as the daemon receives them, from the function run as in Lambda.

Tracing is Powertools' Tracer on the real X-Ray SDK, which patches botocore and
requests; the function runs in a container of its own with active tracing
(``tests.support.traced``). What an operator relies on: one intact tree per
invocation under Lambda's segment; the function's blocks as ``## name`` subsegments,
annotated so that traces can be found by key and namespace; every AWS and Cloudflare
call traced under the block that made it, also from worker threads; no response or
value captured.
"""

from __future__ import annotations

import json

from tests.support.iam import WRITE_OPERATIONS
from tests.support.stack import TOKEN, Stack
from tests.support.traced import Outcome, TracedFunction

BLOCKS = {"## secrets.read", "## cloudflare.fetch", "## dynamodb.write"}


def children(outcome: Outcome, block: str) -> list[dict[str, object]]:
    """The subsegments directly under every subsegment named ``block``."""
    parents = {e["id"] for e in outcome.subsegments() if e["name"] == block}
    return [e for e in outcome.subsegments() if e.get("parent_id") in parents]


def aws_calls(outcome: Outcome, block: str | None = None) -> list[str]:
    """The AWS operations traced directly under ``block`` (``None``: anywhere)."""
    entities = outcome.subsegments() if block is None else children(outcome, block)
    return [
        str(e["aws"]["operation"])  # type: ignore[index]
        for e in entities
        if e.get("namespace") == "aws"
    ]


def test_single_key_sync_is_one_annotated_tree(stack: Stack, traced: TracedFunction):
    # GIVEN a key in KV and a container that has not read the secret yet
    stack.emulator.put(stack.namespace_id, "flag", "value-7f3c9e")

    # WHEN the key is synced through the Function URL path
    outcome = traced.invoke({"key_name": "flag"}, env=stack.env(), reset=True)

    # THEN one intact tree: the handler, its blocks, and each call under its block
    assert outcome.document["success"] is True
    outcome.assert_traced()
    assert outcome.names() >= BLOCKS
    assert aws_calls(outcome, "## secrets.read") == ["GetSecretValue"]
    [write] = aws_calls(outcome, "## dynamodb.write")
    assert write in WRITE_OPERATIONS
    assert sorted(aws_calls(outcome)) == sorted(["GetSecretValue", "BatchGetItem", write])
    [request] = [e for e in children(outcome, "## cloudflare.fetch") if e["namespace"] == "remote"]
    assert request["http"]["request"]["url"].endswith("/bulk/get")  # type: ignore[index]
    # AND the run can be found by its key and namespace
    annotations = outcome.annotations()
    assert any(a.get("key_name") == "flag" for a in annotations)
    assert any(a.get("namespace_id") == stack.namespace_id for a in annotations)
    # AND neither the response nor the value nor the token was recorded
    recorded = json.dumps(outcome.traces)
    assert "metadata" not in recorded
    assert "value-7f3c9e" not in recorded
    outcome.assert_no_secrets(TOKEN, stack.secret_string())


def test_failed_call_is_recorded_on_its_block(stack: Stack, traced: TracedFunction):
    # GIVEN Cloudflare refusing the key's namespace
    stack.emulator.put(stack.namespace_id, "flag", "on")
    stack.emulator.add_fault(status=404, times=-1, path_contains="/bulk/get")

    # WHEN the key is synced
    outcome = traced.invoke({"key_name": "flag"}, env=stack.env())

    # THEN the fetch block recorded the error the reply reports, and the tree is intact
    assert outcome.document["error"]["type"] == "CONFIGURATION_ERROR"
    outcome.assert_traced()
    (fetch,) = [e for e in outcome.subsegments() if e["name"] == "## cloudflare.fetch"]
    assert fetch.get("fault") or fetch.get("error")
    messages = [exc["message"] for exc in fetch["cause"]["exceptions"]]
    assert messages == [outcome.document["error"]["message"]]


def test_multi_key_run_traces_every_call_from_its_worker_threads(
    stack: Stack, traced: TracedFunction
):
    # GIVEN 150 keys: two bulk gets, fetched side by side, and 150 writes, 8 at a time
    for number in range(150):
        stack.emulator.put(stack.namespace_id, f"load/{number:03d}", f"value {number}")

    # WHEN the prefix is synced
    outcome = traced.invoke({"prefix": "load/"}, env=stack.env())

    # THEN one intact tree, even for calls made on the function's worker threads
    statistics = outcome.document["statistics"]
    assert statistics["records_written"] == 150
    outcome.assert_traced()
    assert {"## cloudflare.list", "## cloudflare.fetch", "## dynamodb.write"} <= outcome.names()
    # AND every Cloudflare request and every write was traced, under its block
    remote = [e for e in outcome.subsegments() if e.get("namespace") == "remote"]
    assert len(remote) == statistics["cloudflare_api_calls"]
    writes = aws_calls(outcome, "## dynamodb.write")
    assert len(writes) == 150 and set(writes) <= set(WRITE_OPERATIONS)
    assert aws_calls(outcome).count("Query") == statistics["dynamodb_batches"]
    outcome.assert_no_secrets(TOKEN)
