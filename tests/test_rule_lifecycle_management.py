"""lifecycle-management: lifecycle management policies."""

from __future__ import annotations

from shared.core.model import Severity
from tests import estate_builder as eb
from tests.rule_helpers import NAME, details, of, read


def test_lifecycle_management_positive() -> None:
    (finding,) = of(read(eb.member(NAME), eb.lifecycle_policy(NAME)), "lifecycle-management")
    assert details(finding) == {"enabledRules": ["olcmtest"]}
    assert finding.severity is Severity.MEDIUM


def test_lifecycle_management_negative() -> None:
    assert of(read(eb.member(NAME), eb.lifecycle_policy(NAME, enabled=False)), "lifecycle-management") == []
    assert of(read(eb.member(NAME)), "lifecycle-management") == []
