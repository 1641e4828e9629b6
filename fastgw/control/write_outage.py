"""When an outage of the store's quota writes begins and ends, across workers that each resend their
unwritten report on their own clock: logged once when the first report fails, and over only when every
report that failed has been written (not at the first write that succeeds, while another worker's counts
still wait to be resent)."""

from __future__ import annotations

from typing import Final

from fastgw.codec.control_messages import QUOTA_RESEND_SECONDS

# A worker whose report failed sends it again every QUOTA_RESEND_SECONDS; one that missed five resends
# has stopped (exited or killed) and no longer holds an outage open.
SILENT_WRITER_SECONDS: Final = 5 * QUOTA_RESEND_SECONDS


class WriteOutage:
    """The writers (one per worker run) whose last report failed, with when it failed (monotonic)."""

    def __init__(self) -> None:
        self.failing: dict[str, float] = {}

    def failed(self, writer: str, now: float) -> bool:
        """A report could not be written; True when this begins an outage (log it)."""
        self._forget_silent(now)
        begins = not self.failing
        self.failing[writer] = now
        return begins

    def written(self, writer: str, now: float) -> bool:
        """A report was written; True when this ends an outage (log it)."""
        self._forget_silent(now)
        return self.failing.pop(writer, None) is not None and not self.failing

    def _forget_silent(self, now: float) -> None:
        for writer, when in list(self.failing.items()):
            if now - when > SILENT_WRITER_SECONDS:
                del self.failing[writer]
