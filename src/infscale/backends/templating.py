"""A chat problem's prompt text as the server's own chat template renders it.

Step-level search continues a partial answer many times: every particle, every step. Through
the chat endpoint each continuation is a conversation whose final assistant message is the
steps so far (``continue_final_message``), rendered by the server. Through ``/v1/completions``
it is plain text, and if that text is the templated conversation plus the steps so far, every
continuation of a problem starts with the same bytes: the server's automatic prefix caching
(vLLM) finds the shared prefix whatever the server's template does to a final assistant
message, and a request log shows it.

vLLM offers what this needs (its "Tokenizer API", served beside the OpenAI routes, outside
``/v1``): ``POST /tokenize`` takes ``{"model", "messages", "add_generation_prompt"}`` and returns
``{"count", "max_model_len", "tokens"}`` (the templated conversation's token ids), ``POST
/detokenize`` takes ``{"model", "tokens"}`` and returns ``{"prompt"}`` (their text). The text is
checked once more with ``POST /tokenize`` ``{"model", "prompt", "add_special_tokens": false}``:
only a text that gives back exactly the same token ids is used (a tokenizer whose decoding does
not round-trip, e.g. one that drops special tokens, keeps the chat path), and completions
requests carry ``"add_special_tokens": false`` so that no second BOS is added. Three requests
per distinct conversation, once, cached (least recently used beyond :data:`CACHE_SIZE`).

SGLang's ``/tokenize`` takes text (``{"prompt"}``), not messages, and no SGLang route renders
a conversation with the chat template, so there the chat path (``continue_final_message``)
stays; SGLang's radix cache matches the rendered tokens of each request, so the shared prefix
is still served from cache. Any other server, or a vLLM that refuses the messages form, keeps the
chat path too. Which path is in use is in the probe record (``probe["continuation"]``).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

from ..errors import BackendError
from ..types import GenRequest

if TYPE_CHECKING:
    from .openai_http import OpenAIGenerator

__all__ = ["Templater", "CACHE_SIZE", "SERVERS_WITH_TEMPLATING"]

logger = logging.getLogger("infscale")

#: Distinct conversations whose templated text is kept.
CACHE_SIZE = 4096

#: Servers whose ``/tokenize`` is tried with messages (see the module docs): vLLM's takes them;
#: SGLang's is tried too and, taking text only, refuses them (the chat path stays).
SERVERS_WITH_TEMPLATING = ("vllm", "sglang")

_PROBE = [{"role": "user", "content": "What is 2 + 3?"}]


class Templater:
    """The templated text of each conversation, from the server, cached (see the module docs)."""

    def __init__(self, gen: "OpenAIGenerator"):
        self.gen = gen
        self.available: bool | None = None  # None: not probed
        self.why = "not probed"
        self.cache: OrderedDict[str, str | None] = OrderedDict()
        self.calls = 0  # tokenizer requests made

    def _root(self) -> str:
        from .http import server_root  # noqa: PLC0415

        return server_root(self.gen.base_url)

    async def _post(self, route: str, body: dict[str, Any]) -> Any:
        self.calls += 1
        return await self.gen.transport.request("POST", self._root() + route, {"model": self.gen.model, **body})

    async def probe(self) -> dict[str, Any]:
        """Decide once whether the server templates conversations; returns the probe record's
        ``continuation`` entry."""
        server = (self.gen.server or {}).get("name")
        if not self.gen.templated_continuation:
            self.available, self.why = False, "turned off (templated_continuation=False)"
        elif server not in SERVERS_WITH_TEMPLATING:
            self.available, self.why = False, "the server is not vLLM (no /tokenize that takes messages)"
        else:
            try:
                text = await self._render(_PROBE)
            except BackendError as e:
                self.available, self.why = False, f"{self._root()}/tokenize with messages: {e}"
            else:
                self.available = text is not None
                self.why = ("/tokenize + /detokenize render the chat template" if text is not None
                            else "the templated text does not give back the same tokens")
        if self.available:
            path = "completions: the server's templated prompt text + the steps so far"
        else:
            path = "chat: continue_final_message"
        return {"path": path, "templated": bool(self.available), "why": self.why}

    async def tokenize(self, text: str, special: bool) -> list[int]:
        """The token ids of ``text`` (``special``: with the tokenizer's special tokens, e.g. BOS)."""
        return _ids(await self._post("/tokenize", {"prompt": text, "add_special_tokens": special}), "/tokenize")

    async def _render(self, messages: list[dict[str, str]]) -> str | None:
        """The templated text, or None when it does not round-trip to the same token ids."""
        ids = _ids(await self._post("/tokenize", {"messages": messages, "add_generation_prompt": True}), "/tokenize")
        data = await self._post("/detokenize", {"tokens": ids})
        text = data.get("prompt") if isinstance(data, dict) else None
        if not isinstance(text, str):
            raise BackendError(f"{self._root()}/detokenize returned no prompt text: {str(data)[:200]}", retryable=False)
        again = _ids(await self._post("/tokenize", {"prompt": text, "add_special_tokens": False}), "/tokenize")
        return text if again == ids else None

    async def prepare(self, requests: list[GenRequest]) -> None:
        """Render (concurrently, once each) the conversations of the requests that continue a
        partial chat answer and are not cached yet."""
        if not self.available:
            return
        todo: dict[str, list[dict[str, str]]] = {}
        for r in requests:
            if r.messages is not None and r.prefix and r.parent is None:
                key = _key(r.messages)
                if key not in self.cache:
                    todo.setdefault(key, r.messages)
        if not todo:
            return

        async def one(key: str, messages: list[dict[str, str]]) -> None:
            try:
                text = await self._render(messages)
            except BackendError as e:
                if e.retryable:  # not an answer: this batch takes the chat path, later ones ask again
                    logger.info("templating a conversation on %s failed (%s); continuing through chat", self._root(), e)
                    return
                text = None
            if text is None:
                logger.info("the server at %s cannot template one conversation as text; it continues through chat",
                            self._root())
            self.cache[key] = text
            while len(self.cache) > CACHE_SIZE:
                self.cache.popitem(last=False)

        await asyncio.gather(*(one(k, m) for k, m in todo.items()))

    def text(self, messages: list[dict[str, str]]) -> str | None:
        """The cached templated text of ``messages`` (None: continue through chat)."""
        if not self.available:
            return None
        key = _key(messages)
        text = self.cache.get(key)
        if text is not None:
            self.cache.move_to_end(key)
        return text


def _key(messages: list[dict[str, str]]) -> str:
    return json.dumps(messages, sort_keys=True, ensure_ascii=False)


def _ids(data: Any, route: str) -> list[int]:
    tokens = data.get("tokens") if isinstance(data, dict) else None
    if not isinstance(tokens, list) or not tokens or not all(isinstance(t, int) for t in tokens):
        raise BackendError(f"{route} returned no token ids: {str(data)[:200]}", retryable=False)
    return tokens
