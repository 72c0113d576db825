"""Why a transition matters and how to fix it: each rule's and pseudo-rule's own reason and fix."""

from __future__ import annotations

from shared.core.changes import PSEUDO_RULES_BY_ID
from shared.core.rules import RULES_BY_ID


def why_and_how(rule_id: str) -> tuple[str, str]:
    rule = RULES_BY_ID.get(rule_id)
    if rule is not None:
        return rule.reason, rule.remediation
    pseudo = PSEUDO_RULES_BY_ID.get(rule_id)
    if pseudo is not None:
        return pseudo.reason, pseudo.remediation
    return "", ""
