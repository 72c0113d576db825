"""blob-nfsv3-enabled: Blob NFS 3.0 on a perimeter-protected account."""

from __future__ import annotations

from shared.core.model import Severity
from tests import estate_builder as eb
from tests.rule_helpers import NAME, details, of, read


def test_blob_nfsv3_positive_on_the_official_nfs_account() -> None:
    (finding,) = of(read(eb.member(NAME, "nfs")), "blob-nfsv3-enabled")
    assert finding.severity is Severity.HIGH
    assert details(finding) == {"isNfsV3Enabled": True, "isHnsEnabled": True}


def test_blob_nfsv3_negative() -> None:
    assert of(read(eb.member(NAME)), "blob-nfsv3-enabled") == []
    assert of(read(eb.member(NAME, "nfs", isNfsV3Enabled=False)), "blob-nfsv3-enabled") == []
