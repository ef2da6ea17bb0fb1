"""Cold start: a fresh interpreter from its start to the first response, vs a floor.

Each run is a new interpreter on the unpacked deployment zip (see
``_support/package.py``) in a Lambda-like environment with active tracing: a
sampled ``_X_AMZN_TRACE_ID`` and ``AWS_XRAY_DAEMON_ADDRESS`` pointing at a UDP
socket here, which counts and checks what the function sends. It imports
``handler`` and serves one scheduled invocation against moto server and the KV
emulator, which run in this process.

The floor, alternating with it in the same run: a fresh interpreter that
imports boto3 and requests, creates the DynamoDB and Secrets Manager clients,
and does the same I/O raw (GetSecretValue, a GET to the emulator, UpdateItem).

Target: median cold start <= 1.3 x the floor's median.

``--compare LABEL=DIR`` adds another handler row, with DIR/*.py laid over the
unpacked zip (e.g. an older ``lambda_function/``), measured in the same rounds.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks._support import common, package, procs, xray  # noqa: E402
from benchmarks._support.stack import start_stack  # noqa: E402

TARGET_RATIO = 1.3
EXPECTED_SUBSEGMENTS = ("## secrets.read", "## cloudflare.fetch", "## dynamodb.write")
EXPECTED_ANNOTATIONS = ("key_name", "namespace_id")
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
        help="also measure the zip with DIR/*.py laid over it (repeatable)",
    )
    parser.add_argument(
        "--precompile",
        action="store_true",
        help="byte-compile the unpacked zip first (what shipping .pyc would give)",
    )
    args = common.parse(parser)
    runs = 2 if args.quick else args.runs
    print("Cold start: fresh interpreter -> first response (scheduled event, X-Ray on)")
    common.print_machine()
    print(f"runs: {runs} of each, alternating, after one untimed run of each")

    with tempfile.TemporaryDirectory(prefix="kv-sync-cold-") as work_dir:
        work = Path(work_dir)
        zip_path = package.build_zip()
        variants = {HANDLER: work / "task"}
        for spec in args.compare:
            label, _, source = spec.partition("=")
            variants[label] = work / f"task-{len(variants)}"
        for label, task in variants.items():
            package.unpack(zip_path, task)
            if label != HANDLER:
                source = dict(s.partition("=")[::2] for s in args.compare)[label]
                for path in Path(source).glob("*.py"):
                    shutil.copy2(path, task / path.name)
            if args.precompile:
                package.precompile(task)
        runtime = package.make_runtime_dir(work / "runtime")
        results = measure(variants, runtime, work / "children.log", runs)

    for label, rows in results.items():
        failed = [r for r in rows if not r.get("ok")]
        if failed:
            print(f"error: {label}: {len(failed)} runs failed: {failed[0]}", file=sys.stderr)
            return 1
        if label != HANDLER:  # compared variants may trace differently, or not at all
            continue
        for row in rows:
            problem = trace_problem(row["trace"])
            if problem:
                print(f"error: {label}: {problem}: {row['trace']}", file=sys.stderr)
                return 1
    return report(results, strict=args.strict)


def trace_problem(trace: dict[str, Any]) -> str | None:
    """Why a cold invocation's trace is not what the function must send, if it is not."""
    if not set(EXPECTED_SUBSEGMENTS) <= set(trace["names"]):
        return "subsegments missing"
    if not set(EXPECTED_ANNOTATIONS) <= set(trace["annotations"]):
        return "annotations missing"
    if trace["aws_calls"] < 2:
        return "AWS calls not traced"
    if trace["captured_response"]:
        return "a response was captured"
    if not trace["linked"]:
        return "subsegments not linked under the function segment"
    return None


def measure(
    variants: dict[str, Path], runtime: Path, log: Path, runs: int
) -> dict[str, list[dict[str, Any]]]:
    """Alternate floor and handler cold starts; each handler run carries its trace."""
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
            }
            if label == FLOOR:
                env.update(floor_env)
            mode = "cold-floor" if label == FLOOR else "cold-handler"
            sink.take(settle_s=0)
            try:
                result = procs.run_cold(mode, env, task, log)
            except RuntimeError:
                print(log.read_text()[-4000:], file=sys.stderr)
                raise
            result["trace"] = xray.summarize(sink.take(), result["trace_header"])
            result["datagrams"] = result["trace"]["datagrams"]
            return result

        labels = list(results)
        floor_env: dict[str, str] = {}
        run(HANDLER)  # untimed: stores the record, warms the page cache and moto
        floor_env.update(stack.copy_record_for_floor())
        for label in labels:
            run(label)
        for index in range(runs):
            order = labels if index % 2 == 0 else labels[::-1]
            for label in order:
                results[label].append(run(label))
    return results


def report(results: dict[str, list[dict[str, Any]]], *, strict: bool) -> int:
    def med(label: str, field: str) -> float:
        return common.median([float(r[field]) for r in results[label]])

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
                "-" if label == FLOOR else f"{med(label, 'datagrams'):.0f}",
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
        ],
        rows,
    )
    print(
        "init = interpreter start + imports + module-level set-up; first invocation = the "
        "handler call (for the floor: its raw I/O, its clients being created in init); "
        "CPU = the interpreter's CPU time (user + system) up to the response"
    )
    traced = results[HANDLER][-1]["trace"]
    print(f"X-Ray entities: {', '.join(traced['names'])}")
    print(
        f"X-Ray annotations: {', '.join(sorted(traced['annotations']))}; "
        f"responses captured: {traced['captured_response']}"
    )
    ratio = med(HANDLER, "total_ms") / floor
    return common.report_targets(
        [common.Target("cold start / floor", ratio, TARGET_RATIO)], strict=strict
    )


if __name__ == "__main__":
    sys.exit(main())
