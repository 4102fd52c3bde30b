"""The ``infscale`` command.

Errors the user can cause print one line (``infscale: error: PARAM: what was wrong (accepted:
...)``) and exit with code 2, never a traceback. Progress goes to stderr; results to stdout.

Exit codes: 0 done; 2 the caller's mistake (a ConfigError); 3 the model backend failed (a
BackendError: a refused request, a server still failing after its retries); 1 any other
infscale error (e.g. the run database cannot be written); 130 interrupted (Ctrl-C), 143
terminated (SIGTERM, ``eval``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import time

from ..errors import BackendError, ConfigError, InfscaleError

__all__ = ["main"]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse's own usage errors: one line, exit 2
        self.exit(2, f"infscale: error: {message}\n")


def check_text_arg(name: str, text: str) -> None:
    """A command-line text that is not UTF-8 (Python keeps its bytes as lone surrogates) is a
    one-line error naming ``name``, not a traceback wherever the text is first encoded."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        code = ord(text[e.start])  # undecodable bytes arrive as U+DC80..U+DCFF
        what = f"byte 0x{code - 0xDC00:02x}" if 0xDC80 <= code <= 0xDCFF else "a lone surrogate"
        raise ConfigError(name, f"is not UTF-8 text ({what} at character {e.start + 1})",
                          "UTF-8 text (check the terminal's encoding)") from None


def _param_pairs(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        if "=" not in item:
            raise ConfigError("--param", f"expected key=value, got {item!r}", "key=value, e.g. --param threshold=0.9")
        k, v = item.split("=", 1)
        out[k.strip()] = v.strip()
    return out


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="infscale", description="Inference-time scaling: sample, score, search, vote — and measure it.")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging on stderr")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    a = sub.add_parser("ask", help="answer one question with a strategy")
    a.add_argument("question")
    a.add_argument("--strategy", "-s", default="majority", help="strategy name (see `infscale strategies`)")
    a.add_argument("--n", type=int, default=None, help="width: about the compute of N independent samples, in every "
                   "strategy (default 8; for auto a cap on the policy's budget, default none)")
    a.add_argument("--scorer", default=None, help="scorer name (default: the strategy's own)")
    a.add_argument("--model", "-m", default=None, help="registered model name or .gguf path (default smollm2-135m)")
    a.add_argument("--backend-url", default=None, action="append", metavar="URL",
                   help="an OpenAI-compatible server instead of the embedded engine; give it several times to spread requests over several servers (least outstanding requests; a failing one is taken out and retried later)")
    a.add_argument("--threads", default=None, help="llama.cpp threads of the embedded engine: N or auto "
                   "(default INFSCALE_THREADS, else every core; auto: chosen by measurement, for a shared machine)")
    from ._engine import add_engine_arguments  # noqa: PLC0415

    add_engine_arguments(a)
    a.add_argument("--task", default="math", help="math, mcq, code or text (answer extraction)")
    a.add_argument("--seed", type=int, default=0)
    a.add_argument("--temperature", type=float, default=0.7)
    a.add_argument("--top-p", type=float, default=1.0)
    a.add_argument("--top-k", type=int, default=0)
    a.add_argument("--min-p", type=float, default=0.0)
    a.add_argument("--max-tokens", type=int, default=256)
    a.add_argument("--max-generated-tokens", type=int, default=None, help="budget: generated tokens in all")
    a.add_argument("--max-calls", type=int, default=None, help="budget: model calls in all")
    a.add_argument("--max-seconds", type=float, default=None, help="budget: wall seconds")
    a.add_argument("--param", "-p", action="append", default=[], metavar="KEY=VALUE", help="strategy setting")
    a.add_argument("--policy", default=None, metavar="NAME",
                   help="--strategy auto: the policy (INFSCALE_HOME/policies/NAME.json, else shipped, or a .json path; "
                        "default: the one named after the model)")
    a.add_argument("--json", action="store_true", help="print one JSON object")
    a.add_argument("--trace", default=None, metavar="FILE.jsonl",
                   help="write every search step (nodes, scores, weights, resampling) as JSON lines")
    from ._http import add_http_arguments  # noqa: PLC0415

    add_http_arguments(a)

    m = sub.add_parser("models", help="list embedded models, or install one")
    m.add_argument("action", nargs="?", default="list", choices=["list", "install"])
    m.add_argument("name", nargs="?")

    sub.add_parser("strategies", help="list strategies with their settings and default scorers")
    for mod in _command_modules():
        mod.register(sub)
    return p


# Commands that live in their own module: infscale.cli.<name> with register(sub) and run(args).
# register() adds a subparser and sets defaults(handler=run).
_COMMAND_MODULES = ("eval", "report", "export", "data", "serve", "trace", "tune", "reproduce")


def _command_modules():
    import importlib  # noqa: PLC0415

    return [importlib.import_module(f"infscale.cli.{name}") for name in _COMMAND_MODULES]


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    urls = getattr(args, "backend_url", None)
    if isinstance(urls, list):  # --backend-url given once: one server; several times: a pool
        args.backend_url = urls[0] if len(urls) == 1 else urls
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, stream=sys.stderr,
                        format="infscale: %(levelname)s: %(message)s")
    for noisy in ("math_verify", "httpx", "latex2sympy2_extended"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    try:
        if args.command == "ask":
            return _ask(args)
        if args.command == "models":
            return _models(args)
        if args.command == "strategies":
            return _strategies()
        if getattr(args, "handler", None) is not None:
            return int(args.handler(args) or 0)
        build_parser().print_help(sys.stderr)
        return 2
    except ConfigError as e:
        print(f"infscale: error: {e}", file=sys.stderr)
        return 2
    except BackendError as e:
        print(f"infscale: backend error: {e}", file=sys.stderr)
        return 3
    except InfscaleError as e:
        print(f"infscale: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("infscale: interrupted", file=sys.stderr)
        return 130


def _ask(args) -> int:
    from ..api import load_generator  # noqa: PLC0415
    from ..params import Budget, SamplingParams  # noqa: PLC0415
    from ..strategies import get_strategy  # noqa: PLC0415
    from ..params import MAX_WIDTH  # noqa: PLC0415
    from ..strategies.runner import check_n, run  # noqa: PLC0415
    from ..types import Problem  # noqa: PLC0415
    from ..tasks import get_task  # noqa: PLC0415

    # validate everything before loading a model
    strat = get_strategy(args.strategy)
    if args.n is None:  # auto: n only caps the policy's budget, so no cap but the work limit unless given
        args.n = MAX_WIDTH if getattr(strat, "n_is_cap", False) else 8
    check_n(args.n)
    given = _param_pairs(args.param)
    if args.policy is not None:
        if "policy" not in strat.params:
            raise ConfigError("--policy", f"strategy {strat.name!r} takes no policy", "--strategy auto --policy NAME")
        given["policy"] = args.policy
    options = strat.options(given)
    get_task(args.task)
    params = SamplingParams(temperature=args.temperature, top_p=args.top_p, top_k=args.top_k, min_p=args.min_p,
                            max_tokens=args.max_tokens, seed=args.seed)
    budget = Budget(generated_tokens=args.max_generated_tokens, calls=args.max_calls, seconds=args.max_seconds)
    if args.scorer is not None:
        from ..scorers import get_scorer  # noqa: PLC0415

        get_scorer(args.scorer)
    if not args.question.strip():
        raise ConfigError("question", "is empty", "a question text")
    check_text_arg("question", args.question)
    if args.trace is not None:
        from ._paths import check_output_file  # noqa: PLC0415

        check_output_file("--trace", args.trace)

    if "policy" in strat.params and args.backend_url is None:  # auto: a bad policy fails before the model loads
        from pathlib import Path  # noqa: PLC0415

        from ..strategies.policy import load_policy  # noqa: PLC0415

        model = args.model or "smollm2-135m"
        load_policy(options.get("policy") or None, Path(model).stem if model.endswith(".gguf") else model)

    from ._http import http_options  # noqa: PLC0415

    from ._engine import engine_options as _engine_options  # noqa: PLC0415

    engine_options = {**http_options(args), **_engine_options(args)}
    if args.threads is not None and args.backend_url is None:
        from ..backends.llamacpp import threads_setting  # noqa: PLC0415

        engine_options["n_threads"] = threads_setting(args.threads, "--threads")

    t0 = time.monotonic()
    if args.backend_url is None:
        _progress(f"loading {args.model or 'smollm2-135m'} ...")
    else:
        _progress(f"using the server at {args.backend_url} (model: {args.model or 'its first model'}) ...")
    gen = load_generator(args.model, backend_url=args.backend_url, **engine_options)
    width = "no cap" if args.n == MAX_WIDTH else f"n={args.n}"
    _progress(f"running {strat.name} with {width} ({time.monotonic() - t0:.1f}s to load)")
    problem = Problem(question=args.question, task=args.task, id="cli")
    result = asyncio.run(run(problem, gen, strat, n=args.n, scorer=args.scorer, params=params, budget=budget,
                             seed=args.seed, options=options, trace=args.trace is not None))
    if args.trace:
        from .trace import write_trace  # noqa: PLC0415

        d = result.to_dict()
        write_trace(args.trace, {"strategy": strat.name, "n": args.n, "question": args.question, "seed": args.seed,
                                 "options": options}, result.trace,
                    {"answer": d["answer"], "distribution": d["distribution"], "usage": d["usage"],
                     "path": result.info.get("path")})
        _progress(f"trace written to {args.trace} (show it with: infscale trace show {args.trace})")
    if args.json:
        print(json.dumps(result.to_dict(), ensure_ascii=False))
    else:
        _print_result(result)
    return 0


def _progress(msg: str) -> None:
    print(f"infscale: {msg}", file=sys.stderr, flush=True)


def _print_result(r) -> None:
    why = "the policy abstains on this signal" if (r.info.get("decision") or {}).get("action") == "abstain" \
        else "no sample gave an answer"
    print(f"answer: {r.answer if r.answer is not None else f'(abstained: {why})'}")
    if len(r.answers) > 1 and r.strategy == "bom":
        print(f"answers (top {len(r.answers)}): {', '.join(r.answers)}")
    no_answer = sum(1 for c in r.candidates if c.answer is None)
    print(f"\n{'answer':<24} {'weight':>7} {'count':>6}")
    for m in r.distribution:
        print(f"{m.answer[:24]:<24} {m.weight:>7.3f} {m.count:>6}")
    if no_answer:
        print(f"{'(no answer)':<24} {'':>7} {no_answer:>6}")
    d = r.info.get("decision")
    if d is not None:  # auto: what it read and what it chose
        value = "none" if d.get("value") is None else f"{d['value']:.3g}"
        what = {"abstain": "abstain", "answer": f"answer now ({d.get('spec')} over the probe)",
                "continue": f"{d.get('spec')} at budget {d.get('budget')}"}.get(d["action"], d["action"])
        print(f"\ndecision: policy {d['policy']}, {d['signal']} = {value} on {d['probe']} probe samples, "
              f"bin {d['bin']}: {what}{' (capped by --n)' if d.get('capped') else ''}")
    u = r.usage
    early = ", stopped early" if r.stopped_early else ""
    print(f"\nusage: {len(r.candidates)} samples{early}, {u.calls} calls, {u.prompt_tokens} prompt tokens, "
          f"{u.generated_tokens} generated tokens, {u.seconds:.1f}s")
    for label, part in u.by_model.items():
        print(f"  of which {label}: {part.calls} calls, {part.prompt_tokens} prompt tokens, "
              f"{part.generated_tokens} generated tokens")


def _models(args) -> int:
    from ..models import MODELS, install_model, model_status  # noqa: PLC0415

    if args.action == "install":
        if not args.name:
            raise ConfigError("name", "missing", ", ".join(MODELS))
        path = install_model(args.name)
        print(f"{args.name}: {path}")
        return 0
    for s in model_status():
        mark = "installed" if s["installed"] else f"not installed ({s['install']})"
        print(f"{s['name']:<14} {mark:<48} {s['description']}")
    return 0


def _strategies() -> int:
    from ..strategies import STRATEGIES  # noqa: PLC0415

    for s in STRATEGIES.values():
        scorer = s.default_scorer or "-"
        print(f"{s.name:<12} scorer={scorer:<10} {s.summary}")
        for k, spec in s.params.items():
            print(f"{'':<14}--param {k}={spec.default!r}: {spec.doc}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
