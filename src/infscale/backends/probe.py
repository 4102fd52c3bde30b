"""The capability probe of an OpenAI-compatible server, and how to read what it answers.

Servers differ in what they honour, and most ignore what they do not know instead of refusing
it. So :func:`probe_server` asks the server with a few one-token requests, all at once, and
reports what it found (the OpenAI generator trusts it from then on):

* ``n``: does ``n=2`` return two choices? (``capabilities.native_n``: where it does, the
  generator draws the samples of one prompt in one request with ``n``; see
  :meth:`~infscale.backends.openai_http.OpenAIGenerator.groups`.)
* ``max_completion_tokens``: does it bound the completion? If not, ``max_tokens`` is sent.
* ``logprobs`` / ``top_logprobs``: are they returned?
* prefill: is ``continue_final_message`` honoured? (The prompt of a request that continues a
  final assistant message must be shorter than the prompt of the same conversation with that
  message closed and a new assistant turn opened.)
* stop reporting: does a choice say which stop string ended it? vLLM returns ``stop_reason``
  (SGLang ``matched_stop``); llama-cpp-python's server returns neither, so there a
  ``finish_reason`` of ``stop`` cannot tell a stop string from the end of the text
  (``capabilities.reports_stop``; ``Completion.stop`` is filled whenever the server says).

One fault does not decide anything: a feature counts as unsupported only when the server
answers without it, or refuses it :data:`CONSISTENT_REFUSALS` times with the same status; a
probe request that fails otherwise (5xx, reset, hung past the timeout, cut short) after the
transport's retries leaves its feature unknown — assumed unsupported for now, and the generator
probes again after :data:`REPROBE_SECONDS`. The chat endpoint is given up for completions only
when chat requests are consistently refused.

Whatever the server ignores is reported in one warning on the ``infscale`` logger, saying what
infscale does instead. :func:`assumed` gives the capabilities of the ``full`` / ``basic`` modes
without asking.

The response readers (:func:`map_finish_reason`, :func:`parse_logprobs`, :func:`stop_reason`)
live here because the probe reads responses before any generation does; the generator uses the
same ones.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable
from typing import Any, NamedTuple

from ..errors import BackendError
from .base import Capabilities

__all__ = ["probe_server", "identify_server", "SERVERS", "assumed", "Probed", "REPROBE_SECONDS", "CONSISTENT_REFUSALS", "map_finish_reason", "parse_logprobs", "stop_reason",
           "STOP_REASON_KEYS"]

logger = logging.getLogger("infscale")

#: ``post(path, body) -> decoded JSON``: a POST under the server's ``/v1``, with retries.
Post = Callable[[str, dict[str, Any]], Awaitable[Any]]

#: Seconds after which a probe that could not check everything (a feature probe failed) is repeated.
REPROBE_SECONDS = 30.0

_PROBE_MESSAGES = [{"role": "user", "content": "Count from 1 to 20, separated by spaces."}]
_PROBE_PROMPT = "Counting from 1 to 20: 1 2 3"
_PROBE_PREFIX = "1 2 3"
_PROBE_STOPS = (" 4", "\n")
#: Choice fields naming the stop that ended a completion: vLLM's, then SGLang's.
STOP_REASON_KEYS = ("stop_reason", "matched_stop")

_FINISH_STOP = {"stop", "eos", "eos_token", "stop_sequence", "end_turn", "tool_calls", "function_call"}
_FINISH_LENGTH = {"length", "max_tokens", "model_length", "max_length"}
_FINISH_CANCELLED = {"abort", "aborted", "cancelled", "canceled"}


class Probed(NamedTuple):
    """What a probe (or an assumption) found: the capabilities, the probe record (what was
    asked, what came back, the errors) and the request field that bounds a chat completion."""

    capabilities: Capabilities
    record: dict[str, Any]
    max_tokens_key: str


def map_finish_reason(reason: Any) -> tuple[str, str | None]:
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


def stop_reason(choice: dict) -> Any:
    """The stop a choice reports (a stop string, a token id, or None), from any known field."""
    for key in STOP_REASON_KEYS:
        if choice.get(key) is not None:
            return choice[key]
    return None


def _as_float(x: Any) -> float | None:
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return None
    return float(x)


def parse_logprobs(lp: Any) -> tuple[list[float], list[dict[str, float]], int]:
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


#: Servers :func:`identify_server` recognises, and the route that identifies each (GET, under
#: the server's root, not ``/v1``): SGLang's ``/get_server_info`` (its arguments and
#: ``version``), vLLM's ``/version`` (``{"version"}``). SGLang is asked first, so a server that
#: answered both would count as SGLang.
SERVERS = (("sglang", "/get_server_info"), ("vllm", "/version"))

#: ``get(url) -> decoded JSON``: one GET without retries (a missing route is an answer).
Get = Callable[[str], Awaitable[Any]]


async def identify_server(get: Get, root_url: str) -> dict[str, Any]:
    """``{"name": "vllm" | "sglang" | None, "version": str | None}`` of the server at
    ``root_url``. A route that is missing or fails says nothing; a server that answers neither
    is ``None`` (llama-server, Ollama, a hosted API: probed by behaviour alone)."""
    for name, route in SERVERS:
        try:
            data = await get(root_url + route)
        except BackendError:
            continue
        if isinstance(data, dict) and isinstance(data.get("version"), str):
            return {"name": name, "version": data["version"]}
    return {"name": None, "version": None}


def assumed(mode: str) -> Probed:
    """The capabilities of ``mode`` without a probe: ``full`` trusts the server to honour
    everything (n, max_completion_tokens, logprobs, continue_final_message, stop_reason, as vLLM
    does); ``basic`` assumes the least (max_tokens, no native n, no chat prefill, no stop
    reporting; logprobs are still asked for and used when returned)."""
    full = mode == "full"
    capabilities = Capabilities(
        logprobs=True, top_logprobs=True, prefill=full, native_n=full, kv_fork=False, chat_template=True,
        reports_stop=full,
    )
    key = "max_completion_tokens" if full else "max_tokens"
    record = {
        "mode": mode, "probed": False, "endpoint": "chat", "chat": True, "n": full,
        "max_completion_tokens": full, "max_tokens_param": key,
        "logprobs": True, "top_logprobs": True, "continue_final_message": full,
        "stop_reason": full,
    }
    return Probed(capabilities, record, key)


#: Asking a probe request this many times in all: a refusal (4xx) counts as "unsupported" only
#: when every attempt is refused with the same status (a consistent, specific answer); one
#: refusal among answers is a transient fault.
CONSISTENT_REFUSALS = 3


class _Probe:
    """The probe's record of what each request found: ``unsupported`` (a consistent refusal or
    an answer without the feature) and ``failed`` (a transient or retryable fault that outlived
    the transport's retries: nothing was learnt, so it is asked again later)."""

    def __init__(self, post: Post, model: str | None):
        self.post = post
        self.model = model
        self.unsupported: dict[str, str] = {}
        self.failed: dict[str, str] = {}

    async def ask(self, path: str, body: dict[str, Any], name: str) -> dict | None:
        """The decoded answer, or ``None`` with the reason recorded under ``name``."""
        refusals: list[tuple[int | None, str]] = []
        for _ in range(CONSISTENT_REFUSALS):
            try:
                data = await self.post(path, {"model": self.model, "temperature": 0.0, "stream": False, **body})
            except BackendError as e:
                if e.retryable or e.status is None or e.status >= 500:
                    self.failed[name] = str(e)
                    return None
                refusals.append((e.status, str(e)))
                if len({status for status, _ in refusals}) > 1:  # refused differently: not a consistent answer
                    self.failed[name] = str(e)
                    return None
                continue
            if not isinstance(data, dict) or not data.get("choices") or not isinstance(data["choices"][0], dict):
                self.failed[name] = f"malformed response: {str(data)[:200]}"
                return None
            return data
        self.unsupported[name] = refusals[-1][1]
        return None

    @property
    def errors(self) -> dict[str, str]:
        return {**self.unsupported, **self.failed}


async def probe_server(post: Post, base_url: str, model: str | None) -> Probed:
    """Probe the server behind ``post`` with a few small requests (see the module docs).

    The endpoint comes first: chat, else (only if chat is consistently refused) completions.
    Then the feature probes run concurrently. Each one ends as supported, unsupported (the
    server consistently refuses it or answers without it) or failed (a fault that outlived
    the retries, e.g. a hung request): a failed one is assumed unsupported for now and listed
    in ``record["failed"]``, and the generator probes again later
    (:data:`REPROBE_SECONDS`) instead of deciding on one fault. Raises a retryable
    :class:`BackendError` if the endpoint probe itself failed (nothing is decided), a fatal
    one if the server refuses both chat and completions requests."""
    pr = _Probe(post, model)
    probe: dict[str, Any] = {"mode": "auto", "probed": True, "model": model}
    chat = await pr.ask("/chat/completions", {"messages": _PROBE_MESSAGES, "max_tokens": 1}, "chat")
    if chat is None:
        if "chat" in pr.failed:
            raise BackendError(f"could not probe the server at {base_url}: {pr.failed['chat']}", retryable=True)
        comp = await pr.ask("/completions", {"prompt": _PROBE_PROMPT, "max_tokens": 1}, "completions")
        if comp is None:
            if "completions" in pr.failed:
                raise BackendError(f"could not probe the server at {base_url}: {pr.failed['completions']}",
                                   retryable=True)
            raise BackendError(
                f"the server at {base_url} answers neither chat nor completions requests: "
                + "; ".join(pr.errors.values()),
                retryable=False,
            )
    probe["chat"] = chat is not None
    endpoint = "chat" if chat is not None else "completions"
    path = "/chat/completions" if endpoint == "chat" else "/completions"
    base: dict[str, Any] = {"messages": _PROBE_MESSAGES} if endpoint == "chat" else {"prompt": _PROBE_PROMPT}
    probe["endpoint"] = endpoint

    async def probe_n() -> None:  # two choices for n=2?
        data = await pr.ask(path, {**base, "n": 2, "max_tokens": 1}, "n")
        probe["n_choices"] = len(data["choices"]) if data else 0
        probe["n"] = probe["n_choices"] >= 2

    async def probe_mct() -> None:
        # max_completion_tokens: bounds the completion? (max_tokens=4 is a fallback ceiling in
        # case it is ignored; a server that rejects both together is asked with it alone.)
        mct = False
        if endpoint == "chat":
            data = await pr.ask(path, {**base, "max_completion_tokens": 1, "max_tokens": 4}, "max_completion_tokens")
            if data is None and "max_completion_tokens" in pr.unsupported:
                del pr.unsupported["max_completion_tokens"]
                data = await pr.ask(path, {**base, "max_completion_tokens": 1}, "max_completion_tokens")
            if data is not None:
                usage = data.get("usage") or {}
                got = usage.get("completion_tokens") if isinstance(usage, dict) else None
                finish = data["choices"][0].get("finish_reason")
                probe["max_completion_tokens_result"] = {"completion_tokens": got, "finish_reason": finish}
                mct = isinstance(got, int) and got <= 1 and map_finish_reason(finish)[0] == "length"
        probe["max_completion_tokens"] = mct

    async def probe_logprobs() -> None:  # logprobs and top_logprobs returned?
        lp_fields = {"logprobs": True, "top_logprobs": 2} if endpoint == "chat" else {"logprobs": 2}
        data = await pr.ask(path, {**base, "max_tokens": 1, **lp_fields}, "logprobs")
        lps, tops, _ = parse_logprobs(data["choices"][0].get("logprobs")) if data else ([], [], 0)
        probe["logprobs"] = bool(lps)
        probe["top_logprobs"] = any(tops)

    async def probe_prefill() -> None:  # a continued turn's prompt is shorter than a closed one's
        prefill = False
        if endpoint == "chat":
            msgs = _PROBE_MESSAGES + [{"role": "assistant", "content": _PROBE_PREFIX}]
            cont, closed = await asyncio.gather(
                pr.ask(path, {"messages": msgs, "max_tokens": 1, "continue_final_message": True,
                              "add_generation_prompt": False}, "continue_final_message"),
                pr.ask(path, {"messages": msgs, "max_tokens": 1}, "closed_turn"))
            pt_cont = ((cont or {}).get("usage") or {}).get("prompt_tokens")
            pt_closed = ((closed or {}).get("usage") or {}).get("prompt_tokens")
            probe["prefill_prompt_tokens"] = {"continued": pt_cont, "closed": pt_closed}
            prefill = isinstance(pt_cont, int) and isinstance(pt_closed, int) and pt_cont < pt_closed
        probe["continue_final_message"] = prefill

    async def probe_stop() -> None:
        # stop_reason: does a choice name the stop string that ended it? (" 4" ends the count
        # within a few tokens; the key alone counts, as vLLM sends it as null at end of text.)
        data = await pr.ask(path, {**base, "max_tokens": 8, "stop": list(_PROBE_STOPS)}, "stop_reason")
        choice = data["choices"][0] if data else {}
        probe["stop_reason_result"] = stop_reason(choice) if isinstance(choice, dict) else None
        probe["stop_reason"] = isinstance(choice, dict) and (
            any(k in choice for k in STOP_REASON_KEYS) or probe["stop_reason_result"] in _PROBE_STOPS
        )

    await asyncio.gather(probe_n(), probe_mct(), probe_logprobs(), probe_prefill(), probe_stop())
    mct = probe["max_completion_tokens"]
    prefill = probe["continue_final_message"]
    max_tokens_key = "max_completion_tokens" if mct else "max_tokens"
    probe["max_tokens_param"] = max_tokens_key
    pr.failed.pop("chat", None)
    probe["errors"] = pr.errors
    probe["unsupported"] = dict(pr.unsupported)
    probe["failed"] = dict(pr.failed)

    capabilities = Capabilities(
        logprobs=probe["logprobs"],
        top_logprobs=probe["top_logprobs"],
        prefill=prefill if endpoint == "chat" else True,
        native_n=probe["n"],
        kv_fork=False,
        chat_template=endpoint == "chat",
        reports_stop=probe["stop_reason"],
    )

    failed = pr.failed
    unchecked = {"n": "n", "max_completion_tokens": "max_completion_tokens", "logprobs": "logprobs",
                 "continue_final_message": "continue_final_message", "closed_turn": "continue_final_message",
                 "stop_reason": "stop_reason"}
    unknown = sorted({unchecked[k] for k in failed if k in unchecked})
    notes = []
    if endpoint != "chat":
        notes.append("the chat endpoint fails (" + pr.errors.get("chat", "?") + "): only prompt requests can be served")
    if not probe["n"] and "n" not in unknown:
        notes.append(f"ignores n (returned {probe['n_choices']} choice(s) for n=2): infscale sends one request per sample")
    if endpoint == "chat" and not mct and "max_completion_tokens" not in unknown:
        notes.append("ignores max_completion_tokens: infscale sends max_tokens instead")
    if "logprobs" not in unknown:
        if not probe["logprobs"]:
            notes.append("returns no logprobs: completions carry empty logprobs")
        elif not probe["top_logprobs"]:
            notes.append("returns no top_logprobs: completions carry no alternatives")
    if endpoint == "chat" and not prefill and "continue_final_message" not in unknown:
        notes.append(
            "ignores continue_final_message: chat requests with a prefix raise ConfigError "
            "(prompt requests still take a prefix)"
        )
    if not probe["stop_reason"] and "stop_reason" not in unknown:
        notes.append(
            "returns no stop_reason: a completion ended by a stop string cannot be told from one "
            "that reached the end of the text (capabilities.reports_stop is False)"
        )
    if unknown:
        first = next(iter(failed.values()))
        notes.append(f"could not be checked for {', '.join(unknown)} ({first}): assumed unsupported until the "
                     f"probe is repeated in {REPROBE_SECONDS:g} s")
    if notes:
        logger.warning("OpenAI server at %s (model %s) %s", base_url, model, "; ".join(notes))
    else:
        logger.info("OpenAI server at %s (model %s) honours n, max_completion_tokens, logprobs, prefill "
                    "and reports stop strings",
                    base_url, model)
    return Probed(capabilities, probe, max_tokens_key)
