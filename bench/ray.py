"""What distributing an evaluation over Ray workers buys against slow HTTP backends.

One grid (``majority`` at budget 8 over P arithmetic problems) runs with 1 and then 2 Ray
workers on a local cluster, each worker holding ``--concurrency`` items at once, against the fake
OpenAI-compatible server answering every request after a fixed delay per generated token (the
server sleeps, it does not compute; its requests run in threads, so they do not queue behind each
other). So the figure measures the orchestration — handing out
items, shipping rows back, the driver storing them — not this machine's cores. A worker keeps
at most ``--concurrency`` items and its HTTP generator at most ``max_concurrency`` (16) requests
in flight; an item's 8 pool samples are 8 requests (eval never groups them with ``n``), so 4
items want 32 and one worker's ideal is 16 requests per request time (2 items); two workers'
is twice that: the ideal speedup is 2. Throughput counts items from the moment every worker is ready (the first progress report,
after each worker has built its generator and probed the server) to the last one stored; the
start-up is reported apart.

Per arm it also prints what it needs to tell orchestration from a starved processor: the
requests the server held on average against the workers' cap (below the cap, the workers did
not keep their slots full), and the processor seconds per item of the workers, of the driver
(with the fake server's threads, which run in the driver's process) and of Ray's own processes
(from /proc, Linux only), with the load average. Last line: ``ray workers=2: speedup=X`` (the
goal is >= 1.8).

    python bench/ray.py [--problems 48] [--concurrency 4] [--token-delay 0.02] [--db PATH]
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import tempfile
import threading
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


class Arrivals:
    """The server's delay callable: a fixed time per token, and the arrival time of every request."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.times: list[float] = []
        self.lock = threading.Lock()

    def __call__(self, body) -> float:
        with self.lock:
            self.times.append(time.monotonic())
        return self.seconds

    def count(self, start: float, end: float) -> int:
        with self.lock:
            return sum(start <= t <= end for t in self.times)

    def in_flight(self, start: float, end: float) -> float:
        """The requests held on average over ``[start, end]`` (each held for its delay)."""
        with self.lock:
            held = sum(max(0.0, min(t + self.seconds, end) - max(t, start)) for t in self.times)
        return held / (end - start)


def cpu_seconds() -> dict[str, float] | None:
    """Processor seconds so far of this process and its descendants, by role: ``driver`` (this
    process, with the fake server's threads), ``workers`` (Ray's ``EvalWorker`` actors) and
    ``ray`` (the rest: raylet, GCS, idle workers). None without /proc."""
    if not Path("/proc/self/stat").exists():
        return None
    tick = os.sysconf("SC_CLK_TCK")
    procs: dict[int, tuple[int, str, float]] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            stat = Path(f"/proc/{d}/stat").read_text().rsplit(")", 1)[1].split()
            cmd = Path(f"/proc/{d}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        procs[int(d)] = (int(stat[1]), cmd, (int(stat[11]) + int(stat[12])) / tick)
    out = {"driver": procs.get(os.getpid(), (0, "", 0.0))[2], "workers": 0.0, "ray": 0.0}
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in procs.items():
        children.setdefault(ppid, []).append(pid)
    todo = list(children.get(os.getpid(), []))
    while todo:
        pid = todo.pop()
        todo += children.get(pid, [])
        _, cmd, cpu = procs[pid]
        out["workers" if cmd.startswith("ray::EvalWorker") else "ray"] += cpu
    return out


def one(server: FakeOpenAIServer, arrivals: Arrivals, db: Path, problems: int, workers: int,
        concurrency: int) -> dict:
    cfg = EvalConfig(dataset=f"arith:n={problems}", strategies=["majority"], budgets=[8], params={"max_tokens": 64},
                     backend_url=server.base_url)
    probs = load_dataset(cfg.dataset)
    times: dict[str, float] = {}
    cpu: dict[str, dict[str, float] | None] = {}

    def progress(p) -> None:
        now = time.monotonic()
        if "first" not in times:
            times["first"] = now
            cpu["first"] = cpu_seconds()
        times["last"] = now
        if p.done == p.total:
            cpu["last"] = cpu_seconds()  # before the workers stop

    with Store(db) as st:
        rid = start_run(st, cfg, probs)
        t0 = time.monotonic()
        counts = run_eval_ray(st, rid, functools.partial(load_generator, backend_url=server.base_url),
                              workers=workers, concurrency=concurrency, on_progress=progress)
    seconds = times["last"] - times["first"]
    per_item = None
    if cpu.get("first") is not None and cpu.get("last") is not None:
        per_item = {k: (cpu["last"][k] - cpu["first"][k]) / problems * 1000 for k in cpu["last"]}
    return {"workers": workers, "items": problems, "samples": counts["samples"], "seconds": seconds,
            "startup": times["first"] - t0, "items_per_s": problems / seconds,
            "in_flight": arrivals.in_flight(times["first"], times["last"]), "cpu_ms": per_item,
            "requests": arrivals.count(times["first"], times["last"]),
            "load": os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--problems", type=int, default=48)
    ap.add_argument("--concurrency", type=int, default=4, help="items each worker holds at once")
    ap.add_argument("--token-delay", type=float, default=0.02, help="seconds the server waits per generated token")
    ap.add_argument("--db", default=None, help="run database (default: a temporary file)")
    args = ap.parse_args()
    tokens = len(fake_tokens(REPLY))
    arrivals = Arrivals(args.token_delay * tokens)
    cap = load_generator(backend_url="http://127.0.0.1:9/v1").max_concurrency  # nothing is sent
    ray.init(address="local", num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1",
             logging_level="warning", log_to_driver=False)
    try:
        with tempfile.TemporaryDirectory() as tmp, FakeOpenAIServer(reply=reply, delay=arrivals) as server:
            db = Path(args.db) if args.db else Path(tmp) / "bench.sqlite"
            print(f"fake server: {tokens} tokens per sample, {arrivals.seconds:.2f} s per request; "
                  f"{args.problems} problems x majority@8, {args.concurrency} items per worker, "
                  f"at most {cap} requests per worker")
            rows = [one(server, arrivals, db, args.problems, w, args.concurrency) for w in (1, 2)]
    finally:
        ray.shutdown()
    for r in rows:
        per_item = r["requests"] / r["items"]  # requests per item (8: one per pool sample)
        held = r["workers"] * min(args.concurrency * per_item, cap)  # what the workers may hold at once
        ideal = held / per_item / arrivals.seconds
        cpu = r["cpu_ms"]
        cpu_text = (f"; cpu ms per item: workers {cpu['workers']:.0f}, driver+server {cpu['driver']:.0f}, "
                    f"ray {cpu['ray']:.0f}" if cpu else "")
        print(f"workers={r['workers']}: {r['items']} items ({r['samples']} samples) in {r['seconds']:.2f} s = "
              f"{r['items_per_s']:.2f} items/s (ideal {ideal:.2f}; start-up {r['startup']:.1f} s); "
              f"server held {r['in_flight']:.1f} of {held:g} requests{cpu_text}; load {r['load']:.1f}")
    print(f"ray workers=2: speedup={rows[1]['items_per_s'] / rows[0]['items_per_s']:.2f}")


if __name__ == "__main__":
    main()
