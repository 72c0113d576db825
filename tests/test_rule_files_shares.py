"""files-nfs-share and files-smb-share: Azure Files shares on a perimeter-protected account."""

from __future__ import annotations

from shared.core.model import Severity
from tests import estate_builder as eb
from tests.rule_helpers import NAME, details, of, read


def test_files_nfs_share_positive() -> None:
    snapshot = read(eb.member(NAME), eb.nfs_share(NAME, "share-nfs"), eb.smb_share(NAME, "share-smb"))
    (finding,) = of(snapshot, "files-nfs-share")
    assert finding.subjects == ("share-nfs",)
    assert finding.severity is Severity.HIGH
    assert details(finding) == {"share": "share-nfs", "enabledProtocols": "NFS"}


def test_files_nfs_share_negative() -> None:
    assert of(read(eb.member(NAME), eb.smb_share(NAME)), "files-nfs-share") == []
    assert of(read(eb.member(NAME)), "files-nfs-share") == []


def test_files_smb_share_positive() -> None:
    snapshot = read(eb.member(NAME), eb.smb_share(NAME, "share-smb"), eb.nfs_share(NAME, "share-nfs"))
    (finding,) = of(snapshot, "files-smb-share")
    assert finding.subjects == ("share-smb",)
    assert finding.severity is Severity.MEDIUM
    assert details(finding)["enabledProtocols"] == "SMB"


def test_files_smb_share_negative() -> None:
    assert of(read(eb.member(NAME), eb.nfs_share(NAME)), "files-smb-share") == []
    assert of(read(eb.member(NAME)), "files-smb-share") == []


def test_shares_of_a_block_blob_account_are_not_judged() -> None:
    # BlockBlobStorage has no Azure Files endpoint: the reader does not list shares there.
    snapshot = read(eb.member(NAME, "nfs"), eb.smb_share(NAME))
    assert snapshot.file_shares == ()
    assert of(snapshot, "files-smb-share") == []
