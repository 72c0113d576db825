"""Teams cards: one per rule (and perimeter pseudo rule) and transition kind, small enough for a
Workflows webhook however long the diff, without Action.Submit, and clean in the Adaptive Cards
reference parser (npm ``adaptivecards``, run by tests/js/validate_card.js)."""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.adapters.notify.teams import MAX_CARD_BYTES, build_card, build_digest_card, card_bytes
from shared.core.changes import EVALUATION_POISONED, PERIMETER_RULES_CHANGED, transition_to_dict
from shared.core.notify.explain import why_and_how
from shared.core.output import portal_url
from shared.core.rules import RULES_BY_ID
from shared.entrypoints.replay import replay
from tests.fakes.transitions import ACCOUNT, ALL_RULES, KINDS, PERIMETER, PSEUDO_RULES, make_transition

ROOT = Path(__file__).resolve().parents[1]
VALIDATOR = ROOT / "tests" / "js" / "validate_card.js"
SAMPLES = ROOT / "shared" / "samples"


def content(message: dict[str, Any]) -> dict[str, Any]:
    assert message["type"] == "message"
    (attachment,) = message["attachments"]
    assert attachment["contentType"] == "application/vnd.microsoft.card.adaptive"
    card: dict[str, Any] = attachment["content"]
    assert card["type"] == "AdaptiveCard" and card["version"] == "1.5"
    return card


def walk(node: Any) -> list[dict[str, Any]]:
    """Every object in the card (elements, facts, actions)."""
    found: list[dict[str, Any]] = []
    if isinstance(node, dict):
        found.append(node)
        for value in node.values():
            found += walk(value)
    elif isinstance(node, list):
        for value in node:
            found += walk(value)
    return found


def texts(card: dict[str, Any]) -> str:
    parts = []
    for item in walk(card):
        parts += [str(item.get(k, "")) for k in ("text", "title", "value", "url")]
    return "\n".join(parts)


def header_colour(card: dict[str, Any]) -> str:
    return str(card["body"][0]["items"][0]["color"])


def access_rule_diff(n: int) -> dict[str, Any]:
    """One access rule whose address prefixes grew by ``n`` entries, plus ``n`` changed fields."""
    before = {"name": "partners", "direction": "Inbound", "addressPrefixes": [f"10.0.{i}.0/24" for i in range(50)]}
    after = {
        **before,
        "addressPrefixes": [f"52.{i // 250}.{i % 250}.0/24" for i in range(n)],
        "fullyQualifiedDomainNames": [f"partner{i}.contoso-supplier.example" for i in range(n)],
        **{f"extra{i:03}": f"value-{i}-" + "x" * 40 for i in range(n)},
    }
    return make_transition(
        PERIMETER_RULES_CHANGED, "changed", resource_id=PERIMETER, before=before, after=after, summary="y" * 5000
    )


def every_card() -> list[tuple[str, dict[str, Any]]]:
    cards = [(f"{rule}/{kind}", build_card(make_transition(rule, kind))) for rule in ALL_RULES for kind in KINDS]
    cards.append(("500-rule access-rule diff", build_card(access_rule_diff(500))))
    many = [make_transition(rule, kind) for rule in ALL_RULES for kind in KINDS] * 25
    cards.append(("digest of 1500", build_digest_card(many, "secops")))
    cards.append(("digest of 1", build_digest_card(many[:1], "secops")))
    return cards


# -- structure -------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("rule", ALL_RULES)
def test_a_card_for_every_rule_and_kind(rule: str, kind: str) -> None:
    transition = make_transition(rule, kind)
    message = build_card(transition)
    card = content(message)
    text = texts(card)
    assert card_bytes(message) < MAX_CARD_BYTES
    assert "Action.Submit" not in json.dumps(message)
    assert {a["type"] for a in card["actions"]} == {"Action.OpenUrl"}
    assert transition["title"][:40] in text
    assert "carol@contoso.com" in text and "2026-11-24T11:32:00Z" in text and "5f1d7a3e-0001" in text
    urls = [a["url"] for a in card["actions"]]
    assert portal_url(transition["resource"]) in urls
    if transition["perimeter"] and transition["perimeter"] != transition["resource"]:
        assert portal_url(transition["perimeter"]) in urls
    why, how = why_and_how(rule)
    assert why and how, f"{rule} has no why/how text"
    assert why[:60] in text
    if kind == "resolved":
        assert header_colour(card) == "Good" and card["body"][0]["style"] == "good"
        assert text.count("Resolved") >= 1 and "How to fix" not in text
    else:
        assert how[:60] in text and "How to fix" in text


def test_catalogue_rules_link_their_first_source() -> None:
    for rule_id, rule in RULES_BY_ID.items():
        urls = [a["url"] for a in content(build_card(make_transition(rule_id)))["actions"]]
        assert rule.sources[0].url in urls


@pytest.mark.parametrize(
    ("severity", "colour"),
    [("critical", "Attention"), ("high", "Attention"), ("medium", "Warning"), ("low", "Accent"), ("info", "Accent")],
)
def test_severity_sets_the_header_colour(severity: str, colour: str) -> None:
    card = content(build_card(make_transition("sftp-enabled", "opened", severity=severity)))
    assert header_colour(card) == colour
    assert card["body"][0]["items"][0]["text"].startswith(severity.upper())


def test_changed_shows_before_and_after() -> None:
    mode = content(build_card(make_transition("perimeter-access-mode-changed", "changed")))
    facts = {f["title"]: f["value"] for item in walk(mode) for f in item.get("facts", [])}
    assert facts["accessMode"] == "Enforced → Learning"
    finding = content(build_card(make_transition("sftp-enabled", "changed")))
    facts = {f["title"]: f["value"] for item in walk(finding) for f in item.get("facts", [])}
    assert facts["severity"] == "low → high"


def test_a_new_access_rule_lists_its_prefixes_as_added() -> None:
    card = content(build_card(make_transition(PERIMETER_RULES_CHANGED, "changed")))
    facts = {f["title"]: f["value"] for item in walk(card) for f in item.get("facts", [])}
    assert facts["addressPrefixes"] == "+1: 203.0.113.0/24"
    assert facts["Perimeter"] == "nsp-contoso"  # the resource is the perimeter itself: one row, one link
    assert [a["title"] for a in card["actions"]].count("Open perimeter") == 1


def test_a_500_rule_access_rule_diff_is_grouped_cut_and_links_out() -> None:
    transition = access_rule_diff(500)
    message = build_card(transition)
    card = content(message)
    size = card_bytes(message)
    assert size < MAX_CARD_BYTES
    text = texts(card)
    assert "more)" in text and "more changed field(s)" in text  # "+N more" on lists and on rows
    assert "-50:" in text  # the 50 removed prefixes are counted, not listed
    assert "full list is on the perimeter" in text
    assert portal_url(PERIMETER) in [a["url"] for a in card["actions"]]


def test_huge_texts_and_many_event_ids_stay_under_the_cap() -> None:
    transition = make_transition(
        "sftp-enabled",
        title="T" * 10_000,
        summary="S" * 50_000,
        after={"severity": "high", "summary": "Z" * 50_000},
    )
    transition["event_ids"] = [f"evt-{i:05}" for i in range(5000)]
    transition["changed_by"] = ", ".join(f"user{i}@contoso.com" for i in range(2000))
    message = build_card(transition)
    assert card_bytes(message) < MAX_CARD_BYTES
    assert "(+4997 more)" in texts(content(message))


def test_build_card_is_pure() -> None:
    transition = access_rule_diff(20)
    before = copy.deepcopy(transition)
    assert build_card(transition) == build_card(transition)
    assert transition == before


def test_a_digest_groups_by_rule_worst_first_and_stays_under_the_cap() -> None:
    many = [make_transition(rule, kind) for rule in ALL_RULES for kind in KINDS] * 25
    message = build_digest_card(many, "secops")
    card = content(message)
    assert card_bytes(message) < MAX_CARD_BYTES
    headings = [b["text"] for b in card["body"] if b.get("type") == "TextBlock" and b.get("weight") == "Bolder"]
    assert headings, "no group headings"
    assert card["body"][0]["items"][0]["text"] == f"nsp-drift digest · {len(many)} change(s)"
    text = texts(card)
    assert "more" in text  # groups and/or rows were cut with a count
    small = content(build_digest_card([make_transition("sftp-enabled"), make_transition("static-website")]))
    names = [b["text"] for b in small["body"] if b.get("weight") == "Bolder" and b.get("spacing") == "Medium"]
    assert names == [f"{RULES_BY_ID['sftp-enabled'].title} (1)", f"{RULES_BY_ID['static-website'].title} (1)"]


def test_cards_for_the_sample_scenario() -> None:
    result = replay(SAMPLES / "events.json", SAMPLES / "estate-changed.json", baseline_path=SAMPLES / "estate.json")
    payloads = [transition_to_dict(t) for t in result.transitions]
    assert payloads
    for payload in payloads:
        message = build_card(payload)
        assert card_bytes(message) < MAX_CARD_BYTES
        assert resource_named(content(message), payload["resource"])


def resource_named(card: dict[str, Any], resource: str) -> bool:
    return resource.rsplit("/", 1)[-1] in texts(card)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.dictionaries(
        st.sampled_from(
            ["transition", "rule", "resource", "perimeter", "severity", "title", "summary", "changed_by", "when"]
        ),
        st.one_of(st.none(), st.text(max_size=3000), st.integers()),
    ),
    st.dictionaries(
        st.text(max_size=50), st.one_of(st.text(max_size=500), st.lists(st.text(max_size=80), max_size=300))
    ),
)
def test_any_transition_gives_a_small_card(base: dict[str, Any], after: dict[str, Any]) -> None:
    transition = {**base, "before": {}, "after": after, "event_ids": ["e"] * 50, "flags": ["x"] * 50}
    message = build_card(transition)
    assert card_bytes(message) < MAX_CARD_BYTES
    assert "Action.Submit" not in json.dumps(message)


# -- the reference parser -------------------------------------------------------------------------------


def validate(cards: list[dict[str, Any]]) -> list[dict[str, Any]]:
    if shutil.which("node") is None:
        pytest.skip("node is not installed (npm install provides the Adaptive Cards parser)")
    assert (ROOT / "node_modules" / "adaptivecards").is_dir(), "run `npm install` in the repository root"
    out = subprocess.run(
        ["node", str(VALIDATOR)],
        input=json.dumps(cards),
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
        timeout=120,
    )
    results: list[dict[str, Any]] = json.loads(out.stdout)
    assert len(results) == len(cards)
    return results


def test_every_card_parses_without_errors_or_warnings_in_the_reference_parser() -> None:
    named = every_card()
    results = validate([message for _, message in named])
    problems = {name: r["errors"] + r["warnings"] for (name, _), r in zip(named, results, strict=True) if r["problems"]}
    assert problems == {}
    assert {r["version"] for r in results} == {"1.5"}
    largest = max(card_bytes(message) for _, message in named)
    assert largest < MAX_CARD_BYTES
    print(f"largest card: {largest} bytes over {len(named)} cards")  # shown with -s


def test_the_reference_parser_catches_what_we_forbid() -> None:
    broken = {
        "type": "AdaptiveCard",
        "version": "1.6",
        "body": [{"type": "TextBlock", "text": "x", "color": "Purple"}, {"type": "Foo"}],
        "actions": [{"type": "Action.Submit", "title": "Acknowledge"}, {"type": "Action.OpenUrl", "title": "no url"}],
    }
    (result,) = validate([broken])
    errors = "\n".join(result["errors"])
    assert 'Invalid value "Purple"' in errors
    assert 'Unknown element type "Foo"' in errors
    assert 'Unknown action type "Action.Submit"' in errors
    assert 'Property "url" must be set' in errors
    assert "above 1.5" in errors


def test_pseudo_rules_have_built_in_explanations() -> None:
    for rule in (*PSEUDO_RULES, EVALUATION_POISONED):
        why, how = why_and_how(rule)
        assert len(why) > 40 and len(how) > 40
    assert ACCOUNT.endswith("stcontoso01")


# -- a perimeter-level change lists the accounts it affects ------------------------------------------------


def perimeter_change_affecting(n: int) -> dict[str, Any]:
    from dataclasses import replace

    from shared.core.drift import decide_profile
    from shared.core.state.base import ProfileState
    from tests.fakes.transitions import PROVENANCE, SUB

    old = ProfileState(PERIMETER, "defaultProfile", 3, ())
    rule = {"name": "allow-anywhere", "direction": "Inbound", "addressPrefixes": ["0.0.0.0/0"]}
    new = ProfileState(PERIMETER, "defaultProfile", 4, (rule,))
    (change,) = decide_profile(old, new, "seen-via", PROVENANCE)
    accounts = tuple(
        f"/subscriptions/{SUB}/resourceGroups/rg-data/providers/Microsoft.Storage/storageAccounts/st{i:02}"
        for i in range(n)
    )
    return transition_to_dict(replace(change, accounts=accounts))


def test_perimeter_change_card_lists_20_affected_accounts_then_and_n_more() -> None:
    transition = perimeter_change_affecting(23)
    assert transition["accounts_more"] == 3 and len(transition["accounts"]) == 20
    card = content(build_card(transition))
    fact_sets = [n["facts"] for n in walk(card) if n.get("type") == "FactSet"]
    assert {"title": "Affected accounts", "value": "23"} in fact_sets[0]
    (listed,) = [facts for facts in fact_sets if facts and facts[0]["title"] == "st00"]
    assert [f["title"] for f in listed[:20]] == [f"st{i:02}" for i in range(20)]
    assert listed[0]["value"] == "resource group rg-data"
    assert listed[20:] == [{"title": "…", "value": "and 3 more"}]
    assert "Affected storage accounts (23)" in texts(card)


def test_perimeter_change_with_few_accounts_lists_them_all() -> None:
    card = content(build_card(perimeter_change_affecting(2)))
    fact_sets = [n["facts"] for n in walk(card) if n.get("type") == "FactSet"]
    (listed,) = [facts for facts in fact_sets if facts and facts[0]["title"] == "st00"]
    assert [f["title"] for f in listed] == ["st00", "st01"]  # no "and N more" row


def test_perimeter_change_webhook_body_lists_20_affected_accounts_and_the_rest_counted() -> None:
    from shared.adapters.notify.webhook import build_event

    transition = perimeter_change_affecting(45)
    event = build_event(transition, str(transition["idempotency_key"]), 0.0)
    assert event["type"] == "com.nspdrift.perimeter.changed"
    assert [a.rsplit("/", 1)[-1] for a in event["data"]["accounts"]] == [f"st{i:02}" for i in range(20)]
    assert event["data"]["accounts_more"] == 25
