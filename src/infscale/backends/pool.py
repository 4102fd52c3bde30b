"""Several OpenAI-compatible servers as one generator: least outstanding requests, ejection, retry.

:class:`BackendPool` holds one :class:`~infscale.backends.openai_http.OpenAIGenerator` per URL
(``--backend-url`` given several times, ``load_generator(backend_url=[...])``). Each request
goes to the healthy backend with the fewest requests outstanding (ties: the one used least
recently), so a slow backend gets fewer and a fast one more — the "least outstanding requests"
balancing of Envoy and similar proxies.

Health, as a proxy's outlier detection does it: a backend whose requests fail
``eject_after`` times in a row (retryable faults: connection refused or reset, timeouts,
429/5xx after the backend's own retries) is taken out for ``eject_seconds``; its requests and
its share go to the others. When the time is up it is tried again with live traffic: one success
puts it back, one more failure takes it out again. A failed request is retried on another
backend at once (at most once per backend), so one backend dying mid-run loses no work. A
request the server refuses (a 4xx other than 408/409/429) is the caller's problem and is not
retried elsewhere. With every backend out, the one due back first is tried rather than failing.

Capabilities are the intersection of the members': a feature counts only if every backend
offers it, so a strategy never depends on which backend a request lands on. Every backend
should serve the same model (the pool does not check weights); each one's model name is its own
(the first it lists unless ``model`` is given).
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
import time
from collections.abc import Sequence
from typing import Any

from ..errors import BackendError, ConfigError
from ..types import Completion, GenRequest
from .base import Capabilities, Generator, gather_or_cancel

__all__ = ["BackendPool", "Member"]

logger = logging.getLogger("infscale")


@dataclasses.dataclass
class Member:
    """One backend of a pool and what the pool knows about it."""

    generator: Any
    url: str
    outstanding: int = 0
    failures: int = 0  # consecutive failed requests
    ejected_until: float = 0.0  # monotonic time; 0: never ejected
    ejections: int = 0
    served: int = 0  # completions returned
    last_used: int = 0

    def healthy(self, now: float) -> bool:
        return now >= self.ejected_until


class BackendPool(Generator):
    """Requests spread over several backends (see the module docstring).

    ``generators``: one generator per backend (usually :class:`OpenAIGenerator`, created by
    :meth:`from_urls`). ``eject_after``: consecutive failures that take a backend out (>= 1).
    ``eject_seconds``: how long it stays out before it is tried again (> 0)."""

    name = "pool"

    def __init__(self, generators: Sequence[Generator], urls: Sequence[str] | None = None, *,
                 eject_after: int = 3, eject_seconds: float = 30.0):
        if not generators:
            raise ConfigError("backend_url", "no backends given", "one or more URLs")
        if isinstance(eject_after, bool) or not isinstance(eject_after, int) or eject_after < 1:
            raise ConfigError("eject_after", f"got {eject_after!r}", "an integer >= 1")
        if isinstance(eject_seconds, bool) or not isinstance(eject_seconds, (int, float)) or not eject_seconds > 0:
            raise ConfigError("eject_seconds", f"got {eject_seconds!r}", "seconds > 0")
        urls = list(urls) if urls is not None else [getattr(g, "base_url", str(i)) for i, g in enumerate(generators)]
        self.members = [Member(g, u) for g, u in zip(generators, urls)]
        self.eject_after = eject_after
        self.eject_seconds = float(eject_seconds)
        self.capabilities = _intersection([g.capabilities for g in generators])
        self._ticks = itertools.count(1)
        self._ready = False

    @classmethod
    def from_urls(cls, urls: Sequence[str], model: str | None = None, api_key: str | None = None, *,
                  eject_after: int = 3, eject_seconds: float = 30.0, **http_options: Any) -> "BackendPool":
        """One :class:`OpenAIGenerator` per URL, each retrying a fault once itself (the pool
        then tries another backend); ``http_options`` are their connection settings."""
        from .openai_http import OpenAIGenerator  # noqa: PLC0415

        if isinstance(urls, str) or not urls:
            raise ConfigError("backend_url", f"got {urls!r}", "a list of one or more URLs")
        if len(set(urls)) != len(urls):
            raise ConfigError("backend_url", "a URL is given twice", "distinct URLs")
        opts = dict(http_options)
        opts["max_retries"] = min(1, opts.get("max_retries", 1) if opts.get("max_retries") is not None else 1)
        gens = [OpenAIGenerator(u, model=model, api_key=api_key, **opts) for u in urls]
        return cls(gens, [g.base_url for g in gens], eject_after=eject_after, eject_seconds=eject_seconds)

    @property
    def model(self) -> str | None:
        """The first backend's model name (known once it is ready)."""
        return getattr(self.members[0].generator, "model", None)

    # ---------------------------------------------------------------- readiness

    async def ensure_ready(self) -> None:
        """Probe every backend not out (concurrently); the capabilities are the intersection of
        those that answered. A backend whose probe fails is taken out; all failing raises."""
        now = time.monotonic()
        live = [m for m in self.members if m.healthy(now)] or self.members
        outs = await asyncio.gather(*(m.generator.ensure_ready() for m in live), return_exceptions=True)
        ok = []
        for m, o in zip(live, outs):
            if isinstance(o, BaseException):
                if not isinstance(o, BackendError):
                    raise o
                self._failed(m, o)
            else:
                ok.append(m)
        if not ok:
            errors = "; ".join(f"{m.url}: {o}" for m, o in zip(live, outs))
            raise BackendError(f"no backend of the pool is ready ({errors})", retryable=True)
        self.capabilities = _intersection([m.generator.capabilities for m in ok])
        self._ready = True

    # ---------------------------------------------------------------- generation

    async def generate(self, requests: list[GenRequest]) -> list[Completion]:
        """One completion per request, in order; each request goes to its own backend."""
        if not requests:
            return []
        if not self._ready:
            await self.ensure_ready()
        return await gather_or_cancel(self._one(r) for r in requests)

    async def _one(self, req: GenRequest) -> Completion:
        tried: set[int] = set()
        last: BackendError | None = None
        while True:
            m = self._pick(tried)
            if m is None:
                assert last is not None
                raise BackendError(f"every backend of the pool failed this request; last: {last}", retryable=True,
                                   status=last.status)
            tried.add(id(m))
            m.outstanding += 1
            m.last_used = next(self._ticks)
            try:
                (out,) = await m.generator.generate([req])
            except BackendError as e:
                if not e.retryable and e.status is not None and e.status < 500:
                    raise  # the request itself was refused: another backend would refuse it too
                self._failed(m, e)
                last = e
                continue
            finally:
                m.outstanding -= 1
            m.failures = 0
            m.served += 1
            if m.ejected_until:
                m.ejected_until = 0.0
                logger.warning("backend %s is back in the pool", m.url)
            return out

    def _pick(self, tried: set[int]) -> Member | None:
        """The healthy untried member with the fewest outstanding requests (then least recently
        used); with none healthy, the untried one due back first."""
        now = time.monotonic()
        untried = [m for m in self.members if id(m) not in tried]
        if not untried:
            return None
        healthy = [m for m in untried if m.healthy(now)]
        if healthy:
            return min(healthy, key=lambda m: (m.outstanding, m.last_used))
        return min(untried, key=lambda m: m.ejected_until)

    def _failed(self, m: Member, error: BackendError) -> None:
        m.failures += 1
        if m.failures >= self.eject_after or m.ejected_until:  # a returning backend that fails is out again
            m.ejected_until = time.monotonic() + self.eject_seconds
            m.ejections += 1
            logger.warning("backend %s taken out of the pool for %g s after %d failures in a row: %s",
                           m.url, self.eject_seconds, m.failures, error)

    # ---------------------------------------------------------------- the rest

    def stats(self) -> list[dict[str, Any]]:
        """Per backend: url, served, outstanding, consecutive failures, ejections, out now."""
        now = time.monotonic()
        return [{"url": m.url, "served": m.served, "outstanding": m.outstanding, "failures": m.failures,
                 "ejections": m.ejections, "out": not m.healthy(now)} for m in self.members]

    async def aclose(self) -> None:
        await asyncio.gather(*(m.generator.aclose() for m in self.members), return_exceptions=True)

    async def __aenter__(self) -> "BackendPool":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


def _intersection(caps: list[Capabilities]) -> Capabilities:
    """A capability every member has (booleans: all of them)."""
    values = {}
    for f in dataclasses.fields(Capabilities):
        values[f.name] = all(bool(getattr(c, f.name)) for c in caps)
    return Capabilities(**values)
