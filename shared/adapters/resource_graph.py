"""Resource Graph reads for the sweep: one query lists what would take thousands of ARM GETs.

The sweep lists storage accounts (with a compact summary), VMs with unmanaged disks and blob
backup instances in scope, 1,000 rows a page with ``$skipToken``, and backs off when
``x-ms-user-quota-remaining`` runs out (about 15 queries per 5 s per user). Accounts whose
summary did not change since the stored state are not re-read (their drift arrives by event;
a full sweep still runs on a slower schedule, see Pipeline.sweep).

``project_rows`` is the offline double of the three queries (used by the estate transport): it
projects an ARM body the way the KQL below does.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

QUERIES: dict[str, str] = {
    "accounts": """// nsp-drift:accounts
resources
| where type =~ 'microsoft.storage/storageaccounts'
| project id, kind, publicNetworkAccess = tostring(properties.publicNetworkAccess),
    isSftpEnabled = tobool(properties.isSftpEnabled), isNfsV3Enabled = tobool(properties.isNfsV3Enabled),
    isHnsEnabled = tobool(properties.isHnsEnabled), keySource = tostring(properties.encryption.keySource),
    keyVaultUri = tostring(properties.encryption.keyvaultproperties.keyvaulturi),
    defaultAction = tostring(properties.networkAcls.defaultAction),
    privateEndpoints = array_length(properties.privateEndpointConnections)""",
    "vhd-vms": """// nsp-drift:vhd-vms
resources
| where type =~ 'microsoft.compute/virtualmachines'
| extend osVhd = tostring(properties.storageProfile.osDisk.vhd.uri)
| mv-expand dd = properties.storageProfile.dataDisks
| extend dataVhd = tostring(dd.vhd.uri)
| where isnotempty(osVhd) or isnotempty(dataVhd)
| project id, osVhd, dataVhd""",
    "blob-backups": """// nsp-drift:blob-backups
recoveryservicesresources
| where type =~ 'microsoft.dataprotection/backupvaults/backupinstances'
| where tostring(properties.dataSourceInfo.datasourceType) startswith 'Microsoft.Storage/storageAccounts'
| project id, storageAccountId = tolower(tostring(properties.dataSourceInfo.resourceID)),
    policyId = tostring(properties.policyInfo.policyId)""",
}

_SUMMARY_FIELDS = (
    "kind",
    "publicNetworkAccess",
    "isSftpEnabled",
    "isNfsV3Enabled",
    "isHnsEnabled",
    "keySource",
    "keyVaultUri",
    "defaultAction",
    "privateEndpoints",
)


@dataclass(frozen=True)
class AccountSummary:
    id: str
    digest: str


def _norm(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, bool | int):
        return value
    return str(getattr(value, "value", value)).lower()


def summary_digest(fields: Mapping[str, Any]) -> str:
    """Same digest from a Resource Graph row and from a snapshot (``summary_of_snapshot``)."""
    normalised = {k: _norm(fields.get(k)) for k in _SUMMARY_FIELDS}
    normalised["keySource"] = normalised["keySource"] or "microsoft.storage"  # ARM's default when omitted
    return hashlib.sha256(json.dumps(normalised, sort_keys=True).encode()).hexdigest()[:24]


def summary_of_snapshot(snapshot: Any) -> dict[str, Any]:
    return {
        "kind": snapshot.kind,
        "publicNetworkAccess": snapshot.public_network_access,
        "isSftpEnabled": snapshot.is_sftp_enabled,
        "isNfsV3Enabled": snapshot.is_nfs_v3_enabled,
        "isHnsEnabled": snapshot.is_hns_enabled,
        "keySource": snapshot.encryption.key_source,
        "keyVaultUri": snapshot.encryption.key_vault_uri,
        "defaultAction": snapshot.network_acls.default_action,
        "privateEndpoints": len(snapshot.private_endpoint_connections),
    }


def _get(body: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(body, Mapping):
            return None
        body = body.get(key)
    return body


def project_rows(query: str, resource_id: str, body: Mapping[str, Any]) -> list[dict[str, Any]]:
    """What the named query returns for one estate resource (the offline double)."""
    rtype = str(body.get("type", "")).lower()
    if query == "accounts" and rtype == "microsoft.storage/storageaccounts":
        props = body.get("properties") or {}
        pes = _get(props, "privateEndpointConnections")
        return [
            {
                "id": resource_id,
                "kind": body.get("kind"),
                "publicNetworkAccess": _get(props, "publicNetworkAccess"),
                "isSftpEnabled": bool(_get(props, "isSftpEnabled")),
                "isNfsV3Enabled": bool(_get(props, "isNfsV3Enabled")),
                "isHnsEnabled": bool(_get(props, "isHnsEnabled")),
                "keySource": _get(props, "encryption", "keySource"),
                "keyVaultUri": _get(props, "encryption", "keyvaultproperties", "keyvaulturi"),
                "defaultAction": _get(props, "networkAcls", "defaultAction"),
                "privateEndpoints": len(pes) if isinstance(pes, list) else 0,
            }
        ]
    if query == "vhd-vms" and rtype == "microsoft.compute/virtualmachines":
        profile = _get(body, "properties", "storageProfile") or {}
        os_vhd = _get(profile, "osDisk", "vhd", "uri") or ""
        data = [_get(d, "vhd", "uri") or "" for d in (_get(profile, "dataDisks") or [])] or [""]
        return [{"id": resource_id, "osVhd": os_vhd, "dataVhd": d} for d in data if os_vhd or d]
    if query == "blob-backups" and rtype == "microsoft.dataprotection/backupvaults/backupinstances":
        info = _get(body, "properties", "dataSourceInfo") or {}
        if str(info.get("datasourceType", "")).lower().startswith("microsoft.storage/storageaccounts"):
            return [
                {
                    "id": resource_id,
                    "storageAccountId": str(info.get("resourceID", "")).lower(),
                    "policyId": _get(body, "properties", "policyInfo", "policyId"),
                }
            ]
    return []


def parse_quota_reset(text: str | None) -> float:
    """``x-ms-user-quota-resets-after`` is hh:mm:ss."""
    if not text:
        return 5.0
    try:
        h, m, s = (float(x) for x in text.split(":"))
    except ValueError:
        return 5.0
    return h * 3600 + m * 60 + s


class ResourceGraphReader:
    """Pages through nsp-drift's queries with azure-mgmt-resourcegraph (async client)."""

    def __init__(self, client: Any, sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self._client = client
        self._sleep = sleep
        self.queries_sent = 0

    async def _rows(self, name: str, subscriptions: Sequence[str]) -> list[dict[str, Any]]:
        from azure.mgmt.resourcegraph.models import QueryRequest, QueryRequestOptions

        rows: list[dict[str, Any]] = []
        skip: str | None = None
        while True:
            quota: dict[str, str] = {}

            def hook(response: Any, quota: dict[str, str] = quota) -> None:
                headers = response.http_response.headers
                quota["remaining"] = headers.get("x-ms-user-quota-remaining", "")
                quota["reset"] = headers.get("x-ms-user-quota-resets-after", "")

            request = QueryRequest(
                subscriptions=list(subscriptions),
                query=QUERIES[name],
                options=QueryRequestOptions(skip_token=skip, top=1000, result_format="objectArray"),
            )
            result = await self._client.resources(request, raw_response_hook=hook)
            self.queries_sent += 1
            rows.extend(result.data or [])
            if quota.get("remaining", "").isdigit() and int(quota["remaining"]) <= 0:
                wait = parse_quota_reset(quota.get("reset"))
                log.info("Resource Graph quota used up; waiting %.1fs", wait)
                await self._sleep(wait)
            skip = result.skip_token
            if not skip:
                return rows

    async def account_summaries(self, subscriptions: Sequence[str]) -> list[AccountSummary]:
        rows = await self._rows("accounts", subscriptions)
        return [AccountSummary(str(r["id"]), summary_digest(r)) for r in rows]

    async def vhd_account_names(self, subscriptions: Sequence[str]) -> dict[str, set[str]]:
        """Account name -> VM ids whose VHDs live there."""
        found: dict[str, set[str]] = {}
        for row in await self._rows("vhd-vms", subscriptions):
            for uri in (row.get("osVhd"), row.get("dataVhd")):
                if uri:
                    name = str(uri).split("://", 1)[-1].split(".", 1)[0].lower()
                    found.setdefault(name, set()).add(str(row["id"]).lower())
        return found

    async def blob_backup_accounts(self, subscriptions: Sequence[str]) -> dict[str, set[str]]:
        """Account id (lower) -> backup instance ids."""
        found: dict[str, set[str]] = {}
        for row in await self._rows("blob-backups", subscriptions):
            found.setdefault(str(row["storageAccountId"]), set()).add(str(row["id"]).lower())
        return found
