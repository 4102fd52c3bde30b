"""``infscale serve``: the OpenAI-compatible server (FastAPI + uvicorn).

Every setting is checked before the model is loaded; mistakes are one line, exit code 2.
"""

from __future__ import annotations

import argparse
import errno
import ipaddress
import os
import sys

from ..errors import ConfigError, MissingExtraError

__all__ = ["register", "run"]


def register(sub) -> None:
    p = sub.add_parser("serve", help="serve an OpenAI-compatible API (model names STRATEGY[-BUDGET]:MODEL)",
                       description="Serve infscale over the OpenAI API: POST /v1/chat/completions, /v1/completions; "
                                   "GET /v1/models, /health, /metrics. Pick a strategy with the model name "
                                   "STRATEGY[-BUDGET]:MODEL (e.g. majority-8:smollm2-135m) or an 'infscale' body field.")
    p.add_argument("--model", "-m", default=None,
                   help="embedded model name or .gguf path (default smollm2-135m); with --backend-url, the backend's model")
    p.add_argument("--backend-url", default=None, action="append", metavar="URL",
                   help="generate through an OpenAI-compatible server instead; several times: spread over several "
                        "servers (least outstanding requests; a failing one is taken out and retried later)")
    p.add_argument("--backend-api-key", default=os.environ.get("INFSCALE_BACKEND_API_KEY"),
                   help="bearer token for --backend-url (default $INFSCALE_BACKEND_API_KEY)")
    p.add_argument("--served-model-name", default=None, help="the name clients use (default: the model's)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--api-key", default=os.environ.get("INFSCALE_API_KEY"),
                   help="require 'Authorization: Bearer KEY' (default $INFSCALE_API_KEY; none = open)")
    p.add_argument("--max-concurrency", type=int, default=None,
                   help="requests running at once (default: what keeps the embedded engine full at "
                        "--default-budget; 16 with --backend-url)")
    p.add_argument("--threads", default=None, help="llama.cpp threads of the embedded engine: N or auto "
                   "(default INFSCALE_THREADS, else every core; auto: chosen by measurement, for a shared machine)")
    from ._engine import add_engine_arguments  # noqa: PLC0415

    add_engine_arguments(p)
    p.add_argument("--max-queue", type=int, default=64, help="requests waiting for a slot; beyond: 429 (default 64)")
    p.add_argument("--max-budget", type=int, default=64, help="largest width (samples/particles/beams) per request")
    p.add_argument("--max-body-bytes", type=int, default=1 << 20, help="request body limit (default 1 MiB)")
    p.add_argument("--max-tokens-limit", type=int, default=4096, help="largest max_tokens per sample")
    p.add_argument("--max-tokens", type=int, default=256, help="max_tokens when a request gives none")
    p.add_argument("--default-budget", type=int, default=8, help="width for STRATEGY:MODEL without -N (default 8)")
    p.add_argument("--task", default="math", help="answer extraction when a request gives none: math, mcq, code, text")
    p.add_argument("--temperature", type=float, default=0.7, help="temperature when a request gives none")
    p.add_argument("--shutdown-timeout", type=float, default=30.0,
                   help="seconds in-flight requests may finish after SIGTERM/Ctrl-C before they are cancelled "
                        "(with a 503 shutting_down)")
    p.add_argument("--max-request-seconds", type=float, default=300.0,
                   help="wall seconds one request may run; then its strategy answers from what it has "
                        "(or 504 if it cannot) (default 300)")
    p.add_argument("--max-param", action="append", default=[], metavar="NAME=MAX",
                   help="work limit of a strategy setting, e.g. --max-param iterations=8 (default: each "
                        "setting's own, see GET /v1/models; integer settings 1024)")
    from ._http import add_http_arguments  # noqa: PLC0415

    add_http_arguments(p)
    p.add_argument("--log-level", default="warning", choices=["critical", "error", "warning", "info", "debug"])
    p.set_defaults(handler=run)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_port_free(host: str, port: int) -> None:
    """A one-line error when ``host:port`` cannot be bound (in use, or a host not of this
    machine), instead of uvicorn's log lines after the model has loaded."""
    import socket  # noqa: PLC0415

    if port == 0:
        return
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise ConfigError("--host", f"cannot resolve {host!r} ({e.strerror})", "an address of this machine") from None
    family, kind, proto, _, addr = infos[0]
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            sock.bind(addr)
        except OSError as e:
            what = "is already in use" if e.errno == errno.EADDRINUSE else f"cannot be bound ({e.strerror})"
            raise ConfigError("--port", f"{host}:{port} {what}", "a free port (or --port 0 for any)") from None


def run(args: argparse.Namespace) -> int:
    try:
        import uvicorn  # noqa: PLC0415

        from ..server import create_app  # noqa: PLC0415
    except ImportError as e:
        raise MissingExtraError("fastapi/uvicorn (the server)", "pip install 'infscale[server]'") from e
    from ..api import load_generator  # noqa: PLC0415

    if not 0 <= args.port <= 65535:
        raise ConfigError("--port", f"got {args.port}", "an integer in [0, 65535]")
    if args.api_key is not None and not args.api_key.strip():
        raise ConfigError("--api-key", "is empty", "a non-empty token, or leave it out")
    check_port_free(args.host, args.port)  # before any model loads and before "serving on"
    if not _is_loopback(args.host) and not args.api_key:
        print(f"infscale: warning: serving on {args.host} without --api-key: anyone who can reach it can use it",
              file=sys.stderr)
    from ._http import http_options  # noqa: PLC0415

    from ._engine import engine_options as _engine_options  # noqa: PLC0415

    loaded = {}
    engine_options = {**http_options(args), **_engine_options(args)}
    max_concurrency = args.max_concurrency
    if args.backend_url is None:
        from ..backends.llamacpp import best_concurrency, threads_setting  # noqa: PLC0415

        if args.threads is not None:
            engine_options["n_threads"] = threads_setting(args.threads, "--threads")
        if max_concurrency is None:
            max_concurrency = best_concurrency(args.default_budget)
    elif max_concurrency is None:
        max_concurrency = 16

    def factory():
        if "engine" in loaded:
            return loaded["engine"]
        return load_generator(args.model, backend_url=args.backend_url, api_key=args.backend_api_key,
                              **engine_options)

    def ready(service) -> None:
        url = f"http://{args.host}:{args.port}/v1"
        print(f"infscale: serving {service.model_name} on {url} (model names STRATEGY[-BUDGET]:{service.model_name}; "
              "GET /v1/models lists them)", file=sys.stderr, flush=True)

    param_limits = {}
    for item in args.max_param:
        name, sep, value = item.partition("=")
        try:
            param_limits[name.strip()] = float(value) if sep else None
        except ValueError:
            param_limits[name.strip()] = None
        if param_limits[name.strip()] is None:
            raise ConfigError("--max-param", f"expected NAME=MAX, got {item!r}", "e.g. --max-param iterations=8")
    # building the app checks every limit (a ConfigError names the flag) before any model loads
    app = create_app(
        factory, model_name=args.served_model_name, api_key=args.api_key, max_concurrency=max_concurrency,
        max_queue=args.max_queue, max_budget=args.max_budget, max_body_bytes=args.max_body_bytes,
        max_tokens_limit=args.max_tokens_limit, default_max_tokens=args.max_tokens,
        default_budget=args.default_budget, default_task=args.task, default_temperature=args.temperature,
        shutdown_timeout=args.shutdown_timeout, max_request_seconds=args.max_request_seconds,
        param_limits=param_limits, on_ready=ready,
    )
    if args.backend_url is None:
        # the embedded model loads now, so that a missing model is one line, not a startup traceback;
        # the app owns it (the factory hands it over) and closes it at shutdown
        print(f"infscale: loading {args.model or 'smollm2-135m'} ...", file=sys.stderr, flush=True)
        loaded["engine"] = factory()
    from ..server.threaded import DRAIN_MARGIN_SECONDS, DrainingServer  # noqa: PLC0415

    # the app drains first (DrainingServer); uvicorn's own timeout lies beyond it, so it never
    # cuts a request the app is still draining
    config = uvicorn.Config(app, host=args.host, port=args.port, log_level=args.log_level, access_log=False,
                            lifespan="on", timeout_graceful_shutdown=args.shutdown_timeout + DRAIN_MARGIN_SECONDS)
    server = DrainingServer(config)
    server.run()
    if not server.started:
        print("infscale: error: the server did not start (see the message above)", file=sys.stderr)
        return 1
    return 0
