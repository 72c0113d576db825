"""Lint and types are part of the test command, so CI fails on them like on any test."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, check=False)


def test_ruff_is_clean() -> None:
    result = run("ruff", "check", "shared", "handlers", "function_app.py", "tests", "bench")
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_strict_is_clean_on_shared_and_handlers() -> None:
    result = run("mypy", "--strict", "shared", "handlers")
    assert result.returncode == 0, result.stdout + result.stderr


def test_vulture_finds_no_dead_code() -> None:
    # The Functions triggers are called through their Blueprint decorators, never by name:
    # [tool.vulture] in pyproject.toml ignores those decorators and nothing else.
    result = run("vulture", "shared", "handlers", "--min-confidence", "80")
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
