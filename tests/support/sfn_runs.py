"""Run executions of a state machine on moto server and read what happened.

``SfnMotoServer`` starts ``tests.support.moto_sfn.serve`` in a process of its own: a
moto server whose Step Functions executes definitions and whose Lambda answers with
queued results, else with the real handler. ``run`` starts an execution, waits for
its end and returns an ``Execution`` built from ``DescribeExecution`` and the
execution history: the payload of every Lambda invocation, the reply to it, the
states entered.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from tests.support.moto_sfn import CONTROL_KEY

REPO_ROOT = Path(__file__).resolve().parents[2]
THROTTLE = {CONTROL_KEY: {"throttle": True}}  # Lambda's service answers 429


def function_error(error_type: str, message: str) -> dict[str, Any]:
    """A queued result standing for a function that failed (``X-Amz-Function-Error``)."""
    return {CONTROL_KEY: {"function_error": {"errorType": error_type, "errorMessage": message}}}


class SfnMotoServer:
    """moto server in a subprocess that executes state machines; a context manager."""

    def __init__(self, **knobs: Any) -> None:
        self.knobs = knobs
        self.url = ""
        self._process: subprocess.Popen[str] | None = None

    def __enter__(self) -> SfnMotoServer:
        code = "from tests.support.moto_sfn import serve; serve()"
        path = os.pathsep.join([str(REPO_ROOT), *sys.path])
        self._process = subprocess.Popen(
            [sys.executable, "-c", code, json.dumps(self.knobs)],
            cwd=REPO_ROOT,
            env={**os.environ, "PYTHONPATH": path},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self._process.stdout is not None
        self.url = self._process.stdout.readline().strip()
        if not self.url.startswith("http://"):
            self.__exit__()
            raise RuntimeError("moto server for Step Functions did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        if process.stdin is not None:
            process.stdin.close()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def queue_replies(self, *replies: Any, region: str = "us-east-1") -> None:
        """What the next Lambda invocations return, in order, before the real handler does."""
        answer = requests.post(
            f"{self.url}/moto-api/static/lambda-simple/response",
            json={"results": [json.dumps(reply) for reply in replies], "region": region},
            timeout=10,
        )
        answer.raise_for_status()


@dataclass
class Execution:
    """How an execution ended, and what its Lambda invocations sent and received."""

    status: str
    error: str | None
    cause: str | None
    output: Any
    payloads: list[Any] = field(default_factory=list)  # each invocation's event
    replies: list[Any] = field(default_factory=list)  # each answered invocation's document
    task_errors: list[str] = field(default_factory=list)  # each failed invocation's error
    states: list[str] = field(default_factory=list)  # every state entered, in order

    @property
    def cursors(self) -> list[str | None]:
        """The cursor each invocation was sent (``None``: the run's first)."""
        return [payload.get("cursor") for payload in self.payloads]


def run(sfn: Any, machine_arn: str, selector: Any, *, wait_s: float = 120) -> Execution:
    """Start an execution with ``selector`` as input and wait until it ends."""
    arn = sfn.start_execution(
        stateMachineArn=machine_arn, name=uuid.uuid4().hex, input=json.dumps(selector)
    )["executionArn"]
    ends = time.monotonic() + wait_s
    described = sfn.describe_execution(executionArn=arn)
    while described["status"] == "RUNNING":
        if time.monotonic() > ends:
            sfn.stop_execution(executionArn=arn)
            raise AssertionError(f"execution still running after {wait_s} s: {arn}")
        time.sleep(0.1)
        described = sfn.describe_execution(executionArn=arn)
    output = described.get("output")
    execution = Execution(
        described["status"],
        described.get("error"),
        described.get("cause"),
        None if output is None else json.loads(output),
    )
    for event in history(sfn, arn):
        details: dict[str, Any] = next(
            (v for k, v in event.items() if k.endswith("EventDetails")), {}
        )
        if event["type"] == "TaskScheduled":
            execution.payloads.append(json.loads(details["parameters"])["Payload"])
        elif event["type"] == "TaskSucceeded":
            execution.replies.append(json.loads(details["output"])["Payload"])
        elif event["type"] == "TaskFailed":
            execution.task_errors.append(details["error"])
        elif event["type"].endswith("StateEntered"):
            execution.states.append(details["name"])
    return execution


def history(sfn: Any, arn: str) -> list[dict[str, Any]]:
    """Every event of an execution's history, oldest first."""
    events: list[dict[str, Any]] = []
    kwargs: dict[str, Any] = {"executionArn": arn}
    while True:
        page = sfn.get_execution_history(**kwargs)
        events += page["events"]
        if not page.get("nextToken"):
            return events
        kwargs["nextToken"] = page["nextToken"]
