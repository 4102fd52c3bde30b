"""Tree-search policies: MCTS (UCT with rollouts) and AB-MCTS (adaptive branching).

Both keep the whole tree in the search state: every unfinished node stays on the frontier
(with its kept sequence, so a later expansion forks it instead of re-reading the prefix) and
every finished one among the solutions; a node's parent is ``node.up``, its tree statistics
``node.visits`` and ``node.value``. A node's **value** is ``min(1, exp(priority))``, the process
scorer's probability for its path (``priority`` aggregates the step log-scores, ``min`` by
default, so one wrong step caps the path; see :class:`TreeValue`).

Compute (what ``--n`` buys): n simulations, each ending in one solution, and no more than the
tokens of n independent samples: the tree stops starting simulations once it has n solutions
(counting those in flight), once the tokens generated in it reach n times the mean length of its
complete solutions, or once it holds n * max_steps nodes. Simulations that start inside the tree
reuse their prefix, so a tree usually spends less than n samples.

Kept sequences: a tree keeps at most ``max_kept`` sequences besides its in-flight rollouts; the
rest are freed (least promising first) and re-read from their text if expanded again.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ...rng import make_rng
from ...tasks import AnswerTask
from ...types import AnswerMass, Candidate
from .. import voting
from ..base import Context, ParamSpec
from . import extend
from .core import Node, SearchState, aggregate

__all__ = ["TreeValue", "UCTExpand", "Backup", "MostVisited", "ThompsonExpand",
           "node_value", "ab_choice", "posterior_draw"]

PARALLEL = ParamSpec(int, 4, "simulations run together in one batch (at most n)", lo=1)
MAX_KEPT = ParamSpec(int, 8, "kept sequences per tree besides in-flight rollouts (the rest are re-read when expanded)",
                     lo=0)
_COMPLETE = ("answer", "eos", "length", "max_steps")  # reasons a solution is complete (its length is a sample's)


def node_value(n: Node) -> float | None:
    """The node's value in [0, 1]: the scorer's probability for its path (``None``: not scored).
    A failed step is worth 0."""
    if n.reason == "error":
        return 0.0
    if not n.scores:
        return None
    return min(1.0, math.exp(n.priority)) if n.priority < 700 else 1.0


def _tree(st: SearchState) -> tuple[Node | None, list[Node], dict[int, list[Node]]]:
    """The root, every node, and each node's children (in creation order)."""
    nodes = sorted(st.frontier + st.done, key=lambda n: n.id)
    kids: dict[int, list[Node]] = {n.id: [] for n in nodes}
    root = None
    for n in nodes:
        if n.up is None:
            root = root or n
        elif n.up.id in kids:
            kids[n.up.id].append(n)
    return root, nodes, kids


def _spent(st: SearchState, ctx: Context, nodes: list[Node]) -> bool:
    """True once the tree has used the compute of n samples (see the module docstring)."""
    grown = [n for n in nodes if n.up is not None]
    if len(grown) >= ctx.n * ctx.options["max_steps"] or sum(n.finished for n in grown) >= ctx.n:
        return True
    complete = [n.tokens for n in nodes if n.finished and n.reason in _COMPLETE]
    if not complete:
        return False
    generated = sum(n.tokens - n.up.tokens for n in grown)
    return generated >= ctx.n * (sum(complete) / len(complete))


def _parallel(ctx: Context) -> int:
    """Simulations in flight at once: ``parallel``, at most n (n = 1 is one sample's compute)."""
    return max(1, min(ctx.options["parallel"], ctx.n))


def _room(ctx: Context, nodes: list[Node], tips: list[Node]) -> int:
    """New simulations this round: free slots of ``parallel``, and never more solutions than n
    (each simulation ends in exactly one finished node)."""
    finished = sum(n.finished for n in nodes if n.up is not None)
    return max(0, min(_parallel(ctx) - len(tips), ctx.n - finished - len(tips)))


def _ancestry(n: Node) -> list[Node]:
    path = []
    while n is not None:
        path.append(n)
        n = n.up
    return path


def _backup(n: Node, value: float, touched: dict[int, Node]) -> None:
    """A simulation ending at ``n`` with ``value``: every node from ``n`` to the root gains a
    visit and the value enters its running mean."""
    for a in _ancestry(n):
        a.visits += 1
        a.value += (value - a.value) / a.visits
        touched[a.id] = a


def _trim(ctx: Context, candidates: list[Node], key) -> None:
    """Free the kept sequences of ``candidates`` beyond ``max_kept``, lowest ``key`` first."""
    held = sorted((n for n in candidates if n.handle is not None), key=key, reverse=True)
    extend.release(ctx, held[ctx.options["max_kept"]:])


def _settle_tree(st: SearchState, ctx: Context, children: list[Node], over: bool, info: dict[str, Any]) -> None:
    """The tree after a round: unfinished nodes on the frontier, finished ones among the
    solutions; at the end the interior nodes leave the frontier (they are not candidates) if a
    solution was found."""
    known = {id(n) for n in st.frontier + st.done}
    parents = [c.up for c in children if c.up is not None and id(c.up) not in known]
    parents = list({id(p): p for p in parents}.values())
    st.frontier = st.frontier + parents + [c for c in children if not c.finished]
    st.done = st.done + [c for c in children if c.finished]
    if over and any(n.reason not in ("error", "budget", "empty") for n in st.done):
        st.frontier = []


def _tree_info(touched: dict[int, Node]) -> list[list[Any]]:
    return [[n.id, n.visits, round(n.value, 6)] for n in sorted(touched.values(), key=lambda n: n.id)]


# ----------------------------------------------------------------------------------- weigh

@dataclass(frozen=True)
class TreeValue:
    """A node's priority is its path's aggregated step log-score (default ``min``: one wrong
    step caps the path); its value ``min(1, exp(priority))`` is what tree search backs up."""

    needs_probability = True  # value = min(1, exp(priority)), the scorer's probability

    specs = {"aggregate": ParamSpec(str, "min", "step scores → the path's log-score (the node's value is its exp)",
                                    choices=("last", "min", "product", "mean"))}

    def update(self, n: Node, s: float, options: dict[str, Any]) -> None:
        n.scores.append(s)
        n.priority = aggregate(n.scores, options["aggregate"])


# ------------------------------------------------------------------------------------ MCTS

@dataclass(frozen=True)
class _TreeExpand:
    """What both tree searches' expansion shares: one root; each round the in-flight rollouts
    (unfinished leaves) take their next step, and, while the tree has not spent its compute,
    :meth:`descend` adds new children to ``plan`` (``{node id: [node, children]}``)."""

    shares_prefixes = True  # its solutions share the steps they forked from (each generated once)

    def roots(self, ctx: Context) -> int:
        return 1

    def plan(self, st: SearchState, ctx: Context, info: dict[str, Any]) -> list[tuple[Node, int]]:
        root, nodes, kids = _tree(st)
        tips = [n for n in nodes if n is not root and not n.finished and not kids[n.id]]
        plan: dict[int, list] = {t.id: [t, 1] for t in tips}  # in-flight rollouts take their next step
        if root is not None and not _spent(st, ctx, nodes):
            self.descend(st, ctx, info, root, nodes, kids, tips, plan)
        return [tuple(p) for p in plan.values()]

    def descend(self, st: SearchState, ctx: Context, info: dict[str, Any], root: Node, nodes: list[Node],
                kids: dict[int, list[Node]], tips: list[Node], plan: dict[int, list]) -> None:
        raise NotImplementedError


class UCTExpand(_TreeExpand):
    """MCTS selection and expansion (UCT, Kocsis & Szepesvári 2006) with rollouts.

    Each simulation starts at the root and descends: a node with fewer than ``width`` children
    gets a new one (a sampled next step, forking the node's kept sequence) and a rollout from
    it continues one step per round, each step a new tree node, until the solution ends; a node
    with ``width`` children passes to the child maximising ``Q + c * sqrt(ln N / N_child)``
    (ties: the older child); a finished solution reached this way is re-evaluated (its value
    backed up again, no tokens). ``parallel`` simulations run together: in-flight ones count as
    visits of value 0 on their path (virtual loss), so the others spread out."""

    specs = {"width": ParamSpec(int, 4, "children per node before UCT descends into them", lo=1),
             "c": ParamSpec(float, 1.0, "UCT exploration constant (values are probabilities in [0, 1])", lo=0.0),
             "parallel": PARALLEL, "max_kept": MAX_KEPT}

    def descend(self, st, ctx, info, root, nodes, kids, tips, plan) -> None:
        width, c = ctx.options["width"], ctx.options["c"]
        virtual: dict[int, int] = {}
        for t in tips:
            for a in _ancestry(t):
                virtual[a.id] = virtual.get(a.id, 0) + 1
        touched: dict[int, Node] = {}
        revisits, expanded = [], []
        free = _room(ctx, nodes, tips)
        attempts = 0
        while free > 0 and attempts < 64 * _parallel(ctx):
            attempts += 1
            v = root
            while True:
                if v.finished:  # a solution: its value again, nothing generated
                    _backup(v, node_value(v) or 0.0, touched)
                    revisits.append(v.id)
                    break
                if len(kids[v.id]) + (plan[v.id][1] if v.id in plan else 0) < width:
                    plan.setdefault(v.id, [v, 0])[1] += 1  # a new child (beside a tip's own next step)
                    for a in _ancestry(v):
                        virtual[a.id] = virtual.get(a.id, 0) + 1
                    expanded.append(v.id)
                    free -= 1
                    break
                if not kids[v.id]:  # every child of v is still being generated: nothing to select
                    free = 0
                    break
                v = max(kids[v.id], key=lambda ch: (uct(ch, v, virtual, c), -ch.id))
        info["expanded"] = expanded
        if revisits:
            info["revisits"] = revisits
            info["tree"] = _tree_info(touched)


def uct(ch: Node, parent: Node, virtual: dict[int, int], c: float) -> float:
    """UCT score of ``ch`` under ``parent``; in-flight simulations count as visits of value 0."""
    n = ch.visits + virtual.get(ch.id, 0)
    if n == 0:
        return math.inf
    big_n = parent.visits + virtual.get(parent.id, 0)
    q = ch.value * ch.visits / n
    return q + c * math.sqrt(math.log(max(big_n, 1)) / n)


@dataclass(frozen=True)
class Backup:
    """Tree-search backup: a rollout that reached the end of its solution backs its value (the
    scorer's probability for the whole path) up to the root; the search is over once the
    compute of n samples is spent and no rollout is in flight. ``width``: nodes with ``width``
    children are never expanded again (MCTS), so their kept sequences are freed at once."""

    width: bool = False
    specs = {}

    def settle(self, st: SearchState, ctx: Context, children: list[Node], rng, info: dict[str, Any]) -> bool:
        touched: dict[int, Node] = {}
        for ch in children:
            if ch.finished and ch.reason != "budget":
                _backup(ch, node_value(ch) or 0.0, touched)
        _settle_tree(st, ctx, children, False, info)
        root, nodes, kids = _tree(st)
        tips = [n for n in nodes if n is not root and not n.finished and not kids[n.id]]
        over = not tips and (_spent(st, ctx, nodes) or not children)
        if touched:  # after the selection's re-evaluations, if any
            info.setdefault("tree", []).extend(_tree_info(touched))
        if self.width:  # a node with width children is never expanded again: its sequence can go
            extend.release(ctx, [n for n in nodes if len(kids[n.id]) >= ctx.options["width"]])
        _trim(ctx, [n for n in nodes if not n.finished and n not in tips],
              key=lambda n: (n.visits, n.value, -n.id))
        if over:
            _settle_tree(st, ctx, [], True, info)
        return over


@dataclass(frozen=True)
class MostVisited:
    """MCTS's answer: the solution at the end of the most-visited path — from the root, the
    most-visited child (ties: higher value, then older) among those leading to a solution, down
    to a solution (the robust child rule of MCTS, applied at every level). The distribution
    weighs each solution by its visits."""

    specs = {}

    def chosen(self, nodes: list[Node], cands: list[Candidate]) -> Node | None:
        def key(n: Node):
            return tuple((a.visits, a.value, -a.id) for a in reversed(_ancestry(n)))
        return max(nodes, key=key) if nodes else None

    def choose(self, nodes: list[Node], cands: list[Candidate], task: AnswerTask
               ) -> tuple[list[AnswerMass], list[str]]:
        logw = [math.log(n.visits) if n.visits > 0 else -math.inf for n in nodes]
        classes = voting.fold(cands, logw, task)
        answers = [c.answer for c in classes]
        pick = self.chosen(nodes, cands)
        head = next((c.answer for n, c in zip(nodes, cands) if n is pick), None)
        if head is not None:
            at = next((i for i, cl in enumerate(classes) if any(m.answer == head for m in cl.members)), None)
            if at is not None:
                answers = [answers[at]] + answers[:at] + answers[at + 1:]
        return voting.distribution(classes), answers


# --------------------------------------------------------------------------------- AB-MCTS

def posterior_draw(obs: list[float], prior: str, rng: np.random.Generator) -> float:
    """One Thompson draw of the mean score given observed scores in [0, 1]: ``beta`` — Beta with
    Jeffreys' prior (a = b = 0.5), each score s adding s to a and 1 - s to b; ``gaussian`` —
    Normal with unknown mean and variance, normal-inverse-chi-squared prior (m = 0, kappa = 1,
    nu = 1, tau^2 = 0.1), as in the paper's reference implementation."""
    if prior == "beta":
        s = float(sum(obs))
        return float(rng.beta(0.5 + s, 0.5 + len(obs) - s))
    m0, k0, nu0, tau0 = 0.0, 1.0, 1.0, 0.1
    n = len(obs)
    if n:
        ave = float(np.mean(obs))
        ss = float(np.var(obs)) * n
        kappa, nu = k0 + n, nu0 + n
        m = (k0 * m0 + n * ave) / kappa
        tau2 = (nu0 * tau0 + ss + n * k0 * (m0 - ave) ** 2 / (k0 + n)) / nu
    else:
        kappa, nu, m, tau2 = k0, nu0, m0, tau0
    sigma2 = (nu * tau2 / 2) / rng.gamma(nu / 2)  # inverse gamma (nu / 2, scale nu tau^2 / 2)
    return float(rng.normal(m, math.sqrt(sigma2 / kappa)))


def _leaf_values(c: Node, kids: dict[int, list[Node]]) -> tuple[list[float], float | None]:
    """The values of the finished solutions below ``c`` (``c`` included), one per simulation, and
    the value of the first of them — the rollout that created ``c``, which followed the oldest
    child at every level (``None`` while it is in flight)."""
    out, todo = [], [c]
    while todo:
        x = todo.pop()
        if x.finished:
            v = node_value(x)
            if v is not None and x.reason != "budget":
                out.append(v)
        todo.extend(kids[x.id])
    x = c
    while kids[x.id]:
        x = kids[x.id][0]
    first = node_value(x) if x.finished and x.reason != "budget" else None
    return out, first


def ab_choice(v: Node, kids: dict[int, list[Node]], prior: str, rng: np.random.Generator
              ) -> tuple[Node | None, dict[str, Any]]:
    """AB-MCTS-A's decision at node ``v`` (Inoue et al. 2025, node aggregation): Thompson
    sampling between GEN — a new child of ``v`` (wider), whose posterior holds the scores of the
    solutions that created ``v``'s children — and CONT — continuing into an existing child
    (deeper), whose posterior holds the scores of the later solutions found below ``v``'s
    children. On CONT the child is picked by Thompson sampling too, each child's posterior over
    every solution below it. Finished children cannot be continued; without an unfinished child
    the choice is GEN. Returns the child to descend into (``None``: generate at ``v``) and the
    draws."""
    children = kids[v.id]
    gen_obs, cont_obs, below = [], [], []
    for c in children:
        vals, first = _leaf_values(c, kids)
        below.append(vals)
        if first is not None:
            gen_obs.append(first)
            vals = list(vals)
            vals.remove(first)
        cont_obs.extend(vals)
    g = posterior_draw(gen_obs, prior, rng)
    k = posterior_draw(cont_obs, prior, rng)
    open_ = [(c, vals) for c, vals in zip(children, below) if not c.finished]
    d = {"at": v.id, "gen": round(g, 4), "cont": round(k, 4)}
    if g >= k or not open_:
        d["choice"] = "wider"
        return None, d
    draws = [posterior_draw(vals, prior, rng) for _, vals in open_]
    best = open_[int(np.argmax(draws))][0]
    d["choice"], d["child"] = "deeper", best.id
    return best, d


@dataclass(frozen=True)
class ThompsonExpand(_TreeExpand):
    """AB-MCTS selection and expansion with rollouts: in-flight rollouts take their next step;
    each free slot of ``parallel`` starts a simulation that descends from the root by
    :func:`ab_choice` until a node chooses GEN; that node gets a new child (forking its kept
    sequence) and a rollout from it runs to the end of the solution, each step a tree node."""

    specs = {"prior": ParamSpec(str, "beta", "score posterior for Thompson sampling", choices=("beta", "gaussian")),
             "parallel": PARALLEL, "max_kept": MAX_KEPT}

    def descend(self, st, ctx, info, root, nodes, kids, tips, plan) -> None:
        rng = make_rng(ctx.seed, ctx.problem.id, "ab-mcts", st.depth)
        decisions, expanded = [], []
        for _ in range(_room(ctx, nodes, tips)):
            v = root
            while True:
                nxt, d = ab_choice(v, kids, ctx.options["prior"], rng)
                decisions.append(d)
                if nxt is None:
                    break
                v = nxt
            plan.setdefault(v.id, [v, 0])[1] += 1
            expanded.append(v.id)
        info["expanded"] = expanded
        if decisions:
            info["decisions"] = decisions
