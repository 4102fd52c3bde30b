"""``infscale tune``: learn a compute policy for the ``auto`` strategy from stored runs.

::

    infscale tune RUN_ID [RUN_ID...] --out NAME [--objective accuracy|tokens] [--max-tokens T]
                  [--probe 2,4] [--bins 1,2,3] [--signals agreement,confidence,check,...]
                  [--holdout-fraction 0.5] [--seed 0] [--db PATH] [--json]

Writes ``INFSCALE_HOME/policies/NAME.json`` (or NAME if it is a .json path) and prints the
policy's bins and its holdout figures; ``infscale ask --strategy auto --policy NAME`` uses it.
The method is in :mod:`infscale.evaluation.tune` and docs/compute-optimal.md.
"""

from __future__ import annotations

import json

from ..errors import ConfigError

__all__ = ["register", "run", "describe"]


def _ints(text: str, what: str) -> tuple[int, ...]:
    try:
        out = tuple(int(x) for x in str(text).split(",") if x.strip())
    except ValueError:
        raise ConfigError(what, f"cannot read {text!r}", "comma-separated integers, e.g. 1,2,3") from None
    if not out:
        raise ConfigError(what, "none given", "comma-separated integers, e.g. 1,2,3")
    return out


def register(sub) -> None:
    from ._runs import add_db_argument  # noqa: PLC0415

    p = sub.add_parser("tune", help="learn a compute policy for `auto` from stored eval runs",
                       description="Split the runs' problems into tuning and holdout parts, bin them by a probe's "
                                   "difficulty signal, choose per bin the strategy and budget that maximise the "
                                   "objective (holdout comparisons through Thresholdout), write the policy.")
    p.add_argument("runs", nargs="+", metavar="RUN_ID", help="eval runs of one model with a sample pool")
    p.add_argument("--out", required=True, metavar="NAME", help="policy name (INFSCALE_HOME/policies/NAME.json) or a .json path")
    p.add_argument("--objective", default="accuracy", help="accuracy (maximise it) or tokens (fewest tokens that "
                   "match the best fixed strategy's tuning accuracy)")
    p.add_argument("--max-tokens", type=float, default=None, metavar="T",
                   help="cap on the mean generated tokens per problem")
    p.add_argument("--probe", default="2,4", help="probe sizes to try (default 2,4)")
    p.add_argument("--bins", default="1,2,3", help="bin counts to try (default 1,2,3)")
    p.add_argument("--signals", default=None, help="signals to try (default all: agreement, confidence, check, "
                   "agreement+check)")
    p.add_argument("--holdout-fraction", type=float, default=0.5)
    p.add_argument("--seed", type=int, default=0, help="seed of the split and of Thresholdout's noise")
    p.add_argument("--json", action="store_true", help="print the policy as JSON")
    add_db_argument(p)
    p.set_defaults(handler=run)


def describe(policy: dict) -> str:
    """The policy as a few lines of text."""
    lines = [f"policy {policy['name']} for {policy['model']} (objective {policy['objective']}; "
             f"probe {policy['probe']['samples']} samples, signal {policy['signal']})"]
    for i, b in enumerate(policy["bins"]):
        lo = "-inf" if b["lo"] is None else f"{b['lo']:.3g}"
        hi = "inf" if b["hi"] is None else f"{b['hi']:.3g}"
        a = b["action"]
        what = {"abstain": "abstain", "answer": f"answer now ({a['spec']} over the probe)"}.get(
            a["kind"], f"{a['spec']} at budget {a['budget']}")
        t = b.get("tuning") or {}
        lines.append(f"  bin {i}: {lo} <= {policy['signal']} < {hi}: {what}"
                     + (f"   [tuning: {t['problems']} problems, accuracy {t['accuracy']:.3f}, "
                        f"{t['tokens']:.1f} tokens]" if t else ""))
    h = policy.get("holdout") or {}
    split = policy.get("split") or {}
    if h:
        p = h["policy"]
        lines.append(f"holdout ({h['problems']} problems; tuning {split.get('tuning')}): accuracy {p['accuracy']:.3f} "
                     f"[Wilson 95% {p['wilson95'][0]:.3f}, {p['wilson95'][1]:.3f}] (Thresholdout, stated error "
                     f"{p['thresholdout_error']:.3f}), {p['tokens']:.1f} generated tokens per problem")
        f = h.get("best_fixed")
        if f:
            lines.append(f"best fixed strategy on tuning: {f['spec']}: holdout accuracy {f['accuracy']:.3f} "
                         f"[{f['wilson95'][0]:.3f}, {f['wilson95'][1]:.3f}], {f['tokens']:.1f} tokens per problem")
        fin = h.get("final")
        if fin:
            ratio = "" if fin["tokens_ratio"] is None else f", tokens ratio {fin['tokens_ratio']:.2f}"
            lines.append(f"final look at the holdout (decides nothing): policy - best fixed = {fin['diff']:+.3f} "
                         f"[95% {fin['interval95'][0]:+.3f}, {fin['interval95'][1]:+.3f}] ({fin['test']} "
                         f"p={fin['p_value']:.3g}); accuracy {fin['policy_accuracy']:.3f} vs "
                         f"{fin['best_fixed_accuracy']:.3f}{ratio}")
    to = policy.get("thresholdout") or {}
    if to:
        lines.append(f"Thresholdout: threshold {to['threshold']:.3f}, sigma {to['sigma']:.4f}, budget {to['budget']}; "
                     f"{to['queries']} queries, {to['holdout_used']} answered from the holdout")
    sep = [s for s in policy.get("signals", []) if s.get("spearman") is not None]
    if sep:
        lines.append("signal vs the other samples' accuracy (Spearman): " + ", ".join(
            f"{s['signal']}@{s['probe']} {s['spearman']:+.2f}" for s in sep))
    return "\n".join(lines)


def run(args) -> int:
    from ..evaluation.tune import TuneConfig, save_policy, tune  # noqa: PLC0415
    from ._runs import open_store  # noqa: PLC0415

    signals = tuple(s.strip() for s in args.signals.split(",") if s.strip()) if args.signals else None
    cfg = TuneConfig(objective=args.objective, max_tokens=args.max_tokens, probes=_ints(args.probe, "probe"),
                     bins=_ints(args.bins, "bins"), holdout_fraction=args.holdout_fraction, seed=args.seed,
                     **({"signals": signals} if signals else {}))
    cfg.validate()
    store = open_store(args)
    try:
        policy = tune(store, args.runs, args.out.removesuffix(".json").rsplit("/", 1)[-1], cfg)
    finally:
        store.close()
    path = save_policy(policy, args.out)
    if args.json:
        print(json.dumps({**policy, "path": str(path)}, ensure_ascii=False))
    else:
        print(describe(policy))
        print(f"policy written to {path}")
    return 0
