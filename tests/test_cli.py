"""The ``nsp-drift`` command line end to end: argv in, text and an exit code out."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from shared.adapters import runtime
from shared.adapters.arm_reader import ArmReader
from shared.adapters.estate import Estate
from shared.core.rules import ALL_RULES
from shared.entrypoints.cli import SAMPLE_NAMES, main
from shared.service.scan import ScopeError, accounts_in_scope
from shared.wiring import EstateClients
from tests.sample_estate import SUB

ROOT = Path(__file__).resolve().parents[1]
EXPECTED_IDS = sorted(rule.id for rule in ALL_RULES)
CLEAN = ("stcontosoclean01", "stcontosoclean02")
OUTSIDE = "stcontosooutside01"
FINDING_KEYS = {
    "rule",
    "title",
    "severity",
    "resource",
    "account",
    "perimeter",
    "summary",
    "evidence",
}
FINDING_KEYS |= {"suppression"}


def cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), out, err)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def sample_json() -> dict[str, Any]:
    code, out, err = cli("scan", "--estate", "sample", "--format", "json")
    assert code == 1, err
    return json.loads(out)


def account_entry(report: dict[str, Any], name: str) -> dict[str, Any]:
    (entry,) = [a for a in report["accounts"] if a["resource"].rsplit("/", 1)[-1] == name]
    return entry


# -- rules ------------------------------------------------------------------------------------------


def test_rules_json_lists_all_sixteen() -> None:
    code, out, err = cli("rules", "--format", "json")
    assert (code, err) == (0, "")
    catalogue = json.loads(out)
    assert [r["id"] for r in catalogue] == [rule.id for rule in ALL_RULES]
    assert sorted(r["id"] for r in catalogue) == EXPECTED_IDS and len(catalogue) == 16
    assert all(r["sources"] and all(s["date"] for s in r["sources"]) for r in catalogue)


def test_rules_table() -> None:
    code, out, _ = cli("rules")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["ID", "SEVERITY", "TITLE"]
    assert sorted(line.split()[0] for line in lines[1:]) == EXPECTED_IDS


# -- scan of the bundled sample ---------------------------------------------------------------------


@pytest.mark.parametrize("rule_id", EXPECTED_IDS)
def test_sample_reports_every_rule(sample_json: dict[str, Any], rule_id: str) -> None:
    assert rule_id in {f["rule"] for f in sample_json["findings"]}


@pytest.mark.parametrize("name", CLEAN)
def test_clean_accounts_have_nothing(sample_json: dict[str, Any], name: str) -> None:
    assert not [f for f in sample_json["findings"] if f["account"] == name]
    entry = account_entry(sample_json, name)
    assert entry["inPerimeter"] is True
    assert entry["incomplete"] == [] and entry["error"] is None and entry["suppressed"] == []


def test_outside_account_is_not_judged(sample_json: dict[str, Any]) -> None:
    assert not [f for f in sample_json["findings"] if f["account"] == OUTSIDE]
    entry = account_entry(sample_json, OUTSIDE)
    assert entry["inPerimeter"] is False and entry["perimeters"] == []


def test_sample_json_shape(sample_json: dict[str, Any]) -> None:
    estate = Estate.load(SAMPLE_NAMES["sample"])
    assert len(sample_json["accounts"]) == len(list(estate.ids_of_type("Microsoft.Storage/storageAccounts")))
    assert all(a["error"] is None and a["incomplete"] == [] for a in sample_json["accounts"])
    for finding in sample_json["findings"]:
        assert set(finding) == FINDING_KEYS
        assert finding["severity"] in {"info", "low", "medium", "high", "critical"}
        assert finding["resource"].endswith(f"/storageAccounts/{finding['account']}")
        assert finding["perimeter"].endswith("/networkSecurityPerimeters/nsp-contoso-data")


def test_jsonl_has_one_finding_per_line(sample_json: dict[str, Any]) -> None:
    code, out, _ = cli("scan", "--estate", "sample", "--format", "jsonl")
    assert code == 1
    lines = out.splitlines()
    assert [json.loads(line) for line in lines] == sample_json["findings"]


def test_table(sample_json: dict[str, Any]) -> None:
    code, out, _ = cli("scan", "--estate", "sample", "--format", "table")
    assert code == 1
    lines = out.splitlines()
    assert lines[0].split() == ["SEVERITY", "RULE", "ACCOUNT", "SUMMARY"]
    assert "ACCOUNTS" in lines
    status = {
        line.split()[0]: line.split(None, 1)[1]
        for line in lines[lines.index("ACCOUNTS") + 1 :]
        if line.startswith("  ")
    }
    assert status[OUTSIDE] == "not in a perimeter"
    assert status["stcontosoclean01"] == status["stcontosoclean02"] == "clean"
    assert status["stcontososftp01"] == "1 finding(s)"
    count = len(sample_json["findings"])
    assert lines[-1].startswith(f"{count} finding(s) in {len(sample_json['accounts'])} account(s): ")
    rows = lines[1 : lines.index("ACCOUNTS") - 1]
    assert len(rows) == count
    order = ["CRITICAL", "HIGH", "MEDIUM", "LOW", "INFO"]
    assert [order.index(r.split()[0]) for r in rows] == sorted(order.index(r.split()[0]) for r in rows)


def test_sarif_format(sample_json: dict[str, Any]) -> None:
    code, out, _ = cli("scan", "--estate", "sample", "--format", "sarif")
    assert code == 1
    document = json.loads(out)
    assert document["version"] == "2.1.0"
    assert len(document["runs"][0]["results"]) == len(sample_json["findings"])


# -- exit codes -------------------------------------------------------------------------------------


def test_exit_1_at_the_default_high_threshold(sample_json: dict[str, Any]) -> None:
    assert any(f["severity"] == "high" for f in sample_json["findings"])
    assert cli("scan", "--estate", "sample")[0] == 1


def test_exit_0_with_fail_on_critical_when_nothing_is_critical(sample_json: dict[str, Any]) -> None:
    assert not any(f["severity"] == "critical" for f in sample_json["findings"])
    code, out, err = cli("scan", "--estate", "sample", "--fail-on", "critical")
    assert (code, err) == (0, "")
    assert out.strip()


def test_exit_1_with_fail_on_critical_once_a_rule_is_raised_to_critical(tmp_path: Path) -> None:
    config = tmp_path / "rules.toml"
    config.write_text('[rules."lifecycle-management"]\nseverity = "critical"\n', encoding="utf-8")
    code, out, _ = cli(
        "scan", "--estate", "sample", "--fail-on", "CRITICAL", "--config", str(config), "--format", "jsonl"
    )
    assert code == 1
    assert [json.loads(line)["severity"] for line in out.splitlines() if '"lifecycle-management"' in line] == [
        "critical"
    ]


def test_exit_0_when_every_rule_is_disabled(tmp_path: Path) -> None:
    config = tmp_path / "rules.json"
    config.write_text(json.dumps({"rules": {r: {"enabled": False} for r in EXPECTED_IDS}}), encoding="utf-8")
    code, out, _ = cli("scan", "--estate", "sample", "--fail-on", "info", "--config", str(config), "--format", "jsonl")
    assert (code, out) == (0, "\n")


def test_suppression_from_a_config_file(tmp_path: Path) -> None:
    config = tmp_path / "rules.yaml"
    config.write_text(
        "suppressions:\n"
        "  - rule: sftp-enabled\n    resource: stcontososftp01\n"
        "    expires: 2099-12-31\n    reason: vendor drop\n",
        encoding="utf-8",
    )
    code, out, _ = cli("scan", "--estate", "sample", "--config", str(config), "--format", "json")
    report = json.loads(out)
    assert code == 1
    assert "sftp-enabled" not in {f["rule"] for f in report["findings"]}
    (hidden,) = account_entry(report, "stcontososftp01")["suppressed"]
    assert hidden["rule"] == "sftp-enabled"
    assert hidden["suppression"] == "suppressed until 2099-12-31: vendor drop"


def _bad_files(tmp_path: Path) -> dict[str, Path]:
    files = {
        "malformed.json": "{not json",
        "list.json": "[]",
        "bad-rules.toml": '[rules."no-such-rule"]\nenabled = false\n',
    }
    out = {}
    for name, text in files.items():
        out[name] = tmp_path / name
        out[name].write_text(text, encoding="utf-8")
    return out


USAGE_ERRORS = {
    "missing-estate": (["scan", "--estate", "{tmp}/nope.json"], "estate file {tmp}/nope.json does not exist"),
    "malformed-estate": (["scan", "--estate", "{tmp}/malformed.json"], "is not valid JSON"),
    "list-estate": (
        ["scan", "--estate", "{tmp}/list.json"],
        "expected a JSON object mapping resource ids to bodies",
    ),
    "unknown-format": (["scan", "--estate", "sample", "--format", "xml"], "invalid choice: 'xml'"),
    "bad-fail-on": (
        ["scan", "--estate", "sample", "--fail-on", "urgent"],
        "--fail-on: unknown severity 'urgent'",
    ),
    "invalid-config": (
        ["scan", "--estate", "sample", "--config", "{tmp}/bad-rules.toml"],
        "rules: unknown rule id 'no-such-rule'",
    ),
    "missing-config": (["scan", "--estate", "sample", "--config", "{tmp}/none.toml"], "does not exist"),
    "estate-and-subscription": (
        ["scan", "--estate", "sample", "--subscription", SUB],
        "not allowed with argument",
    ),
    "no-source": (["scan"], "one of the arguments --estate --subscription is required"),
    "bad-concurrency": (
        ["scan", "--estate", "sample", "--concurrency", "0"],
        "--concurrency must be at least 1",
    ),
    "no-command": ([], "required"),
    "unknown-command": (["fix"], "invalid choice: 'fix'"),
}


@pytest.mark.parametrize("case", sorted(USAGE_ERRORS))
def test_usage_errors_exit_2_with_one_line(tmp_path: Path, case: str) -> None:
    _bad_files(tmp_path)
    argv, message = USAGE_ERRORS[case]
    code, out, err = cli(*(a.replace("{tmp}", str(tmp_path)) for a in argv))
    assert code == 2
    assert out == ""
    assert err.endswith("\n") and err.count("\n") == 1, err
    assert err.startswith("nsp-drift: error: ")
    assert message.replace("{tmp}", str(tmp_path)) in err
    assert "Traceback" not in err


def test_unknown_subscription_is_a_scope_error() -> None:
    estate = Estate.load(SAMPLE_NAMES["sample"])
    clients = EstateClients(estate)
    reader = ArmReader(clients)
    unknown = "11111111-2222-3333-4444-555555555555"
    try:
        ids = runtime.run(accounts_in_scope(reader, [SUB]))
        assert sorted(ids) == sorted(estate.ids_of_type("Microsoft.Storage/storageAccounts"))
        with pytest.raises(ScopeError, match=f"^subscription {unknown} not found$"):
            runtime.run(accounts_in_scope(reader, [SUB, unknown]))
    finally:
        runtime.run(clients.close())


# -- outside the test process -----------------------------------------------------------------------


def test_console_module_runs_in_a_subprocess(sample_json: dict[str, Any]) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "shared.entrypoints.cli", "scan", "--estate", "sample", "--format", "jsonl"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 1, done.stderr
    assert done.stderr == ""
    assert [json.loads(line) for line in done.stdout.splitlines()] == sample_json["findings"]


def test_console_module_error_in_a_subprocess(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "shared.entrypoints.cli", "scan", "--estate", str(tmp_path / "missing.json")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr == f"nsp-drift: error: estate file {tmp_path / 'missing.json'} does not exist\n"
