"""Every Kubernetes call has a timeout, and a black-holed API server is a transient error, not a hang.

The black hole is a real TCP server that accepts every connection and never sends a byte, used as the
API server of the real client; the drain's deadline runs against the sandbox fleet.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import urllib3
from kubernetes import client

from sandbox.fleet.admin import AdminClient
from sandbox.fleet.server import FleetServer
from tests.support.drains import evictions, pdb_held_node
from tools.kubernetes import DEFAULT_TIMEOUT, KubeTools
from tools.kubernetes.api import _transient

TIMEOUT = (0.5, 0.5)
BUDGET = 2.0


class BlackHole:
    """Accepts every connection and holds it open, silent: an API server that never answers."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.05)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self._held: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="black-hole", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.accepted += 1
            self._held.append(conn)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        for conn in self._held:
            conn.close()
        self.sock.close()


@pytest.fixture
def hole() -> Iterator[BlackHole]:
    server = BlackHole()
    yield server
    server.close()


@pytest.fixture
def hole_kube(hole: BlackHole, tmp_path: Path) -> Iterator[KubeTools]:
    path = tmp_path / "kubeconfig"
    path.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: hole\n"
        f"clusters: [{{name: hole, cluster: {{server: 'http://127.0.0.1:{hole.port}'}}}}]\n"
        "users: [{name: agent, user: {token: t0ken}}]\n"
        "contexts: [{name: hole, context: {cluster: hole, user: agent}}]\n"
    )
    tools = KubeTools.from_kubeconfig(path, timeout=TIMEOUT, read_budget_s=BUDGET)
    yield tools
    tools.close()


def test_a_read_from_a_black_holed_api_is_a_transient_error_within_its_budget(
    hole: BlackHole, hole_kube: KubeTools
) -> None:
    t0 = time.monotonic()
    with pytest.raises(urllib3.exceptions.HTTPError) as err:
        hole_kube.get_node("gpu-node-1")
    elapsed = time.monotonic() - t0
    assert _transient(err.value), f"{type(err.value).__name__} is not classified transient"
    assert elapsed < 10 * TIMEOUT[1], f"the read hung for {elapsed:.1f} s"
    assert elapsed < BUDGET + TIMEOUT[1], f"the read ran {elapsed:.1f} s, past its {BUDGET} s budget"
    assert hole.accepted >= 2  # retried, as a transient error is


def test_a_write_to_a_black_holed_api_is_sent_once(hole: BlackHole, hole_kube: KubeTools) -> None:
    """urllib3 repeats a timed-out DELETE three times by default; a write is the executor's to repeat."""
    t0 = time.monotonic()
    with pytest.raises(urllib3.exceptions.HTTPError) as err:
        hole_kube.delete_pod("tenant-a", "trainer-0")
    assert _transient(err.value)
    assert time.monotonic() - t0 < 10 * TIMEOUT[1]
    assert hole.accepted == 1


@pytest.fixture
def kube(kubeconfig: Path) -> Iterator[KubeTools]:
    tools = KubeTools.from_kubeconfig(kubeconfig)
    tools._sleep = lambda s: None
    yield tools
    tools.close()


def test_every_tool_call_carries_a_timeout(
    kube: KubeTools, admin: AdminClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tools.nvml import gpu_health

    seen: list[tuple[str, str, Any]] = []
    real = kube.api.rest_client.request

    def recording(method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        seen.append((method, url, kwargs.get("_request_timeout")))
        return real(method, url, *args, **kwargs)

    monkeypatch.setattr(kube.api.rest_client, "request", recording)
    nodes = kube.list_nodes()
    node = next(n.name for n in nodes if any(not p.daemonset for p in kube.list_pods_on_node(n.name)))
    pod = next(p for p in kube.list_pods_on_node(node) if not p.daemonset)
    deployment = (pod.owner_name or "").rsplit("-", 1)[0]
    kube.get_node(node)
    kube.get_pod(pod.namespace, pod.name)
    kube.find_pods(pod.namespace)
    kube.pod_logs(pod.namespace, pod.name)
    kube.events_for("Pod", pod.name, pod.namespace)
    kube.pdbs_for_pod(pod.namespace, pod.name)
    kube.deployment_status(pod.namespace, deployment)
    kube.list_raw("pods")
    kube.ping()
    kube.get_path("/sandbox/v1/clock")
    gpu_health(kube, node)
    kube.upsert_config_map("default", "timeouts-test", {"a": "b"})
    kube.read_config_map("default", "timeouts-test")
    kube.cordon_node(node)
    kube.uncordon_node(node)
    kube.taint_node(node, "quarantine")
    kube.untaint_node(node, "quarantine")
    kube.drain_node(node, dry_run=True)
    kube.delete_pod(pod.namespace, pod.name, dry_run=True)
    kube.rollout_restart(pod.namespace, deployment, "inc-1/step-1", dry_run=True)
    kube.scale_deployment(pod.namespace, deployment, 3, dry_run=True)
    assert {m for m, _, _ in seen} >= {"GET", "POST", "PATCH", "DELETE"}
    assert any("/eviction" in u for _, u, _ in seen) and any("/proxy/" in u for _, u, _ in seen)
    untimed = [(m, u) for m, u, t in seen if not t]
    assert untimed == [], f"calls without a timeout: {untimed}"
    assert sum(t == DEFAULT_TIMEOUT for _, _, t in seen) >= len(seen) - 2  # ping and get_path: their own


def test_the_drain_stops_at_its_deadline_and_says_why(
    kubeconfig: Path, policy: client.PolicyV1Api, fleet_server: FleetServer
) -> None:
    kube = KubeTools.from_kubeconfig(kubeconfig)  # real sleeps between polls
    node = pdb_held_node(kube, policy)
    t0 = time.monotonic()
    result = kube.drain_node(node, timeout_s=900, poll_s=0.2, deadline=t0 + 1.5)
    elapsed = time.monotonic() - t0
    assert elapsed < 3.0, f"the drain ran {elapsed:.1f} s past a 1.5 s deadline"
    assert not result.completed and result.remaining and result.blocked
    assert result.stopped_at_deadline
    assert any("asked for 900 s" in n for n in result.notes), result.notes
    kube.close()


def test_a_stopped_drain_evicts_nothing_more(
    kubeconfig: Path, policy: client.PolicyV1Api, fleet_server: FleetServer
) -> None:
    kube = KubeTools.from_kubeconfig(kubeconfig)
    node = pdb_held_node(kube, policy)
    stop = threading.Event()
    threading.Timer(0.5, stop.set).start()
    result = kube.drain_node(node, timeout_s=900, poll_s=0.1, stop=stop)
    assert result.stopped_at_deadline and not result.completed
    after = evictions(fleet_server)
    assert after > 0  # it did try, every poll, until told to stop
    time.sleep(0.5)
    assert evictions(fleet_server) == after
    kube.close()


def test_timeouts_must_be_positive(kubeconfig: Path) -> None:
    with pytest.raises(ValueError, match="positive"):
        KubeTools.from_kubeconfig(kubeconfig, timeout=(5.0, 0.0))
