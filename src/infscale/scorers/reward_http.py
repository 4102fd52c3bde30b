"""Reward models served over HTTP: process reward models (PRMs) and outcome reward models.

:class:`PRMHttpScorer` asks a server that hosts a reward model — vLLM with ``--runner pooling``,
or anything that speaks the same API — how good the latest step of a partial solution is. The
score is the natural log of the model's probability that the step is good (through
:func:`~infscale.scorers.base.prob_to_logscore`); multiplying such step scores along a path
(summing the logs) or taking the minimum or the last one is the search core's business, not
the scorer's.

Three APIs (``api=``), with the request and response shapes of vLLM's pooling-model server
(docs: https://docs.vllm.ai/en/latest/models/pooling_models/ — "Pooling API" and
https://docs.vllm.ai/en/latest/models/pooling_models/reward/ — "Reward Usages"; protocol
models in vLLM's ``vllm/entrypoints/pooling/{pooling,classify,score}/protocol.py``):

``pooling`` — step-level PRMs such as Qwen2.5-Math-PRM-7B (Zhang et al. 2025), served as a
    ``token_classify`` pooling model (``Qwen2ForProcessRewardModel``, STEP pooling over the step
    token ``<extra_0>``). Request: ``POST {root}/pooling`` with ``{"model", "input": text,
    "task": "token_classify"}``. Response: ``{"data": [{"index": 0, "object": "pooling",
    "data": [[p_bad, p_good], ...]}]}``, one row per step token (or, without STEP pooling, per
    input token — the input ends with a step token, so the last row is that token either way).
    The input is the raw text ``question + "\\n\\n" + step_1 + TOKEN + step_2 + TOKEN + ...``
    (no chat template), where the steps come from splitting the solution so far at
    ``step_separator`` (default ``"\\n"``, infscale's step delimiter) and TOKEN is
    ``step_token`` (default ``"<extra_0>"``, Qwen2.5-Math-PRM's separator; math-shepherd-style
    PRMs use their own tag and ``good_index=0``). The score of the latest step is
    ``log p_good`` of the LAST row, ``p_good = row[good_index]`` (default 1, the positive label
    of Qwen2.5-Math-PRM). ``pooling_task=None`` leaves ``task`` out (vLLM before the
    ``token_classify`` task existed).
``classify`` — sequence classifiers used as (outcome or prefix) reward models. Request:
    ``POST {root}/classify`` with ``{"model", "input": text}``; response ``{"data": [{"index",
    "label", "probs": [...], "num_classes"}]}``; the score is ``log probs[good_index]`` (or of
    the only probability of a one-label model). The input is ``question + "\\n\\n" + steps``
    joined by ``step_separator``.
``reward`` — the Score API (``/v1/score`` style; vLLM serves it at ``/score``): reward models
    and cross-encoders with one output, for which vLLM applies a sigmoid. Request: ``POST
    {root}/score`` with ``{"model", "text_1": question, "text_2": solution so far}``; response
    ``{"data": [{"index", "object": "score", "score": p}]}``; the score is ``log p``.

Every probability must be a finite number in [0, 1]; anything else (raw logits, a missing
field) is a fatal :class:`~infscale.errors.BackendError` naming the URL and what was wrong.
Requests go through the shared HTTP transport (:mod:`infscale.backends.http`, as the OpenAI
generator's do): one connection pool per event loop, and only connection faults, timeouts and
408/409/429/5xx are retried, with bounded exponential backoff; other 4xx surface at once with the
server's message.

Cost: one HTTP request per scored text (requests run concurrently, bounded), charged through
the request's :class:`~infscale.meter.Meter` as one call with the tokens the server reports
(prompt tokens; generated tokens if it reports any). The call budget is checked first: texts
beyond what it admits are not sent and stay unscored (NaN); with no budget left at all the
meter stops the strategy.
The PRM reads the whole solution so far at every step: over a solution of T steps that is
O(T^2) tokens of PRM prefill, unless the server caches prefixes.

References: Lightman et al. (2023), "Let's Verify Step by Step" (process supervision, PRM800K);
Zhang et al. (2025), "The Lessons of Developing Process Reward Models in Mathematical Reasoning"
(Qwen2.5-Math-PRM).
"""

from __future__ import annotations

import math
import os
from typing import Any

from ..backends.base import gather_or_cancel
from ..backends.http import HttpTransport, server_root
from ..errors import BackendError, ConfigError
from ..meter import Meter
from ..tasks.prompts import question_text
from ..types import Completion, Problem
from .base import UNSCORED, Scorer, prob_to_logscore

__all__ = ["PRMHttpScorer", "APIS"]

#: The supported APIs and the path each one posts to (under the server's root, not ``/v1``).
APIS = {"pooling": "/pooling", "classify": "/classify", "reward": "/score"}

_PROB_SLACK = 1e-6  # float noise allowed outside [0, 1]


def _question(problem: Problem) -> str:
    if problem.question is not None:
        return question_text(problem)
    return (problem.messages or [{}])[-1].get("content", "")


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


class PRMHttpScorer(Scorer):
    """A process (and outcome) scorer backed by a reward model on an HTTP server.

    ``base_url``: the server, e.g. ``http://127.0.0.1:8000`` (a trailing ``/v1`` is dropped).
    ``model``: the served model name; ``None`` takes the first id of ``GET /v1/models``.
    ``api``: ``pooling`` (step-level PRM), ``classify`` or ``reward`` (see the module docs).
    ``step_separator``: what separates steps in infscale's text (default ``"\\n"``).
    ``step_token``: what separates (and, for ``pooling``, ends) steps in the PRM's input;
    default ``"<extra_0>"`` for ``pooling``, else ``step_separator``.
    ``good_index``: the label whose probability means "good" (default 1).
    ``pooling_task``: the ``task`` sent to ``/pooling`` (default ``token_classify``; ``None``
    omits it). ``timeout`` (the read timeout), ``max_retries``, ``max_concurrency``,
    ``backoff_base``, ``backoff_cap`` and ``api_key`` mean what they mean for the OpenAI HTTP
    generator; ``None`` takes the ``INFSCALE_*`` environment settings, else the transport's defaults.
    """

    name = "prm-http"
    kind = "process"
    process_capable = True

    def __init__(
        self,
        base_url: str,
        model: str | None = None,
        *,
        api: str = "pooling",
        step_separator: str = "\n",
        step_token: str | None = None,
        good_index: int = 1,
        pooling_task: str | None = "token_classify",
        api_key: str | None = None,
        timeout: float | None = None,
        max_retries: int | None = None,
        max_concurrency: int = 16,
        backoff_base: float = 0.5,
        backoff_cap: float = 8.0,
    ):
        if api not in APIS:
            raise ConfigError("api", f"got {api!r}", ", ".join(APIS))
        if not isinstance(step_separator, str) or not step_separator:
            raise ConfigError("step_separator", f"got {step_separator!r}", "a non-empty string")
        if step_token is not None and (not isinstance(step_token, str) or not step_token):
            raise ConfigError("step_token", f"got {step_token!r}", "a non-empty string, or None for the default")
        if isinstance(good_index, bool) or not isinstance(good_index, int) or good_index < 0:
            raise ConfigError("good_index", f"got {good_index!r}", "an integer >= 0")
        self.transport = HttpTransport(api_key=api_key, timeout=timeout, max_retries=max_retries,
                                       max_concurrency=max_concurrency, backoff_base=backoff_base,
                                       backoff_cap=backoff_cap)
        self.root_url = server_root(base_url)
        self.model = model
        self.api = api
        self.url = self.root_url + APIS[api]
        self.step_separator = step_separator
        self.step_token = step_token if step_token is not None else ("<extra_0>" if api == "pooling" else step_separator)
        self.good_index = good_index
        self.pooling_task = pooling_task

    @classmethod
    def from_env(cls) -> "PRMHttpScorer":
        """The registry's factory: ``INFSCALE_PRM_URL`` (required), ``INFSCALE_PRM_MODEL``,
        ``INFSCALE_PRM_API`` (``pooling``, ``classify`` or ``reward``), ``INFSCALE_PRM_API_KEY``."""
        url = os.environ.get("INFSCALE_PRM_URL", "").strip()
        if not url:
            raise ConfigError(
                "INFSCALE_PRM_URL",
                "is not set: the prm-http scorer needs the URL of a server with a reward model "
                "(e.g. `vllm serve Qwen/Qwen2.5-Math-PRM-7B`)",
                "a URL such as INFSCALE_PRM_URL=http://127.0.0.1:8000",
            )
        return cls(
            url,
            model=os.environ.get("INFSCALE_PRM_MODEL") or None,
            api=os.environ.get("INFSCALE_PRM_API") or "pooling",
            api_key=os.environ.get("INFSCALE_PRM_API_KEY") or None,
        )

    # ------------------------------------------------------------------ scoring

    async def score(self, problem, texts, meter):
        """Outcome use: a whole solution scores what the PRM gives its last step (it has seen
        all the others); other aggregations (min, product) need per-step scores, which the
        search core collects. A solution without steps is scored as one empty step."""
        return await self._score_all(problem, [self._split(t) or [""] for t in texts], meter)

    async def score_steps(self, problem, prefixes, steps, meter):
        """Log-probability that ``steps[i]`` is a good next step after ``prefixes[i]``."""
        if len(prefixes) != len(steps):
            raise ValueError(f"score_steps needs one prefix per step, got {len(prefixes)} and {len(steps)}")
        return await self._score_all(problem, [self._split(p) + [s.strip()] for p, s in zip(prefixes, steps)], meter)

    def _split(self, text: str) -> list[str]:
        """The non-empty steps of a text (an empty text has none)."""
        return [s.strip() for s in text.split(self.step_separator) if s.strip()]

    def body(self, question: str, steps: list[str]) -> dict[str, Any]:
        """The request body for one partial solution (``steps``, the latest last)."""
        if self.api == "reward":
            return {"model": self.model, "text_1": question, "text_2": self.step_token.join(steps)}
        if self.api == "pooling":
            text = f"{question}\n\n" + "".join(s + self.step_token for s in steps)
            body: dict[str, Any] = {"model": self.model, "input": text}
            if self.pooling_task is not None:
                body["task"] = self.pooling_task
            return body
        return {"model": self.model, "input": f"{question}\n\n" + self.step_token.join(steps)}

    async def _score_all(self, problem: Problem, step_lists: list[list[str]], meter: Meter | None) -> list[float]:
        if not step_lists:
            return []
        admitted = len(step_lists) if meter is None else meter.reserve(len(step_lists))
        refused = [UNSCORED] * (len(step_lists) - admitted)
        step_lists = step_lists[:admitted]
        question = _question(problem)
        if self.model is None:
            self.model = await self.transport.first_model(
                self.root_url + "/v1/models", "pass model= (or set INFSCALE_PRM_MODEL)")
        return await gather_or_cancel(self._one(question, steps, meter) for steps in step_lists) + refused

    async def aclose(self) -> None:
        """Close the connection pool (optional: it is also dropped with its event loop)."""
        await self.transport.aclose()

    async def _one(self, question: str, steps: list[str], meter: Meter | None) -> float:
        async with self.transport.semaphore:
            data = await self.transport.request("POST", self.url, self.body(question, steps))
        p = self.parse(data)
        if meter is not None:  # one scorer query = one call, with the tokens the server reports
            reported = data.get("usage") if isinstance(data.get("usage"), dict) else {}
            prompt, generated = reported.get("prompt_tokens"), reported.get("completion_tokens")
            meter.charge(Completion(text="", finish_reason="stop",
                                    prompt_tokens=int(prompt) if _is_number(prompt) else 0,
                                    generated_tokens=int(generated) if _is_number(generated) else 0))
        return prob_to_logscore(p)

    # ------------------------------------------------------------------ parsing

    def _malformed(self, why: str, data: Any) -> BackendError:
        return BackendError(f"malformed response from {self.url}: {why}: {str(data)[:200]}", retryable=False)

    def parse(self, data: Any) -> float:
        """P(good) of the latest step from one response body (see the module docs)."""
        items = data.get("data") if isinstance(data, dict) else None
        if not isinstance(items, list) or not items or not isinstance(items[0], dict):
            raise self._malformed("no data list", data)
        item = next((it for it in items if isinstance(it, dict) and it.get("index") == 0), items[0])
        if self.api == "reward":
            return self._prob(item.get("score"), data)
        if self.api == "classify":
            return self._label_prob(item.get("probs"), data)
        rows = item.get("data")
        if not isinstance(rows, list) or not rows:
            raise self._malformed(
                f"no step scores (does the input contain the PRM's step token {self.step_token!r}?)", data)
        last = rows[-1] if isinstance(rows[-1], list) else rows  # 2-D: one row per step; 1-D: one row
        return self._label_prob(last, data)

    def _label_prob(self, row: Any, data: Any) -> float:
        if not isinstance(row, list) or not row:
            raise self._malformed("no label probabilities", data)
        if len(row) == 1:
            return self._prob(row[0], data)
        if self.good_index >= len(row):
            raise self._malformed(f"{len(row)} labels, but good_index is {self.good_index}", data)
        return self._prob(row[self.good_index], data)

    def _prob(self, p: Any, data: Any) -> float:
        if not _is_number(p) or not math.isfinite(p) or not -_PROB_SLACK <= p <= 1 + _PROB_SLACK:
            raise self._malformed(f"expected a probability in [0, 1], got {p!r} (raw logits?)", data)
        return min(1.0, max(0.0, float(p)))
