"""Step-level search: one core of small policies, many configurations.

:mod:`.core` holds the nodes, the search state and the loop (select → extend → weigh →
settle); :mod:`.extend` is the only code that touches generator handles; :mod:`.policies` the
small frozen policy objects; :mod:`.registry` the named strategies, each a configuration of
four policies. See docs/strategies.md for what each computes and what ``--n`` buys.
"""

from __future__ import annotations

from .core import Node, ParticleGibbs, SearchConfig, SearchState, SearchStrategy, aggregate
from .registry import SEARCH_STRATEGIES

__all__ = ["SearchConfig", "SearchStrategy", "SearchState", "ParticleGibbs", "Node", "SEARCH_STRATEGIES", "aggregate"]
