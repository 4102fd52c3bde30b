"""Self-certainty: how far the model's next-token distributions were from uniform while it wrote.

Kang, Zhao and Song 2025, "Scalable Best-of-N Selection for Large Language Models via
Self-Certainty". For a response ``y`` of ``n`` tokens to a prompt ``x``, over a vocabulary of
``V`` tokens,

    self-certainty(y | x) = (1/n) * sum_i KL(U || p(. | x, y_<i))
                          = -(1/(n V)) * sum_i sum_j log(V * p(j | x, y_<i))

with ``p`` the model's distribution (softmax of the raw logits: temperature 1, no truncation)
over the **whole** vocabulary, and ``U`` the uniform one. It is 0 for a model that spreads its
mass evenly and grows as the mass concentrates (the model is sure). The paper selects the
response with the highest self-certainty (best-of-N) or lets answers vote with Borda weights
``(N - r + 1) ** p`` by their rank ``r`` (``weighted`` with ``by=borda``).

The value depends only on the prompt and the response's own tokens, so infscale computes it
while the response is generated, from the logits the engine already holds
(:func:`infscale.backends.sampling.self_certainty`, asked with ``GenRequest.self_certainty``),
instead of re-reading the response: the scorer makes no model call and costs nothing but the
per-token arithmetic. That makes it a **generation-time** scorer (``reads_generation``): the
strategy asks its generation requests for the statistic and hands the scorer the completions
(:meth:`SelfCertaintyScorer.score_generated`). Best-of-n, weighted, bom, temperature-mix and the
step-level search strategies do (a step's score is the mean over its tokens); a strategy that
would score texts it did not generate this way (refine, the fusion strategies, auto, the tree
searches' rollouts) gets a one-line ConfigError.

Scores are the self-certainty in nats — an ordinal score, not a log-probability: higher is
more certain. ``weighted`` refuses ``by=score`` with it (``exp`` of a divergence is no
probability); use ``by=borda``.

Over an OpenAI-compatible server only the top logprobs are known, so the value is an
approximation, flagged in ``Result.info["self_certainty"]`` (see
:mod:`infscale.backends.openai_http`); a server without top logprobs is refused before any call.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError
from ..types import Completion, Problem
from .base import UNSCORED, Scorer

if TYPE_CHECKING:  # pragma: no cover
    from ..meter import Meter

__all__ = ["SelfCertaintyScorer", "mean_self_certainty"]

HOW = {
    "exact": "exact: KL(U || p) over the full vocabulary, from the engine's logits",
    "top-k": "approximate: -log(mass outside the top 20 logprobs), the server returns no full distribution",
}


def mean_self_certainty(values: list[float] | None) -> float:
    """The mean of a response's per-token self-certainties; NaN (unscored) without any."""
    if not values:
        return UNSCORED
    return float(math.fsum(values) / len(values))


class SelfCertaintyScorer(Scorer):
    """Self-certainty (Kang et al. 2025) of the generation itself; see the module docs."""

    name = "self-certainty"
    kind = "outcome"
    process_capable = True
    requires = ("self_certainty",)
    reads_generation = True  # scores completions generated with GenRequest.self_certainty
    ordinal = True  # scores rank responses; they are not log-probabilities

    def request_changes(self) -> dict[str, Any]:
        """What a strategy adds to every generation request whose result this scorer reads."""
        return {"self_certainty": True}

    def score_generated(self, completions: list[Completion | list[float] | None]) -> list[float]:
        """One score per response: the mean self-certainty of its tokens (a completion, or the
        per-token values of a step gathered over several completions); NaN without any."""
        out = []
        for c in completions:
            values = c.self_certainties if isinstance(c, Completion) else c
            out.append(mean_self_certainty(values))
        return out

    def result_info(self, meter: "Meter") -> dict[str, Any]:
        """How the scores were computed, for ``Result.info`` (exact, or approximate over HTTP)."""
        how = meter.capabilities.self_certainty
        return {"self_certainty": HOW.get(how, how)}

    def _texts_only(self) -> ConfigError:
        return ConfigError("scorer", "self-certainty scores the token distributions of the strategy's own "
                           "generation and cannot score texts alone",
                           "best-of-n, weighted (by=borda), bom, temperature-mix or a step-level search strategy")

    async def score(self, problem: Problem, texts: list[str], meter: "Meter | None") -> list[float]:
        raise self._texts_only()

    async def score_steps(self, problem: Problem, prefixes: list[str], steps: list[str],
                          meter: "Meter | None") -> list[float]:
        raise self._texts_only()
