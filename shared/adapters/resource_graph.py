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
import hashlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

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

_BOOL_FIELDS = ("isSftpEnabled", "isNfsV3Enabled", "isHnsEnabled")
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


def _text(value: Any) -> str:
    if value is None:
        return ""
    return str(getattr(value, "value", value))


def _flag(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() == "true"
    return bool(value)


def _count(value: Any) -> int:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    if isinstance(value, list | tuple):
        return len(value)
    return 0


@dataclass(frozen=True)
class AccountSummary:
    """One storage account as the ``accounts`` query sees it."""

    id: str
    kind: str = ""
    public_network_access: str = ""
    is_sftp_enabled: bool = False
    is_nfs_v3_enabled: bool = False
    is_hns_enabled: bool = False
    key_source: str = ""
    key_vault_uri: str = ""
    default_action: str = ""
    private_endpoints: int = 0
    digest: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if not self.digest:
            object.__setattr__(self, "digest", summary_digest(self))

    @property
    def name(self) -> str:
        return self.id.rstrip("/").rsplit("/", 1)[-1]

    @property
    def subscription_id(self) -> str:
        parts = self.id.strip("/").split("/")
        return parts[1].lower() if len(parts) > 1 else ""

    def fields(self) -> dict[str, Any]:
        """The summary under the query's column names."""
        return {
            "kind": self.kind,
            "publicNetworkAccess": self.public_network_access,
            "isSftpEnabled": self.is_sftp_enabled,
            "isNfsV3Enabled": self.is_nfs_v3_enabled,
            "isHnsEnabled": self.is_hns_enabled,
            "keySource": self.key_source,
            "keyVaultUri": self.key_vault_uri,
            "defaultAction": self.default_action,
            "privateEndpoints": self.private_endpoints,
        }

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> AccountSummary:
        return cls(
            id=_text(row.get("id")),
            kind=_text(row.get("kind")),
            public_network_access=_text(row.get("publicNetworkAccess")),
            is_sftp_enabled=_flag(row.get("isSftpEnabled")),
            is_nfs_v3_enabled=_flag(row.get("isNfsV3Enabled")),
            is_hns_enabled=_flag(row.get("isHnsEnabled")),
            key_source=_text(row.get("keySource")) or "Microsoft.Storage",  # ARM's defaults when absent
            key_vault_uri=_text(row.get("keyVaultUri")),
            default_action=_text(row.get("defaultAction")) or "Allow",
            private_endpoints=_count(row.get("privateEndpoints")),
        )


def _digest_value(key: str, value: Any) -> Any:
    if key in _BOOL_FIELDS:
        return _flag(value)
    if key == "privateEndpoints":
        return _count(value)
    text = _text(value).lower()
    if key == "keySource":
        return text or "microsoft.storage"  # ARM's default when omitted
    if key == "defaultAction":
        return text or "allow"  # no network rule set: everything is allowed
    return text


def summary_digest(summary: AccountSummary | Mapping[str, Any]) -> str:
    """A short digest of the summary fields; equal from a Resource Graph row, an ``AccountSummary``
    and a snapshot (``summary_of_snapshot``) of the same account."""
    fields = summary.fields() if isinstance(summary, AccountSummary) else summary
    normalised = {k: _digest_value(k, fields.get(k)) for k in _SUMMARY_FIELDS}
    return hashlib.sha256(json.dumps(normalised, sort_keys=True).encode()).hexdigest()[:24]


def summary_of_snapshot(snapshot: Any) -> dict[str, Any]:
    """The summary fields of a ``StorageAccountSnapshot`` (the state stores its digest)."""
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


def account_name_of_vhd(uri: str) -> str:
    """``https://{account}.blob.core.windows.net/...`` -> ``account`` (lower case)."""
    return uri.split("://", 1)[-1].split(".", 1)[0].split("/", 1)[0].lower()


@dataclass(frozen=True)
class VhdVm:
    """A virtual machine with unmanaged disks and where its VHDs live."""

    id: str
    vhd_uris: tuple[str, ...]

    @property
    def subscription_id(self) -> str:
        parts = self.id.strip("/").split("/")
        return parts[1].lower() if len(parts) > 1 else ""

    @property
    def account_names(self) -> frozenset[str]:
        return frozenset(account_name_of_vhd(u) for u in self.vhd_uris)

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> VhdVm:
        uris = [_text(row.get("osVhd"))]
        disks = row.get("dataDisks")
        for disk in disks if isinstance(disks, list) else ():
            uris.append(_text(_get(disk, "vhd", "uri")))
        return cls(_text(row.get("id")), tuple(u for u in uris if u))


@dataclass(frozen=True)
class BlobBackupInstance:
    """A Data Protection backup instance whose data source is a storage account's blobs."""

    id: str
    storage_account_id: str  # lower case
    policy_id: str
    protection_state: str = ""

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> BlobBackupInstance:
        return cls(
            _text(row.get("id")),
            _text(row.get("storageAccountId")).lower(),
            _text(row.get("policyId")),
            _text(row.get("protectionState")),
        )


class StoredAccount(Protocol):
    """What the sweep compares against (``shared.state.base.AccountState`` fits)."""

    @property
    def summary_digest(self) -> str: ...
    @property
    def associations(self) -> Sequence[Any]: ...
    @property
    def vm_ids(self) -> Sequence[str]: ...
    @property
    def backup_instance_ids(self) -> Sequence[str]: ...


@dataclass(frozen=True)
class GraphInventory:
    """The three queries' answers for one scope, indexed for the sweep's change test."""

    accounts: tuple[AccountSummary, ...]
    vhd_vms: tuple[VhdVm, ...] = ()
    blob_backups: tuple[BlobBackupInstance, ...] = ()
    queries: int = 0
    _vms_by_account: dict[tuple[str, str], frozenset[str]] = field(
        default_factory=dict, init=False, compare=False, repr=False
    )
    _backups_by_account: dict[str, frozenset[str]] = field(default_factory=dict, init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        vms: dict[tuple[str, str], set[str]] = {}
        for vm in self.vhd_vms:
            for name in vm.account_names:
                vms.setdefault((vm.subscription_id, name), set()).add(vm.id.lower())
        backups: dict[str, set[str]] = {}
        for instance in self.blob_backups:
            backups.setdefault(instance.storage_account_id, set()).add(instance.id.lower())
        self._vms_by_account.update({k: frozenset(v) for k, v in vms.items()})
        self._backups_by_account.update({k: frozenset(v) for k, v in backups.items()})

    def vm_ids_for(self, summary: AccountSummary) -> frozenset[str]:
        """VMs of the account's subscription with VHDs in it (what the ARM reader looks at)."""
        return self._vms_by_account.get((summary.subscription_id, summary.name.lower()), frozenset())

    def backup_ids_for(self, summary: AccountSummary) -> frozenset[str]:
        return self._backups_by_account.get(summary.id.lower(), frozenset())

    def reason_to_evaluate(self, summary: AccountSummary, stored: StoredAccount | None) -> str | None:
        """Why the sweep must re-read this account, or None when nothing it can see changed."""
        if stored is None:
            return "new"
        if stored.summary_digest != summary.digest:
            return "summary"
        if stored.associations:  # features are only read (and stored) for perimeter accounts
            if {v.lower() for v in stored.vm_ids} != self.vm_ids_for(summary):
                return "unmanaged-disks"
            if {b.lower() for b in stored.backup_instance_ids} != self.backup_ids_for(summary):
                return "backup-instances"
        return None


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
