"""The shared-memory counter table (DESIGN.md "Counters"): one shard per worker slot, each ``capacity``
cells of four int64 ``(key hash, window, count in window, count in the window before)``. A worker
writes only its own shard (single writer, no lock); a read sums the key's cell over every shard.

Storage only: what a count means (a sliding window, a quota period, requests in flight) is the caller's
(policy/rate_limit.py). The supervisor sizes and creates the region from here (``region_bytes``) and
releases a dead worker's in-flight cells; each worker attaches ``COUNTERS`` to its slot.

Capacity: cells are probed linearly over ``PROBES`` slots; a worker reuses its own cells once they
hold nothing (both counts 0), or once their window, of the length the worker recorded when it wrote
the cell (``lengths``: window indices of different lengths are not comparable, so an index alone never
tells a live hour from a stale second), ended more than one window before the new key's began. When all
are live (the table is full for that hash), the key is counted in a per-worker dict instead: limiting
continues, exact per worker but not shared, and the event is counted (``table_full``) and logged once.

A cell turning to the next window (counters/windows.py) keeps the one that ended as its previous count.
When the clock steps back a window (across midnight, for a day), that window counts in the per-worker
dict and the cell keeps the newer one's, which it would otherwise lose (``_stepped_back``).
"""

from __future__ import annotations

import hashlib
import mmap
import struct
import sys
from array import array
from typing import Final

from fastgw.counters.windows import IN_FLIGHT, following, is_older

CELL_INTS: Final = 4  # key hash, window, current count, previous count
CELL_BYTES: Final = CELL_INTS * 8
# Cells probed for a key before the table counts as full for it: longer probes cost every read of a key
# not yet counted in a shard; 8 keeps a miss under a cache line's worth of loads per shard.
PROBES: Final = 8
# Keys whose copy of this worker's own cell is trusted (``KeyCells``), remembered to enforce that only one
# key object per hash holds a trusted copy: past this many the record is cleared and every copy dropped
# (re-read once on the next count), so a flood of new keys costs a re-read, never a wrong count.
OWNERS_MAX: Final = 16384
_CELL: Final = struct.Struct("=4q")  # one cell as stored: key hash, window, current, previous


def region_bytes(shards: int, capacity: int) -> int:
    """The size of the shared region for ``shards`` workers of ``capacity`` cells each."""
    return shards * capacity * CELL_BYTES


def key_hash(limit_id: bytes, value: bytes) -> int:
    """A key's stable hash (blake2b, the same in every process, unlike ``hash()``); never 0 (empty cell)."""
    digest = hashlib.blake2b(limit_id + b"\0" + value, digest_size=8).digest()
    return int.from_bytes(digest, "little", signed=True) or 1


class KeyCells:
    """One key of one limit as this worker knows it: its stable hash; where its cell lies in each shard
    (``where``: a cached guess, checked against the stored hash on every read, since a shard's owner may
    reuse a stale cell for another key); and, for sliding windows, a copy of this worker's own cell
    (window, current, previous), valid while ``generation`` is the table's (``CounterTable.sliding``).
    """

    __slots__ = ("current", "generation", "hash", "previous", "where", "window")

    def __init__(self, key_hash: int, where: list[int]) -> None:
        self.hash = key_hash
        self.where = where
        self.generation = -1  # no copy yet
        self.window = self.current = self.previous = 0


class CounterTable:
    """The shared table as seen by one worker (or by nobody, before a worker configures it).

    Callers keep, per key, where its cell lies in each shard (``where``, from ``locate``): a cached guess,
    checked against the stored hash on every read, since a shard's owner may reuse a stale cell for
    another key. A steady-state read is then one ``unpack_from`` per shard.
    """

    def __init__(self) -> None:
        self.region: mmap.mmap | None = None
        self.cells: memoryview | None = None  # int64 view over all shards
        self.slot = 0
        self.shards = 0
        self.capacity = 0
        self.local: dict[tuple[int, int], list[int]] = {}  # overflow: (hash, window) -> [count]
        self.table_full = 0
        self.generation = 0  # moves when this worker's cells change hands: KeyCells copies go stale
        # key hash -> the one KeyCells whose copy of its own cell is trusted (see ``_sync``)
        self.owners: dict[int, KeyCells] = {}
        # The window length (seconds) of each cell of this worker's shard, as last written; 0: unknown (a
        # calendar period, requests in flight, or a cell written before this process attached).
        self.lengths = array("d")

    def attach(self, region: mmap.mmap, slot: int, shards: int, capacity: int) -> None:
        self.region = region
        self.cells = memoryview(region).cast("q")
        self.slot = slot
        self.shards = shards
        self.capacity = capacity
        self.generation += 1
        self.owners.clear()
        self.lengths = array("d", bytes(8 * capacity))

    def locate(self, key_hash: int) -> list[int]:
        """A new key's place in each shard: ``~home`` (negative: not found there yet; ``home`` is its first
        probe slot, so one load tells whether the shard's owner has since counted it)."""
        return [~self._home(shard, key_hash) for shard in range(self.shards)]

    def _home(self, shard: int, key_hash: int) -> int:
        """Index of key_hash's first probe slot in a shard."""
        return (shard * self.capacity + key_hash % self.capacity) * CELL_INTS

    def _find(self, shard: int, key_hash: int) -> int:
        """Cell index of key_hash in a shard, or -1."""
        cells = self.cells
        assert cells is not None
        base = shard * self.capacity
        start = key_hash % self.capacity
        for probe in range(PROBES):
            index = (base + (start + probe) % self.capacity) * CELL_INTS
            stored = cells[index]
            if stored == key_hash:
                return index
            if stored == 0:
                return -1
        return -1

    def count(
        self,
        key_hash: int,
        where: list[int],
        window: int,
        weight_previous: float,
        cap: float = -1.0,
        amount: int = 1,
        length: float = 0.0,
    ) -> float:
        """The sliding estimate for key_hash, summed over every shard. When it leaves room for ``amount``
        more under ``cap``, the amount is counted too, in this worker's own shard, in the same pass.
        ``length``: the window's length in seconds (0: not a sliding window), for ``add``."""
        cells = self.cells
        if cells is None:
            return 0.0
        current, previous, own, own_count = self._read_shards(key_hash, where, window, -1)
        counted = current + previous * weight_previous
        if counted + amount <= cap:
            if own >= 0:
                cells[own + 2] = own_count + amount  # the steady state: more in our cell's current window
            else:
                self.add(key_hash, where, window, amount, length)
        return counted

    def sliding(
        self,
        key: KeyCells,
        window: int,
        weight_previous: float,
        cap: float,
        amount: int = 1,
        length: float = 0.0,
    ) -> float:
        """``count`` for a key, this worker's own cell read from the key's copy of it.

        The copy is trusted while ``key.generation`` equals the table's: this worker is its cell's only
        writer, every write to it goes through here or ``adjust_key`` or drops the copy, the generation
        moves whenever this worker gives one of its cells to another key, and only one key object per
        hash holds a trusted copy at a time (``_sync``: a limit compiled again by a reload, or a key
        cache cleared, makes a second one). Other shards are read as in ``count``.
        """
        cells = self.cells
        if cells is None or key.generation != self.generation:
            counted = self.count(key.hash, key.where, window, weight_previous, cap, amount, length)
            self._sync(key)
            return counted
        own_window = key.window
        if own_window == window:
            own_current, own_previous = key.current, key.previous
        elif following(own_window) == window:
            own_current, own_previous = 0, key.current
        elif self._stepped_back(key.where[self.slot], window, own_window, length):
            # The clock stepped back: the cell keeps its newer window, and ``add`` counts this one apart.
            return self.count(key.hash, key.where, window, weight_previous, cap, amount, length)
        else:
            own_current = own_previous = 0
        current, previous = own_current, own_previous
        if self.shards > 1 or self.local:  # other workers' shards, and the overflow (almost always empty)
            others, before, _own, _count = self._read_shards(key.hash, key.where, window, self.slot)
            current += others
            previous += before
        counted = current + previous * weight_previous
        if counted + amount <= cap:
            own = key.where[self.slot]
            if own_window != window:  # a new window: the one that ended becomes the previous one
                key.previous = own_previous
                key.window = window
                self._record_length(own, length)
                cells[own + 3] = own_previous
                cells[own + 2] = 0
                cells[own + 1] = window
            key.current = own_current + amount
            cells[own + 2] = own_current + amount
        return counted

    def adjust_key(self, key: KeyCells, window: int, delta: int) -> None:
        """``adjust`` for a key counted through ``sliding``: its copy and its cell move together (one
        store when the copy is trusted)."""
        cells = self.cells
        if cells is None or key.generation != self.generation:
            self.adjust(key.hash, key.where, window, delta)
            self.drop_copy(key)
            return
        own = key.where[self.slot]
        if key.window == window:
            key.current += delta
            cells[own + 2] = key.current
        elif key.window == following(window):  # as in ``adjust``
            key.previous += delta
            cells[own + 3] = key.previous
        else:
            self.adjust(key.hash, key.where, window, delta)  # perhaps counted apart (the clock stepped back)

    def drop_copy(self, key: KeyCells) -> None:
        """Trust no copy of ``key``'s own cell, the key's or another object's for the same hash: the cell
        is written (or about to be) without going through one."""
        key.generation = -1
        owner = self.owners.pop(key.hash, None)
        if owner is not None:
            owner.generation = -1

    def _sync(self, key: KeyCells) -> None:
        """Copy this worker's own cell for ``key`` (after the generic path counted it), or drop the copy."""
        key.generation = -1
        region = self.region
        own = key.where[self.slot]
        if region is None or own < 0:
            return
        stored, window, current, previous = _CELL.unpack_from(region, own << 3)
        if stored == key.hash:
            key.window, key.current, key.previous = window, current, previous
            key.generation = self.generation
            owners = self.owners
            owner = owners.get(key.hash)
            if owner is not key:
                if owner is not None:
                    owner.generation = -1  # two copies of one cell would each overwrite the other's counts
                elif len(owners) >= OWNERS_MAX:
                    owners.clear()
                    self.generation += 1  # forgotten owners' copies must not be trusted
                    key.generation = self.generation
                owners[key.hash] = key

    def _read_shards(
        self, key_hash: int, where: list[int], window: int, skip: int
    ) -> tuple[int, int, int, int]:
        """key_hash's counts in ``window`` and the one before, summed over every shard but ``skip``; and
        this worker's own cell with its count in ``window`` (-1, -1: none, or not in this window)."""
        region = self.region
        cells = self.cells
        assert region is not None and cells is not None
        current = previous = 0
        slot = self.slot
        own = own_count = -1
        for shard, cached in enumerate(where):
            if shard == skip:
                continue
            at = cached
            cell: tuple[int, int, int, int] | None = None
            if at >= 0:
                cell = _CELL.unpack_from(region, at << 3)
            if cell is None or cell[0] != key_hash:
                if at < 0 and not cells[~at]:
                    continue  # the key's first probe slot is still empty: not in this shard (one load)
                at = self._find(shard, key_hash)
                where[shard] = at if at >= 0 else ~self._home(shard, key_hash)
                if at < 0:
                    continue
                cell = _CELL.unpack_from(region, at << 3)
            _stored, cell_window, in_window, before = cell
            if cell_window == window:
                current += in_window
                previous += before
                if shard == slot:
                    own, own_count = at, in_window
            elif following(cell_window) == window:
                previous += in_window
            elif cell_window == following(window):  # the clock stepped back into the cell's previous window
                current += before
        if self.local:  # the overflow counts, almost always empty
            local = self.local.get((key_hash, window))
            if local is not None:
                current += local[0]
        return current, previous, own, own_count

    def add(self, key_hash: int, where: list[int], window: int, amount: int = 1, length: float = 0.0) -> None:
        """Count one admission (or ``amount``: tokens, micro-USD) in this worker's own shard (the only
        shard it ever writes). ``length``: the window's length in seconds, 0 when it is no sliding window
        (a calendar period, requests in flight): recorded with the cell, it tells when the cell is stale."""
        cells = self.cells
        if cells is None:
            return
        own = where[self.slot]
        if own >= 0 and cells[own] == key_hash:
            if cells[own + 1] == window:  # the steady state: one more in the current window
                cells[own + 2] += amount
            elif self._stepped_back(own, window, cells[own + 1], length):
                self._count_apart(key_hash, window, amount)
            else:
                self._bump(own, window, amount)
                self._record_length(own, length)
            return
        capacity = self.capacity
        base = self.slot * capacity
        start = key_hash % capacity
        free = -1
        for probe in range(PROBES):
            index = (base + (start + probe) % capacity) * CELL_INTS
            stored = cells[index]
            if stored == key_hash:
                where[self.slot] = index
                if self._stepped_back(index, window, cells[index + 1], length):
                    self._count_apart(key_hash, window, amount)
                    return
                self._bump(index, window, amount)
                self._record_length(index, length)
                return
            if free < 0 and (stored == 0 or self._reusable(index, window, length)):
                free = index  # empty, or another key's cell that holds nothing any more
            if stored == 0:
                break
        if free >= 0:
            if cells[free]:
                self.generation += 1  # another key's stale cell: copies of it must not be trusted
            cells[free + 1] = window
            cells[free + 2] = amount
            cells[free + 3] = 0
            cells[free] = key_hash  # published last: readers never see a half-written cell as this key
            where[self.slot] = free
            self.lengths[self._cell_number(free)] = length
            return
        self.table_full += 1
        if self.table_full == 1:
            sys.stderr.write(
                "fastgw: rate-limit table full for a key: counting it per worker (see docs/rate-limits.md)\n"
            )
        self._count_apart(key_hash, window, amount)

    def _count_apart(self, key_hash: int, window: int, amount: int) -> None:
        """Count in this worker's dict (the table full for the key, or the clock stepped back)."""
        cell = self.local.setdefault((key_hash, window), [0])
        cell[0] += amount
        if len(self.local) > 65536:
            self.local.clear()

    def _reusable(self, index: int, window: int, length: float) -> bool:
        """Whether this worker's cell at ``index``, another key's, may be given to a new key counting in
        ``window`` of ``length`` seconds: it holds nothing (both counts 0: whatever it was, its key reads
        0 without it), or its own window, of its recorded length, ended more than one of its windows
        before the new window began (so it no longer counts even as a previous window). Window indices
        of different lengths are never compared: an hour's index is far below a second's; calendar
        codes of one kind are (``is_older``)."""
        cells = self.cells
        assert cells is not None
        if cells[index + 2] == 0 and cells[index + 3] == 0:
            return True
        cell_window = cells[index + 1]
        if window < IN_FLIGHT:
            # Calendar codes of one kind compare as they are: a period ended before the new one's previous
            # period began counts no more (a day cell two days old, a month cell two months old).
            return is_older(cell_window, window + 2)  # (window + 2: the period before the new one)
        cell_length = self.lengths[self._cell_number(index)]
        if cell_length <= 0.0 or length <= 0.0:
            return False  # requests in flight, a calendar period, or a length this process never saw
        return cell_window >= 0 and (cell_window + 2) * cell_length <= window * length

    def _stepped_back(self, index: int, window: int, cell_window: int, length: float) -> bool:
        """Whether ``window`` is the one before that of this worker's cell at ``index``, of one length: the
        clock stepped back a window. Another older window, or length, takes the cell over instead."""
        return following(window) == cell_window and self.lengths[self._cell_number(index)] == length

    def _cell_number(self, index: int) -> int:
        """The position in ``lengths`` of this worker's cell at int index ``index``."""
        return index // CELL_INTS - self.slot * self.capacity

    def _record_length(self, index: int, length: float) -> None:
        if length > 0.0:
            self.lengths[self._cell_number(index)] = length

    def adjust(self, key_hash: int, where: list[int], window: int, delta: int) -> None:
        """Correct an amount this worker added in ``window`` by ``delta`` (either sign): an estimate
        reconciled with what was used. Where the window has since become the cell's previous one, the
        previous count is corrected; an older window decides nothing any more and is left alone, unless
        it was counted apart (the table full, or the clock stepped back)."""
        cells = self.cells
        if cells is None:
            return
        index = where[self.slot]
        if index >= 0 and cells[index] == key_hash:
            cell_window = cells[index + 1]
            if cell_window == window:
                cells[index + 2] += delta
                return
            if cell_window == following(window):
                cells[index + 3] += delta
                return
        cell = self.local.get((key_hash, window))
        if cell is not None:
            cell[0] += delta

    def take_back(self, key_hash: int, where: list[int], window: int) -> None:
        """Undo one ``add`` of this worker (a request that finished, or one a later limit refused)."""
        cells = self.cells
        if cells is None:
            return
        index = where[self.slot]
        if index >= 0 and cells[index] == key_hash and cells[index + 1] == window and cells[index + 2] > 0:
            cells[index + 2] -= 1
        else:
            cell = self.local.get((key_hash, window))
            if cell is not None and cell[0] > 0:
                cell[0] -= 1

    def release_shard(self, shard: int) -> int:
        """A worker died: zero the in-flight counts of its shard (the supervisor's job). Returns how many."""
        cells = self.cells
        if cells is None:
            return 0
        released = 0
        for cell in range(shard * self.capacity, (shard + 1) * self.capacity):
            index = cell * CELL_INTS
            if cells[index] and cells[index + 1] == IN_FLIGHT and cells[index + 2]:
                released += cells[index + 2]
                cells[index + 2] = 0
        return released

    def _bump(self, index: int, window: int, amount: int = 1) -> None:
        cells = self.cells
        assert cells is not None
        cell_window = cells[index + 1]
        if cell_window != window:
            cells[index + 3] = cells[index + 2] if following(cell_window) == window else 0
            cells[index + 2] = 0
            cells[index + 1] = window
        cells[index + 2] += amount


# The worker's view of the node's shared-memory counter table. Process-global on purpose: the table is
# mapped once per worker at start (its size needs a restart) and its counts must outlive reloads, so
# every snapshot's limits count in the same cells. A compile may bring its own table instead
# (CompileContext.counters): a test counts apart from the process's.
COUNTERS: Final = CounterTable()
