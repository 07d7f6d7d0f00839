"""An XID's effect in the sandbox follows NVIDIA's Xid catalogue: per immediate bucket, GPU health, the job on
the GPU, the node-agent's GpuHealthy condition and the alert's severity; XID 154 follows the GPU recovery
action it carries, which the sandbox's NVML reports."""

from __future__ import annotations

from typing import Any

import pytest

from sandbox.fleet.alerts import fire
from sandbox.fleet.clock import SimClock
from sandbox.fleet.faults import Fault, FaultKind
from sandbox.fleet.world import Fleet, FleetError, FleetSpec
from sandbox.fleet.xids import (
    DEFAULT_RECOVERY_ACTION,
    OVERRIDES,
    RECOVERY_ACTIONS,
    effect,
    recovery_action_in,
    recovery_action_name,
)
from supply_agent.policy.xids import load_catalogue

NODE = "east-h100-00000"  # seed 3: every GPU of it runs one of acme's pods
IDLE_NODE, IDLE_GPU = "east-h100-00001", 5  # seed 3: GPUs 3-7 of it run nothing

# The buckets where the GPU itself needs something done before it is trusted again.
HARDWARE_BUCKETS = {
    "RESET_GPU",
    "RESTART_BM",
    "RESTART_VM",
    "CONTACT_SUPPORT",
    "CHECK_MECHANICALS",
    "WORKFLOW_NVLINK_ERR",
    "WORKFLOW_NVLINK5_ERR",
}


@pytest.fixture
def fleet() -> Fleet:
    f = Fleet(FleetSpec(nodes=4, gpus_per_node=8, pools=2, seed=3), SimClock("manual"))
    f.generate()
    return f


def owner_of(fleet: Fleet, node: str, gpu: int) -> tuple[str, str]:
    owner = fleet._gpu_owner[node][gpu]
    assert owner is not None, f"GPU {gpu} of {node} runs nothing"
    ns, name = owner.split("/", 1)
    return ns, name


def restarts(fleet: Fleet, ns: str, name: str) -> int:
    pod = fleet.store.get("pods", ns, name)
    assert pod is not None
    return int(pod["status"]["containerStatuses"][0].get("restartCount", 0))


def gpu_healthy(fleet: Fleet, node: str) -> str:
    return next(c for c in fleet.node(node)["status"]["conditions"] if c["type"] == "GpuHealthy")["status"]


SEVERITIES = ("info", "warning", "critical")


def xid_severity(fleet: Fleet) -> str:
    """The highest severity the faults' alerts are sent with (the generic GPUXidError, or the specific
    alert that mutes it for 48, 63, 64 and 79)."""
    alerts = fire(list(fleet.faults.values()), now=fleet.now())
    assert alerts
    return max((a.severity for a in alerts), key=SEVERITIES.index)


def observe(fleet: Fleet, code: int, **kw: Any) -> tuple[bool, bool, str, str, Fault]:
    """Inject XID ``code`` on a busy GPU; (GPU out of service, job restarted, GpuHealthy, severity, fault)."""
    gpu = 2
    ns, name = owner_of(fleet, NODE, gpu)
    before = restarts(fleet, ns, name)
    fault = fleet.inject(FaultKind.XID, node=NODE, gpu=gpu, code=code, **kw)
    out = gpu in fleet._unhealthy.get(NODE, set())
    allocatable = fleet.node(NODE)["status"]["allocatable"]["nvidia.com/gpu"]
    assert allocatable == ("7" if out else "8")
    return out, restarts(fleet, ns, name) > before, gpu_healthy(fleet, NODE), xid_severity(fleet), fault


# the table, code by code -------------------------------------------------------------------------------


def test_every_catalogued_code_follows_its_bucket() -> None:
    for entry in load_catalogue().entries:
        code, bucket = entry.code, entry.immediate_action
        if code in OVERRIDES or code == 154:
            continue
        what = effect(code)
        if bucket == "RESTART_APP":
            assert (what.gpu_unhealthy, what.job_dies, what.severity) == (False, True, "warning"), code
        elif bucket == "IGNORE":
            assert (what.gpu_unhealthy, what.job_dies, what.severity) == (False, False, "info"), code
        else:  # a hardware bucket, an unlisted workflow, or no bucket at all: out of service until reset
            assert (what.gpu_unhealthy, what.job_dies, what.severity) == (True, True, "critical"), code


def test_overrides_keep_what_the_sandbox_modelled_before_the_catalogue() -> None:
    assert set(OVERRIDES) == {38, 43, 45, 48, 94}
    assert (effect(43).gpu_unhealthy, effect(43).job_dies) == (False, True)  # IGNORE, but the app stopped
    # IGNORE, but the robust channel the FECS watchdog timed out on is torn down with its context
    assert (effect(38).gpu_unhealthy, effect(38).job_dies, effect(38).severity) == (False, True, "warning")
    assert (effect(45).gpu_unhealthy, effect(45).job_dies) == (False, True)
    assert (effect(48).gpu_unhealthy, effect(48).severity) == (True, "critical")
    assert (effect(94).gpu_unhealthy, effect(94).job_dies, effect(94).severity) == (True, True, "warning")


def test_an_uncatalogued_code_is_a_gpu_fault() -> None:
    assert load_catalogue().get(999) is None
    assert (effect(999).gpu_unhealthy, effect(999).job_dies, effect(999).severity) == (True, True, "critical")


@pytest.mark.parametrize(
    ("action", "unhealthy", "dies", "severity"),
    [
        ("none", False, False, "info"),
        ("reset", True, True, "critical"),
        ("node_reboot", True, True, "critical"),
        ("drain_p2p", True, True, "critical"),
        ("drain_and_reset", True, False, "warning"),
        ("bus_reset", True, True, "critical"),
        ("system_reboot", True, True, "critical"),
        ("recover_imex_domain", True, True, "critical"),
    ],
)
def test_xid154_follows_its_recovery_action(action: str, unhealthy: bool, dies: bool, severity: str) -> None:
    what = effect(154, action)
    assert (what.gpu_unhealthy, what.job_dies, what.severity) == (unhealthy, dies, severity)


def test_every_recovery_action_has_an_effect() -> None:
    assert set(RECOVERY_ACTIONS) == {
        "none",
        "reset",
        "node_reboot",
        "drain_p2p",
        "drain_and_reset",
        "recover_imex_domain",
        "bus_reset",
        "system_reboot",
    }
    assert effect(154) == effect(154, DEFAULT_RECOVERY_ACTION) == effect(154, "reset")


@pytest.mark.parametrize(
    ("text", "action"),
    [
        ("GPU recovery action changed from 0x0 (None) to 0x1 (GPU Reset Required)", "reset"),
        ("GPU recovery action changed from 0x1 (GPU Reset Required) to 0x0 (None)", "none"),
        ("Xid 154, GPU recovery action changed from 0x0 (None) to 0x2 (Node Reboot Required)", "node_reboot"),
        ("GPU recovery action changed from 0x0 (None) to 0x3 (Drain P2P)", "drain_p2p"),
        ("GPU recovery action changed from 0x0 (None) to 0x4 (Drain and Reset)", "drain_and_reset"),
        ("changed to Drain and Reset", "drain_and_reset"),
        ("node reboot required", "node_reboot"),
        ("none", "none"),
        ("the PMU halted", None),
        ("", None),
    ],
)
def test_recovery_action_in_driver_text(text: str, action: str | None) -> None:
    assert recovery_action_in(text) == action


def test_recovery_action_names_and_values() -> None:
    assert recovery_action_name("Reset") == "reset"
    assert recovery_action_name(4) == "drain_and_reset"
    for bad in ("reboot-ish", 99, True):
        with pytest.raises(ValueError, match="known: none \\(0\\), reset \\(1\\)"):
            recovery_action_name(bad)


# the world, bucket by bucket ---------------------------------------------------------------------------


@pytest.mark.parametrize("code", [8, 13, 31, 32, 68, 69, 38])  # RESTART_APP, and 38 (IGNORE, its job ends)
def test_restart_app_kills_the_job_and_keeps_the_gpu(fleet: Fleet, code: int) -> None:
    out, restarted, healthy, severity, _ = observe(fleet, code)
    assert (out, restarted, healthy, severity) == (False, True, "True", "warning")
    report = fleet.agent(NODE)[1].report()
    assert [x.xid for x in report.gpus[2].xid_events] == [code]
    assert any(
        e["reason"] == "GpuXidError" and "application error; GPU healthy" in e["message"]
        for e in fleet.store.items("events")
    )


@pytest.mark.parametrize("code", [44, 63, 92, 137])  # IGNORE (38 and 43 end their job: see OVERRIDES)
def test_ignore_breaks_nothing(fleet: Fleet, code: int) -> None:
    out, restarted, healthy, severity, _ = observe(fleet, code)
    assert (out, restarted, healthy) == (False, False, "True")
    # 63's generic alert is muted by GPURowRemapPending, a warning: reset the GPU when it is idle
    assert severity == ("warning" if code == 63 else "info")
    assert [x.xid for x in fleet.agent(NODE)[1].report().gpus[2].xid_events] == [code]
    assert fleet.truth()["gpus_out_of_service"] == 0 and fleet.truth()["pods_disrupted"] == []


@pytest.mark.parametrize("code", [46, 62, 64, 95, 109, 119, 120, 136, 140, 143, 79, 151, 54, 142, 74, 144])
def test_hardware_buckets_take_the_gpu_out_and_kill_the_job(fleet: Fleet, code: int) -> None:
    out, restarted, healthy, severity, _ = observe(fleet, code)
    assert (out, restarted, healthy, severity) == (True, True, "False", "critical")
    condition = next(c for c in fleet.node(NODE)["status"]["conditions"] if c["type"] == "GpuHealthy")
    assert f"XID {code}" in condition["message"]
    assert fleet.truth()["gpus_out_of_service"] == 1
    fleet.clear()
    assert gpu_healthy(fleet, NODE) == "True" and fleet.truth()["gpus_out_of_service"] == 0


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (43, (False, True, "True", "warning")),
        (45, (False, True, "True", "warning")),
        (48, (True, True, "False", "critical")),
        (94, (True, True, "False", "warning")),
    ],
)
def test_explicit_codes_keep_their_behaviour(
    fleet: Fleet, code: int, expected: tuple[bool, bool, str, str]
) -> None:
    assert observe(fleet, code)[:4] == expected


def test_an_idle_gpu_has_no_job_to_kill(fleet: Fleet) -> None:
    assert fleet._gpu_owner[IDLE_NODE][IDLE_GPU] is None
    fleet.inject(FaultKind.XID, node=IDLE_NODE, gpu=IDLE_GPU, code=46)
    assert gpu_healthy(fleet, IDLE_NODE) == "False" and fleet.truth()["pods_disrupted"] == []


# XID 154 and the GPU recovery action ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kw", "action", "expected"),
    [
        ({"recovery_action": "none"}, "none", (False, False, "True", "info")),
        ({"recovery_action": "reset"}, "reset", (True, True, "False", "critical")),
        ({"recovery_action": 2}, "node_reboot", (True, True, "False", "critical")),
        ({"recovery_action": "drain_p2p"}, "drain_p2p", (True, True, "False", "critical")),
        ({"recovery_action": "drain_and_reset"}, "drain_and_reset", (True, False, "False", "warning")),
        (
            {"detail": "GPU recovery action changed from 0x1 (GPU Reset Required) to 0x0 (None)"},
            "none",
            (False, False, "True", "info"),
        ),
        (
            {"detail": "GPU recovery action changed from 0x0 (None) to 0x1 (GPU Reset Required)"},
            "reset",
            (True, True, "False", "critical"),
        ),
        ({}, DEFAULT_RECOVERY_ACTION, (True, True, "False", "critical")),
        # the field wins over the text
        (
            {"recovery_action": "none", "detail": "to 0x1 (GPU Reset Required)"},
            "none",
            (False, False, "True", "info"),
        ),
    ],
)
def test_xid154_in_the_world_follows_its_recovery_action(
    fleet: Fleet, kw: dict[str, Any], action: str, expected: tuple[bool, bool, str, str]
) -> None:
    *seen, fault = observe(fleet, 154, **kw)
    assert fault.recovery_action == action
    assert tuple(seen) == expected
    gpu = fleet.agent(NODE)[1].report().gpus[2]
    assert gpu.recovery_action == action and [x.xid for x in gpu.xid_events] == [154]
    assert all(g.recovery_action == "none" for g in fleet.agent(NODE)[1].report().gpus if g.index != 2)
    assert any(f"GPU recovery action: {action}" in e["message"] for e in fleet.store.items("events"))


def test_recovery_action_clears_with_the_fault(fleet: Fleet) -> None:
    fleet.inject(FaultKind.XID, node=NODE, gpu=2, code=62)
    fleet.inject(FaultKind.XID, node=NODE, gpu=2, code=154, recovery_action="reset")
    assert fleet.agent(NODE)[1].report().gpus[2].recovery_action == "reset"
    fleet.clear(NODE)  # a GPU reset: the action goes back to none, the GPU to healthy
    assert fleet.agent(NODE)[1].report().gpus[2].recovery_action == "none"
    assert gpu_healthy(fleet, NODE) == "True"


def test_another_xid_may_carry_a_recovery_action(fleet: Fleet) -> None:
    out, restarted, healthy, severity, fault = observe(fleet, 62, recovery_action="reset")
    assert (out, restarted, healthy, severity) == (True, True, "False", "critical")  # 62's own bucket
    gpu = fleet.agent(NODE)[1].report().gpus[2]
    assert gpu.recovery_action == "reset" and [x.xid for x in gpu.xid_events] == [62]
    assert fault.recovery_action == "reset"


def test_bad_recovery_actions_say_what_is_wrong(fleet: Fleet) -> None:
    with pytest.raises(FleetError) as err:
        fleet.inject(FaultKind.XID, node=NODE, gpu=2, code=154, recovery_action="maybe")
    assert err.value.code == 422 and "unknown GPU recovery action 'maybe'" in err.value.message
    with pytest.raises(FleetError) as err:
        fleet.inject(FaultKind.THERMAL, node=NODE, gpu=2, recovery_action="reset")
    assert err.value.code == 422 and "only an xid fault" in err.value.message


def test_recovery_action_survives_a_snapshot(fleet: Fleet) -> None:
    fleet.inject(FaultKind.XID, node=NODE, gpu=2, code=154, recovery_action="drain_and_reset")
    restored = Fleet.restore(fleet.snapshot())
    assert restored.faults["f0001"].recovery_action == "drain_and_reset"
    assert restored.agent(NODE)[1].report().gpus[2].recovery_action == "drain_and_reset"
    assert xid_severity(restored) == "warning"
