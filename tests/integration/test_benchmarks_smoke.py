"""The benchmarks run (tiny N, ``--quick``) so they cannot rot.

``make bench`` runs them for real; here only their exit code and their tables
are checked, never timings. Each one also checks the function itself as it
goes (every invocation succeeds; the cold start's X-Ray subsegments, annotations
and trace tree are complete; one TCP connection to Cloudflare; no new boto3
client on warm invocations), and exits non-zero when that fails.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def run_benchmark(name: str) -> str:
    # A clean environment for the benchmark: the test session's variables (tracing
    # disabled, endpoint overrides) must not leak into it.
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("AWS_", "POWERTOOLS_", "LAMBDA_", "_X_AMZN"))
    }
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / name), "--quick"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


@pytest.mark.parametrize(
    ("script", "table", "lines"),
    [
        ("cold_start.py", "### Cold start", ("| floor", "| handler", "X-Ray annotations:")),
        ("warm_path.py", "### Warm path", ("| floor", "| handler", "TCP connections")),
        ("memory.py", "### Memory", ("| floor", "| handler", "target RSS growth")),
        ("package_size.py", "### Package size", ("lambda_function.zip", "### Five largest")),
        (
            "reader.py",
            "### Reader get latency",
            ("| cached get", "| raw boto3 get_item", "DynamoDB calls"),
        ),
    ],
)
def test_benchmark_runs_and_prints_its_table(script: str, table: str, lines: tuple[str, ...]):
    output = run_benchmark(script)

    assert table in output
    for line in lines:
        assert line in output, output
    assert "machine:" in output
