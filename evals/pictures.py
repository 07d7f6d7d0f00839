"""The three pictures of an eval run, as PNGs: outcomes by class and planner, time to mitigate, and
safety violations with and without the gate.

It exists apart from ``evals.report`` because it is the only part that needs matplotlib (a heavy import,
and a backend to pin): the markdown only names the files. The PNGs carry no matplotlib version in their
metadata, so they depend on the data only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from evals.results import EvalResult
from evals.rows import class_of, classes_of, group_of, groups_of

OUTCOMES_PNG = "outcomes.png"
TTM_PNG = "time_to_mitigate.png"
VIOLATIONS_PNG = "violations.png"

# No "Software" entry (matplotlib's version) in the PNG: the pictures depend on the data only.
_PNG_METADATA: dict[str, Any] = {"Software": None}


def _save(fig: Figure, path: Path) -> None:
    try:
        fig.tight_layout()
        fig.savefig(path, format="png", dpi=100, metadata=_PNG_METADATA)
    finally:
        plt.close(fig)


def _empty(ax: Axes, message: str) -> None:
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes, fontsize=12, color="0.4")
    ax.set_xticks([])
    ax.set_yticks([])


def _colours(groups: list[str]) -> dict[str, Any]:
    cmap = plt.get_cmap("tab10")
    return {g: cmap(i % 10) for i, g in enumerate(groups)}


def plot_outcomes(results: list[EvalResult], path: Path) -> Path:
    """Correct vs wrong outcomes per class, one stacked bar per planner (+ --no-gate)."""
    classes, groups = classes_of(results), groups_of(results)
    fig, ax = plt.subplots(figsize=(min(20.0, max(6.0, 1.2 * len(classes) * max(1, len(groups)) + 2)), 4.5))
    if not results:
        _empty(ax, "no results")
        ax.set_title("Outcomes by class and planner: no results")
        _save(fig, path)
        return path
    colours = _colours(groups)
    width = 0.8 / len(groups)
    xs = range(len(classes))
    for gi, g in enumerate(groups):
        correct, wrong = [], []
        for c in classes:
            rows = [r for r in results if class_of(r) == c and group_of(r) == g]
            correct.append(sum(r.outcome_correct for r in rows))
            wrong.append(sum(not r.outcome_correct for r in rows))
        pos = [x - 0.4 + width * (gi + 0.5) for x in xs]
        ax.bar(pos, correct, width, color=colours[g], edgecolor="black", linewidth=0.5)
        ax.bar(
            pos,
            wrong,
            width,
            bottom=correct,
            color=colours[g],
            alpha=0.35,
            hatch="//",
            edgecolor="black",
            linewidth=0.5,
        )
    ax.set_xticks(list(xs), classes, rotation=20 if len(classes) > 3 else 0, ha="right")
    ax.set_ylabel("incidents")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title("Outcomes by class and planner (solid: correct, hatched: wrong)")
    handles = [Patch(facecolor=colours[g], edgecolor="black", label=g) for g in groups]
    handles.append(Patch(facecolor="white", edgecolor="black", hatch="//", label="wrong outcome"))
    ax.legend(handles=handles, fontsize=8, loc="best")
    _save(fig, path)
    return path


def plot_time_to_mitigate(results: list[EvalResult], path: Path) -> Path:
    """Time to mitigate (sim minutes) of each mitigated incident, per class and planner, with medians."""
    classes, groups = classes_of(results), groups_of(results)
    timed = [r for r in results if r.time_to_mitigate_min is not None]
    fig, ax = plt.subplots(figsize=(min(20.0, max(6.0, 1.2 * len(classes) * max(1, len(groups)) + 2)), 4.5))
    if not timed:
        _empty(ax, "no incident was mitigated: no time to mitigate to show")
        ax.set_title("Time to mitigate (sim minutes): none mitigated")
        _save(fig, path)
        return path
    colours = _colours(groups)
    width = 0.8 / len(groups)
    for gi, g in enumerate(groups):
        first = True
        for ci, c in enumerate(classes):
            ys = sorted(
                r.time_to_mitigate_min
                for r in timed
                if class_of(r) == c and group_of(r) == g and r.time_to_mitigate_min is not None
            )
            if not ys:
                continue
            centre = ci - 0.4 + width * (gi + 0.5)
            n = len(ys)
            spread = width * 0.6
            xs = [centre + (spread * (i / (n - 1) - 0.5) if n > 1 else 0.0) for i in range(n)]
            ax.scatter(xs, ys, color=colours[g], s=28, zorder=3, label=g if first else None)
            median = ys[n // 2]
            ax.hlines(median, centre - width / 2, centre + width / 2, color=colours[g], linewidth=2)
            first = False
    ax.set_xticks(list(range(len(classes))), classes, rotation=20 if len(classes) > 3 else 0, ha="right")
    ax.set_xlim(-0.6, len(classes) - 0.4)
    ax.set_ylim(bottom=0)
    ax.set_ylabel("sim minutes")
    not_timed = len(results) - len(timed)
    ax.set_title(
        "Time to mitigate (sim minutes; line: median)"
        + (f" — {not_timed} run(s) not mitigated" if not_timed else "")
    )
    ax.legend(fontsize=8, loc="best")
    _save(fig, path)
    return path


def plot_violations(results: list[EvalResult], path: Path) -> Path:
    """Safety violations per class: gate on vs --no-gate (all planners together)."""
    classes = classes_of(results)
    fig, ax = plt.subplots(figsize=(min(20.0, max(6.0, 1.4 * len(classes) + 2)), 4.5))
    if not results:
        _empty(ax, "no results")
        ax.set_title("Safety violations: no results")
        _save(fig, path)
        return path
    on = [
        sum(len(r.safety_violations) for r in results if class_of(r) == c and r.gate and not r.node_only)
        for c in classes
    ]
    off = [sum(len(r.safety_violations) for r in results if class_of(r) == c and not r.gate) for c in classes]
    xs = list(range(len(classes)))
    bars_on = ax.bar([x - 0.2 for x in xs], on, 0.4, color="tab:green", label="gate on")
    bars_off = ax.bar([x + 0.2 for x in xs], off, 0.4, color="tab:red", label="--no-gate")
    ax.bar_label(bars_on, fontsize=8)
    ax.bar_label(bars_off, fontsize=8)
    ax.set_xticks(xs, classes, rotation=20 if len(classes) > 3 else 0, ha="right")
    ax.set_ylabel("safety violations")
    ax.set_ylim(bottom=0, top=max([*on, *off, 1]) * 1.15)
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    has_on = any(r.gate for r in results)
    has_off = any(not r.gate for r in results)
    if has_on and has_off:
        title = "Safety violations with and without the gate"
    elif has_on:
        title = "Safety violations with the gate (no --no-gate runs to compare)"
    else:
        title = "Safety violations without the gate (no gated runs to compare)"
    ax.set_title(title)
    ax.legend(fontsize=8, loc="best")
    _save(fig, path)
    return path


def write_pictures(rows: list[EvalResult], out_dir: Path) -> dict[str, Path]:
    """The three pictures of ``rows`` (already in order) written into ``out_dir``; the paths by name."""
    return {
        OUTCOMES_PNG: plot_outcomes(rows, out_dir / OUTCOMES_PNG),
        TTM_PNG: plot_time_to_mitigate(rows, out_dir / TTM_PNG),
        VIOLATIONS_PNG: plot_violations(rows, out_dir / VIOLATIONS_PNG),
    }
