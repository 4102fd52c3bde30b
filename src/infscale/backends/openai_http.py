"""A generator that talks to any OpenAI-compatible HTTP server (vLLM, SGLang, llama.cpp,
llama-cpp-python, TGI, Ollama, OpenAI itself).

Servers differ in what they honour, and most ignore what they do not know instead of refusing
it. So on the first :meth:`OpenAIGenerator.generate` the generator probes the server
(:mod:`infscale.backends.probe`: native ``n``, ``max_completion_tokens``, logprobs, prefill with
``continue_final_message``, stop reporting) and trusts what it found from then on; a probe that
one fault kept from checking something is repeated later, never taken as the server's answer. Requests go
through the shared transport (:mod:`infscale.backends.http`): one client per event loop,
retries only on retryable faults with bounded backoff.

Log-probabilities: a server reports the log-probability of each generated token under the
distribution it sampled from *after* its own processing (temperature, and on some servers top-k /
top-p truncation). Over HTTP the unmodified distribution is not available, so
``Completion.logprobs`` is exactly what the server reports, and ``Completion.sampled_logprobs``
holds the same values. Token ids are not returned (``token_ids`` stays empty).

Token confidence (``GenRequest.confidence=k``): the generator asks for at least k
``top_logprobs`` and computes DeepConf's confidence of each token, ``-(1/k) * sum`` of the k
largest log-probabilities the server returned at that position (fewer if it returned fewer),
so it is available wherever the probe found top logprobs (``capabilities.confidence``). These
are the server's log-probabilities, after its own processing where it applies any (see
above). A request with a ``stop_rule`` is streamed (``"stream": true``, server-sent events):
the rule is checked as each token's logprobs arrive and, once it holds, the stream is closed
(the server stops generating when the connection drops), ``finish_reason="confidence"`` and the
tokens received so far are counted. A retryable fault before the first event is retried like
any request; one after it fails the request.

Samples drawn with ``n``: where the probe found ``n`` honoured (vLLM and SGLang do) and
``native_n`` is on (the default), requests that differ only in their seed (the samples of one
prompt: a sample-level strategy's batch, the children of one node in step-level search) go out
as **one** request with ``n`` = their number and the first one's seed (:meth:`OpenAIGenerator.groups`).
What is reproducible is then the *set*: the same prompt, parameters, seed and ``n`` give the
same ``n`` completions on a server that honours seeds, but a sample is not reproducible alone
from a seed of its own, and a different ``n`` (e.g. a budget that admits fewer samples, or a
resumed draw of only some of them) gives a different set; requests marked ``alone`` (the evaluation
pool's samples) are never grouped. Every completion's
``seed`` is the request's. The meter counts each choice as one call with its own generated
tokens (its logprob entries, else the usage's completion tokens shared by text length); the
prompt, which the server reads once, is charged to the first. The budget admits requests before
they are grouped, so a request for more samples than the budget pays for is cut to what it pays
for. ``native_n=False`` keeps one request per sample, each with its own seed (what a caller that
needs each sample reproducible from its stored seed wants). Requests with a streamed stop rule
(DeepConf online) or a thinking budget are always sent alone.

vLLM and SGLang are recognised after the probe (:func:`~infscale.backends.probe.identify_server`:
SGLang's ``GET /get_server_info``, vLLM's ``GET /version``) and named in :attr:`OpenAIGenerator.server`
and the probe record. Both honour everything the probe asks (``n``, ``max_completion_tokens``,
logprobs, ``continue_final_message``, stop reporting: ``stop_reason`` / ``matched_stop``).
Step-level search continues a partial answer: on vLLM a chat problem's continuation goes through
``/v1/completions`` as the conversation's text rendered by the server's own chat template
(``/tokenize`` + ``/detokenize``, once per conversation, cached; :mod:`~infscale.backends.templating`)
plus the steps so far, so every continuation of a problem starts with the same bytes and vLLM's
automatic prefix caching serves them; on SGLang (whose ``/tokenize`` takes text, not messages) and
on other servers it goes through chat with ``continue_final_message`` (SGLang's radix cache matches
the rendered tokens). A raw-prompt problem continues through ``/v1/completions`` with the prompt
text plus the steps so far everywhere. ``probe["continuation"]`` says which path is in use.
``response_format`` (JSON / JSON schema) is passed as it is; both constrain decoding with it.

Self-certainty (``GenRequest.self_certainty``): Kang et al. 2025 define it over the whole
vocabulary, ``KL(U || p) = -(1/V) * sum_j log(V * p_j)``, and a server returns only the top
logprobs, so over HTTP it is an **approximation**, flagged as such
(``capabilities.self_certainty == "top-k"``): with the 20 largest probabilities known and the
rest, ``R = 1 - sum of them``, spread evenly over the unseen tokens (the spread that makes
``KL(U || p)`` smallest, by Jensen's inequality), the divergence tends to ``-log R`` as the
vocabulary grows (the difference is ``O(k log V / V)``), and ``-log R`` is what is reported
(``R`` below ``1e-9`` counts as ``1e-9``). It is a lower estimate that sees only how much mass
the top 20 hold, not how the rest is spread.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import math
import time
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

import httpx

from ..errors import BackendError, ConfigError
from ..params import SamplingParams
from ..types import Completion, GenRequest
from .base import Capabilities, Generator, OnFinish, as_finished, gather_or_cancel
from .http import RETRYABLE_STATUSES, HttpTransport, error_message, normalise_base_url, request_json, server_root
from .templating import Templater
from .probe import (REPROBE_SECONDS, assumed, identify_server, map_finish_reason, parse_logprobs, probe_server,
                    stop_reason)

__all__ = ["OpenAIGenerator"]

logger = logging.getLogger("infscale")

_MODES = ("auto", "full", "basic")


class OpenAIGenerator(Generator):
    """Generate through an OpenAI-compatible server.

    ``base_url``: e.g. ``http://127.0.0.1:8080/v1`` (``/v1`` is added when missing).
    ``model``: the model name to send; ``None`` takes the first id listed by ``GET /v1/models``.
    ``api_key``: sent as ``Authorization: Bearer ...`` when given.
    ``connect_timeout``, ``read_timeout`` (``timeout`` is its older name), ``max_retries``,
    ``retry_seconds``: :class:`~infscale.backends.http.HttpSettings` (``None``: the environment's
    ``INFSCALE_CONNECT_TIMEOUT``, ``INFSCALE_READ_TIMEOUT``, ``INFSCALE_MAX_RETRIES``,
    ``INFSCALE_RETRY_SECONDS``, else 10 s, 60 s, 3 retries, 120 s in all). A retryable fault
    (connection errors, timeouts, 408/409/429/5xx, a cut or empty 200) is retried with
    exponential backoff from ``backoff_base`` seconds, capped at ``backoff_cap`` (Retry-After
    honoured up to the cap), within ``retry_seconds`` per request.
    ``max_concurrency``: requests in flight at once.
    ``native_n``: draw the samples of one prompt in one request with ``n`` where the server
    honours it (False: one request per sample, each with its own seed; see the module docs).
    ``templated_continuation``: continue chat answers through ``/v1/completions`` with the
    server's templated prompt text where it offers it (vLLM; False: chat with
    ``continue_final_message``).
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
        timeout: float | None = None,
        max_retries: int | None = None,
        max_concurrency: int = 16,
        mode: str = "auto",
        backoff_base: float = 0.5,
        backoff_cap: float = 8.0,
        connect_timeout: float | None = None,
        read_timeout: float | None = None,
        retry_seconds: float | None = None,
        native_n: bool = True,
        templated_continuation: bool = True,
    ):
        if mode not in _MODES:
            raise ConfigError("mode", f"got {mode!r}", ", ".join(_MODES))
        self.transport = HttpTransport(api_key=api_key, timeout=timeout, max_retries=max_retries,
                                       max_concurrency=max_concurrency, backoff_base=backoff_base,
                                       backoff_cap=backoff_cap, spare_connections=2, connect_timeout=connect_timeout,
                                       read_timeout=read_timeout, retry_seconds=retry_seconds)
        self.base_url = normalise_base_url(base_url)
        self.model = model
        self.api_key = api_key
        self.timeout = self.transport.timeout
        self.max_retries = self.transport.max_retries
        self.max_concurrency = max_concurrency
        self.mode = mode
        self.backoff_base = float(backoff_base)
        self.backoff_cap = float(backoff_cap)
        self.capabilities = Capabilities(kv_fork=False, reports_stop=False, response_format=True)  # probed
        self.probe: dict[str, Any] = {}
        self._max_tokens_key = "max_tokens"
        self._ready = False
        self._reprobe_at: float | None = None  # when a probe that could not check everything runs again
        self.probes = 0  # probes completed
        #: ``{"name": "vllm" | "sglang" | None, "version"}`` once probed (``None`` before; mode
        #: ``full``/``basic`` does not ask)
        self.server: dict[str, Any] | None = None
        self._warned_usage = False
        #: draw the samples of one prompt in one request with ``n`` where the probe found ``n``
        #: honoured (False: one request per sample, each with its own seed)
        self.native_n = bool(native_n)
        #: continue chat answers through /v1/completions with the server's own templated prompt
        #: text where it renders one (vLLM's /tokenize + /detokenize)
        self.templated_continuation = bool(templated_continuation)
        self._templater = Templater(self)
        self._continuation: dict[str, Any] = {}
        self._prompt_logprobs = False
        self.requests_sent = 0  # generation requests sent (one per group of samples drawn with n)
        if mode != "auto":
            self.capabilities, self.probe, self._max_tokens_key = assumed(mode)
            self.capabilities = _with_confidence(self.capabilities)

    # ------------------------------------------------------------------ public

    async def generate(self, requests: list[GenRequest]) -> list[Completion]:
        """One completion per request, in order; requests run concurrently (bounded). Requests
        that differ only in their seed go out as one request with ``n`` where the server honours
        it (see :meth:`groups`)."""
        if not requests:
            return []
        groups, calls = await self._prepare(requests)
        outs = await gather_or_cancel(self._run_group([requests[i] for i in g], path, body)
                                      for g, (path, body) in zip(groups, calls))
        return _in_order(len(requests), groups, outs)

    async def generate_settled(self, requests: list[GenRequest]) -> list[Completion]:
        """Like :meth:`generate`, but a request (or a group drawn with ``n``) that fails with a
        :class:`BackendError` comes back as completions with ``finish_reason="error"``."""
        if not requests:
            return []
        groups, calls = await self._prepare(requests)
        outs = await asyncio.gather(*(self._run_group([requests[i] for i in g], path, body)
                                      for g, (path, body) in zip(groups, calls)), return_exceptions=True)
        settled = []
        for g, o in zip(groups, outs):
            if isinstance(o, BackendError):
                o = [Completion(text="", finish_reason="error", error=str(o)) for _ in g]
            elif isinstance(o, BaseException):
                raise o
            settled.append(o)
        return _in_order(len(requests), groups, settled)

    async def stream(self, requests: list[GenRequest], on_finish: OnFinish | None = None
                     ) -> AsyncIterator[tuple[int, Completion]]:
        """Yield ``(index, completion)`` as each request finishes (the samples of a group drawn
        with ``n`` finish together); closing the iterator cancels what is outstanding."""
        if not requests:
            return
        groups, calls = await self._prepare(requests)
        tasks = [asyncio.ensure_future(self._run_group([requests[i] for i in g], path, body))
                 for g, (path, body) in zip(groups, calls)]

        def finished(gi: int, outs: list[Completion]) -> None:
            if on_finish is not None:
                for i, c in zip(groups[gi], outs):
                    on_finish(i, c)

        async with aclosing(as_finished(tasks, finished)) as items:
            async for gi, outs in items:
                for i, c in zip(groups[gi], outs):
                    yield i, c

    def groups(self, requests: list[GenRequest]) -> list[list[int]]:
        """The requests sent together, as lists of indices: with :attr:`native_n` on and ``n``
        honoured by the server (``capabilities.native_n``), requests identical but for their seed
        and key (same messages or prompt, prefix, sampling parameters and token statistics; no
        kept trajectory, no streamed stop rule, not ``alone``) form one group, drawn in one request with
        ``n`` = its size and the first request's seed; every other request is alone."""
        if not (self.native_n and self.capabilities.native_n):
            return [[i] for i in range(len(requests))]
        out: list[list[int]] = []
        by_key: dict[str, list[int]] = {}
        for i, r in enumerate(requests):
            if r.parent is not None or r.keep or r.stop_rule is not None or r.alone:
                out.append([i])
                continue
            key = json.dumps([r.messages, r.prompt, r.prefix, repr(r.params), r.confidence, r.self_certainty],
                             sort_keys=True, default=str)
            if key in by_key:
                by_key[key].append(i)
            else:
                by_key[key] = [i]
                out.append(by_key[key])
        return out

    async def _prepare(self, requests: list[GenRequest]) -> tuple[list[list[int]], list[tuple[str, dict[str, Any]]]]:
        """Probe (once), template what continues through /v1/completions, group, and build every
        request body (a ConfigError is raised before anything is sent)."""
        await self.ensure_ready()
        await self._templater.prepare(requests)
        groups = self.groups(requests)
        calls = []
        for g in groups:
            path, body = self._build(requests[g[0]])
            if len(g) > 1:
                body["n"] = len(g)
            calls.append((path, body))
        return groups, calls

    async def ensure_ready(self) -> dict[str, Any]:
        """Resolve the model name and probe the server; returns :attr:`probe`.

        The probe runs once, unless one of its requests failed (a fault, not an answer): then
        it runs again on the first call after :data:`~infscale.backends.probe.REPROBE_SECONDS`,
        until every feature is settled. A probe that fails as a whole raises (a retryable
        :class:`BackendError`) and is tried again on the next call; a repeated probe that fails
        keeps what the last one found."""
        if self._ready and (self._reprobe_at is None or time.monotonic() < self._reprobe_at):
            return self.probe
        async with self.transport.lock:
            due = self._reprobe_at is not None and time.monotonic() >= self._reprobe_at
            if not self._ready or due:
                if self.model is None:
                    self.model = await self.transport.first_model(self.base_url + "/models")
                if self.mode == "auto":
                    try:
                        probed = await probe_server(self._post, self.base_url, self.model)
                    except BackendError:
                        if not self._ready:
                            raise
                        self._reprobe_at = time.monotonic() + REPROBE_SECONDS  # keep what we know; later
                        return self.probe
                    self.capabilities, self.probe, self._max_tokens_key = probed
                    self.capabilities = _with_confidence(self.capabilities)
                    if self.server is None:
                        self.server = await identify_server(self._get_once, server_root(self.base_url))
                    self.probe["server"] = dict(self.server)
                    if self._templater.available is None:
                        self._continuation = await self._templater.probe()
                        self._prompt_logprobs = await self._probe_prompt_logprobs()
                    self.probe["continuation"] = dict(self._continuation)
                    self.probe["prompt_logprobs"] = self._prompt_logprobs
                    self.capabilities = dataclasses.replace(self.capabilities, prompt_logprobs=self._prompt_logprobs)
                    self.probes += 1
                    self._reprobe_at = time.monotonic() + REPROBE_SECONDS if probed.record.get("failed") else None
                self.probe["model"] = self.model
                self._ready = True
        return self.probe

    async def text_logprobs(self, requests: list[GenRequest]) -> list[Completion]:
        """The log-probabilities of given text, from vLLM's ``prompt_logprobs``: per request, of
        the tokens of ``prefix`` after the request's prompt (raw text) or conversation (rendered
        by the server's chat template and opened for the assistant, as
        :mod:`~infscale.backends.templating` gets it). One ``/v1/completions`` request with the
        context plus the text as its prompt, ``prompt_logprobs`` = ``params.top_logprobs`` and
        one generated token, after ``/tokenize`` of the context and of the whole (the text's
        tokens are those past the context's, which must be a token boundary).

        ``Completion.text`` is the prefix; ``logprobs`` its tokens' log-probabilities as the server
        reports them;
        ``top_logprobs`` the alternatives at each position (``params.top_logprobs`` > 0, keyed by
        the decoded token); ``prompt_tokens`` the whole prompt and ``generated_tokens`` the one
        token generated, as the server counts them. A server without ``prompt_logprobs``
        (``capabilities.prompt_logprobs`` False: SGLang, llama-server, hosted APIs) raises a
        one-line ConfigError before anything is sent."""
        if not requests:
            return []
        await self.ensure_ready()
        if not self.capabilities.prompt_logprobs:
            raise ConfigError("prompt_logprobs", f"the server at {self.base_url} returns no prompt_logprobs (a vLLM "
                              "extension), so the log-probability of a given text cannot be computed",
                              "a vLLM server (vllm serve)")
        for r in requests:
            if not r.prefix:
                raise ConfigError("prefix", "text_logprobs scores a request's prefix, and it is empty", "a non-empty prefix")
        await self._templater.prepare(requests)
        return await gather_or_cancel(self._text_logprobs(r) for r in requests)

    async def _text_logprobs(self, req: GenRequest) -> Completion:
        if req.messages is not None:
            context, special = self._templater.text(req.messages), False
            if context is None:
                raise ConfigError("messages", f"the server at {self.base_url} could not render this conversation "
                                  "as text", "a prompt request (raw text)")
        else:
            context, special = req.prompt or "", True
        head, whole = await asyncio.gather(self._templater.tokenize(context, special),
                                           self._templater.tokenize(context + req.prefix, special))
        if len(whole) <= len(head) or whole[: len(head)] != head:
            raise BackendError(f"on {self.base_url} the text does not start at a token boundary of its context, so its "
                               "tokens cannot be told apart", retryable=False)
        top = int(req.params.top_logprobs)
        body = {"model": self.model, "prompt": context + req.prefix, "max_tokens": 1, "temperature": 0.0,
                "prompt_logprobs": top, "add_special_tokens": special}
        async with self.transport.semaphore:
            self.requests_sent += 1
            data = await self._post("/completions", body)
        url = self.base_url + "/completions"
        choices = data.get("choices") if isinstance(data, dict) else None
        entries = choices[0].get("prompt_logprobs") if choices and isinstance(choices[0], dict) else None
        if not isinstance(entries, list) or len(entries) != len(whole):
            got = len(entries) if isinstance(entries, list) else 0
            raise BackendError(f"{url} returned {got} prompt_logprobs entries for {len(whole)} prompt tokens",
                               retryable=False)
        logprobs: list[float] = []
        tops: list[dict[str, float]] = []
        for pos in range(len(head), len(whole)):
            entry = entries[pos]
            own = entry.get(str(whole[pos])) if isinstance(entry, dict) else None
            value = own.get("logprob") if isinstance(own, dict) else None
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise BackendError(f"{url} returned no log-probability for prompt token {pos}", retryable=False)
            logprobs.append(float(value))
            tops.append({str(v.get("decoded_token", k)): float(v["logprob"]) for k, v in entry.items()
                         if isinstance(v, dict) and isinstance(v.get("logprob"), (int, float))})
        usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
        return Completion(text=req.prefix, finish_reason="length", prompt_tokens=_usage_int(usage, "prompt_tokens"),
                          generated_tokens=_usage_int(usage, "completion_tokens") or 1, logprobs=logprobs,
                          sampled_logprobs=list(logprobs), top_logprobs=tops if top > 0 else None)

    async def _probe_prompt_logprobs(self) -> bool:
        """Does the server return ``prompt_logprobs`` (asked of vLLM only: other servers ignore or
        refuse the field)?"""
        if (self.server or {}).get("name") != "vllm":
            return False
        body = {"model": self.model, "prompt": "1 2 3", "max_tokens": 1, "temperature": 0.0, "prompt_logprobs": 0}
        try:
            data = await self._post("/completions", body)
        except BackendError as e:
            logger.warning("vLLM at %s: prompt_logprobs could not be checked (%s); taken as unsupported",
                           self.base_url, e)
            return False
        choices = data.get("choices") if isinstance(data, dict) else None
        entries = choices[0].get("prompt_logprobs") if choices and isinstance(choices[0], dict) else None
        return isinstance(entries, list) and any(isinstance(e, dict) and e for e in entries)

    async def aclose(self) -> None:
        await self.transport.aclose()

    async def __aenter__(self) -> "OpenAIGenerator":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # ------------------------------------------------------------ the mapping

    def _native_params(self, params: SamplingParams, seed: int | None, endpoint: str,
                       confidence: int = 0) -> dict[str, Any]:
        """The one place :class:`SamplingParams` become request fields (``endpoint``: chat or
        completions; ``confidence``: the request's top-k for token confidence, 0 if none)."""
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
        if params.response_format is not None:
            body["response_format"] = json.loads(params.response_format)
        use_seed = seed if seed is not None else params.seed
        if use_seed is not None:
            body["seed"] = int(use_seed)
        if params.logprobs or params.top_logprobs > 0 or confidence > 0:
            top = max(int(params.top_logprobs), int(confidence))
            if endpoint == "chat":
                body["logprobs"] = True
                body["top_logprobs"] = top
            else:
                body["logprobs"] = top or 1
        return body

    def _build(self, req: GenRequest) -> tuple[str, dict[str, Any]]:
        if req.parent is not None:
            raise ConfigError(
                "parent", "the OpenAI HTTP backend cannot continue a kept trajectory (no kv_fork)",
                "requests with messages or prompt",
            )
        seed = req.seed if req.seed is not None else req.params.seed
        if req.confidence and not self.capabilities.confidence:
            raise ConfigError("confidence", f"the server at {self.base_url} returns no top_logprobs, so "
                              "token confidence cannot be computed", "a server that returns top_logprobs")
        if req.self_certainty and not self.capabilities.self_certainty:
            raise ConfigError("self_certainty", f"the server at {self.base_url} returns no top_logprobs, so "
                              "self-certainty cannot be computed", "a server that returns top_logprobs")
        if req.messages is not None:
            templated = self._templater.text(req.messages) if req.prefix else None
            if templated is not None:  # the server's own template text + the steps so far
                return self._completions_call(req, seed, templated)
            if req.prefix and not self.capabilities.prefill:
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
            body.update(self._native_params(req.params, seed, "chat", _top_needed(req)))
            _stream_if_ruled(req, body, chat=True)
            return "/chat/completions", body
        return self._completions_call(req, seed)

    def _completions_call(self, req: GenRequest, seed: int | None, templated: str | None = None
                          ) -> tuple[str, dict[str, Any]]:
        """A /v1/completions request: the raw prompt plus the prefix, or (``templated``) a chat
        problem's prompt text as the server's chat template renders it plus the prefix, sent
        with ``add_special_tokens: false`` (the template's text carries its own)."""
        if templated is not None:
            body: dict[str, Any] = {"model": self.model, "prompt": templated + req.prefix, "add_special_tokens": False}
        else:
            body = {"model": self.model, "prompt": (req.prompt or "") + req.prefix}
        body.update(self._native_params(req.params, seed, "completions", _top_needed(req)))
        _stream_if_ruled(req, body, chat=False)
        return "/completions", body

    async def _run_group(self, reqs: list[GenRequest], path: str, body: dict[str, Any]) -> list[Completion]:
        """One HTTP request for ``reqs`` (one request, or a group drawn with ``n``)."""
        async with self.transport.semaphore:
            self.requests_sent += 1
            if body["stream"]:
                return [await self._run_stream(reqs[0], path, body)]
            data = await self._post(path, body)
        return self._parse_choices(data, reqs, path, body.get("seed"))

    async def _run_stream(self, req: GenRequest, path: str, body: dict[str, Any]) -> Completion:
        """A streamed request: its stop rule is checked as tokens arrive, and the stream is
        closed once it holds. Faults before the first event are retried like any request."""
        url = self.base_url + path
        tr = self.transport
        attempt = 0
        while True:
            problem, retry_after, status = None, None, None
            try:
                async with tr.client().stream("POST", url, json=body) as resp:
                    status = resp.status_code
                    if 200 <= status < 300:
                        return await self._read_stream(resp, req, path, body.get("seed"))
                    await resp.aread()
                    message = error_message(resp)
                    if status not in RETRYABLE_STATUSES:
                        raise BackendError(f"{status} from {url}: {message}", retryable=False, status=status)
                    problem = f"{status} from {url}: {message}"
                    ra = resp.headers.get("retry-after")
                    retry_after = float(ra) if ra and ra.replace(".", "", 1).isdigit() else None
            except (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError) as e:
                problem = f"{type(e).__name__} from {url}: {str(e) or 'no detail'}"
            except _StreamBroken as e:
                raise BackendError(f"the stream from {url} broke after it started: {e}", retryable=True) from None
            except httpx.HTTPError as e:
                raise BackendError(f"{type(e).__name__} from {url}: {e}", retryable=False) from e
            if attempt >= tr.max_retries:
                raise BackendError(f"{problem} (gave up after {attempt + 1} attempt{'s' if attempt else ''})",
                                   retryable=True, status=status)
            await asyncio.sleep(tr.retry_delay(attempt, retry_after))
            attempt += 1

    async def _read_stream(self, resp: httpx.Response, req: GenRequest, path: str, seed: int | None) -> Completion:
        """Accumulate server-sent events into one completion, checking the stop rule per token."""
        url = self.base_url + path
        chat = path == "/chat/completions"
        rule, k = req.stop_rule, req.confidence
        texts: list[str] = []
        logprobs: list[float] = []
        tops: list[dict[str, float]] = []
        confs: list[float] = []
        finish_raw, stop, usage = None, None, None
        stopped = False
        started = False
        try:
            async for line in resp.aiter_lines():
                if not line.startswith("data:"):
                    continue
                payload = line[5:].strip()
                if payload == "[DONE]":
                    break
                started = True
                try:
                    event = json.loads(payload)
                except ValueError:
                    raise BackendError(f"malformed event from {url}: {payload[:200]!r}", retryable=False) from None
                if isinstance(event.get("usage"), dict):
                    usage = event["usage"]
                for choice in event.get("choices") or []:
                    if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                        continue
                    piece = ((choice.get("delta") or {}).get("content") if chat else choice.get("text")) or ""
                    texts.append(piece)
                    lps, tps, _ = parse_logprobs(choice.get("logprobs"))
                    logprobs.extend(lps)
                    tops.extend(tps)
                    if choice.get("finish_reason") is not None:
                        finish_raw = choice["finish_reason"]
                        stop = stop_reason(choice)
                    for top in tps:
                        confs.append(_confidence(top, k, url))
                        if rule is not None and rule.first_stop(confs[-rule.window:]) is not None \
                                and len(confs) >= rule.window:
                            stopped = True
                            break
                    if stopped:
                        break
                if stopped:
                    break
        except (httpx.TransportError, httpx.StreamError) as e:
            if not started:
                raise
            raise _StreamBroken(f"{type(e).__name__}: {e}") from e
        text = "".join(texts)
        n = len(confs)
        scs = [_self_certainty_topk(t, url) for t in tops[:n]] if req.self_certainty else None
        if stopped:
            return Completion(text=text, finish_reason="confidence", prompt_tokens=_usage_int(usage, "prompt_tokens"),
                              generated_tokens=n, logprobs=logprobs[:n], sampled_logprobs=logprobs[:n],
                              top_logprobs=tops[:n] if req.params.top_logprobs > 0 else None, seed=seed,
                              confidences=confs, self_certainties=scs)
        finish, error = map_finish_reason(finish_raw)
        generated = usage.get("completion_tokens") if isinstance(usage, dict) else None
        stop = stop if isinstance(stop, str) and stop in req.params.stop else None
        return Completion(text=text, finish_reason=finish, prompt_tokens=_usage_int(usage, "prompt_tokens"),
                          generated_tokens=generated if isinstance(generated, int) else n, logprobs=logprobs,
                          sampled_logprobs=list(logprobs),
                          top_logprobs=tops if req.params.top_logprobs > 0 and tops else None, stop=stop,
                          seed=seed, error=error, confidences=confs, self_certainties=scs)

    def _parse(self, data: Any, req: GenRequest, path: str, seed: int | None) -> Completion:
        """The completion of one request from its response."""
        return self._parse_choices(data, [req], path, seed)[0]

    def _parse_choices(self, data: Any, reqs: list[GenRequest], path: str, seed: int | None) -> list[Completion]:
        """One completion per request of ``reqs`` from the response's choices (``n`` =
        ``len(reqs)``). With several choices, each is charged its own generated tokens (its
        logprob entries, else the usage's completion tokens shared by text length) and the
        prompt, read once by the server, is charged to the first."""
        url = self.base_url + path
        choices = data.get("choices") if isinstance(data, dict) else None
        if not choices or not all(isinstance(c, dict) for c in choices):
            raise BackendError(f"malformed response from {url}: no choices in {str(data)[:200]}", retryable=False)
        k = len(reqs)
        if len(choices) < k:
            raise BackendError(f"{url} returned {len(choices)} choice(s) for n={k}", retryable=False)
        choices = sorted(choices, key=lambda c: c.get("index", 0) if isinstance(c.get("index"), int) else 0)[:k]
        usage = data.get("usage") if isinstance(data.get("usage"), dict) else None
        prompt_tokens = generated = None
        if usage is not None:
            prompt_tokens = usage.get("prompt_tokens")
            generated = usage.get("completion_tokens")
        if not isinstance(prompt_tokens, int):
            prompt_tokens = 0
        parsed = [self._parse_choice(c, path) for c in choices]
        texts = [p[0] for p in parsed]
        entries = [p[3] for p in parsed]
        if k == 1:
            counts = [generated] if isinstance(generated, int) else None
        elif all(entries) and (not isinstance(generated, int) or sum(entries) == generated):
            counts = entries
        elif isinstance(generated, int):
            counts = _share(generated, [len(t) for t in texts])
        else:
            counts = None
        if counts is None:
            counts = [e if e else (max(1, len(t) // 4) if t else 0) for t, e in zip(texts, entries)]
            if not self._warned_usage:
                self._warned_usage = True
                logger.warning(
                    "OpenAI server at %s returned no usage; infscale estimates generated tokens "
                    "from the logprob entries, else as len(text)//4, and counts prompt tokens as 0",
                    self.base_url,
                )
        details = usage.get("completion_tokens_details") if usage is not None else None
        reasoning = details.get("reasoning_tokens") if isinstance(details, dict) and k == 1 else None
        out = []
        for j, (req, choice, (text, logprobs, tops, _), n_gen) in enumerate(zip(reqs, choices, parsed, counts)):
            finish, error = map_finish_reason(choice.get("finish_reason"))
            stop = stop_reason(choice)
            stop = stop if isinstance(stop, str) and stop in req.params.stop else None
            confs = [_confidence(t, req.confidence, url) for t in tops] if req.confidence else None
            scs = [_self_certainty_topk(t, url) for t in tops] if req.self_certainty else None
            out.append(Completion(
                text=text,
                finish_reason=finish,
                prompt_tokens=prompt_tokens if j == 0 else 0,
                generated_tokens=n_gen,
                logprobs=list(logprobs),
                sampled_logprobs=list(logprobs),
                top_logprobs=tops if req.params.top_logprobs > 0 and tops else None,
                stop=stop,
                seed=seed,
                error=error,
                confidences=confs,
                reasoning_tokens=reasoning if isinstance(reasoning, int) and 0 <= reasoning <= n_gen else 0,
                self_certainties=scs,
            ))
        return out

    @staticmethod
    def _parse_choice(choice: dict, path: str) -> tuple[str, list[float], list[dict[str, float]], int]:
        """A choice's text, logprobs, top logprobs and number of logprob entries."""
        if path == "/chat/completions":
            message = choice.get("message") or {}
            text = message.get("content") or ""
            # servers that split a reasoning model's thinking off (vLLM and SGLang with a reasoning
            # parser: reasoning_content, newer vLLM: reasoning) get it back as a <think> block
            thinking = message.get("reasoning_content") or message.get("reasoning")
            if isinstance(thinking, str) and thinking:
                text = f"<think>{thinking}</think>{text}"
        else:
            text = choice.get("text") or ""
        logprobs, tops, n_entries = parse_logprobs(choice.get("logprobs"))
        return text, logprobs, tops, n_entries

    # ------------------------------------------------------------------ HTTP

    async def _get_once(self, url: str) -> Any:
        """One GET without retries (the server identification: a missing route is an answer)."""
        return await request_json(self.transport.client(), "GET", url, max_retries=0,
                                  retry_delay=self.transport.retry_delay, retry_seconds=self.transport.settings.retry_seconds)

    async def _post(self, path: str, body: dict[str, Any]) -> Any:
        """POST ``body`` to ``path`` under the server's ``/v1``, with the transport's retries."""
        return await self.transport.request("POST", self.base_url + path, body)


class _StreamBroken(Exception):
    """A stream failed after events had arrived (not retried: the tokens were generated)."""


def _with_confidence(c: Capabilities) -> Capabilities:
    """Token confidence and (approximate) self-certainty are computed from top logprobs:
    available exactly where they are. ``response_format`` is passed to the server as it is (vLLM,
    SGLang, llama-server and Ollama constrain decoding with it; a server that refuses it answers
    400, which is reported)."""
    return dataclasses.replace(c, confidence=bool(c.top_logprobs), response_format=True,
                               self_certainty="top-k" if c.top_logprobs else "")


SELF_CERTAINTY_TOP = 20  # top logprobs asked for per token when a request wants self-certainty
_TAIL_FLOOR = 1e-9  # the least probability mass counted outside the top logprobs


def _top_needed(req: GenRequest) -> int:
    """The top logprobs a request needs for its token statistics (0: none)."""
    return max(int(req.confidence), SELF_CERTAINTY_TOP if req.self_certainty else 0)


def _self_certainty_topk(top: dict[str, float], url: str) -> float:
    """Approximate self-certainty of one position from the server's top logprobs: ``-log R``,
    ``R`` the probability mass outside them (see the module docs)."""
    if not top:
        raise BackendError(f"{url} returned no top_logprobs for a token, so its self-certainty is unknown",
                           retryable=False)
    rest = 1.0 - sum(math.exp(v) for v in top.values())
    return -math.log(max(rest, _TAIL_FLOOR))


def _stream_if_ruled(req: GenRequest, body: dict[str, Any], *, chat: bool) -> None:
    """Stream exactly the requests whose stop rule must see tokens as they arrive."""
    body["stream"] = req.stop_rule is not None
    if body["stream"]:
        body["stream_options"] = {"include_usage": True}


def _confidence(top: dict[str, float], k: int, url: str) -> float:
    """DeepConf's confidence of one position from the server's top logprobs (the k largest)."""
    vals = sorted(top.values(), reverse=True)[: max(k, 1)]
    if not vals:
        raise BackendError(f"{url} returned no top_logprobs for a token, so its confidence is unknown",
                           retryable=False)
    return -sum(vals) / len(vals)


def _share(total: int, weights: list[int]) -> list[int]:
    """``total`` split in proportion to ``weights`` (largest remainders; equal shares when all
    weights are 0), summing exactly to ``total``."""
    if not any(weights):
        weights = [1] * len(weights)
    whole = sum(weights)
    exact = [total * w / whole for w in weights]
    parts = [int(x) for x in exact]
    for j in sorted(range(len(parts)), key=lambda j: parts[j] - exact[j])[: total - sum(parts)]:
        parts[j] += 1
    return parts


def _in_order(size: int, groups: list[list[int]], outs: list[list[Completion]]) -> list[Completion]:
    """The groups' completions back in request order."""
    result: list[Completion | None] = [None] * size
    for g, o in zip(groups, outs):
        for i, c in zip(g, o):
            result[i] = c
    return result  # type: ignore[return-value]


def _usage_int(usage: Any, key: str) -> int:
    v = usage.get(key) if isinstance(usage, dict) else None
    return v if isinstance(v, int) else 0
