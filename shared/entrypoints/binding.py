"""The Functions binding's event objects back into the raw dicts ``shared.core.events.parse_event`` reads.

Entry-point glue (it imports ``azure.functions``), kept apart from the pure event parsing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from shared.core.events import EventError, _type_name


def _iso(value: object) -> object:
    """The binding turns times into datetimes; put them back into the wire's ISO 8601 text."""
    isoformat = getattr(value, "isoformat", None)
    return isoformat() if callable(isoformat) else value


def event_from_binding(obj: object) -> dict[str, Any]:
    """An ``azure.functions.EventGridEvent``/``CloudEvent`` back into the raw dict ``parse_event`` reads.

    Absent (None) attributes are left out, so ``parse_event`` reports them as missing or infers
    them. A `specVersion` payload arrives here as an EventGridEvent without event type or time.
    """
    import azure.functions as func

    if isinstance(obj, func.CloudEvent):
        fields: dict[str, Any] = {
            **obj.extension_attrs,
            "id": obj.id,
            "source": obj.source,
            "type": obj.type,
            "specversion": obj.specversion,
            "time": _iso(obj.time),
            "subject": obj.subject,
            "datacontenttype": obj.datacontenttype,
            "dataschema": obj.dataschema,
            "data": obj.get_json(),
        }
    elif isinstance(obj, func.EventGridEvent):
        fields = {
            "id": obj.id,
            "topic": obj.topic,
            "subject": obj.subject,
            "eventType": obj.event_type,
            "eventTime": _iso(obj.event_time),
            "data": obj.get_json(),
            "dataVersion": obj.data_version,
        }
    elif isinstance(obj, Mapping):
        fields = dict(obj)
    else:
        raise EventError(f"event: unsupported binding object {_type_name(obj)}")
    return {key: value for key, value in fields.items() if value is not None}
