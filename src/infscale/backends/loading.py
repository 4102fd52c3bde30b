"""Loading embedded engines once per process.

:func:`load_embedded` returns the :class:`~infscale.backends.llamacpp.LlamaEngine` for a
registered model name or a .gguf path, built on first use and shared by every later caller with
the same options — the Python API's ``load_generator`` and a scorer that runs on a model of its
own (``judge:model=gemma3-270m``) alike, so one model file is loaded into memory once.
"""

from __future__ import annotations

import threading
from typing import Any

from .base import Generator

__all__ = ["load_embedded"]

_engines: dict[str, Generator] = {}
_lock = threading.Lock()


def load_embedded(model: str | None = None, **engine_options: Any) -> Generator:
    """The embedded engine for ``model`` (a registered name or a .gguf path; default
    ``smollm2-135m``); a one-line ConfigError names the install command of a missing model."""
    from ..models import resolve_model  # noqa: PLC0415

    name, path, spec = resolve_model(model)
    key = f"{path}|{sorted(engine_options.items())}"
    with _lock:
        eng = _engines.get(key)
        if eng is None:
            from .llamacpp import LlamaEngine  # noqa: PLC0415

            template = "auto" if spec is None or spec.chat else None
            eng = LlamaEngine(path, model_name=name, chat_template=template, **engine_options)
            _engines[key] = eng
    return eng
