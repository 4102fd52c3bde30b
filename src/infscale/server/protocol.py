"""The wire format: OpenAI's request and response bodies, plus the ``infscale`` extension.

Requests are validated here (types, ranges); what depends on the served model and the
strategy registry (strategy names, settings, budgets) is checked by the service. Unknown
top-level fields are ignored, as OpenAI-compatible servers do, so clients that send extras
(``user``, ``logit_bias``, ...) keep working; unknown fields *inside* ``infscale`` are errors,
so a typo never passes silently.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, field_validator

__all__ = [
    "Limits",
    "InfscaleOptions",
    "ChatMessage",
    "ChatCompletionRequest",
    "CompletionRequest",
    "StreamOptions",
    "ErrorResponse",
    "ChatCompletionResponse",
    "CompletionResponse",
    "ModelList",
    "TASKS",
]

TASKS = ("math", "mcq", "code", "text")
ParamValue = StrictStr | StrictBool | StrictInt | float


def _unicode(v: Any) -> Any:
    """Reject lone surrogates (JSON's ``"\\ud800"`` escapes decode, but are not Unicode text:
    no tokenizer, backend or log can encode them) with a 400 naming the field, not a 500 later."""
    values = v if isinstance(v, list) else [v]
    if isinstance(v, dict):
        values = [*v.keys(), *v.values()]
    for item in values:
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                raise ValueError("is not valid Unicode text (it holds a lone surrogate, e.g. an unpaired "
                                 "\\ud800 escape)") from None
    return v


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Limits(_Strict):
    """What one request may spend in all (every internal call counts); ``None`` = no limit."""

    generated_tokens: StrictInt | None = Field(None, ge=1, description="generated tokens over every call")
    calls: StrictInt | None = Field(None, ge=1, description="model calls (samples, steps and scorer queries)")
    seconds: float | None = Field(None, gt=0, description="wall-clock seconds; the strategy answers from what it has")


class InfscaleOptions(_Strict):
    """The ``infscale`` request field: how to spend compute on this request.

    Any field left out comes from the model name (``STRATEGY[-BUDGET]:MODEL``) or the server's
    defaults; a field given here wins over the model name.
    """

    strategy: StrictStr | None = Field(None, description="strategy name, e.g. majority, best-of-n, particle-filter")
    budget: StrictInt | None = Field(None, ge=1, description="width: about the compute of n independent samples")
    scorer: StrictStr | None = Field(None, description="scorer name (default: the strategy's own)")
    params: dict[str, ParamValue] = Field(default_factory=dict, description="strategy settings (--param key=value)")
    task: Literal["math", "mcq", "code", "text"] | None = Field(
        None, description="how answers are extracted and compared (default: the server's --task)")
    limits: Limits | None = None
    progress: StrictBool = Field(False, description="streaming only: send progress chunks while the strategy runs")

    _text = field_validator("strategy", "scorer", "params")(_unicode)


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")

    include_usage: StrictBool = False


class TextPart(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: Literal["text"]
    text: StrictStr

    _text = field_validator("text")(_unicode)


class ChatMessage(BaseModel):
    """One turn. ``developer`` is read as ``system``; content may be a string or text parts."""

    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant"]
    content: StrictStr | list[TextPart]
    name: StrictStr | None = None

    _text = field_validator("content", "name")(_unicode)

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "".join(p.text for p in self.content)


class _Sampling(BaseModel):
    """Fields shared by both generation endpoints."""

    model_config = ConfigDict(extra="ignore")

    model: StrictStr = Field(..., min_length=1, description="MODEL, or STRATEGY[-BUDGET]:MODEL")
    temperature: float | None = Field(None, ge=0, le=2, description="0 = greedy; default: the server's (0.7)")
    top_p: float | None = Field(None, gt=0, le=1)
    top_k: StrictInt | None = Field(None, ge=0, description="0 disables (vLLM-style extension)")
    min_p: float | None = Field(None, ge=0, le=1, description="vLLM-style extension")
    max_tokens: StrictInt | None = Field(None, ge=1, description="cap on each sample's generated tokens")
    n: StrictInt = Field(1, ge=1, le=128, description="plain model: n samples; with a strategy: the n best answers")
    stop: StrictStr | list[StrictStr] | None = Field(None, description="up to 4 stop strings")
    seed: StrictInt | None = Field(None, ge=-(2**63), lt=2**63, description="base seed (default: a fresh one)")
    stream: StrictBool = False
    stream_options: StreamOptions | None = None
    infscale: InfscaleOptions | None = None

    _text = field_validator("model")(_unicode)

    @field_validator("stop")
    @classmethod
    def _stops(cls, v):
        if isinstance(v, list) and len(v) > 4:
            raise ValueError("at most 4 stop strings")
        return _unicode(v)


class ChatCompletionRequest(_Sampling):
    messages: list[ChatMessage] = Field(..., min_length=1)
    max_completion_tokens: StrictInt | None = Field(None, ge=1, description="the newer name of max_tokens")


class CompletionRequest(_Sampling):
    prompt: StrictStr | list[StrictStr] = Field(..., description="one prompt (a string or a list of one string)")
    echo: StrictBool = False
    best_of: StrictInt | None = Field(None, ge=1)

    @field_validator("prompt")
    @classmethod
    def _one_prompt(cls, v):
        if isinstance(v, list) and len(v) != 1:
            raise ValueError("one prompt per request (a string or a list of exactly one string)")
        return _unicode(v)

    def prompt_text(self) -> str:
        return self.prompt if isinstance(self.prompt, str) else self.prompt[0]


# ---------------------------------------------------------------------------- responses
# Documentation of what the server answers (the routes build these bodies as plain dicts).


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorDetail


class AnswerMassOut(BaseModel):
    answer: str
    weight: float
    count: int


class UsageOut(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ModelUsage(BaseModel):
    prompt_tokens: int
    generated_tokens: int
    calls: int


class InfscaleUsage(BaseModel):
    prompt_tokens: int
    generated_tokens: int
    calls: int
    seconds: float
    by_model: dict[str, ModelUsage] | None = Field(
        None, description="the part spent on models other than the policy model (a judge on its own model)")


class InfscaleResult(BaseModel):
    """The ``infscale`` response field (standard clients ignore it)."""

    strategy: str
    budget: int
    scorer: str | None
    task: str
    seed: int
    answer: str | None = Field(description="the chosen answer; null = abstained (no sample had an answer)")
    answers: list[str] = Field(description="the answers returned as choices, best first")
    distribution: list[AnswerMassOut] = Field(description="answer classes, weights sum to 1, best first")
    candidates: int = Field(description="how many candidates the strategy produced")
    stopped_early: bool
    decision: dict[str, Any] | None = Field(None, description="auto: the policy's decision (signal value, bin, "
                                            "chosen spec and budget); null for other strategies")
    usage: InfscaleUsage


class ChatMessageOut(BaseModel):
    role: Literal["assistant"]
    content: str


class ChatChoice(BaseModel):
    index: int
    message: ChatMessageOut
    finish_reason: Literal["stop", "length"]
    logprobs: None = None


class ChatCompletionResponse(BaseModel):
    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: list[ChatChoice]
    usage: UsageOut
    infscale: InfscaleResult


class CompletionChoice(BaseModel):
    index: int
    text: str
    finish_reason: Literal["stop", "length"]
    logprobs: None = None


class CompletionResponse(BaseModel):
    id: str
    object: Literal["text_completion"]
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: UsageOut
    infscale: InfscaleResult


class ModelCard(BaseModel):
    id: str
    object: Literal["model"]
    created: int
    owned_by: str
    infscale: dict[str, Any]


class ModelList(BaseModel):
    object: Literal["list"]
    data: list[ModelCard]


class Health(BaseModel):
    status: Literal["ok", "draining", "starting"]
    model: str | None
    in_flight: int
    queued: int
    engine: dict[str, int] | None = Field(None, description="the embedded engine's counters (live sequences, ...)")
