"""Notifications on the gateway's own broker: ``<prefix>/notifications/<channel id>``, QoS 1.

The message goes into the store's MQTT outbox (the alert publisher's queue), so "sent" here
means "on disk for the broker"; the publisher delivers it when the broker is reachable. Payload:
``Notification.to_dict()`` as JSON (docs/interfaces.md).
"""

from __future__ import annotations

import json
from collections.abc import Callable

from gateway.alerts.channels.base import Notification
from gateway.site.alerting import MqttChannelSettings
from gateway.store import Store


class MqttChannel:
    def __init__(
        self, settings: MqttChannelSettings, store: Store, topic_prefix: str, wake: Callable[[], None] | None = None
    ) -> None:
        self.name = settings.id
        self.topic = settings.topic or f"{topic_prefix}/notifications/{settings.id}"
        self.store = store
        self.wake = wake

    async def open(self) -> None:
        return None

    async def send(self, note: Notification) -> None:
        payload = json.dumps(note.to_dict(), ensure_ascii=False)
        self.store.save_notify(messages=[("mqtt", self.topic, payload, False)], now=note.created_at)
        if self.wake is not None:
            self.wake()

    async def close(self) -> None:
        return None
