"""The search core's policies: each named strategy does what its documentation says.

Fake step models with known step scores; fixed seeds.
"""

from __future__ import annotations

import asyncio
import math

import numpy as np
import pytest

import infscale
from infscale import Problem
from infscale.backends.base import Capabilities
from infscale.errors import ConfigError
from infscale.strategies import STRATEGIES
from infscale.strategies import resampling as rs
from infscale.strategies.search import SEARCH_STRATEGIES
from infscale.testing import FakePotential, FakeStepModel
from infscale.types import Completion

from search_model import G
from search_model import next_steps as three_steps


def run(strategy, n, model=None, g=None, seed=0, **options):
    model = model or FakeStepModel(three_steps)
    scorer = FakePotential(g or (lambda before, step: G.get(step, 0.0)))
    return asyncio.run(infscale.run(Problem(question="q", task="text", id="p"), model, strategy, n=n, scorer=scorer,
                                    seed=seed, options=options, trace=True))


# -- smc: systematic resampling, as documented ---------------------------------------------------

def test_smc_resamples_with_its_systematic_scheme():
    assert SEARCH_STRATEGIES["smc"].options({})["resampler"] == "systematic"
    n = 64
    r = run("smc", n, ess_threshold=1.0)  # resample whenever the weights are not uniform
    events = [t for t in r.trace if "ancestors" in t]
    assert events
    for t in events:
        # every particle was resampled at the previous step, so its weight is this step's potential
        ids = [node["id"] for node in t["nodes"]]
        w = rs.normalize([node["score"] for node in t["nodes"]])
        counts = np.array([t["ancestors"].count(i) for i in ids])
        assert counts.sum() == n
        # systematic: each particle has floor(n w) or ceil(n w) offspring (multinomial would stray)
        assert np.all(counts >= np.floor(n * w - 1e-9)) and np.all(counts <= np.ceil(n * w + 1e-9))


# -- log Z: reported where it is an unbiased estimate, and only there ------------------------------

@pytest.mark.parametrize("strategy", sorted(SEARCH_STRATEGIES))
def test_log_z_is_reported_only_by_the_unbiased_estimators(strategy):
    r = run(strategy, 4)
    if strategy in ("particle-filter", "importance-sampling", "smc"):
        assert math.isfinite(r.info["log_z"])
    else:
        assert "log_z" not in r.info


# -- REBASE: allocation by softmax of the scorer's probability / T --------------------------------

PROB = {"a": math.log(0.9), "b": math.log(0.5), "c": math.log(0.2), "x": math.log(0.7), "y": math.log(0.4)}


def test_rebase_allocates_by_softmax_of_the_reward_probability():
    n, temperature = 12, 0.2
    r = run("rebase", n, g=lambda before, step: PROB.get(step, 0.0), temperature=temperature)
    first, second = r.trace[0], r.trace[1]
    nodes = {node["id"]: node for node in first["nodes"]}
    frontier = [nodes[i] for i in first["kept"]]
    rewards = [math.exp(node["agg"]) for node in frontier]
    assert second["allocation"] == list(rs.rebase_allocate(rewards, n, temperature))
    # the reward is a probability: softmax(log-score / T) would give a different allocation
    assert second["allocation"] != list(rs.rebase_allocate([node["agg"] for node in frontier], n, temperature))


# -- best-first: a real best-first search ---------------------------------------------------------

def deep(depth: int, options=("p", "q", "r")):
    def next_steps(steps):
        if len(steps) >= depth:
            return {"Answer: " + "".join(s[0] for s in steps): 1.0}
        return {f"{o}{len(steps)}": 1.0 / len(options) for o in options}
    return next_steps


STEP_SCORE = {"p": math.log(0.9), "q": math.log(0.6), "r": math.log(0.3)}


def step_score(before, step):
    if step.startswith("Answer"):
        return 0.0
    # a trap: after a first "p" every step scores low, after a first "q" every step scores high
    if before and before[0].startswith("p"):
        return math.log(0.2)
    if before and before[0].startswith("q"):
        return math.log(0.95)
    return STEP_SCORE[step[0]]


def _replay_best_first(trace):
    """The frontier rebuilt from the trace; for each expansion, the expanded node and the frontier."""
    frontier: dict[int, dict] = {}
    seen_text: set = set()
    text = {}
    out = []
    for t in trace:
        expanded = t["expanded"][0]
        out.append((expanded, dict(frontier)))
        frontier.pop(expanded, None)
        for node in t["nodes"]:
            key = (text.get(node["parent"], ()), node["step"])
            text[node["id"]] = key[0] + (node["step"],)
            if key in seen_text or node["reason"] in ("error", "budget"):
                continue
            seen_text.add(key)
            frontier[node["id"]] = {"priority": node["agg"], "depth": node["depth"], "finished": node["finished"]}
    return out


@pytest.mark.parametrize("priority", ["mean", "last", "astar"])
def test_best_first_expands_the_highest_priority_node_each_time(priority):
    r = run("best-first", 20, model=FakeStepModel(deep(4)), g=step_score, width=6, priority=priority,
            max_frontier=1000)
    steps = _replay_best_first(r.trace)
    assert len(steps) >= 3
    for expanded, frontier in steps[1:]:  # the first expansion is the root's
        best = max((v["priority"], v["depth"]) for v in frontier.values())
        chosen = frontier[expanded]
        assert (chosen["priority"], chosen["depth"]) == best
        assert not chosen["finished"]


def test_best_first_returns_the_optimal_path():
    # uniform-cost search (astar with h = 0) over log-scores <= 0 pops solutions best first
    r = run("best-first", 40, model=FakeStepModel(deep(3)), g=step_score, width=12, priority="astar")
    paths = FakeStepModel(deep(3)).paths()
    total = {p[-1].split(": ")[1]: sum(step_score(p[:i], s) for i, s in enumerate(p)) for p, _ in paths}
    best = max(total, key=total.get)
    assert best.startswith("q")  # the trap: "p" scores best at the first step, not overall
    assert r.answer == best and r.stopped_early
    assert [c.finish_reason for c in r.candidates] == ["answer"]


def test_best_first_with_a_pass_fail_scorer_dives_instead_of_sweeping_breadth_first():
    depth = 4
    r = run("best-first", 20, model=FakeStepModel(deep(depth)), g=lambda before, step: 0.0, width=3)
    depths = {}
    order = []
    for t in r.trace:
        order.append(depths.get(t["expanded"][0], 0))
        for node in t["nodes"]:
            depths[node["id"]] = node["depth"]
    # ties go to the deeper node: one expansion per depth, then the solution
    assert order == list(range(depth + 1))
    assert r.answer is not None and r.stopped_early


# -- capabilities, budget refusals ---------------------------------------------------------------

@pytest.mark.parametrize("strategy", sorted(SEARCH_STRATEGIES))
def test_step_search_without_prefill_or_fork_fails_before_any_call(strategy):
    gen = FakeStepModel(three_steps)
    gen.capabilities = Capabilities(chat_template=True, prefill=False, kv_fork=False)
    with pytest.raises(ConfigError, match="strategy.*prefill"):
        run(strategy, 4, model=gen)
    assert gen.started == 0 and gen.calls == 0


class ProbesNoPrefill(FakeStepModel):
    """Learns its capabilities when probed, as a server's generator does: no prefill, no fork."""

    async def ensure_ready(self):
        self.capabilities = Capabilities(chat_template=True, prefill=False, kv_fork=False)


@pytest.mark.parametrize("strategy", sorted(SEARCH_STRATEGIES))
def test_step_search_checks_prefill_in_the_runner_after_the_probe_before_any_call(strategy):
    gen = ProbesNoPrefill(three_steps)
    req = [r for r in STRATEGIES[strategy].requires(STRATEGIES[strategy].options({}))
           if r.capability == ("prefill", "kv_fork")]
    assert len(req) == 1 and req[0].param == "strategy"
    with pytest.raises(ConfigError, match="strategy") as e:
        run(strategy, 4, model=gen)
    msg = str(e.value)
    assert "\n" not in msg and repr(strategy) in msg and repr(gen.name) in msg and "kv_fork" in msg, msg
    assert "a sample-level strategy" in msg, msg
    assert gen.started == 0 and gen.calls == 0


@pytest.mark.parametrize("strategy", sorted(SEARCH_STRATEGIES))
def test_step_search_runs_on_raw_text_prompts_without_chat_prefill(strategy):
    """A generator prompted with raw text continues a partial answer by appending it to the
    prompt, so it needs neither chat prefill nor a KV fork (bench/search.py's server arm)."""
    gen = FakeStepModel(three_steps)
    gen.capabilities = Capabilities(chat_template=False, prefill=False, kv_fork=False)
    r = run(strategy, 4, model=gen)
    assert r.answer is not None and gen.calls > 0


class Refusing(FakeStepModel):
    """Refuses every request after the first ``allowed``, as the meter does for budget."""

    def __init__(self, next_steps, allowed):
        super().__init__(next_steps)
        self.allowed = allowed

    async def generate(self, requests):
        outs = await super().generate(requests)
        return [o if self.calls - len(requests) + i < self.allowed else
                Completion(text="", finish_reason="budget", generated_tokens=0) for i, o in enumerate(outs)]


@pytest.mark.parametrize("strategy", sorted(SEARCH_STRATEGIES))
def test_children_refused_for_budget_end_and_the_search_answers_from_what_it_has(strategy):
    gen = Refusing(three_steps, allowed=6)
    r = run(strategy, 4, model=gen)
    nodes = [node for t in r.trace for node in t["nodes"]]
    assert any(node["reason"] == "budget" for node in nodes)
    assert not any(node["reason"] == "budget" and node["id"] in {n2["parent"] for n2 in nodes} for node in nodes)
    assert r.candidates  # the search answers from what it has


def test_every_search_strategy_is_registered():
    assert set(SEARCH_STRATEGIES) <= set(STRATEGIES)
    for s in SEARCH_STRATEGIES.values():
        assert s.cost and s.__doc__


def test_dvts_subtrees_stay_independent_when_they_take_the_same_steps():
    # every subtree's children read the same text; deduplicating across subtrees would merge them
    model = FakeStepModel(lambda steps: {"s": 1.0} if len(steps) < 3 else {"Answer: 1": 1.0})
    r = run("dvts", 8, model=model, width=4)
    for t in r.trace[:-1]:
        assert len(t["kept"]) == 2
    assert len(r.candidates) == 2
