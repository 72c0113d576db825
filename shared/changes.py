"""Types shared by the event pipeline: normalised change events, evaluation targets, transitions.

Pure data; no SDK, no I/O. ``events.py`` builds ChangeEvents, ``targeting.py`` maps them to
Targets, ``drift.py`` produces Transitions.
"""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Actor:
    """Who made a change, from the event's claims (any field may be empty)."""

    name: str = ""
    upn: str = ""
    appid: str = ""
    object_id: str = ""
    client_ip: str = ""

    def display(self) -> str:
        who = self.upn or self.name or (f"app {self.appid}" if self.appid else "") or self.object_id
        if not who:
            return "unknown"
        return f"{who} from {self.client_ip}" if self.client_ip else who

    def as_dict(self) -> dict[str, str]:
        return {k: v for k, v in self.__dict__.items() if v}


@dataclass(frozen=True)
class ChangeEvent:
    """One resource-change event, whatever its schema (Event Grid or CloudEvents 1.0)."""

    event_id: str
    event_type: str  # canonical, e.g. "Microsoft.Resources.ResourceWriteSuccess"
    resource_id: str  # normalised ARM id (stray spaces removed, original casing kept)
    subscription_id: str
    operation_name: str = ""
    status: str = ""
    event_time: str = ""  # ISO 8601 as sent
    correlation_id: str = ""
    actor: Actor = field(default_factory=Actor)
    resource_type: str = ""  # e.g. "Microsoft.Storage/storageAccounts" when the event says so
    is_delete: bool = False
    # Resource Notifications CreatedOrUpdated carry a body snapshot (a hint; may be stale).
    snapshot_properties: dict[str, Any] | None = field(default=None, hash=False, compare=False)
    snapshot_api_version: str = ""


class TargetKind(enum.StrEnum):
    ACCOUNT = "account"  # a storage account: evaluate it
    PERIMETER = "perimeter"  # evaluate every storage account associated with it (now or before)
    VIRTUAL_MACHINE = "vm"  # evaluate the accounts its VHD URIs point at (now or before)
    BACKUP_INSTANCE = "backup"  # evaluate its data source account
    KEY_VAULT = "keyvault"  # evaluate the accounts whose CMK lives in it


@dataclass(frozen=True)
class Target:
    kind: TargetKind
    resource_id: str  # canonical casing as first seen; compare with ``key``

    @property
    def key(self) -> str:
        return f"{self.kind.value}:{self.resource_id.lower()}"

    @property
    def row_key(self) -> str:
        """A Table-storage-safe key (ids contain '/', which RowKey forbids)."""
        return hashlib.sha256(self.key.encode()).hexdigest()


class TransitionKind(enum.StrEnum):
    OPENED = "opened"
    RESOLVED = "resolved"
    CHANGED = "changed"


# Pseudo rule ids of perimeter-level changes (findings use the catalogue's rule ids).
PERIMETER_RULES_CHANGED = "perimeter-access-rules-changed"
PERIMETER_ASSOCIATION_CHANGED = "perimeter-association-changed"
PERIMETER_MODE_CHANGED = "perimeter-access-mode-changed"
PERIMETER_RULES = frozenset({PERIMETER_RULES_CHANGED, PERIMETER_ASSOCIATION_CHANGED, PERIMETER_MODE_CHANGED})
# Operator alerts (about nsp-drift itself, not a storage account): an evaluation's message went to
# the poison queue; a window or batch keeps failing and backs off.
EVALUATION_POISONED = "evaluation-poisoned"
EVALUATION_FAILING = "evaluation-failing"
OPERATOR_RULES = frozenset({EVALUATION_POISONED, EVALUATION_FAILING})


@dataclass(frozen=True)
class Provenance:
    """What caused an evaluation: merged from every event coalesced into it."""

    event_ids: tuple[str, ...] = ()
    actors: tuple[Actor, ...] = ()
    operation_names: tuple[str, ...] = ()
    correlation_ids: tuple[str, ...] = ()
    event_times: tuple[str, ...] = ()
    source: str = "event"  # "event" | "sweep" | "scan"

    @property
    def changed_by(self) -> str:
        names = list(dict.fromkeys(a.display() for a in self.actors if a.display() != "unknown"))
        return ", ".join(names) if names else ("reconciliation sweep" if self.source == "sweep" else "unknown")

    @property
    def when(self) -> str:
        return max(self.event_times) if self.event_times else ""


@dataclass(frozen=True)
class Transition:
    kind: TransitionKind
    rule_id: str
    resource_id: str  # the storage account (or the perimeter for profile-level changes)
    perimeter_id: str | None
    severity: str  # label of shared.model.Severity
    title: str
    summary: str
    key: str  # identity of what transitioned (finding key, or perimeter/profile/... key)
    before: dict[str, Any] = field(default_factory=dict, hash=False)
    after: dict[str, Any] = field(default_factory=dict, hash=False)
    flags: tuple[str, ...] = ()  # e.g. "weakening", "broad", "public", "subscription", "service-tag", "new-fqdn"
    evidence: dict[str, Any] = field(default_factory=dict, hash=False)
    provenance: Provenance = field(default_factory=Provenance)
    # Which occurrence of ``key`` this is: a finding's opening count (1 for its first opening,
    # 2 when it comes back after a resolution, also on a recreated account); for account-level
    # perimeter changes the count of changes of that key; for profile rule changes the profile's
    # accessRulesVersion. Derived from stored state, so a re-detection after a crash repeats it.
    occurrence: int = 1

    @property
    def idempotency_key(self) -> str:
        """Same (what, how, which state, which occurrence) -> same key, so a receiver can drop a
        re-send, while a finding that comes back (occurrence 2) is a new delivery everywhere."""
        basis = (
            f"{self.key}|{self.kind.value}|{sorted(self.after.items())!r}|{sorted(self.before.items())!r}"
            f"|{self.occurrence}"
        )
        return hashlib.sha256(basis.encode()).hexdigest()[:32]


def transition_to_dict(t: Transition) -> dict[str, Any]:
    """The JSON form of a transition: replay output, outbox payloads, webhook data."""
    return {
        "transition": t.kind.value,
        "rule": t.rule_id,
        "resource": t.resource_id,
        "perimeter": t.perimeter_id,
        "severity": t.severity,
        "title": t.title,
        "summary": t.summary,
        "changed_by": t.provenance.changed_by,
        "when": t.provenance.when,
        "operations": list(t.provenance.operation_names),
        "correlation_ids": list(t.provenance.correlation_ids),
        "event_ids": list(t.provenance.event_ids),
        "flags": list(t.flags),
        "before": t.before,
        "after": t.after,
        "key": t.key,
        "occurrence": t.occurrence,
        "idempotency_key": t.idempotency_key,
    }


def poison_transition(target: Target, reason: str, attempts: int, queue: str) -> Transition:
    """The one alert for a target whose evaluation exhausted its retries.

    Keyed on the target and the failure's exception type, so the same failure reported by a
    later (re-queued) message maps to the same delivery and is not announced twice."""
    failure = reason.split(":", 1)[0]
    return Transition(
        kind=TransitionKind.OPENED,
        rule_id=EVALUATION_POISONED,
        resource_id=target.resource_id,
        perimeter_id=None,
        severity="high",
        title="Evaluation failed repeatedly (message moved to the poison queue)",
        summary=f"Evaluation of {target.kind.value} {target.resource_id} failed {attempts} time(s): {reason}. "
        f"The message moves to {queue}-poison; the reconciliation sweep re-evaluates the accounts.",
        key=f"poison|{target.key}|{failure}",
        evidence={"target": target.key, "reason": reason, "attempts": attempts, "poisonQueue": f"{queue}-poison"},
        provenance=Provenance(source="sweep"),
    )
