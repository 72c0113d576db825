"""The ``nsp-drift`` command line: the same core as the function app, driven from a shell.

Exit codes: 0 no finding at or above --fail-on; 1 findings at or above it; 2 usage or input error.
Bad input produces one line naming the problem on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from importlib.resources import files
from pathlib import Path
from typing import Any, NoReturn, TextIO

from shared.core.model import Severity

SAMPLES = Path(str(files("shared") / "samples"))  # package data, wherever this module lives
SAMPLE_NAMES = {
    "sample": SAMPLES / "estate.json",
    "sample-changed": SAMPLES / "estate-changed.json",
    "sample-events": SAMPLES / "events.json",
}


class UsageError(Exception):
    """Bad input: printed as one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def _estate_path(value: str) -> Path:
    return SAMPLE_NAMES.get(value, Path(value))


def _build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="nsp-drift", description="Detect NSP drift on Azure Storage accounts.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress and warnings to stderr")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    rules = sub.add_parser("rules", help="print the rule catalogue")
    rules.add_argument("--format", choices=("table", "json", "markdown"), default="table")

    scan = sub.add_parser("scan", help="evaluate every storage account in scope")
    source = scan.add_mutually_exclusive_group(required=True)
    source.add_argument("--estate", metavar="FILE", help="offline estate JSON (or 'sample' for the bundled one)")
    source.add_argument("--subscription", metavar="ID", action="append", help="live scan of a subscription (repeat)")
    scan.add_argument("--format", choices=("table", "json", "jsonl", "sarif"), default="table")
    scan.add_argument("--config", metavar="FILE", help="rules configuration (TOML, YAML or JSON)")
    scan.add_argument("--fail-on", metavar="SEVERITY", default="high", help="exit 1 at or above this (default high)")
    scan.add_argument("--concurrency", type=int, default=8, help="accounts read at once (default 8)")
    scan.add_argument("--state", metavar="PATH", help="record the results as the baseline in this SQLite file")
    scan.add_argument(
        "--cloud",
        metavar="NAME|URL",
        help="with --subscription: AzureCloud, AzureChinaCloud, AzureUSGovernment or a custom ARM endpoint URL "
        "(default: the NSP_DRIFT_CLOUD setting, else AzureCloud)",
    )
    scan.add_argument(
        "--authority-host",
        metavar="URL",
        help="the authority that issues tokens for a custom --cloud URL (default: NSP_DRIFT_AUTHORITY_HOST)",
    )

    replay = sub.add_parser("replay", help="run recorded events through the pipeline against an estate")
    replay.add_argument("events", metavar="EVENTS", help="JSON array of events (either schema), or 'sample'")
    replay.add_argument(
        "--estate", metavar="FILE", help="the estate after the events (default with 'sample': sample-changed)"
    )
    replay.add_argument("--state", metavar="PATH", help="SQLite state holding the baseline (default: a fresh one)")
    replay.add_argument(
        "--baseline",
        metavar="FILE",
        help="estate to record as the baseline first (default with 'sample': sample)",
    )
    replay.add_argument("--format", choices=("table", "jsonl"), default="table")
    replay.add_argument("--config", metavar="FILE", help="rules configuration (TOML, YAML or JSON)")
    replay.add_argument("--window", type=float, default=30.0, help="coalescing window in seconds (default 30)")
    replay.add_argument(
        "--destinations",
        metavar="FILE",
        help="deliver transitions to these destinations (JSON array; default: the NSP_DRIFT_DESTINATIONS setting)",
    )

    status = sub.add_parser(
        "status", help="what is open now: findings, deliveries, failing or poisoned targets, the last sweeps"
    )
    status.add_argument("--format", choices=("table", "json"), default="table")
    status.add_argument(
        "--state",
        metavar="PATH",
        help="the SQLite state file (default: the app's Table storage through the AzureWebJobsStorage settings)",
    )
    return parser


def _rules_config(path: str | None) -> Any:
    from shared.core.config import ConfigError, RulesConfig, load_config_file

    if not path:
        return RulesConfig()
    try:
        return load_config_file(path)
    except ConfigError as exc:
        raise UsageError(str(exc)) from None


class _Progress:
    """A one-line progress bar on stderr (live scans only: an estate scan is instant)."""

    def __init__(self, total: int, stream: TextIO) -> None:
        self.total, self.done, self.stream = total, 0, stream

    def __call__(self, _: object) -> None:
        self.done += 1
        width = 30
        filled = width * self.done // max(self.total, 1)
        self.stream.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total} accounts")
        if self.done == self.total:
            self.stream.write("\n")
        self.stream.flush()


def _cloud(args: argparse.Namespace) -> Any:
    """The cloud of a live scan: the options, else the settings (shared.adapters.cloud)."""
    import os

    from shared.adapters.cloud import AUTHORITY_SETTING, CLOUD_SETTING, CloudError, parse_cloud

    name = args.cloud if args.cloud is not None else os.environ.get(CLOUD_SETTING)
    authority = args.authority_host if args.authority_host is not None else os.environ.get(AUTHORITY_SETTING)
    names = (
        "--cloud" if args.cloud is not None else CLOUD_SETTING,
        "--authority-host" if args.authority_host is not None else f"--authority-host (or {AUTHORITY_SETTING})",
    )
    try:
        return parse_cloud(name, authority, names)
    except CloudError as exc:
        raise UsageError(str(exc)) from None


def _cmd_scan(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from shared.adapters import runtime
    from shared.adapters.estate import EstateError
    from shared.core import output
    from shared.service.scan import ScopeError, accounts_in_scope, scan

    try:
        fail_on = Severity.parse(args.fail_on)
    except ValueError as exc:
        raise UsageError(f"--fail-on: {exc}") from None
    if args.concurrency < 1:
        raise UsageError("--concurrency must be at least 1")
    config = _rules_config(args.config)
    today = datetime.now(UTC).date()
    if args.estate and (args.cloud or args.authority_host):
        raise UsageError("--cloud and --authority-host apply to --subscription scans, not to an --estate file")

    if args.estate:
        from shared.wiring import EstateClients, load_estate

        try:
            estate = load_estate(_estate_path(args.estate))
        except EstateError as exc:
            raise UsageError(str(exc)) from None
        clients: Any = EstateClients(estate)
        subscriptions = sorted(estate.subscriptions)
        progress = None
    else:
        from shared.wiring import LiveClients

        clients = LiveClients(_cloud(args))
        subscriptions = list(args.subscription)
        progress = True

    async def run() -> Any:
        from shared.wiring import arm_reader

        reader = arm_reader(clients)
        try:
            ids = await accounts_in_scope(reader, subscriptions)
            on_done = _Progress(len(ids), err) if progress and ids else None
            return await scan(reader, ids, config, today, args.concurrency, on_done)
        finally:
            await clients.close()

    try:
        results = runtime.run(run())
    except ScopeError as exc:
        raise UsageError(str(exc)) from None

    render = {
        "table": output.render_table,
        "json": output.render_json,
        "jsonl": output.render_jsonl,
        "sarif": output.render_sarif,
    }[args.format]
    if args.state:
        from shared.entrypoints.replay import record_scan

        record_scan(args.state, results, config)

    text = render(results)
    out.write(text if text.endswith("\n") else text + "\n")
    failing = [f for f in output.all_findings(results) if f.severity >= fail_on]
    return 1 if failing else 0


def main(argv: Sequence[str] | None = None, out: TextIO | None = None, err: TextIO | None = None) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    try:
        args = _build_parser().parse_args(argv)
        logging.basicConfig(
            level=logging.INFO if args.verbose else logging.ERROR,
            stream=err,
            format="%(levelname)s %(name)s: %(message)s",
        )
        if args.command == "rules":
            from shared.core.output import render_rules

            out.write(render_rules(args.format))
            return 0
        if args.command == "scan":
            return _cmd_scan(args, out, err)
        extra = _extra_commands()
        if args.command in extra:
            return int(extra[args.command](args, out, err))
        raise UsageError(f"unknown command {args.command!r}")
    except UsageError as exc:
        err.write(f"nsp-drift: error: {exc}\n")
        return 2
    except KeyboardInterrupt:
        err.write("nsp-drift: interrupted\n")
        return 130


def _cmd_replay(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from shared.adapters.estate import EstateError
    from shared.core.events import EventError
    from shared.entrypoints.replay import ReplayInputError, render_transitions, replay

    config = _rules_config(args.config)
    events_path = _estate_path("sample-events" if args.events == "sample" else args.events)
    estate = args.estate or ("sample-changed" if args.events == "sample" else None)
    baseline = args.baseline or ("sample" if args.events == "sample" and not args.state else None)
    if estate is None:
        raise UsageError("replay: --estate FILE is required (the estate after the events)")
    if args.window < 0:
        raise UsageError("--window must not be negative")
    import os

    from shared.adapters.notify.destinations import DestinationError, load_destinations

    env = dict(os.environ)
    if args.destinations:
        env["NSP_DRIFT_DESTINATIONS"] = args.destinations
    try:
        destinations = load_destinations(env)
    except DestinationError as exc:
        raise UsageError(str(exc)) from None
    try:
        result = replay(
            events_path,
            _estate_path(estate),
            state_path=args.state,
            baseline_path=_estate_path(baseline) if baseline else None,
            config=config,
            window=args.window,
            destinations=destinations,
            env=env,
        )
    except (ReplayInputError, EstateError, EventError, DestinationError) as exc:
        raise UsageError(str(exc)) from None
    for problem in result.errors:
        err.write(f"nsp-drift: skipped event: {problem}\n")
    out.write(render_transitions(result, args.format))
    return 0


def _cmd_status(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """Read the state (a SQLite file, or the app's Table storage), let the sweep heartbeat look
    (its alert goes to the configured destinations), print what is open now."""
    import json
    import os
    import sqlite3
    import time

    from shared.adapters.notify.destinations import DestinationError
    from shared.adapters.state.codec import CodecError
    from shared.core.state.base import StoreUnavailable
    from shared.entrypoints.app import delivery_sink, sweep_intervals
    from shared.entrypoints.settings import SettingsError, load_settings, sweep_schedules
    from shared.service.status import read_status, render_table, status_to_dict

    store: Any
    try:
        if args.state:
            from shared.adapters.state.sqlite_store import SqliteStateStore

            if not Path(args.state).is_file():
                raise UsageError(f"--state: no state file at {args.state}")
            store = SqliteStateStore(args.state)
            schedules = sweep_schedules(os.environ)
        else:
            store, schedules = _app_store(load_settings())
        try:
            status = read_status(store, sweep_intervals(schedules), time.time(), sink=delivery_sink(store))
        finally:
            store.close()
    except (SettingsError, DestinationError) as exc:
        raise UsageError(str(exc)) from None
    except StoreUnavailable as exc:
        raise UsageError(f"state store unavailable: {exc}") from None
    except CodecError as exc:
        raise UsageError(f"the state store holds a row nsp-drift cannot read: {exc}") from None
    except sqlite3.DatabaseError as exc:
        raise UsageError(f"--state: {args.state} is not an nsp-drift state file ({exc})") from None
    if args.format == "json":
        out.write(json.dumps(status_to_dict(status), indent=2) + "\n")
    else:
        out.write(render_table(status))
    return 0


def _app_store(settings: Any) -> tuple[Any, Any]:
    """The app's Table storage as the function app finds it (AzureWebJobsStorage, or its
    identity-based __tableServiceUri), and the sweeps' schedule settings."""
    from shared import wiring

    store, _ = wiring.table_ports(
        settings.storage_connection,
        settings.table_service_uri,
        settings.queue_service_uri,
        settings.table_prefix,
        settings.cloud,
    )
    return store, settings.sweep_schedules


def _extra_commands() -> dict[str, Any]:
    return {"replay": _cmd_replay, "status": _cmd_status}


if __name__ == "__main__":
    raise SystemExit(main())
