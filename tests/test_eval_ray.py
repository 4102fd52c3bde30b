"""Ray-distributed evaluation on a local Ray cluster (127.0.0.1, 2 CPUs, one per module).

The workers run the fake generator (or the embedded model, slow), the driver stores; the stored
samples and results must equal a single-process run's (the fakes are deterministic, the embedded
engine runs in reproducible mode), also when a worker is killed mid-run.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import subprocess
import sys

import pytest

from infscale import BackendError, ConfigError, Problem
from infscale.api import load_generator
from infscale.cli.main import main
from infscale.datasets import load_dataset
from infscale.evaluation.distributed import import_ray, run_eval_ray, worker_names
from infscale.evaluation.harness import EvalConfig, metrics_inputs, run_eval, start_run
from infscale.evaluation.metrics import summarize
from infscale.evaluation.store import Store
from infscale.testing import FakeGenerator, OracleScorer
from infscale.testing.fake_openai import FakeOpenAIServer

ray = pytest.importorskip("ray", reason="needs the ray extra: pip install 'infscale[ray]'")

EXTRA = {"oracle": functools.partial(OracleScorer, false_positive_rate=0.2)}
STRATEGIES = ["greedy", "majority", "best-of-n:scorer=oracle", "adaptive"]


@pytest.fixture(scope="module", autouse=True)
def cluster(tmp_path_factory):
    home = tmp_path_factory.mktemp("home")
    old = os.environ.get("INFSCALE_HOME")
    os.environ["INFSCALE_HOME"] = str(home)  # the workers inherit the driver's environment
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the reply functions below
    ray.init(address="local", num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1",
             logging_level="warning", log_to_driver=False)
    yield
    ray.shutdown()
    if old is None:
        os.environ.pop("INFSCALE_HOME", None)
    else:
        os.environ["INFSCALE_HOME"] = old


def reply(req, rng):
    """Right with probability 1/2 (the reference is in the question), else one of three wrong."""
    q = req.messages[-1]["content"] if req.messages is not None else req.prompt
    ref = q.rsplit("[ref=", 1)[1].split("]", 1)[0]
    if rng.random() < 0.5:
        return f"work {int(rng.integers(1, 5)) * 'x '}\nAnswer: {ref}"
    return f"work {int(rng.integers(1, 5)) * 'y '}\nAnswer: {int(ref) + int(rng.integers(1, 4))}"


def fake(delay: float = 0.0) -> FakeGenerator:
    return FakeGenerator(reply, yes_prob=lambda r: 0.7, delay=delay)


def problems(k: int) -> list[Problem]:
    return [Problem(id=f"p{i}", question=f"Question {i} [ref={10 + i}]", reference=str(10 + i)) for i in range(k)]


def config(**kw) -> EvalConfig:
    return EvalConfig(dataset="fake", strategies=list(STRATEGIES), budgets=[1, 2, 4], seeds=1, reproducible=True,
                      **kw)


def _timeless(x):
    """A stored row without wall seconds (the only numbers that depend on the machine)."""
    if isinstance(x, dict):
        return {k: _timeless(v) for k, v in x.items() if k not in ("seconds", "run_id")}
    return x


def stored(st: Store, rid: str) -> tuple[list, list]:
    return [_timeless(s) for s in st.get_samples(rid)], [_timeless(r) for r in st.get_results(rid)]


def accuracy(st: Store, rid: str) -> dict:
    summary = summarize(*metrics_inputs(st, rid))
    return json.loads(json.dumps({k: v for k, v in summary.items() if k in ("accuracy", "curves", "coverage")},
                                 default=str))


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The single-process run every distributed run must equal."""
    path = tmp_path_factory.mktemp("ref") / "ref.sqlite"
    with Store(path) as st:
        rid = start_run(st, config(), problems(8), scorers=EXTRA)
        asyncio.run(run_eval(st, rid, fake(), scorers=EXTRA))
        return stored(st, rid), accuracy(st, rid), st.counts(rid)


def test_two_workers_store_what_one_process_stores(tmp_path, reference):
    seen = []
    with Store(tmp_path / "runs.sqlite") as st:
        rid = start_run(st, config(), problems(8), scorers=EXTRA)
        counts = run_eval_ray(st, rid, fake, workers=2, scorers=EXTRA, on_progress=seen.append)
        assert counts == reference[2]
        assert stored(st, rid) == reference[0]
        assert accuracy(st, rid) == reference[1]
        assert st.get_run(rid)["status"] == "done"
    assert seen[0].done == 0 and seen[-1].done == seen[-1].total == 8
    assert [p.done for p in seen] == list(range(9))  # counted item by item over the cluster
    assert seen[-1].samples == counts["samples"] and seen[-1].results == counts["results"]


def test_a_worker_killed_mid_run_loses_nothing_and_duplicates_nothing(tmp_path, reference):
    killed = []

    def progress(p) -> None:
        if p.done == 2 and not killed:  # the other items are in flight on both workers
            names = worker_names(ray, rid)
            assert len(names) == 2
            ray.kill(ray.get_actor(names[0]))
            killed.append(names[0])

    with Store(tmp_path / "runs.sqlite") as st:
        rid = start_run(st, config(), problems(8), scorers=EXTRA)
        counts = run_eval_ray(st, rid, functools.partial(fake, 0.01), workers=2, scorers=EXTRA, concurrency=3,
                              on_progress=progress)
        assert killed
        assert counts == reference[2]
        assert stored(st, rid) == reference[0]
        assert st.get_run(rid)["status"] == "done"


def test_when_every_worker_dies_the_run_fails_and_resume_completes_it(tmp_path, reference):
    def progress(p) -> None:
        if p.done == 1:
            for name in worker_names(ray, rid):
                ray.kill(ray.get_actor(name))

    with Store(tmp_path / "runs.sqlite") as st:
        rid = start_run(st, config(), problems(8), scorers=EXTRA)
        with pytest.raises(BackendError, match="every Ray worker died") as e:
            run_eval_ray(st, rid, functools.partial(fake, 0.01), workers=1, scorers=EXTRA, concurrency=2,
                         on_progress=progress)
        assert "\n" not in str(e.value)
        assert st.get_run(rid)["status"] == "failed" and 0 < st.counts(rid)["results"] < reference[2]["results"]
        run_eval_ray(st, rid, fake, workers=2, scorers=EXTRA)
        assert stored(st, rid) == reference[0] and st.get_run(rid)["status"] == "done"


def test_resume_on_the_cluster_fills_in_what_is_missing(tmp_path, reference):
    with Store(tmp_path / "runs.sqlite") as st:
        rid = start_run(st, config(), problems(8), scorers=EXTRA)
        asyncio.run(run_eval(st, rid, fake(), scorers=EXTRA))
        with st.conn:  # as if killed part way: results, a pool sample and scores are gone
            st.conn.execute("DELETE FROM results WHERE run_id=? AND problem_id IN ('p1','p5')", (rid,))
            st.conn.execute("DELETE FROM samples WHERE run_id=? AND problem_id='p1' AND pool='pool' AND idx=3", (rid,))
            st.conn.execute("UPDATE samples SET scores='{}', score_costs='{}' WHERE run_id=? AND problem_id='p5'",
                            (rid,))
        run_eval_ray(st, rid, fake, workers=2, scorers=EXTRA)
        assert stored(st, rid) == reference[0]


def test_the_cli_runs_on_the_cluster(tmp_path, capsys):
    with FakeOpenAIServer() as server:
        db = str(tmp_path / "cli.sqlite")
        code = main(["eval", "--dataset", "arith:n=4", "--strategies", "majority,greedy", "--budgets", "1,2",
                     "--backend-url", server.base_url, "--ray", "--workers", "2", "--db", db, "--json",
                     "--no-progress", "--no-html"])
        out = json.loads(capsys.readouterr().out)
    assert code == 0 and out["status"] == "done"
    assert out["counts"] == {"problems": 4, "samples": 4 * 2 + 4, "results": 4 * (2 + 1)}


def test_each_worker_probes_its_backend_while_starting(tmp_path):
    """An HTTP backend's capability probe (several sequential requests) runs in each worker's
    start-up, before the first item is handed out, not on its first items with the others waiting."""
    at_start = []

    def progress(p) -> None:
        if not at_start:
            at_start.append(server.calls)

    with FakeOpenAIServer() as server, Store(tmp_path / "runs.sqlite") as st:
        cfg = EvalConfig(dataset="arith:n=4", strategies=["majority"], budgets=[2], backend_url=server.base_url)
        probs = load_dataset(cfg.dataset)
        rid = start_run(st, cfg, probs)
        run_eval_ray(st, rid, functools.partial(load_generator, backend_url=server.base_url), workers=2,
                     on_progress=progress)
        calls = server.calls
    listed = [c for c in at_start[0] if c[:2] == ("GET", "/v1/models")]
    probes = [c for c in at_start[0] if c[0] == "POST"]
    assert len(listed) == 2 and probes  # each worker found its model and probed before any item
    assert [c for c in calls if c[:2] == ("GET", "/v1/models")] == listed  # and did not probe again
    items = [json.dumps(c[2]) for c in calls[len(at_start[0]):] if c[0] == "POST"]
    assert len(items) >= 4 and all(any(p.question in body for p in probs) for body in items)  # items only


def test_errors_are_one_line_and_name_the_setting(tmp_path, monkeypatch):
    with Store(tmp_path / "runs.sqlite") as st:
        rid = start_run(st, config(), problems(2), scorers=EXTRA)
        with pytest.raises(ConfigError, match="--workers: 3 workers need 3 CPUs"):
            run_eval_ray(st, rid, fake, workers=3, scorers=EXTRA)

        def broken():
            raise ConfigError("model", "no model 'nope'", "smollm2-135m")

        with pytest.raises(ConfigError, match="model: no model 'nope'"):  # raised in the worker, said here
            run_eval_ray(st, rid, broken, workers=1, scorers=EXTRA)
        assert st.get_run(rid)["status"] == "failed"
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(ConfigError) as e:
        import_ray()
    assert "pip install 'infscale[ray]'" in str(e.value) and "\n" not in str(e.value)
    assert main(["eval", "--dataset", "arith:n=2", "--workers", "2"]) == 2


def test_nothing_imports_ray_without_the_option():
    code = ("import sys, infscale, infscale.cli.main, infscale.cli.eval, infscale.evaluation.distributed; "
            "assert 'ray' not in sys.modules, 'ray imported'")
    subprocess.run([sys.executable, "-c", code], check=True, env=os.environ.copy(), timeout=120)


@pytest.mark.slow
def test_two_workers_on_the_embedded_model_store_the_reproducible_samples(tmp_path, monkeypatch):
    pytest.importorskip("llama_cpp", reason="needs the embedded engine: pip install 'infscale[embedded]'")
    from infscale.api import load_generator
    from infscale.datasets import arith_problems
    from infscale.models import model_status

    if not any(s["name"] == "smollm2-135m" and s["installed"] for s in model_status()):
        pytest.skip("infscale models install smollm2-135m")
    make = functools.partial(load_generator, "smollm2-135m", reproducible=True, n_threads=1)
    cfg = EvalConfig(dataset="arith", strategies=["greedy", "majority"], budgets=[1, 2], params={"max_tokens": 24},
                     reproducible=True, concurrency=2)
    probs = arith_problems(3)
    gen = make()
    try:
        with Store(tmp_path / "one.sqlite") as st:
            rid = start_run(st, cfg, probs, chat=gen.capabilities.chat_template)
            asyncio.run(run_eval(st, rid, gen))
            one = stored(st, rid)
    finally:
        gen.close()
    with Store(tmp_path / "ray.sqlite") as st:
        rid = start_run(st, cfg, probs, chat=True)
        counts = run_eval_ray(st, rid, make, workers=2, concurrency=2)
        assert counts == {"problems": 3, "samples": 3 * 2 + 3, "results": 3 * (1 + 2)}
        assert stored(st, rid) == one
    assert all(s["generated_tokens"] > 0 for s in one[0])
