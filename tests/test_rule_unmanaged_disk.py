"""unmanaged-disk: VM disks kept as VHDs in the account."""

from __future__ import annotations

from tests import estate_builder as eb
from tests.rule_helpers import NAME, of, read


def test_unmanaged_disk_positive_for_each_vhd_of_the_official_vm() -> None:
    findings = of(read(eb.member(NAME), eb.legacy_vm(NAME)), "unmanaged-disk")
    assert sorted(f.subject for f in findings) == [
        "vm-legacy-app/datadisk0",
        "vm-legacy-app/datadisk1",
        "vm-legacy-app/myvmosdisk",
    ]
    os_disk = next(f for f in findings if f.subject.endswith("myvmosdisk"))
    assert "OS disk" in os_disk.summary
    assert os_disk.evidence["vhdUri"] == f"http://{NAME}.blob.core.windows.net/vhds/myDisk.vhd"


def test_unmanaged_disk_negative_when_the_vhds_live_in_another_account() -> None:
    # ``stprobe01x`` starts with this account's name: only the URI host decides.
    assert of(read(eb.member(NAME), eb.legacy_vm(f"{NAME}x")), "unmanaged-disk") == []
    assert of(read(eb.member(NAME)), "unmanaged-disk") == []
