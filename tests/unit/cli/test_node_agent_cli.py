"""`supply-agent node-agent report`: one report as JSON on stdout (logs on stderr), the kubelet's
pod-resources socket chosen by flag or environment, 'none' to read no pods."""

from __future__ import annotations

import json
from typing import Any

import pytest
from click.testing import CliRunner

from supply_agent.cli.main import main
from tools.podresources import DEFAULT_SOCKET


def test_report_prints_one_json_report_for_the_named_node() -> None:
    r = CliRunner().invoke(
        main, ["node-agent", "report", "--node", "east-h100-00007", "--pod-resources-socket", "none"]
    )
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout)
    assert report["node"] == "east-h100-00007"
    if report["nvml_available"]:  # a machine with a GPU (the device check): every GPU reported
        assert report["gpus"] and all("index" in g for g in report["gpus"])
    else:
        assert report["gpus"] == [] and "NVML" in report["error"]


def test_the_socket_comes_from_the_flag_or_the_environment_and_none_turns_pods_off(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import supply_agent.node_agent as node_agent

    seen: list[str | None] = []
    real = node_agent.make_collector

    def spy(node: str, **kw: Any) -> Any:
        seen.append(kw.get("pod_resources_socket"))
        return real(node, **kw)

    monkeypatch.setattr(node_agent, "make_collector", spy)
    run = CliRunner().invoke
    env = {"SUPPLY_AGENT_POD_RESOURCES_SOCKET": "/run/other/kubelet.sock"}
    assert run(main, ["node-agent", "report", "--node", "n1"], env=env).exit_code == 0
    assert (
        run(main, ["node-agent", "report", "--node", "n1", "--pod-resources-socket", "NONE"]).exit_code == 0
    )
    assert run(main, ["node-agent", "report", "--node", "n1"], env={}).exit_code == 0
    assert seen == ["/run/other/kubelet.sock", None, DEFAULT_SOCKET]
    bad = run(main, ["node-agent", "report", "--node", "n1", "--bogus"])
    assert bad.exit_code == 2 and "No such option" in bad.output
