"""Security review, in code: pinned and hashed dependencies, no secret in checked-in settings,
no HTTP endpoint without a function key. (Redaction and webhook signing: tests/test_notify.py.)"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from packaging.markers import Marker

import function_app

ROOT = Path(__file__).resolve().parents[1]
SECRETISH = re.compile(r"AccountKey=|SharedAccessSignature=|[?&]sig=|ghp_|github_pat_|whsec_|Bearer\s", re.IGNORECASE)


SUPPORTED_PYTHONS = ("3.11", "3.12", "3.13")


def pins(text: str, python: str = "3.11") -> dict[str, str]:
    """name -> version of every ``name==version`` line whose environment marker admits ``python``."""
    environment = {
        "python_version": python,
        "python_full_version": f"{python}.0",
        "implementation_name": "cpython",
        "platform_python_implementation": "CPython",
        "sys_platform": "linux",
        "platform_system": "Linux",
    }
    found = {}
    for line in text.splitlines():
        match = re.match(r"^([A-Za-z0-9_.-]+)(?:\[[^\]]*\])?==([^\s;\\]+)\s*(?:;([^\\]*))?", line)
        if match and (not match.group(3) or Marker(match.group(3).strip()).evaluate(environment)):
            name = match.group(1).lower().replace("_", "-")
            assert name not in found, f"{name} is pinned twice for Python {python}"
            found[name] = match.group(2)
    return found


@pytest.mark.parametrize("python", SUPPORTED_PYTHONS)
def test_every_runtime_pin_is_locked_with_hashes(python: str) -> None:
    requirements = pins((ROOT / "requirements.txt").read_text(), python)
    lock_text = (ROOT / "requirements.lock").read_text()
    locked = pins(lock_text, python)
    assert requirements, "requirements.txt pins its runtime dependencies"
    assert "azure-functions" in requirements and "azure-functions" in locked
    for name, version in requirements.items():
        assert locked.get(name) == version, f"{name}=={version} is not the locked version ({locked.get(name)})"
    blocks = [b for b in re.split(r"\n(?=[A-Za-z0-9_.-]+==)", lock_text) if re.match(r"[A-Za-z0-9_.-]+==", b)]
    assert blocks and all("--hash=sha256:" in b for b in blocks)


def test_checked_in_settings_hold_no_secret() -> None:
    example = json.loads((ROOT / "local.settings.json.example").read_text())
    values = example["Values"]
    assert values["AzureWebJobsStorage"] == "UseDevelopmentStorage=true"
    assert values["FUNCTIONS_WORKER_RUNTIME"] == "python"
    for name, value in values.items():
        assert not SECRETISH.search(value), f"{name} looks like a secret"
    assert "local.settings.json" in (ROOT / ".gitignore").read_text().splitlines()


def test_no_http_endpoint_without_a_function_key() -> None:
    app = function_app.app
    for fn in app._function_builders:  # no get_functions() here: it may be called once per app
        for binding in fn._function.get_bindings():
            data = binding.get_dict_repr()
            if data.get("type") == "httpTrigger":
                assert str(data.get("authLevel", "")).lower() in {"function", "admin"}, fn._function.get_function_name()
