"""Who asked the fleet's API for what: request counts by identity, served at ``GET /sandbox/v1/requests``.

Kept apart because tests and evals read it to check the credential split (the agent reads with the
reader's token and writes with the writer's), independently of how requests are served.
"""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

from sandbox.fleet import rbac


class RequestLog:
    """Requests by identity: Kubernetes API requests by verb and by ``verb resource[/subresource]``,
    non-resource requests (discovery, ``/sandbox/v1``) by ``verb path``, and refusals (403) by either.
    Served at ``GET /sandbox/v1/requests`` (admin only), so tests and evals can check the credential split."""

    KINDS = ("verbs", "resources", "paths", "forbidden")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[str, dict[str, Counter[str]]] = {}

    def add(self, identity: str, info: rbac.RequestInfo, allowed: bool) -> None:
        with self._lock:
            counts = self._counts.setdefault(identity, {k: Counter() for k in self.KINDS})
            if not allowed:
                counts["forbidden"][info.describe()] += 1
            elif info.resource_request:
                counts["verbs"][info.verb] += 1
                counts["resources"][info.describe()] += 1
            else:
                counts["paths"][info.describe()] += 1

    def as_dict(self) -> dict[str, Any]:
        with self._lock:
            return {
                identity: {
                    "user": user.name,
                    **{
                        k: dict(sorted(self._counts.get(identity, {}).get(k, Counter()).items()))
                        for k in self.KINDS
                    },
                }
                for identity, user in rbac.IDENTITIES.items()
            }
