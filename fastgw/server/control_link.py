"""A worker's end of the control channel: reload orders and metric pulls from the control process.

The worker connects to the control socket the supervisor bound, says hello (slot, pid, snapshot id) and
then answers orders. Losing the channel (the control process died or restarts) changes nothing for
traffic: the worker keeps serving on its Snapshot and reconnects every second; the control process
re-orders a reload if the worker's snapshot is not the one in force.
"""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from typing import TYPE_CHECKING, Final

from fastgw.control.channel import ChannelProtocol, Message
from fastgw.policy.identity import IDENTITIES, KeyIdentity
from fastgw.policy.quota import QUOTAS

if TYPE_CHECKING:
    from fastgw.server.worker import Worker

RECONNECT_SECONDS: Final = 1.0


class ControlLink:
    def __init__(self, worker: Worker, address: str) -> None:
        self.worker = worker
        self.address = address
        self.channel: ChannelProtocol | None = None
        self._lost: asyncio.Future[None] | None = None

    def start(self) -> None:
        self.worker.spawn(self._run())

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while not self.worker.draining:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.setblocking(False)
            try:
                await loop.sock_connect(sock, self.address)
                self._lost = loop.create_future()
                _, channel = await loop.create_unix_connection(
                    lambda: ChannelProtocol(self._on_message, self._on_lost), sock=sock
                )
            except OSError:
                sock.close()
            else:
                self.channel = channel
                current = self.worker.holder.current
                channel.send(
                    {"t": "hello", "slot": self.worker.slot, "pid": os.getpid(), "snapshot": current.id}
                )
                await self._lost
                self.channel = None
            await asyncio.sleep(RECONNECT_SECONDS)

    def _on_lost(self, channel: ChannelProtocol) -> None:
        if self._lost is not None and not self._lost.done():
            self._lost.set_result(None)

    def _on_message(self, channel: ChannelProtocol, message: Message) -> None:
        kind = message["t"]
        if kind == "reload":
            self._reload(channel, message)
        elif kind == "keys":
            apply_key_update(message)
        elif kind == "health":
            self.worker.pools.set_health(
                str(message["upstream"]), str(message["target"]), bool(message["healthy"])
            )
        elif kind == "metrics":
            channel.send({"t": "metrics", "seq": message.get("seq"), "data": self.worker.export_metrics()})
        elif kind == "quota_bases":
            QUOTAS.apply_bases(message.get("e") or [])

    def send_quotas(self) -> None:
        """Hand this worker's quota admissions to the control process (kept for later when it is away)."""
        entries = QUOTAS.take()
        if not entries:
            return
        channel = self.channel
        if channel is None or not channel.send({"t": "quota", "e": entries}):
            QUOTAS.give_back(entries)

    def _reload(self, channel: ChannelProtocol, message: Message) -> None:
        from fastgw.config.loader import ConfigError

        seq = message.get("seq")
        try:
            snapshot = self.worker.apply_config(str(message["config"]).encode(), str(message["source"]))
        except ConfigError as exc:
            sys.stderr.write(f"fastgw[worker {self.worker.slot} {os.getpid()}]: reload failed: {exc}\n")
            channel.send({"t": "ack", "seq": seq, "ok": False, "error": str(exc)})
            return
        channel.send({"t": "ack", "seq": seq, "ok": True, "snapshot": snapshot.id})


def apply_key_update(message: Message) -> None:
    """A full table (on connect) or puts and deletes (as they happen), into this process's cache."""
    full = message.get("full")
    if full is not None:
        IDENTITIES.replace_all({bytes.fromhex(e["digest"]): KeyIdentity.from_wire(e) for e in full})
    for entry in message.get("put", ()):
        IDENTITIES.put(bytes.fromhex(entry["digest"]), KeyIdentity.from_wire(entry))
    for digest in message.get("delete", ()):
        IDENTITIES.delete(bytes.fromhex(digest))
