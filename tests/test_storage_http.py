"""One requests session per process for the Table and Queue clients (shared.adapters.storage_http):
the environment requests would merge on every call (proxies, NO_PROXY, REQUESTS_CA_BUNDLE) is
resolved once per host, with requests' own result."""

from __future__ import annotations

import pytest
import requests

from shared.adapters.queue import EvaluationQueue
from shared.adapters.state.table_store import TableStateStore
from shared.adapters.storage_http import OncePerHostSession, shared_session, storage_transport
from shared.core.changes import Target, TargetKind
from tests.azurite import Azurite

URLS = [
    "https://stnspdrift.table.core.windows.net/nspdriftstate()",
    "https://stnspdrift.queue.core.windows.net/nsp-drift-evaluations/messages",
    "http://127.0.0.1:10002/devstoreaccount1/Tables",
    "http://localhost:10001/devstoreaccount1/q/messages",
]
ENVIRONMENTS = [
    {},
    {"HTTPS_PROXY": "http://proxy.contoso.example:3128", "HTTP_PROXY": "http://proxy.contoso.example:3129"},
    {"HTTPS_PROXY": "http://proxy.contoso.example:3128", "NO_PROXY": ".core.windows.net,127.0.0.1"},
    {"ALL_PROXY": "http://proxy.contoso.example:3128", "NO_PROXY": "localhost:10001"},
    {"REQUESTS_CA_BUNDLE": "/etc/ssl/contoso.pem"},
    {"CURL_CA_BUNDLE": "/etc/ssl/curl.pem", "HTTPS_PROXY": "http://u:p@proxy.contoso.example:3128"},
]
VARIABLES = {"HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "NO_PROXY", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"}


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_same_settings_as_requests_resolved_once_per_host(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.upper() in VARIABLES:
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    ours, theirs = OncePerHostSession(), requests.Session()  # requests' own: trust_env=True
    for _ in range(3):
        for url in URLS:
            for verify in (None, True, False, "/explicit.pem"):
                expected = theirs.merge_environment_settings(url, {}, None, verify, None)
                assert ours.merge_environment_settings(url, {}, None, verify, None) == expected, (url, verify)
            explicit = {"https": "http://explicit.example:1"}
            expected = theirs.merge_environment_settings(url, dict(explicit), None, None, None)
            assert ours.merge_environment_settings(url, dict(explicit), None, None, None) == expected
    assert ours.lookups == len(URLS)  # once per (scheme, host:port), not per call
    assert ours.trust_env is False  # so requests itself never reads the environment or ~/.netrc per call


@pytest.mark.azurite
def test_tables_and_queue_share_one_session(azurite: Azurite) -> None:
    session = shared_session()
    before = session.lookups
    connection = azurite.connection_string
    store = TableStateStore.from_connection_string(connection, "httpshared", transport=storage_transport())
    queue = EvaluationQueue.from_connection_string(connection, "httpshared-q", transport=storage_transport())
    account = "/subscriptions/s/resourceGroups/r/providers/Microsoft.Storage/storageAccounts/st"
    for n in range(20):
        assert store.get_account(f"{account}{n}") is None
        queue.send(Target(TargetKind.ACCOUNT, f"{account}{n}"), 0)
    store.close()
    queue.close()
    # Both services went through the one session; the environment was read once per endpoint.
    pool_keys = session.get_adapter("http://").poolmanager.pools.keys()  # (the container itself is not iterable)
    pools = {key.key_port for key in pool_keys}
    assert {azurite.table_port, azurite.queue_port} <= pools
    assert session.lookups - before <= 2
    # Closing the clients left the shared session usable.
    again = TableStateStore.from_connection_string(connection, "httpshared", transport=storage_transport())
    assert again.get_account(f"{account}0") is None
    again.close()
