"""Publishes the store's outbox (alert transitions, retained alert state) to the broker.

Uses aiomqtt: a QoS 1 publish returns once the broker sent PUBACK, and only then is the
outbox row deleted. If the broker is away the rows wait on disk; on reconnect they go out in
order. A message may be published twice if the gateway dies between PUBACK and the delete;
consumers deduplicate on the alert id and transition (documented in docs/interfaces.md).
"""

from __future__ import annotations

import asyncio
import logging
import ssl

import aiomqtt

from gateway.clock import Clock
from gateway.log import LogOnce
from gateway.mqtt_util import connection_lost, reason_lost
from gateway.site.config import SiteConfig
from gateway.store import Store

log = logging.getLogger("sensegate.publisher")


class OutboxPublisher:
    def __init__(self, config: SiteConfig, store: Store, clock: Clock, channel: str = "mqtt") -> None:
        self.config = config
        self.store = store
        self.clock = clock
        self.channel = channel
        self.wake = asyncio.Event()
        self.connected = False
        self._log_once = LogOnce(log, clock)

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
        backoff = 1.0
        while True:
            try:
                async with self._client() as client:
                    self._log_once.reset(("down",))
                    self.connected = True
                    backoff = 1.0
                    await self._drain_forever(client)
            except aiomqtt.MqttError as exc:
                self.connected = False
                self._log_once.warning(("down",), "cannot publish alerts to the broker (%s); retrying", exc)
                await self.clock.sleep(backoff)
                backoff = min(backoff * 2, 30.0)

    async def _drain_forever(self, client: aiomqtt.Client) -> None:
        lost = connection_lost(client)
        while True:
            self.wake.clear()  # before reading, so a wake-up during the read is not lost
            batch = await asyncio.to_thread(self.store.outbox_batch, self.channel, 200)
            if not batch:
                await self._idle(lost)
                continue
            for msg in batch:
                await client.publish(msg.topic, msg.payload.encode(), qos=1, retain=msg.retain)
            await asyncio.to_thread(self.store.outbox_done, [m.id for m in batch])

    async def _idle(self, lost: asyncio.Future[None] | None) -> None:
        """Wait to be woken by the alert path (5 s at most: a safety net, not the delivery
        path), or for the connection to drop, so a reconnect starts at once, not at the next
        alert."""
        waiting: set[asyncio.Future[object]] = {asyncio.ensure_future(self.wake.wait())}
        if lost is not None:
            waiting.add(lost)  # type: ignore[arg-type]
        try:
            await asyncio.wait(waiting, timeout=5.0, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for fut in waiting:
                if fut is not lost:
                    fut.cancel()
        if lost is not None and lost.done():
            raise aiomqtt.MqttError(f"connection to the broker lost ({reason_lost(lost)})")
