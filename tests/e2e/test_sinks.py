"""Completion sinks in a running gateway: each configured sink exports its drop counter, at zero while
it keeps up, and every request reaches both the metrics and the access log."""

from __future__ import annotations

from tests.support.admin import Admin
from tests.support.clients import get
from tests.support.gateways import Gateway


def test_every_sink_exports_its_drop_counter(admin_gateway: tuple[Gateway, Admin]) -> None:
    gw, admin = admin_gateway
    for i in range(20):
        assert get(gw.port, f"/s/{i}").status == 200
    gw.wait_log(20)  # the lines are written after the counts reached shared memory
    text = admin.call("GET", "/metrics")[2].decode()
    assert 'fastgw_sink_dropped_total{sink="metrics"} 0.0' in text
    assert 'fastgw_sink_dropped_total{sink="access_log"} 0.0' in text
    assert 'fastgw_requests_total{code="2xx",method="GET",route="main"} 20.0' in text
