"""Which Azure cloud nsp-drift talks to: the ARM endpoint, the token scope and the Entra authority.

``NSP_DRIFT_CLOUD`` names one of Azure's clouds (the names ``az cloud list`` and Bicep's
``environment().name`` use) or gives the ARM endpoint of a custom cloud (a private ARM
endpoint, the benchmark's loopback server); a custom endpoint needs ``NSP_DRIFT_AUTHORITY_HOST``,
the Entra (or AD FS) authority that issues its tokens. What each value means (ARM endpoint =
every SDK client's ``base_url``; token scope = its ``credential_scopes``; authority = azure-identity's):

- ``AzureCloud`` (the default): https://management.azure.com, scope
  https://management.azure.com/.default, authority https://login.microsoftonline.com;
- ``AzureChinaCloud``: https://management.chinacloudapi.cn, scope
  https://management.chinacloudapi.cn/.default, authority https://login.chinacloudapi.cn;
- ``AzureUSGovernment``: https://management.usgovcloudapi.net, scope
  https://management.core.usgovcloudapi.net/.default, authority https://login.microsoftonline.us;
- ``https://arm.example[:port][/path]``: that endpoint, scope ``<endpoint>/.default``, authority
  ``NSP_DRIFT_AUTHORITY_HOST`` (required; an https host such as https://login.microsoftonline.com).

The three named clouds carry exactly what the SDKs ship (``azure.mgmt.core.tools.get_arm_endpoints``
and ``azure.identity.AzureAuthorityHosts``; tests/test_cloud.py keeps them equal), written out
here so that reading a setting imports no SDK. Names are case-insensitive. Endpoints must be
https: bearer tokens never travel in clear (azure-core refuses it too).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

CLOUD_SETTING = "NSP_DRIFT_CLOUD"
AUTHORITY_SETTING = "NSP_DRIFT_AUTHORITY_HOST"


@dataclass(frozen=True)
class Cloud:
    """One cloud's endpoints. ``sdk_cloud`` is the ``azure.core.AzureClouds`` member of a named cloud."""

    name: str  # AzureCloud, AzureChinaCloud, AzureUSGovernment, or "custom"
    resource_manager: str  # no trailing slash
    credential_scope: str
    authority_host: str  # https://..., no trailing slash
    sdk_cloud: str | None = None

    @property
    def is_custom(self) -> bool:
        return self.sdk_cloud is None

    def client_kwargs(self) -> dict[str, Any]:
        """What every azure-mgmt-* client needs to talk to this cloud."""
        kwargs: dict[str, Any] = {
            "base_url": self.resource_manager,
            "credential_scopes": [self.credential_scope],
        }
        if self.sdk_cloud is not None:
            from azure.core import AzureClouds

            kwargs["cloud_setting"] = AzureClouds[self.sdk_cloud]
        return kwargs


NAMED: dict[str, Cloud] = {
    c.name.lower(): c
    for c in (
        Cloud(
            "AzureCloud",
            "https://management.azure.com",
            "https://management.azure.com/.default",
            "https://login.microsoftonline.com",
            "AZURE_PUBLIC_CLOUD",
        ),
        Cloud(
            "AzureChinaCloud",
            "https://management.chinacloudapi.cn",
            "https://management.chinacloudapi.cn/.default",
            "https://login.chinacloudapi.cn",
            "AZURE_CHINA_CLOUD",
        ),
        Cloud(
            "AzureUSGovernment",
            "https://management.usgovcloudapi.net",
            "https://management.core.usgovcloudapi.net/.default",
            "https://login.microsoftonline.us",
            "AZURE_US_GOVERNMENT",
        ),
    )
}
PUBLIC = NAMED["azurecloud"]


class CloudError(ValueError):
    """The cloud settings are invalid; the message names the setting."""


def _https_url(value: str, setting: str, allow_path: bool) -> str:
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise CloudError(f"{setting}: {value!r} is not a URL") from None
    if parts.scheme.lower() != "https" or not parts.hostname:
        raise CloudError(f"{setting}: expected an https URL (tokens never travel in clear), got {value!r}")
    if parts.query or parts.fragment or parts.username or parts.password:
        raise CloudError(f"{setting}: {value!r} must not carry a query, fragment or credentials")
    if parts.path.strip("/") and not allow_path:
        raise CloudError(f"{setting}: {value!r} must be a host (https://login.example), without a path")
    return f"https://{parts.netloc}{parts.path}".rstrip("/")


def parse_cloud(
    value: str | None,
    authority_host: str | None = None,
    names: tuple[str, str] = (CLOUD_SETTING, AUTHORITY_SETTING),
) -> Cloud:
    """The cloud named or given by ``value`` (empty: Azure's public cloud). ``names``: what to call
    the two inputs in an error (the settings, or a command's options)."""
    cloud_name, authority_name = names
    value = (value or "").strip()
    authority = (authority_host or "").strip()
    if not value or value.lower() in NAMED:
        named = NAMED.get(value.lower(), PUBLIC)
        if authority:
            raise CloudError(
                f"{authority_name}: only for a custom ARM endpoint in {cloud_name}; "
                f"{named.name} has its own authority host"
            )
        return named
    if "://" not in value:
        options = ", ".join(c.name for c in NAMED.values())
        raise CloudError(f"{cloud_name}: {value!r} is not {options} or an https URL of an ARM endpoint")
    endpoint = _https_url(value, cloud_name, allow_path=True)
    if not authority:
        raise CloudError(
            f"{authority_name}: required with the custom ARM endpoint {endpoint} "
            "(the authority that issues its tokens, e.g. https://login.microsoftonline.com)"
        )
    return Cloud("custom", endpoint, f"{endpoint}/.default", _https_url(authority, authority_name, False))


def cloud_from_env(env: Mapping[str, str]) -> Cloud:
    return parse_cloud(env.get(CLOUD_SETTING), env.get(AUTHORITY_SETTING))
