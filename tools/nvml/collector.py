"""Node-side GPU health over NVML (nvidia-ml-py, module `pynvml`): the collector a node-agent runs.

`NvmlCollector` is what `supply-agent node-agent` runs on each GPU node: it subscribes to XID
critical-error events once, keeps a bounded per-GPU history of them (NVML event sets only deliver
events that happen after registration, so a missed poll is a missed XID), and on demand reads ECC,
row remapping, temperature, clock-event reasons, NVLink state and the GPU recovery action (the field
NVML_FI_DEV_GET_GPU_RECOVERY_ACTION, which XID 154 announces a change of) for every GPU.

Every field is read on its own: one field NVML refuses is named in `unsupported` or `errors` and the
rest are still reported, and a GPU that fell off the bus is reported `lost` rather than failing the
whole report. A machine without NVML gets a report that says so in a sentence, never an exception.
The sandbox fleet runs this same collector over `sandbox.fleet.nvml_sim.SimNvml`. Given a
`tools.podresources.PodResourcesClient` (the node-agent gives it one), each report also fills every GPU's
`pods` from the kubelet's pod-resources API, or names in `errors["pods"]` why it could not.

Long because each NVML query has its own failure modes (unsupported, not permitted, GPU lost, a field
value's own return code) and the report must say which, field by field; split, the reading and its
error handling would drift apart.
"""

from __future__ import annotations

import contextlib
import ctypes
import threading
from collections import deque
from collections.abc import Callable, Hashable
from datetime import UTC, datetime
from types import ModuleType
from typing import TYPE_CHECKING, Any

from supply_agent.logging import get_logger
from supply_agent.models import GpuHealth, GpuHealthReport, NvLinkState, RemappedRows, XidEvent
from tools.nvml.codes import (
    ERROR_FUNCTION_NOT_FOUND,
    ERROR_GPU_IS_LOST,
    ERROR_INVALID_ARGUMENT,
    ERROR_NOT_SUPPORTED,
    ERROR_TIMEOUT,
    EVENT_TYPE_XID_CRITICAL_ERROR,
    FI_DEV_GET_GPU_RECOVERY_ACTION,
    NOT_A_MIG_INSTANCE,
    NVLINK_LINKS,
    VALUE_TYPE_MEMBERS,
    decode_clock_event_reasons,
    decode_recovery_action,
    unavailable_sentence,
)

if TYPE_CHECKING:
    from tools.podresources import PodResourcesClient

# How many queued events one poll drains at most, so a flood cannot pin the caller forever.
_MAX_DRAIN = 10_000


def _log() -> Any:
    # Bound per call: a logger bound at import time would keep structlog's defaults forever.
    return get_logger(component="nvml")


def _text(value: Any) -> str:
    """pynvml returns str in recent releases and bytes in older ones."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def _handle_key(handle: Any) -> Hashable:
    """A key under which an event's `device` matches the handle the device was registered with."""
    if isinstance(handle, ctypes._Pointer):
        # Real pynvml: each access builds a new ctypes pointer object, so compare addresses.
        return ctypes.cast(handle, ctypes.c_void_p).value
    try:
        hash(handle)
    except TypeError:
        return id(handle)
    key: Hashable = handle
    return key


def _error_text(exc: BaseException) -> str:
    text = str(exc)
    return text or f"{type(exc).__name__} (code {getattr(exc, 'value', '?')})"


class _FieldError(Exception):
    """A field's own NVML return code, for a binding that offers no NVMLError to raise it as."""

    def __init__(self, value: int) -> None:
        super().__init__(f"NVML error {value}")
        self.value = value


class _GpuLost(Exception):
    """Raised inside a report when NVML says the GPU is lost; the remaining fields are skipped."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


class _Device:
    """What the collector remembers about one GPU between reports."""

    __slots__ = (
        "attach_lost",
        "errors",
        "handle",
        "history",
        "index",
        "max_sm_clock",
        "name",
        "unsupported",
        "uuid",
    )

    def __init__(self, index: int, history: int) -> None:
        self.index = index
        self.handle: Any = None
        self.uuid: str | None = None
        self.name: str | None = None
        self.max_sm_clock: int | None = None
        self.attach_lost = False
        # Findings from attaching (handle, events) that every later report repeats.
        self.unsupported: list[str] = []
        self.errors: dict[str, str] = {}
        self.history: deque[XidEvent] = deque(maxlen=history)


class NvmlCollector:
    """Reads GPU health from NVML and keeps the XID events it is sent; see the module docstring."""

    def __init__(
        self,
        node: str,
        nvml: ModuleType | Any | None = None,
        clock: Callable[[], datetime] | None = None,
        xid_history: int = 256,
        pod_resources: PodResourcesClient | None = None,
    ) -> None:
        self.node = node
        # The kubelet's pod-resources client that fills each GPU's `pods` (None: not read, as in the
        # sandbox, whose fleet fills them from its own scheduler).
        self._pod_resources = pod_resources
        self._clock = clock or (lambda: datetime.now(UTC))
        self._xid_history = xid_history
        self._import_error: str | None = None
        if nvml is None:
            try:
                import pynvml

                nvml = pynvml
            except ImportError as exc:  # the dependency is declared; this is a broken install
                self._import_error = (
                    "NVML is not available on this machine (the nvidia-ml-py package is not installed): "
                    f"{exc}"
                )
        self._nvml: Any = nvml
        self.simulated: bool = bool(getattr(nvml, "SIMULATED", False))
        self._lock = threading.RLock()  # start/close, devices and histories
        self._wait_lock = threading.Lock()  # one waiter on the event set at a time
        self._started = False
        self._initialised = False
        self._available = False
        self._error: str | None = None
        self._driver_version: str | None = None
        self._nvml_version: str | None = None
        self._event_set: Any = None
        self._event_set_problem: tuple[str, str] | None = None  # ("unsupported"|"error", text)
        self._event_error: str | None = None
        self._devices: list[_Device] = []
        self._by_handle: dict[Hashable, int] = {}

    # lifecycle -------------------------------------------------------------------------------

    @property
    def available(self) -> bool:
        """Whether NVML initialised (false before `start()`)."""
        return self._available

    def start(self) -> None:
        """Initialise NVML, find the GPUs and subscribe to their XID events; never raises for a missing NVML."""
        with self._lock:
            if self._started:
                return
            self._started = True
            self._devices = []
            self._by_handle = {}
            self._event_error = None
            self._event_set_problem = None
            nvml = self._nvml
            if nvml is None:
                self._error = self._import_error
                _log().warning("nvml.unavailable", node=self.node, error=self._error)
                return
            try:
                nvml.nvmlInit()
            except Exception as exc:
                self._error = unavailable_sentence(exc)
                _log().warning("nvml.unavailable", node=self.node, error=self._error)
                return
            self._initialised = True
            self._available = True
            self._error = None
            self._driver_version = self._system_text("nvmlSystemGetDriverVersion")
            self._nvml_version = self._system_text("nvmlSystemGetNVMLVersion")
            try:
                self._event_set = nvml.nvmlEventSetCreate()
            except Exception as exc:
                kind = "unsupported" if self._is_unsupported(exc) else "error"
                self._event_set_problem = (kind, f"creating the event set failed: {_error_text(exc)}")
            try:
                count = int(nvml.nvmlDeviceGetCount())
            except Exception as exc:
                self._error = f"NVML is initialised but could not count the GPUs: {_error_text(exc)}"
                count = 0
            for index in range(count):
                device = _Device(index, self._xid_history)
                self._devices.append(device)
                self._attach(device)
            _log().debug(
                "nvml.started",
                node=self.node,
                gpus=count,
                driver=self._driver_version,
                simulated=self.simulated,
            )

    def close(self) -> None:
        """Free the event set and shut NVML down; `start()` may be called again afterwards."""
        with self._wait_lock, self._lock:
            nvml = self._nvml
            if self._event_set is not None:
                try:
                    nvml.nvmlEventSetFree(self._event_set)
                except Exception as exc:
                    _log().warning("nvml.event_set_free_failed", node=self.node, error=_error_text(exc))
                self._event_set = None
            if self._initialised:
                try:
                    nvml.nvmlShutdown()
                except Exception as exc:
                    _log().warning("nvml.shutdown_failed", node=self.node, error=_error_text(exc))
                self._initialised = False
            self._available = False
            self._started = False

    def __enter__(self) -> NvmlCollector:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # events ----------------------------------------------------------------------------------

    def poll_events(self, timeout_ms: int = 0) -> list[XidEvent]:
        """Wait up to `timeout_ms` for XID events, drain the queue, record them and return the new ones."""
        with self._wait_lock:
            return self._poll_locked(timeout_ms)

    def _poll_locked(self, timeout_ms: int) -> list[XidEvent]:
        event_set = self._event_set
        if event_set is None:
            return []
        nvml = self._nvml
        new: list[XidEvent] = []
        wait = timeout_ms
        for _ in range(_MAX_DRAIN):
            try:
                data = nvml.nvmlEventSetWait_v2(event_set, wait)
            except Exception as exc:
                if getattr(exc, "value", None) == ERROR_TIMEOUT:
                    self._event_error = None
                else:
                    # e.g. GpuIsLost: NVML's own device plugin treats it as "every GPU suspect".
                    self._event_error = _error_text(exc)
                    _log().warning("nvml.event_wait_failed", node=self.node, error=self._event_error)
                break
            wait = 0  # the first event ends the wait; then drain what is already queued
            if not int(data.eventType) & EVENT_TYPE_XID_CRITICAL_ERROR:
                continue
            index = self._by_handle.get(_handle_key(data.device))
            if index is None:
                _log().warning("nvml.event_unknown_device", node=self.node, xid=int(data.eventData))
                continue
            event = XidEvent(
                gpu_index=index,
                xid=int(data.eventData),
                observed_at=self._clock(),
                gpu_instance_id=_mig_id(data, "gpuInstanceId"),
                compute_instance_id=_mig_id(data, "computeInstanceId"),
            )
            new.append(event)
            _log().warning("nvml.xid", node=self.node, gpu=index, xid=event.xid)
        if new:
            with self._lock:
                for event in new:
                    self._devices[event.gpu_index].history.append(event)
        return new

    def recorded_events(self) -> list[XidEvent]:
        """Every XID event still in the per-GPU histories, oldest first, without polling."""
        with self._lock:
            events = [event for device in self._devices for event in device.history]
        return sorted(events, key=lambda event: event.observed_at)

    # the report ------------------------------------------------------------------------------

    def report(self) -> GpuHealthReport:
        """Poll pending events, then read every field of every GPU; starts the collector if needed."""
        if not self._started:
            self.start()
        # A background waiter (the node-agent's loop) may hold the event set; it records what it gets.
        if self._wait_lock.acquire(blocking=False):
            try:
                self._poll_locked(0)
            finally:
                self._wait_lock.release()
        with self._lock:
            devices = list(self._devices)
        collected_at = self._clock()
        if not self._available:
            return GpuHealthReport(
                node=self.node,
                collected_at=collected_at,
                nvml_available=False,
                simulated=self.simulated,
                error=self._error or "NVML is not available on this machine.",
            )
        gpus = [self._gpu_health(device) for device in devices]
        if self._pod_resources is not None:
            from tools.podresources import fill_gpu_pods  # imports gRPC only where it is used

            fill_gpu_pods(gpus, self._pod_resources)
        return GpuHealthReport(
            node=self.node,
            collected_at=collected_at,
            nvml_available=True,
            simulated=self.simulated,
            driver_version=self._driver_version,
            nvml_version=self._nvml_version,
            error=self._error,
            gpus=gpus,
        )

    def _gpu_health(self, device: _Device) -> GpuHealth:
        with self._lock:
            if device.handle is None:
                self._attach(device)  # reconcile: a GPU that failed to attach before may attach now
            events = list(device.history)
        values: dict[str, Any] = {"index": device.index, "xid_events": events}
        unsupported = list(device.unsupported)
        errors = dict(device.errors)
        if self._event_error is not None:
            errors.setdefault("xid_events", f"waiting for events failed: {self._event_error}")
        # Lost is decided afresh by every report: NVML answers GpuIsLost quickly, and a reset GPU returns.
        lost = device.handle is None and device.attach_lost
        if device.handle is not None:
            try:
                self._read_fields(device, values, unsupported, errors)
            except _GpuLost as gone:
                lost = True
                errors[gone.field] = gone.message
        values.update(uuid=device.uuid, name=device.name, lost=lost, unsupported=unsupported, errors=errors)
        return GpuHealth(**values)

    def _read_fields(
        self, device: _Device, values: dict[str, Any], unsupported: list[str], errors: dict[str, str]
    ) -> None:
        nvml = self._nvml
        handle = device.handle

        def read(field: str, query: Callable[[], Any]) -> Any:
            return self._query(field, query, unsupported, errors)

        if device.uuid is None:
            uuid = read("uuid", lambda: nvml.nvmlDeviceGetUUID(handle))
            device.uuid = None if uuid is None else _text(uuid)
        if device.name is None:
            name = read("name", lambda: nvml.nvmlDeviceGetName(handle))
            device.name = None if name is None else _text(name)

        sensor = getattr(nvml, "NVML_TEMPERATURE_GPU", 0)
        temperature = read("temperature_c", lambda: nvml.nvmlDeviceGetTemperature(handle, sensor))
        if temperature is not None:
            values["temperature_c"] = int(temperature)

        mode = read("ecc_mode_enabled", lambda: nvml.nvmlDeviceGetEccMode(handle))
        if mode is not None:
            current = mode[0] if isinstance(mode, list | tuple) else mode
            values["ecc_mode_enabled"] = int(current) == getattr(nvml, "NVML_FEATURE_ENABLED", 1)

        uncorrected = getattr(nvml, "NVML_MEMORY_ERROR_TYPE_UNCORRECTED", 1)
        volatile = getattr(nvml, "NVML_VOLATILE_ECC", 0)
        aggregate = getattr(nvml, "NVML_AGGREGATE_ECC", 1)
        count = read(
            "ecc_uncorrected_volatile",
            lambda: nvml.nvmlDeviceGetTotalEccErrors(handle, uncorrected, volatile),
        )
        if count is not None:
            values["ecc_uncorrected_volatile"] = int(count)
        count = read(
            "ecc_uncorrected_aggregate",
            lambda: nvml.nvmlDeviceGetTotalEccErrors(handle, uncorrected, aggregate),
        )
        if count is not None:
            values["ecc_uncorrected_aggregate"] = int(count)

        rows = read("remapped_rows", lambda: nvml.nvmlDeviceGetRemappedRows(handle))
        if rows is not None:
            corrected, unc, pending, failure = rows
            values["remapped_rows"] = RemappedRows(
                corrected=int(corrected), uncorrected=int(unc), pending=bool(pending), failure=bool(failure)
            )

        mask = read("clock_event_mask", lambda: self._clock_event_mask(handle))
        if mask is not None:
            values["clock_event_mask"] = int(mask)
            values["clock_event_reasons"] = decode_clock_event_reasons(int(mask))

        # The SM clock against its maximum: how fast the GPU runs its work now (a thermal or power
        # slowdown lowers it). A binding without the calls reads as not supported.
        sm = getattr(nvml, "NVML_CLOCK_SM", 1)
        now_fn, top_fn = (
            getattr(nvml, f, None) for f in ("nvmlDeviceGetClockInfo", "nvmlDeviceGetMaxClockInfo")
        )
        if now_fn is None or top_fn is None:
            unsupported.append("sm_clock_mhz")
        else:
            clock = read("sm_clock_mhz", lambda: now_fn(handle, sm))
            if clock is not None:
                values["sm_clock_mhz"] = int(clock)
            if device.max_sm_clock is None:  # fixed for the board: read once
                top = read("max_sm_clock_mhz", lambda: top_fn(handle, sm))
                device.max_sm_clock = None if top is None else int(top)
            if device.max_sm_clock is not None:
                values["max_sm_clock_mhz"] = device.max_sm_clock

        values["nvlinks"] = self._nvlinks(handle, unsupported, errors)

        action = read("recovery_action", lambda: self._recovery_action(handle))
        if action is not None:
            values["recovery_action_code"] = action
            values["recovery_action"] = decode_recovery_action(action)

    def _clock_event_mask(self, handle: Any) -> int:
        nvml = self._nvml
        current = getattr(nvml, "nvmlDeviceGetCurrentClocksEventReasons", None)
        if current is not None:
            try:
                return int(current(handle))
            except Exception as exc:
                # A driver older than the binding lacks the new symbol; the old name reads the same mask.
                if getattr(exc, "value", None) != ERROR_FUNCTION_NOT_FOUND:
                    raise
        return int(nvml.nvmlDeviceGetCurrentClocksThrottleReasons(handle))

    def _recovery_action(self, handle: Any) -> int:
        """NVML_FI_DEV_GET_GPU_RECOVERY_ACTION through nvmlDeviceGetFieldValues.

        The call succeeds as a whole and reports each field's own return code, so a driver that does not
        know the field answers NotSupported (or InvalidArgument) in the value, not as an exception.
        """
        nvml = self._nvml
        field_id = getattr(nvml, "NVML_FI_DEV_GET_GPU_RECOVERY_ACTION", FI_DEV_GET_GPU_RECOVERY_ACTION)
        get_values = getattr(nvml, "nvmlDeviceGetFieldValues", None)
        if get_values is None:  # a binding older than field values: the same as a driver without them
            raise _FieldError(ERROR_FUNCTION_NOT_FOUND)
        value = get_values(handle, [field_id])[0]
        code = int(value.nvmlReturn)
        if code == ERROR_INVALID_ARGUMENT:
            code = ERROR_NOT_SUPPORTED  # a driver older than the field id rejects the id itself
        if code:
            error = getattr(nvml, "NVMLError", None)
            raise error(code) if error is not None else _FieldError(code)
        member = VALUE_TYPE_MEMBERS.get(int(value.valueType), "uiVal")
        return int(getattr(value.value, member))

    def _nvlinks(
        self, handle: Any, unsupported: list[str], errors: dict[str, str]
    ) -> list[NvLinkState] | None:
        links: list[NvLinkState] = []
        for link in range(NVLINK_LINKS):
            try:
                state = self._nvml.nvmlDeviceGetNvLinkState(handle, link)
            except Exception as exc:
                code = getattr(exc, "value", None)
                if code == ERROR_GPU_IS_LOST:
                    raise _GpuLost("nvlinks", _error_text(exc)) from exc
                if code in (ERROR_NOT_SUPPORTED, ERROR_INVALID_ARGUMENT, ERROR_FUNCTION_NOT_FOUND):
                    if not links:
                        unsupported.append("nvlinks")
                else:
                    errors["nvlinks"] = f"link {link}: {_error_text(exc)}"
                break
            links.append(NvLinkState(link=link, active=bool(state)))
        return links or None

    # helpers ---------------------------------------------------------------------------------

    def _attach(self, device: _Device) -> None:
        """Get the device's handle, its static identity, and subscribe it to XID events."""
        nvml = self._nvml
        device.unsupported = []
        device.errors = {}
        device.attach_lost = False
        try:
            handle = nvml.nvmlDeviceGetHandleByIndex(device.index)
        except Exception as exc:
            device.attach_lost = getattr(exc, "value", None) == ERROR_GPU_IS_LOST
            device.errors["handle"] = _error_text(exc)
            return
        device.handle = handle
        self._by_handle[_handle_key(handle)] = device.index
        # UUID and name are static: remembered here so a GPU that later falls off the bus is still
        # named. A failure here is retried (and reported) by the next report.
        for attr, fn in (("uuid", "nvmlDeviceGetUUID"), ("name", "nvmlDeviceGetName")):
            with contextlib.suppress(Exception):
                setattr(device, attr, _text(getattr(nvml, fn)(handle)))
        self._register_events(device)

    def _register_events(self, device: _Device) -> None:
        if self._event_set is None:
            if self._event_set_problem is not None:
                kind, text = self._event_set_problem
                if kind == "unsupported":
                    device.unsupported.append("xid_events")
                else:
                    device.errors["xid_events"] = text
            return
        nvml = self._nvml
        xid = getattr(nvml, "nvmlEventTypeXidCriticalError", EVENT_TYPE_XID_CRITICAL_ERROR)
        try:
            supported = int(nvml.nvmlDeviceGetSupportedEventTypes(device.handle))
            if not supported & xid:
                device.unsupported.append("xid_events")
                return
            nvml.nvmlDeviceRegisterEvents(device.handle, xid, self._event_set)
        except Exception as exc:
            if self._is_unsupported(exc):
                device.unsupported.append("xid_events")
            else:
                device.errors["xid_events"] = f"registering for XID events failed: {_error_text(exc)}"

    def _query(
        self, field: str, query: Callable[[], Any], unsupported: list[str], errors: dict[str, str]
    ) -> Any:
        """Run one NVML read; record NotSupported or an error under `field`; GpuIsLost aborts the GPU."""
        try:
            return query()
        except Exception as exc:
            if getattr(exc, "value", None) == ERROR_GPU_IS_LOST:
                raise _GpuLost(field, _error_text(exc)) from exc
            if self._is_unsupported(exc):
                unsupported.append(field)
            else:
                errors[field] = _error_text(exc)
            return None

    def _system_text(self, fn: str) -> str | None:
        try:
            return _text(getattr(self._nvml, fn)())
        except Exception as exc:
            _log().warning("nvml.system_query_failed", node=self.node, query=fn, error=_error_text(exc))
            return None

    @staticmethod
    def _is_unsupported(exc: BaseException) -> bool:
        # FunctionNotFound: the installed driver predates the call, which for a report is the same thing.
        return getattr(exc, "value", None) in (ERROR_NOT_SUPPORTED, ERROR_FUNCTION_NOT_FOUND)


def _mig_id(data: Any, field: str) -> int | None:
    value = getattr(data, field, None)
    if value is None or int(value) == NOT_A_MIG_INSTANCE:
        return None
    return int(value)


def collect_once(
    node: str, nvml: ModuleType | Any | None = None, pod_resources: PodResourcesClient | None = None
) -> GpuHealthReport:
    """Start a collector, take one report, close it (events from before this call are not seen)."""
    collector = NvmlCollector(node, nvml=nvml, pod_resources=pod_resources)
    try:
        collector.start()
        return collector.report()
    finally:
        collector.close()
