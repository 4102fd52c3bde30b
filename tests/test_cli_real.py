"""The CLI end to end on the real embedded model (slow)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytest.importorskip("llama_cpp", reason="needs the embedded engine: pip install 'infscale[embedded]'")
pytestmark = pytest.mark.slow


def _installed(name: str) -> bool:
    from infscale.models import model_status

    return any(s["name"] == name and s["installed"] for s in model_status())


def test_ask_json_on_the_embedded_model():
    if not _installed("smollm2-135m"):
        pytest.skip("infscale models install smollm2-135m")
    cmd = [sys.executable, "-m", "infscale.cli.main", "ask", "What is 15 + 27?", "--n", "4", "--json", "--seed", "3"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    d = json.loads(out.stdout)
    assert {"answer", "distribution", "candidates", "usage"} <= d.keys()
    assert {"generated_tokens", "prompt_tokens", "calls", "seconds"} <= d["usage"].keys()
    assert d["usage"]["calls"] == 4 and len(d["candidates"]) == 4
    assert d["answer"] is None or d["answer"] == d["distribution"][0]["answer"]
    if d["distribution"]:
        assert abs(sum(m["weight"] for m in d["distribution"]) - 1.0) < 1e-9
    assert "running majority with n=4" in out.stderr  # progress goes to stderr
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert [c["text"] for c in json.loads(again.stdout)["candidates"]] == [c["text"] for c in d["candidates"]]


def test_gemma_base_model_with_plain_text_prompt():
    if not _installed("gemma3-270m"):
        pytest.skip("gemma3-270m is not installed: infscale models install gemma3-270m")
    import infscale

    gen = infscale.load_generator("gemma3-270m")
    assert not gen.capabilities.chat_template  # a base model: plain-text few-shot prompt
    r = infscale.ask("What is 2 + 3?", "majority", n=2, generator=gen,
                     params=infscale.SamplingParams(max_tokens=48))
    assert len(r.candidates) == 2 and r.usage.generated_tokens > 0
    assert all("Question:" not in c.text for c in r.candidates)  # stopped before a new question
