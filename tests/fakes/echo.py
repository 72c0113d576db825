"""An API front that refuses every request with 401 and echoes the credential it was sent, the way
careless gateways and error pages do: without the scheme word ("Basic", "Bearer") that the generic
redaction patterns key on, and in the encodings such echoes come in (base64 with or without its
padding, URL-encoded, .NET-escaped inside a JSON string, the decoded ``user:password`` pair).
"""

from __future__ import annotations

import base64
import binascii
import json
from urllib.parse import quote

from tests.fakes.server import FakeServer, Received, Reply

FORMS = ("bare", "unpadded", "urlencoded", "dotnet-json", "decoded", "base64-of-bearer")


def echoed(credential: str, form: str) -> str:
    """``credential``: what followed the scheme in the Authorization header."""
    if form == "bare":
        return credential
    if form == "unpadded":
        return credential.rstrip("=")
    if form == "urlencoded":
        return quote(credential, safe="")
    if form == "dotnet-json":  # System.Text.Json escapes '+' (and '&', '<', '>') by default
        return credential.replace("+", "\\u002B")
    if form == "decoded":
        try:
            return base64.b64decode(credential, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return credential
    if form == "base64-of-bearer":
        return base64.b64encode(credential.encode()).decode()
    raise ValueError(f"unknown echo form {form!r}")


class CredentialEcho(FakeServer):
    """401 to everything, with the received credential echoed in ``form`` in a short JSON body
    (short: the client keeps only the first 300 bytes of an error body)."""

    def __init__(self, form: str = "bare") -> None:
        super().__init__()
        self.form = form

    def handle(self, request: Received) -> Reply:
        _scheme, _, credential = request.headers.get("authorization", "").partition(" ")
        text = echoed(credential, self.form)
        # Built by hand so the .NET escape survives (json.dumps would escape the backslash).
        body = '{"message":"TF400813: credential ' + text + ' is not authorized"}'
        json.loads(body)  # still valid JSON
        return 401, {"WWW-Authenticate": "Bearer"}, body.encode()
