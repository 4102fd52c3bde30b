"""A fault-injecting HTTP proxy for tests, standard library only.

::

    with FakeOpenAIServer() as upstream, FaultProxy(upstream.root_url, {"503": 0.1, "hang": 0.05}) as proxy:
        gen = OpenAIGenerator(proxy.base_url, timeout=2)
        ...
        proxy.counts  # {"pass": 171, "503": 19, "hang": 10}

It listens on an ephemeral port of 127.0.0.1 and forwards each request to ``upstream`` (the fake
OpenAI server, or a real server on 127.0.0.1), except that a chosen share of the requests fails
in one of these ways (:data:`FAULTS`):

* ``"500"``, ``"503"``, ``"429"``, ``"400"``: answered at once with that status and an
  OpenAI-shaped error body, without reaching the upstream (429 and 503 carry ``Retry-After``
  when ``retry_after`` is set);
* ``"reset_before"``: the connection is reset (TCP RST) before the request is forwarded;
* ``"reset_after"``: the request is forwarded, the upstream answers, then the connection is
  reset instead of relaying the answer (the upstream did the work; the client never sees it);
* ``"hang"``: nothing is answered for ``hang_seconds`` (or until the proxy stops), then the
  connection is reset;
* ``"truncated"``: the upstream's 200 is relayed cut to half its body, with a Content-Length
  that matches the cut body (a well-formed response that is not valid JSON);
* ``"cut"``: the upstream's answer is relayed with its full Content-Length but only half its
  body, then the connection is closed (the client sees the body end early);
* ``"empty"``: a 200 with an empty body.

Which requests fail: ``script`` (a list of fault kinds, ``None`` or ``"pass"`` for "forward
this one") is consumed first, one entry per faultable request in arrival order; after it,
each faultable request draws its fate from ``faults`` (kind -> share, the shares summing to at
most 1) with a ``random.Random(seed)`` under a lock, so a single-threaded client sees the same
sequence on every run. ``faultable(method, path)`` says which requests may fail (default: every
POST; ``GET /v1/models`` and the like pass through). :attr:`events` records ``(path, kind)``
for every request, :attr:`counts` the tally by kind.

Responses are relayed whole (read from the upstream, then sent), so a streamed upstream
response reaches the client at once when it ends, not event by event.
"""

from __future__ import annotations

import http.client
import sys
import json
import random
import socket
import struct
import threading
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

__all__ = ["FaultProxy", "FAULTS"]

#: The fault kinds :class:`FaultProxy` can inject.
FAULTS = ("500", "503", "429", "400", "reset_before", "reset_after", "hang", "truncated", "cut", "empty")

_HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailers",
                         "transfer-encoding", "upgrade", "content-length", "host"})
_STATUS_TEXT = {"500": "injected internal error", "503": "injected: service unavailable",
                "429": "injected: too many requests", "400": "injected: bad request"}


def _post_only(method: str, path: str) -> bool:
    return method == "POST"


class FaultProxy:
    """The proxy; a context manager serving on an ephemeral port of 127.0.0.1 (see the module docs).

    ``upstream``: the server's root URL (``http://127.0.0.1:PORT``; a ``/v1`` tail is kept as a
    path prefix only if given). ``faults``: kind -> share of faultable requests. ``seed``: the
    draw's seed. ``script``: fault kinds for the first faultable requests, in order.
    ``hang_seconds``: how long a ``hang`` holds the connection. ``retry_after``: the
    Retry-After header of injected 429/503 answers (``None``: no header). ``upstream_timeout``:
    seconds the proxy waits for the upstream.
    """

    def __init__(self, upstream: str, faults: Mapping[str, float] | None = None, *, seed: int = 0,
                 script: Sequence[str | None] | None = None, hang_seconds: float = 60.0,
                 retry_after: float | None = 0, upstream_timeout: float = 120.0,
                 faultable: Callable[[str, str], bool] = _post_only):
        faults = dict(faults or {})
        for kind, share in faults.items():
            if kind not in FAULTS:
                raise ValueError(f"unknown fault kind {kind!r} (known: {', '.join(FAULTS)})")
            if not 0 <= share <= 1:
                raise ValueError(f"the share of {kind!r} must be in [0, 1], got {share!r}")
        if sum(faults.values()) > 1 + 1e-9:
            raise ValueError(f"the fault shares sum to {sum(faults.values())} > 1")
        for kind in script or ():
            if kind not in (None, "pass") and kind not in FAULTS:
                raise ValueError(f"unknown fault kind {kind!r} in script (known: {', '.join(FAULTS)}, pass, None)")
        url = urlsplit(upstream if "://" in upstream else "http://" + upstream)
        if url.scheme != "http" or not url.hostname:
            raise ValueError(f"the upstream must be an http:// URL, got {upstream!r}")
        self.upstream_host = url.hostname
        self.upstream_port = url.port or 80
        self.faults = faults
        self.seed = seed
        self.hang_seconds = float(hang_seconds)
        self.retry_after = retry_after
        self.upstream_timeout = float(upstream_timeout)
        self.faultable = faultable
        self._rng = random.Random(seed)
        self._script = list(script or ())
        self._lock = threading.Lock()
        self._events: list[tuple[str, str]] = []
        self._stopping = threading.Event()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._port: int | None = None

    # ---------------------------------------------------------------- lifecycle

    def start(self) -> "FaultProxy":
        handler = type("_Handler", (_ProxyHandler,), {"proxy": self})
        self._stopping.clear()
        self._httpd = QuietHTTPServer(("127.0.0.1", 0), handler)
        self._port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()  # hung requests end now
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> "FaultProxy":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the proxy was never started")
        return self._port

    @property
    def root_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.root_url}/v1"

    # --------------------------------------------------------------- records

    @property
    def events(self) -> list[tuple[str, str]]:
        """``(path, kind)`` of every request so far (``kind`` is ``"pass"`` when forwarded)."""
        with self._lock:
            return list(self._events)

    @property
    def counts(self) -> dict[str, int]:
        """Requests by kind (``"pass"`` included)."""
        return dict(Counter(kind for _, kind in self.events))

    def faulted(self) -> int:
        """How many requests were failed on purpose."""
        return sum(1 for _, kind in self.events if kind != "pass")

    def set_faults(self, faults: Mapping[str, float], script: Sequence[str | None] | None = None) -> None:
        """Change the shares (and the script) of a running proxy."""
        with self._lock:
            self.faults = dict(faults)
            self._script = list(script or ())

    def _decide(self, method: str, path: str) -> str:
        with self._lock:
            kind = "pass"
            if self.faultable(method, path):
                if self._script:
                    kind = self._script.pop(0) or "pass"
                else:
                    x = self._rng.random()
                    for k, share in self.faults.items():
                        if x < share:
                            kind = k
                            break
                        x -= share
            self._events.append((path, kind))
            return kind


class QuietHTTPServer(ThreadingHTTPServer):
    """A threading HTTP server that does not print a traceback when a client goes away."""

    daemon_threads = True

    def handle_error(self, request, client_address) -> None:  # a client that went away is no news
        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)


class _Reset(Exception):
    """End the connection with a TCP reset."""


class _ProxyHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 300
    wbufsize = 1 << 16  # headers and body leave in one write...
    disable_nagle_algorithm = True  # ...at once (no 40 ms delayed-ACK stalls)
    proxy: FaultProxy  # set on the per-proxy subclass

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def do_DELETE(self) -> None:
        self._handle()

    def _handle(self) -> None:
        proxy = self.proxy
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        kind = proxy._decide(self.command, self.path.split("?", 1)[0])
        try:
            if kind in _STATUS_TEXT:
                headers = {}
                if kind in ("429", "503") and proxy.retry_after is not None:
                    headers["Retry-After"] = f"{proxy.retry_after:g}"
                payload = {"error": {"message": _STATUS_TEXT[kind], "type": "injected_fault", "param": None,
                                     "code": int(kind)}}
                self._send(int(kind), json.dumps(payload).encode(), {"Content-Type": "application/json", **headers})
                return
            if kind == "reset_before":
                raise _Reset
            if kind == "hang":
                proxy._stopping.wait(proxy.hang_seconds)
                raise _Reset
            if kind == "empty":
                self._send(200, b"", {"Content-Type": "application/json"})
                return
            status, headers, data = self._forward(body)
            if kind == "reset_after":
                raise _Reset
            if kind == "truncated":
                self._send(status, data[: len(data) // 2], headers)
                return
            if kind == "cut":
                self._send(status, data[: len(data) // 2], headers, declared=len(data))
                self.close_connection = True
                return
            self._send(status, data, headers)
        except _Reset:
            self._reset()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _forward(self, body: bytes) -> tuple[int, dict[str, str], bytes]:
        proxy = self.proxy
        conn = http.client.HTTPConnection(proxy.upstream_host, proxy.upstream_port, timeout=proxy.upstream_timeout)
        try:
            headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
            headers["Host"] = f"{proxy.upstream_host}:{proxy.upstream_port}"
            conn.request(self.command, self.path, body=body if body or self.command == "POST" else None,
                         headers=headers)
            resp = conn.getresponse()
            data = resp.read()
            out = {k: v for k, v in resp.getheaders() if k.lower() not in _HOP_BY_HOP}
            return resp.status, out, data
        except OSError as e:  # the upstream is down: say so as a gateway would
            payload = {"error": {"message": f"proxy: upstream failed: {e}", "type": "proxy_error", "param": None,
                                 "code": 502}}
            return 502, {"Content-Type": "application/json"}, json.dumps(payload).encode()
        finally:
            conn.close()

    def _send(self, status: int, data: bytes, headers: dict[str, str], *, declared: int | None = None) -> None:
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(data) if declared is None else declared))
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()

    def _reset(self) -> None:
        """Close with SO_LINGER 0: the peer gets a TCP RST, not an orderly end."""
        self.close_connection = True
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
        except OSError:
            pass
