"""The gateway's runtime: wires store, registry, ingest, alert path, forwarders and the
outbox publisher together from a validated config, and supervises them.

Each long-running part runs in one ``asyncio.TaskGroup`` under ``supervise``: an unexpected
failure is logged and the part restarts with capped back-off; the others keep running.
Shutdown is orderly: stop accepting, give outputs a few seconds to flush, then close.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, TextIO

import aiomqtt

from drivers.modbus_bus import ClientFactory, pymodbus_client
from drivers.serial_link import Opener, open_serial
from gateway.alerts.channels.base import Channel
from gateway.alerts.channels.dingtalk import DingTalkChannel
from gateway.alerts.channels.mqtt import MqttChannel
from gateway.alerts.channels.sms import SmsChannel
from gateway.alerts.channels.webhook import WebhookChannel
from gateway.alerts.channels.wecom import WeComChannel
from gateway.alerts.commands import apply_command
from gateway.alerts.notify import Notifier
from gateway.alerts.path import TOKEN_ACTOR, AlertPath, Transition, console_line
from gateway.alerts.publisher import OutboxPublisher
from gateway.alerts.replies import SmsReplies
from gateway.alerts.system import DISK_META, disk_decision
from gateway.care.visits import VisitTracker
from gateway.clock import Clock, SystemClock, sleep_or_wake
from gateway.errors import SenseGateError, StoreError
from gateway.ingest.health import IngestHealth
from gateway.ingest.mqtt import DEDUP_WINDOW, MqttIngest
from gateway.ingest.process import (
    ANSWER,
    COMMAND,
    DISK,
    DOWN,
    STOP_GRACE,
    STORED,
    UP,
    GatewayLink,
    IngestProcess,
    disk_state,
)
from gateway.ingest.serial import SerialIngest
from gateway.log import LogOnce, summarise_all
from gateway.models import Alert, Event
from gateway.outputs.forwarder import Forwarder
from gateway.outputs.home_assistant import HaBridge
from gateway.outputs.sinks import Sink
from gateway.outputs.sinks.influx_v1 import InfluxV1Sink
from gateway.outputs.sinks.influx_v2 import InfluxV2Sink
from gateway.site.alerting import (
    ChannelSettings,
    DingTalkChannelSettings,
    MqttChannelSettings,
    SmsSettings,
    WebhookChannelSettings,
    WeComChannelSettings,
)
from gateway.site.config import InfluxV1Output, InfluxV2Output, SiteConfig, output_families, site_rules
from gateway.site.registry import Registry
from gateway.store import Store
from gateway.store.commands import COMMANDS_KEEP
from gateway.store.disk import DiskState
from gateway.store.events import RECENT_KEEP
from gateway.store.lock import StoreLock
from gateway.systemd import SystemdNotify
from gateway.testmode.service import ACTIONS as TESTMODE_ACTIONS
from gateway.testmode.service import TestModes
from gateway.web.changes import Changes

if TYPE_CHECKING:
    from gateway.web.console import Console
    from gateway.web.server import ConsoleServer

log = logging.getLogger("sensegate.runtime")

HOUSEKEEPING_INTERVAL = 10.0
# The rules' state written behind the alerts (``AlertPath.checkpoint_behind``). Its one
# transaction rewrites most of the table's pages and holds the writers' lock 65-80 ms, about
# the same for ten seconds of changes as for a minute's; a restart feeds the events since
# again (a minute at 1k msg/s: ~2 s). Every 10 s, an alarm waited behind one in most 90 s runs.
RULES_CHECKPOINT_INTERVAL = 60.0
STATS_INTERVAL = 60.0
# A full collection of the frozen heap too (``sweep_frozen``): ~0.25 s at 5,000 households.
FROZEN_SWEEP_INTERVAL = 6 * 3600.0
# A full collection of what is not frozen (``Collections``), instead of CPython's own.
OLD_COLLECTION_INTERVAL = 600.0
# CPython's threshold for a full collection after ``freeze_heap``, counted in collections of
# the middle generation (35 in 90 s at 1,000 msg/s): never, in practice.
_NO_AUTOMATIC_FULL = 2**30
SHUTDOWN_FLUSH = 5.0
# How often the gateway looks for what the CLI queued in the store (acknowledgements,
# check-ins): the time a person waits for "done".
COMMAND_POLL = 1.0
# The clock this far behind the newest stored event at start is taken as unsynchronised.
CLOCK_BEHIND = 300.0
# Events read from the store at a time, with the ingest in a process of its own: a batch is
# this big only when the rules are behind, and the fewer batches, the fewer saves (compare.py at
# 6k msg/s: 500 left the outputs at 72–78 % and alerts 12–20 s late; 2,000 with 4 × RECENT_KEEP
# events kept in memory: 100 % and 3.8 s).
READ_BATCH = 2000
# How often an ingest process looks whether the last one has ended.
TURN_POLL = 0.05
# How often the disk watch looks at the store's filesystem when nothing is written (has the room
# come back?); the store itself looks before every write.
DISK_CHECK = 5.0


def open_store(config: SiteConfig) -> Store:
    """The site's store, with its configured bound, reserve and durability."""
    reserve = config.store.reserve_bytes
    return Store(
        config.store_path,
        int(config.store.max_bytes),
        config.store.synchronous,
        reserve_bytes=None if reserve is None else int(reserve),
    )


def build_channel(settings: ChannelSettings, config: SiteConfig, store: Store, clock: Clock) -> Channel:
    """The channel for one ``[[channels]]`` entry (gateway/channels)."""
    if isinstance(settings, MqttChannelSettings):
        return MqttChannel(settings, store, config.topic_prefix)
    if isinstance(settings, WebhookChannelSettings):
        return WebhookChannel(settings, clock)
    if isinstance(settings, WeComChannelSettings):
        return WeComChannel(settings, clock)
    if isinstance(settings, DingTalkChannelSettings):
        return DingTalkChannel(settings, clock)
    if isinstance(settings, SmsSettings):
        return SmsChannel(settings.id, settings, clock)
    raise AssertionError(f"no channel for {settings!r}")  # the config union admits no other type


def build_sink(output: InfluxV1Output | InfluxV2Output, config: SiteConfig) -> Sink:
    if isinstance(output, InfluxV1Output):
        return InfluxV1Sink(
            name=output.name,
            url=output.url,
            database=output.database,
            retention_policy=output.retention_policy,
            username=output.username,
            password=output.password.get_secret_value(),
            timeout=output.timeout,
            gzip=output.gzip,
            create_database=output.create_database,
            gateway_id=config.gateway.id,
            site=config.gateway.site,
        )
    return InfluxV2Sink(
        name=output.name,
        url=output.url,
        org=output.org,
        bucket=output.bucket,
        token=output.token.get_secret_value(),
        timeout=output.timeout,
        gzip=output.gzip,
        gateway_id=config.gateway.id,
        site=config.gateway.site,
    )


async def supervise(name: str, part: Callable[[], Awaitable[None]], clock: Clock, max_backoff: float = 30.0) -> None:
    """Run ``part`` until cancelled; restart it with capped back-off if it fails."""
    backoff = 1.0
    while True:
        started = clock.monotonic()
        try:
            await part()
            return
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("%s failed; restarting in %.0f s", name, backoff)
        if clock.monotonic() - started > 60:
            backoff = 1.0  # it ran fine for a while: this is a new failure, not a crash loop
        await clock.sleep(backoff)
        backoff = min(backoff * 2, max_backoff)


def freeze_heap() -> None:
    """Keep what start-up built (the site's config, registry and rule context: millions of
    objects at 20,000 devices, alive as long as the process) out of the garbage collector's
    sight: a full collection walks only what came after, and no longer stalls the loop for a
    good part of a second. For the process that runs one gateway (``sensegate run``).

    From then on CPython runs no full collection of its own; the housekeeping runs one every
    ``OLD_COLLECTION_INTERVAL`` (``Collections``). CPython's own came every ~15 s at 1,000
    msg/s and walked every object promoted since (44-69 ms, every thread stopped): most of
    them the events the forwarders read back from memory, alive at that moment, then dead.
    Young collections go on as ever and free the cycles that die young, which is nearly all the
    cyclic garbage the gateway makes (none found among its older objects at 1,000 msg/s).
    What survives a full collection is frozen: what the gateway builds as devices are first
    seen lives as long as start-up's. Should a frozen cycle die, ``sweep_frozen`` finds it."""
    gc.collect()
    gc.freeze()
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, _NO_AUTOMATIC_FULL)
    if _freeze_survivors not in gc.callbacks:
        gc.callbacks.append(_freeze_survivors)


def _freeze_survivors(phase: str, info: dict[str, int]) -> None:
    if phase == "stop" and info["generation"] == 2:
        gc.freeze()


def sweep_frozen() -> int:
    """A full collection of everything, the frozen objects too (``freeze_heap``), which are then
    frozen again; the objects found unreachable (0 where ``freeze_heap`` was not called)."""
    if _freeze_survivors not in gc.callbacks:
        return 0
    gc.unfreeze()
    try:
        return gc.collect()
    finally:
        gc.freeze()


class Collections:
    """The full collections a process that called ``freeze_heap`` runs itself, from its
    housekeeping: of what is not frozen every ``OLD_COLLECTION_INTERVAL``, of everything every
    ``FROZEN_SWEEP_INTERVAL``. None where ``freeze_heap`` was not called: CPython runs them."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self._old = self._swept = clock.monotonic()

    def step(self) -> int:
        """The collection due, if one is; the unreachable objects it found."""
        now = self.clock.monotonic()
        if now - self._swept >= FROZEN_SWEEP_INTERVAL:
            self._swept = self._old = now
            found = sweep_frozen()
            if found:
                log.info("garbage collector: %d unreachable objects among the frozen ones freed", found)
            return found
        if now - self._old >= OLD_COLLECTION_INTERVAL and _freeze_survivors in gc.callbacks:
            self._old = now
            return gc.collect()
        return 0


class Gateway:
    def __init__(
        self,
        config: SiteConfig,
        *,
        clock: Clock | None = None,
        sinks: Mapping[str, Sink] | None = None,
        console: TextIO | None = None,
        serial_opener: Opener | None = None,
        modbus_client_factory: ClientFactory | None = None,
        channels: Mapping[str, Channel] | None = None,
        systemd: SystemdNotify | None = None,
        registry: Registry | None = None,
        ingest_process: IngestProcess | None = None,
    ) -> None:
        self.config = config
        # MQTT ingest in a process of its own (gateway/ingest/process.py), forked by `sensegate
        # run` before this; None: in this process.
        self.ingest_process = ingest_process
        # Under systemd (Type=notify, WatchdogSec=): READY=1, watchdog pings, STOPPING=1.
        self.systemd = systemd if systemd is not None else SystemdNotify.from_environment()
        self.clock = clock or SystemClock()
        self.console = console if console is not None else (sys.stdout if config.alerts.console else None)
        self.store = open_store(config)
        if ingest_process is not None:
            self.store.coordinate_writers()  # two processes commit all the time
        self.registry = registry if registry is not None else Registry(config)
        self.outputs = output_families(config)
        built = dict(sinks) if sinks is not None else {o.name: build_sink(o, config) for o in config.outputs}
        self.forwarders = [
            Forwarder(
                o.name,
                built[o.name],
                self.store,
                self.clock,
                batch_size=o.batch_size,
                flush_interval=o.flush_interval,
                backoff_initial=o.backoff_initial,
                backoff_max=o.backoff_max,
            )
            for o in config.outputs
        ]
        self.publisher = OutboxPublisher(config, self.store, self.clock)
        rules = site_rules(config)
        self.alerts = AlertPath(
            self.registry,
            self.store,
            self.clock,
            config.topic_prefix,
            rules,
            config.alerts.repeat_window,
            notify=self._on_transition,
            flap_threshold=config.alerts.flap_threshold,
            flap_window=config.alerts.flap_window,
            on_outbox=self.publisher.offer,
            send_early=self.publisher.early,
        )
        self.visits = VisitTracker(config, self.store, self.clock, self.alerts, rules)
        # Test mode and walk tests (docs/installer.md): commands from the CLI, the expiry supervisor.
        self.testmodes = TestModes(
            config,
            self.registry,
            self.store,
            self.clock,
            self.alerts,
            timezone=rules.settings.timezone,
            on_change=self._changed,
        )
        built_channels = (
            dict(channels)
            if channels is not None
            else {c.id: build_channel(c, config, self.store, self.clock) for c in config.channels}
        )
        for channel in built_channels.values():
            if isinstance(channel, MqttChannel):
                channel.wake = self.publisher.wake.set
        self.changes = Changes()  # the console's live board listens to it
        self.notifier = Notifier(
            config,
            self.store,
            self.clock,
            self.alerts,
            built_channels,
            timezone=rules.settings.timezone,
            on_page=self._print if self.console is not None else None,
            on_change=self._changed,
        )
        # Replies texted to an SMS channel's modem ("1 7K3Q") acknowledge, with no network but GSM.
        self.replies = [
            SmsReplies(
                c.id,
                sms.modem,
                config,
                self.store,
                self.clock,
                self.alerts,
                interval=c.reply_poll,
                timezone=rules.settings.timezone,
                wake=self.notifier.wake.get(c.id),
            )
            for c in config.channels
            if isinstance(c, SmsSettings) and c.replies and isinstance(sms := built_channels.get(c.id), SmsChannel)
        ]
        self._rules_wake = asyncio.Event()
        self._rules_due: float | None = None  # when the rule timer wakes next by itself
        self._commands_wake = asyncio.Event()
        self.health = IngestHealth(self.store, self.clock)  # `sensegate status` shows what fails
        self._disk_wake = asyncio.Event()
        self._disk_states: asyncio.Queue[DiskState] = asyncio.Queue()  # from the ingest process
        self._stored_elsewhere = asyncio.Event()  # the ingest process committed events
        self._ingest_up = asyncio.Event()  # the ingest process is subscribed
        self.ingest = MqttIngest(
            config,
            self.registry,
            self.store,
            self.clock,
            self.outputs,
            self._on_stored,
            self._commands_wake.set,
            self.health,
            self.publisher.wake.set,
        )
        self.serial = SerialIngest(
            config,
            self.registry,
            self.store,
            self.clock,
            self.outputs,
            self._on_stored if ingest_process is None else self._wired_stored,
            serial_opener or open_serial,
            modbus_client_factory or pymodbus_client,
        )
        self.ready = asyncio.Event()  # set once connected to the broker
        # The duty desk (值班台) and its web server, with [console] enabled.
        self.desk: Console | None = None
        self.console_server: ConsoleServer | None = None
        if config.console.enabled:
            # Starlette, uvicorn, jinja2 and argon2 (about 5 MiB) only for a gateway that serves it.
            from gateway.web.console import Console
            from gateway.web.server import ConsoleServer

            self.desk = Console(
                config,
                self.store,
                self.clock,
                self.alerts,
                self.notifier,
                self.changes,
                timezone=rules.settings.timezone,
            )
            self.console_server = ConsoleServer(self.desk.asgi, config.console, self.desk.close, self.clock.now)
        self._loop: asyncio.AbstractEventLoop | None = None
        ha = config.home_assistant
        self.ha = HaBridge(config, self._ha_publish, ha) if ha.enabled else None
        self._ha_client: aiomqtt.Client | None = None
        self._ha_log = LogOnce(logging.getLogger("sensegate.home_assistant"), self.clock)

    def _on_transition(self, t: Transition) -> None:
        log.info(
            "alert %s id=%s rule=%s severity=%d device=%s count=%d",
            t.kind,
            t.alert.id,
            t.alert.rule,
            t.alert.severity,
            t.alert.device_id,
            t.alert.count,
        )
        # A repeat folded into an open alert is news for MQTT subscribers, not for a person
        # watching the terminal: that is what dedup is for.
        if t.kind not in ("updated", "notified"):
            self._print(console_line(t))
        self._changed()
        if self.ha is not None:
            self.ha.note_alert(t.alert)
        # Planning pages writes to the store: let the transition reach MQTT first. Deferred in
        # order; if the gateway dies in between, the notifier's reconcile at start catches up.
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self.notifier.on_transition, t)
        else:
            self.notifier.on_transition(t)

    def _changed(self) -> None:
        """The board may show something new (a transition, a page): wake the console's streams,
        on the loop (the alert path also runs in a worker thread while catching up at start)."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self.changes.bump)

    def _print(self, line: str) -> None:
        if self.console is not None:
            print(line, file=self.console, flush=True)

    async def _on_stored(self, events: list[Event]) -> None:
        if self.ha is not None:
            self.ha.update(events)
        self.alerts.process(events)
        self.visits.process(events)  # visits recorded from these events (and check-ins from the CLI)
        # Wake the timer only for a deadline earlier than the one it sleeps to: waking it for
        # every batch cost two reads of the test modes from the store, on the loop.
        due = [d for d in (self.alerts.next_deadline(), self.visits.next_deadline()) if d is not None]
        if due and (self._rules_due is None or min(due) < self._rules_due):
            self._rules_wake.set()

    async def _wired_stored(self, events: list[Event]) -> None:
        # With the ingest in a process of its own, events reach the alert path in seq order
        # from the store: the wired ones too.
        self._stored_elsewhere.set()

    async def _read_stored(self) -> None:
        """With the ingest process: hand what it (or the serial writer) committed to the alert
        path, read from the store after the alert path's cursor, and tell the ingest process
        how far the rules have seen (it evicts nothing after that)."""
        while True:
            self._stored_elsewhere.clear()
            await self._hand_over_stored()
            await self._stored_elsewhere.wait()

    async def _hand_over_stored(self) -> None:
        assert self.ingest_process is not None
        while events := self.store.events_after(self.alerts.cursor, READ_BATCH):
            self.store.remember(events)  # the forwarders read them from memory
            await self._on_stored(events)
            self.ingest_process.publish_cursor(self.alerts.replay_from)
            if len(events) < READ_BATCH:
                return
            await self.clock.sleep(0)  # behind: let the outputs and the console have the loop too

    def _from_ingest(self, record: bytes) -> None:
        """A record from the ingest process (gateway/ingest/process.py)."""
        kind = record[:1]
        if kind == STORED:
            self._stored_elsewhere.set()
        elif kind == COMMAND:
            self._commands_wake.set()
        elif kind == ANSWER:
            self.publisher.wake.set()
        elif kind == UP:
            self._ingest_up.set()
        elif kind == DOWN:
            self._ingest_up.clear()
        elif kind == DISK:
            state = disk_state(record)
            # The ingest process keeps the disk: wired telemetry is refused when it refuses MQTT's.
            self.store.refusing_telemetry = state.refusing
            self._disk_states.put_nowait(state)

    async def _rule_timer(self) -> None:
        """Fire rule deadlines (no activity, held open, no recovery …) and visit plans
        (逾期未探访) as they come due."""
        while True:
            self._rules_wake.clear()
            self.alerts.tick()
            self.visits.tick()
            self.testmodes.tick()
            due = (self.alerts.next_deadline(), self.visits.next_deadline(), self.testmodes.next_deadline())
            deadlines = [d for d in due if d is not None]
            deadline = min(deadlines, default=None)
            # Without a deadline, look again now and then: nothing is lost by waking early.
            delay = 3600.0 if deadline is None else max(0.0, deadline - self.clock.now())
            self._rules_due = self.clock.now() + delay
            await sleep_or_wake(self.clock, delay, self._rules_wake)

    async def _commands(self) -> None:
        """Apply what people queued (ack / resolve from the CLI and MQTT), and pick up events
        the CLI stored itself (visit check-ins) without waiting for the next batch."""
        while True:
            for command in await asyncio.to_thread(self.store.commands):
                if command.body.get("action") in TESTMODE_ACTIONS:
                    result = self.testmodes.apply(command.body)
                    self._rules_wake.set()  # a new end to watch for
                else:
                    # Over MQTT only signed commands are queued (the ingest proved their key): they
                    # act as token:<name>, within what the token's role may do.
                    signed = command.body.get("via") == "mqtt"
                    result = apply_command(
                        self.alerts,
                        command.body,
                        authenticated=signed,
                        may_act=self._token_may_act(command.body["by"]) if signed else None,
                    )
                await asyncio.to_thread(self.store.command_done, command.id, self.clock.now(), result)
                log.info(
                    "command %s %s by %s via %s: %s",
                    command.body.get("action"),
                    command.body.get("alert"),
                    command.body.get("by"),
                    command.body.get("via"),
                    "ok" if result["ok"] else result["error"],
                )
                if command.body.get("via") == "mqtt":
                    self.store.save_notify(
                        messages=[
                            (
                                "mqtt",
                                f"{self.config.topic_prefix}/alerts/commands/result",
                                json.dumps(result, ensure_ascii=False),
                                False,
                            )
                        ],
                        now=self.clock.now(),
                    )
                    self.publisher.wake.set()
            if await asyncio.to_thread(self.store.last_seq) > self.alerts.cursor:
                if self.ingest_process is not None:
                    self._stored_elsewhere.set()
                else:
                    await self._on_stored(await asyncio.to_thread(self.store.events_after, self.alerts.cursor))
            self._commands_wake.clear()
            await sleep_or_wake(self.clock, COMMAND_POLL, self._commands_wake)

    def _token_may_act(self, actor: str) -> Callable[[Alert], bool] | None:
        """What an integration's token role lets it acknowledge or resolve (as on the console's
        API: an installer's, maintenance tickets only); None for an actor that is no token (the
        alert path refuses one that is unknown or revoked)."""
        if not actor.startswith(TOKEN_ACTOR):
            return None
        token = self.store.api_token(actor[len(TOKEN_ACTOR) :])
        if token is None:
            return None
        from gateway.web.auth import token_identity

        identity = token_identity(token.name, token.role)
        return lambda alert: identity.may_act(alert, "")  # a token sees the whole site

    async def _ha_publish(self, topic: str, payload: str, retain: bool) -> None:
        if self._ha_client is None:
            raise aiomqtt.MqttError("not connected")
        await self._ha_client.publish(topic, payload.encode(), qos=1, retain=retain)

    async def _home_assistant(self) -> None:
        """Home Assistant discovery: announce on every connection and on HA's birth message."""
        assert self.ha is not None
        backoff = 1.0
        while True:
            self.ha.update_alerts(await asyncio.to_thread(self.store.alerts, True, 100_000))
            try:
                async with self.publisher.client(f"{self.config.client_id}-ha") as client:
                    self._ha_client = client
                    backoff = 1.0
                    for topic in self.ha.subscriptions():
                        await client.subscribe(topic, qos=1)
                    await self.ha.run(
                        (m.topic.value, m.payload) async for m in client.messages if isinstance(m.payload, bytes)
                    )
            except aiomqtt.MqttError as exc:
                self._ha_log.warning(("down",), "Home Assistant discovery: broker unreachable (%s); retrying", exc)
                await self.clock.sleep(backoff)
                backoff = min(backoff * 2, 30.0)
            finally:
                self._ha_client = None

    def stats(self) -> dict[str, Any]:
        return {
            "counters": self.store.counters(),
            "pending": {f.name: self.store.pending_count(f.name) for f in self.forwarders},
            "outbox": len(self.store.outbox_batch("mqtt", 10_000)),
            "store_bytes": self.store.used_bytes(),
            "disk": self.store.disk_state().to_dict(),
        }

    def _disk_changed(self) -> None:
        """The store's disk became full, started or stopped refusing telemetry, or has room
        again (called from the store's thread, its lock held)."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._disk_wake.set)

    async def _disk_watch(self) -> None:
        """A full disk is an alert (``gateway_disk_full``, gateway/alerts/system.py): raised when
        the store's disk is full, reworded when it refuses telemetry, resolved when the room is
        back. Also looks at the filesystem every ``DISK_CHECK`` s, for the room coming back while
        nothing is written; ``sensegate status`` shows the state kept in ``meta disk.state``."""
        shown: tuple[bool, bool] | None = None
        while True:
            if self.ingest_process is not None:
                state = await self._disk_states.get()  # the ingest process keeps the disk
            else:
                self._disk_wake.clear()
                state = await asyncio.to_thread(self.store.check_disk)
            if (state.full, state.refusing) != shown:
                shown = (state.full, state.refusing)
                now = self.clock.now()
                decided = self.alerts.external([disk_decision(state, self.config.gateway.id, now)])
                if state.full or decided:
                    log.warning(
                        "disk %s: %d bytes free, store %d bytes, reserve %d bytes",
                        "full, refusing telemetry" if state.refusing else "full" if state.full else "has room again",
                        state.free_bytes,
                        state.store_bytes,
                        state.reserve_bytes,
                    )
                await asyncio.to_thread(
                    self.store.set_meta, DISK_META, json.dumps({**state.to_dict(), "at": now}, ensure_ascii=False)
                )
            if self.ingest_process is None:
                await sleep_or_wake(self.clock, DISK_CHECK, self._disk_wake)

    async def _housekeeping(self) -> None:
        last_stats = last_rules = self.clock.monotonic()
        collections = Collections(self.clock)
        while True:
            await self.clock.sleep(HOUSEKEEPING_INTERVAL)
            now = self.clock.now()
            if self.clock.monotonic() - last_rules >= RULES_CHECKPOINT_INTERVAL - HOUSEKEEPING_INTERVAL / 2:
                last_rules = self.clock.monotonic()
                write = self.alerts.checkpoint_behind()
                if write is not None:
                    await asyncio.to_thread(write)
            self.visits.checkpoint()
            await asyncio.to_thread(self.store.forget_ingest_keys, now - DEDUP_WINDOW)
            await asyncio.to_thread(self.store.forget_commands, now - COMMANDS_KEEP)
            removed = await asyncio.to_thread(self.store.enforce_bound, self.alerts.replay_from)
            if removed["dropped"]:
                log.warning(
                    "store above %d bytes: dropped %d undelivered telemetry events (oldest first)",
                    self.store.max_bytes,
                    removed["dropped"],
                )
            if self.store.over_bound:
                log.warning("store above its bound with only alarm events and alerts left; keeping them")
            summarise_all()  # what "log once" kept quiet in the last minute, one line each
            if self.clock.monotonic() - last_stats >= STATS_INTERVAL:
                last_stats = self.clock.monotonic()
                stats = await asyncio.to_thread(self.stats)
                log.info("stats %s", " ".join(f"{k}={v}" for k, v in sorted(stats["counters"].items())))
            collections.step()

    async def _watch_ready(self) -> None:
        await (self.ingest.connected if self.ingest_process is None else self._ingest_up).wait()
        self.ready.set()
        self.systemd.notify(f"STATUS=serving: broker {self.config.mqtt.host}:{self.config.mqtt.port} connected")

    async def _watchdog(self, interval: float) -> None:
        """Ping systemd's watchdog from the event loop itself: if the loop hangs, the pings stop
        and systemd restarts the gateway. Real time, not the injected clock: systemd's timer is."""
        while True:
            self.systemd.notify("WATCHDOG=1")
            await asyncio.sleep(interval)

    async def run(self, stop: asyncio.Event | None = None) -> None:
        stop = stop or asyncio.Event()
        self._loop = asyncio.get_running_loop()
        # One gateway per store, and no restore under it (gateway/store/lock.py).
        lock = StoreLock(self.store.path)
        try:
            lock.acquire()
        except StoreError:
            self.store.close()
            raise
        try:
            await self._run(stop)
        finally:
            lock.release()

    async def _run(self, stop: asyncio.Event) -> None:
        newest = await asyncio.to_thread(self.store.newest_received_at)
        if newest is not None and self.clock.now() < newest - CLOCK_BEHIND:
            # A Pi without a real-time clock boots at its last shutdown time, or in 1970, until
            # NTP answers: events are dated by this clock (sensegate doctor says the same).
            log.warning(
                "the clock (%.0f) is %.0f s behind the newest stored event: not synchronised? events are dated "
                "by it until it is",
                self.clock.now(),
                newest - self.clock.now(),
            )
            await asyncio.to_thread(self.store.count, {"clock_behind_at_start": 1})
        # From here on this process keeps the store's disk: its reserve, eviction on every write
        # (the ingest process does, if there is one: it writes the events).
        if self.ingest_process is None:
            await asyncio.to_thread(self.store.manage_disk, lambda: self.alerts.replay_from, self._disk_changed)
        caught_up = await asyncio.to_thread(self.alerts.catch_up)
        if caught_up:
            log.info("alert path caught up on %d events stored before the last stop", caught_up)
        await asyncio.to_thread(self.visits.catch_up)
        log.info(
            "gateway %s starting: %d devices, outputs=%s, store=%s",
            self.config.gateway.id,
            len(self.registry.devices),
            ",".join(self.outputs) or "none (local store only)",
            self.store.path,
        )
        split = self.ingest_process
        if split is None and self.config.mqtt.ingest_process:
            log.warning("[mqtt] ingest_process: only `sensegate run` forks it; the ingest runs in this process")
        if split is not None:
            # Its events come in batches of up to READ_BATCH, read ahead of the outputs, which
            # would read them from the database once they fell out of memory.
            self.store.recent_keep = 4 * RECENT_KEEP
            split.publish_cursor(self.alerts.replay_from)
            split.listen(asyncio.get_running_loop(), self._from_ingest)
            split.start()
        stopping = False
        lost: list[str] = []

        async def keep_ingest_process() -> None:
            assert split is not None
            status = await split.ended()
            if not stopping:
                # Nothing would start another worker: stop in order, and end with an error for
                # the service to restart the whole (Restart=always).
                lost.append(f"the ingest process's keeper ended (wait status {status})")
                log.error("%s: stopping", lost[0])
                stop.set()

        try:
            async with asyncio.TaskGroup() as tg:
                ingest = tg.create_task(
                    supervise("mqtt ingest", self.ingest.run, self.clock)
                    if split is None
                    else supervise("stored events", self._read_stored, self.clock)
                )
                # One supervised task per serial device: a port that fails restarts alone.
                wired = [
                    tg.create_task(supervise(f"serial {d}", functools.partial(self.serial.run_device, d), self.clock))
                    for d in self.serial.links
                ]
                # One per Modbus bus: the detectors on it share the port and are polled in turn.
                wired += [
                    tg.create_task(supervise(f"modbus {b}", functools.partial(self.serial.run_bus, b), self.clock))
                    for b in self.serial.buses
                ]
                # One per OSDP bus: the gateway is the control panel of the readers on it.
                wired += [
                    tg.create_task(supervise(f"osdp {b}", functools.partial(self.serial.run_osdp_bus, b), self.clock))
                    for b in self.serial.osdp_links
                ]
                others = [tg.create_task(supervise(f"output {f.name}", f.run, self.clock)) for f in self.forwarders]
                others.append(tg.create_task(supervise("alert publisher", self.publisher.run, self.clock)))
                others.append(tg.create_task(supervise("housekeeping", self._housekeeping, self.clock)))
                others.append(tg.create_task(supervise("disk watch", self._disk_watch, self.clock)))
                others.append(tg.create_task(supervise("rule timers", self._rule_timer, self.clock)))
                others.append(tg.create_task(supervise("commands", self._commands, self.clock)))
                if self.ha is not None:
                    others.append(tg.create_task(supervise("home assistant", self._home_assistant, self.clock)))
                if self.console_server is not None:
                    others.append(tg.create_task(supervise("console", self.console_server.run, self.clock)))
                others.append(tg.create_task(supervise("escalation ladders", self.notifier.run_ladders, self.clock)))
                others += [
                    tg.create_task(
                        supervise(f"channel {n}", functools.partial(self.notifier.run_channel, n), self.clock)
                    )
                    for n in self.notifier.channels
                ]
                others += [
                    tg.create_task(
                        supervise(f"channel {n} health", functools.partial(self.notifier.watch_health, n), self.clock)
                    )
                    for n, channel in self.notifier.channels.items()
                    if hasattr(channel, "check")
                ]
                others += [
                    tg.create_task(supervise(f"channel {r.channel} replies", r.run, self.clock)) for r in self.replies
                ]
                if wired:
                    others.append(tg.create_task(supervise("serial writer", self.serial.run_writer, self.clock)))
                if split is not None:
                    others.append(tg.create_task(keep_ingest_process()))
                others.append(tg.create_task(self._watch_ready()))
                interval = self.systemd.watchdog_interval
                if interval is not None:
                    others.append(tg.create_task(self._watchdog(interval)))
                # Serving: the store is open, caught up, and every part runs. Not waiting for the
                # broker: a gateway whose broker is down still takes its wired devices' alarms.
                self.systemd.notify("READY=1", f"STATUS=serving {len(self.registry.devices)} devices")
                await stop.wait()
                self.systemd.notify("STOPPING=1", "STATUS=stopping: flushing outputs")
                log.info("stopping: no longer accepting; flushing outputs for up to %.0f s", SHUTDOWN_FLUSH)
                stopping = True
                if split is not None:
                    # Its keeper kills a worker that has not stopped STOP_GRACE seconds after
                    # being told to: give it the time to, and to end itself.
                    await split.stop(STOP_GRACE + SHUTDOWN_FLUSH)
                for task in [ingest, *wired]:
                    task.cancel()
                    # wait, not await: the task's cancellation is not ours to swallow.
                    await asyncio.wait({task})
                await self.serial.drain()
                if split is not None:  # what was committed last goes to the rules before the flush
                    await self._hand_over_stored()
                await self._final_flush()
                for task in others:
                    task.cancel()
        finally:
            self.alerts.checkpoint(durable=True)
            self.visits.checkpoint(durable=True)
            self.store.close()
        if lost:
            raise SenseGateError(lost[0])

    async def _final_flush(self) -> None:
        """Let healthy outputs drain what is pending, for a few seconds at most. What is left
        stays on disk and goes out after the next start."""
        deadline = self.clock.monotonic() + SHUTDOWN_FLUSH
        while self.clock.monotonic() < deadline:
            busy = [f for f in self.forwarders if f.healthy and self.store.pending_count(f.name)]
            if not busy and not (self.store.outbox_batch("mqtt", 1) and self.publisher.connected):
                return
            await self.clock.sleep(0.1)


class IngestWorker:
    """The ingest process's work (``[mqtt] ingest_process``, gateway/ingest/process.py): the MQTT
    ingest of gateway/ingest/mqtt.py on a store of its own, which keeps the disk, telling the
    gateway what it stored; its own housekeeping of ingest keys and "log once" lines."""

    def __init__(self, config: SiteConfig, registry: Registry, clock: Clock | None = None) -> None:
        self.config = config
        self.registry = registry
        self.clock = clock or SystemClock()
        self._disk_wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None

    async def run(self, link: GatewayLink) -> int:
        loop = self._loop = asyncio.get_running_loop()
        stop = asyncio.Event()

        def stopping() -> None:
            if not stop.is_set():
                stop.set()
                # An orderly stop that hangs ends the process all the same (a thread: whatever
                # the loop waits for). The fault suite's long runs left workers running.
                timer = threading.Timer(STOP_GRACE, os._exit, (0,))
                timer.daemon = True
                timer.start()

        loop.add_signal_handler(signal.SIGTERM, stopping)
        link.attach(loop, stopping)  # the gateway died: stop as on SIGTERM
        # One ingest process at a time: the last one may still be ending (its gateway was killed
        # and a new one started), and a message it committed but could not acknowledge must be
        # known as stored when the broker delivers it to this one (gateway/store/lock.py).
        turn = StoreLock(self.config.store_path, "ingest process", suffix=".ingest")
        waited = False
        while True:
            try:
                turn.acquire()
                break
            except StoreError:
                if stop.is_set():
                    return 0
                if not waited:
                    log.warning("the last ingest process (%s) is still ending: waiting for it", turn.holder())
                    waited = True
                await self.clock.sleep(TURN_POLL)
        store = open_store(self.config)
        store.recent_keep = 0  # the gateway forwards; it reads back what it needs
        store.coordinate_writers()
        try:
            store.manage_disk(link.processed_seq, self._disk_changed)
            ingest = MqttIngest(
                self.config,
                self.registry,
                store,
                self.clock,
                output_families(self.config),
                lambda events: self._stored(link),
                lambda: link.send(COMMAND),
                IngestHealth(store, self.clock),
                lambda: link.send(ANSWER),
                lambda up: link.send(UP if up else DOWN),
            )

            async def housekeeping() -> None:
                collections = Collections(self.clock)  # the heap was frozen before the fork
                while True:
                    await self.clock.sleep(HOUSEKEEPING_INTERVAL)
                    await asyncio.to_thread(store.forget_ingest_keys, self.clock.now() - DEDUP_WINDOW)
                    summarise_all()
                    collections.step()

            async def disk() -> None:
                shown: tuple[bool, bool] | None = None
                while True:
                    self._disk_wake.clear()
                    state = await asyncio.to_thread(store.check_disk)
                    if (state.full, state.refusing) != shown:
                        shown = (state.full, state.refusing)
                        link.disk(state)
                    await sleep_or_wake(self.clock, DISK_CHECK, self._disk_wake)

            async with asyncio.TaskGroup() as tg:
                receiving = tg.create_task(supervise("mqtt ingest", ingest.run, self.clock))
                others = [
                    tg.create_task(supervise("ingest housekeeping", housekeeping, self.clock)),
                    tg.create_task(supervise("ingest disk watch", disk, self.clock)),
                ]
                await stop.wait()
                receiving.cancel()
                await asyncio.wait({receiving})  # "offline", disconnected: nothing more to commit
                for task in others:
                    task.cancel()
        finally:
            store.close()
            turn.release()
        return 0

    def _disk_changed(self) -> None:
        if self._loop is not None:  # from the store's thread
            self._loop.call_soon_threadsafe(self._disk_wake.set)

    async def _stored(self, link: GatewayLink) -> None:
        link.send(STORED)
