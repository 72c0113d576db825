"""static-website: static website hosting."""

from __future__ import annotations

from shared.core.model import Severity
from tests import estate_builder as eb
from tests.rule_helpers import NAME, of, read


def test_static_website_positive() -> None:
    (finding,) = of(read(eb.member(NAME), eb.blob_service(NAME, static_website=True)), "static-website")
    assert finding.severity is Severity.HIGH


def test_static_website_negative() -> None:
    assert of(read(eb.member(NAME), eb.blob_service(NAME, static_website=False)), "static-website") == []
    assert of(read(eb.member(NAME)), "static-website") == []
