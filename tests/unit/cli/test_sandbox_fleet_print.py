"""`supply-agent sandbox fleet`: what a fleet seed generates, printed without serving it."""

from __future__ import annotations

import json

from click.testing import CliRunner

from sandbox.fleet.clock import SimClock
from sandbox.fleet.world import CUSTOMER_LABEL, RACK_LABEL, Fleet, FleetSpec
from supply_agent.cli import main

ARGS = ["sandbox", "fleet", "--nodes", "6", "--pools", "2", "--seed", "5"]


def _built() -> Fleet:
    fleet = Fleet(FleetSpec(nodes=6, pools=2, seed=5), SimClock("manual"))
    fleet.generate()
    return fleet


def test_table_lists_every_node() -> None:
    result = CliRunner().invoke(main, ARGS)
    assert result.exit_code == 0, result.output
    for node in _built().store.items("nodes"):
        assert node["metadata"]["name"] in result.output
        assert node["metadata"]["labels"][RACK_LABEL] in result.output


def test_json_matches_the_fleet_built_directly() -> None:
    result = CliRunner().invoke(main, [*ARGS, "--format", "json"])
    assert result.exit_code == 0, result.output
    printed = json.loads(result.output)
    fleet = _built()
    nodes = {n["metadata"]["name"]: n["metadata"]["labels"] for n in fleet.store.items("nodes")}
    assert [n["name"] for n in printed["nodes"]] == sorted(nodes)
    assert {n["name"]: n["rack"] for n in printed["nodes"]} == {k: v[RACK_LABEL] for k, v in nodes.items()}
    assert all(n["rack"] and n["pool"] and n["gpu_product"] for n in printed["nodes"])
    tenants = {
        (
            p["spec"]["nodeName"],
            p["metadata"]["namespace"],
            p["metadata"]["name"],
            p["metadata"]["labels"][CUSTOMER_LABEL],
        )
        for p in fleet.store.items("pods")
        if p["spec"].get("nodeName") and CUSTOMER_LABEL in (p["metadata"].get("labels") or {})
    }
    assert tenants, "the seed should place tenant pods"
    assert {
        (n["name"], p["namespace"], p["name"], p["customer"]) for n in printed["nodes"] for p in n["pods"]
    } == tenants


def test_another_seed_is_another_fleet() -> None:
    a = CliRunner().invoke(main, [*ARGS, "--format", "json"])
    b = CliRunner().invoke(main, [*ARGS[:-1], "6", "--format", "json"])
    assert a.exit_code == b.exit_code == 0
    assert json.loads(a.output)["nodes"] != json.loads(b.output)["nodes"]


def test_more_pools_than_nodes_is_a_usage_error() -> None:
    result = CliRunner().invoke(main, ["sandbox", "fleet", "--nodes", "2", "--pools", "3"])
    assert result.exit_code == 2 and "--pools" in result.output
