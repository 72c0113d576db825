"""EvaluationQueue against a real Azurite queue, and the message decoder."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from datetime import timedelta

import pytest
from azure.storage.queue import QueueClient, QueueServiceClient, TextBase64DecodePolicy

from shared.adapters.queue import EvaluationQueue, decode_message, encode_message
from shared.core.changes import TARGET_KINDS, Target, TargetKind
from shared.core.state.base import StoreUnavailable
from tests.azurite import Azurite, free_port, unique_name

RG = "/subscriptions/00000000-0000-0000-0000-00000000abcd/resourceGroups/rg"
ACCOUNT = f"{RG}/providers/Microsoft.Storage/storageAccounts/st1"
TARGET = Target(TargetKind.ACCOUNT, ACCOUNT)


@pytest.fixture
def queue_name() -> str:
    return unique_name("q")


@pytest.fixture
def queue(azurite: Azurite, queue_name: str) -> Iterator[EvaluationQueue]:
    adapter = EvaluationQueue.from_connection_string(
        azurite.connection_string, queue_name, clock=lambda: 1_000.0
    )
    yield adapter
    adapter.close()


def reader(azurite: Azurite, queue_name: str, decoded: bool = True) -> QueueClient:
    policy = TextBase64DecodePolicy() if decoded else None
    return QueueClient.from_connection_string(
        azurite.connection_string, queue_name, message_decode_policy=policy
    )


@pytest.mark.azurite
def test_message_is_base64_json_that_decodes_back(
    azurite: Azurite, queue: EvaluationQueue, queue_name: str
) -> None:
    queue.send(TARGET, 0)

    (raw,) = reader(azurite, queue_name, decoded=False).peek_messages(max_messages=5)
    message = reader(azurite, queue_name).receive_message()

    assert message is not None
    assert (
        base64.b64decode(raw.content).decode() == message.content
    )  # base64 on the wire, as the trigger expects
    assert json.loads(message.content) == {
        "target": {"kind": "account", "resource_id": ACCOUNT},
        "not_before": 1000.0,
    }
    assert decode_message(message.content) == (TARGET, 1000.0)


@pytest.mark.azurite
def test_message_stays_invisible_until_the_window_closes(
    azurite: Azurite, queue: EvaluationQueue, queue_name: str
) -> None:
    client = reader(azurite, queue_name)
    queue.send(TARGET, 2.0)
    sent = time.monotonic()
    # Poll until it shows (the service makes it visible 2 s after the send); 60 s only bounds a broken run.
    message = client.receive_message(visibility_timeout=30)
    while message is None and time.monotonic() - sent < 60:
        time.sleep(0.2)
        message = client.receive_message(visibility_timeout=30)
    assert message is not None, "the message never became visible"
    # The service's own clock, not this machine's speed: it was handed out no earlier than 2 s after
    # it was inserted (the receive set next_visible_on = dequeue time + 30 s; whole seconds).
    assert message.inserted_on is not None and message.next_visible_on is not None
    dequeued = message.next_visible_on - timedelta(seconds=30)
    assert (dequeued - message.inserted_on).total_seconds() >= 2
    assert message.dequeue_count == 1
    assert decode_message(message.content) == (TARGET, 1002.0)


@pytest.mark.azurite
def test_queue_is_created_on_first_send_only(azurite: Azurite, queue_name: str) -> None:
    service = QueueServiceClient.from_connection_string(azurite.connection_string)
    adapter = EvaluationQueue.from_connection_string(azurite.connection_string, queue_name)
    assert queue_name not in {q.name for q in service.list_queues()}

    adapter.send(TARGET, 0)
    adapter.send(Target(TargetKind.PERIMETER, "/x/nsp"), 0)  # a second send reuses the queue

    assert queue_name in {q.name for q in service.list_queues()}
    assert len(reader(azurite, queue_name).peek_messages(max_messages=5)) == 2
    adapter.close()
    service.close()


@pytest.mark.azurite
def test_existing_queue_is_reused(azurite: Azurite, queue_name: str) -> None:
    QueueClient.from_connection_string(azurite.connection_string, queue_name).create_queue()
    adapter = EvaluationQueue.from_connection_string(azurite.connection_string, queue_name)

    adapter.send(TARGET, 0)

    assert len(reader(azurite, queue_name).peek_messages()) == 1
    adapter.close()


def test_unreachable_queue_service_raises_store_unavailable() -> None:
    dead = (
        "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
        "AccountKey=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==;"
        f"QueueEndpoint=http://127.0.0.1:{free_port()}/devstoreaccount1;"
    )
    adapter = EvaluationQueue.from_connection_string(dead, "evals", retry_total=0)
    with pytest.raises(StoreUnavailable) as caught:
        adapter.send(TARGET, 0)
    assert "Eby8" not in str(caught.value)
    adapter.close()


# -- decoding ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", TARGET_KINDS)
def test_every_target_kind_round_trips(kind: TargetKind) -> None:
    target = Target(kind, "/subscriptions/s/resourceGroups/rg/providers/X/y/Z")
    assert decode_message(encode_message(target, 12.5)) == (target, 12.5)


def test_a_sweep_is_a_cause_not_a_target() -> None:
    message = encode_message(Target(TargetKind.SWEEP, "/subscriptions/s"), 0.0)
    with pytest.raises(ValueError) as caught:
        decode_message(message)
    assert str(caught.value) == "target.kind: 'sweep' is not one of account, perimeter, vm, backup, keyvault"


def test_integer_not_before_is_accepted() -> None:
    assert decode_message('{"target":{"kind":"vm","resource_id":"/v"},"not_before":7}') == (
        Target(TargetKind.VIRTUAL_MACHINE, "/v"),
        7.0,
    )


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("not json", "message"),
        ("[1, 2]", "message"),
        ('{"not_before": 1}', "target"),
        ('{"target": "acct", "not_before": 1}', "target"),
        ('{"target": {"kind": "disk", "resource_id": "/x"}, "not_before": 1}', "target.kind"),
        ('{"target": {"kind": 3, "resource_id": "/x"}, "not_before": 1}', "target.kind"),
        ('{"target": {"kind": "account"}, "not_before": 1}', "target.resource_id"),
        ('{"target": {"kind": "account", "resource_id": "  "}, "not_before": 1}', "target.resource_id"),
        ('{"target": {"kind": "account", "resource_id": "/x"}}', "not_before"),
        ('{"target": {"kind": "account", "resource_id": "/x"}, "not_before": "soon"}', "not_before"),
        ('{"target": {"kind": "account", "resource_id": "/x"}, "not_before": true}', "not_before"),
        ('{"target": {"kind": "account", "resource_id": "/x"}, "not_before": NaN}', "not_before"),
    ],
)
def test_decode_errors_name_the_field(text: str, field: str) -> None:
    with pytest.raises(ValueError, match=rf"^{field}:"):
        decode_message(text)
