"""Command line, statistics, tables and machine facts shared by the benchmarks."""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Sequence

ROOT = Path(__file__).resolve().parents[2]


def parser(description: str) -> argparse.ArgumentParser:
    """The options every benchmark takes; add its own, then call ``parse``.

    ``--quick`` (or ``BENCH_QUICK=1``) runs a tiny number of iterations: the smoke
    test uses it so the scripts cannot rot; its figures mean nothing.
    ``--strict`` exits 1 when a target is missed (by default a miss is reported,
    and only a functional failure exits non-zero).
    """
    result = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    result.add_argument("--quick", action="store_true", help="tiny N, for smoke tests")
    result.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    return result


def parse(parser: argparse.ArgumentParser, argv: Sequence[str] | None = None) -> argparse.Namespace:
    args = parser.parse_args(argv)
    args.quick = args.quick or os.environ.get("BENCH_QUICK", "") not in {"", "0", "false"}
    return args


def add_env_option(parser: argparse.ArgumentParser) -> None:
    """``--env NAME=VALUE`` (repeatable): a variable set for the function's interpreters."""
    parser.add_argument(
        "--env",
        metavar="NAME=VALUE",
        action="append",
        default=[],
        help="set a variable for the function (e.g. POWERTOOLS_TRACE_DISABLED=true)",
    )


def env_overrides(args: argparse.Namespace) -> dict[str, str]:
    """The ``--env`` variables as a dict."""
    overrides = {}
    for item in args.env:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise SystemExit(f"--env wants NAME=VALUE, got {item!r}")
        overrides[name] = value
    return overrides


def tracing_disabled(env: dict[str, str]) -> bool:
    """Whether Powertools would leave tracing off in an interpreter with ``env``."""
    return env.get("POWERTOOLS_TRACE_DISABLED", "").strip().lower() in {"1", "true", "yes", "on"}


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile (``pct`` in 0..100)."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("no values")
    rank = max(1, -(-len(ordered) * pct // 100))  # ceil without floats surprises
    return ordered[min(int(rank), len(ordered)) - 1]


@dataclass
class Target:
    """One target a benchmark checks: ``value`` must be at most ``limit``."""

    name: str
    value: float
    limit: float
    unit: str = "x"

    @property
    def met(self) -> bool:
        return self.value <= self.limit


def print_table(title: str, headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """A Markdown table, so it can be pasted into the README as it is."""
    cells = [[str(c) for c in headers]] + [[_fmt(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    print(f"\n### {title}\n")
    for index, row in enumerate(cells):
        print("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |")
        if index == 0:
            print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    sys.stdout.flush()


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.2f}" if abs(value) < 100 else f"{value:.0f}"
    return str(value)


def report_targets(targets: Sequence[Target], *, strict: bool) -> int:
    """Print each target as met or missed; the exit code for ``strict`` mode."""
    print()
    for target in targets:
        verdict = "MET" if target.met else "MISSED"
        print(
            f"target {target.name}: {target.value:.2f}{target.unit} "
            f"(limit {target.limit:g}{target.unit}) {verdict}"
        )
    missed = [t for t in targets if not t.met]
    return 1 if strict and missed else 0


def machine() -> dict[str, str]:
    """What the figures were measured on."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "nproc": str(os.cpu_count() or "?"),
        "cpu": cpu,
        "python": platform.python_version(),
        "arch": platform.machine(),
    }


def print_machine() -> None:
    info = machine()
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    print(
        f"machine: {info['nproc']} CPUs, {info['cpu']}, {info['arch']}, Python {info['python']}; "
        f"load average {load} (other work on the machine moves wall times)"
    )
