"""Shared regions are shared across fork: a child's writes are seen by the parent, slot by slot."""

from __future__ import annotations

import os

import pytest

from fastgw.process.shm import Heartbeats, SharedRegions


def test_heartbeats_written_by_a_forked_child_are_seen_by_the_parent() -> None:
    regions = SharedRegions()
    beats = Heartbeats.create(regions, 3)
    beats.beat(0, 1.5)
    pid = os.fork()
    if pid == 0:
        beats.beat(2, 42.25)
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert (beats.last(0), beats.last(1), beats.last(2)) == (1.5, 0.0, 42.25)
    assert regions.names() == ["heartbeat"]
    with pytest.raises(ValueError, match="exists"):
        regions.create("heartbeat", 8)
