"""Warm path: 1,000 invocations of one key in one warm container, vs a floor.

The container is one long-lived interpreter on the unpacked deployment zip, in
the same Lambda-like environment as the cold start benchmark (X-Ray on, a new
sampled trace header per invocation, as the Lambda runtime sets it). Each
invocation is a scheduled re-sync of an unchanged key: one POST bulk/get to the
KV emulator and one UpdateItem to moto server.

The floor, in the same run, batch by batch alternating with it: another
long-lived interpreter doing the bare I/O, one raw ``requests`` GET to the
emulator and one raw ``update_item`` to moto server.

Targets: p50 <= 1.2 x the floor's p50; exactly one TCP connection to the
emulator over the container's life; no boto3 client created after the first
invocation.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks._support import common, package, procs, xray  # noqa: E402
from benchmarks._support.stack import start_stack  # noqa: E402

TARGET_P50_RATIO = 1.2
BATCH = 100


def main() -> int:
    parser = common.parser(__doc__ or "")
    parser.add_argument("--invocations", type=int, default=1000, help="warm invocations (1000)")
    parser.add_argument("--precompile", action="store_true", help="byte-compile the zip first")
    parser.add_argument(
        "--env",
        metavar="NAME=VALUE",
        action="append",
        default=[],
        help="set a variable for the function (e.g. POWERTOOLS_TRACE_DISABLED=true)",
    )
    args = common.parse(parser)
    total = 20 if args.quick else args.invocations
    batch = min(BATCH, total)
    print("Warm path: one warm container, scheduled re-sync of an unchanged key (X-Ray on)")
    common.print_machine()
    print(f"invocations: {total} of each after the first (cold) one, in batches of {batch}")

    with tempfile.TemporaryDirectory(prefix="kv-sync-warm-") as work_dir:
        work = Path(work_dir)
        task, runtime = package.prepare(work)
        if args.precompile:
            package.precompile(task)
        log = work / "children.log"
        with start_stack() as stack, xray.XRaySink() as sink:
            env = {
                **stack.aws_env(),
                **package.lambda_env(
                    task, runtime, trace_header=xray.trace_header(), xray_address=sink.address
                ),
                **dict(item.split("=", 1) for item in args.env),
            }
            try:
                figures = measure(stack, sink, env, task, log, total, batch)
            except RuntimeError:
                print(log.read_text()[-4000:], file=sys.stderr)
                raise
    if figures["failures"]:
        print(f"error: {figures['failures']} invocations failed", file=sys.stderr)
        return 1
    return report(figures, strict=args.strict)


def measure(
    stack: Any,
    sink: xray.XRaySink,
    env: dict[str, str],
    task: Path,
    log: Path,
    total: int,
    batch: int,
) -> dict[str, Any]:
    connections_before = stack.connections()
    handler = procs.Child("warm-handler", env, task, log)
    floor: procs.Child | None = None
    try:
        first = handler.result()
        if not first.get("ok"):
            raise RuntimeError(f"the first invocation failed: {first}")
        handler_connections = stack.connections() - connections_before
        floor = procs.Child("warm-floor", {**env, **stack.copy_record_for_floor()}, task, log)
        if not floor.result().get("ok"):
            raise RuntimeError("the floor's first round failed")
        sink.take()

        latencies: dict[str, list[float]] = {"handler": [], "floor": []}
        cpu_ms = {"handler": 0.0, "floor": 0.0}
        counts = {"new_clients": 0, "failures": 0, "api_calls": 0, "writes": 0, "changed": 0}
        requests_before = len(stack.emulator.requests)
        floor_requests = 0
        datagrams = 0
        for index in range(0, total, batch):
            size = min(batch, total - index)
            order = ("handler", "floor") if (index // batch) % 2 == 0 else ("floor", "handler")
            for name in order:
                if name == "handler":
                    before = stack.connections()
                    reply = handler.command(n=size)
                    handler_connections += stack.connections() - before
                    for key in counts:
                        counts[key] += reply[key]
                    datagrams += len(sink.take(settle_s=0.02))
                else:
                    before_requests = len(stack.emulator.requests)
                    reply = floor.command(n=size)
                    floor_requests += len(stack.emulator.requests) - before_requests
                    counts["failures"] += reply["failures"]
                latencies[name].extend(reply["latencies_ms"])
                cpu_ms[name] += reply["cpu_ms"]
    finally:
        handler.close()
        if floor is not None:
            floor.close()
    handler_requests = len(stack.emulator.requests) - requests_before - floor_requests
    return {
        **counts,
        "latencies": latencies,
        "cpu_ms": {name: value / total for name, value in cpu_ms.items()},
        "connections": handler_connections,
        "first_clients": first["clients"],
        "cloudflare_requests": handler_requests,
        "datagrams": datagrams,
        "invocations": total,
    }


def report(figures: dict[str, Any], *, strict: bool) -> int:
    latencies = figures["latencies"]
    p50 = {name: common.percentile(values, 50) for name, values in latencies.items()}
    p99 = {name: common.percentile(values, 99) for name, values in latencies.items()}
    rows = [
        [
            "floor (raw GET + update_item)" if name == "floor" else "handler",
            p50[name],
            p99[name],
            sum(values) / len(values),
            f"{p50[name] / p50['floor']:.2f}",
            f"{p99[name] / p99['floor']:.2f}",
            figures["cpu_ms"][name],
        ]
        for name, values in (("floor", latencies["floor"]), ("handler", latencies["handler"]))
    ]
    common.print_table(
        f"Warm path ({figures['invocations']} invocations, ms)",
        ["what", "p50", "p99", "mean", "p50 x floor", "p99 x floor", "CPU ms / invocation"],
        rows,
    )
    invocations = figures["invocations"]
    print(f"\nTCP connections to the emulator over the container's life: {figures['connections']}")
    print(
        f"boto3 clients: {figures['first_clients']} created by the first invocation, "
        f"{figures['new_clients']} after it"
    )
    print(
        f"per warm invocation: {figures['cloudflare_requests'] / invocations:.2f} Cloudflare "
        f"requests, {figures['writes'] / invocations:.2f} DynamoDB writes, "
        f"{figures['datagrams'] / invocations:.1f} X-Ray datagrams; "
        f"{figures['changed']} re-syncs found a change"
    )
    return common.report_targets(
        [
            common.Target("p50 / floor p50", p50["handler"] / p50["floor"], TARGET_P50_RATIO),
            common.Target("TCP connections to Cloudflare", figures["connections"], 1, unit=""),
            common.Target(
                "boto3 clients after the first invocation", figures["new_clients"], 0, ""
            ),
        ],
        strict=strict,
    )


if __name__ == "__main__":
    sys.exit(main())
