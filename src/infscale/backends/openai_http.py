"""A generator that talks to any OpenAI-compatible HTTP server (vLLM, SGLang, llama.cpp,
llama-cpp-python, TGI, Ollama, OpenAI itself).

Servers differ in what they honour, and most ignore what they do not know instead of refusing
it. So on the first :meth:`OpenAIGenerator.generate` the generator probes the server once with a
few one-token requests and trusts what it found from then on:

* ``n``: does ``n=2`` return two choices? (``capabilities.native_n``; infscale always sends one
  request per sample, so this is informational.)
* ``max_completion_tokens``: does it bound the completion? If not, ``max_tokens`` is sent.
* ``logprobs`` / ``top_logprobs``: are they returned?
* prefill: is ``continue_final_message`` honoured? (The prompt of a request that continues a
  final assistant message must be shorter than the prompt of the same conversation with that
  message closed and a new assistant turn opened.)
* stop reporting: does a choice say which stop string ended it? vLLM returns ``stop_reason``
  (SGLang ``matched_stop``); llama-cpp-python's server returns neither, so there a
  ``finish_reason`` of ``stop`` cannot tell a stop string from the end of the text
  (``capabilities.reports_stop``; ``Completion.stop`` is filled whenever the server says).

Whatever the server ignores is reported in one warning on the ``infscale`` logger, saying what
infscale does instead.

Log-probabilities: a server reports the log-probability of each generated token under the
distribution it sampled from *after* its own processing (temperature, and on some servers top-k /
top-p truncation). Over HTTP the unmodified distribution is not available, so
``Completion.logprobs`` is exactly what the server reports, and ``Completion.sampled_logprobs``
holds the same values. Token ids are not returned (``token_ids`` stays empty).
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import math
import time
from collections.abc import Callable
from typing import Any

import httpx

from ..errors import BackendError, ConfigError
from ..params import SamplingParams
from ..types import Completion, GenRequest
from .base import Capabilities, Generator

__all__ = ["OpenAIGenerator", "normalise_base_url", "request_json", "backoff_delay", "RETRYABLE_STATUSES"]

logger = logging.getLogger("infscale")

#: HTTP statuses worth retrying: the same request may succeed later.
RETRYABLE_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504})

#: Transport faults worth retrying (the connection failed or the server did not answer in time).
_RETRYABLE_EXCEPTIONS = (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)

_MODES = ("auto", "full", "basic")

_PROBE_MESSAGES = [{"role": "user", "content": "Count from 1 to 20, separated by spaces."}]
_PROBE_PROMPT = "Counting from 1 to 20: 1 2 3"
_PROBE_PREFIX = "1 2 3"
_PROBE_STOPS = (" 4", "\n")
#: Choice fields naming the stop that ended a completion: vLLM's, then SGLang's.
_STOP_REASON_KEYS = ("stop_reason", "matched_stop")

_FINISH_STOP = {"stop", "eos", "eos_token", "stop_sequence", "end_turn", "tool_calls", "function_call"}
_FINISH_LENGTH = {"length", "max_tokens", "model_length", "max_length"}
_FINISH_CANCELLED = {"abort", "aborted", "cancelled", "canceled"}


def normalise_base_url(base_url: str) -> str:
    """``http://h:8080``, ``http://h:8080/``, ``http://h:8080/v1/`` and even
    ``http://h:8080/v1/chat/completions`` all become ``http://h:8080/v1``."""
    if not isinstance(base_url, str) or not base_url.strip():
        raise ConfigError("base_url", f"must be a non-empty URL, got {base_url!r}", "e.g. http://127.0.0.1:8080/v1")
    url = base_url.strip().rstrip("/")
    if "://" not in url:
        url = "http://" + url
    for tail in ("/chat/completions", "/completions", "/models"):
        if url.endswith(tail):
            url = url[: -len(tail)].rstrip("/")
            break
    if not url.endswith("/v1"):
        url += "/v1"
    return url


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
        if when is None:
            return None
        seconds = when.timestamp() - time.time()
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


def _error_message(resp: httpx.Response) -> str:
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


def check_http_options(timeout, max_retries, max_concurrency, backoff_base, backoff_cap) -> None:
    """Validate the connection settings every HTTP client of infscale takes."""
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
        raise ConfigError("timeout", f"got {timeout!r}", "a number of seconds > 0")
    if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
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


async def request_json(
    client: httpx.AsyncClient,
    method: str,
    url: str,
    body: Any = None,
    *,
    max_retries: int,
    retry_delay: Callable[[int, float | None], float],
) -> Any:
    """Send one JSON request and return the decoded JSON body, retrying only retryable faults.

    Connection errors, timeouts and :data:`RETRYABLE_STATUSES` are retried up to ``max_retries``
    times, waiting ``retry_delay(attempt, retry_after_seconds_or_None)`` between attempts; they
    raise a retryable :class:`BackendError` once the retries are spent. Other statuses, a body
    that is not JSON and malformed URLs raise a fatal one carrying the server's own message.
    Shared by every HTTP client in infscale (generators and scorers).
    """
    attempt = 0
    while True:
        status: int | None = None
        retry_after: float | None = None
        try:
            resp = await client.request(method, url, json=body)
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
                    raise BackendError(
                        f"{status} from {url}: the response is not JSON: {resp.text[:200]!r}",
                        retryable=False, status=status,
                    ) from None
            message = _error_message(resp)
            if status not in RETRYABLE_STATUSES:
                raise BackendError(f"{status} from {url}: {message}", retryable=False, status=status)
            problem = f"{status} from {url}: {message}"
            retry_after = _parse_retry_after(resp.headers.get("retry-after"))
        if attempt >= max_retries:
            raise BackendError(
                f"{problem} (gave up after {attempt + 1} attempt{'s' if attempt else ''})",
                retryable=True, status=status,
            )
        await asyncio.sleep(retry_delay(attempt, retry_after))
        attempt += 1


def _map_finish_reason(reason: Any) -> tuple[str, str | None]:
    """OpenAI/vendor finish reasons to ``stop``/``length``/``cancelled``/``error`` (+ an error note)."""
    if reason is None:
        return "stop", None
    r = str(reason).lower()
    if r in _FINISH_STOP:
        return "stop", None
    if r in _FINISH_LENGTH:
        return "length", None
    if r in _FINISH_CANCELLED:
        return "cancelled", None
    if r == "content_filter":
        return "error", "the server's content filter stopped the completion"
    if r == "error":
        return "error", "the server reported an error finishing the completion"
    return "stop", None


def _stop_reason(choice: dict) -> Any:
    """The stop a choice reports (a stop string, a token id, or None), from any known field."""
    for key in _STOP_REASON_KEYS:
        if choice.get(key) is not None:
            return choice[key]
    return None


def _as_float(x: Any) -> float | None:
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return None
    return float(x)


def _parse_logprobs(lp: Any) -> tuple[list[float], list[dict[str, float]], int]:
    """Token logprobs and top alternatives from either response shape.

    Chat shape: ``{"content": [{"token", "logprob", "top_logprobs": [{"token", "logprob"}]}]}``;
    legacy completions shape: ``{"tokens", "token_logprobs", "top_logprobs": [{token: lp}]}``.
    Returns (logprobs, top_logprobs, number of token entries). Null logprobs are skipped.
    """
    logprobs: list[float] = []
    tops: list[dict[str, float]] = []
    if not isinstance(lp, dict):
        return logprobs, tops, 0
    content = lp.get("content")
    if isinstance(content, list):
        for entry in content:
            if not isinstance(entry, dict):
                continue
            v = _as_float(entry.get("logprob"))
            if v is None:
                continue
            logprobs.append(v)
            top: dict[str, float] = {}
            for alt in entry.get("top_logprobs") or []:
                if isinstance(alt, dict) and "token" in alt:
                    a = _as_float(alt.get("logprob"))
                    if a is not None:
                        tok = str(alt["token"])
                        top[tok] = max(a, top.get(tok, -math.inf))
            tops.append(top)
        return logprobs, tops, len(content)
    token_lps = lp.get("token_logprobs")
    if isinstance(token_lps, list):
        top_list = lp.get("top_logprobs")
        for i, v in enumerate(token_lps):
            f = _as_float(v)
            if f is None:
                continue
            logprobs.append(f)
            top = {}
            if isinstance(top_list, list) and i < len(top_list) and isinstance(top_list[i], dict):
                top = {str(k): float(a) for k, a in top_list[i].items() if _as_float(a) is not None}
            tops.append(top)
        return logprobs, tops, len(token_lps)
    return logprobs, tops, 0


class OpenAIGenerator(Generator):
    """Generate through an OpenAI-compatible server.

    ``base_url``: e.g. ``http://127.0.0.1:8080/v1`` (``/v1`` is added when missing).
    ``model``: the model name to send; ``None`` takes the first id listed by ``GET /v1/models``.
    ``api_key``: sent as ``Authorization: Bearer ...`` when given.
    ``timeout``: seconds per HTTP request. ``max_retries``: retries of a retryable fault
    (connection errors, timeouts, 408/409/429/5xx) with exponential backoff from
    ``backoff_base`` seconds, capped at ``backoff_cap`` (Retry-After honoured up to the cap).
    ``max_concurrency``: requests in flight at once.
    ``mode``: ``"auto"`` probes the server on first use; ``"full"`` skips the probe and trusts
    the server to honour everything (n, max_completion_tokens, logprobs, continue_final_message,
    stop_reason, as vLLM does); ``"basic"`` skips the probe and assumes the least (max_tokens, no
    native n, no chat prefill, no stop reporting; logprobs are still asked for and used when
    returned).
    """

    name = "openai"

    def __init__(
        self,
        base_url: str,
        model: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = 120,
        max_retries: int = 3,
        max_concurrency: int = 16,
        mode: str = "auto",
        backoff_base: float = 0.5,
        backoff_cap: float = 8.0,
    ):
        if mode not in _MODES:
            raise ConfigError("mode", f"got {mode!r}", ", ".join(_MODES))
        check_http_options(timeout, max_retries, max_concurrency, backoff_base, backoff_cap)
        self.base_url = normalise_base_url(base_url)
        self.model = model
        self.api_key = api_key
        self.timeout = float(timeout)
        self.max_retries = max_retries
        self.max_concurrency = max_concurrency
        self.mode = mode
        self.backoff_base = float(backoff_base)
        self.backoff_cap = float(backoff_cap)
        self.capabilities = Capabilities(kv_fork=False, reports_stop=False)  # known after the probe
        self.probe: dict[str, Any] = {}
        self._max_tokens_key = "max_tokens"
        self._ready = False
        self._client: httpx.AsyncClient | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._bind_loop()
        self._warned_usage = False
        if mode != "auto":
            self._assume(mode)

    # ------------------------------------------------------------------ public

    async def generate(self, requests: list[GenRequest]) -> list[Completion]:
        """One completion per request, in order; requests run concurrently (bounded)."""
        if not requests:
            return []
        await self.ensure_ready()
        calls = [self._build(r) for r in requests]  # raises ConfigError before anything is sent
        tasks = [asyncio.ensure_future(self._run(req, path, body)) for req, (path, body) in zip(requests, calls)]
        try:
            return list(await asyncio.gather(*tasks))
        except BaseException:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise

    async def ensure_ready(self) -> dict[str, Any]:
        """Resolve the model name and probe the server (once); returns :attr:`probe`."""
        if self._ready:
            return self.probe
        self._bind_loop()
        async with self._lock:
            if not self._ready:
                if self.model is None:
                    self.model = await self._first_model()
                if self.mode == "auto":
                    await self._probe()
                self.probe["model"] = self.model
                self._ready = True
        return self.probe

    async def aclose(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()

    async def __aenter__(self) -> "OpenAIGenerator":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # ------------------------------------------------------------ the mapping

    def _native_params(self, params: SamplingParams, seed: int | None, endpoint: str) -> dict[str, Any]:
        """The one place :class:`SamplingParams` become request fields (``endpoint``: chat or
        completions)."""
        body: dict[str, Any] = {
            "temperature": float(params.temperature),
            "top_p": float(params.top_p),
        }
        if params.top_k > 0:
            body["top_k"] = int(params.top_k)
        if params.min_p > 0:
            body["min_p"] = float(params.min_p)
        # The legacy completions API only knows max_tokens.
        key = self._max_tokens_key if endpoint == "chat" else "max_tokens"
        body[key] = int(params.max_tokens)
        if params.stop:
            body["stop"] = list(params.stop)
        use_seed = seed if seed is not None else params.seed
        if use_seed is not None:
            body["seed"] = int(use_seed)
        if params.logprobs or params.top_logprobs > 0:
            if endpoint == "chat":
                body["logprobs"] = True
                body["top_logprobs"] = int(params.top_logprobs)
            else:
                body["logprobs"] = int(params.top_logprobs) or 1
        return body

    def _build(self, req: GenRequest) -> tuple[str, dict[str, Any]]:
        if getattr(req, "parent", None) is not None:
            raise ConfigError(
                "parent", "the OpenAI HTTP backend cannot continue a kept trajectory (no kv_fork)",
                "requests with messages or prompt",
            )
        seed = req.seed if req.seed is not None else req.params.seed
        if req.messages is not None:
            if req.prefix and not self.capabilities.prefill:
                if req.prompt is not None:  # defensive: GenRequest sets exactly one of the two
                    return self._completions_call(req, seed)
                raise ConfigError(
                    "prefix",
                    f"the server at {self.base_url} does not honour continue_final_message, so a "
                    "chat request cannot continue a partial assistant turn",
                    "an empty prefix, or a prompt request (raw text; the prefix is appended to it)",
                )
            if not self.capabilities.chat_template:
                raise ConfigError(
                    "messages", f"the server at {self.base_url} has no working chat endpoint",
                    "prompt requests (raw text) for this server",
                )
            messages = [dict(m) for m in req.messages]
            body: dict[str, Any] = {"model": self.model, "messages": messages}
            if req.prefix:
                messages.append({"role": "assistant", "content": req.prefix})
                body["continue_final_message"] = True
                body["add_generation_prompt"] = False
            body.update(self._native_params(req.params, seed, "chat"))
            body["stream"] = False
            return "/chat/completions", body
        return self._completions_call(req, seed)

    def _completions_call(self, req: GenRequest, seed: int | None) -> tuple[str, dict[str, Any]]:
        body = {"model": self.model, "prompt": (req.prompt or "") + req.prefix}
        body.update(self._native_params(req.params, seed, "completions"))
        body["stream"] = False
        return "/completions", body

    async def _run(self, req: GenRequest, path: str, body: dict[str, Any]) -> Completion:
        self._bind_loop()
        async with self._sem:
            data = await self._request("POST", path, body)
        return self._parse(data, req, path, body.get("seed"))

    def _parse(self, data: Any, req: GenRequest, path: str, seed: int | None) -> Completion:
        url = self.base_url + path
        choices = data.get("choices") if isinstance(data, dict) else None
        if not choices or not isinstance(choices[0], dict):
            raise BackendError(f"malformed response from {url}: no choices in {str(data)[:200]}", retryable=False)
        choice = choices[0]
        if path == "/chat/completions":
            message = choice.get("message") or {}
            text = message.get("content") or ""
        else:
            text = choice.get("text") or ""
        finish, error = _map_finish_reason(choice.get("finish_reason"))
        logprobs, tops, n_entries = _parse_logprobs(choice.get("logprobs"))
        usage = data.get("usage") if isinstance(data.get("usage"), dict) else None
        prompt_tokens = generated = None
        if usage is not None:
            prompt_tokens = usage.get("prompt_tokens")
            generated = usage.get("completion_tokens")
        if not isinstance(generated, int):
            generated = n_entries if n_entries else (max(1, len(text) // 4) if text else 0)
            if not self._warned_usage:
                self._warned_usage = True
                logger.warning(
                    "OpenAI server at %s returned no usage; infscale estimates generated tokens "
                    "from the logprob entries, else as len(text)//4, and counts prompt tokens as 0",
                    self.base_url,
                )
        if not isinstance(prompt_tokens, int):
            prompt_tokens = 0
        stop = _stop_reason(choice)
        stop = stop if isinstance(stop, str) and stop in req.params.stop else None
        return Completion(
            text=text,
            finish_reason=finish,
            prompt_tokens=prompt_tokens,
            generated_tokens=generated,
            logprobs=list(logprobs),
            sampled_logprobs=list(logprobs),
            top_logprobs=tops if req.params.top_logprobs > 0 and tops else None,
            stop=stop,
            seed=seed,
            error=error,
        )

    # ------------------------------------------------------------------ HTTP

    def _bind_loop(self) -> None:
        """asyncio primitives and httpx connections belong to one event loop: a generator used
        from a new loop (each ``infscale.ask`` call runs its own) gets fresh ones."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if loop is self._loop and self._loop is not None:
            return
        if loop is None and self._loop is None and getattr(self, "_sem", None) is not None:
            return
        self._loop = loop
        self._lock = asyncio.Lock()
        self._sem = asyncio.Semaphore(self.max_concurrency)
        self._client = None  # a client of a finished loop cannot be closed from this one

    def _http(self) -> httpx.AsyncClient:
        self._bind_loop()
        if self._client is None:
            headers = {"Accept": "application/json"}
            if self.api_key:
                headers["Authorization"] = f"Bearer {self.api_key}"
            self._client = httpx.AsyncClient(
                headers=headers,
                timeout=httpx.Timeout(self.timeout),
                limits=httpx.Limits(max_connections=self.max_concurrency + 2,
                                    max_keepalive_connections=self.max_concurrency + 2),
            )
        return self._client

    def _retry_delay(self, attempt: int, retry_after: float | None) -> float:
        """Seconds before retry number ``attempt + 1``: exponential from ``backoff_base``, or the
        server's Retry-After; never more than ``backoff_cap``."""
        return backoff_delay(attempt, retry_after, self.backoff_base, self.backoff_cap)

    async def _request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        return await request_json(self._http(), method, self.base_url + path, body,
                                  max_retries=self.max_retries, retry_delay=self._retry_delay)

    async def _first_model(self) -> str:
        data = await self._request("GET", "/models")
        items = data.get("data") if isinstance(data, dict) else None
        if isinstance(items, list):
            for item in items:
                if isinstance(item, dict) and item.get("id"):
                    return str(item["id"])
        raise BackendError(f"{self.base_url}/models lists no model; pass model= explicitly", retryable=False)

    # ----------------------------------------------------------------- probing

    def _assume(self, mode: str) -> None:
        full = mode == "full"
        self.capabilities = Capabilities(
            logprobs=True, top_logprobs=True, prefill=full, native_n=full, kv_fork=False, chat_template=True,
            reports_stop=full,
        )
        self._max_tokens_key = "max_completion_tokens" if full else "max_tokens"
        self.probe = {
            "mode": mode, "probed": False, "endpoint": "chat", "chat": True, "n": full,
            "max_completion_tokens": full, "max_tokens_param": self._max_tokens_key,
            "logprobs": True, "top_logprobs": True, "continue_final_message": full,
            "stop_reason": full,
        }

    async def _try(
        self, path: str, body: dict[str, Any], errors: dict[str, str], name: str, *, baseline: bool = False
    ) -> dict | None:
        """A probe request. A refusal means "not supported" and is recorded. For the baseline
        request a retryable fault that outlives the retries means the server is unwell and is
        raised; for a feature probe it too means "not supported" (some servers answer 500 to a
        field they cannot handle), which only makes infscale more conservative."""
        try:
            data = await self._request("POST", path, {"model": self.model, "temperature": 0.0, "stream": False, **body})
        except BackendError as e:
            if e.retryable and baseline:
                raise
            errors[name] = str(e)
            return None
        if not isinstance(data, dict) or not data.get("choices"):
            errors[name] = f"malformed response: {str(data)[:200]}"
            return None
        return data

    async def _probe(self) -> None:
        errors: dict[str, str] = {}
        probe: dict[str, Any] = {"mode": "auto", "probed": True, "model": self.model}
        chat = await self._try(
            "/chat/completions", {"messages": _PROBE_MESSAGES, "max_tokens": 1}, errors, "chat", baseline=True
        )
        if chat is None:
            comp = await self._try(
                "/completions", {"prompt": _PROBE_PROMPT, "max_tokens": 1}, errors, "completions", baseline=True
            )
            if comp is None:
                raise BackendError(
                    f"the server at {self.base_url} answers neither chat nor completions requests: "
                    + "; ".join(errors.values()),
                    retryable=False,
                )
        probe["chat"] = chat is not None
        endpoint = "chat" if chat is not None else "completions"
        path = "/chat/completions" if endpoint == "chat" else "/completions"
        base: dict[str, Any] = {"messages": _PROBE_MESSAGES} if endpoint == "chat" else {"prompt": _PROBE_PROMPT}
        probe["endpoint"] = endpoint

        # n: two choices for n=2?
        data = await self._try(path, {**base, "n": 2, "max_tokens": 1}, errors, "n")
        probe["n_choices"] = len(data["choices"]) if data else 0
        probe["n"] = probe["n_choices"] >= 2

        # max_completion_tokens: bounds the completion? (max_tokens=4 is a fallback ceiling in
        # case it is ignored; a server that rejects both together is asked with it alone.)
        mct = False
        if endpoint == "chat":
            data = await self._try(path, {**base, "max_completion_tokens": 1, "max_tokens": 4}, errors, "max_completion_tokens")
            if data is None:
                data = await self._try(path, {**base, "max_completion_tokens": 1}, errors, "max_completion_tokens")
            if data is not None:
                usage = data.get("usage") or {}
                got = usage.get("completion_tokens") if isinstance(usage, dict) else None
                finish = data["choices"][0].get("finish_reason")
                probe["max_completion_tokens_result"] = {"completion_tokens": got, "finish_reason": finish}
                mct = isinstance(got, int) and got <= 1 and _map_finish_reason(finish)[0] == "length"
        probe["max_completion_tokens"] = mct
        self._max_tokens_key = "max_completion_tokens" if mct else "max_tokens"
        probe["max_tokens_param"] = self._max_tokens_key

        # logprobs and top_logprobs returned?
        lp_fields = {"logprobs": True, "top_logprobs": 2} if endpoint == "chat" else {"logprobs": 2}
        data = await self._try(path, {**base, "max_tokens": 1, **lp_fields}, errors, "logprobs")
        lps, tops, _ = _parse_logprobs(data["choices"][0].get("logprobs")) if data else ([], [], 0)
        probe["logprobs"] = bool(lps)
        probe["top_logprobs"] = any(tops)

        # continue_final_message: a continued turn's prompt is shorter than a closed one's.
        prefill = False
        if endpoint == "chat":
            msgs = _PROBE_MESSAGES + [{"role": "assistant", "content": _PROBE_PREFIX}]
            cont = await self._try(
                path,
                {"messages": msgs, "max_tokens": 1, "continue_final_message": True, "add_generation_prompt": False},
                errors, "continue_final_message",
            )
            closed = await self._try(path, {"messages": msgs, "max_tokens": 1}, errors, "closed_turn") if cont else None
            pt_cont = ((cont or {}).get("usage") or {}).get("prompt_tokens")
            pt_closed = ((closed or {}).get("usage") or {}).get("prompt_tokens")
            probe["prefill_prompt_tokens"] = {"continued": pt_cont, "closed": pt_closed}
            prefill = isinstance(pt_cont, int) and isinstance(pt_closed, int) and pt_cont < pt_closed
        probe["continue_final_message"] = prefill

        # stop_reason: does a choice name the stop string that ended it? (" 4" ends the count
        # within a few tokens; the key alone counts, as vLLM sends it as null at end of text.)
        data = await self._try(path, {**base, "max_tokens": 8, "stop": list(_PROBE_STOPS)}, errors, "stop_reason")
        choice = data["choices"][0] if data else {}
        probe["stop_reason_result"] = _stop_reason(choice) if isinstance(choice, dict) else None
        probe["stop_reason"] = isinstance(choice, dict) and (
            any(k in choice for k in _STOP_REASON_KEYS) or probe["stop_reason_result"] in _PROBE_STOPS
        )
        probe["errors"] = errors

        self.capabilities = Capabilities(
            logprobs=probe["logprobs"],
            top_logprobs=probe["top_logprobs"],
            prefill=prefill if endpoint == "chat" else True,
            native_n=probe["n"],
            kv_fork=False,
            chat_template=endpoint == "chat",
            reports_stop=probe["stop_reason"],
        )
        self.probe = probe

        notes = []
        if endpoint != "chat":
            notes.append("the chat endpoint fails (" + errors.get("chat", "?") + "): only prompt requests can be served")
        if not probe["n"]:
            notes.append(f"ignores n (returned {probe['n_choices']} choice(s) for n=2): infscale sends one request per sample")
        if endpoint == "chat" and not mct:
            notes.append("ignores max_completion_tokens: infscale sends max_tokens instead")
        if not probe["logprobs"]:
            notes.append("returns no logprobs: completions carry empty logprobs")
        elif not probe["top_logprobs"]:
            notes.append("returns no top_logprobs: completions carry no alternatives")
        if endpoint == "chat" and not prefill:
            notes.append(
                "ignores continue_final_message: chat requests with a prefix raise ConfigError "
                "(prompt requests still take a prefix)"
            )
        if not probe["stop_reason"]:
            notes.append(
                "returns no stop_reason: a completion ended by a stop string cannot be told from one "
                "that reached the end of the text (capabilities.reports_stop is False)"
            )
        if notes:
            logger.warning("OpenAI server at %s (model %s) %s", self.base_url, self.model, "; ".join(notes))
        else:
            logger.info("OpenAI server at %s (model %s) honours n, max_completion_tokens, logprobs, prefill "
                        "and reports stop strings",
                        self.base_url, self.model)
