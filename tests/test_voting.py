"""The voting module: folding equivalent answers with log-weights, and the choice rules."""

from __future__ import annotations

import math

import pytest

from infscale.tasks import get_task
from infscale.strategies import voting
from infscale.types import Candidate


def cand(answer, score=None, logprob=0.0, tokens=1, text=None):
    return Candidate(text=text or str(answer), answer=answer, score=score, logprob=logprob, generated_tokens=tokens)


MATH = get_task("math")


def test_fold_groups_equivalent_answers_and_sums_weights_in_log_space():
    cands = [cand("1/2"), cand("7"), cand("0.5"), cand(None), cand("7.0")]
    logw = [math.log(0.2), math.log(0.1), math.log(0.3), 0.0, math.log(0.1)]
    classes = voting.fold(cands, logw, MATH)
    assert [c.answer for c in classes] == ["1/2", "7"]  # heaviest first, representative first seen
    assert classes[0].logw == pytest.approx(math.log(0.5))
    assert classes[1].logw == pytest.approx(math.log(0.2))
    assert [c.count for c in classes] == [2, 2]  # the answerless candidate carries nothing
    dist = voting.distribution(classes)
    assert [d.weight for d in dist] == pytest.approx([0.5 / 0.7, 0.2 / 0.7])


def test_fold_ties_go_to_the_class_seen_first_and_all_impossible_counts_each_once():
    classes = voting.fold([cand("3"), cand("4"), cand("4"), cand("3")], [0.0] * 4, MATH)
    assert [c.answer for c in classes] == ["3", "4"]
    classes = voting.fold([cand("3"), cand("4"), cand("4")], [-math.inf] * 3, MATH)
    assert [c.answer for c in classes] == ["4", "3"]
    assert [d.weight for d in voting.distribution(classes)] == pytest.approx([2 / 3, 1 / 3])
    assert voting.fold([cand(None)], [0.0], MATH) == []
    with pytest.raises(ValueError):
        voting.fold([cand("1")], [], MATH)


def test_choose_rules():
    cands = [cand(None), cand("5", score=-2.0), cand("6", score=0.0, logprob=-4.0, tokens=2),
             cand("5", score=-1.0), cand("8", score=0.0, logprob=-1.0, tokens=2)]
    classes = voting.fold(cands, [0.0] * len(cands), MATH)
    assert voting.choose("vote", classes, cands) == ["5", "6", "8"]
    assert voting.choose("first", classes, cands)[0] == "5"
    # best: score ties broken by the mean token log-probability (-0.5 beats -2.0)
    assert voting.choose("best", classes, cands) == ["8", "5", "6"]
    # bom: classes with at least 30% of the candidates (only "5", 2 of 5), by best score
    assert voting.choose("bom", classes, cands, alpha=0.3) == ["5"]
    assert voting.choose("bom", classes, cands, alpha=0.0, k=2) == ["6", "8"]
    assert voting.choose("vote", [], []) == []
    with pytest.raises(ValueError, match="unknown rule"):
        voting.choose("magic", classes, cands)


def test_answer_classes_are_a_cache_of_the_pool_not_a_task_and_subsamples_compare_nothing():
    """The harness groups a pool's answers once (:class:`AnswerClasses`, no task protocol: it
    grades nothing) and folds subsamples by looking them up: the same classes as folding each
    subsample by the task, without a single further equivalence call."""
    import itertools

    from infscale.tasks import AnswerClasses, AnswerTask, MathTask

    task = MathTask()
    compare = task.equivalent
    task.calls = 0

    def counted(a, b):
        task.calls += 1
        return compare(a, b)

    task.equivalent = counted
    pool = ["\\frac{1}{2}", "0.5", None, "3", "1/2", "3.0", "7"]
    classes = AnswerClasses(task, pool)
    assert not isinstance(classes, AnswerTask) and not hasattr(classes, "grade")
    built = task.calls
    assert classes.group(pool) == [0, 0, None, 1, 0, 1, 2]
    for sub in itertools.combinations(range(len(pool)), 3):
        cands = [cand(pool[i]) for i in sub]
        task.calls = 0
        cached = voting.fold(cands, [0.0] * 3, task, classes=classes)
        assert task.calls == 0
        direct = voting.fold(cands, [0.0] * 3, task)
        assert [(c.answer, c.logw, c.members) for c in cached] == [(c.answer, c.logw, c.members) for c in direct]
    assert built > 0
    with pytest.raises(ValueError, match="another task"):
        voting.fold([cand("3")], [0.0], MathTask(), classes=classes)
