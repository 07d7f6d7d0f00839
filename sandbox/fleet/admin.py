"""A client for the fleet's admin endpoints (``/sandbox/v1``), found through a kubeconfig."""

from __future__ import annotations

import base64
import json
import ssl
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import yaml


class AdminError(Exception):
    """The fleet refused a request; the message is the server's own."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def read_kubeconfig(path: Path) -> tuple[str, str, bytes | None]:
    """The current context's server URL, bearer token and CA, with errors that say what is wrong."""
    try:
        config = yaml.safe_load(path.read_text())
    except FileNotFoundError as exc:
        raise AdminError(
            2, f"kubeconfig {path} does not exist (start a fleet with `supply-agent sandbox serve`)"
        ) from exc
    except yaml.YAMLError as exc:
        raise AdminError(2, f"kubeconfig {path} is not valid YAML: {exc}") from exc
    try:
        ctx_name = config["current-context"]
        ctx = next(c["context"] for c in config["contexts"] if c["name"] == ctx_name)
        cluster = next(c["cluster"] for c in config["clusters"] if c["name"] == ctx["cluster"])
        user = next(u["user"] for u in config["users"] if u["name"] == ctx["user"])
        ca = cluster.get("certificate-authority-data")
        return str(cluster["server"]).rstrip("/"), str(user["token"]), base64.b64decode(ca) if ca else None
    except (KeyError, TypeError, StopIteration) as exc:
        raise AdminError(
            2, f"kubeconfig {path} has no usable current context with a server and a token ({exc})"
        ) from exc


class AdminClient:
    def __init__(self, url: str, token: str, ca_pem: bytes | None = None, timeout: float = 60.0) -> None:
        self.url, self.token, self.timeout = url.rstrip("/"), token, timeout
        self.ssl = (
            ssl.create_default_context(cadata=ca_pem.decode()) if ca_pem else ssl.create_default_context()
        )

    @classmethod
    def from_kubeconfig(cls, path: Path) -> AdminClient:
        return cls(*read_kubeconfig(path))

    def request(self, method: str, path: str, body: Any = None) -> Any:
        """A call to the sandbox's own endpoints (``/sandbox/v1/...``)."""
        return self._send(method, f"/sandbox/v1/{path.lstrip('/')}", body)

    def kube(self, method: str, path: str, body: Any = None, content_type: str = "application/json") -> Any:
        """A Kubernetes API call as the cluster admin (a human with kubectl), e.g. ``/api/v1/nodes/x``."""
        return self._send(method, "/" + path.lstrip("/"), body, content_type)

    def _send(self, method: str, path: str, body: Any, content_type: str = "application/json") -> Any:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(
            f"{self.url}{path}",
            data=data,
            method=method,
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": content_type},
        )
        try:
            with urllib.request.urlopen(req, timeout=self.timeout, context=self.ssl) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            try:
                message = json.loads(exc.read()).get("message", exc.reason)
            except (ValueError, AttributeError):
                message = str(exc.reason)
            raise AdminError(exc.code, message) from exc
        except urllib.error.URLError as exc:
            raise AdminError(2, f"cannot reach the sandbox fleet at {self.url}: {exc.reason}") from exc

    def inject(self, kind: str, **fields: Any) -> dict[str, Any]:
        return dict(
            self.request(
                "POST", "faults", {"kind": kind, **{k: v for k, v in fields.items() if v is not None}}
            )
        )

    def outage(self, seconds: float, mode: str = "refuse") -> dict[str, Any]:
        """Make the Kubernetes API refuse (503) or hang (accept, answer only at the end) for ``seconds``;
        0 ends an outage. The sandbox API stays up."""
        return dict(self.request("POST", "outage", {"seconds": seconds, "mode": mode}))

    def clear(
        self,
        node: str | None = None,
        *,
        rack: str | None = None,
        switch: str | None = None,
        gpu: int | None = None,
    ) -> dict[str, Any]:
        """Clear every fault, or a node's, or those of a rack's or a leaf switch's nodes; with ``gpu`` (and
        ``node``), reset that one GPU: its faults clear and it reports healthy."""
        body: dict[str, Any] = {k: v for k, v in (("node", node), ("rack", rack), ("switch", switch)) if v}
        if gpu is not None:
            body["gpu"] = gpu
        return dict(self.request("POST", "faults/clear", body))

    def uncordon(self, node: str) -> dict[str, Any]:
        """``kubectl uncordon``: the node takes new work again (a Kubernetes API patch, as the admin)."""
        patch = {"spec": {"unschedulable": None}}
        return dict(
            self.kube("PATCH", f"/api/v1/nodes/{node}", patch, "application/strategic-merge-patch+json")
        )

    def alerts(self, fmt: str = "alertmanager") -> Any:
        return self.request("GET", f"alerts?format={fmt}")

    def truth(self) -> dict[str, Any]:
        return dict(self.request("GET", "truth"))

    def meters(self, namespace: str | None = None, pod: str | None = None) -> dict[str, Any]:
        q = "&".join(f"{k}={v}" for k, v in (("namespace", namespace), ("pod", pod)) if v)
        return dict(self.request("GET", f"meters{'?' + q if q else ''}"))

    def advance(self, seconds: float) -> dict[str, Any]:
        return dict(self.request("POST", "clock/advance", {"seconds": seconds}))

    def snapshot(self) -> dict[str, Any]:
        return dict(self.request("GET", "snapshot"))

    def restore(self, snapshot: dict[str, Any]) -> dict[str, Any]:
        return dict(self.request("POST", "restore", snapshot))

    def append_log(self, namespace: str, pod: str, lines: list[str]) -> dict[str, Any]:
        return dict(self.request("POST", f"pods/{namespace}/{pod}/log", {"lines": lines}))

    def event(
        self,
        kind: str,
        name: str,
        reason: str,
        message: str,
        namespace: str | None = None,
        etype: str = "Warning",
    ) -> dict[str, Any]:
        """Record a Kubernetes Event on a node or a pod (its text is what a component wrote)."""
        body = {"kind": kind, "name": name, "namespace": namespace, "reason": reason, "message": message}
        return dict(self.request("POST", "events", {**body, "type": etype}))
