"""association-not-enforced: the association's access mode."""

from __future__ import annotations

import pytest

from shared.core.model import Severity
from tests import estate_builder as eb
from tests.rule_helpers import NAME, details, of, read, snap, view


@pytest.mark.parametrize(("mode", "words"), [("Learning", "Learning/Transition"), ("Audit", "Audit mode")])
def test_association_not_enforced_positive(mode: str, words: str) -> None:
    (finding,) = of(read(eb.member(NAME, mode=mode)), "association-not-enforced")
    assert words in finding.summary
    assert details(finding)["accessMode"] == mode
    assert finding.subjects == (f"assoc-{NAME}",)
    assert finding.severity is Severity.MEDIUM


def test_association_enforced_is_clean() -> None:
    assert of(read(eb.member(NAME, mode="Enforced")), "association-not-enforced") == []


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("Learning", "Learning/Transition"),
        ("Transition", "Learning/Transition"),
        ("Audit", "Audit mode"),
        ("Enforced", None),
        ("enforced", None),
        ("Blocking", "unrecognised access mode 'Blocking'"),
        ("", "unrecognised access mode ''"),
    ],
)
def test_access_mode_matrix(mode: str, expected: str | None) -> None:
    findings = of(snap(view(mode=mode)), "association-not-enforced")
    if expected is None:
        assert findings == []
    else:
        (finding,) = findings
        assert expected in finding.summary
