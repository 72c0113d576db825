"""The layer boundaries (pyproject's [tool.importlinter] contracts) hold, and they bite.

README, "Code map": shared/core is pure, shared/service talks to ports, shared/adapters do the I/O,
shared/wiring.py alone builds adapters, shared/entrypoints are what Functions and the shell call.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def lint_imports(cwd: Path, pythonpath: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(pythonpath)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--config", str(ROOT / "pyproject.toml"), "--no-cache"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


def test_lint_imports_passes() -> None:
    result = lint_imports(ROOT, ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_contracts_cover_the_layers() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["importlinter"]
    assert config["include_external_packages"] is True
    contracts = {c["id"]: c for c in config["contracts"]}
    assert contracts["layers"]["layers"] == [
        "shared.entrypoints",
        "shared.wiring",
        "shared.adapters",
        "shared.service",
        "shared.core",
    ]
    for pure in ("core-pure", "service-no-io"):
        assert {"azure", "aiohttp", "requests", "opentelemetry"} <= set(contracts[pure]["forbidden_modules"])
    assert {"shared.adapters", "shared.entrypoints"} <= set(contracts["service-inward"]["forbidden_modules"])
    assert "shared.entrypoints" in contracts["adapters-no-entrypoints"]["forbidden_modules"]
    for folder in ("core", "service", "adapters", "entrypoints"):
        assert (ROOT / "shared" / folder / "__init__.py").is_file()


def _copy(tmp: Path) -> Path:
    for name in ("shared", "handlers"):
        shutil.copytree(ROOT / name, tmp / name, ignore=shutil.ignore_patterns("__pycache__", "samples"))
    return tmp


def _break(tmp: Path, module: str, line: str) -> None:
    path = tmp.joinpath(*module.split(".")).with_suffix(".py")
    text = path.read_text(encoding="utf-8")
    path.write_text(
        text.replace("from __future__ import annotations\n", f"from __future__ import annotations\n{line}\n", 1)
    )


def test_core_importing_an_adapter_or_the_azure_sdk_breaks_the_contracts(tmp_path: Path) -> None:
    tree = _copy(tmp_path)
    _break(tree, "shared.core.model", "import shared.adapters.estate")
    _break(tree, "shared.core.drift", "import azure.core.exceptions")
    result = lint_imports(tree, tree)
    assert result.returncode == 1, result.stdout + result.stderr
    out = " ".join(result.stdout.split())
    assert "The core imports no service, adapter, wiring or entry point BROKEN" in out
    assert "The core imports no Azure SDK, HTTP, retry or telemetry library BROKEN" in out
    assert "shared.core.model -> shared.adapters.estate" in out
    assert "shared.core.drift -> azure " in out + " "


def test_a_service_importing_an_adapter_breaks_the_contracts(tmp_path: Path) -> None:
    tree = _copy(tmp_path)
    _break(tree, "shared.service.scan", "import shared.adapters.arm_reader")
    result = lint_imports(tree, tree)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Services import no adapter, wiring or entry point BROKEN" in " ".join(result.stdout.split())


def _readme_section(title: str) -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index(title)
    return text[start : text.index("\n## ", start + 1)]


def test_readme_code_map_names_every_folder_of_shared() -> None:
    section = _readme_section("## Code map")
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    named = {cell.strip("`/") for row in rows for cell in row.split("|")[1].replace(",", " ").split() if "`" in cell}
    folders = {
        str(p.relative_to(ROOT / "shared"))
        for p in (ROOT / "shared").rglob("*")
        if p.is_dir() and p.name != "__pycache__"
    }
    assert folders <= named, f"folders missing from the README's Code map: {sorted(folders - named)}"
    for name in named - {"tests", "bench", "infra", "scripts", "docs", "handlers", "function_app.py"}:
        assert (ROOT / "shared" / name).exists(), f"Code map names shared/{name}, which does not exist"


def test_readme_flow_diagram_names_modules_that_exist() -> None:
    section = _readme_section("## What it does")
    diagram = section[section.index("```") : section.index("```", section.index("```") + 3)]
    refs = set(re.findall(r"\b((?:core|service|adapters|entrypoints|handlers)/[\w/]+|wiring\.py)", diagram))
    assert len(refs) >= 12, refs
    for ref in refs:
        path = ref.rstrip("/")
        base = ROOT / path if path.startswith("handlers") else ROOT / "shared" / path
        assert base.exists() or base.with_suffix(".py").exists(), f"the flow diagram names {ref}, which does not exist"
    for step in ("handle_event", "intake", "parse_event", "targets_for", "evaluate_window", "plan_sweep", "Dispatcher"):
        assert step in diagram
