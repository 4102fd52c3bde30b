"""Answer extraction, canonicalisation, equivalence and grouping for every task kind."""

from __future__ import annotations

import threading
import time

import pytest

from infscale.answers import (
    AnswerTask,
    CodeTask,
    MathTask,
    McqTask,
    TextTask,
    _run_with_deadline,
    canonicalize_math,
    extract_boxed,
    get_task,
    group_answers,
)
from infscale.errors import ConfigError


@pytest.fixture
def math_task() -> MathTask:
    return get_task("math")


@pytest.fixture
def mcq() -> McqTask:
    return get_task("mcq")


@pytest.fixture
def text_task() -> TextTask:
    return get_task("text")


@pytest.fixture
def code() -> CodeTask:
    return get_task("code")


# --- registry ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "cls"), [("math", MathTask), ("mcq", McqTask), ("code", CodeTask), ("text", TextTask)]
)
def test_get_task_returns_named_task(name, cls):
    task = get_task(name)
    assert isinstance(task, cls)
    assert isinstance(task, AnswerTask)
    assert task.name == name


def test_get_task_unknown_name_raises_config_error():
    with pytest.raises(ConfigError) as info:
        get_task("poetry")
    assert info.value.param == "task"
    assert str(info.value) == "task: unknown task 'poetry' (accepted: math, mcq, code, text)"


# --- math extraction ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # boxed: nested braces, last box wins, \boxed 5, \fbox
        ("so $\\boxed{\\frac{1}{b^{2}}}$.", "\\frac{1}{b^{2}}"),
        ("first \\boxed{3}, then fixed: \\boxed{4}", "4"),
        ("The result is $\\boxed 5$", "5"),
        ("\\fbox{7} done", "7"),
        ("Answer: 9\nbut really \\boxed{10}", "10"),
        ("broken \\boxed{2} and \\boxed{3", "2"),
        # Answer lines and GSM8K ####
        ("She pays 6 * 3 = 18.\nAnswer: 18 dollars", "18"),
        ("Work...\nFinal answer: $1,234.00.", "1234"),
        ("**Answer:** 18", "18"),
        ("Natalia sold 48/2 = 24 clips.\n#### 72", "72"),
        ("The answer is 3.\nAnswer: 4", "4"),
        # "the answer is"
        ("So THE ANSWER IS $\\frac{3}{4}$. Check: 3/4 = 0.75", "\\frac{3}{4}"),
        ("Thus the answer is 42, which is even.", "42"),
        # last number fallback
        ("I had 3 apples and bought 5.50 worth of pears", "5.5"),
        ("from 3-4", "4"),
        ("the temperature fell to -7 overnight", "-7"),
    ],
)
def test_math_extraction_rules(math_task, text, expected):
    assert math_task.extract(text) == expected


@pytest.mark.parametrize("text", ["", "no numbers here", "\\boxed{}"])
def test_math_extract_none_without_answer(math_task, text):
    assert math_task.extract(text) is None


@pytest.mark.parametrize(
    ("raw", "canonical"),
    [
        ("1,234", "1234"),
        ("5.0", "5"),
        ("5.00", "5"),
        ("0.50", "0.5"),
        ("-0", "0"),
        ("-0.0", "0"),
        ("+7", "7"),
        ("$18", "18"),
        ("\\$18", "18"),
        ("\\text{18}", "18"),
        ("18 \\text{ dollars}", "18"),
        ("50\\%", "50"),
        ("18.", "18"),
        ("1{,}000", "1000"),
        (" \\frac{3}{4} ", "\\frac{3}{4}"),
        ("$x^2 + 1$.", "x^2 + 1"),
        ("\\(\\frac{1}{2}\\)", "\\frac{1}{2}"),
        ("\\[ 2\\sqrt{3} \\]", "2\\sqrt{3}"),
    ],
)
def test_canonicalize_math(raw, canonical):
    assert canonicalize_math(raw) == canonical


def test_extract_boxed_handles_escaped_braces_and_nesting():
    assert extract_boxed("\\boxed{\\{1, 2\\}}") == "\\{1, 2\\}"
    assert extract_boxed("\\boxed{a{b{c}}d}") == "a{b{c}}d"
    assert extract_boxed("no box") is None


# --- math equivalence --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        ("18", "18", True),
        ("18", "18.0", True),
        ("1,000,000", "1000000.0001", True),  # within 1e-6 relative
        ("18", "17", False),
        ("0.1", "0.1001", False),
        ("\\frac{1}{2}", "0.5", True),
        ("1/2", "0.5", True),
        ("\\dfrac{1}{2}", "\\tfrac12", True),
        ("\\frac{\\sqrt{2}}{2}", "\\sqrt{2}/2", True),
        ("x + 1", "1 + x", True),
        ("\\frac{1}{3}", "0.5", False),
        ("\\pi", "3", False),
    ],
)
def test_math_equivalence(math_task, a, b, same):
    assert math_task.equivalent(a, b) is same
    assert math_task.equivalent(b, a) is same


def test_math_equivalence_never_raises_on_garbage(math_task):
    assert math_task.equivalent("\\frac{", "}{\\sqrt") is False
    assert math_task.equivalent("", "") is False


def test_math_equivalence_caps_input_length():
    task = MathTask(max_chars=20)
    long_expr = "+".join(["1"] * 20)  # 39 chars, equals 20
    assert task.equivalent(long_expr, "20") is False  # too long for math-verify
    assert task.equivalent(long_expr, long_expr) is True  # exact match still works
    assert MathTask().equivalent(long_expr, "20") is True


def test_math_equivalence_from_non_main_thread(math_task):
    results: dict[str, bool] = {}
    errors: list[BaseException] = []

    def work():
        try:
            results["frac"] = math_task.equivalent("\\frac{1}{2}", "0.5")
            results["slash"] = math_task.equivalent("1/2", "0.5")
            results["different"] = math_task.equivalent("\\frac{1}{3}", "0.5")
        except BaseException as e:  # pragma: no cover - the assertion below reports it
            errors.append(e)

    worker = threading.Thread(target=work)
    worker.start()
    worker.join(30)
    assert not worker.is_alive()
    assert errors == []
    assert results == {"frac": True, "slash": True, "different": False}


def test_deadline_abandons_slow_work_and_swallows_errors():
    start = time.monotonic()
    assert _run_with_deadline(lambda: time.sleep(1.0) or True, 0.05) is False
    assert time.monotonic() - start < 0.5

    def boom() -> bool:
        raise RuntimeError("parser exploded")

    assert _run_with_deadline(boom, 1.0) is False
    assert _run_with_deadline(lambda: True, 1.0) is True


# --- math is_correct ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "reference", "correct"),
    [
        ("18", "18", True),
        ("18", "Janet sells 16 - 3 - 4 = 9 eggs.\n9 * 2 = 18\n#### 18", True),
        ("19", "Janet sells 16 - 3 - 4 = 9 eggs.\n#### 18", False),
        ("1234", "#### 1,234", True),
        ("0.75", "\\frac{3}{4}", True),
        ("\\frac{3}{4}", "so the probability is $\\boxed{\\frac{3}{4}}$.", True),
        ("18", 18, True),
        ("18", 18.0, True),
        ("2.5", 2.5, True),
        ("18", 17, False),
        (None, "18", False),
        ("18", None, False),
    ],
)
def test_math_is_correct(math_task, answer, reference, correct):
    assert math_task.is_correct(answer, reference) is correct


# --- grouping ----------------------------------------------------------------------------------


def test_group_answers_numeric_and_boxed(math_task):
    boxed = math_task.extract("so the total is \\boxed{18}")
    assert group_answers(math_task, ["18", "18.0", boxed, "17"]) == [0, 0, 0, 1]


def test_group_answers_none_latex_and_first_appearance_order(math_task):
    answers = ["7", None, "\\frac{1}{2}", "0.5", "7", "1/2", None, "3"]
    assert group_answers(math_task, answers) == [0, None, 1, 1, 0, 1, None, 2]
    assert group_answers(math_task, []) == []
    assert group_answers(math_task, [None, None]) == [None, None]


def test_group_answers_compares_only_new_keys_with_representatives():
    class CountingMath(MathTask):
        def __init__(self):
            super().__init__()
            self.calls = 0

        def equivalent(self, a, b):
            self.calls += 1
            return super().equivalent(a, b)

    task = CountingMath()
    answers = ["1", "2", "3"] * 100 + ["1.0"] * 50 + ["\\frac{2}{2}"] * 50
    ids = group_answers(task, answers)
    assert ids == [0, 1, 2] * 100 + [0] * 100
    # "2" vs {1}; "3" vs {1, 2}; "1.0" has the canonical key "1" (no call);
    # "\frac{2}{2}" matches the first class with one math-verify call: 1 + 2 + 1.
    assert task.calls == 4


def test_group_answers_mcq(mcq):
    assert group_answers(mcq, ["B", "b", "C", None, " B "]) == [0, 0, 1, None, 0]


# --- mcq ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Reasoning...\nAnswer: B", "B"),
        ("**Answer:** D", "D"),
        ("Therefore, the answer is (C).", "C"),
        ("The correct answer is option J because", "J"),
        ("Answer: A. Paris", "A"),
        ("Let me think.\n(D)\n", "D"),
        ("Options considered.\nB.", "B"),
        ("so\nE)\n", "E"),
        ("G", "G"),
        ("I compared (A) with (F) and prefer the second", "F"),
        ("We get $\\boxed{\\text{(c)}}$", "C"),
        ("the answer is (B), not (C)", "B"),
    ],
)
def test_mcq_extraction_rules(mcq, text, expected):
    assert mcq.extract(text) == expected


@pytest.mark.parametrize(
    "text",
    ["The answer is I think unclear", "no choice (K) here", "", "All of them are fine."],
)
def test_mcq_extract_none(mcq, text):
    assert mcq.extract(text) is None


@pytest.mark.parametrize(
    ("answer", "reference", "correct"),
    [
        ("B", "B", True),
        ("B", "(b)", True),
        ("A", 0, True),
        ("C", 2, True),
        ("C", 1, False),
        ("J", 9, True),
        ("A", 10, False),
        ("A", True, False),
        (None, "A", False),
    ],
)
def test_mcq_is_correct(mcq, answer, reference, correct):
    assert mcq.is_correct(answer, reference) is correct


def test_mcq_equivalence(mcq):
    assert mcq.equivalent("B", "b")
    assert not mcq.equivalent("B", "C")
    assert not mcq.equivalent("", "")


# --- text --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The capital is obvious.\nAnswer:  \"Paris\". ", "paris"),
        ("  The   Eiffel\n Tower! ", "the eiffel tower"),
        ("'yes'", "yes"),
        ("Final answer: **Blue Whale**", "blue whale"),
        ("   ", None),
        ("...", None),
    ],
)
def test_text_extraction(text_task, text, expected):
    assert text_task.extract(text) == expected


def test_text_equivalence_and_correctness(text_task):
    assert text_task.equivalent("Paris.", "  paris")
    assert not text_task.equivalent("Paris", "London")
    assert text_task.is_correct("paris", "Paris")
    assert text_task.is_correct("42", 42)
    assert not text_task.is_correct(None, "Paris")


# --- code --------------------------------------------------------------------------------------


def test_code_extracts_last_fenced_block(code):
    text = (
        "First try:\n```python\ndef f():\n    return 0\n```\n"
        "Better:\n```python\ndef f():   \n    return 1\n```\nDone."
    )
    assert code.extract(text) == "def f():\n    return 1"


def test_code_plain_fence_and_unclosed_fence(code):
    assert code.extract("```\nx = 2\n```") == "x = 2"
    assert code.extract("```py\ndef g(x):\n    return x * 2") == "def g(x):\n    return x * 2"


def test_code_without_fence(code):
    assert code.extract("\ndef h():\n    return 3   \n\n") == "def h():\n    return 3"
    assert code.extract("I cannot write this program.") is None


def test_code_equivalence_and_is_correct(code):
    a = "def f():\n    return 1"
    assert code.equivalent(a, "def f():   \n    return 1  \n")
    assert not code.equivalent(a, "def f():\n  return 1")
    assert code.is_correct(a, a)
    assert not code.is_correct("def f():\n    return 2", a)
    assert not code.is_correct(None, a)
