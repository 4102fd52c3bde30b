"""The named step-level strategies: each a configuration of the search core's four policies.

``cost`` states what ``--n`` buys, against n independent samples of the same problem (whose
generated tokens are about n times one solution's, i.e. n children per step of depth).
"""

from __future__ import annotations

from .core import ParticleGibbs, SearchConfig, SearchStrategy
from .tree import Backup, MostVisited, ThompsonExpand, TreeValue, UCTExpand
from .policies import (Beams, BestNode, BestTrajectory, EachLive, Frontier, GumbelTopK, KeepAll, Mixed, PathPriority,
                       Potential, Rank, Rebase, Resample, SubtreeTop, TopK, WeightedVote)
from .policies import Foresight, Gated, MomentumGate, PhiBeams, PhiSelect

__all__ = ["SEARCH_STRATEGIES"]

_PARTICLES = "n particles, one child each per step: about n samples' tokens"

particle_filter = SearchStrategy(
    "particle-filter",
    "particle filtering: weights exp(step score / T), multinomial resampling every step, weighted vote",
    SearchConfig(expand=EachLive(1), weigh=Potential(), select=Resample("multinomial"), finish=WeightedVote("logw")),
    doc="Particle filtering over reasoning steps (Puri et al. 2025, 'A Probabilistic Inference Approach to "
        "Inference-Time Scaling of LLMs using Particle-Based Monte Carlo Methods'). n particles; each step "
        "extends every live particle by one step, multiplies its weight by exp(s_t / T) with s_t the process "
        "scorer's log-score of the step, and resamples (multinomial by default). Finished particles keep their "
        "weights; the answer is the weighted vote of the final population. exp(info.log_z) is an unbiased "
        "estimate of the tempered target's normalising constant.",
    cost=_PARTICLES)

importance_sampling = SearchStrategy(
    "importance-sampling",
    "n independent trajectories weighted by prod exp(step score / T); weighted vote (no resampling)",
    SearchConfig(expand=EachLive(1), weigh=Potential(), select=Resample(None), finish=WeightedVote("logw")),
    doc="Self-normalised importance sampling with the model as proposal: n independent trajectories, each "
        "weighted by prod_t exp(s_t / T); the answer is the weighted vote. exp(info.log_z), the mean weight, is "
        "an unbiased estimate of the normalising constant.",
    cost="n independent trajectories: exactly n samples' tokens")

smc = SearchStrategy(
    "smc",
    "sequential Monte Carlo: systematic resampling only when ESS < half of n",
    SearchConfig(expand=EachLive(1), weigh=Potential(), select=Resample("systematic", ess=0.5),
                 finish=WeightedVote("logw")),
    doc="Sequential Monte Carlo with adaptive resampling (Del Moral, Doucet, Jasra 2012): like the particle "
        "filter, but the population is resampled (systematic scheme) only when its Kish effective sample size "
        "falls below ess_threshold * n. exp(info.log_z) is an unbiased estimate of the normalising constant.",
    cost=_PARTICLES)

particle_gibbs = ParticleGibbs(
    "particle-gibbs",
    "particle Gibbs: conditional particle filters that keep a reference path across iterations",
    SearchStrategy("particle-gibbs", "one sweep of particle Gibbs",
                   SearchConfig(expand=EachLive(1), weigh=Potential(), select=Resample("multinomial"),
                                finish=WeightedVote("logw"))),
    cost="`iterations` particle filters of n particles: about iterations x n samples' tokens (default 2x)")

beam_search = SearchStrategy(
    "beam-search",
    "beam search: n children per step shared by n/width beams, the best n/width kept",
    SearchConfig(expand=Beams(), weigh=Rank(), select=TopK(), finish=BestTrajectory()),
    doc="Beam search with a process reward (Snell et al. 2024; Beeching et al. 2024, search-and-learn): n / "
        "width beams each get `width` sampled children (the first step: n children of the prompt), the n / "
        "width best children by aggregated step score survive, finished beams are set aside; the answer is the "
        "best finished beam.",
    cost="n children per step (n / width beams of width): about n samples' tokens")

dvts = SearchStrategy(
    "dvts",
    "diverse verifier tree search: n/width independent subtrees, each keeps its best child",
    SearchConfig(expand=EachLive("width"), weigh=Rank(), select=SubtreeTop(), finish=WeightedVote("priority")),
    doc="DVTS (Beeching, Tunstall, Rush 2024, 'Scaling test-time compute with open models'): the n children "
        "of a step are split into n / width subtrees searched greedily and independently with the process "
        "scorer (each keeps its best of `width` children); the answer is the score-weighted vote of the "
        "subtrees' solutions.",
    cost="n / width subtrees of width children per step: about n samples' tokens")

rebase = SearchStrategy(
    "rebase",
    "REBASE: each depth's n expansions shared out by softmax(reward / T) over the frontier",
    SearchConfig(expand=Rebase(), weigh=Rank(), select=KeepAll(), finish=WeightedVote("priority")),
    doc="REBASE (Wu et al. 2024, 'Inference Scaling Laws'): a tree whose expansion budget at each depth (n "
        "minus the solutions found) is allocated to frontier nodes in proportion to softmax(R / T), R = "
        "exp(score) the process scorer's probability for the node; nodes allocated nothing are pruned. "
        "Answer: the score-weighted vote of the solutions.",
    cost="n children per step, fewer as solutions are found: at most n samples' tokens")

best_first = SearchStrategy(
    "best-first",
    "best-first search: expand the highest-priority frontier node (width children), stop when a solution is best",
    SearchConfig(expand=BestNode(), weigh=PathPriority(), select=Frontier(), finish=BestTrajectory()),
    doc="Best-first search in the spirit of A*-decoding (Chatziveroglou 2025): a priority queue of partial "
        "solutions ordered by a depth-fair path score (mean or last step score) or, with priority=astar, "
        "g + h; each step expands the first node of the queue with `width` sampled children; the search ends "
        "when the first node of the queue is a solution (the goal test at the pop) or after n expansions. "
        "Ties go to the deeper node, then to the model's more confident path.",
    cost="at most n expansions of width children; stops at the first solution popped, so it often spends less "
         "(the exception to the 0.5x-2x band: ending as soon as the answer is found is the algorithm)")

self_eval_beam = SearchStrategy(
    "self-eval-beam",
    "self-evaluation guided stochastic beam search: n/width beams drawn by exp(score / tau), tau decays",
    SearchConfig(expand=Beams(), weigh=Mixed(), select=GumbelTopK(), finish=BestTrajectory()),
    doc="Self-evaluation guided stochastic beam search (Xie et al. 2023): each beam gets `width` children; a "
        "child's score mixes the step's mean token log-probability under the model with the self-evaluation "
        "log-score (weight `mix`), and the next n / width beams are drawn without replacement with probability "
        "∝ exp(score / tau) (Gumbel top-k); tau decays by `tau_decay` each step.",
    default_scorer="self-eval",
    cost="n children per step (n / width beams of width): about n samples' tokens")

# -- uncertainty-gated and foresight step search (issue 13) -----------------------------------------

mur = SearchStrategy(
    "mur",
    "MUR: one path; a step more uncertain than the momentum threshold is re-drawn n times and the best kept",
    SearchConfig(expand=Gated(), weigh=Rank(), select=MomentumGate(), finish=BestTrajectory()),
    doc="Momentum uncertainty-guided reasoning (Yan et al. 2025, 'MUR: Momentum Uncertainty guided Reasoning for "
        "Large Language Models'). One path decoded step by step. A step's uncertainty u_t is the mean negative "
        "token log-probability of the step; the momentum uncertainty is M_t = alpha M_(t-1) + (1 - alpha) u_t "
        "(M_0 = 0). From step 2 on, a step with u_t > M_(t-1) - log(gamma) (the paper's exp(u_t) > exp(M_(t-1)) / "
        "gamma) is searched: it and n - 1 more samples of that step are scored by the process scorer and the best "
        "is kept (its uncertainty enters the momentum); any other step is kept as sampled. Weights: none (the path "
        "is ranked by the scorer's step log-score only among a searched step's candidates). info.searched_steps, "
        "info.steps_searched and info.thresholds (None for step 1) report the gate.",
    cost="one path; a searched step costs n candidate steps (the sampled one among them), any other one: between "
         "1 and n samples' tokens, the share of steps searched deciding (the exception to the 0.5x-2x band: "
         "spending only where the model is unsure is the algorithm)")

phi_decoding = SearchStrategy(
    "phi-decoding",
    "φ-decoding: candidate steps valued by foresight rollouts (advantage + cluster alignment), pruned in width and depth",
    SearchConfig(expand=PhiBeams(), weigh=Foresight(), select=PhiSelect(), finish=WeightedVote("logw")),
    doc="φ-decoding, adaptive foresight sampling (Xu et al. 2025, 'φ-Decoding: Adaptive Foresight Sampling for "
        "Balanced Inference-Time Exploration and Exploitation'). B beams of k candidate steps each; in-width "
        "pruning drops candidates whose step log-prob is below mean - sigma * std; each kept candidate is valued "
        "by a foresight rollout of `foresight` steps forked from its KV sequence: F = the rollout's mean token "
        "log-prob, advantage A = F - the beam's previous F. Candidates with A > 0 are clustered (TF-IDF, k-means) "
        "by their rollouts and B are drawn without replacement from the mean of softmax(A / tau) and softmax(cluster "
        "share); in-depth pruning stops the foresight once the largest cluster holds more than `consensus` of the "
        "candidates (after `min_foresight` rounds) and the beams finish alone. Answer: the vote of the B beams. "
        "Weights: none (every beam counts once); no scorer is called.",
    default_scorer=None,
    cost="C = n // (1 + foresight) candidate steps per round (B = C // width beams of width), each kept one plus a "
         "foresight of up to `foresight` steps: at most about n samples' tokens, less after pruning in width and "
         "depth and where rollouts reach the answer")

# -- tree search (issue 15): MCTS and AB-MCTS ------------------------------------------------------

_TREE_COST = ("n simulations, each one solution forked from the tree, stopping early once the tree has generated n "
              "times the mean length of its solutions (or holds n x max_steps nodes): at most about n samples' tokens, "
              "usually less (prefixes are shared)")

mcts = SearchStrategy(
    "mcts",
    "MCTS over steps: UCT selection, rollouts forking the kept sequences, answer of the most-visited path",
    SearchConfig(expand=UCTExpand(), weigh=TreeValue(), select=Backup(width=True), finish=MostVisited()),
    doc="Monte Carlo tree search over reasoning steps (UCT: Kocsis and Szepesvari 2006; for LLM reasoning e.g. "
        "Hao et al. 2023, RAP). A simulation descends from the root by UCT (Q + c sqrt(ln N / N_child)) to a node "
        "with fewer than `width` children, samples a new child step there (forking the node's kept KV sequence) "
        "and rolls out from it to the end of the solution, one step per round and each step a tree node; the "
        "value of the solution, the process scorer's probability for its path (exp of the `aggregate`d step "
        "log-scores, min by default), is backed up to the root (visit counts, mean values). A solution reached "
        "again by selection has its value backed up again. `parallel` simulations run together with virtual "
        "loss. The answer is the solution at the end of the most-visited path (the robust-child rule at every "
        "level: visit counts are steadier than mean values, which one lucky rollout can top); the distribution "
        "weighs solutions by visits.",
    cost=_TREE_COST)

ab_mcts = SearchStrategy(
    "ab-mcts",
    "AB-MCTS: Thompson sampling at each node between a new child (wider) and an existing one (deeper)",
    SearchConfig(expand=ThompsonExpand(), weigh=TreeValue(), select=Backup(), finish=BestTrajectory()),
    doc="Adaptive-branching MCTS (Inoue et al. 2025, 'Wider or Deeper? Scaling LLM Inference-Time Compute with "
        "Adaptive Branching Tree Search'), the node-aggregation variant AB-MCTS-A, over reasoning steps: MCTS "
        "whose fixed width and UCT are replaced by Thompson sampling. A simulation descends from the root; each "
        "node chooses between GEN, a new child step (wider; posterior over the scores of the solutions that "
        "created its children), and CONT, an existing unfinished child (deeper; posterior over the scores of the "
        "later solutions found below its children), the child again by Thompson sampling over the solutions "
        "below it. The node where GEN wins gets a new child (forking its kept KV sequence) and a rollout from it "
        "runs to the end of the solution, each step a tree node, so every simulation yields a complete, scored "
        "solution — the paper's unit (there, a node is a whole answer and going deeper refines it). Scores are "
        "the process scorer's probability for the solution (exp of the `aggregate`d step log-scores); the "
        "posterior is Beta (Jeffreys prior) or Gaussian. The answer is the best-scored solution, as in the paper.",
    cost=_TREE_COST)

SEARCH_STRATEGIES = {s.name: s for s in [particle_filter, importance_sampling, smc, particle_gibbs, beam_search, dvts,
                                         rebase, best_first, self_eval_beam, mur, phi_decoding, mcts, ab_mcts]}
