"""Delivery interfaces shared by the outbox, the dispatcher and the destination senders.

A transition becomes one Delivery per destination that accepts it, stored in the state store
(the outbox) before anything is sent. A delivery id is derived from the destination and the
transition's idempotency key, so recording the same transition twice stores it once, and a
receiver can drop a re-send by the same key (``webhook-id`` / the task's marker).
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol


class DeliveryStatus(enum.StrEnum):
    PENDING = "pending"  # not yet sent, or to be retried at next_attempt_at
    DONE = "done"  # the destination acknowledged it (2xx)
    FAILED = "failed"  # permanently refused (4xx other than 408/429), or out of attempts


def delivery_id(destination: str, idempotency_key: str) -> str:
    return hashlib.sha256(f"{destination}|{idempotency_key}".encode()).hexdigest()[:40]


@dataclass(frozen=True)
class Delivery:
    destination: str  # the destination's configured name
    idempotency_key: str  # Transition.idempotency_key
    transition: dict[str, Any] = field(hash=False)  # shared.core.changes.transition_to_dict(...) (plain JSON)
    created_at: float = 0.0
    attempts: int = 0
    next_attempt_at: float = 0.0
    status: DeliveryStatus = DeliveryStatus.PENDING
    last_status: int | None = None  # last HTTP status seen
    last_error: str = ""  # redacted, one line
    digest: bool = False  # quiet mode: held for the destination's next digest instead of sent alone

    @property
    def delivery_id(self) -> str:
        return delivery_id(self.destination, self.idempotency_key)

    @property
    def finding_key(self) -> str:
        return str(self.transition.get("key", ""))


@dataclass(frozen=True)
class TaskRef:
    """A remediation task opened for one finding at one destination (work item, issue)."""

    destination: str
    finding_key: str
    external_id: str  # work item id / issue number
    url: str = ""
    state: str = "open"  # "open" | "closed"
    # The finding's occurrence the task was last opened, reopened or commented for (0: unknown, a
    # ref stored before occurrences existed or found again by its tag). A late delivery of an older
    # occurrence (a retried "resolved" #1 after "opened" #2) must not close or reopen the task.
    occurrence: int = 0


_KIND_RANK = {"opened": 0, "changed": 1, "resolved": 2}


def finding_order(delivery: Delivery) -> tuple[int, int, float, str]:
    """Where a delivery stands among its finding's deliveries to one destination: by occurrence,
    then opened < changed < resolved within it, then when it was recorded. Semantic first, so the
    order holds across workers whose clocks disagree."""
    kind = str(delivery.transition.get("transition", ""))
    return (occurrence_of(delivery.transition), _KIND_RANK.get(kind, 1), delivery.created_at, delivery.delivery_id)


def first_before(delivery: Delivery, candidates: Iterable[Delivery]) -> Delivery | None:
    """The earliest pending delivery among ``candidates`` (same destination and finding) that
    comes before ``delivery``, or None."""
    mine = finding_order(delivery)
    earlier = [
        c
        for c in candidates
        if c.status is DeliveryStatus.PENDING
        and c.delivery_id != delivery.delivery_id
        and c.destination == delivery.destination
        and c.finding_key == delivery.finding_key
        and finding_order(c) < mine
    ]
    return min(earlier, key=finding_order, default=None)


def occurrence_of(transition: Mapping[str, Any]) -> int:
    """The transition's occurrence (0 when a payload from before occurrences existed has none)."""
    value = transition.get("occurrence", 0)
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def is_stale(task: TaskRef, transition: Mapping[str, Any]) -> bool:
    """A delivery of an older occurrence than the task already stands for (sent out of order)."""
    occurrence = occurrence_of(transition)
    return bool(occurrence and task.occurrence and occurrence < task.occurrence)


@dataclass(frozen=True)
class Outcome:
    """What a send achieved. ``retry_after`` is the server's hint in seconds (429/503)."""

    ok: bool
    status: int | None = None
    retryable: bool = False
    error: str = ""  # redacted
    retry_after: float | None = None
    task: TaskRef | None = None  # a task opened/updated/closed by this delivery


class TaskLookup(Protocol):
    def get_task(self, destination: str, finding_key: str) -> TaskRef | None: ...


class Sender(Protocol):
    """Sends one delivery to one destination (with its own retry layer for transient errors)."""

    name: str

    def send(self, delivery: Delivery, tasks: TaskLookup) -> Outcome: ...


class OutboxStore(Protocol):
    def add_deliveries(self, deliveries: list[Delivery]) -> int:
        """Insert deliveries that are not stored yet (by delivery_id); return how many were new."""
        ...

    def due_deliveries(
        self, now: float, limit: int = 100, digest: bool | None = None, created_before: float | None = None
    ) -> list[tuple[Delivery, str]]:
        """Pending deliveries with next_attempt_at <= now, oldest first, each with its ETag.

        ``digest``: only quiet-mode (True) or only immediate (False) deliveries, ``limit`` applied
        to that kind alone (so a digest backlog never hides an alert); None: both kinds.
        ``created_before``: only deliveries recorded before then (None: all)."""
        ...

    def older_pending(self, delivery: Delivery) -> Delivery | None:
        """A PENDING delivery of the same finding to the same destination that comes before
        ``delivery`` (``finding_order``), if any: ``delivery`` is not to be sent before it."""
        ...

    def update_delivery(self, delivery: Delivery, etag: str) -> str:
        """Conditional replace (status, attempts, next_attempt_at, last_*); ConflictError on a lost race."""
        ...

    def get_delivery(self, delivery_id: str) -> tuple[Delivery, str] | None: ...

    def get_task(self, destination: str, finding_key: str) -> TaskRef | None: ...

    def put_task(self, task: TaskRef) -> None:
        """Upsert the task reference for (destination, finding_key)."""
        ...

    def count_deliveries(self, status: DeliveryStatus | None = None) -> int: ...


class _LegacyTasks(Protocol):
    """What ``take_over_legacy_tasks`` needs of a task sender (GitHub, Azure DevOps)."""

    name: str

    def find_task(self, finding_key: str) -> tuple[Any, TaskRef | None]: ...

    def close(self, task: TaskRef, t: Mapping[str, Any]) -> Outcome: ...


MERGED_NOTE = (
    "Merged: nsp-drift now reports one finding per rule and account; this finding continues in the "
    "account's finding for the rule"
)


def take_over_legacy_tasks(
    sender: _LegacyTasks,
    tasks: TaskLookup,
    t: Mapping[str, Any],
    finding_key: str,
    failed: Callable[[Any], Outcome],
) -> tuple[Outcome | None, TaskRef | None]:
    """For a finding merged from per-subject findings (``legacy_keys``, shared.adapters.state.legacy) that
    has no task of its own yet: the first open task of its subjects becomes its task (returned,
    re-keyed, so the caller comments on it or closes it and stores it under the new key); the other
    open ones are closed with a note. A failed lookup (``failed`` turns its result into the
    sender's Outcome) or close is returned first, so the delivery is retried rather than a
    duplicate task created."""
    legacy = t.get("legacy_keys")
    if not isinstance(legacy, list) or not legacy:
        return None, None
    open_tasks: list[TaskRef] = []
    for key in sorted(str(k) for k in legacy):
        task = tasks.get_task(sender.name, key)
        if task is None:
            lookup, task = sender.find_task(key)
            if not lookup.ok:
                return failed(lookup), None
        if task is not None and task.state == "open":
            open_tasks.append(task)
    if not open_tasks:
        return None, None
    keep, *others = open_tasks
    where = f" ({keep.url})" if keep.url else ""
    for other in others:
        outcome = sender.close(other, {**t, "transition": "resolved", "summary": f"{MERGED_NOTE}{where}."})
        if not outcome.ok:
            return outcome, None
    return None, TaskRef(keep.destination, finding_key, keep.external_id, keep.url, keep.state, keep.occurrence)
