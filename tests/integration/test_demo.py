"""``make demo`` (``python -m local.demo``) runs end to end, offline, and prints what it should."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from local.demo import BINARY_KEY, DEFAULT_KEY, DEMO_TOKEN, METADATA_KEY, MISSING_KEY

ROOT = Path(__file__).resolve().parents[2]


def run_demo(*args: str) -> tuple[subprocess.CompletedProcess[str], float]:
    env = dict(os.environ)
    # Whatever the developer's shell points AWS at, the demo must only reach moto.
    env["AWS_ENDPOINT_URL"] = "http://127.0.0.1:9"
    env["AWS_PROFILE"] = "kv-sync-demo-no-such-profile"
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "local.demo", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return result, time.perf_counter() - started


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
def demo() -> tuple[subprocess.CompletedProcess[str], float]:
    return run_demo()


def _by_title(found: dict[str, list[Any]], fragment: str) -> Any:
    matches = [docs for title, docs in found.items() if fragment in title]
    assert len(matches) == 1, (fragment, list(found))
    return matches[0][0]


def test_demo_succeeds_quickly(demo: tuple[subprocess.CompletedProcess[str], float]) -> None:
    result, elapsed = demo
    assert result.returncode == 0, result.stdout + result.stderr
    assert elapsed < 30
    # Clean output: no Powertools log lines or EMF documents, nothing on stderr.
    assert result.stderr == ""
    assert '"level"' not in result.stdout
    assert '"_aws"' not in result.stdout


def test_demo_shows_success_documents(demo: tuple[subprocess.CompletedProcess[str], float]) -> None:
    found = sections(demo[0].stdout)
    default = _by_title(found, "default key")
    assert default["success"] is True
    assert default["data"]["key_name"] == DEFAULT_KEY
    assert default["data"]["record"]["value_type"] == "json"
    assert default["data"]["lambda"]["cold_start"] is True

    classic = _by_title(found, "custom key")
    assert classic["success"] is True
    assert classic["data"]["key_name"] == "classic-domain"
    assert classic["data"]["record"]["value_type"] == "string"

    assert _by_title(found, BINARY_KEY)["data"]["record"]["value_type"] == "binary"
    assert _by_title(found, METADATA_KEY)["success"] is True

    url = _by_title(found, "Function URL")
    assert url["statusCode"] == 200
    assert url["headers"]["content-type"] == "application/json"
    assert url["body"]["success"] is True


def test_demo_shows_not_found(demo: tuple[subprocess.CompletedProcess[str], float]) -> None:
    missing = _by_title(sections(demo[0].stdout), MISSING_KEY)
    assert missing["success"] is False
    assert missing["error"]["type"] == "NOT_FOUND"
    assert missing["error"]["is_retryable"] is False


def test_demo_shows_stored_items(demo: tuple[subprocess.CompletedProcess[str], float]) -> None:
    found = sections(demo[0].stdout)
    (title,) = [t for t in found if t.startswith("Stored DynamoDB items")]
    items = {item["sk"]: item for item in found[title]}
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
    assert "Summary: 6 invocations, 5 synced, 1 failed (0 unexpectedly), 4 items stored" in (
        demo[0].stdout
    )


def test_demo_never_prints_the_token(demo: tuple[subprocess.CompletedProcess[str], float]) -> None:
    result = demo[0]
    assert DEMO_TOKEN not in result.stdout + result.stderr


def test_verbose_shows_function_logs_and_metrics_on_stderr() -> None:
    result, _ = run_demo("--verbose")
    assert result.returncode == 0, result.stdout + result.stderr
    assert '"message":"Sync finished"' in result.stderr
    assert '"_aws"' in result.stderr
    assert '"_aws"' not in result.stdout
    assert DEMO_TOKEN not in result.stdout + result.stderr
