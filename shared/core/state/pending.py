"""Coalescing windows and their leases: the pure arithmetic both state stores apply.

A window (``PendingMarker``) lives through these states, every change an ETag-guarded write:

    opened --message sent--> waiting --claim--> leased --complete--> deleted
                                                  |-- complete, events joined --> follow-up window
                                                  |-- release (evaluation failed) --> backing off
                                                  '-- lease lapses (worker vanished) --> claimable

- A claim is a lease computed from the clock when it is taken (``now + lease_seconds``); nobody
  has to give it back for the window to be claimable again.
- Events that join a leased window wait in ``later``: the lease holder's read may already have
  happened, so they get a follow-up window rather than being counted as evaluated.
- The window is deleted only by the holder of its lease, after its evaluation's results (state
  and outbox) are stored, and only if no event joined meanwhile (else it becomes the follow-up).
- A failed evaluation backs off: 30 s doubling up to a day; the sweep does not re-queue a window
  that is backing off, only one nobody takes care of (lapsed lease, lost message).
"""

from __future__ import annotations

from dataclasses import replace

from shared.core.changes import Provenance, Target
from shared.core.state.base import PendingMarker, merge_provenance

BACKOFF_BASE_SECONDS = 30.0
BACKOFF_MAX_SECONDS = 86_400.0  # a day


def backoff_seconds(attempts: int) -> float:
    """Delay before the next evaluation after ``attempts`` failed ones: 30 s, 1 min, 2 min ... a day."""
    return min(BACKOFF_BASE_SECONDS * 2.0 ** max(attempts - 1, 0), BACKOFF_MAX_SECONDS)


def _merge(a: Provenance | None, b: Provenance | None) -> Provenance | None:
    if a is None or b is None:
        return a if b is None else b
    return merge_provenance(a, b)


def opened(target: Target, provenance: Provenance, window_seconds: float, now: float) -> PendingMarker:
    """A new window: it closes ``window_seconds`` after its first event; its message is owed."""
    return PendingMarker(target, provenance, first_seen=now, due=now + max(window_seconds, 0.0), queued=False)


def joined(current: PendingMarker, provenance: Provenance) -> PendingMarker:
    """An event joins a window; the window does not move (no starvation under a stream). While a
    lease is held the event waits in ``later`` (the holder may have read already)."""
    if current.lease_id:
        return replace(current, later=_merge(current.later, provenance))
    return replace(current, provenance=merge_provenance(current.provenance, provenance))


def owes_message(current: PendingMarker, provenance: Provenance) -> bool:
    """Whether an event joining ``current`` must (re-)send the window's message: only when the
    window's message was never confirmed sent *and* this event is already in it, i.e. it is the
    re-delivery of an event whose send failed. A new event racing the window's opener leaves the
    sending to the opener (one message per window)."""
    return not current.queued and holds_event(current, provenance)


def holds_event(current: PendingMarker, provenance: Provenance) -> bool:
    """Whether the window already holds the event(s) of ``provenance`` (a re-delivery)."""
    known = {*current.provenance.event_ids, *(current.later.event_ids if current.later else ())}
    return bool(provenance.event_ids) and set(provenance.event_ids) <= known


def absorbs(current: PendingMarker, provenance: Provenance) -> bool:
    """Whether an event can join ``current`` without a write: the window is open and not leased
    (its evaluation claims it, then reads ARM, after the caller read the window, so the change the
    event reports is covered), and the event adds nothing an alert shows by name: its actor and
    operation are already in the window's provenance. Its id, correlation id and time are not
    listed then (the alert lists the events that opened the window or brought someone or
    something new). A leased window is never absorbed into: its holder may have read already."""
    if current.lease_id:
        return False
    shown = current.provenance
    return (
        provenance.source == shown.source
        and set(provenance.actors) <= set(shown.actors)
        and set(provenance.operation_names) <= set(shown.operation_names)
    )


def queued(current: PendingMarker) -> PendingMarker:
    return replace(current, queued=True)


def blocked(current: PendingMarker, now: float) -> tuple[float, str] | None:
    """Until when, and why, the window cannot be claimed now (None: it can)."""
    if current.lease_id and current.lease_until > now:
        return current.lease_until, "is being evaluated by another worker"
    if not current.lease_id and current.attempts > 0 and current.due > now:
        return current.due, "backs off after failed evaluations"
    return None


def claimed(current: PendingMarker, now: float, lease_seconds: float, lease_id: str) -> PendingMarker:
    """Take the window (a lapsed lease is taken over; what waited in ``later`` is evaluated too)."""
    provenance = _merge(current.provenance, current.later) or current.provenance
    return replace(
        current,
        provenance=provenance,
        later=None,
        lease_id=lease_id,
        lease_until=now + max(lease_seconds, 0.0),
        queued=True,  # its message has arrived
    )


def holds(current: PendingMarker | None, claim: PendingMarker) -> bool:
    """Whether ``claim`` still holds the window (its lease was not taken over after lapsing)."""
    return current is not None and bool(claim.lease_id) and current.lease_id == claim.lease_id


def follow_up(current: PendingMarker, now: float, window_seconds: float) -> PendingMarker | None:
    """What replaces a completed window: nothing, or the events that joined during the lease as a
    new window (new identity ``first_seen``, its message owed)."""
    if current.later is None:
        return None
    return PendingMarker(
        current.target,
        current.later,
        first_seen=now,
        due=now + max(window_seconds, 0.0),
        etag=current.etag,
        queued=False,
    )


def released(current: PendingMarker, retry_at: float, error: str, alerted: bool) -> PendingMarker:
    """A failed evaluation: the lease ends, the attempt counts, the window waits until ``retry_at``."""
    return replace(
        current,
        provenance=_merge(current.provenance, current.later) or current.provenance,
        later=None,
        lease_id="",
        lease_until=0.0,
        attempts=current.attempts + 1,
        due=retry_at,
        last_error=error,
        alerted=current.alerted or alerted,
        queued=False,  # the caller sends the retry's message
    )


def reclaim_at(marker: PendingMarker) -> float:
    """From when the window is claimable by anyone: its lease's end, or its close (or retry) time.
    Stored as the row's ``due`` column/property, which ``overdue_pending`` filters on."""
    return marker.lease_until if marker.lease_id else marker.due
