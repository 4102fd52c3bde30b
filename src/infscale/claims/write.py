"""Reproducing a claim end to end: its runs, its analysis, its figure (SVG and PNG, drawn with
matplotlib) and its markdown verdict, written into ``INFSCALE_HOME/claims/`` (or ``out``)."""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError, MissingExtraError
from ..home import subdir
from . import Claim
from .analysis import Analysis
from .presets import check_preset
from .runs import RunOutcome, ensure_run

__all__ = ["reproduce", "Reproduction", "verdict_markdown", "write_figure", "terminal_table"]


@dataclass
class Reproduction:
    claim: Claim
    preset: str
    analysis: Analysis
    outcomes: dict[str, RunOutcome]
    markdown: Path
    svg: Path | None
    png: Path | None
    model: str
    wall_seconds: float
    load: tuple[float, float, float] | None


def _stem(claim: Claim, preset: str) -> str:
    return claim.name if preset == "full" else f"{claim.name}-{preset}"


def reproduce(claim: Claim, preset: str = "full", *, model: str | None = None, backend_url: str | None = None,
              store=None, out: str | Path | None = None, generator_factory: Callable | None = None,
              log: Callable[[str], None] | None = None) -> Reproduction:
    """Run (or reuse) the claim's evaluations, analyse them and write its verdict and figure."""
    check_preset(preset)
    from ..evaluation.store import Store  # noqa: PLC0415

    out_dir = Path(out) if out is not None else subdir("claims")
    out_dir.mkdir(parents=True, exist_ok=True)
    model_name = backend_url or model or "smollm2-135m"
    stem = _stem(claim, preset)
    missing = [s for s in claim.requires if not _registered(s)]
    t0 = time.monotonic()
    load_start = _load()
    if missing:
        analysis = Analysis("pending", [], [], [], notes=[
            f"Needs the strategy {', '.join(missing)}, which is not registered in this infscale yet; this claim is "
            "reproduced once it lands (rerun `infscale reproduce " + claim.name + "`)."])
        outcomes: dict[str, RunOutcome] = {}
    else:
        own = store is None
        st = Store() if own else store
        try:
            outcomes = {k: ensure_run(st, spec, model=model, backend_url=backend_url,
                                      generator_factory=generator_factory, log=log)
                        for k, spec in claim.runs(preset).items()}
            analysis = claim.analyse(outcomes)
        except ConfigError as e:
            if not claim.requires:
                raise
            # the strategy it needs is registered but not usable yet (e.g. no policy shipped)
            analysis = Analysis("pending", [], [], [], notes=[
                f"Needs {', '.join(claim.requires)}, which is registered but could not run here: {e}. This claim "
                f"is reproduced once that works (rerun `infscale reproduce {claim.name}`)."])
            outcomes = {}
        finally:
            if own:
                st.close()
    wall = time.monotonic() - t0
    svg = png = None
    if analysis.series:
        svg, png = write_figure(analysis, out_dir / stem, title=claim.title)
    md = out_dir / f"{stem}.md"
    md.write_text(verdict_markdown(claim, preset, analysis, outcomes, model=model_name, wall_seconds=wall,
                                   load=load_start, figure=svg.name if svg else None), encoding="utf-8")
    return Reproduction(claim, preset, analysis, outcomes, md, svg, png, model_name, wall, load_start)


def _registered(strategy: str) -> bool:
    from ..strategies import STRATEGIES  # noqa: PLC0415

    return strategy in STRATEGIES


def _load() -> tuple[float, float, float] | None:
    try:
        return os.getloadavg()
    except OSError:  # pragma: no cover - platforms without it
        return None


# -------------------------------------------------------------------------------------------
# The figure


def write_figure(analysis: Analysis, stem: Path, *, title: str) -> tuple[Path, Path]:
    """Draw the analysis' series (lines with 95% bands, dashed predictions, horizontal ceilings)
    into ``stem.svg`` and ``stem.png``."""
    try:
        import matplotlib  # noqa: PLC0415
    except ImportError as e:  # pragma: no cover - the dependency is declared
        raise MissingExtraError("matplotlib (claim figures)", "pip install 'infscale[claims]'") from e
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    palette = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000"]
    fig, ax = plt.subplots(figsize=(7.2, 4.4), dpi=110)
    for i, s in enumerate(analysis.series):
        colour = "#444444" if s.style == "hline" else palette[i % len(palette)]
        pts = [(x, y, (s.lo[j] if s.lo else None), (s.hi[j] if s.hi else None))
               for j, (x, y) in enumerate(zip(s.x, s.y)) if y == y and x == x]  # drop NaN
        if not pts:
            continue
        xs, ys = [p[0] for p in pts], [p[1] for p in pts]
        if s.style == "hline":
            ax.axhline(ys[0], color=colour, linestyle=":", linewidth=1.4, label=s.label)
            continue
        if s.style == "points":
            ax.plot(xs, ys, marker="D", markersize=8, linestyle="none", color=colour, label=s.label)
        else:
            ax.plot(xs, ys, marker="o" if s.style == "line" else None, markersize=4,
                    linestyle="--" if s.style == "dashed" else "-", color=colour, linewidth=1.8, label=s.label)
        if all(p[2] is not None and p[3] is not None for p in pts):
            lo, hi = [p[2] for p in pts], [p[3] for p in pts]
            if s.style == "points" or len(pts) == 1:
                ax.errorbar(xs, ys, yerr=[[y - l for y, l in zip(ys, lo)], [h - y for y, h in zip(ys, hi)]],
                            fmt="none", ecolor=colour, capsize=4)
            else:
                ax.fill_between(xs, lo, hi, color=colour, alpha=0.12, linewidth=0)
    if analysis.logx:
        from matplotlib.ticker import FuncFormatter  # noqa: PLC0415

        ax.set_xscale("log", base=2)
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.set_ylim(0, 1)
    ax.set_xlabel(analysis.xlabel)
    ax.set_ylabel(analysis.ylabel)
    ax.set_title(f"{title}\nverdict: {analysis.verdict}", fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    svg, png = stem.with_suffix(".svg"), stem.with_suffix(".png")
    fig.savefig(svg, metadata={"Date": None})
    fig.savefig(png)
    plt.close(fig)
    return svg, png


# -------------------------------------------------------------------------------------------
# The verdict


def _md_table(headers: list[str], rows: list[list[str]]) -> list[str]:
    if not headers:
        return []
    return ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers),
            *("| " + " | ".join(r) + " |" for r in rows)]


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:+.3f}" if v < 0 or v > 0 else "0.000"
    return str(v)


def verdict_markdown(claim: Claim, preset: str, analysis: Analysis, outcomes: dict[str, RunOutcome], *,
                     model: str, wall_seconds: float, load, figure: str | None) -> str:
    lines = [f"# {claim.title}", "", f"**Claim** ({claim.paper}): {claim.statement}", "",
             f"**Verdict at this size: {analysis.verdict}.**", ""]
    lines += ["**Counts as not reproduced** (fixed in `infscale/claims/__init__.py` before any run): "
              + claim.not_reproduced_if, ""]
    if analysis.checks:
        lines += ["## Checks", "", "A check holds when its 95% interval lies on the claim's side, fails when it lies "
                  "on the other side, and is unclear when it covers both. The verdict is *reproduced* when every "
                  "decisive check holds, *not reproduced* when one fails, *inconclusive* otherwise.", ""]
        lines += _md_table(["check", "estimate", "95% interval", "result", "decisive", "rule", "detail"],
                           [[c.name, _fmt(c.estimate), "-" if not c.interval else
                             f"[{c.interval[0]:+.3f}, {c.interval[1]:+.3f}]", c.status, "yes" if c.decisive else
                             "context", c.rule, c.detail] for c in analysis.checks])
        lines.append("")
    if analysis.rows:
        lines += ["## Numbers", ""] + _md_table(analysis.headers, analysis.rows) + [""]
    if analysis.notes:
        lines += [*(f"- {n}" for n in analysis.notes), ""]
    if figure:
        lines += [f"![{claim.title}]({figure})", ""]
    lines += ["## Task", "", claim.task, "", "## Reduced from the paper", "", claim.reduced, ""]
    lines += ["## Provenance", "", f"- command: `infscale reproduce {claim.name}"
              + {"full": "", "quick": " --quick", "tiny": " --tiny"}[preset] + "`"
              + ("" if model == "smollm2-135m" else f" (model {model})"),
              f"- preset: `{preset}`" + (" (smaller than the full run; figures are indicative)" if preset != "full" else ""),
              f"- date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}", f"- model: {model}",
              f"- machine: {platform.machine()}, {os.cpu_count()} cores; load average at the start "
              + ("-" if load is None else " ".join(f"{x:.1f}" for x in load))]
    for name, o in outcomes.items():
        lines.append(f"- run `{o.run_id}` ({name}): {o.problems} problems; {o.command}; "
                     f"{o.seconds / 60:.1f} min of evaluation wall time in all"
                     + (" (reused, stored earlier)" if o.reused else ""))
    lines.append(f"- this command's wall time: {wall_seconds / 60:.1f} min")
    return "\n".join(lines) + "\n"


def terminal_table(rep: Reproduction) -> str:
    a = rep.analysis
    out = [f"{rep.claim.name}: {rep.claim.title}", f"verdict: {a.verdict}"]
    if a.rows:
        widths = [max(len(h), *(len(r[i]) for r in a.rows)) for i, h in enumerate(a.headers)]
        out.append("  ".join(h.ljust(w) for h, w in zip(a.headers, widths)))
        out += ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in a.rows]
    for c in a.checks:
        iv = "" if not c.interval else f" [{c.interval[0]:+.3f}, {c.interval[1]:+.3f}]"
        out.append(f"  {c.status:<8} {c.name}: {_fmt(c.estimate)}{iv}{'' if c.decisive else ' (context)'}")
    out += [f"  {n}" for n in a.notes]
    out.append(f"verdict: {rep.markdown}" + (f"\nfigure: {rep.svg} {rep.png}" if rep.svg else ""))
    return "\n".join(out)
