"""Throughput of many problems at once through the embedded engine, side by side in one run.

For P = 1, 4, 20 seeded arithmetic problems (majority vote, 8 samples each, 96 max tokens):

* (a) sequential — one ``infscale.run`` after another;
* (b) concurrent — all P at once (``asyncio.gather`` over ``infscale.run``);
* (c) raw — a bare llama-cpp-python loop over the same prompts at the same total batch: each
  prompt read once and its KV copied to 8 sequences, one ``llama_decode`` per step across all
  live sequences, tokens drawn by llama.cpp's own C sampler chain (temperature + dist), the
  same model file, batch settings, the thread count the engine uses at that point, and max
  tokens, on a unified cache (n_ctx raised where all P x 8 sequences need more cells; a bare
  loop on per-sequence streams would run slower, its ids scattering as samples finish) — the
  limit here.

Throughput is generated tokens per second. Then the scheduler's profile at the largest P (share
of wall time in decode, logits read, sampling, bookkeeping; the rest is outside the scheduler:
strategies, scoring, idle), the same for the particle filter (8 particles, arith-check) run
sequentially and concurrently, and one line with a CPU-bound competitor process beside the
engine. Last lines::

    particle-filter P=20: concurrent/sequential=X
    concurrency P=20: concurrent/sequential=X infscale/raw=Y

Goals (issue 11): X >= 1.2, Y >= 0.9, and with a competitor at least half the quiet throughput.

    python bench/concurrency.py [--ps 1,4,20] [--n 8] [--max-tokens 96] [--threads T]
                                [--kv-layout unified|streams] [--live-caps 16,64]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import time

import infscale
from infscale.backends.llamacpp import LlamaEngine, extra_buffer_types_safe
from infscale.datasets import arith_problems
from infscale.models import resolve_model
from infscale.tasks.prompts import build_request


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


async def _solve(engine, problems, strategy, n, params, options, concurrent):
    runs = [infscale.run(p, engine, strategy, n=n, params=params, seed=0, options=options,
                         **({"scorer": "arith-check"} if strategy == "particle-filter" else {}))
            for p in problems]
    if concurrent:
        return await asyncio.gather(*runs)
    return [await r for r in runs]


def solve(engine, problems, strategy, n, params, options, concurrent) -> dict:
    ev0 = engine.evaluated_tokens
    t = time.perf_counter()
    res = asyncio.run(_solve(engine, problems, strategy, n, params, options, concurrent))
    wall = time.perf_counter() - t
    gen = sum(r.usage.generated_tokens for r in res)
    return {"wall": wall, "generated": gen, "tps": gen / wall, "evaluated": engine.evaluated_tokens - ev0}


class RawLoop:
    """The bare multi-sequence loop with llama.cpp's C sampler, on its own context."""

    def __init__(self, engine: LlamaEngine, n_seq: int, n_ctx: int):
        import llama_cpp as ll

        self.ll = ll
        mp_ = ll.llama_model_default_params()
        mp_.n_gpu_layers = 0
        mp_.use_extra_bufts = extra_buffer_types_safe()
        self.model = ll.llama_model_load_from_file(str(engine.model_path).encode(), mp_)
        self.vocab = ll.llama_model_get_vocab(self.model)
        cp = ll.llama_context_default_params()
        cp.n_ctx, cp.n_batch, cp.n_ubatch = n_ctx, engine.n_batch, engine.n_ubatch
        cp.n_seq_max = max(n_seq, 1)
        cp.n_threads = cp.n_threads_batch = engine.n_threads
        cp.kv_unified = True  # the bare loop's best layout (on streams, ids that finish scatter)
        cp.no_perf = True
        self.ctx = ll.llama_init_from_model(self.model, cp)
        if not self.ctx:
            raise SystemExit("raw loop: llama.cpp could not create its context")
        self.mem = ll.llama_get_memory(self.ctx)
        self.n_batch = engine.n_batch
        self.batch = ll.llama_batch_init(self.n_batch, 0, 1)

    def close(self) -> None:
        ll = self.ll
        ll.llama_batch_free(self.batch)
        ll.llama_free(self.ctx)
        ll.llama_model_free(self.model)

    def _decode(self, items) -> None:
        b = self.batch
        for i, (tok, pos, seq, logits) in enumerate(items):
            b.token[i], b.pos[i], b.n_seq_id[i], b.logits[i] = tok, pos, 1, logits
            b.seq_id[i][0] = seq
        b.n_tokens = len(items)
        rc = self.ll.llama_decode(self.ctx, b)
        if rc != 0:
            raise SystemExit(f"raw loop: llama_decode returned {rc}")

    def run(self, prompts: list[list[int]], n: int, max_tokens: int, temperature: float, seed: int) -> dict:
        ll = self.ll
        ll.llama_memory_clear(self.mem, True)
        t = time.perf_counter()
        chains = []
        for s in range(len(prompts) * n):
            ch = ll.llama_sampler_chain_init(ll.llama_sampler_chain_default_params())
            ll.llama_sampler_chain_add(ch, ll.llama_sampler_init_temp(temperature))
            ll.llama_sampler_chain_add(ch, ll.llama_sampler_init_dist(seed + s))
            chains.append(ch)
        pos = {s: len(prompts[s // n]) for s in range(len(prompts) * n)}
        live = []
        generated = 0
        # read every prompt once, whole prompts packed into batches of n_batch tokens; after the
        # batch that holds a prompt's last token, copy its KV to n sequences and draw their first
        # tokens from that row
        batches: list[list[int]] = [[]]
        for p, pr in enumerate(prompts):
            if len(pr) > self.n_batch:
                raise SystemExit("raw loop: a prompt is longer than n_batch")
            if sum(len(prompts[q]) for q in batches[-1]) + len(pr) > self.n_batch:
                batches.append([])
            batches[-1].append(p)
        evaluated = 0
        for group in batches:
            items = [(tok, j, p * n, int(j == len(prompts[p]) - 1)) for p in group for j, tok in enumerate(prompts[p])]
            self._decode(items)
            evaluated += len(items)
            row = -1
            for p in group:
                row += len(prompts[p])
                for k in range(1, n):
                    ll.llama_memory_seq_cp(self.mem, p * n, p * n + k, -1, -1)
                for k in range(n):
                    s = p * n + k
                    tok = ll.llama_sampler_sample(chains[s], self.ctx, row)
                    generated += 1
                    if not ll.llama_vocab_is_eog(self.vocab, tok) and max_tokens > 1:
                        live.append((s, tok, 1))
        while live:
            self._decode([(tok, pos[s], s, 1) for s, tok, _ in live])
            nxt = []
            for i, (s, _, count) in enumerate(live):
                pos[s] += 1
                tok = ll.llama_sampler_sample(chains[s], self.ctx, i)
                generated += 1
                if not ll.llama_vocab_is_eog(self.vocab, tok) and count + 1 < max_tokens:
                    nxt.append((s, tok, count + 1))
            live = nxt
        wall = time.perf_counter() - t
        for ch in chains:
            ll.llama_sampler_free(ch)
        return {"wall": wall, "generated": generated, "tps": generated / wall, "evaluated": evaluated}


def profile_rows(engine: LlamaEngine, wall: float) -> list[str]:
    p = engine.profile
    parts = [("decode", p.decode), ("logits", p.logits), ("sampling", p.sampling), ("bookkeeping", p.bookkeeping)]
    other = wall - sum(v for _, v in parts)
    out = [f"  {name:<12} {v:>7.2f} s {100 * v / wall:>5.1f}%" for name, v in parts]
    out.append(f"  {'outside step':<12} {other:>7.2f} s {100 * other / wall:>5.1f}%   "
               f"({p.steps} steps, {p.rows / max(p.steps, 1):.1f} rows/step, threads now {engine.n_threads}, "
               f"{engine.kv_layout}: {p.runs / max(p.steps, 1):.2f} id runs/step, {p.moves} moves)")
    return out


def _burn() -> None:  # pragma: no cover - a competitor process
    x = 0
    while True:
        x = (x * 1103515245 + 12345) & 0x7FFFFFFF


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--ps", default="1,4,20")
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=96)
    ap.add_argument("--threads", default=None, help="llama.cpp threads, N or auto (default: the engine's, every core)")
    ap.add_argument("--kv-layout", default=None, help="the engine's KV layout: unified or streams "
                    "(default: INFSCALE_KV_LAYOUT, else unified)")
    ap.add_argument("--pf-problems", type=int, default=20)
    ap.add_argument("--skip", default="", help="comma list of parts to skip: raw,pf,contention")
    ap.add_argument("--live-caps", default="", help="comma list of live-sample caps: (b) at the largest P "
                    "again on an engine with each cap (max_live), beside (a)")
    args = ap.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    name, path, spec = resolve_model(args.model)
    engine = LlamaEngine(path, model_name=name, chat_template="auto" if spec is None or spec.chat else None,
                         n_threads=args.threads, kv_layout=args.kv_layout)
    params = infscale.SamplingParams(max_tokens=args.max_tokens)
    ps = [int(x) for x in args.ps.split(",")]
    print(f"model {name}, engine: n_ctx={engine.n_ctx} n_seq_max={engine.n_seq_max} n_batch={engine.n_batch} "
          f"threads={engine.threads_setting} kv={engine.kv_layout} live cap={engine.max_live}; load {load()}", flush=True)
    solve(engine, arith_problems(2, seed=99), "majority", 2, params.with_(max_tokens=8), {}, True)  # warm up

    print(f"{'P':>3} {'(a) seq tok/s':>14} {'(b) conc tok/s':>15} {'(c) raw tok/s':>14} {'b/a':>6} {'b/c':>6}"
          f" {'prompt tok a/b':>15} {'load':>16}", flush=True)
    last = None
    for P in ps:
        problems = arith_problems(P, seed=0)
        a = solve(engine, problems, "majority", args.n, params, {}, False)
        engine.profile = type(engine.profile)()
        b = solve(engine, problems, "majority", args.n, params, {}, True)
        prof_b = profile_rows(engine, b["wall"])
        c = None
        if "raw" not in skip:
            prompts = [engine._prompt_tokens(build_request(p, params, chat=engine.chat_template is not None, seed=0))
                       for p in problems]
            # all P x n sequences at once need more KV cells than the engine's context may have
            need = sum(len(x) for x in prompts) + P * args.n * args.max_tokens + 256
            raw = RawLoop(engine, P * args.n, max(engine.n_ctx, need))
            c = raw.run(prompts, args.n, args.max_tokens, params.temperature, seed=0)
            raw.close()
        # prompt tokens the model read = evaluated - (generated - one per sample's last token)
        pa = a["evaluated"] - (a["generated"] - P * args.n)
        pb = b["evaluated"] - (b["generated"] - P * args.n)
        ctps = c["tps"] if c else float("nan")
        print(f"{P:>3} {a['tps']:>14.1f} {b['tps']:>15.1f} {ctps:>14.1f} {b['tps'] / a['tps']:>6.2f} "
              f"{b['tps'] / ctps:>6.2f} {pa:>7}/{pb:<7} {load():>16}", flush=True)
        last = (P, b["tps"] / a["tps"], b["tps"] / ctps, prof_b)
        last_a = a["tps"]
    caps = [int(x) for x in args.live_caps.split(",") if x]
    if caps:
        P = last[0]
        problems = arith_problems(P, seed=0)
        print(f"live cap sweep at P={P} (b/a against the (a) above, {last_a:.1f} tok/s):", flush=True)
        for cap in caps:
            ceng = LlamaEngine(path, model_name=name, chat_template="auto" if spec is None or spec.chat else None,
                               n_threads=args.threads, max_live=cap, kv_layout=args.kv_layout)
            solve(ceng, arith_problems(2, seed=99), "majority", 2, params.with_(max_tokens=8), {}, True)
            r = solve(ceng, problems, "majority", args.n, params, {}, True)
            ceng.close()
            print(f"  cap {cap:>3}: {r['tps']:6.1f} tok/s  b/a={r['tps'] / last_a:.2f}  "
                  f"prompt tok {r['evaluated'] - (r['generated'] - P * args.n)}  load {load()}", flush=True)
    print(f"scheduler profile, (b) at P={last[0]} (share of its wall time):")
    print("\n".join(last[3]))

    if "contention" not in skip:
        # the thread setting made for a shared machine: `auto` (the default, a fixed count of
        # every core, is what waits at ggml's barriers while the competitor holds a core)
        ceng = LlamaEngine(path, model_name=name, chat_template="auto" if spec is None or spec.chat else None,
                           n_threads="auto", kv_layout=args.kv_layout)
        problems = arith_problems(4, seed=1)
        quiet = solve(ceng, problems, "majority", args.n, params, {}, True)
        burner = mp.get_context("spawn").Process(target=_burn, daemon=True)
        burner.start()
        try:
            time.sleep(0.5)
            busy = solve(ceng, problems, "majority", args.n, params, {}, True)
        finally:
            burner.kill()
            burner.join()
        print(f"contention P=4, threads auto: quiet {quiet['tps']:.1f} tok/s, beside one CPU-bound process "
              f"{busy['tps']:.1f} tok/s, ratio={busy['tps'] / quiet['tps']:.2f} (threads now {ceng.n_threads}); "
              f"load {load()}", flush=True)
        ceng.close()

    pf_x = None
    if "pf" not in skip:
        problems = arith_problems(args.pf_problems, seed=0)
        opts = {"max_steps": 8}
        pa = solve(engine, problems, "particle-filter", args.n, params, opts, False)
        engine.profile = type(engine.profile)()
        pb = solve(engine, problems, "particle-filter", args.n, params, opts, True)
        pf_x = pb["tps"] / pa["tps"]
        print(f"particle filter x{args.pf_problems}: (a) {pa['tps']:.1f} tok/s {pa['wall']:.1f} s, "
              f"(b) {pb['tps']:.1f} tok/s {pb['wall']:.1f} s, evaluated a/b {pa['evaluated']}/{pb['evaluated']}; "
              f"load {load()}")
        print("scheduler profile, particle filter (b):")
        print("\n".join(profile_rows(engine, pb["wall"])))
        print(f"particle-filter P={args.pf_problems}: concurrent/sequential={pf_x:.2f}")
    engine.close()
    print(f"concurrency P={last[0]}: concurrent/sequential={last[1]:.2f} infscale/raw={last[2]:.2f}")


if __name__ == "__main__":
    main()
