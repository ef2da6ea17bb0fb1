"""Warm path: 1,000 invocations of one key in one warm container, vs a floor.

The container is one long-lived interpreter on the unpacked deployment zip, in
the same Lambda-like environment as the cold start benchmark (X-Ray on through
the real SDK, a new sampled trace header per invocation, as the Lambda runtime
sets it). Each invocation is a scheduled re-sync of an unchanged key: one POST
bulk/get to the KV emulator, one consistent BatchGetItem to moto server, and no
write.

In the same run, batch by batch in rotating order:

- the floor: another long-lived interpreter doing the bare I/O, one raw
  ``requests`` POST of the same bulk get and the same consistent ``batch_get_item`` of a
  copy of the function's record;
- a second function container with ``POWERTOOLS_TRACE_DISABLED=true``: the
  difference between the two is what tracing costs per invocation (left out
  when ``--env`` already turns tracing off).

Every traced invocation's X-Ray datagrams are checked (``## lambda_handler`` at
the top, ``## cloudflare.fetch``, the ``dynamodb`` read and
Cloudflare-host subsegments, annotations, one tree, no response captured) and
counted, with their bytes.

Targets: p50 <= 1.2 x the floor's p50; exactly one TCP connection to the
emulator over the container's life; no boto3 client created after the first
invocation.
"""

from __future__ import annotations

import sys
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks._support import common, package, procs, xray  # noqa: E402
from benchmarks._support.stack import start_stack  # noqa: E402

TARGET_P50_RATIO = 1.2
BATCH = 100
HANDLER, UNTRACED, FLOOR = "handler", "handler, tracing off", "floor"
EXPECTED_SUBSEGMENTS = ("## lambda_handler", "## cloudflare.fetch")
EXPECTED_ANNOTATIONS = ("key_name", "namespace_id")
# What a warm re-sync of an unchanged key may call: its record's read, nothing else.
EXPECTED_OPERATIONS = {"BatchGetItem"}


@dataclass
class Container:
    """One warm interpreter and what it did over the run."""

    name: str
    child: procs.Child | None = None
    latencies: list[float] = field(default_factory=list)
    cpu_ms: float = 0.0
    connections: int = 0
    cloudflare_requests: int = 0
    operations: Counter[str] = field(default_factory=Counter)
    counts: Counter[str] = field(default_factory=Counter)
    first: dict[str, Any] = field(default_factory=dict)


def main() -> int:
    parser = common.parser(__doc__ or "")
    parser.add_argument("--invocations", type=int, default=1000, help="warm invocations (1000)")
    parser.add_argument("--precompile", action="store_true", help="byte-compile the zip first")
    common.add_env_option(parser)
    args = common.parse(parser)
    overrides = common.env_overrides(args)
    traced = not common.tracing_disabled(overrides)
    total = 20 if args.quick else args.invocations
    batch = min(BATCH, total)
    print(
        "Warm path: one warm container, scheduled re-sync of an unchanged key "
        f"(X-Ray {'on' if traced else 'off'})"
    )
    common.print_machine()
    print(f"invocations: {total} of each after the first (cold) one, in batches of {batch}")
    if overrides:
        print(f"function environment overrides: {overrides}")

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
                **overrides,
            }
            try:
                figures = measure(stack, sink, env, task, log, total, batch, traced=traced)
            except RuntimeError:
                print(log.read_text()[-4000:], file=sys.stderr)
                raise
    problem = figures["problem"]
    if problem:
        print(f"error: {problem}", file=sys.stderr)
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
    *,
    traced: bool,
) -> dict[str, Any]:
    names = [HANDLER, UNTRACED, FLOOR] if traced else [HANDLER, FLOOR]
    containers = {name: Container(name) for name in names}
    host = urlsplit(stack.emulator.base_url).hostname or ""
    envs = {
        HANDLER: env,
        UNTRACED: {**env, "POWERTOOLS_TRACE_DISABLED": "true"},
        FLOOR: env,
    }
    modes = {HANDLER: "warm-handler", UNTRACED: "warm-handler", FLOOR: "warm-floor"}
    received: list[xray.Datagram] = []
    headers: dict[str, list[str]] = {name: [] for name in names}
    try:
        # The first (cold) invocations: the function's stores the record, which
        # the floor then reads a copy of.
        for name, container in containers.items():
            if name == FLOOR:
                stack.copy_record_for_floor()
            before = stack.connections()
            container.child = procs.Child(modes[name], envs[name], task, log)
            container.first = container.child.result()
            container.connections += stack.connections() - before
            if not container.first.get("ok"):
                raise RuntimeError(f"{name}: the first invocation failed: {container.first}")
        received += sink.take(settle_s=0)

        for index in range(0, total, batch):
            size = min(batch, total - index)
            shift = (index // batch) % len(names)
            for name in names[shift:] + names[:shift]:
                container = containers[name]
                assert container.child is not None
                before, requests_before = stack.connections(), len(stack.emulator.requests)
                reply = container.child.command(n=size)
                container.connections += stack.connections() - before
                container.cloudflare_requests += len(stack.emulator.requests) - requests_before
                container.latencies.extend(reply["latencies_ms"])
                container.cpu_ms += reply["cpu_ms"]
                container.operations.update(reply["aws_operations"])
                for key in ("new_clients", "failures", "api_calls", "writes", "changed"):
                    container.counts[key] += reply.get(key, 0)
                headers[name] += reply["trace_headers"]
                received += sink.take(settle_s=0)
    finally:
        for container in containers.values():
            if container.child is not None:
                container.child.close()
    received += sink.take(settle_s=0.2)  # stragglers
    # Each datagram belongs to the invocation whose trace it names.
    groups = xray.by_trace(received)
    first = containers[HANDLER].first["trace_header"]
    traced_roots = {_root(header) for header in [first, *headers[HANDLER]]} if traced else set()
    traces = [xray.summarize(groups.get(_root(header), []), header) for header in headers[HANDLER]]
    stray = sum(len(group) for root, group in groups.items() if root not in traced_roots)
    problem = f"{stray} X-Ray datagrams from untraced invocations" if stray else None
    for container in containers.values():
        problem = problem or _container_problem(container, total)
    if traced and not problem:
        problem = _traces_problem(traces, total, host)
    return {
        "containers": containers,
        "invocations": total,
        "traces": traces if traced else [],
        "traced": traced,
        "problem": problem,
    }


def _root(header: str) -> str:
    return xray.header_fields(header).get("Root", "")


def _container_problem(container: Container, total: int) -> str | None:
    name, counts = container.name, container.counts
    if counts["failures"]:
        return f"{name}: {counts['failures']} invocations failed"
    if name == FLOOR:
        return None
    if counts["writes"] or counts["changed"]:
        return f"{name}: the unchanged key was written ({counts['writes']} DynamoDB writes)"
    if set(container.operations) != EXPECTED_OPERATIONS:
        return f"{name}: AWS calls {dict(container.operations)}, expected only BatchGetItem"
    if container.operations["BatchGetItem"] != total or container.cloudflare_requests != total:
        return (
            f"{name}: {container.operations['BatchGetItem']} BatchGetItem and "
            f"{container.cloudflare_requests} Cloudflare requests for {total} invocations"
        )
    return None


def _traces_problem(traces: list[dict[str, Any]], total: int, host: str) -> str | None:
    if len(traces) != total:
        return f"X-Ray: {len(traces)} traces for {total} traced invocations"
    for trace in traces:
        problem = xray.trace_problem(
            trace,
            subsegments=EXPECTED_SUBSEGMENTS,
            annotations=EXPECTED_ANNOTATIONS,
            aws_services=("dynamodb",),
            remote_host=host,
        )
        if problem:
            return f"X-Ray: {problem}: {trace}"
        if "secretsmanager" in trace["aws_services"]:
            return "X-Ray: a warm invocation read the secret again"
    return None


def report(figures: dict[str, Any], *, strict: bool) -> int:
    containers: dict[str, Container] = figures["containers"]
    invocations = figures["invocations"]
    p50 = {name: common.percentile(c.latencies, 50) for name, c in containers.items()}
    p99 = {name: common.percentile(c.latencies, 99) for name, c in containers.items()}
    labels = {
        FLOOR: "floor (raw bulk get + batch_get_item)",
        HANDLER: "handler (X-Ray on)" if figures["traced"] else "handler (X-Ray off by --env)",
        UNTRACED: "handler (POWERTOOLS_TRACE_DISABLED)",
    }
    rows = [
        [
            labels[name],
            p50[name],
            p99[name],
            sum(c.latencies) / len(c.latencies),
            f"{p50[name] / p50[FLOOR]:.2f}",
            f"{p99[name] / p99[FLOOR]:.2f}",
            c.cpu_ms / invocations,
        ]
        for name, c in sorted(containers.items(), key=lambda item: item[0] != FLOOR)
    ]
    common.print_table(
        f"Warm path ({invocations} invocations, ms)",
        ["what", "p50", "p99", "mean", "p50 x floor", "p99 x floor", "CPU ms / invocation"],
        rows,
    )
    handler = containers[HANDLER]
    print(f"\nTCP connections to the emulator over the container's life: {handler.connections}")
    print(
        f"boto3 clients: {handler.first['clients']} created by the first invocation, "
        f"{handler.counts['new_clients']} after it"
    )
    operations = ", ".join(
        f"{count / invocations:.2f} {op}" for op, count in sorted(handler.operations.items())
    )
    print(
        f"per warm invocation: {handler.cloudflare_requests / invocations:.2f} Cloudflare "
        f"requests, DynamoDB {operations or 'nothing'}, "
        f"{handler.counts['writes'] / invocations:.2f} DynamoDB writes; "
        f"{handler.counts['changed']} re-syncs found a change"
    )
    traces = figures["traces"]
    if traces:
        per = Counter(t["datagrams"] for t in traces)
        sizes = sorted(t["bytes"] for t in traces)
        spread = ", ".join(f"{n} datagram(s): {count}" for n, count in sorted(per.items()))
        print(
            f"X-Ray per warm invocation: {sum(t['datagrams'] for t in traces) / len(traces):.2f} "
            f"datagrams ({spread} invocations), {common.median(sizes):.0f} bytes median "
            f"(max {sizes[-1]}), {common.median([t['subsegments'] for t in traces]):.0f} "
            f"subsegments"
        )
        print(f"X-Ray entities: {', '.join(traces[-1]['names'])}")
    if UNTRACED in containers:
        untraced = containers[UNTRACED]
        cost = p50[HANDLER] - p50[UNTRACED]
        cpu = (handler.cpu_ms - untraced.cpu_ms) / invocations
        print(
            f"tracing cost per warm invocation: p50 {cost:+.2f} ms "
            f"({cost / p50[UNTRACED]:+.0%}), CPU {cpu:+.2f} ms "
            f"(X-Ray on vs POWERTOOLS_TRACE_DISABLED=true, same run)"
        )
    return common.report_targets(
        [
            common.Target("p50 / floor p50", p50[HANDLER] / p50[FLOOR], TARGET_P50_RATIO),
            common.Target("TCP connections to Cloudflare", handler.connections, 1, unit=""),
            common.Target(
                "boto3 clients after the first invocation", handler.counts["new_clients"], 0, ""
            ),
        ],
        strict=strict,
    )


if __name__ == "__main__":
    sys.exit(main())
