"""Cold start: a fresh interpreter from its start to the first response, vs a floor.

Each run is a new interpreter on the unpacked deployment zip (see
``_support/package.py``) in a Lambda-like environment with active tracing: a
sampled ``_X_AMZN_TRACE_ID`` and ``AWS_XRAY_DAEMON_ADDRESS`` pointing at a
stand-in daemon, which counts and checks what the real X-Ray SDK sends. It
imports ``kv_sync.handler`` and serves one scheduled re-sync of an unchanged
key (one GetSecretValue, one POST bulk/get, one consistent BatchGetItem and no
write) against moto server and the KV emulator, which run in this process.

The floor, alternating with it in the same run: a fresh interpreter that
imports boto3 and requests, creates the DynamoDB and Secrets Manager clients,
and does the same I/O raw (GetSecretValue, the same bulk-get POST, a consistent
BatchGetItem of a copy of the function's record).

Target: median cold start <= 1.3 x the floor's median.

``--env NAME=VALUE`` sets a variable for every interpreter (e.g.
``POWERTOOLS_TRACE_DISABLED=true`` measures the cold start without tracing).
``--compare LABEL=DIR`` adds another handler row, with DIR/*.py laid over the
unpacked zip's ``kv_sync/`` (e.g. an older ``lambda_function/kv_sync``),
measured in the same rounds.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks._support import common, package, procs, xray  # noqa: E402
from benchmarks._support.stack import start_stack  # noqa: E402

TARGET_RATIO = 1.3
EXPECTED_SUBSEGMENTS = (
    "## lambda_handler",
    "## secrets.read",
    "## cloudflare.fetch",
)
EXPECTED_ANNOTATIONS = ("key_name", "namespace_id")
EXPECTED_AWS = ("dynamodb", "secretsmanager")
WRITE_OPERATIONS = {"UpdateItem", "PutItem", "DeleteItem", "BatchWriteItem"}
FLOOR = "floor"
HANDLER = "handler"


def main() -> int:
    parser = common.parser(__doc__ or "")
    parser.add_argument("--runs", type=int, default=21, help="cold starts of each (default 21)")
    parser.add_argument(
        "--compare",
        metavar="LABEL=DIR",
        action="append",
        default=[],
        help="also measure the zip with DIR/*.py laid over its kv_sync/ (repeatable)",
    )
    parser.add_argument(
        "--precompile",
        action="store_true",
        help="byte-compile the unpacked zip first (what shipping .pyc would give)",
    )
    common.add_env_option(parser)
    args = common.parse(parser)
    overrides = common.env_overrides(args)
    traced = not common.tracing_disabled(overrides)
    runs = 2 if args.quick else args.runs
    print(
        "Cold start: fresh interpreter -> first response "
        f"(scheduled re-sync of an unchanged key, X-Ray {'on' if traced else 'off'})"
    )
    common.print_machine()
    print(f"runs: {runs} of each, alternating, after one untimed run of each")
    if overrides:
        print(f"function environment overrides: {overrides}")

    with tempfile.TemporaryDirectory(prefix="kv-sync-cold-") as work_dir:
        work = Path(work_dir)
        zip_path = package.build_zip()
        sources = dict(spec.partition("=")[::2] for spec in args.compare)
        variants = {HANDLER: work / "task"}
        for label in sources:
            variants[label] = work / f"task-{len(variants)}"
        for label, task in variants.items():
            package.unpack(zip_path, task)
            if label != HANDLER:
                for path in Path(sources[label]).glob("*.py"):
                    shutil.copy2(path, task / "kv_sync" / path.name)
            if args.precompile:
                package.precompile(task)
        runtime = package.make_runtime_dir(work / "runtime")
        results, host = measure(variants, runtime, work / "children.log", runs, overrides)

    for label, rows in results.items():
        failed = [r for r in rows if not r.get("ok")]
        if failed:
            print(f"error: {label}: {len(failed)} runs failed: {failed[0]}", file=sys.stderr)
            return 1
        if label != HANDLER:  # compared variants may do and trace other things
            continue
        for row in rows:
            problem = invocation_problem(row)
            if problem:
                print(f"error: {label}: {problem}", file=sys.stderr)
                return 1
        if not traced:
            continue
        for row in rows:
            problem = xray.trace_problem(
                row["trace"],
                subsegments=EXPECTED_SUBSEGMENTS,
                annotations=EXPECTED_ANNOTATIONS,
                aws_services=EXPECTED_AWS,
                remote_host=host,
            )
            if problem:
                print(f"error: {label}: {problem}: {row['trace']}", file=sys.stderr)
                return 1
    return report(results, traced=traced, strict=args.strict)


def invocation_problem(row: dict[str, Any]) -> str | None:
    """Why a cold re-sync of the unchanged key did not do what it must, if it did not."""
    if row.get("changed") or row.get("writes"):
        return f"the unchanged key was written ({row.get('writes')} DynamoDB writes)"
    if row.get("api_calls") != 1 or row.get("cf_requests") != 1:
        return f"{row.get('cf_requests')} Cloudflare requests instead of one bulk get"
    written = WRITE_OPERATIONS & set(row["trace"]["aws_operations"])
    if written:
        return f"DynamoDB writes traced: {sorted(written)}"
    return None


def measure(
    variants: dict[str, Path],
    runtime: Path,
    log: Path,
    runs: int,
    overrides: dict[str, str],
) -> tuple[dict[str, list[dict[str, Any]]], str]:
    """Alternate floor and handler cold starts; each run carries its trace.

    Returns the runs by label, and the Cloudflare host the traces must name.
    """
    results: dict[str, list[dict[str, Any]]] = {FLOOR: []}
    results.update({label: [] for label in variants})
    with start_stack() as stack, xray.XRaySink() as sink:

        def run(label: str) -> dict[str, Any]:
            task = variants.get(label, variants[HANDLER])
            env = {
                **stack.aws_env(),
                **package.lambda_env(
                    task, runtime, trace_header=xray.trace_header(), xray_address=sink.address
                ),
                **overrides,
            }
            mode = "cold-floor" if label == FLOOR else "cold-handler"
            sink.take(settle_s=0)
            requests_before = len(stack.emulator.requests)
            try:
                result = procs.run_cold(mode, env, task, log)
            except RuntimeError:
                print(log.read_text()[-4000:], file=sys.stderr)
                raise
            result["cf_requests"] = len(stack.emulator.requests) - requests_before
            result["trace"] = xray.summarize(sink.take(), result["trace_header"])
            return result

        labels = list(results)
        run(HANDLER)  # untimed: stores the record, warms the page cache and moto
        stack.copy_record_for_floor()
        for label in labels:
            run(label)
        for index in range(runs):
            order = labels if index % 2 == 0 else labels[::-1]
            for label in order:
                results[label].append(run(label))
        host = urlsplit(stack.emulator.base_url).hostname or ""
    return results, host


def report(results: dict[str, list[dict[str, Any]]], *, traced: bool, strict: bool) -> int:
    def med(label: str, field: str) -> float:
        return common.median([float(r[field]) for r in results[label]])

    def trace_med(label: str, field: str) -> float:
        return common.median([float(r["trace"][field]) for r in results[label]])

    floor = med(FLOOR, "total_ms")
    rows = []
    for label, runs in results.items():
        total = med(label, "total_ms")
        rows.append(
            [
                "floor (boto3 + raw I/O)" if label == FLOOR else label,
                med(label, "init_ms"),
                med(label, "first_invoke_ms"),
                total,
                min(float(r["total_ms"]) for r in runs),
                f"{total / floor:.2f}",
                med(label, "cpu_total_ms"),
                f"{med(label, 'cpu_total_ms') / med(FLOOR, 'cpu_total_ms'):.2f}",
                "-" if label == FLOOR else f"{trace_med(label, 'datagrams'):.0f}",
                "-" if label == FLOOR else f"{trace_med(label, 'bytes'):.0f}",
            ]
        )
    common.print_table(
        "Cold start (median ms)",
        [
            "what",
            "init",
            "first invocation",
            "total",
            "min total",
            "x floor",
            "CPU total",
            "CPU x floor",
            "X-Ray datagrams",
            "X-Ray bytes",
        ],
        rows,
    )
    print(
        "init = interpreter start + imports + module-level set-up; first invocation = the "
        "handler call (for the floor: its raw I/O, its clients being created in init); "
        "CPU = the interpreter's CPU time (user + system) up to the response"
    )
    last = results[HANDLER][-1]
    per = Counter(r["trace"]["datagrams"] for r in results[HANDLER])
    print(
        f"per cold invocation: {last['cf_requests']} Cloudflare request(s), "
        f"{last['writes']} DynamoDB writes; X-Ray datagrams: "
        + ", ".join(f"{n} in {count} run(s)" for n, count in sorted(per.items()))
    )
    trace = last["trace"]
    if traced:
        print(f"X-Ray entities: {', '.join(trace['names'])}")
        print(f"X-Ray AWS operations: {', '.join(trace['aws_operations'])}")
    print(
        f"X-Ray annotations: {', '.join(sorted(trace['annotations'])) or '(tracing off)'}; "
        f"responses captured: {trace['captured_response']}"
    )
    ratio = med(HANDLER, "total_ms") / floor
    return common.report_targets(
        [common.Target("cold start / floor", ratio, TARGET_RATIO)], strict=strict
    )


if __name__ == "__main__":
    sys.exit(main())
