"""The billing ledger: exact money, idempotent writes, windows, pauses, holds and double metering."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError
from sqlalchemy import event, func, select
from sqlalchemy.exc import OperationalError

from sandbox.fleet.admin import AdminClient
from tools.billing import (
    CreditInput,
    CreditRequest,
    CreditRow,
    Customer,
    HoldRequest,
    IdempotencyConflict,
    Keyed,
    Ledger,
    LedgerWriteError,
    MeteringInput,
    PauseRequest,
    PayoutInput,
    ReleaseRequest,
    ResumeRequest,
    UnknownCustomer,
    idempotency_key,
)

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
MAX = Decimal("500.00")


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def reading(
    meter: str,
    gpu_seconds: float,
    *,
    pod: str = "train-0",
    namespace: str = "tenant-acme",
    customer: str = "acme",
    gpus: int = 8,
    running: bool = True,
) -> dict[str, Any]:
    return {
        "meter": meter,
        "namespace": namespace,
        "pod": pod,
        "pod_uid": f"uid-{pod}",
        "customer": customer,
        "node": "gpu-node-1",
        "gpus": gpus,
        "running": running,
        "gpu_seconds": gpu_seconds,
    }


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    with Ledger.from_url(f"sqlite:///{tmp_path / 'ledger.db'}") as ledger:
        ledger.upsert_customer(Customer(id="acme", name="Acme AI", price_per_gpu_hour=Decimal("2.5000")))
        ledger.upsert_customer(Customer(id="globex", name="Globex", price_per_gpu_hour=Decimal("1.9900")))
        yield ledger


def credit(
    amount: str | Decimal, step: int | str = 1, customer: str = "acme", incident: str = "INC-1"
) -> CreditRequest:
    return CreditRequest(
        customer=customer, amount_usd=amount, reason="GPU lost mid-job", incident_id=incident, step=step
    )


def credit_rows(ledger: Ledger) -> int:
    with ledger.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(CreditRow)).scalar_one())


# -- models ----------------------------------------------------------------------------------------
def test_requests_are_the_tool_inputs_plus_a_key() -> None:
    pairs: list[tuple[type[Keyed], type[BaseModel]]] = [
        (CreditRequest, CreditInput),
        (PauseRequest, MeteringInput),
        (HoldRequest, PayoutInput),
    ]
    for request, tool_input in pairs:
        assert issubclass(request, tool_input) and issubclass(request, Keyed)
        assert set(tool_input.model_fields) <= set(request.model_fields)
        assert not {"incident_id", "step", "idempotency_key"} & set(
            tool_input.model_json_schema()["properties"]
        )
    assert not {"reason"} & (set(ResumeRequest.model_fields) | set(ReleaseRequest.model_fields))
    proposed = CreditInput.model_validate({"customer": "acme", "amount_usd": 12.5, "reason": "lost GPU"})
    keyed = CreditRequest(**proposed.model_dump(), incident_id="INC-1", step=2)
    assert keyed.amount_usd == Decimal("12.5")
    assert keyed.idempotency_key == idempotency_key("INC-1", 2, "billing.issue_credit")


def test_requests_are_held_to_the_ledgers_columns_and_refuse_what_they_do_not_know() -> None:
    long_customer, long_pod = "c" * 129, "p" * 254
    CreditInput(customer=long_customer, amount_usd=Decimal("1.00"), reason="r")  # the LLM may ask...
    with pytest.raises(ValidationError, match="at most 128"):  # ...the ledger has no room for it
        credit("1.00", customer=long_customer)
    MeteringInput(namespace="ns", pod=long_pod)
    with pytest.raises(ValidationError, match="at most 253"):
        PauseRequest(namespace="ns", pod=long_pod, incident_id="INC-1", step=1)
    with pytest.raises(ValidationError, match="at most 253"):
        ReleaseRequest(node="n" * 254, incident_id="INC-1", step=1)
    with pytest.raises(ValidationError, match="Extra inputs"):
        ResumeRequest.model_validate(
            {"namespace": "ns", "pod": "p", "reason": "x", "incident_id": "I", "step": 1}
        )
    assert (
        MeteringInput.model_validate({"namespace": "ns", "pod": "p", "bogus": 1}).pod == "p"
    )  # inputs ignore extras


def test_the_models_import_without_sqlalchemy() -> None:
    # The tool catalogue imports the models: they must not drag the database layer in with them.
    code = (
        "import sys; from tools.billing import CreditRequest, Usage; import tools.billing.models; "
        "assert 'sqlalchemy' not in sys.modules, 'sqlalchemy imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[3])


# -- keys and money --------------------------------------------------------------------------------
def test_idempotency_key_is_sha256_of_incident_step_and_action() -> None:
    key = idempotency_key("INC-1", 3, "billing.issue_credit")
    assert len(key) == 64 and int(key, 16) >= 0
    assert key == idempotency_key("INC-1", "3", "billing.issue_credit")
    assert key != idempotency_key("INC-1", 4, "billing.issue_credit")
    assert key != idempotency_key("INC-1", 3, "billing.pause_metering")
    assert idempotency_key("a", "b|c", "d") != idempotency_key("a|b", "c", "d")  # no separator games


def test_credits_are_exact_decimals(ledger: Ledger) -> None:
    first = ledger.issue_credit(credit("0.10", step=1), max_amount_usd=MAX)
    ledger.issue_credit(credit("0.20", step=2), max_amount_usd=MAX)
    ledger.issue_credit(credit("9999999.99", step=3), max_amount_usd=Decimal("10000000"))
    ledger.issue_credit(credit("0.01", step=4), max_amount_usd=MAX)
    assert isinstance(first.amount_usd, Decimal) and first.amount_usd == Decimal("0.10")
    result = ledger.credits_for_incident("INC-1")
    assert [c.amount_usd for c in result.credits] == [
        Decimal("0.10"),
        Decimal("0.20"),
        Decimal("9999999.99"),
        Decimal("0.01"),
    ]
    assert result.total_usd == Decimal("10000000.30") and str(result.total_usd) == "10000000.30"
    assert 0.1 + 0.2 != 0.3  # what a float would have done to the first two
    assert result.by_customer == {"acme": Decimal("10000000.30")}
    # Stored exactly (integer cents on SQLite), not as a binary float.
    raw = sqlite3.connect(ledger.engine.url.database or "").execute("SELECT amount_usd FROM billing_credits")
    assert [r[0] for r in raw] == [10, 20, 999999999, 1]


def test_money_refuses_floats_and_fractions_of_a_cent() -> None:
    with pytest.raises(ValidationError, match="not the float"):
        credit(0.1)  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="decimal places"):
        credit("1.005")


@pytest.mark.parametrize("amount", ["0", "0.00", "-1.00", "-0.01"])
def test_credits_must_be_positive(ledger: Ledger, amount: str) -> None:
    with pytest.raises(ValidationError, match="greater than 0"):
        ledger.issue_credit({**credit("1.00").model_dump(), "amount_usd": amount}, max_amount_usd=MAX)
    assert credit_rows(ledger) == 0


def test_credits_above_the_max_are_rejected(ledger: Ledger) -> None:
    with pytest.raises(ValidationError, match=r"above the 500\.00 USD"):
        ledger.issue_credit(credit("500.01"), max_amount_usd=MAX)
    assert credit_rows(ledger) == 0
    assert ledger.issue_credit(credit("500.00"), max_amount_usd=MAX).created
    with pytest.raises(ValidationError):
        ledger.issue_credit(credit("1.00", step=2), max_amount_usd=0.5)  # type: ignore[arg-type]


def test_same_key_twice_is_one_credit(ledger: Ledger) -> None:
    first = ledger.issue_credit(credit("42.00", step=7), max_amount_usd=MAX)
    second = ledger.issue_credit(credit("42.00", step=7), max_amount_usd=MAX)
    assert first.created and not second.created
    assert second.id == first.id and second.idempotency_key == first.idempotency_key
    assert first.idempotency_key == idempotency_key("INC-1", 7, "billing.issue_credit")
    assert credit_rows(ledger) == 1
    assert ledger.credits_for_incident("INC-1").total_usd == Decimal("42.00")


def test_same_key_with_another_amount_or_customer_is_an_error(ledger: Ledger) -> None:
    ledger.issue_credit(credit("42.00", step=7), max_amount_usd=MAX)
    with pytest.raises(IdempotencyConflict, match=r"42\.00"):
        ledger.issue_credit(credit("43.00", step=7), max_amount_usd=MAX)
    with pytest.raises(IdempotencyConflict, match="globex"):
        ledger.issue_credit(credit("42.00", step=7, customer="globex"), max_amount_usd=MAX)
    assert credit_rows(ledger) == 1


def test_credit_for_an_unknown_customer_is_refused(ledger: Ledger) -> None:
    with pytest.raises(UnknownCustomer, match="initech"):
        ledger.issue_credit(credit("1.00", customer="initech"), max_amount_usd=MAX)
    assert credit_rows(ledger) == 0


# -- usage -----------------------------------------------------------------------------------------
def test_ingest_twice_is_idempotent(ledger: Ledger) -> None:
    ledger.ingest_meters([reading("m-a", 0.0), reading("m-b", 0.0, pod="train-1")], at(0))
    rows = [reading("m-a", 8000.0), reading("m-b", 4000.5, pod="train-1")]
    first = ledger.ingest_meters(rows, at(1000))
    again = ledger.ingest_meters(rows, at(1000))
    assert first.records == 2 and first.billed_gpu_seconds == Decimal("12000.500")
    assert again.records == 0 and again.billed_gpu_seconds == 0
    assert sorted(again.already_ingested) == ["m-a", "m-b"]
    older = ledger.ingest_meters([reading("m-a", 4000.0)], at(500))  # a late, stale scrape
    assert older.records == 0 and older.already_ingested == ["m-a"]
    usage = ledger.usage_by_customer("acme", at(0), at(1000))
    assert usage.gpu_seconds == Decimal("12000.500")


def test_usage_is_the_delta_since_the_last_ingest(ledger: Ledger) -> None:
    ledger.ingest_meters([reading("m-a", 1000.0)], at(0))  # first sight: the whole counter so far
    ledger.ingest_meters([reading("m-a", 1800.0)], at(100))
    ledger.ingest_meters([reading("m-a", 2600.0)], at(200))
    result = ledger.ingest_meters([reading("m-a", 100.0)], at(300))  # exporter restarted: counter reset
    assert result.resets == ["m-a"] and result.billed_gpu_seconds == Decimal("100.000")
    assert ledger.usage_by_pod("tenant-acme", "train-0", at(-1000), at(300)).gpu_seconds == Decimal(
        "2700.000"
    )
    assert ledger.usage_by_pod("tenant-acme", "train-0", at(0), at(300)).gpu_seconds == Decimal("1700.000")


def test_usage_by_pod_customer_and_window_is_correct_and_costed(ledger: Ledger) -> None:
    ledger.ingest_meters(
        [
            reading("m-a", 0.0),
            reading("m-b", 0.0, pod="train-1", gpus=4),
            reading("m-g", 0.0, pod="infer-0", namespace="tenant-globex", customer="globex", gpus=2),
        ],
        at(0),
    )
    ledger.ingest_meters(
        [
            reading("m-a", 8 * 3600.0),
            reading("m-b", 4 * 3600.0, pod="train-1", gpus=4),
            reading("m-g", 2 * 3600.0, pod="infer-0", namespace="tenant-globex", customer="globex", gpus=2),
        ],
        at(3600),
    )
    pod = ledger.usage_by_pod("tenant-acme", "train-0", at(0), at(3600))
    assert pod.customer == "acme" and pod.meters == ["m-a"]
    assert pod.gpu_seconds == Decimal("28800.000")
    assert pod.cost_usd == Decimal("20.00")  # 8 GPU-hours at 2.50
    half = ledger.usage_by_pod("tenant-acme", "train-0", at(900), at(2700))
    assert half.gpu_seconds == Decimal("14400.000") and half.cost_usd == Decimal("10.00")
    acme = ledger.usage_by_customer("acme", at(0), at(3600))
    assert acme.gpu_seconds == Decimal("43200.000") and acme.cost_usd == Decimal("30.00")
    assert acme.meters == ["m-a", "m-b"] and acme.price_per_gpu_hour == Decimal("2.5000")
    globex = ledger.usage_by_customer("globex", at(0), at(3600))
    assert globex.gpu_seconds == Decimal("7200.000") and globex.cost_usd == Decimal("3.98")  # 2 h at 1.99
    assert ledger.usage_by_customer("acme", at(3600), at(7200)).gpu_seconds == 0
    assert ledger.usage_by_customer("acme", at(-7200), at(0)).gpu_seconds == 0
    assert ledger.usage_by_pod("tenant-acme", "nope", at(0), at(3600)).cost_usd == Decimal("0.00")
    with pytest.raises(ValidationError, match="before it starts"):
        ledger.usage_by_pod("tenant-acme", "train-0", at(10), at(0))
    with pytest.raises(ValidationError, match="timezone"):
        ledger.usage_by_customer("acme", datetime(2025, 3, 1), datetime(2025, 3, 2))


def test_usage_of_a_customer_without_a_price_has_no_cost(tmp_path: Path) -> None:
    with Ledger.from_url(f"sqlite:///{tmp_path / 'l.db'}") as bare:
        bare.ingest_meters([reading("m-a", 0.0)], at(0))
        bare.ingest_meters([reading("m-a", 800.0)], at(100))
        usage = bare.usage_by_customer("acme", at(0), at(100))
        assert usage.gpu_seconds == Decimal("800.000") and usage.cost_usd is None
    with Ledger.from_url(f"sqlite:///{tmp_path / 'd.db'}", default_price_per_gpu_hour=Decimal("3")) as priced:
        assert priced.ingest_meters([reading("m-a", 0.0)], at(0)).new_customers == ["acme"]
        priced.ingest_meters([reading("m-a", 3600.0)], at(100))
        assert priced.usage_by_customer("acme", at(0), at(100)).cost_usd == Decimal("3.00")


def test_pause_and_resume_exclude_the_paused_interval(ledger: Ledger) -> None:
    ledger.ingest_meters([reading("m-a", 0.0)], at(0))
    ledger.ingest_meters([reading("m-a", 800.0)], at(100))
    pause = PauseRequest(
        namespace="tenant-acme", pod="train-0", incident_id="INC-2", step=1, reason="GPU lost", at=at(100)
    )
    paused = ledger.pause_metering(pause)
    assert paused.paused and paused.changed
    assert not ledger.pause_metering(pause).changed  # same key: nothing new
    other = pause.model_copy(update={"step": 9, "idempotency_key": ""})
    assert not ledger.pause_metering(
        PauseRequest.model_validate(other.model_dump())
    ).changed  # already paused
    result = ledger.ingest_meters([reading("m-a", 1600.0)], at(200))
    assert result.paused == ["m-a"] and result.billed_gpu_seconds == 0
    assert result.unbilled_gpu_seconds == Decimal("800.000")
    resume = ResumeRequest(namespace="tenant-acme", pod="train-0", incident_id="INC-2", step=2, at=at(250))
    resumed = ledger.resume_metering(resume)
    assert not resumed.paused and resumed.changed and resumed.resumed_at == at(250)
    assert not ledger.resume_metering(resume).changed
    assert not ledger.metering_state("tenant-acme", "train-0").paused
    # The window 200..400 was paused until 250: a quarter of it is not billed.
    ledger.ingest_meters([reading("m-a", 3200.0)], at(400))
    usage = ledger.usage_by_pod("tenant-acme", "train-0", at(0), at(400))
    assert usage.gpu_seconds == Decimal("2000.000")  # 0..100 and 250..400
    assert usage.unbilled_gpu_seconds == Decimal("1200.000")  # 100..250
    assert usage.cost_usd == (Decimal(2000) * Decimal("2.5") / 3600).quantize(Decimal("0.01"), ROUND_HALF_UP)
    assert ledger.usage_by_pod("tenant-acme", "train-0", at(100), at(250)).gpu_seconds == 0
    with pytest.raises(IdempotencyConflict):
        ledger.pause_metering(pause.model_copy(update={"pod": "train-1"}))


def test_payout_hold_and_release(ledger: Ledger) -> None:
    hold = HoldRequest(
        node="gpu-node-7", host_id="host-42", incident_id="INC-3", step=1, reason="GPU fell off the bus"
    )
    held = ledger.hold_payout(hold)
    assert held.held and held.changed and held.host_id == "host-42"
    assert not ledger.hold_payout(hold).changed
    assert ledger.payout_hold("gpu-node-7").held
    assert not ledger.payout_hold("gpu-node-8").held
    with pytest.raises(IdempotencyConflict):
        ledger.hold_payout(hold.model_copy(update={"node": "gpu-node-8"}))
    release = ReleaseRequest(node="gpu-node-7", incident_id="INC-3", step=5)
    released = ledger.release_payout(release)
    assert not released.held and released.changed and released.released_at is not None
    assert not ledger.release_payout(release).changed
    assert not ledger.payout_hold("gpu-node-7").held
    again = ledger.hold_payout(HoldRequest(node="gpu-node-7", incident_id="INC-4", step=1))
    assert again.held and again.changed and again.hold_id != held.hold_id


# -- double metering -------------------------------------------------------------------------------
def test_meter_anomalies_find_a_double_metered_pod(ledger: Ledger) -> None:
    ledger.ingest_meters([reading("m-a", 0.0), reading("m-b", 0.0, pod="train-1")], at(0))
    rows = [
        reading("m-a-dup", 300.0),  # started later than the pod's own meter
        reading("m-a", 800.0),
        reading("m-b", 800.0, pod="train-1"),
        reading("m-b-dup", 40.0, pod="train-1", running=False),  # a stopped duplicate is not double metering
    ]
    ledger.ingest_meters(rows, at(100))
    anomalies = ledger.meter_anomalies(rows)
    assert len(anomalies) == 1
    a = anomalies[0]
    assert (a.namespace, a.pod, a.primary_meter, a.duplicate_meters) == (
        "tenant-acme",
        "train-0",
        "m-a",
        ["m-a-dup"],
    )
    assert a.overbilled_gpu_seconds == Decimal("300.000")
    assert a.billed_duplicate_gpu_seconds == Decimal("300.000")
    assert a.suggested_credit_usd == Decimal("0.21")  # 300 s at 2.50/h = 0.2083…
    assert ledger.meter_anomalies([reading("m-a", 1.0)]) == []


def test_the_meter_anomalies_tool_answers_metered_once_as_a_finding(ledger: Ledger) -> None:
    """The second source for a metering alert says "no" positively (no duplicate meters, nothing to
    credit) when the pod has one running meter, and raises (unknown) when no meter counts it at all."""
    from tools.catalogue import Clients, parse_input
    from tools.catalogue import run as run_tool

    feed = [reading("m-a", 500.0), reading("m-a-old", 20.0, running=False)]
    clients = Clients(kube=None, ledger=ledger, outbox=None, meters=lambda: feed)  # type: ignore[arg-type]
    once = run_tool(
        clients,
        "billing.meter_anomalies",
        parse_input("billing.meter_anomalies", {"namespace": "tenant-acme", "pod": "train-0"}),
    )
    assert (once.primary_meter, once.duplicate_meters, once.suggested_credit_usd) == (
        "m-a",
        [],
        Decimal("0.00"),
    )
    feed.append(reading("m-a-dup", 100.0))
    twice = run_tool(
        clients,
        "billing.meter_anomalies",
        parse_input("billing.meter_anomalies", {"namespace": "tenant-acme", "pod": "train-0"}),
    )
    assert "m-a-dup" in twice.duplicate_meters
    with pytest.raises(ValueError, match="no meter counts tenant-acme/nobody"):
        run_tool(
            clients,
            "billing.meter_anomalies",
            parse_input("billing.meter_anomalies", {"namespace": "tenant-acme", "pod": "nobody"}),
        )


# -- retries ---------------------------------------------------------------------------------------
class Flaky:
    """Make the next `times` statements starting with `verb` fail as a locked SQLite database does."""

    def __init__(self, ledger: Ledger, verb: str, times: int) -> None:
        self.verb, self.left, self.seen = verb, times, 0
        event.listen(ledger.engine, "before_cursor_execute", self)

    def __call__(self, conn: Any, cursor: Any, statement: str, *rest: Any) -> None:
        if statement.lstrip().upper().startswith(self.verb):
            self.seen += 1
            if self.left > 0:
                self.left -= 1
                raise sqlite3.OperationalError("database is locked")


def test_reads_retry_transient_errors(ledger: Ledger) -> None:
    ledger.issue_credit(credit("5.00"), max_amount_usd=MAX)
    flaky = Flaky(ledger, "SELECT", 3)
    assert ledger.credits_for_incident("INC-1").total_usd == Decimal("5.00")
    assert flaky.seen == 4
    Flaky(ledger, "SELECT", 4)
    with pytest.raises(OperationalError, match="locked"):
        ledger.credits_for_incident("INC-1")


def test_writes_never_retry_and_roll_back(ledger: Ledger) -> None:
    flaky = Flaky(ledger, "INSERT", 1)
    with pytest.raises(LedgerWriteError, match="rolled back"):
        ledger.issue_credit(credit("5.00"), max_amount_usd=MAX)
    assert flaky.seen == 1 and credit_rows(ledger) == 0
    flaky = Flaky(ledger, "INSERT", 1)
    with pytest.raises(LedgerWriteError):
        ledger.ingest_meters([reading("m-a", 0.0), reading("m-b", 0.0, pod="train-1")], at(0))
    assert flaky.seen == 1
    # Nothing of the failed ingest stuck: the next one sees both meters for the first time.
    assert ledger.ingest_meters([reading("m-a", 8.0), reading("m-b", 8.0, pod="train-1")], at(1)).records == 2


# -- the sandbox fleet, end to end -----------------------------------------------------------------
def test_double_metering_in_the_sandbox_fleet_is_found_and_credited(
    admin: AdminClient, tmp_path: Path
) -> None:
    price = Decimal("2.40")
    ledger = Ledger.from_url(f"sqlite:///{tmp_path / 'fleet-ledger.db'}", default_price_per_gpu_hour=price)
    before = admin.meters()
    t0 = datetime.fromisoformat(before["now"])
    ledger.ingest_meters(before["meters"], t0)
    assert ledger.meter_anomalies(before["meters"]) == []
    target = next(m for m in before["meters"] if m["namespace"].startswith("tenant-") and m["running"])
    ns, pod, gpus = target["namespace"], target["pod"], target["gpus"]

    admin.inject("double-metering", namespace=ns, pod=pod)
    admin.advance(100)
    after = admin.meters()
    t1 = datetime.fromisoformat(after["now"])
    assert t1 - t0 == timedelta(seconds=100)
    ledger.ingest_meters(after["meters"], t1)
    usage = ledger.usage_by_pod(ns, pod, t0, t1)
    assert usage.gpu_seconds == Decimal(2 * 100 * gpus)  # billed twice

    anomalies = ledger.meter_anomalies(after["meters"])
    assert [(a.namespace, a.pod) for a in anomalies] == [(ns, pod)]
    anomaly = anomalies[0]
    assert anomaly.primary_meter == target["meter"]
    assert anomaly.duplicate_meters == [f"{target['meter']}-dup"]
    assert anomaly.overbilled_gpu_seconds == Decimal(100 * gpus)
    assert anomaly.billed_duplicate_gpu_seconds == Decimal(100 * gpus)
    owed = (Decimal(100 * gpus) * price / 3600).quantize(Decimal("0.01"), ROUND_HALF_UP)
    assert anomaly.suggested_credit_usd == owed and owed > 0

    issued = ledger.issue_credit(anomaly.credit_request("INC-fleet", 4), max_amount_usd=Decimal("100.00"))
    assert issued.created and issued.customer == target["customer"] and issued.amount_usd == owed
    repeat = ledger.issue_credit(anomaly.credit_request("INC-fleet", 4), max_amount_usd=Decimal("100.00"))
    assert not repeat.created and repeat.id == issued.id
    assert ledger.credits_for_incident("INC-fleet").total_usd == owed
    ledger.close()
