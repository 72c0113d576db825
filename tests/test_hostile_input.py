"""Hostile input: odd ARM responses and event batches never crash the pipeline.

Property-based (hypothesis) over estate bodies: unknown enum values, nulls where objects were
expected, wrong types and extra fields in what ARM returns. The real SDK deserialises them; the
reader and the rules must turn each account into an evaluation or a clear per-account error,
never an unhandled exception, and the other accounts are still evaluated.
"""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.adapters import runtime
from shared.adapters.arm_reader import ArmReader
from shared.adapters.estate import Estate
from shared.core.config import RulesConfig
from shared.core.targeting import Scope
from shared.entrypoints.replay import MemoryQueue
from shared.service.pipeline import CollectingSink, Pipeline
from shared.service.scan import accounts_in_scope, scan
from shared.wiring import EstateClients

SAMPLES = Path(__file__).resolve().parents[1] / "shared" / "samples"
SUB = "6e1c6f2a-5b7d-4c8e-9f10-2a3b4c5d6e7f"
BASE = json.loads((SAMPLES / "estate.json").read_text())
ACCOUNTS = sorted(k for k in BASE if k.count("/") == 8 and "/storageAccounts/" in k)

# Values a buggy or newer ARM could send where the SDK expects something else.
ODD = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**40), max_value=2**40),
    st.text(max_size=40),
    st.just("SomeFutureEnumValue"),
    st.lists(st.none(), max_size=3),
    st.dictionaries(st.text(max_size=8), st.none(), max_size=3),
    st.just({"unexpected": {"nested": [1, None, "x"]}}),
)


def paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix] if prefix else []
    if isinstance(node, dict):
        for key, value in node.items():
            out += paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node[:3]):
            out += paths(value, (*prefix, index))
    return out


def set_path(node: Any, path: tuple[Any, ...], value: Any) -> None:
    for step in path[:-1]:
        node = node[step]
    node[path[-1]] = value


@st.composite
def mutated_estates(draw: st.DrawFn) -> tuple[dict[str, Any], list[str]]:
    estate = copy.deepcopy(BASE)
    # Mutate several resources the reader touches: accounts, NSP configurations, children.
    keys = [k for k in estate if not k.startswith("$") and "/networkSecurityPerimeters/" not in k]
    touched = []
    for _ in range(draw(st.integers(min_value=1, max_value=6))):
        key = draw(st.sampled_from(keys))
        candidates = [p for p in paths(estate[key]) if p[0] != "id"]
        if not candidates:
            continue
        path = draw(st.sampled_from(candidates))
        set_path(estate[key], path, copy.deepcopy(draw(ODD)))  # no shared (cyclic) objects
        touched.append(key)
    if draw(st.booleans()):  # extra fields must simply be ignored
        key = draw(st.sampled_from(keys))
        props = estate[key].get("properties")
        estate[key]["properties"] = {**(props if isinstance(props, dict) else {}), "brandNewField": {"a": [1, 2]}}
    return estate, touched


@settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(mutated_estates())
def test_odd_arm_responses_never_escape_the_scan(case: tuple[dict[str, Any], list[str]]) -> None:
    estate_json, _ = case
    clients = EstateClients(Estate(estate_json))

    async def go() -> Any:
        reader = ArmReader(clients)
        ids = await accounts_in_scope(reader, [SUB])
        return await scan(reader, ids, RulesConfig(), __import__("datetime").date(2026, 11, 25))

    results = runtime.run(go())
    assert len(results) == len(ACCOUNTS)
    for result in results:
        assert (result.evaluation is None) == bool(result.error), result
    # Accounts nobody touched are evaluated exactly as before.
    assert sum(r.evaluation is not None for r in results) >= 1


def test_batch_with_hostile_events_processes_the_good_ones(caplog: Any) -> None:
    from shared.adapters.state.sqlite_store import SqliteStateStore

    good = json.loads((SAMPLES / "events.json").read_text())[0]
    hostile: list[Any] = [
        {},
        {"id": 5, "eventType": "Microsoft.Resources.ResourceWriteSuccess"},
        {**good, "data": "not an object"},
        {**good, "id": "x" * 200_000},
        {
            **good,
            "subject": "/subscriptions/../../etc/passwd",
            "data": {**good["data"], "resourceUri": "/subscriptions/../x"},
        },
        {**good, "id": "unicode-☃", "data": {**good["data"], "resourceUri": good["data"]["resourceUri"] + "/ünïcødé"}},
        {**good, "id": "huge", "data": {**good["data"], "claims": {"name": "a" * 1_000_000}}},
        {
            **good,
            "id": "other-tenant",
            "data": {
                **good["data"],
                "resourceUri": good["data"]["resourceUri"].replace(SUB, "11111111-2222-3333-4444-555555555555"),
            },
        },
        {**good, "id": "dup"},
        {**good, "id": "dup"},
    ]
    store = SqliteStateStore(":memory:")
    queue, sink = MemoryQueue(), CollectingSink()
    pipeline = Pipeline(
        store=store, outbox=sink, enqueue=queue.send, config=RulesConfig(), scope=Scope((SUB,)), window_seconds=30.0
    )
    with caplog.at_level(logging.INFO):
        report = pipeline.intake([*hostile, good])
    assert report.accepted >= 2  # the good one, and the ones that are odd but valid
    # The repeated "dup": a duplicate, or (same actor and operation as the open window) absorbed again.
    assert report.duplicates + report.absorbed >= 1
    assert report.errors, "malformed events are reported"
    assert all(len(e) < 2000 for e in report.errors), "error lines stay short even for huge inputs"
    assert len(queue.targets) >= 1
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert "dropped malformed event" in messages


def test_broken_shapes_are_partial_reads_not_clean_accounts(caplog: Any) -> None:
    estate = copy.deepcopy(BASE)
    sftp = next(k for k in estate if k.endswith("/stcontososftp01"))
    estate[sftp]["properties"] = None
    legacy_config = next(k for k in estate if "stcontosolegacy01/networkSecurityPerimeterConfigurations/" in k)
    estate[legacy_config]["properties"]["profile"]["accessRules"] = "not-a-list"
    reader = ArmReader(EstateClients(Estate(estate)))
    with caplog.at_level(logging.WARNING):
        sftp_snapshot = runtime.run(reader.read_account(sftp))
        legacy_snapshot = runtime.run(
            reader.read_account(legacy_config.split("/networkSecurityPerimeterConfigurations/")[0])
        )
    assert "storageAccount.properties" in sftp_snapshot.incomplete
    assert "networkSecurityPerimeterConfigurations" in legacy_snapshot.incomplete
    assert "profile.accessRules: expected a list, got str" in caplog.text
