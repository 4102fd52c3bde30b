"""Tree search: MCTS's visit counts and UCT choices on a scripted tree computed by hand, AB-MCTS's
wider/deeper choice against its posterior, the tree in the trace, kept sequences.

Fakes with known step scores; fixed seeds. (The every-strategy contract, compute-matched and
real-engine tests cover both strategies through the registry.)
"""

from __future__ import annotations

import asyncio
import math

import numpy as np
import pytest

import infscale
from infscale import Problem
from infscale.strategies.search.core import Node
from infscale.strategies.search.tree import ab_choice, posterior_draw
from infscale.testing import FakePotential, FakeStepModel, ForkingFakeGenerator


def scripted(options: dict[tuple[str, ...], list[str]]) -> ForkingFakeGenerator:
    """A forking fake whose k-th request after the same steps returns ``options[steps][k % len]``
    (a deterministic tree: the order of children is known)."""
    count: dict[tuple[str, ...], int] = {}

    def reply(req, rng):
        steps = FakeStepModel.steps_of(req.prefix or "")
        k = count.get(steps, 0)
        count[steps] = k + 1
        step = options[steps][k % len(options[steps])]
        return step if step.startswith("Answer:") else step + "\n"

    return ForkingFakeGenerator(reply)


def run(gen, strategy, n, g, seed=0, **options):
    return asyncio.run(infscale.run(Problem(question="q", task="text", id="t"), gen, strategy, n=n,
                                    scorer=FakePotential(g), seed=seed, options=options, trace=True))


# -- MCTS: UCT on a tree small enough to follow by hand -------------------------------------------

TWO = {(): ["a", "b"], ("a",): ["Answer: a"], ("b",): ["Answer: b"]}
VALUE = {"a": math.log(0.9), "b": math.log(0.5)}  # the answer lines score log 1: values 0.9 and 0.5


def test_mcts_visits_and_uct_choices_match_the_hand_computation():
    """width=2, c=1, one simulation at a time, n=4: at most 4 solutions (and 4 x 3 = 12 tokens: a
    solution is 3 tokens). By hand (Q + sqrt(ln N / n), ties to the older child):

    sim 1: root has no child -> #1 'a', rollout #2 'Answer: a' (0.9)          tokens 3
    sim 2: root has one child -> #3 'b', rollout #4 'Answer: b' (0.5)         tokens 6
    sim 3: root full; UCT #1 = .9 + sqrt(ln 2) = 1.733 > #3 = 1.333; #1 has one child
           -> #5 'Answer: a' (0.9)                                            tokens 8
    sim 4: UCT #1 = .9 + sqrt(ln 3 / 2) = 1.641 > #3 = .5 + sqrt(ln 3) = 1.548; #1 full, its
           children tie (1.733) -> the older, #2, a solution: re-evaluated (0.9, no tokens)
    sim 5: UCT #1 = .9 + sqrt(ln 4 / 3) = 1.580 < #3 = .5 + sqrt(ln 4) = 1.677; #3 has one child
           -> #6 'Answer: b' (0.5)                      tokens 10; the 4th solution: over
    """
    gen = scripted(TWO)
    r = run(gen, "mcts", 4, lambda before, step: VALUE.get(step, 0.0), width=2, c=1.0, parallel=1)
    expanded = [t.get("expanded") for t in r.trace]
    assert expanded == [[0], [], [0], [], [1], [3]]
    assert r.trace[5]["revisits"] == [2]
    stats = {}
    for t in r.trace:
        for nid, visits, value in t.get("tree", []):
            stats[nid] = (visits, value)
    expected = {0: (5, (0.9 * 3 + 0.5 * 2) / 5), 1: (3, 0.9), 2: (2, 0.9), 5: (1, 0.9),
                3: (2, 0.5), 4: (1, 0.5), 6: (1, 0.5)}
    assert set(stats) == set(expected)
    for nid, (visits, value) in expected.items():
        assert stats[nid][0] == visits and stats[nid][1] == pytest.approx(value), nid
    # the answer: the most-visited path root -> #1 (3 visits) -> #2 (2 visits)
    assert r.answer == "a" and r.info["path"] == [0, 1, 2]
    # the distribution weighs solutions by visits: 'a' 2 + 1, 'b' 1 + 1
    assert {m.answer: round(m.weight, 6) for m in r.distribution} == {"a": 0.6, "b": 0.4}
    assert r.usage.generated_tokens == 10
    assert gen.held == set()


def test_mcts_forks_the_kept_sequences_instead_of_re_reading():
    gen = scripted(TWO)
    prefilled = []
    original = gen.generate

    async def spy(requests):
        prefilled.extend(r for r in requests if r.parent is None)
        return await original(requests)

    gen.generate = spy
    run(gen, "mcts", 4, lambda before, step: VALUE.get(step, 0.0), width=2, c=1.0, parallel=1)
    # only the root's children read the prompt; #1's second child and every rollout step forked
    assert len(prefilled) == 2 and all(r.prefix == "" for r in prefilled)


def test_mcts_with_no_kept_sequences_re_reads_and_still_frees_everything():
    gen = scripted(TWO)
    r = run(gen, "mcts", 4, lambda before, step: VALUE.get(step, 0.0), width=2, c=1.0, parallel=1, max_kept=0)
    assert r.answer == "a" and gen.held == set()


def test_mcts_prefers_the_better_subtree_on_a_random_model():
    """A model with a first step 'g' (solutions worth 0.9) or 'b' (worth 0.1), equally likely:
    UCT spends most simulations under 'g', and the answer comes from there."""
    def next_steps(steps):
        if not steps:
            return {"g": 0.5, "b": 0.5}
        if len(steps) < 3:
            return {"x": 0.5, "y": 0.5}
        return {"Answer: " + "".join(steps): 1.0}

    def g(before, step):
        if step.startswith("Answer"):
            return 0.0
        first = (before + (step,))[0]
        return math.log(0.9) if first == "g" else math.log(0.1)

    for seed in range(3):
        r = run(FakeStepModel(next_steps), "mcts", 32, g, seed=seed, width=3)
        visits = {}
        nodes = {}
        for t in r.trace:
            for node in t["nodes"]:
                nodes[node["id"]] = node
            for nid, v, _ in t.get("tree", []):
                visits[nid] = v
        firsts = [nid for nid, node in nodes.items() if node["parent"] == 0]
        good = sum(visits.get(i, 0) for i in firsts if nodes[i]["step"].strip() == "g")
        bad = sum(visits.get(i, 0) for i in firsts if nodes[i]["step"].strip() == "b")
        assert good > 2 * bad, (seed, good, bad)
        assert r.answer.startswith("g")


# -- AB-MCTS: the wider/deeper choice follows the posterior ---------------------------------------

def _tree(spec):
    """Nodes from ``{id: (parent, value or None, finished)}``; returns (nodes by id, kids)."""
    nodes, kids = {}, {}
    for nid, (parent, value, finished) in sorted(spec.items()):
        up = nodes.get(parent)
        n = Node(id=nid, parent=parent, up=up, finished=finished)
        if value is not None:
            n.scores, n.priority = [math.log(value)], math.log(value)
        nodes[nid], kids[nid] = n, []
        if up is not None:
            kids[parent].append(n)
    return nodes, kids


# root 0; child 1 created by the solution 3 (0.9), then solution 4 (0.8) found below 1 by going
# deeper; child 2 created by solution 5 (0.2). GEN at 0 sees {0.9, 0.2}, CONT sees {0.8}.
SPEC = {0: (None, None, False), 1: (0, 0.9, False), 2: (0, 0.2, False),
        3: (1, 0.9, True), 4: (1, 0.8, True), 5: (2, 0.2, True)}


def test_ab_mcts_choice_is_thompson_sampling_over_its_posteriors():
    nodes, kids = _tree(SPEC)
    for seed in range(200):
        child, d = ab_choice(nodes[0], kids, "beta", np.random.default_rng(seed))
        rng = np.random.default_rng(seed)  # the same draws, from the documented posteriors
        g = rng.beta(0.5 + 0.9 + 0.2, 0.5 + 0.1 + 0.8)
        k = rng.beta(0.5 + 0.8, 0.5 + 0.2)
        assert d["gen"] == pytest.approx(round(g, 4)) and d["cont"] == pytest.approx(round(k, 4))
        if g >= k:
            assert child is None and d["choice"] == "wider"
        else:
            # deeper: the child by Thompson sampling over the solutions below each child
            draws = [rng.beta(0.5 + 0.9 + 0.8, 0.5 + 0.1 + 0.2), rng.beta(0.5 + 0.2, 0.5 + 0.8)]
            assert d["choice"] == "deeper" and child is nodes[[1, 2][int(np.argmax(draws))]]


def _p_greater(a1, b1, a2, b2, grid=200_001):
    """P(X > Y) for X ~ Beta(a1, b1), Y ~ Beta(a2, b2), by numerical integration."""
    x = np.linspace(0, 1, grid)[1:-1]

    def pdf(a, b):
        return np.exp((a - 1) * np.log(x) + (b - 1) * np.log1p(-x) + math.lgamma(a + b) - math.lgamma(a)
                      - math.lgamma(b))
    cdf_y = np.cumsum(pdf(a2, b2)) * (x[1] - x[0])
    return float(np.sum(pdf(a1, b1) * cdf_y) * (x[1] - x[0]))


def test_ab_mcts_goes_wider_as_often_as_its_posterior_says():
    nodes, kids = _tree(SPEC)
    trials = 4000
    wider = sum(ab_choice(nodes[0], kids, "beta", np.random.default_rng(10_000 + s))[0] is None
                for s in range(trials))
    p = _p_greater(0.5 + 1.1, 0.5 + 0.9, 0.5 + 0.8, 0.5 + 0.2)
    tol = 4 * math.sqrt(p * (1 - p) / trials)
    assert abs(wider / trials - p) < tol, (wider / trials, p)


def test_ab_mcts_without_an_open_child_goes_wider_and_with_no_children_generates():
    nodes, kids = _tree({0: (None, None, False), 1: (0, 0.1, True)})
    for seed in range(20):  # the only child is a finished solution: it cannot be continued
        assert ab_choice(nodes[0], kids, "beta", np.random.default_rng(seed))[0] is None
    nodes, kids = _tree({0: (None, None, False)})
    assert ab_choice(nodes[0], kids, "gaussian", np.random.default_rng(0))[0] is None


def test_posterior_draws_have_the_conjugate_means():
    rng = np.random.default_rng(0)
    obs = [1.0, 1.0, 1.0, 0.0]
    draws = [posterior_draw(obs, "beta", rng) for _ in range(20_000)]
    mean = (0.5 + 3) / (1 + 4)
    sd = math.sqrt(mean * (1 - mean) / (1 + 4 + 1))
    assert abs(np.mean(draws) - mean) < 4 * sd / math.sqrt(len(draws))
    # gaussian: the posterior mean of mu is (kappa0 m0 + n mean) / (kappa0 + n) = 4 * 0.75 / 5
    draws = [posterior_draw(obs, "gaussian", rng) for _ in range(20_000)]
    assert abs(np.mean(draws) - 0.6) < 0.01


def test_ab_mcts_goes_deeper_where_the_scores_are_good():
    """A scripted score sequence: every solution below the first step 'g' scores 0.9, below 'b'
    0.1. Once both are seen, Thompson sampling continues under 'g' far more often."""
    def next_steps(steps):
        if not steps:
            return {"g": 0.5, "b": 0.5}
        if len(steps) < 3:
            return {"x": 0.5, "y": 0.5}
        return {"Answer: " + "".join(steps): 1.0}

    def g(before, step):
        if step.startswith("Answer"):
            return 0.0
        return math.log(0.9) if (before + (step,))[0] == "g" else math.log(0.1)

    for seed in range(3):
        r = run(FakeStepModel(next_steps), "ab-mcts", 16, g, seed=seed)
        nodes = {n["id"]: n for t in r.trace for n in t["nodes"]}
        deeper = [d["child"] for t in r.trace for d in t.get("decisions", []) if d["choice"] == "deeper"]

        def first(nid):
            while nodes[nid]["parent"] != 0:
                nid = nodes[nid]["parent"]
            return nodes[nid]["step"].strip()
        into = [first(c) for c in deeper]
        assert into.count("g") > 2 * into.count("b"), (seed, into)
        assert r.answer.startswith("g")


# -- the tree in the trace -------------------------------------------------------------------------

@pytest.mark.parametrize("strategy", ["mcts", "ab-mcts"])
def test_trace_show_draws_the_tree_with_visits_values_and_the_chosen_path(strategy, tmp_path, capsys):
    from infscale.cli.main import main
    from infscale.cli.trace import read_trace, render_tree, write_trace

    gen = scripted(TWO) if strategy == "mcts" else FakeStepModel(
        lambda steps: {"a": 0.5, "b": 0.5} if not steps else {f"Answer: {steps[0]}": 1.0})
    options = {"width": 2, "c": 1.0} if strategy == "mcts" else {}
    r = run(gen, strategy, 4, lambda before, step: VALUE.get(step, 0.0), parallel=1, **options)
    path = tmp_path / "t.jsonl"
    write_trace(path, {"strategy": strategy, "n": 3, "question": "q"}, r.trace,
                {"answer": r.answer, "usage": r.usage.to_dict(), "path": r.info["path"]})
    text = render_tree(read_trace(path))
    nodes = {n["id"] for t in r.trace for n in t["nodes"]}
    tree_lines = [line for line in text.splitlines() if "score=" in line]
    for nid in nodes:  # every node once, under its parent
        assert sum(f"#{nid} '" in line for line in tree_lines) == 1, nid
    assert "root #0 visits=" in text and "visits=1 value=" in text
    assert text.count("★ #") == len(r.info["path"]) - 1  # every node of the path but the root
    assert "chosen path (★): " + " → ".join(f"#{i}" for i in r.info["path"]) in text
    if strategy == "mcts":
        assert "re-evaluated [2]" in text
    else:
        assert "wider" in text and "deeper" in text
    assert main(["trace", "show", str(path)]) == 0
    assert "★" in capsys.readouterr().out
