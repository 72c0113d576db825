"""Azure identity for the SDK clients: one credential per process and cloud.

Managed identity in Azure, azure-identity's DefaultAzureCredential elsewhere (shared.wiring builds
the ARM clients with it; the Table/Queue stores and the Event Grid sender use ``credential_sync``).
"""

from __future__ import annotations

import importlib
import os
import threading
from typing import Any

from shared.adapters.cloud import Cloud, cloud_from_env

_credential_lock = threading.Lock()
_credentials: dict[tuple[bool, str], Any] = {}


def make_credential(aio: bool, cloud: Cloud, **kwargs: Any) -> Any:
    """Managed identity in Azure (deterministic, no fallback chain); elsewhere azure-identity's
    DefaultAzureCredential (a service principal in AZURE_TENANT_ID/AZURE_CLIENT_ID/AZURE_CLIENT_SECRET,
    workload identity, the developer's Azure CLI login...) signing in at the cloud's authority.
    ``kwargs`` go to azure-identity (``transport``: the ARM clients' shared session)."""
    client_id = os.environ.get("AZURE_CLIENT_ID") or None
    in_azure = bool(os.environ.get("WEBSITE_INSTANCE_ID") or os.environ.get("IDENTITY_ENDPOINT"))
    module = importlib.import_module("azure.identity.aio" if aio else "azure.identity")
    if in_azure:
        return module.ManagedIdentityCredential(client_id=client_id, **kwargs)
    return module.DefaultAzureCredential(authority=cloud.authority_host, **kwargs)


def credential_sync(cloud: Cloud | None = None) -> Any:
    """One synchronous credential per process and cloud for the Table/Queue SDKs (identity-based
    AzureWebJobsStorage); its token cache lives in the instance."""
    cloud = cloud or cloud_from_env(os.environ)
    with _credential_lock:
        key = (False, cloud.authority_host)
        if key not in _credentials:
            _credentials[key] = make_credential(aio=False, cloud=cloud)
        return _credentials[key]
