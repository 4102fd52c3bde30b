"""The scorer protocol: batch-first, log-space.

An outcome scorer maps whole solutions to log-scores (``log P(correct)``-like; ``-inf`` means
impossible). Scorers that call a model do so through the request's
:class:`~infscale.meter.Meter`, so every call they make is charged to the request's usage and
budget; scorers that call no model accept ``meter=None``. A call the budget refuses leaves its
text unscored: its score is NaN (callers treat NaN as "no score"). Probabilities become
log-scores in one place, :func:`prob_to_logscore`.

A verifier can also explain itself (:meth:`Scorer.explain`): one :class:`Verdict` per text —
the log-score, whether the verifier accepts the solution, and a feedback text saying what is
wrong and how to fix it (``arith-check``: the wrong computation and its right value;
``code-tests``: the failing test and its output, truncated; ``judge`` and ``self-eval``: a
critique the model writes). Refinement (:mod:`infscale.strategies.refine`) feeds it back.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..types import Problem

if TYPE_CHECKING:  # pragma: no cover
    from ..meter import Meter

__all__ = ["Scorer", "Verdict", "prob_to_logscore", "UNSCORED", "PASS_LOGSCORE"]

UNSCORED = math.nan  # the score of a text whose scoring call the budget refused


PASS_LOGSCORE = math.log(0.5)  # a score above this (P(correct) > 0.5) passes, unless a scorer says otherwise


@dataclass(frozen=True)
class Verdict:
    """A verifier's explained judgement of one solution.

    ``score`` is the log-score :meth:`Scorer.score` gives (NaN: the budget refused the call);
    ``passed`` whether the verifier accepts the solution (refinement stops there); ``feedback``
    what is wrong and how to fix it, in words the policy model reads ("" when it has nothing to
    say, e.g. for a solution it accepts)."""

    score: float
    passed: bool
    feedback: str = ""


def prob_to_logscore(p: float) -> float:
    """The one boundary where probabilities become log-scores (0 → -inf)."""
    if p <= 0.0:
        return -math.inf
    return math.log(min(p, 1.0))


class Scorer:
    """Base class. ``kind`` is ``outcome`` (whole solutions) or ``process`` (latest step).

    Outcome scorers implement :meth:`score`. Process scorers implement :meth:`score_steps`
    (the log-score of each partial solution's latest step, given the text before it); their
    :meth:`score` defaults to scoring a whole solution as one step. ``process_capable`` is True
    on every scorer that implements :meth:`score_steps`, whatever its ``kind``.

    ``requires`` names the generator capabilities (attributes of
    :class:`~infscale.backends.base.Capabilities`) the scorer cannot work without; the runner
    checks them before any call is made, and the scorer checks them again before its own.

    A **generation-time** scorer (``reads_generation``, e.g. ``self-certainty``) scores a
    statistic the generator computes while it writes the response: a strategy that uses it adds
    :meth:`request_changes` to its generation requests and calls :meth:`score_generated` with
    the completions (or a step's per-token values) instead of :meth:`score`. ``ordinal`` scorers
    give scores that rank responses but are not log-probabilities; strategies that read a score
    as a probability refuse them.
    """

    name: str = "scorer"
    kind: str = "outcome"
    process_capable: bool = False
    requires: tuple[str, ...] = ()
    writes_feedback: bool = False  # explain() generates its feedback with a model (about a solution's tokens)
    reads_generation: bool = False  # scores the strategy's own completions (score_generated), not texts
    ordinal: bool = False  # scores rank, but are not log-probabilities

    def request_changes(self) -> dict:
        """Fields a strategy sets on its generation requests for this scorer (generation-time scorers)."""
        return {}

    def score_generated(self, completions: list) -> list[float]:
        """One score per completion (generation-time scorers only)."""
        raise NotImplementedError(f"scorer {self.name!r} scores texts, not completions")

    def result_info(self, meter: "Meter") -> dict:
        """What a result should say about how this scorer's scores were obtained (``Result.info``)."""
        return {}

    async def check(self, meter: "Meter") -> None:
        """Raise a one-line ConfigError if the meter's generator lacks a capability in :attr:`requires`."""
        for cap in self.requires:
            await meter.require(cap, who=f"scorer {self.name!r}", param="scorer",
                                accepted="a generator that reports them, or a scorer that needs no "
                                         "log-probabilities, e.g. arith-check, prm-http, code-tests")

    async def score(self, problem: Problem, texts: list[str], meter: "Meter | None") -> list[float]:
        """One log-score per text, in order."""
        if self.kind == "process":
            return await self.score_steps(problem, [""] * len(texts), texts, meter)
        raise NotImplementedError

    async def score_steps(self, problem: Problem, prefixes: list[str], steps: list[str],
                          meter: "Meter | None") -> list[float]:
        """Log-score of ``steps[i]`` as the next step after ``prefixes[i]`` (process scorers)."""
        raise NotImplementedError(f"scorer {self.name!r} scores whole solutions only (kind: {self.kind})")

    async def explain(self, problem: Problem, texts: list[str], meter: "Meter | None") -> list[Verdict]:
        """One :class:`Verdict` per text, in order. This default serves scorers that cannot say
        more than their score (e.g. ``prm-http``): a solution passes when P(correct) > 0.5 and
        the feedback states the score, nothing more. Verifiers that can explain override it."""
        scores = await self.score(problem, texts, meter)
        return [self.verdict_from_score(s) for s in scores]

    def verdict_from_score(self, s: float) -> Verdict:
        if math.isnan(s):
            return Verdict(s, False, "")
        if s > PASS_LOGSCORE:
            return Verdict(s, True, "")
        return Verdict(s, False, f"A verifier ({self.name}) rates this solution's chance of being correct at "
                                 f"{math.exp(s):.2f}. Check every step again.")
