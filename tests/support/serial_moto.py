"""A moto server that applies one request at a time, run as its own process.

Real DynamoDB applies a conditional write atomically. moto's threaded server does not:
two UpdateItems can both pass their condition before either applies, which would make
a lost update found by the load test moto's, not ours. A single-threaded server applies
one request at a time, which restores the guarantee (and, without threads fighting over
the GIL, is faster under load). Running it in its own process gives it its own GIL, so
it does not compete with the KV emulator and the test for one core.

Usage: ``python -m tests.support.serial_moto`` prints ``PORT <n>`` once listening.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any


class ByTarget:
    """Send JSON-protocol calls straight to their service's app.

    moto's dispatcher works out the service of every request anew (listing its own
    package directory each time); for DynamoDB and Secrets Manager the ``X-Amz-Target``
    header says it outright, which saves about a fifth of each call.
    """

    def __init__(self, fallback: Callable[..., Iterable[bytes]]) -> None:
        from moto.moto_server.werkzeug_app import create_backend_app

        self._fallback = fallback
        self._apps = {
            "DynamoDB_": create_backend_app("dynamodb"),
            "secretsmanager.": create_backend_app("secretsmanager"),
        }

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        target = environ.get("HTTP_X_AMZ_TARGET", "")
        for prefix, app in self._apps.items():
            if target.startswith(prefix):
                return app(environ, start_response)
        return self._fallback(environ, start_response)


def main() -> None:
    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from werkzeug.serving import make_server

    # werkzeug logs every request at INFO: thousands of lines of load for nothing
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    app = ByTarget(DomainDispatcherApplication(create_backend_app))
    # Not threaded: one request at a time, and HTTP/1.0 (one connection per request),
    # so a keep-alive client cannot hold the server; no GIL contention either.
    server = make_server("127.0.0.1", 0, app, threaded=False, request_handler=MotoRequestHandler)
    print(f"PORT {server.server_port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
