"""subscription-rule: subscription-based inbound rules."""

from __future__ import annotations

from tests import estate_builder as eb
from tests.rule_helpers import NAME, details, of, outbound, read, snap, view
from tests.sample_estate import PARTNER_SUB


def test_subscription_rule_positive() -> None:
    (finding,) = of(read(eb.member(NAME, profile=eb.LEGACY)), "subscription-rule")
    assert details(finding)["subscriptions"] == [f"/subscriptions/{PARTNER_SUB}"]
    assert finding.subjects == ("profile-legacy/allowedsubscriptions",)


def test_subscription_rule_negative() -> None:
    assert of(read(eb.member(NAME, profile=eb.STRICT)), "subscription-rule") == []
    assert of(snap(view(outbound(subscriptions=(f"/subscriptions/{PARTNER_SUB}",)))), "subscription-rule") == []
