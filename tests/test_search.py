"""The step-level search core, validated on a model whose distribution over step sequences and
whose potential are known exactly (infscale.testing.FakeStepModel / FakePotential).

The target of the potential-weighted strategies is pi(path) ∝ p(path) * prod_t exp(g_t / T).
Tolerances derive from the number of particles (binomial standard errors with the Kish
effective sample size), at fixed seeds.
"""

from __future__ import annotations

import asyncio
import math

import numpy as np
import pytest

import infscale
from infscale import Budget, Problem, SamplingParams
from infscale.errors import BackendError, ConfigError
from infscale.strategies import resampling as rs
from infscale.strategies.search import SEARCH_STRATEGIES
from infscale.testing import FakeGenerator, FakePotential, FakeStepModel, ForkingFakeGenerator

from search_model import G, next_steps


def potential(before, step):
    return G.get(step, 0.0)


def exact_target(model: FakeStepModel, g, temperature=1.0):
    """pi over answers (= paths here) and the normalising constant Z."""
    mass = {}
    for path, p in model.paths():
        w = p * math.exp(sum(g(path[:i], s) for i, s in enumerate(path)) / temperature)
        mass[path[-1].split(": ")[1]] = w
    z = sum(mass.values())
    return {k: v / z for k, v in mass.items()}, z


def run(strategy, n, seed=0, model=None, scorer=None, **options):
    model = model or FakeStepModel(next_steps)
    scorer = scorer or FakePotential(potential)
    return asyncio.run(infscale.run(Problem(question="q", task="text", id="p"), model, strategy, n=n,
                                    scorer=scorer, seed=seed, options=options, trace=True))


def assert_matches_target(result, target, n_particles):
    est = {m.answer: m.weight for m in result.distribution}
    # the Kish effective sample size of the final weights, 1 / sum(w^2) <= n
    ess = result.info["ess"]
    assert 1.0 <= ess <= n_particles + 1e-6
    for answer, pi in target.items():
        se = math.sqrt(pi * (1 - pi) / ess)
        assert abs(est.get(answer, 0.0) - pi) <= 5 * se + 1e-9, (answer, est.get(answer), pi)
    tv = 0.5 * sum(abs(est.get(a, 0.0) - p) for a, p in target.items())
    assert tv < 0.05


def test_importance_sampling_estimates_the_target():
    model = FakeStepModel(next_steps)
    target, _ = exact_target(model, potential)
    r = run("importance-sampling", 3000, model=model)
    # IS weights vary: use the Kish effective sample size of the final weights for the tolerance
    assert_matches_target(r, target, 3000)
    assert len(r.candidates) == 3000


def test_particle_filter_estimates_the_target():
    model = FakeStepModel(next_steps)
    target, _ = exact_target(model, potential)
    r = run("particle-filter", 3000, model=model)
    assert_matches_target(r, target, 3000)
    resamples = [t for t in r.trace if "ancestors" in t]
    assert resamples and all(len(t["ancestors"]) == 3000 for t in resamples)


@pytest.mark.parametrize("strategy", ["particle-filter", "importance-sampling", "smc"])
def test_marginal_likelihood_estimate_is_unbiased(strategy):
    model = FakeStepModel(next_steps)
    _, z = exact_target(model, potential)
    seeds = 400
    zs = np.array([math.exp(run(strategy, 4, seed=s, model=model).info["log_z"]) for s in range(seeds)])
    assert abs(zs.mean() - z) <= 4 * zs.std(ddof=1) / math.sqrt(seeds)


def test_tempered_potential_changes_the_target():
    model = FakeStepModel(next_steps)
    target, _ = exact_target(model, potential, temperature=4.0)
    r = run("importance-sampling", 3000, model=model, temperature=4.0)
    assert_matches_target(r, target, 3000)


def test_particle_gibbs_keeps_a_reference_and_targets_pi():
    model = FakeStepModel(next_steps)
    target, _ = exact_target(model, potential)
    r = run("particle-gibbs", 1500, model=model, iterations=2)
    refs = [t for t in r.trace if "reference" in t]
    assert len(refs) == 1
    assert any(n["reason"] == "reference" for t in r.trace for n in t.get("nodes", []))
    assert_matches_target(r, target, 1500)


# -- resamplers ------------------------------------------------------------------------------

LOGW = np.log(np.array([0.05, 0.15, 0.3, 0.5]))


@pytest.mark.parametrize("name", sorted(rs.RESAMPLERS))
def test_resamplers_have_the_right_expected_offspring(name):
    rng = np.random.default_rng(0)
    n, draws = 10, 4000
    counts = np.zeros(4)
    for _ in range(draws):
        counts += np.bincount(rs.RESAMPLERS[name](LOGW, n, rng), minlength=4)
    mean = counts / draws
    expected = n * np.exp(LOGW)
    # multinomial variance n w (1 - w) bounds the others' (they are lower-variance schemes)
    se = np.sqrt(expected * (1 - np.exp(LOGW)) / draws)
    assert np.all(np.abs(mean - expected) <= 5 * se)


@pytest.mark.parametrize("name", ["systematic", "residual", "stratified"])
def test_low_variance_resamplers_stay_near_n_w(name):
    rng = np.random.default_rng(1)
    for _ in range(200):
        c = np.bincount(rs.RESAMPLERS[name](LOGW, 10, rng), minlength=4)
        assert c.sum() == 10
        if name in ("systematic", "residual"):
            assert np.all(c >= np.floor(10 * np.exp(LOGW)))
        if name == "systematic":
            assert np.all(c <= np.ceil(10 * np.exp(LOGW)))


def test_degenerate_weights():
    rng = np.random.default_rng(0)
    all_impossible = np.array([-np.inf] * 3)
    assert np.allclose(rs.normalize(all_impossible), 1 / 3)
    assert len(rs.multinomial(all_impossible, 5, rng)) == 5
    assert list(rs.multinomial(np.array([-np.inf, 0.0, -np.inf]), 4, rng)) == [1, 1, 1, 1]
    assert list(rs.systematic(np.array([0.0]), 3, rng)) == [0, 0, 0]
    assert rs.ess(np.array([0.0, 0.0, 0.0, 0.0])) == pytest.approx(4.0)
    assert rs.ess(np.array([0.0, -np.inf])) == pytest.approx(1.0)
    assert list(rs.top_k(np.array([1.0, 3.0, 3.0, 2.0]), 2)) == [1, 2]  # ties: lower index first
    assert rs.log_mean_exp(np.array([-np.inf, -np.inf])) == -np.inf


def test_rebase_allocation():
    c = rs.rebase_allocate([0.0, math.log(3.0)], 8, temperature=1.0)
    assert list(c) == [2, 6] and c.sum() == 8
    c = rs.rebase_allocate([1.0, 1.0, 1.0], 4)
    assert c.sum() == 4 and max(c) - min(c) <= 1
    assert list(rs.rebase_allocate([0.0, -np.inf], 3)) == [3, 0]
    assert rs.rebase_allocate([], 3).sum() == 0


# -- beam search and tree search ---------------------------------------------------------------

def test_beam_search_keeps_the_exact_top_k_at_every_depth():
    r = run("beam-search", 48, width=16, aggregate="product")  # 3 beams of 16 children
    for t in r.trace:
        nodes = {n["id"]: n for n in t["nodes"]}
        distinct = {}
        for n in t["nodes"]:
            distinct.setdefault((n["parent"], n["step"]), n)
        kept = set(t.get("kept", []))
        kept_agg = sorted((nodes[i]["agg"] for i in kept), reverse=True)
        best = sorted((n["agg"] for n in distinct.values()), reverse=True)
        assert kept_agg == best[: len(kept_agg)]


def test_beam_search_wide_enough_returns_the_exact_top_paths():
    # six complete paths; with room for all of them (6 beams of 32 children, n = 6 * 32) the final
    # beams are exactly the best ones
    r = run("beam-search", 192, width=32, aggregate="product")
    scores = {}
    for path, _ in FakeStepModel(next_steps).paths():
        scores[path[-1].split(": ")[1]] = sum(potential(path[:i], s) for i, s in enumerate(path))
    best = sorted(scores, key=lambda a: -scores[a])[0]
    assert r.answer == best
    assert {c.answer for c in r.candidates} == set(scores)


def test_best_first_stops_at_the_first_solution():
    r = run("best-first", 4)
    assert r.stopped_early and r.answer is not None
    assert all(c.finish_reason in ("answer", "eos") for c in r.candidates)


def test_dvts_subtrees_are_independent():
    r = run("dvts", 8, width=4)
    groups = r.trace[0]["nodes"]
    assert len({n["parent"] for n in groups}) == 2  # 8 / 4 = 2 subtrees, 4 children each
    assert len(r.candidates) <= 2


def test_rebase_allocates_the_width():
    r = run("rebase", 6)
    first = r.trace[0]
    assert len(first["nodes"]) == 6
    alloc = [t["allocation"] for t in r.trace if "allocation" in t]
    assert alloc and all(sum(a) <= 6 for a in alloc)


# -- robustness ------------------------------------------------------------------------------

def test_max_steps_is_honoured_exactly():
    model = FakeStepModel(lambda steps: {"more": 1.0})  # never answers
    for strategy in ["particle-filter", "beam-search", "rebase"]:
        r = run(strategy, 3, model=model, max_steps=4)
        assert r.candidates and all(len(c.text.splitlines()) == 4 for c in r.candidates)
        assert all(c.finish_reason == "max_steps" for c in r.candidates)


def test_empty_steps_merge_into_the_next():
    def reply(req, rng):
        steps = FakeStepModel.steps_of(req.prefix)
        if req.prefix.endswith("\n\n") or req.prefix == "":
            return ("Answer: done" if len(steps) >= 2 else f"s{len(steps)}") + "\n"
        return "\n"  # an empty line before every real step

    r = run("particle-filter", 2, model=FakeGenerator(reply), max_steps=3)
    c = r.candidates[0]
    assert c.answer == "done"
    nodes = [n for t in r.trace for n in t.get("nodes", [])]
    assert all(n["step"].strip() for n in nodes)  # no empty step was counted
    assert max(n["depth"] for n in nodes) == 3


def test_a_failing_trajectory_never_stops_the_search():
    class Flaky(FakeStepModel):
        async def generate(self, requests):
            if any("b" in FakeStepModel.steps_of(r.prefix) for r in requests):
                raise BackendError("boom", retryable=False)
            return await super().generate(requests)

    r = run("particle-filter", 64, model=Flaky(next_steps))
    assert r.answer is not None
    assert all(not c.answer or not c.answer.startswith("b") for c in r.candidates)


def test_token_cap_finishes_a_trajectory_without_stopping_others():
    model = FakeStepModel(lambda steps: {"w w w w w": 1.0} if len(steps) < 3 else {"Answer: z": 1.0})
    r = asyncio.run(infscale.run(Problem(question="q", task="text"), model, "particle-filter", n=4,
                                 scorer=FakePotential(potential), params=SamplingParams(max_tokens=8)))
    assert all(c.finish_reason == "length" for c in r.candidates)


def test_the_tree_can_be_rebuilt_from_the_trace():
    r = run("beam-search", 4, width=3)
    seen = set(r.trace[0]["roots"])
    for t in r.trace:
        for n in t["nodes"]:
            assert n["parent"] in seen  # every parent is a root or a node created earlier
        seen |= {n["id"] for n in t["nodes"]}
    assert {c.index for c in r.candidates} <= seen


def test_search_needs_a_process_scorer():
    from infscale.testing import OracleScorer

    class OutcomeOnly(OracleScorer):
        process_capable = False

    with pytest.raises(ConfigError, match="scorer"):
        run("particle-filter", 2, scorer=OutcomeOnly())


def test_search_budget_stops_and_answers_from_what_it_has():
    model = FakeStepModel(next_steps)
    r = asyncio.run(infscale.run(Problem(question="q", task="text"), model, "particle-filter", n=8,
                                 scorer=FakePotential(potential), budget=Budget(calls=12)))
    assert r.usage.calls <= 12 and r.stopped_early


def test_bad_search_parameters_name_themselves():
    with pytest.raises(ConfigError, match="param width"):
        run("beam-search", 2, width=0)
    with pytest.raises(ConfigError, match="param resampler"):
        run("particle-filter", 2, resampler="magic")
    with pytest.raises(ConfigError, match="unknown parameter 'widht'"):
        run("beam-search", 2, widht=3)


def test_trace_file_round_trip_and_tree(tmp_path, capsys):
    from infscale.cli.main import main
    from infscale.cli.trace import read_trace, render_tree, write_trace

    r = run("particle-filter", 4)
    path = tmp_path / "t.jsonl"
    write_trace(path, {"strategy": "particle-filter", "n": 4, "question": "q"}, r.trace,
                {"answer": r.answer, "usage": r.usage.to_dict()})
    records = read_trace(path)
    assert records[0]["event"] == "run" and records[-1]["event"] == "result"
    text = render_tree(records)
    node_ids = {n["id"] for t in r.trace for n in t["nodes"]}
    for nid in node_ids:  # every node appears once in the tree
        assert text.count(f"#{nid} ") == 1
    assert "resampled from" in text and f"answer: {r.answer}" in text
    assert main(["trace", "show", str(path)]) == 0
    assert "root #" in capsys.readouterr().out
    assert main(["trace", "show", str(tmp_path / "missing.jsonl")]) == 2



def test_trace_show_lists_the_events_of_strategies_without_steps(tmp_path, capsys):
    """refine writes rounds of versions and verdicts, not step records: `trace show` lists them
    in order (an empty tree before), each version and verdict on its own line."""
    import asyncio

    import infscale
    from infscale.cli.main import main
    from infscale.cli.trace import write_trace
    from infscale.testing import FakeGenerator, answer_model

    problem = Problem(id="p", question="What is 6 * 7?", reference="42")
    r = asyncio.run(infscale.run(problem, FakeGenerator(answer_model(0.5)), "refine", n=3, scorer="arith-check",
                                 trace=True))
    path = tmp_path / "refine.jsonl"
    write_trace(path, {"strategy": "refine", "n": 3, "question": problem.question}, r.trace,
                {"answer": r.answer, "usage": r.usage.to_dict()})
    assert main(["trace", "show", str(path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[1] == f"{len(r.trace)} events"
    events = [line.split()[0] for line in out[2:-1] if not line.startswith(" ")]
    assert events == [t["event"] for t in r.trace]
    versions = sum(len(t.get("versions", [])) for t in r.trace)
    verdicts = sum(len(t.get("verdicts", [])) for t in r.trace)
    assert versions and verdicts
    assert sum(line.startswith("   version:") for line in out) == versions
    assert sum(line.startswith("   verdict:") for line in out) == verdicts
    assert out[-1].startswith(f"answer: {r.answer}")

# -- sequence bookkeeping under KV forking -----------------------------------------------------

def _empty_first(req, rng):
    """Every step is preceded by an empty line (merged, never counted) and ends in an answer."""
    steps = FakeStepModel.steps_of(req.prefix)
    if req.prefix.endswith("\n\n") or req.prefix == "":
        return ("Answer: done" if len(steps) >= 2 else f"s{len(steps)}{int(rng.integers(3))}") + "\n"
    return "\n"


@pytest.mark.parametrize("strategy", sorted(SEARCH_STRATEGIES))
@pytest.mark.parametrize("reply", ["plain", "empty-steps"])
def test_every_kept_sequence_is_freed(strategy, reply):
    gen = ForkingFakeGenerator(_empty_first if reply == "empty-steps" else FakeStepModel(next_steps).reply)
    r = run(strategy, 4, model=gen, max_steps=4)
    assert r.candidates
    assert gen.held == set()


@pytest.mark.parametrize("strategy", sorted(SEARCH_STRATEGIES))
@pytest.mark.parametrize("calls", [3, 6, 9])
def test_sequences_are_freed_when_the_budget_stops_a_round_midway(strategy, calls):
    # the budget runs out in the middle of a round (between a step and its merged empty steps,
    # or before the scorer): the children already holding sequences are freed too
    gen = ForkingFakeGenerator(_empty_first)
    asyncio.run(infscale.run(Problem(question="q", task="text", id="p"), gen, strategy, n=4,
                             scorer=FakePotential(potential), budget=Budget(calls=calls), options={"max_steps": 4}))
    assert gen.held == set()
