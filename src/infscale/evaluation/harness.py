"""The grid runner: dataset x strategy x budget x seed, every sample and result stored.

A run is a configuration (:class:`EvalConfig`) and a run id in a :class:`~.store.Store`. The
harness works through ``(problem, seed)`` items with at most ``concurrency`` in flight (an
``asyncio.Semaphore``); the embedded engine batches the concurrent problems' samples into its
decode steps by itself. Each item:

1. **Pool** (sample reuse). Strategies whose result at width N is a function of N independent
   samples — ``sample``, ``majority``, ``weighted``, ``best-of-n``, ``bom`` — share one pool of
   ``M = max(budgets)`` samples per problem and seed. Sample ``i`` is the request the runner's
   context would send for it (seeded by ``(seed, problem id, i)``), so pool sample ``i`` is
   the sample ``i`` the strategy itself would have drawn. Each finished sample is stored at
   once; the pool is scored once per scorer the specs name. The result at budget N is the mean
   over R subsamples of size N (every subset when ``C(M, N) <= R``, else R subsets drawn with a
   generator seeded by ``(seed, problem id, M, N)``, the same subsets for every strategy, so
   strategies are compared on common samples) of the strategy's selection step
   (:func:`~infscale.strategies.sample.select_from`) applied to the subsample; the variance over
   subsamples is stored too. Costs at budget N are the subsample means of what its samples (and
   their scorer calls) spent.
2. **Greedy** (``greedy``): one temperature-0 sample, run once (seed 0), stored at budget 1.
3. **Per budget**: every other strategy (``adaptive``, step-level search) runs through
   :func:`infscale.run` with ``n = budget``; its candidates and result are stored together.

Correctness: every sample's extracted answer is graded once by the problem's task
(:meth:`~infscale.tasks.AnswerTask.grade`: math/mcq/text by answer equivalence with the
reference; code by running the problem's tests in the sandbox: all tests pass). A chosen answer
is correct when a sample with an equivalent answer is (``answers[:k]`` for pass@k-style
strategies with a ``k`` setting); a chosen answer no sample carries is graded by the task too.
Grading never influences a strategy.

An item that fails with a retryable backend error (a full KV cache, a 503) is retried up to
three times; what it stored stays stored.

Seconds are wall time shared among the sequences in flight (:class:`ShareClock`): at every
instant the elapsed time is split equally among the samples being generated — a pool's
outstanding samples, a per-budget run's ``n`` (1 for greedy), a scorer's texts — so a sample is
charged its share of the engine, one greedy answer costs about what one pooled sample costs, and
the charges of a run sum to its generating wall time.

Resume: everything has a unique key in the store. Re-running a run id skips stored results,
generates only the pool samples that are missing, and scores only what is unscored; with a
deterministic generator the final numbers equal an uninterrupted run's.
"""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import itertools
import json
import logging
import math
import sqlite3
import time
from collections.abc import Callable
from contextlib import aclosing
from dataclasses import asdict, dataclass, field
from typing import Any

from ..tasks import AnswerClasses, AnswerTask, get_task
from ..tasks.code import problem_tests
from ..backends.base import Generator
from ..errors import BackendError, ConfigError, InfscaleError
from ..params import MAX_SETTING, MAX_WIDTH, Budget, SamplingParams
from ..rng import make_rng
from ..scorers import SCORERS, Scorer, get_scorer
from ..strategies import STRATEGIES, get_strategy
from ..meter import Meter
from ..strategies.base import Context, Strategy
from ..strategies.runner import check_capabilities
from ..strategies.runner import run as run_strategy
from ..strategies.sample import SampleStrategy, select_from
from ..tasks.prompts import build_request
from ..types import Candidate, Problem
from .store import Store, store_error

__all__ = [
    "StrategySpec",
    "EvalConfig",
    "parse_strategies",
    "parse_budgets",
    "is_pooled",
    "start_run",
    "run_eval",
    "unwrap_error",
    "subsample_indices",
    "metrics_inputs",
    "Progress",
]

POOL = "pool"
GREEDY = "greedy"
RETRIES = 3  # a (problem, seed) item that fails with a retryable backend error is tried again
GRADE_CONCURRENCY = 2  # answers graded at once (a code answer runs its tests in a sandboxed process)

log = logging.getLogger("infscale.evaluation")


# ---------------------------------------------------------------------------------------------
# Strategy specs and the configuration.


def is_pooled(strategy: Strategy) -> bool:
    """Whether the result at width N is a function of N independent samples (sample reuse)."""
    return isinstance(strategy, SampleStrategy) and not strategy.adaptive and not strategy.greedy


@dataclass
class StrategySpec:
    """A parsed ``NAME[:key=value,...]``: the strategy, its settings, its scorer.

    ``scorer=NAME`` chooses the scorer; every other key is a strategy setting (``--param``).
    ``label`` is the normalised spec string results are stored under.
    """

    label: str
    name: str
    options: dict[str, Any]
    scorer: str | None
    strategy: Strategy = field(repr=False)

    @property
    def pooled(self) -> bool:
        return is_pooled(self.strategy)

    @property
    def greedy(self) -> bool:
        return isinstance(self.strategy, SampleStrategy) and self.strategy.greedy

    @property
    def k(self) -> int:
        """How many chosen answers count (pass@k-style strategies with a ``k`` setting)."""
        return int(self.options.get("k", 1))


def _parse_one(text: str, scorers: dict[str, Callable[[], Scorer]]) -> StrategySpec:
    name, colon, rest = text.strip().partition(":")
    name = name.strip()
    if colon and not rest.strip():
        raise ConfigError("strategies", f"{text.strip()!r} has a ':' but no settings",
                          "NAME or NAME:key=value,..., e.g. best-of-n:scorer=arith-check")
    if name not in STRATEGIES:
        raise ConfigError("strategies", f"unknown strategy {name!r}", ", ".join(STRATEGIES))
    strat = get_strategy(name)
    given: dict[str, str] = {}
    for item in filter(None, (s.strip() for s in rest.split(","))):
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise ConfigError("strategies", f"expected key=value in {text!r}, got {item!r}",
                              "NAME[:key=value,...], e.g. best-of-n:scorer=arith-check")
        given[key.strip()] = value.strip()
    scorer = given.pop("scorer", None)
    options = strat.options(given)
    if scorer is None and strat.wants_scorer(options):
        scorer = strat.default_scorer
    if scorer is not None and scorer not in scorers and scorer.partition(":")[0] not in SCORERS:
        raise ConfigError("scorer", f"unknown scorer {scorer!r} in {text!r}", ", ".join([*SCORERS, *scorers]))
    parts = [f"{k}={v}" for k, v in sorted(given.items())]
    if scorer is not None and "scorer" in rest:
        parts.insert(0, f"scorer={scorer}")
    label = name + (":" + ",".join(parts) if parts else "")
    return StrategySpec(label=label, name=name, options=options, scorer=scorer, strategy=strat)


def parse_strategies(text: str | list[str], *, scorers: dict[str, Callable[[], Scorer]] | None = None
                     ) -> list[StrategySpec]:
    """Specs from ``majority,best-of-n:scorer=arith-check,bom:k=2,alpha=0.2`` (a comma-separated
    piece holding ``=`` but no ``:`` continues the previous spec's settings) or a list of specs."""
    scorers = scorers or {}
    pieces: list[str] = []
    items = text if isinstance(text, list) else [text]
    for chunk in items:
        for piece in str(chunk).replace(";", ",").split(","):
            piece = piece.strip()
            if not piece:
                raise ConfigError("strategies", f"an empty item in {str(chunk)!r}",
                                  "comma-separated specs NAME[:key=value,...], e.g. greedy,majority")
            if "=" in piece and ":" not in piece and pieces:
                pieces[-1] += "," + piece
            else:
                pieces.append(piece)
    if not pieces:
        raise ConfigError("strategies", "none given", ", ".join(STRATEGIES))
    specs = [_parse_one(p, scorers) for p in pieces]
    labels = [s.label for s in specs]
    dup = next((x for x in labels if labels.count(x) > 1), None)
    if dup is not None:
        raise ConfigError("strategies", f"{dup!r} is given twice", "each spec once")
    return specs


def parse_budgets(text: str | list[int]) -> list[int]:
    """Sorted distinct widths from ``1,2,4,8`` (each an integer >= 1)."""
    raw = text if isinstance(text, list) else str(text).replace(" ", "").split(",")
    if raw and "" in raw:
        raise ConfigError("budgets", f"an empty item in {str(text)!r}", "comma-separated integers >= 1, e.g. 1,2,4,8")
    out = []
    for b in raw:
        try:
            v = int(b)
        except (TypeError, ValueError):
            raise ConfigError("budgets", f"cannot read {b!r} as an integer", "comma-separated integers >= 1, e.g. 1,2,4,8") from None
        if v < 1 or v > MAX_WIDTH:
            raise ConfigError("budgets", f"got {v}", f"comma-separated integers >= 1 and <= {MAX_WIDTH} (the work "
                              "limit), e.g. 1,2,4,8")
        out.append(v)
    if not out:
        raise ConfigError("budgets", "none given", "comma-separated integers >= 1, e.g. 1,2,4,8")
    return sorted(set(out))


@dataclass
class EvalConfig:
    """Everything a run needs to be repeated or resumed; stored with the run as JSON."""

    dataset: str
    strategies: list[str]
    budgets: list[int]
    seeds: int = 1
    limit: int | None = None
    task: str | None = None
    question_field: str | None = None
    answer_field: str | None = None
    choices_field: str | None = None
    model: str | None = None
    backend_url: str | list[str] | None = None  # several: a pool of servers
    params: dict[str, Any] = field(default_factory=dict)
    concurrency: int = 8
    subsamples: int = 20
    reproducible: bool = False  # embedded engine: one sample at a time, independent of the batch
    total_tokens: float | None = None  # auto: one token budget for the whole batch (per seed), allocated

    def validate(self, scorers: dict[str, Callable[[], Scorer]] | None = None) -> list[StrategySpec]:
        """Check every setting (one-line errors naming the parameter); the parsed specs."""
        specs = parse_strategies(self.strategies, scorers=scorers)
        self.strategies = [s.label for s in specs]
        self.budgets = parse_budgets(self.budgets)
        for name, value, lo in (("seeds", self.seeds, 1), ("concurrency", self.concurrency, 1),
                                ("subsamples", self.subsamples, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < lo or value > MAX_SETTING:
                raise ConfigError(name, f"got {value!r}", f"an integer in [{lo}, {MAX_SETTING}] (the work limit)")
        if self.reproducible and self.backend_url:
            raise ConfigError("reproducible", "applies to the embedded engine only, not to --backend-url",
                              "--reproducible with the embedded engine (--model), or no --reproducible")
        self.sampling_params()
        if self.total_tokens is not None:
            if isinstance(self.total_tokens, bool) or not isinstance(self.total_tokens, (int, float)) \
                    or not self.total_tokens > 0:
                raise ConfigError("total-tokens", f"got {self.total_tokens!r}", "a number of generated tokens > 0")
            if not any(s.name == "auto" for s in specs):
                raise ConfigError("total-tokens", "applies to the auto strategy only",
                                  "--strategies auto[,...] --total-tokens T")
        return specs

    def sampling_params(self) -> SamplingParams:
        return SamplingParams(**self.params)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "EvalConfig":
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in d.items() if k in known})


def start_run(store: Store, config: EvalConfig, problems: list[Problem], *, chat: bool = True,
              scorers: dict[str, Callable[[], Scorer]] | None = None, run_id: str | None = None) -> str:
    """Validate ``config``, create the run (under ``run_id`` if given, else a new id) and store
    its problems (with their prompts)."""
    config.validate(scorers)
    if not problems:
        raise ConfigError("dataset", "holds no problems", "a dataset with at least one problem")
    ids = [p.id for p in problems]
    if len(set(ids)) != len(ids):
        raise ConfigError("dataset", "problem ids are not unique", "unique ids")
    for p in problems:  # a code problem is graded by its tests: none is a mistake, found before any call
        if p.task == "code":
            problem_tests(p)
    run_id = store.create_run(config.to_dict(), run_id)
    params = config.sampling_params()
    rows = []
    for pos, p in enumerate(problems):
        req = build_request(p, params, chat=chat, seed=None)
        prompt = json.dumps(req.messages, ensure_ascii=False) if req.messages is not None else req.prompt
        data = {"id": p.id, "question": p.question, "messages": p.messages, "task": p.task, "reference": p.reference,
                "choices": p.choices, "metadata": p.metadata}
        rows.append({"problem_id": p.id, "position": pos, "data": data, "prompt": prompt})
    store.put_problems(run_id, rows)
    return run_id


def _problem_from_row(row: dict[str, Any]) -> Problem:
    d = row["data"]
    return Problem(question=d.get("question"), messages=d.get("messages"), id=str(d["id"]), task=d.get("task", "math"),
                   reference=d.get("reference"), choices=d.get("choices"), metadata=dict(d.get("metadata") or {}))


# ---------------------------------------------------------------------------------------------
# Subsampling.


def subsample_indices(pool_size: int, n: int, repeats: int, *seed_parts: object) -> list[tuple[int, ...]]:
    """Subsets of size ``n`` of ``range(pool_size)``, each sorted: all ``C(pool_size, n)`` of them
    when there are at most ``repeats``, else ``repeats`` uniform draws (without replacement
    within a subset) from a generator seeded by ``seed_parts``."""
    if n > pool_size:
        raise ValueError("subsample larger than the pool")
    if math.comb(pool_size, n) <= repeats:
        return list(itertools.combinations(range(pool_size), n))
    rng = make_rng("subsample", *seed_parts)
    return [tuple(sorted(int(i) for i in rng.choice(pool_size, size=n, replace=False))) for _ in range(repeats)]


# ---------------------------------------------------------------------------------------------
# The harness.


class SequenceSlots:
    """Admission of runs that keep sequences of a kv_fork generator (``Strategy.holds_sequences``).

    The embedded engine has a fixed number of sequences (``n_seq_max``); a step-level search holds
    up to about 2n of them between its calls (its frontier plus the children it forks). Searches
    admitted without a bound could together hold every sequence while each waits for new ones:
    the engine then fails their requests. A run of width n takes ``2n + 2`` slots (at most all of
    them, so a wide one runs alone) from the sequences left when the engine's live samples are
    set aside (``n_seq_max - max_live``), and gives them back when it ends; runs that keep nothing
    are not limited here (the engine queues their samples until sequences come free)."""

    def __init__(self, capacity: int):
        self.capacity = max(1, capacity)
        self.free = self.capacity
        self._cond = asyncio.Condition()

    @classmethod
    def of(cls, generator: Generator) -> "SequenceSlots | None":
        n_seq = getattr(generator, "n_seq_max", None)
        if not getattr(generator.capabilities, "kv_fork", False) or not isinstance(n_seq, int):
            return None
        return cls(n_seq - min(int(getattr(generator, "max_live", 0) or 0), n_seq // 2))

    def cost(self, width: int) -> int:
        return min(2 * width + 2, self.capacity)

    async def acquire(self, width: int) -> int:
        k = self.cost(width)
        async with self._cond:
            await self._cond.wait_for(lambda: self.free >= k)
            self.free -= k
        return k

    async def release(self, k: int) -> None:
        async with self._cond:
            self.free += k
            self._cond.notify_all()


class ShareClock:
    """Processor-sharing accounting of wall time: the time that passes is split equally among the
    sequences registered at that moment. ``mark = enter(w)`` registers ``w`` sequences;
    ``leave(w, mark)`` removes ``w`` of them and returns the seconds they accrued together since
    ``mark`` (w times one sequence's share)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self._clock = clock
        self._t = clock()
        self._v = 0.0  # seconds accrued by one sequence present all along
        self._w = 0

    def _tick(self) -> None:
        now = self._clock()
        if self._w > 0:
            self._v += (now - self._t) / self._w
        self._t = now

    def enter(self, w: int) -> float:
        self._tick()
        self._w += w
        return self._v

    def leave(self, w: int, mark: float) -> float:
        self._tick()
        self._w -= w
        return w * (self._v - mark)


@dataclass
class Progress:
    """What the progress callback sees."""

    done: int
    total: int
    samples: int
    results: int
    seconds: float
    generated_tokens: int = 0  # by the samples stored in this session


class _Harness:
    def __init__(self, store: Store, run_id: str, config: EvalConfig, specs: list[StrategySpec],
                 problems: list[Problem], generator: Generator, *, scorers: dict[str, Callable[[], Scorer]],
                 on_progress: Callable[[Progress], None] | None):
        self.store = store
        self.run_id = run_id
        self.config = config
        self.specs = specs
        self.problems = problems
        self.gen = generator
        self.scorer_factories = scorers
        self.on_progress = on_progress
        self.params = config.sampling_params()
        self.budgets = config.budgets
        self.pool_size = max(config.budgets)
        self.pooled = [s for s in specs if s.pooled]
        self.done_keys = store.result_keys(run_id)
        self.items_done = 0
        self.clock = ShareClock()  # wall time shared among the sequences generating
        self.slots = SequenceSlots.of(generator)  # bounds the sequences kept by concurrent searches
        self.samples_new = 0
        self.results_new = 0
        self.tokens_new = 0
        self.started = time.monotonic()
        self.grade_limit = asyncio.Semaphore(GRADE_CONCURRENCY)
        # with a total token budget, auto runs once per seed over the whole batch (run_batch)
        self.batched = [s for s in specs if s.name == "auto"] if config.total_tokens is not None else []
        self.allocations: list[dict[str, Any]] = []

    # -- helpers ------------------------------------------------------------------------
    def _reads_generation(self, name: str) -> bool:
        """Whether the scorer ``name`` is a generation-time one (its class says; nothing is built)."""
        factory = self.scorer_factories.get(name) or SCORERS.get(name.partition(":")[0])
        return bool(getattr(factory, "reads_generation", False))

    def _scorer(self, name: str | None) -> Scorer | None:
        if name is None:
            return None
        factory = self.scorer_factories.get(name)
        return factory() if factory is not None else get_scorer(name)

    def _context(self, problem: Problem, seed: int, n: int, scorer: Scorer | None = None) -> Context:
        return Context(problem=problem, meter=Meter(self.gen, Budget()), task=get_task(problem.task),
                       params=self.params, n=n, seed=seed, scorer=scorer)

    def _progress(self) -> None:
        if self.on_progress is not None:
            self.on_progress(Progress(done=self.items_done, total=len(self.problems) * self.config.seeds,
                                      samples=self.samples_new, results=self.results_new,
                                      seconds=time.monotonic() - self.started, generated_tokens=self.tokens_new))

    async def _grade(self, problem: Problem, answers: list[str | None]) -> list[bool]:
        """Whether each extracted answer solves ``problem``, by the problem's task (never seen by
        any strategy). Grading runs in worker threads, at most :data:`GRADE_CONCURRENCY` at once:
        a code answer runs its tests in the sandbox, a math answer may call math-verify."""
        task = get_task(problem.task)

        async def one(answer: str | None) -> bool:
            if answer is None:
                return False
            async with self.grade_limit:
                return await asyncio.to_thread(task.grade, answer, problem)

        return list(await asyncio.gather(*(one(a) for a in answers)))

    @staticmethod
    def _answer_correct(answer: str | None, graded: dict[str, bool], task: AnswerTask) -> bool:
        """A chosen answer is correct when a graded answer with its canonical key is. The caller
        grades every chosen answer first (a pooled selection chooses among graded pool answers)."""
        if answer is None:
            return False
        if answer in graded:
            return graded[answer]
        key = task.canonical(answer)
        for a, ok in graded.items():
            if task.canonical(a) == key:
                return ok
        raise AssertionError(f"chosen answer {answer!r} was never graded")

    # -- the grid -----------------------------------------------------------------------
    async def check(self) -> None:
        """A pooled spec selects from stored samples without going through the runner, so it
        gets the runner's capability check here, before any call."""
        for spec in self.pooled:
            await check_capabilities(Meter(self.gen, Budget()), spec.strategy, spec.options, self._scorer(spec.scorer))

    async def solve(self, problem: Problem, seed: int) -> None:
        """One ``(problem, seed)`` item, stored as it goes: what is missing of its pool, its
        per-budget runs and its results, retried on retryable backend errors (what is stored
        stays). The unit of work a Ray worker runs (:mod:`.distributed`)."""
        for attempt in range(RETRIES + 1):
            try:
                await self._item(problem, seed)
                return
            except BackendError as e:  # e.g. the KV cache was full: what is stored stays
                if not e.retryable or attempt == RETRIES:
                    raise BackendError(f"problem {problem.id} (seed {seed}): {e}", retryable=e.retryable,
                                       status=e.status) from e
                log.warning("problem %s seed %d: %s; retrying", problem.id, seed, e)
                await asyncio.sleep(0.5 * 2**attempt)

    async def run(self) -> None:
        await self.check()
        sem = asyncio.Semaphore(self.config.concurrency)

        async def item(problem: Problem, seed: int) -> None:
            async with sem:
                await self.solve(problem, seed)
            self.items_done += 1
            self._progress()

        self._progress()
        async with asyncio.TaskGroup() as tg:
            for problem in self.problems:
                for seed in range(self.config.seeds):
                    tg.create_task(item(problem, seed))
        for spec in self.batched:
            for seed in range(self.config.seeds):
                await self._batch(spec, seed)

    async def _batch(self, spec: StrategySpec, seed: int) -> None:
        """``auto`` over all problems under ``total_tokens`` (per seed), stored at the largest budget."""
        from ..strategies.auto import run_batch  # noqa: PLC0415

        budget = max(self.budgets)
        if all((spec.label, budget, seed, p.id) in self.done_keys for p in self.problems):
            return
        mark = self.clock.enter(len(self.problems))
        try:
            results, allocation = await run_batch(self.problems, self.gen, total_tokens=float(self.config.total_tokens),
                                                  policy=spec.options.get("policy") or None, seed=seed,
                                                  params=self.params, concurrency=self.config.concurrency)
        finally:
            seconds = self.clock.leave(len(self.problems), mark)
        self.allocations.append({"strategy": spec.label, "seed": seed, **allocation})
        for problem, result in zip(self.problems, results):
            await self._store_result(problem, seed, spec, budget, result, seconds / len(self.problems),
                                     pool=f"{spec.label}@total")

    async def _item(self, problem: Problem, seed: int) -> None:
        jobs = []
        if self.pooled and any((s.label, b, seed, problem.id) not in self.done_keys
                               for s in self.pooled for b in self.budgets):
            jobs.append(self._pool(problem, seed))
        for spec in self.specs:
            if spec.pooled or spec in self.batched:
                continue
            if spec.greedy:
                if seed == 0 and (spec.label, 1, 0, problem.id) not in self.done_keys:
                    jobs.append(self._single(problem, 0, spec, 1, pool=GREEDY))
                continue
            for b in self.budgets:
                if (spec.label, b, seed, problem.id) not in self.done_keys:
                    jobs.append(self._single(problem, seed, spec, b, pool=f"{spec.label}@{b}"))
        if jobs:
            await asyncio.gather(*jobs)

    # -- pooled strategies ----------------------------------------------------------------
    async def _store_pool_sample(self, problem: Problem, seed: int, task: AnswerTask, idx: int, c, seconds: float
                                 ) -> None:
        answer = task.extract(c.text)
        (correct,) = await self._grade(problem, [answer])
        row = {"problem_id": problem.id, "seed": seed, "pool": POOL, "idx": idx, "text": c.text,
               "answer": answer, "correct": correct, "finish_reason": c.finish_reason,
               "generated_tokens": c.generated_tokens, "prompt_tokens": c.prompt_tokens, "logprob": c.logprob,
               "sample_seed": c.seed, "seconds": seconds}
        self.store.put_samples(self.run_id, [row])
        self.samples_new += 1
        self.tokens_new += c.generated_tokens

    async def _pool(self, problem: Problem, seed: int) -> None:
        M = self.pool_size
        stored = {s["idx"]: s for s in self.store.get_samples(self.run_id, problem_id=problem.id, seed=seed, pool=POOL)}
        missing = [i for i in range(M) if i not in stored]
        names = sorted({s.scorer for s in self.pooled if s.scorer is not None})
        # generation-time scorers (self-certainty) read the pool's own completions: the pool asks for them
        readers = {name: self._scorer(name) for name in names if self._reads_generation(name)}
        fresh: dict[int, Any] = {}
        if missing:
            ctx = self._context(problem, seed, M)
            task = ctx.task
            # one request per sample (never grouped with n): a resumed pool draws exactly the samples
            # an uninterrupted run would, and each stored seed regenerates its sample
            reqs = [dataclasses.replace(ctx.sample_request(i), alone=True) for i in missing]
            for sc in readers.values():
                reqs = [dataclasses.replace(r, **sc.request_changes()) for r in reqs]
            mark, outstanding = self.clock.enter(len(reqs)), len(reqs)
            try:
                async with aclosing(ctx.stream(reqs)) as stream:  # a failure cancels what is left
                    async for j, c in stream:
                        seconds = self.clock.leave(1, mark)
                        outstanding -= 1
                        if readers:
                            fresh[missing[j]] = c
                        await self._store_pool_sample(problem, seed, task, missing[j], c, seconds)
            finally:
                self.clock.leave(outstanding, mark)
            stored = {s["idx"]: s for s in self.store.get_samples(self.run_id, problem_id=problem.id, seed=seed, pool=POOL)}
            if len(stored) < M:
                raise ConfigError("generator", f"returned {len(stored)} of {M} samples for problem {problem.id}",
                                  "a generator that completes every request")
        # score the pool once per scorer the specs use
        for name in names:
            todo = [i for i in range(M) if name not in stored[i]["scores"]]
            if not todo:
                continue
            if name in readers:  # no call: from the completions generated above (a sample stored by an
                # earlier, interrupted run has none and stays unscored, NaN)
                scores = readers[name].score_generated([fresh.get(i) for i in todo])
                zero = {"generated_tokens": 0.0, "prompt_tokens": 0.0, "calls": 0.0, "seconds": 0.0}
                self.store.set_scores(self.run_id, problem.id, seed, POOL, name, dict(zip(todo, scores)),
                                      {i: zero for i in todo})
                for i, s in zip(todo, scores):
                    stored[i]["scores"][name] = s
                    stored[i]["score_costs"][name] = zero
                continue
            scorer = self._scorer(name)
            ctx = self._context(problem, seed, M, scorer)
            k = len(todo)
            mark = self.clock.enter(k)
            try:
                scores = await scorer.score(problem, [stored[i]["text"] for i in todo], ctx.meter)
            finally:
                dt = self.clock.leave(k, mark)
            u = ctx.usage
            cost = {"generated_tokens": u.generated_tokens / k, "prompt_tokens": u.prompt_tokens / k,
                    "calls": u.calls / k, "seconds": dt / k}
            self.store.set_scores(self.run_id, problem.id, seed, POOL, name, dict(zip(todo, scores)),
                                  {i: cost for i in todo})
            for i, s in zip(todo, scores):
                stored[i]["scores"][name] = s
                stored[i]["score_costs"][name] = cost
        self._pool_results(problem, seed, [stored[i] for i in range(M)])

    def _pool_results(self, problem: Problem, seed: int, pool: list[dict[str, Any]]) -> None:
        base = get_task(problem.task)
        answers = [s["answer"] for s in pool]
        classes = AnswerClasses(base, answers)  # grouped once: subsamples look their answers up
        graded: dict[str, bool] = {}
        for s in pool:
            if s["answer"] is not None:
                graded.setdefault(s["answer"], s["correct"])
        rows = []
        for spec in self.pooled:
            cands = [Candidate(text=s["text"], answer=s["answer"], index=s["idx"], logprob=s["logprob"] or 0.0,
                               score=(s["scores"].get(spec.scorer) if spec.scorer else None),
                               generated_tokens=s["generated_tokens"], finish_reason=s["finish_reason"] or "stop",
                               seed=s["sample_seed"]) for s in pool]
            costs = [self._sample_cost(s, spec.scorer) for s in pool]
            for b in self.budgets:
                if (spec.label, b, seed, problem.id) in self.done_keys:
                    continue
                subsets = subsample_indices(len(pool), b, self.config.subsamples, seed, problem.id, len(pool), b)
                correct, chosen = [], []
                cost = {"generated_tokens": 0.0, "prompt_tokens": 0.0, "calls": 0.0, "seconds": 0.0}
                for sub in subsets:
                    res = select_from(spec.strategy, [cands[i] for i in sub], base, spec.options, answer_classes=classes)
                    ok = any(self._answer_correct(a, graded, base) for a in res.answers[: spec.k]) \
                        if spec.k > 1 else self._answer_correct(res.answer, graded, base)
                    correct.append(1.0 if ok else 0.0)
                    chosen.append(res)
                    for i in sub:
                        for key in cost:
                            cost[key] += costs[i][key]
                r = len(subsets)
                mean = sum(correct) / r
                var = sum((c - mean) ** 2 for c in correct) / r
                first = chosen[0]  # at the largest budget: the whole pool
                rows.append({"strategy": spec.label, "budget": b, "seed": seed, "problem_id": problem.id,
                             "answer": first.answer, "answers": first.answers[: max(spec.k, 1)], "correct": mean,
                             "correct_var": var, "subsamples": r, "pooled": True, "samples": float(b),
                             **{k: v / r for k, v in cost.items()}, "stopped_early": False})
        self.store.put_results(self.run_id, rows)
        self.results_new += len(rows)

    @staticmethod
    def _sample_cost(s: dict[str, Any], scorer: str | None) -> dict[str, float]:
        sc = s["score_costs"].get(scorer, {}) if scorer else {}
        return {"generated_tokens": s["generated_tokens"] + sc.get("generated_tokens", 0.0),
                "prompt_tokens": (s["prompt_tokens"] or 0) + sc.get("prompt_tokens", 0.0),
                "calls": 1.0 + sc.get("calls", 0.0),
                "seconds": (s["seconds"] or 0.0) + sc.get("seconds", 0.0)}

    # -- strategies run per budget --------------------------------------------------------
    async def _single(self, problem: Problem, seed: int, spec: StrategySpec, budget: int, *, pool: str) -> None:
        scorer = self._scorer(spec.scorer)
        width = 1 if spec.greedy else budget  # sequences it keeps in flight, about
        held = 0
        if self.slots is not None and spec.strategy.holds_sequences:
            held = await self.slots.acquire(width)
        mark = self.clock.enter(width)
        try:
            result = await run_strategy(problem, self.gen, spec.strategy, n=budget, scorer=scorer, params=self.params,
                                        seed=seed, options=spec.options)
        finally:
            seconds = self.clock.leave(width, mark)
            if held:
                await self.slots.release(held)
        if result.info.get("failed_calls"):
            # a trajectory ended by a failed call is not the strategy's result: do the run again
            raise BackendError(f"{spec.label}@{budget}: {result.info['failed_calls']} calls failed "
                               f"(first: {result.info['first_error']})", retryable=True)
        await self._store_result(problem, seed, spec, budget, result, seconds, pool=pool)

    async def _store_result(self, problem: Problem, seed: int, spec: StrategySpec, budget: int, result, seconds: float,
                            *, pool: str) -> None:
        task = get_task(problem.task)
        answers = [c.answer for c in result.candidates]
        grades = await self._grade(problem, answers)
        graded: dict[str, bool] = {}
        for a, ok in zip(answers, grades):
            if a is not None:
                graded.setdefault(a, ok)
        chosen = result.answers[: spec.k] if spec.k > 1 else [result.answer]
        ungraded = [a for a in dict.fromkeys(chosen) if a is not None
                    and not any(task.canonical(a) == task.canonical(g) for g in graded)]
        graded.update(zip(ungraded, await self._grade(problem, ungraded)))
        samples = [{"problem_id": problem.id, "seed": seed, "pool": pool, "idx": j, "text": c.text, "answer": c.answer,
                    "correct": ok, "finish_reason": c.finish_reason, "generated_tokens": c.generated_tokens,
                    "prompt_tokens": None, "logprob": c.logprob, "sample_seed": c.seed, "seconds": None,
                    "scores": ({spec.scorer: c.score} if spec.scorer and c.score is not None else {})}
                   for j, (c, ok) in enumerate(zip(result.candidates, grades))]
        ok = any(self._answer_correct(a, graded, task) for a in chosen)
        u = result.usage
        row = {"strategy": spec.label, "budget": budget, "seed": seed, "problem_id": problem.id,
               "answer": result.answer, "answers": result.answers[: max(spec.k, 1)], "correct": 1.0 if ok else 0.0,
               "correct_var": None, "subsamples": 1, "pooled": False, "samples": float(len(result.candidates)),
               "generated_tokens": float(u.generated_tokens), "prompt_tokens": float(u.prompt_tokens),
               "calls": float(u.calls), "seconds": seconds,
               "stopped_early": result.stopped_early}
        with self.store.transaction():
            self.store.put_samples(self.run_id, samples, commit=False)
            self.store.put_results(self.run_id, [row], commit=False)
        self.samples_new += len(samples)
        self.tokens_new += u.generated_tokens
        self.results_new += 1


async def run_eval(store: Store, run_id: str, generator: Generator, *,
                   scorers: dict[str, Callable[[], Scorer]] | None = None,
                   on_progress: Callable[[Progress], None] | None = None,
                   concurrency: int | None = None) -> dict[str, int]:
    """Run (or resume) ``run_id`` with ``generator`` until every result is stored.

    ``scorers`` adds scorer factories by name (e.g. ``{"oracle": OracleScorer}`` in tests);
    ``concurrency`` overrides the stored number of problems in flight (it changes no result).
    The run's status becomes ``done``, or ``interrupted``/``failed`` if it stops early. Returns
    the run's row counts.

    Errors come out as one error, never an ``ExceptionGroup``: the first item that fails stops
    the others (what they stored stays stored) and its error is raised — a
    :class:`~infscale.errors.ConfigError` (the caller's fault), a
    :class:`~infscale.errors.BackendError` naming the problem and seed whose call failed, a
    :class:`~.store.StoreError` when the database cannot be written (a full disk), or
    ``KeyboardInterrupt`` when the run was interrupted (cancelled, Ctrl-C, SIGTERM). A run
    another process is running is refused (:meth:`Store.lock_run`).
    """
    scorers = scorers or {}
    run = store.get_run(run_id)
    config = EvalConfig.from_dict(run["config"])
    specs = config.validate(scorers)
    if concurrency is not None:
        config.concurrency = concurrency
    problems = [_problem_from_row(r) for r in store.get_problems(run_id)]
    if not problems:
        raise ConfigError("run", f"run {run_id} holds no problems (it failed while it was being created)",
                          "start a new run with eval --dataset")
    with store.lock_run(run_id):
        h = _Harness(store, run_id, config, specs, problems, generator, scorers=scorers, on_progress=on_progress)
        status = "failed"
        try:
            await h.run()
            status = "done"
            if h.allocations:  # --total-tokens: what auto's allocation gave each problem
                from ..home import subdir  # noqa: PLC0415

                (subdir("reports") / f"{run_id}-allocation.json").write_text(json.dumps(h.allocations, indent=1))
        except (asyncio.CancelledError, KeyboardInterrupt):
            status = "interrupted"
            raise
        except BaseException as e:  # noqa: BLE001 - one project error out of the task group's
            error = unwrap_error(e, store)
            if isinstance(error, (KeyboardInterrupt, asyncio.CancelledError)):
                status = "interrupted"
            if error is e:
                raise
            raise error from e
        finally:
            try:
                store.set_status(run_id, status, add_seconds=time.monotonic() - h.started)
            except (sqlite3.Error, OSError) as e:  # the disk is full: the error that got here says so
                log.warning("could not record run %s as %s: %s", run_id, status, e)
    return store.counts(run_id)


_DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO})


def _leaves(e: BaseException) -> list[BaseException]:
    if isinstance(e, BaseExceptionGroup):
        return [leaf for sub in e.exceptions for leaf in _leaves(sub)]
    return [e]


def unwrap_error(e: BaseException, store: Store | None = None) -> BaseException:
    """The one error to report for ``e`` (a task group's group, or a plain error): an
    interrupt first, then the caller's fault (ConfigError), a backend fault, another
    infscale error, a database fault (as a :class:`StoreError`), else the first error as it is."""
    leaves = _leaves(e)
    for kinds in ((KeyboardInterrupt, asyncio.CancelledError), (ConfigError,), (BackendError,), (InfscaleError,)):
        for leaf in leaves:
            if isinstance(leaf, kinds):
                return KeyboardInterrupt() if isinstance(leaf, asyncio.CancelledError) else leaf
    for leaf in leaves:
        if isinstance(leaf, sqlite3.Error) or (isinstance(leaf, OSError) and leaf.errno in _DISK_ERRNOS):
            return store_error(store.path if store is not None else "(unknown)", leaf)
    return leaves[0]


def metrics_inputs(store: Store, run_id: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]] | None]:
    """``(results, samples)`` for :func:`infscale.evaluation.metrics.summarize`: every stored
    result row, and the independent pool samples (``problem_id``, ``seed``, ``answer``,
    ``correct``, ``scores``, ``logprob``) for coverage / pass@k, majority@k, the verifiers' rates
    and the abstention curve, or ``None`` when the run has no pool."""
    results = store.get_results(run_id)
    pool = [{"problem_id": s["problem_id"], "seed": s["seed"], "idx": s["idx"], "answer": s["answer"],
             "correct": s["correct"], "scores": s["scores"], "logprob": s["logprob"]}
            for s in store.get_samples(run_id, pool=POOL)]
    return results, (pool or None)
