"""``TaskSender``: the life cycle both task trackers share (Azure DevOps work items, GitHub issues).

One task per finding. ``opened`` creates the task unless one is open for the finding (the stored
TaskRef, or, when the ref was lost, the task carrying the finding's tag or label, found by
``find_task``): then it only comments, so a re-delivery never opens a second one. ``changed``
comments (and opens a task if a catalogue finding has just risen to the destination's floor);
``resolved`` moves the task to its closed state, then comments. A finding that comes back (its next
occurrence) reopens its closed task and comments naming the occurrence; a new task is opened only
when the old one is gone (404/410) or the tracker refuses to move it back (``refuses_reopen``).

State first, then the comment, on close and on reopen: a retry after a failed comment repeats a
no-op state change instead of posting the comment twice.

A tracker supplies its three API calls (``find_task``, ``create``, ``comment``) and two hooks:
``_move`` (the state change request) and ``_render`` (a comment's text). ``_outcome`` turns an HTTP
result into an ``Outcome``; GitHub overrides it to read its rate-limit 403s.
"""

from __future__ import annotations

import hashlib
import logging
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import replace
from typing import Any, ClassVar

from shared.adapters.notify import http
from shared.core.model import Severity
from shared.core.notify.base import (
    Delivery,
    Outcome,
    TaskLookup,
    TaskRef,
    is_stale,
    occurrence_of,
    take_over_legacy_tasks,
)
from shared.core.rules import RULES_BY_ID

GONE = (404, 410)  # the task was deleted or transferred (or issues disabled): nothing left to update

log = logging.getLogger(__name__)


def finding_marker(finding_key: str) -> str:
    """A short, stable tag or label naming the finding (a lost task ref is found again by it)."""
    return "nsp-drift-" + hashlib.sha256(finding_key.encode()).hexdigest()[:12]


def opens_task(t: Mapping[str, Any], floor: Severity) -> bool:
    """A ``changed`` finding with no task gets one if it is a catalogue finding at/above the floor
    (its severity rose past it); perimeter-level changes have no finding to track."""
    if str(t.get("rule", "")) not in RULES_BY_ID:
        return False
    try:
        return Severity.parse(str(t.get("severity", "info"))) >= floor
    except ValueError:
        return False


class TaskSender(ABC):
    """The open / comment / close / reopen skeleton; subclasses talk to one tracker."""

    name: str
    _floor: Severity
    noun: ClassVar[str] = "task"  # for log lines: "work item", "issue"
    refuses_reopen: ClassVar[tuple[int, ...]] = ()  # statuses of ``_move`` meaning "cannot move it back"

    # -- the tracker's API calls ------------------------------------------------------------------

    @abstractmethod
    def find_task(self, finding_key: str) -> tuple[http.HttpResult, TaskRef | None]:
        """The task tagged for this finding: an open one if any, else the latest closed one."""

    @abstractmethod
    def create(self, t: Mapping[str, Any], finding_key: str) -> Outcome:
        """A new task for this occurrence of the finding."""

    @abstractmethod
    def comment(self, task: TaskRef, text: str) -> http.HttpResult:
        """A comment on the task (``text`` as ``_render`` wrote it)."""

    # -- the two hooks ----------------------------------------------------------------------------

    @abstractmethod
    def _move(self, task: TaskRef, reopen: bool) -> http.HttpResult | None:
        """Move the task to its closed state (``reopen`` False) or back to an open one. None: there
        is no state to move it back to (a new task is opened instead)."""

    @abstractmethod
    def _render(self, t: Mapping[str, Any], reopened: bool = False) -> str:
        """A comment's text for this transition; ``reopened`` prepends the note naming the occurrence."""

    def _outcome(self, result: http.HttpResult, task: TaskRef | None = None) -> Outcome:
        return result.outcome(task)

    # -- the skeleton -----------------------------------------------------------------------------

    def close(self, task: TaskRef, t: Mapping[str, Any]) -> Outcome:
        closed = replace(task, state="closed", occurrence=max(task.occurrence, occurrence_of(t)))
        result = self._move(task, reopen=False)
        if result is None:
            return Outcome(ok=False, error=f"{self.name}: no closed state to move the {self.noun} to")
        if result.status in GONE:
            return Outcome(ok=True, status=result.status, task=closed)
        if not result.ok:
            return self._outcome(result)
        return self._outcome(self.comment(task, self._render(t)), closed)

    def reopen(self, task: TaskRef, t: Mapping[str, Any]) -> Outcome:
        """The finding is back: move its closed task back to open, then comment."""
        result = self._move(task, reopen=True)
        if result is None or result.status in GONE or result.status in self.refuses_reopen:
            # Deleted, or the tracker does not allow moving it back: a new task for this occurrence.
            log.warning(
                "%s: %s %s cannot be reopened (%s); opening a new one",
                self.name,
                self.noun,
                task.external_id,
                "no reopen state" if result is None else f"HTTP {result.status}",
            )
            return self.create(t, task.finding_key)
        if not result.ok:
            return self._outcome(result)
        reopened = replace(task, state="open", occurrence=occurrence_of(t))
        return self._outcome(self.comment(task, self._render(t, reopened=True)), reopened)

    def send(self, delivery: Delivery, tasks: TaskLookup) -> Outcome:
        t, key = delivery.transition, delivery.finding_key
        kind = str(t.get("transition", ""))
        stored = tasks.get_task(self.name, key)
        if stored is None:  # a finding merged from per-subject ones: their open task becomes its task
            failure, stored = take_over_legacy_tasks(self, tasks, t, key, self._outcome)
            if failure is not None:
                return failure
        if stored is not None and is_stale(stored, t):
            return Outcome(ok=True)  # an older occurrence delivered late: the task has moved on
        if kind == "resolved":
            if stored is None or stored.state != "open":
                return Outcome(ok=True)  # no task of ours is open for it: nothing to close
            return self.close(stored, t)
        return self._open_or_update(t, key, stored)

    def _open_or_update(self, t: Mapping[str, Any], key: str, stored: TaskRef | None) -> Outcome:
        """A finding opened or changed: comment on its open task, else reopen its closed one, else
        open a new one (a "changed" below the task floor opens nothing)."""
        task = stored
        if stored is None:
            lookup, task = self.find_task(key)
            if not lookup.ok:
                return self._outcome(lookup)  # never create blind: that is how duplicates are made
        if task is not None and task.state == "open":
            result = self.comment(task, self._render(t))
            if result.status not in GONE:
                # Returned even if stored: a recovered ref gets saved, with the latest occurrence.
                return self._outcome(result, replace(task, occurrence=max(task.occurrence, occurrence_of(t))))
            task = None
        if str(t.get("transition", "")) == "changed" and not opens_task(t, self._floor):
            return Outcome(ok=True)
        if task is not None:  # closed: the finding came back (a new occurrence) ...
            if occurrence_of(t) and task.occurrence >= occurrence_of(t):
                return Outcome(ok=True)  # ... unless it was closed for this very occurrence (a late re-send)
            return self.reopen(task, t)
        return self.create(t, key)
