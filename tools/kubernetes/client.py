"""Kubernetes tools over the official client: typed reads for investigation, dry-runnable writes.

The same code runs against a real cluster and the sandbox fleet. Reads retry transient failures
(connection errors, 429, 5xx) with jittered back-off; writes never retry on their own: the guarded
executor decides, and every write here is convergent (doing it twice leaves the same world).

`KubeTools` is composed here from the reads (:mod:`.reads`) and the writes (:mod:`.writes`), both over
the one API client and call of :mod:`.api`; this module is what callers import.
"""

from __future__ import annotations

from pathlib import Path

from kubernetes import client, config

from tools.kubernetes.api import (
    CUSTOMER_LABEL,
    DEFAULT_READ_BUDGET_S,
    DEFAULT_TIMEOUT,
    LOG_BYTES_MAX,
    LOG_TAIL_MAX,
    POOL_LABEL,
    POOL_RETRIES,
    TAINT_PREFIX,
    ToolError,
)
from tools.kubernetes.reads import KubeReads
from tools.kubernetes.writes import KubeWrites

__all__ = [
    "CUSTOMER_LABEL",
    "DEFAULT_READ_BUDGET_S",
    "DEFAULT_TIMEOUT",
    "LOG_BYTES_MAX",
    "LOG_TAIL_MAX",
    "POOL_LABEL",
    "TAINT_PREFIX",
    "KubeTools",
    "ToolError",
]


class KubeTools(KubeReads, KubeWrites):
    """Typed tools over one Kubernetes API client (read-only or read-write credentials)."""

    @classmethod
    def from_kubeconfig(
        cls,
        path: Path | None = None,
        context: str | None = None,
        *,
        timeout: tuple[float, float] = DEFAULT_TIMEOUT,
        read_budget_s: float = DEFAULT_READ_BUDGET_S,
    ) -> KubeTools:
        """A kubeconfig file (and context), or the in-cluster service account when no path is given;
        every call within ``timeout`` (connect, read) seconds, a read and its retries within
        ``read_budget_s``."""
        cfg = client.Configuration()
        if path is None:
            config.load_incluster_config(client_configuration=cfg)
        else:
            config.load_kube_config(config_file=str(path), context=context, client_configuration=cfg)
        cfg.retries = POOL_RETRIES
        return cls(client.ApiClient(cfg), timeout=timeout, read_budget_s=read_budget_s)
