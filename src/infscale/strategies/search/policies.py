"""The policies a search strategy is made of: small frozen objects, each with its own parameter
specs (``specs``, merged into the strategy's ``--param`` settings) and one method.

* **Expand** (``plan``; ``roots`` says how many root nodes start the search): which frontier
  nodes get how many children this round.
* **Weigh** (``update``): what a step's log-score does to its node — importance log-weight,
  ranking priority.
* **Select** (``settle``): which nodes stay after a round, and whether the search is over.
* **Finish** (``choose``): the answer distribution and the ranked answers.

Compute: ``--n`` buys about as many generated tokens as ``n`` independent samples. Particle
methods keep n particles (n children per round); beam searches share n children per round among
``n / width`` beams of ``width`` children; DVTS grows ``n / width`` subtrees of ``width``
children; REBASE shares n children per round (minus the solutions found) by its allocation;
best-first makes at most n expansions of ``width`` children.
"""

from __future__ import annotations

import math
import re
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from ...tasks import AnswerTask
from ...types import AnswerMass, Candidate
from .. import resampling as rs
from .. import voting
from ..base import Context, ParamSpec, Requirement
from . import extend
from .core import Node, SearchState, aggregate

__all__ = [
    "EachLive", "Beams", "Rebase", "BestNode",
    "Potential", "Rank", "Mixed", "PathPriority",
    "Resample", "TopK", "SubtreeTop", "GumbelTopK", "KeepAll", "Frontier",
    "WeightedVote", "BestTrajectory",
    "beams", "frontier_key",
    # MUR and φ-decoding
    "Gated", "MomentumGate", "step_uncertainty",
    "PhiBeams", "Foresight", "PhiSelect", "phi_shape", "width_prune", "cluster_texts", "phi_probabilities",
]

WIDTH = ParamSpec(int, 4, "children per expanded node (beams: n / width beams share n children per round)", lo=1)
AGGREGATE = ParamSpec(str, "last", "step scores → path score for ranking and reports",
                      choices=("last", "min", "product", "mean"))


def beams(ctx: Context) -> int:
    """How many beams (or subtrees) share a round's n children: n / width, at least one."""
    return max(1, ctx.n // ctx.options["width"])


def _survivors(children: list[Node]) -> list[Node]:
    """Children that can compete for a place: not failed; identical text (same prefix, same step)
    counts once within a subtree. A child refused for budget stays, finished, as what its
    parent's path reached."""
    seen, out = set(), []
    for n in children:
        if n.reason == "error" or (n.group, n.text) in seen:
            continue
        seen.add((n.group, n.text))
        out.append(n)
    return out


def _keep(st: SearchState, kept: list[Node], info: dict[str, Any]) -> None:
    """Finished nodes among ``kept`` become solutions; the others the new frontier."""
    st.done.extend(n for n in kept if n.finished)
    st.frontier = [n for n in kept if not n.finished]
    info["kept"] = [n.id for n in st.frontier]


# ---------------------------------------------------------------------------------- expand

@dataclass(frozen=True)
class EachLive:
    """Every live node gets ``children`` children (1: particles; ``"width"``: DVTS subtrees);
    the search starts from ``n / children`` roots."""

    children: int | str = 1

    @property
    def specs(self) -> dict[str, ParamSpec]:
        return {"width": WIDTH} if self.children == "width" else {}

    def roots(self, ctx: Context) -> int:
        return max(1, ctx.n // self._k(ctx))

    def _k(self, ctx: Context) -> int:
        return ctx.options["width"] if self.children == "width" else int(self.children)

    def plan(self, st: SearchState, ctx: Context, info: dict[str, Any]) -> list[tuple[Node, int]]:
        k = self._k(ctx)
        return [(n, k) for n in st.live()]


@dataclass(frozen=True)
class Beams:
    """One root with n children, then ``width`` children for each live beam."""

    specs = {"width": WIDTH}

    def roots(self, ctx: Context) -> int:
        return 1

    def plan(self, st: SearchState, ctx: Context, info: dict[str, Any]) -> list[tuple[Node, int]]:
        k = ctx.n if st.depth == 0 else ctx.options["width"]
        return [(n, k) for n in st.live()]


@dataclass(frozen=True)
class Rebase:
    """REBASE's balanced expansion (Wu et al. 2024): one root with n children; then each round's
    n children (minus the solutions found) go to frontier node i in proportion to
    softmax(R_i / T), R_i = exp(priority) the scorer's probability for the node's path; nodes
    given none are pruned."""

    needs_probability = True  # reward = exp(score), the scorer's probability

    specs = {"temperature": ParamSpec(float, 0.2, "T: children ∝ softmax(reward / T), reward in [0, 1]", lo=1e-6)}

    def roots(self, ctx: Context) -> int:
        return 1

    def plan(self, st: SearchState, ctx: Context, info: dict[str, Any]) -> list[tuple[Node, int]]:
        live = st.live()
        if st.depth == 0:
            return [(n, ctx.n) for n in live]
        rewards = [math.exp(n.priority) for n in live]
        counts = rs.rebase_allocate(rewards, max(0, ctx.n - len(st.done)), ctx.options["temperature"])
        info["allocation"] = [int(c) for c in counts]
        return [(n, int(c)) for n, c in zip(live, counts)]


def frontier_key(n: Node) -> tuple[float, int, float, int]:
    """Best-first order: highest priority; ties go to the deeper node (so a pass/fail scorer's
    ties dive rather than sweep breadth-first), then to the path the model is more confident in
    (mean token log-probability), then to the older node."""
    return (-n.priority, -len(n.steps), -n.mean_logprob, n.id)


@dataclass(frozen=True)
class BestNode:
    """The frontier node first in :func:`frontier_key` order gets ``width`` children."""

    specs = {"width": WIDTH}

    def roots(self, ctx: Context) -> int:
        return 1

    def plan(self, st: SearchState, ctx: Context, info: dict[str, Any]) -> list[tuple[Node, int]]:
        best = min(st.live(), key=frontier_key)
        info["expanded"] = [best.id]
        return [(best, ctx.options["width"])]


# ----------------------------------------------------------------------------------- weigh

@dataclass(frozen=True)
class Potential:
    """Importance weighting: log-weight += s_t / T (the tempered potential exp(s_t / T))."""

    specs = {"temperature": ParamSpec(float, 1.0, "T: weights are exp(score / T)", lo=1e-6), "aggregate": AGGREGATE}

    def update(self, n: Node, s: float, options: dict[str, Any]) -> None:
        n.scores.append(s)
        if not math.isnan(s):
            n.logw += s / options["temperature"]
        n.priority = aggregate(n.scores, options["aggregate"])


@dataclass(frozen=True)
class Rank:
    """Ranking: the path's priority is its aggregated step score; log-weights stay 0."""

    specs = {"aggregate": AGGREGATE}

    def update(self, n: Node, s: float, options: dict[str, Any]) -> None:
        n.scores.append(s)
        n.priority = aggregate(n.scores, options["aggregate"])


@dataclass(frozen=True)
class Mixed:
    """Self-evaluation guided beams (Xie et al. 2023): a step's score mixes its mean token
    log-probability with the scorer's log-score."""

    specs = {"aggregate": AGGREGATE,
             "mix": ParamSpec(float, 0.5, "score = mix * step mean token log-prob + (1 - mix) * scorer score",
                              lo=0.0, hi=1.0)}

    def requires(self, options: dict[str, Any]) -> list[Requirement]:
        if options["mix"] > 0:
            return [Requirement("logprobs", param="param mix", who="a step score with mix > 0",
                                accepted="mix=0, or a generator that reports logprobs")]
        return []

    def update(self, n: Node, s: float, options: dict[str, Any]) -> None:
        mix = options["mix"]
        n.scores.append(mix * n.step_logprob + (1.0 - mix) * s)
        n.priority = aggregate(n.scores, options["aggregate"])


@dataclass(frozen=True)
class PathPriority:
    """Best-first priority, depth-fair: ``mean`` (average step log-score) or ``last`` (the
    latest step's, a PRM's estimate for the whole prefix); or A*-style ``astar``: g + h with
    g = sum of step log-scores (the path's log-probability of being right so far) and
    h = ``lookahead`` * mean step log-score (the remaining steps guessed to score like the
    average; ``lookahead=0`` is uniform-cost search, optimal among the paths generated when
    log-scores are <= 0, as probabilities' are)."""

    specs = {"priority": ParamSpec(str, "mean", "best-first priority: mean or last step score, or astar (g + h)",
                                   choices=("mean", "last", "astar")),
             "lookahead": ParamSpec(float, 0.0, "astar: h = lookahead * mean step log-score", lo=0.0)}

    def update(self, n: Node, s: float, options: dict[str, Any]) -> None:
        n.scores.append(s)
        how = options["priority"]
        if how == "astar":
            g = float(sum(n.scores))
            h = options["lookahead"] * aggregate(n.scores, "mean") if options["lookahead"] else 0.0
            n.priority = g + h
        else:
            n.priority = aggregate(n.scores, how)


# ---------------------------------------------------------------------------------- select

@dataclass(frozen=True)
class Resample:
    """Sequential importance resampling. The population is every particle, finished ones with
    their weights; after each round it is resampled with ``scheme`` (``None``: never, importance
    sampling), only when the Kish ESS falls below ``ess`` * n if ``ess`` is set. log Z gains the
    log mean weight at every resampling and at the end (weights restart at 0 after resampling),
    so exp(log_z) is an unbiased estimate of the normalising constant. A conditional particle
    filter's reference node always survives."""

    scheme: str | None = "multinomial"
    ess: float | None = None

    @property
    def specs(self) -> dict[str, ParamSpec]:
        out = {}
        if self.scheme is not None:
            out["resampler"] = ParamSpec(str, self.scheme, "resampling scheme", choices=tuple(rs.RESAMPLERS))
        if self.ess is not None:
            out["ess_threshold"] = ParamSpec(float, self.ess, "resample only when ESS < this fraction of n",
                                             lo=0.0, hi=1.0)
        return out

    def settle(self, st: SearchState, ctx: Context, children: list[Node], rng: np.random.Generator,
               info: dict[str, Any]) -> bool:
        pop = st.frontier + children
        st.frontier = pop
        logw = np.array([n.logw for n in pop])
        if st.log_z is None:
            st.log_z = 0.0
        if not any(not n.finished for n in pop):
            st.log_z += rs.log_mean_exp(logw) if logw.size else 0.0
            return True
        e = rs.ess(logw)
        info["ess"] = e
        if self.scheme is None or (self.ess is not None and e >= ctx.options["ess_threshold"] * len(pop)):
            return False
        st.log_z += rs.log_mean_exp(logw)
        ref = next((i for i, p in enumerate(pop) if p.id == st.reference_node), None)
        idx = list(rs.RESAMPLERS[ctx.options["resampler"]](logw, len(pop) - (ref is not None), rng))
        if ref is not None:
            idx.append(ref)
        info["ancestors"] = [pop[i].id for i in idx]
        counts = np.bincount(idx, minlength=len(pop))
        new, copies = [], []
        for i, p in enumerate(pop):
            for j in range(counts[i]):
                q = p if j == 0 else st.copy(p)
                if q is not p:
                    copies.append([q.id, p.id])
                q.logw = 0.0
                new.append(q)
        st.frontier = new
        info["copies"] = copies  # [copy id, original id]: resampled duplicates
        return False


@dataclass(frozen=True)
class TopK:
    """Beam search: the ``n / width`` best children by priority (finished beams included) keep
    their places; over once that many beams have finished."""

    specs = {"width": WIDTH}

    def settle(self, st: SearchState, ctx: Context, children: list[Node], rng, info: dict[str, Any]) -> bool:
        room = max(0, beams(ctx) - len(st.done))
        _keep(st, sorted(_survivors(children), key=lambda n: -n.priority)[:room], info)
        return len(st.done) >= beams(ctx)


@dataclass(frozen=True)
class SubtreeTop:
    """DVTS: each subtree that has not finished keeps its best child."""

    specs = {"width": WIDTH}

    def settle(self, st: SearchState, ctx: Context, children: list[Node], rng, info: dict[str, Any]) -> bool:
        pool = _survivors(children)
        finished = {n.group for n in st.done}
        kept = [max((c for c in pool if c.group == g), key=lambda n: n.priority)
                for g in sorted({c.group for c in pool} - finished)]
        _keep(st, kept, info)
        return False


@dataclass(frozen=True)
class GumbelTopK:
    """Stochastic beams (Xie et al. 2023): ``n / width`` beams drawn without replacement with
    probability ∝ exp(priority / tau) (Gumbel top-k); tau decays by ``tau_decay`` each round."""

    specs = {"width": WIDTH,
             "tau": ParamSpec(float, 0.5, "sampling temperature of the beam draw", lo=1e-6),
             "tau_decay": ParamSpec(float, 0.5, "tau is multiplied by this after each step", lo=0.0, hi=1.0)}

    def settle(self, st: SearchState, ctx: Context, children: list[Node], rng: np.random.Generator,
               info: dict[str, Any]) -> bool:
        pool = _survivors(children)
        tau = max(ctx.options["tau"] * ctx.options["tau_decay"] ** (st.depth - 1), 1e-6)
        keys = np.array([n.priority for n in pool]) / tau + rng.gumbel(size=len(pool))
        room = max(0, beams(ctx) - len(st.done))
        _keep(st, [pool[i] for i in np.argsort(-keys, kind="stable")[:room]], info)
        return len(st.done) >= beams(ctx)


@dataclass(frozen=True)
class KeepAll:
    """REBASE: every child stays (the allocation prunes); over once n solutions are found."""

    specs = {}

    def settle(self, st: SearchState, ctx: Context, children: list[Node], rng, info: dict[str, Any]) -> bool:
        _keep(st, _survivors(children), info)
        return len(st.done) >= ctx.n


@dataclass(frozen=True)
class Frontier:
    """Best-first: the children join a priority queue (:func:`frontier_key`, the ``max_frontier``
    best kept). The search is over when the queue's first node is a solution — the goal test at
    the pop, as in A* — or after n expansions (then the solutions in the queue, best first)."""

    specs = {"max_frontier": ParamSpec(int, 32, "frontier size kept (the worst are dropped)", lo=1)}

    def settle(self, st: SearchState, ctx: Context, children: list[Node], rng, info: dict[str, Any]) -> bool:
        queue = sorted(st.frontier + _survivors(children), key=frontier_key)[: ctx.options["max_frontier"]]
        if queue and queue[0].finished:
            st.done, st.frontier = [queue[0]], []
            st.stopped_early = st.depth < ctx.n
            return True
        if st.depth >= ctx.n:
            solutions = [n for n in queue if n.finished]
            st.done, st.frontier = (solutions, []) if solutions else ([], queue)
            return True
        st.frontier = queue
        return False


# ---------------------------------------------------------------------------------- finish

@dataclass(frozen=True)
class WeightedVote:
    """Answer classes weighted by normalised importance weight (``by="logw"``) or by
    exp(priority) (``by="priority"``: the path score as a log-weight)."""

    by: str = "logw"
    specs = {}

    def choose(self, nodes: list[Node], cands: list[Candidate], task: AnswerTask
               ) -> tuple[list[AnswerMass], list[str]]:
        logw = [n.logw if self.by == "logw" else n.priority for n in nodes]
        classes = voting.fold(cands, logw, task)
        return voting.distribution(classes), voting.choose("vote", classes, cands)


@dataclass(frozen=True)
class BestTrajectory:
    """The answer of the highest-priority trajectory (ties: the model's more confident one); the
    distribution counts each trajectory once."""

    specs = {}

    def chosen(self, nodes: list[Node], cands: list[Candidate]) -> Node | None:
        """The trajectory whose answer is chosen (the same rule as ``voting.choose("best")``)."""
        scored = [(n, c) for n, c in zip(nodes, cands) if c.answer is not None and c.score is not None]
        return max(scored, key=lambda p: (p[1].score, p[1].mean_logprob))[0] if scored else None

    def choose(self, nodes: list[Node], cands: list[Candidate], task: AnswerTask
               ) -> tuple[list[AnswerMass], list[str]]:
        classes = voting.fold(cands, [0.0] * len(cands), task)
        return voting.distribution(classes), voting.choose("best", classes, cands)


# ------------------------------------------------------------- MUR: momentum-gated step search
# (Yan et al. 2025, "MUR: Momentum Uncertainty guided Reasoning for Large Language Models")

def step_uncertainty(n: Node) -> float:
    """MUR's step uncertainty: the mean negative log-probability of the step's tokens under the
    model (temperature 1; the step as generated, after any merged empty steps)."""
    return -n.step_logprob


def _parent(st: SearchState, c: Node) -> Node | None:
    """The node ``c`` was grown from: the round's parents stay in ``st.pending`` until the round
    is settled (:func:`.extend.grow`)."""
    return next((p for p in st.pending if p.id == c.parent), None)


def _new_step(c: Node, depth: int) -> bool:
    """Whether ``c`` took a usable step to ``depth`` steps (not refused, failed or left empty)."""
    return len(c.steps) == depth and c.reason not in ("error", "budget", "empty")


@dataclass(frozen=True)
class Gated:
    """MUR's expansion: one path. Its live node gets one child (the step as sampled), except a
    node whose sampled step the gate found too uncertain: it gets n - 1 more children, which
    compete with the sampled one (parked in the frontier meanwhile)."""

    specs = {}

    def roots(self, ctx: Context) -> int:
        return 1

    def plan(self, st: SearchState, ctx: Context, info: dict[str, Any]) -> list[tuple[Node, int]]:
        mode = {n.id: n.memo.get("mur") for n in st.frontier}
        return [(n, max(1, ctx.n - 1) if mode[n.id] == "search" else 1)
                for n in st.live() if mode[n.id] != "probe"]


@dataclass(frozen=True)
class MomentumGate:
    """MUR's detector. With u_t a step's uncertainty (:func:`step_uncertainty`) and the momentum
    uncertainty M_t = alpha * M_(t-1) + (1 - alpha) * u_t (M_0 = 0), step t >= 2 is searched when
    exp(u_t) > exp(M_(t-1)) / gamma, i.e. u_t > M_(t-1) - log(gamma): the sampled step and n - 1
    more samples of it are scored by the process scorer and the best kept (ties: the step the
    model is more confident in). M_t then takes the kept step's uncertainty. gamma in (0, 1]:
    smaller searches fewer steps. Needs token log-probabilities."""

    specs = {"momentum": ParamSpec(float, 0.9, "alpha: momentum uncertainty M_t = alpha M_(t-1) + (1 - alpha) u_t",
                                   lo=0.0, hi=1.0),
             "gamma": ParamSpec(float, 0.8, "search step t when exp(u_t) > exp(M_(t-1)) / gamma (smaller: fewer searches)",
                                lo=1e-6, hi=1.0)}

    def requires(self, options: dict[str, Any]) -> list[Requirement]:
        return [Requirement("logprobs", param="strategy", who="step uncertainty from token log-probabilities",
                            accepted="another strategy, or a generator that reports logprobs")]

    def settle(self, st: SearchState, ctx: Context, children: list[Node], rng, info: dict[str, Any]) -> bool:
        probes = [n for n in st.frontier if n.memo.get("mur") == "probe"]
        kept: list[Node] = []
        for c in children if not probes else []:
            depth = len(_parent(st, c).steps) + 1 if _parent(st, c) is not None else len(c.steps)
            if not _new_step(c, depth):
                kept.append(c)  # refused, failed or empty: the path ends as it is
                continue
            t, u, m = len(c.steps), step_uncertainty(c), c.memo.get("momentum", 0.0)
            threshold = m - math.log(ctx.options["gamma"]) if t >= 2 and ctx.n > 1 else None
            info["mur"] = {"step": t, "uncertainty": u, "momentum": m, "threshold": threshold,
                           "search": threshold is not None and u > threshold}
            if info["mur"]["search"]:  # keep the parent for n - 1 more samples; park this one beside it
                parent = _parent(st, c)
                parent.memo = {**parent.memo, "mur": "search"}
                c.memo = {**c.memo, "mur": "probe", "threshold": threshold}
                st.frontier = [parent, c]
                return False
            kept.append(self._advance(c, u, threshold, searched=False, options=ctx.options))
        if probes:  # a searched step: the sampled one and its siblings compete
            probe = probes[0]
            depth = len(probe.steps)
            pool = [c for c in probes + children if _new_step(c, depth)] or [probe]
            best = max(pool, key=lambda c: (c.scores[-1] if len(c.scores) == depth else -math.inf,
                                            c.step_logprob, -c.id))
            info["mur"] = {"step": depth, "candidates": [c.id for c in pool], "kept": best.id}
            kept.append(self._advance(best, step_uncertainty(best), probe.memo.get("threshold"), searched=True,
                                      options=ctx.options))
        st.frontier = []
        _keep(st, kept, info)
        return False

    @staticmethod
    def _advance(c: Node, u: float, threshold: float | None, *, searched: bool, options: dict[str, Any]) -> Node:
        """``c`` is the path's next step: fold its uncertainty into the momentum, log the step."""
        m = c.memo.get("momentum", 0.0)
        a = options["momentum"]
        c.memo = {**c.memo, "mur": None, "momentum": a * m + (1 - a) * u,
                  "uncertainties": c.memo.get("uncertainties", ()) + (u,),
                  "thresholds": c.memo.get("thresholds", ()) + (threshold,),
                  "searched": c.memo.get("searched", ()) + (searched,)}
        return c

    def report(self, st: SearchState, nodes: list[Node]) -> dict[str, Any]:
        """The final path's steps searched and the threshold trajectory (None: step 1, never gated)."""
        path = max(nodes, key=lambda n: (n.finished, len(n.steps), -n.id), default=None)
        memo = path.memo if path is not None else {}
        searched = list(memo.get("searched", ()))
        return {"searched_steps": sum(searched), "steps_searched": [i + 1 for i, s in enumerate(searched) if s],
                "thresholds": list(memo.get("thresholds", ())), "uncertainties": list(memo.get("uncertainties", ()))}


# ------------------------------------------------------------- φ-decoding: foresight sampling
# (Xu et al. 2025, "φ-Decoding: Adaptive Foresight Sampling for Balanced Inference-Time
# Exploration and Exploitation")

FORESIGHT = ParamSpec(int, 1, "steps each candidate step's foresight rollout looks ahead (the paper: to the end)", lo=1)


def phi_shape(ctx: Context) -> tuple[int, int]:
    """φ-decoding's beams and candidate steps per beam at width n. A candidate costs its own step
    plus ``foresight`` rollout steps, so a round's n step generations buy C = n // (1 + foresight)
    candidates: C // width beams of ``width`` candidates (one beam of C when C < width)."""
    c = max(1, ctx.n // (1 + ctx.options["foresight"]))
    k = min(ctx.options["width"], c)
    return max(1, c // k), k


def _softmax(x) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    e = np.exp(x - x.max())
    return e / e.sum()


def width_prune(logps: list[float], sigma: float, room: int, tau: float, rng: np.random.Generator) -> list[int]:
    """In-width pruning: the candidates whose step mean token log-prob is at least mean - sigma *
    std of the round's candidates; if fewer than ``room`` remain, pruned ones drawn without
    replacement ∝ softmax(log-prob / tau) make up the number. Indices, ascending."""
    x = np.asarray(logps, dtype=np.float64)
    keep = [i for i in range(len(x)) if x[i] >= x.mean() - sigma * x.std()]
    if len(keep) < room:
        rest = [i for i in range(len(x)) if i not in keep]
        extra = rng.choice(len(rest), size=min(room - len(keep), len(rest)), replace=False, p=_softmax(x[rest] / tau))
        keep = sorted(keep + [rest[int(j)] for j in extra])
    return keep


def cluster_texts(texts: list[str], k: int, rng: np.random.Generator) -> list[int]:
    """Cluster labels of ``texts``: TF-IDF vectors (word and symbol tokens, smoothed idf,
    L2-normalised) grouped by k-means (k-means++ seeding, scipy), k at most the number of distinct
    texts; identical texts always share a cluster."""
    k = min(k, len(set(texts)))
    if k <= 1:
        return [0] * len(texts)
    tokens = [re.findall(r"\w+|[^\w\s]", t.lower()) for t in texts]
    vocab = {w: j for j, w in enumerate(sorted({w for ts in tokens for w in ts}))}
    if not vocab:
        return [0] * len(texts)
    tf = np.zeros((len(texts), len(vocab)))
    for i, ts in enumerate(tokens):
        for w in ts:
            tf[i, vocab[w]] += 1
    idf = np.log((1 + len(texts)) / (1 + (tf > 0).sum(axis=0))) + 1
    x = tf * idf
    x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    from scipy.cluster.vq import kmeans2  # lazily: scipy is heavy

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # an empty cluster is harmless here
        _, labels = kmeans2(x, k, minit="++", rng=rng)
    return [int(v) for v in labels]


def phi_probabilities(advantages: list[float], labels: list[int], tau: float) -> np.ndarray:
    """The selection distribution: the mean of softmax(advantage / tau) and softmax(cluster share),
    a candidate's cluster share being the fraction of the candidates in its cluster."""
    share = [labels.count(v) / len(labels) for v in labels]
    return (_softmax(np.asarray(advantages, dtype=np.float64) / tau) + _softmax(share)) / 2


@dataclass(frozen=True)
class PhiBeams:
    """φ-decoding's expansion: one root with B * k candidates, then k per live beam (B, k from
    :func:`phi_shape`); after in-depth pruning each beam just continues, one step per round."""

    specs = {"width": ParamSpec(int, 4, "candidate steps per beam (the paper's rollouts per beam)", lo=1),
             "foresight": FORESIGHT}

    def roots(self, ctx: Context) -> int:
        return 1

    def plan(self, st: SearchState, ctx: Context, info: dict[str, Any]) -> list[tuple[Node, int]]:
        b, k = phi_shape(ctx)
        if st.depth == 0:
            return [(n, b * k) for n in st.live()]
        return [(n, 1 if n.memo.get("phi") == "plain" else k) for n in st.live()]


@dataclass(frozen=True)
class Foresight:
    """φ-decoding's step value. In-width pruning (:func:`width_prune`) drops candidates whose step
    is much less likely than the round's others; each kept candidate gets a foresight rollout of
    ``foresight`` steps, forked from its kept sequence (:func:`.extend.rollout`), whose mean token
    log-prob F is its value (a finished candidate: its own step's). The advantage is A = F minus
    the beam's previous value. Candidates with A > 0 are clustered by their rollout texts
    (:func:`cluster_texts`) and drawn by :func:`phi_probabilities`; if fewer than the beams to fill
    have A > 0, all kept candidates are drawn by softmax(A / tau). No scorer is called."""

    specs = {"foresight": FORESIGHT,
             "sigma": ParamSpec(float, 1.0, "in-width pruning: drop steps with mean log-prob < mean - sigma * std",
                                lo=0.0),
             "tau": ParamSpec(float, 0.1, "temperature of softmax(advantage / tau)", lo=1e-6),
             "clusters": ParamSpec(int, 3, "k-means clusters of the foresight texts", lo=1)}

    def requires(self, options: dict[str, Any]) -> list[Requirement]:
        return [Requirement("logprobs", param="strategy", who="foresight values from token log-probabilities",
                            accepted="another strategy, or a generator that reports logprobs")]

    def update(self, n: Node, s: float, options: dict[str, Any]) -> None:
        """Valued by foresight (:meth:`foresee`), not by a scorer."""

    async def foresee(self, st: SearchState, ctx: Context, children: list[Node], rng: np.random.Generator,
                      info: dict[str, Any]) -> None:
        if any(c.memo.get("phi") == "plain" for c in children):
            return  # in-depth pruning stopped the foresight: the beams just continue
        opts = ctx.options
        for c in children:
            c.memo = {**c.memo, "p": 0.0}
        cands = [c for c in children if _new_step(c, st.depth + 1)]
        if not cands:
            return
        room = max(1, phi_shape(ctx)[0] - len(st.done))
        kept = [cands[i] for i in width_prune([c.step_logprob for c in cands], opts["sigma"], room, opts["tau"], rng)]
        rollouts = await extend.rollout(ctx, kept, opts["foresight"])
        values = [ro.logprob / ro.tokens if ro.tokens else c.step_logprob for c, ro in zip(kept, rollouts)]
        advs = [v - c.memo.get("q", 0.0) for c, v in zip(kept, values)]
        texts = [ro.text if ro.text.strip() else c.steps[-1] for c, ro in zip(kept, rollouts)]
        eligible = [i for i in range(len(kept)) if advs[i] > 0 and texts[i].strip()]
        labels: list[int] | None = None
        if len(eligible) < room:
            pool, p, consensus = list(range(len(kept))), _softmax(np.asarray(advs) / opts["tau"]), 0.0
        else:
            pool = eligible
            labels = cluster_texts([texts[i] for i in pool], opts["clusters"], rng)
            p = phi_probabilities([advs[i] for i in pool], labels, opts["tau"])
            consensus = max(labels.count(v) for v in labels) / len(labels)
        for c, v, a in zip(kept, values, advs):
            c.scores.append(a)
            c.priority = v
            c.memo = {**c.memo, "value": v, "consensus": consensus}
        for j, i in enumerate(pool):
            kept[i].memo = {**kept[i].memo, "p": float(p[j])}
        cluster = {kept[i].id: labels[j] for j, i in enumerate(pool)} if labels is not None else {}
        info["foresight"] = [{"id": c.id, "logp": c.step_logprob, "pruned": c not in kept,
                              "value": c.memo.get("value") if c in kept else None,
                              "adv": advs[kept.index(c)] if c in kept else None,
                              "cluster": cluster.get(c.id), "p": c.memo["p"]} for c in cands]
        info["consensus"] = consensus


@dataclass(frozen=True)
class PhiSelect:
    """φ-decoding's selection and in-depth pruning: the beams still open are drawn without
    replacement from the candidates by their selection probability; a drawn candidate's value
    becomes its beam's previous value. Once ``min_foresight`` rounds are done and the largest
    cluster holds more than ``consensus`` of the candidates (or, with several beams, every beam
    drew the same step), foresight stops and each beam continues alone to its answer. Over when
    B beams have finished."""

    specs = {"consensus": ParamSpec(float, 0.7, "in-depth pruning: stop foresight once the largest cluster holds "
                                                 "more than this share of the candidates", lo=0.0, hi=1.0),
             "min_foresight": ParamSpec(int, 4, "foresight rounds before in-depth pruning may stop it", lo=1)}

    def settle(self, st: SearchState, ctx: Context, children: list[Node], rng: np.random.Generator,
               info: dict[str, Any]) -> bool:
        b = phi_shape(ctx)[0]
        usable = [c for c in children if c.reason != "error"]
        if any(c.memo.get("phi") == "plain" for c in children):
            _keep(st, usable, info)
            return False
        pool = [c for c in children if c.memo.get("p", 0.0) > 0]
        if not pool:  # nothing was valued (refused, failed or empty): the paths end as they are
            _keep(st, [c for c in usable if c.finished], info)
            return True
        p = np.array([c.memo["p"] for c in pool])
        drawn = rng.choice(len(pool), size=min(max(0, b - len(st.done)), len(pool)), replace=False, p=p / p.sum())
        chosen = [pool[int(i)] for i in sorted(drawn)]
        same = len(chosen) > 1 and len({c.steps[-1] for c in chosen}) == 1
        stop = st.depth >= ctx.options["min_foresight"] and (chosen[0].memo.get("consensus", 0.0) >
                                                            ctx.options["consensus"] or same) if chosen else False
        for c in chosen:
            c.memo = {**c.memo, "q": c.memo.get("value", 0.0), "phi": "plain" if stop else None,
                      "rounds": c.memo.get("rounds", 0) + 1, **({"stopped_at": st.depth} if stop else {})}
        info["selected"] = [c.id for c in chosen]
        info["depth_pruned"] = stop
        _keep(st, chosen, info)
        return len(st.done) >= b

    def report(self, st: SearchState, nodes: list[Node]) -> dict[str, Any]:
        """Foresight rounds of the final beams, and the depth where in-depth pruning stopped them."""
        return {"foresight_rounds": max((n.memo.get("rounds", 0) for n in nodes), default=0),
                "foresight_stopped_at": next((n.memo["stopped_at"] for n in nodes if "stopped_at" in n.memo), None)}
