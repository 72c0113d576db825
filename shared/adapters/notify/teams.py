"""Microsoft Teams via a Workflows (Power Automate) webhook: one Adaptive Card per transition.

Cards use schema 1.5 (the highest Teams renders on every client) and only Action.OpenUrl: a
Workflows webhook cannot receive Action.Submit, so a button posting back would just fail. Teams
refuses messages over ~28 KB and answers 413 well below that for cards with many elements, so each
message is kept under MAX_CARD_BYTES: lists are cut with "+N more" and the card links out to the
portal for the rest. A card is built at the most generous level that fits (see ``card_bytes``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from shared.adapters.notify import http
from shared.core import arm_ids
from shared.core.changes import AFFECTED_ACCOUNTS_SHOWN
from shared.core.model import Severity
from shared.core.notify.base import Delivery, Outcome, TaskLookup
from shared.core.notify.explain import why_and_how
from shared.core.output import portal_url
from shared.core.rules import RULES_BY_ID

MAX_CARD_BYTES = 16_000
SCHEMA = "http://adaptivecards.io/schemas/adaptive-card.json"
VERSION = "1.5"
NSP_DOCS = "https://learn.microsoft.com/azure/private-link/network-security-perimeter-concepts"
# TextBlock colours and Container styles by severity (resolved is always Good / good).
_COLOUR = {"critical": "Attention", "high": "Attention", "medium": "Warning", "low": "Accent", "info": "Accent"}
_STYLE = {"critical": "attention", "high": "attention", "medium": "warning", "low": "accent", "info": "emphasis"}
_KIND_LABEL = {"opened": "New finding", "changed": "Changed", "resolved": "Resolved"}


@dataclass(frozen=True)
class _Level:
    """How much detail a card carries; later levels are used only when a card would not fit."""

    facts: int  # "what changed" rows / digest rows per group
    items: int  # list elements shown per side of a list diff
    value: int  # characters of one fact value
    text: int  # characters of a paragraph (summary, why, how)


_LEVELS = (_Level(12, 8, 300, 900), _Level(8, 5, 160, 500), _Level(4, 3, 100, 300), _Level(2, 1, 60, 160))


def card_bytes(message: Mapping[str, Any]) -> int:
    """Size on the most verbose standard serialisation (ASCII escapes, spaced separators): never
    smaller than what we post, so the cap holds however the message is re-encoded on its way."""
    return len(json.dumps(message).encode("ascii"))


def _cut(value: object, limit: int) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, ensure_ascii=False)
    text = " ".join(text.split())  # one line: FactSet values do not wrap newlines well
    return text if len(text) <= limit else text[: max(limit - 1, 1)] + "…"


def resource_name(resource_id: object) -> str:
    return str(resource_id or "").rstrip("/").rsplit("/", 1)[-1] or "—"


def resource_label(resource_id: object) -> str:
    lowered = str(resource_id or "").lower()
    if "/microsoft.storage/storageaccounts/" in lowered:
        return "Storage account"
    if "/microsoft.network/networksecurityperimeters/" in lowered:
        return "Perimeter"
    return "Resource"


def _list_change(old: object, new: object, level: _Level) -> tuple[str, bool] | None:
    """``+2: a, b · -1: c`` for list values (address prefixes, FQDNs, subscriptions, tags), and
    whether elements were left out; None when the values are not lists."""
    if not isinstance(old, list | None) or not isinstance(new, list | None) or (old is None and new is None):
        return None
    before = [_cut(x, 60) for x in (old or [])]
    after = [_cut(x, 60) for x in (new or [])]
    before_set, after_set = set(before), set(after)
    added = [x for x in after if x not in before_set]
    removed = [x for x in before if x not in after_set]

    def side(sign: str, items: list[str]) -> str:
        shown = ", ".join(items[: level.items])
        more = f" (+{len(items) - level.items} more)" if len(items) > level.items else ""
        return f"{sign}{len(items)}: {shown}{more}"

    parts = [side("+", added)] if added else []
    parts += [side("-", removed)] if removed else []
    return " · ".join(parts) or "reordered", max(len(added), len(removed)) > level.items


def diff_facts(before: Mapping[str, Any], after: Mapping[str, Any], level: _Level) -> tuple[list[dict[str, str]], bool]:
    """FactSet rows of what differs, and whether anything was left out."""
    facts: list[dict[str, str]] = []
    cut = False
    for key in sorted(set(before) | set(after)):
        old, new = before.get(key), after.get(key)
        if old == new:
            continue
        listed = _list_change(old, new, level)
        if listed is not None:
            value, shortened = listed
            cut = cut or shortened
        else:
            shown_old = "—" if old is None else _cut(old, level.value // 2)
            shown_new = "—" if new is None else _cut(new, level.value // 2)
            value = f"{shown_old} → {shown_new}"
        facts.append({"title": _cut(key, 40), "value": _cut(value, level.value)})
    if len(facts) > level.facts:
        hidden = len(facts) - level.facts
        facts = [*facts[: level.facts], {"title": "…", "value": f"+{hidden} more changed field(s)"}]
        cut = True
    return facts, cut


def _heading(text: str) -> dict[str, Any]:
    return {"type": "TextBlock", "text": text, "weight": "Bolder", "spacing": "Medium", "wrap": True}


def _paragraph(text: str, level: _Level) -> dict[str, Any]:
    return {"type": "TextBlock", "text": _cut(text, level.text), "wrap": True}


def _first_ids(values: object, shown: int = 3) -> str:
    ids = [str(v) for v in values] if isinstance(values, list) else []
    if not ids:
        return "—"
    more = f" (+{len(ids) - shown} more)" if len(ids) > shown else ""
    return ", ".join(ids[:shown]) + more


def _links(transition: Mapping[str, Any]) -> list[dict[str, Any]]:
    resource = str(transition.get("resource") or "")
    perimeter = str(transition.get("perimeter") or "")
    actions: list[dict[str, Any]] = []
    if resource:
        actions.append(
            {"type": "Action.OpenUrl", "title": f"Open {resource_label(resource).lower()}", "url": portal_url(resource)}
        )
    if perimeter and perimeter.lower() != resource.lower():
        actions.append({"type": "Action.OpenUrl", "title": "Open perimeter", "url": portal_url(perimeter)})
    rule = RULES_BY_ID.get(str(transition.get("rule", "")))
    guidance = rule.sources[0].url if rule is not None and rule.sources else NSP_DOCS
    actions.append({"type": "Action.OpenUrl", "title": "Guidance", "url": guidance})
    return actions


def affected_accounts(transition: Mapping[str, Any]) -> tuple[list[dict[str, str]], int] | None:
    """A perimeter-level change's affected accounts as FactSet rows (name, resource group): the
    first AFFECTED_ACCOUNTS_SHOWN, then "and N more"; and the total. None when it names none."""
    accounts = transition.get("accounts")
    if not isinstance(accounts, list) or not accounts:
        return None
    more = transition.get("accounts_more")
    more = more if isinstance(more, int) and not isinstance(more, bool) and more > 0 else 0
    rows = []
    for account in accounts[:AFFECTED_ACCOUNTS_SHOWN]:
        parsed = arm_ids.parse(str(account))
        group = f"resource group {parsed.resource_group}" if parsed is not None else "—"
        rows.append({"title": _cut(resource_name(account), 60), "value": _cut(group, 100)})
    hidden = more + max(len(accounts) - AFFECTED_ACCOUNTS_SHOWN, 0)
    if hidden:
        rows.append({"title": "…", "value": f"and {hidden} more"})
    return rows, min(len(accounts), AFFECTED_ACCOUNTS_SHOWN) + hidden


def _card(body: list[dict[str, Any]], actions: list[dict[str, Any]]) -> dict[str, Any]:
    card: dict[str, Any] = {"$schema": SCHEMA, "type": "AdaptiveCard", "version": VERSION, "body": body}
    if actions:
        card["actions"] = actions
    card["msteams"] = {"width": "Full"}  # Teams extension; other hosts ignore it
    return {
        "type": "message",
        "attachments": [
            {"contentType": "application/vnd.microsoft.card.adaptive", "contentUrl": None, "content": card}
        ],
    }


def _build(transition: Mapping[str, Any], level: _Level) -> dict[str, Any]:
    kind = str(transition.get("transition", ""))
    severity = str(transition.get("severity", "info")).lower()
    rule_id = str(transition.get("rule", ""))
    resource = transition.get("resource")
    perimeter = transition.get("perimeter")
    resolved = kind == "resolved"
    why, how = why_and_how(rule_id)

    header_text = "RESOLVED" if resolved else f"{severity.upper()} · {_KIND_LABEL.get(kind, kind)}"
    title = _cut(transition.get("title") or rule_id, 200)
    body: list[dict[str, Any]] = [
        {
            "type": "Container",
            "style": "good" if resolved else _STYLE.get(severity, "emphasis"),
            "bleed": True,
            "items": [
                {
                    "type": "TextBlock",
                    "text": f"{header_text} · nsp-drift",
                    "color": "Good" if resolved else _COLOUR.get(severity, "Accent"),
                    "weight": "Bolder",
                    "size": "Small",
                },
                {
                    "type": "TextBlock",
                    "text": f"Resolved: {title}" if resolved else title,
                    "size": "Large",
                    "weight": "Bolder",
                    "wrap": True,
                },
            ],
        },
        _paragraph(str(transition.get("summary", "")), level),
    ]
    facts = [{"title": resource_label(resource), "value": resource_name(resource)}]
    if perimeter and str(perimeter).lower() != str(resource or "").lower():
        facts.append({"title": "Perimeter", "value": resource_name(perimeter)})
    facts += [
        {"title": "Rule", "value": rule_id or "—"},
        {"title": "Severity" if not resolved else "Was", "value": severity},
        {
            "title": "Resolved by" if resolved else "Changed by",
            "value": _cut(transition.get("changed_by") or "unknown", 120),
        },
        {"title": "When", "value": str(transition.get("when") or "—")},
        {"title": "Event ids", "value": _cut(_first_ids(transition.get("event_ids")), level.value)},
    ]
    flags = transition.get("flags")
    if isinstance(flags, list) and flags:
        facts.append({"title": "Flags", "value": _cut(", ".join(str(f) for f in flags), level.value)})
    affected = affected_accounts(transition)
    if affected is not None:
        facts.append({"title": "Affected accounts", "value": str(affected[1])})
    body.append({"type": "FactSet", "facts": facts})
    if affected is not None:
        body += [_heading(f"Affected storage accounts ({affected[1]})"), {"type": "FactSet", "facts": affected[0]}]

    if resolved:
        body.append(_paragraph("No action needed: the finding is no longer detected.", level))
    else:
        before, after = transition.get("before"), transition.get("after")
        # On a new finding before/after only repeat severity and summary, already shown above.
        if kind != "opened" and isinstance(before, Mapping) and isinstance(after, Mapping):
            changed, cut = diff_facts(before, after, level)
            if changed:
                body += [_heading("What changed (before → after)"), {"type": "FactSet", "facts": changed}]
            if cut:
                where = "perimeter" if perimeter else resource_label(resource).lower()
                note = f"Shortened; the full list is on the {where} in the portal (link below)."
                body.append(_paragraph(note, level))
    if why:
        body += [_heading("Why it matters"), _paragraph(why, level)]
    if how and not resolved:
        body += [_heading("How to fix"), _paragraph(how, level)]
    return _card(body, _links(transition))


def _minimal(transition: Mapping[str, Any]) -> dict[str, Any]:
    """Last resort (never reached by the builders above): the headline and links only."""
    text = f"{str(transition.get('severity', '')).upper()} {transition.get('transition')}: {transition.get('title')}"
    return _card([{"type": "TextBlock", "text": _cut(text, 200), "wrap": True}], _links(transition))


def build_card(transition: Mapping[str, Any]) -> dict[str, Any]:
    """The Workflows webhook message for one transition (``shared.core.changes.transition_to_dict`` form)."""
    for level in _LEVELS:
        message = _build(transition, level)
        if card_bytes(message) <= MAX_CARD_BYTES:
            return message
    return _minimal(transition)


# -- digests ---------------------------------------------------------------------------------------


def _severity_rank(transition: Mapping[str, Any]) -> int:
    try:
        return int(Severity.parse(str(transition.get("severity", "info"))))
    except ValueError:
        return 0


def _digest_row_title(t: Mapping[str, Any]) -> str:
    severity = str(t.get("severity", "")).upper()
    return f"{severity} {t.get('transition')} · {_cut(resource_name(t.get('resource')), 40)}"


def _digest(
    transitions: Sequence[Mapping[str, Any]], destination: str, level: _Level, groups_shown: int
) -> dict[str, Any]:
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for t in transitions:
        groups.setdefault(str(t.get("rule", "")), []).append(t)
    # Worst first, so what is cut at the end is what matters least.
    ordered = sorted(groups.items(), key=lambda kv: (-max(_severity_rank(t) for t in kv[1]), kv[0]))
    counts: dict[str, int] = {}
    for t in transitions:
        counts[str(t.get("transition"))] = counts.get(str(t.get("transition")), 0) + 1
    tally = ", ".join(f"{n} {kind}" for kind, n in sorted(counts.items()))
    body: list[dict[str, Any]] = [
        {
            "type": "Container",
            "style": "emphasis",
            "bleed": True,
            "items": [
                {
                    "type": "TextBlock",
                    "text": f"nsp-drift digest · {len(transitions)} change(s)",
                    "size": "Large",
                    "weight": "Bolder",
                    "wrap": True,
                },
                {
                    "type": "TextBlock",
                    "text": f"{tally} · {len(groups)} rule(s)" + (f" · {destination}" if destination else ""),
                    "isSubtle": True,
                    "wrap": True,
                },
            ],
        }
    ]
    for rule_id, items in ordered[:groups_shown]:
        rule = RULES_BY_ID.get(rule_id)
        title = rule.title if rule is not None else rule_id
        worst_first = sorted(items, key=lambda t: (-_severity_rank(t), str(t.get("resource", ""))))
        facts = [
            {"title": _digest_row_title(t), "value": _cut(t.get("summary", ""), level.value // 2)}
            for t in worst_first[: level.facts]
        ]
        if len(items) > level.facts:
            facts.append({"title": "…", "value": f"+{len(items) - level.facts} more"})
        body += [_heading(f"{_cut(title, 120)} ({len(items)})"), {"type": "FactSet", "facts": facts}]
    if len(ordered) > groups_shown:
        hidden = ordered[groups_shown:]
        body.append(
            _paragraph(
                f"+{sum(len(items) for _, items in hidden)} more change(s) in {len(hidden)} other rule(s) "
                "(lower severity); see the function's log or the webhook destination.",
                level,
            )
        )
    return _card(body, [{"type": "Action.OpenUrl", "title": "Perimeter docs", "url": NSP_DOCS}])


def build_digest_card(transitions: Sequence[Mapping[str, Any]], destination: str = "") -> dict[str, Any]:
    """Quiet mode: many low-severity transitions in one message, grouped by rule, worst first."""
    rules = len({str(t.get("rule", "")) for t in transitions})
    for level in _LEVELS:
        message = _digest(transitions, destination, level, rules)
        if card_bytes(message) <= MAX_CARD_BYTES:
            return message
    # Still too big at the tightest level: drop whole groups (lowest severity first).
    shown = rules
    while shown > 1:
        shown -= 1
        message = _digest(transitions, destination, _LEVELS[-1], shown)
        if card_bytes(message) <= MAX_CARD_BYTES:
            return message
    return _digest(transitions, destination, _LEVELS[-1], 0)


class TeamsSender:
    """Posts cards to one Workflows webhook URL (which carries its own ``sig``: a secret)."""

    def __init__(self, name: str, url: str, retry: http.RetrySettings | None = None, timeout: float = 10.0) -> None:
        self.name = name
        self._url = url
        self._retry = retry
        self._timeout = timeout

    def _post(self, message: Mapping[str, Any]) -> Outcome:
        result = http.post_json(self._url, message, timeout=self._timeout, retry=self._retry, secrets=(self._url,))
        return result.outcome()

    def send(self, delivery: Delivery, tasks: TaskLookup) -> Outcome:
        return self._post(build_card(delivery.transition))

    def send_digest(self, deliveries: Sequence[Delivery]) -> Outcome:
        return self._post(build_digest_card([d.transition for d in deliveries], self.name))
