"""Shared pytest fixtures."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.azurite import Azurite, AzuriteError, start_azurite

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
