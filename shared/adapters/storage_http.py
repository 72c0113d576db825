"""One requests session per process for the Table and Queue clients, the environment read once per host.

azure-core's ``RequestsTransport`` gives each service client its own ``requests.Session`` with
``trust_env=True``: for every call requests then merges the environment again (proxy variables and
``NO_PROXY`` matching, ``REQUESTS_CA_BUNDLE``/``CURL_CA_BUNDLE``) and looks ``~/.netrc`` up, about
6 % of the CPU of a Table/Queue call on Azurite. ``OncePerHostSession`` resolves the same settings
once per scheme and host (and port) for the life of the process (``trust_env`` stays off, so ``~/.netrc``
credentials can never replace the SDK's own Authorization header either). ``storage_transport``
hands the Table and Queue SDKs one transport over that one session (``session_owner=False``:
closing a client leaves it open).
"""

from __future__ import annotations

import threading
from collections.abc import MutableMapping
from typing import Any
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from requests.sessions import merge_setting
from urllib3.util.retry import Retry


class OncePerHostSession(requests.Session):
    """A ``requests.Session`` whose environment settings are looked up once per scheme and host."""

    def __init__(self) -> None:
        super().__init__()
        self.trust_env = False  # no per-request environment or netrc lookup: see merge_environment_settings
        # azure-core's RetryPolicy is the only retry layer: urllib3 retries nothing, follows no redirect.
        adapter = HTTPAdapter(max_retries=Retry(total=False, redirect=False, raise_on_status=False))
        self.mount("https://", adapter)
        self.mount("http://", adapter)
        self._env: dict[tuple[str, str], tuple[dict[str, str], str | None]] = {}
        self._env_lock = threading.Lock()
        self.lookups = 0

    def _environment(self, url: str) -> tuple[dict[str, str], str | None]:
        """(proxies, CA bundle) the environment gives ``url``, as requests itself computes them (a
        throwaway session with ``trust_env=True``), once per scheme and host:port."""
        parts = urlsplit(url)
        key = (parts.scheme, parts.netloc.lower())  # NO_PROXY may name a host:port
        with self._env_lock:
            found = self._env.get(key)
            if found is None:
                self.lookups += 1
                with requests.Session() as probe:
                    settings = probe.merge_environment_settings(url, {}, None, None, None)
                verify = settings["verify"]
                found = (dict(settings["proxies"]), verify if isinstance(verify, str) else None)
                self._env[key] = found
            return found

    def merge_environment_settings(
        self,
        url: str | bytes | None,
        proxies: MutableMapping[str, str] | None,
        stream: bool | None,
        verify: bool | str | None,
        cert: Any,
    ) -> dict[str, Any]:
        """What ``requests.Session`` does with ``trust_env=True``, the environment part cached."""
        text = url.decode() if isinstance(url, bytes) else str(url or "")
        env_proxies, ca_bundle = self._environment(text)
        chosen: dict[str, str] = dict(proxies or {})
        for scheme, proxy in env_proxies.items():
            chosen.setdefault(scheme, proxy)
        if (verify is True or verify is None) and ca_bundle:
            verify = ca_bundle
        return {
            "proxies": merge_setting(chosen, self.proxies),
            "stream": merge_setting(stream, self.stream),
            "verify": merge_setting(verify, self.verify),
            "cert": merge_setting(cert, self.cert),
        }


_lock = threading.Lock()
_session: OncePerHostSession | None = None


def shared_session() -> OncePerHostSession:
    global _session
    with _lock:
        if _session is None:
            _session = OncePerHostSession()
        return _session


def storage_transport(**kwargs: Any) -> Any:
    """A transport for one Table/Queue client over the process's shared session; ``kwargs`` as for
    ``RequestsTransport`` (timeouts...)."""
    from azure.core.pipeline.transport import RequestsTransport

    return RequestsTransport(session=shared_session(), session_owner=False, **kwargs)
