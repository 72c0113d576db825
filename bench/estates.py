"""Estates for the benchmark and the server tests: N copies of the sample's clean account, with
the child resources and neighbours an enterprise estate has.

Every body is a copy of one in the bundled sample estate (``shared/samples/estate.json``, which
``tests/sample_estate.py`` builds from the official Azure REST API examples: never a hand-written
response shape), renamed:

- accounts: ``stcontosoclean01`` (StorageV2), with its NSP configuration for every n-th one, so
  it is associated with the sample perimeter ``nsp-contoso-data`` (profile ``profile-strict``);
  the others have ``publicNetworkAccess`` ``Enabled`` (as the sample's accounts outside the
  perimeter), not the member's ``SecuredByPerimeter``;
- ``features_every``: every n-th account of the perimeter also has what the feature rules read:
  the NFS and SMB shares of ``stcontosofiles01``, a VM with unmanaged OS and data disks whose VHDs
  live in it (``vm-legacy-app``, the official unmanaged-disks VM example) and a blob backup instance
  (``stcontosobkp01``'s, the official extension-routing example) under the sample vault with its
  two policies (the official ``GetBackupPolicy`` example);
- changes, for an "after" estate: ``sftp`` turns SFTP on (a change the Resource Graph summary
  shows), ``vhd_vms``/``backups`` add a VHD VM or a backup instance (changes it does not show),
  ``rule_change`` adds an address prefix to ``profile-strict``'s inbound rule and bumps its
  ``accessRulesVersion`` in the profile and in every member's NSP configuration (what ARM shows after
  one access-rule write).

Paging: ``Estate(build_estate(...), page_size=n)`` answers every list in pages of ``n`` with
``nextLink`` (the bench uses it for every list: accounts, VMs, shares, backup instances...).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SUB = "6e1c6f2a-5b7d-4c8e-9f10-2a3b4c5d6e7f"
_VAULT = f"/subscriptions/{SUB}/resourceGroups/rg-backup/providers/Microsoft.DataProtection/backupVaults/bv-contoso"
_NSP = f"/subscriptions/{SUB}/resourceGroups/rg-network/providers/Microsoft.Network/networkSecurityPerimeters/nsp-contoso-data"
PROFILE = "profile-strict"
CHANGED_RULE = f"{_NSP}/profiles/{PROFILE}/accessRules/allow-corp-egress"
ADDED_PREFIX = "10.12.0.0/24"  # narrow: the rule change itself is the only finding
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


def _ending(suffix: str) -> tuple[str, Any]:
    """The sample's (id, body) whose id ends with ``suffix`` (or contains it, for long names)."""
    return next((k, v) for k, v in sample().items() if k.endswith(suffix) or suffix in k)


def _text(suffix: str) -> str:
    return json.dumps(_ending(suffix)[1])


def account_name(i: int) -> str:
    return f"stbench{i:05d}"


def vm_name(i: int) -> str:
    return f"vm-bench-{i:05d}"


def _add(estate: dict[str, Any], text: str) -> None:
    body = json.loads(text)
    estate[body["id"]] = body


def build_estate(
    accounts: int,
    in_perimeter_every: int = 10,
    sftp: set[int] | None = None,
    vhd_vms: set[int] | None = None,
    backups: set[int] | None = None,
    features_every: int | None = None,
    rule_change: bool = False,
) -> dict[str, Any]:
    """``accounts`` copies of the sample's clean account; every n-th one in the perimeter."""
    account, config = _template("stcontosoclean01")
    account_text = json.dumps(account)
    config_text = json.dumps(config) if config is not None else ""
    association_text = _text("/resourceAssociations/assoc-clean01")
    vm_text, backup_text = _text("/virtualMachines/vm-legacy-app"), _text("/backupInstances/stcontosobkp01-")
    share_texts = [_text("/stcontosofiles01/fileServices/default/shares/share-nfs"), _text("/shares/share-smb")]
    estate: dict[str, Any] = {k: copy.deepcopy(v) for k, v in sample().items() if "/networkSecurityPerimeters/" in k}
    estate = {k: v for k, v in estate.items() if "/resourceAssociations/" not in k}  # the sample's own members
    featured = {
        i
        for i in range(0, accounts, in_perimeter_every)
        if features_every and (i // in_perimeter_every) % features_every == 1
    }
    if backups or featured:  # the sample's vault and its policies (the instances point at them)
        estate.update({k: v for k, v in sample().items() if k.startswith(_VAULT) and "/backupInstances/" not in k})
    if rule_change:
        _change_rule(estate)
    for i in range(accounts):
        name = account_name(i)
        body = json.loads(account_text.replace("stcontosoclean01", name))
        if sftp and i in sftp:
            body["properties"]["isSftpEnabled"] = True
        if i % in_perimeter_every:
            # Outside a perimeter an account is not SecuredByPerimeter (the template is a member's
            # copy): the value the sample's accounts outside the perimeter have.
            body["properties"]["publicNetworkAccess"] = "Enabled"
        estate[body["id"]] = body
        if config_text and i % in_perimeter_every == 0:
            cfg = json.loads(config_text.replace("assoc-clean01", f"assoc-{name}").replace("stcontosoclean01", name))
            if rule_change:
                _change_configuration(cfg)
            estate[cfg["id"]] = cfg
            _add(estate, association_text.replace("assoc-clean01", f"assoc-{name}").replace("stcontosoclean01", name))
        if i in featured:
            for text in share_texts:
                _add(estate, text.replace("stcontosofiles01", name))
        if i in featured or (vhd_vms and i in vhd_vms):
            _add(estate, vm_text.replace("stcontosovhd01", name).replace("vm-legacy-app", vm_name(i)))
        if i in featured or (backups and i in backups):
            _add(estate, backup_text.replace("stcontosobkp01", name))
    return estate


def _change_rule(estate: dict[str, Any]) -> None:
    rule = estate[CHANGED_RULE]
    rule["properties"]["addressPrefixes"] = [*rule["properties"]["addressPrefixes"], ADDED_PREFIX]
    profile = estate[f"{_NSP}/profiles/{PROFILE}"]
    profile["properties"]["accessRulesVersion"] = str(int(profile["properties"]["accessRulesVersion"]) + 1)


def _change_configuration(cfg: dict[str, Any]) -> None:
    profile = cfg["properties"]["profile"]
    if profile.get("name") != PROFILE:
        return
    profile["accessRulesVersion"] = int(profile["accessRulesVersion"]) + 1
    for rule in profile["accessRules"]:
        if rule["name"] == CHANGED_RULE.rsplit("/", 1)[-1]:
            rule["properties"]["addressPrefixes"] = [*rule["properties"]["addressPrefixes"], ADDED_PREFIX]


def account_ids(estate: dict[str, Any]) -> list[str]:
    return [k for k in estate if k.count("/") == 8 and "/storageAccounts/" in k]


def members(estate: dict[str, Any]) -> list[str]:
    """The accounts with an NSP configuration (associated with the perimeter)."""
    return [k.split("/networkSecurityPerimeterConfigurations/")[0] for k in estate if "/networkSecurityPerimeterConfigurations/" in k]
