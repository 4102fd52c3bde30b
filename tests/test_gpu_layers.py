"""``--gpu-layers N`` reaches the embedded engine (llama.cpp's n_gpu_layers) from ask, eval and
serve; on this CPU machine the real engine takes the setting and still runs on the CPU."""

from __future__ import annotations

import sys
import types

import pytest

from infscale.cli.main import main


class _Loaded(Exception):
    pass


@pytest.fixture
def engine_kwargs(monkeypatch):
    """A stand-in engine module: records the options the CLI built the engine with, then stops."""
    seen: list[dict] = []

    class LlamaEngine:
        def __init__(self, path, **kw):
            seen.append(kw)
            raise _Loaded()

    fake = types.ModuleType("infscale.backends.llamacpp")
    fake.LlamaEngine = LlamaEngine
    fake.threads_setting = lambda v, name="n_threads": int(v)
    fake.best_concurrency = lambda n, max_live=64: 4
    monkeypatch.setitem(sys.modules, "infscale.backends.llamacpp", fake)
    return seen


@pytest.fixture
def gguf(tmp_path):
    p = tmp_path / "m.gguf"
    p.write_bytes(b"GGUF")
    return str(p)


def test_ask_passes_gpu_layers_to_the_engine(engine_kwargs, gguf):
    with pytest.raises(_Loaded):
        main(["ask", "What is 1 + 1?", "--model", gguf, "--gpu-layers", "7", "--n", "1"])
    assert engine_kwargs[-1]["n_gpu_layers"] == 7


def test_eval_passes_gpu_layers_to_the_engine(engine_kwargs, gguf, tmp_path, monkeypatch):
    monkeypatch.setenv("INFSCALE_HOME", str(tmp_path / "home"))
    data = tmp_path / "d.jsonl"
    data.write_text('{"question": "1 + 1?", "answer": "2"}\n')
    with pytest.raises(_Loaded):
        main(["eval", "--dataset", str(data), "--model", gguf, "--gpu-layers", "-1", "--no-progress",
              "--db", str(tmp_path / "runs.sqlite")])
    assert engine_kwargs[-1]["n_gpu_layers"] == -1


@pytest.mark.parametrize("argv", [
    ["ask", "x", "--gpu-layers", "2", "--backend-url", "http://127.0.0.1:9/v1"],
    ["ask", "x", "--gpu-layers", "-2"],
])
def test_gpu_layers_errors_are_one_line(engine_kwargs, argv, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--gpu-layers" in err[0]
    assert not engine_kwargs


@pytest.mark.slow
def test_real_engine_takes_gpu_layers_on_a_cpu_build():
    from infscale.backends.llamacpp import LlamaEngine
    from infscale.errors import ConfigError
    from infscale.models import resolve_model
    from infscale.params import SamplingParams
    from infscale.types import GenRequest
    import asyncio

    _, path, _ = resolve_model("smollm2-135m")
    eng = LlamaEngine(path, n_ctx=512, n_seq_max=2, n_threads=1, n_gpu_layers=4)
    try:
        assert eng.n_gpu_layers == 4
        out = asyncio.run(eng.generate([GenRequest(params=SamplingParams(max_tokens=4, temperature=0), prompt="1 2 3")]))
        assert out[0].generated_tokens >= 1
    finally:
        eng.close()
    with pytest.raises(ConfigError, match="n_gpu_layers"):
        LlamaEngine(path, n_gpu_layers=-5)
