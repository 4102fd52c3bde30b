"""The embedded engine on the real SmolLM2-135M model (slow: loads a 98 MB GGUF)."""

from __future__ import annotations

import asyncio
import math
import time

import pytest

llama_cpp = pytest.importorskip("llama_cpp", reason="needs the embedded engine: pip install 'infscale[embedded]'")

import infscale  # noqa: E402
from infscale.errors import ConfigError  # noqa: E402
from infscale.params import SamplingParams  # noqa: E402
from infscale.types import GenRequest  # noqa: E402

pytestmark = pytest.mark.slow

MSGS = [{"role": "user", "content": "Write one short sentence about the sea."}]


def wait_idle(engine, free: int, timeout: float = 120.0) -> bool:
    """Wait until nothing is live or queued in the engine and ``free`` sequences are free."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        st = engine.stats()
        if st["live"] == 0 and st["queued"] == 0 and st["free_sequences"] == free:
            return True
        time.sleep(0.05)
    return False


def gen(engine, reqs):
    return asyncio.run(engine.generate(reqs))


def test_four_batched_samples_are_distinct_and_share_one_prefill(engine):
    p = SamplingParams(temperature=1.0, max_tokens=24, seed=0)
    before = engine.evaluated_tokens
    outs = gen(engine, [GenRequest(params=p, messages=MSGS, seed=i) for i in range(4)])
    assert len({o.text for o in outs}) == 4
    prompt = outs[0].prompt_tokens
    assert all(o.prompt_tokens == prompt for o in outs)
    # one prefill of the prompt, then every generated token but each sample's last is evaluated
    assert engine.evaluated_tokens - before == prompt + sum(o.generated_tokens - 1 for o in outs)


def test_more_samples_than_the_live_cap_read_each_prompt_once(engine):
    """32 samples of 4 prompts through a cap of 16 live samples: whole request groups wait in
    the queue, so each prompt is still read once (exact token accounting), and all finish."""
    p = SamplingParams(temperature=1.0, max_tokens=6)
    prompts = [[{"role": "user", "content": f"Say a word about the number {k}."}] for k in range(4)]
    before = engine.evaluated_tokens
    outs = gen(engine, [GenRequest(params=p, messages=m, seed=i) for m in prompts for i in range(8)])
    assert engine.max_live == 16 and len(outs) == 32
    prompt_total = sum(outs[8 * k].prompt_tokens for k in range(4))
    assert engine.evaluated_tokens - before == prompt_total + sum(o.generated_tokens - 1 for o in outs)


def test_a_group_larger_than_the_live_cap_runs_alone_and_whole():
    """8 samples of one prompt through a cap of 4: the group is not split (its prompt is read
    once), and a second group waits until it ends rather than running beside it."""
    from infscale.backends.llamacpp import LlamaEngine
    from infscale.models import resolve_model

    _, path, _ = resolve_model("smollm2-135m")
    eng = LlamaEngine(path, n_ctx=4096, n_seq_max=16, max_live=4)
    try:
        p = SamplingParams(temperature=1.0, max_tokens=6)
        before = eng.evaluated_tokens
        outs = gen(eng, [GenRequest(params=p, messages=m, seed=i) for m in (MSGS, OTHERS[0]) for i in range(8)])
        assert len(outs) == 16
        prompts = outs[0].prompt_tokens + outs[8].prompt_tokens
        assert eng.evaluated_tokens - before == prompts + sum(o.generated_tokens - 1 for o in outs)
        assert eng.profile.rows / eng.profile.steps <= 8  # never both groups at once
    finally:
        eng.close()


def test_same_seed_reproduces_whatever_shares_the_batch(engine):
    p = SamplingParams(temperature=0.9, max_tokens=20, seed=0)
    alone = gen(engine, [GenRequest(params=p, messages=MSGS, seed=123)])[0]
    again = gen(engine, [GenRequest(params=p, messages=MSGS, seed=123)])[0]
    mixed = gen(engine, [GenRequest(params=p, messages=MSGS, seed=s) for s in (7, 123, 9)])[1]
    assert alone.text == again.text
    assert alone.token_ids == mixed.token_ids


OTHERS = [[{"role": "user", "content": q}] for q in
          ("Name three colours.", "What is 12 times 13? Think step by step.", "Describe a cat in two sentences.")]


def test_reproducible_mode_makes_a_sample_independent_of_other_prompts():
    from infscale.backends.llamacpp import LlamaEngine
    from infscale.models import resolve_model

    _, path, _ = resolve_model("smollm2-135m")
    p = SamplingParams(temperature=1.0, max_tokens=40, seed=0)
    target = GenRequest(params=p, messages=MSGS, seed=11)
    company = [GenRequest(params=p, messages=m, seed=i) for i, m in enumerate(OTHERS)]
    eng = LlamaEngine(path, n_ctx=4096, n_seq_max=8, reproducible=True)
    try:
        alone = gen(eng, [target])[0]
        # the target submitted after other prompts and beside more samples of its own prompt
        mixed = gen(eng, [*company, GenRequest(params=p, messages=MSGS, seed=5), target])[-1]
        assert mixed.token_ids == alone.token_ids and mixed.logprob == pytest.approx(alone.logprob, abs=0)
        assert eng.stats()["free_sequences"] == 8
    finally:
        eng.close()


def test_streams_layout_keeps_prompt_sharing_forks_and_its_per_sequence_cap():
    """One KV stream per sequence: a prompt copied to its samples and a fork copy the cells, so
    nothing is read twice (exact token accounting), and a prompt longer than one stream is
    refused in one line."""
    from infscale.backends.llamacpp import LlamaEngine
    from infscale.models import resolve_model

    _, path, _ = resolve_model("smollm2-135m")
    eng = LlamaEngine(path, n_ctx=4096, n_seq_max=8, kv_layout="streams")
    try:
        assert eng.n_ctx_seq == 512 and eng.kv_layout == "streams"
        p = SamplingParams(temperature=1.0, max_tokens=16)
        before = eng.evaluated_tokens
        outs = gen(eng, [GenRequest(params=p, messages=m, seed=i) for m in (MSGS, OTHERS[0]) for i in range(3)])
        prompts = outs[0].prompt_tokens + outs[3].prompt_tokens
        assert eng.evaluated_tokens - before == prompts + sum(o.generated_tokens - 1 for o in outs)
        root = gen(eng, [GenRequest(params=p.with_(stop=("\n",)), prompt="Steps:\n1. Add 2 and 3.\n", keep=True, seed=1)])[0]
        before = eng.evaluated_tokens
        kids = gen(eng, [GenRequest(params=p, parent=root.handle, seed=s) for s in range(3)])
        assert eng.evaluated_tokens - before == 1 + sum(k.generated_tokens - 1 for k in kids)
        eng.free(root.handle)
        with pytest.raises(ConfigError, match="512 per sequence"):
            eng.submit([GenRequest(params=p, prompt="word " * 600)])
    finally:
        eng.close()


def test_streams_layout_keeps_decoding_samples_on_consecutive_ids():
    """On per-sequence streams llama.cpp makes one micro-batch per run of consecutive sequence
    ids; when short samples finish first, the long ones move down to the freed ids (a stream
    copy, nothing re-read), so each decode step stays one run, and a moved greedy sample is the
    one it would have been in place."""
    from infscale.backends.llamacpp import LlamaEngine
    from infscale.models import resolve_model

    _, path, _ = resolve_model("smollm2-135m")
    eng = LlamaEngine(path, n_ctx=4096, n_seq_max=8, kv_layout="streams")
    try:
        greedy = SamplingParams(temperature=0.0, max_tokens=24)
        short = [GenRequest(params=SamplingParams(temperature=1.0, max_tokens=2 + i), messages=OTHERS[0], seed=i)
                 for i in range(4)]
        long = GenRequest(params=greedy, messages=MSGS)
        before = eng.evaluated_tokens
        outs = gen(eng, [*short, long])
        moved = eng.profile.moves
        runs, steps = eng.profile.runs, eng.profile.steps
        assert moved >= 1  # the long sample sat above the short ones and moved down
        # one run of ids per step (a step reading a prompt with nothing live counts none)
        assert runs <= steps
        prompts = outs[0].prompt_tokens + outs[-1].prompt_tokens
        assert eng.evaluated_tokens - before == prompts + sum(o.generated_tokens - 1 for o in outs)
        assert wait_idle(eng, 8)
        alone = gen(eng, [long])[0]
        assert eng.profile.moves == moved  # alone, nothing moves
        assert outs[-1].token_ids == alone.token_ids
        assert outs[-1].logprobs == pytest.approx(alone.logprobs, abs=0.05)
    finally:
        eng.close()


def test_logprobs_model_and_sampled(engine):
    greedy = gen(engine, [GenRequest(params=SamplingParams(temperature=0.0, max_tokens=12), messages=MSGS)])[0]
    assert len(greedy.logprobs) == greedy.generated_tokens == len(greedy.sampled_logprobs)
    assert all(x == 0.0 for x in greedy.sampled_logprobs)
    assert all(x <= 0.0 for x in greedy.logprobs)
    plain = gen(engine, [GenRequest(params=SamplingParams(temperature=1.0, max_tokens=12), messages=MSGS, seed=3)])[0]
    # temperature 1 and no truncation: the sampled distribution is the model's
    assert all(math.isclose(a, b, abs_tol=1e-4) for a, b in zip(plain.logprobs, plain.sampled_logprobs))
    trunc = gen(engine, [GenRequest(params=SamplingParams(temperature=0.7, top_k=5, max_tokens=12), messages=MSGS, seed=3)])[0]
    # truncation and a low temperature concentrate mass: sampled >= model log-probability
    assert all(s >= m - 1e-6 for m, s in zip(trunc.logprobs, trunc.sampled_logprobs))


def test_stop_strings_and_max_tokens(engine):
    p = SamplingParams(temperature=0.0, max_tokens=5)
    out = gen(engine, [GenRequest(params=p, prompt="1, 2, 3, 4, 5, 6, 7, 8,")])[0]
    assert out.finish_reason == "length" and out.generated_tokens == 5
    p = SamplingParams(temperature=0.0, max_tokens=40, stop=("7",))
    out = gen(engine, [GenRequest(params=p, prompt="Count: 1, 2, 3, 4, 5,")])[0]
    assert out.finish_reason == "stop" and out.stop == "7" and "7" not in out.text


def test_top_logprobs(engine):
    p = SamplingParams(temperature=0.0, max_tokens=2, top_logprobs=5)
    out = gen(engine, [GenRequest(params=p, messages=MSGS)])[0]
    assert len(out.top_logprobs) == out.generated_tokens
    assert all(len(d) == 5 for d in out.top_logprobs)
    assert math.isclose(max(out.top_logprobs[0].values()), out.logprobs[0], abs_tol=1e-4)


def test_fork_continues_without_rereading_and_free_releases(engine):
    free0 = engine.stats()["free_sequences"]
    p = SamplingParams(temperature=0.8, max_tokens=30, stop=("\n",))
    root = gen(engine, [GenRequest(params=p, prompt="Steps:\n1. Add 2 and 3.\n", keep=True, seed=1)])[0]
    h = root.handle
    assert h is not None and engine.stats()["free_sequences"] == free0 - 1
    before = engine.evaluated_tokens
    kids = gen(engine, [GenRequest(params=p, parent=h, seed=s) for s in range(3)])
    # the parent's cache is shared: only its one pending token is read, once, for three children
    assert engine.evaluated_tokens - before == 1 + sum(k.generated_tokens - 1 for k in kids)
    assert all(k.prompt_tokens == 1 for k in kids)
    engine.free(h)
    engine.free(h)  # idempotent
    asyncio.run(asyncio.sleep(0.2))
    assert engine.stats()["free_sequences"] == free0
    with pytest.raises(ConfigError):
        engine.submit([GenRequest(params=p, parent=h)])


def test_a_fork_with_nothing_to_read_fails_without_taking_a_sequence(engine):
    from infscale.errors import BackendError

    free0 = engine.stats()["free_sequences"]
    p = SamplingParams(temperature=0.8, max_tokens=8)
    h = gen(engine, [GenRequest(params=p, prompt="Steps:\n", keep=True, seed=1)])[0].handle
    h.pending = []  # as after an end of text: no token waits to be read
    with pytest.raises(BackendError, match="nothing to continue from"):
        gen(engine, [GenRequest(params=p, parent=h, seed=s) for s in range(2)])
    engine.free(h)
    asyncio.run(asyncio.sleep(0.2))
    assert engine.stats()["free_sequences"] == free0


def test_cancel_frees_sequences(engine):
    free0 = engine.stats()["free_sequences"]

    async def go():
        task = asyncio.ensure_future(engine.generate(
            [GenRequest(params=SamplingParams(temperature=1.0, max_tokens=400), messages=MSGS, seed=i) for i in range(4)]))
        await asyncio.sleep(0.3)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(go())
    # freed once the scheduler's current decode step returns (seconds on a busy machine)
    assert wait_idle(engine, free0), engine.stats()


def test_ask_returns_a_parsed_answer(engine):
    r = infscale.ask("Tom has 4 apples and buys 3 more. How many apples does he have?", "majority", n=4, generator=engine)
    assert r.answer is not None
    float(r.answer)  # a number
    assert r.usage.calls == 4 and r.usage.generated_tokens > 0
    assert sum(m.count for m in r.distribution) == sum(c.answer is not None for c in r.candidates)


def test_self_eval_scores_real_candidates(engine):
    r = infscale.ask("What is 2 + 2?", "best-of-n", n=2, generator=engine, scorer="self-eval")
    assert r.usage.calls == 4  # two samples, two self-evaluations
    assert all(c.score is not None and c.score <= 0.0 for c in r.candidates)


def test_adaptive_stop_cancels_outstanding_samples_in_the_engine(engine):
    free0 = engine.stats()["free_sequences"]
    params = SamplingParams(temperature=0.1, max_tokens=64)
    # 32 samples through the fixture's 16 live slots: the first 16 are nearly identical and
    # finish in the same decode step (drawn together, resolved together), so the stop can only
    # save the 16 still waiting or just started
    r = infscale.ask("What is 2 + 2?", "adaptive", n=32, generator=engine, params=params, min_samples=3, threshold=0.9)
    assert r.stopped_early and len(r.candidates) < 32
    # every finished sample is charged; the cancelled ones never finished
    assert r.usage.calls < 32

    # the scheduler thread frees the cancelled ones once its current decode step returns, which
    # on a busy machine can take seconds
    assert wait_idle(engine, free0), engine.stats()


def test_particle_filter_forks_kv_and_reads_each_token_once(engine):
    """8 particles, arithmetic step checker: every token is evaluated about once (no re-reading)."""
    assert wait_idle(engine, engine.n_seq_max), engine.stats()  # every sequence free to fork into
    from infscale.tasks.prompts import build_request

    problem = infscale.Problem(question="Tom has 3 boxes with 4 apples each. He eats 2 apples. How many are left?",
                               id="pf")
    params = SamplingParams(temperature=0.8, max_tokens=160)
    req = build_request(problem, params, chat=True, seed=0)
    prompt_len = len(engine.tokenize(engine.render(req.messages), add_bos=False))
    before = engine.evaluated_tokens
    r = asyncio.run(infscale.run(problem, engine, "particle-filter", n=8, scorer="arith-check", params=params,
                                 options={"max_steps": 10}, trace=True))
    evaluated = engine.evaluated_tokens - before
    generated = r.usage.generated_tokens
    steps = sum(1 for t in r.trace if t.get("event") == "step")
    assert steps >= 2 and r.candidates
    assert evaluated <= 1.05 * (prompt_len + generated), (evaluated, prompt_len, generated)
    # every kept sequence was released: only free sequences remain (after the scheduler's turn)
    asyncio.run(asyncio.sleep(0.1))
    assert engine.stats()["live"] == 0
    assert engine.stats()["free_sequences"] == engine.n_seq_max


@pytest.mark.parametrize("strategy", ["beam-search", "dvts", "rebase", "best-first", "particle-gibbs"])
def test_tree_searches_run_on_the_engine_and_release_sequences(engine, strategy):
    params = SamplingParams(temperature=0.8, max_tokens=96)
    r = infscale.ask("What is 7 + 5?", strategy, n=4, generator=engine, params=params, scorer="arith-check",
                     max_steps=6)
    assert r.candidates and r.usage.calls > 0
    asyncio.run(asyncio.sleep(0.1))
    assert engine.stats()["live"] == 0 and engine.stats()["free_sequences"] == engine.n_seq_max
