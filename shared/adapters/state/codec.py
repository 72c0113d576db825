"""One JSON codec for everything the state stores persist (window arithmetic: shared.core.state.pending).

Both stores (Table storage and SQLite) call these functions, so a state written by one reads
back identically in the other and the coalescing rules cannot drift apart. Decoders validate
shape and raise CodecError naming the bad field: a corrupt row must fail loudly, never turn
into an empty state (which would look like "every finding resolved").
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, fields
from typing import Any

from shared.adapters.state import legacy
from shared.core.changes import TARGET_KINDS, Actor, Provenance, Target, TargetKind
from shared.core.notify.base import Delivery, DeliveryStatus, TaskRef
from shared.core.state.base import (
    AccountState,
    AssociationState,
    PendingMarker,
    PoisonRecord,
    ProfileState,
    SweepRecord,
)

FORMAT = 1  # bumped when the JSON layout changes incompatibly; decoders reject other values

_ACTOR_FIELDS = tuple(f.name for f in fields(Actor))
_ASSOCIATION_FIELDS = tuple(f.name for f in fields(AssociationState))
_TASK_FIELDS = tuple(f.name for f in fields(TaskRef) if f.name != "occurrence")  # the string fields


class CodecError(ValueError):
    """A stored document does not have the expected shape; the message names the field."""


# -- primitives -------------------------------------------------------------------------------


def dumps(document: Mapping[str, Any]) -> str:
    # ASCII-only and compact: stores count string sizes in UTF-16 units, so no surprises.
    return json.dumps(document, separators=(",", ":"), sort_keys=True, ensure_ascii=True)


def loads(text: str, what: str) -> dict[str, Any]:
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CodecError(f"{what}: not JSON ({exc.msg} at {exc.pos})") from None
    if not isinstance(document, dict):
        raise CodecError(f"{what}: expected a JSON object")
    if document.get("format", FORMAT) != FORMAT:
        raise CodecError(f"{what}.format: unsupported value {document.get('format')!r}")
    return document


def _get(document: Mapping[str, Any], key: str, kind: type | tuple[type, ...], what: str) -> Any:
    value = document.get(key)
    if not isinstance(value, kind) or (isinstance(value, bool) and bool not in _as_tuple(kind)):
        raise CodecError(f"{what}.{key}: expected {_type_names(kind)}, got {type(value).__name__}")
    return value


def _as_tuple(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


def _type_names(kind: type | tuple[type, ...]) -> str:
    return " or ".join(k.__name__ for k in _as_tuple(kind))


def _strings(document: Mapping[str, Any], key: str, what: str) -> tuple[str, ...]:
    values = _get(document, key, list, what)
    if not all(isinstance(v, str) for v in values):
        raise CodecError(f"{what}.{key}: expected a list of strings")
    return tuple(values)


def _objects(document: Mapping[str, Any], key: str, what: str) -> tuple[dict[str, Any], ...]:
    values = _get(document, key, list, what)
    if not all(isinstance(v, dict) for v in values):
        raise CodecError(f"{what}.{key}: expected a list of objects")
    return tuple(values)


def _record(cls_fields: Sequence[str], document: Mapping[str, Any], what: str) -> dict[str, str]:
    """The string fields of a flat dataclass (Actor, AssociationState, TaskRef), all required."""
    return {name: _get(document, name, str, what) for name in cls_fields}


# -- account and profile state ------------------------------------------------------------------


def account_to_dict(state: AccountState) -> dict[str, Any]:
    return {"format": FORMAT, **asdict(state)}


def account_from_dict(document: Mapping[str, Any], what: str = "account") -> AccountState:
    return AccountState(
        account_id=_get(document, "account_id", str, what),
        # Per-subject findings stored before findings were one per rule and account: merged.
        findings=legacy.merge_findings(_objects(document, "findings", what)),
        associations=tuple(
            AssociationState(**_record(_ASSOCIATION_FIELDS, a, f"{what}.associations"))
            for a in _objects(document, "associations", what)
        ),
        key_vault_name=_get(document, "key_vault_name", str, what),
        vm_ids=_strings(document, "vm_ids", what),
        backup_instance_ids=_strings(document, "backup_instance_ids", what),
        evaluated_at=_get(document, "evaluated_at", str, what),
        snapshot_digest=_get(document, "snapshot_digest", str, what),
        summary_digest=str(document.get("summary_digest", "")),  # absent in states written before it existed
        occurrences=legacy.merge_occurrences(_occurrences(document, what)),
        deleted_at=_get(document, "deleted_at", str, what) if "deleted_at" in document else "",
        # Absent in states written before the pipeline ordered reads and carried its transitions.
        observed_at=float(document.get("observed_at") or 0.0),
        pending_transitions=_objects(document, "pending_transitions", what)
        if "pending_transitions" in document
        else (),
        facts=_facts(document, what),  # absent in states written before perimeter-only reads
        # Absent in states written before: not known to have been read (the next event reads it).
        linked_evidence=document.get("linked_evidence") is True,
    )


def _facts(document: Mapping[str, Any], what: str) -> dict[str, str]:
    values = document.get("facts") or {}
    if not isinstance(values, dict) or not all(isinstance(v, str) for v in values.values()):
        raise CodecError(f"{what}.facts: expected an object of strings")
    return {str(k): v for k, v in values.items()}


def _occurrences(document: Mapping[str, Any], what: str) -> dict[str, int]:
    """Absent in states written before occurrences existed: every finding then is occurrence 1."""
    if "occurrences" not in document:
        return {}
    values = _get(document, "occurrences", dict, what)
    for key, count in values.items():
        if not isinstance(count, int) or isinstance(count, bool) or count < 1:
            raise CodecError(f"{what}.occurrences[{key!r}]: expected a positive integer, got {count!r}")
    return dict(values)


def account_to_json(state: AccountState) -> str:
    return dumps(account_to_dict(state))


def account_from_json(text: str) -> AccountState:
    return account_from_dict(loads(text, "account"))


def profile_to_json(state: ProfileState) -> str:
    return dumps({"format": FORMAT, **asdict(state)})


def profile_from_json(text: str) -> ProfileState:
    document = loads(text, "profile")
    return ProfileState(
        perimeter_id=_get(document, "perimeter_id", str, "profile"),
        profile_name=_get(document, "profile_name", str, "profile"),
        access_rules_version=_get(document, "access_rules_version", (int, type(None)), "profile"),
        rules=_objects(document, "rules", "profile"),
        pending_transitions=_objects(document, "pending_transitions", "profile")
        if "pending_transitions" in document
        else (),
    )


def account_key(account_id: str) -> str:
    """ARM ids are case-insensitive: one stored row per account whatever casing an event used."""
    return account_id.lower()


def profile_key(perimeter_id: str, profile_name: str) -> str:
    return f"{perimeter_id.lower()}|{profile_name.lower()}"


def references(state: AccountState) -> set[tuple[TargetKind, str]]:
    """The reverse-index entries of an account: (kind, lower-case id, or vault name)."""
    return {(kind, ref.lower()) for kind, refs in state.referenced().items() for ref in refs if ref}


# -- provenance and pending markers ------------------------------------------------------------------


def provenance_to_dict(provenance: Provenance) -> dict[str, Any]:
    # asdict recurses into the Actor dataclasses and turns tuples into lists.
    return asdict(provenance)


def provenance_from_dict(document: Mapping[str, Any], what: str = "provenance") -> Provenance:
    return Provenance(
        event_ids=_strings(document, "event_ids", what),
        actors=tuple(Actor(**_record(_ACTOR_FIELDS, a, f"{what}.actors")) for a in _objects(document, "actors", what)),
        operation_names=_strings(document, "operation_names", what),
        correlation_ids=_strings(document, "correlation_ids", what),
        event_times=_strings(document, "event_times", what),
        source=_get(document, "source", str, what),
    )


def target_from_dict(document: Mapping[str, Any], what: str = "target") -> Target:
    kind = _get(document, "kind", str, what)
    if kind not in TARGET_KINDS:
        allowed = ", ".join(k.value for k in TARGET_KINDS)
        raise CodecError(f"{what}.kind: {kind!r} is not one of {allowed}")
    target_kind = TargetKind(kind)
    resource_id = _get(document, "resource_id", str, what)
    if not resource_id.strip():
        raise CodecError(f"{what}.resource_id: must not be empty")
    return Target(target_kind, resource_id)


def target_to_dict(target: Target) -> dict[str, str]:
    return {"kind": target.kind.value, "resource_id": target.resource_id}


def pending_to_json(marker: PendingMarker) -> str:
    """Everything but the ETag, which belongs to the row, not to the document."""
    return dumps(
        {
            "format": FORMAT,
            "target": target_to_dict(marker.target),
            "provenance": provenance_to_dict(marker.provenance),
            "first_seen": marker.first_seen,
            "due": marker.due,
            "attempts": marker.attempts,
            "lease_id": marker.lease_id,
            "lease_until": marker.lease_until,
            "later": provenance_to_dict(marker.later) if marker.later is not None else None,
            "queued": marker.queued,
            "last_error": marker.last_error,
            "alerted": marker.alerted,
        }
    )


def pending_from_json(text: str, etag: str) -> PendingMarker:
    document = loads(text, "pending")
    later = document.get("later")
    if later is not None and not isinstance(later, dict):
        raise CodecError(f"pending.later: expected object or null, got {type(later).__name__}")
    return PendingMarker(
        target=target_from_dict(_get(document, "target", dict, "pending"), "pending.target"),
        provenance=provenance_from_dict(_get(document, "provenance", dict, "pending"), "pending.provenance"),
        first_seen=float(_get(document, "first_seen", (int, float), "pending")),
        due=float(_get(document, "due", (int, float), "pending")),
        attempts=_get(document, "attempts", int, "pending"),
        etag=etag,
        # Absent in windows written before leases existed: no lease, message sent.
        lease_id=str(document.get("lease_id") or ""),
        lease_until=float(document.get("lease_until") or 0.0),
        later=provenance_from_dict(later, "pending.later") if later is not None else None,
        queued=bool(document.get("queued", True)),
        last_error=str(document.get("last_error") or ""),
        alerted=bool(document.get("alerted", False)),
    )


# -- outbox -------------------------------------------------------------------------------------------


def delivery_to_dict(delivery: Delivery) -> dict[str, Any]:
    """Everything but the ETag; ``delivery_id`` is derived from destination and idempotency key."""
    return {
        "format": FORMAT,
        "destination": delivery.destination,
        "idempotency_key": delivery.idempotency_key,
        "transition": delivery.transition,
        "created_at": delivery.created_at,
        "attempts": delivery.attempts,
        "next_attempt_at": delivery.next_attempt_at,
        "status": delivery.status.value,
        "last_status": delivery.last_status,
        "last_error": delivery.last_error,
        "digest": delivery.digest,
    }


def delivery_from_dict(document: Mapping[str, Any], what: str = "delivery") -> Delivery:
    status = _get(document, "status", str, what)
    try:
        delivery_status = DeliveryStatus(status)
    except ValueError:
        allowed = ", ".join(s.value for s in DeliveryStatus)
        raise CodecError(f"{what}.status: {status!r} is not one of {allowed}") from None
    return Delivery(
        destination=_get(document, "destination", str, what),
        idempotency_key=_get(document, "idempotency_key", str, what),
        transition=_get(document, "transition", dict, what),
        created_at=float(_get(document, "created_at", (int, float), what)),
        attempts=_get(document, "attempts", int, what),
        next_attempt_at=float(_get(document, "next_attempt_at", (int, float), what)),
        status=delivery_status,
        last_status=_get(document, "last_status", (int, type(None)), what),
        last_error=_get(document, "last_error", str, what),
        digest=_get(document, "digest", bool, what),
    )


def delivery_to_json(delivery: Delivery) -> str:
    return dumps(delivery_to_dict(delivery))


def delivery_from_json(text: str) -> Delivery:
    return delivery_from_dict(loads(text, "delivery"))


def task_to_json(task: TaskRef) -> str:
    return dumps({"format": FORMAT, **asdict(task)})


def task_from_json(text: str) -> TaskRef:
    document = loads(text, "task")
    occurrence = document.get("occurrence", 0)  # absent in refs stored before occurrences existed
    if not isinstance(occurrence, int) or isinstance(occurrence, bool) or occurrence < 0:
        raise CodecError(f"task.occurrence: expected a non-negative integer, got {occurrence!r}")
    return TaskRef(**_record(_TASK_FIELDS, document, "task"), occurrence=occurrence)


def task_key(destination: str, finding_key: str) -> str:
    # Unambiguous: destination names cannot contain '|' (shared.adapters.notify.destinations._NAME).
    return f"{destination}|{finding_key}"


# -- the operator's view: sweep heartbeats and poisoned evaluations --------------------------------------


def sweep_to_json(record: SweepRecord) -> str:
    return dumps(
        {
            "format": FORMAT,
            "kind": record.kind,
            "completed_at": record.completed_at,
            "watched_since": record.watched_since,
            "alerted_at": record.alerted_at,
            "occurrence": record.occurrence,
            "pending_transitions": list(record.pending_transitions),
        }
    )


def sweep_from_json(text: str) -> SweepRecord:
    document = loads(text, "sweep")
    return SweepRecord(
        kind=_get(document, "kind", str, "sweep"),
        completed_at=float(_get(document, "completed_at", (int, float), "sweep")),
        watched_since=float(_get(document, "watched_since", (int, float), "sweep")),
        alerted_at=float(_get(document, "alerted_at", (int, float), "sweep")),
        occurrence=_get(document, "occurrence", int, "sweep"),
        pending_transitions=_objects(document, "pending_transitions", "sweep"),
    )


def poison_to_json(record: PoisonRecord) -> str:
    return dumps(
        {
            "format": FORMAT,
            "target": target_to_dict(record.target),
            "reason": record.reason,
            "attempts": record.attempts,
            "at": record.at,
        }
    )


def poison_from_json(text: str) -> PoisonRecord:
    document = loads(text, "poisoned")
    return PoisonRecord(
        target=target_from_dict(_get(document, "target", dict, "poisoned"), "poisoned.target"),
        reason=_get(document, "reason", str, "poisoned"),
        attempts=_get(document, "attempts", int, "poisoned"),
        at=float(_get(document, "at", (int, float), "poisoned")),
    )
