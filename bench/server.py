"""What serving over HTTP costs: the same requests in-process and through ``infscale serve``.

The same 100 single-sample chat requests (sample ``i`` seeded by ``i``, so both paths generate
exactly the same tokens), at the same concurrency, on the same embedded model:

* (a) in-process — ``infscale.run(Problem(messages=...), engine, "sample", n=1)`` on an engine
  loaded in this process;
* (b) HTTP — ``POST /v1/chat/completions`` with ``httpx`` against ``infscale serve`` started as a
  subprocess on 127.0.0.1 (its own engine, same settings).

The requests go in blocks of 25, each block in ABBA order (a, b, b, a), so that a machine whose
load drifts during the run biases neither side; each side's wall time is summed over its blocks
(every request runs twice per side). Last line:
``server overhead=X.XX`` (wall time b / a; the goal is <= 1.05).

    python bench/server.py [--requests 100] [--concurrency 8] [--max-tokens 32] [--block 25] [--rounds 1]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import statistics
import subprocess
import sys
import time

import httpx

import infscale
from infscale import Problem, SamplingParams

TEMPERATURE = 0.7


def questions(n: int) -> list[str]:
    """Small arithmetic word problems, deterministic."""
    out = []
    for i in range(n):
        a, b, c = 3 + i % 17, 2 + (i * 7) % 13, 1 + (i * 5) % 9
        out.append(f"Sam has {a} boxes with {b} pencils each. He gives away {c} pencils. How many pencils are left?")
    return out


def messages(q: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": q}]


async def in_process(engine, qs: list[str], concurrency: int, max_tokens: int, offset: int = 0
                     ) -> tuple[float, list[float], int]:
    sem = asyncio.Semaphore(concurrency)
    latencies: list[float] = []
    tokens = 0

    async def one(i: int, q: str) -> None:
        nonlocal tokens
        async with sem:
            t = time.perf_counter()
            params = SamplingParams(temperature=TEMPERATURE, max_tokens=max_tokens, seed=i)
            r = await infscale.run(Problem(messages=messages(q)), engine, "sample", n=1, params=params, seed=i)
            latencies.append(time.perf_counter() - t)
            tokens += r.usage.generated_tokens

    t0 = time.perf_counter()
    await asyncio.gather(*[one(offset + i, q) for i, q in enumerate(qs)])
    return time.perf_counter() - t0, latencies, tokens


async def over_http(base_url: str, model: str, qs: list[str], concurrency: int, max_tokens: int, offset: int = 0
                    ) -> tuple[float, list[float], int]:
    sem = asyncio.Semaphore(concurrency)
    latencies: list[float] = []
    tokens = 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base_url, timeout=600, limits=limits) as client:

        async def one(i: int, q: str) -> None:
            nonlocal tokens
            async with sem:
                t = time.perf_counter()
                r = await client.post("/chat/completions", json={
                    "model": model, "messages": messages(q), "max_tokens": max_tokens, "seed": i,
                    "temperature": TEMPERATURE})
                r.raise_for_status()
                latencies.append(time.perf_counter() - t)
                tokens += r.json()["usage"]["completion_tokens"]

        await one(0, "warm-up: what is 1 + 1?")  # the connection, the server's first request
        latencies.clear()
        tokens = 0
        t0 = time.perf_counter()
        await asyncio.gather(*[one(offset + i, q) for i, q in enumerate(qs)])
        return time.perf_counter() - t0, latencies, tokens


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model: str, port: int, concurrency: int, requests: int) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "infscale.cli.main", "serve", "--model", model, "--host", "127.0.0.1",
           "--port", str(port), "--max-concurrency", str(concurrency), "--max-queue", str(requests + 8)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 180
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise SystemExit(f"infscale serve did not start:\n{proc.communicate()[1][-2000:]}")
        time.sleep(0.2)


def uvicorn_stack() -> str:
    """The event loop and HTTP parser uvicorn's "auto" picks here: uvloop and httptools when
    installed (``uvicorn[standard]``, the server extra), else asyncio and h11."""
    import importlib.util  # noqa: PLC0415

    loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    http = "httptools" if importlib.util.find_spec("httptools") else "h11"
    return f"loop={loop} http={http}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--requests", type=int, default=100)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--block", type=int, default=25, help="requests per ABBA block")
    ap.add_argument("--rounds", type=int, default=1, help="rounds over all blocks (each runs every request twice per side)")
    args = ap.parse_args()

    qs = questions(args.requests)
    port = free_port()
    print(f"uvicorn: {uvicorn_stack()} (uvicorn[standard] gives uvloop and httptools)", file=sys.stderr)
    print(f"loading {args.model} in-process and in `infscale serve` on 127.0.0.1:{port} ...", file=sys.stderr)
    engine = infscale.load_generator(args.model)
    proc = start_server(args.model, port, args.concurrency, args.requests)
    base_url = f"http://127.0.0.1:{port}/v1"
    try:
        asyncio.run(in_process(engine, qs[:2], 2, 4))  # warm-up of the in-process engine
        runs = {"a": [], "b": []}
        ratios: list[float] = []
        blocks = [qs[i:i + args.block] for i in range(0, len(qs), args.block)]
        for _ in range(args.rounds):
            for k, block in enumerate(blocks):
                for side in "abba":
                    if side == "a":
                        runs["a"].append(asyncio.run(in_process(engine, block, args.concurrency, args.max_tokens,
                                                                offset=k * args.block)))
                    else:
                        runs["b"].append(asyncio.run(over_http(base_url, args.model, block, args.concurrency,
                                                               args.max_tokens, offset=k * args.block)))
                wa_, wb_ = runs["a"][-1][0] + runs["a"][-2][0], runs["b"][-1][0] + runs["b"][-2][0]
                ratios.append(wb_ / wa_)
                print(f"  block {k + 1}/{len(blocks)}: a {wa_:.1f}s  b {wb_:.1f}s  (b/a {wb_ / wa_:.2f})",
                      file=sys.stderr, flush=True)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        if hasattr(engine, "close"):
            engine.close()

    def summary(rs):
        wall = sum(r[0] for r in rs)
        lat = sorted(x for r in rs for x in r[1])
        tok = sum(r[2] for r in rs)
        return wall, lat, tok

    (wa, la, ta), (wb, lb, tb) = summary(runs["a"]), summary(runs["b"])
    passes = 2 * args.rounds
    n = args.requests * passes
    print(f"\n{args.requests} single-sample requests x {passes} passes per side, concurrency "
          f"{args.concurrency}, max_tokens {args.max_tokens}, {args.model}, {os.cpu_count()} CPUs")
    print(f"{'path':<22} {'wall s':>8} {'req/s':>7} {'tokens':>7} {'tok/s':>7} {'p50 s':>7} {'p95 s':>7}")
    for name, wall, lat, tok in (("(a) in-process", wa, la, ta), ("(b) infscale serve", wb, lb, tb)):
        p95 = lat[min(len(lat) - 1, int(0.95 * len(lat)))]
        print(f"{name:<22} {wall:>8.2f} {n / wall:>7.2f} {tok:>7} {tok / wall:>7.1f} "
              f"{statistics.median(lat):>7.3f} {p95:>7.3f}")
    if ta != tb:
        print(f"note: the two paths generated different token counts ({ta} vs {tb})")
    print(f"per-block b/a: {' '.join(f'{r:.2f}' for r in ratios)} (median {statistics.median(ratios):.2f}; "
          "a block far from the rest means the machine's load changed under it)")
    print(f"server overhead={wb / wa:.2f}")


if __name__ == "__main__":
    main()
