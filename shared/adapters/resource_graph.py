"""Resource Graph reads for the sweep: one query lists what would take thousands of ARM GETs.

Three queries (``QUERIES``), each answered 1,000 rows a page with ``$skipToken``, over
subscriptions (in groups of at most 1,000 per request) or management groups:

- ``accounts``: every storage account in scope with a compact summary (``AccountSummary``: kind,
  public network access, SFTP, NFS v3, HNS, encryption key source and vault URI, network ACL
  default action, private endpoint count) and its ``summary_digest``;
- ``vhd-vms``: virtual machines with unmanaged (VHD) disks and their VHD URIs (``VhdVm``);
- ``blob-backups``: Data Protection backup instances of blob data sources, from
  ``RecoveryServicesResources`` (``BlobBackupInstance``).

``GraphInventory.reason_to_evaluate`` says which accounts the sweep must re-read: new ones, those
whose summary digest differs from the stored state, and perimeter accounts whose VHD VMs or blob
backup instances differ from what their last evaluation saw. Drift in child resources a summary
cannot show (object replication, lifecycle, shares...) arrives by event; the full ARM sweep runs
on a slower schedule for what events miss.

Quota: about 15 queries per 5 s per user. Every response carries ``x-ms-user-quota-remaining``
and ``x-ms-user-quota-resets-after`` (hh:mm:ss); ``GraphQuota`` waits for the window to reset
before a query that would exceed it. A 429 from Resource Graph that carries no ``Retry-After``
gets one derived from ``x-ms-user-quota-resets-after`` (in the response hook, before azure-core's
RetryPolicy reads it), so that policy, the only retry layer, waits exactly the window out.

The columns are null-safe in the KQL (``coalesce``) and ``summary_digest`` normalises the same
way, so a digest computed from a Resource Graph row equals the one computed from an ARM snapshot
(``summary_of_snapshot``) for an unchanged account: absent flags are false, an absent network
rule set is ``Allow``, an absent key source is ``Microsoft.Storage``.

``project_rows`` is the offline double of the three queries (used by ``shared.adapters.estate``):
it projects an ARM body the way the KQL does. SDK objects stop here: the reader returns frozen
dataclasses.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from shared.core.summary import AccountSummary, BlobBackupInstance, GraphInventory, VhdVm, _text

log = logging.getLogger(__name__)

PAGE_SIZE = 1000  # Resource Graph's maximum rows per response
MAX_SUBSCRIPTIONS_PER_QUERY = 1000
QUOTA_REMAINING = "x-ms-user-quota-remaining"
QUOTA_RESETS_AFTER = "x-ms-user-quota-resets-after"

QUERIES: dict[str, str] = {
    "accounts": """// nsp-drift:accounts
resources
| where type =~ 'microsoft.storage/storageaccounts'
| project id, kind, publicNetworkAccess = tostring(properties.publicNetworkAccess),
    isSftpEnabled = coalesce(tobool(properties.isSftpEnabled), false),
    isNfsV3Enabled = coalesce(tobool(properties.isNfsV3Enabled), false),
    isHnsEnabled = coalesce(tobool(properties.isHnsEnabled), false),
    keySource = tostring(properties.encryption.keySource),
    keyVaultUri = tostring(properties.encryption.keyvaultproperties.keyvaulturi),
    defaultAction = tostring(properties.networkAcls.defaultAction),
    privateEndpoints = coalesce(array_length(properties.privateEndpointConnections), 0)""",
    # No mv-expand (capped at 400 rows in Resource Graph, and it drops VMs without data disks):
    # one row per VM, the data disks' VHD URIs are picked out of the array client-side.
    "vhd-vms": """// nsp-drift:vhd-vms
resources
| where type =~ 'microsoft.compute/virtualmachines'
| extend osVhd = tostring(properties.storageProfile.osDisk.vhd.uri), dataDisks = properties.storageProfile.dataDisks
| where isnotempty(osVhd) or tostring(dataDisks) contains '"vhd"'
| project id, osVhd, dataDisks""",
    "blob-backups": """// nsp-drift:blob-backups
recoveryservicesresources
| where type =~ 'microsoft.dataprotection/backupvaults/backupinstances'
| where tostring(properties.dataSourceInfo.datasourceType) startswith 'Microsoft.Storage/storageAccounts'
| project id, storageAccountId = tolower(tostring(properties.dataSourceInfo.resourceID)),
    policyId = tostring(properties.policyInfo.policyId),
    protectionState = tostring(properties.currentProtectionState)""",
}


def _normalised(query: str) -> str:
    return " ".join(query.split())


_BY_TEXT = {_normalised(text): name for name, text in QUERIES.items()}


def query_name(query: str) -> str | None:
    """Which of nsp-drift's queries this text is (whitespace-insensitive), or None."""
    return _BY_TEXT.get(_normalised(query))


# -- our types ----------------------------------------------------------------------------------

# (AccountSummary, summary_digest, VhdVm, BlobBackupInstance, GraphInventory: shared.core.summary)


# -- the offline double -------------------------------------------------------------------------


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
                "publicNetworkAccess": _text(_get(props, "publicNetworkAccess")),
                "isSftpEnabled": _get(props, "isSftpEnabled") is True,
                "isNfsV3Enabled": _get(props, "isNfsV3Enabled") is True,
                "isHnsEnabled": _get(props, "isHnsEnabled") is True,
                "keySource": _text(_get(props, "encryption", "keySource")),
                "keyVaultUri": _text(_get(props, "encryption", "keyvaultproperties", "keyvaulturi")),
                "defaultAction": _text(_get(props, "networkAcls", "defaultAction")),
                "privateEndpoints": len(pes) if isinstance(pes, list) else 0,
            }
        ]
    if query == "vhd-vms" and rtype == "microsoft.compute/virtualmachines":
        profile = _get(body, "properties", "storageProfile") or {}
        os_vhd = _text(_get(profile, "osDisk", "vhd", "uri"))
        disks = _get(profile, "dataDisks")
        if os_vhd or '"vhd"' in json.dumps(disks):
            return [{"id": resource_id, "osVhd": os_vhd, "dataDisks": disks}]
        return []
    if query == "blob-backups" and rtype == "microsoft.dataprotection/backupvaults/backupinstances":
        info = _get(body, "properties", "dataSourceInfo") or {}
        if _text(info.get("datasourceType")).startswith("Microsoft.Storage/storageAccounts"):
            return [
                {
                    "id": resource_id,
                    "storageAccountId": _text(info.get("resourceID")).lower(),
                    "policyId": _text(_get(body, "properties", "policyInfo", "policyId")),
                    "protectionState": _text(_get(body, "properties", "currentProtectionState")),
                }
            ]
    return []


# -- quota and the reader -------------------------------------------------------------------------


def parse_quota_reset(text: str | None, default: float = 5.0) -> float:
    """``x-ms-user-quota-resets-after`` is hh:mm:ss (seconds may carry a fraction)."""
    if not text:
        return default
    try:
        h, m, s = (float(x) for x in text.strip().split(":"))
    except ValueError:
        return default
    return max(h * 3600 + m * 60 + s, 0.0)


class GraphQuota:
    """The caller's Resource Graph quota as the last response described it."""

    def __init__(
        self,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._sleep = sleep
        self._clock = clock
        self._lock: asyncio.Lock | None = None
        self._answered: asyncio.Event | None = None
        self.remaining: int | None = None  # None: unknown (fresh window)
        self.resets_at = 0.0
        self._in_flight = 0
        self.waits = 0
        self.waited_seconds = 0.0
        self.throttled = 0

    async def acquire(self) -> None:
        """Wait until this query fits the quota, then take a unit of it. While the quota is unknown
        (first query, or a window that has reset) one query goes alone and its answer tells."""
        if self._lock is None or self._answered is None:
            self._lock, self._answered = asyncio.Lock(), asyncio.Event()
        async with self._lock:  # waiters queue up: one decides at a time
            while True:
                now = self._clock()
                if self.remaining is not None and now >= self.resets_at:
                    self.remaining = None  # the window reset since the last answer
                if self.remaining is None:
                    if self._in_flight == 0:
                        break
                    self._answered.clear()
                    await self._answered.wait()  # the probe's answer (or failure) comes first
                    continue
                if self.remaining - self._in_flight > 0:
                    break
                wait = max(self.resets_at - now, 0.0)
                log.info("Resource Graph quota used up; waiting %.2fs for the window to reset", wait)
                self.waits += 1
                self.waited_seconds += wait
                await self._sleep(wait)
                self.remaining = None
            self._in_flight += 1

    def release(self) -> None:
        self._in_flight = max(self._in_flight - 1, 0)
        if self._answered is not None:
            self._answered.set()

    def observe(self, status: int, headers: Any) -> None:
        """Every attempt's response (the hook runs inside azure-core's retry loop)."""
        remaining = str(headers.get(QUOTA_REMAINING) or "").strip()
        reset = parse_quota_reset(headers.get(QUOTA_RESETS_AFTER))
        if remaining.lstrip("-").isdigit():
            self.remaining = int(remaining)
            self.resets_at = self._clock() + reset
        if status == 429:
            self.throttled += 1
            self.remaining, self.resets_at = 0, max(self.resets_at, self._clock() + reset)
            if not headers.get("Retry-After"):
                # Tell azure-core's RetryPolicy (the only retry layer) how long the window lasts.
                headers["Retry-After"] = str(max(1, int(reset + 0.999)))


class ResourceGraphReader:
    """Pages through nsp-drift's queries with azure-mgmt-resourcegraph (async client)."""

    def __init__(
        self,
        client: Any,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        quota: GraphQuota | None = None,
        page_size: int = PAGE_SIZE,
    ) -> None:
        self._client = client
        self.quota = quota or GraphQuota(sleep)
        self.page_size = page_size
        self.queries_sent = 0

    async def rows(
        self, name: str, subscriptions: Sequence[str] = (), management_groups: Sequence[str] = ()
    ) -> list[dict[str, Any]]:
        """All rows of query ``name`` over the scope (subscriptions grouped 1,000 per request)."""
        if management_groups:
            return await self._pages(name, {"management_groups": list(management_groups)})
        subs = list(dict.fromkeys(s.lower() for s in subscriptions))
        if not subs:
            raise ValueError("a Resource Graph query needs subscriptions or management groups")
        out: list[dict[str, Any]] = []
        for start in range(0, len(subs), MAX_SUBSCRIPTIONS_PER_QUERY):
            out.extend(await self._pages(name, {"subscriptions": subs[start : start + MAX_SUBSCRIPTIONS_PER_QUERY]}))
        return out

    async def _pages(self, name: str, scope: dict[str, Any]) -> list[dict[str, Any]]:
        from azure.mgmt.resourcegraph.models import QueryRequest, QueryRequestOptions

        quota = self.quota

        def hook(response: Any) -> None:
            http = response.http_response
            quota.observe(http.status_code, http.headers)

        rows: list[dict[str, Any]] = []
        skip: str | None = None
        while True:
            request = QueryRequest(
                query=QUERIES[name],
                options=QueryRequestOptions(skip_token=skip, top=self.page_size, result_format="objectArray"),
                **scope,
            )
            await quota.acquire()
            try:
                result = await self._client.resources(request, raw_response_hook=hook)
            finally:
                quota.release()
            self.queries_sent += 1
            data = result.data or []
            rows.extend(dict(r) for r in data if isinstance(r, Mapping))
            if str(getattr(result, "result_truncated", "")).lower() == "true":
                log.warning("Resource Graph truncated the %s query's result (no id column to page on?)", name)
            skip = result.skip_token
            if not skip:
                return rows

    async def account_summaries(
        self, subscriptions: Sequence[str] = (), management_groups: Sequence[str] = ()
    ) -> list[AccountSummary]:
        rows = await self.rows("accounts", subscriptions, management_groups)
        return [AccountSummary.from_row(r) for r in rows]

    async def vhd_vms(self, subscriptions: Sequence[str] = (), management_groups: Sequence[str] = ()) -> list[VhdVm]:
        rows = await self.rows("vhd-vms", subscriptions, management_groups)
        return [vm for vm in (VhdVm.from_row(r) for r in rows) if vm.vhd_uris]

    async def blob_backups(
        self, subscriptions: Sequence[str] = (), management_groups: Sequence[str] = ()
    ) -> list[BlobBackupInstance]:
        rows = await self.rows("blob-backups", subscriptions, management_groups)
        return [BlobBackupInstance.from_row(r) for r in rows]

    async def inventory(
        self, subscriptions: Sequence[str] = (), management_groups: Sequence[str] = ()
    ) -> GraphInventory:
        """The three queries concurrently (pages of one query follow each other)."""
        before = self.queries_sent
        accounts, vms, backups = await asyncio.gather(
            self.account_summaries(subscriptions, management_groups),
            self.vhd_vms(subscriptions, management_groups),
            self.blob_backups(subscriptions, management_groups),
        )
        return GraphInventory(tuple(accounts), tuple(vms), tuple(backups), self.queries_sent - before)
