"""JSON-constrained decoding on the embedded engine (response_format through llama.cpp grammars).

Fast tests: the masked sampler against the exact masked distribution (numpy only), the schema
checks, and the grammar masks on SmolLM2's vocabulary (vocabulary only, no weights). Slow tests
run the real model: every sample of a constrained vote validates, the same prompt unconstrained
does not, and a forked sequence keeps its constraint.
"""

from __future__ import annotations

import asyncio
import ctypes
import json

import numpy as np
import pytest

from infscale.backends.sampling import log_softmax, sample_masked, sample_token
from infscale.errors import ConfigError
from infscale.params import SamplingParams
from infscale.types import GenRequest

SCHEMA = {"type": "object", "properties": {"age": {"type": "integer"},
                                           "mood": {"type": "string", "enum": ["happy", "sad", "calm"]}},
          "required": ["age", "mood"], "additionalProperties": False}
RF_SCHEMA = json.dumps({"type": "json_schema", "json_schema": {"name": "person", "schema": SCHEMA}})
RF_OBJECT = json.dumps({"type": "json_object"})
ASK = [{"role": "user", "content": "Tell me about a person you met today."}]


def valid(text: str) -> bool:
    """The whole text is one JSON document that satisfies SCHEMA (checked by hand)."""
    try:
        v = json.loads(text)
    except ValueError:
        return False
    return (isinstance(v, dict) and set(v) == {"age", "mood"} and isinstance(v["age"], int)
            and not isinstance(v["age"], bool) and v["mood"] in ("happy", "sad", "calm"))


# ------------------------------------------------------------------ the masked sampler (numpy)

Z = np.array([2.0, 0.5, 1.0, -1.0, 0.0, 1.5, -0.5, 0.3])
ALLOWED = np.array([1, 2, 4, 6])


def masked_z() -> np.ndarray:
    m = np.full_like(Z, -np.inf)
    m[ALLOWED] = Z[ALLOWED]
    return m


@pytest.mark.parametrize("params, support", [
    (SamplingParams(temperature=0.7), [1, 2, 4, 6]),
    (SamplingParams(temperature=1.3, top_k=2), [1, 2]),  # top-2 of the *allowed* tokens (0 and 5 are masked)
    (SamplingParams(temperature=1.0, top_p=0.6), [1, 2]),  # nucleus of the masked distribution (0.46 + 0.28)
])
def test_masked_draws_follow_the_masked_distribution(params, support):
    # the target: the tempered masked distribution, truncated, renormalised
    q = np.zeros_like(Z)
    q[support] = np.exp(Z[support] / params.temperature)
    q /= q.sum()
    rng = np.random.default_rng(7)
    draws = 20000
    counts = np.zeros_like(Z)
    model_lp = log_softmax(Z)
    for _ in range(draws):
        tok, lp, slp = sample_masked(Z, masked_z(), params, rng)
        counts[tok] += 1
        assert lp == pytest.approx(model_lp[tok], abs=1e-12)  # the unmodified model distribution
        assert slp == pytest.approx(np.log(q[tok]), abs=1e-9)  # the distribution drawn from
    assert counts[q == 0].sum() == 0
    # chi-square over the support: df = |support| - 1 <= 3; 16.27 is the 0.999 quantile at df 3
    exp = draws * q[support]
    chi2 = float(((counts[support] - exp) ** 2 / exp).sum())
    assert chi2 < 16.27


def test_masked_greedy_picks_the_best_allowed_token_and_uses_the_rng_as_unmasked():
    p = SamplingParams(temperature=0.0)
    tok, lp, slp = sample_masked(Z, masked_z(), p, np.random.default_rng(0))
    assert tok == 2 and slp == 0.0 and lp == pytest.approx(log_softmax(Z)[2])
    # one rng.random() per draw, as the unmasked sampler: the streams stay aligned
    a, b = np.random.default_rng(3), np.random.default_rng(3)
    sample_masked(Z, masked_z(), SamplingParams(temperature=0.9), a)
    sample_token(Z, SamplingParams(temperature=0.9), b)
    assert a.random() == b.random()


# ------------------------------------------------------------------ schema checks


def test_unsupported_schema_keywords_are_refused_naming_them():
    from infscale.backends.grammar import grammar_text

    pytest.importorskip("llama_cpp", reason="needs the embedded engine: pip install 'infscale[embedded]'")
    assert "root" in grammar_text(RF_OBJECT)
    assert "root ::=" in grammar_text(RF_SCHEMA)

    def rf(schema):
        return json.dumps({"type": "json_schema", "json_schema": {"name": "x", "schema": schema}})

    cases = {
        "'minimum' at #/properties/age": {"type": "object", "properties": {"age": {"type": "integer", "minimum": 0}}},
        "'uniqueItems' at #": {"type": "array", "items": {"type": "string"}, "uniqueItems": True},
        "format 'email'": {"type": "string", "format": "email"},
        "$ref 'https://x.org/s.json'": {"$ref": "https://x.org/s.json"},
        "'not' at #": {"not": {"type": "string"}},
    }
    for what, schema in cases.items():
        with pytest.raises(ConfigError, match="response_format") as info:
            grammar_text(rf(schema))
        assert what in str(info.value) and "\n" not in str(info.value)
    # annotations and $defs references are fine
    grammar_text(rf({"title": "P", "$defs": {"m": {"enum": ["a", "b"]}},
                     "type": "object", "properties": {"m": {"$ref": "#/$defs/m", "description": "mood"}}}))


# ------------------------------------------------------------------ masks on the real vocabulary


@pytest.fixture(scope="module")
def vocab():
    """SmolLM2's vocabulary without its weights (fast), and a GrammarBook on it."""
    llama_cpp = pytest.importorskip("llama_cpp", reason="needs the embedded engine: pip install 'infscale[embedded]'")
    from infscale.backends.grammar import GrammarBook
    from infscale.models import resolve_model

    try:
        _, path, _ = resolve_model("smollm2-135m")
    except ConfigError as e:
        pytest.skip(str(e))
    llama_cpp.llama_backend_init()
    mp = llama_cpp.llama_model_default_params()
    mp.vocab_only = True
    model = llama_cpp.llama_model_load_from_file(str(path).encode(), mp)
    v = llama_cpp.llama_model_get_vocab(model)
    n = llama_cpp.llama_vocab_n_tokens(v)
    buf = ctypes.create_string_buffer(256)

    def piece(t):
        k = llama_cpp.llama_token_to_piece(v, t, buf, len(buf), 0, False)
        return buf.raw[: max(k, 0)]

    def tokenize(text):
        data = text.encode()
        arr = (llama_cpp.llama_token * (len(data) + 8))()
        k = llama_cpp.llama_tokenize(v, data, len(data), arr, len(arr), False, False)
        return list(arr[:k])

    book = GrammarBook(llama_cpp, v, n)
    yield book, piece, tokenize, llama_cpp.llama_vocab_eos(v)
    book.close()
    llama_cpp.llama_model_free(model)


def test_the_mask_allows_exactly_the_tokens_that_continue_the_grammar(vocab):
    book, piece, tokenize, eos = vocab
    g = book.template(RF_SCHEMA).clone()
    row = np.zeros(book.n_vocab, dtype=np.float32)
    allowed = np.flatnonzero(np.isfinite(book.mask(g, row)))
    # first: an object opens (the schema's optional space may come first); never the end of text
    assert len(allowed) > 0 and eos not in allowed
    assert all(piece(int(t)).lstrip(b" ").startswith(b"{") or piece(int(t)) == b" " for t in allowed)
    text = '{"age": 36, "mood": "calm"}'
    for t in tokenize(text):
        assert book.allows(g, t), piece(t)
        g.accept(t)
    m = book.mask(g, row)
    assert np.isfinite(m[eos])  # complete: the end of text is allowed now
    assert not book.allows(g, tokenize("x")[0])
    # a clone carries the state: it also accepts the end, while a fresh clone of the template does not
    c = g.clone()
    assert book.allows(c, eos)
    fresh = book.template(RF_SCHEMA).clone()
    assert not book.allows(fresh, eos) and not book.allows(fresh, tokenize('"mood"')[0])
    for x in (g, c, fresh):
        x.free()


def test_an_enum_value_outside_the_schema_is_masked(vocab):
    book, piece, tokenize, eos = vocab
    g = book.template(RF_SCHEMA).clone()
    for t in tokenize('{"age": 3, "mood": "'):
        g.accept(t)
    row = np.zeros(book.n_vocab, dtype=np.float32)
    ok = {piece(int(t)) for t in np.flatnonzero(np.isfinite(book.mask(g, row)))}
    ends = [v + q for v in (b"happy", b"sad", b"calm") for q in (b'"} ', b'" } ')]
    assert ok and all(any(e.startswith(p) for e in ends) for p in ok), ok
    assert not book.allows(g, tokenize("angry")[0])
    g.free()


# ------------------------------------------------------------------ the real model (slow)


def gen(engine, reqs):
    return asyncio.run(engine.generate(reqs))


@pytest.mark.slow
def test_constrained_samples_validate_and_unconstrained_ones_do_not(engine):
    p = SamplingParams(temperature=0.8, max_tokens=48)
    free = gen(engine, [GenRequest(params=p, messages=ASK, seed=s) for s in range(8)])
    con = gen(engine, [GenRequest(params=p.with_(response_format=RF_SCHEMA), messages=ASK, seed=s) for s in range(8)])
    assert all(valid(c.text) for c in con), [c.text for c in con]
    assert all(c.finish_reason == "stop" for c in con)
    # the constraint is what makes them valid: the same prompt and seeds without it give prose
    assert sum(valid(c.text) for c in free) < len(free), [c.text for c in free]
    # both log-probabilities are reported; the masked draw's are at least as likely as the model's
    for c in con:
        assert len(c.logprobs) == len(c.sampled_logprobs) == c.generated_tokens
    obj = gen(engine, [GenRequest(params=p.with_(response_format=RF_OBJECT, max_tokens=24), messages=ASK, seed=s)
                       for s in range(4)])
    for c in obj:  # json_object: an object, or cut by max_tokens while one is being written
        assert c.text.lstrip().startswith("{")
        if c.finish_reason == "stop":
            assert isinstance(json.loads(c.text), dict)


@pytest.mark.slow
def test_a_forked_sequence_keeps_its_constraint(engine):
    free0 = engine.stats()["free_sequences"]
    p = SamplingParams(temperature=0.8, max_tokens=4, response_format=RF_SCHEMA)
    root = gen(engine, [GenRequest(params=p, messages=ASK, keep=True, seed=2)])[0]
    h = root.handle
    assert h is not None and h.grammar is not None and root.finish_reason == "length"
    # the children continue from the parent's grammar state (no response_format needed on them)
    kids = gen(engine, [GenRequest(params=SamplingParams(temperature=1.0, max_tokens=48), parent=h, seed=s)
                        for s in range(4)])
    for k in kids:
        assert valid(root.text + k.text), root.text + k.text
    # a prefix that the grammar cannot read next is refused, one that it can is read into it
    with pytest.raises(ConfigError, match="prefix"):
        gen(engine, [GenRequest(params=SamplingParams(max_tokens=8), parent=h, prefix="hello")])
    engine.free(h)
    # an unconstrained handle cannot be continued under a constraint
    h2 = gen(engine, [GenRequest(params=SamplingParams(max_tokens=2), messages=ASK, keep=True, seed=1)])[0].handle
    with pytest.raises(ConfigError, match="response_format"):
        engine.submit([GenRequest(params=SamplingParams(response_format=RF_SCHEMA), parent=h2)])
    engine.free(h2)
    for _ in range(50):
        if engine.stats()["free_sequences"] == free0:
            break
        asyncio.run(asyncio.sleep(0.1))
    assert engine.stats()["free_sequences"] == free0


@pytest.mark.slow
def test_a_constrained_prefill_is_read_into_the_grammar(engine):
    p = SamplingParams(temperature=0.8, max_tokens=40, response_format=RF_SCHEMA)
    outs = gen(engine, [GenRequest(params=p, messages=ASK, prefix='{"age": 4', seed=s) for s in range(3)])
    for c in outs:
        assert valid('{"age": 4' + c.text), c.text
    with pytest.raises(ConfigError, match="prefix"):
        gen(engine, [GenRequest(params=p, messages=ASK, prefix="Sure! ")])


@pytest.mark.slow
def test_ask_with_a_json_schema_on_the_engine(engine):
    import infscale

    params = SamplingParams(temperature=0.8, max_tokens=48, response_format=RF_SCHEMA)
    r = infscale.ask("Tell me about a person you met today.", "majority", n=4, generator=engine, task="json",
                     params=params)
    assert r.answer is not None and valid(r.answer)
    assert sum(m.count for m in r.distribution) == 4


@pytest.mark.slow
def test_a_vote_through_serve_with_a_json_schema_on_the_engine(engine, monkeypatch):
    """Every sample of a majority vote through ``infscale serve`` (official openai client) is one
    JSON document valid under the schema; the vote folds them by parsed value."""
    openai = pytest.importorskip("openai")
    pytest.importorskip("fastapi", reason="needs the server extra: pip install 'infscale[server]'")
    from infscale.server import ServerThread, create_app

    futures = []
    submit = engine.submit

    def recording(requests):
        fs = submit(requests)
        futures.extend(fs)
        return fs

    monkeypatch.setattr(engine, "submit", recording)
    with ServerThread(create_app(engine), timeout_graceful_shutdown=5) as srv:
        client = openai.OpenAI(base_url=srv.base_url, api_key="none", max_retries=0)
        r = client.chat.completions.create(
            model=f"majority-8:{engine.model_name}", messages=ASK, max_tokens=48, seed=11, temperature=0.8,
            response_format={"type": "json_schema", "json_schema": {"name": "person", "schema": SCHEMA}})
        ext = r.model_extra["infscale"]
        assert ext["task"] == "json" and ext["candidates"] == 8
        texts = [f.result().text for f in futures]
        assert len(texts) == 8 and all(valid(t) for t in texts), texts
        assert sum(m["count"] for m in ext["distribution"]) == 8
        assert valid(r.choices[0].message.content)
        # step-level continuation under a constraint is still refused (see docs/server.md)
        with pytest.raises(openai.BadRequestError) as info:
            client.chat.completions.create(model=f"particle-filter-4:{engine.model_name}", messages=ASK,
                                           response_format={"type": "json_object"})
        assert info.value.body["param"] == "response_format"
        # a schema keyword the grammar would drop is a 400 naming it
        with pytest.raises(openai.BadRequestError) as info:
            client.chat.completions.create(
                model=f"majority-2:{engine.model_name}", messages=ASK, max_tokens=8,
                response_format={"type": "json_schema", "json_schema": {"name": "p", "schema": {
                    "type": "object", "properties": {"age": {"type": "integer", "minimum": 0}}}}})
        assert info.value.body["param"] == "response_format" and "minimum" in info.value.body["message"]


@pytest.mark.slow
def test_greedy_constrained_shortcut_gives_what_the_full_mask_gives():
    """Greedy rows check the model's best token first and mask the vocabulary only when it is
    rejected; that must pick exactly what the full mask picks (reproducible mode: a sample
    depends only on its prompt, parameters and seed)."""
    pytest.importorskip("llama_cpp", reason="needs the embedded engine: pip install 'infscale[embedded]'")
    from infscale.backends.llamacpp import LlamaEngine
    from infscale.models import resolve_model

    try:
        _, path, _ = resolve_model("smollm2-135m")
    except ConfigError as e:
        pytest.skip(str(e))
    eng = LlamaEngine(path, n_ctx=2048, n_seq_max=4, reproducible=True)
    try:
        p = SamplingParams(temperature=0.0, max_tokens=40, response_format=RF_SCHEMA)
        req = [GenRequest(params=p, messages=ASK, seed=0)]
        fast = gen(eng, req)[0]
        eng._greedy_shortcut = False
        full = gen(eng, req)[0]
    finally:
        eng.close()
    assert valid(fast.text), fast.text
    assert fast.token_ids == full.token_ids and fast.text == full.text
    assert fast.logprobs == full.logprobs and fast.sampled_logprobs == full.sampled_logprobs == [0.0] * len(fast.token_ids)
