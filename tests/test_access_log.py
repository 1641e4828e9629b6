"""Several workers share stdout: their access-log lines must never tear or interleave. And the numbers in a
line are what ``%d`` and ``%.3f`` would print."""

from __future__ import annotations

import os

import orjson
from hypothesis import given
from hypothesis import strategies as st

from fastgw.access_line import decimal, millis3
from fastgw.sinks.access_log import PIPE_BUF, write_atomic_lines


def test_concurrent_writers_to_one_pipe_keep_lines_whole() -> None:
    r, w = os.pipe()
    writers = []
    for worker in range(3):
        pid = os.fork()
        if pid == 0:  # a worker writing 200 batches of 50 lines of varying length
            os.close(r)
            for batch in range(200):
                lines = [
                    orjson.dumps({"w": worker, "b": batch, "i": i, "pad": "x" * (37 * i % 400)}) + b"\n"
                    for i in range(50)
                ]
                write_atomic_lines(w, b"".join(lines))
            os._exit(0)
        writers.append(pid)
    os.close(w)
    received = bytearray()
    while chunk := os.read(r, 1 << 16):
        received += chunk
    os.close(r)
    for pid in writers:
        assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
    records = [orjson.loads(line) for line in bytes(received).splitlines()]  # raises on a torn line
    assert len(records) == 3 * 200 * 50
    for worker in range(3):
        mine = [(r["b"], r["i"]) for r in records if r["w"] == worker]
        assert mine == sorted(mine)  # each worker's lines arrive whole and in its order


def test_a_line_longer_than_pipe_buf_is_written_whole() -> None:
    r, w = os.pipe()
    data = b"a\n" + b"y" * (PIPE_BUF * 2) + b"\n" + b"z\n"
    write_atomic_lines(w, data)
    os.close(w)
    out = b""
    while chunk := os.read(r, 1 << 16):
        out += chunk
    os.close(r)
    assert out == data


@given(st.integers(-(10**20), 10**20))
def test_decimal_is_percent_d(n: int) -> None:
    assert decimal(n) == b"%d" % n


@given(st.floats(0.0, 1e9) | st.just(-1.0))
def test_millis3_is_a_three_decimal_rounding(value: float) -> None:
    whole, thousandths = millis3(value)
    text = whole + b"." + thousandths
    assert len(thousandths) == 3 and thousandths.isdigit(), text
    assert abs(float(text) - value) <= 0.0005 + abs(value) * 1e-15, text
    if value == -1.0:
        assert text == b"-1.000"
