"""The exact-target step model shared by the search tests: three steps (two choices, then the
answer), with the next-step distributions and step potentials known exactly."""

from __future__ import annotations

import math

FIRST = {"a": 0.5, "b": 0.3, "c": 0.2}
SECOND = {"a": {"x": 0.6, "y": 0.4}, "b": {"x": 0.1, "y": 0.9}, "c": {"x": 0.5, "y": 0.5}}
G = {"a": 0.0, "b": math.log(2.0), "c": math.log(3.0), "x": 0.0, "y": math.log(0.5)}


def next_steps(steps):
    """The next-step distribution after ``steps`` (FakeStepModel's ``next_steps``)."""
    if not steps:
        return FIRST
    if len(steps) == 1:
        return SECOND[steps[0]]
    return {f"Answer: {steps[0]}{steps[1]}": 1.0}
