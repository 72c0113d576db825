"""The sweep heartbeat: one operator alert when a sweep stops completing, resolved when it runs again.

Each timer sweep records its completion (``sweep_completed``). When a sweep of a kind has not
completed within twice its schedule's interval (``stale``), the next run that looks (the next
timer run of either sweep, or the status) raises ONE ``sweep-heartbeat`` operator alert
(``check_heartbeats``); the next completion resolves it. The alert is raised by a conditional
write of the sweep's row that carries the transition until the outbox has it (the pipeline's
"Ordering"), so two runs that look at once raise it once, and a run that vanishes between the
write and the outbox leaves it to the next one.

The schedule's interval is read from its NCRONTAB expression (six fields, seconds first, as the
Functions timer trigger takes it; five fields are read as minutes first; a TimeSpan ``hh:mm:ss``
is a fixed interval): the longest gap between two consecutive occurrences over the next four
years, so a weekday-only schedule is not stale over a weekend.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from typing import Protocol

from shared.core.changes import SWEEP_HEARTBEAT, Provenance, Transition, TransitionKind
from shared.core.state import carried
from shared.core.state.base import ConflictError, StatusStore, SweepRecord

log = logging.getLogger(__name__)

# The sweep kinds, their timer functions and the settings holding their schedules.
SWEEP_KINDS: dict[str, tuple[str, str]] = {
    "sweep": ("reconcile_sweep", "NSP_DRIFT_SWEEP_SCHEDULE"),
    "full": ("reconcile_full_sweep", "NSP_DRIFT_FULL_SWEEP_SCHEDULE"),
}
_LABELS = {"sweep": "Resource Graph sweep", "full": "full ARM sweep"}
STALE_AFTER_INTERVALS = 2.0  # "within twice its schedule"
_HORIZON_DAYS = 4 * 366 + 1  # every weekday of every month, leap day included
_MAX_CONFLICTS = 5


class ScheduleError(ValueError):
    """An NCRONTAB expression nsp-drift cannot read; the message names what is wrong."""


class Sink(Protocol):
    """Where the heartbeat's transitions go (shared.service.pipeline.TransitionSink)."""

    def emit(self, transitions: Sequence[Transition]) -> None: ...


# -- schedules (pure) ---------------------------------------------------------------------------------

_MONTHS = {
    m: i
    for i, m in enumerate(("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"), start=1)
}
_DAYS = {d: i for i, d in enumerate(("sun", "mon", "tue", "wed", "thu", "fri", "sat"))}
_TIMESPAN = re.compile(r"^(\d{1,2}):(\d{2}):(\d{2})$")


def _field(text: str, low: int, high: int, names: Mapping[str, int], what: str) -> frozenset[int]:
    values: set[int] = set()

    def number(token: str) -> int:
        token = token.strip().lower()
        if token in names:
            return names[token]
        if not token.isdigit():
            raise ScheduleError(f"{what}: {token!r} is not a number")
        return int(token)

    for part in text.split(","):
        base, _, step_text = part.partition("/")
        step = 1
        if step_text:
            step = number(step_text)
            if step < 1:
                raise ScheduleError(f"{what}: step must be at least 1")
        if base == "*":
            start, end = low, high
        elif "-" in base:
            first, _, last = base.partition("-")
            start, end = number(first), number(last)
        else:
            start = number(base)
            end = high if step_text else start
        if what == "day of week" and end == 7:  # 7 is Sunday too
            end = 6 if start <= 6 else 0
            values.add(0)
        if not (low <= start <= high and low <= end <= high and start <= end):
            raise ScheduleError(f"{what}: {part!r} is outside {low}-{high}")
        values.update(range(start, end + 1, step))
    return frozenset(values)


@dataclass(frozen=True)
class Schedule:
    seconds: frozenset[int]
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday
    every: float = 0.0  # a TimeSpan schedule: a fixed interval

    def runs_on(self, day: date) -> bool:
        return day.day in self.days and day.month in self.months and (day.isoweekday() % 7) in self.weekdays

    def times_of_day(self) -> list[int]:
        return sorted(h * 3600 + m * 60 + s for h in self.hours for m in self.minutes for s in self.seconds)


def parse_schedule(expression: str) -> Schedule:
    text = expression.strip()
    span = _TIMESPAN.match(text)
    if span:
        hours, minutes, seconds = (int(g) for g in span.groups())
        every = hours * 3600 + minutes * 60 + seconds
        if every <= 0 or minutes > 59 or seconds > 59:
            raise ScheduleError(f"{expression!r}: a TimeSpan must be a positive hh:mm:ss")
        return Schedule(frozenset(), frozenset(), frozenset(), frozenset(), frozenset(), frozenset(), every=every)
    parts = text.split()
    if len(parts) == 5:
        parts = ["0", *parts]
    if len(parts) != 6:
        raise ScheduleError(f"{expression!r}: expected six NCRONTAB fields (second minute hour day month weekday)")
    return Schedule(
        seconds=_field(parts[0], 0, 59, {}, "second"),
        minutes=_field(parts[1], 0, 59, {}, "minute"),
        hours=_field(parts[2], 0, 23, {}, "hour"),
        days=_field(parts[3], 1, 31, {}, "day"),
        months=_field(parts[4], 1, 12, _MONTHS, "month"),
        weekdays=_field(parts[5], 0, 7, _DAYS, "day of week"),
    )


def schedule_interval(expression: str, start: date | None = None) -> float:
    """The longest gap in seconds between two consecutive occurrences of the schedule over the
    four years from ``start`` (default: today, UTC). Raises ScheduleError if it never runs."""
    schedule = parse_schedule(expression)
    if schedule.every:
        return float(schedule.every)
    times = schedule.times_of_day()
    first_day = start or datetime.now(UTC).date()
    run_days = [d for d in (first_day + timedelta(days=i) for i in range(_HORIZON_DAYS)) if schedule.runs_on(d)]
    if not run_days:
        raise ScheduleError(f"{expression!r}: never runs")
    gaps = [b - a for a, b in itertools.pairwise(times)]
    for previous, day in itertools.pairwise(run_days):
        gaps.append((day - previous).days * 86400 - times[-1] + times[0])
    if not gaps:  # one run in four years
        return float(_HORIZON_DAYS * 86400)
    return float(max(gaps))


# -- the decision (pure) -----------------------------------------------------------------------------------


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds") if epoch else ""


def last_seen(record: SweepRecord) -> float:
    """Since when the heartbeat counts: the last completion, else when it first looked."""
    return record.completed_at or record.watched_since


def is_stale(record: SweepRecord, interval: float, now: float) -> bool:
    return now - last_seen(record) > STALE_AFTER_INTERVALS * interval


def heartbeat_transition(record: SweepRecord, kind: TransitionKind, interval: float, now: float) -> Transition:
    function, setting = SWEEP_KINDS.get(record.kind, (record.kind, ""))
    label = _LABELS.get(record.kind, f"{record.kind} sweep")
    since = _iso(record.completed_at)
    last = (
        f"last completed {since}"
        if since
        else f"has not completed since nsp-drift began watching at {_iso(record.watched_since)}"
    )
    if kind is TransitionKind.RESOLVED:
        summary = f"The {label} ({function}) completed again at {_iso(now)}."
    else:
        summary = (
            f"The {label} ({function}) {last}: nothing completed within twice its schedule "
            f"({setting}, every {interval:.0f} s at most). Drift that events miss is not reconciled "
            "and deliveries are not retried until it runs again."
        )
    return Transition(
        kind=kind,
        rule_id=SWEEP_HEARTBEAT,
        resource_id=function,
        perimeter_id=None,
        severity="high",
        title="Reconciliation sweep stopped completing (heartbeat missed)",
        summary=summary,
        key=f"heartbeat|{record.kind}",
        evidence={
            "sweep": record.kind,
            "function": function,
            "lastCompleted": since or None,
            "intervalSeconds": round(interval),
            "staleAfterSeconds": round(STALE_AFTER_INTERVALS * interval),
        },
        provenance=Provenance(source="sweep"),
        occurrence=max(record.occurrence, 1),
    )


def decide_check(record: SweepRecord, interval: float, now: float) -> tuple[SweepRecord, list[Transition]]:
    """A run looks at the heartbeat: open the alert once when the sweep went stale."""
    if record.alerted_at or not is_stale(record, interval, now):
        return record, []
    opened = replace(record, alerted_at=now, occurrence=record.occurrence + 1)
    return opened, [heartbeat_transition(opened, TransitionKind.OPENED, interval, now)]


def decide_completion(record: SweepRecord, interval: float, now: float) -> tuple[SweepRecord, list[Transition]]:
    """A sweep completed: record it, and resolve the open alert if there is one."""
    done = replace(record, completed_at=max(now, record.completed_at), alerted_at=0.0)
    if not record.alerted_at:
        return done, []
    return done, [heartbeat_transition(record, TransitionKind.RESOLVED, interval, now)]


# -- the shell: conditional writes, carried transitions ---------------------------------------------------

Decide = Callable[[SweepRecord, float, float], tuple[SweepRecord, list[Transition]]]


def _apply(store: StatusStore, sink: Sink, kind: str, interval: float, now: float, decide: Decide) -> list[Transition]:
    for _ in range(_MAX_CONFLICTS):
        stored = store.get_sweep(kind)
        record = stored.value if stored is not None else SweepRecord(kind, watched_since=now)
        if record.pending_transitions:  # a writer vanished before the outbox had them
            sink.emit(carried.transitions(record.pending_transitions))
            record = replace(record, pending_transitions=())
        new, transitions = decide(record, interval, now)
        if stored is not None and new == record and not stored.value.pending_transitions:
            return []
        try:
            etag = store.put_sweep(
                replace(new, pending_transitions=carried.records(transitions)),
                stored.etag if stored is not None else None,
            )
        except ConflictError:
            continue  # another run wrote first: look again
        if transitions:
            sink.emit(transitions)
            with contextlib.suppress(ConflictError):  # a newer writer recorded them before overwriting
                store.put_sweep(new, etag)
        return transitions
    raise ConflictError(f"sweep heartbeat {kind}: still contended after {_MAX_CONFLICTS} attempts")


def sweep_completed(store: StatusStore, sink: Sink, kind: str, interval: float, now: float) -> list[Transition]:
    """Record that the ``kind`` sweep completed at ``now``; resolves its open heartbeat alert."""
    return _apply(store, sink, kind, interval, now, decide_completion)


def check_heartbeats(store: StatusStore, sink: Sink, intervals: Mapping[str, float], now: float) -> list[Transition]:
    """Look at every scheduled sweep: one alert per sweep that went stale (none while it stays so)."""
    raised: list[Transition] = []
    for kind, interval in intervals.items():
        raised += _apply(store, sink, kind, interval, now, decide_check)
    if raised:
        log.error("heartbeat: %s", "; ".join(t.summary for t in raised))
    return raised


def intervals_from(schedules: Iterable[tuple[str, str]], today: date | None = None) -> dict[str, float]:
    """The sweeps' intervals from (setting name, NCRONTAB) pairs (shared.entrypoints.settings.sweep_schedules;
    a sweep without a schedule is not watched). Raises ScheduleError naming the setting."""
    kinds = {setting: kind for kind, (_, setting) in SWEEP_KINDS.items()}
    intervals: dict[str, float] = {}
    for setting, expression in schedules:
        if setting not in kinds or not expression.strip():
            continue
        try:
            intervals[kinds[setting]] = schedule_interval(expression, today)
        except ScheduleError as exc:
            raise ScheduleError(f"{setting}: {exc}") from None
    return intervals
