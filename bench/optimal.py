"""Compute-optimal inference: `auto` against fixed strategies on fresh problems, paired.

1. Tuning: an eval of majority and best-of-N (arith-check) at budgets 1, 2, 4, 8, 16 on the
   seeded arithmetic generator with mixed difficulty (1-4 steps, seed 1), then `infscale tune
   --objective tokens` on it (a policy under a temporary INFSCALE_HOME-independent path).
2. Fresh problems (seed 2): the same eval (the fixed strategies, offline from one pool of 16
   samples per problem), and `auto` with that policy, capped at 16, run live on the embedded model.
3. Per fixed cell (strategy, budget): accuracy and generated tokens per problem on the same
   problems. The fixed cell auto matches: among the cells whose accuracy auto matches or beats,
   the most accurate (ties: the cheapest) -- the smallest fixed budget that reaches the accuracy
   auto reaches. X = auto's generated tokens / that cell's; Y = auto's accuracy - the best fixed
   strategy's at budget 16, with its 95% paired interval (Newcombe; exact McNemar / sign-flip test).

Last line: ``optimal: tokens_ratio=X accuracy_delta=Y``; the line before: Y's interval.
Goal: X <= 0.5 with Y's interval including or above 0.

    python bench/optimal.py [--tune-problems 40] [--problems 20] [--max-tokens 128]
                            [--tune-run RUN_ID] [--fixed-run RUN_ID] [--eval-minutes M] [--db PATH]

``--tune-run`` / ``--fixed-run`` reuse (and resume, if incomplete) stored runs of exactly these
grids instead of starting new ones. Both evals run together through one engine; with
``--eval-minutes M`` they stop after M minutes and only the problems whose pools are complete
are used (printed), so the problem count is whatever the machine allowed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

import infscale
from infscale.api import load_generator
from infscale.datasets import load_dataset
from infscale.evaluation import metrics
from infscale.evaluation.harness import EvalConfig, run_eval, start_run
from infscale.evaluation.store import Store
from infscale.evaluation.tune import TuneConfig, save_policy, tune
from infscale.tasks import get_task

STRATEGIES = ["majority", "best-of-n:scorer=arith-check"]
BUDGETS = [1, 2, 4, 8, 16]


def new_run(store: Store, gen, dataset: str, limit: int, max_tokens: int) -> str:
    cfg = EvalConfig(dataset=dataset, strategies=list(STRATEGIES), budgets=list(BUDGETS), limit=limit,
                     params={"max_tokens": max_tokens}, model="smollm2-135m")
    return start_run(store, cfg, load_dataset(dataset, limit=limit), chat=gen.capabilities.chat_template)


async def run_evals(store: Store, gen, runs: list[tuple[str, int]], minutes: float | None) -> None:
    """Run (or resume) the eval runs together through one engine; after ``minutes`` stop them
    (the problems whose pools are complete are used; the runs can be resumed later)."""
    tasks = [asyncio.create_task(run_eval(store, rid, gen, concurrency=c)) for rid, c in runs]
    done, pending = await asyncio.wait(tasks, timeout=None if minutes is None else minutes * 60)
    for t in pending:
        t.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    for t in done:
        t.result()


def complete_problems(store: Store, rid: str) -> list[str]:
    """Problems of ``rid`` with every (strategy, budget) result stored, in dataset order."""
    have: dict[str, set] = {}
    for r in store.get_results(rid):
        if r["seed"] == 0:
            have.setdefault(r["problem_id"], set()).add((r["strategy"], int(r["budget"])))
    need = len(STRATEGIES) * len(BUDGETS)
    return [p["problem_id"] for p in store.get_problems(rid) if len(have.get(p["problem_id"], ())) >= need]


async def run_auto(gen, problems, policy_path: str, max_tokens: int, concurrency: int):
    sem = asyncio.Semaphore(concurrency)
    params = infscale.SamplingParams(max_tokens=max_tokens)

    async def one(p):
        async with sem:
            return await infscale.run(p, gen, "auto", n=16, seed=0, params=params, options={"policy": policy_path})

    return await asyncio.gather(*(one(p) for p in problems))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tune-problems", type=int, default=40)
    ap.add_argument("--problems", type=int, default=20)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--tune-run", default=None)
    ap.add_argument("--fixed-run", default=None)
    ap.add_argument("--db", default=None, help="run database (default INFSCALE_HOME/runs/infscale.sqlite)")
    ap.add_argument("--concurrency", type=int, default=8, help="problems in flight (split between the two evals)")
    ap.add_argument("--tune-as-is", action="store_true",
                    help="with --tune-run: tune on its complete problems without resuming it")
    ap.add_argument("--eval-minutes", type=float, default=None,
                    help="stop the evals after this long and use the problems completed (a loaded machine)")
    args = ap.parse_args()

    t_start = time.monotonic()
    gen = load_generator("smollm2-135m", n_threads="auto")
    store = Store(args.db)
    tune_run = args.tune_run or new_run(store, gen, "arith:seed=1,steps=1-4", args.tune_problems, args.max_tokens)
    fixed_run = args.fixed_run or new_run(store, gen, "arith:seed=2,steps=1-4", args.problems, args.max_tokens)
    print(f"tuning run {tune_run}, fresh run {fixed_run}", flush=True)
    t0 = time.monotonic()
    todo = [(fixed_run, args.concurrency // 2)] if args.tune_as_is else \
        [(tune_run, args.concurrency // 2), (fixed_run, args.concurrency // 2)]
    asyncio.run(run_evals(store, gen, todo, args.eval_minutes))
    print(f"  evals: {time.monotonic() - t0:.0f} s; complete problems: tuning "
          f"{len(complete_problems(store, tune_run))}, fresh {len(complete_problems(store, fixed_run))}", flush=True)
    policy = tune(store, [tune_run], "optimal-bench", TuneConfig(objective="tokens"))
    tmp = Path(tempfile.mkdtemp(prefix="infscale-optimal-"))
    path = save_policy(policy, str(tmp / "optimal-bench.json"))
    from infscale.cli.tune import describe  # noqa: PLC0415

    print(describe(policy), flush=True)

    rows = store.get_results(fixed_run)
    pids = complete_problems(store, fixed_run)
    data = {p["problem_id"]: p["data"] for p in store.get_problems(fixed_run)}
    problems = [infscale.Problem(question=data[i]["question"], id=i, task=data[i].get("task") or "math",
                                 reference=data[i]["reference"]) for i in pids]
    t0 = time.monotonic()
    results = asyncio.run(run_auto(gen, problems, str(path), args.max_tokens, args.concurrency))
    print(f"  auto on {len(problems)} problems in {time.monotonic() - t0:.0f} s", flush=True)
    task = get_task("math")
    auto_acc = np.array([1.0 if r.answer is not None and task.grade(r.answer, p) else 0.0
                         for r, p in zip(results, problems)])
    auto_tok = np.array([float(r.usage.generated_tokens) for r in results])

    cells: dict[tuple[str, int], dict[str, float]] = {}
    for r in rows:
        if r["seed"] != 0:
            continue
        c = cells.setdefault((r["strategy"], int(r["budget"])), {})
        c[r["problem_id"]] = (float(r["correct"]), float(r["generated_tokens"]))
    table = []
    for (spec, b), per in sorted(cells.items()):
        acc = np.array([per[i][0] for i in pids])
        tok = np.array([per[i][1] for i in pids])
        table.append((spec, b, float(acc.mean()), float(tok.mean()), acc))
    print(f"\n{'strategy':<30} {'budget':>6} {'accuracy':>9} {'tokens':>8}")
    for spec, b, a, t, _ in table:
        print(f"{spec:<30} {b:>6} {a:>9.3f} {t:>8.1f}")
    print(f"{'auto (policy, cap 16)':<30} {'':>6} {auto_acc.mean():>9.3f} {auto_tok.mean():>8.1f}")
    decisions = Counter((r.info["decision"]["bin"], r.info["decision"]["action"], r.info["decision"].get("spec"),
                         r.info["decision"]["budget"]) for r in results)
    print("auto decisions: " + "; ".join(f"bin {b}: {a} {s or ''}@{n} x{c}" for (b, a, s, n), c in sorted(decisions.items())))
    sep = [s for s in policy.get("signals", []) if s.get("spearman") is not None]
    if sep:
        print("tuning signal separation (Spearman vs the other samples' accuracy): "
              + ", ".join(f"{s['signal']}@{s['probe']} {s['spearman']:+.2f}" for s in sep))

    matched = [c for c in table if c[2] <= auto_acc.mean() + 1e-12]
    ref = max(matched, key=lambda c: (c[2], -c[3])) if matched else None
    at16 = max((c for c in table if c[1] == max(BUDGETS)), key=lambda c: c[2])
    cmp = metrics.paired_comparison(auto_acc, at16[4])
    ratio = float(auto_tok.mean() / ref[3]) if ref is not None and ref[3] > 0 else float("nan")
    print(f"\nproblems: {len(problems)}; fixed cell auto matches: "
          + (f"{ref[0]}@{ref[1]} (accuracy {ref[2]:.3f}, {ref[3]:.1f} tokens)" if ref else "none")
          + f"; best fixed at 16: {at16[0]} (accuracy {at16[2]:.3f}, {at16[3]:.1f} tokens); "
          f"wall {time.monotonic() - t_start:.0f} s")
    print(f"accuracy_delta 95% paired interval: [{cmp['interval'][0]:+.3f}, {cmp['interval'][1]:+.3f}] "
          f"(W/L/T {cmp['wins']}/{cmp['losses']}/{cmp['ties']}, {cmp['test']} p={cmp['p_value']:.3g})")
    print(f"optimal: tokens_ratio={ratio:.2f} accuracy_delta={cmp['diff']:+.3f}")
    store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
