"""Shared pytest fixtures, the suite's Hypothesis profile and the ``azurite`` marker rule."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence

import pytest
from hypothesis import HealthCheck, settings

from tests import azurite as azurite_module
from tests.azurite import Azurite, AzuriteError, start_azurite

# -- Hypothesis ---------------------------------------------------------------------------------------
# A slow or busy machine must not fail a correct program, and CI must be reproducible:
# no deadline, no timing-based health check, and the same examples on every run (derandomised from
# each test's own source, so no example database is needed). ``HYPOTHESIS_PROFILE=explore`` draws
# fresh examples (and more of them) when hunting for new bugs locally.
SLOW_MACHINE_HEALTH_CHECKS = (HealthCheck.too_slow,)
settings.register_profile(
    "nsp-drift",
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=SLOW_MACHINE_HEALTH_CHECKS,
    print_blob=True,
)
settings.register_profile("explore", settings.get_profile("nsp-drift"), derandomize=False, max_examples=1_000)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "nsp-drift"))

# -- the azurite marker -----------------------------------------------------------------------------
# Every test that starts Azurite (through the ``azurite`` fixture or ``start_azurite``) carries
# ``@pytest.mark.azurite``, so ``-m "not azurite"`` really runs without the emulator. Enforced twice:
# at collection for the fixture, and when Azurite starts for anything else.
_running: pytest.Item | None = None


def uses_azurite(fixturenames: Sequence[str]) -> bool:
    """An Azurite fixture: ``azurite`` (the session-wide one) or any fixture named after it
    (``persistent_azurite`` ...), directly or through another fixture."""
    return any("azurite" in name for name in fixturenames)


def unmarked_azurite_tests(items: Sequence[pytest.Item]) -> list[str]:
    """Node ids of the tests that use an Azurite fixture without the ``azurite`` marker."""
    return [
        item.nodeid
        for item in items
        if uses_azurite(getattr(item, "fixturenames", ())) and item.get_closest_marker("azurite") is None
    ]


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    unmarked = unmarked_azurite_tests(items)
    if unmarked:
        raise pytest.UsageError(
            "these tests use Azurite but are not marked @pytest.mark.azurite:\n  " + "\n  ".join(unmarked)
        )


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    global _running
    _running = item  # before its fixtures: the session-wide Azurite starts inside the first user's setup


def _refuse_unmarked_start() -> None:
    if _running is not None and _running.get_closest_marker("azurite") is None:
        pytest.fail(f"{_running.nodeid} starts Azurite but is not marked @pytest.mark.azurite", pytrace=False)


azurite_module.before_start = _refuse_unmarked_start


# -- Azurite ------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def azurite() -> Iterator[Azurite]:
    """One in-memory Azurite for the whole run. Tests must use fresh names (``unique_name``) and
    must not stop it; for restart scenarios use ``start_azurite(location=tmp_path)``."""
    try:
        server = start_azurite()
    except AzuriteError as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield server
    finally:
        server.close()
