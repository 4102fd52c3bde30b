"""The import layers of DESIGN.md, checked by import-linter's contract in pyproject.toml.

An upward import (a scorer importing a strategy, the server importing the package root that
pulls in the API) or a cycle between layers fails this test, so it fails ``make test``.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from importlinter.cli import lint_imports

ROOT = Path(__file__).resolve().parents[1]


def test_import_layers_contract_is_kept(monkeypatch):
    monkeypatch.chdir(ROOT)
    assert lint_imports(config_filename=str(ROOT / "pyproject.toml"), no_cache=True, no_logo=True) == 0


def test_contract_catches_an_upward_import(tmp_path, monkeypatch):
    """The same contract, on a copy of the package with one scorer importing a strategy, breaks."""
    src = tmp_path / "src"
    shutil.copytree(ROOT / "src" / "infscale", src / "infscale", ignore=shutil.ignore_patterns("__pycache__"))
    with open(src / "infscale" / "scorers" / "base.py", "a") as f:
        f.write("\nfrom ..strategies import runner as _upward  # noqa\n")
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(src))
    for name in [m for m in sys.modules if m == "infscale" or m.startswith("infscale.")]:
        monkeypatch.delitem(sys.modules, name)  # the copy, not the installed package, is analysed
    assert lint_imports(config_filename=str(tmp_path / "pyproject.toml"), no_cache=True, no_logo=True) == 1
