"""DeepConf offline and online beside majority@N on the embedded model: tokens and accuracy.

On seeded arithmetic word problems (``arith``), at the same N and the same seeds:

* majority@N — self-consistency over N traces;
* deepconf (offline) — the same N traces (drawn once with token confidence, which costs no
  tokens), filtered to the top eta% by trace confidence and voted with confidence weights;
* deepconf-online — warm-up traces, a threshold, later traces stopped early by the engine,
  sampling stopped at consensus (its own run, same seeds).

It measures generated tokens and accuracy, not time, so a loaded machine changes nothing but
how long it takes. Also printed: the AUROC of trace confidence for the correctness of a
trace's answer (over every answered offline trace; 0.5 = no separation), per measure.
The line before the last: the 95% paired interval of online's accuracy minus majority's
(Newcombe 1998, :func:`infscale.evaluation.metrics.paired_comparison`). Last line:
``confidence N=16: online_tokens_ratio=X accuracy_delta=Y`` with X = deepconf-online's
generated tokens over majority's and Y = its accuracy minus majority's.

    python bench/confidence.py [--problems 30] [--n 16] [--steps 1-2] [--eta-online 10] [--window 16]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time

import numpy as np

import infscale
from infscale.backends.llamacpp import LlamaEngine
from infscale.datasets import arith_problems
from infscale.evaluation.metrics import paired_comparison
from infscale.models import resolve_model
from infscale.params import SamplingParams
from infscale.strategies import get_strategy
from infscale.strategies.confidence import MEASURES, trace_confidence
from infscale.strategies.sample import select_from
from infscale.tasks import get_task


def auroc(scores: list[float], labels: list[bool]) -> float:
    """P(a correct trace's score > a wrong one's), ties counting one half (Mann-Whitney)."""
    pos = np.array([s for s, y in zip(scores, labels) if y])
    neg = np.array([s for s, y in zip(scores, labels) if not y])
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    greater = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(greater / (len(pos) * len(neg)))


async def run_all(engine, problems, n, params, offline_opts, online_opts, concurrency):
    sem = asyncio.Semaphore(concurrency)

    async def one(p):
        async with sem:
            confs: dict[int, list[float]] = {}  # the offline traces' token confidences, by sample seed
            off = await infscale.run(p, engine, "deepconf", n=n, params=params, seed=0, options=offline_opts,
                                     on_completion=lambda c: confs.__setitem__(c.seed, c.confidences))
            on = await infscale.run(p, engine, "deepconf-online", n=n, params=params, seed=0, options=online_opts)
            task = get_task(p.task)
            maj = select_from(get_strategy("majority"), off.candidates, task)
            print(f"  problem {p.id}: reference {p.reference}; majority {maj.answer} "
                  f"({int(task.is_correct(maj.answer, p.reference))}), deepconf {off.answer} "
                  f"({int(task.is_correct(off.answer, p.reference))}), online {on.answer} "
                  f"({int(task.is_correct(on.answer, p.reference))}); tokens {off.usage.generated_tokens} vs "
                  f"{on.usage.generated_tokens}; online traces {len(on.candidates)}, stopped "
                  f"{on.info['stopped_by_confidence']}", flush=True)
            traces = [(round(trace_confidence(confs[c.seed], "lowest", offline_opts["window"]), 3),
                       round(trace_confidence(confs[c.seed], offline_opts["measure"], offline_opts["window"]), 3),
                       int(task.is_correct(c.answer, p.reference))) for c in off.candidates if c.answer is not None]
            print(f"    traces of {p.id} (lowest, {offline_opts['measure']}, correct): {traces}", flush=True)
            return off, on, confs

    return await asyncio.gather(*(one(p) for p in problems))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--problems", type=int, default=30)
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--steps", default="1-2", help="arith operations per problem, LO-HI")
    ap.add_argument("--seed", type=int, default=0, help="the arith problems' seed")
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--temperature", type=float, default=0.7)
    ap.add_argument("--eta-offline", type=float, default=90.0)
    ap.add_argument("--eta-online", type=float, default=10.0)
    ap.add_argument("--measure", default="bottom10", choices=MEASURES)
    ap.add_argument("--window", type=int, default=16)
    ap.add_argument("--warmup", type=int, default=0)
    ap.add_argument("--tau", type=float, default=0.95)
    ap.add_argument("--concurrency", type=int, default=4, help="problems in flight at once")
    args = ap.parse_args()
    lo, hi = (int(x) for x in args.steps.split("-"))
    problems = arith_problems(args.problems, seed=args.seed, steps=(lo, hi))
    _, path, _ = resolve_model(args.model)
    task = get_task("math")
    params = SamplingParams(temperature=args.temperature, max_tokens=args.max_tokens)
    offline_opts = {"eta": args.eta_offline, "measure": args.measure, "window": args.window}
    online_opts = {"eta": args.eta_online, "window": args.window, "warmup": args.warmup, "tau": args.tau}
    print(f"load {' '.join(f'{x:.2f}' for x in os.getloadavg())}; {args.problems} arith problems "
          f"(steps {args.steps}, seed {args.seed}), N={args.n}, T={args.temperature}, max_tokens={args.max_tokens}; "
          f"offline {offline_opts}; online {online_opts}", flush=True)
    engine = LlamaEngine(path, n_ctx=16384, n_seq_max=128)
    t0 = time.perf_counter()
    try:
        pairs = asyncio.run(run_all(engine, problems, args.n, params, offline_opts, online_opts, args.concurrency))
    finally:
        engine.close()
    majority = get_strategy("majority")
    maj_ok, off_ok, on_ok = [], [], []
    maj_tok = on_tok = 0
    stopped = drawn = 0
    scores: dict[str, list[float]] = {m: [] for m in MEASURES}
    labels: list[bool] = []
    for p, (off, on, confs) in zip(problems, pairs):
        maj = select_from(majority, off.candidates, task)
        maj_ok.append(float(task.is_correct(maj.answer, p.reference)))
        off_ok.append(float(task.is_correct(off.answer, p.reference)))
        on_ok.append(float(task.is_correct(on.answer, p.reference)))
        maj_tok += off.usage.generated_tokens  # the same traces: majority's tokens
        on_tok += on.usage.generated_tokens
        stopped += on.info["stopped_by_confidence"]
        drawn += len(on.candidates)
        for c in off.candidates:
            if c.answer is None:
                continue
            labels.append(bool(task.is_correct(c.answer, p.reference)))
            for m in MEASURES:
                scores[m].append(trace_confidence(confs[c.seed], m, args.window))
    k = len(problems)
    print(f"{time.perf_counter() - t0:.0f} s; {k} problems")
    print(f"majority@{args.n}:        accuracy {np.mean(maj_ok):.3f}  generated tokens {maj_tok}")
    print(f"deepconf@{args.n} offline: accuracy {np.mean(off_ok):.3f}  generated tokens {maj_tok} (the same traces)")
    print(f"deepconf-online@{args.n}:  accuracy {np.mean(on_ok):.3f}  generated tokens {on_tok}  traces drawn "
          f"{drawn}/{k * args.n}, stopped by confidence {stopped}")
    print(f"answered traces {len(labels)}, correct {sum(labels)}; AUROC of trace confidence for correctness: "
          + ", ".join(f"{m} {auroc(scores[m], labels):.3f}" for m in MEASURES))
    off_cmp = paired_comparison(off_ok, maj_ok)
    print(f"offline accuracy_delta={off_cmp['diff']:+.3f} 95% paired interval "
          f"[{off_cmp['interval'][0]:+.3f}, {off_cmp['interval'][1]:+.3f}] (wins {off_cmp['wins']}, losses "
          f"{off_cmp['losses']})")
    cmp = paired_comparison(on_ok, maj_ok)
    print(f"online accuracy_delta={cmp['diff']:+.3f} 95% paired interval [{cmp['interval'][0]:+.3f}, "
          f"{cmp['interval'][1]:+.3f}] (wins {cmp['wins']}, losses {cmp['losses']}, p={cmp['p_value']:.3f})")
    print(f"confidence N={args.n}: online_tokens_ratio={on_tok / max(1, maj_tok):.2f} accuracy_delta={cmp['diff']:+.3f}")


if __name__ == "__main__":
    main()
