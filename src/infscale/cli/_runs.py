"""Shared pieces of the evaluation commands (``eval``, ``report``, ``export``): the run store,
summaries, the progress bar. Not a command itself."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, TextIO

from ..errors import ConfigError, MissingExtraError

__all__ = ["add_db_argument", "open_store", "summarize_run", "results_json", "run_title", "html_path",
           "write_reports", "ProgressBar"]


def add_db_argument(p) -> None:
    p.add_argument("--db", default=None, metavar="PATH",
                   help="run database (default INFSCALE_HOME/runs/infscale.sqlite)")


def open_store(args, *, create: bool = False):
    """The run database of ``--db`` (default ``INFSCALE_HOME/runs/infscale.sqlite``). Only
    ``eval`` (``create=True``) makes a new database, in an existing folder; the commands that
    read runs refuse a missing file. A file that is not a run database is a one-line error."""
    import sqlite3  # noqa: PLC0415

    from ..evaluation.store import Store  # noqa: PLC0415
    from ._paths import check_db_path  # noqa: PLC0415

    if args.db is not None:
        check_db_path(args.db, create=create)
    try:
        return Store(args.db)
    except sqlite3.DatabaseError as e:  # not a database, locked past the timeout, unreadable
        where = args.db if args.db is not None else "the default database"
        raise ConfigError("--db", f"{where} is not a usable run database ({e})",
                          "a run database written by infscale eval") from None
    except OSError as e:
        raise ConfigError("--db", f"cannot open {args.db}: {e.strerror or e}", "a writable path") from None


def summarize_run(store, run_id: str, baseline: str | None = None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """``(summary, result rows)``: the metrics summary of a stored run. Paired comparisons take
    ``baseline`` (one of the run's strategies), by default the run's first strategy (as given
    to ``--strategies``), as the baseline."""
    from ..evaluation import metrics  # noqa: PLC0415
    from ..evaluation.harness import metrics_inputs  # noqa: PLC0415

    strategies = store.get_run(run_id)["config"].get("strategies") or [None]
    if baseline is not None:
        from ..evaluation.harness import parse_strategies  # noqa: PLC0415

        try:  # stored labels are normalised (settings sorted): compare like with like
            baseline = parse_strategies([baseline])[0].label
        except ConfigError:
            pass
        if baseline not in strategies:
            raise ConfigError("baseline", f"{baseline!r} is not a strategy of run {run_id}",
                              ", ".join(s for s in strategies if s) or "a run with strategies")
    results, samples = metrics_inputs(store, run_id)
    if samples:  # majority@k folds answers by each problem's task, as the majority strategy does
        tasks = {p["problem_id"]: p["data"].get("task") or "math" for p in store.get_problems(run_id)}
        samples = [{**s, "task": tasks.get(s["problem_id"], "math")} for s in samples]
    return metrics.summarize(results, samples, baseline=baseline or strategies[0]), results


def results_json(summary: dict[str, Any], results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per strategy and budget: accuracy with its interval, problems, seeds, samples, costs."""
    samples: dict[tuple[str, int], float] = {}
    for r in results:
        key = (r["strategy"], int(r["budget"]))
        samples[key] = samples.get(key, 0.0) + float(r["samples"])
    out = []
    for c in summary["cells"]:
        out.append({
            "strategy": c["strategy"],
            "budget": c["budget"],
            "accuracy": c["accuracy"],
            "interval": c["wilson"],
            "interval_beta": c["beta"],
            "problems": c["problems"],
            "seeds": c["seeds"],
            "samples": round(samples.get((c["strategy"], int(c["budget"])), 0.0), 6),
            "generated_tokens": c["generated_tokens"],
            "prompt_tokens": c["prompt_tokens"],
            "calls": c["calls"],
            "seconds": c["seconds"],
        })
    return out


def run_title(run: dict[str, Any]) -> str:
    cfg = run["config"]
    model = cfg.get("backend_url") or cfg.get("model") or "smollm2-135m"
    limit = f" (first {cfg['limit']})" if cfg.get("limit") else ""
    return f"{run['run_id']}: {cfg['dataset']}{limit} on {model}"


def run_meta(run: dict[str, Any], store) -> dict[str, Any]:
    cfg = run["config"]
    return {"run_id": run["run_id"], "status": run["status"], "created": run["created"], "dataset": cfg["dataset"],
            "limit": cfg.get("limit"), "model": cfg.get("model") or "smollm2-135m", "backend_url": cfg.get("backend_url"),
            "strategies": ", ".join(cfg["strategies"]), "budgets": ", ".join(map(str, cfg["budgets"])),
            "seeds": cfg["seeds"], "params": cfg.get("params"), "seconds": round(run.get("seconds") or 0.0, 1),
            "db": str(store.path), **store.counts(run["run_id"])}


def html_path(run_id: str) -> Path:
    from ..home import subdir  # noqa: PLC0415
    from ._paths import check_run_id, file_in  # noqa: PLC0415

    return file_in(subdir("reports"), f"{check_run_id(run_id)}.html")


def write_reports(store, run_id: str, *, html: str | Path | None = None, write_html: bool = True,
                  baseline: str | None = None) -> tuple[str, Path | None, dict[str, Any], list[dict[str, Any]]]:
    """The terminal table, the HTML report's path (written unless ``write_html`` is false), the
    summary and the result rows of one run."""
    from ..evaluation import report  # noqa: PLC0415

    run = store.get_run(run_id)
    summary, results = summarize_run(store, run_id, baseline)
    title = run_title(run)
    table = report.terminal_report(summary, title=title)
    path = None
    if write_html:
        path = report.write_html_report(summary, Path(html) if html else html_path(run_id), title=title,
                                        meta=run_meta(run, store))
    return table, path, summary, results


def need_pyarrow() -> None:
    import importlib.util  # noqa: PLC0415

    if importlib.util.find_spec("pyarrow") is None:
        raise MissingExtraError("pyarrow (parquet export)", "pip install 'infscale[parquet]'")


class ProgressBar:
    """The eval command's progress on stderr, drawn by ``tqdm`` on a terminal.

    It is the harness's ``on_progress`` callback (it sees ``done``, ``total``, ``samples`` and
    ``seconds``). On a terminal ``tqdm`` redraws one line in place (count, rate, eta and the
    samples drawn so far); elsewhere (a log file, a pipe) nothing is written until :meth:`close`,
    which prints one final line ``12/30 problems, 96 samples, 1m02s``.
    """

    def __init__(self, stream: TextIO | None = None, *, enabled: bool = True, unit: str = "problems"):
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.unit = unit
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.last = None
        self._bar = None

    def __call__(self, p) -> None:
        if not self.enabled or p.total <= 0:
            return
        self.last = p
        if not self.tty:
            return
        if self._bar is None:
            from tqdm import tqdm  # noqa: PLC0415  (only the eval command draws a bar)

            self._bar = tqdm(total=p.total, unit=self.unit[:-1] if self.unit.endswith("s") else self.unit,
                             file=self.stream, dynamic_ncols=True, mininterval=0.1, leave=True)
        self._bar.total = p.total
        self._bar.set_postfix_str(f"{p.samples} samples", refresh=False)
        self._bar.update(p.done - self._bar.n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        elif self.enabled and not self.tty and self.last is not None:
            p, self.last = self.last, None
            self.stream.write(f"{p.done}/{p.total} {self.unit}, {p.samples} samples, {_clock(p.seconds)}\n")
            self.stream.flush()


def _clock(seconds: float) -> str:
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"
