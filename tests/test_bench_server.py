"""The loopback HTTPS ARM (bench/server.py) and the ARM read pacing (shared/adapters/throttle.py):
real SDK clients over TLS, request counting, the read bucket and the Resource Graph quota, the
server's own bounds, and the pacing policy keeping a burst of reads from ever meeting a 429."""

from __future__ import annotations

import asyncio
import http.client
import json
import ssl
import time
from pathlib import Path
from typing import Any

import pytest

from bench.estates import SUB, build_estate
from bench.run import live
from bench.server import ArmServer, Faults, GraphQuota, TokenBucket, path_template, serving
from shared.adapters import runtime, throttle
from shared.adapters.arm_reader import ArmReader
from shared.adapters.cloud import parse_cloud
from shared.adapters.estate import Estate
from shared.adapters.resource_graph import QUERIES
from shared.adapters.throttle import (
    HEADER,
    TENANT,
    ArmReadPacing,
    ReadBudget,
    budget_key,
    parse_retry_after,
)
from shared.wiring import LiveClients
from tests.fakes.clock import OnTheWire, VirtualClock

SAMPLES = Path(__file__).resolve().parents[1] / "shared" / "samples"
ACCOUNT_PATH = f"/subscriptions/{SUB}/resourceGroups/rg-data/providers/Microsoft.Storage/storageAccounts"


def raw(server: ArmServer, method: str, path: str, body: bytes | None = None) -> tuple[int, dict[str, str], bytes]:
    """One request with the standard library, trusting only the server's CA."""
    context = ssl.create_default_context(cafile=server.ca_path)
    port = int(server.base_url.rsplit(":", 1)[1])
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=10)
    try:
        conn.request(method, path, body=body, headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def raw_many(server: ArmServer, path: str, count: int) -> list[int]:
    """``count`` GETs over one keep-alive connection; their statuses."""
    context = ssl.create_default_context(cafile=server.ca_path)
    port = int(server.base_url.rsplit(":", 1)[1])
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=10)
    statuses = []
    try:
        for _ in range(count):
            conn.request("GET", path)
            response = conn.getresponse()
            response.read()
            statuses.append(response.status)
    finally:
        conn.close()
    return statuses


# -- the server ---------------------------------------------------------------------------------


def test_sdk_reads_the_estate_over_tls_and_requests_are_counted() -> None:
    estate = Estate.load(SAMPLES / "estate.json")
    account = next(i for i in estate.ids_of_type("microsoft.storage/storageaccounts") if i.endswith("stcontososftp01"))
    with serving(estate, latency=0.0) as server:
        clients = live(server)
        snapshot = runtime.run(ArmReader(clients).read_account(account))
        runtime.run(clients.close())
    assert snapshot.is_sftp_enabled and snapshot.in_perimeter
    assert server.total() == 9
    assert server.statuses[200] + server.statuses[404] == 9
    assert (
        server.counts["GET /subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Storage/storageAccounts/{name}"]
        == 1
    )
    assert server.counts["GET /subscriptions/{sub}/providers/Microsoft.Compute/virtualMachines"] == 1


def test_tls_is_verified_against_the_trustme_ca_only() -> None:
    with serving(Estate(build_estate(1)), latency=0.0) as server:
        assert raw(server, "GET", f"{ACCOUNT_PATH}/stbench00000")[0] == 200
        port = int(server.base_url.rsplit(":", 1)[1])
        untrusting = http.client.HTTPSConnection("127.0.0.1", port, context=ssl.create_default_context(), timeout=5)
        with pytest.raises(ssl.SSLCertVerificationError):
            untrusting.request("GET", "/")
        untrusting.close()
        assert raw(server, "GET", f"{ACCOUNT_PATH}/stbench00000")[0] == 200  # a failed handshake harms nobody


def test_latency_is_injected_per_request() -> None:
    with serving(Estate(build_estate(1)), latency=0.08) as server:
        started = time.perf_counter()
        raw(server, "GET", f"{ACCOUNT_PATH}/stbench00000")
        assert time.perf_counter() - started >= 0.08


def test_the_read_bucket_answers_429_with_retry_after_and_always_sends_the_remaining_reads() -> None:
    clock = VirtualClock()  # no time passes between the reads, however slow the handshakes
    bucket = TokenBucket(capacity=3, rate=0.5, clock=clock)
    with serving(Estate(build_estate(1)), latency=0.0, bucket=bucket) as server:
        answers = [raw(server, "GET", f"{ACCOUNT_PATH}/stbench00000") for _ in range(4)]
        tenant = raw(server, "GET", "/providers/Microsoft.Storage/operations")
        graph = raw(
            server,
            "POST",
            "/providers/Microsoft.ResourceGraph/resources?api-version=2021-03-01",
            json.dumps({"query": "resources", "subscriptions": [SUB]}).encode(),
        )
    assert [status for status, _, _ in answers] == [200, 200, 200, 429]
    assert [h[HEADER] for _, h, _ in answers] == ["2", "1", "0", "0"]
    assert answers[-1][1]["retry-after"] == "2"  # one token at 0.5/s
    assert json.loads(answers[-1][2])["error"]["code"] == "TooManyRequests"
    assert "x-ms-ratelimit-remaining-tenant-reads" in tenant[1]  # tenant-level reads: their own bucket
    assert graph[0] == 400 and HEADER not in graph[1]  # queries are not reads; an unknown query is refused
    assert server.throttled == 1


def test_the_graph_quota_answers_429_with_the_quota_headers() -> None:
    body = json.dumps({"query": QUERIES["accounts"], "subscriptions": [SUB]}).encode()
    path = "/providers/Microsoft.ResourceGraph/resources?api-version=2021-03-01"
    clock = VirtualClock()
    with serving(
        Estate(build_estate(3)), latency=0.0, graph_quota=GraphQuota(limit=2, window=5.0, clock=clock)
    ) as server:
        answers = [raw(server, "POST", path, body) for _ in range(2)]
        clock.advance(1.5)
        answers.append(raw(server, "POST", path, body))
        clock.advance(3.5)  # the window has passed
        after = raw(server, "POST", path, body)
    assert [status for status, _, _ in answers] == [200, 200, 429]
    assert [h["x-ms-user-quota-remaining"] for _, h, _ in answers] == ["1", "0", "0"]
    assert [h["x-ms-user-quota-resets-after"] for _, h, _ in answers] == ["00:00:05", "00:00:05", "00:00:04"]
    assert after[0] == 200 and after[1]["x-ms-user-quota-remaining"] == "1"
    assert "retry-after" not in answers[-1][1]
    assert len(json.loads(answers[0][2])["data"]) == 3
    assert server.graph_throttled == 1


def test_the_server_stops_by_itself() -> None:
    server = ArmServer(Estate(build_estate(1)), latency=0.0, max_seconds=0.3).start()
    assert raw(server, "GET", f"{ACCOUNT_PATH}/stbench00000")[0] == 200
    assert server.wait_stopped(timeout=120)  # returns as soon as the server's own timer has stopped it
    with pytest.raises(OSError):
        raw(server, "GET", f"{ACCOUNT_PATH}/stbench00000")
    assert not Path(server.ca_path).exists()  # stop() removed the certificates

    capped = ArmServer(Estate(build_estate(1)), latency=0.0, max_requests=2).start()
    statuses = [raw(capped, "GET", f"{ACCOUNT_PATH}/stbench00000")[0] for _ in range(3)]
    assert statuses == [200, 200, 503]
    capped.stop()  # idempotent after it stopped itself


def test_faults_are_injected_at_the_configured_rates() -> None:
    faults = Faults(server_error=0.3, seed=3)
    with serving(Estate(build_estate(1)), latency=0.0, faults=faults) as server:
        statuses = raw_many(server, f"{ACCOUNT_PATH}/stbench00000", 200)
    assert statuses.count(500) == faults.injected["server_error"]
    assert 0.2 < faults.injected["server_error"] / server.total() < 0.4


def test_path_templates() -> None:
    assert path_template("/subscriptions/x/providers/Microsoft.Compute/virtualMachines?api-version=1") == (
        "/subscriptions/{sub}/providers/Microsoft.Compute/virtualMachines"
    )
    assert path_template(f"{ACCOUNT_PATH}/st1/blobServices/default?api-version=1") == (
        "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Storage/storageAccounts/{name}"
        "/blobServices/default"
    )
    assert (
        path_template("/providers/Microsoft.ResourceGraph/resources") == "/providers/Microsoft.ResourceGraph/resources"
    )


# -- pacing against the bucket, end to end ------------------------------------------------------


class _VirtualPacing(ArmReadPacing):
    """The production pacing policy, sleeping in virtual time and telling the clock when its read is
    on the wire (azure-core links ``next`` at pipeline creation: wrap whatever it links)."""

    def __init__(self, budget: ReadBudget, clock: VirtualClock) -> None:
        self._clock = clock
        super().__init__(budget, sleep=clock.sleep)

    @property  # type: ignore[override]
    def next(self) -> Any:
        return self._next

    @next.setter
    def next(self, policy: Any) -> None:
        self._next = OnTheWire(policy, self._clock)


@pytest.fixture
def virtual_time(monkeypatch: pytest.MonkeyPatch) -> VirtualClock:
    """One virtual clock for the server's bucket, the read budget and the pacing's sleeps: time
    passes only when the pacing waits, so how fast this machine serves the reads cannot matter."""
    clock = VirtualClock()
    monkeypatch.setattr(throttle, "read_pacing_policy", lambda budget: _VirtualPacing(budget, clock))
    return clock


def _burst(server: ArmServer, budget: ReadBudget, accounts: list[str]) -> int:
    clients = live(server, budget=budget)

    async def burst() -> int:
        reader = ArmReader(clients)
        results = await asyncio.gather(*(reader.read_account(a) for a in accounts), return_exceptions=True)
        return sum(isinstance(r, BaseException) for r in results)

    try:
        return runtime.run(burst())
    finally:
        runtime.run(clients.close())


def test_pacing_keeps_a_burst_of_400_reads_from_ever_receiving_a_429(virtual_time: VirtualClock) -> None:
    # ARM's bucket shape (a burst allowance, then a steady refill), time-compressed 4x: capacity
    # 100, 100 reads/s. The budget knows the same rate. Time is virtual (see virtual_time).
    estate = Estate(build_estate(50, in_perimeter_every=1))
    ids = list(estate.ids_of_type("microsoft.storage/storageaccounts"))
    budget = ReadBudget(capacity=100, refill_per_second=100, reserve=10, clock=virtual_time)
    start = virtual_time()
    with serving(estate, latency=0.0, bucket=TokenBucket(capacity=100, rate=100, clock=virtual_time)) as server:
        errors = _burst(server, budget, ids)
    reads = sum(v for k, v in server.counts.items() if k.startswith("GET "))
    assert reads >= 400
    assert server.throttled == 0  # not one 429: the reads slowed down before the bucket ran dry
    assert errors == 0
    stats = budget.stats()
    assert stats.reads == reads and stats.throttled == 0
    assert stats.paced > 0 and len(virtual_time.sleeps) == stats.paced  # pacing did the work: one wait per paced read
    # The reads beyond the free share (capacity - reserve) were spread at the refill rate.
    assert virtual_time() - start >= (reads - (100 - 10)) / 100


def test_when_others_drain_the_bucket_retry_absorbs_the_429s_and_nothing_escapes(virtual_time: VirtualClock) -> None:
    # Another consumer of the same identity empties the bucket first: this process cannot know,
    # so some reads meet a 429; azure-core's retry (the only retry layer) honours Retry-After and
    # the budget holds the whole subscription back meanwhile. In virtual time the bucket stays
    # empty until the budget waits (a real clock refilled it whenever the machine was slow to start
    # the reads, and then nothing was throttled at all).
    estate = Estate(build_estate(25, in_perimeter_every=1))
    ids = list(estate.ids_of_type("microsoft.storage/storageaccounts"))
    bucket = TokenBucket(capacity=60, rate=60, clock=virtual_time)
    while bucket.take(SUB)[0]:
        pass  # the others take every token
    budget = ReadBudget(capacity=60, refill_per_second=60, reserve=6, clock=virtual_time)
    with serving(estate, latency=0.0, bucket=bucket) as server:
        errors = _burst(server, budget, ids)
    assert errors == 0
    assert server.throttled > 0  # it did happen ...
    assert budget.stats().throttled == server.throttled  # ... every one was seen by the budget
    assert server.statuses[200] + server.statuses[404] >= 200


def test_each_client_gets_its_own_policy_sharing_one_budget() -> None:
    budget = ReadBudget()
    clients = LiveClients(parse_cloud("https://127.0.0.1:9", "https://127.0.0.1:9"), budget=budget)
    storage, network = clients.storage(SUB), clients.network(SUB)

    def pacing_of(client: Any) -> ArmReadPacing:
        policies = client._client._pipeline._impl_policies
        return next(p for p in policies if isinstance(p, ArmReadPacing))

    a, b = pacing_of(storage), pacing_of(network)
    assert a is not b and a.budget is b.budget is budget
    assert a.next is not b.next  # each is linked into its own client's pipeline
    runtime.run(clients.close())


# -- the budget, in isolation -------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_budget_is_free_down_to_the_reserve_then_paces_at_the_refill_rate() -> None:
    clock = Clock()
    budget = ReadBudget(capacity=250, refill_per_second=25, reserve=25, clock=clock)
    waits = [budget.acquire(SUB) for _ in range(230)]
    assert waits[:225] == [0.0] * 225
    assert waits[225:] == pytest.approx([0.04, 0.08, 0.12, 0.16, 0.2])  # one refill interval apart
    for _ in range(230):
        budget.release(SUB, round_trip=0.0)  # answered (the refill cannot pass reads still in flight)
    clock.now += 0.5  # 12.5 tokens back: 32.5, so 7 more reads before the reserve
    assert [budget.acquire(SUB) for _ in range(8)] == pytest.approx([0.0] * 7 + [0.02])


def test_budget_trusts_the_server_figure_within_what_is_in_flight() -> None:
    clock = Clock()
    budget = ReadBudget(capacity=250, refill_per_second=25, reserve=25, clock=clock)
    for _ in range(10):
        budget.acquire(SUB)
    budget.release(SUB, remaining=30)  # others used the bucket too: lower than our 240
    assert budget.remaining(SUB) == 30
    budget.release(SUB, remaining=200)  # may predate reads answered since: never raises the estimate
    assert budget.remaining(SUB) == 30
    clock.now += 2.0  # the refill does
    assert budget.remaining(SUB) == 80
    assert budget.acquire(SUB) == 0.0
    assert budget.acquire("other-subscription") == 0.0  # buckets are per subscription


def test_a_stall_with_reads_in_flight_does_not_refill_the_estimate_past_them() -> None:
    # 200 reads are reserved (free: the bucket was full), then the machine stalls for 20 s before
    # they reach ARM (CPU starvation, a GC pause, a suspended instance). ARM's bucket refilled
    # to full meanwhile (it was never drawn), and the 200 now take 200 of its 250 tokens. The
    # estimate may refill during the stall, but only to what those unanswered reads leave:
    # 250 - 200 = 50. Refilling it to 250 lets the next 225 reads go at once, and ARM refuses
    # all but 50 of them.
    clock = Clock()
    arm = TokenBucket(capacity=250, rate=25, clock=clock)
    budget = ReadBudget(capacity=250, refill_per_second=25, reserve=25, clock=clock)
    assert [budget.acquire(SUB) for _ in range(200)] == [0.0] * 200
    clock.now += 20.0  # the stall: nothing sent, nothing answered
    assert all(arm.take(SUB)[0] for _ in range(200))  # the 200 finally reach ARM: 50 left there
    assert budget.remaining(SUB) <= 250 - 200
    # 100 more reads are reserved before any of the 200 is answered; each is sent after its wait.
    start = clock.now
    sends = sorted(start + budget.acquire(SUB) for _ in range(100))
    refused = 0
    for at in sends:
        clock.now = at
        refused += not arm.take(SUB)[0]
    assert refused == 0  # the reads beyond ARM's 50 were paced at the refill rate, none met a 429
    assert sends[-1] - start >= (100 - 25) / 25 - 0.1


def test_a_429_holds_the_whole_subscription_back_for_retry_after() -> None:
    clock = Clock()
    budget = ReadBudget(clock=clock)
    budget.acquire(SUB)
    budget.release(SUB, remaining=0, retry_after=3.0)
    assert budget.acquire(SUB) >= 3.0
    assert budget.stats().throttled == 1


def test_the_reserve_grows_with_the_round_trip_within_bounds() -> None:
    clock = Clock()
    budget = ReadBudget(capacity=250, refill_per_second=25, reserve=25, clock=clock)
    budget.acquire(SUB)
    budget.release(SUB, remaining=249, round_trip=0.4)  # the bucket trails by 0.4 s x 25/s = 10 reads
    waits = [budget.acquire(SUB) for _ in range(215)]
    assert waits[:214] == [0.0] * 214 and waits[214] > 0  # 249 -> 35 free: paced from 35 left, not 25
    budget.release(SUB, round_trip=30.0)  # one very slow answer: the lag counts 2 s at most
    assert budget.acquire(SUB) <= (25 + 25 * 2.0 + 1 - 0) / 25 + 1


def test_budget_keys_and_retry_after() -> None:
    assert budget_key("GET", f"https://management.azure.com{ACCOUNT_PATH}/st1?api-version=1") == SUB
    assert budget_key("GET", "https://management.azure.com/providers/Microsoft.Storage/operations") == TENANT
    assert budget_key("PUT", f"https://management.azure.com{ACCOUNT_PATH}/st1") is None
    assert budget_key("POST", "https://management.azure.com/providers/Microsoft.ResourceGraph/resources") is None
    assert parse_retry_after({"retry-after": "7"}) == 7.0
    assert parse_retry_after({"retry-after-ms": "1500"}) == 1.5
    assert parse_retry_after({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}) == 0.0  # in the past
    assert parse_retry_after({}) is None


