"""Work items the evaluation queue carries besides coalescing windows: how the app fans out.

A window message names a target (``shared.adapters.queue``); a work message names a piece of a
larger job that no single invocation may have to finish (``NSP_DRIFT_INVOCATION_BUDGET_SECONDS``):

- ``accounts``: a batch of storage accounts to evaluate, with what caused it (a perimeter change,
  or the sweep) and its provenance. A perimeter change over more accounts than one batch holds is
  sent as batches, one message each; an invocation whose budget runs out mid-batch re-queues the
  accounts it did not start as a new batch.
- ``sweep``: one page of one subscription's storage account listing (``page`` is ARM's
  ``nextLink``, empty for the first page). The invocation lists that page, queues the next page as
  its own message, and evaluates (or queues in batches) what the page calls for.

Every work message is lease-safe the way the queue makes it: a killed invocation's message
becomes visible again (the queue's visibility timeout) and is redone; re-evaluating an account is
idempotent (``shared.service.pipeline``, "Ordering": an evaluation diffs against the stored row, so one
that was already committed reports nothing the second time).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from shared.core.changes import Provenance, TargetKind

QUEUE_NAME = "nsp-drift-evaluations"  # fixed: the queue trigger binds to it by name

# Accounts per batch message: 100 ids of about 150 characters and a bounded provenance keep a
# message (64 KiB, base64) well inside the queue's limit.
BATCH_ACCOUNTS = 100
# Each provenance list carried in a message is cut to this many entries (a window of a thousand
# events still names its first 100 event ids, actors, ...; alert bodies show at most 100).
MAX_PROVENANCE_ITEMS = 100


class WorkKind(enum.StrEnum):
    ACCOUNTS = "accounts"
    SWEEP = "sweep"


@dataclass(frozen=True)
class Work:
    kind: WorkKind
    accounts: tuple[str, ...] = ()
    cause: TargetKind = TargetKind.ACCOUNT  # which rules the batch judges (shared.core.rules.judged_by)
    provenance: Provenance = field(default_factory=lambda: Provenance(source="sweep"))
    # Perimeter id (lower case) -> the Key Vault resources associated with it (lower case): what the
    # CMK rule needs of a perimeter's association list, read once by whoever fanned the work out.
    vault_members: tuple[tuple[str, tuple[str, ...]], ...] = ()
    subscription: str = ""  # SWEEP: the subscription listed
    page: str = ""  # SWEEP: ARM's nextLink of the page to list ("" = the first page)
    full: bool = True  # SWEEP: the full ARM sweep (False: the Resource Graph sweep)
    sweep_round: int = 0  # SWEEP: which verification slice this sweep reads (shared.core.membership)
    attempts: int = 0  # ACCOUNTS: failed evaluations of these accounts so far
    origin: str = ""  # what fanned it out (a target key, "sweep"), for the logs
    # SWEEP: when the sweep was planned (epoch seconds). ACCOUNTS: evaluate only the accounts not
    # evaluated since then (the full sweep's stored-but-not-listed accounts); 0 = all of them.
    since: float = 0.0

    def members_of(self) -> dict[str, tuple[str, ...]]:
        return {p: m for p, m in self.vault_members}


def bounded(provenance: Provenance, limit: int = MAX_PROVENANCE_ITEMS) -> Provenance:
    """The provenance a message carries: each list cut to ``limit`` entries."""
    return Provenance(
        event_ids=provenance.event_ids[:limit],
        actors=provenance.actors[:limit],
        operation_names=provenance.operation_names[:limit],
        correlation_ids=provenance.correlation_ids[:limit],
        event_times=provenance.event_times[-limit:],  # the latest times: ``when`` is their maximum
        source=provenance.source,
    )


def batches(
    accounts: Sequence[str],
    cause: TargetKind,
    provenance: Provenance,
    origin: str,
    vault_members: Mapping[str, Sequence[str]] | None = None,
    size: int = BATCH_ACCOUNTS,
) -> list[Work]:
    """``accounts`` as batch messages of at most ``size`` accounts each."""
    members = tuple(sorted((p.lower(), tuple(sorted(m))) for p, m in (vault_members or {}).items()))
    carried = bounded(provenance)
    return [
        Work(WorkKind.ACCOUNTS, tuple(accounts[i : i + size]), cause, carried, members, origin=origin)
        for i in range(0, len(accounts), max(size, 1))
    ]
