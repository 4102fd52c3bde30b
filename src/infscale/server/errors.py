"""Errors in OpenAI's shape, and the one function that maps exceptions to HTTP.

Every error response body is ``{"error": {"message", "type", "param", "code"}}``. The
caller's faults are 4xx and name the parameter; our own faults are 500; a generator backend
that failed is 502, or 504 when it timed out.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

from ..errors import BackendError, ConfigError

__all__ = ["ApiError", "error_body", "to_http", "validation_error"]

log = logging.getLogger("infscale.server")


@dataclass
class ApiError(Exception):
    """An error the server answers with as it is (status, OpenAI error fields, headers)."""

    status: int
    message: str
    type: str = "invalid_request_error"
    param: str | None = None
    code: str | None = None
    headers: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        return self.message


def error_body(message: str, type: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def _is_timeout(e: BackendError) -> bool:
    return e.status in (408, 504) or "timeout" in str(e).lower()


def to_http(exc: BaseException) -> tuple[int, dict[str, Any], dict[str, str]]:
    """``(status, body, headers)`` for any exception: the only place faults become HTTP."""
    if isinstance(exc, ApiError):
        return exc.status, error_body(exc.message, exc.type, exc.param, exc.code), dict(exc.headers)
    if isinstance(exc, ConfigError):
        return 400, error_body(str(exc), "invalid_request_error", exc.param, "invalid_value"), {}
    if isinstance(exc, BackendError):
        if _is_timeout(exc):
            return 504, error_body(f"the model backend timed out: {exc}", "backend_error", None, "backend_timeout"), {}
        return 502, error_body(f"the model backend failed: {exc}", "backend_error", None, "backend_error"), {}
    if isinstance(exc, (TimeoutError, asyncio.TimeoutError)):
        return 504, error_body("the model backend timed out", "backend_error", None, "backend_timeout"), {}
    log.error("internal error while serving a request", exc_info=exc)
    return 500, error_body(f"internal server error ({type(exc).__name__})", "server_error", None, "internal_error"), {}


_UNION_LABELS = frozenset({"str", "int", "float", "bool", "list[str]", "list[TextPart]", "none"})


def _param_path(loc: tuple[Any, ...] | list[Any]) -> str | None:
    """``("body", "messages", 0, "role")`` -> ``messages[0].role``."""
    parts = list(loc)
    if parts and parts[0] in ("body", "query", "path", "header"):
        parts = parts[1:]
    out = ""
    for p in parts:
        if isinstance(p, int):
            out += f"[{p}]"
        elif isinstance(p, str) and (p.startswith(("function-", "tagged-union[")) or p in _UNION_LABELS):
            continue  # pydantic's union-branch labels say nothing to a caller
        else:
            out += ("." if out else "") + str(p)
    return out or None


def validation_error(errors: list[dict[str, Any]], required: tuple[str, ...] = ()) -> ApiError:
    """A request body that did not validate: 400 naming the first offending parameter.
    ``required``: the route's required fields, named when the body is missing altogether."""
    if not errors:
        return ApiError(400, "invalid request body")
    first = errors[0]
    kind = first.get("type", "")
    if kind == "missing" and tuple(first.get("loc", ())) == ("body",) and required:
        return ApiError(400, f"{required[0]}: is required (the request body is empty; send a JSON object with "
                        f"{' and '.join(required)})", param=required[0], code="missing_parameter")
    if kind == "json_invalid":
        detail = (first.get("ctx") or {}).get("error", "")
        return ApiError(400, f"the request body is not valid JSON{': ' + str(detail) if detail else ''}",
                        code="invalid_json")
    param = _param_path(first.get("loc", ()))
    if param is None and kind in ("model_attributes_type", "dict_type", "model_type"):
        return ApiError(400, "the request body must be a JSON object", code="invalid_json")
    msg = str(first.get("msg", "invalid value")).removeprefix("Value error, ")
    if kind == "missing":
        msg = "is required"
    text = f"{param}: {msg}" if param else msg
    extra = len(errors) - 1
    if extra > 0:
        text += f" (and {extra} more problem{'s' if extra > 1 else ''})"
    return ApiError(400, text, param=param, code="missing_parameter" if kind == "missing" else "invalid_value")
