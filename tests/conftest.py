"""Fixtures shared by every test layer.

Unit tests use moto's in-process ``mock_aws`` and ``responses``; integration tests
talk over real sockets to moto server and the KV emulator in ``local/``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

# Never let a test reach a real AWS account, whatever the developer's shell holds.
_FAKE_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SECURITY_TOKEN": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
}
for _name, _value in _FAKE_AWS_ENV.items():
    os.environ[_name] = _value
os.environ.pop("AWS_PROFILE", None)
os.environ.pop("AWS_ENDPOINT_URL", None)
# Powertools: no tracing outside Lambda, metrics namespace for EMF validation.
os.environ.setdefault("POWERTOOLS_TRACE_DISABLED", "true")
os.environ.setdefault("POWERTOOLS_METRICS_NAMESPACE", "KvSyncTests")
os.environ.setdefault("POWERTOOLS_SERVICE_NAME", "kv-sync")


@pytest.fixture(scope="session")
def moto_server_url() -> Iterator[str]:
    """A moto server on a free loopback port, shared by the whole session."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def kv_emulator() -> Iterator[Any]:
    """A started Cloudflare KV API emulator accepting the token ``test-token``.

    It has one namespace, titled ``kv-sync-test``; its id is ``emulator.test_namespace_id``.
    """
    from local.kv_emulator import KVEmulator

    emulator = KVEmulator(tokens=["test-token"])
    with emulator:
        emulator.test_namespace_id = emulator.create_namespace("kv-sync-test")  # type: ignore[attr-defined]
        yield emulator
