"""sftp-enabled: SFTP on a perimeter-protected account."""

from __future__ import annotations

from shared.core.model import Severity
from tests import estate_builder as eb
from tests.rule_helpers import ACCOUNT, NAME, details, of, read
from tests.sample_estate import NSP_ID


def test_sftp_enabled_positive() -> None:
    snapshot = read(eb.member(NAME, isSftpEnabled=True, isLocalUserEnabled=True))
    (finding,) = of(snapshot, "sftp-enabled")
    assert finding.severity is Severity.HIGH
    assert finding.resource_id == ACCOUNT and finding.account_name == NAME
    assert finding.perimeter_id == NSP_ID
    assert details(finding) == {"isSftpEnabled": True, "isLocalUserEnabled": True}


def test_sftp_enabled_negative() -> None:
    assert of(read(eb.member(NAME)), "sftp-enabled") == []
    assert of(read(eb.member(NAME, isSftpEnabled=False)), "sftp-enabled") == []
