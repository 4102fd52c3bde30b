"""The meter: every model call of one request goes through it.

A :class:`Meter` wraps the generator a request runs on with that request's
:class:`~infscale.params.Budget`, its :class:`~infscale.types.Usage` and an optional
``on_completion`` callback (the server's metrics and streamed progress). Strategies reach it
through their context, scorers that call a model receive it directly; nothing else wraps a
generator to observe it.

Contract:

* :meth:`Meter.generate`, :meth:`Meter.generate_settled` and :meth:`Meter.stream` return exactly
  one :class:`~infscale.types.Completion` per request (``generate*`` in request order,
  ``stream`` as each finishes). A request the budget refuses comes back with
  ``finish_reason="budget"``: no text, zero tokens, not charged as a call, not reported to
  ``on_completion``.
* A batch of which nothing can be admitted (the budget is already spent) raises
  :class:`BudgetExhausted` instead: that is the runner's signal to stop the strategy and let it
  answer from what it has.
* The call budget admits the first ``k`` requests of a batch that it has room for; the token
  budget caps each admitted request's ``max_tokens`` at the tokens left; the seconds budget is
  checked at every call (the runner also bounds each step by it).
* Every charged completion (errors included: a failed request is a call) is added to the usage
  and handed to ``on_completion`` before the caller sees it. A stream that stops early because
  the budget ran out cancels the requests still running and yields them as ``"budget"``.
* Thinking budget (budget forcing, Muennighoff et al. 2025, "s1: Simple test-time scaling"): a
  request whose ``params.think_tokens`` is T is generated in two parts. The first stops at
  ``</think>`` or after T tokens; if T tokens were reached, the thinking is closed by the meter
  (``"\n</think>\n\n"`` is appended, not generated) and the answer forced; either way the
  second part continues the same answer (a prefill) with the tokens left of ``max_tokens``. The
  caller gets one completion: both parts' text (the closing tag between them), tokens and
  log-probabilities, ``reasoning_tokens`` = the first part's tokens; it is one call (one
  sample). A first part that ends otherwise (end of text, the caller's stop, an error) is
  returned as it is.
* Capabilities: :meth:`Meter.require` raises a one-line :class:`~infscale.errors.ConfigError`
  naming who needs what the generator lacks, before any call is made (the generator's one-time
  probe, if it has one, runs first).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import replace

from .backends.base import Capabilities, Generator, as_finished
from .tasks.base import THINK_CLOSE
from .errors import ConfigError
from .params import Budget
from .types import Completion, GenRequest, Usage

__all__ = ["BudgetExhausted", "Meter", "OnCompletion", "BUDGET", "describe_capability"]

OnCompletion = Callable[[Completion], None]

BUDGET = "budget"  # the finish_reason of a request the budget refused

_CAPABILITY_TEXT = {
    "logprobs": "token log-probabilities (logprobs)",
    "top_logprobs": "top alternative log-probabilities (top_logprobs)",
    "prefill": "assistant prefill (continuing a partial answer)",
    "native_n": "several choices per request (n)",
    "kv_fork": "forking a trajectory's KV cache (kv_fork)",
    "reports_stop": "the stop string that ended a completion (stop_reason)",
    "chat_template": "a chat template",
    "confidence": "per-token confidence with early stop (top_logprobs as tokens arrive)",
    "self_certainty": "per-token self-certainty (the next-token distribution: logits or top_logprobs)",
}


def describe_capability(name: str) -> str:
    """A capability's name as users read it in an error."""
    return _CAPABILITY_TEXT.get(name, name)


class BudgetExhausted(Exception):
    """The budget admits no more work: the runner's signal to stop a strategy (users never see it)."""


def _refused(req: GenRequest) -> Completion:
    return Completion(text="", finish_reason=BUDGET, seed=req.seed if req.seed is not None else req.params.seed)


class Meter:
    """One request's metered view of a generator (see the module docs for the contract)."""

    def __init__(self, generator: Generator, budget: Budget | None = None, *,
                 on_completion: OnCompletion | None = None, usage: Usage | None = None):
        self.generator = generator
        self.budget = budget if budget is not None else Budget()
        self.usage = usage if usage is not None else Usage()
        self.on_completion = on_completion
        self.started = time.monotonic()
        self._stopped = False
        self._ready = False
        self._root: Meter = self
        self._part: Usage | None = None  # a child's own share of the usage (see :meth:`on`)
        self.errors: list[str] = []  # why each failed call failed (the root meter's list: all models')

    def on(self, generator: Generator, label: str) -> "Meter":
        """A meter for another model of the same request (a judge on its own model): its calls
        go to ``generator`` but are charged to this meter's budget, usage and ``on_completion``,
        and are also counted apart in ``usage.by_model[label]``. Running out of budget through
        it stops the request as running out here does."""
        child = Meter(generator, self.budget, on_completion=self.on_completion, usage=self.usage)
        child.started = self.started
        child._root = self._root
        child._part = self.usage.by_model.setdefault(label, Usage())
        return child

    @property
    def stopped_by_budget(self) -> bool:
        return self._root._stopped

    @stopped_by_budget.setter
    def stopped_by_budget(self, value: bool) -> None:
        self._root._stopped = value

    # -- what the generator can do ------------------------------------------------------
    @property
    def capabilities(self) -> Capabilities:
        return self.generator.capabilities

    @property
    def chat(self) -> bool:
        return self.generator.capabilities.chat_template

    async def ready(self) -> None:
        """Let the generator probe what it can do (once; a no-op for most generators)."""
        if not self._ready:
            await self.generator.ensure_ready()
            self._ready = True

    async def require(self, capability: str | tuple[str, ...], *, who: str, param: str,
                      accepted: str | None = None) -> None:
        """Raise a one-line ConfigError unless the generator has ``capability`` (an attribute of
        :class:`~infscale.backends.base.Capabilities`, or a tuple of them: any one suffices). ``who``
        names the scorer or strategy that needs it, ``param`` the setting the user chose it with."""
        names = (capability,) if isinstance(capability, str) else tuple(capability)
        unknown = [c for c in names if not hasattr(Capabilities, c)]
        if unknown or not names:
            raise ValueError(f"unknown capability {capability!r}")
        await self.ready()
        if "prefill" in names and not self.chat:
            return  # raw-text prompts: a continuation is the prompt plus the prefix, no chat prefill needed
        if not any(getattr(self.capabilities, c) for c in names):
            needed = " or ".join(describe_capability(c) for c in names)
            raise ConfigError(param, f"{who} needs {needed}, which the generator "
                              f"{self.generator.name!r} does not provide", accepted)

    # -- the budget ---------------------------------------------------------------------
    def remaining_calls(self) -> int | None:
        if self.budget.calls is None:
            return None
        return max(0, self.budget.calls - self.usage.calls)

    def exhausted(self) -> bool:
        b, u = self.budget, self.usage
        if b.generated_tokens is not None and u.generated_tokens >= b.generated_tokens:
            return True
        if b.calls is not None and u.calls >= b.calls:
            return True
        if b.seconds is not None and time.monotonic() - self.started >= b.seconds:
            return True
        return False

    def reserve(self, k: int) -> int:
        """How many of ``k`` calls the budget admits now (the first ones of a batch); raises
        :class:`BudgetExhausted` when it admits none. For scorers that call a model outside the
        generator (then :meth:`charge` each call)."""
        if k <= 0:
            return 0
        if self.exhausted():
            self.stopped_by_budget = True
            raise BudgetExhausted()
        room = self.remaining_calls()
        if room is not None and room < k:
            self.stopped_by_budget = True
            return room
        return k

    def _admit(self, requests: list[GenRequest]) -> list[GenRequest]:
        """The admitted head of ``requests`` (token caps applied)."""
        admitted = requests[: self.reserve(len(requests))]
        b = self.budget
        if b.generated_tokens is not None:
            left = max(1, b.generated_tokens - self.usage.generated_tokens)
            admitted = [r if r.params.max_tokens <= left else replace(r, params=r.params.with_(max_tokens=left))
                        for r in admitted]
        return admitted

    def charge(self, c: Completion) -> None:
        """Count one call and its tokens, and report it to ``on_completion``."""
        self.usage.add(c)
        if c.finish_reason == "error":
            self._root.errors.append(c.error or "the request failed")
        if self._part is not None:
            self._part.add(c)
        self.usage.seconds = time.monotonic() - self.started
        if self.on_completion is not None:
            self.on_completion(c)

    # -- metered model calls ------------------------------------------------------------
    async def generate(self, requests: list[GenRequest]) -> list[Completion]:
        """One completion per request, in order; refused requests come back as ``"budget"``."""
        return await self._generate(requests, settled=False)

    async def generate_settled(self, requests: list[GenRequest]) -> list[Completion]:
        """Like :meth:`generate`, but a failed request comes back with ``finish_reason="error"``
        (and is charged as a call) instead of failing the batch."""
        return await self._generate(requests, settled=True)

    async def _generate(self, requests: list[GenRequest], *, settled: bool) -> list[Completion]:
        if not requests:
            return []
        admitted = self._admit(requests)
        call = self.generator.generate_settled if settled else self.generator.generate
        if any(r.params.think_tokens for r in admitted):
            outs = await asyncio.gather(*(self._thinking(r, call) for r in admitted))
        else:
            outs = await call(admitted)
        if len(outs) != len(admitted):
            raise RuntimeError(f"generator {self.generator.name!r} returned {len(outs)} completions for "
                               f"{len(admitted)} requests")
        for c in outs:
            self.charge(c)
        return list(outs) + [_refused(r) for r in requests[len(admitted):]]

    async def stream(self, requests: list[GenRequest]) -> AsyncIterator[tuple[int, Completion]]:
        """Yield ``(index, completion)`` for every request as it finishes. Once the budget is
        spent, the requests still running are cancelled and yielded as ``"budget"``, as are
        those refused at the start (after the admitted ones)."""
        if not requests:
            return
        admitted = self._admit(requests)
        unread: set[int] = set()  # finished and paid for, not yet handed on
        seen: set[int] = set()

        def paid(i: int, c: Completion) -> None:
            self.charge(c)
            unread.add(i)

        if any(r.params.think_tokens for r in admitted):
            tasks = [asyncio.ensure_future(self._thinking(r, self.generator.generate)) for r in admitted]
            agen = as_finished(tasks, on_finish=paid)
        else:
            agen = self.generator.stream(admitted, on_finish=paid)
        try:
            async for i, c in agen:
                unread.discard(i)
                seen.add(i)
                yield i, c
                if not unread and len(seen) < len(admitted) and self.exhausted():
                    self.stopped_by_budget = True
                    break
        finally:
            await agen.aclose()
        for i, r in enumerate(requests):
            if i not in seen:
                yield i, _refused(r)

    async def _thinking(self, req: GenRequest, call) -> Completion:
        """One request under its thinking budget (see the module docstring)."""
        p = req.params
        budget = int(p.think_tokens or 0)
        if not budget:
            return (await call([req]))[0]
        stops = tuple(dict.fromkeys(p.stop + (THINK_CLOSE,)))
        first = replace(req, params=p.with_(max_tokens=min(budget, p.max_tokens), stop=stops, think_tokens=None))
        (a,) = await call([first])
        if a.finish_reason == "stop" and a.stop == THINK_CLOSE:
            closing = THINK_CLOSE  # the model ended its thinking itself
        elif a.finish_reason == "length" and budget < p.max_tokens:
            closing = "\n" + THINK_CLOSE + "\n\n"  # the budget is spent: end the thinking, force the answer
        else:
            return a
        left = p.max_tokens - a.generated_tokens
        if left < 1:
            return replace(a, reasoning_tokens=a.generated_tokens)
        second = replace(req, prefix=req.prefix + a.text + closing, params=p.with_(max_tokens=left, think_tokens=None))
        (b,) = await call([second])
        tops = a.top_logprobs + b.top_logprobs if a.top_logprobs is not None and b.top_logprobs is not None else None
        confs = a.confidences + b.confidences if a.confidences is not None and b.confidences is not None else None
        return Completion(
            text=a.text + closing + b.text, finish_reason=b.finish_reason,
            prompt_tokens=a.prompt_tokens + b.prompt_tokens, generated_tokens=a.generated_tokens + b.generated_tokens,
            token_ids=a.token_ids + b.token_ids, logprobs=a.logprobs + b.logprobs,
            sampled_logprobs=a.sampled_logprobs + b.sampled_logprobs, top_logprobs=tops, stop=b.stop, seed=a.seed,
            error=b.error, handle=b.handle, confidences=confs, reasoning_tokens=a.generated_tokens)

    def free(self, handle) -> None:
        """Release a continuation handle of the generator (``kv_fork``)."""
        self.generator.free(handle)
