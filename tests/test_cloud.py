"""The cloud is a setting (NSP_DRIFT_CLOUD, NSP_DRIFT_AUTHORITY_HOST): every SDK client gets the
cloud's ARM endpoint and token scope, azure-identity its authority; the product reaches the
loopback HTTPS ARM (bench/server.py) only through these settings, the way a custom-cloud user
configures it, and a named cloud's real hostnames through a proxy (tests/tunnel.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from bench.estates import SUB
from bench.run import live
from bench.server import ArmServer, serving
from shared.adapters import runtime
from shared.adapters.arm_reader import ArmReader, TargetReads
from shared.adapters.cloud import NAMED, PUBLIC, CloudError, cloud_from_env, parse_cloud
from shared.adapters.estate import Estate
from shared.adapters.resource_graph import ResourceGraphReader
from shared.entrypoints.settings import SettingsError, load_settings
from shared.wiring import LiveClients
from tests.tunnel import tunnel

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "shared" / "samples" / "estate.json"
KINDS = ("storage", "network", "compute", "dataprotection", "graph")
PERIMETER = (
    f"/subscriptions/{SUB}/resourceGroups/rg-network/providers/Microsoft.Network/networkSecurityPerimeters/"
    "nsp-contoso-data"
)


def account(name: str) -> str:
    return f"/subscriptions/{SUB}/resourceGroups/rg-data/providers/Microsoft.Storage/storageAccounts/{name}"


# -- the settings -----------------------------------------------------------------------------------


def test_named_clouds_carry_what_the_sdks_ship() -> None:
    from azure.core import AzureClouds
    from azure.identity import AzureAuthorityHosts
    from azure.mgmt.core.tools import get_arm_endpoints

    authorities = {
        "AzureCloud": AzureAuthorityHosts.AZURE_PUBLIC_CLOUD,
        "AzureChinaCloud": AzureAuthorityHosts.AZURE_CHINA,
        "AzureUSGovernment": AzureAuthorityHosts.AZURE_GOVERNMENT,
    }
    assert {c.name for c in NAMED.values()} == set(authorities)
    for cloud in NAMED.values():
        assert cloud.sdk_cloud is not None
        endpoints = get_arm_endpoints(AzureClouds[cloud.sdk_cloud])
        assert cloud.resource_manager == endpoints["resource_manager"].rstrip("/")
        assert [cloud.credential_scope] == endpoints["credential_scopes"]
        assert cloud.authority_host == f"https://{authorities[cloud.name]}"


@pytest.mark.parametrize("value", ["", "AzureCloud", "azurecloud", " AZURECLOUD "])
def test_the_public_cloud_is_the_default(value: str) -> None:
    assert parse_cloud(value) == PUBLIC
    assert cloud_from_env({}) == PUBLIC


def test_named_and_custom_clouds() -> None:
    assert parse_cloud("AzureChinaCloud").resource_manager == "https://management.chinacloudapi.cn"
    assert parse_cloud("azureusgovernment").authority_host == "https://login.microsoftonline.us"
    custom = cloud_from_env(
        {
            "NSP_DRIFT_CLOUD": "https://arm.contoso.example:8443/",
            "NSP_DRIFT_AUTHORITY_HOST": "https://login.contoso.example/",
        }
    )
    assert custom.is_custom and custom.name == "custom"
    assert custom.resource_manager == "https://arm.contoso.example:8443"
    assert custom.credential_scope == "https://arm.contoso.example:8443/.default"
    assert custom.authority_host == "https://login.contoso.example"
    assert custom.client_kwargs() == {
        "base_url": "https://arm.contoso.example:8443",
        "credential_scopes": ["https://arm.contoso.example:8443/.default"],
    }
    with_path = parse_cloud("https://gateway.contoso.example/arm", "https://login.contoso.example")
    assert with_path.credential_scope == "https://gateway.contoso.example/arm/.default"


@pytest.mark.parametrize(
    ("cloud", "authority", "message"),
    [
        ("AzureGermanCloud", "", "NSP_DRIFT_CLOUD: 'AzureGermanCloud' is not AzureCloud, AzureChinaCloud, "),
        ("http://arm.contoso.example", "https://login.contoso.example", "NSP_DRIFT_CLOUD: expected an https URL"),
        ("https://arm.contoso.example?x=1", "https://login.contoso.example", "NSP_DRIFT_CLOUD: 'https://arm"),
        ("https://arm.contoso.example", "", "NSP_DRIFT_AUTHORITY_HOST: required with the custom ARM endpoint"),
        ("https://arm.contoso.example", "login.contoso.example", "NSP_DRIFT_AUTHORITY_HOST: expected an https URL"),
        ("https://arm.contoso.example", "https://login.contoso.example/x", "NSP_DRIFT_AUTHORITY_HOST: 'https://"),
        ("AzureChinaCloud", "https://login.contoso.example", "NSP_DRIFT_AUTHORITY_HOST: only for a custom ARM"),
        ("https://:443", "https://login.contoso.example", "NSP_DRIFT_CLOUD: expected an https URL"),
    ],
)
def test_a_bad_cloud_setting_is_named(cloud: str, authority: str, message: str) -> None:
    with pytest.raises(CloudError) as caught:
        parse_cloud(cloud, authority)
    assert str(caught.value).startswith(message)
    env = {"AzureWebJobsStorage": "UseDevelopmentStorage=true", "NSP_DRIFT_CLOUD": cloud}
    with pytest.raises(SettingsError) as setting:
        load_settings({**env, "NSP_DRIFT_AUTHORITY_HOST": authority})
    assert str(setting.value).startswith(message)


def test_settings_carry_the_cloud() -> None:
    env = {"AzureWebJobsStorage": "UseDevelopmentStorage=true", "NSP_DRIFT_CLOUD": "AzureUSGovernment"}
    assert load_settings(env).cloud == NAMED["azureusgovernment"]
    assert load_settings({"AzureWebJobsStorage": "UseDevelopmentStorage=true"}).cloud == PUBLIC


# -- every client, every cloud ----------------------------------------------------------------------


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No ambient cloud, identity or proxy settings of the machine running the tests."""
    for name in list(os.environ):
        upper = name.upper()
        if upper.startswith(("NSP_DRIFT_", "AZURE_", "IDENTITY_", "MSI_")) or upper in {
            "HTTPS_PROXY",
            "HTTP_PROXY",
            "ALL_PROXY",
            "NO_PROXY",
            "WEBSITE_INSTANCE_ID",
            "SSL_CERT_DIR",
        }:
            monkeypatch.delenv(name)
    return monkeypatch


@pytest.mark.parametrize("name", ["AzureCloud", "AzureChinaCloud", "AzureUSGovernment", "custom"])
def test_every_client_gets_the_clouds_endpoint_and_scope(name: str, clean_env: pytest.MonkeyPatch) -> None:
    if name == "custom":
        clean_env.setenv("NSP_DRIFT_CLOUD", "https://arm.contoso.example")
        clean_env.setenv("NSP_DRIFT_AUTHORITY_HOST", "https://login.contoso.example")
    else:
        clean_env.setenv("NSP_DRIFT_CLOUD", name)
    clients = LiveClients()  # the settings, as the app and the CLI read them
    cloud = clients.cloud
    assert cloud.name == name
    try:
        for kind in KINDS:
            client = clients.graph() if kind == "graph" else getattr(clients, kind)(SUB)
            assert client._config.credential_scopes == [cloud.credential_scope], kind
            base = client._client._base_url.format(endpoint=getattr(client._config, "base_url", None))
            assert base == cloud.resource_manager, kind
            assert client._client._pipeline._transport.http is clients.http, kind  # the one session
    finally:
        runtime.run(clients.close())


# -- end to end: the loopback ARM as a custom cloud and as each named cloud ------------------------


def _read_everything(clients: LiveClients) -> dict[str, Any]:
    """Reads through every client kind: list, one account per feature family, a perimeter's
    associations and a Resource Graph query."""

    async def go() -> dict[str, Any]:
        reader = ArmReader(clients)
        ids = await reader.list_account_ids(SUB)
        snapshots = [await reader.read_account(account(n)) for n in ("stcontosobkp01", "stcontosovhd01")]
        cmk = await reader.read_account(account("stcontosocmk01"))
        members = await TargetReads(clients).perimeter_storage_accounts(PERIMETER)
        rows = await ResourceGraphReader(clients.graph()).account_summaries([SUB])
        return {"ids": ids, "snapshots": [*snapshots, cmk], "members": members, "rows": rows}

    try:
        return runtime.run(go())
    finally:
        runtime.run(clients.close())


def _assert_read(result: dict[str, Any], estate: Estate) -> None:
    assert sorted(result["ids"]) == sorted(estate.ids_of_type("Microsoft.Storage/storageAccounts"))
    backup, vhd, cmk = result["snapshots"]
    assert backup.backup_instances and vhd.unmanaged_disks and not backup.incomplete and not vhd.incomplete
    assert cmk.perimeters[0].perimeter_members  # the network client read the associations
    assert result["members"] and len(result["rows"]) == len(result["ids"])


def _token_scopes(server: ArmServer) -> set[str]:
    return {r["scope"] for r in server.token_requests}


def test_the_loopback_arm_as_a_custom_cloud() -> None:
    estate = Estate.load(SAMPLE)
    with serving(estate, latency=0.0) as server:
        clients = live(server)  # NSP_DRIFT_CLOUD / NSP_DRIFT_AUTHORITY_HOST = the server, SSL_CERT_FILE = its CA
        assert clients.cloud.resource_manager == server.base_url and clients.cloud.is_custom
        result = _read_everything(clients)
    _assert_read(result, estate)
    assert _token_scopes(server) == {f"{server.base_url}/.default"}
    assert {r["tenant"] for r in server.token_requests} == {server.tenant_id}
    assert len(server.token_requests) == 1  # one credential, its token cached for every client
    arm_requests = sum(server.counts.values())
    assert server.authorization == {"issued": arm_requests}  # every ARM request carried that token
    assert clients.http.sessions_created == 1  # one HTTP session for the clients and the credential


@pytest.mark.parametrize("name", ["AzureCloud", "AzureChinaCloud", "AzureUSGovernment"])
def test_named_clouds_reach_their_own_hosts(name: str, clean_env: pytest.MonkeyPatch) -> None:
    # The loopback ARM answers for the named cloud's ARM and login hosts (its certificate names
    # them; the proxy tunnels there), so the product runs unchanged with only NSP_DRIFT_CLOUD set.
    cloud = parse_cloud(name)
    arm_host = urlsplit(cloud.resource_manager).hostname or ""
    login_host = urlsplit(cloud.authority_host).hostname or ""
    estate = Estate.load(SAMPLE)
    with serving(estate, latency=0.0, hostnames=(arm_host, login_host)) as server, tunnel(server.port) as proxy:
        env = server.environment()
        for key in ("AZURE_TENANT_ID", "AZURE_CLIENT_ID", "AZURE_CLIENT_SECRET", "SSL_CERT_FILE"):
            clean_env.setenv(key, env[key])
        clean_env.setenv("NSP_DRIFT_CLOUD", name)
        clean_env.setenv("HTTPS_PROXY", proxy.url)
        clients = LiveClients()
        result = _read_everything(clients)
    _assert_read(result, estate)
    assert set(proxy.targets) == {f"{arm_host}:443", f"{login_host}:443"}
    assert set(server.hosts) == {arm_host, login_host}
    assert server.hosts[login_host] == len(server.token_requests) == 1
    assert _token_scopes(server) == {cloud.credential_scope}
    assert server.authorization == {"issued": sum(server.counts.values())}
    # The proxy was looked up once per host for the whole run, not once per request.
    assert clients.http.proxy_lookups == 2 and sum(server.counts.values()) > 20


def test_no_proxy_is_honoured(clean_env: pytest.MonkeyPatch) -> None:
    estate = Estate.load(SAMPLE)
    with serving(estate, latency=0.0) as server, tunnel(server.port) as proxy:
        for key, value in server.environment().items():
            clean_env.setenv(key, value)
        clean_env.setenv("HTTPS_PROXY", proxy.url)
        clean_env.setenv("NO_PROXY", "127.0.0.1,localhost")
        clients = LiveClients()
        ids = runtime.run(ArmReader(clients).list_account_ids(SUB))
        runtime.run(clients.close())
    assert len(ids) == 15 and not proxy.targets


# -- the command line -------------------------------------------------------------------------------


@pytest.fixture
def sample_findings() -> Iterator[list[Any]]:
    done = subprocess.run(
        [sys.executable, "-m", "shared.entrypoints.cli", "scan", "--estate", "sample", "--format", "json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 1, done.stderr
    yield _findings(done.stdout)


def _findings(text: str) -> list[Any]:
    payload = json.loads(text)
    assert not [a for a in payload["accounts"] if a["error"] or a["incomplete"]]
    return sorted(
        (f["resource"].lower(), f["rule"], tuple(i["subject"] for i in f["evidence"])) for f in payload["findings"]
    )


@pytest.mark.parametrize("how", ["option", "setting"])
def test_scan_subscription_against_a_custom_cloud(how: str, sample_findings: list[Any], tmp_path: Path) -> None:
    estate = Estate.load(SAMPLE)
    with serving(estate, latency=0.0) as server:
        env = {k: v for k, v in os.environ.items() if not k.upper().startswith(("NSP_DRIFT_", "AZURE_"))}
        env.update(server.environment())
        command = [sys.executable, "-m", "shared.entrypoints.cli", "scan", "--subscription", SUB, "--format", "json"]
        if how == "option":
            del env["NSP_DRIFT_CLOUD"], env["NSP_DRIFT_AUTHORITY_HOST"]
            command += ["--cloud", server.base_url, "--authority-host", server.base_url]
        done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, check=False, timeout=120)
    assert done.returncode == 1, done.stderr  # high findings, as in the sample
    assert _findings(done.stdout) == sample_findings
    assert _token_scopes(server) == {f"{server.base_url}/.default"}
    assert server.authorization == {"issued": sum(server.counts.values())}


def test_scan_without_trusting_the_ca_fails_cleanly() -> None:
    estate = Estate.load(SAMPLE)
    with serving(estate, latency=0.0) as server:
        env = {k: v for k, v in os.environ.items() if not k.upper().startswith(("NSP_DRIFT_", "AZURE_"))}
        env.update({k: v for k, v in server.environment().items() if "CA_BUNDLE" not in k and "CERT" not in k})
        done = subprocess.run(
            [sys.executable, "-m", "shared.entrypoints.cli", "scan", "--subscription", SUB],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("nsp-drift: error: cannot list storage accounts of subscription")
    assert "Traceback" not in done.stderr and not server.counts  # no request got past TLS


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--cloud", "Mars"], "nsp-drift: error: --cloud: 'Mars' is not AzureCloud"),
        (
            ["--cloud", "https://arm.example"],
            "nsp-drift: error: --authority-host (or NSP_DRIFT_AUTHORITY_HOST): required",
        ),
        (
            ["--cloud", "AzureChinaCloud", "--authority-host", "https://x.example"],
            "nsp-drift: error: --authority-host: only",
        ),
    ],
)
def test_scan_cloud_usage_errors(args: list[str], message: str, clean_env: pytest.MonkeyPatch) -> None:
    from io import StringIO

    from shared.entrypoints.cli import main

    out, err = StringIO(), StringIO()
    assert main(["scan", "--subscription", SUB, *args], out, err) == 2
    assert err.getvalue().startswith(message), err.getvalue()
    err = StringIO()
    assert main(["scan", "--estate", "sample", "--cloud", "AzureCloud"], out, err) == 2
    assert "--cloud and --authority-host apply to --subscription scans" in err.getvalue()


def test_the_credential_asks_the_token_for_the_arm_scope() -> None:
    # The form azure-identity posted: client credentials for the cloud's ARM scope.
    estate = Estate.load(SAMPLE)
    with serving(estate, latency=0.0) as server:
        clients = live(server)
        runtime.run(ArmReader(clients).list_account_ids(SUB))
        runtime.run(clients.close())
    (request,) = server.token_requests
    assert request["grant_type"] == "client_credentials" and request["client_id"] == server.client_id
    assert "client_secret" not in request  # the server never records the secret
    assert parse_qs(f"scope={request['scope']}")["scope"] == [f"{server.base_url}/.default"]


def test_the_warm_up_token_is_the_one_every_read_uses() -> None:
    """``LiveClients.warm_up`` (the app calls it when it builds its context) asks the credential
    for the first token while the invocation does its state reads; the reads that follow, from
    several clients at once, use that token: one token request in all, even when they start
    while it is still in flight (the server answers it after 200 ms)."""
    estate = Estate.load(SAMPLE)
    with serving(estate, latency=0.2) as server:
        clients = live(server)
        clients.warm_up()
        clients.warm_up()  # once per instance
        result = _read_everything(clients)  # starts at once: the warm-up's request is in flight
        runtime.run(clients.close())
    _assert_read(result, estate)
    assert len(server.token_requests) == 1
    assert server.authorization == {"issued": sum(server.counts.values())}


def test_concurrent_identical_token_requests_are_one() -> None:
    import asyncio

    from azure.core.credentials import AccessTokenInfo

    from shared.wiring import _SharedTokenRequests

    class Counting:
        def __init__(self) -> None:
            self.calls: list[tuple[Any, ...]] = []

        async def get_token_info(self, *scopes: str, options: Any = None) -> AccessTokenInfo:
            self.calls.append((scopes, options))
            await asyncio.sleep(0.05)
            if "bad" in scopes:
                raise RuntimeError("no token")
            return AccessTokenInfo(f"token-{len(self.calls)}", 2**31 - 1)

        async def close(self) -> None:
            return None

    inner = Counting()
    shared = _SharedTokenRequests(inner)

    async def scenario() -> list[Any]:
        together = await asyncio.gather(*(shared.get_token_info("arm/.default", options={}) for _ in range(5)))
        other = await shared.get_token_info("graph/.default", options={})
        later = await shared.get_token_info("arm/.default", options={})  # the inner credential's cache decides
        failed = await asyncio.gather(*(shared.get_token_info("bad") for _ in range(2)), return_exceptions=True)
        return [{t.token for t in together}, other.token, later.token, [type(f).__name__ for f in failed]]

    together, other, later, failed = runtime.run(scenario())
    assert together == {"token-1"} and other == "token-2" and later == "token-3"
    assert failed == ["RuntimeError", "RuntimeError"]  # every waiter sees the failure, none is cached
    assert len(inner.calls) == 4
