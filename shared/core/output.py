"""Render findings for people (table) and machines (json, jsonl, sarif)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from typing import Any

from shared.core.model import AccountResult, Finding, Severity
from shared.core.rules import ALL_RULES

TOOL_NAME = "nsp-drift"
TOOL_VERSION = "0.1.0"
INFO_URI = "https://learn.microsoft.com/azure/storage/common/storage-network-security-perimeter"


def finding_to_dict(finding: Finding) -> dict[str, Any]:
    return {
        "rule": finding.rule_id,
        "title": finding.title,
        "severity": finding.severity.label,
        "resource": finding.resource_id,
        "account": finding.account_name,
        "perimeter": finding.perimeter_id,
        "summary": finding.summary,
        "evidence": list(finding.evidence),
        "suppression": finding.suppression_note or None,
    }


def all_findings(results: Iterable[AccountResult]) -> list[Finding]:
    return [f for r in results if r.evaluation for f in r.evaluation.findings]


def render_json(results: Sequence[AccountResult]) -> str:
    accounts = []
    for result in results:
        evaluation = result.evaluation
        accounts.append(
            {
                "resource": result.account_id,
                "inPerimeter": bool(evaluation and evaluation.snapshot.in_perimeter),
                "perimeters": [p.perimeter_id for p in evaluation.snapshot.perimeters] if evaluation else [],
                "incomplete": list(evaluation.snapshot.incomplete) if evaluation else [],
                "error": result.error or None,
                "suppressed": [finding_to_dict(f) for f in evaluation.suppressed] if evaluation else [],
            }
        )
    payload = {"findings": [finding_to_dict(f) for f in all_findings(results)], "accounts": accounts}
    return json.dumps(payload, indent=2, sort_keys=False)


def render_jsonl(results: Sequence[AccountResult]) -> str:
    return "".join(json.dumps(finding_to_dict(f)) + "\n" for f in all_findings(results))


def _status_of(result: AccountResult) -> str:
    if result.evaluation is None:
        return result.error or "error"
    if not result.evaluation.snapshot.in_perimeter:
        return "not in a perimeter"
    count = len(result.evaluation.findings)
    partial = " (partial read)" if result.evaluation.snapshot.incomplete else ""
    return (f"{count} finding(s)" if count else "clean") + partial


def render_table(results: Sequence[AccountResult]) -> str:
    lines = []
    findings = sorted(all_findings(results), key=lambda f: (-f.severity, f.account_name, f.rule_id))
    if findings:
        rows = [(f.severity.label.upper(), f.rule_id, f.account_name, f.summary) for f in findings]
        widths = [max(len(r[i]) for r in [*rows, ("SEVERITY", "RULE", "ACCOUNT", "")]) for i in range(3)]
        header = ("SEVERITY", "RULE", "ACCOUNT", "SUMMARY")
        for row in [header, *rows]:
            lines.append("  ".join(c.ljust(widths[i]) if i < 3 else c for i, c in enumerate(row)))
        lines.append("")
    lines.append("ACCOUNTS")
    for result in sorted(results, key=lambda r: r.account_id.lower()):
        lines.append(f"  {result.account_id.rsplit('/', 1)[-1]:<24} {_status_of(result)}")
    counts: dict[str, int] = {}
    for f in findings:
        counts[f.severity.label] = counts.get(f.severity.label, 0) + 1
    summary = ", ".join(f"{counts[s.label]} {s.label}" for s in sorted(Severity, reverse=True) if s.label in counts)
    lines.append("")
    lines.append(f"{len(findings)} finding(s) in {len(results)} account(s)" + (f": {summary}" if summary else ""))
    return "\n".join(lines) + "\n"


_SARIF_LEVEL = {
    Severity.CRITICAL: "error",
    Severity.HIGH: "error",
    Severity.MEDIUM: "warning",
    Severity.LOW: "note",
    Severity.INFO: "note",
}
_SECURITY_SEVERITY = {
    Severity.CRITICAL: "9.5",
    Severity.HIGH: "8.0",
    Severity.MEDIUM: "5.5",
    Severity.LOW: "3.0",
    Severity.INFO: "0.0",
}


def portal_url(resource_id: str) -> str:
    return f"https://portal.azure.com/#resource{resource_id}"


def render_sarif(results: Sequence[AccountResult]) -> str:
    rules = [
        {
            "id": rule.id,
            "name": rule.id.replace("-", " ").title().replace(" ", ""),
            "shortDescription": {"text": rule.title},
            "fullDescription": {"text": rule.reason},
            "help": {"text": rule.remediation, "markdown": f"**Remediation:** {rule.remediation}"},
            "helpUri": rule.sources[0].url,
            "defaultConfiguration": {"level": _SARIF_LEVEL[rule.severity]},
            "properties": {
                "security-severity": _SECURITY_SEVERITY[rule.severity],
                "tags": ["security", "azure", "network-security-perimeter"],
                "sources": [f"{s.document} ({s.date})" for s in rule.sources],
            },
        }
        for rule in ALL_RULES
    ]
    index = {rule.id: i for i, rule in enumerate(ALL_RULES)}
    sarif_results = []
    for f in all_findings(results):
        fingerprint = hashlib.sha256(f.key.encode()).hexdigest()
        sarif_results.append(
            {
                "ruleId": f.rule_id,
                "ruleIndex": index[f.rule_id],
                "level": _SARIF_LEVEL[f.severity],
                "message": {"text": f"{f.account_name}: {f.summary}"},
                "locations": [
                    {
                        "physicalLocation": {"artifactLocation": {"uri": portal_url(f.resource_id)}},
                        "logicalLocations": [
                            {"fullyQualifiedName": f.resource_id, "name": f.account_name, "kind": "resource"}
                        ],
                    }
                ],
                "partialFingerprints": {"nspDriftFindingKey/v1": fingerprint},
                "properties": {
                    "severity": f.severity.label,
                    "security-severity": _SECURITY_SEVERITY[f.severity],
                    "perimeter": f.perimeter_id,
                    "evidence": list(f.evidence),
                },
            }
        )
    document = {
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [
            {
                "tool": {
                    "driver": {
                        "name": TOOL_NAME,
                        "version": TOOL_VERSION,
                        "informationUri": INFO_URI,
                        "rules": rules,
                    }
                },
                "results": sarif_results,
            }
        ],
    }
    return json.dumps(document, indent=2)


def render_rules(fmt: str) -> str:
    if fmt == "markdown":
        lines = ["| id | severity | title | evidence (one item per) | source |", "|---|---|---|---|---|"]
        for rule in ALL_RULES:
            sources = "; ".join(f"[{s.document}]({s.url}) ({s.date})" for s in rule.sources)
            lines.append(f"| `{rule.id}` | {rule.severity.label} | {rule.title} | {rule.evidence} | {sources} |")
        return "\n".join(lines) + "\n"
    if fmt == "json":
        return json.dumps([rule.catalogue_entry() for rule in ALL_RULES], indent=2) + "\n"
    width = max(len(rule.id) for rule in ALL_RULES)
    lines = [f"{'ID':<{width}}  {'SEVERITY':<8}  TITLE"]
    lines += [f"{rule.id:<{width}}  {rule.severity.label:<8}  {rule.title}" for rule in ALL_RULES]
    return "\n".join(lines) + "\n"
