"""The shared glossary: problems, generation requests and completions, candidates, results.

Weights and scores are natural logs everywhere; impossible is ``-inf``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from .errors import ConfigError
from .params import SamplingParams

__all__ = [
    "Problem",
    "ConfidenceStop",
    "GenRequest",
    "Completion",
    "Usage",
    "Candidate",
    "AnswerMass",
    "Result",
]


@dataclass
class Problem:
    """A question to answer.

    Give either ``question`` (rendered through the task's default prompt), ``messages``
    (chat messages used as they are) or ``prompt`` (raw text continued as it is, with no chat
    template: the server's ``/v1/completions``). ``reference`` is for evaluation only: strategies never
    see it. ``task`` chooses answer extraction and equivalence: ``math``, ``mcq``, ``code``,
    ``text``.
    """

    question: str | None = None
    messages: list[dict[str, str]] | None = None
    id: str = "0"
    task: str = "math"
    reference: Any = None
    choices: list[str] | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    prompt: str | None = None


@dataclass(frozen=True)
class ConfidenceStop:
    """Stop a running sequence once the mean token confidence over its last ``window`` tokens
    falls below ``threshold`` (DeepConf's online early stop; Fu et al. 2025).

    The rule is evaluated after every generated token, only once ``window`` tokens exist (a
    full group); the token that completes the low group is kept, nothing after it is generated.
    Token confidence is :attr:`GenRequest.confidence`'s (see there)."""

    window: int
    threshold: float

    def __post_init__(self) -> None:
        if isinstance(self.window, bool) or not isinstance(self.window, int) or self.window < 1:
            raise ConfigError("stop_rule.window", f"got {self.window!r}", "an integer >= 1")
        t = self.threshold
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t):
            raise ConfigError("stop_rule.threshold", f"got {t!r}", "a finite number")

    def first_stop(self, confidences: list[float]) -> int | None:
        """The number of tokens generated when the rule stops a sequence with these token
        confidences (``None``: it never stops). The one reading of the rule that every
        generator follows (the engine keeps a running sum instead of calling it)."""
        w, total = self.window, 0.0
        for i, c in enumerate(confidences):
            total += c
            if i >= w:
                total -= confidences[i - w]
            if i + 1 >= w and total / w < self.threshold:
                return i + 1
        return None


@dataclass
class GenRequest:
    """Continue a conversation or a text until a stop.

    Exactly one of ``messages`` (chat, rendered with the model's template) or ``prompt`` (raw
    text) is set. ``prefix`` is text the assistant turn already contains (prefill) and is
    continued, not repeated, in the completion. ``seed`` is the sample's own seed (already
    derived from base seed, problem id and sample index); ``None`` uses ``params.seed``.
    ``key`` names the request in traces and logs.

    Trajectory continuation (generators with ``capabilities.kv_fork``): with ``keep=True`` the
    completion carries a ``handle`` that holds the generated state (for the embedded engine, a
    KV-cache sequence); a later request with ``parent=handle`` continues from it after appending
    ``prefix``, without re-reading the prefix. Several requests may fork one parent. Handles are
    released with the generator's ``free``.

    ``confidence=k`` asks for DeepConf's token confidence of every generated token (k in 1..20,
    0: off) and ``stop_rule`` for an early stop on it; ``self_certainty=True`` asks for every
    token's self-certainty (``Completion.self_certainties``; generators whose
    ``capabilities.self_certainty`` is empty refuse it).

    ``alone=True``: the completion must be reproducible from this request's own seed, so a
    generator never draws it together with other requests (no ``n`` grouping on servers that
    honour ``n``); the evaluation pool's samples are drawn so, which keeps a resumed run equal to
    an uninterrupted one and every stored sample seed regenerating its sample.
    """

    params: SamplingParams
    messages: list[dict[str, str]] | None = None
    prompt: str | None = None
    prefix: str = ""
    seed: int | None = None
    key: str = ""
    parent: Any = None
    keep: bool = False
    confidence: int = 0
    stop_rule: ConfidenceStop | None = None
    self_certainty: bool = False
    alone: bool = False

    def __post_init__(self) -> None:
        if self.parent is None and (self.messages is None) == (self.prompt is None):
            raise ValueError("GenRequest needs exactly one of messages or prompt (or a parent)")
        k = self.confidence
        if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k <= 20:
            raise ConfigError("confidence", f"got {k!r}", "an integer in [0, 20] (0: off)")
        if self.stop_rule is not None and not k:
            raise ConfigError("stop_rule", "a confidence stop rule needs token confidence",
                              "confidence=k (1..20) with the rule")


@dataclass
class Completion:
    """One generated continuation.

    ``logprobs[i]`` is the log-probability of token i under the model's unmodified
    distribution (temperature 1, no truncation); ``sampled_logprobs[i]`` under the distribution
    it was actually drawn from (temperature and truncation applied; 0.0 for greedy picks).
    ``finish_reason`` is ``stop`` (a stop string or end of text), ``length`` (max_tokens),
    ``confidence`` (the request's :class:`ConfidenceStop` rule ended it early; the tokens up to
    and including the one that completed the low group are returned and counted),
    ``cancelled``, ``error``, or ``budget`` (refused by the request's budget: no text, zero
    tokens, not a call; see :mod:`infscale.meter`). ``confidences[i]`` is token i's confidence
    when the request asked for it (:attr:`GenRequest.confidence`), else ``None``.
    ``self_certainties[i]`` is the self-certainty of the distribution token i was drawn from,
    ``KL(U || p_i)`` (Kang et al. 2025; see :func:`infscale.backends.sampling.self_certainty`),
    when the request asked for it (:attr:`GenRequest.self_certainty`), else ``None``.
    """

    text: str
    finish_reason: str
    prompt_tokens: int = 0
    generated_tokens: int = 0
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    sampled_logprobs: list[float] = field(default_factory=list)
    top_logprobs: list[dict[str, float]] | None = None
    stop: str | None = None
    seed: int | None = None
    error: str | None = None
    handle: Any = None
    confidences: list[float] | None = None
    reasoning_tokens: int = 0  # of generated_tokens, those inside <think> (when known)
    self_certainties: list[float] | None = None

    @property
    def logprob(self) -> float:
        """Sum of model log-probabilities of the generated tokens (the sequence log-prior)."""
        return float(sum(self.logprobs))


@dataclass
class Usage:
    """What a request spent: every call counts, strategy and scorer alike.

    The totals cover every model the request used. ``by_model`` holds the part spent on models
    other than the policy model (a judge on its own model, keyed like ``"judge:gemma3-270m"``),
    already included in the totals; it is empty when the request used one model."""

    prompt_tokens: int = 0
    generated_tokens: int = 0
    calls: int = 0
    seconds: float = 0.0
    by_model: dict[str, "Usage"] = field(default_factory=dict)
    reasoning_tokens: int = 0  # of generated_tokens, those a reasoning model spent thinking (when known)

    def add(self, c: Completion) -> None:
        self.prompt_tokens += c.prompt_tokens
        self.generated_tokens += c.generated_tokens
        self.reasoning_tokens += c.reasoning_tokens
        self.calls += 1

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"prompt_tokens": self.prompt_tokens, "generated_tokens": self.generated_tokens,
                             "calls": self.calls, "seconds": self.seconds}
        if self.reasoning_tokens:
            d["reasoning_tokens"] = self.reasoning_tokens
        if self.by_model:
            d["by_model"] = {k: {"prompt_tokens": u.prompt_tokens, "generated_tokens": u.generated_tokens,
                                 "calls": u.calls} for k, u in self.by_model.items()}
        return d


@dataclass
class Candidate:
    """A finished sample as a strategy sees it: text, extracted answer, scores."""

    text: str
    answer: str | None
    index: int = 0
    logprob: float = 0.0
    score: float | None = None
    generated_tokens: int = 0
    finish_reason: str = "stop"
    seed: int | None = None
    confidence: float | None = None  # a confidence-guided strategy's trace confidence (DeepConf)

    @property
    def mean_logprob(self) -> float:
        """Mean token log-probability: the model's confidence in this sample."""
        return self.logprob / max(1, self.generated_tokens)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if d["score"] is not None and not math.isfinite(d["score"]):
            d["score"] = None if math.isnan(d["score"]) else str(d["score"])
        if d["confidence"] is not None and not math.isfinite(d["confidence"]):
            d["confidence"] = None
        return d


@dataclass
class AnswerMass:
    """One equivalence class of answers: a representative, its normalised weight, its count."""

    answer: str
    weight: float
    count: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Result:
    """What a strategy concluded.

    ``answer`` is the chosen answer (``None`` when it abstains: no candidate had an answer);
    ``answers`` the k chosen answers for pass@k-style strategies (``answers[0] == answer``);
    ``distribution`` the answer classes with weights summing to 1, best first.
    """

    strategy: str
    answer: str | None
    answers: list[str]
    distribution: list[AnswerMass]
    candidates: list[Candidate]
    usage: Usage
    n: int
    trace: list[dict[str, Any]] = field(default_factory=list)
    stopped_early: bool = False
    info: dict[str, Any] = field(default_factory=dict)  # strategy diagnostics (e.g. log_z)

    def to_dict(self) -> dict[str, Any]:
        return {
            "strategy": self.strategy,
            "n": self.n,
            "answer": self.answer,
            "answers": list(self.answers),
            "distribution": [m.to_dict() for m in self.distribution],
            "candidates": [c.to_dict() for c in self.candidates],
            "usage": self.usage.to_dict(),
            "stopped_early": self.stopped_early,
            "info": dict(self.info),
        }
