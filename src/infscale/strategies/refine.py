"""Refinement: generate, have a verifier explain what is wrong, revise — up to k rounds.

Self-Refine (Madaan et al. 2023, "Self-Refine: Iterative Refinement with Self-Feedback") with
the feedback taken from a verifier that can explain itself, as in CRITIC (Gou et al. 2024,
"CRITIC: Large Language Models Can Self-Correct with Tool-Interactive Critiquing"): external
checkers give the feedback where they exist, and the model's own critique where they do not.

Each of ``chains`` independent chains does:

1. **generate** a first solution;
2. **verify** it with the scorer's :meth:`~infscale.scorers.base.Scorer.explain`: a log-score,
   pass or fail, and a feedback text (``arith-check``: which computation is wrong and what it
   should be; ``code-tests``: the failing test and its output; ``judge``: its critique);
3. if it failed and rounds are left, **revise**: the feedback goes back to the model as the
   next user turn of the same conversation ("Feedback on your solution: ... Write the complete
   corrected solution ...") and the model writes a new version; back to 2.

A chain stops at the first version the verifier passes, or after ``rounds`` revisions. Where the
generator can fork a kept sequence (``kv_fork``: the embedded engine) and can render its chat
template, a revision continues from the kept KV cache of the conversation — only the feedback
turn is read, not the problem and the earlier versions again; otherwise the whole conversation
is sent again. The default scorer is ``judge`` on the policy model, i.e. **self-critique**: with
no verifier named, the model grades and critiques its own solution; ``--scorer arith-check``
(math) or ``code-tests`` (code) give checker feedback, and ``judge:model=NAME`` a critic on
another model.

Answer: each chain offers its best version (the last one the verifier passed, else the
highest-scored, later versions winning ties); the answer is the highest-scored chain's (ties:
the model's more confident version), and the distribution weighs each chain's answer by
``exp(score)``.

Budget: every version is one call with about one solution's tokens and every verification is
charged too (``judge``: one call per version plus one critique call per failing version;
``arith-check`` and ``code-tests`` make no model call). ``--n`` buys about n solutions' tokens:
``n // (rounds + 1)`` chains (at least one) of up to ``rounds + 1`` versions each with a checker,
``n // (2 rounds + 1)`` when the verifier writes a critique of about a solution's length before
each revision (``judge``, self-critique); a chain that passes early spends less. When the budget runs out, the strategy answers from the versions it has.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from ..meter import BUDGET
from ..rng import derive_seed
from ..scorers.base import Verdict
from ..types import Candidate, Completion, GenRequest, Result
from . import voting
from .base import BudgetExhausted, Context, ParamSpec, Strategy

__all__ = ["Refine", "REVISE", "revision_prompt"]

REVISE = ("Feedback on your solution:\n{feedback}\n\nWrite the complete corrected solution in the same format "
          "as before.")
PLAIN_REVISE = "\n\nFeedback on the solution:\n{feedback}\n\nCorrected solution:\n"


def revision_prompt(feedback: str) -> str:
    """The user turn that asks for a revision."""
    return REVISE.format(feedback=feedback.strip() or "The solution is not correct.")


@dataclass
class Version:
    """One solution of a chain, with the verifier's verdict once it has one."""

    text: str
    tokens: int
    logprob: float
    finish: str
    seed: int | None
    verdict: Verdict | None = None

    @property
    def score(self) -> float | None:
        if self.verdict is None or math.isnan(self.verdict.score):
            return None
        return self.verdict.score


@dataclass
class Chain:
    """One conversation: the versions so far, how to continue it, whether it is over."""

    index: int
    request: GenRequest  # the first request; revisions extend its conversation
    versions: list[Version] = field(default_factory=list)
    turns: list[dict[str, str]] = field(default_factory=list)  # assistant/user turns after the problem
    handle: Any = None  # the kept sequence of the conversation so far (kv_fork)
    forkable: bool = False  # the handle's KV holds exactly the rendered conversation
    done: bool = False
    reason: str = ""

    def best(self) -> Version | None:
        """The last passed version, else the highest-scored (later ones win ties), else the last."""
        if not self.versions:
            return None
        passed = [v for v in self.versions if v.verdict is not None and v.verdict.passed]
        if passed:
            return passed[-1]
        scored = [v for v in self.versions if v.score is not None]
        if scored:
            return max(reversed(scored), key=lambda v: v.score)
        return self.versions[-1]


@dataclass
class RefineState:
    chains: list[Chain]
    phase: str = "generate"  # generate → verify → revise → verify → ...
    round: int = 0
    finished: bool = False


class Refine(Strategy):
    """Verifier-guided refinement (see the module docs)."""

    holds_sequences = True

    name = "refine"
    summary = "generate, verify with feedback, revise: up to `rounds` revisions or until the verifier passes"
    default_scorer = "judge"
    cost = ("n // (rounds + 1) chains of up to rounds + 1 versions (n // (2 rounds + 1) with a critic that writes "
            "its critique, e.g. judge): about n solutions' tokens, less when the verifier passes early")
    params = {
        "rounds": ParamSpec(int, 3, "revisions at most per chain (k); a chain stops earlier when the verifier passes",
                            lo=0, hi=16),
    }

    def wants_scorer(self, options):
        return True

    @staticmethod
    def chains(n: int, rounds: int, writes_feedback: bool) -> int:
        """Chains that --n buys: a chain costs up to rounds + 1 solutions, and as many critiques
        again (less one) when the verifier writes its feedback with a model."""
        per_chain = rounds + 1 + (rounds if writes_feedback else 0)
        return max(1, n // per_chain)

    def init(self, ctx: Context) -> RefineState:
        chains = self.chains(ctx.n, ctx.options["rounds"], getattr(ctx.scorer, "writes_feedback", False))
        return RefineState(chains=[Chain(index=i, request=ctx.sample_request(i)) for i in range(chains)])

    def done(self, st: RefineState) -> bool:
        return st.finished

    # ------------------------------------------------------------------ step
    async def step(self, st: RefineState, ctx: Context):
        if st.phase == "generate":
            return st, await self._generate(st, ctx, first=True)
        if st.phase == "verify":
            return st, await self._verify(st, ctx)
        return st, await self._generate(st, ctx, first=False)

    async def _generate(self, st: RefineState, ctx: Context, *, first: bool) -> dict[str, Any]:
        live = [c for c in st.chains if not c.done]
        keep = ctx.generator.capabilities.kv_fork
        reqs = [self._request(ctx, c, st.round, keep) if not first else _with_keep(c.request, keep) for c in live]
        outs = await ctx.generate_settled(reqs)
        info: dict[str, Any] = {"event": "generate" if first else "revise", "round": st.round, "versions": []}
        for c, req, out in zip(live, reqs, outs):
            self._take(ctx, c, req, out)
            v = c.versions[-1] if c.versions and out.finish_reason not in (BUDGET, "error") else None
            info["versions"].append({"chain": c.index, "version": len(c.versions) - 1, "forked": req.parent is not None,
                                     "tokens": out.generated_tokens, "finish": out.finish_reason,
                                     "text": v.text if v is not None else ""})
        st.phase = "verify"
        if not any(not c.done for c in st.chains):
            self._finish(st, ctx)
        return info

    def _take(self, ctx: Context, c: Chain, req: GenRequest, out: Completion) -> None:
        """Fold one completion into its chain."""
        old = c.handle
        if out.finish_reason in (BUDGET, "error"):
            c.done, c.reason = True, out.finish_reason
            _free(ctx, out.handle)
            _free(ctx, old)
            c.handle = None
            return
        c.versions.append(Version(text=out.text, tokens=out.generated_tokens, logprob=out.logprob,
                                  finish=out.finish_reason, seed=out.seed))
        c.handle = out.handle
        if old is not None and old is not out.handle:
            _free(ctx, old)  # the revision forked it: its KV lives on in the new sequence
        # the KV cache holds the rendered conversation only when nothing was cut off
        c.forkable = c.handle is not None and out.stop is None and out.finish_reason in ("stop", "length")

    async def _verify(self, st: RefineState, ctx: Context) -> dict[str, Any]:
        todo = [c for c in st.chains if not c.done and c.versions and c.versions[-1].verdict is None]
        info: dict[str, Any] = {"event": "verify", "round": st.round, "verdicts": []}
        if todo:
            try:
                verdicts = await ctx.scorer.explain(ctx.problem, [c.versions[-1].text for c in todo], ctx.meter)
            except BudgetExhausted:
                self._finish(st, ctx)
                raise
            for c, v in zip(todo, verdicts):
                c.versions[-1].verdict = v
                info["verdicts"].append({"chain": c.index, "version": len(c.versions) - 1,
                                         "score": None if math.isnan(v.score) else v.score, "passed": v.passed,
                                         "feedback": v.feedback})
                if v.passed:
                    c.done, c.reason = True, "passed"
                elif math.isnan(v.score):
                    c.done, c.reason = True, BUDGET
                elif st.round >= ctx.options["rounds"]:
                    c.done, c.reason = True, "rounds"
        st.phase = "revise"
        st.round += 1
        if not any(not c.done for c in st.chains):
            self._finish(st, ctx)
        return info

    def _request(self, ctx: Context, c: Chain, round_: int, keep: bool) -> GenRequest:
        """The revision request: the feedback as the next turn, from the kept KV where possible."""
        last = c.versions[-1]
        feedback = last.verdict.feedback if last.verdict is not None else ""
        seed = derive_seed(ctx.seed, ctx.problem.id, "refine", c.index, round_)
        base = c.request
        params = base.params.with_(seed=seed)
        if base.messages is not None:
            before = list(base.messages)
            turns = c.turns + [{"role": "assistant", "content": last.text},
                               {"role": "user", "content": revision_prompt(feedback)}]
            render = getattr(ctx.generator, "render", None)
            if keep and c.forkable and render is not None:
                sent = render(before + c.turns) + last.text
                full = render(before + turns)
                if full.startswith(sent):
                    c.turns = turns
                    return GenRequest(params=params, parent=c.handle, prefix=full[len(sent):], keep=True, seed=seed,
                                      key=f"{ctx.problem.id}/refine{c.index}.{round_}")
            c.turns = turns
            return GenRequest(params=params, messages=before + turns, seed=seed, keep=keep,
                              key=f"{ctx.problem.id}/refine{c.index}.{round_}")
        # a raw prompt (no chat template): the conversation is plain text
        delta = PLAIN_REVISE.format(feedback=feedback.strip() or "The solution is not correct.")
        text_so_far = base.prompt + "".join(t["content"] for t in c.turns) + last.text
        c.turns = c.turns + [{"role": "assistant", "content": last.text}, {"role": "user", "content": delta}]
        if keep and c.forkable:
            return GenRequest(params=params, parent=c.handle, prefix=delta, keep=True, seed=seed,
                              key=f"{ctx.problem.id}/refine{c.index}.{round_}")
        return GenRequest(params=params, prompt=text_so_far + delta, seed=seed, keep=keep,
                          key=f"{ctx.problem.id}/refine{c.index}.{round_}")

    def _finish(self, st: RefineState, ctx: Context) -> None:
        for c in st.chains:
            _free(ctx, c.handle)
            c.handle = None
            if not c.done:
                c.done, c.reason = True, c.reason or "stopped"
        st.finished = True

    async def close(self, st: RefineState, ctx: Context) -> None:
        for c in st.chains:
            _free(ctx, c.handle)
            c.handle = None

    # ------------------------------------------------------------------ select
    def select(self, st: RefineState, ctx: Context) -> Result:
        cands = []
        for c in st.chains:
            v = c.best()
            if v is None:
                continue
            cands.append(Candidate(text=v.text, answer=ctx.task.extract(v.text), index=c.index, logprob=v.logprob,
                                   score=v.score, generated_tokens=v.tokens, finish_reason=v.finish, seed=v.seed))
        logw = [-math.inf if x.score is None else x.score for x in cands]
        classes = voting.fold(cands, logw, ctx.task)
        answers = voting.choose("best", classes, cands)
        r = Result(strategy=self.name, answer=answers[0] if answers else None, answers=answers,
                   distribution=voting.distribution(classes), candidates=cands, usage=ctx.usage, n=ctx.n)
        r.info["versions"] = [len(c.versions) for c in st.chains]
        r.info["passed"] = [c.reason == "passed" for c in st.chains]
        return r


def _with_keep(req: GenRequest, keep: bool) -> GenRequest:
    if not keep:
        return req
    return GenRequest(params=req.params, messages=req.messages, prompt=req.prompt, prefix=req.prefix, seed=req.seed,
                      key=req.key, keep=True)


def _free(ctx: Context, handle: Any) -> None:
    if handle is not None:
        ctx.free(handle)
