from __future__ import annotations

from collections.abc import Iterator

from shared.core.changes import ACCOUNT_CHANGES, TargetKind
from shared.core.model import AccessMode, Severity, StorageAccountSnapshot
from shared.core.rules.base import LEARN_2025_07, TRANSITION_2024_11, Hit, Rule, RuleParams

_MEANING = {
    AccessMode.LEARNING: "Learning/Transition mode: the account's own firewall and trusted-service "
    "exceptions still admit traffic the perimeter would deny",
    AccessMode.AUDIT: "Audit mode: perimeter rules are only logged, not enforced",
}


def check(account: StorageAccountSnapshot, params: RuleParams) -> Iterator[Hit]:
    for view in account.perimeters:
        if view.access_mode is AccessMode.ENFORCED:
            continue
        meaning = _MEANING.get(view.access_mode, f"unrecognised access mode '{view.access_mode_raw}'")
        yield Hit(
            f"Association '{view.association_name}' is not enforced ({meaning})",
            {
                "association": view.association_name,
                "accessMode": view.access_mode_raw,
                "publicNetworkAccess": account.public_network_access,
                "networkAcls.defaultAction": account.network_acls.default_action,
            },
            subject=view.association_name.lower(),
            perimeter_id=view.perimeter_id,
        )


RULE = Rule(
    id="association-not-enforced",
    title="Perimeter association not in Enforced mode",
    severity=Severity.MEDIUM,
    sources=(TRANSITION_2024_11, LEARN_2025_07),
    reason=(
        "In Learning (now called Transition) mode the perimeter's rules are combined with the resource's "
        "own network rules, and in Audit mode they are only logged: public traffic the perimeter should "
        "deny can still reach the account."
    ),
    remediation=(
        "Review the NSP access logs, then switch the resource association's accessMode to Enforced "
        "(`az network perimeter association update --access-mode Enforced`)."
    ),
    check=check,
    judged_by=ACCOUNT_CHANGES | {TargetKind.PERIMETER},
    references=frozenset({TargetKind.PERIMETER}),
    evidence="each association not in Enforced mode",
)
