"""The evaluation runs behind the claims, and how they are run: through the normal harness.

A claim names the runs it needs as :class:`RunSpec` s (dataset, strategy specs, budgets, sampling
settings). A run's id is derived from its full configuration (``claim-`` + a hash), so the
same configuration is one stored run: running a claim again reuses every stored sample, a run
killed half way resumes where it stopped, and claims that need the same run (``monkeys``,
``flaws``, ``bom`` and ``rpc`` share one pool of samples) generate it once.

Tasks: every claim runs on the seeded arithmetic generator ``arith`` at one or two operations
(``steps=1-2``), where SmolLM2-135M is in range (one sample right about 9% of the time, eight
samples cover about a third of the problems: the demo run, which used the generator's seed 0).
The difficulty and the token limit were chosen on seed 0; every claim reports on seed 1401,
problems no setting was tuned on.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from collections.abc import Callable
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any

from ..errors import ConfigError
from ..evaluation.harness import EvalConfig, metrics_inputs, run_eval, start_run
from ..evaluation.store import Store

__all__ = ["RunSpec", "REPORT_SEED", "TUNE_SEED", "run_id_of", "eval_config", "ensure_run", "RunOutcome"]

TUNE_SEED = 0  # the arith seed the difficulty and token limit were chosen on (the demo)
REPORT_SEED = 1401  # the arith seed every claim reports on (never tuned on)
DATASET = f"arith:seed={REPORT_SEED},steps=1-2"
MAX_TOKENS = 96


@dataclass(frozen=True)
class RunSpec:
    """One evaluation run a claim needs: ``problems`` problems of ``dataset``, the strategy specs
    at every budget in ``budgets`` (``infscale eval`` semantics: pooled strategies share one pool
    of max(budgets) samples per problem)."""

    strategies: tuple[str, ...]
    budgets: tuple[int, ...]
    problems: int
    dataset: str = DATASET
    max_tokens: int = MAX_TOKENS
    temperature: float = 0.7
    subsamples: int = 20
    params: tuple[tuple[str, Any], ...] = field(default=())

    def describe(self) -> str:
        return (f"infscale eval --dataset {self.dataset} --limit {self.problems} --strategies "
                f"{','.join(self.strategies)} --budgets {','.join(map(str, self.budgets))} "
                f"--max-tokens {self.max_tokens} --temperature {self.temperature:g}")


def eval_config(spec: RunSpec, *, model: str | None, backend_url: str | None) -> EvalConfig:
    params = {"temperature": spec.temperature, "top_p": 1.0, "top_k": 0, "min_p": 0.0, "max_tokens": spec.max_tokens,
              **dict(spec.params)}
    return EvalConfig(dataset=spec.dataset, strategies=list(spec.strategies), budgets=list(spec.budgets), seeds=1,
                      limit=spec.problems, model=model, backend_url=backend_url, params=params,
                      subsamples=spec.subsamples)


def _identity(config: dict[str, Any]) -> dict[str, Any]:
    """What decides a run's samples: the configuration without ``concurrency`` and without
    settings left at their defaults (so a setting added to EvalConfig later, at its default,
    does not change the identity of runs stored before it existed)."""
    defaults = {f.name: (f.default_factory() if f.default_factory is not MISSING else f.default)  # type: ignore[misc]
                for f in fields(EvalConfig)}
    return {k: v for k, v in config.items() if k != "concurrency" and not (k in defaults and v == defaults[k])}


def run_id_of(config: EvalConfig) -> str:
    """``claim-`` + a hash of the configuration that decides the samples (:func:`_identity`)."""
    digest = hashlib.blake2b(json.dumps(_identity(config.to_dict()), sort_keys=True).encode(),
                             digest_size=6).hexdigest()
    return f"claim-{digest}"


def find_run(store: Store, config: EvalConfig) -> dict[str, Any] | None:
    """The stored run of this configuration: by its id, else any ``claim-`` run whose stored
    configuration has the same identity (runs stored under an earlier id scheme)."""
    try:
        return store.get_run(run_id_of(config))
    except ConfigError:
        pass
    want = _identity(config.to_dict())
    matches = [r for r in store.list_runs() if r["run_id"].startswith("claim-") and _identity(r["config"]) == want]
    return max(matches, key=lambda r: (r["status"] == "done", r["updated"])) if matches else None


@dataclass
class RunOutcome:
    """A finished run: its id, the stored results and pool samples, the problem count, the wall
    seconds spent on it (all sessions) and whether this call generated anything."""

    run_id: str
    spec: RunSpec
    results: list[dict[str, Any]]
    samples: list[dict[str, Any]]
    problems: int
    seconds: float
    reused: bool

    @property
    def command(self) -> str:
        return self.spec.describe()


def _pool_samples_with_scores(store: Store, run_id: str) -> list[dict[str, Any]]:
    """Pool samples with everything the analyses read: answer, correctness, scores, log-prob,
    generated tokens (``metrics_inputs`` plus the columns it leaves out)."""
    rows = store.get_samples(run_id, pool="pool")
    return [{"problem_id": s["problem_id"], "seed": s["seed"], "idx": s["idx"], "answer": s["answer"],
             "correct": s["correct"], "scores": s["scores"], "logprob": s["logprob"],
             "generated_tokens": s["generated_tokens"], "task": "math"} for s in rows]


def ensure_run(store: Store, spec: RunSpec, *, model: str | None = None, backend_url: str | None = None,
               generator_factory: Callable[[EvalConfig], Any] | None = None,
               log: Callable[[str], None] | None = None) -> RunOutcome:
    """Create, resume or reuse the stored run of ``spec`` and return its data.

    ``generator_factory(config)`` gives the generator (default: the embedded engine or the
    server of the configuration, loaded only when something is left to generate)."""
    import asyncio  # noqa: PLC0415

    log = log or (lambda msg: print(f"infscale: {msg}", file=sys.stderr, flush=True))
    config = eval_config(spec, model=model, backend_url=backend_url)
    config.validate()
    run = find_run(store, config)
    run_id = run["run_id"] if run is not None else run_id_of(config)
    reused = run is not None and run["status"] == "done"
    if not reused:
        gen = (generator_factory or _default_generator)(config)
        if run is None:
            from ..datasets import load_dataset  # noqa: PLC0415

            problems = load_dataset(config.dataset, limit=config.limit)
            chat = getattr(getattr(gen, "capabilities", None), "chat_template", True)
            start_run(store, config, problems, chat=chat, run_id=run_id)
            log(f"run {run_id}: {spec.describe()}")
        else:
            log(f"run {run_id}: resuming ({run['status']})")
        conc = gen.best_concurrency(max(config.budgets)) if hasattr(gen, "best_concurrency") else None
        t0 = time.monotonic()
        asyncio.run(run_eval(store, run_id, gen, concurrency=conc))
        log(f"run {run_id}: done in {time.monotonic() - t0:.0f} s")
    else:
        log(f"run {run_id}: reusing the stored run")
    results, _ = metrics_inputs(store, run_id)
    return RunOutcome(run_id=run_id, spec=spec, results=results, samples=_pool_samples_with_scores(store, run_id),
                      problems=len(store.get_problems(run_id)), seconds=float(store.get_run(run_id)["seconds"] or 0.0),
                      reused=reused)


def _default_generator(config: EvalConfig):
    from ..api import load_generator  # noqa: PLC0415

    return load_generator(config.model, backend_url=config.backend_url)


def spec_dict(spec: RunSpec) -> dict[str, Any]:
    return asdict(spec)
