"""The alarm lane (``[mqtt] alarm_lane``): the messages of the devices that raise alarms for
people — fall radars, smoke, gas and water detectors, SOS buttons — on an MQTT connection of
their own, so that the broker never queues them behind other devices' telemetry.

One connection delivers in order: at a busy moment (a block's devices reporting at once after an
outage, a chatty sensor), an alarm waits at the broker behind every message queued before it,
seconds at the gateway's ceiling. The lane's persistent session (``<client id>-alarms``)
subscribes to those devices' exact topics (zigbee2mqtt state and availability, native
topics); the ingest takes what it delivers before anything on the main connection.

The main connection keeps its wildcards (a device the site does not know is still seen and
counted), so it gets a copy of every lane message as well. It drops its copies — acknowledges
them unstored — only while it is sure the lane has them: from the moment it has committed, in
order, a *fence* for the lane's current *epoch*. An epoch begins when the lane's subscriptions
may have had a gap: its first session, a session the broker lost, a change of the lane's
devices, or a main session the broker lost (the lane's may be gone too). The lane then
subscribes, and once the broker has acknowledged every subscription and the main connection is
subscribed too, publishes the fence — a random nonce — on ``<prefix>/lane/fence``. The broker
queues it for the main connection behind every message it received before it (Mosquitto queues
a client's messages in the order it received them), so a message main stores before the fence
may be one the lane never got, and one after it is one the lane has. Until the fence is
committed, the lane holds what it receives (not handled, not acknowledged): a device's messages
are stored in the order they were sent, main's older copies first. The epoch and the last fence
committed are in the store, so a restart with both sessions kept goes on at once.

The lane logs in as the gateway's user, so a broker's ACL by user lets it read what main reads;
one by client id might not, and Mosquitto 2.0 grants a subscription its ACL denies and delivers
nothing (docs/configuration.md). ``sensegate status`` shows the part ``lane`` failing while the
broker refuses it or its link is down, until its fence is committed again.

A message of a lane device may be stored twice: one the broker received between the lane's
subscription and the fence, or one main received just before the broker lost its sessions.
Never none. docs/performance.md, "The alarm lane".
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt

from gateway.clock import Clock
from gateway.ingest.health import IngestHealth
from gateway.log import LogOnce
from gateway.mqtt_util import paho_client
from gateway.site.config import SiteConfig
from gateway.store import Store

log = logging.getLogger("sensegate.ingest")

EPOCH_KEY = "mqtt.lane_epoch"  # meta: the lane's current epoch
TOPICS_KEY = "mqtt.lane_topics"  # meta: a digest of the topics it was subscribed to in it
SUBSCRIBE_CHUNK = 500  # topics per SUBSCRIBE packet (a site has thousands)


class AlarmLane:
    """The lane's connection, its inbox and its epoch. paho's thread calls the ``_on_*``
    methods; the ingest's writer reads ``inbox`` and ``fenced`` and tells ``fence_committed``."""

    def __init__(
        self,
        config: SiteConfig,
        topics: frozenset[str],
        topics_digest: str,
        store: Store,
        clock: Clock,
        health: IngestHealth | None = None,
    ) -> None:
        self.config = config
        # ``sensegate status`` shows the part ``lane`` failing until the lane works: fenced.
        self.health = health
        self.topics = topics
        self.fence_topic = f"{config.topic_prefix}/lane/fence"
        self.store = store
        self._digest = topics_digest
        self._log_once = LogOnce(log, clock)
        self.inbox: deque[Any] = deque()  # _Message, appended by paho's thread
        self.connection = 0  # bumped on every connect of the lane (paho's thread)
        self.client: mqtt.Client | None = None
        self._lock = threading.Lock()
        self._up = False
        self._pending_subacks: set[int] = set()
        self._subscribed = False  # every SUBACK of this lane connection is in
        self._main_subscribed = False
        self._fence_sent: str | None = None
        # The epoch, and the fence of it main has committed: None until known.
        self.epoch: str | None = store.meta(EPOCH_KEY)
        if store.meta(TOPICS_KEY) != topics_digest:
            self.epoch = None  # devices joined the lane: their subscriptions begin now
        committed = store.last_payloads([self.fence_topic]).get(self.fence_topic)
        self._fenced: str | None = committed
        self._deliver: Callable[[mqtt.MQTTMessage, int], None] | None = None

    # ------------------------------------------------------------------ the writer's side

    @property
    def fenced(self) -> bool:
        """Whether main's copies of lane messages are the lane's to store (and the lane may go)."""
        epoch = self.epoch
        return epoch is not None and self._fenced == epoch

    def fence_committed(self, nonce: str) -> None:
        self._fenced = nonce
        self._works()

    def _works(self) -> None:
        if self.health is not None and self.fenced:
            self.health.ok("lane")

    def _failing(self, error: str) -> None:
        if self.health is not None:
            self.health.failing("lane", error)

    def is_current_fence(self, payload: bytes) -> bool:
        epoch = self.epoch
        return epoch is not None and payload.decode("ascii", errors="replace") == epoch

    # ------------------------------------------------------------------ running

    def start(self, deliver: Callable[[mqtt.MQTTMessage, int], None]) -> None:
        """Connect (paho's thread of the lane's own); ``deliver(msg, connection)`` on each message."""
        self._deliver = deliver
        m = self.config.mqtt
        client = self.client = paho_client(
            m, f"{self.config.client_id}-alarms", clean_session=not m.persistent_session, manual_ack=True
        )
        client.reconnect_delay_set(1, 30)
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        client.connect_async(m.host, m.port, keepalive=m.keepalive)
        client.loop_start()

    async def stop(self) -> None:
        client, self.client = self.client, None
        if client is not None:
            client.disconnect()
            await asyncio.to_thread(client.loop_stop)

    def ack(self, mid: int, qos: int) -> None:
        client = self.client
        if client is not None:
            client.ack(mid, qos)

    # ------------------------------------------------------------------ main's connection tells

    def main_connected(self, session_present: bool) -> None:
        """Main (re)connected (its paho thread, before any message of the new connection)."""
        with self._lock:
            self._main_subscribed = False
            if not session_present:
                # The broker may have lost the lane's session too: main keeps its copies until a
                # new epoch's fence, which the lane starts now if it is up (else when it connects).
                self.epoch = None
                if self._up:
                    self._begin_epoch()

    def main_subscribed(self) -> None:
        with self._lock:
            self._main_subscribed = True
            fence = self._fence_due()
        self._publish_fence(fence)

    # ------------------------------------------------------------------ paho's thread (the lane's)

    def _on_connect(
        self, client: mqtt.Client, userdata: object, flags: mqtt.ConnectFlags, rc: object, props: object
    ) -> None:
        if getattr(rc, "is_failure", False):
            self._log_once.warning(("lane-connect", str(rc)), "broker refused the alarm lane's connection: %s", rc)
            self._failing(f"the broker refused the alarm lane's connection: {rc}")
            return
        with self._lock:
            self._up = True
            self.connection += 1
            if not flags.session_present or self.epoch is None:
                self._begin_epoch()
            else:
                self._subscribe()  # the same topics again: a subscription of this connection to wait for
        self._log_once.reset(("lane-down",))

    def _begin_epoch(self) -> None:
        """A new epoch: recorded before subscribing, so a restart in between starts another (lock held)."""
        epoch = secrets.token_hex(16)
        self.store.set_meta(EPOCH_KEY, epoch)
        self.store.set_meta(TOPICS_KEY, self._digest)
        self.epoch = epoch
        self._subscribe()

    def _subscribe(self) -> None:
        client = self.client
        assert client is not None
        self._subscribed = False
        topics = sorted(self.topics)
        self._pending_subacks = set()
        for start in range(0, len(topics), SUBSCRIBE_CHUNK):
            rc, mid = client.subscribe([(t, 1) for t in topics[start : start + SUBSCRIBE_CHUNK]])
            if rc == mqtt.MQTT_ERR_SUCCESS and mid is not None:
                self._pending_subacks.add(mid)

    def _on_subscribe(
        self, client: mqtt.Client, userdata: object, mid: int, reason_codes: list[Any], props: object
    ) -> None:
        failed = [str(rc) for rc in reason_codes if getattr(rc, "is_failure", False)]
        with self._lock:
            if failed:
                # Main keeps storing those devices' messages: nothing is lost, only the lane is.
                self._log_once.warning(
                    ("lane-subscribe",), "broker refused %d alarm-lane subscriptions: %s", len(failed), failed[0]
                )
                self._failing(
                    f"the broker refused {len(failed)} alarm-lane subscriptions ({failed[0]}): alarm devices' "
                    "messages are stored from the main connection"
                )
                return
            self._pending_subacks.discard(mid)
            fence = None
            if not self._pending_subacks:
                self._subscribed = True
                fence = self._fence_due()
        self._publish_fence(fence)
        if fence is None and self._subscribed:
            self._works()  # fenced already: a restart with both sessions kept

    def _fence_due(self) -> str | None:
        """The epoch whose fence is to go out now: the lane and main are both subscribed, and it
        has not gone out yet (lock held)."""
        epoch = self.epoch
        if epoch is None or self._fence_sent == epoch or not (self._subscribed and self._main_subscribed):
            return None
        self._fence_sent = epoch
        return epoch

    def _publish_fence(self, epoch: str | None) -> None:
        client = self.client
        if epoch is None or client is None:
            return
        info = client.publish(self.fence_topic, epoch.encode(), qos=1)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            with self._lock:
                if self._fence_sent == epoch:
                    self._fence_sent = None  # sent again at the next subscription of either side

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        if self._deliver is not None:
            self._deliver(msg, self.connection)

    def _on_disconnect(self, client: mqtt.Client, userdata: object, flags: object, rc: object, props: object) -> None:
        with self._lock:
            was_up, self._up = self._up, False
            self._subscribed = False
        if was_up and self.client is not None:
            self._log_once.warning(("lane-down",), "alarm lane disconnected from the broker (%s); reconnecting", rc)
            self._failing(f"the alarm lane disconnected from the broker: {rc}")

    def _on_connect_fail(self, client: mqtt.Client, userdata: object) -> None:
        m = self.config.mqtt
        self._log_once.warning(("lane-down",), "alarm lane cannot reach the broker at %s:%d; retrying", m.host, m.port)
        self._failing(f"the alarm lane cannot reach the broker at {m.host}:{m.port}")
