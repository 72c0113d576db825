"""object-replication: object replication policies."""

from __future__ import annotations

from shared.core.model import Severity
from tests import estate_builder as eb
from tests.rule_helpers import NAME, of, read


def test_object_replication_positive() -> None:
    # Two policies: one finding for the account, whose evidence lists both (ordered by policy id).
    (finding,) = of(read(eb.member(NAME), eb.replication_policies(NAME)), "object-replication")
    assert finding.subjects == ("141d23dc-8958-4b48-b6e6-5a40bf1af116", "c6c23999-fd4e-433a-bcf9-1db69d27cd8a")
    assert [i["destinationAccount"] for i in finding.evidence] == ["destAccount2", "destAccount1"]
    assert all(i["sourceAccount"] == NAME for i in finding.evidence) and finding.severity is Severity.HIGH
    assert finding.summary == (
        f"2 object replication policies copy blobs: '{NAME}' to 'destAccount2', '{NAME}' to 'destAccount1'"
    )


def test_object_replication_negative() -> None:
    assert of(read(eb.member(NAME)), "object-replication") == []
