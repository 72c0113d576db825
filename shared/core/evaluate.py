"""Run the rule catalogue over one snapshot: a pure function of (snapshot, config, today)."""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import date
from typing import Any

from shared.core.config import RulesConfig, Suppression
from shared.core.model import Evaluation, Finding, StorageAccountSnapshot
from shared.core.rules import ALL_RULES
from shared.core.rules.base import Hit, Rule

log = logging.getLogger(__name__)


def _suppression_for(config: RulesConfig, finding: Finding) -> Suppression | None:
    for suppression in config.suppressions:
        if suppression.matches(finding.rule_id, finding.resource_id):
            return suppression
    return None


def evidence_item(hit: Hit) -> dict[str, Any]:
    """One evidence item: the hit's details, its subject and its own summary."""
    return {**hit.evidence, "subject": hit.subject, "summary": hit.summary}


def _findings_of(rule: Rule, account: StorageAccountSnapshot, config: RulesConfig) -> list[Finding]:
    """At most one finding: every hit of the rule on the account is an item of its evidence,
    ordered by subject; its severity is the worst hit's (or the configured override)."""
    hits = sorted(rule.check(account, config.params), key=lambda h: h.subject)
    if not hits:
        return []
    override = config.override(rule.id)
    default_perimeter = account.perimeters[0].perimeter_id if account.perimeters else None
    items = tuple(evidence_item(hit) for hit in hits)
    severity = override.severity or max(hit.severity or rule.severity for hit in hits)
    return [
        Finding(
            rule_id=rule.id,
            title=rule.title,
            severity=severity,
            resource_id=account.id,
            account_name=account.name,
            perimeter_id=hits[0].perimeter_id or default_perimeter,
            summary=rule.summary_of(items),
            evidence=items,
        )
    ]


def evaluate(
    account: StorageAccountSnapshot,
    config: RulesConfig,
    today: date,
    rules: tuple[Rule, ...] = ALL_RULES,
) -> Evaluation:
    """Feature and perimeter rules apply only to accounts associated with a perimeter."""
    if not account.in_perimeter:
        return Evaluation(account, ())
    findings: list[Finding] = []
    suppressed: list[Finding] = []
    for rule in rules:
        if not config.override(rule.id).enabled:
            continue
        for finding in _findings_of(rule, account, config):
            suppression = _suppression_for(config, finding)
            if suppression is None:
                findings.append(finding)
            elif suppression.expires >= today:
                note = f"suppressed until {suppression.expires.isoformat()}: {suppression.reason}"
                suppressed.append(_with_note(finding, note))
            else:
                note = f"suppression expired on {suppression.expires.isoformat()} ({suppression.reason})"
                log.warning("%s for %s on %s", note, finding.rule_id, finding.resource_id)
                findings.append(_with_note(finding, note))
    return Evaluation(account, tuple(findings), tuple(suppressed))


def _with_note(finding: Finding, note: str) -> Finding:
    return replace(finding, suppression_note=note)
