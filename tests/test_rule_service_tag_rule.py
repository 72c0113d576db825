"""service-tag-rule: service-tag inbound rules (not honoured by Azure Storage)."""

from __future__ import annotations

from tests import estate_builder as eb
from tests.rule_helpers import NAME, details, inbound, of, outbound, read, snap, view


def test_service_tag_rule_positive() -> None:
    (finding,) = of(read(eb.member(NAME, profile=eb.LEGACY)), "service-tag-rule")
    assert details(finding)["serviceTags"] == ["DataFactory"]
    assert finding.subjects == ("profile-legacy/allow-adf-tag",)


def test_service_tag_rule_negative() -> None:
    assert of(read(eb.member(NAME, profile=eb.STRICT)), "service-tag-rule") == []


def test_service_tag_rule_only_for_inbound() -> None:
    assert of(snap(view(outbound(service_tags=("Storage",)))), "service-tag-rule") == []
    assert len(of(snap(view(inbound(service_tags=("Storage",)))), "service-tag-rule")) == 1
