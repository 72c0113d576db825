"""What a rule is: a stable id, its documentation, its scope and one pure check function.

A rule owns its scope: ``judged_by`` names the change kinds whose evaluations may open or resolve
its findings (``shared.core.rules.judged_by`` answers the pipeline from these), ``references`` what
besides the account its verdict stands on (a perimeter, a VM, a backup instance, a key vault: a
change to one re-evaluates the account), ``parameters`` the rules-configuration keys it reads.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from shared.core.changes import TargetKind
from shared.core.model import PerimeterView, Severity, StorageAccountSnapshot


@dataclass(frozen=True)
class Source:
    """Where a limitation is documented. Both Microsoft pages are kept, each with its date."""

    document: str
    date: str
    url: str


BRIEF_2025_06 = Source(
    "Network security perimeter for Azure Storage (preview), Limitations",
    "2025-06-18",
    "https://learn.microsoft.com/azure/storage/common/storage-network-security-perimeter",
)
LEARN_2025_07 = Source(
    "Network security perimeter for Azure Storage, Limitations table",
    "2025-07-27",
    "https://learn.microsoft.com/azure/storage/common/storage-network-security-perimeter",
)
TRANSITION_2024_11 = Source(
    "Transition to a network security perimeter in Azure (access modes)",
    "2024-11-06",
    "https://learn.microsoft.com/azure/private-link/network-security-perimeter-transition",
)
SERVICE_TAGS_2026_10 = Source(
    "Configure service tags for a network security perimeter",
    "2026-10-02",
    "https://learn.microsoft.com/azure/private-link/configure-network-security-perimeter-service-tag",
)
NSP_CONFIG_API = Source(
    "Storage REST API: networkSecurityPerimeterConfigurations (provisioningIssues)",
    "2025-08-01",
    "https://learn.microsoft.com/rest/api/storagerp/network-security-perimeter-configurations",
)


@dataclass(frozen=True)
class RuleParams:
    """Tunables some rules read; set from the rules configuration."""

    max_inbound_prefix_ipv4: int = 16  # an inbound public prefix shorter than /16 is "too broad"
    max_inbound_prefix_ipv6: int = 48


@dataclass(frozen=True)
class Hit:
    """One thing a check found. ``severity`` overrides the rule's default for this hit only."""

    summary: str
    evidence: dict[str, Any] = field(default_factory=dict)
    subject: str = ""
    severity: Severity | None = None
    perimeter_id: str | None = None


Check = Callable[[StorageAccountSnapshot, RuleParams], Iterable[Hit]]
# The summary of a finding with several evidence items (each has "subject" and "summary").
Summarize = Callable[[Sequence[Mapping[str, Any]]], str]

SUMMARY_ITEMS = 3  # the generic summary quotes at most this many items' summaries


def joined_summary(items: Sequence[Mapping[str, Any]]) -> str:
    """The generic summary: the items' own summaries, the first few of them."""
    texts = [str(item.get("summary", "")) for item in items]
    more = f"; and {len(texts) - SUMMARY_ITEMS} more" if len(texts) > SUMMARY_ITEMS else ""
    return "; ".join(texts[:SUMMARY_ITEMS]) + more


def quoted(values: Iterable[object], shown: int = 5) -> str:
    """'a', 'b', 'c' (and 2 more): distinct values in order."""
    distinct = list(dict.fromkeys(str(v) for v in values))
    more = f" and {len(distinct) - shown} more" if len(distinct) > shown else ""
    return ", ".join(f"'{v}'" for v in distinct[:shown]) + more


@dataclass(frozen=True)
class Rule:
    id: str
    title: str
    severity: Severity
    sources: tuple[Source, ...]
    reason: str
    remediation: str
    check: Check
    judged_by: frozenset[TargetKind]
    references: frozenset[TargetKind] = frozenset()
    parameters: frozenset[str] = frozenset()  # keys of [rules.<id>] beyond enabled and severity
    # What one evidence item of the rule's finding is (the README's rules table, ``rules``).
    evidence: str = ""
    summarize: Summarize | None = None  # several items; None: ``joined_summary``

    def summary_of(self, items: Sequence[Mapping[str, Any]]) -> str:
        """One finding's summary from its evidence items (in subject order): a pure function of
        them, so a finding merged from stored per-subject findings reads the same as a fresh one."""
        if len(items) == 1:
            return str(items[0].get("summary", ""))
        return (self.summarize or joined_summary)(items)

    def catalogue_entry(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "title": self.title,
            "severity": self.severity.label,
            "sources": [{"document": s.document, "date": s.date, "url": s.url} for s in self.sources],
            "reason": self.reason,
            "remediation": self.remediation,
            "evidence": self.evidence,
        }


def inbound_rules(view: PerimeterView) -> Iterable[Any]:
    return (rule for rule in view.access_rules if rule.is_inbound)
