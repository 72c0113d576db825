"""unmanaged-disk: VM disks kept as VHDs in the account."""

from __future__ import annotations

from tests import estate_builder as eb
from tests.rule_helpers import NAME, of, read
from tests.sample_estate import account_id


def test_unmanaged_disk_one_finding_for_the_three_vhds_of_the_official_vm() -> None:
    (finding,) = of(read(eb.member(NAME), eb.legacy_vm(NAME)), "unmanaged-disk")
    assert finding.key == f"unmanaged-disk|{account_id(NAME).lower()}|"
    assert finding.subjects == ("vm-legacy-app/datadisk0", "vm-legacy-app/datadisk1", "vm-legacy-app/myvmosdisk")
    assert finding.summary == (
        "VM 'vm-legacy-app' keeps 3 disks as VHDs in this account: 'dataDisk0', 'dataDisk1', 'myVMosdisk'"
    )
    os_disk = finding.evidence[2]
    assert "OS disk" in os_disk["summary"] and os_disk["disk"] == "myVMosdisk"
    assert os_disk["vhdUri"] == f"http://{NAME}.blob.core.windows.net/vhds/myDisk.vhd"


def test_unmanaged_disk_negative_when_the_vhds_live_in_another_account() -> None:
    # ``stprobe01x`` starts with this account's name: only the URI host decides.
    assert of(read(eb.member(NAME), eb.legacy_vm(f"{NAME}x")), "unmanaged-disk") == []
    assert of(read(eb.member(NAME)), "unmanaged-disk") == []
