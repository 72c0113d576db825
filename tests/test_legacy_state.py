"""State written before findings were one per rule and account is merged on first read.

``tests/legacy/state-3c53953.json`` holds account rows as commit 3c53953 (today's main when
findings became one per rule and account) encoded them with ``shared.adapters.state.codec.account_to_dict``:
one finding per VHD, per replication policy, ...; per-subject occurrences (a VHD that came back is
occurrence 2); a deleted account's tombstone with per-subject keys; a row still carrying the
transition its writer made true (see tests/legacy/README.md for how it was generated). Each store
gets the rows through its own ``put_account`` (which maintains its reverse indexes), then the row's
document is replaced by the fixture's bytes, exactly what that commit stored (fields added to
AccountState since, e.g. ``linked_evidence``, are absent). Both stores then read them in the new
shape, and the pipeline emits nothing spurious on top: no opened, no resolved, the carried transition recorded as
written, and the next real change continues the occurrence numbers.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shared.adapters.estate import Estate
from shared.adapters.state import codec
from shared.core.changes import TransitionKind
from shared.core.model import finding_key
from shared.core.state.base import AccountState, AssociationState, StateStore
from shared.entrypoints.replay import MemoryQueue
from shared.service.pipeline import CollectingSink
from tests.azurite import Azurite, unique_name
from tests.test_pipeline import SAMPLES, SUB, pipeline, run_windows, triples

LEGACY = Path(__file__).resolve().parent / "legacy" / "state-3c53953.json"
PREFIX = f"/subscriptions/{SUB}/resourceGroups/rg-data/providers/Microsoft.Storage/storageAccounts/"


def legacy_documents() -> list[dict[str, Any]]:
    document = json.loads(LEGACY.read_text(encoding="utf-8"))
    assert document["commit"].startswith("3c53953")
    return list(document["accounts"])


def raw_state(document: dict[str, Any]) -> AccountState:
    """The AccountState the old code held (no decoder in between): written first for the indexes."""
    values = {k: v for k, v in document.items() if k != "format"}
    values["associations"] = tuple(AssociationState(**a) for a in document["associations"])
    for name in ("findings", "vm_ids", "backup_instance_ids", "pending_transitions"):
        values[name] = tuple(document[name])
    return AccountState(**values)


def store_legacy(store: StateStore, document: dict[str, Any]) -> None:
    """Write the account, then put the fixture's document, byte for byte, in its row."""
    store.put_account(raw_state(document), None)
    key = codec.account_key(document["account_id"])
    text = codec.dumps(document)
    sqlite = getattr(store, "_transaction", None)
    if sqlite is not None:
        with sqlite() as db:
            db.execute("UPDATE accounts SET data = ? WHERE key = ?", (text, key))
        return
    from shared.adapters.state import table_store

    table = store._state_table  # type: ignore[attr-defined]
    entity = store._read(table, table_store._ACCOUNT_PK, table_store._sha(key))  # type: ignore[attr-defined]
    packed = table_store.pack(codec.dumps({"account": document, "unindex": []}), "legacy account")
    kept = {k: v for k, v in entity.items() if k in ("PartitionKey", "RowKey", "AccountId", "Deleted", "Carrying")}
    store._replace(table, {**kept, **packed}, table_store._etag(entity), "legacy account")  # type: ignore[attr-defined]


@pytest.fixture(params=["sqlite", pytest.param("table", marks=pytest.mark.azurite)])
def legacy_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StateStore]:
    store: StateStore
    if request.param == "sqlite":
        from shared.adapters.state.sqlite_store import SqliteStateStore

        store = SqliteStateStore(str(tmp_path / "state.sqlite"))
    else:
        from shared.adapters.state.table_store import TableStateStore

        azurite: Azurite = request.getfixturevalue("azurite")
        store = TableStateStore.from_connection_string(azurite.connection_string, unique_name("legacy"))
    for document in legacy_documents():
        store_legacy(store, document)
    yield store
    store.close()


def key(rule: str, account: str) -> str:
    return finding_key(rule, PREFIX + account)


def test_the_fixture_is_per_subject() -> None:
    by_name = {d["account_id"].rsplit("/", 1)[-1]: d for d in legacy_documents()}
    assert [f["rule"] for f in by_name["stcontosovhd01"]["findings"]] == ["unmanaged-disk"] * 3
    assert [f["rule"] for f in by_name["stcontosorepl01"]["findings"]].count("object-replication") == 2
    assert len(by_name["stcontosogone01"]["occurrences"]) == 4 and by_name["stcontosogone01"]["deleted_at"]


def test_both_stores_read_the_old_granularity_as_one_finding_per_rule_and_account(legacy_store: StateStore) -> None:
    vhd = legacy_store.get_account(PREFIX + "stcontosovhd01")
    assert vhd is not None
    (finding,) = vhd.value.findings
    assert finding["key"] == key("unmanaged-disk", "stcontosovhd01")
    assert [i["subject"] for i in finding["evidence"]] == [
        "vm-legacy-app/datadisk0",
        "vm-legacy-app/datadisk1",
        "vm-legacy-app/myvmosdisk",
    ]
    assert finding["summary"] == (
        "VM 'vm-legacy-app' keeps 3 disks as VHDs in this account: 'dataDisk0', 'dataDisk1', 'myVMosdisk'"
    )
    # dataDisk1 came back once (occurrence 2): the merged finding is at its latest occurrence.
    assert vhd.value.occurrences == {key("unmanaged-disk", "stcontosovhd01"): 2}
    # What the old writer carried stays as it was written (recorded with its own key).
    (carried,) = vhd.value.pending_transitions
    assert carried["key"].endswith("|vm-legacy-app/datadisk1") and carried["occurrence"] == 2

    repl = legacy_store.get_account(PREFIX + "stcontosorepl01")
    assert repl is not None
    rules = [f["rule"] for f in repl.value.findings]
    assert rules == ["object-replication", "lifecycle-management", "blob-inventory"]
    assert len(repl.value.findings[0]["evidence"]) == 2

    gone = legacy_store.get_account(PREFIX + "stcontosogone01")
    assert gone is not None and gone.value.is_tombstone
    assert gone.value.occurrences[key("object-replication", "stcontosogone01")] == 1
    assert len(gone.value.occurrences) == 3  # the two policies' keys merged into one
    # Single-subject rules kept their key: nothing to merge, nothing renamed.
    sftp = legacy_store.get_account(PREFIX + "stcontososftp01")
    assert sftp is not None and sftp.value.findings[0]["key"] == key("sftp-enabled", "stcontososftp01")
    assert "legacy_keys" not in sftp.value.findings[0] and len(finding["legacy_keys"]) == 3


def test_first_evaluation_after_the_upgrade_emits_nothing_spurious(legacy_store: StateStore) -> None:
    queue, sink = MemoryQueue(), CollectingSink()
    p = pipeline(Estate.load(SAMPLES / "estate.json"), legacy_store, queue, sink)
    report = p.sweep([SUB])
    assert report.failed == []
    # The only transition is the one the old writer carried: recorded as it was made (its old
    # per-subject key); no opened, no resolved, no changed for the merged findings.
    (recorded,) = sink.transitions
    assert recorded.kind is TransitionKind.OPENED and recorded.key.endswith("|vm-legacy-app/datadisk1")
    stored = legacy_store.get_account(PREFIX + "stcontosovhd01")
    assert stored is not None and stored.value.pending_transitions == ()
    sink.transitions.clear()
    p.sweep([SUB])
    assert sink.transitions == []

    # The VM is deleted: one resolution for its three VHDs, of the occurrence the state had.
    changed = pipeline(Estate.load(SAMPLES / "estate-changed.json"), legacy_store, queue, sink)
    events = [e for e in json.loads((SAMPLES / "events.json").read_text()) if "virtualMachines" in json.dumps(e)]
    changed.intake(events)
    run_windows(changed, queue)
    assert triples(sink.transitions) == [("resolved", "unmanaged-disk", "stcontosovhd01")]
    (resolved,) = sink.transitions
    assert (resolved.key, resolved.occurrence) == (key("unmanaged-disk", "stcontosovhd01"), 2)
    # It names the per-subject keys, so the task destinations take over the tasks opened for them.
    assert [k.rsplit("|", 1)[1] for k in resolved.legacy_keys] == [
        "vm-legacy-app/datadisk0",
        "vm-legacy-app/datadisk1",
        "vm-legacy-app/myvmosdisk",
    ]


def test_merged_row_is_rewritten_in_the_new_shape(legacy_store: StateStore) -> None:
    before = legacy_store.get_account(PREFIX + "stcontosorepl01")
    assert before is not None
    legacy_store.put_account(before.value, before.etag)
    after = legacy_store.get_account(PREFIX + "stcontosorepl01")
    assert after is not None and after.value == before.value
    document = codec.account_to_dict(after.value)
    assert all(isinstance(f["evidence"], list) for f in document["findings"])
