"""The wire format: OpenAI's request and response bodies, plus the ``infscale`` extension.

Requests are validated here (types, ranges); what depends on the served model and the
strategy registry (strategy names, settings, budgets) is checked by the service. Unknown
top-level fields are ignored, as OpenAI-compatible servers do, so clients that send extras
(``user``, ``logit_bias``, ...) keep working; unknown fields *inside* ``infscale`` are errors,
so a typo never passes silently.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import (BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, field_validator,
                      model_validator)

__all__ = [
    "Limits",
    "InfscaleOptions",
    "ChatMessage",
    "Tool",
    "ResponseFormat",
    "UNSUPPORTED_FIELDS",
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


class FunctionCallIn(BaseModel):
    model_config = ConfigDict(extra="ignore")

    name: StrictStr = Field(..., min_length=1)
    arguments: StrictStr = Field("{}", description="the arguments as JSON text")

    _text = field_validator("name", "arguments")(_unicode)


class ToolCallIn(BaseModel):
    """A function call an earlier assistant turn made (multi-turn tool use)."""

    model_config = ConfigDict(extra="ignore")

    id: StrictStr | None = None
    type: Literal["function"] = "function"
    function: FunctionCallIn


class ChatMessage(BaseModel):
    """One turn. ``developer`` is read as ``system``; content may be a string or text parts.

    ``tool`` turns (a function's result, with ``tool_call_id``) and assistant turns that made
    ``tool_calls`` (content may then be null) are accepted; :func:`render_messages` writes
    them as text every model can read."""

    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: StrictStr | list[TextPart] | None = None
    name: StrictStr | None = None
    tool_calls: list[ToolCallIn] | None = None
    tool_call_id: StrictStr | None = None

    _text = field_validator("content", "name", "tool_call_id")(_unicode)

    @model_validator(mode="after")
    def _content_or_calls(self):
        if self.content is None and not (self.role == "assistant" and self.tool_calls):
            raise ValueError("content is required (it may be null only in an assistant turn with tool_calls)")
        return self

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(p.text for p in self.content)


class FunctionDef(BaseModel):
    model_config = ConfigDict(extra="ignore")

    name: StrictStr = Field(..., pattern=r"^[A-Za-z0-9_-]{1,64}$", description="the function's name")
    description: StrictStr | None = None
    parameters: dict[str, Any] | None = Field(None, description="a JSON schema of the arguments")
    strict: StrictBool | None = None

    _text = field_validator("description")(_unicode)


class Tool(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: Literal["function"]
    function: FunctionDef


class NamedFunction(BaseModel):
    model_config = ConfigDict(extra="ignore")

    name: StrictStr


class NamedToolChoice(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: Literal["function"]
    function: NamedFunction


class JsonSchemaSpec(BaseModel):
    model_config = ConfigDict(extra="ignore")

    name: StrictStr = Field(..., min_length=1, max_length=64)
    description: StrictStr | None = None
    schema_: dict[str, Any] = Field(default_factory=dict, alias="schema")
    strict: StrictBool | None = None


class ResponseFormat(BaseModel):
    """``text`` (free text), ``json_object`` (any JSON value) or ``json_schema``."""

    model_config = ConfigDict(extra="ignore")

    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaSpec | None = None

    @model_validator(mode="after")
    def _schema_given(self):
        if self.type == "json_schema" and self.json_schema is None:
            raise ValueError("type json_schema needs a json_schema object ({'name': ..., 'schema': {...}})")
        return self

    def wire(self) -> str | None:
        """The object as :attr:`~infscale.params.SamplingParams.response_format` holds it (None: text)."""
        if self.type == "text":
            return None
        if self.type == "json_object":
            return json.dumps({"type": "json_object"})
        spec = self.json_schema.model_dump(by_alias=True, exclude_none=True)  # type: ignore[union-attr]
        return json.dumps({"type": "json_schema", "json_schema": spec}, ensure_ascii=False)


#: OpenAI request fields this server cannot honour, with the values that mean "not used":
#: a request that sets one otherwise is refused (400 naming it), never quietly ignored.
UNSUPPORTED_FIELDS: dict[str, tuple[tuple[Any, ...], str]] = {
    "logprobs": ((None, False, 0), "false (token log-probabilities are not returned; see the infscale field)"),
    "top_logprobs": ((None, 0), "0"),
    "logit_bias": ((None, {}), "null or {}"),
    "presence_penalty": ((None, 0, 0.0), "0"),
    "frequency_penalty": ((None, 0, 0.0), "0"),
    "repetition_penalty": ((None, 1, 1.0), "1"),
    "functions": ((None,), "null (use tools)"),
    "function_call": ((None,), "null (use tool_choice)"),
    "audio": ((None,), "null"),
    "modalities": ((None, ["text"]), '["text"]'),
    "prediction": ((None,), "null"),
    "suffix": ((None, ""), "null"),
    "web_search_options": ((None,), "null"),
    "reasoning_effort": ((None,), "null"),
    "guided_json": ((None,), "null (use response_format)"),
    "guided_grammar": ((None,), "null"),
    "guided_regex": ((None,), "null"),
    "guided_choice": ((None,), "null"),
}


class _Sampling(BaseModel):
    """Fields shared by both generation endpoints."""

    model_config = ConfigDict(extra="allow")  # extras are ignored, except UNSUPPORTED_FIELDS (refused)

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
    response_format: ResponseFormat | None = Field(None, description="json_object / json_schema: JSON answers, "
                                                   "folded by parsed value")
    infscale: InfscaleOptions | None = None

    def unsupported(self) -> tuple[str, str] | None:
        """``(field, accepted)`` of the first field set that this server cannot honour."""
        for key, value in (self.model_extra or {}).items():
            spec = UNSUPPORTED_FIELDS.get(key)
            if spec is not None and not any(value == ok and type(value) is type(ok) or value is ok
                                            for ok in spec[0]):
                return key, spec[1]
            if key in ("tools", "tool_choice", "parallel_tool_calls") and value is not None:
                return key, "null here (tools are taken by /v1/chat/completions)"
        return None

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
    tools: list[Tool] | None = Field(None, max_length=128, description="functions the model may call; the "
                                     "strategy votes over calls folded by name and canonical arguments")
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: StrictBool | None = None


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


class CompletionTokensDetails(BaseModel):
    reasoning_tokens: int


class UsageOut(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    completion_tokens_details: CompletionTokensDetails | None = Field(
        None, description="reasoning_tokens: a reasoning model's thinking tokens, where known (left out otherwise)")


class ModelUsage(BaseModel):
    prompt_tokens: int
    generated_tokens: int
    calls: int


class InfscaleUsage(BaseModel):
    prompt_tokens: int
    generated_tokens: int
    calls: int
    seconds: float
    reasoning_tokens: int | None = Field(None, description="thinking tokens, where known (left out otherwise)")
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


class FunctionCallOut(BaseModel):
    name: str
    arguments: str = Field(description="the arguments as JSON text")


class ToolCallOut(BaseModel):
    id: str
    type: Literal["function"]
    function: FunctionCallOut


class ChatMessageOut(BaseModel):
    role: Literal["assistant"]
    content: str | None = Field(description="the answer; null when the message only calls functions")
    reasoning_content: str | None = Field(None, description="a reasoning model's thinking (left out when none)")
    tool_calls: list[ToolCallOut] | None = Field(None, description="with tools: the winning call(s)")


class ChatChoice(BaseModel):
    index: int
    message: ChatMessageOut
    finish_reason: Literal["stop", "length", "tool_calls"]
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
