"""Decode cost of one KV-cache layout against another, side by side in one process.

The same work — G prompts of T tokens, each read once and its KV copied to K sequences, then
L decode steps of all G x K sequences in one ``llama_decode`` per step — on two llama.cpp
contexts of the same model, repeated alternately so that load hits both arms alike:

* ``unified``: one KV cache shared by all sequences (``kv_unified=true``, n_ctx cells); a
  copied prompt shares its cells, but every token's attention spans the whole used cell range
  of all sequences, masked;
* ``streams``: one KV stream per sequence (``kv_unified=false``; each stream gets n_ctx /
  n_seq_max cells); a copy duplicates the prompt's cells, and a token attends only to its own
  stream.

Prints decode tokens/s for each layout and G, and their ratio. With ``--engine P``, instead:
the embedded engine itself with each layout (two engines in one process), P seeded arithmetic
problems x K samples (majority vote) all at once, the engines taking turns, in generated
tokens/s. Not a test: an experiment for choosing the embedded engine's layout.

    python bench/kv_layout.py [--groups 1,8] [--k 8] [--prompt 220] [--steps 96] [--repeats 2]
    python bench/kv_layout.py --engine 20 [--k 8] [--max-tokens 96] [--repeats 2]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

import llama_cpp as ll

from infscale.backends.llamacpp import _quiet_llama_logs, extra_buffer_types_safe
from infscale.models import resolve_model


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


class Arm:
    def __init__(self, model, name: str, unified: bool, n_seq: int, n_ctx: int, threads: int, n_batch: int):
        cp = ll.llama_context_default_params()
        cp.n_ctx, cp.n_batch, cp.n_ubatch, cp.n_seq_max = n_ctx, n_batch, min(n_batch, 512), n_seq
        cp.n_threads = cp.n_threads_batch = threads
        cp.kv_unified = unified
        cp.no_perf = True
        self.name = name
        self.ctx = ll.llama_init_from_model(model, cp)
        if not self.ctx:
            raise SystemExit(f"{name}: llama.cpp could not create the context")
        self.mem = ll.llama_get_memory(self.ctx)
        self.batch = ll.llama_batch_init(n_batch, 0, 1)
        self.n_batch = n_batch
        self.n_ctx = ll.llama_n_ctx(self.ctx)

    def _decode(self, items) -> float:
        b = self.batch
        for i, (tok, pos, seq, logits) in enumerate(items):
            b.token[i], b.pos[i], b.n_seq_id[i], b.logits[i] = tok, pos, 1, logits
            b.seq_id[i][0] = seq
        b.n_tokens = len(items)
        t = time.perf_counter()
        rc = ll.llama_decode(self.ctx, b)
        if rc != 0:
            raise SystemExit(f"{self.name}: llama_decode returned {rc}")
        return time.perf_counter() - t

    def prefill(self, prompts: list[list[int]], k: int) -> float:
        """Read each prompt once (one decode call per prompt) and copy its KV to k sequences."""
        ll.llama_memory_clear(self.mem, True)
        t0 = time.perf_counter()
        for g, pr in enumerate(prompts):
            self._decode([(tok, j, g * k, int(j == len(pr) - 1)) for j, tok in enumerate(pr)])
            for i in range(1, k):
                ll.llama_memory_seq_cp(self.mem, g * k, g * k + i, -1, -1)
        return time.perf_counter() - t0

    def step(self, seqs: list[tuple[int, int]], step: int) -> float:
        return self._decode([(100 + (s * 7 + step) % 5000, pos + step, s, 1) for s, pos in seqs])

    def close(self) -> None:
        ll.llama_batch_free(self.batch)
        ll.llama_free(self.ctx)


def engine_ab(args) -> None:
    import asyncio

    import infscale
    from infscale.backends.llamacpp import LlamaEngine
    from infscale.datasets import arith_problems

    name, path, spec = resolve_model(args.model)
    template = "auto" if spec is None or spec.chat else None
    engines = {lay: LlamaEngine(path, model_name=name, chat_template=template, n_threads=args.threads, kv_layout=lay)
               for lay in ("unified", "streams")}
    params = infscale.SamplingParams(max_tokens=args.max_tokens)
    problems = arith_problems(args.engine, seed=0)

    async def solve(eng):
        return await asyncio.gather(*[infscale.run(p, eng, "majority", n=args.k, params=params, seed=0) for p in problems])

    for eng in engines.values():  # warm up
        asyncio.run(infscale.run(problems[0], eng, "majority", n=2, params=params.with_(max_tokens=4), seed=1))
    print(f"engine: P={args.engine} x {args.k} samples, {args.max_tokens} max tokens, threads {args.threads}; "
          + ", ".join(f"{k} n_ctx={e.n_ctx} ({e.n_ctx_seq}/seq)" for k, e in engines.items()) + f"; load {load()}", flush=True)
    tot = {k: [0.0, 0] for k in engines}
    for r in range(args.repeats):
        for lay in (list(engines) if r % 2 == 0 else list(engines)[::-1]):
            eng = engines[lay]
            ev0, d0 = eng.evaluated_tokens, eng.profile.decode
            t = time.perf_counter()
            res = asyncio.run(solve(eng))
            wall = time.perf_counter() - t
            gen = sum(x.usage.generated_tokens for x in res)
            tot[lay][0] += wall
            tot[lay][1] += gen
            print(f"  round {r} {lay:<8} {gen / wall:6.1f} tok/s  {wall:6.1f} s  generated {gen}  "
                  f"evaluated {eng.evaluated_tokens - ev0}  decode {eng.profile.decode - d0:.1f} s; load {load()}", flush=True)
    tps = {k: g / w for k, (w, g) in tot.items()}
    print(f"engine P={args.engine}: unified {tps['unified']:.1f} tok/s, streams {tps['streams']:.1f} tok/s, "
          f"streams/unified={tps['streams'] / tps['unified']:.2f}")
    for eng in engines.values():
        eng.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--groups", default="1,8")
    ap.add_argument("--k", type=int, default=8)
    ap.add_argument("--prompt", type=int, default=220)
    ap.add_argument("--steps", type=int, default=96)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--n-seq", type=int, default=64)
    ap.add_argument("--stream-cells", type=int, default=512, help="cells per stream in the streams arm")
    ap.add_argument("--unified-ctx", type=int, default=16384)
    ap.add_argument("--threads", type=int, default=int(os.environ.get("INFSCALE_THREADS", "1")))
    ap.add_argument("--engine", type=int, default=0, help="P: compare the layouts through the engine instead")
    ap.add_argument("--max-tokens", type=int, default=96)
    args = ap.parse_args()
    _quiet_llama_logs(ll)
    ll.llama_backend_init()
    if args.engine:
        engine_ab(args)
        return
    _, path, _ = resolve_model(args.model)
    mp = ll.llama_model_default_params()
    mp.n_gpu_layers = 0
    mp.use_extra_bufts = extra_buffer_types_safe()
    model = ll.llama_model_load_from_file(str(path).encode(), mp)
    arms = [
        Arm(model, "unified", True, args.n_seq, args.unified_ctx, args.threads, 1024),
        Arm(model, "streams", False, args.n_seq, args.n_seq * args.stream_cells, args.threads, 1024),
    ]
    rng = np.random.default_rng(0)
    print(f"threads {args.threads}, K={args.k}, prompt {args.prompt} tokens, {args.steps} steps, "
          f"n_seq_max {args.n_seq}; contexts: " + ", ".join(f"{a.name} n_ctx={a.n_ctx}" for a in arms)
          + f"; load {load()}", flush=True)
    for G in [int(x) for x in args.groups.split(",")]:
        prompts = [list(rng.integers(100, 20000, args.prompt)) for _ in range(G)]
        seqs = [(g * args.k + i, args.prompt) for g in range(G) for i in range(args.k)]
        pre = {a.name: 0.0 for a in arms}
        dec = {a.name: 0.0 for a in arms}
        for r in range(args.repeats):
            for a in arms:
                pre[a.name] += a.prefill(prompts, args.k)
            for step in range(args.steps):  # the arms alternate step by step: load hits both alike
                for a in (arms if step % 2 == 0 else arms[::-1]):
                    dec[a.name] += a.step(seqs, step)
        n = len(seqs) * args.steps * args.repeats
        line = [f"G={G:<3} B={G * args.k:<4}"]
        for a in arms:
            line.append(f"{a.name} {n / dec[a.name]:6.1f} tok/s (prefill+copy {pre[a.name] / args.repeats:.2f} s)")
        line.append(f"streams/unified={dec['unified'] / dec['streams']:.2f}; load {load()}")
        print("  ".join(line), flush=True)
    for a in arms:
        a.close()
    ll.llama_model_free(model)


if __name__ == "__main__":
    main()
