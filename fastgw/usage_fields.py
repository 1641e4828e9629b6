"""The words of a usage query, shared by the ledger's SQL (store/usage_sql.py), the admin API's report
(control/usage_report.py) and the ``fastgw usage`` command's arguments: kept apart so that building the
command line (on every ``fastgw run`` too) loads none of the store, whose types would then sit in every
forked worker's memory."""

from __future__ import annotations

from typing import Final

# The dimensions a ledger row is kept by (its primary key), in order; any of them can group a query.
GROUP_KEYS: Final = ("day", "consumer", "key", "team", "model", "provider", "route")
PERIODS: Final = ("day", "month")
FILTERS: Final = ("consumer", "team", "model", "provider", "key", "route")
