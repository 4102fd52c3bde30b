"""The service behind the routes: request -> plan -> ``infscale.run`` -> OpenAI response.

A request is turned into a :class:`Plan` (which strategy, how wide, which scorer and task,
the sampling parameters and limits) before it takes a concurrency slot, so the caller's
mistakes never wait in the queue; a strategy or scorer that needs a capability the served
generator lacks (log-probabilities, ...) is refused then too. The plan's
:class:`~infscale.types.Problem` is run by the shared runner, whose
:class:`~infscale.meter.Meter` reports every completion (strategy and scorer calls alike) to
the service's callback for the metrics and for streamed progress; the generator itself is
passed as it is, so its ``free`` and ``generate_settled`` are its own.

Model names: ``STRATEGY[-BUDGET]:MODEL`` (``majority-8:smollm2-135m``), parsed generically
against the strategy registry: split on the first ``:``, then the longest registered strategy
name that the head equals, or that is followed by ``-N``. Anything else is a plain model name
(a model name may contain ``:`` itself, e.g. ``llama3:8b``). A plain model name samples
``n`` independent completions (OpenAI's meaning of ``n``; greedy when ``temperature`` is 0
and ``n`` is 1); with a strategy, ``n`` asks for the ``n`` best answers of its distribution.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import secrets
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..tasks import get_task, group_answers
from ..tasks.base import split_thinking
from ..tasks.structured import canonical_json, parse_tool_answer, tool_instructions
from ..backends.base import Generator
from ..errors import ConfigError
from ..params import Budget, SamplingParams
from ..scorers import get_scorer
from ..strategies import STRATEGIES, get_strategy
from ..meter import Meter
from ..strategies.runner import check_capabilities, resolve, run
from ..types import Candidate, Completion, Problem, Result
from .errors import ApiError
from .metrics import Metrics
from .protocol import ChatCompletionRequest, CompletionRequest

__all__ = ["ServerConfig", "Plan", "Choice", "Service", "Admission", "Progress", "parse_model_name", "usage_dict"]

_BUDGET_SUFFIX = re.compile(r"[0-9]{1,1000}")  # any size: too large is the budget check's error, not "unknown strategy"

#: Seconds a request may run past ``max_request_seconds`` while its strategy answers from what it
#: has (the runner stops it at the limit); after them it is cancelled with a 504.
REQUEST_GRACE_SECONDS = 5.0


def parse_model_name(name: str, strategies: Mapping[str, Any] | None = None) -> tuple[str | None, int | None, str]:
    """``(strategy, budget, model)`` from ``STRATEGY[-BUDGET]:MODEL``; ``(None, None, name)``
    for a plain model name. The longest registered strategy name wins (``best-of-n-4`` is
    ``best-of-n`` with budget 4, even if a strategy ``best`` exists)."""
    names = STRATEGIES if strategies is None else strategies
    head, sep, rest = name.partition(":")
    if not sep or not rest:
        return None, None, name
    for s in sorted(names, key=len, reverse=True):
        if head == s:
            return s, None, rest
        if head.startswith(s + "-") and _BUDGET_SUFFIX.fullmatch(head[len(s) + 1:]):
            return s, int(head[len(s) + 1:]), rest
    return None, None, name


@dataclass(frozen=True)
class ServerConfig:
    """Limits and defaults of one server; every value is checked (ConfigError names it)."""

    max_concurrency: int = 16
    max_queue: int = 64
    max_budget: int = 64
    max_body_bytes: int = 1 << 20
    max_tokens_limit: int = 4096
    default_max_tokens: int = 256
    default_budget: int = 8
    default_task: str = "math"
    default_temperature: float = 0.7
    shutdown_timeout: float = 30.0
    #: wall seconds a request may run: then its strategy answers from what it has (the runner
    #: stops it), and a request still running :data:`REQUEST_GRACE_SECONDS` later gets a 504
    max_request_seconds: float = 300.0
    #: work limits by strategy setting name (``--max-param NAME=MAX``), replacing the settings' own
    param_limits: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, lo in (("max_concurrency", 1), ("max_queue", 0), ("max_budget", 1), ("max_body_bytes", 256),
                         ("max_tokens_limit", 1), ("default_max_tokens", 1), ("default_budget", 1)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise ConfigError(name.replace("_", "-"), f"got {v!r}", f"an integer >= {lo}")
        if self.default_max_tokens > self.max_tokens_limit:
            raise ConfigError("default-max-tokens", f"{self.default_max_tokens} exceeds max-tokens-limit "
                              f"{self.max_tokens_limit}", "a value <= max-tokens-limit")
        if self.default_budget > self.max_budget:
            raise ConfigError("default-budget", f"{self.default_budget} exceeds max-budget {self.max_budget}",
                              "a value <= max-budget")
        get_task(self.default_task)
        SamplingParams(temperature=self.default_temperature)
        if not (isinstance(self.shutdown_timeout, (int, float)) and self.shutdown_timeout >= 0):
            raise ConfigError("shutdown-timeout", f"got {self.shutdown_timeout!r}", "seconds >= 0")
        v = self.max_request_seconds
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
            raise ConfigError("max-request-seconds", f"got {v!r}", "seconds > 0")
        known = {k for s in STRATEGIES.values() for k in getattr(s, "params", {})}
        for name, cap in dict(self.param_limits).items():
            if name not in known:
                raise ConfigError("max-param", f"no strategy has a setting {name!r}", ", ".join(sorted(known)))
            if isinstance(cap, bool) or not isinstance(cap, (int, float)) or not math.isfinite(cap) or cap < 1:
                raise ConfigError("max-param", f"got {name}={cap!r}", "NAME=MAX with MAX a number >= 1")
        object.__setattr__(self, "param_limits", dict(self.param_limits))

    def work_limits(self) -> dict[str, float]:
        """The limits a request runs under: the width (``n``) and every setting's override."""
        return {"n": self.max_budget, **self.param_limits}


@dataclass
class Plan:
    """Everything one request will do, decided before it is admitted."""

    kind: str  # "chat" or "completion"
    model: str  # as the caller named it (echoed in the response)
    strategy: str
    budget: int
    plain: bool
    n: int
    scorer: str | None
    options: dict[str, Any]
    task: str
    seed: int
    params: SamplingParams
    limits: Budget
    problem: Problem
    stream: bool = False
    include_usage: bool = False
    progress: bool = False
    #: the function names the model may call (``None``: no tools offered), and the caller's
    #: ``tool_choice``: ``"auto"``, ``"required"`` or one function's name
    tools: tuple[str, ...] | None = None
    tool_choice: str = "auto"


@dataclass
class Choice:
    """One response choice: text (``None`` for a message that only calls functions), finish
    reason, and the function calls (OpenAI's ``tool_calls``) when it makes any."""

    text: str | None
    finish_reason: str
    tool_calls: list[dict[str, Any]] | None = None
    reasoning: str | None = None  # a reasoning model's thinking (chat: reasoning_content), not in text


@dataclass
class Progress:
    """What a running request has spent so far (every finished model call)."""

    calls: int = 0
    prompt_tokens: int = 0
    generated_tokens: int = 0
    started: float = field(default_factory=time.monotonic)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def to_dict(self, budget: int) -> dict[str, Any]:
        return {"calls": self.calls, "budget": budget, "prompt_tokens": self.prompt_tokens,
                "generated_tokens": self.generated_tokens, "seconds": round(time.monotonic() - self.started, 3)}


class Admission:
    """At most ``limit`` requests run at once; at most ``queue`` more wait, first come first
    served; beyond that a request is refused at once (429 with Retry-After) rather than
    slowing everyone down."""

    def __init__(self, limit: int, queue: int, metrics: Metrics):
        self.limit = limit
        self.queue = queue
        self.active = 0
        self._waiters: deque[asyncio.Future] = deque()
        self._metrics = metrics
        self._service_seconds = 1.0  # running mean of a request's time holding a slot

    @property
    def queued(self) -> int:
        return len(self._waiters)

    def retry_after(self) -> int:
        """Seconds until a slot is likely free: the queue ahead drained at the observed rate."""
        return max(1, math.ceil(self._service_seconds * (self.queued + 1) / self.limit))

    async def acquire(self) -> None:
        if self.active < self.limit and not self._waiters:
            self.active += 1
            self._update()
            return
        if len(self._waiters) >= self.queue:
            raise ApiError(429, f"the server is at capacity ({self.limit} running, {self.queued} queued); "
                           "retry later", "rate_limit_error", None, "rate_limit_exceeded",
                           {"Retry-After": str(self.retry_after())})
        fut: asyncio.Future = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        self._update()
        t0 = time.monotonic()
        try:
            await fut  # a releasing request hands its slot over (active stays counted)
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.release()  # the slot arrived as we were cancelled: pass it on
            else:
                try:
                    self._waiters.remove(fut)
                except ValueError:
                    pass
            self._update()
            raise
        self._metrics.queue_wait.observe(time.monotonic() - t0)
        self._update()

    def release(self, held_seconds: float | None = None) -> None:
        if held_seconds is not None:
            self._service_seconds = 0.8 * self._service_seconds + 0.2 * held_seconds
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_result(None)
                self._update()
                return
        self.active -= 1
        self._update()

    def _update(self) -> None:
        self._metrics.in_flight.set(self.active)
        self._metrics.queue_depth.set(len(self._waiters))


class Service:
    """One served generator under one name, with its limits, admission and metrics."""

    def __init__(self, generator: Generator, model_name: str, config: ServerConfig, metrics: Metrics | None = None):
        self.generator = generator
        self.model_name = model_name
        self.config = config
        self.metrics = metrics or Metrics()
        self.admission = Admission(config.max_concurrency, config.max_queue, self.metrics)
        self.draining = False
        self.tasks: set[asyncio.Task] = set()

    # ------------------------------------------------------------------ planning
    def plan(self, req: ChatCompletionRequest | CompletionRequest) -> Plan:
        """Check the request against the served model and the registries; raise a 4xx."""
        cfg = self.config
        chat = isinstance(req, ChatCompletionRequest)
        refused = req.unsupported()
        if refused is not None:
            raise ApiError(400, f"{refused[0]}: not supported by this server (accepted: {refused[1]})",
                           param=refused[0], code="unsupported")
        name_strategy, name_budget, base = parse_model_name(req.model)
        if base != self.model_name:
            head, sep, rest = req.model.partition(":")
            if sep and rest == self.model_name:  # a strategy spec on the served model, but not a known one
                raise ApiError(400, f"model: unknown strategy {head!r} in {req.model!r} (accepted: "
                               f"STRATEGY[-BUDGET]:{self.model_name} with STRATEGY one of {', '.join(STRATEGIES)})",
                               param="model", code="invalid_value")
            raise ApiError(404, f"model: the model {base!r} is not served here (served: {self.model_name!r}; "
                           f"use MODEL or STRATEGY[-BUDGET]:MODEL, see GET /v1/models)", "invalid_request_error",
                           "model", "model_not_found")
        ext = req.infscale
        strategy = (ext.strategy if ext and ext.strategy else None) or name_strategy
        strategy_param = "infscale.strategy" if ext and ext.strategy else "model"
        temperature = cfg.default_temperature if req.temperature is None else req.temperature
        plain = strategy is None
        if plain:
            if ext is not None and (ext.budget is not None or ext.params or ext.scorer is not None):
                given = next(k for k in ("budget", "params", "scorer") if getattr(ext, k))
                raise ApiError(400, f"infscale.{given}: needs a strategy (a plain model name samples n completions; "
                               "accepted: a model name STRATEGY[-BUDGET]:MODEL or infscale.strategy)",
                               param=f"infscale.{given}", code="invalid_value")
            strategy = "greedy" if temperature == 0 and req.n == 1 else "sample"
        strat = _renamed(lambda: get_strategy(strategy), "strategy", strategy_param)
        if plain:
            budget, budget_param = req.n, "n"
        elif ext is not None and ext.budget is not None:
            budget, budget_param = ext.budget, "infscale.budget"
        elif name_budget is not None:
            budget, budget_param = name_budget, "model"
        else:
            # a strategy whose n is a cap (auto) gets the largest budget: the policy chooses below it
            budget = 1 if strategy == "greedy" else (cfg.max_budget if getattr(strat, "n_is_cap", False)
                                                     else cfg.default_budget)
            budget_param = "model"
        if budget < 1 or budget > cfg.max_budget:
            raise ApiError(400, f"{budget_param}: budget {budget} is not allowed (accepted: an integer in "
                           f"[1, {cfg.max_budget}], the server's --max-budget)", param=budget_param, code="invalid_value")
        raw_options = dict(ext.params) if ext is not None else {}
        _renamed(lambda: strat.options(raw_options, cfg.param_limits), "param", "infscale.params")
        scorer = ext.scorer if ext is not None else None
        if scorer is not None:
            _renamed(lambda: get_scorer(scorer), "scorer", "infscale.scorer")
        task = (ext.task if ext is not None and ext.task else None) or cfg.default_task
        tools, tool_choice, response_format = _structured(req)
        if tools is not None or response_format is not None:
            wanted_task = "tool-call" if tools is not None else "json"
            if ext is not None and ext.task and ext.task != wanted_task:
                field = "tools" if tools is not None else "response_format"
                raise ApiError(400, f"infscale.task: {ext.task!r} cannot be used with {field} (its answers are "
                               f"read by the {wanted_task} task; accepted: no infscale.task)", param="infscale.task",
                               code="invalid_value")
            task = wanted_task

        max_tokens = getattr(req, "max_completion_tokens", None) or req.max_tokens or cfg.default_max_tokens
        tokens_param = "max_completion_tokens" if getattr(req, "max_completion_tokens", None) else "max_tokens"
        if max_tokens > cfg.max_tokens_limit:
            raise ApiError(400, f"{tokens_param}: {max_tokens} exceeds this server's limit (accepted: an integer "
                           f"in [1, {cfg.max_tokens_limit}])", param=tokens_param, code="invalid_value")
        seed = req.seed if req.seed is not None else secrets.randbits(62)
        stop = (req.stop,) if isinstance(req.stop, str) else tuple(req.stop or ())
        params = SamplingParams(
            temperature=float(temperature),
            top_p=1.0 if req.top_p is None else float(req.top_p),
            top_k=req.top_k or 0,
            min_p=0.0 if req.min_p is None else float(req.min_p),
            max_tokens=max_tokens, stop=stop, seed=seed, response_format=response_format,
        )
        limits = Budget(seconds=cfg.max_request_seconds)  # every request is bounded in time
        if ext is not None and ext.limits is not None:
            seconds = cfg.max_request_seconds if ext.limits.seconds is None else min(ext.limits.seconds,
                                                                                     cfg.max_request_seconds)
            limits = Budget(generated_tokens=ext.limits.generated_tokens, calls=ext.limits.calls, seconds=seconds)
        if chat:
            messages = render_messages(req.messages)
            if tools is not None:
                note = tool_instructions([t.model_dump(exclude_none=True) for t in req.tools or []],
                                         None if tool_choice == "auto" else tool_choice)
                if messages[0]["role"] == "system":
                    messages[0] = {"role": "system", "content": messages[0]["content"] + "\n\n" + note}
                else:
                    messages.insert(0, {"role": "system", "content": note})
            problem = Problem(messages=messages, task=task)
        else:
            if req.echo:
                raise ApiError(400, "echo: not supported (accepted: false)", param="echo", code="unsupported")
            if req.best_of is not None and req.best_of > 1:
                raise ApiError(400, f"best_of: not supported here (accepted: 1; for best-of-N use the model name "
                               f"best-of-n-{req.best_of}:{self.model_name})", param="best_of", code="unsupported")
            problem = Problem(prompt=req.prompt_text(), task=task)
        return Plan(
            kind="chat" if chat else "completion", model=req.model, strategy=strategy, budget=budget, plain=plain,
            n=req.n, scorer=scorer, options=raw_options, task=task, seed=seed, params=params, limits=limits,
            problem=problem, stream=req.stream,
            include_usage=bool(req.stream_options and req.stream_options.include_usage),
            progress=bool(ext and ext.progress), tools=tools, tool_choice=tool_choice,
        )

    async def check_capabilities(self, plan: Plan) -> None:
        """Refuse (400, naming the request field) a plan whose strategy or scorer needs a
        capability the served generator lacks, before it takes a slot."""
        strat, opts, sc = resolve(plan.strategy, plan.scorer, plan.options, self.config.work_limits())
        if plan.params.response_format is not None:
            if not getattr(self.generator.capabilities, "response_format", False):
                raise ApiError(400, f"response_format: the served model {self.model_name!r} cannot constrain "
                               "decoding to JSON (accepted: no response_format, or a backend that takes it: the "
                               "embedded engine, vLLM, SGLang, llama-server)", param="response_format",
                               code="unsupported")
            # the embedded engine builds its grammar now: a schema it cannot enforce is refused here
            check = getattr(self.generator, "check_response_format", None)
            if check is not None:
                try:
                    check(plan.params.response_format)
                except ConfigError as e:
                    raise ApiError(400, f"response_format: {str(e).split(': ', 1)[-1]}", param="response_format",
                                   code="unsupported") from None
            steps = [r for r in strat.requires(opts) if "prefill" in (r.capability if isinstance(r.capability, tuple)
                                                                        else (r.capability,))]
            if steps:
                raise ApiError(400, f"response_format: strategy {plan.strategy!r} continues partial answers step "
                               "by step, which a whole-answer JSON constraint cannot follow (accepted: a "
                               "sample-level strategy, e.g. majority, best-of-n, weighted)",
                               param="response_format", code="unsupported")
        try:
            await check_capabilities(Meter(self.generator), strat, opts, sc)
        except ConfigError as e:
            field = {"scorer": "infscale.scorer"}.get(e.param) or (
                "infscale.params." + e.param[len("param "):] if e.param.startswith("param ") else e.param)
            raise ApiError(400, f"{field}: {str(e).split(': ', 1)[-1]}", param=field, code="unsupported") from None

    # ----------------------------------------------------------------- execution
    def check_open(self) -> None:
        if self.draining:
            raise ApiError(503, "the server is shutting down", "server_error", None, "shutting_down",
                           {"Retry-After": "5"})

    async def execute(self, plan: Plan, progress: Progress | None = None) -> Result:
        """Run the plan's strategy (the caller holds a slot); every completion is metered."""
        metrics = self.metrics

        def seen(c: Completion) -> None:
            metrics.tokens.inc(c.generated_tokens, strategy=plan.strategy, kind="generated")
            metrics.tokens.inc(c.prompt_tokens, strategy=plan.strategy, kind="prompt")
            metrics.calls.inc(strategy=plan.strategy)
            if progress is not None:
                progress.calls += 1
                progress.prompt_tokens += c.prompt_tokens
                progress.generated_tokens += c.generated_tokens
                progress.changed.set()

        task = asyncio.current_task()
        if task is not None:
            self.tasks.add(task)
        limit = self.config.max_request_seconds
        try:
            async with asyncio.timeout(limit + REQUEST_GRACE_SECONDS):
                return await run(plan.problem, self.generator, plan.strategy, n=plan.budget, scorer=plan.scorer,
                                 params=plan.params, budget=plan.limits, seed=plan.seed, options=plan.options,
                                 on_completion=seen, limits=self.config.work_limits())
        except TimeoutError:
            self.metrics.cancelled.inc(reason="timeout")
            raise ApiError(504, f"the request ran past this server's limit of {limit:g} s (--max-request-seconds) "
                           "and could not answer from what it had", "server_error", None, "request_timeout") from None
        finally:
            if task is not None:
                self.tasks.discard(task)

    async def admitted(self, plan: Plan, progress: Progress | None = None) -> Result:
        """Wait for a slot (or be refused), run, give the slot back."""
        self.check_open()
        await self.admission.acquire()
        t0 = time.monotonic()
        try:
            return await self.execute(plan, progress)
        finally:
            self.admission.release(time.monotonic() - t0)

    async def drain(self, timeout: float) -> int:
        """Refuse new work, let running requests finish for ``timeout`` seconds, then cancel
        the rest; returns how many were cancelled."""
        self.draining = True
        deadline = time.monotonic() + timeout
        while self.tasks and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        left = [t for t in self.tasks if not t.done()]
        for t in left:
            t.cancel()
        if left:
            self.metrics.cancelled.inc(len(left), reason="shutdown")
            await asyncio.wait(left, timeout=5)
        return len(left)

    # ----------------------------------------------------------------- responses
    def choices(self, plan: Plan, result: Result) -> tuple[list[Choice], list[str]]:
        """The response choices, and the answers they carry.

        Plain model: the first ``n`` samples as they are. Strategy: for each of the ``n`` best
        answers, the full text of its best candidate (highest score, then highest mean token
        log-probability; first on ties). An abstaining strategy returns its first candidate.
        With tools, an answer that calls functions becomes a ``tool_calls`` message; answers
        that call functions not offered, or that do not call one when ``tool_choice`` requires
        it, are passed over (none left: a 502 naming ``tool_choice``, or for ``auto`` the
        first candidate's text)."""
        cands = sorted(result.candidates, key=lambda c: c.index)
        if plan.plain:
            picked = cands[: plan.n]
            return ([self._choice(plan, c.text, _finish(c), c.answer) for c in picked],
                    [c.answer for c in picked if c.answer is not None])
        wanted = [a for a in result.answers if self._acceptable(plan, a)]
        for m in result.distribution:
            if len(wanted) >= plan.n:
                break
            if m.answer not in wanted and self._acceptable(plan, m.answer):
                wanted.append(m.answer)
        wanted = wanted[: plan.n]
        if not wanted:
            if plan.tools is not None and plan.tool_choice != "auto":
                what = "a function" if plan.tool_choice == "required" else f"the function {plan.tool_choice!r}"
                raise ApiError(502, f"tool_choice: no candidate of the strategy called {what} with JSON arguments "
                               f"({len(cands)} candidates); retry with a larger budget or tool_choice auto",
                               "server_error", "tool_choice", "no_tool_call")
            return ([Choice(cands[0].text, _finish(cands[0]))] if cands else [Choice("", "stop")]), []
        task = get_task(plan.task)
        with_answer = [c for c in cands if c.answer is not None]
        ids = group_answers(task, wanted + [c.answer for c in with_answer])
        want_ids, cand_ids = ids[: len(wanted)], ids[len(wanted):]
        out = []
        for a, k in zip(wanted, want_ids):
            members = [c for c, ck in zip(with_answer, cand_ids) if ck == k]
            best = max(members, key=_quality) if members else None
            out.append(self._choice(plan, best.text, _finish(best), a) if best is not None
                       else self._choice(plan, a, "stop", a))
        return out, wanted

    @staticmethod
    def _acceptable(plan: Plan, answer: str | None) -> bool:
        if answer is None or plan.tools is None:
            return answer is not None
        calls = parse_tool_answer(answer)
        if calls is None:
            return plan.tool_choice == "auto"
        names = {c["name"] for c in calls}
        allowed = set(plan.tools) if plan.tool_choice in ("auto", "required") else {plan.tool_choice}
        return names <= allowed

    @staticmethod
    def _choice(plan: Plan, text: str, finish: str, answer: str | None) -> Choice:
        reasoning = None
        if plan.kind == "chat":  # the thinking goes to reasoning_content, the answer to content
            reasoning, text = split_thinking(text)
            reasoning = reasoning or None
        calls = parse_tool_answer(answer) if plan.tools is not None else None
        if calls is None or not {c["name"] for c in calls} <= set(plan.tools or ()):
            return Choice(text, finish, reasoning=reasoning)
        return Choice(None, "tool_calls", reasoning=reasoning, tool_calls=[
            {"id": "call_" + secrets.token_hex(12), "type": "function",
             "function": {"name": c["name"], "arguments": json.dumps(c["arguments"], ensure_ascii=False)}}
            for c in calls])

    def infscale_field(self, plan: Plan, result: Result, answers: list[str]) -> dict[str, Any]:
        u = result.usage
        return {
            "strategy": plan.strategy,
            "budget": plan.budget,
            "scorer": plan.scorer,
            "task": plan.task,
            "seed": plan.seed,
            "answer": result.answer,
            "answers": answers,
            "distribution": [m.to_dict() for m in result.distribution],
            "candidates": len(result.candidates),
            "stopped_early": bool(result.stopped_early),
            "decision": result.info.get("decision"),
            "usage": {"prompt_tokens": u.prompt_tokens, "generated_tokens": u.generated_tokens, "calls": u.calls,
                      "seconds": round(u.seconds, 4),
                      **({"reasoning_tokens": u.reasoning_tokens} if u.reasoning_tokens else {}),
                      **({"by_model": u.to_dict()["by_model"]} if u.by_model else {})},
        }

    def response(self, plan: Plan, result: Result, rid: str, created: int) -> dict[str, Any]:
        picked, answers = self.choices(plan, result)
        if plan.kind == "chat":
            choices = [{"index": i, "message": _message(c), "finish_reason": c.finish_reason, "logprobs": None}
                       for i, c in enumerate(picked)]
            obj = "chat.completion"
        else:
            choices = [{"index": i, "text": c.text or "", "finish_reason": c.finish_reason, "logprobs": None}
                       for i, c in enumerate(picked)]
            obj = "text_completion"
        return {"id": rid, "object": obj, "created": created, "model": plan.model, "choices": choices,
                "usage": usage_dict(result), "infscale": self.infscale_field(plan, result, answers)}

    # -------------------------------------------------------------------- models
    def models(self) -> dict[str, Any]:
        created = 0
        names = list(STRATEGIES)
        data = [{"id": self.model_name, "object": "model", "created": created, "owned_by": "infscale",
                 "infscale": {"strategies": names, "model_name": "STRATEGY[-BUDGET]:" + self.model_name,
                              "max_budget": self.config.max_budget, "default_budget": self.config.default_budget,
                              "max_request_seconds": self.config.max_request_seconds}}]
        for name, s in STRATEGIES.items():
            data.append({
                "id": f"{name}:{self.model_name}", "object": "model", "created": created, "owned_by": "infscale",
                "infscale": {
                    "strategy": name, "base_model": self.model_name, "summary": getattr(s, "summary", ""),
                    "default_scorer": getattr(s, "default_scorer", None),
                    "default_budget": 1 if name == "greedy" else self.config.default_budget,
                    "params": {k: {"default": _json_safe(spec.default), "doc": spec.doc,
                                   "max": self.config.param_limits.get(k, getattr(spec, "max", None))}
                               for k, spec in getattr(s, "params", {}).items()},
                },
            })
        return {"object": "list", "data": data}


    def model_card(self, model_id: str) -> dict[str, Any] | None:
        """The ``/v1/models`` entry for ``model_id``: a listed one, or any accepted
        ``STRATEGY-BUDGET:MODEL`` (its budget within the limit); ``None`` if not served."""
        for card in self.models()["data"]:
            if card["id"] == model_id:
                return card
        strategy, budget, base = parse_model_name(model_id)
        if strategy is None or base != self.model_name or budget is None or not 1 <= budget <= self.config.max_budget:
            return None
        card = dict(next(c for c in self.models()["data"] if c["id"] == f"{strategy}:{base}"))
        card["id"] = model_id
        card["infscale"] = {**card["infscale"], "budget": budget}
        return card


def _message(c: Choice) -> dict[str, Any]:
    msg: dict[str, Any] = {"role": "assistant", "content": c.text}
    if c.reasoning:
        msg["reasoning_content"] = c.reasoning
    if c.tool_calls:
        msg["tool_calls"] = c.tool_calls
    return msg


def render_messages(messages: list[Any]) -> list[dict[str, str]]:
    """Chat turns as plain ``role``/``content`` pairs every backend and template takes:
    ``developer`` becomes ``system``; an assistant turn's ``tool_calls`` are written as the
    ``<tool_call>`` blocks the model is asked to write; a ``tool`` turn (a function's result)
    becomes a user turn ``<tool_response>...</tool_response>``."""
    out = []
    for m in messages:
        text = m.text()
        if m.role == "tool":
            out.append({"role": "user", "content": f"<tool_response>{text}</tool_response>"})
            continue
        if m.role == "assistant" and m.tool_calls:
            blocks = []
            for tc in m.tool_calls:
                try:
                    args = json.loads(tc.function.arguments or "{}")
                except ValueError:
                    args = tc.function.arguments
                blocks.append("<tool_call>" + canonical_json({"name": tc.function.name, "arguments": args})
                              + "</tool_call>")
            text = "\n".join(([text] if text else []) + blocks)
        out.append({"role": "system" if m.role == "developer" else m.role, "content": text})
    return out


def _structured(req: ChatCompletionRequest | CompletionRequest) -> tuple[tuple[str, ...] | None, str, str | None]:
    """``(tool names or None, tool_choice, response_format wire text or None)``, checked."""
    rf = req.response_format.wire() if req.response_format is not None else None
    tools = getattr(req, "tools", None)
    choice = getattr(req, "tool_choice", None)
    if tools is not None and not tools:
        raise ApiError(400, "tools: an empty list (accepted: at least one function, or no tools field)",
                       param="tools", code="invalid_value")
    if tools is None:
        if choice is not None and choice != "none":
            raise ApiError(400, "tool_choice: given without tools (accepted: tools with it, or no tool_choice)",
                           param="tool_choice", code="invalid_value")
        return None, "auto", rf
    names = tuple(t.function.name for t in tools)
    if len(set(names)) != len(names):
        raise ApiError(400, "tools: two functions share a name (accepted: distinct names)", param="tools",
                       code="invalid_value")
    if choice == "none":
        return None, "auto", rf  # the model may not call: it is not shown the functions
    if rf is not None:
        raise ApiError(400, "response_format: cannot be combined with tools here (accepted: text, or no tools)",
                       param="response_format", code="unsupported")
    if choice is None or isinstance(choice, str):
        return names, choice or "auto", None
    if choice.function.name not in names:
        raise ApiError(400, f"tool_choice: function {choice.function.name!r} is not among tools (accepted: "
                       f"{', '.join(names)})", param="tool_choice", code="invalid_value")
    return names, choice.function.name, None


def usage_dict(result: Result) -> dict[str, Any]:
    u = result.usage
    out: dict[str, Any] = {"prompt_tokens": u.prompt_tokens, "completion_tokens": u.generated_tokens,
                           "total_tokens": u.prompt_tokens + u.generated_tokens}
    if u.reasoning_tokens:
        out["completion_tokens_details"] = {"reasoning_tokens": u.reasoning_tokens}
    return out


def _finish(c: Candidate) -> str:
    return "length" if c.finish_reason == "length" else "stop"


def _quality(c: Candidate) -> tuple[float, float]:
    score = c.score if c.score is not None and not math.isnan(c.score) else -math.inf
    return score, c.mean_logprob


def _json_safe(v: Any) -> Any:
    return v if v is None or isinstance(v, (str, int, float, bool)) else str(v)


def _renamed(fn: Callable[[], Any], prefix: str, param: str) -> Any:
    """Run ``fn``; a ConfigError about ``prefix...`` is re-raised naming the request field."""
    try:
        return fn()
    except ConfigError as e:
        if e.param.startswith(prefix):
            rest = e.param[len(prefix):].strip()
            name = f"{param}.{rest}" if rest else param
            raise ApiError(400, f"{name}: {str(e).split(': ', 1)[-1]}", param=name, code="invalid_value") from None
        raise
