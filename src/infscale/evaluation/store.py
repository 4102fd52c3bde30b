"""The run store: every run, problem, sample and strategy result of an evaluation, in SQLite.

One database file holds many runs (default ``INFSCALE_HOME/runs/infscale.sqlite``). The
database runs in WAL mode, and every table has a natural unique key, so inserting what is
already there is a no-op: a resumed run can replay its work and never duplicates a row.

* ``runs`` — ``run_id``, status (``running``, ``done``, ``interrupted``, ``failed``), the full
  configuration as JSON (dataset, strategies, budgets, seeds, model, sampling parameters),
  timestamps and accumulated wall seconds.
* ``problems`` — ``(run_id, problem_id)``: position, the problem as JSON (question, reference,
  task, choices, metadata) and the rendered prompt (chat messages as JSON, or the plain text).
  Samples share their problem's prompt; exports join it in.
* ``samples`` — ``(run_id, problem_id, seed, pool, idx)``: one generated solution: text,
  extracted answer, correctness, finish reason, generated and prompt tokens, log-probability
  sum, the sample's own seed, wall seconds attributed to it, scores by scorer name and what
  each scorer spent on it. ``pool`` is ``pool`` for the shared sample pool, ``greedy``, or
  ``SPEC@BUDGET`` for strategies run per budget.
* ``results`` — ``(run_id, strategy, budget, seed, problem_id)``: the chosen answer(s),
  correctness (a mean over subsamples for pooled strategies, with its variance), and the cost
  of that budget: samples, generated and prompt tokens, calls, seconds.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import math
import os
import secrets
import sqlite3
import time
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from ..errors import ConfigError, InfscaleError
from ..home import subdir

__all__ = ["Store", "StoreError", "default_db_path", "new_run_id"]


class StoreError(InfscaleError):
    """The run database could not be written or read (disk full, read-only, corrupt). What
    was stored before stays stored; the run can be resumed once the cause is fixed."""


def store_error(path: Path, e: BaseException) -> StoreError:
    """A one-line :class:`StoreError` for an sqlite3 or OS error on the database at ``path``."""
    detail = str(e) or type(e).__name__
    if isinstance(e, OSError) and e.errno == errno.ENOSPC:
        detail = "the disk is full"
    return StoreError(f"the run database {path}: {detail}")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    created TEXT NOT NULL,
    updated TEXT NOT NULL,
    status TEXT NOT NULL,
    config TEXT NOT NULL,
    seconds REAL NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS problems (
    run_id TEXT NOT NULL,
    problem_id TEXT NOT NULL,
    position INTEGER NOT NULL,
    data TEXT NOT NULL,
    prompt TEXT,
    PRIMARY KEY (run_id, problem_id)
);
CREATE TABLE IF NOT EXISTS samples (
    run_id TEXT NOT NULL,
    problem_id TEXT NOT NULL,
    seed INTEGER NOT NULL,
    pool TEXT NOT NULL,
    idx INTEGER NOT NULL,
    text TEXT NOT NULL,
    answer TEXT,
    correct INTEGER NOT NULL,
    finish_reason TEXT,
    generated_tokens INTEGER NOT NULL,
    prompt_tokens INTEGER,
    logprob REAL,
    sample_seed INTEGER,
    seconds REAL,
    scores TEXT NOT NULL DEFAULT '{}',
    score_costs TEXT NOT NULL DEFAULT '{}',
    PRIMARY KEY (run_id, problem_id, seed, pool, idx)
);
CREATE TABLE IF NOT EXISTS results (
    run_id TEXT NOT NULL,
    strategy TEXT NOT NULL,
    budget INTEGER NOT NULL,
    seed INTEGER NOT NULL,
    problem_id TEXT NOT NULL,
    answer TEXT,
    answers TEXT NOT NULL,
    correct REAL NOT NULL,
    correct_var REAL,
    subsamples INTEGER NOT NULL,
    pooled INTEGER NOT NULL,
    samples REAL NOT NULL,
    generated_tokens REAL NOT NULL,
    prompt_tokens REAL NOT NULL,
    calls REAL NOT NULL,
    seconds REAL NOT NULL,
    stopped_early INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (run_id, strategy, budget, seed, problem_id)
);
"""

_SAMPLE_COLS = ("run_id", "problem_id", "seed", "pool", "idx", "text", "answer", "correct", "finish_reason",
                "generated_tokens", "prompt_tokens", "logprob", "sample_seed", "seconds", "scores", "score_costs")
_RESULT_COLS = ("run_id", "strategy", "budget", "seed", "problem_id", "answer", "answers", "correct", "correct_var",
                "subsamples", "pooled", "samples", "generated_tokens", "prompt_tokens", "calls", "seconds",
                "stopped_early")


def default_db_path() -> Path:
    """``INFSCALE_HOME/runs/infscale.sqlite``."""
    return subdir("runs") / "infscale.sqlite"


def new_run_id() -> str:
    """A run id: UTC time plus 6 random hex digits, e.g. ``20250101-120000-3fa2c1``."""
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + secrets.token_hex(3)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _finite(x: Any) -> Any:
    """JSON-safe float: ``-inf``/``nan`` scores become strings."""
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    return x


def _unfinite(x: Any) -> Any:
    if isinstance(x, str) and x in ("-inf", "inf", "nan"):
        return float(x)
    return x


class Store:
    """One SQLite database of runs. Use as a context manager or call :meth:`close`."""

    def __init__(self, path: str | Path | None = None):
        self.path = Path(path).expanduser() if path is not None else default_db_path()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.conn = sqlite3.connect(str(self.path), timeout=30.0)
        self.conn.row_factory = sqlite3.Row
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=NORMAL")
        self.conn.execute("PRAGMA busy_timeout=30000")
        self.conn.executescript(_SCHEMA)

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- runs ---------------------------------------------------------------------------
    def create_run(self, config: dict[str, Any], run_id: str | None = None) -> str:
        run_id = run_id or new_run_id()
        now = _now()
        with self.conn:
            self.conn.execute("INSERT INTO runs (run_id, created, updated, status, config) VALUES (?, ?, ?, ?, ?)",
                              (run_id, now, now, "running", json.dumps(config, sort_keys=True)))
        return run_id

    def get_run(self, run_id: str) -> dict[str, Any]:
        """The run's row with its ``config`` decoded; a one-line error naming known runs if absent."""
        row = self.conn.execute("SELECT * FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        if row is None:
            known = [r["run_id"] for r in self.conn.execute("SELECT run_id FROM runs ORDER BY created DESC LIMIT 5")]
            accepted = ("a run id in " + str(self.path) + (": " + ", ".join(known) if known else " (it holds no runs)"))
            raise ConfigError("run", f"no run {run_id!r}", accepted)
        d = dict(row)
        d["config"] = json.loads(d["config"])
        return d

    def list_runs(self) -> list[dict[str, Any]]:
        rows = self.conn.execute("SELECT * FROM runs ORDER BY created").fetchall()
        out = []
        for r in rows:
            d = dict(r)
            d["config"] = json.loads(d["config"])
            out.append(d)
        return out

    def set_status(self, run_id: str, status: str, *, add_seconds: float = 0.0) -> None:
        with self.conn:
            self.conn.execute("UPDATE runs SET status = ?, updated = ?, seconds = seconds + ? WHERE run_id = ?",
                              (status, _now(), float(add_seconds), run_id))

    # -- problems -------------------------------------------------------------------------
    def put_problems(self, run_id: str, problems: Iterable[dict[str, Any]]) -> None:
        """Rows with ``problem_id``, ``position``, ``data`` (dict) and ``prompt`` (str or None)."""
        with self.conn:
            self.conn.executemany(
                "INSERT OR IGNORE INTO problems (run_id, problem_id, position, data, prompt) VALUES (?, ?, ?, ?, ?)",
                [(run_id, p["problem_id"], p["position"], json.dumps(p["data"], ensure_ascii=False), p.get("prompt"))
                 for p in problems])

    def get_problems(self, run_id: str) -> list[dict[str, Any]]:
        rows = self.conn.execute("SELECT * FROM problems WHERE run_id = ? ORDER BY position", (run_id,)).fetchall()
        return [{**dict(r), "data": json.loads(r["data"])} for r in rows]

    # -- samples --------------------------------------------------------------------------
    def put_samples(self, run_id: str, rows: Iterable[dict[str, Any]], *, commit: bool = True) -> None:
        """Insert samples (dicts with the sample columns; ``scores``/``score_costs`` as dicts);
        rows already stored are left as they are."""
        data = []
        for r in rows:
            r = {**r, "run_id": run_id}
            r["scores"] = json.dumps({k: _finite(v) for k, v in (r.get("scores") or {}).items()})
            r["score_costs"] = json.dumps(r.get("score_costs") or {})
            r["correct"] = int(bool(r["correct"]))
            data.append(tuple(r.get(c) for c in _SAMPLE_COLS))
        sql = f"INSERT OR IGNORE INTO samples ({', '.join(_SAMPLE_COLS)}) VALUES ({', '.join('?' * len(_SAMPLE_COLS))})"
        if commit:
            with self.conn:
                self.conn.executemany(sql, data)
        else:
            self.conn.executemany(sql, data)

    def set_scores(self, run_id: str, problem_id: str, seed: int, pool: str, scorer: str,
                   scores: dict[int, float], costs: dict[int, dict[str, float]]) -> None:
        """Record ``scorer``'s score (and what it spent) for samples ``idx`` of one pool."""
        with self.conn:
            for idx, score in scores.items():
                row = self.conn.execute(
                    "SELECT scores, score_costs FROM samples WHERE run_id=? AND problem_id=? AND seed=? AND pool=? AND idx=?",
                    (run_id, problem_id, seed, pool, idx)).fetchone()
                if row is None:
                    continue
                s, c = json.loads(row["scores"]), json.loads(row["score_costs"])
                s[scorer] = _finite(float(score))
                c[scorer] = costs.get(idx, {})
                self.conn.execute(
                    "UPDATE samples SET scores=?, score_costs=? WHERE run_id=? AND problem_id=? AND seed=? AND pool=? AND idx=?",
                    (json.dumps(s), json.dumps(c), run_id, problem_id, seed, pool, idx))

    def get_samples(self, run_id: str, *, problem_id: str | None = None, seed: int | None = None,
                    pool: str | None = None) -> list[dict[str, Any]]:
        """Samples in key order, ``scores`` and ``score_costs`` decoded (``-inf`` restored)."""
        where, args = ["run_id = ?"], [run_id]
        for col, val in (("problem_id", problem_id), ("seed", seed), ("pool", pool)):
            if val is not None:
                where.append(f"{col} = ?")
                args.append(val)
        rows = self.conn.execute(f"SELECT * FROM samples WHERE {' AND '.join(where)} "
                                 "ORDER BY problem_id, seed, pool, idx", args).fetchall()
        out = []
        for r in rows:
            d = dict(r)
            d["scores"] = {k: _unfinite(v) for k, v in json.loads(d["scores"]).items()}
            d["score_costs"] = json.loads(d["score_costs"])
            d["correct"] = bool(d["correct"])
            out.append(d)
        return out

    # -- results --------------------------------------------------------------------------
    def put_results(self, run_id: str, rows: Iterable[dict[str, Any]], *, commit: bool = True) -> None:
        data = []
        for r in rows:
            r = {**r, "run_id": run_id, "answers": json.dumps(list(r.get("answers") or []), ensure_ascii=False)}
            r["pooled"] = int(bool(r.get("pooled")))
            r["stopped_early"] = int(bool(r.get("stopped_early")))
            data.append(tuple(r.get(c) for c in _RESULT_COLS))
        sql = f"INSERT OR IGNORE INTO results ({', '.join(_RESULT_COLS)}) VALUES ({', '.join('?' * len(_RESULT_COLS))})"
        if commit:
            with self.conn:
                self.conn.executemany(sql, data)
        else:
            self.conn.executemany(sql, data)

    def result_keys(self, run_id: str) -> set[tuple[str, int, int, str]]:
        """``(strategy, budget, seed, problem_id)`` of every stored result."""
        rows = self.conn.execute("SELECT strategy, budget, seed, problem_id FROM results WHERE run_id = ?", (run_id,))
        return {(r[0], r[1], r[2], r[3]) for r in rows}

    def get_results(self, run_id: str) -> list[dict[str, Any]]:
        rows = self.conn.execute(
            "SELECT r.* FROM results r LEFT JOIN problems p ON p.run_id = r.run_id AND p.problem_id = r.problem_id "
            "WHERE r.run_id = ? ORDER BY r.strategy, r.budget, r.seed, p.position", (run_id,)).fetchall()
        out = []
        for r in rows:
            d = dict(r)
            d["answers"] = json.loads(d["answers"])
            d["pooled"] = bool(d["pooled"])
            d["stopped_early"] = bool(d["stopped_early"])
            out.append(d)
        return out

    def counts(self, run_id: str) -> dict[str, int]:
        """Rows per table for one run."""
        return {t: self.conn.execute(f"SELECT COUNT(*) FROM {t} WHERE run_id = ?", (run_id,)).fetchone()[0]
                for t in ("problems", "samples", "results")}

    @contextlib.contextmanager
    def lock_run(self, run_id: str) -> Iterator[None]:
        """Hold ``run_id`` for this process while the block runs, or raise a one-line
        :class:`~infscale.errors.ConfigError` if another process holds it (two runs of one
        run id would race each other's samples). The lock is a POSIX record lock on one byte
        of ``DB.lock`` beside the database, so the system releases it when its process dies
        (a ``kill -9`` leaves nothing to clean up)."""
        lock_path = self.path.with_name(self.path.name + ".lock")
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise store_error(lock_path, e) from e
        offset = zlib.crc32(run_id.encode()) * 4096 + len(run_id)  # one byte per run id
        try:
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, offset)
            except OSError as e:
                if e.errno in (errno.EACCES, errno.EAGAIN):
                    raise ConfigError("--resume", f"run {run_id} is running in another process (a run cannot be "
                                      "continued twice at once)", "wait for it to end, or stop it first") from None
                raise store_error(lock_path, e) from e
            try:
                yield
            finally:
                fcntl.lockf(fd, fcntl.LOCK_UN, 1, offset)
        finally:
            os.close(fd)

    def transaction(self):
        """``with store.transaction(): ...`` groups writes made with ``commit=False``."""
        return self.conn
