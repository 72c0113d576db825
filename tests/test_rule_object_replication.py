"""object-replication: object replication policies."""

from __future__ import annotations

from shared.model import Severity
from tests import estate_builder as eb
from tests.rule_helpers import NAME, of, read


def test_object_replication_positive() -> None:
    findings = of(read(eb.member(NAME), eb.replication_policies(NAME)), "object-replication")
    assert {f.subject for f in findings} == {
        "c6c23999-fd4e-433a-bcf9-1db69d27cd8a",
        "141d23dc-8958-4b48-b6e6-5a40bf1af116",
    }
    assert {f.evidence["destinationAccount"] for f in findings} == {"destAccount1", "destAccount2"}
    assert all(f.evidence["sourceAccount"] == NAME and f.severity is Severity.HIGH for f in findings)


def test_object_replication_negative() -> None:
    assert of(read(eb.member(NAME)), "object-replication") == []
