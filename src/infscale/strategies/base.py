"""What a strategy is, and the context the runner gives it.

A strategy is ``init(ctx) -> state`` and ``async step(state, ctx) -> (state, info)`` plus
``select(state, ctx) -> Result``; the runner (:mod:`infscale.strategies.runner`) is the only
loop. Strategies reach the model only through the context's :class:`~infscale.meter.Meter`,
which charges every call (strategy and scorer alike) to one :class:`~infscale.types.Usage`,
returns one completion per request (``finish_reason="budget"`` for a request the
:class:`~infscale.params.Budget` refused) and raises :class:`~infscale.meter.BudgetExhausted`
once it admits nothing more.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..tasks import AnswerTask
from ..backends.base import Generator
from ..errors import ConfigError
from ..meter import BudgetExhausted, Meter
from ..params import MAX_SETTING, Budget, SamplingParams
from ..rng import derive_seed
from ..scorers.base import Scorer
from ..tasks.prompts import build_request
from ..types import Completion, GenRequest, Problem, Usage

__all__ = ["BudgetExhausted", "Context", "Strategy", "ParamSpec", "Requirement"]


@dataclass
class Context:
    """Everything a strategy may use for one problem: the metered model, scorer and task."""

    problem: Problem
    meter: Meter
    task: AnswerTask
    params: SamplingParams
    n: int
    seed: int
    scorer: Scorer | None = None
    options: dict[str, Any] = field(default_factory=dict)

    # -- the meter's state, read through the context ------------------------------------
    @property
    def generator(self) -> Generator:
        return self.meter.generator

    @property
    def budget(self) -> Budget:
        return self.meter.budget

    @property
    def usage(self) -> Usage:
        return self.meter.usage

    @property
    def started(self) -> float:
        return self.meter.started

    @property
    def stopped_by_budget(self) -> bool:
        return self.meter.stopped_by_budget

    @stopped_by_budget.setter
    def stopped_by_budget(self, value: bool) -> None:
        self.meter.stopped_by_budget = value

    @property
    def chat(self) -> bool:
        return self.meter.chat

    def remaining_calls(self) -> int | None:
        return self.meter.remaining_calls()

    def exhausted(self) -> bool:
        return self.meter.exhausted()

    # -- metered model calls ----------------------------------------------------------
    def sample_request(self, index: int, **param_changes: Any) -> GenRequest:
        """The request for sample ``index`` of this problem, seeded by (seed, problem id, index)."""
        params = self.params.with_(**param_changes) if param_changes else self.params
        seed = derive_seed(self.seed, self.problem.id, index)
        return build_request(self.problem, params, chat=self.chat, seed=seed, key=f"{self.problem.id}/{index}")

    async def generate(self, requests: list[GenRequest]) -> list[Completion]:
        """:meth:`Meter.generate <infscale.meter.Meter.generate>`: one completion per request."""
        return await self.meter.generate(requests)

    async def generate_settled(self, requests: list[GenRequest]) -> list[Completion]:
        """:meth:`Meter.generate_settled <infscale.meter.Meter.generate_settled>`."""
        return await self.meter.generate_settled(requests)

    def stream(self, requests: list[GenRequest]) -> AsyncIterator[tuple[int, Completion]]:
        """:meth:`Meter.stream <infscale.meter.Meter.stream>`: every request, as it finishes."""
        return self.meter.stream(requests)

    def free(self, handle) -> None:
        self.meter.free(handle)


@dataclass(frozen=True)
class Requirement:
    """A generator capability a strategy needs with given settings, checked before any call.

    ``capability`` is an attribute of :class:`~infscale.backends.base.Capabilities`, or a tuple
    of them of which any one suffices; ``param`` names the setting that asked for it and
    ``accepted`` what would work without it."""

    capability: str | tuple[str, ...]
    param: str
    who: str
    accepted: str | None = None


@dataclass(frozen=True)
class ParamSpec:
    """A strategy-specific setting, given on the CLI as ``--param name=value``.

    ``lo``/``hi`` bound what the setting means (``alpha`` in [0, 1]). ``max`` is a work limit:
    the largest value accepted by default for a setting that scales the work of a request
    (iterations, steps, frontier size, ...); the server can lower or raise it (``serve
    --max-param NAME=MAX``). An integer setting without ``hi`` gets ``max`` =
    :data:`~infscale.params.MAX_SETTING` unless it names its own, so every strategy's counts
    are bounded, including strategies added later.
    """

    type: type
    default: Any
    doc: str
    lo: float | None = None
    hi: float | None = None
    choices: tuple[Any, ...] | None = None
    max: float | None = None

    def __post_init__(self) -> None:
        if self.max is None and self.type is int and self.hi is None and self.choices is None:
            object.__setattr__(self, "max", MAX_SETTING)

    def parse(self, name: str, raw: Any, limit: float | None = None) -> Any:
        """The value of ``raw``, checked; ``limit`` replaces :attr:`max` (a server's own limit)."""
        try:
            if self.type is bool and isinstance(raw, str):
                if raw.lower() not in ("1", "0", "true", "false", "yes", "no"):
                    raise ValueError(raw)
                value = raw.lower() in ("1", "true", "yes")
            elif self.type is int and isinstance(raw, float):
                if not raw.is_integer():
                    raise ValueError(raw)
                value = int(raw)
            else:
                value = self.type(raw)
        except (TypeError, ValueError, OverflowError):
            raise ConfigError(f"param {name}", f"cannot read {raw!r} as {self.type.__name__}", self._accepted()) from None
        if (self.lo is not None and value < self.lo) or (self.hi is not None and value > self.hi):
            raise ConfigError(f"param {name}", f"got {value!r}", self._accepted(limit))
        if self.choices is not None and value not in self.choices:
            raise ConfigError(f"param {name}", f"got {value!r}", self._accepted())
        cap = self.max if limit is None else limit
        if cap is not None and value > cap:
            raise ConfigError(f"param {name}", f"{value!r} exceeds the work limit {cap:g}", self._accepted(limit))
        return value

    def _accepted(self, limit: float | None = None) -> str:
        if self.choices is not None:
            return "one of " + ", ".join(map(str, self.choices))
        hi = self.hi
        cap = self.max if limit is None else limit
        if cap is not None and (hi is None or cap < hi):
            hi = cap
        rng = ""
        if self.lo is not None or hi is not None:
            rng = f" in [{'-inf' if self.lo is None else self.lo}, {'inf' if hi is None else f'{hi:g}'}]"
        return f"{self.type.__name__}{rng}"


#: A setting every strategy takes: a reasoning model's thinking budget in tokens (budget forcing,
#: Muennighoff et al. 2025; the runner moves it into the sampling parameters, the meter enforces it).
THINK_TOKENS = ParamSpec(int, None, "thinking budget: after T tokens of <think> the answer is forced (s1 budget "
                         "forcing); sample-level strategies", lo=1, max=MAX_SETTING * 32)


class Strategy:
    """Base class. Subclasses set ``name``, ``summary``, ``default_scorer``, ``params``."""

    name: str = ""
    summary: str = ""
    default_scorer: str | None = None
    params: dict[str, ParamSpec] = {}
    generation_scorers: bool = False  # hands a generation-time scorer (self-certainty) its completions
    # keeps sequences of a kv_fork generator between its calls (forks, kept handles): at most about
    # 2n at once (measured on every search strategy: 0.4n-2n); the harness admits such runs so that
    # their kept sequences never fill the engine (see evaluation.harness.SequenceSlots)
    holds_sequences: bool = False

    def wants_scorer(self, options: dict[str, Any]) -> bool:
        """Whether, with these settings, the strategy uses a scorer (the default one if none given)."""
        return self.default_scorer is not None

    def requires(self, options: dict[str, Any]) -> list[Requirement]:
        """Generator capabilities these settings need (the runner checks them before any call)."""
        return []

    def options(self, given: dict[str, Any], limits: Mapping[str, float] | None = None) -> dict[str, Any]:
        """Validate ``--param`` settings against :attr:`params`; fill defaults. ``limits``
        (setting name -> maximum) replaces the settings' own work limits (a server's)."""
        out = {k: spec.default for k, spec in self.params.items()}
        for k, v in given.items():
            spec = self.params.get(k)
            if spec is None and k == "think_tokens":
                out[k] = THINK_TOKENS.parse(k, v, None if limits is None else limits.get(k))
                continue
            if spec is None:
                accepted = ", ".join(self.params) or "none for this strategy"
                raise ConfigError("param", f"unknown parameter {k!r} for strategy {self.name!r}", accepted)
            out[k] = spec.parse(k, v, None if limits is None else limits.get(k))
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
