"""Invoking the function as Lambda runs it, with active tracing, and keeping all it emits.

``TracedFunction`` starts ``tests.support.lambda_container`` (a warm container: the
real handler in a process of its own, traced by Powertools' Tracer on the real X-Ray
SDK) and an ``XRayDaemon``, a UDP socket standing in for the X-Ray daemon. Each
``invoke`` returns an ``Outcome``: the reply, what the handler raised, every line it
printed (logs, EMF metrics, warnings) and every X-Ray document it sent, so a test can
check exactly what would reach CloudWatch and X-Ray.
"""

from __future__ import annotations

import json
import os
import queue
import secrets
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

REPO = Path(__file__).resolve().parents[2]
DOCUMENT_HEADER = {"format": "json", "version": 1}
# What the X-Ray SDK logs when a subsegment has no segment to go under: a trace broken
# in two (for example a call made on a thread the trace context did not follow).
CONTEXT_MISSING = "cannot find the current segment/subsegment"


class XRayDaemon:
    """A UDP socket on loopback that receives X-Ray documents, as the daemon would."""

    def __init__(self) -> None:
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 * 1024 * 1024)
        self.socket.bind(("127.0.0.1", 0))
        self.socket.setblocking(False)

    @property
    def address(self) -> str:
        """``host:port``, the value of ``AWS_XRAY_DAEMON_ADDRESS``."""
        host, port = self.socket.getsockname()[:2]
        return f"{host}:{port}"

    def drain(self) -> list[dict[str, Any]]:
        """Every document received since the last call, in arrival order."""
        documents: list[dict[str, Any]] = []
        while True:
            try:
                datagram = self.socket.recv(65_536)
            except BlockingIOError:
                return documents
            header, _, body = datagram.partition(b"\n")
            assert json.loads(header) == DOCUMENT_HEADER, header
            documents.append(json.loads(body))

    def close(self) -> None:
        """Stop receiving."""
        self.socket.close()


def new_trace_header() -> str:
    """A sampled ``_X_AMZN_TRACE_ID``, as Lambda sets it for one invocation."""
    root = f"1-{int(time.time()):08x}-{secrets.token_hex(12)}"
    return f"Root={root};Parent={secrets.token_hex(8)};Sampled=1"


def entities(documents: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every segment and subsegment in ``documents``, nested subsegments included."""
    found: list[dict[str, Any]] = []
    pending = list(documents)
    while pending:
        node = pending.pop()
        found.append(node)
        pending.extend(node.get("subsegments") or [])
    return found


@dataclass
class Outcome:
    """One invocation as the caller, CloudWatch and X-Ray saw it."""

    response: Any
    raised: dict[str, Any] | None
    output: str
    elapsed: float
    trace_id: str
    parent_id: str
    traces: list[dict[str, Any]] = field(default_factory=list)

    @property
    def document(self) -> dict[str, Any]:
        """The response document (a Function URL reply's body, parsed)."""
        if isinstance(self.response, dict) and "statusCode" in self.response:
            parsed: dict[str, Any] = json.loads(self.response["body"])
            return parsed
        assert isinstance(self.response, dict), (self.response, self.raised)
        return self.response

    @property
    def status(self) -> int | None:
        """The Function URL status, ``None`` for other triggers."""
        if isinstance(self.response, dict):
            status: int | None = self.response.get("statusCode")
            return status
        return None

    @property
    def headers(self) -> dict[str, str]:
        """The Function URL reply's headers."""
        if isinstance(self.response, dict):
            return dict(self.response.get("headers") or {})
        return {}

    @property
    def error(self) -> dict[str, Any]:
        """The document's ``error``."""
        error: dict[str, Any] = self.document["error"]
        return error

    def lines(self) -> list[dict[str, Any]]:
        """Every JSON line printed: log records and EMF documents."""
        found = []
        for line in self.output.splitlines():
            if line.startswith("{"):
                try:
                    found.append(json.loads(line))
                except ValueError:
                    continue  # a line of a traceback or a warning, not a record
        return found

    def log_records(self) -> list[dict[str, Any]]:
        """The function's log records (Powertools JSON lines)."""
        return [line for line in self.lines() if "_aws" not in line and "level" in line]

    def emf(self) -> list[dict[str, Any]]:
        """Every EMF metric document printed."""
        return [line for line in self.lines() if "_aws" in line]

    def metric(self, name: str) -> float | None:
        """Sum of a metric over every EMF document, ``None`` when never emitted."""
        values = []
        for doc in self.emf():
            if name in doc:
                raw = doc[name]
                values.append(sum(raw) if isinstance(raw, list) else raw)
        return float(sum(values)) if values else None

    def counted(self, name: str) -> float:
        """Sum of a count metric, 0 when never emitted (the function leaves zero counts out)."""
        return self.metric(name) or 0.0

    def failure_types(self) -> list[str]:
        """The ``ErrorType`` of every ``SyncFailed`` document."""
        return [doc.get("ErrorType", "?") for doc in self.emf() if "SyncFailed" in doc]

    def subsegments(self) -> list[dict[str, Any]]:
        """Every X-Ray (sub)segment this invocation sent, nested ones included."""
        return entities(self.traces)

    def names(self) -> set[str]:
        """The names of those subsegments."""
        return {entity["name"] for entity in self.subsegments()}

    def annotations(self) -> list[dict[str, Any]]:
        """The annotations of every traced subsegment that has some."""
        return [e["annotations"] for e in self.subsegments() if e.get("annotations")]

    def exceptions(self) -> dict[str, dict[str, Any]]:
        """Every exception the trace recorded (``cause.exceptions``), by id.

        A subsegment the exception went through refers to it by id (``cause`` is
        then that id) instead of recording it again.
        """
        found: dict[str, dict[str, Any]] = {}
        for entity in self.subsegments():
            cause = entity.get("cause")
            for exc in cause.get("exceptions", []) if isinstance(cause, dict) else []:
                found[exc["id"]] = exc
        return found

    def everything(self) -> str:
        """All of it as text: reply, raised error, printed lines and trace documents."""
        parts = [
            json.dumps(self.response, default=str),
            json.dumps(self.raised, default=str),
            self.output,
            *(json.dumps(doc) for doc in self.traces),
        ]
        return "\n".join(parts)

    def assert_no_secrets(self, *secret_values: str) -> None:
        """No secret appears anywhere, raw or JSON-escaped; and something was captured."""
        assert self.output.strip(), "nothing was printed: the capture is not wired up"
        assert self.traces, "no X-Ray document arrived: tracing is not wired up"
        text = self.everything()
        for secret in secret_values:
            assert secret, "an empty secret proves nothing"
            for form in {secret, json.dumps(secret)[1:-1]}:
                assert form not in text, f"secret leaked: {secret[:6]}…"

    def assert_traced(self) -> None:
        """One intact trace: the handler's subsegment under Lambda's segment, every other
        subsegment under one of this invocation's, and no context lost on the way."""
        assert CONTEXT_MISSING not in self.output, self.output[-2000:]
        entities = self.subsegments()
        ids = {entity["id"] for entity in entities}
        (handler,) = [e for e in entities if e["name"] == "## lambda_handler"]
        assert handler["parent_id"] == self.parent_id
        for entity in entities:
            assert entity is handler or entity.get("parent_id") in ids, entity["name"]
            assert not entity.get("in_progress"), entity["name"]
        assert all(doc["trace_id"] == self.trace_id for doc in self.traces)


class ContainerDied(AssertionError):
    """The container did not answer in time, or exited; it is restarted on next use."""


class TracedFunction:
    """A warm, traced container running the real handler (see the module docstring).

    Parameters
    ----------
    base_env
        Variables every invocation gets (the function's own are given per invocation).
    fast_aws_retries
        Shrink botocore's retry backoff (attempt counts stay as configured).
    """

    def __init__(self, base_env: dict[str, str], *, fast_aws_retries: bool = False) -> None:
        self.daemon = XRayDaemon()
        self._base_env = base_env
        self._fast = fast_aws_retries
        self._process: subprocess.Popen[str] | None = None
        self._replies: queue.Queue[str | None] = queue.Queue()
        self._stderr: IO[str] | None = None
        self._env: dict[str, str] = {}

    def __enter__(self) -> TracedFunction:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
        self.daemon.close()

    def invoke(
        self,
        event: Any,
        *,
        env: dict[str, str],
        timeout_ms: int = 30_000,
        reset: bool = False,
        sabotage: str | None = None,
        wait_s: float | None = None,
    ) -> Outcome:
        """Invoke the handler in the container; wait for its reply and its trace data.

        A change of an ``AWS_ENDPOINT_URL*`` variable resets the container's
        clients too, as a new container would start with new ones.
        ``wait_s`` (default: the timeout plus 15 s) is how long the reply may take.
        """
        process = self._started()
        moved = _endpoints(env) != _endpoints(self._env)
        self._env = dict(env)
        header = new_trace_header()
        request = {
            "event": event,
            "timeout_ms": timeout_ms,
            "trace_header": header,
            "env": env,
            "reset": reset or moved,
            "sabotage": sabotage,
        }
        self.daemon.drain()
        assert process.stdin is not None
        process.stdin.write(json.dumps(request) + "\n")
        process.stdin.flush()
        wait = wait_s if wait_s is not None else timeout_ms / 1000 + 15
        try:
            line = self._replies.get(timeout=wait)
        except queue.Empty:
            self.stop()
            raise ContainerDied(f"no reply within {wait} s") from None
        if line is None:
            log = self._log()
            self.stop()
            raise ContainerDied(f"the container exited:\n{log}")
        reply = json.loads(line)
        fields = dict(part.split("=", 1) for part in header.split(";"))
        trace_id = fields["Root"]
        traces = [doc for doc in self.daemon.drain() if doc.get("trace_id") == trace_id]
        return Outcome(
            reply["response"],
            reply["raised"],
            reply["output"],
            reply["elapsed"],
            trace_id,
            fields["Parent"],
            traces,
        )

    def stop(self) -> None:
        """End the container (the next ``invoke`` starts a fresh one)."""
        process, self._process = self._process, None
        if process is None:
            return
        if process.stdin is not None:
            process.stdin.close()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None

    def _started(self) -> subprocess.Popen[str]:
        if self._process is not None and self._process.poll() is None:
            return self._process
        env = {
            **self._base_env,
            "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "lambda_function")]),
            "LAMBDA_TASK_ROOT": str(REPO / "lambda_function"),
            "AWS_XRAY_DAEMON_ADDRESS": self.daemon.address,
            "AWS_LAMBDA_FUNCTION_NAME": "cloudflare-data-sync",
            "PYTHONDONTWRITEBYTECODE": "1",
        }
        env.pop("POWERTOOLS_TRACE_DISABLED", None)
        command = [sys.executable, "-m", "tests.support.lambda_container"]
        if self._fast:
            command.append("--fast-aws-retries")
        self._stderr = tempfile.TemporaryFile("w+")  # noqa: SIM115 - lives with the process
        self._replies = queue.Queue()
        self._process = subprocess.Popen(
            command,
            cwd=REPO,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
            encoding="utf-8",
        )
        threading.Thread(
            target=_read_lines, args=(self._process.stdout, self._replies), daemon=True
        ).start()
        self._env = {}
        return self._process

    def _log(self) -> str:
        if self._stderr is None:
            return ""
        self._stderr.seek(0)
        return self._stderr.read()[-3000:]


def _endpoints(env: dict[str, str]) -> dict[str, str]:
    return {name: value for name, value in env.items() if name.startswith("AWS_ENDPOINT_URL")}


def _read_lines(stream: IO[str] | None, lines: queue.Queue[str | None]) -> None:
    assert stream is not None
    for line in stream:
        lines.put(line)
    lines.put(None)
