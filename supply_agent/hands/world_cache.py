"""The world as a watch cache: list once, then watch, so a decision costs O(its targets), not O(the fleet).

A long-lived process (``serve``) keeps one :class:`WorldCache`, as client-go's SharedInformer and
controller-runtime's cache do: one LIST of nodes and one of pods, then a WATCH of each from the list's
resourceVersion (bookmarks asked for; a 410 Gone, or any broken stream past the client's retries, makes
it list again). Objects are slimmed as they arrive (the transform: a node is its pool, GPUs, conditions
and schedulability; a pod its owner, customer, GPUs and container state; nothing else is kept) into the
gate's own :class:`~supply_agent.policy.world.NodeView`; the indexes the gate looks things up in (pool
sizes, pods by name, pods by deployment) are kept incrementally, one node's worth of work per event.

A snapshot is a :class:`~supply_agent.policy.world.WorldView` built from those parts without validation
or an index pass, sharing the cache's dicts (copy on write: the next change copies them): O(1). What a snapshot cannot be is newer than the cache, so
the runtime overlays the nodes a decision targets and those the agent wrote since, read live
(:meth:`WorldCache.refresh`: one GET of the node and one LIST of its pods by field selector): the
decision sees its own targets as the API server has them now and every write the agent made
(read-your-writes), and reads nothing else.

A one-shot command (``handle``, ``eval``) keeps a cache of nodes only (``pods=False``): the fleet's
nodes, pool sizes and who is cordoned come from one LIST and its watch, and each decision reads live what
it is about (:meth:`WorldCache.scoped`: its nodes with their pods by field selector, its pods by name, its
deployments' pods in their namespace), so no command ever lists every pod of a cluster.

Lists are paged (500 objects a page, as client-go's reflector asks), so the raw JSON of a whole fleet is
never held at once.

Long because it is one informer: the list, the watch, the incremental indexes, the snapshots and the live
reads share one lock and one set of resourceVersion guards; split, each part would reach into the others.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterable
from datetime import datetime
from typing import Any, Literal, cast

import orjson
import structlog
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

from supply_agent.hands.world import slim_node, slim_pod
from supply_agent.policy.world import NodeView, PodRef, WorldView
from tools.kubernetes import KubeTools, ToolError
from tools.latches import read_freeze

log = structlog.get_logger("supply_agent.hands.world_cache")

Kind = Literal["nodes", "pods"]


# Objects per page of a list (client-go's reflector asks for 500).
PAGE = 500

# What a list or a watch of an unreachable, refusing or misbehaving API raises.
_ERRORS: tuple[type[BaseException], ...] = (ApiException, HTTPError, OSError, ValueError)


class CacheNotSynced(RuntimeError):
    """The cache has not finished its first list (or was stopped)."""


class WorldCache:
    """Nodes and pods, slimmed and indexed, kept current by a watch per kind (see the module doc)."""

    def __init__(
        self, kube: KubeTools, *, pods: bool = True, watch_timeout_s: int = 300, backoff_s: float = 0.5
    ) -> None:
        self.kube = kube
        # Without pods (a one-shot command's cache): nodes are listed and watched, and each decision
        # reads the pods it needs live (:meth:`scoped`); a cluster's pods are never listed.
        self.kinds: tuple[Kind, ...] = ("nodes", "pods") if pods else ("nodes",)
        self.watch_timeout_s = watch_timeout_s
        self.backoff_s = backoff_s
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._streams: dict[Kind, Any] = {}  # the open watch response per kind (closed by stop)
        self._node_base: dict[str, NodeView] = {}  # the node without its pods
        self._views: dict[str, NodeView] = {}  # the node with its pods: what a snapshot hands out
        self._pods: dict[str, tuple[str, PodRef, bool | None]] = {}  # "ns/name" -> (node, pod, agent)
        self._on_node: dict[str, dict[str, PodRef]] = {}  # node -> "ns/name" -> pod
        self._agent: dict[str, dict[str, bool]] = {}  # node -> node-agent pod -> ready
        self._pool_sizes: dict[str, int] = {}
        self._pod_index: dict[str, tuple[str, PodRef]] = {}
        self._deployments: dict[str, dict[str, PodRef]] = {}
        self._dep_pods: dict[str, tuple[PodRef, ...]] = {}  # the same, as a snapshot hands it out
        # Copy on write: a snapshot hands out the four dicts it reads as they are, and the next change of
        # each copies it first (``_w``): once per burst of events, and only the dicts a change touches.
        self._shared: set[str] = set()
        self._node_rv: dict[str, int] = {}
        self._pod_rv: dict[str, int] = {}
        self.resource_version: dict[Kind, str] = {"nodes": "", "pods": ""}
        self.synced = threading.Event()
        self._broken: set[Kind] = set()  # kinds that must be listed again before the cache is used
        # Counters for people and benchmarks: lists made (the first two and every relist), events
        # applied, live refreshes of single nodes.
        self.lists = 0
        self.events = 0
        self.refreshes = 0

    # -- life ----------------------------------------------------------------------------------------
    @property
    def watches_pods(self) -> bool:
        return "pods" in self.kinds

    def start(self) -> WorldCache:
        """List each kind (blocking: the cache is usable when this returns), then watch each in a
        daemon thread."""
        for kind in self.kinds:
            self._relist(kind)
        self.synced.set()
        for kind in self.kinds:
            t = threading.Thread(
                target=self._watch_loop, args=(kind,), name=f"world-cache-{kind}", daemon=True
            )
            t.start()
            self._threads.append(t)
        return self

    def start_background(self) -> WorldCache:
        """Start in a thread: list (again after a back-off while the cluster cannot be listed), then
        watch. Until the first lists succeed, :attr:`synced` is unset and the runtime reads the
        cluster itself, so a service starts during an API outage and gains its cache afterwards."""

        def run() -> None:
            failures = 0
            while not self._stop.is_set():
                try:
                    self.start()
                    return
                except _ERRORS as exc:
                    failures += 1
                    delay = self._delay(failures)
                    log.warning(
                        "could not list the cluster for the world cache", error=str(exc)[:300], delay_s=delay
                    )
                    if self._stop.wait(delay):
                        return

        threading.Thread(target=run, name="world-cache-start", daemon=True).start()
        return self

    def _delay(self, failures: int) -> float:
        """Back-off before the next list: doubling from ``backoff_s``, at most 30 s."""
        return float(min(30.0, self.backoff_s * 2 ** min(failures, 6)))

    def stop(self) -> None:
        self._stop.set()
        self.synced.clear()
        for resp in list(self._streams.values()):
            with contextlib.suppress(Exception):  # the reading thread sees the stream end, and stops
                resp.shutdown() if hasattr(resp, "shutdown") else resp.close()
        for t in self._threads:
            t.join(timeout=2.0)

    # -- reading the API ---------------------------------------------------------------------------
    def _list_fn(self, kind: Kind) -> Any:
        core = self.kube.core
        return core.list_node if kind == "nodes" else core.list_pod_for_all_namespaces

    def _relist(self, kind: Kind) -> None:
        """List one kind in pages of :data:`PAGE` (as client-go's reflector does): each page parsed and
        slimmed before the next is asked for, so the raw JSON of the whole fleet is never held at once.
        The watch goes on from the first page's resourceVersion; an object a later page shows newer
        than an event the watch then replays keeps the newer one (the resourceVersion guards)."""
        seen: set[str] = set()
        touched: set[str] = set()
        rv, cont = "", None
        while True:
            resp = self._list_fn(kind)(
                limit=PAGE,
                _continue=cont,
                _preload_content=False,
                _request_timeout=(self.kube.timeout[0], self.kube.timeout[1] * 6),
            )
            body = orjson.loads(resp.data)
            meta = body.get("metadata") or {}
            rv = rv or str(meta.get("resourceVersion") or "")
            with self._lock:
                for obj in body.get("items") or []:
                    if kind == "nodes":
                        seen.add(obj["metadata"]["name"])
                        self._put_node(obj)
                    else:
                        key = f"{obj['metadata'].get('namespace', '')}/{obj['metadata']['name']}"
                        seen.add(key)
                        old = self._pods.get(key)
                        self._drop_pod(key)
                        touched.update(n for n in (old[0] if old else None, self._put_pod(obj)) if n)
            cont = meta.get("continue")
            if not cont:
                break
        with self._lock:
            if kind == "nodes":
                for name in [n for n in self._node_base if n not in seen]:
                    self._drop_node(name)
            else:
                for key in [k for k in self._pods if k not in seen]:
                    touched.add(self._pods[key][0])
                    self._drop_pod(key)
                for node in touched:
                    self._rebuild(node)
            self.resource_version[kind] = rv
            self.lists += 1

    def _watch_loop(self, kind: Kind) -> None:
        """Watch, and list again when the watch cannot go on. While a kind has to be listed again the
        cache is not :attr:`synced` (decisions read the cluster themselves): a cache that may have
        missed changes is never decided on."""
        bound = log.bind(kind=kind)
        failures = 0
        while not self._stop.is_set():
            try:
                if kind in self._broken:
                    self._relist(kind)
                    self._mend(kind)
                if self._watch_once(kind):
                    bound.info("watch expired (410 Gone): listing again")
                    self._break(kind)
                failures = 0
            except Exception as exc:  # whatever broke the stream: list again, never die
                if self._stop.is_set():
                    return
                failures += 1
                self._break(kind)
                delay = self._delay(failures)
                bound.warning(
                    "watch failed: listing again after a back-off",
                    error=f"{type(exc).__name__}: {exc}"[:300],
                    delay_s=delay,
                )
                if self._stop.wait(delay):
                    return

    def _break(self, kind: Kind) -> None:
        with self._lock:
            self._broken.add(kind)
            self.synced.clear()

    def _mend(self, kind: Kind) -> None:
        with self._lock:
            self._broken.discard(kind)
            if not self._broken and not self._stop.is_set():
                self.synced.set()

    def _watch_once(self, kind: Kind) -> bool:
        """One watch stream from the last resourceVersion until the server ends it; True on 410 Gone."""
        resp = self._list_fn(kind)(
            watch=True,
            resource_version=self.resource_version[kind],
            allow_watch_bookmarks=True,
            timeout_seconds=self.watch_timeout_s,
            _preload_content=False,
            _request_timeout=(self.kube.timeout[0], self.watch_timeout_s + 30),
        )
        self._streams[kind] = resp
        try:
            buf = b""
            for chunk in resp.stream(64 * 1024, decode_content=True):
                if self._stop.is_set():
                    return False
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    if line.strip() and self._event(kind, orjson.loads(line)):
                        return True
        finally:
            self._streams.pop(kind, None)
            resp.release_conn()
        return False

    def _event(self, kind: Kind, event: dict[str, Any]) -> bool:
        """Apply one watch event; True when it says the resourceVersion expired (410)."""
        etype, obj = event.get("type"), event.get("object") or {}
        if etype == "ERROR":
            if obj.get("code") == 410:
                return True
            raise ValueError(f"watch of {kind} ended with an error: {obj.get('message') or obj}")
        rv = str((obj.get("metadata") or {}).get("resourceVersion") or "")
        with self._lock:
            if etype != "BOOKMARK":
                if kind == "nodes":
                    self._node_event(etype, obj)
                else:
                    self._pod_event(etype, obj)
                self.events += 1
            if rv:
                self.resource_version[kind] = rv
        return False

    # -- keeping the parts (under the lock) ----------------------------------------------------------
    def _w(self, name: str) -> dict[str, Any]:
        """The shared dict ``name`` for a change: copied first if a snapshot may still be reading it."""
        if name in self._shared:
            setattr(self, name, dict(getattr(self, name)))
            self._shared.discard(name)
        return cast(dict[str, Any], getattr(self, name))

    def _node_event(self, etype: str | None, obj: dict[str, Any]) -> None:
        name = obj["metadata"]["name"]
        if etype == "DELETED":
            self._drop_node(name)
        elif self._newer(self._node_rv, name, obj):
            self._put_node(obj)

    def _pod_event(self, etype: str | None, obj: dict[str, Any]) -> None:
        key = f"{obj['metadata'].get('namespace', '')}/{obj['metadata']['name']}"
        old = self._pods.get(key)
        if etype == "DELETED":
            self._drop_pod(key)
        elif self._newer(self._pod_rv, key, obj):
            self._drop_pod(key)
            self._put_pod(obj)
        else:
            return
        new = self._pods.get(key)
        for node in {old[0] if old else None, new[0] if new else None} - {None}:
            assert node is not None
            self._rebuild(node)

    @staticmethod
    def _newer(seen: dict[str, int], key: str, obj: dict[str, Any]) -> bool:
        """Whether the object is newer than the one held (a live refresh may have stored it already)."""
        try:
            rv = int((obj.get("metadata") or {}).get("resourceVersion") or 0)
        except ValueError:
            return True  # not an integer (another API server's opaque version): take the event as it is
        return rv == 0 or rv > seen.get(key, 0) or key not in seen

    def _put_node(self, n: dict[str, Any]) -> None:
        name = n["metadata"]["name"]
        old = self._node_base.get(name)
        base = slim_node(n)
        if old is not None:
            self._w("_pool_sizes")[old.pool] -= 1
        sizes = self._w("_pool_sizes")
        sizes[base.pool] = sizes.get(base.pool, 0) + 1
        self._node_base[name] = base
        if old is None:  # its pods count from now on (a pod's event may come before its node's)
            for key, ref in (self._on_node.get(name) or {}).items():
                self._index_pod(key, name, ref)
        self._note_rv(self._node_rv, name, n)
        self._rebuild(name)

    def _drop_node(self, name: str) -> None:
        old = self._node_base.pop(name, None)
        if old is not None:
            sizes = self._w("_pool_sizes")
            sizes[old.pool] -= 1
            if not sizes[old.pool]:
                del sizes[old.pool]
            for key, ref in (self._on_node.get(name) or {}).items():
                self._unindex_pod(key, ref)
        if name in self._views:
            self._w("_views").pop(name, None)
        self._node_rv.pop(name, None)

    def _put_pod(self, p: dict[str, Any]) -> str | None:
        node, ref, agent = slim_pod(p)
        key = f"{ref.namespace}/{ref.name}"
        self._note_rv(self._pod_rv, key, p)
        if not node:
            return None
        self._pods[key] = (node, ref, agent)
        self._on_node.setdefault(node, {})[key] = ref
        if agent is not None:
            self._agent.setdefault(node, {})[key] = agent
        if node in self._node_base:  # a pod on a node the cache does not have is nobody's yet
            self._index_pod(key, node, ref)
        return node

    def _index_pod(self, key: str, node: str, ref: PodRef) -> None:
        self._w("_pod_index")[key] = (node, ref)
        if ref.deployment:
            dep = f"{ref.namespace}/{ref.deployment}"
            self._deployments.setdefault(dep, {})[key] = ref
            self._w("_dep_pods")[dep] = tuple(self._deployments[dep].values())

    def _unindex_pod(self, key: str, ref: PodRef) -> None:
        if key in self._pod_index:
            self._w("_pod_index").pop(key, None)
        if ref.deployment:
            dep = f"{ref.namespace}/{ref.deployment}"
            self._deployments.get(dep, {}).pop(key, None)
            if self._deployments.get(dep):
                self._w("_dep_pods")[dep] = tuple(self._deployments[dep].values())
            else:
                self._deployments.pop(dep, None)
                self._w("_dep_pods").pop(dep, None)

    def _drop_pod(self, key: str) -> None:
        held = self._pods.pop(key, None)
        self._pod_rv.pop(key, None)
        if held is None:
            return
        node, ref, _ = held
        self._on_node.get(node, {}).pop(key, None)
        self._agent.get(node, {}).pop(key, None)
        self._unindex_pod(key, ref)

    @staticmethod
    def _note_rv(seen: dict[str, int], key: str, obj: dict[str, Any]) -> None:
        try:
            seen[key] = int((obj.get("metadata") or {}).get("resourceVersion") or 0)
        except ValueError:
            seen.pop(key, None)

    def _rebuild(self, node: str) -> None:
        base = self._node_base.get(node)
        if base is None:
            if node in self._views:
                self._w("_views").pop(node, None)
            return
        pods = tuple(sorted((self._on_node.get(node) or {}).values(), key=lambda r: (r.namespace, r.name)))
        agents = self._agent.get(node) or {}
        # Any node-agent pod ready, as in read_world: not the order events or pages came in.
        agent_ready = any(agents.values())
        view = base.model_copy(update={"pods": pods, "agent_ready": agent_ready})
        if self._views.get(node) != view:
            self._w("_views")[node] = view

    # -- what the runtime asks -------------------------------------------------------------------------
    def _live(self, name: str) -> tuple[dict[str, Any] | None, list[dict[str, Any]], int]:
        """One node and its pods as the API server has them now: (the node, None when it is gone; its
        pods; the pod list's resourceVersion, 0 when not an integer). One GET, one field-selected LIST."""
        try:
            node: dict[str, Any] | None = self.kube.read(self.kube.core.read_node, name)
        except ToolError as exc:
            if exc.status != 404:
                raise
            node = None
        listed = self.kube.read(
            self.kube.core.list_pod_for_all_namespaces, field_selector=f"spec.nodeName={name}"
        )
        try:
            list_rv = int((listed.get("metadata") or {}).get("resourceVersion") or 0)
        except ValueError:
            list_rv = 0
        return node, list(listed.get("items") or []), list_rv

    def _store_node(self, name: str, node: dict[str, Any] | None) -> None:
        """Under the lock: a live read of a node (None: gone), unless the watch applied a newer one."""
        if node is None:
            self._drop_node(name)
        elif self._newer(self._node_rv, name, node):
            self._put_node(node)

    def refresh(self, nodes: Iterable[str]) -> None:
        """Read these nodes and their pods live and store them (newer than what the watch delivered, or
        the same): one GET and one field-selected LIST per node. A node the cluster no longer has is
        dropped."""
        for name in sorted(set(nodes)):
            node, pods, list_rv = self._live(name)
            with self._lock:
                self.refreshes += 1
                # What the watch applied meanwhile may be newer than these reads: it stays.
                self._store_node(name, node)
                if not self.watches_pods:
                    continue
                live = set()
                for p in pods:
                    key = f"{p['metadata'].get('namespace', '')}/{p['metadata']['name']}"
                    live.add(key)
                    if self._newer(self._pod_rv, key, p):
                        self._drop_pod(key)
                        self._put_pod(p)
                for key in [k for k in (self._on_node.get(name) or {}) if k not in live]:
                    if not list_rv or self._pod_rv.get(key, 0) <= list_rv:
                        self._drop_pod(key)
                self._rebuild(name)

    def scoped(
        self,
        now: datetime,
        alerting_nodes: frozenset[str] = frozenset(),
        *,
        nodes: Iterable[str] = (),
        if_known: Iterable[str] = (),
        pods: Iterable[str] = (),
        deployments: Iterable[str] = (),
    ) -> WorldView:
        """A decision's world on a cache without pods: the fleet's nodes as watched, and read live now
        ``nodes`` and those of ``if_known`` the cache has (each node with its pods), the pods named
        ("namespace/name", one GET each) and the pods of the deployments named ("namespace/name", one
        LIST of the namespace each). O(those), whatever the fleet's size; the kill switch read live."""
        if not self.synced.is_set():
            raise CacheNotSynced("the world cache has not listed the cluster yet")
        with self._lock:
            wanted = set(nodes) | {n for n in if_known if n in self._node_base}
        listed: dict[str, list[dict[str, Any]]] = {}
        for name in sorted(wanted):
            node, raw_pods, _ = self._live(name)
            with self._lock:
                self.refreshes += 1
                self._store_node(name, node)
            if node is not None:
                listed[name] = raw_pods
        seen = {
            f"{p['metadata'].get('namespace', '')}/{p['metadata']['name']}"
            for v in listed.values()
            for p in v
        }
        named = [p for key in sorted(set(pods) - seen) if (p := self._get_pod(key)) is not None]
        by_namespace: dict[str, list[dict[str, Any]]] = {}
        for key in sorted(set(deployments)):
            namespace = key.partition("/")[0]
            if namespace not in by_namespace:
                listed_ns = self.kube.read(self.kube.core.list_namespaced_pod, namespace)
                by_namespace[namespace] = list(listed_ns.get("items") or [])
        frozen, reason = read_freeze(self.kube)
        with self._lock:
            self._shared.add("_pool_sizes")
            views, sizes = dict(self._views), self._pool_sizes
        index: dict[str, tuple[str, PodRef]] = {}
        for name, raw_pods in listed.items():
            refs: list[PodRef] = []
            agent_ready = False
            for p in raw_pods:
                _, ref, agent = slim_pod(p)
                refs.append(ref)
                index[f"{ref.namespace}/{ref.name}"] = (name, ref)
                if agent is not None:  # any node-agent pod ready, as in read_world
                    agent_ready = agent_ready or agent
            if name in views:
                views[name] = views[name].model_copy(
                    update={
                        "pods": tuple(sorted(refs, key=lambda r: (r.namespace, r.name))),
                        "agent_ready": agent_ready,
                    }
                )
        for p in [*named, *(p for v in by_namespace.values() for p in v)]:
            node_name, ref, _ = slim_pod(p)
            if node_name and node_name in views:
                index.setdefault(f"{ref.namespace}/{ref.name}", (node_name, ref))
        wanted_deps = set(deployments)
        deps: dict[str, list[PodRef]] = {}
        for _, ref in index.values():
            dep = f"{ref.namespace}/{ref.deployment}" if ref.deployment else None
            if dep in wanted_deps:
                deps.setdefault(dep, []).append(ref)
        return WorldView.prebuilt(
            views,
            sizes,
            index,
            {k: tuple(sorted(v, key=lambda r: r.name)) for k, v in deps.items()},
            now=now,
            frozen=frozen,
            frozen_reason=reason,
            alerting_nodes=alerting_nodes,
        )

    def _get_pod(self, key: str) -> dict[str, Any] | None:
        """One pod ("namespace/name") read live; None when the cluster has no such pod."""
        namespace, _, name = key.partition("/")
        try:
            return dict(self.kube.read(self.kube.core.read_namespaced_pod, name, namespace))
        except ToolError as exc:
            if exc.status == 404:
                return None
            raise

    def node_of_pod(self, namespace: str, pod: str) -> str | None:
        with self._lock:
            held = self._pods.get(f"{namespace}/{pod}")
            return held[0] if held else None

    def snapshot(self, now: datetime, alerting_nodes: frozenset[str] = frozenset()) -> WorldView:
        """The fleet as the cache holds it now (the kill switch read live: one GET)."""
        if not self.synced.is_set():
            raise CacheNotSynced("the world cache has not listed the cluster yet")
        frozen, reason = read_freeze(self.kube)
        return self.view(now, alerting_nodes, frozen, reason)

    def view(
        self,
        now: datetime,
        alerting_nodes: frozenset[str] = frozenset(),
        frozen: bool = False,
        reason: str = "",
    ) -> WorldView:
        """The snapshot without the kill switch's read (what the benchmark times): O(1), the dicts are
        shared until the next change copies them."""
        with self._lock:
            self._shared.update(("_views", "_pool_sizes", "_pod_index", "_dep_pods"))
            nodes, sizes, pods, deployments = self._views, self._pool_sizes, self._pod_index, self._dep_pods
        return WorldView.prebuilt(
            nodes,
            sizes,
            pods,
            deployments,
            now=now,
            frozen=frozen,
            frozen_reason=reason,
            alerting_nodes=alerting_nodes,
        )

    def wait_until(self, check: Any, timeout_s: float = 5.0) -> bool:
        """Poll ``check(self)`` until it is true (tests and benchmarks: a change reached the cache)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self._lock:
                if check(self):
                    return True
            time.sleep(0.005)
        with self._lock:
            return bool(check(self))

    def size(self) -> tuple[int, int]:
        """(nodes, pods) held."""
        with self._lock:
            return len(self._views), len(self._pods)
