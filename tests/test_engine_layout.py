"""The embedded engine's KV-cache layout setting (``kv_layout``, INFSCALE_KV_LAYOUT). No model needed."""

from __future__ import annotations

import pytest

from infscale.backends.llamacpp import kv_layout_setting
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

