"""The server answers bad content with a 400 naming the field, never a 500: lone surrogates
(JSON ``\\ud800`` escapes), bytes that are not UTF-8, an empty body (naming the missing
parameter), and a budget in the model name too large to allow (not "unknown strategy")."""

from __future__ import annotations

import httpx
import pytest

pytest.importorskip("fastapi", reason="needs the server extra: pip install 'infscale[server]'")

from infscale.server import ServerThread, create_app  # noqa: E402
from infscale.testing import FakeGenerator, answer_model  # noqa: E402


class _Encoding(FakeGenerator):
    """A generator that, like every real backend, must encode the text it is given."""

    async def generate(self, requests):
        for r in requests:
            for m in r.messages or []:
                m["content"].encode("utf-8")
            if r.prompt is not None:
                r.prompt.encode("utf-8")
        return await super().generate(requests)


@pytest.fixture(scope="module")
def client():
    gen = _Encoding(answer_model(0.6))
    gen.model_name = "fake"
    with ServerThread(create_app(gen)) as srv, httpx.Client(base_url=srv.base_url.removesuffix("/v1"),
                                                             timeout=30) as c:
        yield c


def post(client, path: str, raw: bytes) -> httpx.Response:
    return client.post(path, content=raw, headers={"content-type": "application/json"})


MSG = b'"messages": [{"role": "user", "content": "What is 6 * 7?"}]'


@pytest.mark.parametrize(("path", "raw", "param"), [
    ("/v1/chat/completions", b'{"model": "fake", "messages": [{"role": "user", "content": "What is \\ud800?"}]}',
     "messages[0].content"),
    ("/v1/chat/completions", b'{"model": "majority-2:fake", "messages": [{"role": "user", "content": '
                             b'[{"type": "text", "text": "x\\udfff"}]}]}', "messages[0].content"),
    ("/v1/completions", b'{"model": "fake", "prompt": "What is \\udc80?"}', "prompt"),
    ("/v1/completions", b'{"model": "fake", "prompt": ["\\ud834"]}', "prompt"),
    ("/v1/chat/completions", b'{"model": "fake", ' + MSG + b', "stop": ["\\ud800"]}', "stop"),
    ("/v1/chat/completions", b'{"model": "majority:fake", ' + MSG + b', "infscale": {"params": {"x": "\\ud800"}}}',
     "infscale.params"),
    ("/v1/chat/completions", b'{"model": "fake\\ud800", ' + MSG + b'}', "model"),
])
def test_lone_surrogates_are_a_400_naming_the_field(client, path, raw, param):
    r = post(client, path, raw)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"] == param and err["type"] == "invalid_request_error", err
    assert err["message"].startswith(f"{param}: ") and "Value error" not in err["message"], err
    if "(and" not in err["message"]:  # a union (string or text parts) reports its first branch first
        assert "not valid Unicode text" in err["message"] or "unicode string" in err["message"], err


def test_bytes_that_are_not_utf8_are_a_400(client):
    r = post(client, "/v1/chat/completions", b'{"model": "fake", "messages": [{"role": "user", "content": "\xff"}]}')
    assert r.status_code == 400, r.text
    assert r.json()["error"]["type"] == "invalid_request_error"


@pytest.mark.parametrize(("path", "fields"), [("/v1/chat/completions", "model and messages"),
                                               ("/v1/completions", "model and prompt")])
def test_an_empty_body_names_the_missing_parameter(client, path, fields):
    r = post(client, path, b"")
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"] == "model" and err["code"] == "missing_parameter", err
    assert err["message"].startswith("model: is required") and fields in err["message"], err


@pytest.mark.parametrize("budget", ["100000", "9999999999", "99999999999999999999999"])
def test_a_budget_too_large_in_the_model_name_is_reported_as_such(client, budget):
    r = post(client, "/v1/chat/completions", b'{"model": "majority-%s:fake", %s}' % (budget.encode(), MSG))
    assert r.status_code == 400, r.text
    msg = r.json()["error"]["message"]
    assert f"budget {budget} is not allowed" in msg and "unknown strategy" not in msg, msg


def test_plain_unicode_still_works(client):
    r = post(client, "/v1/chat/completions",
             '{"model": "fake", "messages": [{"role": "user", "content": "Combien font 6 × 7 ? 𝑥"}]}'.encode())
    assert r.status_code == 200, r.text
