"""The operator's view: what is open now (``nsp-drift status``, ``GET /api/status``).

``build_status`` is a pure function over what the store returns: open findings by account and
severity, deliveries not yet delivered and those that failed (given up, or backing off with their
last error), targets whose evaluation keeps failing or was poisoned, and when each sweep last
completed. ``status_to_dict`` is the JSON both the command and the HTTP function return;
``render_table`` the command's default text. ``read_status`` is the shell: it lets the heartbeat
look first (shared.service.heartbeat: a stale sweep raises its one alert from here too), then reads
through the store's ``StatusStore`` methods, which both stores implement.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from shared.core.model import Severity
from shared.core.notify.base import Delivery, DeliveryStatus
from shared.core.notify.redact import one_line
from shared.core.state.base import AccountState, PendingMarker, PoisonRecord, StatusStore, SweepRecord
from shared.service.heartbeat import SWEEP_KINDS, Sink, check_heartbeats, is_stale

DEFAULT_LIMIT = 100  # delivery items listed per section (the counts are always complete)
_SEVERITIES = tuple(s.label for s in sorted(Severity, reverse=True))  # critical first


def _iso(epoch: float) -> str | None:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds") if epoch else None


def _rank(label: str) -> int:
    try:
        return int(Severity.parse(label))
    except ValueError:
        return -1


@dataclass(frozen=True)
class OpenFinding:
    rule: str
    severity: str
    title: str
    perimeter: str | None
    evidence: tuple[str, ...]  # the subjects of its evidence items (one finding per rule and account)
    key: str


@dataclass(frozen=True)
class AccountFindings:
    account: str  # the storage account's ARM id
    name: str
    findings: tuple[OpenFinding, ...]

    @property
    def top(self) -> int:
        return max((_rank(f.severity) for f in self.findings), default=-1)

    def by_severity(self) -> dict[str, int]:
        return _count(f.severity for f in self.findings)


@dataclass(frozen=True)
class DeliveryItem:
    destination: str
    state: str  # "pending" (not yet delivered) | "retrying" (backing off) | "failed" (given up)
    rule: str
    transition: str
    resource: str
    severity: str
    attempts: int
    created_at: float
    next_attempt_at: float
    last_status: int | None
    last_error: str  # redacted, one line


@dataclass(frozen=True)
class TroubledTarget:
    target: str  # Target.key
    kind: str
    resource: str
    state: str  # "failing" (backing off) | "poisoned" (its message went to the poison queue)
    attempts: int
    last_error: str
    since: float  # the window's first event (failing) or when it was poisoned
    retry_at: float  # failing: the next attempt; poisoned: 0 (the sweep re-queues it)
    alerted: bool


@dataclass(frozen=True)
class SweepStatus:
    kind: str
    function: str
    last_completed: float  # 0: never (since the heartbeat began watching)
    interval: float | None  # seconds, from the schedule setting (None: not configured here)
    stale: bool | None  # None when the interval is unknown
    alerted: bool  # the heartbeat alert is open


@dataclass(frozen=True)
class Status:
    generated_at: float
    accounts: tuple[AccountFindings, ...]
    pending: tuple[DeliveryItem, ...]
    pending_total: int
    failed: tuple[DeliveryItem, ...]
    failed_total: int
    targets: tuple[TroubledTarget, ...]
    sweeps: tuple[SweepStatus, ...]

    @property
    def open_findings(self) -> int:
        return sum(len(a.findings) for a in self.accounts)

    @property
    def last_sweep(self) -> float:
        return max((s.last_completed for s in self.sweeps), default=0.0)


def _count(labels: Any) -> dict[str, int]:
    counts = dict.fromkeys(_SEVERITIES, 0)
    for label in labels:
        counts[label] = counts.get(label, 0) + 1
    return counts


def _subjects(document: Mapping[str, Any]) -> tuple[str, ...]:
    items = document.get("evidence")
    if not isinstance(items, list):
        return ()
    return tuple(str(i.get("subject", "")) for i in items if isinstance(i, Mapping))


def _finding(document: Mapping[str, Any]) -> OpenFinding:
    return OpenFinding(
        rule=str(document.get("rule", "")),
        severity=str(document.get("severity", "")),
        title=str(document.get("title", "")),
        perimeter=str(document["perimeter"]) if document.get("perimeter") else None,
        evidence=_subjects(document),
        key=str(document.get("key", "")),
    )


def _delivery(delivery: Delivery) -> DeliveryItem:
    transition = delivery.transition
    state = "failed" if delivery.status is DeliveryStatus.FAILED else "retrying" if delivery.attempts else "pending"
    return DeliveryItem(
        destination=delivery.destination,
        state=state,
        rule=str(transition.get("rule", "")),
        transition=str(transition.get("transition", "")),
        resource=str(transition.get("resource", "")),
        severity=str(transition.get("severity", "")),
        attempts=delivery.attempts,
        created_at=delivery.created_at,
        next_attempt_at=delivery.next_attempt_at if delivery.status is DeliveryStatus.PENDING else 0.0,
        last_status=delivery.last_status,
        last_error=one_line(delivery.last_error, 300),  # stored redacted; redacted again on the way out
    )


def build_status(  # noqa: PLR0913 - one input per section of the status, read by read_status
    accounts: Sequence[AccountState],
    pending: Sequence[Delivery],
    failed: Sequence[Delivery],
    failing: Sequence[PendingMarker],
    poisoned: Sequence[tuple[PoisonRecord, PendingMarker | None]],
    sweeps: Mapping[str, SweepRecord | None],
    intervals: Mapping[str, float],
    now: float,
    limit: int = DEFAULT_LIMIT,
) -> Status:
    """``pending``: the outbox's PENDING deliveries; ``failed``: its FAILED ones; ``poisoned``:
    each poison record with the target's window as it is now (None: evaluated since)."""
    by_account = []
    for state in accounts:
        if state.is_tombstone or not state.findings:
            continue
        findings = sorted((_finding(f) for f in state.findings), key=lambda f: (-_rank(f.severity), f.rule, f.key))
        name = state.facts.get("name") or state.account_id.rstrip("/").rsplit("/", 1)[-1]
        by_account.append(AccountFindings(state.account_id, name, tuple(findings)))
    by_account.sort(key=lambda a: (-a.top, -len(a.findings), a.account.lower()))

    waiting = [_delivery(d) for d in pending if d.status is DeliveryStatus.PENDING and not d.attempts]
    troubled = [_delivery(d) for d in pending if d.status is DeliveryStatus.PENDING and d.attempts]
    troubled += [_delivery(d) for d in failed if d.status is DeliveryStatus.FAILED]
    waiting.sort(key=lambda d: (d.created_at, d.destination))  # oldest first: what has waited longest
    troubled.sort(key=lambda d: (-d.created_at, d.destination))  # latest first

    targets = [
        TroubledTarget(
            target=m.target.key,
            kind=m.target.kind.value,
            resource=m.target.resource_id,
            state="failing",
            attempts=m.attempts,
            last_error=one_line(m.last_error, 300),
            since=m.first_seen,
            retry_at=m.due,
            alerted=m.alerted,
        )
        for m in failing
        if m.attempts > 0
    ]
    for poison, window in poisoned:
        if window is None or window.first_seen > poison.at:
            continue  # evaluated since (a later window is a new one)
        targets.append(
            TroubledTarget(
                target=poison.target.key,
                kind=poison.target.kind.value,
                resource=poison.target.resource_id,
                state="poisoned",
                attempts=poison.attempts,
                last_error=one_line(poison.reason, 300),
                since=poison.at,
                retry_at=0.0,
                alerted=True,
            )
        )
    targets.sort(key=lambda t: (t.state, t.target))

    sweep_views = []
    for kind, (function, _) in SWEEP_KINDS.items():
        record = sweeps.get(kind)
        interval = intervals.get(kind)
        stale = None if interval is None or record is None else is_stale(record, interval, now)
        sweep_views.append(
            SweepStatus(
                kind=kind,
                function=function,
                last_completed=record.completed_at if record is not None else 0.0,
                interval=interval,
                stale=stale,
                alerted=bool(record is not None and record.alerted_at),
            )
        )
    return Status(
        generated_at=now,
        accounts=tuple(by_account),
        pending=tuple(waiting[:limit]),
        pending_total=len(waiting),
        failed=tuple(troubled[:limit]),
        failed_total=len(troubled),
        targets=tuple(targets),
        sweeps=tuple(sweep_views),
    )


# -- renderings (pure) ------------------------------------------------------------------------------------


def _delivery_dict(item: DeliveryItem) -> dict[str, Any]:
    return {
        "destination": item.destination,
        "state": item.state,
        "rule": item.rule,
        "transition": item.transition,
        "resource": item.resource,
        "severity": item.severity,
        "attempts": item.attempts,
        "created_at": _iso(item.created_at),
        "next_attempt_at": _iso(item.next_attempt_at),
        "last_status": item.last_status,
        "last_error": item.last_error or None,
    }


def status_to_dict(status: Status) -> dict[str, Any]:
    """The JSON of ``nsp-drift status --format json`` and ``GET /api/status``."""
    return {
        "generated_at": _iso(status.generated_at),
        "findings": {
            "open": status.open_findings,
            "accounts": len(status.accounts),
            "by_severity": _count(f.severity for a in status.accounts for f in a.findings),
            "by_account": [
                {
                    "account": a.account,
                    "name": a.name,
                    "open": len(a.findings),
                    "by_severity": a.by_severity(),
                    "findings": [
                        {
                            "rule": f.rule,
                            "severity": f.severity,
                            "title": f.title,
                            "perimeter": f.perimeter,
                            "evidence": list(f.evidence),
                            "key": f.key,
                        }
                        for f in a.findings
                    ],
                }
                for a in status.accounts
            ],
        },
        "deliveries": {
            "pending": {
                "count": status.pending_total,
                "oldest": _iso(min((d.created_at for d in status.pending), default=0.0)),
                "items": [_delivery_dict(d) for d in status.pending],
                "omitted": status.pending_total - len(status.pending),
            },
            "failed": {
                "count": status.failed_total,
                "items": [_delivery_dict(d) for d in status.failed],
                "omitted": status.failed_total - len(status.failed),
            },
        },
        "targets": [
            {
                "target": t.target,
                "kind": t.kind,
                "resource": t.resource,
                "state": t.state,
                "attempts": t.attempts,
                "last_error": t.last_error or None,
                "since": _iso(t.since),
                "retry_at": _iso(t.retry_at),
                "alerted": t.alerted,
            }
            for t in status.targets
        ],
        "sweeps": {
            s.kind: {
                "function": s.function,
                "last_completed": _iso(s.last_completed),
                "interval_seconds": s.interval,
                "stale": s.stale,
                "heartbeat_alert": s.alerted,
            }
            for s in status.sweeps
        },
        "last_sweep": _iso(status.last_sweep),
    }


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))
    return [line.rstrip(), *("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows)]


def render_table(status: Status) -> str:
    doc = status_to_dict(status)
    out: list[str] = [f"nsp-drift status at {doc['generated_at']}", ""]
    findings = doc["findings"]
    severities = ", ".join(f"{n} {s}" for s, n in findings["by_severity"].items() if n)
    out.append(
        f"Open findings: {findings['open']} on {findings['accounts']} account(s)"
        + (f" ({severities})" if severities else "")
    )
    if status.accounts:
        rows = [
            [
                a.name,
                *(str(a.by_severity()[s]) for s in _SEVERITIES),
                ", ".join(dict.fromkeys(f.rule for f in a.findings)),
            ]
            for a in status.accounts
        ]
        out += ["", *_table(["account", *_SEVERITIES, "rules"], rows)]
    pending, failed = doc["deliveries"]["pending"], doc["deliveries"]["failed"]
    out += [
        "",
        f"Pending deliveries: {pending['count']}" + (f" (oldest {pending['oldest']})" if pending["count"] else ""),
    ]
    if status.pending:
        rows = [
            [d.destination, d.transition, d.rule, d.resource.rsplit("/", 1)[-1], _iso(d.created_at) or ""]
            for d in status.pending
        ]
        out += _table(["destination", "transition", "rule", "resource", "recorded"], rows)
    out += ["", f"Failed deliveries: {failed['count']}"]
    if status.failed:
        rows = [
            [d.destination, d.state, d.rule, str(d.attempts), str(d.last_status or ""), d.last_error]
            for d in status.failed
        ]
        out += _table(["destination", "state", "rule", "attempts", "status", "last error"], rows)
    for section in (pending, failed):
        if section["omitted"]:
            out.append(f"... and {section['omitted']} more (--format json lists the first {len(section['items'])})")
    out += ["", f"Failing or poisoned targets: {len(status.targets)}"]
    if status.targets:
        rows = [[t.state, t.kind, t.resource, str(t.attempts), t.last_error] for t in status.targets]
        out += _table(["state", "kind", "resource", "attempts", "last error"], rows)
    out += ["", f"Last sweep: {doc['last_sweep'] or 'never'}"]
    rows = []
    for s in status.sweeps:
        health = "unknown" if s.stale is None else "STALE" if s.stale else "ok"
        if s.alerted:
            health += " (heartbeat alert open)"
        interval = f"{s.interval:.0f} s" if s.interval is not None else "-"
        rows.append([s.kind, s.function, _iso(s.last_completed) or "never", interval, health])
    out += _table(["sweep", "function", "last completed", "interval", "heartbeat"], rows)
    return "\n".join(out) + "\n"


# -- the shell ------------------------------------------------------------------------------------------


def read_status(
    store: StatusStore,
    intervals: Mapping[str, float],
    now: float,
    sink: Sink | None = None,
    limit: int = DEFAULT_LIMIT,
) -> Status:
    """Let the heartbeat look (when a sink is given), then read everything the status shows."""
    if sink is not None and intervals:
        check_heartbeats(store, sink, intervals, now)
    poison = [(record, store.window_of(record.target)) for record in store.poisoned()]
    return build_status(
        accounts=store.account_states(),
        pending=store.list_deliveries(DeliveryStatus.PENDING),
        failed=store.list_deliveries(DeliveryStatus.FAILED),
        failing=store.failing_pending(),
        poisoned=poison,
        sweeps={kind: _value(store.get_sweep(kind)) for kind in SWEEP_KINDS},
        intervals=intervals,
        now=now,
        limit=limit,
    )


def _value(versioned: Any) -> SweepRecord | None:
    return versioned.value if versioned is not None else None


def prune_poisoned(store: StatusStore) -> int:
    """Forget poison records of targets evaluated since (their window is gone or a newer one);
    the sweep calls it when it completes. Returns how many were forgotten."""
    forgotten = 0
    for record in store.poisoned():
        window = store.window_of(record.target)
        if window is None or window.first_seen > record.at:
            store.forget_poisoned(record.target)
            forgotten += 1
    return forgotten
