"""inbound-rule-too-broad: broad public inbound prefixes."""

from __future__ import annotations

import pytest

from shared.core.config import parse_config
from shared.core.model import Severity
from tests import estate_builder as eb
from tests.rule_helpers import NAME, details, inbound, of, outbound, read, snap, view


def test_inbound_rule_too_broad_on_the_official_prefixes() -> None:
    # The storage NSP configuration example's rule: 148.0.0.0/8 (too broad) and 152.4.6.0/24 (fine).
    (finding,) = of(read(eb.member(NAME, profile=eb.LEGACY)), "inbound-rule-too-broad")
    assert finding.severity is Severity.HIGH
    assert details(finding)["broadPrefixes"] == ["148.0.0.0/8"]
    assert finding.subjects == ("profile-legacy/invpnrule",)


def test_inbound_rule_too_broad_negative_on_private_prefixes() -> None:
    # profile-strict: 10.11.0.0/16 and 10.10.1.0/24 inbound, FQDNs outbound.
    assert of(read(eb.member(NAME, profile=eb.STRICT)), "inbound-rule-too-broad") == []


@pytest.mark.parametrize(
    ("prefix", "expected"),
    [
        ("148.0.0.0/16", None),
        ("148.0.0.0/15", Severity.HIGH),
        ("0.0.0.0/0", Severity.CRITICAL),
        ("10.0.0.0/8", None),
        ("172.16.0.0/12", None),
        ("100.64.0.0/10", None),
        ("::/0", Severity.CRITICAL),
        ("2a01:110::/32", Severity.HIGH),
        ("2a01:110::/48", None),
        ("2a01:110::/47", Severity.HIGH),
        ("fc00::/7", None),
        ("not-a-prefix", None),
    ],
)
def test_inbound_prefix_edges(prefix: str, expected: Severity | None) -> None:
    findings = of(snap(view(inbound(address_prefixes=(prefix,)))), "inbound-rule-too-broad")
    if expected is None:
        assert findings == []
    else:
        (finding,) = findings
        assert finding.severity is expected
        assert details(finding)["broadPrefixes"] == [prefix]


def test_inbound_everything_is_critical_even_next_to_a_narrow_prefix() -> None:
    rule = inbound(address_prefixes=("152.4.6.0/24", "0.0.0.0/0", "148.0.0.0/8"))
    (finding,) = of(snap(view(rule)), "inbound-rule-too-broad")
    assert finding.severity is Severity.CRITICAL
    assert details(finding)["broadPrefixes"] == ["0.0.0.0/0", "148.0.0.0/8"]


def test_outbound_prefixes_are_not_inbound_rules() -> None:
    assert of(snap(view(outbound(address_prefixes=("0.0.0.0/0",)))), "inbound-rule-too-broad") == []


def test_prefix_limit_is_configurable() -> None:
    snapshot = snap(view(inbound(address_prefixes=("148.0.0.0/8", "152.4.0.0/20"))))
    narrow = parse_config({"rules": {"inbound-rule-too-broad": {"max_prefix_ipv4": 24}}})
    (finding,) = of(snapshot, "inbound-rule-too-broad", narrow)
    assert details(finding)["broadPrefixes"] == ["148.0.0.0/8", "152.4.0.0/20"]
    assert details(finding)["limitIPv4"] == "/24"
    wide = parse_config({"rules": {"inbound-rule-too-broad": {"max_prefix_ipv4": 8}}})
    assert of(snapshot, "inbound-rule-too-broad", wide) == []
