"""tools.pagerduty: the real ``pagerduty`` client against the PagerDuty stub over HTTPS."""

from __future__ import annotations

import traceback
from collections.abc import Iterator

import pytest

from tests.support.pd_stub import PagerDutyStub
from tools.pagerduty import NOTE_MAX_CHARS, PagerDutyClient, PagerDutyError

KEY = "pd-test-key-u+2Xq9"
FROM = "supply-agent@example.com"


@pytest.fixture
def pd() -> Iterator[PagerDutyStub]:
    with PagerDutyStub(api_key=KEY) as stub:
        stub.add_incident("P123")
        yield stub


@pytest.fixture
def client(pd: PagerDutyStub) -> Iterator[PagerDutyClient]:
    c = PagerDutyClient(
        KEY,
        FROM,
        base_url=pd.url,
        escalation_policy_id="PPOLICY",
        verify=pd.ssl_context,
        retry_backoff_s=0.001,
    )
    yield c
    c.close()


def test_acknowledge_and_resolve_send_wrapped_puts_with_from_and_token(
    pd: PagerDutyStub, client: PagerDutyClient
) -> None:
    client.acknowledge("P123")
    client.resolve("P123")
    assert pd.writes("P123") == [
        ("PUT", "/incidents/P123", {"incident": {"type": "incident_reference", "status": "acknowledged"}}),
        ("PUT", "/incidents/P123", {"incident": {"type": "incident_reference", "status": "resolved"}}),
    ]
    assert pd.statuses("P123") == ["acknowledged", "resolved"]
    for req in pd.requests:
        assert req.headers["from"] == FROM
        assert req.headers["authorization"] == f"Token token={KEY}"
        assert req.headers["accept"] == "application/vnd.pagerduty+json;version=2"


def test_add_note_body_and_truncation(pd: PagerDutyStub, client: PagerDutyClient) -> None:
    client.add_note("P123", "drained node gpu-07")
    client.add_note("P123", "x" * (NOTE_MAX_CHARS + 10))
    assert pd.writes("P123")[0] == (
        "POST",
        "/incidents/P123/notes",
        {"note": {"content": "drained node gpu-07"}},
    )
    long_note = pd.notes("P123")[1]
    assert len(long_note) == NOTE_MAX_CHARS
    assert long_note.endswith("[... truncated by supply-agent]")


def test_escalate_adds_reason_note_then_reassigns(pd: PagerDutyStub, client: PagerDutyClient) -> None:
    client.escalate("P123", "XID 79 on 3 GPUs of one node; needs a human", escalation_policy_id="PHUMANS")
    assert pd.writes("P123") == [
        (
            "POST",
            "/incidents/P123/notes",
            {"note": {"content": "XID 79 on 3 GPUs of one node; needs a human"}},
        ),
        (
            "PUT",
            "/incidents/P123",
            {
                "incident": {
                    "type": "incident_reference",
                    "escalation_policy": {"id": "PHUMANS", "type": "escalation_policy_reference"},
                }
            },
        ),
    ]
    assert pd.incidents["P123"]["escalation_policy"]["id"] == "PHUMANS"


def test_escalate_uses_the_configured_policy(pd: PagerDutyStub, client: PagerDutyClient) -> None:
    client.escalate("P123", "why")
    assert pd.incidents["P123"]["escalation_policy"]["id"] == "PPOLICY"


def test_escalate_without_policy_raises_after_the_note(pd: PagerDutyStub) -> None:
    c = PagerDutyClient(KEY, FROM, base_url=pd.url, verify=pd.ssl_context)
    try:
        with pytest.raises(PagerDutyError, match="escalation_policy_id"):
            c.escalate("P123", "needs a human")
    finally:
        c.close()
    assert pd.notes("P123") == ["needs a human"]
    assert [m for m, _, _ in pd.writes("P123")] == ["POST"]


def test_escalate_reassigns_even_when_the_note_fails(pd: PagerDutyStub, client: PagerDutyClient) -> None:
    pd.fail_next(400)
    with pytest.raises(PagerDutyError, match="POST /incidents/P123/notes: HTTP 400"):
        client.escalate("P123", "needs a human")
    assert pd.incidents["P123"]["escalation_policy"]["id"] == "PPOLICY"


def test_incident_alerts_follows_pagination(pd: PagerDutyStub, client: PagerDutyClient) -> None:
    pd.alerts["P123"] = [{"id": f"A{i:03d}", "body": {"details": {"xid": 79, "i": i}}} for i in range(150)]
    got = client.incident_alerts("P123")
    assert [a["id"] for a in got["alerts"]] == [f"A{i:03d}" for i in range(150)]
    pages = [r.query for r in pd.requests if r.path == "/incidents/P123/alerts"]
    assert [(q["limit"], q["offset"]) for q in pages] == [("100", "0"), ("100", "100")]


def test_unknown_incident_is_a_404_error_naming_the_call(client: PagerDutyClient) -> None:
    with pytest.raises(PagerDutyError) as err:
        client.incident_alerts("PNOPE")
    assert str(err.value) == "GET /incidents/PNOPE/alerts: HTTP 404: Incident Not Found"
    assert err.value.status == 404


def test_a_500_is_retried_then_succeeds(pd: PagerDutyStub, client: PagerDutyClient) -> None:
    pd.fail_next(500)
    client.acknowledge("P123")
    assert len(pd.writes("P123")) == 2
    assert pd.statuses("P123") == ["acknowledged"]


def test_429_is_retried_by_tenacity_alone(pd: PagerDutyStub, client: PagerDutyClient) -> None:
    pd.fail_next(429, times=5)
    with pytest.raises(PagerDutyError, match="HTTP 429"):
        client.resolve("P123")
    assert len(pd.requests) == 3  # the package's own unbounded 429 loop is off


def test_a_400_is_not_retried(pd: PagerDutyStub, client: PagerDutyClient) -> None:
    pd.fail_next(400)
    with pytest.raises(PagerDutyError, match="HTTP 400: Invalid Input Provided"):
        client.acknowledge("P123")
    assert len(pd.requests) == 1


def test_a_note_is_not_replayed_after_a_500(pd: PagerDutyStub, client: PagerDutyClient) -> None:
    pd.fail_next(503)
    with pytest.raises(PagerDutyError, match="HTTP 503"):
        client.add_note("P123", "maybe stored")
    assert len(pd.requests) == 1


def test_missing_from_header_is_refused_by_the_stub(pd: PagerDutyStub, client: PagerDutyClient) -> None:
    client._client.headers.pop("From")
    with pytest.raises(PagerDutyError, match=r'HTTP 400: .*"From" header'):
        client.acknowledge("P123")


def test_api_key_never_in_the_error(pd: PagerDutyStub) -> None:
    c = PagerDutyClient(KEY, FROM, base_url=pd.url, verify=pd.ssl_context)
    pd.api_key = "another-key"  # the client's key is now refused with 401
    try:
        with pytest.raises(PagerDutyError) as err:
            c.acknowledge("P123")
    finally:
        c.close()
    assert err.value.status == 401
    shown = "".join(traceback.format_exception(err.value))
    assert KEY not in shown and KEY[-4:] not in shown


def test_connection_refused_is_an_error_without_the_key(pd: PagerDutyStub) -> None:
    c = PagerDutyClient(
        KEY, FROM, base_url="https://127.0.0.1:9", verify=pd.ssl_context, retry_backoff_s=0.001
    )
    try:
        with pytest.raises(PagerDutyError, match=r"PUT /incidents/P123: ConnectError") as err:
            c.resolve("P123")
    finally:
        c.close()
    assert err.value.status is None
    assert KEY not in str(err.value)


def test_own_user_id_exact_email_and_cached(pd: PagerDutyStub, client: PagerDutyClient) -> None:
    pd.users = [
        {"id": "PX1", "type": "user", "email": "ops-" + FROM, "name": "Someone Else"},
        {"id": "PAGENT", "type": "user", "email": FROM, "name": "supply-agent"},
    ]
    assert client.own_user_id() == "PAGENT"
    assert client.own_user_id() == "PAGENT"
    user_gets = [r for r in pd.requests if r.path == "/users"]
    assert len(user_gets) == 1
    assert user_gets[0].query["query"] == FROM


def test_own_user_id_none_when_absent(pd: PagerDutyStub, client: PagerDutyClient) -> None:
    assert client.own_user_id() is None


def test_plain_http_base_url_is_refused() -> None:
    with pytest.raises(ValueError, match="https://"):
        PagerDutyClient(KEY, FROM, base_url="http://127.0.0.1:1")


def test_incident_id_that_is_not_an_id_is_refused(client: PagerDutyClient) -> None:
    with pytest.raises(ValueError):
        client.acknowledge("P1/../../users")
