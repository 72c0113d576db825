"""An offline Azure Resource Manager: answers the SDK's HTTP requests from an estate file.

An estate is a JSON object mapping ARM resource id -> the body ARM returns for a GET of it
(keys starting with ``$`` are comments/metadata and ignored). The real SDK clients run unchanged
on top of it: their URL building, paging and deserialisation are exercised, only the socket is
replaced. ``answer()`` is transport-agnostic so the loopback HTTPS server of the benchmark serves
exactly the same responses.

What it answers, like ARM:
- GET of a resource id in the estate: 200 with its body;
- GET of a collection (list at subscription, resource group or parent scope): 200 with
  ``{"value": [...]}`` of the estate's resources of that type under that scope, paged with
  ``nextLink``/``$skipToken`` when a page size is set;
- GET ``{resourceId}/providers/Microsoft.DataProtection/backupInstances`` (extension routing):
  the backup instances whose ``dataSourceInfo.resourceID`` is that resource;
- POST ``/providers/Microsoft.ResourceGraph/resources`` (``resource_graph(body)``; ``answer``
  routes it there when given the body): exactly the queries nsp-drift itself sends, matched on
  their whole text (whitespace-insensitive) against ``shared.adapters.resource_graph.QUERIES``.
  It is a narrow double of those three queries, not a KQL engine; any other text is refused with
  400 ``BadRequest``. Supported:

  ``accounts``      ``resources``, storage accounts: id, kind, publicNetworkAccess, isSftpEnabled,
                    isNfsV3Enabled, isHnsEnabled, keySource, keyVaultUri, defaultAction,
                    privateEndpoints (count), with the KQL's ``coalesce`` defaults;
  ``vhd-vms``       ``resources``, virtual machines with a VHD OS disk or a data disk with ``vhd``:
                    id, osVhd, dataDisks (the raw array);
  ``blob-backups``  ``recoveryservicesresources``, Data Protection backup instances whose
                    datasourceType starts with ``Microsoft.Storage/storageAccounts``: id,
                    storageAccountId (lower case), policyId, protectionState.

  Scope: ``subscriptions`` filters by the row's subscription; ``managementGroups`` (the estate
  has no hierarchy) means every subscription of the estate. Rows are sorted by id and paged
  ``options.$top`` (at most 1,000, the default) at a time, the next page named by the response's
  ``$skipToken``; ``resultFormat`` is always ``objectArray``. Every answer carries the quota
  headers ``x-ms-user-quota-remaining: 14`` and ``x-ms-user-quota-resets-after: 00:00:05`` (the
  estate keeps no clock; the benchmark server enforces a real quota);
- anything else: 404 (or 405 for writes and other POSTs) in ARM's error format.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlencode, urlsplit

from azure.core.pipeline.transport import AsyncHttpTransport, HttpTransport
from azure.core.rest import HttpRequest
from azure.core.rest._http_response_impl import HttpResponseImpl
from azure.core.rest._http_response_impl_async import AsyncHttpResponseImpl
from azure.core.utils import case_insensitive_dict

from shared.core import arm_ids

_BACKUP_INSTANCES = "/providers/microsoft.dataprotection/backupinstances"
_RESOURCE_GRAPH = "/providers/microsoft.resourcegraph/resources"


class EstateError(ValueError):
    """The estate file is missing or malformed; the message names the problem."""


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes
    headers: Mapping[str, str] = field(default_factory=dict)


def _error(status: int, code: str, message: str) -> Reply:
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    return Reply(status, body, {"Content-Type": "application/json; charset=utf-8", "x-ms-failure-cause": "gateway"})


def _ok(body: bytes) -> Reply:
    return Reply(200, body, {"Content-Type": "application/json; charset=utf-8"})


def _is_collection_path(lower_path: str) -> bool:
    """After the last ``/providers/{namespace}``, ARM paths alternate type/name: odd = collection."""
    marker = lower_path.rfind("/providers/")
    if marker < 0:
        return False
    tail = [p for p in lower_path[marker + len("/providers/") :].split("/") if p]
    return len(tail) >= 2 and (len(tail) - 1) % 2 == 1


def _nested(body: Any, *path: str) -> str:
    """A string deep in a body, or "" when any step is missing or not an object."""
    for key in path:
        if not isinstance(body, Mapping):
            return ""
        body = body.get(key)
    return body if isinstance(body, str) else ""


def _collection_scope(lower_path: str) -> str:
    """The scope a collection lists: its parent resource, or the subscription / resource group
    for ``{scope}/providers/{namespace}/{type}``."""
    parent = lower_path.rsplit("/", 1)[0]
    head, sep, namespace = parent.rpartition("/providers/")
    return head if sep and "/" not in namespace else parent


class Estate:
    """An indexed, read-only estate. Build with ``Estate.load(path)`` or ``Estate(mapping)``."""

    def __init__(self, resources: Mapping[str, Any], page_size: int | None = None) -> None:
        self._by_id: dict[str, tuple[str, Any]] = {}
        self._collections: dict[str, list[str]] = {}
        self._subscriptions: set[str] = set()
        self._resource_groups: set[str] = set()
        self._backup_by_datasource: dict[str, list[str]] = {}
        self._graph_rows: dict[tuple[str, frozenset[str]], list[dict[str, Any]]] = {}
        # Each body encoded once: a GET answers with these bytes and a list page joins them, so
        # serving a page of 10,000 accounts allocates that page once (not its text and then its bytes).
        self._encoded: dict[str, bytes] = {}
        self._graph_lock = threading.Lock()
        self.page_size = page_size
        for raw_id, body in resources.items():
            if raw_id.startswith("$"):
                continue
            self._add(raw_id, body)

    # -- building ---------------------------------------------------------------------------
    def _add(self, raw_id: str, body: Any) -> None:
        parsed = arm_ids.parse(raw_id)
        if parsed is None or not parsed.name:
            raise EstateError(f"estate key {raw_id!r} is not an ARM resource id")
        if not isinstance(body, Mapping):
            raise EstateError(f"estate entry {raw_id!r}: expected a JSON object body")
        canonical = arm_ids.normalise(raw_id)
        lower = canonical.lower()
        self._by_id[lower] = (canonical, body)
        self._encoded[lower] = json.dumps(body).encode()
        self._subscriptions.add(parsed.subscription.lower())
        if parsed.resource_group:
            self._resource_groups.add(
                f"/subscriptions/{parsed.subscription}/resourcegroups/{parsed.resource_group}".lower()
            )
        self._collections.setdefault(lower.rsplit("/", 1)[0], []).append(lower)
        if len(parsed.segments) == 1 and parsed.resource_group:
            sub_level = f"/subscriptions/{parsed.subscription}/providers/{parsed.full_type}".lower()
            self._collections.setdefault(sub_level, []).append(lower)
        if parsed.full_type == "microsoft.dataprotection/backupvaults/backupinstances":
            source = _nested(body, "properties", "dataSourceInfo", "resourceID")
            if source:
                self._backup_by_datasource.setdefault(arm_ids.normalise(source).lower(), []).append(lower)

    @classmethod
    def load(cls, path: str | Path, page_size: int | None = None) -> Estate:
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise EstateError(f"estate file {path} does not exist") from None
        except OSError as exc:
            raise EstateError(f"estate file {path} cannot be read: {exc.strerror}") from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise EstateError(f"estate file {path} is not valid JSON: {exc}") from None
        if not isinstance(data, Mapping):
            raise EstateError(f"estate file {path}: expected a JSON object mapping resource ids to bodies")
        try:
            return cls(data, page_size=page_size)
        except EstateError as exc:
            raise EstateError(f"estate file {path}: {exc}") from None

    # -- queries ----------------------------------------------------------------------------
    def __contains__(self, resource_id: str) -> bool:
        return arm_ids.normalise(resource_id).lower() in self._by_id

    def __len__(self) -> int:
        return len(self._by_id)

    def get(self, resource_id: str) -> Any | None:
        entry = self._by_id.get(arm_ids.normalise(resource_id).lower())
        return entry[1] if entry else None

    def ids_of_type(self, full_type: str) -> Iterator[str]:
        wanted = full_type.lower()
        for canonical, _ in self._by_id.values():
            parsed = arm_ids.parse(canonical)
            if parsed is not None and parsed.full_type == wanted:
                yield canonical

    def has_subscription(self, subscription_id: str) -> bool:
        return subscription_id.lower() in self._subscriptions

    @property
    def subscriptions(self) -> set[str]:
        return set(self._subscriptions)

    def _scope_exists(self, lower_scope: str) -> bool:
        # Service singletons (blobServices/default, fileServices/default) exist for every account
        # in ARM even when the estate holds no body for them.
        while lower_scope.endswith("/default") and lower_scope not in self._by_id:
            lower_scope = lower_scope.rsplit("/", 2)[0]
        if lower_scope in self._by_id or lower_scope in self._resource_groups:
            return True
        parts = lower_scope.strip("/").split("/")
        return len(parts) == 2 and parts[0] == "subscriptions" and parts[1] in self._subscriptions

    def _page(self, origin: str, path: str, ids: list[str], query: Mapping[str, list[str]]) -> Reply:
        """``{"value": [...], "nextLink": ...}`` joined from the encoded bodies in one allocation;
        ``nextLink`` on the origin (scheme and host) the request came to, like ARM's."""
        start, end = 0, len(ids)
        next_link = ""
        if self.page_size:
            start = int(query.get("$skipToken", ["0"])[0] or 0)
            end = min(start + self.page_size, len(ids))
            if end < len(ids):
                rest = {k: v[0] for k, v in query.items() if k != "$skipToken"}
                rest["$skipToken"] = str(end)
                next_link = f"{origin}{path}?{urlencode(rest)}"
        parts = [b'{"value": [']
        for n, lower in enumerate(ids[start:end]):
            if n:
                parts.append(b", ")
            parts.append(self._encoded[lower])
        parts.append(b"]" + (b', "nextLink": ' + json.dumps(next_link).encode() if next_link else b"") + b"}")
        return _ok(b"".join(parts))

    def _graph_rows_of(self, name: str, subscriptions: frozenset[str]) -> list[dict[str, Any]]:
        from shared.adapters.resource_graph import project_rows

        key = (name, subscriptions)
        with self._graph_lock:
            cached = self._graph_rows.get(key)
        if cached is not None:
            return cached
        rows = [
            row
            for canonical, body in self._by_id.values()
            if not subscriptions or canonical.split("/")[2].lower() in subscriptions
            for row in project_rows(name, canonical, body)
        ]
        rows.sort(key=lambda r: str(r.get("id", "")).lower())
        with self._graph_lock:  # the estate is read-only: a query's rows never change
            self._graph_rows[key] = rows
        return rows

    def resource_graph(self, body: Mapping[str, Any]) -> Reply:
        """Resource Graph's answer to a ``QueryRequest`` body (only nsp-drift's own queries)."""
        from shared.adapters.resource_graph import PAGE_SIZE, query_name

        name = query_name(str(body.get("query", "")))
        if name is None:
            return _error(400, "BadRequest", "the offline estate answers only nsp-drift's own Resource Graph queries")
        subscriptions = body.get("subscriptions") or []
        groups = body.get("managementGroups") or []
        if not isinstance(subscriptions, list) or not isinstance(groups, list) or not (subscriptions or groups):
            return _error(400, "BadRequest", "a query needs subscriptions or managementGroups")
        scope = frozenset() if groups else frozenset(str(s).lower() for s in subscriptions)
        rows = self._graph_rows_of(name, scope)
        options = body.get("options") or {}
        try:
            start = int(options.get("$skipToken") or 0)
            top = int(options.get("$top") or PAGE_SIZE)
        except (TypeError, ValueError):
            return _error(400, "BadRequest", "$skipToken and $top must be integers here")
        if start < 0 or not 1 <= top <= PAGE_SIZE:
            return _error(400, "BadRequest", f"$top must be 1..{PAGE_SIZE}")
        page = rows[start : start + top]
        payload: dict[str, Any] = {
            "totalRecords": len(rows),
            "count": len(page),
            "resultTruncated": "false",
            "data": page,
        }
        if start + top < len(rows):
            payload["$skipToken"] = str(start + top)
        return Reply(
            200,
            json.dumps(payload).encode(),
            {
                "Content-Type": "application/json; charset=utf-8",
                "x-ms-user-quota-remaining": "14",
                "x-ms-user-quota-resets-after": "00:00:05",
            },
        )

    def answer(self, method: str, url: str, body: bytes | None = None) -> Reply:
        """The reply ARM would give; pure with respect to the estate. ``body``: the request's
        (only a Resource Graph query POST has one)."""
        split = urlsplit(url)
        origin = f"{split.scheme or 'https'}://{split.netloc or 'management.azure.com'}"
        path = arm_ids.normalise(unquote(split.path))
        lower = path.lower()
        query = parse_qs(split.query)
        if method.upper() == "POST" and lower == _RESOURCE_GRAPH:
            return self._resource_graph_post(body)
        if method.upper() != "GET":
            return _error(405, "MethodNotAllowed", f"The offline estate is read-only: {method} {path}")
        if lower in self._by_id:
            return _ok(self._encoded[lower])
        ids = self._listing(lower)
        if ids is not None:
            return self._page(origin, path, ids, query)
        subscription = self._unknown_subscription(lower)
        if subscription is not None:
            return _error(404, "SubscriptionNotFound", f"The subscription '{subscription}' could not be found.")
        return _error(404, "ResourceNotFound", f"The Resource '{path}' was not found.")

    def _resource_graph_post(self, body: bytes | None) -> Reply:
        try:
            request = json.loads(body or b"{}")
        except (TypeError, ValueError):
            return _error(400, "BadRequest", "the Resource Graph request body is not JSON")
        if not isinstance(request, Mapping):
            return _error(400, "BadRequest", "the Resource Graph request body is not a JSON object")
        return self.resource_graph(request)

    def _unknown_subscription(self, lower: str) -> str | None:
        """The subscription ``lower`` lies in when the estate has no such subscription."""
        parts = lower.strip("/").split("/")
        if len(parts) >= 2 and parts[0] == "subscriptions" and parts[1] not in self._subscriptions:
            return parts[1]
        return None

    def _listing(self, lower: str) -> list[str] | None:
        """The ids a GET of ``lower`` lists (the backup instances of a data source, or a collection
        whose scope exists), or None when ``lower`` lists nothing here (then it is a 404)."""
        if lower.endswith(_BACKUP_INSTANCES) and lower.count("/providers/") >= 2:
            scope = lower[: -len(_BACKUP_INSTANCES)]
            if scope in self._by_id:
                return self._backup_by_datasource.get(scope, [])
        if self._unknown_subscription(lower) is not None or not _is_collection_path(lower):
            return None
        if lower in self._collections:
            return self._collections[lower]
        if self._scope_exists(_collection_scope(lower)):
            return []
        return None


# -- azure-core transports ------------------------------------------------------------------


class _RequestLog:
    """Thread-safe record of what the SDK asked for (the request counts in notes and benchmarks)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: list[tuple[str, str]] = []

    def record(self, method: str, url: str) -> None:
        with self._lock:
            self.requests.append((method, urlsplit(url).path))

    def counts(self) -> Counter[str]:
        with self._lock:
            return Counter(f"{m} {p}" for m, p in self.requests)

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()


def _headers(reply: Reply) -> Any:
    headers = case_insensitive_dict(reply.headers)
    headers.setdefault("x-ms-request-id", "offline-estate")
    return headers


def _reply_to(estate: Estate, request: HttpRequest) -> Reply:
    content = request.content
    if isinstance(content, str):
        content = content.encode()
    if isinstance(content, bytes | bytearray) and content:
        return estate.answer(request.method, request.url, bytes(content))
    return estate.answer(request.method, request.url)  # (subclasses in tests override the 2-argument form)


def _response_fields(request: HttpRequest, reply: Reply) -> dict[str, Any]:
    """What both response classes hand to azure-core: the whole body is already in memory."""
    headers = _headers(reply)
    return {
        "request": request,
        "internal_response": None,
        "status_code": reply.status,
        "reason": "OK" if reply.status < 400 else "Error",
        "content_type": headers.get("Content-Type"),
        "headers": headers,
        "stream_download_generator": None,
    }


class _SyncResponse(HttpResponseImpl):
    def __init__(self, request: HttpRequest, reply: Reply) -> None:
        super().__init__(**_response_fields(request, reply))
        self._content = reply.body
        self._is_stream_consumed = True

    def read(self) -> bytes:
        return self._content or b""

    def close(self) -> None:
        self._is_closed = True


class _AsyncResponse(AsyncHttpResponseImpl):
    def __init__(self, request: HttpRequest, reply: Reply) -> None:
        super().__init__(**_response_fields(request, reply))
        self._content = reply.body
        self._is_stream_consumed = True

    async def read(self) -> bytes:
        return self._content or b""

    async def close(self) -> None:
        self._is_closed = True


class EstateTransport(HttpTransport):  # type: ignore[type-arg]
    """Synchronous azure-core transport over an Estate."""

    def __init__(self, estate: Estate, log: _RequestLog | None = None) -> None:
        self.estate = estate
        self.log = log or _RequestLog()

    def __enter__(self) -> EstateTransport:
        return self

    def __exit__(self, *args: object) -> None:
        return None

    def open(self) -> None:
        return None

    def close(self) -> None:
        return None

    def send(self, request: HttpRequest, **kwargs: Any) -> _SyncResponse:
        self.log.record(request.method, request.url)
        return _SyncResponse(request, _reply_to(self.estate, request))


class AsyncEstateTransport(AsyncHttpTransport):  # type: ignore[type-arg]
    """Asynchronous azure-core transport over an Estate (the reader's async SDK clients use it)."""

    def __init__(self, estate: Estate, log: _RequestLog | None = None) -> None:
        self.estate = estate
        self.log = log or _RequestLog()

    async def __aenter__(self) -> AsyncEstateTransport:
        return self

    async def __aexit__(self, *args: object) -> None:
        return None

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def send(self, request: HttpRequest, **kwargs: Any) -> _AsyncResponse:
        self.log.record(request.method, request.url)
        return _AsyncResponse(request, _reply_to(self.estate, request))


RequestLog = _RequestLog
