"""A small run of every benchmark scenario (bench/run.py), as CI runs it: the function app in its
own process over Azurite and the HTTPS loopback ARM, driven through its triggers by bench/host.py.

Counts only, never timings. What must hold whatever the implementation of the pipeline (fan-out or
not): the changes of each estate are delivered once per account they happened to, every queue
message the app sent is processed exactly once by the host, every member of the perimeter has its
NSP configuration read, the lists are paged, and the bench's counters agree with each other."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from bench import run as bench
from bench.estates import ADDED_PREFIX, CHANGED_RULE, account_ids, build_estate, members
from bench.host import StorageCalls, host_settings
from bench.run import QUICK, Options

SMALL = replace(
    QUICK,
    perimeter_accounts=12,
    sweep_accounts=100,
    storm_events=24,
    storm_accounts=4,
    latency=0.005,
    window=2.0,
    page_size=5,
    cold_runs=1,
    deadline=300.0,
)
QUEUE_SENDS = "queue POST nsp-drift-evaluations/messages"
CONFIGURATIONS = "/storageAccounts/{name}/networkSecurityPerimeterConfigurations"


def sends(result: dict[str, Any]) -> int:
    return sum(n for key, n in result["storage"]["by_operation"].items() if key.endswith(QUEUE_SENDS))


def template(result: dict[str, Any], suffix: str) -> int:
    return sum(n for key, n in result["arm"]["reads_by_template"].items() if key.endswith(suffix))


def assert_consistent(result: dict[str, Any]) -> None:
    """The run finished cleanly and the counters agree with each other."""
    assert not result["timed_out"] and result["poisoned"] == 0
    assert all(v["failed"] == 0 for v in result["invocations"].values()), result["invocations"]
    # Every message the app sent was received by the host, processed once and deleted.
    assert result["host_calls"].get("delete", 0) == sends(result) == result["invocations"].get(
        "evaluate_target", {}
    ).get("count", 0)
    assert result["arm"]["reads"] == sum(result["arm"]["reads_by_template"].values())
    assert result["arm"]["tokens"] >= 1  # the service principal signed in at the server
    storage = result["storage"]
    assert storage["table"] + storage["queue"] == sum(storage["by_operation"].values()) > 0
    assert result["deliveries"]["requests"] == sum(result["deliveries"]["transitions"].values())
    assert "outside an invocation" not in storage["by_function"]  # every call is attributed to its invocation
    assert result["peak_rss_mb"] > 0 and result["longest_invocation_seconds"] > 0


@pytest.mark.azurite
def test_perimeter_change_reads_every_member_and_reports_the_rule_change_once() -> None:
    result = bench.perimeter_change(SMALL)
    assert_consistent(result)
    assert result["members"] == result["accounts"] == 12
    assert result["invocations"]["on_resource_event"]["count"] == 1
    assert result["deliveries"]["transitions"] == {"changed perimeter-access-rules-changed": 1}
    assert template(result, CONFIGURATIONS) >= 12  # each member's NSP configuration is its truth
    assert result["goal_reads"] == 17
    assert result["storage"]["by_function"]["on_resource_event"]["queue"] >= 1  # the window's message


@pytest.mark.azurite
def test_an_invocation_reaching_function_timeout_is_killed_as_the_host_kills_it() -> None:
    # 2 s instead of host.json's 10 minutes, and a slow ARM: listing the perimeter's associations
    # alone (3 pages of 5, one after the other) takes 3 x 1 s; the intake reads no ARM.
    result = bench.perimeter_change(replace(SMALL, function_timeout=2.0, latency=1.0))
    assert result["killed"] == [{"function": "evaluate_target", "started": result["killed"][0]["started"]}]
    assert result["invocations"]["evaluate_target"] == {**result["invocations"]["evaluate_target"], "failed": 1}
    assert result["longest_invocation_seconds"] == 2.0
    assert result["deliveries"]["requests"] == 0  # killed before it could report anything
    report = {"function_timeout": 2.0, "options": {"deadline": 300.0}, "perimeter": result}
    assert "evaluate_target reached functionTimeout (2 s)" in bench.rows(report)[0][1]


@pytest.mark.azurite
def test_full_sweep_finds_every_change_and_pages_the_account_list() -> None:
    result = bench.full_sweep(SMALL)
    assert_consistent(result)
    assert result["accounts"] == 100 and result["members"] == 10
    assert result["invocations"]["reconcile_full_sweep"]["count"] == 1
    assert result["detected"] == {
        "opened sftp-enabled": "1/1",
        "opened unmanaged-disk": "5/5",
        "opened azure-backup": "3/3",
    }
    assert template(result, "/providers/Microsoft.Storage/storageAccounts") >= math.ceil(100 / SMALL.page_size)
    assert result["goal_reads"] == 70


@pytest.mark.azurite
def test_graph_sweep_queries_resource_graph_and_finds_the_summary_change() -> None:
    result = bench.graph_sweep(SMALL)
    assert_consistent(result)
    assert result["arm"]["graph_queries"] >= 1
    assert result["detected"]["opened sftp-enabled"] == "1/1"
    assert set(result["detected"]) == {"opened sftp-enabled", "opened unmanaged-disk", "opened azure-backup"}


@pytest.mark.azurite
def test_storm_evaluates_each_account_and_counts_storage_per_event() -> None:
    result = bench.storm(SMALL)
    assert_consistent(result)
    assert result["invocations"]["on_resource_event"]["count"] == 24
    assert result["deliveries"]["transitions"] == {"opened sftp-enabled": 4}
    assert result["evaluations"] >= 4  # a window that closed mid-storm is evaluated again (nothing new)
    storage = result["storage"]
    assert result["storage_calls_per_event"] == round((storage["table"] + storage["queue"]) / 24, 2)
    assert storage["by_function"]["on_resource_event"]["table"] >= 24  # each event is recorded as seen


@pytest.mark.azurite
def test_cold_start_evaluates_in_a_fresh_process_then_warm() -> None:
    result = bench.cold_start(SMALL)
    assert result["statuses"] == ["ok", "ok"]
    assert result["arm_reads"] >= 4  # two evaluations, each at least the account and its configurations
    assert result["storage_first"] > 0
    assert result["rss_after_first_mb"] > 0 and result["first_invocation_seconds"] > 0


def test_cpu_counts_its_evaluations() -> None:
    assert bench.cpu(accounts=10)["evaluations"] == 10


# -- the pieces, without Azurite ----------------------------------------------------------------


def test_estates_page_and_carry_vms_shares_backups_and_the_rule_change() -> None:
    from shared.adapters.estate import Estate

    before = build_estate(40, in_perimeter_every=2, features_every=5)
    after = build_estate(40, in_perimeter_every=2, features_every=5, rule_change=True)
    assert len(account_ids(before)) == 40 and len(members(before)) == 20
    kinds = {key.split("/providers/", 1)[1].split("/")[1] for key in before if "/providers/" in key}
    assert {"virtualMachines", "backupVaults", "storageAccounts", "networkSecurityPerimeters"} <= kinds
    assert sum("/shares/" in k for k in before) == 8 and sum("/backupInstances/" in k for k in before) == 4
    assert ADDED_PREFIX in str(after[CHANGED_RULE]) and ADDED_PREFIX not in str(before[CHANGED_RULE])
    page = Estate(before, page_size=5).answer("GET", f"https://arm.example{account_ids(before)[0].rsplit('/', 1)[0]}")
    assert b"nextLink" in page.body


def test_host_settings_come_from_host_json() -> None:
    settings = host_settings()
    assert settings["function_timeout"] == 600 and settings["max_dequeue_count"] == 5
    assert settings["batch_size"] >= 1 and settings["visibility_timeout"] >= 0


def test_storage_calls_are_classified_by_service_and_table() -> None:
    connection = (
        "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=a2V5;"
        "TableEndpoint=http://127.0.0.1:10002/devstoreaccount1;QueueEndpoint=http://127.0.0.1:10001/devstoreaccount1;"
    )
    calls = StorageCalls(connection, "benchx")

    class Response:
        def __init__(self, method: str, url: str) -> None:
            self.request = type("R", (), {"method": method, "url": url})()

    calls._hook(Response("GET", "http://127.0.0.1:10002/devstoreaccount1/benchxstate(PartitionKey='a',RowKey='b')"))
    calls._hook(Response("POST", "http://127.0.0.1:10001/devstoreaccount1/nsp-drift-evaluations/messages?x=1"))
    assert calls.summary()["by_operation"] == {
        "outside an invocation | queue POST nsp-drift-evaluations/messages": 1,
        "outside an invocation | table GET state": 1,
    }
    assert calls.total("table") == calls.total("queue") == 1


def test_readme_section_is_written_between_the_markers(tmp_path: Path) -> None:
    report: dict[str, Any] = {
        "date": "2026-12-07",
        "nproc": 2,
        "load_before": [0.5, 0.4, 0.3],
        "load_after": [0.6, 0.5, 0.4],
        "commit": "abc1234",
        "quick": False,
        "benchmark_seconds": 12.0,
        "options": {"latency": 0.05, "page_size": 1000, "window": 30.0, "deadline": 10800.0},
        "cold_start": {
            "process_to_first_evaluation_seconds": 0.9,
            "import_function_app_seconds": 0.1,
            "first_invocation_seconds": 0.6,
            "warm_invocation_seconds": 0.2,
            "arm_reads": 18,
            "rss_after_first_mb": 95.0,
            "peak_rss_mb": 96.0,
            "runs": 3,
        },
    }
    text = bench.markdown(report)
    assert "load average 0.50 / 0.40 / 0.30" in text and "| first invocation in a fresh process |" in text
    assert "time met; memory met" in text
    readme = tmp_path / "README.md"
    readme.write_text("before\n<!-- bench:start -->\nold\n<!-- bench:end -->\nafter\n")
    bench.write_readme(text, readme)
    assert readme.read_text() == f"before\n<!-- bench:start -->\n{text}<!-- bench:end -->\nafter\n"
    report["cold_start"]["process_to_first_evaluation_seconds"] = 1.5
    assert "time **not met**" in bench.markdown(report)


def test_the_readme_has_the_bench_markers() -> None:
    text = bench.README.read_text()
    assert text.count("<!-- bench:start -->") == text.count("<!-- bench:end -->") == 1


def test_quick_is_a_tenth_of_the_full_size() -> None:
    full = Options()
    assert (full.perimeter_accounts, full.sweep_accounts, full.storm_events, full.storm_accounts) == (
        2000,
        10000,
        1000,
        50,
    )
    assert QUICK.sweep_accounts == full.sweep_accounts // 10
    assert QUICK.perimeter_accounts == full.perimeter_accounts // 10
