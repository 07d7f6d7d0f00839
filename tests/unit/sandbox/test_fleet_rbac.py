"""sandbox/fleet/rbac.py: request attributes and RBAC decisions as kube-apiserver makes them (pure)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from sandbox.fleet import rbac
from sandbox.fleet.rbac import ADMIN, READER, WRITER, PolicyError, RequestInfo, User, request_info

NS = "supply-agent-system"
FREEZE, BREAKER = "supply-agent-freeze", "supply-agent-circuit-breaker"


# -- HTTP request -> Kubernetes attributes ------------------------------------------------------------
# (method, path, query) -> (verb, api group, namespace, resource, subresource, name)
RESOLVE: list[tuple[str, str, dict[str, str], tuple[str, str, str, str, str, str]]] = [
    ("GET", "/api/v1/nodes", {}, ("list", "", "", "nodes", "", "")),
    ("GET", "/api/v1/nodes", {"watch": "true"}, ("watch", "", "", "nodes", "", "")),
    ("GET", "/api/v1/nodes", {"watch": "1"}, ("watch", "", "", "nodes", "", "")),
    ("GET", "/api/v1/nodes/n1", {}, ("get", "", "", "nodes", "", "n1")),
    ("HEAD", "/api/v1/nodes/n1", {}, ("get", "", "", "nodes", "", "n1")),
    ("PATCH", "/api/v1/nodes/n1", {}, ("patch", "", "", "nodes", "", "n1")),
    ("PUT", "/api/v1/nodes/n1", {}, ("update", "", "", "nodes", "", "n1")),
    ("DELETE", "/api/v1/nodes/n1", {}, ("delete", "", "", "nodes", "", "n1")),
    ("GET", "/api/v1/nodes/n1/status", {}, ("get", "", "", "nodes", "status", "n1")),
    ("GET", "/api/v1/pods", {"fieldSelector": "spec.nodeName=n1"}, ("list", "", "", "pods", "", "")),
    ("GET", "/api/v1/namespaces/t/pods", {}, ("list", "", "t", "pods", "", "")),
    ("POST", "/api/v1/namespaces/t/pods", {}, ("create", "", "t", "pods", "", "")),
    ("DELETE", "/api/v1/namespaces/t/pods", {}, ("deletecollection", "", "t", "pods", "", "")),
    ("DELETE", "/api/v1/namespaces/t/pods/p", {}, ("delete", "", "t", "pods", "", "p")),
    ("POST", "/api/v1/namespaces/t/pods/p/eviction", {}, ("create", "", "t", "pods", "eviction", "p")),
    ("GET", "/api/v1/namespaces/t/pods/p/log", {"tailLines": "5"}, ("get", "", "t", "pods", "log", "p")),
    ("GET", f"/api/v1/namespaces/{NS}/pods/a:9400/proxy/health", {},
     ("get", "", NS, "pods", "proxy", "a:9400")),
    ("GET", "/apis/apps/v1/namespaces/t/deployments/d/scale", {},
     ("get", "apps", "t", "deployments", "scale", "d")),
    ("PATCH", "/apis/apps/v1/namespaces/t/deployments/d", {}, ("patch", "apps", "t", "deployments", "", "d")),
    ("GET", "/apis/policy/v1/poddisruptionbudgets", {}, ("list", "policy", "", "poddisruptionbudgets", "", "")),
    ("GET", f"/api/v1/namespaces/{NS}/configmaps", {"fieldSelector": f"metadata.name={FREEZE}"},
     ("list", "", NS, "configmaps", "", FREEZE)),
    ("GET", f"/api/v1/namespaces/{NS}/configmaps", {"fieldSelector": f"a=b,metadata.name=={BREAKER}"},
     ("list", "", NS, "configmaps", "", BREAKER)),
    ("GET", f"/api/v1/namespaces/{NS}/configmaps", {"fieldSelector": f"metadata.name!={FREEZE}"},
     ("list", "", NS, "configmaps", "", "")),
    ("GET", "/api/v1/namespaces", {}, ("list", "", "", "namespaces", "", "")),
    ("GET", "/api/v1/namespaces/t", {}, ("get", "", "t", "namespaces", "", "t")),
    ("PUT", "/api/v1/namespaces/t/finalize", {}, ("update", "", "t", "namespaces", "finalize", "t")),
]  # fmt: skip


@pytest.mark.parametrize(
    ("method", "path", "query", "want"), RESOLVE, ids=[f"{r[0]} {r[1]}" for r in RESOLVE]
)
def test_resource_requests_resolve_as_kube_apiserver_does(
    method: str, path: str, query: dict[str, str], want: tuple[str, ...]
) -> None:
    info = request_info(method, path, query)
    assert info.resource_request
    assert (info.verb, info.api_group, info.namespace, info.resource, info.subresource, info.name) == want
    assert info.api_version == "v1"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/"),
        ("GET", "/api"),
        ("GET", "/api/v1"),
        ("GET", "/apis"),
        ("GET", "/apis/apps"),
        ("GET", "/apis/apps/v1"),
        ("GET", "/version"),
        ("GET", "/healthz"),
        ("GET", "/sandbox/v1/clock"),
        ("POST", "/sandbox/v1/faults"),
        ("DELETE", "/sandbox/v1/faults"),
    ],
)
def test_discovery_and_sandbox_paths_are_non_resource_requests(method: str, path: str) -> None:
    info = request_info(method, path)
    assert not info.resource_request
    assert (info.verb, info.path) == (method.lower(), path)
    assert not info.is_write  # only Kubernetes resource writes count as writes


# -- deploy/base/rbac.yaml ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def policy() -> rbac.Policy:
    return rbac.load_policy()


def req(method: str, path: str, **query: str) -> RequestInfo:
    return request_info(method, path, query)


POD = "/api/v1/namespaces/tenant-acme/pods/p"
AGENT_POD = f"/api/v1/namespaces/{NS}/pods/node-agent-x:9400/proxy/health"
CM = f"/api/v1/namespaces/{NS}/configmaps"
DEPLOY = "/apis/apps/v1/namespaces/tenant-acme/deployments/d"

READER_ALLOWED = [
    req("GET", "/api/v1/nodes"),
    req("GET", "/api/v1/nodes", watch="true"),
    req("GET", "/api/v1/nodes/n1"),
    req("GET", "/api/v1/pods", fieldSelector="spec.nodeName=n1"),
    req("GET", POD),
    req("GET", f"{POD}/log"),
    req("GET", "/api/v1/namespaces/tenant-acme/events"),
    req("GET", "/api/v1/namespaces"),
    req("GET", DEPLOY),
    req("GET", "/apis/apps/v1/namespaces/tenant-acme/replicasets"),
    req("GET", "/apis/apps/v1/daemonsets"),
    req("GET", "/apis/policy/v1/namespaces/tenant-acme/poddisruptionbudgets"),
    req("GET", AGENT_POD),
    req("GET", f"{CM}/{FREEZE}"),
    req("GET", f"{CM}/{BREAKER}"),
    req("GET", "/sandbox/v1/clock"),
    req("GET", "/sandbox/v1/meters"),
    req("GET", "/sandbox/v1/pagerduty/incidents/Q1/alerts"),
    req("GET", "/api"),
    req("GET", "/apis/apps/v1"),
    req("GET", "/version"),
]
READER_FORBIDDEN = [
    req("PATCH", "/api/v1/nodes/n1"),
    req("PUT", "/api/v1/nodes/n1"),
    req("DELETE", "/api/v1/nodes/n1"),
    req("GET", "/api/v1/nodes/n1/status"),  # a subresource is granted on its own
    req("POST", f"{POD}/eviction"),
    req("DELETE", POD),
    req("PATCH", POD),
    req("PATCH", DEPLOY),
    req("PATCH", f"{DEPLOY}/scale"),
    req("GET", f"{DEPLOY}/scale"),
    req("GET", "/api/v1/namespaces/tenant-acme/pods/p:9400/proxy/health"),  # pods/proxy: its namespace only
    req("GET", f"{CM}/other"),  # resourceNames
    req("GET", CM),  # no list granted; and a list names nothing: resourceNames could not allow it
    req("GET", CM, fieldSelector=f"metadata.name={FREEZE}"),  # named, but the reader may get, not list
    req("GET", f"/api/v1/namespaces/default/configmaps/{FREEZE}"),  # a Role: its namespace only
    req("PATCH", f"{CM}/{FREEZE}"),
    req("POST", CM),
    req("GET", "/api/v1/namespaces/default/secrets"),
    req("GET", "/api/v1/secrets"),
    req("POST", "/api/v1/namespaces"),
    req("GET", "/sandbox/v1/truth"),
    req("GET", "/sandbox/v1/requests"),
    req("GET", "/sandbox/v1/faults"),
    req("POST", "/sandbox/v1/faults"),
    req("POST", "/sandbox/v1/clock/advance"),
    req("GET", "/sandbox/v1/snapshot"),
    req("POST", "/sandbox/v1/restore"),
    req("GET", "/sandbox/v1/alerts"),
    req("GET", "/sandbox/v1/info"),
    req("POST", "/sandbox/v1/pagerduty/incidents/Q1/alerts"),
    req("POST", "/api"),
]
WRITER_ALLOWED = [
    req("GET", "/api/v1/nodes/n1"),
    req("GET", "/api/v1/nodes"),
    req("PATCH", "/api/v1/nodes/n1"),
    req("GET", "/api/v1/pods", fieldSelector="spec.nodeName=n1"),
    req("GET", POD),
    req("DELETE", POD),
    req("POST", f"{POD}/eviction"),
    req("GET", DEPLOY),
    req("PATCH", DEPLOY),
    req("GET", f"{DEPLOY}/scale"),
    req("PATCH", f"{DEPLOY}/scale"),
    req("GET", f"{CM}/{BREAKER}"),
    req("PATCH", f"{CM}/{BREAKER}"),
    req("PATCH", f"{CM}/{FREEZE}"),
    req("POST", CM),
    req("GET", "/sandbox/v1/clock"),
    req("GET", "/apis"),
]
WRITER_FORBIDDEN = [
    req("DELETE", "/api/v1/nodes/n1"),
    req("PUT", "/api/v1/nodes/n1"),
    req("GET", "/api/v1/nodes", watch="true"),
    req("GET", "/api/v1/namespaces/default/secrets"),
    req("GET", "/api/v1/namespaces/default/secrets/s"),
    req("DELETE", "/api/v1/namespaces/tenant-acme"),
    req("DELETE", "/api/v1/namespaces/tenant-acme/pods"),  # deletecollection
    req("PATCH", POD),
    req("GET", f"{POD}/log"),
    req("GET", AGENT_POD),
    req("GET", "/api/v1/namespaces/tenant-acme/events"),
    req("PUT", DEPLOY),
    req("PUT", f"{DEPLOY}/scale"),
    req("GET", "/apis/apps/v1/namespaces/tenant-acme/replicasets"),
    req("GET", "/apis/policy/v1/namespaces/tenant-acme/poddisruptionbudgets"),
    req("PATCH", f"{CM}/other"),
    req("DELETE", f"{CM}/{BREAKER}"),
    req("PATCH", f"/api/v1/namespaces/default/configmaps/{BREAKER}"),
    req("POST", "/api/v1/namespaces/default/configmaps"),
    req("GET", "/sandbox/v1/truth"),
    req("POST", "/sandbox/v1/faults/clear"),
]


def _id(info: RequestInfo) -> str:
    return (
        info.describe()
        + (f" ns={info.namespace}" if info.namespace else "")
        + (f" {info.name}" if info.name else "")
    )


@pytest.mark.parametrize("info", READER_ALLOWED, ids=_id)
def test_reader_may(policy: rbac.Policy, info: RequestInfo) -> None:
    assert policy.authorize(READER, info)


@pytest.mark.parametrize("info", READER_FORBIDDEN, ids=_id)
def test_reader_may_not(policy: rbac.Policy, info: RequestInfo) -> None:
    assert not policy.authorize(READER, info)


@pytest.mark.parametrize("info", WRITER_ALLOWED, ids=_id)
def test_writer_may(policy: rbac.Policy, info: RequestInfo) -> None:
    assert policy.authorize(WRITER, info)


@pytest.mark.parametrize("info", WRITER_FORBIDDEN, ids=_id)
def test_writer_may_not(policy: rbac.Policy, info: RequestInfo) -> None:
    assert not policy.authorize(WRITER, info)


def test_the_reader_never_writes(policy: rbac.Policy) -> None:
    for info in READER_ALLOWED:
        assert not info.is_write, info


def test_admin_may_do_anything_and_strangers_nothing(policy: rbac.Policy) -> None:
    for info in READER_ALLOWED + READER_FORBIDDEN + WRITER_FORBIDDEN:
        assert policy.authorize(ADMIN, info)
    stranger = User("system:serviceaccount:default:default", ("system:authenticated",))
    assert policy.authorize(stranger, req("GET", "/api/v1"))  # discovery is for every authenticated user
    for info in READER_ALLOWED + WRITER_ALLOWED:
        if info.resource_request or info.path.startswith("/sandbox/"):
            assert not policy.authorize(stranger, info), info
    assert not policy.authorize(User("anonymous", ()), req("GET", "/api"))


# -- RBAC semantics on policies of our own --------------------------------------------------------------
def docs(text: str) -> list[Any]:
    return list(yaml.safe_load_all(text))


BOUND = """
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: wide}
rules:
  - apiGroups: ["*"]
    resources: ["*/scale"]
    verbs: ["*"]
  - apiGroups: [""]
    resources: [pods]
    verbs: [get]
  - nonResourceURLs: ["/metrics", "/logs/*"]
    verbs: [get]
---
kind: ClusterRole
metadata: {name: ns-scoped}
rules:
  - apiGroups: [apps]
    resources: [deployments]
    verbs: [patch]
---
kind: Role
metadata: {name: local, namespace: team}
rules:
  - apiGroups: [""]
    resources: [nodes, configmaps]
    verbs: [get]
  - apiGroups: [""]
    resources: [secrets]
    resourceNames: [s1]
    verbs: [list, watch, get]
  - nonResourceURLs: ["/local"]
    verbs: [get]
---
kind: ClusterRoleBinding
metadata: {name: wide}
roleRef: {kind: ClusterRole, name: wide}
subjects: [{kind: User, name: alice}, {kind: Group, name: ops}]
---
kind: RoleBinding
metadata: {name: ns-scoped, namespace: team}
roleRef: {kind: ClusterRole, name: ns-scoped}
subjects: [{kind: User, name: alice}]
---
kind: RoleBinding
metadata: {name: local, namespace: team}
roleRef: {kind: Role, name: local}
subjects: [{kind: ServiceAccount, name: bot, namespace: team}]
---
kind: RoleBinding
metadata: {name: dangling, namespace: team}
roleRef: {kind: Role, name: no-such-role}
subjects: [{kind: User, name: carol}]
"""


def test_rbac_matching_semantics() -> None:
    p = rbac.policy_from_documents(docs(BOUND))
    alice, bob, bot = User("alice"), User("bob", ("ops",)), rbac.service_account("team", "bot")
    # "*/scale" matches any resource's scale subresource, and nothing else; "*" verbs and groups.
    assert p.authorize(alice, req("PUT", "/apis/apps/v1/namespaces/x/deployments/d/scale"))
    assert not p.authorize(alice, req("PUT", "/apis/apps/v1/namespaces/x/deployments/d"))
    # "pods" does not cover pods/log: a subresource is named on its own.
    assert p.authorize(alice, req("GET", "/api/v1/namespaces/x/pods/p"))
    assert not p.authorize(alice, req("GET", "/api/v1/namespaces/x/pods/p/log"))
    # The API group is part of the match.
    assert not p.authorize(alice, req("GET", "/apis/other/v1/namespaces/x/pods/p"))
    # Non-resource URLs: exact, or a prefix ending in "*"; only the verbs given.
    assert p.authorize(alice, req("GET", "/metrics"))
    assert p.authorize(alice, req("GET", "/logs/kubelet.log"))
    assert not p.authorize(alice, req("GET", "/metricsz"))
    assert not p.authorize(alice, req("POST", "/metrics"))
    # Groups are subjects too.
    assert p.authorize(bob, req("GET", "/metrics")) and not p.authorize(User("bob"), req("GET", "/metrics"))
    # A ClusterRole bound by a RoleBinding grants in that namespace only.
    assert p.authorize(alice, req("PATCH", "/apis/apps/v1/namespaces/team/deployments/d"))
    assert not p.authorize(alice, req("PATCH", "/apis/apps/v1/namespaces/other/deployments/d"))
    # A Role applies in its namespace, never at the cluster scope, and never to non-resource URLs.
    assert p.authorize(bot, req("GET", "/api/v1/namespaces/team/configmaps/c"))
    assert not p.authorize(bot, req("GET", "/api/v1/namespaces/other/configmaps/c"))
    assert not p.authorize(bot, req("GET", "/api/v1/nodes/n1"))
    assert not p.authorize(bot, req("GET", "/local"))
    # resourceNames: a named get, or a list or watch named by its field selector; never an unnamed list.
    secrets = "/api/v1/namespaces/team/secrets"
    assert p.authorize(bot, req("GET", f"{secrets}/s1"))
    assert not p.authorize(bot, req("GET", f"{secrets}/s2"))
    assert p.authorize(bot, req("GET", secrets, fieldSelector="metadata.name=s1"))
    assert p.authorize(bot, req("GET", secrets, fieldSelector="metadata.name=s1", watch="true"))
    assert not p.authorize(bot, req("GET", secrets, fieldSelector="metadata.name=s2"))
    assert not p.authorize(bot, req("GET", secrets))
    # A binding to a missing role grants nothing.
    assert not p.authorize(User("carol"), req("GET", "/api/v1/namespaces/team/configmaps/c"))


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("kind: ClusterRole\nmetadata: {name: r}\nrules: [{apiGroups: [''], resources: [pods]}]", "needs verbs"),
        ("kind: ClusterRole\nmetadata: {name: r}\nrules: [{verbs: [get]}]", "resources or nonResourceURLs"),
        ("kind: ClusterRole\nmetadata: {name: r}\nrules: [{verbs: get, resources: [pods]}]", "list of strings"),
        ("kind: Role\nmetadata: {name: r}\nrules: []", "needs a namespace"),
        ("kind: ClusterRoleBinding\nmetadata: {name: b}\nroleRef: {kind: Role, name: r}\nsubjects: []",
         "only refer to a ClusterRole"),
        ("kind: ClusterRoleBinding\nmetadata: {name: b}\nroleRef: {kind: ClusterRole, name: r}\n"
         "subjects: [{kind: ServiceAccount, name: sa}]", "needs a namespace"),
        ("kind: ClusterRoleBinding\nmetadata: {name: b}\nroleRef: {name: r}\nsubjects: []", "roleRef"),
    ],
)  # fmt: skip
def test_malformed_policies_are_refused(text: str, error: str) -> None:
    with pytest.raises(PolicyError, match=error):
        rbac.policy_from_documents(docs(text))


def test_a_missing_policy_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="no RBAC policy"):
        rbac.load_policy(tmp_path / "rbac.yaml")


# -- the 403 ------------------------------------------------------------------------------------------
def test_forbidden_messages_are_kube_apiservers() -> None:
    sa = READER.name
    assert rbac.forbidden_message(READER, req("PATCH", "/api/v1/nodes/x")) == (
        f'nodes "x" is forbidden: User "{sa}" cannot patch resource "nodes" in API group "" at the cluster scope'
    )
    assert rbac.forbidden_message(READER, req("POST", f"{POD}/eviction")) == (
        f'pods "p" is forbidden: User "{sa}" cannot create resource "pods/eviction" in API group "" '
        'in the namespace "tenant-acme"'
    )
    assert rbac.forbidden_message(READER, req("GET", "/api/v1/namespaces/default/secrets")) == (
        f'secrets is forbidden: User "{sa}" cannot list resource "secrets" in API group "" '
        'in the namespace "default"'
    )
    assert rbac.forbidden_message(READER, req("PATCH", DEPLOY)) == (
        f'deployments.apps "d" is forbidden: User "{sa}" cannot patch resource "deployments" '
        'in API group "apps" in the namespace "tenant-acme"'
    )
    assert rbac.forbidden_message(READER, req("GET", "/sandbox/v1/truth")) == (
        f'forbidden: User "{sa}" cannot get path "/sandbox/v1/truth"'
    )
    assert rbac.forbidden_details(req("PATCH", DEPLOY)) == {
        "name": "d",
        "group": "apps",
        "kind": "deployments",
    }
    assert rbac.forbidden_details(req("GET", "/api/v1/nodes")) == {"kind": "nodes"}
    assert rbac.forbidden_details(req("GET", "/sandbox/v1/truth")) == {}
