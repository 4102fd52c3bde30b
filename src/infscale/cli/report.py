"""``infscale report [RUN_ID]``: the terminal table and the HTML report of a stored run.

Without a run id it lists the runs in the database. ``--json`` prints the metrics summary.
"""

from __future__ import annotations

import json

__all__ = ["register", "run"]


def register(sub) -> None:
    p = sub.add_parser("report", help="show a stored evaluation run: terminal table and HTML report",
                       description="Print the terminal table of a stored run and write its HTML report "
                                   "(default INFSCALE_HOME/reports/RUN_ID.html). Without RUN_ID: list the runs.")
    p.add_argument("run_id", nargs="?", default=None, metavar="RUN_ID")
    p.add_argument("--html", default=None, metavar="PATH", help="where to write the HTML report")
    p.add_argument("--no-html", action="store_true", help="only print the terminal table")
    p.add_argument("--json", action="store_true", help="print the run's metrics summary as one JSON object")
    p.add_argument("--baseline", default=None, metavar="STRATEGY",
                   help="the strategy the paired comparisons compare against (default: the run's first)")
    from ._runs import add_db_argument  # noqa: PLC0415

    add_db_argument(p)
    p.set_defaults(handler=run)


def run(args) -> int:
    from ._paths import check_output_file, check_run_id  # noqa: PLC0415
    from ._runs import open_store, results_json, run_meta, write_reports  # noqa: PLC0415

    if args.run_id is not None:
        check_run_id(args.run_id)
    if args.html is not None and not args.no_html:
        check_output_file("--html", args.html)
    store = open_store(args)
    try:
        if args.run_id is None:
            return _list(store)
        run = store.get_run(args.run_id)
        table, path, summary, results = write_reports(store, args.run_id, html=args.html,
                                                      write_html=not args.no_html, baseline=args.baseline)
        if args.json:
            print(json.dumps({"run_id": args.run_id, "meta": run_meta(run, store), "html": str(path) if path else None,
                              "results": results_json(summary, results), "summary": summary},
                             ensure_ascii=False, default=str))
            return 0
        if run["status"] != "done":
            print(f"note: run status is {run['status']!r}; resume with: infscale eval --resume {args.run_id}\n")
        print(table.rstrip("\n"))
        if path is not None:
            print(f"\nhtml report: {path}")
        return 0
    finally:
        store.close()


def _list(store) -> int:
    runs = store.list_runs()
    if not runs:
        print(f"no runs in {store.path}")
        return 0
    print(f"{'run':<24} {'status':<12} {'samples':>8} {'results':>8}  dataset / strategies / budgets")
    for r in runs:
        c = store.counts(r["run_id"])
        cfg = r["config"]
        limit = f"[:{cfg['limit']}]" if cfg.get("limit") else ""
        print(f"{r['run_id']:<24} {r['status']:<12} {c['samples']:>8} {c['results']:>8}  "
              f"{cfg['dataset']}{limit} / {','.join(cfg['strategies'])} / {','.join(map(str, cfg['budgets']))}")
    return 0
