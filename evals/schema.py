"""The incident file: a past incident as data the runner can replay against a fresh sandbox fleet.

One YAML file per incident in ``evals/incidents/``. It says where the incident comes from, the world it
starts in (a fleet spec, or a snapshot), what happens on the simulated clock (faults, logs, events,
alert deliveries, a human taking the incident in PagerDuty), how the humans answer approvals, and what
a good on-call engineer would have done. Names of nodes and pods are bound once (``bind``) by their
place in the deterministic fleet and used as ``$name`` everywhere else.

``load_incident`` and ``load_corpus`` raise :class:`IncidentFileError` naming the file and the field.

Long because the file format is one schema: every step kind, binding and expectation validates itself
here, with the error that names what is wrong, and splitting it would scatter one contract over modules.
"""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from sandbox.fleet.faults import COMPONENT_FAULTS, EXPANSIONS, GPU_FAULTS, NODE_FAULTS, POD_FAULTS, FaultKind
from tools.catalogue import TOOLS

Outcome = Literal["mitigated", "escalated", "no_action"]
Answer = Literal["approve", "reject", "none"]
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
# A reference to a bound name: $name or ${name}.
REF = re.compile(r"\$\{?([a-z][a-z0-9_]*)\}?")


class IncidentFileError(ValueError):
    """A bad incident file: the message names the file and the field."""


_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_COMPOUND = re.compile(r"(?:\d+(?:\.\d+)?(?:ms|h|m|s))+")


def parse_duration(value: Any) -> timedelta:
    """``90``, ``"90s"``, ``"2m"``, ``"1.5h"``, ``"250ms"``, or parts added up (``"5m15s"``,
    ``"1h30m"``, as Go and Prometheus write them): a non-negative duration."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        text = str(value).strip()
        m = _DURATION.match(text)
        units = {"ms": 0.001, "s": 1, None: 1, "m": 60, "h": 3600}
        if m is not None:
            seconds = float(m.group(1)) * units[m.group(2)]
        elif _COMPOUND.fullmatch(text):
            seconds = sum(float(n) * units[u] for n, u in _PART.findall(text))
        else:
            raise ValueError(f"{value!r} is not a duration (use 30s, 5m, 1h, 5m15s or seconds)")
    if seconds < 0:
        raise ValueError(f"{value!r}: a duration is not negative")
    return timedelta(seconds=seconds)


Duration = Annotated[timedelta, Field(description="30s, 5m, 1h, or seconds")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Source(_Strict):
    """Where the incident comes from: a public postmortem, NVIDIA's XID guidance, an on-call pattern."""

    kind: Literal["postmortem", "nvidia-xid-guide", "on-call-pattern", "vendor-doc"]
    ref: str = Field(min_length=3, description="A URL or a document and section.")
    what_happened: str = Field(min_length=10, description="What happened in the real incident.")


class JobSetWorld(_Strict):
    """A training JobSet the fleet starts with: one pod on each of ``nodes`` whole nodes of a pool, made
    before the other tenants' workloads."""

    name: str = Field(pattern=r"^[a-z]([-a-z0-9]*[a-z0-9])?$", max_length=40)
    customer: int = Field(0, ge=0, description="Which of the fleet's customers runs it (their index).")
    pool: int = Field(0, ge=0)
    nodes: int = Field(ge=1, le=512)
    checkpoint_every: Duration = Field(timedelta(minutes=30), description="Its checkpoint cadence.")
    since_checkpoint: Duration = Field(
        timedelta(0), description="How long before the incident starts it last checkpointed."
    )
    max_restarts: int = Field(3, ge=0, description="spec.failurePolicy.maxRestarts")
    tier: str | None = Field(
        None, description="Its pods select this tenant tier, as Kueue writes a ResourceFlavor's nodeLabels."
    )

    @field_validator("checkpoint_every", "since_checkpoint", mode="before")
    @classmethod
    def _duration(cls, v: Any) -> timedelta:
        return parse_duration(v)

    @model_validator(mode="after")
    def _within(self) -> JobSetWorld:
        every = self.checkpoint_every.total_seconds()
        if every and self.since_checkpoint.total_seconds() >= every:
            raise ValueError(
                f"since_checkpoint ({self.since_checkpoint}) is not less than checkpoint_every ({self.checkpoint_every}):"
                " the job would have checkpointed since"
            )
        return self

    def spec(self) -> dict[str, Any]:
        """The fleet's ``JobSetSpec`` fields."""
        return {
            "name": self.name,
            "customer": self.customer,
            "pool": self.pool,
            "nodes": self.nodes,
            "checkpoint_every_s": int(self.checkpoint_every.total_seconds()),
            "since_checkpoint_s": int(self.since_checkpoint.total_seconds()),
            "max_restarts": self.max_restarts,
            "tier": self.tier,
        }


class LwsWorld(_Strict):
    """A serving LeaderWorkerSet the fleet starts with: ``groups`` groups of ``size`` pods on whole nodes
    of a pool, made after the JobSets."""

    name: str = Field(pattern=r"^[a-z]([-a-z0-9]*[a-z0-9])?$", max_length=40)
    customer: int = Field(0, ge=0, description="Which of the fleet's customers runs it (their index).")
    pool: int = Field(0, ge=0)
    groups: int = Field(1, ge=1, le=256)
    size: int = Field(2, ge=1, le=64)


class FleetWorld(_Strict):
    nodes: int = Field(24, ge=1, le=2000)
    pools: int = Field(2, ge=1, le=16)
    gpus_per_node: int = Field(8, ge=1, le=16)
    seed: int = 7
    fill: float = Field(0.7, ge=0.0, le=1.0)
    pdb_fraction: float = Field(0.5, ge=0.0, le=1.0)
    customers: int | None = Field(None, ge=1)
    reserved_nodes: int | None = Field(
        None, ge=0, description="Only the first pool's first N nodes are reserved capacity (None: all of it)."
    )
    dcgm_exporter: bool = Field(
        False,
        description="The GPU Operator's dcgm-exporter DaemonSet on every node (gpu-operator/nvidia-dcgm-exporter).",
    )
    jobsets: list[JobSetWorld] = Field(default_factory=list)
    leaderworkersets: list[LwsWorld] = Field(default_factory=list)

    @model_validator(mode="after")
    def _names(self) -> FleetWorld:
        for what, names in (
            ("jobsets", [j.name for j in self.jobsets]),
            ("leaderworkersets", [w.name for w in self.leaderworkersets]),
        ):
            if len(set(names)) != len(names):
                raise ValueError(f"{what}: names repeat ({', '.join(sorted(names))})")
        return self

    def spec(self) -> dict[str, Any]:
        """The fleet's ``FleetSpec`` fields."""
        return {**self.model_dump(exclude={"jobsets"}), "workloads": [j.spec() for j in self.jobsets]}


class NodeRef(_Strict):
    pool: int = Field(0, ge=0)
    index: int = Field(0, description="The node's place in its pool (negative: from the end).")
    idle: bool = Field(
        False, description="Count only nodes no tenant pod runs on: `index` is the place among those."
    )


class NodesRef(_Strict):
    pool: int = Field(0, ge=0)
    count: int | None = Field(None, ge=1)
    fraction: float | None = Field(None, gt=0, le=1)
    start: int = Field(0, ge=0)
    step: int = Field(1, ge=1, description="Every step-th node from start (a rollout wave spread out).")

    @model_validator(mode="after")
    def _one(self) -> NodesRef:
        if (self.count is None) == (self.fraction is None):
            raise ValueError("give exactly one of count and fraction")
        return self


def _yaml_on_key(data: Any) -> Any:
    """YAML 1.1 reads an unquoted ``on:`` key as ``true``: take it as the ``on`` it was written as."""
    if isinstance(data, dict) and True in data and "on" not in data:
        data = {("on" if k is True else k): v for k, v in data.items()}
    return data


class PodRef(_Strict):
    on: str | None = Field(None, description="A bound node name ($name): a tenant pod running there.")
    index: int = Field(0, ge=0, description="Which of the matching tenant pods, in name order.")
    replicas_min: int = Field(1, ge=1, description="Only pods of a deployment with at least this many.")

    @model_validator(mode="before")
    @classmethod
    def _yaml_on(cls, data: Any) -> Any:
        return _yaml_on_key(data)


class GpuPodRef(_Strict):
    """The tenant pod the scheduler put on one GPU of a bound node."""

    on: str = Field(description="A bound node name ($name).")
    gpu: int = Field(ge=0, description="The GPU index on that node.")

    @model_validator(mode="before")
    @classmethod
    def _yaml_on(cls, data: Any) -> Any:
        return _yaml_on_key(data)


class JobSetNodeRef(_Strict):
    """A node one of the JobSet's pods runs on, by the pod's job index."""

    jobset: str = Field(description="The name of a JobSet in world.fleet.jobsets.")
    index: int = Field(0, ge=0, description="The job index (jobset.sigs.k8s.io/job-index) of its pod.")


class LwsNodeRef(_Strict):
    """A node one of the LeaderWorkerSet's pods runs on, by its group and worker index (0: the leader)."""

    lws: str = Field(description="The name of a LeaderWorkerSet in world.fleet.leaderworkersets.")
    group: int = Field(0, ge=0, description="leaderworkerset.sigs.k8s.io/group-index")
    worker: int = Field(0, ge=0, description="leaderworkerset.sigs.k8s.io/worker-index (0: the leader)")


class DaemonPodRef(_Strict):
    """The name of a DaemonSet's pod on a bound node (what that pod's hostname is, off the host network)."""

    daemonset: str = Field(
        description="namespace/name of the DaemonSet, e.g. gpu-operator/nvidia-dcgm-exporter."
    )
    on: str = Field(description="A bound node name ($name).")

    @model_validator(mode="before")
    @classmethod
    def _yaml_on(cls, data: Any) -> Any:
        return _yaml_on_key(data)


class ComponentRef(_Strict):
    """A rack or a leaf switch of the generated fleet, by its place among those of its pool (name order)."""

    pool: int = Field(0, ge=0)
    index: int = Field(0, description="The component's place in its pool (negative: from the end).")


BINDING_KINDS = (
    "node",
    "nodes",
    "jobset_node",
    "lws_node",
    "tenant_pod",
    "gpu_pod",
    "daemon_pod",
    "rack",
    "switch",
)


class Binding(_Strict):
    """One name bound to a node, a list of nodes, a tenant pod (any, or the one on a GPU), or a rack or a
    leaf switch (its name) of the generated fleet."""

    node: NodeRef | None = None
    nodes: NodesRef | None = None
    jobset_node: JobSetNodeRef | None = None
    lws_node: LwsNodeRef | None = None
    tenant_pod: PodRef | None = None
    gpu_pod: GpuPodRef | None = None
    daemon_pod: DaemonPodRef | None = None
    rack: ComponentRef | None = None
    switch: ComponentRef | None = None

    @model_validator(mode="after")
    def _one(self) -> Binding:
        given = [k for k in BINDING_KINDS if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(
                f"a binding is exactly one of {', '.join(BINDING_KINDS)}"
                + (f" (this one: {', '.join(given)})" if given else "")
            )
        return self

    @property
    def kind(self) -> str:
        """What the name stands for: node, nodes, pod (namespace/name), daemon_pod (a pod's name), rack or
        switch."""
        given = next(k for k in BINDING_KINDS if getattr(self, k) is not None)
        return "pod" if given in ("tenant_pod", "gpu_pod") else "node" if given.endswith("_node") else given


class PdbSetup(_Strict):
    """A PodDisruptionBudget added before the incident: one that blocks every eviction of a deployment."""

    pod: str = Field(description="A bound tenant pod ($name); the PDB covers its deployment.")
    min_available: Literal["all"] | int = "all"


class World(_Strict):
    fleet: FleetWorld | None = None
    snapshot: str | None = Field(None, description="A fleet snapshot file, relative to the incident.")
    bind: dict[str, Binding] = Field(default_factory=dict)
    pdbs: list[PdbSetup] = Field(default_factory=list)

    @model_validator(mode="after")
    def _one(self) -> World:
        if (self.fleet is None) == (self.snapshot is None):
            raise ValueError("give exactly one of fleet and snapshot")
        for name in self.bind:
            if not _NAME.match(name):
                raise ValueError(f"bind: {name!r} is not a name (lower case, digits, _)")
        return self


_COMPONENT_TARGETS = ("rack", "switch", "nodes")


class FaultStep(_Strict):
    """One fault. A node or GPU fault names a node (or a bound list: the same fault on each), a pod fault
    a pod; a component fault (rack-cooling, rack-power, switch-down, driver-rollout) names its nodes by a
    rack, a leaf switch or a bound node list, as its kind allows, and expands in the fleet into the per-node
    faults a real failure of that component shows."""

    kind: FaultKind
    node: str | None = None
    nodes: str | None = Field(
        None, description="A bound list of nodes: the same fault on each (a component fault: its nodes)."
    )
    rack: str | None = Field(None, description="A bound rack ($name): rack-cooling, rack-power.")
    switch: str | None = Field(None, description="A bound leaf switch ($name): switch-down.")
    gpu: int | None = Field(None, ge=0)
    code: int | None = Field(None, ge=1, le=1000)
    driver: str | None = Field(
        None,
        min_length=1,
        description="driver-rollout: the driver version the nodes take (default 560.35.03).",
    )
    pod: str | None = None
    detail: str = ""

    @model_validator(mode="after")
    def _targets(self) -> FaultStep:
        kind = self.kind.value
        if self.kind in COMPONENT_FAULTS:
            allowed = EXPANSIONS[self.kind].targets
            given = [t for t in _COMPONENT_TARGETS if getattr(self, t) is not None]
            if len(given) != 1 or given[0] not in allowed:
                raise ValueError(
                    f"fault {kind}: give exactly one of {' and '.join(allowed)}"
                    + (f" (this one: {', '.join(given)})" if given else " (none given)")
                )
            wrong = [f for f in ("node", "gpu", "pod") if getattr(self, f) is not None]
            if wrong:
                raise ValueError(f"fault {kind} covers whole nodes: no {', '.join(wrong)}")
            if self.kind != FaultKind.DRIVER_ROLLOUT and (self.code is not None or self.driver is not None):
                raise ValueError(f"fault {kind}: code and driver belong to driver-rollout only")
            return self
        extra = [f for f in ("rack", "switch", "driver") if getattr(self, f) is not None]
        if extra:
            raise ValueError(
                f"fault {kind}: {', '.join(extra)} only with "
                f"{', '.join(sorted(k.value for k in COMPONENT_FAULTS))}"
            )
        if self.kind in NODE_FAULTS and (self.node is None) == (self.nodes is None):
            raise ValueError(f"fault {kind}: give exactly one of node and nodes")
        if self.kind in POD_FAULTS and self.pod is None:
            raise ValueError(f"fault {kind}: needs a pod")
        if self.kind == FaultKind.XID and self.code is None:
            raise ValueError("fault xid: needs a code")
        if self.kind in GPU_FAULTS and self.gpu is None:
            raise ValueError(f"fault {kind}: needs a gpu")
        return self


class LogStep(_Strict):
    pod: str
    lines: list[str] = Field(min_length=1)


class EventStep(_Strict):
    """A Kubernetes Event on a node or a pod (its message is untrusted text the agent may read)."""

    node: str | None = None
    pod: str | None = None
    reason: str = Field(min_length=1)
    message: str = Field(min_length=1)
    type: Literal["Normal", "Warning"] = "Warning"

    @model_validator(mode="after")
    def _one(self) -> EventStep:
        if (self.node is None) == (self.pod is None):
            raise ValueError("an event is on exactly one of node and pod")
        return self


class ExtraAlert(_Strict):
    """An alert that does not come from the fleet's rules (a stale or a mistaken one: noise)."""

    labels: dict[str, str]
    annotations: dict[str, str] = Field(default_factory=dict)
    status: Literal["firing", "resolved"] = "firing"

    @field_validator("labels")
    @classmethod
    def _name(cls, v: dict[str, str]) -> dict[str, str]:
        if not v.get("alertname"):
            raise ValueError("an extra alert needs labels.alertname")
        return v


class Reshape(_Strict):
    """The fleet's alert as another rule set pages it: the same series under that set's alert name and
    labels (awesome-prometheus-alerts' KubernetesPodCrashLooping for KubePodCrashLooping, a stock
    dcgm-exporter rule's GPUXIDError without the code as a label)."""

    match: str = Field("*", description="The fleet's alerts this applies to (a glob over alertname).")
    alertname: str | None = Field(None, min_length=1, description="The alert's name in the other rule set.")
    drop: list[str] = Field(default_factory=list, description="Labels the other rule set's series lack.")
    labels: dict[str, str] = Field(default_factory=dict, description="Labels it adds ($names bound).")
    annotations: dict[str, str] | None = Field(None, description="Its annotations, in place of the fleet's.")

    @field_validator("drop")
    @classmethod
    def _keeps_its_name(cls, v: list[str]) -> list[str]:
        if "alertname" in v:
            raise ValueError("an alert keeps a name: rename it with alertname, do not drop it")
        return v


class DeliverStep(_Strict):
    """Deliver what Alertmanager would POST now (the fleet's alert rules over its current state)."""

    repeat: int = Field(1, ge=1, le=500, description="Deliver the same bodies this many times.")
    only: str | None = Field(None, description="Only alerts with this alertname (a glob).")
    annotate: dict[str, str] = Field(
        default_factory=dict, description="Annotations added to each alert (untrusted alert text)."
    )
    status: Literal["firing", "resolved", "as-is"] = "as-is"
    extra: list[ExtraAlert] = Field(
        default_factory=list, description="Alerts the fleet's rules do not raise."
    )
    reshape: list[Reshape] = Field(
        default_factory=list, description="The fleet's alerts as another rule set names and labels them."
    )
    via: Literal["alertmanager", "pagerduty"] = Field(
        "alertmanager",
        description="How the page arrives: Alertmanager's webhook, or PagerDuty's V3 webhook (the agent "
        "reads the incident's alerts from PagerDuty's REST API).",
    )
    details: Literal["flat", "alertmanager"] = Field(
        "flat",
        description="With via pagerduty: the alerts' custom_details one label each (flat), or as "
        "Alertmanager's PagerDuty receiver sends them with no details configured (its firing text).",
    )

    @model_validator(mode="after")
    def _via(self) -> DeliverStep:
        if self.via == "pagerduty" and (
            self.extra or self.reshape or self.annotate or self.status != "as-is"
        ):
            raise ValueError(
                "via pagerduty: PagerDuty pages the fleet's own alerts as they are "
                "(no extra, reshape, annotate or status)"
            )
        if self.via != "pagerduty" and self.details != "flat":
            raise ValueError("details: only with via pagerduty")
        return self


HumanAction = Literal["acknowledge", "resolve", "uncordon", "reset_gpu", "reboot", "replace_node"]
# What each action needs: PagerDuty actions name an incident (default the first), node actions a node.
_INCIDENT_ACTIONS = ("acknowledge", "resolve")
_NODE_ACTIONS = ("uncordon", "reset_gpu", "reboot", "replace_node")


class HumanStep(_Strict):
    """A human on call does something outside the agent: takes an incident in PagerDuty (``acknowledge``,
    ``resolve``: the agent makes no more writes on it), or works on a node as an SRE or a field engineer
    would: ``uncordon`` it (the Kubernetes API), ``reset_gpu`` one GPU (its faults clear and it reports
    healthy), ``reboot`` it or ``replace_node`` (every fault on it clears)."""

    action: HumanAction = "acknowledge"
    by: str = "oncall-bob"
    incident: int | None = Field(
        None, ge=0, description="acknowledge, resolve: which incident, in the order opened (default 0)."
    )
    node: str | None = Field(None, description="Node actions: a bound node or node list ($name).")
    gpu: int | None = Field(None, ge=0, description="reset_gpu: the GPU index on the node.")

    @model_validator(mode="after")
    def _fields(self) -> HumanStep:
        a = self.action
        if a in _INCIDENT_ACTIONS:
            extra = [f for f in ("node", "gpu") if getattr(self, f) is not None]
            if extra:
                raise ValueError(f"human {a}: takes an incident, not {' or '.join(extra)}")
            return self
        if self.incident is not None:
            raise ValueError(
                f"human {a}: works on a node, not an incident (incident only with acknowledge, resolve)"
            )
        if self.node is None:
            raise ValueError(f"human {a}: needs a node ($name)")
        if a == "reset_gpu" and self.gpu is None:
            raise ValueError("human reset_gpu: needs a gpu (the index of the GPU reset on the node)")
        if a != "reset_gpu" and self.gpu is not None:
            raise ValueError(f"human {a}: covers the whole node, no gpu (reset_gpu resets one GPU)")
        return self

    @property
    def incident_index(self) -> int:
        return self.incident or 0


class TimelineStep(_Strict):
    at: Duration = Field(description="Simulated time since the start of the incident.")
    fault: FaultStep | None = None
    clear: str | None = Field(
        None,
        description="Clear the faults on a node, a node list, a rack or a leaf switch ($name), or 'all'.",
    )
    log: LogStep | None = None
    event: EventStep | None = None
    alerts: DeliverStep | None = None
    human: HumanStep | None = None
    note: str = ""

    @field_validator("at", mode="before")
    @classmethod
    def _at(cls, v: Any) -> timedelta:
        return parse_duration(v)

    @model_validator(mode="after")
    def _one(self) -> TimelineStep:
        given = [
            k for k in ("fault", "clear", "log", "event", "alerts", "human") if getattr(self, k) is not None
        ]
        if len(given) != 1:
            raise ValueError(
                "each timeline step does exactly one of fault, clear, log, event, alerts, human"
                + (f" (this one: {', '.join(given)})" if given else "")
            )
        return self


class ApprovalRule(_Strict):
    """How the humans answer an approval for a matching action (the first rule that matches)."""

    tool: str = Field("*", description="A glob over the tool name, e.g. billing.*")
    target: str | None = Field(
        None,
        description="A glob over the action's target (node, pod, namespace, customer; a bound name such as "
        "$bad_b): the humans answer about this one, not every action of the tool.",
    )
    answer: Answer
    by: str = "oncall-alice"
    after: Duration = Field(timedelta(minutes=2), description="How long the human takes to answer.")

    @field_validator("after", mode="before")
    @classmethod
    def _after(cls, v: Any) -> timedelta:
        return parse_duration(v)


class ActionPattern(_Strict):
    """Matches executed actions: a glob over the tool, and over a target (node, pod, namespace, customer)."""

    tool: str
    target: str | None = None

    @field_validator("tool")
    @classmethod
    def _tool(cls, v: str) -> str:
        if not any(_glob(v, t) for t in TOOLS):
            raise ValueError(f"{v!r} matches no tool in the catalogue")
        return v


SuspectedKind = Literal["rack", "switch", "driver", "pool"]


class Suspected(_Strict):
    """The shared component the first incident must name as its suspected cause: a rack, a leaf switch
    (each a bound name, ``$r``, or its literal name), a driver version (``560.35.03``) or a pool
    (its name, ``east-h100``)."""

    kind: SuspectedKind
    name: str = Field(min_length=1, description="A bound rack or switch ($name), or the literal name.")


class Limits(_Strict):
    actions: int = Field(20, ge=0, description="Most writes the agent should need.")
    sim_minutes: float = Field(120, gt=0, description="Simulated minutes to reach the outcome.")
    gpu_minutes_lost: float | None = Field(
        None,
        ge=0,
        description="Most GPU-minutes of customer work the fleet's JobSets may lose (its truth): what a "
        "careful human loses, with the room the file states.",
    )


class Expect(_Strict):
    outcome: Outcome
    acceptable: list[Outcome] = Field(
        default_factory=list,
        description="Other outcomes that are right too (the source allows either); `outcome: [a, b]` "
        "says the same: the first is the outcome, the rest acceptable.",
    )
    outcomes: list[Outcome] | None = Field(
        None, description="With several incidents: each one's outcome, in the order opened."
    )
    incidents: int = Field(1, ge=0, description="How many incidents the agent should open.")
    root_cause: str = Field(min_length=1, description="The root-cause label (a playbook id, mass-failure …).")
    must: list[ActionPattern] = Field(default_factory=list)
    must_not: list[ActionPattern] = Field(default_factory=list)
    suspected: Suspected | None = Field(
        None,
        description="The component the first incident names as the suspected cause (rack, switch, driver, "
        "pool).",
    )
    limits: Limits = Field(default_factory=Limits)
    careful_gpu_minutes: float | None = Field(
        None,
        ge=0,
        description="The GPU-minutes of customer work a careful human would have lost, by the arithmetic "
        "of the incident's source (the report shows the agent's loss beside it).",
    )

    @model_validator(mode="before")
    @classmethod
    def _outcome_list(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("outcome"), list):
            first, *rest = data["outcome"] or [None]
            data = {**data, "outcome": first, "acceptable": [*rest, *data.get("acceptable", [])]}
        return data

    @model_validator(mode="after")
    def _consistent(self) -> Expect:
        if self.outcomes is not None:
            if len(self.outcomes) != self.incidents:
                raise ValueError(f"outcomes lists {len(self.outcomes)} but incidents is {self.incidents}")
            if self.outcomes and self.outcomes[0] != self.outcome:
                raise ValueError("outcomes[0] must be the outcome")
        if self.outcome == "no_action" and self.must:
            raise ValueError("no_action with actions that must happen")
        if (
            self.careful_gpu_minutes is not None
            and self.limits.gpu_minutes_lost is not None
            and self.careful_gpu_minutes > self.limits.gpu_minutes_lost
        ):
            raise ValueError(
                "careful_gpu_minutes is over limits.gpu_minutes_lost: a careful human would fail"
            )
        if self.suspected is not None and self.incidents == 0:
            raise ValueError("suspected: with no incident expected, none can name a component")
        return self


class Incident(_Strict):
    id: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{2,63}$")
    title: str = Field(min_length=5)
    incident_class: str = Field(alias="class", description="For the report's tables: usually the playbook.")
    tags: list[str] = Field(default_factory=list)
    source: Source
    world: World
    timeline: list[TimelineStep] = Field(min_length=1)
    approvals: list[ApprovalRule] = Field(default_factory=list)
    default_approval: Answer = "approve"
    expect: Expect

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="after")
    def _refs(self) -> Incident:
        """Every ``$name`` used is bound, and bound to the right kind of thing."""
        kinds = {name: b.kind for name, b in self.world.bind.items()}

        def need(where: str, value: str | None, *allowed: str) -> None:
            if value is None:
                return
            for m in REF.finditer(value):
                kind = kinds.get(m.group(1))
                if kind is None:
                    raise ValueError(f"{where}: ${m.group(1)} is not bound (world.bind)")
                if allowed and kind not in allowed:
                    raise ValueError(f"{where}: ${m.group(1)} is a {kind}, expected {' or '.join(allowed)}")

        for name, b in self.world.bind.items():
            if b.tenant_pod and b.tenant_pod.on:
                need(f"world.bind.{name}.tenant_pod.on", b.tenant_pod.on, "node")
            if b.gpu_pod:
                need(f"world.bind.{name}.gpu_pod.on", b.gpu_pod.on, "node")
            if b.daemon_pod:
                need(f"world.bind.{name}.daemon_pod.on", b.daemon_pod.on, "node")
        for i, p in enumerate(self.world.pdbs):
            need(f"world.pdbs[{i}].pod", p.pod, "pod")
        for i, s in enumerate(self.timeline):
            w = f"timeline[{i}]"
            if s.fault:
                need(f"{w}.fault.node", s.fault.node, "node")
                need(f"{w}.fault.nodes", s.fault.nodes, "nodes")
                need(f"{w}.fault.rack", s.fault.rack, "rack")
                need(f"{w}.fault.switch", s.fault.switch, "switch")
                need(f"{w}.fault.pod", s.fault.pod, "pod")
            if s.clear and s.clear != "all":
                need(f"{w}.clear", s.clear, "node", "nodes", "rack", "switch")
            if s.log:
                need(f"{w}.log.pod", s.log.pod, "pod")
            if s.alerts:
                for k, v in s.alerts.annotate.items():
                    need(f"{w}.alerts.annotate.{k}", v)
                for j, x in enumerate(s.alerts.extra):
                    for k, v in x.labels.items():
                        need(f"{w}.alerts.extra[{j}].labels.{k}", v)
                for j, r in enumerate(s.alerts.reshape):
                    for k, v in {**r.labels, **(r.annotations or {})}.items():
                        need(f"{w}.alerts.reshape[{j}].{k}", v)
            if s.event:
                need(f"{w}.event.node", s.event.node, "node")
                need(f"{w}.event.pod", s.event.pod, "pod")
            if s.human:
                need(f"{w}.human.node", s.human.node, "node", "nodes")
        for i, s in enumerate(self.timeline):
            if i and s.at < self.timeline[i - 1].at:
                raise ValueError(f"timeline[{i}]: at {s.at} is before the step before it")
        if not any(s.alerts for s in self.timeline):
            raise ValueError("timeline: no alerts step, so nothing ever reaches the agent")
        for kind, pats in (("must", self.expect.must), ("must_not", self.expect.must_not)):
            for j, pat in enumerate(pats):
                need(f"expect.{kind}[{j}].target", pat.target)
        sus = self.expect.suspected
        if sus is not None and REF.search(sus.name):
            if sus.kind == "driver":
                raise ValueError(
                    f"expect.suspected.name: a driver is named by its version (e.g. 560.35.03), not {sus.name}"
                )
            if not REF.fullmatch(sus.name.strip()):
                raise ValueError(f"expect.suspected.name: {sus.name!r} is one $name or a literal name")
            need("expect.suspected.name", sus.name, sus.kind)
        return self


def _glob(pattern: str, value: str) -> bool:
    from fnmatch import fnmatchcase

    return fnmatchcase(value, pattern)


def _where(err: dict[str, Any]) -> str:
    return ".".join(str(p) for p in err["loc"]) or "(top level)"


def load_incident(path: Path) -> Incident:
    """One incident file, or :class:`IncidentFileError` saying which file and which field."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise IncidentFileError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    except yaml.YAMLError as exc:
        raise IncidentFileError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise IncidentFileError(f"{path}: expected a mapping at the top, got {type(data).__name__}")
    try:
        incident = Incident.model_validate(data)
    except ValidationError as exc:
        lines = [f"{_where(dict(e))}: {e['msg']}" for e in exc.errors()]
        raise IncidentFileError(f"{path}: " + "; ".join(lines)) from exc
    if incident.world.snapshot and not (path.parent / incident.world.snapshot).is_file():
        raise IncidentFileError(f"{path}: world.snapshot: {incident.world.snapshot} does not exist")
    if path.stem != incident.id:
        raise IncidentFileError(f"{path}: id {incident.id!r} differs from the file name {path.stem!r}")
    return incident


def incident_files(path: Path) -> list[Path]:
    """The incident files at ``path`` (a file, or every ``*.yaml`` under a directory)."""
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise IncidentFileError(f"{path}: no such file or directory")
    return sorted(p for p in path.rglob("*.yaml") if not p.name.startswith("_"))


def load_corpus(path: Path) -> tuple[list[tuple[Path, Incident]], list[str]]:
    """Every incident under ``path`` and every error (one per bad file); ids must be unique."""
    good: list[tuple[Path, Incident]] = []
    errors: list[str] = []
    seen: dict[str, Path] = {}
    for f in incident_files(path):
        try:
            inc = load_incident(f)
        except IncidentFileError as exc:
            errors.append(str(exc))
            continue
        if inc.id in seen:
            errors.append(f"{f}: id {inc.id!r} is already used by {seen[inc.id]}")
            continue
        seen[inc.id] = f
        good.append((f, inc))
    return good, errors
