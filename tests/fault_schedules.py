"""A seeded fault-schedule harness: several logical workers over one store, stepped one port call
at a time (issue 11, "What to build").

How it runs. Every job (an Event Grid delivery to ``intake``, a queue message to
``evaluate_window``, a timer ``sweep``, a ``deliver`` run) is the real pipeline or dispatcher on a
thread of its own, built over *gated* ports: each call to the store, the queue, ARM (the reader)
or a receiver first parks the job at a checkpoint. The scheduler (one seeded ``random.Random``)
lets exactly one job run from one checkpoint to the next, so a seed fixes the interleaving and a
failure replays. At any checkpoint the scheduler may instead kill the job: ``Killed`` (a
BaseException the pipeline does not catch) is raised there, so nothing of the job runs any more,
the call it was about to make does not happen, and its leases lapse by themselves (the clock is
fake and moves when the scheduler says).

Faults: ARM answers 429/500 (the offline estate transport, through the real SDK clients, which
do not retry here) and reads are slow (a read parks after it has read, while the world and other
jobs move on); receivers answer 429/500, time out for real, or process a send whose answer is
then lost (what a timeout after the POST looks like); Event Grid re-delivers and reorders
events; queue messages of killed or failed invocations come back; the world toggles SFTP on and
off, and deletes and recreates an account (findings that recur). On Table storage (Azurite) a
schedule may restart Azurite in the middle of it.

Settle points: now and then, and at the end, faults stop and the scheduler runs everything that is
owed (events, queue messages, a sweep, dispatch runs, hours of fake time) until nothing is
pending. The world state at a settle point has held for longer than a window, so it must have been
observed and delivered. The oracle (``check``) then holds the receivers to it.
"""

from __future__ import annotations

import asyncio
import json
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from shared.adapters.estate import Estate, Reply
from shared.adapters.notify import http
from shared.adapters.notify.destinations import build_senders, parse_destinations
from shared.core.changes import Target
from shared.core.config import RulesConfig
from shared.core.notify.base import DeliveryStatus, Outcome
from shared.core.targeting import Scope
from shared.service.dispatch import Dispatcher, OutboxSink
from shared.service.pipeline import Pipeline, Readers
from shared.wiring import EstateClients, readers_for
from tests.estate_builder import member, merge, perimeter
from tests.fakes import FakeGitHub, FakeServer
from tests.sample_estate import EG, SUB, account_id, sample_event

RULE = "sftp-enabled"
WINDOW = 30.0
LEASE = 660.0
VISIBILITY = 600.0  # a message whose invocation vanished comes back after functionTimeout
MAX_DEQUEUE = 5  # then it goes to the poison queue (the sweep recovers its window)
GH_TOKEN = "ghp_schedules0123456789abcdefghijklmnopqrs"
HOOK_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
CLIENT_TIMEOUT = 0.3  # the senders' timeout; a "slow" receiver answers after 0.5 s
STEP_TIMEOUT = 120.0  # wall seconds a job may take between two checkpoints before the harness gives up


class Killed(BaseException):
    """The worker vanished at this point (SIGKILL, host recycle, functionTimeout)."""


class Violation(AssertionError):
    pass


# -- jobs stepped one checkpoint at a time -----------------------------------------------------------


class Job:
    def __init__(self, kind: str, body: Callable[[Job], Any], cond: threading.Condition) -> None:
        self.kind = kind
        self.body = body
        self.cond = cond
        self.label = "start"
        self.go = False
        self.parked = False
        self.done = False
        self.kill = False
        self.killed = False
        self.error: BaseException | None = None
        self.result: Any = None
        self.on_kill: Callable[[], None] | None = None  # what the platform does when the worker vanishes
        self.thread = threading.Thread(target=self._run, daemon=True, name=f"job-{kind}")

    def start(self) -> None:
        self.thread.start()
        with self.cond:
            if not self.cond.wait_for(lambda: self.parked or self.done, STEP_TIMEOUT):
                raise Violation(f"{self.kind} job did not reach its first checkpoint")

    def _run(self) -> None:
        try:
            self.checkpoint("start")
            self.result = self.body(self)
        except Killed:
            self.killed = True
            if self.on_kill is not None:
                self.on_kill()
        except BaseException as exc:  # the invocation failed: the runtime retries it
            self.error = exc
        finally:
            with self.cond:
                self.done = True
                self.cond.notify_all()

    def checkpoint(self, label: str) -> None:
        with self.cond:
            self.label = label
            self.parked = True
            self.cond.notify_all()
            self.cond.wait_for(lambda: self.go)
            self.go = False
            self.parked = False
            if self.kill:
                raise Killed(label)

    def step(self, kill: bool = False) -> None:
        with self.cond:
            self.kill = kill
            self.go = True
            self.cond.notify_all()
            if not self.cond.wait_for(lambda: (self.parked and not self.go) or self.done, STEP_TIMEOUT):
                raise Violation(f"{self.kind} job stuck after {self.label}")


class Gated:
    """A port whose every call parks the job first (sync and async methods alike)."""

    def __init__(self, inner: Any, job: Job, name: str, after: Callable[[str, Any, Any], None] | None = None) -> None:
        self._inner, self._job, self._name, self._after = inner, job, name, after

    def __getattr__(self, attr: str) -> Any:
        real = getattr(self._inner, attr)
        if not callable(real) or attr.startswith("_") or attr in {"close", "forget_cached_lookups"}:
            return real
        job, label, after = self._job, f"{self._name}.{attr}", self._after
        if asyncio.iscoroutinefunction(real):

            async def call_async(*args: Any, **kwargs: Any) -> Any:
                job.checkpoint(label)
                result = await real(*args, **kwargs)
                job.checkpoint(label + ":answered")  # a slow answer: the world moves meanwhile
                return result

            return call_async

        def call(*args: Any, **kwargs: Any) -> Any:
            job.checkpoint(label)
            result = real(*args, **kwargs)
            if after is not None:
                after(attr, args, result)
            return result

        return call


# -- the world: ARM as it changes, with faults ----------------------------------------------------------


class World:
    """Accounts whose SFTP is on or off, or which are gone; ARM answers from the current state."""

    def __init__(self, names: list[str], rng: random.Random) -> None:
        self.names = names
        self.state = dict.fromkeys(names, "off")
        self.rng = rng
        self.arm_faults = 0.0
        self.injected: Counter[str] = Counter()
        self._estates: dict[tuple[str, ...], Estate] = {}
        self.history: list[tuple[float, str, str]] = []  # (time, account, state)

    def estate(self) -> Estate:
        key = tuple(self.state[n] for n in self.names)
        if key not in self._estates:
            present = [n for n in self.names if self.state[n] != "gone"]
            parts = [member(n, isSftpEnabled=self.state[n] == "on") for n in present]
            self._estates[key] = Estate(merge(perimeter(*present), *parts))
        return self._estates[key]

    def answer(self, method: str, url: str, body: bytes | None = None) -> Reply:
        if self.arm_faults and self.rng.random() < self.arm_faults:
            status = self.rng.choice((429, 500, 503))
            self.injected[f"arm-{status}"] += 1
            headers = {"Content-Type": "application/json", **({"Retry-After": "1"} if status == 429 else {})}
            payload = json.dumps({"error": {"code": "Injected", "message": f"injected {status}"}}).encode()
            return Reply(status, payload, headers)
        estate = self.estate()
        return estate.answer(method, url, body) if body is not None else estate.answer(method, url)


# -- receivers ---------------------------------------------------------------------------------------------


class Receiver(FakeServer):
    """A capturing receiver; ``answers`` (set by the harness just before a send) come first."""

    def handle(self, request: Any) -> Any:
        return 200, {}, b"{}"


@dataclass(eq=False)  # each message is itself: two for one target are two messages
class Message:
    target: Target
    visible_at: float
    dequeued: int = 0


@dataclass
class Stats:
    schedules: int = 0
    steps: int = 0
    jobs: Counter[str] = field(default_factory=Counter)
    kills: int = 0
    failed_invocations: int = 0
    faults: Counter[str] = field(default_factory=Counter)
    settles: int = 0
    mutations: int = 0
    deliveries: int = 0
    duplicates_by_id: int = 0  # re-sends a receiver dropped by webhook-id (ambiguous sends)
    azurite_restarts: int = 0
    errors: Counter[str] = field(default_factory=Counter)  # failed invocations by exception type

    def add(self, other: Stats) -> None:
        for name in ("schedules", "steps", "kills", "failed_invocations", "settles", "mutations", "deliveries"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.duplicates_by_id += other.duplicates_by_id
        self.azurite_restarts += other.azurite_restarts
        self.jobs.update(other.jobs)
        self.errors.update(other.errors)
        self.faults.update(other.faults)


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self.now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.now += seconds


@contextmanager
def receivers() -> Iterator[dict[str, FakeServer]]:
    servers: dict[str, FakeServer] = {"siem": Receiver(), "secops": Receiver(), "issues": FakeGitHub(GH_TOKEN)}
    for server in servers.values():
        server.start()
    try:
        yield servers
    finally:
        for server in servers.values():
            server.stop()


def reset(servers: Mapping[str, FakeServer]) -> None:
    for server in servers.values():
        server.received.clear()
        server.script.answers.clear()
    github: Any = servers["issues"]
    github.issues.clear()


class Schedule:
    """One seeded schedule over a fresh store (``make_store``) and the shared receivers."""

    def __init__(
        self,
        seed: int,
        store: Any,
        servers: Mapping[str, FakeServer],
        steps: int = 300,
        workers: int = 3,
        restart: tuple[Callable[[], None], Callable[[], None]] | None = None,
    ) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.store = store
        self.servers = servers
        self.steps = steps
        self.workers = workers
        self.restart = restart
        self.clock = Clock()
        self.cond = threading.Condition()
        self.world = World([f"stsched{n:02d}" for n in range(1, 3)], random.Random(seed * 7919 + 1))
        self.clients = EstateClients(self.world)  # type: ignore[arg-type]  # an estate whose answers change
        self.events: list[dict[str, Any]] = []  # Event Grid: not yet acknowledged (delivered again until then)
        self.queue: list[Message] = []
        self.jobs: list[Job] = []
        self.stats = Stats(schedules=1)
        self.event_number = 0
        self.send_faults = 0.0
        self.commits: list[tuple[str, bool]] = []  # (account, sftp finding open) per committed account write
        env = {
            "HOOK_URL": f"{servers['siem'].url}/hook",
            "HOOK_SECRET": HOOK_SECRET,
            "TEAMS_URL": f"{servers['secops'].url}/workflows/abc/triggers/manual/paths/invoke?sig=s",
            "GH_TOKEN": GH_TOKEN,
        }
        self.routes = parse_destinations(
            [
                {"name": "siem", "type": "webhook", "url_setting": "HOOK_URL", "secret_setting": "HOOK_SECRET"},
                {"name": "secops", "type": "teams", "url_setting": "TEAMS_URL"},
                {
                    "name": "issues",
                    "type": "github",
                    "repository": "contoso/platform-security",
                    "token_setting": "GH_TOKEN",
                    "api_url": servers["issues"].url,
                },
            ]
        )
        retry = http.RetrySettings(attempts=1, max_total_seconds=2, initial=0.01, max_wait=0.02)
        self.senders, self.digests = build_senders(self.routes, env, retry=retry, timeout=CLIENT_TIMEOUT)

    # -- ports of one job --------------------------------------------------------------------------------
    def _after_store(self, attr: str, args: Any, result: Any) -> None:
        if attr == "put_account":
            state = args[0]
            is_open = any(f.get("rule") == RULE or str(f.get("key", "")).startswith(RULE) for f in state.findings)
            self.commits.append((state.account_id.lower(), is_open))

    def _enqueue(self, job: Job) -> Callable[[Target, float], None]:
        def send(target: Target, delay: float) -> None:
            job.checkpoint("queue.send")
            self.queue.append(Message(target, self.clock() + delay))

        return send

    def pipeline(self, job: Job) -> Pipeline:
        store = Gated(self.store, job, "store", self._after_store)
        return Pipeline(
            store=store,  # type: ignore[arg-type]
            outbox=OutboxSink(store, self.routes, clock=self.clock),  # type: ignore[arg-type]
            enqueue=self._enqueue(job),
            config=RulesConfig(),
            scope=Scope((SUB,)),
            window_seconds=WINDOW,
            clock=self.clock,
            lease_seconds=LEASE,
            concurrency=1,
        )

    def readers(self, job: Job) -> Readers:
        real = readers_for(self.clients)
        return Readers(
            accounts=Gated(real.accounts, job, "arm"),  # type: ignore[arg-type]
            targets=Gated(real.targets, job, "arm"),  # type: ignore[arg-type]
            summaries=Gated(real.summaries, job, "graph"),  # type: ignore[arg-type]
        )

    def _sender(self, name: str, sender: Any, job: Job) -> Any:
        harness = self

        class Faulty:
            def __init__(self) -> None:
                self.name = name

            def send(self, delivery: Any, tasks: Any) -> Outcome:
                job.checkpoint(f"send.{name}")
                return harness._send(name, lambda: sender.send(delivery, tasks))

        return Faulty()

    def _send(self, name: str, send: Callable[[], Outcome]) -> Outcome:
        server = self.servers[name]
        if self.send_faults and self.rng.random() < self.send_faults:
            fault = self.rng.choices(("429", "500", "lost", "timeout"), (3, 3, 3, 0.4))[0]
            self.stats.faults[f"{name}-{fault}"] += 1
            if fault == "429":
                server.script.then(429, {"Retry-After": str(self.rng.choice((1, 30, 120)))})
            elif fault == "500":
                server.script.then(500)
            elif fault == "timeout":  # the receiver answers after the client gave up
                server.script.then(200, body=b"{}", delay=CLIENT_TIMEOUT + 0.2)
            else:  # processed, but the answer never arrives
                outcome = send()
                server.script.answers.clear()
                return Outcome(ok=False, retryable=True, error="timed out (answer lost)") if outcome.ok else outcome
        outcome = send()
        server.script.answers.clear()  # a scripted answer the send did not use is not left for the next
        return outcome

    def dispatcher(self, job: Job) -> Dispatcher:
        senders = {name: self._sender(name, s, job) for name, s in self.senders.items()}
        def digest(name: str, send: Any) -> Any:
            def post(items: Any) -> Outcome:
                job.checkpoint(f"digest.{name}")
                return self._send(name, lambda: send(items))

            return post

        digests = {name: digest(name, send) for name, send in self.digests.items()}
        store = Gated(self.store, job, "outbox")
        return Dispatcher(store, senders, digests, clock=self.clock, budget_seconds=120.0)  # type: ignore[arg-type]

    # -- jobs ----------------------------------------------------------------------------------------------
    def _run_async(self, coro: Any) -> Any:
        return asyncio.run(coro)

    def job_intake(self) -> Job | None:
        if not self.events:
            return None
        batch = self.rng.sample(self.events, min(len(self.events), self.rng.randint(1, 3)))  # any order

        def body(job: Job) -> Any:
            report = self.pipeline(job).intake(batch)
            job.checkpoint("eventgrid.ack")
            for event in batch:  # acknowledged; Event Grid may still deliver it again
                if event in self.events and self.rng.random() > 0.2:
                    self.events.remove(event)
            return report

        return Job("intake", body, self.cond)

    def job_evaluate(self) -> Job | None:
        now = self.clock()
        visible = [m for m in self.queue if m.visible_at <= now]
        if not visible:
            return None
        message = self.rng.choice(visible)
        message.dequeued += 1
        message.visible_at = float("inf")  # invisible while the invocation runs (the host renews it)

        def drop() -> None:
            if message in self.queue:
                self.queue.remove(message)

        def body(job: Job) -> Any:
            try:
                result = self._run_async(self.pipeline(job).evaluate_window(message.target, self.readers(job)))
            except Killed:
                raise
            except BaseException:
                message.visible_at = self.clock()  # the runtime retries a failed invocation
                if message.dequeued >= MAX_DEQUEUE:
                    drop()  # to the poison queue (the sweep re-queues its window)
                raise
            job.checkpoint("queue.delete")
            drop()
            return result

        def vanished() -> None:  # nobody renews it any more: it comes back after the visibility timeout
            message.visible_at = self.clock() + VISIBILITY

        job = Job("evaluate", body, self.cond)
        job.on_kill = vanished
        return job

    def job_sweep(self) -> Job:
        use_graph = self.rng.random() < 0.5

        def body(job: Job) -> Any:
            return self._run_async(self.pipeline(job).sweep([SUB], self.readers(job), use_graph=use_graph))

        return Job("sweep-graph" if use_graph else "sweep", body, self.cond)

    def job_deliver(self) -> Job:
        digests = self.rng.random() < 0.3

        def body(job: Job) -> Any:
            return self.dispatcher(job).dispatch_due(include_digests=digests)

        return Job("deliver", body, self.cond)

    # -- the world moves ----------------------------------------------------------------------------
    def mutate(self) -> None:
        name = self.rng.choice(self.world.names)
        current = self.world.state[name]
        if current == "gone":
            new = self.rng.choice(("on", "off"))
        elif self.rng.random() < 0.15:
            new = "gone"
        else:
            new = "off" if current == "on" else "on"
        self.world.state[name] = new
        self.world.history.append((self.clock(), name, new))
        self.event_number += 1
        kind = "delete" if new == "gone" else "write"
        template = EG + ("resource_delete_success.json" if kind == "delete" else "resource_write_success.json")
        when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.clock()))
        operation = f"Microsoft.Storage/storageAccounts/{kind}"
        number = self.event_number
        event = sample_event(
            template, f"sched-{self.seed}-{number}", account_id(name), operation, "alice", when, f"c-{number}"
        )
        self.events.append(event)
        self.stats.mutations += 1

    # -- scheduling ---------------------------------------------------------------------------------------
    def _launch(self, job: Job | None) -> None:
        if job is None:
            return
        self.stats.jobs[job.kind] += 1
        self.jobs.append(job)
        job.start()
        self._reap()

    def _reap(self) -> None:
        for job in [j for j in self.jobs if j.done]:
            self.jobs.remove(job)
            if job.killed:
                self.stats.kills += 1
            elif job.error is not None:
                self.stats.failed_invocations += 1
                self.stats.errors[f"{job.kind}: {type(job.error).__name__}"] += 1
                if isinstance(job.error, Violation | AssertionError):
                    raise job.error

    def _step_one(self, kill_rate: float) -> None:
        weights = [0.25 if j.label.endswith(":answered") else 1.0 for j in self.jobs]  # slow reads
        job = self.rng.choices(self.jobs, weights)[0]
        job.step(kill=self.rng.random() < kill_rate)
        self.stats.steps += 1
        self._reap()

    def _new_job(self) -> Job | None:
        choice = self.rng.random()
        if choice < 0.3:
            return self.job_intake()
        if choice < 0.65:
            return self.job_evaluate()
        if choice < 0.9:
            return self.job_deliver()
        return self.job_sweep()

    def _finish_jobs(self, kill_rate: float = 0.0) -> None:
        while self.jobs:
            self._step_one(kill_rate)

    def run(self) -> Stats:
        self.world.arm_faults = 0.02
        self.send_faults = 0.25
        restart_at = self.rng.randrange(self.steps) if self.restart is not None else -1
        for number in range(self.steps):
            if self.rng.random() < 0.1:
                self.mutate()
            roll = self.rng.random()
            if roll < 0.3:
                self.clock.advance(self.rng.uniform(0, 25))
            elif roll < 0.33:
                self.clock.advance(self.rng.choice((LEASE + 1, 3600.0)))  # leases lapse, back-offs end
            if len(self.jobs) < self.workers and (not self.jobs or self.rng.random() < 0.4):
                self._launch(self._new_job())
            if self.jobs:
                self._step_one(kill_rate=0.015)
            if number == restart_at and self.restart is not None:
                self._azurite_restart()
            if self.rng.random() < 0.006:
                self.settle()
        self.settle()
        self.world.injected.update(self.stats.faults)
        self.stats.faults = self.world.injected
        return self.stats

    def _azurite_restart(self) -> None:
        """Azurite goes away under the running jobs (their calls fail; the runtime retries them),
        then comes back with its data."""
        assert self.restart is not None
        stop, start = self.restart
        self.stats.azurite_restarts += 1
        stop()
        try:
            for _ in range(2):  # jobs go on while it is down: their calls fail
                if self.jobs:
                    self._step_one(kill_rate=0.0)
        finally:
            start()

    # -- settle, then the oracle --------------------------------------------------------------------
    def _run_to_end(self, job: Job | None) -> None:
        if job is None:
            return
        self._launch(job)
        self._finish_jobs()

    def settle(self) -> None:
        """Faults stop; everything owed runs, hours of fake time pass; nothing may remain pending."""
        self._finish_jobs(kill_rate=0.04)
        arm, send = self.world.arm_faults, self.send_faults
        self.world.arm_faults = self.send_faults = 0.0
        self.stats.settles += 1
        swept = False
        for _ in range(60):
            while self.events:
                self._run_to_end(self.job_intake())
            self.clock.advance(WINDOW + 1)
            if not swept:
                self._run_to_end(self.job_sweep())
                swept = True
            while (job := self.job_evaluate()) is not None:
                self._run_to_end(job)
            self._run_to_end(self.job_deliver())
            self._run_to_end(self.job_deliver()) if self.rng.random() < 0.5 else None
            self.clock.advance(3600.0)
            if self._quiet():
                break
        else:
            raise Violation(f"seed {self.seed}: not settled: {self._owed()}")
        self._run_to_end(self.job_deliver())  # the digests too
        self.check()
        self.world.arm_faults, self.send_faults = arm, send

    def _owed(self) -> dict[str, int]:
        return {
            "events": len(self.events),
            "messages": len(self.queue),
            "windows": len(self.store.overdue_pending(1e18, 0.0)) + len(self.store.failing_pending()),
            "pending deliveries": self.store.count_deliveries(DeliveryStatus.PENDING),
        }

    def _quiet(self) -> bool:
        return not any(self._owed().values())

    def check(self) -> None:
        """The oracle, after a settle (the current world state has held for longer than a window)."""
        seed = self.seed
        failed = self.store.count_deliveries(DeliveryStatus.FAILED)
        if failed:
            raise Violation(f"seed {seed}: {failed} delivery(ies) failed for good")
        # Nothing pending without a lease or a scheduled retry: settled means nothing pending at all.
        if not self._quiet():
            raise Violation(f"seed {seed}: still owed after settling: {self._owed()}")
        opened = {name: 0 for name in self.world.names}
        for account, is_open in _changes(self.commits):
            opened[account.rsplit("/", 1)[-1]] += int(is_open)
        hooks = self._webhook_sequences()
        cards = self._card_sequences()
        github: Any = self.servers["issues"]
        for name in self.world.names:
            is_open = self.world.state[name] == "on"
            stored = self.store.get_account(account_id(name))
            stored_open = stored is not None and any(f.get("rule") == RULE for f in stored.value.findings)
            if stored_open != is_open:
                raise Violation(f"seed {seed}: {name} is {self.world.state[name]} but stored open={stored_open}")
            sequence = hooks.get(name, [])
            expected: list[tuple[str, int]] = []
            for n in range(1, opened[name] + 1):
                expected += [("opened", n), ("resolved", n)]
            if is_open:
                expected = expected[:-1]
            if sequence != expected:
                raise Violation(f"seed {seed}: webhook {name}: received {sequence}, expected {expected}")
            if cards.get(name, []) != [kind for kind, _ in expected]:
                raise Violation(f"seed {seed}: teams {name}: received {cards.get(name)}, expected {expected}")
            issues = [i for i in github.issues.values() if name in json.dumps(i) and "SFTP" in json.dumps(i)]
            if opened[name] and (len(issues) != 1 or (issues[0]["state"] == "open") != is_open):
                states = [i["state"] for i in issues]
                raise Violation(f"seed {seed}: github {name}: issues {states}, finding open={is_open}")
        self.stats.deliveries = sum(len(s) for s in hooks.values())

    def _webhook_sequences(self) -> dict[str, list[tuple[str, int]]]:
        """Per account, what the signed-webhook receiver got, each webhook-id once (its dedupe), in
        the order first received; a re-sent id must carry the same event."""
        seen: dict[str, bytes] = {}
        out: dict[str, list[tuple[str, int]]] = {}
        duplicates = 0
        for request in self.servers["siem"].received:
            event = request.json()
            data = event.get("data", {})
            msg_id = request.headers.get("webhook-id", "")
            if event.get("type", "").endswith("digest"):
                raise Violation(f"seed {self.seed}: an unexpected digest")
            if data.get("rule") != RULE:
                continue
            body = json.dumps(data, sort_keys=True).encode()
            if msg_id in seen:
                duplicates += 1
                if seen[msg_id] != body:
                    raise Violation(f"seed {self.seed}: webhook-id {msg_id} re-used for another event")
                continue
            seen[msg_id] = body
            name = str(data["resource"]).rsplit("/", 1)[-1]
            out.setdefault(name, []).append((str(data["transition"]), int(data["occurrence"])))
        self.stats.duplicates_by_id = duplicates
        return out

    def _card_sequences(self) -> dict[str, list[str]]:
        """Per account, the Teams cards (no dedupe key: an ambiguous send may repeat a card, right
        after itself since a later transition of the finding waits for it)."""
        out: dict[str, list[str]] = {}
        for request in self.servers["secops"].received:
            text = request.body.decode()
            if "SFTP" not in text:
                continue
            for name in self.world.names:
                if name in text:
                    kind = "resolved" if "RESOLVED" in text else "opened"
                    cards = out.setdefault(name, [])
                    if not cards or cards[-1] != kind:
                        cards.append(kind)
        return out


def _changes(commits: list[tuple[str, bool]]) -> list[tuple[str, bool]]:
    """The committed observations of the finding, compressed to its changes (closed -> open ...)."""
    last: dict[str, bool] = {}
    out = []
    for account, is_open in commits:
        if last.get(account, False) != is_open:
            out.append((account, is_open))
        last[account] = is_open
    return out
