"""Parse one Event Grid delivery (Event Grid schema or CloudEvents 1.0) into a ``ChangeEvent``.

Pure: no I/O except debug logging. Two event families are understood:

* the Azure-subscription system topic, ``Microsoft.Resources.Resource{Write,Delete,Action}{Success,
  Failure,Cancel}`` (failures are parsed too so that ``targeting`` can drop them with a reason);
* Azure Resource Notifications, ``Microsoft.ResourceNotifications.Resources.{CreatedOrUpdated,Deleted}``.

Strictness is split on purpose. What decides whether and what to evaluate (id, event type, resource
id, subscription, operation name, status) must be present and well typed, else ``EventError`` names
the field. What is only informational (actor claims, the ARN body snapshot) is read leniently: a
malformed claim must not cost us a real configuration change.

Anything malformed raises ``EventError`` (a ``ValueError``), never another exception type: the
handler turns it into one log line and moves on, since retrying a malformed event cannot help.

The event types are azure-eventgrid's ``SystemEventNames``, and once its fields are checked the
envelope is read by the SDK's own models (``azure.eventgrid.EventGridEvent.from_dict``,
``azure.core.messaging.CloudEvent.from_dict``), after the attribute names were matched in any
casing (the official CloudEvents delete sample writes ``specVersion``). Both are imported on the
first event, not with this module: ``azure.eventgrid`` costs about 18 ms once azure-core is loaded
(the state store loads it at intake anyway), about 70 ms on its own.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from shared.core import arm_ids
from shared.core.changes import Actor, ChangeEvent

LOG = logging.getLogger(__name__)

_MAX_EVENT_ID_CHARS: Final = 1024
_MAX_TEXT_CHARS: Final = 4096  # operationName, status, correlationId, eventTime, eventType
_MAX_ACTOR_CHARS: Final = 256  # actor fields are truncated, not rejected (informational only)

_VERBS: Final = ("Write", "Delete", "Action")
_OUTCOMES: Final = ("Success", "Failure", "Cancel")


@dataclass(frozen=True)
class EventTypes:
    """The event types handled, as azure-eventgrid's ``SystemEventNames`` spell them."""

    resources: tuple[str, ...]  # Microsoft.Resources.Resource{Write,Delete,Action}{Success,Failure,Cancel}
    arn_created_or_updated: str
    arn_deleted: str

    @property
    def resources_prefix(self) -> str:
        return self.resources[0].rsplit(".", 1)[0] + "."  # "Microsoft.Resources."

    @functools.cached_property
    def known(self) -> Mapping[str, str]:
        """Canonical spelling by lower-cased name: Event Grid compares types case-insensitively, so do we."""
        return {t.lower(): t for t in (*self.resources, self.arn_created_or_updated, self.arn_deleted)}

    @functools.cached_property
    def deletes(self) -> frozenset[str]:
        return frozenset(t for t in (*self.resources, self.arn_deleted) if "Delete" in t.rsplit(".", 1)[-1])

    def resources_type(self, verb: str, outcome: str) -> str:
        return self.resources[_VERBS.index(verb) * len(_OUTCOMES) + _OUTCOMES.index(outcome)]


@functools.cache
def event_types() -> EventTypes:
    """From ``azure.eventgrid.SystemEventNames`` (imported here, on first use)."""
    from azure.eventgrid import SystemEventNames as Names

    return EventTypes(
        resources=tuple(
            str(getattr(Names, f"Resource{verb}{outcome}EventName").value) for verb in _VERBS for outcome in _OUTCOMES
        ),
        arn_created_or_updated=str(Names.ResourceNotificationsResourceManagementCreatedOrUpdatedEventName.value),
        arn_deleted=str(Names.ResourceNotificationsResourceManagementDeletedEventName.value),
    )


_LAZY_NAMES: Final = {
    "RESOURCES_PREFIX": lambda t: t.resources_prefix,
    "ARN_CREATED_OR_UPDATED": lambda t: t.arn_created_or_updated,
    "ARN_DELETED": lambda t: t.arn_deleted,
}


def __getattr__(name: str) -> str:
    """``RESOURCES_PREFIX``, ``ARN_CREATED_OR_UPDATED``, ``ARN_DELETED``: SystemEventNames' values,
    looked up when first asked for (importing this module imports no SDK)."""
    if name in _LAZY_NAMES:
        return str(_LAZY_NAMES[name](event_types()))
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


_CLAIM_UPN: Final = ("http://schemas.xmlsoap.org/ws/2005/05/identity/claims/upn", "upn")
_CLAIM_OID: Final = ("http://schemas.microsoft.com/identity/claims/objectidentifier", "oid")

_VERB_BY_OPERATION: Final = {"write": "Write", "delete": "Delete", "action": "Action"}
_OUTCOME_BY_STATUS: Final = {
    "succeeded": "Success",
    "failed": "Failure",
    "canceled": "Cancel",
    "cancelled": "Cancel",
}


class EventError(ValueError):
    """A delivered event that cannot be understood; the message names the event and the field."""


def _type_name(value: object) -> str:
    return "null" if value is None else type(value).__name__


def _short(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def _get(raw: Mapping[Any, Any], key: str) -> Any:
    """Envelope lookup: exact key first, then any casing (the official `specVersion` sample)."""
    if key in raw:
        return raw[key]
    wanted = key.lower()
    for candidate, value in raw.items():
        if isinstance(candidate, str) and candidate.lower() == wanted:
            return value
    return None


class _Reader:
    """Field access that raises ``EventError`` prefixed with the event's label."""

    def __init__(self, label: str) -> None:
        self.label = label

    def error(self, message: str) -> EventError:
        return EventError(f"event {self.label}: {message}")

    def text(self, value: object, field: str, *, required: bool = False, limit: int = _MAX_TEXT_CHARS) -> str:
        if value is None or value == "":
            if required:
                raise self.error(f"{field} missing")
            return ""
        if not isinstance(value, str):
            raise self.error(f"{field} must be a string, got {_type_name(value)}")
        if len(value) > limit:
            raise self.error(f"{field} too long ({len(value)} characters, limit {limit})")
        return value

    def mapping(self, value: object, field: str, *, required: bool = False) -> Mapping[Any, Any] | None:
        if value is None:
            if required:
                raise self.error(f"{field} missing")
            return None
        if not isinstance(value, Mapping):
            raise self.error(f"{field} must be an object, got {_type_name(value)}")
        return value


def _label(raw: Mapping[Any, Any]) -> str:
    event_id = _get(raw, "id")
    if isinstance(event_id, str) and event_id:
        return repr(_short(event_id, 64))
    return "<no id>"


def _claim(claims: Mapping[Any, Any] | None, names: tuple[str, ...]) -> str:
    """First non-empty string claim; wrong types are ignored (claims are informational)."""
    if claims is None:
        return ""
    for name in names:
        value = claims.get(name)
        if isinstance(value, str) and value.strip():
            return _short(value.strip(), _MAX_ACTOR_CHARS)
    return ""


def _actor(data: Mapping[Any, Any]) -> Actor:
    claims = data.get("claims")
    claim_map = claims if isinstance(claims, Mapping) else None
    http = data.get("httpRequest")
    client_ip = ""
    if isinstance(http, Mapping):
        ip = http.get("clientIpAddress")
        if isinstance(ip, str) and ip.strip():
            client_ip = _short(ip.strip(), _MAX_ACTOR_CHARS)
    return Actor(
        name=_claim(claim_map, ("name",)),
        upn=_claim(claim_map, _CLAIM_UPN),
        appid=_claim(claim_map, ("appid",)),
        object_id=_claim(claim_map, _CLAIM_OID),
        client_ip=client_ip or _claim(claim_map, ("ipaddr",)),
    )


def _infer_type(data: Mapping[Any, Any], reader: _Reader) -> str:
    """The event type of an event that lost it (a `specVersion` payload through the binding)."""
    if "resourceInfo" in data:
        info = reader.mapping(data.get("resourceInfo"), "data.resourceInfo", required=True)
        assert info is not None  # required=True raised otherwise
        # Deleted events carry only {id, name, type}; CreatedOrUpdated adds the body snapshot.
        has_body = any(key in info for key in ("properties", "location", "tags")) or "apiVersion" in data
        types = event_types()
        inferred = types.arn_created_or_updated if has_body else types.arn_deleted
        LOG.debug("event %s: event type absent, inferred %s from data.resourceInfo", reader.label, inferred)
        return inferred
    if "operationName" in data:
        operation = reader.text(data.get("operationName"), "data.operationName", required=True)
        status = reader.text(data.get("status"), "data.status")
        verb = _VERB_BY_OPERATION.get(operation.rsplit("/", 1)[-1].lower())
        if verb is None:
            raise reader.error(f"event type missing and data.operationName {_short(operation)!r} does not tell it")
        outcome = _OUTCOME_BY_STATUS.get(status.lower())
        if outcome is None:
            raise reader.error(f"event type missing and data.status {_short(status)!r} does not tell it")
        inferred = event_types().resources_type(verb, outcome)
        LOG.debug("event %s: event type absent, inferred %s from data.operationName/status", reader.label, inferred)
        return inferred
    raise reader.error("event type missing (eventType/type) and data has neither operationName nor resourceInfo")


def _resource_id(raw: Mapping[Any, Any], data: Mapping[Any, Any], is_arn: bool, reader: _Reader) -> tuple[str, str]:
    """(normalised id, the field it came from); data first, the envelope's subject as a fallback."""
    if is_arn:
        info = reader.mapping(data.get("resourceInfo"), "data.resourceInfo")
        field, value = "data.resourceInfo.id", None if info is None else info.get("id")
    else:
        field, value = "data.resourceUri", data.get("resourceUri")
    if value is None or value == "":
        subject = _get(raw, "subject")
        if subject is None or subject == "":
            raise reader.error(f"{field} missing (and no subject)")
        field, value = "subject", subject
    text = reader.text(value, field, required=True, limit=2048)
    normalised = arm_ids.normalise(text)
    if not arm_ids.is_well_formed(normalised):
        raise reader.error(f"{field} is not a usable ARM resource id: {_short(text)!r}")
    return normalised, field


_CLOUD_ATTRIBUTES: Final = ("specversion", "source", "subject", "datacontenttype", "dataschema")


@dataclass(frozen=True)
class _Header:
    """The envelope fields ``parse_event`` checks itself, before the SDK's model reads the envelope."""

    event_id: str
    is_cloud: bool  # CloudEvents 1.0 (else the Event Grid schema)
    event_type: str  # canonical spelling, or inferred from the data
    event_time: str  # as on the wire (ISO 8601), or "" when absent


@dataclass(frozen=True)
class _Envelope:
    data: Mapping[Any, Any]
    time: str  # as on the wire (ISO 8601), or "" when absent or unreadable


@dataclass(frozen=True)
class _Details:
    """What the event's family (ARN or the subscription system topic) says beyond the envelope."""

    event_time: str
    resource_type: str = ""  # "" when the event does not say: read from the id
    snapshot: dict[str, Any] | None = None
    api_version: str = ""
    operation_name: str = ""
    status: str = ""
    correlation_id: str = ""
    actor: Actor = field(default_factory=Actor)


def _is_cloud(raw: Mapping[Any, Any], reader: _Reader) -> bool:
    """Whether the body is a CloudEvent (it carries ``specversion``, which must then be 1.x)."""
    spec_version = _get(raw, "specversion")
    if spec_version is None:
        return False
    spec = reader.text(spec_version, "specversion", required=True)
    if spec.strip().split(".", 1)[0] != "1":
        raise reader.error(f"specversion {_short(spec)!r} not supported (CloudEvents 1.0 only)")
    return True


def _first_present(raw: Mapping[Any, Any], keys: tuple[str, str]) -> Any:
    return next((v for v in (_get(raw, k) for k in keys) if v is not None and v != ""), None)


def _event_type(type_value: Any, field: str, data: Mapping[Any, Any], reader: _Reader) -> str:
    """The canonical event type, or the one the data implies when the envelope has none."""
    type_text = reader.text(type_value, field)
    if not type_text:
        return _infer_type(data, reader)
    event_type = event_types().known.get(type_text.strip().lower(), "")
    if not event_type:
        raise reader.error(f"{field} {_short(type_text)!r} not supported")
    return event_type


def _header(raw: Mapping[Any, Any], reader: _Reader) -> tuple[_Header, Mapping[Any, Any]]:
    """The checked id, schema, type and time, with the data object they were checked against."""
    event_id = reader.text(_get(raw, "id"), "id", required=True, limit=_MAX_EVENT_ID_CHARS)
    is_cloud = _is_cloud(raw, reader)
    # Try the schema's own key first, then the other one: a body can be half-converted by a relay.
    type_keys, time_keys = (("type", "eventType"), ("time", "eventTime"))
    if not is_cloud:
        type_keys, time_keys = (("eventType", "type"), ("eventTime", "time"))
    type_value = _first_present(raw, type_keys)
    time_value = _first_present(raw, time_keys)

    data = reader.mapping(_get(raw, "data"), "data", required=True)
    assert data is not None  # required=True raised otherwise
    event_type = _event_type(type_value, type_keys[0], data, reader)
    event_time = reader.text(time_value, time_keys[0])
    return _Header(event_id, is_cloud, event_type, event_time), data


def _sdk_fields(raw: Mapping[Any, Any], header: _Header) -> tuple[dict[str, Any], str]:
    """The envelope's fields as the SDK's model of its schema reads them, and that model's time key."""
    fields: dict[str, Any]
    if header.is_cloud:
        fields = {name: _get(raw, name) for name in _CLOUD_ATTRIBUTES if _get(raw, name) is not None}
        fields.update(id=header.event_id, type=header.event_type, data=_get(raw, "data"))
        fields.setdefault("source", "")  # not needed here; system topics always send it
        time_key = "time"
    else:
        fields = {"id": header.event_id, "eventType": header.event_type, "data": _get(raw, "data")}
        for name in ("subject", "topic", "dataVersion"):
            value = _get(raw, name)
            if isinstance(value, str):
                fields[name] = value
        fields.setdefault("subject", "")
        fields.setdefault("dataVersion", "")
        time_key = "eventTime"
    if header.event_time:
        fields[time_key] = header.event_time
    return fields, time_key


def _sdk_envelope(raw: Mapping[Any, Any], header: _Header, reader: _Reader) -> _Envelope:
    """The envelope as the SDK's model reads it, from the checked fields (names in any casing,
    the event type canonical or inferred). A time the SDK cannot read is informational: dropped
    with a debug line, never the event."""
    from azure.core.messaging import CloudEvent
    from azure.eventgrid import EventGridEvent

    parse: Any = CloudEvent.from_dict if header.is_cloud else EventGridEvent.from_dict
    fields, time_key = _sdk_fields(raw, header)
    event_time = header.event_time
    try:
        model = parse(fields)
    except Exception as exc:  # the SDKs raise ValueError, DeserializationError, IndexError...: one kind here
        if time_key not in fields:
            raise reader.error(f"envelope unreadable ({type(exc).__name__}: {_short(str(exc), 120)})") from None
        LOG.debug("event %s: %s %r unreadable (%s), ignored", reader.label, time_key, _short(event_time), exc)
        del fields[time_key]
        event_time = ""
        try:
            model = parse(fields)
        except Exception as again:
            raise reader.error(f"envelope unreadable ({type(again).__name__}: {_short(str(again), 120)})") from None
    data = model.data
    if not isinstance(data, Mapping) or model.id != header.event_id:
        raise reader.error("envelope unreadable (the SDK model lost the id or the data)")
    return _Envelope(data, event_time)


def _subscription(resource_id: str, data: Mapping[Any, Any], reader: _Reader) -> str:
    parts = resource_id.strip("/").split("/")
    if parts[0].lower() == "subscriptions" and parts[1]:
        return parts[1]
    # A tenant-level id (/providers/...): only the data can say which subscription sent it.
    return reader.text(data.get("subscriptionId"), "data.subscriptionId", required=True, limit=128)


def _arn_snapshot(info: Mapping[Any, Any], reader: _Reader) -> dict[str, Any] | None:
    """The body's properties: a hint only (may be stale, booleans as 1/0): the evaluator re-reads
    with a pinned version."""
    properties = info.get("properties")
    if isinstance(properties, Mapping):
        return dict(properties)
    if properties is not None:
        LOG.debug("event %s: data.resourceInfo.properties is %s, ignored", reader.label, _type_name(properties))
    return None


def _arn_details(data: Mapping[Any, Any], event_type: str, event_time: str, reader: _Reader) -> _Details:
    """An Azure Resource Notifications event: the resource's type, the operation's time when the
    envelope has none, and for a create or update the body's properties and API version."""
    info = reader.mapping(data.get("resourceInfo"), "data.resourceInfo") or {}
    declared_type = info.get("type")
    # Informational: a malformed type falls back to the one read from the id.
    resource_type = declared_type.strip() if isinstance(declared_type, str) and len(declared_type) < 512 else ""
    if not event_time:
        operational = data.get("operationalInfo")
        if isinstance(operational, Mapping):
            event_time = reader.text(operational.get("resourceEventTime"), "data.operationalInfo.resourceEventTime")
    if event_type != event_types().arn_created_or_updated:
        return _Details(event_time, resource_type)
    snapshot = _arn_snapshot(info, reader)
    version = data.get("apiVersion")
    api_version = version if isinstance(version, str) and len(version) <= 64 else ""
    return _Details(event_time, resource_type, snapshot, api_version)


def _activity_details(data: Mapping[Any, Any], event_time: str, reader: _Reader) -> _Details:
    """A subscription system topic event: the operation, its status, correlation and caller."""
    return _Details(
        event_time,
        operation_name=reader.text(data.get("operationName"), "data.operationName"),
        status=reader.text(data.get("status"), "data.status"),
        correlation_id=reader.text(data.get("correlationId"), "data.correlationId"),
        actor=_actor(data),
    )


def parse_event(raw: Mapping[str, Any]) -> ChangeEvent:
    """One event, as Event Grid posts it (either schema), as a ``ChangeEvent``."""
    if not isinstance(raw, Mapping):
        raise EventError(f"event: expected a JSON object, got {_type_name(raw)}")
    reader = _Reader(_label(raw))
    header, _ = _header(raw, reader)
    types = event_types()
    is_arn = not header.event_type.startswith(types.resources_prefix)
    envelope = _sdk_envelope(raw, header, reader)
    data = envelope.data

    resource_id, _ = _resource_id(raw, data, is_arn, reader)
    subscription = _subscription(resource_id, data, reader)
    if is_arn:
        details = _arn_details(data, header.event_type, envelope.time, reader)
    else:
        details = _activity_details(data, envelope.time, reader)

    return ChangeEvent(
        event_id=header.event_id,
        event_type=header.event_type,
        resource_id=resource_id,
        subscription_id=subscription,
        operation_name=details.operation_name,
        status=details.status,
        event_time=details.event_time,
        correlation_id=details.correlation_id,
        actor=details.actor,
        resource_type=details.resource_type or arm_ids.resource_type(resource_id),
        is_delete=header.event_type in types.deletes,
        snapshot_properties=details.snapshot,
        snapshot_api_version=details.api_version,
    )
