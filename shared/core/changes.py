"""Types shared by the event pipeline: normalised change events, evaluation targets, transitions,
and the pseudo-rules (the transitions that are not catalogue findings).

Pure data; no SDK, no I/O. ``events.py`` builds ChangeEvents, ``targeting.py`` maps them to
Targets, ``drift.py`` produces Transitions.
"""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass, field
from typing import Any

from shared.core.model import Severity


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
    # Not a target: what causes a reconciliation sweep's evaluations. A rule says whether a sweep
    # may judge it (``Rule.judged_by``), like any change kind above.
    SWEEP = "sweep"


# The kinds a Target may have (all but SWEEP).
TARGET_KINDS: tuple[TargetKind, ...] = tuple(kind for kind in TargetKind if kind is not TargetKind.SWEEP)
# The change kinds that judge an account as a whole: its own change, and a sweep.
ACCOUNT_CHANGES: frozenset[TargetKind] = frozenset({TargetKind.ACCOUNT, TargetKind.SWEEP})


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


# -- pseudo-rules -------------------------------------------------------------------------------


@dataclass(frozen=True)
class PseudoRule:
    """A kind of transition that is not a catalogue finding, declared in one place like a rule.

    ``category`` "perimeter": a change to what protects an account (reported as ``changed``, never
    a task); "operator": an alert about nsp-drift itself (bypasses severity floors and digests).
    ``judged_by``: the change kinds whose evaluations may report it (none for operator alerts: the
    pipeline raises those about its own work). ``references``: what besides the account it is about.
    ``severity``: a perimeter change that weakens the protection is reported at this severity,
    others lower (``shared.core.drift``); an operator alert always is."""

    id: str
    title: str
    severity: Severity
    reason: str
    remediation: str
    category: str
    judged_by: frozenset[TargetKind] = frozenset()
    references: frozenset[TargetKind] = frozenset()


_PERIMETER_SIDE = ACCOUNT_CHANGES | {TargetKind.PERIMETER}

PERIMETER_RULES_CHANGED_RULE = PseudoRule(
    id="perimeter-access-rules-changed",
    title="Perimeter access rules changed",
    severity=Severity.HIGH,  # a broad public rule; other rule changes medium, low or info
    reason="The perimeter's access rules decide which public traffic reaches every resource associated with "
    "the profile: a broader, public, subscription-based or service-tag rule widens that door for all of them.",
    remediation="Review the rule with its author; narrow address prefixes to known egress ranges, prefer "
    "associating callers with the perimeter, and remove temporary rules.",
    category="perimeter",
    judged_by=_PERIMETER_SIDE,
    references=frozenset({TargetKind.PERIMETER}),
)
PERIMETER_ASSOCIATION_CHANGED_RULE = PseudoRule(
    id="perimeter-association-changed",
    title="Perimeter association changed",
    severity=Severity.HIGH,  # an association removed; moved medium, added info
    reason="A storage account associated with a perimeter only accepts public traffic its rules allow; removing "
    "or moving the association changes which rules protect the account.",
    remediation="Re-associate the account with the intended profile in Enforced mode, or record why it left the "
    "perimeter.",
    category="perimeter",
    judged_by=_PERIMETER_SIDE,
    references=frozenset({TargetKind.PERIMETER}),
)
PERIMETER_MODE_CHANGED_RULE = PseudoRule(
    id="perimeter-access-mode-changed",
    title="Perimeter access mode changed",
    severity=Severity.HIGH,  # away from Enforced; other mode changes low
    reason="Only Enforced mode applies the perimeter's rules exclusively; in Learning (Transition) or Audit mode "
    "the account's own network rules and trusted-service exceptions still admit traffic.",
    remediation="Switch the resource association back to accessMode Enforced once the access logs are reviewed.",
    category="perimeter",
    judged_by=_PERIMETER_SIDE,
    references=frozenset({TargetKind.PERIMETER}),
)
EVALUATION_POISONED_RULE = PseudoRule(
    id="evaluation-poisoned",
    title="Evaluation failed repeatedly (message moved to the poison queue)",
    severity=Severity.HIGH,
    reason="nsp-drift could not evaluate this target after repeated attempts: drift on it may go unreported until "
    "the next successful reconciliation sweep.",
    remediation="Check the function's logs for the failure named here (permissions, throttling, a malformed "
    "resource) and the messages in the poison queue.",
    category="operator",
)
EVALUATION_FAILING_RULE = PseudoRule(
    id="evaluation-failing",
    title="Evaluation keeps failing (backing off)",
    severity=Severity.HIGH,
    reason="nsp-drift keeps failing to evaluate this target and is backing off (doubling up to a day): changes to "
    "it are not reported until an evaluation succeeds.",
    remediation="Check the function's logs for the failure named here (permissions, throttling, a malformed "
    "resource); the target is retried by itself and this alert is not repeated while the failure lasts.",
    category="operator",
)
SWEEP_HEARTBEAT_RULE = PseudoRule(
    id="sweep-heartbeat",
    title="Reconciliation sweep stopped completing (heartbeat missed)",
    severity=Severity.HIGH,
    reason="The reconciliation sweep catches the drift events miss (lost or filtered events, child resources, "
    "associations made from outside the scope) and retries failed deliveries; while it does not complete, none of "
    "that happens.",
    remediation="Check that the timer functions are enabled and the app is running, their NCRONTAB settings, and "
    "the sweep's log lines for the failure; nsp-drift status shows the last sweep time. The alert resolves "
    "by itself when a sweep completes again and is not repeated while the sweep stays stale.",
    category="operator",
)

PSEUDO_RULES: tuple[PseudoRule, ...] = (
    PERIMETER_RULES_CHANGED_RULE,
    PERIMETER_ASSOCIATION_CHANGED_RULE,
    PERIMETER_MODE_CHANGED_RULE,
    EVALUATION_POISONED_RULE,
    EVALUATION_FAILING_RULE,
    SWEEP_HEARTBEAT_RULE,
)
PSEUDO_RULES_BY_ID: dict[str, PseudoRule] = {rule.id: rule for rule in PSEUDO_RULES}

# Their ids, as the transitions carry them (findings use the catalogue's rule ids).
PERIMETER_RULES_CHANGED = PERIMETER_RULES_CHANGED_RULE.id
PERIMETER_ASSOCIATION_CHANGED = PERIMETER_ASSOCIATION_CHANGED_RULE.id
PERIMETER_MODE_CHANGED = PERIMETER_MODE_CHANGED_RULE.id
PERIMETER_RULES = frozenset(rule.id for rule in PSEUDO_RULES if rule.category == "perimeter")
EVALUATION_POISONED = EVALUATION_POISONED_RULE.id
EVALUATION_FAILING = EVALUATION_FAILING_RULE.id
SWEEP_HEARTBEAT = SWEEP_HEARTBEAT_RULE.id
OPERATOR_RULES = frozenset(rule.id for rule in PSEUDO_RULES if rule.category == "operator")


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
    resource_id: str  # the storage account (the perimeter for access-rule changes, the target for operator alerts)
    perimeter_id: str | None
    severity: str  # label of shared.core.model.Severity
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
    # A perimeter-level change: the storage accounts it affects (ids, as stored when it was
    # detected). Not part of the idempotency key: the same change seen later is the same delivery.
    accounts: tuple[str, ...] = ()
    # The per-subject keys a finding had before findings were one per rule and account (stored
    # state merged by shared.adapters.state.legacy): the task destinations take over their tasks.
    legacy_keys: tuple[str, ...] = ()

    @property
    def idempotency_key(self) -> str:
        """Same (what, how, which state, which occurrence) -> same key, so a receiver can drop a
        re-send, while a finding that comes back (occurrence 2) is a new delivery everywhere."""
        basis = (
            f"{self.key}|{self.kind.value}|{sorted(self.after.items())!r}|{sorted(self.before.items())!r}"
            f"|{self.occurrence}"
        )
        return hashlib.sha256(basis.encode()).hexdigest()[:32]


AFFECTED_ACCOUNTS_SHOWN = 20  # a perimeter change lists this many affected accounts, then "and N more"


def transition_to_dict(t: Transition) -> dict[str, Any]:
    """The JSON form of a transition: replay output, outbox payloads, webhook data.

    A perimeter-level change adds ``accounts`` (the first AFFECTED_ACCOUNTS_SHOWN affected account
    ids) and ``accounts_more`` (how many more there are)."""
    affected: dict[str, Any] = {}
    if t.accounts:
        affected = {
            "accounts": list(t.accounts[:AFFECTED_ACCOUNTS_SHOWN]),
            "accounts_more": max(len(t.accounts) - AFFECTED_ACCOUNTS_SHOWN, 0),
        }
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
        **affected,
        **({"legacy_keys": list(t.legacy_keys)} if t.legacy_keys else {}),
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
        severity=EVALUATION_POISONED_RULE.severity.label,
        title=EVALUATION_POISONED_RULE.title,
        summary=f"Evaluation of {target.kind.value} {target.resource_id} failed {attempts} time(s): {reason}. "
        f"The message moves to {queue}-poison; the reconciliation sweep re-evaluates the accounts.",
        key=f"poison|{target.key}|{failure}",
        evidence={"target": target.key, "reason": reason, "attempts": attempts, "poisonQueue": f"{queue}-poison"},
        provenance=Provenance(source="sweep"),
    )
