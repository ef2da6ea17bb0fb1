"""A local emulator of the Cloudflare Workers KV REST API (stdlib only).

The emulator is a real HTTP/1.1 server on a loopback port. It follows the Workers KV
subset of Cloudflare's official OpenAPI description that is copied into this repository
as ``local/kv-openapi.json`` (its ``x-source`` field names the upstream commit): the same
path templates (under ``/client/v4``), parameters, response envelopes and documented limits.
Every operation of that subset is implemented; see ``ROUTES``.

Behaviour that the spec leaves open, and what this emulator does:

* Authentication: only ``Authorization: Bearer <token>`` (the spec's ``api_token``
  scheme) is accepted; the legacy ``X-Auth-Email``/``X-Auth-Key`` pair is not.
* Key names in ``/values/{key_name}`` and ``/metadata/{key_name}`` are decoded exactly
  once (percent-decoding of the raw path segment, as UTF-8). A raw ``/`` in the name
  splits it into several segments, so the route does not match (404, code 7003).
  Dot segments are not normalised: ``..%2F..%2Fx`` is the key ``../../x``.
* List keys: keys are sorted by their UTF-8 bytes; the cursor is the unpadded URL-safe
  base64 of the last name returned (treat it as opaque); it is ``""`` on the last page.
* Bulk get answers ``null`` for keys that are missing or expired.
* Expired keys (``expiration <= now``) behave as missing everywhere.
* Writes over HTTP require ``expiration`` to be at least 60 s in the future and
  ``expiration_ttl >= 60`` (as Cloudflare does); the Python seeding API ``put`` accepts
  any expiration, so tests can seed already-expired keys.
* The deprecated ``DELETE .../bulk`` behaves like ``POST .../bulk/delete``.
* Namespace pagination: ``page``/``per_page`` (1-1000, default 20), ``order``
  (``id``/``title``) and ``direction`` (``asc``/``desc``).

Error codes. Codes marked "Cloudflare" are the ones the real API is known to send; the
others are this emulator's choice (the spec only requires integers >= 1000):

=======  ======  ==========================================================================
code     status  meaning
=======  ======  ==========================================================================
7001     405     method not allowed on an existing path (emulator choice)
7003     404     "No route for the URI" (Cloudflare; also the spec's failure example)
10000    401     "Authentication error": missing or unknown bearer token (Cloudflare code;
                 Cloudflare itself often answers 400/403)
10000    403     "Authentication error": the token is valid but the account id is not
                 the emulator's account (Cloudflare code)
10001    500     internal error; also the error of an ``envelope_failure`` fault
10009    404     "get: 'key not found'" (Cloudflare) for values and metadata
10010    400     invalid query parameter (``limit`` outside 10-1000, ``page``,
                 ``per_page``, ``order``, ``direction``, malformed ``cursor``)
10011    413     value larger than 25 MiB (emulator choice: 413 Payload Too Large)
10012    400     malformed request body (invalid JSON, wrong shape, bad base64, bad
                 multipart, missing ``value`` field, bad namespace title)
10013    404     namespace not found
10014    400     a namespace with this title already exists (Cloudflare)
10016    400     invalid key name: empty, longer than 512 bytes or not UTF-8
10021    400     invalid ``expiration`` / ``expiration_ttl``
10022    400     metadata not JSON or longer than 1024 bytes once serialised
10024    400     too many keys: bulk get > 100, bulk write/delete > 10,000
10025    400     bulk get: a value is not valid UTF-8 text (bulk get only returns text;
                 read such keys one at a time with ``GET .../values/{key_name}``)
10026    400     bulk get with ``type: json``: a value is not valid JSON
10429    429     rate limited (``rate_limit``); ``Retry-After`` says when the window
                 frees. Cloudflare's global limiter sends code 971, which is below the
                 spec's minimum of 1000, so the emulator uses 10000 + HTTP status.
10000+s  s       an injected ``status`` fault (401/403 use 10000)
=======  ======  ==========================================================================

Run it from the command line with::

    python -m local.kv_emulator --port 8787 --token T --namespace-title demo
"""

from __future__ import annotations

import argparse
import base64
import binascii
import contextlib
import email.parser
import json
import math
import random
import socket
import struct
import sys
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import parse_qs, unquote_to_bytes

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence
    from types import TracebackType

API_PREFIX = "/client/v4"
MAX_KEY_BYTES = 512
MAX_VALUE_BYTES = 25 * 1024 * 1024
MAX_METADATA_BYTES = 1024
MIN_LIST_LIMIT = 10
MAX_LIST_LIMIT = 1000
MAX_BULK_GET_KEYS = 100
MAX_BULK_WRITE_KEYS = 10_000
MIN_EXPIRATION_TTL = 60
MAX_TITLE_LENGTH = 512
MAX_REQUEST_BODY = 100 * 1024 * 1024 + 1024 * 1024
DEFAULT_ACCOUNT_ID = "acc0123456789abcdef0123456789abcd"

CODE_METHOD_NOT_ALLOWED = 7001
CODE_NO_ROUTE = 7003
CODE_AUTH = 10000
CODE_INTERNAL = 10001
CODE_KEY_NOT_FOUND = 10009
CODE_BAD_QUERY = 10010
CODE_VALUE_TOO_LARGE = 10011
CODE_BAD_BODY = 10012
CODE_NAMESPACE_NOT_FOUND = 10013
CODE_TITLE_EXISTS = 10014
CODE_BAD_KEY = 10016
CODE_BAD_EXPIRATION = 10021
CODE_BAD_METADATA = 10022
CODE_TOO_MANY_KEYS = 10024
CODE_NOT_UTF8 = 10025
CODE_NOT_JSON = 10026
CODE_RATE_LIMITED = 10429

_NS = "/accounts/{account_id}/storage/kv/namespaces"


class Route(NamedTuple):
    """One implemented operation: method, path template (relative to ``/client/v4``)
    and the query parameters it reads."""

    method: str
    template: str
    query_params: tuple[str, ...]
    name: str


ROUTES: tuple[Route, ...] = (
    Route("GET", _NS, ("page", "per_page", "order", "direction"), "list_namespaces"),
    Route("POST", _NS, (), "create_namespace"),
    Route("GET", _NS + "/{namespace_id}", (), "get_namespace"),
    Route("PUT", _NS + "/{namespace_id}", (), "rename_namespace"),
    Route("DELETE", _NS + "/{namespace_id}", (), "delete_namespace"),
    Route("PUT", _NS + "/{namespace_id}/bulk", (), "bulk_write"),
    Route("DELETE", _NS + "/{namespace_id}/bulk", (), "bulk_delete"),
    Route("POST", _NS + "/{namespace_id}/bulk/delete", (), "bulk_delete"),
    Route("POST", _NS + "/{namespace_id}/bulk/get", (), "bulk_get"),
    Route("GET", _NS + "/{namespace_id}/keys", ("limit", "prefix", "cursor"), "list_keys"),
    Route("GET", _NS + "/{namespace_id}/metadata/{key_name}", (), "get_metadata"),
    Route("GET", _NS + "/{namespace_id}/values/{key_name}", (), "get_value"),
    Route(
        "PUT",
        _NS + "/{namespace_id}/values/{key_name}",
        ("expiration", "expiration_ttl"),
        "put_value",
    ),
    Route("DELETE", _NS + "/{namespace_id}/values/{key_name}", (), "delete_value"),
)

_HTML_PAGE = (
    "<!DOCTYPE html>\n<html>\n<head><title>{status} {phrase}</title></head>\n"
    "<body>\n<center><h1>{status} {phrase}</h1></center>\n<hr><center>cloudflare</center>\n"
    "</body>\n</html>\n"
)


@dataclass
class RecordedRequest:
    """A request the emulator received.

    ``path`` is the request target exactly as sent on the wire (not decoded, query
    included); ``key`` is the decoded key name for ``values``/``metadata`` routes;
    ``status`` is the HTTP status sent, or ``None`` when the connection was dropped.
    """

    method: str
    path: str
    key: str | None
    headers: dict[str, str]
    status: int | None
    body: bytes = b""
    route: str | None = None
    faulted: bool = False


@dataclass
class _Fault:
    status: int | None
    times: int
    path_contains: str
    method: str | None
    delay: float
    retry_after: str | None
    drop_connection: bool
    reset_mid_body: bool
    truncate_body: bool
    html_body: bool
    envelope_failure: bool
    probability: float | None


@dataclass
class _Entry:
    value: bytes
    metadata: object | None
    expiration: int | None

    def expired(self, now: float) -> bool:
        return self.expiration is not None and self.expiration <= now


@dataclass
class _Namespace:
    id: str
    title: str
    entries: dict[str, _Entry] = field(default_factory=dict)

    def as_result(self) -> dict[str, object]:
        return {"id": self.id, "title": self.title, "supports_url_encoding": True}


@dataclass
class _Response:
    status: int
    body: bytes
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class _Request:
    method: str
    raw_path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    route: Route | None
    params: dict[str, str]
    key: str | None
    key_error: str | None


class ApiError(Exception):
    """Raised inside the emulator to answer with a Cloudflare failure envelope."""

    def __init__(
        self, status: int, code: int, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


def _json_bytes(data: object) -> bytes:
    return json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def success_envelope(result: object, result_info: dict[str, object] | None = None) -> bytes:
    """Serialise a Cloudflare success envelope."""
    envelope: dict[str, object] = {
        "success": True,
        "errors": [],
        "messages": [],
        "result": result,
    }
    if result_info is not None:
        envelope["result_info"] = result_info
    return _json_bytes(envelope)


def failure_envelope(code: int, message: str) -> bytes:
    """Serialise a Cloudflare failure envelope."""
    return _json_bytes(
        {
            "success": False,
            "errors": [{"code": code, "message": message}],
            "messages": [],
            "result": None,
        }
    )


def _error_response(err: ApiError) -> _Response:
    return _Response(err.status, failure_envelope(err.code, err.message), headers=err.headers)


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def encode_cursor(last_key: str) -> str:
    """Opaque list cursor: unpadded URL-safe base64 of the last key returned."""
    return base64.urlsafe_b64encode(last_key.encode("utf-8")).decode("ascii").rstrip("=")


def _decode_cursor(cursor: str) -> str:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        return base64.b64decode(padded, altchars=b"-_", validate=True).decode("utf-8")
    except (binascii.Error, ValueError) as exc:
        raise ApiError(400, CODE_BAD_QUERY, f"Invalid cursor: {cursor!r}") from exc


def _check_key_name(key: str) -> None:
    if not key:
        raise ApiError(400, CODE_BAD_KEY, "Invalid key name: the key name is empty")
    if len(key.encode("utf-8")) > MAX_KEY_BYTES:
        raise ApiError(
            400, CODE_BAD_KEY, f"Invalid key name: key names may be at most {MAX_KEY_BYTES} bytes"
        )


def _check_value(value: bytes) -> None:
    if len(value) > MAX_VALUE_BYTES:
        raise ApiError(
            413,
            CODE_VALUE_TOO_LARGE,
            f"Value too large: values may be at most {MAX_VALUE_BYTES} bytes",
        )


def _normalise_metadata(metadata: object) -> object | None:
    if metadata is None:
        return None
    try:
        serialised = json.dumps(metadata, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ApiError(400, CODE_BAD_METADATA, "Metadata must be JSON") from exc
    if len(serialised.encode("utf-8")) > MAX_METADATA_BYTES:
        raise ApiError(
            400,
            CODE_BAD_METADATA,
            f"Metadata too large: at most {MAX_METADATA_BYTES} bytes once serialised",
        )
    result: object = json.loads(serialised)
    return result


def _number(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ApiError(400, CODE_BAD_EXPIRATION, f"Invalid {what}: {value!r}")
    try:
        number = float(value)
    except ValueError as exc:
        raise ApiError(400, CODE_BAD_EXPIRATION, f"Invalid {what}: {value!r}") from exc
    if not math.isfinite(number):
        raise ApiError(400, CODE_BAD_EXPIRATION, f"Invalid {what}: {value!r}")
    return number


def _resolve_expiration(expiration: object, expiration_ttl: object, now: float) -> int | None:
    """Apply Cloudflare's write rules: ttl wins over expiration; both must be >= 60 s out."""
    if expiration_ttl is not None and expiration_ttl != "":
        ttl = _number(expiration_ttl, "expiration_ttl")
        if ttl < MIN_EXPIRATION_TTL:
            raise ApiError(
                400,
                CODE_BAD_EXPIRATION,
                f"Invalid expiration_ttl of {expiration_ttl}. Expiration TTL must be at least "
                f"{MIN_EXPIRATION_TTL}.",
            )
        return int(now + ttl)
    if expiration is not None and expiration != "":
        when = _number(expiration, "expiration")
        if when < now + MIN_EXPIRATION_TTL:
            raise ApiError(
                400,
                CODE_BAD_EXPIRATION,
                f"Invalid expiration of {expiration}. Expiration times must be at least "
                f"{MIN_EXPIRATION_TTL} seconds in the future.",
            )
        return int(when)
    return None


def _parse_json_body(body: bytes) -> object:
    try:
        parsed: object = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ApiError(400, CODE_BAD_BODY, "Malformed request body: not valid JSON") from exc
    return parsed


def _parse_multipart(content_type: str, body: bytes) -> dict[str, bytes]:
    """Minimal, byte-exact multipart/form-data parser (fields by name)."""
    header = email.parser.HeaderParser().parsestr(f"Content-Type: {content_type}\r\n\r\n")
    boundary = header.get_param("boundary")
    if not isinstance(boundary, str) or not boundary:
        raise ApiError(400, CODE_BAD_BODY, "Malformed multipart body: no boundary")
    delimiter = b"--" + boundary.encode("latin-1")
    fields: dict[str, bytes] = {}
    chunks = body.split(delimiter)
    if len(chunks) < 3:
        raise ApiError(400, CODE_BAD_BODY, "Malformed multipart body")
    for chunk in chunks[1:]:
        if chunk.startswith(b"--"):
            break
        part = chunk.removeprefix(b"\r\n")
        raw_headers, sep, content = part.partition(b"\r\n\r\n")
        if not sep:
            raise ApiError(400, CODE_BAD_BODY, "Malformed multipart body: part without headers")
        content = content.removesuffix(b"\r\n")
        part_headers = email.parser.BytesHeaderParser().parsebytes(raw_headers + b"\r\n\r\n")
        name = part_headers.get_param("name", header="content-disposition")
        if isinstance(name, str):
            fields[name] = content
    return fields


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], emulator: KVEmulator) -> None:
        self.emulator = emulator
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self._open_sockets: set[socket.socket] = set()
        self._open_lock = threading.Lock()
        super().__init__(address, _Handler)

    def process_request(
        self, request: socket.socket | tuple[bytes, socket.socket], client_address: Any
    ) -> None:
        self.emulator._connection_accepted()
        if isinstance(request, socket.socket):
            with self._open_lock:
                self._open_sockets.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: socket.socket | tuple[bytes, socket.socket]) -> None:
        if isinstance(request, socket.socket):
            with self._open_lock:
                self._open_sockets.discard(request)
        super().shutdown_request(request)

    def handle_error(
        self, request: socket.socket | tuple[bytes, socket.socket], client_address: Any
    ) -> None:
        if isinstance(sys.exc_info()[1], ConnectionError | TimeoutError):
            return  # the client went away (timeouts, injected resets): not worth a traceback
        super().handle_error(request, client_address)

    def close_open_connections(self) -> None:
        with self._open_lock:
            sockets = list(self._open_sockets)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # no 40 ms Nagle/delayed-ACK stalls between header and body

    def version_string(self) -> str:
        return "cloudflare"

    server: _Server

    def do_GET(self) -> None:
        self._serve()

    def do_PUT(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def do_DELETE(self) -> None:
        self._serve()

    def do_PATCH(self) -> None:
        self._serve()

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.emulator.verbose:
            super().log_message(format, *args)

    def _read_body(self) -> bytes | None:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._read_chunked()
        length_header = self.headers.get("Content-Length")
        if length_header is None:
            return b""
        try:
            length = int(length_header)
        except ValueError:
            return None
        if length < 0 or length > MAX_REQUEST_BODY:
            return None
        return self.rfile.read(length)

    def _read_chunked(self) -> bytes | None:
        chunks: list[bytes] = []
        total = 0
        while True:
            line = self.rfile.readline(65537)
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                return None
            if size == 0:
                while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                    pass
                return b"".join(chunks)
            total += size
            if total > MAX_REQUEST_BODY:
                return None
            chunks.append(self.rfile.read(size))
            self.rfile.readline(65537)

    def _serve(self) -> None:
        emulator = self.server.emulator
        body = self._read_body()
        headers = dict(self.headers.items())
        if body is None:
            self.close_connection = True
            rejected = _Response(
                413, failure_envelope(CODE_BAD_BODY, "Request body unreadable or too large")
            )
            emulator._record(
                RecordedRequest(self.command, self.path, None, headers, rejected.status)
            )
            self._send(rejected)
            return
        request = emulator._parse_request(self.command, self.path, headers, body)
        fault = emulator._take_fault(self.command, self.path)
        record = RecordedRequest(
            method=self.command,
            path=self.path,
            key=request.key,
            headers=headers,
            status=None,
            body=body,
            route=request.route.template if request.route else None,
            faulted=fault is not None,
        )
        if fault is not None and fault.delay > 0:
            time.sleep(fault.delay)
        if fault is not None and fault.drop_connection:
            emulator._record(record)
            self.close_connection = True
            return
        faulted = emulator._fault_response(fault) if fault is not None else None
        response = faulted if faulted is not None else emulator._handle(request)
        if fault is not None and fault.retry_after is not None:
            response.headers["Retry-After"] = fault.retry_after
        record.status = response.status
        emulator._record(record)
        if fault is not None and fault.reset_mid_body:
            self._send_and_reset(response)
        elif fault is not None and fault.truncate_body:
            self._send(response, claimed_length=len(response.body) + max(16, len(response.body)))
            self.close_connection = True
        else:
            self._send(response)

    def _send(self, response: _Response, claimed_length: int | None = None) -> None:
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type)
        length = len(response.body) if claimed_length is None else claimed_length
        self.send_header("Content-Length", str(length))
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(response.body)
        self.wfile.flush()

    def _send_and_reset(self, response: _Response) -> None:
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(len(response.body)))
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(response.body[: len(response.body) // 2])
        self.wfile.flush()
        self.close_connection = True
        # SO_LINGER with a zero timeout makes close() send a RST instead of a FIN.
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.connection.close()


class KVEmulator:
    """An in-memory Cloudflare Workers KV API served over HTTP on a loopback port."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        account_id: str = DEFAULT_ACCOUNT_ID,
        tokens: Iterable[str] = ("test-token",),
        seed: int | None = None,
        verbose: bool = False,
    ) -> None:
        self.host = host
        self._port = port
        self.account_id = account_id
        self.verbose = verbose
        self._tokens: frozenset[str] = frozenset(tokens)
        self._lock = threading.RLock()
        self._namespaces: dict[str, _Namespace] = {}
        self._faults: list[_Fault] = []
        self._random = random.Random(seed)  # noqa: S311 - fault injection, not crypto
        self._rate_limit: tuple[int, float] | None = None
        self._rate_window: deque[float] = deque()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.requests: list[RecordedRequest] = []
        self.connections_opened = 0
        self._handlers: dict[str, Callable[[_Request], _Response]] = {
            "list_namespaces": self._list_namespaces,
            "create_namespace": self._create_namespace,
            "get_namespace": self._get_namespace,
            "rename_namespace": self._rename_namespace,
            "delete_namespace": self._delete_namespace,
            "bulk_write": self._bulk_write,
            "bulk_delete": self._bulk_delete,
            "bulk_get": self._bulk_get,
            "list_keys": self._list_keys,
            "get_metadata": self._get_metadata,
            "get_value": self._get_value,
            "put_value": self._put_value,
            "delete_value": self._delete_value,
        }

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> KVEmulator:
        """Bind the port and serve in a background thread. Returns ``self``."""
        if self._server is not None:
            return self
        server = _Server((self.host, self._port), self)
        self._port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"kv-emulator-{self._port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close every open connection. State is kept; ``start`` reuses
        the same port."""
        server, thread = self._server, self._thread
        self._server = None
        self._thread = None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        server.close_open_connections()
        if thread is not None:
            thread.join(timeout=5)

    def __enter__(self) -> KVEmulator:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        """The bound port (after ``start``; before it, the requested one)."""
        return self._port

    @property
    def base_url(self) -> str:
        """The API base, e.g. ``http://127.0.0.1:54321/client/v4``."""
        if self._server is None and self._port == 0:
            raise RuntimeError("KVEmulator is not started")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self._port}{API_PREFIX}"

    # ------------------------------------------------------------------ seeding API

    def create_namespace(self, title: str, namespace_id: str | None = None) -> str:
        """Create a namespace and return its id (32 hex characters when generated)."""
        with self._lock:
            if any(ns.title == title for ns in self._namespaces.values()):
                raise ValueError(f"a namespace titled {title!r} already exists")
            ns_id = namespace_id or uuid.uuid4().hex
            if ns_id in self._namespaces:
                raise ValueError(f"namespace id {ns_id!r} already exists")
            self._namespaces[ns_id] = _Namespace(ns_id, title)
            return ns_id

    def put(
        self,
        namespace_id: str,
        key: str,
        value: bytes | str,
        *,
        metadata: object | None = None,
        expiration: int | None = None,
    ) -> None:
        """Store a key directly (no HTTP). Limits are enforced (``ValueError``); the
        expiration may be in the past."""
        data = value.encode("utf-8") if isinstance(value, str) else bytes(value)
        try:
            _check_key_name(key)
            _check_value(data)
            stored_metadata = _normalise_metadata(metadata)
        except ApiError as exc:
            raise ValueError(exc.message) from exc
        with self._lock:
            self._namespace(namespace_id).entries[key] = _Entry(
                data, stored_metadata, int(expiration) if expiration is not None else None
            )

    def delete(self, namespace_id: str, key: str) -> None:
        """Delete a key directly (no error when it does not exist)."""
        with self._lock:
            self._namespace(namespace_id).entries.pop(key, None)

    def get(self, namespace_id: str, key: str) -> bytes | None:
        """The stored value, or ``None`` when missing or expired."""
        with self._lock:
            entry = self._namespace(namespace_id).entries.get(key)
            if entry is None or entry.expired(time.time()):
                return None
            return entry.value

    def keys(self, namespace_id: str) -> list[str]:
        """Live key names of a namespace, in list order (UTF-8 byte order)."""
        with self._lock:
            now = time.time()
            entries = self._namespace(namespace_id).entries
            return sorted(
                (k for k, e in entries.items() if not e.expired(now)),
                key=lambda k: k.encode("utf-8"),
            )

    def set_tokens(self, tokens: Iterable[str]) -> None:
        """Replace the accepted bearer tokens."""
        with self._lock:
            self._tokens = frozenset(tokens)

    def _namespace(self, namespace_id: str) -> _Namespace:
        try:
            return self._namespaces[namespace_id]
        except KeyError:
            raise KeyError(f"unknown namespace {namespace_id!r}") from None

    # ------------------------------------------------------------------ faults & stats

    def add_fault(
        self,
        *,
        status: int | None = None,
        times: int = 1,
        path_contains: str = "",
        method: str | None = None,
        delay: float = 0.0,
        retry_after: str | None = None,
        drop_connection: bool = False,
        reset_mid_body: bool = False,
        truncate_body: bool = False,
        html_body: bool = False,
        envelope_failure: bool = False,
        probability: float | None = None,
    ) -> None:
        """Inject a fault into the next ``times`` matching requests (``-1``: forever).

        A request matches when its raw path (query included) contains ``path_contains``
        and its method equals ``method`` (any method when ``None``). With ``probability``
        each matching request is faulted with that chance (seeded ``random.Random``);
        only faulted requests count against ``times``. Faults are tried in the order
        they were added; the first that applies wins.
        """
        if times == 0 or times < -1:
            raise ValueError("times must be positive or -1")
        if probability is not None and not 0.0 <= probability <= 1.0:
            raise ValueError("probability must be between 0 and 1")
        with self._lock:
            self._faults.append(
                _Fault(
                    status=status,
                    times=times,
                    path_contains=path_contains,
                    method=method.upper() if method else None,
                    delay=delay,
                    retry_after=retry_after,
                    drop_connection=drop_connection,
                    reset_mid_body=reset_mid_body,
                    truncate_body=truncate_body,
                    html_body=html_body,
                    envelope_failure=envelope_failure,
                    probability=probability,
                )
            )

    def clear_faults(self) -> None:
        """Remove every pending fault."""
        with self._lock:
            self._faults.clear()

    def reset_stats(self) -> None:
        """Clear ``requests`` and ``connections_opened``."""
        with self._lock:
            self.requests.clear()
            self.connections_opened = 0

    @property
    def rate_limit(self) -> tuple[int, float] | None:
        """``(max_requests, window_seconds)`` or ``None`` (off). Setting it resets the window."""
        return self._rate_limit

    @rate_limit.setter
    def rate_limit(self, value: tuple[int, float] | None) -> None:
        with self._lock:
            self._rate_limit = value
            self._rate_window.clear()

    def _connection_accepted(self) -> None:
        with self._lock:
            self.connections_opened += 1

    def _record(self, record: RecordedRequest) -> None:
        with self._lock:
            self.requests.append(record)

    def _take_fault(self, method: str, raw_path: str) -> _Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.method is not None and fault.method != method:
                    continue
                if fault.path_contains not in raw_path:
                    continue
                if fault.probability is not None and self._random.random() >= fault.probability:
                    continue
                if fault.times > 0:
                    fault.times -= 1
                    if fault.times == 0:
                        self._faults.remove(fault)
                return fault
            return None

    def _fault_response(self, fault: _Fault) -> _Response | None:
        if fault.html_body:
            status = fault.status or 502
            page = _HTML_PAGE.format(status=status, phrase=_phrase(status))
            return _Response(status, page.encode("utf-8"), "text/html; charset=UTF-8")
        if fault.status is not None:
            code = CODE_AUTH if fault.status in (401, 403) else 10000 + fault.status
            message = (
                "Authentication error"
                if code == CODE_AUTH
                else f"{_phrase(fault.status)} (injected fault)"
            )
            return _Response(fault.status, failure_envelope(code, message))
        if fault.envelope_failure:
            return _Response(
                200, failure_envelope(CODE_INTERNAL, "Internal error (injected fault)")
            )
        return None

    # ------------------------------------------------------------------ HTTP handling

    def _parse_request(
        self, method: str, raw_target: str, headers: dict[str, str], body: bytes
    ) -> _Request:
        raw_path, _, raw_query = raw_target.partition("?")
        raw_path = raw_path.partition("#")[0]
        query = {
            name: values[0] for name, values in parse_qs(raw_query, keep_blank_values=True).items()
        }
        request = _Request(method, raw_path, query, headers, body, None, {}, None, None)
        if not raw_path.startswith(API_PREFIX + "/"):
            return request
        segments = raw_path[len(API_PREFIX) :].split("/")
        path_matched: Route | None = None
        for route in ROUTES:
            params = _match(route.template, segments)
            if params is None:
                continue
            path_matched = path_matched or route
            if route.method == method:
                request.route, request.params = route, params
                break
        else:
            if path_matched is not None:
                request.route = Route("*", path_matched.template, (), "method_not_allowed")
            return request
        raw_key = request.params.get("key_name")
        if raw_key is not None:
            try:
                request.key = unquote_to_bytes(raw_key).decode("utf-8")
            except UnicodeDecodeError:
                request.key_error = "Invalid key name: not valid UTF-8 once percent-decoded"
        return request

    def _handle(self, request: _Request) -> _Response:
        try:
            return self._dispatch(request)
        except ApiError as err:
            return _error_response(err)
        except Exception as exc:  # answer like a server, never crash
            return _Response(500, failure_envelope(CODE_INTERNAL, f"Internal error: {exc}"))

    def _dispatch(self, request: _Request) -> _Response:
        self._check_rate_limit()
        route = request.route
        if route is None:
            raise ApiError(404, CODE_NO_ROUTE, "No route for the URI")
        if route.name == "method_not_allowed":
            raise ApiError(405, CODE_METHOD_NOT_ALLOWED, "Method not allowed")
        self._check_auth(request)
        if request.params["account_id"] != self.account_id:
            raise ApiError(403, CODE_AUTH, "Authentication error")
        if request.key_error is not None:
            raise ApiError(400, CODE_BAD_KEY, request.key_error)
        if request.key is not None:
            _check_key_name(request.key)
        with self._lock:
            if "namespace_id" in request.params and request.params["namespace_id"] not in (
                self._namespaces
            ):
                raise ApiError(404, CODE_NAMESPACE_NOT_FOUND, "namespace not found")
            return self._handlers[route.name](request)

    def _check_rate_limit(self) -> None:
        with self._lock:
            if self._rate_limit is None:
                return
            max_requests, window = self._rate_limit
            now = time.monotonic()
            while self._rate_window and self._rate_window[0] <= now - window:
                self._rate_window.popleft()
            if len(self._rate_window) >= max_requests:
                wait = self._rate_window[0] + window - now
                raise ApiError(
                    429,
                    CODE_RATE_LIMITED,
                    "Rate limited: please wait and consider throttling your request speed",
                    {"Retry-After": str(max(1, math.ceil(wait)))},
                )
            self._rate_window.append(now)

    def _check_auth(self, request: _Request) -> None:
        authorization = next(
            (v for k, v in request.headers.items() if k.lower() == "authorization"), ""
        )
        scheme, _, token = authorization.partition(" ")
        with self._lock:
            tokens = self._tokens
        if scheme.lower() != "bearer" or token.strip() not in tokens:
            raise ApiError(401, CODE_AUTH, "Authentication error")

    # -- namespaces

    def _list_namespaces(self, request: _Request) -> _Response:
        page = _int_param(request.query, "page", 1, 1, None)
        per_page = _int_param(request.query, "per_page", 20, 1, 1000)
        order = request.query.get("order", "id")
        direction = request.query.get("direction", "asc")
        if order not in ("id", "title") or direction not in ("asc", "desc"):
            raise ApiError(400, CODE_BAD_QUERY, "Invalid order or direction")
        namespaces = sorted(
            self._namespaces.values(),
            key=lambda ns: ns.id if order == "id" else ns.title,
            reverse=direction == "desc",
        )
        chunk = namespaces[(page - 1) * per_page : page * per_page]
        info: dict[str, object] = {
            "page": page,
            "per_page": per_page,
            "count": len(chunk),
            "total_count": len(namespaces),
        }
        return _Response(200, success_envelope([ns.as_result() for ns in chunk], info))

    def _title_from_body(self, request: _Request) -> str:
        body = _parse_json_body(request.body)
        title = body.get("title") if isinstance(body, dict) else None
        if not isinstance(title, str) or not title or len(title) > MAX_TITLE_LENGTH:
            raise ApiError(
                400, CODE_BAD_BODY, "A non-empty title (at most 512 characters) is required"
            )
        return title

    def _create_namespace(self, request: _Request) -> _Response:
        title = self._title_from_body(request)
        try:
            ns_id = self.create_namespace(title)
        except ValueError as exc:
            raise ApiError(
                400, CODE_TITLE_EXISTS, "a namespace with this account ID and title already exists"
            ) from exc
        return _Response(200, success_envelope(self._namespaces[ns_id].as_result()))

    def _get_namespace(self, request: _Request) -> _Response:
        ns = self._namespaces[request.params["namespace_id"]]
        return _Response(200, success_envelope(ns.as_result()))

    def _rename_namespace(self, request: _Request) -> _Response:
        ns = self._namespaces[request.params["namespace_id"]]
        title = self._title_from_body(request)
        if any(other.title == title and other is not ns for other in self._namespaces.values()):
            raise ApiError(
                400, CODE_TITLE_EXISTS, "a namespace with this account ID and title already exists"
            )
        ns.title = title
        return _Response(200, success_envelope(ns.as_result()))

    def _delete_namespace(self, request: _Request) -> _Response:
        del self._namespaces[request.params["namespace_id"]]
        return _Response(200, success_envelope(None))

    # -- keys

    def _list_keys(self, request: _Request) -> _Response:
        ns = self._namespaces[request.params["namespace_id"]]
        limit = _int_param(request.query, "limit", MAX_LIST_LIMIT, MIN_LIST_LIMIT, MAX_LIST_LIMIT)
        prefix = request.query.get("prefix", "")
        cursor = request.query.get("cursor", "")
        after = _decode_cursor(cursor).encode("utf-8") if cursor else None
        prefix_bytes = prefix.encode("utf-8")
        now = time.time()
        names = sorted(
            (
                name.encode("utf-8")
                for name, entry in ns.entries.items()
                if not entry.expired(now) and name.encode("utf-8").startswith(prefix_bytes)
            ),
        )
        if after is not None:
            names = [n for n in names if n > after]
        page = names[:limit]
        more = len(names) > limit
        result: list[dict[str, object]] = []
        for raw_name in page:
            name = raw_name.decode("utf-8")
            entry = ns.entries[name]
            item: dict[str, object] = {"name": name}
            if entry.expiration is not None:
                item["expiration"] = entry.expiration
            if entry.metadata is not None:
                item["metadata"] = entry.metadata
            result.append(item)
        next_cursor = encode_cursor(page[-1].decode("utf-8")) if more and page else ""
        return _Response(
            200, success_envelope(result, {"count": len(result), "cursor": next_cursor})
        )

    def _live_entry(self, request: _Request) -> _Entry:
        ns = self._namespaces[request.params["namespace_id"]]
        assert request.key is not None
        entry = ns.entries.get(request.key)
        if entry is None or entry.expired(time.time()):
            raise ApiError(404, CODE_KEY_NOT_FOUND, "get: 'key not found'")
        return entry

    def _get_value(self, request: _Request) -> _Response:
        entry = self._live_entry(request)
        headers = {} if entry.expiration is None else {"expiration": str(entry.expiration)}
        return _Response(200, entry.value, "application/octet-stream", headers)

    def _get_metadata(self, request: _Request) -> _Response:
        entry = self._live_entry(request)
        return _Response(200, success_envelope(entry.metadata))

    def _put_value(self, request: _Request) -> _Response:
        ns = self._namespaces[request.params["namespace_id"]]
        assert request.key is not None
        content_type = next(
            (v for k, v in request.headers.items() if k.lower() == "content-type"), ""
        )
        metadata: object | None = None
        if content_type.lower().startswith("multipart/form-data"):
            fields = _parse_multipart(content_type, request.body)
            if "value" not in fields:
                raise ApiError(400, CODE_BAD_BODY, "Malformed multipart body: no 'value' field")
            value = fields["value"]
            if "metadata" in fields:
                try:
                    metadata = json.loads(fields["metadata"].decode("utf-8"))
                except (UnicodeDecodeError, ValueError) as exc:
                    raise ApiError(400, CODE_BAD_METADATA, "Metadata must be JSON") from exc
        else:
            value = request.body
        _check_value(value)
        stored_metadata = _normalise_metadata(metadata)
        expiration = _resolve_expiration(
            request.query.get("expiration"), request.query.get("expiration_ttl"), time.time()
        )
        ns.entries[request.key] = _Entry(value, stored_metadata, expiration)
        return _Response(200, success_envelope(None))

    def _delete_value(self, request: _Request) -> _Response:
        ns = self._namespaces[request.params["namespace_id"]]
        assert request.key is not None
        ns.entries.pop(request.key, None)
        return _Response(200, success_envelope(None))

    # -- bulk

    def _bulk_write(self, request: _Request) -> _Response:
        ns = self._namespaces[request.params["namespace_id"]]
        items = _parse_json_body(request.body)
        if not isinstance(items, list):
            raise ApiError(400, CODE_BAD_BODY, "Malformed request body: expected a JSON array")
        if len(items) > MAX_BULK_WRITE_KEYS:
            raise ApiError(
                400, CODE_TOO_MANY_KEYS, f"Too many keys: at most {MAX_BULK_WRITE_KEYS} per request"
            )
        now = time.time()
        staged: list[tuple[str, _Entry]] = []
        for item in items:
            if not isinstance(item, dict):
                raise ApiError(400, CODE_BAD_BODY, "Malformed request body: items must be objects")
            key, value = item.get("key"), item.get("value")
            if not isinstance(key, str) or not isinstance(value, str):
                raise ApiError(400, CODE_BAD_BODY, "Each item needs a string 'key' and 'value'")
            _check_key_name(key)
            use_base64 = item.get("base64", False)
            if not isinstance(use_base64, bool):
                raise ApiError(400, CODE_BAD_BODY, "'base64' must be a boolean")
            if use_base64:
                try:
                    data = base64.b64decode(value, validate=True)
                except (binascii.Error, ValueError) as exc:
                    raise ApiError(400, CODE_BAD_BODY, f"Invalid base64 value for {key!r}") from exc
            else:
                data = value.encode("utf-8")
            _check_value(data)
            metadata = _normalise_metadata(item.get("metadata"))
            expiration = _resolve_expiration(
                item.get("expiration"), item.get("expiration_ttl"), now
            )
            staged.append((key, _Entry(data, metadata, expiration)))
        for key, entry in staged:
            ns.entries[key] = entry
        result = {"successful_key_count": len(staged), "unsuccessful_keys": []}
        return _Response(200, success_envelope(result))

    def _bulk_delete(self, request: _Request) -> _Response:
        ns = self._namespaces[request.params["namespace_id"]]
        keys = _parse_json_body(request.body)
        if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
            raise ApiError(400, CODE_BAD_BODY, "Malformed request body: expected an array of keys")
        if len(keys) > MAX_BULK_WRITE_KEYS:
            raise ApiError(
                400, CODE_TOO_MANY_KEYS, f"Too many keys: at most {MAX_BULK_WRITE_KEYS} per request"
            )
        for key in keys:
            _check_key_name(key)
        for key in keys:
            ns.entries.pop(key, None)
        result = {"successful_key_count": len(keys), "unsuccessful_keys": []}
        return _Response(200, success_envelope(result))

    def _bulk_get(self, request: _Request) -> _Response:
        ns = self._namespaces[request.params["namespace_id"]]
        body = _parse_json_body(request.body)
        if not isinstance(body, dict):
            raise ApiError(400, CODE_BAD_BODY, "Malformed request body: expected a JSON object")
        keys = body.get("keys")
        if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
            raise ApiError(400, CODE_BAD_BODY, "'keys' must be an array of key names")
        if len(keys) > MAX_BULK_GET_KEYS:
            raise ApiError(
                400, CODE_TOO_MANY_KEYS, f"Too many keys: at most {MAX_BULK_GET_KEYS} per request"
            )
        value_type = body.get("type", "text")
        if value_type not in ("text", "json"):
            raise ApiError(400, CODE_BAD_BODY, "'type' must be 'text' or 'json'")
        with_metadata = body.get("withMetadata", False)
        if not isinstance(with_metadata, bool):
            raise ApiError(400, CODE_BAD_BODY, "'withMetadata' must be a boolean")
        now = time.time()
        values: dict[str, object] = {}
        for key in keys:
            _check_key_name(key)
            entry = ns.entries.get(key)
            if entry is None or entry.expired(now):
                values[key] = None
                continue
            try:
                text = entry.value.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise ApiError(
                    400,
                    CODE_NOT_UTF8,
                    f"bulk get: the value of key {key!r} is not valid UTF-8 text; "
                    "bulk get only returns text values, read it with GET .../values/{key_name}",
                ) from exc
            value: object = text
            if value_type == "json":
                try:
                    value = json.loads(text)
                except ValueError as exc:
                    raise ApiError(
                        400, CODE_NOT_JSON, f"bulk get: the value of key {key!r} is not valid JSON"
                    ) from exc
            if with_metadata:
                item: dict[str, object] = {"value": value, "metadata": entry.metadata}
                if entry.expiration is not None:
                    item["expiration"] = entry.expiration
                values[key] = item
            else:
                values[key] = value
        return _Response(200, success_envelope({"values": values}))


def _match(template: str, segments: list[str]) -> dict[str, str] | None:
    parts = template.split("/")
    if len(parts) != len(segments):
        return None
    params: dict[str, str] = {}
    for part, segment in zip(parts, segments, strict=True):
        if part.startswith("{") and part.endswith("}"):
            if not segment:
                return None
            params[part[1:-1]] = segment
        elif part != segment:
            return None
    return params


def _int_param(
    query: dict[str, str], name: str, default: int, minimum: int, maximum: int | None
) -> int:
    raw = query.get(name)
    if raw is None or raw == "":
        return default
    try:
        number = float(raw)
    except ValueError:
        number = math.nan
    if not number.is_integer() or number < minimum or (maximum is not None and number > maximum):
        bounds = f"{minimum}-{maximum}" if maximum is not None else f">= {minimum}"
        raise ApiError(
            400, CODE_BAD_QUERY, f"Invalid '{name}' {raw!r}: must be an integer {bounds}"
        )
    return int(number)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point: serve until interrupted."""
    parser = argparse.ArgumentParser(description="Cloudflare Workers KV API emulator")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8787)
    parser.add_argument(
        "--token", action="append", help="accepted bearer token (repeatable; default test-token)"
    )
    parser.add_argument("--account-id", default=DEFAULT_ACCOUNT_ID)
    parser.add_argument("--namespace-title", default="demo")
    parser.add_argument("--namespace-id", default=None)
    parser.add_argument("--verbose", action="store_true", help="log every request")
    args = parser.parse_args(argv)
    emulator = KVEmulator(
        host=args.host,
        port=args.port,
        account_id=args.account_id,
        tokens=args.token or ["test-token"],
        verbose=args.verbose,
    )
    namespace_id = emulator.create_namespace(args.namespace_title, args.namespace_id)
    emulator.start()
    print(f"base_url={emulator.base_url}")
    print(f"account_id={emulator.account_id}")
    print(f"namespace_id={namespace_id}")
    print("Serving; press Ctrl-C to stop.", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        emulator.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
