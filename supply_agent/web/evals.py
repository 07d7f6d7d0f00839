"""The evals page's data: the newest report of each eval folder (``results.json``, its pictures) and the
history of scores (``history.jsonl``, one line per run), as ``supply-agent eval --report DIR`` writes them.
Read as files: the console needs no part of the evals package."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PICTURE = re.compile(r"^[a-z0-9_]+\.png$")


@dataclass
class Report:
    name: str  # the folder, relative to the evals directory ("report", "report/holdout")
    summary: dict[str, Any]
    pictures: list[str]
    history: list[dict[str, Any]] = field(default_factory=list)
    problem: str = ""


def _reports(root: Path) -> list[Path]:
    return sorted({p.parent for p in root.rglob("results.json")})


def eval_history(root: Path | None) -> list[Report]:
    """Every report folder under ``root`` (default: none), newest summary and score history each."""
    if root is None or not root.is_dir():
        return []
    out = []
    for folder in _reports(root):
        name = str(folder.relative_to(root))
        try:
            data = json.loads((folder / "results.json").read_text(encoding="utf-8"))
            summary = data["summary"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            out.append(Report(name, {}, [], problem=f"{folder / 'results.json'}: {exc}"))
            continue
        history = []
        hist = folder / "history.jsonl"
        if hist.exists():
            for n, line in enumerate(hist.read_text(encoding="utf-8").splitlines(), 1):
                try:
                    history.append(json.loads(line))
                except ValueError:
                    history.append({"at": f"line {n}: not JSON", "by_planner": {}})
        pictures = sorted(p.name for p in folder.glob("*.png") if PICTURE.match(p.name))
        out.append(Report(name, summary, [f"{name}/{p}" for p in pictures], history[-50:]))
    return out


def report_file(root: Path | None, name: str) -> Path | None:
    """A picture of a report, by the name the page links (folder/picture.png); None for anything else."""
    if root is None:
        return None
    folder, _, picture = name.rpartition("/")
    if not PICTURE.match(picture) or ".." in folder.split("/"):
        return None
    path = (root / folder / picture).resolve()
    if not path.is_file() or root.resolve() not in path.parents:
        return None
    return path
