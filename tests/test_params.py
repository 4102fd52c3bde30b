"""SamplingParams and Budget validation: every rejection names the parameter and what is accepted."""

from __future__ import annotations

import math

import pytest

from infscale import Budget, ConfigError, SamplingParams


@pytest.mark.parametrize(
    ("field", "value", "accepted"),
    [
        ("temperature", -0.1, ">= 0"),
        ("temperature", math.nan, ">= 0"),
        ("temperature", math.inf, ">= 0"),
        ("temperature", "0.7", ">= 0"),
        ("temperature", True, ">= 0"),
        ("top_p", 0.0, "(0, 1]"),
        ("top_p", 1.5, "(0, 1]"),
        ("top_p", -0.2, "(0, 1]"),
        ("top_k", -1, ">= 0"),
        ("top_k", 2.5, ">= 0"),
        ("min_p", -0.01, "[0, 1]"),
        ("min_p", 1.01, "[0, 1]"),
        ("max_tokens", 0, ">= 1"),
        ("max_tokens", -5, ">= 1"),
        ("max_tokens", 3.0, ">= 1"),
        ("top_logprobs", -1, "[0, 20]"),
        ("top_logprobs", 21, "[0, 20]"),
        ("seed", 1.5, "integer"),
        ("seed", "7", "integer"),
        ("seed", False, "integer"),
        ("stop", ("",), "non-empty"),
        ("stop", (1,), "non-empty"),
    ],
)
def test_sampling_params_rejects_with_name_and_accepted(field, value, accepted):
    with pytest.raises(ConfigError) as ei:
        SamplingParams(**{field: value})
    e = ei.value
    assert e.param == field
    msg = str(e)
    assert msg.startswith(f"{field}:")
    assert accepted in msg
    assert "accepted" in msg


@pytest.mark.parametrize(
    ("field", "value", "accepted"),
    [
        ("generated_tokens", 0, ">= 1"),
        ("generated_tokens", 2.5, ">= 1"),
        ("calls", 0, ">= 1"),
        ("calls", -3, ">= 1"),
        ("calls", True, ">= 1"),
        ("seconds", 0.0, "> 0"),
        ("seconds", -1.0, "> 0"),
        ("seconds", math.nan, "> 0"),
    ],
)
def test_budget_rejects_with_name_and_accepted(field, value, accepted):
    with pytest.raises(ConfigError) as ei:
        Budget(**{field: value})
    msg = str(ei.value)
    assert f"budget.{field}" in msg
    assert accepted in msg


def test_boundaries_are_accepted():
    SamplingParams(temperature=0.0, top_p=1.0, top_k=0, min_p=0.0, max_tokens=1, top_logprobs=0, seed=None)
    SamplingParams(temperature=5, top_p=1e-9, top_k=10**6, min_p=1.0, top_logprobs=20)
    Budget()
    Budget(generated_tokens=1, calls=1, seconds=1e-3)


def test_stop_string_becomes_tuple():
    p = SamplingParams(stop="\n\n")
    assert p.stop == ("\n\n",)
    assert isinstance(p.stop, tuple)
    q = SamplingParams(stop=["a", "b"])
    assert q.stop == ("a", "b")
    assert isinstance(q.stop, tuple)
    assert SamplingParams().stop == ()


def test_greedy_and_with_revalidates():
    assert SamplingParams(temperature=0.0).greedy
    assert not SamplingParams(temperature=0.1).greedy
    p = SamplingParams().with_(temperature=0.0, stop="x")
    assert p.greedy and p.stop == ("x",)
    with pytest.raises(ConfigError, match="temperature"):
        SamplingParams().with_(temperature=-1.0)


def test_params_are_frozen():
    p = SamplingParams()
    with pytest.raises(AttributeError):
        p.temperature = 1.0  # type: ignore[misc]
