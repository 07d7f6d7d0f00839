"""The leases this replica holds: an incident's while it runs that incident's jobs, a singleton's
(the dispatcher, the approval sweeper, the dead man's switch) while it leads that work.

Every replica runs the same loops. A job of an incident runs only under that incident's lease; the
fold of new alerts, the sweep and the watchdog only under their singleton's. A lease is renewed every
third of its time by a thread of its own; one that cannot be renewed (it lapsed while the process was
frozen, or the database was out of reach) is dropped here at once, and its work stops at its next write,
which the executor fences. A lease whose incident has no work left here is released, so a click or a
new alert can be run by whichever replica takes it next. See :mod:`sandbox.executor.fencing`.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import structlog

from sandbox.executor.fencing import Lease, LeaseTable

if TYPE_CHECKING:
    from supply_agent.service.kube_lease import KubeLeaseElector

log = structlog.get_logger("supply_agent.service.leases")

SINGLETON = "singleton:"  # incident ids never start so: one table holds both kinds
SINGLETONS = ("dispatcher", "sweeper", "watchdog")


def replica_name(configured: str = "") -> str:
    """This replica's name in the leases: the setting (else the pod's, or host's, name), the process id
    and a random part, so a restarted container (pid 1 again) is never taken for its dead self."""
    base = configured or os.environ.get("POD_NAME") or socket.gethostname()
    return f"{base}:{os.getpid()}:{secrets.token_hex(3)}"


class Leases:
    """``elector``: the Kubernetes Leases that elect the singletons (None: the database leases alone)."""

    def __init__(self, table: LeaseTable, owner: str, elector: KubeLeaseElector | None = None) -> None:
        self.table = table
        self.owner = owner
        self.elector = elector
        self._verdicts: dict[str, tuple[str, float]] = {}  # the elector's, by singleton: (verdict, when)
        self._since = time.monotonic()
        self._held: dict[str, Lease] = {}
        # When each lease held lapses by this process's clock (monotonic): one not renewed in time is
        # not used (the database's clock decides, at the fence; this only stops new work sooner).
        self._until: dict[str, float] = {}
        self._lock = threading.Lock()

    def take(self, name: str) -> Lease | None:
        """The lease on ``name`` for this replica (held already, or taken now); None while another's runs."""
        held = self.held(name)
        if held is not None:
            return held
        asked = time.monotonic()
        got = self.table.acquire(name, self.owner)
        if got is not None:
            self._keep(got, asked)
            log.info("lease taken", lease=name, token=got.token)
        return got

    def _keep(self, lease: Lease, asked: float) -> None:
        with self._lock:
            self._held[lease.name] = lease
            self._until[lease.name] = asked + self.table.ttl_s

    def _drop(self, name: str) -> None:
        with self._lock:
            self._held.pop(name, None)
            self._until.pop(name, None)

    def held(self, name: str) -> Lease | None:
        """The lease on ``name`` while this replica holds it (not lapsed by this process's clock)."""
        with self._lock:
            lease = self._held.get(name)
            if lease is not None and self._until.get(name, 0.0) > time.monotonic():
                return lease
        return None

    def lead(self, singleton: str) -> Lease | None:
        """The singleton's lease when this replica leads that work (taking it if nobody does). Under a
        Kubernetes elector, only while this replica holds the singleton's Lease too, or while the API
        server cannot say (out of reach, or no answer for a lease time: then the database alone decides);
        a replica another's Lease outvotes steps down, giving the database lease up for the Lease's
        holder. The verdicts come from :meth:`elect`, in a thread of its own: a hung API server never
        holds the renewals up."""
        name = SINGLETON + singleton
        if self.elector is not None:
            with self._lock:
                verdict, at = self._verdicts.get(singleton, ("", 0.0))
            now = time.monotonic()
            if not verdict and now - self._since < self.table.ttl_s:
                return None  # the first election has not answered yet: it decides shortly
            if verdict == "follower" and now - at < self.table.ttl_s:
                held = self.held(name)
                if held is not None:
                    self._drop(name)
                    log.warning("another replica holds the singleton's Lease: stepping down", lease=name)
                    with contextlib.suppress(Exception):  # it lapses on its own
                        self.table.release(held)
                return None
        return self.take(name)

    def elect(self, singletons: tuple[str, ...]) -> None:
        """Ask the Kubernetes Leases who leads each singleton (renewing this replica's), for :meth:`lead`."""
        if self.elector is None:
            return
        for singleton in singletons:
            verdict = self.elector.lead(singleton)
            with self._lock:
                self._verdicts[singleton] = (verdict, time.monotonic())

    def renew(self, idle: Callable[[str], bool] = lambda _: False) -> None:
        """Renew every lease held; drop the lost ones; release the incidents' leases ``idle`` says have
        no work left here."""
        with self._lock:
            held = list(self._held.values())
        for lease in held:
            if not lease.name.startswith(SINGLETON) and idle(lease.name):
                self._drop(lease.name)
                try:
                    self.table.release(lease)
                except Exception as exc:  # it lapses on its own
                    log.warning("cannot release a lease", lease=lease.name, error=str(exc)[:300])
                continue
            asked = time.monotonic()
            try:
                renewed = self.table.renew(lease)
            except Exception as exc:  # the database out of reach: kept until it lapses, then lost
                log.warning("cannot renew a lease", lease=lease.name, error=str(exc)[:300])
                continue
            if renewed is None:
                self._drop(lease.name)
                log.warning("lease lost: another replica carries the work on", lease=lease.name)
            else:
                self._keep(renewed, asked)

    def release_all(self) -> None:
        """On a clean stop: give every lease up, so the others take the work at once."""
        with self._lock:
            held = list(self._held.values())
            self._held.clear()
            self._until.clear()
        for lease in held:
            with contextlib.suppress(Exception):  # it lapses on its own
                self.table.release(lease)
        if self.elector is not None:
            self.elector.release_all()
