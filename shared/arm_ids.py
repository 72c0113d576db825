"""ARM resource ids, parsed case-insensitively (events mix `resourcegroups` and `resourceGroups`)."""

from __future__ import annotations

import re
from dataclasses import dataclass

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
    segments = tuple(
        (pairs[i], pairs[i + 1] if i + 1 < len(pairs) else "") for i in range(0, len(pairs), 2)
    )
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


def same(a: str, b: str) -> bool:
    return normalise(a).lower() == normalise(b).lower()
