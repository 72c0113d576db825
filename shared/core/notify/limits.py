"""How much each receiver accepts, and the pure helpers that keep a body within it while saying
what was left out ("... and 1750 more event ids", "... 4096 more characters left out").

A transition's provenance lists every event id that led to it, and a before/after can hold a
whole perimeter's access rules: both are unbounded, so every body built from a transition is
bounded twice: its lists are shortened where they are rendered, and the whole text is capped
below the receiver's limit as a last resort.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

# GitHub refuses an issue or comment body over 65,536 characters (422 "body is too long").
GITHUB_MAX_BODY = 65_536
# Azure Boards: a long-text (HTML) field holds at most "1 M characters" (work tracking limits).
DEVOPS_MAX_TEXT = 1_000_000
# Work item comments have no documented limit (pull request discussion comments stop at 150,000):
# a conservative cap, the same as GitHub's.
DEVOPS_MAX_COMMENT = 65_536
# An Event Grid event is at most 1 MB: a webhook receiver can forward our CloudEvent as it is.
WEBHOOK_MAX_BYTES = 1_000_000
# Event Grid refuses a publish request over 1 MB (custom and namespace topics alike): the JSON array
# of a batch, as the SDK writes it, stays below this (room left for the SDK's re-serialisation).
EVENTGRID_MAX_BATCH_BYTES = 1_000_000

MAX_LISTED_EVENT_IDS = 50  # event ids rendered in a task body or comment
MAX_EVENT_IDS_IN_EVENT = 100  # event ids carried in a webhook event's data
MAX_VALUE_CHARS = 500  # one before/after value rendered in a task comment

_NOTE_ROOM = 80  # characters kept free for the "left out" note


def more_event_ids(left: int) -> str:
    return f"... and {left} more event ids"


def listed_event_ids(values: object, shown: int = MAX_LISTED_EVENT_IDS) -> tuple[list[str], int]:
    """The first ``shown`` event ids and how many more there are."""
    ids = [str(v) for v in values] if isinstance(values, list | tuple) else []
    return ids[:shown], max(len(ids) - shown, 0)


def cut_value(text: str, limit: int = MAX_VALUE_CHARS) -> str:
    """One rendered value, at most about ``limit`` characters, saying how many were left out."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text) - limit} more characters left out)"


def _html_safe(cut: str) -> str:
    """Never end inside a tag (``<a href=...``) or a character reference (``&amp``)."""
    opened, closed = cut.rfind("<"), cut.rfind(">")
    if opened > closed:
        cut = cut[:opened]
    amp = cut.rfind("&")
    if amp != -1 and ";" not in cut[amp:] and len(cut) - amp <= 10:
        cut = cut[:amp]
    return cut


def cap_text(text: str, limit: int, *, html: bool = False, tail: str = "") -> str:
    """``text`` + ``tail`` in at most ``limit`` characters. When it does not fit, ``text`` is cut
    (at a safe place in HTML) and a note says how many characters were left out; ``tail`` (a
    trailer that must survive, e.g. the finding key that finds the task again) is kept whole."""
    if len(text) + len(tail) <= limit:
        return text + tail
    if len(tail) > limit // 2:  # a tail that large is content, not a trailer
        text, tail = text + tail, ""
    cut = text[: max(limit - len(tail) - _NOTE_ROOM, 0)]
    if html:
        cut = _html_safe(cut)
    note = f"... {len(text) - len(cut)} more characters left out"
    return cut + (f"<p>{note}</p>" if html else f"\n\n{note}") + tail


# -- JSON payloads (webhook events) -------------------------------------------------------------------

# What identifies a transition: never shortened.
_IDENTITY = frozenset({"transition", "rule", "resource", "perimeter", "severity", "key", "idempotency_key", "when"})
_LEVELS = ((1000, 4000), (200, 1000), (50, 300), (10, 100), (3, 60))  # (list items, string chars)


def json_bytes(value: Any) -> int:
    """Size on the wire (the senders' compact UTF-8 encoding)."""
    return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))


def shrink(value: Any, items: int, chars: int) -> Any:
    """``value`` with every list cut to ``items`` (and every object to ``items`` keys), every string
    to ``chars``; each cut says how much it left out."""
    if isinstance(value, str):
        return value if len(value) <= chars else f"{value[:chars]}... ({len(value) - chars} more characters left out)"
    if isinstance(value, list | tuple):
        kept = [shrink(v, items, chars) for v in value[:items]]
        return [*kept, f"... and {len(value) - items} more items left out"] if len(value) > items else kept
    if isinstance(value, Mapping):
        keys = list(value)
        kept_map = {str(k): shrink(value[k], items, chars) for k in keys[:items]}
        if len(keys) > items:
            kept_map["..."] = f"{len(keys) - items} more keys left out"
        return kept_map
    return value


def _with_event_ids(data: dict[str, Any], shown: int) -> dict[str, Any]:
    ids = data.get("event_ids")
    if isinstance(ids, list | tuple) and len(ids) > shown:
        data["event_ids"] = list(ids[:shown])
        data["event_ids_omitted"] = int(data.get("event_ids_omitted", 0)) + len(ids) - shown
    return data


def bounded_transition(transition: Mapping[str, Any], max_bytes: int) -> dict[str, Any]:
    """A transition's JSON form within ``max_bytes``: at most MAX_EVENT_IDS_IN_EVENT event ids
    (``event_ids_omitted`` counts the rest); if still too big, its other lists and strings are
    shortened step by step (``truncated: true``); its identity (key, idempotency key, rule,
    resource, kind, severity) is never touched."""
    data = _with_event_ids(dict(transition), MAX_EVENT_IDS_IN_EVENT)
    if json_bytes(data) <= max_bytes:
        return data
    for items, chars in _LEVELS:
        smaller = {k: v if k in _IDENTITY or k == "event_ids" else shrink(v, items, chars) for k, v in data.items()}
        smaller = _with_event_ids(smaller, min(items, MAX_EVENT_IDS_IN_EVENT))
        smaller["truncated"] = True
        if json_bytes(smaller) <= max_bytes:
            return smaller
    minimal = {k: data[k] for k in data if k in _IDENTITY}
    minimal.update(truncated=True, omitted=sorted(k for k in data if k not in _IDENTITY))
    return minimal
