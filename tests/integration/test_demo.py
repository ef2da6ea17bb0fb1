"""``make demo`` (``python -m local.demo``) runs end to end, offline, and prints what it should."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from local.demo import BINARY_KEY, DEFAULT_KEY, DEMO_TOKEN, METADATA_KEY, MISSING_KEY

ROOT = Path(__file__).resolve().parents[2]


def run_demo(*args: str) -> subprocess.CompletedProcess[str]:
    """``python -m local.demo`` from a shell that points AWS and the function elsewhere."""
    env = dict(os.environ)
    # Whatever the developer's shell points AWS at, the demo must only reach moto.
    env["AWS_ENDPOINT_URL"] = "http://127.0.0.1:9"
    env["AWS_PROFILE"] = "kv-sync-demo-no-such-profile"
    # ... and whatever it sets for the function, the demo runs with Terraform's defaults.
    env["DELETE_MISSING"] = "not-a-boolean"
    env["DEFAULT_KEY_NAME"] = "some-other-key"
    return subprocess.run(
        [sys.executable, "-m", "local.demo", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def sections(output: str) -> dict[str, list[Any]]:
    """Map each ``=== title`` header to the JSON documents printed under it."""
    found: dict[str, list[Any]] = {}
    decoder = json.JSONDecoder()
    for chunk in output.split("\n=== ")[1:]:
        title, _, body = chunk.partition("\n")
        body = body.split("\nSummary:")[0]
        documents = []
        position = 0
        while body[position:].strip():
            position += len(body[position:]) - len(body[position:].lstrip())
            document, position = decoder.raw_decode(body, position)
            documents.append(document)
        found[title] = documents
    return found


@pytest.fixture(scope="module")
def demo() -> subprocess.CompletedProcess[str]:
    return run_demo()


def _by_title(found: dict[str, list[Any]], fragment: str) -> Any:
    matches = [docs for title, docs in found.items() if fragment in title]
    assert len(matches) == 1, (fragment, list(found))
    return matches[0][0]


def test_demo_succeeds_with_clean_output(demo: subprocess.CompletedProcess[str]) -> None:
    # GIVEN the demo's run (fixture) THEN it exited 0
    result = demo
    assert result.returncode == 0, result.stdout + result.stderr
    # AND its output is clean: no Powertools log lines or EMF documents, nothing on stderr.
    assert result.stderr == ""
    assert '"level"' not in result.stdout
    assert '"_aws"' not in result.stdout


def test_demo_shows_success_documents(demo: subprocess.CompletedProcess[str]) -> None:
    # GIVEN the demo's output
    found = sections(demo.stdout)

    # THEN the first sync of each seeded key stored it
    default = _by_title(found, "default key")
    assert default["success"] is True
    assert default["data"]["key_name"] == DEFAULT_KEY
    assert default["data"]["record"]["value_type"] == "json"
    assert default["data"]["lambda"]["cold_start"] is True
    classic = _by_title(found, "custom key")
    assert classic["data"]["key_name"] == "classic-domain"
    assert classic["data"]["record"]["value_type"] == "string"
    for document in (
        default,
        classic,
        _by_title(found, BINARY_KEY),
        _by_title(found, METADATA_KEY),
    ):
        assert document["data"]["record"]["changed"] is True
        assert document["statistics"]["dynamodb_writes"] == 1
    assert _by_title(found, BINARY_KEY)["data"]["record"]["value_type"] == "binary"


def test_demo_resyncs_an_unchanged_key_through_the_function_url_without_writing(
    demo: subprocess.CompletedProcess[str],
) -> None:
    # GIVEN the Function URL request, for the key the direct invocation stored before it
    url = _by_title(sections(demo.stdout), "Function URL")

    # THEN it is an HTTP response whose body says the record was already up to date
    assert url["statusCode"] == 200
    assert url["headers"]["content-type"] == "application/json"
    body = url["body"]
    assert body["success"] is True
    assert body["data"]["message"] == "Synced 'classic-domain': unchanged"
    assert body["data"]["record"]["changed"] is False
    assert body["statistics"]["dynamodb_writes"] == 0


def test_demo_shows_not_found(demo: subprocess.CompletedProcess[str]) -> None:
    # GIVEN the sync of a key that is not in KV THEN it is a NOT_FOUND document
    missing = _by_title(sections(demo.stdout), MISSING_KEY)
    assert missing["success"] is False
    assert missing["error"]["type"] == "NOT_FOUND"
    assert missing["error"]["is_retryable"] is False


def test_demo_shows_stored_items(demo: subprocess.CompletedProcess[str]) -> None:
    # GIVEN the items the demo printed
    found = sections(demo.stdout)
    (title,) = [t for t in found if t.startswith("Stored DynamoDB items")]
    items = {item["sk"]: item for item in found[title]}

    # THEN there is one per seeded key, none for the missing one
    assert set(items) == {
        f"KEY#{k}" for k in (DEFAULT_KEY, "classic-domain", BINARY_KEY, METADATA_KEY)
    }
    for item in items.values():
        assert item["pk"].startswith("NAMESPACE#")
        assert item["namespace_name"] == "kv-sync-demo"
    assert items[f"KEY#{DEFAULT_KEY}"]["value_type"] == "json"
    assert items[f"KEY#{BINARY_KEY}"]["value"].startswith("<binary ")
    window = items[f"KEY#{METADATA_KEY}"]
    assert window["metadata"]["owner"] == "platform-team"
    assert window["ttl"] == window["expiration"]
    assert "chars)" in window["value"]  # long values are truncated for display
    # AND the unchanged re-sync left classic-domain as its first sync wrote it
    classic = items["KEY#classic-domain"]
    assert classic["created_at"] == classic["updated_at"] == classic["synced_at"]
    assert (
        "Summary: 6 invocations, 5 synced (4 written, 1 unchanged), 1 failed (0 unexpectedly), "
        "4 items stored" in demo.stdout
    )


def test_demo_never_prints_the_token(demo: subprocess.CompletedProcess[str]) -> None:
    # GIVEN the demo's output THEN the Cloudflare token is nowhere in it
    assert DEMO_TOKEN not in demo.stdout + demo.stderr


def test_verbose_shows_function_logs_and_metrics_on_stderr() -> None:
    # WHEN the demo runs with --verbose
    result = run_demo("--verbose")

    # THEN the function's log lines and EMF documents are on stderr, never on stdout
    assert result.returncode == 0, result.stdout + result.stderr
    assert '"message":"Sync finished"' in result.stderr
    assert '"_aws"' in result.stderr
    assert '"_aws"' not in result.stdout
    assert DEMO_TOKEN not in result.stdout + result.stderr
