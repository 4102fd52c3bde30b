"""Reports of an evaluation run: terminal tables and one self-contained HTML page.

Both take the summary of :func:`infscale.evaluation.metrics.summarize`. The HTML page needs no
network: its CSS is inline and its plots are inline SVG drawn here, with no JavaScript.

Every plot is an ``<svg data-plot="NAME">`` with a ``<rect class="plot-area">``; each data point is
one element of class ``mark`` carrying ``data-x`` / ``data-y`` (the data values) and
``data-series``; axis titles are ``<text class="axis-label">``. Tests render the page in headless
Chromium and check exactly these, so keep them when changing the drawing.
"""

from __future__ import annotations

import html
import math
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .metrics import power_law_coverage

__all__ = ["terminal_report", "write_html_report"]

# Okabe & Ito (2008) colour-blind-safe palette.
PALETTE = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442", "#000000"]


# --------------------------------------------------------------------------------------------
# Terminal
# --------------------------------------------------------------------------------------------


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        if not math.isfinite(v):
            return "-"
        return f"{v:.{digits}f}"
    return str(v)


def _interval(iv: Sequence[float] | None, digits: int = 3) -> str:
    if not iv:
        return "-"
    return f"[{iv[0]:.{digits}f}, {iv[1]:.{digits}f}]"


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], left: int | set[int] = 1) -> list[str]:
    """Fixed-width table: the first ``left`` columns (or the columns in the set ``left``)
    left-aligned, the others right-aligned."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    lefts = set(range(left)) if isinstance(left, int) else left

    def line(cells: Sequence[str]) -> str:
        parts = [c.ljust(w) if i in lefts else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))]
        return "  ".join(parts).rstrip()

    return [line(headers), "  ".join("-" * w for w in widths), *(line(r) for r in rows)]


def _fit_line(fit: Mapping[str, Any] | None) -> str:
    if not fit:
        return "fit: none"
    if fit.get("a") is None:
        return f"fit: none ({fit.get('reason')})"
    r2 = "-" if fit.get("r2") is None else f"{fit['r2']:.4f}"
    return (
        f"fit: coverage(k) = exp({fit['a']:.4f} * k^{fit['b']:.4f})   "
        f"rmse {fit['rmse']:.4f}  R^2 {r2}  ({fit['n_points']} points)"
    )


def terminal_report(summary: Mapping[str, Any], *, title: str = "") -> str:
    """Fixed-width tables: accuracy with intervals, cost per problem, coverage with its fit, and
    the paired comparisons, as one string ready to print."""
    conf = summary.get("conf", 0.95)
    pct = f"{100 * conf:g}%"
    out: list[str] = []
    if title:
        out += [title, "=" * len(title), ""]
    cells = summary.get("cells") or []
    if not cells:
        out.append("No results.")
    else:
        out.append(f"Accuracy (mean over seeds per problem; {pct} intervals over problems)")
        out += _table(
            ["strategy", "budget", "problems", "seeds", "accuracy", f"Wilson {pct}", f"Beta {pct}"],
            [
                [c["strategy"], str(c["budget"]), str(c["problems"]), str(c["seeds"]), _fmt(c["accuracy"]),
                 _interval(c.get("wilson")), _interval(c.get("beta"))]
                for c in cells
            ],
        )
        out += ["", "Cost per problem (means)"]
        out += _table(
            ["strategy", "budget", "generated tokens", "prompt tokens", "calls", "seconds"],
            [
                [c["strategy"], str(c["budget"]), _fmt(c["generated_tokens"], 1), _fmt(c["prompt_tokens"], 1),
                 _fmt(c["calls"], 2), _fmt(c["seconds"], 3)]
                for c in cells
            ],
        )
    cov = summary.get("coverage")
    out.append("")
    if not cov:
        out.append("Coverage: no pooled samples.")
    else:
        out.append(
            f"Coverage (unbiased pass@k over pooled samples; {cov.get('problems', '?')} problems, "
            f">= {cov.get('min_samples', '?')} samples each)"
        )
        rows = [["coverage", *(_fmt(v) for v in cov["coverage"])]]
        if cov.get("majority"):
            rows.append(["majority@k", *(_fmt(v) for v in cov["majority"]["accuracy"])])
        out += _table(["k", *(str(k) for k in cov["ks"])], rows)
        out.append(_fit_line(cov.get("fit")))
    out += _verifier_lines(summary)
    out += _abstention_lines(summary)
    frontier = summary.get("frontier") or []
    if frontier and cells:
        by = {(c["strategy"], c["budget"]): c for c in cells}
        steps = [f"{s}@{b} ({by[(s, b)]['generated_tokens']:.0f} tok, {by[(s, b)]['accuracy']:.3f})"
                 for s, b in map(tuple, frontier) if (s, b) in by]
        out += ["", "Pareto frontier (accuracy vs generated tokens, cheapest first): " + " -> ".join(steps)]
    comps = summary.get("comparisons") or []
    if comps:
        out += ["", f"Paired comparisons at the largest budgets (strategy - baseline on the same problems; "
                    f"{pct} interval; tokens: mean generated per problem)"]
        out += _comparison_table(comps)
    matched = summary.get("matched") or []
    if matched:
        out += ["", "Paired comparisons at matched compute (each budget vs the baseline budget with the nearest "
                    "generated tokens)"]
        out += _comparison_table(matched)
    return "\n".join(out) + "\n"


def _verifier_lines(summary: Mapping[str, Any]) -> list[str]:
    vs = summary.get("verifiers") or []
    if not vs:
        return []
    pct = f"{100 * summary.get('conf', 0.95):g}%"
    out = ["", f"Verifiers against the references (pooled samples; accepted = exp(score) > 0.5; {pct} Wilson "
               "intervals; fLaws: Stroebl et al. 2024)"]
    out += _table(
        ["scorer", "samples", "accepted", "TPR", "interval", "FPR", "interval", "precision", "base",
         "ceiling", "ceiling (pooled rates)", "optimal N predicted", "measured"],
        [[v["scorer"], str(v["rates"]["samples"]), str(v["rates"]["accepted"]), _fmt(v["rates"]["tpr"]),
          _interval(v["rates"]["tpr_interval"]), _fmt(v["rates"]["fpr"]), _interval(v["rates"]["fpr_interval"]),
          _fmt(v["rates"]["precision"]), _fmt(v["rates"]["base_accuracy"]), _fmt(v["predicted"]["ceiling"]),
          _fmt(v["predicted_pooled"]["ceiling"]), str(v["predicted"]["optimal_n"]), _fmt(v.get("measured_optimal_n"))]
         for v in vs],
    )
    for v in vs:
        if not v["measured"]:
            continue
        by = {m["budget"]: m for m in v["measured"]}
        ns = v["predicted"]["ns"]
        out += ["", f"best-of-N with {v['scorer']}: measured beside the fLaws prediction"]
        out += _table(["N", *(str(n) for n in ns)], [
            ["measured", *(_fmt(by[n]["accuracy"]) if n in by else "-" for n in ns)],
            ["predicted", *(_fmt(a) for a in v["predicted"]["accuracy"])],
            ["pooled rates", *(_fmt(a) for a in v["predicted_pooled"]["accuracy"])],
        ])
    return out


def _abstention_points(points: Sequence[Mapping[str, Any]], rates=(1.0, 0.75, 0.5, 0.25)) -> list[Mapping[str, Any]]:
    """The curve's points nearest to a few answer rates (all of them when there are few)."""
    if len(points) <= len(rates) + 1:
        return list(points)
    chosen = []
    for r in rates:
        p = min(points, key=lambda q: (abs(q["answer_rate"] - r), -q["answer_rate"]))
        if p not in chosen:
            chosen.append(p)
    return chosen


def _abstention_lines(summary: Mapping[str, Any]) -> list[str]:
    curves = summary.get("abstention") or []
    if not curves:
        return []
    pct = f"{100 * summary.get('conf', 0.95):g}%"
    out = ["", f"Accuracy vs abstention (the whole pool's chosen answer, answered only when its confidence "
               f">= threshold; {pct} Wilson intervals)"]
    rows = []
    for c in curves:
        for p in _abstention_points(c["points"]):
            rows.append([c["strategy"], c["confidence"], _fmt(p["threshold"]), f"{p['answered']}",
                         _fmt(p["answer_rate"]), _fmt(p["accuracy"]), _interval(p["interval"])])
    out += _table(["strategy", "confidence", "threshold", "answered", "answer rate", "accuracy", "interval"], rows,
                  left=2)
    return out


def _comparison_row(c: Mapping[str, Any]) -> list[str]:
    return [c["strategy"], str(c["budget"]), _fmt(c["tokens"], 1), c["baseline"], str(c["baseline_budget"]),
            _fmt(c["baseline_tokens"], 1), str(c["n"]), f"{c['diff']:+.3f}", _interval(c["interval"]),
            f"{c['p_value']:.4g}", f"{c['wins']}/{c['losses']}/{c['ties']}", c["test"]]


def _comparison_table(comps: Sequence[Mapping[str, Any]]) -> list[str]:
    return _table(["strategy", "budget", "tokens", "baseline", "budget", "tokens", "n", "diff", "interval", "p",
                   "W/L/T", "test"], [_comparison_row(c) for c in comps], left={0, 3})


# --------------------------------------------------------------------------------------------
# SVG plots
# --------------------------------------------------------------------------------------------

W, H = 760, 430
LEFT, RIGHT, TOP, BOTTOM = 70, 215, 24, 62  # margins; the legend lives in the right one
PX0, PX1, PY0, PY1 = LEFT, W - RIGHT, TOP, H - BOTTOM  # plot area (y grows downwards)


def _esc(s: Any) -> str:
    return html.escape(str(s), quote=True)


def _num(v: float) -> str:
    return f"{v:.2f}"


def _nice_step(span: float, target: int = 5) -> float:
    raw = span / max(target, 1)
    mag = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 2.5, 5, 10):
        if raw <= m * mag:
            return m * mag
    return 10 * mag


class _Axis:
    """A data → pixel map, linear or logarithmic, with its ticks."""

    def __init__(self, lo: float, hi: float, p0: float, p1: float, log: bool):
        self.log, self.p0, self.p1 = log, p0, p1
        self.lo, self.hi = (math.log10(lo), math.log10(hi)) if log else (lo, hi)

    def __call__(self, v: float) -> float:
        t = math.log10(v) if self.log else v
        return self.p0 + (t - self.lo) / (self.hi - self.lo) * (self.p1 - self.p0)

    def ticks(self, powers_of_two: bool = False) -> list[float]:
        if not self.log:
            step = _nice_step(self.hi - self.lo)
            first = math.ceil(self.lo / step - 1e-9) * step
            return [round(first + i * step, 10) for i in range(int((self.hi - first) / step + 1e-9) + 1)]
        lo, hi = 10**self.lo, 10**self.hi
        if powers_of_two:
            e0, e1 = math.ceil(math.log2(lo) - 1e-9), math.floor(math.log2(hi) + 1e-9)
            every = max(1, math.ceil((e1 - e0 + 1) / 9))
            return [2.0**e for e in range(e0, e1 + 1, every)]
        out = []
        for mults in ((1,), (1, 2, 5), (1, 1.5, 2, 3, 5, 7)):
            out = [m * 10.0**e for e in range(math.floor(self.lo) - 1, math.ceil(self.hi) + 1) for m in mults]
            out = [t for t in out if lo <= t <= hi]
            if len(out) >= 3:
                break
        return out


def _tick_label(v: float) -> str:
    if v == 0:
        return "0"
    if abs(v) >= 1e5 or abs(v) < 1e-3:
        return f"{v:.0e}"
    if float(v).is_integer():
        return f"{int(v):,}"
    return f"{v:g}"


def _frame(plot: str, title: str, x: _Axis, y: _Axis, xlabel: str, ylabel: str, xticks, yticks) -> list[str]:
    """The svg opening tag, plot area, grid, ticks and axis labels (the caller closes the svg)."""
    s = [
        f'<svg data-plot="{plot}" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} {H}" '
        f'width="{W}" height="{H}" role="img" aria-label="{_esc(title)}">',
        f"<title>{_esc(title)}</title>",
        f'<rect class="plot-area" x="{PX0}" y="{PY0}" width="{PX1 - PX0}" height="{PY1 - PY0}" />',
    ]
    for t in yticks:
        py = _num(y(t))
        s.append(f'<line class="grid" x1="{PX0}" x2="{PX1}" y1="{py}" y2="{py}" />')
        s.append(f'<text class="tick" x="{PX0 - 6}" y="{py}" text-anchor="end" dominant-baseline="middle">{_tick_label(t)}</text>')
    for t in xticks:
        px = _num(x(t))
        s.append(f'<line class="grid" x1="{px}" x2="{px}" y1="{PY0}" y2="{PY1}" />')
        s.append(f'<text class="tick" x="{px}" y="{PY1 + 16}" text-anchor="middle">{_tick_label(t)}</text>')
    s.append(f'<line class="axis" x1="{PX0}" x2="{PX1}" y1="{PY1}" y2="{PY1}" />')
    s.append(f'<line class="axis" x1="{PX0}" x2="{PX0}" y1="{PY0}" y2="{PY1}" />')
    s.append(f'<text class="axis-label" x="{_num((PX0 + PX1) / 2)}" y="{H - 16}" text-anchor="middle">{_esc(xlabel)}</text>')
    cy = _num((PY0 + PY1) / 2)
    s.append(
        f'<text class="axis-label" x="18" y="{cy}" text-anchor="middle" '
        f'transform="rotate(-90 18 {cy})">{_esc(ylabel)}</text>'
    )
    return s


def _legend(entries: Sequence[tuple[str, str, str]]) -> list[str]:
    """Legend rows right of the plot: (colour, label, style), style "point", "line", "dash" or "text"."""
    s = ['<g class="legend">']
    for i, (colour, label, style) in enumerate(entries):
        y = PY0 + 10 + 20 * i
        x = PX1 + 14
        if style == "point":
            s.append(f'<line x1="{x}" x2="{x + 22}" y1="{y}" y2="{y}" stroke="{colour}" stroke-width="2" />')
            s.append(f'<circle cx="{x + 11}" cy="{y}" r="4" fill="{colour}" />')
        elif style in ("line", "dash"):
            dash = ' stroke-dasharray="6 4"' if style == "dash" else ""
            s.append(f'<line x1="{x}" x2="{x + 22}" y1="{y}" y2="{y}" stroke="{colour}" stroke-width="2"{dash} />')
        short = label if len(label) <= 28 else label[:27] + "…"
        s.append(f'<text class="legend-label" x="{x + 28}" y="{y}" dominant-baseline="middle">{_esc(short)}<title>{_esc(label)}</title></text>')
    s.append("</g>")
    return s


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)


def _accuracy_plot(summary: Mapping[str, Any]) -> str:
    cells = [c for c in summary.get("cells") or [] if _finite(c.get("accuracy")) and _finite(c.get("generated_tokens"))]
    if not cells:
        return '<p class="plot-empty" data-plot-empty="accuracy">No results to plot: the run has no scored problems.</p>'
    conf = summary.get("conf", 0.95)
    xs = [float(c["generated_tokens"]) for c in cells]
    lo, hi = min(xs), max(xs)
    log = lo > 0 and hi / lo >= 4
    if log:
        x = _Axis(lo / 1.35, hi * 1.35, PX0, PX1, log=True)
    else:
        # Pad both sides so no point sits on the frame; a zero span gets a unit-wide window.
        pad = 0.1 * (hi - lo) if hi > lo else max(0.5 * abs(hi), 0.5)
        x = _Axis(lo - pad, hi + pad, PX0, PX1, log=False)
    y = _Axis(0.0, 1.0, PY1, PY0, log=False)
    title = "Accuracy vs generated tokens per problem"
    s = _frame(
        "accuracy", title, x, y,
        "Mean generated tokens per problem" + (" (log scale)" if log else ""),
        f"Accuracy ({100 * conf:g}% Wilson interval)",
        x.ticks(), [0.0, 0.2, 0.4, 0.6, 0.8, 1.0],
    )
    strategies = list(dict.fromkeys(c["strategy"] for c in cells))
    legend = []
    for i, strat in enumerate(strategies):
        colour = PALETTE[i % len(PALETTE)]
        legend.append((colour, strat, "point"))
        series = sorted((c for c in cells if c["strategy"] == strat), key=lambda c: (c["budget"], c["generated_tokens"]))
        is_auto = _is_auto(strat)
        s.append(f'<g class="series" data-series="{_esc(strat)}">')
        if len(series) > 1:
            pts = " ".join(f"{_num(x(c['generated_tokens']))},{_num(y(c['accuracy']))}" for c in series)
            s.append(f'<polyline class="series-line" points="{pts}" fill="none" stroke="{colour}" stroke-width="2" />')
        for c in series:
            px, py = _num(x(c["generated_tokens"])), _num(y(c["accuracy"]))
            iv = c.get("wilson") or [c["accuracy"], c["accuracy"]]
            ylo, yhi = _num(y(iv[0])), _num(y(iv[1]))
            cap0, cap1 = _num(float(px) - 4), _num(float(px) + 4)
            s.append(
                f'<path class="errorbar" d="M{px},{ylo}V{yhi}M{cap0},{ylo}H{cap1}M{cap0},{yhi}H{cap1}" '
                f'stroke="{colour}" stroke-width="1.3" fill="none" />'
            )
            tip = (
                f"{strat}, budget {c['budget']}: accuracy {c['accuracy']:.3f} "
                f"[{iv[0]:.3f}, {iv[1]:.3f}], {c['generated_tokens']:.1f} generated tokens/problem, "
                f"{c['problems']} problems"
            )
            if is_auto:
                s.append(f'<circle class="auto-ring" cx="{px}" cy="{py}" r="8.5" fill="none" stroke="{colour}" '
                         'stroke-width="2" />')
            s.append(
                f'<circle class="mark{" auto" if is_auto else ""}" cx="{px}" cy="{py}" r="4.5" fill="{colour}" '
                f'data-series="{_esc(strat)}" data-budget="{c["budget"]}" data-x="{c["generated_tokens"]!r}" '
                f'data-y="{c["accuracy"]!r}" data-lo="{iv[0]!r}" data-hi="{iv[1]!r}"><title>{_esc(tip)}</title></circle>'
            )
            s.append(f'<text class="point-label" x="{_num(float(px) + 6)}" y="{_num(float(py) - 7)}">{c["budget"]}</text>')
        s.append("</g>")
    by = {(c["strategy"], c["budget"]): c for c in cells}
    front = [by[(f[0], int(f[1]))] for f in summary.get("frontier") or [] if (f[0], int(f[1])) in by]
    if front:
        # a staircase: each frontier point holds until a cheaper-to-dearer step buys more accuracy
        pts = [(x(c["generated_tokens"]), y(c["accuracy"])) for c in front]
        d = f"M{_num(pts[0][0])},{_num(pts[0][1])}" + "".join(f" H{_num(px)} V{_num(py)}" for px, py in pts[1:])
        d += f" H{_num(PX1)}"
        s.append(f'<path class="frontier" d="{d}" fill="none" stroke="#444444" stroke-width="1.4" '
                 f'stroke-dasharray="3 3" data-points="{len(front)}" />')
        legend.append(("#444444", "Pareto frontier (all runs)", "dash"))
    if any(_is_auto(st) for st in strategies):
        legend.append(("none", "ringed points: auto", "text"))
    s += _legend(legend)
    s.append(f'<text class="note" x="{PX1 + 14}" y="{PY1 - 4}">point labels: budget</text>')
    s.append("</svg>")
    return "\n".join(s)


def _is_auto(strategy: str) -> bool:
    """Whether a spec label is the ``auto`` strategy (``auto`` or ``auto:...``)."""
    return str(strategy).partition(":")[0] == "auto"


def _series_marks(name: str, pts: Sequence[tuple[float, float]], x: _Axis, y: _Axis, colour: str, label: str,
                  dash: bool = False, extra: Sequence[Mapping[str, Any]] | None = None) -> list[str]:
    """One data series: its line and one ``mark`` per point (``data-x`` / ``data-y``)."""
    s = [f'<g class="series" data-series="{_esc(name)}">']
    if len(pts) > 1:
        d = ' stroke-dasharray="6 4"' if dash else ""
        line = " ".join(f"{_num(x(px))},{_num(y(py))}" for px, py in pts)
        s.append(f'<polyline class="series-line" points="{line}" fill="none" stroke="{colour}" stroke-width="1.8"{d} />')
    for i, (px, py) in enumerate(pts):
        iv = (extra[i].get("interval") if extra else None)
        if iv:
            ylo, yhi, cx = _num(y(iv[0])), _num(y(iv[1])), _num(x(px))
            s.append(f'<path class="errorbar" d="M{cx},{ylo}V{yhi}" stroke="{colour}" stroke-width="1.2" fill="none" />')
        tip = f"{label}: x={px:g}, y={py:.3f}" + (f" [{iv[0]:.3f}, {iv[1]:.3f}]" if iv else "")
        s.append(f'<circle class="mark" cx="{_num(x(px))}" cy="{_num(y(py))}" r="4" fill="{colour}" '
                 f'data-series="{_esc(name)}" data-x="{px!r}" data-y="{py!r}"><title>{_esc(tip)}</title></circle>')
    s.append("</g>")
    return s


def _verifier_plot(v: Mapping[str, Any]) -> str:
    """Measured best-of-N accuracy beside the fLaws prediction and ceiling, for one scorer."""
    pred, pooled = v["predicted"], v["predicted_pooled"]
    ns = [float(n) for n in pred["ns"]]
    x = _Axis(min(ns) / 1.4, max(ns) * 1.4, PX0, PX1, log=True) if max(ns) > min(ns) else \
        _Axis(min(ns) - 1, max(ns) + 1, PX0, PX1, log=False)
    y = _Axis(0.0, 1.0, PY1, PY0, log=False)
    name = f"verifier:{v['scorer']}"
    s = _frame(name, f"Best-of-N with {v['scorer']}: measured and predicted", x, y,
               "Samples N (log scale)" if x.log else "Samples N", "Accuracy",
               ns if len(ns) <= 10 else x.ticks(powers_of_two=True), [0.0, 0.2, 0.4, 0.6, 0.8, 1.0])
    legend = []
    if v["measured"]:
        pts = [(float(m["budget"]), float(m["accuracy"])) for m in v["measured"]]
        s += _series_marks("measured", pts, x, y, PALETTE[0], "measured best-of-N",
                           extra=[{"interval": m["wilson"]} for m in v["measured"]])
        legend.append((PALETTE[0], "measured best-of-N", "point"))
    s += _series_marks("predicted", list(zip(ns, pred["accuracy"])), x, y, PALETTE[1], "predicted (per-problem rates)",
                       dash=True)
    legend.append((PALETTE[1], "predicted, per-problem rates", "point"))
    s += _series_marks("predicted-pooled", list(zip(ns, pooled["accuracy"])), x, y, PALETTE[2],
                       "predicted (pooled rates)", dash=True)
    legend.append((PALETTE[2], "predicted, pooled rates", "point"))
    cy = _num(y(pred["ceiling"]))
    s.append(f'<line class="ceiling" x1="{PX0}" x2="{PX1}" y1="{cy}" y2="{cy}" stroke="#444444" '
             f'stroke-width="1.4" stroke-dasharray="2 3" data-y="{pred["ceiling"]!r}" />')
    r = v["rates"]
    legend += [("#444444", f"fLaws ceiling {pred['ceiling']:.3f}", "dash"),
               ("none", f"TPR {_fmt(r['tpr'])}, FPR {_fmt(r['fpr'])}", "text"),
               ("none", f"optimal N: predicted {pred['optimal_n']}", "text"),
               ("none", f"optimal N: measured {_fmt(v.get('measured_optimal_n'))}", "text")]
    s += _legend(legend)
    s.append("</svg>")
    return "\n".join(s)


def _abstention_plot(summary: Mapping[str, Any]) -> str:
    curves = [c for c in summary.get("abstention") or [] if c["points"]]
    if not curves:
        return ('<p class="plot-empty" data-plot-empty="abstention">No abstention curve: the run stored no pooled '
                "samples.</p>")
    x = _Axis(0.0, 1.05, PX0, PX1, log=False)
    y = _Axis(0.0, 1.0, PY1, PY0, log=False)
    s = _frame("abstention", "Accuracy vs abstention", x, y, "Fraction of problems answered",
               "Accuracy on the answered problems", [0.0, 0.2, 0.4, 0.6, 0.8, 1.0], [0.0, 0.2, 0.4, 0.6, 0.8, 1.0])
    legend = []
    for i, c in enumerate(curves):
        colour = PALETTE[i % len(PALETTE)]
        pts = [(p["answer_rate"], p["accuracy"]) for p in c["points"]]
        s += _series_marks(c["strategy"], pts, x, y, colour, f"{c['strategy']} ({c['confidence']})",
                           extra=c["points"])
        legend.append((colour, f"{c['strategy']} by {c['confidence']}", "point"))
    s += _legend(legend)
    s.append("</svg>")
    return "\n".join(s)


def _coverage_plot(summary: Mapping[str, Any]) -> str:
    cov = summary.get("coverage")
    if not cov or not cov.get("ks"):
        return (
            '<p class="plot-empty" data-plot-empty="coverage">No coverage curve: the run stored no pooled '
            "samples (coverage needs every sample's correctness).</p>"
        )
    ks = [float(k) for k in cov["ks"]]
    x = _Axis(min(ks) / 1.4, max(ks) * 1.4, PX0, PX1, log=True)
    y = _Axis(0.0, 1.0, PY1, PY0, log=False)
    s = _frame(
        "coverage", "Coverage vs samples per problem", x, y,
        "Samples per problem k (log scale)", "Coverage (pass@k) and majority@k",
        ks if len(ks) <= 10 else x.ticks(powers_of_two=True), [0.0, 0.2, 0.4, 0.6, 0.8, 1.0],
    )
    series = [("coverage", cov["coverage"], PALETTE[0], "coverage (pass@k)")]
    if cov.get("majority"):
        series.append(("majority@k", cov["majority"]["accuracy"], PALETTE[1], "majority@k"))
    legend = [(colour, label, "point") for _, _, colour, label in series]
    fit = cov.get("fit") or {}
    fit_colour = "#444444"
    if fit.get("a") is not None:
        grid = [min(ks) * (max(ks) / min(ks)) ** (i / 80) for i in range(81)] if max(ks) > min(ks) else [min(ks)]
        vals = power_law_coverage(grid, fit["a"], fit["b"])
        d = "M" + " L".join(f"{_num(x(k))},{_num(y(v))}" for k, v in zip(grid, vals))
        s.append(f'<path class="fit" d="{d}" fill="none" stroke="{fit_colour}" stroke-width="1.6" stroke-dasharray="6 4" />')
        r2 = "-" if fit.get("r2") is None else f"{fit['r2']:.3f}"
        legend += [
            (fit_colour, "fit: coverage = exp(a·k^b)", "dash"),
            ("none", f"a = {fit['a']:.3f}, b = {fit['b']:.3f}", "text"),
            ("none", f"rmse {fit['rmse']:.4f}, R² {r2}", "text"),
            ("none", f"{fit['n_points']} points fitted", "text"),
        ]
    else:
        legend.append(("none", "no power-law fit:", "text"))
        legend += [("none", line, "text") for line in textwrap.wrap(str(fit.get("reason", "none")), 28)]
    for name, values, colour, label in series:
        s.append(f'<g class="series" data-series="{_esc(name)}">')
        pts = " ".join(f"{_num(x(k))},{_num(y(v))}" for k, v in zip(ks, values))
        if len(ks) > 1:
            s.append(f'<polyline class="series-line" points="{pts}" fill="none" stroke="{colour}" stroke-width="1.5" />')
        for k, v in zip(ks, values):
            tip = f"{label} at k={int(k)}: {v:.3f}"
            s.append(
                f'<circle class="mark" cx="{_num(x(k))}" cy="{_num(y(v))}" r="4.5" fill="{colour}" '
                f'data-series="{_esc(name)}" data-x="{int(k)}" data-y="{v!r}"><title>{_esc(tip)}</title></circle>'
            )
        s.append("</g>")
    s += _legend(legend)
    s.append("</svg>")
    return "\n".join(s)


# --------------------------------------------------------------------------------------------
# HTML tables and page
# --------------------------------------------------------------------------------------------


def _html_table(name: str, headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    head = "".join(f"<th>{_esc(h)}</th>" for h in headers)
    body = "\n".join("<tr>" + "".join(f"<td>{_esc(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f'<table data-table="{name}">\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n</tbody>\n</table>'


_CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #222;
       max-width: 980px; margin: 24px auto; padding: 0 16px; }
h1 { font-size: 22px; margin-bottom: 4px; } h2 { font-size: 17px; margin-top: 28px; }
table { border-collapse: collapse; margin: 8px 0; font-variant-numeric: tabular-nums; }
th, td { padding: 3px 10px; border-bottom: 1px solid #ddd; text-align: right; white-space: nowrap; }
th:first-child, td:first-child { text-align: left; }
table[data-table="meta"] td, table[data-table="meta"] th { text-align: left; }
.plot-area { fill: #fbfbfb; stroke: #ccc; }
.grid { stroke: #e6e6e6; stroke-width: 1; }
.axis { stroke: #555; stroke-width: 1; }
.tick { font-size: 11px; fill: #555; }
.axis-label { font-size: 13px; fill: #222; }
.legend-label, .note { font-size: 11.5px; fill: #333; }
.point-label { font-size: 10px; fill: #444; }
.mark { stroke: #fff; stroke-width: 1; }
.plot-empty { padding: 16px; background: #f6f6f6; border: 1px dashed #bbb; }
.caption { color: #555; font-size: 12.5px; max-width: 760px; }
"""


def write_html_report(summary: Mapping[str, Any], path: str | Path, *, title: str, meta: Mapping[str, Any]) -> Path:
    """Write one self-contained HTML page (inline CSS and SVG, no scripts, no network) and return
    its path: run metadata, accuracy vs generated tokens per strategy with intervals, coverage vs
    k with the power-law fit, the accuracy and cost tables and the paired comparisons."""
    path = Path(path)
    conf = summary.get("conf", 0.95)
    pct = f"{100 * conf:g}%"
    cells = summary.get("cells") or []
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_esc(title)}</title>",
        f"<style>{_CSS}</style>",
        "</head><body>",
        f"<h1>{_esc(title)}</h1>",
    ]
    if meta:
        rows = "\n".join(f"<tr><th>{_esc(k)}</th><td>{_esc(_fmt(v))}</td></tr>" for k, v in meta.items())
        parts.append(f'<table data-table="meta">\n{rows}\n</table>')
    parts += [
        "<h2>Accuracy vs generated tokens</h2>",
        _accuracy_plot(summary),
        f'<p class="caption">One series per strategy; points are budgets (labelled), x is the mean number of '
        f"generated tokens per problem, error bars are {pct} Wilson intervals over problems (per-problem "
        "scores averaged over seeds first). The dashed staircase is the Pareto frontier over every strategy "
        "and budget (no other point is both cheaper and more accurate); points of the auto strategy are "
        "ringed.</p>",
        "<h2>Coverage vs samples</h2>",
        _coverage_plot(summary),
        '<p class="caption">Coverage is the mean unbiased pass@k (Chen et al. 2021) over the pooled samples of '
        "each problem; the dashed curve is the exponentiated power law log(coverage) = a·k^b fitted as in "
        "Brown et al. 2024 (Large Language Monkeys). majority@k is the expected accuracy of a k-sample "
        "majority vote drawn from the same pools.</p>",
    ]
    verifiers = summary.get("verifiers") or []
    if verifiers:
        parts.append("<h2>What the verifiers can buy</h2>")
        parts.append(_html_table(
            "verifiers",
            ["scorer", "samples", "accepted", "TPR", f"TPR {pct}", "FPR", f"FPR {pct}", "precision", "base accuracy",
             "fLaws ceiling", "ceiling (pooled rates)", "optimal N (predicted)", "optimal N (measured)"],
            [[v["scorer"], str(v["rates"]["samples"]), str(v["rates"]["accepted"]), _fmt(v["rates"]["tpr"]),
              _interval(v["rates"]["tpr_interval"]), _fmt(v["rates"]["fpr"]), _interval(v["rates"]["fpr_interval"]),
              _fmt(v["rates"]["precision"]), _fmt(v["rates"]["base_accuracy"]), _fmt(v["predicted"]["ceiling"]),
              _fmt(v["predicted_pooled"]["ceiling"]), str(v["predicted"]["optimal_n"]),
              _fmt(v.get("measured_optimal_n"))] for v in verifiers]))
        for v in verifiers:
            parts.append(_verifier_plot(v))
        parts.append('<p class="caption">A sample is accepted when the scorer\'s probability exp(score) is above 0.5; '
                     "TPR and FPR are measured against the references over the pooled samples (Wilson intervals). "
                     "The prediction is best-of-N on the pass/fail verdict under the fLaws model (Stroebl et al. "
                     "2024): accuracy(N) = c(1-(1-a)^N) + q(1-a)^N per problem, with a the acceptance rate, c the "
                     "accuracy of accepted samples (the ceiling) and q of rejected ones; the dotted line is its "
                     "limit.</p>")
    parts += [
        "<h2>Accuracy vs abstention</h2>",
        _abstention_plot(summary),
        '<p class="caption">Each problem\'s answer chosen from its whole pool, given only when its confidence '
        "(the majority's vote share, or the best sample's scorer probability) is at least a threshold; one point "
        f"per threshold, {pct} Wilson intervals on the answered problems.</p>",
        "<h2>Accuracy</h2>",
    ]
    if cells:
        parts.append(_html_table(
            "accuracy",
            ["strategy", "budget", "problems", "seeds", "accuracy", f"Wilson {pct}", f"Beta {pct}"],
            [[c["strategy"], str(c["budget"]), str(c["problems"]), str(c["seeds"]), _fmt(c["accuracy"]),
              _interval(c.get("wilson")), _interval(c.get("beta"))] for c in cells],
        ))
        parts += ["<h2>Cost per problem</h2>", _html_table(
            "cost",
            ["strategy", "budget", "accuracy", "generated tokens", "prompt tokens", "calls", "seconds"],
            [[c["strategy"], str(c["budget"]), _fmt(c["accuracy"]), _fmt(c["generated_tokens"], 1),
              _fmt(c["prompt_tokens"], 1), _fmt(c["calls"], 2), _fmt(c["seconds"], 3)] for c in cells],
        )]
    else:
        parts += ['<p class="plot-empty" data-plot-empty="cost">No results.</p>']
    headers = ["strategy", "budget", "generated tokens", "baseline", "baseline budget", "baseline generated tokens",
               "problems", "difference", "interval", "p-value", "wins/losses/ties", "test"]
    comps = summary.get("comparisons") or []
    if comps:
        parts += [f"<h2>Paired comparisons at the largest budgets (strategy − baseline, {pct} interval)</h2>",
                  _html_table("comparisons", headers, [_comparison_row(c) for c in comps])]
    matched = summary.get("matched") or []
    if matched:
        parts += [f"<h2>Paired comparisons at matched compute (strategy − baseline, {pct} interval)</h2>",
                  '<p class="caption">Each strategy budget against the baseline budget whose mean generated '
                  "tokens per problem are nearest.</p>",
                  _html_table("matched", headers, [_comparison_row(c) for c in matched])]
    cov = summary.get("coverage")
    if cov:
        rows = [["coverage", *(_fmt(v) for v in cov["coverage"])]]
        if cov.get("majority"):
            rows.append(["majority@k", *(_fmt(v) for v in cov["majority"]["accuracy"])])
        parts += ["<h2>Coverage table</h2>", _html_table("coverage", ["k", *(str(k) for k in cov["ks"])], rows),
                  f'<p class="caption">{_esc(_fit_line(cov.get("fit")))}</p>']
    parts.append('<p class="caption">Formulas and references: docs/evaluation-metrics.md.</p>')
    parts.append("</body></html>")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(parts) + "\n", encoding="utf-8")
    return path

