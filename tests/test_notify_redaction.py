"""No secret reaches a log line, an Outcome error or a stored delivery error: Teams/Workflows ``sig``
URLs, PATs, GitHub tokens and webhook signing secrets, even when a failing server echoes them."""

from __future__ import annotations

import base64
import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import pytest

from shared.adapters.notify import http
from shared.adapters.notify.destinations import DestinationError, build_senders, parse_destinations
from shared.adapters.notify.devops import AzureDevOpsSender
from shared.adapters.notify.github import GitHubIssuesSender
from shared.adapters.notify.teams import TeamsSender
from shared.adapters.notify.webhook import WebhookSender
from shared.core.notify import redact
from shared.core.notify.base import Delivery, Outcome
from shared.service.dispatch import Dispatcher
from tests.fakes import FakeServer, Received, Reply, reply
from tests.fakes.echo import CredentialEcho
from tests.fakes.transitions import delivery, make_transition

TEAMS_SIG = "Zq9xW2cV8bN4mK7jH3gF6dS1aP0oI5uYt"
HOOK_SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef01234567").decode()
ADO_TOKEN = "k3v7q9x2m5n8p4r6t1w0y3z5a7c9e2g4i6k8m0o2q4s6u8w0y2"
GH_TOKEN = "ghp_R4nd0mT0k3nV4lu3F0rT3st1ngOnlyXYZ12"
SECRETS = (TEAMS_SIG, HOOK_SECRET, ADO_TOKEN, GH_TOKEN)
FAST = http.RetrySettings(attempts=2, max_total_seconds=5, initial=0.01, max_wait=0.02)


def teams_path(sig: str = TEAMS_SIG) -> str:
    return (
        "/workflows/abc/triggers/manual/paths/invoke"
        f"?api-version=2016-06-01&sp=%2Ftriggers%2Fmanual%2Frun&sv=1.0&sig={sig}"
    )


class Echo(FakeServer):
    """A receiver that fails and echoes everything it got back, the way careless error pages do
    (including .NET's ``\\u0026`` for ``&`` inside a JSON string, and the signing secret itself)."""

    def __init__(self, status: int) -> None:
        super().__init__()
        self.status = status

    def handle(self, request: Received) -> Reply:
        echoed = {
            "error": f"invalid request to {self.url}{request.path}",
            "dotnet": f"{self.url}{request.path}".replace("&", "\\u0026"),
            "authorization": request.headers.get("authorization", ""),
            "headers": request.headers,
            "secret": HOOK_SECRET,
            "hint": f"Authorization: Bearer {GH_TOKEN}",
        }
        return reply(self.status, echoed)


@pytest.fixture(autouse=True)
def clean_registry() -> Iterator[None]:
    redact.forget_secrets()
    yield
    redact.forget_secrets()


@pytest.fixture
def redacted_logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """The app's own install (root logger and its handlers, pytest's capture among them)."""
    root = logging.getLogger()
    redact.install_log_redaction()
    caplog.set_level(logging.DEBUG)
    yield caplog
    for item in (root, *root.handlers):
        for f in [f for f in item.filters if isinstance(f, redact.SecretFilter)]:
            item.removeFilter(f)


def assert_clean(*texts: str) -> None:
    blob = "\n".join(texts)
    leaked = [s[:10] + "…" for s in SECRETS if s in blob]
    assert leaked == [], f"secrets leaked: {leaked}"


def senders(base: str) -> dict[str, Any]:
    return {
        "teams": TeamsSender("teams", base + teams_path(), retry=FAST),
        "hook": WebhookSender("hook", f"{base}/hook?code={TEAMS_SIG[:20]}xx", HOOK_SECRET, retry=FAST),
        "boards": AzureDevOpsSender("boards", "contoso", "Platform", ADO_TOKEN, base_url=base, retry=FAST),
        "issues": GitHubIssuesSender("issues", "contoso/sec", GH_TOKEN, api_url=base, retry=FAST),
    }


# -- patterns -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "https://prod-12.westeurope.logic.azure.com:443" + teams_path(),
        "https://contoso.webhook.office.com/webhookb2/x/IncomingWebhook/y?sig=" + TEAMS_SIG,
        '{"url": "https://h/paths/invoke?api-version=1\\u0026sig=' + TEAMS_SIG + '\\u0026sv=1.0"}',
        "https%3A%2F%2Fh%2Finvoke%3Fapi-version%3D1%26sig%3D" + TEAMS_SIG,
        "https://st.blob.core.windows.net/c/b?sv=2022-11-02&se=2026-01-01&sr=b&sp=r&sig=" + TEAMS_SIG,
        "https://func.azurewebsites.net/api/hook?code=" + TEAMS_SIG,
        "Authorization: Basic " + base64.b64encode(f":{ADO_TOKEN}".encode()).decode(),
        '{"Authorization": "Bearer ' + GH_TOKEN + '"}',
        "the token is " + GH_TOKEN,
        "bearer " + TEAMS_SIG,
        "https://user:" + TEAMS_SIG + "@example.com/x",
        "https://" + GH_TOKEN + "@github.com/contoso/x.git",
        "signing with " + HOOK_SECRET,
        "AccountName=st;AccountKey=" + TEAMS_SIG + ";EndpointSuffix=core.windows.net",
        "jwt eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0." + TEAMS_SIG,
    ],
)
def test_recognisable_secrets_are_masked_without_being_registered(text: str) -> None:
    masked = redact.redact(text)
    assert_clean(masked)
    assert redact.MASK in masked


def test_registered_and_passed_secrets_are_masked_anywhere() -> None:
    assert redact.redact(f"pat={ADO_TOKEN}!", secrets=(ADO_TOKEN,)) == "pat=***!"
    assert ADO_TOKEN in redact.redact(f"pat {ADO_TOKEN}")  # an opaque value: no pattern knows it
    redact.register_secret(ADO_TOKEN)
    assert redact.redact(f"x{ADO_TOKEN}y") == "x***y"
    redact.register_secret("short")  # too short to mask safely: ordinary words would vanish
    assert redact.redact("a short text") == "a short text"


def test_ordinary_text_is_left_alone() -> None:
    text = "HTTP 400 from api.github.com: token expired. Delivery to boards failed (status 401)"
    assert redact.redact(text) == text
    assert redact.one_line("a\n  b\tc") == "a b c"


# -- the logging filter ---------------------------------------------------------------------------------


def test_the_filter_redacts_messages_arguments_and_tracebacks() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(redact.SecretFilter())
    log = logging.getLogger("tests.redaction.filter")
    log.addHandler(handler)
    log.propagate = False
    try:
        log.warning("posting to %s", "https://h" + teams_path())
        log.warning({"auth": f"Bearer {GH_TOKEN}"})
        try:
            raise RuntimeError(f"could not reach https://h{teams_path()}")
        except RuntimeError:
            log.exception("send failed")
        log.warning("bad format %s %s", "only one")  # noqa: PLE1206 - on purpose: must not break logging
    finally:
        log.removeHandler(handler)
    output = stream.getvalue()
    assert_clean(output)
    assert output.count("***") >= 3 and "RuntimeError: could not reach" in output and "bad format" in output


def test_install_reaches_records_of_child_loggers_through_the_root_handlers() -> None:
    root = logging.getLogger()
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    root.addHandler(handler)
    try:
        redact.install_log_redaction()
        redact.install_log_redaction()  # idempotent
        assert sum(isinstance(f, redact.SecretFilter) for f in handler.filters) == 1
        logging.getLogger("azure.functions.child").error("url %s", "https://h" + teams_path())
    finally:
        root.removeHandler(handler)
        for f in [f for f in root.filters if isinstance(f, redact.SecretFilter)]:
            root.removeFilter(f)
    assert_clean(stream.getvalue())
    assert "sig=***" in stream.getvalue()


# -- senders against echoing servers ------------------------------------------------------------------


@pytest.mark.parametrize("status", [400, 500])
def test_outcome_errors_carry_no_secret_even_when_the_server_echoes_them(status: int) -> None:
    with Echo(status) as echo:
        outcomes: dict[str, Outcome] = {}
        for name, sender in senders(echo.url).items():
            outcomes[name] = sender.send(delivery(name, make_transition("sftp-enabled")), _NoTasks())
    assert {n: o.status for n, o in outcomes.items()} == dict.fromkeys(outcomes, status)
    assert all(o.retryable is (status == 500) for o in outcomes.values())
    errors = [o.error for o in outcomes.values()]
    assert_clean(*errors)
    assert all(e.startswith(f"HTTP {status} from 127.0.0.1") and "\n" not in e for e in errors)
    assert all("***" in e for e in errors)  # the echo was there, and was masked


def test_connection_errors_carry_no_secret() -> None:
    with FakeServer() as gone:
        base = gone.url
    for name, sender in senders(base).items():
        outcome = sender.send(delivery(name, make_transition()), _NoTasks())
        assert outcome.status is None and outcome.retryable
        assert_clean(outcome.error)


def test_logs_and_stored_errors_carry_no_secret(redacted_logs: pytest.LogCaptureFixture, tmp_path: Path) -> None:
    from shared.adapters.state.sqlite_store import SqliteStateStore

    store = SqliteStateStore(str(tmp_path / "redaction.sqlite"))
    with Echo(400) as echo:
        env = {
            "TEAMS_URL": echo.url + teams_path(),
            "HOOK_URL": f"{echo.url}/hook",
            "HOOK_SECRET": HOOK_SECRET,
            "ADO_TOKEN": ADO_TOKEN,
            "GH_TOKEN": GH_TOKEN,
        }
        configs = parse_destinations(
            [
                {"name": "teams", "type": "teams", "url_setting": "TEAMS_URL"},
                {"name": "hook", "type": "webhook", "url_setting": "HOOK_URL", "secret_setting": "HOOK_SECRET"},
                {
                    "name": "boards",
                    "type": "azure-devops",
                    "organization": "contoso",
                    "project": "Platform",
                    "token_setting": "ADO_TOKEN",
                    "base_url": echo.url,
                },
                {
                    "name": "issues",
                    "type": "github",
                    "repository": "contoso/sec",
                    "token_setting": "GH_TOKEN",
                    "api_url": echo.url,
                },
            ]
        )
        built, digests = build_senders(configs, env, retry=FAST)  # registers every resolved secret

        class Leaky:
            name = "leaky"

            def send(self, delivery: Delivery, tasks: Any) -> Outcome:
                raise RuntimeError(f"could not post to {env['TEAMS_URL']} with {ADO_TOKEN}")

        items = [delivery(n, make_transition("sftp-enabled")) for n in (*built, "leaky")]
        store.add_deliveries(items)
        report = Dispatcher(store, {**built, "leaky": Leaky()}, digests).dispatch_due()
        log = logging.getLogger("shared.notify.careless")
        log.error("posting %s to %s with %s", json.dumps({"secret": HOOK_SECRET}), env["TEAMS_URL"], ADO_TOKEN)
        log.info("headers %s", {"Authorization": "Basic " + base64.b64encode(f":{ADO_TOKEN}".encode()).decode()})
    assert report.failed == 4 and report.retried == 1
    stored = [store.get_delivery(i.delivery_id) for i in items]
    errors = [s[0].last_error for s in stored if s is not None]
    assert len(errors) == 5 and all(errors)
    assert_clean(redacted_logs.text, *errors, *(r.getMessage() for r in redacted_logs.records))
    # The registered URL is masked whole (longest first), the token too; the traceback is kept.
    assert "RuntimeError: could not post to *** with ***" in redacted_logs.text
    assert 'posting {"secret": "***"} to *** with ***' in redacted_logs.text


def test_configuration_errors_never_echo_a_secret() -> None:
    url = "https://h" + teams_path()
    with pytest.raises(DestinationError) as caught:
        parse_destinations([{"name": "t", "type": "teams", "url_setting": url}])
    assert_clean(str(caught.value))
    assert "NSP_DRIFT_DESTINATIONS[0].url_setting" in str(caught.value)
    (config,) = parse_destinations([{"name": "t", "type": "teams", "url_setting": "TEAMS_URL"}])
    with pytest.raises(DestinationError) as caught:
        build_senders([config], {"TEAMS_URL": "ftp://h" + teams_path()})
    assert_clean(str(caught.value))


class _NoTasks:
    def get_task(self, destination: str, finding_key: str) -> None:
        return None


# -- derived forms (issue 11, defect 8) -------------------------------------------------------------------

ADO_PAT52 = "x7kq2m5n8p4r6t1w0y3z5a7c9e2g4i6k8m0o2q4s6u8w0y2abcde"  # 52 characters, like an ADO PAT


def b64(data: str | bytes, urlsafe: bool = False) -> str:
    raw = data.encode() if isinstance(data, str) else data
    return (base64.urlsafe_b64encode if urlsafe else base64.b64encode)(raw).decode()


def pieces(form: str, width: int = 16) -> list[str]:
    """Every ``width``-character window of ``form``: a partial leak counts as a leak."""
    return [form[i : i + width] for i in range(max(len(form) - width + 1, 1))]


def leaks(blob: str, forms: dict[str, str]) -> list[str]:
    return [name for name, form in forms.items() if any(piece in blob for piece in pieces(form))]


def pat_forms(token: str) -> dict[str, str]:
    basic = b64(f":{token}")
    return {
        "token": token,
        "basic": basic,
        "basic-unpadded": basic.rstrip("="),
        "basic-urlencoded": quote(basic, safe=""),
        "basic-urlsafe": b64(f":{token}", urlsafe=True),
        "basic-with-user": b64(f"nsp-drift:{token}"),
        "base64": b64(token),
        "base64-unpadded": b64(token).rstrip("="),
        "urlencoded": quote(token, safe=""),
    }


@pytest.mark.parametrize(
    ("kind", "form"),
    [
        ("azure-devops", "bare"),
        ("azure-devops", "unpadded"),
        ("azure-devops", "urlencoded"),
        ("azure-devops", "dotnet-json"),
        ("azure-devops", "decoded"),
        ("github", "bare"),
        ("github", "urlencoded"),
        ("github", "base64-of-bearer"),
    ],
)
def test_a_401_echoing_the_credential_in_any_encoding_leaks_nothing(
    kind: str, form: str, redacted_logs: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    """Issue 11, defect 8: a 401 body echoing base64(":" + PAT) without the word "Basic" put it in
    the stored last_error and the log line. On 02faea9: leaked (the stored error held the Basic
    value); now: masked in both."""
    from shared.adapters.state.sqlite_store import SqliteStateStore

    token = ADO_PAT52 if kind == "azure-devops" else GH_TOKEN
    store = SqliteStateStore(str(tmp_path / "echo.sqlite"))
    with CredentialEcho(form) as echo:
        entry: dict[str, Any] = {"name": "tasks", "type": kind, "token_setting": "TASKS_TOKEN"}
        if kind == "azure-devops":
            entry.update(organization="contoso", project="Platform", base_url=echo.url)
        else:
            entry.update(repository="contoso/sec", api_url=echo.url)
        built, digests = build_senders(parse_destinations([entry]), {"TASKS_TOKEN": token}, retry=FAST)
        item = delivery("tasks", make_transition("sftp-enabled"))
        store.add_deliveries([item])
        report = Dispatcher(store, built, digests).dispatch_due()
        assert echo.hits >= 1
    assert report.failed == 1
    stored = store.get_delivery(item.delivery_id)
    assert stored is not None
    error = stored[0].last_error
    assert stored[0].last_status == 401 and "TF400813" in error and redact.MASK in error
    logged = [r.getMessage() for r in redacted_logs.records]
    assert any("failed for good (status 401)" in line for line in logged)
    blob = "\n".join([error, redacted_logs.text, *logged])
    assert leaks(blob, pat_forms(token)) == []


def webhook_secret_forms(secret: str) -> dict[str, str]:
    key = base64.b64decode(secret.removeprefix("whsec_"))
    return {
        "secret": secret,
        "without-prefix": secret.removeprefix("whsec_"),
        "urlencoded": quote(secret, safe=""),
        "key-text": key.decode(),
        "key-hex": key.hex(),
        "key-base64-unpadded": b64(key).rstrip("="),
        "key-base64-urlsafe": b64(key, urlsafe=True),
        "secret-base64": b64(secret),
    }


def teams_url_forms(url: str) -> dict[str, str]:
    return {"url": url, "urlencoded": quote(url, safe=""), "quote-plus": quote_plus(url), "base64": b64(url)}


@pytest.mark.parametrize(
    ("secret", "forms"),
    [
        (ADO_PAT52, pat_forms(ADO_PAT52)),
        (GH_TOKEN, pat_forms(GH_TOKEN)),
        (HOOK_SECRET, webhook_secret_forms(HOOK_SECRET)),
        ("https://h" + teams_path(), teams_url_forms("https://h" + teams_path())),
    ],
    ids=["ado-pat", "github-token", "whsec", "teams-url"],
)
@pytest.mark.parametrize("how", ["registered", "passed"])
def test_every_derived_form_of_a_secret_is_masked(secret: str, forms: dict[str, str], how: str) -> None:
    if how == "registered":
        redact.register_secret(secret)
        passed: tuple[str, ...] = ()
    else:
        passed = (secret,)
    for name, form in forms.items():
        for text in (form, f"echo {form} end", f'{{"detail":"{form}"}}'):
            masked = redact.redact(text, secrets=passed)
            assert leaks(masked, {name: form}) == [], f"{name} leaked from {text[:40]!r}: {masked[:80]!r}"
            assert redact.MASK in masked


def test_derived_forms_do_not_mask_ordinary_text() -> None:
    redact.register_secret(ADO_PAT52)
    redact.register_secret(HOOK_SECRET)
    text = "HTTP 401 from dev.azure.com: TF400813: The user is not authorized. Delivery to boards failed (status 401)"
    assert redact.redact(text) == text
