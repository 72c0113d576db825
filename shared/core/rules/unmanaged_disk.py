from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from shared.core.changes import ACCOUNT_CHANGES, TargetKind
from shared.core.model import Severity, StorageAccountSnapshot
from shared.core.rules.base import BRIEF_2025_06, LEARN_2025_07, Hit, Rule, RuleParams, quoted


def check(account: StorageAccountSnapshot, params: RuleParams) -> Iterator[Hit]:
    for disk in account.unmanaged_disks:
        vm_name = disk.vm_id.rstrip("/").rsplit("/", 1)[-1]
        kind = "OS" if disk.is_os_disk else "data"
        yield Hit(
            f"VM '{vm_name}' keeps its {kind} disk '{disk.disk_name}' as a VHD in this account",
            {"vm": disk.vm_id, "disk": disk.disk_name, "vhdUri": disk.vhd_uri},
            subject=f"{vm_name}/{disk.disk_name}".lower(),
        )


def summarize(items: Sequence[Mapping[str, Any]]) -> str:
    vms = [str(item.get("vm", "")).rstrip("/").rsplit("/", 1)[-1] for item in items]
    disks = quoted((item.get("disk", "") for item in items), shown=len(items))
    who = f"VM {quoted(vms)} keeps" if len(set(vms)) == 1 else f"VMs {quoted(vms)} keep"
    return f"{who} {len(items)} disks as VHDs in this account: {disks}"


RULE = Rule(
    id="unmanaged-disk",
    title="Unmanaged VM disk (VHD) stored in a perimeter-protected account",
    severity=Severity.HIGH,
    sources=(BRIEF_2025_06, LEARN_2025_07),
    reason="Unmanaged disks (VHDs in page blobs) do not honour network security perimeter rules.",
    remediation=(
        "Migrate the VM to managed disks (`az vm convert`), then delete the VHD blobs; unmanaged disks are "
        "also retired by Azure."
    ),
    check=check,
    judged_by=ACCOUNT_CHANGES | {TargetKind.VIRTUAL_MACHINE},
    references=frozenset({TargetKind.VIRTUAL_MACHINE}),
    evidence="each VHD: its VM, disk name and blob URI",
    summarize=summarize,
)
