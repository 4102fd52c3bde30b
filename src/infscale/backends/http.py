"""The HTTP transport every infscale client of a server shares (the OpenAI-compatible generator,
the reward-model scorer).

* :func:`server_root` / :func:`normalise_base_url` — one reading of a user's URL: scheme added,
  trailing slashes and a known endpoint tail dropped (``http://h:8080/v1/chat/completions``,
  ``h:8080/``, ``http://h:8000/pooling`` ...).
* :func:`request_json` — one JSON request, retried only on retryable faults (connection errors,
  timeouts, :data:`RETRYABLE_STATUSES`, a 200 whose body is cut or empty) with bounded
  exponential backoff that honours ``Retry-After``, within a bound on the total time of all
  attempts; anything else surfaces at once with the server's own message.
* :class:`HttpSettings` — the connect timeout, read timeout, retries and total retry time, with
  defaults a user accepts for a small model, overridable by the environment
  (:data:`ENV_SETTINGS`) and by the CLI's ``--connect-timeout``, ``--read-timeout``,
  ``--max-retries``, ``--retry-seconds``.
* :class:`HttpTransport` — the connection settings of one server and an ``httpx.AsyncClient``,
  concurrency semaphore and lock bound to the running event loop (``infscale.ask`` runs one loop
  per question; a client cannot outlive its loop, so a new loop gets fresh ones), plus
  :meth:`HttpTransport.first_model`, the ``GET /v1/models`` lookup of the served model's name.
"""

from __future__ import annotations

import asyncio
import email.utils
import math
import os
import time
from collections.abc import Callable
from typing import Any

import httpx

from ..errors import BackendError, ConfigError

__all__ = ["HttpTransport", "HttpSettings", "ENV_SETTINGS", "server_root", "normalise_base_url", "request_json", "backoff_delay",
           "check_http_options", "error_message", "RETRYABLE_STATUSES"]

#: HTTP statuses worth retrying: the same request may succeed later.
RETRYABLE_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504})

#: Transport faults worth retrying (the connection failed or the server did not answer in time).
_RETRYABLE_EXCEPTIONS = (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)

#: Endpoint tails a user may paste with the server's URL (OpenAI routes, vLLM's pooling routes).
_ENDPOINT_TAILS = ("/chat/completions", "/completions", "/models", "/pooling", "/classify", "/score")


def server_root(base_url: Any) -> str:
    """The server's root: ``http://h:8080``, ``http://h:8080/``, ``http://h:8080/v1/``,
    ``http://h:8080/v1/chat/completions``, ``http://h:8080/pooling`` and ``h:8080`` all become
    ``http://h:8080`` (a path before ``/v1`` is kept: ``http://h/api/v1`` -> ``http://h/api``)."""
    if not isinstance(base_url, str) or not base_url.strip():
        raise ConfigError("base_url", f"must be a non-empty URL, got {base_url!r}", "e.g. http://127.0.0.1:8080/v1")
    url = base_url.strip().rstrip("/")
    if "://" not in url:
        url = "http://" + url
    for tail in _ENDPOINT_TAILS:
        if url.endswith(tail):
            url = url[: -len(tail)].rstrip("/")
            break
    if url.endswith("/v1"):
        url = url[: -len("/v1")]
    return url


def normalise_base_url(base_url: Any) -> str:
    """The OpenAI API base: :func:`server_root` + ``/v1``."""
    return server_root(base_url) + "/v1"


#: Defaults of the connection settings: a hung server costs ``read_timeout`` per attempt and at
#: most ``retry_seconds`` per request, whatever ``max_retries`` says.
DEFAULT_CONNECT_TIMEOUT = 10.0
DEFAULT_READ_TIMEOUT = 60.0
DEFAULT_MAX_RETRIES = 3
DEFAULT_RETRY_SECONDS = 120.0

#: Environment variables that override the defaults (an explicit argument overrides them).
ENV_SETTINGS = {
    "connect_timeout": "INFSCALE_CONNECT_TIMEOUT",
    "read_timeout": "INFSCALE_READ_TIMEOUT",
    "max_retries": "INFSCALE_MAX_RETRIES",
    "retry_seconds": "INFSCALE_RETRY_SECONDS",
}


def _seconds(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or not value > 0:
        raise ConfigError(name, f"got {value!r}", "a number of seconds > 0")
    return float(value)


def _from_env(key: str, kind: type) -> Any:
    var = ENV_SETTINGS[key]
    raw = os.environ.get(var)
    if raw is None or not raw.strip():
        return None
    try:
        return kind(raw.strip())
    except ValueError:
        accepted = "an integer >= 0" if kind is int else "a number of seconds > 0"
        raise ConfigError(var, f"cannot read {raw!r}", accepted) from None


class HttpSettings:
    """How long to wait for a server and how often to try again.

    ``connect_timeout``: seconds to open a connection. ``read_timeout``: seconds without a byte
    of the answer before an attempt is given up (a hung server). ``max_retries``: retries of a
    retryable fault. ``retry_seconds``: the bound on one request's attempts and waits together;
    no retry starts past it, and an attempt never waits beyond it. Each ``None`` takes the
    environment variable of :data:`ENV_SETTINGS`, else the default.
    """

    def __init__(self, connect_timeout: float | None = None, read_timeout: float | None = None,
                 max_retries: int | None = None, retry_seconds: float | None = None):
        if connect_timeout is None:
            connect_timeout = _from_env("connect_timeout", float) or DEFAULT_CONNECT_TIMEOUT
        if read_timeout is None:
            read_timeout = _from_env("read_timeout", float) or DEFAULT_READ_TIMEOUT
        if max_retries is None:
            env = _from_env("max_retries", int)
            max_retries = DEFAULT_MAX_RETRIES if env is None else env
        if retry_seconds is None:
            retry_seconds = _from_env("retry_seconds", float) or DEFAULT_RETRY_SECONDS
        self.connect_timeout = _seconds("connect_timeout", connect_timeout)
        self.read_timeout = _seconds("read_timeout", read_timeout)
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
            raise ConfigError("max_retries", f"got {max_retries!r}", "an integer >= 0")
        self.max_retries = max_retries
        self.retry_seconds = _seconds("retry_seconds", retry_seconds)

    def __repr__(self) -> str:
        return (f"HttpSettings(connect_timeout={self.connect_timeout}, read_timeout={self.read_timeout}, "
                f"max_retries={self.max_retries}, retry_seconds={self.retry_seconds})")


def check_http_options(timeout, max_retries, max_concurrency, backoff_base, backoff_cap) -> None:
    """Validate the connection settings every HTTP client of infscale takes (``None`` for
    ``timeout`` and ``max_retries`` means: the environment's, else the default)."""
    if timeout is not None:
        _seconds("timeout", timeout)
    if max_retries is not None and (isinstance(max_retries, bool) or not isinstance(max_retries, int)
                                    or max_retries < 0):
        raise ConfigError("max_retries", f"got {max_retries!r}", "an integer >= 0")
    if isinstance(max_concurrency, bool) or not isinstance(max_concurrency, int) or max_concurrency < 1:
        raise ConfigError("max_concurrency", f"got {max_concurrency!r}", "an integer >= 1")
    if not backoff_base >= 0 or not backoff_cap >= 0:
        raise ConfigError("backoff", f"got base={backoff_base!r}, cap={backoff_cap!r}", "numbers >= 0")


def backoff_delay(attempt: int, retry_after: float | None, base: float, cap: float) -> float:
    """Seconds before retry number ``attempt + 1``: ``base * 2**attempt``, or the server's
    Retry-After when it sent one; never more than ``cap``."""
    if retry_after is not None:
        return min(cap, retry_after)
    return min(cap, base * (2**attempt))


def _parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header: a number of seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - time.time()
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


def error_message(resp: httpx.Response) -> str:
    """The server's own words: OpenAI-shaped ``{"error": {"message": ...}}``, or close to it."""
    try:
        data = resp.json()
    except ValueError:
        text = resp.text.strip()
        return text[:500] if text else resp.reason_phrase or "no message"
    if isinstance(data, dict):
        err = data.get("error", data)
        if isinstance(err, dict):
            for key in ("message", "detail", "msg"):
                if err.get(key):
                    return str(err[key])
        elif isinstance(err, str) and err:
            return err
        if data.get("detail"):  # FastAPI validation errors
            return str(data["detail"])[:500]
        if data.get("message"):
            return str(data["message"])
    return str(data)[:500]


async def request_json(
    client: httpx.AsyncClient,
    method: str,
    url: str,
    body: Any = None,
    *,
    max_retries: int,
    retry_delay: Callable[[int, float | None], float],
    retry_seconds: float | None = None,
    timeout: httpx.Timeout | None = None,
) -> Any:
    """Send one JSON request and return the decoded JSON body, retrying only retryable faults.

    Connection errors, timeouts, :data:`RETRYABLE_STATUSES` and a 2xx whose body is empty or
    not JSON (cut on the way: a proxy or a connection failed mid-answer) are retried up to
    ``max_retries`` times, waiting ``retry_delay(attempt, retry_after_seconds_or_None)`` between
    attempts (none before the first retry of a lost answer: a reset, a timeout, a cut body),
    all within ``retry_seconds`` (no attempt waits past it, no retry starts after
    it); they raise a retryable :class:`BackendError` once the retries or the time are spent.
    Other statuses and malformed URLs raise a fatal one carrying the server's own message.
    ``timeout`` is the per-attempt timeout (the client's when ``None``).
    """
    attempt = 0
    deadline = None if retry_seconds is None else time.monotonic() + retry_seconds
    while True:
        status: int | None = None
        retry_after: float | None = None
        kwargs: dict[str, Any] = {}
        if deadline is not None:
            left = max(0.05, deadline - time.monotonic())
            base = timeout or client.timeout
            kwargs["timeout"] = httpx.Timeout(
                connect=min(base.connect or left, left), read=min(base.read or left, left),
                write=min(base.write or left, left), pool=min(base.pool or left, left))
        elif timeout is not None:
            kwargs["timeout"] = timeout
        transport_fault = True  # the connection failed or the answer was lost on the way
        try:
            resp = await client.request(method, url, json=body, **kwargs)
        except _RETRYABLE_EXCEPTIONS as e:
            problem = f"{type(e).__name__} from {url}: {str(e) or 'no detail'}"
        except httpx.HTTPError as e:  # a bad URL, an unsupported protocol, a broken body
            raise BackendError(f"{type(e).__name__} from {url}: {e}", retryable=False) from e
        else:
            status = resp.status_code
            if 200 <= status < 300:
                try:
                    return resp.json()
                except ValueError:
                    what = "is empty" if not resp.content.strip() else f"is not JSON (cut short?): {resp.text[:200]!r}"
                    problem = f"{status} from {url}: the response body {what}"
            else:
                transport_fault = False  # the server answered: give it the time it asks for
                message = error_message(resp)
                if status not in RETRYABLE_STATUSES:
                    raise BackendError(f"{status} from {url}: {message}", retryable=False, status=status)
                problem = f"{status} from {url}: {message}"
                retry_after = _parse_retry_after(resp.headers.get("retry-after"))
        tries = f"{attempt + 1} attempt{'s' if attempt else ''}"
        if attempt >= max_retries:
            raise BackendError(f"{problem} (gave up after {tries})", retryable=True, status=status)
        # a lost answer (reset, timeout, cut body) is asked again at once the first time: the
        # time was spent already and a fresh connection usually works; then the backoff applies
        delay = 0.0 if transport_fault and attempt == 0 else retry_delay(attempt, retry_after)
        if deadline is not None and time.monotonic() + delay >= deadline:
            raise BackendError(f"{problem} (gave up after {tries}: the retry time of {retry_seconds:g} s is spent)",
                               retryable=True, status=status)
        await asyncio.sleep(delay)
        attempt += 1


class HttpTransport:
    """One server's connection settings, and the client, semaphore and lock of the running loop.

    ``connect_timeout`` / ``read_timeout`` (``timeout`` is the older name of ``read_timeout``),
    ``max_retries`` and ``retry_seconds`` are :class:`HttpSettings` (``None``: the environment,
    else the defaults). A retryable fault is retried after ``backoff_base * 2**attempt`` seconds
    (or the server's Retry-After), at most ``backoff_cap``, while the request's
    ``retry_seconds`` last. ``max_concurrency``: requests in flight at once (:attr:`semaphore`;
    the pool keeps ``max_concurrency + spare_connections`` connections). ``api_key``: sent as a
    bearer token.

    The pool lives as long as its event loop (not one per batch, which would cost ~80 ms of TLS
    setup per search step); the semaphore bounds every request on that loop, whichever call
    sent it.
    """

    def __init__(self, *, api_key: str | None = None, timeout: float | None = None, max_retries: int | None = None,
                 max_concurrency: int = 16, backoff_base: float = 0.5, backoff_cap: float = 8.0,
                 spare_connections: int = 0, connect_timeout: float | None = None,
                 read_timeout: float | None = None, retry_seconds: float | None = None):
        check_http_options(timeout, max_retries, max_concurrency, backoff_base, backoff_cap)
        settings = HttpSettings(connect_timeout=connect_timeout,
                                read_timeout=read_timeout if read_timeout is not None else timeout,
                                max_retries=max_retries, retry_seconds=retry_seconds)
        self.settings = settings
        self.api_key = api_key
        self.timeout = settings.read_timeout
        self.max_retries = settings.max_retries
        self.max_concurrency = max_concurrency
        self.backoff_base = float(backoff_base)
        self.backoff_cap = float(backoff_cap)
        self.spare_connections = spare_connections
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: httpx.AsyncClient | None = None
        self._sem: asyncio.Semaphore | None = None
        self._lock: asyncio.Lock | None = None

    def _bind(self) -> None:
        """asyncio primitives and httpx connections belong to one event loop: a new running loop
        gets fresh ones (the old loop's client cannot be closed from this one and is dropped)."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self._loop = loop
            self._sem = asyncio.Semaphore(self.max_concurrency)
            self._lock = asyncio.Lock()
            self._client = None

    @property
    def semaphore(self) -> asyncio.Semaphore:
        """Bounds the requests in flight on the running loop."""
        self._bind()
        return self._sem

    @property
    def lock(self) -> asyncio.Lock:
        """A lock of the running loop (e.g. for a once-only probe)."""
        self._bind()
        return self._lock

    def client(self) -> httpx.AsyncClient:
        """The connection pool of the running event loop (made on first use)."""
        self._bind()
        if self._client is None or self._client.is_closed:
            headers = {"Accept": "application/json"}
            if self.api_key:
                headers["Authorization"] = f"Bearer {self.api_key}"
            size = self.max_concurrency + self.spare_connections
            self._client = httpx.AsyncClient(
                headers=headers, timeout=self.httpx_timeout(),
                limits=httpx.Limits(max_connections=size, max_keepalive_connections=size),
            )
        return self._client

    def httpx_timeout(self) -> httpx.Timeout:
        """The per-attempt timeout: connect and read from the settings (writes and waiting for
        a pooled connection get the read timeout)."""
        s = self.settings
        return httpx.Timeout(s.read_timeout, connect=s.connect_timeout)

    def retry_delay(self, attempt: int, retry_after: float | None) -> float:
        return backoff_delay(attempt, retry_after, self.backoff_base, self.backoff_cap)

    async def request(self, method: str, url: str, body: Any = None) -> Any:
        """:func:`request_json` on this transport's client, retries and backoff."""
        return await request_json(self.client(), method, url, body, max_retries=self.max_retries,
                                  retry_delay=self.retry_delay, retry_seconds=self.settings.retry_seconds)

    async def first_model(self, models_url: str, hint: str = "pass model= explicitly") -> str:
        """The first model id listed by ``GET models_url`` (an OpenAI ``/v1/models`` list)."""
        data = await self.request("GET", models_url)
        items = data.get("data") if isinstance(data, dict) else None
        for item in items if isinstance(items, list) else []:
            if isinstance(item, dict) and item.get("id"):
                return str(item["id"])
        raise BackendError(f"{models_url} lists no model; {hint}", retryable=False)

    async def aclose(self) -> None:
        """Close the connection pool if it belongs to the running loop (else it is dropped)."""
        client, loop = self._client, self._loop
        self._client = None
        if client is not None and not client.is_closed:
            try:
                running = asyncio.get_running_loop()
            except RuntimeError:
                running = None
            if loop is running:
                await client.aclose()
