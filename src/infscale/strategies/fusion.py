"""Fusion: the model reads N candidates and picks one, or writes a better one from them.

* ``genselect`` — generative selection (Toshniwal et al. 2025, "GenSelect: A Generative Approach
  to Best-of-N"): n candidates; the model sees one representative of each distinct answer,
  numbered, and names the best. The question is asked ``repeats`` times, each time with the
  representatives in a new seeded random order (a position bias then spreads over all
  candidates instead of favouring one), and the picks are counted.
* ``usc`` — universal self-consistency (Chen et al. 2023, "Universal Self-Consistency for Large
  Language Model Generation"): n candidates, all shown (free-form answers have no exact
  equivalence to fold them by); the model names the response most consistent with the others.
* ``moa`` — mixture-of-agents (Wang et al. 2024, "Mixture-of-Agents Enhances Large Language
  Model Capabilities"), with one model in every role: a layer of proposals; each further layer
  writes new solutions with the previous layer's shown as references; a last aggregator
  synthesizes the answer.
* ``tournament`` — knockout selection with a pairwise judge (the ``judge`` scorer's
  :meth:`~infscale.scorers.judge.JudgeScorer.compare`, both presentation orders): the distinct
  answers meet in seeded random pairs, the preferred one goes on, until one is left. With a
  pointwise scorer (no ``compare``) a match goes to the Bradley-Terry preference
  ``exp(s_a) / (exp(s_a) + exp(s_b))`` of the two scores (each representative scored once).

Picks are parsed robustly (:func:`parse_pick`): a number right after the prefilled "... is
Solution", a phrase naming the best/correct/most consistent one ("Solution 3 is correct", "the
best is #2"), or the only candidate number mentioned; anything else is unparseable and counts
for nothing. When no pick parses, the candidates' majority vote decides (``info["picked"]``
says how many parsed).

Budget: ``--n`` buys the n candidates (about n samples' tokens); the selection calls come on
top — ``genselect``: ``repeats`` calls of up to ``select_tokens`` generated tokens (each reading
every representative); ``usc``: one such call; ``tournament``: two one-token judge calls per
match, one match fewer than distinct answers; ``moa``: ``layers`` layers of ``(n - 1) //
layers`` solutions (at least one) and the aggregate, i.e. about n solutions in all (the later
layers read the earlier ones). With a single distinct answer ``genselect`` and ``tournament``
make no selection call.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, replace
from typing import Any

from ..meter import BUDGET
from ..params import SamplingParams
from ..rng import derive_seed, make_rng
from ..tasks import group_answers
from ..tasks.prompts import build_request, question_text
from ..types import Candidate, Completion, GenRequest, Problem, Result
from . import voting
from .base import Context, ParamSpec, Strategy

__all__ = ["Select", "MixtureOfAgents", "Tournament", "FUSION_STRATEGIES", "parse_pick", "with_context"]

_WORDS = r"(?:solution|response|candidate|answer|option)"


def parse_pick(text: str, k: int) -> int | None:
    """The 1-based candidate number ``text`` picks among ``k``, or None when it names none
    unambiguously (see the module docs)."""
    t = text.strip().lower().replace("*", "")
    m = re.match(r"^[#\[(]?\s*(\d+)\b", t)  # right after a prefilled "... is Solution"
    if m and 1 <= int(m.group(1)) <= k:
        return int(m.group(1))
    phrases = [
        rf"(?:best|correct|most consistent|right|final)\s+(?:one\s+)?(?:{_WORDS}\s+)?(?:is|:)\s*(?:{_WORDS}\s*)?[#\[(]?\s*(\d+)",
        rf"{_WORDS}\s*[#\[(]?\s*(\d+)[\])]?\s+(?:is|seems|appears)\s+(?:the\s+)?(?:best|correct|most consistent|right)",
        r"(?:judgment|judgement|choice|pick|selection|verdict)\s*:?\s*(?:" + _WORDS + r"\s*)?[#\[(]?\s*(\d+)",
    ]
    for pattern in phrases:
        found = [int(x) for x in re.findall(pattern, t) if 1 <= int(x) <= k]
        if found:
            return found[0]
    named = {int(x) for x in re.findall(rf"(?:{_WORDS}\s*[#\[(]?\s*|#)(\d+)", t) if 1 <= int(x) <= k}
    if len(named) == 1:
        return named.pop()
    return None


def with_context(problem: Problem, extra: str) -> Problem:
    """``problem`` with ``extra`` text after its question (chat: in the last user turn; a raw
    prompt: appended), so the task's prompt and format stay as they are."""
    if problem.question is not None:
        return replace(problem, question=f"{question_text(problem)}\n\n{extra}", choices=None)
    if problem.messages is not None:
        msgs = [dict(m) for m in problem.messages]
        last = max((i for i, m in enumerate(msgs) if m.get("role") == "user"), default=None)
        if last is None:
            msgs.append({"role": "user", "content": extra})
        else:
            msgs[last]["content"] = f"{msgs[last]['content']}\n\n{extra}"
        return replace(problem, messages=msgs)
    return replace(problem, prompt=f"{problem.prompt}\n\n{extra}\n")


def _numbered(label: str, texts: list[str]) -> str:
    return "\n\n".join(f"{label} {i}:\n{t.strip()}" for i, t in enumerate(texts, 1))


def _candidate(c: Completion, i: int, ctx: Context, score: float | None = None) -> Candidate:
    return Candidate(text=c.text, answer=ctx.task.extract(c.text), index=i, logprob=c.logprob, score=score,
                     generated_tokens=c.generated_tokens, finish_reason=c.finish_reason, seed=c.seed)


@dataclass
class FusionState:
    samples: list[Candidate] = field(default_factory=list)
    phase: str = "sample"
    layer: int = 0
    picks: list[int | None] = field(default_factory=list)  # parsed picks (indices into samples)
    logw: list[float] | None = None
    final: Candidate | None = None
    info: dict[str, Any] = field(default_factory=dict)
    finished: bool = False


class _Fusion(Strategy):
    """Shared: draw the n candidates first (one runner step), then the strategy's own steps."""

    default_scorer = None

    def init(self, ctx: Context) -> FusionState:
        return FusionState()

    def done(self, st: FusionState) -> bool:
        return st.finished

    def width(self, ctx: Context) -> int:
        return ctx.n

    async def _sample(self, st: FusionState, ctx: Context) -> dict[str, Any]:
        outs = await ctx.generate_settled([ctx.sample_request(i) for i in range(self.width(ctx))])
        st.samples = [_candidate(c, i, ctx) for i, c in enumerate(outs) if c.finish_reason not in (BUDGET, "error")]
        st.phase = "select"
        if len(st.samples) == 0:
            st.finished = True
        return {"event": "sample", "samples": len(st.samples)}

    def _result(self, st: FusionState, ctx: Context, cands: list[Candidate], logw: list[float] | None) -> Result:
        classes = voting.fold(cands, logw if logw is not None else [0.0] * len(cands), ctx.task)
        answers = voting.choose("vote", classes, cands)
        r = Result(strategy=self.name, answer=answers[0] if answers else None, answers=answers,
                   distribution=voting.distribution(classes), candidates=cands, usage=ctx.usage, n=ctx.n)
        r.info.update(st.info)
        return r


class Select(_Fusion):
    """``genselect`` and ``usc``: the model picks one of the numbered candidates (module docs)."""

    def __init__(self, name: str, summary: str, *, label: str, instruction: str, prefix: str, distinct: bool,
                 repeats: int, cost: str):
        self.name = name
        self.summary = summary
        self.label = label
        self.instruction = instruction
        self.prefix = prefix
        self.distinct = distinct
        self.cost = cost
        self.params = {"select_tokens": ParamSpec(int, 64, "token cap of each selection call", lo=1)}
        if repeats > 1:
            self.params["repeats"] = ParamSpec(int, repeats, "selection calls, each with the candidates in a new "
                                                             "random order (position bias spreads out)", lo=1)

    async def step(self, st: FusionState, ctx: Context):
        if st.phase == "sample":
            return st, await self._sample(st, ctx)
        return st, await self._select(st, ctx)

    def _shown(self, st: FusionState, ctx: Context) -> list[int]:
        """Indices of the candidates shown: all, or the first of each distinct answer."""
        if not self.distinct:
            return list(range(len(st.samples)))
        answered = [i for i, c in enumerate(st.samples) if c.answer is not None]
        ids = group_answers(ctx.task, [st.samples[i].answer for i in answered])
        first: dict[int, int] = {}
        for i, k in zip(answered, ids):
            first.setdefault(k, i)
        return list(first.values())

    async def _select(self, st: FusionState, ctx: Context) -> dict[str, Any]:
        st.finished = True
        shown = self._shown(st, ctx)
        repeats = ctx.options.get("repeats", 1)
        if len(shown) < 2:
            st.info.update({"picked": 0, "asked": 0})
            return {"event": "select", "shown": len(shown), "asked": 0}
        orders, reqs = [], []
        for rep in range(repeats):
            order = list(shown)
            if rep > 0 or repeats > 1:
                make_rng(ctx.seed, ctx.problem.id, self.name, rep).shuffle(order)
            orders.append(order)
            reqs.append(self._request(ctx, [st.samples[i].text for i in order], rep))
        outs = await ctx.generate_settled(reqs)
        picks, raw = [], []
        for order, out in zip(orders, outs):
            if out.finish_reason in (BUDGET, "error"):
                continue
            k = parse_pick(out.text, len(order))
            raw.append(out.text[:200])
            picks.append(order[k - 1] if k is not None else None)
        st.picks = picks
        counts = [sum(p == i for p in picks) for i in range(len(st.samples))]
        if any(counts):  # a class weighs what its picks add up to
            st.logw = [math.log(counts[i]) if counts[i] else -math.inf for i in range(len(st.samples))]
            if self.distinct:  # the picked representative stands for its whole class
                st.logw = self._spread(st, ctx, counts)
        st.info.update({"picked": sum(p is not None for p in picks), "asked": len(outs),
                        "picks": [p for p in picks]})
        return {"event": "select", "shown": len(shown), "orders": orders, "picks": picks, "replies": raw}

    def _spread(self, st: FusionState, ctx: Context, counts: list[int]) -> list[float]:
        answered = [i for i, c in enumerate(st.samples) if c.answer is not None]
        ids = group_answers(ctx.task, [st.samples[i].answer for i in answered])
        size: dict[int, int] = {}
        picked: dict[int, int] = {}
        for i, k in zip(answered, ids):
            size[k] = size.get(k, 0) + 1
            picked[k] = picked.get(k, 0) + counts[i]
        logw = [-math.inf] * len(st.samples)
        for i, k in zip(answered, ids):
            if picked[k]:
                logw[i] = math.log(picked[k] / size[k])
        return logw

    def _request(self, ctx: Context, texts: list[str], rep: int) -> GenRequest:
        q = question_text(ctx.problem) if ctx.problem.question is not None else _last_user(ctx.problem)
        body = f"Problem:\n{q}\n\n{_numbered(self.label, texts)}\n\n{self.instruction}"
        params = SamplingParams(temperature=0.0, max_tokens=ctx.options["select_tokens"], logprobs=False,
                                seed=derive_seed(ctx.seed, ctx.problem.id, self.name, rep))
        caps = ctx.generator.capabilities
        prefix = self.prefix if caps.prefill or caps.kv_fork else ""
        key = f"{ctx.problem.id}/{self.name}{rep}"
        if ctx.chat:
            return GenRequest(params=params, messages=[{"role": "user", "content": body}], prefix=prefix, key=key)
        return GenRequest(params=params.with_(stop=("\n\n",)), prompt=f"{body}\n{prefix or 'Reply: '}", key=key)

    async def close(self, st: FusionState, ctx: Context) -> None:
        pass

    def select(self, st: FusionState, ctx: Context) -> Result:
        return self._result(st, ctx, st.samples, st.logw)


class MixtureOfAgents(_Fusion):
    """``moa``: layers of proposals, each written with the previous layer's as references, then
    one aggregate (module docs)."""

    name = "moa"
    summary = "mixture-of-agents: layers of solutions, each written from the previous layer's; one aggregate"
    cost = "layers x ((n - 1) // layers) solutions and one aggregate: about n solutions (later layers read earlier ones)"
    params = {"layers": ParamSpec(int, 1, "layers of solutions before the aggregate (1: proposals, then aggregate)",
                                  lo=1, hi=8)}
    INSTRUCTION = ("Below are solutions to this problem written by other solvers. Some may be wrong. Read them "
                   "critically and write one correct solution of your own, in the usual format.")

    def width(self, ctx: Context) -> int:
        return max(1, (ctx.n - 1) // ctx.options["layers"])

    async def step(self, st: FusionState, ctx: Context):
        if st.phase == "sample":
            info = await self._sample(st, ctx)
            st.layer = 1
            st.info["layers"] = [[c.answer for c in st.samples]]
            return st, info
        last = st.layer >= ctx.options["layers"]
        k = 1 if last else self.width(ctx)
        refs = with_context(ctx.problem, f"{self.INSTRUCTION}\n\n{_numbered('Solution', [c.text for c in st.samples])}")
        reqs = [build_request(refs, ctx.params, chat=ctx.chat, seed=derive_seed(ctx.seed, ctx.problem.id, "moa",
                                                                                st.layer, i),
                              key=f"{ctx.problem.id}/moa{st.layer}.{i}") for i in range(k)]
        outs = await ctx.generate_settled(reqs)
        made = [_candidate(c, len(st.samples) + i, ctx) for i, c in enumerate(outs)
                if c.finish_reason not in (BUDGET, "error")]
        info = {"event": "aggregate" if last else "layer", "layer": st.layer, "answers": [c.answer for c in made]}
        st.layer += 1
        if last:
            st.final = made[0] if made else None
            st.finished = True
        elif made:
            st.samples = made
            st.info["layers"].append([c.answer for c in made])
        return st, info

    async def close(self, st: FusionState, ctx: Context) -> None:
        pass

    def select(self, st: FusionState, ctx: Context) -> Result:
        if st.final is not None and st.final.answer is not None:
            st.info["aggregated"] = True
            return self._result(st, ctx, [replace(st.final, index=0)], None)
        st.info["aggregated"] = False  # no aggregate with an answer: the last layer's majority
        return self._result(st, ctx, [replace(c, index=i) for i, c in enumerate(st.samples)], None)


class Tournament(_Fusion):
    """``tournament``: knockout matches between the distinct answers, judged pairwise (module docs)."""

    name = "tournament"
    summary = "knockout tournament of the distinct answers, each match judged pairwise in both orders"
    default_scorer = "judge"
    cost = "n samples; 2 one-token judge calls per match, one match fewer than distinct answers"
    params: dict[str, ParamSpec] = {}

    def wants_scorer(self, options):
        return True

    async def step(self, st: FusionState, ctx: Context):
        if st.phase == "sample":
            info = await self._sample(st, ctx)
            answered = [i for i, c in enumerate(st.samples) if c.answer is not None]
            ids = group_answers(ctx.task, [st.samples[i].answer for i in answered])
            st.info["ids"] = dict(zip(answered, ids))
            first: dict[int, int] = {}
            for i, k in zip(answered, ids):
                first.setdefault(k, i)
            alive = list(first.values())
            make_rng(ctx.seed, ctx.problem.id, "tournament").shuffle(alive)
            st.info["alive"], st.info["wins"] = alive, {i: 0 for i in alive}
            if len(alive) < 2:
                st.finished = True
            return st, info
        alive = st.info["alive"]
        pairs = [(alive[j], alive[j + 1]) for j in range(0, len(alive) - 1, 2)]
        prefs = await self._compare(st, ctx, pairs)
        winners = []
        for (a, b), lp in zip(pairs, prefs):
            if math.isnan(lp):  # the budget refused the match: the first goes on
                winners.append(a)
                continue
            w = a if lp >= math.log(0.5) else b
            st.info["wins"][w] += 1
            winners.append(w)
        if len(alive) % 2:
            winners.append(alive[-1])  # a bye
        st.info["alive"] = winners
        st.info.setdefault("rounds", []).append([{"a": a, "b": b, "p_a": math.exp(lp) if not math.isnan(lp) else None}
                                                 for (a, b), lp in zip(pairs, prefs)])
        if len(winners) < 2:
            st.finished = True
        return st, {"event": "round", "matches": st.info["rounds"][-1], "alive": winners}

    async def _compare(self, st: FusionState, ctx: Context, pairs: list[tuple[int, int]]) -> list[float]:
        """log P(first wins) per pair: the scorer's own pairwise judgement where it has one, else
        the Bradley-Terry probability exp(s_a) / (exp(s_a) + exp(s_b)) of its pointwise scores
        (each representative scored once, when it first plays)."""
        if hasattr(ctx.scorer, "compare"):
            return await ctx.scorer.compare(ctx.problem, [(st.samples[a].text, st.samples[b].text) for a, b in pairs],
                                            ctx.meter)
        scores = st.info.setdefault("scores", {})
        todo = [i for pair in pairs for i in pair if i not in scores]
        if todo:
            for i, s in zip(todo, await ctx.scorer.score(ctx.problem, [st.samples[i].text for i in todo], ctx.meter)):
                scores[i] = s
        out = []
        for a, b in pairs:
            sa, sb = scores[a], scores[b]
            if math.isnan(sa) or math.isnan(sb):
                out.append(math.nan)
            elif sa == sb:  # equal (both -inf included): no preference
                out.append(math.log(0.5))
            else:
                out.append(-math.log1p(math.exp(sb - sa)) if sa > sb else (sa - sb) - math.log1p(math.exp(sa - sb)))
        return out

    async def close(self, st: FusionState, ctx: Context) -> None:
        pass

    def select(self, st: FusionState, ctx: Context) -> Result:
        for i, sc in st.info.get("scores", {}).items():
            st.samples[i].score = None if math.isnan(sc) else sc
        ids, wins = st.info.get("ids", {}), st.info.get("wins", {})
        class_wins = {ids[i]: w for i, w in wins.items()}
        size: dict[int, int] = {}
        for k in ids.values():
            size[k] = size.get(k, 0) + 1
        # a class weighs 2^(matches won), spread over its members: the champion is heaviest
        logw = [(class_wins.get(ids[i], 0) * math.log(2) - math.log(size[ids[i]])) if i in ids else -math.inf
                for i in range(len(st.samples))]
        info = {k: v for k, v in st.info.items() if k in ("rounds",)}
        st.info = info
        return self._result(st, ctx, st.samples, logw)


def _last_user(problem: Problem) -> str:
    if problem.messages is None and problem.prompt is not None:
        return problem.prompt
    return next((m.get("content", "") for m in reversed(problem.messages or []) if m.get("role") == "user"), "")


genselect = Select(
    "genselect", "generative selection: the model picks the best of the numbered distinct answers, over shuffled repeats",
    label="Solution", prefix="The best solution is Solution ", distinct=True, repeats=3,
    instruction=("Compare the solutions above and decide which one is correct. Reply with the number of the best "
                 "solution, as: The best solution is Solution N."),
    cost="n samples, plus `repeats` selection calls of up to select_tokens generated tokens, each reading one "
         "representative per distinct answer")
usc = Select(
    "usc", "universal self-consistency: the model picks the response most consistent with the others",
    label="Response", prefix="The most consistent response is Response ", distinct=False, repeats=1,
    instruction=("Evaluate these responses and select the one most consistent with the others, by majority "
                 "consensus. Start your reply with: The most consistent response is Response N."),
    cost="n samples, plus one selection call of up to select_tokens generated tokens reading all n")

FUSION_STRATEGIES: dict[str, Strategy] = {s.name: s for s in [genselect, usc, MixtureOfAgents(), Tournament()]}
