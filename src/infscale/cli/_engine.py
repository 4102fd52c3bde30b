"""The embedded engine's offload flag of ``ask``, ``eval`` and ``serve``. Not a command itself.

``--gpu-layers N`` offloads N transformer layers to the GPU (llama.cpp's ``n_gpu_layers``; -1:
all). It needs llama-cpp-python built with a GPU backend (README, "Backends"); on a CPU-only
build llama.cpp keeps every layer on the CPU."""

from __future__ import annotations

__all__ = ["add_engine_arguments", "engine_options"]


def add_engine_arguments(p) -> None:
    p.add_argument("--gpu-layers", dest="gpu_layers", type=int, default=None, metavar="N",
                   help="layers of the embedded model offloaded to the GPU (llama.cpp n_gpu_layers; -1: all; "
                        "default 0; needs llama-cpp-python built with CUDA or Metal)")


def engine_options(args) -> dict:
    """``{"n_gpu_layers": N}`` when ``--gpu-layers`` is given, checked (one line naming the flag)."""
    from ..errors import ConfigError  # noqa: PLC0415

    n = getattr(args, "gpu_layers", None)
    if n is None:
        return {}
    if getattr(args, "backend_url", None) is not None:
        raise ConfigError("--gpu-layers", "applies to the embedded engine only",
                          "leave it out with --backend-url (the server there decides its own offload)")
    if n < -1:
        raise ConfigError("--gpu-layers", f"got {n}", "an integer >= -1 (-1: all layers)")
    return {"n_gpu_layers": n}
