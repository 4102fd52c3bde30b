"""Every registered strategy that needs log-probabilities or token confidence (issue 13: DeepConf,
MUR, φ-decoding, RPC, self-eval-beam's mix, ...), against an OpenAI-compatible server that
returns none: one line naming the capability, before any generation request. Iterates the
registry, so a strategy added later is covered."""

from __future__ import annotations

import pytest

import infscale
from infscale import Problem
from infscale.backends.openai_http import OpenAIGenerator
from infscale.errors import ConfigError
from infscale.testing.fake_openai import FakeOpenAIServer

PROBLEM = Problem(id="h", question="What is 6 * 7?")
NEEDS = {"logprobs", "top_logprobs", "confidence", "self_certainty"}


def needing() -> list[tuple[str, dict]]:
    """(strategy, settings) pairs whose requirements include a log-probability capability, with
    the settings that ask for it (defaults, and ``by=prob`` where a strategy has it)."""
    out = []
    for name, strat in sorted(infscale.STRATEGIES.items()):
        variants = [{}]
        if "by" in strat.params and "prob" in (strat.params["by"].choices or ()):
            variants.append({"by": "prob"})
        for opts in variants:
            caps = set()
            for r in strat.requires(strat.options(opts)):
                caps |= {r.capability} if isinstance(r.capability, str) else set(r.capability)
            if caps & NEEDS:
                out.append((name, opts))
    return out


CASES = needing()


def test_the_strategies_of_issue_13_are_among_them():
    names = {n for n, _ in CASES}
    assert {"deepconf", "deepconf-online", "mur", "phi-decoding", "weighted"} <= names


@pytest.mark.parametrize("name, opts", CASES, ids=[f"{n}{'-' + str(o) if o else ''}" for n, o in CASES])
async def test_refused_in_one_line_before_any_generation(name, opts):
    with FakeOpenAIServer(logprobs=False) as srv:
        gen = OpenAIGenerator(srv.base_url)
        with pytest.raises(ConfigError) as e:
            await infscale.run(PROBLEM, gen, name, n=4, options=opts, scorer="arith-check")
        await gen.aclose()
        generation = [b for b in srv.requests if "6 * 7" in str(b)]
    msg = str(e.value)
    assert "\n" not in msg and not generation, msg
    assert "logprob" in msg or "confidence" in msg, msg
