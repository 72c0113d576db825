"""Which listed accounts the full ARM sweep verifies (reads their NSP configurations): pure.

Membership with the fewest reads that cannot miss an association an in-scope perimeter makes:

- accounts associated with a perimeter of an in-scope subscription (its association list);
- accounts whose listed ``publicNetworkAccess`` is ``SecuredByPerimeter`` (an association in
  Enforced mode sets it, whichever perimeter made it);
- accounts stored as members (to see them leave);
- and a rotating verification slice of all the others: a perimeter in a subscription *outside*
  the scope (not listable) can associate an in-scope account in Learning mode without changing
  anything the list shows. Each full sweep reads the NSP configurations of a deterministic 1/k of
  the remaining accounts (by a hash of the id and the sweep's UTC day number), so every account is
  verified within k full sweeps on k consecutive days (``NSP_DRIFT_MEMBERSHIP_VERIFY_SWEEPS``;
  with the daily full sweep, within k days). A schedule of one sweep every d days still verifies
  every account within k sweeps as long as d is not a multiple of k: the default k is prime (11),
  so a weekly sweep covers every account in 11 weeks (with 7, a weekly sweep read the same slice
  forever).

Everything else is recorded from the list body alone as in no perimeter: no rule applies there.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

# Default of NSP_DRIFT_MEMBERSHIP_VERIFY_SWEEPS: prime, so sweeps every d days (d < 11) still cover
# every slice; 10,000 accounts with 10 % members read at most 6,920 in any one full sweep
# (tests/test_full_sweep.py), under the 7,000 goal that k = 7 (up to 7,384) and k = 10 (7,013) miss.
VERIFY_SWEEPS = 11
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
