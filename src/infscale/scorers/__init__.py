"""Scorers by name: each turns solutions into log-scores (see :mod:`infscale.scorers.base`).

A scorer is named by a spec ``NAME[:key=value,...]`` (``judge:model=gemma3-270m``,
``arith-check:eps=0.1``): the keys are the keyword arguments of the scorer's constructor, values
read as the type of that argument's default.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from ..errors import ConfigError
from .base import Scorer, Verdict, prob_to_logscore
from .arith_check import ArithCheckScorer
from .code_exec import CodeTestsScorer
from .self_eval import SelfEvalScorer
from .judge import JudgeScorer
from .fobar import FobarScorer
from .self_certainty import SelfCertaintyScorer

__all__ = ["Scorer", "Verdict", "SCORERS", "get_scorer", "parse_scorer_spec", "prob_to_logscore"]


def _prm_http() -> Scorer:
    """``prm-http`` from INFSCALE_PRM_URL / INFSCALE_PRM_MODEL (httpx is imported only here)."""
    from .reward_http import PRMHttpScorer  # noqa: PLC0415

    return PRMHttpScorer.from_env()


SCORERS: dict[str, Callable[[], Scorer]] = {
    "self-eval": SelfEvalScorer,
    "arith-check": ArithCheckScorer,
    "prm-http": _prm_http,
    "code-tests": CodeTestsScorer,
    "judge": JudgeScorer,
    "fobar": FobarScorer,
    "self-certainty": SelfCertaintyScorer,
}


def parse_scorer_spec(spec: str) -> tuple[str, dict[str, str]]:
    """``"judge:model=gemma3-270m,url=..."`` → ``("judge", {"model": "gemma3-270m", ...})``."""
    name, _, rest = spec.partition(":")
    options: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in rest.split(","))):
        key, eq, value = part.partition("=")
        if not eq or not key.strip():
            raise ConfigError("scorer", f"cannot read {part!r} in {spec!r}", "NAME[:key=value,...], e.g. "
                              "judge:model=gemma3-270m")
        options[key.strip()] = value.strip()
    return name.strip(), options


def _typed(factory: Callable[..., Scorer], name: str, options: dict[str, str]) -> dict[str, Any]:
    """The options as the factory's keyword arguments, each read as its default's type."""
    try:
        sig = inspect.signature(factory)
    except (TypeError, ValueError):  # pragma: no cover
        sig = None
    params = {} if sig is None else {k: p for k, p in sig.parameters.items()
                                     if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}
    out: dict[str, Any] = {}
    for key, raw in options.items():
        p = params.get(key)
        if p is None:
            raise ConfigError("scorer", f"unknown setting {key!r} for scorer {name!r}",
                              ", ".join(params) or f"none for {name}")
        default = p.default
        try:
            if isinstance(default, bool):
                if raw.lower() not in ("1", "0", "true", "false", "yes", "no"):
                    raise ValueError(raw)
                out[key] = raw.lower() in ("1", "true", "yes")
            elif isinstance(default, (int, float)):
                out[key] = type(default)(raw)
            else:
                out[key] = raw
        except ValueError:
            raise ConfigError("scorer", f"cannot read {key}={raw!r} for scorer {name!r}",
                              f"{type(default).__name__}") from None
    return out


def get_scorer(name: str | Scorer | None) -> Scorer | None:
    if name is None or isinstance(name, Scorer):
        return name
    base, options = parse_scorer_spec(name)
    factory = SCORERS.get(base)
    if factory is None:
        raise ConfigError("scorer", f"unknown scorer {base!r}", ", ".join(SCORERS))
    return factory(**_typed(factory, base, options))
