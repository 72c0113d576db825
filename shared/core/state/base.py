"""The state store interface: what nsp-drift remembers between evaluations.

Two implementations share it: Azure Table storage (``table_store``: the function app, Azurite
locally) and SQLite (``sqlite_store``: the CLI's embedded default). Every write of account or
profile state is conditional on the ETag read before it, so two concurrent evaluations cannot
lose an update: the loser gets ConflictError and re-runs its decide step on fresh state.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from shared.core.changes import Provenance, Target, TargetKind

if TYPE_CHECKING:
    from shared.core.notify.base import Delivery, DeliveryStatus

T = TypeVar("T")


class ConflictError(Exception):
    """A conditional write lost a race (ETag mismatch, or the row appeared/disappeared)."""


class StoreUnavailable(Exception):
    """The store cannot be reached; the caller must fail so the runtime retries the work."""


class WindowBusy(Exception):
    """The window cannot be claimed before ``until`` (epoch seconds): another worker's lease on
    it is still running, or it is backing off after failed evaluations."""

    def __init__(self, target: Target, until: float, why: str) -> None:
        super().__init__(f"window of {target.key} {why} until {until:.0f}")
        self.target = target
        self.until = until
        self.why = why


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
    findings: tuple[dict[str, Any], ...] = ()  # shared.core.output.finding_to_dict(...) plus "key"
    associations: tuple[AssociationState, ...] = ()
    key_vault_name: str = ""  # CMK vault (lower case) or ""
    vm_ids: tuple[str, ...] = ()  # VMs with VHDs in this account (lower case)
    backup_instance_ids: tuple[str, ...] = ()  # lower case
    evaluated_at: str = ""
    snapshot_digest: str = ""  # sha256 of the snapshot
    summary_digest: str = ""  # digest of the Resource Graph summary fields (the graph sweep's change test)
    # Transition key -> its latest occurrence (a finding's opening count; shared.core.drift). Kept after
    # a finding resolves, and after the account is deleted (in its tombstone), so that a finding
    # that comes back is a new occurrence with a new idempotency key.
    occurrences: dict[str, int] = field(default_factory=dict)
    # Set when the account was deleted: the row is a tombstone that only carries ``occurrences``
    # (and, until recorded, the resolutions its deletion made true: ``pending_transitions``).
    # Stores leave tombstones out of ``all_account_ids`` unless they still carry transitions;
    # ``accounts_for`` never sees them (no refs).
    deleted_at: str = ""
    observed_at: float = 0.0  # epoch seconds when the read behind this state began
    # The transitions this write made true, until they are known to be in the outbox (see
    # shared.service.pipeline, "Ordering"): whoever overwrites the row records them first.
    pending_transitions: tuple[dict[str, Any], ...] = ()
    # The account's own properties the perimeter rules read (name, kind, location, public network
    # access, network default action, encryption key source / vault URI / key name), as of the
    # read behind this state: a perimeter change re-reads only the NSP configuration and takes
    # these from here (an account write re-reads them: its event evaluates the whole account).
    facts: dict[str, str] = field(default_factory=dict)
    # True when ``vm_ids``, ``backup_instance_ids`` and the findings of the rules that stand on
    # them come from a read of the subscription's VMs and the account's backup instances made
    # while the account was in a perimeter (False: never read so, or the last such read failed).
    # Only then may a storage account event carry them forward unread (shared.service.pipeline.LINKED_READS).
    linked_evidence: bool = False

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
    pending_transitions: tuple[dict[str, Any], ...] = ()  # as AccountState.pending_transitions


@dataclass(frozen=True)
class PendingMarker:
    """Events waiting for one target's coalescing window to close, and who is evaluating them.

    A claim is a lease (``lease_id`` until ``lease_until``): it lapses by itself when its worker
    vanishes, and the window is deleted only once its evaluation's results are stored. Events
    that arrive while a lease is held wait in ``later`` for a follow-up window. The arithmetic is
    in shared.core.state.pending."""

    target: Target
    provenance: Provenance = field(default_factory=Provenance)
    first_seen: float = 0.0  # epoch seconds; identifies this window (a follow-up gets a new one)
    due: float = 0.0  # when the window closes; after a failure, when to try again
    attempts: int = 0  # evaluations of this window that failed (reset by a follow-up window)
    etag: str = ""
    lease_id: str = ""  # the claim evaluating this window ("": nobody)
    lease_until: float = 0.0  # the claim lapses then (computed from the clock when taken)
    later: Provenance | None = None  # events that arrived during the lease: a follow-up window
    queued: bool = True  # False: a message that will claim the window is owed (not confirmed sent)
    last_error: str = ""  # why the last evaluation failed (redacted, one line)
    alerted: bool = False  # the operators were told this window keeps failing


@dataclass(frozen=True)
class Joined:
    """What ``StateStore.put_pending`` did: whether the window is owed a queue message (the
    caller sends it, then calls ``mark_queued``), and the window as it wrote it (None: nothing to
    write, a re-delivered event)."""

    owes_message: bool
    written: PendingMarker | None = None


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
        """Ids of the stored accounts, without the tombstones of deleted ones (except those still
        carrying transitions to record: the sweep re-reads them, which records them)."""
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

    # -- coalescing windows and their leases (every write ETag-guarded) ------------------------
    def add_pending(self, target: Target, provenance: Provenance, window_seconds: float, now: float) -> bool:
        """Merge into the target's window (into ``later`` while it is leased), or open one that
        closes at now + window. True when the window is owed a queue message: the caller sends
        it, then calls ``mark_queued``. A window whose message was never confirmed sent says so
        again to the next event that joins it (a re-delivered event re-sends it)."""
        ...

    def get_pending(self, target: Target) -> PendingMarker | None:
        """The target's window as stored now (with its ETag), None without one (intake reads it
        first: an event that adds nothing to an open, unleased window needs no write)."""
        ...

    def put_pending(
        self, target: Target, provenance: Provenance, window_seconds: float, now: float, current: PendingMarker | None
    ) -> Joined:
        """``add_pending`` starting from ``current`` as the caller read it (``get_pending``): no
        read when it still holds; a lost race reads again. Says whether the window is owed a queue
        message and returns the window as written (for ``mark_queued``)."""
        ...

    def mark_queued(self, target: Target, sent_at: float, written: PendingMarker | None = None) -> None:
        """A message for the target was sent at ``sent_at``: it serves the window if that was
        opened by then (a follow-up opened later still owes its own). No-op without a window.
        ``written``: the window as the caller last wrote it (``put_pending``); the write is then
        conditional on its ETag, without a read (a read only when the window changed since)."""
        ...

    def claim_pending(self, target: Target, now: float, lease_seconds: float) -> PendingMarker | None:
        """Lease the window until now + lease_seconds; the lease lapses by itself. None if there
        is no window (already evaluated). Raises WindowBusy while another lease runs or while the
        window backs off after failures. A lapsed lease is taken over, ``later`` merged in."""
        ...

    def complete_pending(self, claimed: PendingMarker, now: float, window_seconds: float) -> bool:
        """The claimed window's results are stored: delete it, unless events joined during the
        lease, which become a follow-up window closing at now + window_seconds (True: the caller
        sends its message, then ``mark_queued``). A no-op when the lease was taken over."""
        ...

    def release_pending(
        self, claimed: PendingMarker, now: float, retry_at: float, error: str = "", alerted: bool = False
    ) -> bool:
        """The evaluation failed: end the lease, count the attempt, try again at ``retry_at``
        (``later`` merged in); ``alerted``: the operators have been told it keeps failing. False
        when the lease was taken over (nothing changed); True: the caller sends the retry's
        message, then ``mark_queued``."""
        ...

    def overdue_pending(self, now: float, grace_seconds: float) -> list[PendingMarker]:
        """Windows nobody is taking care of for more than ``grace_seconds``: closed (or due for a
        retry) with no lease, or leased with a lease that lapsed (lost message, vanished worker).
        Windows backing off until later are not overdue."""
        ...

    def failing_pending(self) -> list[PendingMarker]:
        """Windows whose last evaluation failed (backing off): the operators' count."""
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


# -- the operator's view: sweep heartbeats, poisoned evaluations, what ``nsp-drift status`` reads --------


@dataclass(frozen=True)
class SweepRecord:
    """When a sweep of one kind ("sweep": the Resource Graph timer, "full": the ARM timer) last
    completed, and the heartbeat alert about it (shared.service.heartbeat). Written conditionally on its
    ETag, carrying the alert's transition until the outbox has it (as AccountState does)."""

    kind: str
    completed_at: float = 0.0  # epoch seconds of the last completion (0: never)
    watched_since: float = 0.0  # when the heartbeat first looked (the clock of a sweep that never ran)
    alerted_at: float = 0.0  # the stale alert is open since then (0: none open)
    occurrence: int = 0  # stale alerts raised so far (the open one's occurrence)
    pending_transitions: tuple[dict[str, Any], ...] = ()


@dataclass(frozen=True)
class PoisonRecord:
    """An evaluation whose queue message went to the poison queue (best effort: recorded next to
    the operator alert). Current while the target's window from before ``at`` is still there."""

    target: Target
    reason: str  # redacted, one line
    attempts: int
    at: float  # epoch seconds


class StatusStore(Protocol):
    """What the operator's view reads (and the heartbeat writes); both stores implement it."""

    def account_states(self) -> list[AccountState]:
        """Every stored account row (tombstones included), decoded; a corrupt row raises CodecError."""
        ...

    def failing_pending(self) -> list[PendingMarker]: ...

    def window_of(self, target: Target) -> PendingMarker | None:
        """The target's coalescing window, if it has one (read-only)."""
        ...

    def list_deliveries(self, status: DeliveryStatus) -> list[Delivery]:
        """Every delivery in ``status`` (the outbox's report, oldest first)."""
        ...

    def get_sweep(self, kind: str) -> Versioned[SweepRecord] | None: ...

    def put_sweep(self, record: SweepRecord, etag: str | None) -> str:
        """Write if the stored ETag is ``etag`` (None: only if absent). Raises ConflictError."""
        ...

    def record_poisoned(self, record: PoisonRecord) -> None: ...

    def poisoned(self) -> list[PoisonRecord]: ...

    def forget_poisoned(self, target: Target) -> None: ...
