"""X-Ray tracing for Powertools' Tracer without the X-Ray SDK.

``XRayProvider`` implements Powertools' ``BaseProvider`` with the standard
library. The X-Ray SDK costs a cold start about as much as everything else the
function imports beyond boto3 and requests (``aws_xray_sdk.core`` pulls in
wrapt, asyncio and its recorder machinery; ``benchmarks/cold_start.py``
measures it). What the function needs from it is small: emit subsegments to the
X-Ray daemon the way the SDK does in Lambda, where the function's segment is
Lambda's own and the SDK only streams subsegments under it, over UDP.

A subsegment is sent only when the invocation is sampled (``Sampled=1`` in
Lambda's trace header). What gets traced:

- our blocks, ``observability.subsegment(name, **annotations)``, as ``## name``
  (namespace ``local``), with annotations and, on failure, the exception (type,
  redacted message, stack; never a response or a value);
- every AWS SDK call (``patch_modules=("botocore", ...)``) as a subsegment named
  after the service (namespace ``aws``: operation, region, request id, table,
  retries, HTTP status), with the trace header sent on to the service, as the
  SDK's botocore patch does;
- every ``requests`` call (the Cloudflare API) as a subsegment named after the
  host (namespace ``remote``: method, URL without its query, status). The trace
  header is not sent to Cloudflare.

Closed subsegments are sent nested in their top-level one: one datagram per
invocation. If the process dies inside a top-level subsegment, its finished
children are lost with it.
"""

from __future__ import annotations

import json
import os
import re
import socket
import threading
import time
import traceback
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools.shared import constants as powertools_constants
from aws_lambda_powertools.tracing.base import BaseProvider, BaseSegment

from observability import logger
from redaction import redact

if TYPE_CHECKING:
    import numbers
    from collections.abc import AsyncIterator, Callable, Iterator, Sequence

# Set by the Lambda runtime: the daemon's address, and each invocation's trace header.
DAEMON_ADDRESS_ENV = "AWS_XRAY_DAEMON_ADDRESS"
TRACE_HEADER_ENV = powertools_constants.XRAY_TRACE_ID_ENV  # _X_AMZN_TRACE_ID
DEFAULT_DAEMON_ADDRESS = "127.0.0.1:2000"
TRACED_MODULES = ("botocore", "requests")

_DOCUMENT_HEADER = b'{"format":"json","version":1}\n'
_ANNOTATION_KEY = re.compile(r"^[A-Za-z0-9_]{1,500}$")
_MAX_STACK_FRAMES = 10
_MAX_PENDING = 40  # documents a parent holds before sending them on their own
_MAX_DATAGRAM = 60_000  # bytes; the daemon takes at most 64 KB


def parse_trace_header(header: str | None) -> tuple[str, str, bool] | None:
    """``(trace_id, parent_id, sampled)`` from ``Root=...;Parent=...;Sampled=...``."""
    if not header:
        return None
    fields = dict(part.strip().split("=", 1) for part in header.split(";") if "=" in part)
    root, parent = fields.get("Root"), fields.get("Parent")
    if not root or not parent:
        return None
    return root, parent, fields.get("Sampled") == "1"


def parse_daemon_address(value: str | None) -> tuple[str, int]:
    """The UDP address from ``host:port`` or ``tcp:host:port udp:host:port``."""
    text = (value or "").strip() or DEFAULT_DAEMON_ADDRESS
    for part in text.split():
        pieces = part.split(":")
        if len(pieces) == 3 and pieces[0] == "udp":
            return pieces[1], int(pieces[2])
        if len(pieces) == 2:
            return pieces[0], int(pieces[1])
    host, port = DEFAULT_DAEMON_ADDRESS.split(":")
    return host, int(port)


class Subsegment(BaseSegment):
    """One X-Ray subsegment; its closed children wait in it to be sent with it."""

    def __init__(
        self,
        name: str,
        trace_id: str,
        parent_id: str,
        namespace: str,
        parent: Subsegment | None = None,
    ) -> None:
        self.id = os.urandom(8).hex()
        self.name = name[:200]
        self.trace_id = trace_id
        self.parent_id = parent_id
        self.parent = parent
        self.namespace = namespace
        self.children: list[dict[str, Any]] = []
        self.pending = 0  # documents waiting in children, nested ones included
        self.start_time = time.time()
        self.end_time: float | None = None
        self.annotations: dict[str, str | float | bool] = {}
        self.metadata: dict[str, dict[str, Any]] = {}
        self.http: dict[str, Any] = {}
        self.aws: dict[str, Any] = {}
        self.flags: set[str] = set()
        self.exceptions: list[dict[str, Any]] = []
        self._recorded: list[BaseException] = []

    def close(self, end_time: int | None = None) -> None:
        self.end_time = float(end_time) if end_time is not None else time.time()

    def add_subsegment(self, subsegment: Any) -> None:
        """Children are streamed on their own, pointing here by ``parent_id``."""

    def remove_subsegment(self, subsegment: Any) -> None:
        """See ``add_subsegment``."""

    def put_annotation(self, key: str, value: str | numbers.Number | bool) -> None:
        if not _ANNOTATION_KEY.match(key) or not isinstance(value, str | int | float | bool):
            logger.debug("Dropping an invalid X-Ray annotation", extra={"annotation": key[:50]})
            return
        self.annotations[key] = value

    def put_metadata(self, key: str, value: Any, namespace: str = "default") -> None:
        self.metadata.setdefault(namespace, {})[key] = value

    def add_exception(
        self, exception: BaseException, stack: Any = None, remote: bool = False
    ) -> None:
        if any(seen is exception for seen in self._recorded):
            return
        self._recorded.append(exception)
        if not self.flags & {"error", "throttle"}:
            self.flags.add("fault")
        frames = traceback.extract_tb(exception.__traceback__)[-_MAX_STACK_FRAMES:]
        self.exceptions.append(
            {
                "id": os.urandom(8).hex(),
                "type": type(exception).__name__,
                "message": redact(str(exception))[:1000],
                "remote": remote,
                "stack": [
                    {"path": Path(f.filename).name, "line": f.lineno, "label": f.name}
                    for f in frames
                ],
            }
        )

    def set_status(self, status: int | None) -> None:
        """Record the HTTP status and flag it as X-Ray does (4xx error, 429 throttle, 5xx fault)."""
        if status is None:
            return
        self.http.setdefault("response", {})["status"] = status
        if status == 429:
            self.flags.update(("throttle", "error"))
        elif 400 <= status < 500:
            self.flags.add("error")
        elif status >= 500:
            self.flags.add("fault")

    def document(self, *, nested: bool = False) -> dict[str, Any]:
        """The segment document; ``nested`` for one embedded in its parent's."""
        doc: dict[str, Any] = {
            "id": self.id,
            "name": self.name,
            "namespace": self.namespace,
            "start_time": self.start_time,
            "end_time": self.end_time if self.end_time is not None else time.time(),
        }
        if not nested:
            doc.update(_independent(self.trace_id, self.parent_id))
        for name in ("annotations", "metadata", "http", "aws"):
            if getattr(self, name):
                doc[name] = getattr(self, name)
        for flag in self.flags:
            doc[flag] = True
        if self.exceptions:
            doc["cause"] = {"working_directory": str(Path.cwd()), "exceptions": self.exceptions}
        if self.children:
            doc["subsegments"] = self.children
        return doc


def _independent(trace_id: str, parent_id: str) -> dict[str, str]:
    """What a subsegment sent on its own carries to find its place in the trace."""
    return {"trace_id": trace_id, "parent_id": parent_id, "type": "subsegment"}


class _Unsampled(Subsegment):
    """Stands in when the invocation is not sampled (or has no trace header)."""

    def __init__(self, name: str) -> None:
        super().__init__(name, "", "", "local")


class XRayProvider(BaseProvider):
    """A Powertools tracing provider that streams subsegments to the X-Ray daemon.

    Each thread keeps its own stack of open subsegments; a worker thread's
    first subsegment hangs under the main thread's innermost open one, so calls
    made from a thread pool land inside the block that started the pool.
    """

    def __init__(self, daemon_address: str | None = None) -> None:
        self._address = parse_daemon_address(daemon_address or os.environ.get(DAEMON_ADDRESS_ENV))
        self._socket: socket.socket | None = None
        self._local = threading.local()
        self._lock = threading.Lock()
        self._main_stack: list[Subsegment] = []

    # Powertools' BaseProvider -------------------------------------------------

    @contextmanager
    def in_subsegment(self, name: str | None = None, **kwargs: Any) -> Iterator[Subsegment]:
        segment = self.begin(name or "anonymous", kwargs.get("namespace", "local"))
        try:
            yield segment
        except BaseException as exc:
            segment.add_exception(exc)
            raise
        finally:
            self.end(segment)

    @asynccontextmanager
    async def in_subsegment_async(
        self, name: str | None = None, **kwargs: Any
    ) -> AsyncIterator[Subsegment]:
        with self.in_subsegment(name, **kwargs) as segment:
            yield segment

    def put_annotation(self, key: str, value: str | numbers.Number | bool) -> None:
        current = self.current()
        if current is not None:
            current.put_annotation(key, value)

    def put_metadata(self, key: str, value: Any, namespace: str = "default") -> None:
        current = self.current()
        if current is not None:
            current.put_metadata(key, value, namespace)

    def patch(self, modules: Sequence[str]) -> None:
        for module in modules:
            patcher = _PATCHERS.get(module)
            if patcher is None:
                logger.debug("No X-Ray instrumentation for this module", extra={"module": module})
            else:
                patcher(self)

    def patch_all(self) -> None:
        self.patch(tuple(_PATCHERS))

    # The rest -----------------------------------------------------------------

    def _stack(self) -> list[Subsegment]:
        stack: list[Subsegment] | None = getattr(self._local, "stack", None)
        if stack is None:
            stack = self._local.stack = []
            if threading.current_thread() is threading.main_thread():
                self._main_stack = stack
        return stack

    def current(self) -> Subsegment | None:
        """The innermost open, sampled subsegment of this thread (or of the main thread)."""
        stack = self._stack()
        if stack:
            top = stack[-1]
        elif self._main_stack:
            top = self._main_stack[-1]
        else:
            return None
        return None if isinstance(top, _Unsampled) else top

    def begin(self, name: str, namespace: str = "local") -> Subsegment:
        """Open a subsegment under the current one, or under Lambda's function segment."""
        stack = self._stack()
        parent = stack[-1] if stack else (self._main_stack[-1] if self._main_stack else None)
        segment: Subsegment
        if parent is not None:
            segment = (
                _Unsampled(name)
                if isinstance(parent, _Unsampled)
                else Subsegment(name, parent.trace_id, parent.id, namespace, parent)
            )
        else:
            context = parse_trace_header(os.environ.get(TRACE_HEADER_ENV))
            if context is None or not context[2]:
                segment = _Unsampled(name)
            else:
                segment = Subsegment(name, context[0], context[1], namespace)
        stack.append(segment)
        return segment

    def end(self, segment: Subsegment) -> None:
        """Close a subsegment: it waits in its parent, or goes out with its children.

        One datagram per top-level subsegment keeps tracing cheap on the warm
        path (the SDK in Lambda sends one per subsegment). A parent holding more
        than ``_MAX_PENDING`` documents sends them on their own first, so no
        datagram nears the daemon's 64 KB limit; a top-level one that still
        would is split the same way.
        """
        stack = self._stack()
        if segment in stack:
            del stack[stack.index(segment) :]
        if isinstance(segment, _Unsampled):
            return
        parent = segment.parent
        overflow: list[dict[str, Any]] = []
        waiting = False
        with self._lock:  # children closing in other threads see this one closed, or not yet
            if segment.end_time is None:
                segment.close()
            if parent is not None and parent.end_time is None:
                parent.children.append(segment.document(nested=True))
                parent.pending += 1 + segment.pending
                waiting = True
                if parent.pending > _MAX_PENDING:
                    overflow, parent.children, parent.pending = parent.children, [], 0
        if not waiting:
            self.send_tree(segment)
        for child in overflow:
            self.send({**child, **_independent(segment.trace_id, segment.parent_id)})

    def send_tree(self, segment: Subsegment) -> None:
        """Send a closed subsegment with its waiting children, split if too large."""
        data = _encode(segment.document())
        if data is not None and len(data) > _MAX_DATAGRAM:
            children, segment.children = segment.children, []
            for child in children:
                self.send({**child, **_independent(segment.trace_id, segment.id)})
            data = _encode(segment.document())
        if data is not None:
            self._send_bytes(data)

    def send(self, document: dict[str, Any]) -> None:
        """One document in one UDP datagram to the daemon."""
        data = _encode(document)
        if data is not None:
            self._send_bytes(data)

    def _send_bytes(self, data: bytes) -> None:
        # Tracing never fails an invocation.
        try:
            if self._socket is None:
                self._socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self._socket.sendto(data, self._address)
        except OSError as exc:
            logger.debug("Could not send to the X-Ray daemon", extra={"reason": str(exc)})

    def trace_header_for(self, segment: Subsegment) -> str:
        """The ``X-Amzn-Trace-Id`` header for a call made inside ``segment``."""
        return f"Root={segment.trace_id};Parent={segment.id};Sampled=1"


def _encode(document: dict[str, Any]) -> bytes | None:
    try:
        body = json.dumps(document, separators=(",", ":"), default=str)
    except (ValueError, TypeError) as exc:  # e.g. a circular reference in metadata
        logger.debug("Could not encode an X-Ray document", extra={"reason": str(exc)})
        return None
    return _DOCUMENT_HEADER + body.encode("utf-8")


def _patch_botocore(provider: XRayProvider) -> None:
    """Trace each AWS SDK call and pass the trace on (what the SDK's botocore patch does)."""
    import botocore.client
    from botocore.exceptions import ClientError

    client_class: Any = botocore.client.BaseClient
    if getattr(client_class, "_kv_sync_xray", False):
        return
    original: Callable[..., Any] = client_class._make_api_call

    def add_trace_header(request: Any, **_: Any) -> None:
        current = provider.current()
        if current is not None and current.namespace == "aws":
            request.headers["X-Amzn-Trace-Id"] = provider.trace_header_for(current)

    def make_api_call(client: Any, operation_name: str, api_params: dict[str, Any]) -> Any:
        service = client.meta.service_model.endpoint_prefix
        with provider.in_subsegment(service, namespace="aws") as segment:
            if not getattr(client, "_kv_sync_xray_header", False):
                client.meta.events.register(
                    "before-send", add_trace_header, unique_id="kv-sync-xray-trace-header"
                )
                client._kv_sync_xray_header = True
            segment.aws = {"operation": operation_name, "region": client.meta.region_name}
            if isinstance(api_params.get("TableName"), str):
                segment.aws["table_name"] = api_params["TableName"]
            try:
                result = original(client, operation_name, api_params)
            except ClientError as exc:
                _aws_response(segment, exc.response)
                segment.add_exception(exc, remote=True)
                raise
            _aws_response(segment, result)
            return result

    client_class._make_api_call = make_api_call
    client_class._kv_sync_xray = True


def _aws_response(segment: Subsegment, response: dict[str, Any]) -> None:
    meta = response.get("ResponseMetadata") or {}
    if meta.get("RequestId"):
        segment.aws["request_id"] = meta["RequestId"]
    if meta.get("RetryAttempts"):
        segment.aws["retries"] = meta["RetryAttempts"]
    segment.set_status(meta.get("HTTPStatusCode"))


def _patch_requests(provider: XRayProvider) -> None:
    """Trace each ``requests`` call as a ``remote`` subsegment named after the host."""
    from urllib.parse import urlsplit

    import requests

    session_class: Any = requests.Session
    if getattr(session_class, "_kv_sync_xray", False):
        return
    original: Callable[..., Any] = session_class.send

    def send(session: Any, request: Any, **kwargs: Any) -> Any:
        url = str(request.url or "")
        host = urlsplit(url).hostname or "http"
        with provider.in_subsegment(host, namespace="remote") as segment:
            segment.http["request"] = {"method": request.method, "url": url.split("?", 1)[0]}
            response = original(session, request, **kwargs)
            segment.set_status(response.status_code)
            return response

    session_class.send = send
    session_class._kv_sync_xray = True


_PATCHERS: dict[str, Callable[[XRayProvider], None]] = {
    "botocore": _patch_botocore,
    "requests": _patch_requests,
}
