"""The one place that builds clients: lazily, once per process, never at import time.

Two families behind the same ClientFactory interface:
- ``LiveClients``: azure-identity credential (managed identity in Azure, the developer's login
  locally) and the real ARM endpoint; azure-core's own retry policy is the only retry layer.
- ``EstateClients``: the same SDK clients over the offline estate transport (no Azure needed).
"""

from __future__ import annotations

import importlib
import os
import threading
from collections.abc import Callable
from typing import Any

from shared.adapters.estate import AsyncEstateTransport, Estate, RequestLog

# azure-core retries 408/429/5xx itself, honouring Retry-After: keep that the single layer.
ARM_RETRY_TOTAL = 3


class _StaticToken:
    """An AsyncTokenCredential for the offline estate: there is nobody to authenticate to."""

    async def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        from azure.core.credentials import AccessToken

        return AccessToken("offline-estate", 2**31 - 1)

    async def get_token_info(self, *scopes: str, **kwargs: Any) -> Any:
        from azure.core.credentials import AccessTokenInfo

        return AccessTokenInfo("offline-estate", 2**31 - 1)

    async def close(self) -> None:
        return None

    async def __aenter__(self) -> _StaticToken:
        return self

    async def __aexit__(self, *args: object) -> None:
        return None


class _ClientCache:
    def __init__(self, build: Callable[[str, str], Any]) -> None:
        self._build = build
        self._clients: dict[tuple[str, str], Any] = {}
        self._lock = threading.Lock()

    def get(self, kind: str, subscription_id: str) -> Any:
        key = (kind, subscription_id.lower())
        with self._lock:
            client = self._clients.get(key)
            if client is None:
                client = self._build(kind, subscription_id)
                self._clients[key] = client
            return client

    async def close(self) -> None:
        with self._lock:
            clients = list(self._clients.values())
            self._clients.clear()
        for client in clients:
            await client.close()


def _client_class(kind: str) -> Any:
    # Heavy SDK imports happen here, on first use, never at import of function_app.
    if kind == "storage":
        from azure.mgmt.storage.aio import StorageManagementClient

        return StorageManagementClient
    if kind == "network":
        from azure.mgmt.network.aio import NetworkManagementClient

        return NetworkManagementClient
    if kind == "compute":
        from azure.mgmt.compute.aio import ComputeManagementClient

        return ComputeManagementClient
    if kind == "dataprotection":
        from azure.mgmt.dataprotection.aio import DataProtectionMgmtClient

        return DataProtectionMgmtClient
    if kind == "graph":
        from azure.mgmt.resourcegraph.aio import ResourceGraphClient

        return ResourceGraphClient
    raise ValueError(f"unknown client kind {kind!r}")


class _Factory:
    def __init__(self, build: Callable[[str, str], Any]) -> None:
        self._cache = _ClientCache(build)

    def storage(self, subscription_id: str) -> Any:
        return self._cache.get("storage", subscription_id)

    def network(self, subscription_id: str) -> Any:
        return self._cache.get("network", subscription_id)

    def compute(self, subscription_id: str) -> Any:
        return self._cache.get("compute", subscription_id)

    def dataprotection(self, subscription_id: str) -> Any:
        return self._cache.get("dataprotection", subscription_id)

    def graph(self) -> Any:
        """Resource Graph is tenant-scoped: one client, no subscription."""
        return self._cache.get("graph", "")

    async def close(self) -> None:
        await self._cache.close()


class EstateClients(_Factory):
    """Real SDK clients answered by an offline estate; ``log`` counts the requests they make."""

    def __init__(self, estate: Estate, log: RequestLog | None = None) -> None:
        self.estate = estate
        self.log = log or RequestLog()
        credential = _StaticToken()

        def build(kind: str, subscription_id: str) -> Any:
            transport = AsyncEstateTransport(estate, self.log)
            if kind == "graph":
                return _client_class(kind)(credential, transport=transport, retry_total=0)
            return _client_class(kind)(credential, subscription_id, transport=transport, retry_total=0)

        super().__init__(build)


_credential_lock = threading.Lock()
_credentials: dict[bool, Any] = {}


def _make_credential(aio: bool) -> Any:
    """Managed identity in Azure (deterministic, no fallback chain); the developer's login locally."""
    client_id = os.environ.get("AZURE_CLIENT_ID") or None
    in_azure = bool(os.environ.get("WEBSITE_INSTANCE_ID") or os.environ.get("IDENTITY_ENDPOINT"))
    module = importlib.import_module("azure.identity.aio" if aio else "azure.identity")
    if in_azure:
        return module.ManagedIdentityCredential(client_id=client_id)
    return module.DefaultAzureCredential()


def credential() -> Any:
    """One async credential per process (ARM clients): its token cache lives in the instance."""
    with _credential_lock:
        if True not in _credentials:
            _credentials[True] = _make_credential(aio=True)
        return _credentials[True]


def credential_sync() -> Any:
    """The synchronous twin for the Table/Queue SDKs (identity-based AzureWebJobsStorage)."""
    with _credential_lock:
        if False not in _credentials:
            _credentials[False] = _make_credential(aio=False)
        return _credentials[False]


_budget_lock = threading.Lock()
_budget: Any = None


def read_budget() -> Any:
    """One ARM read budget per process: every client paces against the same bucket estimate."""
    global _budget
    with _budget_lock:
        if _budget is None:
            from shared.adapters.throttle import ReadBudget

            _budget = ReadBudget()
        return _budget


class LiveClients(_Factory):
    """Clients against Azure Resource Manager (or ``base_url``, e.g. the benchmark's server).

    Reads are paced on ARM's remaining-reads header (shared.adapters.throttle) inside azure-core's
    retry policy, which stays the only retry layer."""

    def __init__(
        self,
        base_url: str | None = None,
        connection_verify: bool | str = True,
        cred: Any = None,
        budget: Any = None,
        read_timeout: float = 60.0,
    ) -> None:
        from shared.adapters.throttle import read_pacing_policy

        shared_budget = budget or read_budget()

        def build(kind: str, subscription_id: str) -> Any:
            kwargs: dict[str, Any] = {
                "retry_total": ARM_RETRY_TOTAL,
                "connection_verify": connection_verify,
                # One policy per client (azure-core links a policy into one pipeline), one budget for all.
                "per_retry_policies": [read_pacing_policy(shared_budget)],
                # A hung response fails this attempt (azure-core then retries) instead of pinning
                # an invocation for aiohttp's 5-minute default.
                "read_timeout": read_timeout,
            }
            if base_url:
                kwargs["base_url"] = base_url
            if kind == "graph":
                return _client_class(kind)(cred or credential(), **kwargs)
            return _client_class(kind)(cred or credential(), subscription_id, **kwargs)

        super().__init__(build)

