"""MQTT ingest: subscribe with QoS 1 on a persistent session; PUBACK only after commit.

paho-mqtt 2.x is used directly (not through aiomqtt) because only paho exposes manual
acknowledgement (``manual_ack=True`` + ``client.ack(mid, qos)``) and the DUP flag, and the
gateway needs both: the broker must keep a message until it is on disk here, and a message
redelivered after a crash (PUBACK lost, row already committed) must not become a second event.

Flow: paho's network thread puts each message in an inbox and wakes the event loop once per
burst, not once per message; a writer task gathers up to ``commit_batch`` messages (or
``commit_interval_ms``), decodes them as they come, commits events, malformed-payload records
and counters in one transaction, then acknowledges every message of the batch (its PUBACKs in
one write) and hands the stored events on. The broker's in-flight window is the
back-pressure: it sends no more unacknowledged messages than it allows.

Alarms take the fast lane: a message that decodes to an alarm-lane event (smoke, SOS, a fall …)
closes its batch at once instead of waiting out the group-commit window, so it is committed
with only the messages that came before it and reaches the alert path in one commit.

While the store refuses telemetry (its disk is full: docs/store.md), a message whose events are
all telemetry is not acknowledged: the broker keeps it, and it is offered to the store again
once it takes telemetry. Alarms are committed and acknowledged as ever.

Retained messages (the broker's last message per topic, replayed on every subscribe) are
checked against the digest of the last message handled on their topic: a replay is skipped, a
retained message never seen gives its alarm states, marked retained (gateway/ingest/retained.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt

from gateway.alerts.commands import refusal, verify_command
from gateway.clock import Clock
from gateway.errors import PayloadError, StoreError, StoreFullError, UnauthenticatedError, UnknownDeviceError
from gateway.ingest.health import IngestHealth
from gateway.ingest.lane import AlarmLane
from gateway.ingest.retained import payload_digest, retained_events
from gateway.log import LogOnce
from gateway.models import Event, Lane
from gateway.mqtt_util import ack_all, paho_client
from gateway.site.config import SiteConfig
from gateway.site.registry import Registry
from gateway.store import Store

log = logging.getLogger("sensegate.ingest")

# Keys of accepted messages are kept this long to recognise a redelivery after a crash.
DEDUP_WINDOW = 3600.0
# Telemetry-only messages held unacknowledged while the store refuses telemetry: at most this
# many, so that the rest of the broker's in-flight window (Mosquitto's max_inflight_messages, 20
# by default) stays open for alarms. Beyond it the oldest held message is acknowledged without
# being stored, and counted (refused_dropped).
HOLD_MAX = 10
# Held messages are offered to the store again this often when nothing else arrives.
HOLD_RECHECK = 1.0


@dataclass(slots=True, eq=False)
class _Message:
    connection: int  # which connection delivered it: a packet id means nothing on another one
    mid: int
    qos: int
    dup: bool
    retain: bool
    topic: str
    payload: bytes
    # What it decoded to when the writer gathered it (events, or the error): the commit uses it
    # rather than decoding twice.
    decoded: list[Event] | PayloadError | None = None
    lane: bool = False  # delivered by the alarm lane's connection (gateway/ingest/lane.py)


def _received(msg: mqtt.MQTTMessage, connection: int, *, lane: bool) -> _Message:
    """paho's message as the writer takes it (on paho's thread: a topic that is not UTF-8 is
    kept with replacement characters, never raised)."""
    try:
        topic = msg.topic
    except UnicodeDecodeError:
        topic = msg._topic.decode("utf-8", errors="replace")
    return _Message(connection, msg.mid, msg.qos, bool(msg.dup), bool(msg.retain), topic, bytes(msg.payload), lane=lane)


class MqttIngest:
    def __init__(
        self,
        config: SiteConfig,
        registry: Registry,
        store: Store,
        clock: Clock,
        outputs: dict[str, frozenset[str] | None],
        on_stored: Callable[[list[Event]], Awaitable[None]],
        on_command: Callable[[], None] | None = None,
        health: IngestHealth | None = None,
        on_answer: Callable[[], None] | None = None,
        on_link: Callable[[bool], None] | None = None,
    ) -> None:
        self.config = config
        self.on_link = on_link  # subscribed (True) or disconnected (False), on the loop
        self.on_command = on_command
        self.on_answer = on_answer  # a refused command's answer is in the outbox: publish it
        self.health = health  # whether the link and the commits work, for `sensegate status`
        self.registry = registry
        self.store = store
        self.clock = clock
        self.outputs = outputs
        self.on_stored = on_stored
        self.status_topic = f"{config.topic_prefix}/status"
        self.connected = asyncio.Event()  # connected and subscribed
        # Acknowledge / resolve alerts over MQTT (gateway.alerts.commands).
        self.command_topic = f"{config.topic_prefix}/alerts/commands"
        self.connects = 0  # subscribed connections so far (a reconnect makes it 2, 3 …)
        self._log_once = LogOnce(log, clock)
        # paho's thread appends; the writer pops. One wake-up per burst (``_wake_pending``).
        self._inbox: deque[_Message] = deque()
        self._arrived = asyncio.Event()
        self._wake_pending = False
        self._connection = 0  # bumped on every connect, from paho's thread
        self._up = False  # connected (paho's thread)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: mqtt.Client | None = None
        self._stopping = False
        self._held: list[_Message] = []  # telemetry the store refused, not acknowledged
        self._carry: dict[str, int] = {}  # counts committed with the next batch
        # Alarm devices' messages on a connection of their own ([mqtt] alarm_lane).
        topics, digest = registry.lane_topics()
        self.lane = AlarmLane(config, topics, digest, store, clock, health) if topics else None

    # ------------------------------------------------------------------ paho side (its thread)

    def _make_client(self) -> mqtt.Client:
        m = self.config.mqtt
        client = paho_client(m, self.config.client_id, clean_session=not m.persistent_session, manual_ack=True)
        client.will_set(self.status_topic, "offline", qos=1, retain=True)
        client.reconnect_delay_set(1, 30)
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe
        return client

    def _on_connect(
        self, client: mqtt.Client, userdata: object, flags: mqtt.ConnectFlags, rc: object, props: object
    ) -> None:
        if getattr(rc, "is_failure", False):
            self._log_once.warning(("connect", str(rc)), "broker refused connection: %s", rc)
            self._failing(f"the broker refused the connection: {rc}")
            self._up = False
            return
        self._up = True
        self._connection += 1
        subs = [*self.registry.subscriptions(), self.command_topic]
        if self.lane is not None:
            self.lane.main_connected(flags.session_present)
            subs.append(self.lane.fence_topic)
        client.subscribe([(s, 1) for s in subs])
        client.publish(self.status_topic, "online", qos=1, retain=True)
        log.info(
            "connected to broker %s:%d session_present=%s subscriptions=%s",
            self.config.mqtt.host,
            self.config.mqtt.port,
            flags.session_present,
            ",".join(subs),
        )
        self._log_once.reset(("disconnect",))

    def _on_subscribe(
        self, client: mqtt.Client, userdata: object, mid: int, reason_codes: list[Any], props: object
    ) -> None:
        # Ready once the broker has the subscriptions (SUBACK), not merely the connection: a
        # message published in between would find no session to keep it on a first start.
        failed = [str(rc) for rc in reason_codes if getattr(rc, "is_failure", False)]
        if failed:
            self._log_once.warning(("subscribe",), "broker refused subscriptions: %s", ", ".join(failed))
            self._failing(f"the broker refused {len(failed)} of {len(reason_codes)} subscriptions: {failed[0]}")
        else:
            if self.health is not None:
                self.health.ok("mqtt")
            if self.lane is not None:
                self.lane.main_subscribed()
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._on_connected)

    def _on_connected(self) -> None:
        self.connects += 1
        self.connected.set()
        if self.on_link is not None:
            self.on_link(True)

    def _on_lost(self) -> None:
        self.connected.clear()
        if self.on_link is not None:
            self.on_link(False)

    def _on_disconnect(self, client: mqtt.Client, userdata: object, flags: object, rc: object, props: object) -> None:
        if self._stopping:
            return
        self._log_once.warning(("disconnect",), "disconnected from broker (%s); reconnecting", rc)
        if self._up:  # after a refused connect, the refusal says more than the disconnect after it
            self._failing(f"disconnected from the broker: {rc}")
        self._up = False
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._on_lost)

    def _on_connect_fail(self, client: mqtt.Client, userdata: object) -> None:
        m = self.config.mqtt
        self._log_once.warning(("disconnect",), "cannot reach the broker at %s:%d; retrying", m.host, m.port)
        self._failing(f"cannot reach the broker at {m.host}:{m.port}")

    def _failing(self, error: str) -> None:
        if self.health is not None:
            self.health.failing("mqtt", error)

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        # Runs on paho's thread: never raise (an exception here would stop the network loop).
        self._inbox.append(_received(msg, self._connection, lane=False))
        self._wake_soon()

    def _on_lane_message(self, msg: mqtt.MQTTMessage, connection: int) -> None:
        # The lane's paho thread: the same, into the lane's inbox.
        assert self.lane is not None
        self.lane.inbox.append(_received(msg, connection, lane=True))
        self._wake_soon()

    def _wake_soon(self) -> None:
        if self._loop is not None and not self._wake_pending:
            self._wake_pending = True
            self._loop.call_soon_threadsafe(self._wake)

    def _wake(self) -> None:
        self._wake_pending = False  # first: a message appended from now on wakes again
        self._arrived.set()

    # ------------------------------------------------------------------ asyncio side

    async def run(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._inbox = deque()  # after a restart, nothing from the old client is acknowledged
        self._arrived = asyncio.Event()
        self._wake_pending = False
        self._held = []
        client = self._client = self._make_client()
        m = self.config.mqtt
        client.connect_async(m.host, m.port, keepalive=m.keepalive)
        client.loop_start()
        if self.lane is not None:
            self.lane.inbox.clear()
            self.lane.start(self._on_lane_message)
        try:
            await self._write_loop(client)
        finally:
            self._stopping = True
            if self.lane is not None:
                await self.lane.stop()
            # Say "offline" ourselves on an orderly stop; the will covers a crash.
            with contextlib.suppress(Exception):
                sent = client.publish(self.status_topic, "offline", qos=1, retain=True)
                # Off the event loop: a broker on this loop (the demo's amqtt) must answer it.
                await asyncio.to_thread(sent.wait_for_publish, 2)
            client.disconnect()
            client.loop_stop()

    async def _write_loop(self, client: mqtt.Client) -> None:
        s = self.config.store
        while True:
            batch = await self._gather(s.commit_batch, s.commit_interval_ms / 1000)
            if not batch:
                if self._carry:  # refusals not counted yet: nothing else is coming to carry them
                    await self._commit([])
                continue
            try:
                try:
                    stored, held = await self._commit(batch)
                except StoreFullError:
                    # The store has made what room it could (its reserve, eviction): once more. With
                    # no room left for telemetry, telemetry-only messages are held back this time.
                    stored, held = await self._commit(batch)
            except StoreError as exc:
                # Nothing of the batch is acknowledged: the broker keeps it. Supervised: restarted.
                if self.health is not None:
                    await asyncio.to_thread(self.health.failing, "store", f"cannot commit messages: {exc}")
                raise
            if self.health is not None:
                self.health.ok("store")
            kept = {id(m) for m in held}
            self._ack_all(client, [msg for msg in batch if id(msg) not in kept])
            self._hold(client, held)
            if stored:
                await self.on_stored(stored)

    async def _gather(self, limit: int, window: float) -> list[_Message]:
        """The next batch: held messages again once the store takes telemetry, then whatever
        arrives within the group-commit window, ended at once by an alarm. Empty when held
        messages are still refused."""
        # Held messages from an earlier connection are the broker's again: it redelivers them.
        self._held = [m for m in self._held if self._current(m)]
        batch: list[_Message] = []
        if self._held and not self.store.refusing_telemetry:
            batch, self._held = self._held, []
        elif self._held:
            if not await self._next_arrival(HOLD_RECHECK):
                return []
        else:
            await self._next_arrival(None)
        deadline = self.clock.monotonic() + window
        inbox = self._inbox
        lane = self.lane
        while len(batch) < limit:
            # The alarm lane first, once main's copies of its devices' messages are behind it.
            source = lane.inbox if lane is not None and lane.inbox and lane.fenced else inbox
            if source:
                msg = source.popleft()
                batch.append(msg)
                if lane is not None and not msg.lane and msg.topic in lane.topics and lane.fenced:
                    continue  # main's copy of a lane message: dropped at the commit, not decoded
                if self._alarm(msg):
                    break  # the fast lane: commit now, with what came before it
                continue
            remaining = deadline - self.clock.monotonic()
            # The group-commit window is a real-time latency budget, not a rule timer.
            if remaining <= 0 or not await self._next_arrival(remaining):
                break
        return batch

    def _waiting(self) -> bool:
        """Whether a message is there to gather: main's, or the lane's once it may go."""
        lane = self.lane
        return bool(self._inbox) or (lane is not None and bool(lane.inbox) and lane.fenced)

    async def _next_arrival(self, within: float | None) -> bool:
        """Wait until the inbox has a message (``within`` seconds at most); whether it has."""
        while not self._waiting():
            self._arrived.clear()
            if self._waiting():
                break
            if within is None:
                await self._arrived.wait()
                continue
            try:
                await asyncio.wait_for(self._arrived.wait(), within)
            except TimeoutError:
                return self._waiting()
        return True

    def _alarm(self, msg: _Message) -> bool:
        """Decode the message now (kept for the commit); whether it carries an alarm-lane event."""
        if msg.topic == self.command_topic or msg.dup:
            return False  # a command is no alarm; a redelivery may be a duplicate, decided at commit
        now = self.clock.now()
        try:
            decoded: list[Event] | PayloadError = self.registry.decode(msg.topic, msg.payload, now)
        except PayloadError as exc:  # UnknownDeviceError is one too
            decoded = exc
        msg.decoded = decoded
        return not isinstance(decoded, PayloadError) and any(e.lane is Lane.ALARM for e in decoded)

    def _current(self, msg: _Message) -> bool:
        """Whether the message came on its connection's present session."""
        if msg.lane:
            return self.lane is not None and msg.connection == self.lane.connection
        return msg.connection == self._connection

    def _ack(self, client: mqtt.Client, msg: _Message) -> None:
        # A message from an earlier connection is not acknowledged: its packet id may name
        # another message now. The broker redelivers it (DUP) on a persistent session, and that
        # copy is recognised as already stored and acknowledged.
        if msg.qos > 0 and self._current(msg):
            if msg.lane:
                assert self.lane is not None
                self.lane.ack(msg.mid, msg.qos)
            else:
                client.ack(msg.mid, msg.qos)

    def _ack_all(self, client: mqtt.Client, batch: list[_Message]) -> None:
        """``_ack`` for each, in order; main's QoS 1 PUBACKs written together (``ack_all``)."""
        mids = []
        for msg in batch:
            if msg.qos == 1 and not msg.lane and self._current(msg):
                mids.append(msg.mid)
            else:
                self._ack(client, msg)
        ack_all(client, mids)

    def _hold(self, client: mqtt.Client, held: list[_Message]) -> None:
        """Keep refused telemetry unacknowledged (the broker keeps it too), at most ``HOLD_MAX``."""
        if held:
            self._carry["refused"] = self._carry.get("refused", 0) + len(held)
            self._log_once.warning(
                ("refused",), "store refuses telemetry (disk full): telemetry messages are not acknowledged"
            )
        elif not self._held:
            self._log_once.reset(("refused",))
        self._held.extend(held)
        while len(self._held) > HOLD_MAX:
            msg = self._held.pop(0)
            self._ack(client, msg)
            self._carry["refused_dropped"] = self._carry.get("refused_dropped", 0) + 1

    async def _commit(self, batch: list[_Message]) -> tuple[list[Event], list[_Message]]:
        """Decode and commit a batch; the stored events, and the messages held back (telemetry
        only, while the store refuses telemetry: not stored, not to be acknowledged)."""
        now = self.clock.now()
        refusing = self.store.refusing_telemetry
        events: list[Event] = []
        held: list[_Message] = []
        keys: list[tuple[str, float]] = []
        counts: dict[str, int] = dict(self._carry)
        rejected: list[tuple[str, str, str, bytes]] = []
        commands: list[dict[str, Any]] = []
        nonces: list[tuple[str, str, float]] = []  # of the signed commands queued
        answers: list[tuple[str, str, str, bool]] = []  # results of commands refused here
        # Topic -> digest of the last message handled on it (the store's, then this batch's), to
        # tell a retained replay from a retained message never seen (gateway/ingest/retained.py).
        replays = {m.topic for m in batch if m.retain and self._keeps_state(m.topic)}
        handled = await asyncio.to_thread(self.store.last_payloads, replays) if replays else {}
        payloads: dict[str, str] = {}
        lane = self.lane
        fenced = lane is not None and lane.fenced  # as of this point in the order of arrival
        fence: str | None = None
        for msg in batch:
            if lane is not None:
                if msg.lane and msg.topic not in lane.topics:
                    counts["lane_stale"] = counts.get("lane_stale", 0) + 1  # a device that left the lane
                    continue
                if not msg.lane and msg.topic == lane.fence_topic:
                    if lane.is_current_fence(msg.payload):
                        fence = payloads[msg.topic] = msg.payload.decode("ascii")
                        fenced = True
                    continue
                if fenced and not msg.lane and msg.topic in lane.topics and msg.connection == self._connection:
                    counts["lane_copies"] = counts.get("lane_copies", 0) + 1  # the lane has stored it
                    continue
            key = hashlib.blake2b(
                b"%s%d\0%s\0%s" % (b"lane\0" if msg.lane else b"", msg.mid, msg.topic.encode(), msg.payload),
                digest_size=12,
            ).hexdigest()
            if msg.dup and await asyncio.to_thread(self.store.seen_recently, key):
                counts["duplicates"] = counts.get("duplicates", 0) + 1
                continue
            if msg.topic == self.command_topic:
                if msg.retain:  # an order, not a state: replayed on every subscribe it would act again
                    counts["retained_skipped"] = counts.get("retained_skipped", 0) + 1
                    continue
                try:
                    command, nonce = await asyncio.to_thread(self._verify, msg.payload, now, nonces)
                except PayloadError as exc:
                    self._refuse(msg, exc, counts, rejected, answers)
                    continue
                commands.append(command)
                nonces.append(nonce)
                keys.append((key, now))
                continue
            # Availability is current by design and taken as it comes, retained or not.
            state = self._keeps_state(msg.topic)
            digest = payload_digest(msg.payload) if state else ""
            replay = msg.retain and state
            if replay and handled.get(msg.topic) == digest:
                counts["retained_skipped"] = counts.get("retained_skipped", 0) + 1
                continue
            try:
                decoded = self._decoded(msg, now)
            except UnknownDeviceError as exc:
                if replay:
                    # Not ours (say, a zigbee2mqtt device left out of the site): its live messages
                    # are counted as unknown; its retained state on every subscribe would be noise.
                    counts["retained_skipped"] = counts.get("retained_skipped", 0) + 1
                else:
                    self._reject(msg, exc, counts, rejected)
                continue
            except PayloadError as exc:
                self._reject(msg, exc, counts, rejected)
                if state:  # so its retained copy is not rejected again on every subscribe
                    handled[msg.topic] = payloads[msg.topic] = digest
                continue
            if refusing and decoded and all(e.lane is Lane.TELEMETRY for e in decoded):
                held.append(msg)
                continue
            if state:
                handled[msg.topic] = payloads[msg.topic] = digest
            if replay:
                counts["retained_new"] = counts.get("retained_new", 0) + 1
                decoded = retained_events(decoded)
            # A device time more than MAX_CLOCK_SKEW from ours is not used to date the event
            # (registry.py keeps it aside in values["device_time"]): counted, so it is seen.
            untrusted = sum(1 for e in decoded if "device_time" in e.values)
            if untrusted:
                counts["device_time_untrusted"] = counts.get("device_time_untrusted", 0) + untrusted
            events.extend(decoded)
            keys.append((key, now))
        stored = await asyncio.to_thread(
            self.store.append,
            events,
            self.outputs,
            keys,
            counts,
            rejected,
            now,
            commands,
            payloads.items(),
            answers,
            nonces,
        )
        self._carry = {}
        if fence is not None and lane is not None:
            lane.fence_committed(fence)
        if commands and self.on_command is not None:
            self.on_command()
        if answers and self.on_answer is not None:
            self.on_answer()
        return stored, held

    def _decoded(self, msg: _Message, now: float) -> list[Event]:
        """The message's events: as decoded when it was gathered, or decoded now."""
        found = msg.decoded
        if found is None:
            return self.registry.decode(msg.topic, msg.payload, now)
        if isinstance(found, PayloadError):
            raise found
        return found

    def _verify(
        self, payload: bytes, now: float, batch: list[tuple[str, str, float]]
    ) -> tuple[dict[str, Any], tuple[str, str, float]]:
        """A signed command proved (gateway.alerts.commands); its nonce must be new to the store
        and to this batch. In a worker thread: it reads the store."""
        in_batch = {(name, nonce) for name, nonce, _ in batch}
        return verify_command(
            payload,
            now,
            self.store.mqtt_key,
            lambda name, nonce: (name, nonce) in in_batch or self.store.nonce_used(name, nonce),
        )

    def _refuse(
        self,
        msg: _Message,
        exc: PayloadError,
        counts: dict[str, int],
        rejected: list[tuple[str, str, str, bytes]],
        answers: list[tuple[str, str, str, bool]],
    ) -> None:
        """A command not queued: counted and kept like bad input, and answered on …/result."""
        if isinstance(exc, UnauthenticatedError):
            counts["commands.unauthenticated"] = counts.get("commands.unauthenticated", 0) + 1
            self._log_once.warning(
                ("unauthenticated", exc.why),
                "refused a command on %s: %s (counted as commands.unauthenticated)",
                msg.topic,
                exc,
            )
            rejected.append((msg.topic, exc.reason, str(exc), msg.payload))
        else:
            self._reject(msg, exc, counts, rejected)
        result = refusal(msg.payload, exc)
        if result is not None:
            answers.append(("mqtt", f"{self.command_topic}/result", json.dumps(result, ensure_ascii=False), False))

    def _keeps_state(self, topic: str) -> bool:
        """Whether the topic carries a state whose retained copy is checked against the last one
        handled: every topic but the alert commands and availability."""
        return topic != self.command_topic and not topic.endswith("/availability")

    def _reject(
        self, msg: _Message, exc: PayloadError, counts: dict[str, int], rejected: list[tuple[str, str, str, bytes]]
    ) -> None:
        counts[f"malformed.{exc.reason}"] = counts.get(f"malformed.{exc.reason}", 0) + 1
        self._log_once.warning(
            (exc.reason, msg.topic),
            "skipped payload: reason=%s topic=%s bytes=%d: %s",
            exc.reason,
            msg.topic,
            len(msg.payload),
            exc,
        )
        rejected.append((msg.topic, exc.reason, str(exc), msg.payload))
