"""DeepConf: confidence-filtered, confidence-weighted voting, offline and online.

Fu et al. 2025, "Deep Think with Confidence" (DeepConf). Every trace is generated with its
per-token **confidence** ``C_i = -(1/k) * sum of the log-probabilities of the k most likely
tokens at position i`` (``GenRequest.confidence``; high means the model was sure). A trace's
**group confidences** are the means of ``C_i`` over every window of ``window`` consecutive
tokens (a trace shorter than the window is one group: the mean of all its tokens). From them a
**trace confidence** by one of four measures (``--param measure=``):

=========  =============================================================================
lowest     the lowest group confidence (the trace's weakest stretch)
bottom10   the mean of the lowest 10% of its group confidences (at least one group)
tail       the mean token confidence of the last ``window`` tokens
mean       the mean token confidence of the whole trace
=========  =============================================================================

``deepconf`` (offline): draw ``n`` traces; keep exactly the top ``ceil(eta% of the traces)``
by trace confidence (ties by sample order), and let the kept traces vote with weights equal to
their trace confidence (log-weight ``log C``; the filtered ones carry no weight). Budget: n
samples, exactly as ``majority``; the filter and the weights cost nothing.

``deepconf-online``: draw ``warmup`` traces in full (default ``max(2, ceil(n/4))``); the
stopping threshold ``s`` is the ``(100 - eta)``-th percentile of their lowest group confidences
(numpy's linear interpolation), so about eta% of warm-up-like traces would survive. Then draw
the remaining traces in waves of ``warmup`` with the stop rule "lowest full-window mean below
s" (:class:`~infscale.types.ConfidenceStop`), evaluated by the generator as tokens arrive: the
embedded engine stops such a trace within one decode step and frees its cells, the HTTP
generator closes the stream (``finish_reason="confidence"``). Stopped traces are dropped from
the vote (their answer is ``None``); warm-up traces vote only if their lowest group confidence
reaches ``s``; votes are weighted by trace confidence. After the warm-up and after each wave,
sampling stops once the leading answer holds at least ``tau`` of the vote's weight (the
paper's consensus check), or when ``n`` traces were drawn or the budget is spent. Budget: at
most n traces, each charged only the tokens it generated (a stopped trace's tokens up to its
stop); ``--n`` therefore buys at most what ``majority`` at n spends.

Both need a generator with token confidence (``capabilities.confidence``: the embedded engine,
OpenAI-compatible servers that return top logprobs); elsewhere they refuse in one line before
any call.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from ..meter import BUDGET
from ..types import Candidate, Completion, ConfidenceStop, Result
from . import voting
from .base import Context, ParamSpec, Requirement, Strategy

__all__ = ["DeepConf", "DEEPCONF_STRATEGIES", "MEASURES", "group_confidences", "trace_confidence", "keep_top",
           "online_threshold", "consensus"]

MEASURES = ("lowest", "bottom10", "tail", "mean")


def group_confidences(confs: list[float], window: int) -> list[float]:
    """The mean confidence of every window of ``window`` consecutive tokens (one group, the
    mean of all, for a trace shorter than the window; none for an empty trace)."""
    if not confs:
        return []
    if len(confs) < window:
        return [float(np.mean(confs))]
    c = np.cumsum(np.concatenate([[0.0], np.asarray(confs, dtype=np.float64)]))
    return list((c[window:] - c[:-window]) / window)


def trace_confidence(confs: list[float] | None, measure: str, window: int) -> float:
    """One trace's confidence by ``measure`` (see the module docs); NaN without tokens."""
    if not confs:
        return math.nan
    if measure == "mean":
        return float(np.mean(confs))
    if measure == "tail":
        return float(np.mean(confs[-window:]))
    groups = group_confidences(confs, window)
    if measure == "lowest":
        return float(min(groups))
    if measure == "bottom10":
        low = sorted(groups)[: max(1, math.ceil(0.1 * len(groups)))]
        return float(np.mean(low))
    raise ValueError(f"unknown measure {measure!r}; accepted: {', '.join(MEASURES)}")


def keep_top(values: list[float], eta: float) -> list[bool]:
    """Which of ``values`` the filter keeps: exactly the ``ceil(eta% of len(values))`` largest
    (at least one), ties by order; NaN values (no tokens) rank last."""
    m = len(values)
    if m == 0:
        return []
    count = max(1, math.ceil(m * eta / 100.0 - 1e-9))
    order = sorted(range(m), key=lambda i: (math.isnan(values[i]), -values[i] if not math.isnan(values[i]) else 0.0, i))
    kept = set(order[:count])
    return [i in kept for i in range(m)]


def online_threshold(lowest: list[float], eta: float) -> float:
    """The online stopping threshold: the ``(100 - eta)``-th percentile of the warm-up traces'
    lowest group confidences (numpy's linear interpolation)."""
    vals = [v for v in lowest if not math.isnan(v)]
    if not vals:
        return -math.inf
    return float(np.percentile(vals, 100.0 - eta))


def consensus(classes: list[voting.AnswerClass]) -> float:
    """The leading answer's share of the vote's total weight (0 with no votes)."""
    if not classes:
        return 0.0
    top = max(c.logw for c in classes)
    if top == -math.inf:
        return 0.0
    rel = [math.exp(c.logw - top) for c in classes]
    return rel[0] / sum(rel)


@dataclass
class DeepConfState:
    target: int
    warmup: int
    traces: dict[int, Completion] = field(default_factory=dict)
    launched: int = 0
    stream: Any = None
    threshold: float | None = None  # online: set after the warm-up
    waves: int = 0
    finished: bool = False
    stopped_early: bool = False


_COMMON = {
    "k": ParamSpec(int, 20, "token confidence over the k most likely tokens at each position", lo=1, hi=20),
    "window": ParamSpec(int, 16, "tokens per group (sliding window) for group confidences and the online stop",
                        lo=1),
    "eta": ParamSpec(float, 90.0, "keep the top eta% of traces by confidence (online: the threshold is the "
                     "(100-eta)th percentile of the warm-up traces)", lo=1.0, hi=100.0),
}
_OFFLINE = {**_COMMON, "measure": ParamSpec(str, "bottom10", "trace confidence: lowest, bottom10, tail or mean",
                                            choices=MEASURES)}
_ONLINE = {
    **_COMMON,
    "eta": ParamSpec(float, 10.0, _COMMON["eta"].doc, lo=1.0, hi=100.0),
    "measure": ParamSpec(str, "lowest", "trace confidence that weights the vote: lowest, bottom10, tail or mean",
                         choices=MEASURES),
    "warmup": ParamSpec(int, 0, "warm-up traces drawn in full to set the threshold, and the size of each later "
                        "wave (0: max(2, ceil(n/4)))", lo=0),
    "tau": ParamSpec(float, 0.95, "stop sampling once the leading answer holds this share of the weighted vote",
                     lo=0.5, hi=1.0),
}


class DeepConf(Strategy):
    """DeepConf offline (``online=False``) or online; see the module docs."""

    default_scorer = None

    def __init__(self, name: str, summary: str, *, online: bool, params: dict[str, ParamSpec], doc: str):
        self.name = name
        self.summary = summary
        self.online = online
        self.params = params
        self.__doc__ = doc

    def requires(self, options: dict[str, Any]) -> list[Requirement]:
        return [Requirement("confidence", param="strategy", who=f"strategy {self.name!r}",
                            accepted="a strategy that needs no token confidence (e.g. majority), or a generator "
                                     "that reports top logprobs (the embedded engine, vLLM, llama-server)")]

    def init(self, ctx: Context) -> DeepConfState:
        n = ctx.n
        if not self.online:
            return DeepConfState(target=n, warmup=n)
        w = ctx.options["warmup"] or max(2, math.ceil(n / 4))
        return DeepConfState(target=n, warmup=min(w, n))

    def done(self, state: DeepConfState) -> bool:
        return state.finished

    def _request(self, ctx: Context, i: int, rule: ConfidenceStop | None):
        return replace(ctx.sample_request(i), confidence=ctx.options["k"], stop_rule=rule)

    async def step(self, state: DeepConfState, ctx: Context):
        if state.stream is None:  # launch the warm-up (offline: every trace), or the next wave
            hi = state.warmup if state.launched == 0 else min(state.target, state.launched + state.warmup)
            rule = None
            if state.threshold is not None:
                rule = ConfidenceStop(window=ctx.options["window"], threshold=state.threshold)
            reqs = [self._request(ctx, i, rule) for i in range(state.launched, hi)]
            base = state.launched
            state.launched = hi
            state.stream = (base, ctx.stream(reqs).__aiter__())
            state.waves += 1
        base, it = state.stream
        try:
            j, c = await it.__anext__()
        except StopAsyncIteration:
            state.stream = None
            return state, self._wave_done(state, ctx)
        info = {"event": "trace", "index": base + j, "tokens": c.generated_tokens, "finish": c.finish_reason}
        if c.finish_reason != BUDGET:
            state.traces[base + j] = c
        return state, info

    def _wave_done(self, state: DeepConfState, ctx: Context) -> dict[str, Any]:
        """After the warm-up or a wave: set the threshold, check the consensus, decide to go on."""
        info: dict[str, Any] = {"event": "wave done", "traces": len(state.traces)}
        if not self.online or state.launched >= state.target or not state.traces:
            state.finished = True
            return info
        opts = ctx.options
        if state.threshold is None:
            lowest = [trace_confidence(c.confidences, "lowest", opts["window"]) for c in state.traces.values()]
            state.threshold = online_threshold(lowest, opts["eta"])
            info["threshold"] = state.threshold
        cands = self._candidates(state, ctx)
        share = consensus(self._classes(cands, ctx, self._keep(state, cands, ctx)))
        info["consensus"] = share
        if share >= opts["tau"]:
            state.finished = state.stopped_early = True
        return info

    async def close(self, state: DeepConfState, ctx: Context) -> None:
        if state.stream is not None:
            await state.stream[1].aclose()
            state.stream = None

    # -- select -------------------------------------------------------------------------
    def _candidates(self, state: DeepConfState, ctx: Context) -> list[Candidate]:
        """Every trace as a candidate with its trace confidence and its log-weight in ``score``'s
        place: ``log C`` for a trace that votes, ``-inf`` for a filtered one; an early-stopped
        trace has no answer (it never reached one)."""
        opts = ctx.options
        order = sorted(state.traces)
        cands = []
        for i in order:
            c = state.traces[i]
            stopped = c.finish_reason == "confidence"
            cands.append(Candidate(text=c.text, answer=None if stopped else ctx.task.extract(c.text), index=i,
                                   logprob=c.logprob, generated_tokens=c.generated_tokens,
                                   finish_reason=c.finish_reason, seed=c.seed,
                                   confidence=trace_confidence(c.confidences, opts["measure"], opts["window"])))
        return cands

    def _keep(self, state: DeepConfState, cands: list[Candidate], ctx: Context) -> list[bool]:
        """Which traces vote: offline the top eta% by trace confidence; online the complete
        traces whose lowest group confidence reaches the threshold (all complete ones if none
        does; early-stopped traces never vote)."""
        opts = ctx.options
        if not self.online or state.threshold is None:
            return keep_top([c.confidence for c in cands], opts["eta"])
        window = opts["window"]
        keep = [c.finish_reason != "confidence"
                and trace_confidence(state.traces[c.index].confidences, "lowest", window) >= state.threshold
                for c in cands]
        if not any(k and c.answer is not None for k, c in zip(keep, cands)):
            keep = [c.finish_reason != "confidence" for c in cands]
        return keep

    def _classes(self, cands: list[Candidate], ctx: Context, keep: list[bool]):
        logw = [math.log(c.confidence) if k and c.confidence is not None and c.confidence > 0 else -math.inf
                for c, k in zip(cands, keep)]
        return voting.fold(cands, logw, ctx.task)

    def select(self, state: DeepConfState, ctx: Context) -> Result:
        opts = ctx.options
        cands = self._candidates(state, ctx)
        keep = self._keep(state, cands, ctx)
        classes = self._classes(cands, ctx, keep)
        answers = voting.choose("vote", classes, cands)
        stopped = sum(c.finish_reason == "confidence" for c in cands)
        info = {"voting": sum(keep), "kept": [c.index for c, k in zip(cands, keep) if k], "traces": len(cands),
                "stopped_by_confidence": stopped, "consensus": consensus(classes), "measure": opts["measure"]}
        if self.online:
            t = state.threshold
            info.update(threshold=t if t is not None and math.isfinite(t) else None, warmup=state.warmup,
                        waves=state.waves)
        return Result(strategy=self.name, answer=answers[0] if answers else None, answers=answers,
                      distribution=voting.distribution(classes), candidates=cands, usage=ctx.usage, n=state.target,
                      stopped_early=state.stopped_early, info=info)


DEEPCONF_STRATEGIES: dict[str, DeepConf] = {
    s.name: s
    for s in [
        DeepConf("deepconf", "DeepConf offline: n traces, keep the top eta% by trace confidence, confidence-weighted "
                 "vote", online=False, params=_OFFLINE,
                 doc="DeepConf offline (Fu et al. 2025): n traces with token confidence; the top eta% by trace "
                     "confidence vote with weight C. Budget: n samples, as majority."),
        DeepConf("deepconf-online", "DeepConf online: warm-up traces set a threshold, later traces stop early "
                 "below it, sampling stops at consensus tau", online=True, params=_ONLINE,
                 doc="DeepConf online (Fu et al. 2025): warm-up traces set the threshold (a percentile of their "
                     "lowest group confidence); later traces stop as soon as a window's mean confidence falls "
                     "below it; sampling stops once the weighted vote's consensus reaches tau. Budget: at most n "
                     "traces, each charged only what it generated."),
    ]
}
