"""The incident store's side of a merge: which earlier node alerts a later delivery may take into a
component's incident, moving them, marking the merged incident, and opening a store an older version
made (without the merge's columns)."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

from supply_agent.incidents.store import IncidentStore
from supply_agent.models.incident import AlertIn, Component, IncidentState
from tests.support.release import as_release_before_migrations

T0 = datetime(2026, 12, 3, 6, 0, tzinfo=UTC)
WINDOW = timedelta(minutes=10)


def _alert(node: str, status: str = "firing", name: str = "GPUThermalThrottling") -> AlertIn:
    return AlertIn(alertname=name, status=status, labels={"node": node, "gpu": "0"})  # type: ignore[arg-type]


def _open(
    store: IncidentStore, iid: str, alerts: list[AlertIn], at: datetime, component: Component | None = None
) -> None:
    for a in alerts:
        store.record_alert(a, a.model_dump(mode="json"), at)
    state = IncidentState(incident_id=iid, alerts=alerts, opened_at=at, component=component)
    assert store.open_incident(state, iid)
    store.link_alerts(alerts, iid)


def test_only_firing_node_alerts_of_unmerged_node_incidents_in_the_window_count(tmp_path: Path) -> None:
    store = IncidentStore.from_url(f"sqlite:///{tmp_path / 's.sqlite'}")
    _open(store, "inc-a", [_alert("n0")], T0)
    _open(store, "inc-b", [_alert("n1")], T0)
    _open(store, "inc-old", [_alert("n2")], T0 - timedelta(minutes=30))
    _open(store, "inc-human", [_alert("n3")], T0)
    store.set_owner("inc-human", "alice (acknowledged in PagerDuty)")
    rack = Component(kind="rack", label="supply-agent.io/rack", name="r0", nodes=["n4", "n5", "n6"], size=8)
    _open(store, "inc-rack", [_alert(n) for n in ("n4", "n5", "n6")], T0, component=rack)
    _open(store, "inc-merged", [_alert("n7")], T0)
    store.merge_into("inc-merged", "inc-rack")
    # n1's alert resolved since: the latest delivery of an alert decides.
    resolved = _alert("n1", status="resolved")
    store.record_alert(resolved, resolved.model_dump(mode="json"), T0 + timedelta(minutes=1))
    store.link_alerts([resolved], "inc-b")
    # inc-a closed two minutes later: still within the window, so it counts.
    state = IncidentState(incident_id="inc-a", alerts=[_alert("n0")], opened_at=T0)
    store.save(state, "closed", T0 + timedelta(minutes=2))
    got = store.recent_node_alerts(T0 + timedelta(minutes=5), WINDOW)
    assert [(a.node, iid) for a, iid in got] == [("n0", "inc-a")]
    # Once inc-a closed longer ago than the window, nothing does.
    assert store.recent_node_alerts(T0 + timedelta(minutes=13), WINDOW) == []


def test_a_merge_moves_the_alerts_and_marks_the_incident(tmp_path: Path) -> None:
    store = IncidentStore.from_url(f"sqlite:///{tmp_path / 's.sqlite'}")
    thermal, ecc = _alert("n0"), _alert("n0", name="GPUEccUncorrectable")
    _open(store, "inc-a", [thermal, ecc], T0)
    _open(store, "inc-rack", [_alert("n1")], T0)
    store.merge_into("inc-a", "inc-rack", [thermal.fingerprint])
    assert [a.alertname for a in store.alerts_for("inc-a")] == ["GPUEccUncorrectable"]
    assert {a.node for a in store.alerts_for("inc-rack")} == {"n0", "n1"}
    row = store.get("inc-a")
    assert row is not None and row.folded_into == "inc-rack"
    # Only the merged incident's rows move: another incident's rows of the same alert stay.
    _open(store, "inc-b", [_alert("n2")], T0)
    store.merge_into("inc-b", "inc-rack", [ecc.fingerprint])
    assert [a.alertname for a in store.alerts_for("inc-a")] == ["GPUEccUncorrectable"]
    assert [a.node for a in store.alerts_for("inc-b")] == ["n2"]


def test_a_store_made_before_the_merge_columns_opens_and_gains_them(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    store = IncidentStore.from_url(f"sqlite:///{path}")
    _open(store, "inc-a", [_alert("n0")], T0)
    store.close()
    con = sqlite3.connect(path)
    con.execute("ALTER TABLE incidents DROP COLUMN folded_into")
    con.execute("ALTER TABLE incidents DROP COLUMN component")
    as_release_before_migrations(con)
    con.commit()
    assert "folded_into" not in {r[1] for r in con.execute("PRAGMA table_info(incidents)")}
    con.close()
    again = IncidentStore.from_url(f"sqlite:///{path}")
    row = again.get("inc-a")
    assert row is not None and row.folded_into is None and row.component is None
    again.merge_into("inc-a", "inc-rack")
    assert (again.get("inc-a") or row).folded_into == "inc-rack"
