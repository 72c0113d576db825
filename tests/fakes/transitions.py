"""Transitions and deliveries for notify tests, built with the real Transition and its JSON form
(``transition_to_dict``), so the payloads cannot drift from what the pipeline produces."""

from __future__ import annotations

from typing import Any

from shared.core.changes import (
    EVALUATION_FAILING,
    EVALUATION_POISONED,
    PERIMETER_ASSOCIATION_CHANGED,
    PERIMETER_MODE_CHANGED,
    PERIMETER_RULES_CHANGED,
    SWEEP_HEARTBEAT,
    Actor,
    Provenance,
    Transition,
    TransitionKind,
    transition_to_dict,
)
from shared.core.notify.base import Delivery, TaskRef
from shared.core.rules import RULES_BY_ID

SUB = "6e1c6f2a-5b7d-4c8e-9f10-2a3b4c5d6e7f"
ACCOUNT = f"/subscriptions/{SUB}/resourceGroups/rg-data/providers/Microsoft.Storage/storageAccounts/stcontoso01"
PERIMETER = (
    f"/subscriptions/{SUB}/resourceGroups/rg-network/providers/Microsoft.Network/networkSecurityPerimeters/nsp-contoso"
)
PSEUDO_RULES = (PERIMETER_RULES_CHANGED, PERIMETER_ASSOCIATION_CHANGED, PERIMETER_MODE_CHANGED)
ALL_RULES = (*sorted(RULES_BY_ID), *PSEUDO_RULES, EVALUATION_POISONED, EVALUATION_FAILING, SWEEP_HEARTBEAT)
KINDS = ("opened", "changed", "resolved")

PROVENANCE = Provenance(
    event_ids=("5f1d7a3e-0001", "5f1d7a3e-0002"),
    actors=(Actor(upn="carol@contoso.com", client_ip="198.51.100.7"),),
    operation_names=("Microsoft.Storage/storageAccounts/write",),
    correlation_ids=("corr-1",),
    event_times=("2026-11-24T11:32:00Z",),
)


def _pseudo_shape(rule: str) -> dict[str, Any]:
    if rule == PERIMETER_RULES_CHANGED:
        return {
            "resource_id": PERIMETER,
            "title": "Perimeter access rules changed",
            "summary": "Access rule 'allow-partner' added in profile 'defaultProfile' [public]",
            "key": f"{PERIMETER.lower()}|defaultprofile|allow-partner",
            "before": {},
            "after": {"name": "allow-partner", "direction": "Inbound", "addressPrefixes": ["203.0.113.0/24"]},
            "flags": ("added", "public"),
        }
    if rule == PERIMETER_MODE_CHANGED:
        return {
            "title": "Perimeter access mode changed",
            "summary": "Access mode of 'assoc-st01' changed Enforced -> Learning (weakening)",
            "key": f"{ACCOUNT.lower()}|{PERIMETER.lower()}|mode",
            "before": {"accessMode": "Enforced"},
            "after": {"accessMode": "Learning"},
            "flags": ("weakening",),
        }
    if rule == PERIMETER_ASSOCIATION_CHANGED:
        return {
            "title": "Perimeter association changed",
            "summary": "Account left perimeter nsp-contoso",
            "key": f"{ACCOUNT.lower()}|{PERIMETER.lower()}|association",
            "before": {"perimeter": PERIMETER, "profile": "defaultProfile", "accessMode": "Enforced"},
            "after": {},
            "flags": ("removed",),
        }
    return {
        "title": "Evaluation failed repeatedly (message moved to the poison queue)",
        "summary": "Evaluation of account failed 5 time(s): HttpResponseError: throttled",
        "key": f"poison|account:{ACCOUNT.lower()}|HttpResponseError",
        "perimeter_id": None,
    }


def make_transition(
    rule: str = "sftp-enabled",
    kind: str = "opened",
    severity: str | None = None,
    provenance: Provenance = PROVENANCE,
    **override: Any,
) -> dict[str, Any]:
    """The JSON form of a plausible transition of ``rule``; ``override`` replaces Transition fields."""
    catalogue = RULES_BY_ID.get(rule)
    fields: dict[str, Any] = {
        "resource_id": ACCOUNT,
        "perimeter_id": PERIMETER,
        "title": catalogue.title if catalogue else rule,
        "summary": f"{catalogue.title if catalogue else rule} on stcontoso01",
        "key": f"{rule}|{ACCOUNT.lower()}|",
        "before": {},
        "after": {},
        "flags": (),
    }
    if catalogue is None:
        fields.update(_pseudo_shape(rule))
    label = severity or (catalogue.severity.label if catalogue else "high")
    if catalogue is not None:
        finding = {"severity": label, "summary": fields["summary"]}
        if kind == "opened":
            fields["after"] = finding
        elif kind == "changed":
            fields["before"], fields["after"] = {"severity": "low", "summary": "earlier"}, finding
        else:
            fields["before"] = finding
    fields.update(override)
    transition = Transition(
        kind=TransitionKind(kind),
        rule_id=rule,
        severity=label,
        provenance=provenance,
        **fields,
    )
    return transition_to_dict(transition)


def delivery(destination: str, transition: dict[str, Any], **override: Any) -> Delivery:
    return Delivery(
        destination=destination,
        idempotency_key=str(override.pop("idempotency_key", transition["idempotency_key"])),
        transition=transition,
        created_at=1.0,
        **override,
    )


class MemoryTasks:
    """A TaskLookup keeping what senders return, the way the dispatcher stores ``Outcome.task``."""

    def __init__(self) -> None:
        self.tasks: dict[tuple[str, str], TaskRef] = {}
        self.lookups = 0

    def get_task(self, destination: str, finding_key: str) -> TaskRef | None:
        self.lookups += 1
        return self.tasks.get((destination, finding_key))

    def put_task(self, task: TaskRef) -> None:
        self.tasks[(task.destination, task.finding_key)] = task

    def forget(self) -> None:
        """Lose every stored ref (a crash between the create and the store write)."""
        self.tasks.clear()
