"""Stored state from before findings were one per rule and account: merged on read.

Until commit 3c53953 a rule made one finding per *subject* (one per VHD, per replication
policy, per share, per access rule), keyed ``rule|account|subject``, each with its own occurrence
count. Now a rule makes one finding per account, keyed ``rule|account|`` (the empty subject, so
rules that always had one finding per account keep their keys), whose evidence lists the subjects.

Both stores decode through shared.adapters.state.codec, which calls ``merge_findings`` and
``merge_occurrences``: a stored state of either granularity reads as the new one. The merge is a
pure function of the stored records and computes the finding exactly as shared.core.evaluate does from
the same hits (the items keep each subject's details and summary; the summary, severity and
perimeter are derived the same way), so the first evaluation after an upgrade compares equal and
emits nothing for an account whose findings did not change: no spurious opened or resolved.
Transitions a row still carries (``pending_transitions``) are left as written: they are recorded
as the old version would have recorded them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from shared.core.model import Severity, finding_key
from shared.core.rules import RULES_BY_ID
from shared.core.rules.base import joined_summary


def is_legacy(record: Mapping[str, Any]) -> bool:
    """A per-subject finding record: it names its ``subject`` (its evidence is one object); a
    record of the new form has none (its evidence is a list of items, each with a subject)."""
    return "subject" in record and isinstance(record.get("rule"), str) and isinstance(record.get("resource"), str)


def merged_key(key: str) -> str:
    """``rule|account|subject`` -> ``rule|account|`` (a key of the new form maps to itself)."""
    parts = key.split("|", 2)
    return f"{parts[0]}|{parts[1]}|" if len(parts) == 3 else key


def _severity(label: object) -> Severity:
    try:
        return Severity.parse(str(label))
    except ValueError:
        return Severity.INFO


def _details(record: Mapping[str, Any]) -> dict[str, Any]:
    evidence = record.get("evidence")
    return dict(evidence) if isinstance(evidence, Mapping) else {}


def _merge(records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    ordered = sorted(records, key=lambda r: str(r.get("subject", "")))  # stable: the rule's order
    items = [
        {**_details(r), "subject": str(r.get("subject", "")), "summary": str(r.get("summary", ""))} for r in ordered
    ]
    first = ordered[0]
    rule = RULES_BY_ID.get(str(first.get("rule")))
    if rule is not None:
        summary = rule.summary_of(items)
    else:  # a rule since removed: its findings resolve on the next evaluation anyway
        summary = items[0]["summary"] if len(items) == 1 else joined_summary(items)
    worst = max(ordered, key=lambda r: _severity(r.get("severity")))
    suppression = next((r.get("suppression") for r in ordered if r.get("suppression")), None)
    key = finding_key(str(first.get("rule")), str(first.get("resource")))
    # The per-subject keys, while the merged finding stays open: tasks opened for them are taken
    # over (one) and closed (the others) by the task destinations (shared.core.notify.base).
    legacy_keys = sorted({str(r.get("key")) for r in ordered if r.get("key") and r.get("key") != key})
    return {
        "rule": first.get("rule"),
        "title": first.get("title"),
        "severity": worst.get("severity"),
        "resource": first.get("resource"),
        "account": first.get("account"),
        "perimeter": first.get("perimeter"),
        "summary": summary,
        "evidence": items,
        "suppression": suppression,
        "key": key,
        **({"legacy_keys": legacy_keys} if legacy_keys else {}),
    }


def merge_findings(findings: Sequence[dict[str, Any]]) -> tuple[dict[str, Any], ...]:
    """One record per rule and account; records already of the new form are kept as they are."""
    if not any(is_legacy(f) for f in findings):
        return tuple(findings)
    groups: dict[str, list[dict[str, Any]]] = {}
    out: list[dict[str, Any] | str] = []
    for record in findings:
        if not is_legacy(record):
            out.append(record)
            continue
        key = finding_key(str(record.get("rule")), str(record.get("resource")))
        if key not in groups:
            groups[key] = []
            out.append(key)  # the merged finding takes the place of the first of its group
        groups[key].append(record)
    return tuple(_merge(groups[item]) if isinstance(item, str) else item for item in out)


def merge_occurrences(occurrences: Mapping[str, int]) -> dict[str, int]:
    """The merged finding's latest occurrence is the latest of any of its subjects: a finding
    that comes back after the upgrade is a new occurrence of every delivery made before it."""
    merged: dict[str, int] = {}
    for key, count in occurrences.items():
        new = merged_key(key) if _is_finding_key(key) else key
        merged[new] = max(merged.get(new, 0), count)
    return merged


def _is_finding_key(key: str) -> bool:
    """Finding keys start with a catalogue rule id; perimeter-change keys start with an ARM id."""
    return key.split("|", 1)[0] in RULES_BY_ID
