"""Settings from the environment (prefix ``SUPPLY_AGENT_``) with embedded defaults."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


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
    approvers: list[str] = Field(
        default_factory=list, description="Who may approve (Slack user ids); adds to _global.yaml."
    )
    planner: Literal["runbook", "anthropic", "openai", "router"] = "runbook"
    log_format: Literal["auto", "json", "console"] = "auto"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    anthropic_api_key: SecretStr | None = None
    openai_api_key: SecretStr | None = None

    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'supply-agent.db').as_posix()}"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
