"""The loaded playbook set: every valid playbook (sorted by id), the fleet-wide limits and the file each
playbook came from; and `match_playbooks`, which ranks a set's playbooks for an alert.

It exists as the one value the gate, the planners and triage are handed: they look playbooks up here,
they never read the YAML themselves.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from supply_agent.policy.limits import GlobalLimits
from supply_agent.policy.matching import match_key
from supply_agent.policy.playbook import Playbook


def match_playbooks(
    playbooks: Iterable[Playbook],
    alertname: str,
    labels: Mapping[str, str],
    *,
    conditions: Mapping[str, str] | None = None,
    events: Sequence[str] | None = None,
    uncatalogued: str | None = None,
) -> list[Playbook]:
    """The playbooks for an alert, most specific first (then by id). ``conditions`` (node condition
    type -> status) and ``events`` (event reasons on the node) refine the match once observed; None
    means not observed yet, and those clauses are not checked. ``uncatalogued``: the bucket an XID
    missing from NVIDIA's catalogue counts as (``_global.yaml``)."""
    hits = []
    for pb in playbooks:
        key = match_key(pb.match, alertname, labels, conditions, events, uncatalogued)
        if key is not None:
            hits.append((key, pb.id, pb))
    hits.sort(key=lambda h: (h[0], h[1]))
    return [pb for _, _, pb in hits]


@dataclass(frozen=True)
class PlaybookSet:
    """The loaded, valid playbooks (sorted by id), the global limits and the file of each playbook."""

    limits: GlobalLimits
    playbooks: tuple[Playbook, ...]
    files: Mapping[str, Path] = field(default_factory=dict)

    def __iter__(self) -> Iterator[Playbook]:
        return iter(self.playbooks)

    def __len__(self) -> int:
        return len(self.playbooks)

    def get(self, playbook_id: str) -> Playbook | None:
        return next((p for p in self.playbooks if p.id == playbook_id), None)

    def match(
        self,
        alertname: str,
        labels: Mapping[str, str],
        *,
        conditions: Mapping[str, str] | None = None,
        events: Sequence[str] | None = None,
    ) -> list[Playbook]:
        """`match_playbooks` over this set."""
        return match_playbooks(
            self.playbooks,
            alertname,
            labels,
            conditions=conditions,
            events=events,
            uncatalogued=self.limits.xid_uncatalogued,
        )
