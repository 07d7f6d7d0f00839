"""deploy/: the RBAC is least privilege and covers exactly what the tools do."""

from __future__ import annotations

from pathlib import Path

import yaml

from tools.catalogue import CATALOGUE, Effect

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def _rules(kind: str, name: str) -> list[dict]:
    docs = list(yaml.safe_load_all((DEPLOY / "base" / "rbac.yaml").read_text()))
    return [r for d in docs if d["kind"] == kind and d["metadata"]["name"] == name for r in d["rules"]]


def _grants(name: str) -> set[tuple[str, str]]:
    return {
        (verb, res)
        for kind in ("ClusterRole", "Role")
        for r in _rules(kind, name)
        for res in r["resources"]
        for verb in r["verbs"]
    }


def test_reader_only_reads() -> None:
    assert {verb for verb, _ in _grants("supply-agent-reader")} <= {"get", "list", "watch"}


def test_each_identity_covers_exactly_what_the_tool_table_says() -> None:
    """From the tool table: the reader can do every read tool's verbs, the writer every write's and every
    control action's (the latches are ConfigMap writes), and neither holds a grant no tool needs."""
    reader, writer = _grants("supply-agent-reader"), _grants("supply-agent-writer")
    read_needs = {v for s in CATALOGUE.values() if s.effect is Effect.READ for v in s.verbs}
    write_needs = {v for s in CATALOGUE.values() if s.effect is not Effect.READ for v in s.verbs}
    assert read_needs and write_needs and ("patch", "configmaps") in write_needs
    for name, spec in CATALOGUE.items():
        mine = reader if spec.effect is Effect.READ else writer
        for need in spec.verbs:
            assert need in mine, f"{name} needs {need} and its identity lacks it"
    # The latches are read on every decision (kill switch, breaker).
    assert ("get", "configmaps") in reader
    unused_writes = {(v, r) for v, r in writer if v not in ("get", "list", "watch")} - write_needs
    assert not unused_writes, f"the writer holds writes no tool needs: {sorted(unused_writes)}"


def test_writer_covers_every_write_tool_and_nothing_forbidden() -> None:
    writer = _grants("supply-agent-writer")
    for verb, res in writer | _grants("supply-agent-reader"):
        assert res not in ("secrets", "namespaces") or verb in ("get", "list", "watch")
        assert not (
            verb in ("delete", "*") and res in ("nodes", "namespaces", "persistentvolumeclaims", "secrets")
        )
        assert "*" not in (verb, res)
    assert not any(res == "secrets" for _, res in writer | _grants("supply-agent-reader"))
