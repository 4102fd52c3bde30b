"""FOBAR backward verification: does the candidate answer let the model recover a masked number?

Jiang et al. (2023), "Forward-Backward Reasoning in Large Language Models for Mathematical
Verification" (FOBAR): a number of the question is replaced by ``x`` and the candidate answer
is stated — "<question with x> If we know the answer to the above question is A, what is the
value of unknown variable x?" — and the model solves for ``x``. A right answer tends to give
back the masked number; a wrong one tends not to.

Score of a solution: over ``masks`` masked numbers (the first numbers of the question, in
order) and ``samples`` backward solutions each, with ``h`` of the ``t`` backward answers equal
to the masked number, ``log((h + 0.5) / (t + 1))`` — the agreement rate, smoothed so that no
answer is impossible after a few trials. Solutions with the same extracted answer share their
backward calls (they are made once per distinct answer); a solution without an answer scores
``-inf``; a question without a number to mask scores every solution ``log 0.5`` (no
evidence). As the weight of ``weighted`` (weight = agreement rate, summed over a class's
members) it combines forward votes and backward agreement as FOBAR does; ``best-of-n`` takes
the best-agreeing answer.

Cost: ``masks × samples`` calls per distinct answer, each a whole backward solution (up to
``max_tokens`` generated tokens), charged to the request's budget. It runs on the policy model
or, with ``model=`` / ``url=``, on a model of its own (:mod:`infscale.scorers.separate`). Math
problems only (the ``math`` task): other tasks fail with a one-line ConfigError.
"""

from __future__ import annotations

import math
import re

from ..errors import ConfigError
from ..meter import BUDGET, Meter
from ..params import SamplingParams
from ..rng import derive_seed
from ..tasks import get_task
from ..tasks.math import as_number
from ..tasks.prompts import build_request
from ..types import Problem
from .base import UNSCORED, Scorer
from .self_eval import SelfEvalScorer
from .separate import ScorerModel

__all__ = ["FobarScorer", "mask_numbers", "backward_question"]

_NUMBER = re.compile(r"(?<![\w.])\d+(?:,\d{3})*(?:\.\d+)?(?![\w.]*\d)")
_NO_EVIDENCE = math.log(0.5)


def mask_numbers(question: str, k: int) -> list[tuple[str, float]]:
    """Up to ``k`` versions of ``question``, each with one number replaced by ``x`` (the first
    numbers, in order of appearance), with the masked value."""
    out = []
    for m in _NUMBER.finditer(question):
        if len(out) >= k:
            break
        value = float(m.group().replace(",", ""))
        out.append((question[: m.start()] + "x" + question[m.end():], value))
    return out


def backward_question(masked: str, answer: str) -> str:
    """FOBAR's backward question for a masked question and a candidate answer."""
    return (f"{masked.rstrip()} If we know the answer to the above question is {answer}, "
            f"what is the value of unknown variable x?")


class FobarScorer(Scorer):
    """Outcome scorer by backward verification (see the module docs)."""

    name = "fobar"
    kind = "outcome"

    def __init__(self, *, masks: int = 2, samples: int = 1, temperature: float = 0.0, max_tokens: int = 256,
                 model: str | None = None, url: str | None = None):
        for key, value, lo in (("masks", masks, 1), ("samples", samples, 1), ("max_tokens", max_tokens, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < lo:
                raise ConfigError(f"scorer fobar {key}", f"got {value!r}", f"an integer >= {lo}")
        self.masks = masks
        self.samples = samples
        self.params = SamplingParams(temperature=temperature, max_tokens=max_tokens)
        self.where = ScorerModel(self.name, model=model, url=url)

    async def check(self, meter: Meter) -> None:
        await super().check(await self.where.meter(meter))

    async def score(self, problem, texts, meter):
        if problem.task != "math":
            raise ConfigError("scorer", f"fobar verifies math answers, not the {problem.task!r} task",
                              "the math task, or another scorer (judge, self-eval)")
        if not texts:
            return []
        task = get_task("math")
        answers = [task.extract(t) for t in texts]
        masked = mask_numbers(SelfEvalScorer._question(problem), self.masks)
        if not masked:
            return [-math.inf if a is None else _NO_EVIDENCE for a in answers]
        distinct = list(dict.fromkeys(a for a in answers if a is not None))
        m = await self.where.meter(meter)
        reqs, slots = [], []
        for a in distinct:
            for j, (q, value) in enumerate(masked):
                for s in range(self.samples):
                    bp = Problem(question=backward_question(q, a), id=f"{problem.id}/fobar", task="math")
                    seed = derive_seed("fobar", problem.id, a, j, s)
                    reqs.append(build_request(bp, self.params.with_(seed=seed), chat=m.chat, seed=seed,
                                              key=f"{problem.id}/fobar"))
                    slots.append((a, value))
        outs = await m.generate(reqs) if reqs else []
        hits: dict[str, int] = dict.fromkeys(distinct, 0)
        trials: dict[str, int] = dict.fromkeys(distinct, 0)
        for (a, value), c in zip(slots, outs):
            if c.finish_reason == BUDGET:
                continue
            trials[a] += 1
            x = as_number(task.extract(c.text))
            hits[a] += x is not None and math.isclose(x, value, rel_tol=1e-6, abs_tol=1e-6)
        scores = {a: (math.log((hits[a] + 0.5) / (trials[a] + 1)) if trials[a] else UNSCORED) for a in distinct}
        return [-math.inf if a is None else scores[a] for a in answers]

