"""``infscale eval``: run a dataset x strategy x budget x seed grid, store every sample, resume.

::

    infscale eval --dataset arith --limit 30 --strategies greedy,majority,best-of-n:scorer=arith-check \\
                  --budgets 1,4,8 [--seeds S] [--model M | --backend-url URL] [--db PATH] [--json]
                  [--reproducible] [--ray [ADDRESS] [--workers K]]
    infscale eval --resume RUN_ID [--ray [ADDRESS] [--workers K]]

``run: RUN_ID`` goes to stderr as soon as the run exists, then a progress bar. At the end the
terminal table is printed (``--json``: one object with ``run_id`` and ``results``) and the HTML
report is written under ``INFSCALE_HOME/reports``.

A run that stops early says so in one line with the command that continues it, and exits with
2 (the caller's mistake, e.g. a code problem without tests), 3 (the backend failed: a 400, a
503 past the retries, a cut answer past the retries, an unknown model), 1 (the run database
could not be written, e.g. the disk is full), 130 (Ctrl-C) or 143 (SIGTERM); the run is stored
as ``failed`` or ``interrupted`` and ``--resume`` continues it without redoing stored work.
``--resume RUN_ID --backend-url URL`` continues a run against a server at a new address (the
same model served elsewhere; this session only). Two processes cannot run one run at once.
"""

from __future__ import annotations

import asyncio
import functools
import json
import signal
import sqlite3
import sys

from ..errors import BackendError, ConfigError, InfscaleError

__all__ = ["register", "run"]


def register(sub) -> None:
    p = sub.add_parser("eval", help="evaluate strategies over a dataset at several budgets (stored, resumable)",
                       description="Run a dataset x strategy x budget x seed grid; every sample and result is "
                                   "stored in SQLite. A killed run continues with --resume RUN_ID.")
    p.add_argument("--dataset", "-d", default=None,
                   help="gsm8k, math500, aime2024, humaneval, mbpp, arith[:seed=S,steps=LO-HI,n=N], or FILE.jsonl")
    p.add_argument("--limit", type=int, default=None, help="the first K problems")
    p.add_argument("--task", default=None, help="math, mcq, code or text (JSONL datasets; default math)")
    p.add_argument("--question-field", default=None, help="JSONL field holding the question (default question)")
    p.add_argument("--answer-field", default=None, help="JSONL field holding the reference (default answer)")
    p.add_argument("--choices-field", default=None, help="JSONL field holding a list of choices (mcq)")
    p.add_argument("--strategies", "-s", default="majority",
                   help="comma-separated specs NAME[:key=value,...], e.g. greedy,majority,best-of-n:scorer=arith-check")
    p.add_argument("--budgets", "-b", default="1,2,4,8", help="comma-separated widths (--n of each strategy)")
    p.add_argument("--seeds", type=int, default=1, help="run seeds 0..S-1 (default 1)")
    p.add_argument("--model", "-m", default=None, help="registered model name or .gguf path (default smollm2-135m)")
    p.add_argument("--backend-url", default=None, action="append", metavar="URL",
                   help="an OpenAI-compatible server instead of the embedded engine; give it several times to spread requests over several servers (least outstanding requests; a failing one is taken out and retried later)")
    p.add_argument("--concurrency", type=int, default=None,
                   help="problems in flight at once (default: what keeps the embedded engine full; 8 with --backend-url)")
    p.add_argument("--threads", default=None, help="llama.cpp threads of the embedded engine: N or auto "
                   "(default INFSCALE_THREADS, else every core; auto: chosen by measurement, for a shared machine)")
    from ._engine import add_engine_arguments  # noqa: PLC0415

    add_engine_arguments(p)
    p.add_argument("--subsamples", type=int, default=20,
                   help="subsamples per budget for strategies that reuse one sample pool (default 20)")
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--min-p", type=float, default=0.0)
    p.add_argument("--max-tokens", type=int, default=256)
    p.add_argument("--total-tokens", type=float, default=None, metavar="T",
                   help="with --strategies auto: one budget of generated tokens for the whole batch, spent where the "
                        "policy's curves promise the most accuracy per token (per seed); the allocation is printed")
    p.add_argument("--reproducible", action="store_true",
                   help="embedded engine: draw one sample at a time, so each is reproducible from its stored "
                        "seed whatever ran beside it (measured: about 2.4x the batched wall time)")
    p.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                   help="run the grid on a Ray cluster (ray.init(ADDRESS); a new local one without ADDRESS): each "
                        "worker owns its generator, this process stores every result (pip install 'infscale[ray]')")
    p.add_argument("--workers", type=int, default=None, metavar="K",
                   help="with --ray: K workers, each with its own generator (default 2); --concurrency is per worker")
    p.add_argument("--resume", default=None, metavar="RUN_ID",
                   help="continue a stored run with its stored configuration (other grid options are ignored; "
                        "--backend-url points a run made with a server at the server's new address)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--no-html", action="store_true", help="do not write the HTML report at the end")
    p.add_argument("--json", action="store_true", help="print one JSON object with run_id and results")
    from ._http import add_http_arguments  # noqa: PLC0415
    from ._runs import add_db_argument  # noqa: PLC0415

    add_db_argument(p)
    add_http_arguments(p)
    p.set_defaults(handler=run)


def _config(args):
    from ..evaluation.harness import EvalConfig  # noqa: PLC0415

    params = {"temperature": args.temperature, "top_p": args.top_p, "top_k": args.top_k, "min_p": args.min_p,
              "max_tokens": args.max_tokens}
    cfg = EvalConfig(dataset=args.dataset, strategies=[args.strategies], budgets=args.budgets, seeds=args.seeds,
                     limit=args.limit, task=args.task, question_field=args.question_field,
                     answer_field=args.answer_field, choices_field=args.choices_field, model=args.model,
                     backend_url=args.backend_url, params=params,
                     concurrency=8 if args.concurrency is None else args.concurrency, subsamples=args.subsamples,
                     reproducible=args.reproducible, total_tokens=args.total_tokens)
    cfg.validate()
    return cfg


def _generator(config, threads=None, http=None, engine=None):
    from ..api import load_generator  # noqa: PLC0415

    options = {"reproducible": True} if config.reproducible else {}
    if threads is not None and config.backend_url is None:
        options["n_threads"] = threads
    if config.backend_url is None:
        options.update(engine or {})
    if config.backend_url is not None:
        options.update(http or {})
    return load_generator(config.model, backend_url=config.backend_url, **options)


def _resumed_config(stored, args):
    """The stored configuration of ``--resume``, pointed at ``--backend-url`` when one is given."""
    from ..evaluation.harness import EvalConfig  # noqa: PLC0415

    config = EvalConfig.from_dict(stored["config"])
    config.validate()
    if args.backend_url is not None:
        if config.backend_url is None:
            raise ConfigError("--backend-url", f"run {stored['run_id']} was made with the embedded engine "
                              f"({config.model or 'smollm2-135m'}); a server cannot continue it",
                              "--resume RUN_ID without --backend-url")
        if args.backend_url != config.backend_url:
            print(f"infscale: continuing run {stored['run_id']} at {args.backend_url} (it was made at "
                  f"{config.backend_url}; it must serve the same model)", file=sys.stderr)
            config.backend_url = args.backend_url
    return config


async def _run_eval(store, run_id, generator, progress, concurrency, signals):
    """``run_eval`` with SIGTERM treated as Ctrl-C: the run is cancelled and stored as
    interrupted (``signals`` records that it came)."""
    from ..evaluation.harness import run_eval  # noqa: PLC0415

    loop = asyncio.get_running_loop()
    task = asyncio.current_task()

    def on_term() -> None:
        signals.append(signal.SIGTERM)
        task.cancel()

    try:
        loop.add_signal_handler(signal.SIGTERM, on_term)
    except (NotImplementedError, RuntimeError, ValueError):  # not the main thread (tests), or no signals
        pass
    try:
        return await run_eval(store, run_id, generator, on_progress=progress, concurrency=concurrency)
    finally:
        try:
            loop.remove_signal_handler(signal.SIGTERM)
        except (NotImplementedError, RuntimeError, ValueError):
            pass


def _release(generator) -> None:
    """Free the driver's generator before the Ray workers load theirs."""
    close = getattr(generator, "close", None)
    if close is not None:
        close()
    else:
        asyncio.run(generator.aclose())


def _run_eval_ray(store, run_id, make_generator, progress, args, signals):
    """``run_eval_ray`` with SIGTERM treated as Ctrl-C (``signals`` records that it came)."""
    from ..evaluation.distributed import run_eval_ray  # noqa: PLC0415

    def on_term(signum, frame) -> None:
        signals.append(signal.SIGTERM)
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, on_term)
    except ValueError:  # not the main thread (tests)
        previous = None
    try:
        return run_eval_ray(store, run_id, make_generator, workers=args.workers or 2, address=args.ray or None,
                            on_progress=progress, concurrency=args.concurrency)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _stopped(kind: str, error: BaseException, run_id: str) -> None:
    print(f"infscale: {kind}: {error}; run {run_id} is stored, continue it with: infscale eval --resume {run_id}",
          file=sys.stderr)


def run(args) -> int:
    from ..evaluation.store import default_db_path, store_error  # noqa: PLC0415

    try:
        return _run(args)
    except sqlite3.Error as e:  # creating the run or reading it back: one line (e.g. the disk is full)
        raise store_error(args.db or default_db_path(), e) from e


def _run(args) -> int:
    from ..evaluation.harness import start_run, unwrap_error  # noqa: PLC0415
    from ..evaluation.store import StoreError  # noqa: PLC0415
    from ._http import http_options  # noqa: PLC0415
    from ._runs import ProgressBar, open_store, results_json, summarize_run, write_reports  # noqa: PLC0415

    if args.concurrency is not None and args.concurrency < 1:
        raise ConfigError("concurrency", f"got {args.concurrency}", "an integer >= 1")
    if args.threads is not None:
        from ..backends.llamacpp import threads_setting  # noqa: PLC0415

        args.threads = threads_setting(args.threads, "--threads")
    if args.resume:
        from ._paths import check_run_id  # noqa: PLC0415

        check_run_id(args.resume)
    if args.workers is not None and args.ray is None:
        raise ConfigError("--workers", "applies to --ray only", "--ray [ADDRESS] --workers K")
    if args.workers is not None and args.workers < 1:
        raise ConfigError("--workers", f"got {args.workers}", "an integer >= 1")
    if args.ray is not None:
        from ..evaluation.distributed import import_ray  # noqa: PLC0415

        import_ray()  # a missing extra is said before anything is loaded
    http = http_options(args)
    from ._engine import engine_options  # noqa: PLC0415

    engine = engine_options(args)
    store = open_store(args, create=True)
    try:
        if args.resume:
            stored = store.get_run(args.resume)
            config = _resumed_config(stored, args)
            run_id = args.resume
            if not store.get_problems(run_id):  # its creation failed part way: there is nothing to continue
                raise ConfigError("--resume", f"run {run_id} holds no problems (it failed while it was being "
                                  "created)", "start a new run with --dataset")
            generator = None if args.ray is not None else _generator(config, args.threads, http, engine)
        else:
            if not args.dataset:
                raise ConfigError("dataset", "missing", "--dataset NAME|FILE.jsonl, or --resume RUN_ID")
            config = _config(args)  # every setting is checked before the dataset and the model load
            from ..datasets import load_dataset  # noqa: PLC0415

            problems = load_dataset(config.dataset, limit=config.limit, task=config.task,
                                    question_field=config.question_field, answer_field=config.answer_field,
                                    choices_field=config.choices_field)
            generator = _generator(config, args.threads, http, engine)
            run_id = start_run(store, config, problems, chat=generator.capabilities.chat_template)
            if args.ray is not None:  # the workers load their own; this one only told the prompt format
                _release(generator)
                generator = None
        print(f"run: {run_id}", file=sys.stderr, flush=True)
        bar = ProgressBar(enabled=not args.no_progress)
        last = []

        def progress(p) -> None:
            last[:] = [p]
            bar(p)

        concurrency = args.concurrency
        if concurrency is None and hasattr(generator, "best_concurrency"):
            concurrency = generator.best_concurrency(max(config.budgets))
        signals: list = []
        try:
            if args.ray is not None:
                counts = _run_eval_ray(store, run_id, functools.partial(_generator, config, args.threads, http, engine),
                                       progress, args, signals)
            else:
                counts = asyncio.run(_run_eval(store, run_id, generator, progress, concurrency, signals))
        except (KeyboardInterrupt, asyncio.CancelledError):
            bar.close()
            how = "terminated (SIGTERM)" if signals else "interrupted"
            print(f"infscale: {how}; continue with: infscale eval --resume {run_id}", file=sys.stderr)
            return 143 if signals else 130
        except BaseException as e:  # noqa: BLE001 - one line naming what failed, never a group's traceback
            bar.close()
            error = unwrap_error(e, store)
            if isinstance(error, ConfigError):
                _stopped("error", error, run_id)
                return 2
            if isinstance(error, BackendError):
                _stopped("backend error", error, run_id)
                return 3
            if isinstance(error, (StoreError, InfscaleError)):
                _stopped("error", error, run_id)
                return 1
            if isinstance(error, KeyboardInterrupt):
                print(f"infscale: interrupted; continue with: infscale eval --resume {run_id}", file=sys.stderr)
                return 130
            raise
        bar.close()
        if args.no_html:
            summary, results = summarize_run(store, run_id)
            table, path = None, None
            if not args.json:
                from ..evaluation import report  # noqa: PLC0415
                from ._runs import run_title  # noqa: PLC0415

                table = report.terminal_report(summary, title=run_title(store.get_run(run_id)))
        else:
            table, path, summary, results = write_reports(store, run_id)
        tps = last[0].generated_tokens / last[0].seconds if last and last[0].seconds > 0 else None
        if args.json:
            out = {"run_id": run_id, "status": store.get_run(run_id)["status"], "db": str(store.path),
                   "counts": counts, "html": str(path) if path else None, "results": results_json(summary, results),
                   "generated_tokens_per_second": tps}
            print(json.dumps(out, ensure_ascii=False))
        else:
            print(table.rstrip("\n"))
            if path is not None:
                print(f"\nhtml report: {path}")
            print(f"run: {run_id} ({counts['samples']} samples, {counts['results']} results in {store.path})")
            _print_allocation(run_id)
            if tps is not None:
                print(f"throughput: {last[0].generated_tokens} generated tokens in {last[0].seconds:.1f} s = "
                      f"{tps:.1f} tokens/s ("
                      + (f"{args.workers or 2} Ray workers)" if args.ray is not None
                         else f"concurrency {concurrency or config.concurrency})"))
        return 0
    finally:
        store.close()


def _print_allocation(run_id: str) -> None:
    """``--total-tokens``: how auto's allocation spread the batch's tokens (if there was one)."""
    from collections import Counter  # noqa: PLC0415

    from ..home import subdir  # noqa: PLC0415

    path = subdir("reports") / f"{run_id}-allocation.json"
    if not path.exists():
        return
    for a in json.loads(path.read_text()):
        spread = Counter((x["bin"], x["spec"], x["budget"]) for x in a["per_problem"])
        print(f"allocation ({a['strategy']}, seed {a['seed']}): {a['spent']:.0f} of {a['total_tokens']:.0f} tokens "
              f"spent on {a['problems']} problems ({a['probe_tokens']:.0f} in probes); "
              + "; ".join(f"bin {b}: {s}@{n} x{c}" for (b, s, n), c in sorted(spread.items(), key=str))
              + f"  [{path}]")
