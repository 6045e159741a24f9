"""Publishes the store's outbox (alert transitions, retained alert state) to the broker.

A QoS 1 message's outbox row is deleted only once the broker has acknowledged it (PUBACK). If
the broker is away the rows wait on disk; on reconnect they go out in order. A message may be
published twice if the gateway dies between PUBACK and the delete, or loses the connection
before a PUBACK (paho sends it again, and so does the outbox); consumers deduplicate on the
alert id and transition (docs/interfaces.md).

The fast lane (docs/performance.md): the alert path hands over what a save has just committed
(``offer``) and those messages are written to the broker there and then, from paho's own
network thread, so that nothing the event loop does next (planning pages, the next batch)
delays them. They are read back only when another writer queued something since the outbox
was last read (``wake``: a page on the MQTT channel, a command's answer): then the outbox is
read in id order first, so nothing overtakes an older row. What the rules decided from stored
events goes out before its save has even committed (``early``), on the same terms: the save
names the rows afterwards, and a save lost to a crash or a failed commit is replayed from the
events to the same messages. A batch is written without waiting for each PUBACK in turn (paho
keeps the order on the connection); rows are deleted once all of the batch is acknowledged.

paho-mqtt is used directly (its network thread writes at once, whatever the loop is doing);
``client()`` makes aiomqtt clients for those who publish from the loop (Home Assistant, doctor).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import aiomqtt
import paho.mqtt.client as mqtt

from gateway.clock import Clock
from gateway.log import LogOnce
from gateway.mqtt_util import paho_client
from gateway.site.config import SiteConfig
from gateway.store import OutboxMessage, Store

log = logging.getLogger("sensegate.publisher")


# Told the rows a save queued for messages sent before its commit, or None: it failed (``early``).
Saved = Callable[[Sequence[OutboxMessage] | None], None]


class LinkLost(Exception):
    """The connection to the broker ended (or never came up)."""


@dataclass(frozen=True, slots=True)
class _Sent:
    """Messages written to the broker, and their acknowledgements to come."""

    messages: list[OutboxMessage]
    acks: list[asyncio.Future[None]]


class OutboxPublisher:
    def __init__(self, config: SiteConfig, store: Store, clock: Clock, channel: str = "mqtt") -> None:
        self.config = config
        self.store = store
        self.clock = clock
        self.channel = channel
        self.wake = asyncio.Event()  # another writer queued messages: read the outbox
        self.connected = False
        self._log_once = LogOnce(log, clock)
        self._fresh: list[OutboxMessage] = []  # offered while the outbox was being read
        self._sent: deque[_Sent] = deque()  # written, awaiting PUBACK, in order
        self._stirred = asyncio.Event()  # something was offered or sent
        self._reading = False
        self._paho: mqtt.Client | None = None
        self._acks: dict[int, asyncio.Future[None]] = {}  # packet id → its PUBACK
        self._lost: asyncio.Future[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: int | None = None

    # ------------------------------------------------------------------ the fast lane

    def offer(self, messages: Sequence[OutboxMessage]) -> None:
        """Messages the alert path has just committed to the outbox: on the wire at once, unless
        older rows are still to be read. From another thread (the alert path catching up at
        start) it goes through the loop."""
        if self._loop is not None and threading.get_ident() != self._thread:
            self._loop.call_soon_threadsafe(self.offer, messages)
            return
        mine = [m for m in messages if m.channel == self.channel]
        if not mine or not self.connected:
            return  # they wait in the outbox: a (re)connect reads it
        if self._older_first():
            self._fresh.extend(mine)
        else:
            try:
                self._sent.append(self._write(mine))
            except LinkLost:
                self.wake.set()  # in the outbox still: read it again
        self._stirred.set()

    def early(self, messages: Sequence[tuple[str, str, str, bool]]) -> Saved | None:
        """Messages a rules' save is about to commit, ``(channel, topic, payload, retain)``: on
        the wire now, while the commit runs, when nothing older is still to go out (as ``offer``
        would). Returns what the save calls with the rows it queued, so that they are deleted
        once acknowledged, or with None if it failed (they were published, and the replay of the
        events publishes them again, under the same alert id); None when they were not sent:
        then the save offers them as ever. On the loop only."""
        if threading.get_ident() != self._thread or not self.connected or self._older_first():
            return None
        mine = [OutboxMessage(0, c, t, p, r) for c, t, p, r in messages if c == self.channel]
        if not mine:
            return None
        try:
            sent = self._write(mine)
        except LinkLost:
            self.wake.set()  # some may be out: the save's rows are read again and sent after
            return None

        def saved(queued: Sequence[OutboxMessage] | None) -> None:
            # Followed up from now on: the rows, in the same order, are deleted once all are
            # acknowledged (none after a failed save; the acknowledgements are still awaited).
            rows = [m for m in queued or () if m.channel == self.channel]
            self._sent.append(_Sent(rows, sent.acks))
            self._stirred.set()

        return saved

    def _older_first(self) -> bool:
        """Whether older messages are still to go out first: the outbox is being read, or
        another writer queued some (``wake``), or offered ones wait behind such a read."""
        return self._reading or bool(self._fresh) or self.wake.is_set()

    def _write(self, batch: list[OutboxMessage]) -> _Sent:
        """Hand the batch to paho (its thread writes it now); a future per PUBACK."""
        client, loop = self._paho, self._loop
        assert client is not None and loop is not None
        acks = []
        for m in batch:
            info = client.publish(m.topic, m.payload.encode(), qos=1, retain=m.retain)
            if info.rc != mqtt.MQTT_ERR_SUCCESS:
                raise LinkLost(mqtt.error_string(info.rc))
            ack = self._acks[info.mid] = loop.create_future()
            acks.append(ack)
        return _Sent(batch, acks)

    # ------------------------------------------------------------------ paho's thread

    # Each callback names its client: a late one after ``run`` ended must not count.

    def _on_connect(self, client: mqtt.Client, userdata: object, flags: object, rc: object, props: object) -> None:
        if getattr(rc, "is_failure", False):
            self._call(self._link_down, client, f"the broker refused the connection: {rc}")
        else:
            self._call(self._link_up, client)

    def _on_connect_fail(self, client: mqtt.Client, userdata: object) -> None:
        self._call(self._link_down, client, "cannot reach the broker")

    def _on_disconnect(self, client: mqtt.Client, userdata: object, flags: object, rc: object, props: object) -> None:
        self._call(self._link_down, client, f"disconnected: {rc}")

    def _on_publish(self, client: mqtt.Client, userdata: object, mid: int, rc: object, props: object) -> None:
        self._call(self._acked, client, mid)

    def _call(self, fn: Callable[..., None], *args: object) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(fn, *args)

    # ------------------------------------------------------------------ the loop

    def _link_up(self, client: mqtt.Client) -> None:
        if client is self._paho and self._lost is not None and not self._lost.done():
            self.connected = True
            self._stirred.set()

    def _link_down(self, client: mqtt.Client, why: str) -> None:
        if client is not self._paho:
            return
        self.connected = False
        if self._lost is not None and not self._lost.done():
            self._lost.set_exception(LinkLost(why))
        for ack in self._acks.values():
            if not ack.done():
                ack.set_exception(LinkLost(why))
        self._acks.clear()
        self._stirred.set()

    def _acked(self, client: mqtt.Client, mid: int) -> None:
        if client is not self._paho:
            return
        ack = self._acks.pop(mid, None)
        if ack is not None and not ack.done():
            ack.set_result(None)

    def _client(self) -> aiomqtt.Client:
        return self.client(f"{self.config.client_id}-pub")

    def client(self, identifier: str) -> aiomqtt.Client:
        """An aiomqtt client for the site's broker (TLS and login from config)."""
        m = self.config.mqtt
        tls = None
        if m.tls is not None:
            tls = aiomqtt.TLSParameters(
                ca_certs=str(m.tls.ca_file) if m.tls.ca_file else None,
                certfile=str(m.tls.cert_file) if m.tls.cert_file else None,
                keyfile=str(m.tls.key_file) if m.tls.key_file else None,
                cert_reqs=ssl.CERT_REQUIRED,
            )
        return aiomqtt.Client(
            m.host,
            m.port,
            identifier=identifier,
            username=m.username or None,
            password=m.password.get_secret_value() or None,
            tls_params=tls,
            tls_insecure=m.tls.insecure if m.tls else None,
            keepalive=m.keepalive,
            timeout=10,
        )

    async def run(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._thread = threading.get_ident()
        m = self.config.mqtt
        client = self._paho = paho_client(m, f"{self.config.client_id}-pub", clean_session=True)
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.reconnect_delay_set(1, 30)  # paho reconnects by itself, 1 s doubling to 30 s
        client.connect_async(m.host, m.port, keepalive=m.keepalive)
        client.loop_start()
        try:
            while True:
                lost = self._lost = self._loop.create_future()
                try:
                    await self._until_up(lost)
                    self._log_once.reset(("down",))
                    await self._drain_forever(lost)
                except LinkLost as exc:
                    self._log_once.warning(("down",), "cannot publish alerts to the broker (%s); retrying", exc)
                finally:
                    # Unacknowledged rows stay in the outbox; the next connection reads it first.
                    self._sent.clear()
                    self._fresh = []
                    if lost.done() and not lost.cancelled():
                        lost.exception()  # retrieved: not reported as "never retrieved"
        finally:
            self.connected = False
            self._paho = None  # its late callbacks are ignored from now on
            client.disconnect()
            await asyncio.to_thread(client.loop_stop)

    async def _until_up(self, lost: asyncio.Future[None]) -> None:
        """Until paho has (re)connected. A failed attempt is logged once; paho tries again."""
        while not self.connected:
            if lost.done():
                lost.result()  # raises LinkLost
            self._stirred.clear()
            await self._stirred_or_lost(lost, 5.0)

    async def _drain_forever(self, lost: asyncio.Future[None]) -> None:
        self.wake.set()  # (re)connected: whatever waits in the outbox goes first
        while True:
            if lost.done():
                lost.result()
            if self._sent:
                sent = self._sent.popleft()
                await asyncio.gather(*sent.acks)  # LinkLost: the rows stay, sent again later
                if sent.messages:  # none: sent early by a save that failed (``early``)
                    await asyncio.to_thread(self.store.outbox_done, [m.id for m in sent.messages])
                continue
            batch = await self._next_batch()
            if batch:
                self._sent.append(self._write(batch))
            else:
                # Woken by the alert path or another writer; after 5 s of quiet the outbox is
                # read anyway: a safety net for a row nobody announced.
                await self._stirred_or_lost(lost, 5.0)
                if not self._stirred.is_set():
                    self.wake.set()

    async def _next_batch(self, limit: int = 200) -> list[OutboxMessage]:
        """What to publish next, in id order: what was offered while the outbox was being read,
        or the outbox itself when another writer woke us (or offered rows wait behind it)."""
        self._stirred.clear()
        if self._fresh and not self.wake.is_set():
            batch, self._fresh = self._fresh, []
            return batch
        if not self.wake.is_set():
            return []
        self.wake.clear()  # before reading, so a wake-up during the read is not lost
        self._reading = True
        try:
            batch = await asyncio.to_thread(self.store.outbox_batch, self.channel, limit)
        finally:
            self._reading = False
        if len(batch) == limit:
            # Offered messages are in the outbox too, after these: the next read has them.
            self._fresh = []
            self.wake.set()
        else:
            # Offered messages committed after the read began are not in it, and come after it.
            seen = {m.id for m in batch}
            batch += sorted((m for m in self._fresh if m.id not in seen), key=lambda m: m.id)
            self._fresh = []
        return batch

    async def _stirred_or_lost(self, lost: asyncio.Future[None], within: float) -> None:
        """Wait for an offer, a wake-up, a PUBACK batch to follow up, or the connection's end."""
        if self._stirred.is_set() or self.wake.is_set() or lost.done():
            return
        waiting: set[asyncio.Future[Any]] = {
            asyncio.ensure_future(self._stirred.wait()),
            asyncio.ensure_future(self.wake.wait()),
        }
        try:
            await asyncio.wait({*waiting, lost}, timeout=within, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for fut in waiting:
                fut.cancel()
