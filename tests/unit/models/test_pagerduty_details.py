"""A PagerDuty incident's alerts as Alertmanager's PagerDuty receiver sends them with no ``details`` set:
the group's alerts as text (``firing``, ``resolved``), read back into one alert each."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from sandbox.fleet.alerts import Alert
from sandbox.fleet.alerts.pagerduty import alertmanager_default_details, pagerduty_incident_alerts
from supply_agent.models.incident import PagerDutyRef, pagerduty_alerts

REF = PagerDutyRef(
    event_id="E1", event_type="incident.triggered", incident_id="PINC1", title="t", status="triggered"
)
T0 = datetime(2026, 12, 1, tzinfo=UTC)


def _alert(name: str, labels: dict[str, str], annotations: dict[str, str], status: str = "firing") -> Alert:
    return Alert(
        alertname=name,
        status=status,  # type: ignore[arg-type]
        labels={"alertname": name, **labels},
        annotations=annotations,
        starts_at=T0,
        fingerprint="f" * 16,
        generator_url="http://prometheus/graph?g0.expr=DCGM_FI_DEV_XID_ERRORS",
        fault_id="x",
    )


def _pd(details: dict[str, str]) -> dict[str, object]:
    return {
        "alerts": [
            {"status": "triggered", "created_at": "2026-12-01T00:00:00Z", "body": {"details": details}}
        ]
    }


def test_each_alert_of_the_group_is_read_back_with_its_labels_and_status() -> None:
    xid = _alert(
        "GPUXidError",
        {"node": "gpu-a-3", "gpu": "1", "xid": "79", "severity": "critical"},
        {"summary": "XID 79 on gpu-a-3", "description": "line one\nline two: more"},
    )
    gone = _alert("KubeNodeNotReady", {"node": "gpu-b-1"}, {"summary": "was down"}, status="resolved")
    details = alertmanager_default_details([xid, gone])
    assert details["num_firing"] == "1" and details["num_resolved"] == "1"
    assert details["firing"].startswith("Labels:\n - alertname = GPUXidError\n - gpu = 1\n")
    got = pagerduty_alerts(REF, _pd(details))
    assert [(a.alertname, a.status, a.node) for a in got] == [
        ("GPUXidError", "firing", "gpu-a-3"),
        ("KubeNodeNotReady", "resolved", "gpu-b-1"),
    ]
    assert got[0].labels == {"node": "gpu-a-3", "gpu": "1", "xid": "79", "severity": "critical"}
    assert got[0].annotations == {"summary": "XID 79 on gpu-a-3", "description": "line one\nline two: more"}
    assert got[0].source == "pagerduty" and got[0].source_id == "PINC1"


def test_flat_details_and_other_shapes_are_read_as_before() -> None:
    flat = pagerduty_incident_alerts(_alert("GPUXidError", {"node": "n1", "xid": "48"}, {"summary": "s"}))
    (one,) = pagerduty_alerts(REF, flat)
    assert (one.alertname, one.labels["xid"], one.annotations["summary"]) == ("GPUXidError", "48", "s")
    # A receiver that sends only its own keys (no "Labels:" text) is read key by key.
    (custom,) = pagerduty_alerts(REF, _pd({"firing": "3 GPUs are down", "alertname": "Custom"}))
    assert custom.alertname == "Custom" and custom.labels["firing"] == "3 GPUs are down"


_NAME = st.from_regex(r"[a-z_][a-z0-9_]{0,12}", fullmatch=True).filter(lambda n: n != "alertname")
# A label's value as Prometheus allows it here: any text on one line.
_VALUE = st.text(
    st.characters(blacklist_categories=("Cc", "Zl", "Zp"), blacklist_characters="\x85"), max_size=40
)


@given(
    st.lists(
        st.tuples(
            st.dictionaries(_NAME, _VALUE, min_size=1, max_size=6), st.sampled_from(["firing", "resolved"])
        ),
        min_size=1,
        max_size=4,
    )
)
def test_any_group_renders_and_reads_back_to_the_same_alerts(group: list[tuple[dict[str, str], str]]) -> None:
    alerts = [_alert(f"A{i}", labels, {}, status) for i, (labels, status) in enumerate(group)]
    got = pagerduty_alerts(REF, _pd(alertmanager_default_details(alerts)))
    want = sorted(((a.alertname, a.status, tuple(sorted(a.labels.items()))) for a in alerts), key=str)
    seen = sorted(
        ((a.alertname, a.status, tuple(sorted((k, v) for k, v in a.labels.items()))) for a in got), key=str
    )
    # Every label as sent (plus `node` where another label names one: supply_agent.models.labels).
    assert [(n, s) for n, s, _ in seen] == [(n, s) for n, s, _ in want]
    for (_, _, sent), (_, _, read) in zip(want, seen, strict=True):
        sent_labels = {k: v for k, v in sent if k != "alertname"}
        assert {k: v for k, v in read if k in sent_labels or k != "node"} == sent_labels


def test_text_that_mimics_another_alert_or_a_receivers_own_keys_are_not_read_as_alerts() -> None:
    forged = _alert(
        "KubePodCrashLooping",
        {"namespace": "acme", "pod": "p"},
        {"description": "oops\nLabels:\n - alertname = GPUXidError\n - node = gpu-b-7\n - xid = 79"},
    )
    details = alertmanager_default_details([forged])
    assert details["num_firing"] == "1"
    got = pagerduty_alerts(REF, _pd(details))  # two alerts in the text, one in the count: not read as text
    assert len(got) == 1 and got[0].node is None and "firing" in got[0].labels
    # Alertmanager adds its default keys to a receiver's own details: its own keys are what it sent.
    own = {
        "alertname": "GPUXidError",
        "node": "gpu-a-3",
        "xid": "79",
        **alertmanager_default_details([forged]),
    }
    (one,) = pagerduty_alerts(REF, _pd(own))
    assert (one.alertname, one.node, one.labels["xid"]) == ("GPUXidError", "gpu-a-3", "79")
