"""The Python face: ``ask`` for one question, ``load_generator`` for a model or a server.

``ask`` is a thin sync wrapper over the async :func:`infscale.run`. Embedded engines are loaded
once per model file and reused by later calls in the same process.
"""

from __future__ import annotations

import asyncio
from typing import Any

from .backends.base import Generator
from .errors import ConfigError
from .params import Budget, SamplingParams
from .strategies.runner import run
from .types import Problem, Result

__all__ = ["ask", "load_generator"]


def load_generator(model: str | None = None, *, backend_url: str | list[str] | None = None,
                   api_key: str | None = None, **engine_options: Any) -> Generator:
    """The embedded engine for ``model`` (a registered name or a .gguf path; default
    ``smollm2-135m``), or an OpenAI-compatible server's generator when ``backend_url`` is given
    (``engine_options`` then are its connection settings: ``connect_timeout``, ``read_timeout``,
    ``max_retries``, ``retry_seconds``, ...). A list of several URLs gives a
    :class:`~infscale.backends.pool.BackendPool` that spreads requests over them."""
    if isinstance(backend_url, (list, tuple)):
        if len(backend_url) == 1:
            backend_url = backend_url[0]
        else:
            from .backends.pool import BackendPool  # noqa: PLC0415

            return BackendPool.from_urls(list(backend_url), model=model, api_key=api_key, **engine_options)
    if backend_url is not None:
        from .backends.openai_http import OpenAIGenerator  # noqa: PLC0415

        return OpenAIGenerator(backend_url, model=model, api_key=api_key, **engine_options)
    from .backends.loading import load_embedded  # noqa: PLC0415

    return load_embedded(model, **engine_options)


def ask(
    question: str | Problem,
    strategy: str = "majority",
    *,
    n: int = 8,
    model: str | None = None,
    generator: Generator | None = None,
    scorer: str | None = None,
    task: str = "math",
    seed: int = 0,
    params: SamplingParams | None = None,
    budget: Budget | None = None,
    **options: Any,
) -> Result:
    """Answer ``question`` with ``strategy`` over ``n`` samples; strategy settings as keywords.

    >>> r = ask("What is 6 * 7?", strategy="majority", n=8)   # doctest: +SKIP
    >>> r.answer, r.distribution[0].weight, r.usage.generated_tokens  # doctest: +SKIP
    """
    if isinstance(question, Problem):
        problem = question
    elif isinstance(question, str) and question.strip():
        problem = Problem(question=question, task=task)
    else:
        raise ConfigError("question", "must be a non-empty string or a Problem", "a question text")
    try:
        problem.question.encode("utf-8")
    except UnicodeEncodeError as e:  # JSON's "\ud800" decodes to a str that no model, store or terminal takes
        raise ConfigError("question", f"is not valid Unicode text (a lone surrogate at character {e.start})",
                          "UTF-8 text") from None
    gen = generator or load_generator(model)
    coro = run(problem, gen, strategy, n=n, scorer=scorer, params=params, budget=budget, seed=seed, options=options)
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    coro.close()
    raise ConfigError("ask", "called inside a running event loop", "await infscale.run(...) there instead")
