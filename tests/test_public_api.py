"""The public surface is pinned, and importing it stays light (no llama_cpp, torch or vllm)."""

from __future__ import annotations

import json
import subprocess
import sys

import infscale

PUBLIC = [
    "AnswerMass",
    "BackendError",
    "Budget",
    "Candidate",
    "Completion",
    "ConfigError",
    "GenRequest",
    "InfscaleError",
    "Problem",
    "Result",
    "STRATEGIES",
    "SamplingParams",
    "Usage",
    "__version__",
    "ask",
    "get_strategy",
    "load_generator",
    "run",
]


def test_all_is_pinned():
    assert sorted(infscale.__all__) == sorted(PUBLIC)
    assert len(infscale.__all__) == len(set(infscale.__all__))
    for name in infscale.__all__:
        assert hasattr(infscale, name), name


def test_import_is_light():
    code = (
        "import sys, json, infscale, infscale.testing, infscale.cli.main; "
        "print(json.dumps([m for m in ('llama_cpp', 'torch', 'vllm') if m in sys.modules]))"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout.strip().splitlines()[-1]) == []


def test_errors_hierarchy():
    assert issubclass(infscale.ConfigError, infscale.InfscaleError)
    assert issubclass(infscale.ConfigError, ValueError)
    assert issubclass(infscale.BackendError, infscale.InfscaleError)
    e = infscale.ConfigError("n", "got 0", "an integer >= 1")
    assert e.param == "n" and str(e) == "n: got 0 (accepted: an integer >= 1)"
