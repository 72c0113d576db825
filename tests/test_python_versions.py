"""Python 3.11 to 3.13: every place that names the supported versions agrees, and on 3.13 the app
installs from its lock and the 3.13 worker indexes it.

From Python 3.13 the Functions host runs a proxy worker that hands indexing to the execution runtime
``azure-functions-runtime`` (pinned in requirements.txt), with ``azure-functions`` 2.x. This test
finds a Python 3.13 on the machine (``NSP_DRIFT_PYTHON313``, ``python3.13`` on PATH, or pyenv),
builds a venv from ``requirements.lock`` with hashes (cached in the temp folder, keyed by the lock
and the interpreter, so only the first run pays for it), and indexes ``function_app.py`` there the
way the worker does (tests/worker_index.py). Without a 3.13 it skips and says why.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "requirements.lock"
SCRIPT = ROOT / "tests" / "worker_index.py"
WANTED = (3, 13)
SUPPORTED = ("3.11", "3.12", "3.13")


def _environment(python: str) -> dict[str, str]:
    return {"python_version": python, "python_full_version": f"{python}.0"}


def _pins_for(lines: list[str], python: str) -> dict[str, str]:
    found: dict[str, str] = {}
    for line in lines:
        requirement = Requirement(line)
        if requirement.marker is None or requirement.marker.evaluate(_environment(python)):
            assert requirement.name not in found, f"{requirement.name} pinned twice for Python {python}"
            found[requirement.name] = str(requirement.specifier)
    return found


def test_the_supported_versions_agree_everywhere() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requires = SpecifierSet(project["requires-python"])
    assert [v for v in ("3.10", *SUPPORTED, "3.14") if f"{v}.0" in requires] == list(SUPPORTED)
    classified = [
        c.rsplit(" :: ", 1)[1] for c in project["classifiers"] if c.startswith("Programming Language :: Python :: 3.")
    ]
    assert classified == list(SUPPORTED)
    for bicep in ("infra/main.bicep", "infra/app/api.bicep"):
        allowed = re.search(r"@allowed\(\[([^\]]*)\]\)\s*param pythonVersion", (ROOT / bicep).read_text())
        assert allowed, f"{bicep} declares pythonVersion with its allowed values"
        assert re.findall(r"'([^']+)'", allowed.group(1)) == list(SUPPORTED), bicep
    readme = (ROOT / "README.md").read_text()
    assert "Supported Python versions: 3.11, 3.12 and 3.13" in readme
    requirements = [
        line.split("#", 1)[0].strip()
        for line in (ROOT / "requirements.txt").read_text().splitlines()
        if line.split("#", 1)[0].strip()
    ]
    for python in SUPPORTED:
        pinned = _pins_for(requirements, python)
        assert pinned == _pins_for(project["dependencies"], python), (
            f"pyproject and requirements.txt differ on {python}"
        )
        major = 2 if python == "3.13" else 1  # azure-functions 1.x requires Python < 3.13, 2.x >= 3.13
        assert pinned["azure-functions"].startswith(f"=={major}."), (python, pinned["azure-functions"])
        assert ("azure-functions-runtime" in pinned) == (python == "3.13")


def _version_of(python: str) -> tuple[int, int] | None:
    try:
        out = subprocess.run(
            [python, "-c", "import sys; print(sys.version_info[0], sys.version_info[1])"],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout.split()
    except (OSError, subprocess.SubprocessError):
        return None
    return (int(out[0]), int(out[1])) if len(out) == 2 else None


def _pyenv_candidates() -> list[str]:
    pyenv = shutil.which("pyenv")
    if pyenv is None:
        return []
    try:
        versions = subprocess.run(
            [pyenv, "versions", "--bare"], capture_output=True, text=True, timeout=60, check=True
        ).stdout.split()
        found = []
        for version in sorted((v for v in versions if v.startswith("3.13")), reverse=True):
            prefix = subprocess.run(
                [pyenv, "prefix", version], capture_output=True, text=True, timeout=60, check=True
            ).stdout.strip()
            found.append(str(Path(prefix) / "bin" / "python3"))
        return found
    except (OSError, subprocess.SubprocessError):
        return []


def find_python313(include_running: bool = True) -> tuple[str | None, str]:
    """(an interpreter of Python 3.13, how it was found) or (None, why there is none)."""
    tried = []
    configured = os.environ.get("NSP_DRIFT_PYTHON313")
    candidates = [sys.executable] if include_running and sys.version_info[:2] == WANTED else []
    candidates += [configured] if configured else []
    candidates += [p for p in (shutil.which("python3.13"),) if p]
    candidates += _pyenv_candidates()
    for candidate in candidates:
        version = _version_of(candidate)
        if version == WANTED:
            return candidate, f"{candidate}"
        tried.append(f"{candidate} ({'not runnable' if version is None else '.'.join(map(str, version))})")
    tried_text = "; tried " + ", ".join(tried) if tried else ""
    return None, (
        "no Python 3.13 on this machine (set NSP_DRIFT_PYTHON313, put python3.13 on PATH or install it "
        f"with pyenv){tried_text}"
    )


def venv_for(python: str) -> Path:
    """A venv of ``python`` with ``requirements.lock`` installed (hashes required), built once per
    lock and interpreter; built aside and renamed into place, so an interrupted build is never used."""
    key = hashlib.sha256(LOCK.read_bytes() + Path(python).resolve().as_posix().encode()).hexdigest()[:16]
    home = Path(tempfile.gettempdir()) / f"nsp-drift-py313-{key}"
    ready = home / "ready"
    if ready.exists():
        return home
    build = Path(tempfile.mkdtemp(prefix="nsp-drift-py313-build-"))
    try:
        subprocess.run([python, "-m", "venv", str(build)], check=True, timeout=300)
        pip = [str(build / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
        done = subprocess.run(
            [*pip, "--require-hashes", "-r", str(LOCK)], check=False, capture_output=True, text=True, timeout=900
        )
        assert done.returncode == 0, f"pip install -r requirements.lock failed on Python 3.13:\n{done.stderr[-4000:]}"
        (build / "ready").write_text(LOCK.name)
        # Only bin/python is used (a venv's interpreter finds its pyvenv.cfg beside it, wherever it is).
        with contextlib.suppress(OSError):  # another run may have put its own in place first
            build.rename(home)
        assert ready.exists(), f"could not put the Python 3.13 venv in place at {home}"
        return home
    finally:
        if build.exists() and build != home:
            shutil.rmtree(build, ignore_errors=True)


def index(python: str, mode: str) -> dict[str, Any]:
    done = subprocess.run(
        [python, str(SCRIPT), mode, str(ROOT)], check=False, capture_output=True, text=True, timeout=300, cwd=ROOT
    )
    assert done.returncode == 0, done.stderr[-4000:]
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


@pytest.fixture(scope="module")
def python313() -> str:
    python, how = find_python313()
    if python is None:
        pytest.skip(how)
    return python


def test_the_313_worker_indexes_the_app_like_the_sdk_does(python313: str) -> None:
    venv = venv_for(python313)
    worker = index(str(venv / "bin" / "python"), "runtime")
    assert "error" not in worker, f"the Python 3.13 worker could not index function_app.py: {worker['error']}"
    assert worker["python"].startswith("3.13.")
    assert worker["azure_functions"].startswith("2.")  # the 3.13 pin of requirements.txt
    assert worker["runtime"] == _pin("azure-functions-runtime")
    functions = worker["functions"]
    assert sorted(functions) == [
        "evaluate_target",
        "on_resource_event",
        "reconcile_full_sweep",
        "reconcile_sweep",
        "status",
    ]
    for name, fx in functions.items():
        assert fx["worker_indexed"] == "True" and fx["entry_point"] == name and fx["script_file"] == "function_app.py"
    # The same functions and bindings as this interpreter's azure-functions (the 3.11/3.12 worker).
    sdk = index(sys.executable, "sdk")
    assert {n: f["bindings"] for n, f in functions.items()} == {n: f["bindings"] for n, f in sdk["functions"].items()}
    assert {n: f["raw_bindings"] for n, f in functions.items()} == {
        n: f["raw_bindings"] for n, f in sdk["functions"].items()
    }


def test_the_313_worker_reports_an_app_it_cannot_index(python313: str, tmp_path: Path) -> None:
    # The check can fail: a parameter the decorators do not declare stops indexing with the reason.
    (tmp_path / "function_app.py").write_text(
        "import azure.functions as func\n"
        "app = func.FunctionApp()\n"
        "@app.queue_trigger(arg_name='msg', queue_name='q', connection='AzureWebJobsStorage')\n"
        "def f(message: func.QueueMessage) -> None:\n"
        "    pass\n"
    )
    venv = venv_for(python313)
    done = subprocess.run(
        [str(venv / "bin" / "python"), str(SCRIPT), "runtime", str(tmp_path)],
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
    )
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert "FunctionLoadError" in result["error"] and "message" in result["error"]


def _pin(name: str) -> str:
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        if line.startswith(f"{name}=="):
            return line.split("==", 1)[1].split(";", 1)[0].strip()
    raise AssertionError(f"{name} is not pinned in requirements.txt")


def test_a_missing_313_is_a_skip_with_its_reason(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    missing = tmp_path / "python3.13"
    monkeypatch.setenv("NSP_DRIFT_PYTHON313", str(missing))
    monkeypatch.setenv("PATH", str(tmp_path))  # no python3.13, no pyenv
    python, why = find_python313(include_running=False)
    assert python is None
    assert why.startswith("no Python 3.13 on this machine") and f"{missing} (not runnable)" in why
