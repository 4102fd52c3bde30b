"""Voting: fold equivalent answers into classes with log-weights, then choose by a rule.

Every strategy that ends in a vote — the sample-level family, the search core's final vote —
and the evaluation harness (through :func:`infscale.strategies.sample.select_from`) use these
two functions, so "the same answer" and "the winning answer" mean one thing everywhere.

:func:`fold` groups candidates by the task's answer equivalence
(:func:`infscale.tasks.group_answers`) and gives each class the log-sum-exp of its members'
log-weights; candidates without an extracted answer carry no weight. If every weight is
``-inf`` nothing is known about the candidates, so each counts once (the same fallback as the
resamplers' uniform weights). Classes come heaviest first; ties go to the class seen first.

:func:`choose` applies a rule to the folded classes:

========  ======================================================================================
rule      the chosen answer
========  ======================================================================================
vote      the heaviest class (self-consistency, weighted vote, importance-weighted vote)
first     the first candidate's answer (repeated sampling reports its first sample)
best      the answer of the highest-scored candidate; ties on the score go to the candidate the
          model was most confident in (mean token log-probability), then to the first of equals
bom       Best-of-Majority (Di et al. 2025): classes holding at least ``alpha`` of the
          candidates, ranked by their best member's score (then by size), top ``k``
========  ======================================================================================

Each rule returns a ranked list of answers, the chosen one first, every folded class listed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..tasks import AnswerClasses, AnswerTask, group_answers
from ..types import AnswerMass, Candidate

__all__ = ["AnswerClass", "fold", "distribution", "choose", "RULES"]

RULES = ("vote", "first", "best", "bom")


@dataclass(frozen=True)
class AnswerClass:
    """Equivalent answers: a representative (the first seen), the log of the class's total
    weight, and its members in order."""

    answer: str
    logw: float
    members: tuple[Candidate, ...]

    @property
    def count(self) -> int:
        return len(self.members)


def fold(candidates: list[Candidate], logw: list[float], task: AnswerTask, *,
         classes: AnswerClasses | None = None) -> list[AnswerClass]:
    """Equivalence classes of the candidates' answers with log-weights, heaviest first.

    ``logw[i]`` is candidate ``i``'s log-weight (``-inf``: no weight). Candidates whose answer
    is ``None`` are left out. If every log-weight of an answered candidate is ``-inf``, each
    counts once. ``classes``: answer classes computed once over a larger set by ``task`` (the
    evaluation harness's pool), used instead of grouping these answers again."""
    if len(logw) != len(candidates):
        raise ValueError(f"fold: {len(candidates)} candidates but {len(logw)} log-weights")
    pairs = [(c, float(w)) for c, w in zip(candidates, logw) if c.answer is not None]
    if not pairs:
        return []
    top = max(w for _, w in pairs)
    if top == math.inf:
        rel = [1.0 if w == math.inf else 0.0 for _, w in pairs]
        top = 0.0
    elif top == -math.inf or math.isnan(top):
        rel, top = [1.0] * len(pairs), 0.0  # nothing known: count each once
    else:
        rel = [math.exp(w - top) if not math.isnan(w) else 0.0 for _, w in pairs]
    answers = [c.answer for c, _ in pairs]
    if classes is not None and classes.task is not task:
        raise ValueError("fold: the answer classes were computed by another task")
    ids = classes.group(answers) if classes is not None else group_answers(task, answers)
    order: list[int] = []
    mass: dict[int, float] = {}
    members: dict[int, list[Candidate]] = {}
    for (c, _), r, k in zip(pairs, rel, ids):
        if k not in members:
            order.append(k)
            members[k], mass[k] = [], 0.0
        members[k].append(c)
        mass[k] += r
    first = {k: i for i, k in enumerate(order)}
    ranked = sorted(order, key=lambda k: (-mass[k], first[k]))
    return [AnswerClass(answer=members[k][0].answer, logw=top + math.log(mass[k]) if mass[k] > 0 else -math.inf,
                        members=tuple(members[k])) for k in ranked]


def distribution(classes: list[AnswerClass]) -> list[AnswerMass]:
    """The answer distribution: each class's normalised weight and size, in the classes' order."""
    if not classes:
        return []
    top = max(c.logw for c in classes)
    if top == -math.inf:
        total = float(sum(c.count for c in classes))
        return [AnswerMass(answer=c.answer, weight=c.count / total, count=c.count) for c in classes]
    rel = [math.exp(c.logw - top) for c in classes]
    total = sum(rel)
    return [AnswerMass(answer=c.answer, weight=r / total, count=c.count) for c, r in zip(classes, rel)]


def choose(rule: str, classes: list[AnswerClass], candidates: list[Candidate], *, k: int = 1,
           alpha: float = 0.0) -> list[str]:
    """Answers ranked by ``rule`` (one of :data:`RULES`), the chosen one first; empty if no
    candidate has an answer. ``candidates`` are all candidates in order (``first`` and ``bom``
    read them); ``k`` and ``alpha`` are Best-of-Majority's settings."""
    answers = [c.answer for c in classes]
    if rule == "vote":
        return answers
    if rule == "first":
        head = next((c.answer for c in candidates if c.answer is not None), None)
        return _lead(head, classes)
    if rule == "best":
        scored = [c for c in candidates if c.answer is not None and c.score is not None]
        if not scored:
            return answers
        best = max(scored, key=lambda c: (c.score, c.mean_logprob))  # max is stable: first of equals
        return _lead(best.answer, classes)
    if rule == "bom":
        n = max(1, len(candidates))
        kept = [c for c in classes if c.count / n >= alpha] or list(classes)

        def best_score(cls: AnswerClass) -> float:
            s = [m.score for m in cls.members if m.score is not None]
            return max(s) if s else -math.inf

        ranked = sorted(kept, key=lambda c: (-best_score(c), -c.count))
        return [c.answer for c in ranked[:k]]
    raise ValueError(f"choose: unknown rule {rule!r}; accepted: {', '.join(RULES)}")


def _lead(answer: str | None, classes: list[AnswerClass]) -> list[str]:
    """The classes' answers with the class holding ``answer`` moved to the front."""
    answers = [c.answer for c in classes]
    if answer is None:
        return answers
    at = next((i for i, c in enumerate(classes) if any(m.answer == answer for m in c.members)), None)
    if at is None:
        return [answer] + answers
    return [answers[at]] + answers[:at] + answers[at + 1:]
