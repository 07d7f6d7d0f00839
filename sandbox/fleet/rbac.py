"""Who may do what on the sandbox fleet: Kubernetes RBAC, evaluated the way kube-apiserver does it.

Pure: no I/O beyond reading the policy file, no HTTP. :func:`request_info` turns an HTTP request
(method, path, query) into Kubernetes request attributes as the apiserver's RequestInfoFactory does;
:class:`Policy` decides with the RBAC authorizer's rules; :func:`forbidden_message` writes the 403
message kube-apiserver writes.

Identities. The fleet issues four bearer tokens at start-up, one per identity:

======== =================================================================== ==========================
identity Kubernetes user                                                     allowed
======== =================================================================== ==========================
admin    ``sandbox-admin`` (group ``system:masters``)                        everything, as a cluster
                                                                             admin: kubectl in the
                                                                             README, evals, tests,
                                                                             ``supply-agent sandbox``
reader   ``system:serviceaccount:supply-agent-system:supply-agent-reader``   deploy/base/rbac.yaml + below
writer   ``system:serviceaccount:supply-agent-system:supply-agent-writer``   deploy/base/rbac.yaml + below
agent    ``system:serviceaccount:supply-agent-system:supply-agent``          deploy/base/agent-rbac.yaml:
                                                                             the singletons' Leases only
======== =================================================================== ==========================

The reader and the writer get exactly the rules deploy/base/rbac.yaml binds to their ServiceAccounts
(ClusterRoles through ClusterRoleBindings apply cluster-wide, Roles and RoleBindings only in their
namespace; apiGroups, resources with subresources, verbs and resourceNames as Kubernetes reads them),
plus two built-in grants that deploy/base/rbac.yaml does not (and need not) declare:

- discovery, as kube-apiserver's bootstrap ClusterRoles ``system:discovery`` and
  ``system:public-info-viewer`` give every authenticated user: ``get`` on ``/api``, ``/api/*``,
  ``/apis``, ``/apis/*``, ``/version``, ``/healthz``, ``/livez``, ``/readyz``, ``/openapi/*``.
- the sandbox's own non-Kubernetes endpoints the agent legitimately reads through the API server
  (``SandboxLink`` in supply_agent/environment.py), for the reader and the writer: ``get`` on
  ``/sandbox/v1/clock`` (the simulated time), ``/sandbox/v1/meters`` (what a metering exporter feeds
  the ledger) and ``/sandbox/v1/pagerduty/*`` (an incident's alert details, as PagerDuty's API would
  give them). Every other ``/sandbox/v1`` endpoint is admin only: ``faults``, ``faults/clear``,
  ``alerts``, ``clock/advance``, ``truth`` and ``requests`` (for evals, never the agent),
  ``snapshot``, ``restore``, ``events``, ``pods/{ns}/{name}/log``, ``info``. On a real cluster those
  paths do not exist; here they change the world or show what the agent must not see.

The HTTP method and path map to a Kubernetes verb as in kube-apiserver: GET or HEAD on an object is
``get``, on a collection ``list`` (``watch`` with ``watch=true``); POST ``create``; PUT
``update``; PATCH ``patch``; DELETE ``delete`` (``deletecollection`` on a collection). A non-resource
request's verb is the method in lower case. A list or watch with ``fieldSelector=metadata.name=X``
names ``X`` (so a rule with resourceNames can allow it), and a rule with resourceNames never allows a
request without a name (a create, a plain list), which is why deploy/base/rbac.yaml grants ConfigMap
``create`` in a rule of its own.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

RBAC_YAML = Path(__file__).resolve().parents[2] / "deploy" / "base" / "rbac.yaml"
# The agent's own identity (its pods' ServiceAccount): only the Leases that elect its singletons.
AGENT_RBAC_YAML = RBAC_YAML.with_name("agent-rbac.yaml")
AGENT_NAMESPACE = "supply-agent-system"
MASTERS = "system:masters"
AUTHENTICATED = "system:authenticated"


class PolicyError(ValueError):
    """The RBAC documents are malformed (a rule without verbs, a binding without a roleRef, ...)."""


# -- users ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class User:
    name: str
    groups: tuple[str, ...] = (AUTHENTICATED,)


def service_account(namespace: str, name: str) -> User:
    """A ServiceAccount's user, with the groups the token authenticator gives it."""
    return User(
        f"system:serviceaccount:{namespace}:{name}",
        ("system:serviceaccounts", f"system:serviceaccounts:{namespace}", AUTHENTICATED),
    )


ADMIN = User("sandbox-admin", (MASTERS, AUTHENTICATED))
READER = service_account(AGENT_NAMESPACE, "supply-agent-reader")
WRITER = service_account(AGENT_NAMESPACE, "supply-agent-writer")
AGENT = service_account(AGENT_NAMESPACE, "supply-agent")
IDENTITIES: dict[str, User] = {"admin": ADMIN, "reader": READER, "writer": WRITER, "agent": AGENT}


# -- request attributes -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class RequestInfo:
    """What kube-apiserver's RequestInfoFactory makes of a request (the authorizer's attributes)."""

    verb: str
    path: str
    resource_request: bool = False
    api_group: str = ""
    api_version: str = ""
    namespace: str = ""
    resource: str = ""
    subresource: str = ""
    name: str = ""

    @property
    def combined_resource(self) -> str:
        return f"{self.resource}/{self.subresource}" if self.subresource else self.resource

    @property
    def is_write(self) -> bool:
        return self.resource_request and self.verb not in READ_VERBS

    def describe(self) -> str:
        """``verb resource[/subresource]`` or ``verb /path``: a key for request counts."""
        return f"{self.verb} {self.combined_resource if self.resource_request else self.path}"


READ_VERBS = frozenset({"get", "list", "watch"})
_METHOD_VERBS = {"POST": "create", "GET": "get", "HEAD": "get", "PUT": "update", "PATCH": "patch"}
_NAMESPACE_SUBRESOURCES = frozenset({"status", "finalize"})
_TRUE = frozenset({"1", "true", "True"})


def _exact_name(field_selector: str) -> str:
    """The name a field selector requires exactly (``metadata.name=X`` among its terms), else ''."""
    for term in field_selector.split(","):
        key, op, value = term.partition("==") if "==" in term else term.partition("=")
        if op and not key.endswith("!") and key.strip() == "metadata.name":
            return value.strip()
    return ""


def request_info(method: str, path: str, query: Mapping[str, str] | None = None) -> RequestInfo:
    """Kubernetes request attributes of an HTTP request, as kube-apiserver resolves them.

    ``/api/v1/...`` and ``/apis/{group}/v1/...`` with a resource part are resource requests; anything
    else (discovery, ``/version``, ``/sandbox/v1/...``) is a non-resource request on its path."""
    q = query or {}
    method = method.upper()
    parts = [p for p in path.strip("/").split("/") if p]
    nonresource = RequestInfo(verb=method.lower(), path=path or "/")
    if len(parts) < 3 or parts[0] not in ("api", "apis"):
        return nonresource
    group = ""
    if parts[0] == "apis":
        if len(parts) < 4:
            return nonresource
        group, parts = parts[1], parts[2:]
    else:
        parts = parts[1:]
    version, parts = parts[0], parts[1:]
    verb = _METHOD_VERBS.get(method, "delete" if method == "DELETE" else method.lower())
    namespace = ""
    if parts[0] == "namespaces" and len(parts) > 1:
        namespace = parts[1]
        if len(parts) > 2 and parts[2] not in _NAMESPACE_SUBRESOURCES:
            parts = parts[2:]
    resource = parts[0]
    name = parts[1] if len(parts) > 1 else ""
    subresource = parts[2] if len(parts) > 2 else ""
    if not name and verb == "get":
        verb = "watch" if q.get("watch") in _TRUE else "list"
        name = _exact_name(q.get("fieldSelector") or "")
    if not name and verb == "delete":
        verb = "deletecollection"
    return RequestInfo(
        verb=verb,
        path=path,
        resource_request=True,
        api_group=group,
        api_version=version,
        namespace=namespace,
        resource=resource,
        subresource=subresource,
        name=name,
    )


# -- rules --------------------------------------------------------------------------------------------
def _strings(doc: Mapping[str, Any], key: str, where: str) -> frozenset[str]:
    value = doc.get(key) or []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise PolicyError(f"{where}: {key} must be a list of strings, not {value!r}")
    return frozenset(value)


@dataclass(frozen=True)
class Rule:
    """One PolicyRule."""

    verbs: frozenset[str]
    api_groups: frozenset[str] = frozenset()
    resources: frozenset[str] = frozenset()
    resource_names: frozenset[str] = frozenset()
    non_resource_urls: frozenset[str] = frozenset()

    @classmethod
    def parse(cls, doc: Mapping[str, Any], where: str) -> Rule:
        if not isinstance(doc, Mapping):
            raise PolicyError(f"{where}: a rule is a mapping, not {doc!r}")
        rule = cls(
            verbs=_strings(doc, "verbs", where),
            api_groups=_strings(doc, "apiGroups", where),
            resources=_strings(doc, "resources", where),
            resource_names=_strings(doc, "resourceNames", where),
            non_resource_urls=_strings(doc, "nonResourceURLs", where),
        )
        if not rule.verbs:
            raise PolicyError(f"{where}: a rule needs verbs")
        if not rule.resources and not rule.non_resource_urls:
            raise PolicyError(f"{where}: a rule needs resources or nonResourceURLs")
        return rule

    def _verb(self, verb: str) -> bool:
        return "*" in self.verbs or verb in self.verbs

    def _resource(self, info: RequestInfo) -> bool:
        combined = info.combined_resource
        for r in self.resources:
            if r in ("*", combined):
                return True
            if info.subresource and r == f"*/{info.subresource}":
                return True
        return False

    def _non_resource_url(self, path: str) -> bool:
        for url in self.non_resource_urls:
            if url in ("*", path) or (url.endswith("*") and path.startswith(url.rstrip("*"))):
                return True
        return False

    def allows(self, info: RequestInfo) -> bool:
        if not self._verb(info.verb):
            return False
        if not info.resource_request:
            return self._non_resource_url(info.path)
        return (
            ("*" in self.api_groups or info.api_group in self.api_groups)
            and self._resource(info)
            and (not self.resource_names or info.name in self.resource_names)
        )


@dataclass(frozen=True)
class Grant:
    """A rule bound to a subject: everywhere (a ClusterRoleBinding) or in one namespace (a RoleBinding)."""

    rule: Rule
    namespace: str | None
    source: str

    def allows(self, info: RequestInfo) -> bool:
        if self.namespace is not None and (not info.resource_request or info.namespace != self.namespace):
            return False
        return self.rule.allows(info)


@dataclass
class Policy:
    """Grants by subject: ``("User", name)`` or ``("Group", name)``."""

    grants: dict[tuple[str, str], list[Grant]] = field(default_factory=dict)

    def grants_for(self, user: User) -> list[Grant]:
        keys = [("User", user.name), *(("Group", g) for g in user.groups)]
        return [g for k in keys for g in self.grants.get(k, [])]

    def authorize(self, user: User, info: RequestInfo) -> bool:
        if MASTERS in user.groups:
            return True
        return any(g.allows(info) for g in self.grants_for(user))

    def add(self, subject: tuple[str, str], grants: Iterable[Grant]) -> None:
        self.grants.setdefault(subject, []).extend(grants)


def _subject(doc: Any, where: str) -> tuple[str, str]:
    if not isinstance(doc, Mapping) or not doc.get("kind") or not doc.get("name"):
        raise PolicyError(f"{where}: a subject needs kind and name, not {doc!r}")
    kind, name = str(doc["kind"]), str(doc["name"])
    if kind == "ServiceAccount":
        if not doc.get("namespace"):
            raise PolicyError(f"{where}: a ServiceAccount subject needs a namespace")
        return "User", f"system:serviceaccount:{doc['namespace']}:{name}"
    if kind in ("User", "Group"):
        return kind, name
    raise PolicyError(f"{where}: unknown subject kind {kind!r}")


def policy_from_documents(docs: Iterable[Any]) -> Policy:
    """A policy from Kubernetes RBAC objects; other kinds (Namespace, ServiceAccount) are skipped.

    A binding whose role is missing grants nothing, as in Kubernetes."""
    roles: dict[tuple[str, str, str], list[Rule]] = {}
    bindings: list[tuple[Mapping[str, Any], str]] = []
    for n, doc in enumerate(d for d in docs if d):
        if not isinstance(doc, Mapping):
            raise PolicyError(f"document {n}: not a mapping")
        kind = doc.get("kind")
        meta = doc.get("metadata") or {}
        name, namespace = str(meta.get("name", "")), str(meta.get("namespace", ""))
        where = f"{kind} {namespace + '/' if namespace else ''}{name}"
        if kind in ("ClusterRole", "Role"):
            if kind == "Role" and not namespace:
                raise PolicyError(f"{where}: a Role needs a namespace")
            rules = doc.get("rules") or []
            if not isinstance(rules, list):
                raise PolicyError(f"{where}: rules must be a list")
            key = (str(kind), namespace if kind == "Role" else "", name)
            roles[key] = [Rule.parse(r, f"{where} rule {i}") for i, r in enumerate(rules)]
        elif kind in ("ClusterRoleBinding", "RoleBinding"):
            if kind == "RoleBinding" and not namespace:
                raise PolicyError(f"{where}: a RoleBinding needs a namespace")
            bindings.append((doc, where))
    policy = Policy()
    for doc, where in bindings:
        ref = doc.get("roleRef") or {}
        ref_kind, ref_name = ref.get("kind"), ref.get("name")
        if ref_kind not in ("ClusterRole", "Role") or not ref_name:
            raise PolicyError(f"{where}: roleRef needs kind ClusterRole or Role and a name")
        if doc["kind"] == "ClusterRoleBinding" and ref_kind != "ClusterRole":
            raise PolicyError(f"{where}: a ClusterRoleBinding can only refer to a ClusterRole")
        # A RoleBinding grants in its namespace only, whether it refers to a Role or a ClusterRole.
        bound_ns = str((doc.get("metadata") or {}).get("namespace", ""))
        scope: str | None = bound_ns if doc["kind"] == "RoleBinding" else None
        rules = roles.get((str(ref_kind), bound_ns if ref_kind == "Role" else "", str(ref_name)), [])
        source = f"{where} -> {ref_kind} {ref_name}"
        for i, s in enumerate(doc.get("subjects") or []):
            policy.add(_subject(s, f"{where} subject {i}"), (Grant(r, scope, source) for r in rules))
    return policy


DISCOVERY = Rule(
    verbs=frozenset({"get"}),
    non_resource_urls=frozenset(
        {"/api", "/api/*", "/apis", "/apis/*", "/version", "/version/", "/healthz", "/livez", "/readyz"}
        | {"/openapi", "/openapi/*"}
    ),
)
SANDBOX_READS = Rule(
    verbs=frozenset({"get"}),
    non_resource_urls=frozenset({"/sandbox/v1/clock", "/sandbox/v1/meters", "/sandbox/v1/pagerduty/*"}),
)


def with_builtins(policy: Policy) -> Policy:
    """Add discovery for every authenticated user and the sandbox's agent-readable endpoints for the
    reader and the writer (see the module's opening comment)."""
    policy.add(("Group", AUTHENTICATED), [Grant(DISCOVERY, None, "system:discovery (built in)")])
    for user in (READER, WRITER):
        policy.add(("User", user.name), [Grant(SANDBOX_READS, None, "sandbox agent endpoints (built in)")])
    return policy


def load_policy(*paths: Path) -> Policy:
    """RBAC objects from files (default: deploy/base/rbac.yaml and agent-rbac.yaml) with the built-in
    grants."""
    docs: list[Any] = []
    for path in paths or (RBAC_YAML, AGENT_RBAC_YAML):
        try:
            text = path.read_text()
        except FileNotFoundError as exc:
            raise PolicyError(f"no RBAC policy at {path}: the sandbox fleet authorises with it") from exc
        try:
            docs.extend(yaml.safe_load_all(text))
        except yaml.YAMLError as exc:
            raise PolicyError(f"{path}: not valid YAML: {exc}") from exc
    return with_builtins(policy_from_documents(docs))


# -- the 403 ----------------------------------------------------------------------------------------------
def forbidden_message(user: User, info: RequestInfo) -> str:
    """kube-apiserver's message for a request the authorizer denied."""
    if not info.resource_request:
        return f'forbidden: User "{user.name}" cannot {info.verb} path "{info.path}"'
    scope = f'in the namespace "{info.namespace}"' if info.namespace else "at the cluster scope"
    why = (
        f'User "{user.name}" cannot {info.verb} resource "{info.combined_resource}" '
        f'in API group "{info.api_group}" {scope}'
    )
    qualified = f"{info.resource}.{info.api_group}" if info.api_group else info.resource
    if info.name:
        return f'{qualified} "{info.name}" is forbidden: {why}'
    return f"{qualified} is forbidden: {why}"


def forbidden_details(info: RequestInfo) -> dict[str, str]:
    """The Status details kube-apiserver sends with a 403 (empty fields left out)."""
    if not info.resource_request:
        return {}
    details = {"name": info.name, "group": info.api_group, "kind": info.resource}
    return {k: v for k, v in details.items() if v}
