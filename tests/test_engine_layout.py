"""The embedded engine's KV-cache layout setting (``kv_layout``, INFSCALE_KV_LAYOUT). No model needed."""

from __future__ import annotations

import pytest

from infscale.backends.llamacpp import _id_runs, _IdPool, kv_layout_setting
from infscale.errors import ConfigError


def test_layout_from_argument_and_environment(monkeypatch):
    monkeypatch.delenv("INFSCALE_KV_LAYOUT", raising=False)
    assert kv_layout_setting(None) == "unified"
    assert kv_layout_setting("Streams") == "streams"
    monkeypatch.setenv("INFSCALE_KV_LAYOUT", "streams")
    assert kv_layout_setting(None) == "streams"
    assert kv_layout_setting("unified") == "unified"  # the argument wins over the environment


@pytest.mark.parametrize("bad", ["split", "", 1, True])
def test_layout_rejects_other_values(bad, monkeypatch):
    monkeypatch.delenv("INFSCALE_KV_LAYOUT", raising=False)
    with pytest.raises(ConfigError, match="kv_layout.*'unified' or 'streams'"):
        kv_layout_setting(bad)


def test_bad_environment_value_names_the_variable(monkeypatch):
    monkeypatch.setenv("INFSCALE_KV_LAYOUT", "paged")
    with pytest.raises(ConfigError, match="INFSCALE_KV_LAYOUT"):
        kv_layout_setting(None)


def test_id_runs_counts_the_micro_batches_of_a_streams_batch():
    assert _id_runs([]) == 0
    assert _id_runs([0, 1, 2, 3]) == 1
    assert _id_runs([0, 2, 3, 7]) == 3
    assert _id_runs([3, 2, 1]) == 3  # llama.cpp accepts increasing ids only


def test_free_ids_come_back_lowest_first():
    pool = _IdPool(4)
    assert [pool.take() for _ in range(3)] == [0, 1, 2]
    pool.give(1)
    pool.give(0)
    assert 0 in pool and 2 not in pool and len(pool) == 3
    assert pool.lowest() == 0 and pool.take() == 0 and pool.take() == 1 and pool.take() == 3
