"""A local emulator of the Cloudflare Workers KV REST API (stdlib only).

A real HTTP/1.1 server on a loopback port. It keeps namespaces and keys in memory and serves
the four KV operations the function calls (``ROUTES``) as the copy of Cloudflare's OpenAPI
description in ``local/kv-openapi.json`` describes them: same path templates (under
``/client/v4``), parameters, envelopes and limits. Any other path is a 404 (code 7003); a
known path with another method is a 405 (code 7001). Where the spec leaves things open:

* Auth: only ``Authorization: Bearer <token>``. Request bodies need ``Content-Length``.
* ``{key_name}`` is percent-decoded exactly once, as UTF-8. A raw ``/`` splits it into two
  segments (no route: 404, 7003); dot segments stay (``..%2F..%2Fx`` is the key ``../../x``).
* ``GET .../values/{key_name}``: the stored bytes as ``application/octet-stream``, with an
  ``expiration`` header (epoch seconds) when the key has one.
* List keys: ``limit`` 10-1000 (default 1000); keys in UTF-8 byte order; the cursor is
  opaque (unpadded URL-safe base64 of a small JSON array) and ``""`` on the last page.
* Bulk get: at most 100 keys; missing or expired keys are ``null``; ``type`` ``text``
  (default) or ``json``; ``withMetadata`` gives ``{"value", "metadata"[, "expiration"]}``.
* Expired keys (``expiration <= now``) are missing everywhere; ``put`` (the Python seeding
  API) accepts any expiration, so tests can seed expired keys.

Switches: attributes of ``KVEmulator``, off by default, settable at any time; all but the
faults are also constructor keywords and command-line options (``--bulk-get-lossy-text``,
``--bulk-get-max-bytes N``, ``--list-empty-pages-first N``, ``--list-empty-pages-between N``,
``--rate-limit N SECONDS``).

* ``add_fault(...)``/``clear_faults()``: a status with a failure envelope, ``Retry-After``,
  a delay, a dropped connection, a reset mid-body, a short body, an HTML page, or 200 with
  ``"success": false``; ``times`` (``-1``: forever) or a seeded ``probability``. A fault that
  replaces the answer is sent as described: not counted by ``rate_limit``, no rate headers.
* ``bulk_get_lossy_text: bool``: bulk get answers 200 for a value that is not valid UTF-8,
  decoded with U+FFFD replacements (``bytes.decode("utf-8", "replace")``), instead of 400
  (code 10025). Real Cloudflare's behaviour is undocumented (its simulator miniflare
  replaces too). With ``type: json`` the decoded text must still be JSON (else 10026).
* ``bulk_get_max_bytes: int`` (default ``BULK_GET_MAX_BYTES``): over this sum of the stored
  sizes of the distinct live values asked for, bulk get is a 413 (code 10011), checked before
  any value is decoded. Cloudflare: "The limit of the response size is 25 MB. Responses above
  this size will fail with a `413 Error` error message."
  (https://developers.cloudflare.com/kv/api/read-key-value-pairs/); miniflare's
  ``MAX_BULK_SIZE`` reads that as 25 * 1024 * 1024 bytes, and so does this emulator.
* ``list_empty_pages_first: int`` / ``list_empty_pages_between: int``: list keys answers
  that many empty pages (``result: []``, a non-empty cursor) at the start of each listing /
  before each later page; a client that follows the cursor to ``""`` gets every key once.
  ``first=3``: the first three pages are empty; ``between=1``: every other page is empty.
* ``rate_limit: tuple[int, float] | None`` (``(max_requests, window_seconds)``): a sliding
  window over the requests the API answers; over it, 429 (code 10429) with ``Retry-After``.
  While it is set every such answer (success, error or 429) carries the headers documented
  at https://developers.cloudflare.com/fundamentals/api/reference/limits/ ("Ratelimit: List
  of service limit items, composed of the limit name, the remaining quota (r) and the time
  next window resets (t). For example: "default";r=50;t=30" and "Ratelimit-Policy: List of
  quota policy items, composed of the policy name, the total quota (q) and the time window
  the quota applies to (w). For example: "burst";q=100;w=60")::

      Ratelimit: "default";r=<remaining>;t=<reset>
      Ratelimit-Policy: "default";q=<max_requests>;w=<window>

  ``remaining``: requests left in the window after this one (0 on a 429); ``reset``: the
  seconds, rounded up, until the oldest counted request leaves the window, i.e. until
  ``remaining`` grows (on a 429, the ``Retry-After`` value); ``window``: ``window_seconds``
  rounded up. The one policy is named ``"default"`` (``RATE_LIMIT_POLICY``) in both.

Error codes ("Cloudflare": known from the real API; the others are this emulator's choice,
as the spec only requires integers >= 1000):

=======  ======  ==========================================================================
code     status  meaning
=======  ======  ==========================================================================
7001     405     method not allowed on a known path
7003     404     "No route for the URI" (Cloudflare; also the spec's failure example)
10000    401     "Authentication error" (Cloudflare code): missing or unknown bearer token
10000    403     "Authentication error" (Cloudflare code): the account id is not the
                 emulator's
10001    500     internal error; also the error of an ``envelope_failure`` fault
10009    404     "get: 'key not found'" (Cloudflare) for values and metadata
10010    400     ``limit`` not an integer 10-1000, or a malformed ``cursor``
10011    413     bulk get: the values total more than ``bulk_get_max_bytes``
10012    400     malformed bulk get body (not JSON, wrong shape, bad ``type`` or
                 ``withMetadata``); with status 413: request body unreadable or too large
10013    404     namespace not found
10016    400     invalid key name: empty, longer than 512 bytes or not UTF-8
10024    400     bulk get with more than 100 keys
10025    400     bulk get: a value is not valid UTF-8 (unless ``bulk_get_lossy_text``; read
                 such keys one at a time with ``GET .../values/{key_name}``)
10026    400     bulk get with ``type: json``: a value is not valid JSON
10429    429     ``rate_limit`` exceeded (Cloudflare's global limiter sends code 971, below
                 the spec's minimum of 1000, hence 10000 + status)
10000+s  s       an injected ``status`` fault (401/403 use 10000)
=======  ======  ==========================================================================

Command line: ``python -m local.kv_emulator --port 8787 --token T --namespace-title demo``.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import contextlib
import json
import math
import random
import re
import socket
import struct
import sys
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from http.client import responses as _PHRASES
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import parse_qs, unquote_to_bytes

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence

API_PREFIX = "/client/v4"
MAX_KEY_BYTES = 512
MAX_VALUE_BYTES = 25 * 1024 * 1024
MAX_METADATA_BYTES = 1024
MIN_LIST_LIMIT, MAX_LIST_LIMIT = 10, 1000
MAX_BULK_GET_KEYS = 100
BULK_GET_MAX_BYTES = 25 * 1024 * 1024  # Cloudflare's documented "25 MB", as miniflare reads it
MAX_REQUEST_BODY = 8 * 1024 * 1024  # far above any bulk get body (100 keys of 512 bytes)
DEFAULT_ACCOUNT_ID = "acc0123456789abcdef0123456789abcd"
RATE_LIMIT_POLICY = "default"


class Route(NamedTuple):
    """One operation: method, path template (under ``/client/v4``), query parameters read."""

    method: str
    template: str
    query_params: tuple[str, ...]
    name: str


_NS = "/accounts/{account_id}/storage/kv/namespaces/{namespace_id}"
ROUTES: tuple[Route, ...] = (
    Route("GET", _NS + "/keys", ("limit", "prefix", "cursor"), "list_keys"),
    Route("POST", _NS + "/bulk/get", (), "bulk_get"),
    Route("GET", _NS + "/values/{key_name}", (), "get_value"),
    Route("GET", _NS + "/metadata/{key_name}", (), "get_metadata"),
)
_PATTERNS = [  # a placeholder matches one non-empty raw path segment
    (route, re.compile(API_PREFIX + re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", route.template)))
    for route in ROUTES
]
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
class _Fault:  # the parameters of ``KVEmulator.add_fault``
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

    def live(self, now: float) -> bool:
        return self.expiration is None or self.expiration > now


@dataclass
class _Request:
    method: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    route: Route | None
    params: dict[str, str]
    key: str | None  # the decoded ``key_name``; None when absent or not UTF-8


@dataclass
class _Response:
    status: int
    body: bytes
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)


def _json_bytes(data: object) -> bytes:
    return json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def success_envelope(result: object, result_info: dict[str, object] | None = None) -> bytes:
    """Serialise a Cloudflare success envelope."""
    envelope = {"success": True, "errors": [], "messages": [], "result": result}
    if result_info is not None:
        envelope["result_info"] = result_info
    return _json_bytes(envelope)


def failure_envelope(code: int, message: str) -> bytes:
    """Serialise a Cloudflare failure envelope."""
    errors = [{"code": code, "message": message}]
    return _json_bytes({"success": False, "errors": errors, "messages": [], "result": None})


class ApiError(Exception):
    """Raised inside the emulator to answer with a Cloudflare failure envelope."""

    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(message)
        self.response = _Response(status, failure_envelope(code, message))


def _encode_cursor(after: str | None, empty_pages: int) -> str:
    """The last name returned (``None``: none yet) and the empty pages served since."""
    raw = json.dumps([after, empty_pages], ensure_ascii=False).encode("utf-8")
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def _decode_cursor(cursor: str) -> tuple[str | None, int]:
    try:
        raw = base64.b64decode(cursor + "=" * (-len(cursor) % 4), altchars=b"-_", validate=True)
        after, empty_pages = json.loads(raw.decode("utf-8"))
        if after is not None:
            after.encode("utf-8")  # a str without lone surrogates
        if type(empty_pages) is not int or empty_pages < 0:
            raise TypeError(empty_pages)
    except (binascii.Error, ValueError, TypeError, AttributeError) as exc:
        raise ApiError(400, 10010, f"Invalid cursor: {cursor!r}") from exc
    return after, empty_pages


def _check_key_name(key: str) -> None:
    if not key or len(key.encode("utf-8")) > MAX_KEY_BYTES:
        raise ApiError(400, 10016, f"Invalid key name: empty or longer than {MAX_KEY_BYTES} bytes")


def _normalise_metadata(metadata: object) -> object | None:
    """The metadata as stored (a JSON round trip); ``ValueError`` if not JSON or too large."""
    if metadata is None:
        return None
    try:
        serialised = json.dumps(metadata, separators=(",", ":"), allow_nan=False)
    except TypeError as exc:
        raise ValueError(f"Metadata must be JSON: {exc}") from exc
    if len(serialised.encode("utf-8")) > MAX_METADATA_BYTES:
        raise ValueError(f"Metadata too large: at most {MAX_METADATA_BYTES} bytes once serialised")
    stored: object = json.loads(serialised)
    return stored


def _list_limit(raw: str) -> int:
    try:
        limit = float(raw or MAX_LIST_LIMIT)
    except ValueError:
        limit = math.nan
    if not limit.is_integer() or not MIN_LIST_LIMIT <= limit <= MAX_LIST_LIMIT:
        bounds = f"{MIN_LIST_LIMIT}-{MAX_LIST_LIMIT}"
        raise ApiError(400, 10010, f"Invalid 'limit' {raw!r}: must be an integer {bounds}")
    return int(limit)


def _parse_request(method: str, target: str, headers: dict[str, str], body: bytes) -> _Request:
    raw_path, _, raw_query = target.partition("?")
    query = {k: v[0] for k, v in parse_qs(raw_query, keep_blank_values=True).items()}
    raw_path = raw_path.partition("#")[0]
    matches = [(r, m.groupdict()) for r, p in _PATTERNS if (m := p.fullmatch(raw_path))]
    route, params = next(((r, p) for r, p in matches if r.method == method), (None, {}))
    if route is None and matches:  # the path exists, the method does not
        route = Route("*", matches[0][0].template, (), "method_not_allowed")
    key = None
    with contextlib.suppress(KeyError, UnicodeDecodeError):
        key = unquote_to_bytes(params["key_name"]).decode("utf-8")
    return _Request(method, query, headers, body, route, params, key)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], emulator: KVEmulator) -> None:
        self.emulator = emulator
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.open_sockets: set[Any] = set()
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self.emulator._lock:
            self.emulator.connections_opened += 1
            self.open_sockets.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self.emulator._lock:
            self.open_sockets.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError | TimeoutError):
            super().handle_error(request, client_address)  # (a client gone: no traceback)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # no 40 ms Nagle/delayed-ACK stalls between header and body
    server: _Server

    def version_string(self) -> str:
        return "cloudflare"

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.emulator.verbose:
            super().log_message(format, *args)

    def do_GET(self) -> None:
        emulator, headers = self.server.emulator, dict(self.headers.items())
        try:
            length = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            length = -1
        if "Transfer-Encoding" in self.headers or not 0 <= length <= MAX_REQUEST_BODY:
            self.close_connection = True
            emulator._record(RecordedRequest(self.command, self.path, None, headers, 413))
            self._send(ApiError(413, 10012, "Request body unreadable or too large").response)
            return
        body = self.rfile.read(length)
        request = _parse_request(self.command, self.path, headers, body)
        fault = emulator._take_fault(self.command, self.path)
        route = request.route.template if request.route else None
        record = RecordedRequest(self.command, self.path, request.key, headers, None, body, route)
        record.faulted = fault is not None
        if fault and fault.delay > 0:
            time.sleep(fault.delay)
        if fault and fault.drop_connection:
            emulator._record(record)
            self.close_connection = True
            return
        response = (emulator._fault_response(fault) if fault else None) or emulator._handle(request)
        if fault and fault.retry_after is not None:
            response.headers["Retry-After"] = fault.retry_after
        record.status = response.status
        emulator._record(record)
        if fault and fault.reset_mid_body:
            self.close_connection = True
            self._send(response, sent=len(response.body) // 2)
            # SO_LINGER with a zero timeout makes close() send a RST instead of a FIN.
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
        elif fault and fault.truncate_body:
            self.close_connection = True
            self._send(response, claimed=len(response.body) + max(16, len(response.body)))
        else:
            self._send(response)

    do_PUT = do_POST = do_DELETE = do_PATCH = do_GET

    def _send(self, response: _Response, claimed: int = 0, sent: int | None = None) -> None:
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(claimed or len(response.body)))
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(response.body[:sent])
        self.wfile.flush()


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
        bulk_get_lossy_text: bool = False,
        bulk_get_max_bytes: int = BULK_GET_MAX_BYTES,
        list_empty_pages_first: int = 0,
        list_empty_pages_between: int = 0,
    ) -> None:
        self.host, self._port, self.account_id, self.verbose = host, port, account_id, verbose
        self.bulk_get_lossy_text = bulk_get_lossy_text
        self.bulk_get_max_bytes = bulk_get_max_bytes
        self.list_empty_pages_first = list_empty_pages_first
        self.list_empty_pages_between = list_empty_pages_between
        self.requests: list[RecordedRequest] = []
        self.connections_opened = 0
        self._tokens = frozenset(tokens)
        self._lock = threading.RLock()
        self._titles: dict[str, str] = {}  # namespace id -> title
        self._namespaces: dict[str, dict[str, _Entry]] = {}  # namespace id -> key -> entry
        self._faults: list[_Fault] = []
        self._random = random.Random(seed)  # noqa: S311 - fault injection, not crypto
        self._rate_limit: tuple[int, float] | None = None
        self._rate_window: deque[float] = deque()  # when the counted requests came
        self._monotonic: Callable[[], float] = time.monotonic  # the rate window's clock
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> KVEmulator:
        """Bind the port and serve in a background thread. Returns ``self``."""
        if self._server is None:
            self._server = _Server((self.host, self._port), self)
            self._port = self._server.server_address[1]
            self._thread = threading.Thread(
                target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close every open connection. State is kept; ``start`` reuses
        the same port."""
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        with self._lock:
            open_sockets = list(server.open_sockets)
        for sock in open_sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        if thread is not None:
            thread.join(timeout=5)

    def __enter__(self) -> KVEmulator:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
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
            if title in self._titles.values():
                raise ValueError(f"a namespace titled {title!r} already exists")
            ns_id = namespace_id or uuid.uuid4().hex
            if ns_id in self._namespaces:
                raise ValueError(f"namespace id {ns_id!r} already exists")
            self._titles[ns_id], self._namespaces[ns_id] = title, {}
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
        except ApiError as exc:
            raise ValueError(str(exc)) from exc
        if len(data) > MAX_VALUE_BYTES:
            raise ValueError(f"Value too large: values may be at most {MAX_VALUE_BYTES} bytes")
        expires = int(expiration) if expiration is not None else None
        entry = _Entry(data, _normalise_metadata(metadata), expires)
        with self._lock:
            self._namespace(namespace_id)[key] = entry

    def delete(self, namespace_id: str, key: str) -> None:
        """Delete a key directly (no error when it does not exist)."""
        with self._lock:
            self._namespace(namespace_id).pop(key, None)

    def get(self, namespace_id: str, key: str) -> bytes | None:
        """The stored value, or ``None`` when missing or expired."""
        with self._lock:
            entry = self._namespace(namespace_id).get(key)
            return entry.value if entry and entry.live(time.time()) else None

    def keys(self, namespace_id: str) -> list[str]:
        """Live key names of a namespace, in list order (UTF-8 byte order)."""
        with self._lock:
            now, entries = time.time(), self._namespace(namespace_id)
            live = (key for key, entry in entries.items() if entry.live(now))
            return sorted(live, key=lambda key: key.encode("utf-8"))

    def set_tokens(self, tokens: Iterable[str]) -> None:
        """Replace the accepted bearer tokens."""
        with self._lock:
            self._tokens = frozenset(tokens)

    def _namespace(self, namespace_id: str) -> dict[str, _Entry]:
        if namespace_id not in self._namespaces:
            raise KeyError(f"unknown namespace {namespace_id!r}")
        return self._namespaces[namespace_id]

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
        options = dict(locals())  # exactly the fields of _Fault, plus self
        del options["self"]
        if times == 0 or times < -1:
            raise ValueError("times must be positive or -1")
        if probability is not None and not 0.0 <= probability <= 1.0:
            raise ValueError("probability must be between 0 and 1")
        options["method"] = method.upper() if method else None
        with self._lock:
            self._faults.append(_Fault(**options))

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
        if value is not None and (value[0] < 1 or value[1] <= 0):
            raise ValueError("rate_limit needs max_requests >= 1 and window_seconds > 0")
        with self._lock:
            self._rate_limit = value
            self._rate_window.clear()

    def _record(self, record: RecordedRequest) -> None:
        with self._lock:
            self.requests.append(record)

    def _take_fault(self, method: str, raw_path: str) -> _Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.method not in (None, method) or fault.path_contains not in raw_path:
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
            page = _HTML_PAGE.format(status=status, phrase=_PHRASES.get(status, "Error"))
            return _Response(status, page.encode("utf-8"), "text/html; charset=UTF-8")
        if fault.status in (401, 403):
            return ApiError(fault.status, 10000, "Authentication error").response
        if fault.status is not None:
            message = f"{_PHRASES.get(fault.status, 'Error')} (injected fault)"
            return ApiError(fault.status, 10000 + fault.status, message).response
        if fault.envelope_failure:
            return ApiError(200, 10001, "Internal error (injected fault)").response
        return None

    # ------------------------------------------------------------------ HTTP handling

    def _handle(self, request: _Request) -> _Response:
        try:
            rate_headers = self._count_request()
        except ApiError as err:
            return err.response
        try:
            response = self._dispatch(request)
        except ApiError as err:
            response = err.response
        except Exception as exc:  # answer like a server, never crash
            response = ApiError(500, 10001, f"Internal error: {exc}").response
        response.headers.update(rate_headers)
        return response

    def _count_request(self) -> dict[str, str]:
        """Count a request against ``rate_limit``: its headers, or a 429 ``ApiError``."""
        with self._lock:
            if self._rate_limit is None:
                return {}
            max_requests, window = self._rate_limit
            now = self._monotonic()
            while self._rate_window and self._rate_window[0] <= now - window:
                self._rate_window.popleft()
            limited = len(self._rate_window) >= max_requests
            if not limited:
                self._rate_window.append(now)
            reset = max(1, math.ceil(window - (now - self._rate_window[0])))
            remaining = max_requests - len(self._rate_window)
        headers = {
            "Ratelimit": f'"{RATE_LIMIT_POLICY}";r={remaining};t={reset}',
            "Ratelimit-Policy": f'"{RATE_LIMIT_POLICY}";q={max_requests};w={math.ceil(window)}',
        }
        if not limited:
            return headers
        message = "Rate limited: please wait and consider throttling your request speed"
        err = ApiError(429, 10429, message)
        err.response.headers.update({**headers, "Retry-After": str(reset)})
        raise err

    def _dispatch(self, request: _Request) -> _Response:
        if request.route is None:
            raise ApiError(404, 7003, "No route for the URI")
        if request.route.name == "method_not_allowed":
            raise ApiError(405, 7001, "Method not allowed")
        authorization = next(
            (v for k, v in request.headers.items() if k.lower() == "authorization"), ""
        )
        scheme, _, token = authorization.partition(" ")
        with self._lock:
            if scheme.lower() != "bearer" or token.strip() not in self._tokens:
                raise ApiError(401, 10000, "Authentication error")
            if request.params["account_id"] != self.account_id:
                raise ApiError(403, 10000, "Authentication error")
            if "key_name" in request.params:
                if request.key is None:
                    raise ApiError(400, 10016, "Invalid key name: not UTF-8 once percent-decoded")
                _check_key_name(request.key)
            entries = self._namespaces.get(request.params["namespace_id"])
            if entries is None:
                raise ApiError(404, 10013, "namespace not found")
            if request.route.name == "list_keys":
                return self._list_keys(request.query, entries)
            if request.route.name == "bulk_get":
                return self._bulk_get(request.body, entries)
            entry = entries.get(request.key or "")
            if entry is None or not entry.live(time.time()):
                raise ApiError(404, 10009, "get: 'key not found'")
            if request.route.name == "get_metadata":
                return _Response(200, success_envelope(entry.metadata))
            headers = {} if entry.expiration is None else {"expiration": str(entry.expiration)}
            return _Response(200, entry.value, "application/octet-stream", headers)

    def _list_keys(self, query: dict[str, str], entries: dict[str, _Entry]) -> _Response:
        limit, prefix = _list_limit(query.get("limit", "")), query.get("prefix", "").encode()
        after, empty_pages = _decode_cursor(query["cursor"]) if query.get("cursor") else (None, 0)
        wanted = self.list_empty_pages_first if after is None else self.list_empty_pages_between
        if empty_pages < wanted:  # an empty page; the cursor goes on from the same place
            info: dict[str, object] = {"count": 0, "cursor": _encode_cursor(after, empty_pages + 1)}
            return _Response(200, success_envelope([], info))
        start, now = (after or "").encode("utf-8"), time.time()
        names = sorted(
            raw
            for raw, entry in ((key.encode("utf-8"), entry) for key, entry in entries.items())
            if entry.live(now) and raw.startswith(prefix) and (after is None or raw > start)
        )
        result: list[dict[str, object]] = []
        for name in (raw.decode("utf-8") for raw in names[:limit]):
            entry = entries[name]
            expiration = {} if entry.expiration is None else {"expiration": entry.expiration}
            metadata = {} if entry.metadata is None else {"metadata": entry.metadata}
            result.append({"name": name, **expiration, **metadata})
        cursor = _encode_cursor(str(result[-1]["name"]), 0) if len(names) > limit else ""
        return _Response(200, success_envelope(result, {"count": len(result), "cursor": cursor}))

    def _bulk_get(self, raw_body: bytes, entries: dict[str, _Entry]) -> _Response:
        try:
            body = json.loads(raw_body.decode("utf-8"))
        except ValueError as exc:  # UnicodeDecodeError is a ValueError
            raise ApiError(400, 10012, "Malformed request body: not valid JSON") from exc
        if not isinstance(body, dict):
            raise ApiError(400, 10012, "Malformed request body: expected a JSON object")
        keys, value_type = body.get("keys"), body.get("type", "text")
        with_metadata = body.get("withMetadata", False)
        if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
            raise ApiError(400, 10012, "'keys' must be an array of key names")
        if len(keys) > MAX_BULK_GET_KEYS:
            raise ApiError(400, 10024, f"Too many keys: at most {MAX_BULK_GET_KEYS} per request")
        if value_type not in ("text", "json") or not isinstance(with_metadata, bool):
            raise ApiError(400, 10012, "'type' must be 'text' or 'json', 'withMetadata' a boolean")
        for key in keys:
            _check_key_name(key)
        now = time.time()
        live = {key: e for key in keys if (e := entries.get(key)) and e.live(now)}
        total = sum(len(entry.value) for entry in live.values())
        if total > self.bulk_get_max_bytes:
            limit = self.bulk_get_max_bytes
            message = f"bulk get: the values total {total} bytes, over the limit of {limit} bytes"
            raise ApiError(413, 10011, message)
        values: dict[str, object] = dict.fromkeys(keys)
        for key, entry in live.items():
            text = self._bulk_text(key, entry.value)
            try:
                value: object = json.loads(text) if value_type == "json" else text
            except ValueError as exc:
                message = f"bulk get: the value of {key!r} is not valid JSON"
                raise ApiError(400, 10026, message) from exc
            if with_metadata:
                expiration = {} if entry.expiration is None else {"expiration": entry.expiration}
                value = {"value": value, "metadata": entry.metadata, **expiration}
            values[key] = value
        return _Response(200, success_envelope({"values": values}))

    def _bulk_text(self, key: str, value: bytes) -> str:
        if self.bulk_get_lossy_text:
            return value.decode("utf-8", "replace")
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError as exc:
            message = (
                f"bulk get: the value of {key!r} is not valid UTF-8 text; bulk get only returns "
                "text, read it with GET .../values/{key_name}"
            )
            raise ApiError(400, 10025, message) from exc


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point: serve until interrupted."""
    parser = argparse.ArgumentParser(description="Cloudflare Workers KV API emulator")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8787)
    parser.add_argument("--token", action="append", help="accepted bearer token (repeatable)")
    parser.add_argument("--account-id", default=DEFAULT_ACCOUNT_ID)
    parser.add_argument("--namespace-title", default="demo")
    parser.add_argument("--namespace-id", default=None)
    parser.add_argument("--verbose", action="store_true", help="log every request")
    parser.add_argument("--rate-limit", nargs=2, type=float, metavar=("N", "SECONDS"))
    parser.add_argument("--bulk-get-lossy-text", action="store_true")
    parser.add_argument("--bulk-get-max-bytes", type=int, default=BULK_GET_MAX_BYTES)
    parser.add_argument("--list-empty-pages-first", type=int, default=0, metavar="N")
    parser.add_argument("--list-empty-pages-between", type=int, default=0, metavar="N")
    args = parser.parse_args(argv)
    emulator = KVEmulator(
        host=args.host,
        port=args.port,
        account_id=args.account_id,
        tokens=args.token or ["test-token"],
        verbose=args.verbose,
        bulk_get_lossy_text=args.bulk_get_lossy_text,
        bulk_get_max_bytes=args.bulk_get_max_bytes,
        list_empty_pages_first=args.list_empty_pages_first,
        list_empty_pages_between=args.list_empty_pages_between,
    )
    if args.rate_limit:
        emulator.rate_limit = (int(args.rate_limit[0]), args.rate_limit[1])
    namespace_id = emulator.create_namespace(args.namespace_title, args.namespace_id)
    emulator.start()
    print(f"base_url={emulator.base_url}\naccount_id={emulator.account_id}")
    print(f"namespace_id={namespace_id}\nServing; press Ctrl-C to stop.", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        threading.Event().wait()
    emulator.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
