"""The model a model-based scorer asks: the policy model, or one chosen independently of it.

A model-based scorer (``self-eval``, ``judge``, ``fobar``) asks the request's own generator by
default. ``model=NAME`` (a registered embedded model or a .gguf path) runs it on another embedded
model — e.g. ``judge:model=gemma3-270m`` judging ``smollm2-135m`` — and ``url=URL`` on any
OpenAI-compatible server (with ``model=`` naming the served model, else its first). Either way
its calls go through :meth:`Meter.on <infscale.meter.Meter.on>`: charged to the request's
budget and usage like every other call, and also counted apart in ``usage.by_model`` under
``"<scorer>:<model>"``. The embedded model is loaded once per process
(:func:`~infscale.backends.loading.load_embedded`); an uninstalled model is a one-line error
naming its install command.
"""

from __future__ import annotations

import asyncio

from ..backends.base import Generator
from ..errors import ConfigError
from ..meter import Meter

__all__ = ["ScorerModel"]


class ScorerModel:
    """Where a scorer's model calls go (see the module docs). ``owner`` is the scorer's name."""

    def __init__(self, owner: str, model: str | None = None, url: str | None = None):
        for key, value in (("model", model), ("url", url)):
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise ConfigError(f"scorer {owner} {key}", f"got {value!r}", "a non-empty string")
        if url is not None and not url.startswith(("http://", "https://")):
            raise ConfigError(f"scorer {owner} url", f"got {url!r}", "an http:// or https:// URL of an "
                              "OpenAI-compatible server")
        self.owner = owner
        self.model = model
        self.url = url
        self._generator: Generator | None = None

    @property
    def separate(self) -> bool:
        """Whether the scorer runs on a model of its own (not the policy model)."""
        return self.model is not None or self.url is not None

    @property
    def label(self) -> str:
        return f"{self.owner}:{self.model or self.url}"

    async def generator(self) -> Generator:
        """The scorer's own generator, made on first use (an embedded model is loaded in a thread)."""
        if self._generator is None:
            if self.url is not None:
                from ..backends.openai_http import OpenAIGenerator  # noqa: PLC0415

                self._generator = OpenAIGenerator(self.url, model=self.model)
            else:
                from ..backends.loading import load_embedded  # noqa: PLC0415

                self._generator = await asyncio.to_thread(load_embedded, self.model)
        return self._generator

    async def meter(self, meter: Meter) -> Meter:
        """The meter the scorer's calls go through: the request's own, or a child of it for the
        scorer's separate model (same budget and usage, counted apart in ``usage.by_model``)."""
        if meter is None:
            raise TypeError(f"scorer {self.owner!r} calls a model: pass the request's Meter, not None")
        if not self.separate:
            return meter
        return meter.on(await self.generator(), self.label)
