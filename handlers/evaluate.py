"""Queue trigger: one message per closed coalescing window -> one evaluation of the target."""

from __future__ import annotations

import azure.functions as func

from shared.core.work import QUEUE_NAME

bp = func.Blueprint()  # type: ignore[no-untyped-call]  # azure-functions leaves it untyped


@bp.function_name("evaluate_target")
@bp.queue_trigger(arg_name="msg", queue_name=QUEUE_NAME, connection="AzureWebJobsStorage")
def evaluate_target(msg: func.QueueMessage) -> None:
    from shared.entrypoints.app import handle_queue_message

    handle_queue_message(msg.get_body().decode("utf-8", errors="replace"), msg.dequeue_count or 1)
