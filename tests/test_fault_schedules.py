"""Seeded fault schedules (tests/fault_schedules.py): several workers, kills at any step, ARM and
receiver faults, re-delivered and reordered events, recurring findings; the oracle after every
settle point. CI runs a fixed set of seeds; ``-m soak`` runs many more
(``NSP_DRIFT_SOAK_SCHEDULES``, default 1000, on SQLite; one in 20 on Table storage)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from shared.adapters.state.sqlite_store import SqliteStateStore
from shared.adapters.state.table_store import TableStateStore
from tests.azurite import Azurite, start_azurite, unique_name
from tests.fakes import FakeServer
from tests.fault_schedules import Schedule, Stats, receivers, reset

CI_SQLITE_SEEDS = range(1, 25)
CI_TABLE_SEEDS = (101, 102)  # 102 restarts Azurite mid-schedule


@pytest.fixture(scope="module")
def servers() -> Iterator[dict[str, FakeServer]]:
    with receivers() as made:
        yield made


def run_sqlite(seed: int, servers: dict[str, FakeServer]) -> Stats:
    reset(servers)
    store = SqliteStateStore(":memory:")
    try:
        return Schedule(seed, store, servers).run()
    finally:
        store.close()


def run_table(seed: int, servers: dict[str, FakeServer], azurite: Azurite, restart: bool) -> Stats:
    reset(servers)
    store = TableStateStore.from_connection_string(azurite.connection_string, unique_name("fs"))

    bounce = (azurite.stop, azurite.start) if restart else None
    try:
        return Schedule(seed, store, servers, steps=120, restart=bounce).run()
    finally:
        store.close()


def summary(stats: Stats, wall: float) -> str:
    return (
        f"{stats.schedules} schedules in {wall:.1f} s: {stats.steps} steps, jobs {dict(stats.jobs)}, "
        f"{stats.kills} kills, {stats.failed_invocations} failed invocations {dict(stats.errors)}, "
        f"{stats.mutations} world changes, {stats.settles} settle points, {stats.deliveries} webhook deliveries "
        f"checked, {stats.duplicates_by_id} re-sends dropped by webhook-id, faults {dict(stats.faults)}, "
        f"{stats.azurite_restarts} Azurite restarts"
    )


@pytest.mark.parametrize("seed", CI_SQLITE_SEEDS)
def test_seeded_schedule_sqlite(seed: int, servers: dict[str, FakeServer]) -> None:
    stats = run_sqlite(seed, servers)
    assert stats.settles >= 1 and stats.mutations > 0
    assert stats.kills > 0 and sum(stats.faults.values()) > 0  # the schedule did inject faults


@pytest.mark.azurite
@pytest.mark.parametrize("seed", CI_TABLE_SEEDS)
def test_seeded_schedule_table_storage(seed: int, servers: dict[str, FakeServer], tmp_path: Path) -> None:
    azurite = start_azurite(location=tmp_path / "azurite")  # persistent: it can be restarted
    try:
        stats = run_table(seed, servers, azurite, restart=seed % 2 == 0)
    finally:
        azurite.close()
    assert stats.settles >= 1
    assert stats.azurite_restarts == (1 if seed % 2 == 0 else 0)


@pytest.mark.soak
@pytest.mark.azurite  # one schedule in 20 runs on Table storage
def test_soak(servers: dict[str, FakeServer], tmp_path: Path) -> None:
    count = int(os.environ.get("NSP_DRIFT_SOAK_SCHEDULES", "1000"))
    first = int(os.environ.get("NSP_DRIFT_SOAK_FIRST_SEED", "1000"))
    total = Stats(schedules=0)
    started = time.monotonic()
    azurite: Azurite | None = None
    try:
        for seed in range(first, first + count):
            if seed % 20 == 0:
                azurite = azurite or start_azurite(location=tmp_path / "azurite")
                total.add(run_table(seed, servers, azurite, restart=seed % 40 == 0))
            else:
                total.add(run_sqlite(seed, servers))
    finally:
        if azurite is not None:
            azurite.close()
    print("\nsoak:", summary(total, time.monotonic() - started))
