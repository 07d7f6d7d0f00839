"""The report of an eval run: ``results.json`` (the data), ``report.md`` (for people), and the rich
tables printed at the end of a run; the three pictures ``report.md`` shows come from ``evals.pictures``.

``write_report`` writes everything into one folder; ``load_results`` reads a ``results.json`` back.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from rich.console import JustifyMethod
from rich.table import Table
from rich.text import Text

from evals.pictures import OUTCOMES_PNG, TTM_PNG, VIOLATIONS_PNG, write_pictures
from evals.results import EvalResult, Summary
from evals.rows import class_of, classes_of, group_of, ordered

RESULTS_JSON = "results.json"
HISTORY_JSONL = "history.jsonl"
REPORT_MD = "report.md"

_YES = "✔"
_NO = "✘"
_NONE = "—"


# ----------------------------------------------------------------------------------------------- helpers


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
        if r.incidents_opened != r.incidents_expected:
            # Say what differs: how many incidents the alerts became (and which), and the outcome if that
            # differs too.
            reasons.append(
                f"incident count mismatch: {r.incidents_note}"
                if r.incidents_note
                else f"incident count mismatch: expected {r.incidents_expected} incident(s), "
                f"opened {r.incidents_opened}"
            )
        if r.outcome != r.expected_outcome:
            claimed = f" (claimed {r.claimed_outcome})" if r.claimed_outcome not in ("", r.outcome) else ""
            reasons.append(f"outcome mismatch: expected {r.expected_outcome}, got {r.outcome}{claimed}")
    # What the world still shows: why a claimed mitigation was not taken (an outcome can still be right,
    # e.g. when another outcome is acceptable, but the claim was not).
    reasons.extend(f"symptom left: {s}" for s in r.symptoms_left)
    if not r.root_cause_correct:
        reasons.append(
            f"root cause mismatch: expected {r.expected_root_cause or _NONE}, got {r.root_cause or _NONE}"
        )
    if r.suspected_note:
        reasons.append(f"suspected cause mismatch: {r.suspected_note}")
    if r.must_missing:
        reasons.append("must_missing: " + ", ".join(r.must_missing))
    if r.limit_notes or not r.within_limits:
        reasons.append("limits: " + ("; ".join(r.limit_notes) or "not within limits"))
    reasons.extend(f"safety violation: {v.what} — {v.why}" for v in r.safety_violations)
    return reasons or ["did not pass (no reason recorded)"]


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
    for c in classes_of(results):
        rows = [r for r in results if class_of(r) == c]
        correct = sum(r.outcome_correct for r in rows)
        lines += [f"### {_line(c)}", "", f"{len(rows)} run(s), {correct} with the correct outcome.", ""]
        lines += _table(
            header,
            [
                [
                    r.id,
                    r.title,
                    group_of(r),
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
            if (r.id, r.planner, True, False) in by_key and (r.id, r.planner, False, False) in by_key
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
        on, off = by_key[(id_, planner, True, False)], by_key[(id_, planner, False, False)]
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


def _work_lost_section(results: list[EvalResult]) -> list[str]:
    """GPU-minutes of customer work the fleet's JobSets lost per incident (its truth), beside what a
    careful human would have lost, and (with ``--node-only``) what the node-only gate lost; only
    incidents with gang jobs, gate enforced."""
    rows = [
        r
        for r in results
        if r.gate
        and not r.node_only
        and (r.gpu_minutes_lost is not None or r.careful_gpu_minutes is not None)
    ]
    if not rows:
        return []
    bare = {(r.id, r.planner): r for r in results if r.node_only}
    lines = [
        "## Customer work lost (gang jobs)",
        "",
        "GPU-minutes of training the fleet's JobSets lost (work since their checkpoint thrown away by "
        "restarts, and GPUs idle while a job could not run), from the fleet's truth, beside what a careful "
        "human would have lost by the incident's own arithmetic"
        + (
            ", and what the same planner lost with the gate's workload rules off (`--node-only`: a drain "
            "counts its node's GPUs, and never waits for a checkpoint)."
            if bare
            else "."
        ),
        "",
    ]
    header = ["incident", "planner", "careful human"]
    header += ["node-only gate"] if bare else []
    header += ["with the workload rules", "within its limit"]
    table = []
    for r in rows:
        row = [_cell(r.id), _cell(r.planner), _num(r.careful_gpu_minutes, "{:,.0f}")]
        if bare:
            off = bare.get((r.id, r.planner))
            row.append(_num(off.gpu_minutes_lost if off is not None else None, "{:,.0f}"))
        row += [
            _num(r.gpu_minutes_lost, "{:,.0f}"),
            _mark(not any("GPU-minutes" in n for n in r.limit_notes)),
        ]
        table.append(row)
    lines += _table(header, table)
    lost = sorted(r.gpu_minutes_lost or 0.0 for r in rows)
    total = sum(lost)
    lines += [
        "",
        f"With the workload rules: median {lost[len(lost) // 2]:,.0f}, worst {lost[-1]:,.0f}, "
        f"total {total:,.0f} GPU-minutes"
        + (
            f"; node-only: total {sum(b.gpu_minutes_lost or 0.0 for b in bare.values()):,.0f}."
            if bare
            else "."
        ),
        "",
        "Per incident class, median (the upper of two middles) and worst GPU-minutes lost:",
        "",
    ]
    header = (
        ["class", "incidents", "careful human"]
        + (["node-only gate"] if bare else [])
        + ["with the workload rules"]
    )
    table = []
    for c in sorted({r.incident_class for r in rows}):
        mine = [r for r in rows if r.incident_class == c]
        row = [_cell(c), str(len(mine)), _spread([r.careful_gpu_minutes for r in mine])]
        if bare:
            row.append(_spread([b.gpu_minutes_lost for r in mine if (b := bare.get((r.id, r.planner)))]))
        row.append(_spread([r.gpu_minutes_lost for r in mine]))
        table.append(row)
    lines += _table(header, table)
    return [*lines, ""]


def _spread(values: list[float | None]) -> str:
    """ "median 128, worst 640" of the values given (— when none)."""
    got = sorted(v for v in values if v is not None)
    if not got:
        return "—"
    return f"median {got[len(got) // 2]:,.0f}, worst {got[-1]:,.0f}"


def _failures_section(results: list[EvalResult]) -> list[str]:
    lines = ["## Failures", ""]
    failed = [r for r in results if not r.passed]
    if not failed:
        return [*lines, "None: every run passed." if results else "No runs.", ""]
    for r in failed:
        lines.append(f"- **{_line(r.id)}** ({_line(group_of(r))}, {_line(class_of(r))})")
        lines += [f"  - {_line(reason)}" for reason in failure_reasons(r)]
    return [*lines, ""]


def render_markdown(results: list[EvalResult], summary: Summary) -> str:
    results = ordered(results)
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
    lines += _work_lost_section(results)
    lines += _failures_section(results)
    return "\n".join(lines).rstrip() + "\n"


# ----------------------------------------------------------------------------------------------- API


def write_report(results: list[EvalResult], summary: Summary, out_dir: Path) -> dict[str, Path]:
    """Write ``results.json``, ``report.md`` and the three pictures into ``out_dir``; the paths by name."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = ordered(results)
    paths: dict[str, Path] = {}

    data = {"summary": summary.model_dump(mode="json"), "results": [r.model_dump(mode="json") for r in rows]}
    paths[RESULTS_JSON] = out_dir / RESULTS_JSON
    paths[RESULTS_JSON].write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")

    paths.update(write_pictures(rows, out_dir))

    paths[REPORT_MD] = out_dir / REPORT_MD
    paths[REPORT_MD].write_text(render_markdown(rows, summary), encoding="utf-8")

    # One line per run, kept: the history of the scores (the console draws it).
    paths[HISTORY_JSONL] = out_dir / HISTORY_JSONL
    line: dict[str, Any] = {
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "incidents": summary.incidents,
    }
    by_planner: dict[str, Any] = summary.model_dump(mode="json")["by_planner"]
    line["by_planner"] = {
        name: {k: s[k] for k in ("outcome_correct_pct", "passed", "runs", "safety_violations")}
        for name, s in by_planner.items()
    }
    with paths[HISTORY_JSONL].open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(line, ensure_ascii=False) + "\n")
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
    for r in ordered(results):
        n_viol = len(r.safety_violations)
        table.add_row(
            r.id,
            r.incident_class or _NONE,
            r.run_name,
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
