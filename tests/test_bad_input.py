"""Bad input and bad output paths: each is one ``infscale: error:`` line with exit code 2 (or is
handled), never a traceback, never a run left "running" with no problems, and no command makes
a directory outside INFSCALE_HOME or the path the user named. Run ids that would leave their
folder (path traversal through a shared database) are refused."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest

from infscale.cli.main import main
from infscale.evaluation.store import Store
from infscale.testing.fake_openai import FakeOpenAIServer


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("INFSCALE_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


@pytest.fixture(autouse=True)
def no_model_loading(monkeypatch):
    """Building the embedded engine fails the test: every check comes before any model."""

    class LlamaEngine:
        def __init__(self, *a, **kw):
            raise AssertionError("the CLI tried to load a model")

    fake = types.ModuleType("infscale.backends.llamacpp")
    fake.LlamaEngine = LlamaEngine
    monkeypatch.setitem(sys.modules, "infscale.backends.llamacpp", fake)


def one_error(capsys, *names: str) -> str:
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.startswith("infscale: error:")]
    assert len(lines) == 1 and err.splitlines()[-1] == lines[0], err
    for name in names:
        assert name in lines[0], (name, lines[0])
    return lines[0]


def tree(path: Path) -> set[str]:
    return {str(p.relative_to(path)) for p in path.rglob("*")} if path.exists() else set()


# -- text that is not UTF-8 ----------------------------------------------------------------------

def test_ask_with_a_non_utf8_question_is_one_line_exit_2(tmp_path):
    """``infscale ask $'What is \\xff?'``: the shell passes a byte that is not UTF-8."""
    env = {**os.environ, "INFSCALE_HOME": str(tmp_path / "home"), "LC_ALL": "C.UTF-8"}
    p = subprocess.run([sys.executable, "-m", "infscale.cli.main", "ask", b"What is \xff?", "--backend-url",
                        "http://127.0.0.1:9/v1"], capture_output=True, timeout=120, env=env)
    err = p.stderr.decode()
    assert p.returncode == 2, err
    assert err.splitlines() == ["infscale: error: question: is not UTF-8 text (byte 0xff at character 9) "
                                "(accepted: UTF-8 text (check the terminal's encoding))"], err


def test_ask_with_a_lone_surrogate_is_refused_before_any_model(capsys):
    assert main(["ask", "What is \ud800?"]) == 2
    one_error(capsys, "question", "lone surrogate")


@pytest.mark.parametrize(("content", "names"), [
    (b'{"question": "What is 2 + 3?", "answer": "5"}\n{"question": "x \\ud800", "answer": "1"}\n',
     [":2 ", "lone surrogate"]),
    (b'{"question": "What is 2 + 3?", "answer": "5"}\n{"question": "What is \xff?", "answer": "1"}\n',
     [":2 ", "not UTF-8", "0xff", "column 23"]),
    (b'{"question": "What is 2 + 3?", "answer": "5"}\n{"question": "", "answer": "1"}\n', [":2", "empty"]),
    (b'{"question": "What is 2 + 3?", "answer": "5"}\n{"question": "  ", "answer": "1"}\n', [":2", "empty"]),
    (b'{"question": null, "answer": "1"}\n', [":1", "null"]),
    (b'{"question": {"text": "hi"}, "answer": "1"}\n', ["question-field", ":1", "dict"]),
])
def test_bad_jsonl_lines_for_data_show_and_eval(tmp_path, capsys, content, names):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(content)
    assert main(["data", "show", str(path)]) == 2
    one_error(capsys, "bad.jsonl", *names)
    db = tmp_path / "runs.sqlite"
    with FakeOpenAIServer() as srv:
        assert main(["eval", "--dataset", str(path), "--budgets", "1", "--backend-url", srv.base_url,
                     "--db", str(db), "--no-html", "--no-progress"]) == 2
    one_error(capsys, "bad.jsonl", *names)
    with Store(db) as st:
        assert st.list_runs() == []  # refused before a run exists: none is left "running"


def test_a_corrupt_gzip_dataset_is_one_line(tmp_path, capsys):
    path = tmp_path / "bad.jsonl.gz"
    path.write_bytes(b"\x1f\x8b\x08\x00 not really gzip")
    assert main(["data", "show", str(path)]) == 2
    one_error(capsys, "dataset", "cannot read")


# -- output paths ---------------------------------------------------------------------------------

@pytest.fixture
def stored_run(tmp_path):
    """A small finished run in ``tmp_path/runs.sqlite`` (fake server): ``(db, run_id)``."""
    db = tmp_path / "runs.sqlite"
    with FakeOpenAIServer() as srv:
        assert main(["eval", "--dataset", "arith:n=2", "--strategies", "majority", "--budgets", "1,2",
                     "--backend-url", srv.base_url, "--db", str(db), "--no-html", "--no-progress", "--json"]) == 0
    with Store(db) as st:
        return db, st.list_runs()[0]["run_id"]


def test_output_paths_are_checked_before_any_work(tmp_path, capsys, stored_run, home):
    db, rid = stored_run
    capsys.readouterr()
    (tmp_path / "a-file").write_text("x")
    (tmp_path / "a-dir").mkdir()
    (tmp_path / "not-a-db.sqlite").write_text("not a database\n")
    before = tree(tmp_path)
    cases = [
        (["export", rid, "--db", str(db), "--out", str(tmp_path / "a-file")], ["--out", "not a directory"]),
        (["export", rid, "--db", str(db), "--out", "/proc/no-such-dir"], ["--out", "cannot create"]),
        (["export", rid, "--db", str(db), "--out", str(tmp_path / "missing" / "out")], ["--out", "does not exist"]),
        (["report", rid, "--db", str(db), "--html", str(tmp_path / "a-dir")], ["--html", "is a directory"]),
        (["report", rid, "--db", str(db), "--html", str(tmp_path / "missing" / "r.html")], ["--html", "does not exist"]),
        (["report", "--db", str(tmp_path / "not-a-db.sqlite")], ["--db", "not a usable run database"]),
        (["report", rid, "--db", str(tmp_path / "not-a-db.sqlite")], ["--db", "not a usable run database"]),
        (["report", "--db", str(tmp_path / "missing" / "x.sqlite")], ["--db", "no database at"]),
        (["export", rid, "--db", str(tmp_path / "missing.sqlite")], ["--db", "no database at"]),
        (["eval", "--dataset", "arith:n=2", "--db", "/proc/nope/x.sqlite", "--backend-url", "http://127.0.0.1:9/v1"],
         ["--db", "does not exist"]),
        (["eval", "--dataset", "arith:n=2", "--db", str(tmp_path / "a-dir"), "--backend-url", "http://127.0.0.1:9/v1"],
         ["--db", "is a directory"]),
        (["eval", "--dataset", "arith:n=2", "--db", str(tmp_path / "not-a-db.sqlite"),
          "--backend-url", "http://127.0.0.1:9/v1"], ["--db", "not a usable run database"]),
        (["ask", "What is 2 + 3?", "--trace", str(tmp_path / "a-dir"), "--backend-url", "http://127.0.0.1:9/v1"],
         ["--trace", "is a directory"]),
        (["ask", "What is 2 + 3?", "--trace", str(tmp_path / "missing" / "t.jsonl"),
          "--backend-url", "http://127.0.0.1:9/v1"], ["--trace", "does not exist"]),
    ]
    for argv, names in cases:
        assert main(argv) == 2, argv
        one_error(capsys, *names)
    assert tree(tmp_path) == before  # nothing created: no folder, no database, no report
    assert not Path("/proc/nope").exists()


def test_export_makes_only_the_folder_named(tmp_path, capsys, stored_run):
    db, rid = stored_run
    out = tmp_path / "exports-here"
    assert main(["export", rid, "--db", str(db), "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == [f"{rid}-results.jsonl", f"{rid}-samples.jsonl"]


# -- run ids from a shared database ---------------------------------------------------------------

@pytest.mark.parametrize("bad_id", ["../../../../tmp/infscale-traversal", "a/b", "..", ".hidden", "x\ny"])
def test_run_ids_that_would_leave_their_folder_are_refused(tmp_path, capsys, home, bad_id):
    """A shared database holding a run whose id is a path: report and export refuse it and
    write nothing anywhere (the stored id is validated when read, not trusted)."""
    db = tmp_path / "shared.sqlite"
    with Store(db) as st:
        st.create_run({"dataset": "arith", "strategies": ["majority"], "budgets": [1], "seeds": 1}, run_id=bad_id)
    outside = Path("/tmp/infscale-traversal.html")
    before = tree(tmp_path)
    for argv in (["report", bad_id, "--db", str(db)], ["export", bad_id, "--db", str(db)],
                 ["export", bad_id, "--db", str(db), "--out", str(tmp_path / "out")],
                 ["eval", "--resume", bad_id, "--db", str(db), "--backend-url", "http://127.0.0.1:9/v1"]):
        assert main(argv) == 2, argv
        one_error(capsys, "run", "not a valid run id")
    assert not outside.exists()
    assert tree(tmp_path) == before
    assert main(["report", "--db", str(db)]) == 0  # listing the runs still works
    capsys.readouterr()


def test_file_names_are_derived_inside_their_folder(tmp_path):
    from infscale.cli._paths import file_in
    from infscale.cli.export import export_run
    from infscale.errors import ConfigError

    with pytest.raises(ConfigError, match="would leave"):
        file_in(tmp_path, "../x.html")
    db = tmp_path / "shared.sqlite"
    with Store(db) as st:
        st.create_run({"dataset": "arith", "strategies": ["majority"], "budgets": [1], "seeds": 1}, run_id="../evil")
        with pytest.raises(ConfigError, match="not a valid run id"):
            export_run(st, "../evil", "jsonl", tmp_path / "out")
    assert not (tmp_path / "evil-samples.jsonl").exists()


# -- small input checks ---------------------------------------------------------------------------

@pytest.mark.parametrize(("flags", "names"), [
    (["--budgets", "1,,2"], ["budgets", "empty item", "'1,,2'"]),
    (["--budgets", "1,2,"], ["budgets", "empty item"]),
    (["--strategies", "majority:"], ["strategies", "'majority:'", "no settings"]),
    (["--strategies", "greedy,,majority"], ["strategies", "empty item"]),
])
def test_eval_grid_typos_are_one_line(tmp_path, capsys, flags, names):
    assert main(["eval", "--dataset", "arith:n=2", "--db", str(tmp_path / "r.sqlite"), *flags]) == 2
    one_error(capsys, *names)
    assert not (tmp_path / "r.sqlite").exists() or Store(tmp_path / "r.sqlite").list_runs() == []


def test_json_dataset_show_round_trips_plain_unicode(tmp_path, capsys):
    """Valid non-ASCII text (not a bad byte) is data, shown as it is."""
    path = tmp_path / "ok.jsonl"
    path.write_text(json.dumps({"question": "Combien font 2 + 3 ? — 𝑥", "answer": "5"}) + "\n", encoding="utf-8")
    assert main(["data", "show", str(path)]) == 0
    assert json.loads(capsys.readouterr().out)["question"] == "Combien font 2 + 3 ? — 𝑥"


def test_serve_on_a_port_in_use_is_one_line_before_serving(capsys):
    import socket

    pytest.importorskip("uvicorn")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        assert main(["serve", "--port", str(port), "--backend-url", "http://127.0.0.1:9/v1"]) == 2
    line = one_error(capsys, "--port", f"127.0.0.1:{port} is already in use")
    assert "serving" not in line


def test_python_ask_refuses_a_lone_surrogate_before_any_model():
    """infscale.ask, like the CLI: a question JSON decoded to a lone surrogate is a ConfigError
    naming the question, raised before a generator is loaded or called."""
    import infscale
    from infscale.errors import ConfigError
    from infscale.testing import FakeGenerator, answer_model, record_requests

    gen = FakeGenerator(answer_model(1.0))
    seen = record_requests(gen)
    with pytest.raises(ConfigError, match="lone surrogate"):
        infscale.ask(json.loads('"What is \\ud800 2 + 2?"'), "majority", n=2, generator=gen)
    assert seen == []
