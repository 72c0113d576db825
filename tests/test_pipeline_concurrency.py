"""Concurrent evaluations, forced into the interleavings that used to go wrong (issue 11).

Defect 3: evaluation A reads slowly; B starts later, reads the newer state, finds it unchanged;
A then applies its older read. An older read must never overwrite a newer observation, so no
"resolved" may come out of A.

Defect 4: two accounts of one perimeter profile evaluated concurrently; both see the profile's
access rules change. The loser of the profile's version-checked write must not have emitted
anything: "perimeter-access-rules-changed" comes out once.

Both interleavings are forced (a gate, a hook in the store), not left to chance.
"""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import Callable, Collection, Iterator
from pathlib import Path
from typing import Any

import pytest

from shared.adapters import runtime
from shared.adapters.arm_reader import ArmReader, TargetReads
from shared.adapters.estate import Estate
from shared.core.changes import PERIMETER_RULES_CHANGED, Provenance, TargetKind
from shared.core.config import RulesConfig
from shared.core.state.base import StateStore
from shared.core.targeting import Scope
from shared.entrypoints.replay import MemoryQueue, record_baseline_estate
from shared.service.pipeline import CollectingSink, Pipeline, Readers
from shared.wiring import EstateClients, readers_for
from tests.azurite import Azurite, unique_name

SAMPLES = Path(__file__).resolve().parents[1] / "shared" / "samples"
SUB = "6e1c6f2a-5b7d-4c8e-9f10-2a3b4c5d6e7f"
RG = f"/subscriptions/{SUB}/resourceGroups/rg-data/providers/Microsoft.Storage/storageAccounts"
SFTP = f"{RG}/stcontososftp01"


@pytest.fixture(params=["sqlite", pytest.param("table", marks=pytest.mark.azurite)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StateStore]:
    if request.param == "sqlite":
        from shared.adapters.state.sqlite_store import SqliteStateStore

        made: StateStore = SqliteStateStore(str(tmp_path / "state.sqlite"))
    else:
        from shared.adapters.state.table_store import TableStateStore

        azurite: Azurite = request.getfixturevalue("azurite")
        made = TableStateStore.from_connection_string(azurite.connection_string, unique_name("c"))
    yield made
    made.close()


def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((SAMPLES / name).read_text())
    return data


# -- defect 3: a slow, older read -------------------------------------------------------------------


class World:
    """ARM as time goes by: ``current`` is the estate a read that starts now sees."""

    def __init__(self, current: Estate) -> None:
        self.current = current


class SlowReader:
    """Reads what the world looks like when the read starts; the first read then stalls at
    ``gate`` (a slow ARM response) before returning it."""

    def __init__(self, world: World, gate: asyncio.Event | None = None) -> None:
        self.world = world
        self.gate = gate
        self.started = asyncio.Event()
        self.reads = 0

    async def read_account(self, account_id: str, skip: Collection[str] = ()) -> Any:
        self.reads += 1
        estate = self.world.current  # the state as of the read's start
        snapshot = await ArmReader(EstateClients(estate)).read_account(account_id, skip)
        if self.gate is not None:
            gate, self.gate = self.gate, None
            self.started.set()
            await gate.wait()
        return snapshot

    async def list_account_ids(self, subscription_id: str) -> list[str]:
        return await ArmReader(EstateClients(self.world.current)).list_account_ids(subscription_id)


def slow_readers(reader: SlowReader) -> Readers:
    return Readers(accounts=reader, targets=TargetReads(EstateClients(reader.world.current)))


def make_pipeline(store: Any, sink: CollectingSink) -> Pipeline:
    return Pipeline(
        store=store,
        outbox=sink,
        enqueue=MemoryQueue().send,
        config=RulesConfig(),
        scope=Scope((SUB,)),
        window_seconds=30.0,
    )


def sftp_off() -> Estate:
    data = copy.deepcopy(load("estate.json"))
    data[SFTP]["properties"]["isSftpEnabled"] = False
    return Estate(data)


def test_an_older_read_never_overwrites_a_newer_observation(store: StateStore) -> None:
    sftp_on = Estate.load(SAMPLES / "estate.json")
    record_baseline_estate(sftp_on, store, RulesConfig())  # stored: sftp-enabled is open
    sink = CollectingSink()
    pipeline = make_pipeline(store, sink)
    world = World(sftp_off())  # someone disables SFTP ... and A starts reading
    slow_a = SlowReader(world, gate=asyncio.Event())
    runtime.run(_a_then_b(pipeline, world, slow_a))
    resolved = [t for t in sink.transitions if t.kind.value == "resolved" and t.rule_id == "sftp-enabled"]
    assert resolved == [], "a stale read reported a finding resolved while it still exists"
    stored = store.get_account(SFTP)
    assert stored is not None and any(f["rule"] == "sftp-enabled" for f in stored.value.findings)
    assert slow_a.reads == 2  # A's older read lost to B's newer one and A read ARM again


async def _a_then_b(pipeline: Pipeline, world: World, slow_a: SlowReader) -> None:
    gate = slow_a.gate
    assert gate is not None
    a = asyncio.ensure_future(pipeline.evaluate_account(SFTP, Provenance(event_ids=("e-off",)), slow_readers(slow_a)))
    await slow_a.started.wait()  # A has read "SFTP off" and is stalled
    world.current = Estate.load(SAMPLES / "estate.json")  # SFTP enabled again
    b = SlowReader(world)
    await pipeline.evaluate_account(SFTP, Provenance(event_ids=("e-on",)), slow_readers(b))  # B, complete
    gate.set()
    await a


# -- defect 4: two accounts of one profile --------------------------------------------------------


def with_second_legacy_account(data: dict[str, Any]) -> dict[str, Any]:
    """A copy of stcontosolegacy01 (account and NSP configuration) as stcontosolegacy02: two
    accounts on profile-legacy, whose access rules change between the two sample estates."""
    out = copy.deepcopy(data)
    for key, body in data.items():
        if "/storageAccounts/stcontosolegacy01" in key and (
            key.endswith("stcontosolegacy01") or "/networkSecurityPerimeterConfigurations/" in key
        ):
            clone = json.loads(json.dumps(body).replace("stcontosolegacy01", "stcontosolegacy02"))
            out[clone["id"]] = clone
    return out


class HookedStore:
    """The real store, except that the first ``get_profile`` runs ``hook`` between reading the
    row and returning it: the caller goes on with a version that is already stale."""

    def __init__(self, inner: StateStore, hook: Callable[[], None]) -> None:
        self._inner = inner
        self._hook: Callable[[], None] | None = hook

    def get_profile(self, perimeter_id: str, profile_name: str) -> Any:
        found = self._inner.get_profile(perimeter_id, profile_name)
        if self._hook is not None:
            hook, self._hook = self._hook, None
            hook()
        return found

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def test_perimeter_transition_is_emitted_once_when_two_accounts_race(store: StateStore) -> None:
    before = Estate(with_second_legacy_account(load("estate.json")))
    after = Estate(with_second_legacy_account(load("estate-changed.json")))
    record_baseline_estate(before, store, RulesConfig())
    legacy1, legacy2 = f"{RG}/stcontosolegacy01", f"{RG}/stcontosolegacy02"
    sink = CollectingSink()
    b = make_pipeline(store, sink)

    def b_wins() -> None:  # B evaluates legacy02 completely while A holds the old profile version
        runtime.run(
            b.evaluate_account(
                legacy2, Provenance(event_ids=("e-b",)), readers_for(EstateClients(after)), TargetKind.PERIMETER
            )
        )

    hooked = HookedStore(store, b_wins)
    a = make_pipeline(hooked, sink)
    runtime.run(
        a.evaluate_account(
            legacy1, Provenance(event_ids=("e-a",)), readers_for(EstateClients(after)), TargetKind.PERIMETER
        )
    )

    assert hooked._hook is None  # B did run inside A's read-decide-write of the profile
    changed = [t for t in sink.transitions if t.rule_id == PERIMETER_RULES_CHANGED]
    assert changed and {t.provenance.event_ids for t in changed} == {("e-b",)}  # the winner's
    assert len({t.key for t in changed}) == 1
    assert len(changed) == 1, f"perimeter-access-rules-changed emitted {len(changed)} times"
