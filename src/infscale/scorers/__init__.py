"""Scorers by name: each turns solutions into log-scores (see :mod:`infscale.scorers.base`)."""

from __future__ import annotations

from collections.abc import Callable

from ..errors import ConfigError
from .base import Scorer, prob_to_logscore
from .arith_check import ArithCheckScorer
from .self_eval import SelfEvalScorer

__all__ = ["Scorer", "SCORERS", "get_scorer", "prob_to_logscore"]

SCORERS: dict[str, Callable[[], Scorer]] = {
    "self-eval": SelfEvalScorer,
    "arith-check": ArithCheckScorer,
}


def get_scorer(name: str | Scorer | None) -> Scorer | None:
    if name is None or isinstance(name, Scorer):
        return name
    factory = SCORERS.get(name)
    if factory is None:
        raise ConfigError("scorer", f"unknown scorer {name!r}", ", ".join(SCORERS))
    return factory()
