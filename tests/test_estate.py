"""The offline ARM: what ``Estate.answer`` replies, and that the real SDK clients run on it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from azure.core.credentials import AccessToken, AccessTokenInfo
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.mgmt.storage import StorageManagementClient

from shared.adapters import runtime
from shared.adapters.estate import Estate, EstateError, EstateTransport, RequestLog
from shared.entrypoints.cli import SAMPLE_NAMES
from shared.wiring import EstateClients
from tests import estate_builder as eb
from tests.sample_estate import PARTNER_SUB, RG_DATA, SUB, account_id, renamed

ARM = "https://management.azure.com"
API = "?api-version=2025-08-01"
STORAGE = "providers/Microsoft.Storage/storageAccounts"
UNKNOWN_SUB = "11111111-2222-3333-4444-555555555555"


def in_group(resources: dict[str, Any], rg: str) -> dict[str, Any]:
    return renamed(resources, {f"/resourceGroups/{RG_DATA}/": f"/resourceGroups/{rg}/"})


def tenant() -> dict[str, Any]:
    return eb.merge(
        {"$comment": "ignored", "$schema": 42},
        eb.outsider("sta"),
        eb.outsider("stb"),
        in_group(eb.outsider("stc"), "rg-other"),
        renamed(eb.outsider("stp"), {SUB: PARTNER_SUB}),
        eb.replication_policies("sta"),
        eb.nfs_share("sta", "share-a"),
        eb.backup_instance("sta", "pol", "bi-a"),
        eb.backup_policy("pol", "VaultStore"),
    )


@pytest.fixture(scope="module")
def estate() -> Estate:
    return Estate(tenant())


def get(estate: Estate, path: str, method: str = "GET") -> tuple[int, Any]:
    reply = estate.answer(method, f"{ARM}{path}{API}")
    assert reply.headers["Content-Type"].startswith("application/json")
    return reply.status, json.loads(reply.body)


def names(payload: Any) -> list[str]:
    return sorted(item["name"] for item in payload["value"])


def assert_arm_error(status: int, payload: Any, expected_status: int, code: str) -> None:
    assert status == expected_status
    assert set(payload) == {"error"}
    assert payload["error"]["code"] == code
    assert payload["error"]["message"]


# -- resources and collections ------------------------------------------------------------------------


def test_resource_get_returns_its_body(estate: Estate) -> None:
    status, body = get(estate, account_id("sta"))
    assert status == 200
    assert body == tenant()[account_id("sta")]
    assert body["properties"]["encryption"]["keySource"] == "Microsoft.Storage"


def test_resource_get_is_case_insensitive_and_ignores_trailing_slashes(estate: Estate) -> None:
    status, body = get(estate, account_id("sta").upper().replace("/SUBSCRIPTIONS/", "/subscriptions/") + "/")
    assert status == 200 and body["name"] == "sta"


def test_resource_group_collection(estate: Estate) -> None:
    status, payload = get(estate, f"/subscriptions/{SUB}/resourceGroups/{RG_DATA}/{STORAGE}")
    assert status == 200 and names(payload) == ["sta", "stb"]
    status, payload = get(estate, f"/subscriptions/{SUB}/resourceGroups/rg-other/{STORAGE}")
    assert status == 200 and names(payload) == ["stc"]


def test_subscription_collection(estate: Estate) -> None:
    status, payload = get(estate, f"/subscriptions/{SUB}/{STORAGE}")
    assert status == 200 and names(payload) == ["sta", "stb", "stc"]
    status, payload = get(estate, f"/subscriptions/{PARTNER_SUB}/{STORAGE}")
    assert names(payload) == ["stp"]


def test_child_collections(estate: Estate) -> None:
    status, payload = get(estate, f"{account_id('sta')}/objectReplicationPolicies")
    assert status == 200
    assert names(payload) == ["141d23dc-8958-4b48-b6e6-5a40bf1af116", "c6c23999-fd4e-433a-bcf9-1db69d27cd8a"]
    status, payload = get(estate, f"{account_id('sta')}/fileServices/default/shares")
    assert status == 200 and names(payload) == ["share-a"]


@pytest.mark.parametrize(
    "path",
    [
        f"{account_id('stb')}/objectReplicationPolicies",
        # the fileServices/default singleton exists for every account, with or without a body
        f"{account_id('stb')}/fileServices/default/shares",
        f"{account_id('stb')}/networkSecurityPerimeterConfigurations",
        f"/subscriptions/{SUB}/resourceGroups/{RG_DATA}/providers/Microsoft.Compute/virtualMachines",
        f"/subscriptions/{SUB}/providers/Microsoft.Compute/virtualMachines",
    ],
)
def test_empty_collection_when_the_parent_exists(estate: Estate, path: str) -> None:
    assert get(estate, path) == (200, {"value": []})


@pytest.mark.parametrize(
    "path",
    [
        account_id("stnope"),
        f"{account_id('stnope')}/objectReplicationPolicies",
        f"{account_id('stnope')}/fileServices/default/shares",
        f"{account_id('sta')}/managementPolicies/default",
        f"/subscriptions/{SUB}/resourceGroups/rg-missing/{STORAGE}",
    ],
)
def test_not_found_in_arm_error_format(estate: Estate, path: str) -> None:
    status, payload = get(estate, path)
    assert_arm_error(status, payload, 404, "ResourceNotFound")
    assert "was not found" in payload["error"]["message"]


@pytest.mark.parametrize(
    "path",
    [
        f"/subscriptions/{UNKNOWN_SUB}/{STORAGE}",
        f"/subscriptions/{UNKNOWN_SUB}/resourceGroups/{RG_DATA}/{STORAGE}/sta",
    ],
)
def test_unknown_subscription(estate: Estate, path: str) -> None:
    status, payload = get(estate, path)
    assert_arm_error(status, payload, 404, "SubscriptionNotFound")
    assert UNKNOWN_SUB in payload["error"]["message"]


def test_backup_instances_by_extension_routing(estate: Estate) -> None:
    status, payload = get(estate, f"{account_id('sta')}/providers/Microsoft.DataProtection/backupInstances")
    assert status == 200 and names(payload) == ["bi-a"]
    assert payload["value"][0]["properties"]["dataSourceInfo"]["resourceID"] == account_id("sta")
    assert get(estate, f"{account_id('stb')}/providers/Microsoft.DataProtection/backupInstances") == (
        200,
        {"value": []},
    )
    status, payload = get(estate, f"{account_id('stnope')}/providers/Microsoft.DataProtection/backupInstances")
    assert_arm_error(status, payload, 404, "ResourceNotFound")


def test_backup_instance_by_its_own_id(estate: Estate) -> None:
    instance_id = next(iter(eb.backup_instance("sta", "pol", "bi-a")))
    status, body = get(estate, instance_id)
    assert status == 200 and body["name"] == "bi-a"


@pytest.mark.parametrize("method", ["PUT", "PATCH", "DELETE", "POST"])
def test_writes_are_refused(estate: Estate, method: str) -> None:
    status, payload = get(estate, account_id("sta"), method)
    assert_arm_error(status, payload, 405, "MethodNotAllowed")
    assert get(estate, account_id("sta"))[0] == 200


# -- paging ---------------------------------------------------------------------------------------------


def test_paging_with_next_link() -> None:
    estate = Estate(eb.merge(*(eb.outsider(f"stpage{i}") for i in range(5))), page_size=2)
    url: str | None = f"{ARM}/subscriptions/{SUB}/{STORAGE}{API}"
    pages = []
    while url:
        reply = estate.answer("GET", url)
        assert reply.status == 200
        payload = json.loads(reply.body)
        pages.append([item["name"] for item in payload["value"]])
        url = payload.get("nextLink")
        if url:
            query = parse_qs(urlsplit(url).query)
            assert query["api-version"] == ["2025-08-01"]  # the rest of the query is kept
            assert query["$skipToken"] == [str(2 * len(pages))]
    assert [len(p) for p in pages] == [2, 2, 1]
    assert sorted(name for page in pages for name in page) == [f"stpage{i}" for i in range(5)]


def test_no_next_link_without_page_size(estate: Estate) -> None:
    _, payload = get(estate, f"/subscriptions/{SUB}/{STORAGE}")
    assert "nextLink" not in payload


class _Token:
    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        return AccessToken("offline", 2**31 - 1)

    def get_token_info(self, *scopes: str, **kwargs: Any) -> AccessTokenInfo:
        return AccessTokenInfo("offline", 2**31 - 1)


def test_sync_sdk_follows_next_links() -> None:
    estate = Estate(eb.merge(*(eb.outsider(f"stpage{i}") for i in range(5))), page_size=2)
    log = RequestLog()
    client = StorageManagementClient(_Token(), SUB, transport=EstateTransport(estate, log), retry_total=0)
    assert sorted(a.name for a in client.storage_accounts.list()) == [f"stpage{i}" for i in range(5)]
    assert len(log.requests) == 3
    assert all(method == "GET" and path.lower().endswith("/storageaccounts") for method, path in log.requests)
    log.reset()
    assert log.requests == []


def test_async_sdk_sees_arm_errors(estate: Estate) -> None:
    clients = EstateClients(estate)
    storage = clients.storage(SUB)

    async def delete() -> None:
        await storage.storage_accounts.delete(RG_DATA, "sta")

    async def missing() -> None:
        await storage.storage_accounts.get_properties(RG_DATA, "stnope")

    with pytest.raises(HttpResponseError) as refused:
        runtime.run(delete())
    assert refused.value.status_code == 405 and refused.value.error.code == "MethodNotAllowed"
    with pytest.raises(ResourceNotFoundError) as not_found:
        runtime.run(missing())
    assert not_found.value.error.code == "ResourceNotFound"
    runtime.run(clients.close())
    assert [m for m, _ in clients.log.requests] == ["DELETE", "GET"]


# -- estate files ---------------------------------------------------------------------------------------


def test_comment_keys_are_ignored(tmp_path: Path) -> None:
    path = tmp_path / "estate.json"
    path.write_text(json.dumps({"$comment": "a note", "$generator": ["x"], **eb.outsider("sta")}), encoding="utf-8")
    estate = Estate.load(path)
    assert len(estate) == 1
    assert account_id("sta") in estate and "$comment" not in estate.subscriptions


def test_queries(estate: Estate) -> None:
    assert len(estate) == len([k for k in tenant() if not k.startswith("$")])
    assert estate.get(account_id("sta").lower())["name"] == "sta"
    assert estate.get(account_id("stnope")) is None
    stc = f"/subscriptions/{SUB}/resourceGroups/rg-other/{STORAGE}/stc"
    stp = f"/subscriptions/{PARTNER_SUB}/resourceGroups/{RG_DATA}/{STORAGE}/stp"
    expected = [account_id("sta"), account_id("stb"), stc, stp]
    assert sorted(estate.ids_of_type("Microsoft.Storage/storageAccounts")) == sorted(expected)
    assert estate.subscriptions == {SUB, PARTNER_SUB}
    assert estate.has_subscription(SUB.upper()) and not estate.has_subscription(UNKNOWN_SUB)


def test_the_bundled_sample_loads() -> None:
    estate = Estate.load(SAMPLE_NAMES["sample"])
    for name in ("stcontosoclean01", "stcontosoclean02", "stcontosooutside01", "stcontosolegacy01"):
        assert account_id(name) in estate


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "does not exist"),
        ("{not json", "is not valid JSON"),
        ("[]", "expected a JSON object mapping resource ids to bodies"),
        ('"text"', "expected a JSON object mapping resource ids to bodies"),
        ('{"storage-account-1": {}}', "estate key 'storage-account-1' is not an ARM resource id"),
        ('{"/subscriptions/abc": {}}', "estate key '/subscriptions/abc' is not an ARM resource id"),
        (
            json.dumps({account_id("sta"): [1, 2]}),
            f"estate entry '{account_id('sta')}': expected a JSON object body",
        ),
    ],
    ids=["missing", "not-json", "list", "string", "bad-key", "subscription-key", "body-not-object"],
)
def test_malformed_estate_files(tmp_path: Path, content: str | None, message: str) -> None:
    path = tmp_path / "estate.json"
    if content is not None:
        path.write_text(content, encoding="utf-8")
    with pytest.raises(EstateError) as caught:
        Estate.load(path)
    text = str(caught.value)
    assert str(path) in text and message in text
    assert "\n" not in text


def test_unreadable_estate_path(tmp_path: Path) -> None:
    with pytest.raises(EstateError, match="cannot be read"):
        Estate.load(tmp_path)  # a directory


def test_malformed_mapping_without_a_file() -> None:
    with pytest.raises(EstateError, match="is not an ARM resource id"):
        Estate({"nope": {}})
