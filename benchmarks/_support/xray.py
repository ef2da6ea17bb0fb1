"""A stand-in X-Ray daemon: a UDP socket that keeps what the function sends.

The X-Ray SDK sends each (sub)segment as one datagram,
``{"format": "json", "version": 1}\\n{...document...}``, to
``AWS_XRAY_DAEMON_ADDRESS``. Counting and parsing them shows that tracing is
really on, and what it recorded.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def trace_header() -> str:
    """A sampled ``_X_AMZN_TRACE_ID`` like the one Lambda sets for each invocation."""
    root = f"1-{int(time.time()):08x}-{os.urandom(12).hex()}"
    return f"Root={root};Parent={os.urandom(8).hex()};Sampled=1"


# The daemon stand-in runs in its own interpreter, as the X-Ray daemon runs beside
# a Lambda function: a thread here would contend for this process's GIL with the
# emulators' threads and slow their answers down.
_DAEMON = r"""
import json, socket, sys
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
sock.bind(("127.0.0.1", 0))
print(sock.getsockname()[1], flush=True)
with open(sys.argv[1], "a", encoding="utf-8") as out:
    while True:
        data = sock.recv(65536)
        out.write(json.dumps(data.decode("utf-8", "replace")) + "\n")
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

    def take(self, settle_s: float = 0.05) -> list[dict[str, Any]]:
        """The documents received since the last call (after ``settle_s`` for stragglers)."""
        time.sleep(settle_s)
        documents = []
        for line in self._reader.readlines():
            if not line.endswith(b"\n"):  # half-written: leave it for next time
                self._reader.seek(-len(line), os.SEEK_CUR)
                break
            _, _, body = json.loads(line).partition("\n")
            try:
                documents.append(json.loads(body))
            except ValueError:
                documents.append({"unparsable": body[:200]})
        return documents

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


def summarize(documents: list[dict[str, Any]], trace_header: str = "") -> dict[str, Any]:
    """What was traced: names, annotations, AWS calls, whether any response was
    captured, and whether every subsegment hangs in one tree under the function
    segment named by ``trace_header`` (Lambda's ``_X_AMZN_TRACE_ID``)."""
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
    fields = dict(part.split("=", 1) for part in trace_header.split(";") if "=" in part)
    ids = {e.get("id") for e in entities} | {fields.get("Parent")}
    # Documents sent on their own name their trace and parent; nested ones are
    # placed by their nesting.
    linked = bool(documents) and all(
        d.get("trace_id") == fields.get("Root") and d.get("parent_id") in ids for d in documents
    )
    return {
        "datagrams": len(documents),
        "subsegments": len(entities),
        "names": names,
        "annotations": annotations,
        "aws_calls": sum(1 for e in entities if e.get("namespace") == "aws"),
        "captured_response": captured,
        "linked": linked if trace_header else None,
    }
