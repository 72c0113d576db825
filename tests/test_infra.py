"""Infra stays honest without Azure: the Bicep event filter matches the targeting code, every
setting the code reads is declared and documented, roles are least-privilege, host.json is valid."""

from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema

from shared.settings import DOCUMENTED
from shared.targeting import HANDLED_OPERATIONS

ROOT = Path(__file__).resolve().parents[1]
INFRA = ROOT / "infra"
CORPUS = ROOT.parent / "shared" / "corpus"
LOCAL_ONLY = {"NSP_DRIFT_ESTATE", "AZURE_CLIENT_ID"}  # demo mode; user-assigned identity only
ALLOWED_ROLES = {
    "acdd72a7-3385-48ef-bd42-f606fba81ae7",  # Reader (monitored subscriptions / management group)
    "b7e6dc6d-f1e8-4753-8033-0f276bb0955b",  # Storage Blob Data Owner (app storage)
    "974c5e8b-45b9-4653-ba55-5f855dd0fb88",  # Storage Queue Data Contributor (app storage)
    "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3",  # Storage Table Data Contributor (app storage)
    "3913510d-42f4-4e42-8a64-420c390055eb",  # Monitoring Metrics Publisher (App Insights)
    "4633458b-17de-408a-b874-0445c86b69e6",  # Key Vault Secrets User (the app's vault)
    "ba92f5b4-2d11-453d-a403-e96b0029c9fe",  # Storage Blob Data Contributor (topic dead letters)
}


def bicep() -> str:
    return "\n".join(p.read_text() for p in sorted(INFRA.rglob("*.bicep")))


def test_event_filter_lists_exactly_the_handled_operations() -> None:
    text = (INFRA / "eventgrid.bicep").read_text()
    block = re.search(r"var handledOperations = \[(.*?)\]", text, re.S)
    assert block, "eventgrid.bicep declares handledOperations"
    listed = tuple(re.findall(r"'([^']+)'", block.group(1)))
    assert listed == HANDLED_OPERATIONS
    assert "values: handledOperations" in text and "key: 'data.operationName'" in text
    assert "retryPolicy" in text and "deadLetterWithResourceIdentity" in text


def settings_read_by_code() -> set[str]:
    names: set[str] = set()
    # env.get("X"), environ["X"], or a module constant SETTING = "X" handed to them
    pattern = re.compile(
        r"""(?:(?:env|environ)(?:\.get\(|\[)\s*|SETTING\s*=\s*)["']((?:NSP_DRIFT_[A-Z_]+)|AzureWebJobsStorage(?:__\w+)?)["']"""
    )
    for path in [*(ROOT / "shared").rglob("*.py"), *(ROOT / "handlers").rglob("*.py")]:
        names |= set(pattern.findall(path.read_text()))
    names |= set(re.findall(r"%(NSP_DRIFT_[A-Z_]+)%", "".join(p.read_text() for p in (ROOT / "handlers").glob("*.py"))))
    return names


def test_every_setting_the_code_reads_is_declared_and_documented() -> None:
    text = bicep()
    declared = set(re.findall(r"name: '([A-Za-z_]+)'", text))
    for name in sorted(settings_read_by_code()):
        base = name.split("__", 1)[0]
        assert base in DOCUMENTED, f"{name} is read by the code but not documented in shared/settings.py"
        if base in LOCAL_ONLY or name == "NSP_DRIFT_DESTINATIONS_FILE":
            continue
        if base == "AzureWebJobsStorage":
            assert (
                "AzureWebJobsStorage__queueServiceUri" in declared
                and "AzureWebJobsStorage__tableServiceUri" in declared
            )
            continue
        assert name in declared, f"{name} is read by the code but not set in infra/app/app.bicep"
    for name in DOCUMENTED:
        assert name in (ROOT / "README.md").read_text(), f"{name} is not in the README"


def test_roles_are_least_privilege() -> None:
    text = bicep()
    used = set(re.findall(r"'([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})'", text))
    assert used <= ALLOWED_ROLES, f"unexpected role(s): {used - ALLOWED_ROLES}"
    app = (INFRA / "app" / "app.bicep").read_text()
    for role in ("blobDataOwner", "queueDataContributor", "tableDataContributor"):
        assignment = re.search(rf"roleDefinitions', roles\.{role}\)", app)
        assert assignment
    assert app.count("scope: storage") >= 3  # data roles only on the app's own account
    reader = (INFRA / "app" / "reader.bicep").read_text()
    assert "targetScope = 'subscription'" in reader and "acdd72a7-3385-48ef-bd42-f606fba81ae7" in reader


def test_no_secret_literal_and_secrets_are_key_vault_references() -> None:
    text = bicep() + (ROOT / "local.settings.json.example").read_text() + (INFRA / "main.parameters.json").read_text()
    for pattern in (r"AccountKey=", r"[?&]sig=", r"ghp_[A-Za-z0-9]{20}", r"whsec_", r"SharedAccessSignature"):
        assert not re.search(pattern, text), pattern
    app = (INFRA / "app" / "app.bicep").read_text()
    assert "@Microsoft.KeyVault(SecretUri=" in app
    assert "allowSharedKeyAccess: false" in app and "AzureWebJobsStorage__credential" in app
    assert "APPLICATIONINSIGHTS_AUTHENTICATION_STRING', value: 'Authorization=AAD'" in app


def test_azd_deploys_event_subscriptions_after_the_code() -> None:
    import yaml

    spec = yaml.safe_load((ROOT / "azure.yaml").read_text())
    assert spec["services"]["api"] == {"project": ".", "language": "python", "host": "function"}
    hook = spec["hooks"]["postdeploy"]["posix"]["run"]
    assert (ROOT / hook).exists() and "eventgrid.bicep" in (ROOT / hook).read_text()


def test_host_json_is_valid_against_the_schemastore_schema() -> None:
    schema_path = CORPUS / "host.schema.json"
    assert schema_path.exists(), f"{schema_path} is missing (../shared must sit beside the repo)"
    schema = json.loads(schema_path.read_text())
    host = json.loads((ROOT / "host.json").read_text())
    jsonschema.Draft7Validator(schema).validate(host)
    assert host["version"] == "2.0" and host["extensionBundle"]["version"] == "[4.*, 5.0.0)"
    broken = {**host, "functionTimeout": "10 minutes"}
    assert list(jsonschema.Draft7Validator(schema).iter_errors(broken))


def test_every_function_binds_to_declared_settings() -> None:
    text = "".join(p.read_text() for p in (ROOT / "handlers").glob("*.py"))
    declared = set(re.findall(r"name: '([A-Za-z_]+)'", bicep()))
    for expression in re.findall(r"%([A-Z_]+)%", text):
        assert expression in declared
