"""Aggregate generated tokens/s for N samples of one prompt, measured side by side in one run.

For N = 1, 4, 8, 16 on the embedded model:

* infscale   — one ``generate`` call with N requests (one prefill, one batch per step);
* sequential — N single-sample ``generate`` calls one after another through infscale;
* raw        — a bare llama-cpp-python loop: one prefill, KV copied to N sequences, then one
  ``llama_decode`` per step with N tokens, sampling in numpy (the physical limit here), with
  the thread count the engine starts with.

Every sample generates exactly ``--tokens`` tokens (end-of-text ignored) so the three do equal
work. Last line: ``sampling N=8: batched/sequential=X.XX infscale/raw-batched=Y.YY``. The line
before it measures what DeepConf's token confidence costs plain sampling: infscale at N=8 with
``GenRequest.confidence=k`` on and off, interleaved (``confidence N=8 k=20: off A tok/s, on B
tok/s, on/off=C.CC``), and then what self-certainty costs it the same way
(``self-certainty N=8: off A tok/s, on B tok/s, on/off=C.CC``, with ``GenRequest.self_certainty``);
``--confidence-k 0`` skips both, ``--only-confidence`` prints only them.

    python bench/sampling.py [--tokens 64] [--model smollm2-135m] [--repeats 2] [--confidence-k 20]
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import os
import time

import numpy as np

from infscale.backends.llamacpp import LlamaEngine, extra_buffer_types_safe
from infscale.models import resolve_model
from infscale.params import SamplingParams
from infscale.types import GenRequest

PROMPT = "Once upon a time, in a small village by the sea, there lived"


def infscale_tps(engine: LlamaEngine, n: int, tokens: int, seed: int, confidence: int = 0,
                 self_certainty: bool = False) -> float:
    p = SamplingParams(temperature=0.8, max_tokens=tokens, ignore_eos=True)
    reqs = [GenRequest(params=p, prompt=PROMPT, seed=seed + i, confidence=confidence, self_certainty=self_certainty)
            for i in range(n)]
    t = time.perf_counter()
    outs = asyncio.run(engine.generate(reqs))
    dt = time.perf_counter() - t
    return sum(o.generated_tokens for o in outs) / dt


def sequential_tps(engine: LlamaEngine, n: int, tokens: int, seed: int) -> float:
    p = SamplingParams(temperature=0.8, max_tokens=tokens, ignore_eos=True)
    total = 0
    t = time.perf_counter()
    for i in range(n):
        total += asyncio.run(engine.generate([GenRequest(params=p, prompt=PROMPT, seed=seed + i)]))[0].generated_tokens
    return total / (time.perf_counter() - t)


class RawLoop:
    """The bare multi-sequence decode loop, on its own context (same settings as the engine)."""

    def __init__(self, path: str, n_ctx: int, n_seq_max: int, n_batch: int, threads: int):
        import llama_cpp as ll

        self.ll = ll
        mp = ll.llama_model_default_params()
        mp.n_gpu_layers = 0
        mp.use_extra_bufts = extra_buffer_types_safe()
        self.model = ll.llama_model_load_from_file(str(path).encode(), mp)
        self.vocab = ll.llama_model_get_vocab(self.model)
        self.n_vocab = ll.llama_vocab_n_tokens(self.vocab)
        cp = ll.llama_context_default_params()
        cp.n_ctx, cp.n_batch, cp.n_ubatch, cp.n_seq_max = n_ctx, n_batch, min(n_batch, 512), n_seq_max
        cp.n_threads = cp.n_threads_batch = threads
        cp.kv_unified = True
        cp.no_perf = True
        self.ctx = ll.llama_init_from_model(self.model, cp)
        self.mem = ll.llama_get_memory(self.ctx)
        self.batch = ll.llama_batch_init(n_batch, 0, 1)
        data = PROMPT.encode()
        arr = (ll.llama_token * (len(data) + 8))()
        k = ll.llama_tokenize(self.vocab, data, len(data), arr, len(arr), True, True)
        self.prompt = list(arr[:k])

    def _put(self, i, tok, pos, seq, logits):
        b = self.batch
        b.token[i], b.pos[i], b.n_seq_id[i], b.logits[i] = tok, pos, 1, logits
        b.seq_id[i][0] = seq

    def tps(self, n: int, tokens: int, seed: int) -> float:
        ll, rngs = self.ll, [np.random.default_rng(seed + i) for i in range(n)]
        t = time.perf_counter()
        ll.llama_memory_clear(self.mem, True)
        for i, tok in enumerate(self.prompt):
            self._put(i, tok, i, 0, int(i == len(self.prompt) - 1))
        self.batch.n_tokens = len(self.prompt)
        assert ll.llama_decode(self.ctx, self.batch) == 0
        for s in range(1, n):
            ll.llama_memory_seq_cp(self.mem, 0, s, -1, -1)
        rows = np.ctypeslib.as_array(ll.llama_get_logits(self.ctx), shape=(1, self.n_vocab))
        rows = np.repeat(rows, n, axis=0)
        pos = len(self.prompt)
        for _ in range(tokens):
            for s in range(n):
                z = rows[s].astype(np.float64) / 0.8
                p = np.exp(z - z.max())
                p /= p.sum()
                tok = int(np.searchsorted(np.cumsum(p), rngs[s].random()))
                self._put(s, min(tok, self.n_vocab - 1), pos, s, 1)
            self.batch.n_tokens = n
            assert ll.llama_decode(self.ctx, self.batch) == 0
            rows = np.ctypeslib.as_array(ll.llama_get_logits(self.ctx), shape=(n, self.n_vocab))
            pos += 1
        return n * tokens / (time.perf_counter() - t)


def confidence_line(engine: LlamaEngine, args) -> None:
    """infscale at N=8 with token confidence off and on, interleaved, best of ``--repeats``."""
    off = on = 0.0
    for r in range(args.repeats):
        off = max(off, infscale_tps(engine, 8, args.tokens, 100 * r))
        on = max(on, infscale_tps(engine, 8, args.tokens, 100 * r, confidence=args.confidence_k))
    print(f"confidence N=8 k={args.confidence_k}: off {off:.1f} tok/s, on {on:.1f} tok/s, on/off={on / off:.2f}",
          flush=True)
    off = on = 0.0
    for r in range(args.repeats):
        off = max(off, infscale_tps(engine, 8, args.tokens, 100 * r))
        on = max(on, infscale_tps(engine, 8, args.tokens, 100 * r, self_certainty=True))
    print(f"self-certainty N=8: off {off:.1f} tok/s, on {on:.1f} tok/s, on/off={on / off:.2f}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=2, help="take the best of this many runs of each")
    ap.add_argument("--ns", default="1,4,8,16")
    ap.add_argument("--confidence-k", type=int, default=20, help="token confidence's k for the on/off line (0: skip)")
    ap.add_argument("--only-confidence", action="store_true", help="print only the confidence on/off line")
    args = ap.parse_args()
    _, path, _ = resolve_model(args.model)
    print(f"load {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    engine = LlamaEngine(path, n_ctx=8192, n_seq_max=32, n_batch=1024)
    if args.only_confidence:
        infscale_tps(engine, 2, 8, 0)
        confidence_line(engine, args)
        engine.close()
        return
    raw = RawLoop(path, n_ctx=8192, n_seq_max=32, n_batch=1024, threads=engine.n_threads)
    infscale_tps(engine, 2, 8, 0)  # warm up both
    raw.tps(2, 8, 0)
    print(f"{'N':>3} {'infscale tok/s':>15} {'sequential':>11} {'raw batched':>12} {'batched/seq':>12} {'infscale/raw':>13}")
    ratios = {}
    for n in [int(x) for x in args.ns.split(",")]:
        a = b = c = 0.0
        for r in range(args.repeats):  # interleaved, so drift hits all three alike
            a = max(a, infscale_tps(engine, n, args.tokens, 100 * r))
            b = max(b, sequential_tps(engine, n, args.tokens, 100 * r))
            c = max(c, raw.tps(n, args.tokens, 100 * r))
        ratios[n] = (a / b, a / c)
        print(f"{n:>3} {a:>15.1f} {b:>11.1f} {c:>12.1f} {a / b:>12.2f} {a / c:>13.2f}", flush=True)
    if args.confidence_k:
        confidence_line(engine, args)
    engine.close()
    if 8 in ratios:
        print(f"sampling N=8: batched/sequential={ratios[8][0]:.2f} infscale/raw-batched={ratios[8][1]:.2f}")


if __name__ == "__main__":
    main()
