"""A stand-in X-Ray daemon: a UDP socket that keeps what the function sends.

The X-Ray SDK sends trace data to ``AWS_XRAY_DAEMON_ADDRESS`` as datagrams of a
header line and one JSON document, ``{"format": "json", "version": 1}\\n{...}``.
A document is a subsegment with its closed children nested in it (the function
sends its whole ``## lambda_handler`` tree at once when the invocation ends), or
a subsegment sent on its own, naming its trace and parent (the SDK streams
subsegments early once many have built up). Counting and parsing the datagrams
shows that tracing is really on, what it recorded and what it cost on the wire.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HEADER = {"format": "json", "version": 1}


def trace_header() -> str:
    """A sampled ``_X_AMZN_TRACE_ID`` like the one Lambda sets for each invocation."""
    root = f"1-{int(time.time()):08x}-{os.urandom(12).hex()}"
    return f"Root={root};Parent={os.urandom(8).hex()};Sampled=1"


def header_fields(header: str) -> dict[str, str]:
    """``Root``, ``Parent`` and ``Sampled`` of a trace header."""
    return dict(part.split("=", 1) for part in header.split(";") if "=" in part)


@dataclass(frozen=True)
class Datagram:
    """One datagram as received: its size on the wire and its parsed document."""

    size: int
    document: dict[str, Any]


# The daemon stand-in runs in its own interpreter, as the X-Ray daemon runs beside
# a Lambda function: a thread here would contend for this process's GIL with the
# emulators' threads and slow their answers down. Each datagram is kept as one
# JSON line: its size in bytes and its text.
_DAEMON = r"""
import json, socket, sys
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
sock.bind(("127.0.0.1", 0))
print(sock.getsockname()[1], flush=True)
with open(sys.argv[1], "a", encoding="utf-8") as out:
    while True:
        data = sock.recv(65536)
        out.write(json.dumps([len(data), data.decode("utf-8", "replace")]) + "\n")
        out.flush()
"""


class XRaySink:
    """Receives X-Ray datagrams (in a child process) and hands them over on ``take``."""

    def __init__(self) -> None:
        self._file = tempfile.NamedTemporaryFile(  # noqa: SIM115 - closed in close()
            "w+", prefix="kv-sync-xray-", suffix=".jsonl", delete=False
        )
        self._process = subprocess.Popen(
            [sys.executable, "-S", "-c", _DAEMON, self._file.name],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self._process.stdout is not None
        self._port = int(self._process.stdout.readline())
        self._reader = Path(self._file.name).open("rb")  # noqa: SIM115

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self._port}"

    def take(self, settle_s: float = 0.05) -> list[Datagram]:
        """The datagrams received since the last call (after ``settle_s`` for stragglers)."""
        time.sleep(settle_s)
        received = []
        for line in self._reader.readlines():
            if not line.endswith(b"\n"):  # half-written: leave it for next time
                self._reader.seek(-len(line), os.SEEK_CUR)
                break
            size, text = json.loads(line)
            header, _, body = text.partition("\n")
            try:
                if json.loads(header) != HEADER:
                    raise ValueError(header)
                document = json.loads(body)
            except ValueError:
                document = {"unparsable": text[:200]}
            received.append(Datagram(size, document))
        return received

    def close(self) -> None:
        self._process.kill()
        self._process.wait(timeout=5)
        self._reader.close()
        self._file.close()
        Path(self._file.name).unlink(missing_ok=True)

    def __enter__(self) -> XRaySink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def flatten(documents: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every (sub)segment in the documents, nested ones included."""
    out: list[dict[str, Any]] = []
    stack = list(documents)
    while stack:
        entity = stack.pop()
        out.append(entity)
        stack.extend(entity.get("subsegments") or [])
    return out


def by_trace(datagrams: list[Datagram]) -> dict[str, list[Datagram]]:
    """Datagrams grouped by the trace (one per invocation) they belong to."""
    traces: dict[str, list[Datagram]] = defaultdict(list)
    for datagram in datagrams:
        traces[str(datagram.document.get("trace_id"))].append(datagram)
    return dict(traces)


def summarize(datagrams: list[Datagram], trace_header: str = "") -> dict[str, Any]:
    """What one invocation's datagrams traced.

    Names, annotations, the AWS operations and remote hosts called, whether any
    response was captured, and whether everything hangs in one tree: ``## lambda_handler``
    under the function segment named by ``trace_header`` (Lambda's ``_X_AMZN_TRACE_ID``),
    every other document under an entity of that tree.
    """
    documents = [d.document for d in datagrams]
    entities = flatten(documents)
    names = sorted({str(e.get("name")) for e in entities})
    annotations: dict[str, Any] = {}
    for entity in entities:
        annotations.update(entity.get("annotations") or {})
    # Powertools' capture_method records "<name> response" metadata; nothing may.
    captured = any(
        str(key).endswith("response")
        for entity in entities
        for namespace in (entity.get("metadata") or {}).values()
        if isinstance(namespace, dict)
        for key in namespace
    )
    fields = header_fields(trace_header)
    ids = {e.get("id") for e in entities}
    roots = [d for d in documents if d.get("name") == "## lambda_handler"]
    linked = (
        len(roots) == 1
        and all(d.get("trace_id") == fields.get("Root") for d in documents)
        and roots[0].get("parent_id") == fields.get("Parent")
        and all(d.get("parent_id") in ids for d in documents if d is not roots[0])
    )
    return {
        "datagrams": len(datagrams),
        "bytes": sum(d.size for d in datagrams),
        "subsegments": len(entities),
        "names": names,
        "annotations": annotations,
        "aws_operations": sorted(
            str(e.get("aws", {}).get("operation")) for e in entities if e.get("namespace") == "aws"
        ),
        "aws_services": sorted(
            {str(e.get("name")) for e in entities if e.get("namespace") == "aws"}
        ),
        "remote_hosts": sorted(
            {str(e.get("name")) for e in entities if e.get("namespace") == "remote"}
        ),
        "captured_response": captured,
        "linked": linked if trace_header else None,
    }


def trace_problem(
    trace: dict[str, Any],
    *,
    subsegments: tuple[str, ...],
    annotations: tuple[str, ...],
    aws_services: tuple[str, ...],
    remote_host: str,
) -> str | None:
    """Why an invocation's trace is not what the function must send, if it is not."""
    if trace["datagrams"] == 0:
        return "no X-Ray datagram received"
    missing = set(subsegments) - set(trace["names"])
    if missing:
        return f"subsegments missing: {sorted(missing)}"
    missing = set(annotations) - set(trace["annotations"])
    if missing:
        return f"annotations missing: {sorted(missing)}"
    missing = set(aws_services) - set(trace["aws_services"])
    if missing:
        return f"AWS calls not traced: {sorted(missing)}"
    if remote_host not in trace["remote_hosts"]:
        return f"Cloudflare calls (host {remote_host}) not traced"
    if trace["captured_response"]:
        return "a response was captured"
    if not trace["linked"]:
        return "not one tree under the function segment"
    return None
