"""The CLI's user errors: exit code 2, one ``infscale: error:`` line naming the parameter, no
traceback, and no model loaded. Plus the listing commands."""

from __future__ import annotations

import subprocess
import sys
import types
from pathlib import Path

import pytest

import infscale
from infscale.cli.main import main


class _ModelLoaded(AssertionError):
    pass


@pytest.fixture(autouse=True)
def no_model_loading(monkeypatch):
    """Any attempt to build the embedded engine fails the test (without importing llama_cpp)."""

    class LlamaEngine:
        def __init__(self, *a, **kw):
            raise _ModelLoaded("the CLI tried to load a model")

    fake = types.ModuleType("infscale.backends.llamacpp")
    fake.LlamaEngine = LlamaEngine
    monkeypatch.setitem(sys.modules, "infscale.backends.llamacpp", fake)


@pytest.mark.parametrize(
    ("argv", "names"),
    [
        (["ask", "x", "--strategy", "nope"], ["strategy", "nope", "majority"]),
        (["ask", "x", "--n", "0"], ["n:", ">= 1"]),
        (["ask", "x", "--n", "-3"], ["n:", ">= 1"]),
        (["ask", "x", "--temperature=-1"], ["temperature", ">= 0"]),
        (["ask", "x", "--top-p", "0"], ["top_p", "(0, 1]"]),
        (["ask", "x", "--max-tokens", "0"], ["max_tokens", ">= 1"]),
        (["ask", "x", "--max-calls", "0"], ["budget.calls"]),
        (["ask", "x", "--param", "foo=1"], ["param", "foo"]),
        (["ask", "x", "-s", "adaptive", "--param", "threshold=abc"], ["param threshold", "float"]),
        (["ask", "x", "--param", "foo"], ["--param", "key=value", "foo"]),
        (["ask", "x", "--scorer", "nope"], ["scorer", "nope", "self-eval"]),
        (["ask", "x", "--task", "nope"], ["task", "nope", "math"]),
        (["ask", "   "], ["question"]),
    ],
)
def test_validation_errors_before_any_model(argv, names, capsys, monkeypatch):
    import infscale.api

    def no_load(*a, **kw):
        raise _ModelLoaded("load_generator called before validation finished")

    monkeypatch.setattr(infscale.api, "load_generator", no_load)
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("infscale: error: ")
    for name in names:
        assert name in lines[0]
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("model", "names"),
    [
        ("no-such-model", ["model", "no-such-model", "smollm2-135m", "gemma3-270m"]),
        ("/nonexistent/dir/missing.gguf", ["model", "not found", "missing.gguf"]),
    ],
)
def test_model_errors(model, names, capsys):
    assert main(["ask", "x", "--model", model]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    errors = [ln for ln in err.splitlines() if ln.startswith("infscale: error:")]
    assert len(errors) == 1, err
    assert err.splitlines()[-1] == errors[0]
    for name in names:
        assert name in errors[0]
    assert "Traceback" not in err


def test_argparse_errors_are_one_line(capsys):
    with pytest.raises(SystemExit) as ei:
        main(["ask", "x", "--n", "many"])
    assert ei.value.code == 2
    err = capsys.readouterr().err
    assert err.splitlines() == [err.strip()] and err.startswith("infscale: error:") and "--n" in err


def test_no_command_prints_help_and_exits_2(capsys):
    assert main([]) == 2
    assert "usage" in capsys.readouterr().err


def test_subprocess_no_traceback_exit_2():
    exe = Path(sys.executable).with_name("infscale")
    assert exe.exists(), exe
    p = subprocess.run([str(exe), "ask", "x", "--n", "0"], capture_output=True, text=True, timeout=60)
    assert p.returncode == 2
    assert p.stdout == ""
    assert "Traceback" not in p.stderr
    lines = p.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("infscale: error: n:")
    # n is the width in units of independent samples in every strategy (compute-matched budgets)
    assert "independent samples" in lines[0] and "particles or beams" not in lines[0], lines[0]


def test_strategies_lists_every_strategy(capsys):
    assert main(["strategies"]) == 0
    out = capsys.readouterr().out
    listed = {ln.split()[0] for ln in out.splitlines() if ln and not ln.startswith(" ")}
    assert listed == set(infscale.STRATEGIES)
    for s in infscale.STRATEGIES.values():
        for k in s.params:
            assert f"--param {k}=" in out


def test_models_lists_registered_models(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    names = [ln.split()[0] for ln in out.splitlines() if ln.strip()]
    assert "smollm2-135m" in names and "gemma3-270m" in names


def test_every_command_module_registers_and_no_phantom_commands(capsys):
    """Each command module listed by the CLI exists and registers its subcommand (a missing one
    fails loudly, not silently skipped); there is no ``bench`` command (bench/ holds scripts)."""
    from infscale.cli.main import _COMMAND_MODULES, build_parser  # noqa: PLC0415

    sub = next(a for a in build_parser()._actions if a.dest == "command")
    assert set(_COMMAND_MODULES) <= set(sub.choices)
    assert "bench" not in sub.choices
    with pytest.raises(SystemExit) as e:
        main(["bench"])
    assert e.value.code == 2 and "invalid choice: 'bench'" in capsys.readouterr().err


def test_ask_with_backend_url_names_the_server_not_an_embedded_model():
    """``--backend-url`` loads no embedded model: the progress line names the server it uses."""
    from infscale.testing.fake_openai import FakeOpenAIServer

    with FakeOpenAIServer() as srv:
        out = subprocess.run([sys.executable, "-m", "infscale.cli.main", "ask", "What is 6 * 7?", "--backend-url",
                              srv.base_url, "--n", "2"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "loading" not in out.stderr and "smollm2" not in out.stderr, out.stderr
    assert f"using the server at {srv.base_url}" in out.stderr, out.stderr
