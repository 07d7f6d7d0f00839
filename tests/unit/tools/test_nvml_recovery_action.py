"""NVML's GPU recovery action (NVML_FI_DEV_GET_GPU_RECOVERY_ACTION): simulated by the sandbox's NVML, read by
the collector through nvmlDeviceGetFieldValues, carried in the health report, served by the node-agent and
read back by the agent's `nvml.gpu_health`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pynvml
import pytest

from sandbox.fleet.admin import AdminClient, AdminError
from sandbox.fleet.nvml_sim import SimNvml
from supply_agent.models import GpuHealthReport
from supply_agent.node_agent import make_app
from tests.support.nvml_fakes import module_over
from tools.kubernetes import KubeTools
from tools.nvml import NvmlCollector, collect_once
from tools.nvml.codes import (
    FI_DEV_GET_GPU_RECOVERY_ACTION,
    GPU_RECOVERY_ACTIONS,
    decode_recovery_action,
)
from tools.nvml.health import gpu_health

H100 = "NVIDIA H100 80GB HBM3"


@pytest.fixture
def sim() -> SimNvml:
    return SimNvml.healthy("node-a", 8, H100, seed=42)


def answering(sim: SimNvml, nvml_return: int, value: int = 0, value_type: int = 1) -> Any:
    """nvmlDeviceGetFieldValues that answers every field with this return code and value."""

    def fn(handle: Any, field_ids: list[Any]) -> Any:
        values = sim.nvmlDeviceGetFieldValues(handle, field_ids)
        for v in values:
            v.nvmlReturn, v.valueType = nvml_return, value_type
            if value_type == pynvml.NVML_VALUE_TYPE_UNSIGNED_LONG_LONG:
                v.value.ullVal = value
            else:
                v.value.uiVal = value
        return values

    return fn


def test_the_codes_are_pynvmls() -> None:
    assert FI_DEV_GET_GPU_RECOVERY_ACTION == pynvml.NVML_FI_DEV_GET_GPU_RECOVERY_ACTION == 230
    for name, value in (
        ("NONE", 0),
        ("GPU_RESET", 1),
        ("NODE_REBOOT", 2),
        ("DRAIN_P2P", 3),
        ("DRAIN_AND_RESET", 4),
    ):
        assert getattr(pynvml, f"NVML_GPU_RECOVERY_ACTION_{name}") == value
    assert GPU_RECOVERY_ACTIONS[1] == "reset" and GPU_RECOVERY_ACTIONS[4] == "drain_and_reset"
    assert decode_recovery_action(42) == "unknown"


def test_sim_answers_field_values_as_pynvml_does(sim: SimNvml) -> None:
    sim.nvmlInit()
    handle = sim.nvmlDeviceGetHandleByIndex(3)
    sim.set_recovery_action(3, pynvml.NVML_GPU_RECOVERY_ACTION_DRAIN_AND_RESET)
    values = sim.nvmlDeviceGetFieldValues(handle, [pynvml.NVML_FI_DEV_GET_GPU_RECOVERY_ACTION, (1, 0)])
    assert isinstance(values[0], pynvml.c_nvmlFieldValue_t)  # the real ctypes structure
    assert values[0].fieldId == 230 and values[0].nvmlReturn == pynvml.NVML_SUCCESS
    assert values[0].valueType == pynvml.NVML_VALUE_TYPE_UNSIGNED_INT and values[0].value.uiVal == 4
    assert values[1].nvmlReturn == pynvml.NVML_ERROR_NOT_SUPPORTED  # a field the simulation lacks
    sim.fall_off_bus(3)
    with pytest.raises(pynvml.NVMLError_GpuIsLost):
        sim.nvmlDeviceGetFieldValues(handle, [230])
    sim.nvmlShutdown()


def test_collector_reads_and_reports_the_recovery_action(sim: SimNvml) -> None:
    calls: list[list[Any]] = []

    def recorded(handle: Any, field_ids: list[Any]) -> Any:
        calls.append(list(field_ids))
        return sim.nvmlDeviceGetFieldValues(handle, field_ids)

    collector = NvmlCollector("node-a", nvml=module_over(sim, nvmlDeviceGetFieldValues=recorded))
    collector.start()
    report = collector.report()
    assert calls and all(ids == [230] for ids in calls)
    assert all(g.recovery_action == "none" and g.recovery_action_code == 0 for g in report.gpus)
    assert all("recovery_action" not in g.unsupported and not g.errors for g in report.gpus)
    sim.change_recovery_action(5, pynvml.NVML_GPU_RECOVERY_ACTION_GPU_RESET)  # what the driver does
    gpu = collector.report().gpus[5]
    assert (gpu.recovery_action, gpu.recovery_action_code) == ("reset", 1)
    assert [x.xid for x in gpu.xid_events] == [154]
    sim.reset()
    assert collector.report().gpus[5].recovery_action == "none"
    collector.close()


@pytest.mark.parametrize(
    ("value", "name"),
    [(0, "none"), (1, "reset"), (2, "node_reboot"), (3, "drain_p2p"), (4, "drain_and_reset"), (9, "unknown")],
)
def test_every_value_is_named(sim: SimNvml, value: int, name: str) -> None:
    sim.set_recovery_action(0, value)
    gpu = collect_once("node-a", nvml=sim).gpus[0]
    assert (gpu.recovery_action, gpu.recovery_action_code) == (name, value)


def test_the_value_comes_from_the_union_member_its_type_names(sim: SimNvml) -> None:
    fake = module_over(
        sim,
        nvmlDeviceGetFieldValues=answering(
            sim, pynvml.NVML_SUCCESS, 2, pynvml.NVML_VALUE_TYPE_UNSIGNED_LONG_LONG
        ),
    )
    assert collect_once("node-a", nvml=fake).gpus[0].recovery_action == "node_reboot"


@pytest.mark.parametrize(
    "fake",
    [
        # the driver does not know the field: NotSupported, or InvalidArgument for the id, in the value
        lambda sim: {"nvmlDeviceGetFieldValues": answering(sim, pynvml.NVML_ERROR_NOT_SUPPORTED)},
        lambda sim: {"nvmlDeviceGetFieldValues": answering(sim, pynvml.NVML_ERROR_INVALID_ARGUMENT)},
        # the driver predates nvmlDeviceGetFieldValues; the binding predates it
        lambda sim: {"nvmlDeviceGetFieldValues": raising(pynvml.NVML_ERROR_FUNCTION_NOT_FOUND)},
        lambda sim: {"nvmlDeviceGetFieldValues": None},
        # a binding older than the constant still asks for field 230
        lambda sim: {
            "NVML_FI_DEV_GET_GPU_RECOVERY_ACTION": None,
            "nvmlDeviceGetFieldValues": answering(sim, pynvml.NVML_ERROR_NOT_SUPPORTED),
        },
    ],
)
def test_a_driver_without_the_field_says_unsupported(sim: SimNvml, fake: Any) -> None:
    report = collect_once("node-a", nvml=module_over(sim, **fake(sim)))
    for gpu in report.gpus:
        assert gpu.recovery_action is None and gpu.recovery_action_code is None
        assert gpu.unsupported == ["recovery_action"] and gpu.errors == {}
        assert gpu.temperature_c is not None and gpu.nvlinks is not None  # the rest is still read


def test_a_field_error_is_named_and_the_rest_reported(sim: SimNvml) -> None:
    fake = module_over(sim, nvmlDeviceGetFieldValues=answering(sim, pynvml.NVML_ERROR_UNKNOWN))
    gpu = collect_once("node-a", nvml=fake).gpus[0]
    assert gpu.recovery_action is None and gpu.errors == {"recovery_action": "Unknown Error"}
    assert gpu.unsupported == [] and gpu.temperature_c is not None


def test_a_gpu_lost_in_the_field_is_lost(sim: SimNvml) -> None:
    fake = module_over(sim, nvmlDeviceGetFieldValues=answering(sim, pynvml.NVML_ERROR_GPU_IS_LOST))
    gpu = collect_once("node-a", nvml=fake).gpus[0]
    assert gpu.lost and "recovery_action" in gpu.errors


def raising(code: int) -> Any:
    def fn(*args: Any) -> Any:
        raise pynvml.NVMLError(code)

    return fn


def test_an_old_report_without_the_field_still_validates() -> None:
    report = GpuHealthReport.model_validate(
        {"node": "n", "collected_at": "2025-01-01T00:00:00Z", "nvml_available": True, "gpus": [{"index": 0}]}
    )
    assert report.gpus[0].recovery_action is None and report.gpus[0].recovery_action_code is None


def test_node_agent_serves_the_recovery_action(sim: SimNvml) -> None:
    pytest.importorskip("httpx", reason="starlette's TestClient needs httpx")
    from starlette.testclient import TestClient

    collector = NvmlCollector("node-a", nvml=sim)
    with TestClient(make_app(collector)) as client:
        sim.change_recovery_action(2, pynvml.NVML_GPU_RECOVERY_ACTION_DRAIN_P2P)
        body = client.get("/health").json()
        assert body["gpus"][2]["recovery_action"] == "drain_p2p"
        assert body["gpus"][2]["recovery_action_code"] == 3
        assert body["gpus"][0]["recovery_action"] == "none"
        assert [x["xid"] for x in body["gpus"][2]["xid_events"]] == [154]
    collector.close()


# through the sandbox fleet, as the agent reads it ------------------------------------------------------


@pytest.fixture
def kube(kubeconfig: Path) -> Iterator[KubeTools]:
    tools = KubeTools.from_kubeconfig(kubeconfig)
    yield tools
    tools.close()


def test_gpu_health_shows_the_recovery_action_an_xid154_carries(kube: KubeTools, admin: AdminClient) -> None:
    nodes = [n.name for n in kube.list_nodes()]
    fault = admin.inject("xid", node=nodes[0], gpu=4, code=154, recovery_action="drain_and_reset")
    assert fault["recovery_action"] == "drain_and_reset"
    admin.inject(
        "xid",
        node=nodes[1],
        gpu=1,
        code=154,
        detail="GPU recovery action changed from 0x0 (None) to 0x1 (GPU Reset Required)",
    )
    read = gpu_health(kube, nodes[0])
    assert read.available and read.report is not None
    assert [g.recovery_action for g in read.report.gpus] == ["none"] * 4 + ["drain_and_reset"] + ["none"] * 3
    assert read.report.gpus[4].recovery_action_code == 4
    assert [x.xid for x in read.report.gpus[4].xid_events] == [154]
    other = gpu_health(kube, nodes[1])
    assert other.report is not None and other.report.gpus[1].recovery_action == "reset"
    # the tool's result, as the agent and its planners see it
    assert read.model_dump(mode="json")["report"]["gpus"][4]["recovery_action"] == "drain_and_reset"
    admin.clear(nodes[0])
    again = gpu_health(kube, nodes[0])
    assert again.report is not None and again.report.gpus[4].recovery_action == "none"


def test_the_sandbox_api_refuses_a_bad_recovery_action(admin: AdminClient, kube: KubeTools) -> None:
    node = kube.list_nodes()[0].name
    with pytest.raises(AdminError) as err:
        admin.inject("xid", node=node, gpu=0, code=154, recovery_action="soon")
    assert err.value.code == 422 and "unknown GPU recovery action" in str(err.value)
    with pytest.raises(AdminError) as err:
        admin.inject("crashloop", namespace="tenant-acme", pod="x", recovery_action="reset")
    assert err.value.code == 422 and "only an xid fault" in str(err.value)


# the real pynvml on this machine ------------------------------------------------------------------------


def test_real_nvml_reads_the_recovery_action_or_says_unsupported() -> None:
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        pytest.skip("no NVML on this machine (the collector's own test covers the report saying so)")
    pynvml.nvmlShutdown()
    report = collect_once("this-machine")
    assert report.nvml_available and report.gpus
    for gpu in report.gpus:
        assert "recovery_action" not in gpu.errors, gpu.errors
        if "recovery_action" in gpu.unsupported:
            assert gpu.recovery_action is None
        else:
            assert gpu.recovery_action is not None and gpu.recovery_action_code is not None
            assert gpu.recovery_action == decode_recovery_action(gpu.recovery_action_code)
