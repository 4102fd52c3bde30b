"""MCTS and AB-MCTS on the real embedded model (slow: loads SmolLM2-135M): they answer, respect a
budget, fork kept sequences instead of re-reading, free every sequence, and write a trace that
`infscale trace show` draws as a tree."""

from __future__ import annotations

import asyncio

import pytest

import infscale
from infscale import Budget
from infscale.params import SamplingParams

pytestmark = pytest.mark.slow

PROBLEM = infscale.Problem(question="Tom has 3 boxes with 4 apples each. He eats 2 apples. How many are left?",
                           id="tree")
PARAMS = SamplingParams(temperature=0.8, max_tokens=96)


def _released(engine) -> bool:
    asyncio.run(asyncio.sleep(0.1))
    return engine.stats()["live"] == 0 and engine.stats()["free_sequences"] == engine.n_seq_max


@pytest.mark.parametrize("strategy", ["mcts", "ab-mcts"])
def test_tree_search_answers_forks_and_writes_its_tree(engine, strategy, tmp_path):
    from infscale.cli.trace import read_trace, render_tree, write_trace
    from infscale.tasks.prompts import build_request

    req = build_request(PROBLEM, PARAMS, chat=True, seed=0)
    prompt_len = len(engine.tokenize(engine.render(req.messages), add_bos=False))
    before = engine.evaluated_tokens
    r = asyncio.run(infscale.run(PROBLEM, engine, strategy, n=4, scorer="arith-check", params=PARAMS,
                                 options={"max_steps": 6}, trace=True))
    evaluated = engine.evaluated_tokens - before
    assert r.answer is not None and r.candidates
    assert all(c.finish_reason in ("answer", "eos", "length", "max_steps") for c in r.candidates)
    assert _released(engine)
    # each simulation forks the node it starts from: besides the generated tokens, only the
    # prompt is read, once per round that expands the root (which holds no sequence)
    root_rounds = sum(1 for t in r.trace if 0 in t.get("expanded", []))
    assert evaluated <= root_rounds * prompt_len + 1.05 * r.usage.generated_tokens + 8, \
        (evaluated, root_rounds, prompt_len, r.usage.generated_tokens)
    path = tmp_path / "tree.jsonl"
    d = r.to_dict()
    write_trace(path, {"strategy": strategy, "n": 4, "question": PROBLEM.question}, r.trace,
                {"answer": d["answer"], "usage": d["usage"], "path": r.info["path"]})
    text = render_tree(read_trace(path))
    assert "root #0 visits=" in text and "★ #" in text and f"answer: {r.answer}" in text


@pytest.mark.parametrize("strategy", ["mcts", "ab-mcts"])
def test_tree_search_respects_a_budget_on_the_engine(engine, strategy):
    r = asyncio.run(infscale.run(PROBLEM, engine, strategy, n=8, scorer="arith-check", params=PARAMS,
                                 options={"max_steps": 6}, budget=Budget(calls=12)))
    assert r.usage.calls <= 12 and r.stopped_early
    assert _released(engine)
