"""ARM collections listed as raw JSON: the ids of a listing without an SDK model per resource.

The SDK pager decodes a whole page (``response.json()``: the page's text and every resource's
full dict tree at once) and wraps each resource in a model; a sweep that only needs the ids of
10,000 storage accounts held about 25 KB per account that way. Here each page goes through the
client's own pipeline (``client.send_request``: its authentication, retry, pacing and endpoint),
streamed (``stream=True``), and its ``{"value": [...], "nextLink": ...}`` envelope is parsed
incrementally with the standard library's decoder: one resource is decoded at a time, its ``id``
kept, the rest dropped. Paging is azure-core's own ``AsyncItemPaged``.

A body that cannot be decoded (a truncated or reset response) is read again, page by page (azure-
core retries statuses and connection errors but never a body that breaks off after the headers).
A status other than 200 raises what the SDK's own pager raises (``map_error`` and
``HttpResponseError`` with ARM's error format).
"""

from __future__ import annotations

import codecs
import json
import logging
import re
from collections.abc import AsyncIterator, Callable
from functools import partial
from typing import Any

log = logging.getLogger(__name__)

_WHITESPACE = re.compile(r"[ \t\n\r]*")
_DECODER = json.JSONDecoder()
ATTEMPTS = 3  # reads of one page whose body breaks off


class _Text:
    """The decoded text of a streamed body, consumed from the front."""

    def __init__(self, chunks: AsyncIterator[bytes]) -> None:
        self._chunks = chunks
        self._utf8 = codecs.getincrementaldecoder("utf-8-sig")()
        self.buf = ""
        self.pos = 0
        self.eof = False

    async def more(self) -> bool:
        """Append the next chunk (dropping what was consumed); False at the end of the body."""
        if self.eof:
            return False
        try:
            chunk = await self._chunks.__anext__()
            text = self._utf8.decode(chunk)
        except StopAsyncIteration:
            self.eof = True
            text = self._utf8.decode(b"", final=True)
        self.buf = self.buf[self.pos :] + text
        self.pos = 0
        return not self.eof or bool(text)

    async def peek(self) -> str:
        """The next character that is not whitespace ("" at the end of the body)."""
        while True:
            match = _WHITESPACE.match(self.buf, self.pos)
            self.pos = match.end() if match else self.pos
            if self.pos < len(self.buf):
                return self.buf[self.pos]
            if not await self.more():
                return ""

    async def expect(self, char: str) -> None:
        found = await self.peek()
        if found != char:
            raise json.JSONDecodeError(f"expected {char!r}, found {found or 'the end'!r}", self.buf, self.pos)
        self.pos += 1

    async def value(self) -> Any:
        """One complete JSON value (an object, array, string, number or literal)."""
        await self.peek()
        while True:
            try:
                found, end = _DECODER.raw_decode(self.buf, self.pos)
            except json.JSONDecodeError:
                if await self.more():
                    continue
                raise
            # A number ending where the text ends may go on in the next chunk.
            ambiguous = end == len(self.buf) and not self.eof and not isinstance(found, dict | list | str)
            if ambiguous and await self.more():
                continue
            self.pos = end
            return found


async def _closes(text: _Text, close: str, where: str = "") -> bool:
    """After a member or an element: True at ``close`` (consumed), False after a ','."""
    separator = await text.peek()
    text.pos += 1
    if separator == close:
        return True
    if separator != ",":
        raise json.JSONDecodeError(f"expected ',' or '{close}'{where}", text.buf, text.pos - 1)
    return False


async def _stream_value(text: _Text, on_item: Callable[[Any], None]) -> None:
    """The page's ``value`` array, its '[' next: ``on_item`` for each element as it is decoded."""
    text.pos += 1
    if await text.peek() == "]":
        text.pos += 1
        return
    while True:
        on_item(await text.value())
        if await _closes(text, "]", " in value"):
            return


async def parse_listing(chunks: AsyncIterator[bytes], on_item: Callable[[Any], None]) -> str | None:
    """Stream one ARM list page: ``on_item`` for each element of ``value``; returns ``nextLink``.
    Raises ``json.JSONDecodeError`` for a body that is not (or not all) such a page."""
    text = _Text(chunks)
    await text.expect("{")
    next_link: str | None = None
    if await text.peek() == "}":
        text.pos += 1
    else:
        while True:
            key = await text.value()
            if not isinstance(key, str):
                raise json.JSONDecodeError("expected a member name", text.buf, text.pos)
            await text.expect(":")
            if key == "value" and await text.peek() == "[":
                await _stream_value(text, on_item)
            else:
                found = await text.value()
                if key == "value" and found is not None:
                    raise ValueError(f"an ARM list page whose value is a {type(found).__name__}, not a list")
                if key == "nextLink":
                    next_link = found if isinstance(found, str) and found else None
            if await _closes(text, "}"):
                break
    if await text.peek():
        raise json.JSONDecodeError("data after the page", text.buf, text.pos)
    return next_link


def _raise_for_status(response: Any) -> None:
    from azure.core.exceptions import (
        ClientAuthenticationError,
        HttpResponseError,
        ResourceExistsError,
        ResourceNotFoundError,
        ResourceNotModifiedError,
        map_error,
    )
    from azure.mgmt.core.exceptions import ARMErrorFormat

    error_map = {
        401: ClientAuthenticationError,
        404: ResourceNotFoundError,
        409: ResourceExistsError,
        304: ResourceNotModifiedError,
    }
    map_error(status_code=response.status_code, response=response, error_map=error_map)
    raise HttpResponseError(response=response, error_format=ARMErrorFormat)


def _keep_id(ids: list[str], item: Any) -> None:
    resource_id = item.get("id") if isinstance(item, dict) else None
    if isinstance(resource_id, str) and resource_id:
        ids.append(resource_id)
    else:
        log.warning("a listed resource without an id was skipped (%s)", type(item).__name__)


def _keep_item(items: list[dict[str, Any]], item: Any) -> None:
    if isinstance(item, dict) and isinstance(item.get("id"), str) and item["id"]:
        items.append(item)
    else:
        log.warning("a listed resource without an id was skipped (%s)", type(item).__name__)


async def _read_page(
    client: Any, request: Any, keep: Callable[[list[Any], Any], None], attempts: int = ATTEMPTS
) -> tuple[str | None, list[Any]]:
    """One page through the client's pipeline: (nextLink, what ``keep`` kept of each item), the
    body read again if it breaks off (``attempts`` reads in all)."""
    from azure.core.exceptions import DecodeError

    for attempt in range(1, attempts + 1):
        response = await client.send_request(request, stream=True)
        try:
            if response.status_code != 200:
                await response.read()
                _raise_for_status(response)
            kept: list[Any] = []
            try:
                next_link = await parse_listing(response.iter_bytes(), partial(keep, kept))
            except (json.JSONDecodeError, DecodeError) as exc:  # IncompleteReadError is a DecodeError
                if attempt == attempts:
                    raise DecodeError(f"an ARM list page could not be decoded: {exc}", response=response) from exc
                log.info("list page could not be decoded; reading it again (%d/%d)", attempt + 1, attempts)
                continue
            return next_link, kept
        finally:
            await response.close()
    raise AssertionError("unreachable")


async def _page_ids(client: Any, request: Any) -> tuple[str | None, list[str]]:
    return await _read_page(client, request, _keep_id)


async def resource_page(client: Any, first: Any, next_link: str = "") -> tuple[str | None, list[dict[str, Any]]]:
    """ONE page of a listing as raw JSON objects (``first``: the SDK's request for page one, used
    when ``next_link`` is empty): (the next page's ``nextLink`` or None, the page's resources).
    The sweep lists one page per invocation and queues the next one as its own message."""
    from azure.core.rest import HttpRequest

    return await _read_page(client, first if not next_link else HttpRequest("GET", next_link), _keep_item)


async def resource_body(client: Any, request: Any) -> Any:
    """One resource's raw JSON through the client's pipeline (``request``: a GET relative to the
    client's endpoint); a status other than 200 raises what the SDK raises, a body that is not
    JSON a ``DecodeError`` (which the caller's ``_decoded`` reads again)."""
    from azure.core.exceptions import DecodeError

    response = await client.send_request(request)
    if response.status_code != 200:
        _raise_for_status(response)
    try:
        return json.loads(response.text())
    except ValueError as exc:
        raise DecodeError(f"an ARM response could not be decoded: {exc}", response=response) from exc


def resource_items(
    client: Any, first: Any, keep: Callable[[list[Any], Any], None] = _keep_item, attempts: int = ATTEMPTS
) -> Any:
    """``AsyncItemPaged`` of what ``keep`` keeps of each listed resource's raw JSON, over every page
    (``first``: the request for page one; ``nextLink`` URLs after it). The VM list uses it: no
    Compute SDK (its models module alone is about a third of a cold start's imports) for a list
    whose only use is the VHD URIs of a few VMs. ``attempts``: reads of a page whose body breaks
    off (1 where the caller already reads the whole listing again, as ``ArmReader``'s reads do)."""
    from azure.core.async_paging import AsyncItemPaged, AsyncList
    from azure.core.rest import HttpRequest

    async def get_next(next_link: str | None = None) -> tuple[str | None, list[Any]]:
        return await _read_page(client, first if next_link is None else HttpRequest("GET", next_link), keep, attempts)

    async def extract_data(page: tuple[str | None, list[Any]]) -> tuple[str | None, AsyncList[Any]]:
        return page[0], AsyncList(page[1])

    return AsyncItemPaged(get_next, extract_data)


def resource_ids(client: Any, first: Any) -> Any:
    """``AsyncItemPaged`` of the ids a list request's pages name (``first``: the SDK's own request
    for page one, e.g. ``build_storage_accounts_list_request``; ``nextLink`` URLs after it)."""
    from azure.core.async_paging import AsyncItemPaged, AsyncList
    from azure.core.rest import HttpRequest

    async def get_next(next_link: str | None = None) -> tuple[str | None, list[str]]:
        return await _page_ids(client, first if next_link is None else HttpRequest("GET", next_link))

    async def extract_data(page: tuple[str | None, list[str]]) -> tuple[str | None, AsyncList[str]]:
        return page[0], AsyncList(page[1])

    return AsyncItemPaged(get_next, extract_data)
