"""One HTTP session per process for every ARM client and the credential (imported lazily: aiohttp).

azure-core gives each SDK client its own aiohttp session, opened with ``trust_env=True``: aiohttp
then looks up the proxy (environment, ``NO_PROXY``) and ``~/.netrc`` on a worker thread for every
request, two thread hops per ARM read (about 4.5 % of the client's CPU on the benchmark's
evaluations), and every client keeps its own connection pool and TLS sessions.

``SharedHttp`` owns one ``aiohttp.ClientSession`` (created on the event loop at first use, never at
import) with ``trust_env=False``; ``SharedSessionTransport`` is the azure-core transport every
client and the credential get, all borrowing that session (azure-core's own ``session_owner=False``
sharing, with the session created lazily). The environment is still honoured, once:

- TLS: one ``ssl.create_default_context()`` when ``SharedHttp`` is built: the system's CAs, or
  ``SSL_CERT_FILE`` / ``SSL_CERT_DIR`` (OpenSSL's variables) for a private cloud's CA;
- proxies: ``HTTPS_PROXY``/``HTTP_PROXY``, ``NO_PROXY`` and proxy credentials in ``~/.netrc``, with
  aiohttp's own rules (``aiohttp.helpers.get_env_proxy_for_url``), resolved once per scheme and
  host for the life of the process instead of once per request.
"""

from __future__ import annotations

import ssl
from typing import Any

import aiohttp
from aiohttp.helpers import get_env_proxy_for_url
from azure.core.pipeline.transport import AioHttpTransport
from yarl import URL

# Connections kept open to ARM (aiohttp's default for a session): plenty for 16 concurrent accounts
# of 8 reads each; ARM answers more reliably to a few warm connections than to a storm of new ones.
CONNECTION_LIMIT = 100
# Bytes per read of a streamed body (the raw listings): 64 KiB instead of azure-core's 4 KiB.
STREAM_BLOCK = 64 * 1024


class SharedHttp:
    """The process's one aiohttp session, its TLS context and its proxy decisions."""

    def __init__(self, limit: int = CONNECTION_LIMIT) -> None:
        self.limit = limit
        self.tls = ssl.create_default_context()  # honours SSL_CERT_FILE / SSL_CERT_DIR, read now
        self._session: aiohttp.ClientSession | None = None
        self._proxies: dict[tuple[str, str], tuple[URL | None, aiohttp.BasicAuth | None]] = {}
        self.sessions_created = 0
        self.proxy_lookups = 0

    def session(self) -> aiohttp.ClientSession:
        """The shared session (created on the running event loop the first time)."""
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=self.tls, limit=self.limit),
                trust_env=False,  # no proxy / netrc lookup per request: proxy_for() decides once per host
                cookie_jar=aiohttp.DummyCookieJar(),
                auto_decompress=False,  # azure-core decompresses (what its own sessions do)
            )
            self.sessions_created += 1
        return self._session

    def proxy_for(self, url: str) -> tuple[URL | None, aiohttp.BasicAuth | None]:
        """The proxy (and its credentials) for ``url``'s scheme and host, looked up once."""
        target = URL(url)
        key = (target.scheme, target.host or "")
        found = self._proxies.get(key)
        if found is None:
            self.proxy_lookups += 1
            try:
                found = get_env_proxy_for_url(target)
            except LookupError:  # no proxy configured for the scheme, or NO_PROXY names the host
                found = (None, None)
            self._proxies[key] = found
        return found

    def transport(self, **kwargs: Any) -> SharedSessionTransport:
        """A transport for one client (or the credential); ``kwargs`` as for ``AioHttpTransport``
        (``read_timeout``, ``connection_timeout``...)."""
        kwargs.setdefault("connection_data_block_size", STREAM_BLOCK)
        return SharedSessionTransport(self, **kwargs)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class SharedSessionTransport(AioHttpTransport):  # type: ignore[misc]  # azure-core's transport is untyped here
    """An ``AioHttpTransport`` borrowing ``SharedHttp``'s session: opening takes the shared session,
    closing gives it back (only ``SharedHttp.close`` closes it)."""

    session: aiohttp.ClientSession | None

    def __init__(self, http: SharedHttp, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.http = http

    async def open(self) -> None:
        if self.session is None:
            self.session = self.http.session()

    async def close(self) -> None:
        self.session = None

    async def send(self, request: Any, **config: Any) -> Any:
        if config.get("proxy") is None and not config.get("proxies"):
            proxy, auth = self.http.proxy_for(request.url)
            if proxy is not None:
                config["proxy"] = str(proxy)
                if auth is not None:
                    config.setdefault("proxy_auth", auth)
        return await super().send(request, **config)
