"""Estates for the benchmark and the server tests: N copies of the sample's clean account.

The approach of ``tests/test_pipeline.py``'s storm: copies of ``stcontosoclean01`` (with its NSP
configuration for every n-th one, so it is in the perimeter), plus the perimeters themselves;
``sftp`` turns SFTP on for the given indexes (a change the Resource Graph summary shows), and
``vhd_vms``/``backups`` add VMs with unmanaged disks and blob backup instances.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SUB = "6e1c6f2a-5b7d-4c8e-9f10-2a3b4c5d6e7f"
_VAULT = f"/subscriptions/{SUB}/resourceGroups/rg-backup/providers/Microsoft.DataProtection/backupVaults/bv-contoso"
_SAMPLE: dict[str, Any] | None = None


def sample() -> dict[str, Any]:
    global _SAMPLE
    if _SAMPLE is None:
        _SAMPLE = json.loads((ROOT / "shared" / "samples" / "estate.json").read_text())
    return _SAMPLE


def _template(name: str) -> tuple[dict[str, Any], dict[str, Any] | None]:
    data = sample()
    account = next(v for k, v in data.items() if k.endswith(f"/storageAccounts/{name}"))
    config = next((v for k, v in data.items() if f"/{name}/networkSecurityPerimeterConfigurations/" in k), None)
    return account, config


def account_name(i: int) -> str:
    return f"stbench{i:05d}"


def build_estate(
    accounts: int,
    in_perimeter_every: int = 10,
    sftp: set[int] | None = None,
    vhd_vms: set[int] | None = None,
    backups: set[int] | None = None,
) -> dict[str, Any]:
    """``accounts`` copies of the sample's clean account; every n-th one in the perimeter."""
    account, config = _template("stcontosoclean01")
    account_text = json.dumps(account)
    config_text = json.dumps(config) if config is not None else ""
    estate: dict[str, Any] = {k: v for k, v in sample().items() if "/networkSecurityPerimeters/" in k}
    if backups:  # the sample's vault and its policies (instances below point at them)
        estate.update({k: v for k, v in sample().items() if k.startswith(_VAULT) and "/backupInstances/" not in k})
    for i in range(accounts):
        name = account_name(i)
        body = json.loads(account_text.replace("stcontosoclean01", name))
        if sftp and i in sftp:
            body["properties"]["isSftpEnabled"] = True
        estate[body["id"]] = body
        if config_text and i % in_perimeter_every == 0:
            cfg = json.loads(config_text.replace("stcontosoclean01", name))
            estate[cfg["id"]] = cfg
        rg_scope = body["id"].split("/providers/")[0]
        if vhd_vms and i in vhd_vms:
            vm_id = f"{rg_scope}/providers/Microsoft.Compute/virtualMachines/vm-bench-{i:05d}"
            estate[vm_id] = {
                "id": vm_id,
                "name": f"vm-bench-{i:05d}",
                "type": "Microsoft.Compute/virtualMachines",
                "location": body.get("location", "westeurope"),
                "properties": {
                    "storageProfile": {
                        "osDisk": {
                            "name": "osdisk",
                            "createOption": "FromImage",
                            "vhd": {"uri": f"https://{name}.blob.core.windows.net/vhds/os-{i}.vhd"},
                        },
                        "dataDisks": [
                            {
                                "lun": 0,
                                "name": "data0",
                                "createOption": "Empty",
                                "vhd": {"uri": f"https://{name}.blob.core.windows.net/vhds/data-{i}.vhd"},
                            }
                        ],
                    }
                },
            }
        if backups and i in backups:
            instance_id = f"{_VAULT}/backupInstances/{name}-blob"
            estate[instance_id] = {
                "id": instance_id,
                "name": f"{name}-blob",
                "type": "Microsoft.DataProtection/backupVaults/backupInstances",
                "properties": {
                    "friendlyName": f"{name}-blob",
                    "dataSourceInfo": {
                        "resourceID": body["id"],
                        "datasourceType": "Microsoft.Storage/storageAccounts/blobServices",
                        "objectType": "Datasource",
                        "resourceName": name,
                        "resourceType": "Microsoft.Storage/storageAccounts",
                    },
                    "policyInfo": {"policyId": f"{_VAULT}/backupPolicies/policy-blob-operational"},
                    "currentProtectionState": "ProtectionConfigured",
                    "objectType": "BackupInstance",
                },
            }
    return estate


def account_ids(estate: dict[str, Any]) -> list[str]:
    return [k for k in estate if k.count("/") == 8 and "/storageAccounts/" in k]
