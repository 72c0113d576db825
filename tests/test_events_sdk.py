"""Inbound events through azure-eventgrid: the handled types are SystemEventNames, the envelopes are
read by the SDK's models, the official samples' quirks still parse, and nothing is imported early."""

from __future__ import annotations

import ast
import json
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from azure.core.messaging import CloudEvent
from azure.eventgrid import EventGridEvent, SystemEventNames

from shared.core import events
from shared.core.events import EventError, event_types, parse_event

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "tests" / "corpus"
DELETE_SAMPLE = CORPUS / "eventgrid-Microsoft.Resources" / "cloud-events-schema" / "resource_delete_success.json"
WRITE_SAMPLE = CORPUS / "eventgrid-Microsoft.Resources" / "event-grid-schema" / "resource_write_success.json"


def load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def test_the_handled_types_are_system_event_names() -> None:
    types = event_types()
    expected = {
        SystemEventNames.ResourceWriteSuccessEventName,
        SystemEventNames.ResourceWriteFailureEventName,
        SystemEventNames.ResourceWriteCancelEventName,
        SystemEventNames.ResourceDeleteSuccessEventName,
        SystemEventNames.ResourceDeleteFailureEventName,
        SystemEventNames.ResourceDeleteCancelEventName,
        SystemEventNames.ResourceActionSuccessEventName,
        SystemEventNames.ResourceActionFailureEventName,
        SystemEventNames.ResourceActionCancelEventName,
        SystemEventNames.ResourceNotificationsResourceManagementCreatedOrUpdatedEventName,
        SystemEventNames.ResourceNotificationsResourceManagementDeletedEventName,
    }
    assert set(types.known.values()) == {str(name.value) for name in expected}
    assert SystemEventNames.ResourceNotificationsResourceManagementDeletedEventName == events.ARN_DELETED
    assert (
        SystemEventNames.ResourceNotificationsResourceManagementCreatedOrUpdatedEventName
    ) == events.ARN_CREATED_OR_UPDATED
    assert events.RESOURCES_PREFIX == "Microsoft.Resources."
    assert types.deletes == {
        SystemEventNames.ResourceDeleteSuccessEventName,
        SystemEventNames.ResourceDeleteFailureEventName,
        SystemEventNames.ResourceDeleteCancelEventName,
        SystemEventNames.ResourceNotificationsResourceManagementDeletedEventName,
    }
    tree = ast.parse((ROOT / "shared" / "core" / "events.py").read_text(encoding="utf-8"))
    docstrings = {id(node.body[0].value) for node in ast.walk(tree) if _has_docstring(node)}  # type: ignore[attr-defined]
    literals = [
        n.value
        for n in ast.walk(tree)
        if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docstrings
    ]
    assert not [text for text in literals if text.startswith(("Microsoft.Resources.", "Microsoft.ResourceNotif"))]


def _has_docstring(node: ast.AST) -> bool:
    body = getattr(node, "body", None)
    return (
        isinstance(body, list)
        and bool(body)
        and isinstance(body[0], ast.Expr)
        and isinstance(body[0].value, ast.Constant)
        and isinstance(body[0].value.value, str)
    )


def test_importing_the_parser_imports_no_sdk() -> None:
    code = (
        "import sys, shared.core.events, shared.service.pipeline, handlers.events\n"
        "print(sorted(m for m in sys.modules if m.startswith(('azure.eventgrid', 'azure.core.messaging'))))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == "[]"


def test_the_sdk_models_read_the_envelopes(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[str] = []
    cloud_from_dict, grid_from_dict = CloudEvent.from_dict.__func__, EventGridEvent.from_dict.__func__  # type: ignore[attr-defined]

    def cloud(cls: Any, event: dict[str, Any]) -> Any:
        seen.append("CloudEvent")
        return cloud_from_dict(cls, event)

    def grid(cls: Any, event: dict[str, Any]) -> Any:
        seen.append("EventGridEvent")
        return grid_from_dict(cls, event)

    monkeypatch.setattr(CloudEvent, "from_dict", classmethod(cloud))
    monkeypatch.setattr(EventGridEvent, "from_dict", classmethod(grid))
    write = parse_event(load(WRITE_SAMPLE))
    delete = parse_event(load(DELETE_SAMPLE))
    assert seen == ["EventGridEvent", "CloudEvent"]
    assert write.event_type == SystemEventNames.ResourceWriteSuccessEventName
    assert delete.event_type == SystemEventNames.ResourceDeleteSuccessEventName and delete.is_delete


def test_the_spec_version_quirk_of_the_official_delete_sample() -> None:
    raw = load(DELETE_SAMPLE)
    assert "specVersion" in raw and "specversion" not in raw  # the quirk, as published
    event = parse_event(raw)
    assert event.event_id == raw["id"] and event.event_time == raw["time"]
    assert event.resource_type == "Microsoft.Storage/storageAccounts"


@pytest.mark.parametrize("bad_time", ["yesterday", "2026-13-45T99:99:99Z", "Z", "+"])
def test_an_unreadable_time_is_dropped_not_the_event(bad_time: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="shared.core.events")
    for path, key in ((WRITE_SAMPLE, "eventTime"), (DELETE_SAMPLE, "time")):
        raw = load(path)
        raw[key] = bad_time
        event = parse_event(raw)
        assert event.event_time == "" and event.resource_id
    assert "unreadable" in caplog.text


def test_bad_events_are_one_error_each_and_never_another_exception(monkeypatch: pytest.MonkeyPatch) -> None:
    good, cloud = load(WRITE_SAMPLE), load(DELETE_SAMPLE)

    def refuses(cls: Any, event: dict[str, Any]) -> Any:
        raise IndexError("an SDK surprise")  # whatever the SDK raises becomes EventError

    monkeypatch.setattr(CloudEvent, "from_dict", classmethod(refuses))
    parsed, errors = [], []
    for index, raw in enumerate([good, cloud, {"id": "x", "eventType": 5}, 7]):
        try:
            parsed.append(parse_event(raw))
        except EventError as exc:  # anything else would escape here and fail the test
            errors.append(f"event[{index}]: {exc}")
    assert [e.event_id for e in parsed] == [good["id"]]
    assert len(errors) == 3 and all(isinstance(e, str) and e.startswith("event[") for e in errors)
    assert "envelope unreadable (IndexError: an SDK surprise)" in errors[0]
    with pytest.raises(EventError, match="envelope unreadable"):
        parse_event(cloud)
