"""Settings from the environment (prefix ``SUPPLY_AGENT_``) with embedded defaults."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class Settings(BaseSettings):
    """Every knob supply-agent reads. Defaults run the demo with no network and no API key."""

    model_config = SettingsConfigDict(env_prefix="SUPPLY_AGENT_", env_file=None, extra="ignore")

    data_dir: Path = Field(Path("var"), description="Where the SQLite store and reports live.")
    database_url: str = Field("", description="SQLAlchemy URL; empty means a SQLite file in data_dir.")
    kubeconfig: Path | None = Field(
        None, description="Target cluster (read-only credentials); empty means a sandbox fleet."
    )
    kube_context: str | None = Field(None, description="Context for reads in the kubeconfig.")
    write_kubeconfig: Path | None = Field(
        None, description="Credentials for writes; default: the read kubeconfig."
    )
    write_context: str | None = Field(None, description="Context for writes.")
    playbooks_dir: Path = Field(Path("playbooks"), description="Where the playbooks live.")
    approvers: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Who may approve (Slack user ids), comma-separated; adds to _global.yaml.",
    )
    planner: Literal["runbook", "anthropic", "openai", "router"] = "runbook"
    log_format: Literal["auto", "json", "console"] = "auto"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    anthropic_api_key: SecretStr | None = None
    openai_api_key: SecretStr | None = None
    anthropic_base_url: str | None = Field(None, description="Messages API base URL (a stub in tests).")
    openai_base_url: str | None = Field(None, description="Chat Completions base URL (a stub in tests).")
    anthropic_model: str = "claude-sonnet-4-6"
    openai_model: str = "gpt-4.1"
    models: dict[str, str] = Field(
        default_factory=dict,
        description='Model per graph node, e.g. {"plan": "claude-opus-4-1", "triage": "claude-haiku-4-5"}.',
    )
    llm_max_turns: int = Field(12, ge=1, le=100, description="Model calls per incident, at most.")
    llm_max_tokens: int = Field(2048, ge=64, le=32000, description="Output tokens per model call.")
    llm_timeout_s: float = Field(60.0, gt=0)
    router_llm: Literal["anthropic", "openai"] = "anthropic"
    checkpoint_url: str = Field(
        "", description="LangGraph checkpointer: postgresql://... or a SQLite path; empty: data_dir."
    )
    approval_identity: str = Field("", description="Who answers terminal approvals; default terminal:$USER.")
    verify_cap_s: float = Field(30.0, gt=0, description="Wall-clock cap on one verification poll loop.")
    world_cache: bool = Field(
        True,
        description="serve: keep a watch cache of nodes and pods (one LIST, then WATCH), so a decision "
        "reads its targets, not the whole cluster. One-shot commands (handle, eval) keep a cache of nodes "
        "only and read each decision's pods live by field selector.",
    )
    kube_connect_timeout_s: float = Field(5.0, gt=0, description="Kubernetes API: connect timeout.")
    kube_read_timeout_s: float = Field(30.0, gt=0, description="Kubernetes API: read timeout per call.")
    kube_read_budget_s: float = Field(75.0, gt=0, description="One read and its retries, at most.")
    executor_timeout_s: float = Field(
        300.0, gt=0, description="One write action (dry run and run) at most; it bounds the tool itself."
    )

    # -- the on-call surface (`supply-agent serve`) ---------------------------------------------------
    pagerduty_webhook_secrets: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list,
        description="V3 webhook signing secrets, comma-separated (several during rotation).",
    )
    pagerduty_api_key: SecretStr | None = Field(None, description="REST API key for write-back.")
    pagerduty_from: str = Field(
        "", description="Email of the PagerDuty user the agent acts as (From header)."
    )
    pagerduty_api_url: str = "https://api.pagerduty.com"
    pagerduty_ca_file: Path | None = Field(
        None, description="Extra CA bundle to trust for the PagerDuty API."
    )
    pagerduty_escalation_policy: str = Field("", description="Escalation policy id to hand incidents to.")
    pagerduty_user_id: str = Field(
        "", description="The agent's own PagerDuty user id (found by email if empty)."
    )
    slack_bot_token: SecretStr | None = None
    slack_signing_secret: SecretStr | None = None
    slack_channel: str = Field("", description="Where approval prompts go.")
    slack_api_url: str = "https://slack.com/api/"
    slack_approver_groups: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Slack user group ids whose members may approve, comma-separated."
    )
    alertmanager_token: SecretStr | None = Field(None, description="Bearer token Alertmanager sends.")
    console_token: SecretStr | None = Field(
        None,
        description="The console's bearer token (or log in with it at /console/login); with "
        "console_proxy_header unset too, the console is off.",
    )
    console_proxy_header: str | None = Field(
        None,
        description="The header an authenticating proxy (oauth2-proxy: X-Auth-Request-Email) names the "
        "signed-in person in; trusted as is, so the console must be reachable through that proxy only.",
    )
    console_pagerduty_url: str = Field(
        "https://app.pagerduty.com/incidents/", description="Where a PagerDuty incident id is opened."
    )
    console_slack_url: str | None = Field(
        None, description="The Slack workspace's URL (https://acme.slack.com), for links to prompts."
    )
    workers: int = Field(4, ge=1, le=64, description="Graph threads run at once.")
    queue_max: int = Field(10_000, ge=1, description="Stored events not yet handled, at most; then 503.")
    retry_after_s: int = Field(5, ge=1, description="Retry-After on a 503 when the queue is full.")
    max_body_bytes: int = Field(1_048_576, ge=1024, description="Largest webhook body accepted (else 413).")
    intake_head_timeout_s: float = Field(
        10.0, gt=0, description="A request head must be complete this long after connecting (else 408)."
    )
    intake_body_timeout_s: float = Field(
        30.0, gt=0, description="A request body must be complete this long after its head (else 408)."
    )
    intake_max_connections: int = Field(
        256, ge=2, description="Connections at once on the public port; past it 503 and closed."
    )
    intake_backlog: int = Field(256, ge=1, description="The public port's accept backlog.")
    grouping_window_s: float = Field(
        900.0, ge=0, description="The same alert again within this long after its incident closed joins it."
    )
    approval_sweep_s: float = Field(10.0, gt=0, description="How often expired approvals are swept.")
    retry_base_s: float = Field(
        0.5, gt=0, description="First back-off of a failed job or event; doubling, with full jitter."
    )
    retry_cap_s: float = Field(30.0, gt=0, description="Longest back-off between two attempts.")
    watchdog_s: float = Field(5.0, gt=0, description="How often the dead man's switch looks for stalls.")
    replica_id: str = Field(
        "", description="This replica's name in the leases; empty: the pod's (host) name and the process id."
    )
    lease_s: float = Field(
        15.0,
        ge=1.0,
        description="How long a replica's lease on an incident or a singleton lasts unrenewed: a dead or "
        "frozen replica's work moves to another within it.",
    )
    leader_election: Literal["database", "kubernetes"] = Field(
        "database",
        description="Who elects the singletons (dispatcher, approval sweeper, dead man's switch): the "
        "database leases alone, or Kubernetes Leases (coordination.k8s.io/v1) with the database lease "
        "taken under them as the fence; when the API server cannot be reached, the database decides.",
    )
    lease_namespace: str = Field(
        "supply-agent-system", description="The namespace of the singletons' Kubernetes Leases."
    )
    lease_kubeconfig: Path | None = Field(
        None,
        description="Credentials for the Leases; unset: the pod's ServiceAccount (in a cluster), or a "
        "sandbox fleet kubeconfig's sandbox-agent context.",
    )
    lease_context: str | None = Field(
        None, description="The context of lease_kubeconfig (or the kubeconfig)."
    )

    @field_validator("approvers", "slack_approver_groups", "pagerduty_webhook_secrets", mode="before")
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    def resolved_intake_url(self) -> str:
        """Where webhooks are stored before they are acknowledged: the database, or with the default SQLite
        store a file of its own, so the intake's writer never waits on the store's."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'intake.db').as_posix()}"

    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'supply-agent.db').as_posix()}"


# A directory of secrets, one file per setting named as its variable (SUPPLY_AGENT_DATABASE_URL, ...): a
# Kubernetes Secret mounted as a volume (deploy/base/agent.yaml), so secrets are files, not variables a
# child process or a crash report inherits. A variable of the same name still wins over its file.
SECRETS_DIR_VARIABLE = "SUPPLY_AGENT_SECRETS_DIR"


class SettingsError(ValueError):
    """Settings that cannot be read: says which and why."""


def load_settings(environ: dict[str, str] | None = None) -> Settings:
    """Settings from the environment, and from the files of ``$SUPPLY_AGENT_SECRETS_DIR`` when set."""
    env = os.environ if environ is None else environ
    secrets_dir = env.get(SECRETS_DIR_VARIABLE, "")
    if not secrets_dir:
        return Settings()
    path = Path(secrets_dir)
    if not path.is_dir():
        raise SettingsError(
            f"{SECRETS_DIR_VARIABLE}={secrets_dir}: not a directory (a mounted Secret is expected)"
        )
    return Settings(_secrets_dir=path)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return load_settings()
