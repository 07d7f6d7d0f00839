"""The fleet's object store: Kubernetes objects by kind, a global resourceVersion, watch fan-out.

Stored objects are never mutated in place: a change stores a new dict, so lists, watch events and the
change history can hand out references without copying.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

Obj = dict[str, Any]
Key = tuple[str, str]  # (namespace, name); namespace is "" for cluster-scoped kinds


def key_of(obj: Mapping[str, Any]) -> Key:
    meta = obj["metadata"]
    return (meta.get("namespace") or "", meta["name"])


def thaw(obj: Mapping[str, Any]) -> Obj:
    """A deep, mutable copy of a stored object (orjson round trip: much faster than deepcopy)."""
    thawed: Obj = orjson.loads(orjson.dumps(obj))
    return thawed


@dataclass(slots=True)
class Change:
    rv: int
    kind: str
    type: str  # ADDED, MODIFIED, DELETED
    obj: Obj
    prev: Obj | None = None  # the object before the change: a watcher's filter decides on both


@dataclass(eq=False)
class Watcher:
    kind: str
    namespace: str | None
    match: Callable[[Obj], bool]
    queue: asyncio.Queue[Change | None] = field(default_factory=asyncio.Queue)


class Gone(Exception):
    """The requested resourceVersion is older than the history the store keeps (HTTP 410)."""


class Store:
    def __init__(self, history: int = 20_000) -> None:
        self.rv = 0
        self._objects: dict[str, dict[str, dict[str, Obj]]] = {}  # kind -> namespace -> name -> obj
        self._pods_by_node: dict[str, set[Key]] = {}
        self._history: deque[Change] = deque(maxlen=history)
        self._watchers: dict[str, set[Watcher]] = {}
        self.notify_enabled = True

    # -- reads ---------------------------------------------------------------------------------------
    def get(self, kind: str, namespace: str, name: str) -> Obj | None:
        return self._objects.get(kind, {}).get(namespace, {}).get(name)

    def items(self, kind: str, namespace: str | None = None) -> Iterator[Obj]:
        spaces = self._objects.get(kind, {})
        if namespace is None:
            for objs in spaces.values():
                yield from objs.values()
        else:
            yield from spaces.get(namespace, {}).values()

    def count(self, kind: str) -> int:
        return sum(len(objs) for objs in self._objects.get(kind, {}).values())

    def pods_on_node(self, node: str) -> list[Obj]:
        pods = self._objects.get("pods", {})
        return [pods[ns][name] for ns, name in sorted(self._pods_by_node.get(node, ()))]

    # -- writes --------------------------------------------------------------------------------------
    def put(self, kind: str, obj: Obj) -> Obj:
        """Create or replace an object, stamping a new resourceVersion."""
        self.rv += 1
        obj["metadata"]["resourceVersion"] = str(self.rv)
        k = key_of(obj)
        bucket = self._objects.setdefault(kind, {}).setdefault(k[0], {})
        old = bucket.get(k[1])
        bucket[k[1]] = obj
        if kind == "pods":
            self._index_pod(k, old, obj)
        self._record(Change(self.rv, kind, "MODIFIED" if old is not None else "ADDED", obj, old))
        return obj

    def delete(self, kind: str, namespace: str, name: str) -> Obj | None:
        bucket = self._objects.get(kind, {}).get(namespace, {})
        old = bucket.pop(name, None)
        if old is None:
            return None
        self.rv += 1
        if kind == "pods":
            self._index_pod((namespace, name), old, None)
        gone = thaw(old)
        gone["metadata"]["resourceVersion"] = str(self.rv)
        self._record(Change(self.rv, kind, "DELETED", gone, old))
        return gone

    def load(self, kind: str, objs: Iterable[Obj]) -> None:
        """Bulk load (start-up and restore): no history, no watch events."""
        spaces = self._objects.setdefault(kind, {})
        for obj in objs:
            k = key_of(obj)
            spaces.setdefault(k[0], {})[k[1]] = obj
            if kind == "pods":
                self._index_pod(k, None, obj)
            self.rv = max(self.rv, int(obj["metadata"].get("resourceVersion") or 0))

    def dump(self) -> dict[str, list[Obj]]:
        return {kind: list(self.items(kind)) for kind in self._objects}

    def clear(self) -> None:
        self._objects.clear()
        self._pods_by_node.clear()
        self._history.clear()

    def _index_pod(self, k: Key, old: Obj | None, new: Obj | None) -> None:
        old_node = (old or {}).get("spec", {}).get("nodeName")
        new_node = (new or {}).get("spec", {}).get("nodeName")
        if old_node and old_node != new_node:
            self._pods_by_node.get(old_node, set()).discard(k)
        if new_node:
            self._pods_by_node.setdefault(new_node, set()).add(k)

    # -- watch ---------------------------------------------------------------------------------------
    def _record(self, change: Change) -> None:
        self._history.append(change)
        for watcher in self._watchers.get(change.kind, ()):
            watcher.queue.put_nowait(change)

    def since(self, kind: str, rv: int) -> list[Change]:
        """Changes of a kind after ``rv``; Gone when the history no longer reaches back that far."""
        if rv >= self.rv:
            return []
        if not self._history or self._history[0].rv > rv + 1:
            raise Gone(
                f"too old resource version: {rv} ({self._history[0].rv - 1 if self._history else self.rv})"
            )
        return [c for c in self._history if c.rv > rv and c.kind == kind]

    def subscribe(self, watcher: Watcher) -> None:
        self._watchers.setdefault(watcher.kind, set()).add(watcher)

    def unsubscribe(self, watcher: Watcher) -> None:
        self._watchers.get(watcher.kind, set()).discard(watcher)

    def close_watchers(self) -> None:
        for watchers in self._watchers.values():
            for w in watchers:
                w.queue.put_nowait(None)
