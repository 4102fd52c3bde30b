"""Strategies by name. See :mod:`infscale.strategies.sample` for the sample-level family."""

from __future__ import annotations

from ..errors import ConfigError
from .base import Context, ParamSpec, Strategy
from .sample import SAMPLE_STRATEGIES, SampleStrategy
from .search import SEARCH_STRATEGIES, SearchStrategy

__all__ = ["STRATEGIES", "get_strategy", "Strategy", "Context", "ParamSpec", "SampleStrategy", "SearchStrategy"]

STRATEGIES: dict[str, Strategy] = {**SAMPLE_STRATEGIES, **SEARCH_STRATEGIES}


def get_strategy(name: str | Strategy) -> Strategy:
    if isinstance(name, Strategy):
        return name
    s = STRATEGIES.get(name)
    if s is None:
        raise ConfigError("strategy", f"unknown strategy {name!r}", ", ".join(STRATEGIES))
    return s
