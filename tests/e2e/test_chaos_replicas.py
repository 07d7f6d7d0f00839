"""Three `serve` replicas on one PostgreSQL (started by scripts/postgres.sh), as real processes on
loopback, under a storm of pages sent round-robin with re-deliveries to a second replica; one replica
is SIGKILLed while it owns incidents, another SIGSTOPped past its leases and let go on, the third
restarted while the approvals wait. Then every approval is clicked, each at another replica.

What must hold: every delivery answered 2xx and stored once (acknowledged = stored); every incident
handled to an end or handed back (0 lost); each incident's writes made by one owner at a time, in the
order of the fencing tokens, none with a token that had moved on; no action run twice; no budget
spent past its hard limit; the killed replica's incidents taken over within the lease time."""

from __future__ import annotations

import collections
import itertools
import json
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from sandbox.fleet.admin import AdminClient
from sandbox.fleet.world import POOL_LABEL, RACK_LABEL
from supply_agent.policy import load_playbooks
from tests.support.pg_fixture import fresh_database
from tests.support.served import Served, approve_values, click, post_page, serve_env, until
from tests.support.service_harness import outside_world

LEASE_S = 3.0
INCIDENTS = 6
PLAYBOOKS = load_playbooks(Path(__file__).resolve().parents[2] / "playbooks")


def _spread_nodes(fleet: Any, n: int) -> list[str]:
    """n nodes in different racks, alternating pools: pages that fold into n incidents."""
    by_pool: dict[str, list[tuple[str, str]]] = collections.defaultdict(list)
    for node in fleet.store.items("nodes"):
        labels = node["metadata"]["labels"]
        by_pool[labels[POOL_LABEL]].append((labels.get(RACK_LABEL, ""), node["metadata"]["name"]))
    picked: list[str] = []
    racks: set[str] = set()
    pools = [sorted(v) for _, v in sorted(by_pool.items())]
    for pair in itertools.zip_longest(*pools):
        for item in pair:
            if item and item[0] not in racks and len(picked) < n:
                racks.add(item[0])
                picked.append(item[1])
    assert len(picked) == n, "the fleet has too few racks for the storm"
    return picked


@pytest.mark.chaos  # three replicas for minutes: make chaos; tests/e2e/test_replicas.py runs in make test
def test_three_replicas_a_storm_a_kill_a_freeze_and_a_restart_lose_nothing_and_repeat_nothing(
    tmp_path: Path, postgres_url: str
) -> None:
    url = fresh_database(postgres_url, "chaos_replicas").replace("postgresql://", "postgresql+psycopg://")
    db = create_engine(url)

    def q(sql: str, **params: Any) -> list[Any]:
        with db.connect() as conn:
            return list(conn.execute(text(sql), params))

    with outside_world(tmp_path, nodes=96) as (fleet, kubeconfig, pd, slack):
        admin = AdminClient.from_kubeconfig(kubeconfig)

        def env(i: int) -> dict[str, str]:
            (tmp_path / f"r{i}").mkdir(exist_ok=True)
            e = serve_env(tmp_path / f"r{i}", pd, slack)
            e.update(
                SUPPLY_AGENT_DATABASE_URL=url,
                SUPPLY_AGENT_REPLICA_ID=f"r{i}",
                SUPPLY_AGENT_LEASE_S=str(LEASE_S),
                SUPPLY_AGENT_WORKERS="2",
            )
            return e

        logs = [tmp_path / f"r{i}.log" for i in range(3)]
        replicas = [Served(env(i), kubeconfig, logs[i], single_process=True) for i in range(3)]
        try:
            nodes = _spread_nodes(fleet, INCIDENTS)
            for node in nodes:
                admin.inject("xid", node=node, gpu=1, code=79)
            admin.advance(1800)
            hooks = admin.alerts("pagerduty")
            assert len(hooks) == INCIDENTS
            for hook in hooks:
                pd_id = hook["event"]["data"]["id"]
                pd.alerts[pd_id] = admin.request("GET", f"pagerduty/incidents/{pd_id}/alerts")["alerts"]

            # The storm: round-robin, and every third page re-delivered to the next replica too.
            answers = []
            for j, hook in enumerate(hooks):
                answers.append(post_page(replicas[j % 3].url, hook))
                if j % 3 == 0:
                    answers.append(post_page(replicas[(j + 1) % 3].url, hook))
            assert all(r.status_code in (200, 202) for r in answers), [r.text for r in answers]

            # SIGKILL the replica that owns an incident mid-run.
            def owned() -> list[Any]:
                return q(
                    "SELECT name, owner FROM leases WHERE name NOT LIKE 'singleton:%' "
                    "AND expires_at > extract(epoch FROM clock_timestamp())"
                )

            held = until("an incident owned by a replica", owned, 60)
            victim_name = held[0][1].split(":", 1)[0]
            victim = int(victim_name.removeprefix("r"))
            theirs = {name for name, owner in owned() if owner.startswith(f"{victim_name}:")}
            killed_at = time.monotonic()
            replicas[victim].kill()
            # Their incidents move on within the lease time (plus a renewal round).
            moved: dict[str, float] = {}

            def taken_over() -> bool:
                for name, owner in q("SELECT name, owner FROM leases"):
                    if name in theirs and not owner.startswith(f"{victim_name}:") and name not in moved:
                        moved[name] = time.monotonic() - killed_at
                done = {i for i in theirs if i not in moved and _idle(q, i)}
                return set(moved) | done >= theirs

            until("the killed replica's incidents taken over", taken_over, 30)

            # SIGSTOP another past its leases (the one owning an incident now, else the dispatch's
            # leader): its work moves on, and when it wakes its next write is fenced off.
            def leader_of(rows: list[Any]) -> int | None:
                for _, owner in rows:
                    i = int(owner.split(":", 1)[0].removeprefix("r"))
                    if i != victim:
                        return i
                return None

            frozen = leader_of(owned()) or leader_of(q("SELECT name, owner FROM leases")) or (victim + 1) % 3
            frozen_held = {name for name, owner in owned() if owner.startswith(f"r{frozen}:")}
            replicas[frozen].freeze()
            time.sleep(LEASE_S + 2)
            stolen = {name for name, owner in q("SELECT name, owner FROM leases") if name in frozen_held}
            replicas[frozen].thaw()

            # Every incident reaches its approval (or its end); restart the third meanwhile.
            third = (victim + 2) % 3
            until("the approval prompts", lambda: len(approve_values(slack.posted())) >= 1, 90)
            replicas[third].stop()
            replicas[third] = Served(env(third), kubeconfig, logs[third], single_process=True)
            replicas[victim] = Served(env(victim), kubeconfig, logs[victim], single_process=True)

            def settled() -> bool:
                values = approve_values(slack.posted())
                for k, value in enumerate(values):
                    if value not in clicked:
                        r = click(replicas[(k + 1) % 3].url, value)
                        assert r.status_code == 200, r.text
                        clicked.add(value)
                open_ = q("SELECT id FROM incidents WHERE status <> 'closed'")
                return not open_ and not q("SELECT id FROM intake_events WHERE status = 'pending'")

            clicked: set[str] = set()
            try:
                until("every incident closed", settled, 120)
            except AssertionError as exc:
                raise AssertionError(f"{exc}\n{_diagnose(q, logs)}") from None
        finally:
            for r in replicas:
                r.thaw() if r.proc.poll() is None else None
                r.stop()

        # Acknowledged = stored = handled: one event per distinct page, all handled, none failed.
        events = q("SELECT status, count(*) FROM intake_events GROUP BY status")
        assert dict(events).get("failed", 0) == 0 and dict(events).get("pending", 0) == 0
        pages = q(
            "SELECT count(*) FROM intake_events WHERE source = 'pagerduty' AND event_type = 'incident.triggered'"
        )
        assert pages[0][0] == INCIDENTS
        # Each page's alert is in an incident: one of its own, or one it folded into (a shared
        # component, or an incident open on the same pool: arrival order across replicas decides).
        alerts = q("SELECT node, incident_id FROM alert_events WHERE status = 'firing'")
        assert {n for n, _ in alerts} == set(nodes) and all(i for _, i in alerts), alerts
        rows_ = q("SELECT id, outcome, folded_into FROM incidents")
        ends = [outcome for _, outcome, folded in rows_ if folded is None]
        assert ends and all(o in ("mitigated", "escalated") for o in ends), rows_

        # No action twice; each incident's writes in fencing-token order, by one owner per token.
        rows = q(
            "SELECT id, incident_id, idempotency_key, phase, outcome, fence_owner, fence_token, error, tool "
            "FROM audit ORDER BY id"
        )
        executed = collections.Counter(r[2] for r in rows if r[3] == "after" and r[4] == "executed")
        # No action twice. The one window left: a call in flight when its replica froze (its before
        # row written, the request not yet answered) may be made again by the lease's next owner, as
        # the other side takes no fencing token. Only the frozen replica's calls may be so repeated,
        # and the effects that must not double are keyed at their stores (credits, notices, prompts).
        twice = {k for k, n in executed.items() if n > 1}
        for key in twice:
            owners = [r[5] for r in rows if r[2] == key and r[3] == "before"]
            assert any(o.startswith(f"r{frozen}:") for o in owners) and len(set(owners)) > 1, (key, owners)
        credits = q("SELECT incident_id, count(*) FROM billing_credits GROUP BY incident_id")
        assert all(n == 1 for _, n in credits), credits
        # A prompt posted twice only through that window: its post's key is one the frozen replica had
        # in flight (a second message with the same buttons; the first click on either counts).
        prompts = collections.Counter(approve_values(slack.posted()))
        reposted = {r[1] for r in rows if r[2] in twice and r[8] == "slack.post"}
        doubled = {value.split("|", 1)[0] for value, n in prompts.items() if n > 1}
        assert doubled <= reposted, (prompts, reposted)
        befores = [r for r in rows if r[3] == "before"]
        assert all(r[5] and r[6] for r in befores), "a write made under no lease"
        for iid, group in itertools.groupby(sorted(befores, key=lambda r: (r[1], r[0])), key=lambda r: r[1]):
            tokens = [(r[6], r[5]) for r in group]
            assert [t for t, _ in tokens] == sorted(t for t, _ in tokens), (
                f"{iid}: a write with a stale token"
            )
            owners_per_token = collections.defaultdict(set)
            for token, owner in tokens:
                owners_per_token[token].add(owner)
            assert all(len(o) == 1 for o in owners_per_token.values()), iid

        # The budgets, spent by three replicas at once: never past a rate limit (the sandbox's clock
        # moved 30 minutes, inside one window) or the GPUs-out limit.
        per_hour = PLAYBOOKS.limits.rate_limits.per_hour
        done = collections.Counter(
            r[8] for r in rows if r[3] == "after" and r[4] == "executed" and r[8].startswith("k8s.")
        )
        for tool, n in done.items():
            assert n <= per_hour.get(tool, PLAYBOOKS.limits.rate_limits.default_per_hour), (tool, n)
        out = sum(p["nodes_cordoned"] for p in admin.truth()["pools"].values())
        assert out * 8 <= PLAYBOOKS.limits.blast_radius.gpus_out.hard + 8, out  # one node always allowed
        # Failover: the killed replica's incidents moved before its leases lapsed (its liveness lock went
        # with its connections: the survivors take its leases at their next look, not a lease time on).
        assert moved and all(t < LEASE_S for t in moved.values()), moved
        fenced = [r for r in rows if r[3] == "refused" and "fenced" in (r[7] or "")]
        # A fenced write is refused, never made, and only for a lease its writer no longer held: the frozen
        # replica's, or (on two busy cores) a live replica's that missed a renewal; its work moved on and
        # was finished (every incident closed, above).
        assert all(("lapsed" in r[7] or "moved" in r[7] or "held by" in r[7]) for r in fenced), fenced
        print(
            json.dumps(
                {
                    "failover_s": moved,
                    "frozen_held": sorted(stolen),
                    "fenced": len(fenced),
                    "in_flight_again": len(twice),
                }
            )
        )
    db.dispose()


def _diagnose(q: Any, logs: list[Path]) -> str:
    """What a person on call would look at first: what is open, what waits, who holds what."""
    parts = [
        "incidents: " + repr(q("SELECT id, status, outcome, folded_into FROM incidents")),
        "queued jobs: "
        + repr(
            q("SELECT kind, lane, attempts, left(last_error, 200) FROM service_jobs WHERE status = 'queued'")
        ),
        "dead jobs: "
        + repr(q("SELECT kind, lane, left(last_error, 200) FROM service_jobs WHERE status = 'dead'")),
        "leases: " + repr(q("SELECT name, owner, token FROM leases")),
        "prompts: " + repr(q("SELECT incident_id, status, decision FROM approval_prompts")),
        "events: "
        + repr(q("SELECT id, source, status, left(note, 200) FROM intake_events WHERE status <> 'handled'")),
    ]
    for log in logs:
        lines = [
            ln for ln in log.read_text(errors="replace").splitlines() if '"warning"' in ln or '"error"' in ln
        ]
        parts.append(f"{log.name}: " + "\n".join(lines[-15:]))
    return "\n".join(parts)


def _idle(q: Any, iid: str) -> bool:
    """An incident with no work left stored (its lease was released, not taken over)."""
    return not q("SELECT id FROM service_jobs WHERE incident_id = :i AND status = 'queued'", i=iid)
