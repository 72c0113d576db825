"""Both StateStore implementations against real backends: Table storage on Azurite, SQLite on disk.

Every test runs twice (``store_factory`` is parametrised). Tests that need two independent
writers take two stores from the factory: two clients of one Azurite table set, or two
connections to one SQLite file.
"""

from __future__ import annotations

import hashlib
import json
import random
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from azure.data.tables import TableServiceClient

from shared.adapters.state.sqlite_store import SqliteStateStore
from shared.adapters.state.table_store import StateTooLarge, TableStateStore
from shared.core.changes import Actor, Provenance, Target, TargetKind
from shared.core.state.base import (
    AccountState,
    AssociationState,
    ConflictError,
    ProfileState,
    StateStore,
    StoreUnavailable,
    WindowBusy,
)
from tests.azurite import Azurite, free_port, unique_name

SUB = "00000000-0000-0000-0000-00000000abcd"
RG = f"/subscriptions/{SUB}/resourceGroups/rg-data"
PERIMETER = f"{RG}/providers/Microsoft.Network/networkSecurityPerimeters/nsp-main"
OTHER_PERIMETER = f"{RG}/providers/Microsoft.Network/networkSecurityPerimeters/nsp-other"
VM = f"{RG}/providers/Microsoft.Compute/virtualMachines/vm-legacy"
BACKUP = f"{RG}/providers/Microsoft.DataProtection/backupVaults/bv1/backupInstances/bi-1"

StoreFactory = Callable[[], StateStore]


def account_id(name: str) -> str:
    return f"{RG}/providers/Microsoft.Storage/storageAccounts/{name}"


def finding(account: str, index: int, rng: random.Random | None = None) -> dict[str, Any]:
    """The shape drift.finding_record stores; hex noise keeps large states from compressing away."""
    noise = f"{rng.getrandbits(128):032x}" if rng else "0" * 32
    return {
        "rule": "inbound-rule-too-broad",
        "title": "Inbound access rule allows a broad public range",
        "severity": "high",
        "resource": account,
        "account": account.rsplit("/", 1)[-1],
        "perimeter": PERIMETER,
        "summary": f"Inbound rule rule-{index} allows 10.{index % 256}.0.0/8 ({noise[:8]})",
        "evidence": [
            {
                "subject": f"rule-{index}-{noise}",
                "summary": f"Inbound rule rule-{index} allows 10.{index % 256}.0.0/8 ({noise[:8]})",
                "addressPrefixes": [f"10.{index % 256}.0.0/8"],
                "profile": "default",
                "n": index,
            }
        ],
        "suppression": None,
        "key": hashlib.sha256(f"{account}|{index}|{noise}".encode()).hexdigest(),
    }


def account_state(name: str = "stdata01", **overrides: Any) -> AccountState:
    aid = account_id(name)
    fields: dict[str, Any] = {
        "account_id": aid,
        "findings": (finding(aid, 1), finding(aid, 2)),
        "associations": (AssociationState(PERIMETER, "assoc-1", "Enforced", "default"),),
        "key_vault_name": "kv-cmk",
        "vm_ids": (VM.lower(),),
        "backup_instance_ids": (BACKUP.lower(),),
        "evaluated_at": "2026-11-25T06:00:00+00:00",
        "snapshot_digest": "ab" * 32,
    }
    fields.update(overrides)
    return AccountState(**fields)


def provenance(event_id: str, user: str = "alice@contoso.com") -> Provenance:
    return Provenance(
        event_ids=(event_id,),
        actors=(Actor(name="Alice", upn=user, object_id="oid-1", client_ip="203.0.113.7"),),
        operation_names=("Microsoft.Storage/storageAccounts/write",),
        correlation_ids=(f"corr-{event_id}",),
        event_times=("2026-11-25T06:00:00Z",),
    )


# -- fixtures ---------------------------------------------------------------------------------------


@pytest.fixture(params=[pytest.param("table", marks=pytest.mark.azurite), "sqlite"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def store_factory(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreFactory]:
    made: list[StateStore] = []
    if backend == "table":
        server: Azurite = request.getfixturevalue("azurite")
        prefix = unique_name("t")  # fresh tables per test

        def make() -> StateStore:
            made.append(TableStateStore.from_connection_string(server.connection_string, prefix))
            return made[-1]
    else:

        def make() -> StateStore:
            made.append(SqliteStateStore(tmp_path / "state" / "nsp-drift.db"))
            return made[-1]

    yield make
    for store in made:
        store.close()


@pytest.fixture
def store(store_factory: StoreFactory) -> StateStore:
    return store_factory()


def in_threads(count: int, work: Callable[[int], Any]) -> list[Any]:
    """Run ``work(i)`` in ``count`` threads released together, so they really race."""
    barrier = threading.Barrier(count)

    def run(i: int) -> Any:
        barrier.wait()
        return work(i)

    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(run, range(count)))


# -- account and profile state ----------------------------------------------------------------------


def test_account_round_trips_and_ignores_id_casing(store: StateStore) -> None:
    state = account_state()
    etag = store.put_account(state, None)

    stored = store.get_account(state.account_id.upper())

    assert stored is not None
    assert stored.value == state
    assert stored.etag == etag
    assert store.all_account_ids() == [state.account_id]


def test_occurrences_and_tombstones_round_trip_and_tombstones_are_not_listed(store: StateStore) -> None:
    live = account_state("stlive01", occurrences={"k-sftp": 3, "k-mode": 1})
    store.put_account(live, None)
    doomed = account_state("stgone01")
    etag = store.put_account(doomed, None)
    tombstone = AccountState(doomed.account_id, occurrences={"k-sftp": 2}, deleted_at="2026-11-25T07:00:00+00:00")
    store.put_account(tombstone, etag)

    assert store.get_account(live.account_id).value == live  # type: ignore[union-attr]
    assert store.get_account(doomed.account_id).value == tombstone  # type: ignore[union-attr]
    assert store.all_account_ids() == [live.account_id]  # the tombstone is no account to sweep
    assert store.accounts_for(TargetKind.PERIMETER, PERIMETER) == [live.account_id]
    assert store.accounts_for(TargetKind.VIRTUAL_MACHINE, VM) == [live.account_id]


def test_account_state_written_before_occurrences_existed_still_reads() -> None:
    """The exact document main (02faea9) stored: no occurrences, no deleted_at."""
    from shared.adapters.state import codec

    aid = account_id("stold01")
    text = (
        '{"account_id":"' + aid + '","associations":[],"backup_instance_ids":[],'
        '"evaluated_at":"2026-11-25T06:00:00+00:00","findings":[{"key":"k1","rule":"sftp-enabled"}],'
        '"format":1,"key_vault_name":"","snapshot_digest":"ab","summary_digest":"cd","vm_ids":[]}'
    )
    state = codec.account_from_json(text)
    assert state.occurrences == {} and state.deleted_at == "" and not state.is_tombstone
    assert state.findings == ({"key": "k1", "rule": "sftp-enabled"},)
    for bad, message in (({"k1": 0}, "positive integer"), ({"k1": "2"}, "positive integer"), ([1], "expected dict")):
        document = {**json.loads(codec.account_to_json(state)), "occurrences": bad}
        with pytest.raises(codec.CodecError, match=message):
            codec.account_from_dict(document)


@pytest.mark.azurite
def test_table_rows_written_before_tombstones_existed_are_listed(azurite: Azurite) -> None:
    """A row as main wrote it (no ``Deleted`` property) is a live account."""
    from shared.adapters.state import codec
    from shared.adapters.state.table_store import pack

    prefix = unique_name("t")
    store = TableStateStore.from_connection_string(azurite.connection_string, prefix)
    try:
        store.put_account(account_state("stnew01"), None)  # creates the tables
        old = account_state("stold01")
        document = {
            "account": {k: v for k, v in codec.account_to_dict(old).items() if k not in {"occurrences", "deleted_at"}},
            "unindex": [],
        }
        entity = {
            "PartitionKey": "account",
            "RowKey": hashlib.sha256(codec.account_key(old.account_id).encode()).hexdigest(),
            "AccountId": old.account_id,
            **pack(codec.dumps(document), "old row"),
        }
        service = TableServiceClient.from_connection_string(azurite.connection_string)
        service.get_table_client(f"{prefix}state").create_entity(entity)
        assert sorted(store.all_account_ids()) == sorted([account_id("stnew01"), old.account_id])
        assert store.get_account(old.account_id).value == old  # type: ignore[union-attr]
    finally:
        store.close()


def test_missing_rows_read_as_none(store: StateStore) -> None:
    assert store.get_account(account_id("nosuch")) is None
    assert store.get_profile(PERIMETER, "default") is None
    assert store.all_account_ids() == []
    assert store.accounts_for(TargetKind.PERIMETER, PERIMETER) == []


def test_profile_round_trips(store: StateStore) -> None:
    rules = (
        {"name": "allow-corp", "direction": "Inbound", "addressPrefixes": ["198.51.100.0/24"]},
        {"name": "to-partner", "direction": "Outbound", "fullyQualifiedDomainNames": ["partner.example"]},
    )
    first = ProfileState(PERIMETER, "default", 3, rules)
    etag = store.put_profile(first, None)
    unversioned = ProfileState(PERIMETER, "default", None, ())
    etag2 = store.put_profile(unversioned, etag)

    stored = store.get_profile(PERIMETER.upper(), "DEFAULT")

    assert stored is not None and stored.value == unversioned and stored.etag == etag2 != etag


def test_losing_writer_gets_conflict(store_factory: StoreFactory) -> None:
    writer_a, writer_b = store_factory(), store_factory()
    etag = writer_a.put_account(account_state(), None)
    seen_by_a = writer_a.get_account(account_id("stdata01"))
    seen_by_b = writer_b.get_account(account_id("stdata01"))
    assert seen_by_a is not None and seen_by_b is not None and seen_by_a.etag == seen_by_b.etag == etag

    new_etag = writer_a.put_account(account_state(key_vault_name="kv-a"), seen_by_a.etag)
    with pytest.raises(ConflictError):
        writer_b.put_account(account_state(key_vault_name="kv-b"), seen_by_b.etag)

    stored = writer_b.get_account(account_id("stdata01"))
    assert stored is not None and stored.value.key_vault_name == "kv-a" and stored.etag == new_etag


def test_create_and_update_preconditions(store: StateStore) -> None:
    with pytest.raises(ConflictError):  # update of a row that does not exist
        store.put_account(account_state(), "1")
    etag = store.put_account(account_state(), None)
    with pytest.raises(ConflictError):  # create of a row that exists
        store.put_account(account_state(), None)
    profile = ProfileState(PERIMETER, "default", 1)
    store.put_profile(profile, None)
    with pytest.raises(ConflictError):
        store.put_profile(profile, None)
    with pytest.raises(ConflictError):
        store.put_profile(profile, etag)  # an ETag of another row


def test_delete_account_is_conditional(store: StateStore) -> None:
    etag = store.put_account(account_state(), None)
    newer = store.put_account(account_state(evaluated_at="later"), etag)

    with pytest.raises(ConflictError):
        store.delete_account(account_id("stdata01"), etag)
    store.delete_account(account_id("stdata01"), newer)
    with pytest.raises(ConflictError):
        store.delete_account(account_id("stdata01"), newer)

    assert store.get_account(account_id("stdata01")) is None
    assert store.all_account_ids() == []


def test_recreated_row_gets_a_fresh_etag(store: StateStore) -> None:
    first = store.put_account(account_state(), None)
    store.delete_account(account_id("stdata01"), first)
    second = store.put_account(account_state(), None)

    assert second != first  # else a writer holding the old ETag would win against the new row
    with pytest.raises(ConflictError):
        store.put_account(account_state(), first)


# -- reverse indexes --------------------------------------------------------------------------------


def test_reverse_indexes_follow_writes_and_deletes(store: StateStore) -> None:
    one, two = (
        account_state("stone"),
        account_state("sttwo", key_vault_name="", vm_ids=(), backup_instance_ids=()),
    )
    etag_one = store.put_account(one, None)
    etag_two = store.put_account(two, None)

    assert sorted(store.accounts_for(TargetKind.PERIMETER, PERIMETER.upper())) == sorted(
        [one.account_id, two.account_id]
    )
    assert store.accounts_for(TargetKind.KEY_VAULT, "KV-CMK") == [one.account_id]
    assert store.accounts_for(TargetKind.VIRTUAL_MACHINE, VM) == [one.account_id]
    assert store.accounts_for(TargetKind.BACKUP_INSTANCE, BACKUP) == [one.account_id]

    moved = account_state(
        "stone",
        associations=(AssociationState(OTHER_PERIMETER, "assoc-2", "Learning", "default"),),
        key_vault_name="kv-new",
        vm_ids=(),
    )
    store.put_account(moved, etag_one)

    assert store.accounts_for(TargetKind.PERIMETER, PERIMETER) == [two.account_id]
    assert store.accounts_for(TargetKind.PERIMETER, OTHER_PERIMETER) == [one.account_id]
    assert store.accounts_for(TargetKind.KEY_VAULT, "kv-cmk") == []
    assert store.accounts_for(TargetKind.KEY_VAULT, "kv-new") == [one.account_id]
    assert store.accounts_for(TargetKind.VIRTUAL_MACHINE, VM) == []
    assert store.accounts_for(TargetKind.BACKUP_INSTANCE, BACKUP) == [one.account_id]

    store.delete_account(two.account_id, etag_two)
    assert store.accounts_for(TargetKind.PERIMETER, PERIMETER) == []
    assert store.all_account_ids() == [one.account_id]


def test_losing_writer_leaves_the_winners_index_intact(store_factory: StoreFactory) -> None:
    writer_a, writer_b = store_factory(), store_factory()
    etag = writer_a.put_account(account_state(), None)
    writer_a.put_account(account_state(key_vault_name="kv-a"), etag)
    with pytest.raises(ConflictError):
        writer_b.put_account(account_state(key_vault_name="kv-b"), etag)

    assert writer_a.accounts_for(TargetKind.KEY_VAULT, "kv-a") == [account_id("stdata01")]
    assert writer_a.accounts_for(TargetKind.PERIMETER, PERIMETER) == [account_id("stdata01")]


# -- large states -----------------------------------------------------------------------------------


def test_large_state_round_trips(store: StateStore) -> None:
    aid = account_id("stbig")
    rng = random.Random(7)
    state = account_state("stbig", findings=tuple(finding(aid, i, rng) for i in range(5000)))

    etag = store.put_account(state, None)
    stored = store.get_account(aid)
    assert stored is not None and stored.value == state and stored.etag == etag

    bigger = account_state("stbig", findings=(*state.findings, finding(aid, 5000, rng)))
    store.put_account(bigger, etag)
    again = store.get_account(aid)
    assert again is not None and len(again.value.findings) == 5001


def _entity_bytes(entity: dict[str, Any]) -> dict[str, int]:
    """Stored size per property, as Table storage counts it (strings are UTF-16)."""
    sizes = {}
    for name, value in entity.items():
        if isinstance(value, bytes):
            sizes[name] = len(value) + 4
        elif isinstance(value, str):
            sizes[name] = len(value) * 2 + 4
        else:
            sizes[name] = 8
    return sizes


@pytest.mark.azurite
def test_large_state_is_chunked_within_table_limits(azurite: Azurite) -> None:
    prefix = unique_name("t")
    store = TableStateStore.from_connection_string(azurite.connection_string, prefix)
    aid = account_id("stbig")
    rng = random.Random(11)
    store.put_account(account_state("stbig", findings=tuple(finding(aid, i, rng) for i in range(5000))), None)
    store.close()

    with TableServiceClient.from_connection_string(azurite.connection_string) as service:
        (entity,) = service.get_table_client(f"{prefix}state").query_entities("PartitionKey eq 'account'")
    sizes = _entity_bytes(dict(entity))
    chunks = [name for name in sizes if name.startswith("data")]

    assert entity["Enc"] == "gzip" and len(chunks) == entity["Chunks"] > 1  # really split
    assert max(sizes.values()) <= 64 * 1024  # per-property limit
    overhead = 4 + 2 * (len(entity["PartitionKey"]) + len(entity["RowKey"]))
    assert overhead + sum(8 + 2 * len(name) + size for name, size in sizes.items()) < 1024 * 1024


@pytest.mark.azurite
def test_state_beyond_one_entity_is_refused_clearly(azurite: Azurite) -> None:
    store = TableStateStore.from_connection_string(azurite.connection_string, unique_name("t"))
    aid = account_id("sthuge")
    noise = random.Random(3).randbytes(1_100_000).hex()  # hex of random bytes: gzip halves it at best
    with pytest.raises(StateTooLarge, match="sthuge"):
        store.put_account(account_state("sthuge", findings=({"key": "k", "evidence": noise},)), None)
    assert store.get_account(aid) is None
    store.close()


# -- idempotency --------------------------------------------------------------------------------------


def test_record_events_returns_only_new_ids(store: StateStore) -> None:
    assert store.record_events(["evt-1", "evt-2"]) == {"evt-1", "evt-2"}
    assert store.record_events(["evt-2", "evt-3", "evt-3"]) == {"evt-3"}
    assert store.record_events([]) == set()
    assert store.record_events(["evt-1", "evt-2", "evt-3"]) == set()


def test_concurrent_record_events_admit_each_id_once(store_factory: StoreFactory) -> None:
    stores = [store_factory() for _ in range(4)]
    results = in_threads(4, lambda i: stores[i].record_events(["evt-shared", f"evt-{i}"]))

    assert sum("evt-shared" in r for r in results) == 1
    assert all(f"evt-{i}" in r for i, r in enumerate(results))


def test_purge_forgets_old_event_ids(backend: str, store: StateStore) -> None:
    assert isinstance(store, SqliteStateStore | TableStateStore)
    store.record_events(["evt-old"])
    assert store.purge_events(older_than=0.5) == 0  # recorded "now", long after epoch 0.5
    assert store.purge_events(older_than=4e9) == 1
    assert store.record_events(["evt-old"]) == {"evt-old"}


# -- coalescing windows and their leases -----------------------------------------------------------

LEASE = 60.0


def test_first_event_opens_the_window_and_later_ones_merge(store: StateStore) -> None:
    target = Target(TargetKind.ACCOUNT, account_id("stdata01"))
    bob = Provenance(
        event_ids=("evt-2",),
        actors=(Actor(appid="11111111-2222-3333-4444-555555555555"),),
        correlation_ids=("corr-2",),
        event_times=("2026-11-25T06:00:05Z",),
    )

    assert store.add_pending(target, provenance("evt-1"), 30, now=1000.0) is True  # owed a message
    store.mark_queued(target, 1000.0)  # ... which was sent
    assert store.add_pending(Target(TargetKind.ACCOUNT, target.resource_id.upper()), bob, 30, now=1005.0) is False
    assert store.add_pending(target, provenance("evt-1"), 30, now=1006.0) is False  # re-delivery

    marker = store.claim_pending(target, 1031.0, LEASE)

    assert marker is not None
    assert (
        marker.target == target
        and marker.first_seen == 1000.0
        and marker.due == 1030.0
        and marker.attempts == 0
        and marker.lease_until == 1031.0 + LEASE
    )
    assert marker.provenance == Provenance(
        event_ids=("evt-1", "evt-2"),
        actors=(
            Actor(name="Alice", upn="alice@contoso.com", object_id="oid-1", client_ip="203.0.113.7"),
            bob.actors[0],
        ),
        operation_names=("Microsoft.Storage/storageAccounts/write",),
        correlation_ids=("corr-evt-1", "corr-2"),
        event_times=("2026-11-25T06:00:00Z", "2026-11-25T06:00:05Z"),
        source="event",
    )


def test_a_window_whose_message_was_never_sent_asks_the_redelivered_event_to_send_it(store: StateStore) -> None:
    target = Target(TargetKind.ACCOUNT, account_id("stdata01"))
    assert store.add_pending(target, provenance("evt-1"), 30, now=1000.0) is True  # ... the send fails
    assert store.add_pending(target, provenance("evt-2"), 30, now=1001.0) is False  # another event: not its job
    assert store.add_pending(target, provenance("evt-1"), 30, now=1010.0) is True  # evt-1 again: re-send
    store.mark_queued(target, 1010.0)
    assert store.add_pending(target, provenance("evt-1"), 30, now=1011.0) is False


@pytest.mark.parametrize("shared_client", [True, False], ids=["one-client", "eight-clients"])
def test_racing_add_pending_opens_exactly_one_window(store_factory: StoreFactory, shared_client: bool) -> None:
    target = Target(TargetKind.PERIMETER, PERIMETER)
    stores = [store_factory()] * 8 if shared_client else [store_factory() for _ in range(8)]

    opened = in_threads(8, lambda i: stores[i].add_pending(target, provenance(f"evt-{i}", f"u{i}@x"), 30, 1000.0 + i))

    assert opened.count(True) == 1
    marker = stores[0].claim_pending(target, 2000.0, LEASE)
    assert marker is not None
    assert sorted(marker.provenance.event_ids) == [f"evt-{i}" for i in range(8)]
    assert len(marker.provenance.actors) == 8


def test_claim_is_an_exclusive_lease(store_factory: StoreFactory) -> None:
    target = Target(TargetKind.ACCOUNT, account_id("stdata01"))
    store = store_factory()
    store.add_pending(target, provenance("evt-1"), 30, 1000.0)

    claim = store.claim_pending(target, 1030.0, LEASE)
    assert claim is not None and claim.lease_id
    with pytest.raises(WindowBusy) as busy:
        store.claim_pending(target, 1031.0, LEASE)  # a duplicate message while the lease runs
    assert busy.value.until == 1030.0 + LEASE
    assert store.complete_pending(claim, 1040.0, 30) is False  # done: deleted, no follow-up
    assert store.claim_pending(target, 1041.0, LEASE) is None

    store.add_pending(target, provenance("evt-2"), 30, 1100.0)
    stores = [store_factory() for _ in range(6)]

    def claim_or_busy(i: int) -> Any:
        try:
            return stores[i].claim_pending(target, 1130.0, LEASE)
        except WindowBusy:
            return "busy"

    claims = in_threads(6, claim_or_busy)
    winners = [c for c in claims if c not in (None, "busy")]
    assert len(winners) == 1 and winners[0].provenance.event_ids == ("evt-2",)
    assert claims.count("busy") == 5


def test_a_lapsed_lease_is_taken_over_and_the_first_holder_cannot_finish_it(store: StateStore) -> None:
    target = Target(TargetKind.ACCOUNT, account_id("stdata01"))
    store.add_pending(target, provenance("evt-1"), 30, 1000.0)
    first = store.claim_pending(target, 1030.0, LEASE)  # ... and this worker is killed
    assert first is not None

    assert [m.target for m in store.overdue_pending(1030.0 + LEASE + 1, 0.0)] == [target]  # the sweep sees it
    second = store.claim_pending(target, 1030.0 + LEASE + 1, LEASE)  # the redelivered message
    assert second is not None and second.lease_id != first.lease_id
    assert second.provenance.event_ids == ("evt-1",)

    assert store.complete_pending(first, 1100.0, 30) is False  # not its window any more: no-op
    assert store.release_pending(first, 1100.0, 1300.0, "late") is False
    with pytest.raises(WindowBusy):
        store.claim_pending(target, 1100.0, LEASE)  # still held by the second worker
    store.complete_pending(second, 1100.0, 30)
    assert store.claim_pending(target, 1101.0, LEASE) is None


def test_events_joining_during_a_lease_become_a_follow_up_window(store: StateStore) -> None:
    target = Target(TargetKind.PERIMETER, PERIMETER)
    store.add_pending(target, provenance("evt-1"), 30, 1000.0)
    store.mark_queued(target, 1000.0)
    claim = store.claim_pending(target, 1030.0, LEASE)
    assert claim is not None

    # The holder may have read already: a new event is not counted as evaluated by it.
    assert store.add_pending(target, provenance("evt-2", "bob@contoso.com"), 30, 1035.0) is False

    assert store.complete_pending(claim, 1050.0, 30) is True  # a follow-up, owed a message
    store.mark_queued(target, 1050.0)
    follow_up = store.claim_pending(target, 1080.0, LEASE)
    assert follow_up is not None
    assert follow_up.provenance.event_ids == ("evt-2",)
    assert (follow_up.first_seen, follow_up.due, follow_up.attempts) == (1050.0, 1080.0, 0)


def test_release_backs_off_and_merges_what_joined_during_the_lease(store: StateStore) -> None:
    target = Target(TargetKind.KEY_VAULT, f"{RG}/providers/Microsoft.KeyVault/vaults/kv-cmk")
    store.add_pending(target, provenance("evt-1"), 30, 1000.0)
    claimed = store.claim_pending(target, 1030.0, LEASE)
    assert claimed is not None
    store.add_pending(target, provenance("evt-2", "bob@contoso.com"), 30, 1040.0)

    assert store.release_pending(claimed, 1050.0, retry_at=1080.0, error="HttpResponseError: 500") is True
    assert [m.last_error for m in store.failing_pending()] == ["HttpResponseError: 500"]
    with pytest.raises(WindowBusy) as busy:
        store.claim_pending(target, 1060.0, LEASE)  # backing off
    assert busy.value.until == 1080.0
    assert store.overdue_pending(1079.0, 0.0) == []  # not lost: waiting for its retry

    merged = store.claim_pending(target, 1080.0, LEASE)
    assert merged is not None
    assert merged.provenance.event_ids == ("evt-1", "evt-2")
    assert [a.upn for a in merged.provenance.actors] == ["alice@contoso.com", "bob@contoso.com"]
    assert (merged.first_seen, merged.attempts) == (1000.0, 1)

    assert store.release_pending(merged, 1100.0, retry_at=1160.0, alerted=True) is True
    again = store.claim_pending(target, 1160.0, LEASE)
    assert again is not None and again.attempts == 2 and again.alerted
    assert again.provenance == merged.provenance
    store.complete_pending(again, 1170.0, 30)
    assert store.failing_pending() == []


def test_overdue_lists_only_windows_nobody_takes_care_of(store: StateStore) -> None:
    late = Target(TargetKind.ACCOUNT, account_id("stlate"))
    fresh = Target(TargetKind.ACCOUNT, account_id("stfresh"))
    later = Target(TargetKind.VIRTUAL_MACHINE, VM)
    leased = Target(TargetKind.ACCOUNT, account_id("stleased"))
    store.add_pending(late, provenance("evt-1"), 30, 1000.0)  # due 1030
    store.add_pending(later, provenance("evt-3"), 30, 1005.0)  # due 1035
    store.add_pending(fresh, provenance("evt-2"), 30, 1100.0)  # due 1130
    store.add_pending(leased, provenance("evt-4"), 0, 1000.0)
    assert store.claim_pending(leased, 1000.0, 200.0) is not None  # held until 1200

    overdue = store.overdue_pending(now=1100.0, grace_seconds=60.0)  # closed before 1040

    assert [m.target for m in overdue] == [late, later]
    assert overdue[0].provenance.event_ids == ("evt-1",) and overdue[0].etag
    assert store.overdue_pending(now=1000.0, grace_seconds=0.0) == []
    assert leased in [m.target for m in store.overdue_pending(now=1261.0, grace_seconds=60.0)]  # lapsed


# -- failure modes and construction -------------------------------------------------------------------------


@pytest.mark.azurite
def test_unreachable_table_service_raises_store_unavailable() -> None:
    dead = (
        "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
        "AccountKey=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==;"
        f"TableEndpoint=http://127.0.0.1:{free_port()}/devstoreaccount1;"
    )
    store = TableStateStore.from_connection_string(dead, "nspdrift", retry_total=0)
    with pytest.raises(StoreUnavailable) as caught:
        store.get_account(account_id("stdata01"))
    assert "Eby8" not in str(caught.value)  # never leak the key
    store.close()


def test_unopenable_sqlite_file_raises_store_unavailable(tmp_path: Path) -> None:
    (tmp_path / "state.db").mkdir()  # a directory where the file should be
    with pytest.raises(StoreUnavailable):
        SqliteStateStore(tmp_path / "state.db")


@pytest.mark.azurite
def test_tables_are_created_on_first_use_not_before(azurite: Azurite) -> None:
    prefix = unique_name("t")
    store = TableStateStore.from_connection_string(azurite.connection_string, prefix)
    with TableServiceClient.from_connection_string(azurite.connection_string) as service:

        def tables() -> set[str]:
            return {t.name for t in service.list_tables() if t.name.startswith(prefix)}

        assert tables() == set()
        store.record_events(["evt-1"])
        assert tables() == {f"{prefix}events"}
        store.get_account(account_id("stdata01"))
        assert tables() == {f"{prefix}events", f"{prefix}state"}
    store.close()


def test_bad_table_prefix_is_refused() -> None:
    with pytest.raises(ValueError, match="prefix"):
        TableStateStore.from_connection_string("UseDevelopmentStorage=true", "nsp-drift")
