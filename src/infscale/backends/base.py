"""The generator protocol: a list of requests in, a list of completions out, in order.

A generator is async and batch-first. ``generate`` must return one :class:`Completion` per
request, in the order given, and must honour asyncio cancellation (a cancelled call frees what
it holds). ``stream`` yields ``(index, completion)`` pairs as each request finishes, so that a
strategy can stop early and cancel the rest.
"""

from __future__ import annotations

import asyncio
from contextlib import aclosing
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from ..errors import BackendError, ConfigError
from ..types import Completion, GenRequest

__all__ = ["Capabilities", "Generator", "OnFinish", "as_finished", "gather_or_cancel"]

OnFinish = Callable[[int, Completion], None]


@dataclass
class Capabilities:
    """What a backend can do; probed once and then trusted."""

    logprobs: bool = True
    top_logprobs: bool = True
    prefill: bool = True  # continue a partial assistant turn
    native_n: bool = False
    kv_fork: bool = False
    chat_template: bool = True  # False: a base model prompted with plain text
    reports_stop: bool = True  # Completion.stop names the stop string that ended it (None: end of text)
    confidence: bool = False  # per-token confidence (GenRequest.confidence) and its early-stop rule
    response_format: bool = False  # decoding constrained to JSON / a JSON schema (SamplingParams.response_format)
    # per-token self-certainty KL(U || p) (GenRequest.self_certainty): "exact" (the full vocabulary's
    # logits), "top-k" (an approximation from top logprobs), "" (none)
    self_certainty: str = ""
    # the log-probability of a given text after a prompt (Generator.text_logprobs; vLLM's prompt_logprobs)
    prompt_logprobs: bool = False


async def gather_or_cancel(coros) -> list:
    """Run the coroutines concurrently and return their results in order; if one fails (or the
    caller is cancelled), cancel the others and wait for them before re-raising, so no request
    is left running unowned."""
    tasks = [asyncio.ensure_future(c) for c in coros]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


def _settle(o) -> Completion:
    if isinstance(o, BackendError):
        return Completion(text="", finish_reason="error", error=str(o))
    if isinstance(o, BaseException):
        raise o
    return o


async def _first(coro):
    return (await coro)[0]


async def as_finished(futures: list[asyncio.Future], on_finish: OnFinish | None = None
                      ) -> AsyncIterator[tuple[int, Completion]]:
    """Yield ``(index, result)`` of ``futures`` as they finish (in index order among those
    finishing together); ``on_finish`` sees each result before any of its batch is yielded.
    Closing the iterator cancels the futures still pending."""
    index = {f: i for i, f in enumerate(futures)}
    pending = set(futures)
    try:
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for f in done:  # retrieve every failure, not only the one raised ("never retrieved" noise)
                if not f.cancelled():
                    f.exception()
            ready = [(index[f], f.result()) for f in sorted(done, key=index.__getitem__)]
            if on_finish is not None:
                for i, c in ready:
                    on_finish(i, c)
            for item in ready:
                yield item
    finally:
        for f in pending:
            f.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)


class Generator:
    """Base class of generators. Subclasses implement :meth:`generate`."""

    name: str = "generator"
    capabilities: Capabilities = Capabilities()

    async def generate(self, requests: list[GenRequest]) -> list[Completion]:
        raise NotImplementedError

    async def stream(self, requests: list[GenRequest], on_finish: OnFinish | None = None
                     ) -> AsyncIterator[tuple[int, Completion]]:
        """Yield ``(index, completion)`` as each request finishes; closing the iterator
        (``aclose``) cancels what is still outstanding. ``on_finish`` sees every completion as
        soon as it is known, even one the consumer stops before reading (so it can be charged)."""
        tasks = [asyncio.ensure_future(_first(self.generate([r]))) for r in requests]
        async with aclosing(as_finished(tasks, on_finish)) as items:
            async for item in items:
                yield item

    async def generate_settled(self, requests: list[GenRequest]) -> list[Completion]:
        """Like :meth:`generate`, but a request that fails with a :class:`BackendError` comes
        back as a completion with ``finish_reason="error"`` instead of failing the others."""
        outs = await asyncio.gather(*(_first(self.generate([r])) for r in requests), return_exceptions=True)
        return [_settle(o) for o in outs]

    async def text_logprobs(self, requests: list[GenRequest]) -> list[Completion]:
        """The log-probabilities of given text: per request, of the tokens of ``prefix`` after its
        prompt or conversation (generators with ``capabilities.prompt_logprobs``)."""
        raise ConfigError("prompt_logprobs", f"the generator {self.name!r} cannot give the log-probability of a "
                          "given text", "a vLLM server (--backend-url), whose prompt_logprobs it reads")

    async def ensure_ready(self) -> None:
        """Learn what the backend can do before the first request (a probe, once); after it
        :attr:`capabilities` can be trusted. A no-op for generators that know already."""

    def free(self, handle) -> None:
        """Release a continuation handle (generators with ``kv_fork``); a no-op otherwise."""

    async def aclose(self) -> None:
        """Release resources (connections, engine threads)."""
