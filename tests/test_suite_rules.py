"""Rules the suite keeps so that it passes on any machine, busy or idle, every run.

* Hypothesis: no deadline, no timing-based health check, the same examples every run (the
  profile in tests/conftest.py; a test's own ``@settings`` may not undo that).
* Every test that starts Azurite carries the ``azurite`` marker (tests/conftest.py refuses one that
  does not, at collection for the fixture and when Azurite starts for anything else).
"""

from __future__ import annotations

import ast
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

from tests import azurite as azurite_module
from tests.conftest import unmarked_azurite_tests

TESTS = Path(__file__).resolve().parent


def test_the_hypothesis_profile_cannot_fail_a_correct_program_on_a_slow_machine() -> None:
    suite = settings.get_profile("nsp-drift")
    assert suite.deadline is None
    assert HealthCheck.too_slow in suite.suppress_health_check
    assert suite.derandomize and suite.database is None  # reproducible: the same examples every run
    # The profile in force (nsp-drift unless HYPOTHESIS_PROFILE=explore) keeps the timing rules.
    active = settings.default
    assert active.deadline is None and HealthCheck.too_slow in active.suppress_health_check
    if os.environ.get("HYPOTHESIS_PROFILE", "nsp-drift") == "nsp-drift":
        assert active.derandomize and active.database is None


def _settings_calls() -> list[tuple[str, int, ast.Call]]:
    calls = []
    for path in sorted(TESTS.glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for decorator in node.decorator_list:
                    if isinstance(decorator, ast.Call) and getattr(decorator.func, "id", "") == "settings":
                        calls.append((path.name, decorator.lineno, decorator))
    return calls


def test_no_test_puts_back_a_deadline_randomness_or_the_too_slow_check() -> None:
    calls = _settings_calls()
    assert calls, "the scan found no @settings at all: has it stopped looking at the tests?"
    for name, line, call in calls:
        where = f"{name}:{line}"
        for keyword in call.keywords:
            value = keyword.value
            if keyword.arg == "deadline":
                assert isinstance(value, ast.Constant) and value.value is None, f"{where}: deadline must be None"
            if keyword.arg == "derandomize":
                assert isinstance(value, ast.Constant) and value.value is True, f"{where}: keep derandomize"
            assert keyword.arg != "database", f"{where}: the profile decides the database"
            if keyword.arg == "suppress_health_check":
                assert "HealthCheck.too_slow" in ast.unparse(value), f"{where}: keep too_slow suppressed"


@dataclass
class _Item:
    nodeid: str
    fixturenames: list[str]
    markers: dict[str, Any] = field(default_factory=dict)

    def get_closest_marker(self, name: str) -> Any:
        return self.markers.get(name)


def test_a_test_using_azurite_without_the_marker_is_refused_at_collection() -> None:
    marked = _Item("t.py::marked", ["queue", "azurite"], {"azurite": pytest.mark.azurite})
    through_a_fixture = _Item("t.py::unmarked", ["queue", "azurite", "tmp_path"])
    persistent = _Item("t.py::restart", ["persistent_azurite", "monkeypatch"])
    unrelated = _Item("t.py::pure", ["tmp_path"])
    items = [marked, through_a_fixture, persistent, unrelated]
    assert unmarked_azurite_tests(items) == ["t.py::unmarked", "t.py::restart"]  # type: ignore[arg-type]


def test_the_suite_as_collected_has_every_azurite_test_marked(request: pytest.FixtureRequest) -> None:
    assert unmarked_azurite_tests(request.session.items) == []
    users = [i for i in request.session.items if "azurite" in getattr(i, "fixturenames", ())]
    assert users or len(request.session.items) < 50  # a full run has some; a narrow selection may not


def test_starting_azurite_from_an_unmarked_test_fails_that_test(tmp_path: Path) -> None:
    # This test is not marked: the guard installed by conftest must refuse before any process starts.
    assert azurite_module.before_start is not None
    with pytest.raises(pytest.fail.Exception, match=r"not marked @pytest\.mark\.azurite"):
        azurite_module.Azurite("azurite-that-must-not-run", tmp_path).start()
