"""What a completion sink is, and the bounded queue accounting every sink with a consumer shares.

The worker calls, in the order of ``fanout.CompletionSinks``: ``take(batch)`` for every batch of completed
exchanges (each ``CHUNK_RECORDS`` of them, soon after they complete, and the rest at each tick); then
``publish()`` at each publishing point (every tick, and once ``BATCH_RECORDS`` records were taken since
the last); then ``flush()`` at the tick.
Both run on the event loop, so they must never block: a sink with slow work (a disk, a database, a
network) hands it to its own consumer (a thread, a Task) through a queue bounded by a :class:`Backlog`,
and drops what does not fit, counting it. The batch list is the sink's to read, not to keep mutating: the
worker starts a new list after each hand-off, and the same list goes to every sink.
"""

from __future__ import annotations

from typing import Final

from fastgw.exchange import Exchange

# A record is the completed Exchange itself (proxy/dispatch.complete stamps ``ended`` and ``total_s``):
# no copy is made per request.
Record = Exchange
# Records handed to the sinks together between ticks, in a callback of their own after the iteration's
# writes: ~16 x 5 us keeps any one hand-off under ~0.1 ms of loop time, where a tick's worth at 1,000
# llm requests a second (100 records, ~0.8 ms) delayed the requests arriving meanwhile (the open-loop
# p99), and the records are still in the CPU's cache.
CHUNK_RECORDS: Final = 16
# Records between publishing points: counts copied to shared memory (and held log lines released) at
# least this often, so a kill -9 loses fewer than this many records' counts, or one tick's.
BATCH_RECORDS: Final = 256


class Backlog:
    """Records a sink accepted but its consumer has not finished, bounded by ``limit``; the rest dropped.

    Single-writer counters, so a consumer thread needs no lock: ``accepted`` and ``dropped`` are written
    only by the loop (:meth:`admit`), ``finished`` only by the consumer (:meth:`finish`). A reader may see
    ``finished`` one hand-off late, which only makes the bound stricter for that moment.
    """

    __slots__ = ("accepted", "dropped", "finished", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.accepted = 0
        self.finished = 0
        self.dropped = 0

    @property
    def pending(self) -> int:
        return self.accepted - self.finished

    def admit(self, count: int) -> bool:
        """Whether ``count`` more records fit; if not, they are counted as dropped (all of them: a batch
        is taken whole or not at all, so a consumer never sees half a tick)."""
        if self.accepted - self.finished + count > self.limit:
            self.dropped += count
            return False
        self.accepted += count
        return True

    def finish(self, count: int) -> None:
        """The consumer is done with ``count`` records (written, or failed and counted by the sink)."""
        self.finished += count


class Sink:
    """A destination for completed exchanges. Subclasses set ``name`` (the ``sink`` label of
    ``fastgw_sink_dropped_total``) and override :meth:`take`; the rest are no-ops unless needed."""

    __slots__ = ()
    name = "sink"

    @property
    def dropped(self) -> int:
        """Records this sink refused since it started (its queue was full): exported, never silent."""
        return 0

    def take(self, batch: list[Record]) -> None:
        """A batch of completed exchanges, possibly empty (a tick with none). Must not block."""
        raise NotImplementedError

    def publish(self) -> None:
        """A publishing point (the tick, and every BATCH_RECORDS records): make what was taken durable
        (counts into shared memory) before the sinks after this one see the point."""

    def flush(self) -> None:
        """The tick: hand anything held since the last tick on to the consumer."""

    def reopen(self) -> None:
        """SIGUSR1: reopen files (after logrotate moved them)."""

    def close(self) -> None:
        """Finish what is queued and stop the consumer (worker exit)."""
