"""Wiring: from settings and a kubeconfig to a :class:`Runtime` (reads, the gate's inputs, the guarded
executor with the write credentials, billing, the notice outbox).

When the cluster is a sandbox fleet (it answers ``/sandbox/v1/clock`` through the same API server and
credentials), the agent keeps the fleet's simulated time and reads the fleet's meters into the ledger
before billing reads, as a metering exporter would feed a real ledger. Nothing from ``sandbox.fleet``
is imported: the fleet is reached over HTTP only, exactly like a real cluster.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import yaml

from sandbox.executor.audit import AuditLog
from sandbox.executor.executor import GuardedExecutor
from sandbox.executor.runners import runners
from supply_agent.hands.runtime import IoMeter, Runtime
from supply_agent.policy import PlaybookSet, load_playbooks
from supply_agent.settings import Settings
from tools.billing import IngestResult, Ledger, MeterReading
from tools.catalogue import Clients, IngestInput
from tools.kubernetes import KubeTools
from tools.notify import Outbox

REPO_PLAYBOOKS = Path(__file__).resolve().parents[2] / "playbooks"
SANDBOX_PRICE_PER_GPU_HOUR = Decimal("2.50")


class SandboxLink:
    """The sandbox fleet's own endpoints (clock, meters, PagerDuty alert details) over the API server."""

    def __init__(self, kube: KubeTools) -> None:
        self.kube = kube

    def get(self, path: str) -> Any:
        return self.kube.get_path(f"/sandbox/v1/{path}")

    @classmethod
    def probe(cls, kube: KubeTools) -> SandboxLink | None:
        link = cls(kube)
        try:
            link.get("clock")
        except Exception:
            return None
        return link

    def now(self) -> datetime:
        return datetime.fromisoformat(str(self.get("clock")["now"]).replace("Z", "+00:00"))

    def meter_readings(self) -> list[MeterReading]:
        return [MeterReading.model_validate(m) for m in self.get("meters")["meters"]]

    def sync_billing(self, ledger: Ledger, scope: IngestInput | None = None) -> IngestResult:
        """Read the fleet's meters (those in ``scope``) into the ledger; new customers get the sandbox
        list price."""
        query = urlencode({k: v for k, v in (scope.model_dump() if scope else {}).items() if v})
        data = self.get("meters" + (f"?{query}" if query else ""))
        at = datetime.fromisoformat(str(data["now"]).replace("Z", "+00:00"))
        readings = [MeterReading.model_validate(m) for m in data["meters"]]
        return ledger.ingest_meters(readings, at, new_customer_price=SANDBOX_PRICE_PER_GPU_HOUR)

    def pagerduty_incident_alerts(self, incident_id: str) -> dict[str, Any]:
        return dict(self.get(f"pagerduty/incidents/{incident_id}/alerts"))


@dataclass
class Environment:
    runtime: Runtime
    sandbox: SandboxLink | None
    writer: KubeTools

    def close(self) -> None:
        if self.runtime.cache is not None:
            self.runtime.cache.stop()
        self.runtime.executor.close()
        self.runtime.kube.close()
        if self.writer is not self.runtime.kube:
            self.writer.close()
        self.runtime.ledger.close()


def playbooks_for(settings: Settings) -> PlaybookSet:
    directory = settings.playbooks_dir
    if not directory.is_absolute() and not directory.exists() and (REPO_PLAYBOOKS).exists():
        directory = REPO_PLAYBOOKS
    return load_playbooks(directory)


# The contexts a sandbox fleet's kubeconfig carries for the agent's two identities (deploy/base/rbac.yaml).
SANDBOX_READ_CONTEXT, SANDBOX_WRITE_CONTEXT = "sandbox-reader", "sandbox-writer"


def _context_names(kubeconfig: Path) -> set[str]:
    """The context names in a kubeconfig; none when it cannot be read (the client then says why)."""
    try:
        data = yaml.safe_load(kubeconfig.read_text())
        return {str(c["name"]) for c in data.get("contexts") or [] if isinstance(c, dict) and "name" in c}
    except (OSError, yaml.YAMLError, AttributeError, KeyError, TypeError):
        return set()


def credentials(settings: Settings, kubeconfig: Path) -> tuple[str | None, Path, str | None] | None:
    """Where reads and writes get their credentials: (read context, write kubeconfig, write context), or
    None when the writer is the reader (one kubeconfig and context for both, as configured)."""
    configured = (settings.kube_context, settings.write_context, settings.write_kubeconfig)
    if configured == (None, None, None) and {SANDBOX_READ_CONTEXT, SANDBOX_WRITE_CONTEXT} <= _context_names(
        kubeconfig
    ):
        return SANDBOX_READ_CONTEXT, kubeconfig, SANDBOX_WRITE_CONTEXT
    if settings.write_kubeconfig or settings.write_context:
        return (
            settings.kube_context,
            settings.write_kubeconfig or kubeconfig,
            settings.write_context or settings.kube_context,
        )
    return None


def build_environment(
    settings: Settings,
    kubeconfig: Path,
    *,
    playbooks: PlaybookSet | None = None,
    clock: Callable[[], datetime] | None = None,
    enforce_gate: bool = True,
    kube_timeout: tuple[float, float] | None = None,
    kube_read_budget_s: float | None = None,
    executor_timeout_s: float | None = None,
) -> Environment:
    """Everything the graph needs to act on the cluster in ``kubeconfig``.

    Credentials: reads use ``settings.kube_context`` (default: the current context), the guarded
    executor writes with ``settings.write_kubeconfig``/``write_context`` (default: the read ones). When
    none of the three is set and the kubeconfig has the contexts ``sandbox-reader`` and
    ``sandbox-writer`` (a sandbox fleet writes them next to its admin context), reads use the first and
    writes the second, so the fleet's RBAC holds the agent to deploy/base/rbac.yaml's two identities; a real
    cluster's kubeconfig keeps the configured choice.

    Every Kubernetes call, both identities', has ``kube_timeout`` (connect, read) seconds, a read and
    its retries ``kube_read_budget_s``; a write action (dry run and run) has ``executor_timeout_s``,
    which bounds the tool itself (a drain asking longer stops there and says so).

    ``enforce_gate=False`` (the evals' ablation) is refused unless the cluster is a sandbox fleet.

    Meters are taken into the ledger when an incident's billing reads need them, scoped to what the read
    is about (``Runtime.ingest_meters``), never the fleet's at start: a meter first seen then counts its
    usage back over the time its counter shows it ran (``tools.billing.usage.ingest``)."""
    # Unset: the settings' (SUPPLY_AGENT_KUBE_CONNECT_TIMEOUT_S, ..._READ_TIMEOUT_S, ..._EXECUTOR_TIMEOUT_S).
    if kube_timeout is None:
        kube_timeout = (settings.kube_connect_timeout_s, settings.kube_read_timeout_s)
    if kube_read_budget_s is None:
        kube_read_budget_s = settings.kube_read_budget_s
    if executor_timeout_s is None:
        executor_timeout_s = settings.executor_timeout_s
    split = credentials(settings, kubeconfig)

    def client(path: Path, context: str | None) -> KubeTools:
        return KubeTools.from_kubeconfig(
            path, context, timeout=kube_timeout, read_budget_s=kube_read_budget_s
        )

    kube = client(kubeconfig, split[0] if split else settings.kube_context)
    writer = client(split[1], split[2]) if split else kube
    if writer is not kube:
        # The writer's credentials are checked at start (and its connection opened), not found broken
        # at the first write of the first incident.
        try:
            writer.ping()
        except Exception as exc:
            kube.close()
            writer.close()
            raise ValueError(
                f"the write credentials ({split[1] if split else kubeconfig}) do not answer: {exc}"
            ) from exc
    url = settings.resolved_database_url()
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    audit = AuditLog.from_url(url)
    ledger = Ledger.from_url(url)
    outbox = Outbox.from_url(url)
    pbs = playbooks or playbooks_for(settings)
    sandbox = SandboxLink.probe(kube)
    if not enforce_gate and sandbox is None:
        kube.close()
        if writer is not kube:
            writer.close()
        raise ValueError("the gate can be switched off only against a sandbox fleet, never a real cluster")
    io = IoMeter()
    if clock is None and sandbox is not None:
        link = sandbox

        def clock() -> datetime:  # the fleet's simulated time comes over HTTP: that is tool I/O
            t0 = time.perf_counter()
            try:
                return link.now()
            finally:
                io.add(time.perf_counter() - t0)

    elif clock is None:
        clock = lambda: datetime.now(UTC)  # noqa: E731
    audit.clock = clock
    approvers = frozenset(settings.approvers) | frozenset(pbs.limits.approvals.approvers)
    max_credit = max([Decimal(str(p.containment.max_credit_usd)) for p in pbs] + [Decimal("0")])
    # Every side effect runs through the executor, over the writer's credentials.
    executor = GuardedExecutor(
        runners(
            Clients(
                kube=writer,
                ledger=ledger,
                outbox=outbox,
                meters=sandbox.meter_readings if sandbox is not None else None,
                ingest_meters=sandbox.sync_billing if sandbox is not None else None,
                max_credit_usd=max_credit,
            )
        ),
        audit,
        approvers,
        timeout_s=executor_timeout_s,
        clock=clock,
        enforce=enforce_gate,
    )
    runtime = Runtime(
        kube=kube,
        executor=executor,
        audit=audit,
        ledger=ledger,
        outbox=outbox,
        playbooks=pbs,
        clock=clock,
        meter_readings=sandbox.meter_readings if sandbox is not None else None,
        verify_cap_s=settings.verify_cap_s,
        io=io,
        enforce_gate=enforce_gate,
    )
    return Environment(runtime=runtime, sandbox=sandbox, writer=writer)
