"""Gather -> decide for a set of accounts: read each through the reader, evaluate the rules."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from datetime import date

from shared.core.config import RulesConfig
from shared.core.evaluate import evaluate
from shared.core.model import AccountNotFound, AccountResult
from shared.service.pipeline import AccountReader

log = logging.getLogger(__name__)


class ScopeError(LookupError):
    """A subscription in scope does not exist or cannot be listed; the message names it."""


async def accounts_in_scope(reader: AccountReader, subscriptions: Iterable[str]) -> list[str]:
    ids: list[str] = []
    for subscription in subscriptions:
        try:
            ids.extend(await reader.list_account_ids(subscription))
        except Exception as exc:
            status = getattr(exc, "status_code", None)
            code = getattr(getattr(exc, "error", None), "code", None)
            if status == 404 or code == "SubscriptionNotFound":
                raise ScopeError(f"subscription {subscription} not found") from None
            raise ScopeError(
                f"cannot list storage accounts of subscription {subscription}: {type(exc).__name__}"
            ) from None
    return ids


async def scan(
    reader: AccountReader,
    account_ids: Iterable[str],
    config: RulesConfig,
    today: date,
    concurrency: int = 8,
    on_done: Callable[[AccountResult], None] | None = None,
) -> list[AccountResult]:
    """Evaluate accounts with at most ``concurrency`` reads in flight; results keep input order."""
    gate = asyncio.Semaphore(concurrency)

    async def one(account_id: str) -> AccountResult:
        async with gate:
            try:
                snapshot = await reader.read_account(account_id)
                result = AccountResult(account_id, evaluate(snapshot, config, today))
            except AccountNotFound:
                result = AccountResult(account_id, None, "not found")
            except Exception as exc:  # one unreadable account must not stop the scan
                log.warning("cannot read %s: %s", account_id, type(exc).__name__)
                result = AccountResult(account_id, None, f"unreadable ({type(exc).__name__})")
        if on_done is not None:
            on_done(result)
        return result

    return list(await asyncio.gather(*(one(a) for a in account_ids)))
