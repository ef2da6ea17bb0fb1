"""Runs inside a fresh interpreter that plays a Lambda execution environment.

Only the standard library is imported here before the code under test, so the
child pays exactly what the function (or the floor) pays. Modes:

``cold-handler``  import ``handler`` and serve one scheduled invocation.
``cold-floor``    import boto3 and requests, create the DynamoDB and Secrets
                  Manager clients, then do the same I/O raw: one GetSecretValue,
                  one GET to the KV emulator, one UpdateItem.
``warm-handler`` / ``warm-floor``
                  the same, then serve ``{"n": N}`` commands read from stdin,
                  each answered with N more invocations' latencies.

Results go as JSON lines to the file descriptor in ``BENCH_RESULT_FD``; stdout
is the function's log stream, as in Lambda.
"""

from __future__ import annotations

import time

T_MAIN = time.monotonic()

import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
import uuid  # noqa: E402
from typing import Any  # noqa: E402

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


class LambdaContext:
    """What the Lambda runtime passes as ``context``."""

    function_name = "cloudflare-data-sync"
    function_version = "$LATEST"
    memory_limit_in_mb = 512
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:cloudflare-data-sync"
    log_group_name = "/aws/lambda/cloudflare-data-sync"
    log_stream_name = "2025/01/01/[$LATEST]bench"

    def __init__(self, timeout_ms: int = 300_000) -> None:
        self.aws_request_id = str(uuid.uuid4())
        self._ends = time.monotonic() + timeout_ms / 1000

    def get_remaining_time_in_millis(self) -> int:
        return max(int((self._ends - time.monotonic()) * 1000), 0)


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
        import handler

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
            f"/storage/kv/namespaces/{os.environ['BENCH_KV_NAMESPACE_ID']}"
            f"/values/{os.environ['DEFAULT_KEY_NAME']}"
        )
        self.headers: dict[str, str] = {}

    def read_secret(self) -> None:
        secret = self.secrets.get_secret_value(SecretId=os.environ["SECRETS_MANAGER_SECRET_NAME"])
        self.headers = {
            "Authorization": f"Bearer {json.loads(secret['SecretString'])['api_token']}"
        }

    def invoke(self) -> dict[str, Any]:
        if not self.headers:
            self.read_secret()
        response = self.session.get(self.url, headers=self.headers, timeout=(3, 27))
        response.raise_for_status()
        # The same conditional refresh the function makes for an unchanged value, on
        # a copy of its record: what the server does for it is part of the bare I/O.
        now = time.time()
        self.dynamodb.update_item(
            TableName=self.table,
            Key={"pk": {"S": FLOOR_PK}, "sk": {"S": FLOOR_SK}},
            UpdateExpression="SET #synced_at = :synced_at, #ttl = :ttl",
            ConditionExpression="#content = :content AND #synced_at < :synced_at",
            ExpressionAttributeNames={
                "#synced_at": "synced_at",
                "#ttl": "ttl",
                "#content": "content_sha256",
            },
            ExpressionAttributeValues={
                ":synced_at": {
                    "S": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now))
                    + f".{int(now * 1e6) % 1_000_000:06d}Z"
                },
                ":ttl": {"N": str(int(now) + 30 * 86_400)},
                ":content": {"S": os.environ["BENCH_FLOOR_CONTENT_SHA256"]},
            },
        )
        return {"success": True}

    @staticmethod
    def check(response: dict[str, Any]) -> dict[str, Any]:
        return {"ok": response.get("success") is True}


def _count_clients() -> list[int]:
    """Count every botocore client created from now on (boto3's included)."""
    import botocore.session

    created = [0]
    original = botocore.session.Session.create_client

    def create_client(self: Any, *args: Any, **kwargs: Any) -> Any:
        created[0] += 1
        return original(self, *args, **kwargs)

    botocore.session.Session.create_client = create_client
    return created


def main() -> int:
    mode = sys.argv[1]
    out = os.fdopen(int(os.environ["BENCH_RESULT_FD"]), "w", buffering=1)
    kind, _, what = mode.partition("-")
    clients = _count_clients() if kind == "warm" else [0]

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
        "clients": clients[0],
        **_memory(),
    }
    out.write(json.dumps(result) + "\n")
    if kind == "cold":
        return 0

    clock = time.perf_counter
    if profile_path:  # and the warm invocations, separately
        profiler = cProfile.Profile()
        profiler.enable()
    for line in sys.stdin:
        command = json.loads(line)
        before = clients[0]
        latencies = []
        failures = 0
        totals = {"api_calls": 0, "writes": 0, "changed": 0}
        cpu_started = time.process_time()
        for _ in range(int(command["n"])):
            started = clock()
            response = target.invoke()
            latencies.append((clock() - started) * 1000)
            summary = target.check(response)
            if not summary["ok"]:
                failures += 1
            for name in totals:
                totals[name] += int(summary.get(name, 0))
        reply = {
            "cpu_ms": (time.process_time() - cpu_started) * 1000,
            "latencies_ms": latencies,
            "failures": failures,
            "new_clients": clients[0] - before,
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
