"""App settings, read and validated in one place (never at import time).

A bad setting raises SettingsError naming it; the function app logs that one line and the
functions still index (the error surfaces on first use, not at import).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from shared.adapters.cloud import PUBLIC, Cloud, CloudError, cloud_from_env
from shared.core.config import ConfigError, RulesConfig, config_from_settings
from shared.core.membership import VERIFY_SWEEPS

_GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_TABLE_PREFIX = re.compile(r"^[A-Za-z][A-Za-z0-9]{0,40}$")

# Every setting the code reads, with its meaning (README and infra are checked against this).
DOCUMENTED: dict[str, str] = {
    "AzureWebJobsStorage": "Storage for the Functions host, the evaluation queue and the state tables "
    "(UseDevelopmentStorage=true with Azurite; identity-based: AzureWebJobsStorage__queueServiceUri/__tableServiceUri)",
    "NSP_DRIFT_SUBSCRIPTIONS": "Comma-separated subscription ids in scope "
    "(events from others are dropped; the sweep lists these)",
    "NSP_DRIFT_COALESCE_SECONDS": "Coalescing window per target in seconds (default 30, 0-600)",
    "NSP_DRIFT_DISPATCH_BUDGET_SECONDS": "Time budget of one delivery run in seconds (default 120, 10-240): after it a "
    "run takes no new delivery and leaves the rest to the next run, so an invocation ends well inside functionTimeout",
    "NSP_DRIFT_INVOCATION_BUDGET_SECONDS": "Time budget of one evaluation or sweep invocation in seconds (default "
    "120, 10-480, well under host.json functionTimeout of 600): a perimeter change and the sweeps fan out over the "
    "evaluation queue in batches, and work an invocation cannot finish inside it is re-queued, never dropped",
    "NSP_DRIFT_MEMBERSHIP_VERIFY_SWEEPS": "The full ARM sweep reads the NSP configuration of every listed account "
    "within this many full sweeps (default 11, 1-31): each sweep verifies a rotating 1/k slice of the accounts not "
    "otherwise known to be in a perimeter, so an association made by a perimeter in a subscription outside the scope "
    "is found within k sweeps (the slice rotates by UTC day: with the daily full sweep, within k days; with a sweep "
    "every d days, within k sweeps unless d is a multiple of k; 1: every account every sweep, the most reads; see "
    "Bounded invocations)",
    "NSP_DRIFT_STATE_TABLE_PREFIX": "Prefix of the state tables (default nspdrift)",
    "NSP_DRIFT_SWEEP_SCHEDULE": "NCRONTAB schedule of the Resource Graph sweep: lists accounts, re-reads those whose "
    "summary, VMs with VHDs or blob backup instances changed, retries deliveries, sends digests (e.g. 0 */15 * * * *); "
    "the sweep-heartbeat alert fires when it has not completed within twice its interval",
    "NSP_DRIFT_FULL_SWEEP_SCHEDULE": "NCRONTAB schedule of the full ARM sweep that re-reads every account "
    "(e.g. 0 30 2 * * *); the sweep-heartbeat alert fires when it has not completed within twice its interval",
    "NSP_DRIFT_ESTATE": "Path of an offline estate JSON: read it instead of Azure Resource Manager (local runs, demos)",
    "NSP_DRIFT_RULES_CONFIG": "Rules configuration: a file path (TOML/YAML/JSON) or inline JSON",
    "NSP_DRIFT_DISABLED_RULES": "Comma-separated rule ids to disable",
    "NSP_DRIFT_SEVERITY_OVERRIDES": "Comma-separated rule=severity pairs",
    "NSP_DRIFT_DESTINATIONS": "Where alerts and tasks go: a JSON array (inline or a file path) of destinations; "
    "secrets are not in it, only the names of the app settings that hold them (see Alerts and tasks)",
    "AZURE_CLIENT_ID": "Client id of a user-assigned managed identity (system-assigned when unset)",
    "NSP_DRIFT_CLOUD": "The Azure cloud to read: AzureCloud (default), AzureChinaCloud, AzureUSGovernment, or the "
    "https URL of a custom ARM endpoint such as https://arm.contoso.example (then "
    "NSP_DRIFT_AUTHORITY_HOST is required); it sets every SDK client's endpoint, the token scope (the endpoint + "
    "/.default) and the authority azure-identity signs in at (see Clouds). Infra sets the deployment's own cloud",
    "NSP_DRIFT_AUTHORITY_HOST": "The https authority host that issues tokens for a custom ARM endpoint in "
    "NSP_DRIFT_CLOUD (e.g. https://login.microsoftonline.com, or an AD FS host); empty with a named cloud",
    "APPLICATIONINSIGHTS_CONNECTION_STRING": "Application Insights to export nsp-drift's own metrics and spans to "
    "(see Telemetry); unset: no telemetry is recorded and the OpenTelemetry SDK is not even imported. Infra sets it",
    "APPLICATIONINSIGHTS_AUTHENTICATION_STRING": "Authorization=AAD (optionally ;ClientId=<user-assigned identity>): "
    "export with the app's managed identity (Monitoring Metrics Publisher) to an Application Insights with local "
    "authentication disabled, as infra deploys it",
}


class SettingsError(ValueError):
    """A setting is missing or invalid; the message names it."""


@dataclass(frozen=True)
class Settings:
    subscriptions: tuple[str, ...] = ()
    coalesce_seconds: float = 30.0
    table_prefix: str = "nspdrift"
    storage_connection: str = ""
    table_service_uri: str = ""
    queue_service_uri: str = ""
    estate_path: str = ""
    dispatch_budget_seconds: float = 120.0
    invocation_budget_seconds: float = 120.0
    membership_verify_sweeps: int = VERIFY_SWEEPS
    rules: RulesConfig = field(default_factory=RulesConfig)
    cloud: Cloud = PUBLIC
    # Application Insights (shared.adapters.telemetry): metrics and spans are exported when it is set.
    appinsights_connection: str = field(default="", repr=False)
    appinsights_authentication: str = ""  # Authorization=AAD[;ClientId=...]: Entra-authenticated export
    # The timer sweeps' NCRONTAB schedules by setting name (the sweep heartbeat reads them; the
    # host reads the same settings through the bindings' %...% expressions).
    sweep_schedules: tuple[tuple[str, str], ...] = ()


def _subscriptions(raw: str) -> tuple[str, ...]:
    subs = tuple(dict.fromkeys(s.strip().lower() for s in raw.split(",") if s.strip()))
    bad = [s for s in subs if not _GUID.match(s)]
    if bad:
        raise SettingsError(f"NSP_DRIFT_SUBSCRIPTIONS: {bad[0]!r} is not a subscription id (a GUID)")
    return subs


def _seconds(name: str, raw: str, bounds: tuple[float, float, float], why: str) -> float:
    """``raw`` seconds of setting ``name``; ``bounds``: (default, lowest, highest)."""
    default, low, high = bounds
    try:
        value = float(raw) if raw.strip() else default
    except ValueError:
        raise SettingsError(f"{name}: expected seconds, got {raw!r}") from None
    if not low <= value <= high:  # also refuses nan
        raise SettingsError(f"{name}: must be between {low:g} and {high:g} ({why})")
    return value


def _verify_sweeps(raw: str) -> int:
    name = "NSP_DRIFT_MEMBERSHIP_VERIFY_SWEEPS"
    try:
        value = int(raw.strip()) if raw.strip() else VERIFY_SWEEPS
    except ValueError:
        raise SettingsError(f"{name}: expected a whole number of full sweeps, got {raw!r}") from None
    if not 1 <= value <= 31:
        raise SettingsError(f"{name}: must be between 1 and 31 (every account is verified within that many sweeps)")
    return value


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    env = os.environ if env is None else env
    try:
        window = float(env.get("NSP_DRIFT_COALESCE_SECONDS", "30") or 30)
    except ValueError:
        raise SettingsError(
            f"NSP_DRIFT_COALESCE_SECONDS: expected seconds, got {env['NSP_DRIFT_COALESCE_SECONDS']!r}"
        ) from None
    if not 0 <= window <= 600:
        raise SettingsError("NSP_DRIFT_COALESCE_SECONDS: must be between 0 and 600 (queue visibility delay)")
    budget = _seconds(
        "NSP_DRIFT_DISPATCH_BUDGET_SECONDS",
        env.get("NSP_DRIFT_DISPATCH_BUDGET_SECONDS", ""),
        (120.0, 10.0, 240.0),
        "it must end, with its last send, well inside functionTimeout",
    )
    invocation_budget = _seconds(
        "NSP_DRIFT_INVOCATION_BUDGET_SECONDS",
        env.get("NSP_DRIFT_INVOCATION_BUDGET_SECONDS", ""),
        (120.0, 10.0, 480.0),
        "an invocation must end well inside functionTimeout (600 s)",
    )
    verify_sweeps = _verify_sweeps(env.get("NSP_DRIFT_MEMBERSHIP_VERIFY_SWEEPS", ""))
    prefix = env.get("NSP_DRIFT_STATE_TABLE_PREFIX", "nspdrift") or "nspdrift"
    if not _TABLE_PREFIX.match(prefix):
        raise SettingsError("NSP_DRIFT_STATE_TABLE_PREFIX: letters and digits only, starting with a letter")
    estate = env.get("NSP_DRIFT_ESTATE", "")
    if estate and not os.path.exists(estate):
        raise SettingsError(f"NSP_DRIFT_ESTATE: file {estate} does not exist")
    connection = env.get("AzureWebJobsStorage", "")
    table_uri = env.get("AzureWebJobsStorage__tableServiceUri", "")
    queue_uri = env.get("AzureWebJobsStorage__queueServiceUri", "")
    if not connection and not (table_uri and queue_uri):
        raise SettingsError(
            "AzureWebJobsStorage: set a connection string, "
            "or AzureWebJobsStorage__tableServiceUri and __queueServiceUri"
        )
    try:
        rules = config_from_settings(env)
    except ConfigError as exc:
        raise SettingsError(str(exc)) from None
    try:
        cloud = cloud_from_env(env)
    except CloudError as exc:
        raise SettingsError(str(exc)) from None
    appinsights = env.get("APPLICATIONINSIGHTS_CONNECTION_STRING", "").strip()
    if appinsights and "instrumentationkey=" not in appinsights.lower():
        raise SettingsError(
            "APPLICATIONINSIGHTS_CONNECTION_STRING: expected an Application Insights connection string "
            "(InstrumentationKey=...;IngestionEndpoint=...)"
        )
    return Settings(
        subscriptions=_subscriptions(env.get("NSP_DRIFT_SUBSCRIPTIONS", "")),
        coalesce_seconds=window,
        table_prefix=prefix,
        storage_connection=connection,
        table_service_uri=table_uri,
        queue_service_uri=queue_uri,
        estate_path=estate,
        dispatch_budget_seconds=budget,
        invocation_budget_seconds=invocation_budget,
        membership_verify_sweeps=verify_sweeps,
        rules=rules,
        cloud=cloud,
        appinsights_connection=appinsights,
        appinsights_authentication=env.get("APPLICATIONINSIGHTS_AUTHENTICATION_STRING", "").strip(),
        sweep_schedules=sweep_schedules(env),
    )


def sweep_schedules(env: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    """The timer sweeps' schedules that are set, by setting name (the sweep heartbeat watches them)."""
    pairs = (
        ("NSP_DRIFT_SWEEP_SCHEDULE", env.get("NSP_DRIFT_SWEEP_SCHEDULE", "").strip()),
        ("NSP_DRIFT_FULL_SWEEP_SCHEDULE", env.get("NSP_DRIFT_FULL_SWEEP_SCHEDULE", "").strip()),
    )
    return tuple((name, value) for name, value in pairs if value)
