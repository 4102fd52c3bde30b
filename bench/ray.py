"""What distributing an evaluation over Ray workers buys against slow HTTP backends.

One grid (``majority`` at budget 8 over P arithmetic problems) runs with 1 and then 2 Ray
workers on a local cluster, each worker holding ``--concurrency`` items at once, against the fake
OpenAI-compatible server answering every request after a fixed delay per generated token (the
server sleeps, it does not compute). So the figure measures the orchestration — handing out
items, shipping rows back, the driver storing them — not this machine's cores: with twice the
items in flight the ideal speedup is 2. Throughput counts items from the moment every worker is
ready (the first progress report) to the last one stored; the workers' start-up is reported
apart. Last line: ``ray workers=2: speedup=X`` (the goal is >= 1.8).

    python bench/ray.py [--problems 48] [--concurrency 4] [--token-delay 0.02] [--db PATH]
"""

from __future__ import annotations

import argparse
import functools
import sys
import tempfile
import time
from pathlib import Path

# this file is named ray.py: its folder must not shadow the ray package
sys.path = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import ray  # noqa: E402

from infscale.api import load_generator
from infscale.datasets import load_dataset
from infscale.evaluation.distributed import run_eval_ray
from infscale.evaluation.harness import EvalConfig, start_run
from infscale.evaluation.store import Store
from infscale.testing.fake_openai import FakeOpenAIServer, fake_tokens

REPLY = "Let me add the numbers step by step, carefully, and then check the sum once more.\nAnswer: 42"


def reply(prompt_or_messages, body, index) -> str:
    return REPLY


def one(server: FakeOpenAIServer, db: Path, problems: int, workers: int, concurrency: int) -> dict:
    cfg = EvalConfig(dataset=f"arith:n={problems}", strategies=["majority"], budgets=[8], params={"max_tokens": 64},
                     backend_url=server.base_url)
    probs = load_dataset(cfg.dataset)
    times: dict[str, float] = {}

    def progress(p) -> None:
        times.setdefault("first", time.monotonic())
        times["last"] = time.monotonic()

    with Store(db) as st:
        rid = start_run(st, cfg, probs)
        t0 = time.monotonic()
        counts = run_eval_ray(st, rid, functools.partial(load_generator, backend_url=server.base_url),
                              workers=workers, concurrency=concurrency, on_progress=progress)
    seconds = times["last"] - times["first"]
    return {"workers": workers, "items": problems, "samples": counts["samples"], "seconds": seconds,
            "startup": times["first"] - t0, "items_per_s": problems / seconds}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--problems", type=int, default=48)
    ap.add_argument("--concurrency", type=int, default=4, help="items each worker holds at once")
    ap.add_argument("--token-delay", type=float, default=0.02, help="seconds the server waits per generated token")
    ap.add_argument("--db", default=None, help="run database (default: a temporary file)")
    args = ap.parse_args()
    tokens = len(fake_tokens(REPLY))
    delay = functools.partial(lambda per, body: per * tokens, args.token_delay)
    ray.init(address="local", num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1",
             logging_level="warning", log_to_driver=False)
    try:
        with tempfile.TemporaryDirectory() as tmp, FakeOpenAIServer(reply=reply, delay=delay) as server:
            db = Path(args.db) if args.db else Path(tmp) / "bench.sqlite"
            print(f"fake server: {tokens} tokens per sample, {args.token_delay * tokens:.2f} s per request; "
                  f"{args.problems} problems x majority@8, {args.concurrency} items per worker")
            rows = [one(server, db, args.problems, w, args.concurrency) for w in (1, 2)]
    finally:
        ray.shutdown()
    for r in rows:
        print(f"workers={r['workers']}: {r['items']} items ({r['samples']} samples) in {r['seconds']:.2f} s = "
              f"{r['items_per_s']:.2f} items/s (start-up {r['startup']:.1f} s)")
    print(f"ray workers=2: speedup={rows[1]['items_per_s'] / rows[0]['items_per_s']:.2f}")


if __name__ == "__main__":
    main()
