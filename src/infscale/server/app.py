"""The FastAPI app: thin routes over :class:`~infscale.server.serving.Service`.

``create_app(generator_or_factory, ...)`` builds the app; its state (the generator, the
service, the metrics) is made in the lifespan, never in module globals. One pure ASGI gate in
front of the routes checks the bearer token, bounds the request body and counts responses;
every failure becomes an OpenAI-shaped error through :func:`~infscale.server.errors.to_http`.

A request whose client disconnects is cancelled, and with it every outstanding generation of
its strategy (the embedded engine frees the sequences). Shutdown refuses new work (503
``shutting_down``), lets running requests finish for ``shutdown_timeout`` seconds and cancels
the rest, which answer 503 ``shutting_down`` too (a stream ends with that error as its last
event, then ``[DONE]``). The drain starts when the server is told to stop, before uvicorn waits
for connections (:class:`~infscale.server.threaded.DrainingServer`, whose own timeout is set
beyond the drain).
"""

from __future__ import annotations

import asyncio
import hmac
import inspect
import json
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..backends.base import Generator
from .errors import ApiError, error_body, to_http, validation_error
from .metrics import CONTENT_TYPE, Metrics
from .protocol import (
    ChatCompletionRequest,
    ChatCompletionResponse,
    CompletionRequest,
    CompletionResponse,
    ErrorResponse,
    Health,
    ModelCard,
    ModelList,
)
from .serving import Plan, Progress, ServerConfig, Service, usage_dict

__all__ = ["create_app"]

log = logging.getLogger("infscale.server")

GeneratorFactory = Callable[[], "Generator | Awaitable[Generator]"]

#: Paths answered without a bearer token (liveness and the API description).
OPEN_PATHS = frozenset({"/health", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"})
_ENDPOINTS = frozenset({"/v1/chat/completions", "/v1/completions", "/v1/models", "/health", "/metrics"})
_MODEL_PREFIX = "/v1/models/"
#: Status for a request whose client went away before the answer (nginx's convention).
CLIENT_CLOSED = 499
KEEPALIVE_SECONDS = 10.0
_PIECE = re.compile(r"\s*\S+|\s+$")

_ERRORS = {code: {"model": ErrorResponse} for code in (400, 401, 404, 413, 429, 500, 502, 503, 504)}
#: One server-sent event (OpenAPI before 3.2: a stream's ``schema`` describes each event): its
#: ``data`` is a JSON chunk or ``[DONE]``; keep-alive comments carry no event.
_SSE_DOC = {"text/event-stream": {"schema": {
    "type": "object",
    "properties": {"data": {"type": "string"}, "event": {"type": "string"}, "id": {"type": "string"},
                   "retry": {"type": "integer"}},
    "required": ["data"],
}}}


def create_app(
    generator: Generator | GeneratorFactory,
    *,
    model_name: str | None = None,
    api_key: str | None = None,
    max_concurrency: int = 16,
    max_queue: int = 64,
    max_budget: int = 64,
    max_body_bytes: int = 1 << 20,
    max_tokens_limit: int = 4096,
    default_max_tokens: int = 256,
    default_budget: int = 8,
    default_task: str = "math",
    default_temperature: float = 0.7,
    shutdown_timeout: float = 30.0,
    max_request_seconds: float = 300.0,
    param_limits: dict[str, float] | None = None,
    on_ready: Callable[[Service], None] | None = None,
) -> FastAPI:
    """The OpenAI-compatible app serving ``generator`` (or what ``generator()`` builds at
    startup, which the app then also closes at shutdown) as ``model_name`` (default: the
    generator's own model name)."""
    config = ServerConfig(
        max_concurrency=max_concurrency, max_queue=max_queue, max_budget=max_budget, max_body_bytes=max_body_bytes,
        max_tokens_limit=max_tokens_limit, default_max_tokens=default_max_tokens, default_budget=default_budget,
        default_task=default_task, default_temperature=default_temperature, shutdown_timeout=shutdown_timeout,
        max_request_seconds=max_request_seconds, param_limits=dict(param_limits or {}),
    )
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        owned = not isinstance(generator, Generator)
        if owned:
            gen = await asyncio.to_thread(generator)
            if inspect.isawaitable(gen):
                gen = await gen
        else:
            gen = generator
        name = model_name or await _model_name(gen)
        service = Service(gen, name, config, metrics)
        app.state.service = service
        if on_ready is not None:
            on_ready(service)
        try:
            yield
        finally:
            cancelled = await service.drain(config.shutdown_timeout)
            if cancelled:
                log.warning("shutdown: cancelled %d request(s) still running", cancelled)
            if owned:
                await gen.aclose()

    app = FastAPI(title="infscale", version=_version(), lifespan=lifespan,
                  description="OpenAI-compatible inference-time scaling: STRATEGY[-BUDGET]:MODEL")
    app.state.metrics = metrics
    app.add_middleware(_Gate, api_key=api_key, max_body_bytes=max_body_bytes, metrics=metrics)

    async def _error_response(request: Request, exc: Exception) -> Response:
        return error_response(exc)

    async def _validation(request: Request, exc: RequestValidationError) -> Response:
        required = ("model", "prompt") if request.url.path.endswith("/completions") and "chat" not in \
            request.url.path else ("model", "messages")
        return error_response(validation_error(list(exc.errors()), required))

    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        return error_response(ApiError(exc.status_code, str(exc.detail), kind, None, None, dict(exc.headers or {})))

    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(StarletteHTTPException, _http)
    app.add_exception_handler(Exception, _error_response)

    @app.post("/v1/chat/completions", response_model=ChatCompletionResponse,
              responses={**_ERRORS, 200: {"content": _SSE_DOC}})
    async def chat_completions(body: ChatCompletionRequest, request: Request):
        """Chat completion; the model name (or the ``infscale`` field) picks the strategy."""
        return await _generate(request, body, "/v1/chat/completions")

    @app.post("/v1/completions", response_model=CompletionResponse,
              responses={**_ERRORS, 200: {"content": _SSE_DOC}})
    async def completions(body: CompletionRequest, request: Request):
        """Text completion of a raw prompt (no chat template)."""
        return await _generate(request, body, "/v1/completions")

    @app.get("/v1/models", response_model=ModelList, responses={401: _ERRORS[401]})
    async def models(request: Request):
        """The served model, and one entry per strategy (``STRATEGY:MODEL``)."""
        return JSONResponse(_service(request).models())

    @app.get("/v1/models/{model_id:path}", response_model=ModelCard, responses={401: _ERRORS[401], 404: _ERRORS[404]})
    async def model(model_id: str, request: Request):
        """One entry of ``/v1/models`` (any ``STRATEGY[-BUDGET]:MODEL`` the server accepts)."""
        card = _service(request).model_card(model_id)
        if card is None:
            return error_response(ApiError(404, f"model: the model {model_id!r} is not served here", "invalid_request_error",
                                           "model", "model_not_found"))
        return JSONResponse(card)

    @app.get("/health", response_model=Health, responses={503: {"model": Health}})
    async def health(request: Request):
        service: Service | None = getattr(request.app.state, "service", None)
        if service is None:
            return JSONResponse({"status": "starting", "model": None, "in_flight": 0, "queued": 0}, status_code=503)
        status = "draining" if service.draining else "ok"
        body = {"status": status, "model": service.model_name, "in_flight": service.admission.active,
                "queued": service.admission.queued}
        stats = getattr(service.generator, "stats", None)
        if callable(stats):
            body["engine"] = stats()
        return JSONResponse(body, status_code=503 if service.draining else 200)

    @app.get("/metrics", response_class=Response, responses={200: {"content": {"text/plain": {}}}, 401: _ERRORS[401]})
    async def metrics_route(request: Request):
        """Prometheus text format."""
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    return app


# ------------------------------------------------------------------------------ routes


def _service(request: Request) -> Service:
    return request.app.state.service


async def _generate(request: Request, body: ChatCompletionRequest | CompletionRequest, endpoint: str) -> Response:
    service = _service(request)
    try:
        service.check_open()
        plan = service.plan(body)
        await service.check_capabilities(plan)
    except Exception as e:  # noqa: BLE001 - every fault becomes an OpenAI error
        return error_response(e)
    prefix = "chatcmpl" if plan.kind == "chat" else "cmpl"
    rid = f"{prefix}-{uuid.uuid4().hex}"
    created = int(time.time())
    if plan.stream:
        return await _stream(request, service, plan, rid, created, endpoint)
    t0 = time.monotonic()
    try:
        result = await _unless_disconnected(request, service.admitted(plan))
    except _ClientGone:
        service.metrics.cancelled.inc(reason="disconnect")
        return Response(status_code=CLIENT_CLOSED)
    except asyncio.CancelledError:
        if _cancelled_by_shutdown(service):  # the drain ran out: say so in the API's shape
            return error_response(_shutting_down(service))
        raise
    except Exception as e:  # noqa: BLE001
        return error_response(e)
    service.metrics.latency.observe(time.monotonic() - t0, endpoint=endpoint, strategy=plan.strategy)
    try:
        body_out = service.response(plan, result, rid, created)
    except ApiError as e:  # e.g. no candidate made the call tool_choice requires
        return error_response(e)
    return JSONResponse(body_out)


def _cancelled_by_shutdown(service: Service) -> bool:
    """Whether a CancelledError out of a request's work came from the shutdown drain (not from
    this handler itself being cancelled)."""
    task = asyncio.current_task()
    return service.draining and (task is None or not task.cancelling())


def _shutting_down(service: Service) -> ApiError:
    return ApiError(503, f"the server is shutting down: the request did not finish within its "
                    f"{service.config.shutdown_timeout:g} s drain (--shutdown-timeout); retry it elsewhere or later",
                    "server_error", None, "shutting_down", {"Retry-After": "5"})


def error_response(exc: BaseException) -> Response:
    status, body, headers = to_http(exc)
    return JSONResponse(body, status_code=status, headers=headers)


class _ClientGone(Exception):
    pass


async def _wait_for_disconnect(receive) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


async def _unless_disconnected(request: Request, coro: Awaitable[Any]) -> Any:
    """Await ``coro`` in a task; cancel it (and every generation it started) if the client
    disconnects first. The body is already read, so ``receive`` only reports the disconnect."""
    work = asyncio.ensure_future(coro)
    gone = asyncio.ensure_future(_wait_for_disconnect(request.receive))
    try:
        await asyncio.wait({work, gone}, return_when=asyncio.FIRST_COMPLETED)
        if work.done():
            return work.result()
        raise _ClientGone()
    finally:
        gone.cancel()
        if not work.done():
            work.cancel()
            await asyncio.wait({work}, timeout=10)


# ---------------------------------------------------------------------------- streaming


class _EventStream(StreamingResponse):
    """A streaming response that runs ``on_close`` however it ends (finished, failed, or the
    client went away before or while it was sent)."""

    def __init__(self, content: AsyncIterator[str], on_close: Callable[[], Awaitable[None]]):
        super().__init__(content, media_type="text/event-stream",
                         headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        self._on_close = on_close

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self._on_close()


async def _stream(request: Request, service: Service, plan: Plan, rid: str, created: int, endpoint: str) -> Response:
    """Admit (or refuse with a status), then answer with server-sent events: a first chunk at
    once, progress chunks if asked (``infscale.progress``), the chosen answers as chunks, a
    final chunk carrying ``infscale`` (and ``usage`` with ``stream_options.include_usage``),
    then ``[DONE]``."""
    try:
        service.check_open()
        await _unless_disconnected(request, service.admission.acquire())
    except _ClientGone:
        service.metrics.cancelled.inc(reason="disconnect")
        return Response(status_code=CLIENT_CLOSED)
    except Exception as e:  # noqa: BLE001
        return error_response(e)
    t0 = time.monotonic()
    progress = Progress()
    work = asyncio.ensure_future(service.execute(plan, progress))
    state = {"finished": False}

    async def on_close() -> None:
        if not work.done():
            work.cancel()
            service.metrics.cancelled.inc(reason="disconnect")
            await asyncio.wait({work}, timeout=10)
        elif not work.cancelled():
            work.exception()  # retrieved: never "exception was never retrieved"
        service.admission.release(time.monotonic() - t0)
        if state["finished"]:
            service.metrics.latency.observe(time.monotonic() - t0, endpoint=endpoint, strategy=plan.strategy)

    chat = plan.kind == "chat"

    def progress_event() -> str:
        chunk = _chunk(plan, rid, created, 0, {} if chat else "", None)
        chunk["infscale"] = {"progress": progress.to_dict(plan.budget)}
        return _sse(chunk)

    async def events() -> AsyncIterator[str]:
        yield _sse(_chunk(plan, rid, created, 0, {"role": "assistant", "content": ""} if chat else "", None))
        while not work.done():
            progress.changed.clear()
            waiter = asyncio.ensure_future(progress.changed.wait())
            done, _ = await asyncio.wait({work, waiter}, timeout=KEEPALIVE_SECONDS,
                                         return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
            if work.done():
                break
            if waiter in done and plan.progress:
                yield progress_event()
            elif not done:
                yield ": keep-alive\n\n"
        if plan.progress:  # the final tally, however fast the run was
            yield progress_event()
        try:
            result = work.result()
        except asyncio.CancelledError:
            if not _cancelled_by_shutdown(service):
                raise
            yield _sse(to_http(_shutting_down(service))[1])  # a final error event, not a cut stream
            yield "data: [DONE]\n\n"
            return
        except Exception as e:  # noqa: BLE001 - the stream has started: the error is an event
            yield _sse(to_http(e)[1])
            yield "data: [DONE]\n\n"
            return
        try:
            picked, answers = service.choices(plan, result)
        except ApiError as e:  # e.g. no candidate made the call tool_choice requires: an error event
            yield _sse(to_http(e)[1])
            yield "data: [DONE]\n\n"
            return
        extension = service.infscale_field(plan, result, answers)
        for i, choice in enumerate(picked):
            if chat and choice.reasoning:  # the thinking first, as servers with a reasoning parser stream it
                yield _sse(_chunk(plan, rid, created, i, {"reasoning_content": choice.reasoning}, None))
            if chat and choice.tool_calls:
                calls = [{"index": j, **tc} for j, tc in enumerate(choice.tool_calls)]
                delta: Any = {"role": "assistant", "content": None, "tool_calls": calls} if i else {"tool_calls": calls}
                yield _sse(_chunk(plan, rid, created, i, delta, None))
            for piece in _PIECE.findall(choice.text or ""):
                delta = ({"role": "assistant", "content": piece} if i else {"content": piece}) if chat else piece
                yield _sse(_chunk(plan, rid, created, i, delta, None))
            last = _chunk(plan, rid, created, i, {} if chat else "", choice.finish_reason)
            if i == len(picked) - 1:
                last["infscale"] = extension
            yield _sse(last)
        if plan.include_usage:
            tail = {"id": rid, "object": "chat.completion.chunk" if chat else "text_completion", "created": created,
                    "model": plan.model, "choices": [], "usage": usage_dict(result), "infscale": extension}
            yield _sse(tail)
        state["finished"] = True
        yield "data: [DONE]\n\n"

    return _EventStream(events(), on_close)


def _chunk(plan: Plan, rid: str, created: int, index: int, delta: Any, finish: str | None) -> dict[str, Any]:
    if plan.kind == "chat":
        choice = {"index": index, "delta": delta, "finish_reason": finish, "logprobs": None}
        obj = "chat.completion.chunk"
    else:
        choice = {"index": index, "text": delta, "finish_reason": finish, "logprobs": None}
        obj = "text_completion"
    return {"id": rid, "object": obj, "created": created, "model": plan.model, "choices": [choice]}


def _sse(payload: dict[str, Any]) -> str:
    return f"data: {json.dumps(payload, ensure_ascii=False, separators=(',', ':'))}\n\n"


# --------------------------------------------------------------------------- the gate


class _Gate:
    """Pure ASGI middleware: bearer token, body size limit, response counting.

    The body of a POST is read here (at most ``max_body_bytes``; a larger one is refused
    with 413 before the route sees it) and replayed to the app; after it, ``receive`` only
    reports the client's disconnect, which the routes watch.
    """

    def __init__(self, app, *, api_key: str | None, max_body_bytes: int, metrics: Metrics):
        self.app = app
        self.api_key = api_key.encode() if api_key else None
        self.max_body = max_body_bytes
        self.metrics = metrics

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        status = [0]

        async def counted_send(message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            refusal = self._refusal(scope)
            if refusal is None and scope.get("method") in ("POST", "PUT", "PATCH"):
                body, refusal = await self._read_body(scope, receive)
                if refusal is None:
                    receive = _replay(body, receive)
            if refusal is not None:
                await error_response(refusal)(scope, receive, counted_send)
                return
            await self.app(scope, receive, counted_send)
        finally:
            endpoint = path if path in _ENDPOINTS else "/v1/models/{id}" if path.startswith(_MODEL_PREFIX) else "other"
            self.metrics.requests.inc(endpoint=endpoint, status=str(status[0] or CLIENT_CLOSED))

    def _refusal(self, scope) -> ApiError | None:
        if self.api_key is None or scope.get("path") in OPEN_PATHS:
            return None
        auth = b""
        for k, v in scope.get("headers", ()):
            if k == b"authorization":
                auth = v
                break
        scheme, _, token = auth.partition(b" ")
        if scheme.lower() == b"bearer" and hmac.compare_digest(token.strip(), self.api_key):
            return None
        what = "missing" if not auth else "incorrect"
        return ApiError(401, f"{what} API key: send the header 'Authorization: Bearer <key>' with the server's "
                        "--api-key", "invalid_request_error", None, "invalid_api_key",
                        {"WWW-Authenticate": "Bearer"})

    async def _read_body(self, scope, receive) -> tuple[bytes, ApiError | None]:
        too_big = ApiError(413, f"the request body exceeds this server's limit of {self.max_body} bytes",
                           "invalid_request_error", None, "request_too_large")
        for k, v in scope.get("headers", ()):
            if k == b"content-length":
                if not v.strip().isdigit():
                    return b"", ApiError(400, "invalid Content-Length header", code="invalid_request")
                if int(v) > self.max_body:
                    return b"", too_big
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return b"", ApiError(400, "the client disconnected while sending the body", code="client_closed")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                return b"", too_big
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks), None


def _replay(body: bytes, receive):
    sent = False

    async def replayed():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed


async def _model_name(gen: Generator) -> str:
    for attr in ("model_name", "model"):
        v = getattr(gen, attr, None)
        if isinstance(v, str) and v:
            return v
    ready = getattr(gen, "ensure_ready", None)
    if ready is not None:  # an HTTP backend asked for its first model
        await ready()
        v = getattr(gen, "model", None)
        if isinstance(v, str) and v:
            return v
    return gen.name


def _version() -> str:
    # the installed distribution's version (the package root imports the API layer above us)
    from importlib.metadata import version  # noqa: PLC0415

    return version("infscale")
