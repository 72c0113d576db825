"""Settings are validated on first use: one clear error naming the setting; indexing unaffected."""

from __future__ import annotations

import logging

import pytest

from shared.entrypoints import app as app_module
from shared.entrypoints.settings import SettingsError, load_settings

GOOD = {
    "AzureWebJobsStorage": "UseDevelopmentStorage=true",
    "NSP_DRIFT_SUBSCRIPTIONS": "6e1c6f2a-5b7d-4c8e-9f10-2a3b4c5d6e7f",
}


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ({"NSP_DRIFT_COALESCE_SECONDS": "soon"}, "NSP_DRIFT_COALESCE_SECONDS"),
        ({"NSP_DRIFT_COALESCE_SECONDS": "9000"}, "NSP_DRIFT_COALESCE_SECONDS"),
        ({"NSP_DRIFT_SUBSCRIPTIONS": "prod"}, "NSP_DRIFT_SUBSCRIPTIONS"),
        ({"NSP_DRIFT_STATE_TABLE_PREFIX": "bad-prefix!"}, "NSP_DRIFT_STATE_TABLE_PREFIX"),
        ({"NSP_DRIFT_ESTATE": "/nope.json"}, "NSP_DRIFT_ESTATE"),
        ({"NSP_DRIFT_DISABLED_RULES": "sftp-enabled,not-a-rule"}, "NSP_DRIFT_DISABLED_RULES"),
        ({"NSP_DRIFT_RULES_CONFIG": "{not json"}, "NSP_DRIFT_RULES_CONFIG"),
        ({"AzureWebJobsStorage": ""}, "AzureWebJobsStorage"),
    ],
)
def test_bad_setting_is_named(override: dict[str, str], named: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings({**GOOD, **override})
    assert str(caught.value).startswith(named)


def test_handler_logs_one_line_and_raises_for_retry(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    for key, value in GOOD.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("NSP_DRIFT_COALESCE_SECONDS", "soon")
    monkeypatch.setenv("NSP_DRIFT_DESTINATIONS", '[{"name": "x", "type": "teams", "url_setting": "MISSING_URL"}]')
    app_module.reset_context(None)
    with caplog.at_level(logging.ERROR), pytest.raises(SettingsError):
        app_module.handle_queue_message('{"target": {"kind": "account", "resource_id": "/x"}, "not_before": 0}', 1)
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == ["nsp-drift is misconfigured: NSP_DRIFT_COALESCE_SECONDS: expected seconds, got 'soon'"]
    app_module.reset_context(None)


@pytest.mark.parametrize("value", ["seven", "0", "32", "-1", "2.5"])
def test_bad_membership_verify_sweeps_is_named(value: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings({**GOOD, "NSP_DRIFT_MEMBERSHIP_VERIFY_SWEEPS": value})
    message = str(caught.value)
    assert message.startswith("NSP_DRIFT_MEMBERSHIP_VERIFY_SWEEPS: ")
    assert "\n" not in message


@pytest.mark.parametrize(("value", "sweeps"), [("", 11), ("1", 1), (" 14 ", 14), ("31", 31)])
def test_membership_verify_sweeps_parses(value: str, sweeps: int) -> None:
    env = {**GOOD, "NSP_DRIFT_MEMBERSHIP_VERIFY_SWEEPS": value} if value else GOOD
    assert load_settings(env).membership_verify_sweeps == sweeps


def test_the_apps_pipeline_gets_the_verify_sweeps() -> None:
    from shared.adapters.state.sqlite_store import SqliteStateStore

    settings = load_settings({**GOOD, "NSP_DRIFT_MEMBERSHIP_VERIFY_SWEEPS": "3"})
    context = app_module.build_context(settings, store=SqliteStateStore(":memory:"), clients=object())
    assert context.pipeline.verify_sweeps == 3
    default = app_module.build_context(load_settings(GOOD), store=SqliteStateStore(":memory:"), clients=object())
    assert default.pipeline.verify_sweeps == 11
