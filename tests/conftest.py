"""Shared fixtures."""

from __future__ import annotations

import pytest

from infscale.errors import ConfigError


@pytest.fixture(scope="module")
def engine():
    """The embedded engine on SmolLM2-135M (slow tests; skipped where the model is missing)."""
    pytest.importorskip("llama_cpp", reason="needs the embedded engine: pip install 'infscale[embedded]'")
    from infscale.models import resolve_model

    try:
        _, path, _ = resolve_model("smollm2-135m")
    except ConfigError as e:
        pytest.skip(str(e))
    from infscale.backends.llamacpp import LlamaEngine

    eng = LlamaEngine(path, n_ctx=8192, n_seq_max=16)
    yield eng
    eng.close()
