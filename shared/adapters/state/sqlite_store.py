"""SQLite implementation of StateStore: the CLI's embedded default (one file, no service).

Same semantics as the Table store, with SQLite transactions doing the work that ETags and
retries do there: every read-check-write runs inside ``BEGIN IMMEDIATE``, so it is atomic
against other threads (one connection behind a lock) and other processes (the file lock).

ETags are decimal strings from one store-wide counter. A per-row version would repeat after a
delete and re-create (1, deleted, 1 again) and let a stale writer win; a global counter never
repeats.
"""

from __future__ import annotations

import os
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

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

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO meta (name, value) VALUES ('etag', 0);
CREATE TABLE IF NOT EXISTS accounts (
    key TEXT PRIMARY KEY, account_id TEXT NOT NULL, etag TEXT NOT NULL, data TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS account_refs (
    kind TEXT NOT NULL, ref TEXT NOT NULL, account_key TEXT NOT NULL, account_id TEXT NOT NULL,
    PRIMARY KEY (kind, ref, account_key));
CREATE INDEX IF NOT EXISTS account_refs_by_account ON account_refs (account_key);
CREATE TABLE IF NOT EXISTS profiles (key TEXT PRIMARY KEY, etag TEXT NOT NULL, data TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS events (event_id TEXT PRIMARY KEY, recorded_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS pending (
    key TEXT PRIMARY KEY, etag TEXT NOT NULL, due REAL NOT NULL, data TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS pending_by_due ON pending (due);
CREATE TABLE IF NOT EXISTS deliveries (
    id TEXT PRIMARY KEY, etag TEXT NOT NULL, status TEXT NOT NULL, next_attempt_at REAL NOT NULL,
    created_at REAL NOT NULL, data TEXT NOT NULL, digest INTEGER NOT NULL DEFAULT 0,
    destination TEXT NOT NULL DEFAULT '', finding TEXT NOT NULL DEFAULT '');
CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries (status, next_attempt_at);
CREATE INDEX IF NOT EXISTS deliveries_pending ON deliveries (created_at, id, next_attempt_at) WHERE status = 'pending';
CREATE TABLE IF NOT EXISTS tasks (key TEXT PRIMARY KEY, data TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS sweeps (kind TEXT PRIMARY KEY, etag TEXT NOT NULL, data TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS poisoned (key TEXT PRIMARY KEY, data TEXT NOT NULL);
"""

# Immediate and quiet-mode (digest) deliveries are read apart, each kind in created_at order, so
# the limit of one kind's sweep is never used up by the other's rows. Created after _migrate: a
# file written before the digest column existed gets the column first.
_KIND_INDEX = (
    "CREATE INDEX IF NOT EXISTS deliveries_pending_by_kind"
    " ON deliveries (digest, created_at, id, next_attempt_at) WHERE status = 'pending'"
)

# A finding's pending deliveries to one destination (shared.core.notify.base.OutboxStore.older_pending).
_FINDING_INDEX = (
    "CREATE INDEX IF NOT EXISTS deliveries_pending_by_finding"
    " ON deliveries (destination, finding) WHERE status = 'pending'"
)

_MEMORY = ":memory:"


class SqliteStateStore:
    def __init__(
        self, path: str | os.PathLike[str], *, timeout: float = 30.0, clock: Callable[[], float] = time.time
    ) -> None:
        self._path = os.fspath(path)
        self._clock = clock
        self._lock = threading.Lock()
        if self._path != _MEMORY:
            Path(self._path).parent.mkdir(parents=True, exist_ok=True)
        with _unavailable_on_error(self._path):
            # isolation_level=None: the module must not open transactions behind our back;
            # every write below opens its own BEGIN IMMEDIATE.
            self._db = sqlite3.connect(self._path, timeout=timeout, isolation_level=None, check_same_thread=False)
            if self._path != _MEMORY:
                # WAL lets readers (a CLI report) run while the evaluator writes.
                self._db.execute("PRAGMA journal_mode=WAL")
            self._db.executescript(_SCHEMA)
            self._migrate(self._db)
            self._db.execute(_KIND_INDEX)
            self._db.execute(_FINDING_INDEX)

    # -- plumbing -----------------------------------------------------------------------------------
    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock, _unavailable_on_error(self._path):
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    @contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        with self._lock, _unavailable_on_error(self._path):
            yield self._db

    @staticmethod
    def _migrate(db: sqlite3.Connection) -> None:
        """Bring a file written by an older version up to date (idempotent, safe between processes)."""
        wanted = ("digest", "destination", "finding")
        if set(wanted) <= {row[1] for row in db.execute("PRAGMA table_info(deliveries)")}:
            return
        db.execute("BEGIN IMMEDIATE")
        try:
            columns = {row[1] for row in db.execute("PRAGMA table_info(deliveries)")}
            if "digest" not in columns:
                db.execute("ALTER TABLE deliveries ADD COLUMN digest INTEGER NOT NULL DEFAULT 0")
            for name in ("destination", "finding"):
                if name not in columns:
                    db.execute(f"ALTER TABLE deliveries ADD COLUMN {name} TEXT NOT NULL DEFAULT ''")
            if not set(wanted) <= columns:
                rows = db.execute("SELECT id, data FROM deliveries WHERE status = 'pending'").fetchall()
                updates = []
                for row_id, data in rows:
                    delivery = codec.delivery_from_json(data)
                    updates.append((int(delivery.digest), delivery.destination, delivery.finding_key, row_id))
                db.executemany("UPDATE deliveries SET digest = ?, destination = ?, finding = ? WHERE id = ?", updates)
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    @staticmethod
    def _next_etag(db: sqlite3.Connection) -> str:
        row = db.execute("UPDATE meta SET value = value + 1 WHERE name = 'etag' RETURNING value").fetchone()
        return str(row[0])

    @staticmethod
    def _check_etag(found: str | None, expected: str | None, what: str) -> None:
        if found != expected:
            state = "absent" if found is None else f"at ETag {found}"
            raise ConflictError(f"{what} is {state}, expected {'absent' if expected is None else expected}")

    # -- account and profile state ------------------------------------------------------------------
    def get_account(self, account_id: str) -> Versioned[AccountState] | None:
        with self._reading() as db:
            row = db.execute(
                "SELECT data, etag FROM accounts WHERE key = ?", (codec.account_key(account_id),)
            ).fetchone()
        return Versioned(codec.account_from_json(row[0]), row[1]) if row else None

    def put_account(self, state: AccountState, etag: str | None) -> str:
        key = codec.account_key(state.account_id)
        with self._transaction() as db:
            row = db.execute("SELECT etag FROM accounts WHERE key = ?", (key,)).fetchone()
            self._check_etag(row[0] if row else None, etag, f"account {state.account_id}")
            new_etag = self._next_etag(db)
            db.execute(
                "INSERT INTO accounts (key, account_id, etag, data) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (key) DO UPDATE"
                " SET account_id = excluded.account_id, etag = excluded.etag, data = excluded.data",
                (key, state.account_id, new_etag, codec.account_to_json(state)),
            )
            # The transaction makes the index exact: rewrite this account's entries wholesale.
            db.execute("DELETE FROM account_refs WHERE account_key = ?", (key,))
            db.executemany(
                "INSERT INTO account_refs (kind, ref, account_key, account_id) VALUES (?, ?, ?, ?)",
                [(kind.value, ref, key, state.account_id) for kind, ref in sorted(codec.references(state))],
            )
        return new_etag

    def delete_account(self, account_id: str, etag: str) -> None:
        key = codec.account_key(account_id)
        with self._transaction() as db:
            row = db.execute("SELECT etag FROM accounts WHERE key = ?", (key,)).fetchone()
            self._check_etag(row[0] if row else None, etag, f"account {account_id}")
            db.execute("DELETE FROM accounts WHERE key = ?", (key,))
            db.execute("DELETE FROM account_refs WHERE account_key = ?", (key,))

    def get_profile(self, perimeter_id: str, profile_name: str) -> Versioned[ProfileState] | None:
        key = codec.profile_key(perimeter_id, profile_name)
        with self._reading() as db:
            row = db.execute("SELECT data, etag FROM profiles WHERE key = ?", (key,)).fetchone()
        return Versioned(codec.profile_from_json(row[0]), row[1]) if row else None

    def put_profile(self, state: ProfileState, etag: str | None) -> str:
        key = codec.profile_key(state.perimeter_id, state.profile_name)
        with self._transaction() as db:
            row = db.execute("SELECT etag FROM profiles WHERE key = ?", (key,)).fetchone()
            self._check_etag(row[0] if row else None, etag, f"profile {state.profile_name} of {state.perimeter_id}")
            new_etag = self._next_etag(db)
            db.execute(
                "INSERT INTO profiles (key, etag, data) VALUES (?, ?, ?)"
                " ON CONFLICT (key) DO UPDATE SET etag = excluded.etag, data = excluded.data",
                (key, new_etag, codec.profile_to_json(state)),
            )
        return new_etag

    def accounts_for(self, kind: TargetKind, resource_id: str) -> list[str]:
        with self._reading() as db:
            rows = db.execute(
                "SELECT account_id FROM account_refs WHERE kind = ? AND ref = ? ORDER BY account_key",
                (kind.value, resource_id.lower()),
            ).fetchall()
        return [r[0] for r in rows]

    def all_account_ids(self) -> list[str]:
        with self._reading() as db:
            # Tombstones of deleted accounts (shared.core.drift) keep their occurrences but are not listed,
            # unless they still carry transitions to record (a sweep then reads them once more).
            query = (
                "SELECT account_id FROM accounts"
                " WHERE coalesce(json_extract(data, '$.deleted_at'), '') = ''"
                " OR coalesce(json_array_length(data, '$.pending_transitions'), 0) > 0 ORDER BY key"
            )
            return [r[0] for r in db.execute(query).fetchall()]

    # -- idempotency ----------------------------------------------------------------------------------
    def record_events(self, event_ids: Sequence[str]) -> set[str]:
        fresh: set[str] = set()
        now = self._clock()
        with self._transaction() as db:
            for event_id in dict.fromkeys(event_ids):
                cursor = db.execute(
                    "INSERT OR IGNORE INTO events (event_id, recorded_at) VALUES (?, ?)", (event_id, now)
                )
                if cursor.rowcount == 1:
                    fresh.add(event_id)
        return fresh

    def seen_events(self, event_ids: Sequence[str]) -> set[str]:
        with self._reading() as db:
            return {
                event_id
                for event_id in dict.fromkeys(event_ids)
                if db.execute("SELECT 1 FROM events WHERE event_id = ?", (event_id,)).fetchone()
            }

    def purge_events(self, older_than: float) -> int:
        """Forget event ids recorded before ``older_than`` (Event Grid stops redelivering after 24 h)."""
        with self._transaction() as db:
            return db.execute("DELETE FROM events WHERE recorded_at < ?", (older_than,)).rowcount

    # -- coalescing windows and their leases ------------------------------------------------------------
    # The ``due`` column holds pending.reclaim_at(marker): when anyone may claim the window.
    def _read_marker(self, db: sqlite3.Connection, target: Target) -> PendingMarker | None:
        row = db.execute("SELECT data, etag FROM pending WHERE key = ?", (target.key,)).fetchone()
        return codec.pending_from_json(row[0], row[1]) if row else None

    def _write_marker(self, db: sqlite3.Connection, marker: PendingMarker) -> str:
        etag = self._next_etag(db)
        db.execute(
            "INSERT INTO pending (key, etag, due, data) VALUES (?, ?, ?, ?) ON CONFLICT (key) DO UPDATE"
            " SET etag = excluded.etag, due = excluded.due, data = excluded.data",
            (marker.target.key, etag, pending.reclaim_at(marker), codec.pending_to_json(marker)),
        )
        return etag

    def get_pending(self, target: Target) -> PendingMarker | None:
        with self._reading() as db:
            return self._read_marker(db, target)

    def add_pending(self, target: Target, provenance: Provenance, window_seconds: float, now: float) -> bool:
        return self.put_pending(target, provenance, window_seconds, now, None).owes_message

    def put_pending(
        self, target: Target, provenance: Provenance, window_seconds: float, now: float, current: PendingMarker | None
    ) -> Joined:
        # One transaction reads and writes: ``current`` (the caller's earlier read) is not needed.
        with self._transaction() as db:
            stored = self._read_marker(db, target)
            if stored is None:
                opened = pending.opened(target, provenance, window_seconds, now)
                return Joined(True, replace(opened, etag=self._write_marker(db, opened)))
            marker = pending.joined(stored, provenance)
            if marker == stored:  # a re-delivered event changes nothing: skip the write
                return Joined(pending.owes_message(stored, provenance), stored)
            etag = self._write_marker(db, marker)
            return Joined(pending.owes_message(stored, provenance), replace(marker, etag=etag))

    def mark_queued(self, target: Target, sent_at: float, written: PendingMarker | None = None) -> None:
        with self._transaction() as db:
            current = self._read_marker(db, target)
            if current is not None and not current.queued and current.first_seen <= sent_at:
                self._write_marker(db, pending.queued(current))

    def claim_pending(self, target: Target, now: float, lease_seconds: float) -> PendingMarker | None:
        with self._transaction() as db:
            current = self._read_marker(db, target)
            if current is None:
                return None
            busy = pending.blocked(current, now)
            if busy is not None:
                raise WindowBusy(target, *busy)
            claim = pending.claimed(current, now, lease_seconds, secrets.token_hex(8))
            return replace(claim, etag=self._write_marker(db, claim))

    def complete_pending(self, claimed: PendingMarker, now: float, window_seconds: float) -> bool:
        with self._transaction() as db:
            current = self._read_marker(db, claimed.target)
            if current is None or not pending.holds(current, claimed):
                return False  # the lease lapsed and was taken over: the new holder finishes
            successor = pending.follow_up(current, now, window_seconds)
            if successor is None:
                db.execute("DELETE FROM pending WHERE key = ? AND etag = ?", (current.target.key, current.etag))
                return False
            self._write_marker(db, successor)
            return True

    def release_pending(
        self, claimed: PendingMarker, now: float, retry_at: float, error: str = "", alerted: bool = False
    ) -> bool:
        with self._transaction() as db:
            current = self._read_marker(db, claimed.target)
            if current is None or not pending.holds(current, claimed):
                return False
            self._write_marker(db, pending.released(current, retry_at, error, alerted))
            return True

    def overdue_pending(self, now: float, grace_seconds: float) -> list[PendingMarker]:
        with self._reading() as db:
            rows = db.execute(
                "SELECT data, etag FROM pending WHERE due < ? ORDER BY due", (now - grace_seconds,)
            ).fetchall()
        return [codec.pending_from_json(data, etag) for data, etag in rows]

    def failing_pending(self) -> list[PendingMarker]:
        with self._reading() as db:
            rows = db.execute("SELECT data, etag FROM pending ORDER BY due").fetchall()
        markers = (codec.pending_from_json(data, etag) for data, etag in rows)
        return [m for m in markers if m.attempts > 0]

    # -- outbox ----------------------------------------------------------------------------------------
    def add_deliveries(self, deliveries: list[Delivery]) -> int:
        added = 0
        with self._transaction() as db:
            for delivery in deliveries:
                etag = self._next_etag(db)
                cursor = db.execute(
                    "INSERT OR IGNORE INTO deliveries"
                    " (id, etag, status, next_attempt_at, created_at, data, digest, destination, finding)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        delivery.delivery_id,
                        etag,
                        delivery.status.value,
                        delivery.next_attempt_at,
                        delivery.created_at,
                        codec.delivery_to_json(delivery),
                        int(delivery.digest),
                        delivery.destination,
                        delivery.finding_key,
                    ),
                )
                added += cursor.rowcount
        return added

    def due_deliveries(
        self, now: float, limit: int = 100, digest: bool | None = None, created_before: float | None = None
    ) -> list[tuple[Delivery, str]]:
        # The partial indexes hold pending rows only, already in created_at order (per kind in
        # deliveries_pending_by_kind): the sweep walks the backlog and stops at ``limit``, never
        # the done/failed history. (SQLite uses a partial index only when the query repeats its
        # WHERE term literally.)
        before = float("inf") if created_before is None else created_before
        with self._reading() as db:
            if digest is None:
                rows = db.execute(
                    "SELECT data, etag FROM deliveries INDEXED BY deliveries_pending"
                    " WHERE status = 'pending' AND next_attempt_at <= ? AND created_at < ?"
                    " ORDER BY created_at, id LIMIT ?",
                    (now, before, max(limit, 0)),
                ).fetchall()
            else:
                rows = db.execute(
                    "SELECT data, etag FROM deliveries INDEXED BY deliveries_pending_by_kind"
                    " WHERE status = 'pending' AND digest = ? AND next_attempt_at <= ? AND created_at < ?"
                    " ORDER BY created_at, id LIMIT ?",
                    (int(digest), now, before, max(limit, 0)),
                ).fetchall()
        return [(codec.delivery_from_json(data), etag) for data, etag in rows]

    def older_pending(self, delivery: Delivery) -> Delivery | None:
        with self._reading() as db:
            rows = db.execute(
                "SELECT data FROM deliveries INDEXED BY deliveries_pending_by_finding"
                " WHERE status = 'pending' AND destination = ? AND finding = ?",
                (delivery.destination, delivery.finding_key),
            ).fetchall()
        return first_before(delivery, (codec.delivery_from_json(data) for (data,) in rows))

    def update_delivery(self, delivery: Delivery, etag: str) -> str:
        with self._transaction() as db:
            row = db.execute("SELECT etag FROM deliveries WHERE id = ?", (delivery.delivery_id,)).fetchone()
            self._check_etag(row[0] if row else None, etag, f"delivery {delivery.delivery_id}")
            new_etag = self._next_etag(db)
            db.execute(
                "UPDATE deliveries SET etag = ?, status = ?, next_attempt_at = ?, data = ?, digest = ? WHERE id = ?",
                (
                    new_etag,
                    delivery.status.value,
                    delivery.next_attempt_at,
                    codec.delivery_to_json(delivery),
                    int(delivery.digest),
                    delivery.delivery_id,
                ),
            )
        return new_etag

    def get_delivery(self, delivery_id: str) -> tuple[Delivery, str] | None:
        with self._reading() as db:
            row = db.execute("SELECT data, etag FROM deliveries WHERE id = ?", (delivery_id,)).fetchone()
        return (codec.delivery_from_json(row[0]), row[1]) if row else None

    def count_deliveries(self, status: DeliveryStatus | None = None) -> int:
        with self._reading() as db:
            if status is None:
                return int(db.execute("SELECT COUNT(*) FROM deliveries").fetchone()[0])
            return int(db.execute("SELECT COUNT(*) FROM deliveries WHERE status = ?", (status.value,)).fetchone()[0])

    def get_task(self, destination: str, finding_key: str) -> TaskRef | None:
        with self._reading() as db:
            row = db.execute(
                "SELECT data FROM tasks WHERE key = ?", (codec.task_key(destination, finding_key),)
            ).fetchone()
        return codec.task_from_json(row[0]) if row else None

    def put_task(self, task: TaskRef) -> None:
        with self._transaction() as db:
            db.execute(
                "INSERT INTO tasks (key, data) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET data = excluded.data",
                (codec.task_key(task.destination, task.finding_key), codec.task_to_json(task)),
            )

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- the operator's view (shared.service.status, shared.service.heartbeat) --------------------
    def account_states(self) -> list[AccountState]:
        with self._reading() as db:
            rows = db.execute("SELECT data FROM accounts ORDER BY key").fetchall()
        return [codec.account_from_json(data) for (data,) in rows]

    def window_of(self, target: Target) -> PendingMarker | None:
        with self._reading() as db:
            return self._read_marker(db, target)

    def list_deliveries(self, status: DeliveryStatus) -> list[Delivery]:
        with self._reading() as db:
            rows = db.execute(
                "SELECT data FROM deliveries WHERE status = ? ORDER BY created_at, id", (status.value,)
            ).fetchall()
        return [codec.delivery_from_json(data) for (data,) in rows]

    def get_sweep(self, kind: str) -> Versioned[SweepRecord] | None:
        with self._reading() as db:
            row = db.execute("SELECT data, etag FROM sweeps WHERE kind = ?", (kind,)).fetchone()
        return Versioned(codec.sweep_from_json(row[0]), row[1]) if row else None

    def put_sweep(self, record: SweepRecord, etag: str | None) -> str:
        with self._transaction() as db:
            row = db.execute("SELECT etag FROM sweeps WHERE kind = ?", (record.kind,)).fetchone()
            self._check_etag(row[0] if row else None, etag, f"sweep {record.kind}")
            new_etag = self._next_etag(db)
            db.execute(
                "INSERT INTO sweeps (kind, etag, data) VALUES (?, ?, ?)"
                " ON CONFLICT (kind) DO UPDATE SET etag = excluded.etag, data = excluded.data",
                (record.kind, new_etag, codec.sweep_to_json(record)),
            )
        return new_etag

    def record_poisoned(self, record: PoisonRecord) -> None:
        with self._transaction() as db:
            db.execute(
                "INSERT INTO poisoned (key, data) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET data = excluded.data",
                (record.target.key, codec.poison_to_json(record)),
            )

    def poisoned(self) -> list[PoisonRecord]:
        with self._reading() as db:
            rows = db.execute("SELECT data FROM poisoned ORDER BY key").fetchall()
        return [codec.poison_from_json(data) for (data,) in rows]

    def forget_poisoned(self, target: Target) -> None:
        with self._transaction() as db:
            db.execute("DELETE FROM poisoned WHERE key = ?", (target.key,))


@contextmanager
def _unavailable_on_error(path: str) -> Iterator[None]:
    """Locked, unreadable or missing database files: the caller fails and the work is retried."""
    try:
        yield
    except sqlite3.OperationalError as exc:
        raise StoreUnavailable(f"SQLite state store {path}: {exc}") from exc


if TYPE_CHECKING:
    from shared.core.notify.base import OutboxStore
    from shared.core.state.base import StateStore, StatusStore

    def _conforms(store: SqliteStateStore) -> StateStore:  # mypy proves the Protocol is met
        return store

    def _conforms_outbox(store: SqliteStateStore) -> OutboxStore:
        return store

    def _conforms_status(store: SqliteStateStore) -> StatusStore:
        return store
