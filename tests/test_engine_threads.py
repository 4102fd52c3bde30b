"""The embedded engine's thread count: the setting (argument, INFSCALE_THREADS) and the tuner
that chooses between all cores and one thread by measuring decode steps. No model needed."""

from __future__ import annotations

import pytest

from infscale.backends.llamacpp import _ThreadTuner, threads_setting
from infscale.errors import ConfigError


def test_threads_setting_from_argument_and_environment(monkeypatch):
    monkeypatch.delenv("INFSCALE_THREADS", raising=False)
    from infscale.backends.llamacpp import usable_cores

    assert threads_setting(None) == usable_cores()  # fixed by default: seeded runs repeat exactly
    assert threads_setting(3) == 3
    assert threads_setting("2") == 2
    assert threads_setting("AUTO") == "auto"
    monkeypatch.setenv("INFSCALE_THREADS", "1")
    assert threads_setting(None) == 1
    assert threads_setting(4) == 4  # the argument wins over the environment


@pytest.mark.parametrize("bad", [0, -1, "x", "1.5", True, 2.0])
def test_threads_setting_rejects_what_is_not_a_count(bad, monkeypatch):
    monkeypatch.delenv("INFSCALE_THREADS", raising=False)
    with pytest.raises(ConfigError, match="n_threads"):
        threads_setting(bad)


def test_bad_environment_value_names_the_variable(monkeypatch):
    monkeypatch.setenv("INFSCALE_THREADS", "many")
    with pytest.raises(ConfigError, match="INFSCALE_THREADS"):
        threads_setting(None)


def drive(tuner: _ThreadTuner, cost: dict[int, float], steps: int, tokens: int = 16) -> list[int]:
    """Run ``steps`` decode-only steps whose seconds per token depend only on the thread count."""
    used = []
    for _ in range(steps):
        t = tuner.threads_for_step(decode_only=True)
        used.append(t)
        tuner.observe(t, tokens, cost[t] * tokens, decode_only=True)
    return used


def test_tuner_moves_to_one_thread_when_all_cores_collapse():
    tuner = _ThreadTuner([2, 1])
    used = drive(tuner, {2: 0.5, 1: 0.01}, 40)  # a competitor makes 2 threads 50x slower
    assert tuner.current == 1 and tuner.switches == 1
    assert used.count(2) <= 10  # the slow count ran only until the first probe


def test_tuner_keeps_the_faster_count_and_probes_ever_more_rarely():
    tuner = _ThreadTuner([2, 1])
    used = drive(tuner, {2: 0.006, 1: 0.010}, 600)  # quiet machine: 2 threads are faster
    assert tuner.current == 2 and tuner.switches == 0
    probes = [i for i, t in enumerate(used) if t == 1]
    assert 4 <= len(probes) <= 8  # intervals 8, 16, 32, ..., 256
    gaps = [b - a for a, b in zip(probes, probes[1:])]
    assert gaps == sorted(gaps)


def test_tuner_returns_to_all_cores_when_the_competitor_leaves():
    tuner = _ThreadTuner([2, 1])
    drive(tuner, {2: 0.5, 1: 0.01}, 40)
    assert tuner.current == 1
    drive(tuner, {2: 0.004, 1: 0.01}, 40)
    assert tuner.current == 2


def test_tuner_ignores_steps_that_read_prompts():
    tuner = _ThreadTuner([2, 1])
    for _ in range(50):  # prompt-reading steps: never probed, never counted
        assert tuner.threads_for_step(decode_only=False) == 2
        tuner.observe(2, 500, 5.0, decode_only=False)
    assert tuner.cost is None


def test_a_fixed_count_is_never_probed():
    tuner = _ThreadTuner([3])
    assert set(drive(tuner, {3: 0.01}, 100)) == {3}
