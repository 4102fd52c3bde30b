"""Fakes of vLLM's and SGLang's servers: the OpenAI routes of :class:`FakeOpenAIServer` (with its
``vllm`` / ``sglang`` flavour: identification routes, stop fields) plus the routes of each
server's own that infscale uses, as their documentation describes them.

vLLM (docs.vllm.ai, "OpenAI-Compatible Server": "Tokenizer API" and the "Extra Parameters" of the
Completions API):

* ``POST /tokenize`` ``{"model", "messages", "add_generation_prompt"?, "continue_final_message"?}``
  (the conversation rendered with the chat template) or ``{"model", "prompt",
  "add_special_tokens"?}`` returns ``{"count", "max_model_len", "tokens"}``;
* ``POST /detokenize`` ``{"model", "tokens"}`` returns ``{"prompt"}``;
* ``/v1/completions`` takes ``add_special_tokens`` (a BOS token is added to the prompt unless it
  is false) and ``prompt_logprobs`` (k >= 0: each choice carries ``prompt_logprobs``, one entry per
  prompt token, the first ``null``, each a dict from token id (a string in JSON) to
  ``{"logprob", "rank", "decoded_token"}`` for the prompt's own token and the k most likely others);
* ``n`` with a ``seed``: the n choices of one request are one reproducible set.

SGLang (docs.sglang.io, "SGLang Native APIs"): ``POST /tokenize`` ``{"model"?, "prompt",
"add_special_tokens"?}`` returns ``{"tokens", "count", "max_model_len"}`` — text only: a body
with ``messages`` and no ``prompt`` is refused (400) — and ``POST /detokenize`` ``{"tokens"}``
returns ``{"text"}``. No route renders a conversation with the chat template.

The chat template of both fakes is the one :class:`FakeOpenAIServer` counts prompt tokens with:
``<|role|> content <|end|>`` per message, joined by spaces, then `` <|assistant|>`` when a
generation prompt is added (a continued final message is left open). Token ids come from a
vocabulary that grows as tokens are seen (``<bos>`` is 1); the text of ids is their tokens
joined, so a templated text always round-trips.

A prompt-logprobs reply is scripted by ``prompt_logprob(tokens, i) -> float`` (the
log-probability of prompt token ``i`` given the ones before it; default -0.5), and the k
alternatives at each position have log-probabilities -3, -4, ...
"""

from __future__ import annotations

import json
import threading
from typing import Any, Callable

from .fake_openai import FakeOpenAIServer, _BadRequest, _Handler, fake_tokens

__all__ = ["FakeVLLMServer", "FakeSGLangServer", "render_chat"]

BOS = "<bos>"
MAX_MODEL_LEN = 4096


def render_chat(messages: list[dict[str, str]], add_generation_prompt: bool = True,
                continue_final_message: bool = False) -> str:
    """The fakes' chat template (the text :class:`FakeOpenAIServer` counts chat prompts by)."""
    parts = []
    for i, m in enumerate(messages):
        parts.append(f"<|{m['role']}|> {m['content']}")
        if not (i == len(messages) - 1 and continue_final_message):
            parts.append("<|end|>")
    if add_generation_prompt and not continue_final_message:
        parts.append("<|assistant|>")
    return " ".join(parts)


class _Vocabulary:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.ids: dict[str, int] = {BOS: 1}
        self.tokens: dict[int, str] = {1: BOS}

    def encode(self, text: str, add_bos: bool) -> list[int]:
        with self._lock:
            out = [1] if add_bos else []
            for t in fake_tokens(text):
                if t not in self.ids:
                    self.ids[t] = len(self.ids) + 1
                    self.tokens[self.ids[t]] = t
                out.append(self.ids[t])
            return out

    def decode(self, ids: list[int]) -> str:
        with self._lock:
            unknown = [i for i in ids if i not in self.tokens]
            if unknown:
                raise _BadRequest(f"unknown token ids {unknown[:5]}")
            return "".join(self.tokens[i] for i in ids)


class _ServerHandler(_Handler):
    """The OpenAI routes of the base fake, plus the routes of the flavour's own."""

    def do_POST(self) -> None:  # noqa: N802
        fake = self.fake
        path = self.path.split("?", 1)[0].rstrip("/")
        if path not in fake.own_routes or fake._dead:
            super().do_POST()
            return
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body: Any = json.loads(raw or b"null")
        except ValueError:
            body = None
        fake._record("POST", path, body, dict(self.headers.items()))
        try:
            if not isinstance(body, dict):
                raise _BadRequest("the request body must be a JSON object")
            payload = fake.own_routes[path](body)
        except _BadRequest as e:
            self._error(400, str(e))
            return
        self._send(200, payload)


class _FlavouredServer(FakeOpenAIServer):
    """A flavour's own routes: ``/tokenize`` (its own request shape, :meth:`_tokenize`) and
    ``/detokenize`` (token ids back to text, under the key :attr:`detokenized` names)."""

    flavour = "generic"
    detokenized = "prompt"

    def __init__(self, behaviour: Any = None, *, prompt_logprob: Callable[[list[str], int], float] | None = None,
                 **overrides: Any):
        super().__init__(behaviour, flavour=self.flavour, **overrides)
        self.vocab = _Vocabulary()
        self.prompt_logprob = prompt_logprob or (lambda tokens, i: -0.5)
        self.own_routes: dict[str, Callable[[dict], dict]] = {"/tokenize": self._tokenize,
                                                              "/detokenize": self._detokenize}

    def _handler_class(self) -> type:
        return _ServerHandler

    def _tokenize(self, body: dict) -> dict:
        raise NotImplementedError

    def _detokenize(self, body: dict) -> dict:
        ids = body.get("tokens")
        if not isinstance(ids, list) or not all(isinstance(i, int) for i in ids):
            raise _BadRequest("'tokens' must be a list of integers")
        return {self.detokenized: self.vocab.decode(ids)}

    def calls_to(self, path: str) -> list[Any]:
        """The bodies of the POSTs to ``path``, in order."""
        return [b for m, p, b in self.calls if m == "POST" and p == path]


class FakeVLLMServer(_FlavouredServer):
    """A fake of ``vllm serve`` (see the module docs)."""

    flavour = "vllm"

    def _tokenize(self, body: dict) -> dict:
        if "messages" in body:
            msgs = body["messages"]
            if not isinstance(msgs, list) or not msgs or not all(
                    isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
                    for m in msgs):
                raise _BadRequest("'messages' must be a non-empty list of messages")
            cont = bool(body.get("continue_final_message", False))
            gen = bool(body.get("add_generation_prompt", True))
            if cont and gen:
                raise _BadRequest("continue_final_message and add_generation_prompt cannot both be true")
            text = render_chat(msgs, gen, cont)
            ids = self.vocab.encode(text, bool(body.get("add_special_tokens", False)))  # chat: off by default
        elif isinstance(body.get("prompt"), str):
            ids = self.vocab.encode(body["prompt"], bool(body.get("add_special_tokens", True)))
        else:
            raise _BadRequest("either 'prompt' or 'messages' is required")
        return {"count": len(ids), "max_model_len": MAX_MODEL_LEN, "tokens": ids, "token_strs": None}

    def validate(self, path: str, body: Any) -> None:
        super().validate(path, body)
        if path.endswith("/completions") and not path.endswith("/chat/completions"):
            ast = body.get("add_special_tokens", True)
            if not isinstance(ast, bool):
                raise _BadRequest("'add_special_tokens' must be a boolean")
        pl = body.get("prompt_logprobs")
        if pl is not None and (isinstance(pl, bool) or not isinstance(pl, int) or not 0 <= pl <= 20):
            raise _BadRequest("'prompt_logprobs' must be an integer in [0, 20]")

    def answer(self, path: str, body: dict) -> dict:
        resp = super().answer(path, body)
        chat = path.endswith("/chat/completions")
        if chat:
            return resp
        prompt = body["prompt"] if isinstance(body["prompt"], str) else body["prompt"][0]
        bos = body.get("add_special_tokens", True)
        ids = self.vocab.encode(prompt, bos)
        if bos and "usage" in resp:  # the BOS token is a prompt token
            resp["usage"]["prompt_tokens"] += 1
            resp["usage"]["total_tokens"] += 1
        k = body.get("prompt_logprobs")
        if k is not None:
            tokens = [self.vocab.tokens[i] for i in ids]
            entries: list[Any] = [None]
            for i in range(1, len(ids)):
                e = {str(ids[i]): {"logprob": float(self.prompt_logprob(tokens, i)), "rank": 1,
                                   "decoded_token": tokens[i]}}
                for j in range(k):
                    alt = self.vocab.encode(f" alt{j + 1}", False)[0]
                    if str(alt) not in e:
                        e[str(alt)] = {"logprob": -3.0 - j, "rank": j + 2, "decoded_token": f" alt{j + 1}"}
                entries.append(e)
            for choice in resp["choices"]:
                choice["prompt_logprobs"] = entries
        return resp


class FakeSGLangServer(_FlavouredServer):
    """A fake of ``python -m sglang.launch_server`` (see the module docs)."""

    flavour = "sglang"
    detokenized = "text"

    def _tokenize(self, body: dict) -> dict:
        if not isinstance(body.get("prompt"), str):
            raise _BadRequest("'prompt' is a required string")
        ids = self.vocab.encode(body["prompt"], bool(body.get("add_special_tokens", True)))
        return {"tokens": ids, "count": len(ids), "max_model_len": MAX_MODEL_LEN}
