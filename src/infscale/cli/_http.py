"""The connection flags of every command that can talk to an OpenAI-compatible server
(``ask``, ``eval``, ``serve`` with ``--backend-url``). Not a command itself.

Each flag overrides its environment variable, which overrides the default
(:class:`~infscale.backends.http.HttpSettings`)."""

from __future__ import annotations

__all__ = ["add_http_arguments", "http_options"]

_FLAGS = (
    ("--connect-timeout", "connect_timeout", float, "seconds to open a connection to --backend-url "
     "(default $INFSCALE_CONNECT_TIMEOUT, else 10)"),
    ("--read-timeout", "read_timeout", float, "seconds --backend-url may stay silent before an attempt is given up "
     "(default $INFSCALE_READ_TIMEOUT, else 60)"),
    ("--max-retries", "max_retries", int, "retries of a failed request to --backend-url: timeouts, resets, "
     "429/5xx (default $INFSCALE_MAX_RETRIES, else 3)"),
    ("--retry-seconds", "retry_seconds", float, "bound on one request's attempts and waits together "
     "(default $INFSCALE_RETRY_SECONDS, else 120)"),
)


def add_http_arguments(p) -> None:
    for flag, dest, kind, doc in _FLAGS:
        p.add_argument(flag, dest=dest, type=kind, default=None, metavar="S" if kind is float else "N", help=doc)


def http_options(args) -> dict:
    """The given connection flags as generator options, checked (a one-line ConfigError naming
    the flag) before anything is loaded."""
    from ..backends.http import HttpSettings  # noqa: PLC0415
    from ..errors import ConfigError  # noqa: PLC0415

    given = {dest: getattr(args, dest, None) for _, dest, _, _ in _FLAGS}
    given = {k: v for k, v in given.items() if v is not None}
    try:
        HttpSettings(**given)
    except ConfigError as e:
        flag = "--" + e.param.replace("_", "-")
        raise ConfigError(flag, str(e).split(": ", 1)[-1]) from None
    if given and getattr(args, "backend_url", None) is None and not getattr(args, "resume", None):
        flags = ", ".join("--" + k.replace("_", "-") for k in given)
        raise ConfigError(flags, "applies to --backend-url only", "leave it out for the embedded engine")
    return given
