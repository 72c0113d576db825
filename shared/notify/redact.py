"""Secrets never reach logs, errors or alerts.

Webhook URLs (Teams Workflows / Logic Apps) carry their signature in the query string, tokens
travel in headers, and a failing receiver may echo either back in its error body. Everything a
sender logs or stores goes through ``redact`` first; ``SecretFilter`` guards the logging tree.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterable

MASK = "***"
_QUERY_SECRET = re.compile(r"(?i)([?&](?:sig|code|token|access_token|sv|se|sp|skoid|sktid|api-key|key)=)[^&#\s\"']+")
_BEARER = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{8,}")
_AUTH_HEADER = re.compile(r"(?i)(authorization[\"']?\s*[:=]\s*[\"']?)[^\"',\s][^\"',]*")
_USERINFO = re.compile(r"(?i)(https?://)[^/\s:@]+:[^/\s@]+@")
_GH_TOKEN = re.compile(r"\b(gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,})\b")
_WHSEC = re.compile(r"\bwhsec_[A-Za-z0-9+/=]{8,}")

_known_lock = threading.Lock()
_known: set[str] = set()


def register_secret(value: str) -> None:
    """Remember a secret value (from settings) so it is masked wherever it appears."""
    if value and len(value) >= 6:
        with _known_lock:
            _known.add(value)


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    with _known_lock:
        values = sorted({*_known, *(s for s in secrets if s and len(s) >= 6)}, key=len, reverse=True)
    for value in values:
        text = text.replace(value, MASK)
    text = _QUERY_SECRET.sub(rf"\1{MASK}", text)
    text = _BEARER.sub(rf"\1 {MASK}", text)
    text = _AUTH_HEADER.sub(rf"\1{MASK}", text)
    text = _USERINFO.sub(rf"\1{MASK}@", text)
    text = _GH_TOKEN.sub(MASK, text)
    return _WHSEC.sub(MASK, text)


class SecretFilter(logging.Filter):
    """Redacts every record's rendered message (install on handlers of the root logger)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string must not break logging
            return True
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, ()
        return True


def install_log_redaction(logger: logging.Logger | None = None) -> None:
    """Add the filter to the logger and its handlers (idempotent)."""
    target = logger or logging.getLogger()
    for item in (target, *target.handlers):
        if not any(isinstance(f, SecretFilter) for f in item.filters):
            item.addFilter(SecretFilter())
