"""Where infscale keeps its state: ``INFSCALE_HOME`` (default: the user's cache directory).

Assembled models, fetched datasets, run databases and reports live below it. Nothing is
written into the source tree unless the user names a path there.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["home", "subdir"]


def home() -> Path:
    env = os.environ.get("INFSCALE_HOME")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "infscale"


def subdir(name: str) -> Path:
    p = home() / name
    p.mkdir(parents=True, exist_ok=True)
    return p
