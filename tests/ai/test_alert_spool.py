"""The budget alerts' spool (fastgw/ai/alert_spool.py): a starting worker adopts what workers no longer
running left, never what a live one holds; a write cut by a death and a file that is no alert are
removed, never delivered. (The kill -9 and the stop, end to end: tests/e2e/test_llm_budget_alerts.py.)"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from fastgw.ai.alert_spool import AlertSpool

BODY = b'{"type":"budget.threshold","id":"00ff-20431","route":"llm","threshold":80}'


def spool(state: Path, pid: int) -> AlertSpool:
    opened = AlertSpool(str(state), pid)
    opened.open()
    return opened


def test_a_starting_worker_adopts_the_dead_ones_alerts_never_a_live_ones(tmp_path: Path) -> None:
    dead, live = spool(tmp_path, 101), spool(tmp_path, 102)
    kept = dead.keep("llm", "https://hooks.example/a", BODY)
    assert kept is not None and stat.S_IMODE(os.stat(kept).st_mode) == 0o600
    live.keep("llm", "https://hooks.example/b", BODY)
    os.close(dead._lock_fd)  # the kernel drops a dead process's lock the same way

    starting = spool(tmp_path, 103)
    [entry] = starting.adopt()
    assert (entry.route, entry.url, entry.body) == ("llm", "https://hooks.example/a", BODY)
    assert Path(entry.path).parent == Path(starting.dir)
    assert not Path(dead.dir).exists(), "the adopted directory is gone"
    assert len(list(Path(live.dir).glob("*.json"))) == 1, "the live worker keeps its own"
    starting.remove(entry.path)
    assert starting.adopt() == []


def test_a_cut_write_and_a_file_that_is_no_alert_are_removed_unread(tmp_path: Path) -> None:
    own = spool(tmp_path, 201)
    good = own.keep("llm", "https://hooks.example/a", BODY)
    Path(own.dir, "cut.json.tmp").write_bytes(b'{"route": "llm", "ur')
    Path(own.dir, "junk.json").write_bytes(b"not json")
    Path(own.dir, "big.json").write_bytes(b" " * (64 * 1024 + 1))
    assert [e.path for e in own.adopt()] == [good]
    assert sorted(p.name for p in Path(own.dir).iterdir()) == [Path(str(good)).name]


def test_a_spool_that_cannot_be_written_says_so_once(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    own = spool(tmp_path, 301)
    os.rmdir(own.dir)
    Path(own.dir).write_bytes(b"")  # a file where the directory was: ENOTDIR, even for root
    assert own.keep("llm", "https://hooks.example/a", BODY) is None
    assert own.keep("llm", "https://hooks.example/b", BODY) is None
    assert capfd.readouterr().err.count("in memory only") == 1


def test_a_symlink_among_the_directories_is_never_followed(tmp_path: Path) -> None:
    """A link named like a worker's directory had its target emptied into the spool, and whatever was
    no alert there deleted."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "notes.json").write_text("{}")
    own = spool(tmp_path, 401)
    (Path(own.root) / "worker-999").symlink_to(elsewhere)
    assert own.adopt() == []
    assert (elsewhere / "notes.json").read_text() == "{}"
