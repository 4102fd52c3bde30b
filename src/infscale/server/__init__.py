"""The OpenAI-compatible server (``infscale serve``): any strategy behind the API clients speak.

Layers, thin to thick: :mod:`.app` (routes, the ASGI gate, streaming) -> :mod:`.protocol`
(request and response models) -> :mod:`.serving` (plan, admit, run, shape the answer) ->
:func:`infscale.run`. Needs the ``server`` extra (FastAPI, uvicorn).
"""

from __future__ import annotations

from .app import create_app
from .serving import ServerConfig, parse_model_name
from .threaded import ServerThread

__all__ = ["create_app", "ServerConfig", "ServerThread", "parse_model_name"]
