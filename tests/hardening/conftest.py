"""Hardening fixtures: the stack, a traced Lambda-like container, an AWS fault proxy, a
serialised moto.

- ``traced`` is a warm container running the real handler in a process of its own, as
  Lambda runs it with active tracing (Powertools' Tracer on the real X-Ray SDK, sending
  to a UDP socket of the test's standing in for the X-Ray daemon). Each invocation's
  ``Outcome`` holds the reply and everything the function let out: log lines, EMF
  metric documents, raised errors and X-Ray documents (``tests.support.traced``).
- ``aws_proxy`` is an HTTP proxy on loopback in front of moto server, injecting per
  operation the faults moto cannot produce, as real wire responses
  (``tests.support.aws_fault_proxy``).
- ``serial_moto_url`` is a moto server, in a process of its own, that handles one
  request at a time (``tests.support.serial_moto``). Real DynamoDB applies a conditional
  write atomically; moto's threaded server does not (two UpdateItems can both pass their
  condition before either applies), so the concurrent load test runs against this one:
  a lost update it finds is ours, not moto's.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.aws_fault_proxy import AwsFaultProxy
from tests.support.stack import Stack, deployed
from tests.support.traced import TracedFunction

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def stack(
    moto_server_url: str, kv_emulator: Any, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Stack]:
    """A fresh table and secret in moto server, a namespace in the emulator."""
    with deployed(moto_server_url, kv_emulator, monkeypatch, prefix="hard") as built:
        yield built


@pytest.fixture(scope="module")
def traced() -> Iterator[TracedFunction]:
    """A warm, traced container for the module's invocations (logs at DEBUG)."""
    from kv_sync.settings import ENV_VARS

    base = {
        name: value
        for name, value in os.environ.items()
        if name not in ENV_VARS and not name.startswith(("AWS_ENDPOINT_URL", "_X_AMZN"))
    }
    base["POWERTOOLS_LOG_LEVEL"] = "DEBUG"
    with TracedFunction(base, fast_aws_retries=True) as function:
        yield function


@pytest.fixture
def aws_proxy(stack: Stack, moto_server_url: str) -> Iterator[AwsFaultProxy]:
    """A fault proxy in front of moto server; give the function ``AWS_ENDPOINT_URL=proxy.url``."""
    proxy = AwsFaultProxy(moto_server_url).start()
    try:
        yield proxy
    finally:
        proxy.stop()


@pytest.fixture(scope="module")
def serial_moto_url() -> Iterator[str]:
    """A moto server in its own process, applying one request at a time."""
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.support.serial_moto"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("PORT "), f"serial moto server did not start: {line!r}"
        yield f"http://127.0.0.1:{int(line.split()[1])}"
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
