"""Transitions carried in a state row until the outbox has them (``pending_transitions``).

A state write and the outbox record it implies cannot be one storage transaction (different
rows, in Table storage possibly different tables), so the write carries the transitions it makes
true, and they are recorded from there: by the writer right after the write, or by whoever reads
the row next if the writer vanished in between (shared.service.pipeline, "Ordering"). These functions
turn a Transition into plain JSON and back with every field, so the recorded copy has the same
idempotency key (and so the same delivery ids) as the original.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, fields
from typing import Any

from shared.core.changes import Actor, Provenance, Transition, TransitionKind


def transition_record(transition: Transition) -> dict[str, Any]:
    # json turns tuples into lists and the StrEnum into its value; the decoder turns them back.
    record: dict[str, Any] = json.loads(json.dumps(asdict(transition)))
    return record


def _tupled(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def _provenance(record: Mapping[str, Any]) -> Provenance:
    values: dict[str, Any] = {}
    for f in fields(Provenance):
        if f.name not in record:
            continue
        if f.name == "actors":
            values["actors"] = tuple(Actor(**actor) for actor in record["actors"])
        else:
            values[f.name] = _tupled(record[f.name])
    return Provenance(**values)


def transition_from_record(record: Mapping[str, Any]) -> Transition:
    values: dict[str, Any] = {}
    for f in fields(Transition):
        if f.name not in record:
            continue  # a field added since the row was written: its default
        value = record[f.name]
        if f.name == "kind":
            value = TransitionKind(value)
        elif f.name == "provenance":
            value = _provenance(value)
        else:
            value = _tupled(value)  # flags and any other tuple field; dicts stay as they are
        values[f.name] = value
    return Transition(**values)


def records(transitions: Iterable[Transition]) -> tuple[dict[str, Any], ...]:
    return tuple(transition_record(t) for t in transitions)


def transitions(carried: Sequence[Mapping[str, Any]]) -> list[Transition]:
    return [transition_from_record(r) for r in carried]
