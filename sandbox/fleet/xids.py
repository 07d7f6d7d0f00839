"""What an XID does to the sandbox's world: whether the GPU is unhealthy until it is reset, whether the job
on it dies, and how severe its alert is, from the immediate resolution bucket NVIDIA's Xid catalogue gives
the code (`supply_agent.policy.xids`), and for XID 154 from the GPU recovery action it announces.

It exists so that the world the agent is tested against behaves as NVIDIA says a GPU does, not as the
authors of its playbooks remembered: a RESTART_APP XID kills the job and leaves the GPU in service, an
IGNORE XID breaks nothing, a reset- or reboot-class XID takes the GPU out of service and kills its job.
A handful of codes the sandbox modelled before the catalogue keep their behaviour where the bucket alone
says less than the sandbox knows (`OVERRIDES`, each with its reason). Pure: a function of the code and the
recovery action, so alert rendering stays a pure function of the fault records.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from supply_agent.policy.xids import bucket_of
from tools.nvml.codes import GPU_RECOVERY_ACTION_VALUES, GPU_RECOVERY_ACTIONS

XID_RECOVERY_ACTION_CHANGED = 154
# What an XID 154 whose fault names no recovery action (and whose detail text names none) is taken to
# announce: the change drivers log most ("from 0x0 (None) to 0x1 (GPU Reset Required)"), and the safe guess.
DEFAULT_RECOVERY_ACTION = "reset"
RECOVERY_ACTIONS: tuple[str, ...] = tuple(GPU_RECOVERY_ACTION_VALUES)
# An alert's severity label (the alerts package, which uses this module, spells the same three).
Severity = Literal["critical", "warning", "info"]


@dataclass(frozen=True, slots=True)
class XidEffect:
    """What one XID does: the GPU out of service until reset, the job on it killed, the alert's severity."""

    gpu_unhealthy: bool
    job_dies: bool
    severity: Severity
    why: str


_APPLICATION = XidEffect(False, True, "warning", "RESTART_APP: the application dies, the GPU is fine")
_NOTHING = XidEffect(False, False, "info", "IGNORE: no action needed, nothing breaks")
_HARDWARE = XidEffect(True, True, "critical", "the GPU needs a reset, a reboot or service: out until reset")
_UNKNOWN = XidEffect(
    True, True, "critical", "no bucket in the catalogue: treated as a GPU fault until it is reset"
)

# The catalogue's immediate buckets. Every bucket but RESTART_APP and IGNORE asks for something to be done
# to the GPU, its host or its links before it is trusted again (reset, reboot, support, a mechanical check,
# an NVLink workflow, a software update, a UVM check), so the GPU leaves service until a reset clears it.
_BY_BUCKET: dict[str | None, XidEffect] = {"RESTART_APP": _APPLICATION, "IGNORE": _NOTHING}

# Codes whose effect the bucket alone does not capture; each keeps the behaviour the sandbox had for it.
OVERRIDES: dict[int, XidEffect] = {
    # IGNORE for the operator, but its trigger is an application that hit a fault and had to terminate
    # (NVIDIA's device plugin counts it an application error): the job dies, the GPU is fine.
    43: XidEffect(False, True, "warning", "IGNORE, but the application was stopped: the job dies"),
    # IGNORE for the operator (a firmware watchdog on the context-switch engine, FECS), but the channel it
    # timed out on is torn down with the context running on it: that process dies, the GPU is fine
    # (NVIDIA's Xid catalogue: ROBUST_CHANNEL_FECS_ERR_WATCHDOG_TIMEOUT, a robust-channel error).
    38: XidEffect(
        False, True, "warning", "IGNORE, but the context on the timed-out channel ends: the job dies"
    ),
    # WORKFLOW_XID_45: the driver's cleanup of a job after an earlier error; the job ends, the GPU is fine
    # (a companion XID, if any, says more about the GPU).
    45: XidEffect(False, True, "warning", "WORKFLOW_XID_45: preemptive cleanup of the job"),
    # WORKFLOW_XID_48: solo it is RESET_GPU (with 63/64, drain and reset): an uncorrectable ECC error.
    48: XidEffect(True, True, "critical", "WORKFLOW_XID_48: uncorrectable ECC, the GPU needs a reset"),
    # RESTART_APP restarts the application the contained error hit, but the error leaves a row remap that
    # takes effect only at a GPU reset (and the driver raises a recovery action for it): the GPU takes no
    # new work until it is reset when drained, as NVIDIA's device plugin and the xid-ecc-contained playbook
    # expect (GpuHealthy=False). The alert stays a warning: nothing else on the GPU is affected.
    94: XidEffect(True, True, "warning", "contained ECC error: the job dies, the GPU waits for a reset"),
}

# XID 154 follows the recovery action it announces (NVIDIA, "Error Recovery and Response Flags").
_BY_RECOVERY_ACTION: dict[str, XidEffect] = {
    "none": XidEffect(False, False, "info", "recovery action none: the GPU is usable at once"),
    "reset": XidEffect(True, True, "critical", "recovery action reset: end every process, reset the GPU"),
    "node_reboot": XidEffect(
        True, True, "critical", "recovery action node reboot: the OS may be inconsistent"
    ),
    "drain_p2p": XidEffect(
        True, True, "critical", "recovery action drain P2P: processes doing peer-to-peer traffic are ended"
    ),
    "drain_and_reset": XidEffect(
        True, False, "warning", "recovery action drain and reset: no new work, reset once drained"
    ),
    "recover_imex_domain": XidEffect(True, True, "critical", "recovery action: recover the IMEX domain"),
    "bus_reset": XidEffect(True, True, "critical", "recovery action: reset the GPU's PCIe bus"),
    "system_reboot": XidEffect(True, True, "critical", "recovery action: reboot the system"),
}


def effect(code: int, recovery_action: str | None = None) -> XidEffect:
    """What XID ``code`` does to its GPU, its job and its alert; ``recovery_action`` matters for XID 154
    only (None there means `DEFAULT_RECOVERY_ACTION`)."""
    if code == XID_RECOVERY_ACTION_CHANGED:
        return _BY_RECOVERY_ACTION.get(recovery_action or DEFAULT_RECOVERY_ACTION, _UNKNOWN)
    if code in OVERRIDES:
        return OVERRIDES[code]
    bucket = bucket_of(code)
    if bucket is None:
        return _UNKNOWN
    return _BY_BUCKET.get(bucket, _HARDWARE)


def severity(code: int, recovery_action: str | None = None) -> Severity:
    """The severity of the alert XID ``code`` raises (see `effect`)."""
    return effect(code, recovery_action).severity


_HEX_OR_INT = re.compile(r"\bto\s+(0x[0-9a-f]+|\d+)\b")
# Names in a driver's message ("... to 0x1 (GPU Reset Required)") or a hand-written one, most specific first.
_NAMES: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern), name)
    for pattern, name in (
        (r"drain[\s_-]*(p2p[\s_-]*)?and[\s_-]*reset", "drain_and_reset"),
        (r"drain[\s_-]*p2p", "drain_p2p"),
        (r"imex", "recover_imex_domain"),
        (r"bus[\s_-]*reset", "bus_reset"),
        (r"system[\s_-]*reboot", "system_reboot"),
        (r"reboot", "node_reboot"),
        (r"reset", "reset"),
        (r"\bnone\b", "none"),
    )
)


def recovery_action_in(text: str) -> str | None:
    """The recovery action a free-text XID 154 detail names: the value after "to" in the driver's "GPU
    recovery action changed from 0x0 (None) to 0x1 (GPU Reset Required)", else a name after the last
    "to" (or anywhere, when there is none); None when it names none."""
    lowered = text.lower()
    if match := _HEX_OR_INT.search(lowered):
        return GPU_RECOVERY_ACTIONS.get(int(match.group(1), 0))
    tail = lowered.rsplit(" to ", 1)[-1]
    return next((name for pattern, name in _NAMES if pattern.search(tail)), None)


def recovery_action_name(value: str | int) -> str:
    """A recovery action given by name or NVML value, as its name; ValueError naming the known ones."""
    if isinstance(value, int) and not isinstance(value, bool):
        if value in GPU_RECOVERY_ACTIONS:
            return GPU_RECOVERY_ACTIONS[value]
    elif isinstance(value, str) and value.strip().lower() in GPU_RECOVERY_ACTION_VALUES:
        return value.strip().lower()
    known = ", ".join(f"{name} ({number})" for number, name in GPU_RECOVERY_ACTIONS.items())
    raise ValueError(f"unknown GPU recovery action {value!r}; known: {known}")
