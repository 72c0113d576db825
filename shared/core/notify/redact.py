"""Secrets never reach logs, errors or alerts.

Webhook URLs (Teams Workflows / Logic Apps) carry their signature in the query string, tokens
travel in headers, and a failing receiver may echo either back in its error body. Everything a
sender logs or stores goes through ``redact`` first; ``SecretFilter`` guards the logging tree.

Two layers, because neither is enough alone: the values the app resolved from its settings are
registered and masked verbatim (catches a PAT in any position), and generic patterns mask the
shapes secrets come in (catches a token we were never told about, e.g. one a server echoes).
"""

from __future__ import annotations

import base64
import binascii
import functools
import logging
import re
import threading
from collections.abc import Iterable
from urllib.parse import quote, quote_plus

MASK = "***"
# Shorter values would mask ordinary words; every real secret we handle is far longer.
MIN_SECRET_LENGTH = 8

# A query parameter that is (part of) a credential. ``\u0026`` and ``%26`` are how ``&`` looks
# inside a JSON string written by .NET (Logic Apps errors) and inside a URL-encoded URL.
_QUERY_SECRET = re.compile(
    r"(?i)((?:[?&]|\\u0026|%26)"
    r"(?:sig|signature|code|token|access_token|refresh_token|client_secret|api-key|apikey|key|password"
    r"|sv|se|sp|spr|srt|ss|st|skoid|sktid|skt|ske|sks|skv)"
    r"(?:=|%3D))[^&#\s\"'<>\\]+"
)
# Storage / Service Bus connection strings.
_CONN_SECRET = re.compile(r"(?i)\b((?:AccountKey|SharedAccessKey|SharedAccessSignature|Password|Pwd)=)[^;\s\"']+")
# ``Authorization: Bearer x`` / ``"authorization": "Basic x"`` in headers, dumps and echoes.
_AUTH_HEADER = re.compile(r"(?i)\b((?:proxy-)?authorization[\"']?\s*[:=]\s*[\"']?)[^\"'\s,}][^\"'\r\n,}]*")
# Not the bare word "token": it would mangle prose ("token expired."); headers are caught above.
_SCHEME_TOKEN = re.compile(r"(?i)\b(bearer|basic)(\s+)[A-Za-z0-9._~+/=-]{8,}")
# ``https://user:password@host`` and ``https://token@host``.
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s:@\"']+(?::[^/\s@\"']*)?@")
_GH_TOKEN = re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,})\b")
_WHSEC = re.compile(r"\bwhsec_[A-Za-z0-9+/=]{8,}")
_JWT = re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*")

_known_lock = threading.Lock()
_known: set[str] = set()


def _base64_forms(data: bytes) -> set[str]:
    """``data`` in base64 as it may be seen: standard and URL-safe, with and without padding, and
    the part of it that any prefix leaves intact (``base64("user:" + token)`` for every user: a
    prefix of k bytes changes only the first characters, by k mod 3)."""
    forms: set[str] = set()
    for encode in (base64.b64encode, base64.urlsafe_b64encode):
        whole = encode(data).decode()
        forms |= {whole, whole.rstrip("=")}
        for offset in (1, 2):
            shifted = encode(b"\0" * offset + data).decode()
            start = -(-offset * 8 // 6)  # the characters holding bits of the prefix
            end = (offset + len(data)) * 8 // 6  # the last character holding only bits of data
            forms.add(shifted[start:end])
        forms.add(whole[: len(data) * 8 // 6])  # what any suffix leaves intact
    return forms


def _texts_of(value: str) -> tuple[list[str], list[bytes]]:
    """The secret's textual forms and the byte strings whose encodings must be masked."""
    texts, blobs = [value], [value.encode(), b":" + value.encode()]  # ":" + PAT: Basic with no user
    if value.startswith("whsec_"):  # Standard Webhooks: the key is the base64 after the prefix
        rest = value.removeprefix("whsec_")
        texts.append(rest)
        try:
            key = base64.b64decode(rest, validate=True)
        except (binascii.Error, ValueError):
            key = b""
        if key:
            blobs.append(key)
            texts += [key.hex(), key.hex().upper()]
            try:
                decoded = key.decode()
            except UnicodeDecodeError:
                decoded = ""
            if decoded.isprintable():
                texts.append(decoded)
    return texts, blobs


@functools.lru_cache(maxsize=256)
def derived_forms(value: str) -> frozenset[str]:
    """Every form of a secret that a log line, an error body or an echo may carry: the value, its
    base64 (the Basic credential ``base64(":" + PAT)`` among them; padded or not, URL-safe, and its
    part inside a longer base64), hex of a decoded ``whsec_`` key, and each of these URL-encoded
    and JSON-escaped (.NET writes '+' as \\u002B, other writers '/' as \\/). Forms shorter than
    MIN_SECRET_LENGTH are left out: they would mask ordinary words."""
    texts, blobs = _texts_of(value)
    forms = set(texts)
    for blob in blobs:
        forms |= _base64_forms(blob)
        forms.add(blob.hex())
    for form in list(forms):
        forms |= {quote(form, safe=""), quote_plus(form), quote(form, safe="/:")}
        forms |= {form.replace("+", "\\u002B"), form.replace("+", "\\u002b"), form.replace("/", "\\/")}
        forms |= {form.replace("&", "\\u0026"), form.replace("=", "\\u003D"), form.replace("=", "\\u003d")}
    return frozenset(f for f in forms if len(f) >= MIN_SECRET_LENGTH)


def register_secret(value: str) -> None:
    """Remember a secret value (from settings) so it is masked wherever it appears, in any logger,
    in any of its derived forms (``derived_forms``: the Basic value of a PAT, URL-encoded ...)."""
    if value and len(value) >= MIN_SECRET_LENGTH:
        forms = derived_forms(value)
        with _known_lock:
            _known.update(forms)


def forget_secrets() -> None:
    """Tests: start from an empty registry."""
    with _known_lock:
        _known.clear()


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with every known or recognisable secret replaced by ``***``."""
    if not text:
        return text
    with _known_lock:
        values = {*_known}
    for secret in secrets:
        if secret and len(secret) >= MIN_SECRET_LENGTH:
            values.update(derived_forms(secret))
    # Longest first: a URL containing a registered token is masked whole, not around the token.
    for value in sorted(values, key=len, reverse=True):
        text = text.replace(value, MASK)
    text = _QUERY_SECRET.sub(rf"\g<1>{MASK}", text)
    text = _CONN_SECRET.sub(rf"\g<1>{MASK}", text)
    text = _AUTH_HEADER.sub(rf"\g<1>{MASK}", text)
    text = _SCHEME_TOKEN.sub(rf"\g<1>\g<2>{MASK}", text)
    text = _USERINFO.sub(rf"\g<1>{MASK}@", text)
    text = _GH_TOKEN.sub(MASK, text)
    text = _WHSEC.sub(MASK, text)
    return _JWT.sub(MASK, text)


def one_line(text: str, limit: int = 500) -> str:
    """Redacted, single-line and bounded: the form errors are stored in (Delivery.last_error)."""
    flat = " ".join(redact(text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


class SecretFilter(logging.Filter):
    """Redacts a record's message, arguments and traceback text; never drops a record.

    Note the stdlib rule: a filter on a *logger* sees only records logged to that very logger,
    not those propagating from children. Put it on the handlers too (``install_log_redaction``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string must not break logging; redact the raw parts
            record.msg, record.args = redact(str(record.msg)), ()
            return True
        cleaned = redact(message)
        if cleaned != message:
            # Pre-rendered: the arguments are folded into the message so no handler re-renders them.
            record.msg, record.args = cleaned, ()
        if record.exc_info and not record.exc_text:
            # Exception messages can hold URLs; render the traceback now so it can be masked.
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


def install_log_redaction(logger: logging.Logger | None = None) -> None:
    """Add the filter to the logger (root by default) and each of its handlers (idempotent)."""
    target = logger or logging.getLogger()
    for item in (target, *target.handlers):
        if not any(isinstance(f, SecretFilter) for f in item.filters):
            item.addFilter(SecretFilter())
