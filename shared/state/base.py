"""The state store interface: what nsp-drift remembers between evaluations.

Two implementations share it: Azure Table storage (``table_store``: the function app, Azurite
locally) and SQLite (``sqlite_store``: the CLI's embedded default). Every write of account or
profile state is conditional on the ETag read before it, so two concurrent evaluations cannot
lose an update: the loser gets ConflictError and re-runs its decide step on fresh state.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from shared.changes import Provenance, Target, TargetKind

T = TypeVar("T")


class ConflictError(Exception):
    """A conditional write lost a race (ETag mismatch, or the row appeared/disappeared)."""


class StoreUnavailable(Exception):
    """The store cannot be reached; the caller must fail so the runtime retries the work."""


@dataclass(frozen=True)
class Versioned(Generic[T]):
    value: T
    etag: str


@dataclass(frozen=True)
class AssociationState:
    perimeter_id: str
    association_name: str
    access_mode: str
    profile_name: str


@dataclass(frozen=True)
class AccountState:
    """What the last evaluation of one storage account concluded."""

    account_id: str
    findings: tuple[dict[str, Any], ...] = ()  # shared.output.finding_to_dict(...) plus "key"
    associations: tuple[AssociationState, ...] = ()
    key_vault_name: str = ""  # CMK vault (lower case) or ""
    vm_ids: tuple[str, ...] = ()  # VMs with VHDs in this account (lower case)
    backup_instance_ids: tuple[str, ...] = ()  # lower case
    evaluated_at: str = ""
    snapshot_digest: str = ""  # sha256 of the snapshot, to skip no-op writes
    summary_digest: str = ""  # digest of the Resource Graph summary fields (the graph sweep's change test)
    # Transition key -> its latest occurrence (a finding's opening count; shared.drift). Kept after
    # a finding resolves, and after the account is deleted (in its tombstone), so that a finding
    # that comes back is a new occurrence with a new idempotency key.
    occurrences: dict[str, int] = field(default_factory=dict)
    # Set when the account was deleted: the row is a tombstone that only carries ``occurrences``.
    # Stores leave tombstones out of ``all_account_ids``; ``accounts_for`` never sees them (no refs).
    deleted_at: str = ""

    @property
    def is_tombstone(self) -> bool:
        return bool(self.deleted_at)

    def referenced(self) -> dict[TargetKind, set[str]]:
        """The resources this account depends on, for the reverse indexes (lower-case ids)."""
        return {
            TargetKind.PERIMETER: {a.perimeter_id.lower() for a in self.associations},
            TargetKind.KEY_VAULT: {self.key_vault_name} if self.key_vault_name else set(),
            TargetKind.VIRTUAL_MACHINE: set(self.vm_ids),
            TargetKind.BACKUP_INSTANCE: set(self.backup_instance_ids),
        }


@dataclass(frozen=True)
class ProfileState:
    """The effective access rules last seen for one perimeter profile."""

    perimeter_id: str
    profile_name: str
    access_rules_version: int | None
    rules: tuple[dict[str, Any], ...] = ()  # one dict per rule: name, direction, addressPrefixes, ...


@dataclass(frozen=True)
class PendingMarker:
    """Events waiting for one target's coalescing window to close."""

    target: Target
    provenance: Provenance = field(default_factory=Provenance)
    first_seen: float = 0.0  # epoch seconds
    due: float = 0.0  # when the window closes
    attempts: int = 0
    etag: str = ""


class StateStore(Protocol):
    # -- account and profile state: conditional writes ------------------------------------
    def get_account(self, account_id: str) -> Versioned[AccountState] | None: ...

    def put_account(self, state: AccountState, etag: str | None) -> str:
        """Write if the stored ETag is ``etag`` (None: only if absent). Returns the new ETag.
        Maintains the reverse indexes of ``accounts_for``. Raises ConflictError."""
        ...

    def delete_account(self, account_id: str, etag: str) -> None:
        """Forget a deleted account (and its index entries). Raises ConflictError."""
        ...

    def get_profile(self, perimeter_id: str, profile_name: str) -> Versioned[ProfileState] | None: ...

    def put_profile(self, state: ProfileState, etag: str | None) -> str: ...

    def accounts_for(self, kind: TargetKind, resource_id: str) -> list[str]:
        """Account ids whose stored state references the resource (perimeter id, VM id, backup
        instance id, or key vault *name* for KEY_VAULT)."""
        ...

    def all_account_ids(self) -> list[str]:
        """Ids of the stored accounts, without the tombstones of deleted ones."""
        ...

    # -- idempotency ------------------------------------------------------------------------
    def record_events(self, event_ids: Sequence[str]) -> set[str]:
        """Record event ids as processed; return those that were NOT seen before."""
        ...

    def seen_events(self, event_ids: Sequence[str]) -> set[str]:
        """The subset of ``event_ids`` already recorded (read-only)."""
        ...

    def purge_events(self, older_than: float) -> int:
        """Forget event ids recorded before ``older_than`` (epoch seconds); returns how many."""
        ...

    # -- coalescing ---------------------------------------------------------------------------
    def add_pending(self, target: Target, provenance: Provenance, window_seconds: float, now: float) -> bool:
        """Merge into the target's open marker, or open one that closes at now + window.
        Returns True only when this call opened the marker (the caller enqueues one message)."""
        ...

    def claim_pending(self, target: Target) -> PendingMarker | None:
        """Take the marker away (conditional delete) so its events are evaluated exactly once.
        None if there is none (already claimed by a duplicate message)."""
        ...

    def release_pending(self, marker: PendingMarker, now: float) -> None:
        """Put a claimed marker back (evaluation failed): merged with any newer one, attempts+1."""
        ...

    def overdue_pending(self, now: float, grace_seconds: float) -> list[PendingMarker]:
        """Markers whose window closed more than ``grace_seconds`` ago (lost queue message)."""
        ...

    def close(self) -> None: ...


def merge_provenance(a: Provenance, b: Provenance) -> Provenance:
    """Union of two provenances, order kept, duplicates dropped (re-delivered events)."""

    def union(x: Iterable[Any], y: Iterable[Any]) -> tuple[Any, ...]:
        return tuple(dict.fromkeys([*x, *y]))

    return Provenance(
        event_ids=union(a.event_ids, b.event_ids),
        actors=union(a.actors, b.actors),
        operation_names=union(a.operation_names, b.operation_names),
        correlation_ids=union(a.correlation_ids, b.correlation_ids),
        event_times=union(a.event_times, b.event_times),
        source=a.source if a.source == b.source else "event",
    )
