"""Reports: terminal tables carry the numbers; the HTML page, rendered in headless Chromium, draws
every data point of every plot inside its plot area with labelled axes."""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from infscale.evaluation.metrics import summarize
from infscale.evaluation.report import terminal_report, write_html_report

STRATEGIES = ("majority", "best-of-n:scorer=arith-check", "particle-filter")
BUDGETS = (1, 2, 4, 8)


def _summary(samples: bool = True, answers: bool = True, scores: bool = True) -> dict:
    rng = np.random.default_rng(0)
    problems = 24
    difficulty = rng.beta(0.6, 1.2, size=problems)
    results = []
    for s, (strategy, gain) in enumerate(zip(STRATEGIES, (1.0, 1.2, 1.4))):
        for budget in BUDGETS:
            for seed in (0, 1):
                for i in range(problems):
                    p = 1 - (1 - difficulty[i]) ** (gain * budget**0.5)
                    results.append({
                        "strategy": strategy, "budget": budget, "seed": seed, "problem_id": f"p{i}",
                        "correct": float(rng.random() < p), "generated_tokens": (100.0 + 10 * s) * budget,
                        "prompt_tokens": 50.0 * budget, "calls": float(budget), "seconds": 0.02 * budget,
                    })
    pooled = []
    if samples:
        for i in range(problems):
            for j in range(16):
                ok = bool(rng.random() < difficulty[i])
                row = {"problem_id": f"p{i}", "correct": ok}
                if scores:  # an imperfect verifier: accepts right samples at 0.8, wrong ones at 0.2
                    accepted = rng.random() < (0.8 if ok else 0.2)
                    row["scores"] = {"arith-check": 0.0 if accepted else float(np.log(0.05))}
                if answers:
                    row["answer"] = "42" if ok else str(rng.integers(0, 5))
                pooled.append(row)
    return summarize(results, pooled or None)


# ---------------------------------------------------------------- terminal


def test_terminal_report_contains_the_numbers():
    s = _summary()
    text = terminal_report(s, title="run 7")
    assert text.startswith("run 7\n=====")
    for c in s["cells"]:
        line = next(
            ln for ln in text.splitlines()
            if ln.startswith(c["strategy"] + " ") and f"[{c['wilson'][0]:.3f}, {c['wilson'][1]:.3f}]" in ln
        )
        assert f"{c['accuracy']:.3f}" in line and f"[{c['beta'][0]:.3f}, {c['beta'][1]:.3f}]" in line
        assert re.search(rf"^{re.escape(c['strategy'])}\s+{c['budget']}\s+{c['generated_tokens']:.1f}\s", text, re.M)
    cov = s["coverage"]
    cov_line = next(ln for ln in text.splitlines() if ln.startswith("coverage "))
    assert cov_line.split()[1:] == [f"{v:.3f}" for v in cov["coverage"]]
    fit = cov["fit"]
    assert f"exp({fit['a']:.4f} * k^{fit['b']:.4f})" in text
    for c in s["comparisons"]:
        assert f"{c['diff']:+.3f}" in text and f"{c['p_value']:.4g}" in text
    # every table row of a table has the same width (fixed-width columns)
    lines = text.splitlines()
    i = lines.index(next(ln for ln in lines if ln.startswith("strategy ")))
    table = lines[i: i + 2 + len(s["cells"])]
    assert len({len(ln) for ln in table}) == 1


def test_comparisons_show_both_sides_tokens_and_matched_compute(tmp_path):
    s = _summary()
    assert s["matched"] and all("tokens" in c and "baseline_tokens" in c for c in s["comparisons"] + s["matched"])
    text = terminal_report(s, title="run")
    lines = text.splitlines()
    start = lines.index(next(ln for ln in lines if ln.startswith("Paired comparisons at matched compute")))
    matched_rows = lines[start + 3: start + 3 + len(s["matched"])]
    for c, line in zip(s["matched"], matched_rows):
        cells = line.split()
        assert cells[:7] == [c["strategy"], str(c["budget"]), f"{c['tokens']:.1f}", c["baseline"],
                             str(c["baseline_budget"]), f"{c['baseline_tokens']:.1f}", str(c["n"])]
    largest = lines[lines.index(next(ln for ln in lines if ln.startswith("Paired comparisons at the largest"))) + 3]
    c = s["comparisons"][0]
    assert largest.split()[:6] == [c["strategy"], str(c["budget"]), f"{c['tokens']:.1f}", c["baseline"],
                                   str(c["baseline_budget"]), f"{c['baseline_tokens']:.1f}"]
    page = write_html_report(s, tmp_path / "r.html", title="T", meta={"run_id": "x"}).read_text()
    table = page[page.index('<table data-table="matched">'):]
    table = table[: table.index("</table>")]
    assert "baseline generated tokens" in table and table.count("<tr>") == 1 + len(s["matched"])
    for c in s["matched"]:
        assert f"<td>{c['tokens']:.1f}</td><td>{c['baseline']}</td><td>{c['baseline_budget']}</td>" \
               f"<td>{c['baseline_tokens']:.1f}</td>" in table


def test_terminal_report_degenerate():
    text = terminal_report({"cells": [], "coverage": None, "comparisons": []})
    assert "No results." in text and "no pooled samples" in text


# ---------------------------------------------------------------- HTML (static checks)


def test_html_is_self_contained(tmp_path):
    path = write_html_report(_summary(), tmp_path / "r" / "report.html", title="T <&>", meta={"run_id": "abc"})
    page = path.read_text()
    assert path.exists() and page.startswith("<!DOCTYPE html>")
    assert "<script" not in page and "<link" not in page and "@import" not in page
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)
    assert "T &lt;&amp;&gt;" in page and "abc" in page


# ---------------------------------------------------------------- HTML rendered in Chromium


def _chromium() -> str | None:
    return shutil.which("chromium") or (os.access("/usr/bin/chromium", os.X_OK) and "/usr/bin/chromium") or None


CHROMIUM = _chromium()
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="no chromium binary on PATH (install Debian's chromium, e.g. `make browser`)"
)


def _run_chromium(tmp_path: Path, url: str, *extra: str) -> subprocess.CompletedProcess:
    args = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={tmp_path / 'chromium-profile'}", "--hide-scrollbars", *extra, url,
    ]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=90)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc


# Injected only into the test's copy of the page: measures what Chromium laid out.
PROBE = """
<script>
(function () {
  const out = {};
  for (const svg of document.querySelectorAll('svg[data-plot]')) {
    const area = svg.querySelector('rect.plot-area').getBoundingClientRect();
    const marks = [...svg.querySelectorAll('.mark')].map(m => {
      const r = m.getBoundingClientRect();
      const style = getComputedStyle(m);
      return {x: m.dataset.x, y: m.dataset.y, series: m.dataset.series, w: r.width, h: r.height,
              cx: r.left + r.width / 2, cy: r.top + r.height / 2,
              visible: style.visibility !== 'hidden' && style.display !== 'none' && style.fill !== 'none'};
    });
    const labels = [...svg.querySelectorAll('text.axis-label')].map(t => {
      const b = t.getBBox();
      return {text: t.textContent.trim(), w: b.width, h: b.height};
    });
    out[svg.dataset.plot] = {area: {left: area.left, right: area.right, top: area.top, bottom: area.bottom,
                                    w: area.width, h: area.height}, marks, labels,
                             lines: svg.querySelectorAll('.series-line').length,
                             fit: [...svg.querySelectorAll('path.fit')].map(p => p.getTotalLength()),
                             errorbars: [...svg.querySelectorAll('.errorbar')].map(p => p.getBBox().height)};
  }
  const pre = document.createElement('pre');
  pre.id = 'probe';
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
})();
</script>
"""


class _Dom(HTMLParser):
    """Collects the elements of the dumped DOM: tag, attributes, text and the plot they sit in."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.elements: list[dict] = []
        self.stack: list[dict] = []
        self.probe = ""

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        plot = a.get("data-plot") or next((e["plot"] for e in reversed(self.stack) if e["plot"]), None)
        el = {"tag": tag, "attrs": a, "text": "", "plot": plot}
        self.elements.append(el)
        if tag not in ("meta", "br", "img", "input", "link"):
            self.stack.append(el)

    def handle_startendtag(self, tag, attrs):
        self.handle_starttag(tag, attrs)
        if self.stack and self.stack[-1]["tag"] == tag:
            self.stack.pop()

    def handle_endtag(self, tag):
        for i in range(len(self.stack) - 1, -1, -1):
            if self.stack[i]["tag"] == tag:
                del self.stack[i:]
                break

    def handle_data(self, data):
        if self.stack:
            self.stack[-1]["text"] += data
            if self.stack[-1]["attrs"].get("id") == "probe":
                self.probe += data

    def find(self, plot=None, cls=None, tag=None):
        return [
            e for e in self.elements
            if (plot is None or e["plot"] == plot)
            and (cls is None or cls in e["attrs"].get("class", "").split())
            and (tag is None or e["tag"] == tag)
        ]


def _render(tmp_path: Path, summary: dict) -> tuple[_Dom, dict]:
    page = write_html_report(summary, tmp_path / "report.html", title="infscale report", meta={"run_id": "t1"})
    probed = tmp_path / "probed.html"
    probed.write_text(page.read_text().replace("</body>", PROBE + "</body>"))
    proc = _run_chromium(tmp_path, probed.as_uri(), "--dump-dom")
    dom = _Dom()
    dom.feed(proc.stdout)
    assert dom.probe, "the page did not render (no probe output in the dumped DOM)"
    return dom, json.loads(dom.probe)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    if CHROMIUM is None:
        pytest.skip("no chromium binary")
    summary = _summary()
    dom, probe = _render(tmp_path_factory.mktemp("html"), summary)
    return summary, dom, probe


@needs_chromium
def test_every_data_point_is_a_mark_with_its_data(rendered):
    summary, dom, probe = rendered
    assert {e["attrs"]["data-plot"] for e in dom.find(tag="svg") if "data-plot" in e["attrs"]} == \
        {"accuracy", "coverage", "abstention", "verifier:arith-check"}
    # accuracy: one mark per strategy × budget cell, carrying that cell's values
    marks = dom.find("accuracy", "mark")
    assert len(marks) == len(summary["cells"]) == len(STRATEGIES) * len(BUDGETS)
    drawn = {(m["attrs"]["data-series"], int(m["attrs"]["data-budget"])): m["attrs"] for m in marks}
    for c in summary["cells"]:
        a = drawn[(c["strategy"], c["budget"])]
        assert float(a["data-x"]) == pytest.approx(c["generated_tokens"])
        assert float(a["data-y"]) == pytest.approx(c["accuracy"])
        assert [float(a["data-lo"]), float(a["data-hi"])] == pytest.approx(c["wilson"])
    assert len(dom.find("accuracy", "errorbar")) == len(summary["cells"])
    assert len(dom.find("accuracy", "series-line")) == len(STRATEGIES)
    # coverage: one mark per k for coverage and for majority@k
    cov = summary["coverage"]
    cmarks = dom.find("coverage", "mark")
    assert len(cmarks) == 2 * len(cov["ks"])
    got = sorted((int(m["attrs"]["data-x"]), float(m["attrs"]["data-y"])) for m in cmarks if m["attrs"]["data-series"] == "coverage")
    assert [k for k, _ in got] == cov["ks"]
    assert [v for _, v in got] == pytest.approx(cov["coverage"])
    assert len(dom.find("coverage", "fit")) == 1


@needs_chromium
def test_axes_are_labelled(rendered):
    _, dom, probe = rendered
    for plot in ("accuracy", "coverage"):
        labels = [e["text"].strip() for e in dom.find(plot, "axis-label")]
        assert len(labels) == 2 and all(labels), labels
        assert len(dom.find(plot, "tick")) >= 4
        # Chromium laid the labels out with real extent
        assert all(l["text"] and l["w"] > 20 and l["h"] > 5 for l in probe[plot]["labels"])
    assert "generated tokens" in " ".join(e["text"] for e in dom.find("accuracy", "axis-label"))
    assert "k" in " ".join(e["text"] for e in dom.find("coverage", "axis-label"))


@needs_chromium
def test_marks_are_drawn_inside_the_plot_area(rendered):
    summary, dom, probe = rendered
    for plot, n in (("accuracy", len(summary["cells"])), ("coverage", 2 * len(summary["coverage"]["ks"]))):
        # from the DOM's attributes
        area = dom.find(plot, "plot-area")[0]["attrs"]
        x0, y0 = float(area["x"]), float(area["y"])
        x1, y1 = x0 + float(area["width"]), y0 + float(area["height"])
        for m in dom.find(plot, "mark"):
            assert x0 <= float(m["attrs"]["cx"]) <= x1 and y0 <= float(m["attrs"]["cy"]) <= y1
        # from Chromium's layout
        p = probe[plot]
        a = p["area"]
        assert a["w"] > 300 and a["h"] > 200
        assert len(p["marks"]) == n
        for m in p["marks"]:
            assert m["visible"] and m["w"] > 3 and m["h"] > 3
            assert a["left"] <= m["cx"] <= a["right"] and a["top"] <= m["cy"] <= a["bottom"]
        # higher values sit higher on the screen
        ys = sorted(p["marks"], key=lambda m: float(m["y"]))
        assert ys[0]["cy"] >= ys[-1]["cy"]
    # the verifier and abstention plots too: every point a visible mark inside the plot area
    for plot in ("verifier:arith-check", "abstention"):
        p = probe[plot]
        assert p["marks"]
        for m in p["marks"]:
            assert m["visible"] and p["area"]["left"] <= m["cx"] <= p["area"]["right"]
            assert p["area"]["top"] <= m["cy"] <= p["area"]["bottom"]
    assert probe["coverage"]["fit"] and probe["coverage"]["fit"][0] > 100  # the fitted curve has length
    assert max(probe["accuracy"]["errorbars"]) > 5


@needs_chromium
def test_cost_table_is_rendered(rendered):
    summary, dom, _ = rendered
    table = next(e for e in dom.find(tag="table") if e["attrs"].get("data-table") == "cost")
    rows = [e for e in dom.elements[dom.elements.index(table):] if e["tag"] == "tr"]
    cells = summary["cells"]
    texts = [e["text"] for e in dom.find(tag="td")]
    assert len(rows) >= len(cells) + 1
    for c in cells:
        assert f"{c['generated_tokens']:.1f}" in texts and f"{c['prompt_tokens']:.1f}" in texts


@needs_chromium
def test_degenerate_data_shows_messages_instead_of_plots(tmp_path):
    empty = {"cells": [], "coverage": None, "comparisons": []}
    dom, probe = _render(tmp_path, empty)
    assert probe == {}  # no svg at all
    msgs = {e["attrs"].get("data-plot-empty"): e["text"] for e in dom.find(cls="plot-empty")}
    assert "No results" in msgs["accuracy"] and "samples" in msgs["coverage"]
    # Results but no samples, a single budget, zero tokens (linear axis), a coverage without a fit.
    s = _summary(samples=False)
    s["cells"] = [dict(c, generated_tokens=0.0) for c in s["cells"] if c["budget"] == 1]
    s["coverage"] = {"ks": [1], "coverage": [0.0], "fit": {"a": None, "b": None, "reason": "coverage is 0 at every k",
                                                            "n_points": 0}, "majority": None}
    dom, probe = _render(tmp_path / "deg", s)
    assert len(probe["accuracy"]["marks"]) == len(s["cells"]) and len(probe["coverage"]["marks"]) == 1
    for p in probe.values():
        for m in p["marks"]:
            assert p["area"]["left"] <= m["cx"] <= p["area"]["right"] and p["area"]["top"] <= m["cy"] <= p["area"]["bottom"]
    assert not dom.find("coverage", "fit")
    assert "coverage is 0 at every k" in " ".join(e["text"] for e in dom.find("coverage", "legend-label"))


@needs_chromium
def test_screenshot(tmp_path):
    page = write_html_report(_summary(), tmp_path / "report.html", title="screenshot", meta={})
    shot = tmp_path / "report.png"
    _run_chromium(tmp_path, page.as_uri(), "--window-size=1000,1500", f"--screenshot={shot}")
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    assert (width, height) == (1000, 1500) and len(data) > 30_000  # a blank page compresses to ~few KB
    if os.environ.get("INFSCALE_KEEP_SCREENSHOT"):
        shutil.copy(shot, os.environ["INFSCALE_KEEP_SCREENSHOT"])


class _Stream:
    def __init__(self, tty: bool):
        self.tty, self.text = tty, ""

    def isatty(self) -> bool:
        return self.tty

    def write(self, s: str) -> int:
        self.text += s
        return len(s)

    def flush(self) -> None:
        pass


def _progress_events(total: int = 5):
    from infscale.evaluation.harness import Progress  # noqa: PLC0415

    return [Progress(done=i, total=total, samples=4 * i, results=i, seconds=float(i)) for i in range(1, total + 1)]


def test_progress_bar_off_a_terminal_prints_one_final_line():
    from infscale.cli._runs import ProgressBar  # noqa: PLC0415

    stream = _Stream(tty=False)
    bar = ProgressBar(stream)
    for p in _progress_events():
        bar(p)
    assert stream.text == ""  # nothing while running: logs stay short
    bar.close()
    assert stream.text == "5/5 problems, 20 samples, 5s\n"
    silent = _Stream(tty=False)
    off = ProgressBar(silent, enabled=False)
    for p in _progress_events():
        off(p)
    off.close()
    assert silent.text == ""


def test_progress_bar_on_a_terminal_is_drawn_by_tqdm():
    from infscale.cli._runs import ProgressBar  # noqa: PLC0415

    stream = _Stream(tty=True)
    bar = ProgressBar(stream)
    for p in _progress_events():
        bar(p)
    bar.close()
    last = stream.text.replace("\r", "\n").strip().splitlines()[-1]
    assert "5/5" in last and "20 samples" in last and "100%" in last
