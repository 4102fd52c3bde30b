"""Strategy families side by side at one matched token budget, on the embedded model.

Seeded arithmetic word problems (``infscale.datasets.arith_problems``), SmolLM2-135M in the
embedded engine, every strategy at the same width ``--n`` (about n independent samples' tokens,
docs/strategies.md) and under the same hard per-problem budget of generated tokens: ``n`` times
the mean length of one sample, measured by the first strategy (majority) in the same run. The
families: voting (``majority``), outcome verification (``best-of-n`` with ``arith-check``),
sequential Monte Carlo (``particle-filter``), refinement (``refine`` with arith-check feedback,
when the strategy exists), tree search (``mcts``, ``ab-mcts``). No strategy is expected to win;
the table is what this model and scorer give.

Prints the table (accuracy with its 95% Wilson interval, mean generated tokens per problem,
problems stopped by the budget, wall seconds) and last the line
``families: best=NAME accuracy=X tokens=Y`` (best: the highest accuracy; ties: fewer tokens).

    python bench/families.py [--problems 40] [--steps 1-2] [--n 8] [--concurrency 8]

On a shared machine the families can run as separate processes under one fixed budget and be
merged afterwards (each process appends its rows to a file):

    python bench/families.py --only mcts --budget-tokens 512 --rows-out rows.jsonl   # one per family
    python bench/families.py --merge rows.jsonl
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

import infscale
from infscale import Budget
from infscale.backends.llamacpp import LlamaEngine
from infscale.datasets import arith_problems
from infscale.evaluation.metrics import wilson_interval
from infscale.models import resolve_model
from infscale.strategies import STRATEGIES
from infscale.tasks import get_task

FAMILIES = [  # (strategy, scorer, options)
    ("majority", None, {}),
    ("best-of-n", "arith-check", {}),
    ("particle-filter", "arith-check", {}),
    ("refine", "arith-check", {}),
    ("mcts", "arith-check", {}),
    ("ab-mcts", "arith-check", {}),
]


async def solve(engine, problems, strategy, scorer, n, params, options, budget, concurrency):
    gate = asyncio.Semaphore(concurrency)  # bounds the sequences held at once

    async def one(p):
        async with gate:
            return await infscale.run(p, engine, strategy, n=n, scorer=scorer, params=params, seed=0,
                                      options=options, budget=budget)
    return await asyncio.gather(*(one(p) for p in problems))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--problems", type=int, default=40)
    ap.add_argument("--steps", default="1-2", help="arith operations per problem, LO-HI (1-2: where SmolLM2-135M "
                    "solves some; at 1-4 majority@8 solved 0 of 20)")
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--max-steps", type=int, default=8)
    ap.add_argument("--concurrency", type=int, default=8, help="problems solved at once")
    ap.add_argument("--only", default="", help="comma-separated strategies (default: every family)")
    ap.add_argument("--budget-tokens", type=int, default=None,
                    help="the per-problem budget of generated tokens (default: n x majority's mean sample length)")
    ap.add_argument("--rows-out", default=None, help="append each strategy's row to this JSON-lines file")
    ap.add_argument("--merge", nargs="*", default=None, help="print the table of rows files written by --rows-out")
    args = ap.parse_args()
    if args.merge is not None:
        rows = [json.loads(line) for f in args.merge for line in open(f, encoding="utf-8") if line.strip()]
        print_table(rows)
        return

    _, path, _ = resolve_model(args.model)
    lo, _, hi = args.steps.partition("-")
    problems = arith_problems(args.problems, seed=0, steps=(int(lo), int(hi or lo)))
    task = get_task("math")
    params = infscale.SamplingParams(temperature=0.8, max_tokens=args.max_tokens)
    engine = LlamaEngine(path, n_ctx=32768, n_seq_max=256)
    only = {s for s in args.only.split(",") if s}
    step_options = {"max_steps": args.max_steps}

    rows = []
    budget = Budget(generated_tokens=args.budget_tokens) if args.budget_tokens else None
    for name, scorer, options in FAMILIES:
        if only and name not in only and not (name == "majority" and budget is None):
            continue
        if name not in infscale.STRATEGIES:
            print(f"{name}: pending (not registered in this checkout)", flush=True)
            continue
        opts = dict(options)
        if "max_steps" in infscale.STRATEGIES[name].params:
            opts.update(step_options)
        t = time.perf_counter()
        results = asyncio.run(solve(engine, problems, name, scorer, args.n, params, opts, budget, args.concurrency))
        wall = time.perf_counter() - t
        tokens = [r.usage.generated_tokens for r in results]
        if budget is None:  # majority sets the budget: n times the mean length of one sample
            per_sample = sum(tokens) / (len(tokens) * args.n)
            budget = Budget(generated_tokens=round(args.n * per_sample))
            print(f"budget: {budget.generated_tokens} generated tokens per problem "
                  f"(n={args.n} x {per_sample:.1f}, the mean length of a majority sample)", flush=True)
        correct = sum(task.grade(r.answer, p) for r, p in zip(results, problems))
        row = {"strategy": name, "correct": correct, "problems": len(problems), "steps": args.steps,
               "tokens": sum(tokens) / len(tokens),
               "stopped": sum(r.stopped_early for r in results), "wall": wall, "model": args.model, "n": args.n,
               "budget": budget.generated_tokens if budget else None}
        rows.append(row)
        if args.rows_out:
            with open(args.rows_out, "a", encoding="utf-8") as f:
                f.write(json.dumps(row) + "\n")
        print(f"  {name}: {correct}/{len(problems)} correct, {row['tokens']:.0f} tokens/problem, {wall:.0f}s",
              flush=True)
    engine.close()
    print_table(rows)


def print_table(rows: list[dict]) -> None:
    if not rows:
        print("families: no strategy ran")
        return
    head = rows[0]
    print(f"\n{head['problems']} arithmetic problems (seed 0, {head.get('steps', '1-4')} operations), {head['model']}, n={head['n']}, temperature 0.8, "
          f"budget {head['budget'] or '-'} generated tokens per problem")
    print(f"{'strategy':<16} {'accuracy':>8} {'95% interval':>15} {'tokens':>8} {'budget-stopped':>15} {'wall s':>7}")
    for r in rows:
        lo, hi = wilson_interval(r["correct"], r["problems"])
        print(f"{r['strategy']:<16} {r['correct'] / r['problems']:>8.3f} {f'[{lo:.2f}, {hi:.2f}]':>15} "
              f"{r['tokens']:>8.0f} {r['stopped']:>15} {r['wall']:>7.0f}")
    for name, _, _ in FAMILIES:
        if name not in {r["strategy"] for r in rows} and name not in STRATEGIES:
            print(f"{name}: pending (not registered in this checkout)")
    best = max(rows, key=lambda r: (r["correct"] / r["problems"], -r["tokens"]))
    print(f"families: best={best['strategy']} accuracy={best['correct'] / best['problems']:.3f} "
          f"tokens={best['tokens']:.0f}")


if __name__ == "__main__":
    main()
