"""What ``infscale eval --reproducible`` costs: the same run batched and reproducible, side by side.

Runs ``infscale eval`` (the embedded engine, a fresh run database each time) on the same
problems, strategies and budgets with and without ``--reproducible``, in the order A B B A (so
a drift in the machine's load hits both alike), and prints each wall time, then last::

    reproducible: wall ratio=X (batched A s, reproducible B s)

    python bench/reproducible.py [--limit 6] [--strategies majority] [--budgets 8] [--repeats 2]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def run(args, reproducible: bool, db: str) -> float:
    cmd = [sys.executable, "-m", "infscale.cli.main", "eval", "--dataset", args.dataset, "--limit", str(args.limit),
           "--strategies", args.strategies, "--budgets", args.budgets, "--model", args.model, "--db", db,
           "--no-progress", "--no-html", "--json"]
    if reproducible:
        cmd.append("--reproducible")
    t = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--dataset", default="arith")
    ap.add_argument("--limit", type=int, default=6)
    ap.add_argument("--strategies", default="majority")
    ap.add_argument("--budgets", default="8")
    ap.add_argument("--repeats", type=int, default=2, help="A B pairs (run A B B A ...)")
    args = ap.parse_args()
    walls: dict[bool, list[float]] = {False: [], True: []}
    print(f"eval --dataset {args.dataset} --limit {args.limit} --strategies {args.strategies} --budgets {args.budgets}; "
          f"INFSCALE_THREADS={os.environ.get('INFSCALE_THREADS', '(all cores)')}; load {load()}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeats):
            for rep in ((False, True) if r % 2 == 0 else (True, False)):
                w = run(args, rep, os.path.join(tmp, f"{r}-{int(rep)}.sqlite"))
                walls[rep].append(w)
                print(f"  {'reproducible' if rep else 'batched':<12} {w:7.1f} s  load {load()}", flush=True)
    a, b = sum(walls[False]) / len(walls[False]), sum(walls[True]) / len(walls[True])
    print(f"reproducible: wall ratio={b / a:.2f} (batched {a:.1f} s, reproducible {b:.1f} s)")


if __name__ == "__main__":
    main()
