"""A queue worker that SIGKILLs itself at a chosen point: ``python -m tests.kill_worker CONFIG``.

It does what the Functions host does with the evaluation queue (receive a message with a
visibility timeout, run the evaluation, delete the message on success, leave it to reappear on
failure) against a real Azurite, with the real Table store and outbox. ``kill_at`` = N makes the
process send itself SIGKILL just before its N-th state-store call: no ``except``, no ``finally``,
no atexit runs, exactly like a recycled or timed-out instance. 0 never kills.

CONFIG is a JSON file: connection, prefix, queue, estate, kill_at, visibility, idle, lease.
Used by tests/test_pipeline_kills.py only.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

SUB = "6e1c6f2a-5b7d-4c8e-9f10-2a3b4c5d6e7f"


class KillSwitch:
    """The store, counting calls; SIGKILL before call number ``kill_at``."""

    def __init__(self, inner: Any, kill_at: int) -> None:
        self._inner = inner
        self._kill_at = kill_at
        self._calls = 0

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._inner, name)
        if not callable(attribute):
            return attribute

        def call(*args: Any, **kwargs: Any) -> Any:
            self._calls += 1
            if self._calls == self._kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
            return attribute(*args, **kwargs)

        return call


def main(config_path: str) -> int:
    from azure.storage.queue import QueueClient, TextBase64DecodePolicy

    from shared.adapters import runtime
    from shared.adapters.estate import Estate
    from shared.adapters.notify.destinations import parse_destinations
    from shared.adapters.queue import EvaluationQueue, decode_message
    from shared.adapters.state.table_store import TableStateStore
    from shared.core.config import RulesConfig
    from shared.core.targeting import Scope
    from shared.service.dispatch import OutboxSink
    from shared.service.pipeline import Pipeline
    from shared.wiring import EstateClients, readers_for

    config = json.loads(Path(config_path).read_text())
    tables = TableStateStore.from_connection_string(config["connection"], config["prefix"])
    store = KillSwitch(tables, config["kill_at"])
    queue = EvaluationQueue.from_connection_string(config["connection"], config["queue"])
    receiver = QueueClient.from_connection_string(
        config["connection"], config["queue"], message_decode_policy=TextBase64DecodePolicy()
    )
    routes = parse_destinations([{"name": "siem", "type": "webhook", "url_setting": "U", "secret_setting": "S"}])
    clients = EstateClients(Estate.load(config["estate"]))
    pipeline = Pipeline(
        store=store,  # type: ignore[arg-type]
        outbox=OutboxSink(store, routes),  # type: ignore[arg-type]
        enqueue=queue.send,
        config=RulesConfig(),
        scope=Scope((SUB,)),
        window_seconds=0.0,
        lease_seconds=config["lease"],
    )
    idle_since = time.monotonic()
    while time.monotonic() - idle_since < config["idle"]:
        message = receiver.receive_message(visibility_timeout=config["visibility"])
        if message is None:
            time.sleep(0.2)
            continue
        target, _ = decode_message(message.content)
        try:
            runtime.run(pipeline.evaluate_window(target, readers_for(clients)))
        except Exception as exc:  # the host leaves the message to reappear
            print(f"evaluation of {target.key} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        else:
            receiver.delete_message(message)
        idle_since = time.monotonic()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
