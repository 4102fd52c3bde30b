"""Run llama-cpp-python's own OpenAI-compatible server (``python -m llama_cpp.server``) as a
real peer for tests and benchmarks, with the embedded engine's rule for llama.cpp's extra
weight buffer types (off on AMX CPUs, where ggml's AMX kernels crash; see
:func:`infscale.backends.llamacpp.extra_buffer_types_safe`).

    python -m infscale.testing.llama_server --model FILE.gguf --host 127.0.0.1 --port 8080
"""

from __future__ import annotations

import runpy
import sys


def main() -> None:
    import llama_cpp.llama_cpp as C  # noqa: PLC0415

    from ..backends.llamacpp import extra_buffer_types_safe  # noqa: PLC0415

    safe = extra_buffer_types_safe()
    default = C.llama_model_default_params

    def params():
        p = default()
        p.use_extra_bufts = safe
        return p

    C.llama_model_default_params = params
    sys.argv = ["llama_cpp.server", *sys.argv[1:]]
    runpy.run_module("llama_cpp.server", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
