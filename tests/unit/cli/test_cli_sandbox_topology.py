"""``supply-agent sandbox inject`` for the component faults (rack-cooling, rack-power, switch-down,
driver-rollout: ``--rack``, ``--switch``, ``--nodes``, ``--driver``), a silent monitor, and the scoped
clears (a rack, a switch, one GPU), against a served fleet; a usage error names what is missing."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from kubernetes import client

from sandbox.fleet.admin import AdminClient
from sandbox.fleet.world import FleetSpec
from sandbox.fleet.world.spec import DRIVER_LABEL
from supply_agent.cli.main import main

POOL = "east-h100"
RACK = f"{POOL}-rack-000"
LEAF = f"{POOL}-leaf-002"  # east-h100-00012..19, across rack-000 and rack-001


@pytest.fixture
def fleet_spec() -> FleetSpec:
    return FleetSpec(nodes=48, gpus_per_node=8, pools=2, seed=3)


def _node(i: int) -> str:
    return f"{POOL}-{i:05d}"


def inject(kubeconfig: Path, *args: str) -> Result:
    return CliRunner().invoke(main, ["sandbox", "inject", "--kubeconfig", str(kubeconfig), *args])


def ok(result: Result) -> str:
    assert result.exit_code == 0, result.output
    return result.output


def usage(result: Result) -> str:
    assert result.exit_code == 2, result.output
    return result.output


def _kinds(admin: AdminClient) -> list[str]:
    return sorted(f["kind"] for f in admin.request("GET", "faults") if not f.get("parent"))


def test_rack_cooling_by_rack_and_clear_by_rack(kubeconfig: Path, admin: AdminClient) -> None:
    out = ok(inject(kubeconfig, "rack-cooling", "--rack", RACK, "--detail", "CRAH 2 down"))
    assert out.startswith("injected f0001 rack-cooling on 16 nodes of rack east-h100-rack-000: ")
    fault = admin.request("GET", "faults")[0]
    assert (fault["kind"], fault["rack"], fault["detail"]) == ("rack-cooling", RACK, "CRAH 2 down")
    assert ok(inject(kubeconfig, "clear", "--rack", RACK)).strip() == "cleared 129 fault(s)"  # 16 x 8 + 1
    assert admin.request("GET", "faults") == []


def test_rack_power_by_a_node_list(kubeconfig: Path, core: client.CoreV1Api, admin: AdminClient) -> None:
    nodes = ",".join(_node(i) for i in (2, 3, 4))
    out = ok(inject(kubeconfig, "rack-power", "--nodes", f"{nodes}, "))
    assert out.strip() == f"injected f0001 rack-power on 3 nodes of rack {RACK}: {nodes}"
    assert _kinds(admin) == ["rack-power"]


def test_switch_down_and_clear_by_switch(kubeconfig: Path, admin: AdminClient) -> None:
    out = ok(inject(kubeconfig, "switch-down", "--switch", LEAF))
    assert out.startswith(f"injected f0001 switch-down on 8 nodes of switch {LEAF}: {_node(12)},")
    ok(inject(kubeconfig, "clear", "--switch", LEAF))
    assert admin.request("GET", "faults") == []


def test_driver_rollout_takes_nodes_a_driver_and_a_code(
    kubeconfig: Path, core: client.CoreV1Api, admin: AdminClient
) -> None:
    wave = [_node(1), _node(6)]
    out = ok(
        inject(
            kubeconfig, "driver-rollout", "--nodes", ",".join(wave), "--driver", "570.86.15", "--code", "62"
        )
    )
    assert (
        out.strip() == f"injected f0001 driver-rollout on 2 nodes driver=570.86.15 xid=62: {','.join(wave)}"
    )
    assert [core.read_node(n).metadata.labels[DRIVER_LABEL] for n in wave] == ["570.86.15"] * 2
    ok(inject(kubeconfig, "driver-rollout", "--nodes", _node(9)))  # the defaults: 560.35.03, XID 119
    assert core.read_node(_node(9)).metadata.labels[DRIVER_LABEL] == "560.35.03"


def test_monitor_silent_and_a_gpu_reset(kubeconfig: Path, admin: AdminClient) -> None:
    assert ok(inject(kubeconfig, "monitor-silent", "--node", _node(0), "--gpu", "4")).startswith(
        "injected f0001 monitor-silent on east-h100-00000 gpu=4"
    )
    ok(inject(kubeconfig, "xid", "--node", _node(0), "--gpu", "4", "--code", "79"))
    assert not [a for a in admin.alerts("raw") if a["labels"].get("node") == _node(0)]
    assert ok(inject(kubeconfig, "clear", "--node", _node(0), "--gpu", "4")).strip() == "cleared 1 fault(s)"
    assert _kinds(admin) == ["monitor-silent"]  # a GPU reset repairs the GPU, not the exporter


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["rack-cooling"], "fault 'rack-cooling' needs --rack or --nodes"),
        (["rack-power", "--rack", RACK, "--nodes", _node(0)], "takes one of --rack or --nodes, not both"),
        (["switch-down"], "fault 'switch-down' needs --switch"),
        (["switch-down", "--rack", RACK], "fault 'switch-down' takes no --rack"),
        (["driver-rollout"], "fault 'driver-rollout' needs --nodes"),
        (["driver-rollout", "--switch", LEAF], "takes no --switch (it names its nodes by --nodes)"),
        (["rack-cooling", "--rack", RACK, "--driver", "1.2.3"], "takes no --driver"),
        (["rack-cooling", "--rack", RACK, "--code", "48"], "takes no --code"),
        (["rack-cooling", "--node", _node(0)], "takes no --node"),
        (["driver-rollout", "--nodes", " , "], "--nodes names no node"),
        (["xid", "--node", _node(0), "--gpu", "0", "--code", "79", "--rack", RACK], "--rack only with"),
        (["monitor-silent"], "fault 'monitor-silent' needs --node"),
        (
            ["clear", "--rack", RACK, "--switch", LEAF],
            "clear takes at most one of --node, --rack and --switch",
        ),
        (["clear", "--gpu", "1"], "clear --gpu resets one GPU: it needs --node"),
    ],
)
def test_usage_errors_name_what_is_missing(
    kubeconfig: Path, admin: AdminClient, args: list[str], message: str
) -> None:
    assert message in usage(inject(kubeconfig, *args))
    assert admin.request("GET", "faults") == []


def test_the_fleets_refusal_is_the_error(kubeconfig: Path) -> None:
    result = inject(kubeconfig, "rack-power", "--nodes", f"{_node(15)},{_node(16)}")
    assert result.exit_code == 1
    assert "share a rack; these are in east-h100-rack-000, east-h100-rack-001" in result.output
    result = inject(kubeconfig, "switch-down", "--switch", "no-such-leaf")
    assert result.exit_code == 1 and 'no node is in switch "no-such-leaf"' in result.output
