"""Compute policies: which strategy and budget to spend on a query, read from a cheap probe.

A policy is a versioned JSON file written by ``infscale tune`` (:mod:`infscale.evaluation.tune`)
and read by the ``auto`` strategy (:mod:`infscale.strategies.auto`). It says:

* the **probe**: the first ``k`` independent samples of the question (sample ``i`` seeded by
  ``(seed, problem id, i)``, exactly the samples every sample-level strategy draws first);
* the **signal** computed from the probe (:data:`SIGNALS`; larger = the model finds the
  question easier), and **bins** over it (``lo <= value < hi``; ``null`` is unbounded);
* per bin an **action**: ``answer`` (vote over the probe now), ``abstain`` (nothing the policy
  can buy helps in this bin), or ``continue`` with a strategy spec ``NAME[:key=value,...]`` and
  a budget (its ``--n``): sample-level specs draw samples ``k..budget-1`` and choose over all of
  them, step-level specs search afresh with ``n = budget``;
* per bin the ``curve``: the upper convex hull of (mean generated tokens, accuracy) over the
  actions measured on the tuning problems, which batch allocation
  (:func:`infscale.strategies.auto.allocate`) walks;
* where it came from: the model, datasets and runs it was tuned on, and the holdout figures.

Policies are looked up by name in ``INFSCALE_HOME/policies/NAME.json``, then among the
policies shipped in the package (``infscale/policies/``); a path ending in ``.json`` is read as
it is. Without a name, the policy named after the generator's model is used. Every problem
with a file is a one-line :class:`~infscale.errors.ConfigError` naming the file.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..home import subdir
from ..types import Candidate

__all__ = ["Policy", "Bin", "Action", "SIGNALS", "FORMAT", "VERSION", "load_policy", "policy_path",
           "packaged_policies_dir", "signal_value", "parse_spec"]

FORMAT = "infscale-policy"
VERSION = 1
ACTIONS = ("answer", "abstain", "continue")


def _agreement(cands: Sequence[Candidate], classes: Sequence[int | None], passed: Sequence[bool] | None) -> float:
    """Share of the probe's samples in its largest answer class (unanswered samples agree with
    nothing): 1 when every sample gives the same answer."""
    ids = [c for c in classes if c is not None]
    if not cands:
        return 0.0
    return max((ids.count(k) for k in set(ids)), default=0) / len(cands)


def _confidence(cands: Sequence[Candidate], classes: Sequence[int | None], passed: Sequence[bool] | None) -> float:
    """Mean over the probe's samples of their mean token log-probability (the model's confidence)."""
    if not cands:
        return -math.inf
    return float(sum(c.mean_logprob for c in cands) / len(cands))


def _check(cands: Sequence[Candidate], classes: Sequence[int | None], passed: Sequence[bool] | None) -> float:
    """Share of the probe's samples whose every computation and final answer the ``arith-check``
    verifier accepts (outcome log-score 0)."""
    if not cands or passed is None:
        return 0.0
    return sum(bool(p) for p in passed) / len(cands)


def _agreement_check(cands, classes, passed) -> float:
    """Agreement plus verified share, halved: both must be high for a high value."""
    return 0.5 * (_agreement(cands, classes, passed) + _check(cands, classes, passed))


# name -> (function, needs the arith-check scores of the probe)
SIGNALS: dict[str, tuple[Any, bool]] = {
    "agreement": (_agreement, False),
    "confidence": (_confidence, False),
    "check": (_check, True),
    "agreement+check": (_agreement_check, True),
}


def signal_value(name: str, cands: Sequence[Candidate], classes: Sequence[int | None],
                 passed: Sequence[bool] | None = None) -> float:
    """The probe signal ``name`` of probe candidates ``cands``; ``classes`` are their answer
    class ids (``None`` for no answer), ``passed`` whether ``arith-check`` accepts each one."""
    fn, _ = SIGNALS[name]
    return float(fn(cands, classes, passed))


def parse_spec(text: str) -> tuple[str, dict[str, str], str | None]:
    """``NAME[:key=value,...]`` -> (name, settings, scorer); ``scorer=`` is taken out."""
    name, _, rest = str(text).strip().partition(":")
    given: dict[str, str] = {}
    for item in filter(None, (s.strip() for s in rest.split(","))):
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise ValueError(f"expected key=value in {text!r}, got {item!r}")
        given[key.strip()] = value.strip()
    scorer = given.pop("scorer", None)
    return name.strip(), given, scorer


@dataclass(frozen=True)
class Action:
    """What a bin does: ``answer`` (vote over the probe), ``abstain``, or ``continue`` with
    ``spec`` at ``budget``."""

    kind: str
    spec: str = "majority"
    budget: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "spec": self.spec, "budget": self.budget}


@dataclass(frozen=True)
class Bin:
    lo: float | None
    hi: float | None
    action: Action
    curve: tuple[dict[str, Any], ...] = ()
    tuning: dict[str, Any] | None = None

    def holds(self, value: float) -> bool:
        return (self.lo is None or value >= self.lo) and (self.hi is None or value < self.hi)


@dataclass
class Policy:
    """A loaded, validated policy file (see the module docstring)."""

    name: str
    path: str
    model: str
    probe: int
    signal: str
    bins: list[Bin]
    data: dict[str, Any]

    def bin_of(self, value: float) -> int:
        for i, b in enumerate(self.bins):
            if b.holds(value):
                return i
        return len(self.bins) - 1  # NaN: the last bin (validated bins cover the line)

    def specs(self) -> list[str]:
        return sorted({b.action.spec for b in self.bins if b.action.kind == "continue"}
                      | {p["spec"] for b in self.bins for p in b.curve if p.get("kind") == "continue"})

    @classmethod
    def from_dict(cls, data: Any, *, path: str, name: str) -> "Policy":
        def bad(what: str) -> ConfigError:
            return ConfigError("policy", f"{path}: {what}",
                               f"a policy file written by `infscale tune` ({FORMAT} version {VERSION})")

        if not isinstance(data, dict):
            raise bad("is not a JSON object")
        if data.get("format") != FORMAT:
            raise bad(f"format is {data.get('format')!r}, not {FORMAT!r}")
        if data.get("version") != VERSION:
            raise bad(f"version {data.get('version')!r} is not supported")
        model = data.get("model")
        if not isinstance(model, str) or not model:
            raise bad("has no model")
        probe = data.get("probe", {})
        k = probe.get("samples") if isinstance(probe, dict) else None
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise bad(f"probe.samples is {k!r}, not an integer >= 1")
        signal = data.get("signal")
        if signal not in SIGNALS:
            raise bad(f"signal is {signal!r}, not one of {', '.join(SIGNALS)}")
        raw_bins = data.get("bins")
        if not isinstance(raw_bins, list) or not raw_bins:
            raise bad("has no bins")
        bins = []
        for i, b in enumerate(raw_bins):
            if not isinstance(b, dict) or not isinstance(b.get("action"), dict):
                raise bad(f"bin {i} has no action")
            lo, hi = b.get("lo"), b.get("hi")
            for v in (lo, hi):
                if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
                    raise bad(f"bin {i} has a bound {v!r} that is not a number or null")
            a = b["action"]
            kind = a.get("kind")
            if kind not in ACTIONS:
                raise bad(f"bin {i} action kind is {kind!r}, not one of {', '.join(ACTIONS)}")
            budget = a.get("budget", k)
            if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
                raise bad(f"bin {i} budget is {budget!r}, not an integer >= 1")
            spec = a.get("spec", "majority")
            if not isinstance(spec, str):
                raise bad(f"bin {i} spec is {spec!r}, not a string")
            bins.append(Bin(lo=lo, hi=hi, action=Action(kind, spec, budget),
                            curve=tuple(p for p in b.get("curve", []) if isinstance(p, dict)), tuning=b.get("tuning")))
        if bins[0].lo is not None or bins[-1].hi is not None or any(
                a.hi is None or b.lo is None or a.hi != b.lo for a, b in zip(bins, bins[1:])):
            raise bad("bins do not cover the signal's range in order (first lo and last hi null, each hi = next lo)")
        return cls(name=name, path=path, model=model, probe=k, signal=signal, bins=bins, data=data)


def packaged_policies_dir() -> Path:
    """The policies shipped with the package (``make policy`` writes the embedded model's)."""
    return Path(__file__).resolve().parent.parent / "policies"


def policy_path(name: str) -> Path:
    """Where the policy ``name`` lives: a ``.json`` path as given; else
    ``INFSCALE_HOME/policies/NAME.json`` unless only a shipped policy of that name exists."""
    if name.endswith(".json") or "/" in name:
        return Path(name).expanduser()
    if not name.replace("-", "").replace("_", "").replace(".", "").isalnum():
        raise ConfigError("policy", f"{name!r} is not a policy name", "letters, digits, '-', '_', '.', or a path to a .json file")
    own = subdir("policies") / f"{name}.json"
    shipped = packaged_policies_dir() / f"{name}.json"
    return shipped if not own.exists() and shipped.exists() else own


def load_policy(name: str | None, model: str | None) -> Policy:
    """The policy ``name`` (default: the one named after ``model``), checked against ``model``."""
    if not name:
        if not model:
            raise ConfigError("policy", "none given and the generator does not name its model",
                              "--policy NAME (or param policy=NAME)")
        name = model
        path = policy_path(name)
        if not path.exists():
            raise ConfigError("policy", f"no policy for model {model!r} ({path} does not exist)",
                              f"tune one with `infscale tune RUN_ID --out {model}` or name one with --policy NAME")
    else:
        path = policy_path(name)
        if not path.exists():
            raise ConfigError("policy", f"{path} does not exist (nor is {name!r} a shipped policy)",
                              "a policy name under INFSCALE_HOME/policies (written by `infscale tune --out NAME`) "
                              "or a path to a policy .json file")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError("policy", f"{path}: cannot be read ({e.__class__.__name__})",
                          "a readable policy .json file") from None
    except json.JSONDecodeError as e:
        raise ConfigError("policy", f"{path}: is not valid JSON (line {e.lineno}: {e.msg})",
                          "a policy file written by `infscale tune`") from None
    policy = Policy.from_dict(data, path=str(path), name=Path(path).stem)
    if model and policy.model != model:
        raise ConfigError("policy", f"{path} was tuned for model {policy.model!r}, not {model!r}",
                          f"a policy tuned on {model!r} runs (`infscale tune RUN_ID --out NAME`)")
    return policy
