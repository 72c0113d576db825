"""Intake and the queue edge under failure (issue 11, defect 9).

- A queue body nested 40,000 levels deep is dropped with one clear log line, like any malformed
  message, instead of raising RecursionError out of the handler.
- A queue send that fails after the window's marker was written must not strand the window: the
  event is not recorded as seen, Event Grid delivers it again, and that delivery re-sends the
  window's message.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from shared import app as app_module
from shared.adapters.queue import decode_message

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
