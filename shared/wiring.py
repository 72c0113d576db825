"""The one place that builds clients (once per process) and readers (once per invocation),
lazily, never at import time.

Two families behind the same ClientFactory interface:
- ``LiveClients``: azure-identity credential (managed identity in Azure, the developer's login
  locally) and the ARM endpoint of the configured cloud (``NSP_DRIFT_CLOUD``), one HTTP session
  for all of them; azure-core's own retry policy is the only retry layer.
- ``EstateClients``: the same SDK clients over the offline estate transport (no Azure needed).
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Callable
from typing import Any

from shared.adapters.cloud import Cloud, cloud_from_env
from shared.adapters.estate import AsyncEstateTransport, Estate, RequestLog
from shared.adapters.identity import credential_sync, make_credential
from shared.adapters.telemetry import Telemetry
from shared.service.pipeline import Readers

log = logging.getLogger(__name__)

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


def _metrics_policies(telemetry: Telemetry | None) -> Callable[[], list[Any]]:
    """Fresh per-client policies counting ARM requests (none when telemetry is off)."""
    if telemetry is None or not telemetry.enabled:
        return list
    from shared.adapters.arm_metrics import ArmMetricsPolicy

    return lambda: [ArmMetricsPolicy(telemetry)]


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

    def __init__(self, estate: Estate, log: RequestLog | None = None, telemetry: Telemetry | None = None) -> None:
        self.estate = estate
        self.log = log or RequestLog()
        credential = _StaticToken()
        policies = _metrics_policies(telemetry)

        def build(kind: str, subscription_id: str) -> Any:
            kwargs: dict[str, Any] = {
                "transport": AsyncEstateTransport(estate, self.log),
                "retry_total": 0,
                "per_retry_policies": policies(),
            }
            if kind == "graph":
                return _client_class(kind)(credential, **kwargs)
            return _client_class(kind)(credential, subscription_id, **kwargs)

        super().__init__(build)


class _SharedTokenRequests:
    """The ARM clients' credential, with identical token requests in flight at the same time
    answered by one: the warm-up's first token and the first reads' own requests (one policy per
    client) become one request instead of several (azure-identity's cache helps only once a token
    has arrived). Everything else is the wrapped credential's own (cache, refresh, errors)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self._inflight: dict[tuple[Any, ...], asyncio.Future[Any]] = {}

    async def _once(self, key: tuple[Any, ...], make: Callable[[], Any]) -> Any:
        future = self._inflight.get(key)
        if future is None:
            future = asyncio.ensure_future(make())
            self._inflight[key] = future
            future.add_done_callback(lambda _done: self._inflight.pop(key, None))
        return await asyncio.shield(future)

    async def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        key = ("get_token", scopes, repr(sorted(kwargs.items())))
        return await self._once(key, lambda: self.inner.get_token(*scopes, **kwargs))

    async def get_token_info(self, *scopes: str, options: Any = None) -> Any:
        key = ("get_token_info", scopes, repr(sorted((options or {}).items())))
        return await self._once(key, lambda: self.inner.get_token_info(*scopes, options=options))

    async def close(self) -> None:
        await self.inner.close()

    async def __aenter__(self) -> _SharedTokenRequests:
        return self

    async def __aexit__(self, *args: object) -> None:
        await self.close()


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
    """Clients against Azure Resource Manager in ``cloud`` (default: the NSP_DRIFT_CLOUD and
    NSP_DRIFT_AUTHORITY_HOST settings, shared.adapters.cloud): every client gets the cloud's endpoint and
    token scope, the credential its authority.

    One per process: it owns the one HTTP session (shared.adapters.arm_http) that every client
    and the credential share, and the credential (its token cache). Reads are paced on ARM's
    remaining-reads header (shared.adapters.throttle) inside azure-core's retry policy, which stays
    the only retry layer. The environment (cloud, credential, SSL_CERT_FILE) is read here, once."""

    def __init__(
        self,
        cloud: Cloud | None = None,
        budget: Any = None,
        read_timeout: float = 60.0,
        telemetry: Telemetry | None = None,
    ) -> None:
        from shared.adapters.arm_http import SharedHttp
        from shared.adapters.throttle import read_pacing_policy

        self.cloud = cloud or cloud_from_env(os.environ)
        self.http = SharedHttp()
        self.credential = _SharedTokenRequests(
            make_credential(aio=True, cloud=self.cloud, transport=self.http.transport())
        )
        self._warmed = False
        self._warm_lock = threading.Lock()
        shared_budget = budget or read_budget()
        metrics = _metrics_policies(telemetry)

        def build(kind: str, subscription_id: str) -> Any:
            kwargs: dict[str, Any] = {
                **self.cloud.client_kwargs(),
                "retry_total": ARM_RETRY_TOTAL,
                # One policy per client (azure-core links a policy into one pipeline), one budget for all.
                "per_retry_policies": [read_pacing_policy(shared_budget), *metrics()],
                # A hung response fails this attempt (azure-core then retries) instead of pinning
                # an invocation for aiohttp's 5-minute default.
                "transport": self.http.transport(read_timeout=read_timeout),
            }
            if kind == "graph":
                return _client_class(kind)(self.credential, **kwargs)
            return _client_class(kind)(self.credential, subscription_id, **kwargs)

        super().__init__(build)

    def warm_up(self) -> None:
        """Start, on the shared loop and without waiting, what the first ARM read would otherwise
        wait for: the storage SDK's import and the credential's first token (the request the
        clients' policies make, so theirs join it). The caller's own work (state reads, settings)
        overlaps it. Nothing depends on it: a failure is logged here and met again, and reported,
        by the read that needs the token. Once per instance: later calls do nothing."""
        from shared.adapters import runtime

        with self._warm_lock:
            if self._warmed:
                return
            self._warmed = True

        async def warm() -> None:
            try:
                _client_class("storage")
                await self.credential.get_token_info(self.cloud.credential_scope, options={})
            except Exception as exc:  # the first read asks again and reports it
                log.info("warm-up of the ARM credential failed: %s", type(exc).__name__)

        runtime.start(warm())

    async def close(self) -> None:
        await super().close()
        await self.credential.close()
        await self.http.close()


class GraphSummaries:
    """Resource Graph account summaries, the SDK imported and the client built on first use."""

    def __init__(self, clients: Any) -> None:
        self._clients = clients

    async def account_summaries(self, subscriptions: Any) -> Any:
        from shared.adapters.resource_graph import ResourceGraphReader

        return await ResourceGraphReader(self._clients.graph()).account_summaries(subscriptions)

    async def inventory(self, subscriptions: Any) -> Any:
        from shared.adapters.resource_graph import ResourceGraphReader

        return await ResourceGraphReader(self._clients.graph()).inventory(subscriptions)


def readers_for(clients: Any) -> Readers:
    """The pipeline's readers over a client factory, for one invocation: the clients (and their
    connection pools) are the process's; the readers' lookup caches live for this run only."""
    from shared.adapters.arm_reader import ArmReader, TargetReads

    accounts = ArmReader(clients)
    return Readers(
        accounts=accounts,
        targets=TargetReads(clients, on_members=accounts.remember_members),
        summaries=GraphSummaries(clients),
    )


# -- the other adapters: stores, queue, senders, telemetry (app, replay and cli build them here) ---


def table_ports(
    connection: str, table_service_uri: str, queue_service_uri: str, table_prefix: str, cloud: Cloud, store: Any = None
) -> tuple[Any, Any]:
    """The function app's Table state store (unless ``store`` is given) and evaluation queue: a
    connection string, or else the service URIs with the process's identity-based credential."""
    from shared.adapters.queue import EvaluationQueue
    from shared.adapters.state.table_store import TableStateStore
    from shared.adapters.storage_http import storage_transport

    # One requests session per process for both (the environment read once per host).
    tables, queues = {"transport": storage_transport()}, {"transport": storage_transport()}
    if connection:
        if store is None:
            store = TableStateStore.from_connection_string(connection, table_prefix, **tables)
        return store, EvaluationQueue.from_connection_string(connection, **queues)
    credential = credential_sync(cloud)
    if store is None:
        store = TableStateStore.from_service_uri(table_service_uri, credential, table_prefix, **tables)
    return store, EvaluationQueue.from_service_uri(queue_service_uri, credential, **queues)


def sqlite_store(path: str) -> Any:
    """The CLI's embedded state store."""
    from shared.adapters.state.sqlite_store import SqliteStateStore

    return SqliteStateStore(path)


def load_estate(path: Any) -> Estate:
    """An offline estate file (raises EstateError naming what is wrong with it)."""
    return Estate.load(path)


def estate_clients(path: Any, telemetry: Telemetry | None = None) -> EstateClients:
    """Real SDK clients over the offline estate file at ``path`` (raises EstateError)."""
    return EstateClients(load_estate(path), telemetry=telemetry)


def arm_reader(clients: Any) -> Any:
    """The ARM account reader over a client factory (the CLI's scan)."""
    from shared.adapters.arm_reader import ArmReader

    return ArmReader(clients)


def telemetry(connection: str, authentication: str) -> Telemetry:
    """Exporting to Application Insights when its connection string is set, else off (free)."""
    if not connection:
        return Telemetry.off()
    from shared.adapters.appinsights import application_insights

    return Telemetry(*application_insights(connection, authentication))


def senders(
    destinations: Any, env: Any = None, telemetry: Telemetry | None = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The HTTP senders (and digest senders) of configured destinations, traced when telemetry is on."""
    from shared.adapters.notify.destinations import build_senders

    built, digests = build_senders(destinations, env)
    if telemetry is not None and telemetry.enabled:
        from shared.adapters.notify.traced import TracedSender

        built = {name: TracedSender(sender, telemetry) for name, sender in built.items()}
    return built, digests
