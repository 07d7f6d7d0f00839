"""The simulated GPU fleet: one object composed of the controllers that keep its world consistent.

Everything here runs on the server's event loop, one change at a time, so the controllers reconcile
synchronously after each write, as a real control plane would eventually. The agent never imports
this package: it reaches the fleet over the Kubernetes API only.
"""

from __future__ import annotations

from sandbox.fleet.world.daemonset import DaemonSetMixin
from sandbox.fleet.world.disruption import DisruptionMixin
from sandbox.fleet.world.events import EventsMixin
from sandbox.fleet.world.fault_effects import FaultEffectsMixin
from sandbox.fleet.world.generate import GenerateMixin
from sandbox.fleet.world.jobsets import JobSetsMixin
from sandbox.fleet.world.logs import LogsMixin
from sandbox.fleet.world.lws import LeaderWorkerSetsMixin
from sandbox.fleet.world.meters import MetersMixin
from sandbox.fleet.world.node_agent import NodeAgentMixin
from sandbox.fleet.world.nodes import NodesMixin
from sandbox.fleet.world.pods import PodsMixin
from sandbox.fleet.world.scheduler import SchedulerMixin
from sandbox.fleet.world.snapshot import SnapshotMixin
from sandbox.fleet.world.tick import TickMixin
from sandbox.fleet.world.truth import TruthMixin
from sandbox.fleet.world.workloads import WorkloadsMixin


class Fleet(
    GenerateMixin,
    SchedulerMixin,
    PodsMixin,
    WorkloadsMixin,
    JobSetsMixin,
    LeaderWorkerSetsMixin,
    DaemonSetMixin,
    DisruptionMixin,
    NodesMixin,
    NodeAgentMixin,
    FaultEffectsMixin,
    MetersMixin,
    EventsMixin,
    LogsMixin,
    TickMixin,
    TruthMixin,
    SnapshotMixin,
):
    """The world. Methods that change it return the stored objects; FleetError carries API failures."""
