"""kubectl's tables: the ``Table`` a list or get returns when asked ``as=Table``.

Kept apart because it is presentation only: the columns and cells ``kubectl get`` prints for each kind
(the same ones kube-apiserver's printers make), none of which changes what the API stores.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sandbox.fleet.api.discovery import Resource
from sandbox.fleet.store import Obj
from sandbox.fleet.world import is_terminating


def _age(created: str | None, now: datetime) -> str:
    if not created:
        return "<unknown>"
    secs = int((now - datetime.fromisoformat(created.replace("Z", "+00:00"))).total_seconds())
    if secs < 120:
        return f"{max(secs, 0)}s"
    if secs < 7200:
        return f"{secs // 60}m"
    if secs < 48 * 3600:
        return f"{secs // 3600}h"
    return f"{secs // 86400}d"


def _pod_status(pod: Obj) -> str:
    if is_terminating(pod):
        return "Terminating"
    for cs in pod["status"].get("containerStatuses") or []:
        waiting = (cs.get("state") or {}).get("waiting")
        if waiting:
            return str(waiting.get("reason", "Waiting"))
    return str(pod["status"].get("phase", "Unknown"))


def _node_status(node: Obj) -> str:
    ready = next((c for c in node["status"].get("conditions") or [] if c["type"] == "Ready"), None)
    text = "Ready" if ready and ready["status"] == "True" else ("NotReady" if ready else "Unknown")
    return text + (",SchedulingDisabled" if node["spec"].get("unschedulable") else "")


def _columns(*names: str) -> list[dict[str, Any]]:
    return [
        {
            "name": n,
            "type": "string",
            "format": "name" if n == "Name" else "",
            "description": n,
            "priority": 0,
        }
        for n in names
    ]


def table_for(res: Resource, objs: list[Obj], now: datetime) -> tuple[list[dict[str, Any]], list[list[Any]]]:
    def age(o: Obj) -> str:
        return _age(o["metadata"].get("creationTimestamp"), now)

    if res.plural == "nodes":
        columns = _columns(
            "Name",
            "Status",
            "Roles",
            "Age",
            "Version",
            "Internal-IP",
            "External-IP",
            "OS-Image",
            "Kernel-Version",
            "Container-Runtime",
        )
        for col in columns[5:]:
            col["priority"] = 1
        return columns, [
            [
                o["metadata"]["name"],
                _node_status(o),
                "<none>",
                age(o),
                o["status"]["nodeInfo"]["kubeletVersion"],
                o["status"]["addresses"][0]["address"],
                "<none>",
                o["status"]["nodeInfo"]["osImage"],
                o["status"]["nodeInfo"]["kernelVersion"],
                o["status"]["nodeInfo"]["containerRuntimeVersion"],
            ]
            for o in objs
        ]
    if res.plural == "pods":
        rows = []
        for o in objs:
            css = o["status"].get("containerStatuses") or []
            ready = f"{sum(1 for c in css if c.get('ready'))}/{len(o['spec']['containers'])}"
            restarts = sum(c.get("restartCount", 0) for c in css)
            rows.append(
                [
                    o["metadata"]["name"],
                    ready,
                    _pod_status(o),
                    restarts,
                    age(o),
                    o["status"].get("podIP") or "<none>",
                    o["spec"].get("nodeName") or "<none>",
                    "<none>",
                    "<none>",
                ]
            )
        columns = _columns(
            "Name", "Ready", "Status", "Restarts", "Age", "IP", "Node", "Nominated Node", "Readiness Gates"
        )
        for col in columns[5:]:
            col["priority"] = 1
        return columns, rows
    if res.plural == "deployments":
        return _columns("Name", "Ready", "Up-to-date", "Available", "Age"), [
            [
                o["metadata"]["name"],
                f"{o['status'].get('readyReplicas', 0)}/{o['spec'].get('replicas', 1)}",
                o["status"].get("updatedReplicas", 0),
                o["status"].get("availableReplicas", 0),
                age(o),
            ]
            for o in objs
        ]
    if res.plural == "replicasets":
        return _columns("Name", "Desired", "Current", "Ready", "Age"), [
            [
                o["metadata"]["name"],
                o["spec"].get("replicas", 0),
                o["status"].get("replicas", 0),
                o["status"].get("readyReplicas", 0),
                age(o),
            ]
            for o in objs
        ]
    if res.plural == "daemonsets":
        return _columns("Name", "Desired", "Current", "Ready", "Up-to-date", "Available", "Age"), [
            [
                o["metadata"]["name"],
                o["status"].get("desiredNumberScheduled", 0),
                o["status"].get("currentNumberScheduled", 0),
                o["status"].get("numberReady", 0),
                o["status"].get("updatedNumberScheduled", 0),
                o["status"].get("numberAvailable", 0),
                age(o),
            ]
            for o in objs
        ]
    if res.plural == "poddisruptionbudgets":
        return _columns("Name", "Min Available", "Max Unavailable", "Allowed Disruptions", "Age"), [
            [
                o["metadata"]["name"],
                str(o["spec"].get("minAvailable", "N/A")),
                str(o["spec"].get("maxUnavailable", "N/A")),
                o["status"].get("disruptionsAllowed", 0),
                age(o),
            ]
            for o in objs
        ]
    if res.plural == "events":
        return _columns("Last Seen", "Type", "Reason", "Object", "Message"), [
            [
                _age(o.get("lastTimestamp"), now),
                o.get("type", ""),
                o.get("reason", ""),
                f"{o['involvedObject'].get('kind', '').lower()}/{o['involvedObject'].get('name', '')}",
                o.get("message", ""),
            ]
            for o in objs
        ]
    if res.plural == "leases":  # kube-apiserver's printer: who holds each
        return _columns("Name", "Holder", "Age"), [
            [o["metadata"]["name"], (o.get("spec") or {}).get("holderIdentity") or "", age(o)] for o in objs
        ]
    if res.plural == "namespaces":
        return _columns("Name", "Status", "Age"), [
            [o["metadata"]["name"], o["status"].get("phase", "Active"), age(o)] for o in objs
        ]
    return _columns("Name", "Age"), [[o["metadata"]["name"], age(o)] for o in objs]


def table(res: Resource, objs: list[Obj], meta: dict[str, Any], now: datetime) -> dict[str, Any]:
    """The ``meta.k8s.io/v1`` Table of these objects, each row carrying its object's metadata."""
    columns, cells = table_for(res, objs, now)
    rows = [
        {
            "cells": c,
            "object": {
                "kind": "PartialObjectMetadata",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": o["metadata"],
            },
        }
        for c, o in zip(cells, objs, strict=True)
    ]
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": meta,
        "columnDefinitions": columns,
        "rows": rows,
    }
