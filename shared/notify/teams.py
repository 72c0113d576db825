"""Microsoft Teams via a Workflows (Power Automate) webhook: one Adaptive Card per transition.

Cards use schema 1.5 (the highest Teams renders everywhere) and only Action.OpenUrl (no
Action.Submit: a Workflows webhook cannot receive it). Teams refuses messages over ~28 KB and users
report HTTP 413 from 20 KB: cards are built to stay under 16 KB, long diffs grouped and cut.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from shared.notify import http
from shared.notify.base import Delivery, Outcome, TaskLookup
from shared.notify.explain import why_and_how
from shared.output import portal_url

MAX_CARD_BYTES = 16_000
_COLOUR = {"critical": "Attention", "high": "Attention", "medium": "Warning", "low": "Accent", "info": "Default"}
_MAX_FACTS = 12
_MAX_VALUE = 300


def _cut(text: object, limit: int = _MAX_VALUE) -> str:
    value = text if isinstance(text, str) else json.dumps(text, sort_keys=True)
    return value if len(value) <= limit else value[: limit - 1] + "…"


def _name(resource_id: str | None) -> str:
    return (resource_id or "").rstrip("/").rsplit("/", 1)[-1] or "-"


def _diff_facts(before: Mapping[str, Any], after: Mapping[str, Any]) -> list[dict[str, str]]:
    keys = sorted(set(before) | set(after))
    facts = []
    for key in keys:
        old, new = before.get(key), after.get(key)
        if old == new:
            continue
        facts.append(
            {
                "title": key,
                "value": f"{_cut(old, 120) if old is not None else '—'} → {_cut(new, 120) if new is not None else '—'}",
            }
        )
    if len(facts) > _MAX_FACTS:
        hidden = len(facts) - _MAX_FACTS
        facts = [*facts[:_MAX_FACTS], {"title": "…", "value": f"+{hidden} more change(s): see the linked resource"}]
    return facts


def _envelope(card: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "message",
        "attachments": [
            {"contentType": "application/vnd.microsoft.card.adaptive", "contentUrl": None, "content": card}
        ],
    }


def build_card(transition: Mapping[str, Any]) -> dict[str, Any]:
    kind = str(transition.get("transition", ""))
    severity = str(transition.get("severity", "info"))
    resource = str(transition.get("resource", ""))
    perimeter = transition.get("perimeter")
    why, how = why_and_how(str(transition.get("rule", "")))
    resolved = kind == "resolved"
    body: list[dict[str, Any]] = [
        {
            "type": "TextBlock",
            "text": f"{'RESOLVED' if resolved else severity.upper()} · {kind} · nsp-drift",
            "color": "Good" if resolved else _COLOUR.get(severity, "Default"),
            "weight": "Bolder",
            "size": "Small",
        },
        {
            "type": "TextBlock",
            "text": _cut(transition.get("title", ""), 200),
            "size": "Medium",
            "weight": "Bolder",
            "wrap": True,
        },
        {"type": "TextBlock", "text": _cut(transition.get("summary", ""), 600), "wrap": True},
        {
            "type": "FactSet",
            "facts": [
                {"title": "Resource", "value": _name(resource)},
                {"title": "Perimeter", "value": _name(perimeter) if perimeter else "—"},
                {"title": "Rule", "value": str(transition.get("rule", ""))},
                {"title": "Severity", "value": severity},
                {"title": "Changed by", "value": _cut(transition.get("changed_by", "unknown"), 200)},
                {"title": "When", "value": str(transition.get("when") or "—")},
                {"title": "Events", "value": _cut(", ".join(transition.get("event_ids", [])) or "—", 200)},
            ],
        },
    ]
    diff = _diff_facts(transition.get("before") or {}, transition.get("after") or {})
    if diff and not resolved:
        body += [
            {"type": "TextBlock", "text": "What changed (before → after)", "weight": "Bolder", "spacing": "Medium"},
            {"type": "FactSet", "facts": diff},
        ]
    if why:
        body += [
            {"type": "TextBlock", "text": "Why it matters", "weight": "Bolder", "spacing": "Medium"},
            {"type": "TextBlock", "text": _cut(why, 900), "wrap": True},
        ]
    if how and not resolved:
        body += [
            {"type": "TextBlock", "text": "How to fix", "weight": "Bolder", "spacing": "Medium"},
            {"type": "TextBlock", "text": _cut(how, 900), "wrap": True},
        ]
    actions = [{"type": "Action.OpenUrl", "title": "Open resource in the portal", "url": portal_url(resource)}]
    if perimeter:
        actions.append({"type": "Action.OpenUrl", "title": "Open perimeter", "url": portal_url(str(perimeter))})
    card = {
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": "1.5",
        "body": body,
        "actions": actions,
        "msteams": {"width": "Full"},
    }
    return _envelope(card)


def build_digest_card(transitions: Sequence[Mapping[str, Any]], destination: str) -> dict[str, Any]:
    """Quiet mode: many low-severity transitions in one message, grouped by rule."""
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for t in transitions:
        groups.setdefault(str(t.get("rule", "")), []).append(t)
    body: list[dict[str, Any]] = [
        {
            "type": "TextBlock",
            "text": f"nsp-drift digest · {len(transitions)} change(s)",
            "weight": "Bolder",
            "size": "Medium",
        },
    ]
    for rule, items in sorted(groups.items()):
        facts = [
            {
                "title": f"{t.get('transition')} {_name(str(t.get('resource', '')))}",
                "value": _cut(t.get("summary", ""), 160),
            }
            for t in items[:_MAX_FACTS]
        ]
        if len(items) > _MAX_FACTS:
            facts.append({"title": "…", "value": f"+{len(items) - _MAX_FACTS} more"})
        body += [
            {"type": "TextBlock", "text": rule, "weight": "Bolder", "spacing": "Medium"},
            {"type": "FactSet", "facts": facts},
        ]
    card = {
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": "1.5",
        "body": body,
        "msteams": {"width": "Full"},
    }
    return _shrink(_envelope(card))


def _shrink(message: dict[str, Any]) -> dict[str, Any]:
    """Drop trailing body blocks until the message fits (digests can be long), and say so."""
    card = message["attachments"][0]["content"]
    cut = False
    while len(json.dumps(message).encode()) > MAX_CARD_BYTES - 200 and len(card["body"]) > 2:
        card["body"].pop()
        cut = True
    if cut:
        card["body"].append(
            {"type": "TextBlock", "text": "(truncated: the rest is in the function's log)", "wrap": True}
        )
    return message


class TeamsSender:
    def __init__(self, name: str, url: str, retry: http.RetrySettings | None = None) -> None:
        self.name = name
        self._url = url
        self._retry = retry

    def _post(self, message: Mapping[str, Any]) -> Outcome:
        result = http.request("POST", self._url, message, retry=self._retry, secrets=(self._url,))
        return Outcome(
            ok=result.ok,
            status=result.status,
            retryable=result.retryable,
            error=result.error,
            retry_after=result.retry_after,
        )

    def send(self, delivery: Delivery, tasks: TaskLookup) -> Outcome:
        return self._post(build_card(delivery.transition))

    def send_digest(self, deliveries: Sequence[Delivery]) -> Outcome:
        return self._post(build_digest_card([d.transition for d in deliveries], self.name))
