"""Step-level search in the embedded engine vs the way other tools do it, side by side.

The same particle filter (8 particles, the arithmetic step checker as process scorer, same
seeds, same model, 20 generated arithmetic problems, plain-text prompts) runs

  (a) in the embedded engine: each step forks the particles' KV sequences, nothing is re-read;
  (b) against llama-cpp-python's own OpenAI-compatible server on 127.0.0.1, resubmitting each
      step's full prefix as a new /v1/completions request (what the HTTP anchors do).

Last line: ``search PF-8: speedup=X.XX token_ratio=Y.YY`` — speedup is wall time (b) / (a);
token_ratio is tokens the model evaluated in (a) over prompt tokens (each problem's prompt,
once) plus generated tokens. Goals: speedup >= 2, token_ratio <= 1.05.

    python bench/search.py [--problems 20] [--particles 8]
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import subprocess
import sys
import time

import httpx

import infscale
from infscale.backends.llamacpp import LlamaEngine
from infscale.backends.openai_http import OpenAIGenerator
from infscale.datasets import arith_problems
from infscale.models import resolve_model
from infscale.tasks.prompts import build_request


async def solve_all(gen, problems, n, params, options):
    runs = [infscale.run(p, gen, "particle-filter", n=n, scorer="arith-check", params=params, seed=0,
                         options=options) for p in problems]
    return await asyncio.gather(*runs)


def summarize(results, problems) -> tuple[float, int, int]:
    correct = sum(r.answer is not None and p.reference is not None and float(r.answer) == float(p.reference)
                  for r, p in zip(results, problems) if _num(r.answer))
    gen = sum(r.usage.generated_tokens for r in results)
    return correct / len(problems), gen, sum(r.usage.calls for r in results)


def _num(x) -> bool:
    try:
        float(x)
        return True
    except (TypeError, ValueError):
        return False


def start_server(path) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "infscale.testing.llama_server", "--model", str(path), "--host", "127.0.0.1",
         "--port", str(port), "--n_ctx", "4096", "--verbose", "False"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}/v1"
    for _ in range(480):
        try:
            if httpx.get(f"{base}/models", timeout=2).status_code == 200:
                return proc, base
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    proc.kill()
    raise SystemExit("llama_cpp.server did not start")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--problems", type=int, default=20)
    ap.add_argument("--particles", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--max-steps", type=int, default=8)
    args = ap.parse_args()
    _, path, _ = resolve_model(args.model)
    problems = arith_problems(args.problems, seed=0)
    # no logprobs: the particle filter does not need them, and servers may charge for them
    params = infscale.SamplingParams(temperature=0.8, max_tokens=args.max_tokens, logprobs=False)
    options = {"max_steps": args.max_steps}

    # (a) embedded engine, plain-text prompts (chat_template=None) so both sides read the same text
    engine = LlamaEngine(path, chat_template=None, n_ctx=16384, n_seq_max=192)
    prompt_tokens = sum(len(engine.tokenize(build_request(p, params, chat=False, seed=0).prompt, add_bos=True))
                        for p in problems)
    t = time.perf_counter()
    res_a = asyncio.run(solve_all(engine, problems, args.particles, params, options))
    wall_a = time.perf_counter() - t
    evaluated = engine.evaluated_tokens
    acc_a, gen_a, calls_a = summarize(res_a, problems)
    engine.close()

    # (b) llama-cpp-python's server, each step's full prefix resubmitted
    proc, base = start_server(path)
    try:
        http = OpenAIGenerator(base, max_concurrency=8)

        async def run_b():
            await http.ensure_ready()
            http.capabilities.chat_template = False  # the same plain-text prompt as (a)
            out = await solve_all(http, problems, args.particles, params, options)
            await http.aclose()
            return out

        t = time.perf_counter()
        res_b = asyncio.run(run_b())
        wall_b = time.perf_counter() - t
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    acc_b, gen_b, calls_b = summarize(res_b, problems)

    ratio = evaluated / (prompt_tokens + gen_a)
    print(f"{'':<22} {'wall s':>8} {'generated':>10} {'calls':>7} {'accuracy':>9}")
    print(f"{'(a) embedded, KV fork':<22} {wall_a:>8.1f} {gen_a:>10} {calls_a:>7} {acc_a:>9.2f}")
    print(f"{'(b) HTTP, resubmit':<22} {wall_b:>8.1f} {gen_b:>10} {calls_b:>7} {acc_b:>9.2f}")
    print(f"(a) evaluated {evaluated} tokens for {prompt_tokens} prompt + {gen_a} generated")
    print(f"search PF-{args.particles}: speedup={wall_b / wall_a:.2f} token_ratio={ratio:.2f}")


if __name__ == "__main__":
    main()
