"""What a strategy is, and the metered context the runner gives it.

A strategy is ``init(ctx) -> state`` and ``async step(state, ctx) -> (state, info)`` plus
``select(state, ctx) -> Result``; the runner (:mod:`infscale.strategies.runner`) is the only
loop. Strategies reach the model only through :class:`Context`, which charges every call
(strategy and scorer alike) to one :class:`~infscale.types.Usage` and refuses work once the
:class:`~infscale.params.Budget` is spent.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from ..tasks import AnswerTask
from ..backends.base import Generator
from ..errors import ConfigError
from ..params import Budget, SamplingParams
from ..rng import derive_seed
from ..scorers.base import Scorer
from ..tasks.prompts import build_request
from ..types import Completion, GenRequest, Problem, Usage

__all__ = ["BudgetExhausted", "Context", "Strategy", "ParamSpec"]


class BudgetExhausted(Exception):
    """Raised by :class:`Context` when the budget allows no more work."""


@dataclass
class Context:
    """Everything a strategy may use for one problem: the metered model, scorer and task."""

    problem: Problem
    generator: Generator
    task: AnswerTask
    params: SamplingParams
    n: int
    seed: int
    budget: Budget
    scorer: Scorer | None = None
    options: dict[str, Any] = field(default_factory=dict)
    usage: Usage = field(default_factory=Usage)
    started: float = field(default_factory=time.monotonic)
    stopped_by_budget: bool = False

    @property
    def chat(self) -> bool:
        return self.generator.capabilities.chat_template

    # -- budget -----------------------------------------------------------------------
    def remaining_calls(self) -> int | None:
        if self.budget.calls is None:
            return None
        return max(0, self.budget.calls - self.usage.calls)

    def exhausted(self) -> bool:
        b, u = self.budget, self.usage
        if b.generated_tokens is not None and u.generated_tokens >= b.generated_tokens:
            return True
        if b.calls is not None and u.calls >= b.calls:
            return True
        if b.seconds is not None and time.monotonic() - self.started >= b.seconds:
            return True
        return False

    def _admit(self, requests: list[GenRequest]) -> list[GenRequest]:
        if self.exhausted():
            self.stopped_by_budget = True
            raise BudgetExhausted()
        room = self.remaining_calls()
        if room is not None and room < len(requests):
            self.stopped_by_budget = True
            requests = requests[:room]
        b = self.budget
        if b.generated_tokens is not None:
            left = b.generated_tokens - self.usage.generated_tokens
            requests = [
                r if r.params.max_tokens <= left else _with_params(r, r.params.with_(max_tokens=max(1, left)))
                for r in requests
            ]
        return requests

    def _charge(self, c: Completion) -> None:
        self.usage.add(c)
        self.usage.seconds = time.monotonic() - self.started

    # -- metered model calls ----------------------------------------------------------
    def sample_request(self, index: int, **param_changes: Any) -> GenRequest:
        """The request for sample ``index`` of this problem, seeded by (seed, problem id, index)."""
        params = self.params.with_(**param_changes) if param_changes else self.params
        seed = derive_seed(self.seed, self.problem.id, index)
        return build_request(self.problem, params, chat=self.chat, seed=seed, key=f"{self.problem.id}/{index}")

    async def generate(self, requests: list[GenRequest], purpose: str = "strategy") -> list[Completion]:
        """Generate (fewer if the call budget is nearly spent), charging every completion."""
        requests = self._admit(requests)
        outs = await self.generator.generate(requests)
        for c in outs:
            self._charge(c)
        return outs

    async def generate_settled(self, requests: list[GenRequest], purpose: str = "strategy") -> list[Completion]:
        """Like :meth:`generate`, but a failed request comes back with ``finish_reason="error"``
        (and is charged as a call) instead of failing the batch."""
        requests = self._admit(requests)
        outs = await self.generator.generate_settled(requests)
        for c in outs:
            self._charge(c)
        return outs

    async def stream(self, requests: list[GenRequest]) -> AsyncIterator[tuple[int, Completion]]:
        """Yield ``(index, completion)`` as they finish; stop (cancelling the rest) once the
        budget is spent."""
        requests = self._admit(requests)
        unread: set[int] = set()  # finished and paid for, not yet handed on

        def paid(i: int, c: Completion) -> None:
            self._charge(c)
            unread.add(i)

        agen = self.generator.stream(requests, on_finish=paid)
        try:
            async for i, c in agen:
                unread.discard(i)
                yield i, c
                if not unread and self.exhausted():
                    self.stopped_by_budget = True
                    break
        finally:
            await agen.aclose()


def _with_params(r: GenRequest, params: SamplingParams) -> GenRequest:
    return GenRequest(params=params, messages=r.messages, prompt=r.prompt, prefix=r.prefix, seed=r.seed,
                      key=r.key, parent=r.parent, keep=r.keep)


@dataclass(frozen=True)
class ParamSpec:
    """A strategy-specific setting, given on the CLI as ``--param name=value``."""

    type: type
    default: Any
    doc: str
    lo: float | None = None
    hi: float | None = None
    choices: tuple[Any, ...] | None = None

    def parse(self, name: str, raw: Any) -> Any:
        try:
            if self.type is bool and isinstance(raw, str):
                if raw.lower() not in ("1", "0", "true", "false", "yes", "no"):
                    raise ValueError(raw)
                value = raw.lower() in ("1", "true", "yes")
            else:
                value = self.type(raw)
        except (TypeError, ValueError):
            raise ConfigError(f"param {name}", f"cannot read {raw!r} as {self.type.__name__}", self._accepted()) from None
        if (self.lo is not None and value < self.lo) or (self.hi is not None and value > self.hi):
            raise ConfigError(f"param {name}", f"got {value!r}", self._accepted())
        if self.choices is not None and value not in self.choices:
            raise ConfigError(f"param {name}", f"got {value!r}", self._accepted())
        return value

    def _accepted(self) -> str:
        if self.choices is not None:
            return "one of " + ", ".join(map(str, self.choices))
        rng = ""
        if self.lo is not None or self.hi is not None:
            rng = f" in [{'-inf' if self.lo is None else self.lo}, {'inf' if self.hi is None else self.hi}]"
        return f"{self.type.__name__}{rng}"


class Strategy:
    """Base class. Subclasses set ``name``, ``summary``, ``default_scorer``, ``params``."""

    name: str = ""
    summary: str = ""
    default_scorer: str | None = None
    params: dict[str, ParamSpec] = {}

    def wants_scorer(self, options: dict[str, Any]) -> bool:
        """Whether, with these settings, the strategy uses a scorer (the default one if none given)."""
        return self.default_scorer is not None

    def options(self, given: dict[str, Any]) -> dict[str, Any]:
        """Validate ``--param`` settings against :attr:`params`; fill defaults."""
        out = {k: spec.default for k, spec in self.params.items()}
        for k, v in given.items():
            spec = self.params.get(k)
            if spec is None:
                accepted = ", ".join(self.params) or "none for this strategy"
                raise ConfigError("param", f"unknown parameter {k!r} for strategy {self.name!r}", accepted)
            out[k] = spec.parse(k, v)
        return out

    def init(self, ctx: Context) -> Any:
        raise NotImplementedError

    async def step(self, state: Any, ctx: Context) -> tuple[Any, dict[str, Any]]:
        raise NotImplementedError

    def done(self, state: Any) -> bool:
        raise NotImplementedError

    async def close(self, state: Any, ctx: Context) -> None:
        """Cancel outstanding work (called by the runner whatever happened)."""

    def select(self, state: Any, ctx: Context):
        raise NotImplementedError
