"""Property-based fuzzing of the server's OpenAPI schema (schemathesis) against a fake backend.

Every documented operation gets a bounded number of generated requests, valid and invalid;
the server must never answer 5xx, and its answers (status codes, content types, bodies,
headers) must conform to the schema it publishes. One default check is left out:
"schema-valid data is accepted" — some valid-looking requests are refused on purpose, with a
4xx naming the parameter, because they exceed the server's configured limits (budget,
max_tokens) or name a model it does not serve.
"""

from __future__ import annotations

import httpx
import pytest

pytest.importorskip("fastapi", reason="needs the server extra: pip install 'infscale[server]'")
schemathesis = pytest.importorskip("schemathesis")

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from schemathesis.generation.modes import GenerationMode  # noqa: E402
from schemathesis.specs.openapi.checks import positive_data_acceptance  # noqa: E402

from infscale.server import ServerThread, create_app  # noqa: E402
from infscale.testing import FakeGenerator, answer_model  # noqa: E402

EXAMPLES = 25  # per operation and generation mode


@pytest.fixture(scope="module")
def server():
    gen = FakeGenerator(answer_model(0.6))
    gen.model_name = "fake"
    # small limits, so that generated budgets, token caps and bodies reach them
    app = create_app(gen, max_budget=16, max_tokens_limit=512, max_body_bytes=64 * 1024)
    with ServerThread(app) as srv:
        yield srv


def operations(srv):
    schema = schemathesis.openapi.from_url(srv.root_url + "/openapi.json")
    ops = [r.ok() for r in schema.get_all_operations()]
    assert {(op.method.upper(), op.path) for op in ops} >= {
        ("POST", "/v1/chat/completions"), ("POST", "/v1/completions"), ("GET", "/v1/models"),
        ("GET", "/health"), ("GET", "/metrics"),
    }
    return ops


#: Model names the fuzzer's bodies get half the time, so that generated parameters reach the
#: strategies and the generator instead of stopping at "model not found".
SERVED = ["fake", "majority-4:fake", "best-of-n-2:fake", "adaptive:fake", "beam-search-2:fake", "greedy:fake"]


def with_served_model(strategy):
    def put(pair):
        case, model = pair
        if model is not None and isinstance(case.body, dict):
            case.body["model"] = model
        return case

    return st.tuples(strategy, st.sampled_from([None] * len(SERVED) + SERVED)).map(put)


def test_no_5xx_and_schema_conformance(server):
    for op in operations(server):
        modes = [GenerationMode.POSITIVE] + ([GenerationMode.NEGATIVE] if op.method.upper() == "POST" else [])
        for mode in modes:

            cases = op.as_strategy(generation_mode=mode)
            if mode is GenerationMode.POSITIVE:  # (a negative case must stay invalid)
                cases = with_served_model(cases)

            @given(case=cases)
            @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck),
                      derandomize=True, database=None)
            def fuzz(case):
                case.call_and_validate(excluded_checks=[positive_data_acceptance])

            fuzz()

    # valid requests through every strategy reach the generator, answer 200, and conform too
    # (explicit, so that this does not depend on which bodies the fuzzer happened to draw)
    by_path = {(op.method.upper(), op.path): op for op in operations(server)}
    for model in SERVED:
        chat = by_path[("POST", "/v1/chat/completions")].Case(
            body={"model": model, "messages": [{"role": "user", "content": "What is 2+3?"}], "max_tokens": 16},
            media_type="application/json")
        assert chat.call_and_validate().status_code == 200
        plain = by_path[("POST", "/v1/completions")].Case(
            body={"model": model, "prompt": "What is 2+3?", "max_tokens": 16}, media_type="application/json")
        assert plain.call_and_validate().status_code == 200

    # nothing was ours to fail
    text = httpx.get(server.root_url + "/metrics").text
    assert 'infscale_requests_total{endpoint="/v1/completions",status="200"}' in text
    assert not [line for line in text.splitlines() if line.startswith("infscale_requests_total") and 'status="5' in line]
