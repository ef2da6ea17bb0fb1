"""Memory: peak RSS of a warm container after 1,000 invocations, and its growth.

The same warm container as ``warm_path.py`` (the unpacked zip, Lambda-like
environment, X-Ray on through the real SDK; each invocation a re-sync of an
unchanged key: one bulk get, one BatchGetItem, no write). RSS is read from
``/proc/self/status`` after the 100th and after the 1,000th invocation, with the
number of live Python objects (after a ``gc.collect()``) as a finer leak
detector. The floor is the warm floor process of ``warm_path.py`` doing the
bare I/O (the bulk-get POST and a BatchGetItem) as many times. ``--env NAME=VALUE`` sets a
variable for the function (e.g. ``POWERTOOLS_TRACE_DISABLED=true``).

Targets: no growth after the first 100 invocations (RSS within 256 KiB, live
objects within 1 %); peak RSS is reported with its ratio to the floor's.
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

RSS_GROWTH_LIMIT_KIB = 256
OBJECT_GROWTH_LIMIT = 0.01


def main() -> int:
    parser = common.parser(__doc__ or "")
    parser.add_argument("--invocations", type=int, default=1000, help="invocations (1000)")
    parser.add_argument("--baseline", type=int, default=100, help="RSS baseline after (100)")
    common.add_env_option(parser)
    args = common.parse(parser)
    overrides = common.env_overrides(args)
    total, baseline = (20, 10) if args.quick else (args.invocations, args.baseline)
    tracing = "off" if common.tracing_disabled(overrides) else "on"
    print(f"Memory: one warm container, scheduled re-sync of an unchanged key (X-Ray {tracing})")
    common.print_machine()
    print(f"RSS after invocation {baseline} and {total}")
    if overrides:
        print(f"function environment overrides: {overrides}")

    with tempfile.TemporaryDirectory(prefix="kv-sync-memory-") as work_dir:
        work = Path(work_dir)
        task, runtime = package.prepare(work)
        log = work / "children.log"
        with start_stack() as stack, xray.XRaySink() as sink:
            env = {
                **stack.aws_env(),
                **package.lambda_env(
                    task, runtime, trace_header=xray.trace_header(), xray_address=sink.address
                ),
            }
            try:
                handler = measure("warm-handler", {**env, **overrides}, task, log, baseline, total)
                stack.copy_record_for_floor()
                floor = measure("warm-floor", env, task, log, baseline, total)
                figures = {"handler": handler, "floor": floor}
            except RuntimeError:
                print(log.read_text()[-4000:], file=sys.stderr)
                raise
            sink.take(settle_s=0)
    failures = sum(f["failures"] for f in figures.values())
    if failures:
        print(f"error: {failures} invocations failed", file=sys.stderr)
        return 1
    return report(figures, baseline, total, strict=args.strict)


def measure(
    mode: str, env: dict[str, str], task: Path, log: Path, baseline: int, total: int
) -> dict[str, Any]:
    """RSS (KiB) and live objects after the first, ``baseline``-th and ``total``-th call."""
    with procs.Child(mode, env, task, log) as child:
        first = child.result()
        if not first.get("ok"):
            raise RuntimeError(f"{mode}: the first invocation failed: {first}")
        at_baseline = child.command(n=baseline - 1, gc=True)
        at_total = child.command(n=total - baseline, gc=True)
    return {
        "first_rss": first["rss_kb"],
        "baseline_rss": at_baseline["rss_kb"],
        "total_rss": at_total["rss_kb"],
        "peak_rss": at_total["hwm_kb"],
        "baseline_objects": at_baseline["objects"],
        "total_objects": at_total["objects"],
        "failures": at_baseline["failures"] + at_total["failures"],
    }


def report(figures: dict[str, dict[str, Any]], baseline: int, total: int, *, strict: bool) -> int:
    floor_peak = figures["floor"]["peak_rss"]
    rows = []
    for name in ("floor", "handler"):
        f = figures[name]
        rows.append(
            [
                "floor (boto3 + raw I/O)" if name == "floor" else "handler",
                f"{f['first_rss'] / 1024:.1f}",
                f"{f['baseline_rss'] / 1024:.1f}",
                f"{f['total_rss'] / 1024:.1f}",
                f"{f['peak_rss'] / 1024:.1f}",
                f"{f['peak_rss'] / floor_peak:.2f}",
                f"{f['total_rss'] - f['baseline_rss']:+d}",
                f"{f['total_objects'] - f['baseline_objects']:+d}",
            ]
        )
    common.print_table(
        "Memory (RSS in MiB)",
        [
            "what",
            "after 1st",
            f"after {baseline}",
            f"after {total}",
            "peak",
            "peak x floor",
            f"RSS growth {baseline}->{total} (KiB)",
            "live objects growth",
        ],
        rows,
    )
    handler = figures["handler"]
    growth = handler["total_rss"] - handler["baseline_rss"]
    objects = (handler["total_objects"] - handler["baseline_objects"]) / handler["baseline_objects"]
    return common.report_targets(
        [
            common.Target(f"RSS growth {baseline}->{total}", growth, RSS_GROWTH_LIMIT_KIB, " KiB"),
            common.Target("live objects growth", objects * 100, OBJECT_GROWTH_LIMIT * 100, " %"),
        ],
        strict=strict,
    )


if __name__ == "__main__":
    sys.exit(main())
