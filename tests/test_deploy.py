"""deploy/: the RBAC is least privilege and covers exactly what the tools do."""

from __future__ import annotations

from pathlib import Path

import yaml

from supply_agent.gate import K8S_VERBS

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"


def _rules(kind: str, name: str) -> list[dict]:
    docs = list(yaml.safe_load_all((DEPLOY / "rbac.yaml").read_text()))
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


def test_writer_covers_every_write_tool_and_nothing_forbidden() -> None:
    writer = _grants("supply-agent-writer")
    for tool, needs in K8S_VERBS.items():
        for verb, resource in needs:
            assert (verb, resource) in writer, f"{tool} needs {verb} {resource}"
    for verb, res in writer | _grants("supply-agent-reader"):
        assert res not in ("secrets", "namespaces") or verb in ("get", "list", "watch")
        assert not (
            verb in ("delete", "*") and res in ("nodes", "namespaces", "persistentvolumeclaims", "secrets")
        )
        assert "*" not in (verb, res)
    assert not any(res == "secrets" for _, res in writer | _grants("supply-agent-reader"))
