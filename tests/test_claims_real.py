"""`infscale reproduce monkeys --tiny` on the real embedded model (slow suite): the claim's run goes
through the harness, the figure and verdict are written, and a second call reuses the stored run."""

from __future__ import annotations

import pytest

from infscale.cli.main import main

pytestmark = pytest.mark.slow


def test_reproduce_monkeys_tiny_on_the_embedded_model(tmp_path, capsys):
    db, out = tmp_path / "runs.sqlite", tmp_path / "claims"
    assert main(["reproduce", "monkeys", "--tiny", "--db", str(db), "--out", str(out)]) == 0
    text = capsys.readouterr()
    assert "monkeys: Coverage grows" in text.out
    verdict = next(line for line in text.out.splitlines() if line.startswith("verdict: ") and "/" not in line)
    assert verdict.split(": ", 1)[1] in ("reproduced", "not reproduced", "inconclusive")
    md = (out / "monkeys-tiny.md").read_text()
    assert "**Counts as not reproduced**" in md and "4 problems" in md and "smollm2-135m" in md
    assert (out / "monkeys-tiny.svg").stat().st_size > 5000 and (out / "monkeys-tiny.png").stat().st_size > 5000
    # the table has one row per k = 1, 2, 4, 8 with coverage in [0, 1], non-decreasing in k
    rows = [line.split() for line in text.out.splitlines() if line[:2].strip().isdigit()]
    ks = [int(r[0]) for r in rows]
    cov = [float(r[1]) for r in rows]
    assert ks == [1, 2, 4, 8] and all(0 <= c <= 1 for c in cov) and cov == sorted(cov)
    # a second call reuses the stored run: nothing is generated again
    assert main(["reproduce", "monkeys", "--tiny", "--db", str(db), "--out", str(out)]) == 0
    assert "reusing the stored run" in capsys.readouterr().err
