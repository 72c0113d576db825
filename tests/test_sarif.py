"""SARIF output: valid against the official SARIF 2.1.0 schema (vendored, see tests/schemas/README.md)
and consistent within itself (rule ids and indexes, levels, locations, fingerprints)."""

from __future__ import annotations

import copy
import hashlib
import io
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from shared.core.output import portal_url
from shared.core.rules import ALL_RULES
from shared.entrypoints.cli import main
from tests import estate_builder as eb

SCHEMA_PATH = Path(__file__).resolve().parent / "schemas" / "sarif-schema-2.1.0.json"
LEVELS = {"critical": "error", "high": "error", "medium": "warning", "low": "note", "info": "note"}


def scan(*argv: str) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(["scan", *argv], out, err)
    assert code in (0, 1), err.getvalue()
    return code, out.getvalue()


@pytest.fixture(scope="module")
def validator() -> Any:
    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


@pytest.fixture(scope="module")
def sample_sarif() -> dict[str, Any]:
    return json.loads(scan("--estate", "sample", "--format", "sarif")[1])


@pytest.fixture(scope="module")
def sample_findings() -> list[dict[str, Any]]:
    return [json.loads(line) for line in scan("--estate", "sample", "--format", "jsonl")[1].splitlines()]


def errors(validator: Any, document: Any) -> list[str]:
    return [f"{e.json_path}: {e.message}" for e in validator.iter_errors(document)]


# -- the official schema ----------------------------------------------------------------------------


def test_vendored_schema_is_the_sarif_2_1_0_schema() -> None:
    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    assert schema["title"] == "Static Analysis Results Format (SARIF) Version 2.1.0 JSON Schema"
    assert schema["properties"]["version"]["enum"] == ["2.1.0"]
    assert hashlib.sha256(SCHEMA_PATH.read_bytes()).hexdigest() == (
        "1c49a0f2b60444c71bb14878e21e0d882198eff4c539861b133093ad89ed798c"
    )  # the hash recorded in tests/schemas/README.md


def test_sample_sarif_is_valid(validator: Any, sample_sarif: dict[str, Any]) -> None:
    assert sample_sarif["runs"][0]["results"], "the sample must produce results for this test to mean anything"
    assert errors(validator, sample_sarif) == []


def test_sarif_without_results_is_valid(validator: Any, tmp_path: Path) -> None:
    estate = tmp_path / "estate.json"
    estate.write_text(json.dumps(eb.merge(eb.outsider("stalone01"))), encoding="utf-8")
    code, out = scan("--estate", str(estate), "--format", "sarif")
    document = json.loads(out)
    assert code == 0 and document["runs"][0]["results"] == []
    assert errors(validator, document) == []


def test_sarif_with_critical_and_overridden_severities_is_valid(validator: Any, tmp_path: Path) -> None:
    config = tmp_path / "rules.json"
    config.write_text(
        json.dumps({"rules": {"blob-inventory": {"severity": "low"}, "subscription-rule": {"severity": "critical"}}}),
        encoding="utf-8",
    )
    document = json.loads(scan("--estate", "sample", "--format", "sarif", "--config", str(config))[1])
    levels = {r["ruleId"]: (r["level"], r["properties"]["severity"]) for r in document["runs"][0]["results"]}
    assert levels["blob-inventory"] == ("note", "low")
    assert levels["subscription-rule"] == ("error", "critical")
    assert errors(validator, document) == []


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: d["runs"][0]["results"][0].__setitem__("level", "critical"),
        lambda d: d.__setitem__("version", "2.0.0"),
        lambda d: d["runs"][0]["results"][0].pop("message"),
        lambda d: d["runs"][0]["tool"]["driver"].pop("name"),
        lambda d: d.__setitem__("findings", []),
    ],
    ids=["bad-level", "bad-version", "no-message", "no-driver-name", "unknown-top-level-key"],
)
def test_the_schema_rejects_broken_documents(validator: Any, sample_sarif: dict[str, Any], mutate: Any) -> None:
    broken = copy.deepcopy(sample_sarif)
    mutate(broken)
    assert errors(validator, broken)


# -- internal consistency ------------------------------------------------------------------------------


def test_header_and_driver(sample_sarif: dict[str, Any]) -> None:
    assert sample_sarif["version"] == "2.1.0"
    assert sample_sarif["$schema"].endswith("sarif-2.1.0.json")
    (run,) = sample_sarif["runs"]
    driver = run["tool"]["driver"]
    assert driver["name"] == "nsp-drift" and driver["version"]
    assert driver["informationUri"].startswith("https://")


def test_rules_are_the_catalogue(sample_sarif: dict[str, Any]) -> None:
    rules = sample_sarif["runs"][0]["tool"]["driver"]["rules"]
    assert [r["id"] for r in rules] == [rule.id for rule in ALL_RULES]
    for descriptor, rule in zip(rules, ALL_RULES, strict=True):
        assert descriptor["shortDescription"]["text"] == rule.title
        assert descriptor["fullDescription"]["text"] == rule.reason
        assert descriptor["help"]["text"] == rule.remediation
        assert descriptor["helpUri"] == rule.sources[0].url
        assert descriptor["defaultConfiguration"]["level"] == LEVELS[rule.severity.label]
        assert 0.0 <= float(descriptor["properties"]["security-severity"]) <= 10.0


def test_results_reference_their_rules(sample_sarif: dict[str, Any], sample_findings: list[dict[str, Any]]) -> None:
    (run,) = sample_sarif["runs"]
    rules = run["tool"]["driver"]["rules"]
    results = run["results"]
    assert len(results) == len(sample_findings)
    for result, finding in zip(results, sample_findings, strict=True):
        assert result["ruleId"] == finding["rule"]
        assert rules[result["ruleIndex"]]["id"] == result["ruleId"]
        assert result["level"] in {"error", "warning", "note", "none"}
        assert result["level"] == LEVELS[finding["severity"]]
        assert result["properties"]["severity"] == finding["severity"]
        assert result["message"]["text"] == f"{finding['account']}: {finding['summary']}"


def test_locations_name_the_storage_account(
    sample_sarif: dict[str, Any], sample_findings: list[dict[str, Any]]
) -> None:
    for result, finding in zip(sample_sarif["runs"][0]["results"], sample_findings, strict=True):
        (location,) = result["locations"]
        assert location["physicalLocation"]["artifactLocation"]["uri"] == portal_url(finding["resource"])
        (logical,) = location["logicalLocations"]
        assert logical["fullyQualifiedName"] == finding["resource"]
        assert logical["name"] == finding["account"]
        assert logical["kind"] == "resource"


def test_fingerprints_are_stable_and_unique(
    sample_sarif: dict[str, Any], sample_findings: list[dict[str, Any]]
) -> None:
    prints = [r["partialFingerprints"]["nspDriftFindingKey/v1"] for r in sample_sarif["runs"][0]["results"]]
    assert len(set(prints)) == len(prints)
    expected = [
        hashlib.sha256(f"{f['rule']}|{f['resource'].lower()}|".encode()).hexdigest()  # one per rule and account
        for f in sample_findings
    ]
    assert prints == expected
    again = json.loads(scan("--estate", "sample", "--format", "sarif")[1])
    assert [r["partialFingerprints"] for r in again["runs"][0]["results"]] == [
        r["partialFingerprints"] for r in sample_sarif["runs"][0]["results"]
    ]
