"""Ray-distributed evaluation: the harness's ``(problem, seed)`` items run on a Ray cluster.

``infscale eval ... --ray [ADDRESS] [--workers K]`` (:func:`run_eval_ray`). The driver (the
process that runs ``eval``) starts ``K`` Ray actors; each owns its generator (an embedded engine
with its own threads, or the HTTP backends), built in the actor from a picklable factory. Each
worker learns its backend while it starts (an HTTP server's capability probe). The driver hands
out items, each to the worker with the fewest per slot: a worker works on at most
``concurrency`` at once and holds :data:`AHEAD` more, sent ahead so that a slot that frees starts
the next item without a round trip to the driver. Each worker solves an item with the harness's
own unit of work (:meth:`~.harness._Harness.solve`: the pool, the per-budget runs, grading,
scoring, the results) against a private in-memory store seeded with what the run's store already
holds for that item. When the item is done the worker returns its
rows, and the driver — the only writer of the run's SQLite store — stores them (samples and
scores first, results last), so ``--resume`` works as for a single process, and the progress
bar counts the items of the whole cluster.

A worker that dies mid-run (its process or node is lost, or it is killed) has the items it held
handed to the remaining workers. Nothing it was working on had been stored, and every stored row
has a unique key, so no sample is lost and none is stored twice; with a deterministic generator
(``--reproducible``, HTTP backends with seeds, the fakes) the stored numbers equal a
single-process run's. Each sample's seconds are the processor-sharing wall time of its own worker
(:class:`~.harness.ShareClock` per worker).

Ray is an extra (``pip install 'infscale[ray]'``) imported only here and only when called.
``--total-tokens`` (auto over the whole batch in one allocation) is not distributed and is refused.
"""

from __future__ import annotations

import logging
import os
import secrets
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from ..backends.base import Generator
from ..errors import BackendError, ConfigError, InfscaleError
from ..scorers import Scorer
from .harness import POOL, EvalConfig, Progress, ShareClock, _Harness, _problem_from_row
from .store import Store

__all__ = ["import_ray", "run_eval_ray", "worker_names"]

log = logging.getLogger("infscale.evaluation")

NAME_PREFIX = "infscale-eval"


def import_ray():
    """The ``ray`` module, or a one-line ConfigError naming the install command."""
    try:
        import ray  # noqa: PLC0415
    except ImportError:
        raise ConfigError("--ray", "needs the ray package, which is not installed",
                          "pip install 'infscale[ray]'") from None
    return ray


def worker_names(ray, run_id: str) -> list[str]:
    """The names of the live Ray workers of ``run_id`` (named ``infscale-eval-RUN-...``)."""
    return sorted(a["name"] if isinstance(a, dict) else a for a in ray.util.list_named_actors()
                  if (a["name"] if isinstance(a, dict) else a).startswith(f"{NAME_PREFIX}-{run_id}-"))


class _Carried(Exception):
    """A project error on its way from a worker to the driver: its class, text and attributes
    (a ConfigError's constructor takes three arguments, so it does not pickle as it is)."""


def _carry(e: BaseException) -> _Carried:
    return _Carried(type(e), str(e), dict(vars(e)))


def _unpack(c: _Carried) -> BaseException:
    kind, text, attrs = c.args
    e = kind.__new__(kind)
    BaseException.__init__(e, text)
    e.__dict__.update(attrs)
    return e


class EvalWorker:
    """One Ray actor's state: its generator, its share clock, and the item runner.

    A failure while building the generator is kept and raised by :meth:`ready` as the
    project's own error (a missing model is a ConfigError, not a dead actor)."""

    def __init__(self, config: dict[str, Any], make_generator: Callable[[], Generator],
                 scorers: dict[str, Callable[[], Scorer]], concurrency: int | None):
        self.config = EvalConfig.from_dict(config)
        self.scorers = scorers
        self.make_generator = make_generator
        self.concurrency = concurrency
        self.gen: Generator | None = None
        self.clock = ShareClock()
        self.grade_limit = None
        self.active: Any = None  # asyncio.Semaphore(items worked on at once), made in ready()
        self.checked = False

    async def ready(self) -> int:
        """Build the generator; the number of items this worker takes at once."""
        try:
            return await self._ready()
        except InfscaleError as e:
            raise _carry(e) from None

    async def _ready(self) -> int:
        import asyncio  # noqa: PLC0415

        from .harness import GRADE_CONCURRENCY  # noqa: PLC0415

        self.specs = self.config.validate(self.scorers)
        self.gen = self.make_generator()
        # learn the backend now (an HTTP server's capability probe: several sequential requests),
        # while the workers start, not on the first item with every item of the worker waiting
        await self.gen.ensure_ready()
        self.grade_limit = asyncio.Semaphore(GRADE_CONCURRENCY)
        if self.concurrency is not None:
            limit = self.concurrency
        elif hasattr(self.gen, "best_concurrency"):  # the embedded engine: what keeps its batch full
            limit = int(self.gen.best_concurrency(max(self.config.budgets)))
        else:
            limit = self.config.concurrency
        self.active = asyncio.Semaphore(limit)
        return limit

    async def solve(self, run_id: str, problem_row: dict[str, Any], seed: int, done_keys: list[list],
                    pool_samples: list[dict[str, Any]]) -> dict[str, Any]:
        """Solve one item as the harness does, against an in-memory store holding what the run's
        store held for it; the item's rows (every sample of the problem and seed, every result)
        and what it generated."""
        try:
            async with self.active:  # items sent ahead wait here, in the worker, for a free slot
                return await self._solve(run_id, problem_row, seed, done_keys, pool_samples)
        except InfscaleError as e:
            raise _carry(e) from None

    async def _solve(self, run_id: str, problem_row: dict[str, Any], seed: int, done_keys: list[list],
                     pool_samples: list[dict[str, Any]]) -> dict[str, Any]:
        store = Store(":memory:")
        try:
            store.create_run(self.config.to_dict(), run_id)
            store.put_problems(run_id, [problem_row])
            store.put_samples(run_id, pool_samples)
            problem = _problem_from_row(problem_row)
            h = _Harness(store, run_id, self.config, self.specs, [problem], self.gen, scorers=self.scorers,
                         on_progress=None)
            h.done_keys = {tuple(k) for k in done_keys}
            h.clock, h.grade_limit = self.clock, self.grade_limit  # shared by the items in flight here
            if not self.checked:
                await h.check()
                self.checked = True
            await h.solve(problem, seed)
            return {"samples": store.get_samples(run_id), "results": store.get_results(run_id),
                    "samples_new": h.samples_new, "results_new": h.results_new, "tokens_new": h.tokens_new}
        finally:
            store.close()

    async def close(self) -> None:
        if self.gen is not None:
            await self.gen.aclose()


def _store_item(store: Store, run_id: str, out: dict[str, Any], sent: list[dict[str, Any]]) -> None:
    """Store what a worker returned for one item: new samples, new scores of samples that were
    stored before, then the results (so a result is never stored without its samples)."""
    before = {(s["problem_id"], s["seed"], s["pool"], s["idx"]): s for s in sent}
    fresh = [s for s in out["samples"] if (s["problem_id"], s["seed"], s["pool"], s["idx"]) not in before]
    with store.transaction():
        store.put_samples(run_id, fresh, commit=False)
    rescored: dict[tuple[str, int, str, str], tuple[dict[int, float], dict[int, dict]]] = {}
    for s in out["samples"]:
        old = before.get((s["problem_id"], s["seed"], s["pool"], s["idx"]))
        if old is None:
            continue
        for name, score in s["scores"].items():
            if name not in old["scores"]:
                scores, costs = rescored.setdefault((s["problem_id"], s["seed"], s["pool"], name), ({}, {}))
                scores[s["idx"]] = score
                costs[s["idx"]] = s["score_costs"].get(name, {})
    for (pid, seed, pool, name), (scores, costs) in rescored.items():
        store.set_scores(run_id, pid, seed, pool, name, scores, costs)
    store.put_results(run_id, out["results"])


def _first_line(e: BaseException) -> str:
    lines = [x.strip() for x in str(e).splitlines() if x.strip()]
    return lines[0] if lines else type(e).__name__


def _cause(ray, e: BaseException) -> BaseException:
    """The error a worker raised (Ray wraps it in a RayTaskError)."""
    cause = e.cause if isinstance(e, ray.exceptions.RayTaskError) and e.cause is not None else e
    return _unpack(cause) if isinstance(cause, _Carried) else cause


def run_eval_ray(store: Store, run_id: str, make_generator: Callable[[], Generator], *, workers: int = 2,
                 address: str | None = None, scorers: dict[str, Callable[[], Scorer]] | None = None,
                 on_progress: Callable[[Progress], None] | None = None,
                 concurrency: int | None = None) -> dict[str, int]:
    """Run (or resume) ``run_id`` on a Ray cluster with ``workers`` actors; the run's row counts.

    ``make_generator`` is called once in each worker (it must be picklable: a module-level
    function or a ``functools.partial`` of one); ``scorers`` adds scorer factories by name, as
    for :func:`~.harness.run_eval`; ``concurrency`` is the items each worker takes at once
    (default: the stored setting, or what keeps an embedded engine's batch full). The cluster
    is ``ray.init(address)`` — a new local one when ``address`` is None — unless Ray is already
    initialised in this process (then that one is used and left running). Errors, statuses and
    the run lock are as for :func:`~.harness.run_eval`.
    """
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConfigError("--workers", f"got {workers!r}", "an integer >= 1")
    if concurrency is not None and concurrency < 1:
        raise ConfigError("concurrency", f"got {concurrency}", "an integer >= 1")
    scorers = scorers or {}
    run = store.get_run(run_id)
    config = EvalConfig.from_dict(run["config"])
    config.validate(scorers)
    if config.total_tokens is not None:
        raise ConfigError("--ray", "--total-tokens runs auto over the whole batch in one process and is not "
                          "distributed", "--ray without --total-tokens, or --total-tokens without --ray")
    rows = store.get_problems(run_id)
    if not rows:
        raise ConfigError("run", f"run {run_id} holds no problems (it failed while it was being created)",
                          "start a new run with eval --dataset")
    ray = import_ray()
    with store.lock_run(run_id):
        started = time.monotonic()
        status = "failed"
        own = not ray.is_initialized()
        actors: dict[int, Any] = {}
        try:
            if own:
                try:
                    ray.init(address=address or None, include_dashboard=False, logging_level=logging.WARNING,
                             **({} if address else {"num_cpus": max(workers, os.cpu_count() or 1)}))
                except (ConnectionError, RuntimeError, ValueError) as e:
                    where = f"join the Ray cluster at {address}" if address else "start a local Ray cluster"
                    raise ConfigError("--ray", f"cannot {where}: {_first_line(e)}",
                                      "a running cluster's address (auto, HOST:6379, ray://HOST:10001), or no "
                                      "ADDRESS for a local cluster") from None
            cpus = ray.cluster_resources().get("CPU", 0)
            if cpus < workers:
                raise ConfigError("--workers", f"{workers} workers need {workers} CPUs; the Ray cluster has "
                                  f"{cpus:g}", f"--workers {max(int(cpus), 1)} or fewer, or a larger cluster")
            _drive(ray, store, run_id, config, rows, make_generator, workers, scorers, on_progress, concurrency,
                   started, actors)
            status = "done"
        except KeyboardInterrupt:
            status = "interrupted"
            raise
        finally:
            _stop(ray, actors)
            try:
                store.set_status(run_id, status, add_seconds=time.monotonic() - started)
            except Exception as e:  # noqa: BLE001 - the disk is full: the error that got here says so
                log.warning("could not record run %s as %s: %s", run_id, status, e)
            if own and ray.is_initialized():
                ray.shutdown()
    return store.counts(run_id)


def _stop(ray, actors: dict[int, Any]) -> None:
    closing = []
    for a in actors.values():
        try:
            closing.append(a.close.remote())
        except Exception:  # noqa: BLE001 - a dead actor has nothing to close
            pass
    if closing:
        try:
            ray.wait(closing, num_returns=len(closing), timeout=10)
        except Exception:  # noqa: BLE001
            pass
    for a in actors.values():
        ray.kill(a)


#: Items a worker holds beyond the ones it works on: they wait in the worker, so a slot that
#: frees starts the next item at once instead of after a round trip to the driver (the result
#: stored, a new item sent). One, because an item sent ahead cannot move to a worker that runs
#: dry at the end of the run.
AHEAD = 1


def _drive(ray, store: Store, run_id: str, config: EvalConfig, rows: list[dict[str, Any]],
           make_generator: Callable[[], Generator], workers: int, scorers: dict[str, Callable[[], Scorer]],
           on_progress: Callable[[Progress], None] | None, concurrency: int | None, started: float,
           actors: dict[int, Any]) -> None:
    """Hand out the items, store what comes back, hand a dead worker's items to the others."""
    remote = ray.remote(EvalWorker)
    token = secrets.token_hex(3)
    for i in range(workers):
        actors[i] = remote.options(name=f"{NAME_PREFIX}-{run_id}-{i}-{token}", num_cpus=1, max_concurrency=1000,
                                   max_restarts=0).remote(config.to_dict(), make_generator, scorers, concurrency)
    limits: dict[int, int] = {}
    for i, ref in [(i, a.ready.remote()) for i, a in actors.items()]:
        try:
            limits[i] = int(ray.get(ref))
        except ray.exceptions.RayTaskError as e:
            raise _cause(ray, e) from None
        except ray.exceptions.RayActorError as e:
            raise BackendError(f"Ray worker {i} died while starting: {_first_line(e)}") from None
    done = store.result_keys(run_id)
    todo = deque((row, seed) for row in rows for seed in range(config.seeds))
    total = len(todo)
    busy = {i: 0 for i in actors}
    inflight: dict[Any, tuple[int, tuple[dict[str, Any], int], list[dict[str, Any]]]] = {}
    stats = {"done": 0, "samples": 0, "results": 0, "tokens": 0}
    last_death: BaseException | None = None

    def progress() -> None:
        if on_progress is not None:
            on_progress(Progress(done=stats["done"], total=total, samples=stats["samples"], results=stats["results"],
                                 seconds=time.monotonic() - started, generated_tokens=stats["tokens"]))

    progress()
    ahead = {i: limits[i] + AHEAD for i in limits}
    while todo or inflight:
        while todo:  # the live worker with the fewest items per slot gets the next one
            free = [i for i in actors if busy[i] < ahead[i]]
            if not free:
                break
            i = min(free, key=lambda j: busy[j] / limits[j])
            row, seed = todo.popleft()
            pid = row["problem_id"]
            sent = store.get_samples(run_id, problem_id=pid, seed=seed, pool=POOL)
            keys = [list(k) for k in done if k[3] == pid]
            inflight[actors[i].solve.remote(run_id, row, seed, keys, sent)] = (i, (row, seed), sent)
            busy[i] += 1
        if not inflight:
            raise BackendError(f"every Ray worker died; {len(todo)} of {total} items are not done "
                               f"(the last death: {_first_line(last_death) if last_death else 'unknown'})")
        ready, _ = ray.wait(list(inflight), num_returns=1, timeout=1.0)
        for ref in ready:
            i, item, sent = inflight.pop(ref)
            busy[i] -= 1
            try:
                out = ray.get(ref)
            except ray.exceptions.RayActorError as e:  # the worker died: its items go to the others
                last_death = e
                if i in actors:
                    log.warning("Ray worker %d died; its items go to the other workers", i)
                    del actors[i]
                todo.appendleft(item)
                continue
            except ray.exceptions.RayTaskError as e:
                raise _cause(ray, e) from None
            _store_item(store, run_id, out, sent)
            stats["done"] += 1
            stats["samples"] += out["samples_new"]
            stats["results"] += out["results_new"]
            stats["tokens"] += out["tokens_new"]
            progress()
