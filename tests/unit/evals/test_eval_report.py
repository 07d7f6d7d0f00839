"""evals.report: results.json round trip, report.md sections, the pictures, and the rich tables."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from rich.console import Console

from evals.report import load_results, results_table, summary_table, write_report
from evals.results import EvalResult, Prevented, Summary, Violation, summarise

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PICTURES = ["outcomes.png", "time_to_mitigate.png", "violations.png"]
ROW_KEYS = {
    "id",
    "planner",
    "outcome",
    "expected_outcome",
    "outcome_correct",
    "root_cause_correct",
    "safety_violations",
    "actions",
    "sim_minutes",
    "wall_s",
    "tokens",
    "cost_usd",
}
PAIRED_WHAT = "drained 3 nodes of pool-a at once"
PAIRED_WHY = "over the drain budget of 1 node per pool"
SOLO_WHAT = "deleted pod trainer-7 without approval"


def _row(**kw: object) -> EvalResult:
    base: dict[str, object] = {
        "planner": "rules",
        "outcome": "mitigated",
        "expected_outcome": "mitigated",
        "outcome_correct": True,
        "root_cause": "xid_79",
        "expected_root_cause": "xid_79",
        "root_cause_correct": True,
        "actions": 2,
        "sim_minutes": 14.0,
        "time_to_mitigate_min": 12.0,
        "wall_s": 0.8,
        "llm_calls": 3,
        "tokens": 1200,
        "cost_usd": 0.012,
        "passed": True,
    }
    base.update(kw)
    return EvalResult.model_validate(base)


@pytest.fixture
def results() -> list[EvalResult]:
    return [
        # given out of order on purpose: results.json sorts by id, planner, gate
        _row(id="sched-1", incident_class="scheduler", title="Stuck queue", error="planner crashed",
             outcome="no_action", expected_outcome="escalated", outcome_correct=False,
             root_cause=None, root_cause_correct=False, time_to_mitigate_min=None, passed=False,
             safety_violations=[Violation(what=SOLO_WHAT, why="destructive action needs approval")]),
        _row(id="gpu-xid-1", incident_class="gpu", title="XID 79 on node-3", gate=False,
             safety_violations=[Violation(what=PAIRED_WHAT, why=PAIRED_WHY)],
             prevented=[Prevented(tool="drain_node", target="node-4", verdict="deny",
                                  reasons=["drain budget"], enforced=False)],
             actions=5, passed=False),
        _row(id="gpu-xid-1", incident_class="gpu", title="XID 79 on node-3", gate=True,
             prevented=[Prevented(tool="drain_node", target="node-4", verdict="deny",
                                  reasons=["drain budget"], enforced=True)]),
        _row(id="net-1", incident_class="network", title="NIC flap | pool-b", outcome="escalated",
             outcome_correct=False, must_missing=["cordon_node"], limit_notes=["took 95 sim min > 60"],
             time_to_mitigate_min=None, passed=False, root_cause="link_flap", expected_root_cause="link_flap"),
        _row(id="gpu-ecc-2", incident_class="gpu", title="ECC errors", planner="llm",
             time_to_mitigate_min=30.0, sim_minutes=31.5),
    ]  # fmt: skip


def _sections(md: str, level: str) -> dict[str, str]:
    """The markdown split into sections by heading of the given level (``##`` or ``###``)."""
    out: dict[str, str] = {}
    for chunk in re.split(rf"^{level} ", md, flags=re.M)[1:]:
        head, _, body = chunk.partition("\n")
        out[head.strip()] = body.split("\n## ")[0]
    return out


def _write(results: list[EvalResult], out: Path) -> dict[str, Path]:
    return write_report(results, summarise(results, wall_s=3.21, jobs=2), out)


def test_results_json_round_trips_with_documented_keys(results: list[EvalResult], tmp_path: Path) -> None:
    summary = summarise(results, wall_s=3.21, jobs=2)
    paths = write_report(results, summary, tmp_path / "out")
    assert set(paths) == {"results.json", "report.md", "history.jsonl", *PICTURES}
    assert all(p.is_file() and p.parent == tmp_path / "out" for p in paths.values())
    # The history keeps a line per run: a second report adds one, the first stays.
    write_report(results, summary, tmp_path / "out")
    lines = [json.loads(line) for line in paths["history.jsonl"].read_text().splitlines()]
    assert len(lines) == 2 and lines[0]["incidents"] == summary.incidents
    assert set(lines[0]["by_planner"]) == set(summary.by_planner)

    data = json.loads(paths["results.json"].read_text())
    assert set(data) == {"summary", "results"}
    assert data["summary"] == summary.model_dump(mode="json")
    assert [(r["id"], r["planner"], r["gate"]) for r in data["results"]] == [
        ("gpu-ecc-2", "llm", True),
        ("gpu-xid-1", "rules", False),
        ("gpu-xid-1", "rules", True),
        ("net-1", "rules", True),
        ("sched-1", "rules", True),
    ]
    for row in data["results"]:
        assert set(row) >= ROW_KEYS
        assert isinstance(row["safety_violations"], list)
        assert all(set(v) == {"what", "why"} for v in row["safety_violations"])
    xid_off = data["results"][1]
    assert xid_off["safety_violations"] == [{"what": PAIRED_WHAT, "why": PAIRED_WHY}]
    assert xid_off["tokens"] == 1200 and xid_off["cost_usd"] == 0.012 and xid_off["actions"] == 5

    loaded_summary, loaded = load_results(paths["results.json"])
    assert loaded_summary == summary
    assert loaded == sorted(results, key=lambda r: r.key)


def test_report_md_sections(results: list[EvalResult], tmp_path: Path) -> None:
    paths = _write(results, tmp_path)
    md = paths["report.md"].read_text()
    top = _sections(md, "##")
    assert {"Summary", "By incident class", "What the gate prevented", "Failures"} <= set(top)

    # headline and summary rows per planner and per planner --no-gate
    assert "**5 run(s)** of **4 incident(s)**" in md
    assert "3.2 s" in md and "2 job(s)" in md
    summary_rows = [line for line in top["Summary"].splitlines() if line.startswith("| rules")]
    assert [line.split("|")[1].strip() for line in summary_rows] == ["rules", "rules --no-gate"]
    assert "| llm | 1 | 100.0% (1) |" in top["Summary"]

    # the pictures are embedded by relative path and exist there
    for name in PICTURES:
        assert f"]({name})" in md
        assert (paths["report.md"].parent / name).is_file()

    # one section per class, each with its own incidents only
    classes = _sections(top["By incident class"], "###")
    assert set(classes) == {"gpu", "network", "scheduler"}
    assert "gpu-xid-1" in classes["gpu"] and "gpu-ecc-2" in classes["gpu"]
    assert "net-1" not in classes["gpu"]
    assert "net-1" in classes["network"] and "gpu-xid-1" not in classes["network"]
    assert "mitigated → escalated" in classes["network"]
    assert "✘" in classes["network"] and "✔" in classes["gpu"]
    assert "rules --no-gate" in classes["gpu"]

    # the gate section: only the incident run both ways, with each violation's what — why
    gate = top["What the gate prevented"]
    assert f"{PAIRED_WHAT} — {PAIRED_WHY}" in gate
    assert SOLO_WHAT not in gate
    assert "gpu-xid-1" in gate and "sched-1" not in gate and "net-1" not in gate
    assert "deny `drain_node` on node-4" in gate

    # failures: every row that did not pass, with why
    failures = top["Failures"]
    for id_ in ("gpu-xid-1", "net-1", "sched-1"):
        assert f"**{id_}**" in failures
    assert "gpu-ecc-2" not in failures
    assert "error: planner crashed" in failures
    assert "outcome mismatch: expected mitigated, got escalated" in failures
    assert "root cause mismatch" in failures  # sched-1
    assert "must_missing: cordon_node" in failures
    assert "took 95 sim min > 60" in failures
    assert SOLO_WHAT in failures


def test_pipe_in_cell_text_is_escaped(results: list[EvalResult], tmp_path: Path) -> None:
    md = _write(results, tmp_path)["report.md"].read_text()
    assert "NIC flap \\| pool-b" in md
    assert "NIC flap | pool-b" not in md
    # every row of every table has as many (unescaped) cell separators as its header
    tables: list[list[str]] = []
    for line in md.splitlines():
        if line.startswith("|"):
            if not tables or not tables[-1]:
                tables.append([])
            tables[-1].append(line)
        elif tables and tables[-1]:
            tables.append([])
    tables = [t for t in tables if t]
    assert len(tables) == 4  # summary + three classes
    for table in tables:
        counts = {len(re.findall(r"(?<!\\)\|", line)) for line in table}
        assert len(counts) == 1, table


def test_pictures_are_pngs_and_deterministic(results: list[EvalResult], tmp_path: Path) -> None:
    a = _write(results, tmp_path / "a")
    b = _write(results, tmp_path / "b")
    for name in PICTURES:
        data = a[name].read_bytes()
        assert data.startswith(PNG_SIGNATURE)
        assert len(data) > 5_000, name
        assert data == b[name].read_bytes(), name
    # the violations picture shows the data: without the violations it is a different picture
    clean = [r.model_copy(update={"safety_violations": []}) for r in results]
    c = _write(clean, tmp_path / "c")
    assert c["violations.png"].read_bytes() != a["violations.png"].read_bytes()


def test_gate_on_only_and_nothing_mitigated(results: list[EvalResult], tmp_path: Path) -> None:
    rows = [
        r.model_copy(update={"time_to_mitigate_min": None, "outcome": "escalated", "outcome_correct": False})
        for r in results
        if r.gate
    ]
    paths = _write(rows, tmp_path)
    for name in PICTURES:
        data = paths[name].read_bytes()
        assert data.startswith(PNG_SIGNATURE) and len(data) > 5_000
    top = _sections(paths["report.md"].read_text(), "##")
    gate = top["What the gate prevented"]
    assert "No incident was replayed both with and without the gate" in gate
    assert SOLO_WHAT not in gate and PAIRED_WHAT not in gate
    assert "rules --no-gate" not in top["Summary"]
    assert load_results(paths["results.json"])[1] == sorted(rows, key=lambda r: r.key)


def test_no_results_at_all(tmp_path: Path) -> None:
    paths = _write([], tmp_path / "empty")
    md = paths["report.md"].read_text()
    assert "**0 run(s)**" in md
    for name in PICTURES:
        assert paths[name].read_bytes().startswith(PNG_SIGNATURE)
    summary, rows = load_results(paths["results.json"])
    assert rows == [] and summary.runs == 0


def test_all_passed_has_no_failures(results: list[EvalResult], tmp_path: Path) -> None:
    rows = [r for r in results if r.passed]
    md = _write(rows, tmp_path)["report.md"].read_text()
    assert "None: every run passed." in _sections(md, "##")["Failures"]


@pytest.mark.parametrize(
    "text, match",
    [
        ("{not json", "not valid JSON"),
        ('{"results": []}', '"summary" and "results"'),
        ("[1, 2]", '"summary" and "results"'),
        ('{"summary": {"runs": 1}, "results": []}', "bad summary"),
        (
            '{"summary": {"runs": 0, "incidents": 0, "planners": [], "by_planner": {}, "wall_s": 0, "jobs": 1},'
            ' "results": [{"id": "x"}]}',
            r"bad results\[0\]",
        ),
        (
            '{"summary": {"runs": 0, "incidents": 0, "planners": [], "by_planner": {}, "wall_s": 0, "jobs": 1},'
            ' "results": {}}',
            '"results" is not a list',
        ),
    ],
)
def test_load_results_bad_input_names_the_file(tmp_path: Path, text: str, match: str) -> None:
    path = tmp_path / "broken-results.json"
    path.write_text(text)
    with pytest.raises(ValueError, match=match) as info:
        load_results(path)
    assert str(path) in str(info.value)


def test_load_results_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.json"
    with pytest.raises(ValueError, match=r"nope\.json"):
        load_results(path)


def _render(table: object) -> str:
    console = Console(record=True, width=240, color_system=None)
    console.print(table)
    return console.export_text()


def test_rich_tables(results: list[EvalResult]) -> None:
    text = _render(results_table(results))
    lines = text.splitlines()
    for id_ in ("gpu-xid-1", "gpu-ecc-2", "net-1", "sched-1"):
        assert any(id_ in line for line in lines)
    (xid_off,) = [line for line in lines if "gpu-xid-1" in line and "no-gate" in line]
    assert "rules --no-gate" in xid_off and "✔" in xid_off
    (net,) = [line for line in lines if "net-1" in line]
    assert "network" in net and "escalated" in net and "✘" in net
    # rows in the stable order
    assert text.index("gpu-ecc-2") < text.index("gpu-xid-1") < text.index("net-1") < text.index("sched-1")

    summary: Summary = summarise(results, wall_s=3.21, jobs=2)
    stext = _render(summary_table(summary))
    assert "5 run(s)" in stext and "4 incident(s)" in stext
    (rules_off,) = [line for line in stext.splitlines() if "rules --no-gate" in line]
    assert "100.0%" in rules_off
    (llm,) = [line for line in stext.splitlines() if line.strip("│ ").startswith("llm")]
    assert "30.0" in llm  # median time to mitigate
