"""Which of an alert's labels names its node: the vocabulary is data (``data/node_labels.yaml``, each
label with its source), read once. Rules in the wild name the node ``node`` (kube-state-metrics),
``kubernetes_node`` (a ServiceMonitor's relabelling), ``Hostname`` (dcgm-exporter) or only the scrape
target's ``instance``; every playbook and tool reads ``node``.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

__all__ = [
    "GPU_SERIES_LABELS",
    "NodeLabel",
    "gpu_series",
    "is_node_name",
    "load_node_labels",
    "node_from_labels",
]

# The labels dcgm-exporter puts on every GPU series (its README: gpu, UUID, device, modelName), and the
# XID's, where a rule keeps it: an alert with any of them is about a GPU.
GPU_SERIES_LABELS = frozenset({"gpu", "UUID", "device", "modelName", "xid", "err_code"})


def gpu_series(labels: dict[str, str]) -> bool:
    """Whether an alert's labels are a GPU's series (see ``GPU_SERIES_LABELS``)."""
    return bool(GPU_SERIES_LABELS & labels.keys())


DATA = Path(__file__).resolve().parent / "data" / "node_labels.yaml"
# A Kubernetes node's name is a DNS-1123 subdomain (kubernetes.io/docs/concepts/overview/working-with-objects/names).
_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_ADDRESS = re.compile(r"^[0-9.]+$|:")  # an IPv4 or IPv6 address, not a name


def is_node_name(value: str) -> bool:
    """Whether a value can be a node's name: a DNS-1123 subdomain that is not an address."""
    return bool(value) and len(value) <= 253 and bool(_SUBDOMAIN.match(value)) and not _ADDRESS.search(value)


class NodeLabel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    label: str = Field(min_length=1, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    strip_port: bool = False
    lowercase: bool = Field(False, description="The value lowercased, as the kubelet names its node.")
    not_with: list[str] = Field(
        default_factory=list, description="Not taken from an alert that has any of these labels."
    )
    source: str = Field(min_length=10)


class _File(BaseModel):
    model_config = ConfigDict(extra="forbid")

    node_labels: list[NodeLabel] = Field(min_length=1)


def load_node_labels(path: Path = DATA) -> tuple[NodeLabel, ...]:
    """The labels, in order; a bad file is a ValueError naming the file and the field."""
    try:
        raw = yaml.safe_load(path.read_text())
        parsed = _File.model_validate(raw)
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"{path}: {exc}") from exc
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise ValueError(f"{path}: {where}: {err['msg']}") from exc
    names = [n.label for n in parsed.node_labels]
    if len(set(names)) != len(names):
        raise ValueError(f"{path}: node_labels: a label is listed twice")
    return tuple(parsed.node_labels)


@cache
def _labels() -> tuple[NodeLabel, ...]:
    return load_node_labels()


def node_from_labels(labels: dict[str, str]) -> tuple[str, str] | None:
    """The node an alert's labels name, and the label that named it; None when none does."""
    for entry in _labels():
        if any(k in labels for k in entry.not_with):
            continue
        value = labels.get(entry.label, "").strip()
        if entry.lowercase:
            value = value.lower()
        if entry.strip_port and value:
            host, sep, port = value.rpartition(":")
            value = host if sep and port.isdigit() and not host.endswith(":") else value
        if is_node_name(value):
            return value, entry.label
    return None
