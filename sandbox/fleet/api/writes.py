"""Writes: patch (JSON, merge and strategic merge), replace, create and delete, each with ``dryRun``, the
``resourceVersion`` precondition, kube-apiserver's validation and the controllers run after a commit.

Every write the API accepts is recorded on the fleet (`Fleet.record_write`), with the identity that made
it, so evals can check what an agent changed, dry runs included, apart from what a human (the admin) did.
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from sandbox.fleet.api.discovery import Resource
from sandbox.fleet.api.responses import bad, invalid, json_response
from sandbox.fleet.api.state import APIState
from sandbox.fleet.patch import PatchError, json_patch, merge_patch, strategic_merge_patch
from sandbox.fleet.store import Obj, thaw
from sandbox.fleet.world import FleetError


class WritesMixin(APIState):
    """Patch, replace, create and delete."""

    def _record(
        self,
        request: Request,
        res: Resource,
        namespace: str,
        name: str,
        sub: str,
        code: int,
        dry: bool | None = None,
    ) -> None:
        verb = {"PATCH": "patch", "PUT": "update", "DELETE": "delete", "POST": "create"}.get(
            request.method, request.method
        )
        dry_run = "dryRun" in request.query_params if dry is None else dry
        by = self._identity(request) or ""
        self.fleet.record_write(verb, res.plural, namespace, name, sub, dry_run, code, by=by)

    def _check_rv(self, res: Resource, current: Obj, wanted: str | None) -> None:
        if wanted and wanted != current["metadata"]["resourceVersion"]:
            qualified = f"{res.plural}.{res.group}" if res.group else res.plural
            raise FleetError(
                409,
                "Conflict",
                f'Operation cannot be fulfilled on {qualified} "{current["metadata"]["name"]}": the object has '
                "been modified; please apply your changes to the latest version and try again",
                {"name": current["metadata"]["name"], "group": res.group, "kind": res.plural},
            )

    def _patch(self, request: Request, res: Resource, namespace: str, name: str, raw: bytes) -> Response:
        dry = self._dry_run(request)
        current = self._get(res, namespace, name)
        ctype = request.headers.get("content-type", "").split(";")[0].strip()
        try:
            patch = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise bad(f"error decoding patch: {exc}") from exc
        try:
            if ctype == "application/merge-patch+json":
                if not isinstance(patch, dict):
                    raise bad("a merge patch must be a JSON object")
                new = merge_patch(thaw(current), patch)
            elif ctype == "application/strategic-merge-patch+json":
                if not isinstance(patch, dict):
                    raise bad("a strategic merge patch must be a JSON object")
                new = strategic_merge_patch(thaw(current), patch)
            elif ctype == "application/json-patch+json":
                new = json_patch(current, patch)
            else:
                raise FleetError(
                    415,
                    "UnsupportedMediaType",
                    "the body of the request was in an unknown format - "
                    "accepted media types include: application/json-patch+json, application/merge-patch+json, "
                    "application/strategic-merge-patch+json",
                )
        except PatchError as exc:
            raise FleetError(exc.code, "Invalid" if exc.code == 422 else "BadRequest", str(exc)) from exc
        if not isinstance(new, dict):
            raise bad("the patched object is not an object")
        wanted = (new.get("metadata") or {}).get("resourceVersion")
        self._check_rv(res, current, wanted if wanted != current["metadata"]["resourceVersion"] else None)
        result = self._commit(res, current, new, dry, request)
        self._record(request, res, namespace, name, "", 200)
        return json_response(result)

    def _replace(self, request: Request, res: Resource, namespace: str, name: str, body: Any) -> Response:
        dry = self._dry_run(request)
        current = self._get(res, namespace, name)
        if not isinstance(body, dict) or not isinstance(body.get("metadata"), dict):
            raise bad("the body must be an object with metadata")
        if body["metadata"].get("name", name) != name:
            raise bad(
                f"the name of the object ({body['metadata'].get('name')}) does not match the name on the URL ({name})"
            )
        self._check_rv(res, current, body["metadata"].get("resourceVersion"))
        result = self._commit(res, current, body, dry, request)
        self._record(request, res, namespace, name, "", 200)
        return json_response(result)

    def _commit(self, res: Resource, current: Obj, new: Obj, dry: bool, request: Request) -> Obj:
        """Validate a changed object, keep what clients may not change, store it, run the controllers."""
        meta = new.setdefault("metadata", {})
        name = current["metadata"]["name"]
        for immutable in ("name", "namespace", "uid", "creationTimestamp"):
            if (
                meta.get(immutable) != current["metadata"].get(immutable)
                and current["metadata"].get(immutable) is not None
            ):
                if immutable in ("name", "namespace") and meta.get(immutable) is not None:
                    raise invalid(
                        res.kind,
                        name,
                        res.group,
                        [(f"metadata.{immutable}", "Invalid value: field is immutable")],
                    )
                meta[immutable] = current["metadata"][immutable]
        new["kind"], new["apiVersion"] = current["kind"], current["apiVersion"]
        if "status" in current:
            new["status"] = thaw(current["status"])  # status changes only through the status subresource
        for key, value in (meta.get("labels") or {}).items():
            if not isinstance(value, str) or len(value) > 63:
                raise invalid(
                    res.kind,
                    name,
                    res.group,
                    [
                        (
                            f"metadata.labels[{key}]",
                            f"Invalid value: {value!r}: must be no more than 63 characters",
                        )
                    ],
                )
        if res.plural == "pods":
            if new.get("spec") != current["spec"]:
                raise invalid(
                    res.kind,
                    name,
                    res.group,
                    [
                        (
                            "spec",
                            "Forbidden: pod updates may not change fields other than "
                            "`spec.containers[*].image`,`spec.initContainers[*].image`,"
                            "`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to "
                            "existing tolerations),`spec.terminationGracePeriodSeconds`",
                        )
                    ],
                )
            meta["deletionTimestamp"] = current["metadata"].get("deletionTimestamp")
            if meta["deletionTimestamp"] is None:
                meta.pop("deletionTimestamp")
        if res.plural == "nodes":
            for taint in new["spec"].get("taints") or []:
                if (
                    not isinstance(taint, dict)
                    or not taint.get("key")
                    or taint.get("effect") not in ("NoSchedule", "PreferNoSchedule", "NoExecute")
                ):
                    raise invalid(
                        res.kind,
                        name,
                        res.group,
                        [
                            (
                                "spec.taints",
                                f"Unsupported value: {taint!r}: supported values: "
                                '"NoExecute", "NoSchedule", "PreferNoSchedule"',
                            )
                        ],
                    )
        if res.plural == "deployments":
            replicas = new.get("spec", {}).get("replicas", 1)
            if not isinstance(replicas, int) or replicas < 0:
                raise invalid(
                    res.kind,
                    name,
                    res.group,
                    [("spec.replicas", f"Invalid value: {replicas}: must be greater than or equal to 0")],
                )
            if new["spec"].get("selector") != current["spec"].get("selector"):
                raise invalid(
                    res.kind, name, res.group, [("spec.selector", "Invalid value: field is immutable")]
                )
            if new["spec"] != current["spec"]:
                meta["generation"] = current["metadata"].get("generation", 1) + 1
        if res.plural == "poddisruptionbudgets" and new.get("spec") != current.get("spec"):
            meta["generation"] = current["metadata"].get("generation", 1) + 1
        if dry:
            return new
        if new == current:
            return current
        stored = self.fleet.store.put(res.plural, new)
        ns = current["metadata"].get("namespace", "")
        if res.plural == "nodes":
            self.fleet.node_changed(current, stored)
        elif res.plural == "deployments":
            self.fleet.reconcile_deployment(ns, name)
        elif res.plural == "pods":
            self.fleet._after_status(stored)
        elif res.plural == "poddisruptionbudgets":
            self.fleet._refresh_pdbs(ns)
        return self.fleet.store.get(res.plural, ns, name) or stored

    def _create(self, request: Request, res: Resource, namespace: str | None, body: Any) -> Response:
        dry = self._dry_run(request)
        if (
            not isinstance(body, dict)
            or not isinstance(body.get("metadata"), dict)
            or not body["metadata"].get("name")
        ):
            raise bad("the body must be an object with metadata.name")
        name = body["metadata"]["name"]
        ns = namespace or ""
        if self.fleet.store.get(res.plural, ns, name) is not None:
            qualified = f"{res.plural}.{res.group}" if res.group else res.plural
            raise FleetError(
                409,
                "AlreadyExists",
                f'{qualified} "{name}" already exists',
                {"name": name, "group": res.group, "kind": res.plural},
            )
        obj = thaw(body)
        obj["kind"], obj["apiVersion"] = res.kind, res.api_version
        meta = obj["metadata"]
        meta.update(uid=self.fleet._uid(), creationTimestamp=self.fleet.stamp(), generation=1)
        if res.plural == "leases":
            obj.setdefault("spec", {})
        if res.namespaced:
            meta["namespace"] = ns
        if res.plural not in ("configmaps", "leases"):  # neither has a status
            obj.setdefault("spec", {})
            obj["status"] = {"phase": "Active"} if res.plural == "namespaces" else {}
        if res.plural == "jobsets":
            _check_jobset(obj)
        if res.plural == "leaderworkersets":
            _check_lws(obj)
        if res.plural == "poddisruptionbudgets":
            spec = obj["spec"]
            if "minAvailable" in spec and "maxUnavailable" in spec:
                raise invalid(
                    res.kind,
                    name,
                    res.group,
                    [("spec", "Invalid value: minAvailable and maxUnavailable cannot be both set")],
                )
        if dry:
            return json_response(obj, 201)
        if res.plural == "jobsets":  # its controller makes its Jobs and pods at once
            stored = self.fleet.create_jobset(obj)
        elif res.plural == "leaderworkersets":  # and its groups' pods
            stored = self.fleet.create_lws(obj)
        else:
            stored = self.fleet.store.put(res.plural, obj)
        if res.plural == "poddisruptionbudgets":
            self.fleet._refresh_pdbs(ns)
            stored = self.fleet.store.get(res.plural, ns, name) or stored
        self._record(request, res, ns, name, "", 201)
        return json_response(stored, 201)

    async def _delete(self, request: Request, res: Resource, namespace: str, name: str) -> Response:
        dry = self._dry_run(request)
        raw = await request.body()
        options: dict[str, Any] = {}
        if raw.strip():
            try:
                options = orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                raise bad(f"the body of the request was in an unknown format: {exc}") from exc
        if not dry and isinstance(options.get("dryRun"), list):
            dry = options["dryRun"] == ["All"]
        grace_param = request.query_params.get("gracePeriodSeconds", options.get("gracePeriodSeconds"))
        try:
            grace = int(grace_param) if grace_param is not None else None
        except (TypeError, ValueError) as exc:
            raise bad(f"gracePeriodSeconds must be an integer: {grace_param!r}") from exc
        if res.plural == "pods":
            result = self.fleet.delete_pod(namespace, name, grace, dry_run=dry)
        else:
            obj = self._get(res, namespace, name)
            if res.plural == "jobsets" and not dry:  # its Jobs and pods go with it (foreground, at once)
                self.fleet.delete_jobset(namespace, name)
            if res.plural == "leaderworkersets" and not dry:
                self.fleet.delete_lws(namespace, name)
            result = obj if dry else (self.fleet.store.delete(res.plural, namespace, name) or obj)
            if not dry and res.plural == "poddisruptionbudgets":
                self.fleet._refresh_pdbs(namespace)
        self._record(request, res, namespace, name, "", 200, dry)
        return json_response(result)


def _check_lws(obj: dict[str, Any]) -> None:
    """What the LeaderWorkerSet webhook refuses: no worker template, or a group size under 1."""
    name = obj["metadata"]["name"]
    from sandbox.fleet.world.lws import MAX_GROUPS, MAX_SIZE

    lwt = obj["spec"].get("leaderWorkerTemplate")
    problems = []

    def pod_template(t: Any) -> bool:
        spec = t.get("spec") if isinstance(t, dict) else None
        return (
            isinstance(spec, dict) and isinstance(spec.get("containers"), list) and bool(spec["containers"])
        )

    if not isinstance(lwt, dict) or "workerTemplate" not in lwt:
        problems.append(("spec.leaderWorkerTemplate.workerTemplate", "Required value"))
    else:
        for key in ("workerTemplate", "leaderTemplate"):
            if (key in lwt or key == "workerTemplate") and not pod_template(lwt.get(key)):
                problems.append(
                    (f"spec.leaderWorkerTemplate.{key}", "Invalid value: a pod template with containers")
                )
        size = lwt.get("size", 1)
        if not isinstance(size, int) or not 1 <= size <= MAX_SIZE:
            problems.append(("spec.leaderWorkerTemplate.size", f"Invalid value: must be 1 to {MAX_SIZE}"))
    replicas = obj["spec"].get("replicas", 1)
    if not isinstance(replicas, int) or not 0 <= replicas <= MAX_GROUPS:
        problems.append(("spec.replicas", f"Invalid value: must be 0 to {MAX_GROUPS}"))
    if problems:
        raise invalid("LeaderWorkerSet", name, "leaderworkerset.x-k8s.io", problems)


def _check_jobset(obj: dict[str, Any]) -> None:
    """What the JobSet webhook refuses: no replicated jobs, or one without a pod template."""
    name = obj["metadata"]["name"]
    jobs = obj["spec"].get("replicatedJobs")
    problems = []
    if not isinstance(jobs, list) or not jobs:
        problems.append(("spec.replicatedJobs", "Required value: at least one replicated job"))
    else:
        for i, rj in enumerate(jobs):
            if not isinstance(rj, dict) or not rj.get("name"):
                problems.append((f"spec.replicatedJobs[{i}].name", "Required value"))
                continue
            template = ((rj.get("template") or {}).get("spec") or {}).get("template")
            if not isinstance(template, dict) or not (template.get("spec") or {}).get("containers"):
                problems.append((f"spec.replicatedJobs[{i}].template.spec.template", "Required value"))
            replicas = rj.get("replicas", 1)
            if not isinstance(replicas, int) or replicas < 1:
                problems.append((f"spec.replicatedJobs[{i}].replicas", f"Invalid value: {replicas!r}"))
    if problems:
        raise invalid("JobSet", name, "jobset.x-k8s.io", problems)
