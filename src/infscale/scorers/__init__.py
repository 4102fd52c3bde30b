"""Scorers by name: each turns solutions into log-scores (see :mod:`infscale.scorers.base`)."""

from __future__ import annotations

from collections.abc import Callable

from ..errors import ConfigError
from .base import Scorer, prob_to_logscore
from .arith_check import ArithCheckScorer
from .code_exec import CodeTestsScorer
from .self_eval import SelfEvalScorer

__all__ = ["Scorer", "SCORERS", "get_scorer", "prob_to_logscore"]


def _prm_http() -> Scorer:
    """``prm-http`` from INFSCALE_PRM_URL / INFSCALE_PRM_MODEL (httpx is imported only here)."""
    from .reward_http import PRMHttpScorer  # noqa: PLC0415

    return PRMHttpScorer.from_env()


SCORERS: dict[str, Callable[[], Scorer]] = {
    "self-eval": SelfEvalScorer,
    "arith-check": ArithCheckScorer,
    "prm-http": _prm_http,
    "code-tests": CodeTestsScorer,
}


def get_scorer(name: str | Scorer | None) -> Scorer | None:
    if name is None or isinstance(name, Scorer):
        return name
    factory = SCORERS.get(name)
    if factory is None:
        raise ConfigError("scorer", f"unknown scorer {name!r}", ", ".join(SCORERS))
    return factory()
