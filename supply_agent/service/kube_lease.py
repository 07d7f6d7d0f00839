"""The singletons' election on Kubernetes Leases (``coordination.k8s.io/v1``) through the official client,
as client-go's leader election does it; the fence stays in the database.

With ``SUPPLY_AGENT_LEADER_ELECTION=kubernetes`` a replica leads a singleton (the dispatcher, the approval
sweeper, the dead man's switch) only while it holds that singleton's Lease (``supply-agent-<name>`` in
the agent's namespace); ``kubectl get leases -n supply-agent-system`` shows who leads what. The
database lease of the same singleton (:mod:`sandbox.executor.fencing`) is still taken under it: its
fencing token is checked in the transaction of every write the leader makes, which a Lease's
``leaseTransitions`` cannot be. So the Lease elects and the database fences:

- the Lease is held: take (or keep) the database lease;
- another replica holds the Lease: give the database lease up (step down);
- the API server cannot be reached: fall back on the database lease alone. The agent must lead its
  dead man's switch exactly when the cluster is failing; the database still lets one replica lead.

Expiry is judged as client-go judges it, by this process's monotonic clock: a Lease another replica
holds has expired when its record has not changed for ``leaseDurationSeconds`` since this replica first
saw it so; a clock that differs between replicas does not matter. Writes carry the Lease's
``resourceVersion``: of two replicas that take it at once, the API server lets one through (409 for
the other).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import structlog
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

log = structlog.get_logger("supply_agent.service.kube_lease")

PREFIX = "supply-agent-"  # the Lease of singleton "dispatcher" is supply-agent-dispatcher
SANDBOX_CONTEXT = "sandbox-agent"  # a sandbox fleet's kubeconfig names the agent's own identity so
Verdict = Literal["leader", "follower", "unreachable"]


@dataclass
class _Seen:
    record: tuple[str, str, int]  # holder, renewTime, leaseTransitions as last read
    since: float  # monotonic: when this replica first saw that record


class KubeLeaseElector:
    """Leases for the singletons in ``namespace``, held by ``identity`` (the replica's lease owner)."""

    def __init__(
        self,
        api: client.CoordinationV1Api,
        namespace: str,
        identity: str,
        duration_s: float,
        *,
        timeout_s: float = 2.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.api = api
        self.namespace = namespace
        self.identity = identity
        self.duration = max(1, math.ceil(duration_s))
        self.timeout = timeout_s
        self.monotonic = monotonic
        self._seen: dict[str, _Seen] = {}
        self._renewed: dict[str, float] = {}  # monotonic time of this replica's last renewal, by Lease
        self._lock = threading.Lock()

    def lead(self, singleton: str) -> Verdict:
        """Whether this replica leads ``singleton`` now: taking or renewing its Lease when it may."""
        name = PREFIX + singleton
        now = self.monotonic()
        with self._lock:
            last = self._renewed.get(name)
        if last is not None and now - last < self.duration / 3:
            return "leader"  # renewed a third of the duration ago at most: no call yet
        try:
            return self._lead(name, now)
        except ApiException as exc:
            if exc.status == 409:  # another replica wrote it between our read and our write
                self._forget(name)
                return "follower"
            log.warning("cannot reach the singleton's Lease", lease=name, status=exc.status)
            return "unreachable"
        except Exception as exc:  # connection refused, timed out: the API server is out of reach
            log.warning("cannot reach the singleton's Lease", lease=name, error=str(exc)[:300])
            return "unreachable"

    def _lead(self, name: str, now: float) -> Verdict:
        try:
            lease = self.api.read_namespaced_lease(name, self.namespace, _request_timeout=self.timeout)
        except ApiException as exc:
            if exc.status != 404:
                raise
            body = client.V1Lease(
                metadata=client.V1ObjectMeta(name=name, namespace=self.namespace),
                spec=self._spec(transitions=0, acquired=_now()),
            )
            self.api.create_namespaced_lease(self.namespace, body, _request_timeout=self.timeout)
            self._took(name, now, first=True)
            return "leader"
        spec = lease.spec or client.V1LeaseSpec()
        holder = spec.holder_identity or ""
        record = (holder, str(spec.renew_time), int(spec.lease_transitions or 0))
        with self._lock:
            seen = self._seen.get(name)
            if seen is None or seen.record != record:
                seen = self._seen[name] = _Seen(record, now)
        duration = spec.lease_duration_seconds or self.duration
        if holder and holder != self.identity and now - seen.since < duration:
            with self._lock:
                self._renewed.pop(name, None)
            return "follower"
        mine = holder == self.identity
        lease.spec = self._spec(
            transitions=record[2] if mine else record[2] + 1,
            acquired=spec.acquire_time if mine and spec.acquire_time else _now(),
        )
        self.api.replace_namespaced_lease(name, self.namespace, lease, _request_timeout=self.timeout)
        self._took(name, now, first=not mine)
        return "leader"

    def _spec(self, *, transitions: int, acquired: datetime) -> client.V1LeaseSpec:
        return client.V1LeaseSpec(
            holder_identity=self.identity,
            lease_duration_seconds=self.duration,
            acquire_time=acquired,
            renew_time=_now(),
            lease_transitions=transitions,
        )

    def _took(self, name: str, now: float, *, first: bool) -> None:
        with self._lock:
            self._renewed[name] = now
            self._seen.pop(name, None)
        if first:
            log.info("singleton's Lease taken", lease=name, holder=self.identity)

    def _forget(self, name: str) -> None:
        with self._lock:
            self._renewed.pop(name, None)
            self._seen.pop(name, None)

    def release(self, singleton: str) -> None:
        """Give the Lease up when this replica holds it (a clean stop): the holder emptied, so the others
        take it at their next look rather than after the duration (client-go's ReleaseOnCancel)."""
        name = PREFIX + singleton
        with self._lock:
            held = self._renewed.pop(name, None) is not None
        if not held:
            return
        try:
            lease = self.api.read_namespaced_lease(name, self.namespace, _request_timeout=self.timeout)
            if lease.spec is None or lease.spec.holder_identity != self.identity:
                return
            lease.spec.holder_identity = None
            lease.spec.lease_duration_seconds = 1
            lease.spec.renew_time = _now()
            self.api.replace_namespaced_lease(name, self.namespace, lease, _request_timeout=self.timeout)
        except Exception as exc:  # it expires on its own
            log.warning("cannot release the singleton's Lease", lease=name, error=str(exc)[:300])

    def release_all(self) -> None:
        with self._lock:
            held = [name.removeprefix(PREFIX) for name in self._renewed]
        for singleton in held:
            self.release(singleton)

    def close(self) -> None:
        self.api.api_client.close()


def _now() -> datetime:
    return datetime.now(UTC)


def elector_for(
    kubeconfig: Path,
    identity: str,
    duration_s: float,
    *,
    namespace: str,
    lease_kubeconfig: Path | None = None,
    lease_context: str | None = None,
) -> KubeLeaseElector:
    """The elector with the agent's own identity: ``lease_kubeconfig`` (and ``lease_context``) when set;
    else, in a pod, its ServiceAccount (in-cluster); else the ``sandbox-agent`` context of a sandbox
    fleet's kubeconfig, or that kubeconfig's current context."""
    api_client: client.ApiClient
    if lease_kubeconfig is not None:
        api_client = config.new_client_from_config(str(lease_kubeconfig), context=lease_context)
    elif Path("/var/run/secrets/kubernetes.io/serviceaccount/token").exists():
        cfg = client.Configuration()
        config.load_incluster_config(client_configuration=cfg)
        api_client = client.ApiClient(cfg)
    else:
        contexts, _ = config.list_kube_config_contexts(str(kubeconfig))
        names = {c["name"] for c in contexts}
        context = lease_context or (SANDBOX_CONTEXT if SANDBOX_CONTEXT in names else None)
        api_client = config.new_client_from_config(str(kubeconfig), context=context)
    return KubeLeaseElector(client.CoordinationV1Api(api_client), namespace, identity, duration_s)
