"""The supervisor's status file as `fastgw reload` reads it: an answer rewritten in place (a full disk) is
never taken half old, half new, and one that cannot fit the old file leaves the old answer whole."""

from __future__ import annotations

import errno
from pathlib import Path

import orjson
import pytest

from fastgw.process import status_file


def outcome(generation: int, ok: bool, error: str = "") -> dict[str, object]:
    return {"pid": 4242, "reload_within": 30.0, "last": {"generation": generation, "ok": ok, "error": error}}


def test_an_answer_rewritten_in_place_is_read_whole_or_not_at_all(tmp_path: Path) -> None:
    path = str(tmp_path / "fastgw.status.json")
    status_file.write(path, outcome(1, True))
    assert (tmp_path / "fastgw.status.json").stat().st_size == status_file.STATUS_BYTES
    first = status_file.read(path)
    assert first is not None and {k: v for k, v in first.items() if k != "digest"} == outcome(1, True)
    status_file.overwrite(path, outcome(2, False, "cannot write: No space left on device"))
    read = status_file.read(path)
    assert (
        read is not None
        and read["last"] == outcome(2, False, "cannot write: No space left on device")["last"]
    )
    # A reader that caught the rewrite midway: the new answer's start, the old one's end. Both parse;
    # the digest tells the mixture apart, and the command reads again.
    old = orjson.dumps({**outcome(3, True), "digest": 0})
    new = (tmp_path / "fastgw.status.json").read_bytes()
    torn = new[:30] + old[30:]
    (tmp_path / "fastgw.status.json").write_bytes(torn.ljust(status_file.STATUS_BYTES))
    assert orjson.loads(torn) and status_file.read(path) is None


def test_a_file_from_before_digests_is_still_read(tmp_path: Path) -> None:
    """A gateway upgraded while a command of the old version (or the reverse) is running: no digest, no
    check."""
    path = tmp_path / "fastgw.status.json"
    path.write_bytes(orjson.dumps(outcome(1, True)).ljust(status_file.STATUS_BYTES))
    assert status_file.read(str(path)) == outcome(1, True)


def test_an_answer_longer_than_the_old_file_is_refused_and_the_old_one_stays(tmp_path: Path) -> None:
    path = tmp_path / "fastgw.status.json"
    path.write_bytes(orjson.dumps(outcome(1, True)))  # a short file (written without padding)
    with pytest.raises(OSError) as refused:
        status_file.overwrite(str(path), outcome(2, False, "x" * 200))
    assert refused.value.errno == errno.ENOSPC and refused.value.filename == str(path)
    assert status_file.read(str(path)) == outcome(1, True)
