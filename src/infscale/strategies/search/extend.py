"""Extend nodes by one step: the only code that touches generator handles.

A child continues its parent's kept sequence where the generator can fork one (``kv_fork``:
the embedded engine copies the parent's KV cache, no re-reading); otherwise it continues the
assistant turn from the text so far. An empty step (a bare delimiter) is merged into the next
one and not counted, up to three times; a child still empty then ends as it is. A child the
budget refused (``finish_reason == "budget"``, or no completion at all) is not extended and ends
with reason ``"budget"``. A conditional particle filter's reference node replays its reference
path instead of sampling. The parents' sequences are freed by the core once the round is
settled, unless the select policy keeps a parent to expand it again.

Resampled copies share their original's handle until the next extension, which forks every copy
before any parent is freed; :func:`release` frees each distinct handle once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import zip_longest
from typing import TYPE_CHECKING

from ...rng import derive_seed
from ...tasks.prompts import build_request
from ...types import Completion, GenRequest
from ..base import Context

if TYPE_CHECKING:
    from .core import Node, SearchState

__all__ = ["grow", "release", "rollout", "Rollout"]

_MERGES = 3  # empty steps merged into one child's step at most


async def grow(st: SearchState, ctx: Context, plan: list[tuple[Node, int]]) -> list[Node]:
    """One step for ``k`` new children of every planned ``(parent, k)``; returns the children.
    The parents' sequences stay; the core frees those the select policy does not keep (a tree
    search keeps a node it may expand again, forking the same kept sequence)."""
    children: list[Node] = []
    source = {}  # child id -> the parent's handle it forks from
    for parent, k in plan:
        for _ in range(k):
            c = st.child(parent)
            source[c.id] = parent.handle
            children.append(c)
    # released by close() if the budget stops the round midway; the parents are freed by the core
    # once the round is settled, unless the select policy keeps them (MUR re-expands a parent)
    st.pending = children + [parent for parent, _ in plan]
    pending = list(children)
    for round_ in range(1 + _MERGES):
        if not pending:
            break
        generate = []
        for c in pending:
            if st.reference is not None and c.parent == st.reference_node and len(c.steps) < len(st.reference):
                _replay(st, c)
            else:
                generate.append(c)
        if generate:
            reqs = [_request(ctx, c, source[c.id] if round_ == 0 else c.handle) for c in generate]
            outs = await ctx.generate_settled(reqs)
            for c, out in zip_longest(generate, outs[: len(generate)]):
                _apply(ctx, c, out)
        pending = [c for c in generate if c.reason == "empty"]
        for c in pending:
            c.reason = ""
    for c in pending:  # still empty after merging: end it as it is
        c.finished, c.reason = True, "empty"
        release(ctx, [c])
    return children


def release(ctx: Context, nodes: list[Node]) -> None:
    """Free the nodes' sequence handles (each distinct handle once) and forget them."""
    freed: set[int] = set()
    for n in nodes:
        h = n.handle
        if h is not None and id(h) not in freed:
            freed.add(id(h))
            ctx.generator.free(h)
        n.handle = None


def _replay(st: SearchState, c: Node) -> None:
    """The reference node's child takes the reference path's next step instead of sampling."""
    step = st.reference[len(c.steps)]
    c.text += step
    c.steps.append(step)
    st.reference_node = c.id
    if len(c.steps) == len(st.reference):
        c.finished, c.reason = True, "reference"


def _request(ctx: Context, c: Node, source) -> GenRequest:
    opts = ctx.options
    left = max(1, ctx.params.max_tokens - c.tokens)
    stop = tuple(dict.fromkeys((opts["delimiter"],) + ctx.params.stop))
    params = ctx.params.with_(max_tokens=min(opts["step_tokens"], left), stop=stop)
    seed = derive_seed(ctx.seed, ctx.problem.id, "node", c.id, len(c.steps), c.empty_merges)
    key = f"{ctx.problem.id}/n{c.id}"
    can_fork = ctx.generator.capabilities.kv_fork
    sc = ctx.scorer
    extra = sc.request_changes() if sc is not None and sc.reads_generation else {}  # e.g. self-certainty
    if can_fork and source is not None and not getattr(source, "freed", False):
        return GenRequest(params=params, parent=source, keep=True, seed=seed, key=key, **extra)
    base = build_request(ctx.problem, params, chat=ctx.chat, seed=seed, key=key)
    return GenRequest(params=base.params, messages=base.messages, prompt=base.prompt, prefix=c.text, seed=seed,
                      key=base.key, keep=can_fork, **extra)


def _apply(ctx: Context, c: Node, out: Completion | None) -> None:
    """Fold one completion into a child node."""
    if out is None or out.finish_reason == "budget":
        c.finished, c.reason = True, "budget"
        release(ctx, [c])
        return
    old = c.handle
    c.handle = out.handle
    if old is not None and old is not out.handle:
        # a merged empty step: the node continued from its own previous sequence, which the new
        # one has copied; nothing else holds it
        ctx.generator.free(old)
    c.tokens += out.generated_tokens
    c.logprob += out.logprob
    if out.self_certainties:  # a merged empty step's tokens count toward the step they join
        c.step_stats.extend(out.self_certainties)
    c.step_logprob = out.logprob / max(1, out.generated_tokens)
    if out.finish_reason == "error":
        c.finished, c.reason, c.logw = True, "error", -math.inf
        release(ctx, [c])
        return
    opts = ctx.options
    stop = out.stop
    if (stop is None and out.finish_reason == "stop" and not ctx.generator.capabilities.reports_stop
            and not ctx.task.ends_answer(out.text)):
        # the server does not say which stop ended the text: assume the step delimiter
        # (only an answer line then ends a trajectory; max_steps bounds the rest)
        stop = opts["delimiter"]
    step = out.text + (stop or "")
    eos = out.finish_reason == "stop" and stop is None
    if not step.strip() and not eos and out.finish_reason != "length" and c.tokens < ctx.params.max_tokens:
        c.text += step
        c.empty_merges += 1
        c.reason = "empty"  # merged into the next step
        return
    c.text += step
    c.steps.append(step)
    gives_answer = ctx.task.ends_answer(step)
    if eos or gives_answer:
        c.finished, c.reason = True, "answer" if gives_answer else "eos"
    elif c.tokens >= ctx.params.max_tokens:
        c.finished, c.reason = True, "length"
    elif len(c.steps) >= opts["max_steps"]:
        c.finished, c.reason = True, "max_steps"
    if c.finished:
        release(ctx, [c])


# ------------------------------------------------------------------ foresight rollouts

@dataclass
class Rollout:
    """A look-ahead from a node: the text generated after it, its tokens and summed log-prob,
    the non-empty steps it took, and whether it reached the end of the solution."""

    text: str = ""
    tokens: int = 0
    logprob: float = 0.0
    steps: int = 0
    finished: bool = False


async def rollout(ctx: Context, nodes: list[Node], steps: int, tag: str = "foresight") -> list[Rollout]:
    """Look ``steps`` steps ahead of each node without changing it (φ-decoding's foresight).

    Each round is one batched request per open rollout; the first forks the node's kept sequence
    and later ones the rollout's own (the text is re-read only where the generator cannot fork).
    Empty steps do not count (at most ``_MERGES`` extra rounds); a rollout ends at the end of the
    answer, the token cap, an error or a request the budget refused. Every sequence it makes is
    freed before it returns, also when the budget stops it midway."""
    outs = [Rollout(finished=n.finished) for n in nodes]
    owned: list = [None] * len(nodes)  # each rollout's own kept sequence
    can_fork = ctx.generator.capabilities.kv_fork
    opts = ctx.options
    try:
        for round_ in range(steps + _MERGES):
            live = [i for i, ro in enumerate(outs) if not ro.finished and ro.steps < steps
                    and ctx.params.max_tokens - nodes[i].tokens - ro.tokens > 0]
            if not live:
                break
            reqs = []
            for i in live:
                n, ro = nodes[i], outs[i]
                left = ctx.params.max_tokens - n.tokens - ro.tokens
                stop = tuple(dict.fromkeys((opts["delimiter"],) + ctx.params.stop))
                params = ctx.params.with_(max_tokens=min(opts["step_tokens"], left), stop=stop)
                seed = derive_seed(ctx.seed, ctx.problem.id, tag, n.id, round_)
                key = f"{ctx.problem.id}/n{n.id}/{tag}{round_}"
                source = owned[i] if owned[i] is not None else (n.handle if not ro.text else None)
                if can_fork and source is not None and not getattr(source, "freed", False):
                    reqs.append(GenRequest(params=params, parent=source, keep=True, seed=seed, key=key))
                else:
                    base = build_request(ctx.problem, params, chat=ctx.chat, seed=seed, key=key)
                    reqs.append(GenRequest(params=base.params, messages=base.messages, prompt=base.prompt,
                                           prefix=n.text + ro.text, seed=seed, key=base.key, keep=can_fork))
            completions = await ctx.generate_settled(reqs)
            for i, out in zip_longest(live, completions[: len(live)]):
                ro = outs[i]
                if out is None or out.finish_reason in ("budget", "error"):
                    ro.finished = True
                    continue
                if out.handle is not None:
                    if owned[i] is not None and owned[i] is not out.handle:
                        ctx.generator.free(owned[i])
                    owned[i] = out.handle
                stop = out.stop
                if (stop is None and out.finish_reason == "stop" and not ctx.generator.capabilities.reports_stop
                        and not ctx.task.ends_answer(out.text)):
                    stop = opts["delimiter"]
                step = out.text + (stop or "")
                ro.text += step
                ro.tokens += out.generated_tokens
                ro.logprob += out.logprob
                if step.strip():
                    ro.steps += 1
                if (out.finish_reason == "stop" and stop is None) or ctx.task.ends_answer(step):
                    ro.finished = True
    finally:
        for h in owned:
            if h is not None:
                ctx.generator.free(h)
    return outs
