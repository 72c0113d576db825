"""shared.core.events: every official sample (both schemas, raw and through the Functions binding),
actors, malformed events, batches, and a property test that only EventError ever escapes."""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path
from typing import Any

import azure.functions as func
import pytest
from azure.functions.eventgrid import EventGridEventInConverter
from azure.functions.meta import Datum
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.core.changes import Actor, ChangeEvent
from shared.core.events import ARN_CREATED_OR_UPDATED, ARN_DELETED, EventError, parse_event
from shared.entrypoints.binding import event_from_binding

CORPUS = Path(__file__).resolve().parent / "corpus"
RESOURCES = CORPUS / "eventgrid-Microsoft.Resources"
ARN = CORPUS / "eventgrid-Microsoft.ResourceNotifications"

STORAGE_ID = (
    "/subscriptions/{subscription-id}/resourceGroups/{resource-group}/providers/Microsoft.Storage/"
    "storageAccounts/{storage-name}"
)
ARN_STORAGE_ID = (
    "/subscriptions/{subscription-id}/resourceGroups/{rg-name}/providers/Microsoft.Storage/"
    "storageAccounts/{storageAccount-name}"
)
# The official CreatedOrUpdated sample's resourceInfo.id says "subcription" (sic) and has a stray space.
ARN_CREATED_ID = ARN_STORAGE_ID.replace("{subscription-id}", "{subcription-id}")
EVENTHUB_ID = (
    "/subscriptions/{subscription-id}/resourceGroups/{resource-group}/providers/Microsoft.EventHub/"
    "namespaces/{namespace}/AuthorizationRules/RootManageSharedAccessKey"
)

# (file, event type, resource id, resource type, is_delete)
EXPECTED: dict[str, tuple[str, str, str, bool]] = {
    "resource_write_success.json": (
        "Microsoft.Resources.ResourceWriteSuccess",
        STORAGE_ID.replace("resourceGroups", "resourcegroups"),
        "Microsoft.Storage/storageAccounts",
        False,
    ),
    "resource_delete_success.json": (
        "Microsoft.Resources.ResourceDeleteSuccess",
        STORAGE_ID,
        "Microsoft.Storage/storageAccounts",
        True,
    ),
    "resource_action_success.json": (
        "Microsoft.Resources.ResourceActionSuccess",
        EVENTHUB_ID,
        "Microsoft.EventHub/namespaces/AuthorizationRules",
        False,
    ),
    "Resources_CreatedOrUpdated.json": (
        ARN_CREATED_OR_UPDATED,
        ARN_CREATED_ID,
        "Microsoft.Storage/storageAccounts",
        False,
    ),
    "Resources_Deleted.json": (ARN_DELETED, ARN_STORAGE_ID, "Microsoft.Storage/storageAccounts", True),
}

SAMPLES = sorted(
    [*RESOURCES.glob("*/*.json"), *ARN.glob("*/Resources_*.json")],
    key=lambda p: (p.parent.name, p.name),
)
HEALTH_SAMPLES = sorted(ARN.glob("*/HealthResources_*.json"))


def load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def sample(schema: str, name: str) -> dict[str, Any]:
    root = ARN if name.startswith("Resources_") else RESOURCES
    return load(root / schema / name)


def via_binding(raw: Any) -> tuple[object, ChangeEvent]:
    decoded = EventGridEventInConverter.decode(Datum(json.dumps(raw), "json"), trigger_metadata={})
    return decoded, parse_event(event_from_binding(decoded))


def sample_id(path: Path) -> str:
    return f"{path.parent.name}/{path.name}"


def test_corpus_is_complete() -> None:
    # 3 Microsoft.Resources + 2 ARN samples, each in both schemas (guards against a moved corpus).
    assert len(SAMPLES) == 10
    assert len(HEALTH_SAMPLES) == 2


@pytest.mark.parametrize("path", SAMPLES, ids=sample_id)
def test_official_sample_parses(path: Path) -> None:
    event = parse_event(load(path))
    event_type, resource_id, resource_type, is_delete = EXPECTED[path.name]
    assert event.event_type == event_type
    assert event.resource_id == resource_id
    assert " " not in event.resource_id
    assert event.resource_type == resource_type
    assert event.is_delete is is_delete
    assert event.subscription_id == resource_id.split("/")[2]
    assert event.event_id == load(path)["id"]
    assert event.event_time.startswith(("2018-", "2023-"))


@pytest.mark.parametrize("path", SAMPLES, ids=sample_id)
def test_official_sample_parses_through_the_functions_binding(path: Path) -> None:
    raw = load(path)
    decoded, event = via_binding(raw)
    direct = parse_event(raw)
    assert isinstance(decoded, func.EventGridEvent | func.CloudEvent)
    assert (event.event_id, event.event_type, event.resource_id, event.subscription_id) == (
        direct.event_id,
        direct.event_type,
        direct.resource_id,
        direct.subscription_id,
    )
    assert event.actor == direct.actor
    assert event.operation_name == direct.operation_name
    assert event.status == direct.status
    assert event.snapshot_properties == direct.snapshot_properties
    assert event.snapshot_api_version == direct.snapshot_api_version


def test_spec_version_quirk_through_the_binding_infers_the_type(caplog: pytest.LogCaptureFixture) -> None:
    raw = sample("cloud-events-schema", "resource_delete_success.json")
    assert "specVersion" in raw and "specversion" not in raw
    with caplog.at_level(logging.DEBUG, logger="shared.core.events"):
        decoded, event = via_binding(raw)
    # The binding only recognises lower-case `specversion`, so this is an EventGridEvent without type.
    assert isinstance(decoded, func.EventGridEvent)
    assert decoded.event_type is None
    assert event.event_type == "Microsoft.Resources.ResourceDeleteSuccess"
    assert event.is_delete
    assert event.resource_id == STORAGE_ID
    assert event.event_time == ""  # the binding dropped `time`: nothing to recover
    assert any("inferred Microsoft.Resources.ResourceDeleteSuccess" in r.getMessage() for r in caplog.records)


def test_spec_version_quirk_read_raw_is_a_cloud_event() -> None:
    event = parse_event(sample("cloud-events-schema", "resource_delete_success.json"))
    assert event.event_type == "Microsoft.Resources.ResourceDeleteSuccess"
    assert event.event_time == "2018-07-19T19:24:12.7638810Z"


def test_cloud_event_through_the_binding_keeps_time_and_extensions() -> None:
    raw = sample("cloud-events-schema", "resource_write_success.json") | {"traceparent": "00-abc"}
    decoded = EventGridEventInConverter.decode(Datum(json.dumps(raw), "json"), trigger_metadata={})
    assert isinstance(decoded, func.CloudEvent)
    as_dict = event_from_binding(decoded)
    assert as_dict["traceparent"] == "00-abc"
    assert as_dict["specversion"] == "1.0"
    assert as_dict["time"].startswith("2018-07-19T18:38:04.611735")
    assert "dataschema" not in as_dict  # None attributes are left out
    assert parse_event(as_dict).event_type == "Microsoft.Resources.ResourceWriteSuccess"


@pytest.mark.parametrize("path", HEALTH_SAMPLES, ids=sample_id)
def test_health_resources_samples_are_rejected_by_event_type(path: Path) -> None:
    with pytest.raises(EventError, match=r"eventType 'Microsoft\.ResourceNotifications\.HealthResources"):
        parse_event(load(path))


def test_event_from_binding_rejects_other_objects_and_passes_mappings() -> None:
    with pytest.raises(EventError, match="unsupported binding object int"):
        event_from_binding(42)
    raw = sample("event-grid-schema", "resource_write_success.json")
    assert event_from_binding(raw) == raw


# --- actors -------------------------------------------------------------------------------------


def test_actor_of_a_user_write() -> None:
    event = parse_event(sample("event-grid-schema", "resource_write_success.json"))
    # No httpRequest on writes in the sample: the IP comes from the `ipaddr` claim.
    assert event.actor == Actor(
        name="{full-name}", upn="{user-name}", appid="{ID}", object_id="{ID}", client_ip="{IP-address}"
    )
    assert event.actor.display() == "{user-name} from {IP-address}"
    assert event.operation_name == "Microsoft.Storage/storageAccounts/write"
    assert event.status == "Succeeded"
    assert event.correlation_id == "{ID}"


def test_actor_of_a_service_principal_action() -> None:
    event = parse_event(sample("cloud-events-schema", "resource_action_success.json"))
    assert event.actor == Actor(appid="{ID}", object_id="{ID}", client_ip="{IP-address}")
    assert event.actor.display() == "app {ID} from {IP-address}"


def _resources_event(**data: Any) -> dict[str, Any]:
    raw = copy.deepcopy(sample("event-grid-schema", "resource_write_success.json"))
    raw["data"].update(data)
    return raw


def test_actor_short_claim_names_and_http_request_ip_wins() -> None:
    raw = _resources_event(
        claims={"upn": "ana@contoso.com", "oid": "oid-1", "ipaddr": "10.0.0.1", "name": "Ana"},
        httpRequest={"clientIpAddress": "203.0.113.9"},
    )
    actor = parse_event(raw).actor
    assert actor == Actor(name="Ana", upn="ana@contoso.com", object_id="oid-1", client_ip="203.0.113.9")


@pytest.mark.parametrize(
    "claims",
    [None, "not-a-map", ["a", "b"], {"name": 5, "upn": ["x"], "appid": {"a": 1}, "ipaddr": None}],
)
def test_malformed_claims_give_an_empty_actor_not_an_error(claims: Any) -> None:
    raw = _resources_event(claims=claims, httpRequest="nope")
    assert parse_event(raw).actor == Actor()


def test_huge_claim_is_truncated() -> None:
    raw = _resources_event(claims={"name": "n" * 100_000})
    assert len(parse_event(raw).actor.name) < 300


# --- Resource Notifications -----------------------------------------------------------------------


@pytest.mark.parametrize("schema", ["event-grid-schema", "cloud-events-schema"])
def test_arn_created_or_updated_keeps_the_snapshot(schema: str) -> None:
    event = parse_event(sample(schema, "Resources_CreatedOrUpdated.json"))
    assert event.snapshot_api_version == "2019-06-01"
    assert event.snapshot_properties is not None
    assert event.snapshot_properties["allowBlobPublicAccess"] == 1  # kept as sent: a hint only
    assert event.snapshot_properties["networkAcls"]["defaultAction"] == "Allow"
    assert event.operation_name == "" and event.status == "" and event.actor == Actor()


@pytest.mark.parametrize("schema", ["event-grid-schema", "cloud-events-schema"])
def test_arn_deleted_has_no_snapshot(schema: str) -> None:
    event = parse_event(sample(schema, "Resources_Deleted.json"))
    assert event.snapshot_properties is None
    assert event.snapshot_api_version == ""
    assert event.is_delete


def test_arn_time_falls_back_to_operational_info() -> None:
    raw = sample("event-grid-schema", "Resources_Deleted.json")
    del raw["eventTime"]
    assert parse_event(raw).event_time == "2023-07-28T20:11:36.6347858Z"


def test_arn_snapshot_of_wrong_type_is_ignored() -> None:
    raw = sample("event-grid-schema", "Resources_CreatedOrUpdated.json")
    raw["data"]["resourceInfo"]["properties"] = "garbage"
    raw["data"]["apiVersion"] = 7
    event = parse_event(raw)
    assert event.snapshot_properties is None
    assert event.snapshot_api_version == ""


# --- inference and fallbacks ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("operation", "status", "expected"),
    [
        ("Microsoft.Storage/storageAccounts/write", "Succeeded", "Microsoft.Resources.ResourceWriteSuccess"),
        ("Microsoft.Storage/storageAccounts/write", "Failed", "Microsoft.Resources.ResourceWriteFailure"),
        ("Microsoft.Storage/storageAccounts/delete", "Canceled", "Microsoft.Resources.ResourceDeleteCancel"),
        (
            "Microsoft.Storage/storageAccounts/listKeys/action",
            "succeeded",
            "Microsoft.Resources.ResourceActionSuccess",
        ),
    ],
)
def test_event_type_is_inferred_from_operation_and_status(operation: str, status: str, expected: str) -> None:
    raw = _resources_event(operationName=operation, status=status)
    del raw["eventType"]
    assert parse_event(raw).event_type == expected


@pytest.mark.parametrize(
    ("name", "expected"),
    [("Resources_CreatedOrUpdated.json", ARN_CREATED_OR_UPDATED), ("Resources_Deleted.json", ARN_DELETED)],
)
def test_arn_event_type_is_inferred_from_resource_info(name: str, expected: str) -> None:
    raw = sample("cloud-events-schema", name)
    del raw["type"]
    assert parse_event(raw).event_type == expected


def test_event_type_is_matched_case_insensitively() -> None:
    raw = sample("event-grid-schema", "resource_write_success.json")
    raw["eventType"] = "microsoft.resources.resourcewritesuccess"
    assert parse_event(raw).event_type == "Microsoft.Resources.ResourceWriteSuccess"


def test_envelope_keys_in_any_casing() -> None:
    raw = sample("cloud-events-schema", "resource_write_success.json")
    raw = {("SpecVersion" if k == "specversion" else "Type" if k == "type" else k): v for k, v in raw.items()}
    assert parse_event(raw).event_type == "Microsoft.Resources.ResourceWriteSuccess"


def test_subject_is_the_fallback_resource_id() -> None:
    raw = sample("event-grid-schema", "resource_delete_success.json")
    del raw["data"]["resourceUri"]
    assert parse_event(raw).resource_id == STORAGE_ID


def test_tenant_level_id_takes_the_subscription_from_data() -> None:
    tenant_id = "/providers/Microsoft.Management/managementGroups/mg1"
    raw = _resources_event(resourceUri=tenant_id, subscriptionId="sub-1")
    event = parse_event(raw)
    assert (event.resource_id, event.subscription_id) == (tenant_id, "sub-1")
    raw["data"].pop("subscriptionId")
    with pytest.raises(EventError, match=r"data\.subscriptionId missing"):
        parse_event(raw)


def test_unicode_names_are_kept() -> None:
    uri = "/subscriptions/s1/resourceGroups/rg-ünï/providers/Microsoft.Storage/storageAccounts/accté"
    assert parse_event(_resources_event(resourceUri=uri)).resource_id == uri


# --- malformed events ---------------------------------------------------------------------------


def _without(path: str) -> Any:
    def mutate(raw: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node = raw
        for key in parents:
            node = node[key]
        del node[last]

    return mutate


def _setting(path: str, value: Any) -> Any:
    def mutate(raw: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node = raw
        for key in parents:
            node = node[key]
        node[last] = value

    return mutate


def _both(*mutations: Any) -> Any:
    def mutate(raw: dict[str, Any]) -> None:
        for mutation in mutations:
            mutation(raw)

    return mutate


MALFORMED = [
    ("no id", _without("id"), "id missing"),
    ("numeric id", _setting("id", 123), "id must be a string, got int"),
    ("huge id", _setting("id", "x" * 5000), "id too long"),
    ("no data", _without("data"), "data missing"),
    ("string data", _setting("data", "{}"), "data must be an object, got str"),
    ("list data", _setting("data", []), "data must be an object, got list"),
    (
        "no resource id",
        _both(_without("data.resourceUri"), _without("subject")),
        "data.resourceUri missing (and no subject)",
    ),
    ("numeric resourceUri", _setting("data.resourceUri", 7), "data.resourceUri must be a string, got int"),
    (
        "dot-dot resourceUri",
        _setting("data.resourceUri", "/subscriptions/s/resourceGroups/../providers/Microsoft.Storage/x/y"),
        "data.resourceUri is not a usable ARM resource id",
    ),
    (
        "encoded dot-dot resourceUri",
        _setting("data.resourceUri", "/subscriptions/s/resourceGroups/%2e%2E/providers/a/b/c"),
        "data.resourceUri is not a usable ARM resource id",
    ),
    (
        "url resourceUri",
        _setting("data.resourceUri", "https://evil.example/subscriptions/s"),
        "data.resourceUri is not a usable ARM resource id",
    ),
    (
        "control character",
        _setting("data.resourceUri", "/subscriptions/s/resourceGroups/r\x00g"),
        "data.resourceUri is not a usable ARM resource id",
    ),
    (
        "huge resourceUri",
        _setting("data.resourceUri", "/subscriptions/" + "a" * 5000),
        "data.resourceUri too long",
    ),
    (
        "unknown type",
        _setting("eventType", "Contoso.Thing.Happened"),
        "eventType 'Contoso.Thing.Happened' not supported",
    ),
    ("numeric type", _setting("eventType", 3), "eventType must be a string, got int"),
    ("numeric status", _setting("data.status", 1), "data.status must be a string, got int"),
    (
        "list operationName",
        _setting("data.operationName", ["a"]),
        "data.operationName must be a string, got list",
    ),
    ("numeric time", _setting("eventTime", 1.5), "eventTime must be a string, got float"),
    (
        "untypeable",
        _both(_without("eventType"), _without("data.operationName")),
        "event type missing (eventType/type) and data has neither operationName nor resourceInfo",
    ),
    (
        "unknown status",
        _both(_without("eventType"), _setting("data.status", "Running")),
        "data.status 'Running' does not tell it",
    ),
    (
        "unknown verb",
        _both(
            _without("eventType"), _setting("data.operationName", "Microsoft.Storage/storageAccounts/read")
        ),
        "data.operationName 'Microsoft.Storage/storageAccounts/read' does not tell it",
    ),
]


@pytest.mark.parametrize(("mutate", "message"), [m[1:] for m in MALFORMED], ids=[m[0] for m in MALFORMED])
def test_malformed_event_names_the_field(mutate: Any, message: str) -> None:
    raw = sample("event-grid-schema", "resource_write_success.json")
    mutate(raw)
    with pytest.raises(EventError) as info:
        parse_event(raw)
    assert message in str(info.value)
    assert str(info.value).startswith("event ")


def test_error_message_names_the_event() -> None:
    raw = _resources_event()
    raw["id"] = "abc"
    del raw["data"]["resourceUri"]
    del raw["subject"]
    with pytest.raises(EventError, match=r"^event 'abc': data\.resourceUri missing"):
        parse_event(raw)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (_setting("data.resourceInfo", "x"), "data.resourceInfo must be an object, got str"),
        (_setting("data.resourceInfo.id", ["x"]), "data.resourceInfo.id must be a string, got list"),
        (_setting("specversion", "0.3"), "specversion '0.3' not supported"),
        (_setting("specversion", 1), "specversion must be a string, got int"),
        (_both(_without("data.resourceInfo.id"), _without("subject")), "data.resourceInfo.id missing"),
    ],
)
def test_malformed_arn_cloud_event(mutate: Any, message: str) -> None:
    raw = sample("cloud-events-schema", "Resources_CreatedOrUpdated.json")
    mutate(raw)
    with pytest.raises(EventError, match=r"^event '4eef929a") as info:
        parse_event(raw)
    assert message in str(info.value)


@pytest.mark.parametrize("raw", [[], "event", 5, None, b"{}"])
def test_non_object_event(raw: Any) -> None:
    with pytest.raises(EventError, match="expected a JSON object"):
        parse_event(raw)


def test_errors_are_value_errors() -> None:
    assert issubclass(EventError, ValueError)


# --- property tests -------------------------------------------------------------------------------

JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True)
    | st.text(max_size=40)
    | st.sampled_from(
        [
            "Microsoft.Resources.ResourceWriteSuccess",
            "microsoft.resourcenotifications.resources.deleted",
            "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/a",
            "/subscriptions/s/../x",
            "\ud800",
            "1.0",
            "Succeeded",
        ]
    )
)
JSON = st.recursive(
    JSON_SCALARS,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=5)
    ),
    max_leaves=25,
)
ENVELOPE_KEYS = st.sampled_from(
    [
        "id",
        "topic",
        "subject",
        "eventType",
        "eventTime",
        "data",
        "dataVersion",
        "source",
        "type",
        "time",
        "specversion",
        "specVersion",
    ]
)
DATA_KEYS = st.sampled_from(
    [
        "resourceUri",
        "resourceInfo",
        "operationName",
        "status",
        "claims",
        "httpRequest",
        "subscriptionId",
        "apiVersion",
    ]
)
ENVELOPES = st.dictionaries(ENVELOPE_KEYS, JSON, max_size=8).flatmap(
    lambda env: st.dictionaries(DATA_KEYS, JSON, max_size=6).map(
        lambda data: env | {"data": data} if "data" not in env else env
    )
)


def _mutated_samples() -> st.SearchStrategy[Any]:
    raws = [load(p) for p in SAMPLES]

    def paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        found = [prefix] if prefix else []
        if isinstance(node, dict):
            for key, value in node.items():
                found += paths(value, (*prefix, key))
        return found

    def mutate(index: int, choice: int, value: Any, delete: bool) -> Any:
        raw = copy.deepcopy(raws[index])
        candidates = paths(raw)
        path = candidates[choice % len(candidates)]
        node = raw
        for key in path[:-1]:
            node = node[key]
        if delete:
            del node[path[-1]]
        else:
            node[path[-1]] = value
        return raw

    return st.builds(
        mutate,
        st.integers(0, len(raws) - 1),
        st.integers(0, 10_000),
        JSON,
        st.booleans(),
    )


def _only_event_error(raw: Any) -> None:
    try:
        event = parse_event(raw)
    except EventError:
        return
    assert isinstance(event, ChangeEvent)
    assert event.event_id and event.resource_id.startswith(("/subscriptions/", "/providers/"))


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(JSON | ENVELOPES)
def test_parse_event_only_raises_event_error_on_arbitrary_json(raw: Any) -> None:
    _only_event_error(raw)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(_mutated_samples())
def test_parse_event_only_raises_event_error_on_mutated_samples(raw: Any) -> None:
    _only_event_error(raw)
