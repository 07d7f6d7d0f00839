"""The singletons' Kubernetes Leases: served by the sandbox fleet as coordination.k8s.io/v1 (the official
client, kubectl, RBAC from deploy/base/agent-rbac.yaml), and the elector over them: one leader at a time
as a property over any interleaving of looks, renewals, releases and the passing of time."""

from __future__ import annotations

import datetime as dt
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from sandbox.fleet.admin import AdminClient
from sandbox.fleet.clock import SimClock
from sandbox.fleet.server import FleetServer
from sandbox.fleet.world import Fleet, FleetSpec
from supply_agent.service.kube_lease import KubeLeaseElector, elector_for
from tests.conftest import kubectl_binary

NS = "supply-agent-system"


def _api(kubeconfig: Path, context: str) -> client.CoordinationV1Api:
    return client.CoordinationV1Api(config.new_client_from_config(str(kubeconfig), context=context))


def _lease(name: str, holder: str) -> client.V1Lease:
    return client.V1Lease(
        metadata=client.V1ObjectMeta(name=name),
        spec=client.V1LeaseSpec(
            holder_identity=holder,
            lease_duration_seconds=15,
            renew_time=dt.datetime.now(dt.UTC),
            lease_transitions=0,
        ),
    )


def test_the_fleet_serves_leases_to_the_agents_own_identity_only(kubeconfig: Path) -> None:
    agent = _api(kubeconfig, "sandbox-agent")
    made = agent.create_namespaced_lease(NS, _lease("supply-agent-sweeper", "replica-a"))
    assert made.spec.holder_identity == "replica-a" and made.metadata.resource_version
    # An update carrying an older resourceVersion is refused, as kube-apiserver refuses it: of two
    # replicas that read the same Lease and both write, one wins.
    first = agent.read_namespaced_lease("supply-agent-sweeper", NS)
    second = agent.read_namespaced_lease("supply-agent-sweeper", NS)
    first.spec.holder_identity = "replica-b"
    agent.replace_namespaced_lease("supply-agent-sweeper", NS, first)
    second.spec.holder_identity = "replica-c"
    with pytest.raises(ApiException) as conflict:
        agent.replace_namespaced_lease("supply-agent-sweeper", NS, second)
    assert conflict.value.status == 409
    assert agent.read_namespaced_lease("supply-agent-sweeper", NS).spec.holder_identity == "replica-b"
    with pytest.raises(ApiException) as exists:
        agent.create_namespaced_lease(NS, _lease("supply-agent-sweeper", "replica-d"))
    assert exists.value.status == 409
    # agent-rbac.yaml: Leases in the agent's namespace, nothing else; the reader and writer get none.
    for context, call in (
        ("sandbox-agent", lambda a: a.list_namespaced_lease("default")),
        ("sandbox-reader", lambda a: a.list_namespaced_lease(NS)),
        ("sandbox-writer", lambda a: a.create_namespaced_lease(NS, _lease("x", "y"))),
    ):
        with pytest.raises(ApiException) as refused:
            call(_api(kubeconfig, context))
        assert refused.value.status == 403, context
    with pytest.raises(ApiException) as nodes:
        client.CoreV1Api(config.new_client_from_config(str(kubeconfig), context="sandbox-agent")).list_node()
    assert nodes.value.status == 403
    # kubectl shows who holds each, as against a real cluster.
    out = subprocess.run(
        [str(kubectl_binary()), "--kubeconfig", str(kubeconfig), "get", "leases", "-n", NS],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[0].split() == ["NAME", "HOLDER", "AGE"]
    assert "supply-agent-sweeper" in out.stdout and "replica-b" in out.stdout


def test_an_elector_takes_a_lapsed_lease_steps_aside_for_a_live_one_and_hands_it_on_when_released(
    kubeconfig: Path, admin: AdminClient
) -> None:
    now = [0.0]
    a, b = (
        elector_for(kubeconfig, name, 6, namespace=NS)  # the sandbox-agent context of the fleet's kubeconfig
        for name in ("replica-a", "replica-b")
    )
    for e in (a, b):
        e.monotonic = lambda: now[0]
    try:
        assert a.lead("dispatcher") == "leader"
        assert b.lead("dispatcher") == "follower"
        now[0] += 5.0  # a renews within its duration: b keeps following
        assert a.lead("dispatcher") == "leader"
        now[0] += 5.0
        assert b.lead("dispatcher") == "follower"  # a's renewal changed the record: b's wait restarts
        now[0] += 6.0  # a froze: its record unchanged for the duration, by b's clock
        assert b.lead("dispatcher") == "leader"
        lease = _api(kubeconfig, "sandbox-agent").read_namespaced_lease("supply-agent-dispatcher", NS)
        assert (lease.spec.holder_identity, lease.spec.lease_transitions) == ("replica-b", 1)
        assert a.lead("dispatcher") == "follower"  # woken: the Lease moved while it slept
        b.release_all()  # a clean stop: a takes it at its next look, not a duration later
        assert a.lead("dispatcher") == "leader"
        # The API server out of reach: neither can say, and says so (the database decides then).
        admin.outage(30)
        now[0] += 10.0
        assert a.lead("dispatcher") == "unreachable" and b.lead("dispatcher") == "unreachable"
    finally:
        a.close()
        b.close()


class OneLeader(RuleBasedStateMachine):
    """Three electors on one fleet, one shared clock that moves only when a rule says. Whatever the order,
    a replica told "leader" is told so while the Lease it last wrote is live; no other replica is told
    "leader" before that write is a whole duration old."""

    server: FleetServer
    kubeconfig: Path
    DURATION = 4

    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0
        self.electors: list[KubeLeaseElector] = []
        self.claims: list[tuple[float, int, float]] = []  # (when, who, the time of the write behind it)

    @initialize()
    def start(self) -> None:
        admin = _api(self.kubeconfig, "sandbox")  # the agent's own identity may not delete a Lease
        for lease in admin.list_namespaced_lease(NS).items:
            admin.delete_namespaced_lease(lease.metadata.name, NS)
        admin.api_client.close()
        for i in range(3):
            e = elector_for(self.kubeconfig, f"r{i}", self.DURATION, namespace=NS)
            e.monotonic = lambda: self.now
            self.electors.append(e)

    @rule(who=st.integers(0, 2))
    def lead(self, who: int) -> None:
        e = self.electors[who]
        verdict = e.lead("watchdog")
        if verdict == "leader":
            wrote = e._renewed["supply-agent-watchdog"]
            assert self.now - wrote < self.DURATION / 3 + 1e-9  # a cached answer is a fresh one
            self.claims.append((self.now, who, wrote))

    @rule(seconds=st.sampled_from([0.5, 1.0, 2.0, 4.0, 5.0]))
    def wait(self, seconds: float) -> None:
        self.now += seconds

    @rule(who=st.integers(0, 2))
    def release(self, who: int) -> None:
        self.electors[who].release("watchdog")
        self.claims = [c for c in self.claims if c[1] != who]  # a released claim guarantees nothing more

    @invariant()
    def one_leader_at_a_time(self) -> None:
        for (_, i, wrote), (t2, j, _) in zip(self.claims, self.claims[1:], strict=False):
            if i != j:
                assert t2 >= wrote + self.DURATION, f"r{j} led at {t2} while r{i}'s write of {wrote} held"

    def teardown(self) -> None:
        for e in self.electors:
            e.close()


def test_one_leader_at_a_time_whatever_the_order(tmp_path: Path) -> None:
    fleet = Fleet(FleetSpec(nodes=2, gpus_per_node=1, pools=1, seed=1), SimClock("manual"))
    fleet.generate()
    with FleetServer(fleet) as server:
        kubeconfig = tmp_path / "kubeconfig"
        server.write_kubeconfig(kubeconfig)
        OneLeader.server, OneLeader.kubeconfig = server, kubeconfig
        run_state_machine_as_test(
            OneLeader,
            settings=settings(
                max_examples=25,
                stateful_step_count=25,
                deadline=None,
                suppress_health_check=[HealthCheck.too_slow],
            ),
        )
