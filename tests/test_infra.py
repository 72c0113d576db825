"""The deployment (infra/, azure.yaml, scripts/) stays true to the code, offline.

The Bicep CLI is a .NET binary that cannot be installed here, so the templates are read as text:
comments and string literals are masked (positions kept) so that brackets can be matched and
keys found without being fooled by a quote or a brace inside a string. If ``pycep-parser`` (a
pure-Python Bicep parser on PyPI) is installed, every template is also parsed with it.

What is checked:
* the Event Grid filter lists exactly ``shared.core.targeting.HANDLED_OPERATIONS``, within Event Grid's
  limits, and delivers to the function the code registers;
* every app setting the code reads (``shared.entrypoints.settings.DOCUMENTED`` and an AST scan of shared/ and
  handlers/ for ``os.environ``/``env.get``/``env[...]``, ``%binding%`` expressions and
  ``connection=``) is documented and set by the Bicep, or explicitly not an Azure setting;
* role assignments: only the expected role GUIDs, each at the expected scope;
* no secret literal anywhere in the deployment files, destination secrets only as Key Vault
  references, identity-only storage and telemetry;
* azd wiring: parameters, outputs the hook reads, the postdeploy hook;
* host.json against the schemastore schema vendored in tests/corpus; local.settings.json.example.
"""

from __future__ import annotations

import ast
import json
import re
from functools import cache
from pathlib import Path

import jsonschema
import pytest
import yaml

from shared.core.targeting import HANDLED_OPERATIONS
from shared.core.work import QUEUE_NAME
from shared.entrypoints.settings import DOCUMENTED

ROOT = Path(__file__).resolve().parents[1]
INFRA = ROOT / "infra"
SCRIPTS = (ROOT / "scripts" / "postdeploy.sh", ROOT / "scripts" / "postdeploy.ps1")
HOST_SCHEMA = ROOT / "tests" / "corpus" / "host.schema.json"

# Read by the code, deliberately not set in Azure.
NOT_IN_AZURE = {
    "NSP_DRIFT_ESTATE": "offline estate file: local runs and demos only",
    "AZURE_CLIENT_ID": "only for a user-assigned identity; the app uses its system-assigned one",
    "AzureWebJobsStorage": "a connection string (Azurite); Azure uses the identity-based AzureWebJobsStorage__*",
}
# Set by the platform on every App Service / Functions instance, never by us.
PLATFORM = {"WEBSITE_INSTANCE_ID", "IDENTITY_ENDPOINT"}
# Files whose setting reads may use a name computed at run time (the destinations' *_setting
# values); the Bicep turns exactly those names into Key Vault references.
DYNAMIC_READS = {"shared/adapters/notify/destinations.py"}
# Flex Consumption deprecates these as app settings (docs: functions-app-settings, Flex deprecations).
FLEX_DEPRECATED = {
    "FUNCTIONS_WORKER_RUNTIME",
    "FUNCTIONS_EXTENSION_VERSION",
    "WEBSITE_RUN_FROM_PACKAGE",
    "WEBSITE_CONTENTSHARE",
    "WEBSITE_CONTENTAZUREFILECONNECTIONSTRING",
    "SCM_DO_BUILD_DURING_DEPLOYMENT",
    "ENABLE_ORYX_BUILD",
    "WEBSITE_TIME_ZONE",
    "TZ",
}

READER = "acdd72a7-3385-48ef-bd42-f606fba81ae7"
BLOB_DATA_OWNER = "b7e6dc6d-f1e8-4753-8033-0f276bb0955b"
QUEUE_DATA_CONTRIBUTOR = "974c5e8b-45b9-4653-ba55-5f855dd0fb88"
TABLE_DATA_CONTRIBUTOR = "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3"
METRICS_PUBLISHER = "3913510d-42f4-4e42-8a64-420c390055eb"
KV_SECRETS_USER = "4633458b-17de-408a-b874-0445c86b69e6"
KV_SECRETS_OFFICER = "b86a8fe4-44ce-4948-aee5-eccb2c155cd7"
BLOB_DATA_CONTRIBUTOR = "ba92f5b4-2d11-453d-a403-e96b0029c9fe"
EVENTGRID_DATA_SENDER = "d5a91429-5739-47e2-a06b-3470a27159e7"
STORAGE = "Microsoft.Storage/storageAccounts"
CONTAINER = "Microsoft.Storage/storageAccounts/blobServices/containers"
# role -> (file, type of the resource it is scoped to (None: the deployment's own scope), principal parameter)
EXPECTED_ROLES: dict[str, set[tuple[str, str | None, str]]] = {
    READER: {
        ("infra/app/reader.bicep", None, "principalId"),  # targetScope = 'subscription'
        ("infra/app/reader-mg.bicep", None, "principalId"),  # targetScope = 'managementGroup'
    },
    BLOB_DATA_OWNER: {("infra/app/rbac.bicep", STORAGE, "functionPrincipalId")},
    QUEUE_DATA_CONTRIBUTOR: {("infra/app/rbac.bicep", STORAGE, "functionPrincipalId")},
    TABLE_DATA_CONTRIBUTOR: {("infra/app/rbac.bicep", STORAGE, "functionPrincipalId")},
    METRICS_PUBLISHER: {("infra/app/rbac.bicep", "Microsoft.Insights/components", "functionPrincipalId")},
    KV_SECRETS_USER: {("infra/app/rbac.bicep", "Microsoft.KeyVault/vaults", "functionPrincipalId")},
    # the person running azd, to store destination secrets in the app's own vault (optional)
    KV_SECRETS_OFFICER: {("infra/app/rbac.bicep", "Microsoft.KeyVault/vaults", "deployerPrincipalId")},
    # the system topics' identities write dead letters to one container of the app's account
    BLOB_DATA_CONTRIBUTOR: {("infra/eventgrid/deadletter-rbac.bicep", CONTAINER, "topicPrincipalId")},
    # the function identity publishes to the Event Grid topics/namespaces named in eventGridTopicIds
    EVENTGRID_DATA_SENDER: {
        ("infra/app/eventgrid-sender.bicep", "Microsoft.EventGrid/topics", "functionPrincipalId"),
        ("infra/app/eventgrid-sender.bicep", "Microsoft.EventGrid/namespaces", "functionPrincipalId"),
    },
}

GUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


# -- reading Bicep as text ------------------------------------------------------------------------


def _scan(text: str, *, mask_strings: bool) -> str:
    """``text`` with comments (and, if asked, string literals incl. interpolations) replaced by
    spaces/``x``, newlines and length kept, so that indices stay valid in the original."""
    out = list(text)
    i, n = 0, len(text)
    stack: list[str | int] = []  # "str" inside a string; an int: brace depth inside ${...}

    def blank(start: int, end: int, fill: str) -> None:
        for k in range(start, end):
            if out[k] != "\n":
                out[k] = fill

    while i < n:
        in_string = bool(stack) and stack[-1] == "str"
        if in_string:
            if text[i] == "\\":
                if mask_strings:
                    blank(i, min(i + 2, n), "x")
                i += 2
            elif text[i] == "'":
                stack.pop()
                i += 1
            elif text.startswith("${", i):
                stack.append(0)
                if mask_strings:
                    blank(i, i + 2, "x")
                i += 2
            else:
                if mask_strings:
                    blank(i, i + 1, "x")
                i += 1
            continue
        inside = bool(stack)  # code inside an interpolation: part of a string literal
        if text.startswith("//", i):
            end = text.find("\n", i)
            end = n if end < 0 else end
            blank(i, end, " ")
            i = end
        elif text.startswith("/*", i):
            end = text.find("*/", i + 2)
            end = n if end < 0 else end + 2
            blank(i, end, " ")
            i = end
        elif text.startswith("'''", i):
            end = text.find("'''", i + 3)
            end = n if end < 0 else end + 3
            if mask_strings:
                blank(i + 3, end - 3, "x")
            i = end
        elif text[i] == "'":
            stack.append("str")
            i += 1
        elif inside and text[i] == "{":
            stack[-1] = int(stack[-1]) + 1
            if mask_strings:
                blank(i, i + 1, "x")
            i += 1
        elif inside and text[i] == "}":
            if stack[-1] == 0:
                stack.pop()
            else:
                stack[-1] = int(stack[-1]) - 1
            if mask_strings:
                blank(i, i + 1, "x")
            i += 1
        else:
            if inside and mask_strings:
                blank(i, i + 1, "x")
            i += 1
    assert not stack, "unterminated string or interpolation"
    return "".join(out)


class Bicep:
    """One template: its text, the text without comments, and a masked twin for structure."""

    def __init__(self, path: Path, text: str | None = None) -> None:
        self.path = path
        self.rel = path.relative_to(ROOT).as_posix()
        self.text = path.read_text(encoding="utf-8") if text is None else text
        self.code = _scan(self.text, mask_strings=False)
        self.masked = _scan(self.text, mask_strings=True)

    def block(self, start: int) -> str:
        """The text of the first {...} or [...] at or after ``start`` (brackets matched in the masked twin)."""
        opening = re.compile(r"[\[{]").search(self.masked, start)
        assert opening, f"{self.rel}: no block after offset {start}"
        depth = 0
        for k in range(opening.start(), len(self.masked)):
            ch = self.masked[k]
            if ch in "[{(":
                depth += 1
            elif ch in "]})":
                depth -= 1
                if depth == 0:
                    return self.code[opening.start() : k + 1]
        raise AssertionError(f"{self.rel}: unbalanced brackets from offset {start}")

    def resources(self, type_prefix: str) -> list[tuple[str, str, str]]:
        """(symbolic name, full type, body) of each resource of a type starting with ``type_prefix``."""
        found = []
        pattern = rf"^resource\s+(\w+)\s+'({re.escape(type_prefix)}[^'@]*)@[^']+'\s+(?:existing\s+)?="
        for match in re.finditer(pattern, self.code, re.M):
            found.append((match.group(1), match.group(2), self.block(match.end())))
        return found

    def resource_type(self, symbol: str) -> str:
        match = re.search(rf"^resource\s+{symbol}\s+'([^'@]+)@", self.code, re.M)
        assert match, f"{self.rel}: no resource named {symbol}"
        return match.group(1)

    def target_scope(self) -> str:
        match = re.search(r"^targetScope\s*=\s*'(\w+)'", self.code, re.M)
        return match.group(1) if match else "resourceGroup"

    def params(self) -> dict[str, str | None]:
        """Parameter name -> default value text (None when required)."""
        pattern = r"^param\s+(\w+)\s+[\w?]+(?:\s*=\s*(.+?))?\s*$"
        return {m.group(1): m.group(2) for m in re.finditer(pattern, self.code, re.M)}

    def outputs(self) -> set[str]:
        return set(re.findall(r"^output\s+(\w+)\s", self.code, re.M))


def _top_level_keys(block: str) -> list[str]:
    """Keys of an object literal's first level (the block includes its braces)."""
    masked = _scan(block, mask_strings=True)
    keys, depth = [], 0
    for line, raw in zip(masked.splitlines(), block.splitlines(), strict=True):
        if depth == 1:
            match = re.match(r"\s*([A-Za-z_][A-Za-z0-9_]*)\s*:", raw)
            if match:
                keys.append(match.group(1))
        depth += sum(line.count(c) for c in "{[(") - sum(line.count(c) for c in "}])")
    return keys


def _strings(block: str) -> list[str]:
    return re.findall(r"'((?:[^'\\]|\\.)*)'", block)


@cache
def templates() -> dict[str, Bicep]:
    return {b.rel: b for b in (Bicep(p) for p in sorted(INFRA.rglob("*.bicep")))}


def template(rel: str) -> Bicep:
    assert rel in templates(), f"{rel} is missing"
    return templates()[rel]


def app_settings() -> dict[str, str]:
    """Fixed app settings of the function app (key -> value text), from infra/app/appsettings.bicep."""
    bicep = template("infra/app/appsettings.bicep")
    match = re.search(r"^var\s+baseSettings\s*=", bicep.code, re.M)
    assert match, "appsettings.bicep declares var baseSettings"
    block = bicep.block(match.end())
    values = {}
    for key in _top_level_keys(block):
        line = re.search(rf"^\s*{key}\s*:\s*(.+)$", block, re.M)
        assert line
        values[key] = line.group(1).strip()
    return values


# -- what the code reads ----------------------------------------------------------------------------


def _module_constants(tree: ast.Module) -> dict[str, str]:
    constants: dict[str, str] = {}
    for node in tree.body:
        targets = (
            node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
        )
        value = getattr(node, "value", None)
        if isinstance(value, ast.Constant) and isinstance(value.value, str):
            constants.update({t.id: value.value for t in targets if isinstance(t, ast.Name)})
    return constants


def _is_environment(node: ast.expr) -> bool:
    """``os.environ``, ``environ`` or a mapping parameter named ``env``."""
    if isinstance(node, ast.Attribute):
        return node.attr == "environ"
    return isinstance(node, ast.Name) and node.id in {"env", "environ", "environment"}


@cache
def settings_read_by_code() -> tuple[frozenset[str], frozenset[str], frozenset[str], frozenset[str]]:
    """(names read from the environment, %binding% names, connection= names, files with dynamic reads)."""
    files = [
        ROOT / "function_app.py",
        *sorted((ROOT / "shared").rglob("*.py")),
        *sorted((ROOT / "handlers").rglob("*.py")),
    ]
    trees = {p: ast.parse(p.read_text(encoding="utf-8"), filename=str(p)) for p in files}
    by_module = {".".join(p.relative_to(ROOT).with_suffix("").parts): _module_constants(t) for p, t in trees.items()}
    reads: set[str] = set()
    bindings: set[str] = set()
    connections: set[str] = set()
    dynamic: set[str] = set()
    for path, tree in trees.items():
        constants = dict(by_module[".".join(path.relative_to(ROOT).with_suffix("").parts)])
        for node in ast.walk(tree):  # names imported from another module of the app
            if isinstance(node, ast.ImportFrom) and node.module in by_module:
                for alias in node.names:
                    if alias.name in by_module[node.module]:
                        constants[alias.asname or alias.name] = by_module[node.module][alias.name]

        def resolve(arg: ast.expr, path: Path = path, constants: dict[str, str] = constants) -> None:
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                reads.add(arg.value)
            elif isinstance(arg, ast.Name) and arg.id in constants:
                reads.add(constants[arg.id])
            else:
                dynamic.add(path.relative_to(ROOT).as_posix())

        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.args:
                is_get = node.func.attr == "get" and _is_environment(node.func.value)
                is_getenv = node.func.attr == "getenv" and ast.unparse(node.func.value) == "os"
                if is_get or is_getenv:
                    resolve(node.args[0])
            elif isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Load) and _is_environment(node.value):
                resolve(node.slice)
            elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                # trigger and binding decorators: %NAME% expressions and connection= name app settings
                for decorator in node.decorator_list:
                    if not isinstance(decorator, ast.Call):
                        continue
                    for keyword in decorator.keywords:
                        if keyword.arg == "connection" and isinstance(keyword.value, ast.Constant):
                            connections.add(str(keyword.value.value))
                    for arg in [*decorator.args, *(k.value for k in decorator.keywords)]:
                        if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                            bindings |= set(re.findall(r"%([A-Za-z_][A-Za-z0-9_]*)%", arg.value))
    return frozenset(reads), frozenset(bindings), frozenset(connections), frozenset(dynamic)


def app_setting_reads() -> set[str]:
    reads, bindings, connections, _ = settings_read_by_code()
    return {n for n in reads | bindings | connections if n not in PLATFORM}


# -- settings ---------------------------------------------------------------------------------------


def test_the_scan_finds_reads_of_every_kind() -> None:
    reads, bindings, connections, _ = settings_read_by_code()
    assert {"NSP_DRIFT_SUBSCRIPTIONS", "NSP_DRIFT_RULES_CONFIG", "AzureWebJobsStorage__tableServiceUri"} <= reads
    assert "NSP_DRIFT_DESTINATIONS" in reads, "a setting read through a module constant (SETTING) is resolved"
    assert "NSP_DRIFT_SWEEP_SCHEDULE" in bindings and "AzureWebJobsStorage" in connections


def test_dynamic_setting_reads_are_only_the_destination_secrets() -> None:
    *_, dynamic = settings_read_by_code()
    assert set(dynamic) <= DYNAMIC_READS, (
        f"{sorted(set(dynamic) - DYNAMIC_READS)} read(s) an app setting whose name is computed at run time: "
        "infra cannot set it; use a constant name, or wire it like the destination secrets"
    )


def test_every_setting_the_code_reads_is_documented() -> None:
    for name in sorted(app_setting_reads()):
        base = name.split("__", 1)[0]
        assert base in DOCUMENTED, f"{name} is read by the code but not in shared/entrypoints/settings.py DOCUMENTED"


def test_every_setting_the_code_reads_is_set_in_azure() -> None:
    settings = app_settings()
    for name in sorted(app_setting_reads() | set(DOCUMENTED)):
        if name in NOT_IN_AZURE:
            continue
        assert name in settings, f"{name} is read by the code but infra/app/appsettings.bicep does not set it"
    # the connection-string form is replaced by the identity-based one
    assert settings["AzureWebJobsStorage__credential"] == "'managedidentity'"
    for service in ("blob", "queue", "table"):
        value = settings[f"AzureWebJobsStorage__{service}ServiceUri"]
        assert value.startswith(f"'https://${{storageAccountName}}.{service}."), value


def test_every_nsp_drift_setting_in_azure_is_documented() -> None:
    for name in app_settings():
        if name.startswith("NSP_DRIFT_"):
            assert name in DOCUMENTED, f"infra sets {name}, which shared/entrypoints/settings.py does not document"
    for name in NOT_IN_AZURE:
        assert name in DOCUMENTED, f"{name} is listed as not-in-Azure but is not a documented setting"
        assert name not in app_settings(), f"{name} is listed as not-in-Azure but infra sets it"


def test_bindings_resolve_in_azure() -> None:
    _, bindings, connections, _ = settings_read_by_code()
    settings = app_settings()
    for name in bindings:
        assert name in settings, f"%{name}% is a binding expression: the function fails to index without it"
    for connection in connections:
        assert f"{connection}__queueServiceUri" in settings and f"{connection}__credential" in settings


def test_no_flex_deprecated_setting_and_entra_telemetry() -> None:
    settings = app_settings()
    assert not FLEX_DEPRECATED & set(settings)
    assert settings["APPLICATIONINSIGHTS_AUTHENTICATION_STRING"] == "'Authorization=AAD'"
    assert "APPLICATIONINSIGHTS_CONNECTION_STRING" in settings


def test_defaults_match_local_settings_example() -> None:
    example = json.loads((ROOT / "local.settings.json.example").read_text(encoding="utf-8"))["Values"]
    params = template("infra/main.bicep").params()
    parameters = (INFRA / "main.parameters.json").read_text(encoding="utf-8")
    for setting, param in {
        "NSP_DRIFT_SWEEP_SCHEDULE": "sweepSchedule",
        "NSP_DRIFT_FULL_SWEEP_SCHEDULE": "fullSweepSchedule",
        "NSP_DRIFT_COALESCE_SECONDS": "coalesceSeconds",
        "NSP_DRIFT_STATE_TABLE_PREFIX": "stateTablePrefix",
    }.items():
        if setting not in example:
            continue
        default = (params.get(param) or "").strip("'")
        assert default == example[setting], f"{param} defaults to {default!r}, the example has {example[setting]!r}"
        assert f"${{{setting}={example[setting]}}}" in parameters, f"main.parameters.json default of {setting}"


def test_queue_and_table_names_are_the_codes() -> None:
    main = template("infra/main.bicep")
    assert re.search(rf"^var queueName = '{re.escape(QUEUE_NAME)}'$", main.code, re.M)
    store = (ROOT / "shared" / "adapters" / "state" / "table_store.py").read_text(encoding="utf-8")
    suffixes = re.findall(r'f"\{prefix\}(\w+)"', store)
    assert suffixes, "table_store.py names its tables f'{prefix}<suffix>'"
    match = re.search(r"^var tableSuffixes = (\[.*\])$", main.code, re.M)
    assert match and _strings(match.group(1)) == suffixes


# -- Event Grid -------------------------------------------------------------------------------------


def _advanced_filters(bicep: Bicep) -> list[list[dict[str, object]]]:
    """Per event subscription: its advanced filters as {operatorType, key, values}."""
    result = []
    for _, _, body in bicep.resources("Microsoft.EventGrid/systemTopics/eventSubscriptions"):
        inner = Bicep(bicep.path, body)
        match = re.search(r"advancedFilters\s*:", inner.code)
        if not match:
            result.append([])
            continue
        filters_block = inner.block(match.end())
        filters = []
        for item in re.finditer(r"operatorType\s*:\s*'(\w+)'", filters_block):
            start = filters_block.rfind("{", 0, item.start())
            end = filters_block.find("}", item.end())
            obj = filters_block[start : end + 1]
            key = re.search(r"key\s*:\s*'([^']+)'", obj)
            values = re.search(r"values\s*:\s*(\[.*?\])", obj, re.S)
            filters.append(
                {
                    "operatorType": item.group(1),
                    "key": key.group(1) if key else None,
                    "values": _strings(values.group(1)) if values else [],
                }
            )
        result.append(filters)
    return result


def test_event_filter_is_exactly_the_handled_operations() -> None:
    subscriptions = _advanced_filters(template("infra/eventgrid/arm-subscription.bicep"))
    assert len(subscriptions) == 1
    (operation_filter,) = [f for f in subscriptions[0] if f["key"] == "data.operationName"]
    assert operation_filter["operatorType"] == "StringBeginsWith"
    assert tuple(operation_filter["values"]) == HANDLED_OPERATIONS


def test_event_filters_respect_event_grid_limits() -> None:
    everything = [
        f
        for rel in templates()
        if rel.startswith("infra/eventgrid")
        for sub in _advanced_filters(template(rel))
        for f in sub
    ]
    assert everything
    for rel in templates():
        for filters in _advanced_filters(template(rel)):
            assert len(filters) <= 25
            assert sum(len(f["values"]) for f in filters) <= 25, f"{rel}: over 25 advanced-filter values"
            for f in filters:
                assert all(len(v) <= 512 for v in f["values"])
    # even counted across every event subscription nsp-drift may create in one subscription
    assert sum(len(f["values"]) for f in everything) <= 25


def test_event_subscription_delivery_settings() -> None:
    for rel in ("infra/eventgrid/arm-subscription.bicep", "infra/eventgrid/arn-subscription.bicep"):
        (_, _, body) = template(rel).resources("Microsoft.EventGrid/systemTopics/eventSubscriptions")[0]
        assert re.search(r"endpointType: 'AzureFunction'", body)
        assert re.search(r"resourceId: functionResourceId\b", body)
        assert re.search(r"maxEventsPerBatch: 1\b", body)
        assert re.search(r"maxDeliveryAttempts: 30\b", body) and re.search(r"eventTimeToLiveInMinutes: 1440\b", body)
        assert "deadLetterWithResourceIdentity" in body and "endpointType: 'StorageBlob'" in body
        assert "deadLetterDestination:" not in body.split("deadLetterWithResourceIdentity", 1)[0], (
            "key-based dead letters"
        )
    arm = template("infra/eventgrid/arm-subscription.bicep").resources(
        "Microsoft.EventGrid/systemTopics/eventSubscriptions"
    )
    types = re.search(r"includedEventTypes\s*:\s*(\[.*?\])", arm[0][2], re.S)
    assert types and set(_strings(types.group(1))) == {
        "Microsoft.Resources.ResourceWriteSuccess",
        "Microsoft.Resources.ResourceDeleteSuccess",
        "Microsoft.Resources.ResourceActionSuccess",
    }
    arn = _advanced_filters(template("infra/eventgrid/arn-subscription.bicep"))
    assert arn == [[{"operatorType": "StringIn", "key": "data.resourceInfo.type", "values": [STORAGE]}]]


def _event_grid_function() -> str:
    tree = ast.parse((ROOT / "handlers" / "events.py").read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef):
            decorators = [
                d for d in node.decorator_list if isinstance(d, ast.Call) and isinstance(d.func, ast.Attribute)
            ]
            if any(d.func.attr == "event_grid_trigger" for d in decorators):
                names = [d.args[0].value for d in decorators if d.func.attr == "function_name" and d.args]
                return str(names[0]) if names else node.name
    raise AssertionError("handlers/events.py has no Event Grid trigger")


def test_event_subscription_targets_the_registered_function() -> None:
    name = _event_grid_function()
    eventgrid = template("infra/eventgrid.bicep")
    assert eventgrid.params()["functionName"] == f"'{name}'"
    assert "'${functionAppId}/functions/${functionName}'" in eventgrid.code
    topics = _strings(
        " ".join(b for _, _, b in template("infra/eventgrid/topic.bicep").resources("Microsoft.EventGrid"))
    )
    assert "global" in topics
    for script in SCRIPTS:
        assert f"/functions/{name}?" in script.read_text(encoding="utf-8"), f"{script.name} waits for {name}"


# -- roles ------------------------------------------------------------------------------------------


def role_assignments() -> list[tuple[str, str, str | None, str, str]]:
    """(file, role GUID, scope resource type or None, principal expression, principalType expression)."""
    found = []
    for rel, bicep in templates().items():
        for symbol, _, body in bicep.resources("Microsoft.Authorization/roleAssignments"):
            guids = set(GUID.findall(body))
            assert len(guids) == 1, f"{rel}:{symbol} names exactly one role: {guids}"
            (role,) = guids
            definition = re.search(
                r"roleDefinitionId:\s*(\w+)\('Microsoft\.Authorization/roleDefinitions', '([^']+)'\)", body
            )
            assert definition and definition.group(2) == role, f"{rel}:{symbol} roleDefinitionId"
            scope = re.search(r"^\s*scope:\s*(\w+)\s*$", body, re.M)
            principal = re.search(r"principalId:\s*(\w+)", body)
            principal_type = re.search(r"principalType:\s*(\S+)", body)
            assert principal and principal_type, f"{rel}:{symbol} names its principal and principalType"
            scope_type = bicep.resource_type(scope.group(1)) if scope else None
            if scope_type is None:
                assert bicep.target_scope() in {"subscription", "managementGroup"}, (
                    f"{rel}:{symbol} has no scope: it would land on the whole resource group"
                )
            found.append((rel, role, scope_type, principal.group(1), principal_type.group(1)))
    return found


def test_only_the_expected_roles_at_the_expected_scopes() -> None:
    assignments = role_assignments()
    seen: dict[str, set[tuple[str, str | None, str]]] = {}
    for rel, role, scope_type, principal, _ in assignments:
        assert role in EXPECTED_ROLES, f"{rel}: unexpected role {role}"
        seen.setdefault(role, set()).add((rel, scope_type, principal))
    assert seen == EXPECTED_ROLES
    for rel, role, _, principal, principal_type in assignments:
        if principal != "deployerPrincipalId":
            assert principal_type == "'ServicePrincipal'", f"{rel}: {role} is for a managed identity"
    for rel, bicep in templates().items():
        for guid in GUID.findall(bicep.code):
            assert guid in EXPECTED_ROLES, f"{rel}: GUID {guid} outside the role table"


def test_reader_is_granted_where_it_must_be() -> None:
    assert template("infra/app/reader.bicep").target_scope() == "subscription"
    assert template("infra/app/reader-mg.bicep").target_scope() == "managementGroup"
    main = template("infra/main.bicep")
    loop = re.search(r"^module\s+reader\s+'app/reader\.bicep'\s*=", main.code, re.M)
    assert loop
    body = main.block(loop.end())
    assert re.search(r"for\s+(\w+)\s+in\s+readerSubscriptions\s*:", body) and "scope: subscription(" in body
    assert "reader-mg.bicep" in SCRIPTS[0].read_text(encoding="utf-8")
    assert "reader-mg.bicep" in SCRIPTS[1].read_text(encoding="utf-8")


def test_data_roles_are_on_the_apps_own_storage_account() -> None:
    main = template("infra/main.bicep")
    rbac = re.search(r"^module\s+rbac\s+'app/rbac\.bicep'\s*=", main.code, re.M)
    storage = re.search(r"^module\s+storage\s+'app/storage\.bicep'\s*=", main.code, re.M)
    assert rbac and storage
    assert re.search(r"storageAccountName:\s*storage\.outputs\.name\b", main.block(rbac.end()))
    assert re.search(r"^output AZURE_STORAGE_ACCOUNT_ID string = storage\.outputs\.id$", main.code, re.M)
    for script in SCRIPTS:  # the dead-letter account handed to eventgrid.bicep is that output
        text = script.read_text(encoding="utf-8")
        assert re.search(r'deadLetterStorageAccountId="?\$\{?(env:)?AZURE_STORAGE_ACCOUNT_ID', text)
    deadletter = template("infra/eventgrid/deadletter-rbac.bicep")
    assert re.search(r"^resource container '.*containers@[^']+' existing", deadletter.code, re.M)


# -- secrets and hardening --------------------------------------------------------------------------

SECRET_PATTERNS = {
    "storage account key": r"AccountKey\s*=",
    "connection string": r"DefaultEndpointsProtocol\s*=",
    "shared access key": r"SharedAccessKey\s*=|SharedAccessSignature",
    "SAS or Workflows signature": r"[?&]sig=",
    "GitHub token": r"\b(?:ghp|gho|ghs|ghu)_[A-Za-z0-9]{20,}|github_pat_",
    "Standard Webhooks secret": r"whsec_[A-Za-z0-9+/=]{8,}",
    "Slack-style token": r"xox[abprs]-",
    "bearer token": r"Bearer\s+ey",
    "private key": r"-----BEGIN",
    "key retrieval": r"\blistKeys\(|\blistAccountSas\(|\blistServiceSas\(|\.listKeys\(",
}


def deployment_files() -> list[Path]:
    files = [
        *sorted(INFRA.rglob("*.bicep")),
        *sorted(INFRA.rglob("*.json")),
        ROOT / "azure.yaml",
        *SCRIPTS,
        ROOT / "local.settings.json.example",
    ]
    return [f for f in files if f.exists()]


def test_no_secret_literal_in_deployment_files() -> None:
    for path in deployment_files():
        text = path.read_text(encoding="utf-8")
        for what, pattern in SECRET_PATTERNS.items():
            assert not re.search(pattern, text), f"{path.relative_to(ROOT)}: {what}"
    for rel, bicep in templates().items():
        assert "@secure()" not in bicep.code, f"{rel}: no secret is ever a parameter"


def test_destination_secrets_are_key_vault_references_only() -> None:
    settings = app_settings()
    secretish = re.compile(r"(?i)(_URL|_SECRET|_TOKEN|_KEY|_PASSWORD|_PAT)$")
    assert not [k for k in settings if secretish.search(k)], "a secret-looking setting with a plain value"
    bicep = template("infra/app/appsettings.bicep")
    references = [m.start() for m in re.finditer(r"@Microsoft\.KeyVault\(", bicep.code)]
    assert len(references) == 1, "one place builds the references"
    assert re.search(r"'@Microsoft\.KeyVault\(SecretUri=\$\{keyVaultUri\}secrets/", bicep.code)
    keys = re.search(r"^var secretSettingKeys = (\[.*\])$", bicep.code, re.M)
    assert keys
    destinations = (ROOT / "shared" / "adapters" / "notify" / "destinations.py").read_text(encoding="utf-8")
    declared = re.search(r"^SETTING_KEYS\s*=\s*(\(.*?\))", destinations, re.M)
    expected = ast.literal_eval(declared.group(1)) if declared else ("url_setting", "secret_setting", "token_setting")
    assert tuple(_strings(keys.group(1))) == tuple(expected)
    assert "properties: union(secretReferences, baseSettings)" in bicep.code
    assert all(f'"{k}"' in destinations for k in expected), "the destinations still name settings with these keys"


def test_identity_only_storage_telemetry_and_vault() -> None:
    storage = template("infra/app/storage.bicep").code
    for setting in ("allowSharedKeyAccess: false", "allowBlobPublicAccess: false", "minimumTlsVersion: 'TLS1_2'"):
        assert setting in storage
    assert "DisableLocalAuth: true" in template("infra/app/monitoring.bicep").code
    assert "enableRbacAuthorization: true" in template("infra/app/keyvault.bicep").code


def test_flex_consumption_function_app() -> None:
    api = template("infra/app/api.bicep")
    code = api.code
    assert "name: 'FC1'" in code and "tier: 'FlexConsumption'" in code and "reserved: true" in code
    assert "kind: 'functionapp,linux'" in code and "type: 'SystemAssigned'" in code
    assert "'azd-service-name': 'api'" in code
    runtime = re.search(r"runtime\s*:\s*\{(.*?)\}", code, re.S)
    assert runtime and "name: 'python'" in runtime.group(1) and "version: pythonVersion" in runtime.group(1)
    assert api.params()["pythonVersion"] == "'3.11'"
    assert "maximumInstanceCount: maximumInstanceCount" in code and "instanceMemoryMB: instanceMemoryMB" in code
    deployment = re.search(r"deployment\s*:\s*\{", code)
    assert deployment and "type: 'SystemAssignedIdentity'" in api.block(deployment.end())
    assert "appSettings" not in code, "app settings live in appsettings.bicep, after the role assignments"
    main = template("infra/main.bicep")
    settings = re.search(r"^module\s+appSettings\s+'app/appsettings\.bicep'\s*=", main.code, re.M)
    assert settings and "dependsOn: [rbac]" in main.block(settings.end())


def test_templates_are_well_formed() -> None:
    for rel, bicep in templates().items():
        depth = 0
        for ch in bicep.masked:
            depth += ch in "{[("
            depth -= ch in "}])"
            assert depth >= 0, f"{rel}: a closing bracket too many"
        assert depth == 0, f"{rel}: unbalanced brackets"
        for match in re.finditer(r"^module\s+\w+\s+'([^']+)'", bicep.code, re.M):
            assert (bicep.path.parent / match.group(1)).is_file(), f"{rel}: module {match.group(1)} is missing"
    referenced = {
        (b.path.parent / m).resolve()
        for b in templates().values()
        for m in re.findall(r"^module\s+\w+\s+'([^']+)'", b.code, re.M)
    }
    roots = {INFRA / "main.bicep", INFRA / "eventgrid.bicep", INFRA / "app" / "reader-mg.bicep"}
    for bicep in templates().values():
        assert bicep.path.resolve() in referenced or bicep.path in roots, f"{bicep.rel} is never deployed"


def test_templates_parse_with_pycep_when_available() -> None:
    pycep = pytest.importorskip("pycep", reason="pycep-parser is not installed (pip install pycep-parser)")
    for rel, bicep in templates().items():
        try:
            pycep.BicepParser().parse(text=bicep.text)
        except Exception as exc:  # the parser raises lark's own error types
            pytest.fail(f"{rel}: {type(exc).__name__}: {exc}")


# -- azd --------------------------------------------------------------------------------------------

AZD_BUILT_IN = {
    "AZURE_ENV_NAME",
    "AZURE_LOCATION",
    "AZURE_SUBSCRIPTION_ID",
    "AZURE_PRINCIPAL_ID",
    "AZURE_PRINCIPAL_TYPE",
}
OPTIONAL_INPUTS = {"NSPDRIFT_RESOURCE_NOTIFICATIONS"}  # read by the hook only


def test_azure_yaml_deploys_the_app_then_runs_the_postdeploy_hook() -> None:
    spec = yaml.safe_load((ROOT / "azure.yaml").read_text(encoding="utf-8"))
    assert spec["services"]["api"] == {"project": ".", "language": "python", "host": "function"}
    hook = spec["hooks"]["postdeploy"]
    assert (hook["posix"]["shell"], hook["windows"]["shell"]) == ("sh", "pwsh")
    runs = {ROOT / hook["posix"]["run"], ROOT / hook["windows"]["run"]}
    assert runs == set(SCRIPTS)
    assert all(h["continueOnError"] is False for h in hook.values())
    for script in SCRIPTS:
        text = script.read_text(encoding="utf-8")
        assert "infra/eventgrid.bicep" in text and "deployment sub create" in text and "--subscription" in text


def test_main_parameters_map_the_azd_environment() -> None:
    parameters = json.loads((INFRA / "main.parameters.json").read_text(encoding="utf-8"))["parameters"]
    params = template("infra/main.bicep").params()
    assert set(parameters) <= set(params), f"unknown parameter(s): {set(parameters) - set(params)}"
    assert {p for p, default in params.items() if default is None} <= set(parameters), (
        "a required parameter is unmapped"
    )
    assert parameters["environmentName"]["value"] == "${AZURE_ENV_NAME}"
    assert parameters["location"]["value"] == "${AZURE_LOCATION}"
    assert parameters["principalId"]["value"] == "${AZURE_PRINCIPAL_ID}"
    assert re.fullmatch(
        r"\$\{NSPDRIFT_MONITORED_SUBSCRIPTION_IDS=\[\]\}", parameters["monitoredSubscriptionIds"]["value"]
    )
    names = re.findall(r"\$\{([A-Z_]+)", json.dumps(parameters))
    for name in names:
        if name.startswith("NSP_DRIFT_"):
            assert name in DOCUMENTED, f"azd variable {name} looks like an app setting but is not one"
        else:
            assert name.startswith(("AZURE_", "NSPDRIFT_")), name


def test_the_hook_reads_only_what_azd_provides() -> None:
    outputs = template("infra/main.bicep").outputs()
    read_by: dict[str, set[str]] = {}
    for script in SCRIPTS:
        text = script.read_text(encoding="utf-8")
        pattern = (
            r"\$\{?(?:env:)?((?:AZURE|NSPDRIFT)_[A-Z_]+)"
            if script.suffix == ".sh"
            else r"\$env:((?:AZURE|NSPDRIFT)_[A-Z_]+)"
        )
        names = set(re.findall(pattern, text)) | set(re.findall(r"'((?:AZURE|NSPDRIFT)_[A-Z_]+)'", text))
        if script.suffix == ".sh":
            names |= set(re.findall(r"\b((?:AZURE|NSPDRIFT)_[A-Z_]+)\b(?= |\\|;)", text.split("; do", 1)[0]))
        read_by[script.name] = names
        for name in names:
            assert name in outputs | AZD_BUILT_IN | OPTIONAL_INPUTS, f"{script.name} reads {name}, which nothing sets"
        for param in re.findall(r"\b([a-z]+[A-Z][A-Za-z]*)=", text):
            known = (
                template("infra/eventgrid.bicep").params().keys()
                | template("infra/app/reader-mg.bicep").params().keys()
            )
            assert param in known, f"{script.name} passes {param}=, which no template declares"
    assert read_by["postdeploy.sh"] == read_by["postdeploy.ps1"], "the two hooks read the same variables"
    required = {p for p, d in template("infra/eventgrid.bicep").params().items() if d is None}
    for script in SCRIPTS:
        assert all(f"{p}=" in script.read_text(encoding="utf-8") for p in required)


# -- host.json and local settings --------------------------------------------------------------------


def test_host_json_is_valid_against_the_schemastore_schema() -> None:
    if not HOST_SCHEMA.is_file():
        pytest.fail(f"{HOST_SCHEMA} is missing: the steering repo's shared/ must sit beside this repo")
    schema = json.loads(HOST_SCHEMA.read_text(encoding="utf-8"))
    validator = jsonschema.Draft7Validator(schema)
    host = json.loads((ROOT / "host.json").read_text(encoding="utf-8"))
    validator.validate(host)
    assert host["version"] == "2.0"
    assert list(validator.iter_errors({**host, "functionTimeout": "10 minutes"})), "the schema rejects a bad value"


def test_local_settings_example_is_for_azurite_and_holds_no_secret() -> None:
    example = json.loads((ROOT / "local.settings.json.example").read_text(encoding="utf-8"))
    values = example["Values"]
    assert example.get("IsEncrypted") is False
    assert values["FUNCTIONS_WORKER_RUNTIME"] == "python"
    assert values["AzureWebJobsStorage"] == "UseDevelopmentStorage=true"
    for name in values:
        assert name == "FUNCTIONS_WORKER_RUNTIME" or name.split("__", 1)[0] in DOCUMENTED, f"{name} is undocumented"
