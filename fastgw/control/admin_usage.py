"""Admin API endpoint of the usage ledger (control/ledger.py):

GET /usage?consumer=&team=&model=&provider=&key=&route=&since=&until=&period=day|month&group_by=a,b
    {"usage": [row, ...]}: rows as control/usage_report.py describes (cost_usd null when unknown);
    a bad filter is a 400 naming it. The store is at most one flush interval behind the workers.
"""

from __future__ import annotations

from typing import Any

from fastgw.control.admin_http import AdminError, Call, Endpoint
from fastgw.control.api import ControlAPI
from fastgw.control.usage_report import UsageQueryError, parse_query, row


class UsageEndpoints:
    def __init__(self, control: ControlAPI) -> None:
        self._control = control

    def endpoints(self) -> tuple[Endpoint, ...]:
        return (Endpoint("GET", "/usage", self._usage),)

    async def _usage(self, call: Call) -> dict[str, Any]:
        try:
            query = parse_query(call.query)
        except UsageQueryError as exc:
            raise AdminError(400, "bad-usage-query", str(exc)) from None
        return {"usage": [row(total) for total in self._control.ledger.usage(query)]}
