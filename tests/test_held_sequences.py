"""Searches that keep sequences of a kv_fork generator, run side by side by the harness, never
fill a generator with a fixed number of sequences; a call that fails is never a quiet result."""

from __future__ import annotations

import asyncio

import pytest

import infscale
from infscale.errors import BackendError
from infscale.evaluation.harness import EvalConfig, SequenceSlots, run_eval, start_run
from infscale.evaluation.store import Store
from infscale.testing.fakes import ForkingFakeGenerator
from infscale.types import Problem


def steps(req, rng):
    return ["4 * 5 = 20\n", "20 + 3 = 23\n", "Answer: 23", "Then 20 + 3 = 23.\n"][int(rng.integers(0, 4))]


class FixedSequences(ForkingFakeGenerator):
    """A forking fake with the embedded engine's limit: ``n_seq_max`` sequences, each kept
    handle holding one; a call that needs more than are free fails as the engine does."""

    def __init__(self, n_seq_max: int, max_live: int = 0, **kw):
        super().__init__(steps, **kw)
        self.n_seq_max, self.max_live = n_seq_max, max_live
        self.in_flight = 0
        self.peak = 0

    async def generate(self, requests):
        self.in_flight += len(requests)
        try:
            self.peak = max(self.peak, len(self.held) + self.in_flight)
            if len(self.held) + self.in_flight > self.n_seq_max:
                raise BackendError(f"all {self.n_seq_max} sequences are held by kept handles", retryable=True)
            await asyncio.sleep(0.001)  # other searches run meanwhile, holding what they hold
            return await super().generate(requests)
        finally:
            self.in_flight -= len(requests)


def problems(k: int) -> list[Problem]:
    return [Problem(id=f"p{i}", question=f"What is 4 * 5 + 3? ({i})", reference="23") for i in range(k)]


def _eval(gen, tmp_path) -> tuple[dict, list[dict]]:
    cfg = EvalConfig(dataset="arith", strategies=["particle-filter", "beam-search", "rebase"], budgets=[4, 8],
                     concurrency=4, params={"max_tokens": 64})
    with Store(tmp_path / "runs.sqlite") as st:
        rid = start_run(st, cfg, problems(4))
        counts = asyncio.run(run_eval(st, rid, gen))
        return counts, st.get_results(rid)


def test_concurrent_searches_fit_the_generators_sequences(tmp_path):
    gen = FixedSequences(n_seq_max=48)
    counts, results = _eval(gen, tmp_path)
    assert counts["results"] == 4 * 3 * 2 and len(results) == 24
    assert gen.peak <= 48 and not gen.held  # every kept sequence freed
    assert all(r["answer"] == "23" for r in results)  # no search lost a trajectory to a failed call


def test_without_the_slots_the_same_eval_fills_the_generator(tmp_path, monkeypatch):
    monkeypatch.setattr(SequenceSlots, "of", classmethod(lambda cls, g: None))
    monkeypatch.setattr("infscale.evaluation.harness.RETRIES", 0)
    with pytest.raises(BackendError, match="sequences are held"):
        _eval(FixedSequences(n_seq_max=48), tmp_path)


def test_slot_costs_and_admission():
    slots = SequenceSlots(40)
    assert slots.cost(4) == 10 and slots.cost(32) == 40  # a wide search runs alone

    async def go():
        a = await slots.acquire(8)  # 18
        b = await slots.acquire(8)  # 18: 4 left
        waiter = asyncio.ensure_future(slots.acquire(4))  # needs 10
        await asyncio.sleep(0.01)
        assert not waiter.done()
        await slots.release(a)
        assert await asyncio.wait_for(waiter, 1) == 10
        await slots.release(b)
        return slots.free

    assert asyncio.run(go()) == 40 - 10
    gen = FixedSequences(n_seq_max=128, max_live=64)
    assert SequenceSlots.of(gen).capacity == 64
    assert SequenceSlots.of(infscale.testing.FakeGenerator()) is None  # nothing kept: no limit


class FailingSome(ForkingFakeGenerator):
    """Every call whose seed is in ``bad`` fails with a backend error."""

    def __init__(self, fail_all: bool):
        super().__init__(steps)
        self.fail_all = fail_all
        self.calls = 0

    async def generate(self, requests):
        self.calls += 1
        if self.fail_all or self.calls % 3 == 0:
            raise BackendError("the server went away", retryable=True)
        return await super().generate(requests)


def test_a_search_whose_calls_all_fail_raises_instead_of_answering_nothing():
    with pytest.raises(BackendError, match="left no answer.*the server went away"):
        asyncio.run(infscale.run(problems(1)[0], FailingSome(fail_all=True), "particle-filter", n=4, seed=0))


def test_a_search_with_some_failed_calls_says_so_and_the_harness_does_not_store_it(tmp_path, monkeypatch):
    r = asyncio.run(infscale.run(problems(1)[0], FailingSome(fail_all=False), "particle-filter", n=4, seed=0))
    assert r.info["failed_calls"] >= 1 and "went away" in r.info["first_error"]
    monkeypatch.setattr("infscale.evaluation.harness.RETRIES", 0)
    cfg = EvalConfig(dataset="arith", strategies=["particle-filter"], budgets=[4], params={"max_tokens": 64})
    with Store(tmp_path / "runs.sqlite") as st:
        rid = start_run(st, cfg, problems(1))
        with pytest.raises(BackendError, match="calls failed"):
            asyncio.run(run_eval(st, rid, FailingSome(fail_all=False)))
        assert st.get_results(rid) == []
