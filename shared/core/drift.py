"""Drift: a pure diff of what was stored last time against what was just evaluated.

``decide_account`` compares findings and perimeter associations of one account;
``decide_profile`` compares the effective access rules of one perimeter profile (stored once per
profile, so a rule change on a profile shared by 50 accounts is reported once, not 50 times).
Nothing is emitted when nothing changed, which is what makes re-delivered events harmless.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any

from shared.core.changes import (
    PERIMETER_ASSOCIATION_CHANGED_RULE,
    PERIMETER_MODE_CHANGED_RULE,
    PERIMETER_RULES_CHANGED_RULE,
    Provenance,
    TargetKind,
    Transition,
    TransitionKind,
)
from shared.core.model import (
    AccessMode,
    AccessRule,
    Evaluation,
    Finding,
    PerimeterView,
    Severity,
    StorageAccountSnapshot,
)
from shared.core.output import finding_to_dict
from shared.core.rules import ALL_RULES
from shared.core.rules.base import RuleParams
from shared.core.state.base import AccountState, AssociationState, ProfileState
from shared.core.summary import summary_digest, summary_of_snapshot

# -- state from an evaluation ----------------------------------------------------------------


def finding_record(finding: Finding) -> dict[str, Any]:
    # Plain JSON types only (tuples become lists), so a record read back from storage compares
    # equal to a fresh one and an unchanged account is not rewritten.
    record: dict[str, Any] = json.loads(json.dumps({**finding_to_dict(finding), "key": finding.key}, default=str))
    return record


def snapshot_digest(evaluation: Evaluation) -> str:
    payload = json.dumps(asdict(evaluation.snapshot), sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()


def account_state_of(evaluation: Evaluation, evaluated_at: str) -> AccountState:
    snap = evaluation.snapshot
    return AccountState(
        account_id=snap.id,
        findings=tuple(finding_record(f) for f in evaluation.findings),
        associations=tuple(
            AssociationState(v.perimeter_id, v.association_name, v.access_mode_raw, v.profile_name)
            for v in snap.perimeters
        ),
        key_vault_name=snap.encryption.key_vault_name if snap.encryption.uses_customer_managed_key else "",
        vm_ids=tuple(sorted({d.vm_id.lower() for d in snap.unmanaged_disks})),
        backup_instance_ids=tuple(sorted({b.instance_id.lower() for b in snap.backup_instances})),
        evaluated_at=evaluated_at,
        snapshot_digest=snapshot_digest(evaluation),
        summary_digest=summary_digest(summary_of_snapshot(snap)),
        facts=facts_of(snap),
        linked_evidence=linked_read(snap),
    )


# The parts of a read the rules with evidence on other resources (unmanaged-disk, azure-backup)
# stand on; "features" is a feature read that failed as a whole.
_LINKED_PARTS = frozenset({"virtualMachines", "backupInstances", "backupPolicies", "features"})


def linked_read(snap: StorageAccountSnapshot) -> bool:
    """Whether this read fetched the subscription's VMs and the account's backup instances (and
    their policies) in full: it found the account in a perimeter and read its features."""
    return (
        bool(snap.perimeters)
        and not snap.account_from_state
        and not snap.not_read
        and not _LINKED_PARTS & set(snap.incomplete)
    )


def facts_of(snap: StorageAccountSnapshot) -> dict[str, str]:
    """What ``AccountState.facts`` keeps of a snapshot (the perimeter rules' account inputs)."""
    return {
        "name": snap.name,
        "kind": snap.kind,
        "location": snap.location,
        "publicNetworkAccess": snap.public_network_access,
        "defaultAction": snap.network_acls.default_action,
        "keySource": snap.encryption.key_source,
        "keyVaultUri": snap.encryption.key_vault_uri,
        "keyName": snap.encryption.key_name,
    }


def rule_record(rule: AccessRule) -> dict[str, Any]:
    record: dict[str, Any] = {"name": rule.name, "direction": rule.direction}
    for key, values in (
        ("addressPrefixes", rule.address_prefixes),
        ("subscriptions", rule.subscriptions),
        ("fullyQualifiedDomainNames", rule.fully_qualified_domain_names),
        ("serviceTags", rule.service_tags),
        ("networkSecurityPerimeters", rule.network_security_perimeters),
        ("emailAddresses", rule.email_addresses),
        ("phoneNumbers", rule.phone_numbers),
    ):
        if values:
            record[key] = sorted(values)
    return record


def profile_state_of(view: PerimeterView) -> ProfileState:
    rules = tuple(sorted((rule_record(r) for r in view.access_rules), key=lambda r: str(r["name"]).lower()))
    return ProfileState(view.perimeter_id, view.profile_name, view.access_rules_version, rules)


# -- account diff ------------------------------------------------------------------------------


@dataclass(frozen=True)
class AccountDecision:
    transitions: tuple[Transition, ...]
    # None: forget the account (deleted, with no occurrence history to keep). A deleted account
    # that had findings becomes a tombstone (``AccountState.deleted_at``) keeping its occurrences.
    new_state: AccountState | None


def _finding_transition(
    kind: TransitionKind,
    record: Mapping[str, Any],
    provenance: Provenance,
    occurrence: int,
    summary: str = "",
    before: Mapping[str, Any] | None = None,
) -> Transition:
    return Transition(
        kind=kind,
        rule_id=str(record["rule"]),
        resource_id=str(record["resource"]),
        perimeter_id=record.get("perimeter"),
        severity=str(record["severity"]),
        title=str(record["title"]),
        summary=summary or str(record["summary"]),
        key=str(record["key"]),
        before=dict(before or {}),
        after={"severity": record["severity"], "summary": record["summary"]}
        if kind is not TransitionKind.RESOLVED
        else {},
        evidence={"items": _items(record)},
        legacy_keys=tuple(str(k) for k in record.get("legacy_keys") or ()),
        provenance=provenance,
        occurrence=occurrence,
    )


def _items(record: Mapping[str, Any]) -> list[dict[str, Any]]:
    """A finding record's evidence items (a list; anything else reads as none)."""
    evidence = record.get("evidence")
    return [dict(item) for item in evidence if isinstance(item, Mapping)] if isinstance(evidence, list) else []


def _subject(item: Mapping[str, Any]) -> str:
    return str(item.get("subject", ""))


def evidence_change(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, list[str]]:
    """Subjects of the evidence items added, removed and modified (same subject, other details)."""
    before = {_subject(i): i for i in _items(old)}
    after = {_subject(i): i for i in _items(new)}
    return {
        "added": [s for s in after if s not in before],
        "removed": [s for s in before if s not in after],
        "modified": [s for s in after if s in before and before[s] != after[s]],
    }


def _changed(old: Mapping[str, Any], record: Mapping[str, Any], provenance: Provenance, occurrence: int) -> Transition:
    """The finding stays open but what makes it true changed: its evidence, or its severity.
    ``before``/``after`` name the evidence items (by subject), so a card or a task comment shows
    what was added and removed; the summary says it in words."""
    change = evidence_change(old, record)
    words = [f"{what} {', '.join(repr(s) for s in subjects)}" for what, subjects in change.items() if subjects]
    notes = [f"evidence {'; '.join(words)}"] if words else []
    if old["severity"] != record["severity"]:
        notes.append(f"severity {old['severity']} -> {record['severity']}")
    sides = []
    for side in (old, record):
        subjects = [_subject(i) for i in _items(side)]
        sides.append({"severity": side["severity"], "summary": side["summary"], "evidence": subjects})
    if change["modified"]:
        sides[1]["modified"] = change["modified"]
    transition = _finding_transition(
        TransitionKind.CHANGED,
        record,
        provenance,
        occurrence,
        f"{record['summary']} ({'; '.join(notes)})",
        before=sides[0],
    )
    return replace(transition, after=sides[1], evidence={**transition.evidence, **change})


def _finding_transitions(
    prev: AccountState | None,
    curr: AccountState | None,
    provenance: Provenance,
    partial: bool,
    rules: frozenset[str] | None,
    history: dict[str, int],
) -> tuple[list[Transition], tuple[dict[str, Any], ...]]:
    """Opened/resolved/changed findings, and the findings to store.

    Findings of rules outside ``rules`` (None = all) are carried over untouched: an evaluation
    caused by, say, a perimeter change does not attribute a VM deletion to the perimeter's editor;
    that change is reported by its own event (or the sweep).

    ``history`` (finding key -> latest occurrence) is updated in place: each opening is the next
    occurrence of its key; changed and resolved carry the occurrence of the opening they belong to
    (a finding stored before occurrences were recorded is occurrence 1)."""

    def in_scope(record: Mapping[str, Any]) -> bool:
        return rules is None or record["rule"] in rules

    before = {f["key"]: f for f in (prev.findings if prev else ())}
    after = {f["key"]: f for f in (curr.findings if curr else ()) if in_scope(f)}
    for key in before:  # stored before occurrences were recorded: the open finding is its first
        history.setdefault(key, 1)
    carried = {k: f for k, f in before.items() if not in_scope(f)}
    for key, record in after.items():  # a merged finding keeps its per-subject keys while open
        legacy = (before.get(key) or {}).get("legacy_keys")
        if legacy and "legacy_keys" not in record:
            after[key] = {**record, "legacy_keys": legacy}
    out: list[Transition] = []
    for key, record in after.items():
        old = before.get(key)
        if old is None:
            history[key] = history.get(key, 0) + 1
            out.append(_finding_transition(TransitionKind.OPENED, record, provenance, history[key]))
        elif old["severity"] != record["severity"] or _items(old) != _items(record):
            out.append(_changed(old, record, provenance, history[key]))
    kept = {**carried, **after}
    for key, record in before.items():
        if key in after or key in carried:
            continue
        if partial:  # a read failed: absence proves nothing, keep the finding open
            kept[key] = record
            continue
        why = "account deleted" if curr is None else "no longer detected"
        out.append(
            _finding_transition(
                TransitionKind.RESOLVED,
                record,
                provenance,
                history[key],
                f"Resolved ({why}): {record['summary']}",
                before={"severity": record["severity"], "summary": record["summary"]},
            )
        )
    return out, tuple(kept.values())


def _numbered(transitions: Iterable[Transition], history: dict[str, int]) -> list[Transition]:
    """Each change of an account-level key (association, access mode) is its next occurrence, so
    a mode moved Enforced -> Learning a second time is not taken for a re-send of the first."""
    out = []
    for transition in transitions:
        history[transition.key] = history.get(transition.key, 0) + 1
        out.append(replace(transition, occurrence=history[transition.key]))
    return out


@dataclass(frozen=True)
class _AssociationSite:
    """Where an association changed: the account and perimeter, their key, and the events' provenance."""

    account: str
    perimeter: str
    key: str  # "account|perimeter", lower case
    provenance: Provenance


def _association_transitions(prev: AccountState | None, curr: AccountState, provenance: Provenance) -> list[Transition]:
    before = {a.perimeter_id.lower(): a for a in (prev.associations if prev else ())}
    after = {a.perimeter_id.lower(): a for a in curr.associations}
    out = []
    for key in sorted(set(before) | set(after)):
        old, new = before.get(key), after.get(key)
        if old is None and prev is None:
            continue  # first sight of the account: its association is the baseline, not drift
        perimeter = (new or old).perimeter_id  # type: ignore[union-attr]
        site = _AssociationSite(curr.account_id, perimeter, f"{curr.account_id.lower()}|{key}", provenance)
        out.extend(_association_changes(site, old, new))
    return out


def _association_changes(
    site: _AssociationSite, old: AssociationState | None, new: AssociationState | None
) -> list[Transition]:
    """An association added or removed, or its access mode changed and/or moved to another profile."""
    if old is None:
        assert new is not None  # the key is in one of the two
        summary = f"Account associated with perimeter via '{new.association_name}' ({new.access_mode})"
        return [_assoc(site, "added", {}, asdict(new), Severity.INFO, summary)]
    if new is None:
        summary = f"Association '{old.association_name}' removed: the account is no longer protected by the perimeter"
        return [_assoc(site, "removed", asdict(old), {}, Severity.HIGH, summary)]
    out = []
    if old.access_mode.lower() != new.access_mode.lower():
        out.append(_mode_change(site, old, new))
    if (old.association_name, old.profile_name.lower()) != (new.association_name, new.profile_name.lower()):
        summary = f"Association moved from profile '{old.profile_name}' to '{new.profile_name}'"
        out.append(_assoc(site, "moved", asdict(old), asdict(new), Severity.MEDIUM, summary))
    return out


def _mode_change(site: _AssociationSite, old: AssociationState, new: AssociationState) -> Transition:
    weakening = (
        AccessMode.parse(old.access_mode) is AccessMode.ENFORCED
        and AccessMode.parse(new.access_mode) is not AccessMode.ENFORCED
    )
    return Transition(
        kind=TransitionKind.CHANGED,
        rule_id=PERIMETER_MODE_CHANGED_RULE.id,
        resource_id=site.account,
        perimeter_id=site.perimeter,
        severity=(PERIMETER_MODE_CHANGED_RULE.severity if weakening else Severity.LOW).label,
        title=PERIMETER_MODE_CHANGED_RULE.title,
        summary=f"Access mode of '{new.association_name}' changed "
        f"{old.access_mode} -> {new.access_mode}" + (" (weakening: rules no longer enforced)" if weakening else ""),
        key=f"{site.key}|mode",
        before={"accessMode": old.access_mode},
        after={"accessMode": new.access_mode},
        flags=("weakening",) if weakening else (),
        provenance=site.provenance,
    )


def _assoc(
    site: _AssociationSite,
    what: str,
    before: dict[str, Any],
    after: dict[str, Any],
    severity: Severity,
    summary: str,
) -> Transition:
    """``what``: added, removed or moved; a removal always weakens the account's protection."""
    return Transition(
        kind=TransitionKind.CHANGED,
        rule_id=PERIMETER_ASSOCIATION_CHANGED_RULE.id,
        resource_id=site.account,
        perimeter_id=site.perimeter,
        severity=severity.label,
        title=PERIMETER_ASSOCIATION_CHANGED_RULE.title,
        summary=summary,
        key=f"{site.key}|association",
        before=before,
        after=after,
        flags=(what, "weakening") if what == "removed" else (what,),
        provenance=site.provenance,
    )


def decide_account(
    prev: AccountState | None,
    evaluation: Evaluation | None,
    provenance: Provenance,
    evaluated_at: str,
    rules: frozenset[str] | None = None,
    associations: bool = True,
) -> AccountDecision:
    """``evaluation`` None means the account no longer exists. ``rules`` limits which findings may
    open or resolve (None = all); ``associations`` False keeps the stored associations as they are
    (an evaluation caused by a VM or backup change does not speak for the perimeter).

    ``prev`` may be the tombstone of a deleted account: the account is then seen for the first
    time (its association is a baseline, not drift), but its findings continue the occurrence
    numbers of the deleted one, so a recreated account's finding is a new occurrence."""
    curr = account_state_of(evaluation, evaluated_at) if evaluation is not None else None
    partial = bool(evaluation and evaluation.snapshot.incomplete)
    if curr is None and rules is not None and prev is not None:
        # A scoped evaluation found the account gone: leave the verdict to its own delete event.
        return AccountDecision((), prev)
    history = dict(prev.occurrences) if prev is not None else {}
    live = prev if prev is not None and not prev.is_tombstone else None
    transitions, kept = _finding_transitions(live, curr, provenance, partial, rules, history)
    if curr is None:
        return AccountDecision(tuple(transitions), _tombstone(prev, history, evaluated_at))
    if rules is not None and live is not None:
        curr = AccountState(**{**asdict_shallow(curr), **_carried_references(live, rules)})
    if evaluation is not None and evaluation.snapshot.account_from_state and live is not None:
        # Only the perimeter side was read: what describes the whole account stays as last read.
        kept_fields = ("snapshot_digest", "summary_digest", "facts")
        curr = AccountState(**{**asdict_shallow(curr), **{f: getattr(live, f) for f in kept_fields}})
    perimeter_unknown = bool(evaluation and "networkSecurityPerimeterConfigurations" in evaluation.snapshot.incomplete)
    if evaluation is not None and live is not None:
        snap = evaluation.snapshot
        if snap.not_read or snap.account_from_state or perimeter_unknown:
            # The VMs and backup instances were not read (on purpose, or the perimeter side was
            # not known): what stands on them is as last read, and so is whether it was read.
            curr = replace(curr, linked_evidence=live.linked_evidence)
    if (not associations or perimeter_unknown) and live is not None:
        # The perimeter side was not read (or this evaluation may not judge it): an unreadable
        # configuration is not a removed association.
        curr = AccountState(**{**asdict_shallow(curr), "associations": live.associations})
    elif live is not None or curr.associations:
        transitions.extend(_numbered(_association_transitions(live, curr, provenance), history))
    new_state = AccountState(**{**asdict_shallow(curr), "findings": kept, "occurrences": history})
    return AccountDecision(tuple(transitions), new_state)


def _tombstone(prev: AccountState | None, history: dict[str, int], deleted_at: str) -> AccountState | None:
    """What to keep of a deleted account: nothing if nothing ever transitioned, else its
    occurrence history (an existing tombstone stays as it is: no rewrite on a repeated delete)."""
    if prev is None or not history:
        return None
    if prev.is_tombstone:
        return prev
    return AccountState(account_id=prev.account_id, occurrences=history, deleted_at=deleted_at)


# The reverse-index field of each thing a rule references (``Rule.references``; the perimeter's is
# the associations, kept by ``associations``): a scoped evaluation that may not judge a rule must
# not move the index of what the rule references either, or the rule's own later event would find
# nothing.
_INDEX_OF_REFERENCE = {
    TargetKind.VIRTUAL_MACHINE: "vm_ids",
    TargetKind.BACKUP_INSTANCE: "backup_instance_ids",
    TargetKind.KEY_VAULT: "key_vault_name",
}


def _carried_references(prev: AccountState, rules: frozenset[str]) -> dict[str, Any]:
    fields = {
        _INDEX_OF_REFERENCE[kind]
        for rule in ALL_RULES
        if rule.id not in rules
        for kind in rule.references
        if kind in _INDEX_OF_REFERENCE
    }
    return {field: getattr(prev, field) for field in sorted(fields)}


def asdict_shallow(state: AccountState) -> dict[str, Any]:
    return {name: getattr(state, name) for name in state.__dataclass_fields__}


# -- profile diff ------------------------------------------------------------------------------


def _flags_for(rule: Mapping[str, Any], old: Mapping[str, Any] | None, params: RuleParams) -> tuple[str, ...]:
    flags: list[str] = []
    if str(rule.get("direction", "")).lower() == "inbound":
        for prefix in rule.get("addressPrefixes", []):
            try:
                net = ipaddress.ip_network(str(prefix), strict=False)
            except ValueError:
                continue
            if net.is_global or net.prefixlen == 0:
                flags.append("public")
            limit = params.max_inbound_prefix_ipv4 if net.version == 4 else params.max_inbound_prefix_ipv6
            if net.prefixlen == 0 or (net.is_global and net.prefixlen < limit):
                flags.append("broad")
        if rule.get("subscriptions"):
            flags.append("subscription")
        if rule.get("serviceTags"):
            flags.append("service-tag")
    new_fqdns = set(rule.get("fullyQualifiedDomainNames", [])) - set((old or {}).get("fullyQualifiedDomainNames", []))
    if new_fqdns:
        flags.append("new-fqdn")
    return tuple(dict.fromkeys(flags))


def _rule_severity(flags: Iterable[str], removed: bool) -> Severity:
    flags = set(flags)
    if "broad" in flags:
        return Severity.HIGH
    if flags & {"subscription", "service-tag", "public", "new-fqdn"}:
        return Severity.MEDIUM
    return Severity.LOW if not removed else Severity.INFO


def decide_profile(
    prev: ProfileState | None,
    curr: ProfileState,
    account_id: str,
    provenance: Provenance,
    params: RuleParams | None = None,
) -> tuple[Transition, ...]:
    """One transition for the access rules added, removed or modified on one profile (nothing on
    first sight): the profile is the perimeter's unit of rules, so one change of it is one card,
    whatever number of rules it touched."""
    if prev is None:
        return ()
    if (
        prev.access_rules_version is not None
        and prev.access_rules_version == curr.access_rules_version
        and prev.rules == curr.rules
    ):
        return ()
    params = params or RuleParams()
    # ARM raises accessRulesVersion on every rule change: the same rule added again later (after a
    # removal) is a new occurrence, while a re-read of the same version repeats the same key.
    version = curr.access_rules_version
    occurrence = version if isinstance(version, int) and not isinstance(version, bool) and version > 0 else 1
    before = {str(r["name"]).lower(): r for r in prev.rules}
    after = {str(r["name"]).lower(): r for r in curr.rules}
    changes: dict[str, list[str]] = {"added": [], "removed": [], "modified": []}
    phrases: list[str] = []
    all_flags: list[str] = []
    severities: list[Severity] = []
    old_side: dict[str, Any] = {}
    new_side: dict[str, Any] = {}
    for name in sorted(set(before) | set(after)):
        old, new = before.get(name), after.get(name)
        if old == new:
            continue
        what = "added" if old is None else "removed" if new is None else "modified"
        flags = _flags_for(new, old, params) if new is not None else ()
        severities.append(_rule_severity(flags, removed=new is None))
        rule_name = str((new or old or {}).get("name", name))
        changes[what].append(rule_name)
        all_flags += [what, *flags]
        phrases.append(f"'{rule_name}' {what}" + (f" [{', '.join(flags)}]" if flags else ""))
        # Flat "rule.field" entries, so a card or a comment shows each field's before -> after.
        for field_name in sorted({*(old or {}), *(new or {})} - {"name"}):
            if old is not None and field_name in old:
                old_side[f"{rule_name}.{field_name}"] = old[field_name]
            if new is not None and field_name in new:
                new_side[f"{rule_name}.{field_name}"] = new[field_name]
    if not phrases:
        return ()  # the version moved, the rules did not
    rules_word = "Access rule" if len(phrases) == 1 else f"{len(phrases)} access rules"
    return (
        Transition(
            kind=TransitionKind.CHANGED,
            rule_id=PERIMETER_RULES_CHANGED_RULE.id,
            resource_id=curr.perimeter_id,
            perimeter_id=curr.perimeter_id,
            severity=max(severities).label,
            title=PERIMETER_RULES_CHANGED_RULE.title,
            summary=f"{rules_word} changed in profile '{curr.profile_name}': {'; '.join(phrases)}",
            key=f"{curr.perimeter_id.lower()}|{curr.profile_name.lower()}",
            before=old_side,
            after=new_side,
            flags=tuple(dict.fromkeys(all_flags)),
            evidence={
                "profile": curr.profile_name,
                "accessRulesVersion": [prev.access_rules_version, curr.access_rules_version],
                "seenVia": account_id,
                **{what: names for what, names in changes.items() if names},
            },
            provenance=provenance,
            occurrence=occurrence,
        ),
    )
