"""The sweep's listing: ids from raw, streamed ARM pages (shared.adapters.raw_list), no SDK model per
account, at most 5 KB of memory per listed account (tracemalloc: a count, not a timing)."""

from __future__ import annotations

import gc
import json
import tracemalloc
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from azure.core.exceptions import DecodeError, ResourceNotFoundError

from bench.estates import SUB, build_estate
from bench.run import live, unlimited
from bench.server import Faults, serving
from shared.adapters import runtime
from shared.adapters.arm_reader import ArmReader
from shared.adapters.estate import Estate, Reply
from shared.adapters.raw_list import parse_listing
from shared.service.scan import ScopeError, accounts_in_scope
from shared.wiring import EstateClients

MAX_BYTES_PER_ACCOUNT = 5 * 1024
ACCOUNTS = 10_000
LIST_PATH = f"/subscriptions/{SUB}/providers/Microsoft.Storage/storageAccounts"


def traced_listing(list_ids: Callable[[], list[str]]) -> tuple[list[str], float]:
    """(ids, peak traced bytes per listed account) of one listing."""
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        ids = list_ids()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return ids, (peak - base) / max(len(ids), 1)


@pytest.fixture(scope="module")
def big_estate() -> Estate:
    # One page of 10,000 accounts (no page size: the hardest case, the whole listing in one body).
    return Estate(build_estate(ACCOUNTS))


def test_memory_per_listed_account_from_the_estate_transport(big_estate: Estate) -> None:
    clients = EstateClients(big_estate)
    try:
        ids, per_account = traced_listing(lambda: runtime.run(ArmReader(clients).list_account_ids(SUB)))
    finally:
        runtime.run(clients.close())
    assert len(ids) == ACCOUNTS and len(set(ids)) == ACCOUNTS
    # The peak includes the page itself (about 2.9 KB of JSON per account, served in one body).
    assert per_account <= MAX_BYTES_PER_ACCOUNT, f"{per_account / 1024:.2f} KB per listed account"


def test_memory_per_listed_account_over_the_loopback_https_arm(big_estate: Estate) -> None:
    with serving(big_estate, latency=0.0) as server:
        clients = live(server, budget=unlimited())
        try:
            first = next(big_estate.ids_of_type("microsoft.storage/storageaccounts"))
            runtime.run(ArmReader(clients).read_account(first))  # warm: TLS, the token, the SDK imports
            ids, per_account = traced_listing(lambda: runtime.run(ArmReader(clients).list_account_ids(SUB)))
        finally:
            runtime.run(clients.close())
    assert len(ids) == ACCOUNTS
    assert per_account <= MAX_BYTES_PER_ACCOUNT, f"{per_account / 1024:.2f} KB per listed account"


def test_the_listing_builds_no_sdk_model(big_estate: Estate, monkeypatch: pytest.MonkeyPatch) -> None:
    from azure.mgmt.storage.aio.operations import _operations

    def forbidden(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the listing deserialised SDK models")

    monkeypatch.setattr(_operations, "_deserialize", forbidden)
    clients = EstateClients(Estate(build_estate(30), page_size=7))
    try:
        ids = runtime.run(ArmReader(clients).list_account_ids(SUB))
    finally:
        runtime.run(clients.close())
    assert len(ids) == 30
    assert clients.log.counts()[f"GET {LIST_PATH}"] == 5  # 7 + 7 + 7 + 7 + 2, nextLink followed


# -- the streamed page parser ------------------------------------------------------------------------


async def _chunks(body: bytes, size: int) -> AsyncIterator[bytes]:
    for start in range(0, len(body), size):
        yield body[start : start + size]


def parse(body: bytes, size: int) -> tuple[list[Any], str | None]:
    items: list[Any] = []
    link = runtime.run(parse_listing(_chunks(body, size), items.append))
    return items, link


PAGE = {
    "nextLink": "https://management.azure.com/next?$skipToken=2",
    "value": [
        {"id": "/a", "properties": {"n": 12345, "ok": True, "x": None, "f": -1.5e3, "s": 'ünï\\"{[,'}},
        {"id": "/b", "tags": {}, "list": [1, [2, {"k": "v"}]]},
        7,
        "/c",
    ],
    "extra": {"ignored": [1, 2]},
}


@pytest.mark.parametrize("indent", [None, 2])
def test_every_chunk_boundary_parses_the_same(indent: int | None) -> None:
    body = json.dumps(PAGE, indent=indent, ensure_ascii=False).encode()
    for size in [*range(1, 40), len(body)]:
        items, link = parse(body, size)
        assert items == PAGE["value"] and link == PAGE["nextLink"], size


def test_page_shapes() -> None:
    assert parse(b'\xef\xbb\xbf{"value": []}', 3) == ([], None)  # a byte order mark
    assert parse(b"{}", 1) == ([], None)
    assert parse(b'{"value": null, "nextLink": null}', 4) == ([], None)
    assert parse(b'{"nextLink": "", "value": [{"id": "/x"}]}', 5) == ([{"id": "/x"}], None)
    with pytest.raises(ValueError, match="whose value is a dict"):
        parse(b'{"value": {"id": "/x"}}', 4)


@pytest.mark.parametrize(
    "body",
    [b"", b"[]", b'{"value": [{"id": "/a"}', b'{"value": [{"id": "/a"},]}', b'{"value": []} x', b'{"value": [1 2]}'],
)
def test_broken_pages_raise(body: bytes) -> None:
    with pytest.raises(json.JSONDecodeError):
        parse(body, 3)


# -- a page that breaks off is read again; errors are the SDK's -----------------------------------------


class TruncatingEstate(Estate):
    """Cuts the first ``cuts`` answers to the listing in half (a response that breaks off)."""

    def __init__(self, resources: Any, cuts: int) -> None:
        super().__init__(resources)
        self.cuts = cuts

    def answer(self, method: str, url: str, body: bytes | None = None) -> Reply:
        reply = super().answer(method, url, body)
        if self.cuts and url.split("?", maxsplit=1)[0].endswith(LIST_PATH):
            self.cuts -= 1
            return Reply(reply.status, reply.body[: len(reply.body) // 2], reply.headers)
        return reply


def test_a_page_that_breaks_off_is_read_again() -> None:
    clients = EstateClients(TruncatingEstate(build_estate(20), cuts=2))
    try:
        ids = runtime.run(ArmReader(clients).list_account_ids(SUB))
        assert len(ids) == 20
        assert clients.log.counts()[f"GET {LIST_PATH}"] == 3
        clients.estate.cuts = 3  # type: ignore[attr-defined]
        with pytest.raises(DecodeError):
            runtime.run(ArmReader(clients).list_account_ids(SUB))
    finally:
        runtime.run(clients.close())


def test_an_unknown_subscription_is_the_sdks_not_found() -> None:
    clients = EstateClients(Estate(build_estate(3)))
    other = "11111111-2222-3333-4444-555555555555"
    try:
        with pytest.raises(ResourceNotFoundError) as caught:
            runtime.run(ArmReader(clients).list_account_ids(other))
        assert caught.value.status_code == 404
        with pytest.raises(ScopeError, match=f"^subscription {other} not found$"):
            runtime.run(accounts_in_scope(ArmReader(clients), [other]))
    finally:
        runtime.run(clients.close())


def test_truncated_and_reset_listings_over_https_recover() -> None:
    # Half of the answers break off or are reset: the page is read again, the list stays whole.
    estate = Estate(build_estate(40), page_size=10)
    faults = Faults(truncated=0.3, reset=0.2, seed=3)
    with serving(estate, latency=0.0, faults=faults) as server:
        clients = live(server, budget=unlimited())
        try:
            ids = runtime.run(ArmReader(clients).list_account_ids(SUB))
        finally:
            runtime.run(clients.close())
    assert sorted(ids) == sorted(estate.ids_of_type("microsoft.storage/storageaccounts"))
    assert faults.injected["truncated"] > 0
