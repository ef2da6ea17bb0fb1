"""Runs inside a fresh interpreter that plays a Lambda execution environment.

Only the standard library is imported here before the code under test, so the
child pays exactly what the function (or the floor) pays. The path holds the
unpacked zip and the SDK (``PYTHONPATH``), then the standard library, and last
the repository root, for the one fake Lambda context (``local.lambda_context``,
standard library only), which therefore shadows nothing. Modes:

``cold-handler``  import ``kv_sync.handler`` and serve one scheduled invocation.
``cold-floor``    import boto3 and requests, create the DynamoDB and Secrets
                  Manager clients, then do the same I/O raw: one GetSecretValue,
                  the same bulk-get POST to the KV emulator, one consistent
                  BatchGetItem of a copy of the function's record.
``warm-handler`` / ``warm-floor``
                  the same, then serve ``{"n": N}`` commands read from stdin,
                  each answered with N more invocations' latencies (the warm
                  floor: the bulk get and the read only, its secret read once).

Results go as JSON lines to the file descriptor in ``BENCH_RESULT_FD``; stdout
is the function's log stream, as in Lambda.
"""

from __future__ import annotations

import time

T_MAIN = time.monotonic()

import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
from typing import Any  # noqa: E402

# benchmarks/_support/child.py -> the repository root, appended last (os.path: no
# pathlib import before the code under test).
_here = os.path.abspath(__file__)  # noqa: PTH100
sys.path.append(os.path.dirname(os.path.dirname(os.path.dirname(_here))))  # noqa: PTH120

from local.lambda_context import LambdaContext  # noqa: E402

SCHEDULED_EVENT = {
    "version": "0",
    "id": "53dc4d37-cffa-4f76-80c9-8b7d4a4d2eaa",
    "detail-type": "Scheduled Event",
    "source": "aws.events",
    "account": "123456789012",
    "time": "2025-01-01T00:00:00Z",
    "region": "us-east-1",
    "resources": ["arn:aws:events:us-east-1:123456789012:rule/kv-sync-schedule"],
    "detail": {},
}

# The floor's own item: a copy of the function's record (see stack.py).
FLOOR_PK, FLOOR_SK = "FLOOR", "KEY#floor"
# What the function reads of a stored record (kv_sync.store), read the same way.
STATE_PROJECTION = "sk, content_sha256, synced_at, created_at, #ttl"


def _trace_header() -> str:
    root = f"1-{int(time.time()):08x}-{os.urandom(12).hex()}"
    return f"Root={root};Parent={os.urandom(8).hex()};Sampled=1"


def _memory() -> dict[str, int]:
    fields = {}
    with open("/proc/self/status") as status:  # noqa: PTH123 - stdlib only, no pathlib cost
        for line in status:
            name, _, rest = line.partition(":")
            if name in {"VmRSS", "VmHWM"}:
                fields[name] = int(rest.split()[0])
    return {"rss_kb": fields.get("VmRSS", 0), "hwm_kb": fields.get("VmHWM", 0)}


class Handler:
    """The real function, as the Lambda runtime drives it."""

    def __init__(self) -> None:
        from kv_sync import handler

        self._handler = handler.lambda_handler

    def invoke(self) -> dict[str, Any]:
        os.environ["_X_AMZN_TRACE_ID"] = _trace_header()
        response: dict[str, Any] = self._handler(SCHEDULED_EVENT, LambdaContext())
        return response

    @staticmethod
    def check(response: dict[str, Any]) -> dict[str, Any]:
        ok = response.get("success") is True
        summary: dict[str, Any] = {"ok": ok}
        if ok:
            summary["changed"] = response["data"]["record"]["changed"]
            summary["api_calls"] = response["statistics"]["cloudflare_api_calls"]
            summary["writes"] = response["statistics"]["dynamodb_writes"]
        else:
            summary["error"] = response.get("error")
        return summary


class Floor:
    """The bare I/O the function does, with nothing around it."""

    def __init__(self) -> None:
        import boto3
        import requests

        self.dynamodb = boto3.client("dynamodb")
        self.secrets = boto3.client("secretsmanager")
        self.session = requests.Session()
        self.table = os.environ["DYNAMODB_TABLE_NAME"]
        self.url = (
            f"{os.environ['CLOUDFLARE_API_BASE_URL']}/accounts/{os.environ['BENCH_KV_ACCOUNT_ID']}"
            f"/storage/kv/namespaces/{os.environ['BENCH_KV_NAMESPACE_ID']}/bulk/get"
        )
        # The request the function makes: the value, its metadata and expiration.
        self.body = {"keys": [os.environ["DEFAULT_KEY_NAME"]], "type": "text", "withMetadata": True}
        self.headers: dict[str, str] = {}

    def read_secret(self) -> None:
        secret = self.secrets.get_secret_value(SecretId=os.environ["SECRETS_MANAGER_SECRET_NAME"])
        self.headers = {
            "Authorization": f"Bearer {json.loads(secret['SecretString'])['api_token']}"
        }

    def invoke(self) -> dict[str, Any]:
        if not self.headers:
            self.read_secret()
        response = self.session.post(
            self.url, headers=self.headers, json=self.body, timeout=(3, 27)
        )
        response.raise_for_status()
        # The same consistent read the function makes of its stored record, on a
        # copy of it: what the server does for it is part of the bare I/O.
        found = self.dynamodb.batch_get_item(
            RequestItems={
                self.table: {
                    "Keys": [{"pk": {"S": FLOOR_PK}, "sk": {"S": FLOOR_SK}}],
                    "ConsistentRead": True,
                    "ProjectionExpression": STATE_PROJECTION,
                    "ExpressionAttributeNames": {"#ttl": "ttl"},
                }
            }
        )
        return {"success": len(found["Responses"][self.table]) == 1}

    @staticmethod
    def check(response: dict[str, Any]) -> dict[str, Any]:
        return {"ok": response.get("success") is True}


class AwsCalls:
    """Counts every botocore client created from now on, and each call they make."""

    def __init__(self) -> None:
        import botocore.session

        self.clients = 0
        self.operations: dict[str, int] = {}
        original = botocore.session.Session.create_client
        calls = self

        def create_client(session: Any, *args: Any, **kwargs: Any) -> Any:
            calls.clients += 1
            client = original(session, *args, **kwargs)
            client.meta.events.register("before-call", calls.count)
            return client

        botocore.session.Session.create_client = create_client

    def count(self, model: Any, **_: Any) -> None:
        self.operations[model.name] = self.operations.get(model.name, 0) + 1


def main() -> int:
    mode = sys.argv[1]
    out = os.fdopen(int(os.environ["BENCH_RESULT_FD"]), "w", buffering=1)
    kind, _, what = mode.partition("-")
    aws = AwsCalls() if kind == "warm" else None

    profile_path = os.environ.get("BENCH_PROFILE")  # cProfile init + first invocation
    if profile_path:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    target: Handler | Floor = Handler() if what == "handler" else Floor()
    t_init, cpu_init = time.monotonic(), time.process_time()
    first = target.invoke()
    t_first, cpu_first = time.monotonic(), time.process_time()
    if profile_path:
        profiler.disable()
        profiler.dump_stats(profile_path)
    result = {
        "trace_header": os.environ.get("_X_AMZN_TRACE_ID", ""),
        "t_main": T_MAIN,
        "t_init": t_init,
        "t_response": t_first,
        "cpu_init": cpu_init,
        "cpu_response": cpu_first,
        **target.check(first),
        "clients": aws.clients if aws else 0,
        **_memory(),
    }
    out.write(json.dumps(result) + "\n")
    if kind == "cold" or aws is None:
        return 0

    clock = time.perf_counter
    if profile_path:  # and the warm invocations, separately
        profiler = cProfile.Profile()
        profiler.enable()
    for line in sys.stdin:
        command = json.loads(line)
        clients_before, operations_before = aws.clients, dict(aws.operations)
        latencies = []
        headers = []
        failures = 0
        totals = {"api_calls": 0, "writes": 0, "changed": 0}
        cpu_started = time.process_time()
        for _ in range(int(command["n"])):
            started = clock()
            response = target.invoke()
            latencies.append((clock() - started) * 1000)
            headers.append(os.environ.get("_X_AMZN_TRACE_ID", ""))
            summary = target.check(response)
            if not summary["ok"]:
                failures += 1
            for name in totals:
                totals[name] += int(summary.get(name, 0))
        operations = {
            name: count - operations_before.get(name, 0)
            for name, count in aws.operations.items()
            if count > operations_before.get(name, 0)
        }
        reply = {
            "cpu_ms": (time.process_time() - cpu_started) * 1000,
            "latencies_ms": latencies,
            "trace_headers": headers,
            "failures": failures,
            "new_clients": aws.clients - clients_before,
            "aws_operations": operations,
            **totals,
            **_memory(),
        }
        if command.get("gc"):
            import gc

            gc.collect()
            reply["objects"] = len(gc.get_objects())
        out.write(json.dumps(reply) + "\n")
    if profile_path:
        profiler.disable()
        profiler.dump_stats(profile_path + ".warm")
    return 0


if __name__ == "__main__":
    sys.exit(main())
