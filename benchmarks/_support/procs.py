"""Starting child interpreters and talking to them (see ``child.py``)."""

from __future__ import annotations

import json
import os
import subprocess
import time
from typing import IO, TYPE_CHECKING, Any

from benchmarks._support.package import child_command

if TYPE_CHECKING:
    from pathlib import Path


class Child:
    """One fresh interpreter running ``child.py`` in ``mode``; stdout goes to ``log``."""

    def __init__(self, mode: str, env: dict[str, str], cwd: Path, log: Path) -> None:
        read_fd, write_fd = os.pipe()
        self._log = log.open("ab")
        self.started = time.monotonic()
        self.process = subprocess.Popen(
            child_command(mode),
            env={**env, "BENCH_RESULT_FD": str(write_fd)},
            cwd=cwd,
            stdin=subprocess.PIPE,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            pass_fds=(write_fd,),
            text=True,
        )
        os.close(write_fd)
        self._results: IO[str] = os.fdopen(read_fd, "r")

    def result(self) -> dict[str, Any]:
        """The next JSON line the child reports."""
        line = self._results.readline()
        if not line:
            code = self.process.wait(timeout=30)
            raise RuntimeError(f"child exited ({code}) without a result; see {self._log.name}")
        data: dict[str, Any] = json.loads(line)
        return data

    def command(self, **command: Any) -> dict[str, Any]:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(command) + "\n")
        self.process.stdin.flush()
        return self.result()

    def close(self) -> int:
        if self.process.stdin is not None:
            self.process.stdin.close()
        code = self.process.wait(timeout=60)
        self._results.close()
        self._log.close()
        return code

    def __enter__(self) -> Child:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process.poll() is None:
            self.close()


def run_cold(mode: str, env: dict[str, str], cwd: Path, log: Path) -> dict[str, Any]:
    """One cold start: times in ms from just before the interpreter was started."""
    with Child(mode, env, cwd, log) as child:
        result = child.result()
        code = child.close()
    if code != 0:
        raise RuntimeError(f"{mode} exited {code}; see {log}")
    start = child.started
    return {
        **result,
        "startup_ms": (result["t_main"] - start) * 1000,
        "init_ms": (result["t_init"] - start) * 1000,
        "first_invoke_ms": (result["t_response"] - result["t_init"]) * 1000,
        "total_ms": (result["t_response"] - start) * 1000,
        # CPU time of the interpreter, from its start: much less noisy than wall
        # time on a shared machine, and what a cold start mostly is.
        "cpu_init_ms": result["cpu_init"] * 1000,
        "cpu_total_ms": result["cpu_response"] * 1000,
    }
