"""The Azure reader: builds a StorageAccountSnapshot with the real azure-mgmt-* async clients.

SDK objects stop here: every public method returns our own dataclasses. Reads for one account
run concurrently in three rounds, each depending only on the one before:

1. the account itself and its ``networkSecurityPerimeterConfigurations`` (the NSP truth);
2. only for an account in a perimeter: object replication, lifecycle, inventory, blob service
   (static website), file shares (skipped for kinds without Azure Files), backup instances
   (extension routing; in the full sweep, ``read_listed``, the subscription's Backup vaults' lists
   instead, once per subscription per reader), the subscription's VMs (cached per reader: one list
   per subscription)
   and, for a CMK account, the perimeter's resource associations (cached per perimeter); a storage
   account event leaves out the VM list and the backup instances (``read_account``'s ``skip``,
   named in ``snapshot.not_read``: shared.service.pipeline.LINKED_READS);
3. the backup policies of the instances found (cached per policy).

A read that answers 404 means "not configured"; any other failure is recorded in
``snapshot.incomplete`` so the pipeline never resolves a finding on a partial read.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import partial
from typing import Any, Protocol, TypeVar

from shared.core import arm_ids
from shared.core.model import (
    AccessMode,
    AccessRule,
    AccountNotFound,
    BackupInstance,
    Encryption,
    FileShare,
    InventoryPolicy,
    InventoryRule,
    LifecycleRule,
    NetworkAcls,
    ObjectReplicationPolicy,
    PerimeterView,
    ProvisioningIssue,
    StorageAccountSnapshot,
    UnmanagedDisk,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

# Kinds whose accounts have no Azure Files endpoint: no share list to read.
_KINDS_WITHOUT_FILES = {"blockblobstorage", "blobstorage"}


class ClientFactory(Protocol):
    """Builds (and caches) the async management clients for one subscription."""

    def storage(self, subscription_id: str) -> Any: ...
    def network(self, subscription_id: str) -> Any: ...
    def compute(self, subscription_id: str) -> Any: ...
    def dataprotection(self, subscription_id: str) -> Any: ...
    def graph(self) -> Any: ...


def _s(value: Any) -> str:
    """SDK enums are str subclasses; give the wire text for both enums and plain strings."""
    if value is None:
        return ""
    return str(getattr(value, "value", value))


class ShapeError(ValueError):
    """ARM answered with a shape the snapshot cannot trust (e.g. a string where a list belongs)."""


def _seq(value: Any, what: str) -> list[Any]:
    """A list-valued property; None is empty, anything else that is not a list is a ShapeError
    (iterating a string character by character would silently read a broken answer as clean)."""
    if value is None:
        return []
    if isinstance(value, list | tuple):
        return list(value)
    raise ShapeError(f"{what}: expected a list, got {type(value).__name__}")


def _t(values: Any, what: str = "list property") -> tuple[str, ...]:
    return tuple(_s(v) for v in _seq(values, what) if v is not None)


def _attr(obj: Any, *path: str) -> Any:
    for name in path:
        if obj is None:
            return None
        obj = getattr(obj, name, None)
    return obj


def _wire(model: Any) -> dict[str, Any]:
    as_dict = getattr(model, "as_dict", None)
    if callable(as_dict):
        result = as_dict()
        return result if isinstance(result, dict) else {}
    return {}


def _collect(node: Any, key: str) -> list[str]:
    """All string values of ``key`` anywhere below a wire dict (policy rules are polymorphic)."""
    found: list[str] = []
    if isinstance(node, dict):
        for k, v in node.items():
            if k == key and isinstance(v, str):
                found.append(v)
            else:
                found.extend(_collect(v, key))
    elif isinstance(node, list):
        for item in node:
            found.extend(_collect(item, key))
    return found


def _is_not_found(exc: BaseException) -> bool:
    from azure.core.exceptions import ResourceNotFoundError

    return isinstance(exc, ResourceNotFoundError) or getattr(exc, "status_code", None) == 404


async def _decoded(make: Callable[[], Awaitable[T]], attempts: int = 3) -> T:
    """Re-issue a read whose 200 body could not be decoded (a truncated response). azure-core
    retries statuses and connection errors but never a DecodeError, so this adds no second layer
    on top of its retries: it covers the one case they do not."""
    from azure.core.exceptions import DecodeError

    for attempt in range(attempts):
        try:
            return await make()
        except DecodeError:
            if attempt == attempts - 1:
                raise
            log.info("response could not be decoded; reading again (%d/%d)", attempt + 2, attempts)
    raise AssertionError("unreachable")


async def _collect_pages(pager: Any) -> list[Any]:
    return [item async for item in pager]


# -- SDK model -> our types ---------------------------------------------------------------------


def perimeter_view_from_sdk(config: Any) -> PerimeterView:
    props = getattr(config, "properties", None)
    nsp = _attr(props, "network_security_perimeter")
    association = _attr(props, "resource_association")
    profile = _attr(props, "profile")
    rules = []
    for rule in _seq(_attr(profile, "access_rules"), "profile.accessRules"):
        rp = getattr(rule, "properties", None)
        rules.append(
            AccessRule(
                name=_s(getattr(rule, "name", "")),
                direction=_s(_attr(rp, "direction")),
                address_prefixes=_t(_attr(rp, "address_prefixes"), "accessRules.addressPrefixes"),
                subscriptions=tuple(
                    _s(getattr(s, "id", "")) for s in _seq(_attr(rp, "subscriptions"), "accessRules.subscriptions")
                ),
                fully_qualified_domain_names=_t(_attr(rp, "fully_qualified_domain_names"), "accessRules.fqdns"),
                service_tags=_t(_attr(rp, "service_tags"), "accessRules.serviceTags"),
                network_security_perimeters=tuple(
                    _s(getattr(p, "id", ""))
                    for p in _seq(_attr(rp, "network_security_perimeters"), "accessRules.networkSecurityPerimeters")
                ),
            )
        )
    issues = []
    for issue in _seq(_attr(props, "provisioning_issues"), "provisioningIssues"):
        ip = getattr(issue, "properties", None)
        wire = _wire(ip)
        issues.append(
            ProvisioningIssue(
                name=_s(getattr(issue, "name", "")),
                issue_type=_s(_attr(ip, "issue_type")),
                severity=_s(_attr(ip, "severity")),
                description=_s(_attr(ip, "description")),
                suggested_resource_ids=tuple(str(x) for x in wire.get("suggestedResourceIds", []) or []),
            )
        )
    version = _attr(profile, "access_rules_version")
    raw_mode = _s(_attr(association, "access_mode"))
    return PerimeterView(
        configuration_name=_s(getattr(config, "name", "")),
        perimeter_id=_s(_attr(nsp, "id")),
        perimeter_guid=_s(_attr(nsp, "perimeter_guid")),
        location=_s(_attr(nsp, "location")),
        association_name=_s(_attr(association, "name")),
        access_mode=AccessMode.parse(raw_mode),
        access_mode_raw=raw_mode,
        profile_name=_s(_attr(profile, "name")),
        access_rules_version=int(float(version)) if str(version).removesuffix(".0").isdigit() else None,
        access_rules=tuple(rules),
        provisioning_state=_s(_attr(props, "provisioning_state")),
        provisioning_issues=tuple(issues),
    )


def _network_acls(account: Any) -> NetworkAcls:
    acls = getattr(account, "network_rule_set", None)
    if acls is None:
        return NetworkAcls()
    return NetworkAcls(
        default_action=_s(getattr(acls, "default_action", "")) or "Allow",
        bypass=_s(getattr(acls, "bypass", "")),
        ip_rules=tuple(_s(getattr(r, "ip_address_or_range", "")) for r in (getattr(acls, "ip_rules", None) or ())),
        virtual_network_rules=tuple(
            _s(getattr(r, "virtual_network_resource_id", ""))
            for r in (getattr(acls, "virtual_network_rules", None) or ())
        ),
        resource_access_rules=tuple(
            _s(getattr(r, "resource_id", "")) for r in (getattr(acls, "resource_access_rules", None) or ())
        ),
    )


def _encryption(account: Any) -> Encryption:
    enc = getattr(account, "encryption", None)
    if enc is None:
        return Encryption()
    kv = getattr(enc, "key_vault_properties", None)
    return Encryption(
        key_source=_s(getattr(enc, "key_source", "")) or "Microsoft.Storage",
        key_vault_uri=_s(getattr(kv, "key_vault_uri", "")),
        key_name=_s(getattr(kv, "key_name", "")),
    )


def _vhds(vm: Any) -> list[tuple[Any, bool, str]]:
    """(disk, is OS disk, VHD URI) for every unmanaged disk of a VM."""
    profile = _attr(vm, "properties", "storage_profile") or _attr(vm, "storage_profile")
    candidates = [(_attr(profile, "os_disk"), True)] + [(d, False) for d in (_attr(profile, "data_disks") or ())]
    return [(disk, is_os, _s(_attr(disk, "vhd", "uri"))) for disk, is_os in candidates if _attr(disk, "vhd", "uri")]


# The api-versions of azure-mgmt-compute's own VM list (``build_virtual_machines_list_all_request``)
# and of azure-mgmt-dataprotection's requests (backup instances, vaults, policies); the account
# read uses them raw, without the SDKs' models (tests/test_reader.py keeps them equal).
COMPUTE_API_VERSION = "2026-04-01"
DATAPROTECTION_API_VERSION = "2026-06-01"


def _json(node: Any, *path: str) -> Any:
    """``node[path[0]][path[1]]...`` of raw JSON, None where a step is missing or not an object."""
    for name in path:
        node = node.get(name) if isinstance(node, Mapping) else None
    return node


def _dataprotection_request(resource_id: str, *children: str) -> Any:
    """A GET of ``resource_id`` (plus ``children`` segments) relative to the client's endpoint,
    every segment quoted (ids come from ARM data: never a query, a fragment or another host)."""
    from urllib.parse import quote

    from azure.core.rest import HttpRequest

    parts = [p for p in arm_ids.normalise(resource_id).split("/") if p] + list(children)
    path = "/" + "/".join(quote(part, safe="") for part in parts)
    return HttpRequest("GET", path, params={"api-version": DATAPROTECTION_API_VERSION})


@dataclass(frozen=True)
class _VhdVm:
    """A listed VM's unmanaged disks: (disk name, is the OS disk, VHD URI)."""

    id: str
    disks: tuple[tuple[str, bool, str], ...]


def _raw_vhd_vm(vm: Any) -> _VhdVm | None:
    """The unmanaged disks of a VM as ARM's JSON has it (``properties.storageProfile``: ``osDisk``
    and ``dataDisks``, each ``vhd.uri`` when unmanaged); None without any."""

    get = _json
    profile = get(vm, "properties", "storageProfile")
    data = get(profile, "dataDisks")
    candidates = [(get(profile, "osDisk"), True)] + [(d, False) for d in (data if isinstance(data, list) else ())]
    disks = tuple(
        (_s(get(disk, "name")), is_os, uri)
        for disk, is_os in candidates
        if isinstance(uri := get(disk, "vhd", "uri"), str) and uri
    )
    return _VhdVm(_s(get(vm, "id")), disks) if disks else None


def _keep_vhd_vm(kept: list[Any], vm: Any) -> None:
    found = _raw_vhd_vm(vm)
    if found is not None:
        kept.append(found)


def _vhd_disks(vm: _VhdVm, account_name: str) -> list[UnmanagedDisk]:
    """The VM's VHDs stored in ``account_name`` (the URI host is ``{account}.blob.<suffix>``)."""
    host = f"{account_name.lower()}.blob."
    return [
        UnmanagedDisk(vm.id, name, uri, is_os)
        for name, is_os, uri in vm.disks
        if uri.split("://", 1)[-1].lower().startswith(host)
    ]


@dataclass(frozen=True)
class _Account:
    """A storage account's id and the parts of it the SDK's calls take."""

    id: str
    subscription: str
    resource_group: str
    name: str


def _account(account_id: str) -> _Account:
    """``account_id``'s parts; ValueError when it is no storage account id."""
    parsed = arm_ids.parse(account_id)
    if parsed is None or arm_ids.storage_account_of(account_id) is None:
        raise ValueError(f"not a storage account id: {account_id!r}")
    return _Account(account_id, parsed.subscription, parsed.resource_group, parsed.segments[0][1])


def _snapshot_of(
    account: Any, where: _Account, perimeters: list[PerimeterView], incomplete: list[str]
) -> StorageAccountSnapshot:
    """The snapshot of an account's own properties (an SDK ``StorageAccount``), no features yet."""
    if getattr(account, "properties", None) is None:
        log.warning("storage account %s came back without properties", where.id)
        incomplete.append("storageAccount.properties")
    return StorageAccountSnapshot(
        id=_s(account.id) or where.id,
        name=_s(account.name) or where.name,
        subscription_id=where.subscription,
        resource_group=where.resource_group,
        location=_s(account.location),
        kind=_s(account.kind),
        sku=_s(_attr(account, "sku", "name")),
        is_sftp_enabled=bool(getattr(account, "is_sftp_enabled", False)),
        is_nfs_v3_enabled=bool(getattr(account, "enable_nfs_v3", False)),
        is_hns_enabled=bool(getattr(account, "is_hns_enabled", False)),
        is_local_user_enabled=bool(getattr(account, "is_local_user_enabled", False)),
        allow_cross_tenant_replication=getattr(account, "allow_cross_tenant_replication", None),
        public_network_access=_s(getattr(account, "public_network_access", "")),
        network_acls=_network_acls(account),
        private_endpoint_connections=tuple(
            _s(getattr(c, "id", "")) for c in (getattr(account, "private_endpoint_connections", None) or ())
        ),
        encryption=_encryption(account),
        perimeters=tuple(perimeters),
        incomplete=tuple(incomplete),
    )


def snapshot_from_facts(account_id: str, facts: Mapping[str, str]) -> StorageAccountSnapshot | None:
    """The account side of a snapshot from stored ``AccountState.facts`` (None when none stored)."""
    parsed = arm_ids.parse(account_id)
    if not facts or parsed is None:
        return None
    return StorageAccountSnapshot(
        id=account_id,
        name=facts.get("name") or parsed.name,
        subscription_id=parsed.subscription,
        resource_group=parsed.resource_group,
        location=facts.get("location", ""),
        kind=facts.get("kind", ""),
        public_network_access=facts.get("publicNetworkAccess", ""),
        network_acls=NetworkAcls(default_action=facts.get("defaultAction") or "Allow"),
        encryption=Encryption(
            key_source=facts.get("keySource") or "Microsoft.Storage",
            key_vault_uri=facts.get("keyVaultUri", ""),
            key_name=facts.get("keyName", ""),
        ),
        account_from_state=True,
    )


# -- the reader --------------------------------------------------------------------------------


class ArmReader:
    """Reads storage accounts through the management SDKs. One instance per sweep/process."""

    def __init__(self, clients: ClientFactory) -> None:
        self._clients = clients
        self._vms: dict[str, asyncio.Future[list[Any]]] = {}
        self._members: dict[str, asyncio.Future[tuple[str, ...]]] = {}
        self._policies: dict[str, asyncio.Future[tuple[str, ...]]] = {}
        self._associations: dict[str, asyncio.Future[dict[str, tuple[str, ...]]]] = {}
        self._backups: dict[str, asyncio.Future[dict[str, tuple[Any, ...]]]] = {}

    def forget_cached_lookups(self) -> None:
        """Drop subscription-wide caches (VM lists, perimeter members, backup instances and policies)."""
        self._vms.clear()
        self._backups.clear()
        self._members.clear()
        self._policies.clear()
        self._associations.clear()

    def remember_members(self, perimeter_id: str, members: Sequence[str]) -> None:
        """The perimeter's associated resource ids as someone in this invocation (or whoever
        fanned the work out) already read them: the CMK rule's lookup needs no read of its own."""
        future: asyncio.Future[tuple[str, ...]] = asyncio.get_running_loop().create_future()
        future.set_result(tuple(m.lower() for m in members))
        self._members[perimeter_id.lower()] = future

    def known_members(self, perimeter_id: str) -> tuple[str, ...] | None:
        future = self._members.get(perimeter_id.lower())
        if future is None or not future.done() or future.cancelled() or future.exception() is not None:
            return None
        return future.result()

    async def read_perimeter_side(
        self, account_id: str, facts: Mapping[str, str] | None = None
    ) -> StorageAccountSnapshot:
        """What the six perimeter rules need, with the fewest reads: the account's
        ``networkSecurityPerimeterConfigurations`` (the truth for its effective rules, access mode
        and provisioning issues), its own properties from ``facts`` (its stored state; the account
        is read only when none are stored), and for a customer-managed key the perimeter's
        associations (shared per perimeter). No feature is read: the result is only judged by the
        perimeter rules (``account_from_state`` says the account side was not re-read)."""
        where = _account(account_id)
        base = snapshot_from_facts(account_id, facts or {})
        account, configs = await self._perimeter_side_reads(where, read_account=base is None)
        perimeters, incomplete = _perimeter_views(configs, account_id)
        if base is None:
            snapshot = replace(_snapshot_of(account, where, perimeters, incomplete), account_from_state=True)
        else:
            snapshot = replace(base, perimeters=tuple(perimeters), incomplete=tuple(incomplete))
        if not perimeters or not snapshot.encryption.uses_customer_managed_key:
            return snapshot
        return await self._with_members(snapshot, incomplete, account_id)

    async def _perimeter_side_reads(self, where: _Account, read_account: bool) -> tuple[Any, Any]:
        """The account's NSP configurations (or the exception reading them raised) and, when
        ``read_account``, its properties (else None). AccountNotFound when the account is gone."""
        storage = self._clients.storage(where.subscription)
        rg, name = where.resource_group, where.name
        configurations = storage.network_security_perimeter_configurations
        configs_read = _decoded(lambda: _collect_pages(configurations.list(rg, name)))
        if read_account:
            account, configs = await asyncio.gather(
                _decoded(lambda: storage.storage_accounts.get_properties(rg, name)),
                configs_read,
                return_exceptions=True,
            )
            if isinstance(account, BaseException):
                if _is_not_found(account):
                    raise AccountNotFound(where.id) from account
                raise account
            return account, configs
        configs = (await asyncio.gather(configs_read, return_exceptions=True))[0]
        if isinstance(configs, BaseException) and _is_not_found(configs):
            # The configurations of a deleted account answer 404 too: tell them apart.
            try:
                await _decoded(lambda: storage.storage_accounts.get_properties(rg, name))
            except Exception as exc:
                if _is_not_found(exc):
                    raise AccountNotFound(where.id) from exc
                raise
        return None, configs

    async def _with_members(
        self, snapshot: StorageAccountSnapshot, incomplete: list[str], account_id: str
    ) -> StorageAccountSnapshot:
        """Each perimeter view with its associated resources (shared per perimeter); one that
        cannot be read is left out and named in ``incomplete``."""
        views = []
        for view in snapshot.perimeters:
            try:
                members: tuple[str, ...] | None = await _decoded(partial(self._perimeter_members, view.perimeter_id))
            except Exception as exc:
                if not _is_not_found(exc):
                    log.warning("perimeterMembers of %s unreadable: %s", account_id, _brief(exc))
                    incomplete.append("perimeterMembers")
                members = None if not _is_not_found(exc) else ()
            views.append(replace(view, perimeter_members=members) if members is not None else view)
        return replace(snapshot, perimeters=tuple(views), incomplete=tuple(dict.fromkeys(incomplete)))

    async def _once(self, cache: dict[str, asyncio.Future[T]], key: str, make: Callable[[], Awaitable[T]]) -> T:
        """Share one in-flight read between concurrent callers; failures are not cached."""
        future = cache.get(key)
        if future is None:
            future = asyncio.ensure_future(make())
            cache[key] = future
        try:
            return await asyncio.shield(future)
        except Exception:
            cache.pop(key, None)
            raise

    async def list_account_ids(self, subscription_id: str) -> list[str]:
        """Ids only, from the raw pages (no model per account: shared.adapters.raw_list)."""
        from azure.mgmt.storage.operations._operations import build_storage_accounts_list_request

        from shared.adapters.raw_list import resource_ids

        client = self._clients.storage(subscription_id)
        return [i async for i in resource_ids(client, build_storage_accounts_list_request(subscription_id))]

    async def list_account_page(self, subscription_id: str, page: str = "") -> tuple[str | None, list[dict[str, Any]]]:
        """One page of the subscription's storage account list as raw bodies (``page``: ARM's
        nextLink, "" for the first): (the next page's nextLink or None, the accounts). The list body
        carries every property the snapshot's account side needs (``read_listed``)."""
        from azure.mgmt.storage.operations._operations import build_storage_accounts_list_request

        from shared.adapters.raw_list import resource_page

        client = self._clients.storage(subscription_id)
        return await resource_page(client, build_storage_accounts_list_request(subscription_id), page)

    async def perimeter_associations(self, subscription_id: str) -> dict[str, tuple[str, ...]]:
        """Every resource (lower-case id) associated with a perimeter of the subscription -> those
        perimeters: the subscription's perimeters (``list_by_subscription``) and each one's
        association list (shared with the CMK rule's lookup). Once per subscription per reader."""

        async def read() -> dict[str, tuple[str, ...]]:
            client = self._clients.network(subscription_id)
            listing = client.network_security_perimeters.list_by_subscription
            perimeters = await _decoded(lambda: _collect_pages(listing()))
            ids = [_s(getattr(p, "id", "")) for p in perimeters if getattr(p, "id", None)]
            lists = await asyncio.gather(*(self._perimeter_members(i) for i in ids), return_exceptions=True)
            found: dict[str, tuple[str, ...]] = {}
            for perimeter_id, members in zip(ids, lists, strict=True):
                if isinstance(members, BaseException):
                    if _is_not_found(members):
                        continue  # deleted since it was listed: associates nothing
                    raise members
                for member in members:
                    found[member] = (*found.get(member, ()), perimeter_id)
            return found

        return await self._once(self._associations, subscription_id.lower(), read)

    async def read_listed(
        self, body: Mapping[str, Any], verify: bool, stored_backups: Sequence[str] = ()
    ) -> StorageAccountSnapshot:
        """A snapshot from the account's body as the list returned it (no GET of the account): the
        one SDK mapping (``_snapshot_of``) over the body deserialised as the SDK's own
        ``StorageAccount``. ``verify``: read its NSP configurations (the truth of membership), and
        all features when it is associated; otherwise it is recorded as in no perimeter. Its backup
        instances come from the subscription's vaults (``subscription_backups``) unless
        ``stored_backups`` (the instance ids its last evaluation saw) names one they do not hold:
        then from its own extension-routing read, which sees vaults in any subscription."""
        from azure.mgmt.storage._utils.model_base import _deserialize
        from azure.mgmt.storage.models import StorageAccount

        account_id = _s(body.get("id"))
        where = _account(account_id)
        account = _deserialize(StorageAccount, dict(body))
        if not verify:
            return _snapshot_of(account, where, [], [])
        storage = self._clients.storage(where.subscription)
        rg, name = where.resource_group, where.name
        configs: Any
        try:
            configs = await _decoded(
                lambda: _collect_pages(storage.network_security_perimeter_configurations.list(rg, name))
            )
        except Exception as exc:
            if _is_not_found(exc):
                raise AccountNotFound(account_id) from exc
            configs = exc
        backups = partial(self._listed_backups, account_id, tuple(stored_backups))
        return await self._complete(account, configs, where, backups)

    async def read_account(self, account_id: str, skip: Collection[str] = ()) -> StorageAccountSnapshot:
        """The whole account. ``skip``: feature reads to leave out (``virtualMachines``,
        ``backupInstances``; named in ``snapshot.not_read`` when the features are read)."""
        where = _account(account_id)
        storage = self._clients.storage(where.subscription)
        rg, name = where.resource_group, where.name
        account, configs = await asyncio.gather(
            _decoded(lambda: storage.storage_accounts.get_properties(rg, name)),
            _decoded(lambda: _collect_pages(storage.network_security_perimeter_configurations.list(rg, name))),
            return_exceptions=True,
        )
        if isinstance(account, BaseException):
            if _is_not_found(account):
                raise AccountNotFound(account_id) from account
            raise account
        return await self._complete(account, configs, where, skip=skip)

    async def _complete(
        self,
        account: Any,
        configs: Any,
        where: _Account,
        backups: Callable[[], Awaitable[list[Any]]] | None = None,
        skip: Collection[str] = (),
    ) -> StorageAccountSnapshot:
        """The snapshot of an account (an SDK ``StorageAccount``) and its NSP configurations (or
        the exception reading them raised); all features read when it is in a perimeter (but
        those in ``skip``). ``backups``: how to read its backup instances (default: extension
        routing)."""
        perimeters, incomplete = _perimeter_views(configs, where.id)
        snapshot = _snapshot_of(account, where, perimeters, incomplete)
        if not perimeters:
            return snapshot
        try:
            return await self._read_features(snapshot, backups, skip)
        except (ShapeError, TypeError, AttributeError) as exc:
            # A child answered with a shape we cannot trust: evaluate what we have, mark it partial
            # (so nothing is resolved on the strength of it) and name the problem in the log.
            log.warning("features of %s have an unexpected shape: %s", where.id, exc)
            return replace(snapshot, incomplete=(*snapshot.incomplete, "features"))

    async def _read_features(
        self,
        snap: StorageAccountSnapshot,
        read_backups: Callable[[], Awaitable[list[Any]]] | None = None,
        skip: Collection[str] = (),
    ) -> StorageAccountSnapshot:
        storage = self._clients.storage(snap.subscription_id)
        rg, name = snap.resource_group, snap.name
        reads: dict[str, Callable[[], Awaitable[Any]]] = {
            "objectReplicationPolicies": lambda: _collect_pages(storage.object_replication_policies.list(rg, name)),
            "managementPolicies": lambda: storage.management_policies.get(rg, name, "default"),
            "inventoryPolicies": lambda: _collect_pages(storage.blob_inventory_policies.list(rg, name)),
            "blobServices": lambda: storage.blob_services.get_service_properties(rg, name),
            "backupInstances": read_backups or partial(self._backup_instances, snap.id),
            "virtualMachines": lambda: self._subscription_vms(snap.subscription_id),
        }
        if snap.kind.lower() not in _KINDS_WITHOUT_FILES:
            reads["fileShares"] = lambda: _collect_pages(storage.file_shares.list(rg, name))
        if snap.encryption.uses_customer_managed_key:
            for view in snap.perimeters:
                reads[f"perimeterMembers:{view.perimeter_id}"] = partial(self._perimeter_members, view.perimeter_id)
        not_read = tuple(part for part in reads if part in skip)
        for part in not_read:
            del reads[part]
        gathered = await asyncio.gather(*(_decoded(make) for make in reads.values()), return_exceptions=True)
        results = dict(zip(reads, gathered, strict=True))

        incomplete = list(snap.incomplete)

        def ok(part: str, empty: Any) -> Any:
            value = results.get(part, empty)
            if isinstance(value, BaseException):
                if _is_not_found(value):
                    return empty
                log.warning("%s of %s unreadable: %s", part, snap.id, _brief(value))
                incomplete.append(part.split(":", 1)[0])
                return empty
            return value

        policies: list[Any] = ok("objectReplicationPolicies", [])
        management: Any = ok("managementPolicies", None)
        inventories: list[Any] = ok("inventoryPolicies", [])
        blob_service: Any = ok("blobServices", None)
        shares: list[Any] = ok("fileShares", [])
        backups: list[Any] = ok("backupInstances", [])
        vms: list[_VhdVm] = ok("virtualMachines", [])

        lifecycle = tuple(
            LifecycleRule(
                _s(r.name),
                bool(getattr(r, "enabled", True) is not False),
                _s(getattr(r, "type", "Lifecycle")),
            )
            for r in (_attr(management, "policy", "rules") or ())
        )
        inventory = None
        for item in inventories:
            policy = _attr(item, "policy")
            if policy is None:
                continue
            inventory = InventoryPolicy(
                enabled=bool(getattr(policy, "enabled", False)),
                rules=tuple(
                    InventoryRule(_s(r.name), bool(getattr(r, "enabled", False)), _s(getattr(r, "destination", "")))
                    for r in (getattr(policy, "rules", None) or ())
                ),
            )
        disks = [disk for vm in vms for disk in _vhd_disks(vm, name)]

        views = []
        for view in snap.perimeters:
            members = ok(f"perimeterMembers:{view.perimeter_id}", None)
            views.append(replace(view, perimeter_members=members) if members is not None else view)

        instances = await self._backup_details(backups, incomplete)
        return replace(
            snap,
            static_website_enabled=bool(_attr(blob_service, "static_website", "enabled")),
            object_replication_policies=tuple(
                ObjectReplicationPolicy(
                    policy_id=_s(getattr(p, "policy_id", None)) or _s(getattr(p, "name", "")),
                    source_account=_s(getattr(p, "source_account", "")),
                    destination_account=_s(getattr(p, "destination_account", "")),
                    rule_count=len(getattr(p, "rules", None) or ()),
                )
                for p in policies
            ),
            lifecycle_rules=lifecycle,
            inventory_policy=inventory,
            file_shares=tuple(
                FileShare(_s(s.name), _s(getattr(s, "enabled_protocols", None)) or "SMB") for s in shares
            ),
            unmanaged_disks=tuple(disks),
            backup_instances=tuple(instances),
            perimeters=tuple(views),
            incomplete=tuple(dict.fromkeys(incomplete)),
            not_read=not_read,
        )

    async def _backup_instances(self, account_id: str) -> list[Any]:
        """The backup instances protecting the account, in any vault (extension routing), as raw
        JSON (no Data Protection SDK: its import was about a tenth of a cold start)."""
        from shared.adapters.raw_list import resource_items

        client = self._clients.storage(arm_ids.parse(account_id).subscription)  # type: ignore[union-attr]
        request = _dataprotection_request(account_id, "providers", "Microsoft.DataProtection", "backupInstances")
        items = await _collect_pages(resource_items(client, request, attempts=1))
        return [item for item in items if _protects_storage(item)]

    async def subscription_backups(self, subscription_id: str) -> dict[str, tuple[Any, ...]]:
        """Storage account id (lower case) -> the backup instances protecting it, from every
        Backup vault of the subscription (``backup_vaults.get_in_subscription``, then each vault's
        ``backup_instances.list``): 1 + vaults reads once per subscription per reader, instead of
        one extension-routing read per account. Vaults in other subscriptions are not in it
        (``_listed_backups`` falls back for the instances it knows of)."""

        async def read() -> dict[str, tuple[Any, ...]]:
            from shared.adapters.raw_list import resource_items

            client = self._clients.storage(subscription_id)
            listing = _dataprotection_request(
                "/subscriptions", subscription_id, "providers", "Microsoft.DataProtection", "backupVaults"
            )
            vaults = await _collect_pages(resource_items(client, listing, attempts=1))
            scopes = [arm_ids.parse(_s(v.get("id"))) for v in vaults]
            lists = await asyncio.gather(
                *(
                    _collect_pages(
                        resource_items(client, _dataprotection_request(s.top_level_id, "backupInstances"), attempts=1)
                    )
                    for s in scopes
                    if s is not None and s.resource_group
                ),
                return_exceptions=True,
            )
            found: dict[str, tuple[Any, ...]] = {}
            for items in lists:
                if isinstance(items, BaseException):
                    if _is_not_found(items):
                        continue  # the vault was deleted since it was listed: protects nothing
                    raise items
                for item in items:
                    source = _s(_json(item, "properties", "dataSourceInfo", "resourceID"))
                    if source and _protects_storage(item):
                        key = arm_ids.normalise(source).lower()
                        found[key] = (*found.get(key, ()), item)
            return found

        return await self._once(self._backups, subscription_id.lower(), read)

    async def _listed_backups(self, account_id: str, stored: tuple[str, ...]) -> list[Any]:
        parsed = arm_ids.parse(account_id)
        if parsed is None:
            raise ValueError(f"not a storage account id: {account_id!r}")
        items = list((await self.subscription_backups(parsed.subscription)).get(account_id.lower(), ()))
        seen = {_s(i.get("id")).lower() for i in items}
        if any(s.lower() not in seen for s in stored):
            # It was protected by an instance the subscription's vaults do not hold (a vault in
            # another subscription, or one deleted since): its own read sees every vault.
            return await self._backup_instances(account_id)
        return items

    async def _backup_details(self, instances: list[Any], incomplete: list[str]) -> list[BackupInstance]:
        async def one(item: Any) -> BackupInstance:
            props = _json(item, "properties")
            policy_id = _s(_json(props, "policyInfo", "policyId"))
            try:
                stores = await self._policy_stores(policy_id) if policy_id else ()
            except Exception as exc:
                log.warning("backup policy %s unreadable: %s", policy_id, _brief(exc))
                incomplete.append("backupPolicies")
                stores = ()
            return BackupInstance(
                instance_id=_s(_json(item, "id")),
                datasource_type=_s(_json(props, "dataSourceInfo", "datasourceType")),
                policy_id=policy_id,
                protection_state=_s(_json(props, "currentProtectionState")),
                datastore_types=stores,
            )

        return list(await asyncio.gather(*(one(i) for i in instances)))

    async def _policy_stores(self, policy_id: str) -> tuple[str, ...]:
        async def read() -> tuple[str, ...]:
            parsed = arm_ids.parse(policy_id)
            if parsed is None or len(parsed.segments) < 2:
                raise ValueError(f"not a backup policy id: {policy_id!r}")
            from shared.adapters.raw_list import resource_body

            client = self._clients.storage(parsed.subscription)
            policy = await resource_body(client, _dataprotection_request(policy_id))
            return tuple(dict.fromkeys(_collect(policy, "dataStoreType")))

        return await self._once(self._policies, policy_id.lower(), read)

    async def _subscription_vms(self, subscription_id: str) -> list[_VhdVm]:
        """The subscription's VMs with unmanaged disks, from the raw VM list (the SDK's own request:
        path and api-version) through the storage client's pipeline (the same ARM endpoint,
        credential, retry and read pacing); only the VHD URIs are kept of each VM."""

        async def read() -> list[_VhdVm]:
            from urllib.parse import quote

            from azure.core.rest import HttpRequest

            from shared.adapters.raw_list import resource_items

            client = self._clients.storage(subscription_id)
            request = HttpRequest(
                "GET",
                f"/subscriptions/{quote(subscription_id, safe='')}/providers/Microsoft.Compute/virtualMachines",
                params={"api-version": COMPUTE_API_VERSION},
            )
            return [vm async for vm in resource_items(client, request, _keep_vhd_vm, attempts=1)]  # under _decoded

        return await self._once(self._vms, subscription_id.lower(), read)

    async def _perimeter_members(self, perimeter_id: str) -> tuple[str, ...]:
        async def read() -> tuple[str, ...]:
            parsed = arm_ids.parse(perimeter_id)
            if parsed is None:
                raise ValueError(f"not a perimeter id: {perimeter_id!r}")
            client = self._clients.network(parsed.subscription)
            associations = await _collect_pages(
                client.network_security_perimeter_associations.list(parsed.resource_group, parsed.name)
            )
            return tuple(
                arm_ids.normalise(_s(_attr(a, "properties", "private_link_resource", "id"))).lower()
                for a in associations
                if _attr(a, "properties", "private_link_resource", "id")
            )

        return await self._once(self._members, perimeter_id.lower(), read)


def _protects_storage(item: Any) -> bool:
    """A raw backup instance protects a storage account (blobs)."""
    datasource = _s(_json(item, "properties", "dataSourceInfo", "datasourceType"))
    return datasource.lower().startswith("microsoft.storage/storageaccounts")


def _perimeter_views(configs: Any, account_id: str) -> tuple[list[PerimeterView], list[str]]:
    """An account's perimeters from its NSP configurations (or the exception reading them raised),
    and what could not be read. 404 means no perimeter; a configuration we cannot read or parse is
    not "no perimeter": it is recorded as incomplete so nothing resolves on the strength of it."""
    if isinstance(configs, BaseException):
        if _is_not_found(configs):
            return [], []
        log.warning("NSP configurations of %s unreadable: %s", account_id, _brief(configs))
        return [], ["networkSecurityPerimeterConfigurations"]
    try:
        return [perimeter_view_from_sdk(c) for c in configs], []
    except (ShapeError, TypeError, ValueError) as exc:
        log.warning("NSP configurations of %s have an unexpected shape: %s", account_id, exc)
        return [], ["networkSecurityPerimeterConfigurations"]


def _brief(exc: BaseException) -> str:
    """One line about a failed read, without response bodies (which may echo request data)."""
    status = getattr(exc, "status_code", None)
    code = getattr(getattr(exc, "error", None), "code", None)
    return f"{type(exc).__name__} status={status} code={code}" if status else type(exc).__name__


class TargetReads:
    """The extra reads that resolve a non-account target to storage accounts (uncached)."""

    def __init__(self, clients: ClientFactory, on_members: Callable[[str, Sequence[str]], None] | None = None) -> None:
        self._clients = clients
        self._on_members = on_members  # the association list, handed to the account reader once read

    async def perimeter_storage_accounts(self, perimeter_id: str) -> list[str]:
        """Storage accounts associated with a perimeter now ([] if the perimeter is gone)."""
        parsed = arm_ids.parse(perimeter_id)
        if parsed is None:
            return []
        client = self._clients.network(parsed.subscription)
        try:
            associations = await _collect_pages(
                client.network_security_perimeter_associations.list(
                    parsed.resource_group, parsed.top_level_id.rsplit("/", 1)[-1]
                )
            )
        except Exception as exc:
            if _is_not_found(exc):
                return []
            raise
        ids = [_s(_attr(a, "properties", "private_link_resource", "id")) for a in associations]
        if self._on_members is not None:
            self._on_members(perimeter_id, [arm_ids.normalise(i).lower() for i in ids if i])
        return [i for i in ids if arm_ids.storage_account_of(i) == arm_ids.normalise(i) and i]

    async def vm_vhd_account_names(self, vm_id: str) -> list[str]:
        """Names of the storage accounts a VM's VHD URIs point at ([] if the VM is gone)."""
        parsed = arm_ids.parse(vm_id)
        if parsed is None:
            return []
        client = self._clients.compute(parsed.subscription)
        try:
            vm = await client.virtual_machines.get(parsed.resource_group, parsed.top_level_id.rsplit("/", 1)[-1])
        except Exception as exc:
            if _is_not_found(exc):
                return []
            raise
        names = {uri.split("://", 1)[-1].split(".", 1)[0].lower() for _, _, uri in _vhds(vm)}
        return sorted(names)

    async def backup_datasource(self, instance_id: str) -> str | None:
        parsed = arm_ids.parse(instance_id)
        if parsed is None or len(parsed.segments) < 2:
            return None
        client = self._clients.dataprotection(parsed.subscription)
        try:
            item = await client.backup_instances.get(
                parsed.resource_group, parsed.segments[0][1], parsed.segments[1][1]
            )
        except Exception as exc:
            if _is_not_found(exc):
                return None
            raise
        source = _s(_attr(item, "properties", "data_source_info", "resource_id"))
        return arm_ids.storage_account_of(source) if source else None
