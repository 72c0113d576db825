"""Which listed accounts the full ARM sweep verifies (reads their NSP configurations): pure.

Membership with the fewest reads that cannot miss an association an in-scope perimeter makes:

- accounts associated with a perimeter of an in-scope subscription (its association list);
- accounts whose listed ``publicNetworkAccess`` is ``SecuredByPerimeter`` (an association in
  Enforced mode sets it, whichever perimeter made it);
- accounts stored as members (to see them leave);
- and a rotating verification slice of all the others: a perimeter in a subscription *outside*
  the scope (not listable) can associate an in-scope account in Learning mode without changing
  anything the list shows. Each full sweep reads the NSP configurations of a deterministic 1/k of
  the remaining accounts (by a hash of the id and the sweep's day number), so every account is
  verified within k full sweeps (``NSP_DRIFT_MEMBERSHIP_VERIFY_SWEEPS``).

Everything else is recorded from the list body alone as in no perimeter: no rule applies there.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

VERIFY_SWEEPS = 7  # default of NSP_DRIFT_MEMBERSHIP_VERIFY_SWEEPS
SECURED_BY_PERIMETER = "securedbyperimeter"


def sweep_round(now: float) -> int:
    """The sweep's day number (UTC days since the epoch): which slice it verifies."""
    return int(now // 86_400)


def in_slice(account_id: str, round_: int, sweeps: int) -> bool:
    """Whether this round's slice holds the account: each account is in exactly one of any
    ``sweeps`` consecutive rounds."""
    if sweeps <= 1:
        return True
    digest = hashlib.sha256(account_id.lower().encode()).digest()
    return (int.from_bytes(digest[:8], "big") + round_) % sweeps == 0


def hinted(body: Mapping[str, Any]) -> bool:
    """The listed body says a perimeter secures the account."""
    properties = body.get("properties")
    value = properties.get("publicNetworkAccess") if isinstance(properties, Mapping) else None
    return isinstance(value, str) and value.lower() == SECURED_BY_PERIMETER


def needs_verify(
    account_id: str,
    body: Mapping[str, Any],
    associated: Mapping[str, Any],
    stored_member: bool,
    round_: int,
    sweeps: int,
) -> bool:
    """Whether the sweep reads this listed account's NSP configurations."""
    return account_id.lower() in associated or hinted(body) or stored_member or in_slice(account_id, round_, sweeps)
