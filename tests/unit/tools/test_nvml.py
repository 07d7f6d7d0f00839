"""The NVML collector over the simulated NVML, over the real pynvml, and served by the node-agent."""

from __future__ import annotations

import contextlib
import ctypes
import json
import threading
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pynvml
import pytest

from sandbox.fleet.nvml_sim import SimGpu, SimNvml
from supply_agent.models import GpuHealthReport
from supply_agent.node_agent import make_app
from tests.support.nvml_fakes import module_over
from tools.nvml import NvmlCollector, _handle_key, collect_once, decode_clock_event_reasons

H100 = "NVIDIA H100 80GB HBM3"


class TickClock:
    """A clock that advances one second per reading, so event order is visible in timestamps."""

    def __init__(self) -> None:
        self.now = datetime(2025, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        self.now += timedelta(seconds=1)
        return self.now


@pytest.fixture
def sim() -> SimNvml:
    return SimNvml.healthy("node-a", 8, H100, seed=42)


@pytest.fixture
def collector(sim: SimNvml) -> Iterator[NvmlCollector]:
    c = NvmlCollector("node-a", nvml=sim, clock=TickClock())
    c.start()
    yield c
    c.close()


def xids(report: GpuHealthReport, index: int) -> list[int]:
    return [e.xid for e in report.gpus[index].xid_events]


# the simulated fleet path -------------------------------------------------------------------------


def test_healthy_report_has_every_field(collector: NvmlCollector, sim: SimNvml) -> None:
    report = collector.report()
    assert report.nvml_available and report.simulated and report.error is None
    assert report.node == "node-a"
    assert report.driver_version is not None and report.driver_version.endswith("-sim")
    assert len(report.gpus) == 8
    uuids = {g.uuid for g in report.gpus}
    assert len(uuids) == 8
    for i, gpu in enumerate(report.gpus):
        assert gpu.index == i
        assert gpu.uuid == sim.gpus[i].uuid
        assert gpu.uuid is not None and gpu.uuid.startswith("GPU-") and len(gpu.uuid) == 40
        assert gpu.name == H100
        assert not gpu.lost
        assert gpu.temperature_c is not None and 35 <= gpu.temperature_c <= 55
        assert gpu.ecc_mode_enabled is True
        assert gpu.ecc_uncorrected_volatile == 0 and gpu.ecc_uncorrected_aggregate == 0
        assert gpu.remapped_rows is not None
        assert (gpu.remapped_rows.pending, gpu.remapped_rows.failure) == (False, False)
        assert gpu.clock_event_mask == 0 and gpu.clock_event_reasons == []
        assert gpu.nvlinks is not None and len(gpu.nvlinks) == 18 and all(link.active for link in gpu.nvlinks)
        assert gpu.xid_events == [] and gpu.unsupported == [] and gpu.errors == {}


def test_xid_injected_after_start_reaches_report(collector: NvmlCollector, sim: SimNvml) -> None:
    sim.inject_xid(3, 74)
    sim.inject_xid(5, 13, gpu_instance_id=1, compute_instance_id=0)
    report = collector.report()
    assert xids(report, 3) == [74]
    assert xids(report, 5) == [13]
    event = report.gpus[5].xid_events[0]
    assert event.gpu_index == 5 and (event.gpu_instance_id, event.compute_instance_id) == (1, 0)
    assert report.gpus[3].xid_events[0].gpu_instance_id is None  # not a MIG instance
    assert all(xids(report, i) == [] for i in (0, 1, 2, 4, 6, 7))
    # The history persists across reports; nothing is double counted.
    assert xids(collector.report(), 3) == [74]


def test_events_before_registration_are_not_seen(sim: SimNvml) -> None:
    sim.inject_xid(0, 79)  # nobody is listening yet, as with a real NVML event set
    late = NvmlCollector("node-a", nvml=sim)
    late.start()
    assert xids(late.report(), 0) == []
    sim.inject_xid(0, 31)
    assert xids(late.report(), 0) == [31]
    late.close()


def test_every_registered_set_receives_an_event(sim: SimNvml) -> None:
    a, b = NvmlCollector("node-a", nvml=sim), NvmlCollector("node-a", nvml=sim)
    a.start()
    b.start()
    sim.inject_xid(2, 94)
    assert [e.xid for e in a.poll_events()] == [94]
    assert [e.xid for e in b.poll_events()] == [94]
    assert a.poll_events() == []
    a.close()
    sim.inject_xid(2, 95)
    assert [e.xid for e in b.poll_events()] == [95]
    b.close()


def test_ecc_uncorrectable(collector: NvmlCollector, sim: SimNvml) -> None:
    sim.inject_ecc_uncorrectable(1)
    gpu = collector.report().gpus[1]
    assert gpu.ecc_uncorrected_volatile == 1 and gpu.ecc_uncorrected_aggregate == 1
    assert gpu.remapped_rows is not None
    assert gpu.remapped_rows.uncorrected == 1 and gpu.remapped_rows.pending and not gpu.remapped_rows.failure
    assert [e.xid for e in gpu.xid_events] == [48, 63]
    assert gpu.xid_events[0].observed_at < gpu.xid_events[1].observed_at


def test_ecc_remap_failure(collector: NvmlCollector, sim: SimNvml) -> None:
    sim.inject_ecc_uncorrectable(4, remap_failed=True)
    gpu = collector.report().gpus[4]
    assert [e.xid for e in gpu.xid_events] == [48, 64]
    assert gpu.remapped_rows is not None and gpu.remapped_rows.failure
    assert gpu.ecc_uncorrected_volatile == 1


def test_off_bus_marks_lost_and_others_still_report(collector: NvmlCollector, sim: SimNvml) -> None:
    sim.fall_off_bus(6)
    report = collector.report()
    lost = report.gpus[6]
    assert lost.lost and xids(report, 6) == [79]
    assert lost.uuid == sim.gpus[6].uuid  # still named, from the handle's first reading
    assert lost.temperature_c is None
    assert lost.errors == {"temperature_c": "GPU is lost"}  # the first read that failed; the rest skipped
    for gpu in report.gpus[:6] + report.gpus[7:]:
        assert not gpu.lost and gpu.temperature_c is not None and gpu.ecc_uncorrected_volatile == 0


def test_gpu_lost_before_start(sim: SimNvml) -> None:
    sim.gpus[0].lost = True
    c = NvmlCollector("node-a", nvml=sim)
    c.start()
    report = c.report()
    assert report.gpus[0].lost and "handle" in report.gpus[0].errors
    assert all(not g.lost and g.temperature_c is not None for g in report.gpus[1:])
    c.close()


def test_thermal_on_and_off(collector: NvmlCollector, sim: SimNvml) -> None:
    normal = collector.report().gpus[2].temperature_c
    sim.set_thermal(2, True)
    gpu = collector.report().gpus[2]
    assert gpu.temperature_c == 92
    assert gpu.clock_event_mask == 0x60
    assert set(gpu.clock_event_reasons) == {"HwThermalSlowdown", "SwThermalSlowdown"}
    sim.set_thermal(2, False)
    gpu = collector.report().gpus[2]
    assert gpu.temperature_c == normal and gpu.clock_event_reasons == []


def test_reset_back_to_healthy(collector: NvmlCollector, sim: SimNvml) -> None:
    uuids = [g.uuid for g in sim.gpus]
    sim.inject_ecc_uncorrectable(0)
    sim.fall_off_bus(1)
    sim.set_thermal(2, True)
    assert collector.report().gpus[1].lost
    sim.reset()
    # A reboot restarts the node-agent too: a fresh collector history.
    collector.close()
    collector.start()
    report = collector.report()
    assert [g.uuid for g in report.gpus] == uuids
    for gpu in report.gpus:
        assert not gpu.lost and gpu.xid_events == [] and gpu.errors == {}
        assert gpu.ecc_uncorrected_volatile == 0 and gpu.clock_event_reasons == []
        assert gpu.remapped_rows is not None and not gpu.remapped_rows.pending
        assert gpu.temperature_c is not None and gpu.temperature_c < 60
    # Lifetime counters survive, as in the InfoROM.
    assert report.gpus[0].ecc_uncorrected_aggregate == 1
    # A collector left running keeps receiving events after the reset.
    sim.inject_xid(7, 119)
    assert xids(collector.report(), 7) == [119]


def test_snapshot_round_trip(sim: SimNvml) -> None:
    sim.inject_ecc_uncorrectable(0)
    sim.fall_off_bus(1)
    sim.set_thermal(2, True)
    data = json.loads(json.dumps(sim.to_dict()))  # it is plain data
    restored = SimNvml.from_dict(data)
    assert restored.to_dict() == sim.to_dict()
    assert restored.gpus == sim.gpus
    a = collect_once("node-a", nvml=sim).model_dump(exclude={"collected_at"})
    b = collect_once("node-a", nvml=restored).model_dump(exclude={"collected_at"})
    assert a == b
    restored.reset()
    assert sim.gpus[1].lost and not restored.gpus[1].lost  # independent copies


def test_healthy_is_deterministic_and_product_aware() -> None:
    a = SimNvml.healthy("n1", 4, H100, seed=1)
    assert a.to_dict() == SimNvml.healthy("n1", 4, H100, seed=1).to_dict()
    assert {g.uuid for g in a.gpus}.isdisjoint(g.uuid for g in SimNvml.healthy("n2", 4, H100, 1).gpus)
    assert [g.uuid for g in a.gpus] == [g.uuid for g in SimNvml.healthy("n1", 4, H100, seed=9).gpus]
    pcie = collect_once("n3", nvml=SimNvml.healthy("n3", 2, "NVIDIA H100 PCIe", seed=1))
    assert all(g.nvlinks is None and "nvlinks" in g.unsupported for g in pcie.gpus)
    v100 = collect_once("n4", nvml=SimNvml.healthy("n4", 1, "Tesla V100-SXM2-32GB", seed=1))
    assert v100.gpus[0].remapped_rows is None and "remapped_rows" in v100.gpus[0].unsupported


def test_sim_raises_real_pynvml_errors(sim: SimNvml) -> None:
    with pytest.raises(pynvml.NVMLError_Uninitialized):
        sim.nvmlDeviceGetCount()
    sim.nvmlInit()
    event_set = sim.nvmlEventSetCreate()
    with pytest.raises(pynvml.NVMLError_Timeout):
        sim.nvmlEventSetWait_v2(event_set, 5000)
    sim.fall_off_bus(0)
    with pytest.raises(pynvml.NVMLError_GpuIsLost):
        sim.nvmlDeviceGetHandleByIndex(0)
    handle = sim.nvmlDeviceGetHandleByIndex(1)
    with pytest.raises(pynvml.NVMLError_InvalidArgument):
        sim.nvmlDeviceGetNvLinkState(handle, 18)
    sim.nvmlEventSetFree(event_set)
    sim.nvmlShutdown()


def test_xid_history_is_bounded(sim: SimNvml) -> None:
    c = NvmlCollector("node-a", nvml=sim, xid_history=3)
    c.start()
    for code in (31, 43, 45, 68, 13):
        sim.inject_xid(0, code)
    assert xids(c.report(), 0) == [45, 68, 13]
    c.close()


# fake modules: one field NVML refuses, old drivers, init failures ---------------------------------


def raising(code: int) -> Any:
    def fn(*args: Any) -> Any:
        raise pynvml.NVMLError(code)

    return fn


def test_one_unsupported_field_others_still_reported(sim: SimNvml) -> None:
    fake = module_over(
        sim,
        nvmlDeviceGetTemperature=raising(pynvml.NVML_ERROR_NOT_SUPPORTED),
        nvmlDeviceGetTotalEccErrors=raising(pynvml.NVML_ERROR_UNKNOWN),
    )
    report = collect_once("node-a", nvml=fake)
    assert report.nvml_available and not report.simulated  # the module has no SIMULATED flag
    for gpu in report.gpus:
        assert gpu.temperature_c is None and gpu.unsupported == ["temperature_c"]
        assert gpu.ecc_uncorrected_volatile is None and gpu.ecc_uncorrected_aggregate is None
        assert set(gpu.errors) == {"ecc_uncorrected_volatile", "ecc_uncorrected_aggregate"}
        assert gpu.errors["ecc_uncorrected_volatile"] == "Unknown Error"
        assert gpu.uuid is not None and gpu.ecc_mode_enabled is True and gpu.remapped_rows is not None
        assert gpu.nvlinks is not None and len(gpu.nvlinks) == 18


def test_old_driver_clock_reasons_fallback_and_no_xid_support(sim: SimNvml) -> None:
    sim.set_thermal(0, True)
    fake = module_over(
        sim,
        nvmlDeviceGetCurrentClocksEventReasons=None,
        nvmlDeviceGetSupportedEventTypes=lambda handle: pynvml.nvmlEventTypeSingleBitEccError,
    )
    report = collect_once("node-a", nvml=fake)
    assert "HwThermalSlowdown" in report.gpus[0].clock_event_reasons
    assert all("xid_events" in g.unsupported for g in report.gpus)
    # And a binding newer than the driver: the new symbol exists but NVML says FunctionNotFound.
    fake = module_over(
        sim, nvmlDeviceGetCurrentClocksEventReasons=raising(pynvml.NVML_ERROR_FUNCTION_NOT_FOUND)
    )
    assert collect_once("node-a", nvml=fake).gpus[0].clock_event_mask == 0x60


@pytest.mark.parametrize(
    ("code", "phrase"),
    [
        (pynvml.NVML_ERROR_LIBRARY_NOT_FOUND, "no NVIDIA driver/GPU"),
        (pynvml.NVML_ERROR_DRIVER_NOT_LOADED, "driver is not loaded"),
        (pynvml.NVML_ERROR_NO_PERMISSION, "no permission"),
        (pynvml.NVML_ERROR_UNKNOWN, "NVML failed to initialise"),
    ],
)
def test_init_failure_is_a_report_not_an_exception(sim: SimNvml, code: int, phrase: str) -> None:
    c = NvmlCollector("node-a", nvml=module_over(sim, nvmlInit=raising(code)))
    c.start()
    report = c.report()
    assert not report.nvml_available and report.gpus == []
    assert report.error is not None and report.error.startswith("NVML is not available on this machine")
    assert phrase in report.error and str(pynvml.NVMLError(code)) in report.error
    assert c.poll_events(100) == []
    c.close()


def test_poll_waits_once_then_drains(sim: SimNvml) -> None:
    waits: list[int] = []

    def wait(event_set: Any, timeout_ms: int) -> Any:
        waits.append(timeout_ms)
        return sim.nvmlEventSetWait_v2(event_set, timeout_ms)

    c = NvmlCollector("node-a", nvml=module_over(sim, nvmlEventSetWait_v2=wait))
    c.start()
    assert c.poll_events(5000) == [] and waits == [5000]
    waits.clear()
    sim.inject_xid(0, 31)
    sim.inject_xid(1, 43)
    assert [(e.gpu_index, e.xid) for e in c.poll_events(5000)] == [(0, 31), (1, 43)]
    assert waits == [5000, 0, 0]  # block for the first event only, then drain without blocking
    c.close()


def test_clock_reason_decoding() -> None:
    assert decode_clock_event_reasons(0) == []
    assert decode_clock_event_reasons(0x1 | 0x40) == ["GpuIdle", "HwThermalSlowdown"]
    assert decode_clock_event_reasons(0x4 | 0x10000) == ["SwPowerCap", "Unknown(0x10000)"]


def test_real_ctypes_handles_match_event_devices() -> None:
    # pynvml gives a new pointer object on every access; the collector must match by address.
    handle = ctypes.cast(0x7F00_1000, pynvml.c_nvmlDevice_t)
    data = pynvml.c_nvmlEventData_t()
    data.device = ctypes.cast(0x7F00_1000, pynvml.c_nvmlDevice_t)
    assert data.device is not handle
    assert _handle_key(data.device) == _handle_key(handle)
    assert _handle_key(ctypes.cast(0x7F00_2000, pynvml.c_nvmlDevice_t)) != _handle_key(handle)


# the real pynvml on this machine -------------------------------------------------------------------


def test_real_nvml_on_this_machine() -> None:
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        init_error: pynvml.NVMLError | None = exc
    else:
        init_error = None
        count = pynvml.nvmlDeviceGetCount()
        pynvml.nvmlShutdown()
    c = NvmlCollector("this-machine")  # the real pynvml
    c.start()
    report = c.report()
    c.close()
    assert not report.simulated
    if init_error is not None:
        assert not report.nvml_available and report.gpus == []
        assert report.error is not None
        assert report.error.startswith("NVML is not available on this machine")
        assert str(init_error) in report.error
        return
    assert report.nvml_available and report.error is None
    assert report.driver_version and report.driver_version[0].isdigit()
    assert len(report.gpus) == count > 0
    for gpu in report.gpus:
        assert gpu.uuid is not None and gpu.uuid.startswith(("GPU-", "MIG-"))
        assert gpu.name and not gpu.lost, gpu
        assert gpu.temperature_c is None or 0 < gpu.temperature_c < 110
        assert "xid_events" not in gpu.errors, gpu.errors
        assert gpu.ecc_uncorrected_volatile is not None or "ecc_uncorrected_volatile" in gpu.unsupported
        assert gpu.clock_event_mask is not None, gpu.errors


# the node-agent ------------------------------------------------------------------------------------


def test_node_agent_app_serves_the_report(sim: SimNvml) -> None:
    pytest.importorskip("httpx", reason="starlette's TestClient needs httpx")
    from starlette.testclient import TestClient

    collector = NvmlCollector("node-a", nvml=sim)
    with TestClient(make_app(collector)) as client:
        assert client.get("/healthz").text == "ok"
        sim.inject_xid(3, 79)
        response = client.get("/health")
        assert response.status_code == 200
        report = GpuHealthReport.model_validate(response.json())
        assert report.simulated and xids(report, 3) == [79]
    collector.close()


def test_node_agent_without_gpu_still_serves(sim: SimNvml) -> None:
    pytest.importorskip("httpx", reason="starlette's TestClient needs httpx")
    from starlette.testclient import TestClient

    collector = NvmlCollector("node-a", nvml=module_over(sim, nvmlInit=raising(12)))
    with TestClient(make_app(collector)) as client:
        response = client.get("/health")
        assert response.status_code == 200
        assert response.json()["nvml_available"] is False
        assert "NVML Shared Library Not Found" in response.json()["error"]


@contextlib.contextmanager
def running_node_agent(collector: NvmlCollector) -> Iterator[str]:
    """The node-agent on uvicorn on a free loopback port; yields its base URL."""
    import uvicorn

    server = uvicorn.Server(
        uvicorn.Config(make_app(collector, poll_timeout_ms=20), host="127.0.0.1", port=0, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.01)
        yield f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)
    assert not thread.is_alive()
    assert not [t for t in threading.enumerate() if t.name == "nvml-events"]  # lifespan stopped it


def get(url: str) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.status, response.read()


def test_node_agent_over_a_real_socket(sim: SimNvml) -> None:
    """Lifespan starts the event thread, which records XIDs on its own, between requests."""
    collector = NvmlCollector("node-a", nvml=sim)
    with running_node_agent(collector) as base:
        assert get(f"{base}/healthz") == (200, b"ok")
        sim.inject_xid(5, 48)
        deadline = time.monotonic() + 10
        while not collector.recorded_events():  # picked up by the background thread, not a request
            assert time.monotonic() < deadline, "the event thread never recorded the XID"
            time.sleep(0.01)
        status, body = get(f"{base}/health")
        assert status == 200
        report = GpuHealthReport.model_validate_json(body)
        assert xids(report, 5) == [48] and len(report.gpus) == 8 and report.simulated
    collector.close()


def test_node_agent_over_a_real_socket_without_gpu(sim: SimNvml) -> None:
    collector = NvmlCollector("node-a", nvml=module_over(sim, nvmlInit=raising(12)))
    with running_node_agent(collector) as base:
        status, body = get(f"{base}/health")
        assert status == 200
        report = GpuHealthReport.model_validate_json(body)
        assert not report.nvml_available and report.gpus == []
        assert report.error == (
            "NVML is not available on this machine (no NVIDIA driver/GPU): NVML Shared Library Not Found"
        )
        assert get(f"{base}/healthz") == (200, b"ok")


def test_sim_gpu_is_a_slots_dataclass() -> None:
    assert not hasattr(SimGpu(0, "GPU-x", "x", 40, 40), "__dict__")
