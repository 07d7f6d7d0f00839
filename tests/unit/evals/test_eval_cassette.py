"""Cassettes (evals/cassette.py): the real anthropic and openai SDKs record through the cassette proxy
with the LLM stub (tests/llm_stub.py) as the upstream, then replay offline, with the stub stopped."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from evals.cassette import (
    FORMAT,
    CassetteError,
    CassetteMissing,
    CassetteStatus,
    Exchange,
    cassette_path,
    diff,
    llm_planner,
    load_cassette,
)
from supply_agent.mind.planners.base import PlanContext, PlannerError
from supply_agent.mind.planners.llm import LlmPlanner
from supply_agent.models.incident import AlertIn, IncidentState, Proposal
from supply_agent.policy import PlaybookSet, load_playbooks
from supply_agent.settings import Settings
from tests.support.llm_stub import (
    LlmStub,
    anthropic_error,
    anthropic_tool_use,
    openai_error,
    openai_tool_call,
)

ROOT = Path(__file__).resolve().parents[3]
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
ANTHROPIC_KEY = "sk-ant-cassette-secret-1234"
OPENAI_KEY = "sk-openai-cassette-secret-5678"
CORDON = {"node": "gpu-node-3", "why": "GPU 2 fell off the bus (XID 79)"}
ESCALATE = {"reason": "an unknown fault on gpu-node-7", "why": "no playbook for it"}


@pytest.fixture(scope="module")
def playbooks() -> PlaybookSet:
    return load_playbooks(ROOT / "playbooks")


@pytest.fixture
def ctx(playbooks: PlaybookSet) -> PlanContext:
    return PlanContext(playbooks=playbooks, now=NOW)


@pytest.fixture
def incident(tmp_path: Path) -> Path:
    path = tmp_path / "incidents" / "xid-79.yaml"
    path.parent.mkdir()
    path.write_text("id: xid-79\n")
    return path


@pytest.fixture
def stub() -> Iterator[LlmStub]:
    with LlmStub() as s:
        yield s


def settings(stub: LlmStub | None = None, **kw: Any) -> Settings:
    """Record: the keys and the stub as the upstream. Replay: ``settings()``: no key, no base URL."""
    base: dict[str, Any] = {
        "anthropic_api_key": ANTHROPIC_KEY if stub else None,
        "openai_api_key": OPENAI_KEY if stub else None,
        "anthropic_base_url": stub.url if stub else None,
        "openai_base_url": f"{stub.url}/v1" if stub else None,
        "llm_timeout_s": 5.0,
        "router_llm": "anthropic",
    }
    return Settings(**{**base, **kw})


def xid_state(node: str = "gpu-node-3", **kw: Any) -> IncidentState:
    alert = AlertIn(
        alertname="GPUXidError",
        labels={"node": node, "xid": "79", "gpu": "2", "customer": "acme"},
        annotations={"summary": f"XID 79 on {node}"},
    )
    return IncidentState(
        incident_id="inc-xid79", alerts=[alert], opened_at=NOW, playbook_id="xid-fallen-off-bus", **kw
    )


def unknown_state() -> IncidentState:
    alert = AlertIn(alertname="GPUMysteryFault", labels={"node": "gpu-node-7"})
    return IncidentState(incident_id="inc-mystery", alerts=[alert], opened_at=NOW)


def same(p: Proposal) -> tuple[Any, ...]:
    """What a replay must reproduce: the proposal and what its model calls reported."""
    calls = [(c.planner, c.model, c.input_tokens, c.output_tokens, c.cache_read_tokens) for c in p.calls]
    return (p.kind, p.tool, p.params, p.reason, p.planner, p.runbook_step, calls)


def record(
    planner: str, stub: LlmStub, cassette: Path, states: list[IncidentState], ctx: PlanContext, **kw: Any
) -> tuple[list[Proposal], CassetteStatus]:
    with llm_planner(planner, settings(stub, **kw), cassette, True, "xid-79") as (llm, status):
        proposals = [llm.propose(s, ctx) for s in states]
    return proposals, status


# -- record, then replay offline ---------------------------------------------------------------------------
def test_cassette_path_is_next_to_the_incident(incident: Path) -> None:
    assert cassette_path(incident, "anthropic") == incident.parent / "xid-79.anthropic.cassette.json"


def test_anthropic_records_then_replays_offline(incident: Path, ctx: PlanContext) -> None:
    cassette = cassette_path(incident, "anthropic")
    with LlmStub() as stub:
        stub.script(anthropic_tool_use("k8s__cordon_node", CORDON, usage={"cache_read_input_tokens": 300}))
        [recorded], status = record("anthropic", stub, cassette, [xid_state()], ctx)
        [req] = stub.requests
    # the key reached the upstream (in memory), and nothing else of it anywhere
    assert ANTHROPIC_KEY in (req.headers.get("x-api-key"), req.headers.get("authorization", "")[7:])
    assert (recorded.tool, recorded.params) == ("k8s.cordon_node", {"node": "gpu-node-3"})
    assert status == CassetteStatus(state="recorded", exchanges=1, problems=[])
    text = cassette.read_text()
    assert ANTHROPIC_KEY not in text and OPENAI_KEY not in text
    assert "x-api-key" not in text.lower() and "authorization" not in text.lower()
    data = json.loads(text)
    assert (data["format"], data["planner"], data["incident"]) == (FORMAT, "anthropic", "xid-79")
    [ex] = data["exchanges"]
    assert set(ex) == {"path", "request", "status", "response"}
    assert (ex["path"], ex["status"]) == ("/v1/messages", 200)
    assert ex["request"] == req.json  # the body exactly as the SDK sent it
    assert ex["response"]["content"][0]["name"] == "k8s__cordon_node"
    assert not list(cassette.parent.glob(".*.tmp"))  # the atomic write left nothing behind

    # the stub is stopped and replay has no key and no base URL: nothing but the cassette answers
    with llm_planner("anthropic", settings(), cassette, False, "xid-79") as (llm, status):
        replayed = llm.propose(xid_state(), ctx)
        assert status.state == "replayed"  # live during the run
    assert same(replayed) == same(recorded)
    assert status == CassetteStatus(state="replayed", exchanges=1, problems=[])


def test_openai_records_a_correction_and_two_turns(incident: Path, ctx: PlanContext) -> None:
    """A bad answer, the correction and the valid answer, then a second turn: three exchanges, in order."""
    cassette = cassette_path(incident, "openai")
    with LlmStub() as stub:
        stub.script(
            openai_tool_call("k8s__cordon_node", "{not json"),
            openai_tool_call("k8s__cordon_node", CORDON),
            openai_tool_call("escalate__human", ESCALATE),
        )
        recorded, status = record("openai", stub, cassette, [xid_state(), xid_state(runbook_cursor=1)], ctx)
        assert stub.paths() == ["/v1/chat/completions"] * 3
    assert status == CassetteStatus(state="recorded", exchanges=3, problems=[])
    _, exchanges = load_cassette(cassette)
    assert [e.path for e in exchanges] == ["/v1/chat/completions"] * 3
    assert len(exchanges[1].request["messages"]) == len(exchanges[0].request["messages"]) + 1
    assert OPENAI_KEY not in cassette.read_text()

    with llm_planner("openai", settings(), cassette, False, "xid-79") as (llm, status):
        replayed = [llm.propose(xid_state(), ctx), llm.propose(xid_state(runbook_cursor=1), ctx)]
    assert [same(p) for p in replayed] == [same(p) for p in recorded]
    assert len(replayed[0].calls) == 2
    assert status == CassetteStatus(state="replayed", exchanges=3, problems=[])


def test_router_uses_one_cassette_for_its_llm(incident: Path, ctx: PlanContext) -> None:
    """A known class goes to the runbook (no exchange), an unknown alert to the LLM (openai here)."""
    cassette = cassette_path(incident, "router")
    states = [xid_state(), unknown_state()]
    with LlmStub() as stub:
        stub.script(openai_tool_call("escalate__human", ESCALATE))
        recorded, status = record("router", stub, cassette, states, ctx, router_llm="openai")
    assert [p.planner for p in recorded] == ["runbook", "openai"]
    assert status.exchanges == 1
    with llm_planner("router", settings(router_llm="openai"), cassette, False) as (llm, status):
        replayed = [llm.propose(s, ctx) for s in states]
    assert [same(p) for p in replayed] == [same(p) for p in recorded]
    assert status == CassetteStatus(state="replayed", exchanges=1, problems=[])


def test_a_router_run_without_model_calls_records_an_empty_cassette(incident: Path, ctx: PlanContext) -> None:
    cassette = cassette_path(incident, "router")
    with LlmStub() as stub:
        _, status = record("router", stub, cassette, [xid_state()], ctx)
        assert stub.requests == []
    assert status == CassetteStatus(state="recorded", exchanges=0, problems=[])
    assert load_cassette(cassette)[1] == []
    with llm_planner("router", settings(), cassette, False) as (llm, status):
        assert llm.propose(xid_state(), ctx).planner == "runbook"
    assert status == CassetteStatus(state="replayed", exchanges=0, problems=[])


def test_a_recorded_retry_replays_without_waiting(incident: Path, ctx: PlanContext) -> None:
    cassette = cassette_path(incident, "anthropic")
    with LlmStub() as stub:
        stub.script(anthropic_error(529, "overloaded"), anthropic_tool_use("k8s__cordon_node", CORDON))
        [recorded], status = record("anthropic", stub, cassette, [xid_state()], ctx)
    assert [e.status for e in load_cassette(cassette)[1]] == [529, 200]
    assert status.problems == []
    with llm_planner("anthropic", settings(), cassette, False) as (llm, status):
        assert isinstance(llm, LlmPlanner)
        assert llm.retry.wait_multiplier == 0 and llm.retry.attempts > 1
        start = time.perf_counter()
        replayed = llm.propose(xid_state(), ctx)
        assert time.perf_counter() - start < 0.45  # the recording waited 0.5 s before its retry
    assert same(replayed) == same(recorded)
    assert status == CassetteStatus(state="replayed", exchanges=2, problems=[])


# -- a cassette that no longer matches is reported, never used ----------------------------------------------
@pytest.mark.parametrize(
    ("planner", "answer"),
    [
        ("anthropic", anthropic_tool_use("k8s__cordon_node", CORDON)),
        ("openai", openai_tool_call("k8s__cordon_node", CORDON)),
    ],
)
def test_a_changed_prompt_is_stale(incident: Path, ctx: PlanContext, planner: str, answer: Any) -> None:
    cassette = cassette_path(incident, planner)
    with LlmStub() as stub:
        stub.script(answer)
        record(planner, stub, cassette, [xid_state()], ctx)
    with llm_planner(planner, settings(), cassette, False) as (llm, status):
        with pytest.raises(PlannerError) as info:
            llm.propose(xid_state(node="gpu-node-4"), ctx)  # the incident is rendered differently now
        # a 400 is not retried: one refused request, no second one, and the planner fails (escalates)
        assert "(not retried)" in str(info.value)
        assert "cassette mismatch at exchange 1" in str(info.value)
        # later requests are refused too: a stale cassette is never partly used
        with pytest.raises(PlannerError, match="cassette is stale since"):
            llm.propose(xid_state(), ctx)
    assert status.state == "stale"
    assert status.exchanges == 0
    assert status.problems[0].startswith("cassette mismatch at exchange 1: fields differ: messages")
    user = 1 if planner == "anthropic" else 2  # openai sends the system prompt as message 1
    assert f"message {user} (user) differs at character" in status.problems[0]
    assert "gpu-node-4" in status.problems[0]
    assert status.problems[1] == "1 later request(s) refused after the mismatch"


def test_another_model_is_stale(incident: Path, ctx: PlanContext) -> None:
    cassette = cassette_path(incident, "anthropic")
    with LlmStub() as stub:
        stub.script(anthropic_tool_use("k8s__cordon_node", CORDON))
        record("anthropic", stub, cassette, [xid_state()], ctx)
    with (
        llm_planner("anthropic", settings(anthropic_model="claude-opus-4-6"), cassette, False) as (llm, st),
        pytest.raises(PlannerError),
    ):
        llm.propose(xid_state(), ctx)
    assert st.state == "stale"
    assert st.problems == ["cassette mismatch at exchange 1: fields differ: model"]


def test_more_requests_than_recorded_and_unused_exchanges_are_stale(incident: Path, ctx: PlanContext) -> None:
    cassette = cassette_path(incident, "openai")
    with LlmStub() as stub:
        stub.script(openai_tool_call("k8s__cordon_node", CORDON))
        record("openai", stub, cassette, [xid_state()], ctx)
    with llm_planner("openai", settings(), cassette, False) as (llm, status):
        llm.propose(xid_state(), ctx)
        with pytest.raises(PlannerError, match="cassette mismatch at exchange 2"):
            llm.propose(xid_state(), ctx)
    assert status.state == "stale"
    assert status.exchanges == 1
    assert "holds 1 exchange(s) and this request to /v1/chat/completions is new" in status.problems[0]

    with llm_planner("openai", settings(), cassette, False) as (llm, status):
        pass  # the run never asked the model
    assert status == CassetteStatus(
        state="stale", exchanges=0, problems=["1 recorded exchange(s) not requested, from exchange 1 on"]
    )


def test_a_request_to_the_other_provider_is_stale(incident: Path, ctx: PlanContext) -> None:
    cassette = cassette_path(incident, "router")
    with LlmStub() as stub:
        stub.script(anthropic_tool_use("escalate__human", ESCALATE))
        record("router", stub, cassette, [unknown_state()], ctx)
    with (
        llm_planner("router", settings(router_llm="openai"), cassette, False) as (llm, status),
        pytest.raises(PlannerError),
    ):
        llm.propose(unknown_state(), ctx)
    assert status.problems[0] == (
        "cassette mismatch at exchange 1: the request went to /v1/chat/completions, "
        "the recorded one to /v1/messages"
    )


def test_diff_names_the_first_differing_message() -> None:
    rec = Exchange(
        path="/v1/messages",
        request={"model": "m", "messages": [{"role": "user", "content": "abc"}]},
        status=200,
        response={},
    )
    body = {"model": "m", "messages": [{"role": "user", "content": "abc"}, {"role": "user", "content": "x"}]}
    assert diff(rec, "/v1/messages", body) == "fields differ: messages; message 2 is new"
    assert diff(rec, "/v1/messages", {**body, "temperature": 0}).startswith("new fields temperature")


# -- errors ------------------------------------------------------------------------------------------------
def test_missing_cassette(incident: Path) -> None:
    cassette = cassette_path(incident, "anthropic")
    with (
        pytest.raises(CassetteMissing, match="supply-agent eval --record") as info,
        llm_planner("anthropic", settings(), cassette, False),
    ):
        pass
    assert isinstance(info.value, CassetteError)
    assert info.value.path == cassette


def test_unreadable_cassette(incident: Path) -> None:
    cassette = cassette_path(incident, "openai")
    cassette.write_text('{"format": "something-else", "exchanges": []}')
    with (
        pytest.raises(CassetteError, match="not a supply-agent-cassette/v1"),
        llm_planner("openai", settings(), cassette, False),
    ):
        pass


def test_recording_needs_the_providers_key(incident: Path) -> None:
    with (
        pytest.raises(CassetteError, match="SUPPLY_AGENT_OPENAI_API_KEY"),
        llm_planner("router", settings(router_llm="openai", anthropic_api_key="sk-ant-x"), incident, True),
    ):
        pass


def test_runbook_needs_no_cassette(incident: Path) -> None:
    with pytest.raises(ValueError, match="no cassette"), llm_planner("runbook", settings(), incident, False):
        pass


def test_a_key_echoed_by_the_provider_is_redacted(incident: Path, ctx: PlanContext) -> None:
    cassette = cassette_path(incident, "openai")
    with LlmStub() as stub:
        stub.script(openai_error(400, f"model not allowed for key {OPENAI_KEY}"))
        with (
            llm_planner("openai", settings(stub), cassette, True) as (llm, status),
            pytest.raises(PlannerError),
        ):
            llm.propose(xid_state(), ctx)
    assert status.state == "recorded" and status.exchanges == 1
    text = cassette.read_text()
    assert OPENAI_KEY not in text
    assert "model not allowed for key [redacted]" in text


def test_a_refused_key_writes_no_cassette(incident: Path, ctx: PlanContext) -> None:
    cassette = cassette_path(incident, "anthropic")
    with LlmStub() as stub:
        stub.script(anthropic_error(401, "invalid x-api-key"))
        with (
            llm_planner("anthropic", settings(stub), cassette, True) as (llm, status),
            pytest.raises(PlannerError),
        ):
            llm.propose(xid_state(), ctx)
    assert not cassette.exists()
    assert status.problems[0] == "exchange 1: the upstream refused the API key (HTTP 401)"
    assert status.problems[1].startswith("cassette not written")


def test_a_failed_run_keeps_the_old_cassette(incident: Path, ctx: PlanContext) -> None:
    cassette = cassette_path(incident, "anthropic")
    cassette.write_text("old")
    with LlmStub() as stub:
        stub.script(anthropic_tool_use("k8s__cordon_node", CORDON))
        with (
            pytest.raises(RuntimeError, match="boom"),
            llm_planner("anthropic", settings(stub), cassette, True) as (llm, _),
        ):
            llm.propose(xid_state(), ctx)
            raise RuntimeError("boom")
    assert cassette.read_text() == "old"
