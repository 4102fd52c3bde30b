"""``infscale reproduce``: run a research claim on the shipped model and write its verdict.

::

    infscale reproduce CLAIM [--quick | --tiny] [--model M] [--backend-url URL] [--db PATH] [--out DIR]
    infscale reproduce all --quick
    infscale reproduce --list

Each claim runs its evaluations through the normal harness (stored in the run database,
resumable, samples shared between claims), prints its table and checks, and writes
``CLAIM[-quick|-tiny].md`` with its figure (``.svg`` and ``.png``) into
``INFSCALE_HOME/claims`` (or ``--out``).
"""

from __future__ import annotations

from ..errors import ConfigError

__all__ = ["register", "run"]


def register(sub) -> None:
    p = sub.add_parser("reproduce", help="reproduce a research claim on the shipped model (figure + verdict)",
                       description="Run a research claim's evaluations through the harness and write its figure "
                                   "and verdict into INFSCALE_HOME/claims. `--list` names the claims.")
    p.add_argument("claim", nargs="?", default=None, help="a claim name (see --list), or all")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="the smaller preset (about 10 minutes on 2 cores)")
    size.add_argument("--tiny", action="store_true", help="the smallest preset (the slow test suite)")
    p.add_argument("--list", action="store_true", help="name the claims and their papers")
    p.add_argument("--model", "-m", default=None, help="registered model name or .gguf path (default smollm2-135m)")
    p.add_argument("--backend-url", default=None, help="an OpenAI-compatible server instead of the embedded engine")
    p.add_argument("--out", default=None, metavar="DIR", help="where to write (default INFSCALE_HOME/claims)")
    from ._runs import add_db_argument  # noqa: PLC0415

    add_db_argument(p)
    p.set_defaults(handler=run)


def run(args) -> int:
    from ..claims import CLAIMS, get_claim  # noqa: PLC0415

    if args.list:
        for c in CLAIMS.values():
            extra = f" (needs: {', '.join(c.requires)})" if c.requires else ""
            print(f"{c.name:<20} {c.title}{extra}\n{'':<20} {c.paper}")
        return 0
    if not args.claim:
        raise ConfigError("claim", "missing", "a claim name (" + ", ".join(CLAIMS) + "), all, or --list")
    names = list(CLAIMS) if args.claim == "all" else [get_claim(args.claim).name]
    preset = "quick" if args.quick else "tiny" if args.tiny else "full"
    from ..claims.write import reproduce, terminal_table  # noqa: PLC0415
    from ._runs import open_store  # noqa: PLC0415

    store = open_store(args, create=True)  # reproduce runs evaluations: it may start the database
    try:
        for name in names:
            rep = reproduce(CLAIMS[name], preset, model=args.model, backend_url=args.backend_url, store=store,
                            out=args.out)
            print(terminal_table(rep))
            print(flush=True)
    finally:
        store.close()
    return 0

