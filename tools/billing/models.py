"""Billing's pydantic models, in one place: the tool inputs the LLM and the gate see, the ledger's
keyed requests built on them, and the ledger's results.

The four inputs (`CreditInput`, `MeteringInput`, `PayoutInput`, `UsageInput`) are the tools' JSON
schemas: change them and the LLM's tool definitions change. Each write request is its input plus
`Keyed` (incident, step, idempotency key, time), held to the ledger's column widths (see tables.py)
where the input is looser, so a field is defined once and the gate and the ledger cannot drift apart.

Pydantic only, no SQLAlchemy: the tool catalogue imports this module.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, ClassVar, Literal, Self

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from tools.billing.errors import LedgerError
from tools.billing.money import CURRENCY, Dollars, GpuSeconds, Price, gpu_seconds, no_float

Step = int | str
Name = Annotated[str, Field(min_length=1)]
NodeName = Annotated[str, Field(min_length=1, description="Exact node name. No wildcards or selectors.")]
# Where a request is stricter than its input: it must fit the ledger's columns (tables.py).
CustomerId = Annotated[Name, Field(max_length=128)]
KubeName = Annotated[Name, Field(max_length=253)]
KubeNodeName = Annotated[NodeName, Field(max_length=253)]


def idempotency_key(incident_id: str, step: Step, action: str) -> str:
    """SHA-256 hex of the JSON array ``[incident_id, str(step), action]`` (step 3 and "3" agree)."""
    payload = json.dumps([incident_id, str(step), action], separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(payload.encode()).hexdigest()


# == tool inputs: what the LLM and the gate see ====================================================
class _Pod(BaseModel):
    namespace: Name
    pod: Name


class _Node(BaseModel):
    node: NodeName


class CreditInput(BaseModel):
    customer: Name
    amount_usd: Dollars = Field(description="US dollars, at most 2 decimals.")
    reason: Annotated[Name, Field(max_length=500)]


class MeteringInput(_Pod):
    reason: str = ""


class PayoutInput(_Node):
    reason: str = ""


class UsageInput(BaseModel):
    customer: Name
    start: datetime
    end: datetime
    namespace: str | None = Field(None, description="With pod: that one pod's usage, not the customer's.")
    pod: str | None = None


# == the ledger's requests =========================================================================
class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Keyed(_Model):
    """Who asks (incident and step) and the key that makes asking twice act once.

    The key defaults to `idempotency_key(incident_id, step, action)`; `at` defaults to now.
    """

    action: ClassVar[str]

    incident_id: str = Field(min_length=1, max_length=256)
    step: Step
    idempotency_key: str = Field("", max_length=64)
    at: AwareDatetime | None = None

    @model_validator(mode="after")
    def _default_key(self) -> Self:
        if not self.idempotency_key:
            self.idempotency_key = idempotency_key(self.incident_id, self.step, self.action)
        return self


class CreditRequest(CreditInput, Keyed):
    """A credit to issue; the idempotency key defaults to the one for (incident, step, billing.issue_credit)."""

    action: ClassVar[str] = "billing.issue_credit"

    customer: CustomerId
    reason: Name  # the column is Text: the 500-character bound is the LLM's, not the ledger's

    @field_validator("amount_usd", mode="before")
    @classmethod
    def _exact(cls, value: Any) -> Any:
        return no_float(value)

    @field_validator("amount_usd")
    @classmethod
    def _at_most_the_max(cls, value: Decimal, info: ValidationInfo) -> Decimal:
        limit = (info.context or {}).get("max_amount_usd")
        if limit is not None and value > limit:
            raise ValueError(
                f"a credit of {value} {CURRENCY} is above the {limit} {CURRENCY} this call allows"
            )
        return value


class PauseRequest(MeteringInput, Keyed):
    """Stop billing a pod's metered usage from `at` (default now) until it is resumed."""

    action: ClassVar[str] = "billing.pause_metering"

    namespace: KubeName
    pod: KubeName


class ResumeRequest(_Pod, Keyed):
    """Bill a pod's metered usage again from `at` (default now)."""

    action: ClassVar[str] = "billing.resume_metering"

    namespace: KubeName
    pod: KubeName


class HoldRequest(PayoutInput, Keyed):
    """Hold the host's payout for a node from `at` (default now) until it is released."""

    action: ClassVar[str] = "billing.hold_payout"

    node: KubeNodeName
    host_id: str | None = Field(None, max_length=256)


class ReleaseRequest(_Node, Keyed):
    """Release the payout hold on a node from `at` (default now)."""

    action: ClassVar[str] = "billing.release_payout"

    node: KubeNodeName


class _Window(_Model):
    start: AwareDatetime
    end: AwareDatetime

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.end <= self.start:
            raise ValueError(
                f"the window ends ({self.end.isoformat()}) before it starts ({self.start.isoformat()})"
            )
        return self


class PodUsageQuery(_Window):
    """Usage of one pod in a window."""

    namespace: Name
    pod: Name


class CustomerUsageQuery(_Window):
    """Usage of one customer in a window."""

    customer: Name


# == records and results ===========================================================================
class Customer(_Model):
    """A customer and their list price per GPU-hour."""

    id: CustomerId
    name: str = Field(min_length=1, max_length=256)
    price_per_gpu_hour: Price


class MeterReading(BaseModel):
    """One row of the fleet's meters: a cumulative GPU-seconds counter for one pod."""

    model_config = ConfigDict(extra="ignore")

    meter: str = Field(min_length=1, max_length=256)
    namespace: Name
    pod: Name
    pod_uid: str = ""
    customer: str = ""
    node: str = ""
    gpus: int = Field(ge=0)
    running: bool
    gpu_seconds: GpuSeconds

    @field_validator("gpu_seconds")
    @classmethod
    def _to_millis(cls, value: Decimal) -> Decimal:
        return gpu_seconds(value)


class IngestResult(_Model):
    """What one ingest recorded."""

    at: datetime
    meters: int
    records: int
    billed_gpu_seconds: Decimal
    unbilled_gpu_seconds: Decimal
    already_ingested: list[str] = Field(description="Meters read at or before `at` already: skipped.")
    paused: list[str] = Field(
        description="Meters with usage recorded unbilled: their pod's metering is paused."
    )
    resets: list[str] = Field(description="Meters whose counter went backwards: counted from zero.")
    new_customers: list[str]


class Usage(_Model):
    """GPU-seconds in a window, billed and paused, and the cost of the billed part."""

    start: datetime
    end: datetime
    customer: str | None
    namespace: str | None = None
    pod: str | None = None
    gpu_seconds: Decimal = Field(description="Billed GPU-seconds.")
    unbilled_gpu_seconds: Decimal = Field(description="GPU-seconds metered while metering was paused.")
    price_per_gpu_hour: Decimal | None
    cost_usd: Decimal | None = Field(description="None where the customer has no price in the ledger.")
    meters: list[str]


class Credit(_Model):
    """A credit in the ledger."""

    id: int
    customer: str
    amount_usd: Decimal
    currency: Literal["USD"] = "USD"
    reason: str
    incident_id: str
    step: str
    idempotency_key: str
    created_at: datetime


class CreditResult(Credit):
    """A credit, and whether this call created it (False: the key had already been used for it)."""

    created: bool


class IncidentCredits(_Model):
    """Every credit issued for one incident, with totals."""

    incident_id: str
    credits: list[Credit]
    total_usd: Decimal
    by_customer: dict[str, Decimal]


class MeteringState(_Model):
    """Whether a pod's metering is paused, the pause concerned, and whether this call changed it."""

    namespace: str
    pod: str
    paused: bool
    changed: bool
    pause_id: int | None = None
    paused_at: datetime | None = None
    resumed_at: datetime | None = None
    incident_id: str | None = None
    reason: str = ""


class PayoutHold(_Model):
    """Whether a node's payout is held, the hold concerned, and whether this call changed it."""

    node: str
    held: bool
    changed: bool
    hold_id: int | None = None
    host_id: str | None = None
    held_at: datetime | None = None
    released_at: datetime | None = None
    incident_id: str | None = None
    reason: str = ""


class MeterAnomaly(_Model):
    """A pod's meters: the primary, and the other running meters, which over-bill. A pod metered once
    has no ``duplicate_meters`` and nothing to credit (:meth:`metered_once`)."""

    namespace: str
    pod: str
    pod_uid: str
    customer: str
    node: str
    primary_meter: str
    duplicate_meters: list[str]
    overbilled_gpu_seconds: Decimal = Field(description="The duplicate meters' counters, as read.")
    billed_duplicate_gpu_seconds: Decimal = Field(description="What the ledger billed on the duplicates.")
    price_per_gpu_hour: Decimal | None
    suggested_credit_usd: Decimal | None = Field(description="The billed duplicates at the customer's price.")

    @classmethod
    def metered_once(cls, meters: list[MeterReading]) -> MeterAnomaly:
        """The answer for a pod no two running meters count: its longest-counting meter, no duplicates."""
        primary = sorted(meters, key=lambda m: (not m.running, -m.gpu_seconds, m.meter))[0]
        zero = Decimal("0.000")
        return cls(
            namespace=primary.namespace,
            pod=primary.pod,
            pod_uid=primary.pod_uid,
            customer=primary.customer,
            node=primary.node,
            primary_meter=primary.meter,
            duplicate_meters=[],
            overbilled_gpu_seconds=zero,
            billed_duplicate_gpu_seconds=zero,
            price_per_gpu_hour=None,
            suggested_credit_usd=Decimal("0.00"),
        )

    def credit_request(self, incident_id: str, step: Step, reason: str | None = None) -> CreditRequest:
        """The credit that refunds what the duplicate meters billed."""
        if not self.suggested_credit_usd:
            raise LedgerError(f"nothing billed on {', '.join(self.duplicate_meters)} yet: no credit to issue")
        return CreditRequest(
            customer=self.customer,
            amount_usd=self.suggested_credit_usd,
            reason=reason
            or f"double metering of {self.namespace}/{self.pod}: {self.billed_duplicate_gpu_seconds} GPU-seconds",
            incident_id=incident_id,
            step=step,
        )
