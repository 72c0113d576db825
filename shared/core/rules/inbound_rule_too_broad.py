from __future__ import annotations

import ipaddress
from collections.abc import Iterator

from shared.core.changes import ACCOUNT_CHANGES, TargetKind
from shared.core.model import Severity, StorageAccountSnapshot
from shared.core.rules.base import BRIEF_2025_06, Hit, Rule, RuleParams, inbound_rules


def _too_broad(prefix: str, params: RuleParams) -> tuple[bool, bool]:
    """(too broad, allows everything). Unparseable prefixes are not judged here."""
    try:
        network = ipaddress.ip_network(prefix.strip(), strict=False)
    except ValueError:
        return False, False
    if network.prefixlen == 0:
        return True, True
    if not network.is_global:
        return False, False  # private/reserved ranges do not open the account to the internet
    limit = params.max_inbound_prefix_ipv4 if network.version == 4 else params.max_inbound_prefix_ipv6
    return network.prefixlen < limit, False


def check(account: StorageAccountSnapshot, params: RuleParams) -> Iterator[Hit]:
    for view in account.perimeters:
        for rule in inbound_rules(view):
            broad = [p for p in rule.address_prefixes if _too_broad(p, params)[0]]
            if not broad:
                continue
            everything = any(_too_broad(p, params)[1] for p in broad)
            yield Hit(
                f"Inbound rule '{rule.name}' of profile '{view.profile_name}' admits {', '.join(broad)}",
                {
                    "profile": view.profile_name,
                    "accessRule": rule.name,
                    "broadPrefixes": broad,
                    "limitIPv4": f"/{params.max_inbound_prefix_ipv4}",
                    "limitIPv6": f"/{params.max_inbound_prefix_ipv6}",
                },
                subject=f"{view.profile_name}/{rule.name}".lower(),
                severity=Severity.CRITICAL if everything else None,
                perimeter_id=view.perimeter_id,
            )


RULE = Rule(
    id="inbound-rule-too-broad",
    title="Inbound access rule admits a very broad public range",
    severity=Severity.HIGH,
    sources=(BRIEF_2025_06,),
    reason=(
        "A perimeter only accepts public traffic its inbound access rules allow; a prefix broader than the "
        "configured limit (default /16), let alone 0.0.0.0/0, admits large parts of the internet and "
        "defeats the boundary."
    ),
    remediation=(
        "Narrow the rule's addressPrefixes to the caller's egress ranges (the limit is configurable under "
        "rules.inbound-rule-too-broad.max_prefix_ipv4 / max_prefix_ipv6)."
    ),
    check=check,
    judged_by=ACCOUNT_CHANGES | {TargetKind.PERIMETER},
    references=frozenset({TargetKind.PERIMETER}),
    parameters=frozenset({"max_prefix_ipv4", "max_prefix_ipv6"}),
    evidence="each inbound access rule with a too broad prefix",
)
