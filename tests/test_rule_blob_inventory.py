"""blob-inventory: blob inventory policies."""

from __future__ import annotations

import pytest

from tests import estate_builder as eb
from tests.rule_helpers import NAME, details, of, read


def test_blob_inventory_positive() -> None:
    (finding,) = of(read(eb.member(NAME), eb.inventory_policy(NAME)), "blob-inventory")
    assert details(finding) == {"enabledRules": ["inventoryPolicyRule1"], "destinations": ["container1"]}


@pytest.mark.parametrize(("policy_enabled", "rule_enabled"), [(False, True), (True, False)])
def test_blob_inventory_negative(policy_enabled: bool, rule_enabled: bool) -> None:
    parts = eb.inventory_policy(NAME, policy_enabled=policy_enabled, rule_enabled=rule_enabled)
    assert of(read(eb.member(NAME), parts), "blob-inventory") == []


def test_blob_inventory_negative_without_policy() -> None:
    assert of(read(eb.member(NAME)), "blob-inventory") == []
