"""The console over a real store (SQLite), through its HTTP routes: sign-in, the list's filters and pages,
an incident's timeline with the gate's reasons and limits, containment, and what untrusted text becomes
on a page. The browser test (tests/e2e/test_console_browser.py) runs the same pages in Chromium."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import SecretStr
from sqlalchemy import event
from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.testclient import TestClient

from sandbox.executor.audit import AuditLog
from supply_agent.incidents.store import IncidentStore
from supply_agent.models.actions import Action, Decision, Targets, Verdict
from supply_agent.models.incident import AlertIn, IncidentState, StepRecord, TimelineEntry
from supply_agent.policy.limits import GlobalLimits
from supply_agent.policy.world import NodeView, WorldView
from supply_agent.settings import Settings
from supply_agent.web.app import CSP, Console, console_app, safe_url, untrusted
from supply_agent.web.queries import ConsoleReads

TOKEN = "console-token-for-tests-0123456789"
T0 = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
EVIL = "<script>alert(1)</script><img src=x onerror=alert(2)>"
BIDI = "safe\u202egnp.exe"  # renders as "safeexe.png" if obeyed


def _state(
    i: int, *, node: str, pool: str, customer: str, text: str = "", reasons: tuple[str, ...] = ()
) -> IncidentState:
    iid = f"inc-{i:06d}"
    alert = AlertIn(
        alertname="GpuXidError" if i % 2 else "KubeNodeNotReady",
        labels={"node": node, "pool": pool, "summary": text},
        fingerprint=f"fp-{i}",
        source="alertmanager",
    )
    decision = Decision(
        verdict=Verdict.ASK if reasons else Verdict.ALLOW,
        action_hash=f"h{i}",
        reasons=reasons,
        limits_consulted=("blast_radius.pool_cordoned", "rate_limits.per_hour"),
        targets=Targets(nodes=(node,), customers=(customer,)),
    )
    step = StepRecord(
        index=0,
        action=Action(tool="k8s.cordon_node", params={"node": node}, incident_id=iid, step=0),
        planner="runbook",
        decision=decision,
        outcome="executed",
    )
    return IncidentState(
        incident_id=iid,
        alerts=[alert],
        opened_at=T0 + timedelta(minutes=i),
        playbook_id="gpu-xid" if i % 2 else "node-not-ready",
        steps=[step],
        timeline=[
            TimelineEntry(
                at=T0 + timedelta(minutes=i), node="triage", kind="triage", text=f"alert on {node} {text}"
            ),
            TimelineEntry(
                at=T0 + timedelta(minutes=i, seconds=5),
                node="gate",
                kind="decision",
                text=f"{decision.verdict.value.upper()} k8s.cordon_node",
                data={
                    "verdict": decision.verdict.value,
                    "reasons": list(reasons),
                    "limits": list(decision.limits_consulted),
                },
            ),
        ],
    )


@pytest.fixture
def store(tmp_path: Path) -> Iterator[IncidentStore]:
    s = IncidentStore.from_url(f"sqlite:///{tmp_path / 'supply-agent.db'}")
    for i in range(120):
        st = _state(i, node=f"node-{i % 7}", pool=f"pool-{i % 2}", customer=f"acme-{i % 3}")
        s.open_incident(st, f"incident {i}")
        s.save(st, "closed" if i % 5 == 0 else "open", T0 + timedelta(minutes=i))
    evil = _state(
        500, node="node-evil", pool="pool-0", customer="mallory", text=EVIL + BIDI, reasons=(EVIL, "x" * 5000)
    )
    s.open_incident(evil, "javascript:alert(3) " + EVIL)
    s.save(evil, "paused", T0 + timedelta(hours=20))
    yield s
    s.close()


def _client(store: IncidentStore, tmp_path: Path, **settings: object) -> TestClient:
    audit = AuditLog.from_url(f"sqlite:///{tmp_path / 'supply-agent.db'}")
    console = Console(
        Settings(data_dir=tmp_path, **settings),  # type: ignore[arg-type]
        ConsoleReads(store.engine, audit.engine),
        GlobalLimits(),
        world=lambda: WorldView(
            now=T0,
            nodes={f"node-{i}": NodeView(name=f"node-{i}", pool=f"pool-{i % 2}", gpus=8) for i in range(7)},
        ),
        latches=lambda: {"freeze": (False, ""), "breaker": (True, "2 failed verifications")},
        clock=lambda: T0 + timedelta(hours=21),
    )
    return TestClient(Starlette(routes=[Mount("/console", console_app(console))]))


@pytest.fixture
def http(store: IncidentStore, tmp_path: Path) -> TestClient:
    return _client(store, tmp_path, console_token=SecretStr(TOKEN))


AUTH = {"Authorization": f"Bearer {TOKEN}"}


def test_the_console_is_off_unless_configured_and_asks_everyone_to_sign_in(
    store: IncidentStore, tmp_path: Path
) -> None:
    off = _client(store, tmp_path)
    r = off.get("/console/", headers=AUTH)
    assert r.status_code == 404 and "SUPPLY_AGENT_CONSOLE_TOKEN" in r.text
    on = _client(store, tmp_path, console_token=SecretStr(TOKEN))
    assert on.get("/console/").status_code == 401
    assert on.get("/console/", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert on.get("/console/incidents/inc-000001").status_code == 401
    assert on.get("/console/containment/stream").status_code == 401
    browser = on.get("/console/", headers={"Accept": "text/html"}, follow_redirects=False)
    assert browser.status_code == 303 and browser.headers["location"] == "/console/login"
    assert on.post("/console/login", data={"token": "wrong"}).status_code == 401
    signed = on.post("/console/login", data={"token": TOKEN}, follow_redirects=False)
    assert signed.status_code == 303
    cookie = signed.headers["set-cookie"]
    assert (
        "HttpOnly" in cookie and "SameSite=strict" in cookie and TOKEN not in cookie
    )  # a digest, not the token
    assert on.get("/console/").status_code == 200  # the cookie now
    proxied = _client(store, tmp_path, console_proxy_header="X-Auth-Request-Email")
    assert proxied.get("/console/").status_code == 401
    r = proxied.get("/console/", headers={"X-Auth-Request-Email": "oncall@example.com"})
    assert r.status_code == 200 and "oncall@example.com" in r.text


def test_every_page_forbids_inline_script_and_framing(http: TestClient) -> None:
    pages = (
        "/console/",
        "/console/incidents/inc-000001",
        "/console/incidents/inc-000500",
        "/console/containment",
    )
    for path in (*pages, "/console/evals"):
        r = http.get(path, headers=AUTH)
        assert r.status_code == 200, (path, r.text[:300])
        csp = r.headers["content-security-policy"]
        assert csp == CSP and "unsafe-inline" not in csp and "script-src 'self'" in csp
        assert r.headers["x-frame-options"] == "DENY" and r.headers["x-content-type-options"] == "nosniff"
        tags = _tags(r.text)
        scripts = [a for t, a in tags if t == "script"]
        assert scripts and all("src" in a for a in scripts), path  # no inline script at all
        assert not [t for t, a in tags if t == "style" or "style" in a], path
        assert not [(t, a) for t, a in tags if any(k.startswith("on") for k in a)], path  # no handler
        assert not [a for t, a in tags if t == "a" and (a.get("href") or "").lower().startswith("javascript")]


def _tags(page: str) -> list[tuple[str, dict[str, str | None]]]:
    """Every real tag of the page with its attributes (escaped text is text, not tags)."""
    from html.parser import HTMLParser

    found: list[tuple[str, dict[str, str | None]]] = []

    class P(HTMLParser):
        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            found.append((tag, dict(attrs)))

    P().feed(page)
    return found


def _ids(html: str) -> list[str]:
    return re.findall(r'href="/console/incidents/(inc-\d+)"', html)


def test_the_list_filters_and_pages_newest_first(http: TestClient) -> None:
    first = http.get("/console/", headers=AUTH)
    ids = _ids(first.text)
    assert (
        len(ids) == 50 and ids[0] == "inc-000500" and ids[1:4] == ["inc-000119", "inc-000118", "inc-000117"]
    )
    older = re.search(r'href="/console/(\?[^"]*cursor=[^"]+)"', first.text)
    assert older
    second = http.get("/console/" + older.group(1).replace("&amp;", "&"), headers=AUTH)
    ids2 = _ids(second.text)
    assert ids2[0] == "inc-000070" and not set(ids) & set(ids2)  # the next page, no overlap
    by = lambda **q: _ids(http.get("/console/", params=q, headers=AUTH).text)  # noqa: E731
    assert set(by(status="closed", limit=200)) == {f"inc-{i:06d}" for i in range(0, 120, 5)}
    assert by(status="paused") == ["inc-000500"]
    assert set(by(node="node-3", limit=200)) == {f"inc-{i:06d}" for i in range(120) if i % 7 == 3}
    assert set(by(customer="acme-1", limit=200)) == {f"inc-{i:06d}" for i in range(120) if i % 3 == 1}
    pool1 = set(by(pool="pool-1", limit=200))
    assert pool1 == {f"inc-{i:06d}" for i in range(120) if i % 2 == 1}
    assert set(by(klass="gpu-xid", limit=200)) == pool1  # odd ones are the XID class here
    window = by(since="2026-11-30T13:00", until="2026-11-30T13:10", limit=200)
    assert window == [f"inc-{i:06d}" for i in range(69, 59, -1)]
    # The form sends every field, the empty ones as "": they filter nothing.
    blank = {"status": "", "klass": "", "pool": "", "node": "", "customer": "", "since": "", "until": ""}
    assert len(by(**blank)) == 50
    bad = http.get("/console/", params={"status": "burning"}, headers=AUTH)
    assert bad.status_code == 400 and "status" in bad.text
    forged = http.get("/console/", params={"cursor": "not-a-cursor"}, headers=AUTH)
    assert forged.status_code == 400 and "cursor" in forged.text


def test_a_page_costs_the_same_few_queries_whatever_the_store_holds(
    http: TestClient, store: IncidentStore
) -> None:
    counted: list[str] = []
    event.listen(store.engine, "before_cursor_execute", lambda *a: counted.append(a[2]))
    http.get("/console/", headers=AUTH)
    http.get("/console/", params={"node": "node-2", "status": "open"}, headers=AUTH)
    list_queries = len(counted)
    counted.clear()
    http.get("/console/incidents/inc-000003", headers=AUTH)
    assert list_queries <= 2 and len(counted) <= 6, (list_queries, counted)
    assert all("LIMIT" in q for q in counted if "FROM incidents" in q and "WHERE incidents.id =" not in q)


def test_an_incident_shows_its_timeline_with_the_gates_reasons_and_limits(http: TestClient) -> None:
    r = http.get("/console/incidents/inc-000003", headers=AUTH)
    assert r.status_code == 200
    timeline = r.text[r.text.index('id="timeline"') :]
    assert timeline.index("triage") < timeline.index("ALLOW k8s.cordon_node")  # in order
    assert "blast_radius.pool_cordoned" in timeline and "rate_limits.per_hour" in timeline
    assert "node-3" in r.text and "acme-0" in r.text and "pool-1" in r.text  # the affected entities
    assert http.get("/console/incidents/nope", headers=AUTH).status_code == 404


def test_untrusted_text_is_shown_never_run(http: TestClient) -> None:
    r = http.get("/console/incidents/inc-000500", headers=AUTH)
    assert r.status_code == 200
    page = r.text
    assert "<script>alert(1)" not in page and "onerror=alert" not in page.replace("onerror=alert(2)&gt;", "")
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "\u202e" not in page and "&lt;U+202E&gt;" in page  # the override shown, not obeyed
    assert 'href="javascript:' not in page
    assert "5,000 characters: show all" in page  # a very long reason folded, the page stays usable
    listed = http.get("/console/", params={"status": "paused"}, headers=AUTH).text
    assert "<script>alert(1)" not in listed and "javascript:alert(3)" in listed  # as text only
    assert 'href="javascript:' not in listed


def test_the_escaping_helpers() -> None:
    assert str(untrusted("<b>")) == '<span class="u">&lt;b&gt;</span>'
    assert "&lt;U+2066&gt;" in str(untrusted("a\u2066b"))
    assert safe_url("https://example.com/x?a=1") == "https://example.com/x?a=1"
    for bad in (
        "javascript:alert(1)",
        "JaVaScRiPt:alert(1)",
        "data:text/html,x",
        "//evil",
        "/relative",
        "https://a b",
    ):
        assert safe_url(bad) is None, bad


def test_containment_counts_the_agents_writes_against_the_limits(http: TestClient, tmp_path: Path) -> None:
    audit = AuditLog.from_url(f"sqlite:///{tmp_path / 'supply-agent.db'}")
    audit.clock = lambda: T0 + timedelta(hours=20, minutes=30)
    for n in range(3):
        for phase, outcome in (("before", "pending"), ("after", "executed")):
            audit.append(
                phase=phase,
                outcome=outcome,
                incident_id="inc-000001",
                step=n,
                tool="k8s.cordon_node",
                action_hash=f"c{n}",
                idempotency_key=f"k{n}",
                params={"node": f"node-{n}"},
                verdict="allow",
                targets={"nodes": [f"node-{n}"], "customers": [f"acme-{n}"]},
            )
    r = http.get("/console/containment", headers=AUTH)
    assert r.status_code == 200, r.text[:500]
    budgets = r.text[r.text.index('id="budgets"') :]
    # nodes 0 and 2 are in pool-0 (4 nodes), node 1 in pool-1 (3): 2/4 = 50% and 1/3 = 33.3%
    assert re.search(r"pool pool-0.*?50\.0%", budgets, re.S) and re.search(
        r"pool pool-1.*?33\.3%", budgets, re.S
    )
    assert re.search(r"blast_radius\.gpus_out</code></td>\s*<td>24 GPUs", budgets)
    assert re.search(r"tool k8s\.cordon_node.*?3 writes", budgets, re.S)
    assert "ON: 2 failed verifications" in r.text  # the breaker, as the cluster says
    assert 'sse-connect="/console/containment/stream"' in r.text


def test_the_picture_joins_what_the_records_join_and_escapes_its_labels() -> None:
    from supply_agent.web.picture import edges_of, entity_svg

    edges = edges_of(
        [{"node": "node-1", "pool": "pool-a"}, {"node": "node-2"}],
        [{"nodes": ["node-1"], "pods": ["t/p-1"], "customers": ["acme"]}],
    )
    assert edges == {
        ("pool", "pool-a", "node", "node-1"),
        ("node", "node-1", "pod", "t/p-1"),
        ("node", "node-1", "customer", "acme"),
    }
    svg = str(
        entity_svg(
            {"pool": ["pool-a"], "node": ["node-1", "node-2"], "pod": ["t/p-1"], "customer": ["acme", EVIL]},
            edges,
        )
    )
    assert svg.count("<line ") == 3 and svg.count("<rect ") == 6
    assert "<script>" not in svg and "&lt;script&gt;" in svg
    assert entity_svg({}, set()) == ""
    many = str(entity_svg({"node": [f"n{i}" for i in range(100)]}, set()))
    assert many.count("<rect ") == 30 and "first 30 of 100" in many


def test_containment_says_who_changed_a_latch_last_and_why() -> None:
    from types import SimpleNamespace

    from supply_agent.web.containment import containment

    def row(tool: str, by: str, reason: str, minutes: int) -> SimpleNamespace:
        return SimpleNamespace(
            tool=tool,
            phase="after",
            outcome="executed",
            approver=by,
            params={"reason": reason},
            at=T0 + timedelta(minutes=minutes),
            idempotency_key=f"{tool}-{minutes}",
            incident_id="control",
            step=0,
            targets=None,
        )

    audit = [
        row("control.freeze", "alice", "bad driver rollout in progress", 1),
        row("control.unfreeze", "bob", "rollout paused", 5),
        row("control.freeze", "carol", "second wave <b>now</b>", 9),
    ]
    view = containment(
        GlobalLimits(), audit, T0 + timedelta(hours=1), None, {"freeze": (True, "second wave")}
    )
    kill = next(x for x in view.latches if x.name == "kill switch")
    assert kill.on is True and kill.why == "second wave"
    assert kill.last_change.startswith("on by carol at 2026-11-30 12:09 UTC: second wave <b>now</b>")
    breaker = next(x for x in view.latches if x.name == "circuit breaker")
    assert breaker.on is None and breaker.last_change == "no change in the newest day"  # not read: unknown
    assert (
        not view.world_known
        and next(b for b in view.budgets if b.limit == "blast_radius.gpus_out").spent is None
    )


def test_every_viewer_shares_one_reading_of_the_world_per_push(store: IncidentStore, tmp_path: Path) -> None:
    reads: list[int] = []

    def world() -> WorldView:
        reads.append(1)
        return WorldView(now=T0, nodes={"node-0": NodeView(name="node-0", pool="pool-0", gpus=8)})

    audit = AuditLog.from_url(f"sqlite:///{tmp_path / 'supply-agent.db'}")
    console = Console(
        Settings(data_dir=tmp_path, console_token=SecretStr(TOKEN)),
        ConsoleReads(store.engine, audit.engine),
        GlobalLimits(),
        world=world,
        clock=lambda: T0,
        push_s=60.0,
    )
    http = TestClient(Starlette(routes=[Mount("/console", console_app(console))]))
    for _ in range(5):  # five people with the page open
        assert http.get("/console/containment", headers=AUTH).status_code == 200
    assert len(reads) == 1
    console.push_s = 0.0  # the next push reads again
    http.get("/console/containment", headers=AUTH)
    assert len(reads) == 2
