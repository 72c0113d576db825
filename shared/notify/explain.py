"""Why a transition matters and how to fix it: the rule catalogue, plus the perimeter changes."""

from __future__ import annotations

from shared.changes import (
    EVALUATION_FAILING,
    EVALUATION_POISONED,
    PERIMETER_ASSOCIATION_CHANGED,
    PERIMETER_MODE_CHANGED,
    PERIMETER_RULES_CHANGED,
)
from shared.rules import RULES_BY_ID

_PSEUDO = {
    PERIMETER_RULES_CHANGED: (
        "The perimeter's access rules decide which public traffic reaches every resource associated with "
        "the profile: a broader, public, subscription-based or service-tag rule widens that door for all of them.",
        "Review the rule with its author; narrow address prefixes to known egress ranges, prefer associating "
        "callers with the perimeter, and remove temporary rules.",
    ),
    PERIMETER_ASSOCIATION_CHANGED: (
        "A storage account associated with a perimeter only accepts public traffic its rules allow; removing "
        "or moving the association changes which rules protect the account.",
        "Re-associate the account with the intended profile in Enforced mode, or record why it left the perimeter.",
    ),
    PERIMETER_MODE_CHANGED: (
        "Only Enforced mode applies the perimeter's rules exclusively; in Learning (Transition) or Audit mode "
        "the account's own network rules and trusted-service exceptions still admit traffic.",
        "Switch the resource association back to accessMode Enforced once the access logs are reviewed.",
    ),
    EVALUATION_POISONED: (
        "nsp-drift could not evaluate this target after repeated attempts: drift on it may go unreported until "
        "the next successful reconciliation sweep.",
        "Check the function's logs for the failure named here (permissions, throttling, a malformed resource) "
        "and the messages in the poison queue.",
    ),
    EVALUATION_FAILING: (
        "nsp-drift keeps failing to evaluate this target and is backing off (doubling up to a day): changes to it "
        "are not reported until an evaluation succeeds.",
        "Check the function's logs for the failure named here (permissions, throttling, a malformed resource); "
        "the target is retried by itself and this alert is not repeated while the failure lasts.",
    ),
}


def why_and_how(rule_id: str) -> tuple[str, str]:
    rule = RULES_BY_ID.get(rule_id)
    if rule is not None:
        return rule.reason, rule.remediation
    return _PSEUDO.get(rule_id, ("", ""))
