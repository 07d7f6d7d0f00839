"""What every part of the fleet's API shares: the fleet it serves, who may call it, and the lookups and
request parsing every handler makes.

`FleetAPI` (app.py) is composed of one mixin per concern (reads, watch, writes, subresources, the
``/sandbox/v1`` endpoints), each in its own module and each a subclass of `APIState`, the way
sandbox/fleet/world/ composes `Fleet`. `APIState` also declares, for the type checker only, the methods
one mixin calls on another: that list is the API's internal interface, and mypy checks each
implementation against it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response

from sandbox.fleet import rbac
from sandbox.fleet.api.discovery import Resource
from sandbox.fleet.api.request_log import RequestLog
from sandbox.fleet.api.responses import bad
from sandbox.fleet.store import Obj
from sandbox.fleet.world import Fleet, not_found


class APIState:
    """The API's data: the fleet (replaced on restore), the tokens and RBAC policy, and the request log."""

    fleet: Fleet
    token: str
    tokens: dict[str, str]
    policy: rbac.Policy
    requests: RequestLog
    cluster: str
    app: Starlette
    outage: tuple[float, str] | None

    @staticmethod
    async def _body(request: Request) -> Any:
        raw = await request.body()
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise bad(f"the body of the request was in an unknown format: {exc}") from exc

    def _get(self, res: Resource, namespace: str, name: str) -> Obj:
        obj = self.fleet.store.get(res.plural, namespace, name)
        if obj is None:
            raise not_found(res.plural, name, res.group)
        return obj

    @staticmethod
    def _dry_run(request: Request) -> bool:
        values = request.query_params.getlist("dryRun")
        for v in values:
            if v != "All":
                raise bad(f'Invalid dryRun value "{v}": supported values are "All"')
        return bool(values)

    if TYPE_CHECKING:
        # The methods one mixin calls on another, by the module that implements them.
        # app
        def _identity(self, request: Request) -> str | None: ...
        def _refuse(self, request: Request, path: str) -> Response | None: ...
        # reads
        def _selectors(self, request: Request, res: Resource) -> Callable[[Mapping[str, Any]], bool]: ...
        def _candidates(self, request: Request, res: Resource, namespace: str | None) -> list[Obj]: ...
        # writes
        def _record(
            self,
            request: Request,
            res: Resource,
            namespace: str,
            name: str,
            sub: str,
            code: int,
            dry: bool | None = None,
        ) -> None: ...
        def _check_rv(self, res: Resource, current: Obj, wanted: str | None) -> None: ...
        def _commit(self, res: Resource, current: Obj, new: Obj, dry: bool, request: Request) -> Obj: ...
