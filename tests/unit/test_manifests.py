"""deploy/ as it is applied: each overlay rendered by kustomize (the kubectl of the dev extras), every
object valid for the Kubernetes API (kubernetes-validate) or, for the Prometheus Operator's kinds, for
the fields their CRDs define; the agent's Deployment able to outlive its node; settings, secrets,
playbooks and metrics named in the manifests all existing in the code; the security scan clean."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import kubernetes_validate
import pytest
import yaml
from kubernetes import config
from pydantic import BaseModel, ConfigDict, Field

from supply_agent.metrics import Metrics
from supply_agent.policy.loader import load_playbooks
from supply_agent.settings import SECRETS_DIR_VARIABLE, Settings, load_settings
from tests.conftest import kubectl_binary

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
OVERLAYS = sorted(p.name for p in (DEPLOY / "overlays").iterdir() if p.is_dir())
# The oldest Kubernetes minor still in upstream support when this was written, and the newest the
# validator knows: an object valid for both.
VERSIONS = ("1.32.0", kubernetes_validate.latest_version())
AGENT = {"app.kubernetes.io/name": "supply-agent", "app.kubernetes.io/component": "agent"}
DURATION = r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"


def render(target: str) -> list[dict[str, Any]]:
    out = subprocess.run(
        [str(kubectl_binary()), "kustomize", str(DEPLOY / target)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, f"kubectl kustomize deploy/{target}:\n{out.stderr}"
    return [d for d in yaml.safe_load_all(out.stdout) if d]


@pytest.fixture(scope="module", params=["base", *(f"overlays/{o}" for o in OVERLAYS)])
def rendered(request: pytest.FixtureRequest) -> tuple[str, list[dict[str, Any]]]:
    return request.param, render(request.param)


def one(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"].startswith(name)]
    assert len(found) == 1, f"{kind} {name}: {len(found)} rendered"
    return found[0]


def containers(docs: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    for d in docs:
        if d["kind"] in ("Deployment", "DaemonSet"):
            for c in d["spec"]["template"]["spec"]["containers"]:
                yield f"{d['kind']} {d['metadata']['name']}", c


# -- the Prometheus Operator's kinds, as their CRDs define the fields used here -------------------------
# https://prometheus-operator.dev/docs/api-reference/api/#monitoring.coreos.com/v1.ServiceMonitor and
# .../v1.PrometheusRule (monitoring.coreos.com/v1): unknown fields are refused, as the CRDs'
# structural schemas prune or reject them.
class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Selector(_Strict):
    matchLabels: dict[str, str] = Field(min_length=1)


class _Endpoint(_Strict):
    port: str
    path: str = Field(pattern=r"^/")
    interval: str = Field(pattern=DURATION)


class _ServiceMonitorSpec(_Strict):
    selector: _Selector
    endpoints: list[_Endpoint] = Field(min_length=1)


class _Rule(_Strict):
    alert: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    expr: str = Field(min_length=1)
    for_: str | None = Field(None, alias="for", pattern=DURATION)
    labels: dict[str, str]
    annotations: dict[str, str]


class _Group(_Strict):
    name: str
    rules: list[_Rule] = Field(min_length=1)


class _PrometheusRuleSpec(_Strict):
    groups: list[_Group] = Field(min_length=1)


class _Meta(BaseModel):
    name: str
    namespace: str


class _CustomResource(_Strict):
    apiVersion: Literal["monitoring.coreos.com/v1"]
    kind: Literal["ServiceMonitor", "PrometheusRule"]
    metadata: _Meta


CRD_SPECS: dict[str, type[BaseModel]] = {
    "ServiceMonitor": _ServiceMonitorSpec,
    "PrometheusRule": _PrometheusRuleSpec,
}


# -- rendering and schemas ---------------------------------------------------------------------------
def test_every_object_rendered_validates(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    target, docs = rendered
    kinds = {d["kind"] for d in docs}
    wanted = {"Deployment", "Service", "PodDisruptionBudget", "NetworkPolicy", "DaemonSet", *CRD_SPECS}
    assert wanted <= kinds, wanted - kinds
    for d in docs:
        where = f"deploy/{target}: {d['kind']} {d['metadata']['name']}"
        if d["kind"] in CRD_SPECS:
            _CustomResource.model_validate({k: v for k, v in d.items() if k != "spec"})
            CRD_SPECS[d["kind"]].model_validate(d["spec"])
            continue
        for version in VERSIONS:
            try:
                kubernetes_validate.validate(d, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                pytest.fail(
                    f"{where} is not a valid object for Kubernetes {version}: {exc.message} at {exc.path}"
                )
        assert d["metadata"].get("namespace", "supply-agent-system") == "supply-agent-system" or d[
            "kind"
        ] in (
            "ClusterRole",
            "ClusterRoleBinding",
            "Namespace",
        ), where


def test_the_validator_refuses_a_broken_object() -> None:
    """The check above can fail: a Deployment with a misspelt field and a wrong type is refused."""
    dep = one(render("base"), "Deployment", "supply-agent")
    dep["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(dep, VERSIONS[0], strict=True)
    dep["spec"]["replicas"] = 2
    dep["spec"]["template"]["spec"]["containers"][0]["imagePullPolisy"] = "Always"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(dep, VERSIONS[0], strict=True)


# -- the agent outlives its node ---------------------------------------------------------------------
def test_the_agent_runs_as_several_replicas_spread_off_gpu_nodes(
    rendered: tuple[str, list[dict[str, Any]]],
) -> None:
    _, docs = rendered
    dep = one(docs, "Deployment", "supply-agent")
    spec = dep["spec"]["template"]["spec"]
    assert dep["spec"]["replicas"] >= 2
    assert (
        dep["spec"]["selector"]["matchLabels"]
        == AGENT
        == {k: v for k, v in dep["spec"]["template"]["metadata"]["labels"].items() if k in AGENT}
    )
    anti = spec["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert any(
        t["topologyKey"] == "kubernetes.io/hostname" and t["labelSelector"]["matchLabels"] == AGENT
        for t in anti
    )
    terms = spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"
    ]
    # Every term keeps it off GPU nodes (the terms are ORed: one without the expression would let it on).
    assert all(
        {"key": "nvidia.com/gpu.present", "operator": "DoesNotExist"} in t["matchExpressions"] for t in terms
    )
    pdb = one(docs, "PodDisruptionBudget", "supply-agent")
    assert pdb["spec"]["selector"]["matchLabels"] == AGENT
    assert 1 <= pdb["spec"]["maxUnavailable"] < dep["spec"]["replicas"]
    service = one(docs, "Service", "supply-agent")
    assert service["spec"]["selector"] == AGENT
    assert dep["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


def test_every_container_is_non_root_read_only_and_bounded(
    rendered: tuple[str, list[dict[str, Any]]],
) -> None:
    _, docs = rendered
    seen = 0
    for where, c in containers(docs):
        seen += 1
        sc = c["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False and sc["readOnlyRootFilesystem"] is True, where
        assert sc["capabilities"]["drop"] == ["ALL"] and not sc.get("capabilities", {}).get("add"), where
        assert not sc.get("privileged"), where
        assert c["resources"]["requests"]["cpu"] and c["resources"]["requests"]["memory"], where
        assert c["resources"]["limits"]["memory"], where
        assert c.get("readinessProbe") and c.get("livenessProbe"), where
    assert seen == 2
    dep = one(docs, "Deployment", "supply-agent")
    pod = dep["spec"]["template"]["spec"]
    (agent,) = pod["containers"]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] >= 10000
    assert agent["securityContext"]["runAsNonRoot"] is True
    # The pods' own token is mounted for the singletons' Leases, and its identity may do nothing else:
    # every rule bound to it is on Leases, in the agent's namespace.
    assert pod["automountServiceAccountToken"] is True and pod["serviceAccountName"] == "supply-agent"
    bound = [
        d
        for d in docs
        if d["kind"] in ("RoleBinding", "ClusterRoleBinding")
        and any(s.get("name") == "supply-agent" and s["kind"] == "ServiceAccount" for s in d["subjects"])
    ]
    assert [b["kind"] for b in bound] == ["RoleBinding"]
    role = one(docs, "Role", bound[0]["roleRef"]["name"])
    assert role["metadata"]["namespace"] == "supply-agent-system"
    assert [(r["apiGroups"], r["resources"]) for r in role["rules"]] == [
        (["coordination.k8s.io"], ["leases"])
    ]
    # serve answers both (tests/e2e/test_serve.py::test_health_ready_metrics_and_incidents_api): /readyz
    # is the worker's check of its store and the cluster, /healthz the intake's own.
    assert agent["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert agent["livenessProbe"]["httpGet"]["path"] == "/healthz"


# -- what the manifests name exists in the code ------------------------------------------------------
def _variables(docs: list[dict[str, Any]]) -> dict[str, str]:
    """Every SUPPLY_AGENT_* the manifests and the Containerfile set, and where."""
    found: dict[str, str] = {}
    for where, c in containers(docs):
        for e in c.get("env") or []:
            found[e["name"]] = where
    for d in docs:
        if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "supply-agent-settings":
            found |= {k: "ConfigMap supply-agent-settings" for k in d["data"]}
    for line in (ROOT / "Containerfile").read_text().splitlines():
        found |= {m: "Containerfile" for m in re.findall(r"\b(SUPPLY_AGENT_[A-Z0-9_]+)=", line)}
    return {k: v for k, v in found.items() if k.startswith("SUPPLY_AGENT_")}


def test_every_setting_the_manifests_set_is_one_the_agent_reads(
    rendered: tuple[str, list[dict[str, Any]]],
) -> None:
    _, docs = rendered
    known = {f"SUPPLY_AGENT_{name.upper()}" for name in Settings.model_fields} | {SECRETS_DIR_VARIABLE}
    variables = _variables(docs)
    assert len(variables) >= 6
    unknown = {k: v for k, v in variables.items() if k not in known}
    assert not unknown, f"settings no code reads (a typo?): {unknown}"
    data = one(docs, "ConfigMap", "supply-agent-settings")["data"]
    Settings.model_validate({k.removeprefix("SUPPLY_AGENT_").lower(): v for k, v in data.items()})


def test_secrets_are_referenced_never_carried(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    _, docs = rendered
    secret_settings = {
        f"SUPPLY_AGENT_{n.upper()}"
        for n, f in Settings.model_fields.items()
        if "SecretStr" in str(f.annotation) or n == "database_url"
    }
    assert "SUPPLY_AGENT_SLACK_SIGNING_SECRET" in secret_settings
    for d in docs:
        if d["kind"] == "Secret":  # only the token controller's, which it fills itself
            assert (
                d["type"] == "kubernetes.io/service-account-token"
                and not d.get("data")
                and not d.get("stringData")
            ), d["metadata"]["name"]
    for where, c in containers(docs):
        for e in c.get("env") or []:
            assert e["name"] not in secret_settings, f"{where}: {e['name']} as a variable; mount it as a file"
    dep = one(docs, "Deployment", "supply-agent")
    volumes = {v["name"]: v for v in dep["spec"]["template"]["spec"]["volumes"]}
    assert volumes["secrets"]["secret"]["secretName"] == "supply-agent-secrets"


def test_the_secrets_directory_is_read_as_the_deployment_mounts_it(tmp_path: Path) -> None:
    """A Secret mounted as files (key = the setting's variable) gives the settings; a variable of the same
    name wins; a directory that is not there is an error that names it."""
    (tmp_path / "SUPPLY_AGENT_DATABASE_URL").write_text("postgresql+psycopg://agent@db:5432/supply_agent\n")
    (tmp_path / "SUPPLY_AGENT_SLACK_SIGNING_SECRET").write_text("s3cret")
    s = load_settings({SECRETS_DIR_VARIABLE: str(tmp_path)})
    assert s.database_url == "postgresql+psycopg://agent@db:5432/supply_agent"
    assert s.slack_signing_secret is not None and s.slack_signing_secret.get_secret_value() == "s3cret"
    from supply_agent.incidents.agent import checkpoint_url

    assert checkpoint_url(s) == s.database_url  # one Postgres for the checkpoints too
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SUPPLY_AGENT_DATABASE_URL", "sqlite:///elsewhere.db")
        assert load_settings({SECRETS_DIR_VARIABLE: str(tmp_path)}).database_url == "sqlite:///elsewhere.db"
    with pytest.raises(ValueError, match=f"{SECRETS_DIR_VARIABLE}=.*nope: not a directory"):
        load_settings({SECRETS_DIR_VARIABLE: str(tmp_path / "nope")})
    assert checkpoint_url(Settings(data_dir=tmp_path)) == str(tmp_path / "checkpoints.sqlite")


def test_the_kubeconfigs_give_each_identity_its_mounted_token(tmp_path: Path) -> None:
    """The official client, given the ConfigMap's kubeconfigs, sends the token of the file mounted for
    that identity (and reads the CA from the same Secret)."""
    docs = render("base")
    kubeconfigs = one(docs, "ConfigMap", "supply-agent-kubeconfigs")["data"]
    dep = one(docs, "Deployment", "supply-agent")
    mounts = {
        m["name"]: m["mountPath"] for m in dep["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]
    }
    env = {e["name"]: e.get("value") for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["SUPPLY_AGENT_KUBECONFIG"] == f"{mounts['kubeconfigs']}/reader"
    assert env["SUPPLY_AGENT_WRITE_KUBECONFIG"] == f"{mounts['kubeconfigs']}/writer"
    for identity in ("reader", "writer"):
        text = kubeconfigs[identity]
        mount = mounts[f"{identity}-token"]
        assert f"{mount}/token" in text and f"{mount}/ca.crt" in text
        local = tmp_path / identity
        local.mkdir()
        (local / "token").write_text(f"token-of-the-{identity}\n")
        (local / "ca.crt").write_text("the cluster's CA, as the token controller writes it\n")
        api = config.new_client_from_config_dict(yaml.safe_load(text.replace(mount, str(local))))
        try:
            assert api.configuration.host == "https://kubernetes.default.svc"
            assert api.configuration.api_key["BearerToken"].strip() == f"Bearer token-of-the-{identity}"
        finally:
            api.close()


def test_the_playbooks_configmap_holds_every_playbook_and_loads(tmp_path: Path) -> None:
    docs = render("base")
    data = one(docs, "ConfigMap", "supply-agent-playbooks")["data"]
    files = sorted(p.name for p in (ROOT / "playbooks").iterdir() if p.suffix in (".yaml", ".yml"))
    missing = set(files) - set(data)
    assert not missing, f"playbooks/Kustomization does not list {sorted(missing)}"
    assert sorted(data) == files
    for name, text in data.items():  # as the pod sees the volume
        (tmp_path / name).write_text(text)
    mounted, repo = load_playbooks(tmp_path), load_playbooks(ROOT / "playbooks")
    assert sorted(p.id for p in mounted.playbooks) == sorted(p.id for p in repo.playbooks)
    dep = one(docs, "Deployment", "supply-agent")
    volumes = {v["name"]: v for v in dep["spec"]["template"]["spec"]["volumes"]}
    # The generated name (its hash rolls the replicas when a playbook changes) is the one mounted.
    assert (
        volumes["playbooks"]["configMap"]["name"]
        == one(docs, "ConfigMap", "supply-agent-playbooks")["metadata"]["name"]
    )


def test_the_alerts_name_only_metrics_the_agent_exports() -> None:
    docs = render("base")
    rules = [r for g in one(docs, "PrometheusRule", "supply-agent")["spec"]["groups"] for r in g["rules"]]
    exported = set()
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}
    for family in Metrics().registry.collect():  # the names in the text exposition Prometheus scrapes
        exported |= {family.name + suffix for suffix in suffixes.get(family.type, ("",))}
    used = {m for r in rules for m in re.findall(r"\bsupply_agent_[a-z_]+", r["expr"])}
    assert {
        "supply_agent_dead_letters_stored",
        "supply_agent_breaker_tripped",
        "supply_agent_queue_depth",
    } <= used
    assert not used - exported, f"alerts on metrics the agent does not export: {sorted(used - exported)}"
    monitor = one(docs, "ServiceMonitor", "supply-agent")
    service = one(docs, "Service", "supply-agent")
    # The ServiceMonitor selects the Service (by its labels) and scrapes a port it names.
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
    ports = {p["name"] for p in service["spec"]["ports"]}
    assert {e["port"] for e in monitor["spec"]["endpoints"]} <= ports


def test_the_agents_own_identity_only_holds_leases() -> None:
    docs = render("base")
    bound = [
        d
        for d in docs
        if d["kind"] in ("RoleBinding", "ClusterRoleBinding")
        and any(s["name"] == "supply-agent" for s in d["subjects"])
    ]
    assert [b["roleRef"]["name"] for b in bound] == ["supply-agent-leases"]
    assert bound[0]["kind"] == "RoleBinding"  # its namespace only
    role = one(docs, "Role", "supply-agent-leases")
    assert role["rules"] == [
        {
            "apiGroups": ["coordination.k8s.io"],
            "resources": ["leases"],
            "verbs": ["get", "list", "watch", "create", "update"],
        }
    ]


# -- the image -----------------------------------------------------------------------------------------
def test_the_containerfile_builds_in_two_stages_and_runs_non_root() -> None:
    lines = [
        line.strip()
        for line in (ROOT / "Containerfile").read_text().replace("\\\n", " ").splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    stages = [line for line in lines if line.startswith("FROM ")]
    assert len(stages) == 2 and stages[0].endswith(" AS build")
    final = lines[lines.index(stages[1]) :]
    user = [line.split()[1] for line in final if line.startswith("USER ")]
    assert user and user[-1].split(":")[0] not in ("0", "root")
    assert any(line.startswith("COPY --from=build ") for line in final)
    assert any(line.startswith("COPY playbooks ") for line in final)
    assert any(line.startswith("ENTRYPOINT") and '"supply-agent"' in line for line in final)
    dep = one(render("base"), "Deployment", "supply-agent")
    pod = dep["spec"]["template"]["spec"]
    assert str(pod["securityContext"]["runAsUser"]) == user[-1].split(":")[0]  # the image's own user


@pytest.mark.slow
def test_the_manifest_scan_passes_and_catches_a_privileged_pod(tmp_path: Path) -> None:
    """scripts/scan-manifests.sh (checkov): what deploy/ renders and the Containerfile pass, every kept
    finding skipped with its reason in the manifest; a privileged pod fails the same scan."""
    script = ROOT / "scripts" / "scan-manifests.sh"
    out = subprocess.run([str(script)], capture_output=True, text=True, timeout=600, check=False)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    assert "kubernetes scan results" in out.stdout and "dockerfile scan results" in out.stdout
    assert "Failed checks: 0" in out.stdout and "FAILED" not in out.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": "bad", "namespace": "default"},
                "spec": {
                    "containers": [{"name": "c", "image": "busybox", "securityContext": {"privileged": True}}]
                },
            }
        )
    )
    caught = subprocess.run([str(script), str(bad)], capture_output=True, text=True, timeout=600, check=False)
    assert caught.returncode != 0 and "CKV_K8S_16" in caught.stdout, caught.stdout[-2000:]
