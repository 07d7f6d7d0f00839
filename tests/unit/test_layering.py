"""The house stays as built: the import contracts hold (import-linter, pyproject.toml), no caller reaches
into a tool's private ``_call``, and a module over ~500 lines says why in its opening docstring."""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("supply_agent", "tools", "sandbox", "evals")
LONG = 520  # ~500 lines, with room for a docstring


def _modules() -> list[Path]:
    return sorted(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py"))


def test_the_import_contracts_hold() -> None:
    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    assert {c["id"] for c in contracts} >= {"agent-layers", "packages", "fleet-over-http", "no-cycles"}
    lint = Path(sys.executable).parent / "lint-imports"
    run = subprocess.run([str(lint), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert f"Contracts: {len(contracts)} kept, 0 broken." in run.stdout


def test_a_broken_layer_is_caught(tmp_path: Path) -> None:
    """The check can fail: the same contracts over a copy where policy imports the mind are broken."""
    import shutil

    for pkg in PACKAGES:
        shutil.copytree(ROOT / pkg, tmp_path / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    gate = tmp_path / "supply_agent" / "policy" / "gate.py"
    gate.write_text(gate.read_text() + "\nfrom supply_agent.mind import graph  # noqa: E402,F401\n")
    lint = Path(sys.executable).parent / "lint-imports"
    run = subprocess.run(
        [str(lint), "--no-cache", "--contract", "agent-layers"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"},
    )
    assert run.returncode != 0 and "supply_agent.policy.gate -> supply_agent.mind" in run.stdout, run.stdout[
        -3000:
    ]


def test_no_caller_reaches_into_a_private_call() -> None:
    """`x._call(...)` only as `self._call` inside the class that defines it (DESIGN: narrow interfaces)."""
    offenders = []
    for path in _modules():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            private = isinstance(node, ast.Attribute) and node.attr == "_call"
            if private and not (isinstance(node.value, ast.Name) and node.value.id == "self"):
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert offenders == []


def test_long_modules_say_why() -> None:
    unexplained = []
    for path in _modules():
        text = path.read_text()
        if text.count("\n") <= LONG:
            continue
        doc = ast.get_docstring(ast.parse(text)) or ""
        if "Long because" not in doc:
            unexplained.append(f"{path.relative_to(ROOT)} ({text.count(chr(10))} lines)")
    assert unexplained == [], "over ~500 lines with no 'Long because' in the opening docstring"
