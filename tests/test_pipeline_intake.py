"""Intake and the queue edge under failure (issue 11, defect 9).

- A queue body nested 40,000 levels deep is dropped with one clear log line, like any malformed
  message, instead of raising RecursionError out of the handler.
- A queue send that fails after the window's marker was written must not strand the window: the
  event is not recorded as seen, Event Grid delivers it again, and that delivery re-sends the
  window's message.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from shared.adapters.queue import decode_message
from shared.core.changes import Target
from shared.core.config import RulesConfig
from shared.core.state.base import StateStore, StoreUnavailable
from shared.core.targeting import Scope
from shared.entrypoints import app as app_module
from shared.service.pipeline import CollectingSink, Pipeline
from tests.azurite import Azurite, unique_name

SAMPLES = Path(__file__).resolve().parents[1] / "shared" / "samples"
SUB = "6e1c6f2a-5b7d-4c8e-9f10-2a3b4c5d6e7f"

DEPTH = 40_000


def test_deeply_nested_queue_body_is_dropped_with_one_log_line(caplog: pytest.LogCaptureFixture) -> None:
    body = "[" * DEPTH + "]" * DEPTH
    with pytest.raises(ValueError, match=r"^message:"):
        decode_message(body)
    nested_object = '{"a":' * DEPTH + "1" + "}" * DEPTH
    with pytest.raises(ValueError, match=r"^message:"):
        decode_message(nested_object)

    caplog.set_level(logging.INFO)
    app_module.handle_queue_message(body, 1)  # acknowledged: no exception reaches the host
    dropped = [r for r in caplog.records if "dropped malformed evaluation message" in r.getMessage()]
    assert len(dropped) == 1
    assert "nested" in dropped[0].getMessage()


class FlakyQueue:
    """An evaluation queue whose first ``failures`` sends fail the way Azure Storage does."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.sent: list[Target] = []

    def send(self, target: Target, delay_seconds: float) -> None:
        if self.failures > 0:
            self.failures -= 1
            raise StoreUnavailable("send to nsp-drift-evaluations: queue service returned HTTP 503")
        self.sent.append(target)


@pytest.fixture(params=["sqlite", pytest.param("table", marks=pytest.mark.azurite)])
def store_factory(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], StateStore]]:
    stores: list[StateStore] = []

    def make() -> StateStore:
        if request.param == "sqlite":
            from shared.adapters.state.sqlite_store import SqliteStateStore

            store: StateStore = SqliteStateStore(str(tmp_path / "state.sqlite"))
        else:
            from shared.adapters.state.table_store import TableStateStore

            azurite: Azurite = request.getfixturevalue("azurite")
            store = TableStateStore.from_connection_string(azurite.connection_string, unique_name("t"))
        stores.append(store)
        return store

    yield make
    for store in stores:
        store.close()


def test_failed_send_after_the_marker_write_is_resent_by_the_redelivered_event(
    store_factory: Callable[[], StateStore],
) -> None:
    store = store_factory()
    event = json.loads((SAMPLES / "events.json").read_text())[0]
    queue = FlakyQueue(failures=1)
    pipeline = Pipeline(
        store=store,
        outbox=CollectingSink(),
        enqueue=queue.send,
        config=RulesConfig(),
        scope=Scope((SUB,)),
        window_seconds=30.0,
        clock=lambda: 1_000.0,
    )
    with pytest.raises(StoreUnavailable):
        pipeline.intake([event])  # the marker is written, then the send fails: Event Grid retries
    assert queue.sent == []

    report = pipeline.intake([event])  # Event Grid's retry of the same event
    assert len(queue.sent) == 1, "the window's message was never sent: stranded until a sweep"
    assert report.accepted == 1

    again = pipeline.intake([event])  # a third delivery: the window has its message, nothing more
    assert len(queue.sent) == 1 and again.duplicates == 1
