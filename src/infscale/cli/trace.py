"""``infscale trace show FILE``: print a search trace (``infscale ask --trace FILE``) as a tree.

A trace is JSON lines: a ``run`` header, one ``step`` record per search step (the nodes it
created with their parent, step text, tokens, score, log-weight and finish reason, plus the
resampling decisions: ancestors, copies, ESS, allocations, kept beams; tree searches add the
nodes they expanded, the visit counts and mean values their backups changed (``tree``:
``[id, visits, value]``), solutions re-evaluated (``revisits``) and AB-MCTS's wider/deeper
draws (``decisions``)), and a ``result`` line (answer, distribution, usage, and ``path``: the
chosen trajectory's node ids, root first, for strategies that choose one trajectory).

Strategies that do not search over steps (sampling, refinement, fusion) write their own events
instead of ``step`` records (refine: ``generate``/``verify``/``revise`` rounds with each
version and verdict; genselect, moa, usc: ``sample`` and ``select``/``aggregate``); for those the
trace is shown as its events in order, one line each, with the listed items indented below.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from ..errors import ConfigError

__all__ = ["register", "run", "read_trace", "render_events", "render_tree", "write_trace"]


def register(sub) -> None:
    p = sub.add_parser("trace", help="inspect a search trace written by `infscale ask --trace`")
    p.add_argument("action", choices=["show"])
    p.add_argument("file")
    p.add_argument("--width", type=int, default=60, help="characters of step text shown")
    p.set_defaults(handler=run)


def write_trace(path: str | Path, header: dict[str, Any], steps: list[dict[str, Any]], result: dict[str, Any]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write(json.dumps({"event": "run", **header}, default=_plain) + "\n")
        for s in steps:
            f.write(json.dumps(s, default=_plain) + "\n")
        f.write(json.dumps({"event": "result", **result}, default=_plain) + "\n")


def _plain(x):
    try:
        return float(x)
    except (TypeError, ValueError):
        return str(x)


def read_trace(path: str | Path) -> list[dict[str, Any]]:
    p = Path(path)
    if not p.is_file():
        raise ConfigError("file", f"no such trace file: {p}", "a JSONL file written by infscale ask --trace")
    out = []
    for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError as e:
            raise ConfigError("file", f"line {i} of {p} is not JSON ({e.msg})", "a JSONL trace") from None
    return out


def _num(x, fmt="{:.2f}") -> str:
    if x is None:
        return "-"
    if isinstance(x, str):
        return x
    return fmt.format(x) if math.isfinite(x) else ("-inf" if x < 0 else "inf")


def render_tree(records: list[dict[str, Any]], width: int = 60) -> str:
    """The search tree, one node per line under its parent, then per-step decisions."""
    header = next((r for r in records if r.get("event") == "run"), {})
    result = next((r for r in records if r.get("event") == "result"), {})
    steps = [r for r in records if r.get("event") == "step"]
    if not steps:
        return render_events(records, width)
    nodes: dict[int, dict[str, Any]] = {}
    children: dict[Any, list[int]] = {}
    alias: dict[int, int] = {}
    roots: list[int] = []
    stats: dict[int, tuple[int, float]] = {}  # tree search: the latest visits and value of each node
    for s in steps:
        roots += [r for r in s.get("roots", []) if r not in roots]
        for nid, visits, value in s.get("tree", []):
            stats[nid] = (visits, value)
        for copy, orig in s.get("copies", []):
            alias[copy] = orig
        for n in s.get("nodes", []):
            nodes[n["id"]] = n
            parent = n["parent"]
            while parent in alias:
                parent = alias[parent]
            children.setdefault(parent, []).append(n["id"])
    chosen = set(result.get("path") or [])
    lines = []
    if header:
        lines.append(f"{header.get('strategy', '?')} n={header.get('n', '?')}: {header.get('question', '')}")
    lines.append(f"{len(nodes)} nodes over {len(steps)} steps")

    def show(nid: int, prefix: str, last: bool) -> None:
        n = nodes[nid]
        text = n.get("step", "").strip().replace("\n", " ⏎ ")
        if len(text) > width:
            text = text[: width - 1] + "…"
        mark = f" [{n['reason']}]" if n.get("finished") else ""
        tree = f" visits={stats[nid][0]} value={_num(stats[nid][1], '{:.3f}')}" if nid in stats else ""
        star = "★ " if nid in chosen else ""
        lines.append(f"{prefix}{'└─' if last else '├─'} {star}#{nid} {text!r} score={_num(n.get('score'))} "
                     f"logw={_num(n.get('logw'))} tok={n.get('tokens', 0)}{tree}{mark}")
        kids = children.get(nid, [])
        for i, k in enumerate(kids):
            show(k, prefix + ("   " if last else "│  "), i == len(kids) - 1)

    for r in roots or [None]:
        root_stats = f" visits={stats[r][0]} value={_num(stats[r][1], '{:.3f}')}" if r in stats else ""
        lines.append((f"root #{r}" if r is not None else "root") + root_stats)
        kids = children.get(r, [])
        for i, k in enumerate(kids):
            show(k, "", i == len(kids) - 1)
    for s in steps:
        parts = [f"step {s.get('depth')}" + (f" (sweep {s['iteration']})" if s.get("iteration") else "")]
        if "ess" in s:
            parts.append(f"ess={s['ess']:.2f}")
        if "ancestors" in s:
            parts.append(f"resampled from {s['ancestors']}")
        if "allocation" in s:
            parts.append(f"allocation {s['allocation']}")
        if "kept" in s:
            parts.append(f"kept {s['kept']}")
        if "reference" in s:
            parts.append(f"reference #{s['reference']}")
        if s.get("expanded"):
            parts.append(f"expanded {s['expanded']}")
        if s.get("revisits"):
            parts.append(f"re-evaluated {s['revisits']}")
        if s.get("decisions"):
            wider = sum(d.get("choice") == "wider" for d in s["decisions"])
            parts.append(f"wider {wider}, deeper {len(s['decisions']) - wider}")
        lines.append("  ".join(parts))
    if chosen:
        lines.append(f"chosen path (★): {' → '.join(f'#{i}' for i in result['path'])}")
    if result:
        lines.append(f"answer: {result.get('answer')}  usage: {result.get('usage')}")
    return "\n".join(lines)


def _short(value: Any, width: int) -> str:
    if isinstance(value, float):
        return _num(value, "{:.3f}")
    text = value.strip().replace("\n", " ⏎ ") if isinstance(value, str) else json.dumps(value, default=_plain)
    if len(text) > width:
        text = text[: width - 1] + "…"
    return repr(text) if isinstance(value, str) else text


def render_events(records: list[dict[str, Any]], width: int = 60) -> str:
    """A trace without step records (sampling, refinement, fusion): its events in order, one
    line each (``event key=value ...``); a list of records (refine's versions and verdicts) is
    shown one item per indented line."""
    header = next((r for r in records if r.get("event") == "run"), {})
    result = next((r for r in records if r.get("event") == "result"), {})
    events = [r for r in records if r.get("event") not in ("run", "result")]
    lines = []
    if header:
        lines.append(f"{header.get('strategy', '?')} n={header.get('n', '?')}: {header.get('question', '')}")
    lines.append(f"{len(events)} events")
    for e in events:
        items = {k: v for k, v in e.items() if k != "event"}
        listed = {k: v for k, v in items.items() if isinstance(v, list) and v and all(isinstance(x, dict) for x in v)}
        lines.append(" ".join([str(e.get("event"))] + [f"{k}={_short(v, width)}" for k, v in items.items()
                                                        if k not in listed]))
        for k, v in listed.items():
            for x in v:
                lines.append(f"   {k[:-1] if k.endswith('s') else k}: "
                             + " ".join(f"{kk}={_short(vv, width)}" for kk, vv in x.items()))
    if result:
        lines.append(f"answer: {result.get('answer')}  usage: {result.get('usage')}")
    return "\n".join(lines)


def run(args) -> int:
    print(render_tree(read_trace(args.file), width=args.width))
    return 0
