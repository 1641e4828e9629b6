"""The quota-write outage as the control process logs it: once when the first worker's report fails, over
only when every report that failed is written, however the workers' 2 s resends interleave."""

from __future__ import annotations

from fastgw.control.write_outage import SILENT_WRITER_SECONDS, WriteOutage


def test_two_workers_one_line_when_it_begins_and_one_when_the_last_report_is_written() -> None:
    outage = WriteOutage()
    assert outage.failed("quota-a", 0.0)  # begins
    assert not outage.failed("quota-b", 0.7)  # the same outage
    assert not outage.failed("quota-a", 2.0)  # a resend
    assert not outage.written("quota-a", 4.0)  # b's counts still wait for its resend
    assert outage.written("quota-b", 4.7)  # every report that failed is written: over
    assert not outage.written("quota-a", 6.0)  # a plain write afterwards says nothing
    assert outage.failed("quota-b", 9.0)  # the next outage is logged again


def test_a_worker_gone_with_its_report_unwritten_does_not_hold_the_outage_open() -> None:
    outage = WriteOutage()
    assert outage.failed("quota-dead", 0.0)
    assert outage.failed("quota-live", 0.5) is False
    # quota-dead never resends (killed); quota-live resends every 2 s until its write succeeds
    resend = 0.5
    while resend < SILENT_WRITER_SECONDS:
        resend += 2.0
        assert outage.failed("quota-live", resend) is False
    assert outage.written("quota-live", resend + 2.0)
    # and a later outage is logged, not swallowed by the dead writer
    assert outage.failed("quota-live", SILENT_WRITER_SECONDS + 30.0)
