"""The generator protocol: a list of requests in, a list of completions out, in order.

A generator is async and batch-first. ``generate`` must return one :class:`Completion` per
request, in the order given, and must honour asyncio cancellation (a cancelled call frees what
it holds). ``stream`` yields ``(index, completion)`` pairs as each request finishes, so that a
strategy can stop early and cancel the rest.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from ..types import Completion, GenRequest

__all__ = ["Capabilities", "Generator", "OnFinish"]

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
        tasks = [asyncio.ensure_future(self.generate([r])) for r in requests]
        index = {t: i for i, t in enumerate(tasks)}
        pending = set(tasks)
        try:
            while pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                ready = [(index[t], t.result()[0]) for t in sorted(done, key=index.__getitem__)]
                if on_finish is not None:
                    for i, c in ready:
                        on_finish(i, c)
                for i, c in ready:
                    yield i, c
        finally:
            for t in pending:
                t.cancel()
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)

    async def aclose(self) -> None:
        """Release resources (connections, engine threads)."""
