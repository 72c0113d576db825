"""The loopback HTTPS ARM: real SDK clients over TLS, request counting, the read bucket, and the
pacing policy keeping a burst under ARM's limits."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

from bench.run import build_estate, live
from bench.server import Faults, TokenBucket, path_template, serving
from shared import runtime
from shared.adapters.arm_reader import ArmReader
from shared.adapters.estate import Estate

SAMPLES = Path(__file__).resolve().parents[1] / "shared" / "samples"


def test_sdk_reads_the_estate_over_tls_and_requests_are_counted() -> None:
    estate = Estate.load(SAMPLES / "estate.json")
    account = next(i for i in estate.ids_of_type("microsoft.storage/storageaccounts") if i.endswith("stcontososftp01"))
    with serving(estate, latency=0.0) as server:
        clients = live(server)
        snapshot = runtime.run(ArmReader(clients).read_account(account))
        runtime.run(clients.close())
    assert snapshot.is_sftp_enabled and snapshot.in_perimeter
    assert server.total() == 9
    assert (
        server.counts["GET /subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Storage/storageAccounts/{name}"]
        == 1
    )


def test_pacing_keeps_a_burst_of_reads_from_failing_against_the_bucket() -> None:
    estate = Estate(build_estate(200))
    ids = list(estate.ids_of_type("microsoft.storage/storageaccounts"))
    with serving(estate, latency=0.0, bucket=TokenBucket(capacity=60, rate=120)) as server:
        clients = live(server)

        async def burst() -> int:
            import asyncio

            reader = ArmReader(clients)
            results = await asyncio.gather(*(reader.read_account(a) for a in ids), return_exceptions=True)
            return sum(isinstance(r, BaseException) for r in results)

        errors = runtime.run(burst())
        runtime.run(clients.close())
    assert errors == 0  # nothing escaped to the caller
    assert server.total() >= 400


def test_faults_are_injected_at_the_configured_rates() -> None:
    estate = Estate.load(SAMPLES / "estate.json")
    faults = Faults(server_error=0.3, seed=3)
    with serving(estate, latency=0.0, faults=faults) as server:
        clients = live(server)
        ids = list(estate.ids_of_type("microsoft.storage/storageaccounts"))

        async def read_all() -> None:
            reader = ArmReader(clients)
            for account in ids:
                with contextlib.suppress(Exception):  # the failures are what this test counts
                    await reader.read_account(account)

        runtime.run(read_all())
        runtime.run(clients.close())
    assert faults.injected["server_error"] > 0
    assert 0.1 < faults.injected["server_error"] / server.total() < 0.5


def test_path_templates() -> None:
    assert path_template("/subscriptions/x/providers/Microsoft.Compute/virtualMachines?api-version=1") == (
        "/subscriptions/{sub}/providers/Microsoft.Compute/virtualMachines"
    )
    assert json.dumps(path_template("/providers/Microsoft.ResourceGraph/resources")).count("{") == 0
