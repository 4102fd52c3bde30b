"""Test programs: HumanEval- and MBPP-style programs built around a candidate solution.

Both run the solution and its tests in one program in the sandbox, in a fresh namespace whose
``__name__`` is not ``"__main__"``, and print a random completion marker the caller strips and
checks, so a solution that exits early with status 0 does not pass.
"""

from __future__ import annotations

import os
from typing import Any

from .run import SandboxResult, run_code


def _marker() -> str:
    return "__infscale_tests_" + os.urandom(8).hex()


def _strip_marker(res: SandboxResult, marker: str) -> list[str]:
    """Remove the marker lines from ``res.stdout``; return their payloads in order."""
    kept, payloads = [], []
    for line in res.stdout.splitlines(keepends=True):
        if line.startswith(marker):
            payloads.append(line[len(marker):].strip())
        else:
            kept.append(line)
    res.stdout = "".join(kept)
    return payloads


def run_tests(
    solution_code: str,
    test_code: str,
    entry_point: str | None = None,
    *,
    timeout: float = 10.0,
    **limits: Any,
) -> SandboxResult:
    """Run a solution against HumanEval/MBPP-style test code; ``result.passed`` says if it passed.

    The program executes the solution, then the test code, then ``check(entry_point)`` when an
    entry point is given, all in one fresh namespace whose ``__name__`` is not ``"__main__"``
    (so a solution's ``if __name__ == "__main__":`` block does not run, as in HumanEval's own
    harness). A completion marker printed after the tests guards against solutions that exit
    early with status 0 (``sys.exit()``, ``os._exit(0)``): without it the run is an ``error``.
    The marker stops accidents, not a program that deliberately inspects the harness -- the
    sandbox protects the machine, not the score. ``limits`` go to :func:`run_code`.
    """
    from ..errors import ConfigError

    if entry_point is not None and not entry_point.isidentifier():
        raise ConfigError("entry_point", f"{entry_point!r} is not a Python identifier", "a function name")
    marker = _marker()
    program = (
        "import sys as _sys\n"
        "_ns = {'__name__': '__solution__', '__builtins__': __builtins__}\n"
        f"exec(compile({solution_code!r}, 'solution.py', 'exec'), _ns)\n"
        f"exec(compile({test_code!r}, 'tests.py', 'exec'), _ns)\n"
        + (f"exec(compile('check({entry_point})', 'check.py', 'exec'), _ns)\n" if entry_point else "")
        + f"_sys.stdout.flush()\nprint({marker!r}, flush=True)\n"
    )
    res = run_code(program, timeout=timeout, **limits)
    finished = bool(_strip_marker(res, marker))
    if res.passed and not finished:
        res.status = "error"
        res.notes.append("the program exited before the tests finished")
    return res


def run_test_list(
    solution_code: str, tests: list[str], *, setup_code: str = "", timeout: float = 10.0, **limits: Any
) -> tuple[SandboxResult, list[bool]]:
    """Run each test (an MBPP-style ``assert`` string) separately; one outcome per test, in order.

    The solution and ``setup_code`` run once; each test then runs in the same namespace and
    passes when it raises nothing. Tests that did not get to run (the solution failed, the run
    timed out or crashed) count as failed. Like :func:`run_tests`, this defends against
    accidental early exits, not against a program that inspects the harness.
    """
    marker = _marker()
    program = (
        "import sys as _sys\n"
        "_ns = {'__name__': '__solution__', '__builtins__': __builtins__}\n"
        f"exec(compile({solution_code!r}, 'solution.py', 'exec'), _ns)\n"
        f"exec(compile({setup_code!r}, 'setup.py', 'exec'), _ns)\n"
        f"for _i, _t in enumerate({list(tests)!r}):\n"
        "    try:\n"
        "        exec(compile(_t, f'test_{_i}.py', 'exec'), _ns)\n"
        "        _ok = 1\n"
        "    except Exception as _e:\n"
        "        print(f'test {_i} failed: {type(_e).__name__}: {_e}', file=_sys.stderr)\n"
        "        _ok = 0\n"
        "    _sys.stdout.flush()\n"
        f"    print({marker!r}, _i, _ok, flush=True)\n"
    )
    res = run_code(program, timeout=timeout, **limits)
    outcomes = [False] * len(tests)
    for payload in _strip_marker(res, marker):
        parts = payload.split()
        if len(parts) == 2 and parts[0].isdigit() and int(parts[0]) < len(tests):
            outcomes[int(parts[0])] = parts[1] == "1"
    return res, outcomes
