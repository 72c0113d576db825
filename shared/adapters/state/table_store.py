"""Azure Table storage implementation of StateStore (the function app; Azurite locally).

Tables (created on first use, never at import): ``{prefix}state`` (accounts and profiles),
``{prefix}index`` (reverse indexes), ``{prefix}pending`` (coalescing markers),
``{prefix}events`` (processed event ids) and ``{prefix}outbox`` (deliveries with their pending
index, and remediation task references; see the outbox section below).

Keys: ARM ids contain '/', which PartitionKey/RowKey forbid, so rows are keyed by sha256 of the
lower-cased id and keep the original id in a property.

Payloads: a document is stored as a JSON string in ``data0`` when it fits one string property
(Table strings are UTF-16, so 64 KiB is 32 768 characters); otherwise gzip-compressed and split
over binary properties ``data0..dataN`` of at most 64 000 bytes each (the SDK sends them
base64-encoded). Fifteen chunks keep an entity under the 1 MiB limit.

Every account/profile write is conditional on the ETag; a lost race raises ConflictError.
"""

from __future__ import annotations

import gzip
import hashlib
import random
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import replace
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from azure.core import MatchConditions
from azure.core.exceptions import (
    HttpResponseError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.data.tables import TableClient, TableEntity, TableServiceClient, TransactionOperation, UpdateMode

from shared.adapters.state import codec
from shared.core.changes import Provenance, Target, TargetKind
from shared.core.notify.base import Delivery, DeliveryStatus, TaskRef, first_before
from shared.core.state import pending
from shared.core.state.base import (
    AccountState,
    ConflictError,
    Joined,
    PendingMarker,
    PoisonRecord,
    ProfileState,
    StoreUnavailable,
    SweepRecord,
    Versioned,
    WindowBusy,
)

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential
    from azure.core.pipeline import PipelineResponse

    from shared.core.notify.base import OutboxStore
    from shared.core.state.base import StateStore, StatusStore

DEFAULT_PREFIX = "nspdrift"
_PREFIX = re.compile(r"^[A-Za-z][A-Za-z0-9]{0,40}$")  # table names: alphanumeric, 3-63 chars

_ACCOUNT_PK = "account"
_DELIVERY_PK = "delivery"
_TASK_PK = "task"
_PROFILE_PK = "profile"
_PENDING_PK = "pending"
_SWEEP_PK = "sweep"
_POISONED_PK = "poisoned"
_DUE_PREFIX = "~due|"  # index rows of pending deliveries; '~' sorts after the hex delivery ids
_DUE_END = "~due}"  # '|' + 1: the exclusive upper bound of the index rows' RowKey range
_FINDING_PREFIX = "~fnd|"  # ~fnd|<sha of destination|finding>|<delivery id>: a finding's pending deliveries
_DELIVERY_ID = re.compile(r"^[0-9a-f]{1,64}$")

# One operation of an entity-group transaction: (operation, entity, keyword arguments).
_Operation = tuple[TransactionOperation, Mapping[str, Any], Mapping[str, Any]]

_STRING_CHARS = 32_000  # one string property: 64 KiB of UTF-16, with room to spare
_CHUNK_BYTES = 64_000  # one binary property: at most 64 KiB
_MAX_CHUNKS = 15  # 15 x 64 000 B plus the other properties stays under 1 MiB per entity

_MAX_RACES = 50  # add/release retries under contention (each round is one read + one write)
_UNAVAILABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})


class StateTooLarge(ValueError):
    """A document does not fit one Table entity even compressed."""


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


# -- payload packing ------------------------------------------------------------------------------


def pack(text: str, what: str) -> dict[str, Any]:
    """Properties holding ``text``: plain JSON when small (readable in Storage Explorer), else gzip."""
    if len(text) <= _STRING_CHARS:
        return {"Enc": "json", "Chunks": 1, "data0": text}
    blob = gzip.compress(text.encode(), mtime=0)
    chunks = [blob[i : i + _CHUNK_BYTES] for i in range(0, len(blob), _CHUNK_BYTES)]
    if len(chunks) > _MAX_CHUNKS:
        raise StateTooLarge(
            f"{what}: {len(blob)} bytes compressed; a Table entity holds at most {_MAX_CHUNKS * _CHUNK_BYTES}"
        )
    return {"Enc": "gzip", "Chunks": len(chunks), **{f"data{i}": chunk for i, chunk in enumerate(chunks)}}


def unpack(entity: Mapping[str, Any], what: str) -> str:
    encoding, count = entity.get("Enc"), entity.get("Chunks")
    if not isinstance(count, int) or not 1 <= count <= _MAX_CHUNKS:
        raise codec.CodecError(f"{what}.Chunks: expected 1..{_MAX_CHUNKS}, got {count!r}")
    parts = [entity.get(f"data{i}") for i in range(count)]
    if encoding == "json" and count == 1 and isinstance(parts[0], str):
        return parts[0]
    if encoding == "gzip" and all(isinstance(p, bytes) for p in parts):
        return gzip.decompress(b"".join(p for p in parts if isinstance(p, bytes))).decode()
    raise codec.CodecError(f"{what}.Enc: cannot read {encoding!r} with {count} chunk(s)")


# -- error mapping ----------------------------------------------------------------------------------


@contextmanager
def _storage_errors(what: str) -> Iterator[None]:
    """SDK errors -> the store's vocabulary. Messages name the operation, never the endpoint or key."""
    try:
        yield
    except (ResourceModifiedError, ResourceExistsError) as exc:
        raise ConflictError(f"{what}: lost a write race (HTTP {exc.status_code})") from exc
    except (ServiceRequestError, ServiceResponseError) as exc:
        raise StoreUnavailable(f"{what}: table service unreachable ({type(exc).__name__})") from exc
    except HttpResponseError as exc:
        if exc.status_code in (409, 412):
            raise ConflictError(f"{what}: lost a write race (HTTP {exc.status_code})") from exc
        if exc.status_code in _UNAVAILABLE_STATUS:
            raise StoreUnavailable(f"{what}: table service returned HTTP {exc.status_code}") from exc
        raise


def _odata_double(value: float) -> str:
    # Formatted here rather than passed as a filter parameter: the SDK renders 0.0 and 1.0 as
    # false/true (it tests ``val in [True, False]`` before ``isinstance(val, float)``). repr is the
    # shortest text that parses back to the same double, so "le now" is exact to the last bit
    # (a fixed 6 decimals could round now down past a row due at exactly now); Decimal spells it
    # without an exponent, and a literal without a '.' would be read as an integer.
    text = format(Decimal(repr(float(value))), "f")
    return text if "." in text else f"{text}.0"


def _etag(entity: TableEntity) -> str:
    return str(entity.metadata["etag"])


def _backoff(attempt: int) -> None:
    # Jittered so that racing writers stop colliding in lockstep.
    time.sleep(random.uniform(0, min(0.005 * 2**attempt, 0.2)))  # noqa: S311 - not cryptographic


class TableStateStore:
    def __init__(
        self,
        service: TableServiceClient,
        prefix: str = DEFAULT_PREFIX,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not _PREFIX.match(prefix):
            raise ValueError("table prefix: letters and digits only, starting with a letter (at most 41)")
        self._service = service
        self._clock = clock
        self._state_table = f"{prefix}state"
        self._index_table = f"{prefix}index"
        self._pending_table = f"{prefix}pending"
        self._events_table = f"{prefix}events"
        self._outbox_table = f"{prefix}outbox"
        self._tables: dict[str, TableClient] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_connection_string(
        cls,
        connection_string: str,
        prefix: str = DEFAULT_PREFIX,
        *,
        clock: Callable[[], float] = time.time,
        **client_kwargs: Any,
    ) -> TableStateStore:
        """``client_kwargs`` go to the SDK client (e.g. ``retry_total``)."""
        client = TableServiceClient.from_connection_string(connection_string, **_client_options(client_kwargs))
        return cls(client, prefix, clock=clock)

    @classmethod
    def from_service_uri(
        cls,
        service_uri: str,
        credential: TokenCredential,
        prefix: str = DEFAULT_PREFIX,
        *,
        clock: Callable[[], float] = time.time,
        **client_kwargs: Any,
    ) -> TableStateStore:
        """Identity-based connection (``AzureWebJobsStorage__tableServiceUri``)."""
        client = TableServiceClient(service_uri, credential=credential, **_client_options(client_kwargs))
        return cls(client, prefix, clock=clock)

    # -- plumbing -------------------------------------------------------------------------------------
    def _table(self, name: str) -> TableClient:
        client = self._tables.get(name)
        if client is None:
            with self._lock:
                client = self._tables.get(name)
                if client is None:
                    with _storage_errors(f"create table {name}"):
                        client = self._service.create_table_if_not_exists(name)
                    self._tables[name] = client
        return client

    def _read(self, table: str, partition_key: str, row_key: str) -> TableEntity | None:
        with _storage_errors(f"read {table}"):
            try:
                return self._table(table).get_entity(partition_key, row_key)
            except ResourceNotFoundError:
                return None

    def _create(self, table: str, entity: Mapping[str, Any], what: str) -> str:
        with _storage_errors(what):
            return str(self._table(table).create_entity(entity)["etag"])

    def _replace(self, table: str, entity: Mapping[str, Any], etag: str, what: str) -> str:
        with _storage_errors(what):
            try:
                result = self._table(table).update_entity(
                    entity, mode=UpdateMode.REPLACE, etag=etag, match_condition=MatchConditions.IfNotModified
                )
            except ResourceNotFoundError as exc:  # deleted since we read it: also a lost race
                raise ConflictError(f"{what}: the row was deleted concurrently") from exc
        return str(result["etag"])

    def _delete_if(self, table: str, partition_key: str, row_key: str, etag: str, what: str) -> bool:
        """Conditional delete; False if the row changed or is already gone (a lost race)."""
        statuses: list[int] = []

        def record(response: PipelineResponse[Any, Any]) -> None:
            statuses.append(response.http_response.status_code)

        try:
            with _storage_errors(what):
                # The SDK swallows 404 on delete; the hook is how we learn the row was already gone.
                self._table(table).delete_entity(
                    partition_key,
                    row_key,
                    etag=etag,
                    match_condition=MatchConditions.IfNotModified,
                    raw_response_hook=record,
                )
        except ConflictError:
            return False
        return not statuses or statuses[-1] != 404

    # -- account and profile state ------------------------------------------------------------------
    def get_account(self, account_id: str) -> Versioned[AccountState] | None:
        entity = self._read(self._state_table, _ACCOUNT_PK, _sha(codec.account_key(account_id)))
        if entity is None:
            return None
        state, _ = self._decode_account(entity)
        return Versioned(state, _etag(entity))

    def put_account(self, state: AccountState, etag: str | None) -> str:
        """Index rows are added before the state write and removed after it, so a crash in
        between leaves a superset (an extra evaluation), never a missing entry (a missed one).
        Removals not yet done are carried in the row (``unindex``) and retried by the next write."""
        what = f"write account {state.account_id}"
        refs = codec.references(state)
        if etag is None:
            self._index_add(state.account_id, refs)
            return self._create(self._state_table, self._account_entity(state, set()), what)
        current = self._read(self._state_table, _ACCOUNT_PK, _sha(codec.account_key(state.account_id)))
        if current is None or _etag(current) != etag:
            raise ConflictError(f"{what}: the stored ETag is no longer {etag}")
        old_state, unindex = self._decode_account(current)
        old_refs = codec.references(old_state)
        stale = (old_refs | unindex) - refs
        self._index_add(state.account_id, refs - old_refs)
        new_etag = self._replace(self._state_table, self._account_entity(state, stale), etag, what)
        self._index_remove(state.account_id, stale)
        return new_etag

    def delete_account(self, account_id: str, etag: str) -> None:
        what = f"delete account {account_id}"
        row_key = _sha(codec.account_key(account_id))
        current = self._read(self._state_table, _ACCOUNT_PK, row_key)
        if current is None or _etag(current) != etag:
            raise ConflictError(f"{what}: the stored ETag is no longer {etag}")
        old_state, unindex = self._decode_account(current)
        if not self._delete_if(self._state_table, _ACCOUNT_PK, row_key, etag, what):
            raise ConflictError(f"{what}: changed or deleted concurrently")
        self._index_remove(account_id, codec.references(old_state) | unindex)

    def _account_entity(self, state: AccountState, unindex: set[tuple[TargetKind, str]]) -> dict[str, Any]:
        document = {
            "account": codec.account_to_dict(state),
            "unindex": sorted([k.value, ref] for k, ref in unindex),
        }
        return {
            "PartitionKey": _ACCOUNT_PK,
            "RowKey": _sha(codec.account_key(state.account_id)),
            "AccountId": state.account_id,
            "Deleted": state.is_tombstone,  # read by all_account_ids without decoding the row
            "Carrying": bool(state.pending_transitions),  # a tombstone that does is still listed
            **pack(codec.dumps(document), f"account {state.account_id}"),
        }

    @staticmethod
    def _decode_account(entity: TableEntity) -> tuple[AccountState, set[tuple[TargetKind, str]]]:
        what = f"account row {entity.get('AccountId', '?')}"
        document = codec.loads(unpack(entity, what), what)
        account = document.get("account")
        pairs = document.get("unindex")
        if not isinstance(account, dict) or not isinstance(pairs, list):
            raise codec.CodecError(f"{what}: expected 'account' and 'unindex'")
        try:
            unindex = {(TargetKind(kind), str(ref)) for kind, ref in pairs}
        except (TypeError, ValueError):
            raise codec.CodecError(f"{what}.unindex: expected [kind, id] pairs") from None
        return codec.account_from_dict(account, what), unindex

    def get_profile(self, perimeter_id: str, profile_name: str) -> Versioned[ProfileState] | None:
        entity = self._read(self._state_table, _PROFILE_PK, _sha(codec.profile_key(perimeter_id, profile_name)))
        if entity is None:
            return None
        return Versioned(codec.profile_from_json(unpack(entity, f"profile row {profile_name}")), _etag(entity))

    def put_profile(self, state: ProfileState, etag: str | None) -> str:
        what = f"write profile {state.profile_name} of {state.perimeter_id}"
        entity = {
            "PartitionKey": _PROFILE_PK,
            "RowKey": _sha(codec.profile_key(state.perimeter_id, state.profile_name)),
            "PerimeterId": state.perimeter_id,
            "ProfileName": state.profile_name,
            **pack(codec.profile_to_json(state), what),
        }
        if etag is None:
            return self._create(self._state_table, entity, what)
        return self._replace(self._state_table, entity, etag, what)

    # -- reverse indexes ---------------------------------------------------------------------------------
    def accounts_for(self, kind: TargetKind, resource_id: str) -> list[str]:
        partition = Target(kind, resource_id).row_key
        with _storage_errors(f"read {self._index_table}"):
            rows = self._table(self._index_table).query_entities(
                "PartitionKey eq @pk", parameters={"pk": partition}, select=["AccountId"]
            )
            return [str(row["AccountId"]) for row in rows]

    def all_account_ids(self) -> list[str]:
        with _storage_errors(f"read {self._state_table}"):
            rows = self._table(self._state_table).query_entities(
                "PartitionKey eq @pk", parameters={"pk": _ACCOUNT_PK}, select=["AccountId", "Deleted", "Carrying"]
            )
            # Rows written before tombstones existed have no Deleted property: live accounts. A
            # tombstone still carrying transitions to record is listed, so a sweep records them.
            return [
                str(row["AccountId"]) for row in rows if row.get("Deleted") is not True or row.get("Carrying") is True
            ]

    def _index_add(self, account_id: str, refs: set[tuple[TargetKind, str]]) -> None:
        with _storage_errors(f"write {self._index_table}"):
            for kind, ref in sorted(refs):
                self._table(self._index_table).upsert_entity(
                    {
                        "PartitionKey": Target(kind, ref).row_key,
                        "RowKey": _sha(codec.account_key(account_id)),
                        "AccountId": account_id,
                        "Kind": kind.value,
                        "Ref": ref,
                    },
                    mode=UpdateMode.REPLACE,
                )

    def _index_remove(self, account_id: str, refs: set[tuple[TargetKind, str]]) -> None:
        with _storage_errors(f"write {self._index_table}"):
            for kind, ref in sorted(refs):
                # Unconditional and idempotent: the SDK ignores a row that is already gone.
                self._table(self._index_table).delete_entity(
                    Target(kind, ref).row_key, _sha(codec.account_key(account_id))
                )

    # -- idempotency ----------------------------------------------------------------------------------------
    def record_events(self, event_ids: Sequence[str]) -> set[str]:
        fresh: set[str] = set()
        now = self._clock()
        with _storage_errors(f"write {self._events_table}"):
            for event_id in dict.fromkeys(event_ids):
                digest = _sha(event_id)
                try:
                    # Insert is the atomic "first one wins" test; 256 partitions spread the load.
                    self._table(self._events_table).create_entity(
                        {"PartitionKey": digest[:2], "RowKey": digest, "EventId": event_id, "RecordedAt": now}
                    )
                except ResourceExistsError:
                    continue
                fresh.add(event_id)
        return fresh

    def seen_events(self, event_ids: Sequence[str]) -> set[str]:
        seen: set[str] = set()
        with _storage_errors(f"read {self._events_table}"):
            for event_id in dict.fromkeys(event_ids):
                digest = _sha(event_id)
                if self._read(self._events_table, digest[:2], digest) is not None:
                    seen.add(event_id)
        return seen

    def purge_events(self, older_than: float) -> int:
        """Forget event ids recorded before ``older_than`` (Event Grid stops redelivering after 24 h)."""
        table = self._table(self._events_table)
        with _storage_errors(f"purge {self._events_table}"):
            rows = list(
                table.query_entities(f"RecordedAt lt {_odata_double(older_than)}", select=["PartitionKey", "RowKey"])
            )
            for row in rows:
                table.delete_entity(row["PartitionKey"], row["RowKey"])
        return len(rows)

    # -- coalescing windows and their leases -------------------------------------------------------------
    # Every change is read, computed (shared.core.state.pending), then written conditionally on the ETag
    # read; a lost race reads again. ``Due`` (a property of its own, for overdue_pending's filter) is
    # pending.reclaim_at(marker): when anyone may claim the window.
    def _read_marker(self, target: Target) -> PendingMarker | None:
        entity = self._read(self._pending_table, _PENDING_PK, target.row_key)
        if entity is None:
            return None
        return codec.pending_from_json(unpack(entity, f"pending row {target.key}"), _etag(entity))

    @staticmethod
    def _marker_entity(marker: PendingMarker) -> dict[str, Any]:
        return {
            "PartitionKey": _PENDING_PK,
            "RowKey": marker.target.row_key,
            "Due": float(pending.reclaim_at(marker)),
            "Attempts": marker.attempts,  # failing_pending filters on it
            **pack(codec.pending_to_json(marker), f"pending {marker.target.key}"),
        }

    def _store_marker(self, marker: PendingMarker, current: PendingMarker | None) -> str | None:
        """Create or conditionally replace; the new ETag, or None when another writer got there first."""
        what = f"write pending {marker.target.key}"
        try:
            if current is None:
                return self._create(self._pending_table, self._marker_entity(marker), what)
            return self._replace(self._pending_table, self._marker_entity(marker), current.etag, what)
        except ConflictError:
            return None

    def get_pending(self, target: Target) -> PendingMarker | None:
        return self._read_marker(target)

    def add_pending(self, target: Target, provenance: Provenance, window_seconds: float, now: float) -> bool:
        return self.put_pending(target, provenance, window_seconds, now, self._read_marker(target)).owes_message

    def put_pending(
        self, target: Target, provenance: Provenance, window_seconds: float, now: float, current: PendingMarker | None
    ) -> Joined:
        for attempt in range(_MAX_RACES):
            if attempt:
                current = self._read_marker(target)
            if current is None:
                opened = pending.opened(target, provenance, window_seconds, now)
                etag = self._store_marker(opened, None)
                if etag is not None:
                    return Joined(True, replace(opened, etag=etag))
            else:
                marker = pending.joined(current, provenance)
                if marker == current:  # a re-delivered event: no write
                    return Joined(pending.owes_message(current, provenance), current)
                etag = self._store_marker(marker, current)
                if etag is not None:
                    return Joined(pending.owes_message(current, provenance), replace(marker, etag=etag))
            _backoff(attempt)
        raise ConflictError(f"add pending {target.key}: still contended after {_MAX_RACES} attempts")

    def mark_queued(self, target: Target, sent_at: float, written: PendingMarker | None = None) -> None:
        # As the caller wrote it: one conditional write, no read (a lost race reads below).
        as_written = written is not None and written.etag and not written.queued and written.first_seen <= sent_at
        if as_written and written is not None and self._store_marker(pending.queued(written), written) is not None:
            return
        for attempt in range(_MAX_RACES):
            current = self._read_marker(target)
            if current is None or current.queued or current.first_seen > sent_at:
                return
            if self._store_marker(pending.queued(current), current) is not None:
                return
            _backoff(attempt)
        raise ConflictError(f"mark queued {target.key}: still contended after {_MAX_RACES} attempts")

    def claim_pending(self, target: Target, now: float, lease_seconds: float) -> PendingMarker | None:
        for attempt in range(_MAX_RACES):
            current = self._read_marker(target)
            if current is None:
                return None
            busy = pending.blocked(current, now)
            if busy is not None:
                raise WindowBusy(target, *busy)
            # Whoever replaces the row it read holds the lease; a loser reads again (and finds it busy).
            claim = pending.claimed(current, now, lease_seconds, secrets.token_hex(8))
            etag = self._store_marker(claim, current)
            if etag is not None:
                return replace(claim, etag=etag)
            _backoff(attempt)
        raise ConflictError(f"claim {target.key}: still contended after {_MAX_RACES} attempts")

    def complete_pending(self, claimed: PendingMarker, now: float, window_seconds: float) -> bool:
        what = f"complete {claimed.target.key}"
        # Unchanged since the claim (no event joined, the lease not taken over): delete it as
        # claimed, without a read. Anything else changed its ETag: read and decide below.
        unchanged = bool(claimed.etag) and claimed.later is None
        if unchanged and self._delete_if(self._pending_table, _PENDING_PK, claimed.target.row_key, claimed.etag, what):
            return False
        for attempt in range(_MAX_RACES):
            current = self._read_marker(claimed.target)
            if current is None or not pending.holds(current, claimed):
                return False  # the lease lapsed and was taken over: the new holder finishes
            successor = pending.follow_up(current, now, window_seconds)
            if successor is None:
                # Deleted only as read: an event joining in between changes the ETag (412, read again).
                if self._delete_if(self._pending_table, _PENDING_PK, current.target.row_key, current.etag, what):
                    return False
            elif self._store_marker(successor, current) is not None:
                return True
            _backoff(attempt)
        raise ConflictError(f"{what}: still contended after {_MAX_RACES} attempts")

    def release_pending(
        self, claimed: PendingMarker, now: float, retry_at: float, error: str = "", alerted: bool = False
    ) -> bool:
        for attempt in range(_MAX_RACES):
            current = self._read_marker(claimed.target)
            if current is None or not pending.holds(current, claimed):
                return False
            if self._store_marker(pending.released(current, retry_at, error, alerted), current) is not None:
                return True
            _backoff(attempt)
        raise ConflictError(f"release pending {claimed.target.key}: still contended after {_MAX_RACES} attempts")

    def _query_markers(self, condition: str) -> list[PendingMarker]:
        with _storage_errors(f"read {self._pending_table}"):
            rows = list(
                self._table(self._pending_table).query_entities(
                    f"PartitionKey eq @pk and {condition}", parameters={"pk": _PENDING_PK}
                )
            )
        markers = [codec.pending_from_json(unpack(row, "pending row"), _etag(row)) for row in rows]
        return sorted(markers, key=pending.reclaim_at)

    def overdue_pending(self, now: float, grace_seconds: float) -> list[PendingMarker]:
        return self._query_markers(f"Due lt {_odata_double(now - grace_seconds)}")

    def failing_pending(self) -> list[PendingMarker]:
        return self._query_markers("Attempts gt 0")

    # -- outbox ----------------------------------------------------------------------------------------
    # Layout (table ``{prefix}outbox``, partition ``delivery``):
    #   RowKey <delivery_id>        the delivery itself, whatever its status, kept for ever: its
    #                               existence is what makes add_deliveries insert-if-absent, so a
    #                               DONE delivery can never be recorded (and sent) again.
    #   RowKey ~due|<delivery_id>   a small index row that exists exactly while the delivery is
    #                               PENDING, with its NextAttemptAt and CreatedAt.
    # A sweep range-queries the index rows only, so its cost follows the backlog, not the history.
    # Why an index row in the same partition rather than moving finished rows to another partition:
    # a PartitionKey cannot change in a replace (a move is insert + delete, two requests, and the
    # delivery id would be free in between for a re-insert), while rows of one partition can be
    # written in one entity-group transaction. So every write is atomic over both rows: add =
    # create(delivery) + upsert(index); update = replace(delivery, If-Match) + upsert or delete(index).
    # The delivery's ETag is the one callers hold; the index row's ETag is never handed out.
    def _delivery_entity(self, delivery: Delivery) -> dict[str, Any]:
        return {
            "PartitionKey": _DELIVERY_PK,
            "RowKey": delivery.delivery_id,
            "Status": delivery.status.value,
            "NextAttemptAt": float(delivery.next_attempt_at),
            "CreatedAt": float(delivery.created_at),
            "Destination": delivery.destination,
            **pack(codec.delivery_to_json(delivery), f"delivery {delivery.delivery_id}"),
        }

    @staticmethod
    def _index_op(delivery: Delivery) -> _Operation:
        """Write the index row of a pending delivery, or delete that of one that no longer is."""
        keys = {"PartitionKey": _DELIVERY_PK, "RowKey": _DUE_PREFIX + delivery.delivery_id}
        if delivery.status is not DeliveryStatus.PENDING:
            return (TransactionOperation.DELETE, keys, {})
        row = {
            **keys,
            "DeliveryId": delivery.delivery_id,
            "NextAttemptAt": float(delivery.next_attempt_at),
            "CreatedAt": float(delivery.created_at),
            "Digest": delivery.digest,  # immediate and quiet-mode deliveries are swept apart
        }
        return (TransactionOperation.UPSERT, row, {"mode": UpdateMode.REPLACE})

    @staticmethod
    def _finding_prefix(delivery: Delivery) -> str:
        return f"{_FINDING_PREFIX}{_sha(delivery.destination + '|' + delivery.finding_key)}|"

    def _finding_op(self, delivery: Delivery) -> _Operation:
        """The row that lists a pending delivery under its (destination, finding), for
        ``older_pending``. A hint: the delivery row is the truth (a stale one is dropped on read)."""
        row = {
            "PartitionKey": _DELIVERY_PK,
            "RowKey": self._finding_prefix(delivery) + delivery.delivery_id,
            "DeliveryId": delivery.delivery_id,
        }
        return (TransactionOperation.UPSERT, row, {"mode": UpdateMode.REPLACE})

    def _drop_finding_row(self, delivery: Delivery) -> None:
        with _storage_errors(f"drop finding row of {delivery.delivery_id}"):  # the SDK swallows 404 on delete
            self._table(self._outbox_table).delete_entity(
                _DELIVERY_PK, self._finding_prefix(delivery) + delivery.delivery_id
            )

    def older_pending(self, delivery: Delivery) -> Delivery | None:
        prefix = self._finding_prefix(delivery)
        query = f"PartitionKey eq '{_DELIVERY_PK}' and RowKey ge '{prefix}' and RowKey lt '{prefix[:-1]}}}'"
        with _storage_errors(f"read {self._outbox_table}"):
            rows = list(self._table(self._outbox_table).query_entities(query, select=["RowKey", "DeliveryId"]))
        found: list[Delivery] = []
        for row in rows:
            if str(row["DeliveryId"]) == delivery.delivery_id:
                continue
            current = self.get_delivery(str(row["DeliveryId"]))
            if current is None or current[0].status is not DeliveryStatus.PENDING:
                self._delete_if(self._outbox_table, _DELIVERY_PK, str(row["RowKey"]), _etag(row), "drop finding row")
                continue
            found.append(current[0])
        return first_before(delivery, found)

    def _transact(self, operations: list[_Operation], what: str) -> list[Mapping[str, Any]]:
        """One entity-group transaction; 409/412 on any operation -> ConflictError, 404 re-raised."""
        with _storage_errors(what):
            return list(self._table(self._outbox_table).submit_transaction(operations))

    def add_deliveries(self, deliveries: list[Delivery]) -> int:
        added = 0
        for delivery in deliveries:
            operations: list[_Operation] = [(TransactionOperation.CREATE, self._delivery_entity(delivery), {})]
            if delivery.status is DeliveryStatus.PENDING:
                operations += [self._index_op(delivery), self._finding_op(delivery)]
            try:
                self._transact(operations, f"add delivery {delivery.delivery_id}")
            except ConflictError:
                continue  # recorded before (the same transition decided again), maybe already sent
            added += 1
        return added

    def due_deliveries(
        self, now: float, limit: int = 100, digest: bool | None = None, created_before: float | None = None
    ) -> list[tuple[Delivery, str]]:
        if limit <= 0:
            return []
        query = (
            f"PartitionKey eq '{_DELIVERY_PK}' and RowKey ge '{_DUE_PREFIX}' and RowKey lt '{_DUE_END}'"
            f" and NextAttemptAt le {_odata_double(now)}"
        )
        if created_before is not None:
            query += f" and CreatedAt lt {_odata_double(created_before)}"
        with _storage_errors(f"read {self._outbox_table}"):
            index = list(
                self._table(self._outbox_table).query_entities(
                    query, select=["RowKey", "DeliveryId", "CreatedAt", "Digest"]
                )
            )
        if digest is not None:
            # The kind is filtered here, before the limit, so one kind's backlog never uses up the
            # other's sweep. (Not in the query: index rows written before the Digest property
            # existed lack it, and a filter on a missing property drops the row; those are sorted
            # out below by reading their delivery.)
            index = [row for row in index if row.get("Digest") in (digest, None)]
        index.sort(key=lambda row: (float(row["CreatedAt"]), str(row["DeliveryId"])))
        found: list[tuple[Delivery, str]] = []
        for row in index:
            if len(found) == limit:
                break
            current = self.get_delivery(str(row["DeliveryId"]))
            if current is None or current[0].status is not DeliveryStatus.PENDING:
                # Only reachable through a row deleted or edited outside this class: drop the orphan
                # (conditional, so an index row rewritten since the query is left alone).
                self._delete_if(self._outbox_table, _DELIVERY_PK, str(row["RowKey"]), _etag(row), "drop index row")
                continue
            if digest is not None and current[0].digest is not digest:
                continue  # an index row from before the Digest property, of the other kind
            if current[0].next_attempt_at <= now:  # else leased by another worker since the query
                found.append(current)
        return found

    def update_delivery(self, delivery: Delivery, etag: str) -> str:
        what = f"update delivery {delivery.delivery_id}"
        replace_op: _Operation = (
            TransactionOperation.UPDATE,
            self._delivery_entity(delivery),
            {"mode": UpdateMode.REPLACE, "etag": etag, "match_condition": MatchConditions.IfNotModified},
        )
        pending = delivery.status is DeliveryStatus.PENDING
        operations = [replace_op, self._index_op(delivery)] + ([self._finding_op(delivery)] if pending else [])
        try:
            results = self._transact(operations, what)
        except HttpResponseError as exc:
            if exc.status_code != 404:
                raise
            if pending:  # only the delivery row can be missing
                raise ConflictError(f"{what}: the row was deleted concurrently") from exc
            # The delivery was not pending (FAILED settled again, say), so there is no index row to
            # delete; or the delivery row itself is gone, which the plain replace reports as a conflict.
            etag = self._replace(self._outbox_table, self._delivery_entity(delivery), etag, what)
            self._drop_finding_row(delivery)
            return etag
        if not pending:
            self._drop_finding_row(delivery)  # after the settling write; a row left by a crash is dropped on read
        return str(results[0]["etag"])

    def get_delivery(self, delivery_id: str) -> tuple[Delivery, str] | None:
        if not _DELIVERY_ID.match(delivery_id):
            return None  # not an id this store could have written (and never an index row's key)
        row = self._read(self._outbox_table, _DELIVERY_PK, delivery_id)
        return (codec.delivery_from_json(unpack(row, f"delivery row {delivery_id}")), _etag(row)) if row else None

    def count_deliveries(self, status: DeliveryStatus | None = None) -> int:
        """Counts the delivery rows (history included): a report, not part of the sweep."""
        query = f"PartitionKey eq '{_DELIVERY_PK}' and RowKey lt '{_DUE_PREFIX}'"
        if status is not None:
            query += f" and Status eq '{status.value}'"
        with _storage_errors(f"read {self._outbox_table}"):
            return sum(1 for _ in self._table(self._outbox_table).query_entities(query, select=["RowKey"]))

    def get_task(self, destination: str, finding_key: str) -> TaskRef | None:
        row = self._read(self._outbox_table, _TASK_PK, _sha(codec.task_key(destination, finding_key)))
        return codec.task_from_json(unpack(row, "task")) if row else None

    def put_task(self, task: TaskRef) -> None:
        entity = {
            "PartitionKey": _TASK_PK,
            "RowKey": _sha(codec.task_key(task.destination, task.finding_key)),
            **pack(codec.task_to_json(task), "task"),
        }
        with _storage_errors(f"write {self._outbox_table}"):
            self._table(self._outbox_table).upsert_entity(entity, mode=UpdateMode.REPLACE)

    def close(self) -> None:
        self._service.close()

    # -- the operator's view (shared.service.status, shared.service.heartbeat) --------------------
    # Sweep heartbeats: state table, partition ``sweep``, RowKey the sweep's kind. Poisoned
    # evaluations: pending table, partition ``poisoned``, RowKey the target's row key (the window
    # queries filter on their own partition).
    def account_states(self) -> list[AccountState]:
        with _storage_errors(f"read {self._state_table}"):
            rows = list(
                self._table(self._state_table).query_entities("PartitionKey eq @pk", parameters={"pk": _ACCOUNT_PK})
            )
        return [self._decode_account(row)[0] for row in rows]

    def window_of(self, target: Target) -> PendingMarker | None:
        return self._read_marker(target)

    def list_deliveries(self, status: DeliveryStatus) -> list[Delivery]:
        query = f"PartitionKey eq '{_DELIVERY_PK}' and RowKey lt '{_DUE_PREFIX}' and Status eq '{status.value}'"
        with _storage_errors(f"read {self._outbox_table}"):
            rows = list(self._table(self._outbox_table).query_entities(query))
        found = [codec.delivery_from_json(unpack(row, f"delivery row {row.get('RowKey')}")) for row in rows]
        return sorted(found, key=lambda d: (d.created_at, d.delivery_id))

    def get_sweep(self, kind: str) -> Versioned[SweepRecord] | None:
        entity = self._read(self._state_table, _SWEEP_PK, kind)
        if entity is None:
            return None
        return Versioned(codec.sweep_from_json(unpack(entity, f"sweep row {kind}")), _etag(entity))

    def put_sweep(self, record: SweepRecord, etag: str | None) -> str:
        what = f"write sweep {record.kind}"
        entity = {
            "PartitionKey": _SWEEP_PK,
            "RowKey": record.kind,
            "CompletedAt": float(record.completed_at),
            **pack(codec.sweep_to_json(record), what),
        }
        if etag is None:
            return self._create(self._state_table, entity, what)
        return self._replace(self._state_table, entity, etag, what)

    def record_poisoned(self, record: PoisonRecord) -> None:
        entity = {
            "PartitionKey": _POISONED_PK,
            "RowKey": record.target.row_key,
            **pack(codec.poison_to_json(record), f"poisoned {record.target.key}"),
        }
        with _storage_errors(f"write {self._pending_table}"):
            self._table(self._pending_table).upsert_entity(entity, mode=UpdateMode.REPLACE)

    def poisoned(self) -> list[PoisonRecord]:
        with _storage_errors(f"read {self._pending_table}"):
            rows = list(
                self._table(self._pending_table).query_entities("PartitionKey eq @pk", parameters={"pk": _POISONED_PK})
            )
        return [codec.poison_from_json(unpack(row, "poisoned row")) for row in rows]

    def forget_poisoned(self, target: Target) -> None:
        with _storage_errors(f"write {self._pending_table}"):  # the SDK ignores a row that is already gone
            self._table(self._pending_table).delete_entity(_POISONED_PK, target.row_key)


def _client_options(overrides: Mapping[str, Any]) -> dict[str, Any]:
    # A modest HTTP retry budget: the Functions runtime retries the whole invocation on top.
    return {"retry_total": 3, **overrides}


if TYPE_CHECKING:

    def _conforms(store: TableStateStore) -> StateStore:  # mypy proves the Protocol is met
        return store

    def _conforms_outbox(store: TableStateStore) -> OutboxStore:
        return store

    def _conforms_status(store: TableStateStore) -> StatusStore:
        return store
