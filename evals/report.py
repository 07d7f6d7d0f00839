"""The report of an eval run: ``results.json`` (the data), ``report.md`` (for people), three pictures, and
the rich tables printed at the end of a run.

``write_report`` writes everything into one folder; ``load_results`` reads a ``results.json`` back.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator
from pydantic import ValidationError
from rich.console import JustifyMethod
from rich.table import Table
from rich.text import Text

from evals.results import EvalResult, Summary

RESULTS_JSON = "results.json"
REPORT_MD = "report.md"
OUTCOMES_PNG = "outcomes.png"
TTM_PNG = "time_to_mitigate.png"
VIOLATIONS_PNG = "violations.png"

_YES = "✔"
_NO = "✘"
_NONE = "—"
_UNCLASSIFIED = "(unclassified)"
# No "Software" entry (matplotlib's version) in the PNG: the pictures depend on the data only.
_PNG_METADATA: dict[str, Any] = {"Software": None}


# ----------------------------------------------------------------------------------------------- helpers


def _ordered(results: Iterable[EvalResult]) -> list[EvalResult]:
    """The stable order of rows everywhere: by id, planner, gate."""
    return sorted(results, key=lambda r: r.key)


def _group(r: EvalResult) -> str:
    """The planner as the summary names it: ``planner`` or ``planner --no-gate``."""
    return r.planner if r.gate else f"{r.planner} --no-gate"


def _groups(results: Iterable[EvalResult]) -> list[str]:
    keys = sorted({(r.planner, not r.gate) for r in results})
    return [p if not no_gate else f"{p} --no-gate" for p, no_gate in keys]


def _cls(r: EvalResult) -> str:
    return r.incident_class or _UNCLASSIFIED


def _classes(results: Iterable[EvalResult]) -> list[str]:
    return sorted({_cls(r) for r in results})


def _mark(ok: bool) -> str:
    return _YES if ok else _NO


def _num(value: float | None, fmt: str = "{:.1f}") -> str:
    return _NONE if value is None else fmt.format(value)


def _cell(value: object) -> str:
    """Text safe inside a markdown table cell: ``|`` escaped, no line breaks."""
    text = " ".join(str(value).split())
    return text.replace("\\", "\\\\").replace("|", "\\|")


def _line(value: object) -> str:
    """Text on one markdown line (a list item)."""
    return " ".join(str(value).split())


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(_cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return out


def failure_reasons(r: EvalResult) -> list[str]:
    """Why a row did not pass, one reason a string (empty for a row that passed)."""
    if r.passed:
        return []
    reasons: list[str] = []
    if r.error:
        reasons.append(f"error: {r.error}")
    if not r.outcome_correct:
        reasons.append(f"outcome mismatch: expected {r.expected_outcome}, got {r.outcome}")
    if not r.root_cause_correct:
        reasons.append(
            f"root cause mismatch: expected {r.expected_root_cause or _NONE}, got {r.root_cause or _NONE}"
        )
    if r.must_missing:
        reasons.append("must_missing: " + ", ".join(r.must_missing))
    if r.limit_notes or not r.within_limits:
        reasons.append("limits: " + ("; ".join(r.limit_notes) or "not within limits"))
    reasons.extend(f"safety violation: {v.what} — {v.why}" for v in r.safety_violations)
    return reasons or ["did not pass (no reason recorded)"]


# ----------------------------------------------------------------------------------------------- pictures


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
    classes, groups = _classes(results), _groups(results)
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
            rows = [r for r in results if _cls(r) == c and _group(r) == g]
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
    classes, groups = _classes(results), _groups(results)
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
                if _cls(r) == c and _group(r) == g and r.time_to_mitigate_min is not None
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
    classes = _classes(results)
    fig, ax = plt.subplots(figsize=(min(20.0, max(6.0, 1.4 * len(classes) + 2)), 4.5))
    if not results:
        _empty(ax, "no results")
        ax.set_title("Safety violations: no results")
        _save(fig, path)
        return path
    on = [sum(len(r.safety_violations) for r in results if _cls(r) == c and r.gate) for c in classes]
    off = [sum(len(r.safety_violations) for r in results if _cls(r) == c and not r.gate) for c in classes]
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


# ----------------------------------------------------------------------------------------------- markdown


def _planner_rows(summary: Summary) -> list[tuple[str, dict[str, Any]]]:
    """The summary's rows, each planner with the gate first, then ``--no-gate``."""
    return sorted(
        summary.by_planner.items(),
        key=lambda kv: (str(kv[1].get("planner", kv[0])), not kv[1].get("gate", True), kv[0]),
    )


def _summary_section(summary: Summary) -> list[str]:
    header = [
        "planner",
        "runs",
        "outcome correct",
        "root cause correct",
        "passed",
        "safety violations",
        "gate decisions (enforced / not enforced)",
        "actions",
        "median time to mitigate (sim min)",
        "LLM calls",
        "tokens",
        "cost (USD)",
        "errors",
    ]
    rows = []
    for name, s in _planner_rows(summary):
        rows.append(
            [
                name,
                str(s.get("runs", 0)),
                f"{s.get('outcome_correct_pct', 0.0):.1f}% ({s.get('outcome_correct', 0)})",
                str(s.get("root_cause_correct", 0)),
                str(s.get("passed", 0)),
                f"{s.get('safety_violations', 0)} in {s.get('incidents_with_violations', 0)} run(s)",
                f"{s.get('gate_decisions_enforced', 0)} / {s.get('gate_decisions_not_enforced', 0)}",
                str(s.get("actions", 0)),
                _num(s.get("median_time_to_mitigate_min")),
                str(s.get("llm_calls", 0)),
                str(s.get("tokens", 0)),
                f"${s.get('cost_usd', 0.0):.4f}",
                str(s.get("errors", 0)),
            ]
        )
    lines = ["## Summary", ""]
    if rows:
        lines += _table(header, rows)
    else:
        lines.append("No runs.")
    return [*lines, ""]


def _class_sections(results: list[EvalResult]) -> list[str]:
    lines = ["## By incident class", ""]
    if not results:
        return [*lines, "No runs.", ""]
    header = [
        "id",
        "title",
        "planner",
        "expected → outcome",
        "outcome",
        "root cause",
        "violations",
        "actions",
        "sim min",
        "wall s",
    ]
    for c in _classes(results):
        rows = [r for r in results if _cls(r) == c]
        correct = sum(r.outcome_correct for r in rows)
        lines += [f"### {_line(c)}", "", f"{len(rows)} run(s), {correct} with the correct outcome.", ""]
        lines += _table(
            header,
            [
                [
                    r.id,
                    r.title,
                    _group(r),
                    f"{r.expected_outcome} → {r.outcome}",
                    _mark(r.outcome_correct),
                    _mark(r.root_cause_correct),
                    str(len(r.safety_violations)),
                    str(r.actions),
                    _num(r.sim_minutes),
                    _num(r.wall_s),
                ]
                for r in rows
            ],
        )
        lines.append("")
    return lines


def _gate_section(results: list[EvalResult]) -> list[str]:
    lines = ["## What the gate prevented", ""]
    by_key = {r.key: r for r in results}
    pairs = sorted(
        {
            (r.id, r.planner)
            for r in results
            if (r.id, r.planner, True) in by_key and (r.id, r.planner, False) in by_key
        }
    )
    if not pairs:
        return [
            *lines,
            "No incident was replayed both with and without the gate (run with `--no-gate` to compare).",
            "",
        ]
    lines += [
        "Each incident replayed with the gate and with `--no-gate`, same planner: the safety violations of "
        "each, and the gate's decisions (enforced with the gate, only logged without).",
        "",
    ]
    for id_, planner in pairs:
        on, off = by_key[(id_, planner, True)], by_key[(id_, planner, False)]
        lines += [
            f"### {_line(id_)} ({_line(planner)})",
            "",
            f"- with the gate: {len(on.safety_violations)} violation(s), outcome {on.outcome}, "
            f"{sum(p.enforced for p in on.prevented)} gate decision(s) enforced",
        ]
        lines += [f"  - {_line(v.what)} — {_line(v.why)}" for v in on.safety_violations]
        lines.append(
            f"- without the gate: {len(off.safety_violations)} violation(s), outcome {off.outcome}, "
            f"{sum(not p.enforced for p in off.prevented)} gate decision(s) not enforced"
        )
        lines += [f"  - {_line(v.what)} — {_line(v.why)}" for v in off.safety_violations]
        decisions = on.prevented or off.prevented
        if decisions:
            lines.append("- gate decisions:")
            lines += [
                f"  - {_line(p.verdict)} `{_line(p.tool)}` on {_line(p.target)}"
                + (f": {_line('; '.join(p.reasons))}" if p.reasons else "")
                + ("" if p.enforced else " (not enforced)")
                for p in decisions
            ]
        prevented = len(off.safety_violations) - len(on.safety_violations)
        if prevented > 0:
            lines.append(f"- the gate prevented {prevented} violation(s)")
        lines.append("")
    return lines


def _failures_section(results: list[EvalResult]) -> list[str]:
    lines = ["## Failures", ""]
    failed = [r for r in results if not r.passed]
    if not failed:
        return [*lines, "None: every run passed." if results else "No runs.", ""]
    for r in failed:
        lines.append(f"- **{_line(r.id)}** ({_line(_group(r))}, {_line(_cls(r))})")
        lines += [f"  - {_line(reason)}" for reason in failure_reasons(r)]
    return [*lines, ""]


def render_markdown(results: list[EvalResult], summary: Summary) -> str:
    results = _ordered(results)
    n_failed = sum(not r.passed for r in results)
    lines = [
        "# Eval report",
        "",
        f"**{summary.runs} run(s)** of **{summary.incidents} incident(s)**, "
        f"planners: {', '.join(summary.planners) or _NONE}; wall time {summary.wall_s:.1f} s "
        f"with {summary.jobs} job(s); {summary.runs - n_failed if summary.runs else 0} passed, "
        f"{n_failed} failed.",
        "",
    ]
    lines += _summary_section(summary)
    lines += [
        f"![Outcomes by class and planner]({OUTCOMES_PNG})",
        "",
        f"![Time to mitigate (sim minutes)]({TTM_PNG})",
        "",
        f"![Safety violations with and without the gate]({VIOLATIONS_PNG})",
        "",
    ]
    lines += _class_sections(results)
    lines += _gate_section(results)
    lines += _failures_section(results)
    return "\n".join(lines).rstrip() + "\n"


# ----------------------------------------------------------------------------------------------- API


def write_report(results: list[EvalResult], summary: Summary, out_dir: Path) -> dict[str, Path]:
    """Write ``results.json``, ``report.md`` and the three pictures into ``out_dir``; the paths by name."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = _ordered(results)
    paths: dict[str, Path] = {}

    data = {"summary": summary.model_dump(mode="json"), "results": [r.model_dump(mode="json") for r in rows]}
    paths[RESULTS_JSON] = out_dir / RESULTS_JSON
    paths[RESULTS_JSON].write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")

    paths[OUTCOMES_PNG] = plot_outcomes(rows, out_dir / OUTCOMES_PNG)
    paths[TTM_PNG] = plot_time_to_mitigate(rows, out_dir / TTM_PNG)
    paths[VIOLATIONS_PNG] = plot_violations(rows, out_dir / VIOLATIONS_PNG)

    paths[REPORT_MD] = out_dir / REPORT_MD
    paths[REPORT_MD].write_text(render_markdown(rows, summary), encoding="utf-8")
    return paths


def load_results(path: Path) -> tuple[Summary, list[EvalResult]]:
    """Read a ``results.json`` back; a ``ValueError`` naming the file on bad input."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise ValueError(f"{path}: cannot read results: {e}") from e
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not valid JSON: {e}") from e
    if not isinstance(data, dict) or "summary" not in data or "results" not in data:
        raise ValueError(f'{path}: expected an object with "summary" and "results"')
    if not isinstance(data["results"], list):
        raise ValueError(f'{path}: "results" is not a list')
    try:
        summary = Summary.model_validate(data["summary"])
    except ValidationError as e:
        raise ValueError(f"{path}: bad summary: {e}") from e
    results: list[EvalResult] = []
    for i, row in enumerate(data["results"]):
        try:
            results.append(EvalResult.model_validate(row))
        except ValidationError as e:
            raise ValueError(f"{path}: bad results[{i}]: {e}") from e
    return summary, results


def _rich_mark(ok: bool) -> Text:
    return Text(_YES, style="green") if ok else Text(_NO, style="bold red")


def results_table(results: list[EvalResult]) -> Table:
    """The terminal table printed at the end of a run: one row per incident, planner and gate."""
    table = Table(title="Eval results", show_lines=False)
    columns: list[tuple[str, JustifyMethod]] = [
        ("id", "left"),
        ("class", "left"),
        ("planner", "left"),
        ("expected", "left"),
        ("outcome", "left"),
        ("ok", "center"),
        ("root cause", "center"),
        ("violations", "right"),
        ("actions", "right"),
        ("sim min", "right"),
        ("wall s", "right"),
    ]
    for name, justify in columns:
        table.add_column(name, justify=justify)
    for r in _ordered(results):
        n_viol = len(r.safety_violations)
        table.add_row(
            r.id,
            r.incident_class or _NONE,
            r.planner if r.gate else f"{r.planner} no-gate",
            r.expected_outcome,
            Text(r.outcome, style="bold red") if r.error else r.outcome,
            _rich_mark(r.outcome_correct),
            _rich_mark(r.root_cause_correct),
            Text(str(n_viol), style="bold red" if n_viol else ""),
            str(r.actions),
            _num(r.sim_minutes),
            _num(r.wall_s),
        )
    return table


def summary_table(summary: Summary) -> Table:
    """Per planner (and per ``planner --no-gate``): the summary of a run."""
    table = Table(
        title=f"Summary: {summary.runs} run(s), {summary.incidents} incident(s), "
        f"{summary.wall_s:.1f} s wall, {summary.jobs} job(s)"
    )
    table.add_column("planner")
    for name in [
        "runs",
        "outcome ok",
        "root cause ok",
        "passed",
        "violations",
        "gate enforced / not",
        "actions",
        "median TTM min",
        "LLM calls",
        "tokens",
        "cost $",
        "errors",
    ]:
        table.add_column(name, justify="right")
    for name, s in _planner_rows(summary):
        violations = int(s.get("safety_violations", 0))
        table.add_row(
            name,
            str(s.get("runs", 0)),
            f"{s.get('outcome_correct_pct', 0.0):.1f}%",
            str(s.get("root_cause_correct", 0)),
            str(s.get("passed", 0)),
            Text(str(violations), style="bold red" if violations else ""),
            f"{s.get('gate_decisions_enforced', 0)} / {s.get('gate_decisions_not_enforced', 0)}",
            str(s.get("actions", 0)),
            _num(s.get("median_time_to_mitigate_min")),
            str(s.get("llm_calls", 0)),
            str(s.get("tokens", 0)),
            f"{s.get('cost_usd', 0.0):.4f}",
            str(s.get("errors", 0)),
        )
    return table
