"""``infscale export RUN_ID --format jsonl|parquet [--out DIR]``: a run's samples and results.

Writes ``RUN_ID-samples.EXT`` (one row per stored sample, with its problem's question, reference
and prompt) and ``RUN_ID-results.EXT`` (one row per strategy, budget, seed and problem) into
``DIR`` (default ``INFSCALE_HOME/exports``). Parquet needs pyarrow (``pip install
'infscale[parquet]'``); nested values (scores, score costs, answers, references) are JSON
strings there.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import ConfigError

__all__ = ["register", "run", "export_run"]

FORMATS = ("jsonl", "parquet")


def register(sub) -> None:
    p = sub.add_parser("export", help="write a stored run's samples and results as JSONL or Parquet")
    p.add_argument("run_id", metavar="RUN_ID")
    p.add_argument("--format", "-f", default="jsonl", help="jsonl or parquet (default jsonl)")
    p.add_argument("--out", "-o", default=None, metavar="DIR",
                   help="output directory, created if missing (its parent must exist; default INFSCALE_HOME/exports)")
    from ._runs import add_db_argument  # noqa: PLC0415

    add_db_argument(p)
    p.set_defaults(handler=run)


def _rows(store, run_id: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    problems = {p["problem_id"]: p for p in store.get_problems(run_id)}
    samples = []
    for s in store.get_samples(run_id):
        p = problems.get(s["problem_id"], {})
        data = p.get("data", {})
        row = {k: v for k, v in s.items()}
        row["scores"] = {k: (v if isinstance(v, (int, float)) and v == v and abs(v) != float("inf") else str(v))
                         for k, v in s["scores"].items()}
        row.update({"question": data.get("question"), "reference": data.get("reference"), "task": data.get("task"),
                    "prompt": p.get("prompt")})
        samples.append(row)
    return samples, store.get_results(run_id)


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    with path.open("w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")


_NESTED = ("scores", "score_costs", "answers", "reference")


def _write_parquet(path: Path, rows: list[dict[str, Any]]) -> None:
    import pyarrow as pa  # noqa: PLC0415
    import pyarrow.parquet as pq  # noqa: PLC0415

    flat = [{k: (json.dumps(v, ensure_ascii=False) if k in _NESTED else v) for k, v in r.items()} for r in rows]
    pq.write_table(pa.Table.from_pylist(flat), path)


def export_run(store, run_id: str, fmt: str, out: Path) -> list[Path]:
    """Write the samples and results of ``run_id``; the two paths."""
    if fmt not in FORMATS:
        raise ConfigError("format", f"got {fmt!r}", ", ".join(FORMATS))
    if fmt == "parquet":
        from ._runs import need_pyarrow  # noqa: PLC0415

        need_pyarrow()
    from ._paths import check_run_id, file_in  # noqa: PLC0415

    check_run_id(run_id)
    store.get_run(run_id)
    samples, results = _rows(store, run_id)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, rows in (("samples", samples), ("results", results)):
        path = file_in(out, f"{run_id}-{name}.{fmt}")
        (_write_jsonl if fmt == "jsonl" else _write_parquet)(path, rows)
        paths.append(path)
    return paths


def run(args) -> int:
    from ..home import subdir  # noqa: PLC0415
    from ._runs import open_store  # noqa: PLC0415

    if args.format not in FORMATS:
        raise ConfigError("format", f"got {args.format!r}", ", ".join(FORMATS))
    from ._paths import check_run_id, output_dir  # noqa: PLC0415

    check_run_id(args.run_id)
    store = open_store(args)
    try:
        store.get_run(args.run_id)
        out = output_dir("--out", args.out) if args.out else subdir("exports")
        for path in export_run(store, args.run_id, args.format, out):
            print(path)
    finally:
        store.close()
    return 0
