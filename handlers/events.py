"""Event Grid trigger: resource-change events in, coalesced evaluation windows out."""

from __future__ import annotations

import azure.functions as func

bp = func.Blueprint()  # type: ignore[no-untyped-call]  # azure-functions leaves it untyped


@bp.function_name("on_resource_event")
@bp.event_grid_trigger(arg_name="event")
def on_resource_event(event: func.EventGridEvent) -> None:
    # The binding hands over an EventGridEvent, or a CloudEvent when the payload has
    # `specversion`; the core copes with both (and with the samples' `specVersion` quirk).
    from shared.entrypoints.app import handle_event

    handle_event(event)
