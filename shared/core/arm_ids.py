"""ARM resource ids, parsed case-insensitively (events mix `resourcegroups` and `resourceGroups`)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote

_GUIDISH = re.compile(r"^[0-9a-fA-F-]{36}$")


@dataclass(frozen=True)
class ResourceId:
    """``/subscriptions/{s}/resourceGroups/{rg}/providers/{ns}/{type}/{name}[/{child}/{name}...]``."""

    subscription: str
    resource_group: str
    namespace: str
    # (type, name) pairs from the top-level resource down; the last name may be empty for a
    # collection path such as ``.../fileServices/default/shares``.
    segments: tuple[tuple[str, str], ...]

    @property
    def full_type(self) -> str:
        """e.g. ``microsoft.storage/storageaccounts/fileservices/shares`` (lower case)."""
        return "/".join([self.namespace.lower(), *(t.lower() for t, _ in self.segments)])

    @property
    def name(self) -> str:
        return self.segments[-1][1] if self.segments else ""

    def prefix(self, depth: int) -> str:
        """The id of the ancestor with ``depth`` (type, name) pairs, canonical casing of the input."""
        parts = [f"/subscriptions/{self.subscription}"]
        if self.resource_group:
            parts.append(f"/resourceGroups/{self.resource_group}")
        parts.append(f"/providers/{self.namespace}")
        for type_, name in self.segments[:depth]:
            parts.append(f"/{type_}/{name}")
        return "".join(parts)

    @property
    def top_level_id(self) -> str:
        return self.prefix(1)


def normalise(resource_id: str) -> str:
    """Strip whitespace (the official ARN samples carry a stray space) and trailing slashes."""
    return "/" + "/".join(part.strip() for part in resource_id.strip().strip("/").split("/") if part.strip())


def parse(resource_id: str) -> ResourceId | None:
    """Parse a resource id; None for anything that is not a provider resource (or is malformed)."""
    if not isinstance(resource_id, str) or len(resource_id) > 2048:
        return None
    parts = normalise(resource_id).strip("/").split("/")
    if len(parts) < 2 or parts[0].lower() != "subscriptions" or not parts[1]:
        return None
    if any(part in {".", ".."} for part in parts):
        return None
    subscription = parts[1]
    rest = parts[2:]
    resource_group = ""
    if len(rest) >= 2 and rest[0].lower() == "resourcegroups":
        resource_group = rest[1]
        rest = rest[2:]
    if len(rest) < 3 or rest[0].lower() != "providers":
        return None
    namespace = rest[1]
    pairs = rest[2:]
    segments = tuple((pairs[i], pairs[i + 1] if i + 1 < len(pairs) else "") for i in range(0, len(pairs), 2))
    return ResourceId(subscription, resource_group, namespace, segments)


def storage_account_of(resource_id: str) -> str | None:
    """The storage account id a resource id belongs to (itself or any child), else None."""
    parsed = parse(resource_id)
    if parsed is None or parsed.namespace.lower() != "microsoft.storage" or not parsed.segments:
        return None
    type_, name = parsed.segments[0]
    if type_.lower() != "storageaccounts" or not name:
        return None
    return parsed.top_level_id


def account_name_of(resource_id: str) -> str:
    return resource_id.rstrip("/").rsplit("/", 1)[-1]


_MAX_ID_CHARS = 2048  # the limit ``parse`` applies; ARM ids in practice stay well under it


def is_well_formed(resource_id: str) -> bool:
    """True for a subscription- or tenant-rooted id that is safe to act on.

    Rejects dot segments (also percent-encoded ones: an id may end up in a request path), control
    characters and over-long text. Ids without a provider segment (a resource group, a
    subscription) are well formed; ``parse`` still returns None for them.
    """
    if not isinstance(resource_id, str) or len(resource_id) > _MAX_ID_CHARS:
        return False
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in resource_id):
        return False
    parts = normalise(resource_id).strip("/").split("/")
    if parts[0].lower() == "subscriptions":
        if len(parts) < 2:
            return False
    elif parts[0].lower() != "providers":
        return False
    for part in parts:
        decoded = unquote(part)
        if any(piece in {".", ".."} for piece in re.split(r"[/\\]", decoded)) or part in {".", ".."}:
            return False
    return True


def resource_type(resource_id: str) -> str:
    """The type of the innermost resource in the input's casing, "" when the id does not parse.

    ``.../storageAccounts/a/blobServices/default`` gives ``Microsoft.Storage/storageAccounts/blobServices``.
    For an extension resource (``.../storageAccounts/a/providers/Microsoft.Authorization/locks/l``)
    it is the extension's own type (``Microsoft.Authorization/locks``): a lock or a role
    assignment on an account is not a child of the account.
    """
    parsed = parse(resource_id)
    if parsed is None:
        return ""
    namespace, types = parsed.namespace, [t for t, _ in parsed.segments]
    for index in range(len(parsed.segments) - 1, 0, -1):
        type_, name = parsed.segments[index]
        if type_.lower() == "providers" and name:
            namespace, types = name, [t for t, _ in parsed.segments[index + 1 :]]
            break
    return "/".join([namespace, *types])
