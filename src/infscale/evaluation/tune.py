"""``infscale tune``: learn a compute policy for ``auto`` from stored evaluation runs.

Method (docs/compute-optimal.md has the figures and references):

1. **Problems.** Every problem of the given runs that has a complete sample pool (seed 0; a
   pooled strategy such as majority or best-of-n was in the grid; an interrupted run's partly
   sampled problems are left out) is one item; step-level strategies'
   stored results on the same problems (same question) join it. Problems are split by
   :func:`~infscale.evaluation.metrics.holdout_split` (seeded hash of the question) into a
   tuning part and a holdout.
2. **Offline actions.** For a probe of ``k`` samples — pool samples ``0..k-1``, exactly the
   samples ``auto`` draws first — every action a bin may take is evaluated per problem without
   generating anything: ``answer`` (a pooled spec's rule over the probe), ``continue`` with a
   pooled spec at budget ``N > k`` (the mean over subsamples that *contain the probe* plus
   ``N - k`` other pool samples: what ``auto`` would choose given that probe), ``continue`` with
   a step-level spec at ``N`` (its stored result, plus the probe's tokens), and ``abstain``.
   Tokens are generated tokens (scorer calls included).
3. **Signals and bins.** Each signal of :data:`~infscale.strategies.policy.SIGNALS` is computed
   on the probe; tuning problems are cut into up to ``B`` bins at the signal's quantiles.
4. **Per-bin choice.** The combination of per-bin actions that maximises the objective is found
   exactly (Pareto frontiers of (tokens, correct) merged bin by bin): ``accuracy`` maximises
   accuracy (under ``--max-tokens`` mean tokens per problem if given), ``tokens`` minimises
   tokens subject to matching the best fixed strategy's tuning accuracy. In a bin where no
   action is ever right the policy abstains.
5. **Holdout.** Every candidate (probe size x signal x bin count) and every fixed strategy is
   compared on the holdout only through :class:`~infscale.evaluation.metrics.Thresholdout`
   (parameters from :func:`thresholdout_parameters`, scaled to the split sizes); the chosen
   candidate's Thresholdout answer and interval are the policy's holdout figures.
"""

from __future__ import annotations

import datetime as _dt
import itertools
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from statistics import NormalDist
from typing import Any

import numpy as np

from ..errors import ConfigError
from ..home import subdir
from ..rng import make_rng
from ..strategies.auto import _upper_hull, resolve_spec
from ..strategies.policy import FORMAT, SIGNALS, VERSION, Policy, signal_value
from ..strategies.sample import select_from
from ..tasks import AnswerClasses, get_task
from ..types import Candidate
from . import metrics
from .harness import POOL, parse_strategies
from .store import Store

__all__ = ["tune", "TuneConfig", "thresholdout_parameters", "ProblemData", "load_problems", "fit",
           "action_table", "save_policy", "OBJECTIVES"]

OBJECTIVES = ("accuracy", "tokens")
SUBSETS = 20  # continuation subsamples per (problem, probe, spec, budget)


@dataclass
class TuneConfig:
    objective: str = "accuracy"
    max_tokens: float | None = None
    probes: tuple[int, ...] = (2, 4)
    bins: tuple[int, ...] = (1, 2, 3)
    signals: tuple[str, ...] = tuple(SIGNALS)
    holdout_fraction: float = 0.5
    seed: int = 0

    def validate(self) -> None:
        if self.objective not in OBJECTIVES:
            raise ConfigError("objective", f"got {self.objective!r}", " or ".join(OBJECTIVES))
        if self.max_tokens is not None and not (self.max_tokens > 0):
            raise ConfigError("max-tokens", f"got {self.max_tokens!r}", "mean generated tokens per problem > 0")
        for k in self.probes:
            if isinstance(k, bool) or not isinstance(k, int) or k < 1:
                raise ConfigError("probe", f"got {k!r}", "integers >= 1, e.g. 2,4")
        for b in self.bins:
            if isinstance(b, bool) or not isinstance(b, int) or b < 1:
                raise ConfigError("bins", f"got {b!r}", "integers >= 1, e.g. 1,2,3")
        for s in self.signals:
            if s not in SIGNALS:
                raise ConfigError("signals", f"unknown signal {s!r}", ", ".join(SIGNALS))
        if not 0 < self.holdout_fraction < 1:
            raise ConfigError("holdout-fraction", f"got {self.holdout_fraction!r}", "a number in (0, 1)")


@dataclass
class ProblemData:
    """One problem: its seed-0 pool (sorted by idx) and the stored per-budget results of
    non-pooled specs (``{spec: {budget: (correct, generated tokens)}}``)."""

    key: str
    problem_id: str
    task: str
    pool: list[dict[str, Any]]
    steps: dict[str, dict[int, tuple[float, float]]] = field(default_factory=dict)
    fixed: dict[str, tuple[float, float]] = field(default_factory=dict)  # "spec@N" -> (correct, tokens)
    _classes: Any = None
    _graded: dict[str, bool] | None = None

    def classes(self):
        if self._classes is None:
            self._classes = AnswerClasses(get_task(self.task), [s["answer"] for s in self.pool])
        return self._classes

    def graded(self) -> dict[str, bool]:
        if self._graded is None:
            self._graded = {}
            for s in self.pool:
                if s["answer"] is not None:
                    self._graded.setdefault(s["answer"], bool(s["correct"]))
        return self._graded


def load_problems(store: Store, run_ids: Sequence[str]) -> tuple[list[ProblemData], dict[str, Any]]:
    """The problems of ``run_ids`` with their pools and stored results, and the runs' metadata
    (model, datasets, pooled and step-level specs, budgets, sampling parameters)."""
    if not run_ids:
        raise ConfigError("run", "none given", "one or more run ids (see `infscale report`)")
    by_key: dict[str, ProblemData] = {}
    models, datasets, pooled_specs, step_specs, budgets, params = set(), [], [], [], set(), []
    for rid in run_ids:
        run = store.get_run(rid)
        cfg = run["config"]
        model = cfg.get("model") or ("(server) " + str(cfg.get("backend_url")) if cfg.get("backend_url") else "smollm2-135m")
        models.add(model)
        datasets.append(cfg.get("dataset"))
        params.append(cfg.get("params") or {})
        budgets |= set(cfg.get("budgets") or [])
        specs = parse_strategies(cfg.get("strategies") or [])
        problems = {p["problem_id"]: p["data"] for p in store.get_problems(rid)}
        pool_rows: dict[str, list[dict[str, Any]]] = {}
        for s in store.get_samples(rid, pool=POOL, seed=0):
            pool_rows.setdefault(s["problem_id"], []).append(s)
        results = store.get_results(rid)
        for pid, data in problems.items():
            key = json.dumps([data.get("question"), data.get("messages"), data.get("reference")], sort_keys=True)
            pd = by_key.get(key)
            if pd is None:
                pd = by_key[key] = ProblemData(key=key, problem_id=pid, task=data.get("task") or "math", pool=[])
            rows = sorted(pool_rows.get(pid, []), key=lambda s: s["idx"])
            # only complete pools (an interrupted run leaves some problems partly sampled)
            if len(rows) >= max(cfg.get("budgets") or [0]) and len(rows) > len(pd.pool):
                pd.pool = rows
        for spec in specs:
            if spec.pooled:
                if spec.label not in pooled_specs:
                    pooled_specs.append(spec.label)
            elif not spec.greedy and spec.name not in ("adaptive", "auto"):
                if spec.label not in step_specs:
                    step_specs.append(spec.label)
        pid_key = {pid: json.dumps([d.get("question"), d.get("messages"), d.get("reference")], sort_keys=True)
                   for pid, d in problems.items()}
        for r in results:
            if r["seed"] != 0 or r["problem_id"] not in pid_key:
                continue
            pd = by_key[pid_key[r["problem_id"]]]
            label = r["strategy"]
            pd.fixed[f"{label}@{int(r['budget'])}"] = (float(r["correct"]), float(r["generated_tokens"]))
            if label in step_specs:
                pd.steps.setdefault(label, {})[int(r["budget"])] = (float(r["correct"]), float(r["generated_tokens"]))
    if len(models) > 1:
        raise ConfigError("run", f"the runs used different models ({', '.join(sorted(models))})",
                          "runs of one model (a policy is tuned per model)")
    with_pool = [p for p in by_key.values() if p.pool]
    if not with_pool:
        raise ConfigError("run", f"run(s) {', '.join(run_ids)} hold no sample pool",
                          "runs whose --strategies include a pooled strategy (majority, best-of-n, weighted, bom)")
    sizes = {len(p.pool) for p in with_pool}
    meta = {"model": models.pop(), "datasets": datasets, "runs": list(run_ids), "pooled_specs": pooled_specs,
            "step_specs": step_specs, "budgets": sorted(budgets), "pool_size": min(sizes), "params": params[0]}
    for p in with_pool:
        p.pool = p.pool[: meta["pool_size"]]
    return with_pool, meta


# ---------------------------------------------------------------------------------------------
# Offline evaluation of actions.


def _cands(pool: list[dict[str, Any]], idx: Sequence[int], scorer: str | None) -> list[Candidate]:
    return [Candidate(text=pool[i]["text"], answer=pool[i]["answer"], index=pool[i]["idx"],
                      logprob=pool[i]["logprob"] or 0.0,
                      score=(pool[i]["scores"].get(scorer) if scorer else None),
                      generated_tokens=pool[i]["generated_tokens"], finish_reason=pool[i]["finish_reason"] or "stop",
                      seed=pool[i]["sample_seed"]) for i in idx]


def _tokens(pool: list[dict[str, Any]], idx: Sequence[int], scorer: str | None) -> float:
    t = 0.0
    for i in idx:
        t += pool[i]["generated_tokens"]
        if scorer:
            t += float((pool[i]["score_costs"].get(scorer) or {}).get("generated_tokens", 0.0))
    return t


def _is_correct(answer: str | None, pd: ProblemData) -> bool:
    if answer is None:
        return False
    graded = pd.graded()
    if answer in graded:
        return graded[answer]
    task = get_task(pd.task)
    key = task.canonical(answer)
    return any(ok for a, ok in graded.items() if task.canonical(a) == key)


def probe_signals(pd: ProblemData, k: int, signals: Sequence[str]) -> dict[str, float]:
    """The signals ``auto`` would read on this problem's probe (pool samples ``0..k-1``);
    ``check`` signals only where the pool was scored by ``arith-check``."""
    probe = _cands(pd.pool, range(k), None)
    classes = pd.classes().group([c.answer for c in probe])
    has_check = all("arith-check" in s["scores"] for s in pd.pool[:k])
    passed = [float(s["scores"]["arith-check"]) >= 0.0 for s in pd.pool[:k]] if has_check else None
    out = {}
    for name in signals:
        if SIGNALS[name][1] and passed is None:
            continue
        out[name] = signal_value(name, probe, classes, passed)
    return out


def action_table(pd: ProblemData, k: int, pooled_specs: Sequence[str], step_specs: Sequence[str],
                 budgets: Sequence[int]) -> dict[tuple[str, str, int], tuple[float, float]]:
    """Per action ``(kind, spec, budget)``: (expected correctness, expected generated tokens) on
    this problem given its probe of ``k`` pool samples."""
    M = len(pd.pool)
    probe = list(range(k))
    probe_tokens = _tokens(pd.pool, probe, None)
    task = pd.classes().task  # the task object the pool's answer classes were computed by
    out: dict[tuple[str, str, int], tuple[float, float]] = {("abstain", "-", k): (0.0, probe_tokens)}
    for label in pooled_specs:
        strat, opts, sc = resolve_spec(label, where="tune")
        scorer = sc.name if sc is not None and strat.wants_scorer(opts) else None
        if scorer and any(scorer not in s["scores"] for s in pd.pool):
            continue
        for N in [k] + [b for b in budgets if k < b <= M]:
            rest = list(range(k, M))
            m = N - k
            if math.comb(len(rest), m) <= SUBSETS:
                subsets = [tuple(c) for c in itertools.combinations(rest, m)]
            else:
                rng = make_rng("tune", pd.problem_id, k, N)
                subsets = [tuple(sorted(int(i) for i in rng.choice(rest, size=m, replace=False)))
                           for _ in range(SUBSETS)]
            correct, tokens = 0.0, 0.0
            for sub in subsets:
                idx = probe + list(sub)
                res = select_from(strat, _cands(pd.pool, idx, scorer), task, opts, answer_classes=pd.classes())
                correct += 1.0 if _is_correct(res.answer, pd) else 0.0
                tokens += _tokens(pd.pool, idx, scorer)
            kind = "answer" if N == k else "continue"
            out[(kind, label, N)] = (correct / len(subsets), tokens / len(subsets))
    for label in step_specs:
        for N, (c, t) in sorted(pd.steps.get(label, {}).items()):
            out[("continue", label, N)] = (c, probe_tokens + t)
    return out


# ---------------------------------------------------------------------------------------------
# Fitting one candidate (probe size, signal, bin count) on the tuning problems.


def _bin_bounds(values: Sequence[float], nbins: int) -> list[float]:
    """Lower bounds of bins 2..B: quantile cut points taken among the observed values (so a
    discrete signal is cut between its levels), distinct, increasing."""
    v = sorted(values)
    levels = sorted(set(v))
    if len(levels) <= nbins:  # a discrete signal with few levels: one bin per level
        return levels[1:]
    cuts = []
    for j in range(1, nbins):
        c = v[min(len(v) - 1, math.ceil(j * len(v) / nbins))]
        if c > v[0] and (not cuts or c > cuts[-1]):
            cuts.append(c)
    return cuts


def _bin_index(value: float, cuts: Sequence[float]) -> int:
    return sum(1 for c in cuts if value >= c)


_KIND_ORDER = {"abstain": 0, "answer": 1, "continue": 2}


def _frontier(options: list[tuple[float, float, Any]]) -> list[tuple[float, float, Any]]:
    """Pareto frontier of (tokens, correct, choice): increasing tokens, strictly increasing correct."""
    out: list[tuple[float, float, Any]] = []
    for t, c, ch in sorted(options, key=lambda o: (round(o[0], 9), -round(o[1], 9))):
        if not out or c > out[-1][1] + 1e-12:
            out.append((t, c, ch))
    return out


def _solve(bin_options: list[list[tuple[float, float, Any]]], objective: str, token_cap: float | None,
           target: float | None) -> list[Any]:
    """The per-bin choices maximising the objective over the product of the bins' options."""
    combined: list[tuple[float, float, tuple]] = [(0.0, 0.0, ())]
    for opts in bin_options:
        combined = _frontier([(t0 + t, c0 + c, ch0 + (ch,)) for t0, c0, ch0 in combined for t, c, ch in _frontier(opts)])
    feasible = [o for o in combined if token_cap is None or o[0] <= token_cap + 1e-9] or combined[:1]
    if objective == "tokens" and target is not None:
        ok = [o for o in feasible if o[1] >= target - 1e-9]
        if ok:
            return list(min(ok, key=lambda o: (o[0], -o[1]))[2])
    return list(max(feasible, key=lambda o: (round(o[1], 9), -o[0]))[2])


@dataclass
class Fitted:
    k: int
    signal: str
    nbins: int
    cuts: list[float]
    actions: list[tuple[str, str, int]]
    curves: list[list[dict[str, Any]]]
    tuning: list[dict[str, Any]]

    @property
    def name(self) -> str:
        return f"policy:probe={self.k},signal={self.signal},bins={self.nbins}"

    def scores(self, items: list[tuple[dict[str, float], dict]]) -> tuple[list[float], list[float]]:
        """Per-problem (correct, tokens) of this policy on ``items`` (signals, action table)."""
        correct, tokens = [], []
        for sig, table in items:
            a = self.actions[_bin_index(sig[self.signal], self.cuts)]
            c, t = table.get(a, table[("abstain", "-", self.k)])
            correct.append(c)
            tokens.append(t)
        return correct, tokens


def fit(items: list[tuple[dict[str, float], dict]], k: int, signal: str, nbins: int, objective: str,
        max_tokens: float | None, target: float | None) -> Fitted:
    """Fit one candidate on tuning ``items`` (each: the problem's signals and action table)."""
    cuts = _bin_bounds([sig[signal] for sig, _ in items], nbins)
    groups: list[list[dict]] = [[] for _ in range(len(cuts) + 1)]
    for sig, table in items:
        groups[_bin_index(sig[signal], cuts)].append(table)
    common = [set.intersection(*(set(t) for t in g)) if g else {("abstain", "-", k)} for g in groups]
    bin_options = []
    for g, acts in zip(groups, common):
        opts = []
        for a in sorted(acts, key=lambda a: (_KIND_ORDER[a[0]], a[2], a[1])):
            opts.append((sum(t[a][1] for t in g), sum(t[a][0] for t in g), a))
        bin_options.append(opts)
    n = len(items)
    actions = _solve(bin_options, objective, None if max_tokens is None else max_tokens * n,
                     None if target is None else target * n)
    # where nothing is ever right, abstain rather than answer
    actions = [("abstain", "-", k) if all(o[1] <= 0 for o in opts) else a for a, opts in zip(actions, bin_options)]
    curves, tuning = [], []
    for g, opts, a in zip(groups, bin_options, actions):
        m = max(1, len(g))
        pts = sorted(({"kind": o[2][0], "spec": o[2][1], "budget": o[2][2], "accuracy": o[1] / m,
                       "tokens": o[0] / m} for o in opts if o[2][0] != "abstain"),
                     key=lambda p: (p["tokens"], -p["accuracy"]))
        curves.append([pts[i] for i in _upper_hull(pts)])
        chosen = next(o for o in opts if o[2] == a) if g else (0.0, 0.0, a)
        tuning.append({"problems": len(g), "accuracy": chosen[1] / m, "tokens": chosen[0] / m})
    return Fitted(k=k, signal=signal, nbins=nbins, cuts=cuts, actions=actions, curves=curves, tuning=tuning)


# ---------------------------------------------------------------------------------------------
# The reusable holdout.


def thresholdout_parameters(n_train: int, n_holdout: int, conf: float = 0.95) -> dict[str, Any]:
    """Thresholdout's settings scaled to the split sizes, and the error its answers are stated with.

    For accuracies (scores in [0, 1]) the standard error of a holdout mean is at most
    ``se_h = 0.5 / sqrt(n_holdout)``, and of a train-minus-holdout difference at most
    ``se_d = 0.5 * sqrt(1/n_train + 1/n_holdout)``. Dwork et al. (2015) use T = 0.04 and
    sigma = 0.01 for n = 10,000, i.e. T = 8 se_h and sigma = 2 se_h; on holdouts of tens of
    problems that makes every answer the training value. We use ``threshold = 2 se_d`` (a
    train/holdout gap beyond chance at about 95%) and ``sigma = se_h / 4``, and allow
    ``budget = max(1, floor(sqrt(n_holdout)))`` overfitting detections. An answer is the training
    value only when it is within ``threshold + gamma + eta`` of the holdout value (gamma ~
    Lap(2 sigma), eta ~ Lap(4 sigma)), else the holdout value plus Lap(sigma); so its stated
    error at ``conf`` is ``error = threshold + z se_h + q(|gamma|) + q(|eta|)`` with ``q`` the
    Laplace ``conf`` quantile ``b ln(1/(1-conf))``."""
    if n_train < 1 or n_holdout < 1:
        raise ConfigError("holdout", f"needs problems on both sides (tuning {n_train}, holdout {n_holdout})",
                          "more problems, or another --holdout-fraction")
    se_h = 0.5 / math.sqrt(n_holdout)
    se_d = 0.5 * math.sqrt(1.0 / n_train + 1.0 / n_holdout)
    threshold, sigma = 2.0 * se_d, se_h / 4.0
    z = NormalDist().inv_cdf(0.5 + conf / 2)
    q = math.log(1.0 / (1.0 - conf))
    error = threshold + z * se_h + q * (2 * sigma + 4 * sigma)
    return {"threshold": threshold, "sigma": sigma, "budget": max(1, int(math.floor(math.sqrt(n_holdout)))),
            "error": error, "conf": conf, "n_train": n_train, "n_holdout": n_holdout}


def _query(to: metrics.Thresholdout, name: str) -> float | None:
    try:
        return to.query(name)
    except metrics.HoldoutExhausted:
        return None


# ---------------------------------------------------------------------------------------------
# The whole tuning.


def tune(store: Store, run_ids: Sequence[str], name: str, config: TuneConfig | None = None) -> dict[str, Any]:
    """Tune a policy from ``run_ids``; returns the policy as a dict (see :func:`save_policy`)."""
    cfg = config or TuneConfig()
    cfg.validate()
    problems, meta = load_problems(store, run_ids)
    M = meta["pool_size"]
    probes = [k for k in cfg.probes if k <= M]
    if not probes:
        raise ConfigError("probe", f"probe sizes {list(cfg.probes)} exceed the pool size {M}", f"sizes <= {M}")
    train_keys, hold_keys = metrics.holdout_split([p.key for p in problems], cfg.holdout_fraction, cfg.seed)
    train_set = set(train_keys)
    train = [p for p in problems if p.key in train_set]
    hold = [p for p in problems if p.key not in train_set]
    if not train or not hold:
        raise ConfigError("holdout", f"{len(problems)} problems split into {len(train)} tuning and {len(hold)} "
                          "holdout", "more problems (at least one on each side)")

    # fixed strategies: every stored (spec, budget) cell present for all problems
    fixed_names = sorted(set.intersection(*(set(p.fixed) for p in problems)))
    def fixed_scores(ps, f):
        return [p.fixed[f][0] for p in ps], [p.fixed[f][1] for p in ps]
    best_fixed = max(fixed_names, key=lambda f: (round(float(np.mean(fixed_scores(train, f)[0])), 9),
                                                 -float(np.mean(fixed_scores(train, f)[1])))) if fixed_names else None
    target = float(np.mean(fixed_scores(train, best_fixed)[0])) if best_fixed else None

    cands: list[Fitted] = []
    items_cache: dict[int, tuple[list, list]] = {}
    separation: list[dict[str, Any]] = []
    for k in probes:
        def items(ps):
            out = []
            for p in ps:
                sig = probe_signals(p, k, cfg.signals)
                table = action_table(p, k, meta["pooled_specs"], meta["step_specs"], meta["budgets"])
                out.append((sig, table))
            return out
        tr, ho = items(train), items(hold)
        items_cache[k] = (tr, ho)
        available = [s for s in cfg.signals if all(s in sig for sig, _ in tr + ho)]
        for s in available:
            separation.append(_separation(problems, k, s))
            for b in cfg.bins:
                cands.append(fit(tr, k, s, b, cfg.objective, cfg.max_tokens, target))
    if not cands:
        raise ConfigError("signals", "none can be computed from these runs", "runs with a pool scored as needed")

    # every holdout comparison through Thresholdout
    params = thresholdout_parameters(len(train), len(hold))
    train_scores, hold_scores, tok = {}, {}, {}
    for c in cands:
        tr, ho = items_cache[c.k]
        (ct, tt), (ch, th) = c.scores(tr), c.scores(ho)
        train_scores[c.name], hold_scores[c.name] = ct, ch
        tok[c.name] = (float(np.mean(tt)), float(np.mean(th)))
    for f in fixed_names:
        (ct, tt), (ch, th) = fixed_scores(train, f), fixed_scores(hold, f)
        train_scores["fixed:" + f], hold_scores["fixed:" + f] = ct, ch
        tok["fixed:" + f] = (float(np.mean(tt)), float(np.mean(th)))
    to = metrics.Thresholdout(train_scores, hold_scores, threshold=params["threshold"], sigma=params["sigma"],
                              budget=params["budget"], seed=cfg.seed)
    fixed_answer = _query(to, "fixed:" + best_fixed) if best_fixed else None
    # the analyst's proposals, best first on the tuning split; the holdout (through Thresholdout)
    # vets them in that order: the first not detectably worse than the best fixed strategy
    # (answer >= the fixed strategy's answer - threshold) is chosen
    def rank(c: Fitted):
        acc_t = round(float(np.mean(train_scores[c.name])), 9)
        if cfg.objective == "tokens":
            return (0 if target is None or acc_t >= round(target, 9) else 1, tok[c.name][0], -acc_t)
        return (-acc_t, tok[c.name][0])
    answers: dict[str, float | None] = {c.name: None for c in cands}
    chosen = None
    for c in sorted(cands, key=rank):
        answers[c.name] = _query(to, c.name)
        if answers[c.name] is None:  # the holdout's budget is spent: no further candidate can be vetted
            break
        if fixed_answer is None or answers[c.name] >= fixed_answer - params["threshold"]:
            chosen = c
            break
    if chosen is None:
        vetted = [c for c in cands if answers[c.name] is not None]
        chosen = max(vetted, key=lambda c: answers[c.name]) if vetted else min(cands, key=rank)
    acc = answers[chosen.name]
    if acc is None:
        acc = float(np.mean(train_scores[chosen.name]))  # the holdout was closed: the training value
    n_h = len(hold)

    def figure(name: str, value: float | None) -> dict[str, Any]:
        v = value if value is not None else float(np.mean(train_scores[name]))
        v = min(max(v, 0.0), 1.0)  # Thresholdout's Laplace noise can step outside [0, 1]
        lo, hi = metrics.wilson_interval(v * n_h, n_h)
        return {"accuracy": v, "wilson95": [lo, hi], "thresholdout_error": params["error"],
                "tokens": tok[name][1], "tuning_accuracy": float(np.mean(train_scores[name])),
                "tuning_tokens": tok[name][0]}

    # the final look, after every choice is made (it decides nothing): the chosen policy against
    # the best fixed strategy on the holdout's problems, paired
    final = None
    if best_fixed:
        a, b = hold_scores[chosen.name], hold_scores["fixed:" + best_fixed]
        cmp = metrics.paired_comparison(a, b)
        final = {"policy_accuracy": cmp["mean_a"], "best_fixed_accuracy": cmp["mean_b"], "diff": cmp["diff"],
                 "interval95": cmp["interval"], "p_value": cmp["p_value"], "test": cmp["test"],
                 "policy_tokens": tok[chosen.name][1], "best_fixed_tokens": tok["fixed:" + best_fixed][1],
                 "tokens_ratio": (tok[chosen.name][1] / tok["fixed:" + best_fixed][1]
                                  if tok["fixed:" + best_fixed][1] > 0 else None)}

    bins = []
    bounds = [None] + chosen.cuts + [None]
    for i, a in enumerate(chosen.actions):
        action = {"kind": a[0], "spec": a[1] if a[0] != "abstain" else "majority", "budget": a[2]}
        bins.append({"lo": bounds[i], "hi": bounds[i + 1], "action": action, "curve": chosen.curves[i],
                     "tuning": chosen.tuning[i]})
    policy = {
        "format": FORMAT, "version": VERSION, "name": name, "model": meta["model"],
        "created": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "datasets": meta["datasets"], "runs": meta["runs"], "sampling": meta["params"],
        "objective": cfg.objective, "max_tokens": cfg.max_tokens,
        "probe": {"samples": chosen.k}, "signal": chosen.signal, "bins": bins,
        "split": {"seed": cfg.seed, "holdout_fraction": cfg.holdout_fraction, "tuning": len(train), "holdout": n_h,
                  "pool_size": M},
        "holdout": {"problems": n_h, "policy": figure(chosen.name, answers[chosen.name]),
                    "best_fixed": ({"spec": best_fixed, **figure("fixed:" + best_fixed, fixed_answer)}
                                   if best_fixed else None),
                    "final": final},
        "thresholdout": {**params, "queries": len(to.log), "holdout_used": sum(e["holdout_used"] for e in to.log),
                         "remaining": to.remaining},
        "candidates": [{"name": c.name, "probe": c.k, "signal": c.signal, "bins": len(c.cuts) + 1,
                        "tuning_accuracy": float(np.mean(train_scores[c.name])), "tuning_tokens": tok[c.name][0],
                        "thresholdout_accuracy": answers[c.name]} for c in cands],
        "signals": separation,
    }
    Policy.from_dict(policy, path=f"(tuned {name})", name=name)  # what we write, we can read
    return policy


def _separation(problems: list[ProblemData], k: int, signal: str) -> dict[str, Any]:
    """How well the signal on the probe predicts difficulty: Spearman's rank correlation with
    the share of right answers among the *other* pool samples (k..M-1), over all problems."""
    from scipy import stats  # noqa: PLC0415

    xs, ys = [], []
    for p in problems:
        sig = probe_signals(p, k, [signal])
        rest = p.pool[k:]
        if signal not in sig or not rest:
            continue
        xs.append(sig[signal])
        ys.append(sum(bool(s["correct"]) for s in rest) / len(rest))
    rho = None
    if len(xs) >= 3 and len(set(xs)) > 1 and len(set(ys)) > 1:
        rho = float(stats.spearmanr(xs, ys).statistic)
    return {"probe": k, "signal": signal, "problems": len(xs), "spearman": rho}


def save_policy(policy: dict[str, Any], out: str) -> Path:
    """Write ``policy`` as ``INFSCALE_HOME/policies/OUT.json`` (or to ``OUT`` if it is a .json path)."""
    if out.endswith(".json") or "/" in out:
        path = Path(out).expanduser()
        path.parent.mkdir(parents=True, exist_ok=True)
    else:
        if not out.replace("-", "").replace("_", "").replace(".", "").isalnum():
            raise ConfigError("out", f"{out!r} is not a policy name", "letters, digits, '-', '_', '.', or a .json path")
        path = subdir("policies") / f"{out}.json"
    path.write_text(json.dumps(policy, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return path
