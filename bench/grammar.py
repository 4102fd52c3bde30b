"""What a JSON constraint (``response_format``) costs the embedded engine per generated token.

N samples of one prompt, side by side in one run, interleaved over ``--repeats`` rounds:

* free   — unconstrained, every sample generates exactly ``--tokens`` tokens (end of text ignored);
* schema — constrained to a JSON schema with one long string field (``{"story": string}`` of at
  least 400 characters), so that samples run to the same cap (the count of tokens they
  generated is what is divided).

For each it prints aggregate generated tokens/s and the engine's own profile: milliseconds per
sampled row spent in sampling (for the constrained rows this includes llama.cpp's grammar pass
over the whole vocabulary, ``llama_sampler_apply``) and in decode per step. Last line:
``grammar N=8: free A tok/s, schema B tok/s, schema/free=C.CC``.

    python bench/grammar.py [--n 8] [--tokens 64] [--model smollm2-135m] [--repeats 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

from infscale.backends.llamacpp import LlamaEngine
from infscale.models import resolve_model
from infscale.params import SamplingParams
from infscale.types import GenRequest

MSGS = [{"role": "user", "content": "Write a long story about a lighthouse keeper, as JSON with a field story."}]
SCHEMA = {"type": "object", "properties": {"story": {"type": "string", "minLength": 400}}, "required": ["story"],
          "additionalProperties": False}
RF = json.dumps({"type": "json_schema", "json_schema": {"name": "story", "schema": SCHEMA}})


def run(engine: LlamaEngine, n: int, tokens: int, seed: int, constrained: bool) -> tuple[int, float, dict]:
    p = (SamplingParams(temperature=0.8, max_tokens=tokens, response_format=RF) if constrained
         else SamplingParams(temperature=0.8, max_tokens=tokens, ignore_eos=True))
    reqs = [GenRequest(params=p, messages=MSGS, seed=seed + i) for i in range(n)]
    before = engine.profile.as_dict()
    t = time.perf_counter()
    outs = asyncio.run(engine.generate(reqs))
    dt = time.perf_counter() - t
    after = engine.profile.as_dict()
    prof = {k: after[k] - before[k] for k in after}
    return sum(o.generated_tokens for o in outs), dt, prof


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    _, path, _ = resolve_model(args.model)
    engine = LlamaEngine(path, n_seq_max=max(16, args.n))
    run(engine, args.n, 8, 0, False)  # warm up both paths (and parse the grammar once)
    run(engine, args.n, 8, 0, True)
    tot = {False: [0, 0.0, 0.0, 0.0, 0], True: [0, 0.0, 0.0, 0.0, 0]}  # tokens, seconds, sampling, decode, rows
    for r in range(args.repeats):
        for constrained in (False, True):
            toks, dt, prof = run(engine, args.n, args.tokens, 100 * r, constrained)
            t = tot[constrained]
            t[0] += toks
            t[1] += dt
            t[2] += prof["sampling"]
            t[3] += prof["decode"]
            t[4] += prof["rows"]
    engine.close()
    tps = {}
    for constrained, (toks, secs, samp, dec, rows) in tot.items():
        name = "schema" if constrained else "free"
        tps[constrained] = toks / secs
        print(f"{name:6s}: {toks} tokens in {secs:.2f} s = {toks / secs:.1f} tok/s; sampling "
              f"{1e3 * samp / max(rows, 1):.2f} ms per row, decode {1e3 * dec:.0f} ms in all "
              f"(threads {engine.n_threads})")
    print(f"grammar N={args.n}: free {tps[False]:.1f} tok/s, schema {tps[True]:.1f} tok/s, "
          f"schema/free={tps[True] / tps[False]:.2f}")


if __name__ == "__main__":
    main()
